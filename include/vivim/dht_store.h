/*
 * The DHT's protocol core, part 2: what a node stores for others. Signed values (PUT_VALUE)
 * and provider records (ADD_PROVIDER), each bounded in count and bytes, per source and in
 * all, with eviction an attacker cannot turn against honest records.
 *
 * Sans-I/O like dht_core.h: times are passed in (`now`: Unix milliseconds, since records
 * carry absolute expiry times), and the value store never verifies a signature itself, so
 * that the daemon can verify off the loop: vv_dht_values_check says whether a value is worth
 * verifying, the caller verifies vv_dht_value_signed_bytes (vv_dht_value_verify does it with
 * libsodium), then vv_dht_values_put stores it.
 *
 * A "source" is who asked to store: the requester's address, proved by a write token. Public
 * addresses count by prefix (/24, /64), so one operator's block shares one quota; loopback
 * and private addresses count by address and port, so a local cluster is not one source.
 */
#ifndef VIVIM_DHT_STORE_H
#define VIVIM_DHT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/dht_core.h"

/* ---- signed values -------------------------------------------------------------------- */

#define VV_DHT_VALUE_MAX_BYTES  65536 /* a value; larger ones belong in the blob store */
#define VV_DHT_SIG_BYTES        64
#define VV_DHT_VALUE_DOMAIN     "vivim-dht-value-v1" /* 18 bytes, no terminator, signed first */
#define VV_DHT_VALUE_DOMAIN_LEN 18
/* What one stored value is charged beyond its bytes (its record, index and list links), so
 * that a flood of empty values still costs its sender quota. */
#define VV_DHT_VALUE_OVERHEAD_BYTES 256

/*
 * A value under key, published by the holder of pk: sig signs
 *   "vivim-dht-value-v1" || key (32) || seq (u64 BE) || expires_ms (u64 BE) || value
 * with Ed25519. value points at len bytes the struct does not own.
 */
struct vv_dht_value {
    uint8_t key[VV_DHT_ID_BYTES];
    uint8_t pk[VV_DHT_PK_BYTES];
    uint64_t seq;        /* a stored value is replaced only by a higher one */
    uint64_t expires_ms; /* Unix ms */
    uint8_t sig[VV_DHT_SIG_BYTES];
    const uint8_t *value;
    size_t len; /* <= VV_DHT_VALUE_MAX_BYTES */
};

/* The signed message's length, and the message itself (out holds that many bytes). */
size_t vv_dht_value_signed_len(const struct vv_dht_value *v);
void vv_dht_value_signed_bytes(const struct vv_dht_value *v, uint8_t *out);
/* Publisher side: signs v with sk (libsodium layout, 64 bytes) and sets v->pk. */
void vv_dht_value_sign(struct vv_dht_value *v, const uint8_t sk[64]);
/* Checks v->sig under v->pk with libsodium (vv_dht_value_check first: it bounds len).
 * Returns 0 or VV_EDHT_SIGNATURE. */
int vv_dht_value_verify(const struct vv_dht_value *v);

struct vv_dht_values_config {
    uint64_t max_bytes;        /* all values, charged VV_DHT_VALUE_OVERHEAD_BYTES each */
    uint32_t max_count;        /* all values */
    uint64_t source_max_bytes; /* per source */
    uint32_t source_max_count; /* per source */
    uint32_t max_per_key;      /* publishers under one key */
    uint64_t max_ttl_ms;       /* an expiry further ahead is refused */
};
void vv_dht_values_config_defaults(struct vv_dht_values_config *cfg);

struct vv_dht_values;

struct vv_dht_values *vv_dht_values_new(const struct vv_dht_values_config *cfg);
void vv_dht_values_free(struct vv_dht_values *s); /* s may be NULL */

/*
 * Whether v may be stored, before its signature is checked: VV_EDHT_TOO_LARGE (len),
 * VV_EDHT_EXPIRY (expired, or more than max_ttl_ms ahead), VV_EDHT_STALE_SEQ (a value from
 * the same publisher under the same key with an equal or higher seq is stored), else 0.
 */
int vv_dht_values_check(const struct vv_dht_values *s, const struct vv_dht_value *v, uint64_t now);
/*
 * Stores v, whose signature the caller verified, for source (the requester's address): runs
 * vv_dht_values_check again (the store may have changed while the signature was checked),
 * then the bounds. Returns 0, a code of vv_dht_values_check, VV_EDHT_QUOTA (the source
 * would hold more than its share) or VV_EDHT_FULL (the store is full of sources holding no
 * more than this one would). Copies the bytes.
 *
 * When full, expired values go first; then the oldest value of the source holding the most
 * bytes, and only while that source would still hold more than the requester's after the
 * put. So a flood, from however many sources, can push any source down to the flood's own
 * per-source size but never below it (max-min fairness): honest sources holding less than
 * an attacker's are never evicted by it.
 */
int vv_dht_values_put(struct vv_dht_values *s, const struct vv_dht_value *v,
                      const struct vv_dht_addr *source, uint64_t now);
/*
 * The unexpired values under key, most recently stored first, at most max; the structs
 * point into the store and stay valid until the next call that changes it.
 */
size_t vv_dht_values_get(const struct vv_dht_values *s, const uint8_t *key, uint64_t now,
                         struct vv_dht_value *out, size_t max);
/* Examines at most max_items stored values (continuing where the last call stopped) and
 * drops the expired ones. Returns how many it dropped. */
