/*
 * Peer exchange and the connection manager's text checks, on the fake vv_env (fake_env.h)
 * whose clock and timer the test drives by hand: a PEX_RESPONSE counts only as the answer to our
 * own request, entries must be numeric addresses, the address book's share of unverified peers is
 * bounded, dials to them are rate-limited, trimming sends no unsolicited list, and a string from a
 * peer is accepted exactly when the wire codec's text check accepts it.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/connmgr.h"
#include "vivim/wire.h"

enum { HELLO = 0, PEX_REQUEST = 3, PEX_RESPONSE = 4 };

struct rig {
    struct vv_fake_env f;
    struct vv_connmgr *cm;
};

static void rig_start(struct rig *r, const struct vv_connmgr_config *cfg)
{
    vv_fake_env_init(&r->f, 0x9e3779b97f4a7c15ull);
    r->f.now_ms = 100000;
    r->cm = vv_connmgr_new(&r->f.env, cfg);
}

static void rig_free(struct rig *r)
{
    vv_connmgr_free(r->cm);
    vv_fake_env_free(&r->f);
}

static void peer_id(uint8_t id[VV_NODE_ID_BYTES], uint32_t k)
{
    memset(id, 0xa5, VV_NODE_ID_BYTES);
    id[0] = (uint8_t)k;
    id[1] = (uint8_t)(k >> 8);
}

/* The manager's policy tick, run now whatever its due time. */
static void tick(struct rig *r)
{
    assert_true(vv_fake_env_fire_next(&r->f));
}

/* Frames of a type sent to the peer whose ID starts with byte `to`; every frame sent must be
 * a well-formed frame on the connection manager's channel. */
static int sent_count(const struct rig *r, uint8_t to, uint8_t type)
{
    int n = 0;
    for (size_t i = 0; i < vv_fake_env_outbox_len(&r->f); i++) {
        const struct vv_fake_msg *m = vv_fake_env_peek(&r->f, i);
        struct vv_wire_frame fr;
        assert_int_equal(m->channel, VV_CHANNEL_CONN);
        assert_int_equal(vv_wire_decode(m->data, m->len, &fr), 0);
        n += m->peer[0] == to && (uint8_t)(fr.h.type & 0xff) == type;
        vv_wire_frame_free(&fr);
    }
    return n;
}

/* A PEX_RESPONSE from `from` listing n peers, entry i having ID first_id + i and address
 * <prefix><i + 1><suffix>. */
