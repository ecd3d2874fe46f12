/*
 * Node identity: an Ed25519 key pair kept in the state directory, created on first start.
 * The node ID is the SHA-256 of the public key. The key file is never overwritten: a file
 * with the wrong permissions or size stops start-up with a message saying what to fix.
 */
#ifndef VIVIM_IDENTITY_H
#define VIVIM_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define VV_NODE_ID_BYTES     32
#define VV_NODE_ID_HEX_BYTES (2 * VV_NODE_ID_BYTES + 1)
#define VV_ED25519_PK_BYTES  32
#define VV_ED25519_SK_BYTES  64
#define VV_IDENTITY_FILE     "node.key"

struct vv_identity {
    uint8_t public_key[VV_ED25519_PK_BYTES];
    uint8_t secret_key[VV_ED25519_SK_BYTES]; /* libsodium layout: seed || public key */
    uint8_t node_id[VV_NODE_ID_BYTES];       /* SHA-256(public_key) */
    char node_id_hex[VV_NODE_ID_HEX_BYTES];
};

/*
 * Loads <state_dir>/node.key, or creates it (mode 0600, written to a temporary file, fsync'd
 * and renamed) when it does not exist. state_dir is created with mode 0700 if missing.
 * Returns 0, VV_EKEY_PERM (group/other bits set), VV_EKEY_SIZE, VV_EKEY_CORRUPT (the public
 * half does not match the seed), or a negative errno. err receives a message for the operator.
 */
int vv_identity_load_or_create(const char *state_dir, struct vv_identity *id, char *err,
                               size_t err_len);

/* Derives the node ID of an Ed25519 public key. */
void vv_identity_node_id(const uint8_t pk[VV_ED25519_PK_BYTES], uint8_t out[VV_NODE_ID_BYTES]);

/* Wipes the secret key. */
void vv_identity_clear(struct vv_identity *id);

#endif
