/*
 * The simulator itself: determinism, timers, the network model, faults, and a 1,000-node
 * join-and-churn run. Every scenario runs twice with one seed and must give one trace hash
 * (sim_test.h). A failing run prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "pingnet.h"
#include "sim.h"
#include "sim_test.h"

static uint64_t seed;

static struct vv_sim *pingnet_sim(uint64_t s, uint32_t n, struct pingnet_params *p,
                                  struct vv_sim_config *cfg_out)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, s, n);
    cfg.max_nodes = n + n / 10;
    if (cfg_out)
        *cfg_out = cfg;
    struct vv_sim_app app = {pingnet_create, pingnet_destroy, p};
    return vv_sim_new(&cfg, &app);
}

/* 200 pingnet nodes, one of them crashing and coming back. */
static void crash_and_restart(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct pingnet_params p = {.want = 4};
    struct vv_sim *sim = pingnet_sim(run->seed, 200, &p, NULL);
    vv_sim_crash_at(sim, 5000, 7);
    vv_sim_restart_at(sim, 9000, 7);
    if (vv_sim_run_to(run, sim, 20000))
        assert_true(vv_sim_totals(sim)->msgs_delivered > 1000);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_same_seed_gives_identical_trace_and_other_seed_differs(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(crash_and_restart, NULL, seed, 0, true);
}

/* ---- timers ------------------------------------------------------------------------------ */

struct timer_probe {
    char log[128];
    uint64_t cancel_me;
    int repeats;
    uint64_t fired_at[8];
};

static void probe_cb(struct vv_env *env, void *arg)
{
    struct timer_probe *tp = *(struct timer_probe **)arg;
    char tag = *((char *)arg + sizeof(void *));
    size_t off = strlen(tp->log);
    snprintf(tp->log + off, sizeof(tp->log) - off, "%c@%llu ", tag,
             (unsigned long long)vv_env_now(env));
}

struct tagged {
    struct timer_probe *tp;
    char tag;
};

static void repeat_cb(struct vv_env *env, void *arg)
{
    struct timer_probe *tp = arg;
    tp->fired_at[tp->repeats++] = vv_env_now(env);
}

static struct timer_probe the_probe;
static struct tagged tags[4];

static void *timer_app(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)sim;
    (void)arg;
    if (index != 0)
        return NULL;
    for (int i = 0; i < 4; i++)
        tags[i] = (struct tagged){&the_probe, (char)('a' + i)};
    vv_env_timer_start(env, 100, 0, probe_cb, &tags[0]);
    vv_env_timer_start(env, 50, 0, probe_cb, &tags[1]);
    vv_env_timer_start(env, 100, 0, probe_cb, &tags[2]); /* same time as 'a': after it */
    uint64_t id = vv_env_timer_start(env, 70, 0, probe_cb, &tags[3]);
    vv_env_timer_cancel(env, id);
    vv_env_timer_cancel(env, id); /* twice is harmless */
    the_probe.cancel_me = vv_env_timer_start(env, 1000, 250, repeat_cb, &the_probe);
    return NULL;
}

static void cancel_repeat(struct vv_sim *sim, void *arg)
{
    (void)arg;
    vv_env_timer_cancel(vv_sim_env(sim, 0), the_probe.cancel_me);
}

static void timers(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    memset(&the_probe, 0, sizeof(the_probe));
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, 1);
    struct vv_sim_app app = {timer_app, NULL, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    vv_sim_at(sim, 1600, cancel_repeat, NULL);
    vv_sim_run_to(run, sim, 5000);
    assert_string_equal(the_probe.log, "b@50 a@100 c@100 ");
    assert_int_equal(the_probe.repeats, 3); /* 1000, 1250, 1500; cancelled at 1600 */
    assert_int_equal(the_probe.fired_at[0], 1000);
    assert_int_equal(the_probe.fired_at[2], 1500);
    assert_int_equal(vv_sim_now_ms(sim), 5000);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_timers_fire_in_time_then_insertion_order_and_cancel(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(timers, NULL, seed, 0, false);
}

/* ---- network model ------------------------------------------------------------------------ */

struct bw_app {
    uint64_t arrived_at;
    size_t arrived_len;
    bool up;
};
static struct bw_app bw[2];

static void bw_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    (void)peer;
    (void)data;
    struct bw_app *a = arg;
    a->arrived_at = vv_env_now(env);
    a->arrived_len = len;
}

static void bw_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    struct bw_app *a = arg;
    a->up = up;
    if (up && a == &bw[0]) {
        uint8_t *big = vv_xcalloc(1, 1000000);
        assert_int_equal(vv_env_send(env, peer, VV_CHANNEL_TEST, big, 1000000), 0);
        vv_free(big);
    }
}

static void *bw_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    vv_env_set_channel(env, VV_CHANNEL_TEST, bw_recv, bw_peer, &bw[index]);
    if (index == 1) /* node 0 is up by now: nodes boot in index order */
        vv_env_connect(env, vv_sim_node_id(sim, 0), NULL);
    return NULL;
}

