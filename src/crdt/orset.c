/*
 * Add-wins OR-Set, the optimized form of Almeida, Shoker and Baquero ("Delta State Replicated
 * Data Types", 2018, the AWORSet with a causal context). Every add is an event with a dot
 * (replica, counter); the state is the dots still alive, each with its element, and a causal
 * context: every dot this replica has seen, alive or not. A remove makes no dot and keeps no
 * tombstone: it drops the element's dots, which stay in the context, and that is how the join
 * tells "removed here" (in the context, not alive) from "not seen yet" (not in the context).
 * The context is a version vector plus a dot cloud for dots that arrived ahead of a gap; the
 * cloud empties as the gaps fill, so after any number of add/remove cycles the state is the
 * live elements and one counter per replica.
 *
 * Join of (E1, C1) and (E2, C2), with E a set of (dot, element) pairs:
 *   E = (E1 ∩ E2) ∪ {p ∈ E1 : dot(p) ∉ C2} ∪ {p ∈ E2 : dot(p) ∉ C1},  C = C1 ∪ C2.
 * Updates are states (an add: one pair and the dots it replaces; a remove: no pairs and the
 * removed dots), so applying an update is this join. An update made by vv_orset_delta_since
 * also lists "keep" dots: dots the receiver already has that are still alive at the sender,
 * sent without their element; they count as part of E2, and the receiver must have them in
 * its context (else VV_ECRDT_CAUSALITY: it does not hold the element to keep).
 *
 * Elements are sorted by their canonical JSON text, so lookups are binary searches and the
 * encoding and the JSON array come out in one order on every replica. A hash index from each
 * live dot to its element lets a small update (one add or remove: a few dots) be joined by
 * visiting only the elements it names or whose dots its context holds, in O(log n) plus the
 * array move of an insert or delete; a large update (a full state, a delta for a peer far
 * behind) is joined by one merge walk over both element lists, O(n + m), and the index is
 * rebuilt after it.
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/types_internal.h"
#include "vivim/keyed_hash.h"

struct dot {
    uint64_t replica, counter;
};

struct elem {
    char *val; /* canonical JSON text, len bytes, no terminator */
    size_t len;
    size_t ndots;     /* ≥ 1 */
    struct dot *dots; /* sorted, unique */
};

struct ctx {
    size_t nvv, capvv;
    struct vv_crdt_sv_entry *vv; /* sorted by replica, counters ≥ 1 */
    size_t ncloud, capcloud;
    struct dot *cloud; /* sorted; every dot > vv[replica] + 1 (else it would be in vv) */
};

/* Live dot → its element's value (the element's own val buffer, which never moves while
 * the element lives). Open addressing, linear probing, backward-shift deletion. */
struct idx_slot {
    uint64_t replica, counter; /* replica 0: empty */
    const char *val;
    size_t len;
};
struct dot_index {
    size_t n, cap; /* cap: 0 or a power of two; n * 4 <= cap * 3 */
    struct idx_slot *slots;
};

struct vv_orset {
    size_t len, cap;
    struct elem *e; /* sorted by value bytes, unique */
    struct ctx ctx;
    struct dot_index idx; /* every live dot; empty in a decoded update (struct orset_msg) */
    struct dot missing;   /* a keep dot the last refused update needed (VV_ECRDT_CAUSALITY) */
};

/* A decoded update: a state and, from vv_orset_delta_since, the keep dots. */
struct orset_msg {
    struct vv_orset s;
    size_t nkeep;
    struct dot *keep; /* sorted */
};

static int dot_cmp(const struct dot *a, const struct dot *b)
{
    if (a->replica != b->replica)
        return a->replica < b->replica ? -1 : 1;
    if (a->counter != b->counter)
        return a->counter < b->counter ? -1 : 1;
    return 0;
}

static int dot_qcmp(const void *a, const void *b)
{
    return dot_cmp(a, b);
}

static bool dots_have(const struct dot *d, size_t n, const struct dot *x)
{
    return n && bsearch(x, d, n, sizeof(*d), dot_qcmp) != NULL;
}

/* ---- dot index ---------------------------------------------------------------------------- */

/* Keyed: a dot's replica and counter come from the peer that made it, and a fixed mixer is
 * invertible, so a peer could hand us dots that all share one home slot. Slots are never
 * walked for output (the elements array is), so the random key shows nowhere. */
