/*
 * The pubsub core's state: message cache, seen cache, PRUNE backoff, IDONTWANT sets and
 * peer scores, in the manner of GossipSub v1.1 and v1.2 (docs/pubsub.md).
 *
 * Pure and sans-I/O: no clock, no randomness, no sockets. Every call that depends on time
 * takes `now` in milliseconds of a monotonic clock (vv_env's); every structure is bounded
 * (its limit is a parameter, what it pushes out or refuses is counted), and every table
 * keyed by something a peer chooses (message IDs, node IDs, topics, IPs) hashes with the
 * process's secret key (keyed_hash.h). Single-threaded: the router calls all of these on the
 * loop thread.
 */
#ifndef VIVIM_PUBSUB_CORE_H
#define VIVIM_PUBSUB_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/identity.h"
#include "vivim/pubsub_wire.h"

struct vv_pubsub_mcache;
struct vv_pubsub_seen;
struct vv_pubsub_idontwant;
struct vv_pubsub_backoff;
struct vv_pubsub_score;

/* ---- a reference-counted byte buffer -------------------------------------------------------
 * A message is encoded once into a frame and that frame is shared by the message cache and
 * every peer queue it goes to. */
struct vv_pubsub_rbuf {
    uint32_t refs;
    size_t len;
    uint8_t bytes[];
};

/* A copy of (bytes, len) with one reference. */
struct vv_pubsub_rbuf *vv_pubsub_rbuf_new(const void *bytes, size_t len);
struct vv_pubsub_rbuf *vv_pubsub_rbuf_ref(struct vv_pubsub_rbuf *b);
/* Drops one reference; frees at zero. b may be NULL. */
void vv_pubsub_rbuf_unref(struct vv_pubsub_rbuf *b);

/* ---- message cache (mcache) ----------------------------------------------------------------
 * The messages of the last history_length heartbeats, for answering IWANT, and the IDs of
 * the last gossip_length of them, for IHAVE. put adds to the current window, shift (once per
 * heartbeat) opens a new one and forgets the oldest. Bounded in bytes and in entries: beyond
 * either, the oldest entries go first (counted in evicted). */
struct vv_pubsub_mcache_config {
    uint32_t history_length; /* windows kept: 5 (GossipSub's mcache_len) */
    uint32_t gossip_length;  /* windows gossiped: 3 (mcache_gossip), at most history_length */
    size_t max_bytes;        /* frames, topics and entries together */
    uint32_t max_entries;
};

struct vv_pubsub_mcache_stats {
    uint32_t entries;
    size_t bytes;
    uint64_t evicted; /* pushed out by max_bytes or max_entries before their time */
    uint64_t expired; /* left by shift after history_length windows */
};

void vv_pubsub_mcache_config_defaults(struct vv_pubsub_mcache_config *cfg);
/* Returns 0 or VV_EINVAL (a window count of 0, gossip_length > history_length). */
int vv_pubsub_mcache_new(const struct vv_pubsub_mcache_config *cfg, struct vv_pubsub_mcache **out);
void vv_pubsub_mcache_free(struct vv_pubsub_mcache *mc);
/*
 * Caches the message with this ID on topic, its encoded frame taking a reference to frame.
 * Returns 0; VV_EEXIST when the ID is cached already (no reference taken); VV_ELIMIT when the
 * one entry is larger than max_bytes (no reference taken).
 */
int vv_pubsub_mcache_put(struct vv_pubsub_mcache *mc, const uint8_t id[VV_PUBSUB_ID_BYTES],
                         const char *topic, size_t topic_len, struct vv_pubsub_rbuf *frame);
/* The cached frame (borrowed: take a reference to keep it past the next put or shift), or
 * NULL. */
struct vv_pubsub_rbuf *vv_pubsub_mcache_get(const struct vv_pubsub_mcache *mc,
                                            const uint8_t id[VV_PUBSUB_ID_BYTES]);
