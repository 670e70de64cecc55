#!/usr/bin/env bash
# Benchmark: what access control costs per call, set against the throughput
# of the shard and gateway benchmarks with mutual TLS on (as deployed: every
# call carries the admin user's certificate and is decided by the policy the
# control plane pushed). Not part of the test suite.
#
#   bench/run-authz.sh                  # 64 clients, put and get, 15 s per row
#   CLIENTS=16,64 bench/run-authz.sh
#
# 1. meridian-authz-bench: nanoseconds per call of the whole per-call path
#    (the connection's peer into the request, the caller read from it,
#    meridian_access::decide over a policy with 1,002 grants).
# 2. meridian-bench against a one-region TLS lab: ops/s directly to the shard
#    leader and through the gateway.
# 3. The share: (ns per check x checks per op) / (CPU ns per op), where CPU ns
#    per op = cores x 1e9 / ops/s (the whole machine is busy at 64 clients).
#    A direct call is checked once (the leader); a gateway call twice (the
#    gateway, then the node deciding the gateway by its kind).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-64}
WORKLOADS=${WORKLOADS:-put,get}
OUT=${OUT:-bench/results}

cargo build --profile production -p meridian -p meridian-bench
BIN=target/production
WORK=$(mktemp -d)
LAB="$WORK/lab"
cleanup() {
    "$BIN/meridian" lab down --dir "$LAB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)

echo "== per-call cost of the access decision" >&2
"$BIN/meridian-authz-bench" --json | tee "$OUT/authz-percall-$STAMP.json"

echo "== shard and gateway throughput with mutual TLS and access control" >&2
"$BIN/meridian" lab up --dir "$LAB" --regions us-east --nodes 3 --detach >/dev/null
"$BIN/meridian-bench" --meridian-lab "$LAB" --via-gateway \
    --clients "$CLIENTS" --workloads "$WORKLOADS" --duration "$DURATION" \
    --json-out "$OUT/authz-throughput-$STAMP.json"

python3 - "$OUT/authz-percall-$STAMP.json" "$OUT/authz-throughput-$STAMP.json" "$(nproc)" <<'PY'
import json, sys
percall = json.load(open(sys.argv[1]))
rows = json.load(open(sys.argv[2]))
cores = int(sys.argv[3])
ns = percall["ns_per_call_whole_path"]
print(f"\naccess decision: {ns:.0f} ns per check ({cores} cores)")
print("| system | workload | clients | ops/s | CPU us per op | checks per op | share |")
print("|---|---|---|---|---|---|---|")
for row in rows:
    system = row["system"]
    checks = 2 if system == "gateway" else 1
    cpu_ns = cores * 1e9 / row["ops_per_second"]
    share = 100.0 * ns * checks / cpu_ns
    print(f"| {system} | {row['workload']} | {row['clients']} | {row['ops_per_second']:.0f} | {cpu_ns/1000:.1f} | {checks} | {share:.2f} % |")
PY
