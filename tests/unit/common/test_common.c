/* The allocator, hex codec and error table. */
#include "vv_test.h"

#include <string.h>

#include "vivim/common.h"
#include "vivim/error.h"

static void test_hex_round_trips_and_rejects_bad_digits(void **state)
{
    (void)state;
    const uint8_t bytes[4] = {0x00, 0x9f, 0xa0, 0xff};
    char hex[9];
    vv_hex_encode(bytes, sizeof(bytes), hex);
    assert_string_equal(hex, "009fa0ff");
    uint8_t back[4];
    assert_int_equal(vv_hex_decode(hex, back, 4), 0);
    assert_memory_equal(back, bytes, 4);
    assert_int_equal(vv_hex_decode("009fa0fg", back, 4), VV_EINVAL);
    assert_int_equal(vv_hex_decode("009fa0", back, 4), VV_EINVAL);     /* too short */
    assert_int_equal(vv_hex_decode("009fa0ff00", back, 4), VV_EINVAL); /* too long */
}

static void test_sha256_text_check(void **state)
{
    (void)state;
    const char *ok = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_true(vv_hex_is_sha256(ok));
    assert_false(
        vv_hex_is_sha256("0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(
        vv_hex_is_sha256("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"));
    assert_false(
        vv_hex_is_sha256("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"));
    assert_false(vv_hex_is_sha256(""));
}

static void test_strerror_covers_project_uv_and_unknown_codes(void **state)
{
    (void)state;
    assert_string_equal(vv_strerror(VV_EINVAL), "invalid argument");
    assert_string_equal(vv_err_name(VV_EWIRE_TRUNCATED), "VV_EWIRE_TRUNCATED");
    assert_string_equal(vv_err_name(-2), "ENOENT");
    assert_string_equal(vv_err_name(-19999), "UNKNOWN");
    assert_string_equal(vv_strerror(0), "success");
}

static void test_strlcpy_truncates_and_terminates(void **state)
{
    (void)state;
    char buf[4];
    assert_int_equal(vv_strlcpy(buf, "abcdef", sizeof(buf)), 6);
    assert_string_equal(buf, "abc");
}

static void test_allocations_are_tracked_by_cmocka(void **state)
{
    (void)state;
    char *s = vv_xasprintf("%s-%d", "node", 7);
    assert_string_equal(s, "node-7");
    s = vv_xrealloc(s, 64);
    assert_string_equal(s, "node-7");
    char *d = vv_xstrndup("abcdef", 3);
    assert_string_equal(d, "abc");
    vv_free(d);
    vv_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_round_trips_and_rejects_bad_digits),
        cmocka_unit_test(test_strerror_covers_project_uv_and_unknown_codes),
        cmocka_unit_test(test_sha256_text_check),
        cmocka_unit_test(test_strlcpy_truncates_and_terminates),
        cmocka_unit_test(test_allocations_are_tracked_by_cmocka),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
