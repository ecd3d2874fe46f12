/*
 * A CRDT document's access policy: which nodes may read it and which may write it, signed by
 * the node that created it (docs/crdt.md, "Access policy").
 *
 * The policy names its creator by Ed25519 public key, so it proves who the creator is: a node
 * ID is the SHA-256 of that key, and only the holder of the secret key can sign a policy in
 * its name. The creator is always a writer; writers may read; every other node may do
 * nothing. A newer version (higher number) signed by the same creator replaces an older one.
 *
 * One encoding serves the wire (POLICY messages), the document store and the signature: the
 * signed bytes, then the 64-byte signature. This file decodes and checks it (bounded, no
 * trust in any length it reads) and builds and signs new ones; it does no I/O and keeps no
 * state. The sync engine (crdt_sync.h) decides what a policy lets through.
 */
#ifndef VIVIM_CRDT_POLICY_H
#define VIVIM_CRDT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/crdt_doc.h"
#include "vivim/env.h"

/*
 * Nodes named by one policy, readers and writers together. A node syncs a document with at
 * most VV_CRDT_SYNC_MAX_PEERS peers, but the policy names every member of the document,
 * whoever they sync with; 1,024 members keep the largest policy at 33 KB, small enough to
 * send with every round that needs it and to verify without noticing.
 */
#define VV_CRDT_POLICY_MAX_NODES 1024
/* What the signature covers starts with this, so that a policy's signature can never be
 * passed off as a signature of anything else this node signs. */
#define VV_CRDT_POLICY_MAGIC       "vivim/crdt-policy/1"
#define VV_CRDT_POLICY_MAGIC_BYTES 19
#define VV_CRDT_POLICY_SIG_BYTES   64
/* The largest encoding: magic, id length and id, type, flags, key, version, two counts, the
 * nodes, the signature. */
#define VV_CRDT_POLICY_MAX_BYTES                                                                   \
    (VV_CRDT_POLICY_MAGIC_BYTES + 1 + VV_CRDT_DOC_ID_MAX_BYTES + 1 + 1 + VV_ED25519_PK_BYTES + 8 + \
     2 + 2 + VV_CRDT_POLICY_MAX_NODES * VV_NODE_ID_BYTES + VV_CRDT_POLICY_SIG_BYTES)
/*
 * Flags. ADOPTED: the policy was made at an upgrade, for a document stored before policies
 * existed, by whichever node held it; other nodes holding the same document made their own.
 * Such a document is synced with the peers its lists allow whatever creator their copy
 * shows (docs/crdt.md, "Upgrading"). No other flag is defined: a policy with one is refused.
 */
#define VV_CRDT_POLICY_ADOPTED 0x01

/* What a node may do with a document. */
enum vv_crdt_access {
    VV_CRDT_ACCESS_NONE = 0,
    VV_CRDT_ACCESS_READ = 1,
    VV_CRDT_ACCESS_WRITE = 2, /* implies read */
};

struct vv_crdt_policy {
    char doc_id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
    enum vv_crdt_kind kind; /* the document's type: a policy fixes it for every replica */
    uint8_t flags;          /* VV_CRDT_POLICY_ADOPTED or 0 */
    uint8_t creator_pk[VV_ED25519_PK_BYTES];
    uint8_t creator[VV_NODE_ID_BYTES]; /* SHA-256(creator_pk) */
    uint64_t version;                  /* >= 1; higher replaces lower */
    /* Node IDs, each list strictly ascending (so without repeats); a node in both lists is a
     * writer. The creator is never listed: it is always a writer. */
    uint8_t (*readers)[VV_NODE_ID_BYTES];
    uint8_t (*writers)[VV_NODE_ID_BYTES];
    size_t n_readers, n_writers;
    uint8_t *bytes; /* the encoding, signature last */
    size_t len;
};

/*
 * Decodes (and copies) an encoded policy. Checks its form only, not its signature:
 * VV_ECRDT_POLICY when it is shorter or longer than what it declares, longer than
 * VV_CRDT_POLICY_MAX_BYTES, names more than VV_CRDT_POLICY_MAX_NODES nodes, has a list out of
 * order or with repeats, an invalid document id, an unknown type or version 0. *out is freed
 * with vv_crdt_policy_free.
 */
int vv_crdt_policy_decode(const uint8_t *buf, size_t len, struct vv_crdt_policy **out);
/* Whether the signature is the creator's (env's verify, so the simulator may memoize). */
bool vv_crdt_policy_verify(struct vv_env *env, const struct vv_crdt_policy *p);
/*
 * A new policy with this node (env's identity) as creator, signed with its key. The lists
 * may be in any order and repeat nodes (a node in both is a writer); the creator's own ID is
 * left out of them. VV_EINVAL for a bad id, type, flags or version 0, VV_ELIMIT past
 * VV_CRDT_POLICY_MAX_NODES.
 */
int vv_crdt_policy_make(struct vv_env *env, const char *doc_id, enum vv_crdt_kind kind,
                        uint8_t flags, uint64_t version, const uint8_t *readers, size_t n_readers,
                        const uint8_t *writers, size_t n_writers, struct vv_crdt_policy **out);
void vv_crdt_policy_free(struct vv_crdt_policy *p);

/* What node may do under p (the creator: write). p NULL: nothing. */
enum vv_crdt_access vv_crdt_policy_access(const struct vv_crdt_policy *p,
                                          const uint8_t node[VV_NODE_ID_BYTES]);

#endif
