"""End to end: aiship installed from its built wheel into a new virtualenv delivers a repository that is not its own.

The new venv sees the dependencies of the project's venv (a `.pth` line: installing Prefect and
the SDKs from PyPI again would cost minutes and test PyPI, not aiship) but not its editable
install of aiship, and runs from a folder outside the checkout: every file aiship reads
(templates, default Dockerfile) must come from the wheel. The app delivered is a team's
repository made outside the checkout from the sample's files (its app, Dockerfile, aiship.toml):
nothing of aiship's own tree or history comes with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import httpx

from flows.settings import REPO_ROOT
from tests.fixtures.models import good_model


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_wheel_installed_in_a_new_venv_delivers(e2e_environment, tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO_ROOT)], tmp_path)
    wheel = next(dist.glob("aiship-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    site = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    (site / "aiship-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run([str(venv / "bin" / "python"), "-c",
                 "import importlib.util, flows; print(flows.__file__); print(importlib.util.find_spec('app'))"], outside)
    assert where.splitlines()[0].startswith(str(site)), where  # aiship from the wheel, not the checkout
    assert where.splitlines()[1] == "None"  # the wheel does not carry the sample app

    model = f"aiship-tests-wheel-{uuid.uuid4().hex[:6]}"
    run([str(REPO_ROOT / ".venv" / "bin" / "aiship"), "model", "publish", str(good_model(tmp_path / "m", seed=5)), "--name", model,
         "--no-event"], REPO_ROOT)
    team = tmp_path / "team-repo"  # a repository of its own, outside the checkout
    shutil.copytree(REPO_ROOT / "app", team / "app", ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    for name in ("Dockerfile", ".dockerignore", "aiship.toml"):
        shutil.copy(REPO_ROOT / name, team / name)
    git = ["git", "-c", "user.name=team", "-c", "user.email=team@example.invalid"]
    run(["git", "init", "-q", "-b", "main"], team)
    run(["git", "add", "-A"], team)
    run([*git, "commit", "-qm", "a team's app"], team)
    head = run(["git", "rev-parse", "HEAD"], team).strip()
    env = {**os.environ, "AISHIP_STATE_DIR": str(REPO_ROOT / ".aiship"),
           "AISHIP_MODEL_STORE_PATH": str(REPO_ROOT / ".aiship" / "model-store"),
           "AISHIP_GIT_REPOSITORY": str(team), "AISHIP_ROLLOUT_MIN_READY_SECONDS": "5"}
    out = run([str(venv / "bin" / "aiship"), "deliver", model, "--env", e2e_environment.name], outside, env)
    assert f"delivered: aiship-app with {model} v1 at {head[:12]}" in out, out
    served = httpx.get(f"http://127.0.0.1:{e2e_environment.node_port}/version", timeout=5).json()
    assert served["model"]["name"] == model and served["git_sha"] == head
