/*
 * The value store: signed values under 32-byte keys, at most one per (key, publisher), each
 * replaced only by a higher sequence number. See include/vivim/dht_store.h for the rules;
 * this file never checks a signature (the caller does, maybe off the loop) and never reads a
 * clock.
 *
 * Layout: records in a slab (free list), a keyed index from key to the key's newest record,
 * the key's records in a list newest first, and each source's records in a list oldest first
 * (dht_internal.h), so eviction takes a source's oldest in O(1) once the source is chosen.
 */
#include <string.h>

#include <sodium.h>

#include "dht/dht_internal.h"
#include "vivim/common.h"
#include "vivim/dht_store.h"
#include "vivim/keyed_hash.h"

/* When full, this many slots are looked at for an expired record before choosing a victim by
 * source; the regular sweep (vv_dht_values_expire) finds the rest. */
#define EXPIRED_PROBE 64

struct rec {
    uint8_t key[VV_DHT_ID_BYTES];
    uint8_t pk[VV_DHT_PK_BYTES];
    uint8_t sig[VV_DHT_SIG_BYTES];
    uint64_t seq, expires_ms;
    uint8_t *value;
    uint32_t len;
    uint32_t src;                /* index in sources */
    uint32_t key_next;           /* the key's list, newest first */
    uint32_t src_prev, src_next; /* the source's list, oldest first */
    uint32_t next_free;
    bool used;
};

struct vv_dht_values {
    struct vv_dht_values_config cfg;
    struct rec *r;
    uint32_t n, cap, free_list;
    uint32_t count;
    uint64_t bytes;
    uint32_t sweep; /* next slot vv_dht_values_expire looks at */
    struct vv__dht_index keys;
    struct vv__dht_sources sources;
};

/* ---- signing -------------------------------------------------------------------------- */

size_t vv_dht_value_signed_len(const struct vv_dht_value *v)
{
    return VV_DHT_VALUE_DOMAIN_LEN + VV_DHT_ID_BYTES + 8 + 8 + v->len;
}

static void put_be64(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(x >> (56 - 8 * i));
}

void vv_dht_value_signed_bytes(const struct vv_dht_value *v, uint8_t *out)
{
    memcpy(out, VV_DHT_VALUE_DOMAIN, VV_DHT_VALUE_DOMAIN_LEN);
    out += VV_DHT_VALUE_DOMAIN_LEN;
    memcpy(out, v->key, VV_DHT_ID_BYTES);
    out += VV_DHT_ID_BYTES;
    put_be64(out, v->seq);
    put_be64(out + 8, v->expires_ms);
    if (v->len > 0)
        memcpy(out + 16, v->value, v->len);
}

void vv_dht_value_sign(struct vv_dht_value *v, const uint8_t sk[64])
{
    size_t n = vv_dht_value_signed_len(v);
    uint8_t *m = vv_xmalloc(n);
    memcpy(v->pk, sk + 32, VV_DHT_PK_BYTES);
    vv_dht_value_signed_bytes(v, m);
    crypto_sign_detached(v->sig, NULL, m, n, sk);
    vv_free(m);
}

int vv_dht_value_verify(const struct vv_dht_value *v)
{
    if (v->len > VV_DHT_VALUE_MAX_BYTES)
        return VV_EDHT_TOO_LARGE;
    size_t n = vv_dht_value_signed_len(v);
    uint8_t *m = vv_xmalloc(n);
    vv_dht_value_signed_bytes(v, m);
    int ok = crypto_sign_verify_detached(v->sig, m, n, v->pk);
    vv_free(m);
    return ok == 0 ? 0 : VV_EDHT_SIGNATURE;
}

/* ---- the store ------------------------------------------------------------------------ */

void vv_dht_values_config_defaults(struct vv_dht_values_config *cfg)
{
    cfg->max_bytes = 64u << 20;         /* 64 MiB: a thousand full 64 KiB values, or more */
    cfg->max_count = 65536;             /* small values: 64 MiB / 1 KiB */
    cfg->source_max_bytes = 4u << 20;   /* a /24 gets 1/16 of the store */
    cfg->source_max_count = 4096;       /* likewise */
    cfg->max_per_key = 32;              /* publishers under one key */
    cfg->max_ttl_ms = 48ull * 3600000u; /* republished at least every two days */
}

static uint64_t key_hash(const void *owner, uint32_t item)
{
    const struct vv_dht_values *s = owner;
    return vv_keyed_hash64(s->r[item].key, VV_DHT_ID_BYTES);
}

