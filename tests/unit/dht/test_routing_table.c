/* The routing table: k-buckets in least-recently-seen order, ping-before-evict with a
 * replacement cache, stale contacts replaced first, diversity limits, closest() against
 * brute force, idle buckets and snapshots. */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "vivim/dht_core.h"

static uint8_t self_id[32];

static struct vv_dht_contact contact_in(unsigned bucket, const char *addr)
{
    struct vv_dht_contact c;
    uint8_t r[32];
    memset(&c, 0, sizeof(c));
    randombytes_buf(r, sizeof(r));
    vv_dht_id_in_bucket(self_id, bucket, r, c.id);
    assert_int_equal(vv_dht_addr_parse(addr, strlen(addr), &c.addr), 0);
    return c;
}

/* A distinct public address per i (its own /24), so diversity never interferes. */
static struct vv_dht_contact public_in(unsigned bucket, unsigned i)
{
    char a[32];
    snprintf(a, sizeof(a), "%u.%u.%u.1:4747", 20 + (i >> 16) % 200, (i >> 8) & 255, i & 255);
    return contact_in(bucket, a);
}

static enum vv_dht_offer offer(struct vv_dht_rt *rt, const struct vv_dht_contact *c, uint64_t now,
                               struct vv_dht_offer_result *res)
{
    struct vv_dht_offer_result tmp;
    if (res == NULL)
        res = &tmp;
    vv_dht_rt_offer(rt, c, now, res);
    return res->outcome;
}

/* Fills bucket 0 with k contacts seen at times 1..k; returns them in c[]. */
static void fill_bucket0(struct vv_dht_rt *rt, struct vv_dht_contact *c)
{
    for (unsigned i = 0; i < VV_DHT_K; i++) {
        c[i] = public_in(0, i);
        assert_int_equal(offer(rt, &c[i], i + 1, NULL), VV_DHT_OFFER_ADDED);
    }
}

static void test_entries_keep_least_recently_seen_order(void **state)
{
    (void)state;
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    struct vv_dht_contact c[VV_DHT_K];
    fill_bucket0(rt, c);
    assert_int_equal(vv_dht_rt_size(rt), VV_DHT_K);
    /* Offering a known contact again moves it to the tail. */
    assert_int_equal(offer(rt, &c[0], 100, NULL), VV_DHT_OFFER_UPDATED);
    struct vv_dht_rt_entry e[VV_DHT_K];
    assert_int_equal(vv_dht_rt_bucket_entries(rt, 0, e, VV_DHT_K), VV_DHT_K);
    assert_memory_equal(e[0].c.id, c[1].id, 32);
    assert_memory_equal(e[VV_DHT_K - 1].c.id, c[0].id, 32);
    assert_int_equal(e[VV_DHT_K - 1].last_seen_ms, 100);
    /* So does an answer, which also updates the RTT. */
    assert_int_equal(vv_dht_rt_seen(rt, c[1].id, 40, 200), 0);
    assert_int_equal(vv_dht_rt_bucket_entries(rt, 0, e, VV_DHT_K), VV_DHT_K);
    assert_memory_equal(e[VV_DHT_K - 1].c.id, c[1].id, 32);
    assert_int_equal(e[VV_DHT_K - 1].rtt_ms, 40);
    /* Our own ID and a known ID at another address are refused. */
    struct vv_dht_contact me = c[2];
    memcpy(me.id, self_id, 32);
    struct vv_dht_offer_result r;
    assert_int_equal(offer(rt, &me, 300, &r), VV_DHT_OFFER_REJECTED);
    assert_int_equal(r.reject, VV_DHT_REJECT_SELF);
    struct vv_dht_contact moved = c[3];
    moved.addr.port++;
    assert_int_equal(offer(rt, &moved, 300, &r), VV_DHT_OFFER_REJECTED);
    assert_int_equal(r.reject, VV_DHT_REJECT_ADDR_CHANGED);
    struct vv_dht_contact bad = public_in(3, 999);
    bad.addr.port = 0;
    assert_int_equal(offer(rt, &bad, 300, &r), VV_DHT_OFFER_REJECTED);
    assert_int_equal(r.reject, VV_DHT_REJECT_BAD_ADDRESS);
    assert_int_equal(vv_dht_rt_seen(rt, bad.id, 0, 1), VV_ENOTFOUND);
    vv_dht_rt_free(rt);
}

