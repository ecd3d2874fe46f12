/*
 * The TCP connection layer on a real loop and real loopback sockets: several vv_net
 * instances (each with its own identity and environment) in one process. Handshakes,
 * frames of every size, identity checks, simultaneous dials, the half-open limit and the
 * handshake deadline, hostile bytes, and the per-peer queue bound with nothing lost of
 * what was accepted.
 */
#include "vv_test.h"

#include <arpa/inet.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <sodium.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vivim/env_request.h"
#include "vivim/net.h"
#include "vivim/wire.h"

#define TEST_TYPE 0x0f01

struct tnode {
    uv_loop_t *loop;
    struct vv_identity id;
    struct vv_session_keys keys;
    struct vv_env_uv *envu;
    struct vv_net *net;
    int ups, downs;
    uint8_t last_up[VV_NODE_ID_BYTES], last_down[VV_NODE_ID_BYTES];
    uint64_t frames, frame_bytes;
    uint8_t first_byte_sum; /* a running check of the bodies received */
    int dial_ok, dial_failed;
    char dial_why[128];
};

static void on_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    (void)env;
    (void)peer;
    struct tnode *t = arg;
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(data, len, &f), 0);
    assert_int_equal(f.h.type, TEST_TYPE);
    assert_int_equal(f.body.type, MSGPACK_OBJECT_BIN);
    t->frames++;
    t->frame_bytes += f.body.via.bin.size;
    /* Every body is filled with the low byte of its length: check it arrived intact. */
    for (uint32_t i = 0; i < f.body.via.bin.size; i++)
        assert_int_equal((uint8_t)f.body.via.bin.ptr[i], (uint8_t)f.body.via.bin.size);
    vv_wire_frame_free(&f);
}

static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    struct tnode *t = arg;
    if (up) {
        t->ups++;
        memcpy(t->last_up, peer, VV_NODE_ID_BYTES);
    } else {
        t->downs++;
        memcpy(t->last_down, peer, VV_NODE_ID_BYTES);
    }
}

static void on_dial(void *arg, const char *address, const uint8_t *node_id, const char *why)
{
    (void)address;
    struct tnode *t = arg;
    if (node_id)
        t->dial_ok++;
    else {
        t->dial_failed++;
        snprintf(t->dial_why, sizeof(t->dial_why), "%s", why ? why : "");
    }
}

static void tnode_init(struct tnode *t, uv_loop_t *loop, const struct vv_net_config *base)
{
    memset(t, 0, sizeof(*t));
    t->loop = loop;
    crypto_sign_keypair(t->id.public_key, t->id.secret_key);
    vv_identity_node_id(t->id.public_key, t->id.node_id);
    vv_hex_encode(t->id.node_id, VV_NODE_ID_BYTES, t->id.node_id_hex);
    vv_session_keys_init(&t->keys, &t->id);
    t->envu = vv_env_uv_new(loop, &t->id);
    vv_env_set_channel(vv_env_uv_env(t->envu), VV_CHANNEL_TEST, on_recv, on_peer, t);
    struct vv_net_config cfg;
    if (base)
        cfg = *base;
    else
        vv_net_config_defaults(&cfg);
    cfg.listen = "127.0.0.1:0";
    uint8_t hello[VV_SESSION_MAX_HELLO_BYTES];
    size_t hl;
    assert_int_equal(vv_net_hello_encode(3, 5, "127.0.0.1:1", "eu", hello, sizeof(hello), &hl), 0);
    cfg.hello = hello;
    cfg.hello_len = hl;
    char err[256];
    t->net = vv_net_new(loop, &t->keys, t->envu, &cfg, err, sizeof(err));
    assert_non_null(t->net);
    assert_int_equal(vv_net_listen(t->net, err, sizeof(err)), 0);
    assert_true(vv_net_bound_port(t->net) > 0);
    vv_net_set_dial_cb(t->net, on_dial, t);
}

static void tnode_close(struct tnode *t)
{
    vv_net_close(t->net);
    vv_env_uv_close(t->envu);
    vv_session_keys_clear(&t->keys);
}

