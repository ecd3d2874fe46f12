/*
 * The provider store: which nodes provide the content under a key (the seed's
 * DHTContentRecord). See include/vivim/dht_store.h for the rules.
 *
 * Built to hold a million (key, provider) entries in well under 64 MiB, so nothing is stored
 * twice: a key's metadata once per key, a provider's node ID and address once per provider
 * (an "identity", shared by all its entries and counted by reference), content types once
 * per distinct type. An entry is then six 32-bit numbers (24 bytes): its identity, its key,
 * the next entry of the key, its source list links and its expiry in Unix seconds.
 *
 * All arrays are slabs indexed by 32-bit numbers with free lists; the keys and identities
 * have keyed hash indexes (dht_internal.h), so chosen keys or IDs cannot collide on purpose.
 * Entries of a key form a list oldest first (at most VV_DHT_MAX_PROVIDERS long); entries of
 * a source form a list oldest first, for eviction.
 */
#include <string.h>

#include <sodium.h>

#include "dht/dht_internal.h"
#include "vivim/common.h"
#include "vivim/dht_store.h"
#include "vivim/keyed_hash.h"

#define EXPIRED_PROBE 64
/* A put that must evict more entries than this to make room for a new key gives up. */
#define MAX_EVICTIONS_PER_ADD (2 * VV_DHT_MAX_PROVIDERS)
#define MAX_PER_SOURCE_IN_KEY 2

struct kent {
    uint8_t key[VV_DHT_ID_BYTES];
    uint8_t address[32];
    uint64_t size, created_ms;
    char *cid;     /* cid_len bytes, not terminated */
    uint32_t head; /* the key's entries, oldest first */
    uint32_t next_free;
    uint16_t type; /* index in types; 0 = "" */
    uint8_t cid_len, n, repl;
    bool used;
};

struct pent {
    uint32_t ident; /* VV__DHT_NIL when free */
    uint32_t key;
    uint32_t key_next; /* also the free list */
    uint32_t src_prev, src_next;
    uint32_t expires_s; /* Unix seconds, rounded up */
};
_Static_assert(sizeof(struct pent) == 24, "a provider entry is 24 bytes");

struct ident {
    uint8_t id[VV_DHT_ID_BYTES];
    uint8_t ip[16];
    uint16_t port;
    uint8_t family;
    uint32_t refs; /* entries naming it; 0 = free */
    uint32_t src;  /* its source; the free list while refs is 0 */
};

struct ctype {
    char s[VV_DHT_CONTENT_TYPE_MAX];
    uint8_t len;
};

struct src_ext {
    uint32_t idents; /* identities in the source */
};

struct vv_dht_providers {
    struct vv_dht_providers_config cfg;
    struct kent *k;
    uint32_t k_n, k_cap, k_free, k_count;
    struct pent *e;
    uint32_t e_n, e_cap, e_free, e_count;
    struct ident *id;
    uint32_t id_n, id_cap, id_free, id_count;
    struct ctype *types;
    uint32_t t_n;
    uint32_t sweep;
    struct vv__dht_index key_ix, id_ix, type_ix;
    struct vv__dht_sources sources;
    uint32_t *src_idents; /* per source slot: identities in it */
    uint32_t src_idents_cap;
};

void vv_dht_providers_config_defaults(struct vv_dht_providers_config *cfg)
{
    /* See docs/dht.md, "Memory": these bounds keep the store under 64 MiB whatever fills it. */
    cfg->max_records = 1000000;
    cfg->max_keys = 120000;
    cfg->max_idents = 65536;
    cfg->source_max_records = 131072; /* a storage node provides 100,000+ records */
    cfg->source_max_idents = 256;     /* nodes behind one /24 */
    cfg->max_ttl_ms = 48ull * 3600000u;
}

/* ---- hashing -------------------------------------------------------------------------- */

static uint64_t key_hash(const void *owner, uint32_t item)
{
    const struct vv_dht_providers *s = owner;
    return vv_keyed_hash64(s->k[item].key, VV_DHT_ID_BYTES);
}

