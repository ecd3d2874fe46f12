/*
 * Identity-bound secure sessions (see session.h and docs/protocol.md, "Secure channel
 * handshake"): Noise XX with the prologue "vivim/1", whose second and third messages carry
 * the sender's Ed25519 public key, its signature over the sender's Noise static key, and an
 * opaque hello; then ChaCha20-Poly1305 transport frames. Every message on the stream is a
 * 4-byte big-endian length and that many bytes.
 *
 * A session owns its receive buffers and, until the handshake completes, a separately
 * allocated handshake state (the Noise state, our identity payload and our hello) that is
 * wiped and freed at establishment, so an established idle session is just the struct:
 * two cipher states, the stream reassembly state and a small inline buffer. It never does
 * I/O and never keeps anything about the peer before the peer's signature verified.
 */
#include <sodium.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/noise.h"
#include "vivim/session.h"

#define PROLOGUE            "vivim/1"
#define SIG_CONTEXT         "vivim noise static key v1:" /* 26 bytes, no terminator signed */
#define SIG_CONTEXT_BYTES   (sizeof(SIG_CONTEXT) - 1)
#define ID_PAYLOAD_BYTES    (VV_ED25519_PK_BYTES + 64) /* Ed25519 pk || signature */
#define LEN_BYTES           4
#define MAX_TRANSPORT_BYTES (VV_SESSION_MAX_FRAME_BYTES + VV_NOISE_TAG_BYTES)

_Static_assert(SIG_CONTEXT_BYTES == 26, "the signed context string is 26 bytes");
_Static_assert(VV_SESSION_INLINE_BYTES >= VV_SESSION_MAX_HANDSHAKE_BYTES,
               "handshake messages are received inline");
/* The largest message 2 (e, encrypted s, payload with a full hello) fits the limit. */
_Static_assert(32 + 48 + ID_PAYLOAD_BYTES + VV_SESSION_MAX_HELLO_BYTES + VV_NOISE_TAG_BYTES <=
                   VV_SESSION_MAX_HANDSHAKE_BYTES,
               "a handshake message with the largest hello fits the handshake limit");

enum phase { PHASE_HANDSHAKE, PHASE_OPEN, PHASE_DEAD };

/* Lives only during the handshake. */
struct handshake {
    struct vv_noise_hs noise;
    uint8_t expected_id[VV_NODE_ID_BYTES];
    bool has_expected;
    bool started; /* initiator: message 1 written */
    uint8_t id_payload[ID_PAYLOAD_BYTES];
    size_t hello_len;
    uint8_t hello[]; /* hello_len bytes */
};

struct vv_session {
    struct vv_session_cbs cbs;
    void *arg;
    enum phase phase;
    bool initiator;
    bool in_callback;                  /* a callback is running: feeding now would reenter */
    bool aborted;                      /* vv_session_abort was called (feed returns VV_ECLOSED) */
    struct handshake *hs;              /* PHASE_HANDSHAKE only */
    struct vv_noise_cipher send, recv; /* PHASE_OPEN only */

    /* Stream reassembly: the length prefix, then the message body. */
    uint8_t len_buf[LEN_BYTES];
    size_t len_have; /* 0..4 bytes of the prefix received */
    size_t msg_len;  /* the body's length, valid when len_have == 4 */
    size_t msg_have; /* body bytes received */
    uint8_t *big;    /* heap buffer for a body over VV_SESSION_INLINE_BYTES, or NULL */
    size_t big_cap;  /* its size; grows with msg_have up to msg_len */
    uint8_t inline_buf[VV_SESSION_INLINE_BYTES];
};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ---- keys ------------------------------------------------------------------------------- */

static void signed_message(const uint8_t noise_pub[32], uint8_t out[SIG_CONTEXT_BYTES + 32])
{
    memcpy(out, SIG_CONTEXT, SIG_CONTEXT_BYTES);
    memcpy(out + SIG_CONTEXT_BYTES, noise_pub, 32);
}

void vv_session_keys_init(struct vv_session_keys *k, const struct vv_identity *id)
{
    uint8_t msg[SIG_CONTEXT_BYTES + 32];
    vv_noise_keypair(k->noise_priv, k->noise_pub);
    signed_message(k->noise_pub, msg);
    crypto_sign_detached(k->sig, NULL, msg, sizeof(msg), id->secret_key);
    k->id = id;
}

void vv_session_keys_clear(struct vv_session_keys *k)
{
    sodium_memzero(k, sizeof(*k));
}

