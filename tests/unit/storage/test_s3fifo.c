/*
 * S3-FIFO as a data structure: one-hit wonders leave through the small queue without
 * touching the main one, a key requested again is kept, a ghost comes back into the main
 * queue, pinned keys are never evicted, the capacity always holds; and on a seeded Zipf trace
 * with one-hit wonders it beats LRU's hit ratio at 1% and 10% of the footprint.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "../../bench/s3fifo_sim.h"
#include "vivim/s3fifo.h"

struct evictions {
    uint64_t ids[64];
    size_t n;
};

static void on_evict(const uint8_t key[32], uint64_t size, void *arg)
{
    (void)size;
    struct evictions *ev = arg;
    uint64_t id;
    memcpy(&id, key, sizeof(id));
    if (ev->n < VV_ARRAY_SIZE(ev->ids))
        ev->ids[ev->n] = id;
    ev->n++;
}

static void insert(struct vv_s3fifo *c, uint64_t id, uint64_t size)
{
    uint8_t k[32];
    sim_key(id, k);
    assert_int_equal(vv_s3fifo_insert(c, k, size), 0);
}

static bool get(struct vv_s3fifo *c, uint64_t id)
{
    uint8_t k[32];
    sim_key(id, k);
    return vv_s3fifo_get(c, k);
}

static bool has(struct vv_s3fifo *c, uint64_t id)
{
    uint8_t k[32];
    sim_key(id, k);
    return vv_s3fifo_contains(c, k);
}

static void test_one_hit_wonders_leave_through_the_small_queue(void **state)
{
    (void)state;
    struct evictions ev = {0};
    /* 100 bytes: S is 10 bytes, one 10-byte key at a time. */
    struct vv_s3fifo *c = vv_s3fifo_new(100, on_evict, &ev);
    for (uint64_t id = 1; id <= 9; id++)
        insert(c, id, 10);
    for (uint64_t id = 1; id <= 9; id++)
        assert_true(get(c, id)); /* each requested again: promoted when S overflows */
    for (uint64_t id = 100; id < 150; id++)
        insert(c, id, 10); /* a scan of one-hit wonders */
    for (uint64_t id = 1; id <= 9; id++)
        assert_true(has(c, id));
    struct vv_s3fifo_stats st;
    vv_s3fifo_stats(c, &st);
    assert_true(st.used_bytes <= 100);
    assert_int_equal(st.evictions, ev.n);
    assert_int_equal(ev.n, 50 - 1); /* every wonder but the newest went, nothing else */
    assert_true(st.ghosts > 0);
    vv_s3fifo_free(c);
}

static void test_a_ghost_that_returns_enters_the_main_queue(void **state)
{
    (void)state;
    struct vv_s3fifo *c = vv_s3fifo_new(100, NULL, NULL);
    for (uint64_t id = 1; id <= 11; id++)
        insert(c, id, 10); /* the 11th overflows: 1 leaves S for the ghost queue */
    assert_false(has(c, 1));
    assert_false(get(c, 1));
    insert(c, 1, 10); /* remembered: straight into M */
    struct vv_s3fifo_stats st;
    vv_s3fifo_stats(c, &st);
    assert_int_equal(st.main_bytes, 10);
    for (uint64_t id = 100; id < 120; id++)
        insert(c, id, 10);
    assert_true(has(c, 1)); /* the wonders went through S only */
    uint8_t k[32];
    sim_key(1, k);
    assert_int_equal(vv_s3fifo_insert(c, k, 10), VV_EEXIST);
    assert_int_equal(vv_s3fifo_insert(c, k, 101), VV_ELIMIT);
    vv_s3fifo_free(c);
}

static void test_main_queue_keeps_frequent_keys_and_evicts_cold_ones(void **state)
{
    (void)state;
    struct vv_s3fifo *c = vv_s3fifo_new(1000, NULL, NULL);
    /* Fill M with 90 keys that each came back once from the ghost queue. */
    for (uint64_t id = 0; id < 200; id++) {
        insert(c, id, 10);
        if (!has(c, id))
            continue;
    }
    for (uint64_t id = 0; id < 200; id++)
        if (!get(c, id))
            insert(c, id, 10);
    for (int round = 0; round < 3; round++)
        for (uint64_t id = 0; id < 20; id++)
            if (!get(c, id))
                insert(c, id, 10);
    for (uint64_t id = 1000; id < 1300; id++)
        if (!get(c, id))
            insert(c, id, 10);
    unsigned kept = 0;
    for (uint64_t id = 0; id < 20; id++)
        kept += has(c, id);
    assert_true(kept >= 18); /* the hot keys survive pressure */
    struct vv_s3fifo_stats st;
    vv_s3fifo_stats(c, &st);
    assert_true(st.used_bytes <= 1000);
    assert_true(st.ghosts * 10 <= 1000);
    vv_s3fifo_free(c);
}

