/*
 * Fuzz target: stream frames from a hostile peer (docs/protocol.md, "Streams") into a stream
 * multiplexer that accepts what the module would: the input is a sequence of records
 * [op (1 byte), length (2 bytes, big-endian), bytes], op 0 delivering the bytes as a message
 * from peer A, op 1 from peer B, op 2 a "down" of peer A, op 3 time passing by the length's
 * value in ms (idle timeouts), op 4 cancelling the newest stream still open. Every message
 * also goes through the frame decoder alone, whose output must respect the limits. Whatever
 * arrives: the mux's bytes stay within its bound, and every accepted stream ends exactly once
 * (at the latest when the mux is freed).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/env_stream.h"
#include "vivim/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CH          VV_CHANNEL_CRDT
#define MAX_TOTAL   (4u << 20) /* small bounds, so that the fuzzer reaches them */
#define MAX_PEER    (2u << 20)
#define MAX_STREAMS 64

static uint64_t now;
static struct {
    uint64_t id, due, repeat;
    vv_env_timer_cb cb;
    void *arg;
} timers[256];
static uint64_t next_timer;

static uint64_t now_ms(void *impl)
{
    (void)impl;
    return now;
}
static uint64_t timer_start(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    (void)impl;
    for (size_t i = 0; i < 256; i++) {
        if (timers[i].id == 0) {
            timers[i].id = ++next_timer;
            timers[i].due = now + (d ? d : 1);
            timers[i].repeat = r;
            timers[i].cb = cb;
            timers[i].arg = arg;
            return timers[i].id;
        }
    }
    abort(); /* the mux keeps far fewer timers than streams it bounds */
}
static void timer_cancel(void *impl, uint64_t id)
{
    (void)impl;
    for (size_t i = 0; i < 256; i++)
        if (timers[i].id == id)
            timers[i].id = 0;
}
static void random_bytes(void *impl, void *buf, size_t len)
{
    (void)impl;
    memset(buf, 0x5a, len);
}
static int send_(void *impl, const uint8_t *peer, uint8_t ch, const uint8_t *d, size_t n)
{
    (void)impl, (void)peer, (void)d;
    if (ch != CH || n > VV_WIRE_MAX_FRAME_BYTES)
        abort();
    return n % 3 == 0 ? VV_ECONN_BACKPRESSURE : 0; /* sometimes the queue is full */
}
static int connect_(void *impl, const uint8_t *peer, const char *address)
{
    (void)impl, (void)peer, (void)address;
    return 0;
}
static void disconnect_(void *impl, const uint8_t *peer)
{
    (void)impl, (void)peer;
}
static bool verify_(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    (void)impl, (void)pk, (void)m, (void)n, (void)s;
    return false;
}
static const struct vv_env_ops ops = {now_ms,   timer_start, timer_cancel, random_bytes, send_,
                                      connect_, disconnect_, verify_,      NULL,         NULL};

struct rx {
    int done_calls;
    struct vv_stream *s;
};
static struct rx rxs[MAX_STREAMS * 4];
static size_t n_rx;
static uint64_t consumed;

static void done_cb(void *arg, struct vv_stream *s, int status, uint8_t *buf, size_t len)
{
    (void)s;
    struct rx *r = arg;
    if (++r->done_calls != 1)
        abort();
    r->s = NULL;
    if (status == 0 && buf == NULL && len != 0)
        abort();
    if (status != 0 && buf != NULL)
        abort();
    vv_free(buf);
}

static int consume_cb(void *arg, struct vv_stream *s, const uint8_t *d, size_t n)
{
    (void)arg, (void)s, (void)d;
    if (n == 0 || n > VV_STREAM_CHUNK_BYTES)
        abort();
    consumed += n;
    return n == 7 ? VV_EINVAL : 0; /* a sink that fails now and then */
}

