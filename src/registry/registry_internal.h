/*
 * Shared between the registry's front (registry.c: argument checks, requests, completion)
 * and its backends (sqlite.c, pg.c: executing requests). Not for other modules.
 */
#ifndef VIVIM_REGISTRY_INTERNAL_H
#define VIVIM_REGISTRY_INTERNAL_H

#include "vivim/registry.h"
#include "vivim/sqlite_worker.h"

enum vv__registry_op {
    VV__REG_REGISTER,
    VV__REG_UPDATE,
    VV__REG_DEREGISTER,
    VV__REG_FIND_ID,
    VV__REG_FIND_OWNER,
    VV__REG_FIND_AUDIENCE,
    VV__REG_FIND_EXPIRED,
    VV__REG_LOG_ACCESS,
    VV__REG_STATS,
    VV__REG_ACCESS_LOG,
};

/*
 * One request, from the API call to its callback. Parameters by op:
 *   a: id (or owner DID for FIND_OWNER, audience type for FIND_AUDIENCE)
 *   b: cursor, or actor for LOG_ACCESS;  c: audience target, or action for LOG_ACCESS
 *   doc: serialized record (REGISTER) or patch (UPDATE);  n: now or access time (ms)
 */
struct vv__registry_req {
    struct vv_registry *reg;
    enum vv__registry_op op;
    char *a, *b, *c;
    char *doc;
    uint64_t n;
    uint32_t limit;
    vv_registry_cb cb;
    void *arg;
    /* Results. */
    int status;
    json_t *result;
    char msg[256];
    /* Backend scratch. */
    char *last_key;                /* paging: key of the last row so far */
    struct vv_sqlite_job job;      /* sqlite */
    struct vv__registry_req *next; /* pg: queue link */
    int stage, attempts;           /* pg: multi-step requests, retries */
    bool batch_end;                /* pg: a pipeline sync follows this request */
    bool own_error;                /* pg: this request's statement failed */
    char *merged;                  /* pg: UPDATE's merged record */
    char *old_doc;                 /* pg: UPDATE's record as read */
    uint64_t deadline_ms;          /* pg: fail with VV_ETIMEDOUT after this (uv_now) */
};

struct vv__registry_backend {
    const char *name;
    /* Takes rq; completes it later through vv__registry_complete. */
    void (*submit)(struct vv_registry *r, struct vv__registry_req *rq);
    /* Completes queued requests with VV_ECLOSED, releases everything, then calls
     * vv__registry_closed. */
    void (*close)(struct vv_registry *r);
    /* Whether requests can run now (NULL: always, an embedded database). */
    bool (*connected)(const struct vv_registry *r);
};

struct vv_registry {
    uv_loop_t *loop;
    struct vv_registry_config cfg;
    const struct vv__registry_backend *backend;
    void *impl;
    unsigned queued; /* submitted, not completed */
    bool closing;
    void (*open_cb)(int status, const char *msg, void *arg);
    void *open_arg;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* Hands the outcome to the caller and frees rq. status 0 uses rq->result. */
void vv__registry_complete(struct vv_registry *r, struct vv__registry_req *rq, int status);
/* Called by a backend once it released everything after close. Frees r. */
void vv__registry_closed(struct vv_registry *r);
/*
 * A page result: {"records": items, "nextCursor": next_key or null} ("entries" instead of
 * "records" for access-log pages). Takes items.
 */
json_t *vv__registry_page(json_t *items, const char *next_key, bool entries);
struct vv_registry *vv__registry_new(uv_loop_t *loop, const struct vv_registry_config *cfg,
                                     void (*cb)(int status, const char *msg, void *arg), void *arg);

extern const struct vv__registry_backend vv__registry_sqlite;
extern const struct vv__registry_backend vv__registry_pg;

#endif
