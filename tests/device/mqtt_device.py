"""Runs the official pepeunit-client (PyPI 1.3.x) as a real device over MQTT.

Usage: python mqtt_device.py WORKDIR [options]   (see --help; notes in CLIENT-NOTES.md)

WORKDIR holds env.json and schema.json as the server generated them. The script builds
PepeunitClient with its default paho MQTT transport and follows the library's documented
device flow: set_mqtt_input_handler, mqtt_client.connect(), subscribe_all_schema_topics(),
set_output_handler, run_main_cycle() (which sends `state` every PU_STATE_SEND_INTERVAL s,
the first one immediately). Like a real device it does not wait for CONNACK before
subscribing and sending its first state (use --wait-connack for a strictly ordered start).

Scenario actions (--log, --publish, --publish-raw, --subscribe) run once the session is
"ready": CONNACK accepted and every SUBSCRIBE sent so far acknowledged.

stdout: one JSON object per line, flushed, as events happen; the last line is
{"event":"summary",...}. Everything else goes to stderr. Exit codes: 0 ok, 2 usage or bad
files, 3 TCP connect failed, 4 broker refused / closed the session or no CONNACK in time,
5 watchdog (hung shutdown), 6 paho's network thread died (exception in a library callback).

The client never restarts itself here: Update runs with RestartMode.ENV_SCHEMA_ONLY (download
archive over REST, extract into WORKDIR, reload env/schema, resubscribe) or, with
--update-action record / --no-rest, through the client's custom_update_handler hook; Reset
is recorded instead of os.execv.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from paho.mqtt import client as paho

from pepeunit_client import PepeunitClient, RestartMode
from pepeunit_client.enums import BaseInputTopicType, BaseOutputTopicType
from pepeunit_client.pepeunit_mqtt_client import PepeunitMqttClient
from pepeunit_client.pepeunit_rest_client import PepeunitRestClient

T0 = time.monotonic()
_out_lock = threading.Lock()

COMMAND_BY_TOPIC = {
    BaseInputTopicType.UPDATE_PEPEUNIT.value: "Update",
    BaseInputTopicType.ENV_UPDATE_PEPEUNIT.value: "EnvUpdate",
    BaseInputTopicType.SCHEMA_UPDATE_PEPEUNIT.value: "SchemaUpdate",
    BaseInputTopicType.LOG_SYNC_PEPEUNIT.value: "LogSync",
    BaseInputTopicType.RESET_PEPEUNIT.value: "Reset",
}
LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error", "critical": "critical"}


def emit(event, **fields):
    rec = {"event": event, "t": round(time.monotonic() - T0, 3)}
    rec.update(fields)
    line = json.dumps(rec, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail_msg(msg):
    sys.stderr.write(f"mqtt_device: {msg}\n")
    sys.stderr.flush()


class State:
    """Everything the callbacks (paho thread) and the main cycle share."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connected = False
        self.connects = 0
        self.disconnects = 0
        self.connack_rc = None
        self.refused = None  # (rc, text) when the broker refused or closed before CONNACK
        self.sub_pending = {}  # mid -> [topics]
        self.sub_early = {}  # mid -> granted (SUBACK seen before the mid was recorded)
        self.subscriptions = []  # {"topic","granted_qos"}
        self.ready = False
        self.ready_count = 0
        self.initial_subscribed = False  # the main thread has run subscribe_all_schema_topics()
        self.stop_reason = None
        self.published = {"state": 0, "log": 0, "output": 0, "raw": 0}
        self.qos_pending = set()
        self.pub_early = set()
        self.acked = 0
        self.commands = []
        self.inputs = []
        self.messages = 0
        self.rest = []
        self.last_state = None
        self.restarts_suppressed = 0
        self.client_settings = None


S = State()


