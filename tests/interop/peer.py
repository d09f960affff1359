#!/usr/bin/env python3
"""peer.py - drive a bovine-herd ActivityPub server as a test peer.

Usage:  python peer.py --port P --workdir DIR [--name alice] [--auto-accept]

Starts bovine-herd (hypercorn, plain http, bound to 127.0.0.1:P, sqlite state
in DIR) as a child process, registers one actor (default "alice") whose id is
http://localhost:P/endpoints/<random>, and then speaks a line-oriented JSON
protocol on stdin/stdout: one JSON object per input line, exactly one JSON
object per output line.  See BOVINE-NOTES.md for the command list.

The first line printed is {"ready": true, "actor": ..., ...} once bovine
answers HTTP (or {"ready": false, "error": ...} and exit status 1).

Internally the same file is also the server: `peer.py --serve ...` is what the
child runs.  Nothing else is needed besides the pip packages listed in
BOVINE-NOTES.md.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
import uuid
from urllib.parse import urlparse

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
HTTP_TIMEOUT = 15.0  # seconds, every single HTTP request made by the controller
MAX_BODY = 200_000  # bytes of a body kept in the request logs

# ---------------------------------------------------------------------------
# JSON-LD contexts.  bovine compacts every activity it stores or sends with
# pyld; pyld loads context documents through bovine's loader, which caches
# them in ./bovine_jsonld_cache.sqlite (relative to the CWD!).  Offline the
# fetch fails and bovine caches an *empty* context for that URL.  With
# --contexts=seeded (default) we pre-fill the cache with the subset of the
# security vocabulary that matters for HTTP-signature keys, which is what an
# online bovine would get; --contexts=offline leaves the cache alone so you
# get exactly the offline behaviour (empty contexts, warnings in the log).
# ---------------------------------------------------------------------------
SECURITY_V1_SUBSET = {
    "id": "@id",
    "type": "@type",
    "sec": "https://w3id.org/security#",
    "dc": "http://purl.org/dc/terms/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "CryptographicKey": "sec:Key",
    "Key": "sec:Key",
    "publicKey": {"@id": "sec:publicKey", "@type": "@id"},
    "publicKeyPem": "sec:publicKeyPem",
    "owner": {"@id": "sec:owner", "@type": "@id"},
    "created": {"@id": "dc:created", "@type": "xsd:dateTime"},
    "creator": {"@id": "dc:creator", "@type": "@id"},
    "signature": "sec:signature",
    "signatureValue": "sec:signatureValue",
    "signatureAlgorithm": "sec:signingAlgorithm",
}
SEEDED_CONTEXTS = {
    "https://w3id.org/security/v1": SECURITY_V1_SUBSET,
    "https://www.w3.org/ns/did/v1": [],
    "https://w3id.org/security/multikey/v1": [],
    "https://w3id.org/security/data-integrity/v1": [],
}


def seed_jsonld_cache(workdir):
    path = os.path.join(workdir, "bovine_jsonld_cache.sqlite")
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS jsonld (url TEXT PRIMARY KEY, context TEXT)"
        )
        for url, ctx in SEEDED_CONTEXTS.items():
            con.execute(
                "INSERT OR IGNORE INTO jsonld VALUES (?, ?)", (url, json.dumps(ctx))
            )
        con.commit()
    finally:
        con.close()


# ---------------------------------------------------------------------------
# helpers shared by both modes
# ---------------------------------------------------------------------------


def now():
    return round(time.time(), 3)


class JsonlWriter:
    def __init__(self, path):
        self.path = path

    def write(self, rec):
        with open(self.path, "a", encoding="utf-8") as fp:
            fp.write(json.dumps(rec, default=str) + "\n")


def read_jsonl(path):
    out = []
    try:
        with open(path, encoding="utf-8") as fp:
            for line in fp:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out


def body_text(chunks):
    data = b"".join(chunks)
    text = data[:MAX_BODY].decode("utf-8", errors="replace")
    return text


def try_json(text):
    try:
        return json.loads(text)
    except Exception:
        return None


# ---------------------------------------------------------------------------
# --serve: the bovine-herd server process
# ---------------------------------------------------------------------------


class RecordingMiddleware:
    """ASGI middleware: logs every HTTP request bovine receives (headers,
    body, response status, response body, and which actor bovine decided
    signed it) to incoming.jsonl."""

    def __init__(self, app, writer):
        self.app = app
        self.writer = writer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        rec = {
            "ts": now(),
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": {},
        }
        for k, v in scope.get("headers", []):
            k = k.decode("latin-1").lower()
            v = v.decode("latin-1")
            rec["headers"][k] = rec["headers"][k] + ", " + v if k in rec["headers"] else v
        scope["peer_rec"] = rec
        req_chunks, resp_chunks = [], []

        async def rx():
            msg = await receive()
            if msg["type"] == "http.request":
                req_chunks.append(msg.get("body", b""))
            return msg

        async def tx(msg):
            if msg["type"] == "http.response.start":
                rec["status"] = msg["status"]
            elif msg["type"] == "http.response.body":
                resp_chunks.append(msg.get("body", b""))
            await send(msg)

        try:
            await self.app(scope, rx, tx)
        except Exception as e:  # pragma: no cover - logged for debugging
            rec["exception"] = repr(e)
            raise
        finally:
            rec["body"] = body_text(req_chunks)
            rec["response_body"] = body_text(resp_chunks)[:4000]
            self.writer.write(rec)


def make_trace_config(writer):
    """aiohttp trace: logs every HTTP request bovine makes (signed GETs of
    actors/keys, deliveries) to outgoing.jsonl with the exact headers."""
    import aiohttp

    trace = aiohttp.TraceConfig()

    async def on_start(session, ctx, params):
        ctx.rec = {
            "ts": now(),
            "method": params.method,
            "url": str(params.url),
            "headers": {k: v for k, v in params.headers.items()},
        }
        ctx.chunks = []

    async def on_chunk(session, ctx, params):
        ctx.chunks.append(params.chunk)

    async def on_end(session, ctx, params):
        ctx.rec["status"] = params.response.status
        ctx.rec["response_headers"] = dict(params.response.headers)
        ctx.rec["body"] = body_text(ctx.chunks)
        writer.write(ctx.rec)

    async def on_exc(session, ctx, params):
        ctx.rec["error"] = repr(params.exception)
        ctx.rec["body"] = body_text(ctx.chunks)
        writer.write(ctx.rec)

    trace.on_request_start.append(on_start)
    trace.on_request_chunk_sent.append(on_chunk)
    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exc)
    return trace


def serve_main(args):
    import logging

    workdir = os.path.abspath(args.workdir)
    os.chdir(workdir)  # bovine opens its JSON-LD cache in the CWD at import
    if args.contexts == "seeded":
        seed_jsonld_cache(workdir)

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    import aiohttp
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from quart import Quart, g, request

    from bovine_herd import BovineHerd

    app = Quart("bovine_peer")

    @app.before_serving
    async def make_session():
        # registered before BovineHerd's own hook, so bovine uses this session
        app.config["session"] = aiohttp.ClientSession(
            trace_configs=[make_trace_config(JsonlWriter("outgoing.jsonl"))],
            timeout=aiohttp.ClientTimeout(total=20),
        )

    BovineHerd(app, db_url=f"sqlite://{workdir}/bovine.sqlite3")

    @app.post("/_peer/forget")
    async def forget():
        """Test hook (not part of bovine): drop bovine's per-process cache of
        public keys (it caches failures too) and the stored copies of the
        given ids, so a restarted/re-keyed remote server is looked up again."""
        from bovine_herd.server.retrieve_public_key import retrieve_public_key
        from bovine_store.models import StoredJsonObject, VisibleTo

        data = await request.get_json(force=True, silent=True) or {}
        ids = [x for x in data.get("ids", []) if isinstance(x, str)]
        retrieve_public_key.cache_clear()
        app.config["bovine_store"].resolve_endpoint.cache_clear()
        deleted = 0
        for object_id in ids:
            await VisibleTo.filter(main_object_id=object_id).delete()
            deleted += await StoredJsonObject.filter(id=object_id).delete()
        return {"ok": True, "deleted": deleted}

    @app.before_serving
    async def create_actor():
        # runs after BovineHerd's hooks, i.e. with Tortoise initialised
        await ensure_actor(workdir, args.port, args.name)

    @app.after_request
    async def remember_retriever(response):
        rec = request.scope.get("peer_rec")
        if rec is not None:
            rec["retriever"] = g.get("retriever")
        return response

    asgi = RecordingMiddleware(app, JsonlWriter("incoming.jsonl"))

    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = "-"

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(asgi, config, shutdown_trigger=stop.wait)

    try:
        asyncio.run(run())
    except BaseException as e:  # e.g. port already in use
        print(f"peer serve: fatal {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        os._exit(3)
    os._exit(0)


# ---------------------------------------------------------------------------
# controller: registers the actor, starts the server, answers commands
# ---------------------------------------------------------------------------


def _set_pdeathsig():
    """Child dies with SIGTERM if the controller dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


