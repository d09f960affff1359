#!/usr/bin/env bash
# QoS 1 log ingest from outside devices (issue 16, part 3): a release build of `pepeunit serve`
# in external mode on Debian's mosquitto, `mosquitto_pub -l` processes as the devices (one unit
# each, one log line per message, with the device's timestamp as the official client sends
# it) and, in the same run, a bare `mosquitto_sub` on the core's topic filter as the yardstick.
# Reports how fast each received the lines and the ratio; the figures go into BENCHMARKS.md.
#
#   scripts/bench-ingest.sh [lines] [publishers]          (defaults: 200000 8)
#
# Environment: BENCH_SERVE_ENV="PU_CLICKHOUSE_URL=http://127.0.0.1:8123 ..." adds settings of
# the instance (e.g. ClickHouse or PostgreSQL for the log store); MOSQ_INFLIGHT (default 1000)
# is mosquitto's max_inflight_messages. Needs mosquitto and mosquitto-clients
# (apt-get install -y mosquitto mosquitto-clients). Loopback only; stops everything it starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINES="${1:-200000}"
PUBS="${2:-8}"
BIN="$ROOT/target/release/pepeunit"
for tool in mosquitto mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "needs $tool: apt-get install -y mosquitto mosquitto-clients" >&2
        exit 1
    }
done
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
cd "$ROOT"
cargo build --release --quiet

MOSQ_DIR="$(mktemp -d)"
MPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$MOSQ_DIR/mosquitto.conf" <<EOF
listener $MPORT 127.0.0.1
allow_anonymous true
max_inflight_messages ${MOSQ_INFLIGHT:-1000}
max_queued_messages 10000000
persistence false
log_dest stderr
EOF
if [ "$(id -u)" = 0 ]; then echo "user root" >>"$MOSQ_DIR/mosquitto.conf"; fi
"$MOSQUITTO" -c "$MOSQ_DIR/mosquitto.conf" 2>"$MOSQ_DIR/mosquitto.log" &
MOSQ_PID=$!

# shellcheck disable=SC2206
SERVE_ENV=(PU_MQTT_MODE=external PU_MQTT_BACKEND_HOST=127.0.0.1 PU_MQTT_BACKEND_PORT="$MPORT"
    PU_MQTT_PORT="$MPORT" ${BENCH_SERVE_ENV:-})
# shellcheck source=scripts/bench-instance.sh
source "$ROOT/scripts/bench-instance.sh"
PIDS+=("$MOSQ_PID")
trap 'cleanup; rm -rf "$MOSQ_DIR"' EXIT

REG="$(curl -fs -X POST "$API/repository_registry" -H "x-auth-token: $TOKEN" -H 'content-type: application/json' \
    -d "{\"platform\":\"Gitlab\",\"repository_url\":\"http://127.0.0.1:$GIT_PORT/firmware.git\",\"is_public_repository\":true}" | json "['uuid']")"
REPO="$(curl -fs -X POST "$API/repos" -H "x-auth-token: $TOKEN" -H 'content-type: application/json' \
    -d "{\"repository_registry_uuid\":\"$REG\",\"default_branch\":\"main\",\"visibility_level\":\"Public\",\"name\":\"bench_repo\",\"is_compilable_repo\":false}" | json "['uuid']")"
UNITS=()
for i in $(seq "$PUBS"); do
    UNITS+=("$(curl -fs -X POST "$API/units" -H "x-auth-token: $TOKEN" -H 'content-type: application/json' \
        -d "{\"repo_uuid\":\"$REPO\",\"visibility_level\":\"Public\",\"name\":\"bench_unit_$i\",\"is_auto_update_from_repo_unit\":true}" | json "['uuid']")")
done

echo "machine: $(nproc) cores, $(uname -r); broker, instance, devices and subscriber share them"
echo "instance: external mode on mosquitto $("$MOSQUITTO" -h 2>/dev/null | head -1 | awk '{print $3}'), max_inflight_messages ${MOSQ_INFLIGHT:-1000}, ${BENCH_SERVE_ENV:-embedded SQLite store}"
python3 - "$API" "$TOKEN" "$MPORT" "localhost:$PORT" "$LINES" "$WORK" "${UNITS[@]}" <<'PY'
import datetime, json, subprocess, sys, time, urllib.request

api, token, mport, domain, lines, work = sys.argv[1:7]
units = sys.argv[7:]
lines = int(lines)
per = lines // len(units)
lines = per * len(units)

def metrics():
    req = urllib.request.Request(api + "/metrics/mqtt", headers={"x-auth-token": token})
    return json.load(urllib.request.urlopen(req))

deadline = time.time() + 30
while not (m := metrics())["backend_connected"]:
    if time.time() > deadline:
        sys.exit("the instance never connected to mosquitto")
    time.sleep(0.1)
base = m["counters"]["logs_stored"]

# the devices' lines, written before the clock starts
files = []
now = datetime.datetime.now(datetime.timezone.utc)
for d, unit in enumerate(units):
    path = f"{work}/device-{d}.txt"
    with open(path, "w") as f:
        for i in range(per):
            at = (now + datetime.timedelta(microseconds=i)).isoformat()
            f.write(json.dumps({"level": "Info", "text": f"device {d} line {i}", "create_datetime": at}) + "\n")
    files.append((path, f"{domain}/output_base_topic/{unit}/log/pepeunit"))

bare = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", mport, "-q", "1",
                         "-t", f"{domain}/+/+/+/pepeunit", "-C", str(lines)],
                        stdout=subprocess.DEVNULL)
time.sleep(1.0)  # subscribed
start = time.time()
pubs = [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", mport, "-q", "1", "-t", topic, "-l"],
                         stdin=open(path)) for path, topic in files]
published = bare_done = stored_done = None
limit = start + 600
while time.time() < limit and (stored_done is None or bare_done is None):
    t = time.time()
    if published is None and all(p.poll() is not None for p in pubs):
        published = t
    if bare_done is None and bare.poll() is not None:
        bare_done = t
    if stored_done is None and metrics()["counters"]["logs_stored"] - base >= lines:
        stored_done = t
    time.sleep(0.02)
bare.kill()
c = metrics()["counters"]
if stored_done is None or bare_done is None:
    sys.exit(f"not everything arrived within 600 s: stored {c['logs_stored'] - base} of {lines}")
rate = lambda t: lines / (t - start)
print(json.dumps({
    "lines": lines, "publishers": len(units),
    "published_per_s": round(rate(published or stored_done)),
    "bare_subscriber_per_s": round(rate(bare_done)),
    "stored_per_s": round(rate(stored_done)),
    "stored_vs_bare": round(rate(stored_done) / rate(bare_done), 2),
    "stored": c["logs_stored"] - base, "duplicates_skipped": c["log_duplicates_skipped"],
    "batch_errors": c["batch_errors"], "redeliveries_requested": c["redeliveries_requested"],
}))
PY
