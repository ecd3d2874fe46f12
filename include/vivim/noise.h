/*
 * The Noise Protocol Framework (revision 34), the parts vivimd uses:
 * Noise_XX_25519_ChaChaPoly_SHA256 for the peer handshake (and NN, for test vectors), on
 * libsodium primitives: X25519, ChaCha20-Poly1305 (IETF, nonce = 4 zero bytes || 64-bit
 * little-endian counter), SHA-256, HMAC-SHA-256 based HKDF.
 *
 * Sans-I/O: the caller moves the bytes. Each side alternates vv_noise_write and
 * vv_noise_read as the pattern dictates; when vv_noise_done, vv_noise_split gives the two
 * transport ciphers. A failed read leaves the handshake unusable (every later call fails).
 */
#ifndef VIVIM_NOISE_H
#define VIVIM_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VV_NOISE_DH_BYTES      32
#define VV_NOISE_HASH_BYTES    32
#define VV_NOISE_TAG_BYTES     16
#define VV_NOISE_MAX_MSG_BYTES 65535 /* a Noise message, handshake or transport */

enum vv_noise_pattern { VV_NOISE_NN, VV_NOISE_XX };

struct vv_noise_cipher {
    uint8_t k[32];
    uint64_t n;
    bool has_key;
};

struct vv_noise_hs {
    enum vv_noise_pattern pattern;
    bool initiator;
    int step; /* index of the next message in the pattern */
    bool failed;
    uint8_t ck[VV_NOISE_HASH_BYTES], h[VV_NOISE_HASH_BYTES];
    struct vv_noise_cipher cs;
    uint8_t s_priv[32], s_pub[32], e_priv[32], e_pub[32];
    uint8_t rs[32], re[32];
    bool has_s, has_rs, has_re, fixed_e;
};

/*
 * Starts a handshake. s_priv: this side's static X25519 private key (NULL for NN).
 * fixed_e: an ephemeral private key to use instead of a fresh one (test vectors only).
 */
int vv_noise_init(struct vv_noise_hs *hs, enum vv_noise_pattern pattern, bool initiator,
                  const uint8_t *prologue, size_t prologue_len, const uint8_t *s_priv,
                  const uint8_t *fixed_e);

/* Writes the next handshake message carrying payload. Returns 0, VV_ESTATE (not our turn,
 * or done), VV_ELIMIT (out too small or message too long), VV_ENOISE_HANDSHAKE (bad DH). */
int vv_noise_write(struct vv_noise_hs *hs, const uint8_t *payload, size_t payload_len, uint8_t *out,
                   size_t out_cap, size_t *out_len);

/* Reads the peer's next handshake message; its payload goes to payload (cap bytes).
 * Returns 0, VV_ESTATE, VV_EWIRE_TRUNCATED, VV_ENOISE_DECRYPT, VV_ENOISE_HANDSHAKE, VV_ELIMIT. */
int vv_noise_read(struct vv_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                  size_t payload_cap, size_t *payload_len);

bool vv_noise_done(const struct vv_noise_hs *hs);
/* Whose turn it is to write. */
bool vv_noise_my_turn(const struct vv_noise_hs *hs);
/* The remote static public key (XX, after it was received), or NULL. */
const uint8_t *vv_noise_remote_static(const struct vv_noise_hs *hs);
/* The handshake hash h: binds both sides' view of the transcript. */
const uint8_t *vv_noise_handshake_hash(const struct vv_noise_hs *hs);
/* After done: the initiator's sending cipher is c1, the responder's c2. Wipes hs. */
void vv_noise_split(struct vv_noise_hs *hs, struct vv_noise_cipher *send,
                    struct vv_noise_cipher *recv);

/* Transport: ciphertext = plaintext + 16-byte tag; out may equal in. */
int vv_noise_encrypt(struct vv_noise_cipher *c, const uint8_t *ad, size_t ad_len, const uint8_t *in,
                     size_t len, uint8_t *out);
/* Returns 0 or VV_ENOISE_DECRYPT (tampered, reordered, replayed or truncated). */
int vv_noise_decrypt(struct vv_noise_cipher *c, const uint8_t *ad, size_t ad_len, const uint8_t *in,
                     size_t len, uint8_t *out);

/* A static key pair: private from randomness, public = X25519 base point multiple. */
void vv_noise_keypair(uint8_t priv[32], uint8_t pub[32]);

#endif