async def ensure_actor(workdir, port, name):
    """Runs inside the server once Tortoise is up: creates the actor if the
    database has none of that name, then writes DIR/actor.json (including the
    private key PEM, which the controller uses to sign as the actor)."""
    from bovine_store import BovineAdminStore
    from bovine_store.models import BovineActor
    from bovine_store.types import EndpointType

    domain = f"http://localhost:{port}"
    actor = await BovineActor.get_or_none(handle_name=name)
    if actor is None:
        bovine_name = await BovineAdminStore(domain=domain).register(name)
        actor = await BovineActor.get(bovine_name=bovine_name)
    await actor.fetch_related("endpoints", "keypairs")
    ep = {e.endpoint_type: e.name for e in actor.endpoints}
    keys = {k.name: k for k in actor.keypairs}
    info = {
        "id": ep[EndpointType.ACTOR],
        "inbox": ep[EndpointType.INBOX],
        "outbox": ep[EndpointType.OUTBOX],
        "followers": ep[EndpointType.FOLLOWERS],
        "following": ep[EndpointType.FOLLOWING],
        "proxyUrl": ep[EndpointType.PROXY_URL],
        "keyId": ep[EndpointType.ACTOR] + "#serverKey",
        "publicKeyPem": keys["serverKey"].public_key,
        "acct": f"acct:{name}@localhost:{port}",
        "bovine_name": actor.bovine_name,
    }
    if not info["id"].startswith(domain + "/"):
        raise RuntimeError(
            f"workdir already holds {name} for another origin: {info['id']}"
        )
    tmp = os.path.join(workdir, "actor.json.tmp")
    with open(tmp, "w") as fp:
        json.dump({"info": info, "private_key": keys["serverKey"].private_key}, fp)
    os.replace(tmp, os.path.join(workdir, "actor.json"))


