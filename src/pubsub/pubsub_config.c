/* [pubsub]: the gossip router's parameters (docs/pubsub.md gives the reason for each). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/pubsub.h"

/* A finite decimal number; sign says which are allowed (-1: <= 0, 1: >= 0). */
static int check_number(const char *v, int sign, char *why, size_t why_len)
{
    char *end = NULL;
    double x = strtod(v, &end);
    if (*v == '\0' || end == NULL || *end != '\0' || !isfinite(x)) {
        snprintf(why, why_len, "expected a decimal number, got '%.40s'", v);
        return VV_ECONFIG_VALUE;
    }
    if ((sign < 0 && x > 0) || (sign > 0 && x < 0)) {
        snprintf(why, why_len, "must be %s 0", sign < 0 ? "at most" : "at least");
        return VV_ECONFIG_RANGE;
    }
    return 0;
}

static int check_nonpositive(const char *v, char *why, size_t why_len)
{
    return check_number(v, -1, why, why_len);
}

static int check_nonnegative(const char *v, char *why, size_t why_len)
{
    return check_number(v, 1, why, why_len);
}

void vv_pubsub_config_from_settings(const struct vv_pubsub_settings *s, struct vv_pubsub_config *c)
{
    vv_pubsub_config_defaults(c);
    c->d = s->d;
    c->d_lo = s->d_lo;
    c->d_hi = s->d_hi;
    c->d_lazy = s->d_lazy;
    c->d_score = s->d_score;
    c->heartbeat_ms = s->heartbeat_ms;
    c->heartbeat_slice_topics = s->heartbeat_slice_topics;
    c->fanout_ttl_ms = s->fanout_ttl_ms;
    c->mcache_len = s->mcache_len;
    c->mcache_gossip = s->mcache_gossip;
    c->mcache_max_bytes = (size_t)s->mcache_max_mb << 20;
    c->seen_ttl_ms = s->seen_ttl_ms;
    c->max_seen = s->max_seen;
    c->max_ihave_length = s->max_ihave_length;
    c->max_ihave_messages = s->max_ihave_messages;
    c->max_peer_topics = s->max_peer_topics;
    c->max_known_topics = s->max_known_topics;
    c->max_joined_topics = s->max_joined_topics;
    c->max_message_bytes = s->max_message_bytes;
    c->idontwant_min_bytes = s->idontwant_min_bytes;
    c->lazy_min_bytes = s->lazy_min_bytes;
    c->unchoked_peers = s->unchoked_peers;
    c->announce_wait_ms = s->announce_wait_ms;
    c->pull_timeout_ms = s->pull_timeout_ms;
    c->prune_backoff_ms = s->prune_backoff_ms;
    c->flood_publish = s->flood_publish;
    c->thresholds.gossip = strtod(s->gossip_threshold, NULL);
    c->thresholds.publish = strtod(s->publish_threshold, NULL);
    c->thresholds.graylist = strtod(s->graylist_threshold, NULL);
    c->thresholds.accept_px = strtod(s->accept_px_threshold, NULL);
    c->thresholds.opportunistic_graft = strtod(s->opportunistic_graft_threshold, NULL);
}

/* The router's own check, on the values the keys' ranges let through. */
static int check_section(const void *values, char *why, size_t why_len, const char **a,
                         const char **b)
{
    struct vv_pubsub_config c;
    vv_pubsub_config_from_settings(values, &c);
    char inner[160];
    if (vv_pubsub_config_check(&c, inner, sizeof(inner)) == 0)
        return 0;
    snprintf(why, why_len,
             "[pubsub] %s (d_lo <= d <= d_hi, d_score <= d, mcache_gossip <= "
             "mcache_len, graylist < publish <= gossip <= 0)",
             inner);
    *a = "d";
    *b = "gossip_threshold";
    return VV_ECONFIG_RANGE;
}

