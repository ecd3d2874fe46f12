/*
 * Datagrams on vv_env (src/env/env.c) and the request layer over them (src/env/request.c),
 * on the shared fake env: addresses, the envelope's checks, delivery to a channel's
 * handler, and requests by datagram matched by id, source address and claimed ID, bounded
 * per destination address and, when served, per source IP.
 */
#include "vv_test.h"

#include <msgpack.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/env_request.h"
#include "vivim/wire.h"

#define TEST_REQ 0x0f01 /* a request type on the test channel */

/* ---- helpers ----------------------------------------------------------------------------- */

/* A frame [1, 0, type, rid, bin of n bytes] in *out (vv_xmalloc'd); returns its length. */
static size_t make_frame(uint16_t type, uint64_t rid, size_t n, uint8_t **out)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, rid);
    msgpack_pack_bin(&pk, n);
    uint8_t *zeros = vv_xcalloc(1, n + 1);
    msgpack_pack_bin_body(&pk, zeros, n);
    vv_free(zeros);
    *out = vv_xmalloc(sb.size);
    memcpy(*out, sb.data, sb.size);
    size_t len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return len;
}

/* A body: a bin of n bytes. */
static size_t make_body(size_t n, uint8_t *buf, size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_bin(&pk, n);
    uint8_t *zeros = vv_xcalloc(1, n + 1);
    msgpack_pack_bin_body(&pk, zeros, n);
    vv_free(zeros);
    assert_true(sb.size <= cap);
    memcpy(buf, sb.data, sb.size);
    size_t len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return len;
}

struct seen {
    int calls;
    uint8_t claimed[VV_NODE_ID_BYTES];
    char from[VV_ENV_ADDRESS_BYTES];
    size_t len;
};

static void on_dgram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES], const char *from,
                     const uint8_t *frame, size_t len, void *arg)
{
    (void)env;
    (void)frame;
    struct seen *s = arg;
    s->calls++;
    memcpy(s->claimed, claimed, VV_NODE_ID_BYTES);
    vv_strlcpy(s->from, from, sizeof(s->from));
    s->len = len;
}

struct two {
    struct vv_fake_net net;
    struct vv_fake_env a, b;
};

static void two_init(struct two *t)
{
    vv_fake_env_init(&t->a, 1);
    vv_fake_env_init(&t->b, 2);
    vv_fake_net_init(&t->net);
    vv_fake_net_add(&t->net, &t->a);
    vv_fake_net_add(&t->net, &t->b);
    assert_int_equal(vv_fake_env_set_address(&t->a, "192.0.2.1:4747"), 0);
    assert_int_equal(vv_fake_env_set_address(&t->b, "192.0.2.2:4747"), 0);
}

static void two_free(struct two *t)
{
    vv_env_fini(&t->a.env);
    vv_env_fini(&t->b.env);
    vv_fake_env_free(&t->a);
    vv_fake_env_free(&t->b);
}

/* ---- env.c ------------------------------------------------------------------------------- */

