/*
 * The sequence CRDT's document: runs in a splay tree, per-replica seq indexes, local edits and
 * the integration of remote items (seq_internal.h describes the structures; seq_codec.c turns
 * updates into calls here). Nothing here does I/O or trusts decoded input: the codec checks
 * that every id it passes exists.
 *
 * Integration is YjsMod (Joseph Gentle's modification of Yjs, in his reference-crdts), which
 * Weidner & Kleppmann prove equivalent to FugueMax in "The Art of the Fugue: Minimizing
 * Interleaving in Collaborative Text Editing" (2023, arXiv:2305.00583): an item records its
 * left origin (the item just before it when it was inserted) and its right origin (the item
 * just after, tombstones included); concurrent items between the same origins are ordered so
 * that neither forward nor backward typing by two replicas at one place interleaves.
 */
#include <string.h>

#include "crdt/seq_internal.h"

/* ---- UTF-8 ---------------------------------------------------------------------------- */

size_t vv__seq_utf8_put(uint8_t *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

size_t vv__seq_utf8_get(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t k;
    uint32_t c, min;
    if ((b & 0xE0) == 0xC0) {
        k = 2, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        k = 3, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        k = 4, c = b & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return k;
}

/* ---- splay tree of runs ----------------------------------------------------------------- */

typedef struct vv__seq_run run_t;
typedef struct vv__seq_id sqid_t;

static const sqid_t no_id = {VV__SEQ_NONE, 0};

static inline uint64_t run_vis(const run_t *x)
{
    return x->deleted ? 0 : x->len;
}

static inline void pull(run_t *x)
{
    uint64_t v = run_vis(x), r = x->len;
    if (x->l) {
        v += x->l->sub_vis;
        r += x->l->sub_raw;
    }
    if (x->r) {
        v += x->r->sub_vis;
        r += x->r->sub_raw;
    }
    x->sub_vis = v;
    x->sub_raw = r;
}

/* Moves x above its parent. */
static void rotate(struct vv_crdt_seq *d, run_t *x)
{
    run_t *p = x->p, *g = p->p;
    if (p->l == x) {
        p->l = x->r;
        if (x->r)
            x->r->p = p;
        x->r = p;
    } else {
        p->r = x->l;
        if (x->l)
            x->l->p = p;
        x->l = p;
    }
    p->p = x;
    x->p = g;
    if (g) {
        if (g->l == p)
            g->l = x;
        else
            g->r = x;
    } else {
        d->root = x;
    }
    pull(p);
    pull(x);
}

static void splay(struct vv_crdt_seq *d, run_t *x)
{
    while (x->p) {
        run_t *p = x->p, *g = p->p;
        if (g)
            rotate(d, (g->l == p) == (p->l == x) ? p : x);
        rotate(d, x);
    }
}

static run_t *leftmost(run_t *x)
{
    while (x->l)
        x = x->l;
    return x;
}

static run_t *rightmost(run_t *x)
{
    while (x->r)
        x = x->r;
    return x;
}

run_t *vv__seq_first(const struct vv_crdt_seq *d)
{
    return d->root ? leftmost(d->root) : NULL;
}

run_t *vv__seq_next(const run_t *x)
{
    if (x->r)
        return leftmost(x->r);
    while (x->p && x->p->r == x)
        x = x->p;
    return x->p;
}

static run_t *prev_run(const run_t *x)
{
    if (x->l)
        return rightmost(x->l);
    while (x->p && x->p->l == x)
        x = x->p;
    return x->p;
}

/* Position of the run's first item among all items (tombstones included); splays it. */
static uint64_t raw_pos(struct vv_crdt_seq *d, run_t *x)
{
    splay(d, x);
    return x->l ? x->l->sub_raw : 0;
}

/* The run holding visible position pos (< visible length), and the offset in it. */
static run_t *find_vis(struct vv_crdt_seq *d, uint64_t pos, uint32_t *off)
{
    run_t *x = d->root;
    for (;;) {
        uint64_t lv = x->l ? x->l->sub_vis : 0;
        if (pos < lv) {
            x = x->l;
            continue;
        }
        pos -= lv;
        uint64_t v = run_vis(x);
        if (pos < v)
            break;
        pos -= v;
        x = x->r;
    }
    splay(d, x);
    *off = (uint32_t)pos;
    return x;
}

/* Links y (a lone node) right after x, or first when x is NULL. */
static void link_after(struct vv_crdt_seq *d, run_t *x, run_t *y)
{
    y->l = y->r = y->p = NULL;
    d->nruns++;
    if (x == NULL) {
        if (d->root == NULL) {
            d->root = y;
            pull(y);
            return;
        }
        run_t *f = leftmost(d->root);
        splay(d, f);
        f->l = y;
        y->p = f;
        pull(y);
        pull(f);
        return;
    }
    splay(d, x);
    y->r = x->r;
    if (y->r)
        y->r->p = y;
    x->r = y;
    y->p = x;
    pull(y);
    pull(x);
}

static void unlink_run(struct vv_crdt_seq *d, run_t *x)
{
    splay(d, x);
    run_t *l = x->l, *r = x->r;
    d->nruns--;
    if (l == NULL) {
        d->root = r;
        if (r)
            r->p = NULL;
        return;
    }
    l->p = NULL;
    d->root = l;
    run_t *m = rightmost(l);
    splay(d, m);
    m->r = r;
    if (r)
        r->p = m;
    pull(m);
}

run_t *vv__seq_run_new(uint32_t agent, uint32_t seq, uint32_t len, sqid_t ol, sqid_t orr,
                       uint32_t coff, bool deleted)
{
    run_t *x = vv_xcalloc(1, sizeof(*x));
    x->agent = agent;
    x->seq = seq;
    x->len = len;
    x->ol = ol;
    x->orr = orr;
    x->deleted = deleted;
    x->coff = deleted ? VV__SEQ_NO_CONTENT : coff;
    pull(x);
    return x;
}

/* Builds a balanced subtree of runs[lo, hi). */
static run_t *build(run_t **runs, size_t lo, size_t hi, run_t *parent)
{
    if (lo >= hi)
        return NULL;
    size_t mid = lo + (hi - lo) / 2;
    run_t *x = runs[mid];
    x->p = parent;
    x->l = build(runs, lo, mid, x);
    x->r = build(runs, mid + 1, hi, x);
    pull(x);
    return x;
}

void vv__seq_build(struct vv_crdt_seq *d, run_t **runs, size_t n)
{
    d->root = build(runs, 0, n, NULL);
    d->nruns = n;
}

/* ---- per-agent seq index ---------------------------------------------------------------- */

run_t *vv__seq_idx_find(const struct vv__seq_agent *a, uint32_t seq, uint32_t *bi, uint32_t *ei)
{
    uint32_t lo = 0, hi = a->nblocks; /* last block whose first seq <= seq */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (a->blocks[mid]->seq[0] <= seq)
            lo = mid;
        else
            hi = mid;
    }
    const struct vv__seq_idx_block *b = a->blocks[lo];
    uint32_t l = 0, h = b->n;
    while (h - l > 1) {
        uint32_t mid = l + (h - l) / 2;
        if (b->seq[mid] <= seq)
            l = mid;
        else
            h = mid;
    }
    if (bi) {
        *bi = lo;
        *ei = l;
    }
    return b->run[l];
}

/* Inserts entry r after entry (bi, ei); bi == nblocks means "append to an empty index". */
static void idx_insert_after(struct vv__seq_agent *a, uint32_t bi, uint32_t ei, run_t *r)
{
    if (a->nblocks == 0) {
        if (a->cap_blocks == 0) { /* an index emptied by a rollback keeps its array */
            a->cap_blocks = 4;
            a->blocks = vv_xmalloc(a->cap_blocks * sizeof(*a->blocks));
        }
        a->blocks[0] = vv_xmalloc(sizeof(struct vv__seq_idx_block));
        a->blocks[0]->n = 1;
        a->blocks[0]->seq[0] = r->seq;
        a->blocks[0]->run[0] = r;
        a->nblocks = 1;
        return;
    }
    struct vv__seq_idx_block *b = a->blocks[bi];
    if (b->n == VV__SEQ_IDX_BLOCK) {
        /* Split the full block; appends at the end keep the old block full (sequential
         * typing appends, so blocks stay dense). */
        uint32_t keep =
            (bi == a->nblocks - 1 && ei == b->n - 1) ? VV__SEQ_IDX_BLOCK : VV__SEQ_IDX_BLOCK / 2;
        struct vv__seq_idx_block *nb = vv_xmalloc(sizeof(*nb));
        nb->n = b->n - keep;
        memcpy(nb->seq, b->seq + keep, nb->n * sizeof(uint32_t));
        memcpy(nb->run, b->run + keep, nb->n * sizeof(run_t *));
        b->n = keep;
        if (a->nblocks == a->cap_blocks) {
            a->cap_blocks *= 2;
            a->blocks = vv_xrealloc(a->blocks, a->cap_blocks * sizeof(*a->blocks));
        }
        memmove(a->blocks + bi + 2, a->blocks + bi + 1, (a->nblocks - bi - 1) * sizeof(*a->blocks));
        a->blocks[bi + 1] = nb;
        a->nblocks++;
        if (ei + 1 >= keep) {
            /* the new entry goes into the new block, at ei + 1 - keep */
            b = nb;
            ei -= keep; /* may wrap to UINT32_MAX when ei + 1 == keep: + 1 below gives 0 */
        }
    }
    uint32_t at = ei + 1;
    memmove(b->seq + at + 1, b->seq + at, (b->n - at) * sizeof(uint32_t));
    memmove(b->run + at + 1, b->run + at, (b->n - at) * sizeof(run_t *));
    b->seq[at] = r->seq;
    b->run[at] = r;
    b->n++;
}

void vv__seq_idx_append(struct vv__seq_agent *a, run_t *r)
{
    if (a->nblocks == 0) {
        idx_insert_after(a, 0, 0, r);
        return;
    }
    uint32_t bi = a->nblocks - 1;
    idx_insert_after(a, bi, a->blocks[bi]->n - 1, r);
}

static void idx_remove(struct vv__seq_agent *a, const run_t *r)
{
    uint32_t bi, ei;
    vv__seq_idx_find(a, r->seq, &bi, &ei);
    struct vv__seq_idx_block *b = a->blocks[bi];
    memmove(b->seq + ei, b->seq + ei + 1, (b->n - ei - 1) * sizeof(uint32_t));
    memmove(b->run + ei, b->run + ei + 1, (b->n - ei - 1) * sizeof(run_t *));
    if (--b->n == 0) {
        vv_free(b);
        memmove(a->blocks + bi, a->blocks + bi + 1, (a->nblocks - bi - 1) * sizeof(*a->blocks));
        a->nblocks--;
    }
}

static run_t *lookup(const struct vv_crdt_seq *d, sqid_t id, uint32_t *off)
{
    run_t *r = vv__seq_idx_find(&d->agents[id.agent], id.seq, NULL, NULL);
    *off = id.seq - r->seq;
    return r;
}

static uint64_t id_pos(struct vv_crdt_seq *d, sqid_t id)
{
    uint32_t off;
    run_t *r = lookup(d, id, &off);
    return raw_pos(d, r) + off;
}

/* ---- runs: split, merge, extend ---------------------------------------------------------- */

/* Splits x before offset k (0 < k < len); returns the right part, linked after x. */
static run_t *split(struct vv_crdt_seq *d, run_t *x, uint32_t k)
{
    sqid_t ol = {x->agent, x->seq + k - 1};
    run_t *y = vv__seq_run_new(x->agent, x->seq + k, x->len - k, ol, x->orr,
                               x->coff == VV__SEQ_NO_CONTENT ? x->coff : x->coff + k, x->deleted);
    splay(d, x);
    x->len = k;
    link_after(d, x, y);
    uint32_t bi, ei;
    struct vv__seq_agent *a = &d->agents[x->agent];
    vv__seq_idx_find(a, x->seq, &bi, &ei);
    idx_insert_after(a, bi, ei, y);
    return y;
}

/* Whether b continues a (b's first item could have been typed right after a's last). */
static bool continues(const run_t *a, const run_t *b)
{
    return a->agent == b->agent && a->seq + a->len == b->seq && b->ol.agent == a->agent &&
           b->ol.seq == b->seq - 1 && vv__seq_id_eq(a->orr, b->orr) && a->deleted == b->deleted &&
           (a->deleted || a->coff + a->len == b->coff);
}

/* Folds b (the run after a in document order) into a. */
static void absorb(struct vv_crdt_seq *d, run_t *a, run_t *b)
{
    unlink_run(d, b);
    idx_remove(&d->agents[b->agent], b);
    splay(d, a);
    a->len += b->len;
    pull(a);
    vv_free(b);
}

static void mark_deleted(struct vv_crdt_seq *d, run_t *x)
{
    splay(d, x);
    x->deleted = true;
    x->coff = VV__SEQ_NO_CONTENT;
    pull(x);
    run_t *p = prev_run(x);
    if (p && continues(p, x)) {
        absorb(d, p, x);
        x = p;
    }
    run_t *n = vv__seq_next(x);
    if (n && continues(x, n))
        absorb(d, x, n);
}

/* ---- agents ---------------------------------------------------------------------------- */

uint32_t vv__seq_agent_find(const struct vv_crdt_seq *d, uint64_t id)
{
    uint32_t lo = 0, hi = d->nagents;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint64_t m = d->agents[d->by_id[mid]].id;
        if (m == id)
            return d->by_id[mid];
        if (m < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return VV__SEQ_NONE;
}

uint32_t vv__seq_agent_add(struct vv_crdt_seq *d, uint64_t id)
{
    if (d->nagents == d->cap_agents) {
        d->cap_agents = d->cap_agents ? d->cap_agents * 2 : 4;
        d->agents = vv_xrealloc(d->agents, d->cap_agents * sizeof(*d->agents));
        d->by_id = vv_xrealloc(d->by_id, d->cap_agents * sizeof(*d->by_id));
    }
    uint32_t ix = d->nagents++;
    d->agents[ix] = (struct vv__seq_agent){.id = id};
    uint32_t at = ix;
    while (at > 0 && d->agents[d->by_id[at - 1]].id > id) {
        d->by_id[at] = d->by_id[at - 1];
        at--;
    }
    d->by_id[at] = ix;
    return ix;
}

uint32_t vv__seq_chars_append(struct vv_crdt_seq *d, const uint32_t *cps, size_t n)
{
    if (d->nchars + n > d->cap_chars) {
        size_t cap = d->cap_chars ? d->cap_chars : 256;
        while (cap < d->nchars + n)
            cap *= 2;
        d->chars = vv_xrealloc(d->chars, cap * sizeof(uint32_t));
        d->cap_chars = cap;
    }
    uint32_t off = (uint32_t)d->nchars;
    memcpy(d->chars + d->nchars, cps, n * sizeof(uint32_t));
    d->nchars += n;
    return off;
}

/* ---- document --------------------------------------------------------------------------- */

struct vv_crdt_seq *vv_crdt_seq_new(uint64_t replica)
{
    struct vv_crdt_seq *d = vv_xcalloc(1, sizeof(*d));
    d->self = vv__seq_agent_add(d, replica);
    return d;
}

void vv_crdt_seq_free(struct vv_crdt_seq *d)
{
    if (d == NULL)
        return;
    /* Free the runs through the indexes, which hold each exactly once. */
    for (uint32_t i = 0; i < d->nagents; i++) {
        struct vv__seq_agent *a = &d->agents[i];
        for (uint32_t b = 0; b < a->nblocks; b++) {
            for (uint32_t e = 0; e < a->blocks[b]->n; e++)
                vv_free(a->blocks[b]->run[e]);
            vv_free(a->blocks[b]);
        }
        vv_free(a->blocks);
    }
    vv_free(d->agents);
    vv_free(d->by_id);
    vv_free(d->chars);
    vv_free(d);
}

size_t vv_crdt_seq_len(const struct vv_crdt_seq *d)
{
    return d->root ? (size_t)d->root->sub_vis : 0;
}

size_t vv_crdt_seq_run_count(const struct vv_crdt_seq *d)
{
    return d->nruns;
}

size_t vv_crdt_seq_utf8_len(const struct vv_crdt_seq *d)
{
    size_t n = 0;
    uint8_t tmp[4];
    for (run_t *x = vv__seq_first(d); x; x = vv__seq_next(x))
        if (!x->deleted)
            for (uint32_t i = 0; i < x->len; i++)
                n += vv__seq_utf8_put(tmp, d->chars[x->coff + i]);
    return n;
}

char *vv_crdt_seq_text(const struct vv_crdt_seq *d, size_t *len)
{
    size_t cap = vv_crdt_seq_len(d) * 4 + 1, n = 0;
    uint8_t *s = vv_xmalloc(cap);
    for (run_t *x = vv__seq_first(d); x; x = vv__seq_next(x))
        if (!x->deleted)
            for (uint32_t i = 0; i < x->len; i++)
                n += vv__seq_utf8_put(s + n, d->chars[x->coff + i]);
    s[n] = 0;
    if (len)
        *len = n;
    return (char *)s;
}

/* Whether items (agent, seq ..) with these origins and content, placed right after x, can
 * simply lengthen x. */
static bool can_extend(const struct vv_crdt_seq *d, const run_t *x, uint32_t agent, uint32_t seq,
                       sqid_t ol, sqid_t orr, uint32_t coff, bool deleted)
{
    return x->agent == agent && x->seq + x->len == seq && ol.agent == agent && ol.seq == seq - 1 &&
           vv__seq_id_eq(x->orr, orr) && x->deleted == deleted &&
           (deleted || (coff != VV__SEQ_NO_CONTENT && x->coff + x->len == coff));
}

static void txn_log(struct vv__seq_txn *t, struct vv__seq_undo u)
{
    if (t == NULL)
        return;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->log = vv_xrealloc(t->log, t->cap * sizeof(*t->log));
    }
    t->log[t->n++] = u;
}

/* Places new items right after prev (NULL: at the start), logged in t unless t is NULL. */
static void place(struct vv_crdt_seq *d, struct vv__seq_txn *t, run_t *prev, uint32_t agent,
                  uint32_t seq, uint32_t len, sqid_t ol, sqid_t orr, uint32_t coff, bool deleted)
{
    if (prev && can_extend(d, prev, agent, seq, ol, orr, coff, deleted)) {
        splay(d, prev);
        prev->len += len;
        pull(prev);
        txn_log(t, (struct vv__seq_undo){VV__SEQ_UNDO_EXTEND, prev, NULL, len});
    } else {
        run_t *y = vv__seq_run_new(agent, seq, len, ol, orr, coff, deleted);
        link_after(d, prev, y);
        vv__seq_idx_append(&d->agents[agent], y);
        txn_log(t, (struct vv__seq_undo){VV__SEQ_UNDO_NEW, y, NULL, 0});
    }
    d->agents[agent].next_seq = seq + len;
}

int vv_crdt_seq_insert(struct vv_crdt_seq *d, size_t pos, const char *utf8, size_t nbytes,
                       uint8_t **update, size_t *update_len)
{
    if (update) {
        *update = NULL;
        *update_len = 0;
    }
    if (pos > vv_crdt_seq_len(d))
        return VV_ECRDT_RANGE;
    if (utf8 == NULL && nbytes > 0)
        return VV_EINVAL;
    /* Decode into the arena's tail first; the arena only grows when the text is valid. */
    if (d->nchars + nbytes > UINT32_MAX - 1)
        return VV_ELIMIT;
    if (d->nchars + nbytes > d->cap_chars) {
        size_t cap = d->cap_chars ? d->cap_chars : 256;
        while (cap < d->nchars + nbytes)
            cap *= 2;
        d->chars = vv_xrealloc(d->chars, cap * sizeof(uint32_t));
        d->cap_chars = cap;
    }
    uint32_t *out = d->chars + d->nchars;
    size_t n = 0;
    for (size_t i = 0; i < nbytes;) {
        size_t k = vv__seq_utf8_get((const uint8_t *)utf8 + i, nbytes - i, &out[n]);
        if (k == 0)
            return VV_EINVAL;
        i += k;
        n++;
    }
    if (n == 0)
        return 0;
    struct vv__seq_agent *me = &d->agents[d->self];
    if (n > VV_CRDT_SEQ_MAX_SEQ - me->next_seq)
        return VV_ELIMIT;
    uint32_t coff = (uint32_t)d->nchars;
    d->nchars += n;

    sqid_t ol = no_id, orr = no_id;
    run_t *prev = NULL;
    if (pos == 0) {
        /* Before everything, tombstones included. */
        run_t *f = vv__seq_first(d);
        if (f)
            orr = (sqid_t){f->agent, f->seq};
    } else {
        /* After the visible character at pos - 1, before any tombstones that follow it. */
        uint32_t off;
        run_t *x = find_vis(d, pos - 1, &off);
        ol = (sqid_t){x->agent, x->seq + off};
        prev = x;
        if (off + 1 < x->len) {
            orr = (sqid_t){x->agent, x->seq + off + 1};
            split(d, x, off + 1);
        } else {
            run_t *nx = vv__seq_next(x);
            if (nx)
                orr = (sqid_t){nx->agent, nx->seq};
        }
    }
    uint32_t seq = me->next_seq;
    place(d, NULL, prev, d->self, seq, (uint32_t)n, ol, orr, coff, false);
    if (update)
        vv__seq_encode_insert(d, seq, (uint32_t)n, ol, orr, coff, update, update_len);
    return 0;
}

int vv_crdt_seq_delete(struct vv_crdt_seq *d, size_t pos, size_t len, uint8_t **update,
                       size_t *update_len)
{
    if (update) {
        *update = NULL;
        *update_len = 0;
    }
    size_t total = vv_crdt_seq_len(d);
    if (pos > total || len > total - pos)
        return VV_ECRDT_RANGE;
    struct vv__seq_range *ranges = NULL;
    size_t nr = 0, cap = 0;
    while (len > 0) {
        uint32_t off;
        run_t *x = find_vis(d, pos, &off);
        if (off > 0)
            x = split(d, x, off);
        if (x->len > len)
            split(d, x, (uint32_t)len);
        if (update) {
            if (nr == cap) {
                cap = cap ? cap * 2 : 4;
                ranges = vv_xrealloc(ranges, cap * sizeof(*ranges));
            }
            ranges[nr++] = (struct vv__seq_range){x->agent, x->seq, x->len};
        }
        len -= x->len;
        mark_deleted(d, x);
    }
    if (update && nr > 0)
        vv__seq_encode_deletes(d, ranges, nr, update, update_len);
    vv_free(ranges);
    return 0;
}

void vv__seq_delete_ids(struct vv_crdt_seq *d, uint32_t agent, uint32_t seq, uint32_t len)
{
    uint64_t s = seq, e = (uint64_t)seq + len;
    while (s < e) {
        uint32_t off;
        run_t *x = lookup(d, (sqid_t){agent, (uint32_t)s}, &off);
        uint64_t take = VV_MIN((uint64_t)(x->len - off), e - s);
        if (!x->deleted) {
            if (off > 0)
                x = split(d, x, off);
            if (x->len > take)
                split(d, x, (uint32_t)take);
            mark_deleted(d, x);
        }
        s += take;
    }
}

int vv__seq_integrate(struct vv_crdt_seq *d, struct vv__seq_txn *t, uint32_t agent, uint32_t seq,
                      uint32_t len, sqid_t ol, sqid_t orr, uint32_t coff, bool deleted)
{
    uint64_t total = d->root ? d->root->sub_raw : 0;
    int64_t left = -1;
    run_t *cur;
    uint32_t cur_off = 0;
    if (ol.agent != VV__SEQ_NONE) {
        uint32_t o;
        run_t *lr = lookup(d, ol, &o);
        left = (int64_t)(raw_pos(d, lr) + o);
        if (o + 1 < lr->len) {
            cur = lr;
            cur_off = o + 1;
        } else {
            cur = vv__seq_next(lr);
        }
    } else {
        cur = vv__seq_first(d);
    }
    uint64_t right = orr.agent != VV__SEQ_NONE ? id_pos(d, orr) : total;
    uint64_t my_id = d->agents[agent].id;

    /*
     * The YjsMod scan (reference-crdts' integrateYjsMod; FugueMax order). Walk the items
     * after the left origin up to the right origin. For each item `other` compare where its
     * origins lie with ours: an item whose left origin is further left ends the concurrent
     * range; one with the same left origin and a right origin nearer than ours might be a
     * sibling we go after, so keep scanning without moving the destination; with the same
     * origins both ways, the lower replica id goes first. Only a run's first scanned item can
     * stop the scan: the others have their left origin just before them, right of ours.
     */
    uint64_t i = (uint64_t)(left + 1);
    run_t *dest_run = cur;
    uint32_t dest_off = cur_off;
    bool scanning = false;
    for (;;) {
        if (!scanning) {
            dest_run = cur;
            dest_off = cur_off;
        }
        if (cur == NULL || i == right)
            break;
        /*
         * Every item strictly between the origins was written concurrently with the new one:
         * its writer saw the origins side by side. So none of them is the writer's own (it saw
         * all of those), and an update saying otherwise is forged; refusing it here also ends
         * the cheapest quadratic attack, one replica's items all claiming the same origins.
         * What is left (many replicas at one place) is bounded by the budget.
         */
        if (cur->agent == agent)
            return VV_ECRDT_HISTORY;
        if (++t->steps > t->max_steps)
            return VV_ECRDT_COST;
        sqid_t oid = cur_off ? (sqid_t){cur->agent, cur->seq + cur_off - 1} : cur->ol;
        int64_t oleft = oid.agent == VV__SEQ_NONE ? -1 : (int64_t)id_pos(d, oid);
        uint64_t oright = cur->orr.agent == VV__SEQ_NONE ? total : id_pos(d, cur->orr);
        if (oleft < left)
            break;
        if (oleft == left) {
            if (oright < right) {
                scanning = true;
            } else if (oright == right) {
                if (my_id < d->agents[cur->agent].id)
                    break;
                scanning = false;
            } else {
                scanning = false;
            }
        }
        uint64_t seg = cur->len - cur_off;
        if (right > i && right < i + seg) {
            cur_off += (uint32_t)(right - i);
            i = right;
            continue;
        }
        i += seg;
        cur = vv__seq_next(cur);
        cur_off = 0;
    }

    run_t *prev;
    if (dest_run == NULL)
        prev = d->root ? rightmost(d->root) : NULL;
    else if (dest_off > 0) {
        prev = dest_run;
        run_t *y = split(d, dest_run, dest_off);
        txn_log(t, (struct vv__seq_undo){VV__SEQ_UNDO_SPLIT, dest_run, y, 0});
    } else
        prev = prev_run(dest_run);
    place(d, t, prev, agent, seq, len, ol, orr, coff, deleted);
    return 0;
}

/* ---- transactions ------------------------------------------------------------------------ */

void vv__seq_txn_begin(struct vv_crdt_seq *d, struct vv__seq_txn *t, uint64_t max_steps)
{
    *t = (struct vv__seq_txn){.max_steps = max_steps, .nagents = d->nagents, .nchars = d->nchars};
}

void vv__seq_txn_rollback(struct vv_crdt_seq *d, struct vv__seq_txn *t)
{
    /* Newest first, so each undo finds the tree as its change left it. */
    for (size_t i = t->n; i-- > 0;) {
        struct vv__seq_undo *u = &t->log[i];
        run_t *x = u->x;
        switch (u->kind) {
        case VV__SEQ_UNDO_NEW:
            unlink_run(d, x);
            idx_remove(&d->agents[x->agent], x);
            d->agents[x->agent].next_seq = x->seq;
            vv_free(x);
            break;
        case VV__SEQ_UNDO_EXTEND:
            splay(d, x);
            x->len -= u->len;
            pull(x);
            d->agents[x->agent].next_seq = x->seq + x->len;
            break;
        case VV__SEQ_UNDO_SPLIT:
            unlink_run(d, u->y);
            idx_remove(&d->agents[u->y->agent], u->y);
            splay(d, x);
            x->len += u->y->len;
            pull(x);
            vv_free(u->y);
            break;
        }
    }
    /* Agents the update added hold no runs any more; drop them from the id order too. */
    uint32_t k = 0;
    for (uint32_t i = 0; i < d->nagents; i++)
        if (d->by_id[i] < t->nagents)
            d->by_id[k++] = d->by_id[i];
    for (uint32_t i = t->nagents; i < d->nagents; i++)
        vv_free(d->agents[i].blocks);
    d->nagents = t->nagents;
    d->nchars = t->nchars;
    d->last_work = t->steps;
    vv_free(t->log);
    t->log = NULL;
}

void vv__seq_txn_commit(struct vv_crdt_seq *d, struct vv__seq_txn *t)
{
    d->last_work = t->steps;
    vv_free(t->log);
    t->log = NULL;
}

uint64_t vv_crdt_seq_last_work(const struct vv_crdt_seq *d)
{
    return d->last_work;
}

/* ---- compaction ------------------------------------------------------------------------- */

size_t vv_crdt_seq_mem_bytes(const struct vv_crdt_seq *d)
{
    size_t n = sizeof(*d) + d->nruns * sizeof(run_t) + d->cap_chars * sizeof(uint32_t) +
               d->cap_agents * (sizeof(struct vv__seq_agent) + sizeof(uint32_t));
    for (uint32_t i = 0; i < d->nagents; i++)
        n += d->agents[i].cap_blocks * sizeof(struct vv__seq_idx_block *) +
             d->agents[i].nblocks * sizeof(struct vv__seq_idx_block);
    return n;
}

/* Rewrites an agent's index without the runs marked absorbed (len 0), in full blocks. */
static void idx_repack(struct vv__seq_agent *a)
{
    struct vv__seq_idx_block **nb = NULL;
    uint32_t nn = 0, cap = 0;
    for (uint32_t bi = 0; bi < a->nblocks; bi++) {
        struct vv__seq_idx_block *b = a->blocks[bi];
        for (uint32_t ei = 0; ei < b->n; ei++) {
            if (b->run[ei]->len == 0)
                continue;
            if (nn == 0 || nb[nn - 1]->n == VV__SEQ_IDX_BLOCK) {
                if (nn == cap) {
                    cap = cap ? cap * 2 : 1;
                    nb = vv_xrealloc(nb, cap * sizeof(*nb));
                }
                nb[nn] = vv_xmalloc(sizeof(**nb));
                nb[nn++]->n = 0;
            }
            struct vv__seq_idx_block *t = nb[nn - 1];
            t->seq[t->n] = b->seq[ei];
            t->run[t->n++] = b->run[ei];
        }
        vv_free(b);
    }
    vv_free(a->blocks);
    a->blocks = nb; /* NULL when the agent has no items */
    a->nblocks = nn;
    a->cap_blocks = cap;
}

void vv_crdt_seq_compact(struct vv_crdt_seq *d, struct vv_crdt_seq_compact_stats *out)
{
    struct vv_crdt_seq_compact_stats st = {.runs_before = d->nruns,
                                           .chars_before = d->nchars,
                                           .bytes_before = vv_crdt_seq_mem_bytes(d)};
    size_t n = d->nruns, kept = 0, i = 0;
    run_t **all = vv_xmalloc((n ? n : 1) * sizeof(*all));
    run_t **keep = vv_xmalloc((n ? n : 1) * sizeof(*keep));
    size_t nvis = vv_crdt_seq_len(d);
    uint32_t *chars = vv_xmalloc((nvis ? nvis : 1) * sizeof(uint32_t));
    uint32_t nc = 0;
    for (run_t *x = vv__seq_first(d); x; x = vv__seq_next(x))
        all[i++] = x;
    /* In document order: the visible text is copied in that order, so runs that continue
     * each other also become contiguous in the new array, and merge. */
    for (i = 0; i < n; i++) {
        run_t *x = all[i];
        if (!x->deleted) {
            memcpy(chars + nc, d->chars + x->coff, x->len * sizeof(uint32_t));
            x->coff = nc;
            nc += x->len;
        }
        if (kept > 0 && continues(keep[kept - 1], x)) {
            keep[kept - 1]->len += x->len;
            x->len = 0; /* absorbed: leaves the indexes, then is freed */
        } else {
            keep[kept++] = x;
        }
    }
    for (uint32_t a = 0; a < d->nagents; a++)
        idx_repack(&d->agents[a]);
    for (i = 0; i < n; i++)
        if (all[i]->len == 0)
            vv_free(all[i]);
    vv__seq_build(d, keep, kept); /* balanced again */
    vv_free(d->chars);
    d->chars = chars;
    d->nchars = nc;
    d->cap_chars = nvis ? nvis : 1;
    vv_free(all);
    vv_free(keep);
    st.runs_after = d->nruns;
    st.chars_after = d->nchars;
    st.bytes_after = vv_crdt_seq_mem_bytes(d);
    if (out)
        *out = st;
}
