/*
 * The deterministic many-node simulator: a vv_env implementation with a virtual clock, an
 * event queue and a modelled network, for running thousands of protocol instances in one
 * process, reproducibly from one seed.
 *
 * Model:
 * - Time is virtual (microseconds inside, milliseconds through vv_env) and advances only
 *   by popping the next event; equal times pop in insertion order.
 * - Each node has a region; one-way latency between two nodes is the region matrix entry
 *   plus uniform jitter; each node's uplink has a bandwidth, so large or many messages
 *   queue; messages on one link arrive in the order sent (connections are streams);
 *   a loss probability drops messages; partitions drop messages and, after the failure
 *   detection delay, break the connections that cross them.
 * - Datagrams (vv_env_send_datagram) need no connection: node i's address is
 *   10.x.y.z:4747 with x.y.z = i + 1 (vv_sim_node_address). Each datagram takes the
 *   uplink, then latency with its own jitter and the loss probability, drawn on its own,
 *   so datagrams may arrive in another order than sent; one to an unknown address, or
 *   arriving at a node that is down or partitioned away, is dropped without a word. A frame
 *   over VV_ENV_MAX_DATAGRAM_FRAME_BYTES is refused at the send (VV_EWIRE_TOO_LARGE).
 * - Connections: vv_env_connect to a node ID completes as the daemon's TCP + Noise XX does:
 *   the dialer gets its peer-up event after two round trips, the other side half a round
 *   trip later (when the last handshake message arrives); or the connect fails (peer-down to
 *   the caller) when the target is down or partitioned away. vv_env_send works only on an
 *   established connection; a link holds at most peer_queue_bytes not yet sent.
 * - Faults: crash (memory state gone: the app is destroyed, its timers and in-flight
 *   messages to and from it are void; peers notice after fail_detect_ms), restart (a new
 *   app instance on the same identity), join (a new node), partitions, and scenario
 *   callbacks at given times.
 * - Randomness: a xoshiro256** stream per node seeded from (run seed, node index); nothing
 *   reads the OS's randomness or clock.
 * - Output: counters per node and in total, and a running hash of every delivered event:
 *   two runs with the same seed and scenario produce the same hash.
 */
#ifndef VV_SIM_H
#define VV_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vivim/connmgr.h"
#include "vivim/env.h"

#define VV_SIM_MAX_REGIONS 8

struct vv_sim;

struct vv_sim_config {
    uint64_t seed;
    uint32_t n_nodes;   /* started at time 0 */
    uint32_t max_nodes; /* capacity including later joins; 0 = n_nodes */
    uint32_t n_regions; /* 1..VV_SIM_MAX_REGIONS; node i is in region i % n_regions */
    /* One-way latency between regions in ms; 0 everywhere = the built-in table. */
    uint32_t latency_ms[VV_SIM_MAX_REGIONS][VV_SIM_MAX_REGIONS];
    uint32_t jitter_pct;                 /* jitter as a percentage of the latency, uniform */
    double loss;                         /* probability a message is dropped, 0..1 */
    uint64_t uplink_bytes_per_s;         /* per node; 0 = unlimited */
    uint32_t fail_detect_ms;             /* how long until peers notice a crash or partition */
    uint32_t per_message_overhead_bytes; /* framing + encryption added to every message */
    /* Bytes one link may hold not yet sent (still in the sender's uplink); a send past it is
     * refused with VV_ECONN_BACKPRESSURE, as the daemon's [net] peer_queue_bytes does.
     * 0 = unbounded. */
    uint64_t peer_queue_bytes;
    /* Run the daemon's connection manager (connmgr.h) on every node, created before the app
     * and freed after it, as vivimd does: it answers vv_env_want_peer (peers on demand),
     * keeps low water, trims, pings and exchanges peers. Off: the app manages connections
     * itself and vv_env_want_peer answers VV_ESTATE, as on an env with no manager. An empty
     * self_address becomes 10.x.y.z:4747 with x.y.z = node index + 1 (peer exchange passes
     * on numeric addresses only). */
    bool connmgr;
    struct vv_connmgr_config connmgr_cfg;
};

