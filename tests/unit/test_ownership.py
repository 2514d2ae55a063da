"""Which run owns a work folder: read from its name, and the sweep's rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import ownership
from flows.cleanup import is_leftover

RUN = "0b6c1f2e-7d4a-4c8e-9a51-3f2d6e8b9c10"


def test_a_work_folder_made_in_a_run_carries_its_id(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "current_run", lambda: RUN)
    folder = ownership.work_folder("deliver", tmp_path)
    assert folder.name.startswith(f"aiship-deliver-{RUN}.") and ownership.folder_owner(folder) == RUN
    assert ownership.container_labels() == {ownership.OWNER_LABEL: RUN}


def test_outside_a_run_a_folder_has_no_owner_and_a_foreign_one_is_not_aiships(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "current_run", lambda: "")
    assert ownership.folder_owner(ownership.work_folder("src", tmp_path)) == ""
    assert ownership.container_labels() == {}
    assert ownership.folder_owner(Path("aiship-srcx-1")) is None and ownership.folder_owner(Path("pytest-of-me")) is None
    with pytest.raises(ValueError, match="unknown work folder kind"):
        ownership.work_folder("../etc")


@pytest.mark.parametrize("owner, age, finished, gone", [
    (RUN, 5, {RUN}, True),        # its run is over: gone, however young
    (RUN, 5, set(), False),       # its run still runs
    (RUN, 99, set(), True),       # older than any run lasts: gone whatever the server says
    ("", 5, {RUN}, False),        # no owner: age alone
    ("", 99, set(), True),
])
def test_the_sweep_removes_what_a_finished_run_left_and_what_is_old(owner, age, finished, gone):
    assert is_leftover(owner, age, 60, finished) is gone


def test_a_sweep_whose_run_states_are_unknown_goes_by_age_and_says_so(tmp_path):
    import os
    import time

    from flows.cleanup import SWEEP_AFTER_SECONDS, sweep_leftovers

    class NoContainers:
        class containers:
            @staticmethod
            def list(**kwargs):
                return []

    young, old = tmp_path / f"aiship-deliver-{RUN}.a", tmp_path / "aiship-src-b"
    for folder in (young, old):
        folder.mkdir()
    long_ago = time.time() - SWEEP_AFTER_SECONDS - 60
    os.utime(old, (long_ago, long_ago))

    def server_down(ids):
        raise ConnectionRefusedError("127.0.0.1:4200")

    cleaned = sweep_leftovers(NoContainers(), tmp=tmp_path, finished=server_down)
    assert cleaned.folders == [str(old)] and young.exists()
    assert any("by age only" in f for f in cleaned.failed)
