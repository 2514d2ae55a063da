"""`aiship local` as a user drives it: idempotent up, down, status, and clear errors on bad input.

The down/up cycle runs against a second state folder and other ports, so the platform the rest of
the suite uses keeps running; tests/lifecycle/ takes the main platform down as the suite's last step.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.settings import REPO_ROOT

AISHIP = [sys.executable, "-m", "flows.cli"]
LIGHT_PARTS = ["registry", "azurite", "s3"]


def aiship(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*AISHIP, *args], cwd=REPO_ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def status_rows(output: str) -> dict[str, dict[str, str]]:
    """Parses the `aiship local status` table into {part: {state, address, pid, version}}."""
    rows = {}
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PART"))
    for line in lines[header + 1:]:
        cells = line.split()
        if len(cells) >= 3 and not line.startswith(("kubeconfig:", "NodePorts:")):
            rows[cells[0]] = {"state": cells[1], "address": cells[2], "pid": cells[3] if len(cells) > 3 else "-"}
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def second_platform(tmp_path: Path):
    """Environment for a second platform: own state folder, ports no other test uses."""
    env = {
        "AISHIP_STATE_DIR": str(tmp_path / "state"),
        "AISHIP_REGISTRY_PORT": str(free_port()),
        "AISHIP_AZURITE_PORT": str(free_port()),
        "AISHIP_S3_PORT": str(free_port()),
    }
    yield env
    aiship("local", "down", *LIGHT_PARTS, env=env)


def test_up_twice_starts_nothing_new_and_down_stops_all(second_platform):
    first = aiship("local", "up", *LIGHT_PARTS, env=second_platform)
    assert first.returncode == 0, first.stderr
    before = status_rows(first.stdout)
    assert all(before[p]["state"] == "running" for p in LIGHT_PARTS), first.stdout
    assert all(before[p]["pid"].isdigit() for p in LIGHT_PARTS), first.stdout

    second = aiship("local", "up", *LIGHT_PARTS, env=second_platform)
    assert second.returncode == 0, second.stderr
    after = status_rows(second.stdout)
    assert {p: after[p]["pid"] for p in LIGHT_PARTS} == {p: before[p]["pid"] for p in LIGHT_PARTS}

    down = aiship("local", "down", *LIGHT_PARTS, env=second_platform)
    assert down.returncode == 0, down.stderr
    stopped = status_rows(aiship("local", "status", env=second_platform).stdout)
    assert all(stopped[p]["state"] == "stopped" for p in LIGHT_PARTS), stopped
    for p in LIGHT_PARTS:
        pid = int(before[p]["pid"])
        assert not Path(f"/proc/{pid}").exists(), f"{p} pid {pid} still runs after down"


def test_up_twice_on_the_running_platform_keeps_every_pid():
    first = aiship("local", "status")
    before = status_rows(first.stdout)
    assert before and all(row["state"] in ("running", "built", "ready") for row in before.values()), first.stdout
    again = aiship("local", "up")
    assert again.returncode == 0, again.stderr
    after = status_rows(again.stdout)
    assert {p: r["pid"] for p, r in after.items()} == {p: r["pid"] for p, r in before.items()}


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert lines, "no error printed"
    return lines[-1]


def test_unknown_part_is_named_with_the_known_ones():
    line = one_line_error(aiship("local", "up", "dockr"))
    assert "unknown part 'dockr'" in line and "docker" in line and "kubernetes" in line


def test_a_taken_port_is_refused_and_nothing_starts(second_platform):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**second_platform, "AISHIP_S3_PORT": str(port)}
        line = one_line_error(aiship("local", "up", "s3", env=env))
    assert f"port {port}" in line and "AISHIP_S3_PORT" in line, line
    state = Path(second_platform["AISHIP_STATE_DIR"]) / "s3"
    assert not list(state.glob("*.pid")), "a pid file was left behind"


def test_a_failing_install_is_explained_and_nothing_runs(second_platform):
    env = {**second_platform, "AISHIP_AZURITE_NPM_PACKAGE": "azurite-no-such-package-aiship"}
    # Install into a fresh cache folder so the real (cached) azurite is not found there.
    env["AISHIP_CACHE_DIR"] = str(Path(second_platform["AISHIP_STATE_DIR"]) / "cache")
    line = one_line_error(aiship("local", "up", "azurite", env=env))
    assert "azurite-no-such-package-aiship" in line and "install" in line, line
    state = Path(second_platform["AISHIP_STATE_DIR"]) / "azurite"
    assert not list(state.glob("*.pid")), "a pid file was left behind"
    port = int(second_platform["AISHIP_AZURITE_PORT"])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "something listens on the azurite port"


def test_a_part_log_is_a_ring_of_bounded_files(tmp_path):
    """start_bg's log: LOG_FILES files of at most LOG_SIZE, NAME.log the one being written, and a
    caller that captures the script's output is not held by the log writer after the script exits."""
    import time

    script = ('source local/lib.sh; start_bg noisy bash -c \'for i in $(seq 1 20000); do echo "line $i of a noisy part"; done; '
              'sleep 30\'')
    env = {**os.environ, "PART": "noisy", "AISHIP_STATE_DIR": str(tmp_path), "AISHIP_LOG_SIZE": "64K", "AISHIP_LOG_FILES": "3"}
    started = time.monotonic()
    proc = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10  # returned at once, although the part still runs
    part = tmp_path / "noisy"
    pid = int((part / "noisy.pid").read_text())
    try:
        deadline = time.monotonic() + 20
        log = part / "noisy.log"  # linked once rotatelogs has opened its first file
        while not (log.exists() and "line 20000 " in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        ring = sorted(p.name for p in part.glob("noisy.log.r*"))
        assert ring == ["noisy.log.r", "noisy.log.r.1", "noisy.log.r.2"], ring
        # rotatelogs moves on after the write that crosses the size: one more read of the pipe (at most 64 KiB)
        assert all((part / name).stat().st_size <= 64 * 1024 + 65536 for name in ring), [(part / n).stat().st_size for n in ring]
        assert (part / "noisy.log").read_text().rstrip().endswith("line 20000 of a noisy part")
    finally:
        os.kill(pid, 15)


def test_postgres_comes_up_again_with_its_data_and_down_is_a_fast_shutdown():
    """A second PostgreSQL in a state folder the postgres user can reach: a table written before a
    down/up cycle is still there after it, and the credential file is the owner's alone."""
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="aiship-pg-"))
    state.chmod(0o711)  # the server runs as postgres and must reach its data folder
    env = {"AISHIP_STATE_DIR": str(state), "AISHIP_POSTGRES_PORT": str(free_port())}
    psql = [sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1], "-h", "127.0.0.1", "-p", env["AISHIP_POSTGRES_PORT"],
            "-U", "aiship", "-d", "prefect", "-w", "-tAc"]
    pg_env = {**os.environ, "PGPASSFILE": str(state / "postgres" / "pgpass")}
    try:
        up = aiship("local", "up", "postgres", env=env)
        assert up.returncode == 0, up.stderr
        assert (state / "postgres" / "pgpass").stat().st_mode & 0o077 == 0
        subprocess.run([*psql, "create table kept (v text); insert into kept values ('before the restart')"],
                       env=pg_env, check=True, capture_output=True)
        pid = int(status_rows(up.stdout)["postgres"]["pid"])
        down = aiship("local", "down", "postgres", env=env)
        assert down.returncode == 0, down.stderr
        assert not Path(f"/proc/{pid}").exists()
        assert status_rows(aiship("local", "status", env=env).stdout)["postgres"]["state"] == "stopped"
        again = aiship("local", "up", "postgres", env=env)
        assert again.returncode == 0, again.stderr
        kept = subprocess.run([*psql, "select v from kept"], env=pg_env, check=True, capture_output=True, text=True)
        assert kept.stdout.strip() == "before the restart"
    finally:
        aiship("local", "down", "postgres", env=env)
        subprocess.run(["rm", "-rf", str(state)], check=False)


def test_postgres_in_a_state_folder_its_user_cannot_reach_is_refused_clearly(tmp_path):
    # pytest's tmp_path sits below a folder only root may enter.
    env = {"AISHIP_STATE_DIR": str(tmp_path / "state"), "AISHIP_POSTGRES_PORT": str(free_port())}
    line = one_line_error(aiship("local", "up", "postgres", env=env))
    assert "postgres user cannot write" in line and "AISHIP_STATE_DIR" in line, line
    assert not list((tmp_path / "state" / "postgres").glob("*.pid")), "a pid file was left behind"
    assert not (tmp_path / "state" / "postgres" / "data").exists()
