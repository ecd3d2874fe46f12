/* Write tokens: bound to the requester's IP, valid for the current and the previous 5-minute
 * epoch and no longer, and unguessable without the master secret. */
#include "vv_test.h"

#include <string.h>

#include "vivim/dht_core.h"

static struct vv_dht_addr parse(const char *s)
{
    struct vv_dht_addr a;
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static void test_token_is_accepted_until_the_second_rotation(void **state)
{
    (void)state;
    uint8_t master[32];
    memset(master, 7, sizeof(master));
    struct vv_dht_tokens t;
    vv_dht_tokens_init(&t, master);
    struct vv_dht_addr a = parse("1.2.3.4:4747");
    const uint64_t R = VV_DHT_TOKEN_ROTATE_MS;
    uint64_t issued = 10 * R + R / 2;
    uint8_t tok[VV_DHT_TOKEN_BYTES];
    vv_dht_token_make(&t, &a, issued, tok);
    assert_int_equal(vv_dht_token_check(&t, &a, issued, tok, sizeof(tok)), 0);
    assert_int_equal(vv_dht_token_check(&t, &a, 11 * R - 1, tok, sizeof(tok)), 0);
    assert_int_equal(vv_dht_token_check(&t, &a, 11 * R, tok, sizeof(tok)), 0); /* previous */
    assert_int_equal(vv_dht_token_check(&t, &a, 12 * R - 1, tok, sizeof(tok)), 0);
    assert_int_equal(vv_dht_token_check(&t, &a, 12 * R, tok, sizeof(tok)), VV_EDHT_TOKEN);
    /* A token from the future (a clock that went back, or a forged epoch) is refused. */
    assert_int_equal(vv_dht_token_check(&t, &a, 9 * R, tok, sizeof(tok)), VV_EDHT_TOKEN);
    /* A new token after a rotation differs from the old. */
    uint8_t tok2[VV_DHT_TOKEN_BYTES];
    vv_dht_token_make(&t, &a, 11 * R, tok2);
    assert_memory_not_equal(tok, tok2, sizeof(tok));
    vv_dht_tokens_clear(&t);
}

static void test_token_is_bound_to_the_ip_and_the_secret(void **state)
{
    (void)state;
    uint8_t master[32], other[32];
    memset(master, 7, sizeof(master));
    memset(other, 8, sizeof(other));
    struct vv_dht_tokens t, u;
    vv_dht_tokens_init(&t, master);
    vv_dht_tokens_init(&u, other);
    struct vv_dht_addr a = parse("1.2.3.4:4747"), same_host = parse("1.2.3.4:9999");
    struct vv_dht_addr neighbour = parse("1.2.3.5:4747"), v6 = parse("[102:304::]:4747");
    uint8_t tok[VV_DHT_TOKEN_BYTES];
    vv_dht_token_make(&t, &a, 1000, tok);
    assert_int_equal(vv_dht_token_check(&t, &same_host, 1000, tok, sizeof(tok)), 0);
    assert_int_equal(vv_dht_token_check(&t, &neighbour, 1000, tok, sizeof(tok)), VV_EDHT_TOKEN);
    assert_int_equal(vv_dht_token_check(&t, &v6, 1000, tok, sizeof(tok)), VV_EDHT_TOKEN);
    assert_int_equal(vv_dht_token_check(&u, &a, 1000, tok, sizeof(tok)), VV_EDHT_TOKEN);
    assert_int_equal(vv_dht_token_check(&t, &a, 1000, tok, sizeof(tok) - 1), VV_EDHT_TOKEN);
    assert_int_equal(vv_dht_token_check(&t, &a, 1000, NULL, 0), VV_EDHT_TOKEN);
    tok[3] ^= 1;
    assert_int_equal(vv_dht_token_check(&t, &a, 1000, tok, sizeof(tok)), VV_EDHT_TOKEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_is_accepted_until_the_second_rotation),
        cmocka_unit_test(test_token_is_bound_to_the_ip_and_the_secret),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
