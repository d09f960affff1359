#!/usr/bin/env bash
# Runs the whole test suite: the one command for developers and CI (.ci/run calls it).
#
#   scripts/test.sh [extra cargo-nextest args...]
#
# On a Debian 12 machine with the Rust toolchain, cargo-nextest and python3 it:
#   1. installs git, postgresql, python3-venv, mosquitto, mosquitto-clients and
#      clickhouse-server with apt when they are missing (mosquitto and ClickHouse are not
#      started: each test starts its own broker or server, tests/common/clickhouse.rs);
#   2. starts the PostgreSQL 15 cluster on 127.0.0.1:5432 and gives the `postgres` role a
#      password, then exports PU_TEST_POSTGRES_URL (tests create/drop their own databases);
#   3. creates a venv with pepeunit-client[all] 1.3.x, openapi-spec-validator 0.9.0 (the
#      OpenAPI 3.1 check of tests/openapi.rs) and Authlib 1.9.10 with requests 2.34.2 (the
#      OIDC relying party of tests/oidc.rs) and exports PU_TEST_PYTHON, and one with
#      bovine-herd 0.5.19 (the ActivityPub interop peer) and exports PU_TEST_BOVINE_PYTHON;
#   4. exports PU_TEST_MOSQUITTO (the broker binary), PU_TEST_CLICKHOUSE (the
#      clickhouse-server binary, 18.16 on Debian 12) and PU_TEST_REQUIRE_ALL=1 (tests needing
#      PostgreSQL, Python, mosquitto or ClickHouse fail, not skip);
#   5. runs cargo fmt --check, cargo clippy -D warnings and cargo nextest run; every step runs
#      even when an earlier one failed, and the script exits non-zero if any failed. Under CI
#      (CI set) it builds without incremental compilation; it warns when the disk is short.
#
# Environment:
#   PU_TEST_SETUP_ONLY=1    do steps 1-4 only, then print the exports (to eval in a shell)
#   PU_TEST_VENV=DIR        venv location (default target/test-venv, relative to the repo root)
#   PU_TEST_POSTGRES_URL    when already set, use that server and leave the local cluster alone
#   PU_TEST_PG_PORT=N       port for the local cluster (default 5432)
#   PU_TEST_REQUIRE_ALL=0   let tests skip when a service is missing
#
# Idempotent: a second run installs, restarts and reinstalls nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PG_VERSION=15
PG_CLUSTER=main
PG_PORT="${PU_TEST_PG_PORT:-5432}"
PG_PASSWORD=pepeunit
PEPEUNIT_CLIENT_REQ='pepeunit-client[all]>=1.3,<1.4'
OPENAPI_VALIDATOR_REQ='openapi-spec-validator==0.9.0'
OIDC_RP_REQS=('authlib==1.9.10' 'requests==2.34.2')
MOSQUITTO_BIN=/usr/sbin/mosquitto
CLICKHOUSE_BIN=/usr/sbin/clickhouse-server
NGINX_BIN=/usr/sbin/nginx

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

section() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'scripts/test.sh: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
section "system packages"
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
if ! dpkg -s "postgresql-$PG_VERSION" >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    missing+=(postgresql)
fi
# python3-venv provides ensurepip for Debian's python3; a python3 that has it already
# (e.g. a pyenv build) does not need the package.
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! dpkg -s python3-venv >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ! dpkg -s mosquitto >/dev/null 2>&1 || [[ ! -x $MOSQUITTO_BIN ]]; then
    missing+=(mosquitto)
fi
dpkg -s mosquitto-clients >/dev/null 2>&1 || missing+=(mosquitto-clients)
if ! dpkg -s clickhouse-server >/dev/null 2>&1 || [[ ! -x $CLICKHOUSE_BIN ]]; then
    missing+=(clickhouse-server)
fi
# the deployment's proxy config (deploy/nginx.conf) is tested in front of a real instance
if [[ ! -x $NGINX_BIN ]]; then
    missing+=(nginx-light)
