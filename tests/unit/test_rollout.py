"""Rollout's pure parts: manifest rendering, the verdict on a Deployment, what to restore, and the undo path."""

from __future__ import annotations

import json

import pytest

from flows import environments as envs
from flows import kube, rollout
from pydantic import ValidationError

from flows.environments import DEPLOYED_AT
from flows.errors import RolloutError
from flows.release import DIGEST, GIT_SHA, MODEL_VERSION, ModelId, PinnedRelease, Release, require_pinned
from flows.retry import is_transient
from flows.progress import PULL_SECRET_GRACE_SECONDS, Verdict, judge, routes_only_to
from flows.rollout import Previous, find_previous, recovery, render_manifests
from flows.settings import Environment, Settings

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
REF1 = f"127.0.0.1:5000/aiship-app@{D1}"
REF2 = f"127.0.0.1:5000/aiship-app@{D2}"
ENV = Environment(name="test", namespace="aiship-test", replicas=2, node_port=16150, app_env={"AISHIP_APP_FLAG": "on"})


def release(ref: str = REF2, version: int = 2, app: str = "aiship-app", **changes) -> PinnedRelease:
    model = ModelId(name="iris", version=version, sha256="b" * 64)
    return Release(app=app, git_sha="a" * 40, model=model, **changes).pinned(ref)


@pytest.fixture()
def settings() -> Settings:
    return Settings(rollout_progress_deadline_seconds=45, rollout_min_ready_seconds=3, rollout_max_surge=1)


# --- refusing what is not pinned ---


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/aiship-app:v1", "aiship-app", "x@sha256:abc", ""])
def test_a_reference_without_a_digest_is_refused(ref):
    with pytest.raises(ValidationError, match="ImageNotPinned") as caught:
        release(ref)
    assert repr(ref) in str(caught.value)


def test_roll_out_release_refuses_a_tag_before_calling_the_cluster(settings):
    unpinned = release().model_copy(update={"ref": "127.0.0.1:5000/aiship-app:latest"})  # model_copy does not validate
    with pytest.raises(RolloutError, match="not pinned by digest"):
        rollout.roll_out_release(None, unpinned, ENV, settings)  # None: any API call would fail differently


def test_require_pinned_accepts_a_digest_reference():
    assert require_pinned(REF1) == REF1


# --- rendering ---


def test_deployment_pins_the_image_and_carries_what_runs(settings):
    m = render_manifests(release(), ENV, settings, "2024-05-01T10:00:00Z")
    dep = m.deployment
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == REF2
    assert pod["spec"]["imagePullSecrets"] == [{"name": "aiship-registry"}]
    assert dep["metadata"]["namespace"] == "aiship-test" and dep["spec"]["replicas"] == 2
    assert pod["metadata"]["annotations"] == release().annotations()
    assert pod["metadata"]["annotations"][DIGEST] == D2 and pod["metadata"]["annotations"][MODEL_VERSION] == "2"
    # deployed-at only on the Deployment: re-delivering the same image must not restart the pods
    assert DEPLOYED_AT not in pod["metadata"]["annotations"]
    assert dep["metadata"]["annotations"][DEPLOYED_AT] == "2024-05-01T10:00:00Z"
    assert dep["metadata"]["annotations"][GIT_SHA] == "a" * 40


def test_deployment_rolls_without_losing_capacity(settings):
    spec = render_manifests(release(), ENV, settings, "t").deployment["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["progressDeadlineSeconds"] == 45 and spec["minReadySeconds"] == 3
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 5
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "768Mi"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_the_manifest_sets_the_environment_for_the_app(settings):
    container = render_manifests(release(), ENV, settings, "t").deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "AISHIP_APP_ENVIRONMENT", "value": "test"},
                                {"name": "AISHIP_APP_FLAG", "value": "on"}]


def test_the_apps_serve_facts_name_the_deployment_and_fill_port_probes_and_resources(settings):
    from flows.app_config import Resources, ServeSection

    serve = ServeSection(port=9000, health_path="/live", ready_path="/ready", replicas=3,
                         resources=Resources(cpu_limit="2", memory_limit="1Gi"))
    other = release(app="regressor", serve=serve)
    m = render_manifests(other, ENV.model_copy(update={"replicas": None}), settings, "t")
    spec = m.deployment["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert m.deployment["metadata"]["name"] == m.service["metadata"]["name"] == "regressor"
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "regressor"} and spec["replicas"] == 3
    assert container["ports"][0]["containerPort"] == 9000
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready" and container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    # promote and rollback read the serve facts back from the pod template
    assert PinnedRelease.from_annotations(spec["template"]["metadata"]["annotations"], REF2, "").serve == serve


