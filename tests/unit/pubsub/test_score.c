/* Peer scores worked out by hand: each term of the GossipSub v1.1 score function alone, their
 * weights and caps, decay to zero, retention of a disconnected peer's penalties, the bound on
 * peers, and the parameter checks. */
#include "vv_test.h"

#include <math.h>
#include <string.h>

#include "vivim/pubsub_core.h"

#define EPS 1e-9

static void mkpeer(uint32_t n, uint8_t p[VV_NODE_ID_BYTES])
{
    memset(p, 0x11, VV_NODE_ID_BYTES);
    memcpy(p + VV_NODE_ID_BYTES - 4, &n, 4);
}

static void mkip(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t ip[16])
{
    memset(ip, 0, 16);
    ip[10] = ip[11] = 0xff;
    ip[12] = a;
    ip[13] = b;
    ip[14] = c;
    ip[15] = d;
}

/* Every weight 0: each test sets the terms it checks. */
static struct vv_pubsub_score_params base(void)
{
    struct vv_pubsub_score_params p;
    memset(&p, 0, sizeof(p));
    p.decay_interval_ms = 1000;
    p.decay_to_zero = 0.01;
    p.retain_score_ms = 3600000;
    p.max_peers = 1000;
    p.max_topics = 16;
    return p;
}

static struct vv_pubsub_topic_score_params tbase(void)
{
    struct vv_pubsub_topic_score_params t;
    memset(&t, 0, sizeof(t));
    t.topic_weight = 1;
    return t;
}

static struct vv_pubsub_score *mk(const struct vv_pubsub_score_params *p)
{
    struct vv_pubsub_score *s;
    assert_int_equal(vv_pubsub_score_new(p, &s), 0);
    return s;
}

static void test_p1_time_in_mesh_counts_whole_quanta_up_to_the_cap(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    struct vv_pubsub_score *s = mk(&p);
    struct vv_pubsub_topic_score_params t = tbase();
    t.topic_weight = 0.5;
    t.time_in_mesh_weight = 1;
    t.time_in_mesh_quantum_ms = 1000;
    t.time_in_mesh_cap = 10;
    assert_int_equal(vv_pubsub_score_set_topic(s, "a", 1, &t), 0);
    uint8_t a[VV_NODE_ID_BYTES];
    mkpeer(1, a);
    assert_int_equal(vv_pubsub_score_add_peer(s, a, NULL, 0), 0);
    vv_pubsub_score_graft(s, a, "a", 1, 1000);
    assert_true(fabs(vv_pubsub_score_get(s, a, 1999) - 0) < EPS);
    /* 3.5 s in the mesh: 3 quanta, times 1, times the topic weight 0.5. */
    assert_true(fabs(vv_pubsub_score_get(s, a, 4500) - 1.5) < EPS);
    /* An hour: capped at 10 quanta. */
    assert_true(fabs(vv_pubsub_score_get(s, a, 3600000) - 5) < EPS);
    /* Out of the mesh, P1 is 0. */
    vv_pubsub_score_prune(s, a, "a", 1, 3600000);
    assert_true(fabs(vv_pubsub_score_get(s, a, 3600000)) < EPS);
    vv_pubsub_score_free(s);
}

