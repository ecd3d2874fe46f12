/*
 * The sequence CRDT: a replicated Unicode text that several replicas edit concurrently and that
 * converges to the same content everywhere, without interleaving characters that two replicas
 * typed at the same place at the same time.
 *
 * Every inserted character is an item with an id (replica, seq): the replica is a 64-bit number
 * the caller chooses (vivimd draws a random one per process start, docs/crdt.md "Replica ids";
 * two replicas that edit the same document must never share one), seq counts that replica's
 * insertions from 0. A document keeps deleted items as tombstones. Positions and lengths count
 * Unicode code points; text goes in and out as UTF-8.
 *
 * Updates are byte strings (format in docs/crdt.md, "Sequence"): a local insert or delete returns
 * the update to send to the other replicas; vv_crdt_seq_apply() takes updates in any order that
 * respects causality, ignores duplicates, and answers VV_ECRDT_CAUSALITY for an update that
 * needs items this replica has not seen yet (buffer it and apply it again later). A replica can
 * also send everything a peer lacks given the peer's state vector, or its whole state.
 *
 * The algorithm is YjsMod, which Weidner & Kleppmann show equivalent to FugueMax ("The Art of
 * the Fugue: Minimizing Interleaving in Collaborative Text Editing", 2023). Not thread-safe:
 * one document belongs to one thread at a time.
 */
#ifndef VIVIM_CRDT_SEQ_H
#define VIVIM_CRDT_SEQ_H

#include <stddef.h>
#include <stdint.h>

#include "vivim/common.h"

/* Largest seq a replica may reach: items per replica are counted in 31 bits. */
#define VV_CRDT_SEQ_MAX_SEQ ((uint32_t)INT32_MAX)
/* Most replicas one document may hold; an update naming more is rejected. */
#define VV_CRDT_SEQ_MAX_REPLICAS 65536u

struct vv_crdt_seq;

/* A new empty document edited locally as `replica`. Free with vv_crdt_seq_free(). */
struct vv_crdt_seq *vv_crdt_seq_new(uint64_t replica);
void vv_crdt_seq_free(struct vv_crdt_seq *d); /* NULL is fine */

/* Visible length in code points, and in UTF-8 bytes. */
size_t vv_crdt_seq_len(const struct vv_crdt_seq *d);
size_t vv_crdt_seq_utf8_len(const struct vv_crdt_seq *d);

/* The visible text as NUL-terminated UTF-8 (the caller vv_free()s it); *len gets its byte
 * length unless len is NULL. */
char *vv_crdt_seq_text(const struct vv_crdt_seq *d, size_t *len);

/*
 * Inserts `nbytes` of UTF-8 at code point position `pos` (0 .. len). On success, when update is
 * not NULL, *update is the encoded update (vv_free it; NULL with *update_len 0 when the text was
 * empty). Returns 0, VV_EINVAL for invalid UTF-8, VV_ECRDT_RANGE for a position past the end,
 * VV_ELIMIT when the replica would exceed VV_CRDT_SEQ_MAX_SEQ items.
 */
int vv_crdt_seq_insert(struct vv_crdt_seq *d, size_t pos, const char *utf8, size_t nbytes,
                       uint8_t **update, size_t *update_len);

/* Deletes `len` code points from `pos`; update as for insert. Returns 0 or VV_ECRDT_RANGE. */
int vv_crdt_seq_delete(struct vv_crdt_seq *d, size_t pos, size_t len, uint8_t **update,
                       size_t *update_len);

/*
 * Applies an update, a delta or a full state from any replica. Idempotent; commutes with
 * every other update delivered in causal order. All or nothing: on any error the document is
 * unchanged. Returns 0; VV_ECRDT_DECODE for malformed input; VV_ECRDT_CAUSALITY when the
 * update needs items not seen yet (apply it again after the missing ones); VV_ELIMIT when
 * the document would exceed VV_CRDT_SEQ_MAX_REPLICAS; VV_ECRDT_HISTORY when an item would
 * land among items of its own replica that its origins say it never saw (no honest replica
 * writes that); VV_ECRDT_COST when integrating it would take more than the work budget
 * (VV_CRDT_SEQ_WORK_MAX scan steps).
 */
