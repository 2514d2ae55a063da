"""gunicorn settings for the app: `gunicorn -c app/gunicorn.conf.py` (run from the folder holding app/).

Environment: AISHIP_APP_BIND (default 0.0.0.0:8080, the container's port), AISHIP_APP_WORKERS
(default 2), AISHIP_APP_THREADS (default 16 per worker), AISHIP_APP_TIMEOUT (default 30 s),
AISHIP_APP_METRICS_DIR or PROMETHEUS_MULTIPROC_DIR (default: a fresh folder under $TMPDIR).
"""

import os
import shutil
import tempfile

# prometheus-client picks multiprocess mode when first imported, from this variable: it must be
# set here, in the master, before any worker imports the app.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("AISHIP_APP_METRICS_DIR")
_created_metrics_dir = not _metrics_dir
if _created_metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="aiship-metrics-")
os.makedirs(_metrics_dir, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
os.environ["AISHIP_APP_METRICS_DIR"] = _metrics_dir

wsgi_app = "app:create_app()"
bind = os.environ.get("AISHIP_APP_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("AISHIP_APP_WORKERS", "2"))
# gthread, not sync: a sync worker is held by one client for as long as that client takes to send
# its request, so two slow clients stalled a pod until liveness killed it. A gthread worker waits
# for request bytes in its poller and hands a connection to a thread only when data arrives.
worker_class = "gthread"
threads = int(os.environ.get("AISHIP_APP_THREADS", "16"))
timeout = int(os.environ.get("AISHIP_APP_TIMEOUT", "30"))
# Kubernetes sends SIGTERM after the preStop pause; finish requests in flight before exiting.
graceful_timeout = int(os.environ.get("AISHIP_APP_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
max_requests = 0
# The master imports the app and loads the model once, then forks the workers: scikit-learn's
# import and the model's load cost their CPU once instead of once per worker (and again for each
# worker that replaces a dead one), and the workers share those pages. A bad model stops the master
# before any worker starts, which is what stops the container.
preload_app = True
worker_tmp_dir = os.environ.get("AISHIP_APP_WORKER_TMP_DIR") or None
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("AISHIP_APP_LOG_LEVEL", "info").lower()
logger_class = "app.gunicorn_logger.GunicornJsonLogger"


def on_starting(server):
    """Start from an empty metrics folder: files of a previous run would be counted again."""
    for name in os.listdir(_metrics_dir):
        path = os.path.join(_metrics_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.endswith(".db"):
            os.remove(path)


def post_fork(server, worker):
    """A forked worker writes metrics files of its own: mark there the model it serves."""
    from app.metrics import mark_model

    mark_model(server.app.wsgi())


def child_exit(server, worker):
    """Mark a dead worker in prometheus-client's multiprocess files."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder when this configuration created it."""
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
