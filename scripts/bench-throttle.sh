#!/usr/bin/env bash
# Throttling and metering on vs off in one run (issue 18, part 6; goal: at most 5% slower).
# Each pair of rows is two `pepeunit load mqtt` runs on the same workload (in-process instance,
# embedded broker, SQLite, loopback only, stops by itself): "off" with PU_THROTTLE_RULES=off and
# PU_LOAD_METERING=false, "on" with the default rules' patterns at limits no run reaches
# (`--throttle pass`: every message is looked up and takes a token, none is dropped) and the
# meter on. The pairs alternate off/on ROUNDS times so that drift of the machine hits both.
#
#   scripts/bench-throttle.sh [seconds] [rounds]     (default 10 s per run, 3 rounds)
#
# Prints one row per run and the median ratio per workload; the figures go into BENCHMARKS.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-10}"
ROUNDS="${2:-3}"
BIN="${PU_BIN:-$ROOT/target/release/pepeunit}"
cd "$ROOT"
[ -n "${PU_BIN:-}" ] || cargo build --release --quiet
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT

run() {
    local workload="$1" mode="$2"
    shift 2
    local flags=(--throttle off --metering off)
    [ "$mode" = on ] && flags=(--throttle pass --metering on)
    PU_LOG=error "$BIN" load mqtt --duration "$SECS" "${flags[@]}" "$@" 2>/dev/null |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
print("\t".join(str(x) for x in [sys.argv[1], sys.argv[2], r["rate_target_per_s"] or "full", r["qos"],
      r["bare_subscriber_per_s"], r["core_processed_per_s"], r["acknowledged_per_s"], r["throttled"],
      r["throttle_topics"], r["metered_topics"], r["core_drain_ms_after_stop"]]))
' "$workload" "$mode" | tee -a "$RESULTS"
}

echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'workload\tmode\toffered/s\tqos\tbare/s\tcore/s\tacked/s\tthrottled\tbuckets\tmetered\tdrain ms\n'
for _ in $(seq "$ROUNDS"); do
    for mode in off on; do
        # QoS 0 at full speed: the most messages through the publish hook and the shards
        run "qos0 full, 32 units, state+log+node" "$mode" --units 32 --qos 0 --topics state,log,node
        # QoS 1 (PUBACK after commit), 10k topics: the buckets and the meter at their largest
        run "qos1 full, 200 units x 50 nodes" "$mode" --units 200 --nodes-per-unit 50 --qos 1 --topics node
    done
done
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    w, mode, _, _, bare, core, acked, *_ = line.rstrip("\n").split("\t")
    rows[w][mode].append((float(core), float(acked)))
print()
for w, modes in rows.items():
    off, on = modes["off"], modes["on"]
    core = statistics.median(o[0] for o in on) / statistics.median(o[0] for o in off)
    acked = statistics.median(o[1] for o in on) / max(statistics.median(o[1] for o in off), 1)
    print(f"{w}: on/off core processed {core:.3f}, acknowledged {acked:.3f} (median of {len(on)})")
PY
