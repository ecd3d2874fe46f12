/* The connection manager told of a failed dial by address (a bootstrap peer whose ID is not
 * known yet) backs off at once instead of at its dial deadline. On the fake vv_env, whose
 * timer (the manager's policy tick) the test fires by hand. */
#include "vv_test.h"

#include "fake_env.h"
#include "vivim/connmgr.h"

static void test_failed_dial_by_address_backs_off_at_once(void **state)
{
    (void)state;
    struct vv_fake_env f;
    vv_fake_env_init(&f, 1);
    f.send_rc = VV_ECONN_NOT_CONNECTED;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    struct vv_connmgr *cm = vv_connmgr_new(&f.env, &cfg);
    assert_int_equal(vv_connmgr_add_peer(cm, NULL, "10.0.0.9:4747", VV_PEER_BOOTSTRAP), 0);
    assert_true(vv_fake_env_fire_next(&f)); /* a policy tick: it dials */
    assert_int_equal(f.n_connects, 1);
    assert_false(f.connects[0].has_peer);
    assert_string_equal(f.connects[0].address, "10.0.0.9:4747");
    const struct vv_connmgr_peer *p = vv_connmgr_peer_at(cm, 0);
    assert_true(p->dialing);
    vv_connmgr_dial_failed(cm, "10.0.0.9:4747");
    p = vv_connmgr_peer_at(cm, 0);
    assert_false(p->dialing);
    assert_int_equal(p->failures, 1);
    assert_true(p->next_dial_ms > f.now_ms);
    assert_int_equal(vv_connmgr_stats(cm)->dial_failures, 1);
    /* Not redialled before its backoff, redialled after. */
    vv_fake_env_fire_next(&f);
    assert_int_equal(f.n_connects, 1);
    f.now_ms = p->next_dial_ms;
    vv_fake_env_fire_next(&f);
    assert_int_equal(f.n_connects, 2);
    /* Reports for unknown addresses, or for a peer not dialling, change nothing. */
    vv_connmgr_dial_failed(cm, "10.0.0.8:1");
    vv_connmgr_dial_failed(cm, NULL);
    assert_int_equal(vv_connmgr_stats(cm)->dial_failures, 1);
    vv_connmgr_free(cm);
    vv_fake_env_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_dial_by_address_backs_off_at_once),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
