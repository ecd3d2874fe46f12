/*
 * The connection manager: which peers this node stays connected to, and how it keeps them.
 *
 * It is sans-I/O and runs on vv_env, so the same code manages the daemon's TCP+Noise
 * connections and the simulator's modelled ones. It owns the address book (peers learned
 * from config, inbound connections and peer exchange), dials until `low_water`
 * connections are open, re-dials failed peers with exponential backoff and full jitter,
 * pings every connected peer for liveness and RTT, disconnects peers that stay silent,
 * trims the least useful unprotected peers when more than `high_water` are connected, and
 * swaps peer lists with its neighbours (peer exchange).
 *
 * Peers on demand: a module asks for a connection to a node by ID through vv_env_want_peer,
 * which lands in vv_connmgr_tag (the manager registers itself as the env's peer manager).
 * A tag is a reason (a short name) and a weight. A tagged peer is dialled at once (or when
 * its address becomes known, or its backoff ends) and re-dialled while it is tagged, as long
 * as fewer than high_water tagged peers are connected or being dialled; trimming takes
 * untagged peers first and tagged ones (least total weight first) only while more than
 * high_water tagged peers are connected, so a tagged peer is never trimmed and re-dialled in
 * turn. Peers connected for less than
 * VV_CONNMGR_GRACE_MS are not trimmed (unless the node is flooded, see below), and protected
 * peers never.
 *
 * Messages on VV_CHANNEL_CONN: HELLO (listen address, node type, capabilities, region),
 * PING/PONG (nonce, RTT), PEX_REQUEST/PEX_RESPONSE. Their encoding is in docs/protocol.md.
 *
 * It never blocks and never grows without bound: the address book holds at most
 * max_known_peers entries, PEX answers at most VV_CONNMGR_PEX_MAX peers.
 *
 * Peer exchange takes only what it asked for (docs/protocol.md, "Peer exchange"): a
 * PEX_RESPONSE counts only as the answer to our one outstanding request to that peer; its
 * addresses must be numeric (a name from a peer is never resolved); the peers it brings are
 * "hearsay" until reached, fill at most half the address book and are dialled at a limited
 * rate; and no peer list is sent to a peer that did not ask, not even when trimming it.
 * Strings from peers pass the wire codec's text check (vv_wire_get_str), nothing laxer.
 */
#ifndef VIVIM_CONNMGR_H
#define VIVIM_CONNMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"

#define VV_CONNMGR_PEX_MAX 16 /* peers in one peer-exchange answer */
/*
 * A PEX_RESPONSE counts only as the answer to our own PEX_REQUEST, received within this
 * long of sending it. One round trip is enough; 10 s covers the slowest links and a busy
 * peer, the same allowance a dial gets. After it the request is void and another may go.
 */
#define VV_CONNMGR_PEX_TIMEOUT_MS 10000
/*
 * Dials to peers we know only from peer exchange (hearsay: never reached, not given by the
 * operator) are paced by a token bucket: at most VV_CONNMGR_PEX_DIAL_BURST at once, then
 * VV_CONNMGR_PEX_DIALS_PER_S a second. A peer that answers our requests with someone
 * else's addresses can then point at most two connection attempts a second from each node
 * it reaches at that victim, while a node that starts from a single bootstrap peer still
 * reaches the default low water of 32 in about 15 s (the simulator's 1,000-node bootstrap
 * to a low water of 8 is unchanged). Other dials are bounded by max_dials only.
 */
#define VV_CONNMGR_PEX_DIAL_BURST  4
#define VV_CONNMGR_PEX_DIALS_PER_S 2
#define VV_CONNMGR_ADDRESS_BYTES   128 /* longest address kept, with its NUL */
/*
 * A new connection is not trimmed for this long, tagged or not: it has had no time to show
 * its round-trip time or to be tagged by the module it came for (a CRDT peer's sync request,
 * a pubsub peer's subscription), and a node that joined through us must get the answer to
 * the peer-exchange request it sent on connecting. 30 s is go-libp2p's default grace period;
 * the hard bound on connections meanwhile is [net] max_connections. The default of
 * vv_connmgr_config.grace_ms ([net] grace_period_ms).
 */
#define VV_CONNMGR_GRACE_MS 30000
/*
 * Unless the node is flooded: with more than VV_CONNMGR_GRACE_OVERFLOW times high_water
 * connected (a bootstrap node every joining node dials at once), a young untagged peer may be
 * trimmed once it got the answer to its peer-exchange request, or once
 * grace_ms / VV_CONNMGR_GRACE_FLOOD_DIVISOR (1.9 s by default) passed: enough for the request
 * a joining node sends on connecting to arrive (one trip, hundreds of ms between
 * continents), short enough that the node does not refuse the next joiners for 30 s.
 */
