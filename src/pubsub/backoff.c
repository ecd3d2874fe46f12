/*
 * The PRUNE backoff table (pubsub_core.h, GossipSub v1.1 "PRUNE Backoff and Peer Exchange").
 *
 * Entries (peer, topic, expiry) live in an array with a free list, indexed by a keyed hash
 * of peer and topic. Expired entries are taken out by a sliced sweep whose cursor walks the
 * array, or reused when the table is full. A peer that GRAFTs during its backoff is told how
 * much behaviour penalty it earned and its backoff is pushed out again.
 */
#include <string.h>

#include "pubsub/pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/keyed_hash.h"
#include "vivim/pubsub_core.h"

struct entry {
    uint8_t peer[VV_NODE_ID_BYTES];
    char *topic; /* NULL: a free entry */
    size_t topic_len;
    uint64_t h;
    uint64_t set_ms;     /* when the backoff was last set by a PRUNE */
    uint64_t expires_ms; /* no GRAFT before */
    uint32_t next_free;
};

struct vv_pubsub_backoff {
    struct vv_pubsub_backoff_config cfg;
    struct entry *e;
    uint32_t cap, n, free_list, cursor;
    uint64_t refused;
    struct vv__ps_map map;
};

struct key {
    const uint8_t *peer;
    const char *topic;
    size_t topic_len;
};

void vv_pubsub_backoff_config_defaults(struct vv_pubsub_backoff_config *cfg)
{
    cfg->prune_backoff_ms = 60000;
    cfg->graft_flood_ms = 10000;
    /* 10,000 peers with a few topics each in backoff at once. */
    cfg->max_entries = 65536;
}

void vv_pubsub_backoff_new(const struct vv_pubsub_backoff_config *cfg,
                           struct vv_pubsub_backoff **out)
{
    struct vv_pubsub_backoff *b = vv_xcalloc(1, sizeof(*b));
    b->cfg = *cfg;
    if (b->cfg.max_entries == 0 || b->cfg.max_entries >= VV__PS_NIL)
        b->cfg.max_entries = 65536;
    b->free_list = VV__PS_NIL;
    vv__ps_map_init(&b->map);
    *out = b;
}

void vv_pubsub_backoff_free(struct vv_pubsub_backoff *b)
{
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < b->cap; i++)
        vv_free(b->e[i].topic);
    vv_free(b->e);
    vv__ps_map_free(&b->map);
    vv_free(b);
}

static uint64_t key_hash(const uint8_t *peer, const char *topic, size_t topic_len)
{
    uint8_t buf[VV_NODE_ID_BYTES + VV_PUBSUB_MAX_TOPIC_BYTES];
    size_t tl = VV_MIN(topic_len, (size_t)VV_PUBSUB_MAX_TOPIC_BYTES);
    memcpy(buf, peer, VV_NODE_ID_BYTES);
    memcpy(buf + VV_NODE_ID_BYTES, topic, tl);
    return vv_keyed_hash64(buf, VV_NODE_ID_BYTES + tl);
}

static bool key_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub_backoff *b = ctx;
    const struct key *k = key;
    const struct entry *x = &b->e[v];
    return x->topic_len == k->topic_len && memcmp(x->peer, k->peer, VV_NODE_ID_BYTES) == 0 &&
           memcmp(x->topic, k->topic, k->topic_len) == 0;
}

static uint32_t find(const struct vv_pubsub_backoff *b, const uint8_t *peer, const char *topic,
                     size_t topic_len, uint64_t *h)
{
    struct key k = {peer, topic, topic_len};
    *h = key_hash(peer, topic, topic_len);
    return vv__ps_map_find(&b->map, *h, key_eq, b, &k);
}

static void remove_entry(struct vv_pubsub_backoff *b, uint32_t i)
{
    struct entry *x = &b->e[i];
    vv__ps_map_remove(&b->map, x->h, i);
    vv_free(x->topic);
    x->topic = NULL;
    x->next_free = b->free_list;
    b->free_list = i;
    b->n--;
}

