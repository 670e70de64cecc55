#!/usr/bin/env bash
# Replication and failover benchmark on the default lab shape (three regions, TLS
# and WAN emulation): RTO over RUNS region kills, standby lag under a paced write
# load, sync vs async write latency, WAN bytes per byte written. Not part of the
# tests.
#
#   bench/run-failover.sh            # RUNS=10 RATE=5000 SECONDS=15 CLIENTS=64
#   PHASES=rto,rto-sync2,reads bench/run-failover.sh   # a subset of the phases
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
RATE=${RATE:-5000}
SECONDS_PER_PHASE=${SECONDS:-15}
CLIENTS=${CLIENTS:-64}
PHASES=${PHASES:-rto,rto-sync2,load,reads}
cargo build --profile production -p meridian -p meridian-bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p bench/results
OUT="bench/results/failover-$(date +%Y%m%d-%H%M).json"
target/production/meridian-failover-bench \
  --binary target/production/meridian \
  --dir "$WORK" \
  --runs "$RUNS" \
  --rate "$RATE" \
  --seconds "$SECONDS_PER_PHASE" \
  --clients "$CLIENTS" \
  --phases "$PHASES" \
  --json-out "$OUT"
echo "results in $OUT"
