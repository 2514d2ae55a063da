"""Stage 0: check out the app at a git ref and run its own test suite there (the CI half of CI/CD)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from flows.errors import AppTestError, ConfigurationError
from flows.retry import retry_condition
from flows.settings import Settings


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


@dataclass(frozen=True)
class AppTestResult:
    """What the app's own test suite said at one commit."""

    sha: str
    passed: int
    failed: tuple[str, ...]
    seconds: float


def _git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigurationError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def checkout(repo_url: str, git_ref: str, workdir: Path | None = None) -> SourceTree:
    """Clones `repo_url` into a temporary work tree and checks out `git_ref` (branch, tag or SHA)."""
    root = Path(tempfile.mkdtemp(prefix="aiship-src-", dir=workdir))
    _git("clone", "--quiet", "--no-checkout", repo_url, str(root))
    for candidate in (f"origin/{git_ref}", git_ref):
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
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
    return SourceTree(path=root, sha=sha, committed_at=committed_at, repo_url=repo_url)


def failing_tests(junit_xml: Path) -> tuple[int, tuple[str, ...]]:
    """Counts passed tests and names the failing ones (`file::test`) from a JUnit XML report."""
    tree = ET.parse(junit_xml)
    passed, failed = 0, []
    for case in tree.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif case.find("skipped") is None:
            passed += 1
    return passed, tuple(failed)


def run_app_tests(source: SourceTree, tests_path: str = "app/tests", timeout: float = 600) -> AppTestResult:
    """Runs the app's test suite in `source`; raises AppTestError naming each failing test."""
    target = source.path / tests_path
    if not target.exists():
        raise AppTestError(
            f"no app tests at {tests_path} in commit {source.short_sha}; add them or set AISHIP_APP_TESTS_PATH"
        )
    report = source.path / ".aiship-junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(source.path)
    started = datetime.now()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", tests_path, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=source.path, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    seconds = (datetime.now() - started).total_seconds()
    if not report.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise AppTestError(f"the app's tests at {source.short_sha} did not run (exit {proc.returncode}):\n{tail}")
    passed, failed = failing_tests(report)
    if proc.returncode != 0 or failed:
        names = ", ".join(failed) or f"pytest exit code {proc.returncode}"
        raise AppTestError(
            f"{len(failed)} app test(s) failed at {source.short_sha}: {names}; fix them and push again"
        )
    return AppTestResult(sha=source.sha, passed=passed, failed=(), seconds=seconds)


@task(name="check-out", retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_condition)
def check_out(git_ref: str, settings: Settings) -> SourceTree:
    """Checks out the app's repository at `git_ref` into a temporary work tree."""
    return checkout(settings.git_repository_url, git_ref)


def tests_cache_key(context, parameters) -> str:
    """Passing app tests are remembered per commit: the same SHA is not tested twice."""
    return f"aiship-app-tests-{parameters['source'].sha}-{parameters['settings'].app_tests_path}"


@task(name="test-app", cache_key_fn=tests_cache_key, persist_result=True)
def test_app(source: SourceTree, settings: Settings) -> AppTestResult:
    """Runs the app's own tests at the checked-out commit; a failure stops the delivery.

    Args:
        source: the checked-out work tree.
        settings: aiship's settings (the tests' path).

    Returns:
        How many tests passed and how long they took.
    """
    result = run_app_tests(source, settings.app_tests_path)
    create_markdown_artifact(
        key="app-tests",
        markdown=f"**App tests** at `{source.short_sha}`: {result.passed} passed in {result.seconds:.1f} s",
        description="The app's own test suite at the delivered commit",
    )
    return result
