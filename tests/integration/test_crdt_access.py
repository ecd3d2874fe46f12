"""Access policies of CRDT documents across three real vivimd processes (issue 10). A creates a
document; C, connected but not let in, gets nothing of it, and its policy, sync rounds and
updates are refused and counted; A lets B read: B reads every edit but cannot write; A makes B
a writer: B's edits reach A; A shuts B out: B hears no more. The policy survives a restart,
and a store from before policies is upgraded without cutting off its peers."""

import os
import shutil
import sqlite3
import subprocess
import tempfile
import unittest

import vivimtest
from vivimtest import Node, RpcError, metric, wait_for

NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "4", "high_water": "8"}
CRDT = {"anti_entropy_ms": "500"}
DENIED = -11108
DOC = "secret:1"
TESTPEER = os.environ.get("VIVIM_TESTPEER",
                          os.path.join(os.path.dirname(vivimtest.VIVIMD), "vivim-testpeer"))


def refused(node, reason):
    return metric(node, f'vivimd_crdt_refused_total{{reason="{reason}"}}')


class ThreeNodes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Node(extra_config={"net": dict(NET), "crdt": dict(CRDT)})
        boot = f"127.0.0.1:{cls.a.net_port}"
        cls.b = Node(extra_config={"net": dict(NET, bootstrap=boot), "crdt": dict(CRDT)})
        cls.c = Node(extra_config={"net": dict(NET, bootstrap=boot), "crdt": dict(CRDT)})
        cls.nodes = [cls.a, cls.b, cls.c]
        cls.ida, cls.idb, cls.idc = [n.rpc("node.status")["nodeId"] for n in cls.nodes]
        wait_for("three connected nodes", lambda: all(
            n.rpc("peers.list")["connected"] == 2 for n in cls.nodes), 60)
        cls.a.rpc("crdt.create", {"docId": DOC, "type": "text"})
        cls.a.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "secret"}}})

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            rc = n.stop()
            n.close()
            assert rc == 0, f"vivimd exited with {rc}"

    def value(self, node):
        return node.rpc("crdt.value", {"docId": DOC})["value"]

    def test_1_a_new_document_lets_nobody_in(self):
        acc = self.a.rpc("crdt.access", {"docId": DOC})
        self.assertEqual(acc["creator"], self.ida)
        self.assertEqual(acc["version"], 1)
        self.assertEqual((acc["readers"], acc["writers"]), ([], []))
        self.assertEqual(acc["access"], "write")
        self.assertFalse(acc["adopted"])
        # A node not let in cannot be synced with.
        with self.assertRaises(RpcError) as e:
            self.a.rpc("crdt.sync", {"docId": DOC, "nodeId": self.idc})
        self.assertEqual(e.exception.code, DENIED)

    def test_2_a_connected_peer_naming_the_document_gets_nothing(self):
        # The hole of issue 10: a connected peer asked for the document by name (SYNC, reply
        # true) and was sent all of it.
        # (Before: "updates 1 syncs 1": the whole text, and the node's own SYNC.)
        r = subprocess.run([TESTPEER, "127.0.0.1", str(self.a.net_port), "crdtprobe", DOC, "4",
                            "2"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("updates 0 syncs 0 policies 0", r.stdout)
        self.assertEqual(refused(self.a, "read"), 1)  # the first refusal of this node
        self.assertEqual(self.a.rpc("crdt.access", {"docId": DOC})["version"], 1)

    def test_2_a_node_not_let_in_gets_nothing_and_cannot_write(self):
        # C makes a document of the same name, lets A write it and shares it with A: A keeps
        # its own (another creator's policy is refused), refuses C's sync rounds (C may not
        # read A's) and C's updates (C may not write).
        c = self.c
        c.rpc("crdt.create", {"docId": DOC, "type": "text"})
        r = c.rpc("crdt.join", {"docId": DOC, "nodeId": self.ida})
        self.assertEqual((r["access"], r["version"]), ("write", 2))
        c.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "vandal"}}})
        c.rpc("crdt.sync", {"docId": DOC, "nodeId": self.ida})
        wait_for("A to refuse C's policy, sync and update", lambda: (
            refused(self.a, "creator") >= 1 and refused(self.a, "read") >= 1
            and refused(self.a, "write") >= 1), 30)
        self.assertEqual(self.value(self.a), "secret")
        self.assertEqual(self.value(c), "vandal")
        self.assertIn(f"{DOC} from peer {self.idc[:16]}: policy refused: signed by another "
                      "creator", self.a.log_text())  # one line a second: the first says it
        self.assertEqual(metric(self.a, "vivimd_crdt_updates_received_total"), 0)
        peers = {d["docId"]: d["peers"] for d in self.a.rpc("crdt.list")["documents"]}
        self.assertEqual(peers[DOC], [])
        # C's own copy stays C's: A's policy never replaced it.
        self.assertEqual(c.rpc("crdt.access", {"docId": DOC})["creator"], self.idc)

    def test_3_a_reader_reads_but_cannot_write(self):
        a, b = self.a, self.b
        r = a.rpc("crdt.join", {"docId": DOC, "nodeId": self.idb, "access": "read"})
        self.assertEqual((r["access"], r["version"], r["peers"]), ("read", 2, [self.idb]))
        wait_for("B to read the document", lambda: any(
            d["docId"] == DOC for d in b.rpc("crdt.list")["documents"]), 30)
        wait_for("B to read the text", lambda: self.value(b) == "secret", 30)
        acc = b.rpc("crdt.access", {"docId": DOC})
        self.assertEqual((acc["creator"], acc["version"], acc["readers"], acc["access"]),
                         (self.ida, 2, [self.idb], "read"))
        a.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 6, "text": "!"}}})
        wait_for("B to read the edit", lambda: self.value(b) == "secret!", 30)
        with self.assertRaises(RpcError) as e:
            b.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "x"}}})
        self.assertEqual(e.exception.code, DENIED)
        self.assertIn("read-only", e.exception.message)
        # Only the creator changes the policy; B may not let C in.
        for method, params in (("crdt.setAccess", {"docId": DOC, "readers": [self.idc],
                                                   "writers": []}),
                               ("crdt.join", {"docId": DOC, "nodeId": self.idc})):
            with self.assertRaises(RpcError) as e:
                b.rpc(method, params)
            self.assertEqual(e.exception.code, DENIED, method)
        self.assertEqual(self.value(a), "secret!")

    def test_4_a_writer_writes_and_a_removed_node_hears_no_more(self):
        a, b = self.a, self.b
        r = a.rpc("crdt.join", {"docId": DOC, "nodeId": self.idb})  # write, by default
        self.assertEqual((r["access"], r["version"]), ("write", 3))
        wait_for("B to learn it may write", lambda: b.rpc(
            "crdt.access", {"docId": DOC})["access"] == "write", 30)
        b.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "B:"}}})
        wait_for("B's edit to reach A", lambda: self.value(a) == "B:secret!", 30)
        # Shut B out: it learns version 4, A stops syncing with it.
        r = a.rpc("crdt.setAccess", {"docId": DOC, "readers": [], "writers": []})
        self.assertEqual((r["version"], r["readers"], r["writers"]), (4, [], []))
        wait_for("B to learn it is out", lambda: b.rpc(
            "crdt.access", {"docId": DOC})["access"] == "none", 30)
        peers = {d["docId"]: d["peers"] for d in a.rpc("crdt.list")["documents"]}
        self.assertEqual(peers[DOC], [])
        a.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "private "}}})
        with self.assertRaises(RpcError) as e:
            b.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "x"}}})
        self.assertEqual(e.exception.code, DENIED)
        # B stops syncing the document (it keeps what it read) and cannot start a round.
        wait_for("B to stop syncing", lambda: {d["docId"]: d["peers"] for d in b.rpc(
            "crdt.list")["documents"]}[DOC] == [], 30)
        with self.assertRaises(RpcError) as e:
            b.rpc("crdt.sync", {"docId": DOC, "nodeId": self.ida})
        self.assertEqual(e.exception.code, DENIED)
        self.assertIn("no longer lets this node in", e.exception.message)
        self.assertEqual(self.value(b), "B:secret!")

    def test_5_the_policy_survives_a_restart(self):
        before = self.a.rpc("crdt.access", {"docId": DOC})
        self.a.stop()
        self.a.start()
        self.assertEqual(self.a.rpc("crdt.access", {"docId": DOC}), before)