static void test_addresses_are_numeric_and_canonical(void **state)
{
    (void)state;
    char out[VV_ENV_ADDRESS_BYTES];
    assert_int_equal(vv_env_address_canon("127.0.0.1:4747", out, sizeof(out)), 0);
    assert_string_equal(out, "127.0.0.1:4747");
    assert_int_equal(vv_env_address_canon("[0:0:0::1]:80", out, sizeof(out)), 0);
    assert_string_equal(out, "[::1]:80");
    assert_int_equal(vv_env_address_canon("[2001:DB8::1]:65535", out, sizeof(out)), 0);
    assert_string_equal(out, "[2001:db8::1]:65535");
    static const char *const bad[] = {
        "localhost:4747", "127.0.0.1", "127.0.0.1:0",    "127.0.0.1:65536",
        "127.0.0.1:+80",  "::1:80",    "[::1:80",        ":80",
        "1.2.3.4: 80",    "[]:80",     "1.2.3.4:123456", "01.2.3.4:80",
        "[1.2.3.4]:80",   "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(vv_env_address_canon(bad[i], out, sizeof(out)), VV_EDGRAM_ADDRESS);
    assert_int_equal(vv_env_address_canon(NULL, out, sizeof(out)), VV_EDGRAM_ADDRESS);
    assert_int_equal(vv_env_address_canon("127.0.0.1:4747", out, 8), VV_EDGRAM_ADDRESS);
    assert_int_equal(vv_env_address_ip("[::1]:80", out, sizeof(out)), 0);
    assert_string_equal(out, "::1");
    assert_int_equal(vv_env_address_ip("10.0.0.1:80", out, sizeof(out)), 0);
    assert_string_equal(out, "10.0.0.1");
}

static void test_envelope_is_checked_field_by_field(void **state)
{
    (void)state;
    uint8_t id[VV_NODE_ID_BYTES];
    memset(id, 0xab, sizeof(id));
    const uint8_t frame[] = {0x95, 1, 0, 0, 0, 0xc0};
    uint8_t d[VV_ENV_MAX_DATAGRAM_BYTES + 1];
    size_t n = vv_env_datagram_seal(id, frame, sizeof(frame), d, sizeof(d));
    assert_int_equal(n, VV_ENV_DATAGRAM_HEADER_BYTES + sizeof(frame));
    assert_memory_equal(d, "VD\x01\x00", 4);
    const uint8_t *claimed, *f;
    size_t fl;
    assert_int_equal(vv_env_datagram_open(d, n, &claimed, &f, &fl), VV_DGRAM_OK);
    assert_memory_equal(claimed, id, VV_NODE_ID_BYTES);
    assert_int_equal(fl, sizeof(frame));
    assert_memory_equal(f, frame, fl);
    assert_int_equal(vv_env_datagram_open(d, VV_ENV_DATAGRAM_HEADER_BYTES - 1, &claimed, &f, &fl),
                     VV_DGRAM_SHORT);
    assert_int_equal(vv_env_datagram_open(d, sizeof(d), &claimed, &f, &fl), VV_DGRAM_OVERSIZE);
    d[1] = 'X';
    assert_int_equal(vv_env_datagram_open(d, n, &claimed, &f, &fl), VV_DGRAM_MAGIC);
    d[1] = 'D';
    d[2] = 2;
    assert_int_equal(vv_env_datagram_open(d, n, &claimed, &f, &fl), VV_DGRAM_VERSION);
    d[2] = 1;
    d[3] = 1;
    assert_int_equal(vv_env_datagram_open(d, n, &claimed, &f, &fl), VV_DGRAM_FLAGS);
    assert_string_equal(vv_env_datagram_verdict_name(VV_DGRAM_FLAGS), "flags");
    /* Too small a buffer to seal into. */
    assert_int_equal(vv_env_datagram_seal(id, frame, sizeof(frame), d, 10), 0);
}

static void test_a_datagram_reaches_its_channel_with_claimed_id_and_source(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    struct seen s = {0};
    vv_env_set_datagram_handler(&t.b.env, VV_CHANNEL_TEST, on_dgram, &s);
    uint8_t *f;
    size_t fl = make_frame(0x0f05, 0, 100, &f);
    assert_int_equal(vv_env_send_datagram(&t.a.env, "192.0.2.2:4747", f, fl), 0);
    assert_int_equal(vv_fake_env_datagrams_pending(&t.a), 1);
    assert_int_equal(vv_fake_net_pump_all(&t.net), 1);
    assert_int_equal(s.calls, 1);
    assert_memory_equal(s.claimed, t.a.id.node_id, VV_NODE_ID_BYTES);
    assert_string_equal(s.from, "192.0.2.1:4747");
    assert_int_equal(s.len, fl);
    assert_int_equal(t.b.env.dgram.delivered, 1);
    assert_int_equal(t.a.env.dgram.sent, 1);
    /* To an address no env has: lost, as on a network. */
    assert_int_equal(vv_env_send_datagram(&t.a.env, "192.0.2.9:4747", f, fl), 0);
    uint64_t lost = 0;
    assert_true(vv_fake_net_deliver_datagram_one(&t.net, &lost));
    assert_int_equal(lost, 1);
    assert_int_equal(s.calls, 1);
    vv_free(f);
    two_free(&t);
}

static void test_bad_and_unhandled_datagrams_are_dropped_and_counted(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    uint8_t *f;
    size_t fl = make_frame(0x0f05, 0, 10, &f);
    /* No handler on the channel. */
    assert_int_equal(vv_env_deliver_datagram(&t.b.env, t.a.id.node_id, "192.0.2.1:4747", f, fl),
                     VV_ENOTFOUND);
    assert_int_equal(t.b.env.dgram.unhandled, 1);
    /* A frame that fails the wire check, and one too large for a datagram. */
    uint8_t bad[] = {0x95, 9, 0, 0, 0, 0xc0};
    assert_int_equal(
        vv_env_deliver_datagram(&t.b.env, t.a.id.node_id, "192.0.2.1:4747", bad, sizeof(bad)),
        VV_EWIRE_VERSION);
    uint8_t *big;
    size_t bl = make_frame(0x0f05, 0, VV_ENV_MAX_DATAGRAM_FRAME_BYTES, &big);
    assert_int_equal(vv_env_deliver_datagram(&t.b.env, t.a.id.node_id, "192.0.2.1:4747", big, bl),
                     VV_EWIRE_TOO_LARGE);
    assert_int_equal(t.b.env.dgram.bad_frame, 2);
    /* A refused envelope. */
    enum vv_env_dgram_verdict v;
    assert_int_equal(vv_env_receive_datagram(&t.b.env, "192.0.2.1:4747", f, fl, &v),
                     VV_EDGRAM_MALFORMED);
    assert_int_equal(v, VV_DGRAM_SHORT);
    assert_int_equal(t.b.env.dgram.delivered, 0);
    vv_free(f);
    vv_free(big);
    two_free(&t);
}

static void test_sends_are_refused_for_size_address_and_support(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    uint8_t *f, *big;
    size_t fl = make_frame(0x0f05, 0, 10, &f);
    size_t bl = make_frame(0x0f05, 0, VV_ENV_MAX_DATAGRAM_FRAME_BYTES, &big);
    assert_int_equal(vv_env_send_datagram(&t.a.env, "192.0.2.2:4747", big, bl), VV_EWIRE_TOO_LARGE);
    assert_int_equal(vv_env_send_datagram(&t.a.env, "example.org:4747", f, fl), VV_EDGRAM_ADDRESS);
    assert_int_equal(vv_env_send_datagram(&t.a.env, "192.0.2.2:4747", f, fl - 1), VV_EINVAL);
    vv_fake_env_set_datagram_rc(&t.a, VV_ECONN_BACKPRESSURE);
    assert_int_equal(vv_env_send_datagram(&t.a.env, "192.0.2.2:4747", f, fl),
                     VV_ECONN_BACKPRESSURE);
    assert_int_equal(t.a.env.dgram.send_fails, 1);
    t.a.ops.datagram = NULL;
    assert_int_equal(vv_env_send_datagram(&t.a.env, "192.0.2.2:4747", f, fl),
                     VV_EDGRAM_UNSUPPORTED);
    assert_int_equal(vv_fake_env_datagrams_pending(&t.a), 0);
    vv_free(f);
    vv_free(big);
    two_free(&t);
}

/* ---- the request layer by datagram ------------------------------------------------------- */

struct server {
    int served;
    bool hold; /* keep the context instead of answering */
    uint64_t ctx;
    char source[VV_ENV_ADDRESS_BYTES];
    uint8_t peer[VV_NODE_ID_BYTES];
};

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *req, void *arg)
{
    (void)req;
    struct server *s = arg;
    s->served++;
    s->ctx = ctx;
    memcpy(s->peer, peer, VV_NODE_ID_BYTES);
    const char *src = vv_env_request_source(env, ctx);
    vv_strlcpy(s->source, src ? src : "", sizeof(s->source));
    if (s->hold)
        return;
    uint8_t body[64];
    size_t n = make_body(8, body, sizeof(body));
    assert_int_equal(vv_env_reply(env, ctx, body, n), 0);
}

