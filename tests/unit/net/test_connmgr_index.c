/* The connection manager's index on node ID stays short when a peer picks the IDs: 10,000
 * IDs that share their first bytes (what an unkeyed "first 4 bytes of the ID" hash puts in
 * one home slot, and what a peer-exchange list may carry) do not form one probe run. */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "vivim/connmgr.h"

#define N_PEERS 10000

static uint64_t f_now(void *impl)
{
    (void)impl;
    return 1000;
}
static uint64_t f_timer(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    (void)impl, (void)d, (void)r, (void)cb, (void)arg;
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
    (void)impl, (void)peer, (void)address;
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

static void colliding_id(uint32_t i, uint8_t id[VV_NODE_ID_BYTES])
{
    memset(id, 0xc0, VV_NODE_ID_BYTES); /* the first 8 bytes are the same for all */
    memcpy(id + VV_NODE_ID_BYTES - sizeof(i), &i, sizeof(i));
}

static void test_ids_sharing_a_prefix_do_not_form_one_probe_run(void **state)
{
    (void)state;
    struct vv_identity self = {0};
    struct vv_env env = {.ops = &ops, .impl = NULL, .identity = &self};
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.max_known_peers = N_PEERS;
    struct vv_connmgr *cm = vv_connmgr_new(&env, &cfg);
    for (uint32_t i = 0; i < N_PEERS; i++) {
        uint8_t id[VV_NODE_ID_BYTES];
        char address[32];
        colliding_id(i, id);
        snprintf(address, sizeof(address), "10.%u.%u.%u:4747", (i >> 16) & 255, (i >> 8) & 255,
                 i & 255);
        assert_int_equal(vv_connmgr_add_peer(cm, id, address, 0), 0);
    }
    assert_int_equal(vv_connmgr_known_count(cm), N_PEERS);
    /* An unkeyed hash of the shared prefix gives one run of N_PEERS slots; a keyed one at
     * this load (under a third) gives runs of a few dozen at most. */
    assert_true(vv__connmgr_longest_probe(cm) <= 100);
    for (uint32_t i = 0; i < N_PEERS; i += 997) {
        uint8_t id[VV_NODE_ID_BYTES];
        colliding_id(i, id);
        const struct vv_connmgr_peer *p = vv_connmgr_find(cm, id);
        assert_non_null(p);
        assert_memory_equal(p->id, id, VV_NODE_ID_BYTES);
    }
    vv_connmgr_free(cm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_sharing_a_prefix_do_not_form_one_probe_run),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
