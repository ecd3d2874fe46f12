/*
 * Per-source rate limit of the requests a DHT node serves (dht_core.h, "rate limit"): a token
 * bucket per source network in a fixed table. Sans-I/O: times are passed in.
 *
 * The table has a fixed number of slots (a power of two) and is probed linearly over a
 * short window from the source's keyed hash, so a flood of sources costs a bounded table,
 * not memory. When the window holds no slot for a new source, the slot idle longest in it
 * is given to the newcomer, starting with a full bucket: eviction only ever gives a source
 * more credit, never less, so an attacker cycling sources cannot use it to throttle an
 * honest one (and what many sources get in all is bounded by the request layer's limits).
 */
#include <sodium.h>
#include <string.h>

#include "dht_internal.h"
#include "vivim/common.h"
#include "vivim/dht_core.h"

#define PROBE 8

struct slot {
    uint8_t key[VV__DHT_SOURCE_BYTES];
    bool used;
    uint64_t last_ms; /* the last refill */
    uint64_t credit;  /* tokens x 1000 (milli-tokens), at most burst x 1000 */
};

struct vv_dht_rate {
    struct slot *slots;
    uint32_t mask;
    uint32_t per_second, burst;
    uint32_t used;
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
};

struct vv_dht_rate *vv_dht_rate_new(uint32_t slots, uint32_t per_second, uint32_t burst,
                                    const uint8_t *hash_key)
{
    uint32_t n = 16;
    while (n < slots && n < (1u << 24))
        n <<= 1;
    struct vv_dht_rate *r = vv_xcalloc(1, sizeof(*r));
    r->slots = vv_xcalloc(n, sizeof(*r->slots));
    r->mask = n - 1;
    memcpy(r->hash_key, hash_key, sizeof(r->hash_key));
    vv_dht_rate_set(r, per_second, burst);
    return r;
}

void vv_dht_rate_free(struct vv_dht_rate *r)
{
    if (r == NULL)
        return;
    vv_free(r->slots);
    vv_free(r);
}

void vv_dht_rate_set(struct vv_dht_rate *r, uint32_t per_second, uint32_t burst)
{
    r->per_second = per_second;
    r->burst = burst > 0 ? burst : 1;
}

bool vv_dht_rate_take(struct vv_dht_rate *r, const struct vv_dht_addr *source, uint64_t now)
{
    if (r->per_second == 0)
        return true; /* no limit */
    uint8_t key[VV__DHT_SOURCE_BYTES];
    vv__dht_source_key(source, key);
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, key, sizeof(key), r->hash_key);
    uint32_t start;
    memcpy(&start, h, sizeof(start));
    struct slot *s = NULL, *victim = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        struct slot *c = &r->slots[(start + i) & r->mask];
        if (c->used && memcmp(c->key, key, sizeof(key)) == 0) {
            s = c;
            break;
        }
        if (victim == NULL || !c->used || (victim->used && c->last_ms < victim->last_ms))
            victim = c;
    }
    uint64_t full = (uint64_t)r->burst * 1000u;
    if (s == NULL) {
        s = victim;
        if (!s->used)
            r->used++;
        memcpy(s->key, key, sizeof(key));
        s->used = true;
        s->credit = full;
        s->last_ms = now;
    } else if (now > s->last_ms) {
        uint64_t add = (now - s->last_ms) * r->per_second; /* milli-tokens */
        s->credit = add >= full - s->credit ? full : s->credit + add;
        s->last_ms = now;
    }
    if (s->credit < 1000)
        return false;
    s->credit -= 1000;
    return true;
}

size_t vv_dht_rate_tracked(const struct vv_dht_rate *r)
{
    return r->used;
}