static void test_full_bucket_pings_oldest_and_keeps_it_when_it_answers(void **state)
{
    (void)state;
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    struct vv_dht_contact c[VV_DHT_K];
    fill_bucket0(rt, c);
    struct vv_dht_contact n1 = public_in(0, 1000), n2 = public_in(0, 1001);
    struct vv_dht_offer_result r;
    assert_int_equal(offer(rt, &n1, 50, &r), VV_DHT_OFFER_NEEDS_PING);
    assert_memory_equal(r.ping.id, c[0].id, 32);
    assert_true(vv_dht_addr_equal(&r.ping.addr, &c[0].addr));
    /* One ping at a time per bucket: the next candidate only waits. */
    assert_int_equal(offer(rt, &n2, 51, &r), VV_DHT_OFFER_CACHED);
    assert_int_equal(vv_dht_rt_bucket_cached(rt, 0), 2);
    /* The oldest answers: it stays, at the tail; the candidates stay cached, not added. */
    assert_int_equal(vv_dht_rt_ping_result(rt, c[0].id, true, 60, NULL), 0);
    struct vv_dht_rt_entry e[VV_DHT_K];
    vv_dht_rt_bucket_entries(rt, 0, e, VV_DHT_K);
    assert_memory_equal(e[VV_DHT_K - 1].c.id, c[0].id, 32);
    assert_int_equal(vv_dht_rt_find(rt, n1.id, NULL), VV_ENOTFOUND);
    assert_int_equal(vv_dht_rt_bucket_cached(rt, 0), 2);
    /* The next candidate asks for the next oldest to be pinged. */
    struct vv_dht_contact n3 = public_in(0, 1002);
    assert_int_equal(offer(rt, &n3, 70, &r), VV_DHT_OFFER_NEEDS_PING);
    assert_memory_equal(r.ping.id, c[1].id, 32);
    /* A ping nobody reported on stops blocking after VV_DHT_PING_PENDING_MS. */
    struct vv_dht_contact n4 = public_in(0, 1003);
    assert_int_equal(offer(rt, &n4, 71, &r), VV_DHT_OFFER_CACHED);
    assert_int_equal(offer(rt, &n4, 70 + VV_DHT_PING_PENDING_MS, &r), VV_DHT_OFFER_NEEDS_PING);
    vv_dht_rt_free(rt);
}

static void test_silent_oldest_is_evicted_for_the_newest_candidate(void **state)
{
    (void)state;
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    struct vv_dht_contact c[VV_DHT_K];
    fill_bucket0(rt, c);
    struct vv_dht_contact n1 = public_in(0, 1000), n2 = public_in(0, 1001);
    struct vv_dht_offer_result r;
    assert_int_equal(offer(rt, &n1, 50, &r), VV_DHT_OFFER_NEEDS_PING);
    assert_int_equal(offer(rt, &n2, 51, NULL), VV_DHT_OFFER_CACHED);
    struct vv_dht_contact promoted;
    assert_int_equal(vv_dht_rt_ping_result(rt, r.ping.id, false, 60, &promoted), 1);
    assert_memory_equal(promoted.id, n2.id, 32); /* the most recently offered */
    assert_int_equal(vv_dht_rt_find(rt, c[0].id, NULL), VV_ENOTFOUND);
    assert_int_equal(vv_dht_rt_find(rt, n2.id, NULL), 0);
    assert_int_equal(vv_dht_rt_bucket_size(rt, 0), VV_DHT_K);
    assert_int_equal(vv_dht_rt_bucket_cached(rt, 0), 1);
    assert_int_equal(vv_dht_rt_ping_result(rt, c[0].id, false, 60, NULL), VV_ENOTFOUND);
    /* The cache is bounded by k. */
    for (unsigned i = 0; i < 3 * VV_DHT_K; i++) {
        struct vv_dht_contact x = public_in(0, 2000 + i);
        offer(rt, &x, 100 + i, NULL);
    }
    assert_int_equal(vv_dht_rt_bucket_cached(rt, 0), VV_DHT_K);
    vv_dht_rt_free(rt);
}

