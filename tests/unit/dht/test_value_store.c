/* The value store: real Ed25519 signatures over the documented bytes, sequence rules, expiry,
 * quotas per source, bounds, and eviction that a flood from many sources cannot turn against
 * honest records. */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "vivim/dht_store.h"

#define NOW    1700000000000ull
#define MINUTE 60000ull

struct publisher {
    uint8_t pk[32], sk[64];
};

static struct publisher new_publisher(void)
{
    struct publisher p;
    crypto_sign_keypair(p.pk, p.sk);
    return p;
}

static struct vv_dht_value make(const struct publisher *p, const char *key_text, uint64_t seq,
                                uint64_t expires, const void *bytes, size_t len)
{
    struct vv_dht_value v;
    memset(&v, 0, sizeof(v));
    crypto_hash_sha256(v.key, (const uint8_t *)key_text, strlen(key_text));
    v.seq = seq;
    v.expires_ms = expires;
    v.value = bytes;
    v.len = len;
    vv_dht_value_sign(&v, p->sk);
    return v;
}

static struct vv_dht_addr addr(const char *s)
{
    struct vv_dht_addr a;
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &a), 0);
    return a;
}

/* The full path the daemon will take: check, verify (here inline), put. */
static int store(struct vv_dht_values *s, const struct vv_dht_value *v, const char *src)
{
    int rc = vv_dht_values_check(s, v, NOW);
    if (rc != 0)
        return rc;
    if ((rc = vv_dht_value_verify(v)) != 0)
        return rc;
    struct vv_dht_addr a = addr(src);
    return vv_dht_values_put(s, v, &a, NOW);
}

static void test_signature_covers_domain_key_seq_expiry_and_value(void **state)
{
    (void)state;
    struct publisher p = new_publisher();
    struct vv_dht_value v = make(&p, "k", 0x0102030405060708ull, 0x1112131415161718ull, "hi", 2);
    assert_memory_equal(v.pk, p.pk, 32);
    /* The message is exactly the documented bytes. */
    uint8_t want[18 + 32 + 16 + 2];
    memcpy(want, "vivim-dht-value-v1", 18);
    memcpy(want + 18, v.key, 32);
    const uint8_t nums[16] = {1,    2,    3,    4,    5,    6,    7,    8,
                              0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18};
    memcpy(want + 50, nums, 16);
    memcpy(want + 66, "hi", 2);
    assert_int_equal(vv_dht_value_signed_len(&v), sizeof(want));
    uint8_t got[sizeof(want)];
    vv_dht_value_signed_bytes(&v, got);
    assert_memory_equal(got, want, sizeof(want));
    assert_int_equal(crypto_sign_verify_detached(v.sig, want, sizeof(want), p.pk), 0);
    assert_int_equal(vv_dht_value_verify(&v), 0);
    /* Any change breaks it: each signed field, and the key pair. */
    struct vv_dht_value t = v;
    t.seq++;
    assert_int_equal(vv_dht_value_verify(&t), VV_EDHT_SIGNATURE);
    t = v;
    t.expires_ms++;
    assert_int_equal(vv_dht_value_verify(&t), VV_EDHT_SIGNATURE);
    t = v;
    t.key[0] ^= 1;
    assert_int_equal(vv_dht_value_verify(&t), VV_EDHT_SIGNATURE);
    t = v;
    t.value = (const uint8_t *)"ho";
    assert_int_equal(vv_dht_value_verify(&t), VV_EDHT_SIGNATURE);
    struct publisher q = new_publisher();
    t = v;
    memcpy(t.pk, q.pk, 32);
    assert_int_equal(vv_dht_value_verify(&t), VV_EDHT_SIGNATURE);
    /* A forged value passes the cheap check (the signature is the caller's to verify) and is
     * refused by verification. */
    struct vv_dht_values *s = vv_dht_values_new(NULL);
    struct vv_dht_value forged = make(&p, "k", 1, NOW + MINUTE, "x", 1);
    forged.sig[10] ^= 4;
    assert_int_equal(vv_dht_values_check(s, &forged, NOW), 0);
    assert_int_equal(store(s, &forged, "1.2.3.4:1"), VV_EDHT_SIGNATURE);
    assert_int_equal(vv_dht_values_count(s), 0);
    vv_dht_values_free(s);
}

