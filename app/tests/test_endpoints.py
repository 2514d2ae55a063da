"""Every endpoint, answered by the Flask test client."""

from __future__ import annotations

import json
import re

import pytest

from app import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_ready_after_start(client):
    assert client.get("/readyz").status_code == 200


def test_readyz_503_until_warm(app, client):
    state = app.extensions["aiship_ready"]
    saved = (state.ready, state.reason)
    state.ready, state.reason = False, "warming up"
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json() == {"status": "not ready", "reason": "warming up"}
    finally:
        state.ready, state.reason = saved


def test_version(client, manifest):
    assert client.get("/version").get_json() == {
        "git_sha": "abc123",
        "model": {"name": "test-model", "version": 1, "sha256": manifest["sha256"]},
    }


def test_version_from_environment(trained_dir, monkeypatch):
    monkeypatch.setenv("AISHIP_APP_MODEL_DIR", str(trained_dir))
    monkeypatch.setenv("AISHIP_APP_GIT_SHA", "1234567")  # digits only: must stay a string
    monkeypatch.setenv("AISHIP_APP_MAX_ROWS", "7")
    app = create_app()
    assert app.config["MAX_ROWS"] == 7
    assert app.test_client().get("/version").get_json()["git_sha"] == "1234567"


def test_predict_golden_set(client, manifest):
    golden = manifest["golden_set"]
    response = client.post("/predict", json={"instances": golden["inputs"]})
    assert response.status_code == 200
    assert response.get_json() == {"predictions": golden["expected"],
                                   "model": {"name": "test-model", "version": 1}}


def test_predict_accepts_ints_and_charset(client):
    response = client.post("/predict", data='{"instances": [' + ",".join(["1"] * 30) + "]}",
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 422  # one flat row is not a list of rows
    response = client.post("/predict", data='{"instances": [[' + ",".join(["1"] * 30) + "]]}",
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 200 and response.get_json()["predictions"][0] in (0, 1)


def test_openapi_matches_model(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/healthz", "/readyz", "/version", "/predict", "/metrics",
                                  "/openapi.json"}
    request = spec["components"]["schemas"]["PredictRequest"]
    row = request["properties"]["instances"]["items"]
    assert row["minItems"] == row["maxItems"] == 30
    assert request["properties"]["instances"]["maxItems"] == 50
    assert spec["openapi"].startswith("3.0.") and not list_types(spec), "a type list is OpenAPI 3.1, not 3.0"


def list_types(node) -> list:
    """Every `type` given as a list (valid in OpenAPI 3.1 only) anywhere in a spec."""
    if isinstance(node, dict):
        return ([node["type"]] if isinstance(node.get("type"), list) else []) + [
            t for value in node.values() for t in list_types(value)]
    if isinstance(node, list):
        return [t for value in node for t in list_types(value)]
    return []


def test_metrics_counts_requests_and_predictions(client):
    before = client.get("/metrics").get_data(as_text=True)
    client.post("/predict", json={"instances": [[0.0] * 30, [1.0] * 30]})
    client.post("/predict", json={"instances": []})
    text = client.get("/metrics").get_data(as_text=True)

    def value(body: str, series: str) -> float:
        found = re.search(re.escape(series) + r" (\S+)", body)
        return float(found.group(1)) if found else 0.0

    ok = 'aiship_app_requests_total{endpoint="/predict",method="POST",status="200"}'
    bad = 'aiship_app_requests_total{endpoint="/predict",method="POST",status="422"}'
    rows = 'aiship_app_predictions_total{model_version="1"}'
    assert value(text, ok) - value(before, ok) == 1
    assert value(text, bad) - value(before, bad) == 1
    assert value(text, rows) - value(before, rows) == 2
    assert "aiship_app_request_duration_seconds_bucket" in text
    assert 'aiship_app_model_info{name="test-model"' in text


@pytest.mark.parametrize("path,method,status,error", [
    ("/nope", "get", 404, "no endpoint at /nope; see /openapi.json."),
    ("/predict", "get", 405, "method GET is not allowed on /predict."),
    ("/healthz", "post", 405, "method POST is not allowed on /healthz."),
])
def test_404_405_are_json(client, path, method, status, error):
    response = getattr(client, method)(path)
    assert (response.status_code, response.get_json()) == (status, {"error": error})


def test_request_id_honoured_or_generated(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] \
        == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["X-Request-ID"])


def test_logs_are_json_with_request_id(client):
    import io
    import logging

    from app.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("app").addHandler(handler)
    try:
        client.post("/predict", json={"instances": "x"}, headers={"X-Request-ID": "log-check-1"})
    finally:
        logging.getLogger("app").removeHandler(handler)
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["request_id"] == "log-check-1" and entry["status"] == 422
    assert entry["error"] == '"instances" must be a list of rows, not a string.'


def test_bad_config_is_refused(trained_dir):
    from app import AppConfigError
    with pytest.raises(AppConfigError, match="MAX_ROWS must be a positive integer"):
        create_app({"MODEL_DIR": str(trained_dir), "MAX_ROWS": 0})
