"""The echo module, the worked example of "Writing a module" (docs/architecture.md), through
two real vivimd processes: echo.ping measures a round trip through the request layer; a
node whose [echo] serve is turned off by a reload answers "denied"; a stopped peer fails
the call at once; a payload over max_bytes is refused; the metrics and /health say so."""

import json
import unittest

import vivimtest
from vivimtest import Node, RpcError, http_get, wait_for

NET = {"keepalive_ms": "1000", "reconnect_max_ms": "1000", "low_water": "2", "high_water": "8"}


class Echo(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Node(extra_config={"net": dict(NET)})
        boot = f"127.0.0.1:{cls.a.net_port}"
        cls.b = Node(extra_config={"net": dict(NET, bootstrap=boot), "echo": {"max_bytes": "64"}})
        cls.a_id = cls.a.rpc("node.status")["nodeId"]
        cls.b_id = cls.b.rpc("node.status")["nodeId"]
        wait_for("a and b connected", lambda: cls.a.rpc("peers.list")["connected"] == 1 and
                 cls.b.rpc("peers.list")["connected"] == 1, 30)

    @classmethod
    def tearDownClass(cls):
        for n in (cls.a, cls.b):
            if n.alive():
                rc = n.stop()
                assert rc == 0, f"vivimd exited with {rc}"
            n.close()

    def test_1_ping_both_ways(self):
        r = self.a.rpc("echo.ping", {"nodeId": self.b_id, "bytes": 48})
        self.assertEqual(r["nodeId"], self.b_id)
        self.assertEqual(r["bytes"], 48)
        self.assertGreaterEqual(r["rttMs"], 0)
        self.assertLess(r["rttMs"], 5000)
        r = self.b.rpc("echo.ping", {"nodeId": self.a_id})
        self.assertEqual(r["bytes"], 32)
        served = vivimtest.metric(self.b, 'vivimd_echo_served_total{result="ok"}')
        self.assertGreaterEqual(served, 1)
        _, body, _ = http_get(self.a.metrics_url + "/health")
        self.assertIn("echo", json.loads(body)["checks"])

    def test_2_bounds_are_clear_errors(self):
        # b's own max_bytes bounds what it sends.
        with self.assertRaises(RpcError) as e:
            self.b.rpc("echo.ping", {"nodeId": self.a_id, "bytes": 65})
        self.assertEqual(e.exception.code, -32602)
        # a sends 1000 bytes (its max is the default 1024); b serves at most 64.
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"nodeId": self.b_id, "bytes": 1000})
        self.assertIn("error 3", e.exception.message)  # VV_REQ_ERR_BAD_REQUEST
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"nodeId": "00" * 32})
        self.assertIn("not connected", e.exception.message)
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"nodeId": self.b_id, "extra": 1})
        self.assertEqual(e.exception.code, -32602)

    def test_3_serve_off_by_reload_is_denied(self):
        self.b.config["echo"]["serve"] = "false"
        self.b.write_config()
        self.assertIn("echo.serve applied", self.b.rpc("node.reload")["changes"])
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"nodeId": self.b_id})
        self.assertIn("error 4", e.exception.message)  # VV_REQ_ERR_DENIED
        self.assertGreaterEqual(
            vivimtest.metric(self.b, 'vivimd_echo_served_total{result="denied"}'), 1)
        self.b.config["echo"]["serve"] = "true"
        self.b.write_config()
        self.b.rpc("node.reload")
        self.a.rpc("echo.ping", {"nodeId": self.b_id})

    def test_4_a_peer_that_goes_away_fails_the_call(self):
        self.b.stop()
        wait_for("a to see b gone", lambda: self.a.rpc("peers.list")["connected"] == 0, 30)
        with self.assertRaises(RpcError):
            self.a.rpc("echo.ping", {"nodeId": self.b_id, "timeoutMs": 2000})
        self.assertGreaterEqual(
            sum(vivimtest.metric(self.a, f'vivimd_echo_pings_total{{result="{r}"}}', 0)
                for r in ("refused", "failed", "timeout")), 1)


if __name__ == "__main__":
    vivimtest.main()
