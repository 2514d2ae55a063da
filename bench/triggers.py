"""Seconds from an event emitted to its flow run started, and from `git push` to the new version
serving in staging (warm caches). Targets on 2 cores: event to run started, median <= 2 s and
95th percentile <= 4 s over 20 events; push to serving <= 60 s.

    .venv/bin/python bench/triggers.py [--samples 20] [--pushes 1]

Needs the whole local platform (`aiship local up`), the deployments (`aiship deploy`) and a
version serving in staging. Event samples emit `aiship.model.registered` for the version that
serves in staging, so each run ends quickly as "skipped". Push samples commit a line to a file
under app/ (so the image's code layer changes) in a clone of the local bare repository and push it. Prints a table and writes bench/results/triggers.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/triggers.py` puts bench/ first on sys.path, where bench/platform.py would shadow the
# standard library's `platform` (imported by uuid, hence by nearly everything): use the repo root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from flows.settings import REPO_ROOT, Settings, use_local_prefect  # noqa: E402

use_local_prefect()

from tests.e2e.support import get_json  # noqa: E402
from tests.e2e.triggers_support import FINAL, BareRepoClone, PrefectApi, now, parse_time  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
STAGING = Settings().environment("staging")


def first_state(api: PrefectApi, run_id: str, state_type: str):
    """When a flow run first entered `state_type` (PENDING: the worker picked it up)."""
    states = api.call("GET", f"/flow_run_states/?flow_run_id={run_id}")
    times = [parse_time(s["timestamp"]) for s in states if s["type"] == state_type]
    return min(times) if times else None


def task_seconds(api: PrefectApi, run_id: str) -> dict[str, float]:
    """Seconds per task of a flow run, by task name without its suffix."""
    out: dict[str, float] = {}
    for task in api.task_runs(run_id):
        if task["start_time"] and task["end_time"]:
            name = task["name"].rsplit("-", 1)[0]
            seconds = (parse_time(task["end_time"]) - parse_time(task["start_time"])).total_seconds()
            out[name] = round(out.get(name, 0.0) + seconds, 2)
    return out


def staging_version() -> dict:
    return get_json(f"http://127.0.0.1:{STAGING.node_port}/version")


def event_to_start(api: PrefectApi, model: tuple[str, int] | None, timeout: float = 120) -> dict:
    """Emits aiship.model.registered for `model` (default: the version serving in staging); seconds
    from the event to its deliver-model run's start."""
    from flows.events import emit_model_registered
    from flows.model_store import get_store

    if model is None:
        serving = staging_version()["model"]
        model = (serving["name"], serving["version"])
    ref = get_store(Settings()).resolve(*model)
    since = now()
    event = emit_model_registered(ref)
    if event is None:
        raise SystemExit("the event was not emitted: is PREFECT_API_URL set and the server up?")
    emitted = event.occurred
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.runs("deliver-model", since, model_name=ref.name, model_version=ref.version)
        started = [r for r in runs if r["start_time"]]
        if started:
            run = started[0]
            created = parse_time(run["created"])
            start = parse_time(run["start_time"])
            final = api.wait_final(run["id"], 300)
            pending = first_state(api, run["id"], "PENDING")
            return {"run": run["name"], "created_s": round((created - emitted).total_seconds(), 2),
                    "picked_up_s": round((pending - emitted).total_seconds(), 2) if pending else None,
                    "started_s": round((start - emitted).total_seconds(), 2), "state": final["state_name"]}
        time.sleep(0.2)
    raise SystemExit(f"no deliver-model run started within {timeout:.0f}s of the event {event.id}")


