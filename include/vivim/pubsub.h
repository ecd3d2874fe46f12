/*
 * The gossip pubsub router on vv_env (channel 2): GossipSub v1.1 with v1.2's IDONTWANT,
 * sans-I/O like the CRDT engine, so one vivimd and a simulated network of thousands run the
 * same code (docs/pubsub.md).
 *
 * What it does:
 *  - announces this node's topics to every connected peer (SUBSCRIPTIONS) and tracks theirs;
 *  - keeps a mesh of D peers per joined topic (heartbeat: graft under D_lo, prune over
 *    D_hi keeping the D_score best by score, opportunistic grafting when the mesh's median
 *    score falls under its threshold), fanout for topics published to but not joined;
 *  - forwards each valid message once to its mesh, gossips the IDs of recent messages
 *    (IHAVE) to D_lazy other peers per heartbeat and answers IWANT from the message cache;
 *    sends IDONTWANT to its mesh for messages of at least idontwant_min_bytes as soon as they
 *    arrive, and never sends a peer what it said it does not want;
 *  - lazy push: keeps unchoked_peers mesh peers per topic sending it large messages in full
 *    and chokes the others (CHOKE), which then announce those messages (IHAVE) as they get
 *    them; what the unchoked peers fail to bring within announce_wait_ms is pulled (IWANT)
 *    from an announcer, the next one after pull_timeout_ms;
 *  - checks every message's signature off the loop (vivim/env_verify.h) before delivering or
 *    forwarding it, then the topic's policy (size, publishers) and the module's validator
 *    (accept, reject: penalised, ignore);
 *  - scores peers (P1..P4, P7; P5 from the module) and applies the thresholds: below gossip
 *    no gossip either way, below publish no flood publishing to them, below graylist
 *    everything from them is dropped;
 *  - tags its mesh peers in the connection manager (vv_env_want_peer, tag "pubsub") so
 *    trimming leaves them.
 *
 * Not yet: D_out (outbound quota; vv_env does not tell a connection's direction), P6 (IP
 * colocation; vv_env does not tell a peer's address), retention and history.
 *
 * Bounds: topics one peer may announce (max_peer_topics), topics known from all peers
 * (max_known_topics), IHAVE messages and IWANT IDs per peer per heartbeat, the message and
 * seen caches, the backoff table, signature checks in flight (the env's), and per-peer send
 * queues (the env refuses sends past a peer's queue bound: that peer loses the message,
 * counted, and our memory does not grow).
 */
#ifndef VIVIM_PUBSUB_H
#define VIVIM_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"
#include "vivim/pubsub_core.h"
#include "vivim/pubsub_wire.h"

struct vv_pubsub_config {
    uint32_t d, d_lo, d_hi, d_lazy, d_score; /* 6, 5, 12, 6, 4 */
    uint32_t heartbeat_ms;                   /* 1,000 */
    uint32_t heartbeat_slice_topics;         /* active topics maintained per loop turn (256) */
    uint32_t fanout_ttl_ms;                  /* 60,000 */
    uint32_t mcache_len, mcache_gossip;      /* 5, 3 */
    uint32_t seen_ttl_ms;                    /* 120,000 */
    uint32_t max_seen;                       /* 1,000,000 IDs */
    size_t mcache_max_bytes;                 /* 64 MiB */
    double gossip_factor;                    /* 0.25 */
    uint32_t max_ihave_length;          /* IDs per IHAVE we send, and asked of one peer per hb */
    uint32_t max_ihave_messages;        /* IHAVE from one peer per heartbeat that we read (10) */
    uint32_t gossip_retransmission;     /* a message sent per IWANT to one peer at most (3) */
    uint32_t max_peer_topics;           /* topics one peer may be subscribed to here (1,000) */
    uint32_t max_known_topics;          /* topics known from all peers (10,000) */
    uint32_t max_joined_topics;         /* topics this node joins (10,000) */
    uint32_t max_message_bytes;         /* default for topics without their own (1 MiB - 4 KiB) */
    uint32_t idontwant_min_bytes;       /* 1,024 */
    uint32_t lazy_min_bytes;            /* 512: smaller messages go in full to the whole mesh */
    uint32_t unchoked_peers;            /* 2 mesh peers per topic send us large ones; 0: all */
    uint32_t announce_wait_ms;          /* 10: an announced message is pulled after this */
    uint32_t pull_timeout_ms;           /* 250: an IWANT unanswered this long goes elsewhere */
    uint32_t opportunistic_graft_ticks; /* 60 heartbeats */
    uint32_t opportunistic_graft_peers; /* 2 */
    uint32_t prune_peers;               /* PX entries in a PRUNE (16) */
    uint32_t prune_backoff_ms;          /* 60,000 */
    bool flood_publish;                 /* true */
    struct vv_pubsub_score_params score;
    struct vv_pubsub_topic_score_params topic_score; /* every joined topic's */
    struct vv_pubsub_score_thresholds thresholds;
};
void vv_pubsub_config_defaults(struct vv_pubsub_config *cfg);
/* 0, or VV_EINVAL with why (the degrees' order, zero periods) or VV_EPUBSUB_PARAMS. */
int vv_pubsub_config_check(const struct vv_pubsub_config *cfg, char *why, size_t why_len);