static void finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag reaches want or timeout_ms passed. Returns whether it did. */
static bool run_until(uv_loop_t *loop, const int *flag, int want, uint64_t timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t end = uv_now(loop) + timeout_ms;
    while (*flag < want && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag >= want;
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
    int never = 0;
    run_until(loop, &never, 1, ms);
}

static void addr_of(const struct tnode *t, char *out, size_t cap)
{
    snprintf(out, cap, "127.0.0.1:%u", vv_net_bound_port(t->net));
}

static size_t make_frame(uint8_t *out, size_t cap, size_t body_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, TEST_TYPE, 0);
    msgpack_pack_bin(&pk, body_len);
    uint8_t *body = vv_xmalloc(body_len ? body_len : 1);
    memset(body, (uint8_t)body_len, body_len);
    msgpack_pack_bin_body(&pk, body, body_len);
    vv_free(body);
    assert_true(sb.size <= cap);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void test_connect_and_exchange_frames(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tnode a, b;
    tnode_init(&a, &loop, NULL);
    tnode_init(&b, &loop, NULL);
    char addr[64];
    addr_of(&a, addr, sizeof(addr));
    assert_int_equal(vv_net_connect(b.net, a.id.node_id, addr), 0);
    assert_true(run_until(&loop, &a.ups, 1, 5000));
    assert_true(run_until(&loop, &b.ups, 1, 5000));
    assert_memory_equal(a.last_up, b.id.node_id, VV_NODE_ID_BYTES);
    assert_memory_equal(b.last_up, a.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(b.dial_ok, 1);
    assert_int_equal(vv_net_count(a.net), 1);

    struct vv_net_conn_info ci;
    assert_int_equal(vv_net_info(a.net, b.id.node_id, &ci), 0);
    assert_true(ci.inbound);
    assert_int_equal(ci.node_type, 3);
    assert_int_equal(ci.capabilities, 5);
    assert_string_equal(ci.listen, "127.0.0.1:1");
    assert_int_equal(vv_net_info(b.net, a.id.node_id, &ci), 0);
    assert_false(ci.inbound);

    /* Frames of many sizes, both ways, up to the largest a frame may be. */
    static const size_t sizes[] = {0, 1, 100, 4000, 65536, 300000, VV_WIRE_MAX_FRAME_BYTES - 16};
    size_t cap = VV_WIRE_MAX_FRAME_BYTES + 64;
    uint8_t *buf = vv_xmalloc(cap);
    uint64_t want_bytes = 0;
    for (size_t i = 0; i < VV_ARRAY_SIZE(sizes); i++) {
        size_t n = make_frame(buf, cap, sizes[i]);
        assert_true(n <= VV_WIRE_MAX_FRAME_BYTES);
        assert_int_equal(vv_net_send(b.net, a.id.node_id, buf, n), 0);
        assert_int_equal(vv_net_send(a.net, b.id.node_id, buf, n), 0);
        want_bytes += sizes[i];
    }
    int want = (int)VV_ARRAY_SIZE(sizes);
    int got_a = 0, got_b = 0;
    uint64_t end = uv_now(&loop) + 10000;
    while ((got_a < want || got_b < want) && uv_now(&loop) < end) {
        run_for(&loop, 20);
        got_a = (int)a.frames;
        got_b = (int)b.frames;
    }
    assert_int_equal(a.frames, want);
    assert_int_equal(b.frames, want);
    assert_int_equal(a.frame_bytes, want_bytes);
    /* A frame over the limit is refused at the sender. */
    assert_int_equal(vv_net_send(b.net, a.id.node_id, buf, VV_WIRE_MAX_FRAME_BYTES + 1), VV_EINVAL);
    /* Unknown peers cannot be sent to. */
    uint8_t nobody[VV_NODE_ID_BYTES] = {9};
    assert_int_equal(vv_net_send(b.net, nobody, buf, 10), VV_ECONN_NOT_CONNECTED);
    vv_free(buf);

    /* Disconnect: both sides see the peer go. */
    vv_net_disconnect(b.net, a.id.node_id);
    assert_true(run_until(&loop, &a.downs, 1, 5000));
    assert_int_equal(b.downs, 1);
    assert_int_equal(vv_net_count(a.net), 0);
    assert_int_equal(vv_net_count(b.net), 0);

    tnode_close(&a);
    tnode_close(&b);
    finish(&loop);
}

static void test_wrong_identity_is_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tnode a, b, c;
    tnode_init(&a, &loop, NULL);
    tnode_init(&b, &loop, NULL);
    tnode_init(&c, &loop, NULL);
    char addr[64];
    addr_of(&a, addr, sizeof(addr));
    /* B dials A's address expecting C: A's proof of identity does not match. */
    assert_int_equal(vv_net_connect(b.net, c.id.node_id, addr), 0);
    assert_true(run_until(&loop, &b.dial_failed, 1, 5000));
    assert_int_equal(b.ups, 0);
    assert_int_equal(b.downs, 1); /* the failed dial is reported for the expected ID */
    assert_memory_equal(b.last_down, c.id.node_id, VV_NODE_ID_BYTES);
    run_for(&loop, 100);
    assert_int_equal(a.ups, 0);
    assert_int_equal(vv_net_count(a.net), 0);
    assert_int_equal(vv_net_stats(b.net)->handshakes_failed, 1);

    /* Nothing listens: the dial fails and says why. */
    assert_int_equal(vv_net_connect(b.net, NULL, "127.0.0.1:1"), 0);
    assert_true(run_until(&loop, &b.dial_failed, 2, 5000));
    assert_non_null(strstr(b.dial_why, "refused"));
    /* Transports that do not exist yet, and nonsense. */
    assert_int_equal(vv_net_connect(b.net, NULL, "quic://127.0.0.1:5"), VV_EINVAL);
    assert_int_equal(vv_net_connect(b.net, NULL, "no port"), VV_EINVAL);
    assert_null(vv_net_select_transport(b.net, "ws://x:1"));
    assert_string_equal(vv_net_select_transport(b.net, "[::1]:4747")->name, "tcp");
    assert_string_equal(vv_net_select_transport(b.net, "example.org:4747")->name, "tcp");

    tnode_close(&a);
    tnode_close(&b);
    tnode_close(&c);
    finish(&loop);
}

static void test_ipv6(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tnode a, b;
    tnode_init(&a, &loop, NULL);
    tnode_init(&b, &loop, NULL);
    /* A third net listening on [::1]: where the machine has no IPv6 loopback, say so. */
    struct vv_net_config cfg;
    vv_net_config_defaults(&cfg);
    cfg.listen = "[::1]:0";
    uint8_t hello[64];
    size_t hl;
    assert_int_equal(vv_net_hello_encode(3, 5, "[::1]:1", "", hello, sizeof(hello), &hl), 0);
    cfg.hello = hello;
    cfg.hello_len = hl;
    char err[256];
    struct vv_session_keys keys;
    vv_session_keys_init(&keys, &a.id);
    struct vv_env_uv *envu = vv_env_uv_new(&loop, &a.id);
    vv_env_set_channel(vv_env_uv_env(envu), VV_CHANNEL_TEST, on_recv, on_peer, &a);
    struct vv_net *v6 = vv_net_new(&loop, &keys, envu, &cfg, err, sizeof(err));
    assert_non_null(v6);
    if (vv_net_listen(v6, err, sizeof(err)) != 0) {
        fprintf(stderr, "SKIP test_ipv6: %s\n", err);
    } else {
        char addr[64];
        snprintf(addr, sizeof(addr), "[::1]:%u", vv_net_bound_port(v6));
        assert_int_equal(vv_net_connect(b.net, a.id.node_id, addr), 0);
        int outcomes = 0;
        for (int i = 0; i < 250 && outcomes == 0; i++) {
            run_for(&loop, 20);
            outcomes = b.dial_ok + b.dial_failed;
        }
        if (b.dial_failed)
            fail_msg("dial to %s failed: %s", addr, b.dial_why);
        assert_true(run_until(&loop, &b.ups, 1, 5000));
        struct vv_net_conn_info ci;
        assert_int_equal(vv_net_info(b.net, a.id.node_id, &ci), 0);
        assert_string_equal(ci.remote, addr);
        assert_int_equal(vv_net_info(v6, b.id.node_id, &ci), 0);
        assert_true(strncmp(ci.remote, "[::1]:", 6) == 0);
    }
    vv_net_close(v6);
    vv_env_uv_close(envu);
    vv_session_keys_clear(&keys);
    tnode_close(&a);
    tnode_close(&b);
    finish(&loop);
}

static void test_dial_by_name_resolves(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tnode a, b;
    tnode_init(&a, &loop, NULL);
    tnode_init(&b, &loop, NULL);
    char addr[64];
    snprintf(addr, sizeof(addr), "localhost:%u", vv_net_bound_port(a.net));
    assert_int_equal(vv_net_connect(b.net, a.id.node_id, addr), 0);
    /* localhost may resolve to ::1 first, where A does not listen: then the dial fails,
     * which is also an answer; what matters is that the loop was never blocked. */
    int outcomes = 0;
    uint64_t end = uv_now(&loop) + 5000;
    while (outcomes == 0 && uv_now(&loop) < end) {
        run_for(&loop, 20);
        outcomes = b.dial_ok + b.dial_failed;
    }
    assert_int_equal(outcomes, 1);
    assert_int_equal(vv_net_connect(b.net, NULL, "name.invalid:4747"), 0);
    assert_true(run_until(&loop, &b.dial_failed, b.dial_failed + 1, 10000));
    tnode_close(&a);
    tnode_close(&b);
    finish(&loop);
}

static void test_simultaneous_dials_keep_one_connection(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct tnode a, b;
        tnode_init(&a, &loop, NULL);
        tnode_init(&b, &loop, NULL);
        char aa[64], ba[64];
        addr_of(&a, aa, sizeof(aa));
        addr_of(&b, ba, sizeof(ba));
        assert_int_equal(vv_net_connect(a.net, b.id.node_id, ba), 0);
        assert_int_equal(vv_net_connect(b.net, a.id.node_id, aa), 0);
        run_for(&loop, 300);
        assert_int_equal(vv_net_count(a.net), 1);
        assert_int_equal(vv_net_count(b.net), 1);
        assert_int_equal(a.ups, 1);
        assert_int_equal(b.ups, 1);
        assert_int_equal(a.downs, 0);
        assert_int_equal(b.downs, 0);
        /* Both ends kept the same TCP connection: one sees it inbound, the other outbound,
         * and it is the one the smaller node ID dialled. */
        struct vv_net_conn_info ia, ib;
        assert_int_equal(vv_net_info(a.net, b.id.node_id, &ia), 0);
        assert_int_equal(vv_net_info(b.net, a.id.node_id, &ib), 0);
        assert_true(ia.inbound != ib.inbound);
        bool a_smaller = memcmp(a.id.node_id, b.id.node_id, VV_NODE_ID_BYTES) < 0;
        assert_true(ia.inbound == !a_smaller);
        /* Two connections were made and one closed (unless one dial lost the race outright). */
        assert_true(vv_net_stats(a.net)->handshakes_ok + vv_net_stats(b.net)->handshakes_ok >= 2);
        /* And it carries traffic. */
        uint8_t buf[256];
        size_t n = make_frame(buf, sizeof(buf), 50);
        assert_int_equal(vv_net_send(a.net, b.id.node_id, buf, n), 0);
        for (int i = 0; i < 100 && b.frames == 0; i++)
            run_for(&loop, 20);
        assert_int_equal(b.frames, 1);
        tnode_close(&a);
        tnode_close(&b);
        finish(&loop);
    }
}

