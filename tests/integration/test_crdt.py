"""CRDT documents across three real vivimd processes: one node creates documents and shares
them with the two others, all three edit concurrently over RPC, and all report the same
crdt.value; a node stopped and one killed with SIGKILL come back with their documents (every
acknowledged operation included) and catch up; bad operations get clear errors."""

import json
import os
import random
import shutil
import threading
import sqlite3
import tempfile
import unittest

import vivimtest
from vivimtest import Node, RpcError, wait_for

NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "4", "high_water": "8"}
CRDT = {"anti_entropy_ms": "500"}


class ThreeNodes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Node(extra_config={"net": dict(NET), "crdt": dict(CRDT)})
        boot = f"127.0.0.1:{cls.a.net_port}"
        cls.b = Node(extra_config={"net": dict(NET, bootstrap=boot), "crdt": dict(CRDT)})
        cls.c = Node(extra_config={"net": dict(NET, bootstrap=boot), "crdt": dict(CRDT)})
        cls.nodes = [cls.a, cls.b, cls.c]
        cls.ids = [n.rpc("node.status")["nodeId"] for n in cls.nodes]
        wait_for("three connected nodes", lambda: all(
            n.rpc("peers.list")["connected"] == 2 for n in cls.nodes), 60)
        a = cls.a
        for doc, typ in (("text:1", "text"), ("views:1", "counter"), ("profile:1", "map"),
                         ("tags:1", "set")):
            a.rpc("crdt.create", {"docId": doc, "type": typ})
            for nid in cls.ids[1:]:
                a.rpc("crdt.join", {"docId": doc, "nodeId": nid})
        wait_for("the documents to reach B and C", lambda: all(
            len(n.rpc("crdt.list")["documents"]) == 4 for n in cls.nodes[1:]), 30)

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            rc = n.stop()
            n.close()
            assert rc == 0, f"vivimd exited with {rc}"

    def values(self, doc):
        return [n.rpc("crdt.value", {"docId": doc})["value"] for n in self.nodes]

    def converged(self, doc):
        v = self.values(doc)
        return v if all(x == v[0] for x in v) else False

    def test_1_concurrent_edits_converge(self):
        errors = []

        def editor(node, k):
            rnd = random.Random(k)
            try:
                for i in range(40):
                    length = len(node.rpc("crdt.value", {"docId": "text:1"})["value"])
                    if length > 3 and rnd.random() < 0.25:
                        node.rpc("crdt.apply", {"docId": "text:1", "op": {
                            "delete": {"pos": rnd.randrange(length - 1), "len": 1}}})
                    else:
                        node.rpc("crdt.apply", {"docId": "text:1", "op": {
                            "insert": {"pos": rnd.randrange(length + 1),
                                       "text": f"{'abc'[k]}{i}é"}}})
                    node.rpc("crdt.apply", {"docId": "views:1", "op": {"increment": 1}})
                    node.rpc("crdt.apply", {"docId": "profile:1", "op": {
                        "put": {"key": ["by", f"n{k}"], "value": i}}})
                    node.rpc("crdt.apply", {"docId": "tags:1", "op": {"add": f"t{i % 7}"}})
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=editor, args=(n, k))
                   for k, n in enumerate(self.nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        text = wait_for("the text to converge", lambda: self.converged("text:1"), 30)[0]
        self.assertGreater(len(text), 40)
        for letter in "abc":  # every editor's insertions are in (deletes are random)
            self.assertGreater(text.count(letter), 10, text)
        self.assertEqual(wait_for("the counter", lambda: self.converged("views:1"), 30)[0], 120)
        profile = wait_for("the map", lambda: self.converged("profile:1"), 30)[0]
        self.assertEqual(profile, {"by": {"n0": 39, "n1": 39, "n2": 39}})
        tags = wait_for("the set", lambda: self.converged("tags:1"), 30)[0]
        self.assertEqual(sorted(tags), sorted(f"t{i}" for i in range(7)))

    def test_2_restart_and_kill_keep_documents(self):
        wait_for("the text to converge", lambda: self.converged("text:1"), 30)
        before = self.values("text:1")[1]
        self.b.stop()
        self.b.start()
        self.assertEqual(self.b.rpc("crdt.value", {"docId": "text:1"})["value"], before)
        # An acknowledged operation survives SIGKILL right after its answer.
        self.c.rpc("crdt.apply", {"docId": "views:1", "op": {"increment": 1000}})
        self.c.stop(sig=9)
        self.c.start()
        self.assertGreaterEqual(self.c.rpc("crdt.value", {"docId": "views:1"})["value"], 1000)
        self.assertEqual(len(self.c.rpc("crdt.list")["documents"]), 4)
        wait_for("three connected nodes", lambda: all(
            n.rpc("peers.list")["connected"] == 2 for n in self.nodes), 60)
        # Edits made while C was down reach it, and its own reach the others.
        self.a.rpc("crdt.apply", {"docId": "text:1", "op": {"insert": {"pos": 0, "text": "Z"}}})
        v = wait_for("the text to converge", lambda: self.converged("text:1"), 30)
        self.assertTrue(v[0].startswith("Z"))
        wait_for("the counter to converge", lambda: self.converged("views:1"), 30)

    def test_3_bad_operations(self):
        a = self.a
        cases = [
            ({"docId": "text:1", "op": {"increment": 1}}, -32602),
            ({"docId": "text:1", "op": {"insert": {"pos": -1, "text": "x"}}}, -32602),
            ({"docId": "text:1", "op": {"insert": {"pos": 10 ** 9, "text": "x"}}}, -11103),
            ({"docId": "text:1", "op": {"delete": {"pos": 0, "len": 10 ** 9}}}, -11103),
            ({"docId": "nope", "op": {"increment": 1}}, -11104),
            ({"docId": "views:1"}, -32602),
            ({"docId": "bad id", "op": {"increment": 1}}, -32602),
            ({"docId": "views:1", "op": {"increment": 1}, "extra": 1}, -32602),
        ]
        for params, code in cases:
            with self.assertRaises(RpcError) as e:
                a.rpc("crdt.apply", params)
            self.assertEqual(e.exception.code, code, params)
        with self.assertRaises(RpcError) as e:
            a.rpc("crdt.create", {"docId": "text:1", "type": "text"})
        self.assertEqual(e.exception.code, -10005)
        with self.assertRaises(RpcError) as e:
            a.rpc("crdt.create", {"docId": "x", "type": "tree"})
        self.assertEqual(e.exception.code, -32602)
        st = a.rpc("crdt.state", {"docId": "text:1"})
        self.assertGreater(st["bytes"], 0)
        self.assertIn("stateVector", a.rpc("crdt.stateVector", {"docId": "text:1"}))
        r = a.rpc("crdt.sync", {"docId": "text:1", "nodeId": self.ids[1]})
        self.assertTrue(r["started"])
        r = a.rpc("crdt.leave", {"docId": "tags:1", "nodeId": self.ids[2]})
        self.assertEqual(r["peers"], [self.ids[1]])


class KillNine(unittest.TestCase):
    def test_acknowledged_operations_survive_kill_9_with_compaction(self):
        """Ten SIGKILLs during a stream of crdt.apply (snapshots every 10 updates, so kills also
        land during compaction): every acknowledged operation is there afterwards and the
        store passes SQLite's integrity check."""
        tmp = tempfile.mkdtemp(prefix="vv-crdt-kill-")
        rnd = random.Random(9)
        try:
            node = Node(tmp=tmp, start=False, extra_config={"crdt": {"compact_updates": "10"}})
            node.start()
            node.rpc("crdt.create", {"docId": "n", "type": "counter"})
            node.rpc("crdt.create", {"docId": "t", "type": "text"})
            node.stop()
            acked_incr = 0
            sent_incr = 0
            acked_marks = []
            for round_ in range(10):
                def writer(stop, round_=round_):
                    nonlocal acked_incr, sent_incr
                    i = 0
                    try:
                        with node.connect(timeout=5) as s:
                            while not stop.is_set():
                                i += 1
                                for req, kind in (
                                        ({"docId": "n", "op": {"increment": 1}}, "n"),
                                        ({"docId": "t", "op": {"insert": {
                                            "pos": 0, "text": f"<{round_}.{i}>"}}}, "t")):
                                    msg = {"jsonrpc": "2.0", "id": i, "method": "crdt.apply",
                                           "params": req}
                                    if kind == "n":
                                        sent_incr += 1
                                    s.sendall(json.dumps(msg).encode() + b"\n")
                                    line = Node.read_line(s)
                                    if not line:
                                        raise ConnectionError("vivimd went away")
                                    if "result" in json.loads(line):
                                        if kind == "n":
                                            acked_incr += 1
                                        else:
                                            acked_marks.append(f"<{round_}.{i}>")
                    except (OSError, ValueError):
                        return

                vivimtest.kill_during(node, writer, 0.2 + rnd.random() * 0.4)
            self.assertGreater(acked_incr, 20)
            with sqlite3.connect(os.path.join(node.state_dir, "crdt.sqlite")) as db:
                self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            node.start()
            value = node.rpc("crdt.value", {"docId": "n"})["value"]
            self.assertGreaterEqual(value, acked_incr)  # committed-but-unanswered ones may add
            self.assertLessEqual(value, sent_incr)
            text = node.rpc("crdt.value", {"docId": "t"})["value"]
            missing = [m for m in acked_marks if m not in text]
            self.assertEqual(missing, [])
            self.assertEqual(node.stop(), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    vivimtest.main()
