"""Every error is a JSON object {"error": "<one sentence>"}; bad input never becomes a 500."""

from __future__ import annotations

import logging

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from app.validation import InputError

log = logging.getLogger("app.errors")


def _body(status: int, message: str):
    return {"error": message}, status


def _http_message(exc: HTTPException) -> str:
    limit = request.max_content_length
    messages = {
        404: f"no endpoint at {request.path}; see /openapi.json.",
        405: f"method {request.method} is not allowed on {request.path}.",
        413: f"the body is larger than the {limit}-byte limit.",
    }
    return messages.get(exc.code or 500, f"{exc.name.lower()}.")


def register(app: Flask) -> None:
    """Install the JSON error handlers."""

    @app.errorhandler(InputError)
    def _input(exc: InputError):
        log.info("request refused", extra={"fields": {"status": exc.status, "error": exc.message}})
        return _body(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        response = exc.get_response()
        message = _http_message(exc)
        log.info("request refused", extra={"fields": {"status": exc.code, "error": message}})
        allow = {"Allow": response.headers["Allow"]} if "Allow" in response.headers else {}
        return {"error": message}, exc.code or 500, allow

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled error", exc_info=exc)
        return _body(500, f"internal error; quote request id {g.get('request_id', '-')}.")
