/*
 * LWW-Map: last write wins per key in any delivery order, nested maps merge key by key,
 * deletes are tombstones that compaction drops, limits on depth and keys, hostile encodings
 * refused without change, random delivery converges.
 */
#include "vv_test.h"

#include <stdlib.h>
#include <string.h>

#include "types_prop.h"
#include "vivim/crdt.h"

struct upd {
    uint8_t *b;
    size_t n;
};

static struct upd set_int(struct vv_lwwmap *m, struct vv_hlc *c, uint64_t now,
                          const char *const *path, size_t depth, json_int_t v)
{
    struct upd u;
    json_t *j = json_integer(v);
    assert_int_equal(vv_lwwmap_set(m, c, now, path, depth, j, &u.b, &u.n), 0);
    json_decref(j);
    return u;
}

static void apply_free(struct vv_lwwmap *m, struct upd u)
{
    assert_int_equal(vv_lwwmap_apply(m, u.b, u.n), 0);
    vv_free(u.b);
}

static char *json_text(const struct vv_lwwmap *m)
{
    json_t *j = vv_lwwmap_to_json(m);
    char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return t;
}

static void assert_json_text(const struct vv_lwwmap *m, const char *want)
{
    char *t = json_text(m);
    assert_string_equal(t, want);
    free(t);
}

static void assert_same_state(const struct vv_lwwmap *a, const struct vv_lwwmap *b)
{
    uint8_t *ea, *eb;
    size_t la, lb;
    vv_lwwmap_encode(a, &ea, &la);
    vv_lwwmap_encode(b, &eb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ea, eb, la);
    vv_free(ea);
    vv_free(eb);
}

static void test_set_get_delete_nested(void **state)
{
    (void)state;
    struct vv_lwwmap *m = vv_lwwmap_new();
    struct vv_hlc c;
    vv_hlc_init(&c, 1);
    const char *a[] = {"a"}, *bx[] = {"b", "x"}, *by[] = {"b", "y"};
    vv_free(set_int(m, &c, 100, a, 1, 1).b);
    vv_free(set_int(m, &c, 100, bx, 2, 2).b); /* creates map b */
    vv_free(set_int(m, &c, 100, by, 2, 3).b);
    assert_json_text(m, "{\"a\":1,\"b\":{\"x\":2,\"y\":3}}");
    json_t *v;
    assert_int_equal(vv_lwwmap_get(m, by, 2, &v), 0);
    assert_int_equal(json_integer_value(v), 3);
    json_decref(v);
    assert_int_equal(vv_lwwmap_get(m, bx, 1, &v), 0); /* the nested map as an object */
    assert_true(json_is_object(v));
    assert_int_equal(json_object_size(v), 2);
    json_decref(v);
    assert_int_equal(vv_lwwmap_delete(m, &c, 101, bx, 2, NULL, NULL), 0);
    assert_int_equal(vv_lwwmap_get(m, bx, 2, &v), VV_ENOTFOUND);
    assert_int_equal(vv_lwwmap_tombstones(m), 1);
    assert_json_text(m, "{\"a\":1,\"b\":{\"y\":3}}");
    /* Deleting under a missing map is refused; setting there creates it. */
    const char *qz[] = {"q", "z"};
    assert_int_equal(vv_lwwmap_delete(m, &c, 102, qz, 2, NULL, NULL), VV_ENOTFOUND);
    /* A value replaced by a map, a map by a value. */
    const char *ak[] = {"a", "k"};
    vv_free(set_int(m, &c, 103, ak, 2, 7).b);
    vv_free(set_int(m, &c, 103, bx, 1, 8).b);
    assert_json_text(m, "{\"a\":{\"k\":7},\"b\":8}");
    const char *e[] = {"e"};
    assert_int_equal(vv_lwwmap_set_map(m, &c, 104, e, 1, NULL, NULL), 0);
    assert_json_text(m, "{\"a\":{\"k\":7},\"b\":8,\"e\":{}}");
    vv_lwwmap_free(m);
}

