#!/usr/bin/env bash
# Benchmark: online migration under WAN emulation. Moves a namespace between
# us-east and eu-west MIGRATIONS times (80 ms round trip) while writers keep
# writing through the us-east gateway, and reports the write block each
# migration recorded and what the writers saw (p50, p99); with BIG_MB, also
# the total time of migrating a namespace that large. Not part of the tests.
#
#   bench/run-migrate.sh                          # 20 migrations of 16 MB
#   BIG_MB=1024 bench/run-migrate.sh              # and one 1 GB migration
#
# Everything listens on loopback; the lab lives in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

MIGRATIONS=${MIGRATIONS:-20}
SIZE_MB=${SIZE_MB:-16}
WRITERS=${WRITERS:-4}
BIG_MB=${BIG_MB:-0}
OUT=${OUT:-bench/results}

cargo build --profile production -p meridian -p meridian-bench
BIN=target/production

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
"$BIN/meridian-migrate-bench" --lab "$WORK/lab" --meridian "$BIN/meridian" \
    --migrations "$MIGRATIONS" --size-mb "$SIZE_MB" --writers "$WRITERS" --big-mb "$BIG_MB" \
    --json-out "$OUT/migrate-$STAMP.json"
echo "results written to $OUT/migrate-$STAMP.json"