static size_t idx_home(const struct dot_index *x, const struct dot *d)
{
    uint64_t words[2] = {d->replica, d->counter};
    return (size_t)vv_keyed_hash64(words, sizeof(words)) & (x->cap - 1);
}

static struct idx_slot *idx_find(const struct dot_index *x, const struct dot *d)
{
    if (x->cap == 0)
        return NULL;
    for (size_t i = idx_home(x, d);; i = (i + 1) & (x->cap - 1)) {
        struct idx_slot *sl = &x->slots[i];
        if (sl->replica == 0)
            return NULL;
        if (sl->replica == d->replica && sl->counter == d->counter)
            return sl;
    }
}

static void idx_put(struct dot_index *x, const struct dot *d, const char *val, size_t len);

size_t vv__orset_longest_probe(const struct vv_orset *s)
{
    const struct dot_index *x = &s->idx;
    size_t worst = 0;
    for (size_t i = 0; i < x->cap; i++)
        if (x->slots[i].replica) {
            size_t home = idx_home(x, &(struct dot){x->slots[i].replica, x->slots[i].counter});
            worst = VV_MAX(worst, ((i - home) & (x->cap - 1)) + 1);
        }
    return worst;
}

static void idx_grow(struct dot_index *x)
{
    struct dot_index old = *x;
    x->cap = old.cap ? 2 * old.cap : 16;
    x->n = 0;
    x->slots = vv_xcalloc(x->cap, sizeof(*x->slots));
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].replica)
            idx_put(x, &(struct dot){old.slots[i].replica, old.slots[i].counter}, old.slots[i].val,
                    old.slots[i].len);
    vv_free(old.slots);
}

static void idx_put(struct dot_index *x, const struct dot *d, const char *val, size_t len)
{
    if ((x->n + 1) * 4 > x->cap * 3)
        idx_grow(x);
    size_t i = idx_home(x, d);
    while (x->slots[i].replica &&
           !(x->slots[i].replica == d->replica && x->slots[i].counter == d->counter))
        i = (i + 1) & (x->cap - 1);
    if (x->slots[i].replica == 0)
        x->n++;
    x->slots[i] = (struct idx_slot){d->replica, d->counter, val, len};
}

static void idx_del(struct dot_index *x, const struct dot *d)
{
    struct idx_slot *sl = idx_find(x, d);
    if (!sl)
        return;
    size_t mask = x->cap - 1, i = (size_t)(sl - x->slots), j = i;
    /* Shift back every later entry of the probe run that may not stay behind the hole. */
    for (;;) {
        j = (j + 1) & mask;
        if (x->slots[j].replica == 0)
            break;
        size_t k = idx_home(x, &(struct dot){x->slots[j].replica, x->slots[j].counter});
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            x->slots[i] = x->slots[j];
            i = j;
        }
    }
    x->slots[i].replica = 0;
    x->n--;
}

static void idx_free(struct dot_index *x)
{
    vv_free(x->slots);
    memset(x, 0, sizeof(*x));
}

/* ---- causal context ----------------------------------------------------------------------- */

static size_t vv_find(const struct ctx *c, uint64_t replica)
{
    size_t lo = 0, hi = c->nvv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->vv[mid].replica < replica)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint64_t vv_get(const struct ctx *c, uint64_t replica)
{
    size_t i = vv_find(c, replica);
    return i < c->nvv && c->vv[i].replica == replica ? c->vv[i].counter : 0;
}

static void vv_set(struct ctx *c, uint64_t replica, uint64_t counter)
{
    size_t i = vv_find(c, replica);
    if (i < c->nvv && c->vv[i].replica == replica) {
        c->vv[i].counter = counter;
        return;
    }
    if (c->nvv == c->capvv) {
        c->capvv = c->capvv ? 2 * c->capvv : 4;
        c->vv = vv_xrealloc(c->vv, c->capvv * sizeof(*c->vv));
    }
    memmove(&c->vv[i + 1], &c->vv[i], (c->nvv - i) * sizeof(*c->vv));
    c->vv[i] = (struct vv_crdt_sv_entry){replica, counter};
    c->nvv++;
}

static bool ctx_has(const struct ctx *c, const struct dot *d)
{
    return d->counter <= vv_get(c, d->replica) || dots_have(c->cloud, c->ncloud, d);
}

