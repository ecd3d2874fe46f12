/* The verified-contact cache: pairs are found again, refreshed, aged out, evicted oldest first
 * when full, and chosen IDs do not collide in its index. */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "vivim/dht_core.h"

static struct vv_dht_addr addr_of(unsigned i)
{
    char s[32];
    struct vv_dht_addr a;
    snprintf(s, sizeof(s), "10.%u.%u.%u:4747", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static void id_of(unsigned i, uint8_t id[32])
{
    memset(id, 0xab, 32); /* all share 28 bytes, as a grinding attacker's might */
    memcpy(id + 28, &i, sizeof(i));
}

static void test_pairs_are_found_only_with_their_address_and_age(void **state)
{
    (void)state;
    struct vv_dht_verified *v = vv_dht_verified_new(8, 1000);
    uint8_t id[32];
    id_of(1, id);
    struct vv_dht_addr a = addr_of(1), b = addr_of(2);
    assert_false(vv_dht_verified_has(v, id, &a, 0));
    vv_dht_verified_add(v, id, &a, 100);
    assert_true(vv_dht_verified_has(v, id, &a, 100));
    assert_true(vv_dht_verified_has(v, id, &a, 1099));
    assert_false(vv_dht_verified_has(v, id, &a, 1100)); /* aged out */
    assert_false(vv_dht_verified_has(v, id, &b, 100));  /* same ID, another address */
    vv_dht_verified_add(v, id, &a, 1500);               /* re-verified */
    assert_true(vv_dht_verified_has(v, id, &a, 2000));
    assert_int_equal(vv_dht_verified_count(v), 1);
    vv_dht_verified_free(v);
}

static void test_full_cache_drops_the_pair_verified_longest_ago(void **state)
{
    (void)state;
    struct vv_dht_verified *v = vv_dht_verified_new(100, UINT64_MAX);
    uint8_t id[32];
    for (unsigned i = 0; i < 100; i++) {
        struct vv_dht_addr a = addr_of(i);
        id_of(i, id);
        vv_dht_verified_add(v, id, &a, i);
    }
    /* Pair 0 is refreshed, so pair 1 is now the oldest. */
    struct vv_dht_addr a0 = addr_of(0);
    id_of(0, id);
    vv_dht_verified_add(v, id, &a0, 200);
    for (unsigned i = 100; i < 150; i++) {
        struct vv_dht_addr a = addr_of(i);
        id_of(i, id);
        vv_dht_verified_add(v, id, &a, 300 + i);
    }
    assert_int_equal(vv_dht_verified_count(v), 100);
    id_of(0, id);
    assert_true(vv_dht_verified_has(v, id, &a0, 1000));
    for (unsigned i = 1; i < 150; i++) {
        struct vv_dht_addr a = addr_of(i);
        id_of(i, id);
        assert_int_equal(vv_dht_verified_has(v, id, &a, 1000), i > 50);
    }
    vv_dht_verified_free(v);
}

static void test_chosen_ids_do_not_form_long_probe_runs(void **state)
{
    (void)state;
    struct vv_dht_verified *v = vv_dht_verified_new(20000, UINT64_MAX);
    uint8_t id[32];
    struct vv_dht_addr a = addr_of(7);
    for (unsigned i = 0; i < 30000; i++) { /* churns through evictions too */
        id_of(i, id);
        vv_dht_verified_add(v, id, &a, i);
    }
    assert_int_equal(vv_dht_verified_count(v), 20000);
    assert_true(vv__dht_verified_longest_probe(v) <= 100);
    for (unsigned i = 0; i < 30000; i += 101) {
        id_of(i, id);
        assert_int_equal(vv_dht_verified_has(v, id, &a, 40000), i >= 10000);
    }
    vv_dht_verified_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pairs_are_found_only_with_their_address_and_age),
        cmocka_unit_test(test_full_cache_drops_the_pair_verified_longest_ago),
        cmocka_unit_test(test_chosen_ids_do_not_form_long_probe_runs),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
