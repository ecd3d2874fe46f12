/* The DHT messages of channel 1: every request and answer round-trips, malformed bodies are
 * refused, answers are cut to their budget (anti-amplification, datagram size), and the
 * PONG signature covers the documented bytes. */
#include "vv_test.h"

#include <string.h>

#include <sodium.h>

#include "vivim/dht_msg.h"

#define NOW 1700000000000ull

static uint8_t buf[VV_WIRE_MAX_FRAME_BYTES > 70000 ? 70000 : VV_WIRE_MAX_FRAME_BYTES];

static struct vv_dht_contact contact(uint8_t tag, bool v6)
{
    struct vv_dht_contact c;
    memset(&c, 0, sizeof(c));
    memset(c.id, tag, 32);
    const char *s = v6 ? "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65000" : "203.0.113.9:4747";
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &c.addr), 0);
    c.addr.ip[v6 ? 15 : 3] = tag;
    return c;
}

/* Decodes a frame that must be a request, into rq (pointing into f). */
static void decode_request(const uint8_t *p, size_t n, uint16_t type, uint64_t id,
                           struct vv_wire_frame *f, struct vv_dht_request *rq)
{
    assert_int_equal(vv_wire_decode(p, n, f), 0);
    assert_int_equal(f->h.type, type);
    assert_int_equal(f->h.request_id, id);
    assert_int_equal(vv_dht_request_decode(f->h.type, &f->body, rq), 0);
}

