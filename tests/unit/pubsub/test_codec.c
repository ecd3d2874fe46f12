/* Pubsub message signing and the channel-2 frame bodies: real Ed25519 signatures over the
 * digest, IDs that change with every field, round trips through real frames, and rejection
 * of every malformed shape a peer could send. */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "vivim/pubsub_wire.h"

struct key {
    uint8_t pk[VV_ED25519_PK_BYTES], sk[VV_ED25519_SK_BYTES], id[VV_NODE_ID_BYTES];
};

static void key_make(struct key *k, uint8_t seed_byte)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, seed_byte, sizeof(seed));
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    vv_identity_node_id(k->pk, k->id);
}

static struct vv_pubsub_msg msg_make(const struct key *k, const char *topic, const void *data,
                                     size_t n, uint64_t seqno, uint8_t sig[VV_PUBSUB_SIG_BYTES])
{
    struct vv_pubsub_msg m = {k->id, k->pk, seqno, topic, strlen(topic), data, n, sig};
    vv_pubsub_msg_sign(&m, k->sk, sig);
    return m;
}

/* Packs a frame with the given body writer into sb and decodes it into f. */
typedef int (*body_fn)(msgpack_packer *pk, const void *arg);

static int frame(uint16_t type, body_fn fn, const void *arg, struct vv_wire_frame *f)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, 0);
    int rc = fn(&pk, arg);
    if (rc == 0)
        rc = vv_wire_decode((const uint8_t *)sb.data, sb.size, f);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* A frame whose body is the MessagePack bytes given (after the 4 header bytes). */
static int raw_frame(const uint8_t *body, size_t n, struct vv_wire_frame *f)
{
    uint8_t buf[4096];
    assert_true(n + 7 <= sizeof(buf));
    memcpy(buf, "\x95\x01\x00\xcd\x02\x02\x00", 7);
    memcpy(buf + 7, body, n);
    return vv_wire_decode(buf, n + 7, f);
}

static int msg_body(msgpack_packer *pk, const void *arg)
{
    return vv_pubsub_msg_encode(pk, arg);
}

static void test_signature_verifies_and_binds_every_field(void **state)
{
    (void)state;
    struct key a, b;
    key_make(&a, 1);
    key_make(&b, 2);
    uint8_t sig[VV_PUBSUB_SIG_BYTES], d[VV_PUBSUB_DIGEST_BYTES];
    struct vv_pubsub_msg m = msg_make(&a, "circle:42", "hello", 5, 7, sig);
    vv_pubsub_msg_digest(&m, d);
    assert_int_equal(vv_pubsub_verify_digest(a.pk, d, sig), 0);
    /* The wrong key, and each field changed, fail. */
    assert_int_equal(vv_pubsub_verify_digest(b.pk, d, sig), VV_EPUBSUB_SIGNATURE);
    struct vv_pubsub_msg v[4] = {m, m, m, m};
    v[0].seqno = 8;
    v[1].topic = "circle:43";
    v[2].data = (const uint8_t *)"hellp";
    v[3].origin = b.pk;
    for (int i = 0; i < 4; i++) {
        vv_pubsub_msg_digest(&v[i], d);
        assert_int_equal(vv_pubsub_verify_digest(v[i].origin, d, sig), VV_EPUBSUB_SIGNATURE);
    }
    /* The signed bytes are the domain and the digest: check with libsodium directly. */
    uint8_t s[VV_PUBSUB_SIGNED_BYTES];
    vv_pubsub_msg_digest(&m, d);
    vv_pubsub_signed_bytes(d, s);
    assert_memory_equal(s, "vivim-pubsub-msg-v1", 19);
    assert_int_equal(crypto_sign_verify_detached(sig, s, sizeof(s), a.pk), 0);
}