static bool key_eq(const void *owner, uint32_t item, const void *key)
{
    const struct vv_dht_values *s = owner;
    return memcmp(s->r[item].key, key, VV_DHT_ID_BYTES) == 0;
}

struct vv_dht_values *vv_dht_values_new(const struct vv_dht_values_config *cfg)
{
    struct vv_dht_values *s = vv_xcalloc(1, sizeof(*s));
    if (cfg)
        s->cfg = *cfg;
    else
        vv_dht_values_config_defaults(&s->cfg);
    s->free_list = VV__DHT_NIL;
    vv__dht_index_init(&s->keys, key_hash, key_eq, s);
    vv__dht_sources_init(&s->sources, true);
    return s;
}

void vv_dht_values_free(struct vv_dht_values *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        if (s->r[i].used)
            vv_free(s->r[i].value);
    vv_free(s->r);
    vv__dht_index_fini(&s->keys);
    vv__dht_sources_fini(&s->sources);
    vv_free(s);
}

static uint64_t cost(uint32_t len)
{
    return (uint64_t)len + VV_DHT_VALUE_OVERHEAD_BYTES;
}

static uint32_t key_head(const struct vv_dht_values *s, const uint8_t *key)
{
    return vv__dht_index_find(&s->keys, vv_keyed_hash64(key, VV_DHT_ID_BYTES), key);
}

static uint32_t find_rec(const struct vv_dht_values *s, const uint8_t *key, const uint8_t *pk)
{
    for (uint32_t i = key_head(s, key); i != VV__DHT_NIL; i = s->r[i].key_next)
        if (memcmp(s->r[i].pk, pk, VV_DHT_PK_BYTES) == 0)
            return i;
    return VV__DHT_NIL;
}

static void unlink_rec(struct vv_dht_values *s, uint32_t i)
{
    struct rec *r = &s->r[i];
    uint64_t h = vv_keyed_hash64(r->key, VV_DHT_ID_BYTES);
    uint32_t head = key_head(s, r->key);
    if (head == i) {
        if (r->key_next == VV__DHT_NIL)
            vv__dht_index_remove(&s->keys, h, i);
        else
            vv__dht_index_replace(&s->keys, h, i, r->key_next);
    } else {
        uint32_t p = head;
        while (s->r[p].key_next != i)
            p = s->r[p].key_next;
        s->r[p].key_next = r->key_next;
    }
    struct vv__dht_source *src = &s->sources.v[r->src];
    if (r->src_prev != VV__DHT_NIL)
        s->r[r->src_prev].src_next = r->src_next;
    else
        src->head = r->src_next;
    if (r->src_next != VV__DHT_NIL)
        s->r[r->src_next].src_prev = r->src_prev;
    else
        src->tail = r->src_prev;
    vv__dht_sources_add(&s->sources, r->src, -1, -(int64_t)cost(r->len));
    vv__dht_sources_release(&s->sources, r->src);
    s->count--;
    s->bytes -= cost(r->len);
    vv_free(r->value);
    r->value = NULL;
    r->used = false;
    r->next_free = s->free_list;
    s->free_list = i;
}

static bool expired(const struct rec *r, uint64_t now)
{
    return r->expires_ms <= now;
}

int vv_dht_values_check(const struct vv_dht_values *s, const struct vv_dht_value *v, uint64_t now)
{
    if (v->len > VV_DHT_VALUE_MAX_BYTES)
        return VV_EDHT_TOO_LARGE;
    if (v->expires_ms <= now || v->expires_ms - now > s->cfg.max_ttl_ms)
        return VV_EDHT_EXPIRY;
    uint32_t old = find_rec(s, v->key, v->pk);
    if (old != VV__DHT_NIL && !expired(&s->r[old], now) && s->r[old].seq >= v->seq)
        return VV_EDHT_STALE_SEQ;
    return 0;
}

static void src_usage(const struct vv_dht_values *s, const uint8_t *skey, uint32_t *count,
                      uint64_t *bytes)
{
    uint32_t si = vv__dht_sources_find(&s->sources, skey);
    *count = si == VV__DHT_NIL ? 0 : s->sources.v[si].count;
    *bytes = si == VV__DHT_NIL ? 0 : s->sources.v[si].bytes;
}

/* The bytes the requester's source would hold after the put. */
static uint64_t bytes_after(const struct vv_dht_values *s, const uint8_t *skey, uint32_t old,
                            uint64_t c)
{
    uint32_t n;
    uint64_t b;
    src_usage(s, skey, &n, &b);
    uint32_t si = vv__dht_sources_find(&s->sources, skey);
    if (old != VV__DHT_NIL && s->r[old].src == si)
        b -= cost(s->r[old].len);
    return b + c;
}

