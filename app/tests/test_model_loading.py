"""The model is data: integrity checked, allow-listed types only, a pickle is never executed."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from app import create_app
from app.model import ModelLoadError, load_model
from app.tests.conftest import write_manifest
from app.train import main as train_main


class _Payload:
    """Unpickling this creates a file: proof that code from the model file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_pickle_is_refused_and_never_runs(model_dir, tmp_path):
    marker = tmp_path / "pwned"
    (model_dir / "model.skops").write_bytes(pickle.dumps(_Payload(str(marker))))
    write_manifest(model_dir)  # hash and size match: only the format check stands in the way
    with pytest.raises(ModelLoadError, match="not a skops file .*a pickle is refused"):
        create_app({"MODEL_DIR": str(model_dir)})
    assert not marker.exists()


def _dump(model_dir, estimator) -> None:
    sio.dump(estimator, model_dir / "model.skops")
    write_manifest(model_dir)


def test_type_trusted_by_skops_but_not_on_allow_list_is_refused(model_dir):
    _dump(model_dir, DecisionTreeClassifier().fit([[0.0] * 30, [1.0] * 30], [0, 1]))
    with pytest.raises(ModelLoadError, match=r"sklearn\.tree\._classes\.DecisionTreeClassifier"):
        load_model(model_dir)


def test_function_in_model_file_is_refused(model_dir):
    _dump(model_dir, Pipeline([("f", FunctionTransformer(func=os.system))]))
    with pytest.raises(ModelLoadError, match="not on the app's allow-list: .*system"):
        load_model(model_dir)


def test_tampered_bytes_same_size_stop_the_start(model_dir, manifest):
    path = model_dir / "model.skops"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as info:
        create_app({"MODEL_DIR": str(model_dir)})
    message = str(info.value)
    assert f"sha256 mismatch for {path}: expected {manifest['sha256']}, got " in message
    assert message.endswith("re-publish the model")


def test_truncated_file_stops_the_start(model_dir):
    path = model_dir / "model.skops"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ModelLoadError, match="size mismatch .* expected \\d+ bytes, got \\d+"):
        load_model(model_dir)


def test_missing_manifest(tmp_path):
    with pytest.raises(ModelLoadError, match="manifest.json does not exist; set AISHIP_APP_MODEL_DIR"):
        load_model(tmp_path)


def test_manifest_without_hash(model_dir):
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["sha256"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="lacks sha256"):
        load_model(model_dir)


def test_train_cli_writes_model_and_metadata(tmp_path, capsys):
    assert train_main([str(tmp_path / "out"), "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["schema_version"] == 1 and meta["framework"] == "scikit-learn"
    assert meta["input_schema"]["n_features"] == len(meta["input_schema"]["feature_names"]) == 30
    assert meta["metrics"]["accuracy"] > 0.9
    golden = meta["golden_set"]
    assert golden["rule"] == "exact" and len(golden["inputs"]) == len(golden["expected"]) == 32
    assert "accuracy" in capsys.readouterr().out


def test_training_is_deterministic(trained_dir, tmp_path):
    from app.train import train
    again = train(tmp_path / "again", seed=0)
    first = json.loads((trained_dir / "model.json").read_text())
    second = json.loads((again / "model.json").read_text())
    assert first["golden_set"] == second["golden_set"] and first["metrics"] == second["metrics"]
