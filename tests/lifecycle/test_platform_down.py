"""The suite's last step: `aiship local down` stops the whole platform, and `status` says so."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_local_platform import aiship, status_rows


def test_down_then_status_shows_every_part_stopped():
    before = status_rows(aiship("local", "status").stdout)
    pids = [int(r["pid"]) for r in before.values() if r["pid"].isdigit()]
    assert pids, f"nothing was running before down: {before}"
    down = aiship("local", "down")
    assert down.returncode == 0, down.stderr
    after = status_rows(aiship("local", "status").stdout)
    daemons = {p: r for p, r in after.items() if before[p]["pid"] != "-"}
    assert all(r["state"] in ("stopped", "missing") for r in daemons.values()), after
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "processes outlived down"