static void test_last_writer_wins_in_any_order(void **state)
{
    (void)state;
    struct vv_lwwmap *a = vv_lwwmap_new(), *b = vv_lwwmap_new(), *x = vv_lwwmap_new(),
                     *y = vv_lwwmap_new();
    struct vv_hlc ca, cb;
    vv_hlc_init(&ca, 1);
    vv_hlc_init(&cb, 2);
    const char *k[] = {"k"};
    /* Same millisecond, no logical difference: replica 2 wins the tie. */
    struct upd ua = set_int(a, &ca, 500, k, 1, 10), ub = set_int(b, &cb, 500, k, 1, 20);
    assert_int_equal(vv_lwwmap_apply(x, ua.b, ua.n), 0);
    assert_int_equal(vv_lwwmap_apply(x, ub.b, ub.n), 0);
    assert_int_equal(vv_lwwmap_apply(y, ub.b, ub.n), 0);
    assert_int_equal(vv_lwwmap_apply(y, ua.b, ua.n), 0);
    assert_int_equal(vv_lwwmap_apply(y, ua.b, ua.n), 0);
    assert_json_text(x, "{\"k\":20}");
    assert_same_state(x, y);
    /* A later delete beats both; an earlier write arriving after it changes nothing. */
    struct upd del;
    assert_int_equal(vv_lwwmap_delete(a, &ca, 600, k, 1, &del.b, &del.n), 0);
    apply_free(x, del);
    assert_int_equal(vv_lwwmap_apply(x, ub.b, ub.n), 0);
    assert_json_text(x, "{}");
    /* A local write after seeing a write from a clock 99 s ahead still wins. */
    struct vv_hlc fast;
    vv_hlc_init(&fast, 3);
    struct upd uf = set_int(b, &fast, 100000, k, 1, 30);
    apply_free(a, uf);
    vv_free(set_int(a, &ca, 700, k, 1, 40).b);
    assert_json_text(a, "{\"k\":40}");
    /* One from an hour ahead is not followed: the write is refused, our clock unchanged. */
    struct upd far = set_int(b, &fast, 3600 * 1000, k, 1, 50);
    apply_free(a, far);
    struct vv_hlc before = ca;
    json_t *v60 = json_integer(60);
    assert_int_equal(vv_lwwmap_set(a, &ca, 800, k, 1, v60, NULL, NULL), VV_ECRDT_RANGE);
    assert_int_equal(ca.last, before.last);
    assert_json_text(a, "{\"k\":50}");
    json_decref(v60);
    vv_free(ua.b);
    vv_free(ub.b);
    vv_lwwmap_free(a);
    vv_lwwmap_free(b);
    vv_lwwmap_free(x);
    vv_lwwmap_free(y);
}

static void test_concurrent_edits_inside_a_nested_map_both_survive(void **state)
{
    (void)state;
    struct vv_lwwmap *a = vv_lwwmap_new(), *b = vv_lwwmap_new();
    struct vv_hlc ca, cb;
    vv_hlc_init(&ca, 1);
    vv_hlc_init(&cb, 2);
    const char *doc[] = {"doc"}, *dt[] = {"doc", "title"}, *dn[] = {"doc", "n"};
    struct upd mk;
    assert_int_equal(vv_lwwmap_set_map(a, &ca, 100, doc, 1, &mk.b, &mk.n), 0);
    apply_free(b, mk);
    struct upd ua = set_int(a, &ca, 200, dt, 2, 1), ub = set_int(b, &cb, 300, dn, 2, 2);
    /* b's edit is later but inside the same map: a's edit is kept. */
    apply_free(a, ub);
    apply_free(b, ua);
    assert_json_text(a, "{\"doc\":{\"n\":2,\"title\":1}}");
    assert_same_state(a, b);
    /* Replacing the nested map itself replaces it whole, even against a later inner edit
     * that happened before it was seen... and a later replacement wins over earlier edits. */
    struct upd repl = set_int(a, &ca, 400, doc, 1, 5);
    struct upd late_inner = set_int(b, &cb, 350, dt, 2, 9);
    apply_free(b, repl);
    apply_free(a, late_inner);
    assert_json_text(a, "{\"doc\":5}");
    assert_same_state(a, b);
    vv_lwwmap_free(a);
    vv_lwwmap_free(b);
}

