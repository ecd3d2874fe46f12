/* The DHT core's hash index (dht_internal.h). */
#include <string.h>

#include "dht/dht_internal.h"
#include "vivim/common.h"

#define INITIAL_SLOTS 16

void vv__dht_index_init(struct vv__dht_index *ix, vv__dht_hash_fn hash, vv__dht_eq_fn eq,
                        const void *owner)
{
    ix->slot = vv_xcalloc(INITIAL_SLOTS, sizeof(*ix->slot));
    ix->mask = INITIAL_SLOTS - 1;
    ix->count = 0;
    ix->hash = hash;
    ix->eq = eq;
    ix->owner = owner;
}

void vv__dht_index_fini(struct vv__dht_index *ix)
{
    vv_free(ix->slot);
    ix->slot = NULL;
}

uint32_t vv__dht_index_find(const struct vv__dht_index *ix, uint64_t h, const void *key)
{
    for (uint32_t s = (uint32_t)h & ix->mask;; s = (s + 1) & ix->mask) {
        uint32_t v = ix->slot[s];
        if (v == 0)
            return VV__DHT_NIL;
        if (ix->eq(ix->owner, v - 1, key))
            return v - 1;
    }
}

static void put(uint32_t *slots, uint32_t mask, uint64_t h, uint32_t item)
{
    uint32_t s = (uint32_t)h & mask;
    while (slots[s] != 0)
        s = (s + 1) & mask;
    slots[s] = item + 1;
}

void vv__dht_index_insert(struct vv__dht_index *ix, uint64_t h, uint32_t item)
{
    if (2 * (uint64_t)(ix->count + 1) > (uint64_t)ix->mask + 1) {
        uint32_t n = 2 * (ix->mask + 1);
        uint32_t *slots = vv_xcalloc(n, sizeof(*slots));
        for (uint32_t s = 0; s <= ix->mask; s++)
            if (ix->slot[s] != 0)
                put(slots, n - 1, ix->hash(ix->owner, ix->slot[s] - 1), ix->slot[s] - 1);
        vv_free(ix->slot);
        ix->slot = slots;
        ix->mask = n - 1;
    }
    put(ix->slot, ix->mask, h, item);
    ix->count++;
}

static uint32_t position(const struct vv__dht_index *ix, uint64_t h, uint32_t item)
{
    uint32_t s = (uint32_t)h & ix->mask;
    while (ix->slot[s] != item + 1)
        s = (s + 1) & ix->mask; /* the item is there: the caller says so */
    return s;
}

void vv__dht_index_remove(struct vv__dht_index *ix, uint64_t h, uint32_t item)
{
    uint32_t hole = position(ix, h, item);
    ix->slot[hole] = 0;
    for (uint32_t s = (hole + 1) & ix->mask; ix->slot[s] != 0; s = (s + 1) & ix->mask) {
        uint32_t home = (uint32_t)ix->hash(ix->owner, ix->slot[s] - 1) & ix->mask;
        if (((s - home) & ix->mask) >= ((s - hole) & ix->mask)) {
            ix->slot[hole] = ix->slot[s];
            ix->slot[s] = 0;
            hole = s;
        }
    }
    ix->count--;
}

void vv__dht_index_replace(struct vv__dht_index *ix, uint64_t h, uint32_t old_item,
                           uint32_t new_item)
{
    ix->slot[position(ix, h, old_item)] = new_item + 1;
}

size_t vv__dht_index_bytes(const struct vv__dht_index *ix)
{
    return ((size_t)ix->mask + 1) * sizeof(*ix->slot);
}

uint32_t vv__dht_index_longest_probe(const struct vv__dht_index *ix)
{
    uint32_t longest = 0, run = 0;
    for (uint64_t s = 0; s <= 2 * (uint64_t)ix->mask + 1; s++) {
        run = ix->slot[s & ix->mask] ? run + 1 : 0;
        longest = VV_MAX(longest, run);
    }
    return longest;
}