/* A blocking socket connected to port (plain POSIX: this plays a hostile peer). */
static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void test_half_open_limit_and_handshake_deadline(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct vv_net_config cfg;
    vv_net_config_defaults(&cfg);
    cfg.max_half_open = 4;
    cfg.handshake_timeout_ms = 300;
    struct tnode a;
    tnode_init(&a, &loop, &cfg);
    int fds[10];
    for (int i = 0; i < 10; i++)
        fds[i] = raw_connect(vv_net_bound_port(a.net));
    run_for(&loop, 100);
    const struct vv_net_stats *st = vv_net_stats(a.net);
    assert_int_equal(st->accepted, 10);
    assert_int_equal(st->half_open, 4);
    assert_int_equal(st->refused_half_open, 6);
    run_for(&loop, 600);
    assert_int_equal(st->half_open, 0);
    assert_int_equal(st->handshake_timeouts, 4);
    /* Every one of them was closed: reading gives EOF (0) or a reset. */
    for (int i = 0; i < 10; i++) {
        char c;
        assert_true(read(fds[i], &c, 1) <= 0);
        close(fds[i]);
    }
    /* Garbage: a length prefix far over the handshake limit closes at once. */
    int fd = raw_connect(vv_net_bound_port(a.net));
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3};
    assert_int_equal(write(fd, huge, sizeof(huge)), (ssize_t)sizeof(huge));
    run_for(&loop, 100);
    assert_int_equal(st->handshakes_failed, 1);
    assert_int_equal(st->half_open, 0);
    char c;
    assert_true(read(fd, &c, 1) <= 0);
    close(fd);
    tnode_close(&a);
    finish(&loop);
}

