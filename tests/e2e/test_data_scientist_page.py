"""End to end: docs/getting-started-data-scientist.md, run as written, under a model name and an environment of the tests' own."""

from __future__ import annotations

import os
import re
import uuid

import httpx

from flows.settings import REPO_ROOT
from tests.e2e.test_second_app import page_commands, run_block

PAGE = REPO_ROOT / "docs" / "getting-started-data-scientist.md"


def test_the_data_scientist_page_publishes_pins_and_rolls_back(e2e_environment, tmp_path):
    model = f"aiship-tests-ds-{uuid.uuid4().hex[:6]}"  # a name the production triggers leave alone
    env = {**os.environ, "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "MODEL": model,
           "ENV": e2e_environment.name, "PYTHONPATH": str(REPO_ROOT), "AISHIP_PUBLISHER": "e2e",
           # the bake window is not what this page shows; 5 s keeps each rollout short
           "AISHIP_ROLLOUT_MIN_READY_SECONDS": "5"}
    blocks = page_commands(PAGE)
    assert len(blocks) == 5, "the page's commands changed: keep this test in step"
    script = "\n".join(blocks)
    out = run_block(script, tmp_path, env, timeout=1500)
    version = lambda: httpx.get(f"http://127.0.0.1:{e2e_environment.node_port}/version", timeout=5).json()["model"]  # noqa: E731
    assert re.search(rf"published {model}:1 ", out) and re.search(rf"published {model}:2 ", out)
    assert re.search(rf"delivered: aiship-app with {model} v2", out) and re.search(rf"delivered: aiship-app with {model} v1", out)
    history = [line for line in out.splitlines() if re.match(r"^\d+ +(serving|served|failed) ", line)]
    assert any(line.split()[1] == "serving" and f"{model} v1" in line for line in history), out[-2000:]
    # the rollback went from the pinned v1 back to v2, which served before it
    assert version()["name"] == model and version()["version"] == 2
