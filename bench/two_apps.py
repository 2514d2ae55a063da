"""Benchmark: two apps on one aiship, delivered one after the other and then at the same time.

    .venv/bin/python bench/two_apps.py

The sample (the first app) and the second app of the tests (`tests/fixtures/apps/regressor`, set
up with `aiship init` in a repository of its own and registered under a bench name) each get a
first delivery (not timed), then a model-only change one after the other, then another model-only
change of both at once. Each app holds its own environment lock, so the concurrent pair waits
for nothing but the machine. Prints the seconds and writes bench/results/two-apps.json.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path; bench/platform.py would shadow `platform`.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.settings import use_local_prefect  # noqa: E402

use_local_prefect()
AISHIP = str(ROOT / ".venv" / "bin" / "aiship")
REGRESSOR = "regressor-bench"
DELIVER = ("import sys; from flows.deliver import deliver; "
           "d = deliver(sys.argv[1], None, None, 'bench'); print('DELIVERY ' + d.model_dump_json())")


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}")
    return proc.stdout


def setup(work: Path, env: dict[str, str]) -> Path:
    """The regressor's repository, `aiship init`-ed and committed, registered under a bench name."""
    repo = work / "regressor"
    shutil.copytree(ROOT / "tests" / "fixtures" / "apps" / "regressor", repo, ignore=shutil.ignore_patterns("__pycache__"))
    sh(["python", "-m", "regressor.train", str(work / "reg-init")], repo, env)
    sh([AISHIP, "init", "--name", REGRESSOR, "--wsgi", "regressor.app:application", "--port", "9000",
        "--code-dir", "regressor", "--tests-dir", "tests", "--model", str(work / "reg-init" / "model.skops"),
        "--health-path", "/live", "--ready-path", "/ready", "--version-path", "/about", "--predict-path", "/score"],
       repo, env)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "regressor with aiship"]):
        sh(["git", *args], repo, env)
    registration = work / "registration.toml"
    registration.write_text(f'name = "{REGRESSOR}"\nrepository = "{repo}"\nsources = ["bench/regressor"]\n'
                            f'models = ["aiship-tests-bench-reg-*"]\n\n[environments.bench]\n'
                            f'namespace = "aiship-bench-regressor"\nnode_port = 16162\n')
    sh([AISHIP, "app", "register", str(registration)], ROOT, env)
    return repo


def publish(model_dir: Path, name: str, env: dict[str, str]) -> None:
    sh([AISHIP, "model", "publish", str(model_dir), "--name", name, "--no-event"], ROOT, env)


def deliver_all(models: list[str], env: dict[str, str], at_once: bool) -> tuple[float, list[dict]]:
    """Delivers each model (to the app that claims it), at once or one after the other; (wall seconds, deliveries)."""
    started = time.monotonic()
    results = []
    procs = []
    for model in models:
        proc = subprocess.Popen([sys.executable, "-c", DELIVER, model], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        if not at_once:
            results.append(finish(proc))
    if at_once:
        results = [finish(proc) for proc in procs]
    return round(time.monotonic() - started, 1), results


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(err[-3000:])
    return json.loads(out.split("DELIVERY ", 1)[1])


def clear(env: dict[str, str]) -> None:
    from kubernetes import client as k8s

    from flows.environments import kubernetes_client
    from flows.settings import Settings

    subprocess.run([AISHIP, "app", "remove", REGRESSOR], cwd=ROOT, env=env, capture_output=True, check=False)
    api_client = kubernetes_client(Settings())
    try:
        core = k8s.CoreV1Api(api_client)
        for ns in ("aiship-bench", "aiship-bench-regressor"):
            try:
                core.delete_namespace(ns)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise
    finally:
        api_client.close()


def wait_gone(namespaces: tuple[str, ...]) -> None:
    from kubernetes import client as k8s

    from flows.environments import kubernetes_client
    from flows.settings import Settings

    api_client = kubernetes_client(Settings())
    try:
        core = k8s.CoreV1Api(api_client)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and {n.metadata.name for n in core.list_namespace().items} & set(namespaces):
            time.sleep(2)
    finally:
        api_client.close()


def main() -> None:
    from flows.settings import _default_environments
    from tests.fixtures.models import good_model

    envs = {n: e.model_dump() for n, e in _default_environments().items()}
    envs["bench"] = {"name": "bench", "namespace": "aiship-bench", "node_port": 16160}
    work = Path(tempfile.mkdtemp(prefix="aiship-bench-two-apps-"))
    env = {**os.environ, "AISHIP_ENVIRONMENTS": json.dumps(envs), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@aiship.invalid", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@aiship.invalid", "PYTHONPATH": str(ROOT)}
    tag = uuid.uuid4().hex[:6]
    sample, regressor = f"aiship-tests-bench-two-{tag}", f"aiship-tests-bench-reg-{tag}"
    clear(env)
    wait_gone(("aiship-bench", "aiship-bench-regressor"))
    rounds = {}
    try:
        repo = setup(work, env)
        for version, label, at_once in ((1, "first deliveries (not compared)", False),
                                        (2, "model-only changes, one after the other", False),
                                        (3, "model-only changes, at once", True)):
            publish(good_model(work / f"sample-v{version}", seed=version), sample, env)
            sh(["python", "-m", "regressor.train", f"{work}/reg-v{version}", str(float(version))], repo, env)
            publish(work / f"reg-v{version}", regressor, env)
            wall, results = deliver_all([sample, regressor], env, at_once)
            rounds[label] = {"wall_s": wall, "deliveries": [
                {"app": r["release"]["app"], "outcome": r["outcome"], "total_s": round(sum(r["stage_seconds"].values()), 1),
                 **r["stage_seconds"]} for r in results]}
            print(f"{label:42s} {wall:6.1f} s  " + ", ".join(
                f"{r['release']['app']} {round(sum(r['stage_seconds'].values()), 1)} s "
                f"(waited {r['stage_seconds'].get('wait_for_environment', 0)} s for its lock)" for r in results), flush=True)
    finally:
        clear(env)
        shutil.rmtree(work, ignore_errors=True)
    one_by_one = rounds["model-only changes, one after the other"]["wall_s"]
    together = rounds["model-only changes, at once"]["wall_s"]
    summary = {"one_after_the_other_s": one_by_one, "at_once_s": together, "speed_up": round(one_by_one / together, 2),
               "rounds": rounds}
    print(f"\ntwo model-only changes: {one_by_one} s one after the other, {together} s at once ({summary['speed_up']}x)")
    out = ROOT / "bench" / "results" / "two-apps.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
