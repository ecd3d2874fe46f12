/*
 * Streams on vv_env between two nodes wired through an in-memory fake env: each node's sends
 * wait in one queue until the test delivers them, a node's undelivered bytes may be capped
 * (sends past the cap answer VV_ECONN_BACKPRESSURE, as a full connection queue does), and
 * timers run on a virtual clock. Every frame is also watched on its way: DATA is checked
 * against the credit the sender had been told, so the window can be proved never exceeded.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "vivim/env_stream.h"
#include "vivim/wire.h"

#define CH      VV_CHANNEL_STORE
#define MAXMSG  4096
#define MAXTIME 64

struct msg {
    int to;
    uint8_t *data;
    size_t len;
};

struct timer {
    struct vv_env *env;
    uint64_t id, due, repeat;
    vv_env_timer_cb cb;
    void *arg;
};

struct world;
struct node {
    struct world *w;
    int index;
    struct vv_identity id;
    struct vv_env env;
    struct vv_stream_mux *mux;
    size_t queued_bytes; /* sent, not delivered yet */
    size_t queue_cap;    /* 0 = unbounded */
    bool connected;
    uint64_t backpressured; /* sends refused */
    uint64_t other_msgs;    /* messages the mux did not claim */
    /* What the node's module saw as a receiver. */
    int accept_rc;
    struct vv_stream_accept how;
    uint64_t accepts;
    struct vv_stream *last_in; /* the newest stream accepted */
};

struct world {
    struct node n[2];
    struct msg q[MAXMSG];
    size_t head, tail;
    struct timer t[MAXTIME];
    uint64_t next_timer;
    uint64_t now;
    /* The flow-control watch: credit delivered to node 0 for its newest stream, and the
     * highest DATA end node 0 ever sent. */
    uint64_t credit_seen, max_data_end, max_outstanding;
    bool window_broken;
};

/* Per-stream results, kept by the callbacks. */
struct side {
    int done_calls, status;
    uint8_t *buf;
    size_t len;
    uint8_t *consumed;
    size_t n_consumed;
    /* producer */
    const uint8_t *src;
    size_t src_len, given;
    uint64_t asks;
    bool busy_once, end_with_zero;
};

static uint64_t f_now(void *impl)
{
    return ((struct node *)impl)->w->now;
}
static uint64_t f_timer(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    struct node *n = impl;
    struct world *w = n->w;
    for (int i = 0; i < MAXTIME; i++) {
        if (w->t[i].id == 0) {
            w->t[i] = (struct timer){&n->env, ++w->next_timer, w->now + d, r, cb, arg};
            return w->t[i].id;
        }
    }
    fail_msg("out of timers");
    return 0;
}
static void f_cancel(void *impl, uint64_t id)
{
    struct world *w = ((struct node *)impl)->w;
    for (int i = 0; i < MAXTIME; i++)
        if (w->t[i].id == id)
            w->t[i].id = 0;
}
static void f_random(void *impl, void *buf, size_t len)
{
    memset(buf, 7, len);
}

/* Watches node 0's DATA against the credit delivered to it so far. */
static void watch_send(struct world *w, int from, const uint8_t *data, size_t len)
{
    struct vv_wire_frame wf = {0};
    struct vv_stream_frame f;
    if (from != 0 || vv_stream_frame_decode(data, len, &wf, &f) != 0) {
        vv_wire_frame_free(&wf);
        return;
    }
    if (f.type == VV_STREAM_MSG_DATA) {
        uint64_t end = f.value + f.n_bytes;
        if (end > w->credit_seen)
            w->window_broken = true;
        w->max_data_end = VV_MAX(w->max_data_end, end);
    }
    vv_wire_frame_free(&wf);
}

