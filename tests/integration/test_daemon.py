"""The daemon as an operator meets it: command line, config errors, identity, signals,
systemd notification, logging format, and the systemd unit."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

import vivimtest
from vivimtest import VIVIMD, Node


def run_vivimd(*args, timeout=30, env=None):
    return subprocess.run([VIVIMD] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)


class CommandLine(unittest.TestCase):
    def test_version_and_help(self):
        r = run_vivimd("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^vivimd \d+\.\d+\.\d+\n$")
        r = run_vivimd("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--check-config", r.stdout)
        r = run_vivimd("--bogus")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage:", r.stderr)

    def test_check_config_prints_effective_config(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.conf")
            with open(path, "w") as f:
                f.write("[log]\nlevel = debug\n")
            r = run_vivimd("--check-config", "--config", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("[log]\nlevel = debug\n", r.stdout)
            self.assertIn("listen = 127.0.0.1:9464", r.stdout)  # a default shows too
            # The printed config is itself valid.
            with open(path, "w") as f:
                f.write(r.stdout)
            self.assertEqual(run_vivimd("--check-config", "--config", path).returncode, 0)

    def test_shipped_config_is_valid_and_equals_the_defaults(self):
        src = os.environ.get("VIVIM_SOURCE_DIR", ".")
        shipped = run_vivimd("--check-config", "--config", os.path.join(src, "config/vivimd.conf"))
        self.assertEqual(shipped.returncode, 0, shipped.stderr)
        with tempfile.TemporaryDirectory() as d:
            empty = os.path.join(d, "empty.conf")
            open(empty, "w").close()
            defaults = run_vivimd("--check-config", "--config", empty)
        self.assertEqual(shipped.stdout, defaults.stdout)

    def test_bad_configs_name_file_and_line_and_exit_1(self):
        cases = [
            ("[node]\nstate_dir = /x\n[nope]\n", ":3: unknown section [nope]"),
            ("[rpc]\n\nmax_clients = 0\n", ":3: [rpc] max_clients: 0 is out of range"),
            ("[log]\nlevel = chatty\n", ":2: [log] level: expected one of"),
            ("[metrics]\nlisten = 9464\n", ":2: [metrics] listen: expected host:port"),
            ("[net]\nfoo = bar\n", ":2: unknown key 'foo' in section [net]"),
        ]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.conf")
            for text, want in cases:
                with open(path, "w") as f:
                    f.write(text)
                for args in (["--check-config", "--config", path], ["--config", path]):
                    r = run_vivimd(*args)
                    self.assertEqual(r.returncode, 1, (text, r.stderr))
                    self.assertIn(path + want, r.stderr)
            r = run_vivimd("--config", os.path.join(d, "missing.conf"))
            self.assertEqual(r.returncode, 1)
            self.assertIn("missing.conf: cannot open", r.stderr)


class Lifecycle(unittest.TestCase):
    def test_start_creates_identity_and_notifies_ready(self):
        with Node() as n:
            key = os.path.join(n.state_dir, "node.key")
            st = os.stat(key)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
            self.assertEqual(st.st_size, 64)
            self.assertTrue(any(m.startswith("READY=1") and "STATUS=" in m
                                for m in n.notify_messages), n.notify_messages)
            m = re.search(r"ready: node ([0-9a-f]{64}), rpc (\S+), metrics (\S+)", n.log_text())
            self.assertIsNotNone(m, n.log_text())
            self.assertEqual(m.group(2), n.socket_path)
            self.assertEqual(m.group(3), n.metrics_url)
            self.assertEqual(stat.S_IMODE(os.stat(n.socket_path).st_mode), 0o660)
            status = n.rpc("node.status")
            self.assertEqual(status["nodeId"], m.group(1))
            first_id = m.group(1)
            n.stop()
            n.start()  # same state dir: same identity
            self.assertEqual(n.rpc("node.status")["nodeId"], first_id)

    def test_sigterm_and_sigint_exit_0_quickly_and_remove_socket(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with Node() as n:
                t0 = time.monotonic()
                rc = n.stop(sig, timeout=5)
                self.assertEqual(rc, 0, n.log_text())
                self.assertLess(time.monotonic() - t0, 5)
                self.assertFalse(os.path.exists(n.socket_path))
                self.assertIn("stopped", n.log_text())
                self.assertNotIn("did not close cleanly", n.log_text())
                self.assertNotIn("still open", n.log_text())

    def test_second_sigterm_while_stopping_is_harmless(self):
        with Node() as n:
            n.proc.send_signal(signal.SIGTERM)
            n.wait_notify("STOPPING=1", 5)
            n.proc.send_signal(signal.SIGTERM)
            self.assertEqual(n.proc.wait(10), 0, n.log_text())

    def test_stopping_is_notified(self):
        with Node() as n:
            n.proc.send_signal(signal.SIGTERM)
            n.wait_notify("STOPPING=1", 5)
            self.assertEqual(n.stop(), 0)

    def test_sighup_reloads_log_level_and_survives_bad_file(self):
        with Node() as n:
            n.config["log"]["level"] = "debug"
            n.write_config()
            n.proc.send_signal(signal.SIGHUP)
            self.wait_log(n, "log.level info -> debug")
            with open(n.config_path, "a") as f:
                f.write("[bogus]\n")
            n.proc.send_signal(signal.SIGHUP)
            self.wait_log(n, "reload failed, keeping the running configuration")
            self.assertTrue(n.alive())
            self.assertIn("nodeId", n.rpc("node.status"))
            self.assertEqual(n.stop(), 0)

    def wait_log(self, n, needle, timeout=10):
        deadline = time.monotonic() + timeout
        while needle not in n.log_text():
            if time.monotonic() > deadline:
                self.fail(f"{needle!r} not logged:\n{n.log_text()}")
            time.sleep(0.05)

    def test_second_daemon_on_same_socket_refuses(self):
        with Node() as first:
            second = Node(start=False)
            second.config["rpc"]["socket"] = first.socket_path
            second.write_config()
            second.start(wait=False)
            rc = second.proc.wait(30)
            self.assertEqual(rc, 1)
            self.assertIn("already running", second.log_text())
            second.close()
            self.assertTrue(first.alive())
            self.assertIn("nodeId", first.rpc("node.status"))

    def test_stale_socket_file_is_replaced(self):
        with Node(start=False) as n:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(n.socket_path)
            s.close()  # the file stays, nobody listens
            n.start()
            self.assertIn("nodeId", n.rpc("node.status"))

    def test_bad_key_file_is_refused_and_kept(self):
        with Node(start=False) as n:
            os.makedirs(n.state_dir, mode=0o700)
            key = os.path.join(n.state_dir, "node.key")
            with open(key, "wb") as f:
                f.write(b"x" * 64)
            os.chmod(key, 0o644)
            n.start(wait=False)
            self.assertEqual(n.proc.wait(30), 1)
            self.assertIn("chmod 600", n.log_text())
            with open(key, "rb") as f:
                self.assertEqual(f.read(), b"x" * 64)

    def test_watchdog_pings_at_half_the_interval(self):
        os.environ["WATCHDOG_USEC"] = "400000"
        try:
            with Node() as n:
                n.notify_messages.clear()
                n.wait_notify("WATCHDOG=1", 5)
        finally:
            del os.environ["WATCHDOG_USEC"]

    def test_journal_format_when_stderr_is_the_journal(self):
        with Node(start=False) as n:
            log = open(n.log_path, "ab")
            st = os.fstat(log.fileno())
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
            env.pop("NOTIFY_SOCKET", None)
            proc = subprocess.Popen([VIVIMD, "--config", n.config_path], stderr=log,
                                    stdout=log, env=env)
            try:
                deadline = time.monotonic() + 30
                while "ready:" not in n.log_text() and time.monotonic() < deadline:
                    time.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(10), 0)
            finally:
                if proc.poll() is None:
                    proc.kill()
                log.close()
            lines = [l for l in n.log_text().splitlines() if l]
            self.assertTrue(lines)
            for line in lines:
                self.assertRegex(line, r"^<[3-7]>[a-z]+: ")
            self.assertTrue(any(l.startswith("<5>vivimd: ready: node ") for l in lines))


class Install(unittest.TestCase):
    def test_install_puts_binaries_unit_config_and_docs_under_the_prefix(self):
        build = os.environ.get("VIVIM_BUILD_DIR")
        if not build:
            self.skipTest("VIVIM_BUILD_DIR not set (run through ctest)")
        with tempfile.TemporaryDirectory() as prefix:
            r = subprocess.run(["cmake", "--install", build, "--prefix", prefix],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            for rel in ("bin/vivimd", "bin/vivimctl", "etc/vivim/vivimd.conf",
                        "lib/systemd/system/vivimd.service", "share/doc/vivimd/operations.md"):
                self.assertTrue(os.path.exists(os.path.join(prefix, rel)), rel)
            with open(os.path.join(prefix, "lib/systemd/system/vivimd.service")) as f:
                unit = f.read()
            self.assertIn(f"ExecStart={prefix}/bin/vivimd --config {prefix}/etc/vivim/vivimd.conf",
                          unit)


class SystemdUnit(unittest.TestCase):
    def unit_for_build(self, d):
        """The shipped unit with ExecStart pointing at the binary under test."""
        src = os.environ.get("VIVIM_SOURCE_DIR", ".")
        with open(os.path.join(src, "config/vivimd.service")) as f:
            text = f.read()
        text = text.replace("/usr/local/bin/vivimd", os.path.abspath(VIVIMD))
        path = os.path.join(d, "vivimd.service")
        with open(path, "w") as f:
            f.write(text)
        return path

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_unit_verifies_cleanly(self):
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                self.unit_for_build(d)], capture_output=True, text=True,
                               cwd=d, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual((r.stdout + r.stderr).strip(), "")

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_unit_exposure_score_is_at_most_2(self):
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                                self.unit_for_build(d)], capture_output=True, text=True,
                               cwd=d, timeout=60)
            m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            self.assertLessEqual(float(m.group(1)), 2.0, r.stdout)
            for key in ("Type=notify", "WatchdogSec=", "RuntimeDirectory=", "StateDirectory=",
                        "LimitNOFILE=", "ProtectSystem=strict", "NoNewPrivileges=yes",
                        "PrivateTmp=yes", "PrivateDevices=yes", "RestrictAddressFamilies=",
                        "SystemCallFilter=", "CapabilityBoundingSet="):
                with open(os.path.join(d, "vivimd.service")) as f:
                    self.assertIn(key, f.read())


if __name__ == "__main__":
    vivimtest.main()