def test_a_release_asking_past_the_environments_ceilings_is_refused_before_anything_is_applied(settings):
    from flows.app_config import Resources, ServeSection

    greedy = ServeSection(replicas=12, resources=Resources(cpu_limit="4", memory_limit="768Mi"))
    env = ENV.model_copy(update={"replicas": None})
    with pytest.raises(RolloutError, match=r"asks for replicas 12 \(at most 10\), resources.cpu_limit 4 \(at most 2\) in test") as caught:
        render_manifests(release(serve=greedy), env, settings, "t")
    assert caught.value.reason == "OverEnvironmentLimits"
    # the operator's own replica count wins over the app's ask, and a raised ceiling lets it through
    roomy = env.model_copy(update={"replicas": 2, "max_cpu_limit": "4"})
    assert render_manifests(release(serve=greedy), roomy, settings, "t").deployment["spec"]["replicas"] == 2
    assert ENV.refusals(ServeSection(resources=Resources(memory_request="1Gi", memory_limit="3Gi"))) == [
        "resources.memory_limit 3Gi (at most 2Gi)"]


def test_pods_meet_the_restricted_pod_security_standard(settings):
    """What the restricted profile checks, field by field; the 1.20 local cluster does not enforce it itself."""
    m = render_manifests(release(), ENV, settings, "t")
    pod = m.deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    assert [v for v in pod["volumes"] if set(v) - {"name", "emptyDir", "configMap", "secret", "projected"}] == []
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
        assert "ports" not in container or all("hostPort" not in p for p in container["ports"])
    assert [mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]] == ["/tmp"]
    assert m.namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_each_environment_has_a_disruption_budget_of_one_pod(settings):
    m = render_manifests(release(), ENV, settings, "t")
    budget = m.disruption_budget
    assert (budget["kind"], budget["metadata"]["namespace"], budget["spec"]["maxUnavailable"]) == (
        "PodDisruptionBudget", ENV.namespace, 1)
    assert budget["spec"]["selector"]["matchLabels"] == m.deployment["spec"]["selector"]["matchLabels"]


def test_service_answers_on_the_environments_node_port(settings):
    m = render_manifests(release(), ENV, settings, "t")
    port = m.service["spec"]["ports"][0]
    assert m.service["spec"]["type"] == "NodePort"
    assert (port["nodePort"], port["targetPort"]) == (16150, "http")
    assert m.service["spec"]["selector"] == m.deployment["spec"]["selector"]["matchLabels"]
    assert m.namespace["metadata"]["name"] == "aiship-test"


def test_a_value_cannot_break_the_yaml(settings):
    # Releases are validated; the template must hold even for a value that got past that (model_construct).
    odd = release(REF1).model_construct(**{**dict(release(REF1)), "git_sha": "x: y\n- z", "model": ModelId.model_construct(
        name='"quoted" # not a comment', version=1, sha256="{}")})
    pod = render_manifests(odd, ENV, settings, "t").deployment["spec"]["template"]
    assert pod["metadata"]["annotations"][GIT_SHA] == "x: y\n- z"
    assert pod["metadata"]["annotations"]["io.aiship/model-name"] == '"quoted" # not a comment'


# --- the verdict ---


def deployment(generation=2, observed=2, replicas=2, updated=2, total=2, available=2, conditions=()):
    return {"metadata": {"generation": generation, "annotations": {}},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": 45, "template": {}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": list(conditions)}}


def pod(name="p1", waiting=None, message="", restarts=0, finished="", ready=False):
    status = {"name": "app", "restartCount": restarts, "state": {}, "lastState": {}}
    if waiting:
        status["state"] = {"waiting": {"reason": waiting, "message": message}}
    if finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [status],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def endpoints(*pod_names, not_ready=()):
    return {"subsets": [{"addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": n}} for n in pod_names],
                         "notReadyAddresses": [{"targetRef": {"kind": "Pod", "name": n}} for n in not_ready]}]}


