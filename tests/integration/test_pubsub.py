"""Gossip pubsub through three real vivimd processes (B and C join through A): a message
published on one node reaches the subscribers on the others as pubsub.message notifications,
once; `vivimctl subscribe --json` prints them one per line and `vivimctl publish` sends them;
a topic's policy (size, publishers, retain) holds and pubsub.history serves what was kept;
bad parameters are refused with the field named; a subscriber that does not read is cut off
and its subscription goes; the metrics count it all."""

import base64
import json
import os
import subprocess
import time
import unittest

import vivimtest
from vivimtest import Node, RpcError, metric, wait_for

NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "2", "high_water": "8"}
PUBSUB = {"heartbeat_ms": "200"}
TOPIC = "circle:friends"


def b64(data):
    return base64.b64encode(data).decode()


class Subscriber:
    """One RPC connection holding subscriptions; collects pubsub.message notifications."""

    def __init__(self, node):
        self.sock = node.connect(timeout=10)
        self.buf = b""
        self.next_id = 1

    def call(self, method, params):
        self.next_id += 1
        req = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._line()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    e = msg["error"]
                    raise RpcError(e.get("code"), e.get("message"), e.get("data"))
                return msg["result"]
            self.pending.append(msg)

    pending = []

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the node closed the subscriber's connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def messages(self, count, timeout=20):
        """The next count pubsub.message notifications."""
        out = [m for m in self.pending if m.get("method") == "pubsub.message"]
        self.pending = []
        self.sock.settimeout(timeout)
        while len(out) < count:
            m = self._line()
            if m.get("method") == "pubsub.message":
                out.append(m)
        return [m["params"] for m in out]

    def close(self):
        self.sock.close()


