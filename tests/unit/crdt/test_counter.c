/*
 * G-Counter and PN-Counter: values, idempotent and order-free updates, state vectors and
 * "what you miss" deltas, overflow, hostile encodings, and random convergence.
 */
#include "vv_test.h"

#include <string.h>

#include "types_prop.h"
#include "vivim/crdt.h"

static void test_gcounter_counts_and_updates_are_idempotent(void **state)
{
    (void)state;
    struct vv_gcounter *a = vv_gcounter_new(), *b = vv_gcounter_new();
    uint8_t *d1, *d2;
    size_t l1, l2;
    assert_int_equal(vv_gcounter_increment(a, 1, 5, &d1, &l1), 0);
    assert_int_equal(vv_gcounter_increment(a, 1, 2, &d2, &l2), 0);
    assert_int_equal(vv_gcounter_increment(a, 2, 10, NULL, NULL), 0);
    assert_int_equal(vv_gcounter_value(a), 17);
    /* Newer first, then the older one twice: still 7 from replica 1. */
    assert_int_equal(vv_gcounter_apply(b, d2, l2), 0);
    assert_int_equal(vv_gcounter_apply(b, d1, l1), 0);
    assert_int_equal(vv_gcounter_apply(b, d1, l1), 0);
    assert_int_equal(vv_gcounter_value(b), 7);
    json_t *j = vv_gcounter_to_json(b);
    assert_true(json_is_integer(j));
    assert_int_equal(json_integer_value(j), 7);
    json_decref(j);
    /* Zero amounts and replica 0 are refused. */
    assert_int_equal(vv_gcounter_increment(b, 1, 0, NULL, NULL), VV_EINVAL);
    assert_int_equal(vv_gcounter_increment(b, 0, 1, NULL, NULL), VV_EINVAL);
    vv_free(d1);
    vv_free(d2);
    vv_gcounter_free(a);
    vv_gcounter_free(b);
}

static void test_gcounter_encoding_is_byte_exact(void **state)
{
    (void)state;
    struct vv_gcounter *c = vv_gcounter_new();
    assert_int_equal(vv_gcounter_increment(c, 0x0102030405060708ULL, 300, NULL, NULL), 0);
    assert_int_equal(vv_gcounter_increment(c, 1, 1, NULL, NULL), 0);
    uint8_t *e;
    size_t el;
    assert_int_equal(vv_gcounter_encode(c, &e, &el), 0);
    /* version, type, 2 entries sorted by replica; 300 = LEB128 ac 02. */
    const uint8_t want[] = {1, 0x01, 2, 0, 0, 0, 0, 0, 0, 0,    1,
                            1, 1,    2, 3, 4, 5, 6, 7, 8, 0xac, 0x02};
    assert_int_equal(el, sizeof(want));
    assert_memory_equal(e, want, el);
    struct vv_gcounter *d;
    assert_int_equal(vv_gcounter_decode(e, el, &d), 0);
    assert_int_equal(vv_gcounter_value(d), 301);
    vv_free(e);
    vv_gcounter_free(d);
    vv_gcounter_free(c);
}

