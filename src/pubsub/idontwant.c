/*
 * IDONTWANT sets (pubsub_core.h, GossipSub v1.2): per peer, the IDs it said it has. An
 * expiring ID set whose expiry is a heartbeat number; a quota per heartbeat bounds what a
 * peer can make us hold to max_per_heartbeat * ttl_heartbeats IDs.
 */
#include "pubsub/pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/pubsub_core.h"

struct vv_pubsub_idontwant {
    struct vv_pubsub_idontwant_config cfg;
    uint64_t heartbeat;
    uint32_t added_this_heartbeat;
    uint64_t refused;
    struct vv__ps_idset set;
};

void vv_pubsub_idontwant_config_defaults(struct vv_pubsub_idontwant_config *cfg)
{
    cfg->ttl_heartbeats = 3;
    /* A peer receiving 1,000 large messages a second would send that many; more than that
     * per heartbeat is more than IDONTWANT is for. */
    cfg->max_per_heartbeat = 1000;
}

void vv_pubsub_idontwant_new(const struct vv_pubsub_idontwant_config *cfg,
                             struct vv_pubsub_idontwant **out)
{
    struct vv_pubsub_idontwant *d = vv_xcalloc(1, sizeof(*d));
    d->cfg = *cfg;
    if (d->cfg.ttl_heartbeats == 0)
        d->cfg.ttl_heartbeats = 1;
    uint64_t max = (uint64_t)d->cfg.max_per_heartbeat * d->cfg.ttl_heartbeats;
    vv__ps_idset_init(&d->set, (uint32_t)VV_MIN(max, (uint64_t)VV__PS_NIL - 1));
    *out = d;
}

void vv_pubsub_idontwant_free(struct vv_pubsub_idontwant *d)
{
    if (d == NULL)
        return;
    vv__ps_idset_free(&d->set);
    vv_free(d);
}

int vv_pubsub_idontwant_add(struct vv_pubsub_idontwant *d, const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    if (vv__ps_idset_find(&d->set, id) != VV__PS_NIL)
        return VV_EEXIST;
    if (d->added_this_heartbeat >= d->cfg.max_per_heartbeat) {
        d->refused++;
        return VV_ELIMIT;
    }
    d->added_this_heartbeat++;
    /* Held through this heartbeat and ttl_heartbeats - 1 more. */
    vv__ps_idset_add(&d->set, id, d->heartbeat + d->cfg.ttl_heartbeats);
    return 0;
}

bool vv_pubsub_idontwant_has(const struct vv_pubsub_idontwant *d,
                             const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    return vv__ps_idset_find(&d->set, id) != VV__PS_NIL;
}

void vv_pubsub_idontwant_heartbeat(struct vv_pubsub_idontwant *d)
{
    d->heartbeat++;
    d->added_this_heartbeat = 0;
    vv__ps_idset_expire(&d->set, d->heartbeat, UINT32_MAX);
}

uint32_t vv_pubsub_idontwant_count(const struct vv_pubsub_idontwant *d)
{
    return d->set.n;
}

uint64_t vv_pubsub_idontwant_refused(const struct vv_pubsub_idontwant *d)
{
    return d->refused;
}
