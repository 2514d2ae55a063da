"""Issue 6's scenarios on the real Prefect server and worker: events, webhooks, pushes, the UI's API.

Deliveries here are started by the platform, never called in-process: a model publish, a git push
to the local bare repository, a signed webhook, an Event Grid event, `run_deployment` (what the
UI's buttons do), a schedule's flow. Staging is namespace aiship-staging on 127.0.0.1:16180,
production aiship-production on :16190.

Model names `e2e-trig-<hex>` are meant to deliver; names starting `aiship-tests` are excluded by
the deployments' triggers (events that must not deliver anything). Tests run in file order and
build on each other: v1 serves, a push changes the code, v2 and v3 arrive together, v1 is pinned,
rolled back to v3, promoted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid

import pytest

from flows.settings import Settings
from tests.e2e.support import get_json, wait_for
from tests.e2e.triggers_support import (  # noqa: F401 - prefect_api is a fixture
    BareRepoClone, PrefectApi, aiship, blob_created, github_push_body, now, parse_time, prefect_api, send_eventgrid,
    send_github, webhook_secret, worker_environment,
)
from tests.fixtures.models import good_model

pytestmark = pytest.mark.slow
STAGING_PORT, PRODUCTION_PORT = 16180, 16190
DELIVERY_TIMEOUT = 600  # a build on 2 busy cores; a skipped delivery ends in well under a minute
QUICK_TIMEOUT = 180
STATE: dict = {}
MODEL_EVENT = "aiship.model.registered"


@pytest.fixture(scope="module")
def api(prefect_api) -> PrefectApi:
    return prefect_api


@pytest.fixture(scope="module")
def model() -> str:
    """This module's model name: its events trigger deliveries."""
    return f"e2e-trig-{uuid.uuid4().hex[:8]}"


def served(port: int = STAGING_PORT) -> dict:
    """/version of an environment; a refused connection is retried for a few seconds (the local
    cluster's kube-proxy restarting drops NodePorts for an instant), a wrong answer is not."""
    return wait_for(lambda: get_json(f"http://127.0.0.1:{port}/version"), 30, f"/version on 127.0.0.1:{port}", 1.0)


def serving_digest(kube, environment: str) -> str:
    from flows.environments import serving_version

    settings = Settings()
    current = serving_version(kube, settings.environment(environment), settings.app_name)
    return current.digest if current else ""


def settle_model_runs(api: PrefectApi, model: str, versions: list[int], since, timeout: float = DELIVERY_TIMEOUT) -> list[dict]:
    """Waits until every `aiship.model.registered` event for these versions since `since` has its
    deliver-model run and every such run has ended; returns the runs, oldest first.

    watch-models announces versions published through aiship too, so one publish may start two
    runs; the flow's guard makes the second a no-op, and the tests wait for both."""
    def matched():
        events = sum(len(api.events(MODEL_EVENT, f"aiship.model.{model}.{v}", since)) for v in versions)
        runs = [r for r in api.runs("deliver-model", since, model_name=model) if r["parameters"].get("model_version") in versions]
        return runs if events and len(runs) >= events else None

    deadline = time.monotonic() + timeout
    while True:
        runs = wait_for(matched, 60, f"a deliver-model run for each {MODEL_EVENT} event of {model} v{versions}", 1.0)
        finals = [api.wait_final(r["id"], max(5.0, deadline - time.monotonic())) for r in runs]
        time.sleep(6)  # the server stores events a few seconds after taking them: look once more
        if {r["id"] for r in wait_for(matched, 60, "the same runs again", 1.0)} == {r["id"] for r in runs}:
            return finals


def run_watch(api: PrefectApi, strict: bool = True) -> dict:
    """Runs the watch-models deployment now (as its schedule would) and waits for it to end.

    Not strict: the caller only wants watch's duplicate announcements out of the way now rather
    than a minute later, and its own scenario (test_8) judges watch-models."""
    from prefect.deployments import run_deployment

    deadline = time.monotonic() + QUICK_TIMEOUT
    while True:
        run = run_deployment("watch-models/watch-models", timeout=0)
        final = api.wait_final(str(run.id), QUICK_TIMEOUT)
        if not collided(final) or time.monotonic() > deadline:
            break
        time.sleep(2)  # the schedule's own watch held the slot (CANCEL_NEW): ours goes once it is done
    if strict:
        assert final["state_type"] == "COMPLETED", api.describe(final)
    return final


def collided(run: dict) -> bool:
    """The run was cancelled by watch-models' CANCEL_NEW limit: another watch (the every-minute
    schedule's) was running at that moment."""
    return run["state_type"] == "CANCELLED" and "concurrency limit" in (run["state"].get("message") or "")


