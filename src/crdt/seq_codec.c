/*
 * The sequence CRDT's wire format (docs/crdt.md, "Sequence", is the specification): updates,
 * deltas and full states share one layout of run records, a delete set and one UTF-8 string;
 * state vectors have their own. Decoding is strict and bounded: every count is checked against
 * the bytes left before anything is allocated, every id is checked against what the document
 * and the update hold, and nothing in the document changes until the whole update is known
 * to apply (VV_ECRDT_DECODE or VV_ECRDT_CAUSALITY leave it as it was).
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/seq_internal.h"

#define SEQ_VERSION    1
#define FLAG_DOC_ORDER 0x01 /* records are the whole document in document order */
#define SV_VERSION     1
#define REC_MIN_BYTES  2 /* the header alone: its length (>= 1) sits from bit 7 up */
#define DEL_MIN_BYTES  3
#define AGENT_ID_BYTES 8
#define SV_ENTRY_MIN   9
/* Record header bits (the rest, from bit 7 up, is the length). */
#define H_DELETED    0x01
#define H_OL_SHIFT   1
#define H_OR_SHIFT   3
#define H_CONT       0x20 /* the record continues its left origin: same agent, next seq */
#define H_SAME_AGENT 0x40 /* same agent as the previous record */
#define H_LEN_SHIFT  7
/* How a record names an origin. */
#define REF_NONE     0 /* document start (left) or end (right) */
#define REF_ADJACENT 1 /* left: the previous record's last item; right: the next one's first */
#define REF_RECORD   2 /* the record k back (left, last item) or ahead (right, first item) */
#define REF_EXPLICIT 3 /* agent index and seq */
/* How far the encoder looks for a record to name an origin by. */
#define REF_WINDOW 64
/* Content methods. */
#define CONTENT_RAW    0
#define CONTENT_ORDER1 1
/* An order-1 coded text expands at most this many times (the model's probabilities stay
 * within [15, 4081]/4096, so no bit costs less than 0.0053 bits: at most ~190 times). */
#define CONTENT_MAX_RATIO 256
/* Most UTF-8 bytes of text one update may carry. */
#define CONTENT_MAX_BYTES (16u << 20)
/* Largest zigzag seq delta: seqs differ by less than 2^31. */
#define ZIGZAG_MAX ((uint64_t)VV_CRDT_SEQ_MAX_SEQ * 2 + 1)

typedef struct vv__seq_id sqid_t;
typedef struct vv__seq_run run_t;

/* ---- bytes ------------------------------------------------------------------------------ */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void buf_reserve(struct buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + more)
        cap *= 2;
    b->p = vv_xrealloc(b->p, cap);
    b->cap = cap;
}

static void put_bytes(struct buf *b, const void *src, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_u8(struct buf *b, uint8_t v)
{
    put_bytes(b, &v, 1);
}

static void put_varint(struct buf *b, uint64_t v)
{
    buf_reserve(b, 10);
    while (v >= 0x80) {
        b->p[b->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b->p[b->n++] = (uint8_t)v;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Replica ids are big-endian, as in the other CRDT types' encodings (docs/crdt.md). */
static void put_u64be(struct buf *b, uint64_t v)
{
    uint8_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (uint8_t)(v >> (56 - 8 * i));
    put_bytes(b, t, 8);
}

struct rd {
    const uint8_t *p;
    size_t n, i;
    bool bad;
};

static size_t rd_left(const struct rd *r)
{
    return r->n - r->i;
}

/* LEB128, at most 64 bits, minimal (no trailing zero groups), so each value has one encoding. */
static uint64_t get_varint(struct rd *r)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->i >= r->n) {
            r->bad = true;
            return 0;
        }
        uint8_t b = r->p[r->i++];
        if (shift == 63 && b > 1) {
            r->bad = true;
            return 0;
        }
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift > 0)
                r->bad = true;
            return v;
        }
    }
    r->bad = true;
    return 0;
}

/* A varint that must be <= max. */
static uint64_t get_bounded(struct rd *r, uint64_t max)
{
    uint64_t v = get_varint(r);
    if (v > max)
        r->bad = true;
    return r->bad ? 0 : v;
}

static uint8_t get_u8(struct rd *r)
{
    if (r->i >= r->n) {
        r->bad = true;
        return 0;
    }
    return r->p[r->i++];
}

