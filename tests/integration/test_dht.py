"""The DHT module through twenty real vivimd processes on 127.0.0.1 (the others join through the
first one's address, by datagram): every routing table fills, dht.findNode from every node
finds every other node's ID as the closest, dht.ping proves an ID by its signed PONG, a value
published on one node is read on every other, a provider record is found from every other
(streamed by dht.findProviders), bad parameters are refused, and a node killed with SIGKILL
does not make lookups fail."""

import base64
import hashlib
import json
import signal
import unittest

import vivimtest
from vivimtest import Node, RpcError, metric, wait_for

N = 20
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

    def find_exact(self, node, target, misses, where):
        """A lookup for target must find it, as a client would: asking again once if the
        first lookup ended without it. A lookup moves past a node slower than its soft timeout
        (2 x its measured RTT, at least 50 ms), and twenty vivimd under ASan on two busy cores
        are sometimes that slow; the misses are counted and printed, and must stay rare."""
        r = self.find(node, target)
        if not r["closest"] or r["closest"][0]["nodeId"] != target:
            misses.append(where)
            r = self.find(node, target)
        self.assertGreater(len(r["closest"]), 0, (where, r))
        self.assertEqual(r["closest"][0]["nodeId"], target, (where, r))
        return r

    def test_1_tables_fill_and_every_node_finds_every_other(self):
        def full():
            return all(n.rpc("dht.routingTable")["size"] >= N - 1 for n in self.nodes)
        wait_for("routing tables to fill", full, 60)
        rt = self.nodes[3].rpc("dht.routingTable")
        self.assertGreater(rt["size"], 0)
        c = rt["buckets"][0]["contacts"][0]
        self.assertEqual(set(c), {"nodeId", "address", "rttMs", "lastSeenMs", "failures"})
        times, misses = [], []
        for i, node in enumerate(self.nodes):
            for j, target in enumerate(self.ids):
                if i == j:
                    continue
                r = self.find_exact(node, target, misses, (i, j))
                times.append(r["ms"])
                self.assertGreaterEqual(r["hops"], 1)
                self.assertGreaterEqual(r["ms"], 0)
        times.sort()
        print(f"\nfindNode on loopback, {len(times)} lookups: median {times[len(times) // 2]} ms, "
              f"max {times[-1]} ms; {len(misses)} found only when asked again")
        self.assertLessEqual(len(misses), len(times) // 10, misses)
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

    def test_2b_values_published_on_one_are_read_on_every_other(self):
        wait_for("routing tables to fill",
                 lambda: all(n.rpc("dht.routingTable")["size"] >= N - 2 for n in self.nodes), 30)
        value = b"hello from node 2"
        r = self.nodes[2].rpc("dht.publish", {"key": "greeting", "value":
                                              base64.b64encode(value).decode(), "ttl": 600},
                              timeout=20)
        self.assertEqual(r["key"], hashlib.sha256(b"greeting").hexdigest())
        self.assertGreaterEqual(r["storedAt"], N - 2, r)
        seq = r["seq"]
        for i, node in enumerate(self.nodes):
            g = node.rpc("dht.get", {"key": "greeting"}, timeout=20)
            self.assertEqual(len(g["values"]), 1, (i, g))
            v = g["values"][0]
            self.assertEqual(base64.b64decode(v["value"]), value)
            self.assertEqual(v["publisher"], self.ids[2])
            self.assertEqual(v["seq"], seq)
        # A newer value from the same publisher replaces it; another publisher adds one.
        r2 = self.nodes[2].rpc("dht.publish", {"key": "greeting", "value":
                                               base64.b64encode(b"v2").decode()}, timeout=20)
        self.assertGreater(r2["seq"], seq)
        self.nodes[4].rpc("dht.publish", {"key": "greeting", "value":
                                          base64.b64encode(b"other").decode()}, timeout=20)
        g = self.nodes[6].rpc("dht.get", {"key": "greeting"}, timeout=20)
        got = {v["publisher"]: base64.b64decode(v["value"]) for v in g["values"]}
        self.assertEqual(got, {self.ids[2]: b"v2", self.ids[4]: b"other"})
        # Nothing under another key.
        self.assertEqual(self.nodes[1].rpc("dht.get", {"key": "nothing here"},
                                           timeout=20)["values"], [])
        self.assertGreater(metric(self.nodes[0], 'vivimd_dht_stores_total{type="put_value",'
                                                 'outcome="accepted"}'), 0)
        self.assertGreater(metric(self.nodes[0], "vivimd_dht_values_stored"), 0)
        # Bad parameters are refused, naming the field.
        for params, field in [({"key": "k"}, "value"),
                              ({"key": "k", "value": "***"}, "value"),
                              ({"key": "k", "value": "", "ttl": 0}, "ttl"),
                              ({"key": "k", "value": "", "ttl": 172801}, "ttl"),
                              ({"key": "k" * 1025, "value": ""}, "key")]:
            with self.assertRaises(RpcError) as cm:
                self.nodes[0].rpc("dht.publish", params)
            self.assertIn(field, cm.exception.message)
        with self.assertRaises(RpcError) as cm:
            self.nodes[0].rpc("dht.publish", {"key": "k", "value":
                                              base64.b64encode(b"x" * 65537).decode()})
        self.assertIn("value", cm.exception.message)
        # A value too large for a datagram (up to 64 KiB) is stored and read over connections.
        big = bytes(range(256)) * 160  # 40,960 bytes
        r = self.nodes[5].rpc("dht.publish", {"key": "big", "value":
                                              base64.b64encode(big).decode()}, timeout=30)
        self.assertGreaterEqual(r["storedAt"], N - 2, r)
        for i, node in enumerate(self.nodes):
            g = node.rpc("dht.get", {"key": "big"}, timeout=30)
            self.assertEqual([base64.b64decode(v["value"]) for v in g["values"]], [big], i)

    def test_2c_providers_are_found_from_every_other(self):
        wait_for("routing tables to fill",
                 lambda: all(n.rpc("dht.routingTable")["size"] >= N - 2 for n in self.nodes), 30)
        r = self.nodes[3].rpc("dht.publishContent", {"contentId": "blob:abc", "contentType":
                                                     "image/png", "size": 4096,
                                                     "replicationFactor": 3}, timeout=20)
        self.assertEqual(r["contentId"], "blob:abc")
        self.assertGreaterEqual(r["storedAt"], N - 2, r)
        for i, node in enumerate(self.nodes):
            p = node.rpc("dht.getProviders", {"contentId": "blob:abc"}, timeout=20)
            self.assertEqual([x["nodeId"] for x in p["providers"]], [self.ids[3]], (i, p))
            self.assertEqual(p["providers"][0]["address"], f"127.0.0.1:{self.nodes[3].net_port}")
            self.assertEqual(p["contentType"], "image/png")
            self.assertEqual(p["size"], 4096)
            self.assertGreater(p["firstMs"], 0)
        # Streamed: the provider arrives as a notification before the result.
        sock = self.nodes[6].connect(timeout=20)
        try:
            sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "dht.findProviders",
                                     "params": {"contentId": "blob:abc", "limit": 1}}).encode()
                         + b"\n")
            buf, lines = b"", []
            while not any(m.get("id") == 1 for m in lines):
                chunk = sock.recv(65536)
                self.assertTrue(chunk, "connection closed")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.append(json.loads(line))
        finally:
            sock.close()
        self.assertEqual(lines[0]["method"], "dht.provider")
        self.assertEqual(lines[0]["params"]["nodeId"], self.ids[3])
        self.assertEqual(lines[0]["params"]["contentId"], "blob:abc")
        self.assertEqual(lines[-1]["result"]["providers"][0]["nodeId"], self.ids[3])
        self.assertEqual(self.nodes[1].rpc("dht.getProviders", {"contentId": "nobody"},
                                           timeout=20)["providers"], [])
        self.assertGreater(metric(self.nodes[0], "vivimd_dht_provider_records"), 0)

    def test_3_a_killed_node_does_not_fail_lookups(self):
        victim = self.nodes[5]
        victim.stop(sig=signal.SIGKILL)
        times, misses = [], []
        for i, node in enumerate(self.nodes):
            if node is victim:
                continue
            for j, target in enumerate(self.ids):
                if i == j or j == 5:
                    continue
                r = self.find_exact(node, target, misses, (i, j))
                times.append(r["ms"])
            r = self.find(node, self.ids[5])
            self.assertGreater(len(r["closest"]), 0)
        times.sort()
        print(f"\nfindNode after a SIGKILL, {len(times)} lookups: median {times[len(times) // 2]} "
              f"ms, max {times[-1]} ms; {len(misses)} found only when asked again")
        self.assertLessEqual(len(misses), len(times) // 10, misses)
        # What was published is still found from every live node.
        for i, node in enumerate(self.nodes):
            if node is victim:
                continue
            g = node.rpc("dht.get", {"key": "greeting"}, timeout=20)
            self.assertIn(self.ids[2], [v["publisher"] for v in g["values"]], (i, g))
            p = node.rpc("dht.getProviders", {"contentId": "blob:abc"}, timeout=20)
            self.assertEqual([x["nodeId"] for x in p["providers"]], [self.ids[3]], (i, p))


if __name__ == "__main__":
    vivimtest.main()
