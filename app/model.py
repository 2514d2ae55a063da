"""Load the model once at start: manifest, size and sha256 check, an explicit type allow-list, warm-up.

The model file is data. It must be a skops zip; every type it names must be on ALLOWED_TYPES
(checked on the file's own schema before skops builds anything); pickle is never called.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_FILE = "manifest.json"

# Every type the sample model's skops file names. A team whose model needs another type adds it
# here, in review: this list is what the app is willing to construct from a model file.
ALLOWED_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.NoneType",
    "numpy.ndarray", "numpy.float64", "numpy.int64", "numpy.int32", "numpy.dtype",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
})


class ModelLoadError(RuntimeError):
    """Raised when the model folder is incomplete, fails its integrity check or holds a refused type."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model and the manifest fields the app serves."""

    estimator: Any
    name: str
    version: int | str
    sha256: str
    n_features: int
    feature_names: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict, repr=False)

    def predict(self, rows: np.ndarray) -> list:
        """Class labels for a (n, n_features) float array, as plain Python values.

        app/validation.py has refused every non-finite number already, so scikit-learn's own
        check is skipped: about a fifth of a single-row prediction (64 of 304 us, measured).
        """
        import sklearn

        with sklearn.config_context(assume_finite=True):
            return self.estimator.predict(rows).tolist()

    def warm_up(self) -> None:
        """One prediction on golden input 0 (zeros when the manifest has no golden set)."""
        inputs = self.manifest.get("golden_set", {}).get("inputs") or [[0.0] * self.n_features]
        self.predict(np.asarray(inputs[:1], dtype=np.float64))


def read_manifest(model_dir: Path) -> dict:
    """The manifest as a dict, with the fields the app needs checked."""
    path = model_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} does not exist; set AISHIP_APP_MODEL_DIR to a published model "
                             "version (model file + manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON ({exc}); re-publish the model") from exc
    missing = [k for k in ("name", "version", "file", "sha256", "size", "input_schema")
               if k not in manifest]
    if missing:
        raise ModelLoadError(f"{path} lacks {', '.join(missing)}; re-publish the model with "
                             "`aiship model publish`")
    return manifest


def verify_file(path: Path, expected_sha256: str, expected_size: int) -> None:
    """Check size then sha256 of the model file against the manifest."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} named by the manifest does not exist; re-publish")
    size = path.stat().st_size
    if size != expected_size:
        raise ModelLoadError(f"size mismatch for {path}: expected {expected_size} bytes, got {size}; "
                             "the file was changed after publishing, re-publish the model")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected_sha256:
        raise ModelLoadError(f"sha256 mismatch for {path}: expected {expected_sha256}, got "
                             f"{digest.hexdigest()}; the file was changed after publishing, "
                             "re-publish the model")


def schema_types(path: Path) -> set[str]:
    """Fully qualified names of every type a skops file's schema mentions; refuses non-skops files."""
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a skops file (not a zip archive; a pickle is refused "
                             "because loading it runs code); save the model with skops.io.dump")
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path} has no readable skops schema.json ({exc}); save the model "
                             "with skops.io.dump") from exc
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def refused_types(path: Path) -> list[str]:
    """The types a skops file names that are not on ALLOWED_TYPES, read without loading it.

    The model store calls this at publish, so that a model the app would refuse is never published.
    """
    import skops.io as sio  # imports scikit-learn, which takes seconds: after the file's hash is checked

    return sorted((schema_types(path) | set(sio.get_untrusted_types(file=path))) - ALLOWED_TYPES)


def load_estimator(path: Path) -> Any:
    """Load a skops file whose every type is on ALLOWED_TYPES."""
    refused = refused_types(path)
    if refused:
        raise ModelLoadError(f"{path} holds types not on the app's allow-list: {', '.join(refused)}; "
                             "retrain with allowed types or add them to app.model.ALLOWED_TYPES "
                             "after review")
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    return sio.load(path, trusted=untrusted)  # each one was just checked against ALLOWED_TYPES


def load_model(model_dir: Path) -> LoadedModel:
    """Read the manifest, verify the model file and load it."""
    manifest = read_manifest(model_dir)
    path = model_dir / Path(str(manifest["file"])).name  # never follow a path out of the folder
    verify_file(path, str(manifest["sha256"]), int(manifest["size"]))
    estimator = load_estimator(path)
    schema = manifest["input_schema"]
    n_features = int(schema["n_features"])
    declared = getattr(estimator, "n_features_in_", n_features)
    if declared != n_features:
        raise ModelLoadError(f"{path} expects {declared} features but the manifest says "
                             f"{n_features}; re-publish the model with its own model.json")
    return LoadedModel(estimator=estimator, name=str(manifest["name"]),
                       version=manifest["version"], sha256=str(manifest["sha256"]),
                       n_features=n_features, feature_names=list(schema.get("feature_names", [])),
                       manifest=manifest)
