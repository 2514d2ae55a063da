"""The model's card (`model.json`, written by training) and its manifest (`manifest.json`, written at publish).

`ModelCard` is what training knows: framework, metrics, input schema, golden set.
`ModelManifest` adds what the store knows: name, version, sha256, size, publisher, time.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flows.errors import MalformedManifestError, ModelStoreError

MODEL_FILE = "model.skops"
CARD_FILE = "model.json"
MANIFEST_FILE = "manifest.json"

# DNS-label-like: it appears in blob paths, Kubernetes labels and the event resource id
# `aiship.model.<name>.<version>`, where a dot would make the id ambiguous.
PLAIN_FILE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_MANIFEST_BYTES = 1 << 20  # a manifest holds a golden set of a few rows: anything this big is not one
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def validate_model_name(name: str) -> str:
    """Returns `name` if it is a valid model name, else raises ModelStoreError saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ModelStoreError(
            f"invalid model name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'breast-cancer')"
        )
    return name


class InputSchema(BaseModel):
    """The inputs the model expects: one row of `n_features` numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_features: int = Field(ge=1, description="Number of features in one input row.")
    feature_names: list[str] = Field(description="Feature names, in column order.")

    @model_validator(mode="after")
    def _names_match_count(self) -> InputSchema:
        if len(self.feature_names) != self.n_features:
            raise ValueError(f"feature_names has {len(self.feature_names)} names, expected n_features={self.n_features}")
        return self


class GoldenSet(BaseModel):
    """Inputs with their expected outputs, and the rule comparing them; the smoke test replays it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["exact", "abs_tol"] = Field(description="'exact' for class labels, 'abs_tol' for scores.")
    tolerance: float | None = Field(default=None, ge=0, description="Absolute tolerance; required when rule is 'abs_tol'.")
    inputs: list[list[float]] = Field(min_length=1, description="Input rows.")
    expected: list[Any] = Field(min_length=1, description="Expected output per input row.")

    @model_validator(mode="after")
    def _consistent(self) -> GoldenSet:
        if len(self.inputs) != len(self.expected):
            raise ValueError(f"golden set has {len(self.inputs)} inputs but {len(self.expected)} expected outputs")
        if self.rule == "abs_tol" and self.tolerance is None:
            raise ValueError("golden set rule 'abs_tol' needs a tolerance")
        return self

    def matches(self, actual: list[Any]) -> list[int]:
        """Indexes of rows whose `actual` output breaks the rule (empty when all match)."""
        if len(actual) != len(self.expected):
            return list(range(len(self.expected)))
        if self.rule == "exact":
            return [i for i, (a, e) in enumerate(zip(actual, self.expected)) if a != e]
        tol = self.tolerance or 0.0
        return [i for i, (a, e) in enumerate(zip(actual, self.expected)) if not _close(a, e, tol)]


def _close(actual: Any, expected: Any, tol: float) -> bool:
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            _close(a, e, tol) for a, e in zip(actual, expected)
        )
    try:
        return abs(float(actual) - float(expected)) <= tol
    except (TypeError, ValueError):
        return False


class ModelCard(BaseModel):
    """`model.json` as training writes it. Unknown extra fields are kept, so training can add more."""

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_version: Literal[1] = Field(description="Version of this file's layout.")
    framework: str = Field(description="Framework of the model, e.g. 'scikit-learn'.")
    library_versions: dict[str, str] = Field(description="Versions of the libraries the model was trained with.")
    task: str = Field(description="What the model does, e.g. 'binary-classification'.")
    metrics: dict[str, float] = Field(description="Training/evaluation metrics.")
    input_schema: InputSchema
    output: dict[str, Any] = Field(description="What one prediction is (type, classes, ...).")
    golden_set: GoldenSet

    @model_validator(mode="after")
    def _golden_rows_fit_schema(self) -> ModelCard:
        n = self.input_schema.n_features
        bad = [i for i, row in enumerate(self.golden_set.inputs) if len(row) != n]
        if bad:
            raise ValueError(f"golden set rows {bad[:5]} do not have n_features={n} values")
        return self


class ModelManifest(ModelCard):
    """`manifest.json`: the card plus what publishing added. The store's source of truth for a version."""

    name: str = Field(description="Model name.")
    version: int = Field(ge=1, description="Version, given by the store at publish.")
    file: str = Field(default=MODEL_FILE, description="Model file name inside the version folder.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the model file, lowercase hex.")
    size: int = Field(ge=0, description="Size of the model file in bytes.")
    publisher: str = Field(description="Who published (user@host, or the CI identity).")
    published_at: datetime = Field(description="When publishing finished, timezone-aware UTC.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"invalid model name {value!r}")
        return value

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        # The file is read from, and written to, the version's own folder: never a path out of it.
        if not PLAIN_FILE.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"file must be a file name in the version's folder such as {MODEL_FILE!r} "
                             f"(no '/', '\\' or '..'), got {value!r}")
        return value

    def to_json(self) -> str:
        """The manifest as the JSON text stored next to the model."""
        return self.model_dump_json(indent=2) + "\n"


def read_card(path: Path) -> ModelCard:
    """Reads and validates `model.json`; raises ModelStoreError naming the file and the problem."""
    try:
        return ModelCard.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelStoreError(f"{path} not found; train the model first (python -m app.train OUT_DIR)") from None
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ModelStoreError(f"{path} is not a valid model card: {exc}; fix it or re-run training") from exc


def parse_manifest(data: bytes | str, where: str) -> ModelManifest:
    """Parses a stored manifest, refusing one over MAX_MANIFEST_BYTES unread; `where` names the object in the error."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise MalformedManifestError(f"{where} is {len(data):,} bytes, over the {MAX_MANIFEST_BYTES:,} a manifest may be; "
                              "it was not parsed: re-publish the model")
    try:
        return ModelManifest.model_validate_json(data)
    except ValidationError as exc:
        raise MalformedManifestError(f"{where} is not a valid manifest: {exc}; re-publish the model") from exc


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