struct answers {
    int n;
    int status;
    bool had_peer;
    uint8_t peer[VV_NODE_ID_BYTES];
    char address[VV_ENV_ADDRESS_BYTES];
};

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct answers *r = arg;
    r->n++;
    r->status = a->status;
    r->had_peer = a->peer != NULL;
    if (a->peer)
        memcpy(r->peer, a->peer, VV_NODE_ID_BYTES);
    vv_strlcpy(r->address, a->address ? a->address : "", sizeof(r->address));
}

static void test_a_request_by_datagram_is_served_and_answered_by_datagram(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    struct server srv = {0};
    vv_env_set_server(&t.b.env, VV_CHANNEL_TEST, serve, &srv);
    uint8_t body[64];
    size_t n = make_body(16, body, sizeof(body));
    struct answers ans = {0};
    uint64_t id;
    /* A leading zero is not a numeric address here (inet_pton refuses it). */
    assert_int_equal(vv_env_request_datagram(&t.a.env, t.b.id.node_id, "192.0.2.002:4747", TEST_REQ,
                                             body, n, 1000, on_answer, &ans, &id),
                     VV_EDGRAM_ADDRESS);
    assert_int_equal(vv_env_request_datagram(&t.a.env, t.b.id.node_id, "192.0.2.2:4747", TEST_REQ,
                                             body, n, 1000, on_answer, &ans, &id),
                     0);
    assert_int_equal(vv_fake_env_outbox_len(&t.a), 0); /* no connection used */
    vv_fake_net_pump_all(&t.net);
    assert_int_equal(srv.served, 1);
    assert_string_equal(srv.source, "192.0.2.1:4747");
    assert_memory_equal(srv.peer, t.a.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(ans.n, 1);
    assert_int_equal(ans.status, 0);
    assert_string_equal(ans.address, "192.0.2.2:4747");
    assert_memory_equal(ans.peer, t.b.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(vv_env_req_stats(&t.a.env)->answered, 1);
    assert_int_equal(vv_env_req_stats(&t.a.env)->in_flight, 0);
    /* Without a peer named, the answer's claimed ID is reported. */
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.2:4747", TEST_REQ, body, n,
                                             1000, on_answer, &ans, NULL),
                     0);
    vv_fake_net_pump_all(&t.net);
    assert_int_equal(ans.n, 2);
    assert_int_equal(ans.status, 0);
    assert_true(ans.had_peer);
    assert_memory_equal(ans.peer, t.b.id.node_id, VV_NODE_ID_BYTES);
    two_free(&t);
}