static uint64_t get_u64be(struct rd *r)
{
    if (rd_left(r) < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | r->p[r->i + i];
    r->i += 8;
    return v;
}

/* ---- content coding ------------------------------------------------------------------------
 *
 * The text of an update is one UTF-8 string, stored raw or, when that is smaller, coded with an
 * adaptive order-1 binary arithmetic coder: each byte is coded as 8 bits, most significant
 * first, each bit with a probability (12 bits, of a 1) from a table indexed by the previous
 * byte and the bits of this byte seen so far; after each use the probability moves 1/16 of
 * the way towards the bit. The arithmetic coder is the 32-bit carry-less one of Matt Mahoney's
 * lpaq1 (as published): [x1, x2] is split at x1 + (x2 - x1) * p / 4096, a 1 taking the lower
 * part; while x1 and x2 agree in their top byte it is emitted; the end emits x1's 4 bytes.
 *
 * Decoding a bit is a chain of dependent steps, so the text is cut in two halves coded as two
 * independent streams, and the decoder runs both in one loop: the processor overlaps them,
 * which nearly halves the time to load a document. docs/crdt.md has the exact arithmetic.
 */

#define AC_CONTEXTS (256 * 256)

struct ac {
    uint32_t x1, x2, x;
    const uint8_t *in; /* decoder input */
    size_t len, at;
    uint16_t *model;
    struct buf *out; /* encoder output */
};

static void ac_init(struct ac *c)
{
    c->x1 = 0;
    c->x2 = 0xFFFFFFFF;
    c->x = 0;
    c->model = vv_xmalloc(AC_CONTEXTS * sizeof(uint16_t));
    for (size_t i = 0; i < AC_CONTEXTS; i++)
        c->model[i] = 2048;
}

static inline uint32_t ac_mid(const struct ac *c, uint16_t p)
{
    return c->x1 + (uint32_t)(((uint64_t)(c->x2 - c->x1) * p) >> 12);
}

/* Branch-free: the bits are unpredictable, and a mispredicted branch per bit would cost more
 * than all the arithmetic. */
static inline void ac_update(uint16_t *p, uint32_t mask)
{
    uint32_t v = *p, up = v + ((4096 - v) >> 4), down = v - (v >> 4);
    *p = (uint16_t)((up & mask) | (down & ~mask));
}

static void ac_encode(const uint8_t *in, size_t n, struct buf *out)
{
    struct ac c;
    ac_init(&c);
    unsigned prev = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned ch = in[i], ctx = 1;
        uint16_t *row = c.model + (prev << 8);
        for (int k = 7; k >= 0; k--) {
            unsigned bit = (ch >> k) & 1;
            uint32_t mid = ac_mid(&c, row[ctx]);
            if (bit)
                c.x2 = mid;
            else
                c.x1 = mid + 1;
            ac_update(&row[ctx], -(uint32_t)bit);
            ctx = ctx << 1 | bit;
            while (((c.x1 ^ c.x2) & 0xFF000000) == 0) {
                put_u8(out, (uint8_t)(c.x2 >> 24));
                c.x1 <<= 8;
                c.x2 = c.x2 << 8 | 0xFF;
            }
        }
        prev = ch;
    }
    for (int k = 3; k >= 0; k--)
        put_u8(out, (uint8_t)(c.x1 >> (8 * k)));
    vv_free(c.model);
}

static void ac_start(struct ac *c, const uint8_t *in, size_t len)
{
    ac_init(c);
    c->in = in;
    c->len = len;
    c->at = 0;
    for (int k = 0; k < 4; k++)
        c->x = c->x << 8 | (c->at < c->len ? c->in[c->at++] : 0);
}

/* One bit in context row[ctx]; input past the end reads as 0 (the caller checks the text). */
static inline unsigned ac_bit(struct ac *c, uint16_t *p)
{
    uint32_t mid = ac_mid(c, *p);
    unsigned bit = c->x <= mid;
    uint32_t mask = -(uint32_t)bit;
    c->x2 = (mid & mask) | (c->x2 & ~mask);
    c->x1 = (c->x1 & mask) | ((mid + 1) & ~mask);
    ac_update(p, mask);
    while (((c->x1 ^ c->x2) & 0xFF000000) == 0) {
        c->x1 <<= 8;
        c->x2 = c->x2 << 8 | 0xFF;
        c->x = c->x << 8 | (c->at < c->len ? c->in[c->at++] : 0);
    }
    return bit;
}

/* Decodes halves out[0, na) from a and out[na, na + nb) from b (nb >= na), interleaved. */
static void ac_decode2(struct ac *a, struct ac *b, uint8_t *out, size_t na, size_t nb)
{
    unsigned pa = 0, pb = 0;
    uint8_t *ob = out + na;
    for (size_t i = 0; i < nb; i++) {
        unsigned ca = 1, cb = 1;
        uint16_t *ra = a->model + (pa << 8), *rb = b->model + (pb << 8);
        if (i < na) {
            for (int k = 0; k < 8; k++) {
                ca = ca << 1 | ac_bit(a, &ra[ca]);
                cb = cb << 1 | ac_bit(b, &rb[cb]);
            }
            out[i] = (uint8_t)ca;
            pa = ca & 0xFF;
        } else {
            for (int k = 0; k < 8; k++)
                cb = cb << 1 | ac_bit(b, &rb[cb]);
        }
        ob[i] = (uint8_t)cb;
        pb = cb & 0xFF;
    }
}

/* varint raw length, method byte, then the raw bytes, or the two coded halves' lengths and
 * the halves, whichever is smaller. */
static void put_content(struct buf *b, const uint8_t *text, size_t n)
{
    struct buf ha = {0}, hb = {0};
    size_t na = n / 2;
    if (n >= 64) {
        ac_encode(text, na, &ha);
        ac_encode(text + na, n - na, &hb);
    }
    put_varint(b, n);
    if (n >= 64 && ha.n + hb.n + 8 < n) {
        put_u8(b, CONTENT_ORDER1);
        put_varint(b, ha.n);
        put_varint(b, hb.n);
        put_bytes(b, ha.p, ha.n);
        put_bytes(b, hb.p, hb.n);
    } else {
        put_u8(b, CONTENT_RAW);
        put_bytes(b, text, n);
    }
    vv_free(ha.p);
    vv_free(hb.p);
}

/* ---- encoding --------------------------------------------------------------------------- */

struct wrec {
    uint32_t agent, seq, len; /* document agent indices */
    sqid_t ol, orr;
    bool deleted;
};

struct enc {
    struct wrec *recs;
    size_t nrecs, cap_recs;
    struct vv__seq_range *dels;
    size_t ndels, cap_dels;
    struct buf content;
};