static void test_id_is_digest_prefix_and_topic_data_boundary_matters(void **state)
{
    (void)state;
    struct key a;
    key_make(&a, 1);
    uint8_t sig[VV_PUBSUB_SIG_BYTES], id1[VV_PUBSUB_ID_BYTES], id2[VV_PUBSUB_ID_BYTES],
        d[VV_PUBSUB_DIGEST_BYTES];
    /* ("ab", "c") and ("a", "bc") have the same bytes end to end; the length prefix parts
     * them. */
    struct vv_pubsub_msg m1 = msg_make(&a, "ab", "c", 1, 1, sig);
    struct vv_pubsub_msg m2 = msg_make(&a, "a", "bc", 2, 1, sig);
    vv_pubsub_msg_id(&m1, id1);
    vv_pubsub_msg_id(&m2, id2);
    assert_memory_not_equal(id1, id2, VV_PUBSUB_ID_BYTES);
    vv_pubsub_msg_digest(&m1, d);
    assert_memory_equal(id1, d, VV_PUBSUB_ID_BYTES);
    /* The signature is not part of the ID: a copy with a forged signature has the same ID
     * (docs/pubsub.md: the seen cache forgets an ID whose verification failed). */
    uint8_t other[VV_PUBSUB_SIG_BYTES] = {0};
    m1.sig = other;
    vv_pubsub_msg_id(&m1, id2);
    assert_memory_equal(id1, id2, VV_PUBSUB_ID_BYTES);
}

static void test_message_round_trips_through_a_frame(void **state)
{
    (void)state;
    struct key a;
    key_make(&a, 3);
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    struct vv_pubsub_msg m = msg_make(&a, "user:did:key:z6Mk", "\x00\x01\x02", 3, UINT64_MAX, sig);
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), 0);
    assert_int_equal(f.h.type, 0x0201);
    struct vv_pubsub_msg out;
    assert_int_equal(vv_pubsub_msg_decode(&f.body, &out), 0);
    assert_memory_equal(out.from, a.id, 32);
    assert_memory_equal(out.origin, a.pk, 32);
    assert_true(out.seqno == UINT64_MAX);
    assert_int_equal(out.topic_len, strlen(m.topic));
    assert_memory_equal(out.topic, m.topic, out.topic_len);
    assert_int_equal(out.data_len, 3);
    assert_memory_equal(out.data, "\x00\x01\x02", 3);
    uint8_t d[VV_PUBSUB_DIGEST_BYTES];
    vv_pubsub_msg_digest(&out, d);
    assert_int_equal(vv_pubsub_verify_digest(out.origin, d, out.sig), 0);
    vv_wire_frame_free(&f);

    /* Empty data is allowed. */
    m = msg_make(&a, "t", NULL, 0, 0, sig);
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), 0);
    assert_int_equal(vv_pubsub_msg_decode(&f.body, &out), 0);
    assert_int_equal(out.data_len, 0);
    vv_wire_frame_free(&f);
}

/* The test vector of docs/protocol.md ("Pubsub messages, channel 2"), byte for byte. */
static void test_message_matches_the_documented_vector(void **state)
{
    (void)state;
    static const char *frame_hex =
        "950100cd02010096c42034750f98bd59fcfc946da45aaabe933be154a4b5094e1c4abf42866505f3c97e"
        "c4208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c01a174c403616263"
        "c4405d2c447899a7c52cca9869f52d53476eca2a6061fadfbbfda2e7f51cea27bdef51e999fac5802ccf"
        "c8c63068dac926886c802fa5ea7f8dfabb178dedafbf6305";
    static const char *id_hex = "6738b1dbfc80efb98c0dcf80638bad78bd531b41";
    struct key a;
    key_make(&a, 1);
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    struct vv_pubsub_msg m = msg_make(&a, "t", "abc", 3, 1, sig);
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), 0);
    vv_wire_frame_free(&f);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_MESSAGE, 0);
    assert_int_equal(vv_pubsub_msg_encode(&pk, &m), 0);
    char hex[2 * 150 + 1];
    assert_int_equal(sb.size, 150);
    sodium_bin2hex(hex, sizeof(hex), (const uint8_t *)sb.data, sb.size);
    assert_string_equal(hex, frame_hex);
    uint8_t id[VV_PUBSUB_ID_BYTES];
    char idh[2 * VV_PUBSUB_ID_BYTES + 1];
    vv_pubsub_msg_id(&m, id);
    sodium_bin2hex(idh, sizeof(idh), id, sizeof(id));
    assert_string_equal(idh, id_hex);
    msgpack_sbuffer_destroy(&sb);
}