static void test_requests_round_trip(void **state)
{
    (void)state;
    const uint16_t simple[] = {VV_DHT_MSG_PING, VV_DHT_MSG_FIND_NODE, VV_DHT_MSG_GET_VALUE,
                               VV_DHT_MSG_GET_PROVIDERS};
    for (size_t i = 0; i < VV_ARRAY_SIZE(simple); i++)
        for (size_t pad = 0; pad <= 300; pad += 300) {
            struct vv_dht_request rq, got;
            memset(&rq, 0, sizeof(rq));
            rq.type = simple[i];
            memset(rq.target, (int)(0x10 + i), 32);
            rq.pad_len = pad;
            size_t n;
            assert_int_equal(vv_dht_request_encode(&rq, 77, buf, sizeof(buf), &n), 0);
            struct vv_wire_frame f;
            decode_request(buf, n, rq.type, 77, &f, &got);
            assert_memory_equal(got.target, rq.target, 32);
            assert_int_equal(got.pad_len, pad);
            vv_wire_frame_free(&f);
        }
    /* PUT_VALUE with a signed value. */
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    struct vv_dht_request rq, got;
    memset(&rq, 0, sizeof(rq));
    rq.type = VV_DHT_MSG_PUT_VALUE;
    memset(rq.target, 0x42, 32);
    memcpy(rq.value.key, rq.target, 32);
    rq.value.seq = UINT64_MAX;
    rq.value.expires_ms = NOW;
    static uint8_t val[VV_DHT_VALUE_MAX_BYTES];
    memset(val, 0x5a, sizeof(val));
    rq.value.value = val;
    rq.value.len = sizeof(val);
    vv_dht_value_sign(&rq.value, sk);
    memset(rq.token, 0x33, sizeof(rq.token));
    size_t n;
    assert_int_equal(vv_dht_request_encode(&rq, 1, buf, sizeof(buf), &n), 0);
    struct vv_wire_frame f;
    decode_request(buf, n, VV_DHT_MSG_PUT_VALUE, 1, &f, &got);
    assert_memory_equal(got.value.key, rq.target, 32);
    assert_int_equal(got.value.seq, UINT64_MAX);
    assert_int_equal(got.value.expires_ms, NOW);
    assert_int_equal(got.value.len, sizeof(val));
    assert_memory_equal(got.value.value, val, sizeof(val));
    assert_memory_equal(got.value.pk, pk, 32);
    assert_memory_equal(got.token, rq.token, 16);
    assert_int_equal(vv_dht_value_verify(&got.value), 0);
    vv_wire_frame_free(&f);
    /* A too-small buffer is reported, not overrun. */
    assert_int_equal(vv_dht_request_encode(&rq, 1, buf, 100, &n), VV_ELIMIT);
    rq.value.len = VV_DHT_VALUE_MAX_BYTES + 1;
    assert_int_equal(vv_dht_request_encode(&rq, 1, buf, sizeof(buf), &n), VV_EINVAL);
    assert_int_equal(vv_dht_request_encode(&rq, 0, buf, sizeof(buf), &n), VV_EINVAL);
    /* ADD_PROVIDER. */
    memset(&rq, 0, sizeof(rq));
    rq.type = VV_DHT_MSG_ADD_PROVIDER;
    rq.record.content_id = "blob-1";
    rq.record.content_id_len = 6;
    rq.record.content_type = "text/plain";
    rq.record.content_type_len = 10;
    memset(rq.record.address, 0xab, 32);
    rq.record.size = 1ull << 40;
    rq.record.created_ms = NOW - 5;
    rq.record.expires_ms = NOW + 5;
    rq.record.replication_factor = 255;
    crypto_hash_sha256(rq.target, (const uint8_t *)"blob-1", 6);
    memset(rq.token, 0x44, sizeof(rq.token));
    {
        uint8_t ppk[32], psk[64], m[VV_DHT_PROVIDER_SIGNED_BYTES];
        crypto_sign_keypair(ppk, psk);
        vv_dht_provider_sign(rq.target, rq.record.expires_ms, psk, rq.provider_pk, rq.provider_sig);
        assert_memory_equal(rq.provider_pk, ppk, 32);
        vv_dht_provider_signed_bytes(rq.target, rq.record.expires_ms, m);
        assert_memory_equal(m, "vivim-dht-provider-v1", 21);
        assert_int_equal(m[sizeof(m) - 1], (NOW + 5) & 0xff);
        assert_int_equal(crypto_sign_verify_detached(rq.provider_sig, m, sizeof(m), ppk), 0);
    }
    rq.pad_len = 1;
    assert_int_equal(vv_dht_request_encode(&rq, 9, buf, sizeof(buf), &n), 0);
    decode_request(buf, n, VV_DHT_MSG_ADD_PROVIDER, 9, &f, &got);
    assert_memory_equal(got.provider_pk, rq.provider_pk, 32);
    assert_memory_equal(got.provider_sig, rq.provider_sig, 64);
    assert_int_equal(got.record.content_id_len, 6);
    assert_memory_equal(got.record.content_id, "blob-1", 6);
    assert_memory_equal(got.record.content_type, "text/plain", 10);
    assert_memory_equal(got.record.address, rq.record.address, 32);
    assert_int_equal(got.record.size, 1ull << 40);
    assert_int_equal(got.record.created_ms, NOW - 5);
    assert_int_equal(got.record.expires_ms, NOW + 5);
    assert_int_equal(got.record.replication_factor, 255);
    assert_memory_equal(got.token, rq.token, 16);
    assert_int_equal(got.pad_len, 1);
    assert_int_equal(vv_dht_content_record_check(&got.record, got.target), 0);
    vv_wire_frame_free(&f);
}

