/*
 * The encoding shared by the non-sequence CRDT types (docs/crdt.md, "Encoding"): a version
 * byte, a type byte, then the type's body built from unsigned LEB128 varints, 8-byte
 * big-endian replica ids and length-prefixed byte strings. The reader is strict: minimal
 * varints only, counts bounded by a limit and by the bytes left, nothing after the body. It
 * never allocates; decoders allocate only once a count has passed vv__crdt_r_count.
 */
#include <string.h>

#include "crdt/types_internal.h"

#define W_INITIAL_BYTES  64
#define VARINT_MAX_BYTES 10

static void w_reserve(struct vv__crdt_w *w, size_t n)
{
    if (w->cap - w->len >= n)
        return;
    size_t cap = w->cap ? w->cap : W_INITIAL_BYTES;
    while (cap - w->len < n)
        cap *= 2;
    w->p = vv_xrealloc(w->p, cap);
    w->cap = cap;
}

void vv__crdt_w_init(struct vv__crdt_w *w, uint8_t type)
{
    w->p = NULL;
    w->len = w->cap = 0;
    vv__crdt_w_u8(w, VV_CRDT_FORMAT_VERSION);
    vv__crdt_w_u8(w, type);
}

void vv__crdt_w_bytes(struct vv__crdt_w *w, const void *data, size_t n)
{
    if (n == 0)
        return;
    w_reserve(w, n);
    memcpy(w->p + w->len, data, n);
    w->len += n;
}

void vv__crdt_w_u8(struct vv__crdt_w *w, uint8_t v)
{
    vv__crdt_w_bytes(w, &v, 1);
}

void vv__crdt_w_varint(struct vv__crdt_w *w, uint64_t v)
{
    uint8_t b[VARINT_MAX_BYTES];
    size_t n = 0;
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        b[n++] = byte | (v ? 0x80 : 0);
    } while (v);
    vv__crdt_w_bytes(w, b, n);
}

void vv__crdt_w_u64be(struct vv__crdt_w *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)v;
        v >>= 8;
    }
    vv__crdt_w_bytes(w, b, 8);
}

void vv__crdt_w_blob(struct vv__crdt_w *w, const void *data, size_t n)
{
    vv__crdt_w_varint(w, n);
    vv__crdt_w_bytes(w, data, n);
}

void vv__crdt_w_finish(struct vv__crdt_w *w, uint8_t **out, size_t *out_len)
{
    *out = w->p;
    *out_len = w->len;
    w->p = NULL;
    w->len = w->cap = 0;
}

void vv__crdt_w_discard(struct vv__crdt_w *w)
{
    vv_free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
}

int vv__crdt_r_init(struct vv__crdt_r *r, const uint8_t *buf, size_t len, uint8_t type)
{
    r->p = buf;
    r->end = buf ? buf + len : buf;
    r->err = buf == NULL;
    uint8_t version = vv__crdt_r_u8(r);
    uint8_t t = vv__crdt_r_u8(r);
    if (r->err || version != VV_CRDT_FORMAT_VERSION || t != type) {
        r->err = true;
        return VV_ECRDT_DECODE;
    }
    return 0;
}

int vv_crdt_peek_type(const uint8_t *buf, size_t len)
{
    if (!buf || len < 2 || buf[0] != VV_CRDT_FORMAT_VERSION)
        return VV_ECRDT_DECODE;
    return buf[1];
}

static size_t r_left(const struct vv__crdt_r *r)
{
    return r->err ? 0 : (size_t)(r->end - r->p);
}

uint8_t vv__crdt_r_u8(struct vv__crdt_r *r)
{
    if (r_left(r) < 1) {
        r->err = true;
        return 0;
    }
    return *r->p++;
}

uint64_t vv__crdt_r_varint(struct vv__crdt_r *r)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < VARINT_MAX_BYTES; i++) {
        if (r_left(r) < 1)
            break;
        uint8_t b = *r->p++;
        /* The tenth byte may only carry the 64th bit. */
        if (i == VARINT_MAX_BYTES - 1 && b > 1)
            break;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            /* Minimal form: a multi-byte varint may not end in a zero byte. */
            if (i > 0 && b == 0)
                break;
            return v;
        }
    }
    r->err = true;
    return 0;
}

