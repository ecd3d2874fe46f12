/*
 * The request/response layer (src/env/request.c) on a net of four shared fake envs
 * (fake_env.h): manual clocks moved together, timers fired in deadline order, and messages
 * waiting in the senders' outboxes until the test pumps them, with links that can be cut
 * (peer events) and sends that can be refused (back-pressure) or report the peer down. Each
 * test pins one promise of vivim/env_request.h.
 */
#include "vv_test.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/env_request.h"

#define TEST_REQ  0x0f01 /* a request type on the test channel */
#define MAX_NODES 4

/* ---- the fake environment ---------------------------------------------------------------- */

/* Node i is nodes[i]: a link from i to j is "j marked connected at i" (require_connected), so
 * a send on a cut link is refused VV_ECONN_NOT_CONNECTED and a message arriving over one is
 * lost. */
struct fnet {
    struct vv_fake_net net;
    struct vv_fake_env nodes[MAX_NODES];
};

/* The layer only uses one-shots. */
static uint64_t one_shot_timer(void *impl, uint64_t delay, uint64_t repeat, vv_env_timer_cb cb,
                               void *arg)
{
    assert_int_equal(repeat, 0);
    return vv_fake_env_default_ops.timer_start(impl, delay, repeat, cb, arg);
}

static const uint8_t *id_of(struct fnet *n, int i)
{
    return n->nodes[i].id.node_id;
}

/* Sets the link from node a to node b (one way), raising no event. */
static void set_link(struct fnet *n, int a, int b, bool up)
{
    vv_fake_env_set_connected(&n->nodes[a], id_of(n, b), up);
}

static struct fnet *fnet_new(void)
{
    struct fnet *n = vv_xcalloc(1, sizeof(*n));
    vv_fake_net_init(&n->net);
    for (int i = 0; i < MAX_NODES; i++) {
        struct vv_fake_env *f = &n->nodes[i];
        vv_fake_env_init(f, (uint64_t)i + 1);
        f->ops.timer_start = one_shot_timer;
        f->require_connected = true;
        f->connect_rc = VV_ECONN_NOT_CONNECTED; /* nobody dials here */
        vv_fake_net_add(&n->net, f);
    }
    for (int i = 0; i < MAX_NODES; i++)
        for (int j = 0; j < MAX_NODES; j++)
            if (i != j)
                set_link(n, i, j, true);
    return n;
}

static void fnet_free(struct fnet *n)
{
    for (int i = 0; i < MAX_NODES; i++)
        vv_env_fini(&n->nodes[i].env);
    for (int i = 0; i < MAX_NODES; i++)
        vv_fake_env_free(&n->nodes[i]);
    vv_free(n);
}

static struct vv_env *env_of(struct fnet *n, int i)
{
    return &n->nodes[i].env;
}

/* Messages sent and not yet delivered or dropped, across the net. */
static size_t in_flight(struct fnet *n)
{
    return vv_fake_net_in_flight(&n->net);
}

/* Delivers queued messages in send order (those queued meanwhile too); a message whose
 * receiver's link back to the sender is cut is lost. Returns how many left the queue. */
static size_t pump(struct fnet *n)
{
    size_t done = 0;
    for (const struct vv_fake_msg *m; (m = vv_fake_net_peek(&n->net)) != NULL; done++) {
        struct vv_fake_env *to = vv_fake_net_find(&n->net, m->peer);
        if (to != NULL && vv_fake_env_is_connected(to, m->from))
            vv_fake_net_deliver_one(&n->net);
        else
            vv_fake_net_drop_one(&n->net);
    }
    return done;
}

/* Drops every queued message (loss). */
static void drop_all(struct fnet *n)
{
    for (int i = 0; i < MAX_NODES; i++)
        vv_fake_env_clear_outbox(&n->nodes[i]);
}

static unsigned live_timers(struct fnet *n)
{
    size_t k = 0;
    for (int i = 0; i < MAX_NODES; i++)
        k += vv_fake_env_timers_pending(&n->nodes[i], false);
    return (unsigned)k;
}

/* Moves the clocks forward, firing due timers in deadline order. */
static void advance(struct fnet *n, uint64_t ms)
{
    vv_fake_net_advance(&n->net, ms);
}

/* ---- what the tests observe ------------------------------------------------------------- */

#define MAX_LOG 64