static int f_send(void *impl, const uint8_t *peer, uint8_t ch, const uint8_t *data, size_t len)
{
    struct node *n = impl;
    struct world *w = n->w;
    assert_int_equal(ch, CH);
    if (!n->connected)
        return VV_ECONN_NOT_CONNECTED;
    if (n->queue_cap && n->queued_bytes + len > n->queue_cap) {
        n->backpressured++;
        return VV_ECONN_BACKPRESSURE;
    }
    assert_true(w->tail - w->head < MAXMSG);
    watch_send(w, n->index, data, len);
    struct msg *m = &w->q[w->tail++ % MAXMSG];
    m->to = 1 - n->index;
    m->data = vv_xmalloc(len);
    memcpy(m->data, data, len);
    m->len = len;
    n->queued_bytes += len;
    return 0;
}
static int f_connect(void *impl, const uint8_t *peer, const char *address)
{
    return 0;
}
static void f_disconnect(void *impl, const uint8_t *peer)
{
}
static bool f_verify(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    return false;
}
static const struct vv_env_ops ops = {f_now,     f_timer,      f_cancel, f_random, f_send,
                                      f_connect, f_disconnect, f_verify, NULL,     NULL};

static void on_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    struct node *n = arg;
    if (!vv_stream_mux_recv(n->mux, peer, data, len))
        n->other_msgs++;
}
static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    struct node *n = arg;
    vv_stream_mux_peer(n->mux, peer, up);
}

static void done_cb(void *arg, struct vv_stream *s, int status, uint8_t *buf, size_t len)
{
    struct side *d = arg;
    d->done_calls++;
    d->status = status;
    d->buf = buf;
    d->len = len;
}

static int consume_cb(void *arg, struct vv_stream *s, const uint8_t *data, size_t n)
{
    struct side *d = arg;
    d->consumed = vv_xrealloc(d->consumed, d->n_consumed + n);
    memcpy(d->consumed + d->n_consumed, data, n);
    d->n_consumed += n;
    return 0;
}

static int produce_cb(void *arg, struct vv_stream *s, uint8_t *buf, size_t n)
{
    struct side *d = arg;
    d->asks++;
    if (d->busy_once) {
        d->busy_once = false;
        return VV_EBUSY;
    }
    size_t k = VV_MIN(n, d->src_len - d->given);
    memcpy(buf, d->src + d->given, k);
    d->given += k;
    return (int)k;
}

static struct side *rx; /* where the next accepted stream reports */

static int accept_cb(void *arg, struct vv_stream *s, const uint8_t peer[VV_NODE_ID_BYTES],
                     const uint8_t *meta, size_t meta_len, uint64_t total,
                     struct vv_stream_accept *how)
{
    struct node *n = arg;
    n->accepts++;
    if (n->accept_rc != 0)
        return n->accept_rc;
    n->last_in = s;
    *how = n->how;
    how->done = done_cb;
    how->arg = rx;
    return 0;
}

static void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    w->now = 1000;
    for (int i = 0; i < 2; i++) {
        struct node *n = &w->n[i];
        n->w = w;
        n->index = i;
        n->connected = true;
        memset(n->id.node_id, 0xa0 + i, VV_NODE_ID_BYTES);
        n->env = (struct vv_env){.ops = &ops, .impl = n, .identity = &n->id};
        n->mux = vv_stream_mux_new(&n->env, CH, accept_cb, n);
        n->how.max_bytes = 64u << 20;
        vv_env_set_channel(&n->env, CH, on_recv, on_peer, n);
    }
}

static void deliver_one(struct world *w)
{
    struct msg m = w->q[w->head++ % MAXMSG];
    struct node *to = &w->n[m.to];
    struct node *from = &w->n[1 - m.to];
    from->queued_bytes -= m.len;
    if (m.to == 0) {
        /* A CREDIT reaching node 0: what its DATA may now cover. */
        struct vv_wire_frame wf;
        struct vv_stream_frame f;
        if (vv_stream_frame_decode(m.data, m.len, &wf, &f) == 0 && f.type == VV_STREAM_MSG_CREDIT)
            w->credit_seen = VV_MAX(w->credit_seen, f.value);
        vv_wire_frame_free(&wf);
    }
    if (to->connected)
        vv_env_deliver(&to->env, from->id.node_id, CH, m.data, m.len);
    vv_free(m.data);
}

/* Fires the timers due at now. */
static void fire_timers(struct world *w)
{
    for (int i = 0; i < MAXTIME; i++) {
        struct timer t = w->t[i];
        if (t.id == 0 || t.due > w->now)
            continue;
        if (t.repeat)
            w->t[i].due = w->now + t.repeat;
        else
            w->t[i].id = 0;
        t.cb(t.env, t.arg);
    }
}