int vv_pubsub_backoff_add(struct vv_pubsub_backoff *b, const uint8_t peer[VV_NODE_ID_BYTES],
                          const char *topic, size_t topic_len, uint64_t now, uint64_t backoff_ms)
{
    if (topic_len > VV_PUBSUB_MAX_TOPIC_BYTES)
        return VV_EINVAL;
    uint64_t expires = now + (backoff_ms ? backoff_ms : b->cfg.prune_backoff_ms);
    uint64_t h;
    uint32_t i = find(b, peer, topic, topic_len, &h);
    if (i != VV__PS_NIL) {
        struct entry *x = &b->e[i];
        x->set_ms = now;
        if (expires > x->expires_ms)
            x->expires_ms = expires;
        return 0;
    }
    if (b->n >= b->cfg.max_entries) {
        /* Full: make room from expired entries if there are any (a bounded sweep), and
         * refuse otherwise. Refusing is safe: a pair not backed off may GRAFT again, which
         * the mesh then treats like any GRAFT. */
        vv_pubsub_backoff_sweep(b, now, 16);
        if (b->n >= b->cfg.max_entries) {
            b->refused++;
            return VV_ELIMIT;
        }
    }
    if (b->free_list == VV__PS_NIL) {
        uint32_t nc = b->cap ? b->cap * 2 : 16;
        if (nc > b->cfg.max_entries)
            nc = b->cfg.max_entries;
        b->e = vv_xrealloc(b->e, (size_t)nc * sizeof(*b->e));
        for (uint32_t k = nc; k-- > b->cap;) {
            b->e[k].topic = NULL;
            b->e[k].next_free = b->free_list;
            b->free_list = k;
        }
        b->cap = nc;
    }
    i = b->free_list;
    struct entry *x = &b->e[i];
    b->free_list = x->next_free;
    memcpy(x->peer, peer, VV_NODE_ID_BYTES);
    x->topic = vv_xmalloc(topic_len ? topic_len : 1);
    memcpy(x->topic, topic, topic_len);
    x->topic_len = topic_len;
    x->h = h;
    x->set_ms = now;
    x->expires_ms = expires;
    vv__ps_map_insert(&b->map, h, i);
    b->n++;
    return 0;
}

uint64_t vv_pubsub_backoff_remaining(const struct vv_pubsub_backoff *b,
                                     const uint8_t peer[VV_NODE_ID_BYTES], const char *topic,
                                     size_t topic_len, uint64_t now)
{
    uint64_t h;
    uint32_t i = find(b, peer, topic, topic_len, &h);
    if (i == VV__PS_NIL || b->e[i].expires_ms <= now)
        return 0;
    return b->e[i].expires_ms - now;
}

bool vv_pubsub_backoff_active(const struct vv_pubsub_backoff *b,
                              const uint8_t peer[VV_NODE_ID_BYTES], const char *topic,
                              size_t topic_len, uint64_t now)
{
    return vv_pubsub_backoff_remaining(b, peer, topic, topic_len, now) > 0;
}

int vv_pubsub_backoff_on_graft(struct vv_pubsub_backoff *b, const uint8_t peer[VV_NODE_ID_BYTES],
                               const char *topic, size_t topic_len, uint64_t now, uint32_t *penalty)
{
    *penalty = 0;
    uint64_t h;
    uint32_t i = find(b, peer, topic, topic_len, &h);
    if (i == VV__PS_NIL || b->e[i].expires_ms <= now)
        return 0;
    struct entry *x = &b->e[i];
    /* GossipSub v1.1: a GRAFT during the backoff is a behaviour penalty; one right after
     * the PRUNE (within graft_flood_ms) looks like a flood and costs a second one. The
     * backoff is refreshed, so that grafting again and again never shortens it. */
    *penalty = 1;
    if (now < x->set_ms + b->cfg.graft_flood_ms)
        *penalty = 2;
    if (now + b->cfg.prune_backoff_ms > x->expires_ms)
        x->expires_ms = now + b->cfg.prune_backoff_ms;
    return VV_EPUBSUB_BACKOFF;
}

uint32_t vv_pubsub_backoff_sweep(struct vv_pubsub_backoff *b, uint64_t now, uint32_t max_work)
{
    uint32_t removed = 0;
    uint64_t looked = 0, budget = (uint64_t)max_work * 4;
    if (b->cap == 0)
        return 0;
    while (removed < max_work && looked < budget && looked < b->cap) {
        uint32_t i = b->cursor;
        b->cursor = (b->cursor + 1) % b->cap;
        looked++;
        if (b->e[i].topic != NULL && b->e[i].expires_ms <= now) {
            remove_entry(b, i);
            removed++;
        }
    }
    return removed;
}

uint32_t vv_pubsub_backoff_count(const struct vv_pubsub_backoff *b)
{
    return b->n;
}
