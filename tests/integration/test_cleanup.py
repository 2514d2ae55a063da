"""Clean-up on the real Docker engine: old images of an app go, a dead run's smoke containers and work folders go."""

from __future__ import annotations

import io
import os
import tarfile
import time
import uuid

from flows.cleanup import SMOKE_AFTER_SECONDS, SWEEP_AFTER_SECONDS, prune_images, sweep_leftovers
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
