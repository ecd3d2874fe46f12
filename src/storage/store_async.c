/*
 * The store's loop-facing API: each operation runs the synchronous function on libuv's
 * thread pool and its callback fires on the loop thread. At most max_pending operations are
 * in flight; beyond that a call is refused (VV_EBUSY) so a burst of requests cannot queue
 * unbounded work and memory. The pending count is touched only on the loop thread.
 */
#include <string.h>

#include "vivim/common.h"
#include "vivim/store.h"
#include "storage/store_internal.h"

struct store_op {
    uv_work_t req;
    struct vv_store *s;
    enum { OP_PUT, OP_GET, OP_GET_RAW, OP_CALL } kind;
    const uint8_t *data; /* put: borrowed until the callback */
    size_t len;
    bool has_opts;
    struct vv_store_put_opts opts;
    uint8_t owner[32];
    uint8_t addr[32];
    uint8_t *out; /* get: result, freed after the callback */
    size_t out_len;
    int status;
    vv_store_put_cb put_cb;
    vv_store_get_cb get_cb;
    vv_store_work_fn work_fn;
    vv_store_done_cb done_cb;
    void *arg;
};

static void op_work(uv_work_t *req)
{
    struct store_op *op = VV_CONTAINER_OF(req, struct store_op, req);
    switch (op->kind) {
    case OP_PUT:
        op->status =
            vv_store_put(op->s, op->data, op->len, op->has_opts ? &op->opts : NULL, op->addr);
        break;
    case OP_GET:
        op->status = vv_store_get(op->s, op->addr, &op->out, &op->out_len);
        break;
    case OP_GET_RAW:
        op->status = vv_store_get_raw(op->s, op->addr, &op->out, &op->out_len);
        break;
    case OP_CALL:
        op->status = op->work_fn(op->s, op->arg);
        break;
    }
}

static void op_after(uv_work_t *req, int status)
{
    struct store_op *op = VV_CONTAINER_OF(req, struct store_op, req);
    op->s->pending--;
    if (status != 0) /* UV_ECANCELED */
        op->status = status;
    if (op->kind == OP_PUT)
        op->put_cb(op->status, op->addr, op->arg);
    else if (op->kind == OP_CALL)
        op->done_cb(op->status, op->arg);
    else
        op->get_cb(op->status, op->status == 0 ? op->out : NULL, op->status == 0 ? op->out_len : 0,
                   op->arg);
    vv_free(op->out);
    vv_free(op);
}

static int submit(struct vv_store *s, uv_loop_t *loop, struct store_op *op)
{
    op->s = s;
    int rc = uv_queue_work(loop, &op->req, op_work, op_after);
    if (rc != 0) {
        vv_free(op);
        return rc;
    }
    s->pending++;
    return 0;
}

int vv_store_put_async(struct vv_store *s, uv_loop_t *loop, const uint8_t *data, size_t len,
                       const struct vv_store_put_opts *opts, vv_store_put_cb cb, void *arg)
{
    if (s->pending >= s->max_pending)
        return VV_EBUSY;
    struct store_op *op = vv_xcalloc(1, sizeof(*op));
    op->kind = OP_PUT;
    op->data = data;
    op->len = len;
    if (opts) {
        op->has_opts = true;
        op->opts = *opts;
        if (opts->owner) {
            memcpy(op->owner, opts->owner, 32);
            op->opts.owner = op->owner;
        }
    }
    op->put_cb = cb;
    op->arg = arg;
    return submit(s, loop, op);
}

static int get_async(struct vv_store *s, uv_loop_t *loop, int kind,
                     const uint8_t addr[VV_STORE_ADDR_BYTES], vv_store_get_cb cb, void *arg)
{
    if (s->pending >= s->max_pending)
        return VV_EBUSY;
    struct store_op *op = vv_xcalloc(1, sizeof(*op));
    op->kind = kind;
    memcpy(op->addr, addr, 32);
    op->get_cb = cb;
    op->arg = arg;
    return submit(s, loop, op);
}

int vv_store_get_async(struct vv_store *s, uv_loop_t *loop, const uint8_t addr[VV_STORE_ADDR_BYTES],
                       vv_store_get_cb cb, void *arg)
{
    return get_async(s, loop, OP_GET, addr, cb, arg);
}

int vv_store_get_raw_async(struct vv_store *s, uv_loop_t *loop,
                           const uint8_t addr[VV_STORE_ADDR_BYTES], vv_store_get_cb cb, void *arg)
{
    return get_async(s, loop, OP_GET_RAW, addr, cb, arg);
}

int vv_store_call_async(struct vv_store *s, uv_loop_t *loop, vv_store_work_fn work,
                        vv_store_done_cb done, void *arg)
{
    if (work == NULL || done == NULL)
        return VV_EINVAL;
    if (s->pending >= s->max_pending)
        return VV_EBUSY;
    struct store_op *op = vv_xcalloc(1, sizeof(*op));
    op->kind = OP_CALL;
    op->work_fn = work;
    op->done_cb = done;
    op->arg = arg;
    return submit(s, loop, op);
}

unsigned vv_store_pending(const struct vv_store *s)
{
    return s->pending;
}
