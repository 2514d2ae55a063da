#!/usr/bin/env bash
# The Docker engine: Debian's docker.io (dockerd 20.10) on the default unix socket.
#   up      installs docker.io if missing, starts dockerd, waits until the API answers _ping;
#           a dockerd that already answers on the socket but is not ours is reused (pid `external`)
#   down    stops dockerd only when this script started it (its managed containerd stops with it)
#   status  running|stopped, socket, pid, server version
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOCKET=/var/run/docker.sock
PIDFILE="$PART_DIR/dockerd.pid"

# ping: the same call as the Docker SDK's ping() (GET /_ping), without starting a Python.
ping() { curl -fsS --max-time 2 --unix-socket "$SOCKET" http://localhost/_ping >/dev/null 2>&1; }

# server_version: the engine's version; the top-level "Version" of /version is the one just
# before "ApiVersion" (the per-component ones are nested under "Components").
server_version() {
    curl -fsS --max-time 2 --unix-socket "$SOCKET" http://localhost/version 2>/dev/null \
        | grep -o '"Version":"[^"]*","ApiVersion"' | head -1 | cut -d'"' -f4
}

# sdk_ping: the readiness test named by the contract, through the project's Docker SDK when the
# venv exists (the docker part comes first, so on a bare machine curl's _ping is what we have).
sdk_ping() {
    if [[ -x "$VENV_BIN/python" ]] && "$VENV_BIN/python" -c 'import docker' 2>/dev/null; then
        "$VENV_BIN/python" -c 'import docker; docker.DockerClient(base_url="unix://'"$SOCKET"'").ping()'
    else
        ping
    fi
}

part_up() {
    if [[ -n "$(pid_of "$PIDFILE")" ]]; then
        wait_ready 30 "dockerd (pid $(pid_of "$PIDFILE"))" ping
        log "dockerd already running (pid $(pid_of "$PIDFILE"))"
        return 0
    fi
    if ping; then
        log "a dockerd not started by aiship answers on $SOCKET; reusing it"
        return 0
    fi
    if pgrep -x dockerd >/dev/null; then
        die "a dockerd (pid $(pgrep -x dockerd | head -1)) runs but does not answer on $SOCKET; stop it or fix its --host"
    fi
    # curl: ping and server_version above ask dockerd over its socket with it.
    apt_install ${AISHIP_DOCKER_APT_PACKAGES:-docker.io curl}
    [[ -x /usr/sbin/dockerd ]] || die "/usr/sbin/dockerd is missing after installing docker.io; reinstall it with apt-get install --reinstall docker.io"
    # A dead dockerd leaves its own pid file behind; dockerd refuses to start while it exists.
    rm -f "$PART_DIR/dockerd-own.pid"
    # --host: the default socket, where the Docker SDK, the CLI and the kubelet's dockershim look;
    #   explicit so the engine never listens on TCP (nothing here should reach it over the network).
    # --pidfile: dockerd's own pid file, under our state folder, not /var/run/docker.pid, so a
    #   stale file from another installation cannot block the start; start_bg writes dockerd.pid.
    # --data-root: /var/lib/docker, outside the checkout, so images (base image, app layers)
    #   survive across checkouts and CI runs on the same machine.
    # --storage-driver overlay2: what these machines support; explicit so a broken overlayfs fails
    #   loudly instead of silently falling back to vfs (a full copy of every layer).
    # --exec-opt native.cgroupdriver=cgroupfs: cgroup v1 without systemd; the kubelet is started
    #   with --cgroup-driver=cgroupfs and the two must agree.
    # --log-level info: the default, explicit so the log in the state folder is predictable.
    start_bg dockerd /usr/sbin/dockerd \
        --host "unix://$SOCKET" \
        --pidfile "$PART_DIR/dockerd-own.pid" \
        --data-root /var/lib/docker \
        --storage-driver overlay2 \
        --exec-opt native.cgroupdriver=cgroupfs \
        --log-level info
    wait_ready 60 "dockerd" ping
    wait_ready 30 "dockerd (Docker SDK ping)" sdk_ping
    log "dockerd ready (pid $(pid_of "$PIDFILE"), server $(server_version))"
}

part_down() {
    if [[ -z "$(pid_of "$PIDFILE")" ]]; then
        rm -f "$PIDFILE"
        ping && log "dockerd on $SOCKET was not started by aiship; leaving it running"
        return 0
    fi
    stop_pidfile "$PIDFILE"
    rm -f "$PART_DIR/dockerd-own.pid"
}

part_status() {
    local pid
    pid="$(pid_of "$PIDFILE")"
    if ping; then
        status_line running "unix://$SOCKET" "${pid:-external}" "$(server_version)"
    else
        status_line stopped "unix://$SOCKET" "${pid:--}" -
    fi
}

dispatch "$@"
