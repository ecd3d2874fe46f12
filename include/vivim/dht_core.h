/*
 * The DHT's protocol core, part 1: keyspace, addresses, the routing table, the cache of
 * verified contacts and the write tokens. (Records: dht_store.h; messages: dht_msg.h.)
 *
 * Everything here is sans-I/O and keeps no clock of its own: the caller passes the time
 * (`now`, milliseconds of a monotonic clock) and any random bytes a function needs, and gets
 * decisions back ("ping this contact", "these buckets are idle"). Nothing here sends,
 * receives, logs or calls vv_env, so the same code runs in vivimd and in the simulator.
 * docs/dht.md explains the design and the reason for each bound.
 */
#ifndef VIVIM_DHT_CORE_H
#define VIVIM_DHT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/error.h"

/* ---- keyspace ------------------------------------------------------------------------- */

#define VV_DHT_ID_BYTES 32  /* node IDs and keys: SHA-256 outputs */
#define VV_DHT_ID_BITS  256 /* and so 256 buckets */
#define VV_DHT_PK_BYTES 32  /* Ed25519 public key */

/* Node ID of an Ed25519 public key: SHA-256(pk). */
void vv_dht_id_from_pk(const uint8_t pk[VV_DHT_PK_BYTES], uint8_t id[VV_DHT_ID_BYTES]);
/* out = a XOR b. */
void vv_dht_distance(const uint8_t *a, const uint8_t *b, uint8_t out[VV_DHT_ID_BYTES]);
/* Compares the distances of a and b to target: <0 when a is closer, 0 equal, >0 farther. */
int vv_dht_distance_cmp(const uint8_t *target, const uint8_t *a, const uint8_t *b);
/* The number of leading bits a and b share, 0..256 (256: equal). For a contact and our own ID
 * that is the contact's bucket index. */
unsigned vv_dht_common_prefix(const uint8_t *a, const uint8_t *b);
/* An ID in bucket `bucket` (0..255) of `self`: self's first `bucket` bits, the next bit
 * flipped, the rest from `random` (32 random bytes the caller drew). For bucket refresh. */
void vv_dht_id_in_bucket(const uint8_t *self, unsigned bucket, const uint8_t *random,
                         uint8_t out[VV_DHT_ID_BYTES]);

/* ---- addresses ------------------------------------------------------------------------ */

enum vv_dht_family { VV_DHT_INET4 = 4, VV_DHT_INET6 = 6 };

/* An IP address and UDP/TCP port. For INET4 only ip[0..3] is used and ip[4..15] are zero,
 * so two equal addresses are equal bytewise (vv_dht_addr_equal). IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) are always stored as INET4, so one host cannot count twice. */
struct vv_dht_addr {
    uint8_t ip[16];
    uint16_t port;  /* host order, 1..65535 */
    uint8_t family; /* enum vv_dht_family */
};

enum vv_dht_addr_class {
    VV_DHT_ADDR_PUBLIC = 0,
    VV_DHT_ADDR_LOOPBACK,   /* 127/8, ::1 */
    VV_DHT_ADDR_PRIVATE,    /* 10/8, 172.16/12, 192.168/16, fc00::/7 */
    VV_DHT_ADDR_LINK_LOCAL, /* 169.254/16, fe80::/10 */
};

#define VV_DHT_ADDR_STR_BYTES   48 /* "[" 39 "]:" 5 NUL, rounded up */
#define VV_DHT_ADDR_COMPACT_MAX 18 /* compact form: ip (4 or 16) || port (2, big-endian) */
/* The diversity prefix: family byte, then the /24 (3 bytes) or /64 (8 bytes), zero-padded. */
#define VV_DHT_PREFIX_BYTES 9

/*
 * Parses a numeric address, "a.b.c.d:port" (four decimal parts) or "[v6]:port" (no zone),
 * with a decimal port 1..65535 without sign or leading zero. No names are resolved; the
 * unspecified addresses 0.0.0.0 and :: are refused. Returns 0 or VV_EDHT_ADDRESS.
 */
int vv_dht_addr_parse(const char *s, size_t len, struct vv_dht_addr *out);
/* Writes the form vv_dht_addr_parse reads (IPv6 in RFC 5952 form) into buf (at least
 * VV_DHT_ADDR_STR_BYTES). Returns 0, or VV_EINVAL for a malformed address. */