static void test_ping_frame_is_the_documented_bytes(void **state)
{
    (void)state;
    struct vv_dht_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.type = VV_DHT_MSG_PING;
    memset(rq.target, 0x11, 32);
    size_t n;
    assert_int_equal(vv_dht_request_encode(&rq, 7, buf, sizeof(buf), &n), 0);
    /* array of 5, major 1, minor 0, type 0x0100, request 7, body [bin 32 of 0x11] */
    uint8_t want[42] = {0x95, 0x01, 0x00, 0xcd, 0x01, 0x00, 0x07, 0x91, 0xc4, 0x20};
    memset(want + 10, 0x11, 32);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_answers_round_trip(void **state)
{
    (void)state;
    struct vv_dht_reply r, got;
    size_t n;
    struct vv_wire_frame f;
    /* PONG. */
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_PING;
    memset(r.pk, 1, 32);
    memset(r.sig, 2, 64);
    r.observed = contact(9, true).addr;
    assert_int_equal(vv_dht_reply_encode(&r, 5, 1164, buf, sizeof(buf), &n, NULL), 0);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(f.h.type, VV_DHT_MSG_REPLY);
    assert_int_equal(f.h.request_id, 5);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_PING, &f.body, &got), 0);
    assert_memory_equal(got.pk, r.pk, 32);
    assert_memory_equal(got.sig, r.sig, 64);
    assert_true(vv_dht_addr_equal(&got.observed, &r.observed));
    vv_wire_frame_free(&f);
    /* NODES. */
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_FIND_NODE;
    for (int i = 0; i < VV_DHT_MAX_NODES; i++)
        r.nodes[i] = contact((uint8_t)(i + 1), i % 2);
    r.n_nodes = VV_DHT_MAX_NODES;
    assert_int_equal(vv_dht_reply_encode(&r, 5, 1164, buf, sizeof(buf), &n, NULL), 0);
    assert_true(n <= 1164);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_FIND_NODE, &f.body, &got), 0);
    assert_int_equal(got.n_nodes, VV_DHT_MAX_NODES); /* twenty, half IPv6, fit a datagram */
    for (int i = 0; i < VV_DHT_MAX_NODES; i++) {
        assert_memory_equal(got.nodes[i].id, r.nodes[i].id, 32);
        assert_true(vv_dht_addr_equal(&got.nodes[i].addr, &r.nodes[i].addr));
    }
    vv_wire_frame_free(&f);
    /* VALUES. */
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_GET_VALUE;
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    for (int i = 0; i < 2; i++) {
        memset(r.values[i].key, 0x42, 32);
        r.values[i].seq = (uint64_t)i + 1;
        r.values[i].expires_ms = NOW;
        r.values[i].value = (const uint8_t *)"hello";
        r.values[i].len = 5;
        vv_dht_value_sign(&r.values[i], sk);
    }
    r.n_values = 2;
    r.nodes[0] = contact(3, false);
    r.n_nodes = 1;
    memset(r.token, 7, 16);
    assert_int_equal(vv_dht_reply_encode(&r, 5, 1164, buf, sizeof(buf), &n, NULL), 0);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_GET_VALUE, &f.body, &got), 0);
    assert_int_equal(got.n_values, 2);
    assert_int_equal(got.omitted, 0);
    assert_int_equal(got.n_nodes, 1);
    assert_memory_equal(got.token, r.token, 16);
    memcpy(got.values[1].key, r.values[1].key, 32); /* the key is the request's */
    assert_int_equal(got.values[1].seq, 2);
    assert_int_equal(vv_dht_value_verify(&got.values[1]), 0);
    vv_wire_frame_free(&f);
    /* PROVIDERS. */
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_GET_PROVIDERS;
    r.has_record = true;
    r.record.content_id = "c";
    r.record.content_id_len = 1;
    r.record.expires_ms = NOW;
    for (int i = 0; i < 3; i++) {
        r.providers[i].c = contact((uint8_t)(50 + i), i == 1);
        r.providers[i].expires_ms = NOW + (uint64_t)i;
    }
    r.n_providers = 3;
    r.nodes[0] = contact(3, false);
    r.n_nodes = 1;
    memset(r.token, 8, 16);
    assert_int_equal(vv_dht_reply_encode(&r, 5, 1164, buf, sizeof(buf), &n, NULL), 0);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_GET_PROVIDERS, &f.body, &got), 0);
    assert_true(got.has_record);
    assert_int_equal(got.record.content_id_len, 1);
    assert_int_equal(got.n_providers, 3);
    assert_memory_equal(got.providers[1].c.id, r.providers[1].c.id, 32);
    assert_true(vv_dht_addr_equal(&got.providers[1].c.addr, &r.providers[1].c.addr));
    assert_int_equal(got.providers[2].expires_ms, NOW + 2);
    assert_int_equal(got.n_nodes, 1);
    vv_wire_frame_free(&f);
    /* No record: providers empty, record nil. */
    r.has_record = false;
    r.n_providers = 0;
    assert_int_equal(vv_dht_reply_encode(&r, 5, 1164, buf, sizeof(buf), &n, NULL), 0);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_GET_PROVIDERS, &f.body, &got), 0);
    assert_false(got.has_record);
    vv_wire_frame_free(&f);
    /* OK for PUT_VALUE and ADD_PROVIDER. */
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_ADD_PROVIDER;
    assert_int_equal(vv_dht_reply_encode(&r, 5, 1164, buf, sizeof(buf), &n, NULL), 0);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_ADD_PROVIDER, &f.body, &got), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_PUT_VALUE, &f.body, &got), 0);
    vv_wire_frame_free(&f);
}