/* ---- life cycle ------------------------------------------------------------------------- */

static void free_handshake(struct vv_session *s)
{
    if (s->hs == NULL)
        return;
    sodium_memzero(s->hs, sizeof(*s->hs) + s->hs->hello_len);
    vv_free(s->hs);
    s->hs = NULL;
}

static void free_big(struct vv_session *s)
{
    vv_free(s->big);
    s->big = NULL;
    s->big_cap = 0;
}

/* The session is dead for good: nothing secret or large stays behind. */
static int die(struct vv_session *s, int rc)
{
    s->phase = PHASE_DEAD;
    free_handshake(s);
    free_big(s);
    sodium_memzero(&s->send, sizeof(s->send));
    sodium_memzero(&s->recv, sizeof(s->recv));
    s->len_have = s->msg_have = s->msg_len = 0;
    return rc;
}

struct vv_session *vv_session_new(const struct vv_session_keys *k, bool initiator,
                                  const uint8_t *expected_id, const uint8_t *hello,
                                  size_t hello_len, const struct vv_session_cbs *cbs, void *arg)
{
    if (k == NULL || k->id == NULL || cbs == NULL || cbs->write == NULL ||
        cbs->established == NULL || cbs->frame == NULL || hello_len > VV_SESSION_MAX_HELLO_BYTES ||
        (hello == NULL && hello_len > 0) || (!initiator && expected_id != NULL))
        return NULL;
    struct vv_session *s = vv_xcalloc(1, sizeof(*s));
    s->cbs = *cbs;
    s->arg = arg;
    s->initiator = initiator;
    s->phase = PHASE_HANDSHAKE;
    struct handshake *hs = vv_xcalloc(1, sizeof(*hs) + hello_len);
    s->hs = hs;
    int rc = vv_noise_init(&hs->noise, VV_NOISE_XX, initiator, (const uint8_t *)PROLOGUE,
                           strlen(PROLOGUE), k->noise_priv, NULL);
    if (rc != 0) {
        vv_session_free(s);
        return NULL;
    }
    if (expected_id) {
        memcpy(hs->expected_id, expected_id, VV_NODE_ID_BYTES);
        hs->has_expected = true;
    }
    memcpy(hs->id_payload, k->id->public_key, VV_ED25519_PK_BYTES);
    memcpy(hs->id_payload + VV_ED25519_PK_BYTES, k->sig, 64);
    hs->hello_len = hello_len;
    if (hello_len)
        memcpy(hs->hello, hello, hello_len);
    return s;
}

void vv_session_free(struct vv_session *s)
{
    if (s == NULL)
        return;
    die(s, 0);
    sodium_memzero(s, sizeof(*s));
    vv_free(s);
}

void vv_session_abort(struct vv_session *s)
{
    s->aborted = true;
    die(s, 0);
}

size_t vv_session_size(void)
{
    return sizeof(struct vv_session);
}

bool vv_session_established(const struct vv_session *s)
{
    return s->phase == PHASE_OPEN;
}

size_t vv_session_buffered(const struct vv_session *s)
{
    if (s->big)
        return s->big_cap;
    return s->len_have + s->msg_have;
}

/* ---- handshake -------------------------------------------------------------------------- */

/* Writes our next handshake message (payload: nothing for message 1, else the identity
 * payload and our hello) and hands it, length-prefixed, to the write callback. */
static int write_handshake(struct vv_session *s)
{
    struct handshake *hs = s->hs;
    uint8_t payload[ID_PAYLOAD_BYTES + VV_SESSION_MAX_HELLO_BYTES];
    size_t plen = 0;
    if (hs->noise.step > 0) {
        memcpy(payload, hs->id_payload, ID_PAYLOAD_BYTES);
        if (hs->hello_len)
            memcpy(payload + ID_PAYLOAD_BYTES, hs->hello, hs->hello_len);
        plen = ID_PAYLOAD_BYTES + hs->hello_len;
    }
    uint8_t out[LEN_BYTES + VV_SESSION_MAX_HANDSHAKE_BYTES];
    size_t n = 0;
    int rc = vv_noise_write(&hs->noise, payload, plen, out + LEN_BYTES,
                            VV_SESSION_MAX_HANDSHAKE_BYTES, &n);
    if (rc != 0)
        return VV_ENOISE_HANDSHAKE; /* a low-order key from the peer; sizes are static */
    put_be32(out, (uint32_t)n);
    s->in_callback = true;
    s->cbs.write(s->arg, out, LEN_BYTES + n);
    s->in_callback = false;
    /* The transport may abort from write (the socket failed): the handshake state is gone. */
    return s->phase == PHASE_DEAD ? VV_ECLOSED : 0;
}

