"""Test harness for integration tests: real vivimd processes on real sockets.

A Node writes a config into a fresh temporary directory (state dir, RPC socket, free TCP
ports on 127.0.0.1), starts the vivimd binary named by $VIVIMD with NOTIFY_SOCKET pointing
at a datagram socket of ours, and waits for READY=1 the way systemd would. Its stderr goes
to a log file kept for the failure message. Stdlib only.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

VIVIMD = os.environ.get("VIVIMD", "build/debug/vivimd")
VIVIMCTL = os.environ.get("VIVIMCTL", "build/debug/vivimctl")
START_TIMEOUT_S = 30  # generous: sanitizer builds on a loaded 2-core machine start slowly


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(f"{code}: {message}" + (f" ({data})" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data


def http_get(url, method="GET", timeout=10):
    """Returns (status, body) of a plain HTTP request, without following anything."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path or "/")
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


_REQUIRED = object()


def metric(node, name, default=_REQUIRED):
    """The value of an unlabelled metric from the node's /metrics; default when it is not
    there (an AssertionError when no default is given)."""
    status, body, _ = http_get(node.metrics_url + "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    if default is _REQUIRED:
        raise AssertionError(f"{name} not in /metrics")
    return default


_ports_given = set()


def free_port():
    """A port nothing listens on now, over TCP and over UDP (a node's [net] listen port
    serves both: docs/protocol.md, "Datagrams"), never one this process handed out before:
    the kernel may give the same free port to two calls in a row (a node's metrics and net
    ports then collide and it cannot start)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue  # a UDP socket holds it: the node could not receive datagrams there
        if port not in _ports_given:
            _ports_given.add(port)
            return port


class Node:
    """One vivimd process. Use as a context manager, or call start() and close()."""

    def __init__(self, extra_config=None, start=True, tmp=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="vv-it-")
        self._own_tmp = tmp is None
        self.state_dir = os.path.join(self.tmp, "state")
        self.socket_path = os.path.join(self.tmp, "vivimd.sock")
        self.metrics_port = free_port()
        self.net_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.config_path = os.path.join(self.tmp, "vivimd.conf")
        self.log_path = os.path.join(self.tmp, "vivimd.log")
        self.config = {
            "node": {"state_dir": self.state_dir},
            "log": {"level": "info"},
            "rpc": {"socket": self.socket_path},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "net": {"listen": f"127.0.0.1:{self.net_port}"},
        }
        for section, keys in (extra_config or {}).items():
            self.config.setdefault(section, {}).update(keys)
        self.write_config()
        self.proc = None
        self.pid = None
        self.notify_messages = []
        self._notify = None
        if start:
            self.start()

    def write_config(self, text=None):
        if text is None:
            text = "".join(
                f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                for s, keys in self.config.items())
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self, wait=True, args=None):
        notify_path = os.path.join(self.tmp, "notify.sock")
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        self.notify_messages = []
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env.pop("JOURNAL_STREAM", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([VIVIMD, "--config", self.config_path] + (args or []),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=env)
        self.pid = self.proc.pid
        if wait:
            self.wait_notify("READY=1", START_TIMEOUT_S)
        return self

    def wait_notify(self, needle, timeout):
        """Waits for a notify datagram containing needle; returns all seen so far."""
        deadline = time.monotonic() + timeout
        while True:
            if any(needle in m for m in self.notify_messages):
                return self.notify_messages
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} from vivimd within {timeout}s; "
                                     f"got {self.notify_messages}\n{self.log_text()}")
            if self.proc.poll() is not None and needle != "STOPPING=1":
                raise AssertionError(f"vivimd exited with {self.proc.returncode} before "
                                     f"{needle!r}\n{self.log_text()}")
            self._notify.settimeout(min(remaining, 0.2))
            try:
                self.notify_messages.append(self._notify.recv(4096).decode())
            except socket.timeout:
                pass

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ---- RPC ------------------------------------------------------------------------------
    def connect(self, timeout=10):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.socket_path)
        return s

    def send_raw(self, data, timeout=10):
        """Connects, sends data as is, returns the connected socket."""
        s = self.connect(timeout)
        s.sendall(data)
        return s

    @staticmethod
    def read_line(sock, limit=64 << 20):
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit:
                raise AssertionError("reply line too long")
        return bytes(buf)

    def call_raw(self, obj_or_bytes, timeout=10):
        """Sends one request line; returns the decoded reply (None if the socket closed)."""
        data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
        with self.send_raw(data + b"\n", timeout) as s:
            line = self.read_line(s)
            return json.loads(line) if line else None

    def rpc(self, method, params=None, timeout=10):
        req = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            req["params"] = params
        reply = self.call_raw(req, timeout)
        if reply is None:
            raise AssertionError(f"connection closed without a reply to {method}")
        if "error" in reply:
            e = reply["error"]
            raise RpcError(e.get("code"), e.get("message"), e.get("data"))
        return reply["result"]

    def ctl(self, *args, check=False, timeout=30):
        """Runs vivimctl against this node; returns the CompletedProcess."""
        return subprocess.run([VIVIMCTL, "--socket", self.socket_path] + list(args),
                              capture_output=True, text=True, timeout=timeout, check=check)

    # ---- lifecycle ------------------------------------------------------------------------
    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends sig and waits; returns the exit status (negative for a signal death)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"vivimd did not exit within {timeout}s of {sig!r}\n"
                                 f"{self.log_text()}")
        self._log.close()
        self._notify.close()
        self.proc = None
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        if self.proc is not None:
            try:
                self.stop(timeout=10)
            except AssertionError:
                pass
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for(what, fn, timeout):
    """Polls fn every 0.1 s until it returns something true (returned), or fails after
    timeout seconds naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def kill_during(node, writer, delay):
    """Starts node, runs writer(stop_event) on a thread, SIGKILLs the node after delay
    seconds, and leaves the node stopped and ready to start again."""
    node.start()
    stop = threading.Event()
    t = threading.Thread(target=writer, args=(stop,))
    t.start()
    time.sleep(delay)
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    stop.set()
    t.join(10)
    node._log.close()
    node._notify.close()
    node.proc = None


def main():
    """Runs the calling module's unittest cases; exits non-zero on failure."""
    unittest.main(module="__main__", verbosity=2)