static void deliver_pex(struct rig *r, const uint8_t *from, uint32_t first_id, uint32_t n,
                        const char *prefix, const char *suffix)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, (uint16_t)((VV_CHANNEL_CONN << 8) | PEX_RESPONSE), 0);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t id[VV_NODE_ID_BYTES];
        char addr[VV_CONNMGR_ADDRESS_BYTES];
        peer_id(id, first_id + i);
        snprintf(addr, sizeof(addr), "%s%u%s", prefix, i + 1, suffix);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
        msgpack_pack_bin_body(&pk, id, VV_NODE_ID_BYTES);
        msgpack_pack_str(&pk, strlen(addr));
        msgpack_pack_str_body(&pk, addr, strlen(addr));
    }
    vv_env_deliver(&r->f.env, from, VV_CHANNEL_CONN, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void deliver_hello(struct rig *r, const uint8_t *from, const char *address, size_t alen,
                          const char *region, size_t rlen)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, (uint16_t)((VV_CHANNEL_CONN << 8) | HELLO), 0);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_str(&pk, alen);
    msgpack_pack_str_body(&pk, address, alen);
    msgpack_pack_uint8(&pk, VV_NODE_RELAY);
    msgpack_pack_uint32(&pk, VV_CAP_DHT);
    msgpack_pack_str(&pk, rlen);
    msgpack_pack_str_body(&pk, region, rlen);
    vv_env_deliver(&r->f.env, from, VV_CHANNEL_CONN, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static int disconnects(const struct rig *r, uint32_t k)
{
    uint8_t id[VV_NODE_ID_BYTES];
    peer_id(id, k);
    return (int)vv_fake_env_disconnect_count(&r->f, id);
}

static bool dialled(const struct rig *r, const char *needle)
{
    return vv_fake_env_dialled(&r->f, needle);
}

static void test_unsolicited_pex_response_teaches_nothing_and_dials_nothing(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = 1; /* one connection is enough: the manager asks nobody for peers */
    cfg.high_water = 4;
    struct rig r;
    rig_start(&r, &cfg);
    uint8_t a[VV_NODE_ID_BYTES];
    peer_id(a, 1);
    vv_env_peer_event(&r.f.env, a, true);
    assert_int_equal(sent_count(&r, a[0], PEX_REQUEST), 0);

    /* A steers: sixteen peers, all at addresses of its choosing. */
    deliver_pex(&r, a, 100, VV_CONNMGR_PEX_MAX, "192.0.2.", ":80");
    const struct vv_connmgr_stats *st = vv_connmgr_stats(r.cm);
    assert_int_equal(vv_connmgr_known_count(r.cm), 1);
    assert_int_equal(st->pex_peers_learned, 0);
    assert_int_equal(st->pex_unsolicited, 1);
    assert_true(vv_connmgr_find(r.cm, a)->connected); /* ignored, not punished */

    /* A goes away; the manager wants a peer again and has only A to try. */
    vv_env_peer_event(&r.f.env, a, false);
    for (int s = 0; s < 20; s++) {
        r.f.now_ms += 1000;
        tick(&r);
    }
    assert_false(dialled(&r, "192.0.2."));
    rig_free(&r);
}

static void test_pex_response_counts_once_and_only_before_its_deadline(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.max_dials = 0; /* this test watches the address book, not dials */
    struct rig r;
    rig_start(&r, &cfg);
    uint8_t a[VV_NODE_ID_BYTES];
    peer_id(a, 1);
    vv_env_peer_event(&r.f.env, a, true); /* short of peers: asks A */
    assert_int_equal(sent_count(&r, a[0], PEX_REQUEST), 1);
    const struct vv_connmgr_stats *st = vv_connmgr_stats(r.cm);

    /* Too late: the request is void. */
    r.f.now_ms += VV_CONNMGR_PEX_TIMEOUT_MS + 1;
    deliver_pex(&r, a, 100, 4, "192.0.2.", ":4747");
    assert_int_equal(st->pex_peers_learned, 0);
    assert_int_equal(st->pex_unsolicited, 1);

    /* While a request is outstanding no second one goes to the same peer; a void one is
     * replaced by the next periodic exchange. */
    tick(&r);
    assert_int_equal(sent_count(&r, a[0], PEX_REQUEST), 2);
    r.f.now_ms += cfg.pex_interval_ms / 10; /* the next exchange while short of peers */
    tick(&r);
    assert_int_equal(sent_count(&r, a[0], PEX_REQUEST), 2);

    /* In time: learned. The same answer again is not. */
    deliver_pex(&r, a, 200, 4, "192.0.2.", ":4747");
    assert_int_equal(st->pex_peers_learned, 4);
    deliver_pex(&r, a, 300, 4, "198.51.100.", ":4747");
    assert_int_equal(st->pex_peers_learned, 4);
    assert_int_equal(st->pex_unsolicited, 2);
    assert_int_equal(vv_connmgr_known_count(r.cm), 5);
    rig_free(&r);
}

static void test_pex_host_names_are_refused_and_never_dialled(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    struct rig r;
    rig_start(&r, &cfg);
    uint8_t a[VV_NODE_ID_BYTES];
    peer_id(a, 1);
    vv_env_peer_event(&r.f.env, a, true);
    assert_int_equal(sent_count(&r, a[0], PEX_REQUEST), 1);

    /* Names to resolve, and numeric forms a resolver would accept but that are not plain
     * literals (or are not dialable): all refused, none of them an offence. */
    static const char *const refused[] = {
        "victim.example:4747", "localhost:4747",   "0x7f.0.0.1:4747", "127.1:4747",   "10.0.0.1",
        "10.0.0.1:0",          "10.0.0.1:65536",   "[::1%eth0]:4747", "0.0.0.0:4747", "[::]:4747",
        "10.0.0.1:+80",        "2001:db8::1:4747",
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, (uint16_t)((VV_CHANNEL_CONN << 8) | PEX_RESPONSE), 0);
    msgpack_pack_array(&pk, 1);
    uint32_t n = (uint32_t)VV_ARRAY_SIZE(refused) + 2;
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t id[VV_NODE_ID_BYTES];
        char addr[VV_CONNMGR_ADDRESS_BYTES];
        peer_id(id, 100 + i);
        if (i == n - 2)
            snprintf(addr, sizeof(addr), "203.0.113.7:4747");
        else if (i == n - 1)
            snprintf(addr, sizeof(addr), "[2001:db8::7]:4747");
        else
            snprintf(addr, sizeof(addr), "%s", refused[i]);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
        msgpack_pack_bin_body(&pk, id, VV_NODE_ID_BYTES);
        msgpack_pack_str(&pk, strlen(addr));
        msgpack_pack_str_body(&pk, addr, strlen(addr));
    }
    vv_env_deliver(&r.f.env, a, VV_CHANNEL_CONN, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);

    const struct vv_connmgr_stats *st = vv_connmgr_stats(r.cm);
    assert_int_equal(st->pex_peers_learned, 2);
    assert_int_equal(st->pex_entries_refused, VV_ARRAY_SIZE(refused));
    assert_int_equal(st->bad_messages, 0);
    assert_int_equal(vv_connmgr_known_count(r.cm), 3);
    for (int s = 0; s < 30; s++) {
        r.f.now_ms += 1000;
        tick(&r);
    }
    assert_true(dialled(&r, "203.0.113.7:4747"));
    assert_true(dialled(&r, "[2001:db8::7]:4747"));
    for (int i = 0; i < (int)r.f.n_connects; i++)
        assert_true(strcmp(r.f.connects[i].address, "203.0.113.7:4747") == 0 ||
                    strcmp(r.f.connects[i].address, "[2001:db8::7]:4747") == 0);
    rig_free(&r);
}