@pytest.mark.parametrize(("found", "expected"), [
    (endpoints("new-1", "new-2"), True),
    (endpoints("new-1", not_ready=("old-1",)), True),  # an old pod that no longer takes traffic is fine
    (endpoints("new-1", "old-1"), False),  # the endpoints controller has not caught up yet
    (endpoints(), False), ({"subsets": None}, False), (None, False),  # nothing routes anywhere yet
])
def test_traffic_counts_as_switched_when_the_service_routes_to_new_pods_only(found, expected):
    assert routes_only_to(found, [pod("new-1"), pod("new-2")]) is expected


def test_wait_holds_a_complete_rollout_until_the_service_routes_to_new_pods(monkeypatch):
    seen = iter([endpoints("new-1", "old-1"), endpoints("new-1", "old-1"), endpoints("new-1")])
    reads = []
    monkeypatch.setattr(kube, "observe", lambda api, ns, name: (deployment(), [pod("new-1", ready=True)]))
    monkeypatch.setattr(kube, "read_endpoints", lambda api, ns, name: reads.append(name) or next(seen))
    verdict, _ = kube.wait(object(), "ns", "app", 100, 0, "")
    assert verdict.state == "complete" and reads == ["app"] * 3


def test_wait_fails_when_the_service_never_switches(monkeypatch):
    clock = iter(range(0, 1000, 60))
    monkeypatch.setattr(kube.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(kube, "observe", lambda api, ns, name: (deployment(), [pod("new-1", ready=True)]))
    monkeypatch.setattr(kube, "read_endpoints", lambda api, ns, name: endpoints("old-1"))
    verdict, _ = kube.wait(object(), "ns", "app", 100, 0, "")
    assert (verdict.state, verdict.reason) == ("failed", "EndpointsNotUpdated") and "get endpoints app" in verdict.message


def test_complete_when_every_replica_is_updated_and_available():
    assert judge(deployment(), [pod(ready=True)], 1, 100).state == "complete"


@pytest.mark.parametrize("overrides", [{"updated": 1}, {"total": 3}, {"available": 1}, {"observed": 1}])
def test_progressing_until_then(overrides):
    assert judge(deployment(**overrides), [], 1, 100).state == "progressing"


def test_pods_are_not_judged_before_the_controller_saw_the_change():
    # before observedGeneration catches up, the "newest" ReplicaSet is the old one: its history is not ours
    assert judge(deployment(observed=1), [pod(waiting="CrashLoopBackOff")], 1, 100).state == "progressing"


@pytest.mark.parametrize("waiting,token", [("ImagePullBackOff", "ImagePullBackOff"), ("ErrImagePull", "ImagePullBackOff"),
                                           ("CrashLoopBackOff", "CrashLoopBackOff"), ("InvalidImageName", "InvalidImageName"),
                                           ("CreateContainerConfigError", "CreateContainerConfigError")])
def test_a_pod_that_cannot_recover_fails_the_rollout_at_once(waiting, token):
    verdict = judge(deployment(updated=1, total=3, available=2), [pod("new-1", waiting, "manifest unknown")], 1, 100)
    assert (verdict.state, verdict.reason, verdict.failing_pods) == ("failed", token, ("new-1",))
    assert "manifest unknown" in verdict.message and "new-1" in verdict.message


def test_a_pull_that_failed_on_the_way_is_given_time():
    msg = 'Error response from daemon: Get "https://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused'
    assert judge(deployment(updated=1, total=3), [pod("n", "ErrImagePull", msg)], 1, 100).state == "progressing"


def test_a_pull_without_credentials_waits_for_the_kubelets_next_try_then_fails():
    msg = ('Error response from daemon: Get "https://127.0.0.1:5000/v2/app/manifests/sha256:ab": '
           'no basic auth credentials')
    pods = [pod("n", "ErrImagePull", msg)]
    assert judge(deployment(updated=1, total=3), pods, 5, 300).state == "progressing"
    verdict = judge(deployment(updated=1, total=3), pods, PULL_SECRET_GRACE_SECONDS + 1, 300)
    assert (verdict.state, verdict.reason) == ("failed", "ImagePullBackOff") and "no basic auth credentials" in verdict.message


def test_a_restart_after_the_change_is_a_crash_loop():
    verdict = judge(deployment(updated=1, total=3), [pod(restarts=1, finished="2024-05-01T10:00:07+00:00")], 1, 100,
                    since="2024-05-01T10:00:00")
    assert (verdict.state, verdict.reason) == ("failed", "CrashLoopBackOff")


def test_a_restart_before_the_change_is_history():
    verdict = judge(deployment(), [pod(restarts=3, finished="2024-04-01T10:00:07+00:00", ready=True)], 1, 100,
                    since="2024-05-01T10:00:00")
    assert verdict.state == "complete"


def timed_out(at: str) -> dict:
    return {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "lastUpdateTime": at}


def test_the_controllers_progress_deadline_fails_the_rollout():
    verdict = judge(deployment(updated=1, total=3, conditions=[timed_out("2024-05-01T10:01:30+00:00")]),
                    [pod("n1", ready=False)], 90, 300, since="2024-05-01T10:00:00")
    assert (verdict.state, verdict.reason) == ("failed", "ProgressDeadlineExceeded")
    assert verdict.message.startswith("made no progress in 45 s") and verdict.failing_pods == ("n1",)


def test_a_timeout_older_than_the_change_is_ignored():
    # after an undo the controller keeps the old condition until it next updates the status
    verdict = judge(deployment(updated=1, total=3, conditions=[timed_out("2024-05-01T09:00:00+00:00")]), [], 5, 300,
                    since="2024-05-01T10:00:00")
    assert verdict.state == "progressing"


def test_our_own_clock_fails_a_rollout_the_controller_never_judges():
    assert judge(deployment(updated=1, total=3), [], 301, 300).reason == "ProgressDeadlineExceeded"
    assert judge(deployment(observed=1), [], 301, 300).state == "failed"


# --- what served before, and what undoes a failure ---


def template(ref: str, hash_: str | None = None, digest: str | None = None) -> dict:
    labels = {"app.kubernetes.io/name": "aiship-app"} | ({"pod-template-hash": hash_} if hash_ else {})
    ann = {DIGEST: digest or ref.rsplit("@", 1)[1], GIT_SHA: "c" * 40}
    return {"metadata": {"labels": labels, "annotations": ann}, "spec": {"containers": [{"name": "app", "image": ref}]}}


def with_template(dep: dict, tmpl: dict, annotations=None) -> dict:
    dep["spec"]["template"] = tmpl
    dep["metadata"]["annotations"] = annotations or {}
    return dep


def replica_set(ref: str, available: int, revision: int) -> dict:
    return {"metadata": {"annotations": {"deployment.kubernetes.io/revision": str(revision)},
                         "creationTimestamp": "2024-05-01T09:00:00+00:00"},
            "spec": {"template": template(ref, hash_="abc")}, "status": {"availableReplicas": available}}


def test_nothing_served_before_a_first_rollout():
    assert find_previous(None, [], REF2) is None
    assert recovery(None) == "scale-to-zero"


def test_a_deployment_scaled_to_zero_served_nothing():
    assert find_previous(with_template(deployment(replicas=0, updated=0, total=0, available=0), template(REF1)), [], REF2) is None


def test_a_complete_deployment_serves_its_own_template():
    ann = {DIGEST: D1, DEPLOYED_AT: "2024-05-01T09:00:00Z", "deployment.kubernetes.io/revision": "3"}
    prev = find_previous(with_template(deployment(), template(REF1), ann), [], REF2)
    assert prev.digest == D1 and prev.template["spec"]["containers"][0]["image"] == REF1
    assert prev.annotations == {DIGEST: D1, DEPLOYED_AT: "2024-05-01T09:00:00Z"}  # only ours
    assert recovery(prev) == "rollback"


def test_mid_rollout_the_newest_available_replica_set_of_another_image_served():
    # e.g. the task is retried after a connection error while REF2 was rolling out
    dep = with_template(deployment(updated=1, total=3, available=2), template(REF2))
    sets = [replica_set(REF2, 0, 5), replica_set(REF1, 2, 4), replica_set("r@" + "sha256:" + "3" * 64, 0, 3)]
    prev = find_previous(dep, sets, REF2)
    assert prev.digest == D1
    assert "pod-template-hash" not in prev.template["metadata"]["labels"]  # the controller adds it again
    assert prev.annotations[DEPLOYED_AT] == "2024-05-01T09:00:00+00:00"


def test_mid_rollout_with_nothing_available_nothing_served():
    dep = with_template(deployment(updated=1, total=1, available=0), template(REF2))
    assert find_previous(dep, [replica_set(REF2, 0, 2), replica_set(REF1, 0, 1)], REF2) is None


# --- the undo path, with the cluster calls replaced ---


class FakeKube:
    """Records the calls `roll_out_release` makes, and answers the waits it is given."""

    def __init__(self, monkeypatch, current, verdicts):
        self.calls, self.verdicts = [], list(verdicts)
        self.current = current
        monkeypatch.setattr(kube, "read_deployment", lambda api, ns, name: self.current)
        monkeypatch.setattr(rollout.envs, "replica_sets", lambda api, ns, name: [])
        monkeypatch.setattr(kube, "apply", lambda api, m, block: self.calls.append(("apply", m.deployment["spec"]["template"]["spec"]["containers"][0]["image"])))
        monkeypatch.setattr(kube, "wait", lambda *a: (self.verdicts.pop(0), deployment()))
        monkeypatch.setattr(kube, "failure_details", lambda api, ns, pods: f"events of {pods}")
        monkeypatch.setattr(kube, "restore", lambda api, ns, name, prev, n, if_generation=None: self.calls.append(("restore", prev.digest, n)))
        monkeypatch.setattr(kube, "read_observed", lambda api, ns, name: self.current)
        monkeypatch.setattr(kube, "mark_failed", lambda api, ns, name, reason, if_generation=None: self.calls.append(("mark_failed", reason)))
        monkeypatch.setattr(kube, "scale", lambda api, ns, name, n: self.calls.append(("scale", n)))
        monkeypatch.setattr(kube, "set_rollout_state", lambda api, ns, name, state: self.calls.append(("state", state)))


SERVING_V1 = with_template(deployment(), template(REF1), {DIGEST: D1, GIT_SHA: "c" * 40, MODEL_VERSION: "1",
                                                             "io.aiship/model-name": "iris"})
PULL_FAILED = Verdict("failed", "ImagePullBackOff", "pod x: ImagePullBackOff: not found", ("x",))


def test_a_failed_rollout_restores_what_served_and_says_so(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [PULL_FAILED, Verdict("complete")])
    with pytest.raises(RolloutError) as caught:
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2), ("mark_failed", "ImagePullBackOff"), ("restore", D1, 2), ("state", "complete")]
    err = caught.value
    assert err.reason == "ImagePullBackOff" and f"restored {D1}" in err.message and "iris v1" in err.message
    assert str(err).startswith("ImagePullBackOff: pod x") and err.details == "events of ('x',)"


