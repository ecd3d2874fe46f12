/*
 * The DHT's protocol core, part 3: the messages of channel 1 (docs/protocol.md, "DHT
 * messages, channel 1", is the normative description; this header is its C form).
 *
 * Requests are frames of types 0x0100..0x0105 with a request id; answers are the request
 * layer's reply (0x01ff), whose body's shape follows from the request's type, or its error
 * answer (0x01fe) with the codes below. Everything fits one datagram of
 * VV_DHT_DATAGRAM_MAX_BYTES: encoders write into the caller's buffer and cut contact lists to
 * the budget the caller gives (vv_dht_reply_budget), and a value too large for a datagram is
 * left out and counted (`omitted`), telling the requester to fetch it over a connection.
 *
 * Decoding is strict (exact element counts and types, bounded lengths, wire.h's accessors)
 * and allocates nothing: decoded structs point into the frame's zone and live as long as the
 * frame. Nothing here does I/O.
 */
#ifndef VIVIM_DHT_MSG_H
#define VIVIM_DHT_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "vivim/dht_core.h"
#include "vivim/dht_store.h"
#include "vivim/wire.h"

/* The largest frame in one datagram: 1,200 bytes of UDP payload (fits any path MTU of 1,280
 * for IPv6 with its headers) less 36 bytes the datagram layer may spend on its own header. */
#define VV_DHT_DATAGRAM_MAX_BYTES 1164
#define VV_DHT_PAD_MAX_BYTES      VV_DHT_DATAGRAM_MAX_BYTES
#define VV_DHT_NONCE_BYTES        32
#define VV_DHT_MAX_NODES          VV_DHT_K /* contacts in one answer */
#define VV_DHT_MAX_VALUES         16       /* values in one GET_VALUE answer */
#define VV_DHT_PING_DOMAIN        "vivim-dht-ping-v1"
#define VV_DHT_PING_DOMAIN_LEN    17
#define VV_DHT_PING_SIGNED_BYTES  (VV_DHT_PING_DOMAIN_LEN + VV_DHT_NONCE_BYTES + VV_DHT_ID_BYTES)
/* The largest PONG frame (a request id of 9 bytes). A PING to a node that has not verified
 * us is answered only if it is at least half that: pad it to VV_DHT_PING_MIN_BYTES. */
#define VV_DHT_PONG_MAX_BYTES 136
#define VV_DHT_PING_MIN_BYTES (VV_DHT_PONG_MAX_BYTES / 2)

enum vv_dht_msg_type {
    VV_DHT_MSG_PING = 0x0100,
    VV_DHT_MSG_FIND_NODE = 0x0101,
    VV_DHT_MSG_GET_VALUE = 0x0102,
    VV_DHT_MSG_PUT_VALUE = 0x0103,
    VV_DHT_MSG_GET_PROVIDERS = 0x0104,
    VV_DHT_MSG_ADD_PROVIDER = 0x0105,
    VV_DHT_MSG_REPLY = 0x01ff, /* the request layer's answer types on channel 1 */
    VV_DHT_MSG_ERROR = 0x01fe,
};

/* Error answer codes of channel 1 (codes 1..255 are the request layer's). */
enum vv_dht_answer_code {
    VV_DHT_ANSWER_TOKEN = 256,     /* token missing, wrong or expired: GET again */
    VV_DHT_ANSWER_STALE_SEQ = 257, /* a value with this seq or a higher one is stored */
    VV_DHT_ANSWER_TOO_LARGE = 258, /* over the limits, or over a datagram: use a connection */
    VV_DHT_ANSWER_EXPIRY = 259,    /* expired or too far ahead */
    VV_DHT_ANSWER_QUOTA = 260,     /* the requester's source is over its quota */
    VV_DHT_ANSWER_FULL = 261,      /* the store is full */
    VV_DHT_ANSWER_SIGNATURE = 262, /* the value's signature does not verify */
    VV_DHT_ANSWER_KEY = 263,       /* the record does not belong to the key */
};
/* The answer code for one of the store's errors (VV_EDHT_*), or 5 (internal). */
uint16_t vv_dht_answer_code(int err);

/*
 * The most bytes an answer to a request of req_len bytes may take: VV_DHT_DATAGRAM_MAX_BYTES
 * to a verified address, else twice the request (no amplification: a spoofed source gets at
 * most two bytes for each byte the spoofer sent). A client that wants a full answer from a
 * node that does not know it yet pads its request (the `pad` element).
 */
size_t vv_dht_reply_budget(size_t req_len, bool verified);

/* ---- requests ------------------------------------------------------------------------- */

struct vv_dht_request {
    uint16_t type; /* enum vv_dht_msg_type, one of the six requests */
    /* PING: the nonce; FIND_NODE: the target; the others: the key. */
    uint8_t target[VV_DHT_ID_BYTES];
    struct vv_dht_value value;              /* PUT_VALUE (value.key == target) */
    struct vv_dht_content_record record;    /* ADD_PROVIDER */
    uint8_t token[VV_DHT_TOKEN_BYTES];      /* PUT_VALUE, ADD_PROVIDER */
    uint8_t provider_pk[VV_DHT_PK_BYTES];   /* ADD_PROVIDER: the requester's key */
    uint8_t provider_sig[VV_DHT_SIG_BYTES]; /* ADD_PROVIDER: vv_dht_provider_sign */
    const uint8_t *pad;                     /* decoded: the pad's bytes, or NULL */
    size_t pad_len;                         /* 0: no pad element */
};