fi
if ((${#missing[@]})); then
    note "installing: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    apt_opts=(-o DPkg::Lock::Timeout=300 -q)
    apt-get "${apt_opts[@]}" update </dev/null
    # C.UTF-8 always exists; an unset or ungenerated locale would make initdb fail.
    LC_ALL=C.UTF-8 apt-get "${apt_opts[@]}" install -y "${missing[@]}" </dev/null
else
    note "git, postgresql-$PG_VERSION, python3 venv, mosquitto, clickhouse-server, nginx: present"
fi
[[ -x $MOSQUITTO_BIN ]] || die "$MOSQUITTO_BIN is missing after installing mosquitto"
export PU_TEST_MOSQUITTO="$MOSQUITTO_BIN"
[[ -x $CLICKHOUSE_BIN ]] || die "$CLICKHOUSE_BIN is missing after installing clickhouse-server"
export PU_TEST_CLICKHOUSE="$CLICKHOUSE_BIN"
[[ -x $NGINX_BIN ]] || die "$NGINX_BIN is missing after installing nginx-light"
export PU_TEST_NGINX="$NGINX_BIN"
# fault tests start (and restart) private PostgreSQL clusters with these
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || die "$PG_BIN/initdb or pg_ctl is missing"
export PU_TEST_PG_BIN="$PG_BIN"

# ---------------------------------------------------------------------------------------------
section "PostgreSQL"
if [[ -n ${PU_TEST_POSTGRES_URL:-} ]]; then
    note "PU_TEST_POSTGRES_URL is set by the caller: not touching the local cluster"
else
    [[ $(id -u) -eq 0 ]] || die "need root to manage the local PostgreSQL cluster (or set PU_TEST_POSTGRES_URL)"
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { found = 1 } END { exit !found }'; then
        note "creating cluster $PG_VERSION/$PG_CLUSTER"
        LC_ALL=C.UTF-8 pg_createcluster "$PG_VERSION" "$PG_CLUSTER"
    fi

    conf_dir="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/conf.d"
    conf_file="$conf_dir/pepeunit-test.conf"
    conf_want="# Written by pepeunit scripts/test.sh: the test suite connects over TCP on loopback.
listen_addresses = '127.0.0.1'
port = $PG_PORT
"
    conf_changed=0
    if ! printf '%s' "$conf_want" | cmp -s - "$conf_file" 2>/dev/null; then
        mkdir -p "$conf_dir"
        printf '%s' "$conf_want" >"$conf_file"
        chown postgres:postgres "$conf_file" 2>/dev/null || true
        conf_changed=1
        note "wrote $conf_file"
    fi

    # No systemd here, and /run may be a fresh tmpfs: make sure the socket directory exists.
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql

    if pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" status >/dev/null 2>&1; then
        if ((conf_changed)); then
            note "restarting cluster $PG_VERSION/$PG_CLUSTER to apply $conf_file"
            pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart ||
                die "could not restart PostgreSQL $PG_VERSION/$PG_CLUSTER (see the output above)"
        else
            note "cluster $PG_VERSION/$PG_CLUSTER already running"
        fi
    else
        note "starting cluster $PG_VERSION/$PG_CLUSTER"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start ||
            die "could not start PostgreSQL $PG_VERSION/$PG_CLUSTER (see the output above)"
    fi

    ready=0
    for _ in $(seq 1 60); do
        if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
            ready=1
            break
        fi
        sleep 0.5
    done
    if ((!ready)); then
        log="/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
        [[ -r $log ]] && tail -n 20 "$log" >&2
        die "PostgreSQL did not accept connections on 127.0.0.1:$PG_PORT within 30 s"
    fi

    export PU_TEST_POSTGRES_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
    if ! psql "$PU_TEST_POSTGRES_URL" -Atqc 'select 1' >/dev/null 2>&1; then
        note "setting the password of role postgres"
        (cd / && su postgres -c "psql -q -v ON_ERROR_STOP=1 -c \"ALTER USER postgres PASSWORD '$PG_PASSWORD'\"")
    fi
fi
psql "$PU_TEST_POSTGRES_URL" -Atqc 'select 1' >/dev/null ||
    die "cannot log in with PU_TEST_POSTGRES_URL=$PU_TEST_POSTGRES_URL"
note "ready: $PU_TEST_POSTGRES_URL"

# ---------------------------------------------------------------------------------------------
section "Python venv"
VENV="${PU_TEST_VENV:-target/test-venv}"
[[ $VENV == /* ]] || VENV="$ROOT/$VENV"
py_check='import pepeunit_client, httpx, paho.mqtt, openapi_spec_validator, authlib, requests
from importlib.metadata import version
v = version("pepeunit-client")
assert tuple(int(p) for p in v.split(".")[:2]) == (1, 3), "pepeunit-client " + v + " is not 1.3.x"
assert version("openapi-spec-validator") == "0.9.0", version("openapi-spec-validator")
assert version("authlib") == "1.9.10", version("authlib")
assert version("requests") == "2.34.2", version("requests")'
if "$VENV/bin/python" -c "$py_check" >/dev/null 2>&1; then
    note "$VENV has pepeunit-client 1.3.x, openapi-spec-validator 0.9.0, authlib 1.9.10"
else
    if ! "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        note "creating venv $VENV"
        python3 -m venv --clear "$VENV"
    fi
    note "installing $PEPEUNIT_CLIENT_REQ $OPENAPI_VALIDATOR_REQ ${OIDC_RP_REQS[*]}"
    "$VENV/bin/python" -m pip install --quiet "$PEPEUNIT_CLIENT_REQ" "$OPENAPI_VALIDATOR_REQ" "${OIDC_RP_REQS[@]}" </dev/null
    "$VENV/bin/python" -c "$py_check" || die "pepeunit-client, openapi-spec-validator or authlib is not importable from $VENV"
fi
export PU_TEST_PYTHON="$VENV/bin/python"

# ---------------------------------------------------------------------------------------------
section "bovine-herd venv (ActivityPub interop peer)"
# A separate venv: bovine-herd pins its own versions of libraries pepeunit-client also uses.
BOVINE_VENV="${PU_TEST_BOVINE_VENV:-target/bovine-venv}"
[[ $BOVINE_VENV == /* ]] || BOVINE_VENV="$ROOT/$BOVINE_VENV"
bovine_check='import bovine_herd, bovine, hypercorn
from importlib.metadata import version
assert version("bovine-herd") == "0.5.19", version("bovine-herd")'
if "$BOVINE_VENV/bin/python" -c "$bovine_check" >/dev/null 2>&1; then
    note "$BOVINE_VENV has bovine-herd 0.5.19"
else
    if ! "$BOVINE_VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        note "creating venv $BOVINE_VENV"
        python3 -m venv --clear "$BOVINE_VENV"
    fi
    note "installing tests/interop/requirements-bovine.txt"
    "$BOVINE_VENV/bin/python" -m pip install --quiet -r "$ROOT/tests/interop/requirements-bovine.txt" </dev/null
    "$BOVINE_VENV/bin/python" -c "$bovine_check" || die "bovine-herd is not importable from $BOVINE_VENV"
fi
export PU_TEST_BOVINE_PYTHON="$BOVINE_VENV/bin/python"
export PU_TEST_REQUIRE_ALL="${PU_TEST_REQUIRE_ALL:-1}"

if [[ ${PU_TEST_SETUP_ONLY:-0} == 1 ]]; then
    section "setup only (PU_TEST_SETUP_ONLY=1): not running cargo; to reuse in a shell:"
    printf 'export PU_TEST_POSTGRES_URL=%q\n' "$PU_TEST_POSTGRES_URL"
    printf 'export PU_TEST_PYTHON=%q\n' "$PU_TEST_PYTHON"
    printf 'export PU_TEST_BOVINE_PYTHON=%q\n' "$PU_TEST_BOVINE_PYTHON"
    printf 'export PU_TEST_MOSQUITTO=%q\n' "$PU_TEST_MOSQUITTO"
    printf 'export PU_TEST_CLICKHOUSE=%q\n' "$PU_TEST_CLICKHOUSE"
    printf 'export PU_TEST_NGINX=%q\n' "$PU_TEST_NGINX"
    printf 'export PU_TEST_PG_BIN=%q\n' "$PU_TEST_PG_BIN"
    printf 'export PU_TEST_REQUIRE_ALL=%q\n' "$PU_TEST_REQUIRE_ALL"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
failed=()
step() {
    local name=$1
    shift
    section "$name"
    local start=$SECONDS
    if "$@"; then
        note "$name: ok ($((SECONDS - start)) s)"
    else
        local rc=$?
        note "$name: FAILED with exit code $rc ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

section "build"
# A clean clone (CI) gains nothing from incremental compilation: it only writes a second copy
# of our crate's intermediate files (gigabytes) and slows the first build. Developers keep it.
if [[ -n ${CI:-} && -z ${CARGO_INCREMENTAL:-} ]]; then
    export CARGO_INCREMENTAL=0
    note "CI: CARGO_INCREMENTAL=0"
fi
# A clean build of the tests plus clippy's check take about 9.4 GB in target/ (2026-12-07).
NEED_GB=12
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$target_dir"
free_gb=$(df -P -BG "$target_dir" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
note "free disk under $target_dir: ${free_gb} GB"
if [[ $free_gb =~ ^[0-9]+$ ]] && ((free_gb < NEED_GB)); then
    note "WARNING: less than $NEED_GB GB free; the build may stop with 'No space left on device'"
fi

step "cargo fmt" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
step "cargo nextest" cargo nextest run --workspace --no-fail-fast "$@"

section "result"
if ((${#failed[@]})); then
    note "failed: ${failed[*]}"
    exit 1
fi
note "fmt, clippy and tests passed"
