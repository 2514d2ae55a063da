"""Stage 0: check out the app at a git ref and run its own tests, sandboxed in its own test image.

The tests are the app's code, so they are untrusted: they run in a container of the app's
Dockerfile test stage (its dependencies, not aiship's) under `flows.sandbox`, and only their
JUnit report comes back.
"""

from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from flows.app_config import JUNIT_PLACEHOLDER, AppConfig
from flows.errors import AppTestError
from flows.image import context_members, run_build
from flows.release import LABEL_REVISION
from flows.retry import retry_condition
from flows.sandbox import REPORT_DIR, SandboxLimits, SandboxRun, run_sandboxed
from flows.settings import Settings
from flows.source import SourceTree

JUNIT_FILE = "junit.xml"
MAX_REPORT_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class AppTestResult:
    """What the app's own test suite said at one commit."""

    sha: str
    passed: int
    failed: tuple[str, ...]
    seconds: float
    image: str = ""  # the test image's id
    passed_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestImage:
    """The app's test stage built at one commit (local only, never pushed)."""

    __test__ = False  # not a pytest class

    tag: str
    image_id: str
    git_sha: str
    seconds: float
    steps_cached: int


def passed_tests(junit_xml: Path) -> tuple[str, ...]:
    """The `file::test` names of the tests that passed, from a JUnit XML report."""
    return tuple(f"{case.get('classname', '')}::{case.get('name', '')}" for case in ET.parse(junit_xml).iter("testcase")
                 if not any(case.find(tag) is not None for tag in ("failure", "error", "skipped")))


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


def sandbox_command(config: AppConfig) -> list[str]:
    """The app's test command with the JUnit report path filled in."""
    junit = f"{REPORT_DIR}/{JUNIT_FILE}"
    return [arg.replace(JUNIT_PLACEHOLDER, junit) for arg in config.tests.command]


def judge_run(run: SandboxRun, sha: str, image: str) -> AppTestResult:
    """The result of a sandboxed test run; raises AppTestError naming each failing test."""
    short = sha[:12]
    report = run.report_dir / JUNIT_FILE
    tail = "\n".join(run.output.splitlines()[-20:])
    if run.timed_out:
        raise AppTestError(f"the app's tests at {short} did not finish within their time limit and were stopped; "
                           f"make them faster or raise [tests] timeout_seconds in aiship.toml\n{tail}")
    if report.is_symlink() or not report.is_file():  # never follow a link the tests left: it points at the host
        raise AppTestError(f"the app's tests at {short} wrote no JUnit report (exit {run.exit_code}); the [tests] "
                           f"command must write it where {JUNIT_PLACEHOLDER} says:\n{tail}")
    if report.stat().st_size > MAX_REPORT_BYTES:
        raise AppTestError(f"the app's tests at {short} wrote a JUnit report of {report.stat().st_size} bytes, over "
                           f"{MAX_REPORT_BYTES}; aiship does not read it: report less (no captured output)")
    try:
        passed, failed = failing_tests(report)
    except ET.ParseError as exc:
        raise AppTestError(f"the JUnit report of the app's tests at {short} is not valid XML ({exc}); check the [tests] "
                           f"command's {JUNIT_PLACEHOLDER} argument:\n{tail}") from None
    if run.exit_code != 0 or failed:
        names = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "") \
            if failed else f"exit code {run.exit_code}"
        raise AppTestError(f"{len(failed)} app test(s) failed at {short}: {names}; fix them and push again\n{tail}")
    return AppTestResult(sha=sha, passed=passed, failed=(), seconds=run.seconds, image=image,
                         passed_names=passed_tests(report))


def run_app_tests(client: Any, test_image: TestImage, config: AppConfig) -> AppTestResult:
    """Runs the app's tests sandboxed in a container of its test image (`flows.sandbox`)."""
    limits = SandboxLimits(cpus=config.tests.cpus, memory=config.tests.memory,
                           timeout_seconds=config.tests.timeout_seconds)
    run = run_sandboxed(client, test_image.image_id, sandbox_command(config), limits)
    try:
        return judge_run(run, test_image.git_sha, test_image.image_id)
    finally:
        shutil.rmtree(run.report_dir, ignore_errors=True)


def image_tag_for_tests(app_name: str, git_sha: str) -> str:
    """`aiship-tests/<app>:<gitsha12>`: a local tag, never pushed."""
    return f"aiship-tests/{app_name}:{git_sha[:12]}"


def build_test_image_with(client: Any, source: SourceTree, config: AppConfig, wheels_dir: Path,
                          base_image: str) -> TestImage:
    """Builds the Dockerfile's test stage (the app with its test dependencies) with dockerd."""
    started = time.monotonic()
    members = context_members(source.path, wheels_dir, config.build.dockerfile,
                              (config.build.code_stage, config.tests.stage))
    tag = image_tag_for_tests(config.name, source.sha)
    progress = run_build(client, members, tag, {LABEL_REVISION: source.sha},
                         {"BASE_IMAGE": base_image, "GIT_SHA": source.sha}, target=config.tests.stage,
                         dockerfile=config.build.dockerfile)
    return TestImage(tag, progress.image_id, source.sha, round(time.monotonic() - started, 2), progress.cached)


# Only a lost daemon connection or a timeout is retried; a failing Dockerfile step is an answer.
@task(name="build-test-image", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=retry_condition)
def build_test_image(source: SourceTree, config: AppConfig, settings: Settings) -> TestImage:
    """Builds the app's test image: its Dockerfile's test stage, with its own test dependencies."""
    from flows.image import docker_client, requirement_files
    from flows.wheels import prepare_wheels

    wheels = prepare_wheels(requirement_files(source, config), settings.cache_dir)
    client = docker_client()
    try:
        return build_test_image_with(client, source, config, wheels.path, settings.base_image)
    finally:
        client.close()


def tests_cache_key(context, parameters) -> str:
    """Passing app tests are remembered per commit and test image: the same pair is not tested twice."""
    return f"aiship-app-tests-{parameters['test_image'].git_sha}-{parameters['test_image'].image_id}"


@task(name="test-app", cache_key_fn=tests_cache_key, persist_result=True)
def test_app(test_image: TestImage, config: AppConfig) -> AppTestResult:
    """Runs the app's own tests, sandboxed in its test image; a failure stops the delivery.

    Args:
        test_image: the Dockerfile's test stage built at the delivered commit.
        config: the app's aiship.toml (test command, time, CPU and memory limits).

    Returns:
        How many tests passed and how long they took.
    """
    from flows.image import docker_client

    client = docker_client()
    try:
        result = run_app_tests(client, test_image, config)
    finally:
        client.close()
    create_markdown_artifact(
        key=f"app-tests-{config.name}",
        markdown=f"**App tests** of {config.name} at `{test_image.git_sha[:12]}`: {result.passed} passed in "
                 f"{result.seconds:.1f} s, sandboxed in `{test_image.tag}` (no network, no credentials, read-only, not root)",
        description="The app's own test suite at the delivered commit",
    )
    return result
