/*
 * Hybrid logical clock: monotonic when the physical clock stalls or goes backwards, receive
 * pulls the clock past remote timestamps but refuses ones far in the future, the logical
 * counter carries into the wall time, ordering breaks ties by replica.
 */
#include "vv_test.h"

#include "vivim/crdt.h"

static void test_now_is_monotonic_when_the_clock_goes_backwards(void **state)
{
    (void)state;
    struct vv_hlc c;
    vv_hlc_init(&c, 7);
    struct vv_crdt_ts prev = {0, 0}, ts;
    /* Physical time: forward, stalled, a jump back of ten seconds, forward again. */
    const uint64_t phys[] = {1000, 1000, 1000, 1005, 995, 0, 10, 1004, 1005, 1006, 2000};
    for (size_t i = 0; i < VV_ARRAY_SIZE(phys); i++) {
        assert_int_equal(vv_hlc_now(&c, phys[i], &ts), 0);
        assert_true(vv_crdt_ts_cmp(&ts, &prev) > 0);
        assert_int_equal(ts.replica, 7);
        /* Never behind physical time. */
        assert_true(vv_hlc_wall_ms(ts.hlc) >= phys[i]);
        prev = ts;
    }
    /* With the clock stalled at 1005 after 1005 was issued, the logical part counts. */
    vv_hlc_init(&c, 7);
    assert_int_equal(vv_hlc_now(&c, 1005, &ts), 0);
    assert_int_equal(vv_hlc_logical(ts.hlc), 0);
    assert_int_equal(vv_hlc_now(&c, 900, &ts), 0);
    assert_int_equal(vv_hlc_wall_ms(ts.hlc), 1005);
    assert_int_equal(vv_hlc_logical(ts.hlc), 1);
    /* Physical time catching up resets the logical part. */
    assert_int_equal(vv_hlc_now(&c, 1006, &ts), 0);
    assert_int_equal(vv_hlc_wall_ms(ts.hlc), 1006);
    assert_int_equal(vv_hlc_logical(ts.hlc), 0);
}

static void test_logical_counter_carries_into_wall_time(void **state)
{
    (void)state;
    struct vv_hlc c;
    vv_hlc_init(&c, 1);
    struct vv_crdt_ts ts, prev = {0, 0};
    for (unsigned i = 0; i < 70000; i++) {
        assert_int_equal(vv_hlc_now(&c, 5000, &ts), 0);
        assert_true(vv_crdt_ts_cmp(&ts, &prev) > 0);
        prev = ts;
    }
    /* 70,000 events in one millisecond: 65,536 at 5000, the rest at 5001. */
    assert_int_equal(vv_hlc_wall_ms(ts.hlc), 5001);
    assert_int_equal(vv_hlc_logical(ts.hlc), 70000 - 65536 - 1);
}

static void test_receive_moves_past_remote_and_refuses_far_future(void **state)
{
    (void)state;
    struct vv_hlc a, b;
    vv_hlc_init(&a, 1);
    vv_hlc_init(&b, 2);
    struct vv_crdt_ts ta, tb, tr;
    /* a's physical clock is 2 s ahead of b's. */
    assert_int_equal(vv_hlc_now(&a, 12000, &ta), 0);
    assert_int_equal(vv_hlc_receive(&b, 10000, &ta, &tr), 0);
    assert_true(vv_crdt_ts_cmp(&tr, &ta) > 0);
    assert_int_equal(vv_hlc_now(&b, 10001, &tb), 0);
    assert_true(vv_crdt_ts_cmp(&tb, &ta) > 0); /* b's next event orders after a's */
    assert_int_equal(vv_hlc_wall_ms(tb.hlc), 12000);
    /* A remote timestamp an hour ahead is refused and changes nothing. */
    struct vv_crdt_ts future = {(uint64_t)(10000 + 3600 * 1000) << 16, 9};
    uint64_t before = b.last;
    assert_int_equal(vv_hlc_receive(&b, 10002, &future, NULL), VV_ECRDT_RANGE);
    assert_int_equal(b.last, before);
    /* Exactly the allowed drift is accepted. */
    struct vv_crdt_ts edge = {(uint64_t)(10002 + VV_HLC_MAX_DRIFT_MS) << 16, 9};
    assert_int_equal(vv_hlc_receive(&b, 10002, &edge, NULL), 0);
    assert_int_equal(vv_hlc_now(&b, 10003, &tb), 0);
    assert_true(vv_crdt_ts_cmp(&tb, &edge) > 0);
}

static void test_end_of_range_is_an_error_not_a_wrap(void **state)
{
    (void)state;
    struct vv_hlc c;
    vv_hlc_init(&c, 3);
    struct vv_crdt_ts ts;
    c.last = UINT64_MAX - 1;
    assert_int_equal(vv_hlc_now(&c, 0, &ts), 0);
    assert_int_equal(ts.hlc, UINT64_MAX);
    assert_int_equal(vv_hlc_now(&c, 0, &ts), VV_ECRDT_RANGE);
    assert_int_equal(vv_hlc_now(&c, UINT64_MAX, &ts), VV_ECRDT_RANGE);
    assert_int_equal(c.last, UINT64_MAX);
}

static void test_order_is_time_then_counter_then_replica(void **state)
{
    (void)state;
    struct vv_crdt_ts a = {(5ULL << 16) | 3, 9}, b = {(5ULL << 16) | 4, 1}, c = {(6ULL << 16), 1},
                      d = {(5ULL << 16) | 3, 10};
    assert_true(vv_crdt_ts_cmp(&a, &b) < 0);
    assert_true(vv_crdt_ts_cmp(&b, &c) < 0);
    assert_true(vv_crdt_ts_cmp(&a, &d) < 0);
    assert_true(vv_crdt_ts_cmp(&d, &a) > 0);
    assert_int_equal(vv_crdt_ts_cmp(&a, &a), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_now_is_monotonic_when_the_clock_goes_backwards),
        cmocka_unit_test(test_logical_counter_carries_into_wall_time),
        cmocka_unit_test(test_receive_moves_past_remote_and_refuses_far_future),
        cmocka_unit_test(test_end_of_range_is_an_error_not_a_wrap),
        cmocka_unit_test(test_order_is_time_then_counter_then_replica),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