static bool key_eq(const void *owner, uint32_t item, const void *key)
{
    const struct vv_dht_providers *s = owner;
    return memcmp(s->k[item].key, key, VV_DHT_ID_BYTES) == 0;
}

/* An identity's hash input: node ID, family, IP, port. */
#define IDENT_KEY_BYTES (VV_DHT_ID_BYTES + 1 + 16 + 2)

static void ident_key(const uint8_t *id, const struct vv_dht_addr *a, uint8_t out[IDENT_KEY_BYTES])
{
    memcpy(out, id, VV_DHT_ID_BYTES);
    out[32] = a->family;
    memcpy(out + 33, a->ip, 16);
    out[49] = (uint8_t)(a->port >> 8);
    out[50] = (uint8_t)a->port;
}

static void ident_key_of(const struct ident *d, uint8_t out[IDENT_KEY_BYTES])
{
    memcpy(out, d->id, VV_DHT_ID_BYTES);
    out[32] = d->family;
    memcpy(out + 33, d->ip, 16);
    out[49] = (uint8_t)(d->port >> 8);
    out[50] = (uint8_t)d->port;
}

static uint64_t id_hash(const void *owner, uint32_t item)
{
    const struct vv_dht_providers *s = owner;
    uint8_t k[IDENT_KEY_BYTES];
    ident_key_of(&s->id[item], k);
    return vv_keyed_hash64(k, sizeof(k));
}

static bool id_eq(const void *owner, uint32_t item, const void *key)
{
    const struct vv_dht_providers *s = owner;
    uint8_t k[IDENT_KEY_BYTES];
    ident_key_of(&s->id[item], k);
    return memcmp(k, key, sizeof(k)) == 0;
}

struct type_key {
    const char *s;
    size_t len;
};

static uint64_t type_hash(const void *owner, uint32_t item)
{
    const struct vv_dht_providers *s = owner;
    return vv_keyed_hash64(s->types[item].s, s->types[item].len);
}

static bool type_eq(const void *owner, uint32_t item, const void *key)
{
    const struct vv_dht_providers *s = owner;
    const struct type_key *t = key;
    return s->types[item].len == t->len && memcmp(s->types[item].s, t->s, t->len) == 0;
}

/* ---- life cycle ----------------------------------------------------------------------- */

struct vv_dht_providers *vv_dht_providers_new(const struct vv_dht_providers_config *cfg)
{
    struct vv_dht_providers *s = vv_xcalloc(1, sizeof(*s));
    if (cfg)
        s->cfg = *cfg;
    else
        vv_dht_providers_config_defaults(&s->cfg);
    s->k_free = s->e_free = s->id_free = VV__DHT_NIL;
    vv__dht_index_init(&s->key_ix, key_hash, key_eq, s);
    vv__dht_index_init(&s->id_ix, id_hash, id_eq, s);
    vv__dht_index_init(&s->type_ix, type_hash, type_eq, s);
    vv__dht_sources_init(&s->sources, false);
    s->types = vv_xcalloc(1, sizeof(*s->types)); /* 0 = "" */
    s->t_n = 1;
    return s;
}

void vv_dht_providers_free(struct vv_dht_providers *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->k_n; i++)
        if (s->k[i].used)
            vv_free(s->k[i].cid);
    vv_free(s->k);
    vv_free(s->e);
    vv_free(s->id);
    vv_free(s->types);
    vv_free(s->src_idents);
    vv__dht_index_fini(&s->key_ix);
    vv__dht_index_fini(&s->id_ix);
    vv__dht_index_fini(&s->type_ix);
    vv__dht_sources_fini(&s->sources);
    vv_free(s);
}

/* Grows a slab by doubling, never past max elements. */
static void *grow(void *p, uint32_t *cap, uint32_t max, size_t elem)
{
    uint32_t n = *cap ? 2 * *cap : 64;
    if (n > max)
        n = max > *cap ? max : *cap + 1;
    *cap = n;
    return vv_xrealloc(p, (size_t)n * elem);
}