/* Delivers everything, a millisecond of time passing (and timers firing) whenever the queue
 * is empty, until nothing moves for a while or `ms` passed. */
static void run(struct world *w, uint64_t ms)
{
    uint64_t end = w->now + ms;
    while (w->now < end) {
        if (w->head < w->tail) {
            deliver_one(w);
            continue;
        }
        w->now++;
        fire_timers(w);
    }
}

static void world_free(struct world *w)
{
    for (int i = 0; i < 2; i++) {
        vv_env_set_channel(&w->n[i].env, CH, NULL, NULL, NULL);
        vv_stream_mux_free(w->n[i].mux); /* its ABORT and STOP frames land in the queue */
    }
    while (w->head < w->tail)
        vv_free(w->q[w->head++ % MAXMSG].data);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = vv_xmalloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

static void side_free(struct side *d)
{
    vv_free(d->buf);
    vv_free(d->consumed);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_large_payload_arrives_whole_and_in_order(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    size_t len = 3 * (1u << 20) + 12345; /* three frames' worth and a ragged end */
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len}, r = {0};
    rx = &r;
    struct vv_stream *s;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, (const uint8_t *)"doc", 3, len,
                                    produce_cb, done_cb, &tx, &s),
                     0);
    assert_true(vv_stream_outgoing(s));
    run(w, 100);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, 0);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.buf, src, len);
    /* No frame over a chunk: every DATA well below the 1 MiB frame limit. */
    const struct vv_stream_stats *st = vv_stream_mux_stats(w->n[0].mux);
    assert_int_equal(st->bytes_sent, len);
    assert_int_equal(st->completed_out, 1);
    assert_int_equal(st->open_out, 0);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->buffered_bytes, 0);
    assert_int_equal(w->n[0].other_msgs + w->n[1].other_msgs, 0);
    side_free(&r);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

/* The receiver consumes slowly (delivery stalls until the test lets it go on): the sender
 * never has more than the granted window past what the receiver took. */
static void test_sender_never_exceeds_the_window(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    w->n[1].how.consume = consume_cb;
    w->n[1].how.window = 128u << 10;
    size_t len = 2u << 20;
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len}, r = {0};
    rx = &r;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, len, produce_cb,
                                    done_cb, &tx, NULL),
                     0);
    /* Deliver one message at a time and measure what is in flight from node 0. */
    for (int guard = 0; guard < 100000 && tx.done_calls == 0; guard++) {
        if (w->head == w->tail) {
            w->now++;
            fire_timers(w);
            continue;
        }
        deliver_one(w);
        uint64_t outstanding = w->max_data_end - r.n_consumed;
        w->max_outstanding = VV_MAX(w->max_outstanding, outstanding);
    }
    run(w, 10); /* the END on its way */
    assert_false(w->window_broken);
    assert_true(w->max_outstanding <= (128u << 10));
    assert_true(w->max_outstanding >= (64u << 10)); /* and the window was used */
    assert_int_equal(tx.status, 0);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, 0);
    assert_null(r.buf);
    assert_int_equal(r.n_consumed, len);
    assert_memory_equal(r.consumed, src, len);
    side_free(&r);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

static void test_backpressure_pauses_then_resumes(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    w->n[0].queue_cap = 150u << 10; /* two chunks and a bit */
    size_t len = 1536u << 10;
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len}, r = {0};
    rx = &r;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, len, produce_cb,
                                    done_cb, &tx, NULL),
                     0);
    deliver_one(w); /* OPEN: node 1 accepts and grants a 1 MiB window */
    deliver_one(w); /* CREDIT: node 0 sends until its connection's queue is full */
    assert_true(w->n[0].backpressured >= 1);
    uint64_t refused = w->n[0].backpressured;
    /* Nothing is delivered for 50 ms: the stream waits, retrying on its timer (one try per
     * VV_STREAM_RETRY_MS, not a spin), and does not fail. */
    for (int i = 0; i < 50; i++) {
        w->now++;
        fire_timers(w);
    }
    assert_true(w->n[0].backpressured > refused);
    assert_true(w->n[0].backpressured <= refused + 50 / VV_STREAM_RETRY_MS + 1);
    assert_int_equal(tx.done_calls, 0);
    assert_true(vv_stream_mux_stats(w->n[0].mux)->backpressure_waits > 0);
    run(w, 2000);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.buf, src, len);
    side_free(&r);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

