/*
 * The local content store: opaque, already encrypted blobs kept on a directory
 * (state_dir/store), addressed and verified as docs/storage.md specifies.
 *
 * It owns the directory: an SQLite index (index.sqlite, WAL, synchronous=FULL) of objects
 * (one-chunk blobs and manifests) and chunks; blobs of at most VV_STORE_INLINE_MAX_BYTES
 * inline in the index; every other chunk one file under chunks/ab/cd/<hex>; tmp/ for files
 * being written; quarantine/ for chunk files that failed verification.
 *
 * A store is durable before it is acknowledged: chunk files are written to tmp/, fdatasync'd,
 * renamed into place, their directories fsync'd once per blob, and only then is the index
 * committed. The commit is the moment the blob exists; a crash before it leaves only files
 * no manifest references, which vv_store_open removes. Every read verifies what it returns
 * against its hash; a chunk that fails is quarantined, counted and logged, and the read
 * fails with VV_ESTORE_CORRUPT: a corrupt byte is never returned.
 *
 * Two layers:
 *  - the synchronous functions (vv_store_open, _put, _get, ...) do file and SQLite I/O and
 *    must never be called on the event loop thread: call them from a worker (libuv's pool)
 *    or from start-up code before the loop runs. They are thread-safe (one mutex per store).
 *  - the async functions (vv_store_put_async, vv_store_get_async) run the same work on
 *    libuv's thread pool and deliver the result on the loop; at most max_pending of them are
 *    in flight, beyond which they are refused with VV_EBUSY.
 */
#ifndef VIVIM_STORE_H
#define VIVIM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "vivim/error.h"

#define VV_STORE_ADDR_BYTES            32
#define VV_STORE_CHUNK_BYTES           (256u * 1024u) /* the only chunk size version 1 knows */
#define VV_STORE_INLINE_MAX_BYTES      (64u * 1024u)  /* one-chunk blobs kept in the index */
#define VV_STORE_MAX_BLOB_BYTES        (64ull << 30)  /* 64 GiB */
#define VV_STORE_MAX_CHUNKS            (VV_STORE_MAX_BLOB_BYTES / VV_STORE_CHUNK_BYTES) /* 262,144 */
#define VV_STORE_MANIFEST_HEADER_BYTES 20
#define VV_STORE_MANIFEST_MAX_BYTES                                                                \
    (VV_STORE_MANIFEST_HEADER_BYTES + VV_STORE_MAX_CHUNKS * VV_STORE_ADDR_BYTES)
#define VV_STORE_DEFAULT_MAX_PENDING 64

/* ---- manifests (pure, no I/O) ------------------------------------------------------------ */

/* A decoded manifest. chunk_hashes points into the buffer it was decoded from (borrowed). */
struct vv_store_manifest {
    uint64_t size;        /* blob bytes, > VV_STORE_CHUNK_BYTES and <= VV_STORE_MAX_BLOB_BYTES */
    uint32_t chunk_bytes; /* VV_STORE_CHUNK_BYTES */
    uint32_t chunks;      /* ceil(size / chunk_bytes) */
    const uint8_t *chunk_hashes; /* chunks * 32 bytes */
};

/* Decodes the exact encoding of docs/storage.md. Returns 0, or VV_ESTORE_MANIFEST when buf
 * is not a valid version-1 manifest (any deviation, including trailing bytes). */
int vv_store_manifest_decode(const uint8_t *buf, size_t len, struct vv_store_manifest *out);

/* Encoded length of the manifest of a blob of size bytes (size > one chunk). */
size_t vv_store_manifest_len(uint64_t size);

/* Computes the address of data (docs/storage.md) without storing it. */
int vv_store_address(const uint8_t *data, size_t len, uint8_t addr[VV_STORE_ADDR_BYTES]);

/* ---- the store -------------------------------------------------------------------------- */

struct vv_store;

/*
 * Tiers (docs/storage.md, "Tiers"): HOT, this node's cache of recent content; WARM, content
 * peers placed here because it is popular; COLD, an archive node's copy of shared content.
 * Cache content of the hot and warm tiers (not pinned, no owner) is evicted in S3-FIFO order
 * to make room; pinned and owned content, and everything cold, is never evicted: a store
 * that does not fit fails with VV_ESTORE_FULL.
 */