class DeviceMqttClient(PepeunitMqttClient):
    """The library's paho transport, observed: CONNACK/SUBACK/PUBACK/disconnect become events.

    Packets on the wire are the library's own, except that --qos N (default 0, like the
    library) is used for every PUBLISH and SUBSCRIBE.
    """

    def __init__(self, settings, schema_manager, logger, qos):
        super().__init__(settings, schema_manager, logger)
        self.qos = qos

    def _get_client(self):
        client = super()._get_client()  # Client(VERSION1, unit_uuid) + username_pw_set(token, '')
        orig_subscribe = client.subscribe
        qos = self.qos

        def subscribe(topic, qos_=None, *args, **kwargs):
            with S.lock:
                rc, mid = orig_subscribe(topic, qos if qos_ is None else qos_, *args, **kwargs)
                if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                    if mid in S.sub_early:
                        self._record_suback([topic], S.sub_early.pop(mid))
                    else:
                        S.sub_pending[mid] = [topic]
                else:
                    emit("subscribe_failed", topic=topic, rc=int(rc), error=paho.error_string(rc))
            return rc, mid

        client.subscribe = subscribe
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        return client

    # --- paho callbacks (network thread) ---
    def _on_connect(self, client, userdata, flags, rc):
        rc = int(rc)
        S.connack_rc = rc
        if rc == 0:
            with S.lock:
                S.connected = True
                S.connects += 1
            emit("connected", rc=0, session_present=bool(flags.get("session present")),
                 count=S.connects, client_id=self.settings.unit_uuid)
        else:
            S.refused = (rc, paho.connack_string(rc))
            emit("connect_refused", rc=rc, reason=paho.connack_string(rc))
        # the library's handler: logs "Connected to MQTT Broker" and resubscribes everything
        super()._on_connect(client, userdata, flags, rc)
        self._check_ready()

    def _on_disconnect(self, client, userdata, rc):
        rc = int(rc)
        with S.lock:
            was = S.connected
            S.connected = False
            S.disconnects += 1
            S.sub_pending.clear()
            S.ready = False
        emit("disconnected", rc=rc, reason=paho.error_string(rc), was_connected=was)
        if not was and S.connack_rc is None and S.refused is None and S.stop_reason is None:
            S.refused = (None, f"connection closed before CONNACK (rc={rc} {paho.error_string(rc)})")

    def _record_suback(self, topics, granted):
        for topic, g in zip(topics, granted):
            g = int(g)
            S.subscriptions.append({"topic": topic, "granted_qos": g})
            emit("subscribed", topic=topic, granted_qos=g, ok=g < 0x80)

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        granted = [int(g) for g in granted_qos]
        with S.lock:
            topics = S.sub_pending.pop(mid, None)
            if topics is None:
                S.sub_early[mid] = granted
                return
        self._record_suback(topics, granted)
        self._check_ready()

    def _on_publish(self, client, userdata, mid):
        # QoS 0: the packet was written; QoS 1/2: PUBACK/PUBCOMP arrived
        if self.qos == 0:
            return
        with S.lock:
            if mid in S.qos_pending:
                S.qos_pending.discard(mid)
                S.acked += 1
                acked = True
            else:
                S.pub_early.add(mid)  # acknowledged before publish() returned
                acked = False
        if acked:
            emit("acked", mid=mid)

    def _check_ready(self):
        with S.lock:
            go = S.connected and S.initial_subscribed and not S.sub_pending and not S.ready
            if go:
                S.ready = True
                S.ready_count += 1
        if go:
            emit("ready", subscriptions=len(S.subscriptions), connection=S.connects)

    # --- what the library calls ---
    def publish(self, topic, message):
        self.publish_kind(topic, message, self._kind(topic))

    def publish_kind(self, topic, message, kind):
        if not self._client:
            return
        info = self._client.publish(topic, message, qos=self.qos)
        early = False
        with S.lock:
            if self.qos > 0 and info.rc == paho.MQTT_ERR_SUCCESS:
                if info.mid in S.pub_early:
                    S.pub_early.discard(info.mid)
                    S.acked += 1
                    early = True
                else:
                    S.qos_pending.add(info.mid)
            S.published[kind] = S.published.get(kind, 0) + 1
        payload = message if isinstance(message, str) else str(message)
        fields = {"kind": kind, "topic": topic, "payload": payload, "qos": self.qos,
                  "mid": info.mid, "rc": int(info.rc)}
        if kind == "state":
            try:
                S.last_state = json.loads(payload)
            except ValueError:
                pass
        emit("published", **fields)
        if early:
            emit("acked", mid=info.mid)

    def _kind(self, topic):
        base = self.schema_manager.output_base_topic
        if topic in base.get(BaseOutputTopicType.STATE_PEPEUNIT.value, []):
            return "state"
        if topic in base.get(BaseOutputTopicType.LOG_PEPEUNIT.value, []):
            return "log"
        for topics in self.schema_manager.output_topic.values():
            if topic in topics:
                return "output"
        return "raw"