static void test_three_failures_make_a_contact_stale_and_replaced_first(void **state)
{
    (void)state;
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    struct vv_dht_contact c[VV_DHT_K];
    fill_bucket0(rt, c);
    /* c[5] fails three times with nobody cached: it stays, stale. */
    for (int i = 0; i < VV_DHT_MAX_FAILURES; i++)
        assert_int_equal(vv_dht_rt_failed(rt, c[5].id, 10, NULL), 0);
    struct vv_dht_rt_entry e;
    assert_int_equal(vv_dht_rt_find(rt, c[5].id, &e), 0);
    assert_int_equal(e.failures, VV_DHT_MAX_FAILURES);
    /* It sorts after fresh contacts in closest(). */
    struct vv_dht_contact out[VV_DHT_K];
    assert_int_equal(vv_dht_rt_closest(rt, c[5].id, VV_DHT_K, out), VV_DHT_K);
    assert_memory_equal(out[VV_DHT_K - 1].id, c[5].id, 32);
    /* A newcomer takes its place without a ping. */
    struct vv_dht_contact n1 = public_in(0, 1000);
    struct vv_dht_offer_result r;
    assert_int_equal(offer(rt, &n1, 20, &r), VV_DHT_OFFER_ADDED);
    assert_true(r.evicted_valid);
    assert_memory_equal(r.evicted.id, c[5].id, 32);
    assert_int_equal(vv_dht_rt_find(rt, c[5].id, NULL), VV_ENOTFOUND);
    /* With a candidate cached, the third failure promotes it at once. */
    struct vv_dht_contact n2 = public_in(0, 1001);
    assert_int_equal(offer(rt, &n2, 30, &r), VV_DHT_OFFER_NEEDS_PING);
    struct vv_dht_contact promoted;
    assert_int_equal(vv_dht_rt_failed(rt, c[7].id, 31, NULL), 0);
    assert_int_equal(vv_dht_rt_failed(rt, c[7].id, 32, NULL), 0);
    assert_int_equal(vv_dht_rt_failed(rt, c[7].id, 33, &promoted), 1);
    assert_memory_equal(promoted.id, n2.id, 32);
    assert_int_equal(vv_dht_rt_find(rt, c[7].id, NULL), VV_ENOTFOUND);
    /* An answer resets the count. */
    vv_dht_rt_failed(rt, c[8].id, 40, NULL);
    vv_dht_rt_failed(rt, c[8].id, 41, NULL);
    vv_dht_rt_seen(rt, c[8].id, 0, 42);
    vv_dht_rt_failed(rt, c[8].id, 43, NULL);
    assert_int_equal(vv_dht_rt_find(rt, c[8].id, &e), 0);
    assert_int_equal(e.failures, 1);
    vv_dht_rt_free(rt);
}

static void test_diversity_limits_prefixes_but_not_local_ranges(void **state)
{
    (void)state;
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    struct vv_dht_offer_result r;
    /* Two per /24 in one bucket. */
    struct vv_dht_contact a = contact_in(1, "1.2.3.4:1"), b = contact_in(1, "1.2.3.5:1");
    struct vv_dht_contact c = contact_in(1, "1.2.3.6:1");
    assert_int_equal(offer(rt, &a, 1, NULL), VV_DHT_OFFER_ADDED);
    assert_int_equal(offer(rt, &b, 1, NULL), VV_DHT_OFFER_ADDED);
    assert_int_equal(offer(rt, &c, 1, &r), VV_DHT_OFFER_REJECTED);
    assert_int_equal(r.reject, VV_DHT_REJECT_PREFIX_BUCKET);
    /* Ten per /24 in the table: buckets 2..5 take two each, then 8 more = 10 in all. */
    for (unsigned bk = 2; bk < 6; bk++)
        for (int i = 0; i < 2; i++) {
            struct vv_dht_contact x = contact_in(bk, "1.2.3.9:1");
            x.addr.port = (uint16_t)(100 + bk * 2 + (unsigned)i);
            assert_int_equal(offer(rt, &x, 1, NULL), VV_DHT_OFFER_ADDED);
        }
    struct vv_dht_contact x = contact_in(7, "1.2.3.10:1");
    assert_int_equal(offer(rt, &x, 1, &r), VV_DHT_OFFER_REJECTED);
    assert_int_equal(r.reject, VV_DHT_REJECT_PREFIX_TABLE);
    /* Another /24, and IPv6 by /64. */
    x = contact_in(7, "1.2.4.10:1");
    assert_int_equal(offer(rt, &x, 1, NULL), VV_DHT_OFFER_ADDED);
    struct vv_dht_contact v1 = contact_in(8, "[2001:db8:0:1::1]:1");
    struct vv_dht_contact v2 = contact_in(8, "[2001:db8:0:1:ffff::2]:1");
    struct vv_dht_contact v3 = contact_in(8, "[2001:db8:0:1::3]:1");
    assert_int_equal(offer(rt, &v1, 1, NULL), VV_DHT_OFFER_ADDED);
    assert_int_equal(offer(rt, &v2, 1, NULL), VV_DHT_OFFER_ADDED);
    assert_int_equal(offer(rt, &v3, 1, &r), VV_DHT_OFFER_REJECTED);
    assert_int_equal(r.reject, VV_DHT_REJECT_PREFIX_BUCKET);
    /* Loopback and private addresses are exempt: a local cluster fills a bucket. */
    for (int i = 0; i < VV_DHT_K; i++) {
        struct vv_dht_contact l = contact_in(9, "127.0.0.1:1");
        l.addr.port = (uint16_t)(1000 + i);
        assert_int_equal(offer(rt, &l, 1, NULL), VV_DHT_OFFER_ADDED);
        struct vv_dht_contact p = contact_in(10, "192.168.1.1:1");
        p.addr.port = (uint16_t)(1000 + i);
        assert_int_equal(offer(rt, &p, 1, NULL), VV_DHT_OFFER_ADDED);
    }
    assert_int_equal(vv_dht_rt_bucket_size(rt, 9), VV_DHT_K);
    vv_dht_rt_free(rt);
}

