"""flows.manifest: the card/manifest schema, model names, and the skops-not-pickle check at publish."""

from __future__ import annotations

import copy
import os
import pickle
import zipfile
from pathlib import Path
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from flows.errors import ModelIntegrityError, ModelStoreError
from flows.manifest import GoldenSet, ModelCard, ModelManifest, read_card, validate_model_name
from flows.model_store import check_model_file

CARD = {
    "schema_version": 1,
    "framework": "scikit-learn",
    "library_versions": {"scikit-learn": "1.5.2", "skops": "0.10.0"},
    "task": "binary-classification",
    "metrics": {"accuracy": 0.96},
    "input_schema": {"n_features": 2, "feature_names": ["a", "b"]},
    "output": {"type": "class", "classes": [0, 1]},
    "golden_set": {"rule": "exact", "tolerance": None, "inputs": [[1.0, 2.0], [3.0, 4.0]], "expected": [0, 1]},
}
STORE_FIELDS = {"name": "breast-cancer", "version": 3, "file": "model.skops", "sha256": "a" * 64, "size": 10,
                "publisher": "ana@host", "published_at": datetime(2025, 1, 2, tzinfo=timezone.utc)}


def card(**changes):
    data = copy.deepcopy(CARD)
    for dotted, value in changes.items():
        target, *path = dotted.split("__")
        holder = data
        for part in [target, *path][:-1]:
            holder = holder[part]
        holder[[target, *path][-1]] = value
    return data


def test_valid_card_and_manifest_round_trip():
    manifest = ModelManifest(**ModelCard.model_validate(CARD).model_dump(), **STORE_FIELDS)
    again = ModelManifest.model_validate_json(manifest.to_json())
    assert again == manifest and again.version == 3 and again.golden_set.expected == [0, 1]


def test_extra_training_fields_are_kept():
    data = card(training={"seed": 0})
    assert ModelCard.model_validate(data).model_dump()["training"] == {"seed": 0}


@pytest.mark.parametrize("changes, error", [
    ({"schema_version": 2}, "schema_version"),
    ({"input_schema__n_features": 3}, "feature_names has 2 names"),
    ({"golden_set__expected": [0]}, "2 inputs but 1 expected"),
    ({"golden_set__rule": "abs_tol"}, "needs a tolerance"),
    ({"golden_set__rule": "close"}, "rule"),
    ({"golden_set__inputs": [[1.0], [2.0]]}, "do not have n_features=2"),
    ({"golden_set__inputs": [], "golden_set__expected": []}, "at least 1"),
])
def test_invalid_cards_name_the_problem(changes, error):
    with pytest.raises(ValidationError, match=error):
        ModelCard.model_validate(card(**changes))


@pytest.mark.parametrize("field, value", [("sha256", "ABC"), ("version", 0), ("name", "Bad_Name"), ("size", -1)])
def test_manifest_store_fields_are_checked(field, value):
    with pytest.raises(ValidationError):
        ModelManifest(**CARD, **{**STORE_FIELDS, field: value})


@pytest.mark.parametrize("file", ["../../../etc/passwd", "/tmp/model.skops", "sub/model.skops", "..", "a\\b", ""])
def test_a_manifests_file_is_a_plain_name_in_its_version_folder(file):
    with pytest.raises(ValidationError, match="file must be a file name in the version's folder"):
        ModelManifest(**CARD, **{**STORE_FIELDS, "file": file})


def test_a_manifest_over_one_mib_is_refused_unparsed():
    from flows.errors import ModelStoreError
    from flows.manifest import parse_manifest

    with pytest.raises(ModelStoreError, match=r"models/x/1/manifest.json is 1,048,577 bytes, over the 1,048,576"):
        parse_manifest(b" " * (1 << 20) + b"{", "models/x/1/manifest.json")


