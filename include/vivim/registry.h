/*
 * The content registry: one record per piece of published content (encrypted blob
 * addressed by the SHA-256 of its bytes), who owns it, who may see it, when it is published
 * and expires, where it is stored. Two backends implement it behind one ops table:
 * SQLite in the state directory (the embedded default) and PostgreSQL (production).
 *
 * Records travel as JSON objects (jansson) in the form the RPC methods take and return;
 * vv_record_validate turns untrusted input into a normalized record or an error naming the
 * bad field. Every query pages with an opaque cursor and a limit (at most
 * VV_REGISTRY_MAX_PAGE), so nothing returns an unbounded result.
 *
 * Status rules: active -> expired | revoked | archived; expired -> active (re-published
 * with a later expiry) | revoked | archived; archived -> active | revoked; revoked is final.
 */
#ifndef VIVIM_REGISTRY_H
#define VIVIM_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define VV_REGISTRY_MAX_PAGE         1000 /* records per query page */
#define VV_REGISTRY_DEFAULT_PAGE     100
#define VV_RECORD_ID_MAX_BYTES       64 /* [A-Za-z0-9_-] */
#define VV_DID_MAX_BYTES             256
#define VV_AUDIENCE_MAX_TARGETS      1000
#define VV_AUDIENCE_TARGET_MAX_BYTES 256
#define VV_RECORD_MAX_PROVIDERS      64
#define VV_PERMISSIONS_MAX_BYTES     4096 /* serialized */
#define VV_CURSOR_MAX_BYTES          128

enum vv_record_status {
    VV_RECORD_ACTIVE,
    VV_RECORD_EXPIRED,
    VV_RECORD_REVOKED,
    VV_RECORD_ARCHIVED,
};

/* ---- records: validation and rules (pure) -------------------------------------------- */

/*
 * Validates an untrusted record. Required: contentId (64 hex), ownerDid (DID syntax), type
 * (conversation|acu|collection), size (0..2^53), hash (64 hex), audience {type
 * public|circle|users|link, targets [string]}. Optional: id (generated from random bytes
 * when absent, via rand_hex), createdAt (ms; defaults to now_ms), permissions (object),
 * schedule {publishAt, expiresAt} (ms, expiresAt > publishAt), providers [64-hex node
 * IDs], replicaCount, status (default active). Unknown fields are an error.
 * On success *out is a new normalized object (caller decrefs). On error err names the
 * field ("audience.targets[3]: ...") and returns VV_EINVAL.
 */
int vv_record_validate(const json_t *in, uint64_t now_ms, const char *generated_id, json_t **out,
                       char *err, size_t err_len);

/*
 * Validates an update: a patch of the mutable fields (permissions, schedule, providers,
 * replicaCount, status, audience) applied to current. Returns the merged record in *out.
 * VV_ESTATE when the status change is not allowed (err says which).
 */
int vv_record_apply_update(const json_t *current, const json_t *patch, json_t **out, char *err,
                           size_t err_len);

bool vv_record_status_transition_ok(enum vv_record_status from, enum vv_record_status to);
int vv_record_status_parse(const char *s, enum vv_record_status *out);
const char *vv_record_status_name(enum vv_record_status s);

/* A record id: 1 to VV_RECORD_ID_MAX_BYTES characters of A-Z, a-z, 0-9, '-' and '_'. */
bool vv_record_id_valid(const char *s);

/* DID syntax per W3C DID Core: did:<method>:<method-specific-id>, at most VV_DID_MAX_BYTES. */
bool vv_did_valid(const char *did);

/* ---- the registry (asynchronous) ------------------------------------------------------ */

struct vv_registry;

/*
 * Completion of every registry call, on the loop thread. status 0: result is the record or
 * page (borrowed for the call: incref to keep); otherwise result is NULL and msg says why
 * (VV_ENOTFOUND, VV_EEXIST, VV_ESTATE, VV_EINVAL, VV_EIO, VV_EBUSY, VV_ECLOSED).
 */
typedef void (*vv_registry_cb)(int status, json_t *result, const char *msg, void *arg);

struct vv_registry_config {
    const char *sqlite_path;      /* embedded backend: the database file */
    bool sqlite_full_sync;        /* synchronous=FULL instead of NORMAL */
    const char *pg_url;           /* PostgreSQL backend: a libpq connection URI */
    uint32_t access_log_max_rows; /* retention: oldest rows beyond this are pruned */
    uint32_t max_queue;           /* requests not yet completed before VV_EBUSY */
    uint32_t request_timeout_ms;  /* PostgreSQL: a request not done by then fails */
};

