/* The DHT keyspace: node IDs are SHA-256 of the public key, distances are XOR, the bucket of a
 * contact is the length of the prefix it shares with us. */
#include "vv_test.h"

#include <string.h>

#include <sodium.h>

#include "vivim/dht_core.h"

static void test_node_id_is_sha256_of_the_public_key(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], id[32], want[32];
    crypto_sign_keypair(pk, sk);
    vv_dht_id_from_pk(pk, id);
    crypto_hash_sha256(want, pk, sizeof(pk));
    assert_memory_equal(id, want, 32);
}

static void test_distance_is_xor_and_orders_by_closeness(void **state)
{
    (void)state;
    uint8_t t[32] = {0}, a[32] = {0}, b[32] = {0}, d[32];
    a[31] = 1;   /* distance 1 */
    b[0] = 0x80; /* distance 2^255 */
    vv_dht_distance(a, b, d);
    assert_int_equal(d[0], 0x80);
    assert_int_equal(d[31], 1);
    assert_true(vv_dht_distance_cmp(t, a, b) < 0);
    assert_true(vv_dht_distance_cmp(t, b, a) > 0);
    assert_int_equal(vv_dht_distance_cmp(t, a, a), 0);
    /* Against brute force on random triples: compare the XORs as big-endian numbers. */
    for (int i = 0; i < 2000; i++) {
        randombytes_buf(t, 32);
        randombytes_buf(a, 32);
        memcpy(b, a, 32);
        b[i % 32] ^= (uint8_t)(1 + i % 255); /* often share a long prefix */
        uint8_t da[32], db[32];
        vv_dht_distance(a, t, da);
        vv_dht_distance(b, t, db);
        int want = memcmp(da, db, 32);
        int got = vv_dht_distance_cmp(t, a, b);
        assert_true((want < 0 && got < 0) || (want > 0 && got > 0) || (want == 0 && got == 0));
    }
}

static void test_common_prefix_counts_leading_equal_bits(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 0x55, 32);
    memcpy(b, a, 32);
    assert_int_equal(vv_dht_common_prefix(a, b), 256);
    for (unsigned bit = 0; bit < 256; bit++) {
        memcpy(b, a, 32);
        b[bit / 8] ^= (uint8_t)(0x80u >> (bit % 8));
        if (bit + 1 < 256)
            b[31] ^= 1; /* a later difference must not matter */
        assert_int_equal(vv_dht_common_prefix(a, b), bit);
    }
}

static void test_id_in_bucket_lands_in_that_bucket(void **state)
{
    (void)state;
    uint8_t self[32], r[32], id[32];
    randombytes_buf(self, 32);
    for (unsigned b = 0; b < 256; b++) {
        randombytes_buf(r, 32);
        vv_dht_id_in_bucket(self, b, r, id);
        assert_int_equal(vv_dht_common_prefix(self, id), b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_id_is_sha256_of_the_public_key),
        cmocka_unit_test(test_distance_is_xor_and_orders_by_closeness),
        cmocka_unit_test(test_common_prefix_counts_leading_equal_bits),
        cmocka_unit_test(test_id_in_bucket_lands_in_that_bucket),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