struct answer_rec {
    uint64_t id;
    int status;
    uint8_t peer[VV_NODE_ID_BYTES]; /* who answered */
    uint64_t value;                 /* the reply's body, when it is a uint */
    uint32_t code;
    char message[300];
};

struct client {
    struct answer_rec log[MAX_LOG];
    int n;
    char events[256]; /* order of answers ('a') and channel peer-downs ('D') */
    /* A callback action: on the next completion, send a request to this node. */
    struct fnet *net;
    int resend_to;
};

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    struct client *c = arg;
    assert_true(c->n < MAX_LOG);
    struct answer_rec *r = &c->log[c->n++];
    r->id = a->id;
    r->status = a->status;
    memcpy(r->peer, a->peer, VV_NODE_ID_BYTES);
    r->code = a->error_code;
    if (a->status == 0) {
        assert_non_null(a->reply);
        if (a->reply->body.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            r->value = a->reply->body.via.u64;
    }
    if (a->error_message_len)
        snprintf(r->message, sizeof(r->message), "%.*s", (int)a->error_message_len,
                 a->error_message);
    strcat(c->events, "a");
    if (c->resend_to >= 0) {
        int to = c->resend_to;
        c->resend_to = -1;
        static const uint8_t body[] = {0x07};
        assert_int_equal(
            vv_env_request(env, id_of(c->net, to), TEST_REQ, body, 1, 50, on_answer, c, NULL), 0);
    }
}

static void client_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up,
                        void *arg)
{
    struct client *c = arg;
    if (!up)
        strcat(c->events, "D");
}

static int recv_count;
static void client_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES],
                        const uint8_t *data, size_t len, void *arg)
{
    recv_count++;
}

/* A server: answers at once with the request's body + 1 (mode REPLY), an error (ERROR),
 * or keeps the context for later (HOLD). */
enum { REPLY, ERROR, HOLD };
struct server {
    int mode;
    uint64_t held[MAX_LOG];
    int n_held;
    int seen;
    uint32_t code;
    const char *message;
};

static void pack_uint(uint64_t v, uint8_t *buf, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_uint64(&pk, v);
    memcpy(buf, sb.data, sb.size);
    *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *req, void *arg)
{
    struct server *s = arg;
    s->seen++;
    assert_int_equal(req->h.type, TEST_REQ);
    assert_true(req->h.request_id != 0);
    uint64_t v = req->body.type == MSGPACK_OBJECT_POSITIVE_INTEGER ? req->body.via.u64 : 0;
    uint8_t buf[16];
    size_t len;
    switch (s->mode) {
    case REPLY:
        pack_uint(v + 1, buf, &len);
        assert_int_equal(vv_env_reply(env, ctx, buf, len), 0);
        break;
    case ERROR:
        assert_int_equal(vv_env_reply_error(env, ctx, s->code, s->message), 0);
        break;
    default:
        s->held[s->n_held++] = ctx;
    }
}

static int request_uint(struct fnet *n, int from, int to, uint64_t v, uint32_t timeout,
                        struct client *c, uint64_t *id)
{
    uint8_t buf[16];
    size_t len;
    pack_uint(v, buf, &len);
    return vv_env_request(env_of(n, from), id_of(n, to), TEST_REQ, buf, len, timeout, on_answer, c,
                          id);
}

static struct fnet *setup(struct client *c, struct server *s)
{
    struct fnet *n = fnet_new();
    memset(c, 0, sizeof(*c));
    c->net = n;
    c->resend_to = -1;
    vv_env_set_channel(env_of(n, 0), VV_CHANNEL_TEST, client_recv, client_peer, c);
    vv_env_set_channel(env_of(n, 1), VV_CHANNEL_TEST, client_recv, NULL, NULL);
    vv_env_set_server(env_of(n, 1), VV_CHANNEL_TEST, serve, s);
    recv_count = 0;
    return n;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_request_is_answered_once_with_the_reply(void **state)
{
    struct client c;
    struct server s = {.mode = REPLY};
    struct fnet *n = setup(&c, &s);
    uint64_t id = 0;
    assert_int_equal(request_uint(n, 0, 1, 41, 100, &c, &id), 0);
    assert_true(id != 0);
    assert_int_equal(c.n, 0); /* never called back from inside the send */
    pump(n);
    assert_int_equal(s.seen, 1);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.log[0].status, 0);
    assert_int_equal(c.log[0].id, id);
    assert_int_equal(c.log[0].value, 42);
    assert_memory_equal(c.log[0].peer, id_of(n, 1), VV_NODE_ID_BYTES);
    const struct vv_env_req_stats *st = vv_env_req_stats(env_of(n, 0));
    assert_int_equal(st->sent, 1);
    assert_int_equal(st->answered, 1);
    assert_int_equal(st->in_flight, 0);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->served, 1);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->serving, 0);
    assert_int_equal(recv_count, 0);     /* neither request nor answer reached recv */
    assert_int_equal(live_timers(n), 0); /* nothing outstanding: no timer left */
    /* Nothing more comes of it. */
    advance(n, 1000);
    assert_int_equal(c.n, 1);
    fnet_free(n);
}

