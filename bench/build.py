"""Figures for stages 2-4: cold build, model-only and code-only rebuilds, image size, pushes, and the
build context streamed vs hard-linked. Prints a table and writes bench/results/build-<time>.json.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m bench.build [--model-mib 200]

(run as a module: bench/platform.py would shadow the standard library's `platform` as a script)

AISHIP_BENCH_SOURCE_DIR picks the app source (default: this repository).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import docker

from flows.image import ModelInputs, build_app_image, context_members, image_tag, layer_diff_ids, link_context
from flows.model_store import LocalModelStore
from flows.registry import push
from flows.settings import REPO_ROOT, Settings
from flows.wheels import prepare_wheels

RESULTS = REPO_ROOT / "bench" / "results"


def credentials(settings: Settings):
    from prefect_docker.credentials import DockerRegistryCredentials

    try:
        return DockerRegistryCredentials.load(settings.registry_credentials_block)
    except Exception:
        data = json.loads((settings.state_dir / "registry" / "credentials.json").read_text())
        return DockerRegistryCredentials(**data)


def big_model(work: Path, mib: int) -> ModelInputs:
    """A model-sized file of random bytes (the build never opens it) with a stand-in manifest."""
    path = work / f"big-{mib}" / "model.skops"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    (path.parent / "manifest.json").write_text("{}")
    return ModelInputs("big", mib, "0" * 64, path, path.parent / "manifest.json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-mib", type=int, default=200)
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
    wheels = prepare_wheels(src / "app" / "requirements.txt", settings.cache_dir)
    figures["wheels (cache hit)" if wheels.cache_hit else "wheels download"] = round(time.monotonic() - t, 2)
    now = datetime.now(timezone.utc)

    def build(tree: Path, model: ModelInputs, git_sha: str, nocache: bool = False):
        tag = image_tag(settings.registry_host, repo_name, git_sha, model.name, model.version)
        return build_app_image(client, tree, git_sha, now, str(REPO_ROOT), wheels.path, model, tag,
                               settings.base_image, nocache=nocache)

    v1, v2 = (ModelInputs.from_fetched(f) for f in fetched)
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
    creds = credentials(settings)
    for label, built in (("push cold", cold), ("push model-only", model_only)):
        repo, _, tag = built.tag.rpartition(":")
        pushed = push(client, repo, tag, creds)
        figures[f"{label} s"] = pushed.seconds
        figures[f"{label} layers pushed/existing"] = f"{len(pushed.layers_pushed)}/{len(pushed.layers_existing)}"
        figures[f"{label} MB (uncompressed layers)"] = round(pushed.bytes_pushed / 1e6, 1)
    big = big_model(work, args.model_mib)
    t = time.monotonic()
    build(src, big, sha)
    figures[f"build model-only {args.model_mib} MiB, streamed context s"] = round(time.monotonic() - t, 2)
    big2 = big_model(work / "b2", args.model_mib)
    t = time.monotonic()
    ctx = link_context(context_members(src, wheels.path, big2), work / "ctx")
    stream = client.api.build(path=str(ctx), tag=f"{settings.registry_host}/{repo_name}:linked",
                              buildargs={"BASE_IMAGE": settings.base_image, "GIT_SHA": sha}, decode=True, rm=True)
    for chunk in stream:
        if "error" in chunk:
            raise SystemExit(chunk["error"])
    figures[f"build model-only {args.model_mib} MiB, hard-linked folder + SDK tar s"] = round(time.monotonic() - t, 2)
    assert layer_diff_ids(client, model_only.image_id)[:-1] == layer_diff_ids(client, cold.image_id)[:-1]
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
