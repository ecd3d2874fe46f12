/*
 * The registry's front: argument checks that need no disk, request objects, dispatch to the
 * configured backend, and completion. Backends (sqlite.c, pg.c) only execute requests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry_internal.h"
#include "vivim/common.h"
#include "vivim/log.h"

struct vv_registry *vv__registry_new(uv_loop_t *loop, const struct vv_registry_config *cfg,
                                     void (*cb)(int status, const char *msg, void *arg), void *arg)
{
    struct vv_registry *r = vv_xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->cfg = *cfg;
    r->cfg.sqlite_path = NULL; /* not kept: backends copy what they need */
    r->cfg.pg_url = NULL;
    if (r->cfg.max_queue == 0)
        r->cfg.max_queue = 10000;
    if (r->cfg.access_log_max_rows == 0)
        r->cfg.access_log_max_rows = 100000;
    if (r->cfg.request_timeout_ms == 0)
        r->cfg.request_timeout_ms = 30000;
    r->open_cb = cb;
    r->open_arg = arg;
    return r;
}

json_t *vv__registry_page(json_t *items, const char *next_key, bool entries)
{
    return json_pack("{s:o, s:o}", entries ? "entries" : "records", items, "nextCursor",
                     next_key ? json_string(next_key) : json_null());
}

static void free_req(struct vv__registry_req *rq)
{
    json_decref(rq->result);
    vv_free(rq->a);
    vv_free(rq->b);
    vv_free(rq->c);
    vv_free(rq->doc);
    vv_free(rq->last_key);
    vv_free(rq->merged);
    vv_free(rq->old_doc);
    vv_free(rq);
}

void vv__registry_complete(struct vv_registry *r, struct vv__registry_req *rq, int status)
{
    r->queued--;
    if (status != 0 && rq->msg[0] == '\0')
        vv_strlcpy(rq->msg, vv_strerror(status), sizeof(rq->msg));
    if (status == VV_EIO)
        vv_log_warn("registry", "%s request failed: %s", r->backend->name, rq->msg);
    rq->cb(status, status == 0 ? rq->result : NULL, status == 0 ? NULL : rq->msg, rq->arg);
    free_req(rq);
}

void vv__registry_closed(struct vv_registry *r)
{
    void (*cb)(void *) = r->close_cb;
    void *arg = r->close_arg;
    vv_free(r);
    if (cb)
        cb(arg);
}

void vv_registry_close(struct vv_registry *r, void (*cb)(void *arg), void *arg)
{
    if (r->closing)
        return;
    r->closing = true;
    r->close_cb = cb;
    r->close_arg = arg;
    r->backend->close(r);
}

const char *vv_registry_backend_name(const struct vv_registry *r)
{
    return r->backend->name;
}

unsigned vv_registry_queued(const struct vv_registry *r)
{
    return r->queued;
}

bool vv_registry_connected(const struct vv_registry *r)
{
    return r->backend->connected == NULL || r->backend->connected(r);
}

/* ---- requests ---------------------------------------------------------------------------- */

static struct vv__registry_req *new_req(struct vv_registry *r, enum vv__registry_op op,
                                        vv_registry_cb cb, void *arg)
{
    struct vv__registry_req *rq = vv_xcalloc(1, sizeof(*rq));
    rq->reg = r;
    rq->op = op;
    rq->cb = cb;
    rq->arg = arg;
    return rq;
}

static int submit(struct vv_registry *r, struct vv__registry_req *rq)
{
    if (r->closing || r->queued >= r->cfg.max_queue) {
        free_req(rq);
        return r->closing ? VV_ECLOSED : VV_EBUSY;
    }
    r->queued++;
    r->backend->submit(r, rq);
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? vv_xstrdup(s) : NULL;
}

/* Cursors come from clients: bounded and of the characters our keys use. */
static bool cursor_ok(const char *c)
{
    if (c == NULL)
        return true;
    size_t n = strlen(c);
    if (n == 0 || n > VV_CURSOR_MAX_BYTES)
        return false;
    for (; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == ':'))
            return false;
    return true;
}

static uint32_t clamp_limit(uint32_t limit)
{
    return limit == 0 ? VV_REGISTRY_DEFAULT_PAGE : VV_MIN(limit, VV_REGISTRY_MAX_PAGE);
}

