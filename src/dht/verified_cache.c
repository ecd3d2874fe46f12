/*
 * The cache of verified contacts: (node ID, address) pairs that signed our challenge. A pair
 * in it is trusted to own its ID at that address: its answers may be full size (no
 * amplification limit) and a second PONG needs no signature check.
 *
 * Layout: a fixed array of `capacity` slots, a doubly linked list through them in order of
 * verification (head = verified longest ago, evicted first when full), and an open-addressing
 * index (linear probing, backward-shift deletion, load at most 1/2) under the process's
 * secret SipHash key, so the IDs a peer chooses cannot collide on purpose.
 */
#include <string.h>

#include "vivim/common.h"
#include "vivim/dht_core.h"
#include "vivim/keyed_hash.h"

#define NIL UINT32_MAX

struct slot {
    uint8_t id[VV_DHT_ID_BYTES];
    struct vv_dht_addr addr;
    uint64_t verified_ms;
    uint32_t prev, next; /* verification order; next also links free slots */
};

struct vv_dht_verified {
    struct slot *slots;
    uint32_t capacity, count;
    uint32_t head, tail, free_list;
    uint32_t *index; /* slot + 1, 0 = empty */
    uint32_t index_mask;
    uint64_t max_age_ms;
};

static uint64_t pair_hash(const uint8_t *id, const struct vv_dht_addr *a)
{
    uint8_t buf[VV_DHT_ID_BYTES + VV_DHT_ADDR_COMPACT_MAX];
    memcpy(buf, id, VV_DHT_ID_BYTES);
    size_t n = vv_dht_addr_to_compact(a, buf + VV_DHT_ID_BYTES);
    return vv_keyed_hash64(buf, VV_DHT_ID_BYTES + n);
}

struct vv_dht_verified *vv_dht_verified_new(uint32_t capacity, uint64_t max_age_ms)
{
    struct vv_dht_verified *v = vv_xcalloc(1, sizeof(*v));
    if (capacity == 0)
        capacity = 1;
    v->capacity = capacity;
    v->max_age_ms = max_age_ms;
    v->slots = vv_xcalloc(capacity, sizeof(*v->slots));
    for (uint32_t i = 0; i < capacity; i++)
        v->slots[i].next = i + 1 < capacity ? i + 1 : NIL;
    v->free_list = 0;
    v->head = v->tail = NIL;
    uint32_t size = 2;
    while (size < 2 * (uint64_t)capacity)
        size *= 2;
    v->index = vv_xcalloc(size, sizeof(*v->index));
    v->index_mask = size - 1;
    return v;
}

void vv_dht_verified_free(struct vv_dht_verified *v)
{
    if (v == NULL)
        return;
    vv_free(v->slots);
    vv_free(v->index);
    vv_free(v);
}

/* The index position holding the pair, or -1. */
static int64_t index_find(const struct vv_dht_verified *v, const uint8_t *id,
                          const struct vv_dht_addr *a)
{
    for (uint32_t s = (uint32_t)pair_hash(id, a) & v->index_mask;; s = (s + 1) & v->index_mask) {
        uint32_t x = v->index[s];
        if (x == 0)
            return -1;
        const struct slot *sl = &v->slots[x - 1];
        if (memcmp(sl->id, id, VV_DHT_ID_BYTES) == 0 && vv_dht_addr_equal(&sl->addr, a))
            return s;
    }
}

static void index_delete(struct vv_dht_verified *v, uint32_t pos)
{
    /* Backward shift: move later members of the probe run into the hole when their home
     * slot does not lie strictly between the hole and them. */
    uint32_t hole = pos;
    v->index[hole] = 0;
    for (uint32_t s = (hole + 1) & v->index_mask; v->index[s] != 0; s = (s + 1) & v->index_mask) {
        const struct slot *sl = &v->slots[v->index[s] - 1];
        uint32_t home = (uint32_t)pair_hash(sl->id, &sl->addr) & v->index_mask;
        if (((s - home) & v->index_mask) >= ((s - hole) & v->index_mask)) {
            v->index[hole] = v->index[s];
            v->index[s] = 0;
            hole = s;
        }
    }
}

static void list_unlink(struct vv_dht_verified *v, uint32_t i)
{
    struct slot *s = &v->slots[i];
    if (s->prev != NIL)
        v->slots[s->prev].next = s->next;
    else
        v->head = s->next;
    if (s->next != NIL)
        v->slots[s->next].prev = s->prev;
    else
        v->tail = s->prev;
}

static void list_append(struct vv_dht_verified *v, uint32_t i)
{
    struct slot *s = &v->slots[i];
    s->prev = v->tail;
    s->next = NIL;
    if (v->tail != NIL)
        v->slots[v->tail].next = i;
    else
        v->head = i;
    v->tail = i;
}

void vv_dht_verified_add(struct vv_dht_verified *v, const uint8_t *id,
                         const struct vv_dht_addr *addr, uint64_t now)
{
    int64_t pos = index_find(v, id, addr);
    if (pos >= 0) {
        uint32_t i = v->index[pos] - 1;
        v->slots[i].verified_ms = now;
        list_unlink(v, i);
        list_append(v, i);
        return;
    }
    if (v->free_list == NIL) {
        uint32_t old = v->head;
        struct slot *s = &v->slots[old];
        index_delete(v, (uint32_t)index_find(v, s->id, &s->addr));
        list_unlink(v, old);
        s->next = NIL;
        v->free_list = old;
        v->count--;
    }
    uint32_t i = v->free_list;
    v->free_list = v->slots[i].next;
    struct slot *s = &v->slots[i];
    memcpy(s->id, id, VV_DHT_ID_BYTES);
    s->addr = *addr;
    s->verified_ms = now;
    list_append(v, i);
    uint32_t h = (uint32_t)pair_hash(id, addr) & v->index_mask;
    while (v->index[h] != 0)
        h = (h + 1) & v->index_mask;
    v->index[h] = i + 1;
    v->count++;
}

bool vv_dht_verified_has(const struct vv_dht_verified *v, const uint8_t *id,
                         const struct vv_dht_addr *addr, uint64_t now)
{
    int64_t pos = index_find(v, id, addr);
    if (pos < 0)
        return false;
    const struct slot *s = &v->slots[v->index[pos] - 1];
    return now >= s->verified_ms && now - s->verified_ms < v->max_age_ms;
}

size_t vv_dht_verified_count(const struct vv_dht_verified *v)
{
    return v->count;
}

uint32_t vv__dht_verified_longest_probe(const struct vv_dht_verified *v)
{
    uint32_t longest = 0, run = 0;
    for (uint32_t s = 0; s <= 2 * v->index_mask + 1; s++) {
        run = v->index[s & v->index_mask] ? run + 1 : 0;
        longest = VV_MAX(longest, run);
    }
    return longest;
}
