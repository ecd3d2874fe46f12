/*
 * The message cache (pubsub_core.h): the frames of the last history_length heartbeats.
 *
 * Entries are kept in one list in the order they were put, each stamped with the window
 * (heartbeat number) it was put in. Windows are therefore contiguous runs of that list:
 * shift drops entries from the old end while their window is history_length behind, gossip
 * walks from the new end while the window is within gossip_length, and the byte bound
 * drops from the old end too. A hash index on the ID answers IWANT.
 */
#include <string.h>

#include "pubsub/pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/keyed_hash.h"
#include "vivim/pubsub_core.h"

struct entry {
    uint8_t id[VV_PUBSUB_ID_BYTES];
    uint64_t h;
    uint64_t window;
    uint32_t prev, next; /* towards older, newer; free entries chain through next */
    char *topic;
    size_t topic_len;
    struct vv_pubsub_rbuf *frame;
};

struct vv_pubsub_mcache {
    struct vv_pubsub_mcache_config cfg;
    struct entry *e;
    uint32_t cap, n, oldest, newest, free_list;
    uint64_t window; /* the current one */
    size_t bytes;
    uint64_t evicted, expired;
    struct vv__ps_map map;
};

struct vv_pubsub_rbuf *vv_pubsub_rbuf_new(const void *bytes, size_t len)
{
    struct vv_pubsub_rbuf *b = vv_xmalloc(sizeof(*b) + len);
    b->refs = 1;
    b->len = len;
    if (len)
        memcpy(b->bytes, bytes, len);
    return b;
}

struct vv_pubsub_rbuf *vv_pubsub_rbuf_ref(struct vv_pubsub_rbuf *b)
{
    b->refs++;
    return b;
}

void vv_pubsub_rbuf_unref(struct vv_pubsub_rbuf *b)
{
    if (b && --b->refs == 0)
        vv_free(b);
}

void vv_pubsub_mcache_config_defaults(struct vv_pubsub_mcache_config *cfg)
{
    cfg->history_length = 5;
    cfg->gossip_length = 3;
    /* 5 heartbeats at 20,000 messages/s of 256 bytes is 25 MB of frames; 64 MiB leaves room
     * for larger messages at lower rates. */
    cfg->max_bytes = 64u << 20;
    cfg->max_entries = 200000;
}

static size_t entry_bytes(const struct entry *x)
{
    return sizeof(*x) + x->topic_len + x->frame->len;
}

static bool id_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub_mcache *mc = ctx;
    return memcmp(mc->e[v].id, key, VV_PUBSUB_ID_BYTES) == 0;
}

int vv_pubsub_mcache_new(const struct vv_pubsub_mcache_config *cfg, struct vv_pubsub_mcache **out)
{
    if (cfg->history_length == 0 || cfg->gossip_length > cfg->history_length ||
        cfg->max_entries == 0 || cfg->max_entries >= VV__PS_NIL)
        return VV_EINVAL;
    struct vv_pubsub_mcache *mc = vv_xcalloc(1, sizeof(*mc));
    mc->cfg = *cfg;
    mc->oldest = mc->newest = mc->free_list = VV__PS_NIL;
    vv__ps_map_init(&mc->map);
    *out = mc;
    return 0;
}

static void drop_oldest(struct vv_pubsub_mcache *mc)
{
    uint32_t i = mc->oldest;
    struct entry *x = &mc->e[i];
    vv__ps_map_remove(&mc->map, x->h, i);
    mc->bytes -= entry_bytes(x);
    vv_free(x->topic);
    vv_pubsub_rbuf_unref(x->frame);
    x->frame = NULL;
    mc->oldest = x->next;
    if (mc->oldest != VV__PS_NIL)
        mc->e[mc->oldest].prev = VV__PS_NIL;
    else
        mc->newest = VV__PS_NIL;
    x->next = mc->free_list;
    mc->free_list = i;
    mc->n--;
}

