/*
 * The connection manager's tunables that are [net] keys: grace_period_ms (grace_ms) and
 * max_tagged_peers (max_tagged) change what the manager does, and their defaults are the
 * documented constants. On the shared fake vv_env, its clock driven by hand.
 */
#include "vv_test.h"

#include <string.h>

#include "fake_env.h"
#include "vivim/connmgr.h"

struct rig {
    struct vv_fake_env f;
    struct vv_connmgr *cm;
};

static void rig_start(struct rig *r, const struct vv_connmgr_config *cfg)
{
    vv_fake_env_init(&r->f, 0x51ed270b27a1f3c9ull);
    r->f.now_ms = 100000;
    r->f.report_disconnects = true; /* "down" at once, as in the simulator */
    r->cm = vv_connmgr_new(&r->f.env, cfg);
}

static void rig_free(struct rig *r)
{
    vv_connmgr_free(r->cm);
    vv_fake_env_free(&r->f);
}

static void peer_id(uint8_t id[VV_NODE_ID_BYTES], uint32_t k)
{
    memset(id, 0x3c, VV_NODE_ID_BYTES);
    id[0] = (uint8_t)k;
    id[1] = (uint8_t)(k >> 8);
}

static void up(struct rig *r, uint32_t k)
{
    uint8_t id[VV_NODE_ID_BYTES];
    peer_id(id, k);
    vv_fake_env_peer_up(&r->f, id);
}

/* Of peers 0 .. n-1, how many the manager disconnected. */
static uint32_t disconnected(const struct rig *r, uint32_t n)
{
    uint32_t d = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint8_t id[VV_NODE_ID_BYTES];
        peer_id(id, k);
        d += vv_fake_env_disconnect_count(&r->f, id) > 0;
    }
    return d;
}

static void test_defaults_are_the_documented_constants(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    assert_int_equal(cfg.grace_ms, VV_CONNMGR_GRACE_MS);
    assert_int_equal(cfg.max_tagged, VV_CONNMGR_MAX_TAGGED_PEERS);
}

/* Young untagged connections over high water: spared for grace_ms, then trimmed down to
 * low water. With a grace of 5 s they go after 5 s, where the default would keep them for
 * 30 s (test_connmgr_tags.c). */
static void test_a_shorter_grace_period_trims_sooner(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = 2;
    cfg.high_water = 4;
    cfg.grace_ms = 5000;
    struct rig r;
    rig_start(&r, &cfg);
    for (uint32_t i = 0; i < 6; i++)
        up(&r, i);
    vv_fake_env_advance(&r.f, 4900);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 0);
    assert_int_equal(disconnected(&r, 6), 0);
    vv_fake_env_advance(&r.f, 6000);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 4);
    assert_int_equal(disconnected(&r, 6), 4);
    assert_int_equal(vv_connmgr_connected_count(r.cm), 2);
    rig_free(&r);
}

/* grace_ms 0: no grace at all, the first tick over high water trims. */
static void test_no_grace_period(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = 2;
    cfg.high_water = 4;
    cfg.grace_ms = 0;
    struct rig r;
    rig_start(&r, &cfg);
    for (uint32_t i = 0; i < 6; i++)
        up(&r, i);
    vv_fake_env_advance(&r.f, 4900);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 4);
    assert_int_equal(disconnected(&r, 6), 4);
    assert_int_equal(vv_connmgr_connected_count(r.cm), 2);
    rig_free(&r);
}

/* max_tagged bounds the peers tagged at once; a tag on a peer already tagged is not a new
 * one, and releasing a peer frees its place. */
static void test_max_tagged_bounds_the_tagged_peers(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.max_tagged = 3;
    struct rig r;
    rig_start(&r, &cfg);
    uint8_t id[VV_NODE_ID_BYTES];
    for (uint32_t i = 0; i < 3; i++) {
        peer_id(id, 100 + i);
        assert_int_equal(vv_env_want_peer(&r.f.env, id, NULL, "crdt", 1), 0);
    }
    peer_id(id, 103);
    assert_int_equal(vv_env_want_peer(&r.f.env, id, NULL, "crdt", 1), VV_ELIMIT);
    peer_id(id, 101);
    assert_int_equal(vv_env_want_peer(&r.f.env, id, NULL, "pubsub", 1), 0);
    assert_int_equal(vv_env_release_peer(&r.f.env, id, "crdt"), 0);
    assert_int_equal(vv_env_release_peer(&r.f.env, id, "pubsub"), 0);
    peer_id(id, 103);
    assert_int_equal(vv_env_want_peer(&r.f.env, id, NULL, "crdt", 1), 0);
    rig_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_the_documented_constants),
        cmocka_unit_test(test_a_shorter_grace_period_trims_sooner),
        cmocka_unit_test(test_no_grace_period),
        cmocka_unit_test(test_max_tagged_bounds_the_tagged_peers),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