/* ---- checks --------------------------------------------------------------------------- */

int vv_dht_content_record_check(const struct vv_dht_content_record *rec, const uint8_t *key)
{
    if (rec->content_id_len == 0 || rec->content_id_len > VV_DHT_CONTENT_ID_MAX ||
        rec->content_type_len > VV_DHT_CONTENT_TYPE_MAX)
        return VV_EDHT_TOO_LARGE;
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)rec->content_id, rec->content_id_len);
    if (sodium_memcmp(h, key, 32) == 0 || memcmp(rec->address, key, 32) == 0)
        return 0;
    return VV_EDHT_KEY_MISMATCH;
}

/* ---- lookups -------------------------------------------------------------------------- */

static uint32_t find_key(const struct vv_dht_providers *s, const uint8_t *key)
{
    return vv__dht_index_find(&s->key_ix, vv_keyed_hash64(key, VV_DHT_ID_BYTES), key);
}

static uint32_t find_ident(const struct vv_dht_providers *s, const struct vv_dht_contact *c)
{
    uint8_t k[IDENT_KEY_BYTES];
    ident_key(c->id, &c->addr, k);
    return vv__dht_index_find(&s->id_ix, vv_keyed_hash64(k, sizeof(k)), k);
}

static uint32_t intern_type(struct vv_dht_providers *s, const char *t, size_t len)
{
    if (len == 0)
        return 0;
    struct type_key tk = {t, len};
    uint64_t h = vv_keyed_hash64(t, len);
    uint32_t i = vv__dht_index_find(&s->type_ix, h, &tk);
    if (i != VV__DHT_NIL)
        return i;
    if (s->t_n >= VV_DHT_CONTENT_TYPES_MAX)
        return 0; /* too many distinct types: stored as "" */
    s->types = vv_xrealloc(s->types, (size_t)(s->t_n + 1) * sizeof(*s->types));
    i = s->t_n++;
    memcpy(s->types[i].s, t, len);
    s->types[i].len = (uint8_t)len;
    vv__dht_index_insert(&s->type_ix, h, i);
    return i;
}

static bool expired(const struct pent *e, uint64_t now)
{
    return (uint64_t)e->expires_s * 1000 <= now;
}

/* ---- removal -------------------------------------------------------------------------- */

static void remove_entry(struct vv_dht_providers *s, uint32_t i)
{
    struct pent *e = &s->e[i];
    struct kent *k = &s->k[e->key];
    /* Out of its key's list. */
    if (k->head == i) {
        k->head = e->key_next;
    } else {
        uint32_t p = k->head;
        while (s->e[p].key_next != i)
            p = s->e[p].key_next;
        s->e[p].key_next = e->key_next;
    }
    if (--k->n == 0) {
        vv__dht_index_remove(&s->key_ix, vv_keyed_hash64(k->key, VV_DHT_ID_BYTES), e->key);
        vv_free(k->cid);
        k->cid = NULL;
        k->used = false;
        k->next_free = s->k_free;
        s->k_free = e->key;
        s->k_count--;
    }
    /* Out of its source's list. */
    struct ident *d = &s->id[e->ident];
    uint32_t si = d->src;
    struct vv__dht_source *src = &s->sources.v[si];
    if (e->src_prev != VV__DHT_NIL)
        s->e[e->src_prev].src_next = e->src_next;
    else
        src->head = e->src_next;
    if (e->src_next != VV__DHT_NIL)
        s->e[e->src_next].src_prev = e->src_prev;
    else
        src->tail = e->src_prev;
    vv__dht_sources_add(&s->sources, si, -1, 0);
    /* Its identity, when no other entry names it. */
    if (--d->refs == 0) {
        uint8_t key[IDENT_KEY_BYTES];
        ident_key_of(d, key);
        vv__dht_index_remove(&s->id_ix, vv_keyed_hash64(key, sizeof(key)), e->ident);
        s->src_idents[si]--;
        d->src = s->id_free;
        s->id_free = e->ident;
        s->id_count--;
    }
    vv__dht_sources_release(&s->sources, si);
    e->ident = VV__DHT_NIL;
    e->key_next = s->e_free;
    s->e_free = i;
    s->e_count--;
}

