/*
 * Secure sessions: two sessions wired together in memory (handshake, identities, hellos,
 * frames of every size, any split of the byte stream), and every way a peer or the network
 * can get it wrong: the wrong node, a signature over another key, messages from another
 * session, damaged, replayed and reordered messages, oversized length prefixes, payloads
 * where none belong. A raw Noise peer (noise.h used directly) plays the hostile side where
 * the session itself would refuse to produce the bytes.
 */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "vivim/noise.h"
#include "vivim/session.h"

#define PROLOGUE "vivim/1"

static struct vv_identity ids[4];

static void make_identity(struct vv_identity *id)
{
    crypto_sign_keypair(id->public_key, id->secret_key);
    vv_identity_node_id(id->public_key, id->node_id);
}

/* ---- harness: one end of a connection ---------------------------------------------------- */

enum split { ALL_AT_ONCE, BYTE_BY_BYTE, RANDOM_SPLITS };

struct end {
    struct vv_session *s;
    struct vv_session_keys keys;
    uint8_t *wire; /* bytes this end put on the stream, not yet delivered */
    size_t wire_len, wire_cap;
    int rc; /* the first error feeding this end returned */
    int established_calls;
    uint8_t node_id[VV_NODE_ID_BYTES], pk[32], hello[VV_SESSION_MAX_HELLO_BYTES];
    size_t hello_len;
    int frames;
    size_t last_len;
    uint8_t last_hash[32];
    bool seal_on_established; /* send "hi from <role>" as soon as established */
    bool abort_on_frame;
    int abort_on_write; /* abort inside the n-th write callback (1-based), 0: never */
    int writes;
    bool feed_in_frame;
    int reenter_rc;
};

static void append(struct end *e, const uint8_t *data, size_t len)
{
    if (e->wire_len + len > e->wire_cap) {
        e->wire_cap = VV_MAX(2 * e->wire_cap, e->wire_len + len);
        e->wire = vv_xrealloc(e->wire, e->wire_cap);
    }
    memcpy(e->wire + e->wire_len, data, len);
    e->wire_len += len;
}

static void on_write(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;
    append(e, data, len);
    if (++e->writes == e->abort_on_write)
        vv_session_abort(e->s); /* the transport's write failed: it closes the connection */
}

static int send_frame(struct end *e, const uint8_t *data, size_t len)
{
    uint8_t *out = vv_xmalloc(len + VV_SESSION_OVERHEAD);
    int rc = vv_session_seal(e->s, data, len, out, len + VV_SESSION_OVERHEAD);
    if (rc == 0)
        append(e, out, len + VV_SESSION_OVERHEAD);
    vv_free(out);
    return rc;
}

static void on_established(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES], const uint8_t pk[32],
                           const uint8_t *hello, size_t hello_len)
{
    struct end *e = arg;
    e->established_calls++;
    memcpy(e->node_id, node_id, VV_NODE_ID_BYTES);
    memcpy(e->pk, pk, 32);
    assert_true(hello_len <= VV_SESSION_MAX_HELLO_BYTES);
    if (hello_len)
        memcpy(e->hello, hello, hello_len);
    e->hello_len = hello_len;
    assert_true(vv_session_established(e->s));
    if (e->seal_on_established)
        assert_int_equal(send_frame(e, (const uint8_t *)"greeting", 8), 0);
}

static void on_frame(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;
    e->frames++;
    e->last_len = len;
    crypto_hash_sha256(e->last_hash, data, len);
    if (e->feed_in_frame)
        e->reenter_rc = vv_session_feed(e->s, data, 1);
    if (e->abort_on_frame)
        vv_session_abort(e->s);
}

static const struct vv_session_cbs cbs = {on_write, on_established, on_frame};

static void end_init(struct end *e, int id, bool initiator, const uint8_t *expected,
                     const char *hello)
{
    memset(e, 0, sizeof(*e));
    vv_session_keys_init(&e->keys, &ids[id]);
    e->s = vv_session_new(&e->keys, initiator, expected, (const uint8_t *)hello,
                          hello ? strlen(hello) : 0, &cbs, e);
    assert_non_null(e->s);
}

static void end_free(struct end *e)
{
    vv_session_free(e->s);
    vv_session_keys_clear(&e->keys);
    vv_free(e->wire);
    e->s = NULL;
    e->wire = NULL;
}

static size_t chunk(enum split how, size_t left)
{
    switch (how) {
    case ALL_AT_ONCE:
        return left;
    case BYTE_BY_BYTE:
        return 1;
    default: {
        size_t n = 1 + randombytes_uniform(3000); /* not inside VV_MIN: it evaluates twice */
        return VV_MIN(left, n);
    }
    }
}

/* Moves everything `from` wrote into `to`. Returns the first error of `to`'s feed. */
static int deliver(struct end *from, struct end *to, enum split how)
{
    uint8_t *buf = from->wire;
    size_t len = from->wire_len, off = 0;
    from->wire = NULL;
    from->wire_len = from->wire_cap = 0;
    int rc = 0;
    while (off < len && rc == 0) {
        size_t n = chunk(how, len - off);
        rc = vv_session_feed(to->s, buf + off, n);
        off += n;
    }
    vv_free(buf);
    if (rc != 0 && to->rc == 0)
        to->rc = rc;
    return rc;
}

