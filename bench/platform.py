"""Benchmark: seconds of `aiship local up` per part, cold (empty cache) or warm, and cache sizes.

    python bench/platform.py warm     # caches kept, nothing running: the everyday start
    python bench/platform.py cold     # an empty cache folder: Kubernetes build included

Both first stop the platform (`aiship local down`), so run them when nothing else needs it.
Prints a table and writes bench/results/platform-<mode>.json.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path, and this file would shadow the standard
# library's `platform` module for everything imported after it.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.local_platform import PARTS  # noqa: E402

TARGETS = {"warm": 60.0, "cold": 15 * 60.0}


def aiship(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, check=True)


def du(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["warm", "cold"])
    args = parser.parse_args()
    env = dict(os.environ)
    if args.mode == "cold":
        env["AISHIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="aiship-cold-cache-")
        # The base image would otherwise be found in dockerd and reused.
        subprocess.run(["docker", "image", "rm", "-f", "aiship/base:bookworm-py311"], capture_output=True, check=False)
    cache = Path(env.get("AISHIP_CACHE_DIR", "/var/cache/aiship"))
    aiship("local", "down", env=env)
    seconds: dict[str, float] = {}
    for part in PARTS:
        start = time.monotonic()
        aiship("local", "up", part, env=env)
        seconds[part] = round(time.monotonic() - start, 1)
        print(f"{part:12s} {seconds[part]:8.1f} s", flush=True)
    total = round(sum(seconds.values()), 1)
    sizes = {child.name: du(child) for child in sorted(cache.iterdir())} if cache.exists() else {}
    print(f"{'total':12s} {total:8.1f} s   (target <= {TARGETS[args.mode]:.0f} s)")
    for name, size in sizes.items():
        print(f"cache {name:16s} {size / 2**20:9.1f} MiB")
    out = ROOT / "bench" / "results" / f"platform-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"mode": args.mode, "seconds": seconds, "total": total,
                               "target": TARGETS[args.mode], "cache_bytes": sizes}, indent=2))


if __name__ == "__main__":
    main()
