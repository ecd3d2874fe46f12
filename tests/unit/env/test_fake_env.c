/*
 * The fake vv_env that unit tests share (tests/unit/fake_env.h) does what its header says:
 * timers in (due, start) order on a manual clock, seeded randomness, real Ed25519, the
 * outbox and its refusals, and a net of fakes delivering in send order.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/error.h"

struct log {
    char s[128];
};

static void log_add(struct log *l, char tag, uint64_t now)
{
    size_t n = strlen(l->s);
    snprintf(l->s + n, sizeof(l->s) - n, "%c@%llu ", tag, (unsigned long long)now);
}

struct tagged {
    struct log *log;
    char tag;
    uint64_t start_delay; /* if non-zero, the callback starts a one-shot 'z' this far ahead */
};

static struct tagged z_timer;

static void tag_cb(struct vv_env *env, void *arg)
{
    struct tagged *t = arg;
    log_add(t->log, t->tag, vv_env_now(env));
    if (t->start_delay != 0) {
        z_timer = (struct tagged){t->log, 'z', 0};
        vv_env_timer_start(env, t->start_delay, 0, tag_cb, &z_timer);
        t->start_delay = 0;
    }
}

static void test_timers_fire_in_due_then_start_order_on_the_clock(void **state)
{
    (void)state;
    struct vv_fake_env f;
    vv_fake_env_init(&f, 1);
    assert_int_equal(vv_env_now(&f.env), 1000);
    struct log log = {{0}};
    struct tagged a = {&log, 'a', 0}, b = {&log, 'b', 5}, c = {&log, 'c', 0}, d = {&log, 'd', 0},
                  r = {&log, 'r', 0};
    vv_env_timer_start(&f.env, 100, 0, tag_cb, &a);
    vv_env_timer_start(&f.env, 50, 0, tag_cb, &b);  /* starts 'z' 5 ms after it fires */
    vv_env_timer_start(&f.env, 100, 0, tag_cb, &c); /* due with 'a': after it */
    uint64_t id = vv_env_timer_start(&f.env, 70, 0, tag_cb, &d);
    vv_env_timer_cancel(&f.env, id);
    vv_env_timer_cancel(&f.env, id); /* twice is harmless */
    uint64_t rep = vv_env_timer_start(&f.env, 40, 40, tag_cb, &r);
    assert_int_equal(vv_fake_env_timers_pending(&f, false), 4);
    assert_int_equal(vv_fake_env_timers_pending(&f, true), 3);
    assert_int_equal(vv_fake_env_advance(&f, 100), 6);
    assert_string_equal(log.s, "r@1040 b@1050 z@1055 r@1080 a@1100 c@1100 ");
    assert_int_equal(f.now_ms, 1100);
    assert_int_equal(vv_fake_env_timer(&f, rep)->due_ms, 1120);

    /* Writing the clock fires nothing; the next advance fires what fell due, late. */
    log.s[0] = '\0';
    f.now_ms += 100;
    assert_string_equal(log.s, "");
    vv_fake_env_advance(&f, 0);
    assert_string_equal(log.s, "r@1200 ");
    /* fire_next runs the next timer now, and a repeating one counts its period from now. */
    log.s[0] = '\0';
    assert_true(vv_fake_env_fire_next(&f));
    assert_string_equal(log.s, "r@1200 ");
    assert_int_equal(vv_fake_env_timer(&f, rep)->due_ms, 1240);
    vv_env_timer_cancel(&f.env, rep);
    assert_false(vv_fake_env_fire_next(&f));
    assert_int_equal(f.timers_fired, 8);
    vv_fake_env_free(&f);
}

