/* The connection manager told of a failed dial by address (a bootstrap peer whose ID is not
 * known yet) backs off at once instead of at its dial deadline. A fake vv_env whose timers
 * the test fires by hand. */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "vivim/connmgr.h"

struct fake {
    uint64_t now;
    vv_env_timer_cb cb;
    void *arg;
    int dials;
    char last_address[128];
};

static uint64_t f_now(void *impl)
{
    return ((struct fake *)impl)->now;
}
static uint64_t f_timer(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    (void)d, (void)r;
    struct fake *f = impl;
    f->cb = cb;
    f->arg = arg;
    return 1;
}
static void f_cancel(void *impl, uint64_t id)
{
    (void)impl, (void)id;
}
static void f_random(void *impl, void *buf, size_t len)
{
    (void)impl;
    memset(buf, 0, len);
}
static int f_send(void *impl, const uint8_t *p, uint8_t ch, const uint8_t *d, size_t n)
{
    (void)impl, (void)p, (void)ch, (void)d, (void)n;
    return VV_ECONN_NOT_CONNECTED;
}
static int f_connect(void *impl, const uint8_t *peer, const char *address)
{
    (void)peer;
    struct fake *f = impl;
    f->dials++;
    snprintf(f->last_address, sizeof(f->last_address), "%s", address ? address : "");
    return 0;
}
static void f_disconnect(void *impl, const uint8_t *peer)
{
    (void)impl, (void)peer;
}
static bool f_verify(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    (void)impl, (void)pk, (void)m, (void)n, (void)s;
    return false;
}
static const struct vv_env_ops ops = {f_now,     f_timer,      f_cancel, f_random, f_send,
                                      f_connect, f_disconnect, f_verify, NULL};

static void test_failed_dial_by_address_backs_off_at_once(void **state)
{
    (void)state;
    struct fake f = {.now = 1000};
    struct vv_identity id = {0};
    struct vv_env env = {.ops = &ops, .impl = &f, .identity = &id};
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    struct vv_connmgr *cm = vv_connmgr_new(&env, &cfg);
    assert_int_equal(vv_connmgr_add_peer(cm, NULL, "10.0.0.9:4747", VV_PEER_BOOTSTRAP), 0);
    f.cb(&env, f.arg); /* a policy tick: it dials */
    assert_int_equal(f.dials, 1);
    assert_string_equal(f.last_address, "10.0.0.9:4747");
    const struct vv_connmgr_peer *p = vv_connmgr_peer_at(cm, 0);
    assert_true(p->dialing);
    vv_connmgr_dial_failed(cm, "10.0.0.9:4747");
    p = vv_connmgr_peer_at(cm, 0);
    assert_false(p->dialing);
    assert_int_equal(p->failures, 1);
    assert_true(p->next_dial_ms > f.now);
    assert_int_equal(vv_connmgr_stats(cm)->dial_failures, 1);
    /* Not redialled before its backoff, redialled after. */
    f.cb(&env, f.arg);
    assert_int_equal(f.dials, 1);
    f.now = p->next_dial_ms;
    f.cb(&env, f.arg);
    assert_int_equal(f.dials, 2);
    /* Reports for unknown addresses, or for a peer not dialling, change nothing. */
    vv_connmgr_dial_failed(cm, "10.0.0.8:1");
    vv_connmgr_dial_failed(cm, NULL);
    assert_int_equal(vv_connmgr_stats(cm)->dial_failures, 1);
    vv_connmgr_free(cm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_dial_by_address_backs_off_at_once),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