struct ranked {
    struct vv_dht_rt_entry e;
    const uint8_t *target;
};

static const uint8_t *brute_target;

static int brute_cmp(const void *a, const void *b)
{
    const struct vv_dht_rt_entry *x = a, *y = b;
    bool sx = x->failures >= VV_DHT_MAX_FAILURES, sy = y->failures >= VV_DHT_MAX_FAILURES;
    if (sx != sy)
        return sx ? 1 : -1;
    return vv_dht_distance_cmp(brute_target, x->c.id, y->c.id);
}

static void test_closest_matches_brute_force_on_large_tables(void **state)
{
    (void)state;
    static struct vv_dht_rt_entry all[VV_DHT_ID_BITS * VV_DHT_K];
    for (int round = 0; round < 4; round++) {
        randombytes_buf(self_id, sizeof(self_id));
        struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
        /* Thousands of contacts over the first 200 buckets (private addresses: exempt). */
        for (unsigned i = 0; i < 6000; i++) {
            char a[32];
            snprintf(a, sizeof(a), "10.%u.%u.1:4747", (i >> 8) & 255, i & 255);
            struct vv_dht_contact c = contact_in(randombytes_uniform(200), a);
            offer(rt, &c, i, NULL);
        }
        size_t n = 0;
        for (unsigned b = 0; b < VV_DHT_ID_BITS; b++)
            n += vv_dht_rt_bucket_entries(rt, b, all + n, VV_DHT_K);
        assert_int_equal(n, vv_dht_rt_size(rt));
        assert_true(n > 3000);
        /* Some stale entries (buckets without candidates keep them). */
        for (size_t i = 0; i < n; i += 37)
            for (int f = 0; f < VV_DHT_MAX_FAILURES; f++)
                vv_dht_rt_failed(rt, all[i].c.id, 1, NULL);
        n = 0;
        for (unsigned b = 0; b < VV_DHT_ID_BITS; b++)
            n += vv_dht_rt_bucket_entries(rt, b, all + n, VV_DHT_K);
        for (int q = 0; q < 200; q++) {
            uint8_t target[32];
            if (q % 3 == 0)
                randombytes_buf(target, 32);
            else if (q % 3 == 1)
                memcpy(target, all[randombytes_uniform((uint32_t)n)].c.id, 32);
            else
                vv_dht_id_in_bucket(self_id, randombytes_uniform(40), all[q].c.id, target);
            if (q == 0)
                memcpy(target, self_id, 32);
            size_t want_n = q % 2 ? VV_DHT_K : 1 + (size_t)q % 100;
            struct vv_dht_contact got[128];
            size_t m = vv_dht_rt_closest(rt, target, want_n, got);
            assert_int_equal(m, VV_MIN(want_n, n));
            brute_target = target;
            qsort(all, n, sizeof(all[0]), brute_cmp);
            for (size_t i = 0; i < m; i++)
                assert_memory_equal(got[i].id, all[i].c.id, 32);
        }
        vv_dht_rt_free(rt);
    }
}

static void test_idle_buckets_are_listed_until_touched(void **state)
{
    (void)state;
    randombytes_buf(self_id, sizeof(self_id));
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    uint8_t idle[VV_DHT_ID_BITS];
    /* Empty table: bucket 0 only (a self-lookup refreshes the rest). */
    assert_int_equal(vv_dht_rt_idle_buckets(rt, 1000000, 1000, idle), 1);
    struct vv_dht_contact c0 = public_in(0, 1), c3 = public_in(3, 2);
    offer(rt, &c0, 1000000, NULL);
    offer(rt, &c3, 1000000, NULL);
    /* Buckets 0..4 are considered (one past the deepest used); 0 and 3 are fresh. */
    size_t n = vv_dht_rt_idle_buckets(rt, 1000500, 1000, idle);
    assert_int_equal(n, 3);
    assert_int_equal(idle[0], 1);
    assert_int_equal(idle[1], 2);
    assert_int_equal(idle[2], 4);
    vv_dht_rt_touch_bucket(rt, 2, 1000500);
    assert_int_equal(vv_dht_rt_idle_buckets(rt, 1000600, 1000, idle), 2);
    /* A period later everything is idle again. */
    assert_int_equal(vv_dht_rt_idle_buckets(rt, 1002000, 1000, idle), 5);
    vv_dht_rt_free(rt);
}