static void large_message(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    memset(bw, 0, sizeof(bw));
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, 2);
    cfg.n_regions = 2;
    cfg.jitter_pct = 0;
    cfg.uplink_bytes_per_s = 125000; /* 1 Mbit/s */
    struct vv_sim_app app = {bw_create, NULL, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    /* Regions 0 and 1: 40 ms one way. Node 1 dials: TCP and Noise XX's first two messages
     * take two round trips (160 ms), the third reaches node 0 40 ms later, and node 0 sends
     * at once; then 1 MB at 125 kB/s takes 8 s (+ overhead bytes) and 40 ms to arrive. */
    vv_sim_run_to(run, sim, 60000);
    assert_true(bw[0].up && bw[1].up);
    assert_int_equal(bw[1].arrived_len, 1000000);
    assert_in_range(bw[1].arrived_at, 200 + 8000 + 40, 200 + 8000 + 40 + 1);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_bandwidth_and_latency_delay_a_large_message(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(large_message, NULL, seed, 0, false);
}

static void partition(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    uint32_t n = 100;
    uint32_t *group = vv_xcalloc(n + n / 10, sizeof(uint32_t));
    for (uint32_t i = 0; i < n + n / 10; i++)
        group[i] = i % 2;
    struct pingnet_params p = {.want = 6};
    struct vv_sim *sim = pingnet_sim(run->seed, n, &p, NULL);
    vv_sim_run_to(run, sim, 10000);
    vv_sim_partition_at(sim, 10000, group);
    /* Connections across the cut time out after fail_detect_ms (3 s); from then on,
     * nothing may cross. */
    vv_sim_run_to(run, sim, 13500);
    p.group = group;
    vv_sim_run_to(run, sim, 30000);
    uint64_t crossed = 0, links_across = 0;
    for (uint32_t i = 0; i < n; i++)
        crossed += ((struct pingnet *)vv_sim_app_of(sim, i))->cross_group;
    assert_int_equal(crossed, 0);
    (void)links_across;
    vv_sim_partition_at(sim, 30000, NULL);
    /* After healing, new dials land across the old cut and traffic crosses again. */
    vv_sim_run_to(run, sim, 60000);
    for (uint32_t i = 0; i < n; i++)
        crossed += ((struct pingnet *)vv_sim_app_of(sim, i))->cross_group;
    assert_true(crossed > 0);
    p.group = NULL;
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
    vv_free(group);
}

static void test_partition_blocks_traffic_and_heals(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(partition, NULL, seed, 0, true);
}

/* ---- peer-event order ------------------------------------------------------------------- */

/* Channel 0 (the connection manager's place) hangs up on every peer from its "up" callback,
 * as a manager over its limit does; channel 3 writes down what it hears. */
struct order_app {
    struct vv_env *env;
    char log[64];
};

static void order_conn_peer(struct vv_env *env, const uint8_t *peer, bool up, void *arg)
{
    (void)arg;
    if (up)
        vv_env_disconnect(env, peer);
}

static void order_crdt_peer(struct vv_env *env, const uint8_t *peer, bool up, void *arg)
{
    (void)env, (void)peer;
    struct order_app *a = arg;
    size_t n = strlen(a->log);
    if (n + 1 < sizeof(a->log))
        a->log[n] = up ? 'U' : 'D';
}

static void *order_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)sim, (void)arg;
    struct order_app *a = vv_xcalloc(1, sizeof(*a));
    a->env = env;
    if (index == 0)
        vv_env_set_channel(env, VV_CHANNEL_CONN, NULL, order_conn_peer, a);
    vv_env_set_channel(env, VV_CHANNEL_CRDT, NULL, order_crdt_peer, a);
    return a;
}

static void order_dial(struct vv_sim *sim, void *arg)
{
    (void)arg;
    assert_int_equal(vv_env_connect(vv_sim_env(sim, 0), NULL, "sim:1"), 0);
}

static void order_destroy(void *app, void *arg)
{
    (void)arg;
    vv_free(app);
}

/* As in the daemon (tcp.c holds "down" while modules are told of "up"): a module that hangs
 * up on a peer while the channels are told it came up makes every channel hear "up" first,
 * then "down". Before, channel 3 heard "down" (nested) and then "up" for a peer with no
 * link. */
static void hang_up_on_up(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, 2);
    struct vv_sim_app app = {order_create, order_destroy, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    vv_sim_at(sim, 100, order_dial, NULL); /* once both nodes are up */
    vv_sim_run_to(run, sim, 5000);
    struct order_app *a = vv_sim_app_of(sim, 0), *b = vv_sim_app_of(sim, 1);
    assert_string_equal(a->log, "UD");
    assert_string_equal(b->log, "UD"); /* the other side sees the close after it opened */
    assert_int_equal(vv_sim_links(sim, 0), 0);
    assert_int_equal(vv_sim_links(sim, 1), 0);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_down_raised_during_up_is_told_after_it_to_every_channel(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(hang_up_on_up, NULL, seed, 0, false);
}

/* ---- back-pressure ------------------------------------------------------------------------ */

struct burst {
    int accepted, refused, other;
};

static void burst_send(struct vv_sim *sim, void *arg)
{
    struct burst *b = arg;
    static uint8_t payload[4000];
    for (int i = 0; i < 100; i++) {
        int rc = vv_env_send(vv_sim_env(sim, 0), vv_sim_node_id(sim, 1), VV_CHANNEL_CRDT, payload,
                             sizeof(payload));
        if (rc == 0)
            b->accepted++;
        else if (rc == VV_ECONN_BACKPRESSURE)
            b->refused++;
        else
            b->other++;
    }
}

static void *quiet_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)sim, (void)env, (void)index, (void)arg;
    return NULL;
}