static void test_dials_to_pex_learned_addresses_are_rate_limited(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg); /* low water 32, 8 dials in flight */
    struct rig r;
    rig_start(&r, &cfg);
    uint8_t a[VV_NODE_ID_BYTES];
    peer_id(a, 1);
    vv_env_peer_event(&r.f.env, a, true);
    deliver_pex(&r, a, 100, VV_CONNMGR_PEX_MAX, "192.0.2.", ":4747");
    assert_int_equal(vv_connmgr_stats(r.cm)->pex_peers_learned, VV_CONNMGR_PEX_MAX);

    /* Every dial fails at once, so the bound on dials in flight never holds them back: only
     * the rate does. */
    int total = 0;
    for (int s = 0; s < 6; s++) {
        int before = (int)r.f.n_connects;
        tick(&r);
        int now_dialled = (int)r.f.n_connects - before;
        if (s == 0)
            assert_int_equal(now_dialled, VV_CONNMGR_PEX_DIAL_BURST);
        else
            assert_true(now_dialled <= VV_CONNMGR_PEX_DIALS_PER_S);
        total += now_dialled;
        for (int i = before; i < (int)r.f.n_connects; i++)
            vv_connmgr_dial_failed(r.cm, r.f.connects[i].address);
        r.f.now_ms += 1000;
    }
    assert_int_equal(total, VV_CONNMGR_PEX_DIAL_BURST + 5 * VV_CONNMGR_PEX_DIALS_PER_S);

    /* Peers the operator gave are not hearsay: they are dialled whatever the budget. */
    assert_int_equal(vv_connmgr_add_peer(r.cm, NULL, "10.9.9.9:4747", VV_PEER_BOOTSTRAP), 0);
    int before = (int)r.f.n_connects;
    tick(&r);
    assert_true(dialled(&r, "10.9.9.9:4747"));
    assert_true((int)r.f.n_connects - before >= 1);
    rig_free(&r);
}

