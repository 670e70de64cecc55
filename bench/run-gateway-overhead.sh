#!/usr/bin/env bash
# Benchmark: the same load against a shard's leader directly and through a
# gateway, in one run (a one-region lab). Not part of the test suite.
#
#   bench/run-gateway-overhead.sh                 # both placements, 1/16/64 clients, put+get
#   MODE=shared bench/run-gateway-overhead.sh     # only the shared-cores placement
#
# Two placements of the same lab, each measured direct vs through the gateway:
#
#   shared     every process (3 nodes, 3 control members, the gateway, the load
#              generator) on all cores: the gateway's CPU comes out of the
#              shard's and the load generator's.
#   dedicated  the gateway alone on the last core, everything else on the
#              others, in both the direct and the gateway runs: a gateway tier
#              with its own machines, as deployed. The direct run has the same
#              cores for the shard and the load; the gateway's core idles.
#
# Each row runs ROUNDS times with the two systems taking turns; the median run
# of each is reported (slow drift of the machine lands on both sides).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1,16,64}
WORKLOADS=${WORKLOADS:-put,get}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-both}
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
CPUS=$(nproc)

measure() { # placement, then the command prefix that pins the load generator
    local placement=$1
    shift
    echo "== $placement placement" >&2
    "$@" "$BIN/meridian-bench" --meridian-lab "$LAB" --via-gateway \
        --clients "$CLIENTS" --workloads "$WORKLOADS" --duration "$DURATION" \
        --rounds "$ROUNDS" --json-out "$OUT/gateway-overhead-$placement-$STAMP.json"
}

if [[ $MODE == shared || $MODE == both ]]; then
    "$BIN/meridian" lab up --dir "$LAB" --regions us-east --nodes 3 --plaintext --detach >/dev/null
    measure shared env
    "$BIN/meridian" lab down --dir "$LAB" >/dev/null
    rm -rf "$LAB"
fi

if [[ $MODE == dedicated || $MODE == both ]]; then
    if ((CPUS < 2)); then
        echo "dedicated placement needs at least 2 cores; this machine has $CPUS" >&2
        exit 1
    fi
    REST="0-$((CPUS - 2))"
    LAST=$((CPUS - 1))
    # Processes inherit the affinity they start with (and size their runtimes
    # by it), so the lab starts on REST and the gateway is restarted on LAST.
    taskset -c "$REST" "$BIN/meridian" lab up --dir "$LAB" --regions us-east --nodes 3 --plaintext --detach >/dev/null
    taskset -c "$LAST" "$BIN/meridian" lab restart gateway-us-east --dir "$LAB" >/dev/null
    measure dedicated taskset -c "$REST"
fi