static void test_queue_bound_and_nothing_accepted_is_lost(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct vv_net_config cfg;
    vv_net_config_defaults(&cfg);
    cfg.peer_queue_bytes = 256u << 10;
    struct tnode a, b;
    tnode_init(&a, &loop, &cfg);
    tnode_init(&b, &loop, NULL);
    char addr[64];
    addr_of(&b, addr, sizeof(addr));
    assert_int_equal(vv_net_connect(a.net, b.id.node_id, addr), 0);
    assert_true(run_until(&loop, &b.ups, 1, 5000));
    assert_true(run_until(&loop, &a.ups, 1, 5000));

    /* Without running the loop, B reads nothing: the kernel's buffers fill, then A's queue
     * for B, and then sends are refused instead of growing. */
    uint8_t *buf = vv_xmalloc(70000);
    size_t n = make_frame(buf, 70000, 65536);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 2000 && refused == 0; i++) {
        int rc = vv_net_send(a.net, b.id.node_id, buf, n);
        if (rc == 0)
            accepted++;
        else {
            assert_int_equal(rc, VV_ECONN_BACKPRESSURE);
            refused++;
        }
    }
    assert_int_equal(refused, 1);
    struct vv_net_conn_info ci;
    assert_int_equal(vv_net_info(a.net, b.id.node_id, &ci), 0);
    assert_true(ci.queued_bytes <= cfg.peer_queue_bytes);
    assert_true(vv_net_stats(a.net)->drops_backpressure == 1);
    /* Everything accepted arrives, intact and in full. */
    uint64_t end = uv_now(&loop) + 20000;
    while (b.frames < (uint64_t)accepted && uv_now(&loop) < end)
        run_for(&loop, 20);
    assert_int_equal(b.frames, accepted);
    assert_int_equal(vv_net_stats(a.net)->queued_bytes, 0);
    vv_free(buf);
    tnode_close(&a);
    tnode_close(&b);
    finish(&loop);
}