def test_a_failed_first_rollout_scales_to_zero(monkeypatch, settings):
    fake = FakeKube(monkeypatch, None, [PULL_FAILED])
    with pytest.raises(RolloutError, match="scaled to zero") as caught:
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2), ("mark_failed", "ImagePullBackOff"), ("scale", 0), ("state", "complete")]
    assert caught.value.reason == "ImagePullBackOff"


def test_a_restore_that_fails_too_is_reported_and_stays_unfinished(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [PULL_FAILED, Verdict("failed", "CrashLoopBackOff", "old one crashes")])
    with pytest.raises(RolloutError, match=f"restoring {D1} did not complete either") as caught:
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert caught.value.reason == "ImagePullBackOff" and ("state", "complete") not in fake.calls


def test_the_deployment_is_applied_in_progress_and_marked_complete_when_it_serves(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [Verdict("complete")])
    rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2), ("state", "complete")]
    ann = render_manifests(release(), ENV, settings, "t").deployment["metadata"]["annotations"]
    assert ann[envs.ROLLOUT_STATE] == envs.IN_PROGRESS


def interrupt_wait(fake, monkeypatch, applied_by_other: bool = False):
    """Makes the rollout's wait stop as Prefect stops a holder whose lock's lease was lost."""
    from prefect._internal.concurrency.cancellation import CancelledError

    def wait(*a):
        if fake.verdicts and fake.verdicts[0] == "interrupt":
            fake.verdicts.pop(0)
            fake.current = with_template(deployment(), template(REF2), {DIGEST: D1 if applied_by_other else D2})
            raise CancelledError()
        return fake.verdicts.pop(0), deployment()

    monkeypatch.setattr(kube, "wait", wait)
    return CancelledError


