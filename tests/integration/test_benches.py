"""The benchmarks run, small, on the real parts, so that they cannot rot: every figure is written."""

from __future__ import annotations

import json
import subprocess
import sys

from flows.settings import REPO_ROOT


def test_the_model_change_benchmark_writes_every_figure_of_every_path(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.model_change", "--sizes", "1,2", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    from bench.model_change import FIGURES, PATHS

    rows = json.loads((tmp_path / "model-change.json").read_text())["rows"]
    assert [r["mib"] for r in rows] == [1, 2]
    for row in rows:
        assert set(FIGURES) <= set(row), set(FIGURES) - set(row)
        assert all(row[f"{path}_s"] > 0 for path in PATHS)
        # each path uploaded its own bytes: nothing found already there
        assert row["floor_bytes_uploaded"] == row["mib"] * 2**20 <= row["aiship_bytes_uploaded"]
        assert {"code image", "model layer", "push"} <= set(row["aiship_parts"])
    assert "| 2 MiB |" in (tmp_path / "model-change.md").read_text()
    assert (tmp_path / "model-change.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
