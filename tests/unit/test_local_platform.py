"""`aiship local up` starts parts side by side: each only once what it needs is up, and after a
failure nothing new starts, while what was already starting is waited for."""

from __future__ import annotations

import threading
import time

import pytest

from flows.errors import PlatformError
from flows.local_platform import NEEDS, PARTS, start_parts


class Recorder:
    """A stand-in for the part scripts: records when each starts and ends."""

    def __init__(self, fail: str | None = None, seconds: dict[str, float] | None = None) -> None:
        self.fail, self.seconds = fail, seconds or {}
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, part: str) -> None:
        with self.lock:
            self.events.append(("start", part))
        time.sleep(self.seconds.get(part, 0.05))
        if part == self.fail:
            with self.lock:
                self.events.append(("fail", part))
            raise PlatformError(f"aiship local {part}: broken on purpose")
        with self.lock:
            self.events.append(("end", part))

    def index(self, kind: str, part: str) -> int:
        return self.events.index((kind, part))


def test_needs_name_only_earlier_parts():
    for part, needs in NEEDS.items():
        assert part in PARTS
        assert all(PARTS.index(need) < PARTS.index(part) for need in needs), (part, needs)


def test_each_part_starts_after_what_it_needs_and_the_rest_overlap():
    start = Recorder()
    seconds = start_parts(list(PARTS), start)
    assert set(seconds) == set(PARTS)
    for part, needs in NEEDS.items():
        for need in needs:
            assert start.index("end", need) < start.index("start", part), (need, part, start.events)
    # Parts with nothing in common start before any of them ends.
    first_end = min(i for i, (kind, _) in enumerate(start.events) if kind == "end" and start.events[i][1] != "docker")
    assert {p for kind, p in start.events[:first_end] if kind == "start"} >= {"azurite", "s3", "postgres"}


def test_a_need_left_out_of_the_parts_asked_for_does_not_hold_a_part_back():
    start = Recorder()
    assert set(start_parts(["git"], start)) == {"git"}


def test_after_a_failure_nothing_new_starts_and_the_running_parts_finish():
    # prefect fails once docker is up and kubernetes has started, and before kubernetes is ready.
    start = Recorder(fail="prefect", seconds={"prefect": 0.4, "kubernetes": 0.8})
    ready: list[str] = []
    with pytest.raises(PlatformError, match="prefect: broken on purpose"):
        start_parts(list(PARTS), start, on_ready=lambda part, _: ready.append(part))
    started = {p for kind, p in start.events if kind == "start"}
    assert "webhooks" not in started and "git" not in started
    assert {"azurite", "s3", "kubernetes"} <= set(ready)  # started beside prefect, waited for
    assert start.index("end", "kubernetes") > start.index("fail", "prefect")