/* Appends entry i to the tail of its source's list. */
static void source_append(struct vv_dht_providers *s, uint32_t i)
{
    struct pent *e = &s->e[i];
    struct vv__dht_source *src = &s->sources.v[s->id[e->ident].src];
    e->src_prev = src->tail;
    e->src_next = VV__DHT_NIL;
    if (src->tail != VV__DHT_NIL)
        s->e[src->tail].src_next = i;
    else
        src->head = i;
    src->tail = i;
}

static void source_unlink(struct vv_dht_providers *s, uint32_t i)
{
    struct pent *e = &s->e[i];
    struct vv__dht_source *src = &s->sources.v[s->id[e->ident].src];
    if (e->src_prev != VV__DHT_NIL)
        s->e[e->src_prev].src_next = e->src_next;
    else
        src->head = e->src_next;
    if (e->src_next != VV__DHT_NIL)
        s->e[e->src_next].src_prev = e->src_prev;
    else
        src->tail = e->src_prev;
}

/* Moves entry i to the tail of its key's list (most recent). */
static void key_to_tail(struct vv_dht_providers *s, uint32_t i)
{
    struct kent *k = &s->k[s->e[i].key];
    if (k->head == i) {
        k->head = s->e[i].key_next;
    } else {
        uint32_t p = k->head;
        while (s->e[p].key_next != i)
            p = s->e[p].key_next;
        s->e[p].key_next = s->e[i].key_next;
    }
    s->e[i].key_next = VV__DHT_NIL;
    if (k->head == VV__DHT_NIL) {
        k->head = i;
        return;
    }
    uint32_t t = k->head;
    while (s->e[t].key_next != VV__DHT_NIL)
        t = s->e[t].key_next;
    s->e[t].key_next = i;
}

static uint32_t source_count(const struct vv_dht_providers *s, const uint8_t *skey)
{
    uint32_t si = vv__dht_sources_find(&s->sources, skey);
    return si == VV__DHT_NIL ? 0 : s->sources.v[si].count;
}

/* A victim to make room: an expired entry a short probe finds, else the oldest entry of the
 * source holding the most, if it holds more than the requester's would. NIL otherwise. */
static uint32_t pick_victim(struct vv_dht_providers *s, const uint8_t *skey, uint64_t now)
{
    for (uint32_t k = 0; k < EXPIRED_PROBE && s->e_n > 0; k++) {
        uint32_t i = (s->sweep + k) % s->e_n;
        if (s->e[i].ident != VV__DHT_NIL && expired(&s->e[i], now))
            return i;
    }
    uint32_t L = vv__dht_sources_largest(&s->sources);
    if (L == VV__DHT_NIL || memcmp(s->sources.v[L].key, skey, VV__DHT_SOURCE_BYTES) == 0 ||
        s->sources.v[L].count <= source_count(s, skey) + 1)
        return VV__DHT_NIL;
    return s->sources.v[L].head;
}

/* ---- add ------------------------------------------------------------------------------ */