static void enc_run(struct enc *e, const struct vv_crdt_seq *d, uint32_t agent, uint32_t seq,
                    uint32_t len, sqid_t ol, sqid_t orr, bool deleted, uint32_t coff)
{
    struct wrec *last = e->nrecs ? &e->recs[e->nrecs - 1] : NULL;
    if (last && last->agent == agent && last->seq + last->len == seq && ol.agent == agent &&
        ol.seq == seq - 1 && vv__seq_id_eq(last->orr, orr) && last->deleted == deleted) {
        last->len += len;
    } else {
        if (e->nrecs == e->cap_recs) {
            e->cap_recs = e->cap_recs ? e->cap_recs * 2 : 16;
            e->recs = vv_xrealloc(e->recs, e->cap_recs * sizeof(*e->recs));
        }
        e->recs[e->nrecs++] = (struct wrec){agent, seq, len, ol, orr, deleted};
    }
    if (!deleted) {
        buf_reserve(&e->content, (size_t)len * 4);
        for (uint32_t i = 0; i < len; i++)
            e->content.n += vv__seq_utf8_put(e->content.p + e->content.n, d->chars[coff + i]);
    }
}

static void enc_del(struct enc *e, uint32_t agent, uint32_t seq, uint32_t len)
{
    struct vv__seq_range *last = e->ndels ? &e->dels[e->ndels - 1] : NULL;
    if (last && last->agent == agent && last->seq + last->len == seq) {
        last->len += len;
        return;
    }
    if (e->ndels == e->cap_dels) {
        e->cap_dels = e->cap_dels ? e->cap_dels * 2 : 16;
        e->dels = vv_xrealloc(e->dels, e->cap_dels * sizeof(*e->dels));
    }
    e->dels[e->ndels++] = (struct vv__seq_range){agent, seq, len};
}

static void enc_finish(const struct vv_crdt_seq *d, struct enc *e, uint8_t flags, uint8_t **out,
                       size_t *out_len)
{
    /* The agent table: the agents the update names, numbered in order of first use. */
    uint32_t *map = vv_xmalloc(d->nagents * sizeof(uint32_t));
    for (uint32_t i = 0; i < d->nagents; i++)
        map[i] = VV__SEQ_NONE;
    uint32_t *used = vv_xmalloc(d->nagents * sizeof(uint32_t)), nused = 0;
#define USE(a)                                                                                     \
    do {                                                                                           \
        if ((a) != VV__SEQ_NONE && map[a] == VV__SEQ_NONE) {                                       \
            map[a] = nused;                                                                        \
            used[nused++] = (a);                                                                   \
        }                                                                                          \
    } while (0)
    for (size_t i = 0; i < e->nrecs; i++) {
        USE(e->recs[i].agent);
        USE(e->recs[i].ol.agent);
        USE(e->recs[i].orr.agent);
    }
    for (size_t i = 0; i < e->ndels; i++)
        USE(e->dels[i].agent);
#undef USE

    struct buf b = {0};
    buf_reserve(&b, 16 + (size_t)nused * 8 + e->nrecs * 6 + e->ndels * 6 + e->content.n);
    put_u8(&b, SEQ_VERSION);
    put_u8(&b, flags);
    put_varint(&b, nused);
    for (uint32_t i = 0; i < nused; i++)
        put_u64be(&b, d->agents[used[i]].id);

    uint32_t *prev_end = vv_xcalloc(nused ? nused : 1, sizeof(uint32_t));
    put_varint(&b, e->nrecs);
    for (size_t i = 0; i < e->nrecs; i++) {
        const struct wrec *w = &e->recs[i];
        unsigned olm = REF_EXPLICIT, orm = REF_EXPLICIT;
        size_t olk = 0, ork = 0;
        if (w->ol.agent == VV__SEQ_NONE)
            olm = REF_NONE;
        for (size_t k = 1; olm == REF_EXPLICIT && k <= VV_MIN(i, REF_WINDOW); k++) {
            const struct wrec *o = w - k;
            if (o->agent == w->ol.agent && o->seq + o->len - 1 == w->ol.seq)
                olm = k == 1 ? REF_ADJACENT : REF_RECORD, olk = k;
        }
        if (w->orr.agent == VV__SEQ_NONE)
            orm = REF_NONE;
        for (size_t k = 1; orm == REF_EXPLICIT && k <= REF_WINDOW && i + k < e->nrecs; k++) {
            const struct wrec *o = w + k;
            if (o->agent == w->orr.agent && o->seq == w->orr.seq)
                orm = k == 1 ? REF_ADJACENT : REF_RECORD, ork = k;
        }
        bool cont = olm != REF_NONE && w->ol.agent == w->agent && w->ol.seq + 1 == w->seq;
        bool same = !cont && i > 0 && w[-1].agent == w->agent;
        put_varint(&b, (uint64_t)w->len << H_LEN_SHIFT | (same ? H_SAME_AGENT : 0) |
                           (cont ? H_CONT : 0) | orm << H_OR_SHIFT | olm << H_OL_SHIFT |
                           (w->deleted ? H_DELETED : 0));
        if (olm == REF_RECORD)
            put_varint(&b, olk - 2);
        else if (olm == REF_EXPLICIT) {
            put_varint(&b, map[w->ol.agent]);
            put_varint(&b, w->ol.seq);
        }
        uint32_t a = map[w->agent];
        if (!cont) {
            if (!same)
                put_varint(&b, a);
            put_varint(&b, zigzag((int64_t)w->seq - (int64_t)prev_end[a]));
        }
        prev_end[a] = w->seq + w->len;
        if (orm == REF_RECORD) {
            put_varint(&b, ork - 2);
        } else if (orm == REF_EXPLICIT) {
            put_varint(&b, map[w->orr.agent]);
            if (w->orr.agent == w->agent)
                put_varint(&b, zigzag((int64_t)w->orr.seq - (int64_t)w->seq));
            else
                put_varint(&b, w->orr.seq);
        }
    }
    put_varint(&b, e->ndels);
    for (size_t i = 0; i < e->ndels; i++) {
        put_varint(&b, map[e->dels[i].agent]);
        put_varint(&b, e->dels[i].seq);
        put_varint(&b, e->dels[i].len);
    }
    put_content(&b, e->content.p, e->content.n);

    vv_free(prev_end);
    vv_free(map);
    vv_free(used);
    vv_free(e->recs);
    vv_free(e->dels);
    vv_free(e->content.p);
    *out = b.p;
    *out_len = b.n;
}

