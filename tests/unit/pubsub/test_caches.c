/* The message cache's windows and bounds, the seen cache's TTL, bound and sliced
 * sweep. */
#include "vv_test.h"

#include <string.h>

#include "vivim/pubsub_core.h"

static void mkid(uint32_t n, uint8_t id[VV_PUBSUB_ID_BYTES])
{
    /* IDs that share their first 16 bytes: an unkeyed "first bytes" hash would put them all
     * in one bucket. */
    memset(id, 0x5a, VV_PUBSUB_ID_BYTES);
    memcpy(id + VV_PUBSUB_ID_BYTES - 4, &n, 4);
}

static struct vv_pubsub_mcache *mc_new(size_t max_bytes, uint32_t max_entries)
{
    struct vv_pubsub_mcache_config cfg;
    vv_pubsub_mcache_config_defaults(&cfg);
    if (max_bytes)
        cfg.max_bytes = max_bytes;
    if (max_entries)
        cfg.max_entries = max_entries;
    struct vv_pubsub_mcache *mc;
    assert_int_equal(vv_pubsub_mcache_new(&cfg, &mc), 0);
    return mc;
}

static void test_mcache_keeps_messages_for_history_length_windows(void **state)
{
    (void)state;
    struct vv_pubsub_mcache *mc = mc_new(0, 0);
    struct vv_pubsub_rbuf *fr = vv_pubsub_rbuf_new("frame", 5);
    uint8_t id[VV_PUBSUB_ID_BYTES];
    mkid(1, id);
    assert_int_equal(vv_pubsub_mcache_put(mc, id, "t", 1, fr), 0);
    assert_int_equal(fr->refs, 2);
    assert_int_equal(vv_pubsub_mcache_put(mc, id, "t", 1, fr), VV_EEXIST);
    assert_int_equal(fr->refs, 2);
    for (int shifts = 1; shifts <= 4; shifts++) {
        vv_pubsub_mcache_shift(mc);
        assert_ptr_equal(vv_pubsub_mcache_get(mc, id), fr);
    }
    vv_pubsub_mcache_shift(mc); /* the fifth: the window is history_length behind */
    assert_null(vv_pubsub_mcache_get(mc, id));
    assert_int_equal(fr->refs, 1);
    struct vv_pubsub_mcache_stats st;
    vv_pubsub_mcache_stats(mc, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.expired, 1);
    vv_pubsub_mcache_free(mc);
    vv_pubsub_rbuf_unref(fr);
}

static void test_mcache_gossips_last_three_windows_of_the_topic_newest_first(void **state)
{
    (void)state;
    struct vv_pubsub_mcache *mc = mc_new(0, 0);
    struct vv_pubsub_rbuf *fr = vv_pubsub_rbuf_new("x", 1);
    /* Window w gets IDs 10w (topic a) and 10w + 1 (topic b), w = 0..4. */
    for (uint32_t w = 0; w < 5; w++) {
        if (w)
            vv_pubsub_mcache_shift(mc);
        uint8_t id[VV_PUBSUB_ID_BYTES];
        mkid(10 * w, id);
        assert_int_equal(vv_pubsub_mcache_put(mc, id, "a", 1, fr), 0);
        mkid(10 * w + 1, id);
        assert_int_equal(vv_pubsub_mcache_put(mc, id, "b", 1, fr), 0);
    }
    uint8_t out[16][VV_PUBSUB_ID_BYTES], want[VV_PUBSUB_ID_BYTES];
    assert_int_equal(vv_pubsub_mcache_gossip_ids(mc, "a", 1, out, 16), 3);
    mkid(40, want);
    assert_memory_equal(out[0], want, VV_PUBSUB_ID_BYTES);
    mkid(20, want);
    assert_memory_equal(out[2], want, VV_PUBSUB_ID_BYTES);
    /* cap is respected; an unknown topic gives nothing. */
    assert_int_equal(vv_pubsub_mcache_gossip_ids(mc, "b", 1, out, 2), 2);
    assert_int_equal(vv_pubsub_mcache_gossip_ids(mc, "c", 1, out, 16), 0);
    /* All five windows can still be fetched. */
    mkid(1, want);
    assert_non_null(vv_pubsub_mcache_get(mc, want));
    vv_pubsub_mcache_free(mc);
    assert_int_equal(fr->refs, 1);
    vv_pubsub_rbuf_unref(fr);
}