static void cloud_push(struct ctx *c, const struct dot *d)
{
    if (c->ncloud == c->capcloud) {
        c->capcloud = c->capcloud ? 2 * c->capcloud : 4;
        c->cloud = vv_xrealloc(c->cloud, c->capcloud * sizeof(*c->cloud));
    }
    c->cloud[c->ncloud++] = *d;
}

/* Moves cloud dots that extend the version vector into it; drops those it covers. The cloud
 * must be sorted; it stays sorted. */
static void ctx_compact(struct ctx *c)
{
    size_t out = 0;
    for (size_t i = 0; i < c->ncloud; i++) {
        struct dot d = c->cloud[i];
        uint64_t v = vv_get(c, d.replica);
        if (d.counter <= v)
            continue;
        if (d.counter == v + 1) {
            vv_set(c, d.replica, d.counter);
            continue;
        }
        c->cloud[out++] = d;
    }
    c->ncloud = out;
}

static void ctx_free(struct ctx *c)
{
    vv_free(c->vv);
    vv_free(c->cloud);
    memset(c, 0, sizeof(*c));
}

/* dst ∪= src. */
static void ctx_join(struct ctx *dst, const struct ctx *src)
{
    for (size_t i = 0; i < src->nvv; i++)
        if (src->vv[i].counter > vv_get(dst, src->vv[i].replica))
            vv_set(dst, src->vv[i].replica, src->vv[i].counter);
    if (src->ncloud) {
        for (size_t i = 0; i < src->ncloud; i++)
            cloud_push(dst, &src->cloud[i]);
        qsort(dst->cloud, dst->ncloud, sizeof(*dst->cloud), dot_qcmp);
        size_t out = 0; /* unique */
        for (size_t i = 0; i < dst->ncloud; i++)
            if (out == 0 || dot_cmp(&dst->cloud[out - 1], &dst->cloud[i]) != 0)
                dst->cloud[out++] = dst->cloud[i];
        dst->ncloud = out;
    }
    ctx_compact(dst);
}

/* Adds one dot (the context stays compact). */
static void ctx_add(struct ctx *c, const struct dot *d)
{
    struct ctx one = {.ncloud = 1, .capcloud = 1, .cloud = (struct dot *)d};
    ctx_join(c, &one);
}

/* ---- elements ----------------------------------------------------------------------------- */

static size_t elem_find(const struct vv_orset *s, const char *val, size_t len, bool *found)
{
    size_t lo = 0, hi = s->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vv__crdt_bytes_cmp(s->e[mid].val, s->e[mid].len, val, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < s->len && vv__crdt_bytes_cmp(s->e[lo].val, s->e[lo].len, val, len) == 0;
    return lo;
}

static void elem_free(struct elem *e)
{
    vv_free(e->val);
    vv_free(e->dots);
}

static void set_clear(struct vv_orset *s)
{
    for (size_t i = 0; i < s->len; i++)
        elem_free(&s->e[i]);
    vv_free(s->e);
    s->e = NULL;
    s->len = s->cap = 0;
    ctx_free(&s->ctx);
    idx_free(&s->idx);
}

/* Indexes every live dot of s afresh. */
static void idx_rebuild(struct vv_orset *s)
{
    idx_free(&s->idx);
    for (size_t i = 0; i < s->len; i++)
        for (size_t k = 0; k < s->e[i].ndots; k++)
            idx_put(&s->idx, &s->e[i].dots[k], s->e[i].val, s->e[i].len);
}

static void set_push(struct vv_orset *s, struct elem e)
{
    if (s->len == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4;
        s->e = vv_xrealloc(s->e, s->cap * sizeof(*s->e));
    }
    s->e[s->len++] = e;
}

struct vv_orset *vv_orset_new(void)
{
    return vv_xcalloc(1, sizeof(struct vv_orset));
}

void vv_orset_free(struct vv_orset *s)
{
    if (!s)
        return;
    set_clear(s);
    vv_free(s);
}

/* ---- join --------------------------------------------------------------------------------- */

/*
 * The dots of one element after the join. a: ours (may be NULL), b: theirs (may be NULL).
 * Returns the count; *out is vv_xmalloc'd (NULL when 0).
 */
static size_t join_dots(const struct elem *a, const struct ctx *actx, const struct elem *b,
                        const struct orset_msg *m, struct dot **out)
{
    size_t na = a ? a->ndots : 0, nb = b ? b->ndots : 0, n = 0;
    struct dot *d = vv_xmalloc((na + nb) * sizeof(*d));
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : dot_cmp(&a->dots[i], &b->dots[j]);
        if (c == 0) { /* alive on both sides */
            d[n++] = a->dots[i];
            i++;
            j++;
        } else if (c < 0) { /* only ours: alive unless they saw it and dropped it */
            const struct dot *x = &a->dots[i++];
            if (!ctx_has(&m->s.ctx, x) || dots_have(m->keep, m->nkeep, x))
                d[n++] = *x;
        } else { /* only theirs: new to us unless we saw it and dropped it */
            const struct dot *x = &b->dots[j++];
            if (!ctx_has(actx, x))
                d[n++] = *x;
        }
    }
    if (n == 0) {
        vv_free(d);
        d = NULL;
    }
    *out = d;
    return n;
}