int vv_dht_providers_add(struct vv_dht_providers *s, const uint8_t *key,
                         const struct vv_dht_content_record *rec,
                         const struct vv_dht_contact *provider, uint64_t now)
{
    int rc = vv_dht_content_record_check(rec, key);
    if (rc != 0)
        return rc;
    if (rec->expires_ms <= now)
        return VV_EDHT_EXPIRY;
    uint64_t exp_ms = VV_MIN(rec->expires_ms, now + s->cfg.max_ttl_ms);
    uint64_t exp_s = VV_MIN((exp_ms + 999) / 1000, (uint64_t)UINT32_MAX);
    uint8_t skey[VV__DHT_SOURCE_BYTES];
    vv__dht_source_key(&provider->addr, skey);
    bool exempt = vv_dht_addr_diversity_exempt(&provider->addr);

    uint32_t ki = find_key(s, key), di = find_ident(s, provider);
    if (ki != VV__DHT_NIL && di != VV__DHT_NIL) {
        for (uint32_t i = s->k[ki].head; i != VV__DHT_NIL; i = s->e[i].key_next)
            if (s->e[i].ident == di) { /* a refresh */
                s->e[i].expires_s = (uint32_t)exp_s;
                key_to_tail(s, i);
                source_unlink(s, i);
                source_append(s, i);
                return 0;
            }
    }
    if (source_count(s, skey) + 1 > s->cfg.source_max_records)
        return VV_EDHT_QUOTA;
    if (di == VV__DHT_NIL) {
        uint32_t si = vv__dht_sources_find(&s->sources, skey);
        if (si != VV__DHT_NIL && s->src_idents[si] >= s->cfg.source_max_idents)
            return VV_EDHT_QUOTA;
        if (s->id_count >= s->cfg.max_idents)
            return VV_EDHT_FULL;
    }
    /* Room in the key: an expired entry, else its source's oldest beyond two, else the
     * key's oldest. */
    if (ki != VV__DHT_NIL) {
        uint32_t victim = VV__DHT_NIL, same = 0, same_oldest = VV__DHT_NIL;
        for (uint32_t i = s->k[ki].head; i != VV__DHT_NIL; i = s->e[i].key_next) {
            if (expired(&s->e[i], now) && victim == VV__DHT_NIL)
                victim = i;
            uint32_t si = s->id[s->e[i].ident].src;
            if (!exempt && memcmp(s->sources.v[si].key, skey, VV__DHT_SOURCE_BYTES) == 0) {
                if (same++ == 0)
                    same_oldest = i;
            }
        }
        if (victim == VV__DHT_NIL && same >= MAX_PER_SOURCE_IN_KEY)
            victim = same_oldest;
        if (victim == VV__DHT_NIL && s->k[ki].n >= VV_DHT_MAX_PROVIDERS)
            victim = s->k[ki].head;
        if (victim != VV__DHT_NIL) {
            bool last = s->k[ki].n == 1;
            remove_entry(s, victim);
            if (last)
                ki = VV__DHT_NIL;
            di = find_ident(s, provider);
        }
    }
    /* Room in the store. */
    for (int round = 0;; round++) {
        bool need_key = ki == VV__DHT_NIL && s->k_count >= s->cfg.max_keys;
        if (s->e_count < s->cfg.max_records && !need_key)
            break;
        uint32_t victim = round < MAX_EVICTIONS_PER_ADD ? pick_victim(s, skey, now) : VV__DHT_NIL;
        if (victim == VV__DHT_NIL)
            return VV_EDHT_FULL;
        remove_entry(s, victim);
        ki = find_key(s, key);
        di = find_ident(s, provider);
    }

    /* The key. */
    if (ki == VV__DHT_NIL) {
        if (s->k_free != VV__DHT_NIL) {
            ki = s->k_free;
            s->k_free = s->k[ki].next_free;
        } else {
            if (s->k_n == s->k_cap)
                s->k = grow(s->k, &s->k_cap, s->cfg.max_keys, sizeof(*s->k));
            ki = s->k_n++;
        }
        struct kent *k = &s->k[ki];
        memset(k, 0, sizeof(*k));
        memcpy(k->key, key, VV_DHT_ID_BYTES);
        memcpy(k->address, rec->address, 32);
        k->size = rec->size;
        k->created_ms = rec->created_ms;
        k->cid = vv_xmalloc(rec->content_id_len);
        memcpy(k->cid, rec->content_id, rec->content_id_len);
        k->cid_len = (uint8_t)rec->content_id_len;
        k->type = (uint16_t)intern_type(s, rec->content_type, rec->content_type_len);
        k->repl = rec->replication_factor;
        k->head = VV__DHT_NIL;
        k->used = true;
        vv__dht_index_insert(&s->key_ix, vv_keyed_hash64(key, VV_DHT_ID_BYTES), ki);
        s->k_count++;
    }
    /* The identity. */
    if (di == VV__DHT_NIL) {
        uint32_t si = vv__dht_sources_get(&s->sources, skey);
        if (si >= s->src_idents_cap) {
            uint32_t n = VV_MAX(2 * s->src_idents_cap, si + 1);
            s->src_idents = vv_xrealloc(s->src_idents, (size_t)n * sizeof(*s->src_idents));
            memset(s->src_idents + s->src_idents_cap, 0,
                   (size_t)(n - s->src_idents_cap) * sizeof(*s->src_idents));
            s->src_idents_cap = n;
        }
        if (s->id_free != VV__DHT_NIL) {
            di = s->id_free;
            s->id_free = s->id[di].src;
        } else {
            if (s->id_n == s->id_cap)
                s->id = grow(s->id, &s->id_cap, s->cfg.max_idents, sizeof(*s->id));
            di = s->id_n++;
        }
        struct ident *d = &s->id[di];
        memset(d, 0, sizeof(*d));
        memcpy(d->id, provider->id, VV_DHT_ID_BYTES);
        memcpy(d->ip, provider->addr.ip, 16);
        d->port = provider->addr.port;
        d->family = provider->addr.family;
        d->src = si;
        uint8_t k[IDENT_KEY_BYTES];
        ident_key(provider->id, &provider->addr, k);
        vv__dht_index_insert(&s->id_ix, vv_keyed_hash64(k, sizeof(k)), di);
        s->src_idents[si]++;
        s->id_count++;
    }
    /* The entry, at the tails of its key's and its source's lists. */
    uint32_t i;
    if (s->e_free != VV__DHT_NIL) {
        i = s->e_free;
        s->e_free = s->e[i].key_next;
    } else {
        if (s->e_n == s->e_cap)
            s->e = grow(s->e, &s->e_cap, s->cfg.max_records, sizeof(*s->e));
        i = s->e_n++;
    }
    struct pent *e = &s->e[i];
    e->ident = di;
    e->key = ki;
    e->key_next = VV__DHT_NIL;
    e->expires_s = (uint32_t)exp_s;
    s->id[di].refs++;
    struct kent *k = &s->k[ki];
    if (k->head == VV__DHT_NIL) {
        k->head = i;
    } else {
        uint32_t t = k->head;
        while (s->e[t].key_next != VV__DHT_NIL)
            t = s->e[t].key_next;
        s->e[t].key_next = i;
    }
    k->n++;
    source_append(s, i);
    vv__dht_sources_add(&s->sources, s->id[di].src, 1, 0);
    s->e_count++;
    return 0;
}

