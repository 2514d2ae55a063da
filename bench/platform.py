"""Benchmark: seconds of `aiship local up` per part, cold (empty cache) or warm, and cache sizes.

    python bench/platform.py warm     # caches kept, nothing running: the everyday start
    python bench/platform.py cold     # an empty cache folder: Kubernetes build included

Both first stop the platform (`aiship local down`), so run them when nothing else needs it.
One `aiship local up` of all parts is timed as a whole (parts start side by side where they can);
the seconds per part are the ones it reports as each becomes ready. Prints a table and writes
bench/results/platform-<mode>.json.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path, and this file would shadow the standard
# library's `platform` module for everything imported after it.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.local_platform import PARTS  # noqa: E402

TARGETS = {"warm": 60.0, "cold": 15 * 60.0}


READY = re.compile(r"^(\S+)\s+ready in\s+([0-9.]+) s$", re.MULTILINE)


def aiship(*args: str, env: dict[str, str]) -> str:
    """Runs the CLI; returns its stderr (also echoed), where `local up` reports each part."""
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                          text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"aiship {' '.join(args)} failed with exit code {proc.returncode}")
    return proc.stderr


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
    start = time.monotonic()
    reported = aiship("local", "up", env=env)
    total = round(time.monotonic() - start, 1)
    seconds = {part: float(s) for part, s in READY.findall(reported)}
    missing = [part for part in PARTS if part not in seconds]
    if missing:
        sys.exit(f"`aiship local up` reported no time for {', '.join(missing)}")
    for part in PARTS:
        print(f"{part:12s} {seconds[part]:8.1f} s", flush=True)
    sizes = {child.name: du(child) for child in sorted(cache.iterdir())} if cache.exists() else {}
    print(f"{'total':12s} {total:8.1f} s   (wall clock of one `aiship local up`, blocks and status included;"
          f" target <= {TARGETS[args.mode]:.0f} s)")
    for name, size in sizes.items():
        print(f"cache {name:16s} {size / 2**20:9.1f} MiB")
    out = ROOT / "bench" / "results" / f"platform-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"mode": args.mode, "seconds": seconds, "total": total,
                               "target": TARGETS[args.mode], "cache_bytes": sizes}, indent=2))


if __name__ == "__main__":
    main()
