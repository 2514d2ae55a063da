# Shared helpers for the scripts in local/. Sourced, never run.
#
# Every part script is `local/<part>.sh up|down|status` and follows one contract:
#   up      installs what is missing, starts the part on 127.0.0.1, waits until it really answers,
#           and is idempotent (a part already running under our pid file is reused as it is);
#   down    stops only the pids this script wrote under the state folder;
#   status  prints one tab-separated line: state, address, pid, version.
# Errors are one line on stderr, naming the cause and the next step, with exit code 1.
set -euo pipefail

AISHIP_ROOT="${AISHIP_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
STATE_DIR="${AISHIP_STATE_DIR:-$AISHIP_ROOT/.aiship}"
CACHE_DIR="${AISHIP_CACHE_DIR:-/var/cache/aiship}"
# The project's virtualenv when there is one, so that pip-installed servers land beside aiship.
VENV_BIN="${AISHIP_VENV_BIN:-$AISHIP_ROOT/.venv/bin}"
if [[ -d "$VENV_BIN" ]]; then PATH="$VENV_BIN:$PATH"; fi
export PATH
PART="${PART:-$(basename "${0%.sh}")}"
PART_DIR="$STATE_DIR/$PART"
mkdir -p "$PART_DIR"

die() { echo "aiship local $PART: $*" >&2; exit 1; }
log() { echo "[$PART] $*" >&2; }

# apt_install PKG...: installs the Debian packages that are missing. AISHIP_<PART>_APT_PACKAGES
# overrides a part's list (tests use it to simulate a failing install).
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    # `aiship local up` starts parts side by side: one apt-get at a time (the lock is freed when
    # this script exits, or below once the install is done).
    local lock
    exec {lock}>"${AISHIP_APT_LOCK:-/var/lock/aiship-apt.lock}"
    flock "$lock"
    log "installing ${missing[*]} with apt-get"
    local out="$PART_DIR/install.log"
    if [[ ! -f /var/lib/apt/lists/.aiship-updated ]] || ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq >"$out" 2>&1 || true
        touch /var/lib/apt/lists/.aiship-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >>"$out" 2>&1 \
        || die "apt-get install ${missing[*]} failed (log: $out); check the package name and that the Debian archive is reachable"
    flock -u "$lock"
    exec {lock}>&-
}

# pid_of FILE: prints the pid in FILE when that process still lives, else nothing.
pid_of() {
    local file="$1" pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# port_owner PORT: prints "pid/name" of whatever listens on 127.0.0.1:PORT (or 0.0.0.0), if any.
port_owner() {
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\2\/\1/p' | head -1
}

# require_port_free PORT VAR: refuses to start when another program holds the port.
require_port_free() {
    local port="$1" var="$2" owner
    if [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
        owner="$(port_owner "$port")"
        die "port $port on 127.0.0.1 is taken by another program (${owner:-unknown}); stop it or choose another port with $var"
    fi
}

# Each log is a ring of LOG_FILES files of at most LOG_SIZE (apache2-utils' rotatelogs): NAME.log.r,
# NAME.log.r.1, ...; NAME.log is a hard link to the one being written.
LOG_SIZE="${AISHIP_LOG_SIZE:-20M}"
LOG_FILES="${AISHIP_LOG_FILES:-3}"

# start_bg NAME CMD...: starts CMD detached, logs to $PART_DIR/NAME.log (rotated), pid in $PART_DIR/NAME.pid.
start_bg() {
    local name="$1"; shift
    command -v rotatelogs >/dev/null || apt_install apache2-utils
    log "starting $name"
    rm -f "$PART_DIR/$name.log" "$PART_DIR/$name.log.r"*  # this start's log begins empty, as before
    # $! is CMD's pid (the last process started); rotatelogs ends when CMD's output closes. It runs
    # in a session of its own, like CMD, so a signal to the caller's process group cannot take the
    # log away from CMD; its own stdout and stderr go nowhere (inherited, they would keep the
    # caller's pipes open for good).
    setsid nohup "$@" > >(exec setsid rotatelogs -f -n "$LOG_FILES" -L "$PART_DIR/$name.log" "$PART_DIR/$name.log.r" "$LOG_SIZE" \
        >/dev/null 2>&1) 2>&1 </dev/null &
    echo $! >"$PART_DIR/$name.pid"
}

# stop_pidfile FILE: stops the process written in FILE (TERM, then KILL after 20 s).
stop_pidfile() {
    local file="$1" pid i
    pid="$(pid_of "$file")"
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

# wait_ready SECONDS WHAT CMD...: runs CMD until it succeeds. On timeout, stops what this part
# started (so nothing half-started is left running) and fails naming the log to read.
wait_ready() {
    local timeout="$1" what="$2"; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            local f
            for f in "$PART_DIR"/*.pid; do [[ -e "$f" ]] && stop_pidfile "$f"; done
            die "$what did not become ready within ${timeout}s; see the logs in $PART_DIR"
        fi
        sleep 0.25
    done
}

# status_line STATE ADDRESS PID VERSION
status_line() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "${3:--}" "${4:--}"; }

# pidfile_status PIDFILE ADDRESS VERSION: running while the pid in PIDFILE lives, else stopped.
pidfile_status() {
    local pid
    pid="$(pid_of "$1")"
    if [[ -n "$pid" ]]; then status_line running "$2" "$pid" "$3"
    else status_line stopped "$2" "" "$3"; fi
}

# dispatch "$@": calls part_up, part_down or part_status.
dispatch() {
    case "${1:-}" in
        up) part_up ;;
        down) part_down ;;
        status) part_status ;;
        gc) if declare -F part_gc >/dev/null; then part_gc; else echo "usage: $0 up|down|status" >&2; exit 2; fi ;;
        *) echo "usage: $0 up|down|status$(declare -F part_gc >/dev/null && echo '|gc')" >&2; exit 2 ;;
    esac
}