static int pump(struct end *a, struct end *b, enum split how)
{
    while (a->wire_len || b->wire_len) {
        int rc = deliver(a, b, how);
        if (rc == 0)
            rc = deliver(b, a, how);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* A connection from ids[0] (dialling ids[1] by node ID) to ids[1], handshake done. */
static void connect_pair(struct end *a, struct end *b, enum split how)
{
    end_init(a, 0, true, ids[1].node_id, "hello from a");
    end_init(b, 1, false, NULL, "hello from b, the responder");
    assert_int_equal(vv_session_start(b->s), 0);
    assert_int_equal(b->wire_len, 0);
    assert_int_equal(vv_session_start(a->s), 0);
    assert_int_equal(pump(a, b, how), 0);
    assert_true(vv_session_established(a->s) && vv_session_established(b->s));
}

static void assert_frame(struct end *e, int count, const uint8_t *data, size_t len)
{
    uint8_t h[32];
    crypto_hash_sha256(h, data, len);
    assert_int_equal(e->frames, count);
    assert_int_equal(e->last_len, len);
    assert_memory_equal(e->last_hash, h, 32);
}

/* ---- the handshake ----------------------------------------------------------------------- */

static void test_handshake_reports_verified_ids_and_hellos(void **state)
{
    (void)state;
    enum split hows[] = {ALL_AT_ONCE, BYTE_BY_BYTE, RANDOM_SPLITS};
    for (size_t i = 0; i < VV_ARRAY_SIZE(hows); i++) {
        struct end a, b;
        connect_pair(&a, &b, hows[i]);
        assert_int_equal(a.established_calls, 1);
        assert_int_equal(b.established_calls, 1);
        assert_memory_equal(a.node_id, ids[1].node_id, 32);
        assert_memory_equal(a.pk, ids[1].public_key, 32);
        assert_memory_equal(b.node_id, ids[0].node_id, 32);
        assert_memory_equal(b.pk, ids[0].public_key, 32);
        assert_int_equal(a.hello_len, strlen("hello from b, the responder"));
        assert_memory_equal(a.hello, "hello from b, the responder", a.hello_len);
        assert_int_equal(b.hello_len, strlen("hello from a"));
        assert_memory_equal(b.hello, "hello from a", b.hello_len);
        assert_int_equal(vv_session_buffered(a.s), 0);
        assert_int_equal(vv_session_buffered(b.s), 0);
        end_free(&a);
        end_free(&b);
    }
}

static void test_handshake_messages_have_the_documented_sizes(void **state)
{
    (void)state;
    struct end a, b;
    end_init(&a, 0, true, NULL, NULL);
    end_init(&b, 1, false, NULL, "xyz");
    assert_int_equal(vv_session_start(a.s), 0);
    /* Message 1: length 32 (the ephemeral key, no payload). */
    assert_int_equal(a.wire_len, 4 + 32);
    assert_memory_equal(a.wire, "\x00\x00\x00\x20", 4);
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
    /* Message 2: e (32), encrypted s (48), encrypted pk || sig || hello (96 + 3 + 16). */
    assert_int_equal(b.wire_len, 4 + 32 + 48 + 96 + 3 + 16);
    assert_int_equal(deliver(&b, &a, ALL_AT_ONCE), 0);
    /* Message 3: encrypted s (48), encrypted pk || sig (96 + 16), no hello. */
    assert_int_equal(a.wire_len, 4 + 48 + 96 + 16);
    assert_int_equal(a.established_calls, 1);
    assert_int_equal(a.hello_len, 3);
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
    assert_int_equal(b.established_calls, 1);
    assert_int_equal(b.hello_len, 0);
    end_free(&a);
    end_free(&b);
}

static void test_established_session_is_small(void **state)
{
    (void)state;
    /* The struct is the whole footprint of an idle established session (the handshake state
     * is freed at establishment; a large message's buffer after it was delivered). */
    assert_true(vv_session_size() <= 2048);
    assert_true(vv_session_size() >= VV_SESSION_INLINE_BYTES);
}

static void test_wrong_expected_id_fails_and_never_establishes(void **state)
{
    (void)state;
    struct end a, b;
    end_init(&a, 0, true, ids[2].node_id, "a"); /* dials ids[2], reaches ids[1] */
    end_init(&b, 1, false, NULL, "b");
    assert_int_equal(vv_session_start(a.s), 0);
    assert_int_equal(pump(&a, &b, ALL_AT_ONCE), VV_ENOISE_IDENTITY);
    assert_int_equal(a.rc, VV_ENOISE_IDENTITY);
    assert_int_equal(a.established_calls, 0);
    assert_int_equal(b.established_calls, 0); /* a never sent message 3 */
    assert_int_equal(a.wire_len, 0);
    assert_false(vv_session_established(a.s));
    end_free(&a);
    end_free(&b);
}

/* Raw Noise peers: noise.h driven directly, to produce messages a session never would. */
struct raw {
    struct vv_noise_hs hs;
    struct vv_session_keys keys;
};

static void raw_init(struct raw *r, int id, bool initiator)
{
    vv_session_keys_init(&r->keys, &ids[id]);
    assert_int_equal(vv_noise_init(&r->hs, VV_NOISE_XX, initiator, (const uint8_t *)PROLOGUE,
                                   strlen(PROLOGUE), r->keys.noise_priv, NULL),
                     0);
}

/* Writes the raw peer's next message, length-prefixed, into out; returns its total length. */
static size_t raw_write(struct raw *r, const uint8_t *payload, size_t plen, uint8_t *out,
                        size_t cap)
{
    size_t n;
    assert_int_equal(vv_noise_write(&r->hs, payload, plen, out + 4, cap - 4, &n), 0);
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    return n + 4;
}

static void raw_read(struct raw *r, const uint8_t *wire, size_t len)
{
    uint8_t payload[1024];
    size_t pl;
    assert_true(len >= 4);
    assert_int_equal(vv_noise_read(&r->hs, wire + 4, len - 4, payload, sizeof(payload), &pl), 0);
}

/* payload = pk || sig || hello with the parts chosen by the test. */
static size_t id_payload(uint8_t *out, const uint8_t pk[32], const uint8_t sig[64], size_t hello)
{
    memcpy(out, pk, 32);
    memcpy(out + 32, sig, 64);
    memset(out + 96, 'h', hello);
    return 96 + hello;
}

/* A raw responder answers the session's message 1 with payload; returns the session's rc. */
static int raw_responder_answers(struct end *a, struct raw *r, const uint8_t *payload, size_t plen)
{
    uint8_t m2[2048];
    assert_int_equal(vv_session_start(a->s), 0);
    raw_read(r, a->wire, a->wire_len);
    a->wire_len = 0;
    size_t n = raw_write(r, payload, plen, m2, sizeof(m2));
    return vv_session_feed(a->s, m2, n);
}

static void test_signature_over_another_key_fails(void **state)
{
    (void)state;
    uint8_t payload[1024];
    struct vv_session_keys other;
    vv_session_keys_init(&other, &ids[1]); /* same identity, another Noise key */

    /* Message 2 whose signature covers another Noise static key of the same node. */
    struct end a;
    struct raw r;
    end_init(&a, 0, true, ids[1].node_id, NULL);
    raw_init(&r, 1, false);
    size_t pl = id_payload(payload, ids[1].public_key, other.sig, 0);
    assert_int_equal(raw_responder_answers(&a, &r, payload, pl), VV_ENOISE_SIGNATURE);
    assert_int_equal(a.established_calls, 0);
    assert_int_equal(vv_session_feed(a.s, payload, 1), VV_ESTATE);
    end_free(&a);

    /* Message 2 claiming ids[1]'s public key with ids[2]'s signature of the right key. */
    end_init(&a, 0, true, NULL, NULL);
    raw_init(&r, 2, false);
    pl = id_payload(payload, ids[1].public_key, r.keys.sig, 0);
    assert_int_equal(raw_responder_answers(&a, &r, payload, pl), VV_ENOISE_SIGNATURE);
    end_free(&a);

    /* The control: the same raw responder with its genuine payload is accepted. */
    end_init(&a, 0, true, ids[2].node_id, NULL);
    raw_init(&r, 2, false);
    pl = id_payload(payload, ids[2].public_key, r.keys.sig, 5);
    assert_int_equal(raw_responder_answers(&a, &r, payload, pl), 0);
    assert_int_equal(a.established_calls, 1);
    assert_int_equal(a.hello_len, 5);
    end_free(&a);

    /* Message 3 from a raw initiator whose signature covers another key: the responder. */
    struct end b;
    end_init(&b, 1, false, NULL, NULL);
    raw_init(&r, 0, true);
    uint8_t m[2048];
    size_t n = raw_write(&r, NULL, 0, m, sizeof(m));
    assert_int_equal(vv_session_feed(b.s, m, n), 0);
    raw_read(&r, b.wire, b.wire_len);
    vv_session_keys_init(&other, &ids[0]);
    pl = id_payload(payload, ids[0].public_key, other.sig, 0);
    n = raw_write(&r, payload, pl, m, sizeof(m));
    assert_int_equal(vv_session_feed(b.s, m, n), VV_ENOISE_SIGNATURE);
    assert_int_equal(b.established_calls, 0);
    end_free(&b);
    vv_session_keys_clear(&other);
    vv_session_keys_clear(&r.keys);
}

static void test_malformed_identity_payloads_fail(void **state)
{
    (void)state;
    uint8_t payload[1024];
    size_t lens[] = {0, 95, 96 + VV_SESSION_MAX_HELLO_BYTES + 1};
    for (size_t i = 0; i < VV_ARRAY_SIZE(lens); i++) {
        struct end a;
        struct raw r;
        end_init(&a, 0, true, NULL, NULL);
        raw_init(&r, 1, false);
        /* A valid signature, so only the length can be at fault. */
        id_payload(payload, ids[1].public_key, r.keys.sig, sizeof(payload) - 96);
        assert_int_equal(raw_responder_answers(&a, &r, payload, lens[i]), VV_ENOISE_HANDSHAKE);
        assert_int_equal(a.established_calls, 0);
        end_free(&a);
    }
    /* Exactly the largest hello is fine. */
    struct end a;
    struct raw r;
    end_init(&a, 0, true, NULL, NULL);
    raw_init(&r, 1, false);
    size_t pl = id_payload(payload, ids[1].public_key, r.keys.sig, VV_SESSION_MAX_HELLO_BYTES);
    assert_int_equal(raw_responder_answers(&a, &r, payload, pl), 0);
    assert_int_equal(a.hello_len, VV_SESSION_MAX_HELLO_BYTES);
    end_free(&a);
}

static void test_nonempty_message_1_payload_fails(void **state)
{
    (void)state;
    for (size_t plen = 0; plen < 2; plen++) {
        struct end b;
        struct raw r;
        end_init(&b, 1, false, NULL, NULL);
        raw_init(&r, 0, true);
        uint8_t m[256];
        size_t n = raw_write(&r, (const uint8_t *)"x", plen, m, sizeof(m));
        int rc = vv_session_feed(b.s, m, n);
        if (plen == 0) { /* the control: an empty payload is answered with message 2 */
            assert_int_equal(rc, 0);
            assert_true(b.wire_len > 0);
        } else {
            assert_int_equal(rc, VV_ENOISE_HANDSHAKE);
            assert_int_equal(b.wire_len, 0);
        }
        end_free(&b);
    }
}

static void test_low_order_ephemeral_key_fails(void **state)
{
    (void)state;
    struct end b;
    end_init(&b, 1, false, NULL, NULL);
    uint8_t m[4 + 32] = {0, 0, 0, 32}; /* e = all zeros */
    assert_int_equal(vv_session_feed(b.s, m, sizeof(m)), VV_ENOISE_HANDSHAKE);
    assert_int_equal(b.wire_len, 0);
    end_free(&b);
}

static void test_hello_of_512_is_carried_513_rejected_at_new(void **state)
{
    (void)state;
    char hello[VV_SESSION_MAX_HELLO_BYTES + 2];
    memset(hello, 'q', sizeof(hello) - 1);
    hello[sizeof(hello) - 1] = 0;
    struct vv_session_keys k;
    vv_session_keys_init(&k, &ids[0]);
    struct end e;
    assert_null(vv_session_new(&k, true, NULL, (const uint8_t *)hello, 513, &cbs, &e));
    assert_null(vv_session_new(&k, false, NULL, (const uint8_t *)hello, 513, &cbs, &e));
    /* Other invalid arguments. */
    assert_null(vv_session_new(&k, false, ids[1].node_id, NULL, 0, &cbs, &e));
    assert_null(vv_session_new(&k, true, NULL, NULL, 3, &cbs, &e));
    struct vv_session_cbs partial = {on_write, NULL, on_frame};
    assert_null(vv_session_new(&k, true, NULL, NULL, 0, &partial, &e));
    vv_session_keys_clear(&k);

    struct end a, b;
    hello[VV_SESSION_MAX_HELLO_BYTES] = 0;
    end_init(&a, 0, true, NULL, hello);
    end_init(&b, 1, false, NULL, hello);
    assert_int_equal(vv_session_start(a.s), 0);
    assert_int_equal(pump(&a, &b, RANDOM_SPLITS), 0);
    assert_int_equal(a.hello_len, 512);
    assert_int_equal(b.hello_len, 512);
    assert_memory_equal(a.hello, hello, 512);
    assert_memory_equal(b.hello, hello, 512);
    end_free(&a);
    end_free(&b);
}

static void test_spliced_third_party_messages_fail(void **state)
{
    (void)state;
    /* c <-> d runs its own handshake; d's message 2 is spliced into a <-> b's. */
    struct end a, b, c, d;
    end_init(&a, 0, true, NULL, NULL);
    end_init(&b, 1, false, NULL, NULL);
    end_init(&c, 2, true, NULL, NULL);
    end_init(&d, 3, false, NULL, NULL);
    assert_int_equal(vv_session_start(a.s), 0);
    assert_int_equal(vv_session_start(c.s), 0);
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
    assert_int_equal(deliver(&c, &d, ALL_AT_ONCE), 0);
    append(&a, d.wire, d.wire_len); /* a copy of d's message 2 for c, further down */
    assert_int_equal(deliver(&d, &a, ALL_AT_ONCE), VV_ENOISE_DECRYPT);
    assert_int_equal(a.established_calls, 0);
    /* And c's message 3 spliced into b (which is waiting for a's). */
    assert_int_equal(deliver(&a, &c, ALL_AT_ONCE), 0);
    assert_int_equal(deliver(&c, &b, ALL_AT_ONCE), VV_ENOISE_DECRYPT);
    assert_int_equal(b.established_calls, 0);
    end_free(&a);
    end_free(&b);
    end_free(&c);
    end_free(&d);

    /* Established sessions: a frame sealed by another session fails. */
    connect_pair(&a, &b, ALL_AT_ONCE);
    end_init(&c, 0, true, NULL, NULL);
    end_init(&d, 1, false, NULL, NULL);
    assert_int_equal(vv_session_start(c.s), 0);
    assert_int_equal(pump(&c, &d, ALL_AT_ONCE), 0);
    assert_int_equal(send_frame(&c, (const uint8_t *)"abc", 3), 0);
    assert_int_equal(deliver(&c, &b, ALL_AT_ONCE), VV_ENOISE_DECRYPT);
    assert_int_equal(b.frames, 0);
    end_free(&a);
    end_free(&b);
    end_free(&c);
    end_free(&d);
}

/* Damage to handshake messages: each case fails, nobody is established, and the session
 * stays dead even for the genuine message afterwards. */
static void test_damaged_handshake_messages_fail(void **state)
{
    (void)state;
    for (int damage = 0; damage < 9; damage++) {
        struct end a, b;
        end_init(&a, 0, true, NULL, NULL);
        end_init(&b, 1, false, NULL, NULL);
        assert_int_equal(vv_session_start(a.s), 0);
        uint8_t m1[64];
        size_t l1 = a.wire_len;
        memcpy(m1, a.wire, l1);
        assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
        struct end *victim = &a;
        uint8_t *m = b.wire;
        size_t len = b.wire_len;
        int want = VV_ENOISE_DECRYPT;
        switch (damage) {
        case 0: /* bit flips: in the encrypted static key, the payload, the tag */
            m[4 + 40] ^= 1;
            break;
        case 1:
            m[4 + 32 + 48 + 10] ^= 0x80;
            break;
        case 2:
            m[len - 1] ^= 1;
            break;
        case 3: /* truncated: a shorter length with the body cut to match */
            m[3] = (uint8_t)(m[3] - 1);
            len--;
            break;
        case 4: /* truncated to the ephemeral key only */
            m[2] = 0;
            m[3] = 32;
            len = 36;
            want = VV_ENOISE_HANDSHAKE;
            break;
        case 5: /* message 1 replayed to the responder where message 3 is due */
            assert_int_equal(deliver(&b, &a, ALL_AT_ONCE), 0);
            victim = &b;
            vv_free(a.wire);
            a.wire = NULL;
            a.wire_len = a.wire_cap = 0;
            m = m1;
            len = l1;
            want = VV_ENOISE_HANDSHAKE;
            break;
        case 6: /* message 2 reflected back to its sender, where message 3 is due */
            victim = &b;
            break;
        case 7: /* message 3 tampered */
            assert_int_equal(deliver(&b, &a, ALL_AT_ONCE), 0);
            victim = &b;
            m = a.wire;
            len = a.wire_len;
            m[len - 20] ^= 4;
            break;
        default: /* a second message 1 to the initiator where message 2 is due */
            m = m1;
            len = l1;
            want = VV_ENOISE_HANDSHAKE;
            break;
        }
        uint8_t *copy = vv_xmalloc(len);
        memcpy(copy, m, len);
        int rc = vv_session_feed(victim->s, copy, len);
        assert_int_equal(rc, want);
        assert_int_equal(victim->established_calls, 0);
        assert_false(vv_session_established(victim->s));
        assert_int_equal(vv_session_feed(victim->s, copy, len), VV_ESTATE);
        assert_int_equal(vv_session_feed(victim->s, copy, 1), VV_ESTATE);
        assert_int_equal(vv_session_buffered(victim->s), 0);
        vv_free(copy);
        end_free(&a);
        end_free(&b);
    }
}

static void test_initiator_must_start_first(void **state)
{
    (void)state;
    struct end a, b;
    end_init(&a, 0, true, NULL, NULL);
    end_init(&b, 1, false, NULL, NULL);
    assert_int_equal(vv_session_feed(a.s, (const uint8_t *)"\0\0\0\x20", 4), VV_ESTATE);
    assert_int_equal(vv_session_start(a.s), VV_ESTATE);
    assert_int_equal(a.wire_len, 0);
    end_free(&a);
    end_init(&a, 0, true, NULL, NULL);
    assert_int_equal(vv_session_start(a.s), 0);
    assert_int_equal(vv_session_start(a.s), VV_ESTATE); /* twice */
    assert_int_equal(vv_session_start(b.s), 0);         /* responder: nothing to do */
    assert_int_equal(b.wire_len, 0);
    assert_int_equal(vv_session_feed(a.s, NULL, 0), 0);
    end_free(&a);
    end_free(&b);
}

/* ---- frames ------------------------------------------------------------------------------ */

static uint8_t *pattern(size_t len, uint8_t seed)
{
    uint8_t *p = vv_xmalloc(len);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed + i * 7 + (i >> 9));
    return p;
}

static void test_frames_both_ways_at_every_size(void **state)
{
    (void)state;
    size_t sizes[] = {1, 1007, 1008, 1009, 64 * 1024, VV_SESSION_MAX_FRAME_BYTES};
    enum split hows[] = {ALL_AT_ONCE, RANDOM_SPLITS, BYTE_BY_BYTE};
    for (size_t h = 0; h < VV_ARRAY_SIZE(hows); h++) {
        struct end a, b;
        connect_pair(&a, &b, hows[h]);
        int count = 0;
        for (size_t i = 0; i < VV_ARRAY_SIZE(sizes); i++) {
            if (hows[h] == BYTE_BY_BYTE && sizes[i] > 64 * 1024)
                continue; /* a million feeds of one byte is slow under ASan, not more telling */
            uint8_t *p = pattern(sizes[i], (uint8_t)i);
            count++;
            assert_int_equal(send_frame(&a, p, sizes[i]), 0);
            assert_int_equal(pump(&a, &b, hows[h]), 0);
            assert_frame(&b, count, p, sizes[i]);
            assert_int_equal(send_frame(&b, p, sizes[i]), 0);
            assert_int_equal(pump(&a, &b, hows[h]), 0);
            assert_frame(&a, count, p, sizes[i]);
            assert_int_equal(vv_session_buffered(a.s), 0);
            assert_int_equal(vv_session_buffered(b.s), 0);
            vv_free(p);
        }
        end_free(&a);
        end_free(&b);
    }
}

static void test_seal_checks_its_arguments(void **state)
{
    (void)state;
    struct end a, b;
    end_init(&a, 0, true, NULL, NULL);
    uint8_t out[64];
    /* Not established yet. */
    assert_int_equal(vv_session_seal(a.s, (const uint8_t *)"x", 1, out, sizeof(out)), VV_ESTATE);
    end_free(&a);
    connect_pair(&a, &b, ALL_AT_ONCE);
    uint8_t *big = vv_xcalloc(1, VV_SESSION_MAX_FRAME_BYTES + 1 + VV_SESSION_OVERHEAD);
    assert_int_equal(vv_session_seal(a.s, big + VV_SESSION_OVERHEAD, VV_SESSION_MAX_FRAME_BYTES + 1,
                                     big, VV_SESSION_MAX_FRAME_BYTES + 1 + VV_SESSION_OVERHEAD),
                     VV_EINVAL);
    assert_int_equal(vv_session_seal(a.s, (const uint8_t *)"x", 0, out, sizeof(out)), VV_EINVAL);
    assert_int_equal(vv_session_seal(a.s, (const uint8_t *)"abc", 3, out, 22), VV_EINVAL);
    assert_int_equal(vv_session_seal(a.s, (const uint8_t *)"abc", 3, out, 23), 0);
    assert_memory_equal(out, "\x00\x00\x00\x13", 4); /* 3 + 16 */
    append(&a, out, 23);
    /* In place: the frame written at out + 4. */
    memcpy(big + 4, "in place", 8);
    assert_int_equal(vv_session_seal(a.s, big + 4, 8, big, 28), 0);
    append(&a, big, 28);
    assert_int_equal(pump(&a, &b, ALL_AT_ONCE), 0);
    assert_frame(&b, 2, (const uint8_t *)"in place", 8);
    vv_free(big);
    end_free(&a);
    end_free(&b);
}

static void test_many_messages_in_one_feed_arrive_in_order(void **state)
{
    (void)state;
    /* The initiator's first frame is sealed inside its established callback, so message 3
     * and the frame reach the responder in one feed. */
    struct end a, b;
    end_init(&a, 0, true, NULL, NULL);
    end_init(&b, 1, false, NULL, NULL);
    a.seal_on_established = true;
    assert_int_equal(vv_session_start(a.s), 0);
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
    assert_int_equal(deliver(&b, &a, ALL_AT_ONCE), 0);
    assert_int_equal(a.established_calls, 1);
    for (int i = 0; i < 50; i++) {
        uint8_t f[2] = {'f', (uint8_t)i};
        assert_int_equal(send_frame(&a, f, 2), 0);
    }
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
    assert_int_equal(b.established_calls, 1);
    assert_int_equal(b.frames, 51);
    uint8_t last[2] = {'f', 49};
    assert_frame(&b, 51, last, 2);
    end_free(&a);
    end_free(&b);
}

/* Damage to transport frames, each on a fresh connection. */
static void test_damaged_transport_frames_fail_and_kill_the_session(void **state)
{
    (void)state;
    for (int damage = 0; damage < 5; damage++) {
        struct end a, b;
        connect_pair(&a, &b, ALL_AT_ONCE);
        assert_int_equal(send_frame(&a, (const uint8_t *)"first", 5), 0);
        uint8_t f1[64], f2[64];
        size_t l1 = a.wire_len;
        memcpy(f1, a.wire, l1);
        a.wire_len = 0;
        assert_int_equal(send_frame(&a, (const uint8_t *)"second", 6), 0);
        size_t l2 = a.wire_len;
        memcpy(f2, a.wire, l2);
        a.wire_len = 0;
        int rc = 0, want = VV_ENOISE_DECRYPT;
        switch (damage) {
        case 0: /* tampered */
            f1[6] ^= 1;
            rc = vv_session_feed(b.s, f1, l1);
            break;
        case 1: /* truncated (the prefix agrees with the shorter body) */
            f1[3]--;
            rc = vv_session_feed(b.s, f1, l1 - 1);
            break;
        case 2: /* replayed */
            assert_int_equal(vv_session_feed(b.s, f1, l1), 0);
            rc = vv_session_feed(b.s, f1, l1);
            break;
        case 3: /* reordered */
            rc = vv_session_feed(b.s, f2, l2);
            break;
        default: /* too short to hold a tag and a byte */
            rc = vv_session_feed(b.s, (const uint8_t *)"\0\0\0\x10", 4);
            want = VV_EWIRE_MALFORMED;
            break;
        }
        assert_int_equal(rc, want);
        assert_int_equal(b.frames, damage == 2 ? 1 : 0);
        /* Dead: everything is refused, even the genuine next frame, and sealing. */
        assert_false(vv_session_established(b.s));
        assert_int_equal(vv_session_feed(b.s, f2, l2), VV_ESTATE);
        assert_int_equal(vv_session_seal(b.s, (const uint8_t *)"x", 1, f1, sizeof(f1)), VV_ESTATE);
        assert_int_equal(vv_session_start(b.s), VV_ESTATE);
        assert_int_equal(b.frames, damage == 2 ? 1 : 0);
        end_free(&a);
        end_free(&b);
    }
}

static void test_oversized_length_fails_before_buffering(void **state)
{
    (void)state;
    /* Handshake: 1025 is refused on its 4th byte, 1024 is accepted as a length. */
    struct end b;
    end_init(&b, 1, false, NULL, NULL);
    assert_int_equal(vv_session_feed(b.s, (const uint8_t *)"\x00\x00\x04", 3), 0);
    assert_int_equal(vv_session_buffered(b.s), 3);
    assert_int_equal(vv_session_feed(b.s, (const uint8_t *)"\x01", 1), VV_EWIRE_TOO_LARGE);
    assert_int_equal(vv_session_buffered(b.s), 0);
    end_free(&b);
    end_init(&b, 1, false, NULL, NULL);
    assert_int_equal(vv_session_feed(b.s, (const uint8_t *)"\x00\x00\x04\x00xy", 6), 0);
    assert_int_equal(vv_session_buffered(b.s), 6);
    end_free(&b);
    end_init(&b, 1, false, NULL, NULL);
    assert_int_equal(vv_session_feed(b.s, (const uint8_t *)"\xff\xff\xff\xff", 4),
                     VV_EWIRE_TOO_LARGE);
    end_free(&b);
    end_init(&b, 1, false, NULL, NULL);
    assert_int_equal(vv_session_feed(b.s, (const uint8_t *)"\0\0\0\0", 4), VV_ENOISE_HANDSHAKE);
    end_free(&b);

    /* Transport: max + 16 is a valid length, max + 17 is not. */
    struct end a;
    connect_pair(&a, &b, ALL_AT_ONCE);
    uint32_t n = VV_SESSION_MAX_FRAME_BYTES + 17;
    uint8_t hdr[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    assert_int_equal(vv_session_feed(b.s, hdr, 4), VV_EWIRE_TOO_LARGE);
    assert_int_equal(vv_session_buffered(b.s), 0);
    end_free(&a);
    end_free(&b);

    /* A valid large length costs nothing until the bytes come: the receive buffer grows with
     * what arrived (at most twice), not with what the prefix announced. */
    connect_pair(&a, &b, ALL_AT_ONCE);
    n = VV_SESSION_MAX_FRAME_BYTES + 16;
    uint8_t hdr2[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    assert_int_equal(vv_session_feed(b.s, hdr2, 4), 0);
    assert_int_equal(vv_session_buffered(b.s), 4);
    uint8_t *junk = vv_xcalloc(1, 100000);
    assert_int_equal(vv_session_feed(b.s, junk, 10), 0);
    assert_true(vv_session_buffered(b.s) <= VV_SESSION_INLINE_BYTES);
    assert_int_equal(vv_session_feed(b.s, junk, 100000), 0);
    assert_true(vv_session_buffered(b.s) >= 100010);
    assert_true(vv_session_buffered(b.s) <= 2 * 100010);
    vv_free(junk);
    end_free(&a);
    end_free(&b);
}

/* A large frame's buffer tracks the bytes received (never more than twice), is allocated
 * once when the frame arrives in two reads, and is gone once the frame was delivered. */
static void test_large_frame_buffer_follows_the_bytes_received(void **state)
{
    (void)state;
    struct end a, b;
    connect_pair(&a, &b, ALL_AT_ONCE);
    size_t sizes[] = {64 * 1024, VV_SESSION_MAX_FRAME_BYTES};
    for (size_t i = 0; i < VV_ARRAY_SIZE(sizes); i++) {
        uint8_t *p = pattern(sizes[i], 3);
        assert_int_equal(send_frame(&a, p, sizes[i]), 0);
        size_t total = a.wire_len, off = 0;
        while (off < total) {
            size_t n = VV_MIN(total - off, (size_t)64 * 1024); /* 64 KiB reads */
            assert_int_equal(vv_session_feed(b.s, a.wire + off, n), 0);
            off += n;
            if (off == total)
                break;
            size_t body = off - 4;
            assert_true(vv_session_buffered(b.s) >= body);
            assert_true(vv_session_buffered(b.s) <= 2 * body);
            if (i == 0) /* one allocation, the exact size */
                assert_int_equal(vv_session_buffered(b.s), sizes[i] + 16);
        }
        assert_frame(&b, (int)i + 1, p, sizes[i]);
        assert_int_equal(vv_session_buffered(b.s), 0);
        a.wire_len = 0;
        vv_free(p);
    }
    end_free(&a);
    end_free(&b);
}

static void test_abort_from_a_callback_stops_delivery(void **state)
{
    (void)state;
    struct end a, b;
    connect_pair(&a, &b, ALL_AT_ONCE);
    uint8_t *p = pattern(5000, 1);
    assert_int_equal(send_frame(&a, p, 5000), 0);
    assert_int_equal(send_frame(&a, p, 10), 0);
    b.abort_on_frame = true;
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), VV_ECLOSED);
    assert_int_equal(b.frames, 1);
    assert_false(vv_session_established(b.s));
    assert_int_equal(vv_session_feed(b.s, p, 1), VV_ECLOSED);
    assert_int_equal(vv_session_buffered(b.s), 0);
    vv_free(p);
    end_free(&a);
    end_free(&b);
}

/* The transport may close the connection from inside write (a failed socket write): the
 * session must not touch its handshake state afterwards, for each of the three messages. */
static void test_abort_from_the_write_callback(void **state)
{
    (void)state;
    for (int which = 1; which <= 3; which++) {
        struct end a, b;
        end_init(&a, 0, true, NULL, NULL);
        end_init(&b, 1, false, NULL, NULL);
        if (which == 2)
            b.abort_on_write = 1; /* message 2 */
        else
            a.abort_on_write = which == 1 ? 1 : 2; /* message 1, message 3 */
        int rc = vv_session_start(a.s);
        if (which == 1) {
            assert_int_equal(rc, VV_ECLOSED);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(pump(&a, &b, ALL_AT_ONCE), VV_ECLOSED);
        }
        struct end *victim = which == 2 ? &b : &a;
        assert_int_equal(victim->writes, 1 + (which == 3));
        assert_int_equal(victim->established_calls, 0);
        assert_false(vv_session_established(victim->s));
        assert_int_equal(vv_session_feed(victim->s, (const uint8_t *)"x", 1), VV_ECLOSED);
        end_free(&a);
        end_free(&b);
    }
}

static void test_feeding_from_a_callback_is_refused(void **state)
{
    (void)state;
    struct end a, b;
    connect_pair(&a, &b, ALL_AT_ONCE);
    b.feed_in_frame = true;
    assert_int_equal(send_frame(&a, (const uint8_t *)"one", 3), 0);
    assert_int_equal(send_frame(&a, (const uint8_t *)"two", 3), 0);
    assert_int_equal(deliver(&a, &b, ALL_AT_ONCE), 0);
    assert_int_equal(b.reenter_rc, VV_ESTATE);
    assert_frame(&b, 2, (const uint8_t *)"two", 3); /* the session carried on */
    end_free(&a);
    end_free(&b);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    for (size_t i = 0; i < VV_ARRAY_SIZE(ids); i++)
        make_identity(&ids[i]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_reports_verified_ids_and_hellos),
        cmocka_unit_test(test_handshake_messages_have_the_documented_sizes),
        cmocka_unit_test(test_established_session_is_small),
        cmocka_unit_test(test_wrong_expected_id_fails_and_never_establishes),
        cmocka_unit_test(test_signature_over_another_key_fails),
        cmocka_unit_test(test_malformed_identity_payloads_fail),
        cmocka_unit_test(test_nonempty_message_1_payload_fails),
        cmocka_unit_test(test_low_order_ephemeral_key_fails),
        cmocka_unit_test(test_hello_of_512_is_carried_513_rejected_at_new),
        cmocka_unit_test(test_spliced_third_party_messages_fail),
        cmocka_unit_test(test_damaged_handshake_messages_fail),
        cmocka_unit_test(test_initiator_must_start_first),
        cmocka_unit_test(test_frames_both_ways_at_every_size),
        cmocka_unit_test(test_seal_checks_its_arguments),
        cmocka_unit_test(test_many_messages_in_one_feed_arrive_in_order),
        cmocka_unit_test(test_damaged_transport_frames_fail_and_kill_the_session),
        cmocka_unit_test(test_oversized_length_fails_before_buffering),
        cmocka_unit_test(test_large_frame_buffer_follows_the_bytes_received),
        cmocka_unit_test(test_abort_from_a_callback_stops_delivery),
        cmocka_unit_test(test_abort_from_the_write_callback),
        cmocka_unit_test(test_feeding_from_a_callback_is_refused),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
