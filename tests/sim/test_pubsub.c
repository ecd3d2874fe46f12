/*
 * The pubsub router (vivim/pubsub.h) on a simulated network: every node runs the daemon's
 * connection manager and the router, joins one topic, and a few nodes publish. Checked:
 * every message reaches every subscriber exactly once, also after a fifth of the nodes
 * crash at once; delivery times stay within a few round trips; messages of 512 bytes, which
 * lazy push sends in full over two mesh links per node and announces over the others, arrive
 * with at most 2 duplicates per delivery (about 1 measured); a seed replays to the same
 * trace. A failing run prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "sim_test.h"
#include "vivim/connmgr.h"
#include "vivim/pubsub.h"

static uint64_t seed;
static size_t msg_bytes; /* of the scenario running; data[0] names the message */

#define MAXMSG 64
static const char TOPIC[] = "network:announce";
#define TOPIC_LEN (sizeof(TOPIC) - 1)

struct ps_node {
    struct vv_sim *sim;
    struct vv_pubsub *ps;
    uint32_t index;
    uint32_t got[MAXMSG]; /* deliveries of message i */
};

/* When each message was published (ms), and the latest first delivery of each. */
static uint64_t published_at[MAXMSG];
static uint64_t lat_sum, lat_max, lat_n;
static uint32_t lat_hist[64]; /* 50 ms buckets */

static void deliver(void *arg, const struct vv_pubsub_msg *m, const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    (void)id;
    struct ps_node *n = arg;
    if (m->data_len != msg_bytes || m->data[0] >= MAXMSG)
        return;
    uint32_t k = m->data[0];
    if (n->got[k]++ == 0) {
        uint64_t lat = vv_sim_now_ms(n->sim) - published_at[k];
        lat_sum += lat;
        lat_n++;
        if (lat > lat_max)
            lat_max = lat;
        lat_hist[VV_MIN(lat / 50, (uint64_t)63)]++;
    }
}

static void *ps_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct ps_node *n = vv_xcalloc(1, sizeof(*n));
    n->sim = sim;
    n->index = index;
    static const struct vv_pubsub_cbs cbs = {deliver, NULL};
    n->ps = vv_pubsub_new(env, NULL, &cbs, n);
    /* Everyone joins through node 0, then learns the others by peer exchange. */
    if (index != 0)
        vv_connmgr_add_peer(vv_sim_connmgr(sim, index), vv_sim_node_id(sim, 0), "10.0.0.1:4747",
                            VV_PEER_BOOTSTRAP);
    assert_non_null(n->ps);
    assert_int_equal(vv_pubsub_join(n->ps, TOPIC, TOPIC_LEN), 0);
    return n;
}

static void ps_destroy(void *app, void *arg)
{
    (void)arg;
    struct ps_node *n = app;
    vv_pubsub_free(n->ps);
    vv_free(n);
}

struct publish_ev {
    uint32_t node;
    uint8_t k;
};
static struct publish_ev pubs[MAXMSG];

static void do_publish(struct vv_sim *sim, void *arg)
{
    struct publish_ev *e = arg;
    if (!vv_sim_node_up(sim, e->node))
        return;
    struct ps_node *n = vv_sim_app_of(sim, e->node);
    published_at[e->k] = vv_sim_now_ms(sim);
    uint8_t buf[1024] = {0};
    buf[0] = e->k;
    assert_int_equal(vv_pubsub_publish(n->ps, TOPIC, TOPIC_LEN, buf, msg_bytes, NULL, NULL), 0);
}

struct scenario {
    uint32_t nodes;
    uint32_t messages;
    bool crash; /* a fifth of the nodes crash at once before the second half */
    uint32_t msg_bytes;
    double max_dups; /* duplicates per delivery at most; 0: not checked */
};

static struct vv_sim *make_sim(uint64_t s, uint32_t n)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, s, n);
    cfg.connmgr = true;
    vv_connmgr_config_defaults(&cfg.connmgr_cfg);
    cfg.connmgr_cfg.low_water = 8;
    cfg.connmgr_cfg.high_water = 16;
    struct vv_sim_app app = {ps_create, ps_destroy, NULL};
    return vv_sim_new(&cfg, &app);
}

/* Deliveries of messages [from, to) at every node up now: each exactly once. */
static void assert_all_delivered(struct vv_sim *sim, uint32_t from, uint32_t to)
{
    uint32_t missing = 0, twice = 0;
    for (uint32_t i = 0; i < vv_sim_node_count(sim); i++) {
        if (!vv_sim_node_up(sim, i))
            continue;
        struct ps_node *n = vv_sim_app_of(sim, i);
        for (uint32_t k = from; k < to; k++) {
            missing += n->got[k] == 0;
            twice += n->got[k] > 1;
        }
    }
    if (missing)
        printf("missing deliveries: %u\n", missing);
    assert_int_equal(missing, 0);
    assert_int_equal(twice, 0);
}