def test_a_rollout_interrupted_while_it_waits_is_undone_before_the_interruption_goes_on(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [])
    fake.verdicts = ["interrupt"]
    cancelled = interrupt_wait(fake, monkeypatch)
    fake.verdicts.append(Verdict("complete"))  # the undo's own wait
    with pytest.raises(cancelled):
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2), ("mark_failed", "RolloutInterrupted"), ("restore", D1, 2), ("state", "complete")]


def test_an_interrupted_rollout_that_another_run_replaced_is_left_to_it(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [])
    fake.verdicts = ["interrupt"]
    cancelled = interrupt_wait(fake, monkeypatch, applied_by_other=True)
    with pytest.raises(cancelled):
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2)]


def test_an_interruption_whose_undo_fails_still_ends_the_run_as_interrupted(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [])
    fake.verdicts = ["interrupt"]
    cancelled = interrupt_wait(fake, monkeypatch)

    def restore(*a, **k):
        raise ConnectionRefusedError("127.0.0.1:16443")

    monkeypatch.setattr(kube, "restore", restore)
    with pytest.raises(cancelled):  # not the undo's error
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)


def changed_by_another_writer(monkeypatch, apps) -> dict:
    """The serving Deployment as another writer left it (generation 7), read through `apps`."""
    changed = json.loads(json.dumps(SERVING_V1))
    changed["metadata"]["generation"] = 7
    monkeypatch.setattr(kube, "_apis", lambda api: (None, apps))
    monkeypatch.setattr(kube, "read_deployment", lambda api, ns, name: changed)
    return changed


