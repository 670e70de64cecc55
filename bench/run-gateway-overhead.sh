#!/usr/bin/env bash
# Benchmark: the same load against a shard's leader directly and through a
# gateway, in one run (a one-region lab). Not part of the test suite.
#
#   bench/run-gateway-overhead.sh          # 256 B values, 1/16/64 clients, put+get, 20 s each
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-1,16,64}
WORKLOADS=${WORKLOADS:-put,get}
OUT=${OUT:-bench/results}

cargo build --release -p meridian -p meridian-bench
BIN=target/release
WORK=$(mktemp -d)
cleanup() {
    "$BIN/meridian" lab down --dir "$WORK/lab" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/meridian" lab up --dir "$WORK/lab" --regions us-east --nodes 3 --plaintext --detach >/dev/null
mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
"$BIN/meridian-bench" --meridian-lab "$WORK/lab" --via-gateway \
    --clients "$CLIENTS" --workloads "$WORKLOADS" --duration "$DURATION" \
    --json-out "$OUT/gateway-overhead-$STAMP.json"
