"""The aiship inference app: a Flask application factory, served by gunicorn (app/gunicorn.conf.py).

Configuration: DEFAULTS, then environment variables prefixed AISHIP_APP_ (e.g. AISHIP_APP_MODEL_DIR),
then the mapping passed to create_app (tests). The model is loaded and warmed up once, here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

DEFAULTS = {
    "MODEL_DIR": "/opt/model",          # model file + manifest.json, baked into the image
    "MAX_ROWS": 1000,                   # rows per /predict request
    "MAX_CONTENT_LENGTH": 1 << 20,      # bytes per request body (Flask enforces it: 413)
    "GIT_SHA": "unknown",               # the image build sets AISHIP_APP_GIT_SHA
    "METRICS_DIR": None,                # prometheus multiprocess folder; PROMETHEUS_MULTIPROC_DIR
    "LOG_LEVEL": "INFO",
}


class AppConfigError(RuntimeError):
    """Raised when a configuration value has the wrong type or range."""


@dataclass
class Readiness:
    """What /readyz reports; ready only after the model loaded and one prediction succeeded."""

    ready: bool = False
    reason: str = "starting"


def _load_config(app: Flask, config: Mapping | None) -> None:
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env("AISHIP_APP")
    # from_prefixed_env parses values as JSON: a SHA of digits would become a number.
    if "AISHIP_APP_GIT_SHA" in os.environ:
        app.config["GIT_SHA"] = os.environ["AISHIP_APP_GIT_SHA"]
    if config:
        app.config.update(config)
    for key in ("MAX_ROWS", "MAX_CONTENT_LENGTH"):
        value = app.config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AppConfigError(f"{key} must be a positive integer, got {value!r}; fix "
                                 f"AISHIP_APP_{key}")
    app.config["GIT_SHA"] = str(app.config["GIT_SHA"])


def _load_model(app: Flask) -> None:
    from app.model import load_model  # sklearn's import is slow; keep `import app` cheap

    log = logging.getLogger("app")
    state = app.extensions["aiship_ready"]
    started = time.perf_counter()
    model = load_model(Path(app.config["MODEL_DIR"]))
    app.extensions["aiship_model"] = model
    state.reason = "warming up"
    model.warm_up()
    state.ready, state.reason = True, "ready"
    log.info("model loaded", extra={"fields": {
        "model": model.name, "version": model.version, "sha256": model.sha256,
        "seconds": round(time.perf_counter() - started, 3), "git_sha": app.config["GIT_SHA"]}})


def create_app(config: Mapping | None = None) -> Flask:
    """Build the app: configuration, logging, model (verified, warmed up), metrics, routes."""
    from app import errors, logs, metrics, routes

    app = Flask(__name__)
    _load_config(app, config)
    logs.configure_logging(app)
    app.extensions["aiship_ready"] = Readiness()
    logs.init_request_id(app)
    metrics.init_app(app)
    errors.register(app)
    app.register_blueprint(routes.bp)
    _load_model(app)
    metrics.mark_model(app)
    return app