def test_a_restore_only_if_unchanged_leaves_a_deployment_another_writer_changed(monkeypatch):
    from flows.rollout import Previous

    replaced = []

    class Apps:
        def replace_namespaced_deployment(self, name, ns, body):
            replaced.append(body)

    changed_by_another_writer(monkeypatch, Apps())
    with pytest.raises(RolloutError, match="changed by another writer since generation 6"):
        kube.restore(object(), "ns", "app", Previous(template(REF1), {DIGEST: D1}), 2, if_generation=6)
    assert replaced == []
    kube.restore(object(), "ns", "app", Previous(template(REF1), {DIGEST: D1}), 2, if_generation=7)
    assert len(replaced) == 1


def test_marking_failed_only_if_unchanged_leaves_another_writers_revision_alone(monkeypatch):
    patched = []

    class Apps:
        def patch_namespaced_replica_set(self, name, ns, patch):
            patched.append(name)

    changed = changed_by_another_writer(monkeypatch, Apps())
    changed["metadata"]["annotations"][envs.REVISION] = "3"
    monkeypatch.setattr(kube.envs, "replica_sets",
                        lambda api, ns, name: [{"metadata": {"name": "app-3", "annotations": {envs.REVISION: "3"}}}])
    with pytest.raises(RolloutError, match="changed by another writer since generation 6"):
        kube.mark_failed(object(), "ns", "app", "RolloutInterrupted", if_generation=6)
    assert patched == []
    kube.mark_failed(object(), "ns", "app", "RolloutInterrupted", if_generation=7)
    assert patched == ["app-3"]


def test_an_api_error_during_the_wait_is_not_answered_with_an_undo(monkeypatch, settings):
    fake = FakeKube(monkeypatch, SERVING_V1, [])

    def wait(*a):
        raise ConnectionRefusedError("127.0.0.1:16443")

    monkeypatch.setattr(kube, "wait", wait)
    with pytest.raises(ConnectionRefusedError):
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2)]


def unfinished(complete: bool) -> dict:
    """SERVING_V1 as a run that died after applying it left it: "in-progress", complete or not."""
    dep = json.loads(json.dumps(SERVING_V1))
    dep["metadata"]["annotations"][envs.ROLLOUT_STATE] = envs.IN_PROGRESS
    if not complete:
        dep["status"]["updatedReplicas"] = 0
    return dep


def test_an_unfinished_rollout_that_completed_since_is_marked_complete_and_is_what_served(monkeypatch, settings):
    fake = FakeKube(monkeypatch, unfinished(complete=True), [Verdict("complete")])
    result = rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("state", "complete"), ("apply", REF2), ("state", "complete")] and result.previous_digest == D1


def test_an_unfinished_rollout_that_never_completed_is_marked_failed_and_is_not_what_served(monkeypatch, settings):
    fake = FakeKube(monkeypatch, unfinished(complete=False), [PULL_FAILED])
    with pytest.raises(RolloutError, match="scaled to zero"):  # no earlier ReplicaSet has pods in this fake
        rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls[:2] == [("mark_failed", "RolloutUnfinished"), ("apply", REF2)]