class Pubsub(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Node(extra_config={"net": dict(NET), "pubsub": dict(PUBSUB)})
        boot = f"127.0.0.1:{cls.a.net_port}"
        cls.b = Node(extra_config={"net": dict(NET, bootstrap=boot), "pubsub": dict(PUBSUB)})
        cls.c = Node(extra_config={"net": dict(NET, bootstrap=boot), "pubsub": dict(PUBSUB),
                                   "rpc": {"max_queue_bytes": "65536"}})
        cls.nodes = [cls.a, cls.b, cls.c]
        cls.ids = {n: n.rpc("node.status")["nodeId"] for n in cls.nodes}
        # All three connected to each other (B and C learn of each other from A): a
        # publisher reaches the subscribers it is connected to, and they forward.
        wait_for("all three connected", lambda: all(n.rpc("peers.list")["connected"] == 2
                                                    for n in cls.nodes), 30)

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            if n.alive():
                rc = n.stop()
                assert rc == 0, f"vivimd exited with {rc}"
            n.close()

    def topic_info(self, node, topic):
        for t in node.rpc("pubsub.listTopics")["topics"]:
            if t["topic"] == topic:
                return t
        return None

    def test_1_published_messages_reach_every_subscriber_once(self):
        subs = {n: Subscriber(n) for n in self.nodes}
        try:
            for n, s in subs.items():
                r = s.call("pubsub.subscribe", {"topic": TOPIC})
                self.assertGreater(r["subscriptionId"], 0)
            # Everyone knows the others' subscriptions (A is connected to both).
            wait_for("A sees two subscribers", lambda: self.topic_info(self.a, TOPIC)["peers"]
                     == 2, 20)
            r = self.b.rpc("pubsub.publish", {"topic": TOPIC, "data": b64(b"hello friends")})
            self.assertEqual(len(r["messageId"]), 40)
            self.assertGreaterEqual(r["peers"], 1)
            for n, s in subs.items():
                (m,) = s.messages(1)
                self.assertEqual(m["topic"], TOPIC)
                self.assertEqual(m["messageId"], r["messageId"])
                self.assertEqual(m["from"], self.ids[self.b])
                self.assertEqual(base64.b64decode(m["data"]), b"hello friends")
            # A second message: each subscriber gets exactly the next one, nothing twice.
            r2 = self.c.rpc("pubsub.publish", {"topic": TOPIC, "data": b64(b"second")})
            for n, s in subs.items():
                (m,) = s.messages(1)
                self.assertEqual(m["messageId"], r2["messageId"])
            self.assertGreaterEqual(metric(self.a, "vivimd_pubsub_delivered_total"), 2)
            self.assertEqual(metric(self.a, "vivimd_pubsub_subscriptions"), 1)
        finally:
            for s in subs.values():
                s.close()
        # The connections went: their subscriptions go (within the module's sweep).
        wait_for("subscriptions dropped", lambda: self.topic_info(self.a, TOPIC) is None, 10)

    def test_2_vivimctl_subscribe_and_publish(self):
        env = dict(os.environ)
        proc = subprocess.Popen([vivimtest.VIVIMCTL, "--socket", self.c.socket_path, "--json",
                                 "subscribe", "user:did:key:z6MkAlice"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for("C subscribed", lambda: (self.topic_info(self.c, "user:did:key:z6MkAlice")
                                              or {}).get("subscriptions") == 1, 10)
            time.sleep(1)  # C's subscription reaches its peers
            r = self.a.ctl("publish", "user:did:key:z6MkAlice", "hi from vivimctl")
            self.assertEqual(r.returncode, 0, r.stderr)
            line = proc.stdout.readline()
            m = json.loads(line)
            self.assertEqual(base64.b64decode(m["data"]), b"hi from vivimctl")
            self.assertEqual(m["topic"], "user:did:key:z6MkAlice")
            # publish - reads standard input.
            r = subprocess.run([vivimtest.VIVIMCTL, "--socket", self.a.socket_path, "publish",
                                "user:did:key:z6MkAlice", "-"], input="from stdin",
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            m = json.loads(proc.stdout.readline())
            self.assertEqual(base64.b64decode(m["data"]), b"from stdin")
        finally:
            proc.terminate()
            proc.wait(10)

    def test_3_topic_policy_and_history(self):
        pub = self.ids[self.b]
        r = self.c.rpc("pubsub.createTopic", {"topic": "content:9f86", "config": {
            "maxMessageBytes": 16, "publishers": [pub], "retain": 3}})
        self.assertEqual(r["retain"], 3)
        s = Subscriber(self.c)
        try:
            s.call("pubsub.subscribeToContent", {"contentId": "9f86"})
            time.sleep(1)  # C's subscription reaches its peers
            for i in range(5):
                self.b.rpc("pubsub.publish", {"topic": "content:9f86",
                                              "data": b64(b"msg %d" % i)})
            got = s.messages(5)
            self.assertEqual(sorted(base64.b64decode(m["data"]) for m in got),
                             [b"msg %d" % i for i in range(5)])
            # From A, not among the publishers, and too large: neither reaches C's subscriber
            # (both are dropped at C and counted).
            self.a.rpc("pubsub.publish", {"topic": "content:9f86", "data": b64(b"not allowed")})
            self.b.rpc("pubsub.publish", {"topic": "content:9f86", "data": b64(b"x" * 17)})
            wait_for("both dropped at C", lambda: metric(
                self.c, 'vivimd_pubsub_dropped_total{reason="publisher"}', 0) >= 1 and metric(
                self.c, 'vivimd_pubsub_dropped_total{reason="too_large"}', 0) >= 1, 10)
            h = self.c.rpc("pubsub.history", {"topic": "content:9f86"})["messages"]
            self.assertEqual(len(h), 3)
            self.assertEqual([base64.b64decode(m["data"]) for m in h],
                             [base64.b64decode(m["data"]) for m in got][2:])
            since = h[0]["receivedAt"]
            h2 = self.c.rpc("pubsub.history", {"topic": "content:9f86", "since": since})
            self.assertLessEqual(len(h2["messages"]), 2)
        finally:
            s.close()
        r = self.c.rpc("pubsub.deleteTopic", {"topic": "content:9f86"})
        self.assertTrue(r["deleted"])

    def test_4_bad_parameters_are_refused(self):
        for method, params, field in [
            ("pubsub.publish", {"topic": TOPIC, "data": "not base64!"}, "data"),
            ("pubsub.publish", {"topic": "x" * 300, "data": ""}, "topic"),
            ("pubsub.subscribe", {"topic": ""}, "topic"),
            ("pubsub.subscribeToUser", {"did": "alice"}, "did"),
            ("pubsub.createTopic", {"topic": "t", "config": {"publishers": ["zz"]}},
             "publishers"),
            ("pubsub.createTopic", {"topic": "t", "config": {"retain": 10 ** 9}}, "retain"),
            ("pubsub.unsubscribe", {"subscriptionId": 0}, "subscriptionId"),
        ]:
            with self.assertRaises(RpcError, msg=method) as cm:
                self.a.rpc(method, params)
            self.assertEqual(cm.exception.code, -32602, method)
            self.assertIn(field, cm.exception.message)
        # Another connection's subscription cannot be ended from here.
        s = Subscriber(self.a)
        try:
            sid = s.call("pubsub.subscribe", {"topic": "mine"})["subscriptionId"]
            with self.assertRaises(RpcError) as cm:
                self.a.rpc("pubsub.unsubscribe", {"subscriptionId": sid})
            self.assertEqual(cm.exception.data, "VV_ENOTFOUND")
            self.assertEqual(s.call("pubsub.unsubscribe", {"subscriptionId": sid}),
                             {"unsubscribed": True})
        finally:
            s.close()

    def test_5_a_subscriber_that_does_not_read_is_cut_off(self):
        s = Subscriber(self.c)
        s.call("pubsub.subscribe", {"topic": "firehose"})
        wait_for("C's subscription known", lambda: (self.topic_info(self.c, "firehose")
                                                      or {}).get("subscriptions") == 1, 10)
        time.sleep(1)
        before = metric(self.c, 'vivimd_rpc_errors_total{kind="queue_full"}', 0)
        big = b64(os.urandom(48 * 1024))
        # C's client reads nothing; its queue bound is 64 KiB ([rpc] max_queue_bytes).
        for _ in range(20):
            self.c.rpc("pubsub.publish", {"topic": "firehose", "data": big})
        wait_for("C cut its client off",
                 lambda: metric(self.c, 'vivimd_rpc_errors_total{kind="queue_full"}', 0) > before,
                 20)
        wait_for("the subscription went", lambda: self.topic_info(self.c, "firehose") is None, 10)
        s.close()
        self.assertTrue(self.c.alive())

    def test_6_a_restarted_node_gets_what_it_missed_from_its_mesh(self):
        topic = "feed:restart"
        for n in self.nodes:
            self.assertEqual(n.rpc("pubsub.createTopic", {"topic": topic,
                                                           "config": {"retain": 10}})["retain"], 10)
        time.sleep(1.5)  # subscriptions announced, meshes grafted at the next heartbeats
        for i in range(3):
            self.b.rpc("pubsub.publish", {"topic": topic, "data": b64(b"before %d" % i)})
        wait_for("C keeps the three", lambda: len(self.c.rpc("pubsub.history", {
            "topic": topic})["messages"]) == 3, 10)
        self.assertEqual(self.c.stop(), 0)
        for i in range(2):
            self.b.rpc("pubsub.publish", {"topic": topic, "data": b64(b"missed %d" % i)})
        self.c.start()
        wait_for("C back with A", lambda: self.c.rpc("peers.list")["connected"] >= 1, 30)
        # Its memory is gone; keeping the topic again asks the mesh for what it keeps.
        self.c.rpc("pubsub.createTopic", {"topic": topic, "config": {"retain": 10}})
        try:
            wait_for("C has all five again", lambda: len(self.c.rpc("pubsub.history", {
                "topic": topic})["messages"]) == 5, 20)
        except AssertionError:
            print("C:", self.c.rpc("pubsub.listTopics"), len(self.c.rpc(
                "pubsub.history", {"topic": topic})["messages"]))
            for n in self.nodes:
                print([ln for ln in n.log_text().splitlines() if "pubsub" in ln or "DBG" in ln][-12:])
                print({k: metric(n, f"vivimd_pubsub_{k}_total") for k in (
                    "graft_sent", "graft_received", "prune_sent", "prune_received")})
            raise
        got = sorted(base64.b64decode(m["data"]) for m in self.c.rpc(
            "pubsub.history", {"topic": topic})["messages"])
        self.assertEqual(got, sorted([b"before %d" % i for i in range(3)] +
                                     [b"missed %d" % i for i in range(2)]))
        for m in self.c.rpc("pubsub.history", {"topic": topic})["messages"]:
            self.assertEqual(m["from"], self.ids[self.b])


if __name__ == "__main__":
    vivimtest.main()
