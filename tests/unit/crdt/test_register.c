/*
 * LWW-Register: the later write wins in any order, ties go to the greater replica id, local
 * writes beat what they overwrite even from a clock ahead of ours, JSON values round-trip,
 * hostile encodings are refused without change, random delivery converges.
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

static struct upd set_json(struct vv_lwwreg *r, struct vv_hlc *c, uint64_t now, const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(v);
    struct upd u;
    assert_int_equal(vv_lwwreg_set(r, c, now, v, &u.b, &u.n), 0);
    json_decref(v);
    return u;
}

static void assert_value(const struct vv_lwwreg *r, const char *want)
{
    json_t *v = vv_lwwreg_to_json(r);
    char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    assert_string_equal(t, want);
    free(t);
    json_decref(v);
}

static void test_unset_register_is_null_and_values_round_trip(void **state)
{
    (void)state;
    struct vv_lwwreg *r = vv_lwwreg_new();
    assert_false(vv_lwwreg_timestamp(r, NULL));
    assert_value(r, "null");
    struct vv_hlc c;
    vv_hlc_init(&c, 4);
    struct upd u = set_json(r, &c, 50, "{\"b\": [1, 2.5, \"\\u00e9\"], \"a\": null}");
    /* Stored canonically: compact, keys sorted. */
    assert_value(r, "{\"a\":null,\"b\":[1,2.5,\"\xc3\xa9\"]}");
    struct vv_lwwreg *copy;
    assert_int_equal(vv_lwwreg_decode(u.b, u.n, &copy), 0);
    assert_value(copy, "{\"a\":null,\"b\":[1,2.5,\"\xc3\xa9\"]}");
    struct vv_crdt_ts ts;
    assert_true(vv_lwwreg_timestamp(copy, &ts));
    assert_int_equal(ts.replica, 4);
    assert_int_equal(vv_hlc_wall_ms(ts.hlc), 50);
    vv_free(u.b);
    vv_lwwreg_free(copy);
    vv_lwwreg_free(r);
}

static void test_later_write_wins_in_any_order(void **state)
{
    (void)state;
    struct vv_lwwreg *a = vv_lwwreg_new(), *b = vv_lwwreg_new(), *x = vv_lwwreg_new(),
                     *y = vv_lwwreg_new();
    struct vv_hlc ca, cb;
    vv_hlc_init(&ca, 1);
    vv_hlc_init(&cb, 2);
    struct upd u1 = set_json(a, &ca, 100, "\"first\"");
    struct upd u2 = set_json(b, &cb, 200, "\"second\"");
    struct upd tie_a = set_json(a, &ca, 300, "\"tie-a\""),
               tie_b = set_json(b, &cb, 300, "\"tie-b\"");
    struct upd *order_x[] = {&u1, &u2, &tie_a, &tie_b},
               *order_y[] = {&tie_b, &u2, &tie_a, &u1, &tie_b};
    for (size_t i = 0; i < VV_ARRAY_SIZE(order_x); i++)
        assert_int_equal(vv_lwwreg_apply(x, order_x[i]->b, order_x[i]->n), 0);
    for (size_t i = 0; i < VV_ARRAY_SIZE(order_y); i++)
        assert_int_equal(vv_lwwreg_apply(y, order_y[i]->b, order_y[i]->n), 0);
    /* Same millisecond and logical counter: replica 2 wins. */
    assert_value(x, "\"tie-b\"");
    assert_value(y, "\"tie-b\"");
    /* Merge of whole states agrees with applying updates. */
    assert_int_equal(vv_lwwreg_merge(a, y), 0);
    assert_value(a, "\"tie-b\"");
    /* A local write after a remote one from a clock 10 s ahead still wins locally. */
    struct vv_hlc fast;
    vv_hlc_init(&fast, 3);
    struct upd uf = set_json(b, &fast, 10300, "\"fast\"");
    assert_int_equal(vv_lwwreg_apply(a, uf.b, uf.n), 0);
    struct upd mine = set_json(a, &ca, 301, "\"mine\"");
    assert_value(a, "\"mine\"");
    assert_int_equal(vv_lwwreg_apply(b, mine.b, mine.n), 0);
    assert_value(b, "\"mine\"");
    /* A write from an hour ahead is not followed into the future. */
    struct upd far = set_json(b, &fast, 3600 * 1000, "\"far\"");
    assert_int_equal(vv_lwwreg_apply(a, far.b, far.n), 0);
    uint64_t last = ca.last;
    json_t *nope = json_string("nope");
    assert_int_equal(vv_lwwreg_set(a, &ca, 302, nope, NULL, NULL), VV_ECRDT_RANGE);
    json_decref(nope);
    assert_int_equal(ca.last, last);
    assert_value(a, "\"far\"");
    struct upd *all[] = {&u1, &u2, &tie_a, &tie_b, &uf, &mine, &far};
    for (size_t i = 0; i < VV_ARRAY_SIZE(all); i++)
        vv_free(all[i]->b);
    vv_lwwreg_free(a);
    vv_lwwreg_free(b);
    vv_lwwreg_free(x);
    vv_lwwreg_free(y);
}