/* ---- reads and sweep ------------------------------------------------------------------ */

int vv_dht_providers_get(const struct vv_dht_providers *s, const uint8_t *key, uint64_t now,
                         struct vv_dht_content_record *rec, struct vv_dht_provider *out, size_t max)
{
    uint32_t ki = find_key(s, key);
    if (ki == VV__DHT_NIL)
        return VV_ENOTFOUND;
    const struct kent *k = &s->k[ki];
    uint32_t live[VV_DHT_MAX_PROVIDERS + 1];
    size_t n = 0;
    uint64_t latest = 0;
    for (uint32_t i = k->head; i != VV__DHT_NIL && n < VV_ARRAY_SIZE(live); i = s->e[i].key_next)
        if (!expired(&s->e[i], now)) {
            live[n++] = i;
            latest = VV_MAX(latest, (uint64_t)s->e[i].expires_s * 1000);
        }
    if (n == 0)
        return VV_ENOTFOUND;
    if (rec) {
        memset(rec, 0, sizeof(*rec));
        rec->content_id = k->cid;
        rec->content_id_len = k->cid_len;
        rec->content_type = s->types[k->type].s;
        rec->content_type_len = s->types[k->type].len;
        memcpy(rec->address, k->address, 32);
        rec->size = k->size;
        rec->created_ms = k->created_ms;
        rec->expires_ms = latest;
        rec->replication_factor = k->repl;
    }
    size_t w = 0;
    for (size_t j = n; j-- > 0 && w < max;) { /* most recent first */
        const struct pent *e = &s->e[live[j]];
        const struct ident *d = &s->id[e->ident];
        struct vv_dht_provider *p = &out[w++];
        memset(p, 0, sizeof(*p));
        memcpy(p->c.id, d->id, VV_DHT_ID_BYTES);
        memcpy(p->c.addr.ip, d->ip, 16);
        p->c.addr.port = d->port;
        p->c.addr.family = d->family;
        p->expires_ms = (uint64_t)e->expires_s * 1000;
    }
    return (int)w;
}

