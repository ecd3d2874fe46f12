/*
 * Secure sessions in memory, no sockets: the latency of a whole handshake (both sides,
 * session_new to established, p50/p99), and transport throughput sealing frames on one side
 * and feeding them to the other (decrypt in place), for 64 KiB and 1 MiB frames.
 * Usage: bench_session [handshakes] [megabytes].
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vivim/common.h"
#include "vivim/session.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct end {
    struct vv_session *s;
    uint8_t wire[2048];
    size_t wire_len;
    int established;
    size_t frames, bytes;
};

static void on_write(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;
    if (e->wire_len + len > sizeof(e->wire))
        abort();
    memcpy(e->wire + e->wire_len, data, len);
    e->wire_len += len;
}

static void on_established(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES], const uint8_t pk[32],
                           const uint8_t *hello, size_t hello_len)
{
    ((struct end *)arg)->established = 1;
}

static void on_frame(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;
    e->frames++;
    e->bytes += len;
}

static const struct vv_session_cbs cbs = {on_write, on_established, on_frame};

static void handshake(const struct vv_session_keys *ka, const struct vv_session_keys *kb,
                      const uint8_t *expect, struct end *a, struct end *b)
{
    static const char hello[] = "node-type=full caps=dht,pubsub,crdt listen=192.0.2.1:7946";
    memset(a, 0, sizeof(*a));
    memset(b, 0, sizeof(*b));
    a->s = vv_session_new(ka, true, expect, (const uint8_t *)hello, sizeof(hello) - 1, &cbs, a);
    b->s = vv_session_new(kb, false, NULL, (const uint8_t *)hello, sizeof(hello) - 1, &cbs, b);
    if (!a->s || !b->s || vv_session_start(a->s) != 0)
        abort();
    for (int i = 0; i < 3; i++) {
        struct end *from = i % 2 ? b : a, *to = i % 2 ? a : b;
        if (vv_session_feed(to->s, from->wire, from->wire_len) != 0)
            abort();
        from->wire_len = 0;
    }
    if (!a->established || !b->established)
        abort();
}

static void throughput(struct end *a, struct end *b, size_t frame, size_t total_mb)
{
    uint8_t *plain = vv_xmalloc(frame), *out = vv_xmalloc(frame + VV_SESSION_OVERHEAD);
    randombytes_buf(plain, frame);
    size_t n = total_mb * 1024 * 1024 / frame;
    size_t before = b->bytes;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        if (vv_session_seal(a->s, plain, frame, out, frame + VV_SESSION_OVERHEAD) != 0 ||
            vv_session_feed(b->s, out, frame + VV_SESSION_OVERHEAD) != 0)
            abort();
    }
    double dt = now_s() - t0;
    if (b->bytes - before != n * frame)
        abort();
    printf("seal+open %7zu-byte frames: %zu frames, %.0f MB/s (plaintext, one core)\n", frame, n,
           (double)(n * frame) / dt / 1e6);
    vv_free(plain);
    vv_free(out);
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    size_t count = argc > 1 ? (size_t)atoi(argv[1]) : 2000;
    size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 512;
    if (count == 0 || mb == 0)
        return 2;
    struct vv_identity ia, ib;
    crypto_sign_keypair(ia.public_key, ia.secret_key);
    crypto_sign_keypair(ib.public_key, ib.secret_key);
    vv_identity_node_id(ia.public_key, ia.node_id);
    vv_identity_node_id(ib.public_key, ib.node_id);
    struct vv_session_keys ka, kb;
    vv_session_keys_init(&ka, &ia);
    vv_session_keys_init(&kb, &ib);

    double *ms = vv_xmalloc(count * sizeof(double));
    struct end a, b;
    double t_all = now_s();
    for (size_t i = 0; i < count; i++) {
        double t0 = now_s();
        handshake(&ka, &kb, ib.node_id, &a, &b);
        ms[i] = (now_s() - t0) * 1e3;
        vv_session_free(a.s);
        vv_session_free(b.s);
    }
    t_all = now_s() - t_all;
    qsort(ms, count, sizeof(double), cmp);
    printf("handshake (both sides, in memory, one core): %zu runs, p50 %.3f ms, p99 %.3f ms, "
           "%.0f handshakes/s\n",
           count, ms[count / 2], ms[count * 99 / 100], (double)count / t_all);
    printf("established session: %zu bytes\n", vv_session_size());
    vv_free(ms);

    handshake(&ka, &kb, ib.node_id, &a, &b);
    throughput(&a, &b, 64 * 1024, mb);
    throughput(&a, &b, VV_SESSION_MAX_FRAME_BYTES, mb);
    throughput(&a, &b, 1024, mb / 8);
    vv_session_free(a.s);
    vv_session_free(b.s);
    vv_session_keys_clear(&ka);
    vv_session_keys_clear(&kb);
    vv_identity_clear(&ia);
    vv_identity_clear(&ib);
    return 0;
}
