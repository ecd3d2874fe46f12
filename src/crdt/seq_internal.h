/*
 * What the sequence CRDT's two files share: the document's structures (seq.c owns them) and
 * the hooks the codec (seq_codec.c) uses to read runs and to integrate decoded ones.
 *
 * A document is a sequence of runs in document order, tombstones included. A run is a span of
 * items one replica inserted with consecutive seqs, each item's left origin being the item
 * before it and all sharing one right origin, with one deleted flag: typing a paragraph makes
 * one run. Runs are the nodes of a splay tree ordered by document position, each node
 * carrying the visible and total item counts of its subtree; the node touched last sits at
 * the root, which makes it the cursor that sequential typing finds again in O(1). Each
 * replica (an "agent", numbered locally in order of appearance) has an index from seq to the
 * run that holds it, so an id is found in O(log n).
 */
#ifndef VIVIM_CRDT_SEQ_INTERNAL_H
#define VIVIM_CRDT_SEQ_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "vivim/crdt_seq.h"

#define VV__SEQ_NONE       UINT32_MAX /* agent of an absent origin (document start or end) */
#define VV__SEQ_NO_CONTENT UINT32_MAX /* coff of a run whose characters are not kept */
#define VV__SEQ_IDX_BLOCK  64         /* entries per block of an agent's seq index */

struct vv__seq_id {
    uint32_t agent; /* local agent index, or VV__SEQ_NONE */
    uint32_t seq;
};

struct vv__seq_run {
    struct vv__seq_run *l, *r, *p; /* splay tree links */
    uint64_t sub_vis, sub_raw;     /* visible and total items in this subtree */
    uint32_t agent, seq, len;      /* items (agent, seq) .. (agent, seq + len - 1), len >= 1 */
    uint32_t coff;                 /* first character in d->chars, or VV__SEQ_NO_CONTENT */
    struct vv__seq_id ol;          /* left origin of the first item (the others: previous) */
    struct vv__seq_id orr;         /* right origin of every item */
    bool deleted;                  /* deleted runs have coff == VV__SEQ_NO_CONTENT */
};

/* One block of an agent's index: run starts sorted by seq. */
struct vv__seq_idx_block {
    uint32_t n;
    uint32_t seq[VV__SEQ_IDX_BLOCK];
    struct vv__seq_run *run[VV__SEQ_IDX_BLOCK];
};

struct vv__seq_agent {
    uint64_t id;       /* the replica id */
    uint32_t next_seq; /* items 0 .. next_seq - 1 are known; the state vector entry */
    struct vv__seq_idx_block **blocks; /* non-empty blocks, in seq order; they tile the items */
    uint32_t nblocks, cap_blocks;
};

struct vv_crdt_seq {
    uint32_t self; /* agent index of the local replica */
    struct vv__seq_agent *agents;
    uint32_t nagents, cap_agents;
    uint32_t *by_id; /* agent indices sorted by replica id */
    struct vv__seq_run *root;
    size_t nruns;
    uint32_t *chars; /* code points of inserted text, append-only; runs point into it */
    size_t nchars, cap_chars;
    uint64_t last_work; /* scan steps the last applied update took */
    /* The item the last update refused with VV_ECRDT_CAUSALITY waits for: (replica id, seq). */
    uint64_t missing_replica, missing_seq;
};

/*
 * One remote update's integration as a transaction: what each placement changed, so that an
 * update found too costly or impossible halfway is undone whole, and the scan steps spent
 * against the update's budget.
 */
struct vv__seq_undo {
    enum { VV__SEQ_UNDO_NEW, VV__SEQ_UNDO_EXTEND, VV__SEQ_UNDO_SPLIT } kind;
    struct vv__seq_run *x; /* the new run, the extended run, or the split run's left part */
    struct vv__seq_run *y; /* the split's right part */
    uint32_t len;          /* items an extension added */
};

