/*
 * Pubsub messages and the bodies of channel 2's frames (docs/protocol.md, "Pubsub messages,
 * channel 2"): the signed message, its digest and ID, and the three frame bodies
 * SUBSCRIPTIONS, MESSAGE and CONTROL, encoded and decoded strictly.
 *
 * Pure: no I/O, no state, no clock. Decoders take a body that vv_wire_decode already checked
 * against the frame limits and check every element's type and bound; what they return
 * points into the frame's zone (borrowed until vv_wire_frame_free), except the arrays of a
 * decoded CONTROL, which vv_pubsub_control_free releases.
 *
 * Signatures: a message is signed over a fixed 51-byte string, the domain and a BLAKE2b-256
 * digest of the topic, origin key, seqno and data (vv_pubsub_msg_digest). The digest is the
 * one pass over the data the event loop makes: its first VV_PUBSUB_ID_BYTES are the message
 * ID (so duplicates are dropped before any signature is checked), and the Ed25519 check
 * that the daemon runs on worker threads needs only the key, the digest and the signature
 * (128 bytes, no copy of the data). This module never verifies on the caller's behalf:
 * vv_pubsub_msg_verify is for the worker.
 */
#ifndef VIVIM_PUBSUB_WIRE_H
#define VIVIM_PUBSUB_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "vivim/identity.h"
#include "vivim/wire.h"

/* Message types on channel 2 (VV_CHANNEL_PUBSUB). */
#define VV_PUBSUB_TYPE_SUBSCRIPTIONS 0x0200
#define VV_PUBSUB_TYPE_MESSAGE       0x0201
#define VV_PUBSUB_TYPE_CONTROL       0x0202
/* A request (request layer) for the messages a node keeps of a topic (its retain):
 * body [topic (str), max (uint)]; the reply's body is an array of bin, each a whole MESSAGE
 * frame, oldest first (docs/protocol.md, "Pubsub messages, channel 2"). */
#define VV_PUBSUB_TYPE_HISTORY 0x0203
/* CHOKE: "send me only announcements (IHAVE) of this topic's large messages, not the
 * messages" (choke true) or "send me the messages again" (false). Its body has the shape of
 * SUBSCRIPTIONS, array of 1..256 [choke (bool), topic], and is encoded and decoded by
 * vv_pubsub_subs_encode and vv_pubsub_subs_decode (docs/protocol.md, "CHOKE"). */
#define VV_PUBSUB_TYPE_CHOKE 0x0204

/*
 * A message ID: the first 20 bytes (160 bits) of the message's BLAKE2b-256 digest. Finding
 * two messages with one ID takes about 2^80 hash evaluations and only ever hurts the origin
 * that signs both; matching someone else's message takes 2^160. 20 bytes rather than 32
 * save 12 bytes per ID in every IHAVE, IWANT and IDONTWANT (60 KB per full list of 5,000)
 * and in every seen-cache entry (2.4 million of them at 20,000 messages/s kept 2 minutes:
 * 29 MB). See docs/pubsub.md.
 */
#define VV_PUBSUB_ID_BYTES     20
#define VV_PUBSUB_DIGEST_BYTES 32
#define VV_PUBSUB_SIG_BYTES    64
/* The domain string that opens what is signed (19 ASCII bytes, no terminator). */
#define VV_PUBSUB_SIG_DOMAIN       "vivim-pubsub-msg-v1"
#define VV_PUBSUB_SIG_DOMAIN_BYTES (sizeof(VV_PUBSUB_SIG_DOMAIN) - 1)
/* What Ed25519 signs: the domain, then the digest. */
#define VV_PUBSUB_SIGNED_BYTES (VV_PUBSUB_SIG_DOMAIN_BYTES + VV_PUBSUB_DIGEST_BYTES)

/* Topics are 1..256 bytes of text (the wire's text check: UTF-8, no control character). */
#define VV_PUBSUB_MAX_TOPIC_BYTES 256
/* Data of one message, whatever a topic allows: 1 MiB less 4 KiB, which leaves room for the
 * frame header and the other fields, so that every message fits in one frame. */
#define VV_PUBSUB_MAX_DATA_BYTES (1048576 - 4096)

/* Bounds of frame bodies; a body over any of them is malformed. */
#define VV_PUBSUB_MAX_SUBS_PER_FRAME 256 /* entries of one SUBSCRIPTIONS */
#define VV_PUBSUB_MAX_IHAVE_TOPICS   64  /* entries of the ihave list */
#define VV_PUBSUB_MAX_CONTROL_IDS                                                                  \
    5000 /* IDs of all ihave entries together; of iwant; of idontwant */
#define VV_PUBSUB_MAX_GRAFTS        64    /* topics of the graft list */
#define VV_PUBSUB_MAX_PRUNES        64    /* entries of the prune list */
#define VV_PUBSUB_MAX_PX            16    /* peers offered by one prune entry */
#define VV_PUBSUB_MAX_ADDRESS_BYTES 127   /* a peer-exchange address, as the HELLO's */
#define VV_PUBSUB_MAX_BACKOFF_S     86400 /* a prune's backoff, seconds */

/*
 * A message. Decoded ones point into a frame's zone; the caller's own point wherever it
 * likes. from is SHA-256(origin), checked by the decoder; topic is not NUL-terminated.
 */