static void test_snapshot_restores_the_same_contacts(void **state)
{
    (void)state;
    randombytes_buf(self_id, sizeof(self_id));
    struct vv_dht_rt *rt = vv_dht_rt_new(self_id);
    for (unsigned i = 0; i < 300; i++) {
        struct vv_dht_contact c = public_in(randombytes_uniform(30), i);
        if (i % 5 == 0)
            c = contact_in(randombytes_uniform(30), "[2001:db8::1]:4747"),
            c.addr.ip[7] = (uint8_t)i;
        offer(rt, &c, i, NULL);
    }
    uint8_t *buf;
    size_t len;
    vv_dht_rt_snapshot(rt, &buf, &len);
    struct vv_dht_rt *back = vv_dht_rt_new(self_id);
    size_t restored;
    assert_int_equal(vv_dht_rt_restore(back, buf, len, 5, &restored), 0);
    assert_int_equal(restored, vv_dht_rt_size(rt));
    assert_int_equal(vv_dht_rt_size(back), vv_dht_rt_size(rt));
    for (unsigned b = 0; b < 30; b++) {
        struct vv_dht_rt_entry x[VV_DHT_K], y[VV_DHT_K];
        size_t n = vv_dht_rt_bucket_entries(rt, b, x, VV_DHT_K);
        assert_int_equal(vv_dht_rt_bucket_entries(back, b, y, VV_DHT_K), n);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(vv_dht_rt_find(back, x[i].c.id, NULL), 0);
            assert_int_equal(vv_dht_rt_find(rt, y[i].c.id, NULL), 0);
        }
    }
    /* Refused: another node's snapshot, a version, a length or a count that does not fit. */
    struct vv_dht_rt *other;
    uint8_t other_id[32];
    randombytes_buf(other_id, 32);
    other = vv_dht_rt_new(other_id);
    assert_int_equal(vv_dht_rt_restore(other, buf, len, 5, NULL), VV_EDHT_SNAPSHOT);
    assert_int_equal(vv_dht_rt_size(other), 0);
    assert_int_equal(vv_dht_rt_restore(other, buf, 10, 5, NULL), VV_EDHT_SNAPSHOT);
    assert_int_equal(vv_dht_rt_restore(back, buf, len - 1, 5, NULL), VV_EDHT_SNAPSHOT);
    buf[4] = 2;
    assert_int_equal(vv_dht_rt_restore(back, buf, len, 5, NULL), VV_EDHT_SNAPSHOT);
    buf[4] = 1;
    buf[37] ^= 0x80; /* count's top byte */
    assert_int_equal(vv_dht_rt_restore(back, buf, len, 5, NULL), VV_EDHT_SNAPSHOT);
    buf[37] ^= 0x80;
    buf[41 + 32] = 5; /* the first entry's family */
    struct vv_dht_rt *t3 = vv_dht_rt_new(self_id);
    assert_int_equal(vv_dht_rt_restore(t3, buf, len, 5, NULL), VV_EDHT_SNAPSHOT);
    vv_dht_rt_free(t3);
    vv_free(buf);
    vv_dht_rt_free(other);
    vv_dht_rt_free(back);
    vv_dht_rt_free(rt);
}

static int setup(void **state)
{
    randombytes_buf(self_id, sizeof(self_id));
    return vv_test_group_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_keep_least_recently_seen_order),
        cmocka_unit_test(test_full_bucket_pings_oldest_and_keeps_it_when_it_answers),
        cmocka_unit_test(test_silent_oldest_is_evicted_for_the_newest_candidate),
        cmocka_unit_test(test_three_failures_make_a_contact_stale_and_replaced_first),
        cmocka_unit_test(test_diversity_limits_prefixes_but_not_local_ranges),
        cmocka_unit_test(test_closest_matches_brute_force_on_large_tables),
        cmocka_unit_test(test_idle_buckets_are_listed_until_touched),
        cmocka_unit_test(test_snapshot_restores_the_same_contacts),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, setup, NULL);
}