static void test_one_value_per_publisher_and_only_higher_seq_replaces(void **state)
{
    (void)state;
    struct vv_dht_values *s = vv_dht_values_new(NULL);
    struct publisher a = new_publisher(), b = new_publisher();
    struct vv_dht_value a5 = make(&a, "topic", 5, NOW + MINUTE, "five", 4);
    assert_int_equal(store(s, &a5, "1.2.3.4:1"), 0);
    struct vv_dht_value a4 = make(&a, "topic", 4, NOW + MINUTE, "four", 4);
    struct vv_dht_value a5b = make(&a, "topic", 5, NOW + MINUTE, "FIVE", 4);
    assert_int_equal(store(s, &a4, "1.2.3.4:1"), VV_EDHT_STALE_SEQ);
    assert_int_equal(store(s, &a5b, "1.2.3.4:1"), VV_EDHT_STALE_SEQ);
    struct vv_dht_value b1 = make(&b, "topic", 1, NOW + MINUTE, "bee", 3);
    assert_int_equal(store(s, &b1, "5.6.7.8:1"), 0);
    struct vv_dht_value a6 = make(&a, "topic", 6, NOW + 2 * MINUTE, "six", 3);
    assert_int_equal(store(s, &a6, "9.9.9.9:1"), 0);
    assert_int_equal(vv_dht_values_count(s), 2);
    struct vv_dht_value out[4];
    assert_int_equal(vv_dht_values_get(s, a6.key, NOW, out, 4), 2);
    assert_memory_equal(out[0].pk, a.pk, 32); /* newest first */
    assert_int_equal(out[0].seq, 6);
    assert_int_equal(out[0].len, 3);
    assert_memory_equal(out[0].value, "six", 3);
    assert_int_equal(vv_dht_value_verify(&out[0]), 0); /* served as signed */
    assert_memory_equal(out[1].pk, b.pk, 32);
    /* The replaced value's bytes moved from its old source to the new one. */
    struct vv_dht_addr first = addr("1.2.3.4:1"), third = addr("9.9.9.9:1");
    uint32_t n;
    uint64_t bytes;
    vv_dht_values_source_usage(s, &first, &n, &bytes);
    assert_int_equal(n, 0);
    vv_dht_values_source_usage(s, &third, &n, &bytes);
    assert_int_equal(n, 1);
    assert_int_equal(bytes, 3 + VV_DHT_VALUE_OVERHEAD_BYTES);
    uint8_t other[32] = {0};
    assert_int_equal(vv_dht_values_get(s, other, NOW, out, 4), 0);
    vv_dht_values_free(s);
}

static void test_expiry_limits_and_sliced_sweep(void **state)
{
    (void)state;
    struct vv_dht_values_config cfg;
    vv_dht_values_config_defaults(&cfg);
    struct vv_dht_values *s = vv_dht_values_new(&cfg);
    struct publisher p = new_publisher();
    struct vv_dht_value v = make(&p, "k", 1, NOW, "x", 1);
    assert_int_equal(store(s, &v, "1.2.3.4:1"), VV_EDHT_EXPIRY);
    v = make(&p, "k", 1, NOW + cfg.max_ttl_ms + 1, "x", 1);
    assert_int_equal(store(s, &v, "1.2.3.4:1"), VV_EDHT_EXPIRY);
    static uint8_t big[VV_DHT_VALUE_MAX_BYTES + 1];
    v = make(&p, "k", 1, NOW + MINUTE, big, sizeof(big));
    assert_int_equal(vv_dht_values_check(s, &v, NOW), VV_EDHT_TOO_LARGE);
    v = make(&p, "k", 1, NOW + MINUTE, big, VV_DHT_VALUE_MAX_BYTES);
    assert_int_equal(store(s, &v, "1.2.3.4:1"), 0);
    for (int i = 0; i < 100; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        struct vv_dht_value w = make(&p, key, 1, NOW + (i < 60 ? MINUTE : 3 * MINUTE), "y", 1);
        assert_int_equal(store(s, &w, "10.0.0.1:1"), 0);
    }
    assert_int_equal(vv_dht_values_count(s), 101);
    /* Expired values are not served, and a stale seq of an expired value no longer blocks. */
    struct vv_dht_value out[2];
    assert_int_equal(vv_dht_values_get(s, v.key, NOW + MINUTE, out, 2), 0);
    struct vv_dht_value again = make(&p, "k", 1, NOW + 3 * MINUTE, "z", 1);
    assert_int_equal(vv_dht_values_check(s, &again, NOW + MINUTE), 0);
    /* The sweep does at most N per call. */
    size_t dropped = 0;
    for (int call = 0; call < 11; call++) {
        size_t d = vv_dht_values_expire(s, NOW + MINUTE, 10);
        assert_true(d <= 10);
        dropped += d;
    }
    assert_int_equal(dropped, 61);
    assert_int_equal(vv_dht_values_count(s), 40);
    vv_dht_values_free(s);
}