static void test_answers_are_cut_to_the_budget(void **state)
{
    (void)state;
    assert_int_equal(vv_dht_reply_budget(100, false), 200);
    assert_int_equal(vv_dht_reply_budget(100, true), VV_DHT_DATAGRAM_MAX_BYTES);
    assert_int_equal(vv_dht_reply_budget(1000, false), VV_DHT_DATAGRAM_MAX_BYTES);
    /* An unpadded FIND_NODE (42 bytes) from an unverified address gets 84 bytes: one IPv4
     * contact at most. */
    struct vv_dht_request rq;
    memset(&rq, 0, sizeof(rq));
    rq.type = VV_DHT_MSG_FIND_NODE;
    size_t req_len, n;
    assert_int_equal(vv_dht_request_encode(&rq, 300, buf, sizeof(buf), &req_len), 0);
    size_t budget = vv_dht_reply_budget(req_len, false);
    struct vv_dht_reply r, sent, got;
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_FIND_NODE;
    for (int i = 0; i < VV_DHT_MAX_NODES; i++)
        r.nodes[i] = contact((uint8_t)(i + 1), true);
    r.n_nodes = VV_DHT_MAX_NODES;
    assert_int_equal(vv_dht_reply_encode(&r, 300, budget, buf, sizeof(buf), &n, &sent), 0);
    assert_true(n <= budget);
    assert_true(sent.n_nodes >= 1 && sent.n_nodes < VV_DHT_MAX_NODES);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_FIND_NODE, &f.body, &got), 0);
    assert_int_equal(got.n_nodes, sent.n_nodes);
    assert_memory_equal(got.nodes[0].id, r.nodes[0].id, 32); /* the nearest kept */
    vv_wire_frame_free(&f);
    /* Padded to 600 bytes, the same client gets all twenty. */
    rq.pad_len = 600;
    assert_int_equal(vv_dht_request_encode(&rq, 300, buf, sizeof(buf), &req_len), 0);
    budget = vv_dht_reply_budget(req_len, false);
    assert_int_equal(vv_dht_reply_encode(&r, 300, budget, buf, sizeof(buf), &n, &sent), 0);
    assert_int_equal(sent.n_nodes, VV_DHT_MAX_NODES);
    /* A value too large for a datagram is left out and counted; the nodes still go. */
    memset(&r, 0, sizeof(r));
    r.type = VV_DHT_MSG_GET_VALUE;
    static uint8_t big[2000];
    r.values[0].value = (const uint8_t *)"small";
    r.values[0].len = 5;
    r.values[1].value = big;
    r.values[1].len = sizeof(big);
    r.n_values = 2;
    for (int i = 0; i < 8; i++)
        r.nodes[i] = contact((uint8_t)(i + 1), false);
    r.n_nodes = 8;
    assert_int_equal(vv_dht_reply_encode(&r, 300, 1164, buf, sizeof(buf), &n, &sent), 0);
    assert_int_equal(vv_wire_decode(buf, n, &f), 0);
    assert_int_equal(vv_dht_reply_decode(VV_DHT_MSG_GET_VALUE, &f.body, &got), 0);
    assert_int_equal(got.n_values, 1);
    assert_int_equal(got.omitted, 1);
    assert_int_equal(got.n_nodes, 8);
    vv_wire_frame_free(&f);
    /* An unpadded PING is too small for its PONG to an unverified address; padded to
     * VV_DHT_PING_MIN_BYTES it is answered, even with the largest request id. */
    memset(&rq, 0, sizeof(rq));
    rq.type = VV_DHT_MSG_PING;
    assert_int_equal(vv_dht_request_encode(&rq, UINT64_MAX, buf, sizeof(buf), &req_len), 0);
    struct vv_dht_reply pong;
    memset(&pong, 0, sizeof(pong));
    pong.type = VV_DHT_MSG_PING;
    pong.observed = contact(1, true).addr;
    assert_int_equal(vv_dht_reply_encode(&pong, UINT64_MAX, vv_dht_reply_budget(req_len, false),
                                         buf, sizeof(buf), &n, NULL),
                     VV_EDHT_NO_ROOM);
    rq.pad_len = VV_DHT_PING_MIN_BYTES - req_len - 2;
    assert_int_equal(vv_dht_request_encode(&rq, UINT64_MAX, buf, sizeof(buf), &req_len), 0);
    assert_int_equal(req_len, VV_DHT_PING_MIN_BYTES);
    assert_int_equal(vv_dht_reply_encode(&pong, UINT64_MAX, vv_dht_reply_budget(req_len, false),
                                         buf, sizeof(buf), &n, NULL),
                     0);
    assert_int_equal(n, VV_DHT_PONG_MAX_BYTES);
    /* Nothing fits in 10 bytes. */
    assert_int_equal(vv_dht_reply_encode(&r, 300, 10, buf, sizeof(buf), &n, NULL), VV_EDHT_NO_ROOM);
}

