/*
 * What the pubsub core's files share: an index from keys to entry numbers, and an expiring
 * set of message IDs. Not part of any public interface.
 *
 * The index is open addressing with linear probing and backward-shift deletion over a
 * keyed hash (keyed_hash.h), so the peers who choose message IDs, topics and node IDs
 * cannot choose their buckets. It stores entry numbers, not pointers, so the owner may
 * grow its entry array with realloc; equality is asked of the owner through a callback.
 */
#ifndef VIVIM_PUBSUB_INTERNAL_H
#define VIVIM_PUBSUB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "vivim/pubsub_wire.h"

#define VV__PS_NIL UINT32_MAX

struct vv__ps_map {
    uint64_t *h; /* hash of the entry in each slot */
    uint32_t *v; /* entry number, VV__PS_NIL when the slot is empty */
    uint32_t mask, n;
};

/* Is entry v the one with this key? */
typedef bool (*vv__ps_eq_fn)(const void *ctx, uint32_t v, const void *key);

/* Starts empty; the slot arrays are allocated on the first insert. */
void vv__ps_map_init(struct vv__ps_map *m);
void vv__ps_map_free(struct vv__ps_map *m);
uint32_t vv__ps_map_find(const struct vv__ps_map *m, uint64_t h, vv__ps_eq_fn eq, const void *ctx,
                         const void *key);
/* v must not be in the map already. Keeps the load at most 1/2. */
void vv__ps_map_insert(struct vv__ps_map *m, uint64_t h, uint32_t v);
/* Removes entry v (hash h); nothing when it is not there. */
void vv__ps_map_remove(struct vv__ps_map *m, uint64_t h, uint32_t v);

/*
 * A set of message IDs, each with an expiry, in the order they were added, which callers
 * keep the order of expiry (a monotonic clock, a heartbeat counter): expiry then pops
 * from the oldest end, O(1) per entry removed. At most max entries: adding to a full set
 * pushes out the oldest (counted in evicted).
 */
struct vv__ps_idset {
    struct vv__ps_ident {
        uint8_t id[VV_PUBSUB_ID_BYTES];
        uint64_t expires;
        uint64_t h;
        uint32_t prev, next; /* towards older, newer; free entries chain through next */
    } * e;
    uint32_t cap, n, max;
    uint32_t oldest, newest, free_list;
    struct vv__ps_map map;
    uint64_t evicted, expired;
};

void vv__ps_idset_init(struct vv__ps_idset *s, uint32_t max);
void vv__ps_idset_free(struct vv__ps_idset *s);
/* The entry holding id, or VV__PS_NIL. Expired entries not yet popped are found too. */
uint32_t vv__ps_idset_find(const struct vv__ps_idset *s, const uint8_t id[VV_PUBSUB_ID_BYTES]);
/* Adds id as the newest entry. Returns true when that pushed out the oldest. id must not
 * be in the set. */
bool vv__ps_idset_add(struct vv__ps_idset *s, const uint8_t id[VV_PUBSUB_ID_BYTES],
                      uint64_t expires);
void vv__ps_idset_remove(struct vv__ps_idset *s, uint32_t i);
/* Removes entries with expires <= now from the oldest end, at most max_work of them;
 * returns how many. */
uint32_t vv__ps_idset_expire(struct vv__ps_idset *s, uint64_t now, uint32_t max_work);

#endif
