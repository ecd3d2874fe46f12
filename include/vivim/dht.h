/*
 * The DHT node (src/dht/dht_node.c) and the `dht` module of vivimd (src/dht/dht_module.c).
 *
 * The node is the protocol core wired to one vv_env: it serves PING and FIND_NODE on
 * VV_CHANNEL_DHT through the request layer (by datagram or over a connection), admits a
 * contact to the routing table only after it answered a PING with a valid signature (checked
 * off the loop, vv_env_verify_async; verified (ID, address) pairs are cached), runs iterative
 * FIND_NODE lookups (dht_lookup.h) by datagram, looks itself up when it joins and refreshes
 * idle buckets. It never calls libuv: the same code runs in vivimd and in the simulator.
 * It stores signed values and provider records for others (GET_VALUE, PUT_VALUE,
 * GET_PROVIDERS, ADD_PROVIDER: write tokens, signatures checked off the loop, the bounded
 * stores of dht_store.h) and publishes and looks up its own: a GET lookup collects the
 * values or providers its answers carry (providers streamed to the caller as they come) and
 * the write tokens of the nodes that answered; a publish is such a lookup followed by a
 * PUT_VALUE or ADD_PROVIDER to each of the k closest that answered.
 *
 * The module adds the [dht] section, the dht.* RPC methods and the vivimd_dht_* metrics, and
 * keeps the routing table's contacts in state_dir/dht.sqlite across restarts (dht_persist.h).
 */
#ifndef VIVIM_DHT_H
#define VIVIM_DHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/dht_core.h"
#include "vivim/dht_lookup.h"
#include "vivim/dht_msg.h"
#include "vivim/dht_store.h"
#include "vivim/env.h"

/* Lookups running at once on one node (RPC and maintenance together); more are refused with
 * VV_EBUSY. Each holds at most alpha x paths queries in flight. */
#define VV_DHT_MAX_LOOKUPS 64
/* The floor of a query's soft timeout. The lookup's own floor (10 ms) lets a loaded host
 * (8 vivimd under ASan on 2 cores) pass a live node over as slow: on loopback its answer can
 * take longer than twice its measured RTT, and a lookup for that node's ID then ended
 * without it (seen in test_dht.py). 50 ms is still well under one internet round trip. */
#define VV_DHT_MIN_SOFT_TIMEOUT_MS 50
/* Verification pings in flight at once: a flood of claimed IDs costs at most this many
 * pings and signature checks at a time; the others wait for a later chance. */
#define VV_DHT_MAX_PENDING_PINGS 64
/* Bucket refreshes started per maintenance tick: enough for every bucket a table of a
 * million nodes uses (about 20 plus the k-deep tail) at the join's one-time refresh, and half
 * the lookup bound, so the RPC keeps room. */
#define VV_DHT_REFRESH_PER_TICK 32
/* The maintenance tick: idle buckets are looked for this often (or every refresh_ms when
 * that is shorter). */
#define VV_DHT_TICK_MS 5000
/* How long a verified (ID, address) pair is trusted without a new signature: an hour, as a
 * node keeps its address for much longer than that and a moved one fails its pings. */
#define VV_DHT_VERIFIED_MAX_AGE_MS (60u * 60u * 1000u)

struct vv_dht_node_config {
    uint32_t k;                               /* bucket size and lookup result size (<= VV_DHT_K) */
    uint32_t alpha;                           /* lookup parallelism */
    uint32_t paths;                           /* disjoint paths */
    uint32_t max_timeout_ms;                  /* soft and hard deadline cap for queries and pings */
    uint32_t refresh_ms;                      /* bucket refresh period */
    uint32_t max_verified;                    /* verified-contact cache size */
    uint32_t republish_ms;                    /* this node's own records: re-stored this often */
    uint32_t max_own;                         /* own records kept (republished) at most */
    uint32_t rate_per_source;                 /* requests served per second per source, 0 off */
    uint32_t rate_burst;                      /* and in one burst */
    struct vv_dht_values_config values;       /* what this node stores for others */
    struct vv_dht_providers_config providers; /* likewise */
};
void vv_dht_node_config_defaults(struct vv_dht_node_config *c);

