/*
 * The libuv driver of vv_env: the one place where protocol modules' time, timers and
 * randomness meet the real world. Each vv_env timer is a heap-allocated uv_timer_t in a
 * small hash table keyed by id; a cancelled or finished timer is closed and freed from its
 * close callback, as libuv requires.
 */
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "vivim/common.h"
#include "vivim/env_uv.h"

#define TIMER_BUCKETS 256

struct env_timer {
    uv_timer_t h;
    uint64_t id;
    vv_env_timer_cb cb;
    void *arg;
    bool repeating;
    struct env_timer *next; /* bucket chain */
    struct vv_env_uv *owner;
};

struct vv_env_uv {
    struct vv_env env;
    uv_loop_t *loop;
    struct vv_env_transport transport;
    int (*dgram_send)(void *t, const char *address, const uint8_t *frame, size_t len);
    void *dgram_t;
    struct env_timer *buckets[TIMER_BUCKETS];
    uint64_t next_id;
    unsigned live;    /* timers in the table */
    unsigned closing; /* handles whose close callback has not run */
    bool closed;
};

static struct vv_env_uv *self(void *impl)
{
    return impl;
}

static uint64_t op_now_ms(void *impl)
{
    return uv_now(self(impl)->loop);
}

static void unlink_timer(struct vv_env_uv *e, struct env_timer *t)
{
    struct env_timer **pp = &e->buckets[t->id % TIMER_BUCKETS];
    while (*pp && *pp != t)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = t->next;
        e->live--;
    }
}

static void maybe_free(struct vv_env_uv *e)
{
    if (e->closed && e->closing == 0 && e->live == 0)
        vv_free(e);
}

static void timer_closed(uv_handle_t *h)
{
    struct env_timer *t = h->data;
    struct vv_env_uv *e = t->owner;
    vv_free(t);
    e->closing--;
    maybe_free(e);
}

static void release_timer(struct vv_env_uv *e, struct env_timer *t)
{
    unlink_timer(e, t);
    uv_timer_stop(&t->h);
    e->closing++;
    uv_close((uv_handle_t *)&t->h, timer_closed);
}

static void on_timer(uv_timer_t *h)
{
    struct env_timer *t = h->data;
    struct vv_env_uv *e = t->owner;
    vv_env_timer_cb cb = t->cb;
    void *arg = t->arg;
    if (!t->repeating)
        release_timer(e, t); /* before the callback: it may start a timer with this arg */
    cb(&e->env, arg);
}

static uint64_t op_timer_start(void *impl, uint64_t delay_ms, uint64_t repeat_ms,
                               vv_env_timer_cb cb, void *arg)
{
    struct vv_env_uv *e = self(impl);
    struct env_timer *t = vv_xcalloc(1, sizeof(*t));
    t->id = ++e->next_id;
    t->cb = cb;
    t->arg = arg;
    t->repeating = repeat_ms > 0;
    t->owner = e;
    uv_timer_init(e->loop, &t->h);
    t->h.data = t;
    uv_timer_start(&t->h, on_timer, delay_ms, repeat_ms);
    t->next = e->buckets[t->id % TIMER_BUCKETS];
    e->buckets[t->id % TIMER_BUCKETS] = t;
    e->live++;
    return t->id;
}

static void op_timer_cancel(void *impl, uint64_t id)
{
    struct vv_env_uv *e = self(impl);
    for (struct env_timer *t = e->buckets[id % TIMER_BUCKETS]; t; t = t->next) {
        if (t->id == id) {
            release_timer(e, t);
            return;
        }
    }
}

static void op_random(void *impl, void *buf, size_t len)
{
    (void)impl;
    randombytes_buf(buf, len);
}

static int op_send(void *impl, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                   const uint8_t *data, size_t len)
{
    struct vv_env_uv *e = self(impl);
    if (e->transport.send == NULL)
        return VV_ECONN_NOT_CONNECTED;
    return e->transport.send(e->transport.t, peer, channel, data, len);
}