class Upgrade(unittest.TestCase):
    def test_documents_stored_before_policies_keep_their_peers_as_writers(self):
        tmp = tempfile.mkdtemp(prefix="vv-crdt-upgrade-")
        try:
            node = Node(tmp=tmp, start=False)
            os.makedirs(node.state_dir, exist_ok=True)
            peer = "ab" * 32
            # The store as vivimd wrote it before issue 10 (schema version 1).
            with sqlite3.connect(os.path.join(node.state_dir, "crdt.sqlite")) as db:
                db.executescript(
                    "CREATE TABLE docs (id TEXT PRIMARY KEY, kind INTEGER NOT NULL, snapshot BLOB,"
                    " peers BLOB NOT NULL DEFAULT x'') WITHOUT ROWID;"
                    "CREATE TABLE updates (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " doc_id TEXT NOT NULL, data BLOB NOT NULL);"
                    "CREATE INDEX updates_doc ON updates(doc_id, seq);"
                    "PRAGMA user_version=1;")
                db.execute("INSERT INTO docs(id, kind, peers) VALUES ('old:1', 1, ?)",
                           (bytes.fromhex(peer),))
            node.start()
            me = node.rpc("node.status")["nodeId"]
            acc = node.rpc("crdt.access", {"docId": "old:1"})
            self.assertEqual((acc["creator"], acc["version"], acc["writers"], acc["adopted"]),
                             (me, 1, [peer], True))
            docs = node.rpc("crdt.list")["documents"]
            self.assertEqual(docs[0]["peers"], [peer])
            node.rpc("crdt.apply", {"docId": "old:1", "op": {"increment": 2}})
            self.assertEqual(node.stop(), 0)
            with sqlite3.connect(os.path.join(node.state_dir, "crdt.sqlite")) as db:
                self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 2)
            node.start()  # stored now: the same policy, not a new one
            self.assertEqual(node.rpc("crdt.access", {"docId": "old:1"}), acc)
            self.assertEqual(node.rpc("crdt.value", {"docId": "old:1"})["value"], 2)
            self.assertEqual(node.stop(), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    vivimtest.main()