/*
 * Writes the IDs of the topic's messages in the last gossip_length windows, newest first, at
 * most cap of them, into out; returns how many. Cost: the entries of those windows.
 */
uint32_t vv_pubsub_mcache_gossip_ids(const struct vv_pubsub_mcache *mc, const char *topic,
                                     size_t topic_len, uint8_t (*out)[VV_PUBSUB_ID_BYTES],
                                     uint32_t cap);
/* Once per heartbeat: a new window; the entries of the one past history_length go. */
void vv_pubsub_mcache_shift(struct vv_pubsub_mcache *mc);
void vv_pubsub_mcache_stats(const struct vv_pubsub_mcache *mc, struct vv_pubsub_mcache_stats *st);

/* ---- seen cache -----------------------------------------------------------------------------
 * The IDs of messages seen in the last ttl_ms, so that a message is delivered and forwarded
 * once. At most max_entries: a full cache forgets its oldest ID first (counted). */
#define VV_PUBSUB_SEEN_TTL_MS 120000 /* GossipSub's seen_ttl: two minutes */

void vv_pubsub_seen_new(uint64_t ttl_ms, uint32_t max_entries, struct vv_pubsub_seen **out);
void vv_pubsub_seen_free(struct vv_pubsub_seen *s);
/* Records id as seen at now. Returns 0 when it was new, VV_EEXIST when it was seen within the
 * TTL (a duplicate; its expiry is not extended). */
int vv_pubsub_seen_add(struct vv_pubsub_seen *s, const uint8_t id[VV_PUBSUB_ID_BYTES],
                       uint64_t now);
bool vv_pubsub_seen_has(const struct vv_pubsub_seen *s, const uint8_t id[VV_PUBSUB_ID_BYTES],
                        uint64_t now);
/* Forgets id: for a message whose signature then failed, so that the genuine message with
 * the same ID (the ID does not cover the signature) is still accepted from another peer. */
void vv_pubsub_seen_remove(struct vv_pubsub_seen *s, const uint8_t id[VV_PUBSUB_ID_BYTES]);
/* Removes at most max_work expired IDs, oldest first; returns how many. Call it every tick
 * with a small max_work: the work is sliced, never a pause. */
uint32_t vv_pubsub_seen_sweep(struct vv_pubsub_seen *s, uint64_t now, uint32_t max_work);
uint32_t vv_pubsub_seen_count(const struct vv_pubsub_seen *s);
/* IDs forgotten early because the cache was full. */
uint64_t vv_pubsub_seen_evicted(const struct vv_pubsub_seen *s);

/* ---- IDONTWANT (v1.2) -----------------------------------------------------------------------
 * One per peer: the IDs that peer told us it has (IDONTWANT), which we must not send it.
 * An ID is kept ttl_heartbeats heartbeats. A peer may add max_per_heartbeat IDs per
 * heartbeat; beyond that its IDONTWANT are ignored (counted): it gets a duplicate, which is
 * harmless, and our memory stays bounded by max_per_heartbeat * ttl_heartbeats per peer. */
struct vv_pubsub_idontwant_config {
    uint32_t ttl_heartbeats;    /* 3 */
    uint32_t max_per_heartbeat; /* 1,000 IDs */
};

void vv_pubsub_idontwant_config_defaults(struct vv_pubsub_idontwant_config *cfg);
/* Allocates nothing for the IDs until the first add. */
void vv_pubsub_idontwant_new(const struct vv_pubsub_idontwant_config *cfg,
                             struct vv_pubsub_idontwant **out);
void vv_pubsub_idontwant_free(struct vv_pubsub_idontwant *d);
/* Returns 0, VV_EEXIST (already held; the expiry is not extended) or VV_ELIMIT (over this
 * heartbeat's quota: ignored). */
