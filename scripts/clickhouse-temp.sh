# Shared by scripts that need a throwaway ClickHouse (sourced): start_temp_clickhouse DIR PORT
# BINARY writes a loopback-only config into DIR (data, tmp, users there), starts the server in
# the background, sets CH_PID, and waits up to 20 s for it to answer /ping (returns 1 with its
# log on stderr otherwise). The caller stops CH_PID (also after a failure) and removes DIR.

start_temp_clickhouse() {
    local dir="$1" port="$2" bin="$3"
    mkdir -p "$dir"
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$port</http_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
    cat >"$dir/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
XML
    (cd "$dir" && exec "$bin" --config-file="$dir/config.xml" >"$dir/out.log" 2>&1) &
    CH_PID=$!
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/ping" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "ClickHouse did not start:" >&2
    tail -20 "$dir/out.log" >&2
    return 1
}