struct vv__seq_txn {
    struct vv__seq_undo *log;
    size_t n, cap;
    uint64_t steps, max_steps;
    uint32_t nagents; /* agents before the update */
    size_t nchars;    /* code points before the update */
};

static inline bool vv__seq_id_eq(struct vv__seq_id a, struct vv__seq_id b)
{
    return a.agent == b.agent && (a.agent == VV__SEQ_NONE || a.seq == b.seq);
}

/* seq.c, for the codec. */
uint32_t vv__seq_agent_find(const struct vv_crdt_seq *d, uint64_t id); /* or VV__SEQ_NONE */
uint32_t vv__seq_agent_add(struct vv_crdt_seq *d, uint64_t id);
struct vv__seq_run *vv__seq_first(const struct vv_crdt_seq *d);
struct vv__seq_run *vv__seq_next(const struct vv__seq_run *x);
/* The run of the agent's index entry at or after seq (seq < next_seq), and its position. */
struct vv__seq_run *vv__seq_idx_find(const struct vv__seq_agent *a, uint32_t seq, uint32_t *bi,
                                     uint32_t *ei);
uint32_t vv__seq_chars_append(struct vv_crdt_seq *d, const uint32_t *cps, size_t n);
/* Starts a transaction before any agent or text of the update is added. */
void vv__seq_txn_begin(struct vv_crdt_seq *d, struct vv__seq_txn *t, uint64_t max_steps);
/* Undoes every placement, agent and text the transaction added, and ends it. */
void vv__seq_txn_rollback(struct vv_crdt_seq *d, struct vv__seq_txn *t);
/* Keeps what the transaction did, and ends it. */
void vv__seq_txn_commit(struct vv_crdt_seq *d, struct vv__seq_txn *t);
/* Integrates new items (seq == next_seq of the agent; origins present) inside a transaction.
 * Returns 0, VV_ECRDT_HISTORY when the scan meets an item of the same agent (the new item's
 * origins say its writer never saw it: impossible for an honest replica), or VV_ECRDT_COST
 * when the transaction's scan budget runs out; the caller then rolls back. */
int vv__seq_integrate(struct vv_crdt_seq *d, struct vv__seq_txn *t, uint32_t agent, uint32_t seq,
                      uint32_t len, struct vv__seq_id ol, struct vv__seq_id orr, uint32_t coff,
                      bool deleted);
/* Marks items deleted (they exist). */
void vv__seq_delete_ids(struct vv_crdt_seq *d, uint32_t agent, uint32_t seq, uint32_t len);
/* Builds an empty document's tree from runs already in document order (the load fast path);
 * takes the runs, whose per-agent index the caller has appended in seq order. */
void vv__seq_build(struct vv_crdt_seq *d, struct vv__seq_run **runs, size_t n);
struct vv__seq_run *vv__seq_run_new(uint32_t agent, uint32_t seq, uint32_t len,
                                    struct vv__seq_id ol, struct vv__seq_id orr, uint32_t coff,
                                    bool deleted);
void vv__seq_idx_append(struct vv__seq_agent *a, struct vv__seq_run *r);

/* seq_codec.c, for seq.c: the update of one local insert or delete. */
void vv__seq_encode_insert(const struct vv_crdt_seq *d, uint32_t seq, uint32_t len,
                           struct vv__seq_id ol, struct vv__seq_id orr, uint32_t coff,
                           uint8_t **out, size_t *out_len);
struct vv__seq_range {
    uint32_t agent, seq, len;
};
void vv__seq_encode_deletes(const struct vv_crdt_seq *d, const struct vv__seq_range *r, size_t n,
                            uint8_t **out, size_t *out_len);

/* UTF-8, strict (no overlong forms, surrogates or code points past U+10FFFF). */
size_t vv__seq_utf8_put(uint8_t *out, uint32_t cp); /* out holds 4 bytes; returns 1..4 */
/* Decodes one code point from s[0..n); returns its byte length, or 0 if invalid. */
size_t vv__seq_utf8_get(const uint8_t *s, size_t n, uint32_t *cp);

#endif