size_t vv_dht_providers_expire(struct vv_dht_providers *s, uint64_t now, size_t max_items)
{
    size_t dropped = 0;
    for (size_t k = 0; k < max_items && s->e_n > 0; k++) {
        uint32_t i = s->sweep;
        s->sweep = (s->sweep + 1) % s->e_n;
        if (s->e[i].ident != VV__DHT_NIL && expired(&s->e[i], now)) {
            remove_entry(s, i);
            dropped++;
        }
    }
    return dropped;
}

size_t vv_dht_providers_count(const struct vv_dht_providers *s)
{
    return s->e_count;
}

size_t vv_dht_providers_keys(const struct vv_dht_providers *s)
{
    return s->k_count;
}

size_t vv_dht_providers_idents(const struct vv_dht_providers *s)
{
    return s->id_count;
}

uint32_t vv_dht_providers_source_count(const struct vv_dht_providers *s,
                                       const struct vv_dht_addr *source)
{
    uint8_t skey[VV__DHT_SOURCE_BYTES];
    vv__dht_source_key(source, skey);
    return source_count(s, skey);
}

/* ---- self-check, for tests ------------------------------------------------------------ */

int vv__dht_providers_check(const struct vv_dht_providers *s)
{
    uint32_t entries = 0, keys = 0, idents = 0;
    uint32_t *refs = vv_xcalloc(s->id_n ? s->id_n : 1, sizeof(*refs));
    int bad = 0;
    for (uint32_t k = 0; k < s->k_n && !bad; k++) {
        const struct kent *ke = &s->k[k];
        if (!ke->used)
            continue;
        keys++;
        uint32_t n = 0;
        for (uint32_t i = ke->head; i != VV__DHT_NIL; i = s->e[i].key_next) {
            if (++n > VV_DHT_MAX_PROVIDERS || s->e[i].key != k || s->e[i].ident == VV__DHT_NIL) {
                bad = 1;
                break;
            }
            refs[s->e[i].ident]++;
        }
        entries += n;
        bad |= n != ke->n || n == 0 ||
               find_key(s, ke->key) != k; /* every key is found through the index */
    }
    for (uint32_t d = 0; d < s->id_n && !bad; d++)
        if (s->id[d].refs > 0) {
            idents++;
            bad |= refs[d] != s->id[d].refs;
        } else {
            bad |= refs[d] != 0;
        }
    uint32_t by_sources = 0;
    for (uint32_t si = 0; si < s->sources.n && !bad; si++) {
        const struct vv__dht_source *src = &s->sources.v[si];
        if (!src->used)
            continue;
        uint32_t n = 0, prev = VV__DHT_NIL;
        for (uint32_t i = src->head; i != VV__DHT_NIL; i = s->e[i].src_next) {
            if (s->e[i].src_prev != prev || s->id[s->e[i].ident].src != si || ++n > s->e_n) {
                bad = 1;
                break;
            }
            prev = i;
        }
        bad |= n != src->count || src->tail != prev || n == 0;
        by_sources += n;
    }
    bad |= !vv__dht_sources_ok(&s->sources);
    bad |= entries != s->e_count || keys != s->k_count || idents != s->id_count ||
           by_sources != s->e_count || s->key_ix.count != s->k_count ||
           s->id_ix.count != s->id_count || entries > s->cfg.max_records ||
           keys > s->cfg.max_keys || idents > s->cfg.max_idents;
    vv_free(refs);
    return bad ? VV_ESTATE : 0;
}
