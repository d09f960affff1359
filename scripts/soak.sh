#!/usr/bin/env bash
# The soak (issue 16, part 4): a release build of `pepeunit serve`, then `pepeunit load soak`
# against it with simulated devices (QoS 1 states, log lines, node values, abrupt reconnects)
# and REST/GraphQL readers; prints the report, writes it as JSON, exits non-zero when what the
# devices sent is not what the instance stored. The figures go into BENCHMARKS.md.
#
#   scripts/soak.sh [embedded|external] [seconds] [devices]     (defaults: embedded 600 2000)
#
# embedded: the default deployment, SQLite and the embedded broker.
# external: mosquitto (Debian's, as scripts/bench-ingest.sh) + PostgreSQL (a new database on the
#           server of PU_SOAK_POSTGRES_URL, default PU_TEST_POSTGRES_URL, dropped at the end) +
#           ClickHouse (PU_TEST_CLICKHOUSE or clickhouse-server, its own temporary data dir).
#
# Environment: SOAK_STATE_SEND_INTERVAL (the instance's PU_STATE_SEND_INTERVAL, default 1, so
# that states sent every second are written rather than throttled), SOAK_ARGS (more flags of
# `pepeunit load soak`, e.g. "--rest-rate 50"), SOAK_JSON (report file, default
# target/soak-MODE.json), PU_BIN (a binary to use instead of building). Loopback only; stops
# everything it starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-embedded}"
SECONDS_RUN="${2:-600}"
DEVICES="${3:-2000}"
case "$MODE" in embedded | external) ;; *)
    echo "usage: scripts/soak.sh [embedded|external] [seconds] [devices]" >&2
    exit 2
    ;;
esac
cd "$ROOT"
if [ -n "${PU_BIN:-}" ]; then
    BIN="$PU_BIN"
else
    cargo build --release --quiet
    BIN="$ROOT/target/release/pepeunit"
fi
# every device is a socket here and one in the instance (or broker)
ulimit -n "$(ulimit -Hn)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

EXTRA_DIR="$(mktemp -d)"
CH=""
EXTRA_PIDS=()
PG_DB=""
PG_ADMIN="${PU_SOAK_POSTGRES_URL:-${PU_TEST_POSTGRES_URL:-}}"
extra_cleanup() {
    for p in "${EXTRA_PIDS[@]+"${EXTRA_PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
    for p in "${EXTRA_PIDS[@]+"${EXTRA_PIDS[@]}"}"; do
        # ClickHouse may take long to stop with many parts: 20 s, then SIGKILL
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$PG_DB" ]; then psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
    rm -rf "$EXTRA_DIR"
}
trap extra_cleanup EXIT

MPORT="$(free_port)"
SOAK_FLAGS=(--mqtt "127.0.0.1:$MPORT")
if [ "$MODE" = embedded ]; then
    SERVE_ENV=(PU_MQTT_BIND="127.0.0.1:$MPORT" PU_MQTT_HOST=127.0.0.1 PU_MQTT_PORT="$MPORT")
    DESCRIBED="embedded broker, SQLite"
else
    MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
    CLICKHOUSE="${PU_TEST_CLICKHOUSE:-$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)}"
    for tool in "$MOSQUITTO" "$CLICKHOUSE"; do
        [ -x "$tool" ] || { echo "needs $tool (apt-get install -y mosquitto clickhouse-server)" >&2; exit 1; }
    done
    [ -n "$PG_ADMIN" ] || { echo "needs PU_SOAK_POSTGRES_URL or PU_TEST_POSTGRES_URL" >&2; exit 1; }
    command -v psql >/dev/null || { echo "needs psql" >&2; exit 1; }

    cat >"$EXTRA_DIR/mosquitto.conf" <<EOF
listener $MPORT 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 10000000
persistence false
log_dest stderr
log_type error
EOF
    if [ "$(id -u)" = 0 ]; then echo "user root" >>"$EXTRA_DIR/mosquitto.conf"; fi
    "$MOSQUITTO" -c "$EXTRA_DIR/mosquitto.conf" 2>"$EXTRA_DIR/mosquitto.log" &
    MOSQ_PID=$!
    EXTRA_PIDS+=("$MOSQ_PID")

    CH_PORT="$(free_port)"
    CH="$EXTRA_DIR/clickhouse"
    # shellcheck source=scripts/clickhouse-temp.sh
    source "$ROOT/scripts/clickhouse-temp.sh"
    ch_ok=1
    start_temp_clickhouse "$CH" "$CH_PORT" "$CLICKHOUSE" || ch_ok=0
    EXTRA_PIDS+=("$CH_PID")
    [ "$ch_ok" = 1 ] || exit 1

    PG_DB="pu_soak_$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')"
    psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
    PG_URL="$(python3 - "$PG_ADMIN" "$PG_DB" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + sys.argv[2], u.query, "")))
PY
)"
    SERVE_ENV=(PU_MQTT_MODE=external PU_MQTT_BACKEND_HOST=127.0.0.1 PU_MQTT_BACKEND_PORT="$MPORT"
        PU_MQTT_HOST=127.0.0.1 PU_MQTT_PORT="$MPORT" PU_DATABASE_URL="$PG_URL"
        PU_CLICKHOUSE_URL="http://127.0.0.1:$CH_PORT" PU_CLICKHOUSE_DATABASE=pepeunit_soak)
    SOAK_FLAGS+=(--broker-pid "$MOSQ_PID")
    DESCRIBED="mosquitto $("$MOSQUITTO" -h 2>/dev/null | head -1 | awk '{print $3}'), PostgreSQL $(psql -tA "$PG_ADMIN" -c 'SHOW server_version' | awk '{print $1}'), ClickHouse $(curl -fs "http://127.0.0.1:$CH_PORT/?query=SELECT%20version()")"