static void test_encoding_is_byte_exact(void **state)
{
    (void)state;
    struct vv_lwwreg *r = vv_lwwreg_new();
    uint8_t *e;
    size_t el;
    vv_lwwreg_encode(r, &e, &el);
    const uint8_t unset[] = {1, 0x03, 0};
    assert_int_equal(el, sizeof(unset));
    assert_memory_equal(e, unset, el);
    vv_free(e);
    struct vv_hlc c;
    vv_hlc_init(&c, 0x0a0b);
    struct upd u = set_json(r, &c, 2, "true");
    const uint8_t want[] = {1, 0x03, 1, 0, 0, 0,    0,    0, 2,   0,   0,   0,
                            0, 0,    0, 0, 0, 0x0a, 0x0b, 4, 't', 'r', 'u', 'e'};
    assert_int_equal(u.n, sizeof(want));
    assert_memory_equal(u.b, want, u.n);
    vv_free(u.b);
    vv_lwwreg_free(r);
}

static void test_hostile_encodings_are_rejected_without_change(void **state)
{
    (void)state;
    struct vv_lwwreg *r = vv_lwwreg_new();
    struct vv_hlc c;
    vv_hlc_init(&c, 1);
    vv_free(set_json(r, &c, 5, "1").b);
    const uint8_t good[] = {1, 0x03, 1, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1, '2'};
    struct {
        size_t at;
        uint8_t byte;
    } damage[] = {{0, 0}, {1, 0x04}, {2, 2}, {18, 0}, {19, 2}, {19, 0x80}, {20, 'x'}};
    uint8_t v[sizeof(good)];
    for (size_t i = 0; i < VV_ARRAY_SIZE(damage); i++) {
        memcpy(v, good, sizeof(v));
        v[damage[i].at] = damage[i].byte;
        assert_int_equal(vv_lwwreg_apply(r, v, sizeof(v)), VV_ECRDT_DECODE);
    }
    for (size_t n = 0; n < sizeof(good); n++)
        assert_int_equal(vv_lwwreg_apply(r, good, n), VV_ECRDT_DECODE);
    /* A value over the limit is refused locally too. */
    char *big = vv_xmalloc(VV_CRDT_MAX_VALUE_BYTES + 1);
    memset(big, 'x', VV_CRDT_MAX_VALUE_BYTES);
    big[VV_CRDT_MAX_VALUE_BYTES] = 0;
    json_t *s = json_string(big);
    assert_int_equal(vv_lwwreg_set(r, &c, 6, s, NULL, NULL), VV_ELIMIT);
    json_decref(s);
    vv_free(big);
    assert_value(r, "1");
    /* The undamaged update is accepted (its timestamp is later). */
    assert_int_equal(vv_lwwreg_apply(r, good, sizeof(good)), 0);
    assert_value(r, "2");
    vv_lwwreg_free(r);
}