static void test_p2_first_deliveries_capped_and_decaying_to_zero(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    struct vv_pubsub_score *s = mk(&p);
    struct vv_pubsub_topic_score_params t = tbase();
    t.first_message_deliveries_weight = 2;
    t.first_message_deliveries_decay = 0.5;
    t.first_message_deliveries_cap = 5;
    assert_int_equal(vv_pubsub_score_set_topic(s, "a", 1, &t), 0);
    uint8_t a[VV_NODE_ID_BYTES];
    mkpeer(1, a);
    vv_pubsub_score_add_peer(s, a, NULL, 0);
    for (int i = 0; i < 3; i++)
        vv_pubsub_score_first_delivery(s, a, "a", 1);
    assert_true(fabs(vv_pubsub_score_get(s, a, 0) - 6) < EPS); /* 2 * 3 */
    vv_pubsub_score_decay(s, 1000);
    assert_true(fabs(vv_pubsub_score_get(s, a, 0) - 3) < EPS); /* 2 * 1.5 */
    for (int i = 0; i < 10; i++)
        vv_pubsub_score_first_delivery(s, a, "a", 1);
    assert_true(fabs(vv_pubsub_score_get(s, a, 0) - 10) < EPS); /* capped at 5 */
    /* 5 halvings: 0.15625; 9: 0.0098 < 0.01, so exactly 0. */
    for (int i = 0; i < 9; i++)
        vv_pubsub_score_decay(s, 2000 + 1000 * i);
    assert_true(vv_pubsub_score_get(s, a, 0) == 0);
    /* A topic without parameters counts for nothing. */
    vv_pubsub_score_first_delivery(s, a, "b", 1);
    assert_true(vv_pubsub_score_get(s, a, 0) == 0);
    vv_pubsub_score_free(s);
}

static void test_p3_deficit_after_activation_then_p3b_when_pruned(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    struct vv_pubsub_score *s = mk(&p);
    struct vv_pubsub_topic_score_params t = tbase();
    t.topic_weight = 1;
    t.mesh_message_deliveries_weight = -1;
    t.mesh_message_deliveries_decay = 0.9;
    t.mesh_message_deliveries_cap = 10;
    t.mesh_message_deliveries_threshold = 4;
    t.mesh_message_deliveries_window_ms = 10;
    t.mesh_message_deliveries_activation_ms = 5000;
    t.mesh_failure_penalty_weight = -2;
    t.mesh_failure_penalty_decay = 0.5;
    assert_int_equal(vv_pubsub_score_set_topic(s, "a", 1, &t), 0);
    uint8_t a[VV_NODE_ID_BYTES];
    mkpeer(1, a);
    vv_pubsub_score_add_peer(s, a, NULL, 0);
    vv_pubsub_score_graft(s, a, "a", 1, 0);
    vv_pubsub_score_first_delivery(s, a, "a", 1);      /* mesh counter 1 */
    vv_pubsub_score_near_first_delivery(s, a, "a", 1); /* 2 */
    /* Before activation: no penalty. */
    assert_true(vv_pubsub_score_get(s, a, 5000) == 0); /* strictly after activation */
    /* Active: deficit 4 - 2 = 2, squared, weight -1. */
    assert_true(fabs(vv_pubsub_score_get(s, a, 5001) - -4) < EPS);
    /* Pruned: P3 no longer applies; P3b holds 4, weight -2. */
    vv_pubsub_score_prune(s, a, "a", 1, 6000);
    assert_true(fabs(vv_pubsub_score_get(s, a, 6000) - -8) < EPS);
    vv_pubsub_score_decay(s, 7000);
    assert_true(fabs(vv_pubsub_score_get(s, a, 7000) - -4) < EPS);
    /* Grafted again: activation starts over. */
    vv_pubsub_score_graft(s, a, "a", 1, 7000);
    assert_true(fabs(vv_pubsub_score_get(s, a, 12000) - -4) < EPS);
    /* mesh counter decayed 2 * 0.9 = 1.8: deficit 2.2, squared 4.84; plus P3b -4. */
    assert_true(fabs(vv_pubsub_score_get(s, a, 12001) - (-4.84 - 4)) < 1e-6);
    /* Deliveries up to the threshold clear P3. */
    for (int i = 0; i < 3; i++)
        vv_pubsub_score_near_first_delivery(s, a, "a", 1);
    assert_true(fabs(vv_pubsub_score_get(s, a, 12001) - -4) < EPS);
    vv_pubsub_score_free(s);
}

