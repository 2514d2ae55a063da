"""Integration: build the app image on the real dockerd, from this repository with trained models.

Builds are expensive, so the images are built once per session by cached helpers that the smoke
and push tests import too. The app's source is /work/main itself (AISHIP_TEST_SOURCE_DIR overrides).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

import docker
import pytest

from flows.errors import ImageBuildError
from flows.image import LAYER_FILE, BuiltImage, build_app_image, layer_diff_ids, layer_steps
from flows.release import Release
from flows.model_store import LocalModelStore
from flows.settings import REPO_ROOT, Settings
from flows.source import SourceTree
from flows.wheels import prepare_wheels

TEST_REPO = "aiship-it-h6"  # its own repository in the registry, apart from real deliveries
RUN_ID = uuid.uuid4().hex[:6]
MODEL_NAME = f"it-{RUN_ID}"
FIGURES: dict[str, float] = {}


@functools.cache
def client() -> docker.DockerClient:
    try:
        c = docker.from_env(timeout=900)
        c.ping()
    except Exception as exc:
        pytest.fail(f"dockerd is not reachable ({exc}); start it with `aiship local up docker`")
    try:
        c.images.get(Settings().base_image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {Settings().base_image} missing; build it with `aiship local up base-image`")
    return c


@functools.cache
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="aiship-it-image-"))


def _git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout.strip()


@functools.cache
def main_source() -> SourceTree:
    """This repository's work tree at HEAD (uncommitted app changes included, as a developer builds)."""
    path = Path(os.environ.get("AISHIP_TEST_SOURCE_DIR", REPO_ROOT))
    if not (path / "app" / "requirements.txt").is_file():
        pytest.fail(f"{path}/app/requirements.txt is missing; the app must pin its dependencies there")
    sha = _git(REPO_ROOT, "rev-parse", "HEAD")
    committed = datetime.fromisoformat(_git(REPO_ROOT, "show", "-s", "--format=%cI", sha))
    return SourceTree(path=path, sha=sha, committed_at=committed, repo_url=str(REPO_ROOT))