static size_t total_dots(const struct vv_orset *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->len; i++)
        n += s->e[i].ndots;
    return n;
}

/* True when none of our element's dots is removed by m (m has no entries for it). */
static bool elem_survives(const struct elem *a, const struct orset_msg *m)
{
    for (size_t k = 0; k < a->ndots; k++)
        if (ctx_has(&m->s.ctx, &a->dots[k]) && !dots_have(m->keep, m->nkeep, &a->dots[k]))
            return false;
    return true;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *c = vv_xmalloc(n ? n : 1);
    memcpy(c, p, n);
    return c;
}

/* The join as one merge walk over both element lists; the index is rebuilt after. */
static void join_walk(struct vv_orset *s, const struct orset_msg *m)
{
    const struct vv_orset *t = &m->s;
    struct vv_orset r = {0};
    r.cap = s->len + t->len;
    r.e = r.cap ? vv_xmalloc(r.cap * sizeof(*r.e)) : NULL;
    size_t i = 0, j = 0;
    while (i < s->len || j < t->len) {
        int c = i == s->len ? 1
                : j == t->len
                    ? -1
                    : vv__crdt_bytes_cmp(s->e[i].val, s->e[i].len, t->e[j].val, t->e[j].len);
        const struct elem *a = c <= 0 ? &s->e[i] : NULL, *b = c >= 0 ? &t->e[j] : NULL;
        if (a && !b && elem_survives(a, m)) { /* the common case: untouched, moved whole */
            set_push(&r, *a);
            s->e[i].val = NULL;
            s->e[i].dots = NULL;
            i++;
            continue;
        }
        struct dot *dots;
        size_t n = join_dots(a, &s->ctx, b, m, &dots);
        if (n) {
            struct elem e = {.ndots = n, .dots = dots};
            if (a) { /* move our value */
                e.val = s->e[i].val;
                e.len = s->e[i].len;
                s->e[i].val = NULL;
            } else {
                e.val = dup_bytes(b->val, b->len);
                e.len = b->len;
            }
            set_push(&r, e);
        }
        if (a)
            i++;
        if (b)
            j++;
    }
    for (size_t k = 0; k < s->len; k++)
        elem_free(&s->e[k]);
    vv_free(s->e);
    s->e = r.e;
    s->len = r.len;
    s->cap = r.cap;
    ctx_join(&s->ctx, &t->ctx);
    idx_rebuild(s);
}

/* An update small enough for join_targeted: few elements and few dots in its context. */
#define TARGETED_MAX_ITEMS 64

struct cand {
    const char *val;
    size_t len;
};

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return vv__crdt_bytes_cmp(x->val, x->len, y->val, y->len);
}

/* The dots of ctx one by one, or false when there are more than max. */
static bool ctx_small(const struct ctx *c, size_t max)
{
    size_t n = c->ncloud;
    for (size_t i = 0; i < c->nvv && n <= max; i++)
        n += c->vv[i].counter > max ? max + 1 : (size_t)c->vv[i].counter;
    return n <= max;
}

static void elem_set_dots(struct vv_orset *s, struct elem *a, struct dot *dots, size_t n)
{
    for (size_t k = 0; k < a->ndots; k++)
        idx_del(&s->idx, &a->dots[k]);
    vv_free(a->dots);
    a->dots = dots;
    a->ndots = n;
    for (size_t k = 0; k < n; k++)
        idx_put(&s->idx, &dots[k], a->val, a->len);
}

/*
 * The join of a small update: only the elements it names and those owning a dot in its
 * context can change (a dot belongs to one element), and the index finds the latter. Each
 * such element gets exactly the dots the merge walk would give it.
 */