def assert_completed(api: PrefectApi, runs: list[dict]) -> None:
    bad = [api.describe(r) for r in runs if r["state_type"] != "COMPLETED"]
    assert not bad, "runs did not complete: " + "; ".join(bad)


def test_1_model_publish_starts_a_delivery_by_itself(api, model, tmp_path_factory):
    model_dir = good_model(tmp_path_factory.mktemp("trig-v1") / "v1", seed=0)
    STATE["v1_dir"] = model_dir
    since = now()
    proc = aiship("model", "publish", str(model_dir), "--name", model, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"published {model}:1" in proc.stdout and "emitted" in proc.stdout, proc.stdout
    first = wait_for(lambda: api.runs("deliver-model", since, model_name=model, model_version=1), 30,
                     "a deliver-model run started by the publish's event")
    # no git_ref: the flow takes the app's registered branch
    assert first[0]["parameters"] == {"model_name": model, "model_version": 1, "environment": "staging"}
    run_watch(api, strict=False)  # watch-models announces v1 too; its run must find it serving and do nothing
    runs = settle_model_runs(api, model, [1], since)
    assert_completed(api, runs)
    version = served()
    assert version["model"]["name"] == model and version["model"]["version"] == 1, version
    STATE["v1_sha256"] = version["model"]["sha256"]


def test_2_git_push_delivers_that_commit(api, model, platform, tmp_path):
    expected_repo = str(platform.state_dir / "git" / "aiship.git")
    worker_repo = worker_environment(platform).get("AISHIP_GIT_REPOSITORY")
    assert worker_repo == expected_repo, (
        f"the worker checks code out from {worker_repo or 'this checkout (AISHIP_GIT_REPOSITORY unset)'}, not from the "
        f"bare repository {expected_repo} that `git push` reaches; local/prefect.sh must export AISHIP_GIT_REPOSITORY")
    clone = BareRepoClone(platform, tmp_path / "clone")
    sha = clone.commit_doc(f"trig-{model}")
    since = now()
    hook_output = clone.push()
    runs = wait_for(lambda: api.runs("deliver-commit", since, sha=sha), 30,
                    f"a deliver-commit run for {sha[:12]} (hook said: {hook_output.strip()[-300:]})")
    assert runs[0]["parameters"]["repo"] == "local/aiship" and runs[0]["parameters"]["ref"] == "refs/heads/main"
    final = api.wait_final(runs[0]["id"], DELIVERY_TIMEOUT)
    assert final["state_type"] == "COMPLETED", api.describe(final)
    version = served()
    assert version["git_sha"] == sha, version
    assert version["model"]["name"] == model and version["model"]["version"] == 1, "the push must keep the serving model"
    STATE["pushed_sha"] = sha


def test_3_signed_github_webhook_triggers_and_a_wrong_signature_does_not(api, platform):
    secret = webhook_secret(platform)
    serving_sha = served()["git_sha"]
    repo = "local/aiship"  # the first app's configured repository (AISHIP_APP_SOURCES' default)
    since = now()
    answer = send_github(platform, github_push_body(repo, serving_sha, pusher="e2e-bot"), secret)
    assert answer.status_code == 200 and answer.json()["status"] == "emitted", answer.text
    runs = wait_for(lambda: api.runs("deliver-commit", since, repo=repo), 30, f"a deliver-commit run for the push to {repo}")
    assert runs[0]["parameters"] == {"sha": serving_sha, "ref": "refs/heads/main", "repo": repo, "pusher": "e2e-bot",
                                     "environment": "staging"}
    final = api.wait_final(runs[0]["id"], QUICK_TIMEOUT)
    assert final["state_type"] == "COMPLETED", api.describe(final)
    assert not [t for t in api.task_runs(final["id"]) if t["name"].startswith(("build-image", "roll-out"))], \
        "a push of the serving commit must be skipped, not built or rolled out"

    forged_repo, fork = (f"e2e-trig-{uuid.uuid4().hex[:8]}/aiship" for _ in range(2))
    since = now()
    forged = send_github(platform, github_push_body(forged_repo, serving_sha), secret + "-wrong")
    assert forged.status_code == 401, forged.text
    unclaimed = send_github(platform, github_push_body(fork, serving_sha), secret)  # signed, but no app's repository
    assert unclaimed.status_code == 202 and unclaimed.json()["status"] == "ignored", unclaimed.text
    time.sleep(8)  # longer than event -> run takes here (bench/triggers.py)
    for other in (forged_repo, fork):
        assert api.events("aiship.git.pushed", f"aiship.repo.{other}", since) == []
        assert api.runs("deliver-commit", since, repo=other) == []


def test_4_eventgrid_validation_and_blob_created(api, model, platform):
    from flows.model_store import get_store

    key = webhook_secret(platform, "eventgrid-key")
    code = uuid.uuid4().hex
    validation = [{"id": str(uuid.uuid4()), "topic": "/subscriptions/0", "subject": "", "eventTime": now().isoformat(),
                   "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "dataVersion": "2", "metadataVersion": "1",
                   "data": {"validationCode": code, "validationUrl": "https://rp-eastus2.eventgrid.azure.net/validate"}}]
    answer = send_eventgrid(platform, validation, key)
    assert answer.status_code == 200 and answer.json() == {"validationResponse": code}, answer.text
    assert send_eventgrid(platform, validation, key + "-wrong").status_code == 401

    # The same bytes as local v1 in Azurite, so the worker (local folder store) resolves the same model.
    azure_ref = get_store(platform, kind="azure").publish(STATE["v1_dir"], model, publisher="e2e")
    assert azure_ref.version == 1 and azure_ref.sha256 == STATE["v1_sha256"]
    since = now()
    answer = send_eventgrid(platform, [blob_created(platform, model, 1)], key)
    assert answer.status_code == 200 and answer.json()["status"] == "emitted", answer.text
    assert answer.json()["emitted"][0]["resource"] == f"aiship.model.{model}.1"
    runs = wait_for(lambda: api.runs("deliver-model", since, model_name=model, model_version=1), 30,
                    "a deliver-model run for the BlobCreated event")
    final = api.wait_final(runs[0]["id"], DELIVERY_TIMEOUT)
    assert final["state_type"] == "COMPLETED", api.describe(final)
    assert served()["model"]["version"] == 1


def test_6_two_publishes_in_quick_succession_never_overlap(api, model, platform, tmp_path):
    from flows.events import emit_model_registered
    from flows.model_store import get_store

    dirs = [good_model(tmp_path / f"v{seed}", seed=seed) for seed in (1, 2)]
    store = get_store(platform)
    since = now()
    refs = []
    for model_dir in dirs:  # what two `aiship model publish` do, back to back
        ref = store.publish(model_dir, model)
        emit_model_registered(ref)
        refs.append(ref)
    assert [r.version for r in refs] == [2, 3]
    run_watch(api, strict=False)
    runs = settle_model_runs(api, model, [2, 3], since)
    assert_completed(api, runs)
    rollouts = []
    for run in runs:
        for task in api.task_runs(run["id"]):
            if task["name"].startswith("roll-out"):
                assert task["start_time"] and task["end_time"], task
                rollouts.append((parse_time(task["start_time"]), parse_time(task["end_time"]), run["parameters"]["model_version"]))
    rollouts.sort()
    assert rollouts, "no roll-out task ran in any of the runs"
    for (start_a, end_a, va), (start_b, _, vb) in zip(rollouts, rollouts[1:]):
        assert end_a <= start_b, f"roll-out of v{va} ({start_a}..{end_a}) overlaps roll-out of v{vb} (from {start_b})"
    assert rollouts[-1][2] == 3, f"the last roll-out was v{rollouts[-1][2]}, not v3: {rollouts}"
    if 2 not in {version for _, _, version in rollouts}:
        # v3 took the environment first, so there was no pair to compare: v2's runs must have stood
        # down for the newer version, not failed to roll out for another reason.
        v2_logs = [" ".join(api.logs(r["id"])) for r in runs if r["parameters"]["model_version"] == 2]
        assert v2_logs and all("(newer than v2) already serves" in log for log in v2_logs), v2_logs
    assert len([r for r in rollouts if r[2] == 3]) == 1, f"v3 was rolled out more than once: {rollouts}"
    version = served()
    assert version["model"] == {"name": model, "version": 3, "sha256": refs[1].sha256}, version


def test_5_redeploy_from_the_ui_pins_v1(api, model, kube):
    from prefect.deployments import run_deployment

    STATE["v3_digest"] = serving_digest(kube, "staging")
    run = run_deployment("deliver/deliver", parameters={"model_name": model, "model_version": 1}, timeout=0)
    final = api.wait_final(str(run.id), DELIVERY_TIMEOUT)
    assert final["state_type"] == "COMPLETED", api.describe(final)
    assert final["parameters"]["model_version"] == 1
    version = served()
    assert version["model"]["name"] == model and version["model"]["version"] == 1, version
    assert serving_digest(kube, "staging") != STATE["v3_digest"]


def test_9_rollback_puts_the_previous_digest_back_without_building(api, model, kube):
    from prefect.deployments import run_deployment

    before = serving_digest(kube, "staging")
    run = run_deployment("rollback/rollback", parameters={"environment": "staging"}, timeout=0)
    final = api.wait_final(str(run.id), QUICK_TIMEOUT + 120)
    assert final["state_type"] == "COMPLETED", api.describe(final)
    names = [t["name"] for t in api.task_runs(final["id"])]
    assert not [n for n in names if n.startswith(("build-image", "push-image", "smoke-test"))], names
    assert any(n.startswith("roll-out") for n in names), names
    after = serving_digest(kube, "staging")
    assert after == STATE["v3_digest"] and after != before, (before, after, STATE["v3_digest"])
    assert served()["model"]["version"] == 3


def promote_and_answer(api: PrefectApi, approve: bool) -> dict:
    from prefect.deployments import run_deployment

    run = run_deployment("promote/promote", timeout=0)
    paused = api.wait_state(str(run.id), {"PAUSED"}, QUICK_TIMEOUT)
    assert paused["state_type"] == "PAUSED", api.describe(paused)
    api.resume(str(run.id), {"approve": approve, "reviewer": "e2e-reviewer", "comment": f"e2e says {approve}"})
    return api.wait_final(str(run.id), QUICK_TIMEOUT + 120)


def test_7_promote_waits_for_approval_and_a_rejection_changes_nothing(api, kube):
    staging = serving_digest(kube, "staging")
    approved = promote_and_answer(api, approve=True)
    assert approved["state_type"] == "COMPLETED", api.describe(approved)
    assert serving_digest(kube, "production") == staging
    production = served(PRODUCTION_PORT)
    assert production["model"] == served(STAGING_PORT)["model"], production

    rejected = promote_and_answer(api, approve=False)
    assert rejected["state_type"] == "COMPLETED", api.describe(rejected)
    assert not [t for t in api.task_runs(rejected["id"]) if t["name"].startswith("roll-out")]
    assert serving_digest(kube, "production") == staging
    assert served(PRODUCTION_PORT) == production


def test_8_watch_models_announces_a_version_written_straight_into_the_store_once(api, platform, tmp_path):
    from flows.manifest import MANIFEST_FILE, MODEL_FILE

    run_watch(api)  # the first watch remembers what exists (or the Variable is there already)
    name = f"aiship-tests-{uuid.uuid4().hex[:8]}"  # announced, but excluded from the delivery triggers
    model_dir = good_model(tmp_path / "raw", seed=5)
    target = platform.model_store_path / "models" / name / "1"
    staging = target.with_name(".1.tmp")
    staging.mkdir(parents=True)
    shutil.copy2(model_dir / MODEL_FILE, staging / MODEL_FILE)
    card = json.loads((model_dir / "model.json").read_text())
    data = (staging / MODEL_FILE).read_bytes()
    card.update(name=name, version=1, file=MODEL_FILE, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                publisher="az storage blob upload", published_at=now().isoformat())
    (staging / MANIFEST_FILE).write_text(json.dumps(card))
    since = now()
    staging.rename(target)  # the version appears whole, as an upload's last blob would
    for _ in range(2):
        run_watch(api)
    events = api.events(MODEL_EVENT, f"aiship.model.{name}.1", since)
    assert len(events) == 1, f"{len(events)} {MODEL_EVENT} events for {name} v1: {events}"
    assert events[0]["payload"]["sha256"] == card["sha256"] and events[0]["payload"]["version"] == 1
    assert api.runs("deliver-model", since, model_name=name) == [], "an aiship-tests event started a delivery"


def test_10_a_watch_run_that_collides_with_another_is_cancelled_not_queued(api):
    """Two watch-models runs due at once (as after the worker was down): one runs, the other is
    cancelled by the deployment's CANCEL_NEW limit instead of waiting for the slot."""
    from datetime import datetime, timedelta, timezone

    from prefect.deployments import run_deployment

    # One scheduled time for both, a little ahead: the worker's poll returns both runs or neither,
    # so it proposes both at once however fast the first would finish.
    due = datetime.now(timezone.utc) + timedelta(seconds=15)
    ids = [str(run_deployment("watch-models/watch-models", timeout=0, scheduled_time=due).id) for _ in range(2)]
    finals = [api.wait_final(run_id, QUICK_TIMEOUT) for run_id in ids]
    states = sorted(f["state_type"] for f in finals)
    # A scheduled watch may hold the slot at that moment: then both of ours are cancelled.
    assert states in (["CANCELLED", "COMPLETED"], ["CANCELLED", "CANCELLED"]), [api.describe(f) for f in finals]
    assert all(collided(f) for f in finals if f["state_type"] == "CANCELLED"), [api.describe(f) for f in finals]
