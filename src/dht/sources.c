/* The sources of a DHT store (dht_internal.h). */
#include <string.h>

#include "dht/dht_internal.h"
#include "vivim/common.h"
#include "vivim/keyed_hash.h"

static uint64_t src_hash(const void *owner, uint32_t item)
{
    const struct vv__dht_sources *ss = owner;
    return vv_keyed_hash64(ss->v[item].key, VV__DHT_SOURCE_BYTES);
}

static bool src_eq(const void *owner, uint32_t item, const void *key)
{
    const struct vv__dht_sources *ss = owner;
    return memcmp(ss->v[item].key, key, VV__DHT_SOURCE_BYTES) == 0;
}

void vv__dht_sources_init(struct vv__dht_sources *ss)
{
    memset(ss, 0, sizeof(*ss));
    ss->free_list = VV__DHT_NIL;
    vv__dht_index_init(&ss->ix, src_hash, src_eq, ss);
}

void vv__dht_sources_fini(struct vv__dht_sources *ss)
{
    vv__dht_index_fini(&ss->ix);
    vv_free(ss->v);
    ss->v = NULL;
}

uint32_t vv__dht_sources_find(const struct vv__dht_sources *ss, const uint8_t *key)
{
    return vv__dht_index_find(&ss->ix, vv_keyed_hash64(key, VV__DHT_SOURCE_BYTES), key);
}

uint32_t vv__dht_sources_get(struct vv__dht_sources *ss, const uint8_t *key)
{
    uint32_t i = vv__dht_sources_find(ss, key);
    if (i != VV__DHT_NIL)
        return i;
    if (ss->free_list != VV__DHT_NIL) {
        i = ss->free_list;
        ss->free_list = ss->v[i].next_free;
    } else {
        if (ss->n == ss->cap) {
            ss->cap = ss->cap ? 2 * ss->cap : 16;
            ss->v = vv_xrealloc(ss->v, ss->cap * sizeof(*ss->v));
        }
        i = ss->n++;
    }
    struct vv__dht_source *s = &ss->v[i];
    memset(s, 0, sizeof(*s));
    memcpy(s->key, key, VV__DHT_SOURCE_BYTES);
    s->head = s->tail = s->next_free = VV__DHT_NIL;
    s->used = true;
    vv__dht_index_insert(&ss->ix, vv_keyed_hash64(key, VV__DHT_SOURCE_BYTES), i);
    ss->live++;
    return i;
}

void vv__dht_sources_release(struct vv__dht_sources *ss, uint32_t i)
{
    struct vv__dht_source *s = &ss->v[i];
    if (!s->used || s->count != 0)
        return;
    vv__dht_index_remove(&ss->ix, vv_keyed_hash64(s->key, VV__DHT_SOURCE_BYTES), i);
    s->used = false;
    s->next_free = ss->free_list;
    ss->free_list = i;
    ss->live--;
}

uint32_t vv__dht_sources_largest(const struct vv__dht_sources *ss, bool by_bytes)
{
    uint32_t best = VV__DHT_NIL;
    for (uint32_t i = 0; i < ss->n; i++) {
        const struct vv__dht_source *s = &ss->v[i];
        if (!s->used || s->count == 0)
            continue;
        if (best == VV__DHT_NIL ||
            (by_bytes ? s->bytes > ss->v[best].bytes : s->count > ss->v[best].count))
            best = i;
    }
    return best;
}

size_t vv__dht_sources_bytes(const struct vv__dht_sources *ss)
{
    return ss->cap * sizeof(*ss->v) + vv__dht_index_bytes(&ss->ix);
}
