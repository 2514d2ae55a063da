#!/usr/bin/env bash
# The webhook receiver (flows/webhooks.py) under gunicorn on 127.0.0.1: signed GitHub pushes and
# Azure Event Grid blob events become Prefect events on the local Prefect server.
#
#   local/webhooks.sh up|down|status
#
# Needs the Prefect server (local/prefect.sh): each sender's secret lives in a Prefect `Secret`
# block, created here with a random value when missing: GitHub's shared secret
# (AISHIP_WEBHOOK_SECRET_BLOCK, default aiship-webhook-secret), Event Grid's key
# (AISHIP_EVENTGRID_KEY_BLOCK, default aiship-eventgrid-key) and the Azure Repos service hook's
# password (AISHIP_AZURE_REPOS_SECRET_BLOCK, default aiship-azure-repos-secret). Copies go to
# $PART_DIR/secret, $PART_DIR/eventgrid-key and $PART_DIR/azure-repos-secret (mode 600): the local git repository's
# post-receive hook, which runs outside Prefect, signs its deliveries with the first.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${AISHIP_WEBHOOK_PORT:-8700}"
PREFECT_PORT="${AISHIP_PREFECT_PORT:-4200}"
BLOCK="${AISHIP_WEBHOOK_SECRET_BLOCK:-aiship-webhook-secret}"
AZURE_REPOS_BLOCK="${AISHIP_AZURE_REPOS_SECRET_BLOCK:-aiship-azure-repos-secret}"
EVENTGRID_BLOCK="${AISHIP_EVENTGRID_KEY_BLOCK:-aiship-eventgrid-key}"
WORKERS="${AISHIP_WEBHOOK_WORKERS:-2}"
PIDFILE="$PART_DIR/gunicorn.pid"
SECRET_FILE="$PART_DIR/secret"
ADDRESS="http://127.0.0.1:$PORT"

export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
# Whatever the Prefect client writes (profiles, caches) stays in the state folder.
export PREFECT_HOME="$PART_DIR/prefect-home"
PREFECT_AUTH_FILE="$STATE_DIR/prefect/api-auth-string"
unset PREFECT_PROFILE
# The receiver keeps its delivery log (replay protection) under the same state folder.
export AISHIP_STATE_DIR="$STATE_DIR"

gunicorn_version() { python -c 'import importlib.metadata as m; print("gunicorn", m.version("gunicorn"))' 2>/dev/null || echo -; }

prefect_up() { python -c 'import httpx,sys; sys.exit(httpx.get(sys.argv[1], timeout=2).status_code != 200)' "$PREFECT_API_URL/health"; }

healthy() { python -c 'import httpx,sys; sys.exit(httpx.get(sys.argv[1], timeout=2).status_code != 200)' "$ADDRESS/healthz"; }

# wait_started: like wait_ready, but a gunicorn that exits (the app failed to boot) fails at once,
# with the app's own error line instead of a 60 s wait.
wait_started() {
    local deadline=$((SECONDS + 60)) why
    until healthy >/dev/null 2>&1; do
        if [[ -z "$(pid_of "$PIDFILE")" ]]; then
            rm -f "$PIDFILE"
            why="$(grep -hE '^[A-Za-z_.]+(Error|Exception): ' "$PART_DIR/gunicorn.log" | tail -1 | cut -c1-300)"
            die "gunicorn exited while starting flows.webhooks:create_app() (${why:-see $PART_DIR/gunicorn.log}); fix that and run up again"
        fi
        if ((SECONDS >= deadline)); then
            stop_pidfile "$PIDFILE"
            die "the webhook receiver on 127.0.0.1:$PORT did not answer /healthz within 60s; see $PART_DIR/gunicorn.log"
        fi
        sleep 0.25
    done
}

# ensure_secret BLOCK FILE: creates the Secret block with a random value when missing (an existing
# one is kept: the senders are configured with it), then writes its copy to FILE, mode 600.
ensure_secret() {
    local block="$1" file="$2" tmp="$2.tmp.$$"
    python - "$block" "$tmp" >"$PART_DIR/secret.log" 2>&1 <<'PY' || { rm -f "$tmp"; die "could not read or create the Prefect Secret block $block (log: $PART_DIR/secret.log); check the Prefect server at $PREFECT_API_URL"; }
import os, secrets, sys
from prefect.blocks.system import Secret

name, out = sys.argv[1:]
try:
    value = str(Secret.load(name).get())
except ValueError:  # Prefect's "Unable to find block document named ..."
    value = secrets.token_urlsafe(32)
    Secret(value=value).save(name, overwrite=False)
    print(f"created Prefect Secret block {name}")
if not value:
    sys.exit(f"the Prefect Secret block {name} is empty")
# Written to a file created with mode 600, not through stdout, which Prefect may also write to.
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(value)
PY
    mv "$tmp" "$file"
}

part_up() {
    if [[ -n "$(pid_of "$PIDFILE")" ]]; then log "already running (pid $(pid_of "$PIDFILE"))"; return 0; fi
    require_port_free "$PORT" AISHIP_WEBHOOK_PORT
    command -v gunicorn >/dev/null || die "gunicorn is missing from $VENV_BIN; run .venv/bin/pip install -e '.[test]'"
    prefect_up >/dev/null 2>&1 || die "the Prefect server at $PREFECT_API_URL does not answer; start it first with \`aiship local up prefect\`"
    # The receiver reads blocks and posts events with the server's API credential (local/prefect.sh
    # writes it; one already in the environment wins).
    if [[ -z "${PREFECT_API_AUTH_STRING:-}" ]]; then
        [[ -s "$PREFECT_AUTH_FILE" ]] || die "$PREFECT_AUTH_FILE is missing; start the Prefect part first with \`aiship local up prefect\`"
        PREFECT_API_AUTH_STRING="$(cat "$PREFECT_AUTH_FILE")"
    fi
    export PREFECT_API_AUTH_STRING
    ensure_secret "$BLOCK" "$SECRET_FILE"
    ensure_secret "$AZURE_REPOS_BLOCK" "$PART_DIR/azure-repos-secret"
    ensure_secret "$EVENTGRID_BLOCK" "$PART_DIR/eventgrid-key"
    # --workers 2         two requests at once on 2 cores; the delivery log is shared through SQLite.
    # no --access-logfile access logs would record query strings (a sender may put a key there, which
    #                     is refused); the app logs JSON lines without them.
    # --timeout 30        a request waits at most a few seconds for the Prefect server (then 503).
    # --no-control-socket gunicorn 23+ would share one socket in ~/.gunicorn with every other gunicorn.
    start_bg gunicorn gunicorn --chdir "$AISHIP_ROOT" --bind "127.0.0.1:$PORT" --workers "$WORKERS" \
        --timeout 30 --graceful-timeout 10 --error-logfile - --log-level info --no-control-socket \
        'flows.webhooks:create_app()'
    wait_started
    log "ready at $ADDRESS (POST /github, POST /azure-repos, POST|OPTIONS /eventgrid; secrets in Prefect blocks $BLOCK, $EVENTGRID_BLOCK, $AZURE_REPOS_BLOCK)"
}

part_down() { stop_pidfile "$PIDFILE"; }

part_status() { pidfile_status "$PIDFILE" "$ADDRESS" "$(gunicorn_version)"; }

dispatch "$@"
