/*
 * The Kademlia routing table: 256 buckets of at most k contacts, bucket i holding the
 * contacts whose IDs share exactly i leading bits with ours, each kept least recently seen
 * first. A full bucket takes a newcomer only when an old entry fails: the oldest is pinged
 * (the caller does that and reports the outcome) and the newcomer waits in the bucket's
 * replacement cache meanwhile (Kademlia 2.2 and 4.1). Old contacts that still answer are
 * never pushed out by new ones, which is what makes the table hard to flood.
 *
 * Diversity limits bound what one operator with one /24 (or /64) can occupy: two entries
 * per bucket and ten in the table, loopback and private ranges exempt.
 *
 * Memory: a bucket's entry and cache arrays are allocated on first use (k entries of at most
 * 64 bytes each), so a node in a network of N nodes holds about log2(N) full buckets.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/dht_core.h"

struct rt_entry {
    uint8_t id[VV_DHT_ID_BYTES];
    uint8_t ip[16];
    uint64_t last_seen_ms; /* last answer, or when it was offered */
    uint16_t port;
    uint16_t rtt_ms;  /* smoothed (7/8 old + 1/8 new), 0 = unknown */
    uint8_t family;   /* enum vv_dht_family */
    uint8_t failures; /* consecutive failed queries, saturating */
};
_Static_assert(sizeof(struct rt_entry) <= 64, "a routing entry must fit 64 bytes");

struct bucket {
    struct rt_entry *e;     /* VV_DHT_K slots once used; [0] least recently seen */
    struct rt_entry *cache; /* VV_DHT_K slots once used; [0] offered longest ago */
    uint8_t n, n_cache;
    bool ping_pending; /* we asked the caller to ping ping_id */
    uint8_t ping_id[VV_DHT_ID_BYTES];
    uint64_t ping_since_ms;
    uint64_t touched_ms; /* last contact added or answering, or lookup into it */
};

struct vv_dht_rt {
    uint8_t self[VV_DHT_ID_BYTES];
    size_t size;
    struct bucket b[VV_DHT_ID_BITS];
};

/* ---- entries -------------------------------------------------------------------------- */

static void entry_addr(const struct rt_entry *e, struct vv_dht_addr *a)
{
    memset(a, 0, sizeof(*a));
    memcpy(a->ip, e->ip, 16);
    a->port = e->port;
    a->family = e->family;
}

static void entry_contact(const struct rt_entry *e, struct vv_dht_contact *c)
{
    memcpy(c->id, e->id, VV_DHT_ID_BYTES);
    entry_addr(e, &c->addr);
}

static void entry_set(struct rt_entry *e, const struct vv_dht_contact *c, uint64_t now)
{
    memset(e, 0, sizeof(*e));
    memcpy(e->id, c->id, VV_DHT_ID_BYTES);
    memcpy(e->ip, c->addr.ip, 16);
    e->port = c->addr.port;
    e->family = c->addr.family;
    e->last_seen_ms = now;
}

static void entry_report(const struct rt_entry *e, struct vv_dht_rt_entry *out)
{
    entry_contact(e, &out->c);
    out->last_seen_ms = e->last_seen_ms;
    out->rtt_ms = e->rtt_ms;
    out->failures = e->failures;
}

static bool addr_ok(const struct vv_dht_addr *a)
{
    uint8_t compact[VV_DHT_ADDR_COMPACT_MAX];
    struct vv_dht_addr back;
    if (a->family != VV_DHT_INET4 && a->family != VV_DHT_INET6)
        return false;
    size_t n = vv_dht_addr_to_compact(a, compact);
    return vv_dht_addr_from_compact(compact, n, &back) == 0 && vv_dht_addr_equal(a, &back);
}

static int find_in(const struct rt_entry *arr, uint8_t n, const uint8_t *id)
{
    for (int i = 0; i < n; i++)
        if (memcmp(arr[i].id, id, VV_DHT_ID_BYTES) == 0)
            return i;
    return -1;
}

static void remove_at(struct rt_entry *arr, uint8_t *n, int i)
{
    memmove(&arr[i], &arr[i + 1], (size_t)(*n - i - 1) * sizeof(*arr));
    (*n)--;
}