static void test_randomness_follows_the_seed_and_keys_are_real(void **state)
{
    (void)state;
    struct vv_fake_env a, b, c;
    vv_fake_env_init(&a, 7);
    vv_fake_env_init(&b, 7);
    vv_fake_env_init(&c, 8);
    uint8_t x[33], y[33], z[33];
    vv_env_random(&a.env, x, sizeof(x));
    vv_env_random(&b.env, y, sizeof(y));
    vv_env_random(&c.env, z, sizeof(z));
    assert_memory_equal(x, y, sizeof(x));
    assert_memory_not_equal(x, z, sizeof(x));
    assert_memory_equal(a.id.node_id, b.id.node_id, VV_NODE_ID_BYTES);
    assert_memory_not_equal(a.id.node_id, c.id.node_id, VV_NODE_ID_BYTES);

    static const uint8_t msg[] = "signed by a";
    uint8_t sig[64];
    vv_env_sign(&a.env, msg, sizeof(msg), sig);
    assert_true(vv_env_verify(&c.env, a.id.public_key, msg, sizeof(msg), sig));
    assert_false(vv_env_verify(&c.env, c.id.public_key, msg, sizeof(msg), sig));
    sig[5] ^= 1;
    assert_false(vv_env_verify(&c.env, a.id.public_key, msg, sizeof(msg), sig));
    assert_int_equal(c.verifies, 3);
    vv_fake_env_free(&a);
    vv_fake_env_free(&b);
    vv_fake_env_free(&c);
}

static void test_outbox_records_sends_and_refuses_as_configured(void **state)
{
    (void)state;
    struct vv_fake_env f;
    vv_fake_env_init(&f, 1);
    uint8_t p[VV_NODE_ID_BYTES], q[VV_NODE_ID_BYTES];
    memset(p, 1, sizeof(p));
    memset(q, 2, sizeof(q));
    static const uint8_t hello[] = "hello", bye[] = "bye";
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, sizeof(hello)), 0);
    f.now_ms = 1500;
    assert_int_equal(vv_env_send(&f.env, q, VV_CHANNEL_CRDT, bye, sizeof(bye)), 0);
    assert_int_equal(vv_fake_env_outbox_len(&f), 2);
    assert_int_equal(vv_fake_env_count_sent(&f, p, -1), 1);
    assert_int_equal(vv_fake_env_count_sent(&f, NULL, VV_CHANNEL_CRDT), 1);
    assert_int_equal(vv_fake_env_peek(&f, 1)->sent_ms, 1500);
    struct vv_fake_msg m;
    assert_true(vv_fake_env_pop(&f, &m));
    assert_memory_equal(m.peer, p, sizeof(p));
    assert_memory_equal(m.from, f.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(m.channel, VV_CHANNEL_DHT);
    assert_int_equal(m.len, sizeof(hello));
    assert_memory_equal(m.data, hello, sizeof(hello));
    vv_fake_msg_free(&m);
    vv_fake_env_clear_outbox(&f);
    assert_false(vv_fake_env_pop(&f, &m));

    f.send_rc = VV_ECONN_LIMIT;
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, 5), VV_ECONN_LIMIT);
    f.send_rc = 0;
    f.require_connected = true;
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, 5), VV_ECONN_NOT_CONNECTED);
    vv_fake_env_peer_up(&f, p);
    assert_true(vv_fake_env_is_connected(&f, p));
    f.peer_queue_bytes = 12;
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, 5), 0);
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, 5), 0);
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, 5), VV_ECONN_BACKPRESSURE);
    assert_true(vv_fake_env_pop(&f, &m)); /* one leaves the queue: room again */
    vv_fake_msg_free(&m);
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_DHT, hello, 5), 0);
    assert_int_equal(f.sends, 5);
    assert_int_equal(f.sends_failed, 3);

    /* Many sends with pops in between keep their order. */
    vv_fake_env_clear_outbox(&f);
    f.peer_queue_bytes = 0;
    for (uint8_t i = 0; i < 100; i++) {
        assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_TEST, &i, 1), 0);
        if (i % 3 == 0) {
            assert_true(vv_fake_env_pop(&f, &m));
            vv_fake_msg_free(&m);
        }
    }
    for (uint8_t want = 34; vv_fake_env_pop(&f, &m); want++) {
        assert_int_equal(m.data[0], want);
        vv_fake_msg_free(&m);
    }

    vv_env_connect(&f.env, NULL, "10.0.0.1:4747");
    vv_env_connect(&f.env, q, NULL);
    assert_int_equal(f.n_connects, 2);
    assert_true(vv_fake_env_dialled(&f, "10.0.0.1"));
    assert_true(f.connects[1].has_peer);
    assert_string_equal(f.connects[1].address, "");
    vv_env_disconnect(&f.env, p);
    assert_int_equal(vv_fake_env_disconnect_count(&f, p), 1);
    assert_true(vv_fake_env_is_connected(&f, p)); /* not reported unless asked */
    vv_fake_env_free(&f);
}

