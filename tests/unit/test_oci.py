"""Unit tests of flows.oci: the model layer's bytes depend on the model alone; config and manifest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from flows import oci
from flows.errors import ImageBuildError

CODE_IMAGE = {
    "Architecture": "amd64", "Os": "linux",
    "Config": {"User": "10001:10001", "Env": ["PATH=/opt/venv/bin", "AISHIP_APP_GIT_SHA=abc"], "Cmd": ["gunicorn"],
               "ExposedPorts": {"8080/tcp": {}}, "WorkingDir": "/srv", "Entrypoint": None, "OnBuild": None,
               "Healthcheck": {"Test": ["CMD", "true"]}, "Labels": {"base": "debian", "io.aiship.model.name": "stale"},
               "Hostname": "", "Image": "sha256:" + "1" * 64},
    "RootFS": {"type": "layers", "Layers": ["sha256:" + "a" * 64, "sha256:" + "b" * 64]},
}


def model_files(root: Path, payload: bytes = b"PK model bytes") -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.skops").write_bytes(payload)
    (root / "manifest.json").write_text('{"name": "iris"}')
    return root / "model.skops", root / "manifest.json"


def layer(tmp_path: Path, name: str = "one", payload: bytes = b"PK model bytes") -> oci.ModelLayer:
    model, manifest = model_files(tmp_path / name, payload)
    return oci.write_model_layer(model, manifest, tmp_path / name / "layer.tar")


def test_model_layer_holds_the_model_and_its_manifest_in_opt_model_owned_by_root(tmp_path):
    written = layer(tmp_path)
    with tarfile.open(written.path) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == ["opt/model/manifest.json", "opt/model/model.skops"]
        assert {(i.uid, i.gid, i.uname, i.gname, i.mode, i.mtime) for i in infos} == {(0, 0, "", "", 0o644, 0)}
        assert tar.extractfile("opt/model/model.skops").read() == b"PK model bytes"


def test_model_layer_digest_and_size_are_those_of_the_file_written(tmp_path):
    written = layer(tmp_path)
    data = written.path.read_bytes()
    assert written.digest == "sha256:" + hashlib.sha256(data).hexdigest() and written.size == len(data)
    assert written.short_id == written.digest[7:19]


def test_same_model_gives_the_same_layer_wherever_and_whenever_it_is_written(tmp_path):
    first = layer(tmp_path, "first")
    second_model, _ = model_files(tmp_path / "elsewhere" / "deeper")
    os.utime(second_model, (1_000_000, 1_000_000))
    os.chmod(second_model, 0o600)
    second = oci.write_model_layer(second_model, second_model.with_name("manifest.json"), tmp_path / "l2.tar")
    assert second.digest == first.digest and second.path.read_bytes() == first.path.read_bytes()


def test_another_model_gives_another_layer(tmp_path):
    assert layer(tmp_path, "a", b"model one").digest != layer(tmp_path, "b", b"model two").digest


def test_failed_layer_write_leaves_no_file_and_says_where(tmp_path):
    model, manifest = model_files(tmp_path / "m")
    dest = tmp_path / "not-a-folder"
    dest.write_text("a file where the layer's folder should be")
    with pytest.raises(ImageBuildError, match="writing the model layer"):
        oci.write_model_layer(model, manifest, dest / "layer.tar")
    model.unlink()  # the manifest is written first, then the model is missing
    with pytest.raises(ImageBuildError, match=r"model\.skops.*still there"):
        oci.write_model_layer(model, manifest, tmp_path / "out" / "layer.tar")
    assert not list(tmp_path.glob("**/*.partial")) and not (tmp_path / "out" / "layer.tar").exists()


def test_config_keeps_the_code_image_runtime_and_puts_labels_time_and_model_layer_on_top(tmp_path):
    model = layer(tmp_path)
    config = json.loads(oci.image_config(CODE_IMAGE, {"io.aiship.model.name": "iris"}, "2024-05-01T12:00:00Z", model))
    assert config["created"] == "2024-05-01T12:00:00Z"
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [*CODE_IMAGE["RootFS"]["Layers"], model.digest]}
    assert config["config"]["Labels"] == {"base": "debian", "io.aiship.model.name": "iris"}
    assert config["config"]["User"] == "10001:10001" and config["config"]["Cmd"] == ["gunicorn"]
    assert config["config"]["Healthcheck"] == {"Test": ["CMD", "true"]}
    assert not {"Hostname", "Image", "Entrypoint", "OnBuild"} & set(config["config"])


def test_config_bytes_are_the_same_for_the_same_inputs_whatever_the_key_order(tmp_path):
    model = layer(tmp_path)
    reordered = {**CODE_IMAGE, "Config": dict(reversed(list(CODE_IMAGE["Config"].items())))}
    labels = {"b": "2", "a": "1"}
    first = oci.image_config(CODE_IMAGE, labels, "2024-05-01T12:00:00Z", model)
    assert oci.image_config(reordered, dict(reversed(list(labels.items()))), "2024-05-01T12:00:00Z", model) == first
    assert oci.image_config(CODE_IMAGE, labels, "2024-05-01T12:00:01Z", model) != first


def test_manifest_lists_the_code_layers_as_pushed_then_the_uncompressed_model_layer(tmp_path):
    model = layer(tmp_path)
    config = oci.image_config(CODE_IMAGE, {}, "2024-05-01T12:00:00Z", model)
    code_layers = [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:" + "c" * 64,
                    "size": 1234}]
    manifest = json.loads(oci.image_manifest(config, code_layers, model))
    assert manifest["mediaType"] == oci.MANIFEST_TYPE and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": oci.CONFIG_TYPE, "digest": oci.digest_of(config), "size": len(config)}
    assert manifest["layers"] == [
        {"mediaType": oci.GZIP_LAYER_TYPE, "digest": "sha256:" + "c" * 64, "size": 1234},
        {"mediaType": oci.LAYER_TYPE, "digest": model.digest, "size": model.size},
    ]


def test_docker_archive_holds_config_index_and_only_the_model_layer(tmp_path):
    model = layer(tmp_path)
    config = oci.image_config(CODE_IMAGE, {}, "2024-05-01T12:00:00Z", model)
    out = io.BytesIO()
    oci.write_docker_archive(config, "r/app:t", model, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        config_name = oci.digest_of(config)[7:] + ".json"
        model_name = f"{model.digest[7:]}/layer.tar"
        assert sorted(tar.getnames()) == sorted([config_name, "manifest.json", model_name])
        assert tar.extractfile(config_name).read() == config
        assert tar.extractfile(model_name).read() == model.path.read_bytes()
        index = json.loads(tar.extractfile("manifest.json").read())
    assert index == [{"Config": config_name, "RepoTags": ["r/app:t"],
                      "Layers": [f"{'a' * 64}/layer.tar", f"{'b' * 64}/layer.tar", model_name]}]


@pytest.mark.parametrize("given, oci_type", [
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", oci.GZIP_LAYER_TYPE),
    ("application/vnd.docker.image.rootfs.diff.tar", oci.LAYER_TYPE),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("application/vnd.oci.image.layer.v1.tar", oci.LAYER_TYPE),
])
def test_code_layer_types_are_restated_in_oci_terms(given, oci_type):
    assert oci.oci_layer_type(given) == oci_type


def test_a_foreign_layer_is_refused_by_name():
    with pytest.raises(ValueError, match="foreign.*no OCI equivalent"):
        oci.oci_layer_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