int vv_dht_addr_format(const struct vv_dht_addr *a, char *buf, size_t len);
bool vv_dht_addr_equal(const struct vv_dht_addr *a, const struct vv_dht_addr *b);
enum vv_dht_addr_class vv_dht_addr_classify(const struct vv_dht_addr *a);
/* Loopback and private addresses are exempt from the diversity limits, so that a cluster on
 * one host or one LAN can form a table. */
bool vv_dht_addr_diversity_exempt(const struct vv_dht_addr *a);
void vv_dht_addr_prefix(const struct vv_dht_addr *a, uint8_t out[VV_DHT_PREFIX_BYTES]);
/* Compact form: 6 bytes for INET4, 18 for INET6. Returns the length written. */
size_t vv_dht_addr_to_compact(const struct vv_dht_addr *a, uint8_t out[VV_DHT_ADDR_COMPACT_MAX]);
/* Reads 6 or 18 bytes; port 0, an unspecified address, a mapped IPv4 in the 18-byte form
 * and other lengths are VV_EDHT_ADDRESS. */
int vv_dht_addr_from_compact(const uint8_t *p, size_t n, struct vv_dht_addr *out);

/* A contact: a node ID and the address it proved it answers at. */
struct vv_dht_contact {
    uint8_t id[VV_DHT_ID_BYTES];
    struct vv_dht_addr addr;
};

/* ---- routing table -------------------------------------------------------------------- */

#define VV_DHT_K 20 /* bucket size: Kademlia's k, as BEP 5 and libp2p use */
/* Consecutive failed queries after which a contact is stale: replaced before any ping. */
#define VV_DHT_MAX_FAILURES 3
/* A ping of the oldest entry that got no answer (ping_result never called) for this long no
 * longer blocks the next one. */
#define VV_DHT_PING_PENDING_MS 10000
/* Diversity (BEP 42's spirit without its ID restriction): contacts per /24 or /64. */
#define VV_DHT_MAX_PER_PREFIX_BUCKET 2
#define VV_DHT_MAX_PER_PREFIX_TABLE  10

struct vv_dht_rt;

enum vv_dht_offer {
    VV_DHT_OFFER_ADDED = 0,  /* a new entry at the bucket's tail (maybe replacing a stale one) */
    VV_DHT_OFFER_UPDATED,    /* already there: seen now, moved to the tail, failures reset */
    VV_DHT_OFFER_NEEDS_PING, /* bucket full: candidate cached; ping *ping, report the outcome */
    VV_DHT_OFFER_CACHED,     /* bucket full, a ping already out: candidate cached */
    VV_DHT_OFFER_REJECTED,   /* see reject */
};

enum vv_dht_reject {
    VV_DHT_REJECT_NONE = 0,
    VV_DHT_REJECT_SELF,          /* our own ID */
    VV_DHT_REJECT_ADDR_CHANGED,  /* known ID at another address: the old one must fail first */
    VV_DHT_REJECT_PREFIX_BUCKET, /* MAX_PER_PREFIX_BUCKET reached in its bucket */
    VV_DHT_REJECT_PREFIX_TABLE,  /* MAX_PER_PREFIX_TABLE reached in the table */
    VV_DHT_REJECT_BAD_ADDRESS,   /* unspecified, port 0, unknown family */
};

struct vv_dht_offer_result {
    enum vv_dht_offer outcome;
    enum vv_dht_reject reject;     /* when REJECTED */
    struct vv_dht_contact ping;    /* when NEEDS_PING: the bucket's least recently seen */
    bool evicted_valid;            /* when ADDED: a stale entry made room */
    struct vv_dht_contact evicted; /* that entry */
};

/* One entry as the table reports it. */
struct vv_dht_rt_entry {
    struct vv_dht_contact c;
    uint64_t last_seen_ms;
    uint16_t rtt_ms;  /* smoothed, 0 = unknown */
    uint8_t failures; /* consecutive */
};

struct vv_dht_rt *vv_dht_rt_new(const uint8_t self[VV_DHT_ID_BYTES]);
void vv_dht_rt_free(struct vv_dht_rt *rt); /* rt may be NULL */

/*
 * Offers a contact that has proved its ID (a signed PONG, a secure connection). See enum
 * vv_dht_offer; out is filled in every case.
 */