/* A second transport, as WebSocket or QUIC will be: it is asked first for its addresses. */
static int fake_dials;
static bool fake_handles(const char *address)
{
    return strncmp(address, "fake://", 7) == 0;
}
static int fake_listen(struct vv_net *net, const char *address, char *err, size_t err_len)
{
    (void)net;
    (void)address;
    (void)err;
    (void)err_len;
    return 0;
}
static int fake_dial(struct vv_net *net, const uint8_t *expect, const char *address)
{
    (void)net;
    (void)expect;
    (void)address;
    fake_dials++;
    return 0;
}

static void test_transports_are_selected_by_address(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tnode a;
    tnode_init(&a, &loop, NULL);
    static const struct vv_net_transport fake = {"fake", fake_handles, fake_listen, fake_dial};
    assert_int_equal(vv_net_add_transport(a.net, &fake), 0);
    assert_int_equal(vv_net_add_transport(a.net, &fake), VV_EEXIST);
    assert_string_equal(vv_net_select_transport(a.net, "fake://x")->name, "fake");
    assert_string_equal(vv_net_select_transport(a.net, "127.0.0.1:9")->name, "tcp");
    assert_null(vv_net_select_transport(a.net, "quic://x:1"));
    assert_int_equal(vv_net_connect(a.net, NULL, "fake://x"), 0);
    assert_int_equal(fake_dials, 1);
    assert_int_equal(vv_net_connect(a.net, NULL, "quic://x:1"), VV_EINVAL);
    tnode_close(&a);
    finish(&loop);
}