static void gossip_network(struct vv_sim_run *run, void *arg)
{
    const struct scenario *sc = arg;
    msg_bytes = sc->msg_bytes;
    memset(published_at, 0, sizeof(published_at));
    lat_sum = lat_max = lat_n = 0;
    memset(lat_hist, 0, sizeof(lat_hist));
    struct vv_sim *sim = make_sim(run->seed, sc->nodes);
    uint32_t half = sc->messages / 2;
    /* Meshes form over 20 s (connections, subscriptions, heartbeats); then one message
     * every 200 ms from a node chosen by the seed. */
    for (uint32_t k = 0; k < sc->messages; k++) {
        pubs[k].node = (uint32_t)((run->seed * 7919u + k * 104729u) % sc->nodes);
        pubs[k].k = (uint8_t)k;
        uint64_t at = 20000 + 200 * (uint64_t)k + (k >= half && sc->crash ? 15000 : 0);
        vv_sim_at(sim, at, do_publish, &pubs[k]);
    }
    if (sc->crash) {
        for (uint32_t i = 0; i < sc->nodes; i++)
            if ((i * 2654435761u) % 5 == 0) {
                bool publishes = false;
                for (uint32_t k = half; k < sc->messages; k++)
                    publishes |= pubs[k].node == i;
                if (!publishes)
                    vv_sim_crash_at(sim, 20000 + 200 * (uint64_t)half + 1000, i);
            }
    }
    uint64_t end = 20000 + 200 * (uint64_t)sc->messages + (sc->crash ? 15000 : 0) + 10000;
    if (!vv_sim_run_to(run, sim, 20000 + 200 * (uint64_t)half + 500))
        goto out;
    assert_all_delivered(sim, 0, half);
    if (!vv_sim_run_to(run, sim, end))
        goto out;
    assert_all_delivered(sim, half, sc->messages);
    uint64_t p99 = 0, seen = 0;
    for (int b = 0; b < 64; b++) {
        seen += lat_hist[b];
        if (seen * 100 >= lat_n * 99) {
            p99 = (uint64_t)(b + 1) * 50;
            break;
        }
    }
    uint64_t dups = 0, delivered = 0;
    for (uint32_t i = 0; i < vv_sim_node_count(sim); i++)
        if (vv_sim_node_up(sim, i)) {
            const struct vv_pubsub_stats *s =
                vv_pubsub_stats(((struct ps_node *)vv_sim_app_of(sim, i))->ps);
            dups += s->duplicates;
            delivered += s->delivered;
        }
    double dups_per = delivered ? (double)dups / (double)delivered : 0.0;
    printf("pubsub %u nodes%s: %u messages of %u bytes, delivery mean %llu ms, p99 <= %llu ms, "
           "max %llu ms; %.2f duplicates per delivery\n",
           sc->nodes, sc->crash ? " (a fifth crashed)" : "", sc->messages, sc->msg_bytes,
           (unsigned long long)(lat_n ? lat_sum / lat_n : 0), (unsigned long long)p99,
           (unsigned long long)lat_max, dups_per);
    /* Round trips are 20 to 300 ms here: a handful of hops. */
    assert_true(lat_max < 3000);
    if (sc->max_dups > 0)
        assert_true(dups_per <= sc->max_dups);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_every_subscriber_gets_every_message_once(void **state)
{
    (void)state;
    struct scenario sc = {200, 20, false, 1, 0};
    VV_SIM_CHECK_DETERMINISM(gossip_network, &sc, seed, 0, false);
}

static void test_delivery_holds_when_a_fifth_crash(void **state)
{
    (void)state;
    struct scenario sc = {200, 20, true, 1, 0};
    VV_SIM_CHECK_DETERMINISM(gossip_network, &sc, seed, 0, false);
}

static void test_large_messages_arrive_once_with_few_duplicates(void **state)
{
    (void)state;
    /* Issue 12's goal is 1.5 duplicates per delivery from 512 bytes; about 1 is measured
     * here and at 1,000 nodes (docs/benchmarks.md). 2.0 leaves a margin for seeds. */
    struct scenario sc = {200, 40, false, 512, 2.0};
    VV_SIM_CHECK_DETERMINISM(gossip_network, &sc, seed, 0, false);
}

int main(void)
{
    seed = vv_sim_seed_from_env(20261206);
    printf("seed %llu\n", (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_subscriber_gets_every_message_once),
        cmocka_unit_test(test_delivery_holds_when_a_fifth_crash),
        cmocka_unit_test(test_large_messages_arrive_once_with_few_duplicates),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