int vv_pubsub_idontwant_add(struct vv_pubsub_idontwant *d, const uint8_t id[VV_PUBSUB_ID_BYTES]);
/* True when the peer said it does not want id: skip sending it. */
bool vv_pubsub_idontwant_has(const struct vv_pubsub_idontwant *d,
                             const uint8_t id[VV_PUBSUB_ID_BYTES]);
/* Once per heartbeat: IDs older than ttl_heartbeats go, the quota refills. */
void vv_pubsub_idontwant_heartbeat(struct vv_pubsub_idontwant *d);
uint32_t vv_pubsub_idontwant_count(const struct vv_pubsub_idontwant *d);
uint64_t vv_pubsub_idontwant_refused(const struct vv_pubsub_idontwant *d);

/* ---- PRUNE backoff (v1.1) -------------------------------------------------------------------
 * (peer, topic) pairs that must not GRAFT each other until an expiry: set when we PRUNE a
 * peer (both sides keep the backoff) or a peer PRUNEs us (for the backoff it asked). */
struct vv_pubsub_backoff_config {
    uint64_t prune_backoff_ms; /* 60 s: the backoff when a PRUNE gives none */
    uint64_t graft_flood_ms;   /* 10 s: a GRAFT this soon after a PRUNE costs double */
    uint32_t max_entries;      /* pairs held at most */
};

void vv_pubsub_backoff_config_defaults(struct vv_pubsub_backoff_config *cfg);
void vv_pubsub_backoff_new(const struct vv_pubsub_backoff_config *cfg,
                           struct vv_pubsub_backoff **out);
void vv_pubsub_backoff_free(struct vv_pubsub_backoff *b);
/*
 * Backs (peer, topic) off until now + backoff_ms (0: prune_backoff_ms), or leaves a later
 * expiry in place. Returns 0, or VV_ELIMIT when max_entries pairs are held and none has
 * expired (the pair is not backed off; counted).
 */
int vv_pubsub_backoff_add(struct vv_pubsub_backoff *b, const uint8_t peer[VV_NODE_ID_BYTES],
                          const char *topic, size_t topic_len, uint64_t now, uint64_t backoff_ms);
bool vv_pubsub_backoff_active(const struct vv_pubsub_backoff *b,
                              const uint8_t peer[VV_NODE_ID_BYTES], const char *topic,
                              size_t topic_len, uint64_t now);
/* Milliseconds left, 0 when none. */
uint64_t vv_pubsub_backoff_remaining(const struct vv_pubsub_backoff *b,
                                     const uint8_t peer[VV_NODE_ID_BYTES], const char *topic,
                                     size_t topic_len, uint64_t now);
/*
 * A GRAFT from peer on topic arrived. Returns 0 when no backoff holds (the GRAFT may be
 * accepted; *penalty = 0). Otherwise VV_EPUBSUB_BACKOFF: the GRAFT is refused (answer
 * PRUNE), *penalty is the behaviour penalty to apply (1, or 2 when the GRAFT came within
 * graft_flood_ms of the backoff being set), and the backoff is extended to at least
 * now + prune_backoff_ms, so a peer that keeps grafting keeps itself out.
 */
int vv_pubsub_backoff_on_graft(struct vv_pubsub_backoff *b, const uint8_t peer[VV_NODE_ID_BYTES],
                               const char *topic, size_t topic_len, uint64_t now,
                               uint32_t *penalty);
/* Removes at most max_work expired pairs (examining at most 4 * max_work); returns how
 * many. */
uint32_t vv_pubsub_backoff_sweep(struct vv_pubsub_backoff *b, uint64_t now, uint32_t max_work);
uint32_t vv_pubsub_backoff_count(const struct vv_pubsub_backoff *b);

/* ---- peer score (v1.1) ----------------------------------------------------------------------
 * score = min(Σ_topics topic_weight · (w1·P1 + w2·P2 + w3·P3 + w3b·P3b + w4·P4), topic_score_cap)
 *         + w5·P5 + w6·P6 + w7·P7
 * (the cap bounds a positive sum only; 0 = no cap). docs/pubsub.md gives each term. */
