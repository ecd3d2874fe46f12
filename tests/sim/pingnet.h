/*
 * pingnet: a small protocol for exercising the simulator itself. Each node keeps `want`
 * connections to random peers (re-dialling when one drops), and every second pings one
 * connected peer with a random payload; the peer answers with a pong echoing it. Counters
 * per node let tests check delivery, reconnection and partitions. Used by the simulator's
 * tests and benchmark; real protocol modules have their own scenarios.
 */
#ifndef VV_PINGNET_H
#define VV_PINGNET_H

#include <stdint.h>
#include <string.h>

#include "sim.h"
#include "vivim/common.h"

#define PINGNET_INTERVAL_MS   1000
#define PINGNET_PAYLOAD_MAX   64
#define PINGNET_ROTATE_ONE_IN 20 /* ticks; a full node drops a random link this often */

struct pingnet_params {
    uint32_t want;   /* connections each node tries to keep */
    uint32_t *group; /* if set, count messages received across groups */
};

struct pingnet {
    struct vv_sim *sim;
    struct vv_env *env;
    const struct pingnet_params *p;
    uint32_t index;
    uint64_t timer;
    uint64_t ups, downs;
    uint64_t pings_sent, pongs_received, pongs_bad, pings_received, cross_group;
};

/* One dial per tick while below the target: simple, and it converges after churn. */
static void pingnet_fill(struct pingnet *pn)
{
    uint32_t n = vv_sim_node_count(pn->sim);
    if (vv_sim_links(pn->sim, pn->index) >= pn->p->want || n < 2)
        return;
    uint32_t target = (uint32_t)vv_env_random_below(pn->env, n);
    if (target != pn->index)
        vv_env_connect(pn->env, vv_sim_node_id(pn->sim, target), NULL);
}

static void pingnet_tick(struct vv_env *env, void *arg)
{
    struct pingnet *pn = arg;
    uint32_t links = vv_sim_links(pn->sim, pn->index);
    if (links == 0) {
        pingnet_fill(pn);
        return;
    }
    uint32_t peer = vv_sim_link_peer(pn->sim, pn->index, (uint32_t)vv_env_random_below(env, links));
    /* Peer rotation: now and then drop a connection so the overlay keeps mixing. */
    if (links >= pn->p->want && vv_env_random_below(env, PINGNET_ROTATE_ONE_IN) == 0) {
        vv_env_disconnect(env, vv_sim_node_id(pn->sim, peer));
        return;
    }
    pingnet_fill(pn);
    uint8_t msg[PINGNET_PAYLOAD_MAX];
    msg[0] = 'P';
    size_t len = 9 + vv_env_random_below(env, PINGNET_PAYLOAD_MAX - 9);
    vv_env_random(env, msg + 1, len - 1);
    if (vv_env_send(env, vv_sim_node_id(pn->sim, peer), VV_CHANNEL_TEST, msg, len) == 0)
        pn->pings_sent++;
}

static void pingnet_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES],
                         const uint8_t *data, size_t len, void *arg)
{
    struct pingnet *pn = arg;
    if (pn->p->group != NULL) {
        int64_t from = vv_sim_find(pn->sim, peer);
        if (from >= 0 && pn->p->group[from] != pn->p->group[pn->index])
            pn->cross_group++;
    }
    if (len >= 1 && data[0] == 'P') {
        pn->pings_received++;
        uint8_t reply[PINGNET_PAYLOAD_MAX];
        memcpy(reply, data, len);
        reply[0] = 'Q';
        vv_env_send(env, peer, VV_CHANNEL_TEST, reply, len);
    } else if (len >= 9 && data[0] == 'Q') {
        pn->pongs_received++;
    } else {
        pn->pongs_bad++;
    }
}

static void pingnet_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up,
                         void *arg)
{
    struct pingnet *pn = arg;
    (void)env;
    (void)peer;
    if (up)
        pn->ups++;
    else
        pn->downs++;
}

static void *pingnet_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    struct pingnet *pn = vv_xcalloc(1, sizeof(*pn));
    pn->sim = sim;
    pn->env = env;
    pn->p = arg;
    pn->index = index;
    vv_env_set_channel(env, VV_CHANNEL_TEST, pingnet_recv, pingnet_peer, pn);
    /* Spread the first ticks so that 10,000 nodes do not all fire at the same instant. */
    uint64_t first = vv_env_random_below(env, PINGNET_INTERVAL_MS);
    pn->timer = vv_env_timer_start(env, first, PINGNET_INTERVAL_MS, pingnet_tick, pn);
    return pn;
}

static void pingnet_destroy(void *app, void *arg)
{
    (void)arg;
    vv_free(app);
}

#endif