static void test_compaction_drops_old_tombstones(void **state)
{
    (void)state;
    struct vv_lwwmap *a = vv_lwwmap_new(), *b = vv_lwwmap_new();
    struct vv_hlc ca;
    vv_hlc_init(&ca, 1);
    char key[16];
    struct upd sets[50], dels[50];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        const char *p[] = {key};
        sets[i] = set_int(a, &ca, 1000 + (uint64_t)i, p, 1, i);
        assert_int_equal(vv_lwwmap_delete(a, &ca, 2000 + (uint64_t)i, p, 1, &dels[i].b, &dels[i].n),
                         0);
    }
    assert_int_equal(vv_lwwmap_tombstones(a), 50);
    /* Tombstones older than 2025 go; the 25 newer stay. */
    assert_int_equal(vv_lwwmap_compact(a, 2025), 25);
    assert_int_equal(vv_lwwmap_tombstones(a), 25);
    uint8_t *e;
    size_t el;
    vv_lwwmap_encode(a, &e, &el);
    /* b saw the writes only, then compacts at the same horizon and gets the deletes late:
     * the old ones still remove their keys but are not stored. */
    for (int i = 0; i < 50; i++)
        apply_free(b, sets[i]);
    vv_lwwmap_compact(b, 2025);
    for (int i = 0; i < 50; i++)
        apply_free(b, dels[i]);
    assert_json_text(b, "{}");
    assert_int_equal(vv_lwwmap_tombstones(b), 25);
    assert_same_state(a, b);
    vv_free(e);
    vv_lwwmap_free(a);
    vv_lwwmap_free(b);
}

static void test_encoding_is_byte_exact(void **state)
{
    (void)state;
    struct vv_lwwmap *m = vv_lwwmap_new();
    struct vv_hlc c;
    vv_hlc_init(&c, 2);
    const char *p[] = {"k"};
    struct upd u = set_int(m, &c, 1, p, 1, 7); /* hlc = 1 << 16 */
    const uint8_t want[] = {
        1, 0x05,                   /* version, LWW-Map */
        1,                         /* one entry */
        1, 'k',                    /* key */
        0, 0,    0, 0, 0, 1, 0, 0, /* hlc: wall 1 ms, logical 0 */
        0, 0,    0, 0, 0, 0, 0, 2, /* replica 2 */
        1,                         /* kind: value */
        1, '7',                    /* canonical JSON text */
    };
    assert_int_equal(u.n, sizeof(want));
    assert_memory_equal(u.b, want, u.n);
    vv_free(u.b);
    vv_lwwmap_free(m);
}

/* An encoding of `levels` maps nested under key "d" (the root counts as one). */
static size_t build_nested(uint8_t *out, int levels)
{
    size_t n = 0;
    out[n++] = 1;
    out[n++] = 0x05;
    for (int i = 0; i < levels - 1; i++) {
        const uint8_t entry[] = {1, 1, 'd', 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2};
        memcpy(out + n, entry, sizeof(entry));
        n += sizeof(entry);
    }
    out[n++] = 0;
    return n;
}