/* ---- malformed bodies ----------------------------------------------------------------- */

typedef void (*body_fn)(msgpack_packer *pk);

/* Returns the decoder's verdict on a body packed by fn, as a request of type or an answer to
 * one (answer = true). */
static int verdict(uint16_t type, bool answer, body_fn fn)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, answer ? VV_DHT_MSG_REPLY : type, 1);
    fn(&pk);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode((const uint8_t *)sb.data, sb.size, &f), 0);
    int rc;
    if (answer) {
        struct vv_dht_reply r;
        rc = vv_dht_reply_decode(type, &f.body, &r);
    } else {
        struct vv_dht_request r;
        rc = vv_dht_request_decode(type, &f.body, &r);
    }
    vv_wire_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void bin(msgpack_packer *pk, size_t n)
{
    static const uint8_t z[VV_DHT_VALUE_MAX_BYTES + 1];
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, z, n);
}

static void str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void b_ok_ping(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    bin(pk, 32);
}
static void b_short_id(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    bin(pk, 31);
}
static void b_str_id(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    str(pk, "0123456789012345678901234567890a");
}
static void b_empty(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 0);
}
static void b_not_array(msgpack_packer *pk)
{
    bin(pk, 32);
}
static void b_empty_pad(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    bin(pk, 32);
    bin(pk, 0);
}
static void b_big_pad(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    bin(pk, 32);
    bin(pk, VV_DHT_PAD_MAX_BYTES + 1);
}
static void b_three(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    bin(pk, 32);
    bin(pk, 1);
    bin(pk, 1);
}
static void put_fields(msgpack_packer *pk, size_t value_len, int neg_seq, size_t token_len)
{
    msgpack_pack_array(pk, 7);
    bin(pk, 32);
    if (neg_seq)
        msgpack_pack_int64(pk, -1);
    else
        msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, 2);
    bin(pk, value_len);
    bin(pk, 64);
    bin(pk, 32);
    bin(pk, token_len);
}
static void b_put_ok(msgpack_packer *pk)
{
    put_fields(pk, 10, 0, 16);
}
static void b_put_big(msgpack_packer *pk)
{
    put_fields(pk, VV_DHT_VALUE_MAX_BYTES + 1, 0, 16);
}
static void b_put_neg(msgpack_packer *pk)
{
    put_fields(pk, 10, 1, 16);
}
static void b_put_token(msgpack_packer *pk)
{
    put_fields(pk, 10, 0, 15);
}
static void record_fields(msgpack_packer *pk, const char *cid, const char *type, uint64_t repl)
{
    msgpack_pack_array(pk, 5);
    bin(pk, 32);
    msgpack_pack_array(pk, 7);
    str(pk, cid);
    str(pk, type);
    bin(pk, 32);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_uint64(pk, 3);
    msgpack_pack_uint64(pk, repl);
    bin(pk, 16);
    bin(pk, 32); /* pk */
    bin(pk, 64); /* sig */
}
/* The body of ADD_PROVIDER before this version: without pk and sig. */
static void b_add_without_sig(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    bin(pk, 32);
    msgpack_pack_array(pk, 7);
    str(pk, "c");
    str(pk, "t");
    bin(pk, 32);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, 2);
    msgpack_pack_uint64(pk, 3);
    msgpack_pack_uint64(pk, 3);
    bin(pk, 16);
}
static void b_add_ok(msgpack_packer *pk)
{
    record_fields(pk, "c", "t", 3);
}
static void b_add_repl(msgpack_packer *pk)
{
    record_fields(pk, "c", "t", 256);
}
static void b_add_ctl(msgpack_packer *pk)
{
    record_fields(pk, "c", "te\nxt", 3);
}
static void b_add_empty_cid(msgpack_packer *pk)
{
    record_fields(pk, "", "t", 3);
}
static void b_add_long_cid(msgpack_packer *pk)
{
    char cid[VV_DHT_CONTENT_ID_MAX + 2];
    memset(cid, 'x', sizeof(cid) - 1);
    cid[sizeof(cid) - 1] = 0;
    record_fields(pk, cid, "t", 3);
}
static void nodes_with(msgpack_packer *pk, size_t addr_len, uint32_t count)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, count);
    for (uint32_t i = 0; i < count; i++) {
        msgpack_pack_array(pk, 2);
        bin(pk, 32);
        uint8_t a[18] = {1, 2, 3, 4, 0x12, 0x34};
        msgpack_pack_bin(pk, addr_len);
        msgpack_pack_bin_body(pk, a, addr_len);
    }
}
static void b_nodes_ok(msgpack_packer *pk)
{
    nodes_with(pk, 6, 2);
}
static void b_nodes_addr5(msgpack_packer *pk)
{
    nodes_with(pk, 5, 2);
}
static void b_nodes_port0(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    bin(pk, 32);
    bin(pk, 6); /* 0.0.0.0:0 */
}
static void b_nodes_21(msgpack_packer *pk)
{
    nodes_with(pk, 6, VV_DHT_MAX_NODES + 1);
}
static void b_providers_without_record(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 3);
    bin(pk, 32);
    uint8_t a[6] = {1, 2, 3, 4, 0, 1};
    msgpack_pack_bin(pk, 6);
    msgpack_pack_bin_body(pk, a, 6);
    msgpack_pack_uint64(pk, 5);
    msgpack_pack_array(pk, 0);
    bin(pk, 16);
}
static void b_values_omitted_too_big(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_array(pk, 0);
    msgpack_pack_uint64(pk, (uint64_t)UINT32_MAX + 1);
    msgpack_pack_array(pk, 0);
    bin(pk, 16);
}
static void b_values_ok(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_array(pk, 0);
    msgpack_pack_uint64(pk, UINT32_MAX);
    msgpack_pack_array(pk, 0);
    bin(pk, 16);
}
static void b_false(msgpack_packer *pk)
{
    msgpack_pack_false(pk);
}

