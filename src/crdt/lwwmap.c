/*
 * LWW-Map: sorted string keys, each holding the last write to it: a JSON value, a nested map
 * or a tombstone, with the timestamp of that write. The join is per key: the greater
 * timestamp wins the whole entry; two nested maps under the same timestamp are the same map
 * (made by one event) and are joined key by key, recursively. Different entries under one
 * timestamp come only from forged updates; (kind, value bytes) then decides, so replicas
 * still agree.
 *
 * A local write makes an update holding just the path to what changed: each nested map on
 * the way with its existing timestamp (so it joins with the receiver's copy instead of
 * replacing it), and the new entry. A write never loses to the entry it replaces: the clock
 * is first moved past the timestamps on the path.
 *
 * Tombstones are compacted by vv_lwwmap_compact(horizon): those older than the horizon are
 * dropped, and a tombstone older than the horizon that arrives later still removes the entry
 * it beats but is not stored. docs/crdt.md says when this is safe.
 */
#include <string.h>

#include "crdt/types_internal.h"

enum { KIND_TOMBSTONE = 0, KIND_VALUE = 1, KIND_MAP = 2 };

struct mentry {
    char *key; /* klen bytes of UTF-8 without NUL, then a terminating NUL */
    size_t klen;
    struct vv_crdt_ts ts;
    uint8_t kind;
    char *val; /* KIND_VALUE: canonical JSON text, vlen bytes */
    size_t vlen;
    struct vv_lwwmap *child; /* KIND_MAP */
};

struct vv_lwwmap {
    size_t len, cap;
    struct mentry *e;    /* sorted by key bytes, unique */
    uint64_t horizon_ms; /* root only: tombstones older than this are not kept */
};

struct vv_lwwmap *vv_lwwmap_new(void)
{
    return vv_xcalloc(1, sizeof(struct vv_lwwmap));
}

static void entry_clear_payload(struct mentry *e)
{
    vv_free(e->val);
    e->val = NULL;
    e->vlen = 0;
    vv_lwwmap_free(e->child);
    e->child = NULL;
}

void vv_lwwmap_free(struct vv_lwwmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->len; i++) {
        vv_free(m->e[i].key);
        entry_clear_payload(&m->e[i]);
    }
    vv_free(m->e);
    vv_free(m);
}

static char *dup_bytes(const char *p, size_t n, bool terminate)
{
    char *c = vv_xmalloc(n + terminate + (n == 0 && !terminate));
    memcpy(c, p, n);
    if (terminate)
        c[n] = 0;
    return c;
}