def test_a_manifest_stored_under_another_models_key_is_refused(tmp_path):
    import json

    from flows.errors import ModelStoreError
    from flows.model_store import LocalModelStore
    from tests.fixtures.models import good_model

    store = LocalModelStore(tmp_path / "store")
    ref = store.publish(good_model(tmp_path / "m"), "iris")
    impostor = tmp_path / "store" / "models" / "x" / "3"
    impostor.mkdir(parents=True)
    (impostor / "manifest.json").write_text(json.dumps({**json.loads(ref.manifest.to_json()), "name": "iris", "version": 99}))
    with pytest.raises(ModelStoreError, match=r"claims to be iris v99, not x v3 whose key it is stored under"):
        store.resolve("x", 3)


@pytest.mark.parametrize("name", ["a", "breast-cancer", "m1", "x" * 63])
def test_valid_names(name):
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a.b", "a_b", "a/b", "x" * 64, "models/../x"])
def test_invalid_names(name):
    with pytest.raises(ModelStoreError, match="invalid model name"):
        validate_model_name(name)


def test_golden_set_rules():
    exact = GoldenSet(rule="exact", inputs=[[1.0], [2.0]], expected=[0, 1])
    assert exact.matches([0, 1]) == [] and exact.matches([0, 0]) == [1] and exact.matches([0]) == [0, 1]
    tol = GoldenSet(rule="abs_tol", tolerance=0.01, inputs=[[1.0], [2.0]], expected=[[0.2, 0.8], 0.5])
    assert tol.matches([[0.205, 0.795], 0.509]) == []
    assert tol.matches([[0.3, 0.7], "x"]) == [0, 1]


def test_read_card_errors_name_the_file(tmp_path):
    with pytest.raises(ModelStoreError, match="model.json not found; train the model first"):
        read_card(tmp_path / "model.json")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelStoreError, match="is not a valid model card"):
        read_card(tmp_path / "model.json")


class _CreatesFile:
    """A pickle payload that would create a file if the pickle were ever loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_is_refused_without_being_loaded(tmp_path):
    marker = tmp_path / "pwned"
    model = tmp_path / "model.skops"
    model.write_bytes(pickle.dumps(_CreatesFile(str(marker))))

    with pytest.raises(ModelIntegrityError, match="is a pickle, not a skops file.*skops.io.dump"):
        check_model_file(model)
    assert not marker.exists()


def test_skops_file_with_a_type_off_the_apps_allow_list_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.tree import DecisionTreeClassifier

    from flows.app_config import read_app_config

    sample = read_app_config(Path(__file__).resolve().parents[2])  # the sample app's aiship.toml
    model = tmp_path / "model.skops"
    sio.dump(DecisionTreeClassifier().fit([[0.0], [1.0]], [0, 1]), model)
    check_model_file(model)  # without an app's list only the format is checked
    with pytest.raises(ModelIntegrityError, match=r"types app aiship-app refuses to load: .*DecisionTreeClassifier"
                                                  r".*\[model\] types in app aiship-app's aiship.toml"):
        check_model_file(model, sample.model.types, "app aiship-app")


def test_zip_without_skops_schema_is_refused(tmp_path):
    model = tmp_path / "model.skops"
    with zipfile.ZipFile(model, "w") as zf:
        zf.writestr("weights.bin", b"\0")
    with pytest.raises(ModelIntegrityError, match="without schema.json"):
        check_model_file(model)


def test_other_bytes_and_missing_file_are_refused(tmp_path):
    model = tmp_path / "model.skops"
    model.write_bytes(os.urandom(16).replace(b"\x80", b"\x00").replace(b"(", b"\x00").replace(b"c", b"\x00"))
    with pytest.raises(ModelIntegrityError, match="not a zip archive"):
        check_model_file(model)
    with pytest.raises(ModelStoreError, match="not found"):
        check_model_file(tmp_path / "absent.skops")


def test_real_skops_file_is_accepted(tmp_path):
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    sio.dump(model, tmp_path / "model.skops")
    check_model_file(tmp_path / "model.skops")
