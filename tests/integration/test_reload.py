"""Reload tells the truth (issue 10): every configuration key, changed once in the file of a
running vivimd, is reported by node.reload either as applied or as needing a restart, and
nothing else is. The list of keys comes from the daemon itself (--check-config), so a key
added without a value here fails the test instead of going unchecked."""

import os
import subprocess
import unittest

import vivimtest
from vivimtest import Node, free_port

def reloadable_keys():
    """Keys SIGHUP applies at run time, as the modules declare them: in the generated default
    file, their documentation ends with "Changes on reload." Every other key needs a restart."""
    r = subprocess.run([vivimtest.VIVIMD, "--print-default-config"], capture_output=True,
                       text=True, timeout=30, check=True)
    keys, section, doc = set(), None, ""
    for line in r.stdout.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section, doc = line[1:-1], ""
        elif line.startswith(";"):
            doc += line[1:].strip() + " "
        elif "=" in line:
            if doc.strip().endswith("Changes on reload."):
                keys.add((section, line.split("=", 1)[0].strip()))
            doc = ""
    return keys


RELOADABLE = reloadable_keys()
assert ("log", "level") in RELOADABLE, "the declarations lost [log] level's reload flag"


def effective_keys(node):
    """(section, key) -> value, as the daemon reads the node's config file."""
    r = subprocess.run([vivimtest.VIVIMD, "--config", node.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=30, check=True)
    keys, section = {}, None
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            k, v = line.split("=", 1)
            keys[(section, k.strip())] = v.strip()
    return keys


def alternative(node, section, key, value):
    """A valid value different from value, consistent with the other keys' defaults."""
    special = {
        ("node", "state_dir"): os.path.join(node.tmp, "elsewhere"),
        ("node", "type"): "indexer",
        ("node", "region"): "eu-west",
        ("log", "level"): "debug",
        ("rpc", "socket"): os.path.join(node.tmp, "other.sock"),
        ("metrics", "listen"): f"127.0.0.1:{free_port()}",
        ("net", "listen"): f"127.0.0.1:{free_port()}",
        ("net", "bootstrap"): "127.0.0.1:1",
        ("net", "advertise"): "127.0.0.1:4999",
        ("registry", "url"): "postgresql://vivim@/vivim?host=/tmp",
        # At their maximum by default, or negative numbers (score thresholds; each stays in
        # the order the router requires: graylist < publish <= gossip <= 0).
        ("pubsub", "max_ihave_length"): "4999",
        ("pubsub", "max_message_bytes"): "1000000",
        ("pubsub", "gossip_threshold"): "-5",
        ("pubsub", "publish_threshold"): "-40",
        ("pubsub", "graylist_threshold"): "-70",
        ("dht", "k"): "19",
    }
    if (section, key) == ("net", "low_water"):
        return str(int(value) - 1)  # stays <= high_water
    if (section, key) in special:
        return special[(section, key)]
    if value in ("true", "false"):
        return "false" if value == "true" else "true"
    if value in ("normal", "full"):
        return "full" if value == "normal" else "normal"
    if value.isdigit():
        return str(int(value) + 1)
    raise AssertionError(f"no alternative value known for [{section}] {key} = {value!r}")


class ReloadTellsTheTruth(unittest.TestCase):
    def test_every_key_is_applied_or_reported_as_needing_a_restart(self):
        with Node() as node:
            keys = effective_keys(node)
            self.assertGreaterEqual(len(keys), 40)
            self.assertEqual(node.rpc("node.reload")["changes"], "no changes")
            for (section, key), value in keys.items():
                with self.subTest(key=f"{section}.{key}"):
                    alt = alternative(node, section, key, value)
                    before = node.config.get(section, {}).get(key)
                    node.config.setdefault(section, {})[key] = alt
                    node.write_config()
                    changes = node.rpc("node.reload")["changes"]
                    name = f"{section}.{key}"
                    if (section, key) in RELOADABLE:
                        self.assertNotIn("needs a restart", changes)
                        self.assertTrue(changes == f"{name} applied" or
                                        changes == f"log.level {value} -> {alt}", changes)
                    else:
                        self.assertEqual(changes, f"changed but needs a restart: {name}")
                    # Back as it was: the running configuration is unchanged for restart
                    # keys, and the reloadable ones go back.
                    if before is None:
                        del node.config[section][key]
                    else:
                        node.config[section][key] = before
                    node.write_config()
                    changes = node.rpc("node.reload")["changes"]
                    if (section, key) in RELOADABLE:
                        self.assertNotIn("needs a restart", changes)
                    else:
                        self.assertEqual(changes, "no changes")
            self.assertTrue(node.alive())
            self.assertEqual(node.rpc("node.reload")["changes"], "no changes")

    def test_auto_join_applies_without_a_restart(self):
        # The engine refuses a peer's document at once after auto_join = false is reloaded.
        with Node() as node:
            node.config.setdefault("crdt", {})["auto_join"] = "false"
            node.write_config()
            self.assertEqual(node.rpc("node.reload")["changes"], "crdt.auto_join applied")
            testpeer = os.environ.get(
                "VIVIM_TESTPEER",
                os.path.join(os.path.dirname(vivimtest.VIVIMD), "vivim-testpeer"))
            r = subprocess.run([testpeer, "127.0.0.1", str(node.net_port), "crdtpile", "doc-x",
                                "3", "3", "1"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            ids = [d["docId"] for d in node.rpc("crdt.list")["documents"]]
            self.assertNotIn("doc-x", ids)
            # And back: with auto_join = true a peer's SYNC creates the document again.
            node.config["crdt"]["auto_join"] = "true"
            node.write_config()
            self.assertEqual(node.rpc("node.reload")["changes"], "crdt.auto_join applied")
            r = subprocess.run([testpeer, "127.0.0.1", str(node.net_port), "crdtpile", "doc-y",
                                "3", "3", "1"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            ids = [d["docId"] for d in node.rpc("crdt.list")["documents"]]
            self.assertIn("doc-y", ids)


if __name__ == "__main__":
    vivimtest.main()
