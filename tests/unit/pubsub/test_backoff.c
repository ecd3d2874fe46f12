/* PRUNE backoff (GossipSub v1.1): a pair backed off refuses GRAFTs until its expiry, a GRAFT
 * during the backoff is penalised (twice right after the PRUNE) and extends it, the table is
 * bounded, and the sweep removes only what expired. */
#include "vv_test.h"

#include <string.h>

#include "vivim/pubsub_core.h"

static void mkpeer(uint32_t n, uint8_t p[VV_NODE_ID_BYTES])
{
    memset(p, 0xee, VV_NODE_ID_BYTES);
    memcpy(p + VV_NODE_ID_BYTES - 4, &n, 4);
}

static struct vv_pubsub_backoff *bo_new(uint32_t max)
{
    struct vv_pubsub_backoff_config cfg;
    vv_pubsub_backoff_config_defaults(&cfg);
    if (max)
        cfg.max_entries = max;
    struct vv_pubsub_backoff *b;
    vv_pubsub_backoff_new(&cfg, &b);
    return b;
}

static void test_backoff_holds_until_expiry_per_peer_and_topic(void **state)
{
    (void)state;
    struct vv_pubsub_backoff *b = bo_new(0);
    uint8_t p[VV_NODE_ID_BYTES], q[VV_NODE_ID_BYTES];
    mkpeer(1, p);
    mkpeer(2, q);
    assert_int_equal(vv_pubsub_backoff_add(b, p, "a", 1, 1000, 0), 0); /* default 60 s */
    assert_true(vv_pubsub_backoff_active(b, p, "a", 1, 1000));
    assert_true(vv_pubsub_backoff_active(b, p, "a", 1, 60999));
    assert_false(vv_pubsub_backoff_active(b, p, "a", 1, 61000));
    assert_false(vv_pubsub_backoff_active(b, p, "b", 1, 1000));
    assert_false(vv_pubsub_backoff_active(b, q, "a", 1, 1000));
    assert_int_equal(vv_pubsub_backoff_remaining(b, p, "a", 1, 31000), 30000);
    /* A PRUNE asking for a shorter backoff does not shorten a running one; a longer one
     * extends it. */
    assert_int_equal(vv_pubsub_backoff_add(b, p, "a", 1, 2000, 5000), 0);
    assert_int_equal(vv_pubsub_backoff_remaining(b, p, "a", 1, 2000), 59000);
    assert_int_equal(vv_pubsub_backoff_add(b, p, "a", 1, 2000, 120000), 0);
    assert_int_equal(vv_pubsub_backoff_remaining(b, p, "a", 1, 2000), 120000);
    assert_int_equal(vv_pubsub_backoff_count(b), 1);
    vv_pubsub_backoff_free(b);
}

static void test_graft_during_backoff_is_penalised_and_extends_it(void **state)
{
    (void)state;
    struct vv_pubsub_backoff *b = bo_new(0);
    uint8_t p[VV_NODE_ID_BYTES];
    mkpeer(1, p);
    uint32_t pen;
    /* No backoff: the GRAFT is fine. */
    assert_int_equal(vv_pubsub_backoff_on_graft(b, p, "t", 1, 0, &pen), 0);
    assert_int_equal(pen, 0);
    assert_int_equal(vv_pubsub_backoff_add(b, p, "t", 1, 0, 0), 0); /* until 60,000 */
    /* 5 s after the PRUNE: within the flood threshold, two penalties. */
    assert_int_equal(vv_pubsub_backoff_on_graft(b, p, "t", 1, 5000, &pen), VV_EPUBSUB_BACKOFF);
    assert_int_equal(pen, 2);
    assert_int_equal(vv_pubsub_backoff_remaining(b, p, "t", 1, 5000), 60000);
    /* 30 s after: one penalty, and the backoff now runs to 90 s. */
    assert_int_equal(vv_pubsub_backoff_on_graft(b, p, "t", 1, 30000, &pen), VV_EPUBSUB_BACKOFF);
    assert_int_equal(pen, 1);
    assert_true(vv_pubsub_backoff_active(b, p, "t", 1, 89999));
    assert_false(vv_pubsub_backoff_active(b, p, "t", 1, 90000));
    /* After it ran out, a GRAFT is accepted again. */
    assert_int_equal(vv_pubsub_backoff_on_graft(b, p, "t", 1, 90000, &pen), 0);
    assert_int_equal(pen, 0);
    vv_pubsub_backoff_free(b);
}

static void test_backoff_table_is_bounded_and_reuses_expired(void **state)
{
    (void)state;
    struct vv_pubsub_backoff *b = bo_new(100);
    uint8_t p[VV_NODE_ID_BYTES];
    for (uint32_t i = 0; i < 100; i++) {
        mkpeer(i, p);
        assert_int_equal(vv_pubsub_backoff_add(b, p, "t", 1, 0, 1000), 0);
    }
    mkpeer(100, p);
    assert_int_equal(vv_pubsub_backoff_add(b, p, "t", 1, 500, 1000), VV_ELIMIT);
    assert_false(vv_pubsub_backoff_active(b, p, "t", 1, 500));
    /* Once the others expired, a new pair finds room. */
    assert_int_equal(vv_pubsub_backoff_add(b, p, "t", 1, 1000, 1000), 0);
    assert_true(vv_pubsub_backoff_active(b, p, "t", 1, 1000));
    assert_true(vv_pubsub_backoff_count(b) <= 100);
    vv_pubsub_backoff_free(b);
}

static void test_sweep_removes_only_expired_in_slices(void **state)
{
    (void)state;
    struct vv_pubsub_backoff *b = bo_new(0);
    uint8_t p[VV_NODE_ID_BYTES];
    for (uint32_t i = 0; i < 1000; i++) {
        mkpeer(i, p);
        /* Even peers expire at 1,000, odd ones at 100,000. */
        assert_int_equal(vv_pubsub_backoff_add(b, p, "t", 1, 0, i % 2 ? 100000 : 1000), 0);
    }
    uint32_t got = vv_pubsub_backoff_sweep(b, 5000, 10);
    assert_true(got <= 10);
    uint32_t total = got;
    for (int k = 0; k < 1000 && total < 500; k++)
        total += vv_pubsub_backoff_sweep(b, 5000, 10);
    assert_int_equal(total, 500);
    assert_int_equal(vv_pubsub_backoff_count(b), 500);
    for (uint32_t i = 1; i < 1000; i += 2) {
        mkpeer(i, p);
        assert_true(vv_pubsub_backoff_active(b, p, "t", 1, 5000));
    }
    vv_pubsub_backoff_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_holds_until_expiry_per_peer_and_topic),
        cmocka_unit_test(test_graft_during_backoff_is_penalised_and_extends_it),
        cmocka_unit_test(test_backoff_table_is_bounded_and_reuses_expired),
        cmocka_unit_test(test_sweep_removes_only_expired_in_slices),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
