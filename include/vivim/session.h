/*
 * Secure sessions between peers: the Noise XX handshake (noise.h) bound to the nodes' Ed25519
 * identities, and the length-prefixed transport frames that follow it on a byte stream.
 *
 * Sans-I/O: the transport feeds the bytes it reads (any split) and gets back, through
 * callbacks, the bytes to write (handshake messages), the peer's verified identity once the
 * handshake completed, and each decrypted frame. Frames to send are sealed into the
 * caller's buffer. docs/protocol.md, "Secure channel handshake", is the normative
 * description of the bytes.
 *
 * Any error is final: the session is dead, every later call fails, and the caller closes
 * the connection. A session never frees itself; the caller frees it, but never from inside
 * one of its callbacks.
 */
#ifndef VIVIM_SESSION_H
#define VIVIM_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"
#include "vivim/identity.h"

#define VV_SESSION_MAX_HANDSHAKE_BYTES 1024 /* a handshake message after its length prefix */
#define VV_SESSION_MAX_HELLO_BYTES     512
#define VV_SESSION_MAX_FRAME_BYTES     VV_ENV_MAX_MESSAGE_BYTES /* plaintext of one frame */
#define VV_SESSION_OVERHEAD            20 /* 4-byte length + 16-byte tag per transport frame */
/* Received messages up to this size (after the length prefix) are held inside the session;
 * larger ones in a heap buffer that lives only while that message is incomplete. Every
 * handshake message fits, so a handshake never allocates a receive buffer. */
#define VV_SESSION_INLINE_BYTES VV_SESSION_MAX_HANDSHAKE_BYTES

/* What a node makes once at start-up: a Noise static key pair and the Ed25519 signature that
 * binds its public half to the node's identity. */
struct vv_session_keys {
    uint8_t noise_priv[32], noise_pub[32], sig[64];
    const struct vv_identity *id;
};
/* Makes a fresh Noise static key pair and signs it with id (borrowed: it must outlive k). */
void vv_session_keys_init(struct vv_session_keys *k, const struct vv_identity *id);
/* Wipes the private key. */
void vv_session_keys_clear(struct vv_session_keys *k);

struct vv_session_cbs {
    /* Bytes to put on the socket, in order (handshake messages, already length-prefixed).
     * data is borrowed for the call. */
    void (*write)(void *arg, const uint8_t *data, size_t len);
    /* The handshake completed: the peer's verified node ID and hello (borrowed). For the
     * initiator, message 3 was handed to write before this is called, so frames sealed from
     * here on follow it on the stream. */
    void (*established)(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES], const uint8_t pk[32],
                        const uint8_t *hello, size_t hello_len);
    /* One decrypted frame (borrowed for the call). */
    void (*frame)(void *arg, const uint8_t *data, size_t len);
};

struct vv_session;

/*
 * A session on one connection; initiator = the side that dialled. k is read during the call
 * only (the session copies what it needs). expected_id: the node ID an initiator dialled,
 * or NULL when it does not know (a responder must pass NULL). hello: 0..
 * VV_SESSION_MAX_HELLO_BYTES bytes sent to the peer inside the handshake, copied (may be
 * NULL when hello_len is 0). cbs: all three callbacks are required; copied.
 * Returns NULL when an argument is invalid (hello too long, expected_id on a responder, a
 * missing callback).
 */
struct vv_session *vv_session_new(const struct vv_session_keys *k, bool initiator,
                                  const uint8_t *expected_id, const uint8_t *hello,
                                  size_t hello_len, const struct vv_session_cbs *cbs, void *arg);
/* Wipes the keys and frees everything. NULL is fine. Never from inside a callback. */
void vv_session_free(struct vv_session *s);

/* Initiator: writes message 1 (via cbs->write). Responder: nothing to do (returns 0).
 * Returns VV_ESTATE when called twice or on a dead session. */
int vv_session_start(struct vv_session *s);

/*
 * Feeds bytes read from the socket (any split: byte by byte or many messages at once).
 * Calls write/established/frame as messages complete. Returns 0, or a negative error after
 * which the session is dead (the caller closes the connection):
 *   VV_EWIRE_TOO_LARGE   a length prefix over the limit (before anything of it is buffered)
 *   VV_EWIRE_MALFORMED   a transport message too short to hold a tag and one byte
 *   VV_ENOISE_DECRYPT    a handshake or transport message failed authentication (tampered,
 *                        replayed, reordered, truncated, from another session)
 *   VV_ENOISE_HANDSHAKE  a malformed handshake message or payload (a payload on message 1,
 *                        a missing identity, a hello over the limit, a low-order key)
 *   VV_ENOISE_SIGNATURE  the peer's Ed25519 signature does not cover its Noise static key
 *   VV_ENOISE_IDENTITY   the peer (validly signed) is not the node ID the initiator dialled
 *   VV_ECLOSED           a callback called vv_session_abort
 *   VV_ESTATE            the session is dead, an initiator was not started, or the call
 *                        was made from inside one of this session's callbacks (this last
 *                        case does not kill the session)
 * A callback may call vv_session_seal and vv_session_abort; it must not free the session
 * (the transport defers) nor feed it.
 */
int vv_session_feed(struct vv_session *s, const uint8_t *data, size_t len);

/* True after established was called and while the session is not dead. */
bool vv_session_established(const struct vv_session *s);

/*
 * Encrypts one frame (1..VV_SESSION_MAX_FRAME_BYTES bytes) into out: 4-byte big-endian
 * length, ciphertext, tag; out_cap >= len + VV_SESSION_OVERHEAD. frame may be out + 4 (the
 * frame is then encrypted in place, saving a copy); any other overlap is not allowed.
 * Returns 0, VV_ESTATE (not established / dead), VV_EINVAL (empty, too long, out too small),
 * or VV_ELIMIT after 2^64-1 frames (the sending key is spent; the session is then dead).
 */
int vv_session_seal(struct vv_session *s, const uint8_t *frame, size_t len, uint8_t *out,
                    size_t out_cap);

/* Memory held for a partial incoming message beyond the session's fixed size, in bytes: the
 * heap buffer of a large message being received (it grows with the bytes actually received,
 * to at most twice their number, so a bare length prefix costs nothing), else the bytes
 * waiting in the inline buffer. For memory accounting. */
size_t vv_session_buffered(const struct vv_session *s);

/* Kills the session (keys wiped, buffers freed) without freeing it: for a callback that
 * decided the connection must close, so that the feed in progress delivers nothing more and
 * returns VV_ECLOSED. */
void vv_session_abort(struct vv_session *s);

/* The session's fixed footprint in bytes once established (the struct), for the record. */
size_t vv_session_size(void);

#endif