static void test_pex_fills_at_most_half_the_address_book(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = 2;
    cfg.high_water = 4;
    cfg.max_known_peers = 40;
    cfg.max_dials = 0;
    struct rig r;
    rig_start(&r, &cfg);
    /* Peers that answer our requests with fresh IDs every time. */
    uint32_t next = 100;
    for (uint32_t k = 1; k <= 4; k++) {
        uint8_t p[VV_NODE_ID_BYTES];
        peer_id(p, k);
        vv_env_peer_event(&r.f.env, p, true);
        if (sent_count(&r, p[0], PEX_REQUEST) == 1) {
            deliver_pex(&r, p, next, VV_CONNMGR_PEX_MAX, "192.0.2.", ":4747");
            next += VV_CONNMGR_PEX_MAX;
        }
        for (int s = 0; s < 4; s++) {
            r.f.now_ms += cfg.pex_interval_ms;
            tick(&r);
            if (sent_count(&r, p[0], PEX_REQUEST) > 0) {
                deliver_pex(&r, p, next, VV_CONNMGR_PEX_MAX, "198.51.100.", ":4747");
                next += VV_CONNMGR_PEX_MAX;
            }
        }
    }
    const struct vv_connmgr_stats *st = vv_connmgr_stats(r.cm);
    assert_true(next - 100 > cfg.max_known_peers); /* they offered more than the book holds */
    assert_int_equal(st->pex_peers_learned, cfg.max_known_peers / 2);
    assert_true(st->pex_entries_refused > 0);
    /* The peers we are connected to were never pushed out. */
    for (uint32_t k = 1; k <= 4; k++) {
        uint8_t p[VV_NODE_ID_BYTES];
        peer_id(p, k);
        assert_non_null(vv_connmgr_find(r.cm, p));
    }
    rig_free(&r);
}

static void deliver_pex_request(struct rig *r, const uint8_t *from)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, (uint16_t)((VV_CHANNEL_CONN << 8) | PEX_REQUEST), 0);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint8(&pk, VV_CONNMGR_PEX_MAX);
    vv_env_deliver(&r->f.env, from, VV_CHANNEL_CONN, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_trimming_sends_no_unsolicited_peer_list(void **state)
{
    (void)state;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = 2;
    cfg.high_water = 3;
    struct rig r;
    rig_start(&r, &cfg);
    for (uint32_t k = 1; k <= 6; k++) {
        uint8_t p[VV_NODE_ID_BYTES];
        peer_id(p, k);
        vv_env_peer_event(&r.f.env, p, true);
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%u:4747", k);
        deliver_hello(&r, p, addr, strlen(addr), "", 0);
    }
    /* They connected just now: in their grace period none is trimmed, and each that asks
     * for peers (as a node joining through us does on connecting) gets its answer. */
    tick(&r);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 0);
    for (uint32_t k = 1; k <= 6; k++) {
        uint8_t p[VV_NODE_ID_BYTES];
        peer_id(p, k);
        assert_int_equal(sent_count(&r, (uint8_t)k, PEX_RESPONSE), 0);
        deliver_pex_request(&r, p);
        assert_int_equal(sent_count(&r, (uint8_t)k, PEX_RESPONSE), 1);
    }
    /* Past the grace period four are trimmed, and no peer list goes with them. */
    r.f.report_disconnects = true;
    vv_fake_env_advance(&r.f, VV_CONNMGR_GRACE_MS + 1000); /* every tick due meanwhile */
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 4);
    assert_int_equal(vv_connmgr_connected_count(r.cm), 2);
    int closed = 0;
    for (uint32_t k = 1; k <= 6; k++) {
        closed += disconnects(&r, k);
        assert_int_equal(sent_count(&r, (uint8_t)k, PEX_RESPONSE), 1);
    }
    assert_int_equal(closed, 4);
    rig_free(&r);
}