static void test_mcache_byte_bound_evicts_oldest_and_counts(void **state)
{
    (void)state;
    uint8_t payload[1000] = {0};
    struct vv_pubsub_rbuf *fr = vv_pubsub_rbuf_new(payload, sizeof(payload));
    struct vv_pubsub_mcache *mc = mc_new(10 * 1024, 0);
    for (uint32_t i = 0; i < 100; i++) {
        uint8_t id[VV_PUBSUB_ID_BYTES];
        mkid(i, id);
        assert_int_equal(vv_pubsub_mcache_put(mc, id, "t", 1, fr), 0);
    }
    struct vv_pubsub_mcache_stats st;
    vv_pubsub_mcache_stats(mc, &st);
    assert_true(st.bytes <= 10 * 1024);
    assert_true(st.entries >= 8 && st.entries <= 10);
    assert_int_equal(st.evicted, 100 - st.entries);
    uint8_t id[VV_PUBSUB_ID_BYTES];
    mkid(0, id);
    assert_null(vv_pubsub_mcache_get(mc, id));
    mkid(99, id);
    assert_non_null(vv_pubsub_mcache_get(mc, id));
    /* One entry larger than the whole bound is refused, taking no reference. */
    struct vv_pubsub_rbuf *huge = vv_pubsub_rbuf_new(NULL, 0);
    huge = vv_xrealloc(huge, sizeof(*huge) + 20000);
    huge->len = 20000;
    mkid(1000, id);
    assert_int_equal(vv_pubsub_mcache_put(mc, id, "t", 1, huge), VV_ELIMIT);
    assert_int_equal(huge->refs, 1);
    vv_pubsub_rbuf_unref(huge);
    vv_pubsub_mcache_free(mc);

    /* The entry bound too. */
    mc = mc_new(0, 7);
    for (uint32_t i = 0; i < 50; i++) {
        mkid(i, id);
        assert_int_equal(vv_pubsub_mcache_put(mc, id, "t", 1, fr), 0);
    }
    vv_pubsub_mcache_stats(mc, &st);
    assert_int_equal(st.entries, 7);
    assert_int_equal(st.evicted, 43);
    vv_pubsub_mcache_free(mc);
    assert_int_equal(fr->refs, 1);
    vv_pubsub_rbuf_unref(fr);
}

static void test_mcache_refuses_bad_config(void **state)
{
    (void)state;
    struct vv_pubsub_mcache_config cfg;
    vv_pubsub_mcache_config_defaults(&cfg);
    struct vv_pubsub_mcache *mc;
    cfg.gossip_length = 6;
    assert_int_equal(vv_pubsub_mcache_new(&cfg, &mc), VV_EINVAL);
    cfg.gossip_length = 3;
    cfg.history_length = 0;
    assert_int_equal(vv_pubsub_mcache_new(&cfg, &mc), VV_EINVAL);
}

static void test_seen_cache_drops_duplicates_within_ttl_only(void **state)
{
    (void)state;
    struct vv_pubsub_seen *s;
    vv_pubsub_seen_new(VV_PUBSUB_SEEN_TTL_MS, 1000, &s);
    uint8_t id[VV_PUBSUB_ID_BYTES];
    mkid(7, id);
    assert_int_equal(vv_pubsub_seen_add(s, id, 1000), 0);
    assert_int_equal(vv_pubsub_seen_add(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS - 1), VV_EEXIST);
    assert_true(vv_pubsub_seen_has(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS - 1));
    /* A duplicate does not extend the TTL. */
    assert_false(vv_pubsub_seen_has(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS));
    /* Expired but not swept: new again, once. */
    assert_int_equal(vv_pubsub_seen_add(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS), 0);
    assert_int_equal(vv_pubsub_seen_count(s), 1);
    assert_int_equal(vv_pubsub_seen_add(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS + 1), VV_EEXIST);
    /* Forgetting an ID whose signature failed lets the genuine message in. */
    vv_pubsub_seen_remove(s, id);
    assert_false(vv_pubsub_seen_has(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS + 2));
    assert_int_equal(vv_pubsub_seen_add(s, id, 1000 + VV_PUBSUB_SEEN_TTL_MS + 2), 0);
    vv_pubsub_seen_free(s);
}

static void test_seen_cache_sweep_is_sliced_and_in_time_order(void **state)
{
    (void)state;
    struct vv_pubsub_seen *s;
    vv_pubsub_seen_new(1000, 100000, &s);
    for (uint32_t i = 0; i < 10000; i++) {
        uint8_t id[VV_PUBSUB_ID_BYTES];
        mkid(i, id);
        assert_int_equal(vv_pubsub_seen_add(s, id, i), 0); /* expires at 1000 + i */
    }
    /* At 1000 + 4999, IDs 0..4999 have expired: a slice of 100 takes the 100 oldest. */
    assert_int_equal(vv_pubsub_seen_sweep(s, 5999, 100), 100);
    uint8_t id[VV_PUBSUB_ID_BYTES];
    mkid(99, id);
    assert_false(vv_pubsub_seen_has(s, id, 0));
    mkid(100, id);
    assert_true(vv_pubsub_seen_has(s, id, 0));
    assert_int_equal(vv_pubsub_seen_sweep(s, 5999, UINT32_MAX), 4900);
    assert_int_equal(vv_pubsub_seen_count(s), 5000);
    for (uint32_t i = 5000; i < 10000; i += 37) {
        mkid(i, id);
        assert_int_equal(vv_pubsub_seen_add(s, id, 5999), VV_EEXIST);
    }
    assert_int_equal(vv_pubsub_seen_sweep(s, 5999, UINT32_MAX), 0);
    assert_int_equal(vv_pubsub_seen_sweep(s, 11000, UINT32_MAX), 5000);
    assert_int_equal(vv_pubsub_seen_count(s), 0);
    vv_pubsub_seen_free(s);
}

