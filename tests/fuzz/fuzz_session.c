/*
 * Fuzz target: the bytes a hostile peer puts on a connection, fed to a secure session.
 *
 * Input: byte 0 picks the scenario, byte 1 how the rest is split into feeds (0: all at once,
 * else chunks of pseudo-random sizes seeded by it), the rest is the stream.
 *   0  a responder reads the stream (message 1, then message 3, ...)
 *   1  an initiator that sent message 1 reads the stream (message 2, ...)
 *   2  a responder that completed a real handshake reads the stream as transport frames
 *   3  as 2, but the stream is a list of frames (2-byte length, bytes) that the real peer
 *      seals; every frame must come out intact and in order
 * Each run checks what must always hold: a failure is final, nothing is buffered beyond
 * what arrived, the session never delivers a frame before or after it should.
 *
 * Seeds: with VV_FUZZ_SESSION_SEEDS=<dir> set, the target writes seed files made of real
 * handshake messages and frames into <dir> and exits (tests/fuzz/corpus/session/ holds them).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/session.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (line %d)\n", #c, __LINE__);                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static struct vv_identity id_a, id_b;
static struct vv_session_keys keys_a, keys_b;

struct end {
    struct vv_session *s;
    uint8_t *wire;
    size_t wire_len, wire_cap;
    int established;
    size_t frames;
    /* Scenario 3: the frames expected, in order. */
    const uint8_t *expect;
    size_t expect_len, expect_off;
    /* Once armed, the transport "closes the connection" (vv_session_abort) inside the
     * abort_at-th callback, as the TCP transport does on a failed write or a bad frame. */
    int armed, abort_at, calls, aborted;
};

static void maybe_abort(struct end *e)
{
    if (e->armed && e->abort_at && ++e->calls == e->abort_at) {
        vv_session_abort(e->s);
        e->aborted = 1;
    }
}

static void on_write(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;
    if (e->wire_len + len > e->wire_cap) {
        e->wire_cap = VV_MAX(2 * e->wire_cap, e->wire_len + len);
        e->wire = vv_xrealloc(e->wire, e->wire_cap);
    }
    memcpy(e->wire + e->wire_len, data, len);
    e->wire_len += len;
    maybe_abort(e);
}

static void on_established(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES], const uint8_t pk[32],
                           const uint8_t *hello, size_t hello_len)
{
    struct end *e = arg;
    CHECK(e->established == 0);
    CHECK(hello_len <= VV_SESSION_MAX_HELLO_BYTES);
    uint8_t id[VV_NODE_ID_BYTES];
    vv_identity_node_id(pk, id);
    CHECK(memcmp(id, node_id, VV_NODE_ID_BYTES) == 0);
    e->established = 1;
    maybe_abort(e);
}

static void on_frame(void *arg, const uint8_t *data, size_t len)
{
    struct end *e = arg;
    CHECK(e->established);
    CHECK(len >= 1 && len <= VV_SESSION_MAX_FRAME_BYTES);
    e->frames++;
    if (e->expect) { /* scenario 3: the next expected frame, byte for byte */
        CHECK(e->expect_off + 2 <= e->expect_len);
        size_t n = (size_t)e->expect[e->expect_off] << 8 | e->expect[e->expect_off + 1];
        CHECK(n == len && e->expect_off + 2 + n <= e->expect_len);
        CHECK(memcmp(e->expect + e->expect_off + 2, data, n) == 0);
        e->expect_off += 2 + n;
    }
    maybe_abort(e);
}

static const struct vv_session_cbs cbs = {on_write, on_established, on_frame};

static void setup_once(void)
{
    static int ready;
    if (ready)
        return;
    if (sodium_init() < 0)
        abort();
    /* Fixed identities, so the seeds written once stay meaningful (only the ephemeral keys
     * and the Noise static keys change per process). */
    uint8_t seed[32];
    memset(seed, 0xa1, sizeof(seed));
    crypto_sign_seed_keypair(id_a.public_key, id_a.secret_key, seed);
    memset(seed, 0xb2, sizeof(seed));
    crypto_sign_seed_keypair(id_b.public_key, id_b.secret_key, seed);
    vv_identity_node_id(id_a.public_key, id_a.node_id);
    vv_identity_node_id(id_b.public_key, id_b.node_id);
    vv_session_keys_init(&keys_a, &id_a);
    vv_session_keys_init(&keys_b, &id_b);
    ready = 1;
}

