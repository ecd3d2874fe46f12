/*
 * A CRDT document: an id, one of the data types (counter, register, set, text, map), this
 * replica's id, and the updates that arrived before what they depend on. It turns the JSON
 * operations of the RPC (`{"increment":1}`, `{"insert":{"pos":0,"text":"hi"}}`, ...) into the
 * type's local operations and their updates, applies updates from other replicas in any
 * order (idempotent, commutative), and gives the value as JSON, the full state, the state
 * vector and the delta a peer lacks.
 *
 * Pure: no I/O, no clock of its own (the caller passes wall-clock milliseconds for the
 * registers' hybrid logical clocks). Encodings are those of crdt.h and crdt_seq.h; the
 * document adds none of its own (docs/crdt.md).
 */
#ifndef VIVIM_CRDT_DOC_H
#define VIVIM_CRDT_DOC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/crdt.h"

#define VV_CRDT_DOC_ID_MAX_BYTES      128  /* document ids: 1..128 bytes of printable ASCII */
#define VV_CRDT_DOC_MAX_PENDING       1024 /* updates waiting for their dependencies, per document */
#define VV_CRDT_DOC_MAX_PENDING_BYTES (8u << 20)
/* Work (bytes decoded again plus scan steps, see vv_crdt_doc_last_drain_work) one applied
 * update may spend retrying the buffered updates it unblocked; the rest waits for
 * vv_crdt_doc_drain. About a millisecond. */
#define VV_CRDT_DOC_DRAIN_WORK (128u << 10)

enum vv_crdt_kind {
    VV_CRDT_KIND_GCOUNTER, /* grow-only counter: "gcounter" */
    VV_CRDT_KIND_COUNTER,  /* PN-counter: "counter" */
    VV_CRDT_KIND_REGISTER, /* LWW-register: "register" */
    VV_CRDT_KIND_SET,      /* add-wins OR-set: "set" */
    VV_CRDT_KIND_TEXT,     /* sequence (RGA family, non-interleaving): "text" */
    VV_CRDT_KIND_MAP,      /* LWW-map, nested maps allowed: "map" */
    VV_CRDT_KIND_COUNT
};

const char *vv_crdt_kind_name(enum vv_crdt_kind k);
/* The kind named s ("rga" is accepted for "text"), or -1. */
int vv_crdt_kind_parse(const char *s);
/* Whether id is a valid document id. */
bool vv_crdt_doc_id_valid(const char *id);

struct vv_crdt_doc;

/* A new empty document; replica must be unique to this node for this document. */
struct vv_crdt_doc *vv_crdt_doc_new(const char *id, enum vv_crdt_kind kind, uint64_t replica);
void vv_crdt_doc_free(struct vv_crdt_doc *d); /* NULL is fine */
const char *vv_crdt_doc_id(const struct vv_crdt_doc *d);
enum vv_crdt_kind vv_crdt_doc_kind(const struct vv_crdt_doc *d);

/*
 * Applies a local operation given as JSON (see docs/rpc.md, crdt.apply). On success *update
 * (vv_free) is what the other replicas need. Returns 0, VV_ECRDT_TYPE (an operation of
 * another type, or malformed, with err saying which), VV_ECRDT_RANGE (a position or length
 * outside the text), or the type's own errors.
 */
int vv_crdt_doc_op(struct vv_crdt_doc *d, const json_t *op, struct vv_hlc *clock, uint64_t wall_ms,
                   uint8_t **update, size_t *update_len, char *err, size_t err_len);

/*
 * Applies an update, a delta or a full state from another replica. An update whose
 * dependencies are missing is kept (bounded) and applied once they arrive; *buffered (may be
 * NULL) tells. Returns 0, VV_ECRDT_DECODE (malformed or hostile: nothing changed), VV_ELIMIT
 * (the pending buffer is full: nothing kept; a later sync repairs it).
 */
int vv_crdt_doc_apply(struct vv_crdt_doc *d, const uint8_t *buf, size_t len, bool *buffered);
/* Buffered updates are retried only once what each waits for arrived, and an apply that
 * unblocks some retries them for at most VV_CRDT_DOC_DRAIN_WORK; when work is left,
 * vv_crdt_doc_drain_due tells, and vv_crdt_doc_drain(d, budget) goes on (UINT64_MAX: to the
 * end). Returns the work it spent. */
