"""The DHT module through eight real vivimd processes on 127.0.0.1 (seven join through the
first one's address, by datagram): every routing table fills, dht.findNode from every node
finds every other node's ID as the closest, dht.ping proves an ID by its signed PONG, and a
node killed with SIGKILL does not make lookups fail."""

import signal
import unittest

import vivimtest
from vivimtest import Node, RpcError, metric, wait_for

N = 8
NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "2", "high_water": "8"}
# Short timeouts so that a dead node costs little; a short refresh so that tables fill fast.
DHT = {"query_timeout_ms": "500", "refresh_ms": "2000"}


class DhtNodes(unittest.TestCase):
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

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            n.close()

    def find(self, node, target):
        return node.rpc("dht.findNode", {"nodeId": target}, timeout=20)

    def test_1_tables_fill_and_every_node_finds_every_other(self):
        def full():
            return all(n.rpc("dht.routingTable")["size"] >= N - 2 for n in self.nodes)
        wait_for("routing tables to fill", full, 30)
        rt = self.nodes[3].rpc("dht.routingTable")
        self.assertGreater(rt["size"], 0)
        c = rt["buckets"][0]["contacts"][0]
        self.assertEqual(set(c), {"nodeId", "address", "rttMs", "lastSeenMs", "failures"})
        times = []
        for i, node in enumerate(self.nodes):
            for j, target in enumerate(self.ids):
                if i == j:
                    continue
                r = self.find(node, target)
                times.append(r["ms"])
                self.assertGreater(len(r["closest"]), 0, (i, j, r))
                self.assertEqual(r["closest"][0]["nodeId"], target, (i, j, r))
                self.assertGreaterEqual(r["hops"], 1)
                self.assertGreaterEqual(r["ms"], 0)
        times.sort()
        print(f"\nfindNode on loopback, {len(times)} lookups: median {times[len(times) // 2]} ms, "
              f"max {times[-1]} ms")
        self.assertGreater(metric(self.nodes[1], 'vivimd_dht_lookups_total{kind="find_node",'
                                                 'outcome="ok"}'), 0)
        self.assertGreater(metric(self.nodes[0], "vivimd_dht_table_contacts"), 0)

    def test_2_ping_proves_the_id(self):
        a, b = self.nodes[1], self.nodes[2]
        r = a.rpc("dht.ping", {"address": f"127.0.0.1:{b.net_port}"})
        self.assertEqual(r["nodeId"], self.ids[2])
        self.assertGreaterEqual(r["rttMs"], 0)
        r = a.rpc("dht.ping", {"nodeId": self.ids[2]})
        self.assertEqual(r["nodeId"], self.ids[2])
        with self.assertRaises(RpcError):
            a.rpc("dht.ping", {"nodeId": self.ids[3][:10]})
        with self.assertRaises(RpcError):
            a.rpc("dht.ping", {"nodeId": "00" * 32, "address": f"127.0.0.1:{b.net_port}"})
        s = a.rpc("dht.stats")
        self.assertGreater(s["pongsVerified"], 0)
        self.assertGreater(s["served"]["find_node"], 0)
        self.assertEqual(a.rpc("dht.refreshBucket", {"index": 0})["started"], True)

    def test_3_a_killed_node_does_not_fail_lookups(self):
        victim = self.nodes[5]
        victim.stop(sig=signal.SIGKILL)
        times = []
        for i, node in enumerate(self.nodes):
            if node is victim:
                continue
            for j, target in enumerate(self.ids):
                if i == j or j == 5:
                    continue
                r = self.find(node, target)
                times.append(r["ms"])
                self.assertEqual(r["closest"][0]["nodeId"], target, (i, j, r))
            r = self.find(node, self.ids[5])
            self.assertGreater(len(r["closest"]), 0)
        times.sort()
        print(f"\nfindNode after a SIGKILL, {len(times)} lookups: median {times[len(times) // 2]} "
              f"ms, max {times[-1]} ms")


if __name__ == "__main__":
    vivimtest.main()