def recording_rest_client(base, skip):
    """The library's REST client with each firmware/env/schema download reported as an event.

    With skip (--no-rest) downloads are not made and leave the files as they are, so
    EnvUpdate/SchemaUpdate still run the client's reload + resubscribe path.
    """

    class Recording(base):
        def _call(self, name, fn, file_path):
            if skip:
                emit("rest", call=name, skipped=True)
                return
            try:
                fn(file_path)
            except Exception as e:  # the client turns this into an Error log; report it too
                S.rest.append({"call": name, "ok": False})
                emit("rest", call=name, ok=False, error=f"{type(e).__name__}: {e}")
                raise
            S.rest.append({"call": name, "ok": True})
            size = os.path.getsize(file_path) if os.path.exists(file_path) else None
            emit("rest", call=name, ok=True, bytes=size)

        def download_update(self, file_path):
            self._call("download_update", super().download_update, file_path)

        def download_env(self, file_path):
            self._call("download_env", super().download_env, file_path)

        def download_schema(self, file_path):
            self._call("download_schema", super().download_schema, file_path)

    return Recording


REAL_RESTART = "--real-restart" in sys.argv


class DeviceClient(PepeunitClient):
    def _restart_program(self):
        if REAL_RESTART:
            # the library's own restart: os.execv of this script with the same arguments, which
            # then reads env.json and schema.json again (what a device does after Reset)
            emit("restarting", host=self.settings.PU_MQTT_HOST, port=self.settings.PU_MQTT_PORT)
            sys.stdout.flush()
            sys.stderr.flush()
            return super()._restart_program()
        # Reset (and RESTART_* update modes) would os.execv/Popen this script: record instead.
        S.restarts_suppressed += 1
        emit("restart_suppressed")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir")
    p.add_argument("--duration", type=float, default=20.0, help="run time bound in seconds (default 20)")
    p.add_argument("--log", action="append", default=[], metavar="LEVEL:TEXT",
                   help="send through client.logger.<level>(TEXT) once ready (repeatable)")
    p.add_argument("--publish", action="append", default=[], metavar="NAME:VALUE",
                   help="client.publish_to_topics(NAME, VALUE) once ready (repeatable)")
    p.add_argument("--publish-every", action="append", default=[], metavar="MS:NAME:VALUE",
                   help="publish_to_topics every MS ms from ready until the end (repeatable)")
    p.add_argument("--publish-raw", action="append", default=[], metavar="TOPIC=VALUE",
                   help="publish VALUE to an arbitrary TOPIC once ready (ACL probes)")
    p.add_argument("--subscribe", action="append", default=[], metavar="TOPIC",
                   help="also subscribe to TOPIC once ready (not renewed on reconnect)")
    p.add_argument("--until-command", action="append", default=[], metavar="CMD",
                   help="exit after this command (Update|EnvUpdate|SchemaUpdate|LogSync|Reset|any) "
                        "has been handled by the client (repeatable)")
    p.add_argument("--until-input", action="append", default=[], metavar="NAME",
                   help="exit after a value arrives on input NAME (schema name, or 'any')")
    p.add_argument("--exit-on-disconnect", action="store_true",
                   help="exit (code 0, reason 'disconnected') when an established session drops")
    p.add_argument("--qos", type=int, choices=[0, 1, 2], default=0,
                   help="QoS of every publish and subscribe (the library always uses 0)")
    p.add_argument("--state-interval", type=float, default=None,
                   help="override PU_STATE_SEND_INTERVAL (seconds)")
    p.add_argument("--cycle-speed", type=float, default=0.1, help="main cycle sleep (library default 0.1)")
    p.add_argument("--no-rest", action="store_true",
                   help="never call REST: Update is recorded via the hook, env/schema downloads are skipped")
    p.add_argument("--update-action", choices=["download", "record"], default=None,
                   help="download: the client's own update path (REST tgz, extract into WORKDIR, reload "
                        "env+schema, no restart); record: custom_update_handler only. "
                        "Default download, or record with --no-rest")
    p.add_argument("--no-version-check", action="store_true",
                   help="ff_version_check_enable=False (act on Update even for the current commit)")
    p.add_argument("--wait-connack", action="store_true",
                   help="wait for CONNACK before subscribing and starting the main cycle")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for CONNACK")
    p.add_argument("--linger", type=float, default=0.3,
                   help="seconds to keep running after an --until-* condition (lets replies flush)")
    p.add_argument("--real-restart", action="store_true",
                   help="on Reset, let the library os.execv this script (a real device restart)")
    p.add_argument("--auth-token", default=None, help="override PU_AUTH_TOKEN (must still look like a JWT)")
    a = p.parse_args(argv)

    def split(s, sep, n, what):
        parts = s.split(sep, n)
        if len(parts) != n + 1 or not all(parts[:n]):
            p.error(f"bad {what}: {s!r}")
        return parts

    a.logs = []
    for s in a.log:
        level, text = split(s, ":", 1, "--log LEVEL:TEXT")
        if level.lower() not in LEVELS:
            p.error(f"bad log level {level!r}")
        a.logs.append((LEVELS[level.lower()], text))
    a.pubs = [tuple(split(s, ":", 1, "--publish NAME:VALUE")) for s in a.publish]
    a.pubs_every = []
    for s in a.publish_every:
        ms, name, value = split(s, ":", 2, "--publish-every MS:NAME:VALUE")
        try:
            a.pubs_every.append([int(ms) / 1000.0, name, value, None])
        except ValueError:
            p.error(f"bad period in {s!r}")
    a.raws = [tuple(split(s, "=", 1, "--publish-raw TOPIC=VALUE")) for s in a.publish_raw]
    a.until_commands = {c.lower() for c in a.until_command}
    a.until_inputs = set(a.until_input)
    if a.update_action is None:
        a.update_action = "record" if a.no_rest else "download"
    if a.no_rest and a.update_action == "download":
        p.error("--update-action download needs REST")
    return a


