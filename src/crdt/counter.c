/*
 * G-Counter and PN-Counter. One representation serves both: per replica, the total of its
 * increments (p) and of its decrements (n), sorted by replica; a G-Counter never has n.
 * The join is the pointwise maximum, which is why only the owning replica may change its own
 * entry, and why an entry's p + n counts that replica's history (its state-vector counter):
 * two copies of the same entry are always one a prefix of the other.
 *
 * An update is the changed entry alone, in the state format.
 */
#include <string.h>

#include "crdt/types_internal.h"

struct centry {
    uint64_t replica;
    uint64_t p, n; /* totals, p + n never above UINT64_MAX */
};

struct counter {
    bool pn;
    size_t len, cap;
    struct centry *e; /* sorted by replica, no two equal, never p == n == 0 */
};

struct vv_gcounter {
    struct counter c;
};
struct vv_pncounter {
    struct counter c;
};

static void counter_free(struct counter *c)
{
    vv_free(c->e);
    c->e = NULL;
    c->len = c->cap = 0;
}

/* Index of replica, or of where it would be inserted. */
static size_t counter_find(const struct counter *c, uint64_t replica)
{
    size_t lo = 0, hi = c->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->e[mid].replica < replica)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct centry *counter_slot(struct counter *c, uint64_t replica)
{
    size_t i = counter_find(c, replica);
    if (i < c->len && c->e[i].replica == replica)
        return &c->e[i];
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        c->e = vv_xrealloc(c->e, c->cap * sizeof(*c->e));
    }
    memmove(&c->e[i + 1], &c->e[i], (c->len - i) * sizeof(*c->e));
    c->len++;
    c->e[i] = (struct centry){.replica = replica};
    return &c->e[i];
}

static void counter_write_entry(struct vv__crdt_w *w, bool pn, const struct centry *e)
{
    vv__crdt_w_u64be(w, e->replica);
    vv__crdt_w_varint(w, e->p);
    if (pn)
        vv__crdt_w_varint(w, e->n);
}

static void counter_encode_some(const struct counter *c, const struct vv_crdt_sv *since,
                                uint8_t **out, size_t *out_len)
{
    struct vv__crdt_w w;
    vv__crdt_w_init(&w, c->pn ? VV_CRDT_PNCOUNTER : VV_CRDT_GCOUNTER);
    size_t n = 0;
    for (size_t i = 0; i < c->len; i++)
        if (!since || c->e[i].p + c->e[i].n > vv_crdt_sv_get(since, c->e[i].replica))
            n++;
    vv__crdt_w_varint(&w, n);
    for (size_t i = 0; i < c->len; i++)
        if (!since || c->e[i].p + c->e[i].n > vv_crdt_sv_get(since, c->e[i].replica))
            counter_write_entry(&w, c->pn, &c->e[i]);
    vv__crdt_w_finish(&w, out, out_len);
}

static int counter_decode(const uint8_t *buf, size_t len, bool pn, struct counter *out)
{
    struct vv__crdt_r r;
    if (vv__crdt_r_init(&r, buf, len, pn ? VV_CRDT_PNCOUNTER : VV_CRDT_GCOUNTER))
        return VV_ECRDT_DECODE;
    size_t n = vv__crdt_r_count(&r, VV_CRDT_MAX_REPLICAS, pn ? 10 : 9);
    if (r.err)
        return VV_ECRDT_DECODE;
    struct centry *e = n ? vv_xcalloc(n, sizeof(*e)) : NULL;
    for (size_t i = 0; i < n && !r.err; i++) {
        e[i].replica = vv__crdt_r_replica(&r);
        e[i].p = vv__crdt_r_varint(&r);
        e[i].n = pn ? vv__crdt_r_varint(&r) : 0;
        if ((i > 0 && e[i].replica <= e[i - 1].replica) || (e[i].p == 0 && e[i].n == 0) ||
            e[i].p + e[i].n < e[i].p)
            r.err = true;
    }
    if (vv__crdt_r_done(&r)) {
        vv_free(e);
        return VV_ECRDT_DECODE;
    }
    *out = (struct counter){.pn = pn, .len = n, .cap = n, .e = e};
    return 0;
}