static void test_malformed_bodies_are_refused(void **state)
{
    (void)state;
    const uint16_t simple[] = {VV_DHT_MSG_PING, VV_DHT_MSG_FIND_NODE, VV_DHT_MSG_GET_VALUE,
                               VV_DHT_MSG_GET_PROVIDERS};
    for (size_t i = 0; i < VV_ARRAY_SIZE(simple); i++) {
        assert_int_equal(verdict(simple[i], false, b_ok_ping), 0);
        assert_int_equal(verdict(simple[i], false, b_short_id), VV_EDHT_MALFORMED);
        assert_int_equal(verdict(simple[i], false, b_str_id), VV_EDHT_MALFORMED);
        assert_int_equal(verdict(simple[i], false, b_empty), VV_EDHT_MALFORMED);
        assert_int_equal(verdict(simple[i], false, b_not_array), VV_EDHT_MALFORMED);
        assert_int_equal(verdict(simple[i], false, b_empty_pad), VV_EDHT_MALFORMED);
        assert_int_equal(verdict(simple[i], false, b_big_pad), VV_EDHT_MALFORMED);
        assert_int_equal(verdict(simple[i], false, b_three), VV_EDHT_MALFORMED);
    }
    assert_int_equal(verdict(0x0106, false, b_ok_ping), VV_EWIRE_UNKNOWN_TYPE);
    assert_int_equal(verdict(VV_DHT_MSG_PUT_VALUE, false, b_put_ok), 0);
    assert_int_equal(verdict(VV_DHT_MSG_PUT_VALUE, false, b_put_big), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_PUT_VALUE, false, b_put_neg), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_PUT_VALUE, false, b_put_token), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_PUT_VALUE, false, b_ok_ping), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, false, b_add_ok), 0);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, false, b_add_repl), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, false, b_add_ctl), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, false, b_add_empty_cid), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, false, b_add_long_cid), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, false, b_add_without_sig), VV_EDHT_MALFORMED);
    /* Answers. */
    assert_int_equal(verdict(VV_DHT_MSG_FIND_NODE, true, b_nodes_ok), 0);
    assert_int_equal(verdict(VV_DHT_MSG_FIND_NODE, true, b_nodes_addr5), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_FIND_NODE, true, b_nodes_port0), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_FIND_NODE, true, b_nodes_21), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_PING, true, b_nodes_ok), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_GET_PROVIDERS, true, b_providers_without_record),
                     VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_GET_VALUE, true, b_values_ok), 0);
    assert_int_equal(verdict(VV_DHT_MSG_GET_VALUE, true, b_values_omitted_too_big),
                     VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_PUT_VALUE, true, b_false), VV_EDHT_MALFORMED);
    assert_int_equal(verdict(VV_DHT_MSG_ADD_PROVIDER, true, b_nodes_ok), VV_EDHT_MALFORMED);
}