/* A topic's local policy (pubsub.createTopic). */
#define VV_PUBSUB_MAX_PUBLISHERS 256
struct vv_pubsub_topic_config {
    uint32_t max_message_bytes;                    /* 0: the router's default */
    const uint8_t (*publishers)[VV_NODE_ID_BYTES]; /* NULL: anyone; else only these */
    uint32_t n_publishers;                         /* <= VV_PUBSUB_MAX_PUBLISHERS */
    uint32_t retain;                               /* messages kept for history (not yet used) */
};

enum vv_pubsub_verdict {
    VV_PUBSUB_ACCEPT = 0,
    VV_PUBSUB_REJECT = 1, /* invalid: dropped, the peer that sent it penalised (P4) */
    VV_PUBSUB_IGNORE = 2, /* dropped without a penalty, not forwarded */
};

struct vv_pubsub_cbs {
    /* A valid message on a joined topic, once (this node's own included). m and id are
     * borrowed for the call. */
    void (*deliver)(void *arg, const struct vv_pubsub_msg *m, const uint8_t id[VV_PUBSUB_ID_BYTES]);
    /* Optional: the module's own check, after signature and topic policy. */
    enum vv_pubsub_verdict (*validate)(void *arg, const uint8_t peer[VV_NODE_ID_BYTES],
                                       const struct vv_pubsub_msg *m);
};

struct vv_pubsub_stats {
    uint64_t published, delivered, forwarded; /* forwarded: message copies sent to peers */
    uint64_t duplicates;                      /* messages already seen */
    uint64_t invalid_signature, rejected, ignored;
    uint64_t dropped_not_joined;  /* messages for topics we are not in */
    uint64_t dropped_too_large;   /* over the topic's size */
    uint64_t dropped_publisher;   /* origin not among the topic's publishers */
    uint64_t dropped_graylisted;  /* frames from peers under the graylist threshold */
    uint64_t dropped_verify_busy; /* the env's signature checks were full */
    uint64_t dropped_queue_full;  /* sends the env refused (a slow peer) */
    uint64_t bad_frames;          /* malformed frames from peers (penalised) */
    uint64_t ihave_sent, ihave_received, iwant_sent, iwant_received, iwant_served;
    uint64_t graft_sent, graft_received, prune_sent, prune_received;
    uint64_t idontwant_sent, idontwant_received, idontwant_saved; /* saved: sends skipped */
    uint64_t topics_refused;   /* subscriptions past max_peer_topics or max_known_topics */
    uint64_t heartbeat_topics; /* topics maintained (mesh, fanout, gossip) by heartbeats */
    uint64_t heartbeat_slices; /* loop turns the heartbeats took (heartbeat_slice_topics) */
    uint64_t announce_sent;    /* IHAVE sent to a choking mesh peer instead of the message */
    uint64_t announce_received, pulls; /* announced IDs taken; IWANT sent for them */
    uint64_t choke_sent, unchoke_sent; /* CHOKE entries sent */
    uint64_t verifying;                /* signature checks in flight now */
};

struct vv_pubsub;

/* Starts the router on env (it takes channel 2). cfg NULL: defaults. NULL when cfg fails
 * vv_pubsub_config_check. */
struct vv_pubsub *vv_pubsub_new(struct vv_env *env, const struct vv_pubsub_config *cfg,
                                const struct vv_pubsub_cbs *cbs, void *arg);
/* Stops: cancels its checks and timer, releases its peer tags, frees. ps may be NULL. */
void vv_pubsub_free(struct vv_pubsub *ps);

/* Sets a topic's local policy (copied). VV_EINVAL for a bad topic or config. */
int vv_pubsub_create_topic(struct vv_pubsub *ps, const char *topic, size_t len,
                           const struct vv_pubsub_topic_config *cfg);
/* Forgets the policy and leaves the topic. */
int vv_pubsub_delete_topic(struct vv_pubsub *ps, const char *topic, size_t len);
/* Subscribes this node: announces it, builds a mesh, delivers the topic's messages.
 * VV_ELIMIT past max_joined_topics. Joining twice is fine. */
int vv_pubsub_join(struct vv_pubsub *ps, const char *topic, size_t len);
int vv_pubsub_leave(struct vv_pubsub *ps, const char *topic, size_t len);
bool vv_pubsub_joined(const struct vv_pubsub *ps, const char *topic, size_t len);

