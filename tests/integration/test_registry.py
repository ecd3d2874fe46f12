"""The registry and per-user databases through a real vivimd: RPC round trips, hostile
input refused with the field named and nothing written, a PostgreSQL-backed node, and
kill -9 during a stream of writes, twenty times, losing nothing acknowledged."""

import base64
import glob
import hashlib
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import unittest

import vivimtest
from vivimtest import Node, RpcError

OWNER = "did:key:z6MkAlice"


def record(i, owner=OWNER, **extra):
    cid = hashlib.sha256(f"content-{i}".encode()).hexdigest()
    r = {"id": f"rec-{i}", "contentId": cid, "ownerDid": owner, "type": "acu", "size": 100 + i,
         "hash": cid, "audience": {"type": "circle", "targets": ["friends"]}}
    r.update(extra)
    return r


class RegistryRpc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = Node()

    @classmethod
    def tearDownClass(cls):
        rc = cls.node.stop()
        cls.node.close()
        assert rc == 0

    def test_register_find_update_paging_and_stats(self):
        n = self.node
        stored = n.rpc("registry.register", record(1, owner="did:key:pager"))
        self.assertEqual(stored["status"], "active")
        self.assertEqual(n.rpc("registry.register", record(1, owner="did:key:pager")), stored)
        for i in range(2, 26):
            n.rpc("registry.register", record(i, owner="did:key:pager"))
        ids, cursor = [], None
        while True:
            params = {"ownerDid": "did:key:pager", "limit": 10}
            if cursor:
                params["cursor"] = cursor
            page = n.rpc("registry.findByOwner", params)
            ids += [r["id"] for r in page["records"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        self.assertEqual(sorted(ids), sorted(f"rec-{i}" for i in range(1, 26)))
        self.assertEqual(len(set(ids)), 25)
        page = n.rpc("registry.findByAudience", {"type": "circle", "target": "friends"})
        self.assertGreaterEqual(len(page["records"]), 25)
        upd = n.rpc("registry.update", {"id": "rec-1", "patch": {"status": "revoked"}})
        self.assertEqual(upd["status"], "revoked")
        with self.assertRaises(RpcError) as e:
            n.rpc("registry.update", {"id": "rec-1", "patch": {"status": "active"}})
        self.assertEqual(e.exception.code, -10006)
        self.assertEqual(e.exception.data, "VV_ESTATE")
        n.rpc("registry.logAccess", {"id": "rec-2", "actor": "did:key:bob", "action": "view"})
        st = n.rpc("registry.stats", {"id": "rec-2"})
        self.assertEqual(st["accessCount"], 1)
        log = n.rpc("registry.accessLog", {"id": "rec-2"})
        self.assertEqual(log["entries"][0]["actor"], "did:key:bob")
        exp = n.rpc("registry.register", record(99, owner="did:key:exp",
                                                 schedule={"expiresAt": 1000}))
        found = n.rpc("registry.findExpired", {"limit": 1000})
        self.assertIn(exp["id"], [r["id"] for r in found["records"]])
        n.rpc("registry.deregister", {"id": "rec-25"})
        with self.assertRaises(RpcError) as e:
            n.rpc("registry.findById", {"id": "rec-25"})
        self.assertEqual(e.exception.data, "VV_ENOTFOUND")

    def test_hostile_input_is_refused_naming_the_field_and_nothing_is_written(self):
        n = self.node
        owner = "did:key:hostile"
        cases = [
            ({"ownerDid": "did:key:../../etc"}, "ownerDid"),
            ({"ownerDid": "did:key:x\u0000y"}, "ownerDid"),
            ({"ownerDid": "did:key:" + "a" * 10000}, "ownerDid"),
            ({"ownerDid": "alice'; DROP TABLE records; --"}, "ownerDid"),
            ({"contentId": "'; DROP TABLE records; --"}, "contentId"),
            ({"contentId": "z" * 64}, "contentId"),
            ({"type": "video"}, "type"),
            ({"size": -5}, "size"),
            ({"size": "10"}, "size"),
            ({"audience": {"type": "everyone"}}, "audience.type"),
            ({"audience": {"type": "users", "targets": ["not a did"]}}, "audience.targets[0]"),
            ({"audience": {"type": "circle", "targets": ["x" * 300]}}, "audience.targets[0]"),
            ({"status": "deleted"}, "status"),
            ({"providers": ["\u00e9" * 64]}, "providers[0]"),
            ({"permissions": {"k": "v" * 5000}}, "permissions"),
            ({"surprise": 1}, "surprise"),
            ({"id": "../../x"}, "id"),
        ]
        for i, (change, field) in enumerate(cases):
            rec = record(1000 + i, owner=owner)
            rec.update(change)
            with self.assertRaises(RpcError, msg=change) as e:
                n.rpc("registry.register", rec)
            self.assertEqual(e.exception.code, -32602, (change, e.exception.message))
            self.assertTrue(e.exception.message.startswith(field + ":"),
                            (change, e.exception.message))
        # Invalid UTF-8 never reaches a handler: the JSON parser refuses it.
        raw = json.dumps({"jsonrpc": "2.0", "method": "registry.register", "id": 1,
                          "params": record(1, owner=owner)}).encode().replace(b"acu", b"\xc3\x28")
        self.assertEqual(n.call_raw(raw)["error"]["code"], -32700)
        self.assertEqual(n.rpc("registry.findByOwner", {"ownerDid": owner})["records"], [])
        for bad in ({"ownerDid": owner, "cursor": "x' OR '1'='1"},
                    {"ownerDid": owner, "limit": 0}, {"ownerDid": owner, "limit": 100000},
                    {"ownerDid": owner, "extra": 1}, {}):
            with self.assertRaises(RpcError) as e:
                n.rpc("registry.findByOwner", bad)
            self.assertEqual(e.exception.code, -32602, bad)


class UserDbRpc(unittest.TestCase):
    def test_put_get_list_and_refusals(self):
        with Node() as n:
            data = os.urandom(5000)
            cid = hashlib.sha256(data).hexdigest()
            b64 = base64.b64encode(data).decode()
            r = n.rpc("userdb.put", {"ownerDid": OWNER, "contentId": cid, "content": b64,
                                     "meta": {"title": "x"}})
            self.assertEqual(r["size"], 5000)
            got = n.rpc("userdb.get", {"ownerDid": OWNER, "contentId": cid})
            self.assertEqual(base64.b64decode(got["content"]), data)
            self.assertEqual(got["meta"], {"title": "x"})
            self.assertEqual(len(n.rpc("userdb.list", {"ownerDid": OWNER})["records"]), 1)
            with self.assertRaises(RpcError) as e:
                n.rpc("userdb.put", {"ownerDid": OWNER, "contentId": "0" * 64, "content": b64})
            self.assertIn("contentId: is not the SHA-256", e.exception.message)
            with self.assertRaises(RpcError) as e:
                n.rpc("userdb.put", {"ownerDid": OWNER, "contentId": cid, "content": "***"})
            self.assertTrue(e.exception.message.startswith("content:"))
            for did in ("did:key:../../../tmp/x", "../x", "did:key:a/b", "d" * 10000):
                with self.assertRaises(RpcError) as e:
                    n.rpc("userdb.get", {"ownerDid": did, "contentId": cid})
                self.assertTrue(e.exception.message.startswith("ownerDid:"))
            # Files are named by hash, under the state directory only.
            files = glob.glob(os.path.join(n.state_dir, "users", "*", "*.db"))
            self.assertEqual(len(files), 1)
            self.assertRegex(os.path.basename(files[0]), r"^[0-9a-f]{64}\.db$")


def pg_start(tmp):
    """A throwaway PostgreSQL on a private socket (as the postgres user when root)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        return None
    bindir = os.path.dirname(bins[-1])
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    os.chmod(tmp, 0o777)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    subprocess.run(prefix + [f"{bindir}/initdb", "-D", f"{tmp}/data", "--auth=trust", "-U",
                             "postgres", "--no-sync"], check=True, capture_output=True)
    subprocess.run(prefix + [f"{bindir}/pg_ctl", "-D", f"{tmp}/data", "-w", "-l",
                             f"{tmp}/pg.log", "-o", f"-c listen_addresses= -k {tmp} -p 5432",
                             "start"], check=True, capture_output=True)
    ctl = prefix + [f"{bindir}/pg_ctl", "-D", f"{tmp}/data", "-w", "-l", f"{tmp}/pg.log",
                    "-m", "fast"]
    return (ctl + ["stop"], f"postgresql:///postgres?host={tmp}&port=5432&user=postgres",
            ctl + ["restart"])


class PostgresNode(unittest.TestCase):
    def test_node_on_postgresql_serves_the_registry(self):
        tmp = tempfile.mkdtemp(prefix="vv-it-pg-")
        started = pg_start(tmp)
        if started is None:
            self.fail("PostgreSQL is not installed (`make test` installs it)")
        stop_cmd, url, restart = started
        try:
            with Node(extra_config={"registry": {"url": url}}) as n:
                n.rpc("registry.register", record(1))
                self.assertEqual(n.rpc("registry.findById", {"id": "rec-1"})["ownerDid"], OWNER)
                self.assertIn("postgresql backend ready", n.log_text())
                # PostgreSQL restarts under a stream of writes: the daemon reconnects, no
                # request hangs, and nothing acknowledged is lost.
                acked, failed = [], []
                with n.connect(timeout=60) as s:
                    for i in range(2, 302):
                        if i == 150:
                            # Output to the log file: a pipe would be held open by the server.
                            subprocess.run(restart, check=True, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           timeout=120)
                        req = {"jsonrpc": "2.0", "id": i, "method": "registry.register",
                               "params": record(i)}
                        s.sendall(json.dumps(req).encode() + b"\n")
                        reply = json.loads(Node.read_line(s))
                        (acked if "result" in reply else failed).append(i)
                self.assertEqual(failed, [])
                for i in acked:
                    n.rpc("registry.findById", {"id": f"rec-{i}"})
                self.assertIn("reconnecting", n.log_text())
        finally:
            subprocess.run(stop_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=120)
            shutil.rmtree(tmp, ignore_errors=True)


class KillNine(unittest.TestCase):
    def test_kill_9_during_writes_twenty_times_loses_nothing_acknowledged(self):
        tmp = tempfile.mkdtemp(prefix="vv-it-kill-")
        acked_records, acked_content = [], []
        rnd = random.Random(9)
        try:
            node = Node(tmp=tmp, start=False)
            seq = 0
            for round_ in range(20):

                def call(s, method, params, i):
                    req = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
                    s.sendall(json.dumps(req).encode() + b"\n")
                    line = Node.read_line(s)
                    if not line:
                        raise ConnectionError("vivimd went away")
                    return "result" in json.loads(line)

                def writer(stop):
                    nonlocal seq
                    try:
                        with node.connect(timeout=5) as s:
                            while not stop.is_set():
                                seq += 1
                                i = seq
                                owner = f"did:key:user{i % 7}"
                                rec = record(i, owner=owner)
                                if call(s, "registry.register", rec, i):
                                    acked_records.append(rec["id"])
                                data = f"blob-{i}".encode()
                                cid = hashlib.sha256(data).hexdigest()
                                params = {"ownerDid": owner, "contentId": cid,
                                          "content": base64.b64encode(data).decode()}
                                if call(s, "userdb.put", params, i):
                                    acked_content.append((owner, cid))
                    except (OSError, ValueError):
                        return

                vivimtest.kill_during(node, writer, 0.2 + rnd.random() * 0.4)
            self.assertGreater(len(acked_records), 20)
            # Every file passes SQLite's integrity check.
            files = [os.path.join(node.state_dir, "registry.db")] + glob.glob(
                os.path.join(node.state_dir, "users", "*", "*.db"))
            for f in files:
                with sqlite3.connect(f) as db:
                    self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok", f)
            # Every acknowledged write is there.
            node.start()
            for rid in acked_records:
                node.rpc("registry.findById", {"id": rid})
            for owner, cid in acked_content:
                node.rpc("userdb.get", {"ownerDid": owner, "contentId": cid})
            self.assertEqual(node.stop(), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    vivimtest.main()