static void test_p4_invalid_messages_squared_and_topic_cap_bounds_only_positive(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    p.topic_score_cap = 15;
    struct vv_pubsub_score *s = mk(&p);
    struct vv_pubsub_topic_score_params t = tbase();
    t.first_message_deliveries_weight = 1;
    t.first_message_deliveries_decay = 0.5;
    t.first_message_deliveries_cap = 100;
    t.invalid_message_deliveries_weight = -3;
    t.invalid_message_deliveries_decay = 0.5;
    assert_int_equal(vv_pubsub_score_set_topic(s, "a", 1, &t), 0);
    assert_int_equal(vv_pubsub_score_set_topic(s, "b", 1, &t), 0);
    uint8_t a[VV_NODE_ID_BYTES], b[VV_NODE_ID_BYTES];
    mkpeer(1, a);
    mkpeer(2, b);
    vv_pubsub_score_add_peer(s, a, NULL, 0);
    vv_pubsub_score_add_peer(s, b, NULL, 0);
    vv_pubsub_score_invalid(s, a, "a", 1);
    vv_pubsub_score_invalid(s, a, "a", 1);
    assert_true(fabs(vv_pubsub_score_get(s, a, 0) - -12) < EPS); /* -3 * 2^2 */
    /* Two topics of 10 each: 20, capped at 15. */
    for (int i = 0; i < 10; i++) {
        vv_pubsub_score_first_delivery(s, b, "a", 1);
        vv_pubsub_score_first_delivery(s, b, "b", 1);
    }
    assert_true(fabs(vv_pubsub_score_get(s, b, 0) - 15) < EPS);
    /* The cap applies to the topic sum: a negative sum is never raised. */
    for (int i = 0; i < 4; i++)
        vv_pubsub_score_invalid(s, b, "b", 1);
    assert_true(fabs(vv_pubsub_score_get(s, b, 0) - (20 - 48)) < EPS);
    vv_pubsub_score_free(s);
}

static void test_p5_p6_p7_app_colocation_and_behaviour(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    p.app_specific_weight = 2;
    p.ip_colocation_factor_weight = -1;
    p.ip_colocation_factor_threshold = 2;
    p.behaviour_penalty_weight = -1;
    p.behaviour_penalty_threshold = 1;
    p.behaviour_penalty_decay = 0.5;
    struct vv_pubsub_score *s = mk(&p);
    uint8_t peers[5][VV_NODE_ID_BYTES], ip[16], other[16];
    mkip(10, 0, 0, 1, ip);
    mkip(10, 0, 0, 2, other);
    for (uint32_t i = 0; i < 5; i++) {
        mkpeer(i, peers[i]);
        assert_int_equal(vv_pubsub_score_add_peer(s, peers[i], i < 4 ? ip : other, 0), 0);
    }
    /* P6: four peers on one IP, threshold 2: surplus 2, squared, weight -1. */
    assert_true(fabs(vv_pubsub_score_get(s, peers[0], 0) - -4) < EPS);
    assert_true(vv_pubsub_score_get(s, peers[4], 0) == 0);
    vv_pubsub_score_set_app(s, peers[1], 1.5); /* P5: +3 */
    vv_pubsub_score_remove_peer(s, peers[3], 0);
    /* Three left on the IP: surplus 1. */
    assert_true(fabs(vv_pubsub_score_get(s, peers[0], 0) - -1) < EPS);
    assert_true(fabs(vv_pubsub_score_get(s, peers[1], 0) - 2) < EPS);
    /* P7: penalty 3 over threshold 1: excess 2, squared: -4; after one decay 1.5: -0.25. */
    vv_pubsub_score_penalty(s, peers[4], 3);
    assert_true(fabs(vv_pubsub_score_get(s, peers[4], 0) - -4) < EPS);
    vv_pubsub_score_decay(s, 1000);
    assert_true(fabs(vv_pubsub_score_get(s, peers[4], 0) - -0.25) < EPS);
    vv_pubsub_score_decay(s, 2000); /* 0.75: under the threshold */
    assert_true(vv_pubsub_score_get(s, peers[4], 0) == 0);
    vv_pubsub_score_free(s);
}