static void end_free(struct end *e)
{
    vv_session_free(e->s);
    vv_free(e->wire);
    memset(e, 0, sizeof(*e));
}

/* Feeds the stream in chunks; returns the first error, and checks the invariants. */
static int feed_all(struct end *e, const uint8_t *data, size_t len, uint8_t split)
{
    uint32_t x = split ? split * 2654435761u : 0;
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        size_t n = len - off;
        if (x) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            n = VV_MIN(n, (size_t)(x % 300) + 1);
        }
        rc = vv_session_feed(e->s, data + off, n);
        off += n;
        CHECK(!e->aborted || rc == VV_ECLOSED);
        /* Never more held than arrived, give or take the growth factor and inline buffer. */
        CHECK(vv_session_buffered(e->s) <= 2 * off + VV_SESSION_INLINE_BYTES);
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        size_t frames = e->frames;
        int est = e->established;
        CHECK(!vv_session_established(e->s));
        CHECK(vv_session_feed(e->s, data, len) != 0);
        uint8_t out[64];
        CHECK(vv_session_seal(e->s, (const uint8_t *)"x", 1, out, sizeof(out)) == VV_ESTATE);
        CHECK(vv_session_buffered(e->s) == 0);
        CHECK(e->frames == frames && e->established == est);
    }
    return rc;
}

/* A real handshake between a (initiator) and b (responder). */
static void connect_pair(struct end *a, struct end *b)
{
    a->s = vv_session_new(&keys_a, true, id_b.node_id, (const uint8_t *)"a", 1, &cbs, a);
    b->s = vv_session_new(&keys_b, false, NULL, (const uint8_t *)"bb", 2, &cbs, b);
    CHECK(a->s && b->s);
    CHECK(vv_session_start(a->s) == 0);
    for (int i = 0; i < 3; i++) {
        struct end *from = i % 2 ? b : a, *to = i % 2 ? a : b;
        CHECK(vv_session_feed(to->s, from->wire, from->wire_len) == 0);
        from->wire_len = 0;
    }
    CHECK(a->established && b->established);
}

/* Scenario 3: the peer seals each frame of the list; returns the sealed stream's length. */
static size_t seal_list(struct end *a, const uint8_t *list, size_t len, size_t *used)
{
    size_t off = 0;
    uint8_t out[65536 + VV_SESSION_OVERHEAD];
    while (off + 2 <= len) {
        size_t n = (size_t)list[off] << 8 | list[off + 1];
        if (n == 0 || off + 2 + n > len)
            break;
        CHECK(vv_session_seal(a->s, list + off + 2, n, out, sizeof(out)) == 0);
        on_write(a, out, n + VV_SESSION_OVERHEAD);
        off += 2 + n;
    }
    *used = off;
    return a->wire_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    if (size < 2)
        return 0;
    uint8_t mode = data[0] % 4, split = data[1];
    int abort_at = (data[0] >> 2) & 7; /* 0: never */
    data += 2;
    size -= 2;
    struct end a = {0}, b = {0};
    switch (mode) {
    case 0:
        b.s = vv_session_new(&keys_b, false, NULL, (const uint8_t *)"hello", 5, &cbs, &b);
        CHECK(b.s && vv_session_start(b.s) == 0);
        b.armed = 1;
        b.abort_at = abort_at;
        feed_all(&b, data, size, split);
        CHECK(!b.established); /* message 3 cannot be forged without the ephemeral key */
        break;
    case 1:
        a.s = vv_session_new(&keys_a, true, id_b.node_id, NULL, 0, &cbs, &a);
        CHECK(a.s && vv_session_start(a.s) == 0);
        CHECK(a.wire_len == 4 + 32);
        feed_all(&a, data, size, split);
        CHECK(!a.established);
        break;
    case 2:
        connect_pair(&a, &b);
        feed_all(&b, data, size, split);
        CHECK(b.frames == 0); /* no frame can be forged without the key */
        break;
    default: {
        connect_pair(&a, &b);
        size_t used;
        size_t n = seal_list(&a, data, size, &used);
        b.expect = data;
        b.expect_len = used;
        b.armed = 1;
        b.abort_at = abort_at;
        int rc = feed_all(&b, a.wire, n, split);
        if (abort_at && (size_t)abort_at <= b.frames) {
            CHECK(rc == VV_ECLOSED && b.frames == (size_t)abort_at); /* nothing after abort */
        } else {
            CHECK(rc == 0);
            CHECK(b.expect_off == used); /* every frame delivered */
        }
        break;
    }
    }
    end_free(&a);
    end_free(&b);
    return 0;
}