def test_an_unfinished_rollout_delivered_again_is_not_marked_failed(monkeypatch, settings):
    again = unfinished(complete=False)
    again["spec"]["template"] = template(REF2)
    fake = FakeKube(monkeypatch, again, [Verdict("complete")])
    rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert fake.calls == [("apply", REF2), ("state", "complete")]


def test_a_restore_is_in_progress_until_its_undo_is_waited_on(monkeypatch):
    from flows.rollout import Previous

    replaced = []

    class Apps:
        def replace_namespaced_deployment(self, name, ns, body):
            replaced.append(body)

    monkeypatch.setattr(kube, "_apis", lambda api: (None, Apps()))
    monkeypatch.setattr(kube, "read_deployment", lambda api, ns, name: json.loads(json.dumps(SERVING_V1)))
    previous = Previous(template(REF1), {DIGEST: D1, envs.ROLLOUT_STATE: envs.COMPLETE})
    kube.restore(object(), "ns", "app", previous, 2)
    assert replaced[0]["metadata"]["annotations"][envs.ROLLOUT_STATE] == envs.IN_PROGRESS


def test_a_restore_that_meets_a_changed_deployment_reads_it_again(monkeypatch):
    from kubernetes.client.exceptions import ApiException

    from flows.rollout import Previous

    reads, replaced = [], []

    class Apps:
        def replace_namespaced_deployment(self, name, ns, body):
            if len(replaced) == 0 and len(reads) == 1:
                reads.append("conflict")
                raise ApiException(status=409, reason="Conflict")
            replaced.append(body)

    def read(api, ns, name):
        reads.append("read")
        return json.loads(json.dumps(SERVING_V1))

    monkeypatch.setattr(kube, "_apis", lambda api: (None, Apps()))
    monkeypatch.setattr(kube, "read_deployment", read)
    kube.restore(object(), "ns", "app", Previous(template(REF1), {DIGEST: D1}), 2)
    assert reads == ["read", "conflict", "read"] and len(replaced) == 1


def test_a_restore_that_keeps_meeting_conflicts_gives_up(monkeypatch):
    from kubernetes.client.exceptions import ApiException

    from flows.rollout import Previous

    class Apps:
        def replace_namespaced_deployment(self, name, ns, body):
            raise ApiException(status=409, reason="Conflict")

    monkeypatch.setattr(kube, "_apis", lambda api: (None, Apps()))
    monkeypatch.setattr(kube, "read_deployment", lambda api, ns, name: json.loads(json.dumps(SERVING_V1)))
    with pytest.raises(ApiException) as caught:
        kube.restore(object(), "ns", "app", Previous(template(REF1), {DIGEST: D1}), 2)
    assert caught.value.status == 409


def test_a_complete_rollout_returns_what_serves_and_what_served(monkeypatch, settings):
    FakeKube(monkeypatch, SERVING_V1, [Verdict("complete")])
    result = rollout.roll_out_release(object(), release(), ENV, settings, poll_seconds=0)
    assert (result.digest, result.previous_digest, result.ref) == (D2, D1, REF2)
    assert result.address == "http://127.0.0.1:16150" and result.environment == "test"
    with pytest.raises(Exception):
        result.digest = D1  # frozen


# --- what the task retries ---


def test_only_transient_api_errors_are_retried():
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    assert is_transient(ApiException(status=503)) and is_transient(ApiException(status=429))
    assert is_transient(MaxRetryError(None, "https://127.0.0.1:16443"))
    assert not is_transient(ApiException(status=422)) and not is_transient(ApiException(status=404))
    assert not is_transient(RolloutError("ImagePullBackOff", "restored sha256:…"))


def test_previous_digest_property():
    assert Previous(template(REF1), {DIGEST: D1}).digest == D1
    assert Previous(template(REF1), {}).digest == D1  # from the image when the annotation is missing


def test_a_rollout_error_survives_pickling():
    # Prefect pickles a failed task's exception to hand it to the flow
    import pickle

    err = pickle.loads(pickle.dumps(RolloutError("CrashLoopBackOff", "restored sha256:…", "events")))
    assert (err.reason, err.message, err.details) == ("CrashLoopBackOff", "restored sha256:…", "events")


def test_by_default_all_new_pods_start_together_and_must_outlast_a_30s_crash():
    spec = render_manifests(release(), ENV, Settings(), "t").deployment["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": "100%"}
    assert spec["minReadySeconds"] >= 30