static void test_peer_down_aborts_both_sides_once(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    size_t len = 4u << 20;
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len}, r = {0};
    rx = &r;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, len, produce_cb,
                                    done_cb, &tx, NULL),
                     0);
    for (int i = 0; i < 10; i++)
        deliver_one(w);
    assert_int_equal(r.done_calls, 0);
    w->n[0].connected = w->n[1].connected = false;
    vv_env_peer_event(&w->n[0].env, w->n[1].id.node_id, false);
    vv_env_peer_event(&w->n[1].env, w->n[0].id.node_id, false);
    run(w, 60000); /* past the idle timeout: nothing fires again */
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, VV_ECONN_NOT_CONNECTED);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, VV_ECONN_NOT_CONNECTED);
    assert_null(r.buf);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->buffered_bytes, 0);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->open_in, 0);
    side_free(&r);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

static void test_receiver_refuses(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    w->n[1].accept_rc = VV_ESTREAM_REFUSED;
    uint8_t src[100] = {0};
    struct side tx = {.src = src, .src_len = sizeof(src)}, r = {0};
    rx = &r;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, sizeof(src),
                                    produce_cb, done_cb, &tx, NULL),
                     0);
    run(w, 100);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, VV_ESTREAM_REFUSED);
    assert_int_equal(tx.asks, 0); /* no byte was produced for a refused stream */
    assert_int_equal(r.done_calls, 0);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->refused, 1);
    world_free(w);
    vv_free(w);
}

/* The receiver stops a stream partway by cancelling it: the sender ends once, ABORTED. */
static void test_receiver_cancels_midway(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    w->n[1].how.consume = consume_cb;
    size_t len = 4u << 20;
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len}, r = {0};
    rx = &r;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, len, produce_cb,
                                    done_cb, &tx, NULL),
                     0);
    while (r.n_consumed < (256u << 10))
        deliver_one(w);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->open_in, 1);
    assert_false(vv_stream_outgoing(w->n[1].last_in));
    vv_stream_cancel(w->n[1].last_in);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, VV_ECLOSED);
    run(w, 100);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, VV_ESTREAM_ABORTED);
    assert_true(tx.given < len); /* the sender stopped producing */
    side_free(&r);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

static void test_sender_cancel_reaches_the_receiver(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    size_t len = 4u << 20;
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len}, r = {0};
    rx = &r;
    struct vv_stream *s;
    assert_int_equal(
        vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, len, produce_cb, done_cb, &tx, &s),
        0);
    for (int i = 0; i < 8; i++)
        deliver_one(w);
    vv_stream_cancel(s);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, VV_ECLOSED);
    run(w, 100);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, VV_ESTREAM_ABORTED);
    assert_null(r.buf);
    /* Chunks that were in flight when the ABORT arrived are strays, not errors. */
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->bad_frames, 0);
    side_free(&r);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

