/*
 * The DHT node (vivim/dht.h) on the simulator (tests/sim/dhtnet.h: 4 regions, 20 to 200 ms
 * round trips): N nodes join through the datagram addresses of a few bootstrap nodes, each
 * proving its ID by signed PONG before it enters a table; every routing table fills;
 * FIND_NODE lookups from random nodes for random IDs find the closest live node (checked
 * against a brute-force search over the live nodes); nodes publish values and provider
 * records, and GET / GET_PROVIDERS lookups from random other nodes find every one; after 30%
 * of the nodes crash at once, and then after 50% are down, lookups still find the closest
 * live node and >= 99.9% of the records whose publisher is alive (with 200 lookups a batch:
 * all of them). Hops, modelled time to the first result and to completion, and queries per
 * lookup are printed. Each scenario runs twice with one seed and must give one trace hash;
 * VV_SIM_SEED=<seed> replays a run. 10,000 nodes, churn and attackers: long_dht.c.
 */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "sim_test.h"
#include "dhtnet.h"

/* 1,000 nodes (long_dht.c with VV_DHT_LONG_NODES=1000, and bench_sim_dht) take about 4 minutes
 * of wall time per run under ASan on the 2-core CI machine: the join costs a signed PONG and
 * its check per proven contact (Ed25519 is 45% of a Release run's CPU here), and every node
 * proves about 130. 200 nodes keep this test near 30 s of CPU under ASan. */
#define N_NODES        200
#define N_BOOTSTRAP    4
#define JOIN_SPREAD    20  /* ms between two nodes' joins */
#define N_LOOKUPS      200 /* per phase */
#define LOOKUP_GAP_MS  50
#define SETTLE_MS      60000 /* after the last join: self-lookups and bucket refreshes */
#define N_RECORDS      200   /* published: values and provider records, half each */
#define PUBLISH_GAP_MS 50

static uint64_t seed;

struct result {
    bool done, ok;
    uint32_t hops;
    uint64_t ms;
};

struct world {
    struct vv_sim *sim;
    struct result res[N_LOOKUPS];
    uint8_t target[N_LOOKUPS][VV_DHT_ID_BYTES];
    uint8_t want[N_LOOKUPS][VV_DHT_ID_BYTES];
};

static struct world *world;

static void found(void *arg, const struct vv_dht_find_result *r)
{
    struct result *res = arg;
    res->done = true;
    size_t i = (size_t)(res - world->res);
    res->ok = r->status == 0 && r->n > 0 &&
              memcmp(r->closest[0].id, world->want[i], VV_DHT_ID_BYTES) == 0;
    res->hops = r->hops;
    res->ms = r->elapsed_ms;
}

/* The live node closest to target other than the one looking (a lookup never returns its
 * own node), by brute force. */
static void closest_live(const uint8_t *target, uint32_t origin, uint8_t *out)
{
    const uint8_t *best = NULL;
    for (uint32_t i = 0; i < vv_sim_node_count(world->sim); i++) {
        if (i == origin || !vv_sim_node_up(world->sim, i))
            continue;
        const uint8_t *id = vv_sim_node_id(world->sim, i);
        if (best == NULL || vv_dht_distance_cmp(target, id, best) < 0)
            best = id;
    }
    memcpy(out, best, VV_DHT_ID_BYTES);
}

static uint32_t random_live(void)
{
    for (;;) {
        uint32_t i = (uint32_t)(dhtnet_rand() % N_NODES);
        if (vv_sim_node_up(world->sim, i))
            return i;
    }
}