/* Opens the SQLite backend; cb fires once it is usable (or failed). */
int vv_registry_open_sqlite(uv_loop_t *loop, const struct vv_registry_config *cfg,
                            void (*cb)(int status, const char *msg, void *arg), void *arg,
                            struct vv_registry **out);
/*
 * Opens the PostgreSQL backend: connects without blocking, applies migrations under an
 * advisory lock, prepares statements; cb fires when ready or when the first attempt
 * failed (the backend keeps reconnecting with backoff either way; requests made while
 * disconnected wait, bounded by max_queue and request_timeout_ms).
 */
int vv_registry_open_pg(uv_loop_t *loop, const struct vv_registry_config *cfg,
                        void (*cb)(int status, const char *msg, void *arg), void *arg,
                        struct vv_registry **out);
/* "sqlite" or "postgresql". */
const char *vv_registry_backend_name(const struct vv_registry *r);
/* Requests submitted and not yet completed. */
unsigned vv_registry_queued(const struct vv_registry *r);
/* Whether the backend can run requests now (PostgreSQL: connected and set up). */
bool vv_registry_connected(const struct vv_registry *r);

/* Cancels queued requests (their callbacks fire with VV_ECLOSED), finishes the running one,
 * closes the backend, then calls cb. */
void vv_registry_close(struct vv_registry *r, void (*cb)(void *arg), void *arg);

/*
 * record must be the output of vv_record_validate (the RPC layer validates, so that errors
 * name the bad field before any disk work). Registering the same id again with the same
 * contentId and ownerDid returns the stored record (a retried distribute converges); a
 * different record under that id fails with VV_EEXIST.
 */
int vv_registry_register(struct vv_registry *r, const json_t *record, vv_registry_cb cb, void *arg);
int vv_registry_update(struct vv_registry *r, const char *id, const json_t *patch,
                       vv_registry_cb cb, void *arg);
int vv_registry_deregister(struct vv_registry *r, const char *id, vv_registry_cb cb, void *arg);
int vv_registry_find_by_id(struct vv_registry *r, const char *id, vv_registry_cb cb, void *arg);
/* Pages: result {"records":[...], "nextCursor": string|null}. cursor NULL = first page. */
int vv_registry_find_by_owner(struct vv_registry *r, const char *owner_did, const char *cursor,
                              uint32_t limit, vv_registry_cb cb, void *arg);
int vv_registry_find_by_audience(struct vv_registry *r, const char *type, const char *target,
                                 const char *cursor, uint32_t limit, vv_registry_cb cb, void *arg);
/* Active records whose expiresAt <= now_ms. */
int vv_registry_find_expired(struct vv_registry *r, uint64_t now_ms, const char *cursor,
                             uint32_t limit, vv_registry_cb cb, void *arg);
/* Appends to the access log and bumps the record's access count. */
int vv_registry_log_access(struct vv_registry *r, const char *id, const char *actor,
                           const char *action, uint64_t at_ms, vv_registry_cb cb, void *arg);
/* {"accessCount", "replicaCount", "lastAccess"} for one record. */
int vv_registry_stats(struct vv_registry *r, const char *id, vv_registry_cb cb, void *arg);
/* Page of {"at","actor","action"} for one record, newest first. */
int vv_registry_access_log(struct vv_registry *r, const char *id, const char *cursor,
                           uint32_t limit, vv_registry_cb cb, void *arg);

/*
 * The registry as a node module: opens the backend named by [registry] url at start
 * (SQLite file <state_dir>/registry.db when empty), registers the registry.* RPC methods,
 * closes at stop. Its /health check says whether the backend can run requests.
 */
struct vv_module;
struct vv_node;
extern const struct vv_module vv_registry_module;
/* The node's registry, or NULL when the module is absent or not started. */
struct vv_registry *vv_registry_of(const struct vv_node *n);

/* [registry] in vivimd.conf (src/registry/registry_config.c). */
struct vv_registry_settings {
    char *url;                    /* "" = SQLite in state_dir; postgresql://... for PostgreSQL */
    uint32_t access_log_max_rows; /* access log retention */
    int synchronous;              /* VV_CONFIG_SYNC_NORMAL or _FULL (SQLite) */
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_registry_settings_section;
const struct vv_registry_settings *vv_registry_settings(const struct vv_config *c);

#endif
