"""Benchmark: seconds per stage of `deliver` for a first delivery, a model-only change and a
code-only change; bytes pushed in each; the image's size.

    .venv/bin/python bench/deliver.py [--cold]

Runs on the local platform (`aiship local up`) into an environment of its own (`bench`,
namespace aiship-bench, NodePort 16160) with an app repository of its own in the registry. The
registry already holds the base and dependency layers under other repositories, and dockerd mounts
them across repositories instead of uploading them again, so even the first delivery uploads only
the layers no repository has (bench/build.py measures a push into an empty registry). `--cold`
also empties the wheel cache and builds the first delivery's code image without dockerd's layer
cache (`AISHIP_BUILD_NOCACHE`), so that build starts from nothing but the base image; the two
changes after it build as usual.

During the model-only change a thread asks the bench environment's `/version` every 50 ms, so
the row also says when the new version first answered and when the rollout completed, both
counted from the end of the push (the `push-image` task run's end on the Prefect server), and how
much of the delivery the bake window (`minReadySeconds`) is, and how much of the time from the
flow run's start to the push was spent outside its task runs (Prefect's own bookkeeping). Prints a
table and writes bench/results/deliver.json. `--profile` runs the model-only change under
pyinstrument (the flow and its tasks run in this process's main thread) and writes its call tree to
bench/results/deliver-profile.txt, with the share of samples inside Prefect's own code printed.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path; bench/platform.py would shadow `platform`.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.settings import use_local_prefect  # noqa: E402

use_local_prefect()

BENCH_NAMESPACE = "aiship-bench"
STAGES = ("check_out", "app_tests", "resolve", "find_image", "fetch", "build", "smoke_test", "push",
          "wait_for_environment", "roll_out")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def setup(cold: bool) -> tuple[Path, Path]:
    """Environment variables for a bench environment, app repository and (when cold) caches."""
    from flows.settings import _default_environments

    envs = {n: e.model_dump() for n, e in _default_environments().items()}
    envs["bench"] = {"name": "bench", "namespace": BENCH_NAMESPACE, "replicas": 2, "node_port": 16160}
    os.environ["AISHIP_ENVIRONMENTS"] = json.dumps(envs)
    name = f"aiship-bench-{uuid.uuid4().hex[:6]}"
    os.environ["AISHIP_APP_NAME"] = name
    work = Path(tempfile.mkdtemp(prefix="aiship-bench-deliver-"))
    if cold:
        os.environ["AISHIP_CACHE_DIR"] = str(work / "cache")
    repo = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    git(repo, "checkout", "--quiet", "-B", "main", "HEAD")
    # The app is registered under the bench's own name, so its aiship.toml must say that name too.
    config = repo / "aiship.toml"
    config.write_text(config.read_text().replace('name = "aiship-app"', f'name = "{name}"', 1))
    git(repo, "-c", "user.name=bench", "-c", "user.email=bench@aiship.invalid", "commit", "-qam", "bench: the app's name")
    os.environ["AISHIP_GIT_REPOSITORY"] = str(repo)
    return work, repo


def clear_bench_apps() -> None:
    """Deletes the Deployments and Services earlier bench runs left in their namespace (they hold its NodePort)."""
    from kubernetes import client as k8s

    from flows.environments import kubernetes_client
    from flows.settings import Settings

    api_client = kubernetes_client(Settings())
    try:
        apps, core = k8s.AppsV1Api(api_client), k8s.CoreV1Api(api_client)
        for svc in core.list_namespaced_service(BENCH_NAMESPACE).items:
            core.delete_namespaced_service(svc.metadata.name, BENCH_NAMESPACE, _preload_content=False)
        for dep in apps.list_namespaced_deployment(BENCH_NAMESPACE).items:
            apps.delete_namespaced_deployment(dep.metadata.name, BENCH_NAMESPACE, propagation_policy="Background",
                                              _preload_content=False)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise
    finally:
        api_client.close()


class VersionWatch(threading.Thread):
    """Asks the bench environment's /version every 50 ms; keeps when each model version first answered."""

    def __init__(self, port: int = 16160) -> None:
        super().__init__(daemon=True)
        self.url, self.first, self.stop = f"http://127.0.0.1:{port}/version", {}, threading.Event()

    def run(self) -> None:
        import httpx

        # A connection per request, as a new client would make: a kept-alive one stays with the pod it
        # reached, and an old pod keeps answering through its preStop pause, past the rollout's end.
        with httpx.Client(timeout=2, headers={"Connection": "close"}) as http:
            while not self.stop.wait(0.05):
                try:
                    version = http.get(self.url).json()["model"]["version"]
                except Exception:  # not there yet, or a pod going away: ask again
                    continue
                self.first.setdefault(version, time.time())


def task_times(flow_run_id) -> dict[str, tuple[float, float]]:
    """(start, end) in epoch seconds of each task run of a flow run, by task name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: (r.start_time.timestamp(), r.end_time.timestamp())
            for r in runs if r.start_time and r.end_time}


def prefect_overhead(flow_run_id, until: float, times: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """(seconds of the flow run from its start to `until`, of which outside every task run): the
    time outside the tasks is Prefect's bookkeeping of the flow and its tasks (state changes, result
    persistence, task run creation) and the flow's own few lines between them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        started = client.read_flow_run(flow_run_id).start_time.timestamp()
    spans = sorted((max(a, started), min(b, until)) for a, b in times.values() if a < until)
    inside, reach = 0.0, started
    for a, b in spans:  # the union of the task runs' spans (none overlap today; counted once if they do)
        a = max(a, reach)
        if b > a:
            inside, reach = inside + b - a, b
    return until - started, until - started - inside


