"""The apps aiship delivers: each one's aiship.toml, read at a commit and checked against what the operator registered.

The operator's side (the app's name, its repository, environments, registry, cluster) lives in
aiship's settings; the app's side in its repository's aiship.toml. A commit may change its app's
facts, never the name it is delivered under.
"""

from __future__ import annotations

import shutil

from flows.app_config import AppConfig, read_app_config, require_name
from flows.settings import Settings
from flows.source import SourceTree, checkout


def read_config(source: SourceTree, settings: Settings) -> AppConfig:
    """The app's aiship.toml at the checked-out commit, refused unless it names the app registered here."""
    where = f"aiship.toml at {source.short_sha} of {source.repo_url}"
    return require_name(read_app_config(source.path, where), settings.app_name, where)


def config_at(settings: Settings, git_ref: str = "main") -> AppConfig:
    """The registered app's aiship.toml at `git_ref` of its repository (for publish, which has no commit of its own)."""
    source = checkout(settings.git_repository_url, git_ref)
    try:
        return read_config(source, settings)
    finally:
        shutil.rmtree(source.path, ignore_errors=True)