static void test_message_with_from_not_hash_of_origin_is_refused(void **state)
{
    (void)state;
    struct key a, b;
    key_make(&a, 1);
    key_make(&b, 2);
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    struct vv_pubsub_msg m = msg_make(&a, "t", "x", 1, 1, sig);
    m.from = b.id;
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), 0);
    struct vv_pubsub_msg out;
    assert_int_equal(vv_pubsub_msg_decode(&f.body, &out), VV_EPUBSUB_ORIGIN);
    vv_wire_frame_free(&f);
}

static void test_encoders_refuse_what_peers_must_refuse(void **state)
{
    (void)state;
    struct key a;
    key_make(&a, 1);
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    char big[VV_PUBSUB_MAX_TOPIC_BYTES + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    struct vv_pubsub_msg m = msg_make(&a, big, "x", 1, 1, sig);
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), VV_EINVAL);
    m = msg_make(&a, "tab\there", "x", 1, 1, sig);
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), VV_EINVAL);
    m = msg_make(&a, "", "x", 1, 1, sig);
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), VV_EINVAL);
    m = msg_make(&a, "t", "x", 1, 1, sig);
    m.data_len = VV_PUBSUB_MAX_DATA_BYTES + 1;
    assert_int_equal(frame(VV_PUBSUB_TYPE_MESSAGE, msg_body, &m, &f), VV_EINVAL);
    /* Exactly 256 bytes of topic is fine. */
    big[VV_PUBSUB_MAX_TOPIC_BYTES] = 0;
    assert_true(vv_pubsub_topic_ok(big, VV_PUBSUB_MAX_TOPIC_BYTES));
    assert_false(vv_pubsub_topic_ok("\xc0\x80", 2)); /* overlong NUL */
}

struct subs_arg {
    const struct vv_pubsub_sub *s;
    uint32_t n;
};

static int subs_body(msgpack_packer *pk, const void *arg)
{
    const struct subs_arg *a = arg;
    return vv_pubsub_subs_encode(pk, a->s, a->n);
}

static void test_subscriptions_round_trip(void **state)
{
    (void)state;
    struct vv_pubsub_sub s[3] = {
        {true, "circle:1", 8}, {false, "content:ab", 10}, {true, "network:announce", 16}};
    struct subs_arg a = {s, 3};
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_SUBSCRIPTIONS, subs_body, &a, &f), 0);
    struct vv_pubsub_sub out[VV_PUBSUB_MAX_SUBS_PER_FRAME];
    uint32_t n;
    assert_int_equal(vv_pubsub_subs_decode(&f.body, out, VV_ARRAY_SIZE(out), &n), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out[i].subscribe, s[i].subscribe);
        assert_int_equal(out[i].topic_len, s[i].topic_len);
        assert_memory_equal(out[i].topic, s[i].topic, s[i].topic_len);
    }
    /* A smaller cap than the body holds is refused, not overrun. */
    assert_int_equal(vv_pubsub_subs_decode(&f.body, out, 2, &n), VV_EPUBSUB_MALFORMED);
    vv_wire_frame_free(&f);
    a.n = 0;
    assert_int_equal(frame(VV_PUBSUB_TYPE_SUBSCRIPTIONS, subs_body, &a, &f), VV_EINVAL);
}

static int control_body(msgpack_packer *pk, const void *arg)
{
    return vv_pubsub_control_encode(pk, arg);
}

