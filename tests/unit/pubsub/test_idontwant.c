/* IDONTWANT sets (GossipSub v1.2): IDs held for ttl_heartbeats heartbeats, and a quota per
 * heartbeat that bounds what a flooding peer can make us hold. */
#include "vv_test.h"

#include <string.h>

#include "vivim/pubsub_core.h"

static void mkid(uint32_t n, uint8_t id[VV_PUBSUB_ID_BYTES])
{
    memset(id, 0x5a, VV_PUBSUB_ID_BYTES);
    memcpy(id + VV_PUBSUB_ID_BYTES - 4, &n, 4);
}

static void test_idontwant_expires_after_ttl_heartbeats(void **state)
{
    (void)state;
    struct vv_pubsub_idontwant_config cfg;
    vv_pubsub_idontwant_config_defaults(&cfg);
    struct vv_pubsub_idontwant *d;
    vv_pubsub_idontwant_new(&cfg, &d);
    uint8_t a[VV_PUBSUB_ID_BYTES], b[VV_PUBSUB_ID_BYTES];
    mkid(1, a);
    mkid(2, b);
    assert_false(vv_pubsub_idontwant_has(d, a));
    assert_int_equal(vv_pubsub_idontwant_add(d, a), 0);
    assert_int_equal(vv_pubsub_idontwant_add(d, a), VV_EEXIST);
    vv_pubsub_idontwant_heartbeat(d);
    assert_int_equal(vv_pubsub_idontwant_add(d, b), 0);
    assert_true(vv_pubsub_idontwant_has(d, a));
    vv_pubsub_idontwant_heartbeat(d);
    assert_true(vv_pubsub_idontwant_has(d, a));
    vv_pubsub_idontwant_heartbeat(d); /* the third since a came */
    assert_false(vv_pubsub_idontwant_has(d, a));
    assert_true(vv_pubsub_idontwant_has(d, b));
    vv_pubsub_idontwant_heartbeat(d);
    assert_false(vv_pubsub_idontwant_has(d, b));
    assert_int_equal(vv_pubsub_idontwant_count(d), 0);
    vv_pubsub_idontwant_free(d);
}

static void test_idontwant_quota_per_heartbeat_bounds_a_flooding_peer(void **state)
{
    (void)state;
    struct vv_pubsub_idontwant_config cfg = {.ttl_heartbeats = 3, .max_per_heartbeat = 10};
    struct vv_pubsub_idontwant *d;
    vv_pubsub_idontwant_new(&cfg, &d);
    uint32_t n = 0;
    for (int hb = 0; hb < 10; hb++) {
        for (int i = 0; i < 25; i++) {
            uint8_t id[VV_PUBSUB_ID_BYTES];
            mkid(n++, id);
            int rc = vv_pubsub_idontwant_add(d, id);
            assert_int_equal(rc, i < 10 ? 0 : VV_ELIMIT);
        }
        assert_true(vv_pubsub_idontwant_count(d) <= 30);
        vv_pubsub_idontwant_heartbeat(d);
    }
    assert_int_equal(vv_pubsub_idontwant_refused(d), 150);
    vv_pubsub_idontwant_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idontwant_expires_after_ttl_heartbeats),
        cmocka_unit_test(test_idontwant_quota_per_heartbeat_bounds_a_flooding_peer),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