static size_t map_find(const struct vv_lwwmap *m, const char *key, size_t klen, bool *found)
{
    size_t lo = 0, hi = m->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vv__crdt_bytes_cmp(m->e[mid].key, m->e[mid].klen, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < m->len && vv__crdt_bytes_cmp(m->e[lo].key, m->e[lo].klen, key, klen) == 0;
    return lo;
}

/* Inserts an entry for key at index i (from map_find) with only the key set. */
static struct mentry *map_insert(struct vv_lwwmap *m, size_t i, const char *key, size_t klen)
{
    if (m->len == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 4;
        m->e = vv_xrealloc(m->e, m->cap * sizeof(*m->e));
    }
    memmove(&m->e[i + 1], &m->e[i], (m->len - i) * sizeof(*m->e));
    m->len++;
    m->e[i] = (struct mentry){.key = dup_bytes(key, klen, true), .klen = klen};
    return &m->e[i];
}

static void map_remove(struct vv_lwwmap *m, size_t i)
{
    vv_free(m->e[i].key);
    entry_clear_payload(&m->e[i]);
    memmove(&m->e[i], &m->e[i + 1], (m->len - i - 1) * sizeof(*m->e));
    m->len--;
}

static struct vv_lwwmap *map_clone(const struct vv_lwwmap *m);

/* Makes dst's payload (ts, kind, value, child) a deep copy of src's. */
static void entry_copy_payload(struct mentry *dst, const struct mentry *src)
{
    entry_clear_payload(dst);
    dst->ts = src->ts;
    dst->kind = src->kind;
    if (src->kind == KIND_VALUE) {
        dst->val = dup_bytes(src->val, src->vlen, false);
        dst->vlen = src->vlen;
    } else if (src->kind == KIND_MAP) {
        dst->child = map_clone(src->child);
    }
}

static struct vv_lwwmap *map_clone(const struct vv_lwwmap *m)
{
    struct vv_lwwmap *c = vv_lwwmap_new();
    c->len = c->cap = m->len;
    c->e = m->len ? vv_xcalloc(m->len, sizeof(*c->e)) : NULL;
    for (size_t i = 0; i < m->len; i++) {
        c->e[i].key = dup_bytes(m->e[i].key, m->e[i].klen, true);
        c->e[i].klen = m->e[i].klen;
        entry_copy_payload(&c->e[i], &m->e[i]);
    }
    return c;
}

/* ---- join --------------------------------------------------------------------------------- */

/* <0, 0, >0: which of two entries under one key wins; 0 means "join the two maps". */
static int entry_order(const struct mentry *a, const struct mentry *b)
{
    int c = vv_crdt_ts_cmp(&a->ts, &b->ts);
    if (c)
        return c;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->kind == KIND_VALUE)
        return vv__crdt_bytes_cmp(a->val, a->vlen, b->val, b->vlen);
    return 0; /* two tombstones are equal; two maps are joined */
}

static bool below_horizon(const struct mentry *e, uint64_t horizon_ms)
{
    return e->kind == KIND_TOMBSTONE && vv_hlc_wall_ms(e->ts.hlc) < horizon_ms;
}

/* False when joining src into dst could leave a level with more keys than any peer would
 * decode (an upper bound: the keys of both sides, at every level that would be joined). */
static bool map_join_fits(const struct vv_lwwmap *dst, const struct vv_lwwmap *src)
{
    if (dst->len + src->len > VV_CRDT_MAX_ELEMENTS)
        return false;
    for (size_t j = 0; j < src->len; j++) {
        const struct mentry *b = &src->e[j];
        bool found;
        size_t i = map_find(dst, b->key, b->klen, &found);
        if (found && b->kind == KIND_MAP && entry_order(&dst->e[i], b) == 0 &&
            !map_join_fits(dst->e[i].child, b->child))
            return false;
    }
    return true;
}

/* dst ⊔= src; never fails (src was checked when decoded, and map_join_fits). */
static void map_join(struct vv_lwwmap *dst, const struct vv_lwwmap *src, uint64_t horizon_ms)
{
    for (size_t j = 0; j < src->len; j++) {
        const struct mentry *b = &src->e[j];
        bool found;
        size_t i = map_find(dst, b->key, b->klen, &found);
        if (!found) {
            if (!below_horizon(b, horizon_ms))
                entry_copy_payload(map_insert(dst, i, b->key, b->klen), b);
            continue;
        }
        struct mentry *a = &dst->e[i];
        int c = entry_order(a, b);
        if (c < 0) {
            if (below_horizon(b, horizon_ms))
                map_remove(dst, i);
            else
                entry_copy_payload(a, b);
        } else if (c == 0 && a->kind == KIND_MAP) {
            map_join(a->child, b->child, horizon_ms);
        }
    }
}

/* ---- encoding ----------------------------------------------------------------------------- */

static void map_write(struct vv__crdt_w *w, const struct vv_lwwmap *m)
{
    vv__crdt_w_varint(w, m->len);
    for (size_t i = 0; i < m->len; i++) {
        const struct mentry *e = &m->e[i];
        vv__crdt_w_blob(w, e->key, e->klen);
        vv__crdt_w_u64be(w, e->ts.hlc);
        vv__crdt_w_u64be(w, e->ts.replica);
        vv__crdt_w_u8(w, e->kind);
        if (e->kind == KIND_VALUE)
            vv__crdt_w_blob(w, e->val, e->vlen);
        else if (e->kind == KIND_MAP)
            map_write(w, e->child);
    }
}

