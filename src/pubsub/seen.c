/*
 * The seen cache (pubsub_core.h): message IDs with a TTL, in an expiring ID set whose order
 * of insertion is the order of expiry (every ID gets the same TTL on a monotonic clock), so
 * expiry pops from the old end in O(1) per ID and can be sliced to any amount of work.
 */
#include "pubsub/pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/pubsub_core.h"

struct vv_pubsub_seen {
    uint64_t ttl_ms;
    struct vv__ps_idset set;
};

void vv_pubsub_seen_new(uint64_t ttl_ms, uint32_t max_entries, struct vv_pubsub_seen **out)
{
    struct vv_pubsub_seen *s = vv_xcalloc(1, sizeof(*s));
    s->ttl_ms = ttl_ms;
    vv__ps_idset_init(&s->set, VV_MIN(max_entries, VV__PS_NIL - 1));
    *out = s;
}

void vv_pubsub_seen_free(struct vv_pubsub_seen *s)
{
    if (s == NULL)
        return;
    vv__ps_idset_free(&s->set);
    vv_free(s);
}

int vv_pubsub_seen_add(struct vv_pubsub_seen *s, const uint8_t id[VV_PUBSUB_ID_BYTES], uint64_t now)
{
    uint32_t i = vv__ps_idset_find(&s->set, id);
    if (i != VV__PS_NIL) {
        if (s->set.e[i].expires > now)
            return VV_EEXIST;
        /* Expired but not swept yet: it counts as new, and moves to the new end so the list
         * stays in expiry order. */
        vv__ps_idset_remove(&s->set, i);
        s->set.expired++;
    }
    vv__ps_idset_add(&s->set, id, now + s->ttl_ms);
    return 0;
}

bool vv_pubsub_seen_has(const struct vv_pubsub_seen *s, const uint8_t id[VV_PUBSUB_ID_BYTES],
                        uint64_t now)
{
    uint32_t i = vv__ps_idset_find(&s->set, id);
    return i != VV__PS_NIL && s->set.e[i].expires > now;
}

void vv_pubsub_seen_remove(struct vv_pubsub_seen *s, const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    uint32_t i = vv__ps_idset_find(&s->set, id);
    if (i != VV__PS_NIL)
        vv__ps_idset_remove(&s->set, i);
}

uint32_t vv_pubsub_seen_sweep(struct vv_pubsub_seen *s, uint64_t now, uint32_t max_work)
{
    return vv__ps_idset_expire(&s->set, now, max_work);
}

uint32_t vv_pubsub_seen_count(const struct vv_pubsub_seen *s)
{
    return s->set.n;
}

uint64_t vv_pubsub_seen_evicted(const struct vv_pubsub_seen *s)
{
    return s->set.evicted;
}