int vv_session_start(struct vv_session *s)
{
    if (s->phase != PHASE_HANDSHAKE || s->in_callback)
        return VV_ESTATE;
    if (!s->initiator)
        return 0;
    if (s->hs->started)
        return VV_ESTATE;
    s->hs->started = true;
    int rc = write_handshake(s);
    return rc ? die(s, rc) : 0;
}

/* Checks the identity payload of message 2 or 3 against the Noise static key the same
 * message delivered. On success the peer's node ID goes to node_id. */
static int verify_identity(struct vv_session *s, const uint8_t *payload, size_t plen,
                           uint8_t node_id[VV_NODE_ID_BYTES])
{
    if (plen < ID_PAYLOAD_BYTES || plen - ID_PAYLOAD_BYTES > VV_SESSION_MAX_HELLO_BYTES)
        return VV_ENOISE_HANDSHAKE;
    const uint8_t *rs = vv_noise_remote_static(&s->hs->noise);
    if (rs == NULL)
        return VV_ENOISE_HANDSHAKE; /* cannot happen after messages 2 and 3 of XX */
    uint8_t msg[SIG_CONTEXT_BYTES + 32];
    signed_message(rs, msg);
    if (crypto_sign_verify_detached(payload + VV_ED25519_PK_BYTES, msg, sizeof(msg), payload) != 0)
        return VV_ENOISE_SIGNATURE;
    vv_identity_node_id(payload, node_id);
    if (s->hs->has_expected && sodium_memcmp(node_id, s->hs->expected_id, VV_NODE_ID_BYTES) != 0)
        return VV_ENOISE_IDENTITY;
    return 0;
}

static int on_handshake_message(struct vv_session *s, const uint8_t *msg, size_t len)
{
    struct handshake *hs = s->hs;
    if (s->initiator && !hs->started)
        return VV_ESTATE; /* the peer spoke first, or start was not called */
    uint8_t payload[VV_SESSION_MAX_HANDSHAKE_BYTES];
    size_t plen = 0;
    int rc = vv_noise_read(&hs->noise, msg, len, payload, sizeof(payload), &plen);
    if (rc == VV_ENOISE_DECRYPT)
        return rc;
    if (rc != 0)
        return VV_ENOISE_HANDSHAKE; /* truncated, out of turn, low-order key */
    if (!s->initiator && hs->noise.step == 1) {
        /* Message 1 carries only the initiator's ephemeral key. */
        if (plen != 0)
            return VV_ENOISE_HANDSHAKE;
        return write_handshake(s);
    }
    uint8_t node_id[VV_NODE_ID_BYTES];
    if ((rc = verify_identity(s, payload, plen, node_id)) != 0)
        return rc;
    if (s->initiator && (rc = write_handshake(s)) != 0) /* message 3 */
        return rc;
    if (!vv_noise_done(&hs->noise))
        return VV_ENOISE_HANDSHAKE;
    vv_noise_split(&hs->noise, &s->send, &s->recv);
    free_handshake(s);
    s->phase = PHASE_OPEN;
    uint8_t pk[VV_ED25519_PK_BYTES];
    memcpy(pk, payload, sizeof(pk));
    s->in_callback = true;
    s->cbs.established(s->arg, node_id, pk, payload + ID_PAYLOAD_BYTES, plen - ID_PAYLOAD_BYTES);
    s->in_callback = false;
    return 0;
}

/* ---- transport -------------------------------------------------------------------------- */

static int on_transport_message(struct vv_session *s, uint8_t *msg, size_t len)
{
    /* In place: the plaintext overwrites the ciphertext. */
    int rc = vv_noise_decrypt(&s->recv, NULL, 0, msg, len, msg);
    if (rc != 0)
        return VV_ENOISE_DECRYPT;
    s->in_callback = true;
    s->cbs.frame(s->arg, msg, len - VV_NOISE_TAG_BYTES);
    s->in_callback = false;
    return 0;
}