static void test_winner_is_the_write_with_the_greatest_timestamp(void **state)
{
    (void)state;
    /* Four writers with skewed, sometimes backwards clocks; a reader that gets every update
     * in a random order must end with exactly the greatest-timestamp write. */
    uint64_t rng = 7;
    struct vv_lwwreg *w[4], *reader = vv_lwwreg_new();
    struct vv_hlc c[4];
    struct upd u[200];
    struct vv_crdt_ts best = {0, 0};
    int best_i = -1;
    for (int i = 0; i < 4; i++) {
        w[i] = vv_lwwreg_new();
        vv_hlc_init(&c[i], prop_replica_id((unsigned)i));
    }
    for (int k = 0; k < 200; k++) {
        unsigned r = (unsigned)prop_below(&rng, 4);
        uint64_t phys = 100000 + r * 3 + prop_below(&rng, 50); /* jitters back and forth */
        json_t *v = json_integer(k);
        assert_int_equal(vv_lwwreg_set(w[r], &c[r], phys, v, &u[k].b, &u[k].n), 0);
        json_decref(v);
        struct vv_crdt_ts ts;
        assert_true(vv_lwwreg_timestamp(w[r], &ts));
        if (vv_crdt_ts_cmp(&ts, &best) > 0) {
            best = ts;
            best_i = k;
        }
        /* Sometimes a writer hears of another's write. */
        if (prop_below(&rng, 3) == 0)
            assert_int_equal(vv_lwwreg_apply(w[prop_below(&rng, 4)], u[k].b, u[k].n), 0);
    }
    for (int k = 199; k > 0; k--) {
        int j = (int)prop_below(&rng, (uint64_t)k + 1);
        struct upd t = u[k];
        u[k] = u[j];
        u[j] = t;
    }
    for (int k = 0; k < 200; k++)
        assert_int_equal(vv_lwwreg_apply(reader, u[k].b, u[k].n), 0);
    json_t *got = vv_lwwreg_to_json(reader);
    assert_int_equal(json_integer_value(got), best_i);
    json_decref(got);
    struct vv_crdt_ts ts;
    assert_true(vv_lwwreg_timestamp(reader, &ts));
    assert_int_equal(vv_crdt_ts_cmp(&ts, &best), 0);
    for (int k = 0; k < 200; k++)
        vv_free(u[k].b);
    for (int i = 0; i < 4; i++)
        vv_lwwreg_free(w[i]);
    vv_lwwreg_free(reader);
}

/* ---- convergence -------------------------------------------------------------------------- */

struct rep {
    struct vv_lwwreg *r;
    struct vv_hlc clock;
};

static void *rg_create(void)
{
    struct rep *r = vv_xcalloc(1, sizeof(*r));
    r->r = vv_lwwreg_new();
    return r;
}
static void rg_destroy(void *o)
{
    vv_lwwreg_free(((struct rep *)o)->r);
    vv_free(o);
}
static int rg_apply(void *o, const uint8_t *b, size_t l)
{
    return vv_lwwreg_apply(((struct rep *)o)->r, b, l);
}
static int rg_encode(const void *o, uint8_t **b, size_t *l)
{
    return vv_lwwreg_encode(((const struct rep *)o)->r, b, l);
}
static json_t *rg_json(const void *o)
{
    return vv_lwwreg_to_json(((const struct rep *)o)->r);
}
static void rg_op(void *o, unsigned r, uint64_t now, uint64_t *rng, uint8_t **d, size_t *dl)
{
    struct rep *rep = o;
    rep->clock.replica = prop_replica_id(r);
    json_t *v = json_pack("{s:i,s:i}", "by", (int)r, "n", (int)prop_below(rng, 1000));
    assert_int_equal(vv_lwwreg_set(rep->r, &rep->clock, now, v, d, dl), 0);
    json_decref(v);
}

static void test_random_delivery_converges(void **state)
{
    (void)state;
    const struct prop_type t = {rg_create, rg_destroy, rg_apply, rg_encode, rg_json, rg_op};
    for (uint64_t seed = 1; seed <= 40; seed++)
        prop_run(&t, 3 + (unsigned)(seed % 3), 100, seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_register_is_null_and_values_round_trip),
        cmocka_unit_test(test_later_write_wins_in_any_order),
        cmocka_unit_test(test_encoding_is_byte_exact),
        cmocka_unit_test(test_hostile_encodings_are_rejected_without_change),
        cmocka_unit_test(test_winner_is_the_write_with_the_greatest_timestamp),
        cmocka_unit_test(test_random_delivery_converges),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