void vv_pubsub_mcache_free(struct vv_pubsub_mcache *mc)
{
    if (mc == NULL)
        return;
    while (mc->oldest != VV__PS_NIL)
        drop_oldest(mc);
    vv_free(mc->e);
    vv__ps_map_free(&mc->map);
    vv_free(mc);
}

int vv_pubsub_mcache_put(struct vv_pubsub_mcache *mc, const uint8_t id[VV_PUBSUB_ID_BYTES],
                         const char *topic, size_t topic_len, struct vv_pubsub_rbuf *frame)
{
    uint64_t h = vv_keyed_hash64(id, VV_PUBSUB_ID_BYTES);
    if (vv__ps_map_find(&mc->map, h, id_eq, mc, id) != VV__PS_NIL)
        return VV_EEXIST;
    size_t need = sizeof(struct entry) + topic_len + frame->len;
    if (need > mc->cfg.max_bytes)
        return VV_ELIMIT;
    while (mc->n > 0 && (mc->bytes + need > mc->cfg.max_bytes || mc->n >= mc->cfg.max_entries)) {
        drop_oldest(mc);
        mc->evicted++;
    }
    if (mc->free_list == VV__PS_NIL) {
        uint32_t nc = mc->cap ? mc->cap * 2 : 64;
        if (nc > mc->cfg.max_entries)
            nc = mc->cfg.max_entries;
        mc->e = vv_xrealloc(mc->e, (size_t)nc * sizeof(*mc->e));
        for (uint32_t k = nc; k-- > mc->cap;) {
            mc->e[k].next = mc->free_list;
            mc->free_list = k;
        }
        mc->cap = nc;
    }
    uint32_t i = mc->free_list;
    struct entry *x = &mc->e[i];
    mc->free_list = x->next;
    memcpy(x->id, id, VV_PUBSUB_ID_BYTES);
    x->h = h;
    x->window = mc->window;
    x->topic = vv_xmalloc(topic_len ? topic_len : 1);
    memcpy(x->topic, topic, topic_len);
    x->topic_len = topic_len;
    x->frame = vv_pubsub_rbuf_ref(frame);
    x->prev = mc->newest;
    x->next = VV__PS_NIL;
    if (mc->newest != VV__PS_NIL)
        mc->e[mc->newest].next = i;
    else
        mc->oldest = i;
    mc->newest = i;
    vv__ps_map_insert(&mc->map, h, i);
    mc->n++;
    mc->bytes += need;
    return 0;
}

struct vv_pubsub_rbuf *vv_pubsub_mcache_get(const struct vv_pubsub_mcache *mc,
                                            const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    uint32_t i = vv__ps_map_find(&mc->map, vv_keyed_hash64(id, VV_PUBSUB_ID_BYTES), id_eq, mc, id);
    return i == VV__PS_NIL ? NULL : mc->e[i].frame;
}

uint32_t vv_pubsub_mcache_gossip_ids(const struct vv_pubsub_mcache *mc, const char *topic,
                                     size_t topic_len, uint8_t (*out)[VV_PUBSUB_ID_BYTES],
                                     uint32_t cap)
{
    uint32_t k = 0;
    for (uint32_t i = mc->newest; i != VV__PS_NIL && k < cap; i = mc->e[i].prev) {
        const struct entry *x = &mc->e[i];
        if (mc->window - x->window >= mc->cfg.gossip_length)
            break;
        if (x->topic_len == topic_len && memcmp(x->topic, topic, topic_len) == 0)
            memcpy(out[k++], x->id, VV_PUBSUB_ID_BYTES);
    }
    return k;
}

void vv_pubsub_mcache_shift(struct vv_pubsub_mcache *mc)
{
    mc->window++;
    while (mc->oldest != VV__PS_NIL &&
           mc->window - mc->e[mc->oldest].window >= mc->cfg.history_length) {
        drop_oldest(mc);
        mc->expired++;
    }
}

void vv_pubsub_mcache_stats(const struct vv_pubsub_mcache *mc, struct vv_pubsub_mcache_stats *st)
{
    st->entries = mc->n;
    st->bytes = mc->bytes;
    st->evicted = mc->evicted;
    st->expired = mc->expired;
}