/* As the daemon's per-peer queue ([net] peer_queue_bytes): what waits in a slow uplink for
 * one peer is bounded, sends past it are refused with VV_ECONN_BACKPRESSURE and counted, and
 * once the queue drained sends are accepted again. */
static void full_link_queue(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, 2);
    cfg.uplink_bytes_per_s = 1000000; /* 4 ms a message */
    cfg.peer_queue_bytes = 65536;
    struct vv_sim_app app = {quiet_create, NULL, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    vv_sim_at(sim, 100, order_dial, NULL);
    struct burst first = {0}, again = {0};
    vv_sim_at(sim, 2000, burst_send, &first);
    vv_sim_at(sim, 2200, burst_send, &again); /* 64 KiB leave in 65 ms: drained by then */
    vv_sim_run_to(run, sim, 5000);
    int fit = 65536 / (4000 + (int)cfg.per_message_overhead_bytes);
    assert_int_equal(first.accepted, fit);
    assert_int_equal(first.refused, 100 - fit);
    assert_int_equal(first.other, 0);
    assert_int_equal(again.accepted, fit);
    assert_int_equal(vv_sim_node_counters(sim, 0)->msgs_refused, 2 * (100 - fit));
    assert_int_equal(vv_sim_node_counters(sim, 1)->msgs_delivered, 2 * fit);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_a_full_link_queue_refuses_sends_until_it_drains(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(full_link_queue, NULL, seed, 0, false);
}

static void join_and_churn(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    uint32_t n = 1000;
    struct pingnet_params p = {.want = 8};
    struct vv_sim *sim = pingnet_sim(run->seed, n, &p, NULL);
    /* 10% crash at 20 s and come back at 40 s; 100 nodes join at 30 s. */
    for (uint32_t i = 0; i < n / 10; i++) {
        vv_sim_crash_at(sim, 20000 + i * 10, i * 10);
        vv_sim_restart_at(sim, 40000 + i * 10, i * 10);
    }
    uint32_t first_joined = 0;
    for (uint32_t i = 0; i < n / 10; i++) {
        uint32_t idx = vv_sim_join_at(sim, 30000 + i);
        if (i == 0)
            first_joined = idx;
    }
    vv_sim_run_to(run, sim, 25000);
    uint32_t down = 0;
    for (uint32_t i = 0; i < n; i++)
        down += !vv_sim_node_up(sim, i);
    assert_int_equal(down, n / 10);
    vv_sim_run_to(run, sim, 120000);

    const struct vv_sim_counters *t = vv_sim_totals(sim);
    uint64_t pings = 0, pongs = 0, bad = 0;
    uint32_t isolated = 0;
    for (uint32_t i = 0; i < vv_sim_node_count(sim); i++) {
        struct pingnet *pn = vv_sim_app_of(sim, i);
        assert_true(vv_sim_node_up(sim, i));
        pings += pn->pings_sent;
        pongs += pn->pongs_received;
        bad += pn->pongs_bad;
        isolated += vv_sim_links(sim, i) == 0;
    }
    vv_sim_report(sim, stdout);
    assert_int_equal(vv_sim_node_count(sim), n + n / 10);
    assert_int_equal(first_joined, n);
    assert_int_equal(isolated, 0);
    assert_int_equal(bad, 0);
    /* Crashes lose some in-flight pings; nearly all are answered. */
    assert_true(t->msgs_dropped > 0);
    assert_true(pongs > pings * 95 / 100);
    assert_true(pongs < pings);
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_join_and_churn_1000_nodes(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(join_and_churn, NULL, seed, 0, false);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    seed = vv_sim_seed_from_env(20261124);
    printf("sim seed %llu (replay with VV_SIM_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_gives_identical_trace_and_other_seed_differs),
        cmocka_unit_test(test_timers_fire_in_time_then_insertion_order_and_cancel),
        cmocka_unit_test(test_bandwidth_and_latency_delay_a_large_message),
        cmocka_unit_test(test_partition_blocks_traffic_and_heals),
        cmocka_unit_test(test_down_raised_during_up_is_told_after_it_to_every_channel),
        cmocka_unit_test(test_a_full_link_queue_refuses_sends_until_it_drains),
        cmocka_unit_test(test_join_and_churn_1000_nodes),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed)
        printf("sim: failing seed %llu: VV_SIM_SEED=%llu %s\n", (unsigned long long)seed,
               (unsigned long long)seed, "sim_test_sim");
    return failed;
}
