#!/usr/bin/env bash
# Measures GraphQL against REST for the same objects on a release build of this machine; the
# figures go into BENCHMARKS.md.
#
#   scripts/bench-graphql.sh [duration-seconds] [units]
#
# Starts `pepeunit serve` (SQLite, a temporary data dir, a free loopback port), serves a small
# firmware repository over loopback HTTP, creates a user through the REST API, then runs
# `pepeunit load graphql`, which creates registry, repo and units (each with two nodes) and
# measures getUnit, getUnits with unitNodes and setStateStorage against their REST twins:
# closed loop with 64 clients (throughput, ratio) and open loop at 1000 req/s (latency).
# Everything it starts is stopped on exit. Loopback only. PU_BIN=path skips the build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${1:-5}"
UNITS="${2:-20}"
cd "$ROOT"
if [ -z "${PU_BIN:-}" ]; then
    cargo build --release --quiet
    PU_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pepeunit"
fi
BIN="$PU_BIN"

# shellcheck source=scripts/bench-instance.sh
source "$ROOT/scripts/bench-instance.sh"

echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); server and load generator share them"
"$BIN" load graphql --url "http://127.0.0.1:$PORT" --token "$TOKEN" \
    --firmware-url "http://127.0.0.1:$GIT_PORT/firmware.git" --units "$UNITS" \
    --concurrency 64 --duration "$DURATION" --rate 1000 ${BENCH_JSON:+--json}