uint64_t vv__crdt_r_u64be(struct vv__crdt_r *r)
{
    if (r_left(r) < 8) {
        r->err = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | r->p[i];
    r->p += 8;
    return v;
}

uint64_t vv__crdt_r_replica(struct vv__crdt_r *r)
{
    uint64_t v = vv__crdt_r_u64be(r);
    if (v == 0)
        r->err = true;
    return v;
}

size_t vv__crdt_r_count(struct vv__crdt_r *r, size_t max, size_t min_item_bytes)
{
    uint64_t n = vv__crdt_r_varint(r);
    if (r->err || n > max || (min_item_bytes && n > r_left(r) / min_item_bytes)) {
        r->err = true;
        return 0;
    }
    return (size_t)n;
}

const uint8_t *vv__crdt_r_blob(struct vv__crdt_r *r, size_t max, size_t *len)
{
    uint64_t n = vv__crdt_r_varint(r);
    if (r->err || n > max || n > r_left(r)) {
        r->err = true;
        *len = 0;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    *len = (size_t)n;
    return p;
}

int vv__crdt_r_done(const struct vv__crdt_r *r)
{
    return r->err || r->p != r->end ? VV_ECRDT_DECODE : 0;
}

/* ---- canonical JSON values ---------------------------------------------------------------- */

#define VALUE_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY)
#define LOAD_FLAGS  (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

int vv__crdt_value_dump(const json_t *v, char **out, size_t *out_len)
{
    if (!v)
        return VV_EINVAL;
    size_t n = json_dumpb(v, NULL, 0, VALUE_FLAGS);
    if (n == 0)
        return VV_EINVAL;
    if (n > VV_CRDT_MAX_VALUE_BYTES)
        return VV_ELIMIT;
    char *p = vv_xmalloc(n);
    if (json_dumpb(v, p, n, VALUE_FLAGS) != n) {
        vv_free(p);
        return VV_EINVAL;
    }
    *out = p;
    *out_len = n;
    return 0;
}

json_t *vv__crdt_value_load(const char *text, size_t len)
{
    json_error_t e;
    return json_loadb(text, len, LOAD_FLAGS, &e);
}

bool vv__crdt_value_is_canonical(const uint8_t *text, size_t len)
{
    if (len == 0 || len > VV_CRDT_MAX_VALUE_BYTES)
        return false;
    json_t *v = vv__crdt_value_load((const char *)text, len);
    if (!v)
        return false;
    bool ok = false;
    char *again;
    size_t again_len;
    if (vv__crdt_value_dump(v, &again, &again_len) == 0) {
        ok = again_len == len && memcmp(again, text, len) == 0;
        vv_free(again);
    }
    json_decref(v);
    return ok;
}

int vv__crdt_bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, VV_MIN(alen, blen));
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* ---- state vectors ------------------------------------------------------------------------ */

void vv__crdt_sv_write(struct vv__crdt_w *w, const struct vv_crdt_sv_entry *e, size_t n)
{
    vv__crdt_w_varint(w, n);
    for (size_t i = 0; i < n; i++) {
        vv__crdt_w_u64be(w, e[i].replica);
        vv__crdt_w_varint(w, e[i].counter);
    }
}

int vv__crdt_sv_read(struct vv__crdt_r *r, struct vv_crdt_sv_entry **out, size_t *out_n)
{
    size_t n = vv__crdt_r_count(r, VV_CRDT_MAX_REPLICAS, 9);
    if (r->err)
        return VV_ECRDT_DECODE;
    struct vv_crdt_sv_entry *e = n ? vv_xcalloc(n, sizeof(*e)) : NULL;
    for (size_t i = 0; i < n && !r->err; i++) {
        e[i].replica = vv__crdt_r_replica(r);
        e[i].counter = vv__crdt_r_varint(r);
        /* Sorted, unique, and no zero counters: one state has one encoding. */
        if (e[i].counter == 0 || (i > 0 && e[i].replica <= e[i - 1].replica))
            r->err = true;
    }
    if (r->err) {
        vv_free(e);
        return VV_ECRDT_DECODE;
    }
    *out = e;
    *out_n = n;
    return 0;
}

void vv_crdt_sv_clear(struct vv_crdt_sv *sv)
{
    vv_free(sv->e);
    sv->e = NULL;
    sv->n = 0;
}

uint64_t vv_crdt_sv_get(const struct vv_crdt_sv *sv, uint64_t replica)
{
    size_t lo = 0, hi = sv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sv->e[mid].replica < replica)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sv->n && sv->e[lo].replica == replica ? sv->e[lo].counter : 0;
}

int vv_crdt_sv_encode(const struct vv_crdt_sv *sv, uint8_t **out, size_t *out_len)
{
    for (size_t i = 0; i < sv->n; i++)
        if (sv->e[i].replica == 0 || sv->e[i].counter == 0 ||
            (i > 0 && sv->e[i].replica <= sv->e[i - 1].replica))
            return VV_EINVAL;
    struct vv__crdt_w w;
    vv__crdt_w_init(&w, VV_CRDT_STATE_VECTOR);
    vv__crdt_sv_write(&w, sv->e, sv->n);
    vv__crdt_w_finish(&w, out, out_len);
    return 0;
}

int vv_crdt_sv_decode(const uint8_t *buf, size_t len, struct vv_crdt_sv *out)
{
    struct vv__crdt_r r;
    if (vv__crdt_r_init(&r, buf, len, VV_CRDT_STATE_VECTOR))
        return VV_ECRDT_DECODE;
    struct vv_crdt_sv_entry *e;
    size_t n;
    if (vv__crdt_sv_read(&r, &e, &n))
        return VV_ECRDT_DECODE;
    if (vv__crdt_r_done(&r)) {
        vv_free(e);
        return VV_ECRDT_DECODE;
    }
    out->e = e;
    out->n = n;
    return 0;
}
