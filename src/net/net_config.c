/* [net]: where this node listens for peers, whom it starts from, and the connection limits. */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/connmgr.h"
#include "vivim/identity.h"
#include "vivim/net.h"
#include "vivim/session.h"

#define VV_NET_MAX_BOOTSTRAP      64 /* bootstrap peers; more belong in DNS */
#define VV_NET_ADDRESS_MAX_BYTES  (VV_NET_ADDRESS_BYTES - 1) /* advertise, bootstrap */
#define VV_NET_REGION_WORST_BYTES VV_CONNMGR_REGION_BYTES

/* With both at their limits the hello still fits what peers accept. */
_Static_assert(VV_NET_ADDRESS_BYTES + VV_NET_REGION_WORST_BYTES + 32 <= VV_SESSION_MAX_HELLO_BYTES,
               "the longest advertise and region must fit in a hello");
_Static_assert(VV_CONNMGR_ADDRESS_BYTES == VV_NET_ADDRESS_BYTES,
               "an address the net layer accepts must fit the connection manager's");

static int check_advertise(const char *v, char *why, size_t why_len)
{
    int rc;
    if (*v != '\0' && ((rc = vv_config_check_hostport(v, why, why_len)) != 0 ||
                       (rc = vv_config_check_max_bytes(v, VV_NET_ADDRESS_MAX_BYTES, "peers accept",
                                                       why, why_len)) != 0))
        return rc;
    return 0;
}

/* Comma-separated "host:port" or "<64 hex digits>@host:port"; spaces around commas allowed. */
static int check_bootstrap(const char *v, char *why, size_t why_len)
{
    char *copy = vv_xstrdup(v);
    int rc = 0, count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l > 0 && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
            tok[--l] = '\0';
        if (l == 0)
            continue;
        if (++count > VV_NET_MAX_BOOTSTRAP) {
            snprintf(why, why_len, "more than %d bootstrap peers", VV_NET_MAX_BOOTSTRAP);
            rc = VV_ECONFIG_RANGE;
            break;
        }
        char *at = strchr(tok, '@');
        if (at != NULL) {
            uint8_t id[VV_NODE_ID_BYTES];
            *at = '\0';
            if (strlen(tok) != 2 * VV_NODE_ID_BYTES || vv_hex_decode(tok, id, sizeof(id)) != 0) {
                snprintf(why, why_len, "bootstrap peer '%.80s': node ID must be 64 hex digits",
                         tok);
                rc = VV_ECONFIG_VALUE;
                break;
            }
            tok = at + 1;
        }
        char host[256];
        uint16_t port;
        if (vv_config_split_hostport(tok, host, sizeof(host), &port) != 0 || port == 0) {
            snprintf(why, why_len, "bootstrap peer '%.80s': expected host:port or nodeid@host:port",
                     tok);
            rc = VV_ECONFIG_VALUE;
            break;
        }
        if (strlen(tok) > VV_NET_ADDRESS_MAX_BYTES) {
            /* The connection manager would drop it at start-up with only a warning. */
            snprintf(why, why_len, "bootstrap peer '%.80s': longer than %zu bytes", tok,
                     (size_t)VV_NET_ADDRESS_MAX_BYTES);
            rc = VV_ECONFIG_RANGE;
            break;
        }
    }
    vv_free(copy);
    return rc;
}

static int check_section(const void *values, char *why, size_t why_len, const char **a,
                         const char **b)
{
    const struct vv_net_settings *c = values;
    if (c->low_water <= c->high_water && c->high_water <= c->max_connections)
        return 0;
    snprintf(why, why_len, "[net] needs low_water (%u) <= high_water (%u) <= max_connections (%u)",
             c->low_water, c->high_water, c->max_connections);
    *a = "high_water";
    *b = c->low_water > c->high_water ? "low_water" : "max_connections";
    return VV_ECONFIG_RANGE;
}

