/*
 * The sync engine's large-payload path (sync_stream.c): an UPDATE whose frame would not fit
 * in one message goes to the peer through a stream on the CRDT channel (env_stream.h), and a
 * stream from a peer is reassembled, up to VV_CRDT_SYNC_MAX_DOC_BYTES, then handed back to
 * the engine whole, which applies it under its per-turn work metering like any update.
 * Private to src/crdt/ (sync.c is its only user).
 */
#ifndef VIVIM_CRDT_SYNC_STREAM_H
#define VIVIM_CRDT_SYNC_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"

/* OPEN's metadata on the CRDT channel: this byte, the document's creator (32 bytes, as in
 * UPDATE), then the document id (docs/crdt.md). */
#define VV__CRDT_STREAM_UPDATE 0x01

struct vv__crdt_bulk;

struct vv__crdt_bulk_cbs {
    /* May peer stream an update of document id, created by creator, here (it exists, peer is
     * joined and may write it, the creator is the one we know)? */
    bool (*wanted)(void *arg, const uint8_t peer[VV_NODE_ID_BYTES],
                   const uint8_t creator[VV_NODE_ID_BYTES], const char *id);
    /* An update of id from peer arrived whole: buf (len bytes) is the callback's to free. */
    void (*arrived)(void *arg, const uint8_t peer[VV_NODE_ID_BYTES], const char *id, uint8_t *buf,
                    size_t len);
};

struct vv__crdt_bulk_stats {
    uint64_t sent, received;   /* updates that went whole through a stream */
    uint64_t send_failures;    /* streams to peers that ended otherwise */
    uint64_t receive_failures; /* streams from peers that ended otherwise (refusals included) */
    uint64_t skipped;          /* a stream of that document to that peer was still going */
    uint64_t in_flight_bytes;  /* updates held for streams being sent, now */
};

struct vv__crdt_bulk *vv__crdt_bulk_new(struct vv_env *env, const struct vv__crdt_bulk_cbs *cbs,
                                        void *arg);
/* Ends every stream (peers told), frees. b may be NULL. */
void vv__crdt_bulk_free(struct vv__crdt_bulk *b);
/* The CRDT channel's messages and peer events, first: true when the message was a stream's. */
bool vv__crdt_bulk_recv(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                        const uint8_t *data, size_t len);
void vv__crdt_bulk_peer(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES], bool up);
/*
 * Sends update u (copied) of document id to peer through a stream. Returns 0; VV_EBUSY when
 * a stream of that document to that peer is still going (its successor would carry the same
 * items: the next round after it brings the rest); VV_ELIMIT, VV_ECONN_NOT_CONNECTED from
 * vv_stream_open.
 */
int vv__crdt_bulk_send(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                       const char *id, const uint8_t creator[VV_NODE_ID_BYTES], const uint8_t *u,
                       size_t len);
/* Whether a stream of id to peer is still being sent (counted as a skip: the caller then
 * sends nothing of that document to that peer). */
bool vv__crdt_bulk_skip(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                        const char *id);
/* Whether an update of id from peer is arriving through a stream now. */
bool vv__crdt_bulk_receiving(const struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                             const char *id);
/* The largest update accepted from a peer (default VV_CRDT_SYNC_MAX_DOC_BYTES). */
void vv__crdt_bulk_set_max_bytes(struct vv__crdt_bulk *b, uint64_t max_bytes);
const struct vv__crdt_bulk_stats *vv__crdt_bulk_stats(const struct vv__crdt_bulk *b);
struct vv_stream_mux *vv__crdt_bulk_mux(struct vv__crdt_bulk *b);

#endif
