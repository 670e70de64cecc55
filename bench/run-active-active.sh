#!/usr/bin/env bash
# Benchmark: active-active namespaces under WAN emulation (us-east <-> eu-west
# 80 ms round trip). Reports, in one run: local put latency in each region for
# an active-active namespace beside an active-passive one homed in us-east;
# the convergence lag between the regions at RATE writes/s across the set
# (p50, p99, beside the one-way delay); conflicts per write and merge CPU cost
# under a hot-key workload. Not part of the tests.
#
#   bench/run-active-active.sh                 # 5,000 writes/s, 20 s runs
#   RATE=2000 DURATION=60 bench/run-active-active.sh
#
# Everything listens on loopback; the lab lives in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-5000}
DURATION=${DURATION:-20}
WRITERS=${WRITERS:-32}
PROFILE=${PROFILE:-production}
OUT=${OUT:-bench/results}

cargo build --profile "$PROFILE" -p meridian -p meridian-bench
case "$PROFILE" in dev) BIN=target/debug ;; *) BIN=target/$PROFILE ;; esac

WORK=$(mktemp -d)
cleanup() {
    "$BIN/meridian" lab down --dir "$WORK/lab" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting the three-region lab (TLS, WAN emulation, encryption at rest)"
"$BIN/meridian" lab up --dir "$WORK/lab" --detach >/dev/null

mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
"$BIN/meridian-active-active-bench" --lab "$WORK/lab" --meridian "$BIN/meridian" \
    --rate "$RATE" --duration "$DURATION" --writers "$WRITERS" \
    --json-out "$OUT/active-active-$STAMP.json"
echo "results written to $OUT/active-active-$STAMP.json"