static void test_error_answer_carries_code_and_message(void **state)
{
    struct client c;
    struct server s = {.mode = ERROR, .code = 300, .message = "no such thing"};
    struct fnet *n = setup(&c, &s);
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.log[0].status, VV_EREQ_REMOTE);
    assert_int_equal(c.log[0].code, 300);
    assert_string_equal(c.log[0].message, "no such thing");
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->remote_errors, 1);

    /* A message that would fail the receiver's text check is sent empty; a long one is cut
     * to 256 bytes at a character boundary. */
    s.message = "bad\nline";
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(c.log[1].status, VV_EREQ_REMOTE);
    assert_string_equal(c.log[1].message, "");
    char longmsg[400];
    memset(longmsg, 'x', sizeof(longmsg));
    memcpy(longmsg + 255, "\xc3\xa9", 2); /* é straddling the 256-byte line: bytes 255-256 */
    longmsg[sizeof(longmsg) - 1] = '\0';
    s.message = longmsg;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(c.log[2].status, VV_EREQ_REMOTE);
    assert_int_equal(strlen(c.log[2].message), 255); /* the straddling é is left out */
    /* Code 0 and codes over 65535 are refused; the context stays live. */
    s.mode = HOLD;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(vv_env_reply_error(env_of(n, 1), s.held[0], 0, "x"), VV_EINVAL);
    assert_int_equal(vv_env_reply_error(env_of(n, 1), s.held[0], 65536, "x"), VV_EINVAL);
    assert_int_equal(vv_env_reply_error(env_of(n, 1), s.held[0], VV_REQ_ERR_DENIED, NULL), 0);
    pump(n);
    assert_int_equal(c.log[3].code, VV_REQ_ERR_DENIED);
    fnet_free(n);
}

static void test_timeout_completes_once_and_a_late_answer_is_dropped(void **state)
{
    struct client c;
    struct server s = {.mode = HOLD};
    struct fnet *n = setup(&c, &s);
    /* Ten requests with different deadlines share one timer. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(request_uint(n, 0, 1, (uint64_t)i, 100 + 10 * (uint32_t)(9 - i), &c, NULL),
                         0);
    assert_int_equal(live_timers(n), 1);
    pump(n);
    assert_int_equal(s.n_held, 10);
    advance(n, 99);
    assert_int_equal(c.n, 0);
    advance(n, 1); /* t = 100: the last one sent, with the shortest timeout */
    assert_int_equal(c.n, 1);
    assert_int_equal(c.log[0].status, VV_EREQ_TIMEOUT);
    advance(n, 1000);
    assert_int_equal(c.n, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(c.log[i].status, VV_EREQ_TIMEOUT);
    assert_int_equal(live_timers(n), 0);
    /* The server answers after all: dropped and counted, no second callback. */
    uint8_t buf[16];
    size_t len;
    pack_uint(7, buf, &len);
    for (int i = 0; i < 10; i++)
        assert_int_equal(vv_env_reply(env_of(n, 1), s.held[i], buf, len), 0);
    /* Ending a context twice is a no-op. */
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], buf, len), VV_ENOTFOUND);
    pump(n);
    assert_int_equal(c.n, 10);
    const struct vv_env_req_stats *st = vv_env_req_stats(env_of(n, 0));
    assert_int_equal(st->timed_out, 10);
    assert_int_equal(st->late, 10);
    assert_int_equal(st->answered, 0);
    assert_int_equal(recv_count, 0);
    fnet_free(n);
}

