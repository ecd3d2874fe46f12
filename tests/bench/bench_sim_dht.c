/*
 * DHT lookups in the simulator (tests/sim/dhtnet.h), issue 11's figures: N nodes (argv[1],
 * default 1,000 then 10,000) in 4 regions of 20 to 200 ms round trips join, publish values
 * and provider records, and run GET / GET_PROVIDERS lookups for them from random nodes:
 * hops (median, p99), modelled time to the first value or provider and to completion,
 * datagrams and bytes per lookup; then again with 30% of the nodes crashed at once. Also the
 * heap per node (mallinfo2 around the network's creation and join) and wall times.
 */
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sim.h"
#include "dhtnet.h"

#define JOIN_SPREAD_MS 10
#define SETTLE_MS      120000
#define LOOKUPS        1000
#define LOOKUP_GAP_MS  20
#define LOOKUP_TAIL_MS 30000

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Lookups from t; datagrams and bytes per lookup net of the background measured over an
 * equally long quiet window just before. Returns the time after the batch. */
static uint64_t batch(uint64_t t, const char *phase)
{
    struct vv_sim *sim = dhtnet->sim;
    uint64_t span = (uint64_t)LOOKUPS * LOOKUP_GAP_MS + LOOKUP_TAIL_MS;
    vv_sim_run_until(sim, t);
    struct vv_sim_counters c1 = *vv_sim_totals(sim);
    /* Background: the same span without lookups. */
    vv_sim_run_until(sim, t + span);
    struct vv_sim_counters c2 = *vv_sim_totals(sim);
    t += span;
    uint64_t pings0 = dhtnet->rpc_out[0];
    double w0 = wall_s();
    dhtnet_lookups(t, LOOKUPS, LOOKUP_GAP_MS);
    vv_sim_run_until(sim, t + span);
    double w1 = wall_s();
    struct vv_sim_counters c3 = *vv_sim_totals(sim);
    struct dhtnet_batch b = dhtnet_batch(phase);
    double dg =
        ((double)(c3.dgrams_sent - c2.dgrams_sent) - (double)(c2.dgrams_sent - c1.dgrams_sent)) /
        LOOKUPS;
    double by =
        ((double)(c3.bytes_sent - c2.bytes_sent) - (double)(c2.bytes_sent - c1.bytes_sent)) /
        LOOKUPS;
    printf("%s: datagrams per lookup %.1f (queries %.1f, answers %.1f, verification pings sent "
           "by any node %.1f), bytes per lookup %.0f (net of background: %.1f datagrams/s); "
           "success %.2f%%; %.1f s wall\n",
           phase, dg, b.queries_mean, b.answered_mean,
           (double)(dhtnet->rpc_out[0] - pings0) / LOOKUPS, by,
           (double)(c2.dgrams_sent - c1.dgrams_sent) * 1000.0 / (double)span, 100.0 * b.ok / b.n,
           w1 - w0);
    fflush(stdout);
    return t + span;
}

static void run(uint32_t n, uint32_t alpha)
{
    struct dhtnet_params p = {
        .n_nodes = n, .n_bootstrap = 4, .join_spread_ms = JOIN_SPREAD_MS, .alpha = alpha};
    printf("### %u nodes%s\n", n, alpha ? " (alpha set)" : "");
    struct mallinfo2 m0 = mallinfo2();
    double w0 = wall_s();
    struct vv_sim *sim = dhtnet_new(&p, vv_sim_seed_from_env(20261206));
    uint64_t t = (uint64_t)n * JOIN_SPREAD_MS + SETTLE_MS;
    vv_sim_run_until(sim, t);
    double w1 = wall_s();
    struct mallinfo2 m1 = mallinfo2();
    size_t entries = 0;
    for (uint32_t i = 0; i < n; i++)
        entries += vv_dht_rt_size(vv_dht_node_table(dhtnet_dht(i)));
    /* Both arenas and mmap'd chunks: allocations of 128 KiB and more (a node's verified cache)
     * are mmap'd by glibc and not in uordblks. */
    double heap = (double)(m1.uordblks + m1.hblkhd) - (double)(m0.uordblks + m0.hblkhd);
    printf("join: %u nodes joined and settled (%llu s simulated) in %.1f s wall; routing "
           "entries per node %.1f; heap per node %.0f bytes (whole simulator included), %.0f "
           "bytes of heap per routing entry at most\n",
           n, (unsigned long long)t / 1000, w1 - w0, (double)entries / n, heap / n,
           heap / (double)entries);
    uint32_t records = 200;
    dhtnet_publish(t, records, 50);
    t += records * 50 + 30000;
    vv_sim_run_until(sim, t);
    printf("publish: %u/%u records stored\n", dhtnet_stored_count(), records);
    t = batch(t, "all up");
    dhtnet_crash_until(t + 1000, n * 3 / 10);
    t = batch(t + 2000, "30% crashed");
    double w2 = wall_s();
    printf("total %.1f s wall, %llu events\n", w2 - w0, (unsigned long long)vv_sim_events(sim));
    dhtnet_free();
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    /* bench_sim_dht [N [alpha]]: one size, and another alpha than the default (3). */
    if (argc > 1) {
        run((uint32_t)atoi(argv[1]), argc > 2 ? (uint32_t)atoi(argv[2]) : 0);
        return 0;
    }
    run(1000, 0);
    run(10000, 0);
    return 0;
}