/* The protocol under test: one instance per running node. */
struct vv_sim_app {
    /* Called when node index starts (at time 0, on join and on restart). Register channels
     * on env and start timers here. Returns the instance (may be NULL). */
    void *(*create)(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg);
    /* Called on crash and at vv_sim_free. */
    void (*destroy)(void *app, void *arg);
    void *arg;
};

struct vv_sim_counters {
    uint64_t msgs_sent, bytes_sent;
    uint64_t msgs_delivered, bytes_delivered;
    uint64_t msgs_dropped; /* loss, partition, or an endpoint that went down */
    uint64_t msgs_refused; /* sends refused: the link's queue was full (back-pressure) */
    uint64_t timers_fired;
    uint64_t connects, disconnects;
    /* Datagrams: sent (accepted by the env), delivered, dropped (loss, an unknown address,
     * a destination down or partitioned away when it arrived). */
    uint64_t dgrams_sent, dgrams_delivered, dgrams_dropped;
};

/* Fills cfg with sensible defaults: 4 regions, 10% jitter, no loss, 1 Gbit/s, 3 s detection. */
void vv_sim_config_defaults(struct vv_sim_config *cfg, uint64_t seed, uint32_t n_nodes);

struct vv_sim *vv_sim_new(const struct vv_sim_config *cfg, const struct vv_sim_app *app);
void vv_sim_free(struct vv_sim *sim);

/* Runs events up to and including time t_ms. Returns the number of events run. */
uint64_t vv_sim_run_until(struct vv_sim *sim, uint64_t t_ms);
uint64_t vv_sim_now_ms(const struct vv_sim *sim);

/* Scenario. Times are absolute, in ms, and must not be in the past. */
void vv_sim_crash_at(struct vv_sim *sim, uint64_t t_ms, uint32_t node);
void vv_sim_restart_at(struct vv_sim *sim, uint64_t t_ms, uint32_t node);
/* Returns the index the new node will have. */
uint32_t vv_sim_join_at(struct vv_sim *sim, uint64_t t_ms);
/* group[i] for every node index < max_nodes (copied); NULL heals every partition. */
void vv_sim_partition_at(struct vv_sim *sim, uint64_t t_ms, const uint32_t *group);
void vv_sim_at(struct vv_sim *sim, uint64_t t_ms, void (*fn)(struct vv_sim *sim, void *arg),
               void *arg);

/* Inspection. */
uint32_t vv_sim_node_count(const struct vv_sim *sim); /* nodes created so far */
bool vv_sim_node_up(const struct vv_sim *sim, uint32_t node);
struct vv_env *vv_sim_env(struct vv_sim *sim, uint32_t node);
void *vv_sim_app_of(struct vv_sim *sim, uint32_t node);
/* The node's connection manager (cfg.connmgr), or NULL when it is down or there is none. */
struct vv_connmgr *vv_sim_connmgr(struct vv_sim *sim, uint32_t node);
const uint8_t *vv_sim_node_id(const struct vv_sim *sim, uint32_t node);
/* Node's datagram address, "10.x.y.z:4747" (x.y.z = node + 1), into out. */
void vv_sim_node_address(const struct vv_sim *sim, uint32_t node, char *out, size_t cap);
/* Index of a node ID, or -1. */
int64_t vv_sim_find(const struct vv_sim *sim, const uint8_t id[VV_NODE_ID_BYTES]);
uint32_t vv_sim_links(const struct vv_sim *sim, uint32_t node); /* open connections */
/* The k-th (k < vv_sim_links) peer node connects to; the order changes as links come and go. */
uint32_t vv_sim_link_peer(const struct vv_sim *sim, uint32_t node, uint32_t k);
const struct vv_sim_counters *vv_sim_node_counters(const struct vv_sim *sim, uint32_t node);
const struct vv_sim_counters *vv_sim_totals(const struct vv_sim *sim);
uint64_t vv_sim_events(const struct vv_sim *sim);
uint64_t vv_sim_trace_hash(const struct vv_sim *sim);
uint64_t vv_sim_seed(const struct vv_sim *sim);
/* Totals, per-node message and byte figures (mean, max), events and the trace hash. */
void vv_sim_report(const struct vv_sim *sim, FILE *out);

/* The seed for a test run: $VV_SIM_SEED if set, else fallback. Printed by the caller. */
uint64_t vv_sim_seed_from_env(uint64_t fallback);

#endif
