/*
 * Per-user databases (UserDatabaseManager): one SQLite file per owner DID holding that
 * user's content records with their encrypted content.
 *
 * A file is named from the SHA-256 of the DID, never from the DID text, under
 * <dir>/<first two hex digits>/<64 hex digits>.db, so no DID can reach outside the directory
 * or collide with another. Open databases are kept in a bounded LRU cache: an open WAL
 * database costs three file descriptors, so the bound is derived from RLIMIT_NOFILE minus a
 * reserve for sockets, unless configured lower. Each database runs its statements on the
 * thread pool, one at a time (vv_sqlite). A put is acknowledged only after its transaction
 * committed.
 */
#ifndef VIVIM_USERDB_H
#define VIVIM_USERDB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define VV_USERDB_FD_RESERVE        256 /* descriptors left for sockets and the rest */
#define VV_USERDB_FDS_PER_DB        3   /* database, WAL and shared-memory files */
#define VV_USERDB_MAX_CONTENT_BYTES (16u << 20)
#define VV_USERDB_MAX_WAITING       10000 /* requests waiting for a free handle */

struct vv_userdb;

struct vv_userdb_config {
    const char *dir;   /* created 0700 if missing */
    uint32_t max_open; /* 0: from RLIMIT_NOFILE */
    bool full_sync;    /* synchronous=FULL instead of NORMAL */
};

/* Completion on the loop thread; result borrowed for the call (incref to keep). */
typedef void (*vv_userdb_cb)(int status, json_t *result, const char *msg, void *arg);

int vv_userdb_open(uv_loop_t *loop, const struct vv_userdb_config *cfg, struct vv_userdb **out);
/* Fails waiting requests with VV_ECLOSED, closes every database, then calls cb. */
void vv_userdb_close(struct vv_userdb *u, void (*cb)(void *arg), void *arg);

/*
 * Stores content (copied) under contentId (64 hex) for owner_did, with optional metadata
 * (object, may be NULL). Result: {"contentId", "size", "createdAt"}. Replacing existing
 * content with different bytes is VV_EEXIST: content is addressed by its hash.
 */
int vv_userdb_put(struct vv_userdb *u, const char *owner_did, const char *content_id,
                  const uint8_t *content, size_t len, const json_t *meta, uint64_t now_ms,
                  vv_userdb_cb cb, void *arg);
/* Result: {"contentId", "content" (base64), "size", "createdAt", "meta"}. */
int vv_userdb_get(struct vv_userdb *u, const char *owner_did, const char *content_id,
                  vv_userdb_cb cb, void *arg);
/* The seed's fetchContentForDistribution(contentId, ownerDid): the same record as get. */
int vv_userdb_fetch_for_distribution(struct vv_userdb *u, const char *content_id,
                                     const char *owner_did, vv_userdb_cb cb, void *arg);
/* Page of {"contentId", "size", "createdAt"}: {"records": [...], "nextCursor"}. */
int vv_userdb_list(struct vv_userdb *u, const char *owner_did, const char *cursor, uint32_t limit,
                   vv_userdb_cb cb, void *arg);

/* Databases open now (including ones closing), and the bound. */
uint32_t vv_userdb_open_count(const struct vv_userdb *u);
uint32_t vv_userdb_max_open(const struct vv_userdb *u);

/* The file a DID maps to (for operators and tests): <dir>/<xx>/<hash>.db. */
int vv_userdb_path(const struct vv_userdb *u, const char *owner_did, char *out, size_t len);

/*
 * Per-user databases as a node module: <state_dir>/users/, the userdb.* RPC methods.
 */
struct vv_module;
struct vv_node;
extern const struct vv_module vv_userdb_module;
/* The node's per-user databases, or NULL when the module is absent or not started. */
struct vv_userdb *vv_userdb_of(const struct vv_node *n);

/* [userdb] in vivimd.conf (src/userdb/userdb_config.c). */
struct vv_userdb_settings {
    uint32_t max_open; /* open per-user databases; 0 = from RLIMIT_NOFILE */
    int synchronous;   /* VV_CONFIG_SYNC_NORMAL or _FULL */
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_userdb_settings_section;
const struct vv_userdb_settings *vv_userdb_settings(const struct vv_config *c);

/* For tests: the bucket (of VV_USERDB_HASH_BUCKETS) of the open-database cache that holds
 * the database whose key is key, the SHA-256 of its owner's DID. */
#define VV_USERDB_HASH_BUCKETS 4096
uint32_t vv__userdb_bucket(const uint8_t key[32]);

#endif
