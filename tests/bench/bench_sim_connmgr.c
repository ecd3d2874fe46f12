/*
 * The connection layer at scale on the simulator: 10,000 nodes running the connection
 * manager (low water 8, high water 16, keepalive, peer exchange), bootstrapping through one
 * node, with 10% of the nodes crashing at minute 3 and returning at minute 5, for 10
 * simulated minutes. Reports wall time, events/s, messages and bytes per node, and how
 * many nodes end below their low water.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sim.h"
#include "vivim/connmgr.h"
#include "vivim/log.h"

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = 8;
    cfg.high_water = 16;
    cfg.max_known_peers = 256;
    /* Numeric, as peer exchange requires: node i at 10.x.y.z with x.y.z = i + 1. */
    snprintf(cfg.self_address, sizeof(cfg.self_address), "10.%u.%u.%u:4747", (index + 1) >> 16,
             ((index + 1) >> 8) & 255, (index + 1) & 255);
    struct vv_connmgr *cm = vv_connmgr_new(env, &cfg);
    if (index != 0)
        vv_connmgr_add_peer(cm, vv_sim_node_id(sim, 0), "10.0.0.1:4747", VV_PEER_BOOTSTRAP);
    return cm;
}

static void destroy(void *app, void *arg)
{
    (void)arg;
    vv_connmgr_free(app);
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_WARN);
    uint32_t nodes = argc > 1 ? (uint32_t)atoi(argv[1]) : 10000;
    uint64_t minutes = argc > 2 ? (uint64_t)atoi(argv[2]) : 10;
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, vv_sim_seed_from_env(1), nodes);
    struct vv_sim_app app = {create, destroy, NULL};
    double t0 = wall_s();
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    for (uint32_t i = 1; i <= nodes / 10; i++) {
        vv_sim_crash_at(sim, 180000 + i, i * 10 - 1);
        vv_sim_restart_at(sim, 300000 + i, i * 10 - 1);
    }
    double t1 = wall_s();
    vv_sim_run_until(sim, minutes * 60 * 1000);
    double t2 = wall_s();
    uint32_t below = 0, max = 0;
    for (uint32_t i = 0; i < nodes; i++) {
        uint32_t c = vv_connmgr_connected_count(vv_sim_app_of(sim, i));
        below += c < 8;
        max = c > max ? c : max;
    }
    vv_sim_report(sim, stdout);
    double run = t2 - t1;
    printf("bench_sim_connmgr: %u nodes x %llu simulated min: setup %.2f s, run %.2f s wall, "
           "%.2f M events/s, %.0f node-minutes per wall second; at the end %u nodes below "
           "low water, max %u connections\n",
           nodes, (unsigned long long)minutes, t1 - t0, run, vv_sim_events(sim) / run / 1e6,
           nodes * (double)minutes / run, below, max);
    vv_sim_free(sim);
    return 0;
}
