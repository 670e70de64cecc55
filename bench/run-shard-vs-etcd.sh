#!/usr/bin/env bash
# Benchmark: a 3-node Meridian shard vs a 3-node etcd cluster, same machine, same
# load generator, same workload, in one run. Not part of the test suite.
#
#   bench/run-shard-vs-etcd.sh            # 256 B values, 1/16/64 clients, put+get, 20 s each
#   DURATION=5 CLIENTS=64 bench/run-shard-vs-etcd.sh
#   ENCRYPTION=off bench/run-shard-vs-etcd.sh   # Meridian without encryption at rest
#                                               # (on by default, as in the lab)
#   PROFILE=release bench/run-shard-vs-etcd.sh  # the lab's profile instead of production
#
# Installs Debian's etcd-server if it is missing. Everything listens on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-1,16,64}
WORKLOADS=${WORKLOADS:-put,get}
VALUE_SIZE=${VALUE_SIZE:-256}
OUT=${OUT:-bench/results}
ENCRYPTION=${ENCRYPTION:-on}
case "$ENCRYPTION" in
    on) LAB_FLAGS="" ;;
    off) LAB_FLAGS="--no-encryption" ;;
    *) echo "ENCRYPTION must be on or off" >&2; exit 2 ;;
esac

# shellcheck source=bench/etcd.sh
source bench/etcd.sh
ensure_etcd

# PROFILE=release measures the lab's faster-building profile (no LTO).
PROFILE=${PROFILE:-production}
cargo build --profile "$PROFILE" -p meridian -p meridian-bench
BIN=target/$PROFILE

WORK=$(mktemp -d)
ETCD_PIDS=()
cleanup() {
    "$BIN/meridian" lab down --dir "$WORK/meridian" >/dev/null 2>&1 || true
    for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting a 3-node Meridian shard (encryption at rest: $ENCRYPTION)"
# One region: one shard (plus the lab's control plane and gateway, idle here).
"$BIN/meridian" lab up --dir "$WORK/meridian" --regions us-east --nodes 3 --plaintext $LAB_FLAGS --detach >/dev/null

echo "starting a 3-node etcd cluster"
start_etcd_cluster "$WORK"

mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/meridian-bench" --meridian-lab "$WORK/meridian" --etcd "$ETCD_ENDPOINTS" \
    --clients "$CLIENTS" --workloads "$WORKLOADS" --duration "$DURATION" --value-size "$VALUE_SIZE" \
    --json-out "$OUT/shard-vs-etcd-$PROFILE-encryption-$ENCRYPTION-$STAMP.json"
echo "results written to $OUT/shard-vs-etcd-$PROFILE-encryption-$ENCRYPTION-$STAMP.json"
