"""A connected peer attacks the CRDT engine of a real vivimd (issue 9, item 1). It syncs a new
text document (the node auto-joins it) and sends one UPDATE whose records all claim the
document's ends as origins, the pile that made integration quadratic: 100,000 records of one
replica (400 KB) held every RPC for 32.6 s before, past systemd's watchdog, and the update
was stored and replayed for 41 s at the next start. Now such updates are refused, counted,
logged and not stored, while another client's RPC calls go on being answered."""

import os
import subprocess
import sys
import threading
import time
import unittest

import vivimtest
from vivimtest import Node, http_get, wait_for, metric

TESTPEER = os.environ.get("VIVIM_TESTPEER",
                          os.path.join(os.path.dirname(vivimtest.VIVIMD), "vivim-testpeer"))

# The worst stall a test may see. The goal (under 100 ms) is measured on the release build in
# docs/benchmarks.md; this sanitizer build on a loaded 2-core machine gets a wide margin, and
# still fails by far on the old code (7.7 s for a pile of 50,000, 32.6 s for 100,000).
STALL_BOUND_S = 1.5


class Prober:
    """Calls node.status back to back on a thread; keeps the slowest answer's time."""

    def __init__(self, node):
        self.node = node
        self.worst = 0.0
        self.calls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.node.rpc("node.status", timeout=60)
            self.worst = max(self.worst, time.monotonic() - t0)
            self.calls += 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(90)


class PileAttack(unittest.TestCase):
    def run_pile(self, node, doc, n, agents):
        r = subprocess.run([TESTPEER, "127.0.0.1", str(node.net_port), "crdtpile", doc, str(n),
                            str(agents), "3"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def value(self, node, doc):
        return node.rpc("crdt.value", {"docId": doc})["value"]

    def test_pile_updates_are_refused_without_stalling_the_loop(self):
        with Node() as node:
            with Prober(node) as probe:
                # The probe's update: one replica, 100,000 records, 400 KB.
                out = self.run_pile(node, "pile-one", 100000, 1)
                self.assertIn("sent 400", out)
                wait_for("the forged update to be refused",
                         lambda: metric(node, "vivimd_crdt_updates_forged_total") >= 1, 30)
                # The same pile over 30,000 replicas: an honest-looking history whose placement
                # costs n^2/2 steps; the work budget stops it.
                self.run_pile(node, "pile-many", 30000, 30000)
                wait_for("the costly update to be refused",
                         lambda: metric(node, "vivimd_crdt_updates_too_costly_total") >= 1, 30)
            print(f"# worst RPC wait during the attack: {probe.worst * 1000:.1f} ms "
                  f"({probe.calls} calls)", file=sys.stderr)
            busy_max = metric(node, "vivimd_loop_busy_max_seconds")
            print(f"# longest loop turn: {busy_max * 1000:.1f} ms", file=sys.stderr)
            self.assertGreater(busy_max, 0)
            self.assertLess(busy_max, STALL_BOUND_S)
            self.assertGreater(probe.calls, 10)
            self.assertLess(probe.worst, STALL_BOUND_S,
                            f"an RPC call waited {probe.worst:.2f} s during the attack")
            self.assertEqual(self.value(node, "pile-one"), "")
            self.assertEqual(self.value(node, "pile-many"), "")
            self.assertEqual(metric(node, "vivimd_crdt_updates_received_total"), 0)
            steps = metric(node, "vivimd_crdt_integration_steps_total")
            self.assertLessEqual(steps, 2 * (4 << 20) + 2)
            self.assertIn("refused: update contradicts its replica's own history",
                          node.log_text())

            # Nothing of them was stored: the restart is quick and the documents empty.
            self.assertEqual(node.stop(), 0)
            t0 = time.monotonic()
            node.start()
            self.assertLess(time.monotonic() - t0, 20)
            self.assertEqual(self.value(node, "pile-one"), "")
            self.assertEqual(self.value(node, "pile-many"), "")

    def test_modest_concurrent_pile_is_accepted(self):
        # 300 replicas each typing one letter at one place: within the budget, applied whole.
        with Node() as node:
            self.run_pile(node, "pile-small", 300, 300)
            wait_for("the update to apply",
                     lambda: metric(node, "vivimd_crdt_updates_received_total") >= 1, 30)
            self.assertEqual(len(self.value(node, "pile-small")), 300)


if __name__ == "__main__":
    vivimtest.main()