/* ---- seed generator ---------------------------------------------------------------------- */

static void write_seed(const char *dir, const char *name, uint8_t mode, uint8_t split,
                       const uint8_t *body, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    uint8_t head[2] = {mode, split};
    CHECK(fwrite(head, 1, 2, f) == 2);
    CHECK(len == 0 || fwrite(body, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

static void write_seeds(const char *dir)
{
    struct end a = {0}, b = {0};
    a.s = vv_session_new(&keys_a, true, NULL, (const uint8_t *)"seed hello a", 12, &cbs, &a);
    b.s = vv_session_new(&keys_b, false, NULL, (const uint8_t *)"seed hello b", 12, &cbs, &b);
    CHECK(vv_session_start(a.s) == 0);
    /* Message 1 (and later 1 + 3 together) for a responder. */
    uint8_t m1[64];
    size_t l1 = a.wire_len;
    memcpy(m1, a.wire, l1);
    write_seed(dir, "responder-msg1", 0, 0, m1, l1);
    write_seed(dir, "responder-msg1-split", 0, 7, m1, l1);
    CHECK(vv_session_feed(b.s, a.wire, a.wire_len) == 0);
    a.wire_len = 0;
    write_seed(dir, "initiator-msg2", 1, 0, b.wire, b.wire_len);
    write_seed(dir, "initiator-msg2-split", 1, 3, b.wire, b.wire_len);
    CHECK(vv_session_feed(a.s, b.wire, b.wire_len) == 0);
    b.wire_len = 0;
    uint8_t stream[2048];
    memcpy(stream, m1, l1);
    memcpy(stream + l1, a.wire, a.wire_len);
    write_seed(dir, "responder-msg1-msg3", 0, 0, stream, l1 + a.wire_len);
    CHECK(vv_session_feed(b.s, a.wire, a.wire_len) == 0);
    a.wire_len = 0;
    CHECK(a.established && b.established);
    /* Transport frames as the wire carries them. */
    uint8_t out[300];
    CHECK(vv_session_seal(a.s, (const uint8_t *)"\x00ping", 5, out, sizeof(out)) == 0);
    write_seed(dir, "transport-frame", 2, 0, out, 5 + VV_SESSION_OVERHEAD);
    uint8_t big_hdr[4 + 32] = {0x00, 0x10, 0x00, 0x10}; /* the largest valid length */
    write_seed(dir, "transport-max-length", 2, 0, big_hdr, sizeof(big_hdr));
    /* Frame lists for scenario 3. */
    const uint8_t list[] = {0, 1, 'x', 0, 5, 0, 'p', 'i', 'n', 'g', 0, 3, 1, 2, 3};
    write_seed(dir, "frames", 3, 0, list, sizeof(list));
    write_seed(dir, "frames-split", 3, 11, list, sizeof(list));
    write_seed(dir, "frames-abort-2nd", 3 | 2 << 2, 0, list, sizeof(list));
    write_seed(dir, "responder-msg1-abort", 0 | 1 << 2, 0, m1, l1);
    static uint8_t biglist[2 + 4000];
    biglist[0] = 4000 >> 8;
    biglist[1] = 4000 & 0xff;
    memset(biglist + 2, 0x5a, 4000);
    write_seed(dir, "frames-large", 3, 200, biglist, sizeof(biglist));
    end_free(&a);
    end_free(&b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("VV_FUZZ_SESSION_SEEDS");
    if (dir) {
        setup_once();
        write_seeds(dir);
        exit(0);
    }
    return 0;
}
