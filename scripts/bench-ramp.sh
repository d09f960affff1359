#!/usr/bin/env bash
# The capacity finder's figures for this machine (issue 18, part 6): a release `pepeunit serve`
# (SQLite, embedded broker, a temporary data dir, a free loopback port), a user with 20 units
# (made by a one-second `pepeunit load graphql` run), then `pepeunit load ramp` on REST and on
# GraphQL with the default bounds (p99 100 ms, 1% errors; 5 s steps from 50/s, x1.5), and on
# MQTT (QoS 1 values of one unit's Output node, PUBACK after the commit; throttling off, as
# bench-instance.sh starts the instance). Writes target/ramp-{rest,graphql,mqtt}.{json,html}
# and prints each ramp's table; the figures go into
# BENCHMARKS.md. Everything it starts is stopped on exit. Loopback only. PU_BIN=path skips the
# build; RAMP_CHANNELS="rest graphql mqtt" (default) picks the channels. The MQTT ramp may go
# to 20,000/s (the ramp's largest --max-rate).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
    --firmware-url "http://127.0.0.1:$GIT_PORT/firmware.git" --units 20 \
    --concurrency 4 --duration 1 --rate 10 >/dev/null
CHANNELS="${RAMP_CHANNELS:-rest graphql mqtt}"
for channel in rest graphql; do
    case " $CHANNELS " in *" $channel "*) ;; *) continue ;; esac
    echo "== $channel"
    "$BIN" load ramp --url "http://127.0.0.1:$PORT" --token "$TOKEN" "--$channel" --quiet \
        --json "$ROOT/target/ramp-$channel.json" --html "$ROOT/target/ramp-$channel.html"
done
case " $CHANNELS " in *" mqtt "*) ;; *) exit 0 ;; esac
UNIT="$(curl -fs "$API/units?limit=1" -H "x-auth-token: $TOKEN" | json "['units'][0]['uuid']")"
echo "== mqtt (unit $UNIT)"
"$BIN" load ramp --url "http://127.0.0.1:$PORT" --token "$TOKEN" --mqtt --unit "$UNIT" --quiet \
    --max-rate 20000 --json "$ROOT/target/ramp-mqtt.json" --html "$ROOT/target/ramp-mqtt.html"
