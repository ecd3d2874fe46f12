/* Fuzz target: the pubsub core's state driven by a byte string read as a list of operations
 * (what a sequence of hostile peers could make the router do): message cache puts, gets and
 * shifts; seen-cache adds, removals and sweeps; backoff adds, GRAFTs and sweeps; IDONTWANT
 * adds and heartbeats; score events, decay and disconnections; choke selection over links whose
 * credits the input sets. Small bounds make every eviction path run. Checks the bounds hold,
 * scores stay finite and a choke selection leaves exactly min(unchoked, links) links
 * unchoked; ASan checks the rest, and everything is freed per input. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/pubsub_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MC_BYTES   4096
#define MC_ENTRIES 24
#define SEEN_MAX   32
#define BO_MAX     16
#define PEERS_MAX  8

static const char *topics[] = {"a", "b", "circle:1", "user:x"};

static uint32_t rand_from(void *arg, uint32_t bound)
{
    return (uint32_t)(*(const uint8_t *)arg % bound);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_pubsub_mcache_config mcfg = {5, 3, MC_BYTES, MC_ENTRIES};
    struct vv_pubsub_mcache *mc;
    if (vv_pubsub_mcache_new(&mcfg, &mc) != 0)
        abort();
    struct vv_pubsub_seen *seen;
    vv_pubsub_seen_new(100, SEEN_MAX, &seen);
    struct vv_pubsub_backoff_config bcfg = {1000, 100, BO_MAX};
    struct vv_pubsub_backoff *bo;
    vv_pubsub_backoff_new(&bcfg, &bo);
    struct vv_pubsub_idontwant_config icfg = {3, 5};
    struct vv_pubsub_idontwant *idw;
    vv_pubsub_idontwant_new(&icfg, &idw);
    struct vv_pubsub_score_params sp = {.topic_score_cap = 50,
                                        .app_specific_weight = 1,
                                        .ip_colocation_factor_weight = -1,
                                        .ip_colocation_factor_threshold = 1,
                                        .behaviour_penalty_weight = -1,
                                        .behaviour_penalty_threshold = 0,
                                        .behaviour_penalty_decay = 0.5,
                                        .decay_interval_ms = 1000,
                                        .decay_to_zero = 0.01,
                                        .retain_score_ms = 500,
                                        .max_peers = PEERS_MAX,
                                        .max_topics = 4};
    struct vv_pubsub_score *sc;
    if (vv_pubsub_score_new(&sp, &sc) != 0)
        abort();
    struct vv_pubsub_topic_score_params tp = {.topic_weight = 1,
                                              .time_in_mesh_weight = 0.1,
                                              .time_in_mesh_quantum_ms = 10,
                                              .time_in_mesh_cap = 100,
                                              .first_message_deliveries_weight = 1,
                                              .first_message_deliveries_decay = 0.5,
                                              .first_message_deliveries_cap = 20,
                                              .mesh_message_deliveries_weight = -1,
                                              .mesh_message_deliveries_decay = 0.5,
                                              .mesh_message_deliveries_cap = 20,
                                              .mesh_message_deliveries_threshold = 3,
                                              .mesh_message_deliveries_window_ms = 10,
                                              .mesh_message_deliveries_activation_ms = 1000,
                                              .mesh_failure_penalty_weight = -1,
                                              .mesh_failure_penalty_decay = 0.5,
                                              .invalid_message_deliveries_weight = -1,
                                              .invalid_message_deliveries_decay = 0.5};
    for (int t = 0; t < 3; t++) /* topic 3 stays unscored */
        if (vv_pubsub_score_set_topic(sc, topics[t], strlen(topics[t]), &tp) != 0)
            abort();

    struct vv_pubsub_choke_link links[8] = {{0, false}};
    uint64_t now = 0;
    for (size_t i = 0; i + 3 <= size; i += 3) {
        uint8_t op = data[i], a = data[i + 1], b = data[i + 2];
        uint8_t id[VV_PUBSUB_ID_BYTES] = {0}, peer[VV_NODE_ID_BYTES] = {0}, ip[16] = {0};
        id[0] = a;
        peer[0] = a % 12;
        ip[15] = a % 3;
        const char *topic = topics[b % 4];
        size_t tl = strlen(topic);
        now += b % 50;
        switch (op % 16) {
        case 0: {
            static const uint8_t blob[MC_BYTES + 64];
            struct vv_pubsub_rbuf *f = vv_pubsub_rbuf_new(blob, (size_t)b * 8 % sizeof(blob));
            vv_pubsub_mcache_put(mc, id, topic, tl, f);
            vv_pubsub_rbuf_unref(f);
            break;
        }
        case 1:
            vv_pubsub_mcache_get(mc, id);
            break;
        case 2: {
            uint8_t out[8][VV_PUBSUB_ID_BYTES];
            if (vv_pubsub_mcache_gossip_ids(mc, topic, tl, out, 8) > 8)
                abort();
            vv_pubsub_mcache_shift(mc);
            break;
        }
        case 3:
            vv_pubsub_seen_add(seen, id, now);
            break;
        case 4:
            vv_pubsub_seen_remove(seen, id);
            break;
        case 5:
            vv_pubsub_seen_sweep(seen, now, b % 8);
            break;
        case 6:
            vv_pubsub_backoff_add(bo, peer, topic, tl, now, (uint64_t)b * 10);
            break;
        case 7: {
            uint32_t pen;
            int rc = vv_pubsub_backoff_on_graft(bo, peer, topic, tl, now, &pen);
            if ((rc == 0) != (pen == 0) || pen > 2)
                abort();
            vv_pubsub_backoff_sweep(bo, now, b % 4);
            break;
        }
        case 8:
            vv_pubsub_idontwant_add(idw, id);
            links[a % 8].credit = b / 16.0;
            break;
        case 9: {
            vv_pubsub_idontwant_heartbeat(idw);
            uint32_t n = a % 9, u = b % 4, open = 0;
            bool choked[8];
            vv_pubsub_choke_select(u, links, n, b & 4, rand_from, &a, choked);
            for (uint32_t k = 0; k < n; k++) {
                links[k].choked = choked[k];
                open += !choked[k];
            }
            if (open != (u == 0 || u > n ? n : u))
                abort();
            break;
        }
        case 10:
            vv_pubsub_score_add_peer(sc, peer, b & 1 ? ip : NULL, now);
            break;
        case 11:
            vv_pubsub_score_remove_peer(sc, peer, now);
            break;
        case 12:
            if (b & 1)
                vv_pubsub_score_graft(sc, peer, topic, tl, now);
            else
                vv_pubsub_score_prune(sc, peer, topic, tl, now);
            break;
        case 13:
            if (b % 3 == 0)
                vv_pubsub_score_first_delivery(sc, peer, topic, tl);
            else if (b % 3 == 1)
                vv_pubsub_score_near_first_delivery(sc, peer, topic, tl);
            else
                vv_pubsub_score_invalid(sc, peer, topic, tl);
            break;
        case 14:
            vv_pubsub_score_penalty(sc, peer, b % 4);
            vv_pubsub_score_set_app(sc, peer, (double)(int8_t)b);
            break;
        case 15:
            vv_pubsub_score_decay(sc, now);
            break;
        }
        struct vv_pubsub_mcache_stats st;
        vv_pubsub_mcache_stats(mc, &st);
        if (st.bytes > MC_BYTES || st.entries > MC_ENTRIES ||
            vv_pubsub_seen_count(seen) > SEEN_MAX || vv_pubsub_backoff_count(bo) > BO_MAX ||
            vv_pubsub_idontwant_count(idw) > 15 || vv_pubsub_score_count(sc) > PEERS_MAX ||
            !isfinite(vv_pubsub_score_get(sc, peer, now)))
            abort();
    }
    vv_pubsub_mcache_free(mc);
    vv_pubsub_seen_free(seen);
    vv_pubsub_backoff_free(bo);
    vv_pubsub_idontwant_free(idw);
    vv_pubsub_score_free(sc);
    return 0;
}
