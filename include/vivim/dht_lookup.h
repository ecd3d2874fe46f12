/*
 * The DHT's iterative lookup, sans-I/O: which nodes to ask next, when a slow one stops
 * holding the lookup up, and when the lookup is over. The module sends the queries (by
 * datagram or over a connection), hands every answer and failure back, and reads values or
 * providers out of the answers itself; this state machine only steers.
 *
 * Kademlia's lookup, as libp2p's kad-dht and BEP 5 run it: start from the contacts nearest
 * the target this node knows; keep at most alpha queries in flight; each answer brings nodes
 * closer to the target, which become candidates; the lookup is over when the k closest
 * candidates that did not fail have all answered.
 *
 * What is ours:
 *
 *  - Soft timeouts. Each query gets a soft deadline from the round-trip time measured to
 *    that contact (twice it), or from this node's recent answers (srtt + 4 rttvar, as TCP's
 *    retransmission timer), within [min_timeout_ms, max_timeout_ms]. Past it, the query is
 *    "slow": it no longer takes one of the alpha slots and no longer counts among the k
 *    closest, so a dead node costs about one round-trip estimate, not a fixed second. Its
 *    answer is still taken if it comes before the hard deadline (4 times the soft one, capped
 *    at max_timeout_ms), which the module gives the request layer as the request's timeout.
 *  - Disjoint paths (S/Kademlia, Baumgart and Mies 2007). With paths = d > 1 the starting
 *    contacts are dealt to d paths; each path runs its own lookup (alpha in flight, its own k
 *    closest) and a node is asked by one path only: a node another path already knows is not
 *    taken. An attacker who answers with bogus "closer" nodes captures the paths that reach
 *    it, not the others. The lookup ends when every path ended; the result is the k closest
 *    that answered on any path.
 *  - Bounds: at most VV_DHT_LOOKUP_MAX_CANDIDATES candidates (farthest dropped) and
 *    max_queries queries per lookup, so an answer stream of fresh IDs cannot keep a lookup
 *    going for ever.
 *
 * Hops: a starting contact is at depth 1; a contact learned from the answer of a node at
 * depth h is at depth h + 1 (the smallest such, if several answers name it). The lookup's
 * hop count is the depth of the closest node that answered.
 */
#ifndef VIVIM_DHT_LOOKUP_H
#define VIVIM_DHT_LOOKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/dht_core.h"

#define VV_DHT_LOOKUP_MAX_PATHS 8
/* Candidates kept per lookup, all paths together: k closest of each of 8 paths and as many
 * again in reserve. */
#define VV_DHT_LOOKUP_MAX_CANDIDATES 320

struct vv_dht_lookup_config {
    uint32_t k;              /* result size, and the closest set that must answer (20) */
    uint32_t alpha;          /* queries in flight per path, slow ones not counted (3) */
    uint32_t paths;          /* disjoint paths, 1 .. VV_DHT_LOOKUP_MAX_PATHS (1) */
    uint32_t max_queries;    /* queries per lookup, all paths (200) */
    uint32_t min_timeout_ms; /* soft deadline floor (10) */
    uint32_t max_timeout_ms; /* soft and hard deadline cap (2000) */
};
void vv_dht_lookup_config_defaults(struct vv_dht_lookup_config *cfg);

/* Round-trip estimate over this node's recent answers (RFC 6298's smoothing). */
struct vv_dht_rtt {
    uint32_t srtt_ms, rttvar_ms;
    bool measured;
};
void vv_dht_rtt_sample(struct vv_dht_rtt *r, uint32_t rtt_ms);
/*
 * The soft timeout for a contact whose own smoothed RTT is contact_rtt_ms (0: unknown):
 * 2 x contact_rtt_ms when known, else srtt + 4 rttvar when measured, else max_ms; then
 * clamped to [min_ms, max_ms].
 */
uint32_t vv_dht_rtt_timeout(const struct vv_dht_rtt *r, uint32_t contact_rtt_ms, uint32_t min_ms,
                            uint32_t max_ms);

