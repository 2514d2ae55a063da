"""A mistake in what a user asks for is refused before any work, in one line that says what to do.

Each case runs the real `aiship` command (the flows run in it, recorded on the local Prefect
server) with its own TMPDIR: nothing may be cloned, tested or built, so that folder stays empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

AISHIP = str(Path(sys.executable).parent / "aiship")
MODEL = f"aiship-tests-params-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """A local model store holding version 1 of MODEL."""
    from app.train import train

    root = tmp_path_factory.mktemp("params")
    train(root / "model")
    env = {"AISHIP_MODEL_STORE": "local", "AISHIP_MODEL_STORE_PATH": str(root / "store")}
    published = subprocess.run([AISHIP, "model", "publish", str(root / "model"), "--name", MODEL, "--no-event"],
                               env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert published.returncode == 0, published.stderr
    return env


CASES = {
    "unknown app": (["deliver", MODEL, "--app", "no-such-app"], {}, ["no-such-app"]),
    "unknown environment": (["deliver", MODEL, "--env", "nowhere"], {}, ["nowhere", "staging"]),
    "unknown model": (["deliver", "no-such-model"], {}, ["no-such-model", "aiship model publish"]),
    "unknown version": (["deliver", MODEL, "--version", "99"], {}, ["no version 99", "published versions: 1"]),
    "git ref that is an option": (["deliver", MODEL, "--git-ref", "--upload-pack=touch /tmp/x"], {}, ["is not a branch, tag or commit SHA"]),
    "git ref that is a range": (["deliver", MODEL, "--git-ref", "main..other"], {}, ["is not a branch, tag or commit SHA"]),
    "git ref that does not exist": (["deliver", MODEL, "--git-ref", "no-such-branch"], {}, ["not found in", "push it there"]),
    "malformed registry address": (["deliver", MODEL], {"AISHIP_REGISTRY": "https://myacr.azurecr.io/v2"}, ["AISHIP_REGISTRY", "host[:port]"]),
    # "never served in staging" or, on a fresh platform, "no earlier release served in staging"
    "rollback to a digest that never served": (["rollback", "aiship-app", "--to", "sha256:" + "0" * 64], {}, ["served in staging"]),
    "rollback of an unknown app": (["rollback", "no-such-app"], {}, ["no-such-app"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_mistake_is_refused_before_any_work_in_one_line(case, store, tmp_path, prefect_api):
    args, env_extra, expected = CASES[case]
    work = tmp_path / "tmp"
    work.mkdir()
    proc = subprocess.run([AISHIP, *args], env={**os.environ, **store, **env_extra, "TMPDIR": str(work)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert all(word in errors[0] for word in expected), errors[0]
    assert "Traceback" not in proc.stderr
    assert not list(work.iterdir()), f"work started: {sorted(p.name for p in work.iterdir())}"