def main():
    args = parse_args(sys.argv[1:])
    work = os.path.abspath(args.workdir)
    env_path = os.path.join(work, "env.json")
    schema_path = os.path.join(work, "schema.json")
    log_path = os.path.join(work, "log.json")
    deadline = T0 + args.duration
    summary = {"ok": False}

    def finish(code, reason, error=None):
        summary.update({
            "ok": code == 0,
            "exit_reason": reason,
            "connects": S.connects,
            "disconnects": S.disconnects,
            "connack_rc": S.connack_rc,
            "ready": S.ready_count > 0,
            "ready_count": S.ready_count,
            "subscriptions": S.subscriptions,
            "pending_subscriptions": sorted(t for ts in S.sub_pending.values() for t in ts),
            "published": S.published,
            "unacked": len(S.qos_pending),
            "acked": S.acked,
            "last_state": S.last_state,
            "commands": S.commands,
            "inputs": S.inputs,
            "messages": S.messages,
            "rest": S.rest,
            "restarts_suppressed": S.restarts_suppressed,
            "final_commit_version": getattr(S.client_settings, "PU_COMMIT_VERSION", None),
            "elapsed": round(time.monotonic() - T0, 3),
        })
        if error:
            summary["error"] = error
            fail_msg(error)
        emit("summary", **summary)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    # hard bound: whatever hangs (e.g. an unacknowledged QoS>0 message in loop_stop), we exit
    def watchdog():
        time.sleep(max(0.0, deadline - time.monotonic()) + args.connect_timeout + 10)
        finish(5, "watchdog", "watchdog: the client did not stop in time")

    threading.Thread(target=watchdog, daemon=True).start()

    for path in (env_path, schema_path):
        if not os.path.isfile(path):
            finish(2, "bad_workdir", f"missing {path}")
    # The default update path writes /tmp/update_{uuid}.tar.gz and /tmp/temp_update.tar (a fixed
    # name shared by every device): keep parallel test devices apart.
    tempfile.tempdir = os.path.join(work, ".tmp")
    os.makedirs(tempfile.tempdir, exist_ok=True)

    class Client(DeviceClient):
        def _get_default_mqtt_client(self):
            return DeviceMqttClient(self.settings, self.schema, self.logger, args.qos)

        def _get_default_rest_client(self):
            return recording_rest_client(PepeunitRestClient, args.no_rest)(self.settings)

    try:
        client = Client(
            env_file_path=env_path,
            schema_file_path=schema_path,
            log_file_path=log_path,
            enable_mqtt=True,
            enable_rest=True,
            cycle_speed=args.cycle_speed,
            restart_mode=RestartMode.ENV_SCHEMA_ONLY,
            ff_version_check_enable=not args.no_version_check,
            ff_console_log_enable=False,  # the library would print dicts to our stdout
        )
        if args.auth_token is not None:
            client.settings.PU_AUTH_TOKEN = args.auth_token
        unit_uuid = client.settings.unit_uuid
    except Exception as e:
        finish(2, "bad_config", f"cannot build the client: {type(e).__name__}: {e}")
    S.client_settings = client.settings
    summary["unit_uuid"] = unit_uuid
    summary["commit_version"] = client.settings.PU_COMMIT_VERSION
    stop = threading.Event()
    linger_until = [None]

    def request_stop(reason):
        if S.stop_reason is None:
            linger_until[0] = time.monotonic() + (0 if reason == "duration" else args.linger)
            S.stop_reason = reason

    if args.update_action == "record":
        def on_update(cl, payload):
            emit("update_hook", payload=payload)
        client.set_custom_update_handler(on_update)

    def handle_input(cl, msg):
        # runs after the library's own base-topic handling (_base_mqtt_input_func)
        S.messages += 1
        value = msg.payload
        for key, topics in cl.schema.input_base_topic.items():
            if msg.topic in topics:
                try:
                    payload = json.loads(value) if value else None
                except ValueError:
                    payload = value
                name = None
                if isinstance(payload, dict):
                    name = payload.get("COMMAND")
                name = name or COMMAND_BY_TOPIC.get(key, key)
                S.commands.append(name)
                emit("command", command=name, name=key, topic=msg.topic, payload=payload,
                     commit_version=cl.settings.PU_COMMIT_VERSION)
                if name.lower() in args.until_commands or "any" in args.until_commands:
                    request_stop("until_command")
                return
        names = [k for k, ts in cl.schema.input_topic.items() if msg.topic in ts]
        if names:
            S.inputs.append({"name": names[0], "value": value})
            emit("input", name=names[0], names=names, topic=msg.topic, value=value,
                 retain=bool(msg.retain), qos=msg.qos)
            if "any" in args.until_inputs or args.until_inputs.intersection(names):
                request_stop("until_input")
        else:
            emit("message", topic=msg.topic, value=value, retain=bool(msg.retain), qos=msg.qos)

    client.set_mqtt_input_handler(handle_input)

    for name, _ in args.pubs + [(n, v) for _, n, v, _ in args.pubs_every]:
        if name not in client.schema.output_topic and name not in client.schema.output_base_topic:
            finish(2, "bad_args", f"{name!r} is not an output name in schema.json")

    mc = client.mqtt_client
    emit("start", unit_uuid=unit_uuid, host=client.settings.PU_MQTT_HOST,
         port=client.settings.PU_MQTT_PORT, qos=args.qos, rest=not args.no_rest,
         update_action=args.update_action)
    try:
        mc.connect()  # TCP connect + CONNECT, then paho's network thread (auto-reconnect)
    except Exception as e:
        finish(3, "connect_failed", f"cannot connect to MQTT {client.settings.PU_MQTT_HOST}:"
                                    f"{client.settings.PU_MQTT_PORT}: {type(e).__name__}: {e}")

    def wait_connack():
        end = time.monotonic() + args.connect_timeout
        while time.monotonic() < end:
            if S.refused is not None or S.connack_rc is not None:
                return
            time.sleep(0.02)

    def refused_exit():
        rc, text = S.refused
        try:
            mc._client.disconnect()
            mc._client.loop_stop()
        except Exception:
            pass
        finish(4, "refused", f"mqtt connection refused: rc={rc} ({text})"
               if rc is not None else f"mqtt connection refused: {text}")

    if args.wait_connack:
        wait_connack()
        if S.refused is not None:
            refused_exit()

    client.subscribe_all_schema_topics()  # as the library's example does, right after connect()
    S.initial_subscribed = True
    mc._check_ready()

    started = [False]

    def cycle(cl):
        now = time.monotonic()
        if args.state_interval is not None:
            cl.settings.PU_STATE_SEND_INTERVAL = args.state_interval
        if S.refused is not None and S.connects == 0:
            cl._running = False
            return
        if S.connack_rc is None and now - T0 > args.connect_timeout:
            S.refused = (None, f"no CONNACK within {args.connect_timeout}s")
            cl._running = False
            return
        if mc._client._thread is None and S.stop_reason is None:
            # paho's network thread ended by an exception in a callback (e.g. the library's
            # msg.payload.decode() on a non-UTF-8 payload): the real device would be deaf and mute
            emit("network_thread_died")
            S.stop_reason = "network_thread_died"
            cl._running = False
            return
        if args.exit_on_disconnect and S.connects > 0 and not S.connected:
            request_stop("disconnected")
        if now >= deadline:
            request_stop("duration")
        if S.stop_reason is not None and now >= linger_until[0]:
            cl._running = False  # not stop_main_cycle(): that would publish a "Main cycle stopped" log
            return
        if S.stop_reason is not None:
            return
        if not started[0]:
            if not S.ready:
                return
            started[0] = True
            for topic in args.subscribe:
                mc._client.subscribe(topic)
            for level, text in args.logs:
                before = S.published["log"]
                getattr(cl.logger, level)(text)
                emit("log", level=level.capitalize(), text=text, published=S.published["log"] > before)
            for name, value in args.pubs:
                cl.publish_to_topics(name, value)
            for topic, value in args.raws:
                mc.publish_kind(topic, value, "raw")
        for item in args.pubs_every:
            period, name, value, last = item
            if last is None or now - last >= period:
                item[3] = now
                cl.publish_to_topics(name, value)

    client.set_output_handler(cycle)
    client.run_main_cycle()  # sends state every PU_STATE_SEND_INTERVAL (first one at once)

    if S.refused is not None and S.connects == 0:
        refused_exit()

    # flush QoS>0 messages (loop_stop in disconnect() waits for them; the watchdog bounds it)
    end = time.monotonic() + 3
    while S.qos_pending and time.monotonic() < end:
        time.sleep(0.02)
    # The library's mc.disconnect() does loop_stop() then disconnect(): same DISCONNECT on the
    # wire, but loop_stop() first waits for paho's 1 s select() timeout. Send it first instead.
    try:
        mc._client.disconnect()
    finally:
        mc._client.loop_stop()
    if S.stop_reason == "network_thread_died":
        finish(6, S.stop_reason, "the paho network thread died (see the traceback above)")
    finish(0, S.stop_reason or "duration")


if __name__ == "__main__":
    main()