/* Moves entry i to the tail (most recently seen). */
static void move_to_tail(struct rt_entry *arr, uint8_t n, int i)
{
    struct rt_entry e = arr[i];
    memmove(&arr[i], &arr[i + 1], (size_t)(n - i - 1) * sizeof(*arr));
    arr[n - 1] = e;
}

static void bucket_alloc(struct bucket *b)
{
    if (b->e == NULL) {
        b->e = vv_xcalloc(VV_DHT_K, sizeof(*b->e));
        b->cache = vv_xcalloc(VV_DHT_K, sizeof(*b->cache));
    }
}

static unsigned bucket_of(const struct vv_dht_rt *rt, const uint8_t *id)
{
    return vv_dht_common_prefix(rt->self, id);
}

/* ---- diversity ------------------------------------------------------------------------ */

static bool same_prefix(const struct rt_entry *e, const uint8_t *prefix)
{
    struct vv_dht_addr a;
    uint8_t p[VV_DHT_PREFIX_BYTES];
    entry_addr(e, &a);
    vv_dht_addr_prefix(&a, p);
    return memcmp(p, prefix, VV_DHT_PREFIX_BYTES) == 0;
}

static unsigned count_prefix(const struct rt_entry *arr, uint8_t n, const uint8_t *prefix)
{
    unsigned c = 0;
    for (uint8_t i = 0; i < n; i++)
        c += same_prefix(&arr[i], prefix);
    return c;
}

/* Why a contact with this address may not join bucket bi's entries, or NONE. The table-wide
 * count walks every bucket: at most 256 * k entries, a few hundred in practice. */
static enum vv_dht_reject diversity(const struct vv_dht_rt *rt, unsigned bi,
                                    const struct vv_dht_addr *a)
{
    if (vv_dht_addr_diversity_exempt(a))
        return VV_DHT_REJECT_NONE;
    uint8_t prefix[VV_DHT_PREFIX_BYTES];
    vv_dht_addr_prefix(a, prefix);
    if (count_prefix(rt->b[bi].e, rt->b[bi].n, prefix) >= VV_DHT_MAX_PER_PREFIX_BUCKET)
        return VV_DHT_REJECT_PREFIX_BUCKET;
    unsigned total = 0;
    for (unsigned i = 0; i < VV_DHT_ID_BITS; i++)
        total += count_prefix(rt->b[i].e, rt->b[i].n, prefix);
    return total >= VV_DHT_MAX_PER_PREFIX_TABLE ? VV_DHT_REJECT_PREFIX_TABLE : VV_DHT_REJECT_NONE;
}

/* Puts a candidate in the bucket's replacement cache (at the tail), keeping at most
 * VV_DHT_MAX_PER_PREFIX_BUCKET of one prefix there too, so one /24 cannot fill the cache. */
static void cache_put(struct bucket *b, const struct vv_dht_contact *c, uint64_t now)
{
    int i = find_in(b->cache, b->n_cache, c->id);
    if (i >= 0)
        remove_at(b->cache, &b->n_cache, i);
    if (!vv_dht_addr_diversity_exempt(&c->addr)) {
        uint8_t prefix[VV_DHT_PREFIX_BYTES];
        vv_dht_addr_prefix(&c->addr, prefix);
        if (count_prefix(b->cache, b->n_cache, prefix) >= VV_DHT_MAX_PER_PREFIX_BUCKET) {
            for (int j = 0; j < b->n_cache; j++)
                if (same_prefix(&b->cache[j], prefix)) {
                    remove_at(b->cache, &b->n_cache, j);
                    break;
                }
        }
    }
    if (b->n_cache == VV_DHT_K)
        remove_at(b->cache, &b->n_cache, 0);
    entry_set(&b->cache[b->n_cache++], c, now);
}

/* Moves the most recently offered cached candidate that passes the diversity limits into the
 * bucket's entries. Returns true if one moved (*out filled when out is not NULL). */