static void test_cancel_means_no_callback(void **state)
{
    struct client c;
    struct server s = {.mode = REPLY};
    struct fnet *n = setup(&c, &s);
    uint64_t id1, id2, id3;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, &id1), 0);
    assert_int_equal(request_uint(n, 0, 1, 2, 100, &c, &id2), 0);
    assert_int_equal(request_uint(n, 0, 1, 3, 100, &c, &id3), 0);
    assert_int_equal(vv_env_request_cancel(env_of(n, 0), id2), 0);
    assert_int_equal(vv_env_request_cancel(env_of(n, 0), id2), VV_ENOTFOUND);
    pump(n); /* all three are answered; the cancelled one's answer is late */
    assert_int_equal(c.n, 2);
    assert_int_equal(c.log[0].id, id1);
    assert_int_equal(c.log[1].id, id3);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->late, 1);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->cancelled, 1);
    /* A whole channel at once, e.g. when a module stops; the timer goes with them. */
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    assert_int_equal(request_uint(n, 0, 2, 1, 100, &c, NULL), 0);
    assert_int_equal(vv_env_request_cancel_channel(env_of(n, 0), VV_CHANNEL_CRDT), 0);
    assert_int_equal(vv_env_request_cancel_channel(env_of(n, 0), VV_CHANNEL_TEST), 2);
    assert_int_equal(live_timers(n), 0);
    drop_all(n);
    advance(n, 1000);
    assert_int_equal(c.n, 2);
    assert_int_equal(vv_env_request_cancel(env_of(n, 3), 1), VV_ENOTFOUND); /* unused layer */
    fnet_free(n);
}

static void test_in_flight_bounds_refuse_with_a_clear_error(void **state)
{
    struct client c;
    struct server s = {.mode = HOLD};
    struct fnet *n = setup(&c, &s);
    vv_env_req_set_limits(env_of(n, 0),
                          &(struct vv_env_req_limits){.max_per_peer = 2, .max_total = 3});
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    assert_int_equal(request_uint(n, 0, 1, 2, 100, &c, NULL), 0);
    assert_int_equal(request_uint(n, 0, 1, 3, 100, &c, NULL), VV_EREQ_TOO_MANY);
    assert_int_equal(request_uint(n, 0, 2, 4, 100, &c, NULL), 0); /* another peer: room */
    assert_int_equal(request_uint(n, 0, 3, 5, 100, &c, NULL), VV_EREQ_TOO_MANY); /* total */
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->refused, 2);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->in_flight, 3);
    pump(n);
    uint8_t buf[16];
    size_t len;
    pack_uint(1, buf, &len);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], buf, len), 0);
    pump(n);
    assert_int_equal(c.n, 1);
    /* A slot came free: the peer takes one more. */
    assert_int_equal(request_uint(n, 0, 1, 3, 100, &c, NULL), 0);
    assert_int_equal(c.n, 1); /* refusals never called back */
    fnet_free(n);
}

static void test_server_over_its_bound_answers_busy_at_once(void **state)
{
    struct client c;
    struct server s = {.mode = HOLD};
    struct fnet *n = setup(&c, &s);
    vv_env_req_set_limits(env_of(n, 1), &(struct vv_env_req_limits){.max_served_per_peer = 2});
    for (int i = 0; i < 3; i++)
        assert_int_equal(request_uint(n, 0, 1, (uint64_t)i, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(s.seen, 2); /* the third never reached the server */
    assert_int_equal(c.n, 1);
    assert_int_equal(c.log[0].status, VV_EREQ_BUSY);
    assert_int_equal(c.log[0].code, VV_REQ_ERR_BUSY);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->busy, 1);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->served_busy, 1);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->serving, 2);
    /* Another peer is not held back by this one. */
    vv_env_set_channel(env_of(n, 2), VV_CHANNEL_TEST, client_recv, NULL, NULL);
    assert_int_equal(request_uint(n, 2, 1, 9, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(s.seen, 3);
    fnet_free(n);
}

static void test_peer_down_fails_its_requests_in_order_before_the_channels_hear_it(void **state)
{
    struct client c;
    struct server s = {.mode = HOLD};
    struct fnet *n = setup(&c, &s);
    uint64_t ids[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(request_uint(n, 0, 1, (uint64_t)i, 100, &c, &ids[i]), 0);
    uint64_t other;
    assert_int_equal(request_uint(n, 0, 2, 9, 100, &c, &other), 0);
    pump(n);
    assert_int_equal(s.n_held, 3);
    /* A callback that sends a new request to the peer going down (the transport may still
     * accept it): that one is not failed in the same sweep, so a retry loop cannot spin. */
    c.resend_to = 1;
    set_link(n, 0, 1, true); /* the fake transport still accepts sends during the event */
    vv_env_peer_event(env_of(n, 0), id_of(n, 1), false);
    assert_string_equal(c.events, "aaaD");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c.log[i].status, VV_EREQ_PEER_DOWN);
        assert_int_equal(c.log[i].id, ids[i]); /* in the order sent */
    }
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->peer_down, 3);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->in_flight, 2); /* node 2's and the retry */
    /* The server side: the requests it was serving for node 0 are dropped, and a reply to
     * one later is a no-op that sends nothing. */
    drop_all(n);
    vv_env_peer_event(env_of(n, 1), id_of(n, 0), false);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->served_dropped, 3);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->serving, 0);
    uint8_t buf[16];
    size_t len;
    pack_uint(1, buf, &len);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], buf, len), VV_ENOTFOUND);
    assert_int_equal(vv_env_reply_error(env_of(n, 1), s.held[1], 300, "x"), VV_ENOTFOUND);
    assert_int_equal(in_flight(n), 0);
    /* The retry times out on its own. */
    advance(n, 100);
    assert_int_equal(c.log[3].status, VV_EREQ_TIMEOUT);
    fnet_free(n);
}

