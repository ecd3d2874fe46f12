/*
 * The connection manager on the simulator: bootstrap of 1,000 nodes through one, churn with
 * reconnection, trimming with protected peers, keepalive RTT, and a hostile peer. Every
 * scenario runs twice with one seed and must give one trace hash (sim_test.h). A failing run
 * prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "sim.h"
#include "sim_test.h"
#include "vivim/connmgr.h"
#include "vivim/log.h"

static uint64_t seed;

/* The 1,000-node run is the costliest here: its second run replays the bootstrap (the first
 * 60 s, with every node joining through one) rather than all 200 s. */
#define BOOTSTRAP_REPLAY_MS 60000

struct scenario {
    uint32_t low, high;
    int32_t evil;      /* index of a node that sends garbage, or -1 */
    int32_t protector; /* node that protects `protected_peer`, or -1 */
    uint32_t protected_peer;
};

struct app {
    struct vv_connmgr *cm;
    struct vv_sim *sim;
    struct vv_env *env;
    uint32_t index;
    uint64_t evil_timer;
    const struct scenario *sc;
};

static void evil_tick(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    /* Garbage to every connected peer: not msgpack, or msgpack of the wrong shape. */
    static const uint8_t junk[][6] = {
        {0xc1, 0xc1, 0xc1, 0, 0, 0}, {0x93, 0x01, 0xa1, 'x', 0, 0}, {0x92, 0x04, 0x91, 0x01, 0, 0}};
    for (uint32_t i = 0; i < vv_connmgr_known_count(a->cm); i++) {
        const struct vv_connmgr_peer *p = vv_connmgr_peer_at(a->cm, i);
        if (p->connected)
            vv_env_send(env, p->id, VV_CHANNEL_CONN, junk[vv_env_now(env) / 1000 % 3], 6);
    }
}

static void *app_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    const struct scenario *sc = arg;
    struct app *a = vv_xcalloc(1, sizeof(*a));
    a->sim = sim;
    a->env = env;
    a->index = index;
    a->sc = sc;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = sc->low;
    cfg.high_water = sc->high;
    cfg.max_known_peers = 256;
    /* Numeric, as peer exchange requires: node i at 10.x.y.z with x.y.z = i + 1. */
    snprintf(cfg.self_address, sizeof(cfg.self_address), "10.%u.%u.%u:4747", (index + 1) >> 16,
             ((index + 1) >> 8) & 255, (index + 1) & 255);
    snprintf(cfg.region, sizeof(cfg.region), "r%u", index % 4);
    cfg.capabilities = VV_CAP_DHT | (index % 2 ? VV_CAP_STORE : 0);
    a->cm = vv_connmgr_new(env, &cfg);
    if (index != 0)
        vv_connmgr_add_peer(a->cm, vv_sim_node_id(sim, 0), "10.0.0.1:4747", VV_PEER_BOOTSTRAP);
    if ((int32_t)index == sc->protector) {
        vv_connmgr_add_peer(a->cm, vv_sim_node_id(sim, sc->protected_peer), NULL,
                            VV_PEER_PROTECTED);
    }
    if ((int32_t)index == sc->evil)
        a->evil_timer = vv_env_timer_start(env, 1500, 1000, evil_tick, a);
    return a;
}

static void app_destroy(void *app, void *arg)
{
    (void)arg;
    struct app *a = app;
    vv_env_timer_cancel(a->env, a->evil_timer);
    vv_connmgr_free(a->cm);
    vv_free(a);
}

static struct vv_sim *make_sim(uint64_t s, uint32_t n, struct scenario *sc)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, s, n);
    struct vv_sim_app app = {app_create, app_destroy, sc};
    return vv_sim_new(&cfg, &app);
}

static struct vv_connmgr *cm_of(struct vv_sim *sim, uint32_t i)
{
    return ((struct app *)vv_sim_app_of(sim, i))->cm;
}

static void connected_range(struct vv_sim *sim, uint32_t *min, uint32_t *max, uint32_t *below_low,
                            uint32_t low)
{
    *min = UINT32_MAX;
    *max = 0;
    *below_low = 0;
    for (uint32_t i = 0; i < vv_sim_node_count(sim); i++) {
        if (!vv_sim_node_up(sim, i))
            continue;
        uint32_t c = vv_connmgr_connected_count(cm_of(sim, i));
        /* The manager's view and the network's must agree. */
        assert_int_equal(c, vv_sim_links(sim, i));
        *min = VV_MIN(*min, c);
        *max = VV_MAX(*max, c);
        *below_low += c < low;
    }
}

