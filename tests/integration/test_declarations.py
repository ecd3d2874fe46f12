"""A module is its folder (issue 10): what the modules declare is what the daemon does and
what operators read. config/vivimd.conf is exactly `vivimd --print-default-config` (the
modules' declarations, documentation included); /health lists exactly the modules
`vivimd --modules` declares, with a check for each module that declares one; the documented
reload behaviour of every key is the one the declarations give."""

import json
import os
import subprocess
import unittest

import vivimtest
from vivimtest import Node, http_get

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(*args):
    r = subprocess.run([vivimtest.VIVIMD, *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"vivimd {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def declared_modules():
    """name -> {section, depends, health} from `vivimd --modules`."""
    mods = {}
    for line in run("--modules").splitlines():
        name, *fields = line.split()
        kv = dict(f.split("=", 1) for f in fields)
        mods[name] = {
            "section": None if kv["section"] == "-" else kv["section"],
            "depends": [] if kv["depends"] == "-" else kv["depends"].split(","),
            "health": kv["health"] == "yes",
        }
    return mods


class Declarations(unittest.TestCase):
    def test_vivimd_conf_is_generated_from_the_declarations(self):
        with open(os.path.join(ROOT, "config", "vivimd.conf")) as f:
            committed = f.read()
        generated = run("--print-default-config")
        self.assertEqual(committed, generated,
                         "config/vivimd.conf drifted from the declarations: regenerate it "
                         "with `build/debug/vivimd --print-default-config > config/vivimd.conf`")

    def test_default_file_loads_and_means_the_defaults(self):
        # The generated file, loaded, is the built-in configuration.
        path = os.path.join(ROOT, "config", "vivimd.conf")
        effective = run("--check-config", "--config", path)
        empty = os.path.join(self.tmp, "empty.conf")
        with open(empty, "w"):
            pass
        self.assertEqual(effective, run("--check-config", "--config", empty))

    def test_every_section_belongs_to_a_declared_module_or_the_node(self):
        mods = declared_modules()
        sections = [l[1:-1] for l in run("--print-default-config").splitlines()
                    if l.startswith("[")]
        owned = {"node", "log"} | {m["section"] for m in mods.values() if m["section"]}
        self.assertEqual(set(sections), owned)
        for name, m in mods.items():
            for dep in m["depends"]:
                self.assertIn(dep, mods, f"{name} depends on undeclared module {dep}")

    def test_health_lists_exactly_the_declared_modules(self):
        mods = declared_modules()
        with Node() as n:
            status, body, _ = http_get(n.metrics_url + "/health")
            self.assertEqual(status, 200, body)
            h = json.loads(body)
            self.assertEqual(h["status"], "ok")
            self.assertEqual(set(h["modules"]), set(mods))
            for name, state in h["modules"].items():
                self.assertEqual(state, "running", name)
            self.assertEqual(set(h["checks"]), {k for k, m in mods.items() if m["health"]})
            for name, c in h["checks"].items():
                self.assertIs(c["ok"], True, f"{name}: {c}")
            # node.status reports the same modules.
            self.assertEqual(set(n.rpc("node.status")["modules"]), set(mods))

    def setUp(self):
        import tempfile
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()


if __name__ == "__main__":
    vivimtest.main()
