#!/usr/bin/env bash
# The Prefect server on 127.0.0.1 with API authentication on, its database in local/postgres.sh's
# PostgreSQL, a process work pool `aiship-local` and one worker for it.
#
#   local/prefect.sh up|down|status
#
# The `prefect` command comes from the project's venv (lib.sh puts it first on PATH); the worker
# runs flows with that same venv's python.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${AISHIP_PREFECT_PORT:-4200}"
POOL="aiship-local"
WORKER_NAME="aiship-local-worker"
SERVER_PID="$PART_DIR/server.pid"
WORKER_PID="$PART_DIR/worker.pid"
ADDRESS="http://127.0.0.1:$PORT"
KEY_FILE="$PART_DIR/encryption.key"
AUTH_FILE="$PART_DIR/api-auth-string"   # flows.settings.Settings.prefect_auth_file reads it too

# Everything else Prefect writes (profiles, local result storage, leases) stays in the state folder.
export PREFECT_HOME="$PART_DIR/home"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_API_URL="$ADDRESS/api"
# The worker asks for scheduled runs twice a second instead of every 10 s: an event's run then waits
# 0.25 s on average to be picked up, beside the ~1.8 s its new process takes to import Prefect and
# start (bench/triggers.py); heartbeats every 10 s keep the worker's ONLINE status fresh.
export PREFECT_WORKER_QUERY_SECONDS=0.5
export PREFECT_WORKER_HEARTBEAT_SECONDS=10
# A flow run's calls to the server retry 7 times (2 + 4 + ... + 128 s, about 4 min) instead of 5
# (about 1 min): a server restart, which takes up to a minute or two on a busy machine, is waited
# out instead of failing a delivery that has already rolled out, or leaving its run Running.
export PREFECT_CLIENT_MAX_RETRIES=7
# Concurrency slots (the deployments' limits and aiship's per-environment locks) are held by leases.
# The default keeps leases in the server's memory: a server restart then forgets them and a slot
# held at that moment stays taken for good. On disk (under PREFECT_HOME) they survive restarts and
# the server's lease reaper frees the slots of runs that died.
export PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem
# Prefect keeps every flow run (its task runs, logs, artifacts) until told otherwise: about 0.5 MiB
# of database per delivery (bench/disk.py). The vacuum service deletes, every hour, the runs that
# ended more than AISHIP_PREFECT_RETENTION_DAYS ago, so the database levels off instead of growing.
export PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs
export PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD=$(( ${AISHIP_PREFECT_RETENTION_DAYS:-30} * 86400 ))
unset PREFECT_PROFILE

prefect_version() { python -c 'import importlib.metadata as m; print("prefect", m.version("prefect"))' 2>/dev/null || echo -; }