static void join_targeted(struct vv_orset *s, const struct orset_msg *m)
{
    const struct vv_orset *t = &m->s;
    struct cand *c = vv_xmalloc((t->len + 2 * TARGETED_MAX_ITEMS + 1) * sizeof(*c));
    size_t nc = 0;
    for (size_t j = 0; j < t->len; j++)
        c[nc++] = (struct cand){t->e[j].val, t->e[j].len};
    for (size_t i = 0; i < t->ctx.nvv; i++)
        for (uint64_t k = 1; k <= t->ctx.vv[i].counter; k++) {
            const struct idx_slot *sl = idx_find(&s->idx, &(struct dot){t->ctx.vv[i].replica, k});
            if (sl)
                c[nc++] = (struct cand){sl->val, sl->len};
        }
    for (size_t i = 0; i < t->ctx.ncloud; i++) {
        const struct idx_slot *sl = idx_find(&s->idx, &t->ctx.cloud[i]);
        if (sl)
            c[nc++] = (struct cand){sl->val, sl->len};
    }
    /* Unique first: a candidate may point into an element that the loop below frees. */
    qsort(c, nc, sizeof(*c), cand_cmp);
    size_t nu = 0;
    for (size_t x = 0; x < nc; x++)
        if (nu == 0 || cand_cmp(&c[nu - 1], &c[x]) != 0)
            c[nu++] = c[x];
    for (size_t x = 0; x < nu; x++) {
        bool fa, fb;
        size_t i = elem_find(s, c[x].val, c[x].len, &fa);
        size_t j = elem_find(t, c[x].val, c[x].len, &fb);
        struct elem *a = fa ? &s->e[i] : NULL;
        const struct elem *b = fb ? &t->e[j] : NULL;
        if (!a && !b)
            continue;
        struct dot *dots;
        size_t n = join_dots(a, &s->ctx, b, m, &dots);
        if (a && n) {
            elem_set_dots(s, a, dots, n);
        } else if (a) {
            elem_set_dots(s, a, NULL, 0);
            elem_free(a);
            memmove(&s->e[i], &s->e[i + 1], (s->len - i - 1) * sizeof(*s->e));
            s->len--;
        } else if (n) {
            set_push(s, (struct elem){0});
            memmove(&s->e[i + 1], &s->e[i], (s->len - 1 - i) * sizeof(*s->e));
            s->e[i] = (struct elem){.val = dup_bytes(b->val, b->len), .len = b->len};
            elem_set_dots(s, &s->e[i], dots, n);
        }
    }
    vv_free(c);
    ctx_join(&s->ctx, &t->ctx);
}

/* s ⊔= m. Fails with VV_ECRDT_CAUSALITY or VV_ELIMIT, before changing anything. */
static int set_join(struct vv_orset *s, const struct orset_msg *m)
{
    for (size_t k = 0; k < m->nkeep; k++)
        if (!ctx_has(&s->ctx, &m->keep[k])) {
            s->missing = m->keep[k];
            return VV_ECRDT_CAUSALITY;
        }
    const struct vv_orset *t = &m->s;
    /* What no peer would decode is refused (the bounds are upper bounds of the result). */
    if (s->len + t->len > VV_CRDT_MAX_ELEMENTS ||
        s->ctx.ncloud + t->ctx.ncloud > VV_CRDT_MAX_ELEMENTS ||
        s->idx.n + total_dots(t) > VV_CRDT_MAX_ELEMENTS)
        return VV_ELIMIT;
    if (t->len <= TARGETED_MAX_ITEMS && ctx_small(&t->ctx, TARGETED_MAX_ITEMS))
        join_targeted(s, m);
    else
        join_walk(s, m);
    return 0;
}

/* ---- encoding ----------------------------------------------------------------------------- */

static void write_dots(struct vv__crdt_w *w, const struct dot *d, size_t n)
{
    vv__crdt_w_varint(w, n);
    for (size_t i = 0; i < n; i++) {
        vv__crdt_w_u64be(w, d[i].replica);
        vv__crdt_w_varint(w, d[i].counter);
    }
}

/* Encodes s; with sv, only the dots sv lacks go with their elements and the rest as keep
 * dots. */
