"""Property test: generated /predict bodies, no 5xx, and a real share answered 200.

How many is the hypothesis profile's (conftest.py): 300 in a delivery, 3000 with
`--hypothesis-profile=thorough`.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

N_FEATURES = 30
finite = st.floats(-1e6, 1e6) | st.integers(-10**6, 10**6)
valid_row = st.lists(finite, min_size=N_FEATURES, max_size=N_FEATURES)
valid_body = st.builds(lambda rows: {"instances": rows}, st.lists(valid_row, min_size=1, max_size=2))
junk_value = (st.none() | st.booleans() | st.text(max_size=5) | st.floats()
              | st.integers(-10**500, 10**500) | st.lists(st.integers(), max_size=2))
bad_row = st.lists(finite | junk_value, min_size=0, max_size=N_FEATURES + 2)
json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
bad_body = (st.builds(lambda rows: {"instances": rows}, st.lists(bad_row, max_size=4))
            | st.dictionaries(st.sampled_from(["instances", "rows", "x"]), json_values, max_size=2)
            | json_values)


@st.composite
def requests(draw):
    """(content type, raw body): mostly JSON, half of it valid, some raw bytes and other types."""
    kind = draw(st.sampled_from(["valid"] * 5 + ["bad"] * 4 + ["bytes", "content-type"]))
    if kind == "bytes":
        return "application/json", draw(st.binary(max_size=64))
    obj = draw(valid_body if kind in ("valid", "content-type") else bad_body)
    text = json.dumps(obj)  # may hold NaN/Infinity literals: Python writes them, the app refuses them
    ctype = draw(st.sampled_from(["text/plain", "", "application/xml"])) if kind == "content-type" \
        else "application/json"
    return ctype, text.encode()


def _is_valid(ctype: str, body: bytes) -> bool:
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    rows = obj.get("instances") if isinstance(obj, dict) and set(obj) == {"instances"} else None
    return (ctype == "application/json" and isinstance(rows, list) and 0 < len(rows) <= 50
            and all(isinstance(r, list) and len(r) == N_FEATURES
                    # an exact comparison: NaN and infinities fail it, and an int of any size is compared as it is
                    and all(type(v) in (int, float) and abs(v) <= 1e15 for v in r) for r in rows))


def test_generated_bodies_never_get_5xx(client):
    seen = {"total": 0, "ok": 0}

    @given(requests())
    def check(request):
        ctype, body = request
        response = client.post("/predict", data=body, headers={"Content-Type": ctype} if ctype else {})
        assert response.status_code < 500, (response.status_code, body[:200])
        payload = response.get_json()
        if _is_valid(ctype, body):
            assert response.status_code == 200, (response.get_json(), body[:200])
            assert len(payload["predictions"]) == len(json.loads(body)["instances"])
        else:
            assert 400 <= response.status_code < 500 and isinstance(payload["error"], str)
        seen["total"] += 1
        seen["ok"] += response.status_code == 200

    check()
    assert seen["total"] >= settings().max_examples
    assert seen["ok"] / seen["total"] >= 0.30, seen
