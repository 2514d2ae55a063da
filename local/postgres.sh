#!/usr/bin/env bash
# PostgreSQL (Debian's `postgresql`) on 127.0.0.1, the Prefect server's database. SQLite, which the
# server uses by default, lets one writer in at a time and answers 503 "database is locked" to the
# others: concurrent deliveries, the worker and the UI all write at once.
#
#   up      installs postgresql when missing, creates the cluster (data folder under the state
#           folder) and the `prefect` database on first use, starts the server, waits until it
#           accepts the credential
#   down    fast shutdown (open connections are closed, nothing committed is lost)
#   status  running|stopped, address, pid, version
#
# The credential is written once to $PART_DIR/pgpass (libpq's password file format, mode 600):
# local/prefect.sh reads it there; it is never on a command line or in a log.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${AISHIP_POSTGRES_PORT:-15432}"
DB_USER=aiship
DB_NAME=prefect
DATA="$PART_DIR/data"
SOCKETS="$PART_DIR/run"
SERVER_PID="$PART_DIR/server.pid"
PGPASS="$PART_DIR/pgpass"   # local/prefect.sh reads it too
ADDRESS="postgresql://127.0.0.1:$PORT/$DB_NAME"
export PGPASSFILE="$PGPASS"

# pg_bin: the newest installed major version's programs (Debian keeps them off PATH).
pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [[ -x "$dir/postgres" ]] || die "no PostgreSQL server under /usr/lib/postgresql; install the postgresql package"
    echo "$dir"
}

# "${AS_POSTGRES[@]}" CMD...: PostgreSQL refuses to run as root; setpriv execs CMD as the package's
# `postgres` user (no child process in between, so the pid written is the server's own). An array,
# not a function, so that start_bg (which runs its command through nohup) can take it too.
AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups)

pg_version() { "$(pg_bin)/postgres" --version 2>/dev/null | awk '{print "postgresql", $3}' || echo -; }

# credential: the password for $DB_USER, made once (hex: nothing to escape in a URL).
credential() {
    if [[ ! -s "$PGPASS" ]]; then
        (umask 077 && printf '127.0.0.1:%s:*:%s:%s\n' "$PORT" "$DB_USER" \
            "$(python3 -c 'import secrets; print(secrets.token_hex(24))')" >"$PGPASS.tmp")
        mv "$PGPASS.tmp" "$PGPASS"
    fi
    chmod 600 "$PGPASS"
    # The file names the port it was made for; a new AISHIP_POSTGRES_PORT keeps the same password.
    sed -i "s/^127\.0\.0\.1:[0-9]*:/127.0.0.1:$PORT:/" "$PGPASS"
    cut -d: -f5- "$PGPASS"
}

# init_cluster: initdb on first use, with the password from credential() for TCP connections
# (scram-sha-256) and none at all over the socket, which only the postgres user can open.
init_cluster() {
    local bin="$1" major
    if [[ -f "$DATA/PG_VERSION" ]]; then
        major="$(basename "$(dirname "$bin")")"
        [[ "$(cat "$DATA/PG_VERSION")" == "$major" ]] || die "the data folder $DATA was made by PostgreSQL $(cat "$DATA/PG_VERSION"), the installed server is $major; dump and restore it (pg_upgrade), or remove the folder to start empty"
        return 0
    fi
    log "creating the cluster in $DATA"
    rm -rf "$DATA.tmp" && mkdir -p "$DATA.tmp" && chown postgres:postgres "$DATA.tmp"
    "${AS_POSTGRES[@]}" test -w "$DATA.tmp" \
        || die "the postgres user cannot write $DATA.tmp; make every folder above the state folder $STATE_DIR searchable (chmod o+x) or choose another one with AISHIP_STATE_DIR"
    # initdb reads the password from a file: one only the postgres user can read, gone right after.
    local pwfile="$DATA.tmp/.pw"
    (umask 077 && credential >"$pwfile") && chown postgres:postgres "$pwfile"
    "${AS_POSTGRES[@]}" "$bin/initdb" -D "$DATA.tmp/pgdata" -U "$DB_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-host=scram-sha-256 --auth-local=peer >"$PART_DIR/initdb.log" 2>&1 \
        || { rm -rf "$DATA.tmp"; die "initdb failed (log: $PART_DIR/initdb.log)"; }
    rm -f "$pwfile"
    mv "$DATA.tmp/pgdata" "$DATA" && rm -rf "$DATA.tmp"
}

accepts_credential() { "$1/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -w -tAc 'select 1' | grep -qx 1; }

ensure_database() {
    local bin="$1"
    "$bin/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -w -tAc \
        "select 1 from pg_database where datname = '$DB_NAME'" | grep -qx 1 && return 0
    "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -w "$DB_NAME" >>"$PART_DIR/initdb.log" 2>&1 \
        || die "could not create the database $DB_NAME (log: $PART_DIR/initdb.log)"
    log "created the database $DB_NAME"
}

part_up() {
    if [[ -n "$(pid_of "$SERVER_PID")" ]]; then log "already running (pid $(pid_of "$SERVER_PID"))"; return 0; fi
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
    command -v setpriv >/dev/null || apt_install util-linux
    require_port_free "$PORT" AISHIP_POSTGRES_PORT
    local bin
    bin="$(pg_bin)"
    [[ -f "$DATA/PG_VERSION" && ! -s "$PGPASS" ]] && die "the cluster in $DATA exists but its credential file $PGPASS is gone; restore it, or remove $DATA to start with an empty database"
    init_cluster "$bin"
    mkdir -p "$SOCKETS" && chown postgres:postgres "$SOCKETS"
    # The socket lives in the state folder, not /var/run/postgresql (which a Debian install of the
    # machine's own cluster uses); the settings on the command line win over postgresql.conf.
    start_bg server "${AS_POSTGRES[@]}" "$bin/postgres" -D "$DATA" -p "$PORT" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories="$SOCKETS" -c logging_collector=off
    wait_ready 60 "PostgreSQL on 127.0.0.1:$PORT" accepts_credential "$bin"
    ensure_database "$bin"
    log "ready at $ADDRESS"
}

# part_down: SIGINT is PostgreSQL's fast shutdown; SIGTERM (stop_pidfile's) would wait for every
# client to disconnect first.
part_down() {
    local pid i
    pid="$(pid_of "$SERVER_PID")"
    if [[ -n "$pid" ]]; then
        kill -INT "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    stop_pidfile "$SERVER_PID"
}

part_status() { pidfile_status "$SERVER_PID" "$ADDRESS" "$(pg_version)"; }

dispatch "$@"
