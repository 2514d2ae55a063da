"""A table of bad requests: each gets its 4xx and its one-sentence JSON error, never a 500."""

from __future__ import annotations

import json

import pytest

ROW = [0.5] * 30


def body(obj) -> str:
    return json.dumps(obj)


def row_with(index: int, value) -> str:
    row = list(ROW)
    row[index] = value
    return body({"instances": [row]})


JSON = "application/json"
CASES = [
    # id, content type, body, status, error
    ("text/plain", "text/plain", body({"instances": [ROW]}), 415,
     "content type must be application/json, not text/plain."),
    ("no content type", None, body({"instances": [ROW]}), 415,
     "content type must be application/json, not missing."),
    ("form", "application/x-www-form-urlencoded", "instances=1", 415,
     "content type must be application/json, not application/x-www-form-urlencoded."),
    ("malformed JSON", JSON, '{"instances": [', 400, "the body is not valid JSON: Expecting value."),
    ("empty body", JSON, "", 400, "the body is not valid JSON: Expecting value."),
    ("not UTF-8", JSON, b'{"instances": "\xff"}', 400, "the body is not valid UTF-8."),
    ("NaN literal", JSON, '{"instances": [[' + ", ".join(["NaN"] + ["1"] * 29) + "]]}", 400,
     "the body is not valid JSON: NaN is not a JSON number."),
    ("Infinity literal", JSON, '{"instances": [[' + ", ".join(["-Infinity"] + ["1"] * 29) + "]]}",
     400, "the body is not valid JSON: -Infinity is not a JSON number."),
    ("overflow to inf", JSON, row_with(3, 1.0).replace("1.0", "1e999"), 422,
     "instances[0][3] is not a finite number."),
    ("huge integer", JSON, row_with(4, 10 ** 400), 422,
     "instances[0][4] is outside the accepted range of ±1e+15."),
    ("huge float", JSON, row_with(5, 3.2e306), 422,
     "instances[0][5] is outside the accepted range of ±1e+15."),
    ("too many digits", JSON, row_with(4, 0).replace(" 0,", " " + "9" * 5000 + ",", 1), 400,
     "the body is not valid JSON: Exceeds the limit (4300 digits) for integer string conversion."),
    ("array at top", JSON, body([ROW]), 400, "the body must be a JSON object, not a list."),
    ("string at top", JSON, body("hi"), 400, "the body must be a JSON object, not a string."),
    ("missing instances", JSON, body({"rows": [ROW]}), 422, 'the body has no "instances" field.'),
    ("extra field", JSON, body({"instances": [ROW], "x": 1}), 422,
     'unknown field "x"; only "instances" is accepted.'),
    ("instances not a list", JSON, body({"instances": {"a": 1}}), 422,
     '"instances" must be a list of rows, not an object.'),
    ("empty list", JSON, body({"instances": []}), 422, '"instances" is empty; send at least one row.'),
    ("too many rows", JSON, body({"instances": [ROW] * 51}), 422,
     '"instances" has 51 rows; the limit is 50.'),
    ("flat row", JSON, body({"instances": ROW}), 422,
     "instances[0] must be a list of 30 numbers, not float."),
    ("too few features", JSON, body({"instances": [ROW, ROW[:29]]}), 422,
     "instances[1] has 29 values; the model expects 30."),
    ("too many features", JSON, body({"instances": [ROW + [1]]}), 422,
     "instances[0] has 31 values; the model expects 30."),
    ("string value", JSON, row_with(7, "1.5"), 422, "instances[0][7] is a string; send a number."),
    ("null value", JSON, row_with(0, None), 422, "instances[0][0] is null; send a number."),
    ("boolean value", JSON, row_with(29, True), 422, "instances[0][29] is a boolean; send a number."),
    ("nested value", JSON, row_with(1, [1.0]), 422, "instances[0][1] is a list; send a number."),
    ("object value", JSON, row_with(2, {"v": 1}), 422, "instances[0][2] is an object; send a number."),
    ("nested too deep", JSON, "[" * 20_000 + "]" * 20_000, 400, "the JSON body is nested too deeply."),
    ("body over limit", JSON, body({"instances": [[123456.789] * 30] * 250}), 413,
     "the body is larger than the 65536-byte limit."),
]


@pytest.mark.parametrize("content_type,data,status,error", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(client, content_type, data, status, error):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", data=data, headers=headers)
    assert response.status_code == status
    assert response.get_json() == {"error": error}
    assert error.endswith(".") and error.count(". ") == 0  # one sentence


def test_table_is_big_enough():
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)