static void test_hello_codec(void **state)
{
    (void)state;
    uint8_t buf[VV_SESSION_MAX_HELLO_BYTES];
    size_t n;
    assert_int_equal(vv_net_hello_encode(6, 63, "[::1]:4747", "eu-west", buf, sizeof(buf), &n), 0);
    int t;
    uint32_t caps;
    char listen[128];
    assert_int_equal(vv_net_hello_decode(buf, n, &t, &caps, listen, sizeof(listen)), 0);
    assert_int_equal(t, 6);
    assert_int_equal(caps, 63);
    assert_string_equal(listen, "[::1]:4747");
    /* A node type out of range, a truncated hello, trailing bytes, a huge array claim. */
    uint8_t bad[VV_SESSION_MAX_HELLO_BYTES + 1];
    memcpy(bad, buf, n);
    bad[1] = 7;
    assert_int_equal(vv_net_hello_decode(bad, n, &t, &caps, listen, sizeof(listen)),
                     VV_EWIRE_MALFORMED);
    assert_int_equal(vv_net_hello_decode(buf, n - 1, &t, &caps, listen, sizeof(listen)),
                     VV_EWIRE_MALFORMED);
    memcpy(bad, buf, n);
    bad[n] = 0;
    assert_int_equal(vv_net_hello_decode(bad, n + 1, &t, &caps, listen, sizeof(listen)),
                     VV_EWIRE_MALFORMED);
    static const uint8_t claim[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(vv_net_hello_decode(claim, sizeof(claim), &t, &caps, listen, sizeof(listen)),
                     VV_EWIRE_MALFORMED);
    assert_int_equal(vv_net_hello_decode(buf, 0, &t, &caps, listen, sizeof(listen)),
                     VV_EWIRE_MALFORMED);
    /* A listen address longer than the caller's buffer. */
    assert_int_equal(vv_net_hello_decode(buf, n, &t, &caps, listen, 4), VV_EWIRE_MALFORMED);
}

/*
 * The table of established connections is keyed by the peer's node ID. A node ID is the
 * SHA-256 of a key the peer makes, so a peer can grind IDs that share their first bytes: the
 * bytes an unkeyed "IDs are hashes already" table used as the hash. With the keyed hash,
 * 10,000 such IDs spread over the buckets.
 */
static void test_ids_sharing_a_prefix_spread_over_connection_buckets(void **state)
{
    (void)state;
    enum { N = 10000, BUCKETS = 16384 };
    static uint32_t count[BUCKETS];
    memset(count, 0, sizeof(count));
    uint32_t worst = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint8_t id[VV_NODE_ID_BYTES];
        memset(id, 0x77, sizeof(id));
        memcpy(id + VV_NODE_ID_BYTES - sizeof(i), &i, sizeof(i));
        worst = VV_MAX(worst, ++count[vv__net_id_bucket(id, BUCKETS)]);
    }
    assert_true(worst <= 24); /* about 7 for a random hash; 10,000 for the first 8 bytes */
}

/* ---- requests over real TCP (vivim/env_request.h on the libuv driver) ------------------- */

#define REQ_TYPE 0x0310 /* on the CRDT channel, where neither node has a recv handler */

struct req_probe {
    int done;
    int status;
    uint64_t value, elapsed_ms;
    uint64_t held; /* a context the server keeps */
};

static void req_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct req_probe *p = arg;
    p->done++;
    p->status = a->status;
    p->elapsed_ms = a->elapsed_ms;
    if (a->status == 0 && a->reply->body.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        p->value = a->reply->body.via.u64;
}

/* Answers x with x * 2, and keeps a request for 0 unanswered. */
static void req_serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                      const struct vv_wire_frame *req, void *arg)
{
    (void)peer;
    struct req_probe *p = arg;
    uint64_t x;
    assert_int_equal(vv_wire_get_u64(&req->body, 1000, &x), 0);
    if (x == 0) {
        p->held = ctx;
        return;
    }
    uint8_t body[1] = {(uint8_t)(2 * x)};
    assert_int_equal(vv_env_reply(env, ctx, body, 1), 0);
}

