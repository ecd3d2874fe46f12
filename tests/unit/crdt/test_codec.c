/*
 * The shared encoding: LEB128 varints at their edges and in minimal form only, bounded
 * counts, state vectors, canonical JSON values.
 */
#include "vv_test.h"

#include <string.h>

#include "crdt/types_internal.h"

static void test_varints_round_trip_at_the_edges(void **state)
{
    (void)state;
    const uint64_t vals[] = {0,          1,         127, 128, 16383, 16384, (1ULL << 35) - 1,
                             1ULL << 63, UINT64_MAX};
    const size_t sizes[] = {1, 1, 1, 2, 2, 3, 5, 10, 10};
    for (size_t i = 0; i < VV_ARRAY_SIZE(vals); i++) {
        struct vv__crdt_w w;
        vv__crdt_w_init(&w, 0x7f);
        vv__crdt_w_varint(&w, vals[i]);
        uint8_t *b;
        size_t n;
        vv__crdt_w_finish(&w, &b, &n);
        assert_int_equal(n, 2 + sizes[i]);
        struct vv__crdt_r r;
        assert_int_equal(vv__crdt_r_init(&r, b, n, 0x7f), 0);
        assert_int_equal(vv__crdt_r_varint(&r), vals[i]);
        assert_int_equal(vv__crdt_r_done(&r), 0);
        /* Every strict prefix fails. */
        for (size_t k = 2; k < n; k++) {
            assert_int_equal(vv__crdt_r_init(&r, b, k, 0x7f), 0);
            vv__crdt_r_varint(&r);
            assert_int_equal(vv__crdt_r_done(&r), VV_ECRDT_DECODE);
        }
        vv_free(b);
    }
}

static void test_non_minimal_and_oversized_varints_are_refused(void **state)
{
    (void)state;
    const uint8_t overlong_zero[] = {1, 0x7f, 0x80, 0x00};
    const uint8_t overlong_one[] = {1, 0x7f, 0x81, 0x80, 0x00};
    const uint8_t bits_65[] = {1, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    const uint8_t eleven[] = {1,    0x7f, 0x80, 0x80, 0x80, 0x80, 0x80,
                              0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    const uint8_t *bad[] = {overlong_zero, overlong_one, bits_65, eleven};
    const size_t lens[] = {sizeof(overlong_zero), sizeof(overlong_one), sizeof(bits_65),
                           sizeof(eleven)};
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++) {
        struct vv__crdt_r r;
        assert_int_equal(vv__crdt_r_init(&r, bad[i], lens[i], 0x7f), 0);
        assert_int_equal(vv__crdt_r_varint(&r), 0);
        assert_true(r.err);
    }
    /* Unknown version and other types are refused by the header check. */
    struct vv__crdt_r r;
    const uint8_t v2[] = {2, 0x7f}, other[] = {1, 0x01};
    assert_int_equal(vv__crdt_r_init(&r, v2, 2, 0x7f), VV_ECRDT_DECODE);
    assert_int_equal(vv__crdt_r_init(&r, other, 2, 0x7f), VV_ECRDT_DECODE);
    assert_int_equal(vv__crdt_r_init(&r, NULL, 0, 0x7f), VV_ECRDT_DECODE);
    assert_int_equal(vv_crdt_peek_type(other, 2), VV_CRDT_GCOUNTER);
    assert_int_equal(vv_crdt_peek_type(v2, 2), VV_ECRDT_DECODE);
    assert_int_equal(vv_crdt_peek_type(other, 1), VV_ECRDT_DECODE);
}

static void test_counts_are_bounded_by_the_bytes_left(void **state)
{
    (void)state;
    /* Claims 5 items of 9 bytes with 40 bytes left: refused before anything is allocated. */
    uint8_t b[3 + 40] = {1, 0x7f, 5};
    struct vv__crdt_r r;
    assert_int_equal(vv__crdt_r_init(&r, b, sizeof(b), 0x7f), 0);
    assert_int_equal(vv__crdt_r_count(&r, 100, 9), 0);
    assert_true(r.err);
    b[2] = 4;
    assert_int_equal(vv__crdt_r_init(&r, b, sizeof(b), 0x7f), 0);
    assert_int_equal(vv__crdt_r_count(&r, 100, 9), 4);
    assert_false(r.err);
    assert_int_equal(vv__crdt_r_init(&r, b, sizeof(b), 0x7f), 0);
    assert_int_equal(vv__crdt_r_count(&r, 3, 9), 0); /* over the limit */
    assert_true(r.err);
}

static void test_state_vectors_round_trip_and_refuse_junk(void **state)
{
    (void)state;
    struct vv_crdt_sv_entry e[] = {{1, 5}, {0x0100000000000000ULL, 300}, {UINT64_MAX, UINT64_MAX}};
    struct vv_crdt_sv sv = {3, e}, back = {0};
    uint8_t *b;
    size_t n;
    assert_int_equal(vv_crdt_sv_encode(&sv, &b, &n), 0);
    assert_int_equal(b[0], 1);
    assert_int_equal(b[1], VV_CRDT_STATE_VECTOR);
    assert_int_equal(vv_crdt_sv_decode(b, n, &back), 0);
    assert_int_equal(back.n, 3);
    assert_memory_equal(back.e, e, sizeof(e));
    assert_int_equal(vv_crdt_sv_get(&back, 0x0100000000000000ULL), 300);
    assert_int_equal(vv_crdt_sv_get(&back, 2), 0);
    vv_crdt_sv_clear(&back);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(vv_crdt_sv_decode(b, k, &back), VV_ECRDT_DECODE);
    b[3 + 7] = 0; /* first replica id becomes 0 */
    assert_int_equal(vv_crdt_sv_decode(b, n, &back), VV_ECRDT_DECODE);
    assert_null(back.e);
    vv_free(b);
    /* Unsorted and zero counters can't be encoded either. */
    struct vv_crdt_sv_entry unsorted[] = {{2, 1}, {1, 1}}, zero[] = {{1, 0}};
    assert_int_equal(vv_crdt_sv_encode(&(struct vv_crdt_sv){2, unsorted}, &b, &n), VV_EINVAL);
    assert_int_equal(vv_crdt_sv_encode(&(struct vv_crdt_sv){1, zero}, &b, &n), VV_EINVAL);
}

static void test_only_canonical_json_values_pass(void **state)
{
    (void)state;
    const char *good[] = {"1", "\"x\"", "{\"a\":1,\"b\":[true,null]}", "-0.5", "\"\\u0000\""};
    const char *bad[] = {
        " 1", "{\"b\":1,\"a\":2}", "{\"a\":1,\"a\":1}", "[1, 2]", "tru", "\"\\u00e9\"", "1.0e2",
        ""};
    for (size_t i = 0; i < VV_ARRAY_SIZE(good); i++)
        assert_true(vv__crdt_value_is_canonical((const uint8_t *)good[i], strlen(good[i])));
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++)
        assert_false(vv__crdt_value_is_canonical((const uint8_t *)bad[i], strlen(bad[i])));
    assert_true(vv__crdt_bytes_cmp("ab", 2, "abc", 3) < 0);
    assert_true(vv__crdt_bytes_cmp("b", 1, "abc", 3) > 0);
    assert_int_equal(vv__crdt_bytes_cmp("", 0, "", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varints_round_trip_at_the_edges),
        cmocka_unit_test(test_non_minimal_and_oversized_varints_are_refused),
        cmocka_unit_test(test_counts_are_bounded_by_the_bytes_left),
        cmocka_unit_test(test_state_vectors_round_trip_and_refuse_junk),
        cmocka_unit_test(test_only_canonical_json_values_pass),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