struct vv_pubsub_topic_score_params {
    double topic_weight; /* >= 0 */
    /* P1: time in mesh, in quanta, capped. */
    double time_in_mesh_weight; /* >= 0 */
    uint64_t time_in_mesh_quantum_ms;
    double time_in_mesh_cap;
    /* P2: first deliveries of valid messages, decaying, capped. */
    double first_message_deliveries_weight; /* >= 0 */
    double first_message_deliveries_decay;  /* in (0, 1) */
    double first_message_deliveries_cap;
    /* P3: mesh delivery deficit squared, once the peer is in the mesh for activation_ms. */
    double mesh_message_deliveries_weight; /* <= 0 */
    double mesh_message_deliveries_decay;
    double mesh_message_deliveries_cap;
    double mesh_message_deliveries_threshold;
    uint64_t mesh_message_deliveries_window_ms; /* a duplicate this soon still counts */
    uint64_t mesh_message_deliveries_activation_ms;
    /* P3b: the deficit squared, accumulated when the peer leaves the mesh with one. */
    double mesh_failure_penalty_weight; /* <= 0 */
    double mesh_failure_penalty_decay;
    /* P4: invalid messages, squared. */
    double invalid_message_deliveries_weight; /* <= 0 */
    double invalid_message_deliveries_decay;
};

struct vv_pubsub_score_params {
    double topic_score_cap;                /* >= 0; 0: none */
    double app_specific_weight;            /* P5, >= 0 */
    double ip_colocation_factor_weight;    /* P6, <= 0 */
    double ip_colocation_factor_threshold; /* >= 1 when the weight is not 0 */
    double behaviour_penalty_weight;       /* P7, <= 0 */
    double behaviour_penalty_threshold;    /* >= 0 */
    double behaviour_penalty_decay;        /* in (0, 1) when the weight is not 0 */
    uint64_t decay_interval_ms;            /* >= 1,000; vv_pubsub_score_decay's period */
    double decay_to_zero;                  /* in (0, 1): a counter below it becomes 0 */
    uint64_t retain_score_ms;              /* a disconnected peer's non-positive score */
    uint32_t max_peers;                    /* peers scored, retained ones included */
    uint32_t max_topics;                   /* topics with parameters */
};

struct vv_pubsub_score_thresholds {
    double gossip;              /* < 0: below, no gossip to or from the peer */
    double publish;             /* < gossip: below, no flood-publishing to the peer */
    double graylist;            /* < publish: below, everything from the peer is ignored */
    double accept_px;           /* >= 0: PX only from peers above it */
    double opportunistic_graft; /* >= 0: graft better peers when the mesh median is below */
};

/* The spec's constraints on each set of parameters: 0 or VV_EPUBSUB_PARAMS. */
int vv_pubsub_score_params_check(const struct vv_pubsub_score_params *p);
int vv_pubsub_topic_score_params_check(const struct vv_pubsub_topic_score_params *p);
int vv_pubsub_score_thresholds_check(const struct vv_pubsub_score_thresholds *t);
/* The decay factor that takes a counter to decay_to_zero in decay_ms. */
double vv_pubsub_score_decay_factor(const struct vv_pubsub_score_params *p, uint64_t decay_ms);

/* Returns 0 or VV_EPUBSUB_PARAMS (nothing allocated). */
int vv_pubsub_score_new(const struct vv_pubsub_score_params *p, struct vv_pubsub_score **out);
void vv_pubsub_score_free(struct vv_pubsub_score *s);
/* Scores a topic with these parameters (replacing earlier ones). Returns 0, VV_EPUBSUB_PARAMS
 * or VV_ELIMIT (max_topics). Events on topics without parameters count for nothing. */
int vv_pubsub_score_set_topic(struct vv_pubsub_score *s, const char *topic, size_t topic_len,
                              const struct vv_pubsub_topic_score_params *p);

