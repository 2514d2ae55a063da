"""Benchmark: the disk that deliveries leave behind, after N model-only changes (50 by default).

    .venv/bin/python bench/disk.py [--deliveries 50] [--every 10]

Runs on the local platform (`aiship local up`) into the bench environment of bench/deliver.py,
with an app repository of its own. Each delivery publishes a newly trained model (other bytes,
so each pushes a model layer of its own) and delivers it. The bake window is 1 s here: the bench
measures disk, not time. Every `--every` deliveries, and once more after the registry's garbage
collection (`collect-garbage` with its default of ten images per app), it measures:

- dockerd: images, containers, volumes and build cache (the engine's own `df`), and the app's images;
- the registry's storage folder, the model store, Prefect's home (leases, results) and its
  PostgreSQL data folder;
- the logs of the local parts (their rings), aiship's work folders and containers left behind.

Prints the table and the growth per delivery of each, and writes bench/results/disk.json. The
bounds it checks, and exits 1 on: the app's images in dockerd at most AISHIP_KEEP_IMAGES, no
work folder or smoke or sandbox container left, every log ring within its files and size.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path; bench/platform.py would shadow `platform`.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.settings import use_local_prefect  # noqa: E402

use_local_prefect()

from bench.deliver import clear_bench_apps, setup  # noqa: E402

MiB = 2**20


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (allocated blocks would count sparse files differently; sizes do not)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass  # removed while we walked
    return total


def measure(settings, client, app: str) -> dict:
    from flows.cleanup import SANDBOX_LABEL, SMOKE_LABEL
    from flows.ownership import folder_owner

    df = client.df()
    state = settings.state_dir
    logs = [p for p in state.rglob("*.log*") if p.is_file() and not p.is_symlink()]
    app_images = [i for i in client.images.list(name=f"{settings.registry_host}/{app}")]
    leftovers = [c.name for label in (SMOKE_LABEL, SANDBOX_LABEL)
                 for c in client.containers.list(all=True, filters={"label": label})]
    work = [p for p in Path(tempfile.gettempdir()).iterdir() if p.is_dir() and folder_owner(p) is not None]
    return {
        # LayersSize counts each layer once; the images' Size fields count a shared layer once per image.
        "docker_images": df.get("LayersSize") or 0,
        "docker_containers": sum(c.get("SizeRw", 0) or 0 for c in df.get("Containers") or []),
        "docker_volumes": sum((v.get("UsageData") or {}).get("Size", 0) or 0 for v in df.get("Volumes") or []),
        "docker_build_cache": sum(b.get("Size", 0) for b in df.get("BuildCache") or []),
        "registry": tree_bytes(state / "registry" / "data"),
        "model_store": tree_bytes(settings.model_store_path),
        "prefect_home": tree_bytes(state / "prefect" / "home"),
        "prefect_database": tree_bytes(state / "postgres" / "data"),
        "logs": sum(p.stat().st_size for p in logs),
        "largest_log": max((p.stat().st_size for p in logs), default=0),
        "work_folders": sum(tree_bytes(p) for p in work),
        "app_images": len(app_images),
        "leftover_containers": len(leftovers),
        "leftover_folders": len(work),
    }


def rotatelogs_bytes(size: str) -> int:
    """rotatelogs' size argument (local/lib.sh's AISHIP_LOG_SIZE: 20M, 512K, 1G) in bytes."""
    number, unit = size[:-1], size[-1].upper()
    return int(number) * {"K": 2**10, "M": 2**20, "G": 2**30}[unit] if unit in "KMG" else int(size)


SIZES = ("docker_images", "docker_containers", "docker_volumes", "docker_build_cache", "registry", "model_store",
         "prefect_home", "prefect_database", "logs", "work_folders")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--every", type=int, default=10, help="measure after this many deliveries")
    args = parser.parse_args()
    os.environ["AISHIP_ROLLOUT_MIN_READY_SECONDS"] = "1"
    work, _ = setup(cold=False)

    from flows.deliver import deliver
    from flows.image import docker_client
    from flows.model_store import get_store
    from flows.registry_gc import collect_garbage
    from flows.settings import Settings
    from tests.fixtures.models import good_model

    settings = Settings()
    app, client = settings.app_name, docker_client()
    # A model name the production triggers leave alone (`!aiship-tests*`).
    store, name = get_store(settings), f"aiship-tests-disk-{uuid.uuid4().hex[:6]}"
    rows, seconds = [{"after": 0, **measure(settings, client, app)}], []
    clear_bench_apps()
    try:
        for n in range(1, args.deliveries + 1):
            version = store.publish(good_model(work / f"v{n}", seed=n), name).version
            started = time.monotonic()
            result = deliver(name, version, "main", "bench")
            seconds.append(round(time.monotonic() - started, 1))
            if result.outcome != "delivered":
                raise SystemExit(f"delivery {n} was {result.outcome}: {result.reason}")
            print(f"delivery {n:3d}: {seconds[-1]:5.1f} s", flush=True)
            if n % args.every == 0 or n == args.deliveries:
                rows.append({"after": n, **measure(settings, client, app)})
        try:
            collect_garbage(apps=[app])
        except Exception as exc:  # the deliveries' figures still count; say why the last row is missing
            print(f"collect-garbage failed: {type(exc).__name__}: {exc}", flush=True)
        else:
            rows.append({"after": f"{args.deliveries} + gc", **measure(settings, client, app)})
    finally:
        clear_bench_apps()
        client.close()

    print(f"\n{'after':>10s}" + "".join(f"{k[:14]:>15s}" for k in SIZES) + f"{'app images':>11s}{'leftovers':>10s}")
    for row in rows:
        print(f"{str(row['after']):>10s}" + "".join(f"{row[k] / MiB:13.1f} M" for k in SIZES)
              + f"{row['app_images']:11d}{row['leftover_containers'] + row['leftover_folders']:10d}")
    first, last = rows[0], [r for r in rows if isinstance(r["after"], int)][-1]
    growth = {k: round((last[k] - first[k]) / args.deliveries / MiB, 3) for k in SIZES}
    print("\ngrowth per delivery (MiB): " + ", ".join(f"{k} {v:+.3f}" for k, v in growth.items()))
    limit = rotatelogs_bytes(os.environ.get("AISHIP_LOG_SIZE", "20M"))
    bounds = {
        f"app images in dockerd <= {settings.keep_images}": max(r["app_images"] for r in rows[1:]) <= settings.keep_images,
        "no leftover containers or work folders": all(r["leftover_containers"] == r["leftover_folders"] == 0 for r in rows[1:]),
        f"every log file <= {limit // MiB} MiB": max(r["largest_log"] for r in rows) <= limit,
    }
    for what, held in bounds.items():
        print(f"{'ok  ' if held else 'FAIL'} {what}")
    out = ROOT / "bench" / "results" / "disk.json"
    out.write_text(json.dumps({"deliveries": args.deliveries, "seconds": seconds, "rows": rows,
                               "growth_mib_per_delivery": growth, "bounds": bounds}, indent=2))
    print(f"\nwritten {out}")
    if not all(bounds.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
