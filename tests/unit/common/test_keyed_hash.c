/* The keyed hash for tables of outside keys: stable within a process, and keys that an
 * unkeyed hash would put in one bucket (here, a shared 8-byte prefix) spread out. */
#include "vv_test.h"

#include <string.h>

#include "vivim/keyed_hash.h"

#define N_KEYS    10000
#define N_BUCKETS 16384

static void test_same_bytes_hash_the_same_within_a_process(void **state)
{
    (void)state;
    const char a[] = "doc-1", b[] = "doc-1", c[] = "doc-2";
    assert_int_equal(vv_keyed_hash64(a, 5), vv_keyed_hash64(b, 5));
    assert_int_not_equal(vv_keyed_hash64(a, 5), vv_keyed_hash64(c, 5));
    assert_int_not_equal(vv_keyed_hash64(a, 4), vv_keyed_hash64(a, 5)); /* length counts */
    (void)vv_keyed_hash64(NULL, 0);
}

static void test_keys_sharing_a_prefix_spread_over_buckets(void **state)
{
    (void)state;
    static uint32_t count[N_BUCKETS];
    memset(count, 0, sizeof(count));
    uint32_t worst = 0;
    for (uint32_t i = 0; i < N_KEYS; i++) {
        uint8_t key[32];
        memset(key, 0x5a, sizeof(key));
        memcpy(key + 28, &i, sizeof(i));
        uint64_t h = vv_keyed_hash64(key, sizeof(key));
        worst = VV_MAX(worst, ++count[h & (N_BUCKETS - 1)]);
    }
    /* Uniformly random: the fullest bucket holds about 7. */
    assert_true(worst <= 24);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes_hash_the_same_within_a_process),
        cmocka_unit_test(test_keys_sharing_a_prefix_spread_over_buckets),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
