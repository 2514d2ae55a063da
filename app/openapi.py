"""The OpenAPI 3 description of the app, built from the loaded model (feature count, row limit)."""

from __future__ import annotations

from app.model import LoadedModel


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def build_spec(model: LoadedModel, max_rows: int, max_bytes: int) -> dict:
    """OpenAPI document; /predict's request schema matches the model's input schema exactly."""
    row = {"type": "array", "minItems": model.n_features, "maxItems": model.n_features,
           "items": {"type": "number"},
           "description": "feature values in this order: " + ", ".join(model.feature_names)}
    text = {"description": "plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    status = _json({"type": "object", "properties": {"status": {"type": "string"}}}, "status")
    return {
        "openapi": "3.0.3",
        "info": {"title": "aiship inference app", "version": str(model.version),
                 "description": f"Serves model {model.name} version {model.version} "
                                f"(sha256 {model.sha256})."},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": status}}},
            "/readyz": {"get": {"summary": "Readiness: model loaded and warmed up",
                                "responses": {"200": status, "503": status}}},
            "/version": {"get": {"summary": "Git SHA and model", "responses": {
                "200": _json({"$ref": "#/components/schemas/Version"}, "what this process serves")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": text}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI")}}},
            "/predict": {"post": {
                "summary": "Predict class labels",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}}}},
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/PredictResponse"}, "one label per row"),
                    "400": _error("malformed JSON or not an object"),
                    "413": _error(f"body over {max_bytes} bytes"),
                    "415": _error("content type is not application/json"),
                    "422": _error("valid JSON with the wrong shape, types or values"),
                }}},
        },
        "components": {"schemas": {
            "PredictRequest": {"type": "object", "required": ["instances"],
                               "additionalProperties": False, "properties": {
                                   "instances": {"type": "array", "minItems": 1,
                                                 "maxItems": max_rows, "items": row}}},
            "PredictResponse": {"type": "object", "required": ["predictions", "model"], "properties": {
                "predictions": {"type": "array",
                                "items": {"enum": model.manifest.get("output", {}).get("classes")
                                          or [0, 1]}},
                "model": {"$ref": "#/components/schemas/ModelRef"}}},
            "ModelRef": {"type": "object", "properties": {
                "name": {"type": "string"}, "version": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}},
            "Version": {"type": "object", "properties": {
                "git_sha": {"type": "string"},
                "model": {"type": "object", "properties": {
                    "name": {"type": "string"}, "version": {}, "sha256": {"type": "string"}}}}},
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}}},
        }},
    }