static void test_a_peer_reported_down_from_inside_a_send_is_safe(void **state)
{
    struct client c;
    struct server s = {.mode = HOLD};
    struct fnet *n = setup(&c, &s);
    for (int i = 0; i < 4; i++)
        assert_int_equal(request_uint(n, 0, 1, (uint64_t)i, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(s.n_held, 4);
    /* The server's reply send reports the requester down: the context it answers and the
     * others of that peer are gone, once each. */
    n->nodes[1].down_on_send = true;
    uint8_t buf[16];
    size_t len;
    pack_uint(1, buf, &len);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], buf, len), VV_ECONN_NOT_CONNECTED);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[1], buf, len), VV_ENOTFOUND);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->serving, 0);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->served_dropped, 3);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->answers_unsent, 1);
    /* The same through an error answer. */
    n->nodes[1].down_on_send = false;
    set_link(n, 1, 0, true);
    for (int i = 0; i < 2; i++)
        assert_int_equal(request_uint(n, 0, 1, (uint64_t)i, 100, &c, NULL), 0);
    pump(n);
    n->nodes[1].down_on_send = true;
    assert_int_equal(vv_env_reply_error(env_of(n, 1), s.held[4], 300, "x"), VV_ECONN_NOT_CONNECTED);
    assert_int_equal(vv_env_reply_error(env_of(n, 1), s.held[5], 300, "x"), VV_ENOTFOUND);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->serving, 0);
    /* A request whose send reports the peer down: the peer's other requests fail (with
     * their callbacks, from inside the call); this one is refused without one. */
    n->nodes[0].down_on_send = true;
    c.n = 0;
    c.events[0] = '\0';
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->in_flight, 6);
    assert_int_equal(request_uint(n, 0, 1, 9, 100, &c, NULL), VV_ECONN_NOT_CONNECTED);
    assert_int_equal(c.n, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(c.log[i].status, VV_EREQ_PEER_DOWN);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->in_flight, 0);
    drop_all(n);
    fnet_free(n);
}

/* A module that disconnects a peer from its "up" callback: the env holds the "down" until
 * every channel heard "up", and the requests fail inside that ordered dispatch. */
struct upper {
    struct fnet *net;
    char log[64];
};

static void upper_peer_first(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up,
                             void *arg)
{
    struct upper *u = arg;
    strcat(u->log, up ? "U1" : "D1");
    if (up)
        vv_env_peer_event(env, peer, false); /* the driver reporting a close from inside */
}

static void upper_peer_second(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up,
                              void *arg)
{
    struct upper *u = arg;
    strcat(u->log, up ? "U2" : "D2");
}

static void upper_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    struct upper *u = arg;
    strcat(u->log, a->status == VV_EREQ_PEER_DOWN ? "F" : "?");
}

static void test_request_failure_follows_the_env_peer_event_order(void **state)
{
    struct fnet *n = fnet_new();
    struct upper u = {.net = n};
    vv_env_set_channel(env_of(n, 0), VV_CHANNEL_CONN, NULL, upper_peer_first, &u);
    vv_env_set_channel(env_of(n, 0), VV_CHANNEL_TEST, NULL, upper_peer_second, &u);
    static const uint8_t body[] = {0xc0};
    assert_int_equal(
        vv_env_request(env_of(n, 0), id_of(n, 1), TEST_REQ, body, 1, 100, upper_answer, &u, NULL),
        0);
    vv_env_peer_event(env_of(n, 0), id_of(n, 1), true);
    assert_string_equal(u.log, "U1U2FD1D2");
    fnet_free(n);
}