static void test_source_quota_counts_a_whole_prefix(void **state)
{
    (void)state;
    struct vv_dht_values_config cfg;
    vv_dht_values_config_defaults(&cfg);
    cfg.source_max_count = 5;
    cfg.source_max_bytes = 3 * (1000 + VV_DHT_VALUE_OVERHEAD_BYTES);
    struct vv_dht_values *s = vv_dht_values_new(&cfg);
    struct publisher p = new_publisher();
    static uint8_t kb[1000];
    char key[16], src[32];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "c%d", i);
        snprintf(src, sizeof(src), "1.2.3.%d:1", i + 1); /* one /24 */
        struct vv_dht_value v = make(&p, key, 1, NOW + MINUTE, "x", 1);
        assert_int_equal(store(s, &v, src), 0);
    }
    struct vv_dht_value v = make(&p, "c9", 1, NOW + MINUTE, "x", 1);
    assert_int_equal(store(s, &v, "1.2.3.77:1"), VV_EDHT_QUOTA);
    assert_int_equal(store(s, &v, "1.2.4.77:1"), 0); /* another /24 */
    /* Bytes count too. */
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        struct vv_dht_value w = make(&p, key, 1, NOW + MINUTE, kb, sizeof(kb));
        assert_int_equal(store(s, &w, "5.5.5.5:1"), 0);
    }
    struct vv_dht_value w = make(&p, "b3", 1, NOW + MINUTE, kb, sizeof(kb));
    assert_int_equal(store(s, &w, "5.5.5.6:1"), VV_EDHT_QUOTA);
    /* Replacing one's own value within the quota is fine. */
    w = make(&p, "b0", 2, NOW + MINUTE, kb, sizeof(kb));
    assert_int_equal(store(s, &w, "5.5.5.5:1"), 0);
    /* Loopback sources count per address and port. */
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "l%d", i);
        snprintf(src, sizeof(src), "127.0.0.1:%d", 1000 + i);
        struct vv_dht_value l = make(&p, key, 1, NOW + MINUTE, "x", 1);
        assert_int_equal(store(s, &l, src), 0);
    }
    vv_dht_values_free(s);
}