int vv_crdt_seq_apply(struct vv_crdt_seq *d, const uint8_t *buf, size_t len);

/*
 * What integrating one update may cost, in scan steps (runs an item's placement looks at).
 * Each item of an honest update scans only the items written concurrently between its
 * origins: merging two diverged histories costs about a step per run of the other side for
 * each place both edited. Piles of concurrent inserts at one place cost quadratically (only
 * forged histories, or tens of thousands of replicas typing at one spot unseen by each other,
 * make them); one update stops at this many steps: about 35 ms of work on the machines in
 * docs/benchmarks.md, undone whole.
 */
#define VV_CRDT_SEQ_WORK_MAX (4u << 20)

/* The scan steps the last vv_crdt_seq_apply on d took (for metrics and tests). */
uint64_t vv_crdt_seq_last_work(const struct vv_crdt_seq *d);
/* After vv_crdt_seq_apply answered VV_ECRDT_CAUSALITY: one item (replica id, seq) the update
 * needs and the document lacks. The update cannot apply before the document holds it (it may
 * still lack others then), so a buffer of waiting updates retries it only after that. */
void vv_crdt_seq_last_missing(const struct vv_crdt_seq *d, uint64_t *replica, uint64_t *seq);
/* Whether the document holds item seq of replica (its items 0..seq). */
bool vv_crdt_seq_has(const struct vv_crdt_seq *d, uint64_t replica, uint64_t seq);

/* The state vector (for every replica, how many of its items this document holds), encoded.
 * *out is vv_free()d by the caller. */
void vv_crdt_seq_state_vector(const struct vv_crdt_seq *d, uint8_t **out, size_t *out_len);

/*
 * Everything a peer with state vector `sv` (as encoded by vv_crdt_seq_state_vector; NULL/0
 * for an empty peer) is missing: its items plus every deletion. Returns 0 or VV_ECRDT_DECODE
 * for a malformed state vector. *out is vv_free()d by the caller.
 */
int vv_crdt_seq_encode_delta(struct vv_crdt_seq *d, const uint8_t *sv, size_t sv_len, uint8_t **out,
                             size_t *out_len);

/* The whole document, in document order (loads fastest into an empty document). */
void vv_crdt_seq_encode_state(struct vv_crdt_seq *d, uint8_t **out, size_t *out_len);

/* Brings into dst everything src has that dst lacks (src is not changed in content). Returns 0
 * or an error from vv_crdt_seq_apply. */
int vv_crdt_seq_merge(struct vv_crdt_seq *dst, struct vv_crdt_seq *src);

/* Number of runs (tree nodes) the document holds: for tests and benchmarks. */
size_t vv_crdt_seq_run_count(const struct vv_crdt_seq *d);

/* Bytes the document's structures hold (runs, seq indexes, agents, text array capacity),
 * not counting the allocator's per-block overhead: for tests and benchmarks. */
size_t vv_crdt_seq_mem_bytes(const struct vv_crdt_seq *d);

struct vv_crdt_seq_compact_stats {
    size_t runs_before, runs_after;   /* tree nodes */
    size_t chars_before, chars_after; /* code points kept in the text array */
    size_t bytes_before, bytes_after; /* vv_crdt_seq_mem_bytes */
};

/*
 * Compacts the document in memory: drops the text of deleted items (only visible text stays,
 * in document order), merges adjacent runs that continue each other (tombstones included, as
 * Yjs merges deleted items), repacks the seq indexes and trims every array to its size. Ids,
 * origins and tombstones all stay: the content, the state vector, every encoding
 * (vv_crdt_seq_encode_state gives the same bytes before and after) and every future update's
 * outcome are unchanged, so it may run at any time on any replica, without coordination.
 * Tombstone ids are not collected: docs/crdt.md ("Compaction") explains why that is not safe
 * under this algorithm, whatever the peers' state vectors say. `out` may be NULL.
 */
void vv_crdt_seq_compact(struct vv_crdt_seq *d, struct vv_crdt_seq_compact_stats *out);

#endif