struct vv_pubsub_msg {
    const uint8_t *from;   /* VV_NODE_ID_BYTES */
    const uint8_t *origin; /* VV_ED25519_PK_BYTES */
    uint64_t seqno;
    const char *topic;
    size_t topic_len; /* 1..VV_PUBSUB_MAX_TOPIC_BYTES */
    const uint8_t *data;
    size_t data_len;    /* 0..VV_PUBSUB_MAX_DATA_BYTES */
    const uint8_t *sig; /* VV_PUBSUB_SIG_BYTES */
};

/*
 * The digest: BLAKE2b-256 of u16be(topic_len) ‖ topic ‖ origin ‖ u64be(seqno) ‖ data. Its
 * first VV_PUBSUB_ID_BYTES are the message ID. Cost: one pass over the data.
 */
void vv_pubsub_msg_digest(const struct vv_pubsub_msg *m, uint8_t digest[VV_PUBSUB_DIGEST_BYTES]);
/* The message ID alone (the digest's prefix). */
void vv_pubsub_msg_id(const struct vv_pubsub_msg *m, uint8_t id[VV_PUBSUB_ID_BYTES]);
/* The bytes Ed25519 signs: the domain, then the digest. */
void vv_pubsub_signed_bytes(const uint8_t digest[VV_PUBSUB_DIGEST_BYTES],
                            uint8_t out[VV_PUBSUB_SIGNED_BYTES]);
/* Signs m with the origin's secret key (libsodium layout) into sig_out; m->sig is not read. */
void vv_pubsub_msg_sign(const struct vv_pubsub_msg *m, const uint8_t sk[VV_ED25519_SK_BYTES],
                        uint8_t sig_out[VV_PUBSUB_SIG_BYTES]);
/*
 * Checks a signature over a digest: for the daemon's worker threads (thread-safe, touches
 * nothing shared). Returns 0 or VV_EPUBSUB_SIGNATURE.
 */
int vv_pubsub_verify_digest(const uint8_t origin[VV_ED25519_PK_BYTES],
                            const uint8_t digest[VV_PUBSUB_DIGEST_BYTES],
                            const uint8_t sig[VV_PUBSUB_SIG_BYTES]);

/* A topic's text check: 1..VV_PUBSUB_MAX_TOPIC_BYTES of valid UTF-8 without controls. */
bool vv_pubsub_topic_ok(const char *topic, size_t len);

/* ---- frame bodies ----------------------------------------------------------------------- */

struct vv_pubsub_sub {
    bool subscribe;
    const char *topic;
    size_t topic_len;
};

struct vv_pubsub_ihave {
    const char *topic;
    size_t topic_len;
    const uint8_t *const *ids; /* n_ids pointers to VV_PUBSUB_ID_BYTES each */
    uint32_t n_ids;
};

struct vv_pubsub_px {
    const uint8_t *peer; /* VV_NODE_ID_BYTES */
    const char *address; /* NULL when the entry gives none */
    size_t address_len;
};

struct vv_pubsub_prune {
    const char *topic;
    size_t topic_len;
    uint32_t backoff_s; /* 0..VV_PUBSUB_MAX_BACKOFF_S; 0: the receiver's default */
    const struct vv_pubsub_px *px;
    uint32_t n_px;
};

struct vv_pubsub_topic_ref {
    const char *topic;
    size_t topic_len;
};

/*
 * A CONTROL body. Filled by the caller to encode; by vv_pubsub_control_decode, which
 * allocates the arrays (one block: vv_pubsub_control_free), their contents pointing into the
 * frame's zone.
 */
struct vv_pubsub_control {
    const struct vv_pubsub_ihave *ihave;
    uint32_t n_ihave;
    const uint8_t *const *iwant;
    uint32_t n_iwant;
    const struct vv_pubsub_topic_ref *graft;
    uint32_t n_graft;
    const struct vv_pubsub_prune *prune;
    uint32_t n_prune;
    const uint8_t *const *idontwant;
    uint32_t n_idontwant;
    void *block_; /* what the decoder allocated */
};

/*
 * Encoders: pack exactly one body with pk (after vv_wire_begin). Return 0, or VV_EINVAL when
 * the value breaks a bound above (nothing is packed then), so a sender cannot build a body
 * its peers must refuse.
 */
int vv_pubsub_subs_encode(msgpack_packer *pk, const struct vv_pubsub_sub *subs, uint32_t n);
int vv_pubsub_msg_encode(msgpack_packer *pk, const struct vv_pubsub_msg *m);
int vv_pubsub_control_encode(msgpack_packer *pk, const struct vv_pubsub_control *c);

/*
 * Decoders of a checked frame's body. Each returns 0 or VV_EPUBSUB_MALFORMED (shape, type or
 * bound), and the message decoder VV_EPUBSUB_ORIGIN when from is not SHA-256(origin). The
 * subs decoder writes at most cap entries into out (cap >= VV_PUBSUB_MAX_SUBS_PER_FRAME takes
 * any valid body). On error nothing needs freeing.
 */
int vv_pubsub_subs_decode(const msgpack_object *body, struct vv_pubsub_sub *out, uint32_t cap,
                          uint32_t *n);
int vv_pubsub_msg_decode(const msgpack_object *body, struct vv_pubsub_msg *out);
int vv_pubsub_control_decode(const msgpack_object *body, struct vv_pubsub_control *out);
/* Frees what vv_pubsub_control_decode allocated; c may be NULL; safe twice. */
void vv_pubsub_control_free(struct vv_pubsub_control *c);

#endif