static void test_limits_and_hostile_encodings(void **state)
{
    (void)state;
    struct vv_lwwmap *m = vv_lwwmap_new();
    struct vv_hlc c;
    vv_hlc_init(&c, 1);
    const char *deep[VV_CRDT_MAX_DEPTH];
    for (int i = 0; i < VV_CRDT_MAX_DEPTH; i++)
        deep[i] = "d";
    json_t *one = json_integer(1);
    assert_int_equal(vv_lwwmap_set(m, &c, 1, deep, VV_CRDT_MAX_DEPTH - 1, one, NULL, NULL), 0);
    assert_int_equal(vv_lwwmap_set(m, &c, 1, deep, VV_CRDT_MAX_DEPTH, one, NULL, NULL), VV_ELIMIT);
    const char *bad_utf8[] = {"\xc0\xaf"};
    assert_int_equal(vv_lwwmap_set(m, &c, 1, bad_utf8, 1, one, NULL, NULL), VV_EINVAL);
    /* The deepest legal state round-trips. */
    uint8_t *e;
    size_t el;
    vv_lwwmap_encode(m, &e, &el);
    struct vv_lwwmap *back;
    assert_int_equal(vv_lwwmap_decode(e, el, &back), 0);
    assert_same_state(m, back);
    vv_lwwmap_free(back);
    /* Nested maps built by hand: 16 levels are accepted, 17 are not. */
    uint8_t hostile[2 + 17 * 20 + 1];
    size_t n = build_nested(hostile, 16);
    struct vv_lwwmap *fresh = vv_lwwmap_new();
    assert_int_equal(vv_lwwmap_apply(fresh, hostile, n), 0);
    vv_lwwmap_free(fresh);
    n = build_nested(hostile, 17);
    const uint8_t ok_entry[] = {1, 0x05, 1, 1, 'k', 0, 0, 0, 0, 0, 1, 0,
                                0, 0,    0, 0, 0,   0, 0, 0, 1, 1, 1, '7'};
    assert_int_equal(vv_lwwmap_apply(m, hostile, n), VV_ECRDT_DECODE);
    assert_int_equal(vv_lwwmap_apply(m, hostile + 20, n - 20), VV_ECRDT_DECODE); /* garbage */
    uint8_t v[sizeof(ok_entry)];
    struct {
        size_t at;
        uint8_t byte;
    } damage[] = {
        {0, 2},    /* unknown version */
        {1, 0x07}, /* unknown type */
        {2, 0x7f}, /* count beyond the input */
        {4, 0xff}, /* key not UTF-8 */
        {4, 0},    /* key with NUL */
        {20, 0},   /* replica 0 */
        {21, 3},   /* unknown kind */
        {23, ' '}, /* value not JSON */
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(damage); i++) {
        memcpy(v, ok_entry, sizeof(v));
        v[damage[i].at] = damage[i].byte;
        assert_int_equal(vv_lwwmap_apply(m, v, sizeof(v)), VV_ECRDT_DECODE);
    }
    for (size_t k = 0; k < sizeof(ok_entry); k++)
        assert_int_equal(vv_lwwmap_apply(m, ok_entry, k), VV_ECRDT_DECODE);
    uint8_t *after;
    size_t al;
    vv_lwwmap_encode(m, &after, &al);
    assert_int_equal(al, el);
    assert_memory_equal(after, e, el);
    /* ...and the undamaged one is accepted. */
    assert_int_equal(vv_lwwmap_apply(m, ok_entry, sizeof(ok_entry)), 0);
    json_t *got;
    const char *k[] = {"k"};
    assert_int_equal(vv_lwwmap_get(m, k, 1, &got), 0);
    assert_int_equal(json_integer_value(got), 7);
    json_decref(got);
    json_decref(one);
    vv_free(e);
    vv_free(after);
    vv_lwwmap_free(m);
}