uint64_t vv_crdt_doc_drain(struct vv_crdt_doc *d, uint64_t budget);
bool vv_crdt_doc_drain_due(const struct vv_crdt_doc *d);
size_t vv_crdt_doc_pending(const struct vv_crdt_doc *d);
/* Calls cb with every buffered update (borrowed for the call; cb must not change d). */
void vv_crdt_doc_pending_foreach(const struct vv_crdt_doc *d,
                                 void (*cb)(void *arg, const uint8_t *update, size_t len),
                                 void *arg);
/* The integration work (scan steps, see vv_crdt_seq_last_work) the last apply or drain call
 * took, buffered updates it retried included, for text documents; 0 for the other types,
 * whose updates cost their size. */
uint64_t vv_crdt_doc_last_work(const struct vv_crdt_doc *d);
/* The retry work of the last apply or drain call besides scan steps: the bytes of buffered
 * updates decoded again, plus a few units per dependency looked up. */
uint64_t vv_crdt_doc_last_drain_work(const struct vv_crdt_doc *d);

/*
 * A pool bounds the buffered updates of many documents together: at most max_updates
 * updates and max_bytes bytes (to buffer one more, the oldest in the pool are dropped, from
 * whichever document; one larger than max_bytes is refused with VV_ELIMIT), and none older
 * than max_age_ms (vv_crdt_pending_pool_expire). Time is what the owner last told with
 * vv_crdt_pending_pool_set_now. A dropped update is simply gone: the next sync round with
 * its sender brings again whatever the document still lacks. The pool does not own the
 * documents; free it after every document left it.
 */
struct vv_crdt_pending_pool;
struct vv_crdt_pending_stats {
    uint64_t updates, bytes;   /* buffered now, in every document of the pool */
    uint64_t evicted, expired; /* dropped so far: to make room (oldest first), past max age */
};
struct vv_crdt_pending_pool *vv_crdt_pending_pool_new(size_t max_updates, size_t max_bytes,
                                                      uint64_t max_age_ms);
void vv_crdt_pending_pool_free(struct vv_crdt_pending_pool *pool);
/* New limits, applied at once (the oldest dropped down to them). */
void vv_crdt_pending_pool_set_limits(struct vv_crdt_pending_pool *pool, size_t max_updates,
                                     size_t max_bytes, uint64_t max_age_ms);
void vv_crdt_pending_pool_set_now(struct vv_crdt_pending_pool *pool, uint64_t now_ms);
/* Drops the updates buffered max_age_ms or longer ago; returns how many. */
size_t vv_crdt_pending_pool_expire(struct vv_crdt_pending_pool *pool);
const struct vv_crdt_pending_stats *
vv_crdt_pending_pool_stats(const struct vv_crdt_pending_pool *pool);
/* Moves d's buffer into pool (NULL: out of any); updates already buffered join it as new.
 * vv_crdt_doc_free takes d's updates out of its pool. */
void vv_crdt_doc_set_pool(struct vv_crdt_doc *d, struct vv_crdt_pending_pool *pool);

/* A fingerprint that changes whenever the document's content does (its state vector, its
 * size, for register, set and map its whole state): lets the sync layer tell an update that
 * brought something from one that repeated what was known, without decoding it twice. */
uint64_t vv_crdt_doc_fingerprint(struct vv_crdt_doc *d);
/* Bytes the last fingerprint encoded (the whole state for register, set and map): work the
 * sync layer meters like any other. */
size_t vv_crdt_doc_fingerprint_bytes(const struct vv_crdt_doc *d);

/* Frees what the document keeps but no longer shows: for text, the content of deleted
 * characters (ids and structure stay, so every later update still integrates; the value,
 * the state vector and the encodings are unchanged). Other types: nothing (map tombstones
 * need the discard rule of docs/crdt.md, which the document layer does not enforce yet). */
void vv_crdt_doc_compact(struct vv_crdt_doc *d);

/* A counter kept for the persistence layer: updates logged since the document's last
 * snapshot. */
uint32_t *vv_crdt_doc_log_count(struct vv_crdt_doc *d);

/* The current value as JSON (new reference). */
json_t *vv_crdt_doc_value(const struct vv_crdt_doc *d);
/* The full state, the state vector, and what a peer with state vector sv lacks. Types
 * without a state vector (register, map) have an empty one and their delta is their state.
 * *out is vv_free()d by the caller. */
int vv_crdt_doc_state(struct vv_crdt_doc *d, uint8_t **out, size_t *out_len);
int vv_crdt_doc_state_vector(struct vv_crdt_doc *d, uint8_t **out, size_t *out_len);
int vv_crdt_doc_delta(struct vv_crdt_doc *d, const uint8_t *sv, size_t sv_len, uint8_t **out,
                      size_t *out_len);

#endif