/*
 * Writes the frame [1, 0, type, request_id, body] into out (cap bytes); *len receives its
 * length. An encoder writes zeros as pad (pad_len bytes; pad is ignored). Returns 0,
 * VV_EINVAL (unknown type, request_id 0, a field over its bound) or VV_ELIMIT (cap too small).
 */
int vv_dht_request_encode(const struct vv_dht_request *rq, uint64_t request_id, uint8_t *out,
                          size_t cap, size_t *len);
/* Decodes the body of a request of the given type. Returns 0, VV_EDHT_MALFORMED, or
 * VV_EWIRE_UNKNOWN_TYPE for a type that is not a DHT request. */
int vv_dht_request_decode(uint16_t type, const msgpack_object *body, struct vv_dht_request *out);

/* ---- answers -------------------------------------------------------------------------- */

struct vv_dht_reply {
    uint16_t type; /* the request type this answers */
    /* PING */
    uint8_t pk[VV_DHT_PK_BYTES];
    uint8_t sig[VV_DHT_SIG_BYTES];
    struct vv_dht_addr observed; /* the requester's address as the answering node saw it */
    /* FIND_NODE, GET_VALUE, GET_PROVIDERS: nodes closer to the target, nearest first */
    struct vv_dht_contact nodes[VV_DHT_MAX_NODES];
    size_t n_nodes;
    /* GET_VALUE, GET_PROVIDERS: a token for a later PUT_VALUE / ADD_PROVIDER */
    uint8_t token[VV_DHT_TOKEN_BYTES];
    /* GET_VALUE: the values (their key is the request's) and how many were left out */
    struct vv_dht_value values[VV_DHT_MAX_VALUES];
    size_t n_values;
    uint32_t omitted; /* values held but not sent: fetch them over a connection */
    /* GET_PROVIDERS */
    bool has_record;
    struct vv_dht_content_record record; /* the key's metadata, when it has providers */
    struct vv_dht_provider providers[VV_DHT_MAX_PROVIDERS];
    size_t n_providers;
};

/*
 * Writes the reply frame [1, 0, 0x01ff, request_id, body] for a request of r->type in at
 * most budget bytes (and cap). Lists are cut to fit: values first (the ones left out are added
 * to `omitted`), then providers, then nodes, each from its end; what was sent is reported
 * back through *sent (may be NULL): r's counts as written. Returns 0, VV_EINVAL, or
 * VV_EDHT_NO_ROOM when not even the answer with empty lists fits.
 */
int vv_dht_reply_encode(const struct vv_dht_reply *r, uint64_t request_id, size_t budget,
                        uint8_t *out, size_t cap, size_t *len, struct vv_dht_reply *sent);
/* Decodes a reply body to a request of request_type. Returns 0 or VV_EDHT_MALFORMED. */
int vv_dht_reply_decode(uint16_t request_type, const msgpack_object *body,
                        struct vv_dht_reply *out);

/* ---- PING's signature ------------------------------------------------------------------ */

/* "vivim-dht-ping-v1" || nonce || requester's node ID: what a PONG's sig signs. */
void vv_dht_pong_signed_bytes(const uint8_t *nonce, const uint8_t *requester_id,
                              uint8_t out[VV_DHT_PING_SIGNED_BYTES]);
void vv_dht_pong_sign(const uint8_t *nonce, const uint8_t *requester_id, const uint8_t sk[64],
                      uint8_t sig[VV_DHT_SIG_BYTES]);
/* Returns 0 or VV_EDHT_SIGNATURE. The answering node's ID is then SHA-256(pk). */
int vv_dht_pong_verify(const uint8_t *nonce, const uint8_t *requester_id, const uint8_t *pk,
                       const uint8_t *sig);

/* ---- ADD_PROVIDER's signature ------------------------------------------------------------ */

/*
 * An ADD_PROVIDER proves that its requester holds the node ID it claims and that it wants to
 * be listed: sig signs "vivim-dht-provider-v1" || key (32) || expires (u64 BE, the record's
 * expiresAt) by pk, and SHA-256(pk) must be the requester's node ID. The storing node checks
 * it before it stores the entry and does not keep it (docs/dht.md, "Provider signatures").
 */
#define VV_DHT_PROVIDER_DOMAIN       "vivim-dht-provider-v1"
#define VV_DHT_PROVIDER_DOMAIN_LEN   21
#define VV_DHT_PROVIDER_SIGNED_BYTES (VV_DHT_PROVIDER_DOMAIN_LEN + VV_DHT_ID_BYTES + 8)
void vv_dht_provider_signed_bytes(const uint8_t *key, uint64_t expires_ms,
                                  uint8_t out[VV_DHT_PROVIDER_SIGNED_BYTES]);
/* Signs with sk (libsodium layout: its last 32 bytes are the public key, copied to pk). */
void vv_dht_provider_sign(const uint8_t *key, uint64_t expires_ms, const uint8_t sk[64],
                          uint8_t pk[VV_DHT_PK_BYTES], uint8_t sig[VV_DHT_SIG_BYTES]);

#endif
