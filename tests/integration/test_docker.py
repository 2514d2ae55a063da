"""The local Docker engine runs containers from the locally built base image (local/base-image.sh)."""

from __future__ import annotations

import uuid

import docker.errors
import pytest

BASE_RECIPE_LABEL = "io.aiship.base.recipe"


@pytest.fixture(scope="module")
def base_image(docker_client, settings):
    """The base image in dockerd; fails (never skips) when it has not been built."""
    try:
        return docker_client.images.get(settings.base_image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {settings.base_image} is missing; build it with `aiship local up base-image`")


def test_base_image_carries_its_recipe_hash(base_image, settings):
    recipe = (base_image.labels or {}).get(BASE_RECIPE_LABEL, "")
    assert len(recipe) == 64, f"{settings.base_image} has label {BASE_RECIPE_LABEL}={recipe!r}, expected a sha256"
    assert f"aiship/base:{recipe[:12]}" in base_image.tags


def test_container_from_base_image_runs_python(docker_client, base_image):
    marker = uuid.uuid4().hex
    output = docker_client.containers.run(
        base_image.id,
        ["python3", "-c", f"import sys; print('{marker}', '%d.%d.%d' % sys.version_info[:3])"],
        remove=True,
        network_mode="none",
    )
    token, version = output.decode().split()
    assert token == marker
    assert version.startswith("3.11."), f"the base image runs Python {version}, expected 3.11.x (bookworm)"


def test_container_output_and_exit_code_are_real(docker_client, base_image):
    """A failing command is seen as failing: the previous test could not pass on a dead engine."""
    with pytest.raises(docker.errors.ContainerError) as info:
        docker_client.containers.run(
            base_image.id, ["python3", "-c", "import sys; sys.exit(3)"], remove=True, network_mode="none"
        )
    assert info.value.exit_status == 3
