"""The DHT's routing table survives a restart (state_dir/dht.sqlite, docs/dht.md,
"Persistence"): in a cluster of five vivimd joined through the first one, a node stopped and
started again with an EMPTY bootstrap list, on a new port so that no other node can find it,
rejoins from the contacts it saved: its routing table fills again and dht.findNode from it
finds every other node. The same after a SIGKILL (the save is one WAL transaction, so the file
is whole). Without the file, the same restart stays alone: the saved table is what rejoins.
A node's own published records survive its restart too and are republished: a node that
joined while it was down gets them."""

import base64
import os
import signal
import time
import unittest

import vivimtest
from vivimtest import Node, free_port, metric, wait_for

N = 5
NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "2", "high_water": "8"}
# Saves every second, so that a SIGKILL finds a recent save; short timeouts and refresh so
# that tables fill fast.
DHT = {"query_timeout_ms": "500", "refresh_ms": "2000", "save_ms": "1000", "republish_s": "10"}


class DhtRestart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.nodes = [Node(extra_config={"net": dict(NET), "dht": dict(DHT)})]
        boot = f"127.0.0.1:{cls.nodes[0].net_port}"
        try:
            for _ in range(N - 1):
                cls.nodes.append(Node(extra_config={"net": dict(NET, bootstrap=boot),
                                                    "dht": dict(DHT)}))
        except BaseException:
            for n in cls.nodes:
                n.close()
            raise
        cls.ids = [n.rpc("node.status")["nodeId"] for n in cls.nodes]
        # Nodes restarted on a new port: the others still hold their old address until it
        # fails three times, so lookups for them are not what these tests check.
        cls.moved = set()
        def full():
            return all(n.rpc("dht.routingTable")["size"] >= N - 2 for n in cls.nodes)
        wait_for("routing tables to fill", full, 60)

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            n.close()

    def restart_alone(self, i, sig):
        """Stops node i with sig and starts it again with no bootstrap list, on a new port:
        nobody knows where it is, it knows only what it saved."""
        node = self.nodes[i]
        self.moved.add(i)
        node.stop(sig=sig)
        node.net_port = free_port()
        node.config["net"]["listen"] = f"127.0.0.1:{node.net_port}"
        node.config["net"]["bootstrap"] = ""
        node.write_config()
        node.start()

    def rejoins(self, i, sig):
        node = self.nodes[i]
        wait_for("a save with the cluster in it",
                 lambda: metric(node, "vivimd_dht_saved_contacts") >= N - 2, 20)
        self.restart_alone(i, sig)
        self.assertGreaterEqual(metric(node, "vivimd_dht_saved_contacts"), N - 2)
        wait_for("the restarted node's table to fill",
                 lambda: node.rpc("dht.routingTable")["size"] >= N - 2, 30)
        for j, target in enumerate(self.ids):
            if j in self.moved:
                continue
            r = node.rpc("dht.findNode", {"nodeId": target}, timeout=20)
            self.assertEqual(r["closest"][0]["nodeId"], target, (i, j, r))
        self.assertEqual(metric(node, "vivimd_dht_persist_errors_total"), 0)
        log = node.log_text()
        self.assertIn("saved contact(s)", log)
        self.assertNotIn(".bad", log)

    def test_1_a_node_restarted_without_bootstrap_rejoins_from_its_saved_table(self):
        self.rejoins(3, signal.SIGTERM)

    def test_2_after_sigkill_the_saved_table_is_whole_and_rejoins(self):
        # Let a few periodic saves happen, then kill without warning.
        time.sleep(2.5)
        self.rejoins(2, signal.SIGKILL)

    def test_3_without_the_saved_table_the_same_restart_stays_alone(self):
        node = self.nodes[4]
        node.stop()
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(node.state_dir, "dht.sqlite" + suffix)
            if os.path.exists(path):
                os.unlink(path)
        self.restart_alone(4, signal.SIGTERM)
        time.sleep(3)
        self.assertEqual(node.rpc("dht.routingTable")["size"], 0)
        self.assertEqual(metric(node, "vivimd_dht_saved_contacts"), 0)

    def test_4_own_records_survive_a_restart_and_are_republished(self):
        node = self.nodes[1]
        r = node.rpc("dht.publishContent", {"contentId": "doc:own", "ttl": 3600}, timeout=20)
        self.assertGreaterEqual(r["storedAt"], 1)
        node.rpc("dht.publish", {"key": "own-value", "value": base64.b64encode(b"mine").decode(),
                                 "ttl": 3600}, timeout=20)
        self.assertEqual(metric(node, "vivimd_dht_own_records"), 2)
        # Killed without warning; a node joins while it is down (it never saw the publish).
        node.stop(sig=signal.SIGKILL)
        late = Node(extra_config={"net": dict(NET, bootstrap=f"127.0.0.1:{self.nodes[0].net_port}"),
                                  "dht": dict(DHT)})
        self.nodes.append(late)
        wait_for("the late node to join", lambda: late.rpc("dht.routingTable")["size"] >= 1, 30)
        self.assertEqual(metric(late, "vivimd_dht_provider_records"), 0)
        self.restart_alone(1, signal.SIGTERM)  # (already stopped: starts it on a new port)
        self.assertEqual(metric(node, "vivimd_dht_own_records"), 2)
        self.assertIn("2 own record(s) restored", node.log_text())
        wait_for("the republish to reach the late node",
                 lambda: metric(late, "vivimd_dht_provider_records") >= 1 and
                 metric(late, "vivimd_dht_values_stored") >= 1, 60)
        self.assertGreater(metric(node, "vivimd_dht_republished_total"), 0)
        p = late.rpc("dht.getProviders", {"contentId": "doc:own"}, timeout=20)
        self.assertIn(self.ids[1], [x["nodeId"] for x in p["providers"]])
        g = late.rpc("dht.get", {"key": "own-value"}, timeout=20)
        self.assertEqual([base64.b64decode(v["value"]) for v in g["values"]], [b"mine"])


if __name__ == "__main__":
    vivimtest.main()
