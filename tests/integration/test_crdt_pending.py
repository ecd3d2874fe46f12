"""An update from a peer whose dependency never comes (issue 10): a connected peer syncs a new
text document to a real vivimd and sends it one update that continues typing the node never
received. The update waits in the node's buffer, and is logged. Before, a document with a
waiting update was never snapshotted (so its log grew for ever), and since the waiting update
was replayed into the buffer at every start, not after a restart either. Now the document is
compacted every compact_updates updates all the same, the waiting update is logged again
after each snapshot (so it survives it), and the age and budget limits of the buffer apply."""

import os
import sqlite3
import subprocess
import unittest

import vivimtest
from vivimtest import Node, http_get, wait_for, metric

TESTPEER = os.environ.get("VIVIM_TESTPEER",
                          os.path.join(os.path.dirname(vivimtest.VIVIMD), "vivim-testpeer"))


def logged(node, doc):
    with sqlite3.connect(os.path.join(node.state_dir, "crdt.sqlite")) as db:
        return db.execute("SELECT count(*) FROM updates WHERE doc_id = ?", (doc,)).fetchone()[0]


class WaitingUpdate(unittest.TestCase):
    def test_a_never_satisfiable_update_does_not_block_compaction(self):
        doc = "orphan"
        with Node(extra_config={"crdt": {"compact_updates": "10"}}) as node:
            r = subprocess.run([TESTPEER, "127.0.0.1", str(node.net_port), "crdtorphan", doc,
                                "1"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            wait_for("the update to wait",
                     lambda: metric(node, "vivimd_crdt_pending_updates") == 1, 30)
            self.assertEqual(metric(node, "vivimd_crdt_updates_buffered_total"), 1)

            def edit(n, tag):
                for i in range(n):
                    node.rpc("crdt.apply", {"docId": doc,
                                            "op": {"insert": {"pos": 0, "text": tag}}})

            # The waiting update and nine local edits make ten logged updates: the document is
            # compacted although an update waits; the log keeps the waiting update, and nothing
            # else.
            self.assertEqual(logged(node, doc), 1)
            edit(9, "a")
            wait_for("a snapshot", lambda: metric(node, "vivimd_crdt_compactions_total") >= 1,
                     30)
            wait_for("the log to shrink", lambda: logged(node, doc) == 1, 30)
            self.assertEqual(metric(node, "vivimd_crdt_pending_updates"), 1)
            self.assertEqual(node.rpc("crdt.value", {"docId": doc})["value"], "a" * 9)

            # After a restart the waiting update is back in the buffer, and still does not
            # block compaction: ten more edits, one snapshot.
            self.assertEqual(node.stop(), 0)
            node.start()
            self.assertEqual(metric(node, "vivimd_crdt_pending_updates"), 1)
            edit(5, "b")
            wait_for("five more logged", lambda: logged(node, doc) == 6, 30)
            edit(5, "c")
            wait_for("a snapshot after the restart",
                     lambda: metric(node, "vivimd_crdt_compactions_total") >= 1, 30)
            wait_for("the log to shrink again", lambda: logged(node, doc) == 1, 30)
            self.assertEqual(node.rpc("crdt.value", {"docId": doc})["value"],
                             "c" * 5 + "b" * 5 + "a" * 9)


if __name__ == "__main__":
    vivimtest.main()