void vv_dht_rt_offer(struct vv_dht_rt *rt, const struct vv_dht_contact *c, uint64_t now,
                     struct vv_dht_offer_result *out);
/*
 * The outcome of a ping asked for by NEEDS_PING. Answered: the entry is seen now (tail, no
 * failures) and the candidate stays in the replacement cache. Not answered: the entry is
 * evicted and the most recently seen cached candidate that passes the diversity limits takes
 * its place; *promoted (may be NULL) receives it, and the return is 1 then, 0 otherwise.
 * Returns VV_ENOTFOUND when id is not in the table.
 */
int vv_dht_rt_ping_result(struct vv_dht_rt *rt, const uint8_t *id, bool answered, uint64_t now,
                          struct vv_dht_contact *promoted);
/* A query to a table entry was answered (rtt_ms 0: not measured): as UPDATED. Returns 0 or
 * VV_ENOTFOUND. */
int vv_dht_rt_seen(struct vv_dht_rt *rt, const uint8_t *id, uint32_t rtt_ms, uint64_t now);
/* A query to a table entry failed. At VV_DHT_MAX_FAILURES it is stale: it is replaced at
 * once by a cached candidate if the bucket has one (return 1, *promoted filled), else by the
 * next contact offered to the bucket. Returns 0, 1 or VV_ENOTFOUND. */
int vv_dht_rt_failed(struct vv_dht_rt *rt, const uint8_t *id, uint64_t now,
                     struct vv_dht_contact *promoted);
/* Removes an entry (not its cached candidates). Returns 0 or VV_ENOTFOUND. */
int vv_dht_rt_remove(struct vv_dht_rt *rt, const uint8_t *id);

/* Looks an ID up; out may be NULL. Returns 0 or VV_ENOTFOUND. */
int vv_dht_rt_find(const struct vv_dht_rt *rt, const uint8_t *id, struct vv_dht_rt_entry *out);
size_t vv_dht_rt_size(const struct vv_dht_rt *rt);
/* Entries and cached candidates in one bucket (0..255). */
size_t vv_dht_rt_bucket_size(const struct vv_dht_rt *rt, unsigned bucket);
size_t vv_dht_rt_bucket_cached(const struct vv_dht_rt *rt, unsigned bucket);
/* The bucket's entries, least recently seen first; returns how many were written (<= max). */
size_t vv_dht_rt_bucket_entries(const struct vv_dht_rt *rt, unsigned bucket,
                                struct vv_dht_rt_entry *out, size_t max);
/* The n contacts closest to target (stale ones last, since they probably left), nearest
 * first; returns how many were written (<= n). */
size_t vv_dht_rt_closest(const struct vv_dht_rt *rt, const uint8_t *target, size_t n,
                         struct vv_dht_contact *out);

/*
 * Buckets to refresh: every bucket up to one past the deepest non-empty one that has seen no
 * contact added or answering, and no lookup (vv_dht_rt_touch_bucket), for period_ms. Writes
 * their indices, shallowest first, into out (256 fit); returns how many.
 */
size_t vv_dht_rt_idle_buckets(const struct vv_dht_rt *rt, uint64_t now, uint64_t period_ms,
                              uint8_t *out);
/* A lookup ran into bucket `bucket`: it counts as fresh from now. */
void vv_dht_rt_touch_bucket(struct vv_dht_rt *rt, unsigned bucket, uint64_t now);

/*
 * Snapshot: every entry (not the cached candidates, not the times) in a versioned byte
 * format (docs/dht.md). vv_dht_rt_snapshot returns a new buffer (*buf, *len, freed with
 * vv_free). vv_dht_rt_restore reads one into a table whose own ID must be the snapshot's, by
 * offering each entry as if it had just proved itself (so the limits hold whatever the bytes
 * say); it checks every length before reading and returns 0 or VV_EDHT_SNAPSHOT (the table
 * keeps whatever entries were offered before the error). *restored (may be NULL) counts the
 * entries the table took.
 */
void vv_dht_rt_snapshot(const struct vv_dht_rt *rt, uint8_t **buf, size_t *len);
int vv_dht_rt_restore(struct vv_dht_rt *rt, const uint8_t *buf, size_t len, uint64_t now,
                      size_t *restored);