#define S struct vv_pubsub_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_U32_KEY(S, d, "6", 1, 64, false,
                      "Mesh degree: peers each joined topic's messages are forwarded to."),
    VV_CONFIG_U32_KEY(S, d_lo, "5", 1, 64, false, "Below this many mesh peers, graft up to d."),
    VV_CONFIG_U32_KEY(S, d_hi, "12", 1, 128, false, "Above this many mesh peers, prune down to d."),
    VV_CONFIG_U32_KEY(S, d_lazy, "6", 0, 128, false,
                      "Peers outside the mesh told of recent messages (IHAVE) each heartbeat, "
                      "per topic, at least."),
    VV_CONFIG_U32_KEY(S, d_score, "4", 0, 64, false,
                      "When pruning, the best-scored mesh peers always kept (at most d)."),
    VV_CONFIG_U32_KEY(S, heartbeat_ms, "1000", 100, 60000, false,
                      "Mesh maintenance and gossip period (ms)."),
    VV_CONFIG_U32_KEY(S, heartbeat_slice_topics, "256", 1, 1000000, false,
                      "Joined or published-to topics one heartbeat maintains per event-loop "
                      "turn; the rest follow in later turns, so that thousands of topics never "
                      "hold the loop for long."),
    VV_CONFIG_U32_KEY(S, fanout_ttl_ms, "60000", 1000, 3600000, false,
                      "How long peers chosen to publish to a topic this node did not join are "
                      "kept after its last publication (ms)."),
    VV_CONFIG_U32_KEY(S, mcache_len, "5", 1, 100, false,
                      "Heartbeats a message stays in the cache that answers IWANT."),
    VV_CONFIG_U32_KEY(S, mcache_gossip, "3", 1, 100, false,
                      "Heartbeats a message is announced in IHAVE (at most mcache_len)."),
    VV_CONFIG_U32_KEY(S, mcache_max_mb, "64", 1, 65536, false,
                      "MiB the message cache may hold; past it the oldest messages go."),
    VV_CONFIG_U32_KEY(S, seen_ttl_ms, "120000", 1000, 3600000, false,
                      "How long a message ID is remembered so the message is handled once (ms)."),
    VV_CONFIG_U32_KEY(S, max_seen, "1000000", 1000, 100000000, false,
                      "Message IDs remembered at most (about 48 bytes each)."),
    VV_CONFIG_U32_KEY(S, max_ihave_length, "5000", 1, 5000, false,
                      "Message IDs in one IHAVE we send, and asked of one peer per heartbeat."),
    VV_CONFIG_U32_KEY(S, max_ihave_messages, "10", 1, 1000, false,
                      "IHAVE messages read from one peer per heartbeat; more are ignored."),
    VV_CONFIG_U32_KEY(S, max_peer_topics, "1000", 1, 100000, false,
                      "Topics one peer may be known subscribed to here; more are ignored."),
    VV_CONFIG_U32_KEY(S, max_known_topics, "10000", 1, 1000000, false,
                      "Topics known from all peers together; subscriptions to new ones past it "
                      "are ignored."),
    VV_CONFIG_U32_KEY(S, max_joined_topics, "10000", 1, 1000000, false,
                      "Topics this node subscribes to at most."),
    VV_CONFIG_U32_KEY(S, max_message_bytes, "1044480", 0, 1044480, false,
                      "Largest message data for topics without their own limit (at most 1 MiB "
                      "less 4 KiB, so that a message fits in one frame)."),
    VV_CONFIG_U32_KEY(S, idontwant_min_bytes, "1024", 0, 1044480, false,
                      "Messages at least this large are announced to the mesh with IDONTWANT "
                      "as soon as they arrive, so that they are not sent here twice."),
    VV_CONFIG_U32_KEY(S, lazy_min_bytes, "512", 0, 1044480, false,
                      "Messages at least this large are sent in full only to the mesh peers "
                      "that have not choked this node; the others get an announcement (IHAVE) "
                      "and pull the message if they need it."),
    VV_CONFIG_U32_KEY(S, unchoked_peers, "2", 0, 64, false,
                      "Mesh peers per topic that keep sending this node large messages in "
                      "full, those that delivered first lately; the others are choked and only "
                      "announce them. 0: choke none (every mesh peer sends everything)."),
    VV_CONFIG_U32_KEY(S, announce_wait_ms, "10", 0, 10000, false,
                      "How long an announced message is awaited from the unchoked peers before "
                      "it is pulled from an announcer (ms)."),
    VV_CONFIG_U32_KEY(S, pull_timeout_ms, "250", 10, 60000, false,
                      "A pull not answered within this goes to the next announcer (ms)."),
    VV_CONFIG_U32_KEY(S, prune_backoff_ms, "60000", 1000, 86400000, false,
                      "How long a pruned peer may not graft again (ms)."),
    VV_CONFIG_BOOL_KEY(S, flood_publish, "true", false,
                       "Send this node's own messages to every subscriber above the publish "
                       "threshold, not only to the mesh: true or false."),
    VV_CONFIG_TEXT_KEY(S, gossip_threshold, "-10", check_nonpositive, false,
                       "Peers scoring below this get no gossip from us and are not heard in "
                       "theirs (at most 0)."),
    VV_CONFIG_TEXT_KEY(S, publish_threshold, "-50", check_nonpositive, false,
                       "Peers scoring below this are left out of flood publishing (at most "
                       "gossip_threshold)."),
    VV_CONFIG_TEXT_KEY(S, graylist_threshold, "-80", check_nonpositive, false,
                       "Peers scoring below this are not heard at all (below "
                       "publish_threshold)."),
    VV_CONFIG_TEXT_KEY(S, accept_px_threshold, "10", check_nonnegative, false,
                       "Peer exchange in a PRUNE is followed only from peers scoring at least "
                       "this."),
    VV_CONFIG_TEXT_KEY(S, opportunistic_graft_threshold, "2", check_nonnegative, false,
                       "When a mesh's median score falls below this, better peers are grafted "
                       "(every 60 heartbeats)."),
    VV_CONFIG_U32_KEY(S, max_subscriptions, "4096", 1, 1000000, true,
                      "RPC subscriptions (pubsub.subscribe) held at once, all clients "
                      "together; more are refused."),
    VV_CONFIG_U32_KEY(S, max_client_subscriptions, "1024", 1, 1000000, true,
                      "RPC subscriptions one client connection may hold at once (at most "
                      "max_subscriptions counts); more are refused, so that one client cannot "
                      "take them all."),
    VV_CONFIG_U32_KEY(S, max_retain, "1000", 0, 100000, true,
                      "The most messages a topic may keep for pubsub.history (its retain)."),
};
#undef S

const struct vv_config_section vv_pubsub_settings_section =
    VV_CONFIG_SECTION("pubsub", "Gossip publish/subscribe (GossipSub v1.1 with IDONTWANT).",
                      struct vv_pubsub_settings, keys, check_section);

const struct vv_pubsub_settings *vv_pubsub_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_pubsub_settings_section);
}