static void test_bounds_are_enforced(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    uint8_t src[10] = {0};
    struct side tx[6] = {0}, r[6] = {0};
    /* Declared longer than the receiver takes: TOO_LARGE, refused before any byte. */
    w->n[1].how.max_bytes = 1000;
    tx[0] = (struct side){.src = src, .src_len = sizeof(src)};
    rx = &r[0];
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, 5000, produce_cb,
                                    done_cb, &tx[0], NULL),
                     0);
    run(w, 10);
    assert_int_equal(tx[0].status, VV_ESTREAM_TOO_LARGE);
    /* The module had accepted: it hears the layer's refusal through its done callback. */
    assert_int_equal(r[0].done_calls, 1);
    assert_int_equal(r[0].status, VV_ESTREAM_TOO_LARGE);

    /* Streams per peer: two may be open here; the third is refused BUSY. */
    vv_stream_mux_set_limits(w->n[1].mux, 2, 0, 0);
    w->n[1].how.max_bytes = 1u << 20; /* unknown lengths reserve this: well inside the bytes */
    for (int i = 1; i <= 3; i++) {
        tx[i] = (struct side){.src = src, .src_len = sizeof(src), .busy_once = true};
        rx = &r[i];
        assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0,
                                        VV_STREAM_LENGTH_UNKNOWN, produce_cb, done_cb, &tx[i],
                                        NULL),
                         0);
        run(w, 1);
    }
    assert_int_equal(tx[3].status, VV_EBUSY);
    assert_int_equal(tx[3].done_calls, 1);
    assert_int_equal(r[3].done_calls, 0); /* refused before the module was asked */
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->open_in, 2);

    /* Sender side: per-peer bound on outgoing streams. */
    vv_stream_mux_set_limits(w->n[0].mux, 2, 0, 0);
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, 1, produce_cb,
                                    done_cb, &tx[4], NULL),
                     VV_ELIMIT);
    world_free(w); /* the two open streams end with VV_ECLOSED on both sides */
    for (int i = 1; i <= 2; i++) {
        assert_int_equal(tx[i].done_calls, 1);
        assert_int_equal(tx[i].status, VV_ECLOSED);
        assert_int_equal(r[i].done_calls, 1);
    }

    /* Bytes per peer: a reassembled stream reserves its declared length. */
    world_init(w);
    vv_stream_mux_set_limits(w->n[1].mux, 0, 3u << 20, 0);
    tx[0] = (struct side){.src = src, .src_len = sizeof(src), .busy_once = true};
    tx[1] = (struct side){.src = src, .src_len = sizeof(src), .busy_once = true};
    memset(r, 0, sizeof(r));
    rx = &r[0];
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, 2u << 20, produce_cb,
                                    done_cb, &tx[0], NULL),
                     0);
    run(w, 1);
    rx = &r[1];
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, 2u << 20, produce_cb,
                                    done_cb, &tx[1], NULL),
                     0);
    run(w, 1);
    assert_int_equal(tx[0].done_calls, 0);
    assert_int_equal(tx[1].status, VV_EBUSY);
    assert_int_equal(r[1].done_calls, 1);
    assert_int_equal(r[1].status, VV_EBUSY);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->buffered_bytes, 2u << 20);
    world_free(w);
    vv_free(w);
}

/* A hostile sender that ignores the credit is stopped (PROTOCOL) without the bytes being
 * kept; an id reused while open ends the stream too. */
