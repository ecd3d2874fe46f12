/* Both stores under long random sequences of stores, refreshes, reads, sweeps and evictions
 * with small bounds: after every step each list, index, count and bound agrees with the
 * others (vv__dht_*_check), reads obey the rules, and everything drains to nothing. Seeded;
 * a failing seed is printed and VIVIM_SEED=<seed> replays it. */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "vivim/dht_store.h"

#define NOW    1700000000000ull
#define MINUTE 60000ull
#define STEPS  20000

static uint64_t rng;

static uint32_t next(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static uint64_t seed_of(void)
{
    const char *s = getenv("VIVIM_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : 0x5eed5eedull;
    printf("seed %llu (replay with VIVIM_SEED)\n", (unsigned long long)seed);
    return seed ? seed : 1;
}

static struct vv_dht_addr source(uint32_t i)
{
    struct vv_dht_addr a;
    memset(&a, 0, sizeof(a));
    a.family = VV_DHT_INET4;
    if (i % 5 == 4) { /* some loopback sources, counted per port */
        a.ip[0] = 127;
        a.ip[3] = 1;
    } else {
        a.ip[0] = 20;
        a.ip[1] = (uint8_t)(i % 7); /* several hosts share a /24 */
        a.ip[3] = (uint8_t)(1 + i);
    }
    a.port = (uint16_t)(1000 + i);
    return a;
}

static void test_value_store_stays_consistent(void **state)
{
    (void)state;
    rng = seed_of();
    struct vv_dht_values_config cfg;
    vv_dht_values_config_defaults(&cfg);
    cfg.max_bytes = 150000;
    cfg.max_count = 100;
    cfg.source_max_bytes = 12000;
    cfg.source_max_count = 10;
    cfg.max_per_key = 4;
    cfg.max_ttl_ms = 10 * MINUTE;
    struct vv_dht_values *s = vv_dht_values_new(&cfg);
    static uint8_t bytes[3000];
    uint64_t now = NOW;
    int outcome[4] = {0}; /* stored, stale, quota, full */
    for (int step = 0; step < STEPS; step++) {
        now += next(2000);
        uint32_t op = next(10);
        uint8_t key[32] = {0};
        key[0] = (uint8_t)next(30);
        if (op < 7) {
            struct vv_dht_value v;
            memset(&v, 0, sizeof(v));
            memcpy(v.key, key, 32);
            v.pk[0] = (uint8_t)next(20);
            v.seq = 1 + next(6);
            v.expires_ms = now + 1 + next(12 * MINUTE);
            v.value = bytes;
            v.len = next(sizeof(bytes));
            struct vv_dht_addr src = source(next(12));
            int rc = vv_dht_values_put(s, &v, &src, now);
            outcome[0] += rc == 0;
            outcome[1] += rc == VV_EDHT_STALE_SEQ;
            outcome[2] += rc == VV_EDHT_QUOTA;
            outcome[3] += rc == VV_EDHT_FULL;
            if (rc == 0) {
                struct vv_dht_value out[8];
                size_t n = vv_dht_values_get(s, key, now, out, 8);
                bool found = false;
                for (size_t i = 0; i < n; i++)
                    found |= out[i].pk[0] == v.pk[0] && out[i].seq == v.seq;
                if (!found)
                    fail_msg("seed: stored value not served at step %d", step);
            } else if (rc != VV_EDHT_EXPIRY && rc != VV_EDHT_STALE_SEQ && rc != VV_EDHT_QUOTA &&
                       rc != VV_EDHT_FULL) {
                fail_msg("unexpected %d at step %d", rc, step);
            }
        } else if (op < 9) {
            vv_dht_values_expire(s, now, next(20));
        } else {
            struct vv_dht_value out[8];
            size_t n = vv_dht_values_get(s, key, now, out, 8);
            assert_true(n <= cfg.max_per_key);
            for (size_t i = 0; i < n; i++)
                assert_true(out[i].expires_ms > now);
        }
        if (vv__dht_values_check(s) != 0)
            fail_msg("inconsistent after step %d", step);
    }
    printf("values: %d stored, %d stale, %d over quota, %d full\n", outcome[0], outcome[1],
           outcome[2], outcome[3]);
    for (int i = 0; i < 4; i++)
        assert_true(outcome[i] > 0); /* every rule was exercised */
    now += 20 * MINUTE;
    while (vv_dht_values_count(s) > 0)
        vv_dht_values_expire(s, now, 7);
    assert_int_equal(vv_dht_values_bytes(s), 0);
    assert_int_equal(vv__dht_values_check(s), 0);
    vv_dht_values_free(s);
}

static void test_provider_store_stays_consistent(void **state)
{
    (void)state;
    rng = seed_of() * 3;
    struct vv_dht_providers_config cfg;
    vv_dht_providers_config_defaults(&cfg);
    cfg.max_records = 200;
    cfg.max_keys = 60;
    cfg.max_idents = 40;
    cfg.source_max_records = 50;
    cfg.source_max_idents = 5;
    cfg.max_ttl_ms = 10 * MINUTE;
    struct vv_dht_providers *s = vv_dht_providers_new(&cfg);
    uint64_t now = NOW;
    int outcome[3] = {0}; /* stored, quota, full */
    for (int step = 0; step < STEPS; step++) {
        now += next(2000);
        uint32_t op = next(10);
        char cid[16];
        snprintf(cid, sizeof(cid), "c%u", next(80));
        uint8_t key[32];
        crypto_hash_sha256(key, (const uint8_t *)cid, strlen(cid));
        if (op < 7) {
            struct vv_dht_content_record r;
            memset(&r, 0, sizeof(r));
            r.content_id = cid;
            r.content_id_len = strlen(cid);
            r.content_type = op % 2 ? "a/b" : "";
            r.content_type_len = strlen(r.content_type);
            r.expires_ms = now + 1 + next(12 * MINUTE);
            struct vv_dht_contact p;
            memset(&p, 0, sizeof(p));
            uint32_t who = next(60);
            p.id[0] = (uint8_t)who;
            p.addr = source(who % 15);
            int rc = vv_dht_providers_add(s, key, &r, &p, now);
            outcome[0] += rc == 0;
            outcome[1] += rc == VV_EDHT_QUOTA;
            outcome[2] += rc == VV_EDHT_FULL;
            if (rc == 0) {
                struct vv_dht_provider out[VV_DHT_MAX_PROVIDERS];
                int n = vv_dht_providers_get(s, key, now, NULL, out, VV_DHT_MAX_PROVIDERS);
                if (n < 1 || memcmp(out[0].c.id, p.id, 32) != 0)
                    fail_msg("the newest provider is not listed first at step %d", step);
            } else if (rc != VV_EDHT_QUOTA && rc != VV_EDHT_FULL) {
                fail_msg("unexpected %d at step %d", rc, step);
            }
        } else if (op < 9) {
            vv_dht_providers_expire(s, now, next(30));
        } else {
            struct vv_dht_provider out[VV_DHT_MAX_PROVIDERS];
            int n = vv_dht_providers_get(s, key, now, NULL, out, VV_DHT_MAX_PROVIDERS);
            for (int i = 0; i < n; i++) {
                assert_true(out[i].expires_ms > now);
                for (int j = 0; j < i; j++)
                    assert_false(memcmp(out[i].c.id, out[j].c.id, 32) == 0 &&
                                 vv_dht_addr_equal(&out[i].c.addr, &out[j].c.addr));
            }
        }
        if (vv__dht_providers_check(s) != 0)
            fail_msg("inconsistent after step %d", step);
    }
    printf("providers: %d stored, %d over quota, %d full\n", outcome[0], outcome[1], outcome[2]);
    for (int i = 0; i < 3; i++)
        assert_true(outcome[i] > 0);
    now += 20 * MINUTE;
    while (vv_dht_providers_count(s) > 0)
        vv_dht_providers_expire(s, now, 7);
    assert_int_equal(vv_dht_providers_keys(s), 0);
    assert_int_equal(vv_dht_providers_idents(s), 0);
    assert_int_equal(vv__dht_providers_check(s), 0);
    vv_dht_providers_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_store_stays_consistent),
        cmocka_unit_test(test_provider_store_stays_consistent),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
