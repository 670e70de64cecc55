#!/usr/bin/env bash
# Routing benchmark: propagation of routing changes to every gateway of the
# default lab (TLS + WAN emulation), then a 100,000-namespace table: memory,
# full-table sync, gateway restart, lookup cost; and how long a revoked
# identity is still admitted by each gateway and node. Not part of the tests.
#
#   bench/run-routing.sh            # CHANGES=200 NAMESPACES=100000 CONCURRENCY=64 REVOCATIONS=50
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-200}
NAMESPACES=${NAMESPACES:-100000}
CONCURRENCY=${CONCURRENCY:-64}
REVOCATIONS=${REVOCATIONS:-50}
cargo build --profile production -p meridian -p meridian-bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p bench/results
OUT="bench/results/routing-$(date +%Y%m%d-%H%M).json"
target/production/meridian-routing-bench \
  --binary target/production/meridian \
  --dir "$WORK/lab" \
  --changes "$CHANGES" \
  --revocations "$REVOCATIONS" \
  --namespaces "$NAMESPACES" \
  --concurrency "$CONCURRENCY" \
  --json-out "$OUT"
echo "results in $OUT"
