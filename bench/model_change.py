"""Benchmark: a model-only change, aiship's way against the classic way, a bare `docker push` and the floor.

    .venv/bin/python -m bench.model_change [--sizes 5,100,1024] [--out bench/results]

For each model size (MiB of random bytes, which do not compress), in one run on the local
platform's dockerd and registry:

- aiship: the sample's image with a new model, to its new digest pushed (`build_app_image` with
  the code image cached: model layer written outside dockerd, `docker load`, then `push_built`);
- classic: `docker build` of the Dockerfile's `model` stage (COPY of the model in dockerd) and
  `docker push`;
- candidate, aiship without `docker load`: the same, but dockerd gets only the code image (the
  smoke test would run it with the model's bytes mounted where the layer puts them), so the time
  is the model layer and the uploads;
- bare push: `docker push` of an image of one layer holding the file (FROM scratch), nothing else;
- floor: what cannot be avoided, with the fastest clients here: hashlib's sha256 of the file, one
  copy of it with fsync, and one uncompressed blob upload to the same registry (the distribution
  API, `flows.distribution`).

Each path gets a file of its own, so that no upload finds its blob already there. Prints seconds,
bytes uploaded, image size and the ratios aiship/floor and aiship/classic; writes
model-change.json, model-change.md and model-change.png (seconds against model size) to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from flows.settings import REPO_ROOT, Settings, use_local_prefect

use_local_prefect()  # the registry credentials are a Prefect block

from flows.app_config import read_app_config  # noqa: E402
from flows.distribution import RegistryAPI  # noqa: E402
from flows.image import build_app_image, context_members, docker_client, run_build  # noqa: E402
from flows.registry import load_credentials, push, push_built  # noqa: E402
from flows.release import ModelId, Release  # noqa: E402
from flows.wheels import prepare_wheels  # noqa: E402

MiB = 2**20
PATHS = ("aiship", "aiship_no_load", "classic", "bare_push", "floor")
# What each row must hold: the test suite's small run checks the JSON against this.
FIGURES = ("mib", "aiship_s", "aiship_parts", "aiship_bytes_uploaded", "aiship_image_bytes", "aiship_no_load_s",
           "aiship_no_load_parts", "aiship_no_load_bytes_uploaded", "aiship_no_load_over_floor", "classic_s",
           "classic_bytes_uploaded", "classic_image_bytes", "bare_push_s", "bare_push_bytes_uploaded", "floor_s",
           "floor_parts", "floor_bytes_uploaded", "aiship_over_floor", "aiship_over_classic")


def random_file(path: Path, mib: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MiB))
    return path


def floor(path: Path, work: Path, repository: str, credentials) -> tuple[float, dict[str, float], int]:
    """sha256 + one copy with fsync + one blob upload: seconds, their parts, bytes uploaded."""
    parts, started = {}, time.monotonic()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    parts["sha256"] = time.monotonic() - started
    t = time.monotonic()
    copy = work / "floor-copy"
    shutil.copyfile(path, copy)
    with copy.open("rb+") as f:
        os.fsync(f.fileno())
    parts["copy"] = time.monotonic() - t
    t = time.monotonic()
    size = copy.stat().st_size
    with RegistryAPI(repository, credentials) as registry, copy.open("rb") as f:
        registry.upload_blob(f"sha256:{digest.hexdigest()}", size, f)
    parts["upload"] = time.monotonic() - t
    copy.unlink()
    return time.monotonic() - started, {k: round(v, 3) for k, v in parts.items()}, size


def one_layer_image(client, path: Path, tag: str) -> None:
    """An image of one layer holding `path` (FROM scratch), built and tagged; not timed."""
    dockerfile = path.parent / "Dockerfile.bare"
    dockerfile.write_text("FROM scratch\nCOPY blob /blob\n")
    run_build(client, [("Dockerfile", dockerfile), ("blob", path)], tag, {}, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,100,1024", help="model sizes in MiB, comma-separated")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings, client = Settings(), docker_client()
    credentials = load_credentials(settings.registry_credentials_block)
    src = REPO_ROOT
    sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=src, text=True).strip()
    work = Path(tempfile.mkdtemp(prefix="aiship-bench-model-change-"))
    app = f"aiship-bench-{uuid.uuid4().hex[:6]}"
    repository = f"{settings.registry_host}/{app}"
    wheels = prepare_wheels([src / r for r in read_app_config(src).build.requirements], settings.cache_dir)
    committed = datetime.now(timezone.utc)

    def build(model_file: Path, mib: int, name: str = "big", load: bool = True):
        manifest = model_file.parent / "manifest.json"
        manifest.write_text("{}")
        release = Release(app=app, git_sha=sha, model=ModelId(name=name, version=mib, sha256="0" * 64))
        return build_app_image(client, src, release, model_file, manifest, committed, str(src), wheels.path,
                               release.image_tag(settings.registry_host), settings.base_image, load=load)

    rows = []
    try:
        # The code image, built and pushed once: a model-only change starts from here.
        warm = build(random_file(work / "warm" / "model.skops", 1), 1, "warm")
        push_built(client, warm, credentials)
        for mib in sizes:
            row = {"mib": mib}
            model = random_file(work / f"aiship-{mib}" / "model.skops", mib)
            t = time.monotonic()
            built = build(model, mib)
            pushed = push_built(client, built, credentials)
            row.update(aiship_s=round(time.monotonic() - t, 3), aiship_bytes_uploaded=pushed.bytes_pushed,
                       aiship_image_bytes=built.size_bytes,
                       aiship_parts={**dict(built.timings), "push": pushed.seconds})
            shutil.rmtree(model.parent)

            model = random_file(work / f"no-load-{mib}" / "model.skops", mib)
            t = time.monotonic()
            built = build(model, mib, "big-no-load", load=False)
            pushed = push_built(client, built, credentials)
            row.update(aiship_no_load_s=round(time.monotonic() - t, 3), aiship_no_load_bytes_uploaded=pushed.bytes_pushed,
                       aiship_no_load_parts={**dict(built.timings), "push": pushed.seconds})
            shutil.rmtree(model.parent)

            model = random_file(work / f"classic-{mib}" / "model.skops", mib)
            (model.parent / "manifest.json").write_text("{}")
            members = [*context_members(src, wheels.path), ("model/manifest.json", model.parent / "manifest.json"),
                       ("model/model.skops", model)]
            tag = f"classic-{mib}"
            t = time.monotonic()
            run_build(client, members, f"{repository}:{tag}", {}, {"BASE_IMAGE": settings.base_image, "GIT_SHA": sha},
                      target="model")
            classic = push(client, repository, tag, credentials)
            row.update(classic_s=round(time.monotonic() - t, 3), classic_bytes_uploaded=classic.bytes_pushed,
                       classic_image_bytes=client.api.inspect_image(f"{repository}:{tag}")["Size"])
            shutil.rmtree(model.parent)

            blob = random_file(work / f"bare-{mib}" / "blob", mib)
            one_layer_image(client, blob, f"{repository}-bare:{mib}")
            t = time.monotonic()
            bare = push(client, f"{repository}-bare", str(mib), credentials)
            row.update(bare_push_s=round(time.monotonic() - t, 3), bare_push_bytes_uploaded=bare.bytes_pushed)
            shutil.rmtree(blob.parent)

            blob = random_file(work / f"floor-{mib}" / "blob", mib)
            seconds, parts, uploaded = floor(blob, work, f"{repository}-floor", credentials)
            row.update(floor_s=round(seconds, 3), floor_parts=parts, floor_bytes_uploaded=uploaded)
            shutil.rmtree(blob.parent)

            row.update(aiship_over_floor=round(row["aiship_s"] / row["floor_s"], 2),
                       aiship_no_load_over_floor=round(row["aiship_no_load_s"] / row["floor_s"], 2),
                       aiship_over_classic=round(row["aiship_s"] / row["classic_s"], 2))
            rows.append(row)
            print(f"{mib:6d} MiB  aiship {row['aiship_s']:7.2f} s  classic {row['classic_s']:7.2f} s  "
                  f"bare push {row['bare_push_s']:7.2f} s  floor {row['floor_s']:7.2f} s  "
                  f"aiship/floor {row['aiship_over_floor']:5.2f}  aiship/classic {row['aiship_over_classic']:5.2f}  "
                  f"without docker load {row['aiship_no_load_s']:7.2f} s ({row['aiship_no_load_over_floor']:5.2f}x floor)",
                  flush=True)
    finally:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(repository):
                    client.images.remove(tag, noprune=False, force=True)
        client.close()
        shutil.rmtree(work, ignore_errors=True)
    write_results(rows, args.out)


def write_results(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    measured = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                "rows": rows}
    (out / "model-change.json").write_text(json.dumps(measured, indent=2) + "\n")
    lines = ["| model | aiship s | classic s | bare `docker push` s | floor s | aiship/floor | aiship/classic "
             "| without `docker load` s (/floor) | uploaded by aiship | aiship image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mib']} MiB | {r['aiship_s']:.2f} | {r['classic_s']:.2f} | {r['bare_push_s']:.2f} "
                     f"| {r['floor_s']:.2f} | {r['aiship_over_floor']:.2f} | {r['aiship_over_classic']:.2f} "
                     f"| {r['aiship_no_load_s']:.2f} ({r['aiship_no_load_over_floor']:.2f}) "
                     f"| {r['aiship_bytes_uploaded'] / MiB:.1f} MiB | {r['aiship_image_bytes'] / 1e6:.0f} MB |")
    parts = sorted({p for r in rows for p in r["aiship_parts"]})
    lines += ["", "aiship's parts (s): " + "; ".join(
        f"{r['mib']} MiB: " + ", ".join(f"{p} {r['aiship_parts'].get(p, 0):.2f}" for p in parts) for r in rows),
        "floor's parts (s): " + "; ".join(
        f"{r['mib']} MiB: " + ", ".join(f"{p} {v:.2f}" for p, v in r["floor_parts"].items()) for r in rows)]
    (out / "model-change.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "model-change.png")
    print("\n".join(lines))
    print(f"\nwritten {out / 'model-change.json'}, model-change.md, model-change.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = [r["mib"] for r in rows]
    for key, label in (("aiship", "aiship"), ("aiship_no_load", "candidate: aiship without docker load"),
                       ("classic", "classic (COPY + docker push)"),
                       ("bare_push", "bare docker push, one layer"), ("floor", "floor (sha256 + copy + blob PUT)")):
        ax.plot(sizes, [r[f"{key}_s"] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size (MiB)")
    ax.set_ylabel("seconds to the new digest pushed")
    ax.set_title("A model-only change")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
