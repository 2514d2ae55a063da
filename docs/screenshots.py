"""Screenshots of the Prefect UI as a user sees it: the deployments page and a `promote` run waiting
for approval. Headless Chromium (Debian `chromium`, installed with apt-get when missing).

    .venv/bin/python docs/screenshots.py [--flow-run-id ID] [--out docs/img]

Without --flow-run-id the newest `promote` run in state Paused is shown; start one from the UI
(Deployments -> promote -> Run) or with
`.venv/bin/python -c 'from prefect.deployments import run_deployment; run_deployment("promote/promote", timeout=0)'`.
Writes deployments.png and promote-paused.png; docs/ui.md links them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
UI = "http://127.0.0.1:4200"
# --virtual-time-budget lets the single-page app fetch and render before the capture (without it: blank).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--virtual-time-budget=15000", "--window-size=1400,900"]


class ScreenshotError(Exception):
    """Raised with what went wrong and what to do next."""


def chromium() -> str:
    """The chromium binary; installs Debian's `chromium` package when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    print("chromium is missing; installing the Debian package with apt-get", file=sys.stderr)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if proc.returncode != 0 and cmd[1] == "install":
            raise ScreenshotError(f"apt-get install chromium failed: {proc.stderr.strip()[-300:]}; "
                                  "install it by hand (apt-get install -y chromium) and run this again")
    found = shutil.which("chromium")
    if not found:
        raise ScreenshotError("chromium is still not on PATH after apt-get install; check `dpkg -L chromium`")
    return found


def api(path: str, body: dict | None = None, base: str = UI) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read())
    except OSError as exc:
        raise ScreenshotError(f"the Prefect API at {base}/api does not answer ({exc}); start it with `aiship local up prefect`") from exc


def paused_promote_run(base: str = UI) -> str:
    """The id of the newest `promote` run waiting for approval."""
    deployment = api("/deployments/name/promote/promote", base=base)
    runs = api("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}},
                                     "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
                                     "sort": "START_TIME_DESC", "limit": 1}, base=base)
    if not runs:
        raise ScreenshotError("no promote run is waiting for approval; start one (see this script's docstring) and run this again")
    return runs[0]["id"]


def screenshot(binary: str, url: str, out: Path, timeout: float = 180) -> Path:
    """Captures `url` into `out` (PNG) with a throwaway profile."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="aiship-chromium-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(f"chromium did not finish {url} in {timeout:.0f}s; is the machine overloaded?") from exc
    if not out.is_file() or out.stat().st_size == 0:
        raise ScreenshotError(f"chromium wrote no screenshot of {url} (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return out


def take(flow_run_id: str | None, out_dir: Path, base: str = UI) -> list[Path]:
    """Both screenshots; returns their paths."""
    binary = chromium()
    api("/health", base=base)
    run_id = flow_run_id or paused_promote_run(base)
    return [screenshot(binary, f"{base}/deployments", out_dir / "deployments.png"),
            screenshot(binary, f"{base}/runs/flow-run/{run_id}", out_dir / "promote-paused.png")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow-run-id", help="a promote run in state Paused (default: the newest one)")
    parser.add_argument("--out", type=Path, default=DOCS / "img", help="folder for the PNGs (default: docs/img)")
    parser.add_argument("--ui", default=UI, help=f"the Prefect UI's address (default: {UI})")
    args = parser.parse_args()
    try:
        for path in take(args.flow_run_id, args.out, args.ui.rstrip("/")):
            print(path)
    except ScreenshotError as exc:
        print(f"docs/screenshots.py: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
