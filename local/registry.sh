#!/usr/bin/env bash
# The container registry: Debian's docker-registry (distribution 2.8) on 127.0.0.1, with TLS from
# a CA made here and htpasswd authentication, because ACR requires both and the code under test
# must meet them locally too.
#   up      installs docker-registry/apache2-utils/openssl if missing, makes the CA, the server
#           certificate, the credentials and the config once (reused afterwards), installs the CA
#           for dockerd, starts the registry and waits until GET /v2/ answers 200 with the
#           credentials and 401 without
#   down    stops the registry this script started; data, certificates and credentials stay
#   status  running|stopped, https://127.0.0.1:PORT, pid, distribution version
# Files in $AISHIP_STATE_DIR/registry/: config.yml, ca.crt/ca.key, server.crt/server.key,
# htpasswd, credentials.json (mode 600: username, password, registry_url), data/ (the blobs).
# The blobs live in the state folder, not the cache: they are this checkout's pushed images,
# referenced by digest from its Prefect runs and cluster, and go together with its credentials;
# they are not a rebuildable artefact keyed by a version.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${AISHIP_REGISTRY_PORT:-5000}"
HOSTPORT="127.0.0.1:$PORT"
PIDFILE="$PART_DIR/registry.pid"
CREDS="$PART_DIR/credentials.json"
USERNAME=aiship

# make_ca_and_cert: a CA and a server certificate for 127.0.0.1 and localhost, signed by it.
# Kept when present, still valid for a day, and verifying against the CA (Go wants a SAN).
make_ca_and_cert() {
    local d="$PART_DIR"
    if [[ -f "$d/ca.crt" && -f "$d/server.crt" && -f "$d/server.key" ]] \
        && openssl x509 -in "$d/server.crt" -noout -checkend 86400 >/dev/null 2>&1 \
        && openssl verify -CAfile "$d/ca.crt" "$d/server.crt" >/dev/null 2>&1; then
        return 0
    fi
    log "generating a CA and a server certificate for 127.0.0.1"
    ( umask 077
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
          -subj "/CN=aiship local registry CA" -keyout "$d/ca.key" -out "$d/ca.crt" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
          -keyout "$d/server.key" -out "$d/server.csr"
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
          "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
          >"$d/server.ext"
      openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
          -days 825 -extfile "$d/server.ext" -out "$d/server.crt"
    ) >"$d/openssl.log" 2>&1 || die "openssl could not make the registry certificates (log: $d/openssl.log)"
    chmod 644 "$d/ca.crt" "$d/server.crt"
    rm -f "$d/server.csr" "$d/server.ext"
}

# make_credentials: a random password made once, kept in credentials.json (mode 600) and hashed
# with bcrypt into htpasswd (the only hash distribution accepts). Read back by aiship's Python
# code (flows/blocks.py) into the Prefect block `local-registry` and the cluster's imagePullSecret.
make_credentials() {
    local pw
    if [[ ! -s "$CREDS" ]]; then
        pw="$(openssl rand -hex 24)"
        ( umask 077
          printf '{"username": "%s", "password": "%s", "registry_url": "%s"}\n' \
              "$USERNAME" "$pw" "$HOSTPORT" >"$CREDS.tmp" )
        mv "$CREDS.tmp" "$CREDS"
        rm -f "$PART_DIR/htpasswd"
    fi
    chmod 600 "$CREDS"
    if [[ ! -s "$PART_DIR/htpasswd" ]]; then
        # -i reads the password from stdin, so it never shows in the process list.
        password | htpasswd -B -i -c "$PART_DIR/htpasswd" "$USERNAME" >/dev/null 2>&1 \
            || die "htpasswd could not write $PART_DIR/htpasswd; check that apache2-utils is installed"
        chmod 600 "$PART_DIR/htpasswd"
    fi
}

password() { sed -n 's/.*"password": *"\([^"]*\)".*/\1/p' "$CREDS"; }

write_config() {
    local secret
    secret="$(openssl rand -hex 16)"
    ( umask 077; cat >"$PART_DIR/config.yml" <<EOF
# Written by local/registry.sh; rewritten on every start.
version: 0.1
log:
  level: info
  fields:
    service: aiship-registry
storage:
  filesystem:
    rootdirectory: $PART_DIR/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $HOSTPORT
  secret: $secret
  tls:
    certificate: $PART_DIR/server.crt
    key: $PART_DIR/server.key
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: aiship-registry
    path: $PART_DIR/htpasswd
EOF
    )
    mkdir -p "$PART_DIR/data"
}

