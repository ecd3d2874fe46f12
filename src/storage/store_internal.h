/* Shared by the files of src/storage/: the store's struct and the helpers they share. */
#ifndef VIVIM_STORE_INTERNAL_H
#define VIVIM_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#include "vivim/s3fifo.h"
#include "vivim/store.h"

/* Reads are counted in memory and written to the index with the next store, at close, or
 * when this many distinct objects have been read: a read never costs a commit (an fsync). */
#define VV_STORE_ACCESS_BATCH 256

struct vv__store_access {
    uint8_t addr[32];
    uint32_t count;
    int64_t last_ms;
};

/* Addresses removed by eviction or expiry, kept for the owner to drain (vv_store_drain_removed)
 * so it can withdraw what it announced about them; beyond this many the oldest are dropped. */
#define VV_STORE_REMOVED_MAX 4096

struct vv_store {
    char *dir;
    uint64_t capacity_bytes; /* 0: unlimited */
    uint64_t tier_capacity[3]; /* 0: only capacity_bytes bounds the tier */
    int64_t hot_retention_ms;  /* 0: no retention limit */
    unsigned max_pending;
    unsigned pending; /* async operations in flight; loop thread only */

    pthread_mutex_t lock; /* guards everything below */
    sqlite3 *db;
    uint64_t used_bytes; /* chunk rows' sizes plus the index's inline bytes */
    uint64_t objects;
    uint64_t verify_failures, quarantined;
    uint64_t tmp_removed, orphans_removed;
    uint64_t tmp_seq; /* names tmp/ files */
    struct vv__store_access access[VV_STORE_ACCESS_BATCH];
    unsigned n_access;

    /* Tiers: blob bytes (sizes) and objects per tier; eviction queues of the hot and warm
     * tiers (NULL when nothing bounds the tier); objects they evicted, waiting for deletion. */
    uint64_t tier_bytes[3], tier_objects[3];
    struct vv_s3fifo *cache[2];
    uint8_t *victims;
    size_t n_victims, cap_victims;
    uint64_t evictions, expired, reads_hit, reads_miss;
    uint8_t (*removed)[32]; /* ring of VV_STORE_REMOVED_MAX */
    unsigned removed_head, removed_n;
    uint64_t removed_dropped;
};

uint32_t vv__store_chunk_count(uint64_t size);
/* Writes the manifest of data (size > one chunk) into out (vv_store_manifest_len bytes). */
void vv__store_manifest_build(const uint8_t *data, uint64_t size, uint8_t *out);

#endif
