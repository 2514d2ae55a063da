"""End to end: a second app that is not aiship's sample, from `aiship init` to serving, promoted and rolled back.

The app is `tests/fixtures/apps/regressor` (plain WSGI, port 9000, its own paths, dependencies,
model and tests), copied into a git repository of its own. The commands are those of
docs/getting-started-app-developer.md, run as written, so the page cannot rot. Then, beside the
sample: both apps delivered to staging at the same time, neither waiting for the other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import httpx
import pytest

from flows.approvals import fingerprint
from flows.settings import REPO_ROOT, Settings
from tests.e2e.support import wait_for
from tests.e2e.triggers_support import aiship, prefect_api  # noqa: F401 - prefect_api is a fixture

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "apps" / "regressor"
PAGE = REPO_ROOT / "docs" / "getting-started-app-developer.md"
STAGING, PRODUCTION = 16181, 16191
FIGURES: dict[str, float] = {}
# A model name of the tests' own: the production triggers and watch-models leave aiship-tests* alone.
MODEL = f"aiship-tests-diabetes-{uuid.uuid4().hex[:6]}"


def page_commands(page: Path) -> list[str]:
    """The ```bash blocks of a documentation page, in order."""
    return re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL)


def run_block(block: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"a command of {PAGE.name} failed (exit {proc.returncode}):\n{block}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def about(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/about", timeout=5).json()


@pytest.fixture(scope="module")
def regressor(platform, prefect_api, kube, e2e_environment, tmp_path_factory):
    """The regressor's repository and the environment its commands run in (e2e_environment: the sample's
    deliveries beside it go there); unregistered and removed afterwards."""
    repo = tmp_path_factory.mktemp("regressor") / "regressor"
    shutil.copytree(FIXTURE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "user.name=team", "-c", "user.email=team@example.invalid", "commit", "-qm", "the regressor, before aiship")
    env = {**os.environ, "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "team", "GIT_AUTHOR_EMAIL": "team@example.invalid",
           "GIT_COMMITTER_NAME": "team", "GIT_COMMITTER_EMAIL": "team@example.invalid",
           "AISHIP_PUBLISHER": "e2e", "MODEL": MODEL,
           # the bake window is not what this page shows (the sample's e2e rollouts test it); 5 s keeps rollouts short
           "AISHIP_ROLLOUT_MIN_READY_SECONDS": "5"}
    yield repo, env
    aiship("app", "remove", "regressor")
    from kubernetes import client

    for ns in ("regressor-staging", "regressor-production"):
        try:
            client.CoreV1Api(kube).delete_namespace(ns)
        except client.exceptions.ApiException:
            pass


def test_1_the_developer_page_takes_the_repository_to_serving(regressor, docker_client):
    repo, env = regressor
    blocks = page_commands(PAGE)
    assert len(blocks) >= 5, "the page lost its commands"
    started = time.monotonic()
    outputs = [run_block("\n".join(blocks), repo, env)]  # one shell, as a reader types them: MODEL holds
    FIGURES["init to serving s"] = round(time.monotonic() - started, 1)
    print("\nfigures:", FIGURES)
    served = about(STAGING)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert served["model_name"] == MODEL and served["model_version"] == 1 and served["revision"] == head
    joined = "\n".join(outputs)
    assert "registered regressor" in joined and f"delivered: regressor with {MODEL} v1" in joined
    assert re.search(r"^regressor +staging +sha256:[0-9a-f]{64}", joined, re.MULTILINE), joined[-1500:]
    # its tests ran sandboxed in its own test image; its own image has its own dependencies, not the sample's
    assert docker_client.images.get(f"aiship-tests/regressor:{head[:12]}")
    code = docker_client.images.get(f"{Settings().registry_host}/regressor:code-{head[:12]}")
    with pytest.raises(docker.errors.ContainerError, match=r"No module named .{0,3}flask"):
        docker_client.containers.run(code.id, ["python", "-c", "import gunicorn, sklearn; import flask"], remove=True)
    # running init again changes nothing
    again = run_block(_init_line(blocks[0]), repo, env)
    assert "unchanged" in again and "written" not in again


def _init_line(block: str) -> str:
    """The page's `aiship init` command (its continued lines joined)."""
    text = block.replace("\\\n", " ")
    return next(line for line in text.splitlines() if line.strip().startswith("aiship init"))


def test_2_a_model_only_change_and_both_apps_at_once(regressor, e2e_environment, tmp_path):
    """v2 of the regressor's model and a first delivery of the sample go to staging together."""
    repo, env = regressor
    run_block(f"python -m regressor.train model-v2/ 2.0 && aiship model publish model-v2/ --name {MODEL} --no-event", repo, env)
    from tests.fixtures.models import good_model

    sample_model = f"aiship-tests-e2e-two-{uuid.uuid4().hex[:6]}"
    run_block(f"aiship model publish {good_model(tmp_path / 'sample', seed=3)} --name {sample_model} --no-event",
              REPO_ROOT, env)
    script = ("import sys; from flows.deliver import deliver; "
              "d = deliver(sys.argv[1], None, 'main', sys.argv[2]); print('DELIVERY ' + d.model_dump_json())")
    started = time.monotonic()
    procs = {name: subprocess.Popen([sys.executable, "-c", script, model, environment], cwd=REPO_ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, model, environment in (("regressor", MODEL, "staging"), ("sample", sample_model, e2e_environment.name))}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        results[name] = json.loads(out.split("DELIVERY ", 1)[1])
    FIGURES["two apps at once s"] = round(time.monotonic() - started, 1)
    FIGURES.update({f"{name} {stage} s": seconds for name, r in results.items() for stage, seconds in r["stage_seconds"].items()
                    if stage in ("app_tests", "build", "push", "roll_out", "wait_for_environment")})
    print("\nfigures:", FIGURES)
    assert results["regressor"]["release"]["app"] == "regressor" and results["sample"]["release"]["app"] == "aiship-app"
    assert all(r["outcome"] == "delivered" for r in results.values())
    # each app holds its own lock: neither waited for the other's rollout
    assert all(r["stage_seconds"]["wait_for_environment"] < 5 for r in results.values()), results
    assert about(STAGING)["model_version"] == 2
    assert httpx.get(f"http://127.0.0.1:{e2e_environment.node_port}/version", timeout=5).json()["model"]["name"] == sample_model


def test_3_promote_through_a_signed_approval_then_roll_back(regressor, prefect_api):  # noqa: F811
    """The page registered the regressor with the reviewer's public key: an unsigned answer is
    refused by `aiship approve` and, sent to the API, waited past; the signed one promotes."""
    repo, env = regressor
    key = str(repo.parent / "reviewer-key")
    started = aiship("promote", "regressor")
    assert started.returncode == 0, started.stderr
    run_id = re.search(r"flow run ([0-9a-f-]{36})", started.stdout).group(1)
    unsigned = aiship("approve", run_id, "--reviewer", "reviewer", timeout=200)
    assert unsigned.returncode == 1 and "the answer is not signed" in unsigned.stderr, unsigned.stderr
    paused = prefect_api.wait_state(run_id, {"PAUSED"}, timeout=60)
    prefect_api.resume(run_id, {"approve": True, "reviewer": "reviewer", "comment": "", "signature": ""})
    wait_for(lambda: any("is not signed" in line for line in prefect_api.logs(run_id)), timeout=60,
             what="the run logs the unsigned answer it waits past")
    again = prefect_api.wait_state(run_id, {"PAUSED"}, timeout=60)
    assert again["state_type"] == "PAUSED" and again["state"]["id"] != paused["state"]["id"]  # nothing rolled out
    printed = aiship("approve", run_id, "--reviewer", "reviewer", "--key", key, "--comment", "second app",
                     "--print-signature", timeout=200)
    assert printed.returncode == 0, printed.stderr
    prefect_api.resume(run_id, {"approve": True, "reviewer": "reviewer", "comment": "second app",
                                "signature": printed.stdout.strip()})  # as the UI's form sends it
    wait_for(lambda: about(PRODUCTION)["model_version"] == 2, timeout=300, what=f"production serves {MODEL} v2")
    public = (repo.parent / "reviewer-key.pub").read_text()
    record = prefect_api.call("POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["promotion-regressor"]}},
                                                            "sort": "CREATED_DESC", "limit": 1})[0]["data"]
    assert f"by reviewer (signature verified: {fingerprint(public)})" in record, record

    back = aiship("rollback", "regressor", "--env", "staging", timeout=400)
    assert back.returncode == 0, back.stdout + back.stderr
    assert about(STAGING)["model_version"] == 1 and about(PRODUCTION)["model_version"] == 2
    history = aiship("history", "regressor", "--env", "staging")
    lines = history.stdout.splitlines()
    assert lines[0].split()[:3] == ["REVISION", "STATE", "DIGEST"] and len(lines) >= 3
    assert any(line.split()[1] == "serving" and f"{MODEL} v1" in line for line in lines[1:]), history.stdout


def test_4_a_signed_push_of_its_repository_delivers_the_regressor_and_only_on_its_branch(regressor, prefect_api):
    """Through the real receiver, event and trigger: the push is routed by its repository to the
    regressor. The pushed commit serves already, so the run ends skipped rather than rebuilding it."""
    from tests.e2e.triggers_support import github_push_body, now, send_github, webhook_secret

    repo, _ = regressor
    settings = Settings()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    secret = webhook_secret(settings)
    elsewhere = send_github(settings, github_push_body("local/regressor", head, ref="refs/heads/feature"), secret)
    assert elsewhere.status_code == 202, elsewhere.text
    assert "refs/heads/feature is not the branch of app regressor (refs/heads/main)" in elsewhere.json()["reason"]
    since = now()
    answer = send_github(settings, github_push_body("local/regressor", head, pusher="team"), secret)
    assert answer.status_code == 200 and answer.json()["status"] == "emitted", answer.text
    runs = wait_for(lambda: prefect_api.runs("deliver-commit", since, repo="local/regressor"), 30,
                    "a deliver-commit run for the regressor's push")
    final = prefect_api.wait_final(runs[0]["id"], 300)
    assert final["state_type"] == "COMPLETED", prefect_api.describe(final)
    # the run's last log lines may reach the server a moment after its final state
    logs = wait_for(lambda: (text := " ".join(prefect_api.logs(final["id"]))) and "already serves in staging" in text and text,
                    30, "the deliver-commit run's log saying the pushed commit already serves")
    assert f"by team: delivering regressor with model {MODEL} v1" in logs, logs[-2000:]
    assert len(prefect_api.runs("deliver-commit", since)) == 1, "the push started more than one delivery"
