#!/usr/bin/env bash
# One-node Kubernetes 1.20 on 127.0.0.1, built from Debian's source package (local/kubernetes/).
#   up      builds the binaries once (cached under $AISHIP_CACHE_DIR/kubernetes/<version>-<patch>),
#           starts etcd, kube-apiserver, controller-manager, scheduler, kubelet (dockershim on the
#           shared dockerd) and kube-proxy, and waits until the node reports Ready;
#           components already running under our pid files are reused
#   down    stops our pids (reverse order), removes the pod containers, the kubelet's mounts and
#           kube-proxy's iptables chains; the cluster's data (etcd, certificates) is kept
#   status  running|stopped, https://127.0.0.1:$AISHIP_KUBE_API_PORT, apiserver pid, version
# The admin kubeconfig (self-contained, CA embedded) is $AISHIP_STATE_DIR/kubernetes/kubeconfig.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$AISHIP_ROOT/local/kubernetes/build.sh"
source "$AISHIP_ROOT/local/kubernetes/pki.sh"

API_PORT="${AISHIP_KUBE_API_PORT:-16443}"
ETCD_PORT="${AISHIP_KUBE_ETCD_PORT:-16379}"
ETCD_PEER_PORT=$((ETCD_PORT + 1))
NODEPORT_RANGE=16100-16199
PAUSE_IMAGE="aiship/pause:$PAUSE_TAG"
KUBELET_ROOT="$PART_DIR/kubelet"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
BIN=""

# Ports each component listens on (all on 127.0.0.1), checked before anything starts; only etcd's
# and the apiserver's can move (a second kubelet on the same dockerd would fight over its pods).
component_ports() {
    case "$1" in
        etcd) echo "$ETCD_PORT:AISHIP_KUBE_ETCD_PORT $ETCD_PEER_PORT:AISHIP_KUBE_ETCD_PORT" ;;
        kube-apiserver) echo "$API_PORT:AISHIP_KUBE_API_PORT" ;;
        kube-controller-manager) echo 10257 ;;
        kube-scheduler) echo 10259 ;;
        kubelet) echo "10250 10248" ;;
        kube-proxy) echo "10249 10256" ;;
    esac
}