static void test_control_round_trips_every_list(void **state)
{
    (void)state;
    uint8_t idb[6][VV_PUBSUB_ID_BYTES];
    const uint8_t *ids[6];
    for (int i = 0; i < 6; i++) {
        memset(idb[i], i + 1, VV_PUBSUB_ID_BYTES);
        ids[i] = idb[i];
    }
    uint8_t peer[VV_NODE_ID_BYTES];
    memset(peer, 0xab, sizeof(peer));
    struct vv_pubsub_ihave ihave[2] = {{"a", 1, ids, 2}, {"b", 1, ids + 2, 1}};
    struct vv_pubsub_topic_ref graft[1] = {{"g", 1}};
    struct vv_pubsub_px px[2] = {{peer, "10.0.0.1:4747", 13}, {peer, NULL, 0}};
    struct vv_pubsub_prune prune[1] = {{"p", 1, 60, px, 2}};
    struct vv_pubsub_control c = {.ihave = ihave,
                                  .n_ihave = 2,
                                  .iwant = ids + 3,
                                  .n_iwant = 1,
                                  .graft = graft,
                                  .n_graft = 1,
                                  .prune = prune,
                                  .n_prune = 1,
                                  .idontwant = ids + 4,
                                  .n_idontwant = 2};
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_CONTROL, control_body, &c, &f), 0);
    struct vv_pubsub_control o;
    assert_int_equal(vv_pubsub_control_decode(&f.body, &o), 0);
    assert_int_equal(o.n_ihave, 2);
    assert_int_equal(o.ihave[0].n_ids, 2);
    assert_memory_equal(o.ihave[0].ids[1], idb[1], VV_PUBSUB_ID_BYTES);
    assert_memory_equal(o.ihave[1].topic, "b", 1);
    assert_memory_equal(o.ihave[1].ids[0], idb[2], VV_PUBSUB_ID_BYTES);
    assert_int_equal(o.n_iwant, 1);
    assert_memory_equal(o.iwant[0], idb[3], VV_PUBSUB_ID_BYTES);
    assert_int_equal(o.n_graft, 1);
    assert_memory_equal(o.graft[0].topic, "g", 1);
    assert_int_equal(o.n_prune, 1);
    assert_int_equal(o.prune[0].backoff_s, 60);
    assert_int_equal(o.prune[0].n_px, 2);
    assert_memory_equal(o.prune[0].px[0].peer, peer, 32);
    assert_int_equal(o.prune[0].px[0].address_len, 13);
    assert_memory_equal(o.prune[0].px[0].address, "10.0.0.1:4747", 13);
    assert_null(o.prune[0].px[1].address);
    assert_int_equal(o.n_idontwant, 2);
    assert_memory_equal(o.idontwant[1], idb[5], VV_PUBSUB_ID_BYTES);
    vv_pubsub_control_free(&o);
    vv_pubsub_control_free(&o); /* twice is harmless */
    vv_wire_frame_free(&f);

    /* A full iwant list of 5000 IDs fits one frame; 5001 is refused by the encoder. */
    static uint8_t many[VV_PUBSUB_MAX_CONTROL_IDS + 1][VV_PUBSUB_ID_BYTES];
    static const uint8_t *mp[VV_PUBSUB_MAX_CONTROL_IDS + 1];
    for (int i = 0; i <= VV_PUBSUB_MAX_CONTROL_IDS; i++)
        mp[i] = many[i];
    struct vv_pubsub_control big = {.iwant = mp, .n_iwant = VV_PUBSUB_MAX_CONTROL_IDS};
    assert_int_equal(frame(VV_PUBSUB_TYPE_CONTROL, control_body, &big, &f), 0);
    assert_int_equal(vv_pubsub_control_decode(&f.body, &o), 0);
    assert_int_equal(o.n_iwant, VV_PUBSUB_MAX_CONTROL_IDS);
    vv_pubsub_control_free(&o);
    vv_wire_frame_free(&f);
    big.n_iwant++;
    assert_int_equal(frame(VV_PUBSUB_TYPE_CONTROL, control_body, &big, &f), VV_EINVAL);
    struct vv_pubsub_control empty = {0};
    assert_int_equal(frame(VV_PUBSUB_TYPE_CONTROL, control_body, &empty, &f), VV_EINVAL);
}

