"""Screenshots of the Prefect UI as a user sees it: the deployments page and a `promote` run waiting
for approval. Headless Chromium (Debian `chromium`, installed with apt-get when missing), driven
through its DevTools protocol: the UI asks for the server's API credential, which it keeps in the
page's localStorage, so the script logs in the way the UI's own login form does.

    .venv/bin/python docs/screenshots.py [--flow-run-id ID] [--out docs/img]

Without --flow-run-id the newest `promote` run in state Paused is shown; start one from the UI
(Deployments -> promote -> Run) or with
`.venv/bin/python -c 'from prefect.deployments import run_deployment; run_deployment("promote/promote", timeout=0)'`.
Writes deployments.png and promote-paused.png; docs/ui.md links them.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from flows.settings import use_local_prefect

DOCS = Path(__file__).resolve().parent
UI = "http://127.0.0.1:4200"
WIDTH, HEIGHT = 1400, 900
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}"]


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


def credential(base: str = UI) -> str:
    """The Prefect API's `user:password`: PREFECT_API_AUTH_STRING, or the local platform's for the local UI only."""
    if base.rstrip("/") == UI:
        use_local_prefect()
    value = os.environ.get("PREFECT_API_AUTH_STRING", "")
    if not value:
        raise ScreenshotError("no Prefect API credential: set PREFECT_API_AUTH_STRING, or start the platform with `aiship local up`")
    return value


def api(path: str, body: dict | None = None, base: str = UI) -> object:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(credential(base).encode()).decode()}
    request = urllib.request.Request(f"{base}/api{path}", data=data, headers=headers)
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


class Browser:
    """One headless Chromium, driven over its DevTools websocket (one page, flat sessions)."""

    def __init__(self, binary: str, profile: str, timeout: float) -> None:
        from websockets.sync.client import connect

        self.timeout, self.ws = timeout, None
        # Chromium's chatter goes to a file: a pipe nobody reads would block it once full.
        self.log = Path(profile) / "chromium.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                         stdout=subprocess.DEVNULL, stderr=log)
        try:
            endpoint = None
            deadline = time.monotonic() + 60
            while endpoint is None and time.monotonic() < deadline and self.proc.poll() is None:
                found = re.search(r"DevTools listening on (ws://\S+)", self.log.read_text())
                endpoint = found and found.group(1)
                time.sleep(0.1)
            if endpoint is None:
                raise ScreenshotError(f"chromium did not open its DevTools endpoint: {self.log.read_text().strip()[-400:]}")
            self.ws = connect(endpoint, max_size=64 * 2**20, open_timeout=30)
            self._ids = itertools.count(1)
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, session: bool = False, **params: object) -> dict:
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv(timeout=self.timeout))
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise ScreenshotError(f"chromium refused {method}: {answer['error'].get('message')}")
                return answer.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise ScreenshotError(f"{url} did not load within {self.timeout:.0f}s; is the machine overloaded?")
            time.sleep(0.2)

    def settle(self, seconds: float = 3.0) -> None:
        """Waits until the single-page app's text stops changing for `seconds` (it fetches after load)."""
        deadline, last, since = time.monotonic() + self.timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            text = self.evaluate("document.body ? document.body.innerText : ''")
            if text != last:
                last, since = text, time.monotonic()
            elif text and time.monotonic() - since >= seconds:
                return
            time.sleep(0.25)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.proc.kill()
        self.proc.wait(timeout=30)


def screenshot(browser: Browser, url: str, out: Path) -> Path:
    """Captures `url` into `out` (PNG); fails when the UI showed its login page instead."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    browser.goto(url)
    browser.settle()
    path = browser.evaluate("location.pathname")
    if path != urllib.parse.urlsplit(url).path:
        raise ScreenshotError(f"the UI went to {path} instead of {url}: the API credential was refused or the page does not exist")
    data = browser.call("Page.captureScreenshot", session=True, format="png")["data"]
    out.write_bytes(base64.b64decode(data))
    return out


def take(flow_run_id: str | None, out_dir: Path, base: str = UI) -> list[Path]:
    """Both screenshots; returns their paths."""
    binary = chromium()
    api("/health", base=base)
    run_id = flow_run_id or paused_promote_run(base)
    with tempfile.TemporaryDirectory(prefix="aiship-chromium-") as profile:
        browser = Browser(binary, profile, timeout=180)
        try:
            # The UI's login form does the same: localStorage["prefect-password"] = btoa("user:password").
            browser.goto(f"{base}/api/health")
            browser.evaluate(f"localStorage.setItem('prefect-password', btoa({json.dumps(credential(base))}))")
            return [screenshot(browser, f"{base}/deployments", out_dir / "deployments.png"),
                    screenshot(browser, f"{base}/runs/flow-run/{run_id}", out_dir / "promote-paused.png")]
        finally:
            browser.close()


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
