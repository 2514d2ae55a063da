"""A disk nearly full while a delivery writes the model: one clear error naming the disk, nothing
half-written left behind, nothing pushed.

The work folder is a 1 MiB tmpfs (mounted by the test, as root), filled to a few KiB of what the
step needs: once so the download itself runs out, once so the download fits and the model layer
written beside it does not.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import docker.errors
import pytest

from flows.app_config import read_app_config
from flows.deliver import StageClock, build_tested_image
from flows.errors import PlatformError
from flows.model_store import get_store
from flows.registry import find_existing, load_credentials
from flows.release import Release
from flows.settings import Settings
from tests.fixtures.models import good_model
from tests.integration.test_image_build import main_source


@pytest.fixture
def small_disk(tmp_path) -> Path:
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert proc.returncode == 0, f"cannot mount a tmpfs (the tests run as root): {proc.stderr}"
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(mount: Path, leave: int) -> None:
    """Leaves `leave` bytes free on `mount`."""
    with (mount / "filler").open("wb") as f:
        f.write(b"\0" * (shutil.disk_usage(mount).free - leave))
    assert shutil.disk_usage(mount).free <= leave + 4096


@pytest.fixture
def local_settings(tmp_path) -> Settings:
    return Settings(model_store="local", model_store_path=tmp_path / "store")


@pytest.fixture
def published(local_settings, tmp_path):
    store = get_store(local_settings)
    return store.publish(good_model(tmp_path / "trained"), f"aiship-tests-disk-{uuid.uuid4().hex[:8]}", publisher="reliability")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != "filler")


def test_a_download_that_fills_the_disk_names_it_and_leaves_nothing(local_settings, published, small_disk):
    fill(small_disk, leave=8192)  # the model is about 24 KiB
    with pytest.raises(PlatformError, match=rf"no space left on the disk holding {small_disk}/model \(0 MiB free of 1 MiB\) "
                                            "while downloading .*; free space there"):
        get_store(local_settings).fetch(published, small_disk / "model")
    assert leftovers(small_disk) == []


def test_a_model_layer_that_fills_the_disk_stops_the_delivery_before_anything_is_pushed(
        local_settings, published, small_disk, docker_client):
    source = main_source()
    config = read_app_config(source.path)
    release = Release(app=config.name, git_sha=source.sha, model=published, serve=config.serve)
    # Room for the download (its file, manifest and folder take about 2x the model's 24 KiB on a
    # tmpfs), not for the layer of the same size beside it.
    fill(small_disk, leave=2 * published.size + 16384)
    clock = StageClock()
    with pytest.raises(PlatformError, match=rf"no space left on the disk holding {small_disk}/model .* while writing the model layer"):
        build_tested_image(release, source, config, published, local_settings, small_disk, clock)
    assert "fetch" in clock.seconds and "push" not in clock.seconds and "smoke_test" not in clock.seconds
    assert not [name for name in leftovers(small_disk) if name.endswith((".partial", ".part"))]
    tag = release.image_tag(local_settings.registry_host)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    assert find_existing(release.repository(local_settings.registry_host), release.version, release,
                         load_credentials(local_settings.registry_credentials_block)) is None
