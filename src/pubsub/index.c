/*
 * The pubsub core's hash index and expiring ID set (pubsub_internal.h).
 */
#include <string.h>

#include "pubsub/pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/keyed_hash.h"

#define MAP_MIN_SLOTS     16u
#define IDSET_MIN_ENTRIES 16u

void vv__ps_map_init(struct vv__ps_map *m)
{
    memset(m, 0, sizeof(*m));
}

void vv__ps_map_free(struct vv__ps_map *m)
{
    vv_free(m->h);
    vv_free(m->v);
    memset(m, 0, sizeof(*m));
}

uint32_t vv__ps_map_find(const struct vv__ps_map *m, uint64_t h, vv__ps_eq_fn eq, const void *ctx,
                         const void *key)
{
    if (m->v == NULL)
        return VV__PS_NIL;
    for (uint32_t i = (uint32_t)h & m->mask;; i = (i + 1) & m->mask) {
        if (m->v[i] == VV__PS_NIL)
            return VV__PS_NIL;
        if (m->h[i] == h && eq(ctx, m->v[i], key))
            return m->v[i];
    }
}

static void put(struct vv__ps_map *m, uint64_t h, uint32_t v)
{
    uint32_t i = (uint32_t)h & m->mask;
    while (m->v[i] != VV__PS_NIL)
        i = (i + 1) & m->mask;
    m->h[i] = h;
    m->v[i] = v;
}

void vv__ps_map_insert(struct vv__ps_map *m, uint64_t h, uint32_t v)
{
    uint32_t slots = m->v ? m->mask + 1 : 0;
    if ((m->n + 1) * 2 > slots) {
        uint32_t ns = slots ? slots * 2 : MAP_MIN_SLOTS;
        uint64_t *oh = m->h;
        uint32_t *ov = m->v;
        m->h = vv_xmalloc(ns * sizeof(*m->h));
        m->v = vv_xmalloc(ns * sizeof(*m->v));
        memset(m->v, 0xff, ns * sizeof(*m->v));
        m->mask = ns - 1;
        for (uint32_t i = 0; i < slots; i++)
            if (ov[i] != VV__PS_NIL)
                put(m, oh[i], ov[i]);
        vv_free(oh);
        vv_free(ov);
    }
    put(m, h, v);
    m->n++;
}

void vv__ps_map_remove(struct vv__ps_map *m, uint64_t h, uint32_t v)
{
    if (m->v == NULL)
        return;
    uint32_t i = (uint32_t)h & m->mask;
    while (m->v[i] != v) {
        if (m->v[i] == VV__PS_NIL)
            return;
        i = (i + 1) & m->mask;
    }
    /* Backward shift: pull later members of the probe run into the hole when their home
     * slot does not lie cyclically after the hole. */
    for (uint32_t j = (i + 1) & m->mask; m->v[j] != VV__PS_NIL; j = (j + 1) & m->mask) {
        uint32_t home = (uint32_t)m->h[j] & m->mask;
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        m->h[i] = m->h[j];
        m->v[i] = m->v[j];
        i = j;
    }
    m->v[i] = VV__PS_NIL;
    m->n--;
}

/* ---- expiring ID set --------------------------------------------------------------------- */

static bool id_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv__ps_idset *s = ctx;
    return memcmp(s->e[v].id, key, VV_PUBSUB_ID_BYTES) == 0;
}

void vv__ps_idset_init(struct vv__ps_idset *s, uint32_t max)
{
    memset(s, 0, sizeof(*s));
    s->max = max ? max : 1;
    s->oldest = s->newest = s->free_list = VV__PS_NIL;
    vv__ps_map_init(&s->map);
}

void vv__ps_idset_free(struct vv__ps_idset *s)
{
    vv_free(s->e);
    vv__ps_map_free(&s->map);
    memset(s, 0, sizeof(*s));
}

uint32_t vv__ps_idset_find(const struct vv__ps_idset *s, const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    return vv__ps_map_find(&s->map, vv_keyed_hash64(id, VV_PUBSUB_ID_BYTES), id_eq, s, id);
}

void vv__ps_idset_remove(struct vv__ps_idset *s, uint32_t i)
{
    struct vv__ps_ident *x = &s->e[i];
    vv__ps_map_remove(&s->map, x->h, i);
    if (x->prev != VV__PS_NIL)
        s->e[x->prev].next = x->next;
    else
        s->oldest = x->next;
    if (x->next != VV__PS_NIL)
        s->e[x->next].prev = x->prev;
    else
        s->newest = x->prev;
    x->next = s->free_list;
    s->free_list = i;
    s->n--;
}

bool vv__ps_idset_add(struct vv__ps_idset *s, const uint8_t id[VV_PUBSUB_ID_BYTES],
                      uint64_t expires)
{
    bool evicted = false;
    if (s->n >= s->max) {
        vv__ps_idset_remove(s, s->oldest);
        s->evicted++;
        evicted = true;
    }
    if (s->free_list == VV__PS_NIL) {
        /* Grow by doubling up to max, so an idle set costs nothing and a busy one is
         * amortised O(1) per add. */
        uint32_t nc = s->cap ? s->cap * 2 : IDSET_MIN_ENTRIES;
        if (nc > s->max)
            nc = s->max;
        s->e = vv_xrealloc(s->e, (size_t)nc * sizeof(*s->e));
        for (uint32_t k = nc; k-- > s->cap;) {
            s->e[k].next = s->free_list;
            s->free_list = k;
        }
        s->cap = nc;
    }
    uint32_t i = s->free_list;
    struct vv__ps_ident *x = &s->e[i];
    s->free_list = x->next;
    memcpy(x->id, id, VV_PUBSUB_ID_BYTES);
    x->expires = expires;
    x->h = vv_keyed_hash64(id, VV_PUBSUB_ID_BYTES);
    x->prev = s->newest;
    x->next = VV__PS_NIL;
    if (s->newest != VV__PS_NIL)
        s->e[s->newest].next = i;
    else
        s->oldest = i;
    s->newest = i;
    vv__ps_map_insert(&s->map, x->h, i);
    s->n++;
    return evicted;
}

uint32_t vv__ps_idset_expire(struct vv__ps_idset *s, uint64_t now, uint32_t max_work)
{
    uint32_t done = 0;
    while (done < max_work && s->oldest != VV__PS_NIL && s->e[s->oldest].expires <= now) {
        vv__ps_idset_remove(s, s->oldest);
        s->expired++;
        done++;
    }
    return done;
}