static int accept_cb(void *arg, struct vv_stream *s, const uint8_t peer[VV_NODE_ID_BYTES],
                     const uint8_t *meta, size_t meta_len, uint64_t total,
                     struct vv_stream_accept *how)
{
    (void)arg, (void)peer, (void)total;
    if (meta_len > VV_STREAM_MAX_META_BYTES || (meta_len > 0 && meta == NULL))
        abort();
    if (n_rx == sizeof(rxs) / sizeof(rxs[0]))
        return VV_EBUSY;
    if (meta_len > 0 && meta[0] == 'r')
        return VV_ESTREAM_REFUSED;
    struct rx *r = &rxs[n_rx++];
    r->done_calls = 0;
    r->s = s;
    how->consume = meta_len > 0 && meta[0] == 'c' ? consume_cb : NULL;
    how->max_bytes = meta_len > 1 ? (uint64_t)meta[1] << 12 : 1u << 20;
    how->window = meta_len > 2 ? (uint32_t)meta[2] << 10 : 0;
    how->done = done_cb;
    how->arg = r;
    return 0;
}

static void check_decoder(const uint8_t *d, size_t n)
{
    struct vv_wire_frame wf;
    struct vv_stream_frame f;
    if (vv_stream_frame_decode(d, n, &wf, &f) == 0) {
        if (f.sid == 0 || f.type < VV_STREAM_MSG_OPEN || f.type > VV_STREAM_MSG_STOP)
            abort();
        if (f.type == VV_STREAM_MSG_DATA && (f.n_bytes == 0 || f.n_bytes > VV_STREAM_CHUNK_BYTES))
            abort();
        if (f.type == VV_STREAM_MSG_OPEN && f.n_bytes > VV_STREAM_MAX_META_BYTES)
            abort();
        if ((f.type == VV_STREAM_MSG_ABORT || f.type == VV_STREAM_MSG_STOP) && f.value > 65535)
            abort();
    }
    vv_wire_frame_free(&wf);
}

static void fire(struct vv_env *env)
{
    for (size_t i = 0; i < 256; i++) {
        if (timers[i].id != 0 && timers[i].due <= now) {
            vv_env_timer_cb cb = timers[i].cb;
            void *arg = timers[i].arg;
            if (timers[i].repeat)
                timers[i].due = now + timers[i].repeat;
            else
                timers[i].id = 0;
            cb(env, arg);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vv_identity id;
    struct vv_env env = {.ops = &ops, .identity = &id};
    uint8_t peer_a[VV_NODE_ID_BYTES], peer_b[VV_NODE_ID_BYTES];
    memset(peer_a, 0xa1, sizeof(peer_a));
    memset(peer_b, 0xb2, sizeof(peer_b));
    now = 1000;
    memset(timers, 0, sizeof(timers));
    n_rx = 0;
    consumed = 0;
    struct vv_stream_mux *mux = vv_stream_mux_new(&env, CH, accept_cb, NULL);
    vv_stream_mux_set_limits(mux, 4, MAX_PEER, MAX_TOTAL);
    size_t pos = 0;
    while (size - pos >= 3) {
        uint8_t op = data[pos];
        size_t n = (size_t)data[pos + 1] << 8 | data[pos + 2];
        pos += 3;
        if (op % 5 <= 1) {
            n = VV_MIN(n, size - pos);
            check_decoder(data + pos, n);
            vv_stream_mux_recv(mux, op % 5 ? peer_b : peer_a, data + pos, n);
            pos += n;
        } else if (op % 5 == 2) {
            vv_stream_mux_peer(mux, peer_a, false);
        } else if (op % 5 == 3) {
            now += n;
            fire(&env);
        } else {
            for (size_t i = n_rx; i-- > 0;) {
                if (rxs[i].s != NULL && rxs[i].done_calls == 0) {
                    vv_stream_cancel(rxs[i].s);
                    break;
                }
            }
        }
        const struct vv_stream_stats *st = vv_stream_mux_stats(mux);
        if (st->buffered_bytes > MAX_TOTAL || st->open_in > 8)
            abort();
    }
    vv_stream_mux_free(mux);
    for (size_t i = 0; i < n_rx; i++)
        if (rxs[i].done_calls != 1)
            abort();   /* every accepted stream ended exactly once */
    vv_env_fini(&env); /* an answer-typed frame from the fuzzer starts the request layer */
    return 0;
}
