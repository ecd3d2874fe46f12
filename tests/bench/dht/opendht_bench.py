"""OpenDHT on loopback: the anchor for vivimd's DHT lookup benchmark (issue 11, "Benchmarks").

N OpenDHT nodes (one DhtRunner each, each on its own UDP port on 127.0.0.1, all in this one
Python process; every runner has its own network and DHT threads, so the process is only a
container) join one network through node 0. Once their routing tables hold steady, every
node makes one get of an absent key (the warm-up, see main()), then L values are put under L
distinct keys, each from a random node: the analogue of provider records. Then one get per
key from another node, measuring from the call:

  first_ms     until the get's value callback first delivers the value that was put there,
  complete_ms  until the get's done callback fires (OpenDHT's search has ended),

and whether the value was found. Three rounds over the same keys, each key from a different
getter every round (OpenDHT keeps a search per key and node; a second get from the same node
would start from it):

  intact            one lookup at a time: the latency of a lookup on an idle network;
  intact_parallel   16 at a time: the control for the next round, same load, no loss;
  after_kill_30pct  16 at a time, started the moment 30% of the nodes stop at once (chosen
                    at random among the nodes that do no lookup; no republish between).

The last round runs 16 at a time because one at a time it would take about 1,000 x 1.2 s;
16 lookups in flight in one Python process on 2 cores cost latency of their own, which the
control round shows.

The rate limits are off: DhtConfig.setRateLimit(-1, -1) sets OpenDHT's max_req_per_sec (global)
and max_peer_req_per_sec (per IP) to -1, "no limit" in OpenDHT 2.4's dht::Config. Without
that, 200 nodes on the one address 127.0.0.1 would count as one peer to each other.

A node is stopped with DhtRunner.join(): its threads end and its socket closes, without a
message to anyone (OpenDHT has no "leaving" message, and maintain_storage is off so it does
not hand its stored values on first). To the others it looks like a crashed process: UDP
datagrams to its port go unanswered.

Output: one JSON object per phase (to the --json file, "-" for stdout) and a human table
(stdout, or stderr when the JSON goes to stdout). Seeded: --seed picks the same keys,
putters, getters and victims; OpenDHT's own node IDs and timings are not seeded.

Needs Debian's python3-opendht (2.4); run it with the interpreter that package installs
into (/usr/bin/python3 on Debian 12).
"""

import argparse
import json
import math
import os
import random
import socket
import sys
import threading
import time

try:
    import opendht as dht
except ImportError:
    sys.exit("opendht_bench: the opendht module is missing; apt-get install python3-opendht "
             "and run with /usr/bin/python3")


def opendht_version():
    """The installed binding's version (its egg-info), e.g. "2.4.12"."""
    try:
        from importlib import metadata
        return metadata.version("opendht")
    except Exception:
        return "unknown"


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


def routing_entries(runner):
    """(good, all) contacts in a runner's IPv4 routing table, read from its text log: the
    Python binding of 2.4 exposes no node counts, only this log."""
    log = runner.getRoutingTablesLog(socket.AF_INET)
    return log.count("[good]"), log.count("\n    Node ")


