# Builds the Kubernetes 1.20 binaries and the pause binary from Debian's source package.
# Sourced by local/kubernetes.sh (needs lib.sh's helpers); never run on its own.
#
# Why from source: nothing can be pulled from a container registry or GitHub on these machines,
# Debian bookworm ships no kubelet/apiserver binaries, but its `kubernetes` source package has the
# full 1.20 tree (vendor/ and the kubelet's dockershim, which runs pods on our dockerd).

K8S_SRC_VERSION="${AISHIP_KUBE_SRC_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
K8S_PATCH="$AISHIP_ROOT/local/kubernetes/oom-score-zero.patch"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)
# To build (jq and rsync are used by the build scripts) and to run (etcd, socat for port-forward,
# iptables and conntrack for kube-proxy, openssl for the certificates, curl for readiness checks).
K8S_BUILD_PACKAGES=(golang-go rsync build-essential jq)
K8S_RUNTIME_PACKAGES=(etcd-server socat iptables conntrack openssl curl)
PAUSE_TAG=3.4

# k8s_cache_key: the source version plus a hash of the patch, so a changed patch rebuilds.
k8s_cache_key() {
    echo "${K8S_SRC_VERSION}-$(sha256sum "$K8S_PATCH" | cut -c1-12)"
}

# k8s_bin_dir: where the binaries of the current key live (built or not).
k8s_bin_dir() { echo "$CACHE_DIR/kubernetes/$(k8s_cache_key)/bin"; }

# k8s_enable_deb_src: apt-get source needs deb-src entries; a copy of Debian's own list.
k8s_enable_deb_src() {
    local src=/etc/apt/sources.list.d/debian.sources dst=/etc/apt/sources.list.d/aiship-src.sources
    if [[ ! -f "$dst" ]]; then
        [[ -f "$src" ]] || die "no $src to derive deb-src entries from; add a deb-src line for bookworm and retry"
        sed 's/^Types: deb$/Types: deb-src/' "$src" >"$dst"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >>"$PART_DIR/install.log" 2>&1 \
            || die "apt-get update after enabling deb-src failed (log: $PART_DIR/install.log)"
    fi
    if ! apt-cache showsrc kubernetes 2>/dev/null | grep -qx "Version: $K8S_SRC_VERSION"; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq >>"$PART_DIR/install.log" 2>&1 || true
        apt-cache showsrc kubernetes 2>/dev/null | grep -qx "Version: $K8S_SRC_VERSION" \
            || die "Debian source kubernetes=$K8S_SRC_VERSION not found (apt-cache showsrc kubernetes); set AISHIP_KUBE_SRC_VERSION to a listed 1.20 version"
    fi
}

# k8s_fetch_tree DIR: downloads (once) and extracts the source into DIR/tree, patch applied.
k8s_fetch_tree() {
    local work="$1" src="$CACHE_DIR/kubernetes/src" blog="$PART_DIR/build.log"
    mkdir -p "$src"
    if ! ls "$src"/kubernetes_"${K8S_SRC_VERSION#*:}".dsc >/dev/null 2>&1; then
        k8s_enable_deb_src
        (cd "$src" && apt-get source --download-only "kubernetes=$K8S_SRC_VERSION") >>"$blog" 2>&1 \
            || die "apt-get source kubernetes=$K8S_SRC_VERSION failed (log: $blog)"
    fi
    rm -rf "$work" && mkdir -p "$work"
    dpkg-source -x "$src"/kubernetes_"${K8S_SRC_VERSION#*:}".dsc "$work/tree" >>"$blog" 2>&1 \
        || die "dpkg-source -x failed (log: $blog); remove $src and retry"
    patch -d "$work/tree" -p1 <"$K8S_PATCH" >>"$blog" 2>&1 \
        || die "the OOM-score patch $K8S_PATCH does not apply to $K8S_SRC_VERSION (log: $blog)"
}

# k8s_build: builds into a temporary dir and moves it into place, so a cache dir is complete or absent.
k8s_build() {
    local bin key work out blog="$PART_DIR/build.log" b
    bin="$(k8s_bin_dir)"; key="$(k8s_cache_key)"
    [[ -x "$bin/kubelet" && -x "$bin/pause" ]] && return 0
    apt_install "${K8S_BUILD_PACKAGES[@]}"
    log "building Kubernetes $K8S_SRC_VERSION (cold build, about 5-10 min; log: $blog)"
    : >"$blog"
    work="$CACHE_DIR/kubernetes/build-$key"
    k8s_fetch_tree "$work"
    # KUBE_STATIC_OVERRIDES: a static kubelet does not depend on the host's libc.
    # GOTOOLCHAIN=local: never let go try to download another toolchain (no internet).
    (cd "$work/tree" && KUBE_STATIC_OVERRIDES=kubelet GOTOOLCHAIN=local GOFLAGS= \
        make WHAT="${K8S_BINARIES[*]/#/cmd/}") >>"$blog" 2>&1 \
        || die "Kubernetes build failed (log: $blog); fix the cause and rerun up (the build restarts from scratch)"
    out="$work/out/bin"; mkdir -p "$out"
    for b in "${K8S_BINARIES[@]}"; do
        install -m 0755 "$work/tree/_output/bin/$b" "$out/$b" || die "build produced no $b (log: $blog)"
    done
    # The pause container: the sandbox every pod's containers share namespaces with.
    gcc -Os -Wall -static -DVERSION="v$PAUSE_TAG" -o "$out/pause" "$work/tree/build/pause/linux/pause.c" >>"$blog" 2>&1 \
        || die "building the pause binary failed (log: $blog); is build-essential installed?"
    strip "$out/pause"
    mkdir -p "$(dirname "$bin")"
    rm -rf "$bin" && mv "$out" "$bin"
    # The tree and _output take several GB; only the binaries are worth keeping.
    rm -rf "$work"
    log "built into $bin"
}
