#!/usr/bin/env python3
"""Self-test of peer.py without our server: two bovine peers on loopback.

    python peer_selftest.py            # uses the python running this script

alice@P1 fetches alice@P2, follows her (P2 runs with --auto-accept), waits for
the Accept, receives a Create sent to P2's followers, and sends a direct
signed Like.  Prints 'N passed, N failed' and exits non-zero on failure.
Every wait is bounded; both peers are stopped at the end.
"""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")


class Peer:
    def __init__(self, workdir, *extra, timeout=90):
        self.proc = subprocess.Popen(
            [sys.executable, PEER, "--port", "0", "--workdir", workdir, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self._read(timeout)
        if not self.ready.get("ready"):
            raise RuntimeError(f"peer failed to start: {self.ready}")

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read(self, timeout):
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise RuntimeError("peer exited")
        return json.loads(line)

    def __call__(self, timeout=60, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def close(self):
        try:
            self(cmd="quit", timeout=15)
        except Exception:
            pass
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def main():
    tmp = tempfile.mkdtemp(prefix="bovine-selftest-")
    passed = failed = 0

    def check(name, cond, detail=None):
        nonlocal passed, failed
        if cond:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name}: {json.dumps(detail)[:1500]}")

    a = b = None
    try:
        a = Peer(os.path.join(tmp, "a"))
        b = Peer(os.path.join(tmp, "b"), "--auto-accept")
        r = a(cmd="fetch", url=b.ready["id"])
        check("signed fetch of remote actor", r.get("ok") and r["json"]["id"] == b.ready["id"], r)
        r = a(cmd="fetch", url=b.ready["id"], signed=False)
        check("unsigned fetch is refused by bovine (401)", r.get("status") == 401, r)
        r = a(cmd="follow", object=b.ready["id"])
        check(
            "follow delivered (202)",
            r.get("ok") and [d["status"] for d in r.get("deliveries", [])] == [202],
            r,
        )
        r = b(cmd="wait_inbox", type="Follow", actor=a.ready["id"], timeout=15)
        check("Follow arrived in remote inbox", r.get("ok"), r)
        r = a(cmd="wait_inbox", type="Accept", actor=b.ready["id"], timeout=20)
        check("Accept came back", r.get("ok"), r)
        r = a(cmd="following")
        check("bovine recorded following", b.ready["id"] in r.get("items", []), r)
        r = b(
            cmd="outbox",
            activity={
                "type": "Create",
                "to": [b.ready["followers"]],
                "object": {"type": "Note", "content": "hello", "to": [b.ready["followers"]]},
            },
        )
        check("Create to followers delivered", r.get("ok") and r.get("deliveries"), r)
        r = a(cmd="wait_inbox", type="Create", actor=b.ready["id"], timeout=15)
        check("Create arrived", r.get("ok"), r)
        r = a(
            cmd="send",
            to=b.ready["inbox"],
            activity={"type": "Like", "object": b.ready["id"], "to": [b.ready["id"]]},
        )
        check("direct signed POST accepted (202)", r.get("status") == 202, r)
        r = b(cmd="wait_inbox", type="Like", timeout=15)
        check("Like arrived", r.get("ok"), r)
        r = b(cmd="received")
        check(
            "received log shows verified signer",
            any(x.get("retriever") == a.ready["id"] for x in r.get("items", [])),
            r,
        )
    except Exception as e:
        check("harness", False, repr(e))
    finally:
        for p in (a, b):
            if p:
                p.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
