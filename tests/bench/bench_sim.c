/*
 * Simulator speed: 10,000 nodes of pingnet (8 connections each, one ping a second, peer
 * rotation) for 10 simulated minutes. Reports wall time, events per second and
 * node-minutes simulated per wall second. The bar from the peer-network issue: a 10k-node,
 * 10-minute run in under a minute of wall time.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pingnet.h"
#include "sim.h"

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    uint32_t nodes = argc > 1 ? (uint32_t)atoi(argv[1]) : 10000;
    uint64_t minutes = argc > 2 ? (uint64_t)atoi(argv[2]) : 10;
    struct pingnet_params p = {.want = 8};
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, vv_sim_seed_from_env(1), nodes);
    struct vv_sim_app app = {pingnet_create, pingnet_destroy, &p};

    double t0 = wall_s();
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    double t1 = wall_s();
    vv_sim_run_until(sim, minutes * 60 * 1000);
    double t2 = wall_s();
    vv_sim_report(sim, stdout);
    double run = t2 - t1;
    printf("bench_sim: %u nodes x %llu simulated min: setup %.2f s, run %.2f s wall, "
           "%.2f M events/s, %.0f node-minutes per wall second\n",
           nodes, (unsigned long long)minutes, t1 - t0, run, vv_sim_events(sim) / run / 1e6,
           nodes * (double)minutes / run);
    vv_sim_free(sim);
    return 0;
}