static bool promote(struct vv_dht_rt *rt, unsigned bi, struct vv_dht_contact *out)
{
    struct bucket *b = &rt->b[bi];
    if (b->n >= VV_DHT_K)
        return false;
    for (int i = b->n_cache - 1; i >= 0; i--) {
        struct vv_dht_contact c;
        entry_contact(&b->cache[i], &c);
        if (diversity(rt, bi, &c.addr) != VV_DHT_REJECT_NONE)
            continue;
        b->e[b->n] = b->cache[i];
        b->e[b->n].failures = 0;
        /* It has not answered since it was offered: the head of the order by last seen,
         * not the tail, is where it belongs; insert where its time puts it. */
        int pos = b->n;
        while (pos > 0 && b->e[pos - 1].last_seen_ms > b->e[pos].last_seen_ms) {
            struct rt_entry t = b->e[pos - 1];
            b->e[pos - 1] = b->e[pos];
            b->e[pos] = t;
            pos--;
        }
        b->n++;
        rt->size++;
        remove_at(b->cache, &b->n_cache, i);
        if (out)
            *out = c;
        return true;
    }
    return false;
}

static void clear_ping(struct bucket *b, const uint8_t *id)
{
    if (b->ping_pending && memcmp(b->ping_id, id, VV_DHT_ID_BYTES) == 0)
        b->ping_pending = false;
}

/* ---- the table ------------------------------------------------------------------------ */

struct vv_dht_rt *vv_dht_rt_new(const uint8_t self[VV_DHT_ID_BYTES])
{
    struct vv_dht_rt *rt = vv_xcalloc(1, sizeof(*rt));
    memcpy(rt->self, self, VV_DHT_ID_BYTES);
    return rt;
}

void vv_dht_rt_free(struct vv_dht_rt *rt)
{
    if (rt == NULL)
        return;
    for (unsigned i = 0; i < VV_DHT_ID_BITS; i++) {
        vv_free(rt->b[i].e);
        vv_free(rt->b[i].cache);
    }
    vv_free(rt);
}

void vv_dht_rt_offer(struct vv_dht_rt *rt, const struct vv_dht_contact *c, uint64_t now,
                     struct vv_dht_offer_result *out)
{
    memset(out, 0, sizeof(*out));
    out->outcome = VV_DHT_OFFER_REJECTED;
    if (!addr_ok(&c->addr)) {
        out->reject = VV_DHT_REJECT_BAD_ADDRESS;
        return;
    }
    unsigned bi = bucket_of(rt, c->id);
    if (bi >= VV_DHT_ID_BITS) {
        out->reject = VV_DHT_REJECT_SELF;
        return;
    }
    struct bucket *b = &rt->b[bi];
    bucket_alloc(b);
    int i = find_in(b->e, b->n, c->id);
    if (i >= 0) {
        struct vv_dht_addr known;
        entry_addr(&b->e[i], &known);
        if (!vv_dht_addr_equal(&known, &c->addr)) {
            out->reject = VV_DHT_REJECT_ADDR_CHANGED;
            return;
        }
        b->e[i].last_seen_ms = now;
        b->e[i].failures = 0;
        move_to_tail(b->e, b->n, i);
        b->touched_ms = now;
        clear_ping(b, c->id);
        out->outcome = VV_DHT_OFFER_UPDATED;
        return;
    }
    enum vv_dht_reject why = diversity(rt, bi, &c->addr);
    if (why != VV_DHT_REJECT_NONE) {
        out->reject = why;
        return;
    }
    int ci = find_in(b->cache, b->n_cache, c->id);
    if (b->n < VV_DHT_K) {
        if (ci >= 0)
            remove_at(b->cache, &b->n_cache, ci);
        entry_set(&b->e[b->n++], c, now);
        rt->size++;
        b->touched_ms = now;
        out->outcome = VV_DHT_OFFER_ADDED;
        return;
    }
    /* Full. A stale entry (the one that failed most, oldest first) gives way at once. */
    int stale = -1;
    for (int j = 0; j < b->n; j++)
        if (b->e[j].failures >= VV_DHT_MAX_FAILURES &&
            (stale < 0 || b->e[j].failures > b->e[stale].failures))
            stale = j;
    if (stale >= 0) {
        if (ci >= 0)
            remove_at(b->cache, &b->n_cache, ci);
        out->evicted_valid = true;
        entry_contact(&b->e[stale], &out->evicted);
        clear_ping(b, b->e[stale].id);
        remove_at(b->e, &b->n, stale);
        entry_set(&b->e[b->n++], c, now);
        b->touched_ms = now;
        out->outcome = VV_DHT_OFFER_ADDED;
        return;
    }
    cache_put(b, c, now);
    if (b->ping_pending && now - b->ping_since_ms < VV_DHT_PING_PENDING_MS) {
        out->outcome = VV_DHT_OFFER_CACHED;
        return;
    }
    b->ping_pending = true;
    b->ping_since_ms = now;
    memcpy(b->ping_id, b->e[0].id, VV_DHT_ID_BYTES);
    entry_contact(&b->e[0], &out->ping);
    out->outcome = VV_DHT_OFFER_NEEDS_PING;
}