static void test_refused_sends_and_bad_arguments_return_without_callback(void **state)
{
    struct client c;
    struct server s = {.mode = REPLY};
    struct fnet *n = setup(&c, &s);
    set_link(n, 0, 1, false);
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), VV_ECONN_NOT_CONNECTED);
    set_link(n, 0, 1, true);
    n->nodes[0].send_rc = VV_ECONN_BACKPRESSURE;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), VV_ECONN_BACKPRESSURE);
    n->nodes[0].send_rc = 0;
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->refused, 2);
    struct vv_env *e = env_of(n, 0);
    const uint8_t *p = id_of(n, 1);
    static const uint8_t one[] = {0x01};
    static const uint8_t two_values[] = {0x01, 0x02};
    static const uint8_t truncated[] = {0x92, 0x01};
    static const uint8_t ext[] = {0xd4, 0x01, 0x01};
    assert_int_equal(vv_env_request(e, p, 0x0ffe, one, 1, 100, on_answer, &c, NULL), VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, 0x0fff, one, 1, 100, on_answer, &c, NULL), VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, 0x1001, one, 1, 100, on_answer, &c, NULL), VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, one, 1, 0, on_answer, &c, NULL), VV_EINVAL);
    assert_int_equal(
        vv_env_request(e, p, TEST_REQ, one, 1, VV_REQ_MAX_TIMEOUT_MS + 1, on_answer, &c, NULL),
        VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, one, 1, 100, NULL, &c, NULL), VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, NULL, 0, 100, on_answer, &c, NULL), VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, two_values, 2, 100, on_answer, &c, NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, truncated, 2, 100, on_answer, &c, NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, ext, 3, 100, on_answer, &c, NULL), VV_EINVAL);
    /* A body that would make the frame exceed 1 MiB. */
    size_t big = VV_WIRE_MAX_FRAME_BYTES;
    uint8_t *b = vv_xcalloc(1, big);
    b[0] = 0xc6; /* bin 32 of big - 5 bytes: fills the body exactly, header makes it too long */
    b[1] = (uint8_t)((big - 5) >> 24), b[2] = (uint8_t)((big - 5) >> 16);
    b[3] = (uint8_t)((big - 5) >> 8), b[4] = (uint8_t)(big - 5);
    assert_int_equal(vv_env_request(e, p, TEST_REQ, b, big, 100, on_answer, &c, NULL),
                     VV_EWIRE_TOO_LARGE);
    vv_free(b);
    assert_int_equal(in_flight(n), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(vv_env_req_stats(e)->in_flight, 0);
    /* A reply with a bad body is refused and the context stays live. */
    s.mode = HOLD;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], two_values, 2), VV_EINVAL);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], one, 1), 0);
    pump(n);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.log[0].value, 1);
    /* A reply the transport refuses ends the context anyway (the requester times out). */
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    n->nodes[1].send_rc = VV_ECONN_BACKPRESSURE;
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[1], one, 1), VV_ECONN_BACKPRESSURE);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[1], one, 1), VV_ENOTFOUND);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->answers_unsent, 1);
    fnet_free(n);
}

