/* The connection manager's index on node ID stays short when a peer picks the IDs: 10,000
 * IDs that share their first bytes (what an unkeyed "first 4 bytes of the ID" hash puts in
 * one home slot, and what a peer-exchange list may carry) do not form one probe run. */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/connmgr.h"

#define N_PEERS 10000

static void colliding_id(uint32_t i, uint8_t id[VV_NODE_ID_BYTES])
{
    memset(id, 0xc0, VV_NODE_ID_BYTES); /* the first 8 bytes are the same for all */
    memcpy(id + VV_NODE_ID_BYTES - sizeof(i), &i, sizeof(i));
}

static void test_ids_sharing_a_prefix_do_not_form_one_probe_run(void **state)
{
    (void)state;
    struct vv_fake_env f;
    vv_fake_env_init(&f, 1);
    f.send_rc = VV_ECONN_NOT_CONNECTED;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.max_known_peers = N_PEERS;
    struct vv_connmgr *cm = vv_connmgr_new(&f.env, &cfg);
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
    vv_fake_env_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_sharing_a_prefix_do_not_form_one_probe_run),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
