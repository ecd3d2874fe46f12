/*
 * S3-FIFO admission and eviction (Yang et al., "FIFO queues are all you need for cache
 * eviction", SOSP 2023) as a pure data structure: no I/O, no clock. The hot tier of the
 * store feeds it requests and deletes what it evicts.
 *
 * Three FIFO queues over 32-byte keys (content addresses) with sizes in bytes:
 *  - small (S), VV_S3FIFO_SMALL_PERCENT of the capacity: every new key enters here, so a
 *    one-hit wonder leaves after a short stay without disturbing the main queue;
 *  - main (M): keys that were requested again while in S, or that come back while their
 *    ghost is remembered; a key at M's tail with a non-zero frequency is reinserted at the
 *    head with its frequency decremented (lazy promotion), otherwise evicted;
 *  - ghost (G): keys evicted from S (no data), as many bytes' worth as M holds at most.
 * Each cached key has a 2-bit frequency (0..3) a hit raises.
 *
 * Pinned keys (the user's own and pinned content) are outside the queues: counted in the
 * bytes used, never evicted. Not thread-safe: one owner (the loop thread).
 */
#ifndef VIVIM_S3FIFO_H
#define VIVIM_S3FIFO_H

#include <stdbool.h>
#include <stdint.h>

#include "vivim/error.h" /* the codes these functions return */

#define VV_S3FIFO_SMALL_PERCENT 10 /* the paper's choice: enough to filter one-hit wonders */
#define VV_S3FIFO_FREQ_MAX      3  /* 2 bits */

struct vv_s3fifo;

/* Called for each key evicted from the cache (not for ghosts): the owner deletes its data.
 * key is borrowed for the call. */
typedef void (*vv_s3fifo_evict_cb)(const uint8_t key[32], uint64_t size, void *arg);

struct vv_s3fifo_stats {
    uint64_t capacity_bytes, used_bytes; /* used: small + main + pinned */
    uint64_t small_bytes, main_bytes, pinned_bytes;
    uint64_t cached, ghosts; /* keys */
    uint64_t hits, misses, evictions;
};

/* capacity_bytes > 0. cb (may be NULL) and arg receive every eviction. */
struct vv_s3fifo *vv_s3fifo_new(uint64_t capacity_bytes, vv_s3fifo_evict_cb cb, void *arg);
void vv_s3fifo_free(struct vv_s3fifo *c);

/* A request for key. Returns true on a hit (its frequency rises, up to 3); false on a miss,
 * after which the caller fetches the data and calls vv_s3fifo_insert. Pinned keys hit. */
bool vv_s3fifo_get(struct vv_s3fifo *c, const uint8_t key[32]);

/*
 * Admits key (size bytes) after a miss: into M when its ghost is remembered, else into S;
 * then evicts until the cache fits its capacity (the callback fires for each evicted key,
 * possibly key itself when pinned bytes leave no room). Returns 0, VV_EEXIST when key is
 * cached, or VV_ELIMIT when size exceeds the capacity.
 */
int vv_s3fifo_insert(struct vv_s3fifo *c, const uint8_t key[32], uint64_t size);

/* Marks key pinned (adding it if absent): it leaves the queues and is never evicted. Pinned
 * bytes may exceed the capacity; the queues then give up everything else. */
int vv_s3fifo_pin(struct vv_s3fifo *c, const uint8_t key[32], uint64_t size);
/* Evicts (S3-FIFO's order) until bytes more would fit the capacity: room for something about
 * to be added outside this structure's knowledge of its key. Returns 0 when they fit, or
 * VV_ELIMIT when they cannot (more than the capacity, or pinned bytes leave no room). */
int vv_s3fifo_reserve(struct vv_s3fifo *c, uint64_t bytes);
/* Evicts one key, in S3-FIFO's order, whatever the capacity (room needed elsewhere, such as
 * a disk shared with other tiers). Returns false when the queues are empty. */
bool vv_s3fifo_evict_one(struct vv_s3fifo *c);
/* Returns a pinned key to the main queue (frequency 0). VV_ENOTFOUND when not pinned. */
int vv_s3fifo_unpin(struct vv_s3fifo *c, const uint8_t key[32]);
/* Forgets key (deleted by its owner: expiry, revocation). VV_ENOTFOUND when not cached. */
int vv_s3fifo_remove(struct vv_s3fifo *c, const uint8_t key[32]);

bool vv_s3fifo_contains(const struct vv_s3fifo *c, const uint8_t key[32]);
void vv_s3fifo_stats(const struct vv_s3fifo *c, struct vv_s3fifo_stats *out);

#endif