def push_to_serving(api: PrefectApi, workdir: Path, n: int, timeout: float = 900) -> dict:
    """Commits a change to the app's code layer, pushes it to the bare repository; seconds until
    /version shows the commit. The whole way runs: app tests, a build whose code layer changed, the
    smoke test, the push and the rollout."""
    clone = BareRepoClone(Settings(), workdir / f"clone-{n}")
    sha = clone.commit_line("app/bench-pushes.txt", f"bench-{n}", f"app: bench push {n}")
    since, started = now(), time.monotonic()
    clone.push()
    pushed = time.monotonic() - started
    deadline = started + timeout
    run_started = None
    while time.monotonic() < deadline:
        runs = api.runs("deliver-commit", since, sha=sha)
        if runs and run_started is None and runs[0]["start_time"]:
            run_started = round((parse_time(runs[0]["start_time"]) - since).total_seconds(), 2)
        if runs and runs[0]["state_type"] in FINAL and runs[0]["state_type"] != "COMPLETED":
            raise SystemExit(f"the delivery of {sha[:12]} failed: {api.describe(runs[0])}")
        try:
            if staging_version()["git_sha"] == sha:
                serving_s = round(time.monotonic() - started, 2)
                final = api.wait_final(runs[0]["id"], 120)
                return {"sha": sha, "push_s": round(pushed, 2), "run_started_s": run_started, "serving_s": serving_s,
                        "run_seconds": round((parse_time(final["end_time"]) - parse_time(final["start_time"])).total_seconds(), 2),
                        "task_seconds": task_seconds(api, final["id"])}
        except OSError:
            pass  # between pods: the NodePort may refuse a connection for an instant
        time.sleep(0.5)
    raise SystemExit(f"{sha[:12]} did not serve in staging within {timeout:.0f}s of the push")


def worker_query_seconds() -> float | None:
    """How often the worker polls, as local/prefect.sh sets it (PREFECT_WORKER_QUERY_SECONDS)."""
    match = re.search(r"^export PREFECT_WORKER_QUERY_SECONDS=([0-9.]+)$", (REPO_ROOT / "local" / "prefect.sh").read_text(), re.M)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description="event -> run start, and git push -> serving")
    parser.add_argument("--samples", type=int, default=20, help="events to time (default 20)")
    parser.add_argument("--pushes", type=int, default=1, help="pushes to time (default 1; each is a build)")
    parser.add_argument("--model", metavar="NAME:VERSION", help="the version to announce (default: the one serving in staging)")
    args = parser.parse_args()
    api = PrefectApi()
    if not api.worker_online():
        raise SystemExit("the worker aiship-local-worker is not ONLINE; start it with `aiship local up prefect`")
    model = (args.model.split(":")[0], int(args.model.split(":")[1])) if args.model else None
    events = []
    for i in range(args.samples):
        events.append(event_to_start(api, model))
        e = events[-1]
        print(f"event {i + 1}: run created {e['created_s']} s, picked up by the worker {e['picked_up_s']} s, "
              f"started (Running) {e['started_s']} s after the event", flush=True)
    pushes = []
    with tempfile.TemporaryDirectory(prefix="aiship-bench-push-") as work:
        for i in range(args.pushes):
            pushes.append(push_to_serving(api, Path(work), i))
            p = pushes[-1]
            print(f"push {i + 1}: serving {p['serving_s']} s after `git push` (run started {p['run_started_s']} s; "
                  f"tasks: {p['task_seconds']})", flush=True)
    median_event = round(statistics.median(e["started_s"] for e in events), 2) if events else None
    started = sorted(e["started_s"] for e in events)
    p95_event = round(started[min(len(started) - 1, int(0.95 * len(started)))], 2) if started else None
    median_push = round(statistics.median(p["serving_s"] for p in pushes), 2) if pushes else None
    picked = [e["picked_up_s"] for e in events if e["picked_up_s"] is not None]
    median_picked = round(statistics.median(picked), 2) if picked else None
    load = os.getloadavg()[0]
    result = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(load, 2)},
              "worker_query_seconds": worker_query_seconds(),
              "event_to_run_start_s": {"median": median_event, "p95": p95_event, "max": max(started, default=None),
                                       "target_median": 2, "target_p95": 4, "samples": events,
                                       "median_picked_up_by_worker": median_picked},
              "push_to_serving_s": {"median": median_push, "target": 60, "samples": pushes}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triggers.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'figure':32} {'median':>8} {'target':>8}")
    print(f"{'event -> picked up (Pending) (s)':32} {median_picked!s:>8} {'':>8}")
    print(f"{'event -> flow run started (s)':32} {median_event!s:>8} {'<= 2':>8}")
    print(f"{'  95th percentile, max (s)':32} {p95_event!s:>8} {'<= 4':>8}  max {max(started, default=None)}")
    print(f"{'git push -> new version serving':32} {median_push!s:>8} {'<= 60':>8}")
    print(f"written to {RESULTS / 'triggers.json'}")


if __name__ == "__main__":
    main()