/* An answer frame to rid, as b would send it. */
static size_t answer_frame(uint64_t rid, uint8_t **out)
{
    return make_frame((uint16_t)(VV_CHANNEL_TEST << 8 | VV_REQ_TYPE_REPLY), rid, 4, out);
}

static void test_only_the_address_and_id_asked_may_answer(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    uint8_t body[64];
    size_t n = make_body(4, body, sizeof(body));
    struct answers ans = {0};
    uint64_t id;
    assert_int_equal(vv_env_request_datagram(&t.a.env, t.b.id.node_id, "192.0.2.2:4747", TEST_REQ,
                                             body, n, 1000, on_answer, &ans, &id),
                     0);
    vv_fake_env_datagrams_pending(&t.a);
    uint8_t *f;
    size_t fl = answer_frame(id, &f);
    /* From another address, with the right ID claimed. */
    assert_int_equal(vv_env_deliver_datagram(&t.a.env, t.b.id.node_id, "192.0.2.3:4747", f, fl), 0);
    /* From the right IP but another port. */
    assert_int_equal(vv_env_deliver_datagram(&t.a.env, t.b.id.node_id, "192.0.2.2:4748", f, fl), 0);
    /* From the right address claiming another ID. */
    assert_int_equal(vv_env_deliver_datagram(&t.a.env, t.a.id.node_id, "192.0.2.2:4747", f, fl), 0);
    /* Over a connection from the right peer. */
    vv_fake_env_deliver(&t.a, t.b.id.node_id, VV_CHANNEL_TEST, f, fl);
    assert_int_equal(ans.n, 0);
    assert_int_equal(vv_env_req_stats(&t.a.env)->late, 4);
    /* The real one. */
    assert_int_equal(vv_env_deliver_datagram(&t.a.env, t.b.id.node_id, "192.0.2.2:4747", f, fl), 0);
    assert_int_equal(ans.n, 1);
    assert_int_equal(ans.status, 0);
    /* Again: late. */
    assert_int_equal(vv_env_deliver_datagram(&t.a.env, t.b.id.node_id, "192.0.2.2:4747", f, fl), 0);
    assert_int_equal(ans.n, 1);
    assert_int_equal(vv_env_req_stats(&t.a.env)->late, 5);
    vv_free(f);
    two_free(&t);
}