static void test_pong_signature_binds_nonce_and_requester(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], nonce[32], me[32], sig[64];
    crypto_sign_keypair(pk, sk);
    randombytes_buf(nonce, 32);
    randombytes_buf(me, 32);
    vv_dht_pong_sign(nonce, me, sk, sig);
    uint8_t m[VV_DHT_PING_SIGNED_BYTES];
    vv_dht_pong_signed_bytes(nonce, me, m);
    assert_int_equal(sizeof(m), 81);
    assert_memory_equal(m, "vivim-dht-ping-v1", 17);
    assert_memory_equal(m + 17, nonce, 32);
    assert_memory_equal(m + 49, me, 32);
    assert_int_equal(crypto_sign_verify_detached(sig, m, sizeof(m), pk), 0);
    assert_int_equal(vv_dht_pong_verify(nonce, me, pk, sig), 0);
    uint8_t other[32];
    memcpy(other, me, 32);
    other[0] ^= 1;
    assert_int_equal(vv_dht_pong_verify(nonce, other, pk, sig), VV_EDHT_SIGNATURE);
    assert_int_equal(vv_dht_pong_verify(other, me, pk, sig), VV_EDHT_SIGNATURE);
    /* The answering node's ID is the hash of the key that signed. */
    uint8_t id[32], want[32];
    vv_dht_id_from_pk(pk, id);
    crypto_hash_sha256(want, pk, 32);
    assert_memory_equal(id, want, 32);
    assert_int_equal(vv_dht_answer_code(VV_EDHT_TOKEN), VV_DHT_ANSWER_TOKEN);
    assert_int_equal(vv_dht_answer_code(VV_EDHT_STALE_SEQ), VV_DHT_ANSWER_STALE_SEQ);
    assert_int_equal(vv_dht_answer_code(VV_EINVAL), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_round_trip),
        cmocka_unit_test(test_ping_frame_is_the_documented_bytes),
        cmocka_unit_test(test_answers_round_trip),
        cmocka_unit_test(test_answers_are_cut_to_the_budget),
        cmocka_unit_test(test_malformed_bodies_are_refused),
        cmocka_unit_test(test_pong_signature_binds_nonce_and_requester),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