/*
 * Publishes data on topic (joined or not: then through fanout). Signs with the env's
 * identity. id_out (may be NULL) receives the message ID, *peers (may be NULL) the peers it
 * was sent to. Returns 0, VV_EINVAL (bad topic), VV_EPUBSUB_TOO_LARGE... (VV_ELIMIT: over the
 * topic's size).
 */
int vv_pubsub_publish(struct vv_pubsub *ps, const char *topic, size_t len, const uint8_t *data,
                      size_t data_len, uint8_t id_out[VV_PUBSUB_ID_BYTES], uint32_t *peers);

/*
 * Hands the router a channel-2 frame as if peer had sent it (the module's history sync:
 * messages a mesh peer kept, fetched by request). It goes through every check a frame from
 * that peer meets, the seen cache included.
 */
void vv_pubsub_inject(struct vv_pubsub *ps, const uint8_t peer[VV_NODE_ID_BYTES],
                      const uint8_t *frame, size_t len);

/* The module's own opinion of a peer (P5). */
void vv_pubsub_set_app_score(struct vv_pubsub *ps, const uint8_t peer[VV_NODE_ID_BYTES],
                             double value);

const struct vv_pubsub_stats *vv_pubsub_stats(const struct vv_pubsub *ps);
/* Mesh peers of a joined topic (0 otherwise); peers known subscribed to a topic. */
uint32_t vv_pubsub_mesh_size(const struct vv_pubsub *ps, const char *topic, size_t len);
uint32_t vv_pubsub_topic_peers(const struct vv_pubsub *ps, const char *topic, size_t len);
/* Topics the router holds state for: joined, with a policy, published to, or known from a
 * peer's subscription (peers' new topics are refused past max_known_topics). */
uint32_t vv_pubsub_known_topics(const struct vv_pubsub *ps);
/* Writes up to max mesh peers' IDs; returns how many. */
uint32_t vv_pubsub_mesh_peers(const struct vv_pubsub *ps, const char *topic, size_t len,
                              uint8_t (*out)[VV_NODE_ID_BYTES], uint32_t max);
double vv_pubsub_peer_score(const struct vv_pubsub *ps, const uint8_t peer[VV_NODE_ID_BYTES]);
/* The scores of the connected peers: the lowest, the mean, and how many are graylisted
 * (each may be NULL; 0 when there are none). Returns how many peers. Cost: one score per
 * peer (for a metrics scrape). */
uint32_t vv_pubsub_score_summary(const struct vv_pubsub *ps, double *min, double *mean,
                                 uint32_t *below_graylist);
/* Topics this node joined, in the order joined: the i-th (NULL past the end). */
const char *vv_pubsub_joined_topic(const struct vv_pubsub *ps, uint32_t i, size_t *len);

/* ---- the module (src/pubsub/pubsub_module.c) ------------------------------------------ */

struct vv_module;
extern const struct vv_module vv_pubsub_module;

/* RPC subscriptions (pubsub.subscribe) held at once, all clients together. */
#define VV_PUBSUB_MAX_RPC_SUBSCRIPTIONS_DEFAULT 4096

/* [pubsub] in vivimd.conf (src/pubsub/pubsub_config.c). */
struct vv_pubsub_settings {
    uint32_t d, d_lo, d_hi, d_lazy, d_score;
    uint32_t heartbeat_ms, heartbeat_slice_topics, fanout_ttl_ms;
    uint32_t mcache_len, mcache_gossip, mcache_max_mb;
    uint32_t seen_ttl_ms, max_seen;
    uint32_t max_ihave_length, max_ihave_messages;
    uint32_t max_peer_topics, max_known_topics, max_joined_topics;
    uint32_t max_message_bytes, idontwant_min_bytes;
    uint32_t lazy_min_bytes, unchoked_peers, announce_wait_ms, pull_timeout_ms;
    uint32_t prune_backoff_ms;
    bool flood_publish;
    /* Score thresholds, decimal numbers as text (checked when loaded). */
    char *gossip_threshold, *publish_threshold, *graylist_threshold;
    char *accept_px_threshold, *opportunistic_graft_threshold;
    uint32_t max_subscriptions;        /* RPC subscriptions, all clients */
    uint32_t max_client_subscriptions; /* RPC subscriptions of one client connection */
    uint32_t max_retain;               /* a topic's retain (pubsub.createTopic) at most */
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_pubsub_settings_section;
const struct vv_pubsub_settings *vv_pubsub_settings(const struct vv_config *c);
/* The router's configuration from [pubsub]. */
void vv_pubsub_config_from_settings(const struct vv_pubsub_settings *s,
                                    struct vv_pubsub_config *cfg);

#endif