/* A module on channel TEST: answers "ping" with "pong", counts what it hears. */
struct echo {
    int ups, downs, pongs;
};

static void echo_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                      size_t len, void *arg)
{
    struct echo *e = arg;
    if (len == 4 && memcmp(data, "ping", 4) == 0)
        vv_env_send(env, peer, VV_CHANNEL_TEST, (const uint8_t *)"pong", 4);
    else
        e->pongs++;
}

static void echo_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env, (void)peer;
    struct echo *e = arg;
    if (up)
        e->ups++;
    else
        e->downs++;
}

static void test_a_net_of_fakes_delivers_in_send_order(void **state)
{
    (void)state;
    struct vv_fake_net net;
    struct vv_fake_env a, b, c;
    struct echo ea = {0}, eb = {0}, ec = {0};
    vv_fake_net_init(&net);
    vv_fake_env_init(&a, 1);
    vv_fake_env_init(&b, 2);
    vv_fake_env_init(&c, 3);
    vv_fake_net_add(&net, &a);
    vv_fake_net_add(&net, &b);
    vv_fake_net_add(&net, &c);
    vv_env_set_channel(&a.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &ea);
    vv_env_set_channel(&b.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &eb);
    vv_env_set_channel(&c.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &ec);
    vv_fake_net_connect(&net, &a, &b);
    assert_int_equal(ea.ups, 1);
    assert_int_equal(eb.ups, 1);
    assert_true(vv_fake_env_is_connected(&a, b.id.node_id));

    /* c's ping was sent between a's two: it is delivered between them too. */
    vv_env_send(&a.env, b.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ping", 4);
    vv_env_send(&c.env, a.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ping", 4);
    vv_env_send(&a.env, c.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ping", 4);
    uint8_t nobody[VV_NODE_ID_BYTES] = {0};
    vv_env_send(&a.env, nobody, VV_CHANNEL_TEST, (const uint8_t *)"ping", 4);
    assert_int_equal(vv_fake_net_in_flight(&net), 4);
    assert_true(vv_fake_net_deliver_one(&net)); /* a -> b: b answers */
    assert_true(vv_fake_net_deliver_one(&net)); /* c -> a: a answers */
    assert_int_equal(vv_fake_env_count_sent(&a, c.id.node_id, VV_CHANNEL_TEST), 2);
    assert_memory_equal(vv_fake_env_peek(&a, 0)->peer, c.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(vv_fake_net_pump(&net), 5); /* a -> c, a -> nobody, and three answers */
    assert_int_equal(ea.pongs, 2);
    assert_int_equal(ec.pongs, 1);
    assert_int_equal(eb.pongs, 0);
    assert_int_equal(net.delivered, 6);
    assert_int_equal(net.dropped, 1);

    /* A disconnect reported at once reaches the module as "down". */
    a.report_disconnects = true;
    vv_env_disconnect(&a.env, b.id.node_id);
    assert_int_equal(ea.downs, 1);
    assert_false(vv_fake_env_is_connected(&a, b.id.node_id));

    /* Clocks move together; timers fire in due order across the fakes. */
    struct log log = {{0}};
    struct tagged ta = {&log, 'a', 0}, tb = {&log, 'b', 0};
    vv_env_timer_start(&a.env, 20, 0, tag_cb, &ta);
    vv_env_timer_start(&b.env, 10, 0, tag_cb, &tb);
    assert_int_equal(vv_fake_net_advance(&net, 30), 2);
    assert_string_equal(log.s, "b@1010 a@1020 ");
    assert_int_equal(c.now_ms, 1030);
    vv_fake_env_free(&a);
    vv_fake_env_free(&b);
    vv_fake_env_free(&c);
}

/* ---- links by hand ---- */

static void test_connect_can_require_an_address(void **state)
{
    (void)state;
    struct vv_fake_env f;
    vv_fake_env_init(&f, 1);
    uint8_t p[VV_NODE_ID_BYTES];
    memset(p, 1, sizeof(p));
    assert_int_equal(vv_env_connect(&f.env, p, NULL), 0); /* by default any dial is taken */
    f.connect_needs_address = true;
    assert_int_equal(vv_env_connect(&f.env, p, NULL), VV_ECONN_NOT_CONNECTED);
    assert_int_equal(vv_env_connect(&f.env, p, ""), VV_ECONN_NOT_CONNECTED);
    assert_int_equal(vv_env_connect(&f.env, p, "10.0.0.1:4747"), 0);
    f.connect_rc = VV_ECONN_LIMIT; /* with an address, connect_rc answers as before */
    assert_int_equal(vv_env_connect(&f.env, NULL, "10.0.0.2:4747"), VV_ECONN_LIMIT);
    assert_int_equal(f.n_connects, 5); /* refused dials are recorded too */
    assert_string_equal(f.connects[2].address, "");
    vv_fake_env_free(&f);
}

static void test_down_on_send_reports_the_peer_down_from_inside_the_send(void **state)
{
    (void)state;
    struct vv_fake_env f;
    struct echo e = {0};
    vv_fake_env_init(&f, 1);
    vv_env_set_channel(&f.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &e);
    uint8_t p[VV_NODE_ID_BYTES];
    memset(p, 1, sizeof(p));
    vv_fake_env_peer_up(&f, p);
    f.down_on_send = true;
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_TEST, (const uint8_t *)"x", 1),
                     VV_ECONN_NOT_CONNECTED);
    assert_int_equal(e.downs, 1); /* heard before the send returned */
    assert_false(vv_fake_env_is_connected(&f, p));
    assert_int_equal(vv_fake_env_outbox_len(&f), 0);
    assert_int_equal(f.sends_failed, 1);
    /* The refusals checked before it still come first: no second "down". */
    f.require_connected = true;
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_TEST, (const uint8_t *)"x", 1),
                     VV_ECONN_NOT_CONNECTED);
    assert_int_equal(e.downs, 1);
    assert_int_equal(f.sends_failed, 2);
    vv_fake_env_free(&f);
}