/* Bodies a peer could send, each broken in one way. */
/* Every list at its bound at once: the body still fits one frame and decodes. */
static void test_control_with_every_list_full_fits_one_frame(void **state)
{
    (void)state;
    static uint8_t idb[VV_PUBSUB_ID_BYTES];
    static const uint8_t *ids[VV_PUBSUB_MAX_CONTROL_IDS];
    for (int i = 0; i < VV_PUBSUB_MAX_CONTROL_IDS; i++)
        ids[i] = idb;
    static char topic[VV_PUBSUB_MAX_TOPIC_BYTES], addr[VV_PUBSUB_MAX_ADDRESS_BYTES];
    memset(topic, 't', sizeof(topic));
    memset(addr, '1', sizeof(addr));
    uint8_t peer[VV_NODE_ID_BYTES] = {0};
    static struct vv_pubsub_ihave ih[VV_PUBSUB_MAX_IHAVE_TOPICS];
    static struct vv_pubsub_topic_ref gr[VV_PUBSUB_MAX_GRAFTS];
    static struct vv_pubsub_prune pr[VV_PUBSUB_MAX_PRUNES];
    static struct vv_pubsub_px px[VV_PUBSUB_MAX_PX];
    for (int i = 0; i < VV_PUBSUB_MAX_PX; i++)
        px[i] = (struct vv_pubsub_px){peer, addr, sizeof(addr)};
    uint32_t per = VV_PUBSUB_MAX_CONTROL_IDS / VV_PUBSUB_MAX_IHAVE_TOPICS,
             left = VV_PUBSUB_MAX_CONTROL_IDS;
    for (int i = 0; i < VV_PUBSUB_MAX_IHAVE_TOPICS; i++) {
        uint32_t k = i == VV_PUBSUB_MAX_IHAVE_TOPICS - 1 ? left : per;
        ih[i] = (struct vv_pubsub_ihave){topic, sizeof(topic), ids, k};
        left -= k;
    }
    for (int i = 0; i < VV_PUBSUB_MAX_GRAFTS; i++)
        gr[i] = (struct vv_pubsub_topic_ref){topic, sizeof(topic)};
    for (int i = 0; i < VV_PUBSUB_MAX_PRUNES; i++)
        pr[i] = (struct vv_pubsub_prune){topic, sizeof(topic), VV_PUBSUB_MAX_BACKOFF_S, px,
                                         VV_PUBSUB_MAX_PX};
    struct vv_pubsub_control c = {ih,  VV_PUBSUB_MAX_IHAVE_TOPICS, ids, VV_PUBSUB_MAX_CONTROL_IDS,
                                  gr,  VV_PUBSUB_MAX_GRAFTS,       pr,  VV_PUBSUB_MAX_PRUNES,
                                  ids, VV_PUBSUB_MAX_CONTROL_IDS,  NULL};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CONTROL, 0);
    assert_int_equal(vv_pubsub_control_encode(&pk, &c), 0);
    assert_true(sb.size < 560000); /* docs/protocol.md: about 550 KB */
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode((const uint8_t *)sb.data, sb.size, &f), 0);
    struct vv_pubsub_control o;
    assert_int_equal(vv_pubsub_control_decode(&f.body, &o), 0);
    assert_int_equal(o.n_ihave, VV_PUBSUB_MAX_IHAVE_TOPICS);
    assert_int_equal(o.ihave[VV_PUBSUB_MAX_IHAVE_TOPICS - 1].n_ids,
                     VV_PUBSUB_MAX_CONTROL_IDS - (VV_PUBSUB_MAX_IHAVE_TOPICS - 1) * per);
    assert_int_equal(o.n_prune, VV_PUBSUB_MAX_PRUNES);
    assert_int_equal(o.prune[63].n_px, VV_PUBSUB_MAX_PX);
    assert_int_equal(o.prune[63].px[15].address_len, VV_PUBSUB_MAX_ADDRESS_BYTES);
    assert_int_equal(o.n_idontwant, VV_PUBSUB_MAX_CONTROL_IDS);
    vv_pubsub_control_free(&o);
    vv_wire_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
}