def prefect_share(session) -> float:
    """The share of a pyinstrument session's time spent in Prefect's code: each sample goes to the
    nearest of Prefect's or aiship's frames above it (an HTTP call Prefect's client makes is
    Prefect's; one flows/kube.py makes is aiship's)."""
    total = prefect = 0.0

    def walk(frame, owner: str) -> None:
        nonlocal total, prefect
        path = frame.file_path or ""
        if "/site-packages/prefect/" in path:
            owner = "prefect"
        elif "/flows/" in path and "site-packages" not in path:
            owner = "aiship"
        if not frame.children:
            total += frame.time
            prefect += frame.time if owner == "prefect" else 0.0
        for child in frame.children:
            walk(child, owner)

    walk(session.root_frame(), "other")
    return prefect / total if total else 0.0


def run(label: str, name: str, version: int, ref: str, watch: VersionWatch | None = None,
        profile: bool = False) -> dict:
    from flows.deliver import deliver
    from flows.settings import Settings

    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    state = deliver(name, version, ref, "bench", return_state=True)
    if profile:
        profiler.stop()
        out = ROOT / "bench" / "results" / "deliver-profile.txt"
        out.write_text(profiler.output_text(unicode=True, show_all=False))
        share = prefect_share(profiler.last_session)
    result = state.result()
    row = {"case": label, "outcome": result.outcome, "built": result.built, "layers_pushed": result.layers_pushed,
           "bytes_pushed": result.bytes_pushed, "image_bytes": result.image_bytes,
           "total_s": round(sum(result.stage_seconds.values()), 1), **{s: result.stage_seconds.get(s, 0.0) for s in STAGES}}
    print(f"{label:18s} total {row['total_s']:7.1f} s  pushed {row['layers_pushed']} layer(s), "
          f"{row['bytes_pushed'] / 2**20:8.1f} MiB  image {row['image_bytes'] / 2**20:6.1f} MiB", flush=True)
    if watch is not None:
        times = task_times(state.state_details.flow_run_id)
        pushed, rolled = times["push-image"][1], times["roll-out"][1]
        bake = Settings().rollout_min_ready_seconds
        if version not in watch.first:
            raise SystemExit(f"the watch never saw model version {version} answer at {watch.url} (it saw {sorted(watch.first)})")
        row.update(first_answer_after_push_s=round(watch.first[version] - pushed, 2),
                   rollout_complete_after_push_s=round(rolled - pushed, 2), bake_window_s=bake,
                   bake_window_share=round(bake / row["total_s"], 2))
        print(f"{'':18s} new version answered {row['first_answer_after_push_s']:.1f} s after the push; rollout "
              f"complete after {row['rollout_complete_after_push_s']:.1f} s; the {bake} s bake window is "
              f"{row['bake_window_share']:.0%} of the delivery", flush=True)
        to_push, outside = prefect_overhead(state.state_details.flow_run_id, pushed, times)
        row.update(to_push_s=round(to_push, 2), outside_tasks_to_push_s=round(outside, 2),
                   outside_tasks_share=round(outside / to_push, 3))
        print(f"{'':18s} {to_push:.1f} s from the flow run's start to the push, {outside:.2f} s of it "
              f"({outside / to_push:.0%}) outside the task runs (Prefect's bookkeeping)", flush=True)
    if profile:
        row.update(profiled_prefect_share=round(share, 3))
        print(f"{'':18s} profiled: {share:.0%} of the delivery's main-thread time in Prefect's own code "
              f"(call tree: {out.relative_to(ROOT)})", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty the wheel cache and the layer cache first")
    parser.add_argument("--profile", action="store_true", help="profile the model-only change with pyinstrument")
    args = parser.parse_args()
    work, repo = setup(args.cold)

    from flows.model_store import get_store
    from flows.settings import Settings

    # A model name the production triggers leave alone (`!aiship-tests*`), so that watch-models does
    # not deliver the bench's models to staging behind its back.
    store, name = get_store(Settings()), f"aiship-tests-bench-{uuid.uuid4().hex[:6]}"
    clear_bench_apps()
    try:
        rows = deliveries(store, name, work, repo, args.cold, args.profile)
    finally:
        clear_bench_apps()

    print(f"\n{'stage':22s}" + "".join(f"{r['case']:>20s}" for r in rows))
    for stage in STAGES:
        print(f"{stage:22s}" + "".join(f"{r[stage]:20.1f}" for r in rows))
    out = ROOT / "bench" / "results" / "deliver.json"
    out.write_text(json.dumps({"cold": args.cold, "profiled": args.profile, "rows": rows}, indent=2))
    print(f"\nwritten {out}")


def deliveries(store, name: str, work: Path, repo: Path, cold: bool, profile: bool = False) -> list[dict]:
    """A first delivery, a model-only change and a code-only change, one row of figures each."""
    from tests.fixtures.models import good_model

    v1 = store.publish(good_model(work / "v1", seed=0), name).version
    if cold:
        os.environ["AISHIP_BUILD_NOCACHE"] = "true"  # Settings are read by each run
    try:
        rows = [run("first delivery", name, v1, "main")]
    finally:
        os.environ.pop("AISHIP_BUILD_NOCACHE", None)
    v2 = store.publish(good_model(work / "v2", seed=1), name).version
    watch = VersionWatch()
    watch.start()
    try:
        rows.append(run("model-only change", name, v2, "main", watch, profile))
    finally:
        watch.stop.set()
    routes = repo / "app" / "routes.py"
    routes.write_text(routes.read_text() + "\n# bench: a code-only change\n")
    git(repo, "-c", "user.name=bench", "-c", "user.email=bench@aiship.invalid", "commit", "-qam", "bench: code-only change")
    rows.append(run("code-only change", name, v2, git(repo, "rev-parse", "HEAD")))
    return rows


if __name__ == "__main__":
    main()
