"""`aiship init`: write an app repository's aiship.toml and, where it has none, a Dockerfile in aiship's layer order.

Running it again with the same answers changes nothing, and it never replaces a file that says
something else unless told to (`force`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PurePosixPath
from string import Template

from flows.app_config import CONFIG_FILE, parse_app_config
from flows.errors import ConfigurationError

DEFAULT_DOCKERFILE = "Dockerfile.wsgi"


class _Placeholders(Template):
    delimiter = "@"  # a Dockerfile uses `$` itself (ARG, ENV)


@dataclass(frozen=True)
class InitAnswers:
    """The few facts `aiship init` asks for."""

    name: str
    wsgi: str  # module:callable that gunicorn serves
    port: int
    code_dir: str
    tests_dir: str
    requirements: str
    test_requirements: str
    model_types: tuple[str, ...]
    model_dir: str = "/opt/model"
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    version_path: str = "/version"
    predict_path: str = "/predict"


@dataclass(frozen=True)
class Written:
    """What init did to one file: written, unchanged (same content) or kept (the app's own, not ours to replace)."""

    path: Path
    action: str


def _toml_list(values: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def render_config(answers: InitAnswers) -> str:
    """The aiship.toml text for `answers`, validated the way a delivery reads it."""
    tests_path = str(PurePosixPath(answers.tests_dir))
    text = f"""\
# aiship.toml: what this repository's app tells aiship, read at each commit it delivers.
# Where the app goes (environments, registry, cluster, credentials) is the operator's, not here.

[app]
name = {json.dumps(answers.name)}

[build]
dockerfile = "Dockerfile"
code_stage = "code"
requirements = {_toml_list([answers.requirements, answers.test_requirements])}

[model]
dir = {json.dumps(answers.model_dir)}
types = {_toml_list(sorted(answers.model_types))}

[serve]
port = {answers.port}
health_path = {json.dumps(answers.health_path)}
ready_path = {json.dumps(answers.ready_path)}
version_path = {json.dumps(answers.version_path)}
predict_path = {json.dumps(answers.predict_path)}

[tests]
stage = "test"
command = {_toml_list(["python", "-m", "pytest", tests_path, "-q", "-p", "no:cacheprovider", "--junitxml={junit}"])}
"""
    parse_app_config(text, CONFIG_FILE)  # what init writes, a delivery accepts
    return text


def render_dockerfile(answers: InitAnswers) -> str:
    """aiship's default Dockerfile for a WSGI app, filled with `answers`."""
    template = _Placeholders((files("flows") / "resources" / DEFAULT_DOCKERFILE).read_text())
    return template.substitute(
        requirements_name=PurePosixPath(answers.requirements).name,
        test_requirements_name=PurePosixPath(answers.test_requirements).name,
        model_dir=answers.model_dir, port=answers.port, wsgi=answers.wsgi,
        code_dir=answers.code_dir.strip("/"), tests_dir=answers.tests_dir.strip("/"),
    )


def write_file(path: Path, text: str, force: bool) -> Written:
    """Writes `text` to `path` unless it already says exactly that; refuses to replace other content without `force`."""
    if path.exists():
        if path.read_text() == text:
            return Written(path, "unchanged")
        if not force:
            raise ConfigurationError(f"{path} exists and differs from what aiship init would write; "
                                     "keep it, or run `aiship init --force` to replace it")
    path.write_text(text)
    return Written(path, "written")


def init_repository(repo: Path, answers: InitAnswers, force: bool = False) -> list[Written]:
    """Writes aiship.toml and, when the repository has no Dockerfile (or `force`), aiship's default one."""
    if not repo.is_dir():
        raise ConfigurationError(f"{repo} is not a folder; run aiship init in the app's repository")
    for what, rel in (("requirements", answers.requirements), ("test requirements", answers.test_requirements)):
        if not (repo / rel).is_file():
            raise ConfigurationError(f"{what} file {repo / rel} not found; pin the app's dependencies there "
                                     f"(exact versions) or pass --{'test-' if what != 'requirements' else ''}requirements")
    written = [write_file(repo / CONFIG_FILE, render_config(answers), force)]
    dockerfile = repo / "Dockerfile"
    if dockerfile.exists() and not force and dockerfile.read_text() != render_dockerfile(answers):
        written.append(Written(dockerfile, "kept"))
    else:
        written.append(write_file(dockerfile, render_dockerfile(answers), force))
    return written
