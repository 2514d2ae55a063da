"""The sandbox's container options and how a sandboxed test run is judged (no dockerd needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.app_config import parse_app_config
from flows.app_tests import JUNIT_FILE, judge_run, sandbox_command
from flows.errors import AppTestError
from flows.sandbox import NOBODY, REPORT_DIR, SandboxLimits, SandboxRun, container_options, sandbox_user

CONFIG = parse_app_config('[app]\nname = "iris"\n[model]\ntypes = ["numpy.ndarray"]\n'
                          '[tests]\ncommand = ["pytest", "--junitxml={junit}", "-q"]\n')


def test_the_container_gets_no_network_secrets_socket_or_root(tmp_path):
    options = container_options("img", ["pytest"], SandboxLimits(cpus=0.5, memory="256m", pids=64), 10001, 10001, tmp_path)
    assert options["network_mode"] == "none" and options["read_only"] is True
    assert options["environment"] == {"HOME": "/tmp", "TMPDIR": "/tmp"}  # nothing of the worker's
    assert options["volumes"] == {str(tmp_path): {"bind": REPORT_DIR, "mode": "rw"}}  # no socket, no state folder
    assert options["user"] == "10001:10001" and options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"] and "privileged" not in options
    assert options["nano_cpus"] == 500_000_000 and options["mem_limit"] == options["memswap_limit"] == "256m"
    assert options["pids_limit"] == 64 and set(options["tmpfs"]) == {"/tmp"}


@pytest.mark.parametrize("image_user, expected", [
    ("10001:10001", (10001, 10001)), ("10001", (10001, 10001)), ("", (NOBODY, NOBODY)), ("0", (NOBODY, NOBODY)),
    ("root", (NOBODY, NOBODY)), ("0:0", (NOBODY, NOBODY)), ("10001:0", (10001, 10001)),
])
def test_an_image_that_asks_for_root_runs_as_nobody(image_user, expected):
    assert sandbox_user(image_user) == expected


def test_the_report_path_is_filled_into_the_command():
    assert sandbox_command(CONFIG) == ["pytest", f"--junitxml={REPORT_DIR}/{JUNIT_FILE}", "-q"]


def run(tmp_path: Path, exit_code: int | None, report: str | None, output: str = "") -> SandboxRun:
    if report is not None:
        (tmp_path / JUNIT_FILE).write_text(report)
    return SandboxRun(exit_code, exit_code is None, output, tmp_path, 1.5, "10001:10001")


def test_a_passing_run_counts_and_names_its_tests(tmp_path):
    report = '<testsuite><testcase classname="t" name="a"/><testcase classname="t" name="b"><skipped/></testcase></testsuite>'
    result = judge_run(run(tmp_path, 0, report), "ab" * 20, "sha256:img")
    assert result.passed == 1 and result.passed_names == ("t::a",) and result.image == "sha256:img"


def test_failing_tests_are_named_at_most_ten_then_counted(tmp_path):
    cases = "".join(f'<testcase classname="t" name="f{i}"><failure/></testcase>' for i in range(12))
    with pytest.raises(AppTestError, match=r"12 app test\(s\) failed at abababababab: t::f0, .*t::f9 and 2 more"):
        judge_run(run(tmp_path, 1, f"<testsuite>{cases}</testsuite>"), "ab" * 20, "img")


def test_a_report_that_is_a_link_or_not_xml_is_refused(tmp_path):
    (tmp_path / JUNIT_FILE).symlink_to("/etc/passwd")
    with pytest.raises(AppTestError, match="wrote no JUnit report"):
        judge_run(run(tmp_path, 0, None), "ab" * 20, "img")
    (tmp_path / JUNIT_FILE).unlink()
    with pytest.raises(AppTestError, match="is not valid XML"):
        judge_run(run(tmp_path, 0, "<testsuite>"), "ab" * 20, "img")


def test_the_images_own_volumes_are_covered_by_tmpfs(tmp_path):
    options = container_options("img", ["x"], SandboxLimits(), 1, 1, tmp_path, ["/data", "/srv/cache"])
    assert set(options["tmpfs"]) == {"/tmp", "/data", "/srv/cache"}
    assert options["log_config"]["config"]["max-size"] == "10m"


def test_no_report_and_time_limit_each_say_what_to_do(tmp_path):
    with pytest.raises(AppTestError, match=r"wrote no JUnit report \(exit 2\).*\{junit\} says:\nImportError"):
        judge_run(run(tmp_path, 2, None, "ImportError: x"), "ab" * 20, "img")
    with pytest.raises(AppTestError, match=r"did not finish within their time limit.*timeout_seconds"):
        judge_run(run(tmp_path, None, None), "ab" * 20, "img")
