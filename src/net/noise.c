/*
 * Noise Protocol Framework handshake and transport ciphers (see noise.h), written to the
 * specification's CipherState / SymmetricState / HandshakeState structure so that each
 * step can be checked against it and against the published test vectors. Secrets are
 * wiped when no longer needed. No I/O, no allocation.
 */
#include <sodium.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/noise.h"

static const char *const protocol_names[] = {
    [VV_NOISE_NN] = "Noise_NN_25519_ChaChaPoly_SHA256",
    [VV_NOISE_XX] = "Noise_XX_25519_ChaChaPoly_SHA256",
};

enum token { T_E, T_S, T_EE, T_ES, T_SE, T_END };

/* Message patterns; even messages are the initiator's. */
static const enum token nn[][4] = {{T_E, T_END}, {T_E, T_EE, T_END}};
static const enum token xx[][5] = {{T_E, T_END}, {T_E, T_EE, T_S, T_ES, T_END}, {T_S, T_SE, T_END}};

static const enum token *tokens(const struct vv_noise_hs *hs, int step)
{
    return hs->pattern == VV_NOISE_NN ? nn[step] : xx[step];
}

static int n_messages(const struct vv_noise_hs *hs)
{
    return hs->pattern == VV_NOISE_NN ? 2 : 3;
}

/* ---- CipherState --------------------------------------------------------------------- */

static void nonce_bytes(uint64_t n, uint8_t out[12])
{
    memset(out, 0, 4);
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(n >> (8 * i));
}

int vv_noise_encrypt(struct vv_noise_cipher *c, const uint8_t *ad, size_t ad_len, const uint8_t *in,
                     size_t len, uint8_t *out)
{
    if (!c->has_key) {
        if (len)
            memmove(out, in, len);
        return 0;
    }
    if (c->n == UINT64_MAX)
        return VV_ELIMIT; /* 2^64-1 is reserved: the key is spent */
    uint8_t nonce[12];
    nonce_bytes(c->n, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad, ad_len, NULL, nonce, c->k);
    c->n++;
    return 0;
}

int vv_noise_decrypt(struct vv_noise_cipher *c, const uint8_t *ad, size_t ad_len, const uint8_t *in,
                     size_t len, uint8_t *out)
{
    if (!c->has_key) {
        if (len)
            memmove(out, in, len);
        return 0;
    }
    if (len < VV_NOISE_TAG_BYTES || c->n == UINT64_MAX)
        return VV_ENOISE_DECRYPT;
    uint8_t nonce[12];
    nonce_bytes(c->n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len, ad, ad_len, nonce,
                                                  c->k) != 0)
        return VV_ENOISE_DECRYPT; /* the nonce does not advance: the message did not count */
    c->n++;
    return 0;
}

/* ---- SymmetricState ------------------------------------------------------------------ */

static void hmac(const uint8_t key[32], const uint8_t *a, size_t alen, const uint8_t *b,
                 size_t blen, uint8_t out[32])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, 32);
    crypto_auth_hmacsha256_update(&st, a, alen);
    if (blen)
        crypto_auth_hmacsha256_update(&st, b, blen);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof(st));
}

/* HKDF as the spec defines it, two outputs. */
static void hkdf2(const uint8_t ck[32], const uint8_t *ikm, size_t ikm_len, uint8_t out1[32],
                  uint8_t out2[32])
{
    uint8_t temp[32], one = 1, two = 2;
    hmac(ck, ikm, ikm_len, NULL, 0, temp);
    hmac(temp, &one, 1, NULL, 0, out1);
    uint8_t buf[33];
    memcpy(buf, out1, 32);
    buf[32] = two;
    hmac(temp, buf, 33, NULL, 0, out2);
    sodium_memzero(temp, sizeof(temp));
    sodium_memzero(buf, sizeof(buf));
}

static void mix_hash(struct vv_noise_hs *hs, const uint8_t *data, size_t len)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, hs->h, 32);
    crypto_hash_sha256_update(&st, data, len);
    crypto_hash_sha256_final(&st, hs->h);
}