static void test_requests_over_tcp_are_answered_time_out_and_fail_on_disconnect(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct tnode a, b;
    tnode_init(&a, &loop, NULL);
    tnode_init(&b, &loop, NULL);
    struct req_probe served = {0};
    /* A channel with a server and no recv handler is known to the transport, and so are the
     * answer types on a channel where the requester receives nothing else. */
    vv_env_set_server(vv_env_uv_env(b.envu), VV_CHANNEL_CRDT, req_serve, &served);
    char addr[64];
    addr_of(&a, addr, sizeof(addr));
    assert_int_equal(vv_net_connect(b.net, a.id.node_id, addr), 0);
    assert_true(run_until(&loop, &a.ups, 1, 5000));
    assert_true(run_until(&loop, &b.ups, 1, 5000));
    struct vv_env *ea = vv_env_uv_env(a.envu);

    /* Answered. */
    static const uint8_t twenty_one[] = {21};
    struct req_probe p1 = {0};
    assert_int_equal(
        vv_env_request(ea, b.id.node_id, REQ_TYPE, twenty_one, 1, 5000, req_answer, &p1, NULL), 0);
    assert_true(run_until(&loop, &p1.done, 1, 5000));
    assert_int_equal(p1.status, 0);
    assert_int_equal(p1.value, 42);

    /* Not answered: times out on the real clock, once. */
    static const uint8_t zero[] = {0};
    struct req_probe p2 = {0};
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(
        vv_env_request(ea, b.id.node_id, REQ_TYPE, zero, 1, 200, req_answer, &p2, NULL), 0);
    assert_true(run_until(&loop, &p2.done, 1, 5000));
    assert_int_equal(p2.status, VV_EREQ_TIMEOUT);
    assert_true(uv_now(&loop) - t0 >= 200);
    assert_true(p2.elapsed_ms >= 200);
    /* The server answers late: dropped and counted, no second callback. */
    static const uint8_t one[] = {1};
    assert_int_equal(vv_env_reply(vv_env_uv_env(b.envu), served.held, one, 1), 0);
    uint64_t late0 = vv_env_req_stats(ea)->late;
    uint64_t end = uv_now(&loop) + 5000;
    while (vv_env_req_stats(ea)->late == late0 && uv_now(&loop) < end)
        run_for(&loop, 10);
    assert_int_equal(vv_env_req_stats(ea)->late, late0 + 1);
    assert_int_equal(p2.done, 1);

    /* Outstanding when the connection goes: failed at once, long before its timeout. */
    struct req_probe p3 = {0};
    assert_int_equal(
        vv_env_request(ea, b.id.node_id, REQ_TYPE, zero, 1, 60000, req_answer, &p3, NULL), 0);
    run_for(&loop, 50); /* it reaches the server, which keeps it */
    vv_net_disconnect(b.net, a.id.node_id);
    assert_true(run_until(&loop, &p3.done, 1, 5000));
    assert_int_equal(p3.status, VV_EREQ_PEER_DOWN);
    assert_true(p3.elapsed_ms < 5000);
    /* The server's context went with the connection: a reply now is a no-op. */
    assert_int_equal(vv_env_reply(vv_env_uv_env(b.envu), served.held, one, 1), VV_ENOTFOUND);
    const struct vv_env_req_stats *st = vv_env_req_stats(ea);
    assert_int_equal(st->sent, 3);
    assert_int_equal(st->answered, 1);
    assert_int_equal(st->timed_out, 1);
    assert_int_equal(st->peer_down, 1);
    assert_int_equal(st->in_flight, 0);
    /* No connection: refused at once, no callback. */
    assert_int_equal(
        vv_env_request(ea, b.id.node_id, REQ_TYPE, zero, 1, 100, req_answer, &p3, NULL),
        VV_ECONN_NOT_CONNECTED);
    assert_int_equal(vv_net_stats(a.net)->decode_errors, 0);
    assert_int_equal(vv_net_stats(b.net)->decode_errors, 0);

    /* Closing frees the layer (env_uv calls vv_env_fini) without a leak. */
    tnode_close(&a);
    tnode_close(&b);
    finish(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_codec),
        cmocka_unit_test(test_ids_sharing_a_prefix_spread_over_connection_buckets),
        cmocka_unit_test(test_transports_are_selected_by_address),
        cmocka_unit_test(test_connect_and_exchange_frames),
        cmocka_unit_test(test_wrong_identity_is_refused),
        cmocka_unit_test(test_dial_by_name_resolves),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_simultaneous_dials_keep_one_connection),
        cmocka_unit_test(test_half_open_limit_and_handshake_deadline),
        cmocka_unit_test(test_queue_bound_and_nothing_accepted_is_lost),
        cmocka_unit_test(test_requests_over_tcp_are_answered_time_out_and_fail_on_disconnect),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
