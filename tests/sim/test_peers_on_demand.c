/*
 * Peers on demand on the simulator, with the daemon's connection manager on every node
 * (vv_sim_config.connmgr): a module on node 0 asks for a node nobody else knows
 * (vv_env_want_peer, by ID only); the connection is made at once, kept while node 0 is
 * flooded by the nodes that join through it and trims them, and made again after the wanted
 * node crashed and came back. A failing run prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "vivim/connmgr.h"
#include "vivim/log.h"

#define N_NODES    80
#define TARGET     (N_NODES - 1)
#define WANT_AT    5000
#define CRASH_AT   40000
#define RESTART_AT 45000

static uint64_t seed;

struct app {
    struct vv_sim *sim;
    struct vv_env *env;
    uint32_t index;
    uint64_t timer;
    int want_rc;
    uint64_t target_up_ms; /* on node 0: when the wanted node first came up, 0 before */
};

static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    struct app *a = arg;
    if (up && a->target_up_ms == 0 &&
        memcmp(peer, vv_sim_node_id(a->sim, TARGET), VV_NODE_ID_BYTES) == 0)
        a->target_up_ms = vv_env_now(env);
}

static void want_target(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    a->timer = 0;
    a->want_rc = vv_env_want_peer(env, vv_sim_node_id(a->sim, TARGET), NULL, "test", 5);
}

static void *app_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct app *a = vv_xcalloc(1, sizeof(*a));
    a->sim = sim;
    a->env = env;
    a->index = index;
    a->want_rc = 1;
    /* Everybody but the target joins through node 0, which is then far over high water. */
    if (index != 0 && index != TARGET)
        vv_connmgr_add_peer(vv_sim_connmgr(sim, index), vv_sim_node_id(sim, 0), NULL,
                            VV_PEER_BOOTSTRAP);
    if (index == 0) {
        vv_env_set_channel(env, VV_CHANNEL_TEST, NULL, on_peer, a);
        a->timer = vv_env_timer_start(env, WANT_AT, 0, want_target, a);
    }
    return a;
}

static void app_destroy(void *app, void *arg)
{
    (void)arg;
    struct app *a = app;
    vv_env_timer_cancel(a->env, a->timer);
    vv_free(a);
}

static struct vv_sim *make_sim(void)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, seed, N_NODES);
    cfg.n_regions = 1;
    cfg.connmgr = true;
    vv_connmgr_config_defaults(&cfg.connmgr_cfg);
    cfg.connmgr_cfg.low_water = 4;
    cfg.connmgr_cfg.high_water = 6;
    cfg.connmgr_cfg.max_known_peers = 256;
    struct vv_sim_app app = {app_create, app_destroy, NULL};
    return vv_sim_new(&cfg, &app);
}

static bool target_connected(struct vv_sim *sim)
{
    const struct vv_connmgr_peer *p =
        vv_connmgr_find(vv_sim_connmgr(sim, 0), vv_sim_node_id(sim, TARGET));
    return p != NULL && p->connected;
}

static void test_wanted_peer_is_connected_kept_and_reconnected(void **state)
{
    (void)state;
    struct vv_sim *sim = make_sim();
    vv_sim_crash_at(sim, CRASH_AT, TARGET);
    vv_sim_restart_at(sim, RESTART_AT, TARGET);
    vv_sim_run_until(sim, WANT_AT + 1000);
    struct app *a0 = vv_sim_app_of(sim, 0);
    assert_int_equal(a0->want_rc, 0);
    /* Dialled at once (the dial and handshake take about two round trips), not at the next
     * maintenance round: nobody else knows the target, and node 0 is far above low water. */
    assert_true(a0->target_up_ms >= WANT_AT);
    assert_true(a0->target_up_ms - WANT_AT < 200);
    const struct vv_connmgr_peer *p =
        vv_connmgr_find(vv_sim_connmgr(sim, 0), vv_sim_node_id(sim, TARGET));
    assert_int_equal(p->n_tags, 1);
    assert_string_equal(p->tags[0].name, "test");

    /* Kept while node 0 trims the crowd that joined through it. */
    for (uint64_t t = WANT_AT + 2000; t < CRASH_AT; t += 1000) {
        vv_sim_run_until(sim, t);
        assert_true(target_connected(sim));
        assert_true(vv_connmgr_connected_count(vv_sim_connmgr(sim, 0)) <= 2 * 6 + 8);
    }
    assert_true(vv_connmgr_stats(vv_sim_connmgr(sim, 0))->trimmed > 0);

    /* It crashes and comes back with an empty address book: node 0 dials it again (others
     * that learned its address from node 0's peer exchange may too; this checks the link
     * node 0 needs is back). */
    vv_sim_run_until(sim, RESTART_AT - 1);
    assert_false(target_connected(sim));
    vv_sim_run_until(sim, RESTART_AT + 20000);
    assert_true(target_connected(sim));

    /* Released: node 0 holds no tag any more (trimming then treats it as any other peer). */
    vv_env_release_peer(vv_sim_env(sim, 0), vv_sim_node_id(sim, TARGET), "test");
    assert_int_equal(vv_connmgr_tagged_count(vv_sim_connmgr(sim, 0)), 0);
    vv_sim_free(sim);
}

static void test_same_seed_same_run(void **state)
{
    (void)state;
    uint64_t h[2];
    for (int r = 0; r < 2; r++) {
        struct vv_sim *sim = make_sim();
        vv_sim_crash_at(sim, CRASH_AT, TARGET);
        vv_sim_restart_at(sim, RESTART_AT, TARGET);
        vv_sim_run_until(sim, 60000);
        h[r] = vv_sim_trace_hash(sim);
        vv_sim_free(sim);
    }
    if (h[0] != h[1])
        fail_msg("seed %llu: runs differ", (unsigned long long)seed);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_WARN);
    seed = vv_sim_seed_from_env(4242);
    printf("sim seed %llu (replay with VV_SIM_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted_peer_is_connected_kept_and_reconnected),
        cmocka_unit_test(test_same_seed_same_run),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed)
        printf("sim: failing seed %llu: VV_SIM_SEED=%llu sim_test_peers_on_demand\n",
               (unsigned long long)seed, (unsigned long long)seed);
    return failed;
}
