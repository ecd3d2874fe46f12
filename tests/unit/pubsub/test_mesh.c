/* One heartbeat's mesh decisions (GossipSub v1.1): negative scores leave, a small mesh grows
 * to D from eligible peers only, a large one shrinks to D keeping the best D_score and the
 * outbound quota, the outbound quota is grafted, and opportunistic grafting takes peers above
 * a low median. Many seeds each: the rules hold whatever the random choices. */
#include "vv_test.h"

#include <string.h>

#include "vivim/pubsub_core.h"

#define N 40

static uint32_t rnd(void *arg, uint32_t bound)
{
    uint64_t *x = arg; /* xorshift64 */
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (uint32_t)(*x % bound);
}

static struct vv_pubsub_mesh_params params(void)
{
    struct vv_pubsub_mesh_params p;
    vv_pubsub_mesh_params_defaults(&p);
    assert_int_equal(vv_pubsub_mesh_params_check(&p), 0);
    return p;
}

static uint32_t count(const struct vv_pubsub_mesh_candidate *c, const uint8_t *d, uint32_t n,
                      bool outbound_only)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool in = (c[i].in_mesh && d[i] != VV_PUBSUB_MESH_PRUNE) || d[i] == VV_PUBSUB_MESH_GRAFT;
        if (in && (!outbound_only || c[i].outbound))
            m++;
    }
    return m;
}

static void test_negative_scores_leave_and_small_mesh_grows_to_d(void **state)
{
    (void)state;
    struct vv_pubsub_mesh_params p = params();
    for (uint64_t seed = 1; seed <= 200; seed++) {
        struct vv_pubsub_mesh_candidate c[N];
        uint8_t d[N];
        memset(c, 0, sizeof(c));
        /* 0..3 in the mesh, 1 and 2 with negative scores; 4..9 backed off; 10..14 negative;
         * 15..39 eligible. */
        for (uint32_t i = 0; i < N; i++) {
            c[i].score = (i == 1 || i == 2 || (i >= 10 && i < 15)) ? -1 : (double)i;
            c[i].in_mesh = i < 4;
            c[i].graftable = !(i >= 4 && i < 10);
            c[i].outbound = i % 3 == 0;
        }
        uint64_t x = seed * 0x9e3779b97f4a7c15ull;
        uint32_t m = vv_pubsub_mesh_select(&p, c, N, false, rnd, &x, d);
        assert_int_equal(m, p.d);
        assert_int_equal(count(c, d, N, false), p.d);
        assert_int_equal(d[1], VV_PUBSUB_MESH_PRUNE);
        assert_int_equal(d[2], VV_PUBSUB_MESH_PRUNE);
        assert_int_equal(d[0], VV_PUBSUB_MESH_KEEP);
        for (uint32_t i = 4; i < 15; i++)
            assert_int_equal(d[i], VV_PUBSUB_MESH_KEEP); /* backed off or negative: never */
    }
}

static void test_large_mesh_shrinks_to_d_keeping_best_and_outbound_quota(void **state)
{
    (void)state;
    struct vv_pubsub_mesh_params p = params();
    bool kept_low[N] = {false};
    for (uint64_t seed = 1; seed <= 300; seed++) {
        struct vv_pubsub_mesh_candidate c[N];
        uint8_t d[N];
        memset(c, 0, sizeof(c));
        /* 20 in the mesh (more than D_hi = 12), scoring 0..19; one outbound peer, the
         * worst scored. */
        for (uint32_t i = 0; i < 20; i++) {
            c[i].score = (double)i;
            c[i].in_mesh = true;
            c[i].graftable = true;
            c[i].outbound = i == 0;
        }
        uint64_t x = seed;
        uint32_t m = vv_pubsub_mesh_select(&p, c, 20, false, rnd, &x, d);
        assert_int_equal(m, p.d);
        /* The four best (19..16) stay. */
        for (uint32_t i = 16; i < 20; i++)
            assert_int_equal(d[i], VV_PUBSUB_MESH_KEEP);
        /* The outbound peer stays despite its score (D_out = 2: all there are). */
        assert_int_equal(d[0], VV_PUBSUB_MESH_KEEP);
        assert_int_equal(count(c, d, 20, true), 1);
        for (uint32_t i = 1; i < 16; i++)
            if (d[i] == VV_PUBSUB_MESH_KEEP)
                kept_low[i] = true;
    }
    /* With two outbound peers, both worst scored, they take the two random places: the
     * mesh is exactly the four best and the two outbound. */
    struct vv_pubsub_mesh_candidate c[20];
    uint8_t d[20];
    memset(c, 0, sizeof(c));
    for (uint32_t i = 0; i < 20; i++) {
        c[i].score = (double)i;
        c[i].in_mesh = true;
        c[i].graftable = true;
        c[i].outbound = i < 2;
    }
    for (uint64_t seed = 1; seed <= 50; seed++) {
        uint64_t x = seed;
        assert_int_equal(vv_pubsub_mesh_select(&p, c, 20, false, rnd, &x, d), p.d);
        for (uint32_t i = 0; i < 20; i++)
            assert_int_equal(d[i], (i < 2 || i >= 16) ? VV_PUBSUB_MESH_KEEP : VV_PUBSUB_MESH_PRUNE);
    }
    /* The one place left goes at random: over 300 seeds, every middle peer had it. */
    for (uint32_t i = 1; i < 16; i++)
        assert_true(kept_low[i]);
}

