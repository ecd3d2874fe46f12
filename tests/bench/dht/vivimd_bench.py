"""vivimd on loopback: vivimd's side of the DHT lookup benchmark (issue 11, "Benchmarks").

The same method as opendht_bench.py (the anchor), so that the rows compare: N vivimd
processes (the release build in the build directory given as the first argument), each with
its own state_dir, RPC socket and [net] listen port on 127.0.0.1 (its DHT's UDP socket is
bound to the same port), all bootstrapped through node 0 ([net] bootstrap). Once their
routing tables hold steady (dht.routingTable), every node makes one lookup of an absent
contentId (the warm-up), then L provider records are published under L distinct contentIds
(dht.publishContent), each from a random node, 16 at a time: the analogue of OpenDHT's puts.
Then one dht.findProviders per contentId from another node, measuring from the moment the
request is written to the node's RPC socket:

  first_ms     until the first `dht.provider` notification naming the publisher is read,
  complete_ms  until the result is read (vivimd's lookup has ended),

and whether the publisher was found. The result also carries the node's own timing of the
lookup, without the RPC and JSON on either side: "firstMs" (when the first provider arrived)
and "ms" (the lookup's duration), both whole milliseconds of the node's loop clock (libuv's
uv_now, taken once per loop iteration); they are reported as node_first_ms and
node_complete_ms. Three rounds over the same contentIds, each from a different getter every
round, exactly as the anchor draws them (same seed, same draws in the same order):

  intact            one lookup at a time;
  intact_parallel   16 at a time: the control for the next round, same load, no loss;
  after_kill_30pct  16 at a time, started the moment 30% of the nodes are SIGKILLed at once
                    (chosen at random among the nodes that do no lookup; no republish
                    between).

The lookups are driven from one thread (selectors over non-blocking Unix sockets, one RPC
connection per lookup in flight, opened before its clock starts and reused), so that no
lookup waits for a lock or the GIL behind another thread.

Node configuration (besides what each node needs for itself): [log] level warn, [metrics]
listen empty (off), [dht] rate_per_source = 0 (no limit: 200 nodes on one address; the
limit counts loopback sources per address and port anyway, but the anchor turns its limits
off and so does this), [net] low_water = 2, high_water = 8 (the connection manager otherwise
dials 32 peers per node, 6,400 TCP + Noise connections on 2 cores, traffic that no DHT
lookup uses; OpenDHT has no such layer). Everything else at vivimd's defaults: k 20, alpha 3,
one path, query_timeout_ms 2000, soft timeouts from measured round trips with a floor of
50 ms (VV_DHT_MIN_SOFT_TIMEOUT_MS).

The nodes' directories (state, socket, config, log) go to /dev/shm when it is writable
(--tmpdir): every vivimd creates some 270 directories and a few SQLite files at start, and
on a busy virtual disk that took seconds per node, at start and again at removal.

Output: one JSON object per phase (to the --json file, "-" for stdout) and a human table,
as opendht_bench.py. Every vivimd is started in one process group and killed with SIGKILL
at the end, also on errors and interrupts (and by PR_SET_PDEATHSIG if this script dies).

Plain python3, standard library only.
"""

import argparse
import ctypes
import errno
import json
import math
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list; None when the list is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values_ms):
    s = sorted(values_ms)
    r = lambda v: None if v is None else round(v, 3)
    return {"median": r(percentile(s, 50)), "p90": r(percentile(s, 90)),
            "p99": r(percentile(s, 99)), "max": r(s[-1] if s else None), "count": len(s)}


_ports_given = set()


def free_port():
    """A port free now over TCP and UDP on 127.0.0.1 (a node's [net] listen port serves
    both), never one handed out before in this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        if port not in _ports_given:
            _ports_given.add(port)
            return port


_libc = None


def _child_setup(pgid):
    """Runs in the child before exec: joins the benchmark's process group (pgid 0: leads a new
    one) and asks for SIGKILL when the parent dies, so no vivimd outlives the script."""
    parent = os.getpid()

    def setup():
        os.setpgid(0, pgid)
        try:
            _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)
    return setup


class RpcConn:
    """A blocking JSON-RPC connection for control calls (status, routing table, publish)."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def call(self, method, params=None, timeout=30):
        self.sock.settimeout(timeout)
        rid = self.next_id
        self.next_id += 1
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("id") == rid:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"{method}: connection closed")
            self.buf += chunk

    def close(self):
        self.sock.close()


