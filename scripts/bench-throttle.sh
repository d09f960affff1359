#!/usr/bin/env bash
# Throttling and metering on vs off in one run (issue 18, part 6; goal: at most 5% slower).
# Each pair of rows is two `pepeunit load mqtt` runs on the same workload (in-process instance,
# embedded broker, SQLite, loopback only, stops by itself): "off" with PU_THROTTLE_RULES=off and
# PU_LOAD_METERING=false, "on" with the default rules' patterns at limits no run reaches
# (`--throttle pass`: every message is looked up and takes a token, none is dropped) and the
# meter on. Each round runs every workload off and on, the order swapped every other round, so
# that drift of the machine hits both. At full speed the cost shows as fewer messages per
# second; at a fixed offered rate (both keep up) as more CPU per message (the whole process:
# instance, broker, publishers and bare subscriber; /proc ticks of 10 ms).
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
      r["bare_subscriber_per_s"], r["core_processed_per_s"], r["acknowledged_per_s"],
      r["process_cpu_us_per_message"], r["throttled"], r["throttle_topics"], r["metered_topics"],
      r["core_drain_ms_after_stop"]]))
' "$workload" "$mode" | tee -a "$RESULTS"
}

echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'workload\tmode\toffered/s\tqos\tbare/s\tcore/s\tacked/s\tcpu us/msg\tthrottled\tbuckets\tmetered\tdrain ms\n'
for round in $(seq "$ROUNDS"); do
    modes=(off on)
    [ $((round % 2)) = 0 ] && modes=(on off)
    for mode in "${modes[@]}"; do
        # QoS 0 at full speed: the most messages through the publish hook and the shards
        run "qos0 full, 32 units, state+log+node" "$mode" --units 32 --qos 0 --topics state,log,node
        # the same at a rate both keep up with: the cost as CPU per message
        run "qos0 40k/s, 32 units, state+log+node" "$mode" --units 32 --qos 0 --topics state,log,node --rate 40000
        # QoS 1 (PUBACK after commit) over 10k topics: the buckets and the meter at their
        # largest, at a rate both keep up with
        run "qos1 8k/s, 200 units x 50 nodes" "$mode" --units 200 --nodes-per-unit 50 --qos 1 --topics node --rate 8000
    done
done
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    w, mode, _, _, bare, core, acked, cpu, *_ = line.rstrip("\n").split("\t")
    rows[w][mode].append((float(core), float(cpu)))
print()
med = lambda xs: statistics.median(xs)
for w, modes in rows.items():
    off, on = modes["off"], modes["on"]
    core = med(o[0] for o in on) / med(o[0] for o in off)
    cpu = med(o[1] for o in on) / med(o[1] for o in off)
    print(f"{w}: on/off messages processed {core:.3f}, CPU per message {cpu:.3f} (medians of {len(on)})")
PY