static void test_malformed_control_bodies_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *hex;
    } bad[] = {
        {"not an array", "c0"},
        {"four lists", "9490909090"},
        {"six lists", "96909090909090"},
        {"all five empty", "959090909090"},
        {"iwant id of 19 bytes", "9590"
                                 "91c413"
                                 "00000000000000000000000000000000000000"
                                 "909090"},
        {"iwant id as str", "9590"
                            "91b4"
                            "0000000000000000000000000000000000000000"
                            "909090"},
        {"ihave entry with no ids", "95"
                                    "91"
                                    "92a16190"
                                    "90909090"},
        {"ihave topic empty", "95"
                              "91"
                              "92a0"
                              "91c414"
                              "0000000000000000000000000000000000000000"
                              "90909090"},
        {"graft topic with newline", "959090"
                                     "91a20a61"
                                     "9090"},
        {"graft topic int", "959090"
                            "9101"
                            "9090"},
        {"prune of two elements", "95909090"
                                  "91"
                                  "92a17000"
                                  "90"},
        {"prune backoff negative", "95909090"
                                   "91"
                                   "93a170ff90"
                                   "90"},
        {"prune backoff over a day", "95909090"
                                     "91"
                                     "93a170ce00015181"
                                     "90"
                                     "90"},
        {"px peer of 31 bytes", "95909090"
                                "91"
                                "93a1703c"
                                "91"
                                "92c41f"
                                "00000000000000000000000000000000000000000000000000000000000000"
                                "c0"
                                "90"},
        {"px address int", "95909090"
                           "91"
                           "93a1703c"
                           "91"
                           "92c420"
                           "0000000000000000000000000000000000000000000000000000000000000000"
                           "01"
                           "90"},
        {"idontwant not array", "9590909090c0"},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++) {
        uint8_t body[1024];
        size_t n;
        assert_int_equal(
            sodium_hex2bin(body, sizeof(body), bad[i].hex, strlen(bad[i].hex), NULL, &n, NULL), 0);
        struct vv_wire_frame f;
        int rc = raw_frame(body, n, &f);
        if (rc != 0) {
            print_error("case %zu (%s): frame rc %d\n", i, bad[i].what, rc);
            fail();
        }
        struct vv_pubsub_control o;
        rc = vv_pubsub_control_decode(&f.body, &o);
        if (rc != VV_EPUBSUB_MALFORMED) {
            print_error("case %zu (%s): rc %d\n", i, bad[i].what, rc);
            fail();
        }
        vv_wire_frame_free(&f);
    }
}