/* A victim to make room, or NIL when fairness forbids: an expired record if a short probe
 * finds one, else the oldest record of the source holding the most bytes, if that source
 * would still hold more than the requester's. `old` (being replaced) is never chosen. */
static uint32_t pick_victim(struct vv_dht_values *s, const uint8_t *skey, uint32_t old, uint64_t c,
                            uint64_t now)
{
    for (uint32_t k = 0; k < EXPIRED_PROBE && s->n > 0; k++) {
        uint32_t i = (s->sweep + k) % s->n;
        if (s->r[i].used && i != old && expired(&s->r[i], now))
            return i;
    }
    uint32_t L = vv__dht_sources_largest(&s->sources);
    if (L == VV__DHT_NIL || memcmp(s->sources.v[L].key, skey, VV__DHT_SOURCE_BYTES) == 0)
        return VV__DHT_NIL;
    if (s->sources.v[L].bytes <= bytes_after(s, skey, old, c))
        return VV__DHT_NIL;
    uint32_t v = s->sources.v[L].head;
    if (v == old)
        v = s->r[v].src_next;
    return v;
}

int vv_dht_values_put(struct vv_dht_values *s, const struct vv_dht_value *v,
                      const struct vv_dht_addr *source, uint64_t now)
{
    int rc = vv_dht_values_check(s, v, now);
    if (rc != 0)
        return rc;
    uint8_t skey[VV__DHT_SOURCE_BYTES];
    vv__dht_source_key(source, skey);
    uint32_t old = find_rec(s, v->key, v->pk);
    uint64_t c = cost((uint32_t)v->len);
    uint32_t src_n;
    uint64_t src_b;
    src_usage(s, skey, &src_n, &src_b);
    uint32_t si = vv__dht_sources_find(&s->sources, skey);
    bool same_src = old != VV__DHT_NIL && s->r[old].src == si;
    if (bytes_after(s, skey, old, c) > s->cfg.source_max_bytes ||
        src_n - same_src + 1 > s->cfg.source_max_count)
        return VV_EDHT_QUOTA;

    if (old == VV__DHT_NIL) {
        /* Publishers under one key: the same fairness, within the key. */
        uint32_t n = 0, victim = VV__DHT_NIL;
        for (uint32_t i = key_head(s, v->key); i != VV__DHT_NIL; i = s->r[i].key_next) {
            n++;
            if (victim == VV__DHT_NIL || expired(&s->r[i], now) ||
                (!expired(&s->r[victim], now) &&
                 s->sources.v[s->r[i].src].bytes > s->sources.v[s->r[victim].src].bytes))
                victim = i;
        }
        if (n >= s->cfg.max_per_key) {
            const struct vv__dht_source *vs = &s->sources.v[s->r[victim].src];
            if (!expired(&s->r[victim], now) && (memcmp(vs->key, skey, VV__DHT_SOURCE_BYTES) == 0 ||
                                                 vs->bytes <= bytes_after(s, skey, old, c)))
                return VV_EDHT_FULL;
            unlink_rec(s, victim);
        }
    }
    for (;;) {
        uint64_t freed = old != VV__DHT_NIL ? cost(s->r[old].len) : 0;
        uint32_t freed_n = old != VV__DHT_NIL;
        if (s->bytes - freed + c <= s->cfg.max_bytes && s->count - freed_n + 1 <= s->cfg.max_count)
            break;
        uint32_t victim = pick_victim(s, skey, old, c, now);
        if (victim == VV__DHT_NIL)
            return VV_EDHT_FULL;
        unlink_rec(s, victim);
    }
    if (old != VV__DHT_NIL)
        unlink_rec(s, old);

    si = vv__dht_sources_get(&s->sources, skey);
    uint32_t i;
    if (s->free_list != VV__DHT_NIL) {
        i = s->free_list;
        s->free_list = s->r[i].next_free;
    } else {
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 16;
            s->r = vv_xrealloc(s->r, s->cap * sizeof(*s->r));
        }
        i = s->n++;
    }
    struct rec *r = &s->r[i];
    memset(r, 0, sizeof(*r));
    memcpy(r->key, v->key, VV_DHT_ID_BYTES);
    memcpy(r->pk, v->pk, VV_DHT_PK_BYTES);
    memcpy(r->sig, v->sig, VV_DHT_SIG_BYTES);
    r->seq = v->seq;
    r->expires_ms = v->expires_ms;
    r->len = (uint32_t)v->len;
    r->value = vv_xmalloc(v->len);
    if (v->len > 0)
        memcpy(r->value, v->value, v->len);
    r->src = si;
    r->used = true;
    r->next_free = VV__DHT_NIL;
    /* Newest first in its key's list. */
    uint64_t h = vv_keyed_hash64(r->key, VV_DHT_ID_BYTES);
    uint32_t head = key_head(s, r->key);
    r->key_next = head;
    if (head == VV__DHT_NIL)
        vv__dht_index_insert(&s->keys, h, i);
    else
        vv__dht_index_replace(&s->keys, h, head, i);
    /* Newest last in its source's list. */
    struct vv__dht_source *src = &s->sources.v[si];
    r->src_prev = src->tail;
    r->src_next = VV__DHT_NIL;
    if (src->tail != VV__DHT_NIL)
        s->r[src->tail].src_next = i;
    else
        src->head = i;
    src->tail = i;
    vv__dht_sources_add(&s->sources, si, 1, (int64_t)c);
    s->count++;
    s->bytes += c;
    return 0;
}