#define VV_CONNMGR_GRACE_OVERFLOW      2
#define VV_CONNMGR_GRACE_FLOOD_DIVISOR 16
#define VV_CONNMGR_TAG_BYTES           VV_ENV_TAG_BYTES /* longest tag name, with its NUL */
/* Tags one peer may carry: one per module that needs the peer is a handful (crdt, pubsub,
 * store, ...); 8 leaves room and bounds the size of an address-book entry. */
#define VV_CONNMGR_MAX_TAGS_PER_PEER 8
/* Peers tagged at once. Tagged entries are never evicted from the address book, so they may
 * fill at most half of it (max_known_peers / 2), and never more than this: far more than the
 * default high_water of 64 connections a node keeps, so a refusal means a module asks for
 * more peers than it could ever hold open. The default of vv_connmgr_config.max_tagged
 * ([net] max_tagged_peers). */
#define VV_CONNMGR_MAX_TAGGED_PEERS 1024
#define VV_CONNMGR_REGION_BYTES     32

enum vv_node_type {
    VV_NODE_BOOTSTRAP = 0,
    VV_NODE_RELAY = 1,
    VV_NODE_INDEXER = 2,
    VV_NODE_STORAGE = 3,
    VV_NODE_EDGE = 4,
    VV_NODE_CLIENT = 5,
    VV_NODE_SELF_HOSTED = 6,
    VV_NODE_TYPE_COUNT
};

/* Capability bits advertised in HELLO. */
enum vv_capability {
    VV_CAP_DHT = 1u << 0,
    VV_CAP_PUBSUB = 1u << 1,
    VV_CAP_STORE = 1u << 2,
    VV_CAP_RELAY = 1u << 3,
    VV_CAP_CRDT = 1u << 4,
    VV_CAP_FEDERATION = 1u << 5,
};

struct vv_connmgr_config {
    uint32_t low_water;        /* dial until this many connections are open */
    uint32_t high_water;       /* above this many, trim back down to low_water */
    uint32_t max_known_peers;  /* address book bound */
    uint32_t tick_ms;          /* how often dialling and trimming decisions run */
    uint32_t ping_interval_ms; /* keepalive period per peer */
    uint32_t idle_timeout_ms;  /* a peer silent this long is disconnected */
    uint32_t backoff_base_ms;  /* first retry delay after a failure */
    uint32_t backoff_max_ms;   /* cap on the retry delay */
    uint32_t pex_interval_ms;  /* how often to ask one neighbour for peers */
    uint32_t max_dials;        /* dials in flight at once */
    uint32_t grace_ms;         /* new connections are not trimmed this long (0: no grace) */
    uint32_t max_tagged;       /* peers tagged at once, at most max_known_peers / 2 */
    /* What this node advertises. */
    char self_address[VV_CONNMGR_ADDRESS_BYTES];
    enum vv_node_type node_type;
    uint32_t capabilities;
    char region[VV_CONNMGR_REGION_BYTES];
};

/* Fills cfg with the defaults (low 32, high 64, ping 15 s, idle 45 s, backoff 1 s .. 5 min,
 * grace VV_CONNMGR_GRACE_MS, VV_CONNMGR_MAX_TAGGED_PEERS tagged). */
void vv_connmgr_config_defaults(struct vv_connmgr_config *cfg);

struct vv_connmgr;

/* Peer flags. */
#define VV_PEER_BOOTSTRAP 1u /* from config: always worth re-dialling */
#define VV_PEER_PROTECTED 2u /* never trimmed */

struct vv_connmgr_tag {
    char name[VV_CONNMGR_TAG_BYTES]; /* printable ASCII, not empty */
    uint32_t weight;
};

struct vv_connmgr_peer {
    uint8_t id[VV_NODE_ID_BYTES];
    bool id_known; /* false for a bootstrap address whose ID we have not learned yet */
    char address[VV_CONNMGR_ADDRESS_BYTES];
    uint32_t flags;
    bool connected;
    uint64_t connected_since_ms;
    uint64_t last_heard_ms;
    uint32_t rtt_ms;       /* smoothed; 0 until the first pong */
    uint32_t failures;     /* consecutive failed dials or drops */
    uint64_t next_dial_ms; /* backoff: not before this */
    bool dialing;
    enum vv_node_type node_type;
    uint32_t capabilities;
    char region[VV_CONNMGR_REGION_BYTES];
    uint64_t msgs_in, msgs_out;
    int32_t reputation; /* +1 per answered ping, -VV_CONNMGR_BAD_PENALTY per bad message */
    struct vv_connmgr_tag tags[VV_CONNMGR_MAX_TAGS_PER_PEER]; /* tags[0..n_tags) */
    uint32_t n_tags;
    uint64_t tag_weight; /* sum of the tags' weights: the protection against trimming */
};