static void test_outbound_quota_is_grafted_when_mesh_is_big_enough(void **state)
{
    (void)state;
    struct vv_pubsub_mesh_params p = params();
    for (uint64_t seed = 1; seed <= 100; seed++) {
        struct vv_pubsub_mesh_candidate c[N];
        uint8_t d[N];
        memset(c, 0, sizeof(c));
        /* Mesh of 6 inbound peers; 10 outbound candidates outside, one backed off. */
        for (uint32_t i = 0; i < 16; i++) {
            c[i].score = 1;
            c[i].in_mesh = i < 6;
            c[i].outbound = i >= 6;
            c[i].graftable = i != 6;
        }
        uint64_t x = seed;
        uint32_t m = vv_pubsub_mesh_select(&p, c, 16, false, rnd, &x, d);
        assert_int_equal(m, 6 + p.d_out);
        assert_int_equal(count(c, d, 16, true), p.d_out);
        assert_int_equal(d[6], VV_PUBSUB_MESH_KEEP);
        for (uint32_t i = 0; i < 6; i++)
            assert_int_equal(d[i], VV_PUBSUB_MESH_KEEP);
    }
}

static void test_opportunistic_graft_takes_peers_above_a_low_median(void **state)
{
    (void)state;
    struct vv_pubsub_mesh_params p = params();
    p.opportunistic_graft_threshold = 5;
    struct vv_pubsub_mesh_candidate c[N];
    uint8_t d[N];
    memset(c, 0, sizeof(c));
    /* Mesh of 6 with scores 0..5 (median index 3: score 3 < 5); outside: 6..8 score 2 (not
     * above the median), 9..11 score 10. */
    for (uint32_t i = 0; i < 12; i++) {
        c[i].in_mesh = i < 6;
        c[i].score = i < 6 ? (double)i : i < 9 ? 2 : 10;
        c[i].graftable = true;
        c[i].outbound = i < 2; /* the outbound quota is met */
    }
    for (uint64_t seed = 1; seed <= 100; seed++) {
        uint64_t x = seed;
        assert_int_equal(vv_pubsub_mesh_select(&p, c, 12, true, rnd, &x, d), 8);
        for (uint32_t i = 0; i < 9; i++)
            assert_int_equal(d[i], VV_PUBSUB_MESH_KEEP);
        uint32_t grafted = 0;
        for (uint32_t i = 9; i < 12; i++)
            grafted += d[i] == VV_PUBSUB_MESH_GRAFT;
        assert_int_equal(grafted, 2);
    }
    /* Not on other heartbeats, nor when the median is at the threshold. */
    uint64_t x = 1;
    assert_int_equal(vv_pubsub_mesh_select(&p, c, 12, false, rnd, &x, d), 6);
    p.opportunistic_graft_threshold = 3;
    assert_int_equal(vv_pubsub_mesh_select(&p, c, 12, true, rnd, &x, d), 6);
}

static void test_mesh_params_follow_the_spec(void **state)
{
    (void)state;
    struct vv_pubsub_mesh_params p = params(), b[5] = {p, p, p, p, p};
    b[0].d_lo = 7; /* above d */
    b[1].d_hi = 5; /* below d */
    b[2].d_score = 7;
    b[3].d_out = 5; /* not below d_lo */
    b[4].d_out = 4;
    b[4].d_lo = 6; /* above d / 2 */
    for (int i = 0; i < 5; i++)
        assert_int_equal(vv_pubsub_mesh_params_check(&b[i]), VV_EPUBSUB_PARAMS);
    /* A node without meshes (all zero) is valid: it prunes everyone and grafts no one. */
    struct vv_pubsub_mesh_params z = {0};
    assert_int_equal(vv_pubsub_mesh_params_check(&z), 0);
    struct vv_pubsub_mesh_candidate three[3] = {
        {1, true, true, true}, {2, true, false, true}, {3, false, true, true}};
    uint8_t d3[3];
    uint64_t w = 1;
    assert_int_equal(vv_pubsub_mesh_select(&z, three, 3, true, rnd, &w, d3), 0);
    assert_int_equal(d3[0], VV_PUBSUB_MESH_PRUNE);
    assert_int_equal(d3[1], VV_PUBSUB_MESH_PRUNE);
    assert_int_equal(d3[2], VV_PUBSUB_MESH_KEEP);
    /* Bad parameters change nothing. */
    struct vv_pubsub_mesh_candidate one[2] = {{-1, true, false, true}, {5, false, true, true}};
    uint8_t d2[2];
    uint64_t y = 1;
    assert_int_equal(vv_pubsub_mesh_select(&b[0], one, 2, true, rnd, &y, d2), 1);
    assert_int_equal(d2[0], VV_PUBSUB_MESH_KEEP);
    assert_int_equal(d2[1], VV_PUBSUB_MESH_KEEP);
    /* No candidates: nothing to do. */
    uint64_t x = 1;
    uint8_t d[1];
    assert_int_equal(vv_pubsub_mesh_select(&p, NULL, 0, true, rnd, &x, d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negative_scores_leave_and_small_mesh_grows_to_d),
        cmocka_unit_test(test_large_mesh_shrinks_to_d_keeping_best_and_outbound_quota),
        cmocka_unit_test(test_outbound_quota_is_grafted_when_mesh_is_big_enough),
        cmocka_unit_test(test_opportunistic_graft_takes_peers_above_a_low_median),
        cmocka_unit_test(test_mesh_params_follow_the_spec),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