int vv_session_seal(struct vv_session *s, const uint8_t *frame, size_t len, uint8_t *out,
                    size_t out_cap)
{
    if (s->phase != PHASE_OPEN)
        return VV_ESTATE;
    if (frame == NULL || out == NULL || len == 0 || len > VV_SESSION_MAX_FRAME_BYTES ||
        out_cap < len + VV_SESSION_OVERHEAD)
        return VV_EINVAL;
    /* vv_noise_encrypt allows out == in, so frame may sit right after the prefix. */
    int rc = vv_noise_encrypt(&s->send, NULL, 0, frame, len, out + LEN_BYTES);
    if (rc != 0)
        return die(s, rc); /* 2^64-1 frames: the key is spent */
    put_be32(out, (uint32_t)(len + VV_NOISE_TAG_BYTES));
    return 0;
}

/* ---- the byte stream -------------------------------------------------------------------- */

/* Decides on a message from its length prefix alone, before any of its body is buffered. */
static int check_length(const struct vv_session *s, size_t n)
{
    if (s->phase == PHASE_HANDSHAKE) {
        if (n > VV_SESSION_MAX_HANDSHAKE_BYTES)
            return VV_EWIRE_TOO_LARGE;
        if (n == 0)
            return VV_ENOISE_HANDSHAKE;
        return 0;
    }
    if (n > MAX_TRANSPORT_BYTES)
        return VV_EWIRE_TOO_LARGE;
    if (n <= VV_NOISE_TAG_BYTES)
        return VV_EWIRE_MALFORMED; /* no room for one byte of plaintext */
    return 0;
}

/* Room for `want` body bytes in total. Bodies that fit inline use the inline buffer; larger
 * ones a heap buffer of twice the bytes received so far, capped at the body's length, so
 * memory follows what the peer actually sent rather than what its length prefix claimed
 * (at most 2x), and a body that arrives in two reads (a 64 KiB frame through a 64 KiB read
 * buffer) is allocated once, at its exact size, without a copy on growth. */
static uint8_t *body_buffer(struct vv_session *s, size_t want)
{
    if (s->msg_len <= VV_SESSION_INLINE_BYTES)
        return s->inline_buf;
    if (want <= VV_SESSION_INLINE_BYTES && s->big == NULL)
        return s->inline_buf;
    if (want > s->big_cap) {
        /* want > VV_SESSION_INLINE_BYTES and want > big_cap here, so cap <= 2 * want. */
        size_t cap = VV_MIN(2 * want, s->msg_len);
        bool first = s->big == NULL;
        s->big = vv_xrealloc(s->big, cap);
        if (first && s->msg_have)
            memcpy(s->big, s->inline_buf, s->msg_have);
        s->big_cap = cap;
    }
    return s->big;
}

int vv_session_feed(struct vv_session *s, const uint8_t *data, size_t len)
{
    if (s->in_callback)
        return VV_ESTATE; /* reentry from a callback; the session itself is fine */
    if (s->phase == PHASE_DEAD)
        return s->aborted ? VV_ECLOSED : VV_ESTATE;
    if (data == NULL && len > 0)
        return die(s, VV_EINVAL);
    if (s->phase == PHASE_HANDSHAKE && s->initiator && !s->hs->started && len > 0)
        return die(s, VV_ESTATE);
    while (len > 0) {
        if (s->len_have < LEN_BYTES) {
            size_t take = VV_MIN(LEN_BYTES - s->len_have, len);
            memcpy(s->len_buf + s->len_have, data, take);
            s->len_have += take;
            data += take;
            len -= take;
            if (s->len_have < LEN_BYTES)
                break;
            s->msg_len = get_be32(s->len_buf);
            s->msg_have = 0;
            int rc = check_length(s, s->msg_len);
            if (rc != 0)
                return die(s, rc);
            if (len == 0)
                break;
        }
        size_t take = VV_MIN(s->msg_len - s->msg_have, len);
        uint8_t *buf = body_buffer(s, s->msg_have + take);
        memcpy(buf + s->msg_have, data, take);
        s->msg_have += take;
        data += take;
        len -= take;
        if (s->msg_have < s->msg_len)
            continue;
        /* A whole message. Reset the reassembly state first: the callbacks it triggers may
         * look at vv_session_buffered. */
        size_t n = s->msg_len;
        s->len_have = s->msg_have = s->msg_len = 0;
        int rc = s->phase == PHASE_HANDSHAKE ? on_handshake_message(s, buf, n)
                                             : on_transport_message(s, buf, n);
        if (s->phase == PHASE_DEAD) /* killed from a callback (abort, spent key); buf is gone */
            return s->aborted ? VV_ECLOSED : VV_ESTATE;
        if (buf == s->big)
            free_big(s);
        if (rc != 0)
            return die(s, rc);
    }
    return 0;
}