void vv__seq_encode_insert(const struct vv_crdt_seq *d, uint32_t seq, uint32_t len, sqid_t ol,
                           sqid_t orr, uint32_t coff, uint8_t **out, size_t *out_len)
{
    struct enc e = {0};
    enc_run(&e, d, d->self, seq, len, ol, orr, false, coff);
    enc_finish(d, &e, 0, out, out_len);
}

void vv__seq_encode_deletes(const struct vv_crdt_seq *d, const struct vv__seq_range *r, size_t n,
                            uint8_t **out, size_t *out_len)
{
    struct enc e = {0};
    for (size_t i = 0; i < n; i++)
        enc_del(&e, r[i].agent, r[i].seq, r[i].len);
    enc_finish(d, &e, 0, out, out_len);
}

void vv_crdt_seq_encode_state(struct vv_crdt_seq *d, uint8_t **out, size_t *out_len)
{
    struct enc e = {0};
    for (run_t *x = vv__seq_first(d); x; x = vv__seq_next(x))
        enc_run(&e, d, x->agent, x->seq, x->len, x->ol, x->orr, x->deleted, x->coff);
    enc_finish(d, &e, FLAG_DOC_ORDER, out, out_len);
}

void vv_crdt_seq_state_vector(const struct vv_crdt_seq *d, uint8_t **out, size_t *out_len)
{
    struct buf b = {0};
    uint32_t n = 0;
    for (uint32_t i = 0; i < d->nagents; i++)
        n += d->agents[i].next_seq > 0;
    put_u8(&b, SV_VERSION);
    put_varint(&b, n);
    for (uint32_t i = 0; i < d->nagents; i++) {
        const struct vv__seq_agent *a = &d->agents[d->by_id[i]];
        if (a->next_seq == 0)
            continue;
        put_u64be(&b, a->id);
        put_varint(&b, a->next_seq);
    }
    *out = b.p;
    *out_len = b.n;
}

struct sv_entry {
    uint64_t id;
    uint32_t next;
};

/* Decodes a state vector: entries strictly increasing by id. */
static int sv_decode(const uint8_t *p, size_t n, struct sv_entry **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (p == NULL || n == 0)
        return 0;
    struct rd r = {p, n, 0, false};
    if (get_u8(&r) != SV_VERSION)
        return VV_ECRDT_DECODE;
    uint64_t cnt = get_bounded(&r, rd_left(&r) / SV_ENTRY_MIN);
    if (r.bad)
        return VV_ECRDT_DECODE;
    struct sv_entry *e = vv_xmalloc((cnt ? cnt : 1) * sizeof(*e));
    for (uint64_t i = 0; i < cnt && !r.bad; i++) {
        e[i].id = get_u64be(&r);
        e[i].next = (uint32_t)get_bounded(&r, VV_CRDT_SEQ_MAX_SEQ);
        if (i > 0 && e[i].id <= e[i - 1].id)
            r.bad = true;
    }
    if (r.bad || r.i != r.n) {
        vv_free(e);
        return VV_ECRDT_DECODE;
    }
    *out = e;
    *nout = cnt;
    return 0;
}

