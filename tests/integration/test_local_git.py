"""The local git repository (local/git.sh): a push reaches the real receiver and becomes an event on the Prefect server.

Each test makes its own bare repository (its own state folder) named `aiship-tests/<uuid>` in
the payload, so the project's own repository and its deployment triggers are left alone; the
hook signs with the receiver's real secret file and posts to the real receiver on :8700.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from flows.settings import REPO_ROOT
from tests.prefect_events import read_events, running_receiver, wait_for_event

pytestmark = pytest.mark.usefixtures("pushes_app")  # the repositories these tests push from deliver an app


GIT_ENV = {"GIT_AUTHOR_NAME": "aiship test", "GIT_AUTHOR_EMAIL": "test@aiship", "GIT_COMMITTER_NAME": "aiship test",
           "GIT_COMMITTER_EMAIL": "test@aiship", "GIT_CONFIG_GLOBAL": "/dev/null"}


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})}, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@pytest.fixture(scope="module")
def receiver(settings) -> str:
    """The receiver's URL, and the secret file the hook reads; fails (never skips) when missing."""
    url = running_receiver(settings)
    if not (settings.state_dir / "webhooks" / "secret").is_file():
        pytest.fail(f"{settings.state_dir}/webhooks/secret is missing; run `bash local/webhooks.sh up`")
    return url


@pytest.fixture
def bare(tmp_path, settings, receiver) -> tuple[Path, str, dict]:
    """(bare repository, its full name in payloads, the env of its script), made by `local/git.sh up`."""
    name = f"aiship-tests/{uuid.uuid4().hex[:12]}"
    env = {"AISHIP_STATE_DIR": str(tmp_path / "state"), "AISHIP_GIT_REPO_NAME": name,
           "AISHIP_WEBHOOK_SECRET_FILE": str(settings.state_dir / "webhooks" / "secret"),
           "AISHIP_WEBHOOK_PORT": str(settings.webhook_port)}
    run("bash", str(REPO_ROOT / "local" / "git.sh"), "up", env=env)
    return tmp_path / "state" / "git" / "aiship.git", name, env


def clone_and_commit(bare_repo: Path, work: Path, message: str = "change") -> str:
    run("git", "clone", "-q", str(bare_repo), str(work))
    (work / "file.txt").write_text(f"{message} {uuid.uuid4()}\n")
    run("git", "add", "file.txt", cwd=work)
    run("git", "commit", "-q", "-m", message, cwd=work)
    return run("git", "rev-parse", "HEAD", cwd=work).stdout.strip()


def test_status_is_ready_with_the_repository_path(bare):
    bare_repo, _, env = bare
    result = run("bash", str(REPO_ROOT / "local" / "git.sh"), "status", env=env)
    assert result.stdout.strip().split("\t") == ["ready", str(bare_repo), "-", result.stdout.split("\t")[3].strip()]
    assert f"git remote add local {bare_repo}" in result.stderr


def test_push_to_main_becomes_a_git_pushed_event(bare, tmp_path):
    bare_repo, name, _ = bare
    sha = clone_and_commit(bare_repo, tmp_path / "work")
    pushed = run("git", "push", "origin", "HEAD:main", cwd=tmp_path / "work")
    assert "aiship: delivered push of refs/heads/main" in pushed.stderr, pushed.stderr
    event = wait_for_event("aiship.git.pushed", f"aiship.repo.{name}", sha=sha)
    assert event["payload"]["ref"] == "refs/heads/main"
    assert event["payload"]["repo"] == name
    log = [json.loads(line) for line in (bare_repo / "aiship-deliveries.log").read_text().splitlines()]
    assert log[-1]["sha"] == sha and log[-1]["status"] == 200
    assert event["payload"]["delivery_id"] == log[-1]["delivery_id"]


def test_push_to_another_branch_is_ignored(bare, tmp_path):
    bare_repo, name, _ = bare
    sha = clone_and_commit(bare_repo, tmp_path / "work")
    pushed = run("git", "push", "origin", "HEAD:feature", cwd=tmp_path / "work")
    assert "202" in pushed.stderr and "refs/heads/feature is not the branch of app" in pushed.stderr, pushed.stderr
    run("git", "commit", "-q", "--allow-empty", "-m", "marker", cwd=tmp_path / "work")
    marker = run("git", "rev-parse", "HEAD", cwd=tmp_path / "work").stdout.strip()
    run("git", "push", "origin", "HEAD:main", cwd=tmp_path / "work")
    wait_for_event("aiship.git.pushed", f"aiship.repo.{name}", sha=marker)
    assert sha not in [e["payload"]["sha"] for e in read_events("aiship.git.pushed", f"aiship.repo.{name}")]


def test_failed_delivery_keeps_the_push_and_can_be_redelivered(bare, tmp_path, settings):
    bare_repo, name, _ = bare
    run("git", "--git-dir", str(bare_repo), "config", "aiship.url", "http://127.0.0.1:9/github")  # nothing listens
    sha = clone_and_commit(bare_repo, tmp_path / "work")
    pushed = run("git", "push", "origin", "HEAD:main", cwd=tmp_path / "work")
    assert "WARNING" in pushed.stderr and "--redeliver" in pushed.stderr
    assert run("git", "--git-dir", str(bare_repo), "rev-parse", "main").stdout.strip() == sha  # the push happened
    (kept,) = (bare_repo / "aiship-deliveries").glob("*.json")
    run("git", "--git-dir", str(bare_repo), "config", "aiship.url", f"http://127.0.0.1:{settings.webhook_port}/github")
    redelivered = run(str(bare_repo / "hooks" / "post-receive"), "--redeliver", str(kept), env={"GIT_DIR": str(bare_repo)})
    assert "delivered" in redelivered.stdout and not kept.exists()
    event = wait_for_event("aiship.git.pushed", f"aiship.repo.{name}", sha=sha)
    assert event["payload"]["delivery_id"] == kept.stem


def test_up_again_keeps_the_commits(bare, tmp_path):
    bare_repo, _, env = bare
    sha = clone_and_commit(bare_repo, tmp_path / "work")
    run("git", "push", "-q", "origin", "HEAD:main", cwd=tmp_path / "work")
    run("bash", str(REPO_ROOT / "local" / "git.sh"), "up", env=env)
    assert run("git", "--git-dir", str(bare_repo), "rev-parse", "main").stdout.strip() == sha