@functools.cache
def code_changed_source() -> SourceTree:
    """A copy of the source with one line of app code changed, under another (fake) commit SHA."""
    src = main_source()
    dest = workdir() / "src-code-change"
    shutil.copytree(src.path / "app", dest / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy(src.path / name, dest / name)
    with (dest / "app" / "__init__.py").open("a") as f:
        f.write(f"\n# code-only change {RUN_ID}\n")
    return SourceTree(path=dest, sha="c0de" + src.sha[4:], committed_at=src.committed_at, repo_url=src.repo_url)


@functools.cache
def models() -> dict:
    """v1 and v2 of a trained model, and v3: a model file that fails the golden set its card promises."""
    from app.train import train

    store = LocalModelStore(workdir() / "store")
    fetched = {}
    for key, seed in (("v1", 0), ("v2", 1)):
        ref = store.publish(train(workdir() / f"train-{key}", seed=seed), MODEL_NAME)
        fetched[key] = store.fetch(ref, workdir() / f"fetched-{key}")
    bad = train(workdir() / "train-bad", seed=0)
    flipped = train(workdir() / "train-flipped", seed=0, flip_labels=True)
    shutil.copy(flipped / "model.skops", bad / "model.skops")  # the card (golden set) stays v1's
    fetched["bad"] = store.fetch(store.publish(bad, MODEL_NAME), workdir() / "fetched-bad")
    return fetched


@functools.cache
def wheelhouse() -> Path:
    from flows.app_config import read_app_config

    requirements = read_app_config(main_source().path).build.requirements
    return prepare_wheels([main_source().path / r for r in requirements], Settings().cache_dir).path


@functools.cache
def build(model_key: str, source: str = "main") -> BuiltImage:
    tree = main_source() if source == "main" else code_changed_source()
    fetched = models()[model_key]
    release = Release(app=TEST_REPO, git_sha=tree.sha, model=fetched.ref)
    tag = release.image_tag(Settings().registry_host)
    built = build_app_image(client(), tree.path, release, fetched.path, fetched.manifest_path, tree.committed_at,
                            tree.repo_url, wheelhouse(), tag, Settings().base_image)
    FIGURES[f"build {model_key}/{source} s"] = built.seconds
    print(f"\nbuilt {tag}: {built.seconds:.1f} s, {built.size_bytes / 1e6:.0f} MB, "
          f"{built.steps_cached} steps cached, ran {layer_steps(built.steps_run)}")
    return built


@pytest.fixture(scope="session", autouse=True)
def _untag_test_images():
    yield
    # Untag only; the untagged parents stay so the next run reuses the dependency layers.
    c = docker.from_env()
    for image in c.images.list(name=f"{Settings().registry_host}/{TEST_REPO}"):
        for tag in image.tags:
            if MODEL_NAME in tag or tag.rpartition(":")[2].startswith("code-c0de"):
                c.images.remove(tag, noprune=True)
    shutil.rmtree(workdir(), ignore_errors=True)
    if FIGURES:
        print("\nfigures:", json.dumps(FIGURES, indent=1))


def test_first_build_has_labels_user_port_healthcheck_and_model_last():
    built = build("v1")
    attrs = client().api.inspect_image(built.image_id)
    config = attrs["Config"]
    tree, model = main_source(), models()["v1"]
    assert attrs["Id"] == built.image_id and built.tag in attrs["RepoTags"]
    assert attrs["Created"].startswith(tree.committed_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    assert config["Labels"]["org.opencontainers.image.revision"] == tree.sha
    assert config["Labels"]["io.aiship.model.sha256"] == model.ref.sha256
    assert config["Labels"]["io.aiship.model.version"] == str(model.ref.version)
    assert config["User"] == "10001:10001" and "8080/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/healthz" in config["Healthcheck"]["Test"][-1]
    assert f"AISHIP_APP_GIT_SHA={tree.sha}" in config["Env"]
    assert built.tag.endswith(f":{tree.short_sha}-{MODEL_NAME}-v{model.ref.version}")
    assert layer_diff_ids(client(), built.image_id)[-1] == built.model_layer.digest
    assert layer_diff_ids(client(), built.image_id)[:-1] == layer_diff_ids(client(), built.code_tag)
    # the model's files are where the app reads them, readable by the app's user
    out = client().containers.run(built.image_id, ["sh", "-c", "cd /opt/model && sha256sum model.skops && ls"],
                                  remove=True).decode()
    assert out.split()[0] == model.ref.sha256 and "manifest.json" in out.split()


def test_model_only_change_rebuilds_only_the_model_layer():
    first, second = build("v1"), build("v2")
    before, after = layer_diff_ids(client(), first.image_id), layer_diff_ids(client(), second.image_id)
    assert len(before) == len(after) and before[:-1] == after[:-1] and before[-1] != after[-1]
    assert layer_steps(second.steps_run) == []  # dockerd reused the whole code image
    assert second.code_tag == first.code_tag
    # the same inputs: not even sent to dockerd
    assert second.build_log_tail[-1].startswith(f"{second.code_tag} is built from these inputs already"), second.build_log_tail


def test_code_only_change_leaves_the_dependency_and_model_layers_untouched():
    first, changed = build("v1"), build("v1", source="code")
    before, after = layer_diff_ids(client(), first.image_id), layer_diff_ids(client(), changed.image_id)
    # base, app user, venv: shared; app code: new; the model layer: the same bytes, the same id.
    assert before[:3] == after[:3] and before[3] != after[3] and before[-1] == after[-1]
    assert [s.split(" : ", 1)[1] for s in layer_steps(changed.steps_run)] == ["COPY app/*.py /srv/app/"]


def test_rebuilding_the_same_inputs_gives_the_same_image():
    first = build("v1")
    client().images.remove(first.image_id, force=True, noprune=True)  # gone from dockerd: the build loads it again
    tree, fetched = main_source(), models()["v1"]
    moved = workdir() / "fetched-v1-again"
    shutil.copytree(Path(fetched.path).parent, moved, ignore=shutil.ignore_patterns(LAYER_FILE))
    again = build_app_image(client(), tree.path, first.release, moved / Path(fetched.path).name,
                            moved / Path(fetched.manifest_path).name, tree.committed_at, tree.repo_url, wheelhouse(),
                            first.tag, Settings().base_image)
    assert again.model_layer.path != first.model_layer.path and again.model_layer.digest == first.model_layer.digest
    assert again.config == first.config and again.image_id == first.image_id
    assert client().api.inspect_image(first.tag)["Id"] == first.image_id


def test_failing_dockerfile_step_raises_image_build_error_naming_the_step():
    tree = main_source()
    broken = workdir() / "src-broken"
    shutil.copytree(tree.path / "app", broken / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(tree.path / ".dockerignore", broken / ".dockerignore")
    (broken / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS code\nRUN echo about to fail && exit 3\n")
    fetched = models()["v1"]
    release = Release(app=TEST_REPO, git_sha=tree.sha, model=fetched.ref)
    with pytest.raises(ImageBuildError) as info:
        build_app_image(client(), broken, release, fetched.path, fetched.manifest_path, tree.committed_at, tree.repo_url,
                        wheelhouse(), f"{Settings().registry_host}/{TEST_REPO}:broken-{RUN_ID}", Settings().base_image)
    message = str(info.value)
    assert re.search(r"failed at Step \d+/\d+ : RUN echo about to fail && exit 3", message)
    assert "returned a non-zero code: 3" in message
    assert "about to fail" in message  # the step's own output is in the error