static void test_merge_in_memory_equals_applying_the_encoding(void **state)
{
    (void)state;
    struct vv_lwwmap *a = vv_lwwmap_new(), *b = vv_lwwmap_new(), *c = vv_lwwmap_new();
    struct vv_hlc ca, cb;
    vv_hlc_init(&ca, 1);
    vv_hlc_init(&cb, 2);
    const char *doc[] = {"doc"}, *dx[] = {"doc", "x"}, *dy[] = {"doc", "y"}, *z[] = {"z"};
    struct upd mk;
    assert_int_equal(vv_lwwmap_set_map(a, &ca, 10, doc, 1, &mk.b, &mk.n), 0);
    assert_int_equal(vv_lwwmap_apply(b, mk.b, mk.n), 0);
    vv_free(mk.b);
    vv_free(set_int(a, &ca, 20, dx, 2, 1).b);
    vv_free(set_int(b, &cb, 21, dy, 2, 2).b);
    vv_free(set_int(b, &cb, 22, z, 1, 3).b);
    assert_int_equal(vv_lwwmap_delete(a, &ca, 23, z, 1, NULL, NULL), 0);
    uint8_t *e;
    size_t el;
    vv_lwwmap_encode(a, &e, &el);
    assert_int_equal(vv_lwwmap_apply(c, e, el), 0);
    vv_free(e);
    vv_lwwmap_encode(b, &e, &el);
    assert_int_equal(vv_lwwmap_apply(c, e, el), 0);
    vv_free(e);
    assert_int_equal(vv_lwwmap_merge(b, a), 0);
    assert_int_equal(vv_lwwmap_merge(b, b), 0);
    assert_same_state(b, c);
    assert_json_text(b, "{\"doc\":{\"x\":1,\"y\":2}}");
    vv_lwwmap_free(a);
    vv_lwwmap_free(b);
    vv_lwwmap_free(c);
}

/* ---- convergence -------------------------------------------------------------------------- */

struct rep {
    struct vv_lwwmap *m;
    struct vv_hlc clock;
};

static void *lm_create(void)
{
    struct rep *r = vv_xcalloc(1, sizeof(*r));
    r->m = vv_lwwmap_new();
    return r;
}
static void lm_destroy(void *o)
{
    struct rep *r = o;
    vv_lwwmap_free(r->m);
    vv_free(r);
}
static int lm_apply(void *o, const uint8_t *b, size_t l)
{
    return vv_lwwmap_apply(((struct rep *)o)->m, b, l);
}
static int lm_encode(const void *o, uint8_t **b, size_t *l)
{
    return vv_lwwmap_encode(((const struct rep *)o)->m, b, l);
}
static json_t *lm_json(const void *o)
{
    return vv_lwwmap_to_json(((const struct rep *)o)->m);
}
static void lm_op(void *o, unsigned r, uint64_t now, uint64_t *rng, uint8_t **d, size_t *dl)
{
    struct rep *rep = o;
    rep->clock.replica = prop_replica_id(r);
    static const char *keys[] = {"a", "b", "c"};
    const char *path[3];
    size_t depth = 1 + (size_t)prop_below(rng, 3);
    for (size_t i = 0; i < depth; i++)
        path[i] = keys[prop_below(rng, 3)];
    uint64_t kind = prop_below(rng, 6);
    int rc;
    if (kind == 0) {
        rc = vv_lwwmap_delete(rep->m, &rep->clock, now, path, depth, d, dl);
        if (rc == VV_ENOTFOUND)
            return;
    } else if (kind == 1) {
        rc = vv_lwwmap_set_map(rep->m, &rep->clock, now, path, depth, d, dl);
    } else {
        json_t *v = json_integer((json_int_t)prop_below(rng, 100));
        rc = vv_lwwmap_set(rep->m, &rep->clock, now, path, depth, v, d, dl);
        json_decref(v);
    }
    assert_int_equal(rc, 0);
}

static void test_random_delivery_converges(void **state)
{
    (void)state;
    const struct prop_type t = {lm_create, lm_destroy, lm_apply, lm_encode, lm_json, lm_op};
    for (uint64_t seed = 1; seed <= 60; seed++)
        prop_run(&t, 3 + (unsigned)(seed % 3), 150, seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_delete_nested),
        cmocka_unit_test(test_last_writer_wins_in_any_order),
        cmocka_unit_test(test_concurrent_edits_inside_a_nested_map_both_survive),
        cmocka_unit_test(test_compaction_drops_old_tombstones),
        cmocka_unit_test(test_encoding_is_byte_exact),
        cmocka_unit_test(test_limits_and_hostile_encodings),
        cmocka_unit_test(test_merge_in_memory_equals_applying_the_encoding),
        cmocka_unit_test(test_random_delivery_converges),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
