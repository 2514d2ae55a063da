"""JSON-lines logging with a request id, for the app and for gunicorn's access and error logs."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is echoed into logs and headers, so only a short, plain token is honoured.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id and any `fields` extra."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context() and "request_id" in g:
            entry["request_id"] = g.request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(app: Flask) -> None:
    """Send the app's logger to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("app")
    if not any(getattr(h, "_aiship", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._aiship = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(str(app.config.get("LOG_LEVEL", "INFO")).upper())
    logger.propagate = False


def init_request_id(app: Flask) -> None:
    """Honour a well-formed X-Request-ID or make one; echo it on every response."""

    @app.before_request
    def _assign() -> None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = supplied if _REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex

    @app.after_request
    def _echo(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response