# require_ports_free: every port of every component we are about to start, before starting any.
require_ports_free() {
    local c p owner
    for c in "${COMPONENTS[@]}"; do
        running "$c" && continue
        for p in $(component_ports "$c"); do
            if [[ "$p" == *:* ]]; then require_port_free "${p%%:*}" "${p#*:}"; continue; fi
            [[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]] && continue
            owner="$(port_owner "$p")"
            die "port $p on 127.0.0.1, needed by $c, is taken by another program (${owner:-unknown}); stop that program (another Kubernetes on this machine?) and retry"
        done
    done
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$PART_DIR/kubeconfig" --request-timeout=5s "$@"; }
etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
api_ready() {
    [[ -s "$PKI/admin.token" ]] || return 1
    curl -fsS --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$PKI/admin.token")" \
        "https://127.0.0.1:$API_PORT/readyz" | grep -qx ok
}
# node_ready: Ready, as posted by the kubelet running now. The Node object outlives a restart in
# etcd and says Ready from the last run until the new kubelet's first status: a heartbeat from
# before READY_SINCE (set when this run starts the kubelet) does not count.
node_ready() {
    local out ready beat
    out="$(kubectl_admin get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null)" || return 1
    read -r ready beat <<<"$out"
    [[ "$ready" == True && -n "$beat" ]] && (($(date -d "$beat" +%s) >= ${READY_SINCE:-0}))
}

# pause_image: the pod sandbox image, imported from the cached static binary (nothing is pulled).
pause_image() {
    docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
    tar -C "$BIN" -cf - pause | docker import -c 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null \
        || die "docker import of $PAUSE_IMAGE failed; check dockerd with \`bash local/docker.sh status\`"
}

start_etcd() {
    start_bg etcd etcd --name aiship --data-dir "$PART_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "aiship=http://127.0.0.1:$ETCD_PEER_PORT"
    wait_ready 30 "etcd on 127.0.0.1:$ETCD_PORT" etcd_healthy
}

# --advertise-address 127.0.0.1 with --endpoint-reconciler-type=none: the apiserver only listens on
#   loopback, and a loopback address is not a valid Endpoints entry; pods here do not call the API.
# --service-account-issuer/-signing-key-file: required since 1.20 (bound service-account tokens).
start_apiserver() {
    start_bg kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
        --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" --anonymous-auth=false \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range "$NODEPORT_RANGE" \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
        --profiling=false
    wait_ready 60 "kube-apiserver on 127.0.0.1:$API_PORT" api_ready
}

start_controllers() {
    start_bg kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$PKI/controller-manager.kubeconfig" --leader-elect=false \
        --bind-address 127.0.0.1 --port 0 \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --use-service-account-credentials --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
    start_bg kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig "$PKI/scheduler.kubeconfig" --leader-elect=false \
        --bind-address 127.0.0.1 --port 0 --profiling=false
}

# Flags, and why each is needed on these machines:
# --container-runtime docker: the built-in dockershim runs pods on the same dockerd that builds
#   the images, so a pushed image pulls through dockerd, which trusts the registry's CA.
# --cgroup-driver cgroupfs: what dockerd uses here (cgroup v1, no systemd).
# --cgroups-per-qos=false --enforce-node-allocatable=: no QoS cgroup hierarchy to manage here.
# --make-iptables-util-chains=false, --oom-score-adj 0: the sandbox refuses these kernel changes
#   (negative OOM scores); see local/kubernetes/oom-score-zero.patch for the pods' side.
# --fail-swap-on=false, relaxed --eviction-hard: a developer machine, not a dedicated node.
# --image-gc-high-threshold 100: dockerd is shared with the image builder; the kubelet must never
#   delete the base image, the pause image or images being built.
# --node-ip/--address docker0's address: the kubelet refuses a loopback node IP, and the machine's
#   external address would expose the kubelet API; docker0 is local and the apiserver reaches it.
#   Only clients with a certificate from our CA (the apiserver) get in.
start_kubelet() {
    mkdir -p "$KUBELET_ROOT" "$PART_DIR/dockershim" "$PART_DIR/kubelet-plugins"
    start_bg kubelet "$BIN/kubelet" \
        --kubeconfig "$PKI/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
        --container-runtime docker --docker-endpoint unix:///var/run/docker.sock \
        --pod-infra-container-image "$PAUSE_IMAGE" \
        --root-dir "$KUBELET_ROOT" --experimental-dockershim-root-directory "$PART_DIR/dockershim" \
        --volume-plugin-dir "$PART_DIR/kubelet-plugins" \
        --cgroup-driver cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
        --fail-swap-on=false --make-iptables-util-chains=false --oom-score-adj 0 \
        --eviction-hard 'memory.available<100Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%' \
        --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
        --address "$NODE_IP" --node-ip "$NODE_IP" --read-only-port 0 --healthz-bind-address 127.0.0.1 \
        --tls-cert-file "$PKI/kubelet.crt" --tls-private-key-file "$PKI/kubelet.key" \
        --client-ca-file "$PKI/ca.crt" --anonymous-auth=false --authorization-mode AlwaysAllow \
        --cluster-domain cluster.local
}

# --nodeport-addresses 127.0.0.0/8: NodePorts answer on loopback only (kube-proxy sets
#   route_localnet for that), never on the machine's external addresses.
# --conntrack-max-per-core 0, --oom-score-adj 0: leave those kernel settings alone (refused here).
# --cluster-cidr docker0's subnet: traffic from outside the pods to a Service gets masqueraded.
start_proxy() {
    start_bg kube-proxy "$BIN/kube-proxy" \
        --kubeconfig "$PKI/kube-proxy.kubeconfig" --hostname-override "$NODE_NAME" \
        --proxy-mode iptables --nodeport-addresses 127.0.0.0/8 --cluster-cidr "$POD_CIDR" \
        --conntrack-max-per-core 0 --oom-score-adj 0 \
        --bind-address "$NODE_IP" --metrics-bind-address 127.0.0.1:10249 \
        --healthz-bind-address 127.0.0.1:10256 --profiling=false
}

running() { [[ -n "$(pid_of "$PART_DIR/$1.pid")" ]]; }

part_up() {
    local started=0 t0=$SECONDS
    bash "$AISHIP_ROOT/local/docker.sh" up
    require_ports_free
    apt_install ${AISHIP_KUBERNETES_APT_PACKAGES:-"${K8S_RUNTIME_PACKAGES[@]}"}
    k8s_build
    BIN="$(k8s_bin_dir)"
    # Pods get docker0 addresses (dockershim without CNI); the node is docker0's gateway address.
    POD_CIDR="$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | head -1)"
    [[ -n "$POD_CIDR" ]] || die "dockerd has no docker0 bridge (ip addr show docker0); check dockerd with \`bash local/docker.sh status\` and its log"
    NODE_IP="${POD_CIDR%/*}"
    pause_image
    pki_make
    running etcd || { start_etcd; started=1; }
    running kube-apiserver || { start_apiserver; started=1; }
    running kube-controller-manager || { start_controllers; started=1; }
    running kubelet || { READY_SINCE="$(date +%s)"; start_kubelet; started=1; }
    running kube-proxy || { start_proxy; started=1; }
    wait_ready 120 "node $NODE_NAME (kubelet log: $PART_DIR/kubelet.log)" node_ready
    if ((started)); then log "node $NODE_NAME Ready in $((SECONDS - t0))s"; else log "already running"; fi
    log "kubeconfig: $PART_DIR/kubeconfig; NodePorts $NODEPORT_RANGE on 127.0.0.1"
}

part_down() {
    local i mounts
    BIN="$(k8s_bin_dir)"
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_pidfile "$PART_DIR/${COMPONENTS[i]}.pid"; done
    # Only the containers the kubelet made; every other container on the shared dockerd stays.
    if docker info >/dev/null 2>&1; then
        docker ps -aq --filter label=io.kubernetes.pod.name | xargs -r docker rm -f >/dev/null
    fi
    # Secret tmpfs and the like, deepest first, so the state folder can be removed.
    mounts="$(awk -v root="$KUBELET_ROOT" 'index($2, root) == 1 {print $2}' /proc/self/mounts | sort -r)"
    for i in $mounts; do umount "$i" 2>/dev/null || umount -l "$i" 2>/dev/null || true; done
    # kube-proxy --cleanup removes its chains (idempotent); it exits 1 when ipset is missing, after
    # the iptables part is done.
    if [[ -x "$BIN/kube-proxy" ]]; then
        "$BIN/kube-proxy" --cleanup >"$PART_DIR/kube-proxy-cleanup.log" 2>&1 || true
    fi
    # --cleanup leaves the empty canary chains kube-proxy watches to notice a flushed table.
    local table
    for table in mangle nat filter; do
        iptables -w -t "$table" -X KUBE-PROXY-CANARY 2>/dev/null || true
    done
}

part_status() {
    local pid version=-
    pid="$(pid_of "$PART_DIR/kube-apiserver.pid")"
    [[ -x "$(k8s_bin_dir)/kube-apiserver" ]] && version="$("$(k8s_bin_dir)/kube-apiserver" --version | awk '{print $2}')"
    if [[ -n "$pid" ]] && api_ready; then
        status_line running "https://127.0.0.1:$API_PORT" "$pid" "$version"
    else
        status_line stopped "https://127.0.0.1:$API_PORT" "${pid:--}" "$version"
    fi
}

case "${1:-}" in
    build) k8s_build; k8s_bin_dir ;;
    *) dispatch "$@" ;;
esac