/* Refuses (VV_ECRDT_RANGE, dst unchanged) a merge whose p + n would overflow: only hostile
 * entries can do that, since one replica's history never has more than UINT64_MAX events.
 * Refuses (VV_ELIMIT) one that would pass VV_CRDT_MAX_REPLICAS entries, which no peer would
 * decode. */
static int counter_merge(struct counter *dst, const struct counter *src)
{
    size_t added = 0;
    for (size_t i = 0; i < src->len; i++) {
        size_t j = counter_find(dst, src->e[i].replica);
        if (j == dst->len || dst->e[j].replica != src->e[i].replica) {
            added++;
        } else {
            uint64_t p = VV_MAX(dst->e[j].p, src->e[i].p), n = VV_MAX(dst->e[j].n, src->e[i].n);
            if (p + n < p)
                return VV_ECRDT_RANGE;
        }
    }
    if (dst->len + added > VV_CRDT_MAX_REPLICAS)
        return VV_ELIMIT;
    for (size_t i = 0; i < src->len; i++) {
        struct centry *d = counter_slot(dst, src->e[i].replica);
        d->p = VV_MAX(d->p, src->e[i].p);
        d->n = VV_MAX(d->n, src->e[i].n);
    }
    return 0;
}

static int counter_apply(struct counter *c, const uint8_t *buf, size_t len)
{
    struct counter d;
    int rc = counter_decode(buf, len, c->pn, &d);
    if (rc)
        return rc;
    rc = counter_merge(c, &d);
    counter_free(&d);
    return rc;
}

static int counter_add(struct counter *c, uint64_t replica, uint64_t up, uint64_t down,
                       uint8_t **delta, size_t *delta_len)
{
    if (replica == 0 || (up == 0 && down == 0))
        return VV_EINVAL;
    size_t i = counter_find(c, replica);
    struct centry cur = {.replica = replica};
    if (i < c->len && c->e[i].replica == replica)
        cur = c->e[i];
    /* The history count p + n must stay representable too. */
    if (cur.p + up < cur.p || cur.n + down < cur.n || cur.p + up + cur.n + down < cur.p + up)
        return VV_ECRDT_RANGE;
    struct centry *e = counter_slot(c, replica);
    e->p += up;
    e->n += down;
    if (delta) {
        struct counter one = {.pn = c->pn, .len = 1, .cap = 1, .e = e};
        counter_encode_some(&one, NULL, delta, delta_len);
    }
    return 0;
}

static int counter_state_vector(const struct counter *c, struct vv_crdt_sv *out)
{
    out->n = c->len;
    out->e = c->len ? vv_xcalloc(c->len, sizeof(*out->e)) : NULL;
    for (size_t i = 0; i < c->len; i++)
        out->e[i] = (struct vv_crdt_sv_entry){c->e[i].replica, c->e[i].p + c->e[i].n};
    return 0;
}

static int64_t counter_value(const struct counter *c)
{
    __int128 sum = 0; /* at most 65536 entries of 2^64 each: no overflow */
    for (size_t i = 0; i < c->len; i++)
        sum += (__int128)c->e[i].p - (__int128)c->e[i].n;
    if (sum > INT64_MAX)
        return INT64_MAX;
    if (sum < INT64_MIN)
        return INT64_MIN;
    return (int64_t)sum;
}

/* ---- G-Counter ---------------------------------------------------------------------------- */

struct vv_gcounter *vv_gcounter_new(void)
{
    struct vv_gcounter *c = vv_xcalloc(1, sizeof(*c));
    c->c.pn = false;
    return c;
}

void vv_gcounter_free(struct vv_gcounter *c)
{
    if (!c)
        return;
    counter_free(&c->c);
    vv_free(c);
}

