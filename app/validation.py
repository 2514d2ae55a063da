"""Turn a /predict request body into a float array, or a 4xx with a one-sentence reason."""

from __future__ import annotations

import json
import math

import numpy as np

MAX_DEPTH_MESSAGE = "the JSON body is nested too deeply."
# Beyond this, scaling overflows to infinity inside the model (found by the property test).
MAX_ABS_VALUE = 1e15


class InputError(Exception):
    """Raised when a request is refused; carries the HTTP status and a one-sentence message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refuse_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity, which are not JSON and no model can use.
    raise InputError(400, f"the body is not valid JSON: {name} is not a JSON number.")


def parse_json(body: bytes) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity literals, bounded nesting."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(400, "the body is not valid UTF-8.") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InputError(400, MAX_DEPTH_MESSAGE) from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing thousands of digits
        raise InputError(400, f"the body is not valid JSON: {str(exc).split(':')[0]}.") from None


def _check_value(value: object, where: str) -> None:
    kind = type(value)
    if kind is float or kind is int:
        if kind is float and not math.isfinite(value):  # 1e999 parses to inf
            raise InputError(422, f"{where} is not a finite number.")
        if abs(value) > MAX_ABS_VALUE:
            raise InputError(422, f"{where} is outside the accepted range of ±{MAX_ABS_VALUE:g}.")
    elif kind is bool:
        raise InputError(422, f"{where} is a boolean; send a number.")
    else:
        raise InputError(422, f"{where} is {_describe(value)}; send a number.")


def _describe(value: object) -> str:
    names = {str: "a string", type(None): "null", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def instances_from(payload: object, n_features: int, max_rows: int) -> np.ndarray:
    """Validate {"instances": [[n_features numbers], ...]} and return a (rows, n_features) array."""
    if not isinstance(payload, dict):
        raise InputError(400, f"the body must be a JSON object, not {_describe(payload)}.")
    if "instances" not in payload:
        raise InputError(422, 'the body has no "instances" field.')
    extra = sorted(k for k in payload if k != "instances")
    if extra:
        raise InputError(422, f'unknown field "{extra[0]}"; only "instances" is accepted.')
    rows = payload["instances"]
    if not isinstance(rows, list):
        raise InputError(422, f'"instances" must be a list of rows, not {_describe(rows)}.')
    if not rows:
        raise InputError(422, '"instances" is empty; send at least one row.')
    if len(rows) > max_rows:
        raise InputError(422, f'"instances" has {len(rows)} rows; the limit is {max_rows}.')
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(422, f"instances[{i}] must be a list of {n_features} numbers, "
                                  f"not {_describe(row)}.")
        if len(row) != n_features:
            raise InputError(422, f"instances[{i}] has {len(row)} values; the model expects "
                                  f"{n_features}.")
        for j, value in enumerate(row):
            _check_value(value, f"instances[{i}][{j}]")
    return np.asarray(rows, dtype=np.float64)


def parse_predict_body(body: bytes, n_features: int, max_rows: int) -> np.ndarray:
    """The whole /predict body check: JSON, shape, types, limits."""
    return instances_from(parse_json(body), n_features, max_rows)
