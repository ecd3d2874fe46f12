"""Local fan-out, vivimd beside Redis (issue 12, "Benchmarks"): one publisher client sends
N messages of 256 bytes on one topic, ten subscriber clients on the same machine receive
them; deliveries per second = 10 x N / the time until the last subscriber has them all.

- vivimd (release build, one node, no peers): pubsub.publish over JSON-RPC (signs, caches,
  delivers), ten pubsub.subscribe connections receiving pubsub.message notifications (JSON,
  data in base64). The publisher keeps RPC_WINDOW calls in flight ([rpc] max_in_flight).
- Redis (redis-server, if installed): PUBLISH pipelined with the same window, ten SUBSCRIBE
  connections. Persistence off.

Both are stdlib clients in this process (one thread per subscriber, counting lines or bytes),
so the figures include the clients' share of the two cores. Usage:
    VIVIMD=build/release/vivimd python3 tests/bench/bench_pubsub_fanout.py [N]
Prints a Markdown table.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import vivimtest  # noqa: E402

SUBS = int(os.environ.get("FANOUT_SUBS", "10"))
DATA_BYTES = 256
RPC_WINDOW = 64
TOPIC = "bench:fanout"


class Counter(threading.Thread):
    """Reads a socket until it has seen `want` units (count(chunk) each) or it closes."""

    def __init__(self, sock, want, count):
        super().__init__(daemon=True)
        self.sock, self.want, self.count = sock, want, count
        self.got = 0
        self.done_at = None

    def run(self):
        self.sock.settimeout(120)
        while self.got < self.want:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                break
            self.got += self.count(chunk)
        self.done_at = time.monotonic()


def bench_vivimd(n):
    node = vivimtest.Node(extra_config={"rpc": {"max_queue_bytes": str(256 << 20)}})
    try:
        subs = []
        for _ in range(SUBS):
            s = node.connect(timeout=30)
            s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pubsub.subscribe",
                                  "params": {"topic": TOPIC}}).encode() + b"\n")
            assert b"subscriptionId" in vivimtest.Node.read_line(s)
            subs.append(s)
        counters = [Counter(s, n, lambda c: c.count(b"\n")) for s in subs]
        data = base64.b64encode(b"x" * DATA_BYTES).decode()
        pub = node.connect(timeout=60)
        f = pub.makefile("rb")
        for c in counters:
            c.start()
        cpu0 = cpu_of(node.pid)
        t0 = time.monotonic()
        sent = answered = 0
        while answered < n:
            batch = []
            while sent < n and sent - answered < RPC_WINDOW:
                batch.append(json.dumps({"jsonrpc": "2.0", "id": sent, "method": "pubsub.publish",
                                         "params": {"topic": TOPIC, "data": data}}).encode()
                             + b"\n")
                sent += 1
            if batch:
                pub.sendall(b"".join(batch))
            line = f.readline()
            assert b'"messageId"' in line, line[:200]
            answered += 1
        t_pub = time.monotonic() - t0
        for c in counters:
            c.join(120)
        t_all = max(c.done_at for c in counters) - t0
        cpu = cpu_of(node.pid) - cpu0
        got = sum(c.got for c in counters)
        pub.close()
        for s in subs:
            s.close()
        return {"published/s": n / t_pub, "deliveries/s": got / t_all, "delivered": got,
                "server CPU s per 1,000 deliveries": cpu / got * 1000}
    finally:
        node.close()


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_redis(n):
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = vivimtest.free_port()
    tmp = tempfile.mkdtemp(prefix="vv-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmp,
                             "--client-output-buffer-limit", "pubsub 0 0 0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vivimtest.wait_for("redis up", lambda: _connects(port), 10)
        payload = b"x" * DATA_BYTES
        # What one delivery looks like on a subscriber's socket.
        one = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(TOPIC), TOPIC.encode(), DATA_BYTES, payload)
        subs = []
        for _ in range(SUBS):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"SUBSCRIBE %s\r\n" % TOPIC.encode())
            ack = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(TOPIC), TOPIC.encode())
            buf = b""
            while len(buf) < len(ack):
                buf += s.recv(4096)
            assert buf == ack, buf
            subs.append(s)
        counters = [Counter(s, n * len(one), len) for s in subs]
        for c in counters:
            c.start()
        pub = socket.create_connection(("127.0.0.1", port), timeout=60)
        cmd = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(TOPIC), TOPIC.encode(), DATA_BYTES, payload)
        f = pub.makefile("rb")
        cpu0 = cpu_of(proc.pid)
        t0 = time.monotonic()
        sent = answered = 0
        while answered < n:
            k = min(n - sent, RPC_WINDOW - (sent - answered))
            if k > 0:
                pub.sendall(cmd * k)
                sent += k
            assert f.readline().startswith(b":")
            answered += 1
        t_pub = time.monotonic() - t0
        for c in counters:
            c.join(120)
        t_all = max(c.done_at for c in counters) - t0
        cpu = cpu_of(proc.pid) - cpu0
        got = sum(c.got for c in counters) // len(one)
        pub.close()
        for s in subs:
            s.close()
        return {"published/s": n / t_pub, "deliveries/s": got / t_all, "delivered": got,
                "server CPU s per 1,000 deliveries": cpu / got * 1000}
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rows = [("vivimd", bench_vivimd(n)), ("Redis PUBLISH", bench_redis(n))]
    print(f"{n} messages of {DATA_BYTES} bytes, {SUBS} subscribers, window {RPC_WINDOW}\n")
    print("| server | published/s | deliveries/s | delivered | server CPU s per 1,000 "
          "deliveries |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        if r is None:
            print(f"| {name} | (redis-server not installed) | | | |")
            continue
        print(f"| {name} | {r['published/s']:.0f} | {r['deliveries/s']:.0f} | "
              f"{r['delivered']} | {r['server CPU s per 1,000 deliveries']:.4f} |")


if __name__ == "__main__":
    main()