static void bootstrap_and_churn(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct scenario sc = {.low = 8, .high = 16, .evil = -1, .protector = -1};
    uint32_t n = 1000;
    struct vv_sim *sim = make_sim(run->seed, n, &sc);
    uint32_t min, max, below;

    if (!vv_sim_run_to(run, sim, 60000))
        goto out;
    connected_range(sim, &min, &max, &below, sc.low);
    printf("after 60 s: connections per node %u..%u, %u below low water\n", min, max, below);
    assert_true(min >= sc.low);
    assert_true(max <= sc.high + 8); /* trimmed once per tick; inbound may arrive between */

    /* 10% crash; survivors notice (3 s detection) and refill from their address books. */
    for (uint32_t i = 1; i <= n / 10; i++)
        vv_sim_crash_at(sim, 60000 + i * 7, i * 9);
    if (!vv_sim_run_to(run, sim, 100000))
        goto out;
    connected_range(sim, &min, &max, &below, sc.low);
    printf("after churn: connections per node %u..%u, %u below low water\n", min, max, below);
    assert_true(min >= sc.low);

    /* They come back with empty memory and rejoin through the bootstrap node. */
    for (uint32_t i = 1; i <= n / 10; i++)
        vv_sim_restart_at(sim, 100000 + i * 7, i * 9);
    if (!vv_sim_run_to(run, sim, 200000))
        goto out;
    connected_range(sim, &min, &max, &below, sc.low);
    printf("after restart: connections per node %u..%u, %u below low water\n", min, max, below);
    assert_true(min >= sc.low);
    assert_true(max <= sc.high + 8);

    /* Keepalive measured RTTs near the modelled round trip (10..240 ms plus jitter). */
    const struct vv_connmgr_stats *st = vv_connmgr_stats(cm_of(sim, 500));
    assert_true(st->pongs_received > 0);
    uint32_t measured = 0;
    for (uint32_t i = 0; i < vv_connmgr_known_count(cm_of(sim, 500)); i++) {
        const struct vv_connmgr_peer *p = vv_connmgr_peer_at(cm_of(sim, 500), i);
        if (p->connected && p->rtt_ms > 0) {
            measured++;
            assert_in_range(p->rtt_ms, 10, 270);
        }
    }
    assert_true(measured > 0);

    /* Discovery filters: connected peers with the STORE capability are odd-numbered. */
    const struct vv_connmgr_peer *sel[64];
    uint32_t k = vv_connmgr_select(cm_of(sim, 500), VV_CAP_STORE, NULL, 0, sel, 64);
    assert_true(k > 0);
    for (uint32_t i = 0; i < k; i++) {
        int64_t idx = vv_sim_find(sim, sel[i]->id);
        assert_true(idx % 2 == 1);
        assert_true(sel[i]->connected);
    }
    k = vv_connmgr_select(cm_of(sim, 500), 0, "r2", 0, sel, 64);
    for (uint32_t i = 0; i < k; i++)
        assert_int_equal(vv_sim_find(sim, sel[i]->id) % 4, 2);
    vv_sim_report(sim, stdout);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_1000_nodes_bootstrap_through_one_and_survive_churn(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(bootstrap_and_churn, NULL, seed, BOOTSTRAP_REPLAY_MS, false);
}

/* 200 nodes, one crash: also run with another seed, which must give another trace. */
static void crash_one_of_200(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct scenario sc = {.low = 6, .high = 12, .evil = -1, .protector = -1};
    struct vv_sim *sim = make_sim(run->seed, 200, &sc);
    vv_sim_crash_at(sim, 20000, 3);
    vv_sim_run_to(run, sim, 40000);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_same_seed_same_run(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(crash_one_of_200, NULL, seed, 0, true);
}

static void trimming_protected(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    /* Everybody dials node 0; it must trim to its low water but keep node 5. */
    struct scenario sc = {.low = 4, .high = 6, .evil = -1, .protector = 0, .protected_peer = 5};
    struct vv_sim *sim = make_sim(run->seed, 100, &sc);
    for (uint64_t t = 2000; t <= 30000; t += 1000) {
        vv_sim_run_to(run, sim, t);
        const struct vv_connmgr_peer *p5 = vv_connmgr_find(cm_of(sim, 0), vv_sim_node_id(sim, 5));
        if (t >= 5000) {
            assert_non_null(p5);
            assert_true(p5->connected);
        }
    }
    assert_true(vv_connmgr_stats(cm_of(sim, 0))->trimmed > 0);
    assert_true(vv_connmgr_connected_count(cm_of(sim, 0)) <= sc.high + 8);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_trimming_keeps_protected_peer(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(trimming_protected, NULL, seed, 0, false);
}

static void garbage_sender(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct scenario sc = {.low = 6, .high = 12, .evil = 7, .protector = -1};
    uint32_t n = 60;
    struct vv_sim *sim = make_sim(run->seed, n, &sc);
    vv_sim_run_to(run, sim, 120000);
    uint64_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i == 7)
            continue;
        struct vv_connmgr *cm = cm_of(sim, i);
        bad += vv_connmgr_stats(cm)->bad_messages;
        const struct vv_connmgr_peer *evil = vv_connmgr_find(cm, vv_sim_node_id(sim, 7));
        if (evil != NULL && evil->reputation <= VV_CONNMGR_REPUTATION_MIN)
            assert_false(evil->connected);
    }
    assert_true(bad > 0);
    /* By the end nobody who judged it hostile keeps a connection to it. */
    vv_sim_run_to(run, sim, 180000);
    uint32_t still = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct vv_connmgr_peer *evil =
            i == 7 ? NULL : vv_connmgr_find(cm_of(sim, i), vv_sim_node_id(sim, 7));
        still += evil != NULL && evil->connected && evil->reputation <= VV_CONNMGR_REPUTATION_MIN;
    }
    assert_int_equal(still, 0);
    /* Honest nodes stay well connected. */
    for (uint32_t i = 0; i < n; i++)
        if (i != 7)
            assert_true(vv_connmgr_connected_count(cm_of(sim, i)) >= 1);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_garbage_sender_is_disconnected_and_not_redialled(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(garbage_sender, NULL, seed, 0, false);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_WARN);
    seed = vv_sim_seed_from_env(777);
    printf("sim seed %llu (replay with VV_SIM_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_1000_nodes_bootstrap_through_one_and_survive_churn),
        cmocka_unit_test(test_same_seed_same_run),
        cmocka_unit_test(test_trimming_keeps_protected_peer),
        cmocka_unit_test(test_garbage_sender_is_disconnected_and_not_redialled),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed)
        printf("sim: failing seed %llu: VV_SIM_SEED=%llu sim_test_connmgr\n",
               (unsigned long long)seed, (unsigned long long)seed);
    return failed;
}
