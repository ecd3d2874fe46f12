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

/* ---- the heap ------------------------------------------------------------------------- */

static uint64_t weight(const struct vv__dht_sources *ss, uint32_t i)
{
    return ss->by_bytes ? ss->v[i].bytes : ss->v[i].count;
}

static void heap_set(struct vv__dht_sources *ss, uint32_t pos, uint32_t i)
{
    ss->heap[pos] = i;
    ss->v[i].heap_pos = pos;
}

static void sift_up(struct vv__dht_sources *ss, uint32_t pos)
{
    uint32_t i = ss->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (weight(ss, ss->heap[parent]) >= weight(ss, i))
            break;
        heap_set(ss, pos, ss->heap[parent]);
        pos = parent;
    }
    heap_set(ss, pos, i);
}

static void sift_down(struct vv__dht_sources *ss, uint32_t pos)
{
    uint32_t i = ss->heap[pos];
    for (;;) {
        uint32_t c = 2 * pos + 1;
        if (c >= ss->live)
            break;
        if (c + 1 < ss->live && weight(ss, ss->heap[c + 1]) > weight(ss, ss->heap[c]))
            c++;
        if (weight(ss, ss->heap[c]) <= weight(ss, i))
            break;
        heap_set(ss, pos, ss->heap[c]);
        pos = c;
    }
    heap_set(ss, pos, i);
}

/* ---- the table ------------------------------------------------------------------------ */

void vv__dht_sources_init(struct vv__dht_sources *ss, bool by_bytes)
{
    memset(ss, 0, sizeof(*ss));
    ss->by_bytes = by_bytes;
    ss->free_list = VV__DHT_NIL;
    vv__dht_index_init(&ss->ix, src_hash, src_eq, ss);
}

void vv__dht_sources_fini(struct vv__dht_sources *ss)
{
    vv__dht_index_fini(&ss->ix);
    vv_free(ss->v);
    vv_free(ss->heap);
    ss->v = NULL;
    ss->heap = NULL;
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
            ss->heap = vv_xrealloc(ss->heap, ss->cap * sizeof(*ss->heap));
        }
        i = ss->n++;
    }
    struct vv__dht_source *s = &ss->v[i];
    memset(s, 0, sizeof(*s));
    memcpy(s->key, key, VV__DHT_SOURCE_BYTES);
    s->head = s->tail = s->next_free = VV__DHT_NIL;
    s->used = true;
    vv__dht_index_insert(&ss->ix, vv_keyed_hash64(key, VV__DHT_SOURCE_BYTES), i);
    heap_set(ss, ss->live++, i); /* holds nothing yet: a leaf is its place */
    return i;
}

void vv__dht_sources_add(struct vv__dht_sources *ss, uint32_t i, int64_t count, int64_t bytes)
{
    struct vv__dht_source *s = &ss->v[i];
    s->count = (uint32_t)((int64_t)s->count + count);
    s->bytes = (uint64_t)((int64_t)s->bytes + bytes);
    if ((ss->by_bytes ? bytes : count) > 0)
        sift_up(ss, s->heap_pos);
    else
        sift_down(ss, s->heap_pos);
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
    /* The last leaf fills its place in the heap. */
    uint32_t pos = s->heap_pos, last = ss->heap[--ss->live];
    if (pos < ss->live) {
        heap_set(ss, pos, last);
        sift_up(ss, pos);
        sift_down(ss, ss->v[last].heap_pos);
    }
}

uint32_t vv__dht_sources_largest(const struct vv__dht_sources *ss)
{
    if (ss->live == 0 || weight(ss, ss->heap[0]) == 0)
        return VV__DHT_NIL;
    return ss->heap[0];
}

size_t vv__dht_sources_bytes(const struct vv__dht_sources *ss)
{
    return ss->cap * (sizeof(*ss->v) + sizeof(*ss->heap)) + vv__dht_index_bytes(&ss->ix);
}

bool vv__dht_sources_ok(const struct vv__dht_sources *ss)
{
    uint32_t used = 0;
    for (uint32_t i = 0; i < ss->n; i++)
        used += ss->v[i].used;
    if (used != ss->live || ss->ix.count != ss->live)
        return false;
    for (uint32_t pos = 0; pos < ss->live; pos++) {
        uint32_t i = ss->heap[pos];
        if (i >= ss->n || !ss->v[i].used || ss->v[i].heap_pos != pos)
            return false;
        if (pos > 0 && weight(ss, ss->heap[(pos - 1) / 2]) < weight(ss, i))
            return false;
    }
    return true;
}
