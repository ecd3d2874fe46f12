"""JSON-RPC over the real socket of a real vivimd: framing, limits, hostile input, and
vivimctl. The core's conformance to the specification is unit-tested
(tests/unit/rpc/test_jsonrpc.c); here the daemon must stay up and answer through it all."""

import json
import os
import random
import socket
import subprocess
import time
import unittest

import vivimtest
from vivimtest import VIVIMCTL, Node


def read_lines(sock, n, timeout=10):
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return [json.loads(l) for l in buf.split(b"\n") if l]


def malformed_inputs():
    """A hundred kinds of bad input, each one line (or a fragment) of bytes."""
    rnd = random.Random(7)
    cases = [
        b"{", b"}", b"[", b"]", b"[[", b'{"jsonrpc":"2.0"', b'{"jsonrpc":"2.0","method":',
        b"null", b"true", b"false", b"0", b"-1", b"1e999", b'"str"', b"[null]", b"[[]]",
        b"[{}]", b"{}", b'{"jsonrpc":2.0,"method":"node.status","id":1}',
        b'{"jsonrpc":"2.0","method":"node.status","id":{}}',
        b'{"jsonrpc":"2.0","method":"node.status","id":[]}',
        b'{"jsonrpc":"2.0","method":"node.status","id":true}',
        b'{"jsonrpc":"2.0","method":null,"id":1}', b'{"jsonrpc":"2.0","method":{},"id":1}',
        b'{"jsonrpc":"2.0","method":"node.status","params":"x","id":1}',
        b'{"jsonrpc":"2.0","method":"node.status","params":1,"id":1}',
        b'{"jsonrpc":"2.0","method":"","id":1}', b'{"jsonrpc":"2.0","method":"\\u0000","id":1}',
        b'{"jsonrpc":"2.0","method":"node.status","id":1,"id":2}',
        b'{"jsonrpc":"2.0","method":"node.status","id":99999999999999999999999999}',
        b'{"jsonrpc":"2.0","method":"node.status","id":1.5e308}',
        b'\xff\xfe\xfd', b'{"jsonrpc":"2.0","method":"\xc3\x28","id":1}',
        b'{"jsonrpc":"2.0","method":"\xed\xa0\x80","id":1}', b'\x00', b'{"a":"\x00"}',
        b'{"jsonrpc":"2.0","method":"node.status","id":1}\x00',
        b'[' * 100000, b'{"a":' * 50000, b'[1,' * 100000, b'"' + b'\\' * 10001,
        b'"\\ud800"', b'{"jsonrpc":"2.0","method":"node.status","id":"\\ud800"}',
        b'[' + b'1,' * 2000 + b'1]', b'[' + b'{},' * 1001 + b'{}]',
        b'{"jsonrpc":"2.0","method":"rpc.discover","params":[' + b'1,' * 5000 + b'1],"id":1}',
        b'\r', b'\t\t', b'  {"jsonrpc":"2.0","method":"node.status","id":1}  ',
        b'{"jsonrpc":"2.0","method":"node.shutdown"', b'NaN', b'Infinity', b'-', b'01',
        b'{"jsonrpc":"2.0","method":"node.status","id":01}', b'/* */', b'// x', b"'x'",
        b'{jsonrpc:"2.0"}', b'{"jsonrpc":"2.0",}', b'[1,]', b'{"\\x":1}', b'{"\\u12":1}',
        b'GET / HTTP/1.1', b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03',
        b'{"jsonrpc":"2.0","method":"node.status","params":{"a":' + b'"x"' * 1 + b'},"id":1}',
    ]
    while len(cases) < 100:
        n = rnd.randint(1, 300)
        cases.append(bytes(rnd.randint(1, 255) for _ in range(n)).replace(b"\n", b" "))
    return cases