static void mix_key(struct vv_noise_hs *hs, const uint8_t ikm[32])
{
    uint8_t temp_k[32];
    hkdf2(hs->ck, ikm, 32, hs->ck, temp_k);
    memcpy(hs->cs.k, temp_k, 32);
    hs->cs.n = 0;
    hs->cs.has_key = true;
    sodium_memzero(temp_k, sizeof(temp_k));
}

static int encrypt_and_hash(struct vv_noise_hs *hs, const uint8_t *pt, size_t len, uint8_t *out,
                            size_t *out_len)
{
    int rc = vv_noise_encrypt(&hs->cs, hs->h, 32, pt, len, out);
    if (rc != 0)
        return rc;
    *out_len = len + (hs->cs.has_key ? VV_NOISE_TAG_BYTES : 0);
    mix_hash(hs, out, *out_len);
    return 0;
}

static int decrypt_and_hash(struct vv_noise_hs *hs, const uint8_t *ct, size_t len, uint8_t *out)
{
    uint8_t h_before[32];
    memcpy(h_before, hs->h, 32);
    int rc = vv_noise_decrypt(&hs->cs, hs->h, 32, ct, len, out);
    if (rc != 0)
        return rc;
    memcpy(hs->h, h_before, 32);
    mix_hash(hs, ct, len);
    return 0;
}

/* ---- HandshakeState ---------------------------------------------------------------------- */

static int dh(const uint8_t priv[32], const uint8_t pub[32], uint8_t out[32])
{
    /* libsodium refuses an all-zero result: a low-order point, never a valid peer key. */
    return crypto_scalarmult(out, priv, pub) == 0 ? 0 : VV_ENOISE_HANDSHAKE;
}

void vv_noise_keypair(uint8_t priv[32], uint8_t pub[32])
{
    randombytes_buf(priv, 32);
    crypto_scalarmult_base(pub, priv);
}

int vv_noise_init(struct vv_noise_hs *hs, enum vv_noise_pattern pattern, bool initiator,
                  const uint8_t *prologue, size_t prologue_len, const uint8_t *s_priv,
                  const uint8_t *fixed_e)
{
    memset(hs, 0, sizeof(*hs));
    hs->pattern = pattern;
    hs->initiator = initiator;
    if (pattern == VV_NOISE_XX && s_priv == NULL)
        return VV_EINVAL;
    const char *name = protocol_names[pattern];
    size_t nlen = strlen(name);
    if (nlen <= 32) {
        memcpy(hs->h, name, nlen); /* padded with zeros */
    } else {
        crypto_hash_sha256(hs->h, (const uint8_t *)name, nlen);
    }
    memcpy(hs->ck, hs->h, 32);
    mix_hash(hs, prologue, prologue_len);
    if (s_priv) {
        memcpy(hs->s_priv, s_priv, 32);
        crypto_scalarmult_base(hs->s_pub, s_priv);
        hs->has_s = true;
    }
    if (fixed_e) {
        memcpy(hs->e_priv, fixed_e, 32);
        hs->fixed_e = true;
    }
    return 0;
}

bool vv_noise_my_turn(const struct vv_noise_hs *hs)
{
    return !hs->failed && hs->step < n_messages(hs) && (hs->step % 2 == 0) == hs->initiator;
}

bool vv_noise_done(const struct vv_noise_hs *hs)
{
    return !hs->failed && hs->step == n_messages(hs);
}

static int dh_token(struct vv_noise_hs *hs, enum token t)
{
    uint8_t shared[32];
    int rc;
    if (t == T_EE)
        rc = dh(hs->e_priv, hs->re, shared);
    else if ((t == T_ES) == hs->initiator)
        rc = dh(hs->e_priv, hs->rs, shared); /* es as initiator, se as responder */
    else
        rc = dh(hs->s_priv, hs->re, shared); /* es as responder, se as initiator */
    if (rc == 0)
        mix_key(hs, shared);
    sodium_memzero(shared, sizeof(shared));
    return rc;
}