/* What the node reports (all may be NULL); arg is hooks.arg. */
struct vv_dht_node_hooks {
    /* A request sent (out) or served (in): type is the request type. */
    void (*rpc)(void *arg, uint16_t type, bool in);
    /* A request of ours got no answer in time. */
    void (*timeout)(void *arg);
    /* A lookup ended: kind "find_node", "self", "refresh"; outcome "ok" (some node
     * answered) or "failed". */
    void (*lookup)(void *arg, const char *kind, const char *outcome, uint32_t hops,
                   uint64_t elapsed_ms);
    /* The numeric address (for datagrams) of a connected peer, or non-zero when unknown.
     * vivimd asks its connection manager; the simulator likewise. */
    int (*peer_address)(void *arg, const uint8_t id[VV_DHT_ID_BYTES], char *out, size_t cap);
    /* A PUT_VALUE or ADD_PROVIDER served: outcome "accepted" or a vv_dht_refusal_names. */
    void (*store)(void *arg, uint16_t type, const char *outcome);
    /* One of this node's own records was published (body: its encoded request body, to keep
     * for vv_dht_node_restore_own after a restart; a record of the same type and key
     * replaces it) or dropped (body NULL: it expired). */
    void (*own)(void *arg, uint16_t type, const uint8_t key[VV_DHT_ID_BYTES], const uint8_t *body,
                size_t len, uint64_t expires_ms);
    void *arg;
};

struct vv_dht_node_stats {
    uint64_t pings_sent, pongs_verified, pongs_bad; /* bad: wrong ID or signature */
    uint64_t served[6];                             /* by request type - 0x0100 */
    uint64_t served_unsupported, served_bad;
    uint64_t queries_sent, queries_answered, queries_failed;
    uint64_t timeouts;
    uint64_t lookups, lookups_failed;
    uint64_t pings_skipped; /* verification pings not sent: VV_DHT_MAX_PENDING_PINGS out */
    /* Stores served: accepted, or refused by reason (vv_dht_refusal_names: token, stale,
     * too large, expiry, quota, full, signature, key, busy, other). */
    uint64_t stores_accepted;
    uint64_t stores_refused[10];
    uint64_t values_bad;        /* GET answers' values refused: a bad signature, or past
                                 * VV_DHT_MAX_CHECKS_PER_LOOKUP */
    uint64_t republish_lookups; /* region lookups of the republish */
    uint64_t republished;       /* own records re-stored by them (stores sent) */
    uint64_t own_dropped;       /* own records not kept: max_own reached */
    uint64_t rate_limited;      /* datagram requests answered busy: source over its rate */
};
/* The reasons of stores_refused, in order (metric labels). */
extern const char *const vv_dht_refusal_names[10];

struct vv_dht_node;

/* Starts serving on env's channel 1 and its datagrams; cfg and hooks are copied (NULL:
 * defaults, none). Freed with vv_dht_node_free, which cancels everything in flight: the
 * callbacks of pings and lookups still running fire with VV_ENODE_SHUTTING_DOWN. */
struct vv_dht_node *vv_dht_node_new(struct vv_env *env, const struct vv_dht_node_config *cfg,
                                    const struct vv_dht_node_hooks *hooks);
void vv_dht_node_free(struct vv_dht_node *d); /* d may be NULL */
/* Applies changed settings (alpha, paths, timeouts, refresh period) to later lookups. */
void vv_dht_node_reconfigure(struct vv_dht_node *d, const struct vv_dht_node_config *cfg);

/* Joins through a numeric address whose node ID is not known: pings it; when its PONG
 * verifies it enters the table and, the first time, a self-lookup starts. Returns 0 or
 * VV_EDHT_ADDRESS, VV_EBUSY. */
int vv_dht_node_bootstrap(struct vv_dht_node *d, const char *address);
/* A peer connected on channel 1: asks hooks.peer_address and verifies it like a bootstrap
 * address, expecting its ID. */
void vv_dht_node_peer_up(struct vv_dht_node *d, const uint8_t id[VV_DHT_ID_BYTES]);
/* A contact known from elsewhere (a saved routing table): verified like any candidate, so it
 * enters the table only after its signed PONG. Returns 0 (pinged, or in the table, proven or
 * being pinged already), VV_EBUSY (VV_DHT_MAX_PENDING_PINGS pings out: offer it again later)
 * or VV_EDHT_ADDRESS. */
int vv_dht_node_add_candidate(struct vv_dht_node *d, const uint8_t id[VV_DHT_ID_BYTES],
                              const char *address);

/* Ping: status 0 and the answering node's proven ID, or an error (VV_EREQ_TIMEOUT,
 * VV_EDHT_SIGNATURE, VV_EDHT_MALFORMED, VV_ENODE_SHUTTING_DOWN, the remote's error). */
typedef void (*vv_dht_ping_cb)(void *arg, int status, const uint8_t *id, const char *address,
                               uint32_t rtt_ms, bool verified_now);
/* Pings address (id may be NULL: then any ID that proves itself). Returns 0 (cb fires
 * later, once) or an error (then never). */
int vv_dht_node_ping(struct vv_dht_node *d, const uint8_t *id, const char *address,
                     vv_dht_ping_cb cb, void *arg);

