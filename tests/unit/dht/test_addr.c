/* DHT addresses: numeric only, one canonical form (mapped IPv4 folded), classified, and cut to
 * the /24 or /64 prefix the diversity limits count by. */
#include "vv_test.h"

#include <string.h>

#include "vivim/dht_core.h"

static struct vv_dht_addr parse_ok(const char *s)
{
    struct vv_dht_addr a;
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &a), 0);
    return a;
}

static void test_numeric_addresses_parse_and_format_back(void **state)
{
    (void)state;
    const char *ok[] = {"1.2.3.4:4747", "255.255.255.255:65535", "[2001:db8::1]:1", "[::1]:4747",
                        "127.0.0.1:80"};
    for (size_t i = 0; i < VV_ARRAY_SIZE(ok); i++) {
        struct vv_dht_addr a = parse_ok(ok[i]);
        char buf[VV_DHT_ADDR_STR_BYTES];
        assert_int_equal(vv_dht_addr_format(&a, buf, sizeof(buf)), 0);
        assert_string_equal(buf, ok[i]);
        uint8_t c[VV_DHT_ADDR_COMPACT_MAX];
        size_t n = vv_dht_addr_to_compact(&a, c);
        assert_int_equal(n, a.family == VV_DHT_INET4 ? 6 : 18);
        struct vv_dht_addr b;
        assert_int_equal(vv_dht_addr_from_compact(c, n, &b), 0);
        assert_true(vv_dht_addr_equal(&a, &b));
    }
    struct vv_dht_addr a = parse_ok("1.2.3.4:4747");
    assert_int_equal(a.family, VV_DHT_INET4);
    assert_int_equal(a.port, 4747);
    assert_int_equal(a.ip[3], 4);
}

static void test_names_zones_bad_ports_and_unspecified_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {"example.com:4747",
                         "1.2.3:4747",
                         "1.2.3.4",
                         "1.2.3.4:",
                         "1.2.3.4:0",
                         "1.2.3.4:65536",
                         "1.2.3.4:04747",
                         "1.2.3.4:+1",
                         "0.0.0.0:4747",
                         "[::]:4747",
                         "[fe80::1%eth0]:4747",
                         "::1:4747",
                         "[::1]4747",
                         "[::1]:",
                         "1.2.3.4:47 ",
                         " 1.2.3.4:47",
                         "[1.2.3.4]:47",
                         ""};
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++) {
        struct vv_dht_addr a;
        assert_int_equal(vv_dht_addr_parse(bad[i], strlen(bad[i]), &a), VV_EDHT_ADDRESS);
    }
    /* A NUL inside the length is not the end of the text. */
    struct vv_dht_addr a;
    assert_int_equal(vv_dht_addr_parse("1.2.3.4:47\0"
                                       "1",
                                       12, &a),
                     VV_EDHT_ADDRESS);
    uint8_t zero_port[6] = {1, 2, 3, 4, 0, 0};
    assert_int_equal(vv_dht_addr_from_compact(zero_port, 6, &a), VV_EDHT_ADDRESS);
    assert_int_equal(vv_dht_addr_from_compact(zero_port, 5, &a), VV_EDHT_ADDRESS);
}

static void test_mapped_ipv4_is_the_same_host_as_ipv4(void **state)
{
    (void)state;
    struct vv_dht_addr m = parse_ok("[::ffff:1.2.3.4]:4747");
    struct vv_dht_addr v4 = parse_ok("1.2.3.4:4747");
    assert_true(vv_dht_addr_equal(&m, &v4));
}

static void test_classes_cover_the_local_ranges(void **state)
{
    (void)state;
    struct {
        const char *s;
        enum vv_dht_addr_class c;
    } cases[] = {
        {"127.0.0.1:1", VV_DHT_ADDR_LOOPBACK},   {"127.255.0.9:1", VV_DHT_ADDR_LOOPBACK},
        {"10.1.2.3:1", VV_DHT_ADDR_PRIVATE},     {"172.16.0.1:1", VV_DHT_ADDR_PRIVATE},
        {"172.31.255.1:1", VV_DHT_ADDR_PRIVATE}, {"172.32.0.1:1", VV_DHT_ADDR_PUBLIC},
        {"172.15.0.1:1", VV_DHT_ADDR_PUBLIC},    {"192.168.1.1:1", VV_DHT_ADDR_PRIVATE},
        {"192.169.1.1:1", VV_DHT_ADDR_PUBLIC},   {"169.254.3.4:1", VV_DHT_ADDR_LINK_LOCAL},
        {"8.8.8.8:1", VV_DHT_ADDR_PUBLIC},       {"[::1]:1", VV_DHT_ADDR_LOOPBACK},
        {"[fc00::1]:1", VV_DHT_ADDR_PRIVATE},    {"[fdff::1]:1", VV_DHT_ADDR_PRIVATE},
        {"[fe80::1]:1", VV_DHT_ADDR_LINK_LOCAL}, {"[febf::1]:1", VV_DHT_ADDR_LINK_LOCAL},
        {"[fec0::1]:1", VV_DHT_ADDR_PUBLIC},     {"[2001:db8::1]:1", VV_DHT_ADDR_PUBLIC},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        struct vv_dht_addr a = parse_ok(cases[i].s);
        assert_int_equal(vv_dht_addr_classify(&a), cases[i].c);
        assert_int_equal(vv_dht_addr_diversity_exempt(&a),
                         cases[i].c == VV_DHT_ADDR_LOOPBACK || cases[i].c == VV_DHT_ADDR_PRIVATE);
    }
}

static void test_prefix_is_slash24_and_slash64(void **state)
{
    (void)state;
    uint8_t p1[VV_DHT_PREFIX_BYTES], p2[VV_DHT_PREFIX_BYTES];
    struct vv_dht_addr a = parse_ok("1.2.3.4:1"), b = parse_ok("1.2.3.200:9");
    struct vv_dht_addr c = parse_ok("1.2.4.4:1");
    vv_dht_addr_prefix(&a, p1);
    vv_dht_addr_prefix(&b, p2);
    assert_memory_equal(p1, p2, sizeof(p1));
    vv_dht_addr_prefix(&c, p2);
    assert_memory_not_equal(p1, p2, sizeof(p1));
    a = parse_ok("[2001:db8:1:2:ffff::1]:1");
    b = parse_ok("[2001:db8:1:2::7]:2");
    c = parse_ok("[2001:db8:1:3::1]:1");
    vv_dht_addr_prefix(&a, p1);
    vv_dht_addr_prefix(&b, p2);
    assert_memory_equal(p1, p2, sizeof(p1));
    vv_dht_addr_prefix(&c, p2);
    assert_memory_not_equal(p1, p2, sizeof(p1));
    /* IPv4 and an IPv6 with the same leading bytes are different prefixes. */
    a = parse_ok("1.2.3.4:1");
    b = parse_ok("[102:300::]:1");
    vv_dht_addr_prefix(&a, p1);
    vv_dht_addr_prefix(&b, p2);
    assert_memory_not_equal(p1, p2, sizeof(p1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numeric_addresses_parse_and_format_back),
        cmocka_unit_test(test_names_zones_bad_ports_and_unspecified_are_refused),
        cmocka_unit_test(test_mapped_ipv4_is_the_same_host_as_ipv4),
        cmocka_unit_test(test_classes_cover_the_local_ranges),
        cmocka_unit_test(test_prefix_is_slash24_and_slash64),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
