"""/predict under 10,000 generated requests: no 5xx, and the workers' memory stays within a stated bound.

The requests come from the app's own /openapi.json (valid bodies drawn from its PredictRequest
schema by `from_schema`, for the JSON Schema subset an OpenAPI request body uses), from
arbitrary JSON, and from arbitrary bytes under several content types. hypothesis-jsonschema
would do the drawing, but its release does not run with this hypothesis. The app runs under real gunicorn on a loopback port, as in its image.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from tests.fixtures.models import published_model
from tests.reliability.faults import REPO, wait_for

CASES = int(os.environ.get("AISHIP_FUZZ_CASES", "10000"))
MEMORY_BOUND_MIB = 48  # growth of the workers' resident memory over the whole run, summed


def resolved(node, components: dict):
    """`node` with its local `$ref`s replaced by what they name."""
    if isinstance(node, dict):
        if "$ref" in node:
            return resolved(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {k: resolved(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [resolved(v, components) for v in node]
    return node


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values valid under `schema`: object, array, number, integer, string, boolean and enum, as /openapi.json uses them."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = {k: from_schema(v) for k, v in schema.get("properties", {}).items()}
        required = {k: props[k] for k in schema.get("required", [])}
        optional = {k: v for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), min_size=schema.get("minItems", 0),
                        max_size=max(schema.get("minItems", 0), min(schema.get("maxItems", 3), 3)))
    if kind == "number":  # magnitudes a feature may have; the app answers 422 to absurd ones, which the other cases send
        return st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-10**6, 10**6)
    if kind == "integer":
        return st.integers()
    if kind == "string":
        return st.text()
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"from_schema does not know {schema!r}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def workers(master: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


class Client:
    """One kept-alive connection, opened again when the server closes it (after a 4xx it may)."""

    def __init__(self, port: int) -> None:
        self.port, self.conn = port, None

    def post(self, body: bytes, content_type: str) -> int:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = self.conn.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def test_predict_survives_ten_thousand_generated_requests(tmp_path):
    model = published_model(tmp_path / "model", name="aiship-tests-fuzz")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, AISHIP_APP_MODEL_DIR=str(model), AISHIP_APP_BIND=f"127.0.0.1:{port}", AISHIP_APP_WORKERS="2",
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), AISHIP_APP_LOG_LEVEL="warning")
    (tmp_path / "metrics").mkdir()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "app/gunicorn.conf.py"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "gunicorn.err").open("w"))
    try:
        def spec():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/openapi.json")
                return json.loads(conn.getresponse().read())
            except (OSError, ValueError):
                return None

        doc = wait_for("the app's /openapi.json", spec, timeout=60)
        request_schema = resolved(doc["components"]["schemas"]["PredictRequest"], doc["components"]["schemas"])
        client = Client(port)
        json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                                   lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                                   max_leaves=12)  # small: hypothesis spends ~10 ms on a case here, the app ~5 ms
        bodies = st.one_of(
            from_schema(request_schema).map(lambda b: (json.dumps(b).encode(), "application/json")),
            json_values.map(lambda b: (json.dumps(b).encode(), "application/json")),
            st.dictionaries(st.just("instances"), json_values).map(lambda b: (json.dumps(b).encode(), "application/json")),
            st.tuples(st.binary(max_size=2048), st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""])),
        )
        width = request_schema["properties"]["instances"]["items"]["minItems"]
        for _ in range(200):  # warm up, so that the memory compared is the steady one
            assert client.post(json.dumps({"instances": [[0.5] * width]}).encode(), "application/json") == 200
        before = sum(rss_mib(pid) for pid in workers(server.pid))
        statuses: dict[int, int] = {}
        spent = {"server": 0.0}

        @settings(max_examples=CASES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
        @given(bodies)
        def one(case):
            body, content_type = case
            t0 = time.monotonic()
            status = client.post(body, content_type)
            spent["server"] += time.monotonic() - t0
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, f"{status} for {content_type} {body[:200]!r}"

        started = time.monotonic()
        one()
        took = time.monotonic() - started
        after = sum(rss_mib(pid) for pid in workers(server.pid))
        print(f"\n{sum(statuses.values())} requests in {took:.1f} s ({spent['server']:.1f} s waiting for answers): "
              f"{dict(sorted(statuses.items()))}; "
              f"workers' RSS {before:.0f} -> {after:.0f} MiB")
        assert sum(statuses.values()) >= CASES
        assert statuses.get(200, 0) > CASES // 10 and set(statuses) - {200, 400, 413, 415, 422} == set()
        assert after - before < MEMORY_BOUND_MIB, f"workers grew {after - before:.0f} MiB over {CASES} requests"
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