class Cluster:
    def __init__(self, n):
        self.runners = []
        self.alive = []
        for _ in range(n):
            config = dht.DhtConfig()
            # -1 = no limit, for both the global and the per-IP request rate (see above).
            config.setRateLimit(-1, -1)
            # A stopped node must not hand its values on: the benchmark measures loss.
            config.setMaintainStorage(False)
            runner = dht.DhtRunner()
            runner.run(port=0, ipv4="127.0.0.1", config=config)
            self.runners.append(runner)
            self.alive.append(True)
        self.ports = [r.getBound().getPort() for r in self.runners]
        for r in self.runners[1:]:
            r.bootstrap("127.0.0.1", str(self.ports[0]))

    def settle(self, min_s, quiet_s, max_s):
        """Waits until every node has a good contact and the total number of routing-table
        entries has moved by at most 1% over the last quiet_s seconds, or max_s passed (at
        200 nodes the total keeps creeping up by a few entries as maintenance pings go on,
        so "no change at all" may never come). Returns the seconds waited, whether the cap
        was hit, and the (min, median, max) good contacts per node at the end."""
        t0 = time.monotonic()
        history = []  # (time, total entries), oldest first
        while True:
            counts = [routing_entries(r) for r in self.runners]
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
                return now - t0, capped, (good[0], good[len(good) // 2], good[-1])
            time.sleep(0.25)

    def stop(self, indices):
        for i in indices:
            self.runners[i].join()
            self.alive[i] = False

    def stop_all(self):
        self.stop([i for i, a in enumerate(self.alive) if a])


def put_all(cluster, keys, values, putters, concurrency, timeout_s):
    """Puts values[i] under keys[i] from putters[i], at most `concurrency` at once. Returns
    (seconds, number acknowledged by OpenDHT as stored)."""
    slots = threading.Semaphore(concurrency)
    lock = threading.Lock()
    finished = threading.Event()
    state = {"left": len(keys), "ok": 0}

    def make_done():
        def done(ok, nodes):
            with lock:
                state["ok"] += 1 if ok else 0
                state["left"] -= 1
                if state["left"] == 0:
                    finished.set()
            slots.release()
        return done

    t0 = time.monotonic()
    for i, key in enumerate(keys):
        slots.acquire()
        cluster.runners[putters[i]].put(key, dht.Value(values[i]), done_cb=make_done())
    finished.wait(timeout_s)
    return time.monotonic() - t0, state["ok"]


def get_all(cluster, keys, values, getters, concurrency, timeout_s):
    """Runs one get per key from getters[i], at most `concurrency` in flight. Returns one
    dict per lookup: first_ms (None when the value never came), complete_ms (None when the
    done callback did not fire within timeout_s of the phase), found."""
    slots = threading.Semaphore(concurrency)
    lock = threading.Lock()
    finished = threading.Event()
    results = [{"first_ms": None, "complete_ms": None, "found": False, "done_ok": None,
                "values_seen": 0} for _ in keys]
    state = {"left": len(keys)}

    def make_callbacks(i, t_start):
        res = results[i]
        want = values[i]

        def on_value(value):
            t = time.perf_counter()
            res["values_seen"] += 1
            if res["first_ms"] is None and value.data == want:
                res["first_ms"] = (t - t_start) * 1000.0
                res["found"] = True
            return True  # keep the search going: completion is measured too

        def on_done(ok, nodes):
            t = time.perf_counter()
            with lock:
                if res["complete_ms"] is None:
                    res["complete_ms"] = (t - t_start) * 1000.0
                    res["done_ok"] = bool(ok)
                    state["left"] -= 1
                    if state["left"] == 0:
                        finished.set()
            slots.release()

        return on_value, on_done

    t0 = time.monotonic()
    for i, key in enumerate(keys):
        if not slots.acquire(timeout=timeout_s):
            break  # a done callback never came; the lookups not started stay unfinished
        t_start = time.perf_counter()
        on_value, on_done = make_callbacks(i, t_start)
        cluster.runners[getters[i]].get(key, get_cb=on_value, done_cb=on_done)
    finished.wait(timeout_s)
    return time.monotonic() - t0, results


def explain_misses(cluster, keys, putters, results, limit):
    """For up to `limit` lookups that did not find their value: which live nodes store the
    key (from their storage logs), and how close those are to the key against the closest
    live node, in common leading bits, and which of its putter's puts it was (1 = the
    putter's first search). Tells a value stored away from its key (the put's search ended
    early) from a get that missed nodes that do hold it."""
    ids = [dht.InfoHash(r.getNodeId()) if cluster.alive[i] else None
           for i, r in enumerate(cluster.runners)]
    logs = [r.getStorageLog() if cluster.alive[i] else "" for i, r in enumerate(cluster.runners)]
    out = []
    for i, res in enumerate(results):
        if res["found"] or len(out) >= limit:
            continue
        key = keys[i]
        mark = "Storage " + key.toString().decode()
        holders = [j for j, log in enumerate(logs) if mark in log]
        bits = lambda j: dht.InfoHash.commonBits(key, ids[j])
        closest = max(bits(j) for j, node_id in enumerate(ids) if node_id is not None)
        out.append({"lookup": i, "holders": len(holders),
                    "holder_best_common_bits": max((bits(j) for j in holders), default=None),
                    "closest_live_common_bits": closest, "done_ok": res["done_ok"],
                    "putters_nth_put": putters[:i + 1].count(putters[i])})
    return out


def phase_record(name, concurrency, args, wall_s, results, extra):
    firsts = [r["first_ms"] for r in results if r["first_ms"] is not None]
    completes = [r["complete_ms"] for r in results if r["complete_ms"] is not None]
    found = sum(1 for r in results if r["found"])
    rec = {
        "implementation": "opendht",
        "version": opendht_version(),
        "phase": name,
        "nodes": args.nodes,
        "lookups": len(results),
        "concurrency": concurrency,
        "seed": args.seed,
        "first_ms": summary(firsts),
        "complete_ms": summary(completes),
        "success": round(found / len(results), 4) if results else None,
        "found": found,
        "not_completed": len(results) - len(completes),
        # Lookups in start order: the first and the last tenth, to show how a round changes
        # while it runs (after a kill, routing tables learn who is dead as lookups go).
        "complete_ms_median_first_tenth": summary(
            [r["complete_ms"] for r in results[:max(1, len(results) // 10)]
             if r["complete_ms"] is not None])["median"],
        "complete_ms_median_last_tenth": summary(
            [r["complete_ms"] for r in results[-max(1, len(results) // 10):]
             if r["complete_ms"] is not None])["median"],
        "wall_s": round(wall_s, 3),
        "rate_limit": "off (max_req_per_sec = max_peer_req_per_sec = -1)",
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
        print(f"{r['implementation'] + ' ' + r['version']:<16} {r['phase']:<20} "
              f"{r['nodes']:>5} {r['lookups']:>7} "
              f"{fmt(f['median']):>10} {fmt(f['p90']):>10} {fmt(f['p99']):>10} "
              f"{fmt(c['median']):>10} {fmt(c['p90']):>10} {fmt(c['p99']):>10} "
              f"{r['success']:>8.4f} {r['wall_s']:>7.1f}", file=out)
    print("(ms; first = value callback first delivers the value, done = done callback)", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--kill-fraction", type=float, default=0.30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency-intact", type=int, default=1,
                    help="lookups in flight at once in the intact round (default 1)")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="puts, and lookups after the kill, in flight at once (default 16)")
    ap.add_argument("--getters", type=float, default=0.25,
                    help="fraction of the nodes that do the lookups (default 0.25)")
    ap.add_argument("--after-kill-wait", type=float, default=0.0,
                    help="seconds between the kill and the second round of gets (default 0)")
    ap.add_argument("--settle-quiet", type=float, default=3.0,
                    help="seconds over which routing tables must hold within 1%% to count "
                         "as settled (default 3)")
    ap.add_argument("--settle-min", type=float, default=0.0,
                    help="seconds to wait at least before the puts (default 0)")
    ap.add_argument("--settle-max", type=float, default=60.0)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the warm-up get from every node before the puts")
    ap.add_argument("--phase-timeout", type=float, default=600.0,
                    help="seconds a round of gets (or puts) may take before it is cut off")
    ap.add_argument("--explain-misses", type=int, default=20, metavar="K",
                    help="describe up to K lookups per round that missed (default 20)")
    ap.add_argument("--json", metavar="FILE",
                    help="write one JSON object per phase to FILE ('-' for stdout)")
    args = ap.parse_args()

    n = args.nodes
    n_kill = round(args.kill_fraction * n)
    n_getters = max(3, round(args.getters * n))
    if n < 4 or n_getters < 3 or n_kill + n_getters > n:
        sys.exit(f"opendht_bench: {n} nodes cannot hold {n_getters} getters and "
                 f"{n_kill} victims apart")
    rng = random.Random(args.seed)
    # OpenDHT calls the value and done callbacks from its own threads, and each needs the
    # GIL to run; with Python's default 5 ms switch interval a callback can wait that long
    # behind another thread, which would be counted as lookup time.
    sys.setswitchinterval(0.0002)

    # Who does what, all drawn from the seed before anything runs.
    order = list(range(n))
    rng.shuffle(order)
    getters_pool = order[:n_getters]
    victims = sorted(order[n_getters:n_getters + n_kill])
    keys = [dht.InfoHash.get(f"vivim-dht-bench-{args.seed}-{i}") for i in range(args.lookups)]
    values = [f"provider-{args.seed}-{i}".encode() for i in range(args.lookups)]
    # One getter per key and round, a different one each round: OpenDHT keeps a search per
    # key and node, and a second get of a key from the same node would start from it.
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
    t_run = time.monotonic()
    cluster = Cluster(n)
    load_start = os.getloadavg()[0]
    settle_s, capped, good = cluster.settle(args.settle_min, args.settle_quiet, args.settle_max)
    print(f"opendht {opendht_version()}: {n} nodes on 127.0.0.1 started and "
          f"{'still moving after' if capped else 'settled in'} {settle_s:.1f} s (good "
          f"contacts per node min/median/max {good[0]}/{good[1]}/{good[2]})", file=human)
    if args.warmup:
        # A node's first searches after it joins can end on nodes far from the key: without
        # this round, up to 3.3% of the values (at N = 200) were stored only at nodes sharing
        # 0-1 leading bits with their key, all among the first puts, and no get found them.
        # With one get of an absent key from every node first, none was lost in the runs
        # since (docs/benchmarks.md).
        wkeys = [dht.InfoHash.get(f"vivim-dht-bench-warmup-{args.seed}-{i}") for i in range(n)]
        warm_s, _ = get_all(cluster, wkeys, [b""] * n, list(range(n)), args.concurrency,
                            args.phase_timeout)
        print(f"warm-up: one get of an absent key from every node, {warm_s:.1f} s", file=human)
    put_s, put_ok = put_all(cluster, keys, values, putters, args.concurrency,
                            args.phase_timeout)
    print(f"put {args.lookups} values in {put_s:.1f} s, {put_ok} acknowledged", file=human)

    common = {"settle_s": round(settle_s, 1), "settle_capped": capped, "warmup": args.warmup,
              "good_contacts_min_median_max": list(good),
              "loadavg_1min_at_start": round(load_start, 2), "puts_acknowledged": put_ok,
              "getters": n_getters, "killed": 0}
    records = []
    wall, results = get_all(cluster, keys, values, getters_seq, args.concurrency_intact,
                            args.phase_timeout)
    records.append(phase_record("intact", args.concurrency_intact, args, wall, results,
                                dict(common, misses=explain_misses(
                                    cluster, keys, putters, results, args.explain_misses))))
    if args.concurrency != args.concurrency_intact:
        # The control row: the same network, intact, at the concurrency of the round after
        # the kill, so that round's figures can be read against load alone.
        wall, results = get_all(cluster, keys, values, getters_par, args.concurrency,
                                args.phase_timeout)
        records.append(phase_record("intact_parallel", args.concurrency, args, wall, results,
                                    dict(common, misses=explain_misses(
                                        cluster, keys, putters, results, args.explain_misses))))

    cluster.stop(victims)
    if args.after_kill_wait > 0:
        time.sleep(args.after_kill_wait)
    wall, results = get_all(cluster, keys, values, getters_kill, args.concurrency,
                            args.phase_timeout)
    pct = round(args.kill_fraction * 100)
    records.append(phase_record(f"after_kill_{pct}pct", args.concurrency, args, wall, results,
                                dict(common, killed=n_kill,
                                     after_kill_wait_s=args.after_kill_wait,
                                     misses=explain_misses(cluster, keys, putters, results,
                                                           args.explain_misses))))
    cluster.stop_all()

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