static void export(const struct rec *r, struct vv_dht_value *out)
{
    memcpy(out->key, r->key, VV_DHT_ID_BYTES);
    memcpy(out->pk, r->pk, VV_DHT_PK_BYTES);
    memcpy(out->sig, r->sig, VV_DHT_SIG_BYTES);
    out->seq = r->seq;
    out->expires_ms = r->expires_ms;
    out->value = r->value;
    out->len = r->len;
}

size_t vv_dht_values_get(const struct vv_dht_values *s, const uint8_t *key, uint64_t now,
                         struct vv_dht_value *out, size_t max)
{
    size_t n = 0;
    for (uint32_t i = key_head(s, key); i != VV__DHT_NIL && n < max; i = s->r[i].key_next)
        if (!expired(&s->r[i], now))
            export(&s->r[i], &out[n++]);
    return n;
}

size_t vv_dht_values_expire(struct vv_dht_values *s, uint64_t now, size_t max_items)
{
    size_t dropped = 0;
    for (size_t k = 0; k < max_items && s->n > 0; k++) {
        uint32_t i = s->sweep;
        s->sweep = (s->sweep + 1) % s->n;
        if (s->r[i].used && expired(&s->r[i], now)) {
            unlink_rec(s, i);
            dropped++;
        }
    }
    return dropped;
}

size_t vv_dht_values_count(const struct vv_dht_values *s)
{
    return s->count;
}

uint64_t vv_dht_values_bytes(const struct vv_dht_values *s)
{
    return s->bytes;
}

void vv_dht_values_source_usage(const struct vv_dht_values *s, const struct vv_dht_addr *source,
                                uint32_t *count, uint64_t *bytes)
{
    uint8_t skey[VV__DHT_SOURCE_BYTES];
    vv__dht_source_key(source, skey);
    src_usage(s, skey, count, bytes);
}

/* ---- self-check, for tests ------------------------------------------------------------ */

int vv__dht_values_check(const struct vv_dht_values *s)
{
    uint32_t count = 0, heads = 0;
    uint64_t bytes = 0;
    int bad = 0;
    for (uint32_t i = 0; i < s->n && !bad; i++) {
        const struct rec *r = &s->r[i];
        if (!r->used)
            continue;
        count++;
        bytes += cost(r->len);
        uint32_t h = key_head(s, r->key), n = 0;
        bool found = false;
        for (uint32_t j = h; j != VV__DHT_NIL && n <= s->cfg.max_per_key; j = s->r[j].key_next, n++)
            found |= j == i;
        heads += h == i;
        bad |= !found || n > s->cfg.max_per_key;
    }
    uint32_t by_sources = 0;
    for (uint32_t si = 0; si < s->sources.n && !bad; si++) {
        const struct vv__dht_source *src = &s->sources.v[si];
        if (!src->used)
            continue;
        uint32_t n = 0, prev = VV__DHT_NIL;
        uint64_t b = 0;
        for (uint32_t i = src->head; i != VV__DHT_NIL; i = s->r[i].src_next) {
            if (s->r[i].src_prev != prev || s->r[i].src != si || ++n > s->n) {
                bad = 1;
                break;
            }
            b += cost(s->r[i].len);
            prev = i;
        }
        bad |= n != src->count || b != src->bytes || src->tail != prev || n == 0 ||
               n > s->cfg.source_max_count || b > s->cfg.source_max_bytes;
        by_sources += n;
    }
    bad |= !vv__dht_sources_ok(&s->sources);
    bad |= count != s->count || bytes != s->bytes || by_sources != count ||
           heads != s->keys.count || count > s->cfg.max_count || bytes > s->cfg.max_bytes;
    return bad ? VV_ESTATE : 0;
}
