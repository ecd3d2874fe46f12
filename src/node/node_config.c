/*
 * The node's own sections of vivimd.conf, [node] and [log], and the preamble of the
 * generated default file. Every module declares its section in its own folder; the program's
 * schema (src/node/modules.c) lists them in the order of the file.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/connmgr.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/session.h"

/* The longest name vivimd makes under the state directory is users/xx/<sha256 hex>.db-journal
 * (84 bytes with its '/'); keeping 128 bytes for it leaves room for SQLite's suffixes. */
#define VV_NODE_STATE_DIR_MAX_BYTES (PATH_MAX - 128 - 1)
#define VV_NODE_REGION_MAX_BYTES    (VV_CONNMGR_REGION_BYTES - 1) /* what peers decode */

static int check_state_dir(const char *v, char *why, size_t why_len)
{
    int rc = vv_config_check_path(v, why, why_len);
    if (rc != 0)
        return rc;
    if (strlen(v) > VV_NODE_STATE_DIR_MAX_BYTES) {
        snprintf(why, why_len,
                 "%zu bytes; at most %d, so that every file under it has a path shorter "
                 "than PATH_MAX",
                 strlen(v), VV_NODE_STATE_DIR_MAX_BYTES);
        return VV_ECONFIG_RANGE;
    }
    return 0;
}

/* The region travels in the hello: it is checked by the decoder each peer runs on it. */
static int check_region(const char *v, char *why, size_t why_len)
{
    int rc = vv_config_check_max_bytes(v, VV_NODE_REGION_MAX_BYTES, "peers accept", why, why_len);
    if (rc != 0)
        return rc;
    uint8_t hello[VV_SESSION_MAX_HELLO_BYTES];
    size_t len;
    char listen[VV_NET_ADDRESS_BYTES];
    int type;
    uint32_t caps;
    if (vv_net_hello_encode(0, 0, "", v, hello, sizeof(hello), &len) != 0 ||
        vv_net_hello_decode(hello, len, &type, &caps, listen, sizeof(listen)) != 0) {
        snprintf(why, why_len, "peers accept only UTF-8 text without control characters");
        return VV_ECONFIG_VALUE;
    }
    return 0;
}

const struct vv_config_choice vv_node_type_choices[] = {
    {"bootstrap", VV_NODE_BOOTSTRAP},
    {"relay", VV_NODE_RELAY},
    {"indexer", VV_NODE_INDEXER},
    {"storage", VV_NODE_STORAGE},
    {"edge", VV_NODE_EDGE},
    {"client", VV_NODE_CLIENT},
    {"self_hosted", VV_NODE_SELF_HOSTED},
    {NULL, 0},
};

static const struct vv_config_key node_keys[] = {
    VV_CONFIG_TEXT_KEY(
        struct vv_node_settings, state_dir, "/var/lib/vivim", check_state_dir, false,
        "Directory for the node's identity key (node.key, mode 0600), the SQLite registry and "
        "the per-user databases. Created with mode 0700 if missing; refused if group or others "
        "may write to it, or if a user other than root or vivimd's own owns it. One vivimd at a "
        "time: it holds a lock on state_dir/vivimd.lock (which holds its PID), and a second one "
        "refuses to start. At most 3967 bytes. Back it up: node.key is the node's identity."),
    VV_CONFIG_ENUM_KEY(struct vv_node_settings, type, "storage", vv_node_type_choices, false,
                       "What this node does in the network, advertised to peers: bootstrap, "
                       "relay, indexer, storage, edge, client or self_hosted."),
    VV_CONFIG_TEXT_KEY(struct vv_node_settings, region, "", check_region, false,
                       "Free-form region label advertised to peers (for example eu-west); empty "
                       "for none. At most 31 bytes of UTF-8 text without control characters: "
                       "peers refuse a longer hello."),
};

const struct vv_config_section vv_node_settings_section =
    VV_CONFIG_SECTION("node", NULL, struct vv_node_settings, node_keys, NULL);

static const struct vv_config_choice log_levels[] = {
    {"error", VV_LOG_ERROR}, {"warn", VV_LOG_WARN},   {"notice", VV_LOG_NOTICE},
    {"info", VV_LOG_INFO},   {"debug", VV_LOG_DEBUG}, {NULL, 0},
};

static const struct vv_config_key log_keys[] = {
    VV_CONFIG_ENUM_KEY(struct vv_log_settings, level, "info", log_levels, true,
                       "Least severe level written: error, warn, notice, info or debug."),
};

const struct vv_config_section vv_log_settings_section =
    VV_CONFIG_SECTION("log", NULL, struct vv_log_settings, log_keys, NULL);

const char vv_node_config_preamble[] =
    "vivimd configuration — the full default configuration, one comment per key.\n"
    "\n"
    "Every key below shows its built-in default; a file that sets nothing behaves exactly like "
    "this one. This file is generated from the modules' declarations (`vivimd "
    "--print-default-config`); a test keeps the two identical. An unknown section or key, a "
    "malformed value or a number out of range stops vivimd at start-up with \"file:line: what "
    "is wrong\" and exit status 1; `vivimd --check-config --config FILE` validates a file and "
    "prints the effective configuration; it refuses everything start-up would refuse about a "
    "value, with the same \"file:line\". SIGHUP (or `vivimctl reload`) re-reads the file: the "
    "keys marked \"Changes on reload\" change at once (\"applied\"); a change to any other key "
    "is named in the answer and the log as needing a restart. A file that fails to load on "
    "reload leaves the running configuration untouched.\n"
    "\n"
    "Comments start with ';' or '#' at the beginning of a line; ';' after whitespace starts an "
    "inline comment. Values are taken as written, without quotes. Lines are at most 4096 bytes. "
    "Boolean keys take true, false, yes, no, on, off, 1 or 0 (lowercase).";
