/* Shared by the files of src/storage/: the store's struct and the helpers they share. */
#ifndef VIVIM_STORE_INTERNAL_H
#define VIVIM_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#include "vivim/store.h"

/* Reads are counted in memory and written to the index with the next store, at close, or
 * when this many distinct objects have been read: a read never costs a commit (an fsync). */
#define VV_STORE_ACCESS_BATCH 256

struct vv__store_access {
    uint8_t addr[32];
    uint32_t count;
    int64_t last_ms;
};

struct vv_store {
    char *dir;
    uint64_t capacity_bytes; /* 0: unlimited */
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
};

uint32_t vv__store_chunk_count(uint64_t size);
/* Writes the manifest of data (size > one chunk) into out (vv_store_manifest_len bytes). */
void vv__store_manifest_build(const uint8_t *data, uint64_t size, uint8_t *out);

#endif
