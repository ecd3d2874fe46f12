/*
 * The pubsub message's digest, ID and signature (include/vivim/pubsub_wire.h).
 *
 * One BLAKE2b-256 pass over the message gives both the ID (its prefix) and what is signed
 * (the domain and the digest), so the loop thread reads a message's data once, and the
 * signature check on a worker thread needs 128 bytes, not a copy of the data.
 */
#include <sodium.h>
#include <string.h>

#include "vivim/pubsub_wire.h"

void vv_pubsub_msg_digest(const struct vv_pubsub_msg *m, uint8_t digest[VV_PUBSUB_DIGEST_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, VV_PUBSUB_DIGEST_BYTES);
    /* The topic is length-prefixed so that (topic, data) pairs cannot shift bytes between
     * them and keep one digest; origin and seqno have fixed widths. */
    uint8_t tl[2] = {(uint8_t)(m->topic_len >> 8), (uint8_t)m->topic_len};
    crypto_generichash_update(&st, tl, sizeof(tl));
    crypto_generichash_update(&st, (const uint8_t *)m->topic, m->topic_len);
    crypto_generichash_update(&st, m->origin, VV_ED25519_PK_BYTES);
    uint8_t seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = (uint8_t)(m->seqno >> (56 - 8 * i));
    crypto_generichash_update(&st, seq, sizeof(seq));
    if (m->data_len > 0)
        crypto_generichash_update(&st, m->data, m->data_len);
    crypto_generichash_final(&st, digest, VV_PUBSUB_DIGEST_BYTES);
}

void vv_pubsub_msg_id(const struct vv_pubsub_msg *m, uint8_t id[VV_PUBSUB_ID_BYTES])
{
    uint8_t d[VV_PUBSUB_DIGEST_BYTES];
    vv_pubsub_msg_digest(m, d);
    memcpy(id, d, VV_PUBSUB_ID_BYTES);
}

void vv_pubsub_signed_bytes(const uint8_t digest[VV_PUBSUB_DIGEST_BYTES],
                            uint8_t out[VV_PUBSUB_SIGNED_BYTES])
{
    memcpy(out, VV_PUBSUB_SIG_DOMAIN, VV_PUBSUB_SIG_DOMAIN_BYTES);
    memcpy(out + VV_PUBSUB_SIG_DOMAIN_BYTES, digest, VV_PUBSUB_DIGEST_BYTES);
}

void vv_pubsub_msg_sign(const struct vv_pubsub_msg *m, const uint8_t sk[VV_ED25519_SK_BYTES],
                        uint8_t sig_out[VV_PUBSUB_SIG_BYTES])
{
    uint8_t d[VV_PUBSUB_DIGEST_BYTES], s[VV_PUBSUB_SIGNED_BYTES];
    vv_pubsub_msg_digest(m, d);
    vv_pubsub_signed_bytes(d, s);
    crypto_sign_detached(sig_out, NULL, s, sizeof(s), sk);
}

int vv_pubsub_verify_digest(const uint8_t origin[VV_ED25519_PK_BYTES],
                            const uint8_t digest[VV_PUBSUB_DIGEST_BYTES],
                            const uint8_t sig[VV_PUBSUB_SIG_BYTES])
{
    uint8_t s[VV_PUBSUB_SIGNED_BYTES];
    vv_pubsub_signed_bytes(digest, s);
    return crypto_sign_verify_detached(sig, s, sizeof(s), origin) == 0 ? 0 : VV_EPUBSUB_SIGNATURE;
}

bool vv_pubsub_topic_ok(const char *topic, size_t len)
{
    if (topic == NULL || len == 0 || len > VV_PUBSUB_MAX_TOPIC_BYTES)
        return false;
    /* The wire's one text check, on a str object made to point at the bytes. */
    msgpack_object o;
    o.type = MSGPACK_OBJECT_STR;
    o.via.str.ptr = topic;
    o.via.str.size = (uint32_t)len;
    const char *p;
    return vv_wire_get_str(&o, VV_PUBSUB_MAX_TOPIC_BYTES, &p, NULL) == 0;
}