static void test_lost_datagrams_time_out_and_peer_down_does_not_touch_them(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    uint8_t body[64];
    size_t n = make_body(4, body, sizeof(body));
    struct answers ans = {0}, ans2 = {0};
    uint64_t id2;
    assert_int_equal(vv_env_request_datagram(&t.a.env, t.b.id.node_id, "192.0.2.2:4747", TEST_REQ,
                                             body, n, 500, on_answer, &ans, NULL),
                     0);
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.2:4747", TEST_REQ, body, n,
                                             500, on_answer, &ans2, &id2),
                     0);
    vv_fake_env_peer_up(&t.a, t.b.id.node_id);
    vv_fake_env_peer_down(&t.a, t.b.id.node_id);
    assert_int_equal(ans.n, 0);
    /* Both lost on the way. */
    struct vv_fake_dgram d;
    while (vv_fake_env_pop_datagram(&t.a, &d))
        vv_fake_dgram_free(&d);
    assert_int_equal(vv_env_request_cancel(&t.a.env, id2), 0);
    vv_fake_env_advance(&t.a, 499);
    assert_int_equal(ans.n, 0);
    vv_fake_env_advance(&t.a, 1);
    assert_int_equal(ans.n, 1);
    assert_int_equal(ans.status, VV_EREQ_TIMEOUT);
    assert_string_equal(ans.address, "192.0.2.2:4747");
    assert_memory_equal(ans.peer, t.b.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(ans2.n, 0); /* cancelled: never calls back */
    assert_int_equal(vv_env_req_stats(&t.a.env)->timed_out, 1);
    assert_int_equal(vv_env_req_stats(&t.a.env)->in_flight, 0);
    two_free(&t);
}

static void test_in_flight_bound_is_per_destination_address(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    vv_env_req_set_limits(&t.a.env, &(struct vv_env_req_limits){.max_per_peer = 1});
    uint8_t body[64];
    size_t n = make_body(4, body, sizeof(body));
    struct answers ans = {0};
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.2:4747", TEST_REQ, body, n,
                                             500, on_answer, &ans, NULL),
                     0);
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.2:4747", TEST_REQ, body, n,
                                             500, on_answer, &ans, NULL),
                     VV_EREQ_TOO_MANY);
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.2:4748", TEST_REQ, body, n,
                                             500, on_answer, &ans, NULL),
                     0);
    /* The connection path to the same node is not bounded by the datagram one. */
    vv_fake_env_peer_up(&t.a, t.b.id.node_id);
    assert_int_equal(
        vv_env_request(&t.a.env, t.b.id.node_id, TEST_REQ, body, n, 500, on_answer, &ans, NULL), 0);
    /* Too large a request for a datagram; a refused send. */
    uint8_t big[1400];
    size_t bn = make_body(1300, big, sizeof(big));
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.3:4747", TEST_REQ, big, bn,
                                             500, on_answer, &ans, NULL),
                     VV_EWIRE_TOO_LARGE);
    vv_fake_env_set_datagram_rc(&t.a, VV_ECONN_BACKPRESSURE);
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, "192.0.2.4:4747", TEST_REQ, body, n,
                                             500, on_answer, &ans, NULL),
                     VV_ECONN_BACKPRESSURE);
    assert_int_equal(vv_env_request_datagram(&t.a.env, NULL, NULL, TEST_REQ, body, n, 500,
                                             on_answer, &ans, NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_req_stats(&t.a.env)->in_flight, 3);
    two_free(&t);
}

