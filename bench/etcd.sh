# Shared by the benchmark scripts that run etcd beside Meridian (sourced).

# Installs Debian's etcd-server if `etcd` is missing.
ensure_etcd() {
    if ! command -v etcd >/dev/null; then
        echo "installing etcd-server (Debian package)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q etcd-server
    fi
}

# Starts a 3-node etcd cluster on loopback with data under DIR/etcd and
# logs in DIR; extra flags in $2 (word-split). Appends each member's pid to
# ETCD_PIDS and sets ETCD_ENDPOINTS (comma-separated client addresses).
start_etcd_cluster() {
    local dir=$1 flags=${2:-}
    local base=$((30000 + RANDOM % 20000)) cluster="" i client peer
    for i in 1 2 3; do cluster+="e$i=http://127.0.0.1:$((base + 10 * i + 1)),"; done
    cluster=${cluster%,}
    ETCD_ENDPOINTS=""
    for i in 1 2 3; do
        client=$((base + 10 * i)); peer=$((base + 10 * i + 1))
        # shellcheck disable=SC2086
        etcd --name "e$i" --data-dir "$dir/etcd/e$i" \
            --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token meridian-bench \
            --log-level warn $flags >"$dir/etcd-e$i.log" 2>&1 &
        ETCD_PIDS+=($!)
        ETCD_ENDPOINTS+="127.0.0.1:$client,"
    done
    ETCD_ENDPOINTS=${ETCD_ENDPOINTS%,}
}
