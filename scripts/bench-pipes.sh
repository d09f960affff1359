#!/usr/bin/env bash
# Data pipes in the MQTT core (issue 17, part 7): node values/s processed and stored with a data
# pipe on every node, against the bare subscriber of the same run, and the pipelines' memory.
# Each row is one `pepeunit load mqtt --topics node` run (in-process instance, embedded broker,
# SQLite, loopback only, stops by itself); "none" is the same run without pipes.
#
#   scripts/bench-pipes.sh [seconds]          (default 10 per run)
#
# BENCH_CLICKHOUSE=1 adds the 10k-node runs with the rows in ClickHouse (a temporary
# clickhouse-server on a free loopback port, its own data dir, stopped at the end; binary from
# PU_TEST_CLICKHOUSE or /usr/sbin/clickhouse-server); BENCH_SQLITE=0 leaves out the SQLite runs. Prints one table row per run; the
# figures go into BENCHMARKS.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-10}"
BIN="$ROOT/target/release/pepeunit"
cd "$ROOT"
cargo build --release --quiet

CH_DIR=""
CH_PID=""
cleanup() {
    [ -n "$CH_PID" ] && kill "$CH_PID" 2>/dev/null && wait "$CH_PID" 2>/dev/null
    [ -n "$CH_DIR" ] && rm -rf "$CH_DIR"
    return 0
}
trap cleanup EXIT

start_clickhouse() {
    local bin="${PU_TEST_CLICKHOUSE:-/usr/sbin/clickhouse-server}"
    [ -x "$bin" ] || { echo "needs $bin (apt-get install -y clickhouse-server)" >&2; exit 1; }
    CH_DIR="$(mktemp -d)"
    CH_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # shellcheck source=scripts/clickhouse-temp.sh
    source "$ROOT/scripts/clickhouse-temp.sh"
    start_temp_clickhouse "$CH_DIR" "$CH_PORT" "$bin" || exit 1
}

row() {
    local label="$1"
    shift
    PU_LOG=error "$BIN" load mqtt --topics node --duration "$SECS" "$@" 2>/dev/null |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
mem = r["pipe_memory_bytes_per_pipeline"]
cells = [
    sys.argv[1],
    "%sx%s" % (r["units"], r["nodes_per_unit"]),
    r["rate_target_per_s"] or "full",
    r["pipes"] or "none",
    "%.1fk" % (r["bare_subscriber_per_s"] / 1000),
    "%.1fk" % (r["core_processed_per_s"] / 1000),
    "%.2f" % r["core_to_bare_ratio"],
    "%.1fk" % (r["pipe_rows_stored_per_s"] / 1000),
    "%.1f s" % (r["core_drain_ms_after_stop"] / 1000),
    r["pipelines_active"],
    "-" if mem is None else "%s B" % mem,
    "%s MiB" % r["rss_mib_after"],
    r["batch_errors"],
]
print("| " + " | ".join(str(c) for c in cells) + " |")
' "$label"
}

echo "| run | units x nodes | offered/s | pipes | bare/s | core/s | core/bare | pipe rows stored/s | drain | pipelines | bytes/pipeline | RSS after | batch errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
if [ "${BENCH_SQLITE:-1}" = 1 ]; then
    # a few busy nodes: 128 pipelines, all four policies
    for rate in 50000 80000; do
        row "busy nodes" --units 32 --nodes-per-unit 4 --rate "$rate"
        row "busy nodes" --units 32 --nodes-per-unit 4 --rate "$rate" --pipes all
    done
    row "busy nodes" --units 32 --nodes-per-unit 4
    row "busy nodes" --units 32 --nodes-per-unit 4 --pipes all
    # many nodes: 10k pipelines, each policy alone and mixed
    row "10k nodes" --units 200 --nodes-per-unit 50 --rate 50000
    for p in last_value n_records time_window aggregation all; do
        row "10k nodes" --units 200 --nodes-per-unit 50 --rate 50000 --pipes "$p"
    done
    # memory of 10k active pipelines at a rate the machine carries (about 2 values per node)
    row "10k memory" --units 200 --nodes-per-unit 50 --rate 2000
    row "10k memory" --units 200 --nodes-per-unit 50 --rate 2000 --pipes all
    row "10k memory" --units 200 --nodes-per-unit 50 --rate 2000 --pipes aggregation
fi
if [ "${BENCH_CLICKHOUSE:-0}" = 1 ]; then
    start_clickhouse
    for p in none n_records time_window all; do
        if [ "$p" = none ]; then pipes=(); else pipes=(--pipes "$p"); fi
        row "10k nodes, ClickHouse" --units 200 --nodes-per-unit 50 --rate 50000 "${pipes[@]}" \
            --clickhouse-url "http://127.0.0.1:$CH_PORT"
    done
fi