/* ---- verified contacts ---------------------------------------------------------------- */

/*
 * (node ID, address) pairs that answered a signed challenge, so a second PONG from them
 * needs no signature check and their answers may be full size. A hash table under the
 * process's secret SipHash key (keyed_hash.h), so whoever picks the IDs cannot pick their
 * slots; bounded, and full means the pair verified longest ago is dropped.
 */
struct vv_dht_verified;

struct vv_dht_verified *vv_dht_verified_new(uint32_t capacity, uint64_t max_age_ms);
void vv_dht_verified_free(struct vv_dht_verified *v);
/* Records (or refreshes) a pair verified at now. */
void vv_dht_verified_add(struct vv_dht_verified *v, const uint8_t *id,
                         const struct vv_dht_addr *addr, uint64_t now);
/* True when the pair was verified less than max_age_ms ago. */
bool vv_dht_verified_has(const struct vv_dht_verified *v, const uint8_t *id,
                         const struct vv_dht_addr *addr, uint64_t now);
size_t vv_dht_verified_count(const struct vv_dht_verified *v);
/* The longest probe run of the table, for tests that it stays short under chosen IDs. */
uint32_t vv__dht_verified_longest_probe(const struct vv_dht_verified *v);

/* ---- write tokens --------------------------------------------------------------------- */

#define VV_DHT_TOKEN_BYTES        16
#define VV_DHT_TOKEN_ROTATE_MS    (5 * 60 * 1000) /* BEP 5: the secret changes every 5 min */
#define VV_DHT_TOKEN_SECRET_BYTES 32

/*
 * BEP 5 tokens: a GET_PROVIDERS or GET_VALUE answer gives the requester a token bound to its
 * IP address; a later PUT_VALUE or ADD_PROVIDER must carry it, which proves the requester
 * receives datagrams at the address it sends from. token = BLAKE2b-128 keyed with the secret
 * of the current 5-minute epoch, over the address's family and IP (not the port). The
 * secret of epoch e is BLAKE2b-256 keyed with the master secret over e, so rotation needs no
 * state and no randomness after start; tokens of the current and the previous epoch are
 * accepted (a token lives 5 to 10 minutes).
 */
struct vv_dht_tokens {
    uint8_t master[VV_DHT_TOKEN_SECRET_BYTES];
};

/* master: 32 random bytes the caller drew. */
void vv_dht_tokens_init(struct vv_dht_tokens *t, const uint8_t *master);
void vv_dht_tokens_clear(struct vv_dht_tokens *t); /* wipes the secret */
void vv_dht_token_make(const struct vv_dht_tokens *t, const struct vv_dht_addr *requester,
                       uint64_t now, uint8_t out[VV_DHT_TOKEN_BYTES]);
/* Returns 0, or VV_EDHT_TOKEN (wrong length, another address, or older than one rotation). */
int vv_dht_token_check(const struct vv_dht_tokens *t, const struct vv_dht_addr *requester,
                       uint64_t now, const uint8_t *token, size_t len);

/* ---- per-source rate limit ------------------------------------------------------------- */

/*
 * A token bucket per source (a /24 or /64 network, or one address and port for loopback and
 * private ranges, as the stores count sources): per_second requests a second, bursts of
 * burst. Bounded: a fixed table of `slots` sources (rounded up to a power of two); a source
 * not in it takes the slot idle longest among the few it hashes to, starting full, so a
 * flood of sources cannot make an honest one wait (src/dht/ratelimit.c). hash_key:
 * crypto_shorthash_KEYBYTES (16) random bytes. per_second 0: no limit.
 */
struct vv_dht_rate;
struct vv_dht_rate *vv_dht_rate_new(uint32_t slots, uint32_t per_second, uint32_t burst,
                                    const uint8_t *hash_key);
void vv_dht_rate_free(struct vv_dht_rate *r); /* r may be NULL */
void vv_dht_rate_set(struct vv_dht_rate *r, uint32_t per_second, uint32_t burst);
/* Takes one request's token for source at now (ms): false when the source is over its rate. */
bool vv_dht_rate_take(struct vv_dht_rate *r, const struct vv_dht_addr *source, uint64_t now);
size_t vv_dht_rate_tracked(const struct vv_dht_rate *r); /* sources in the table */

#endif
