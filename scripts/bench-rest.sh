#!/usr/bin/env bash
# Measures the device REST endpoints (env, schema, state storage) of a release build on this
# machine; the figures go into BENCHMARKS.md.
#
#   scripts/bench-rest.sh [duration-seconds]
#
# Starts `pepeunit serve` (SQLite, a temporary data dir, a free loopback port), serves a small
# firmware repository over loopback HTTP, creates user, registry, repo and unit through the
# REST API, then runs `pepeunit load rest`: closed loop (throughput) and open loop at
# 1000 req/s (latency). Everything it starts is stopped on exit. Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${1:-10}"
BIN="$ROOT/target/release/pepeunit"
cd "$ROOT"
cargo build --release --quiet

# shellcheck source=scripts/bench-instance.sh
source "$ROOT/scripts/bench-instance.sh"
REG="$(curl -fs -X POST "$API/repository_registry" -H "x-auth-token: $TOKEN" -H 'content-type: application/json' \
    -d "{\"platform\":\"Gitlab\",\"repository_url\":\"http://127.0.0.1:$GIT_PORT/firmware.git\",\"is_public_repository\":true}" | json "['uuid']")"
REPO="$(curl -fs -X POST "$API/repos" -H "x-auth-token: $TOKEN" -H 'content-type: application/json' \
    -d "{\"repository_registry_uuid\":\"$REG\",\"default_branch\":\"main\",\"visibility_level\":\"Public\",\"name\":\"bench_repo\",\"is_compilable_repo\":false}" | json "['uuid']")"
UNIT="$(curl -fs -X POST "$API/units" -H "x-auth-token: $TOKEN" -H 'content-type: application/json' \
    -d "{\"repo_uuid\":\"$REPO\",\"visibility_level\":\"Public\",\"name\":\"bench_unit\",\"is_auto_update_from_repo_unit\":true}" | json "['uuid']")"
UNIT_TOKEN="$(curl -fs "$API/units/env/$UNIT" -H "x-auth-token: $TOKEN" | json "['PU_AUTH_TOKEN']")"

echo "machine: $(nproc) cores, $(uname -r); server and load generator share them"
for endpoints in ${BENCH_ENDPOINTS:-env,schema,get_state,set_state env schema get_state set_state}; do
    "$BIN" load rest --url "http://127.0.0.1:$PORT" --unit "$UNIT" --token "$UNIT_TOKEN" \
        --concurrency 64 --duration "$DURATION" --endpoints "$endpoints"
done
"$BIN" load rest --url "http://127.0.0.1:$PORT" --unit "$UNIT" --token "$UNIT_TOKEN" \
    --rate 1000 --duration "$DURATION"