static void test_set_connected_marks_a_link_without_events(void **state)
{
    (void)state;
    struct vv_fake_env f;
    struct echo e = {0};
    vv_fake_env_init(&f, 1);
    vv_env_set_channel(&f.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &e);
    uint8_t p[VV_NODE_ID_BYTES], q[VV_NODE_ID_BYTES];
    memset(p, 1, sizeof(p));
    memset(q, 2, sizeof(q));
    f.require_connected = true;
    vv_fake_env_set_connected(&f, p, true);
    vv_fake_env_set_connected(&f, p, true); /* twice: still one entry */
    vv_fake_env_set_connected(&f, q, true);
    assert_int_equal(f.n_connected, 2);
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_TEST, (const uint8_t *)"x", 1), 0);
    vv_fake_env_set_connected(&f, p, false);
    assert_false(vv_fake_env_is_connected(&f, p));
    assert_true(vv_fake_env_is_connected(&f, q));
    assert_int_equal(vv_env_send(&f.env, p, VV_CHANNEL_TEST, (const uint8_t *)"x", 1),
                     VV_ECONN_NOT_CONNECTED);
    assert_int_equal(e.ups + e.downs, 0);
    vv_fake_env_free(&f);
}

static void test_net_peek_shows_and_drop_one_loses_the_next_delivery(void **state)
{
    (void)state;
    struct vv_fake_net net;
    struct vv_fake_env a, b;
    struct echo ea = {0}, eb = {0};
    vv_fake_net_init(&net);
    vv_fake_env_init(&a, 1);
    vv_fake_env_init(&b, 2);
    vv_fake_net_add(&net, &a);
    vv_fake_net_add(&net, &b);
    vv_env_set_channel(&a.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &ea);
    vv_env_set_channel(&b.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &eb);
    assert_null(vv_fake_net_peek(&net));
    assert_false(vv_fake_net_drop_one(&net));
    vv_env_send(&b.env, a.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"one", 3);
    vv_env_send(&a.env, b.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"two", 3);
    const struct vv_fake_msg *m = vv_fake_net_peek(&net);
    assert_non_null(m);
    assert_memory_equal(m->from, b.id.node_id, VV_NODE_ID_BYTES); /* sent first, by b */
    assert_memory_equal(m->data, "one", 3);
    assert_true(vv_fake_net_drop_one(&net));
    assert_int_equal(net.dropped, 1);
    assert_int_equal(ea.pongs, 0); /* lost, not delivered */
    assert_memory_equal(vv_fake_net_peek(&net)->data, "two", 3);
    assert_true(vv_fake_net_deliver_one(&net));
    assert_int_equal(eb.pongs, 1);
    assert_null(vv_fake_net_peek(&net));
    vv_fake_env_free(&a);
    vv_fake_env_free(&b);
}

