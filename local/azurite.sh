#!/usr/bin/env bash
# Azurite's blob service (npm `azurite`) on 127.0.0.1: the local stand-in for Azure Blob Storage.
#
#   local/azurite.sh up|down|status
#
# Installed once per version under $AISHIP_CACHE_DIR/azurite/<version>; data under the state folder.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZURITE_VERSION="3.35.0"
# Overridable so a test can simulate an install that fails (a package name npm does not know).
NPM_PACKAGE="${AISHIP_AZURITE_NPM_PACKAGE:-azurite@$AZURITE_VERSION}"
PORT="${AISHIP_AZURITE_PORT:-10000}"
# The cache folder is keyed by what is installed: the pinned version, or the overriding spec.
INSTALL_DIR="$CACHE_DIR/azurite/${AISHIP_AZURITE_NPM_PACKAGE:+spec-${AISHIP_AZURITE_NPM_PACKAGE//[^A-Za-z0-9._-]/_}}"
[[ -z "${AISHIP_AZURITE_NPM_PACKAGE:-}" ]] && INSTALL_DIR="$CACHE_DIR/azurite/$AZURITE_VERSION"
BIN="$INSTALL_DIR/node_modules/.bin/azurite-blob"
PIDFILE="$PART_DIR/azurite.pid"
ADDRESS="http://127.0.0.1:$PORT/devstoreaccount1"
# Azurite's well-known development account; its key is published in Azure's documentation.
ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export AZURITE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$ACCOUNT_KEY;BlobEndpoint=$ADDRESS;"

install_azurite() {
    [[ -x "$BIN" ]] && return 0
    command -v npm >/dev/null || apt_install npm
    log "installing $NPM_PACKAGE with npm into $INSTALL_DIR"
    local tmp="$INSTALL_DIR.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    # Install into a temporary folder and move it into place, so that a failed or interrupted
    # install never leaves a half-filled cache folder that a later `up` would trust.
    if ! npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "$NPM_PACKAGE" >"$PART_DIR/install.log" 2>&1 \
        || [[ ! -x "$tmp/node_modules/.bin/azurite-blob" ]]; then
        rm -rf "$tmp"
        die "npm install $NPM_PACKAGE failed (log: $PART_DIR/install.log); check the package name (AISHIP_AZURITE_NPM_PACKAGE) and that the npm registry is reachable"
    fi
    rm -rf "$INSTALL_DIR" && mv "$tmp" "$INSTALL_DIR"
}

# port_open: the cheap first check (no python start-up) before the real one.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# ready: a container can be created (and is removed again) with the Python SDK aiship uses.
ready() {
    python - <<'PY'
import os, uuid
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient.from_connection_string(os.environ["AZURITE_CONNECTION_STRING"])
name = f"aiship-ready-{uuid.uuid4().hex[:12]}"
svc.create_container(name, timeout=5)
svc.delete_container(name, timeout=5)
PY
}

part_up() {
    if [[ -n "$(pid_of "$PIDFILE")" ]]; then log "already running (pid $(pid_of "$PIDFILE"))"; return 0; fi
    require_port_free "$PORT" AISHIP_AZURITE_PORT
    install_azurite
    mkdir -p "$PART_DIR/data"
    # --blobHost 127.0.0.1      loopback only; nothing outside this machine needs the store.
    # --location                data and Azurite's metadata database live in the state folder.
    # --loose                   ignore headers Azurite does not implement instead of failing the request.
    # --skipApiVersionCheck     azure-storage-blob is newer than the API version Azurite declares;
    #                           without it every request fails with "API version not supported".
    # --disableTelemetry        Azurite would otherwise try to send telemetry out of this machine.
    start_bg azurite "$BIN" --blobHost 127.0.0.1 --blobPort "$PORT" --location "$PART_DIR/data" \
        --loose --skipApiVersionCheck --disableTelemetry
    wait_ready 60 "Azurite on 127.0.0.1:$PORT" port_open
    wait_ready 60 "Azurite on 127.0.0.1:$PORT" ready
    log "ready at $ADDRESS"
}

part_down() { stop_pidfile "$PIDFILE"; }

part_status() {
    local version="-"
    [[ -f "$INSTALL_DIR/node_modules/azurite/package.json" ]] && version="azurite $AZURITE_VERSION"
    pidfile_status "$PIDFILE" "$ADDRESS" "$version"
}

dispatch "$@"