struct vv_dht_find_result {
    int status; /* 0, or VV_ENODE_SHUTTING_DOWN */
    struct vv_dht_contact closest[VV_DHT_K];
    uint16_t rtt_ms[VV_DHT_K]; /* measured in this lookup, 0 = unknown */
    size_t n;
    uint32_t hops;
    uint64_t elapsed_ms;
    struct vv_dht_lookup_stats stats;
};
typedef void (*vv_dht_find_cb)(void *arg, const struct vv_dht_find_result *r);
/* An iterative FIND_NODE lookup for target. cb (may be NULL) fires once, never from within
 * this call. Returns 0, or VV_EBUSY (VV_DHT_MAX_LOOKUPS running), VV_ENOTFOUND (the table is
 * empty). */
int vv_dht_node_find_node(struct vv_dht_node *d, const uint8_t target[VV_DHT_ID_BYTES],
                          vv_dht_find_cb cb, void *arg);
/* A refresh lookup for a random ID in bucket index (0..255). */
int vv_dht_node_refresh_bucket(struct vv_dht_node *d, unsigned index);

/* ---- values and providers ---- */

/* Sources whose request rate is tracked at once (vv_dht_rate). */
#define VV_DHT_RATE_SOURCES 4096

/* Requests to store (PUT_VALUE, ADD_PROVIDER served) waiting for their signature check at
 * once; more are answered busy. */
#define VV_DHT_MAX_PENDING_STORES 256
/* Value signature checks one GET lookup starts at most (4 per publisher it follows). */
#define VV_DHT_MAX_CHECKS_PER_LOOKUP (4 * VV_DHT_MAX_VALUES)
/* Providers a GET_PROVIDERS lookup collects at most. */
#define VV_DHT_GET_MAX_PROVIDERS 256

struct vv_dht_get_result {
    int status; /* 0, or VV_ENODE_SHUTTING_DOWN */
    /* GET_VALUE: verified values, one per publisher (its highest seq seen), newest seq first;
     * the bytes belong to the node and live during the callback. */
    struct vv_dht_value values[VV_DHT_MAX_VALUES];
    size_t n_values;
    /* Values some node held but could not fit in its datagram answer (not fetched). */
    uint32_t omitted;
    /* GET_PROVIDERS: the key's metadata (from the first answer that had it) and providers. */
    bool has_record;
    struct vv_dht_content_record record;
    const struct vv_dht_provider *providers;
    size_t n_providers;
    uint32_t hops;
    uint64_t elapsed_ms;
    uint64_t first_ms; /* when the first value or provider arrived (ms after start), or 0 */
    struct vv_dht_lookup_stats stats;
};
typedef void (*vv_dht_get_cb)(void *arg, const struct vv_dht_get_result *r);
/* One provider, as soon as an answer names it (each node ID once per lookup). */
typedef void (*vv_dht_provider_cb)(void *arg, const struct vv_dht_provider *p);

/* A GET_VALUE lookup for key: the values of every publisher, verified. cb fires once (never
 * from within this call). Returns 0, VV_EBUSY, VV_ENOTFOUND (empty table). */
int vv_dht_node_get(struct vv_dht_node *d, const uint8_t key[VV_DHT_ID_BYTES], vv_dht_get_cb cb,
                    void *arg);
/* A GET_PROVIDERS lookup: each provider goes to each (may be NULL) as it arrives; the lookup
 * stops once limit providers (1..VV_DHT_GET_MAX_PROVIDERS) are known, else when the closest
 * nodes answered; then cb. Returns as vv_dht_node_get. */
int vv_dht_node_get_providers(struct vv_dht_node *d, const uint8_t key[VV_DHT_ID_BYTES],
                              uint32_t limit, vv_dht_provider_cb each, vv_dht_get_cb cb, void *arg);

struct vv_dht_store_result {
    int status;      /* 0 (at least one node stored it), VV_ENOTFOUND, VV_ENODE_SHUTTING_DOWN */
    uint32_t stored; /* nodes that accepted */
    uint32_t tried;  /* nodes asked (the k closest that gave a token) */
    uint32_t hops;
    uint64_t elapsed_ms;
    uint64_t seq; /* PUT: the sequence number published */
};
typedef void (*vv_dht_store_cb)(void *arg, const struct vv_dht_store_result *r);
/*
 * Publishes value (len bytes, copied; at most VV_DHT_VALUE_MAX_BYTES) under key, signed with this
 * node's key, expiring ttl_ms from now, with sequence number seq (0: the wall clock in ms, or one
 * more than the last this node published under key, whichever is higher). Returns 0 (cb fires
 * once), VV_EBUSY, VV_ENOTFOUND, VV_EDHT_TOO_LARGE.
 */