static void test_net_disconnect_cuts_the_link_and_loses_what_was_on_it(void **state)
{
    (void)state;
    struct vv_fake_net net;
    struct vv_fake_env a, b, c;
    struct echo ea = {0}, eb = {0}, ec = {0};
    vv_fake_net_init(&net);
    vv_fake_env_init(&a, 1);
    vv_fake_env_init(&b, 2);
    vv_fake_env_init(&c, 3);
    vv_fake_net_add(&net, &a);
    vv_fake_net_add(&net, &b);
    vv_fake_net_add(&net, &c);
    vv_env_set_channel(&a.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &ea);
    vv_env_set_channel(&b.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &eb);
    vv_env_set_channel(&c.env, VV_CHANNEL_TEST, echo_recv, echo_peer, &ec);
    vv_fake_net_connect(&net, &a, &b);
    vv_fake_net_connect(&net, &a, &c);
    vv_env_send(&a.env, b.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ab", 2);
    vv_env_send(&a.env, c.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ac", 2);
    vv_env_send(&b.env, a.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ba", 2);
    vv_env_send(&a.env, b.id.node_id, VV_CHANNEL_TEST, (const uint8_t *)"ab", 2);
    vv_fake_net_disconnect(&net, &a, &b);
    assert_int_equal(ea.downs, 1);
    assert_int_equal(eb.downs, 1);
    assert_int_equal(ec.downs, 0);
    assert_false(vv_fake_env_is_connected(&a, b.id.node_id));
    assert_false(vv_fake_env_is_connected(&b, a.id.node_id));
    assert_true(vv_fake_env_is_connected(&a, c.id.node_id));
    assert_int_equal(net.dropped, 3);
    assert_int_equal(vv_fake_net_in_flight(&net), 1); /* a -> c stays */
    assert_memory_equal(vv_fake_net_peek(&net)->peer, c.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(vv_fake_net_pump(&net), 1);
    assert_int_equal(ec.pongs, 1);
    assert_int_equal(ea.pongs + eb.pongs, 0);
    vv_fake_env_free(&a);
    vv_fake_env_free(&b);
    vv_fake_env_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_due_then_start_order_on_the_clock),
        cmocka_unit_test(test_randomness_follows_the_seed_and_keys_are_real),
        cmocka_unit_test(test_outbox_records_sends_and_refuses_as_configured),
        cmocka_unit_test(test_a_net_of_fakes_delivers_in_send_order),
        cmocka_unit_test(test_connect_can_require_an_address),
        cmocka_unit_test(test_down_on_send_reports_the_peer_down_from_inside_the_send),
        cmocka_unit_test(test_set_connected_marks_a_link_without_events),
        cmocka_unit_test(test_net_peek_shows_and_drop_one_loses_the_next_delivery),
        cmocka_unit_test(test_net_disconnect_cuts_the_link_and_loses_what_was_on_it),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
