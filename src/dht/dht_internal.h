/*
 * What the DHT core's files share: an open-addressing index of 32-bit item numbers under the
 * keyed hash (linear probing, backward-shift deletion, doubled at half load). The index does
 * not store hashes; it asks the owner to hash an item again when it moves one, so it costs 4
 * bytes a slot, 8 to 16 bytes per item at the load it keeps.
 */
#ifndef VIVIM_DHT_INTERNAL_H
#define VIVIM_DHT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "vivim/dht_core.h"

#define VV__DHT_NIL UINT32_MAX

/* Who asked to store something, as the quotas count it: public addresses by prefix (family
 * and /24 or /64), loopback and private ones by family, IP and port. */
#define VV__DHT_SOURCE_BYTES 19
void vv__dht_source_key(const struct vv_dht_addr *a, uint8_t out[VV__DHT_SOURCE_BYTES]);

/* hash: the keyed hash of item; eq: whether item has key. */
typedef uint64_t (*vv__dht_hash_fn)(const void *owner, uint32_t item);
typedef bool (*vv__dht_eq_fn)(const void *owner, uint32_t item, const void *key);

struct vv__dht_index {
    uint32_t *slot; /* item + 1, 0 = empty */
    uint32_t mask;  /* slots - 1 */
    uint32_t count;
    vv__dht_hash_fn hash;
    vv__dht_eq_fn eq;
    const void *owner;
};

void vv__dht_index_init(struct vv__dht_index *ix, vv__dht_hash_fn hash, vv__dht_eq_fn eq,
                        const void *owner);
void vv__dht_index_fini(struct vv__dht_index *ix);
/* The item with key (whose keyed hash is h), or VV__DHT_NIL. */
uint32_t vv__dht_index_find(const struct vv__dht_index *ix, uint64_t h, const void *key);
/* Adds item (not already present), whose hash is h. */
void vv__dht_index_insert(struct vv__dht_index *ix, uint64_t h, uint32_t item);
/* Removes item, whose hash is h. */
void vv__dht_index_remove(struct vv__dht_index *ix, uint64_t h, uint32_t item);
/* Replaces item old by item new (same key, so same hash). */
void vv__dht_index_replace(struct vv__dht_index *ix, uint64_t h, uint32_t old_item,
                           uint32_t new_item);
/* Bytes the index holds. */
size_t vv__dht_index_bytes(const struct vv__dht_index *ix);
uint32_t vv__dht_index_longest_probe(const struct vv__dht_index *ix);

/*
 * The sources of a store: who holds how much. Each source heads a list of its records, oldest
 * first, through links the store keeps in its records (head, tail). A source is created on
 * first use and dropped when its count returns to 0.
 */
struct vv__dht_source {
    uint8_t key[VV__DHT_SOURCE_BYTES];
    uint32_t count;
    uint64_t bytes;
    uint32_t head, tail; /* the store's records, oldest first */
    uint32_t next_free;  /* VV__DHT_NIL while in use */
    uint32_t heap_pos;   /* where it is in the heap */
    bool used;
};

struct vv__dht_sources {
    struct vv__dht_source *v;
    uint32_t n, cap, free_list, live;
    struct vv__dht_index ix;
    uint32_t *heap; /* live sources, a max-heap on bytes (by_bytes) or count */
    bool by_bytes;
};

void vv__dht_sources_init(struct vv__dht_sources *ss, bool by_bytes);
void vv__dht_sources_fini(struct vv__dht_sources *ss);
uint32_t vv__dht_sources_find(const struct vv__dht_sources *ss, const uint8_t *key);
/* Finds or creates the source (count 0, empty list). */
uint32_t vv__dht_sources_get(struct vv__dht_sources *ss, const uint8_t *key);
/* Changes what source i holds; the store changes counts and bytes only through this, so the
 * heap stays in order (O(log sources)). */
void vv__dht_sources_add(struct vv__dht_sources *ss, uint32_t i, int64_t count, int64_t bytes);
/* Drops source i if it holds nothing. */
void vv__dht_sources_release(struct vv__dht_sources *ss, uint32_t i);
/* The source holding the most (bytes or count, as chosen at init), or VV__DHT_NIL: O(1). */
uint32_t vv__dht_sources_largest(const struct vv__dht_sources *ss);
size_t vv__dht_sources_bytes(const struct vv__dht_sources *ss);
/* The heap and the index agree with the table (for the stores' self-checks). */
bool vv__dht_sources_ok(const struct vv__dht_sources *ss);

#endif
