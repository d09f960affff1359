"""Drives the official pepeunit-client (PyPI 1.3.x) over REST against a test instance.

Usage: python client_rest.py WORK_DIR

WORK_DIR holds the env.json the server gave the unit's owner. The script uses the client's own
REST client and file manager the way a device does on boot and on an update command:
download env.json and schema.json, download the firmware archive (tgz, wbits=9) and extract it
with FileManager.extract_pepeunit_archive, then round-trip the state storage. It prints one JSON
summary line on stdout; anything else goes to stderr.
"""

import json
import os
import sys

from pepeunit_client import PepeunitClient
from pepeunit_client.file_manager import FileManager


def main() -> None:
    work = sys.argv[1]
    env_path = os.path.join(work, "env.json")
    schema_path = os.path.join(work, "schema.json")
    log_path = os.path.join(work, "log.json")
    # SchemaManager reads the schema file on construction: start from an empty one.
    FileManager.write_json(schema_path, {})

    client = PepeunitClient(
        env_file_path=env_path,
        schema_file_path=schema_path,
        log_file_path=log_path,
        enable_mqtt=False,
        enable_rest=True,
        ff_console_log_enable=False,
    )
    # PepeunitClient.download_env/download_schema insist on an MQTT client too; a device
    # without MQTT goes through the REST client directly.
    rest = client.rest_client
    unit_uuid = client.settings.unit_uuid

    rest.download_env(env_path)
    client.settings.load_from_file()
    env = FileManager.read_json(env_path)

    rest.download_schema(schema_path)
    schema = client.schema.update_from_file()

    archive = os.path.join(work, "update.tgz")
    rest.download_update(archive)
    extract_dir = os.path.join(work, "extracted")
    os.makedirs(extract_dir)
    FileManager.extract_pepeunit_archive(archive, extract_dir)
    files = []
    for root, dirs, names in os.walk(extract_dir):
        for name in names:
            full = os.path.join(root, name)
            if os.path.islink(full):
                files.append("LINK:" + os.path.relpath(full, extract_dir))
            else:
                files.append(os.path.relpath(full, extract_dir))
    files.sort()
    with open(os.path.join(extract_dir, "main.py"), encoding="utf-8") as f:
        main_py = f.read()
    archive_env = FileManager.read_json(os.path.join(extract_dir, "env.json"))
    archive_schema = FileManager.read_json(os.path.join(extract_dir, "schema.json"))

    state = json.dumps({"counter": 3, "note": "fan ✓"})
    client.set_state_storage(state)
    stored = client.get_state_storage()

    # what a device asks about its links
    own_output = schema["output_topic"]["current_temp/pepeunit"][0]
    inputs = rest.get_input_by_output(own_output)
    output_uuid = own_output.split("/")[1]
    units = rest.get_units_by_nodes([output_uuid])

    summary = {
        "unit_uuid": unit_uuid,
        "settings_commit": client.settings.PU_COMMIT_VERSION,
        "settings_mqtt_port": client.settings.PU_MQTT_PORT,
        "env": env,
        "schema": schema,
        "files": files,
        "main_py": main_py,
        "archive_env_commit": archive_env.get("PU_COMMIT_VERSION"),
        "archive_schema": archive_schema,
        "state_sent": state,
        "state_raw": stored,
        "state_round_trip": json.loads(stored),
        "inputs_by_output": inputs,
        "units_by_nodes": units,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