static void test_pinned_keys_are_never_evicted(void **state)
{
    (void)state;
    struct evictions ev = {0};
    struct vv_s3fifo *c = vv_s3fifo_new(100, on_evict, &ev);
    uint8_t k[32];
    sim_key(7, k);
    assert_int_equal(vv_s3fifo_pin(c, k, 60), 0);
    for (uint64_t id = 100; id < 200; id++)
        insert(c, id, 10);
    assert_true(has(c, 7));
    assert_true(get(c, 7));
    struct vv_s3fifo_stats st;
    vv_s3fifo_stats(c, &st);
    assert_true(st.used_bytes <= 100);
    assert_int_equal(st.pinned_bytes, 60);
    for (size_t i = 0; i < VV_ARRAY_SIZE(ev.ids) && i < ev.n; i++)
        assert_true(ev.ids[i] != 7);
    /* Pinning more than the capacity empties the queues but keeps every pinned key. */
    sim_key(8, k);
    assert_int_equal(vv_s3fifo_pin(c, k, 80), 0);
    vv_s3fifo_stats(c, &st);
    assert_int_equal(st.small_bytes + st.main_bytes, 0);
    assert_int_equal(st.cached, 2);
    /* Unpinned, a key is evictable like any other. */
    assert_int_equal(vv_s3fifo_unpin(c, k), 0);
    assert_int_equal(vv_s3fifo_unpin(c, k), VV_ENOTFOUND);
    vv_s3fifo_stats(c, &st);
    assert_true(st.used_bytes <= 100);
    assert_false(has(c, 8));
    sim_key(7, k);
    assert_int_equal(vv_s3fifo_remove(c, k), 0);
    assert_int_equal(vv_s3fifo_remove(c, k), VV_ENOTFOUND);
    vv_s3fifo_stats(c, &st);
    assert_int_equal(st.used_bytes, 0);
    vv_s3fifo_free(c);
}

static void test_capacity_holds_under_random_operations(void **state)
{
    (void)state;
    struct vv_s3fifo *c = vv_s3fifo_new(10000, NULL, NULL);
    uint64_t x = 1;
    for (int i = 0; i < 100000; i++) {
        uint64_t r = sim_rng(&x), id = r % 3000;
        uint8_t k[32];
        sim_key(id, k);
        switch ((r >> 32) % 8) {
        case 0:
            vv_s3fifo_pin(c, k, 1 + (r >> 40) % 50);
            break;
        case 1:
            vv_s3fifo_unpin(c, k);
            break;
        case 2:
            vv_s3fifo_remove(c, k);
            break;
        default:
            if (!vv_s3fifo_get(c, k))
                vv_s3fifo_insert(c, k, 1 + (r >> 40) % 500);
        }
        struct vv_s3fifo_stats st;
        vv_s3fifo_stats(c, &st);
        assert_true(st.small_bytes + st.main_bytes == 0 || st.used_bytes <= 10000);
        assert_true(st.ghosts <= 10000);
    }
    vv_s3fifo_free(c);
}

/* Seed 42, 100,000 Zipf(1.0) objects, 1,000,000 requests of which 25% one-hit wonders.
 * Measured: +8.98 points at 1% of the footprint (S3-FIFO 51.82%, LRU 42.84%) and +4.50 at
 * 10% (62.82%, 58.32%); the assertions leave about a point and a half below that. */
static void test_reserve_and_evict_one_make_room_in_fifo_order(void **state)
{
    (void)state;
    struct evictions ev = {0};
    struct vv_s3fifo *c = vv_s3fifo_new(100, on_evict, &ev);
    for (uint64_t id = 1; id <= 10; id++)
        insert(c, id, 10); /* full */
    assert_true(get(c, 10)); /* 10 is wanted again: it survives its turn in S */
    assert_int_equal(vv_s3fifo_reserve(c, 25), 0);
    struct vv_s3fifo_stats st;
    vv_s3fifo_stats(c, &st);
    assert_true(st.used_bytes + 25 <= 100);
    assert_int_equal(ev.n, 3); /* 30 bytes went: the three oldest */
    assert_int_equal(ev.ids[0], 1);
    assert_int_equal(ev.ids[2], 3);
    assert_true(has(c, 10));
    assert_int_equal(vv_s3fifo_reserve(c, 101), VV_ELIMIT);
    /* One at a time, whatever the capacity. */
    size_t before = ev.n;
    assert_true(vv_s3fifo_evict_one(c));
    assert_int_equal(ev.n, before + 1);
    /* Pinned bytes cannot be given up: reserving past them fails, having emptied the queues. */
    uint8_t k[32];
    sim_key(99, k);
    assert_int_equal(vv_s3fifo_pin(c, k, 90), 0);
    assert_int_equal(vv_s3fifo_reserve(c, 20), VV_ELIMIT);
    vv_s3fifo_stats(c, &st);
    assert_int_equal(st.cached, 1);
    assert_int_equal(st.used_bytes, 90);
    assert_false(vv_s3fifo_evict_one(c));
    vv_s3fifo_free(c);
}

static void test_s3fifo_beats_lru_on_zipf_with_one_hit_wonders(void **state)
{
    (void)state;
    struct sim_trace t;
    sim_trace_make(&t, 42, 100000, 1000000, 1.0, 0.25);
    const double fractions[] = {0.01, 0.10}, margins[] = {0.075, 0.03};
    for (size_t i = 0; i < VV_ARRAY_SIZE(fractions); i++) {
        uint64_t cap = (uint64_t)((double)t.distinct * fractions[i]) * SIM_OBJECT_BYTES;
        double s3 = sim_s3fifo(&t, cap), lru = sim_lru(&t, cap);
        printf("cache %4.0f%% of footprint: S3-FIFO %.2f%%, LRU %.2f%%, +%.2f points\n",
               fractions[i] * 100, s3 * 100, lru * 100, (s3 - lru) * 100);
        assert_true(s3 >= lru + margins[i]);
    }
    sim_trace_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_hit_wonders_leave_through_the_small_queue),
        cmocka_unit_test(test_a_ghost_that_returns_enters_the_main_queue),
        cmocka_unit_test(test_main_queue_keeps_frequent_keys_and_evicts_cold_ones),
        cmocka_unit_test(test_pinned_keys_are_never_evicted),
        cmocka_unit_test(test_capacity_holds_under_random_operations),
        cmocka_unit_test(test_reserve_and_evict_one_make_room_in_fifo_order),
        cmocka_unit_test(test_s3fifo_beats_lru_on_zipf_with_one_hit_wonders),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
