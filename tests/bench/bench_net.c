/*
 * The connection layer on loopback, both ends in this process on one loop:
 *   - handshake latency: TCP connect + Noise XX + identity check, p50/p99 over 1,000 dials;
 *   - one connection's throughput: small frames (messages/s) and 64 KiB frames (MB/s), next
 *     to raw TCP moving the same 64 KiB writes between two libuv sockets in the same loop;
 *   - memory per idle connection with 10,000 connections (heap in use, from mallinfo2,
 *     divided by the number of connection ends, and resident size).
 * Usage: bench_net [connections] (default 10000). Prints a Markdown table.
 */
#include <malloc.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vivim/common.h"
#include "vivim/net.h"
#include "vivim/noise.h"
#include "vivim/wire.h"

struct end {
    struct vv_identity id;
    struct vv_session_keys keys;
    struct vv_env_uv *envu;
    struct vv_net *net;
    uint64_t frames, bytes, ups;
    int dial_ok, dial_failed;
};

static uv_loop_t loop;

static void on_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    (void)env;
    (void)peer;
    (void)data;
    struct end *e = arg;
    e->frames++;
    e->bytes += len;
}

static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    (void)peer;
    struct end *e = arg;
    if (up)
        e->ups++;
}

static void on_dial(void *arg, const char *address, const uint8_t *node_id, const char *why)
{
    (void)address;
    (void)why;
    struct end *e = arg;
    if (node_id)
        e->dial_ok++;
    else
        e->dial_failed++;
}

