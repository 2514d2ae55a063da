"""The HTTP endpoints (issue 4's table)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from app.metrics import EXTENSION as METRICS, metrics_response
from app.openapi import build_spec
from app.validation import InputError, parse_predict_body

bp = Blueprint("api", __name__)


def _model():
    return current_app.extensions["aiship_model"]


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    state = current_app.extensions["aiship_ready"]
    if not state.ready:
        return {"status": "not ready", "reason": state.reason}, 503
    return {"status": "ready"}


@bp.get("/version")
def version():
    model = _model()
    return {"git_sha": current_app.config["GIT_SHA"],
            "model": {"name": model.name, "version": model.version, "sha256": model.sha256}}


@bp.post("/predict")
def predict():
    if request.mimetype != "application/json":
        raise InputError(415, f"content type must be application/json, not "
                              f"{request.mimetype or 'missing'}.")
    model = _model()
    rows = parse_predict_body(request.get_data(cache=False), model.n_features,
                              current_app.config["MAX_ROWS"])
    predictions = model.predict(rows)
    current_app.extensions[METRICS].predictions.labels(str(model.version)).inc(len(predictions))
    return jsonify(predictions=predictions, model={"name": model.name, "version": model.version})


@bp.get("/metrics")
def metrics():
    return metrics_response(current_app.extensions[METRICS])


@bp.get("/openapi.json")
def openapi():
    spec = current_app.extensions.get("aiship_openapi")
    if spec is None:  # built once per process; the model does not change while it runs
        spec = build_spec(_model(), current_app.config["MAX_ROWS"],
                          current_app.config["MAX_CONTENT_LENGTH"])
        current_app.extensions["aiship_openapi"] = spec
    return spec
