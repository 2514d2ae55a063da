"""The Prefect UI as a user sees it: docs/screenshots.py captures the deployments page and a
`promote` run waiting for approval in headless Chromium; the PNGs must show something."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest

from flows.settings import REPO_ROOT
from tests.e2e.triggers_support import PrefectApi, prefect_api  # noqa: F401 - prefect_api is a fixture

pytestmark = pytest.mark.slow


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, pixels) of an 8-bit RGB or RGBA PNG, decoded with zlib (no image library in the venv)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(bytes(idat)), width * bpp
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            else:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    pixels = [bytes(row[x:x + 3]) for row in rows for x in range(0, stride, bpp)]
    return width, height, pixels


def assert_not_blank(path: Path) -> None:
    width, height, pixels = png_pixels(path)
    assert (width, height) == (1400, 900), f"{path}: {width}x{height}"
    counts = Counter(pixels)
    top_share = counts.most_common(1)[0][1] / len(pixels)
    assert len(counts) >= 100, f"{path} has only {len(counts)} distinct colours: blank or nearly so"
    assert top_share < 0.95, f"{path} is {top_share:.0%} one colour: the page did not render"


def test_screenshots_of_deployments_and_a_paused_promote_run(prefect_api: PrefectApi, tmp_path):
    from prefect.deployments import run_deployment

    run = run_deployment("promote/promote", timeout=0)
    run_id = str(run.id)
    try:
        paused = prefect_api.wait_state(run_id, {"PAUSED"}, 180)
        assert paused["state_type"] == "PAUSED", prefect_api.describe(paused)
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "docs" / "screenshots.py"), "--flow-run-id", run_id,
                               "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        for name in ("deployments.png", "promote-paused.png"):
            assert_not_blank(tmp_path / name)
    finally:
        if prefect_api.flow_run(run_id)["state_type"] == "PAUSED":
            prefect_api.resume(run_id, {"approve": False, "reviewer": "e2e-ui", "comment": "screenshot only"})
    final = prefect_api.wait_final(run_id, 180)
    assert final["state_type"] == "COMPLETED", prefect_api.describe(final)