/* Writes a frame [1, 0, type, id, body] into out. */
static size_t frame(uint8_t *out, uint16_t type, uint64_t id, const uint8_t *body, size_t blen)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, id);
    msgpack_sbuffer_write(&sb, (const char *)body, blen);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void test_only_the_peer_asked_may_answer_and_bad_answers_are_caught(void **state)
{
    struct client c;
    struct server s = {.mode = HOLD};
    struct fnet *n = setup(&c, &s);
    uint64_t id;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, &id), 0);
    drop_all(n);
    uint8_t f[64];
    static const uint8_t five[] = {0x05};
    /* Node 2 answers node 1's request: dropped as late, the request still waits. */
    size_t len = frame(f, 0x0fff, id, five, 1);
    vv_env_deliver(env_of(n, 0), id_of(n, 2), VV_CHANNEL_TEST, f, len);
    /* The right peer on another channel: the same. */
    len = frame(f, 0x03ff, id, five, 1);
    vv_env_deliver(env_of(n, 0), id_of(n, 1), VV_CHANNEL_CRDT, f, len);
    assert_int_equal(c.n, 0);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->late, 2);
    /* An answer without an id is the peer's bug: dropped. */
    len = frame(f, 0x0fff, 0, five, 1);
    vv_env_deliver(env_of(n, 0), id_of(n, 1), VV_CHANNEL_TEST, f, len);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->bad_answers, 1);
    /* An error answer of the wrong shape completes the request as a bad answer. */
    static const uint8_t bad_err[] = {0x92, 0x00, 0xa1, 0x78}; /* [0, "x"]: code 0 */
    len = frame(f, 0x0ffe, id, bad_err, sizeof(bad_err));
    vv_env_deliver(env_of(n, 0), id_of(n, 1), VV_CHANNEL_TEST, f, len);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.log[0].status, VV_EREQ_BAD_ANSWER);
    /* Well-formed error answers of other shapes too: a control character, a missing element. */
    static const uint8_t ctl[] = {0x92, 0x05, 0xa1, 0x0a};
    static const uint8_t one_elem[] = {0x91, 0x05};
    static const uint8_t big_code[] = {0x92, 0xce, 0x00, 0x01, 0x00, 0x00, 0xa0};
    const uint8_t *bodies[] = {ctl, one_elem, big_code};
    size_t blens[] = {sizeof(ctl), sizeof(one_elem), sizeof(big_code)};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, &id), 0);
        drop_all(n);
        len = frame(f, 0x0ffe, id, bodies[i], blens[i]);
        vv_env_deliver(env_of(n, 0), id_of(n, 1), VV_CHANNEL_TEST, f, len);
        assert_int_equal(c.log[1 + i].status, VV_EREQ_BAD_ANSWER);
    }
    assert_int_equal(recv_count, 0);
    fnet_free(n);
}

static void test_without_a_server_requests_reach_recv_as_before(void **state)
{
    struct client c;
    struct server s = {.mode = REPLY};
    struct fnet *n = setup(&c, &s);
    uint8_t f[64];
    static const uint8_t five[] = {0x05};
    /* Node 0 has no server: a request-id frame is an ordinary message for its recv. */
    size_t len = frame(f, TEST_REQ, 77, five, 1);
    vv_env_deliver(env_of(n, 0), id_of(n, 1), VV_CHANNEL_TEST, f, len);
    assert_int_equal(recv_count, 1);
    /* Node 1 serves, but a frame with request id 0 is a plain message. */
    len = frame(f, TEST_REQ, 0, five, 1);
    vv_env_deliver(env_of(n, 1), id_of(n, 0), VV_CHANNEL_TEST, f, len);
    assert_int_equal(recv_count, 2);
    /* Bytes that are not a frame at all (a simulated module's) go to recv untouched. */
    vv_env_deliver(env_of(n, 1), id_of(n, 0), VV_CHANNEL_TEST, (const uint8_t *)"P123", 4);
    assert_int_equal(recv_count, 3);
    assert_int_equal(s.seen, 0);
    /* A request that fails to decode is dropped, not served. */
    static const uint8_t trunc[] = {0x92, 0x01};
    len = frame(f, TEST_REQ, 78, trunc, sizeof(trunc));
    vv_env_deliver(env_of(n, 1), id_of(n, 0), VV_CHANNEL_TEST, f, len);
    assert_int_equal(s.seen, 0);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->bad_requests, 1);
    /* Removing the server drops its live contexts; requests reach recv again. */
    s.mode = HOLD;
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(s.n_held, 1);
    vv_env_set_server(env_of(n, 1), VV_CHANNEL_TEST, NULL, NULL);
    assert_int_equal(vv_env_req_stats(env_of(n, 1))->served_dropped, 1);
    assert_int_equal(vv_env_reply(env_of(n, 1), s.held[0], five, 1), VV_ENOTFOUND);
    assert_int_equal(request_uint(n, 0, 1, 1, 100, &c, NULL), 0);
    pump(n);
    assert_int_equal(recv_count, 4);
    fnet_free(n);
}

static void count_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    assert_int_equal(a->status, VV_EREQ_TIMEOUT);
    ++*(int *)arg;
}

