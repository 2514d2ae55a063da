"""Prometheus metrics, correct across gunicorn workers (prometheus-client's multiprocess mode).

Multiprocess mode is chosen by prometheus-client when it is first imported, from the environment
variable PROMETHEUS_MULTIPROC_DIR; app/gunicorn.conf.py sets it in the master before any worker
imports the app, and marks dead workers in its child_exit hook.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess, values)

EXTENSION = "aiship_metrics"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetricsConfigError(RuntimeError):
    """Raised when the metrics directory is unusable or multiprocess mode was chosen too late."""


class AppMetrics:
    """The app's metric objects; one set per app, each in its own registry."""

    def __init__(self, multiprocess_dir: str | None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("aiship_app_requests", "HTTP requests by endpoint, method and status.",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("aiship_app_request_duration_seconds", "Request latency.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("aiship_app_predictions", "Rows predicted.", ["model_version"],
                                   registry=self.registry)
        self.model_info = Gauge("aiship_app_model_info", "The model this process serves (value 1).",
                                ["name", "version", "sha256"], registry=self.registry,
                                multiprocess_mode="max")

    def render(self) -> bytes:
        """Prometheus text of this process, or of every worker in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


def _multiprocess_dir(configured: str | None) -> str | None:
    env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = configured or env
    if path is None:
        return None
    if not os.path.isdir(path) or not os.access(path, os.W_OK):
        raise MetricsConfigError(f"metrics directory {path} is not a writable directory; create it "
                                 "(an emptyDir in Kubernetes) or unset AISHIP_APP_METRICS_DIR")
    if env != path or values.ValueClass.__name__ != "MmapedValue":
        raise MetricsConfigError(f"metrics directory {path} is configured but prometheus-client was "
                                 f"imported with PROMETHEUS_MULTIPROC_DIR={env!r}; set that variable "
                                 "to the same folder before the process starts (gunicorn.conf.py does)")
    return path


def init_app(app: Flask) -> AppMetrics:
    """Count every request by its URL rule (never the raw path: bounded label values)."""
    metrics = AppMetrics(_multiprocess_dir(app.config.get("METRICS_DIR")))
    app.extensions[EXTENSION] = metrics

    @app.before_request
    def _start_timer() -> None:
        g.aiship_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        started = g.get("aiship_started")
        if started is not None:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    return metrics


def metrics_response(metrics: AppMetrics) -> Response:
    """The /metrics answer."""
    return Response(metrics.render(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})


def mark_model(app: Flask) -> None:
    """Set aiship_app_model_info for the model this process serves (again in each forked worker:
    prometheus-client starts a fork's values afresh, in files of its own pid)."""
    model = app.extensions["aiship_model"]
    app.extensions[EXTENSION].model_info.labels(model.name, str(model.version), model.sha256).set(1)


def child_exit(server, worker) -> None:  # gunicorn hook signature
    """Gunicorn child_exit hook: drop a dead worker's live gauges."""
    multiprocess.mark_process_dead(worker.pid)
