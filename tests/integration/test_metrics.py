"""The monitor's HTTP endpoint on a real vivimd: a scrape that promtool accepts without a
warning, health, the event stream, wrong paths and methods, and requests that are too big
or too slow."""

import json
import shutil
import signal
import socket
import subprocess
import time
import unittest
import urllib.parse

import vivimtest
from vivimtest import Node, http_get


class Endpoint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = Node()
        u = urllib.parse.urlsplit(cls.node.metrics_url)
        cls.addr = (u.hostname, u.port)

    @classmethod
    def tearDownClass(cls):
        rc = cls.node.stop()
        cls.node.close()
        assert rc == 0, f"vivimd exited with {rc}"

    def raw(self, data, timeout=5):
        with socket.create_connection(self.addr, timeout=timeout) as s:
            s.sendall(data)
            buf = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            except socket.timeout:
                pass
            return buf

    @unittest.skipUnless(shutil.which("promtool"), "promtool (Debian package prometheus) missing")
    def test_scrape_passes_promtool_without_warnings(self):
        self.node.rpc("node.status")  # so that RPC families have samples
        status, body, headers = http_get(self.node.metrics_url + "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual((r.stdout + r.stderr).strip(), b"", "promtool printed warnings")
        text = body.decode()
        for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                       "process_open_fds", "process_max_fds", "process_start_time_seconds",
                       "vivimd_build_info", "vivimd_rpc_requests_total",
                       "vivimd_rpc_request_duration_seconds_bucket",
                       # the request layer's counters, exported by the net module
                       "vivimd_env_requests_sent_total", "vivimd_env_requests_timed_out_total",
                       "vivimd_env_requests_in_flight"):
            self.assertIn(family, text)
        # Histograms: the +Inf bucket equals the count.
        lines = {l.split(" ")[0]: l.split(" ")[1] for l in text.splitlines()
                 if l and not l.startswith("#")}
        self.assertEqual(lines['vivimd_rpc_request_duration_seconds_bucket{le="+Inf"}'],
                         lines["vivimd_rpc_request_duration_seconds_count"])

    def test_health_is_200_when_ready(self):
        status, body, headers = http_get(self.node.metrics_url + "/health")
        self.assertEqual(status, 200)
        h = json.loads(body)
        self.assertEqual(h["status"], "ok")
        self.assertEqual(len(h["nodeId"]), 64)
        self.assertEqual(h["modules"]["rpc"], "running")

    def test_events_stream_receives_reload_event(self):
        with socket.create_connection(self.addr, timeout=10) as s:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
            self.assertIn(b"Content-Type: text/event-stream", buf)
            self.node.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while b"event: node.reload" not in buf and time.monotonic() < deadline:
                buf += s.recv(4096)
            self.assertIn(b"event: node.reload", buf)
            data = [l for l in buf.split(b"\n") if l.startswith(b"data: ") and b"node.reload" in l]
            ev = json.loads(data[-1][6:])
            self.assertEqual(ev["kind"], "node.reload")
            self.assertTrue(ev["data"]["ok"])
            # Recent events are replayed to a new subscriber: node.ready came before.
            self.assertIn(b"event: node.ready", buf)

    def test_other_paths_404_other_methods_405_head_has_no_body(self):
        self.assertEqual(http_get(self.node.metrics_url + "/nope")[0], 404)
        status, body, headers = http_get(self.node.metrics_url + "/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET, HEAD")
        status, body, headers = http_get(self.node.metrics_url + "/metrics", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertGreater(int(headers["Content-Length"]), 0)

    def test_keep_alive_pipelining_answers_in_order(self):
        reply = self.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
        first = reply.find(b"HTTP/1.1 200")
        second = reply.find(b"HTTP/1.1 404")
        self.assertTrue(0 <= first < second, reply[:200])

    def test_oversized_and_malformed_requests_are_cut_off(self):
        big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        self.assertTrue(self.raw(big).startswith(b"HTTP/1.1 431"))
        self.assertTrue(self.raw(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")
                        .startswith(b"HTTP/1.1 414"))
        self.assertTrue(self.raw(b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400"))
        self.assertEqual(http_get(self.node.metrics_url + "/health")[0], 200)

    def test_slow_request_is_cut_off(self):
        with socket.create_connection(self.addr, timeout=30) as s:
            s.sendall(b"GET /metr")
            t0 = time.monotonic()
            self.assertEqual(s.recv(100), b"")  # closed by the server
            self.assertLess(time.monotonic() - t0, 25)
        self.assertEqual(http_get(self.node.metrics_url + "/health")[0], 200)


if __name__ == "__main__":
    vivimtest.main()