# trust_ca: dockerd reads /etc/docker/certs.d/HOST:PORT/ca.crt on each pull and push, no restart.
trust_ca() {
    local host
    for host in "$HOSTPORT" "localhost:$PORT"; do
        mkdir -p "/etc/docker/certs.d/$host"
        cmp -s "$PART_DIR/ca.crt" "/etc/docker/certs.d/$host/ca.crt" \
            || cp "$PART_DIR/ca.crt" "/etc/docker/certs.d/$host/ca.crt"
    done
}

# stop_packaged_instance: installing docker-registry may start Debian's own instance (init
# script, /etc/docker/registry/config.yml, :5000 on all interfaces). Stop it and keep it off at
# boot, but only that one: it is recognised by the package's own pid file and binary.
stop_packaged_instance() {
    local pid
    pid="$(pid_of /var/run/docker-registry.pid)"
    [[ -n "$pid" && "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == /usr/bin/docker-registry ]] || return 0
    log "stopping Debian's default docker-registry instance (pid $pid) and disabling it at boot"
    /etc/init.d/docker-registry stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    command -v update-rc.d >/dev/null && update-rc.d docker-registry disable >/dev/null 2>&1 || true
}

# http_code [USER]: the status of GET /v2/, verifying the server against our CA.
http_code() {
    if [[ -n "${1:-}" ]]; then
        printf 'user = "%s:%s"\n' "$USERNAME" "$(password)" \
            | curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$PART_DIR/ca.crt" -K - "https://$HOSTPORT/v2/"
    else
        curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$PART_DIR/ca.crt" "https://$HOSTPORT/v2/"
    fi
}

ready() { [[ "$(http_code auth)" == 200 && "$(http_code)" == 401 ]]; }

version() { docker-registry --version 2>/dev/null | awk '{print $3}'; }

part_up() {
    if [[ -n "$(pid_of "$PIDFILE")" ]]; then
        wait_ready 30 "registry (pid $(pid_of "$PIDFILE"))" ready
        log "registry already running (pid $(pid_of "$PIDFILE"))"
        return 0
    fi
    # shellcheck disable=SC2086  # the override is a space-separated package list
    apt_install ${AISHIP_REGISTRY_APT_PACKAGES:-docker-registry apache2-utils openssl curl}
    stop_packaged_instance
    require_port_free "$PORT" AISHIP_REGISTRY_PORT
    make_ca_and_cert
    make_credentials
    write_config
    trust_ca
    start_bg registry docker-registry serve "$PART_DIR/config.yml"
    wait_ready 30 "registry on https://$HOSTPORT" ready
    log "registry ready on https://$HOSTPORT (pid $(pid_of "$PIDFILE")); credentials in $CREDS"
}

part_down() { stop_pidfile "$PIDFILE"; }

# part_gc: frees the blobs no manifest refers to any more (the `collect-garbage` flow deletes
# manifests through the API). garbage-collect must not run beside a serving registry (an upload
# in progress could lose its blobs), so the registry stops meanwhile: a push then meets a stopped
# registry for a few seconds and retries.
part_gc() {
    local was_running="" before
    [[ -n "$(pid_of "$PIDFILE")" ]] && was_running=1
    before="$(du -sk "$PART_DIR/data" | cut -f1)"
    # Whatever ends this script (a failure, a cancelled run's signal), a registry that ran runs again.
    [[ -n "$was_running" ]] && trap 'part_up >/dev/null' EXIT
    part_down
    timeout 600 docker-registry garbage-collect "$PART_DIR/config.yml" >"$PART_DIR/gc.log" 2>&1 \
        || die "garbage-collect failed or took over 10 min; see $PART_DIR/gc.log"
    log "freed $(( (before - $(du -sk "$PART_DIR/data" | cut -f1)) / 1024 )) MiB of blobs no manifest refers to"
}

part_status() {
    local pid
    pid="$(pid_of "$PIDFILE")"
    if [[ -n "$pid" ]] && ready; then
        status_line running "https://$HOSTPORT" "$pid" "$(version)"
    else
        status_line stopped "https://$HOSTPORT" "${pid:--}" "$(version)"
    fi
}

dispatch "$@"