/* The largest value sent by datagram (its PUT_VALUE frame stays under 1,164 bytes); larger
 * ones are stored and fetched over connections (the connection manager is asked for the
 * peer with tag VV_DHT_PEER_TAG, VV_DHT_CONNECT_TIMEOUT_MS to connect), at most
 * VV_DHT_MAX_CONN_REQUESTS at once, and a GET fetches what answers left out (`omitted`) from
 * at most VV_DHT_MAX_FETCHES nodes. */
#define VV_DHT_PUT_MAX_BYTES      900
#define VV_DHT_PEER_TAG           "dht"
#define VV_DHT_CONNECT_TIMEOUT_MS 5000
#define VV_DHT_MAX_CONN_REQUESTS  256
#define VV_DHT_MAX_FETCHES        3
/* An answer over a connection: the frame limit less room for the frame's own header. */
#define VV_DHT_CONN_REPLY_MAX_BYTES (VV_ENV_MAX_MESSAGE_BYTES - 4096)
int vv_dht_node_put(struct vv_dht_node *d, const uint8_t key[VV_DHT_ID_BYTES], const uint8_t *value,
                    size_t len, uint64_t ttl_ms, uint64_t seq, vv_dht_store_cb cb, void *arg);
/* Announces this node as a provider of rec (its key: SHA-256 of rec->content_id), its
 * expiresAt rec->expires_ms. Returns as vv_dht_node_put, and VV_EINVAL for a bad record. */
int vv_dht_node_provide(struct vv_dht_node *d, const struct vv_dht_content_record *rec,
                        vv_dht_store_cb cb, void *arg);

/* ---- this node's own records ---- */

/* Region lookups of the republish running at once, and own records re-stored per region
 * lookup (each costs k store requests; the request layer allows 64 in flight per node). */
#define VV_DHT_REPUBLISH_LOOKUPS 4
#define VV_DHT_REPUBLISH_BATCH   48
/*
 * Every record this node publishes (vv_dht_node_put, vv_dht_node_provide) is kept as its own
 * until it expires and re-stored at the k closest nodes every republish_ms, so that nodes
 * that joined near its key get it and nodes that left are replaced. Republish costs one
 * lookup per keyspace region, not per key: a lookup for the first due key finds the nodes
 * around it; every due record whose key shares as many leading bits with it as the farthest
 * of those k nodes does (the region those nodes cover) is sent to its own k closest among
 * the nodes that answered, up to VV_DHT_REPUBLISH_BATCH per lookup.
 *
 * Restores an own record saved from hooks.own after a restart: type and the body the hook
 * gave. Returns 0, VV_EDHT_MALFORMED, VV_EDHT_EXPIRY (expired), VV_ELIMIT (max_own).
 */
int vv_dht_node_restore_own(struct vv_dht_node *d, uint16_t type, const uint8_t *body, size_t len);
size_t vv_dht_node_own_count(const struct vv_dht_node *d);

const struct vv_dht_values *vv_dht_node_values(const struct vv_dht_node *d);
const struct vv_dht_providers *vv_dht_node_providers(const struct vv_dht_node *d);

const struct vv_dht_rt *vv_dht_node_table(const struct vv_dht_node *d);
size_t vv_dht_node_verified_count(const struct vv_dht_node *d);
const struct vv_dht_node_stats *vv_dht_node_stats(const struct vv_dht_node *d);
uint32_t vv_dht_node_lookups_running(const struct vv_dht_node *d);
/* The node's smoothed RTT over all answers (0: none yet). */
uint32_t vv_dht_node_srtt_ms(const struct vv_dht_node *d);

/* ---- the module ----------------------------------------------------------------------- */

struct vv_module;
extern const struct vv_module vv_dht_module;

/* [dht] in vivimd.conf (src/dht/dht_config.c). */
struct vv_dht_settings {
    bool enabled;
    uint32_t k, alpha, disjoint_paths;
    uint32_t query_timeout_ms;
    uint32_t refresh_ms;
    uint32_t max_verified;
    uint32_t record_ttl_s;
    uint32_t republish_s;
    uint32_t rate_per_source, rate_burst;
    uint32_t store_max_mb;
    uint32_t provider_max_records;
    uint32_t save_ms; /* period of the saves to state_dir/dht.sqlite */
};
/* dht.publish and dht.get: the longest key string (its SHA-256 is the DHT key). */
#define VV_DHT_RPC_KEY_MAX 1024
/* The longest ttl an RPC accepts (seconds): what stores keep at most. */
#define VV_DHT_MAX_TTL_S 172800
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_dht_settings_section;
const struct vv_dht_settings *vv_dht_settings(const struct vv_config *c);
void vv_dht_node_config_from_settings(const struct vv_dht_settings *s,
                                      struct vv_dht_node_config *c);

#endif