/*
 * A peer connected from ip (16 bytes: IPv6, or IPv4 mapped ::ffff:a.b.c.d; NULL: unknown,
 * no colocation). A peer retained since it left gets its record back. Returns 0 or VV_ELIMIT
 * (max_peers held, none retained past its time).
 */
int vv_pubsub_score_add_peer(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             const uint8_t ip[16], uint64_t now);
/*
 * The peer disconnected. It leaves every mesh (with the P3b penalty a deficit earns) and its
 * first-delivery counters are cleared; a positive score is then forgotten at once, a
 * non-positive one is kept retain_score_ms, so leaving does not wash a penalty off.
 */
void vv_pubsub_score_remove_peer(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                                 uint64_t now);
void vv_pubsub_score_graft(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                           const char *topic, size_t topic_len, uint64_t now);
void vv_pubsub_score_prune(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                           const char *topic, size_t topic_len, uint64_t now);
/* The peer was the first to deliver a valid message (P2; and P3 when in the mesh). */
void vv_pubsub_score_first_delivery(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                                    const char *topic, size_t topic_len);
/* The peer delivered a valid message within the window after its first delivery (P3 when in
 * the mesh). The router counts each peer once per message. */
void vv_pubsub_score_near_first_delivery(struct vv_pubsub_score *s,
                                         const uint8_t peer[VV_NODE_ID_BYTES], const char *topic,
                                         size_t topic_len);
/* The peer delivered a message that failed validation (P4). */
void vv_pubsub_score_invalid(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             const char *topic, size_t topic_len);
/* Adds count to the peer's behaviour penalty counter (P7). */
void vv_pubsub_score_penalty(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             double count);
/* Sets the application-specific value (P5). */
void vv_pubsub_score_set_app(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             double value);
/* Once per decay_interval_ms: decays connected peers' counters (to 0 below decay_to_zero)
 * and forgets retained peers whose time is up. Retained scores do not decay. */
void vv_pubsub_score_decay(struct vv_pubsub_score *s, uint64_t now);
/* The peer's score; 0 for a peer not known. */
double vv_pubsub_score_get(const struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                           uint64_t now);
/* Peers held, connected and retained. */
uint32_t vv_pubsub_score_count(const struct vv_pubsub_score *s);

/* ---- mesh selection (v1.1 heartbeat) --------------------------------------------------------
 * What one heartbeat does to one topic's mesh, decided from the candidates' facts alone: the
 * router gathers them (connected peers subscribed to the topic), calls this, and sends the
 * GRAFTs and PRUNEs. Randomness comes from the caller (vv_env's, or a seeded generator in
 * the simulator), so the decision replays exactly. */
struct vv_pubsub_mesh_params {
    uint32_t d;                           /* 6: the degree aimed at */
    uint32_t d_lo;                        /* 5: graft up to d below this */
    uint32_t d_hi;                        /* 12: prune down to d above this */
    uint32_t d_score;                     /* 4: when pruning, the best-scored peers kept */
    uint32_t d_out;                       /* 2: outbound peers kept in the mesh at least */
    uint32_t opportunistic_graft_peers;   /* 2 */
    double opportunistic_graft_threshold; /* the score thresholds' opportunistic_graft */
};

struct vv_pubsub_mesh_candidate {
    double score;
    bool in_mesh;   /* in our mesh of the topic now */
    bool outbound;  /* we dialled the connection */
    bool graftable; /* not backed off, not a direct peer: may be grafted if its score allows */
};

enum vv_pubsub_mesh_decision {
    VV_PUBSUB_MESH_KEEP = 0, /* no change */
    VV_PUBSUB_MESH_GRAFT = 1,
    VV_PUBSUB_MESH_PRUNE = 2,
};

