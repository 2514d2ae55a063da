"""Check out the app's repository at one commit, into a temporary work tree of its own."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prefect import task

from flows.errors import ConfigurationError
from flows.ownership import work_folder
from flows.retry import retry_condition


@dataclass(frozen=True)
class SourceTree:
    """A work tree of the app's repository checked out at one commit."""

    path: Path
    sha: str
    committed_at: datetime
    repo_url: str

    @property
    def short_sha(self) -> str:
        """The first 12 hex digits of the commit, as image tags use them."""
        return self.sha[:12]


def _git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigurationError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def is_ancestor(source: SourceTree, older: str, newer: str) -> bool:
    """True when commit `older` is a proper ancestor of `newer` in `source`'s history (False when either is unknown)."""
    if older == newer:
        return False
    proc = subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=source.path,
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0


def check_ref(git_ref: str) -> str:
    """`git_ref` when it can name a branch, tag or SHA (git's own check-ref-format rules, and never
    an option); a ConfigurationError otherwise, before anything is cloned."""
    proc = subprocess.run(["git", "check-ref-format", "--allow-onelevel", git_ref], capture_output=True, check=False)
    if not git_ref or git_ref.startswith("-") or proc.returncode != 0:
        raise ConfigurationError(f"git ref {git_ref!r} is not a branch, tag or commit SHA; "
                                 "pass one such as main, v1.2 or a 40-digit SHA")
    return git_ref


def checkout(repo_url: str, git_ref: str, workdir: Path | None = None) -> SourceTree:
    """Clones `repo_url` into a temporary work tree and checks out `git_ref` (branch, tag or SHA).

    The work tree is removed again when the ref is not found or git fails."""
    check_ref(git_ref)
    root = work_folder("src", workdir)
    try:
        _git("clone", "--quiet", "--no-checkout", repo_url, str(root))
        for candidate in (f"origin/{git_ref}", git_ref):
            proc = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"],
                cwd=root, capture_output=True, text=True, check=False,
            )
            if proc.returncode == 0:
                sha = proc.stdout.strip()
                break
        else:
            raise ConfigurationError(
                f"git ref {git_ref!r} not found in {repo_url}; push it there or pass an existing branch, tag or SHA"
            )
        _git("checkout", "--quiet", "--detach", sha, cwd=root)
        committed_at = datetime.fromisoformat(_git("show", "-s", "--format=%cI", sha, cwd=root))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return SourceTree(path=root, sha=sha, committed_at=committed_at, repo_url=repo_url)


@task(name="check-out", retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_condition)
def check_out(repository: str, git_ref: str) -> SourceTree:
    """Checks out the app's repository at `git_ref` into a temporary work tree."""
    return checkout(repository, git_ref)
