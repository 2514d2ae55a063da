#!/usr/bin/env bash
# The base image aiship/base:bookworm-py311, built without pulling from any registry: a minimal
# Debian bookworm root file system made by debootstrap on the host, imported into dockerd.
#   up      builds (or re-imports) the image when its recipe changed, then checks that a container
#           from it runs python3; nothing to do when dockerd already holds the current recipe
#   down    does nothing: the image stays (it is data, not a process)
#   status  built|missing, image ref, -, python version and recipe hash
# Cache: $AISHIP_CACHE_DIR/base/<recipe-hash>.tar (the rootfs tarball, ~130 MB) is kept, so a
# machine whose dockerd lost the image re-imports it in about a second instead of rebuilding.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=aiship/base
TAG=bookworm-py311
REF="$IMAGE:$TAG"
BASE_CACHE="$CACHE_DIR/base"
LABEL=io.aiship.base.recipe

# ---- recipe: everything below up to "end of recipe" is hashed; edit it and the image rebuilds.
SUITE=bookworm
VARIANT=minbase
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
IMAGE_ENV='ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
IMAGE_CMD='CMD ["python3"]'

# clean_rootfs DIR: drops what a container never needs (~300 MB -> ~130 MB). Locales go but
# C.UTF-8 stays: glibc ships it under /usr/lib/locale, which is kept.
clean_rootfs() {
    local root="$1"
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/var/log/* "$root"/var/cache/debconf/*-old \
        "$root"/tmp/* "$root"/etc/hostname "$root"/etc/resolv.conf
    find "$root" -xdev -depth -name __pycache__ -type d -exec rm -rf {} +
    # The line above drops every bytecode cache, stale ones with the rest; the standard library's
    # is compiled again because without it each process of each container compiles the ~190
    # modules it imports (0.35 s of the app's scikit-learn import, for ~15 MB of image).
    chroot "$root" python3 -c 'import compileall, sys, sysconfig; sys.exit(not compileall.compile_dir(sysconfig.get_path("stdlib"), quiet=1))'
}
# ---- end of recipe

recipe_hash() {
    { declare -p SUITE VARIANT PACKAGES IMAGE_ENV IMAGE_CMD; declare -f clean_rootfs; } \
        | sha256sum | cut -c1-64
}

# debian_mirror: the machine's own Debian archive (the first URIs of debian.sources), the only
# place packages can come from here; AISHIP_DEBIAN_MIRROR overrides it.
debian_mirror() {
    local m="${AISHIP_DEBIAN_MIRROR:-}"
    [[ -n "$m" ]] || m="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    echo "${m:-http://deb.debian.org/debian}"
}

docker_ok() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

image_recipe() {
    docker image inspect "$REF" --format "{{ index .Config.Labels \"$LABEL\" }}" 2>/dev/null || true
}

image_python() {
    docker image inspect "$REF" --format '{{ index .Config.Labels "io.aiship.base.python" }}' 2>/dev/null || true
}

# build_tarball HASH: debootstrap + clean + tar, written atomically to $BASE_CACHE/HASH.tar.
build_tarball() {
    local hash="$1" root="$BASE_CACHE/rootfs-$1.tmp" mirror
    mirror="$(debian_mirror)"
    apt_install debootstrap
    rm -rf "$root"
    log "debootstrap $VARIANT $SUITE from $mirror (about a minute)"
    debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$root" "$mirror" \
        >"$PART_DIR/debootstrap.log" 2>&1 \
        || { rm -rf "$root"; die "debootstrap of $SUITE from $mirror failed (log: $PART_DIR/debootstrap.log); check that the Debian archive is reachable"; }
    clean_rootfs "$root"
    tar -C "$root" --numeric-owner --sort=name -cf "$BASE_CACHE/$hash.tar.tmp" .
    rm -rf "$root"
    mv "$BASE_CACHE/$hash.tar.tmp" "$BASE_CACHE/$hash.tar"
}

# tar_python TAR: the upstream Python version recorded in the rootfs's dpkg database (awk reads
# to the end: an early exit would kill tar with SIGPIPE, fatal under pipefail).
tar_python() {
    tar -xOf "$1" ./var/lib/dpkg/status \
        | awk '/^Package: python3-minimal$/{f=1} f && /^Version:/{v=$2; f=0} END{print v}' \
        | sed 's/-.*//'
}

import_tarball() {
    local hash="$1" tar="$BASE_CACHE/$1.tar" py
    py="$(tar_python "$tar")"
    log "importing $tar as $REF"
    docker import -c "$IMAGE_ENV" -c "$IMAGE_CMD" -c "LABEL $LABEL=$hash io.aiship.base.python=$py" \
        "$tar" "$REF" >/dev/null \
        || die "docker import of $tar failed; delete it and run local/base-image.sh up again to rebuild"
    docker tag "$REF" "$IMAGE:${hash:0:12}"
}

smoke_test() { docker run --rm --network none "$REF" python3 -c 'import sys' >/dev/null 2>&1; }

part_up() {
    docker_ok || die "dockerd does not answer; run local/docker.sh up first"
    mkdir -p "$BASE_CACHE"
    # One build at a time: a second `up` (another checkout, CI) waits for the first one's result.
    exec 9>"$BASE_CACHE/.lock"
    flock 9
    local hash
    hash="$(recipe_hash)"
    if [[ "$(image_recipe)" == "$hash" ]]; then
        docker image inspect "$IMAGE:${hash:0:12}" >/dev/null 2>&1 || docker tag "$REF" "$IMAGE:${hash:0:12}"
        log "$REF is current (recipe ${hash:0:12})"
    else
        [[ -f "$BASE_CACHE/$hash.tar" ]] || build_tarball "$hash"
        import_tarball "$hash"
    fi
    if ! smoke_test; then
        # A tarball that imports but cannot run python3 is broken: drop it so the next up rebuilds.
        docker rmi -f "$REF" "$IMAGE:${hash:0:12}" >/dev/null 2>&1 || true
        rm -f "$BASE_CACHE/$hash.tar"
        die "a container from $REF could not run python3 -c 'import sys'; removed the image and its cached tarball, run local/base-image.sh up again to rebuild"
    fi
}

part_down() { log "$REF is kept (the base image is data; remove it with docker rmi $REF)"; }

part_status() {
    local hash py
    hash="$(image_recipe)"
    if [[ -n "$hash" && "$hash" != "<no value>" ]]; then
        py="$(image_python)"
        status_line built "$REF" - "python ${py:-?}, recipe ${hash:0:12}"
    else
        status_line missing "$REF" - "recipe $(recipe_hash | cut -c1-12)"
    fi
}

dispatch "$@"