static void map_encode(const struct vv_lwwmap *m, uint8_t **out, size_t *out_len)
{
    struct vv__crdt_w w;
    vv__crdt_w_init(&w, VV_CRDT_LWWMAP);
    map_write(&w, m);
    vv__crdt_w_finish(&w, out, out_len);
}

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) without NUL. */
static bool key_is_valid(const uint8_t *s, size_t n)
{
    if (n > VV_CRDT_MAX_KEY_BYTES)
        return false;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

#define ENTRY_MIN_BYTES 18 /* key length, 16 bytes of timestamp, kind */

/* Reads a map body at nesting depth (root = 1). On failure sets r->err; *out is still a
 * valid (partial) map for the caller to free. */
static void map_read(struct vv__crdt_r *r, unsigned depth, struct vv_lwwmap *m)
{
    size_t n = vv__crdt_r_count(r, VV_CRDT_MAX_ELEMENTS, ENTRY_MIN_BYTES);
    if (r->err)
        return;
    m->e = n ? vv_xcalloc(n, sizeof(*m->e)) : NULL;
    m->cap = n;
    for (size_t i = 0; i < n && !r->err; i++) {
        size_t klen;
        const uint8_t *key = vv__crdt_r_blob(r, VV_CRDT_MAX_KEY_BYTES, &klen);
        struct vv_crdt_ts ts;
        ts.hlc = vv__crdt_r_u64be(r);
        ts.replica = vv__crdt_r_replica(r);
        uint8_t kind = vv__crdt_r_u8(r);
        if (r->err || kind > KIND_MAP || !key_is_valid(key, klen) ||
            (i > 0 && vv__crdt_bytes_cmp(m->e[i - 1].key, m->e[i - 1].klen, key, klen) >= 0)) {
            r->err = true;
            return;
        }
        struct mentry *e = &m->e[m->len++];
        e->key = dup_bytes((const char *)key, klen, true);
        e->klen = klen;
        e->ts = ts;
        e->kind = kind;
        if (kind == KIND_VALUE) {
            size_t vlen;
            const uint8_t *v = vv__crdt_r_blob(r, VV_CRDT_MAX_VALUE_BYTES, &vlen);
            if (r->err || !vv__crdt_value_is_canonical(v, vlen)) {
                r->err = true;
                return;
            }
            e->val = dup_bytes((const char *)v, vlen, false);
            e->vlen = vlen;
        } else if (kind == KIND_MAP) {
            if (depth + 1 > VV_CRDT_MAX_DEPTH) {
                r->err = true;
                return;
            }
            e->child = vv_lwwmap_new();
            map_read(r, depth + 1, e->child);
        }
    }
}

static int map_decode(const uint8_t *buf, size_t len, struct vv_lwwmap **out)
{
    struct vv__crdt_r r;
    if (vv__crdt_r_init(&r, buf, len, VV_CRDT_LWWMAP))
        return VV_ECRDT_DECODE;
    struct vv_lwwmap *m = vv_lwwmap_new();
    map_read(&r, 1, m);
    if (vv__crdt_r_done(&r)) {
        vv_lwwmap_free(m);
        return VV_ECRDT_DECODE;
    }
    *out = m;
    return 0;
}

/* ---- local operations --------------------------------------------------------------------- */

static int check_path(const char *const *path, size_t depth, size_t max_depth)
{
    if (!path || depth == 0)
        return VV_EINVAL;
    if (depth > max_depth)
        return VV_ELIMIT;
    for (size_t i = 0; i < depth; i++) {
        if (!path[i])
            return VV_EINVAL;
        size_t n = strnlen(path[i], VV_CRDT_MAX_KEY_BYTES + 1);
        if (n > VV_CRDT_MAX_KEY_BYTES)
            return VV_ELIMIT;
        if (!key_is_valid((const uint8_t *)path[i], n))
            return VV_EINVAL;
    }
    return 0;
}

/*
 * The write shared by set, set_map and delete: builds the update for path ending in an entry
 * of leaf_kind (value for KIND_VALUE, takes it), joins it in and encodes it. must_exist: the
 * maps on the path must exist already (delete).
 */
static int map_write_path(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                          const char *const *path, size_t depth, uint8_t leaf_kind, char *val,
                          size_t vlen, bool must_exist, uint8_t **delta, size_t *delta_len)
{
    /* Walk the existing maps; note the greatest timestamp we are about to overwrite. */
    const struct vv_lwwmap *cur = m;
    size_t existing = 0; /* path[0..existing) are live maps */
    uint64_t beat = 0;
    for (size_t i = 0; i < depth && cur; i++) {
        bool found;
        size_t k = map_find(cur, path[i], strlen(path[i]), &found);
        if (!found)
            break;
        const struct mentry *e = &cur->e[k];
        if (i + 1 < depth && e->kind == KIND_MAP) {
            existing++;
            cur = e->child;
            continue;
        }
        beat = VV_MAX(beat, e->ts.hlc); /* the entry we replace */
        break;
    }
    if (must_exist && existing + 1 < depth) {
        vv_free(val);
        return VV_ENOTFOUND;
    }
    struct vv_hlc saved = *clock;
    struct vv_crdt_ts ts;
    int rc = vv__crdt_clock_beat(clock, phys_ms, beat, &ts);
    if (rc) {
        vv_free(val);
        return rc;
    }
    /* The update: one entry per level. */
    struct vv_lwwmap *d = vv_lwwmap_new(), *level = d;
    cur = m;
    for (size_t i = 0; i < depth; i++) {
        size_t klen = strlen(path[i]);
        struct mentry *e = map_insert(level, 0, path[i], klen);
        if (i + 1 == depth) {
            e->ts = ts;
            e->kind = leaf_kind;
            if (leaf_kind == KIND_VALUE) {
                e->val = val;
                e->vlen = vlen;
            } else if (leaf_kind == KIND_MAP) {
                e->child = vv_lwwmap_new();
            }
            break;
        }
        e->kind = KIND_MAP;
        e->child = vv_lwwmap_new();
        if (i < existing) { /* an existing map: keep its timestamp so the update joins it */
            bool found;
            size_t k = map_find(cur, path[i], klen, &found);
            e->ts = cur->e[k].ts;
            cur = cur->e[k].child;
        } else {
            e->ts = ts;
        }
        level = e->child;
    }
    if (!map_join_fits(m, d)) {
        *clock = saved;
        vv_lwwmap_free(d);
        return VV_ELIMIT;
    }
    map_join(m, d, m->horizon_ms);
    if (delta)
        map_encode(d, delta, delta_len);
    vv_lwwmap_free(d);
    return 0;
}

int vv_lwwmap_set(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                  const char *const *path, size_t depth, const json_t *value, uint8_t **delta,
                  size_t *delta_len)
{
    int rc = check_path(path, depth, VV_CRDT_MAX_DEPTH - 1);
    if (rc)
        return rc;
    char *val;
    size_t vlen;
    rc = vv__crdt_value_dump(value, &val, &vlen);
    if (rc)
        return rc;
    return map_write_path(m, clock, phys_ms, path, depth, KIND_VALUE, val, vlen, false, delta,
                          delta_len);
}

int vv_lwwmap_set_map(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                      const char *const *path, size_t depth, uint8_t **delta, size_t *delta_len)
{
    int rc = check_path(path, depth, VV_CRDT_MAX_DEPTH - 1);
    if (rc)
        return rc;
    return map_write_path(m, clock, phys_ms, path, depth, KIND_MAP, NULL, 0, false, delta,
                          delta_len);
}

int vv_lwwmap_delete(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                     const char *const *path, size_t depth, uint8_t **delta, size_t *delta_len)
{
    int rc = check_path(path, depth, VV_CRDT_MAX_DEPTH - 1);
    if (rc)
        return rc;
    return map_write_path(m, clock, phys_ms, path, depth, KIND_TOMBSTONE, NULL, 0, true, delta,
                          delta_len);
}

static json_t *map_to_json(const struct vv_lwwmap *m);

static json_t *entry_to_json(const struct mentry *e)
{
    if (e->kind == KIND_MAP)
        return map_to_json(e->child);
    json_t *v = vv__crdt_value_load(e->val, e->vlen);
    return v ? v : json_null();
}

static json_t *map_to_json(const struct vv_lwwmap *m)
{
    json_t *o = json_object();
    for (size_t i = 0; i < m->len; i++)
        if (m->e[i].kind != KIND_TOMBSTONE)
            json_object_setn_new(o, m->e[i].key, m->e[i].klen, entry_to_json(&m->e[i]));
    return o;
}

int vv_lwwmap_get(const struct vv_lwwmap *m, const char *const *path, size_t depth, json_t **out)
{
    int rc = check_path(path, depth, VV_CRDT_MAX_DEPTH);
    if (rc)
        return rc;
    const struct vv_lwwmap *cur = m;
    for (size_t i = 0; i < depth; i++) {
        bool found;
        size_t k = map_find(cur, path[i], strlen(path[i]), &found);
        if (!found || cur->e[k].kind == KIND_TOMBSTONE)
            return VV_ENOTFOUND;
        if (i + 1 == depth) {
            *out = entry_to_json(&cur->e[k]);
            return 0;
        }
        if (cur->e[k].kind != KIND_MAP)
            return VV_ENOTFOUND;
        cur = cur->e[k].child;
    }
    return VV_ENOTFOUND;
}

static size_t map_compact(struct vv_lwwmap *m, uint64_t horizon_ms)
{
    size_t dropped = 0;
    for (size_t i = 0; i < m->len;) {
        if (below_horizon(&m->e[i], horizon_ms)) {
            map_remove(m, i);
            dropped++;
            continue;
        }
        if (m->e[i].kind == KIND_MAP)
            dropped += map_compact(m->e[i].child, horizon_ms);
        i++;
    }
    return dropped;
}

size_t vv_lwwmap_compact(struct vv_lwwmap *m, uint64_t horizon_ms)
{
    m->horizon_ms = VV_MAX(m->horizon_ms, horizon_ms);
    return map_compact(m, m->horizon_ms);
}

size_t vv_lwwmap_tombstones(const struct vv_lwwmap *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->len; i++) {
        if (m->e[i].kind == KIND_TOMBSTONE)
            n++;
        else if (m->e[i].kind == KIND_MAP)
            n += vv_lwwmap_tombstones(m->e[i].child);
    }
    return n;
}

int vv_lwwmap_apply(struct vv_lwwmap *m, const uint8_t *buf, size_t len)
{
    struct vv_lwwmap *d;
    int rc = map_decode(buf, len, &d);
    if (rc)
        return rc;
    if (!map_join_fits(m, d)) {
        vv_lwwmap_free(d);
        return VV_ELIMIT;
    }
    map_join(m, d, m->horizon_ms);
    vv_lwwmap_free(d);
    return 0;
}

int vv_lwwmap_merge(struct vv_lwwmap *dst, const struct vv_lwwmap *src)
{
    if (dst == src)
        return 0;
    if (!map_join_fits(dst, src))
        return VV_ELIMIT;
    map_join(dst, src, dst->horizon_ms);
    return 0;
}

int vv_lwwmap_encode(const struct vv_lwwmap *m, uint8_t **out, size_t *out_len)
{
    map_encode(m, out, out_len);
    return 0;
}

int vv_lwwmap_decode(const uint8_t *buf, size_t len, struct vv_lwwmap **out)
{
    return map_decode(buf, len, out);
}

json_t *vv_lwwmap_to_json(const struct vv_lwwmap *m)
{
    return map_to_json(m);
}