static struct bucket *locate(struct vv_dht_rt *rt, const uint8_t *id, int *idx, unsigned *bi)
{
    *bi = bucket_of(rt, id);
    if (*bi >= VV_DHT_ID_BITS)
        return NULL;
    struct bucket *b = &rt->b[*bi];
    *idx = find_in(b->e, b->n, id);
    return *idx >= 0 ? b : NULL;
}

int vv_dht_rt_seen(struct vv_dht_rt *rt, const uint8_t *id, uint32_t rtt_ms, uint64_t now)
{
    int i;
    unsigned bi;
    struct bucket *b = locate(rt, id, &i, &bi);
    if (b == NULL)
        return VV_ENOTFOUND;
    struct rt_entry *e = &b->e[i];
    e->last_seen_ms = now;
    e->failures = 0;
    if (rtt_ms > 0) {
        uint32_t s = VV_MIN(rtt_ms, UINT16_MAX);
        e->rtt_ms = (uint16_t)(e->rtt_ms == 0 ? s : (7u * e->rtt_ms + s) / 8);
    }
    move_to_tail(b->e, b->n, i);
    b->touched_ms = now;
    clear_ping(b, id);
    return 0;
}

/* Removes entry i of bucket bi and promotes a cached candidate in its place if one passes
 * the limits; if none does and keep_if_none, the entry stays (at the head). */
static int evict(struct vv_dht_rt *rt, unsigned bi, int i, bool keep_if_none,
                 struct vv_dht_contact *promoted)
{
    struct bucket *b = &rt->b[bi];
    struct rt_entry gone = b->e[i];
    clear_ping(b, gone.id);
    remove_at(b->e, &b->n, i);
    rt->size--;
    if (promote(rt, bi, promoted))
        return 1;
    if (keep_if_none) {
        memmove(&b->e[1], &b->e[0], (size_t)b->n * sizeof(*b->e));
        b->e[0] = gone;
        b->n++;
        rt->size++;
    }
    return 0;
}

int vv_dht_rt_ping_result(struct vv_dht_rt *rt, const uint8_t *id, bool answered, uint64_t now,
                          struct vv_dht_contact *promoted)
{
    if (answered)
        return vv_dht_rt_seen(rt, id, 0, now);
    int i;
    unsigned bi;
    if (locate(rt, id, &i, &bi) == NULL)
        return VV_ENOTFOUND;
    return evict(rt, bi, i, false, promoted);
}

int vv_dht_rt_failed(struct vv_dht_rt *rt, const uint8_t *id, uint64_t now,
                     struct vv_dht_contact *promoted)
{
    (void)now;
    int i;
    unsigned bi;
    struct bucket *b = locate(rt, id, &i, &bi);
    if (b == NULL)
        return VV_ENOTFOUND;
    if (b->e[i].failures < UINT8_MAX)
        b->e[i].failures++;
    if (b->e[i].failures < VV_DHT_MAX_FAILURES || b->n_cache == 0)
        return 0;
    return evict(rt, bi, i, true, promoted);
}

int vv_dht_rt_remove(struct vv_dht_rt *rt, const uint8_t *id)
{
    int i;
    unsigned bi;
    struct bucket *b = locate(rt, id, &i, &bi);
    if (b == NULL)
        return VV_ENOTFOUND;
    clear_ping(b, id);
    remove_at(b->e, &b->n, i);
    rt->size--;
    return 0;
}

int vv_dht_rt_find(const struct vv_dht_rt *rt, const uint8_t *id, struct vv_dht_rt_entry *out)
{
    unsigned bi = bucket_of(rt, id);
    if (bi >= VV_DHT_ID_BITS)
        return VV_ENOTFOUND;
    const struct bucket *b = &rt->b[bi];
    int i = find_in(b->e, b->n, id);
    if (i < 0)
        return VV_ENOTFOUND;
    if (out)
        entry_report(&b->e[i], out);
    return 0;
}