int vv_noise_write(struct vv_noise_hs *hs, const uint8_t *payload, size_t payload_len, uint8_t *out,
                   size_t out_cap, size_t *out_len)
{
    if (!vv_noise_my_turn(hs))
        return VV_ESTATE;
    size_t off = 0, n = 0;
    int rc = 0;
    for (const enum token *t = tokens(hs, hs->step); *t != T_END && rc == 0; t++) {
        switch (*t) {
        case T_E:
            if (off + 32 > out_cap)
                return VV_ELIMIT;
            if (!hs->fixed_e)
                randombytes_buf(hs->e_priv, 32);
            crypto_scalarmult_base(hs->e_pub, hs->e_priv);
            memcpy(out + off, hs->e_pub, 32);
            mix_hash(hs, hs->e_pub, 32);
            off += 32;
            break;
        case T_S:
            if (off + 32 + VV_NOISE_TAG_BYTES > out_cap)
                return VV_ELIMIT;
            rc = encrypt_and_hash(hs, hs->s_pub, 32, out + off, &n);
            off += n;
            break;
        default:
            rc = dh_token(hs, *t);
            break;
        }
    }
    if (rc != 0) {
        hs->failed = true;
        return rc;
    }
    size_t tag = hs->cs.has_key ? VV_NOISE_TAG_BYTES : 0;
    if (off + payload_len + tag > out_cap || off + payload_len + tag > VV_NOISE_MAX_MSG_BYTES)
        return VV_ELIMIT;
    rc = encrypt_and_hash(hs, payload, payload_len, out + off, &n);
    if (rc != 0) {
        hs->failed = true;
        return rc;
    }
    *out_len = off + n;
    hs->step++;
    return 0;
}

int vv_noise_read(struct vv_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                  size_t payload_cap, size_t *payload_len)
{
    if (hs->failed || hs->step >= n_messages(hs) || vv_noise_my_turn(hs))
        return VV_ESTATE;
    if (len > VV_NOISE_MAX_MSG_BYTES)
        return VV_ELIMIT;
    size_t off = 0;
    int rc = 0;
    for (const enum token *t = tokens(hs, hs->step); *t != T_END && rc == 0; t++) {
        switch (*t) {
        case T_E:
            if (off + 32 > len) {
                rc = VV_EWIRE_TRUNCATED;
                break;
            }
            memcpy(hs->re, msg + off, 32);
            hs->has_re = true;
            mix_hash(hs, hs->re, 32);
            off += 32;
            break;
        case T_S: {
            size_t n = 32 + (hs->cs.has_key ? VV_NOISE_TAG_BYTES : 0);
            if (off + n > len) {
                rc = VV_EWIRE_TRUNCATED;
                break;
            }
            rc = decrypt_and_hash(hs, msg + off, n, hs->rs);
            if (rc == 0)
                hs->has_rs = true;
            off += n;
            break;
        }
        default:
            rc = dh_token(hs, *t);
            break;
        }
    }
    if (rc == 0) {
        size_t n = len - off;
        size_t tag = hs->cs.has_key ? VV_NOISE_TAG_BYTES : 0;
        if (n < tag)
            rc = VV_EWIRE_TRUNCATED;
        else if (n - tag > payload_cap)
            rc = VV_ELIMIT;
        else if ((rc = decrypt_and_hash(hs, msg + off, n, payload)) == 0)
            *payload_len = n - tag;
    }
    if (rc != 0) {
        hs->failed = true; /* a handshake never recovers from a bad message */
        return rc;
    }
    hs->step++;
    return 0;
}

const uint8_t *vv_noise_remote_static(const struct vv_noise_hs *hs)
{
    return hs->has_rs ? hs->rs : NULL;
}

const uint8_t *vv_noise_handshake_hash(const struct vv_noise_hs *hs)
{
    return hs->h;
}

void vv_noise_split(struct vv_noise_hs *hs, struct vv_noise_cipher *send,
                    struct vv_noise_cipher *recv)
{
    struct vv_noise_cipher c1 = {.has_key = true}, c2 = {.has_key = true};
    hkdf2(hs->ck, NULL, 0, c1.k, c2.k);
    *send = hs->initiator ? c1 : c2;
    *recv = hs->initiator ? c2 : c1;
    sodium_memzero(&c1, sizeof(c1));
    sodium_memzero(&c2, sizeof(c2));
    sodium_memzero(hs->ck, sizeof(hs->ck));
    sodium_memzero(hs->cs.k, sizeof(hs->cs.k));
    sodium_memzero(hs->s_priv, sizeof(hs->s_priv));
    sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
}