static void test_pncounter_goes_both_ways_and_saturates(void **state)
{
    (void)state;
    struct vv_pncounter *c = vv_pncounter_new();
    assert_int_equal(vv_pncounter_add(c, 1, 10, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_add(c, 2, -25, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_add(c, 1, -1, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_value(c), -16);
    assert_int_equal(vv_pncounter_add(c, 1, 0, NULL, NULL), VV_EINVAL);
    assert_int_equal(vv_pncounter_add(c, 1, INT64_MIN, NULL, NULL), VV_EINVAL);
    /* Sums beyond int64 saturate rather than wrap. */
    assert_int_equal(vv_pncounter_add(c, 3, INT64_MAX, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_add(c, 4, INT64_MAX, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_value(c), INT64_MAX);
    /* One replica's history can't exceed UINT64_MAX events: refused, state unchanged. */
    assert_int_equal(vv_pncounter_add(c, 3, -INT64_MAX, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_add(c, 3, -2, NULL, NULL), VV_ECRDT_RANGE);
    struct vv_crdt_sv sv = {0};
    assert_int_equal(vv_pncounter_state_vector(c, &sv), 0);
    assert_int_equal(vv_crdt_sv_get(&sv, 3), UINT64_MAX - 1);
    vv_crdt_sv_clear(&sv);
    vv_pncounter_free(c);
}

static void test_delta_since_sends_only_what_the_peer_lacks(void **state)
{
    (void)state;
    struct vv_pncounter *a = vv_pncounter_new(), *b = vv_pncounter_new();
    for (uint64_t r = 1; r <= 50; r++)
        assert_int_equal(vv_pncounter_add(a, r, (int64_t)r, NULL, NULL), 0);
    uint8_t *full, *d, *svb;
    size_t fl, dl, svl;
    assert_int_equal(vv_pncounter_encode(a, &full, &fl), 0);
    assert_int_equal(vv_pncounter_apply(b, full, fl), 0);
    /* Now a moves on at two replicas. */
    assert_int_equal(vv_pncounter_add(a, 7, -3, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_add(a, 99, 4, NULL, NULL), 0);
    /* b sends its vector over the wire; a answers with two entries only. */
    struct vv_crdt_sv sv = {0}, sv2 = {0};
    assert_int_equal(vv_pncounter_state_vector(b, &sv), 0);
    assert_int_equal(vv_crdt_sv_encode(&sv, &svb, &svl), 0);
    assert_int_equal(vv_crdt_sv_decode(svb, svl, &sv2), 0);
    assert_int_equal(sv2.n, 50);
    assert_int_equal(vv_pncounter_delta_since(a, &sv2, &d, &dl), 0);
    assert_true(dl < fl / 10);
    assert_int_equal(d[2], 2); /* two entries */
    assert_int_equal(vv_pncounter_apply(b, d, dl), 0);
    assert_int_equal(vv_pncounter_value(b), vv_pncounter_value(a));
    uint8_t *ea, *eb;
    size_t la, lb;
    vv_pncounter_encode(a, &ea, &la);
    vv_pncounter_encode(b, &eb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ea, eb, la);
    vv_free(ea);
    vv_free(eb);
    vv_free(full);
    vv_free(d);
    vv_free(svb);
    vv_crdt_sv_clear(&sv);
    vv_crdt_sv_clear(&sv2);
    vv_pncounter_free(a);
    vv_pncounter_free(b);
}

static void test_hostile_encodings_are_rejected_without_change(void **state)
{
    (void)state;
    struct vv_gcounter *g = vv_gcounter_new();
    struct vv_pncounter *p = vv_pncounter_new();
    assert_int_equal(vv_gcounter_increment(g, 5, 3, NULL, NULL), 0);
    assert_int_equal(vv_pncounter_add(p, 5, 3, NULL, NULL), 0);
    const uint8_t huge_count[] = {1, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f};
    const uint8_t truncated[] = {1, 0x01, 1, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t bad_version[] = {2, 0x01, 0};
    const uint8_t wrong_type[] = {1, 0x02, 0};
    const uint8_t trailing[] = {1, 0x01, 0, 0};
    const uint8_t unsorted[] = {1, 0x01, 2, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    const uint8_t zero_replica[] = {1, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const uint8_t zero_count[] = {1, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0};
    const uint8_t overlong_varint[] = {1, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0x81, 0x00};
    const uint8_t varint_65_bits[] = {1,    0x01, 1,    0,    0,    0,    0,    0,    0,    0,   9,
                                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    const uint8_t pn_overflow[] = {1,    0x02, 1,    0,    0,    0,    0,    0,    0,    0,    9,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1};
    struct {
        const uint8_t *b;
        size_t n;
    } cases[] = {
        {huge_count, sizeof(huge_count)},
        {truncated, sizeof(truncated)},
        {bad_version, sizeof(bad_version)},
        {wrong_type, sizeof(wrong_type)},
        {trailing, sizeof(trailing)},
        {unsorted, sizeof(unsorted)},
        {zero_replica, sizeof(zero_replica)},
        {zero_count, sizeof(zero_count)},
        {overlong_varint, sizeof(overlong_varint)},
        {varint_65_bits, sizeof(varint_65_bits)},
        {NULL, 0},
    };
    uint8_t *before, *after;
    size_t bl, al;
    vv_gcounter_encode(g, &before, &bl);
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        assert_int_equal(vv_gcounter_apply(g, cases[i].b, cases[i].n), VV_ECRDT_DECODE);
        struct vv_gcounter *x = NULL;
        assert_int_equal(vv_gcounter_decode(cases[i].b, cases[i].n, &x), VV_ECRDT_DECODE);
        assert_null(x);
    }
    assert_int_equal(vv_pncounter_apply(p, pn_overflow, sizeof(pn_overflow)), VV_ECRDT_DECODE);
    /* Every prefix of a valid encoding is refused. */
    uint8_t *valid;
    size_t vl;
    vv_pncounter_encode(p, &valid, &vl);
    for (size_t n = 0; n < vl; n++)
        assert_int_equal(vv_pncounter_apply(p, valid, n), VV_ECRDT_DECODE);
    vv_gcounter_encode(g, &after, &al);
    assert_int_equal(al, bl);
    assert_memory_equal(after, before, bl);
    assert_int_equal(vv_pncounter_value(p), 3);
    vv_free(before);
    vv_free(after);
    vv_free(valid);
    vv_gcounter_free(g);
    vv_pncounter_free(p);
}

static void test_join_past_the_replica_limit_is_refused(void **state)
{
    (void)state;
    /* A state no peer could decode must not be built by joining either. */
    struct vv_gcounter *c = vv_gcounter_new(), *other = vv_gcounter_new();
    for (uint64_t r = 1; r <= VV_CRDT_MAX_REPLICAS; r++)
        assert_int_equal(vv_gcounter_increment(c, r, 1, NULL, NULL), 0);
    uint8_t *d, *e;
    size_t dl, el;
    assert_int_equal(vv_gcounter_increment(other, VV_CRDT_MAX_REPLICAS + 1, 1, &d, &dl), 0);
    assert_int_equal(vv_gcounter_apply(c, d, dl), VV_ELIMIT);
    assert_int_equal(vv_gcounter_merge(c, other), VV_ELIMIT);
    assert_int_equal(vv_gcounter_value(c), VV_CRDT_MAX_REPLICAS);
    /* The full state at the limit still round-trips; updates of known replicas still apply. */
    assert_int_equal(vv_gcounter_encode(c, &e, &el), 0);
    struct vv_gcounter *back;
    assert_int_equal(vv_gcounter_decode(e, el, &back), 0);
    vv_free(d);
    assert_int_equal(vv_gcounter_increment(other, 7, 5, &d, &dl), 0);
    assert_int_equal(vv_gcounter_apply(c, d, dl), 0);
    assert_int_equal(vv_gcounter_value(c), VV_CRDT_MAX_REPLICAS + 4);
    vv_free(d);
    vv_free(e);
    vv_gcounter_free(back);
    vv_gcounter_free(c);
    vv_gcounter_free(other);
}

/* ---- convergence -------------------------------------------------------------------------- */

static void *pn_create(void)
{
    return vv_pncounter_new();
}
static void pn_destroy(void *o)
{
    vv_pncounter_free(o);
}
static int pn_apply(void *o, const uint8_t *b, size_t l)
{
    return vv_pncounter_apply(o, b, l);
}
static int pn_encode(const void *o, uint8_t **b, size_t *l)
{
    return vv_pncounter_encode(o, b, l);
}
static json_t *pn_json(const void *o)
{
    return vv_pncounter_to_json(o);
}
static void pn_op(void *o, unsigned r, uint64_t now, uint64_t *rng, uint8_t **d, size_t *dl)
{
    (void)now;
    int64_t amount = (int64_t)prop_below(rng, 21) - 10;
    if (amount == 0)
        amount = 1;
    assert_int_equal(vv_pncounter_add(o, prop_replica_id(r), amount, d, dl), 0);
}

static void *g_create(void)
{
    return vv_gcounter_new();
}
static void g_destroy(void *o)
{
    vv_gcounter_free(o);
}
static int g_apply(void *o, const uint8_t *b, size_t l)
{
    return vv_gcounter_apply(o, b, l);
}
static int g_encode(const void *o, uint8_t **b, size_t *l)
{
    return vv_gcounter_encode(o, b, l);
}
static json_t *g_json(const void *o)
{
    return vv_gcounter_to_json(o);
}
static void g_op(void *o, unsigned r, uint64_t now, uint64_t *rng, uint8_t **d, size_t *dl)
{
    (void)now;
    assert_int_equal(vv_gcounter_increment(o, prop_replica_id(r), 1 + prop_below(rng, 5), d, dl),
                     0);
}

static void test_random_delivery_converges(void **state)
{
    (void)state;
    const struct prop_type pn = {pn_create, pn_destroy, pn_apply, pn_encode, pn_json, pn_op};
    const struct prop_type g = {g_create, g_destroy, g_apply, g_encode, g_json, g_op};
    for (uint64_t seed = 1; seed <= 40; seed++) {
        unsigned replicas = 3 + (unsigned)(seed % 3);
        prop_run(&pn, replicas, 200, seed);
        prop_run(&g, replicas, 200, seed);
    }
}

static void test_random_delivery_sums_every_operation(void **state)
{
    (void)state;
    /* Convergence alone would pass for a counter that drops updates: check the total. */
    struct vv_pncounter *a = vv_pncounter_new(), *b = vv_pncounter_new();
    uint64_t rng = 99;
    int64_t sum = 0;
    uint8_t *ds[300];
    size_t dls[300];
    for (int i = 0; i < 300; i++) {
        int64_t amount = (int64_t)prop_below(&rng, 11) - 5;
        if (!amount)
            amount = 7;
        sum += amount;
        assert_int_equal(vv_pncounter_add(a, 1 + prop_below(&rng, 4), amount, &ds[i], &dls[i]), 0);
    }
    for (int i = 299; i >= 0; i--) {
        assert_int_equal(vv_pncounter_apply(b, ds[i], dls[i]), 0);
        vv_free(ds[i]);
    }
    assert_int_equal(vv_pncounter_value(a), sum);
    assert_int_equal(vv_pncounter_value(b), sum);
    vv_pncounter_free(a);
    vv_pncounter_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcounter_counts_and_updates_are_idempotent),
        cmocka_unit_test(test_gcounter_encoding_is_byte_exact),
        cmocka_unit_test(test_pncounter_goes_both_ways_and_saturates),
        cmocka_unit_test(test_delta_since_sends_only_what_the_peer_lacks),
        cmocka_unit_test(test_hostile_encodings_are_rejected_without_change),
        cmocka_unit_test(test_join_past_the_replica_limit_is_refused),
        cmocka_unit_test(test_random_delivery_converges),
        cmocka_unit_test(test_random_delivery_sums_every_operation),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
