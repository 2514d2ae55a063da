# Certificates, tokens and kubeconfigs of the local cluster, made once with openssl.
# Sourced by local/kubernetes.sh; everything lands in $PART_DIR/pki (0700) and $PART_DIR/*.kubeconfig.

PKI="$PART_DIR/pki"
NODE_NAME="${AISHIP_KUBE_NODE_NAME:-aiship-node}"
# 10.0.0.1 is the first address of the service range, the `kubernetes` Service's cluster IP.
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1

# pki_cert NAME CN ORG USAGE [SAN]: a key and a certificate signed by our CA (kept when present).
pki_cert() {
    local name="$1" cn="$2" org="$3" usage="$4" san="${5:-}" ext="$PKI/$1.ext" subj="/CN=$2"
    [[ -s "$PKI/$name.crt" && -s "$PKI/$name.key" ]] && return 0
    [[ -n "$org" ]] && subj="/O=$org/CN=$cn"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -n "$san" ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null \
        || die "openssl could not sign the $name certificate; remove $PKI and retry"
    rm -f "$PKI/$name.csr" "$ext"
}

# pki_token NAME: a random bearer token, made once.
pki_token() {
    [[ -s "$PKI/$1.token" ]] || (umask 077 && openssl rand -hex 32 >"$PKI/$1.token")
    cat "$PKI/$1.token"
}

# pki_kubeconfig FILE USER TOKEN: a self-contained kubeconfig (CA embedded) for one identity.
pki_kubeconfig() {
    local file="$1" user="$2" token="$3" ca
    ca="$(base64 -w0 <"$PKI/ca.crt")"
    : >"$file" && chmod 600 "$file"
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: aiship-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: aiship-local
  context:
    cluster: aiship-local
    user: $user
current-context: aiship-local
EOF
}

# pki_make: the CA, serving and client certificates, the service-account keys, the token file
# and one kubeconfig per component. Existing files are kept, so a restart keeps its identity.
pki_make() {
    mkdir -p "$PKI" && chmod 700 "$PKI"
    if [[ ! -s "$PKI/ca.crt" ]]; then
        openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
        openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=aiship-local-ca" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$PKI/ca.crt" 2>/dev/null || die "openssl could not make the CA; remove $PKI and retry"
    fi
    pki_cert apiserver kube-apiserver "" serverAuth \
        "IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # The kubelet's serving certificate, so the apiserver can verify it (logs, exec, port-forward).
    # It names the node IP (docker0's address), so a changed bridge address gets a new certificate.
    if [[ -s "$PKI/kubelet.crt" ]] && ! openssl x509 -in "$PKI/kubelet.crt" -noout -ext subjectAltName \
        | grep -q "IP Address:$NODE_IP,"; then rm -f "$PKI/kubelet.crt"; fi
    pki_cert kubelet "$NODE_NAME" "" serverAuth "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
    # The apiserver's client certificate towards the kubelet (the kubelet trusts only our CA).
    pki_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
    if [[ ! -s "$PKI/sa.key" ]]; then
        openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
        openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    fi
    # Bearer tokens: admin (system:masters), the node (Node authorizer), and the built-in identities
    # the default RBAC roles already bind (system:kube-controller-manager, -scheduler, -proxy).
    local admin kubelet cm sched proxy
    admin="$(pki_token admin)"; kubelet="$(pki_token kubelet)"; cm="$(pki_token controller-manager)"
    sched="$(pki_token scheduler)"; proxy="$(pki_token kube-proxy)"
    : >"$PKI/tokens.csv" && chmod 600 "$PKI/tokens.csv"
    cat >"$PKI/tokens.csv" <<EOF
$admin,admin,admin,"system:masters"
$kubelet,system:node:$NODE_NAME,kubelet,"system:nodes"
$cm,system:kube-controller-manager,kube-controller-manager
$sched,system:kube-scheduler,kube-scheduler
$proxy,system:kube-proxy,kube-proxy
EOF
    pki_kubeconfig "$PART_DIR/kubeconfig" admin "$admin"
    pki_kubeconfig "$PKI/kubelet.kubeconfig" "system:node:$NODE_NAME" "$kubelet"
    pki_kubeconfig "$PKI/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
    pki_kubeconfig "$PKI/scheduler.kubeconfig" system:kube-scheduler "$sched"
    pki_kubeconfig "$PKI/kube-proxy.kubeconfig" system:kube-proxy "$proxy"
}