size_t vv_dht_rt_size(const struct vv_dht_rt *rt)
{
    return rt->size;
}

size_t vv_dht_rt_bucket_size(const struct vv_dht_rt *rt, unsigned bucket)
{
    return bucket < VV_DHT_ID_BITS ? rt->b[bucket].n : 0;
}

size_t vv_dht_rt_bucket_cached(const struct vv_dht_rt *rt, unsigned bucket)
{
    return bucket < VV_DHT_ID_BITS ? rt->b[bucket].n_cache : 0;
}

size_t vv_dht_rt_bucket_entries(const struct vv_dht_rt *rt, unsigned bucket,
                                struct vv_dht_rt_entry *out, size_t max)
{
    if (bucket >= VV_DHT_ID_BITS)
        return 0;
    size_t n = VV_MIN((size_t)rt->b[bucket].n, max);
    for (size_t i = 0; i < n; i++)
        entry_report(&rt->b[bucket].e[i], &out[i]);
    return n;
}

/* ---- closest -------------------------------------------------------------------------- */

static int by_distance(const void *a, const void *b, void *target)
{
    return vv_dht_distance_cmp(target, ((const struct rt_entry *)a)->id,
                               ((const struct rt_entry *)b)->id);
}

/* Appends the entries of buckets [lo, hi] (fresh or stale ones by pass) to out, nearest first,
 * up to n in all. */
static size_t take_group(const struct vv_dht_rt *rt, unsigned lo, unsigned hi, bool stale,
                         const uint8_t *target, struct rt_entry *tmp, size_t have, size_t n,
                         struct vv_dht_contact *out)
{
    size_t m = 0;
    for (unsigned bi = lo; bi <= hi && bi < VV_DHT_ID_BITS; bi++)
        for (uint8_t i = 0; i < rt->b[bi].n; i++)
            if ((rt->b[bi].e[i].failures >= VV_DHT_MAX_FAILURES) == stale)
                tmp[m++] = rt->b[bi].e[i];
    qsort_r(tmp, m, sizeof(*tmp), by_distance, (void *)target);
    for (size_t i = 0; i < m && have < n; i++)
        entry_contact(&tmp[i], &out[have++]);
    return have;
}

size_t vv_dht_rt_closest(const struct vv_dht_rt *rt, const uint8_t *target, size_t n,
                         struct vv_dht_contact *out)
{
    /*
     * With t = common_prefix(self, target), the entries of bucket t are nearest to target
     * (they agree with it on bit t), then all buckets deeper than t together (their distance's
     * top bit is t), then buckets t-1, t-2, ... 0, each bucket j at distance with top bit j.
     * So groups are taken in that order and only sorted within, never the whole table.
     */
    unsigned t = vv_dht_common_prefix(rt->self, target);
    size_t have = 0;
    if (n == 0 || rt->size == 0)
        return 0;
    struct rt_entry *tmp = vv_xmalloc(rt->size * sizeof(*tmp));
    for (int pass = 0; pass < 2 && have < n; pass++) {
        bool stale = pass == 1;
        if (t < VV_DHT_ID_BITS) {
            have = take_group(rt, t, t, stale, target, tmp, have, n, out);
            if (have < n && t + 1 < VV_DHT_ID_BITS)
                have = take_group(rt, t + 1, VV_DHT_ID_BITS - 1, stale, target, tmp, have, n, out);
        }
        for (int j = (int)VV_MIN(t, VV_DHT_ID_BITS) - 1; j >= 0 && have < n; j--)
            have = take_group(rt, (unsigned)j, (unsigned)j, stale, target, tmp, have, n, out);
    }
    vv_free(tmp);
    return have;
}

/* ---- refresh -------------------------------------------------------------------------- */

size_t vv_dht_rt_idle_buckets(const struct vv_dht_rt *rt, uint64_t now, uint64_t period_ms,
                              uint8_t *out)
{
    int deepest = -1;
    for (int i = VV_DHT_ID_BITS - 1; i >= 0; i--)
        if (rt->b[i].n > 0) {
            deepest = i;
            break;
        }
    size_t n = 0;
    int last = VV_MIN(deepest + 1, VV_DHT_ID_BITS - 1);
    for (int i = 0; i <= last; i++)
        if (now - rt->b[i].touched_ms >= period_ms || now < rt->b[i].touched_ms)
            out[n++] = (uint8_t)i;
    return n;
}