# The key that encrypts block secrets in the database. Without it, Prefect keeps its key in the
# same database as the secrets it protects. Generated once; mode 600; only the server sees it.
encryption_key() {
    if [[ ! -s "$KEY_FILE" ]]; then
        (umask 077 && python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' >"$KEY_FILE.tmp")
        mv "$KEY_FILE.tmp" "$KEY_FILE"
    fi
    chmod 600 "$KEY_FILE"
    cat "$KEY_FILE"
}

# api_credential: the server's API credential (`aiship:<random>`), which every client sends as
# HTTP basic auth (Prefect's server.api.auth_string). Generated once; mode 600; exported for the
# server, the worker and the flow runs it starts, never passed on a command line.
api_credential() {
    if [[ ! -s "$AUTH_FILE" ]]; then
        (umask 077 && python -c 'import secrets; print("aiship:" + secrets.token_urlsafe(32))' >"$AUTH_FILE.tmp")
        mv "$AUTH_FILE.tmp" "$AUTH_FILE"
    fi
    chmod 600 "$AUTH_FILE"
    PREFECT_API_AUTH_STRING="$(cat "$AUTH_FILE")"
    export PREFECT_API_AUTH_STRING
}

# api_curl ARGS...: curl with the API credential, handed over on stdin (not visible in `ps`).
api_curl() { printf 'user = "%s"\n' "$PREFECT_API_AUTH_STRING" | curl -K - "$@"; }

# database_url: the server's connection URL, from the credential local/postgres.sh wrote (exported
# to the server alone; Prefect keeps the setting as a secret and never logs it).
database_url() {
    local pgpass="$STATE_DIR/postgres/pgpass" pg_port user password
    [[ -s "$pgpass" ]] || die "no database credential at $pgpass; start PostgreSQL first: aiship local up postgres"
    IFS=: read -r _ pg_port _ user password <"$pgpass"
    echo "postgresql+asyncpg://$user:$password@127.0.0.1:$pg_port/prefect"
}

healthy() { curl -fsS --max-time 2 "$ADDRESS/api/health"; }  # /api/health needs no credential

# worker_online: the server lists our worker as ONLINE in the pool (it has sent a heartbeat).
# curl and grep rather than python: this runs every 0.25 s while the worker itself starts.
worker_online() {
    api_curl -fsS --max-time 3 -X POST -H 'content-type: application/json' \
        -d '{"workers": {"status": {"any_": ["ONLINE"]}}}' "$ADDRESS/api/work_pools/$POOL/workers/filter" \
        | grep -q "\"name\":\"$WORKER_NAME\""
}

# ensure_pool: creates the process work pool when it is missing; an existing one is left as it
# is (its base job template may have been tuned since).
ensure_pool() {
    # Asked first with curl: a python start-up costs seconds on a busy 2-core machine.
    api_curl -fsS --max-time 5 -o /dev/null "$ADDRESS/api/work_pools/$POOL" && return 0
    python - "$POOL" <<'PY' >>"$PART_DIR/pool.log" 2>&1 || die "could not create the work pool $POOL (log: $PART_DIR/pool.log); check the server log $PART_DIR/server.log"
import asyncio, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

async def main(name: str) -> None:
    async with get_client() as client:
        try:
            await client.read_work_pool(name)
            return
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        try:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            print(f"created work pool {name}")
        except ObjectAlreadyExists:
            pass

asyncio.run(main(sys.argv[1]))
PY
}

start_server() {
    [[ -n "$(pid_of "$SERVER_PID")" ]] && return 0
    require_port_free "$PORT" AISHIP_PREFECT_PORT
    command -v prefect >/dev/null || die "the prefect command is missing from $VENV_BIN; run .venv/bin/pip install -e '.[test]'"
    mkdir -p "$PREFECT_HOME"
    api_credential
    local url
    url="$(database_url)"
    PREFECT_SERVER_API_AUTH_STRING="$PREFECT_API_AUTH_STRING" PREFECT_SERVER_ENCRYPTION_KEY="$(encryption_key)" \
        PREFECT_SERVER_DATABASE_CONNECTION_URL="$url" start_bg server \
        prefect server start --host 127.0.0.1 --port "$PORT"
    wait_ready 120 "Prefect server on 127.0.0.1:$PORT" healthy
}

start_worker() {
    [[ -n "$(pid_of "$WORKER_PID")" ]] && return 0
    api_credential
    ensure_pool
    # Flows run from the repository root, where prefect.yaml and the flows package live.
    # On the local platform deliveries check out the app from the bare repository that
    # `git push local main` reaches (local/git.sh), unless AISHIP_GIT_REPOSITORY names another.
    # What runs killed with the last worker left behind (their runs are over by now, or old): gone
    # before new runs start. Best effort: a sweep that fails never keeps the worker from starting.
    (cd "$AISHIP_ROOT" && timeout 120 aiship sweep >"$PART_DIR/worker-sweep.log" 2>&1) || log "the sweep at worker start failed: see $PART_DIR/worker-sweep.log"
    (cd "$AISHIP_ROOT" && AISHIP_GIT_REPOSITORY="${AISHIP_GIT_REPOSITORY:-$STATE_DIR/git/aiship.git}" \
        start_bg worker prefect worker start --pool "$POOL" --name "$WORKER_NAME")
    wait_ready 60 "Prefect worker $WORKER_NAME" worker_online
}

part_up() {
    if [[ -n "$(pid_of "$SERVER_PID")" && -n "$(pid_of "$WORKER_PID")" ]]; then
        log "already running (server pid $(pid_of "$SERVER_PID"), worker pid $(pid_of "$WORKER_PID"))"; return 0
    fi
    command -v curl >/dev/null || apt_install curl  # the readiness checks above use it
    start_server
    start_worker
    log "ready at $ADDRESS (work pool $POOL, worker $WORKER_NAME)"
}

# stop_worker: `prefect worker start` turns SIGTERM into one SIGINT to itself and then can idle
# for minutes (seen with 3.9.1); a second SIGINT ends it. Then the usual TERM-then-KILL.
stop_worker() {
    local pid i sig
    pid="$(pid_of "$WORKER_PID")"
    if [[ -n "$pid" ]]; then
        for sig in TERM INT; do
            kill -"$sig" "$pid" 2>/dev/null || true
            for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break 2; sleep 0.1; done
        done
    fi
    stop_pidfile "$WORKER_PID"
}

part_down() {
    stop_worker
    stop_pidfile "$SERVER_PID"
}

part_status() {
    local pid
    pid="$(pid_of "$SERVER_PID")"
    # Running means server and worker: without the worker no deployment run ever starts.
    if [[ -n "$pid" && -n "$(pid_of "$WORKER_PID")" ]]; then status_line running "$ADDRESS" "$pid" "$(prefect_version)"
    else status_line stopped "$ADDRESS" "" "$(prefect_version)"; fi
}

dispatch "$@"
