/* The per-source rate limit of the DHT's server (src/dht/ratelimit.c): a burst, then the
 * rate; sources counted by network as the stores count them; a bounded table that a flood
 * of sources cannot use to throttle an honest source. */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "vivim/dht_core.h"

static struct vv_dht_addr parse(const char *s)
{
    struct vv_dht_addr a;
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static const uint8_t KEY[16] = {1, 2, 3};

static void test_burst_then_rate(void **state)
{
    (void)state;
    struct vv_dht_rate *r = vv_dht_rate_new(64, 10, 5, KEY);
    struct vv_dht_addr a = parse("8.8.8.8:4000");
    for (int i = 0; i < 5; i++)
        assert_true(vv_dht_rate_take(r, &a, 1000));
    assert_false(vv_dht_rate_take(r, &a, 1000));
    /* 10 a second: one more every 100 ms, never more than the burst. */
    assert_false(vv_dht_rate_take(r, &a, 1099));
    assert_true(vv_dht_rate_take(r, &a, 1100));
    assert_false(vv_dht_rate_take(r, &a, 1100));
    int ok = 0;
    for (int i = 0; i < 100; i++)
        ok += vv_dht_rate_take(r, &a, 1000000);
    assert_int_equal(ok, 5);
    /* Time going backwards (it does not, but) gives nothing. */
    assert_false(vv_dht_rate_take(r, &a, 999000));
    vv_dht_rate_free(r);
}

static void test_sources_are_networks_except_private_ranges(void **state)
{
    (void)state;
    struct vv_dht_rate *r = vv_dht_rate_new(64, 1, 2, KEY);
    struct vv_dht_addr a1 = parse("8.8.8.8:4000"), a2 = parse("8.8.8.9:5000"),
                       b = parse("8.8.9.8:4000"), l1 = parse("127.0.0.1:4000"),
                       l2 = parse("127.0.0.1:4001");
    assert_true(vv_dht_rate_take(r, &a1, 0));
    assert_true(vv_dht_rate_take(r, &a2, 0)); /* the same /24: its second and last */
    assert_false(vv_dht_rate_take(r, &a1, 0));
    assert_true(vv_dht_rate_take(r, &b, 0)); /* another /24 */
    assert_true(vv_dht_rate_take(r, &l1, 0));
    assert_true(vv_dht_rate_take(r, &l1, 0));
    assert_false(vv_dht_rate_take(r, &l1, 0));
    assert_true(vv_dht_rate_take(r, &l2, 0)); /* loopback: by address and port */
    assert_int_equal(vv_dht_rate_tracked(r), 4);
    /* No limit. */
    vv_dht_rate_set(r, 0, 1);
    for (int i = 0; i < 1000; i++)
        assert_true(vv_dht_rate_take(r, &a1, 0));
    vv_dht_rate_free(r);
}

static void test_a_flood_of_sources_stays_bounded_and_never_throttles_an_honest_one(void **state)
{
    (void)state;
    struct vv_dht_rate *r = vv_dht_rate_new(1024, 10, 10, KEY);
    struct vv_dht_addr honest = parse("1.2.3.4:4000");
    uint64_t now = 0;
    for (uint32_t i = 0; i < 200000; i++) {
        char s[32];
        snprintf(s, sizeof(s), "%u.%u.%u.1:9", 20 + (i >> 16) % 200, (i >> 8) & 255, i & 255);
        struct vv_dht_addr a = parse(s);
        vv_dht_rate_take(r, &a, now);
        if (i % 1000 == 0) {
            /* The honest source asks 10 times a second: always served. */
            assert_true(vv_dht_rate_take(r, &honest, now));
            now += 100;
        }
    }
    assert_true(vv_dht_rate_tracked(r) <= 1024);
    vv_dht_rate_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_sources_are_networks_except_private_ranges),
        cmocka_unit_test(test_a_flood_of_sources_stays_bounded_and_never_throttles_an_honest_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
