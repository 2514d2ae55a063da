#!/usr/bin/env bash
# An S3-compatible server on 127.0.0.1: moto's server mode (PyPI `moto[server]`), in the venv.
#
#   local/s3.sh up|down|status
#
# moto keeps every bucket and object in memory: `down` (or a crash) loses them. That suits a
# test stand-in; the Azure and folder stores are the ones that keep models across restarts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Overridable so a test can simulate an install that fails (a package name PyPI does not know).
PIP_PACKAGE="${AISHIP_S3_PIP_PACKAGE:-moto[server]>=5,<6}"
PORT="${AISHIP_S3_PORT:-9000}"
PIDFILE="$PART_DIR/moto.pid"
ADDRESS="http://127.0.0.1:$PORT"
export AISHIP_S3_ENDPOINT="$ADDRESS"

install_moto() {
    # An overridden package spec is always installed, so that the failing-install test is real.
    [[ -z "${AISHIP_S3_PIP_PACKAGE:-}" ]] && command -v moto_server >/dev/null && return 0
    [[ -x "$VENV_BIN/pip" ]] || die "no virtualenv at $VENV_BIN; create it with python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"
    log "installing $PIP_PACKAGE with pip into $VENV_BIN/.."
    "$VENV_BIN/pip" install --quiet "$PIP_PACKAGE" >"$PART_DIR/install.log" 2>&1 \
        || die "pip install '$PIP_PACKAGE' failed (log: $PART_DIR/install.log); check the package spec (AISHIP_S3_PIP_PACKAGE) and that PyPI is reachable"
    command -v moto_server >/dev/null \
        || die "pip installed '$PIP_PACKAGE' but there is no moto_server in $VENV_BIN; install moto[server]"
}

# port_open: the cheap first check (no python start-up) before the real one.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# ready: a bucket can be created (and is removed again) with boto3. The credentials are dummies:
# moto accepts any key pair.
ready() {
    python - <<'PY'
import os, uuid
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["AISHIP_S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="aiship", aws_secret_access_key="aiship-local",
                  config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
name = f"aiship-ready-{uuid.uuid4().hex[:12]}"
s3.create_bucket(Bucket=name)
s3.delete_bucket(Bucket=name)
PY
}

moto_version() { "$VENV_BIN/python" -c 'import importlib.metadata as m; print("moto", m.version("moto"))' 2>/dev/null || echo -; }

part_up() {
    if [[ -n "$(pid_of "$PIDFILE")" ]]; then log "already running (pid $(pid_of "$PIDFILE"))"; return 0; fi
    require_port_free "$PORT" AISHIP_S3_PORT
    install_moto
    start_bg moto moto_server -H 127.0.0.1 -p "$PORT"
    wait_ready 60 "moto_server on 127.0.0.1:$PORT" port_open
    wait_ready 60 "moto_server on 127.0.0.1:$PORT" ready
    log "ready at $ADDRESS"
}

part_down() { stop_pidfile "$PIDFILE"; }

part_status() { pidfile_status "$PIDFILE" "$ADDRESS" "$(moto_version)"; }

dispatch "$@"
