/*
 * The daemon's datagram socket (src/net/dgram.c) over real UDP on loopback: two libuv
 * environments, each with its socket, send a datagram to a channel's handler and a request
 * by datagram to a server; garbage is dropped and counted by reason; a closed socket
 * detaches from its env and the loop closes cleanly.
 */
#include "vv_test.h"

#include <arpa/inet.h>
#include <msgpack.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vivim/env_request.h"
#include "vivim/env_uv.h"
#include "vivim/metrics.h"
#include "vivim/net.h"
#include "vivim/wire.h"

#define TEST_REQ 0x0f01

struct side {
    struct vv_identity id;
    struct vv_env_uv *envu;
    struct vv_env *env;
    struct vv_metrics *mx;
    struct vv_dgram *d;
    char address[VV_ENV_ADDRESS_BYTES];
    int got;
    char from[VV_ENV_ADDRESS_BYTES];
    uint8_t claimed[VV_NODE_ID_BYTES];
};

static void side_open(struct side *s, uv_loop_t *loop, uint8_t idbyte)
{
    memset(s, 0, sizeof(*s));
    memset(s->id.node_id, idbyte, VV_NODE_ID_BYTES);
    s->envu = vv_env_uv_new(loop, &s->id);
    s->env = vv_env_uv_env(s->envu);
    s->mx = vv_metrics_new();
    char err[256];
    s->d = vv_dgram_open(loop, s->envu, "127.0.0.1:0", 0, s->mx, err, sizeof(err));
    assert_non_null(s->d);
    assert_true(vv_dgram_port(s->d) > 0);
    snprintf(s->address, sizeof(s->address), "127.0.0.1:%u", vv_dgram_port(s->d));
}

static void side_close(struct side *s)
{
    vv_dgram_close(s->d);
    vv_env_uv_close(s->envu);
}

/* Runs the loop until *flag is set or about two seconds passed. */
static void run_until(uv_loop_t *loop, const int *flag)
{
    for (int i = 0; i < 2000 && *flag == 0; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (*flag == 0)
            usleep(1000);
    }
}

/* The value of one counter line in s's /metrics text, or -1. */
static long counter(struct side *s, const char *line)
{
    char *out;
    size_t len;
    vv_metrics_render(s->mx, &out, &len);
    const char *p = strstr(out, line);
    long v = p ? strtol(p + strlen(line), NULL, 10) : -1;
    vv_free(out);
    return v;
}

static void on_dgram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES], const char *from,
                     const uint8_t *frame, size_t len, void *arg)
{
    (void)env, (void)frame, (void)len;
    struct side *s = arg;
    s->got++;
    vv_strlcpy(s->from, from, sizeof(s->from));
    memcpy(s->claimed, claimed, VV_NODE_ID_BYTES);
}

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *req, void *arg)
{
    (void)peer, (void)req, (void)arg;
    static const uint8_t body[] = {0x2a};
    assert_int_equal(vv_env_reply(env, ctx, body, sizeof(body)), 0);
}

struct answer {
    int n, status;
    char address[VV_ENV_ADDRESS_BYTES];
};

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct answer *r = arg;
    r->n++;
    r->status = a->status;
    vv_strlcpy(r->address, a->address ? a->address : "", sizeof(r->address));
}

static void test_datagrams_and_requests_cross_real_udp(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct side a, b;
    side_open(&a, &loop, 1);
    side_open(&b, &loop, 2);
    vv_env_set_datagram_handler(b.env, VV_CHANNEL_TEST, on_dgram, &b);
    vv_env_set_server(b.env, VV_CHANNEL_TEST, serve, NULL);

    /* A plain datagram reaches b's handler with a's claimed ID and a's address. */
    const uint8_t frame[] = {0x95, 0x01, 0x00, 0xcd, 0x0f, 0x05, 0x00, 0xc0};
    assert_int_equal(vv_env_send_datagram(a.env, b.address, frame, sizeof(frame)), 0);
    run_until(&loop, &b.got);
    assert_int_equal(b.got, 1);
    assert_string_equal(b.from, a.address);
    assert_memory_equal(b.claimed, a.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(counter(&a, "vivimd_net_datagrams_total{direction=\"out\",outcome=\"ok\"} "),
                     1);
    assert_int_equal(counter(&b, "vivimd_net_datagrams_total{direction=\"in\",outcome=\"ok\"} "),
                     1);
    assert_int_equal(counter(&b, "vivimd_net_datagram_bytes_total{direction=\"in\"} "),
                     VV_ENV_DATAGRAM_HEADER_BYTES + (long)sizeof(frame));

    /* A request by datagram, answered by datagram. */
    struct answer ans = {0};
    static const uint8_t body[] = {0x07};
    assert_int_equal(vv_env_request_datagram(a.env, b.id.node_id, b.address, TEST_REQ, body,
                                             sizeof(body), 2000, on_answer, &ans, NULL),
                     0);
    run_until(&loop, &ans.n);
    assert_int_equal(ans.n, 1);
    assert_int_equal(ans.status, 0);
    assert_string_equal(ans.address, b.address);

    /* Garbage from a plain socket: dropped, counted by reason. */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(vv_dgram_port(b.d))};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    uint8_t junk[40] = {'X', 'D', 1, 0};
    assert_int_equal(sendto(fd, junk, sizeof(junk), 0, (struct sockaddr *)&to, sizeof(to)),
                     sizeof(junk));
    assert_int_equal(sendto(fd, junk, 3, 0, (struct sockaddr *)&to, sizeof(to)), 3);
    close(fd);
    for (int i = 0; i < 2000 && counter(&b, "outcome=\"dropped_short\"} ") != 1; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(counter(&b, "vivimd_net_datagrams_total{direction=\"in\",outcome=\"dropped_"
                                 "magic\"} "),
                     1);
    assert_int_equal(counter(&b, "vivimd_net_datagrams_total{direction=\"in\",outcome=\"dropped_"
                                 "short\"} "),
                     1);
    assert_int_equal(b.got, 1);

    /* Detached: the env has no datagrams any more. */
    vv_dgram_close(a.d);
    a.d = NULL;
    assert_int_equal(vv_env_send_datagram(a.env, b.address, frame, sizeof(frame)),
                     VV_EDGRAM_UNSUPPORTED);
    side_close(&a);
    side_close(&b);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    vv_metrics_free(a.mx);
    vv_metrics_free(b.mx);
}

static void test_a_bad_listen_address_is_a_clear_error(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct vv_identity id = {0};
    struct vv_env_uv *e = vv_env_uv_new(&loop, &id);
    struct vv_metrics *mx = vv_metrics_new();
    char err[256];
    assert_null(vv_dgram_open(&loop, e, "example.org:4747", 0, mx, err, sizeof(err)));
    assert_non_null(strstr(err, "not a numeric host:port"));
    vv_env_uv_close(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    vv_metrics_free(mx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_datagrams_and_requests_cross_real_udp),
        cmocka_unit_test(test_a_bad_listen_address_is_a_clear_error),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