static void test_disconnected_peer_keeps_penalties_for_retain_period(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    p.retain_score_ms = 10000;
    struct vv_pubsub_score *s = mk(&p);
    struct vv_pubsub_topic_score_params t = tbase();
    t.first_message_deliveries_weight = 1;
    t.first_message_deliveries_decay = 0.5;
    t.first_message_deliveries_cap = 100;
    t.mesh_message_deliveries_weight = -1;
    t.mesh_message_deliveries_decay = 0.5;
    t.mesh_message_deliveries_cap = 10;
    t.mesh_message_deliveries_threshold = 3;
    t.mesh_message_deliveries_activation_ms = 1000;
    t.mesh_failure_penalty_weight = -1;
    t.mesh_failure_penalty_decay = 0.5;
    t.invalid_message_deliveries_weight = -1;
    t.invalid_message_deliveries_decay = 0.5;
    assert_int_equal(vv_pubsub_score_set_topic(s, "a", 1, &t), 0);
    uint8_t good[VV_NODE_ID_BYTES], bad[VV_NODE_ID_BYTES];
    mkpeer(1, good);
    mkpeer(2, bad);
    vv_pubsub_score_add_peer(s, good, NULL, 0);
    vv_pubsub_score_add_peer(s, bad, NULL, 0);
    vv_pubsub_score_first_delivery(s, good, "a", 1); /* +1 */
    /* bad: in the mesh with 1 delivery (P2 +1), then 2 invalid (-4). */
    vv_pubsub_score_graft(s, bad, "a", 1, 0);
    vv_pubsub_score_first_delivery(s, bad, "a", 1);
    vv_pubsub_score_invalid(s, bad, "a", 1);
    vv_pubsub_score_invalid(s, bad, "a", 1);
    /* At 2000: P2 1, P3 -(3-1)^2 = -4, P4 -4: -7. */
    assert_true(fabs(vv_pubsub_score_get(s, bad, 2000) - -7) < EPS);
    assert_int_equal(vv_pubsub_score_count(s), 2);
    /* A positive score is forgotten at once. */
    vv_pubsub_score_remove_peer(s, good, 2000);
    assert_int_equal(vv_pubsub_score_count(s), 1);
    /* bad leaves: P2 cleared, P3 turned into P3b (4), P4 kept: -4 - 4 = -8. */
    vv_pubsub_score_remove_peer(s, bad, 2000);
    assert_true(fabs(vv_pubsub_score_get(s, bad, 2000) - -8) < EPS);
    /* Retained scores do not decay, and come back on reconnection. */
    vv_pubsub_score_decay(s, 3000);
    assert_true(fabs(vv_pubsub_score_get(s, bad, 3000) - -8) < EPS);
    assert_int_equal(vv_pubsub_score_add_peer(s, bad, NULL, 5000), 0);
    assert_true(fabs(vv_pubsub_score_get(s, bad, 5000) - -8) < EPS);
    /* Gone after the retain period. */
    vv_pubsub_score_remove_peer(s, bad, 5000);
    vv_pubsub_score_decay(s, 14999);
    assert_int_equal(vv_pubsub_score_count(s), 1);
    vv_pubsub_score_decay(s, 15000);
    assert_int_equal(vv_pubsub_score_count(s), 0);
    assert_int_equal(vv_pubsub_score_add_peer(s, bad, NULL, 15000), 0);
    assert_true(vv_pubsub_score_get(s, bad, 15000) == 0);
    vv_pubsub_score_free(s);
}

static void test_peer_table_is_bounded_and_reclaims_expired_retained(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    p.max_peers = 3;
    p.retain_score_ms = 1000;
    struct vv_pubsub_score *s = mk(&p);
    uint8_t x[4][VV_NODE_ID_BYTES];
    for (uint32_t i = 0; i < 4; i++)
        mkpeer(i, x[i]);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(vv_pubsub_score_add_peer(s, x[i], NULL, 0), 0);
    assert_int_equal(vv_pubsub_score_add_peer(s, x[3], NULL, 0), VV_ELIMIT);
    vv_pubsub_score_remove_peer(s, x[0], 0); /* score 0: retained until 1000 */
    assert_int_equal(vv_pubsub_score_add_peer(s, x[3], NULL, 999), VV_ELIMIT);
    assert_int_equal(vv_pubsub_score_add_peer(s, x[3], NULL, 1000), 0);
    assert_int_equal(vv_pubsub_score_count(s), 3);
    vv_pubsub_score_free(s);
}