class Framing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = Node(extra_config={"rpc": {"max_line_bytes": "65536", "max_clients": "8",
                                              "max_queue_bytes": "65536"}})

    @classmethod
    def tearDownClass(cls):
        rc = cls.node.stop()
        cls.node.close()
        assert rc == 0, f"vivimd exited with {rc}"

    def assert_alive(self):
        self.assertIn("nodeId", self.node.rpc("node.status"))

    def test_hundred_kinds_of_malformed_input_leave_the_daemon_answering(self):
        after = b'{"jsonrpc":"2.0","method":"node.status","id":"after"}\n'
        for i, case in enumerate(malformed_inputs()):
            with self.node.send_raw(case + b"\n" + after) as s:
                # Every answer is a JSON-RPC response (or a batch of them), and the good
                # request that follows the bad line on the same connection is answered.
                s.settimeout(10)
                buf = b""
                seen_after = False
                while not seen_after:
                    try:
                        chunk = s.recv(1 << 20)
                    except socket.timeout:
                        self.fail(f"case {i} {case[:40]!r}: no answer to the next request")
                    self.assertTrue(chunk, f"case {i} {case[:40]!r}: connection closed")
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        reply = json.loads(line)
                        for r in reply if isinstance(reply, list) else [reply]:
                            self.assertEqual(r.get("jsonrpc"), "2.0", (i, case[:40], r))
                            self.assertTrue("error" in r or "result" in r, (i, r))
                            seen_after |= r.get("id") == "after" and "result" in r
        self.assert_alive()

    def test_over_long_line_is_answered_and_the_connection_stays_usable(self):
        with self.node.connect() as s:
            s.sendall(b'{"jsonrpc":"2.0","method":"x","params":["' + b"a" * 200000 + b'"]}\n')
            s.sendall(b'{"jsonrpc":"2.0","method":"node.status","id":2}\n')
            replies = read_lines(s, 2)
            self.assertEqual(replies[0]["error"]["code"], -32600)
            self.assertEqual(replies[0]["error"]["data"], "VV_ERPC_LINE_TOO_LONG")
            self.assertEqual(replies[1]["id"], 2)

    def test_ten_megabyte_line(self):
        with self.node.connect() as s:
            s.settimeout(30)
            chunk = b"x" * (1 << 20)
            for _ in range(10):
                s.sendall(chunk)
            s.sendall(b'\n{"jsonrpc":"2.0","method":"node.status","id":3}\n')
            replies = read_lines(s, 2, timeout=30)
            self.assertEqual(replies[0]["error"]["data"], "VV_ERPC_LINE_TOO_LONG")
            self.assertEqual(replies[1]["id"], 3)
        self.assert_alive()

    def test_lines_split_across_writes_and_crlf(self):
        with self.node.connect() as s:
            msg = b'{"jsonrpc":"2.0","method":"node.status","id":"split"}\r\n'
            for b in msg:
                s.sendall(bytes([b]))
            self.assertEqual(read_lines(s, 1)[0]["id"], "split")
            s.sendall(b'{"jsonrpc":"2.0","method":"node.status","id":1}\n'
                      b'{"jsonrpc":"2.0","method":"node.status","id":2}\n')
            self.assertEqual([r["id"] for r in read_lines(s, 2)], [1, 2])

    def test_client_limit(self):
        held = [self.node.connect() for _ in range(8)]
        try:
            time.sleep(0.2)
            with self.node.connect() as extra:
                reply = read_lines(extra, 1)[0]
                self.assertEqual(reply["error"]["code"], -10402)
                self.assertEqual(extra.recv(100), b"")  # then closed
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        self.assert_alive()

    def test_client_that_never_reads_is_cut_off(self):
        s = self.node.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        req = b'{"jsonrpc":"2.0","method":"rpc.discover","id":1}\n'
        try:
            for _ in range(2000):
                s.sendall(req)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
        self.assert_alive()
        metrics = vivimtest.http_get(self.node.metrics_url + "/metrics")[1].decode()
        self.assertIn('vivimd_rpc_errors_total{kind="queue_full"}', metrics)


class Vivimctl(unittest.TestCase):
    def test_exit_codes_and_output(self):
        with Node() as n:
            r = n.ctl("--json", "status")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(len(json.loads(r.stdout)["nodeId"]), 64)
            r = n.ctl("status")  # not a terminal: JSON as well
            self.assertEqual(r.returncode, 0)
            r = n.ctl("call", "node.status", "{}")
            self.assertEqual(r.returncode, 0)
            self.assertIn("nodeId", json.loads(r.stdout))
            r = n.ctl("call", "no.such.method")
            self.assertEqual(r.returncode, 1)
            self.assertIn("-32601", r.stderr)
            r = n.ctl("call", "node.status", "not json")
            self.assertEqual(r.returncode, 2)
            r = n.ctl("methods", "--markdown")
            self.assertEqual(r.returncode, 0)
            self.assertIn("### `node.status`", r.stdout)
            r = n.ctl("--json", "methods")
            names = [m["name"] for m in json.loads(r.stdout)["methods"]]
            for m in ("node.status", "node.shutdown", "node.reload", "rpc.discover"):
                self.assertIn(m, names)
            r = n.ctl("reload")
            self.assertEqual(r.returncode, 0)
            r = n.ctl("stop")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(n.proc.wait(10), 0)
        r = subprocess.run([VIVIMCTL, "--socket", "/nonexistent/x.sock", "status"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot reach vivimd", r.stderr)

    def test_docs_rpc_md_describes_every_method(self):
        with Node() as n:
            methods = [m["name"] for m in n.rpc("rpc.discover")["methods"]]
        with open(os.path.join(os.environ.get("VIVIM_SOURCE_DIR", "."), "docs/rpc.md")) as f:
            doc = f.read()
        for m in methods:
            self.assertIn(f"### `{m}`", doc, f"docs/rpc.md lacks {m}: regenerate with "
                                             "vivimctl methods --markdown")

    def test_socket_from_environment(self):
        with Node() as n:
            env = dict(os.environ, VIVIM_SOCKET=n.socket_path)
            r = subprocess.run([VIVIMCTL, "--json", "status"], capture_output=True, text=True,
                               env=env)
            self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    vivimtest.main()
