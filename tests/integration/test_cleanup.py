"""Clean-up on the real Docker engine: old images of an app go, a dead run's smoke containers and work folders go."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from flows.cleanup import SMOKE_AFTER_SECONDS, SWEEP_AFTER_SECONDS, finished_runs, prune_images, sweep_leftovers
from flows.ownership import OWNER_LABEL
from flows.sandbox import SANDBOX_LABEL
from flows.smoke_test import SMOKE_LABEL


def tiny_image(docker_client, settings, tag: str, mark: str) -> str:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = f"FROM {settings.base_image}\nLABEL io.aiship.test.mark={mark}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return image.id


def test_only_the_newest_images_of_an_app_are_kept(docker_client, settings):
    repo = f"{settings.registry_host}/aiship-tests-prune-{uuid.uuid4().hex[:8]}"
    ids = []
    for n in range(4):
        ids.append(tiny_image(docker_client, settings, f"{repo}:v{n}", f"{repo}-{n}"))
        time.sleep(1.1)  # Created has one-second steps in what sorting sees
    try:
        cleaned = prune_images(docker_client, [repo], keep=2)
        left = sorted(t for i in docker_client.images.list(name=repo) for t in i.tags)
    finally:
        for image in docker_client.images.list(name=repo):
            docker_client.images.remove(image.id, force=True)
    assert left == [f"{repo}:v2", f"{repo}:v3"]
    assert sorted(cleaned.images) == [f"{repo}:v0", f"{repo}:v1"] and cleaned.failed == []


def test_an_image_docker_load_made_counts_as_tagged_when_it_was_loaded(docker_client):
    """The clean-up keeps the images tagged last; `docker load` alone would leave that time unset."""
    from flows.cleanup import _tagged_at
    from flows.image import load_image
    from tests.integration.test_image_build import build

    built = build("v1")
    docker_client.images.remove(built.tag, force=True)  # so that it is loaded again, not only tagged
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    load_image(docker_client, built.config, built.tag, built.model_layer)
    image = docker_client.images.get(built.tag)
    assert image.id == built.image_id and _tagged_at(image) >= started, image.attrs.get("Metadata")


def test_a_dead_runs_smoke_container_and_work_folders_are_swept_and_a_live_runs_are_not(docker_client, settings, tmp_path):
    container = docker_client.containers.create(settings.base_image, ["sleep", "600"], labels={SMOKE_LABEL: "1"},
                                                name=f"aiship-smoke-tests-{uuid.uuid4().hex[:8]}")
    old, young, other = tmp_path / "aiship-src-old", tmp_path / "aiship-deliver-young", tmp_path / "not-aiship"
    for folder in (old, young, other):
        folder.mkdir()
    long_ago = time.time() - SWEEP_AFTER_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    try:
        now = sweep_leftovers(docker_client, tmp=tmp_path)
        assert container.name not in now.containers and now.folders == [str(old)]
        assert not old.exists() and young.exists() and other.exists()
        later = sweep_leftovers(docker_client, now=time.time() + SMOKE_AFTER_SECONDS + 60, tmp=tmp_path)
        assert container.name in later.containers
        assert container.name not in [c.name for c in docker_client.containers.list(all=True)]
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass


@pytest.fixture
def runs():
    """Two flow runs on the real server: one over (Crashed, as a killed worker's run ends), one still Running."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    @flow(name="aiship-tests-owner")
    def owner() -> None:
        pass

    with get_client(sync_client=True) as client:
        made = {"over": client.create_flow_run(owner, state=Crashed()), "live": client.create_flow_run(owner, state=Running())}
        yield {k: str(v.id) for k, v in made.items()}
        for run in made.values():
            client.delete_flow_run(run.id)


def test_at_worker_start_a_crashed_runs_leftovers_go_at_once_and_a_running_runs_stay(docker_client, settings, tmp_path, runs):
    assert finished_runs(set(runs.values()), final_for=0) == {runs["over"]}
    assert finished_runs(set(runs.values())) == set()  # over for less than FINAL_FOR_SECONDS: maybe still working
    made = []
    for kind, label in (("over", SMOKE_LABEL), ("live", SANDBOX_LABEL)):
        made.append(docker_client.containers.create(settings.base_image, ["sleep", "600"],
                                                    labels={label: "1", OWNER_LABEL: runs[kind]},
                                                    name=f"aiship-smoke-tests-{kind}-{uuid.uuid4().hex[:8]}"))
    over = tmp_path / f"aiship-deliver-{runs['over']}.x1"
    live = tmp_path / f"aiship-report-{runs['live']}.x2"
    for folder in (over, live):
        folder.mkdir()
    try:
        # The command local/prefect.sh runs before it starts the worker, with this test's TMPDIR.
        aiship = Path(sys.executable).with_name("aiship")
        proc = subprocess.run([str(aiship), "sweep", "--final-for", "0"], env={**os.environ, "TMPDIR": str(tmp_path)},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # (containers: this one, and any other run's that is over on this engine)
        assert re.search(r"swept [1-9]\d* containers and 1 work folders", proc.stdout), proc.stdout + proc.stderr
        names = [c.name for c in docker_client.containers.list(all=True)]
        assert made[0].name not in names and made[1].name in names  # both young: only the owner's state told
        assert not over.exists() and live.exists()
    finally:
        for container in made:
            try:
                container.remove(force=True)
            except Exception:
                pass