enum vv_store_tier { VV_STORE_TIER_HOT = 0, VV_STORE_TIER_WARM = 1, VV_STORE_TIER_COLD = 2 };
#define VV_STORE_TIERS 3

struct vv_store_config {
    const char *dir;         /* the store's directory, created (0700) if missing */
    uint64_t capacity_bytes; /* 0: unlimited. Bytes of chunk files plus inline blobs. */
    /* Per tier, bytes of blobs (their sizes) it may hold; 0: only capacity_bytes bounds it. */
    uint64_t tier_capacity[VV_STORE_TIERS];
    /* Hot cache content not read for this long is removed by vv_store_expire; 0: kept. */
    int64_t hot_retention_ms;
    unsigned max_pending; /* async operations in flight; 0: VV_STORE_DEFAULT_MAX_PENDING */
};

/* Options of one store; NULL for the defaults (hot, not pinned, no owner, no expiry). */
struct vv_store_put_opts {
    enum vv_store_tier tier;
    bool pinned;
    const uint8_t *owner; /* 32 bytes or NULL */
    int64_t expiry_ms;    /* unix ms, 0: never */
};

struct vv_store_stat {
    uint64_t size;
    uint32_t chunks;
    bool manifest; /* a multi-chunk blob (the address names its manifest) */
    enum vv_store_tier tier;
    bool pinned;
    bool has_owner;
    uint8_t owner[32];
    int64_t expiry_ms, created_ms, last_access_ms;
    uint64_t access_count;
};

struct vv_store_counters {
    uint64_t objects;
    uint64_t used_bytes;
    uint64_t verify_failures; /* chunks or inline blobs that failed their hash since open */
    uint64_t quarantined;     /* chunk files moved to quarantine/ since open */
    uint64_t startup_tmp_removed, startup_orphans_removed; /* by the last open */
    uint64_t tier_bytes[VV_STORE_TIERS], tier_objects[VV_STORE_TIERS];
    uint64_t evictions;       /* objects evicted to make room, since open */
    uint64_t expired;         /* objects removed by vv_store_expire, since open */
    uint64_t reads_hit;       /* vv_store_get that found the blob */
    uint64_t reads_miss;      /* vv_store_get of an address not stored */
    uint64_t removed_pending; /* evicted or expired addresses not yet drained */
    uint64_t removed_dropped; /* ... dropped because the owner did not drain them in time */
};

/*
 * Opens (creating if needed) the store. Synchronous: start-up or a worker thread only.
 * Removes tmp/ files and chunk files no object references. Returns 0 with *out set, or an
 * error (errno/uv code for the directory, VV_ESTORE_INDEX for SQLite).
 */
int vv_store_open(const struct vv_store_config *cfg, struct vv_store **out);
/* Closes the index and frees s. No operation may be running (async ones must have finished). */
void vv_store_close(struct vv_store *s);

/*
 * Stores len bytes (not taken; copied to disk) and sets addr. Durable when it returns 0.
 * Storing an address already present is a success that changes nothing (but may set pinned).
 * Returns VV_ESTORE_TOO_LARGE above VV_STORE_MAX_BLOB_BYTES, VV_ESTORE_FULL when the new
 * bytes would exceed the capacity, VV_ESTORE_AMBIGUOUS for a one-chunk blob whose bytes are a
 * valid manifest (docs/storage.md, "Telling a manifest from a blob"), or an I/O error.
 * Worker thread only.
 */
int vv_store_put(struct vv_store *s, const uint8_t *data, size_t len,
                 const struct vv_store_put_opts *opts, uint8_t addr[VV_STORE_ADDR_BYTES]);

/*
 * Reads the blob named addr into a new buffer (*out, freed by the caller with vv_free) of
 * *out_len bytes, verifying every chunk. Returns VV_ENOTFOUND, VV_ESTORE_CORRUPT (a chunk
 * failed its hash and was quarantined), VV_ESTORE_MISSING (a chunk was quarantined earlier or
 * its file is gone), or an I/O error; *out is NULL on any error. Worker thread only.
 */