static int op_connect(void *impl, const uint8_t *peer, const char *address)
{
    struct vv_env_uv *e = self(impl);
    if (e->transport.connect == NULL)
        return VV_ECONN_NOT_CONNECTED;
    return e->transport.connect(e->transport.t, peer, address);
}

static void op_disconnect(void *impl, const uint8_t peer[VV_NODE_ID_BYTES])
{
    struct vv_env_uv *e = self(impl);
    if (e->transport.disconnect != NULL)
        e->transport.disconnect(e->transport.t, peer);
}

static bool op_verify(void *impl, const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg,
                      size_t len, const uint8_t sig[64])
{
    (void)impl;
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0;
}

static uint64_t op_wall_ms(void *impl)
{
    (void)impl;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A job on libuv's thread pool. It holds no pointer to the env: the env may end while the
 * job runs, and after_work must then touch only the job. */
struct offload {
    uv_work_t req;
    void (*work)(void *job);
    void (*done)(void *job);
    void *job;
};

static void offload_work(uv_work_t *req)
{
    struct offload *o = req->data;
    o->work(o->job);
}

static void offload_done(uv_work_t *req, int status)
{
    (void)status; /* only uv_cancel makes it UV_ECANCELED, and nothing here cancels */
    struct offload *o = req->data;
    o->done(o->job);
    vv_free(o);
}

static int op_offload(void *impl, void (*work)(void *job), void (*done)(void *job), void *job)
{
    struct offload *o = vv_xcalloc(1, sizeof(*o));
    o->req.data = o;
    o->work = work;
    o->done = done;
    o->job = job;
    if (uv_queue_work(self(impl)->loop, &o->req, offload_work, offload_done) != 0) {
        vv_free(o);
        return VV_EIO;
    }
    return 0;
}

static int op_datagram(void *impl, const char *address, const uint8_t *frame, size_t len)
{
    struct vv_env_uv *e = self(impl);
    if (e->dgram_send == NULL)
        return VV_EDGRAM_UNSUPPORTED;
    return e->dgram_send(e->dgram_t, address, frame, len);
}

static const struct vv_env_ops uv_env_ops = {
    .now_ms = op_now_ms,
    .timer_start = op_timer_start,
    .timer_cancel = op_timer_cancel,
    .random_bytes = op_random,
    .send = op_send,
    .connect = op_connect,
    .disconnect = op_disconnect,
    .verify = op_verify,
    .wall_ms = op_wall_ms,
    .offload = op_offload,
    .datagram = op_datagram,
};

struct vv_env_uv *vv_env_uv_new(uv_loop_t *loop, const struct vv_identity *identity)
{
    struct vv_env_uv *e = vv_xcalloc(1, sizeof(*e));
    e->loop = loop;
    e->env.ops = &uv_env_ops;
    e->env.impl = e;
    e->env.identity = identity;
    return e;
}

void vv_env_uv_set_transport(struct vv_env_uv *e, const struct vv_env_transport *t)
{
    e->transport = *t;
}

void vv_env_uv_set_datagram(struct vv_env_uv *e,
                            int (*send)(void *t, const char *address, const uint8_t *frame,
                                        size_t len),
                            void *t)
{
    e->dgram_send = send;
    e->dgram_t = t;
}

struct vv_env *vv_env_uv_env(struct vv_env_uv *e)
{
    return &e->env;
}

unsigned vv_env_uv_timers(const struct vv_env_uv *e)
{
    return e->live;
}

void vv_env_uv_close(struct vv_env_uv *e)
{
    vv_env_fini(&e->env); /* the request layer's state and timer, before the timers go */
    e->closed = true;
    for (int b = 0; b < TIMER_BUCKETS; b++)
        while (e->buckets[b])
            release_timer(e, e->buckets[b]);
    maybe_free(e);
}