/* A query to send now. */
struct vv_dht_lookup_query {
    struct vv_dht_contact to;
    uint32_t soft_timeout_ms; /* the lookup moves on after this */
    uint32_t hard_timeout_ms; /* give it to the request layer: an answer after it is lost */
    uint8_t path;
    uint8_t depth;
};

struct vv_dht_lookup_stats {
    uint32_t queries, answered, failed, slow; /* slow: passed their soft deadline */
    uint32_t late_answers;                    /* answered after being slow */
    uint32_t candidates_dropped;              /* beyond the candidate bound, or duplicates */
};

struct vv_dht_lookup;

/* A lookup for target, by node self (never a candidate), with cfg (copied; NULL: defaults).
 * rtt is this node's estimator, read when queries are issued (may be NULL). */
struct vv_dht_lookup *vv_dht_lookup_new(const uint8_t target[VV_DHT_ID_BYTES],
                                        const uint8_t self[VV_DHT_ID_BYTES],
                                        const struct vv_dht_lookup_config *cfg,
                                        const struct vv_dht_rtt *rtt);
void vv_dht_lookup_free(struct vv_dht_lookup *l); /* l may be NULL */

/*
 * The starting contacts (usually the routing table's closest), with their measured RTTs
 * (rtt_ms may be NULL; 0 = unknown). Dealt to the paths nearest first, round robin. Call
 * before the first vv_dht_lookup_next; later calls add more at depth 1.
 */
void vv_dht_lookup_seed(struct vv_dht_lookup *l, const struct vv_dht_contact *c,
                        const uint16_t *rtt_ms, size_t n);

/*
 * The queries to send now (at most max written to out); marks them in flight at now, and
 * marks as slow the queries whose soft deadline passed. Call after every event (answer,
 * failure, timer). Returns how many were written.
 */
size_t vv_dht_lookup_next(struct vv_dht_lookup *l, uint64_t now, struct vv_dht_lookup_query *out,
                          size_t max);
/* The earliest soft deadline of a query in flight that is not slow yet, or UINT64_MAX: when
 * to call vv_dht_lookup_next again if nothing else happens. */
uint64_t vv_dht_lookup_wake_at(const struct vv_dht_lookup *l);

/*
 * Node id answered at now, naming the contacts in closer (its nearest to the target; the
 * module decoded them and may already have dropped unusable ones). Returns 0, or
 * VV_ENOTFOUND when id was not asked, already answered or failed, or the lookup is done:
 * the answer is then ignored. (The module feeds the measured round trip to its own
 * vv_dht_rtt.)
 */
int vv_dht_lookup_answered(struct vv_dht_lookup *l, const uint8_t id[VV_DHT_ID_BYTES], uint64_t now,
                           const struct vv_dht_contact *closer, size_t n);
/* The query to id failed (hard timeout, error answer, unreachable). Returns 0 or
 * VV_ENOTFOUND. */
int vv_dht_lookup_failed(struct vv_dht_lookup *l, const uint8_t id[VV_DHT_ID_BYTES], uint64_t now);

/* Ends the lookup now (a GET that has what it wanted); queries in flight are forgotten. */
void vv_dht_lookup_stop(struct vv_dht_lookup *l);
/* True when every path ended (or the lookup was stopped, or max_queries were sent and all
 * of them ended). Nothing more to send; answers are ignored from then on. */
bool vv_dht_lookup_done(const struct vv_dht_lookup *l);

/* The closest contacts that answered, nearest first, at most max (k is the useful size).
 * Returns how many were written. */
size_t vv_dht_lookup_closest(const struct vv_dht_lookup *l, struct vv_dht_contact *out, size_t max);
/* The depth of the closest node that answered (0: none answered). */
uint32_t vv_dht_lookup_hops(const struct vv_dht_lookup *l);
const struct vv_dht_lookup_stats *vv_dht_lookup_stats(const struct vv_dht_lookup *l);
/* Queries in flight now (slow ones included), for the module's bookkeeping. */
uint32_t vv_dht_lookup_in_flight(const struct vv_dht_lookup *l);

#endif
