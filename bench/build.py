"""Figures for stages 2-4: cold build, model-only and code-only rebuilds, image size, pushes, and a
model-only change of a large model the way aiship does it (layer written outside dockerd, `docker
load`, blob upload) against the classic way (`docker build` of the Dockerfile's `model` stage +
`docker push`). Prints a table and writes bench/results/build-<time>.json.

    .venv/bin/python -m bench.build [--model-mib 200] [--rounds 3]

(run as a module: bench/platform.py would shadow the standard library's `platform` as a script)

AISHIP_BENCH_SOURCE_DIR picks the app source (default: this repository). The large models are
random bytes (they do not compress), as in ../shared/PERF-FACTS.md; medians over --rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import docker

from flows.settings import REPO_ROOT, Settings, use_local_prefect

use_local_prefect()  # the registry credentials are a Prefect block

from flows.app_config import read_app_config  # noqa: E402
from flows.image import build_app_image, context_members, layer_diff_ids, run_build  # noqa: E402
from flows.model_store import LocalModelStore  # noqa: E402
from flows.registry import load_credentials, push, push_built  # noqa: E402
from flows.release import ModelId, Release  # noqa: E402
from flows.wheels import prepare_wheels

RESULTS = REPO_ROOT / "bench" / "results"


def big_model(work: Path, mib: int) -> tuple[ModelId, Path, Path]:
    """A model-sized file of random bytes (the build never opens it) with a stand-in manifest."""
    path = work / "model.skops"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    (path.parent / "manifest.json").write_text("{}")
    return ModelId(name="big", version=mib, sha256="0" * 64), path, path.parent / "manifest.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-mib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings, client = Settings(), docker.from_env(timeout=1800)
    src = Path(os.environ.get("AISHIP_BENCH_SOURCE_DIR", REPO_ROOT))
    sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, text=True).strip()
    work = Path(tempfile.mkdtemp(prefix="aiship-bench-"))
    repo_name, figures = f"aiship-bench-{uuid.uuid4().hex[:6]}", {}
    from app.train import train

    store = LocalModelStore(work / "store")
    fetched = [store.fetch(store.publish(train(work / f"t{s}", seed=s), "bench"), work / f"f{s}") for s in (0, 1)]
    t = time.monotonic()
    wheels = prepare_wheels([src / r for r in read_app_config(src).build.requirements], settings.cache_dir)
    figures["wheels (cache hit)" if wheels.cache_hit else "wheels download"] = round(time.monotonic() - t, 2)
    now = datetime.now(timezone.utc)

    def build(tree: Path, model: tuple[ModelId, Path, Path], git_sha: str, nocache: bool = False):
        identity, model_file, manifest_file = model
        release = Release(app=repo_name, git_sha=git_sha, model=identity)
        return build_app_image(client, tree, release, model_file, manifest_file, now, str(REPO_ROOT), wheels.path,
                               release.image_tag(settings.registry_host), settings.base_image, nocache=nocache)

    v1, v2 = ((f.ref.identity(), f.path, f.manifest_path) for f in fetched)
    cold = build(src, v1, sha, nocache=True)
    figures["build cold (no cache) s"] = cold.seconds
    figures["image size MB"] = round(cold.size_bytes / 1e6, 1)
    model_only = build(src, v2, sha)
    figures["build model-only s"] = model_only.seconds
    code = work / "code"
    shutil.copytree(src / "app", code / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy(src / name, code / name)
    (code / "app" / "__init__.py").open("a").write("\n# bench code change\n")
    code_only = build(code, v2, "c0de" + sha[4:])
    figures["build code-only s"] = code_only.seconds
    assert layer_diff_ids(client, model_only.image_id)[:-1] == layer_diff_ids(client, cold.image_id)[:-1]
    assert layer_diff_ids(client, code_only.image_id)[-1] == layer_diff_ids(client, model_only.image_id)[-1]
    creds = load_credentials(settings.registry_credentials_block)
    for label, built in (("push cold", cold), ("push model-only", model_only), ("push code-only", code_only)):
        pushed = push_built(client, built, creds)
        figures[f"{label} s"] = pushed.seconds
        figures[f"{label} layers pushed/existing"] = f"{len(pushed.layers_pushed)}/{len(pushed.layers_existing)}"
        figures[f"{label} MB uploaded (layer sizes, uncompressed)"] = round(pushed.bytes_pushed / 1e6, 3)

    # A large model-only change, both ways, each round with new random bytes.
    aiship_s, classic_s, aiship_build, classic_build, parts = [], [], [], [], {}
    for n in range(args.rounds):
        big = big_model(work / f"big-{n}", args.model_mib)
        t = time.monotonic()
        built = build(src, big, sha)
        aiship_build.append(time.monotonic() - t)
        pushed = push_built(client, built, creds)
        aiship_s.append(time.monotonic() - t)
        for part, seconds in (*built.timings, ("push", pushed.seconds)):
            parts.setdefault(part, []).append(seconds)
        classic = big_model(work / f"classic-{n}", args.model_mib)
        members = [*context_members(src, wheels.path), ("model/manifest.json", classic[2]), ("model/model.skops", classic[1])]
        tag = f"classic-{n}"
        t = time.monotonic()
        run_build(client, members, f"{settings.registry_host}/{repo_name}:{tag}", {},
                  {"BASE_IMAGE": settings.base_image, "GIT_SHA": sha}, target="model")
        classic_build.append(time.monotonic() - t)
        push(client, f"{settings.registry_host}/{repo_name}", tag, creds)
        classic_s.append(time.monotonic() - t)
    mib = args.model_mib
    figures[f"{mib} MiB model-only, aiship: build s (median)"] = round(statistics.median(aiship_build), 2)
    figures[f"{mib} MiB model-only, aiship: build + push s (median)"] = round(statistics.median(aiship_s), 2)
    for part, seconds in parts.items():
        figures[f"{mib} MiB model-only, aiship: {part} s (median)"] = round(statistics.median(seconds), 2)
    figures[f"{mib} MiB model-only, classic (COPY in dockerd): build s (median)"] = round(statistics.median(classic_build), 2)
    figures[f"{mib} MiB model-only, classic: build + docker push s (median)"] = round(statistics.median(classic_s), 2)
    for image in client.images.list(name=f"{settings.registry_host}/{repo_name}"):
        for tag in image.tags:
            client.images.remove(tag, noprune=True)
    shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"build-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:60} {value}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