class Peer:
    def __init__(self, args):
        self.args = args
        self.port = args.port
        self.workdir = os.path.abspath(args.workdir)
        self.base = f"http://localhost:{self.port}"
        self.proc = None
        self.info = None
        self.actor = None  # bovine.BovineActor signing as the actor
        self.session = None
        self.accepted = set()
        self.auto_task = None

    # -- lifecycle ---------------------------------------------------------

    def start_server(self):
        log = open(os.path.join(self.workdir, "bovine.log"), "ab")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--serve",
            "--port",
            str(self.port),
            "--workdir",
            self.workdir,
            "--contexts",
            self.args.contexts,
            "--name",
            self.args.name,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_set_pdeathsig,
        )
        log.close()

    def stop_server(self):
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    async def wait_ready(self, timeout):
        import aiohttp

        deadline = time.monotonic() + timeout
        url = f"{self.base}/.well-known/nodeinfo"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bovine exited with {self.proc.returncode}")
            try:
                async with self.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    # make sure it is our bovine, not something else on the port
                    if r.status == 200 and "/activitypub/nodeinfo2_0" in await r.text():
                        return
            except Exception:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"bovine did not answer {url} within {timeout}s")

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.workdir, "bovine.log"), errors="replace") as fp:
                return fp.read().splitlines()[-n:]
        except OSError:
            return []

    # -- database (read-only views of bovine's sqlite) ---------------------

    def db(self):
        path = os.path.join(self.workdir, "bovine.sqlite3")
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)

    def collection(self, collection_id):
        con = self.db()
        try:
            rows = con.execute(
                "SELECT ci.object_id, o.content FROM collectionitem ci "
                "LEFT JOIN storedjsonobject o ON o.id = ci.object_id "
                "WHERE ci.part_of = ? ORDER BY ci.id",
                (collection_id,),
            ).fetchall()
        finally:
            con.close()
        return rows

    def stored_object(self, object_id):
        con = self.db()
        try:
            row = con.execute(
                "SELECT content, owner, visibility, object_type FROM storedjsonobject "
                "WHERE id = ?",
                (object_id,),
            ).fetchone()
        finally:
            con.close()
        if row is None:
            return None
        return {
            "content": json.loads(row[0]),
            "owner": row[1],
            "visibility": row[2],
            "object_type": row[3],
        }

    def inbox_items(self):
        out = []
        for object_id, content in self.collection(self.info["inbox"]):
            out.append(json.loads(content) if content else {"id": object_id})
        return out

    # -- HTTP as the actor -------------------------------------------------

    async def signed_get(self, url, signed=True, accept=None):
        import aiohttp

        headers = {}
        if accept:
            headers["accept"] = accept
        if signed:
            resp = await asyncio.wait_for(
                self.actor.client.get(url, headers=headers), HTTP_TIMEOUT
            )
        else:
            headers.setdefault("accept", "application/activity+json")
            resp = await self.session.get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
            )
        async with resp:
            text = await asyncio.wait_for(resp.text(errors="replace"), HTTP_TIMEOUT)
            return {
                "status": resp.status,
                "content_type": resp.headers.get("content-type"),
                "request_headers": dict(resp.request_info.headers),
                "response_headers": dict(resp.headers),
                "text": text,
                "json": try_json(text),
            }

    async def signed_post(self, url, data):
        body = json.dumps(data)
        resp = await asyncio.wait_for(self.actor.client.post(url, body), HTTP_TIMEOUT)
        async with resp:
            text = await asyncio.wait_for(resp.text(errors="replace"), HTTP_TIMEOUT)
            return {
                "status": resp.status,
                "location": resp.headers.get("location"),
                "request_headers": dict(resp.request_info.headers),
                "text": text[:4000],
            }

    def complete(self, activity):
        activity = dict(activity)
        activity.setdefault("@context", AS_CONTEXT)
        activity.setdefault("actor", self.info["id"])
        activity.setdefault("id", f"{self.base}/objects/{uuid.uuid4()}")
        return activity

    async def to_outbox(self, activity, wait=True, timeout=10.0):
        """POSTs activity to the actor's outbox; bovine assigns the id, stores
        it and delivers it to to/cc/bto/bcc/audience in the background.  With
        wait, also waits until the first delivery attempt carrying the new id
        shows up in outgoing.jsonl and reports all such attempts."""
        activity = dict(activity)
        activity.setdefault("@context", AS_CONTEXT)
        activity.setdefault("actor", self.info["id"])
        mark = len(read_jsonl(os.path.join(self.workdir, "outgoing.jsonl")))
        r = await self.signed_post(self.info["outbox"], activity)
        res = {"ok": r["status"] == 201, "status": r["status"], "id": r["location"]}
        if r["status"] != 201:
            res["error"] = r["text"]
            return res
        if not wait:
            return res
        deliveries = await self.wait_deliveries(r["location"], mark, timeout)
        res["deliveries"] = deliveries
        if not deliveries:
            res["warning"] = "no delivery attempt seen (no resolvable recipient?)"
        return res

    async def wait_deliveries(self, activity_id, mark, timeout):
        needle = json.dumps(activity_id)  # quoted, as it appears in bodies
        deadline = time.monotonic() + timeout
        found = []
        while time.monotonic() < deadline:
            recs = read_jsonl(os.path.join(self.workdir, "outgoing.jsonl"))[mark:]
            found = [
                {"url": r["url"], "status": r.get("status"), "error": r.get("error")}
                for r in recs
                if r["method"] == "POST" and needle in r.get("body", "")
            ]
            if found:
                await asyncio.sleep(0.5)  # let parallel deliveries finish
                recs = read_jsonl(os.path.join(self.workdir, "outgoing.jsonl"))[mark:]
                return [
                    {"url": r["url"], "status": r.get("status"), "error": r.get("error")}
                    for r in recs
                    if r["method"] == "POST" and needle in r.get("body", "")
                ]
            await asyncio.sleep(0.2)
        return found

    async def accept(self, follow, embed=None):
        """Accept a Follow via the outbox; bovine adds the follower to the
        followers collection and delivers the Accept.  object = the Follow's
        id (default, bovine's own style) or, with embed, the Follow object as
        bovine stored it."""
        if embed is None:
            embed = self.args.accept_style == "embed"
        follow_id = follow["id"] if isinstance(follow, dict) else follow
        stored = self.stored_object(follow_id)
        follow_obj = stored["content"] if stored else (
            follow if isinstance(follow, dict) else {})
        follower = follow_obj.get("actor")
        if isinstance(follower, dict):
            follower = follower.get("id")
        if not follower:
            return {"ok": False, "error": f"unknown follow {follow_id}"}
        self.accepted.add(follow_id)
        obj = follow_id
        if embed:
            obj = {k: v for k, v in follow_obj.items() if k != "@context"}
        return await self.to_outbox({"type": "Accept", "object": obj, "to": [follower]})

    async def auto_accept_loop(self):
        while True:
            try:
                for act in self.inbox_items():
                    if act.get("type") != "Follow" or act.get("id") in self.accepted:
                        continue
                    obj = act.get("object")
                    if isinstance(obj, dict):
                        obj = obj.get("id")
                    if obj != self.info["id"]:
                        continue
                    res = await self.accept(act)
                    print(
                        f"auto-accept {act.get('id')}: {json.dumps(res)}",
                        file=sys.stderr,
                        flush=True,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                print(f"auto-accept error {e!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.3)

    # -- commands ----------------------------------------------------------

    async def handle(self, cmd):
        c = cmd.get("cmd")
        if c == "actor":
            return {"ok": True, **self.info}
        if c == "fetch":
            r = await self.signed_get(
                cmd["url"], signed=cmd.get("signed", True), accept=cmd.get("accept")
            )
            ok = 200 <= r["status"] < 300 and r["json"] is not None
            out = {"ok": ok, **r}
            if not ok:
                out["error"] = f"HTTP {r['status']}"
            if ok:
                del out["text"]
            return out
        if c == "proxy":
            # bovine's own fetch path: POST proxyUrl -> BovineStoreActor.retrieve
            # (signed GET by the actor, cached in bovine's db for 1 day)
            import aiohttp
            from urllib.parse import urlencode

            resp = await asyncio.wait_for(
                self.actor.client.post(
                    self.info["proxyUrl"],
                    urlencode({"id": cmd["url"]}),
                    content_type="application/x-www-form-urlencoded",
                ),
                HTTP_TIMEOUT,
            )
            async with resp:
                text = await resp.text(errors="replace")
            return {"ok": resp.status == 200, "status": resp.status, "json": try_json(text)}
        if c == "follow":
            target = cmd["object"]
            return await self.to_outbox(
                {"type": "Follow", "object": target, "to": [target]},
                wait=cmd.get("wait", True),
                timeout=float(cmd.get("timeout", 10)),
            )
        if c == "unfollow":
            target = cmd["object"]
            follow_id = cmd.get("follow")
            return await self.to_outbox(
                {
                    "type": "Undo",
                    "object": follow_id
                    or {"type": "Follow", "actor": self.info["id"], "object": target},
                    "to": [target],
                },
                wait=cmd.get("wait", True),
                timeout=float(cmd.get("timeout", 10)),
            )
        if c == "accept":
            return await self.accept(cmd["follow"], embed=cmd.get("embed"))
        if c == "outbox":
            return await self.to_outbox(
                cmd["activity"],
                wait=cmd.get("wait", True),
                timeout=float(cmd.get("timeout", 10)),
            )
        if c == "send":
            activity = self.complete(cmd["activity"])
            r = await self.signed_post(cmd["to"], activity)
            return {
                "ok": 200 <= r["status"] < 300,
                "status": r["status"],
                "id": activity["id"],
                "activity": activity,
                "request_headers": r["request_headers"],
                "response": r["text"],
            }
        if c == "inbox":
            items = self.inbox_items()
            return {"ok": True, "count": len(items), "items": items}
        if c == "wait_inbox":
            return await self.wait_inbox(cmd)
        if c in ("followers", "following", "outbox_items"):
            key = {"outbox_items": "outbox"}.get(c, c)
            return {
                "ok": True,
                "items": [oid for oid, _ in self.collection(self.info[key])],
            }
        if c == "object":
            stored = self.stored_object(cmd["id"])
            if stored is None:
                return {"ok": False, "error": "not stored"}
            return {"ok": True, **stored}
        if c == "received":
            recs = read_jsonl(os.path.join(self.workdir, "incoming.jsonl"))
            recs = recs[int(cmd.get("since", 0)):]
            if cmd.get("all") is not True:
                inbox_path = urlparse(self.info["inbox"]).path
                recs = [
                    r for r in recs if r["method"] == "POST" and r["path"] == inbox_path
                ]
            return {"ok": True, "items": recs}
        if c == "sent":
            recs = read_jsonl(os.path.join(self.workdir, "outgoing.jsonl"))
            return {"ok": True, "items": recs[int(cmd.get("since", 0)):]}
        if c == "marks":
            return {
                "ok": True,
                "received": len(read_jsonl(os.path.join(self.workdir, "incoming.jsonl"))),
                "sent": len(read_jsonl(os.path.join(self.workdir, "outgoing.jsonl"))),
            }
        if c == "forget":
            # ids: remote actor ids / key ids whose cached copies to drop
            import aiohttp

            ids = cmd.get("ids") or []
            if isinstance(ids, str):
                ids = [ids]
            ids = list(ids) + [i.split("#")[0] for i in ids if "#" in i]
            async with self.session.post(
                f"{self.base}/_peer/forget",
                json={"ids": ids},
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
            ) as r:
                return {"ok": r.status == 200, "status": r.status, **(await r.json())}
        if c == "log":
            return {"ok": True, "lines": self.log_tail(int(cmd.get("lines", 50)))}
        if c == "ping":
            return {"ok": True, "alive": self.proc.poll() is None}
        return {"ok": False, "error": f"unknown cmd {c!r}"}

    async def wait_inbox(self, cmd):
        """Waits (bounded) for an inbox item matching all given filters:
        type, actor, object (ids; embedded objects match by their id), id;
        since = skip the first N inbox items (use a previous 'count')."""
        timeout = min(float(cmd.get("timeout", 10)), 120.0)
        since = int(cmd.get("since", 0))
        want = {k: cmd.get(k) for k in ("type", "actor", "object", "id")}

        def ident(v):
            return v.get("id") if isinstance(v, dict) else v

        deadline = time.monotonic() + timeout
        while True:
            items = self.inbox_items()
            for index, act in enumerate(items):
                if index < since:
                    continue
                if all(
                    w is None or ident(act.get(k)) == w for k, w in want.items()
                ):
                    return {"ok": True, "item": act, "index": index, "count": len(items)}
            if time.monotonic() >= deadline:
                return {
                    "ok": False,
                    "error": "timeout",
                    "count": len(items),
                    "items": items[since:],
                }
            await asyncio.sleep(0.2)

    # -- main loop ---------------------------------------------------------

    async def run(self):
        import aiohttp

        os.makedirs(self.workdir, exist_ok=True)
        os.chdir(self.workdir)  # bovine opens bovine_jsonld_cache.sqlite in CWD
        if self.args.contexts == "seeded":
            seed_jsonld_cache(self.workdir)

        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        )
        try:
            try:
                actor_json = os.path.join(self.workdir, "actor.json")
                if os.path.exists(actor_json):
                    os.unlink(actor_json)
                self.start_server()
                # import bovine (slow) in a thread while the child boots
                imp = asyncio.create_task(asyncio.to_thread(__import__, "bovine"))
                try:
                    await self.wait_ready(self.args.startup_timeout)
                finally:
                    await imp
                with open(actor_json) as fp:
                    data = json.load(fp)
                self.info, private_pem = data["info"], data["private_key"]
                from bovine import BovineActor

                self.actor = BovineActor(
                    actor_id=self.info["id"],
                    public_key_url=self.info["keyId"],
                    secret=private_pem,
                )
                await self.actor.init(session=self.session)
            except Exception as e:
                emit(
                    {
                        "ready": False,
                        "error": f"{type(e).__name__}: {e}",
                        "log": self.log_tail(),
                    }
                )
                return 1

            emit({"ready": True, "actor": self.info["id"], **self.info})
            if self.args.auto_accept:
                self.auto_task = asyncio.create_task(self.auto_accept_loop())

            lines = start_stdin_thread(asyncio.get_running_loop())
            while True:
                line = await lines.get()
                if line is None:
                    break  # stdin closed
                line = line.strip()
                if not line:
                    continue
                try:
                    cmd = json.loads(line)
                except ValueError as e:
                    emit({"ok": False, "error": f"bad json: {e}"})
                    continue
                if cmd.get("cmd") == "quit":
                    emit({"ok": True, "bye": True})
                    break
                if self.proc.poll() is not None:
                    emit(
                        {
                            "ok": False,
                            "error": f"bovine died ({self.proc.returncode})",
                            "log": self.log_tail(),
                        }
                    )
                    continue
                try:
                    res = await asyncio.wait_for(
                        self.handle(cmd), float(cmd.get("timeout", 10)) + 20
                    )
                except asyncio.TimeoutError:
                    res = {"ok": False, "error": "timeout"}
                except Exception as e:
                    res = {
                        "ok": False,
                        "error": f"{type(e).__name__}: {e}",
                        "trace": traceback.format_exc().splitlines()[-5:],
                    }
                emit(res)
            return 0
        finally:
            if self.auto_task:
                self.auto_task.cancel()
            self.stop_server()
            await self.session.close()


def start_stdin_thread(loop):
    """Reads stdin lines in a daemon thread (works for pipes, files, /dev/null
    and ttys alike) and hands them to the event loop; None means EOF."""
    import threading

    q = asyncio.Queue()

    def pump():
        try:
            while True:
                line = sys.stdin.buffer.readline()
                if not line:
                    break
                loop.call_soon_threadsafe(q.put_nowait, line)
        except Exception:
            pass
        try:
            loop.call_soon_threadsafe(q.put_nowait, None)
        except RuntimeError:
            pass  # loop already closed

    threading.Thread(target=pump, daemon=True, name="stdin").start()
    return q


def emit(obj):
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--name", default="alice")
    ap.add_argument("--auto-accept", action="store_true",
                    help="accept every Follow of the actor via the outbox")
    ap.add_argument("--accept-style", choices=["id", "embed"], default="id",
                    help="Accept.object = Follow id (default) or embedded Follow")
    ap.add_argument("--contexts", choices=["seeded", "offline"], default="seeded")
    ap.add_argument("--startup-timeout", type=float, default=60.0)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve:
        serve_main(args)
        return 0

    if args.port == 0:
        args.port = free_port()
    peer = Peer(args)

    def on_term(signum, frame):
        peer.stop_server()
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(peer.run())
    except KeyboardInterrupt:
        peer.stop_server()
        return 130
    finally:
        peer.stop_server()


if __name__ == "__main__":
    sys.exit(main())
