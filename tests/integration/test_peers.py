"""Peers on demand with real vivimd processes: crdt.join with a node this node is not
connected to (and whose address it does not know yet) makes the connection, and the document
reaches that node; a peer tagged by the CRDT engine survives trimming when the node is over
high water, while the untagged ones go."""

import unittest

import vivimtest
from vivimtest import Node, metric, wait_for

# Low water 1: a node connected to one peer dials nobody else for its own sake, so any other
# connection below is one a module asked for.
NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "1", "high_water": "8"}


def connected_ids(node):
    return sorted(p["nodeId"] for p in node.rpc("peers.list")["peers"])


class JoinDialsTheNode(unittest.TestCase):
    def test_join_with_an_unknown_node_connects_when_its_address_is_learned(self):
        # B's identity first (its key is made at its first start), then B is stopped: when A
        # joins the document with B, A knows nothing of B but its ID.
        b = Node(extra_config={"net": dict(NET)})
        b_id = b.rpc("node.status")["nodeId"]
        self.assertEqual(b.stop(), 0)
        hub = Node(extra_config={"net": dict(NET)})
        boot = f"127.0.0.1:{hub.net_port}"
        a = Node(extra_config={"net": dict(NET, bootstrap=boot)})
        nodes = [a, hub, b]
        try:
            a_id = a.rpc("node.status")["nodeId"]
            wait_for("A connected to the hub", lambda: a.rpc("peers.list")["connected"] == 1, 30)
            a.rpc("crdt.create", {"docId": "notes:1", "type": "text"})
            a.rpc("crdt.apply", {"docId": "notes:1", "op": {"insert": {"pos": 0, "text": "hi"}}})
            # Answered and stored although B is unknown: the dial waits for an address.
            res = a.rpc("crdt.join", {"docId": "notes:1", "nodeId": b_id})
            self.assertEqual(res["peers"], [b_id])
            info = a.rpc("peers.info", {"nodeId": b_id})
            self.assertFalse(info["connected"])
            self.assertEqual(info["tags"], [{"tag": "crdt", "weight": 10}])
            self.assertEqual(metric(a, "vivimd_net_tagged_peers"), 1)

            # B comes up and joins the network through the hub; A learns its address by
            # peer exchange with the hub and dials it (A itself is at its low water).
            b.config["net"]["bootstrap"] = boot
            b.write_config()
            b.start()
            wait_for("the document to reach B", lambda: any(
                d["docId"] == "notes:1" for d in b.rpc("crdt.list")["documents"]), 60)
            wait_for("B's copy to converge", lambda: b.rpc(
                "crdt.value", {"docId": "notes:1"})["value"] == "hi", 30)
            self.assertIn(b_id, connected_ids(a))
            self.assertIn(a_id, connected_ids(b))

            # Leaving releases the tag (the connection stays until trimmed).
            a.rpc("crdt.leave", {"docId": "notes:1", "nodeId": b_id})
            wait_for("the tag released", lambda: a.rpc(
                "peers.info", {"nodeId": b_id})["tags"] == [], 10)
            self.assertEqual(metric(a, "vivimd_net_tagged_peers"), 0)
        finally:
            for n in nodes:
                if n.alive():
                    self.assertEqual(n.stop(), 0)
                n.close()


class TaggedPeerSurvivesTrimming(unittest.TestCase):
    def test_untagged_peers_are_trimmed_the_tagged_one_stays(self):
        # C is the others' hub, so that B and D, trimmed by A, stay at their low water and
        # do not dial A again.
        c = Node(extra_config={"net": dict(NET)})
        boot = f"127.0.0.1:{c.net_port}"
        b = Node(extra_config={"net": dict(NET, bootstrap=boot)})
        d = Node(extra_config={"net": dict(NET, bootstrap=boot)})
        # A grace period of 10 s instead of the default 30 s: the test waits it out.
        a = Node(extra_config={"net": dict(NET, high_water="2", grace_period_ms="10000")})
        nodes = [a, b, c, d]
        try:
            ids = {n: n.rpc("node.status")["nodeId"] for n in nodes}
            for n in (b, d):
                wait_for("B and D connected to C", lambda n=n: n.rpc("peers.list")["connected"]
                         == 1, 30)
            for n in (b, c, d):
                a.rpc("peers.connect", {"address": f"127.0.0.1:{n.net_port}"}, timeout=20)
            self.assertEqual(a.rpc("peers.list")["connected"], 3)  # over high water (2)
            a.rpc("crdt.create", {"docId": "kept:1", "type": "counter"})
            a.rpc("crdt.join", {"docId": "kept:1", "nodeId": ids[c]})
            wait_for("C tagged", lambda: a.rpc("peers.info", {"nodeId": ids[c]})["tags"]
                     == [{"tag": "crdt", "weight": 10}], 10)
            # New connections have a grace period: nobody is trimmed before it ends.
            self.assertEqual(metric(a, "vivimd_net_trimmed_total"), 0)
            # Then A trims back to its low water (1): B and D go, the tagged C stays.
            wait_for("A trimmed to C alone", lambda: connected_ids(a) == [ids[c]], 60)
            self.assertEqual(metric(a, "vivimd_net_trimmed_total"), 2)
            self.assertEqual(a.rpc("peers.info", {"nodeId": ids[c]})["tags"][0]["tag"], "crdt")
        finally:
            for n in nodes:
                if n.alive():
                    self.assertEqual(n.stop(), 0)
                n.close()


if __name__ == "__main__":
    vivimtest.main()