static void set_encode(const struct vv_orset *s, const struct vv_crdt_sv *sv, uint8_t **out,
                       size_t *out_len)
{
    struct vv__crdt_w w;
    vv__crdt_w_init(&w, VV_CRDT_ORSET);
    vv__crdt_sv_write(&w, s->ctx.vv, s->ctx.nvv);
    write_dots(&w, s->ctx.cloud, s->ctx.ncloud);
    size_t total = 0, nel = 0, widest = 1;
    for (size_t i = 0; i < s->len; i++) {
        size_t fresh = 0;
        for (size_t k = 0; k < s->e[i].ndots; k++)
            fresh += !sv || s->e[i].dots[k].counter > vv_crdt_sv_get(sv, s->e[i].dots[k].replica);
        nel += fresh > 0;
        total += s->e[i].ndots;
        widest = VV_MAX(widest, s->e[i].ndots);
    }
    vv__crdt_w_varint(&w, nel);
    struct dot *keep = vv_xmalloc((total ? total : 1) * sizeof(*keep));
    struct dot *fresh = vv_xmalloc(widest * sizeof(*fresh));
    size_t nkeep = 0;
    for (size_t i = 0; i < s->len; i++) {
        const struct elem *e = &s->e[i];
        size_t nf = 0;
        for (size_t k = 0; k < e->ndots; k++) {
            if (!sv || e->dots[k].counter > vv_crdt_sv_get(sv, e->dots[k].replica))
                fresh[nf++] = e->dots[k];
            else
                keep[nkeep++] = e->dots[k];
        }
        if (nf) {
            vv__crdt_w_blob(&w, e->val, e->len);
            write_dots(&w, fresh, nf);
        }
    }
    qsort(keep, nkeep, sizeof(*keep), dot_qcmp);
    write_dots(&w, keep, nkeep);
    vv_free(keep);
    vv_free(fresh);
    vv__crdt_w_finish(&w, out, out_len);
}

#define DOT_MIN_BYTES 9 /* 8-byte replica, 1-byte counter */

/* Reads a sorted, unique dot list of at most max dots; every counter ≥ 1. */
static struct dot *read_dots(struct vv__crdt_r *r, size_t max, size_t *n)
{
    *n = vv__crdt_r_count(r, max, DOT_MIN_BYTES);
    if (r->err || *n == 0)
        return NULL;
    struct dot *d = vv_xcalloc(*n, sizeof(*d));
    for (size_t i = 0; i < *n && !r->err; i++) {
        d[i].replica = vv__crdt_r_replica(r);
        d[i].counter = vv__crdt_r_varint(r);
        if (d[i].counter == 0 || (i > 0 && dot_cmp(&d[i - 1], &d[i]) >= 0))
            r->err = true;
    }
    return d;
}

static void msg_free(struct orset_msg *m)
{
    set_clear(&m->s);
    vv_free(m->keep);
    m->keep = NULL;
    m->nkeep = 0;
}

/* Decodes and checks every invariant: sorted and unique everywhere, values canonical, the
 * cloud compact, every alive and keep dot inside the context, no dot alive twice. */