static void test_flood_from_many_sources_cannot_evict_honest_values(void **state)
{
    (void)state;
    struct vv_dht_values_config cfg;
    vv_dht_values_config_defaults(&cfg);
    /* Max-min fairness protects a source holding no more than an equal share of the store:
     * 500 slots over 120 sources is 4 each, and the honest ones hold 3. */
    cfg.max_count = 500;
    cfg.source_max_count = 20;
    struct vv_dht_values *s = vv_dht_values_new(&cfg);
    struct publisher honest = new_publisher(), attacker = new_publisher();
    char key[32], src[32];
    /* 20 honest sources store 3 values each. */
    for (int h = 0; h < 20; h++)
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof(key), "honest-%d-%d", h, i);
            snprintf(src, sizeof(src), "20.0.%d.1:1", h);
            struct vv_dht_value v = make(&honest, key, 1, NOW + MINUTE, "h", 1);
            assert_int_equal(store(s, &v, src), 0);
        }
    /* 100 attacker /24s each try to store 20 (their quota). */
    int refused = 0;
    for (int a = 0; a < 100; a++)
        for (int i = 0; i < 20; i++) {
            snprintf(key, sizeof(key), "flood-%d-%d", a, i);
            snprintf(src, sizeof(src), "66.%d.%d.1:1", a / 256, a % 256);
            struct vv_dht_value v = make(&attacker, key, 1, NOW + MINUTE, "a", 1);
            int rc = store(s, &v, src);
            assert_true(rc == 0 || rc == VV_EDHT_FULL);
            refused += rc == VV_EDHT_FULL;
        }
    assert_true(refused > 0);
    assert_int_equal(vv_dht_values_count(s), cfg.max_count);
    /* Every honest value survived. */
    for (int h = 0; h < 20; h++)
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof(key), "honest-%d-%d", h, i);
            uint8_t k[32];
            crypto_hash_sha256(k, (const uint8_t *)key, strlen(key));
            struct vv_dht_value out[1];
            assert_int_equal(vv_dht_values_get(s, k, NOW, out, 1), 1);
        }
    /* The flood was cut down to the fair share: no attacker source holds more than 5. */
    for (int a = 0; a < 100; a++) {
        snprintf(src, sizeof(src), "66.%d.%d.1:1", a / 256, a % 256);
        struct vv_dht_addr sa = addr(src);
        uint32_t n;
        uint64_t b;
        vv_dht_values_source_usage(s, &sa, &n, &b);
        assert_true(n <= 5);
    }
    /* A new honest source still gets in, at the largest attacker's expense. */
    struct vv_dht_value v = make(&honest, "late", 1, NOW + MINUTE, "h", 1);
    assert_int_equal(store(s, &v, "30.0.0.1:1"), 0);
    assert_int_equal(vv_dht_values_count(s), cfg.max_count);
    vv_dht_values_free(s);
}

static void test_publishers_per_key_are_bounded_fairly(void **state)
{
    (void)state;
    struct vv_dht_values_config cfg;
    vv_dht_values_config_defaults(&cfg);
    cfg.max_per_key = 4;
    struct vv_dht_values *s = vv_dht_values_new(&cfg);
    struct publisher p[8];
    for (int i = 0; i < 8; i++)
        p[i] = new_publisher();
    /* One source puts 4 publishers' values under the key, and a second value elsewhere. */
    for (int i = 0; i < 4; i++) {
        struct vv_dht_value v = make(&p[i], "shared", 1, NOW + MINUTE, "a", 1);
        assert_int_equal(store(s, &v, "66.0.0.1:1"), 0);
    }
    /* It cannot add a fifth to the full key (it would evict itself)... */
    struct vv_dht_value v = make(&p[4], "shared", 1, NOW + MINUTE, "a", 1);
    assert_int_equal(store(s, &v, "66.0.0.1:1"), VV_EDHT_FULL);
    /* ...but another source can, taking the place of the big source's. */
    v = make(&p[5], "shared", 1, NOW + MINUTE, "b", 1);
    assert_int_equal(store(s, &v, "20.0.0.1:1"), 0);
    struct vv_dht_value out[8];
    assert_int_equal(vv_dht_values_get(s, v.key, NOW, out, 8), 4);
    assert_memory_equal(out[0].pk, p[5].pk, 32);
    vv_dht_values_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_covers_domain_key_seq_expiry_and_value),
        cmocka_unit_test(test_one_value_per_publisher_and_only_higher_seq_replaces),
        cmocka_unit_test(test_expiry_limits_and_sliced_sweep),
        cmocka_unit_test(test_source_quota_counts_a_whole_prefix),
        cmocka_unit_test(test_flood_from_many_sources_cannot_evict_honest_values),
        cmocka_unit_test(test_publishers_per_key_are_bounded_fairly),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