static void test_parameter_checks_follow_the_spec(void **state)
{
    (void)state;
    struct vv_pubsub_score_params p = base();
    assert_int_equal(vv_pubsub_score_params_check(&p), 0);
    struct vv_pubsub_score_params bad[9];
    for (int i = 0; i < 9; i++)
        bad[i] = p;
    bad[0].topic_score_cap = -1;
    bad[1].ip_colocation_factor_weight = 1;
    bad[2].ip_colocation_factor_weight = -1; /* threshold 0 < 1 */
    bad[3].behaviour_penalty_weight = 1;
    bad[4].behaviour_penalty_weight = -1; /* decay 0 not in (0, 1) */
    bad[5].decay_interval_ms = 999;
    bad[6].decay_to_zero = 1;
    bad[7].app_specific_weight = NAN;
    bad[8].app_specific_weight = -1;
    for (int i = 0; i < 9; i++)
        assert_int_equal(vv_pubsub_score_params_check(&bad[i]), VV_EPUBSUB_PARAMS);
    struct vv_pubsub_score *s;
    assert_int_equal(vv_pubsub_score_new(&bad[0], &s), VV_EPUBSUB_PARAMS);

    struct vv_pubsub_topic_score_params t = tbase();
    assert_int_equal(vv_pubsub_topic_score_params_check(&t), 0);
    struct vv_pubsub_topic_score_params tb[9];
    for (int i = 0; i < 9; i++)
        tb[i] = t;
    tb[0].topic_weight = -1;
    tb[1].time_in_mesh_weight = 1; /* quantum 0 */
    tb[2].first_message_deliveries_weight = -1;
    tb[3].first_message_deliveries_weight = 1; /* decay 0, cap 0 */
    tb[4].mesh_message_deliveries_weight = 1;
    tb[5].mesh_message_deliveries_weight = -1; /* decay, cap, threshold, activation unset */
    tb[6].mesh_failure_penalty_weight = 1;
    tb[7].invalid_message_deliveries_weight = 1;
    tb[8].invalid_message_deliveries_decay = 1.5;
    for (int i = 0; i < 9; i++)
        assert_int_equal(vv_pubsub_topic_score_params_check(&tb[i]), VV_EPUBSUB_PARAMS);

    struct vv_pubsub_score_thresholds th = {-10, -50, -80, 10, 5};
    assert_int_equal(vv_pubsub_score_thresholds_check(&th), 0);
    struct vv_pubsub_score_thresholds tt[7] = {th, th, th, th, th, th, th};
    tt[0].gossip = 1;
    tt[1].publish = -5;   /* above gossip */
    tt[2].graylist = -50; /* not below publish */
    tt[3].accept_px = -1;
    tt[4].opportunistic_graft = -1;
    tt[5].gossip = 0;    /* the spec: strictly below 0 */
    tt[6].publish = -10; /* the spec: strictly below gossip */
    for (int i = 0; i < 7; i++)
        assert_int_equal(vv_pubsub_score_thresholds_check(&tt[i]), VV_EPUBSUB_PARAMS);

    /* A decay that takes a counter to decay_to_zero in 10 intervals. */
    double f = vv_pubsub_score_decay_factor(&p, 10000);
    assert_true(fabs(pow(f, 10) - 0.01) < 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p1_time_in_mesh_counts_whole_quanta_up_to_the_cap),
        cmocka_unit_test(test_p2_first_deliveries_capped_and_decaying_to_zero),
        cmocka_unit_test(test_p3_deficit_after_activation_then_p3b_when_pruned),
        cmocka_unit_test(test_p4_invalid_messages_squared_and_topic_cap_bounds_only_positive),
        cmocka_unit_test(test_p5_p6_p7_app_colocation_and_behaviour),
        cmocka_unit_test(test_disconnected_peer_keeps_penalties_for_retain_period),
        cmocka_unit_test(test_peer_table_is_bounded_and_reclaims_expired_retained),
        cmocka_unit_test(test_parameter_checks_follow_the_spec),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
