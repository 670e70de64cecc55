#!/usr/bin/env bash
# Benchmark: backup and restore throughput of a 3-node Meridian shard (local
# directory location) next to etcd's `snapshot save` / `snapshot restore` on
# the same data, in one run, and the shard's write throughput and p99 while a
# backup runs. Not part of the test suite.
#
#   bench/run-dr.sh                       # 1 GB of 4 KiB values
#   SIZE_MB=256 bench/run-dr.sh           # quicker
#   BACKUP_CAP=20000000 bench/run-dr.sh   # backups read at most 20 MB/s per node
#                                         # ([dr] backup_max_bytes_per_second)
#
# Installs Debian's etcd-server and etcd-client (etcdctl) if missing.
# Everything listens on loopback; the data goes to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}
VALUE_SIZE=${VALUE_SIZE:-4096}
WRITERS=${WRITERS:-16}
BACKUP_CAP=${BACKUP_CAP:-0}
OUT=${OUT:-bench/results}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

cargo build --profile production -p meridian -p meridian-bench
BIN=target/production

WORK=$(mktemp -d)
ETCD_PID=""
cleanup() {
    "$BIN/meridian" lab down --dir "$WORK/meridian" >/dev/null 2>&1 || true
    [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting a 3-node Meridian shard (encryption at rest on, as in the lab; backup cap $BACKUP_CAP B/s)"
"$BIN/meridian" lab up --dir "$WORK/meridian" --regions us-east --nodes 3 --plaintext --detach \
    --node-env "MERIDIAN__DR__BACKUP_MAX_BYTES_PER_SECOND=$BACKUP_CAP" >/dev/null

echo "starting one etcd member"
PORT=$((30000 + RANDOM % 20000))
etcd --name e1 --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" \
    --initial-cluster "e1=http://127.0.0.1:$((PORT + 1))" \
    --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
    --log-level warn >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!

mkdir -p "$OUT" "$WORK/scratch"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
"$BIN/meridian-dr-bench" --lab "$WORK/meridian" --meridian "$BIN/meridian" \
    --etcd "127.0.0.1:$PORT" --scratch "$WORK/scratch" \
    --size-mb "$SIZE_MB" --value-size "$VALUE_SIZE" --writers "$WRITERS" \
    --json-out "$OUT/dr-cap$BACKUP_CAP-$STAMP.json"
echo "results written to $OUT/dr-cap$BACKUP_CAP-$STAMP.json"