static void test_ihave_ids_are_bounded_in_total(void **state)
{
    (void)state;
    /* Two ihave entries of 2,500 IDs each are fine; one more ID over both is refused. */
    static uint8_t many[VV_PUBSUB_MAX_CONTROL_IDS + 1][VV_PUBSUB_ID_BYTES];
    static const uint8_t *mp[VV_PUBSUB_MAX_CONTROL_IDS + 1];
    for (int i = 0; i <= VV_PUBSUB_MAX_CONTROL_IDS; i++)
        mp[i] = many[i];
    struct vv_pubsub_ihave ih[2] = {{"a", 1, mp, 2500}, {"b", 1, mp + 2500, 2500}};
    struct vv_pubsub_control c = {.ihave = ih, .n_ihave = 2};
    struct vv_wire_frame f;
    assert_int_equal(frame(VV_PUBSUB_TYPE_CONTROL, control_body, &c, &f), 0);
    struct vv_pubsub_control o;
    assert_int_equal(vv_pubsub_control_decode(&f.body, &o), 0);
    vv_pubsub_control_free(&o);
    vv_wire_frame_free(&f);
    /* Build the over-bound body by hand: the encoder refuses it. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CONTROL, 0);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_array(&pk, 2);
    for (int e = 0; e < 2; e++) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "a", 1);
        uint32_t k = e == 0 ? 2500 : 2501;
        msgpack_pack_array(&pk, k);
        for (uint32_t j = 0; j < k; j++) {
            msgpack_pack_bin(&pk, VV_PUBSUB_ID_BYTES);
            msgpack_pack_bin_body(&pk, many[0], VV_PUBSUB_ID_BYTES);
        }
    }
    for (int l = 0; l < 4; l++)
        msgpack_pack_array(&pk, 0);
    assert_int_equal(vv_wire_decode((const uint8_t *)sb.data, sb.size, &f), 0);
    assert_int_equal(vv_pubsub_control_decode(&f.body, &o), VV_EPUBSUB_MALFORMED);
    vv_wire_frame_free(&f);
    msgpack_sbuffer_destroy(&sb);
}

static void test_malformed_messages_and_subscriptions_are_refused(void **state)
{
    (void)state;
    static const char *bad_msgs[] = {
        "95c0c0c0c0c0",   /* five elements */
        "96c0c0c0c0c0c0", /* six nils */
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad_msgs); i++) {
        uint8_t body[64];
        size_t n;
        assert_int_equal(
            sodium_hex2bin(body, sizeof(body), bad_msgs[i], strlen(bad_msgs[i]), NULL, &n, NULL),
            0);
        struct vv_wire_frame f;
        assert_int_equal(raw_frame(body, n, &f), 0);
        struct vv_pubsub_msg m;
        assert_int_equal(vv_pubsub_msg_decode(&f.body, &m), VV_EPUBSUB_MALFORMED);
        vv_wire_frame_free(&f);
    }
    /* A valid message with the seqno as a negative int, or the signature 63 bytes long. */
    struct key a;
    key_make(&a, 1);
    for (int variant = 0; variant < 2; variant++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_PUBSUB_TYPE_MESSAGE, 0);
        msgpack_pack_array(&pk, 6);
        msgpack_pack_bin(&pk, 32);
        msgpack_pack_bin_body(&pk, a.id, 32);
        msgpack_pack_bin(&pk, 32);
        msgpack_pack_bin_body(&pk, a.pk, 32);
        if (variant == 0)
            msgpack_pack_int64(&pk, -1);
        else
            msgpack_pack_uint64(&pk, 1);
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "t", 1);
        msgpack_pack_bin(&pk, 0);
        uint8_t sig[64] = {0};
        msgpack_pack_bin(&pk, variant == 1 ? 63 : 64);
        msgpack_pack_bin_body(&pk, sig, variant == 1 ? 63 : 64);
        struct vv_wire_frame f;
        assert_int_equal(vv_wire_decode((const uint8_t *)sb.data, sb.size, &f), 0);
        struct vv_pubsub_msg m;
        assert_int_equal(vv_pubsub_msg_decode(&f.body, &m), VV_EPUBSUB_MALFORMED);
        vv_wire_frame_free(&f);
        msgpack_sbuffer_destroy(&sb);
    }
    static const char *bad_subs[] = {
        "90",           /* empty list */
        "9192c2",       /* entry of one element... with wrong count */
        "9192a174c3",   /* topic before bool */
        "9192c3a0",     /* empty topic */
        "9193c3a17400", /* three elements */
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad_subs); i++) {
        uint8_t body[64];
        size_t n;
        assert_int_equal(
            sodium_hex2bin(body, sizeof(body), bad_subs[i], strlen(bad_subs[i]), NULL, &n, NULL),
            0);
        struct vv_wire_frame f;
        if (raw_frame(body, n, &f) != 0)
            continue; /* refused by the frame check already */
        struct vv_pubsub_sub s[VV_PUBSUB_MAX_SUBS_PER_FRAME];
        uint32_t k;
        assert_int_equal(vv_pubsub_subs_decode(&f.body, s, VV_ARRAY_SIZE(s), &k),
                         VV_EPUBSUB_MALFORMED);
        vv_wire_frame_free(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_verifies_and_binds_every_field),
        cmocka_unit_test(test_id_is_digest_prefix_and_topic_data_boundary_matters),
        cmocka_unit_test(test_message_round_trips_through_a_frame),
        cmocka_unit_test(test_message_matches_the_documented_vector),
        cmocka_unit_test(test_message_with_from_not_hash_of_origin_is_refused),
        cmocka_unit_test(test_encoders_refuse_what_peers_must_refuse),
        cmocka_unit_test(test_subscriptions_round_trip),
        cmocka_unit_test(test_control_round_trips_every_list),
        cmocka_unit_test(test_control_with_every_list_full_fits_one_frame),
        cmocka_unit_test(test_malformed_control_bodies_are_refused),
        cmocka_unit_test(test_ihave_ids_are_bounded_in_total),
        cmocka_unit_test(test_malformed_messages_and_subscriptions_are_refused),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
