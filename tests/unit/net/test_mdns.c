/* mDNS messages: our query and announcement round-trip; hostile packets are rejected. */
#include "vv_test.h"

#include <string.h>

#include "vivim/mdns.h"

static void test_query_is_recognised_as_ours(void **state)
{
    (void)state;
    uint8_t buf[VV_MDNS_MAX_PACKET];
    int n = vv_mdns_build_query(buf, sizeof(buf), 0);
    assert_true(n > 12);
    int ours;
    struct vv_mdns_peer peers[VV_MDNS_MAX_PEERS];
    size_t np;
    assert_int_equal(vv_mdns_parse(buf, (size_t)n, &ours, peers, &np), 0);
    assert_int_equal(ours, 1);
    assert_int_equal(np, 0);
    assert_int_equal(vv_mdns_build_query(buf, 20, 0), VV_ELIMIT);
}

static void test_announcement_round_trips_id_and_address(void **state)
{
    (void)state;
    uint8_t id[VV_NODE_ID_BYTES];
    for (int i = 0; i < VV_NODE_ID_BYTES; i++)
        id[i] = (uint8_t)(i * 7 + 1);
    uint8_t buf[VV_MDNS_MAX_PACKET];
    int n = vv_mdns_build_announce(buf, sizeof(buf), id, "192.168.1.20:4747");
    assert_true(n > 0);
    int ours;
    struct vv_mdns_peer peers[VV_MDNS_MAX_PEERS];
    size_t np;
    assert_int_equal(vv_mdns_parse(buf, (size_t)n, &ours, peers, &np), 0);
    assert_int_equal(ours, 0);
    assert_int_equal(np, 1);
    assert_memory_equal(peers[0].id, id, VV_NODE_ID_BYTES);
    assert_string_equal(peers[0].addr, "192.168.1.20:4747");
    assert_int_equal(vv_mdns_build_announce(buf, sizeof(buf), id, ""), VV_EINVAL);
    /* Every truncation of a valid packet is an error or yields nothing, never a crash. */
    for (int cut = 0; cut < n; cut++) {
        int rc = vv_mdns_parse(buf, (size_t)cut, &ours, peers, &np);
        assert_true(rc != 0 || np == 0);
    }
}

static const uint8_t header_response_1an[] = {0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0};

static void test_compression_pointer_loops_and_forward_pointers_are_rejected(void **state)
{
    (void)state;
    int ours;
    struct vv_mdns_peer peers[VV_MDNS_MAX_PEERS];
    size_t np;
    uint8_t self_loop[32] = {0};
    memcpy(self_loop, header_response_1an, 12);
    self_loop[12] = 0xc0; /* pointer to offset 12: itself */
    self_loop[13] = 12;
    assert_int_equal(vv_mdns_parse(self_loop, sizeof(self_loop), &ours, peers, &np),
                     VV_EWIRE_MALFORMED);

    uint8_t forward[32] = {0};
    memcpy(forward, header_response_1an, 12);
    forward[12] = 0xc0;
    forward[13] = 20;
    assert_int_equal(vv_mdns_parse(forward, sizeof(forward), &ours, peers, &np),
                     VV_EWIRE_MALFORMED);

    /* A label, then a pointer forward to a pointer back to the label: a cycle. */
    uint8_t pingpong[40] = {0};
    memcpy(pingpong, header_response_1an, 12);
    pingpong[12] = 1;
    pingpong[13] = 'x';
    pingpong[14] = 0xc0;
    pingpong[15] = 16;
    pingpong[16] = 0xc0;
    pingpong[17] = 12;
    assert_int_equal(vv_mdns_parse(pingpong, sizeof(pingpong), &ours, peers, &np),
                     VV_EWIRE_MALFORMED);
}

static void test_counts_and_txt_contents_are_bounded(void **state)
{
    (void)state;
    int ours;
    struct vv_mdns_peer peers[VV_MDNS_MAX_PEERS];
    size_t np;
    uint8_t many[12] = {0, 0, 0x84, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    assert_int_equal(vv_mdns_parse(many, sizeof(many), &ours, peers, &np), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_mdns_parse(many, 5, &ours, peers, &np), VV_EWIRE_TRUNCATED);

    /* An announcement whose address holds a space is ignored, not trusted. */
    uint8_t id[VV_NODE_ID_BYTES] = {1};
    uint8_t buf[VV_MDNS_MAX_PACKET];
    int n = vv_mdns_build_announce(buf, sizeof(buf), id, "1.2.3.4:5 evil");
    assert_true(n > 0);
    assert_int_equal(vv_mdns_parse(buf, (size_t)n, &ours, peers, &np), 0);
    assert_int_equal(np, 0);

    /* Any single corrupted byte: an error or a parse, never a crash or an overrun. */
    n = vv_mdns_build_announce(buf, sizeof(buf), id, "1.2.3.4:5");
    for (int i = 0; i < n; i++) {
        uint8_t copy[VV_MDNS_MAX_PACKET];
        memcpy(copy, buf, (size_t)n);
        copy[i] ^= 0xff;
        int rc = vv_mdns_parse(copy, (size_t)n, &ours, peers, &np);
        assert_true(rc == 0 || rc == VV_EWIRE_MALFORMED || rc == VV_EWIRE_TRUNCATED);
        assert_true(np <= 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_is_recognised_as_ours),
        cmocka_unit_test(test_announcement_round_trips_id_and_address),
        cmocka_unit_test(test_compression_pointer_loops_and_forward_pointers_are_rejected),
        cmocka_unit_test(test_counts_and_txt_contents_are_bounded),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