static void start_lookup(struct vv_sim *sim, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    uint32_t origin = random_live();
    struct dhtnet_app *a = vv_sim_app_of(sim, origin);
    for (size_t b = 0; b < VV_DHT_ID_BYTES; b += 8) {
        uint64_t r = dhtnet_rand();
        memcpy(world->target[i] + b, &r, 8);
    }
    closest_live(world->target[i], origin, world->want[i]);
    assert_int_equal(vv_dht_node_find_node(a->dht, world->target[i], found, &world->res[i]), 0);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Runs N_LOOKUPS lookups from t; returns how many found the closest live node. */
static uint32_t lookups(struct vv_sim_run *run, struct vv_sim *sim, uint64_t t, const char *phase,
                        bool *stopped)
{
    memset(world->res, 0, sizeof(world->res));
    for (size_t i = 0; i < N_LOOKUPS; i++)
        vv_sim_at(sim, t + i * LOOKUP_GAP_MS, start_lookup, (void *)(uintptr_t)i);
    if (!vv_sim_run_to(run, sim, t + N_LOOKUPS * LOOKUP_GAP_MS + 30000)) {
        *stopped = true;
        return 0;
    }
    uint64_t hops[N_LOOKUPS], ms[N_LOOKUPS];
    uint32_t ok = 0, done = 0;
    for (size_t i = 0; i < N_LOOKUPS; i++) {
        done += world->res[i].done;
        ok += world->res[i].ok;
        hops[i] = world->res[i].hops;
        ms[i] = world->res[i].ms;
    }
    qsort(hops, N_LOOKUPS, sizeof(hops[0]), cmp_u64);
    qsort(ms, N_LOOKUPS, sizeof(ms[0]), cmp_u64);
    size_t p99 = N_LOOKUPS * 99 / 100;
    printf("%s: %u/%u lookups found the closest live node (%u ended); hops median %llu p99 "
           "%llu max %llu; modelled ms median %llu p99 %llu\n",
           phase, ok, N_LOOKUPS, done, (unsigned long long)hops[N_LOOKUPS / 2],
           (unsigned long long)hops[p99], (unsigned long long)hops[N_LOOKUPS - 1],
           (unsigned long long)ms[N_LOOKUPS / 2], (unsigned long long)ms[p99]);
    assert_int_equal(done, N_LOOKUPS);
    return ok;
}

/* Record lookups from t: GET and GET_PROVIDERS for stored records whose publisher is up;
 * returns how many found the record (>= 99.9% of them asserted). */
static uint32_t record_lookups(struct vv_sim_run *run, uint64_t t, const char *phase, bool *stopped)
{
    dhtnet_lookups(t, N_LOOKUPS, LOOKUP_GAP_MS);
    if (!vv_sim_run_to(run, dhtnet->sim, t + N_LOOKUPS * LOOKUP_GAP_MS + 30000)) {
        *stopped = true;
        return 0;
    }
    struct dhtnet_batch b = dhtnet_batch(phase);
    assert_int_equal(b.done, N_LOOKUPS);
    /* >= 99.9%: with 200 lookups, every one. */
    assert_true((uint64_t)b.ok * 1000 >= (uint64_t)N_LOOKUPS * 999);
    return b.ok;
}

static void dht_network(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    const struct dhtnet_params p = {
        .n_nodes = N_NODES, .n_bootstrap = N_BOOTSTRAP, .join_spread_ms = JOIN_SPREAD};
    world = vv_xcalloc(1, sizeof(*world));
    struct vv_sim *sim = world->sim = dhtnet_new(&p, run->seed);
    uint64_t t = (uint64_t)N_NODES * JOIN_SPREAD + SETTLE_MS;
    bool stopped = false;
    if (!vv_sim_run_to(run, sim, t))
        goto out;

    /* Every routing table filled: at least one bucket's worth (k) of proven contacts. */
    size_t min_size = SIZE_MAX, sum = 0;
    for (uint32_t i = 0; i < N_NODES; i++) {
        size_t n = vv_dht_rt_size(vv_dht_node_table(dhtnet_dht(i)));
        min_size = VV_MIN(min_size, n);
        sum += n;
    }
    printf("routing tables: min %zu, mean %.1f contacts\n", min_size, (double)sum / N_NODES);
    assert_true(min_size >= VV_DHT_K);

    uint32_t ok = lookups(run, sim, t, "find_node, all up", &stopped);
    if (stopped)
        goto out;
    assert_int_equal(ok, N_LOOKUPS);

    /* Values and provider records, half each, from random nodes: every one stored. */
    t = vv_sim_now_ms(sim);
    dhtnet_publish(t, N_RECORDS, PUBLISH_GAP_MS);
    t += N_RECORDS * PUBLISH_GAP_MS + 30000;
    if (!vv_sim_run_to(run, sim, t))
        goto out;
    printf("publish: %u/%u records stored\n", dhtnet_stored_count(), N_RECORDS);
    assert_int_equal(dhtnet_stored_count(), N_RECORDS);
    record_lookups(run, t, "records, all up", &stopped);
    if (stopped)
        goto out;

    /* 30% crash at once; the survivors' tables still name them. Then 50% are down. */
    static const struct {
        uint32_t pct;
        const char *find, *get;
    } phases[] = {{30, "find_node, 30% crashed", "records, 30% crashed"},
                  {50, "find_node, 50% crashed", "records, 50% crashed"}};
    for (size_t ph = 0; ph < sizeof(phases) / sizeof(phases[0]); ph++) {
        t = vv_sim_now_ms(sim) + 1000;
        dhtnet_crash_until(t, N_NODES * phases[ph].pct / 100);
        ok = lookups(run, sim, t + 1000, phases[ph].find, &stopped);
        if (stopped)
            goto out;
        assert_true(ok >= N_LOOKUPS * 99 / 100);
        record_lookups(run, vv_sim_now_ms(sim) + 1000, phases[ph].get, &stopped);
        if (stopped)
            goto out;
    }
out:
    vv_sim_run_done(run, sim);
    dhtnet_free();
    vv_free(world);
    world = NULL;
}

static void test_lookups_find_the_closest_node_and_survive_30pct_crash(void **state)
{
    (void)state;
    /* The replay stops after the tables filled: the lookups are the expensive part. */
    VV_SIM_CHECK_DETERMINISM(dht_network, NULL, seed, (uint64_t)N_NODES * JOIN_SPREAD + SETTLE_MS,
                             false);
}

int main(void)
{
    seed = vv_sim_seed_from_env(20261206);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookups_find_the_closest_node_and_survive_30pct_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