size_t vv_dht_values_expire(struct vv_dht_values *s, uint64_t now, size_t max_items);
size_t vv_dht_values_count(const struct vv_dht_values *s);
uint64_t vv_dht_values_bytes(const struct vv_dht_values *s); /* as charged */
/* What one source is charged (count and bytes); 0s for an unknown source. */
void vv_dht_values_source_usage(const struct vv_dht_values *s, const struct vv_dht_addr *source,
                                uint32_t *count, uint64_t *bytes);
/* Walks every list and index and checks the counts and bounds agree: 0 or VV_ESTATE. For
 * tests; O(store). */
int vv__dht_values_check(const struct vv_dht_values *s);

/* ---- provider records ----------------------------------------------------------------- */

#define VV_DHT_CONTENT_ID_MAX   128 /* bytes of contentId (str) */
#define VV_DHT_CONTENT_TYPE_MAX 64  /* bytes of contentType (str) */
#define VV_DHT_MAX_PROVIDERS    20  /* per key: the most recent, at most 2 per source */
/* Distinct content types kept (they repeat: "text/plain", ...); more are stored as "". */
#define VV_DHT_CONTENT_TYPES_MAX 1024

/*
 * The seed's DHTContentRecord as an ADD_PROVIDER carries it. Its key is SHA-256(content_id)
 * or the storage address itself (address: the SHA-256 of the blob's manifest). The strings
 * point at bytes the struct does not own (not NUL-terminated).
 */
struct vv_dht_content_record {
    const char *content_id; /* 1..VV_DHT_CONTENT_ID_MAX bytes */
    size_t content_id_len;
    const char *content_type; /* 0..VV_DHT_CONTENT_TYPE_MAX bytes */
    size_t content_type_len;
    uint8_t address[32];        /* storage address hash */
    uint64_t size;              /* bytes of the content */
    uint64_t created_ms;        /* Unix ms */
    uint64_t expires_ms;        /* Unix ms */
    uint8_t replication_factor; /* wanted copies, informative */
};

/* Whether rec belongs under key: key == SHA-256(content_id) or key == address. Returns 0 or
 * VV_EDHT_KEY_MISMATCH; VV_EDHT_TOO_LARGE for strings over their bounds. */
int vv_dht_content_record_check(const struct vv_dht_content_record *rec, const uint8_t *key);

struct vv_dht_providers_config {
    uint32_t max_records;        /* (key, provider) entries in all */
    uint32_t max_keys;           /* distinct keys */
    uint32_t max_idents;         /* distinct providers, (node ID, address) */
    uint32_t source_max_records; /* entries whose provider is in one source */
    uint32_t source_max_idents;  /* distinct providers in one source */
    uint64_t max_ttl_ms;         /* a longer expiry is cut to now + max_ttl_ms */
};
void vv_dht_providers_config_defaults(struct vv_dht_providers_config *cfg);

struct vv_dht_providers;

struct vv_dht_providers *vv_dht_providers_new(const struct vv_dht_providers_config *cfg);
void vv_dht_providers_free(struct vv_dht_providers *s);

/*
 * Records that provider (the requester, whose address its token proved) provides the content
 * of rec under key. Checks vv_dht_content_record_check and the expiry (VV_EDHT_EXPIRY when
 * already expired). The key's metadata (content id, type, address, size, created) is taken
 * from the first record stored under it and kept while the key has providers. A provider
 * already listed is refreshed (expiry, most recent). A key holds at most
 * VV_DHT_MAX_PROVIDERS, at most 2 per source (diversity-exempt addresses aside): a newcomer
 * replaces its source's oldest there, else the key's oldest. Bounds: VV_EDHT_QUOTA when the
 * source holds source_max_records; when the store is full, expired entries go first, then
 * the oldest entry of the source holding the most, only while it holds more than the
 * requester's source would (as for values), else VV_EDHT_FULL. A provider new to the
 * store counts against max_idents and source_max_idents (VV_EDHT_FULL, VV_EDHT_QUOTA).
 */
int vv_dht_providers_add(struct vv_dht_providers *s, const uint8_t *key,
                         const struct vv_dht_content_record *rec,
                         const struct vv_dht_contact *provider, uint64_t now);

/* What a GET_PROVIDERS answer holds: the key's metadata and its providers. The strings point
 * into the store and stay valid until the next call that changes it. */
struct vv_dht_provider {
    struct vv_dht_contact c;
    uint64_t expires_ms;
};
/*
 * Fills rec (content_id, content_type, address, size, created_ms; expires_ms = the latest
 * provider's) and up to max providers, most recent first, unexpired only. Returns the number
 * of providers written, or VV_ENOTFOUND when the key has none.
 */
int vv_dht_providers_get(const struct vv_dht_providers *s, const uint8_t *key, uint64_t now,
                         struct vv_dht_content_record *rec, struct vv_dht_provider *out,
                         size_t max);
/* Examines at most max_items entry slots, continuing where the last call stopped, and drops
 * the expired entries (and keys and providers left with none). Returns how many it dropped. */
size_t vv_dht_providers_expire(struct vv_dht_providers *s, uint64_t now, size_t max_items);
size_t vv_dht_providers_count(const struct vv_dht_providers *s); /* (key, provider) entries */
size_t vv_dht_providers_idents(const struct vv_dht_providers *s);
size_t vv_dht_providers_keys(const struct vv_dht_providers *s);
uint32_t vv_dht_providers_source_count(const struct vv_dht_providers *s,
                                       const struct vv_dht_addr *source);
/* As vv__dht_values_check, for the provider store. */
int vv__dht_providers_check(const struct vv_dht_providers *s);

#endif