fi
SERVE_ENV+=(PU_STATE_SEND_INTERVAL="${SOAK_STATE_SEND_INTERVAL:-1}")

# shellcheck source=scripts/bench-instance.sh
source "$ROOT/scripts/bench-instance.sh"
SERVE_PID="${PIDS[-1]}"
kill -0 "$SERVE_PID" 2>/dev/null || { echo "pepeunit serve did not start:" >&2; tail -20 "$WORK/serve.log" >&2; exit 1; }

JSON_OUT="${SOAK_JSON:-$ROOT/target/soak-$MODE.json}"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); instance, broker, devices and readers share the cores"
echo "instance: $MODE ($DESCRIBED), PU_STATE_SEND_INTERVAL=${SOAK_STATE_SEND_INTERVAL:-1}, binary $BIN"
status=0
# shellcheck disable=SC2086
"$BIN" load soak --url "http://127.0.0.1:$PORT" --token "$TOKEN" \
    --firmware-url "http://127.0.0.1:$GIT_PORT/firmware.git" \
    --devices "$DEVICES" --duration "$SECONDS_RUN" --pid "$SERVE_PID" "${SOAK_FLAGS[@]}" \
    --json "$JSON_OUT" --progress ${SOAK_ARGS:-} || status=$?
echo "report: $JSON_OUT"
echo "instance data dir at the end: $(du -sh "$WORK/data" | cut -f1)${CH:+, ClickHouse data dir $(du -sh "$CH" | cut -f1)}"
if [ -n "$CH" ]; then
    # every INSERT is a part; merged-away parts stay on disk for old_parts_lifetime (480 s)
    echo "ClickHouse unit_logs parts (all, active, rows in active): $(curl -fs "http://127.0.0.1:$CH_PORT/" \
        --data-binary "SELECT count(), countIf(active), sumIf(rows, active) FROM system.parts WHERE database = 'pepeunit_soak' AND table = 'unit_logs' FORMAT TSV" | tr '\t' ' ')"
fi
if grep -qE "panicked| ERROR " "$WORK/serve.log"; then
    echo "the instance logged errors:"
    grep -E "panicked| ERROR " "$WORK/serve.log" | tail -20
fi
exit $status