static void test_served_bound_is_per_source_ip_not_claimed_id(void **state)
{
    (void)state;
    struct two t;
    two_init(&t);
    struct server srv = {.hold = true};
    vv_env_set_server(&t.b.env, VV_CHANNEL_TEST, serve, &srv);
    vv_env_req_set_limits(&t.b.env, &(struct vv_env_req_limits){.max_served_per_peer = 1});
    uint8_t *f1, *f2, *f3;
    size_t l1 = make_frame(TEST_REQ, 11, 4, &f1);
    size_t l2 = make_frame(TEST_REQ, 12, 4, &f2);
    size_t l3 = make_frame(TEST_REQ, 13, 4, &f3);
    uint8_t other[VV_NODE_ID_BYTES];
    memset(other, 0x77, sizeof(other));
    assert_int_equal(vv_env_deliver_datagram(&t.b.env, t.a.id.node_id, "192.0.2.1:4747", f1, l1),
                     0);
    /* Same IP, another port, another claimed ID: busy. */
    assert_int_equal(vv_env_deliver_datagram(&t.b.env, other, "192.0.2.1:5000", f2, l2), 0);
    assert_int_equal(srv.served, 1);
    assert_int_equal(vv_env_req_stats(&t.b.env)->served_busy, 1);
    const struct vv_fake_dgram *busy = vv_fake_env_peek_datagram(&t.b, 0);
    assert_non_null(busy);
    assert_string_equal(busy->to, "192.0.2.1:5000");
    /* Another IP: served. */
    assert_int_equal(vv_env_deliver_datagram(&t.b.env, other, "192.0.2.9:4747", f3, l3), 0);
    assert_int_equal(srv.served, 2);
    assert_string_equal(vv_env_request_source(&t.b.env, srv.ctx), "192.0.2.9:4747");
    /* IPv6: one /64 is one source. */
    uint8_t *f4, *f5;
    size_t l4 = make_frame(TEST_REQ, 14, 4, &f4);
    size_t l5 = make_frame(TEST_REQ, 15, 4, &f5);
    uint64_t ctx_v4 = srv.ctx;
    assert_int_equal(vv_env_deliver_datagram(&t.b.env, other, "[2001:db8:1:2::1]:4747", f4, l4), 0);
    assert_int_equal(srv.served, 3);
    assert_int_equal(
        vv_env_deliver_datagram(&t.b.env, other, "[2001:db8:1:2:ffff::9]:4000", f5, l5), 0);
    assert_int_equal(srv.served, 3);
    assert_int_equal(vv_env_req_stats(&t.b.env)->served_busy, 2);
    vv_free(f4);
    vv_free(f5);
    srv.ctx = ctx_v4;
    /* A reply too large for a datagram leaves the context live; a small one goes. */
    uint8_t big[1400];
    size_t bn = make_body(1300, big, sizeof(big));
    assert_int_equal(vv_env_reply(&t.b.env, srv.ctx, big, bn), VV_EWIRE_TOO_LARGE);
    assert_int_equal(vv_env_reply_error(&t.b.env, srv.ctx, VV_REQ_ERR_DENIED, "no"), 0);
    assert_null(vv_env_request_source(&t.b.env, srv.ctx));
    const struct vv_fake_dgram *err = vv_fake_env_peek_datagram(&t.b, 2);
    assert_non_null(err);
    assert_string_equal(err->to, "192.0.2.9:4747");
    /* A connection going down does not drop contexts served by datagram. */
    vv_fake_env_peer_down(&t.b, t.a.id.node_id);
    assert_int_equal(vv_env_req_stats(&t.b.env)->serving, 2);
    vv_free(f1);
    vv_free(f2);
    vv_free(f3);
    two_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses_are_numeric_and_canonical),
        cmocka_unit_test(test_envelope_is_checked_field_by_field),
        cmocka_unit_test(test_a_datagram_reaches_its_channel_with_claimed_id_and_source),
        cmocka_unit_test(test_bad_and_unhandled_datagrams_are_dropped_and_counted),
        cmocka_unit_test(test_sends_are_refused_for_size_address_and_support),
        cmocka_unit_test(test_a_request_by_datagram_is_served_and_answered_by_datagram),
        cmocka_unit_test(test_only_the_address_and_id_asked_may_answer),
        cmocka_unit_test(test_lost_datagrams_time_out_and_peer_down_does_not_touch_them),
        cmocka_unit_test(test_in_flight_bound_is_per_destination_address),
        cmocka_unit_test(test_served_bound_is_per_source_ip_not_claimed_id),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