static void end_init(struct end *e, uint32_t max_conns)
{
    memset(e, 0, sizeof(*e));
    crypto_sign_keypair(e->id.public_key, e->id.secret_key);
    vv_identity_node_id(e->id.public_key, e->id.node_id);
    vv_session_keys_init(&e->keys, &e->id);
    e->envu = vv_env_uv_new(&loop, &e->id);
    vv_env_set_channel(vv_env_uv_env(e->envu), VV_CHANNEL_TEST, on_recv, on_peer, e);
    struct vv_net_config cfg;
    vv_net_config_defaults(&cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.max_connections = max_conns;
    cfg.max_half_open = max_conns;
    cfg.handshake_timeout_ms = 60000;
    cfg.peer_queue_bytes = 16u << 20;
    cfg.memory_budget_bytes = 1ull << 30;
    uint8_t hello[64];
    size_t hl;
    vv_net_hello_encode(3, 0, "127.0.0.1:1", "", hello, sizeof(hello), &hl);
    cfg.hello = hello;
    cfg.hello_len = hl;
    char err[256];
    e->net = vv_net_new(&loop, &e->keys, e->envu, &cfg, err, sizeof(err));
    if (e->net == NULL || vv_net_listen(e->net, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_net: %s\n", err);
        exit(1);
    }
    vv_net_set_dial_cb(e->net, on_dial, e);
}

static void end_close(struct end *e)
{
    vv_net_close(e->net);
    vv_env_uv_close(e->envu);
    vv_session_keys_clear(&e->keys);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static size_t make_frame(uint8_t *out, size_t body_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, 0x0f01, 0);
    msgpack_pack_bin(&pk, body_len);
    uint8_t *body = calloc(1, body_len + 1);
    msgpack_pack_bin_body(&pk, body, body_len);
    free(body);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void addr_of(struct end *e, char *out, size_t cap)
{
    snprintf(out, cap, "127.0.0.1:%u", vv_net_bound_port(e->net));
}

/* ---- handshake latency ------------------------------------------------------------------ */

static void bench_handshake(double *p50, double *p99, int n)
{
    struct end srv, cli;
    end_init(&srv, 100000);
    end_init(&cli, 100000);
    char addr[64];
    addr_of(&srv, addr, sizeof(addr));
    double *lat = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) {
        int want = cli.dial_ok + 1;
        double t0 = now_s();
        vv_net_connect(cli.net, srv.id.node_id, addr);
        while (cli.dial_ok < want || srv.ups < (uint64_t)want)
            uv_run(&loop, UV_RUN_ONCE);
        lat[i] = (now_s() - t0) * 1000.0;
        vv_net_disconnect(cli.net, srv.id.node_id);
        while (vv_net_count(srv.net) > 0)
            uv_run(&loop, UV_RUN_ONCE);
    }
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    *p50 = lat[n / 2];
    *p99 = lat[(n * 99) / 100];
    free(lat);
    end_close(&srv);
    end_close(&cli);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- throughput ------------------------------------------------------------------------- */

static double bench_frames(size_t body_len, double seconds, double *mb_s)
{
    struct end srv, cli;
    end_init(&srv, 16);
    end_init(&cli, 16);
    char addr[64];
    addr_of(&srv, addr, sizeof(addr));
    vv_net_connect(cli.net, srv.id.node_id, addr);
    while (srv.ups < 1 || cli.ups < 1)
        uv_run(&loop, UV_RUN_ONCE);
    uint8_t *frame = malloc(body_len + 64);
    size_t n = make_frame(frame, body_len);
    uint64_t sent = 0;
    double t0 = now_s(), t;
    while ((t = now_s()) - t0 < seconds) {
        /* Keep the queue full; the loop moves it. */
        while (vv_net_send(cli.net, srv.id.node_id, frame, n) == 0)
            sent++;
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    uint64_t got = srv.frames, bytes = srv.bytes;
    double el = now_s() - t0;
    free(frame);
    end_close(&srv);
    end_close(&cli);
    uv_run(&loop, UV_RUN_DEFAULT);
    *mb_s = (double)bytes / el / 1e6;
    (void)sent;
    return (double)got / el;
}

/* Raw TCP: the same 64 KiB writes between two libuv sockets, no framing, no crypto. */
struct raw {
    uv_tcp_t server, a, b;
    uint64_t received;
    uint64_t queued;
    bool accepted, connected;
    uint8_t rbuf[65536];
};

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
    (void)s;
    struct raw *r = h->data;
    *buf = uv_buf_init((char *)r->rbuf, sizeof(r->rbuf));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct raw *r = s->data;
    if (n > 0)
        r->received += (uint64_t)n;
}

static void raw_conn(uv_stream_t *srv, int status)
{
    (void)status;
    struct raw *r = srv->data;
    uv_tcp_init(&loop, &r->b);
    r->b.data = r;
    uv_accept(srv, (uv_stream_t *)&r->b);
    uv_read_start((uv_stream_t *)&r->b, raw_alloc, raw_read);
    r->accepted = true;
}

static void raw_connected(uv_connect_t *req, int status)
{
    (void)status;
    struct raw *r = req->data;
    r->connected = true;
}

struct raw_w {
    uv_write_t req;
    struct raw *r;
};

static void raw_written(uv_write_t *req, int status)
{
    (void)status;
    struct raw_w *w = (struct raw_w *)req;
    w->r->queued -= 65536;
    free(w);
}

static double bench_raw(double seconds)
{
    struct raw *r = calloc(1, sizeof(*r));
    uv_tcp_init(&loop, &r->server);
    r->server.data = r;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&r->server, (struct sockaddr *)&sa, 0);
    uv_listen((uv_stream_t *)&r->server, 16, raw_conn);
    int sl = sizeof(sa);
    uv_tcp_getsockname(&r->server, (struct sockaddr *)&sa, &sl);
    uv_tcp_init(&loop, &r->a);
    r->a.data = r;
    uv_connect_t creq;
    creq.data = r;
    uv_tcp_connect(&creq, &r->a, (struct sockaddr *)&sa, raw_connected);
    while (!r->accepted || !r->connected)
        uv_run(&loop, UV_RUN_ONCE);
    uv_tcp_nodelay(&r->a, 1);
    static uint8_t chunk[65536];
    double t0 = now_s();
    while (now_s() - t0 < seconds) {
        while (r->queued < (16u << 20)) {
            struct raw_w *w = malloc(sizeof(*w));
            w->r = r;
            uv_buf_t b = uv_buf_init((char *)chunk, sizeof(chunk));
            uv_write(&w->req, (uv_stream_t *)&r->a, &b, 1, raw_written);
            r->queued += sizeof(chunk);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    double el = now_s() - t0;
    double mb = (double)r->received / el / 1e6;
    uv_close((uv_handle_t *)&r->a, NULL);
    uv_close((uv_handle_t *)&r->b, NULL);
    uv_close((uv_handle_t *)&r->server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    free(r);
    return mb;
}

/* ---- memory per idle connection ------------------------------------------------------------ */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    if (f)
        fclose(f);
    return v;
}

/* The server end is this process; the n clients (each its own identity: one connection per
 * peer means one identity holds only one) run in a child process with its own loop, so that
 * the measure is what a node spends on its idle connections, and both processes stay under
 * their file limits. */
static void bench_idle(int n, double *heap_per_conn, double *rss_per_conn, int *made)
{
    struct end srv;
    end_init(&srv, (uint32_t)n + 16);
    char addr[64];
    addr_of(&srv, addr, sizeof(addr));
    for (int i = 0; i < 100; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    struct mallinfo2 m0 = mallinfo2();
    long r0 = rss_kib();
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        uv_loop_init(&loop); /* a fresh loop: the parent's is not ours to touch */
        struct end *clients = calloc((size_t)n, sizeof(*clients));
        int batch = 200;
        for (int i = 0; i < n; i++) {
            struct end *e = &clients[i];
            crypto_sign_keypair(e->id.public_key, e->id.secret_key);
            vv_identity_node_id(e->id.public_key, e->id.node_id);
            vv_session_keys_init(&e->keys, &e->id);
            e->envu = vv_env_uv_new(&loop, &e->id);
            struct vv_net_config cfg;
            vv_net_config_defaults(&cfg);
            cfg.listen = "";
            cfg.max_connections = 4;
            cfg.handshake_timeout_ms = 60000;
            uint8_t hello[64];
            size_t hl;
            vv_net_hello_encode(5, 0, "", "", hello, sizeof(hello), &hl);
            cfg.hello = hello;
            cfg.hello_len = hl;
            char err[128];
            e->net = vv_net_new(&loop, &e->keys, e->envu, &cfg, err, sizeof(err));
            vv_net_set_dial_cb(e->net, on_dial, e);
            vv_net_connect(e->net, srv.id.node_id, addr);
            if ((i + 1) % batch == 0 || i + 1 == n) {
                /* Let this batch finish its handshakes before the next (listen backlog). */
                int first = (i / batch) * batch;
                for (;;) {
                    int done = 0;
                    for (int k = first; k <= i; k++)
                        done += clients[k].dial_ok + clients[k].dial_failed;
                    if (done >= i + 1 - first)
                        break;
                    uv_run(&loop, UV_RUN_ONCE);
                }
            }
        }
        for (;;)
            uv_run(&loop, UV_RUN_ONCE); /* keep answering until killed */
    }
    double t0 = now_s();
    while (srv.ups < (uint64_t)n && now_s() - t0 < 300)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 100; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    *made = (int)vv_net_count(srv.net);
    struct mallinfo2 m1 = mallinfo2();
    long r1 = rss_kib();
    double heap = (double)(m1.uordblks + m1.hblkhd) - (double)(m0.uordblks + m0.hblkhd);
    *heap_per_conn = heap / (*made ? *made : 1);
    *rss_per_conn = (double)(r1 - r0) * 1024.0 / (*made ? *made : 1);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    end_close(&srv);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* The cipher alone: seal and open 64 KiB on one core, the ceiling for one connection whose
 * two ends share a core, as they do here. */
static double bench_cipher(double seconds)
{
    struct vv_noise_cipher a = {.has_key = true}, b = {.has_key = true};
    randombytes_buf(a.k, sizeof(a.k));
    memcpy(b.k, a.k, sizeof(a.k));
    uint8_t *buf = calloc(1, 65536 + 16);
    uint64_t bytes = 0;
    double t0 = now_s();
    while (now_s() - t0 < seconds) {
        vv_noise_encrypt(&a, NULL, 0, buf, 65536, buf);
        if (vv_noise_decrypt(&b, NULL, 0, buf, 65536 + 16, buf) != 0)
            abort();
        bytes += 65536;
    }
    free(buf);
    return (double)bytes / (now_s() - t0) / 1e6;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    int conns = argc > 1 ? atoi(argv[1]) : 10000;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((int)rl.rlim_cur < conns + 100) {
        conns = (int)rl.rlim_cur - 100;
        fprintf(stderr, "bench_net: RLIMIT_NOFILE allows only %d connections\n", conns);
    }
    uv_loop_init(&loop);

    /* Idle connections first, so that the resident size is not padded by memory the
     * throughput runs freed. */
    double heap_conn, rss_conn;
    int made;
    bench_idle(conns, &heap_conn, &rss_conn, &made);
    double p50, p99;
    bench_handshake(&p50, &p99, 1000);
    double small_mb, big_mb;
    double small_rate = bench_frames(32, 3.0, &small_mb);
    double big_rate = bench_frames(65536, 3.0, &big_mb);
    double raw_mb = bench_raw(3.0);
    double cipher_mb = bench_cipher(2.0);

    printf("| measure | vivimd | goal / reference |\n| --- | ---: | --- |\n");
    printf("| handshake p50 (TCP connect + Noise XX + identity), 1,000 dials | %.3f ms | |\n", p50);
    printf("| handshake p99 | %.3f ms | goal <= 2 ms |\n", p99);
    printf("| small frames (32-byte body), one connection | %.0f msgs/s | |\n", small_rate);
    printf("| 64 KiB frames, one connection | %.0f MB/s (%.0f frames/s) | raw TCP: %.0f MB/s "
           "(%.0f%%; goal >= 70%%) |\n",
           big_mb, big_rate, raw_mb, 100.0 * big_mb / raw_mb);
    printf("| ChaCha20-Poly1305 seal + open of 64 KiB, one core (the ceiling above) | %.0f MB/s "
           "| |\n",
           cipher_mb);
    printf("| idle connections held by one node | %d | goal 10,000 |\n", made);
    printf("| heap per idle connection | %.0f bytes | goal <= 16 KiB |\n", heap_conn);
    printf("| resident memory per idle connection | %.0f bytes | goal <= 16 KiB |\n", rss_conn);
    printf("| session struct | %zu bytes | |\n", vv_session_size());
    uv_loop_close(&loop);
    return 0;
}