int vv_store_get(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES], uint8_t **out,
                 size_t *out_len);

/* Raw bytes an address names as a fetcher receives them (docs/storage.md, "Transfer"): a
 * manifest, a one-chunk blob, or a chunk of a stored blob; verified. Worker thread only. */
int vv_store_get_raw(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES], uint8_t **out,
                     size_t *out_len);

/* Returns 0 with *st filled, or VV_ENOTFOUND. Worker thread only. */
int vv_store_stat(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES],
                  struct vv_store_stat *st);

/* Removes an object; chunks no other object uses are deleted. Worker thread only. */
int vv_store_delete(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES]);

/*
 * Pins or unpins an object: a pinned object is never evicted or removed by retention. An
 * unpinned cache object re-enters its tier's eviction queue (and may be evicted at once when
 * the tier is over its bound). Returns 0 or VV_ENOTFOUND. Worker thread only.
 */
int vv_store_set_pinned(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES], bool pinned);

/*
 * Removes up to max objects whose expiry is at or before now_ms, and hot cache objects not
 * read for hot_retention_ms; *removed (may be NULL) receives how many. Their addresses are
 * queued for vv_store_drain_removed. Worker thread only.
 */
int vv_store_expire(struct vv_store *s, int64_t now_ms, size_t max, size_t *removed);

/*
 * Takes up to max addresses of objects the store removed by itself (eviction, expiry), oldest
 * first, into addrs (max * 32 bytes); returns how many. Any thread (it takes the lock, does
 * no I/O).
 */
size_t vv_store_drain_removed(struct vv_store *s, uint8_t *addrs, size_t max);

/* Verifies every object (a scrub): *objects checked, *bad those that failed to read back.
 * Worker thread only. */
int vv_store_check(struct vv_store *s, uint64_t *objects, uint64_t *bad);

/* Any thread. */
void vv_store_counters(struct vv_store *s, struct vv_store_counters *out);

/* ---- async, on the loop ----------------------------------------------------------------- */

typedef void (*vv_store_put_cb)(int status, const uint8_t addr[VV_STORE_ADDR_BYTES], void *arg);
/* data borrowed for the call: it is borrowed until cb, which fires on the loop thread. */
typedef void (*vv_store_get_cb)(int status, const uint8_t *data, size_t len, void *arg);

/*
 * Runs vv_store_put on libuv's thread pool; cb fires on loop's thread with the result.
 * data must stay valid until cb. Returns 0, or VV_EBUSY when max_pending operations are in
 * flight (cb does not fire).
 */
int vv_store_put_async(struct vv_store *s, uv_loop_t *loop, const uint8_t *data, size_t len,
                       const struct vv_store_put_opts *opts, vv_store_put_cb cb, void *arg);
/* Runs vv_store_get on the pool; cb gets the data borrowed for the call. Returns 0 or
 * VV_EBUSY. */
int vv_store_get_async(struct vv_store *s, uv_loop_t *loop, const uint8_t addr[VV_STORE_ADDR_BYTES],
                       vv_store_get_cb cb, void *arg);
/* vv_store_get_raw on the pool (what a holder serves to a fetcher). Returns 0 or VV_EBUSY. */
int vv_store_get_raw_async(struct vv_store *s, uv_loop_t *loop,
                           const uint8_t addr[VV_STORE_ADDR_BYTES], vv_store_get_cb cb, void *arg);

/*
 * Any other work on the store: work(s, arg) runs on the pool (it may call the synchronous
 * functions, and must touch nothing the loop thread uses without its own lock); done(status,
 * arg) fires on the loop with what work returned. Counted in max_pending like the others.
 * Returns 0, VV_EINVAL (work or done NULL) or VV_EBUSY.
 */
typedef int (*vv_store_work_fn)(struct vv_store *s, void *arg);
typedef void (*vv_store_done_cb)(int status, void *arg);
int vv_store_call_async(struct vv_store *s, uv_loop_t *loop, vv_store_work_fn work,
                        vv_store_done_cb done, void *arg);

/* Async operations in flight (for a metric). Loop thread. */
unsigned vv_store_pending(const struct vv_store *s);

#endif