/* The example of docs/protocol.md, "Requests and answers", byte for byte. */
static void test_answers_are_byte_exact_as_in_protocol_md(void **state)
{
    struct client c;
    struct server s = {.mode = REPLY};
    struct fnet *n = setup(&c, &s);
    static const uint8_t request[] = {0x95, 0x01, 0x00, 0xcd, 0x0f, 0x01,
                                      0xcd, 0x12, 0x34, 0x91, 0x05};
    static const uint8_t reply[] = {0x95, 0x01, 0x00, 0xcd, 0x0f, 0xff, 0xcd, 0x12, 0x34, 0x06};
    static const uint8_t busy[] = {0x95, 0x01, 0x00, 0xcd, 0x0f, 0xfe, 0xcd, 0x12,
                                   0x34, 0x92, 0x01, 0xa4, 'b',  'u',  's',  'y'};
    /* The example's body is [5]; this server answers a uint x with x + 1, so it is asked
     * with 5 and its reply must be 6. */
    uint8_t req5[sizeof(request) - 1];
    memcpy(req5, request, sizeof(req5) - 1);
    req5[sizeof(req5) - 1] = 0x05;
    vv_env_deliver(env_of(n, 1), id_of(n, 0), VV_CHANNEL_TEST, req5, sizeof(req5));
    assert_int_equal(in_flight(n), 1);
    assert_int_equal(vv_fake_net_peek(&n->net)->len, sizeof(reply));
    assert_memory_equal(vv_fake_net_peek(&n->net)->data, reply, sizeof(reply));
    drop_all(n);
    /* Over the served bound, the example request itself is answered busy at once. */
    s.mode = HOLD;
    vv_env_req_set_limits(env_of(n, 1), &(struct vv_env_req_limits){.max_served_per_peer = 1});
    vv_env_deliver(env_of(n, 1), id_of(n, 0), VV_CHANNEL_TEST, request, sizeof(request));
    assert_int_equal(in_flight(n), 0); /* held */
    vv_env_deliver(env_of(n, 1), id_of(n, 0), VV_CHANNEL_TEST, request, sizeof(request));
    assert_int_equal(in_flight(n), 1);
    assert_int_equal(vv_fake_net_peek(&n->net)->len, sizeof(busy));
    assert_memory_equal(vv_fake_net_peek(&n->net)->data, busy, sizeof(busy));
    drop_all(n);
    fnet_free(n);
}

static void test_ids_are_distinct_and_never_zero(void **state)
{
    int counted = 0;
    struct client c;
    struct server s = {.mode = REPLY};
    struct fnet *n = setup(&c, &s);
    enum { N = 2000 };
    vv_env_req_set_limits(env_of(n, 0),
                          &(struct vv_env_req_limits){.max_per_peer = N, .max_total = N});
    uint64_t *ids = vv_xcalloc(N, sizeof(*ids));
    static const uint8_t one[] = {0x01};
    for (int i = 0; i < N; i++) {
        assert_int_equal(vv_env_request(env_of(n, 0), id_of(n, 1), TEST_REQ, one, 1, 100,
                                        count_answer, &counted, &ids[i]),
                         0);
        assert_true(ids[i] != 0);
        drop_all(n);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_true(ids[i] != ids[j]);
    /* Every one completes by its timeout. */
    advance(n, 100);
    assert_int_equal(vv_env_req_stats(env_of(n, 0))->timed_out, N);
    assert_int_equal(counted, N);
    vv_free(ids);
    fnet_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_is_answered_once_with_the_reply),
        cmocka_unit_test(test_error_answer_carries_code_and_message),
        cmocka_unit_test(test_timeout_completes_once_and_a_late_answer_is_dropped),
        cmocka_unit_test(test_cancel_means_no_callback),
        cmocka_unit_test(test_in_flight_bounds_refuse_with_a_clear_error),
        cmocka_unit_test(test_server_over_its_bound_answers_busy_at_once),
        cmocka_unit_test(test_peer_down_fails_its_requests_in_order_before_the_channels_hear_it),
        cmocka_unit_test(test_request_failure_follows_the_env_peer_event_order),
        cmocka_unit_test(test_a_peer_reported_down_from_inside_a_send_is_safe),
        cmocka_unit_test(test_refused_sends_and_bad_arguments_return_without_callback),
        cmocka_unit_test(test_only_the_peer_asked_may_answer_and_bad_answers_are_caught),
        cmocka_unit_test(test_without_a_server_requests_reach_recv_as_before),
        cmocka_unit_test(test_answers_are_byte_exact_as_in_protocol_md),
        cmocka_unit_test(test_ids_are_distinct_and_never_zero),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
