"""Start-up refusals an operator relies on: one vivimd per state directory, a state directory
others cannot write to, and a --check-config that refuses exactly what start-up refuses."""

import os
import re
import subprocess
import tempfile
import time
import unittest

import vivimtest
from vivimtest import VIVIMD, Node

REFUSE_WITHIN_S = 20  # a refusal is immediate; generous for a sanitizer build on 2 busy cores


def start_expecting_refusal(config_path, timeout=REFUSE_WITHIN_S):
    """Runs vivimd --config config_path; returns (exit status, stderr). A vivimd still
    running after timeout did not refuse: it is stopped and the test fails."""
    p = subprocess.Popen([VIVIMD, "--config", config_path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        _, err = p.communicate(timeout=30)
        raise AssertionError(f"vivimd started instead of refusing {config_path}:\n{err}")
    return p.returncode, err


class StateDirLock(unittest.TestCase):
    def test_second_daemon_on_the_same_state_dir_is_refused(self):
        with Node() as a, tempfile.TemporaryDirectory() as other:
            with open(os.path.join(a.state_dir, "vivimd.lock")) as f:
                self.assertEqual(f.read().strip(), str(a.pid))
            # B: same state directory, its own socket and ports.
            b = Node(start=False, tmp=other)
            b.config["node"]["state_dir"] = a.state_dir
            b.write_config()
            t0 = time.monotonic()
            rc, err = start_expecting_refusal(b.config_path)
            self.assertEqual(rc, 1, err)
            self.assertLess(time.monotonic() - t0, REFUSE_WITHIN_S)
            self.assertIn(f"state directory {a.state_dir} is in use by another vivimd "
                          f"(pid {a.pid})", err)
            self.assertFalse(os.path.exists(b.socket_path))  # refused before any module
            # A is untouched and still serves.
            self.assertTrue(a.alive())
            self.assertEqual(len(a.rpc("node.status")["nodeId"]), 64)
            with open(os.path.join(a.state_dir, "vivimd.lock")) as f:
                self.assertEqual(f.read().strip(), str(a.pid))
            self.assertEqual(a.stop(), 0, a.log_text())
            # Once A is gone, B starts on the directory (the lock file left behind is reused).
            b.start()
            try:
                with open(os.path.join(a.state_dir, "vivimd.lock")) as f:
                    self.assertEqual(f.read().strip(), str(b.pid))
            finally:
                b.close()

    def test_second_daemon_gets_the_same_identity_only_after_the_first_stops(self):
        with Node() as a, tempfile.TemporaryDirectory() as other:
            node_id = a.rpc("node.status")["nodeId"]
            b = Node(start=False, tmp=other)
            b.config["node"]["state_dir"] = a.state_dir
            b.write_config()
            rc, _ = start_expecting_refusal(b.config_path)
            self.assertEqual(rc, 1)
            a.stop()
            b.start()
            try:
                self.assertEqual(b.rpc("node.status")["nodeId"], node_id)
            finally:
                b.close()


class StateDirPermissions(unittest.TestCase):
    def test_group_or_world_writable_state_dir_is_refused(self):
        for mode in (0o777, 0o770, 0o1777):
            with tempfile.TemporaryDirectory() as d:
                n = Node(start=False, tmp=d)
                os.mkdir(n.state_dir)
                os.chmod(n.state_dir, mode)
                rc, err = start_expecting_refusal(n.config_path)
                self.assertEqual(rc, 1, err)
                self.assertIn(f"state directory {n.state_dir} is writable by group or others "
                              f"(mode {mode & 0o7777:04o}); run: chmod 700 {n.state_dir}", err)
                # Nothing was written into it: no key, no lock, no database.
                self.assertEqual(os.listdir(n.state_dir), [])
                os.chmod(n.state_dir, 0o700)
                n.start()
                n.close()

    def test_state_dir_created_0700_and_a_readable_one_accepted(self):
        with tempfile.TemporaryDirectory() as d:
            n = Node(start=False, tmp=d)
            n.start()
            self.assertEqual(os.stat(n.state_dir).st_mode & 0o7777, 0o700)
            n.stop()
            os.chmod(n.state_dir, 0o750)  # e.g. a backup group may read it
            n.start()
            n.close()


class CheckConfigAgreesWithStartup(unittest.TestCase):
    """Every configuration start-up refuses, --check-config refuses with the same file:line."""

    def bad_cases(self, tmp):
        long_socket = os.path.join(tmp, "s" * (108 - len(tmp) - 1))
        self.assertEqual(len(long_socket), 108)
        return [
            ({"metrics": {"listen": "metrics.example.org:9464"}}, "[metrics] listen"),
            ({"net": {"listen": "peers.example.org:4747"}}, "[net] listen"),
            ({"rpc": {"socket": long_socket}}, "[rpc] socket"),
            ({"node": {"region": "r" * 40}}, "[node] region"),
            ({"node": {"region": "eu\twest"}}, "[node] region"),
            ({"net": {"advertise": "a" * 120 + ".example:4747"}}, "[net] advertise"),
            ({"net": {"bootstrap": "b" * 120 + ".example:4747"}}, "[net] bootstrap"),
            ({"net": {"low_water": "10", "high_water": "5"}}, "[net] needs low_water"),
            ({"registry": {"url": "postgresql://vivim@/vivim?nosuchoption=1"}}, "[registry] url"),
        ]

    def test_each_bad_config_refused_by_check_and_by_startup_with_its_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            for extra, what in self.bad_cases(tmp):
                with self.subTest(what=what, extra=extra):
                    n = Node(extra_config=extra, start=False, tmp=tmp)
                    with open(n.config_path) as f:
                        lines = f.read().split("\n")
                    r = subprocess.run([VIVIMD, "--check-config", "--config", n.config_path],
                                       capture_output=True, text=True, timeout=30)
                    self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                    m = re.search(re.escape(n.config_path) + r":(\d+): (.*)", r.stderr)
                    self.assertIsNotNone(m, r.stderr)
                    line = int(m.group(1))
                    self.assertGreater(line, 0, r.stderr)
                    # The line named holds one of the keys involved.
                    key_line = lines[line - 1]
                    self.assertTrue(any(key_line.startswith(k + " =")
                                        for keys in extra.values() for k in keys),
                                    (r.stderr, key_line))
                    self.assertIn(what, m.group(2))
                    rc, err = start_expecting_refusal(n.config_path)
                    self.assertEqual(rc, 1, err)
                    self.assertIn(m.group(0), err)
                    self.assertFalse(os.path.exists(n.state_dir), "refused before the state dir")

    def test_documented_boolean_spellings_accepted(self):
        with tempfile.TemporaryDirectory() as tmp:
            for word, value in (("true", "true"), ("yes", "true"), ("on", "true"),
                                ("1", "true"), ("false", "false"), ("no", "false"),
                                ("off", "false"), ("0", "false")):
                n = Node(extra_config={"net": {"mdns": word}}, start=False, tmp=tmp)
                r = subprocess.run([VIVIMD, "--check-config", "--config", n.config_path],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(f"mdns = {value}\n", r.stdout)
            n = Node(extra_config={"net": {"mdns": "enabled"}}, start=False, tmp=tmp)
            r = subprocess.run([VIVIMD, "--check-config", "--config", n.config_path],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn("[net] mdns: expected true, false, yes, no, on, off, 1 or 0", r.stderr)

    def test_documented_boolean_spellings_match_the_shipped_config(self):
        src = os.environ.get("VIVIM_SOURCE_DIR", ".")
        with open(os.path.join(src, "config/vivimd.conf")) as f:
            text = f.read()
        self.assertTrue("true, false, yes, no, on, off, 1 or 0" in text,
                        "config/vivimd.conf must list the boolean spellings the loader takes")


if __name__ == "__main__":
    vivimtest.main()