int vv_registry_register(struct vv_registry *r, const json_t *record, vv_registry_cb cb, void *arg)
{
    if (!json_is_object(record) || !json_is_string(json_object_get(record, "id")))
        return VV_EINVAL;
    struct vv__registry_req *rq = new_req(r, VV__REG_REGISTER, cb, arg);
    char *doc = json_dumps(record, JSON_COMPACT | JSON_SORT_KEYS);
    rq->doc = vv_xstrdup(doc);
    free(doc);
    rq->a = vv_xstrdup(json_string_value(json_object_get(record, "id")));
    return submit(r, rq);
}

int vv_registry_update(struct vv_registry *r, const char *id, const json_t *patch,
                       vv_registry_cb cb, void *arg)
{
    if (!json_is_object(patch))
        return VV_EINVAL;
    struct vv__registry_req *rq = new_req(r, VV__REG_UPDATE, cb, arg);
    rq->a = vv_xstrdup(id);
    char *doc = json_dumps(patch, JSON_COMPACT);
    rq->doc = vv_xstrdup(doc);
    free(doc);
    return submit(r, rq);
}

int vv_registry_deregister(struct vv_registry *r, const char *id, vv_registry_cb cb, void *arg)
{
    struct vv__registry_req *rq = new_req(r, VV__REG_DEREGISTER, cb, arg);
    rq->a = vv_xstrdup(id);
    return submit(r, rq);
}

int vv_registry_find_by_id(struct vv_registry *r, const char *id, vv_registry_cb cb, void *arg)
{
    struct vv__registry_req *rq = new_req(r, VV__REG_FIND_ID, cb, arg);
    rq->a = vv_xstrdup(id);
    return submit(r, rq);
}

int vv_registry_find_by_owner(struct vv_registry *r, const char *owner_did, const char *cursor,
                              uint32_t limit, vv_registry_cb cb, void *arg)
{
    if (!cursor_ok(cursor))
        return VV_EINVAL;
    struct vv__registry_req *rq = new_req(r, VV__REG_FIND_OWNER, cb, arg);
    rq->a = vv_xstrdup(owner_did);
    rq->b = dup_or_null(cursor);
    rq->limit = clamp_limit(limit);
    return submit(r, rq);
}

int vv_registry_find_by_audience(struct vv_registry *r, const char *type, const char *target,
                                 const char *cursor, uint32_t limit, vv_registry_cb cb, void *arg)
{
    if (!cursor_ok(cursor))
        return VV_EINVAL;
    struct vv__registry_req *rq = new_req(r, VV__REG_FIND_AUDIENCE, cb, arg);
    rq->a = vv_xstrdup(type);
    rq->b = dup_or_null(cursor);
    rq->c = vv_xstrdup(target ? target : "");
    rq->limit = clamp_limit(limit);
    return submit(r, rq);
}

int vv_registry_find_expired(struct vv_registry *r, uint64_t now_ms, const char *cursor,
                             uint32_t limit, vv_registry_cb cb, void *arg)
{
    if (!cursor_ok(cursor))
        return VV_EINVAL;
    struct vv__registry_req *rq = new_req(r, VV__REG_FIND_EXPIRED, cb, arg);
    rq->n = now_ms;
    rq->b = dup_or_null(cursor);
    rq->limit = clamp_limit(limit);
    return submit(r, rq);
}

int vv_registry_log_access(struct vv_registry *r, const char *id, const char *actor,
                           const char *action, uint64_t at_ms, vv_registry_cb cb, void *arg)
{
    struct vv__registry_req *rq = new_req(r, VV__REG_LOG_ACCESS, cb, arg);
    rq->a = vv_xstrdup(id);
    rq->b = vv_xstrdup(actor);
    rq->c = vv_xstrdup(action);
    rq->n = at_ms;
    return submit(r, rq);
}

int vv_registry_stats(struct vv_registry *r, const char *id, vv_registry_cb cb, void *arg)
{
    struct vv__registry_req *rq = new_req(r, VV__REG_STATS, cb, arg);
    rq->a = vv_xstrdup(id);
    return submit(r, rq);
}

int vv_registry_access_log(struct vv_registry *r, const char *id, const char *cursor,
                           uint32_t limit, vv_registry_cb cb, void *arg)
{
    if (cursor != NULL) {
        /* Access-log cursors are sequence numbers. */
        for (const char *p = cursor; *p; p++)
            if (*p < '0' || *p > '9')
                return VV_EINVAL;
        if (*cursor == '\0' || strlen(cursor) > 19)
            return VV_EINVAL;
    }
    struct vv__registry_req *rq = new_req(r, VV__REG_ACCESS_LOG, cb, arg);
    rq->a = vv_xstrdup(id);
    rq->b = dup_or_null(cursor);
    rq->limit = clamp_limit(limit);
    return submit(r, rq);
}