static uint32_t sv_lookup(const struct sv_entry *e, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e[mid].id == id)
            return e[mid].next;
        if (e[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int vv_crdt_seq_encode_delta(struct vv_crdt_seq *d, const uint8_t *sv, size_t sv_len, uint8_t **out,
                             size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    struct sv_entry *svs;
    size_t nsv;
    int rc = sv_decode(sv, sv_len, &svs, &nsv);
    if (rc)
        return rc;
    struct enc e = {0};
    for (uint32_t ai = 0; ai < d->nagents; ai++) {
        const struct vv__seq_agent *a = &d->agents[ai];
        uint32_t from = sv_lookup(svs, nsv, a->id);
        if (a->nblocks == 0)
            continue;
        /* Deletions of items the peer has (it may not know they are deleted). */
        for (uint32_t bi = 0; bi < a->nblocks; bi++) {
            const struct vv__seq_idx_block *blk = a->blocks[bi];
            if (blk->seq[0] >= from)
                break;
            for (uint32_t ei = 0; ei < blk->n && blk->seq[ei] < from; ei++) {
                const run_t *x = blk->run[ei];
                if (x->deleted)
                    enc_del(&e, ai, x->seq, VV_MIN(x->len, from - x->seq));
            }
        }
        /* Items the peer lacks, in seq order. */
        if (from >= a->next_seq)
            continue;
        uint32_t bi, ei;
        const run_t *x = vv__seq_idx_find(a, from, &bi, &ei);
        uint32_t off = from - x->seq;
        for (;;) {
            sqid_t ol = off ? (sqid_t){ai, x->seq + off - 1} : x->ol;
            enc_run(&e, d, ai, x->seq + off, x->len - off, ol, x->orr, x->deleted,
                    x->deleted ? 0 : x->coff + off);
            off = 0;
            if (++ei == a->blocks[bi]->n) {
                ei = 0;
                if (++bi == a->nblocks)
                    break;
            }
            x = a->blocks[bi]->run[ei];
        }
    }
    vv_free(svs);
    enc_finish(d, &e, 0, out, out_len);
    return 0;
}

int vv_crdt_seq_merge(struct vv_crdt_seq *dst, struct vv_crdt_seq *src)
{
    uint8_t *sv, *delta;
    size_t sv_len, delta_len;
    vv_crdt_seq_state_vector(dst, &sv, &sv_len);
    int rc = vv_crdt_seq_encode_delta(src, sv, sv_len, &delta, &delta_len);
    vv_free(sv);
    if (rc)
        return rc;
    rc = vv_crdt_seq_apply(dst, delta, delta_len);
    vv_free(delta);
    return rc;
}

/* ---- decoding --------------------------------------------------------------------------- */

struct drec {
    uint32_t agent, seq, len; /* update agent indices */
    sqid_t ol, orr;
    bool deleted;
    uint32_t or_ahead; /* the right origin is the first item of the record this far ahead */
    uint32_t cstart;   /* first code point in dec.cps, for visible records */
};

struct dec {
    uint8_t flags;
    uint64_t *ids;
    uint32_t nids;
    struct drec *recs;
    size_t nrecs;
    struct vv__seq_range *dels;
    size_t ndels;
    uint32_t *cps;
    size_t ncps;
};

static void dec_free(struct dec *x)
{
    vv_free(x->ids);
    vv_free(x->recs);
    vv_free(x->dels);
    vv_free(x->cps);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Reads an id (agent in the update's table, seq) from the input. */
static sqid_t get_id(struct rd *r, uint32_t nids)
{
    sqid_t id;
    id.agent = (uint32_t)get_bounded(r, nids ? nids - 1 : 0);
    id.seq = (uint32_t)get_bounded(r, VV_CRDT_SEQ_MAX_SEQ - 1);
    if (nids == 0)
        r->bad = true;
    return id;
}

static int decode(const uint8_t *p, size_t n, struct dec *x)
{
    memset(x, 0, sizeof(*x));
    struct rd r = {p, n, 0, false};
    if (p == NULL || get_u8(&r) != SEQ_VERSION)
        return VV_ECRDT_DECODE;
    x->flags = get_u8(&r);
    if (x->flags & ~FLAG_DOC_ORDER)
        return VV_ECRDT_DECODE;
    uint64_t nids = get_bounded(&r, VV_MIN(rd_left(&r) / AGENT_ID_BYTES, VV_CRDT_SEQ_MAX_REPLICAS));
    if (r.bad)
        return VV_ECRDT_DECODE;
    x->nids = (uint32_t)nids;
    x->ids = vv_xmalloc((nids ? nids : 1) * sizeof(uint64_t));
    for (uint32_t i = 0; i < x->nids; i++)
        x->ids[i] = get_u64be(&r);
    if (nids > 1) {
        uint64_t *s = vv_xmalloc(nids * sizeof(uint64_t));
        memcpy(s, x->ids, nids * sizeof(uint64_t));
        qsort(s, nids, sizeof(uint64_t), cmp_u64);
        for (uint32_t i = 1; i < nids; i++)
            if (s[i] == s[i - 1])
                r.bad = true;
        vv_free(s);
    }

    uint64_t nrecs = get_bounded(&r, rd_left(&r) / REC_MIN_BYTES);
    if (r.bad)
        return VV_ECRDT_DECODE;
    x->nrecs = nrecs;
    x->recs = vv_xmalloc((nrecs ? nrecs : 1) * sizeof(*x->recs));
    uint32_t *prev_end = vv_xcalloc(nids ? nids : 1, sizeof(uint32_t));
    uint64_t visible = 0;
    for (size_t i = 0; i < nrecs && !r.bad; i++) {
        struct drec *w = &x->recs[i];
        uint64_t h = get_varint(&r);
        uint64_t len = h >> H_LEN_SHIFT;
        unsigned olm = (h >> H_OL_SHIFT) & 3, orm = (h >> H_OR_SHIFT) & 3;
        bool cont = h & H_CONT, same = h & H_SAME_AGENT;
        w->deleted = h & H_DELETED;
        w->or_ahead = 0;
        if (r.bad || len == 0 || len > VV_CRDT_SEQ_MAX_SEQ || (cont && same) ||
            (cont && olm == REF_NONE) || (same && i == 0) || nids == 0) {
            r.bad = true;
            break;
        }
        const struct drec *o;
        switch (olm) {
        case REF_NONE:
            w->ol = (sqid_t){VV__SEQ_NONE, 0};
            break;
        case REF_ADJACENT:
        case REF_RECORD:
            o = olm == REF_ADJACENT ? (i ? w - 1 : NULL)
                                    : (i >= 2 ? w - 2 - get_bounded(&r, i - 2) : NULL);
            if (o == NULL || r.bad) {
                r.bad = true;
                break;
            }
            w->ol = (sqid_t){o->agent, o->seq + o->len - 1};
            break;
        default:
            w->ol = get_id(&r, x->nids);
            break;
        }
        int64_t seq;
        if (cont) {
            w->agent = w->ol.agent;
            seq = (int64_t)w->ol.seq + 1;
        } else {
            w->agent = same ? w[-1].agent : (uint32_t)get_bounded(&r, nids - 1);
            seq = (int64_t)prev_end[w->agent] + unzigzag(get_bounded(&r, ZIGZAG_MAX));
        }
        if (r.bad || seq < 0 || (uint64_t)seq + len > VV_CRDT_SEQ_MAX_SEQ) {
            r.bad = true;
            break;
        }
        w->seq = (uint32_t)seq;
        w->len = (uint32_t)len;
        prev_end[w->agent] = w->seq + w->len;
        switch (orm) {
        case REF_NONE:
            w->orr = (sqid_t){VV__SEQ_NONE, 0};
            break;
        case REF_ADJACENT:
            if (i + 1 >= nrecs)
                r.bad = true;
            w->or_ahead = 1;
            break;
        case REF_RECORD:
            if (i + 2 >= nrecs)
                r.bad = true;
            else
                w->or_ahead = 2 + (uint32_t)get_bounded(&r, nrecs - i - 3);
            break;
        default:
            w->orr.agent = (uint32_t)get_bounded(&r, nids - 1);
            if (w->orr.agent == w->agent) {
                int64_t s = (int64_t)w->seq + unzigzag(get_bounded(&r, ZIGZAG_MAX));
                if (s < 0 || s >= VV_CRDT_SEQ_MAX_SEQ)
                    r.bad = true;
                w->orr.seq = (uint32_t)s;
            } else {
                w->orr.seq = (uint32_t)get_bounded(&r, VV_CRDT_SEQ_MAX_SEQ - 1);
            }
            break;
        }
        /* An origin inside the record itself is caught later as a dependency cycle. */
        if (!w->deleted) {
            w->cstart = (uint32_t)visible;
            visible += len;
            if (visible > CONTENT_MAX_BYTES) /* every code point takes a byte at least */
                r.bad = true;
        }
    }
    vv_free(prev_end);
    if (r.bad)
        return VV_ECRDT_DECODE;
    for (size_t i = 0; i < nrecs; i++)
        if (x->recs[i].or_ahead) {
            const struct drec *o = &x->recs[i + x->recs[i].or_ahead];
            x->recs[i].orr = (sqid_t){o->agent, o->seq};
        }

    uint64_t ndels = get_bounded(&r, rd_left(&r) / DEL_MIN_BYTES);
    if (r.bad)
        return VV_ECRDT_DECODE;
    x->ndels = ndels;
    x->dels = vv_xmalloc((ndels ? ndels : 1) * sizeof(*x->dels));
    for (size_t i = 0; i < ndels && !r.bad; i++) {
        struct vv__seq_range *g = &x->dels[i];
        g->agent = (uint32_t)get_bounded(&r, nids ? nids - 1 : 0);
        g->seq = (uint32_t)get_bounded(&r, VV_CRDT_SEQ_MAX_SEQ - 1);
        g->len = (uint32_t)get_bounded(&r, VV_CRDT_SEQ_MAX_SEQ - g->seq);
        if (nids == 0 || g->len == 0)
            r.bad = true;
    }
    /* The content: exactly `visible` code points of valid UTF-8. */
    uint64_t cbytes = get_bounded(&r, CONTENT_MAX_BYTES);
    unsigned method = get_u8(&r);
    uint64_t coded_a = 0, coded_b = 0;
    if (method == CONTENT_ORDER1) {
        coded_a = get_bounded(&r, rd_left(&r));
        coded_b = get_bounded(&r, rd_left(&r));
    }
    uint64_t coded = method == CONTENT_ORDER1 ? coded_a + coded_b : cbytes;
    if (r.bad || method > CONTENT_ORDER1 || coded != rd_left(&r) || cbytes < visible ||
        (method == CONTENT_ORDER1 && cbytes > coded * CONTENT_MAX_RATIO))
        return VV_ECRDT_DECODE;
    const uint8_t *c = r.p + r.i;
    uint8_t *plain = NULL;
    if (method == CONTENT_ORDER1) {
        plain = vv_xmalloc(cbytes ? cbytes : 1);
        struct ac ha, hb;
        ac_start(&ha, c, coded_a);
        ac_start(&hb, c + coded_a, coded_b);
        ac_decode2(&ha, &hb, plain, cbytes / 2, cbytes - cbytes / 2);
        vv_free(ha.model);
        vv_free(hb.model);
        c = plain;
    }
    x->cps = vv_xmalloc((visible ? visible : 1) * sizeof(uint32_t));
    size_t ci = 0;
    while (ci < cbytes) {
        size_t k = x->ncps < visible ? vv__seq_utf8_get(c + ci, cbytes - ci, &x->cps[x->ncps]) : 0;
        if (k == 0)
            break;
        ci += k;
        x->ncps++;
    }
    vv_free(plain);
    if (ci != cbytes || x->ncps != visible)
        return VV_ECRDT_DECODE;
    return 0;
}

struct skey {
    uint64_t key; /* agent << 32 | seq */
    uint32_t rec;
};

/* Sorts record indices by (agent, seq) unless they already are (deltas are): an LSD radix
 * sort, 11 bits a pass, skipping passes where every key has the same digit. */
static struct skey *sort_records(const struct dec *x)
{
    size_t n = x->nrecs;
    struct skey *k = vv_xmalloc((n ? n : 1) * sizeof(*k));
    bool sorted = true;
    for (size_t i = 0; i < n; i++) {
        k[i].key = (uint64_t)x->recs[i].agent << 32 | x->recs[i].seq;
        k[i].rec = (uint32_t)i;
        if (i > 0 && k[i].key < k[i - 1].key)
            sorted = false;
    }
    if (sorted)
        return k;
    struct skey *tmp = vv_xmalloc(n * sizeof(*tmp));
    size_t *count = vv_xmalloc(2048 * sizeof(size_t));
    for (unsigned shift = 0; shift < 64; shift += 11) {
        memset(count, 0, 2048 * sizeof(size_t));
        for (size_t i = 0; i < n; i++)
            count[(k[i].key >> shift) & 2047]++;
        if (count[(k[0].key >> shift) & 2047] == n)
            continue;
        size_t sum = 0;
        for (size_t d = 0; d < 2048; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            tmp[count[(k[i].key >> shift) & 2047]++] = k[i];
        struct skey *t = k;
        k = tmp;
        tmp = t;
    }
    vv_free(tmp);
    vv_free(count);
    return k;
}

/* Notes the item an update found missing (the document must hold it before the update can
 * apply): what vv_crdt_seq_last_missing tells. */
static void missing(struct vv_crdt_seq *d, uint64_t replica, uint64_t seq)
{
    d->missing_replica = replica;
    d->missing_seq = seq;
}

void vv_crdt_seq_last_missing(const struct vv_crdt_seq *d, uint64_t *replica, uint64_t *seq)
{
    *replica = d->missing_replica;
    *seq = d->missing_seq;
}

bool vv_crdt_seq_has(const struct vv_crdt_seq *d, uint64_t replica, uint64_t seq)
{
    uint32_t a = vv__seq_agent_find(d, replica);
    return a != VV__SEQ_NONE && seq < d->agents[a].next_seq;
}

struct frame {
    uint32_t agent;
    uint32_t need; /* pop once sim[agent] > need; UINT32_MAX: run to the end */
};

int vv_crdt_seq_apply(struct vv_crdt_seq *d, const uint8_t *buf, size_t len)
{
    d->last_work = 0;
    d->missing_replica = d->missing_seq = 0;
    struct dec x;
    int rc = decode(buf, len, &x);
    if (rc) {
        dec_free(&x);
        return rc;
    }
    uint32_t nu = x.nids ? x.nids : 1;
    uint32_t *amap = vv_xmalloc(nu * sizeof(uint32_t)); /* update agent -> doc agent */
    uint32_t *sim = vv_xmalloc(nu * sizeof(uint32_t));  /* items known, as scheduled */
    uint32_t *cov = vv_xmalloc(nu * sizeof(uint32_t));  /* items known after the update */
    uint32_t *qhead = vv_xcalloc(nu, sizeof(uint32_t)); /* per agent: range in keys */
    uint32_t *qend = vv_xcalloc(nu, sizeof(uint32_t));
    bool *onstack = vv_xcalloc(nu, sizeof(bool));
    struct frame *stack = vv_xmalloc(nu * sizeof(*stack));
    uint32_t *order = vv_xmalloc((x.nrecs ? x.nrecs : 1) * sizeof(uint32_t));
    size_t norder = 0;
    struct skey *keys = NULL;
    uint32_t nnew = 0;
    for (uint32_t u = 0; u < x.nids; u++) {
        amap[u] = vv__seq_agent_find(d, x.ids[u]);
        nnew += amap[u] == VV__SEQ_NONE;
        sim[u] = amap[u] == VV__SEQ_NONE ? 0 : d->agents[amap[u]].next_seq;
        cov[u] = sim[u];
    }
    if ((uint64_t)d->nagents + nnew > VV_CRDT_SEQ_MAX_REPLICAS) {
        rc = VV_ELIMIT;
        goto out;
    }

    /* Per agent, the records must tile one range of seqs that starts at or before what the
     * document knows (a gap before it is a missing dependency). */
    keys = sort_records(&x);
    for (size_t i = 0; i < x.nrecs; i++) {
        const struct drec *w = &x.recs[keys[i].rec];
        if (i == 0 || x.recs[keys[i - 1].rec].agent != w->agent) {
            qhead[w->agent] = (uint32_t)i;
            if (w->seq > sim[w->agent]) {
                missing(d, x.ids[w->agent], w->seq - 1);
                rc = VV_ECRDT_CAUSALITY;
                goto out;
            }
        } else {
            const struct drec *pw = &x.recs[keys[i - 1].rec];
            if (pw->seq + pw->len != w->seq) {
                rc = VV_ECRDT_DECODE;
                goto out;
            }
        }
        qend[w->agent] = (uint32_t)i + 1;
        cov[w->agent] = VV_MAX(cov[w->agent], w->seq + w->len);
    }
    /* Every origin and deletion must name an item the document or the update holds. */
    for (size_t i = 0; i < x.nrecs && rc == 0; i++) {
        const struct drec *w = &x.recs[i];
        if (w->ol.agent != VV__SEQ_NONE && w->ol.seq >= cov[w->ol.agent]) {
            missing(d, x.ids[w->ol.agent], w->ol.seq);
            rc = VV_ECRDT_CAUSALITY;
        } else if (w->orr.agent != VV__SEQ_NONE && w->orr.seq >= cov[w->orr.agent]) {
            missing(d, x.ids[w->orr.agent], w->orr.seq);
            rc = VV_ECRDT_CAUSALITY;
        }
    }
    for (size_t i = 0; i < x.ndels && rc == 0; i++)
        if (x.dels[i].seq + x.dels[i].len > cov[x.dels[i].agent]) {
            missing(d, x.ids[x.dels[i].agent], x.dels[i].seq + x.dels[i].len - 1);
            rc = VV_ECRDT_CAUSALITY;
        }
    if (rc)
        goto out;

    bool fast = (x.flags & FLAG_DOC_ORDER) && d->root == NULL;
    if (!fast) {
        /*
         * A causal order: take each agent's records in seq order; when one needs an item of
         * another agent not yet scheduled, schedule that agent's records first up to it (a
         * stack, as Yjs does). Needing an agent already on the stack is a cycle: malformed.
         */
        for (uint32_t root = 0; root < x.nids && rc == 0; root++) {
            if (qhead[root] == qend[root])
                continue;
            uint32_t sp = 0;
            stack[sp++] = (struct frame){root, UINT32_MAX};
            onstack[root] = true;
            while (sp > 0) {
                struct frame *f = &stack[sp - 1];
                uint32_t c = f->agent;
                if (qhead[c] == qend[c] || (f->need != UINT32_MAX && sim[c] > f->need)) {
                    onstack[c] = false;
                    sp--;
                    continue;
                }
                const struct drec *w = &x.recs[keys[qhead[c]].rec];
                if (w->seq + w->len <= sim[c]) { /* already known */
                    qhead[c]++;
                    continue;
                }
                sqid_t dep = {VV__SEQ_NONE, 0};
                if (w->seq >= sim[c] && w->ol.agent != VV__SEQ_NONE &&
                    w->ol.seq >= sim[w->ol.agent])
                    dep = w->ol;
                else if (w->orr.agent != VV__SEQ_NONE && w->orr.seq >= sim[w->orr.agent])
                    dep = w->orr;
                if (dep.agent != VV__SEQ_NONE) {
                    if (onstack[dep.agent]) {
                        rc = VV_ECRDT_DECODE;
                        break;
                    }
                    stack[sp++] = (struct frame){dep.agent, dep.seq};
                    onstack[dep.agent] = true;
                    continue;
                }
                order[norder++] = keys[qhead[c]].rec;
                sim[c] = w->seq + w->len;
                qhead[c]++;
            }
        }
        if (rc)
            goto out;
    }

    /* Integrate, as one transaction: an item found impossible or over the budget undoes the
     * whole update. The deletions after it cannot fail. */
    struct vv__seq_txn txn;
    vv__seq_txn_begin(d, &txn, VV_CRDT_SEQ_WORK_MAX);
    for (uint32_t u = 0; u < x.nids; u++)
        if (amap[u] == VV__SEQ_NONE)
            amap[u] = vv__seq_agent_add(d, x.ids[u]);
#define MAP(id) ((id).agent == VV__SEQ_NONE ? (id) : (sqid_t){amap[(id).agent], (id).seq})
    if (fast) {
        run_t **runs = vv_xmalloc((x.nrecs ? x.nrecs : 1) * sizeof(*runs));
        for (size_t i = 0; i < x.nrecs; i++) {
            const struct drec *w = &x.recs[i];
            uint32_t coff = w->deleted ? VV__SEQ_NO_CONTENT
                                       : vv__seq_chars_append(d, x.cps + w->cstart, w->len);
            runs[i] = vv__seq_run_new(amap[w->agent], w->seq, w->len, MAP(w->ol), MAP(w->orr), coff,
                                      w->deleted);
        }
        for (size_t i = 0; i < x.nrecs; i++) {
            const run_t *y = runs[keys[i].rec];
            vv__seq_idx_append(&d->agents[y->agent], runs[keys[i].rec]);
        }
        for (uint32_t u = 0; u < x.nids; u++)
            d->agents[amap[u]].next_seq = cov[u];
        vv__seq_build(d, runs, x.nrecs);
        vv_free(runs);
    } else {
        for (size_t k = 0; k < norder; k++) {
            const struct drec *w = &x.recs[order[k]];
            uint32_t a = amap[w->agent];
            uint32_t known = d->agents[a].next_seq, trim = known - w->seq;
            if (known <= w->seq)
                trim = 0;
            sqid_t ol = trim ? (sqid_t){a, known - 1} : MAP(w->ol);
            uint32_t coff = w->deleted
                                ? VV__SEQ_NO_CONTENT
                                : vv__seq_chars_append(d, x.cps + w->cstart + trim, w->len - trim);
            rc = vv__seq_integrate(d, &txn, a, w->seq + trim, w->len - trim, ol, MAP(w->orr), coff,
                                   w->deleted);
            if (rc)
                break;
        }
    }
#undef MAP
    if (rc) {
        vv__seq_txn_rollback(d, &txn);
        goto out;
    }
    vv__seq_txn_commit(d, &txn);
    for (size_t i = 0; i < x.ndels; i++)
        vv__seq_delete_ids(d, amap[x.dels[i].agent], x.dels[i].seq, x.dels[i].len);

out:
    vv_free(keys);
    vv_free(amap);
    vv_free(sim);
    vv_free(cov);
    vv_free(qhead);
    vv_free(qend);
    vv_free(onstack);
    vv_free(stack);
    vv_free(order);
    dec_free(&x);
    return rc;
}