static int msg_decode(const uint8_t *buf, size_t len, struct orset_msg *m)
{
    memset(m, 0, sizeof(*m));
    struct vv__crdt_r r;
    if (vv__crdt_r_init(&r, buf, len, VV_CRDT_ORSET))
        return VV_ECRDT_DECODE;
    struct ctx *c = &m->s.ctx;
    if (vv__crdt_sv_read(&r, &c->vv, &c->nvv))
        return VV_ECRDT_DECODE;
    c->capvv = c->nvv;
    c->cloud = read_dots(&r, VV_CRDT_MAX_ELEMENTS, &c->ncloud);
    c->capcloud = c->ncloud;
    for (size_t i = 0; i < c->ncloud && !r.err; i++) {
        uint64_t v = vv_get(c, c->cloud[i].replica);
        if (c->cloud[i].counter <= v || c->cloud[i].counter - v == 1)
            r.err = true;
    }
    size_t nel = vv__crdt_r_count(&r, VV_CRDT_MAX_ELEMENTS, 3 + DOT_MIN_BYTES);
    size_t total = 0;
    for (size_t i = 0; i < nel && !r.err; i++) {
        size_t vlen;
        const uint8_t *v = vv__crdt_r_blob(&r, VV_CRDT_MAX_VALUE_BYTES, &vlen);
        struct elem e = {0};
        e.dots = read_dots(&r, VV_CRDT_MAX_ELEMENTS, &e.ndots);
        if (r.err || e.ndots == 0 || !vv__crdt_value_is_canonical(v, vlen) ||
            (i > 0 && vv__crdt_bytes_cmp(m->s.e[i - 1].val, m->s.e[i - 1].len, v, vlen) >= 0)) {
            vv_free(e.dots);
            r.err = true;
            break;
        }
        e.val = dup_bytes((const char *)v, vlen);
        e.len = vlen;
        set_push(&m->s, e);
        total += e.ndots;
        for (size_t k = 0; k < e.ndots; k++)
            if (!ctx_has(c, &e.dots[k]))
                r.err = true;
    }
    m->keep = read_dots(&r, VV_CRDT_MAX_ELEMENTS, &m->nkeep);
    for (size_t k = 0; k < m->nkeep && !r.err; k++)
        if (!ctx_has(c, &m->keep[k]))
            r.err = true;
    if (!r.err && (total > VV_CRDT_MAX_ELEMENTS || vv__crdt_r_done(&r)))
        r.err = true;
    if (!r.err && total + m->nkeep > 1) {
        /* No dot alive under two elements, nor both alive and kept. */
        struct dot *all = vv_xmalloc((total + m->nkeep) * sizeof(*all));
        size_t n = 0;
        for (size_t i = 0; i < m->s.len; i++)
            for (size_t k = 0; k < m->s.e[i].ndots; k++)
                all[n++] = m->s.e[i].dots[k];
        if (m->nkeep)
            memcpy(all + n, m->keep, m->nkeep * sizeof(*all));
        n += m->nkeep;
        qsort(all, n, sizeof(*all), dot_qcmp);
        for (size_t i = 1; i < n; i++)
            if (dot_cmp(&all[i - 1], &all[i]) == 0)
                r.err = true;
        vv_free(all);
    }
    if (r.err) {
        msg_free(m);
        return VV_ECRDT_DECODE;
    }
    return 0;
}

/* ---- public API --------------------------------------------------------------------------- */

/*
 * Local operations change the state directly instead of joining their update in: the join
 * of an update that touches one element would cost O(elements). What they do is exactly
 * that join (the property tests check it against replicas that apply the updates): dots
 * are unique to one element, so an add or remove touches no element but its own.
 */
static void encode_and_free(struct orset_msg *d, uint8_t **delta, size_t *delta_len)
{
    if (delta)
        set_encode(&d->s, NULL, delta, delta_len);
    msg_free(d);
}

int vv_orset_add(struct vv_orset *s, uint64_t replica, const json_t *value, uint8_t **delta,
                 size_t *delta_len)
{
    if (replica == 0)
        return VV_EINVAL;
    char *val;
    size_t len;
    int rc = vv__crdt_value_dump(value, &val, &len);
    if (rc)
        return rc;
    bool found;
    size_t i = elem_find(s, val, len, &found);
    if (!found && s->len >= VV_CRDT_MAX_ELEMENTS) {
        vv_free(val);
        return VV_ELIMIT;
    }
    /* Our next dot: past everything of ours in the context, cloud included. */
    uint64_t top = vv_get(&s->ctx, replica);
    for (size_t k = 0; k < s->ctx.ncloud; k++)
        if (s->ctx.cloud[k].replica == replica)
            top = VV_MAX(top, s->ctx.cloud[k].counter);
    if (top == UINT64_MAX) {
        vv_free(val);
        return VV_ECRDT_RANGE;
    }
    struct dot nd = {replica, top + 1};
    /* The update: the element with the new dot; its context, the new dot and the dots it
     * replaces (so an add also clears older adds of the same element). */
    struct orset_msg d = {0};
    struct dot *dots = vv_xmalloc(sizeof(*dots));
    dots[0] = nd;
    set_push(&d.s, (struct elem){.val = dup_bytes(val, len), .len = len, .ndots = 1, .dots = dots});
    ctx_add(&d.s.ctx, &nd);
    if (found)
        for (size_t k = 0; k < s->e[i].ndots; k++)
            ctx_add(&d.s.ctx, &s->e[i].dots[k]);
    encode_and_free(&d, delta, delta_len);
    /* Its effect here: the element's dots become {nd}; nd joins the context. */
    struct dot *mine = vv_xmalloc(sizeof(*mine));
    mine[0] = nd;
    if (found) {
        vv_free(val);
    } else {
        set_push(s, (struct elem){0}); /* room for one more */
        memmove(&s->e[i + 1], &s->e[i], (s->len - 1 - i) * sizeof(*s->e));
        s->e[i] = (struct elem){.val = val, .len = len};
    }
    elem_set_dots(s, &s->e[i], mine, 1);
    ctx_add(&s->ctx, &nd);
    return 0;
}