#define VV_CONNMGR_BAD_PENALTY    20
#define VV_CONNMGR_REPUTATION_MIN (-100) /* at or below: disconnected, not re-dialled */
#define VV_CONNMGR_REPUTATION_MAX 100

struct vv_connmgr_stats {
    uint64_t dials, dial_failures, connects, disconnects, trimmed, idle_drops;
    uint64_t pings_sent, pongs_received, pex_sent, pex_peers_learned, bad_messages;
    uint64_t pex_unsolicited;     /* PEX_RESPONSEs ignored: not asked for, again, or too late */
    uint64_t pex_entries_refused; /* PEX entries dropped: not a numeric address, or no room */
    uint64_t tags_refused;        /* vv_connmgr_tag calls refused: too many tags or tagged peers */
};

/* Creates a manager on env; it registers itself on VV_CHANNEL_CONN and starts its timer. */
struct vv_connmgr *vv_connmgr_new(struct vv_env *env, const struct vv_connmgr_config *cfg);
/* Cancels its timer and frees everything. */
void vv_connmgr_free(struct vv_connmgr *cm);

/*
 * Adds or updates a peer: by address, optionally with its expected ID (id may be NULL).
 * Returns 0, VV_ELIMIT when the address book is full of more valuable peers, VV_EINVAL.
 */
int vv_connmgr_add_peer(struct vv_connmgr *cm, const uint8_t *id, const char *address,
                        uint32_t flags);
void vv_connmgr_protect(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES], bool on);
/* Dials a peer now (ignoring backoff), or disconnects one. */
int vv_connmgr_connect(struct vv_connmgr *cm, const uint8_t *id, const char *address);
int vv_connmgr_disconnect(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES]);
/*
 * Tags the node `id` with `tag` (printable ASCII, 1..VV_CONNMGR_TAG_BYTES - 1 bytes) and
 * weight, adding it to the address book if needed (address may be NULL: the book, a HELLO
 * or peer exchange supply it; an address given replaces the one known), and dials it now
 * unless it is connected, being dialled or backing off. Tagging again with the same tag
 * sets the weight. Returns 0; VV_EINVAL (bad tag or address, or our own ID); VV_ELIMIT when
 * the peer has VV_CONNMGR_MAX_TAGS_PER_PEER tags, too many peers are tagged, or the address
 * book has no room (each counted in tags_refused). This is what vv_env_want_peer calls.
 */
int vv_connmgr_tag(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES], const char *address,
                   const char *tag, uint32_t weight);
/* Removes the tag; 0 whether or not it was there. The connection stays. */
int vv_connmgr_untag(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES], const char *tag);
/* Peers with at least one tag. */
uint32_t vv_connmgr_tagged_count(const struct vv_connmgr *cm);

/* The transport tells that a dial to address failed before any identity was learned (a
 * refused connection, a failed handshake, a name that does not resolve): the peer backs off
 * now rather than at the manager's dial deadline. Dials to a known ID are reported as that
 * peer going down instead. */
void vv_connmgr_dial_failed(struct vv_connmgr *cm, const char *address);

uint32_t vv_connmgr_connected_count(const struct vv_connmgr *cm);
uint32_t vv_connmgr_known_count(const struct vv_connmgr *cm);
/* The peer with this ID, or NULL. Borrowed until the next call into the manager. */
const struct vv_connmgr_peer *vv_connmgr_find(const struct vv_connmgr *cm,
                                              const uint8_t id[VV_NODE_ID_BYTES]);
/* The i-th peer of the address book (i < vv_connmgr_known_count), for listing. */
const struct vv_connmgr_peer *vv_connmgr_peer_at(const struct vv_connmgr *cm, uint32_t i);
const struct vv_connmgr_stats *vv_connmgr_stats(const struct vv_connmgr *cm);

/*
 * Discovery filter: connected peers with all of caps, in region (NULL = any), with at least
 * min_reputation. Fills out[0..max) and returns how many.
 */
uint32_t vv_connmgr_select(const struct vv_connmgr *cm, uint32_t caps, const char *region,
                           int32_t min_reputation, const struct vv_connmgr_peer **out,
                           uint32_t max);

/* For tests: the longest probe sequence in the index on node ID, in slots (1: every peer
 * sits in its home slot; 0: the index is empty). */
uint32_t vv__connmgr_longest_probe(const struct vv_connmgr *cm);

#endif
