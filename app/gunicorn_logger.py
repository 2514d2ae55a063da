"""gunicorn's logger with JSON error lines and one JSON access line per request (with its request id)."""

from __future__ import annotations

from gunicorn.glogging import Logger

from app.logs import REQUEST_ID_HEADER, JsonFormatter


class GunicornJsonLogger(Logger):
    """Named by `logger_class` in app/gunicorn.conf.py."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        fields = {
            "remote": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status) if status.isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": _header(resp.headers, REQUEST_ID_HEADER),
            "user_agent": environ.get("HTTP_USER_AGENT", "-"),
        }
        self.access_log.info("request", extra={"fields": fields})


def _header(headers, name: str) -> str | None:
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if key.lower() == name.lower():
            return value
    return None
