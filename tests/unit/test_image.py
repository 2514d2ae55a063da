"""Unit tests of flows.image and flows.wheels: tag, labels, build context, build-stream parsing."""

from __future__ import annotations

import io
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flows import image, wheels
from flows.errors import ImageBuildError
from flows.oci import ModelLayer
from flows.release import ModelId, Release

SHA = "0123456789abcdef0123456789abcdef01234567"
RELEASE = Release(app="aiship-app", git_sha=SHA, model=ModelId(name="iris", version=7, sha256="ab" * 32))


def model_files(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "store" / "model.skops"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"PK model bytes")
    manifest = model.parent / "manifest.json"
    manifest.write_text('{"name": "iris"}')
    return model, manifest


def test_labels_carry_sha_commit_time_in_utc_and_model():
    committed = datetime(2024, 5, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    labels = image.image_labels(RELEASE, committed, "https://example.com/app.git")
    assert labels == {
        "org.opencontainers.image.revision": SHA,
        "org.opencontainers.image.created": "2024-05-01T12:00:00Z",
        "org.opencontainers.image.source": "https://example.com/app.git",
        "org.opencontainers.image.version": "0123456789ab-iris-v7",
        "io.aiship.model.name": "iris",
        "io.aiship.model.version": "7",
        "io.aiship.model.sha256": "ab" * 32,
    }


def test_labels_are_the_same_for_the_same_inputs():
    committed = datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert image.image_labels(RELEASE, committed, "u") == image.image_labels(RELEASE.model_copy(), committed, "u")


def test_naive_commit_time_is_refused():
    with pytest.raises(ImageBuildError, match="no timezone"):
        image.image_labels(RELEASE, datetime(2024, 5, 1), "u")


def test_credentials_in_the_repository_address_never_reach_the_labels():
    labels = image.image_labels(RELEASE, datetime(2024, 5, 1, tzinfo=timezone.utc), "https://ci:tok@dev.azure.com/o/_git/r")
    assert labels["org.opencontainers.image.source"] == "https://dev.azure.com/o/_git/r"


def source_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app" / "__pycache__").mkdir(parents=True)
    (src / "app" / "tests").mkdir()
    (src / ".git").mkdir()
    (src / "Dockerfile").write_text("FROM scratch AS code\n")
    (src / "app" / "__init__.py").write_text("")
    (src / "app" / "__pycache__" / "x.pyc").write_bytes(b"x")
    (src / "app" / "tests" / "test_x.py").write_text("")
    (src / ".git" / "HEAD").write_text("ref")
    (src / "README.md").write_text("docs")
    (src / ".dockerignore").write_text((Path(__file__).parents[2] / ".dockerignore").read_text())
    return src


def wheelhouse(tmp_path: Path) -> Path:
    w = tmp_path / "wheels"
    w.mkdir()
    (w / "flask-3.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (w / "requirements.txt").write_text("flask==3.1.0\n")
    (w / ".complete").write_text("k")
    return w


def test_context_is_dockerignore_filtered_source_plus_wheels_without_the_model(tmp_path):
    src = source_tree(tmp_path)
    (src / "model").mkdir()
    (src / "model" / "model.skops").write_bytes(b"a model left in the work tree")
    members = dict(image.context_members(src, wheelhouse(tmp_path)))
    # The app's tests are in the context for the test stage; the code stage copies app/*.py only.
    assert sorted(members) == [
        ".dockerignore", "Dockerfile", "app/__init__.py", "app/tests/test_x.py",
        "wheels/flask-3.1.0-py3-none-any.whl", "wheels/requirements.txt",
    ]


def test_context_whose_dockerfile_has_no_code_stage_is_refused(tmp_path):
    src = source_tree(tmp_path)
    (src / "Dockerfile").write_text("FROM scratch\nCOPY model/ /opt/model/\n")
    with pytest.raises(ImageBuildError, match="no `FROM … AS code` stage"):
        image.context_members(src, wheelhouse(tmp_path))


@pytest.mark.parametrize("line, found", [
    ("FROM ${BASE_IMAGE} AS code", True),
    ("from --platform=linux/amd64 base:1 as CODE", True),
    ("  FROM base AS code  ", True),
    ("FROM base AS codec", False),
    ("FROM code AS model", False),
    ("# FROM base AS code", False),
])
def test_code_stage_is_found_by_its_from_line(line, found):
    assert image.has_stage(f"ARG X\n{line}\nRUN true\n", "code") is found


def test_code_tag_names_the_app_repository_and_sha12():
    assert image.code_tag("127.0.0.1:5000/aiship-app:0123456789ab-iris-v7", SHA) == "127.0.0.1:5000/aiship-app:code-0123456789ab"
    assert image.code_tag("acr.example.io/team/app:x", SHA) == "acr.example.io/team/app:code-0123456789ab"


def test_context_without_dockerfile_is_refused(tmp_path):
    src = source_tree(tmp_path)
    (src / "Dockerfile").unlink()
    with pytest.raises(ImageBuildError, match="no Dockerfile"):
        image.context_members(src, wheelhouse(tmp_path))


def test_written_context_is_a_tar_of_the_members_with_fixed_owner_and_time(tmp_path):
    members = image.context_members(source_tree(tmp_path), wheelhouse(tmp_path))
    out = io.BytesIO()
    image.write_context(members, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == [name for name, _ in members]
        assert {(i.uid, i.gid, i.mtime) for i in infos} == {(0, 0, 0)}
        assert tar.extractfile("wheels/flask-3.1.0-py3-none-any.whl").read() == b"wheel"


def test_streamed_context_equals_written_context(tmp_path):
    members = image.context_members(source_tree(tmp_path), wheelhouse(tmp_path))
    expected = io.BytesIO()
    image.write_context(members, expected)
    reader, thread, errors = image.stream_tar(lambda out: image.write_context(members, out))
    data = reader.read()
    thread.join()
    assert not errors and data == expected.getvalue()


SUCCESS_STREAM = [
    {"stream": "Step 1/3 : FROM aiship/base:bookworm-py311"},
    {"stream": "\n"},
    {"stream": " ---> 1a2b3c4d5e6f\n"},
    {"stream": "Step 2/3 : COPY app/ /srv/app/"},
    {"stream": "\n"},
    {"stream": " ---> Using cache\n"},
    {"stream": " ---> 2b3c4d5e6f70\n"},
    {"stream": "Step 3/3 : COPY model/ /opt/model/"},
    {"stream": "\n"},
    {"stream": " ---> 3c4d5e6f7081\n"},
    {"aux": {"ID": "sha256:" + "c" * 64}},
    {"stream": "Successfully built 3c4d5e6f7081\n"},
]


def test_build_stream_counts_steps_cache_hits_and_takes_the_image_id():
    progress = image.BuildProgress()
    lines = [progress.feed(c) for c in SUCCESS_STREAM]
    assert len(progress.steps) == 3 and progress.cached == 1
    assert progress.run_steps == ["Step 1/3 : FROM aiship/base:bookworm-py311", "Step 3/3 : COPY model/ /opt/model/"]
    assert image.layer_steps(progress.run_steps) == ["Step 3/3 : COPY model/ /opt/model/"]
    assert progress.image_id == "sha256:" + "c" * 64
    assert "Step 2/3 : COPY app/ /srv/app/" in lines and not progress.error


def test_build_stream_error_names_the_failing_step_and_the_daemon_message():
    progress = image.BuildProgress()
    for chunk in SUCCESS_STREAM[:4] + [
        {"stream": "\n"},
        {"errorDetail": {"message": "COPY failed: file not found in build context: stat app/: file does not exist"},
         "error": "COPY failed: file not found"},
    ]:
        progress.feed(chunk)
    message = image._failure_message("r/a:t", progress, "aiship/base:bookworm-py311")
    assert "failed at Step 2/3 : COPY app/ /srv/app/" in message
    assert "stat app/: file does not exist" in message


def test_missing_base_image_message_says_how_to_build_it():
    progress = image.BuildProgress()
    progress.feed({"stream": "Step 1/3 : FROM aiship/base:bookworm-py311"})
    progress.feed({"error": "pull access denied for aiship/base, repository does not exist"})
    assert "aiship local up base-image" in image._failure_message("t", progress, "aiship/base:bookworm-py311")


def test_requirements_key_changes_with_any_of_the_requirement_files(tmp_path):
    req, test_req = tmp_path / "requirements.txt", tmp_path / "requirements-test.txt"
    req.write_text("flask==3.1.0\n")
    test_req.write_text("pytest==9.2.0\n")
    first = wheels.requirements_key([req, test_req])
    test_req.write_text("pytest==9.2.1\n")
    assert wheels.requirements_key([req, test_req]) != first and len(first) == 16
    assert wheels.requirements_key([req]) != wheels.requirements_key([req, test_req])


def test_download_command_targets_the_image_python_only_binary(tmp_path):
    cmd = wheels.download_command([tmp_path / "r.txt", tmp_path / "t.txt"], tmp_path / "out", python="py")
    assert cmd[:3] == ["py", "-m", "pip"] and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and "manylinux2014_x86_64" in cmd
    assert [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--requirement"] == [str(tmp_path / "r.txt"), str(tmp_path / "t.txt")]


def test_prepare_wheels_reuses_a_complete_cache_entry(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("flask==3.1.0\n")
    cached = tmp_path / "cache" / "wheels" / wheels.requirements_key([req])
    cached.mkdir(parents=True)
    (cached / wheels.COMPLETE_MARKER).write_text("x")
    house = wheels.prepare_wheels([req], tmp_path / "cache")
    assert house.cache_hit and house.path == cached


def test_prepare_wheels_without_requirements_fails_clearly(tmp_path):
    with pytest.raises(ImageBuildError, match=r"requirements.txt not found \(or a link\); commit it or fix \[build\] requirements"):
        wheels.prepare_wheels([tmp_path / "app" / "requirements.txt"], tmp_path)


@pytest.mark.parametrize("line", ["-r /etc/shadow", "--index-url https://evil.example/simple", "-e git+https://x/y",
                                  "--extra-index-url=http://127.0.0.1:4200"])
def test_prepare_wheels_refuses_option_lines_and_links(tmp_path, line):
    req = tmp_path / "requirements.txt"
    req.write_text(f"flask==3.1.0\n{line}\n")
    with pytest.raises(ImageBuildError, match=r"requirements.txt line 2: .* is not allowed"):
        wheels.prepare_wheels([req], tmp_path / "cache")
    req.unlink()
    req.symlink_to("/etc/hostname")
    with pytest.raises(ImageBuildError, match="or a link"):
        wheels.prepare_wheels([req], tmp_path / "cache")


def test_prepare_wheels_refuses_two_files_of_one_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "requirements.txt").write_text("flask==3.1.0\n")
    with pytest.raises(ImageBuildError, match="share a file name"):
        wheels.prepare_wheels([tmp_path / "a" / "requirements.txt", tmp_path / "b" / "requirements.txt"], tmp_path)


def test_build_summary_names_the_image_and_the_layers_rebuilt():
    built = image.BuiltImage(
        image_id="sha256:" + "c" * 64, tag="127.0.0.1:5000/aiship-app:abc-m-v2", labels={},
        code_tag="127.0.0.1:5000/aiship-app:code-abc", code_image_id="sha256:" + "f" * 64, config=b"{}",
        model_layer=ModelLayer(Path("/w/layer.tar"), "sha256:" + "e" * 64, 2_500_000), release=RELEASE,
        size_bytes=427_600_000, seconds=2.5,
        steps_cached=9, steps_run=("Step 11/12 : COPY app/ /srv/app/", "Step 12/12 : ENV AISHIP_APP_GIT_SHA=a"),
        timings=(("code image", 1.5), ("model layer", 0.3), ("docker load", 0.7)),
    )
    lines = list(image.iter_summary(built))
    assert lines[:4] == ["### Image build `127.0.0.1:5000/aiship-app:abc-m-v2`", "", "| | |", "|---|---|"]
    assert "| code layers rebuilt | `COPY app/ /srv/app/` |" in lines
    assert f"| git SHA | `{SHA}` |" in lines and "| model | iris v7 (`abababababab…`) |" in lines
    assert "| seconds | 2.5 (code image 1.5, model layer 0.3, docker load 0.7) |" in lines
    assert f"| model layer | `sha256:{'e' * 64}`, 2.5 MB, uncompressed |" in lines
    assert "| size | 427.6 MB |" in lines and "| code image steps reused (cache) / run | 9 / 2 |" in lines


class RefusingDockerd:
    """A dockerd whose `docker load` answers with a message instead of an image."""

    def __init__(self) -> None:
        self.api, self.loaded = self, b""

    def inspect_image(self, ref: str) -> dict:
        import docker.errors

        raise docker.errors.ImageNotFound(f"No such image: {ref}")

    def load_image(self, data):
        self.loaded = data.read()
        yield {"message": "layer does not exist: sha256:abc"}

    def tag(self, image_id: str, repo: str, name: str, force: bool = False) -> None:
        self.inspect_image(image_id)  # dockerd answers a tag of what it does not hold with 404 "No such image"


def test_load_that_gives_no_image_raises_with_what_dockerd_said(tmp_path):
    from flows import oci

    model, manifest = model_files(tmp_path)
    layer = oci.write_model_layer(model, manifest, model.parent / image.LAYER_FILE)
    code_image = {"Architecture": "amd64", "Os": "linux", "Config": {}, "RootFS": {"Layers": ["sha256:" + "a" * 64]}}
    config = oci.image_config(code_image, {}, "2024-05-01T12:00:00Z", layer)
    dockerd = RefusingDockerd()
    with pytest.raises(ImageBuildError, match="did not give the image; dockerd said: layer does not exist"):
        image.load_image(dockerd, config, "r/app:t", layer)
    with tarfile.open(fileobj=io.BytesIO(dockerd.loaded)) as tar:  # the whole archive reached dockerd
        assert f"{layer.digest[7:]}/layer.tar" in tar.getnames()


def test_credentials_never_reach_the_source_label():
    assert image.without_credentials("https://ci:s3cret-token@dev.azure.com/org/p/_git/r") == "https://dev.azure.com/org/p/_git/r"
    assert image.without_credentials("/srv/git/app.git") == "/srv/git/app.git"
    assert image.without_credentials("git@github.com:org/app.git") == "git@github.com:org/app.git"  # no secret in scp form


def test_the_clones_git_folder_is_never_in_the_context(tmp_path):
    src = source_tree(tmp_path)
    (src / ".dockerignore").write_text("")  # an app that ignores nothing
    (src / ".git" / "config").write_text("[remote]\n url = https://user:token@host/x\n")
    assert not [name for name, _ in image.context_members(src, wheelhouse(tmp_path)) if name.startswith(".git")]


def test_the_code_images_inputs_change_with_a_files_bytes_or_mode_and_with_the_base_but_not_with_the_wheels_bytes(tmp_path):
    src, wheels = tmp_path / "src", tmp_path / "wheels-0123456789abcdef"
    src.mkdir(), wheels.mkdir()
    (src / "Dockerfile").write_text("FROM base AS code\n")
    (src / "app.py").write_text("print(1)\n")
    (wheels / "a.whl").write_bytes(b"wheel")
    members = [("Dockerfile", src / "Dockerfile"), ("app.py", src / "app.py"), ("wheels/a.whl", wheels / "a.whl")]
    args = {"BASE_IMAGE": "base", "GIT_SHA": "a" * 40}

    def key(base: str = "sha256:b1", wheels_dir=wheels, buildargs=args) -> str:
        return image.code_inputs(members, wheels_dir, base, buildargs, "Dockerfile", "code")

    first = key()
    (wheels / "a.whl").write_bytes(b"other")  # the folder is named by its requirements; never changed once complete
    assert key() == first
    assert key(base="sha256:b2") != first
    assert key(wheels_dir=tmp_path / "wheels-fedcba9876543210") != first
    assert key(buildargs={**args, "GIT_SHA": "b" * 40}) != first
    (src / "app.py").chmod(0o755)
    assert key() != first
    (src / "app.py").chmod(0o644)
    assert key() == first
    (src / "app.py").write_text("print(2)\n")  # an uncommitted change under the same SHA is another image
    assert key() != first


def test_a_code_image_is_known_only_when_its_label_names_the_same_inputs():
    import docker.errors

    class Dockerd:
        api = None

        def inspect_image(self, ref):
            if ref != "r/app:code-abc":
                raise docker.errors.ImageNotFound(ref)
            return {"Id": "sha256:c0de", "Config": {"Labels": {image.LABEL_CODE_INPUTS: "sha256:in"}}}

    dockerd = Dockerd()
    dockerd.api = dockerd
    assert image.known_code_image(dockerd, "r/app:code-abc", "sha256:in")["Id"] == "sha256:c0de"
    assert image.known_code_image(dockerd, "r/app:code-abc", "sha256:other") is None
    assert image.known_code_image(dockerd, "r/app:code-def", "sha256:in") is None