#define S struct vv_net_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_TEXT_KEY(S, listen, "0.0.0.0:4747", vv_config_check_listen, false,
                       "IP address and port this node accepts peer connections (TCP) and "
                       "datagrams (UDP, the same port) on (IPv6 as [::]:4747); host names are "
                       "not resolved."),
    VV_CONFIG_TEXT_KEY(S, bootstrap, "", check_bootstrap, false,
                       "Peers to join the network through: comma-separated host:port or "
                       "nodeid@host:port (the node ID is 64 hex digits; with it, a peer "
                       "answering with another identity is refused). Host names are resolved "
                       "without blocking. At most 64 entries of at most 127 bytes each."),
    VV_CONFIG_BOOL_KEY(S, mdns, "false", false,
                       "Discover peers on the local network with mDNS: true or false."),
    VV_CONFIG_U32_KEY(S, max_connections, "1024", 1, 100000, false,
                      "Most peer connections kept open at once (1 to 100000)."),
    VV_CONFIG_TEXT_KEY(S, advertise, "", check_advertise, false,
                       "The address other peers should dial to reach this node (host:port), "
                       "when it differs from listen (listening on 0.0.0.0, behind NAT). Empty: "
                       "the listen address, unless its host is 0.0.0.0 or [::], in which case "
                       "this node does not advertise an address. At most 127 bytes: peers "
                       "refuse a longer hello."),
    VV_CONFIG_U32_KEY(S, low_water, "32", 1, 100000, false,
                      "Dial until this many peers are connected. low_water <= high_water <= "
                      "max_connections."),
    VV_CONFIG_U32_KEY(S, high_water, "64", 1, 100000, false,
                      "Above this many peers, trim the least useful (never protected or "
                      "bootstrap peers) back to low_water."),
    VV_CONFIG_U32_KEY(S, max_half_open, "256", 1, 100000, false,
                      "Connections still in their handshake at once; more are refused."),
    VV_CONFIG_U32_KEY(S, handshake_timeout_ms, "5000", 100, 600000, false,
                      "How long a handshake may take before the connection is closed."),
    VV_CONFIG_U32_KEY(S, peer_queue_bytes, "8388608", 65536, 1u << 30, false,
                      "Outbound bytes queued for one peer before sends to it fail (a peer that "
                      "does not read costs at most this)."),
    VV_CONFIG_U32_KEY(S, memory_budget_mb, "256", 1, 1u << 20, false,
                      "The memory all peer queues and partly received frames may use together, "
                      "in MiB."),
    VV_CONFIG_U32_KEY(S, keepalive_ms, "15000", 100, 3600000, false,
                      "Ping period for each peer; a peer silent for three periods is dropped."),
    VV_CONFIG_U32_KEY(S, reconnect_max_ms, "300000", 100, 86400000, false,
                      "The longest wait between attempts to re-dial a peer that failed "
                      "(backoff doubles up to this)."),
    VV_CONFIG_U32_KEY(S, grace_period_ms, "30000", 0, 600000, false,
                      "A new connection is not trimmed for this long (ms): time to measure its "
                      "round-trip time and to be tagged by the module it came for. 0: no grace. "
                      "A node with more than twice high_water connected trims young untagged "
                      "peers after a sixteenth of it."),
    VV_CONFIG_U32_KEY(S, max_tagged_peers, "1024", 1, 100000, false,
                      "Peers the modules may ask for and tag at once (CRDT replicas, pubsub "
                      "mesh, ...); tagged peers are trimmed last. At most half the address book "
                      "(4096 peers) is used whatever the value."),
    VV_CONFIG_U32_KEY(S, request_max_per_peer, "64", 1, 65536, true,
                      "Requests this node's modules may have in flight to one peer; more are "
                      "refused at once."),
    VV_CONFIG_U32_KEY(S, request_max_total, "4096", 1, 1048576, true,
                      "Requests in flight from this node to all peers together."),
    VV_CONFIG_U32_KEY(S, serve_max_per_peer, "64", 1, 65536, true,
                      "One peer's requests in service here at once; more are answered busy. "
                      "Keep it at least the peers' request_max_per_peer."),
    VV_CONFIG_U32_KEY(S, serve_max_total, "4096", 1, 1048576, true,
                      "All peers' requests in service here at once."),
};
#undef S

const struct vv_config_section vv_net_settings_section =
    VV_CONFIG_SECTION("net", NULL, struct vv_net_settings, keys, check_section);

const struct vv_net_settings *vv_net_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_net_settings_section);
}