/* The verdict of the wire codec's text check on s. */
static bool wire_accepts(const char *s, size_t n, size_t max)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)n;
    const char *p;
    size_t pn;
    return vv_wire_get_str(&o, max, &p, &pn) == 0;
}

static void test_peer_text_checked_as_the_wire_codec_checks_it(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n;
    } cases[] = {
        {"eu-west", 7},
        {"z\xc3\xbcrich", 7},            /* ü */
        {"\xe6\x9d\xb1\xe4\xba\xac", 6}, /* 東京 */
        {"\xf0\x9f\x8c\x8d", 4},         /* U+1F30D */
        {"\xff", 1},                     /* never in UTF-8 */
        {"ab\x80", 3},                   /* a lone continuation byte */
        {"\xc0\xaf", 2},                 /* overlong '/' */
        {"\xe0\x80\xaf", 3},             /* overlong '/' */
        {"\xed\xa0\x80", 3},             /* a UTF-16 surrogate */
        {"\xf4\x90\x80\x80", 4},         /* above U+10FFFF */
        {"\xe6\x9d", 2},                 /* cut short */
        {"del\x7f", 4},                  /* DEL */
        {"nel\xc2\x85", 5},              /* U+0085, a C1 control */
        {"tab\t", 4},
        {"nul\0x", 5},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        struct vv_connmgr_config cfg;
        vv_connmgr_config_defaults(&cfg);
        cfg.low_water = 1;
        struct rig r;
        rig_start(&r, &cfg);
        uint8_t a[VV_NODE_ID_BYTES];
        peer_id(a, 1);
        vv_env_peer_event(&r.f.env, a, true);
        bool want = wire_accepts(cases[i].s, cases[i].n, VV_CONNMGR_REGION_BYTES - 1);
        /* As the region of a HELLO. */
        deliver_hello(&r, a, "10.0.0.1:4747", 13, cases[i].s, cases[i].n);
        const struct vv_connmgr_peer *p = vv_connmgr_find(r.cm, a);
        bool got = vv_connmgr_stats(r.cm)->bad_messages == 0;
        if (got != want)
            fail_msg("case %zu: connmgr %s a region the wire codec %s", i,
                     got ? "accepts" : "refuses", want ? "accepts" : "refuses");
        if (got)
            assert_memory_equal(p->region, cases[i].s, cases[i].n + 1);
        else
            assert_string_equal(p->region, "");
        /* As the address of a HELLO. */
        char addr[64];
        memcpy(addr, "10.0.0.2:4747", 13);
        memcpy(addr + 13, cases[i].s, cases[i].n);
        uint64_t bad = vv_connmgr_stats(r.cm)->bad_messages;
        deliver_hello(&r, a, addr, 13 + cases[i].n, "", 0);
        got = vv_connmgr_stats(r.cm)->bad_messages == bad;
        want = wire_accepts(addr, 13 + cases[i].n, VV_CONNMGR_ADDRESS_BYTES - 1);
        if (got != want)
            fail_msg("case %zu: connmgr %s an address the wire codec %s", i,
                     got ? "accepts" : "refuses", want ? "accepts" : "refuses");
        rig_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsolicited_pex_response_teaches_nothing_and_dials_nothing),
        cmocka_unit_test(test_pex_response_counts_once_and_only_before_its_deadline),
        cmocka_unit_test(test_pex_host_names_are_refused_and_never_dialled),
        cmocka_unit_test(test_dials_to_pex_learned_addresses_are_rate_limited),
        cmocka_unit_test(test_pex_fills_at_most_half_the_address_book),
        cmocka_unit_test(test_trimming_sends_no_unsolicited_peer_list),
        cmocka_unit_test(test_peer_text_checked_as_the_wire_codec_checks_it),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