/* Returns a uniform integer in [0, bound); bound >= 1. */
typedef uint32_t (*vv_pubsub_rand_cb)(void *arg, uint32_t bound);

void vv_pubsub_mesh_params_defaults(struct vv_pubsub_mesh_params *p);
/* The spec's constraints: d_lo <= d <= d_hi, d_score <= d, d_out < d_lo, d_out <= d / 2;
 * or all of them 0 (a node without meshes, as the spec's bootstrappers). Returns 0 or
 * VV_EPUBSUB_PARAMS. */
int vv_pubsub_mesh_params_check(const struct vv_pubsub_mesh_params *p);
/*
 * Decides, for each of the n candidates, KEEP, GRAFT or PRUNE (into decision[n]), in the order
 * of GossipSub v1.1's heartbeat: prune mesh peers with a negative score; below d_lo, graft
 * random eligible peers (graftable, score >= 0) up to d; above d_hi, keep the d_score best
 * scored and random others up to d, with at least d_out outbound when there are that many,
 * and prune the rest; with fewer than d_out outbound, graft random eligible outbound peers;
 * and when opportunistic is set (every opportunistic_graft_ticks heartbeats) and the median
 * mesh score is below the threshold, graft up to opportunistic_graft_peers random eligible
 * peers scoring above the median. A peer pruned in this call is not grafted in it. Returns
 * the mesh size after the decisions. Parameters that fail vv_pubsub_mesh_params_check change
 * nothing (every decision KEEP).
 */
uint32_t vv_pubsub_mesh_select(const struct vv_pubsub_mesh_params *p,
                               const struct vv_pubsub_mesh_candidate *c, uint32_t n,
                               bool opportunistic, vv_pubsub_rand_cb rand_cb, void *rand_arg,
                               uint8_t *decision);

/* ---- choking (lazy push) --------------------------------------------------------------------
 * Which of one topic's mesh peers keep sending this node the topic's large messages in full
 * (unchoked) and which only announce them (choked), decided from each link's credit: first
 * deliveries lately, decaying (docs/pubsub.md, "Lazy push"). Pure: the router gathers the
 * links, calls this, and sends CHOKE for the changes. */
struct vv_pubsub_choke_link {
    double credit; /* >= 0: first deliveries (and a little for each later copy), decaying */
    bool choked;   /* we have choked it: it announces instead of sending */
};

/* Credit a choked link needs over an unchoked one, times the latter's plus this, to take its
 * place: hysteresis, so that two links of about equal speed do not swap every heartbeat. */
#define VV_PUBSUB_CHOKE_SWAP_FACTOR 1.5
#define VV_PUBSUB_CHOKE_SWAP_MARGIN 1.0
/* An unchoked link whose credit fell under this while messages flowed is delivering nothing
 * (a dropping peer): it is swapped for a random choked link. */
#define VV_PUBSUB_CHOKE_IDLE_CREDIT 0.5

/*
 * Decides the choked flag of each of the n links of one topic (into choked[n]), starting from
 * their current flags: at most `unchoked` links stay unchoked (the lowest credit ones are
 * choked first), fewer are topped up from the choked links with the highest credit; then the
 * best choked link takes the place of the worst unchoked one while its credit exceeds
 * VV_PUBSUB_CHOKE_SWAP_FACTOR times the latter's plus VV_PUBSUB_CHOKE_SWAP_MARGIN; and when
 * flowing is set (messages arrived lately) an unchoked link under VV_PUBSUB_CHOKE_IDLE_CREDIT
 * is swapped for a random choked one. unchoked 0 leaves every link unchoked (choking off).
 * Ties go to the lower index, so a decision replays from the same randomness. Returns the
 * number of links whose flag changed.
 */
uint32_t vv_pubsub_choke_select(uint32_t unchoked, const struct vv_pubsub_choke_link *l, uint32_t n,
                                bool flowing, vv_pubsub_rand_cb rand_cb, void *rand_arg,
                                bool *choked);

#endif
