"""A CRDT text document larger than one frame (1 MiB) between two real vivimd processes: node A
writes 2.5 MiB of text (multi-byte characters included) in pieces below the RPC line limit,
then shares the document with node B, which has never seen it. The whole document arrives
through a stream (B's crdt.value equals A's, and B counts a received stream); it survives B's
restart; an edit made afterwards on B reaches A in the ordinary way. Before streams, a delta
over 1 MiB was never sent and B's copy stayed empty."""

import hashlib
import random
import unittest

import vivimtest
from vivimtest import Node, metric, wait_for

NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000"}
CRDT = {"anti_entropy_ms": "1000"}
DOC = "book:large"
PIECE_CHARS = 128 * 1024  # well below the 1 MiB RPC request line, even JSON-escaped
PIECES = 20               # 2.5 M characters, some of them two or three bytes in UTF-8


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


class LargeDocument(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Node(extra_config={"net": dict(NET), "crdt": dict(CRDT)})
        boot = f"127.0.0.1:{cls.a.net_port}"
        cls.b = Node(extra_config={"net": dict(NET, bootstrap=boot), "crdt": dict(CRDT)})
        cls.b_id = cls.b.rpc("node.status")["nodeId"]
        wait_for("A and B connected", lambda: all(
            n.rpc("peers.list")["connected"] == 1 for n in (cls.a, cls.b)), 60)

    @classmethod
    def tearDownClass(cls):
        for n in (cls.a, cls.b):
            rc = n.stop()
            n.close()
            assert rc == 0, f"vivimd exited with {rc}"

    def value(self, node):
        return node.rpc("crdt.value", {"docId": DOC}, timeout=60)["value"]

    def test_1_document_over_a_frame_arrives_whole(self):
        a, b = self.a, self.b
        a.rpc("crdt.create", {"docId": DOC, "type": "text"})
        rnd = random.Random(10)
        alphabet = "abcdefghijklmnopqrstuvwxyz éü€語\n"
        length = 0
        for _ in range(PIECES):
            text = "".join(rnd.choice(alphabet) for _ in range(PIECE_CHARS))
            a.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": length, "text": text}}},
                  timeout=60)
            length += PIECE_CHARS
        want = self.value(a)
        self.assertEqual(len(want), PIECES * PIECE_CHARS)
        self.assertGreater(len(want.encode()), 2 << 20)
        a.rpc("crdt.join", {"docId": DOC, "nodeId": self.b_id})

        def arrived():
            docs = [d["docId"] if isinstance(d, dict) else d
                    for d in b.rpc("crdt.list")["documents"]]
            return DOC in docs and len(self.value(b)) == len(want)
        wait_for("the large document on B", arrived, 120)
        self.assertEqual(digest(self.value(b)), digest(want))
        self.assertGreaterEqual(metric(b, "vivimd_crdt_streams_received_total"), 1)
        self.assertGreaterEqual(metric(a, "vivimd_crdt_streams_sent_total"), 1)
        self.assertGreater(metric(b, "vivimd_crdt_stream_received_bytes_total"), 1 << 20)
        self.assertEqual(metric(a, "vivimd_crdt_too_large_total"), 0)
        self.assertEqual(metric(b, "vivimd_crdt_stream_bad_frames_total"), 0)
        wait_for("A's stream memory released",
                 lambda: metric(a, "vivimd_crdt_stream_bytes_in_flight") == 0, 30)

    def test_2_survives_restart_and_keeps_syncing(self):
        a, b = self.a, self.b
        want = digest(self.value(a))
        self.assertEqual(b.stop(), 0)
        b.start()
        self.assertEqual(digest(self.value(b)), want)
        wait_for("A and B connected again", lambda: all(
            n.rpc("peers.list")["connected"] == 1 for n in (a, b)), 60)
        b.rpc("crdt.apply", {"docId": DOC, "op": {"insert": {"pos": 0, "text": "Title\n"}}})
        wait_for("B's edit on A", lambda: self.value(a).startswith("Title\n"), 60)
        self.assertEqual(digest(self.value(a)), digest(self.value(b)))


if __name__ == "__main__":
    vivimtest.main()
