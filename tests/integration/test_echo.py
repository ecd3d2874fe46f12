"""The echo module, the worked example of "Writing a module" (docs/architecture.md), through
two real vivimd processes: echo.ping measures a round trip through the request layer, over
the connection and by datagram over real UDP (docs/protocol.md, "Datagrams"); a
node whose [echo] serve is turned off by a reload answers "denied"; a stopped peer fails
the call at once; a payload over max_bytes is refused; the metrics and /health say so."""

import json
import socket
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

    def test_1b_ping_by_datagram(self):
        b_addr = f"127.0.0.1:{self.b.net_port}"
        out_before = vivimtest.metric(
            self.a, 'vivimd_net_datagrams_total{direction="out",outcome="ok"}')
        r = self.a.rpc("echo.ping", {"datagram": True, "address": b_addr, "nodeId": self.b_id,
                                     "bytes": 48})
        self.assertEqual(r["nodeId"], self.b_id)
        self.assertEqual(r["address"], b_addr)
        self.assertEqual(r["bytes"], 48)
        self.assertLess(r["rttMs"], 5000)
        # By address alone: the answer's claimed ID is reported.
        r = self.b.rpc("echo.ping", {"datagram": True, "address": f"127.0.0.1:{self.a.net_port}"})
        self.assertEqual(r["nodeId"], self.a_id)
        self.assertEqual(r["bytes"], 32)
        self.assertGreaterEqual(vivimtest.metric(
            self.a, 'vivimd_net_datagrams_total{direction="out",outcome="ok"}'), out_before + 1)
        self.assertGreaterEqual(vivimtest.metric(
            self.b, 'vivimd_net_datagrams_total{direction="in",outcome="ok"}'), 2)
        self.assertGreater(vivimtest.metric(
            self.b, 'vivimd_net_datagram_bytes_total{direction="in"}'), 0)
        # An answer claiming another ID than the one asked for completes nothing.
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"datagram": True, "address": b_addr, "nodeId": "00" * 32,
                                     "timeoutMs": 500})
        self.assertIn("timed out", e.exception.message)
        # Nobody at that port: the request times out (no connection is attempted).
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"datagram": True, "address": f"127.0.0.1:{vivimtest.free_port()}",
                                     "timeoutMs": 300})
        self.assertIn("timed out", e.exception.message)
        # Names are not resolved on this path; address only goes with datagram.
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"datagram": True, "address": f"localhost:{self.b.net_port}"})
        self.assertEqual(e.exception.code, -10806)  # VV_EDGRAM_ADDRESS
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"address": b_addr})
        self.assertEqual(e.exception.code, -32602)
        with self.assertRaises(RpcError) as e:
            self.a.rpc("echo.ping", {"datagram": True})
        self.assertEqual(e.exception.code, -32602)

    def test_1c_bad_datagrams_are_dropped_and_counted_by_reason(self):
        envelope = b"VD\x01\x00" + bytes(32)
        cases = {
            "dropped_short": b"VD\x01",
            "dropped_magic": b"XD\x01\x00" + bytes(32) + b"\x95\x01\x00\x00\x00\xc0",
            "dropped_version": b"VD\x02\x00" + bytes(32) + b"\x95\x01\x00\x00\x00\xc0",
            "dropped_flags": b"VD\x01\x01" + bytes(32) + b"\x95\x01\x00\x00\x00\xc0",
            "dropped_frame": envelope + b"\x95\x09\x00\x00\x00\xc0",
            "dropped_oversize": envelope + bytes(1200),
            # A frame on a channel nobody receives datagrams on.
            "dropped_unhandled": envelope + b"\x95\x01\x00\xcd\x0f\x05\x00\xc0",
        }
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for payload in cases.values():
                s.sendto(payload, ("127.0.0.1", self.b.net_port))

        def all_counted():
            return all(vivimtest.metric(
                self.b, f'vivimd_net_datagrams_total{{direction="in",outcome="{o}"}}', 0) >= 1
                for o in cases)
        wait_for("every bad datagram counted", all_counted, 10)
        # b still answers.
        self.a.rpc("echo.ping", {"datagram": True, "address": f"127.0.0.1:{self.b.net_port}"})

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
