# Shared by the bench-*.sh scripts (sourced, with BIN set): serves a firmware repository over
# loopback HTTP (git's dumb protocol), starts `$BIN serve` on a temporary data dir and a free
# port (with the extra VAR=value settings of the array SERVE_ENV, if set), and registers a
# user (the first one: the admin). Throttling (SPEC §8) is off (PU_THROTTLE_RULES=off): the
# benchmarks measure capacity, which the per-topic limits would cut; a SERVE_ENV entry
# PU_THROTTLE_RULES=... overrides it. Sets WORK, GIT_PORT, PORT, API, TOKEN and json(); everything
# it starts is stopped when the calling script exits (and a function extra_cleanup the caller
# defined is called then too).

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # only what it started: a caller's other children are the caller's to stop
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap 'cleanup; if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# a firmware repository served with git's dumb HTTP protocol
mkdir -p "$WORK/src" "$WORK/www"
git -C "$WORK/src" init -q -b main
cat > "$WORK/src/env_example.json" <<'JSON'
{"WIFI_SSID": "ssid", "WIFI_PASS": "pass"}
JSON
cat > "$WORK/src/schema_example.json" <<'JSON'
{"input_base_topic": ["update/pepeunit", "env_update/pepeunit", "schema_update/pepeunit", "log_sync/pepeunit"],
 "output_base_topic": ["state/pepeunit", "log/pepeunit"],
 "input_topic": ["set_fan_state/pepeunit"], "output_topic": ["current_temp/pepeunit"]}
JSON
echo "print('hello')" > "$WORK/src/main.py"
git -C "$WORK/src" add -A
git -C "$WORK/src" -c user.name=bench -c user.email=bench@localhost commit -q -m v1
git -C "$WORK/src" tag v1.0.0
git clone -q --bare "$WORK/src" "$WORK/www/firmware.git"
git -C "$WORK/www/firmware.git" update-server-info
GIT_PORT="$(free_port)"
python3 -m http.server "$GIT_PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)

PORT="$(free_port)"
# the firmware repository is served on loopback: a trial setting, never for production
env PU_ALLOW_LOCAL_NETWORK=true PU_THROTTLE_RULES=off PU_DATA_DIR="$WORK/data" PU_HTTP_BIND="127.0.0.1:$PORT" PU_DOMAIN="localhost:$PORT" PU_LOG=warn \
    ${SERVE_ENV[@]+"${SERVE_ENV[@]}"} "$BIN" serve >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$PORT/pepeunit/api/v1"
for _ in $(seq 100); do curl -fs "$API/metrics" >/dev/null 2>&1 && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
curl -fs -X POST "$API/users" -H 'content-type: application/json' -d '{"login":"bench","password":"bench-password"}' >/dev/null
TOKEN="$(curl -fs -X POST "$API/users/auth" -H 'content-type: application/json' -d '{"credentials":"bench","password":"bench-password"}' | json "['token']")"