void vv_dht_rt_touch_bucket(struct vv_dht_rt *rt, unsigned bucket, uint64_t now)
{
    if (bucket < VV_DHT_ID_BITS)
        rt->b[bucket].touched_ms = now;
}

/* ---- snapshot ------------------------------------------------------------------------- */

/*
 * Format, version 1 (all integers big-endian):
 *   "VVRT" (4) | version u8 = 1 | own node ID (32) | count u32 |
 *   count x { node ID (32) | family u8 (4 or 6) | ip (16; IPv4 in the first 4, rest 0) |
 *             port u16 }
 * The length must be exactly 41 + 51 * count, count at most 256 * k.
 */
#define SNAP_MAGIC       "VVRT"
#define SNAP_VERSION     1
#define SNAP_HEADER      (4 + 1 + VV_DHT_ID_BYTES + 4)
#define SNAP_ENTRY       (VV_DHT_ID_BYTES + 1 + 16 + 2)
#define SNAP_MAX_ENTRIES (VV_DHT_ID_BITS * VV_DHT_K)

void vv_dht_rt_snapshot(const struct vv_dht_rt *rt, uint8_t **buf, size_t *len)
{
    size_t n = SNAP_HEADER + rt->size * SNAP_ENTRY;
    uint8_t *p = vv_xmalloc(n), *w = p;
    memcpy(w, SNAP_MAGIC, 4);
    w[4] = SNAP_VERSION;
    memcpy(w + 5, rt->self, VV_DHT_ID_BYTES);
    uint32_t count = htonl((uint32_t)rt->size);
    memcpy(w + 5 + VV_DHT_ID_BYTES, &count, 4);
    w += SNAP_HEADER;
    for (unsigned bi = 0; bi < VV_DHT_ID_BITS; bi++)
        for (uint8_t i = 0; i < rt->b[bi].n; i++) {
            const struct rt_entry *e = &rt->b[bi].e[i];
            memcpy(w, e->id, VV_DHT_ID_BYTES);
            w[32] = e->family;
            memcpy(w + 33, e->ip, 16);
            w[49] = (uint8_t)(e->port >> 8);
            w[50] = (uint8_t)e->port;
            w += SNAP_ENTRY;
        }
    *buf = p;
    *len = n;
}

int vv_dht_rt_restore(struct vv_dht_rt *rt, const uint8_t *buf, size_t len, uint64_t now,
                      size_t *restored)
{
    size_t took = 0;
    if (restored)
        *restored = 0;
    if (buf == NULL || len < SNAP_HEADER || memcmp(buf, SNAP_MAGIC, 4) != 0 ||
        buf[4] != SNAP_VERSION || memcmp(buf + 5, rt->self, VV_DHT_ID_BYTES) != 0)
        return VV_EDHT_SNAPSHOT;
    uint32_t count;
    memcpy(&count, buf + 5 + VV_DHT_ID_BYTES, 4);
    count = ntohl(count);
    if (count > SNAP_MAX_ENTRIES || len != SNAP_HEADER + (size_t)count * SNAP_ENTRY)
        return VV_EDHT_SNAPSHOT;
    const uint8_t *r = buf + SNAP_HEADER;
    for (uint32_t k = 0; k < count; k++, r += SNAP_ENTRY) {
        struct vv_dht_contact c;
        memset(&c, 0, sizeof(c));
        memcpy(c.id, r, VV_DHT_ID_BYTES);
        c.addr.family = r[32];
        memcpy(c.addr.ip, r + 33, 16);
        c.addr.port = (uint16_t)(r[49] << 8 | r[50]);
        if (!addr_ok(&c.addr)) {
            if (restored)
                *restored = took;
            return VV_EDHT_SNAPSHOT;
        }
        struct vv_dht_offer_result res;
        vv_dht_rt_offer(rt, &c, now, &res);
        took += res.outcome == VV_DHT_OFFER_ADDED;
    }
    if (restored)
        *restored = took;
    return 0;
}
