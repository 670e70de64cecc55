#!/usr/bin/env bash
# Soak: resident memory and disk of every node over a long put load, a
# 3-node Meridian shard beside a 3-node etcd cluster. Not part of the tests.
#
#   bench/run-soak.sh                      # 30 min, 64 clients, 10,000 keys of 256 B
#   DURATION=300 bench/run-soak.sh         # a shorter look
#   MODE=sequential bench/run-soak.sh      # one system at a time (twice as long)
#   MERIDIAN_ENV="MERIDIAN__STORAGE__MEMTABLE_BYTES=67108864" bench/run-soak.sh
#
# MODE=concurrent (the default) loads both systems at the same time, each
# with its own load generator, so both see the same machine for the same
# half hour (each gets about half the CPU: compare the ops they served too).
# Every SAMPLE_EVERY seconds it records each node's VmRSS and the size of
# its data directory; the CSV and a summary (peak and last RSS and disk per
# node, ops served) land in $OUT. Installs Debian's etcd-server if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-256}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
MODE=${MODE:-concurrent}
# etcd keeps every revision until compacted, and refuses writes once its
# backend reaches its quota (2 GiB): without compaction a half-hour soak
# ends in "database space exceeded". Compacting to the last 10,000
# revisions (the key count) keeps about what Meridian keeps; ETCD_FLAGS=""
# measures etcd as it starts by default.
ETCD_FLAGS=${ETCD_FLAGS---auto-compaction-mode=revision --auto-compaction-retention=10000}
OUT=${OUT:-bench/results}
case "$MODE" in concurrent|sequential) ;; *) echo "MODE must be concurrent or sequential" >&2; exit 2 ;; esac

# shellcheck source=bench/etcd.sh
source bench/etcd.sh
ensure_etcd

PROFILE=${PROFILE:-production}   # `dev` for a quick try of the script itself
cargo build --profile "$PROFILE" -p meridian -p meridian-bench
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

WORK=$(mktemp -d)
ETCD_PIDS=()
LOAD_PIDS=()
cleanup() {
    for pid in "${LOAD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$BIN/meridian" lab down --dir "$WORK/meridian" >/dev/null 2>&1 || true
    for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "starting a 3-node Meridian shard"
# shellcheck disable=SC2086
env ${MERIDIAN_ENV:-} "$BIN/meridian" lab up --dir "$WORK/meridian" --regions us-east --nodes 3 --plaintext --detach >/dev/null

echo "starting a 3-node etcd cluster"
start_etcd_cluster "$WORK" "$ETCD_FLAGS"

# name pid data-dir, one line per measured node.
NODES="$WORK/nodes.txt"
python3 - "$WORK/meridian/lab.json" >"$NODES" <<'PY'
import json, pathlib, sys
state = json.loads(pathlib.Path(sys.argv[1]).read_text())
for p in state["processes"]:
    if p["role"] == "node":
        print(f"meridian/{p['name']} {p['pid']} {pathlib.Path(p['config']).parent / 'data'}")
PY
for i in 1 2 3; do echo "etcd/e$i ${ETCD_PIDS[$((i - 1))]} $WORK/etcd/e$i" >>"$NODES"; done

mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H-%M-%SZ)
CSV="$OUT/soak-$STAMP.csv"
echo "seconds,process,rss_bytes,disk_bytes" >"$CSV"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "soak: $MODE, $DURATION s, $CLIENTS clients, $KEYS keys of $VALUE_SIZE B; samples every $SAMPLE_EVERY s -> $CSV"
echo "etcd flags: ${ETCD_FLAGS:-(none)}"

sample() {
    local t=$1
    while read -r name pid dir; do
        rss=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$pid/status" 2>/dev/null || echo 0)
        disk=$(du -sb "$dir" 2>/dev/null | cut -f1 || echo 0)
        echo "$t,$name,${rss:-0},${disk:-0}" >>"$CSV"
    done <"$NODES"
}

load() {
    local what=$1; shift
    exec "$BIN/meridian-bench" "$@" --clients "$CLIENTS" --workloads put --duration "$DURATION" \
        --keys "$KEYS" --value-size "$VALUE_SIZE" --json-out "$OUT/soak-$STAMP-$what.json" \
        >"$WORK/load-$what.log" 2>&1
}

watch_load() {
    local started=$SECONDS
    while :; do
        local alive=0
        for pid in "${LOAD_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 1 ] || break
        sample $((SECONDS - started + OFFSET))
        local elapsed=$((SECONDS - started))
        printf '\r  %d/%d s' "$elapsed" "$((DURATION + 4))" >&2
        sleep "$SAMPLE_EVERY"
    done
    echo >&2
    for pid in "${LOAD_PIDS[@]}"; do wait "$pid"; done
    LOAD_PIDS=()
}

OFFSET=0
sample 0
if [ "$MODE" = concurrent ]; then
    load meridian --meridian-lab "$WORK/meridian" & LOAD_PIDS+=($!)
    load etcd --etcd "$ETCD_ENDPOINTS" & LOAD_PIDS+=($!)
    watch_load
else
    load meridian --meridian-lab "$WORK/meridian" & LOAD_PIDS+=($!)
    watch_load
    OFFSET=$((DURATION + 4))
    load etcd --etcd "$ETCD_ENDPOINTS" & LOAD_PIDS+=($!)
    watch_load
fi
sample end

python3 - "$CSV" "$OUT/soak-$STAMP-meridian.json" "$OUT/soak-$STAMP-etcd.json" <<'PY'
import csv, json, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["process"] and r["disk_bytes"]]
mib = 1024 * 1024
print(f"\n{'process':<22}{'RSS first':>11}{'RSS peak':>11}{'RSS last':>11}{'disk peak':>11}{'disk last':>11}  (MiB)")
for name in sorted({r["process"] for r in rows}):
    mine = [r for r in rows if r["process"] == name]
    rss = [int(r["rss_bytes"]) for r in mine]
    disk = [int(r["disk_bytes"]) for r in mine]
    print(f"{name:<22}{rss[0]/mib:>11.0f}{max(rss)/mib:>11.0f}{rss[-1]/mib:>11.0f}{max(disk)/mib:>11.0f}{disk[-1]/mib:>11.0f}")
for path in sys.argv[2:]:
    for r in json.load(open(path)):
        ops = r["ops_per_second"]
        print(f"{r['system']:<10} {r['ops']:,} puts, {ops:,.0f} puts/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  errors {r['errors']}")
PY