static void test_seen_cache_full_forgets_oldest_and_counts(void **state)
{
    (void)state;
    struct vv_pubsub_seen *s;
    vv_pubsub_seen_new(VV_PUBSUB_SEEN_TTL_MS, 100, &s);
    for (uint32_t i = 0; i < 150; i++) {
        uint8_t id[VV_PUBSUB_ID_BYTES];
        mkid(i, id);
        assert_int_equal(vv_pubsub_seen_add(s, id, 0), 0);
    }
    assert_int_equal(vv_pubsub_seen_count(s), 100);
    assert_int_equal(vv_pubsub_seen_evicted(s), 50);
    uint8_t id[VV_PUBSUB_ID_BYTES];
    mkid(49, id);
    assert_false(vv_pubsub_seen_has(s, id, 0));
    mkid(50, id);
    assert_true(vv_pubsub_seen_has(s, id, 0));
    vv_pubsub_seen_free(s);
}

/* The seen cache against a plain model (an array in insertion order) over random adds,
 * removals, lookups and sweeps: exercises the index's backward-shift deletion and growth and
 * the list's order under every interleaving the seed produces. */
#define MODEL_IDS 2000u
#define MODEL_MAX 500u
#define MODEL_TTL 1000u

struct model {
    uint32_t id[MODEL_MAX];
    uint64_t exp[MODEL_MAX];
    uint32_t n;
};

static int model_find(const struct model *m, uint32_t id)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->id[i] == id)
            return (int)i;
    return -1;
}

static void model_del(struct model *m, uint32_t i)
{
    memmove(m->id + i, m->id + i + 1, (m->n - i - 1) * sizeof(m->id[0]));
    memmove(m->exp + i, m->exp + i + 1, (m->n - i - 1) * sizeof(m->exp[0]));
    m->n--;
}

static void test_seen_cache_matches_a_model_under_random_operations(void **state)
{
    (void)state;
    static struct model m;
    memset(&m, 0, sizeof(m));
    struct vv_pubsub_seen *s;
    vv_pubsub_seen_new(MODEL_TTL, MODEL_MAX, &s);
    uint64_t x = 88172645463325252ull, now = 0;
    for (uint32_t op = 0; op < 60000; op++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t r = (uint32_t)(x >> 32), id = r % MODEL_IDS, kind = (r >> 16) % 10;
        now += (r >> 24) % 3;
        uint8_t b[VV_PUBSUB_ID_BYTES];
        mkid(id, b);
        int at = model_find(&m, id);
        if (kind < 6) {
            int want = (at >= 0 && m.exp[at] > now) ? VV_EEXIST : 0;
            assert_int_equal(vv_pubsub_seen_add(s, b, now), want);
            if (want == 0) {
                if (at >= 0)
                    model_del(&m, (uint32_t)at);
                if (m.n == MODEL_MAX)
                    model_del(&m, 0);
                m.id[m.n] = id;
                m.exp[m.n++] = now + MODEL_TTL;
            }
        } else if (kind < 7) {
            vv_pubsub_seen_remove(s, b);
            if (at >= 0)
                model_del(&m, (uint32_t)at);
        } else if (kind < 9) {
            assert_int_equal(vv_pubsub_seen_has(s, b, now), at >= 0 && m.exp[at] > now);
        } else {
            uint32_t budget = (r >> 8) % 20, done = 0;
            while (done < budget && m.n > 0 && m.exp[0] <= now) {
                model_del(&m, 0);
                done++;
            }
            assert_int_equal(vv_pubsub_seen_sweep(s, now, budget), done);
        }
        assert_int_equal(vv_pubsub_seen_count(s), m.n);
    }
    vv_pubsub_seen_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mcache_keeps_messages_for_history_length_windows),
        cmocka_unit_test(test_mcache_gossips_last_three_windows_of_the_topic_newest_first),
        cmocka_unit_test(test_mcache_byte_bound_evicts_oldest_and_counts),
        cmocka_unit_test(test_mcache_refuses_bad_config),
        cmocka_unit_test(test_seen_cache_drops_duplicates_within_ttl_only),
        cmocka_unit_test(test_seen_cache_sweep_is_sliced_and_in_time_order),
        cmocka_unit_test(test_seen_cache_full_forgets_oldest_and_counts),
        cmocka_unit_test(test_seen_cache_matches_a_model_under_random_operations),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