int vv_orset_remove(struct vv_orset *s, const json_t *value, uint8_t **delta, size_t *delta_len)
{
    char *val;
    size_t len;
    int rc = vv__crdt_value_dump(value, &val, &len);
    if (rc)
        return rc;
    bool found;
    size_t i = elem_find(s, val, len, &found);
    vv_free(val);
    struct orset_msg d = {0};
    if (found)
        for (size_t k = 0; k < s->e[i].ndots; k++)
            ctx_add(&d.s.ctx, &s->e[i].dots[k]);
    encode_and_free(&d, delta, delta_len);
    /* Its effect here: the element goes; its dots are in the context already. */
    if (found) {
        elem_set_dots(s, &s->e[i], NULL, 0);
        elem_free(&s->e[i]);
        memmove(&s->e[i], &s->e[i + 1], (s->len - i - 1) * sizeof(*s->e));
        s->len--;
    }
    return 0;
}

bool vv_orset_contains(const struct vv_orset *s, const json_t *value)
{
    char *val;
    size_t len;
    if (vv__crdt_value_dump(value, &val, &len))
        return false;
    bool found;
    elem_find(s, val, len, &found);
    vv_free(val);
    return found;
}

size_t vv_orset_size(const struct vv_orset *s)
{
    return s->len;
}

int vv_orset_apply(struct vv_orset *s, const uint8_t *buf, size_t len)
{
    struct orset_msg m;
    int rc = msg_decode(buf, len, &m);
    if (rc)
        return rc;
    rc = set_join(s, &m);
    msg_free(&m);
    return rc;
}

void vv_orset_last_missing(const struct vv_orset *s, uint64_t *replica, uint64_t *counter)
{
    *replica = s->missing.replica;
    *counter = s->missing.counter;
}

bool vv_orset_has_dot(const struct vv_orset *s, uint64_t replica, uint64_t counter)
{
    struct dot d = {replica, counter};
    return ctx_has(&s->ctx, &d);
}

int vv_orset_merge(struct vv_orset *dst, const struct vv_orset *src)
{
    if (dst == src)
        return 0;
    /* The join only reads src; wrap it as an update without keep dots. */
    struct orset_msg m = {.s = *src};
    return set_join(dst, &m);
}

int vv_orset_encode(const struct vv_orset *s, uint8_t **out, size_t *out_len)
{
    set_encode(s, NULL, out, out_len);
    return 0;
}

int vv_orset_decode(const uint8_t *buf, size_t len, struct vv_orset **out)
{
    struct orset_msg m;
    int rc = msg_decode(buf, len, &m);
    if (rc)
        return rc;
    if (m.nkeep) { /* a delta_since update is not a state */
        msg_free(&m);
        return VV_ECRDT_DECODE;
    }
    *out = vv_xmalloc(sizeof(**out));
    **out = m.s;
    idx_rebuild(*out);
    return 0;
}

int vv_orset_state_vector(const struct vv_orset *s, struct vv_crdt_sv *out)
{
    out->n = s->ctx.nvv;
    out->e = out->n ? vv_xmalloc(out->n * sizeof(*out->e)) : NULL;
    if (out->n)
        memcpy(out->e, s->ctx.vv, out->n * sizeof(*out->e));
    return 0;
}

int vv_orset_delta_since(const struct vv_orset *s, const struct vv_crdt_sv *sv, uint8_t **out,
                         size_t *out_len)
{
    if (!sv)
        return VV_EINVAL;
    set_encode(s, sv, out, out_len);
    return 0;
}

json_t *vv_orset_to_json(const struct vv_orset *s)
{
    json_t *a = json_array();
    for (size_t i = 0; i < s->len; i++) {
        json_t *v = vv__crdt_value_load(s->e[i].val, s->e[i].len);
        if (v)
            json_array_append_new(a, v);
    }
    return a;
}

size_t vv_orset_context_size(const struct vv_orset *s)
{
    return s->ctx.nvv * sizeof(*s->ctx.vv) + s->ctx.ncloud * sizeof(*s->ctx.cloud);
}