class Cluster:
    """N vivimd processes on 127.0.0.1, node 0 the bootstrap of the others."""

    def __init__(self, build, n, keep=False, tmpdir=None, dht_extra=None):
        global _libc
        self.vivimd = os.path.join(build, "vivimd")
        if not os.access(self.vivimd, os.X_OK):
            raise SystemExit(f"vivimd_bench: no executable {self.vivimd} (build it first)")
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = None
        self.n = n
        self.keep = keep
        self.tmp = tempfile.mkdtemp(prefix="vv-dhtbench-", dir=tmpdir)
        self.procs = [None] * n
        self.alive = [False] * n
        self.pgid = None
        self.ports = [free_port() for _ in range(n)]
        self.sockets = [os.path.join(self.tmp, f"n{i}", "rpc.sock") for i in range(n)]
        self.ids = [None] * n
        self.ctl = [None] * n
        self.dht_extra = dict(dht_extra or {})

    def config(self, i):
        d = os.path.join(self.tmp, f"n{i}")
        os.makedirs(d, exist_ok=True)
        net = {"listen": f"127.0.0.1:{self.ports[i]}", "low_water": "2", "high_water": "8"}
        if i > 0:
            net["bootstrap"] = f"127.0.0.1:{self.ports[0]}"
        conf = {
            "node": {"state_dir": os.path.join(d, "state")},
            "log": {"level": "warn"},
            "rpc": {"socket": self.sockets[i]},
            "metrics": {"listen": ""},
            "net": net,
            "dht": dict({"rate_per_source": "0"}, **self.dht_extra),
        }
        path = os.path.join(d, "vivimd.conf")
        with open(path, "w") as f:
            for section, keys in conf.items():
                f.write(f"[{section}]\n")
                for k, v in keys.items():
                    f.write(f"{k} = {v}\n")
                f.write("\n")
        return d, path

    def _spawn(self, i):
        d, conf = self.config(i)
        notify_path = os.path.join(d, "notify.sock")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(notify_path)
        ns.setblocking(False)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env.pop("JOURNAL_STREAM", None)
        with open(os.path.join(d, "vivimd.log"), "ab") as log:
            p = subprocess.Popen([self.vivimd, "--config", conf], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, env=env,
                                 preexec_fn=_child_setup(self.pgid or 0))
        if self.pgid is None:
            self.pgid = p.pid
        self.procs[i] = p
        self.alive[i] = True
        return ns

    def log_tail(self, i, lines=20):
        try:
            with open(os.path.join(self.tmp, f"n{i}", "vivimd.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, notifiers, timeout):
        """Waits for READY=1 from every node in notifiers ({index: socket})."""
        sel = selectors.DefaultSelector()
        for i, ns in notifiers.items():
            sel.register(ns, selectors.EVENT_READ, i)
        pending = set(notifiers)
        deadline = time.monotonic() + timeout
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    i = min(pending)
                    raise RuntimeError(f"{len(pending)} vivimd not ready after {timeout} s, "
                                       f"e.g. node {i}:\n{self.log_tail(i)}")
                for key, _ in sel.select(min(left, 0.5)):
                    i = key.data
                    try:
                        msg = key.fileobj.recv(4096).decode(errors="replace")
                    except BlockingIOError:
                        continue
                    if "READY=1" in msg:
                        pending.discard(i)
                        sel.unregister(key.fileobj)
                for i in list(pending):
                    if self.procs[i].poll() is not None:
                        raise RuntimeError(f"vivimd {i} exited with {self.procs[i].returncode} "
                                           f"before READY:\n{self.log_tail(i)}")
        finally:
            sel.close()
            for ns in notifiers.values():
                ns.close()

    def start(self, timeout=120):
        """Node 0 first (the others bootstrap through it), then all the others at once."""
        t0 = time.monotonic()
        self._wait_ready({0: self._spawn(0)}, timeout)
        notifiers = {i: self._spawn(i) for i in range(1, self.n)}
        self._wait_ready(notifiers, timeout)
        for i in range(self.n):
            self.ctl[i] = RpcConn(self.sockets[i])
            self.ids[i] = self.ctl[i].call("node.status")["nodeId"]
        return time.monotonic() - t0

    def table(self, i):
        """(good, all) contacts of node i's routing table: good = no failure counted."""
        rt = self.ctl[i].call("dht.routingTable")
        good = sum(1 for b in rt.get("buckets", []) for c in b.get("contacts", [])
                   if c.get("failures", 0) == 0)
        return good, rt["size"]

    def settle(self, min_s, quiet_s, max_s):
        """As opendht_bench.py's: every node has a good contact and the total number of
        routing-table entries moved by at most 1% over the last quiet_s seconds, or max_s."""
        t0 = time.monotonic()
        history = []
        while True:
            counts = [self.table(i) for i in range(self.n)]
            total = sum(c[1] for c in counts)
            now = time.monotonic()
            history.append((now, total))
            while len(history) > 1 and history[1][0] <= now - quiet_s:
                history.pop(0)
            good = sorted(c[0] for c in counts)
            steady = (now - t0 >= max(min_s, quiet_s) and history[0][0] <= now - quiet_s
                      and max(abs(total - t) for _, t in history) <= max(1, total // 100))
            if (good[0] >= 1 and steady) or now - t0 >= max_s:
                capped = not (good[0] >= 1 and steady)
                sizes = sorted(c[1] for c in counts)
                return (now - t0, capped, (good[0], good[len(good) // 2], good[-1]),
                        (sizes[0], sizes[len(sizes) // 2], sizes[-1]))
            time.sleep(0.25)

    def kill(self, indices):
        for i in indices:
            try:
                os.kill(self.procs[i].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.alive[i] = False
        for i in indices:
            if self.ctl[i] is not None:
                self.ctl[i].close()
                self.ctl[i] = None

    def shutdown(self):
        """SIGKILL to the process group and to each process, reap them, remove the files."""
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            if p is None:
                continue
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for c in self.ctl:
            if c is not None:
                c.close()
        if self.keep:
            print(f"vivimd_bench: node directories kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Driver:
    """Runs RPC calls with at most `concurrency` in flight, from this thread: each call on a
    connection of its node's pool (a free one, or a new one opened before its clock
    starts), non-blocking, read through one selector; times are taken when a line is read."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.pool = {}  # node -> [free sockets]

    def _conn(self, node):
        free = self.pool.setdefault(node, [])
        if free:
            return free.pop()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.cluster.sockets[node])
        s.setblocking(False)
        return s

    def _release(self, node, s, ok):
        if ok and self.cluster.alive[node]:
            self.pool[node].append(s)
        else:
            s.close()

    def close(self):
        for free in self.pool.values():
            for s in free:
                s.close()
        self.pool = {}

    def run(self, calls, concurrency, timeout_s, on_note=None):
        """calls: list of (node, method, params). Returns (wall seconds, one dict per call:
        t_start, notes [(t, params)], t_done, result, error) in the order given. A call still
        unanswered timeout_s after the round began stays with t_done None."""
        sel = selectors.DefaultSelector()
        out = [{"t_start": None, "notes": [], "t_done": None, "result": None, "error": None}
               for _ in calls]
        nxt = 0
        inflight = 0
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        try:
            while nxt < len(calls) or inflight:
                while nxt < len(calls) and inflight < concurrency:
                    node, method, params = calls[nxt]
                    s = self._conn(node)
                    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                       "params": params}).encode() + b"\n"
                    st = {"i": nxt, "node": node, "buf": b""}
                    rec = out[nxt]
                    rec["t_start"] = time.perf_counter()
                    s.send(line)  # a few hundred bytes into an empty socket buffer
                    sel.register(s, selectors.EVENT_READ, st)
                    inflight += 1
                    nxt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(min(left, 1.0)):
                    s, st = key.fileobj, key.data
                    try:
                        chunk = s.recv(1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        chunk = b""
                    t = time.perf_counter()
                    rec = out[st["i"]]
                    if not chunk:
                        rec["error"] = "connection closed"
                        rec["t_done"] = t
                        sel.unregister(s)
                        self._release(st["node"], s, False)
                        inflight -= 1
                        continue
                    st["buf"] += chunk
                    finished = False
                    while b"\n" in st["buf"]:
                        line, st["buf"] = st["buf"].split(b"\n", 1)
                        msg = json.loads(line)
                        if "method" in msg:
                            rec["notes"].append((t, msg.get("params")))
                        else:
                            rec["t_done"] = t
                            rec["result"] = msg.get("result")
                            rec["error"] = msg.get("error")
                            finished = True
                    if finished:
                        sel.unregister(s)
                        self._release(st["node"], s, st["buf"] == b"")
                        inflight -= 1
        finally:
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj)
                key.fileobj.close()
            sel.close()
        return time.monotonic() - t0, out


def lookups(driver, cluster, cids, providers, getters, concurrency, timeout_s):
    """One dht.findProviders per contentId from getters[i]. Returns (wall, one dict per
    lookup): first_ms (the first dht.provider naming providers[i], None if never),
    complete_ms (the result; None if none within the round's timeout), found, the node's own
    firstMs / ms, hops, queries, error."""
    calls = [(getters[i], "dht.findProviders", {"contentId": cid}) for i, cid in enumerate(cids)]
    wall, raw = driver.run(calls, concurrency, timeout_s)
    results = []
    for i, r in enumerate(raw):
        want = cluster.ids[providers[i]] if providers is not None else None
        res = {"first_ms": None, "complete_ms": None, "found": False, "node_first_ms": None,
               "node_complete_ms": None, "hops": None, "queries": None, "error": None,
               "notes": len(r["notes"]), "providers": None}
        if r["t_start"] is None:
            results.append(res)
            continue
        for t, p in r["notes"]:
            if want is not None and p and p.get("nodeId") == want and p.get("contentId") == cids[i]:
                res["first_ms"] = (t - r["t_start"]) * 1000.0
                res["found"] = True
                break
        if r["t_done"] is not None:
            res["complete_ms"] = (r["t_done"] - r["t_start"]) * 1000.0
        if r["error"] is not None:
            res["error"] = r["error"]
        elif r["result"] is not None:
            out = r["result"]
            res["node_complete_ms"] = out.get("ms")
            res["hops"] = out.get("hops")
            res["queries"] = out.get("queries")
            provs = [p.get("nodeId") for p in out.get("providers", [])]
            res["providers"] = len(provs)
            if want is not None and want in provs:
                # The result names it too (a notification can only have come before).
                if not res["found"]:
                    res["found_in_result_only"] = True
                res["found"] = True
                if out.get("firstMs"):
                    res["node_first_ms"] = out["firstMs"]
        results.append(res)
    return wall, results


def publish_all(driver, cids, putters, concurrency, timeout_s):
    """dht.publishContent of cids[i] from putters[i], `concurrency` at once. Returns
    (seconds, acknowledged, storedAt summary, errors)."""
    calls = [(putters[i], "dht.publishContent",
              {"contentId": cid, "contentType": "application/octet-stream", "size": 4096})
             for i, cid in enumerate(cids)]
    wall, raw = driver.run(calls, concurrency, timeout_s)
    stored = [r["result"]["storedAt"] for r in raw if r["result"] is not None]
    errors = [r["error"] for r in raw if r["error"] is not None]
    ok = sum(1 for s in stored if s >= 1)
    s = sorted(stored)
    return wall, ok, {"min": s[0] if s else None, "median": percentile(s, 50),
                      "max": s[-1] if s else None}, errors[:5], [
        r["result"]["storedAt"] if r["result"] else None for r in raw]


def explain_misses(cluster, cids, putters, getters, stored_at, results, limit):
    """For up to `limit` lookups that missed their provider: the lookup's own answer (hops,
    queries, providers, error), how many nodes stored the record at publish, whether the
    publisher is alive, and whether a second dht.getProviders from the same getter finds it
    (a record stored away from its key would stay missing)."""
    out = []
    for i, res in enumerate(results):
        if res["found"] or len(out) >= limit:
            continue
        g = getters[i]
        again = None
        if cluster.alive[g]:
            try:
                r = cluster.ctl[g].call("dht.getProviders", {"contentId": cids[i]}, timeout=30)
                again = cluster.ids[putters[i]] in [p["nodeId"] for p in r["providers"]]
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                again = f"error: {e}"
        out.append({"lookup": i, "error": res["error"], "hops": res["hops"],
                    "queries": res["queries"], "providers": res["providers"],
                    "complete_ms": None if res["complete_ms"] is None
                    else round(res["complete_ms"], 3),
                    "stored_at_publish": stored_at[i], "publisher_alive": cluster.alive[putters[i]],
                    "found_when_asked_again": again})
    return out


def default_tmpdir():
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def vivimd_version(build):
    try:
        r = subprocess.run([os.path.join(build, "vivimd"), "--version"], capture_output=True,
                           text=True, timeout=10)
        v = (r.stdout or r.stderr).strip().splitlines()
        return v[0] if v else "unknown"
    except Exception:
        return "unknown"


def git_commit(path):
    try:
        r = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except Exception:
        return None


def phase_record(name, concurrency, args, version, wall_s, results, extra):
    firsts = [r["first_ms"] for r in results if r["first_ms"] is not None]
    completes = [r["complete_ms"] for r in results if r["complete_ms"] is not None]
    nfirsts = [r["node_first_ms"] for r in results if r["node_first_ms"] is not None]
    ncompletes = [r["node_complete_ms"] for r in results if r["node_complete_ms"] is not None]
    found = sum(1 for r in results if r["found"])
    tenth = max(1, len(results) // 10)
    rec = {
        "implementation": "vivimd",
        "version": version,
        "phase": name,
        "nodes": args.nodes,
        "lookups": len(results),
        "concurrency": concurrency,
        "seed": args.seed,
        "first_ms": summary(firsts),
        "complete_ms": summary(completes),
        "node_first_ms": summary(nfirsts),
        "node_complete_ms": summary(ncompletes),
        "hops": summary([r["hops"] for r in results if r["hops"] is not None]),
        "queries": summary([r["queries"] for r in results if r["queries"] is not None]),
        "success": round(found / len(results), 4) if results else None,
        "found": found,
        "found_in_result_only": sum(1 for r in results if r.get("found_in_result_only")),
        "errors": sum(1 for r in results if r["error"] is not None),
        "not_completed": len(results) - len(completes),
        "complete_ms_median_first_tenth": summary(
            [r["complete_ms"] for r in results[:tenth] if r["complete_ms"] is not None])["median"],
        "complete_ms_median_last_tenth": summary(
            [r["complete_ms"] for r in results[-tenth:] if r["complete_ms"] is not None])["median"],
        "wall_s": round(wall_s, 3),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "rate_limit": "off ([dht] rate_per_source = 0)",
    }
    rec.update(extra)
    return rec


def fmt(v):
    return "-" if v is None else f"{v:.3f}"


def print_table(records, out):
    print(f"{'implementation':<16} {'phase':<20} {'nodes':>5} {'lookups':>7} "
          f"{'first p50':>10} {'first p90':>10} {'first p99':>10} "
          f"{'done p50':>10} {'done p90':>10} {'done p99':>10} {'success':>8} {'wall s':>7}",
          file=out)
    for r in records:
        f, c = r["first_ms"], r["complete_ms"]
        print(f"{'vivimd':<16} {r['phase']:<20} "
              f"{r['nodes']:>5} {r['lookups']:>7} "
              f"{fmt(f['median']):>10} {fmt(f['p90']):>10} {fmt(f['p99']):>10} "
              f"{fmt(c['median']):>10} {fmt(c['p90']):>10} {fmt(c['p99']):>10} "
              f"{r['success']:>8.4f} {r['wall_s']:>7.1f}", file=out)
    print("(ms, at the RPC client; first = first dht.provider notification naming the "
          "publisher, done = the result)", file=out)
    print(f"{'node-side':<16} {'phase':<20} {'':>5} {'':>7} "
          f"{'firstMs p50':>10} {'p90':>10} {'p99':>10} {'ms p50':>10} {'p90':>10} {'p99':>10} "
          f"{'hops p50':>8} {'queries':>7}", file=out)
    for r in records:
        f, c = r["node_first_ms"], r["node_complete_ms"]
        print(f"{'vivimd':<16} {r['phase']:<20} {'':>5} {'':>7} "
              f"{fmt(f['median']):>10} {fmt(f['p90']):>10} {fmt(f['p99']):>10} "
              f"{fmt(c['median']):>10} {fmt(c['p90']):>10} {fmt(c['p99']):>10} "
              f"{fmt(r['hops']['median']):>8} {fmt(r['queries']['median']):>7}", file=out)
    print("(ms, the result's own firstMs and ms: the node's loop clock, whole ms, no RPC)",
          file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", nargs="?", default="build/release",
                    help="build directory holding vivimd (default build/release)")
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--kill-fraction", type=float, default=0.30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency-intact", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--getters", type=float, default=0.25)
    ap.add_argument("--after-kill-wait", type=float, default=0.0)
    ap.add_argument("--settle-quiet", type=float, default=3.0)
    ap.add_argument("--settle-min", type=float, default=0.0)
    ap.add_argument("--settle-max", type=float, default=60.0)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--phase-timeout", type=float, default=600.0)
    ap.add_argument("--explain-misses", type=int, default=20, metavar="K")
    ap.add_argument("--start-timeout", type=float, default=180.0,
                    help="seconds the nodes may take to report READY (default 180)")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' directories")
    ap.add_argument("--tmpdir", default=default_tmpdir(),
                    help="where the nodes' directories go (default /dev/shm when writable: "
                         "each vivimd makes some 270 directories and SQLite files at start, "
                         "slow on a busy virtual disk)")
    ap.add_argument("--dht", action="append", default=[], metavar="KEY=VALUE",
                    help="a further [dht] key for every node (a diagnostic: the figures of "
                         "docs/benchmarks.md use none)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    dht_extra = dict(kv.split("=", 1) for kv in args.dht)

    n = args.nodes
    n_kill = round(args.kill_fraction * n)
    n_getters = max(3, round(args.getters * n))
    if n < 4 or n_getters < 3 or n_kill + n_getters > n:
        sys.exit(f"vivimd_bench: {n} nodes cannot hold {n_getters} getters and "
                 f"{n_kill} victims apart")
    rng = random.Random(args.seed)

    # The same draws, in the same order, as opendht_bench.py: same getters, victims, putters.
    order = list(range(n))
    rng.shuffle(order)
    getters_pool = order[:n_getters]
    victims = sorted(order[n_getters:n_getters + n_kill])
    cids = [f"vivim-dht-bench-{args.seed}-{i}" for i in range(args.lookups)]
    rounds = ([], [], [])
    for _ in range(args.lookups):
        j = rng.randrange(n_getters)
        d2, d3 = rng.sample(range(1, n_getters), 2)
        for r, d in zip(rounds, (0, d2, d3)):
            r.append(getters_pool[(j + d) % n_getters])
    getters_seq, getters_par, getters_kill = rounds
    putters = []
    for i in range(args.lookups):
        p = rng.randrange(n)
        while p in (getters_seq[i], getters_par[i], getters_kill[i]):
            p = rng.randrange(n)
        putters.append(p)

    human = sys.stderr if args.json == "-" else sys.stdout
    version = vivimd_version(args.build)
    commit = git_commit(os.path.dirname(os.path.abspath(__file__)))
    t_run = time.monotonic()
    load_before = os.getloadavg()[0]
    cluster = Cluster(args.build, n, keep=args.keep, tmpdir=args.tmpdir, dht_extra=dht_extra)
    driver = Driver(cluster)

    # SIGTERM / SIGHUP end the run through the finally below, like Ctrl-C.
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    records = []
    try:
        start_s = cluster.start(args.start_timeout)
        load_start = os.getloadavg()[0]
        print(f"vivimd ({version}): {n} processes on 127.0.0.1 ready in {start_s:.1f} s",
              file=human)
        settle_s, capped, good, sizes = cluster.settle(args.settle_min, args.settle_quiet,
                                                       args.settle_max)
        print(f"routing tables {'still moving after' if capped else 'settled in'} "
              f"{settle_s:.1f} s (contacts without failures per node min/median/max "
              f"{good[0]}/{good[1]}/{good[2]}, table size {sizes[0]}/{sizes[1]}/{sizes[2]})",
              file=human)
        if args.warmup:
            wcids = [f"vivim-dht-bench-warmup-{args.seed}-{i}" for i in range(n)]
            warm_s, _ = lookups(driver, cluster, wcids, None, list(range(n)), args.concurrency,
                                args.phase_timeout)
            print(f"warm-up: one lookup of an absent contentId from every node, {warm_s:.1f} s",
                  file=human)
        put_s, put_ok, stored, put_errors, stored_at = publish_all(
            driver, cids, putters, args.concurrency, args.phase_timeout)
        print(f"published {args.lookups} provider records in {put_s:.1f} s, {put_ok} stored "
              f"(storedAt min/median/max {stored['min']}/{stored['median']}/{stored['max']})"
              + (f"; errors e.g. {put_errors}" if put_errors else ""), file=human)

        common = {"settle_s": round(settle_s, 1), "settle_capped": capped,
                  "warmup": args.warmup, "start_s": round(start_s, 1),
                  "good_contacts_min_median_max": list(good),
                  "table_size_min_median_max": list(sizes),
                  "loadavg_1min_at_start": round(load_start, 2),
                  "loadavg_1min_before_nodes": round(load_before, 2),
                  "dht_extra": dht_extra, "puts_acknowledged": put_ok,
                  "stored_at_min_median_max": [stored["min"], stored["median"], stored["max"]],
                  "getters": n_getters, "killed": 0, "commit": commit,
                  "config": "[net] low_water 2, high_water 8; [dht] rate_per_source 0, "
                            "other [dht] keys at their defaults unless dht_extra; [log] warn; "
                            "metrics off"}

        def round_(name, getters, conc, extra):
            wall, results = lookups(driver, cluster, cids, putters, getters, conc,
                                    args.phase_timeout)
            rec = phase_record(name, conc, args, version, wall, results,
                               dict(common, **extra))
            rec["misses"] = explain_misses(cluster, cids, putters, getters, stored_at, results,
                                           args.explain_misses)
            records.append(rec)
            print(f"round {name}: {wall:.1f} s, {rec['found']} found", file=human)

        round_("intact", getters_seq, args.concurrency_intact, {})
        if args.concurrency != args.concurrency_intact:
            round_("intact_parallel", getters_par, args.concurrency, {})
        # The same moment: SIGKILL to every victim, then the round starts.
        driver.close()  # no pooled connection to a victim is used afterwards
        cluster.kill(victims)
        if args.after_kill_wait > 0:
            time.sleep(args.after_kill_wait)
        pct = round(args.kill_fraction * 100)
        round_(f"after_kill_{pct}pct", getters_kill, args.concurrency,
               {"killed": n_kill, "after_kill_wait_s": args.after_kill_wait})
    finally:
        driver.close()
        cluster.shutdown()

    if args.json:
        out = sys.stdout if args.json == "-" else open(args.json, "w")
        for r in records:
            print(json.dumps(r, sort_keys=True), file=out)
        if out is not sys.stdout:
            out.close()
    print_table(records, human)
    print(f"total wall time {time.monotonic() - t_run:.1f} s", file=human)


if __name__ == "__main__":
    main()