int vv_gcounter_increment(struct vv_gcounter *c, uint64_t replica, uint64_t amount, uint8_t **delta,
                          size_t *delta_len)
{
    return counter_add(&c->c, replica, amount, 0, delta, delta_len);
}

int64_t vv_gcounter_value(const struct vv_gcounter *c)
{
    return counter_value(&c->c);
}

int vv_gcounter_apply(struct vv_gcounter *c, const uint8_t *buf, size_t len)
{
    return counter_apply(&c->c, buf, len);
}

int vv_gcounter_merge(struct vv_gcounter *dst, const struct vv_gcounter *src)
{
    return counter_merge(&dst->c, &src->c);
}

int vv_gcounter_encode(const struct vv_gcounter *c, uint8_t **out, size_t *out_len)
{
    counter_encode_some(&c->c, NULL, out, out_len);
    return 0;
}

int vv_gcounter_decode(const uint8_t *buf, size_t len, struct vv_gcounter **out)
{
    struct counter d;
    int rc = counter_decode(buf, len, false, &d);
    if (rc)
        return rc;
    *out = vv_xcalloc(1, sizeof(**out));
    (*out)->c = d;
    return 0;
}

int vv_gcounter_state_vector(const struct vv_gcounter *c, struct vv_crdt_sv *out)
{
    return counter_state_vector(&c->c, out);
}

int vv_gcounter_delta_since(const struct vv_gcounter *c, const struct vv_crdt_sv *sv, uint8_t **out,
                            size_t *out_len)
{
    if (!sv)
        return VV_EINVAL;
    counter_encode_some(&c->c, sv, out, out_len);
    return 0;
}

json_t *vv_gcounter_to_json(const struct vv_gcounter *c)
{
    return json_integer(counter_value(&c->c));
}

/* ---- PN-Counter --------------------------------------------------------------------------- */

struct vv_pncounter *vv_pncounter_new(void)
{
    struct vv_pncounter *c = vv_xcalloc(1, sizeof(*c));
    c->c.pn = true;
    return c;
}

void vv_pncounter_free(struct vv_pncounter *c)
{
    if (!c)
        return;
    counter_free(&c->c);
    vv_free(c);
}

int vv_pncounter_add(struct vv_pncounter *c, uint64_t replica, int64_t amount, uint8_t **delta,
                     size_t *delta_len)
{
    if (amount == INT64_MIN)
        return VV_EINVAL;
    return counter_add(&c->c, replica, amount > 0 ? (uint64_t)amount : 0,
                       amount < 0 ? (uint64_t)-amount : 0, delta, delta_len);
}

int64_t vv_pncounter_value(const struct vv_pncounter *c)
{
    return counter_value(&c->c);
}

int vv_pncounter_apply(struct vv_pncounter *c, const uint8_t *buf, size_t len)
{
    return counter_apply(&c->c, buf, len);
}

int vv_pncounter_merge(struct vv_pncounter *dst, const struct vv_pncounter *src)
{
    return counter_merge(&dst->c, &src->c);
}

int vv_pncounter_encode(const struct vv_pncounter *c, uint8_t **out, size_t *out_len)
{
    counter_encode_some(&c->c, NULL, out, out_len);
    return 0;
}

int vv_pncounter_decode(const uint8_t *buf, size_t len, struct vv_pncounter **out)
{
    struct counter d;
    int rc = counter_decode(buf, len, true, &d);
    if (rc)
        return rc;
    *out = vv_xcalloc(1, sizeof(**out));
    (*out)->c = d;
    return 0;
}

int vv_pncounter_state_vector(const struct vv_pncounter *c, struct vv_crdt_sv *out)
{
    return counter_state_vector(&c->c, out);
}

int vv_pncounter_delta_since(const struct vv_pncounter *c, const struct vv_crdt_sv *sv,
                             uint8_t **out, size_t *out_len)
{
    if (!sv)
        return VV_EINVAL;
    counter_encode_some(&c->c, sv, out, out_len);
    return 0;
}

json_t *vv_pncounter_to_json(const struct vv_pncounter *c)
{
    return json_integer(counter_value(&c->c));
}