static void test_data_past_credit_is_a_protocol_violation(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    struct side r = {0};
    rx = &r;
    const uint8_t *from = w->n[0].id.node_id;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    /* OPEN sid 9 of 1,000 bytes: credit is granted for those 1,000 only; a chunk of 2,000
     * breaks it. */
    static uint8_t chunk[2000];
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, CH << 8 | VV_STREAM_MSG_OPEN, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 9);
    msgpack_pack_uint64(&pk, 1000);
    msgpack_pack_bin(&pk, 0);
    assert_true(vv_stream_mux_recv(w->n[1].mux, from, (uint8_t *)sb.data, sb.size));
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(w->n[1].accepts, 1);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, CH << 8 | VV_STREAM_MSG_DATA, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 9);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_bin(&pk, sizeof(chunk));
    msgpack_pack_bin_body(&pk, chunk, sizeof(chunk));
    assert_true(vv_stream_mux_recv(w->n[1].mux, from, (uint8_t *)sb.data, sb.size));
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, VV_ESTREAM_PROTOCOL);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->bad_frames, 1);
    /* OPEN sid 10 of unknown length, then DATA at offset 5 (a gap): PROTOCOL too. */
    struct side r2 = {0};
    rx = &r2;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, CH << 8 | VV_STREAM_MSG_OPEN, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 10);
    msgpack_pack_nil(&pk);
    msgpack_pack_bin(&pk, 0);
    assert_true(vv_stream_mux_recv(w->n[1].mux, from, (uint8_t *)sb.data, sb.size));
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, CH << 8 | VV_STREAM_MSG_DATA, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 10);
    msgpack_pack_uint64(&pk, 5);
    msgpack_pack_bin(&pk, 10);
    msgpack_pack_bin_body(&pk, chunk, 10);
    assert_true(vv_stream_mux_recv(w->n[1].mux, from, (uint8_t *)sb.data, sb.size));
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(r2.done_calls, 1);
    assert_int_equal(r2.status, VV_ESTREAM_PROTOCOL);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->bad_frames, 2);
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->buffered_bytes, 0);
    /* Garbage in a stream type is counted, claimed, and changes nothing. */
    uint8_t junk[] = {0x95, 0x01, 0x00, 0xcd, CH, VV_STREAM_MSG_DATA, 0x00, 0x90};
    assert_true(vv_stream_mux_recv(w->n[1].mux, from, junk, sizeof(junk)));
    assert_int_equal(vv_stream_mux_stats(w->n[1].mux)->bad_frames, 3);
    /* A module message on the channel is not claimed. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, CH << 8 | 0x01, 0);
    msgpack_pack_array(&pk, 0);
    assert_false(vv_stream_mux_recv(w->n[1].mux, from, (uint8_t *)sb.data, sb.size));
    msgpack_sbuffer_destroy(&sb);
    world_free(w);
    vv_free(w);
}

static void test_idle_stream_times_out(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    uint8_t src[10] = {0};
    struct side tx = {.src = src, .src_len = sizeof(src)};
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, 10, produce_cb,
                                    done_cb, &tx, NULL),
                     0);
    /* The OPEN is lost: nothing ever comes back. */
    while (w->head < w->tail) {
        w->n[0].queued_bytes -= w->q[w->head % MAXMSG].len;
        vv_free(w->q[w->head++ % MAXMSG].data);
    }
    w->now += VV_STREAM_IDLE_TIMEOUT_MS - 1;
    fire_timers(w);
    assert_int_equal(tx.done_calls, 0);
    run(w, VV_STREAM_IDLE_TIMEOUT_MS);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, VV_ETIMEDOUT);
    world_free(w);
    vv_free(w);
}

/* Unknown length: the producer ends the payload; a producer with nothing for now waits for
 * vv_stream_resume; the ids of two streams to one peer differ. */
static void test_unknown_length_and_resume(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    size_t len = 300000;
    uint8_t *src = pattern(len);
    struct side tx = {.src = src, .src_len = len, .busy_once = true}, r = {0};
    struct side tx2 = {.src = src, .src_len = 0}, r2 = {0};
    rx = &r;
    struct vv_stream *s, *s2;
    assert_int_equal(vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0,
                                    VV_STREAM_LENGTH_UNKNOWN, produce_cb, done_cb, &tx, &s),
                     0);
    run(w, 10);
    assert_int_equal(tx.asks, 1);
    assert_int_equal(tx.done_calls, 0);
    rx = &r2;
    assert_int_equal(
        vv_stream_open(w->n[0].mux, w->n[1].id.node_id, NULL, 0, 0, produce_cb, done_cb, &tx2, &s2),
        0);
    assert_true(vv_stream_id(s) != vv_stream_id(s2));
    run(w, 10);
    assert_int_equal(tx2.status, 0); /* an empty payload completes */
    assert_int_equal(r2.done_calls, 1);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r2.len, 0);
    vv_stream_resume(s);
    run(w, 100);
    assert_int_equal(tx.done_calls, 1);
    assert_int_equal(tx.status, 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.buf, src, len);
    side_free(&r);
    side_free(&r2);
    vv_free(src);
    world_free(w);
    vv_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_payload_arrives_whole_and_in_order),
        cmocka_unit_test(test_sender_never_exceeds_the_window),
        cmocka_unit_test(test_backpressure_pauses_then_resumes),
        cmocka_unit_test(test_peer_down_aborts_both_sides_once),
        cmocka_unit_test(test_receiver_refuses),
        cmocka_unit_test(test_receiver_cancels_midway),
        cmocka_unit_test(test_sender_cancel_reaches_the_receiver),
        cmocka_unit_test(test_bounds_are_enforced),
        cmocka_unit_test(test_data_past_credit_is_a_protocol_violation),
        cmocka_unit_test(test_idle_stream_times_out),
        cmocka_unit_test(test_unknown_length_and_resume),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
