/*
 * The CRDT sync engine: this node's documents and the peers each is shared with, kept in
 * step over vv_env (channel VV_CHANNEL_CRDT). Sans-I/O: the same code runs in the daemon and
 * as many replicas in the simulator.
 *
 * How replicas converge (messages in docs/crdt.md, "Sync protocol"):
 *  - a local operation is applied, handed to the persistence callback, and sent as UPDATE to
 *    every joined peer that is connected;
 *  - a sync round is SYNC (document id, type, state vector, policy version, creator)
 *    answered by UPDATE with exactly what the asker lacks, and, when asked, a SYNC back so
 *    the other direction is filled too; SYNC and UPDATE name the document's creator, so that
 *    two documents of one name made by two nodes never mix;
 *  - a round runs when a document is joined with a peer, when that peer (re)connects, on
 *    crdt.sync, and every anti_entropy_ms with one joined peer chosen at random, so updates
 *    lost to disconnections or dropped sends are repaired;
 *  - every document has an access policy signed by its creator (crdt_policy.h): which nodes
 *    may read it, which may write it. It travels as POLICY before the rounds that may meet a
 *    node lacking it (join, reconnection) and whenever a SYNC shows the other side holds an
 *    older version; a node keeps the newest version signed by the creator it first saw;
 *  - an update too large for one frame goes through a stream (env_stream.h, sync_stream.c) and
 *    is applied whole once it arrived, up to VV_CRDT_SYNC_MAX_DOC_BYTES;
 *  - a POLICY for a document we do not hold creates it here (the policy's type) when it
 *    names this node, peers may create documents here (auto_join) and the cap is not
 *    reached; a SYNC alone never creates one.
 * Enforcement, on every message: SYNC is answered only for peers the policy lets read, and
 * with a delta only when this node may write (nobody would accept one from us otherwise);
 * UPDATE is applied only from peers the policy lets write (and joined to the document);
 * local operations need write access here; a node the policy shuts out stops syncing the
 * document. Refusals are counted by reason. Malformed
 * messages are counted and dropped; an update the document rejects changes nothing.
 */
#ifndef VIVIM_CRDT_SYNC_H
#define VIVIM_CRDT_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/crdt_doc.h"
#include "vivim/crdt_policy.h"
#include "vivim/env.h"

#define VV_CRDT_SYNC_MAX_DOCS        100000
#define VV_CRDT_SYNC_MAX_PEERS       256 /* joined peers per document */
#define VV_CRDT_SYNC_ANTI_ENTROPY_MS 5000
/*
 * Updates from peers waiting for their dependencies, all documents together (each document
 * also keeps its own VV_CRDT_DOC_MAX_PENDING bound). An honest update waits for less than a
 * sync round (its dependency is in flight, or in the deferred queue); one still waiting after
 * ten minutes, two hundred anti-entropy rounds, will not be completed by waiting longer. To
 * make room the oldest go first. Dropping is safe: deltas are computed from state vectors,
 * so the next round with the sender brings whatever is still missing.
 */
#define VV_CRDT_SYNC_PENDING_MAX_UPDATES 4096
#define VV_CRDT_SYNC_PENDING_MAX_BYTES   (32u << 20)
#define VV_CRDT_SYNC_PENDING_MAX_AGE_MS  (10u * 60 * 1000)
/*
 * The largest update (a delta or a whole state) accepted from a peer, and sent to one. An
 * update larger than a frame (1 MiB) travels through a stream (env_stream.h) and is
 * reassembled whole before it is applied, so this is also the memory one incoming update may
 * take. 64 MiB is a long book's text many times over, and within the stream layer's bounds
 * (96 MiB per peer, 256 MiB in all). The default of [crdt] max_document_bytes
 * (vv_crdt_engine_set_stream_limits).
 */
#define VV_CRDT_SYNC_MAX_DOC_BYTES (64u << 20)

/* Message types on the CRDT channel (high byte 0x03). */
enum {
    VV_CRDT_MSG_SYNC = 0x0300,
    VV_CRDT_MSG_UPDATE = 0x0301,
    VV_CRDT_MSG_LEAVE = 0x0302,
    VV_CRDT_MSG_POLICY = 0x0303,
};

/* Why a peer's message was refused by a document's access policy (counted in
 * vv_crdt_sync_stats.refused, vivimd_crdt_refused_total{reason}). */
enum vv_crdt_refusal {
    VV_CRDT_REFUSED_READ,       /* SYNC from a node the policy does not let read: "read" */
    VV_CRDT_REFUSED_WRITE,      /* UPDATE from a node the policy does not let write: "write" */
    VV_CRDT_REFUSED_UNKNOWN,    /* SYNC for a document not held here: "unknown_doc" */
    VV_CRDT_REFUSED_NOT_MEMBER, /* POLICY for a document we lack, not naming us: "not_member" */
    VV_CRDT_REFUSED_CREATOR,    /* POLICY from another creator than the known one: "creator" */
    VV_CRDT_REFUSED_FORGED,     /* POLICY malformed or not signed by its creator: "forged" */
    VV_CRDT_REFUSED_STALE,      /* POLICY older than the one held: "stale" */
    VV_CRDT_REFUSAL_COUNT
};
/* The metric label of a reason. */
const char *vv_crdt_refusal_name(enum vv_crdt_refusal r);

struct vv_crdt_sync_cbs {
    /* A document appeared because a peer sent its policy naming us (persist its creation).
     * It holds that policy already; the callback may join peers to it. */
    void (*created)(void *arg, struct vv_crdt_doc *d);
    /* An update was accepted into d (local: made here). Persist it. */
    void (*updated)(void *arg, struct vv_crdt_doc *d, const uint8_t *update, size_t len,
                    bool local);
    /* The set of peers d is shared with changed (persist it). */
    void (*peers_changed)(void *arg, struct vv_crdt_doc *d);
    /* d's access policy is new (made here, or a newer version from a peer): persist p
     * (borrowed for the call). */
    void (*policy_changed)(void *arg, struct vv_crdt_doc *d, const struct vv_crdt_policy *p);
    /* A peer's message was refused (the stats count it too). */
    void (*refused)(void *arg, enum vv_crdt_refusal why);
};

struct vv_crdt_sync_stats {
    uint64_t updates_sent, updates_received, updates_rejected, updates_buffered;
    /* POLICY for documents we lacked that named us: created, or not (auto_join off, or the
     * max_peer_docs cap). */
    uint64_t docs_created_by_peers, docs_refused;
    uint64_t refused[VV_CRDT_REFUSAL_COUNT];   /* by the access policy, per reason */
    uint64_t policies_sent, policies_accepted; /* accepted: newer versions from peers */
    /* too_large: updates not sent because they exceed VV_CRDT_SYNC_MAX_DOC_BYTES, or SYNC
     * messages over a frame. */
    uint64_t syncs_sent, syncs_received, bad_messages, send_failures, too_large;
    /* Refused updates by cause: over the integration budget, or an impossible history. */
    uint64_t updates_too_costly, updates_forged;
    uint64_t integration_steps; /* scan steps spent integrating text updates from peers */
    /* Messages held for a later loop turn once a turn's work allowance is spent: waiting
     * now (count and bytes), ever deferred, dropped because the queue was full. */
    uint64_t deferred_msgs, deferred_bytes, deferred_total, deferred_dropped;
    /* Updates waiting for their dependencies, every document: now (count, bytes), and dropped
     * to make room for newer ones (oldest first), or past the age limit. */
    uint64_t pending_updates, pending_bytes, pending_evicted, pending_expired;
    /* Updates larger than a frame, through streams: sent and received whole; streams that
     * ended otherwise (either way); sends skipped because a stream of that document to that
     * peer was still going; bytes of updates held for streams being sent, now; bytes received
     * in streams; malformed or rule-breaking stream frames from peers. */
    uint64_t streams_sent, streams_received, streams_failed, streams_skipped;
    uint64_t stream_bytes_in_flight, stream_bytes_received, stream_bad_frames;
};

struct vv_crdt_engine;

/*
 * replica: this engine's replica id in every document, or 0 for a random one. vivimd uses a
 * random replica id per process start, as Yjs does per session: a node that crashed after
 * sending an update it had not yet made durable can then never reuse that update's ids.
 * cbs may be NULL. anti_entropy_ms 0 = VV_CRDT_SYNC_ANTI_ENTROPY_MS.
 */
struct vv_crdt_engine *vv_crdt_engine_new(struct vv_env *env, uint64_t replica,
                                          uint32_t anti_entropy_ms,
                                          const struct vv_crdt_sync_cbs *cbs, void *arg);
void vv_crdt_engine_free(struct vv_crdt_engine *e);
/* How many documents peers may create here by syncing them to us (default 10,000): beyond
 * it, SYNC for an unknown document is ignored and counted. */
void vv_crdt_engine_set_max_peer_docs(struct vv_crdt_engine *e, uint32_t max);
/* Whether a peer the policy allows that syncs a document with us is joined to it, and a
 * peer's POLICY naming this node creates the document here: true by default. false: only
 * peers joined here (vv_crdt_engine_join) are synced with, SYNC from any other peer is
 * ignored and counted (docs_refused), and peers create no documents here. */
void vv_crdt_engine_set_auto_join(struct vv_crdt_engine *e, bool on);
/* Bounds of updates larger than a frame, which travel as streams (env_stream.h); 0 keeps
 * one. max_doc_bytes (default VV_CRDT_SYNC_MAX_DOC_BYTES): the largest update accepted
 * from a peer, and sent to one (a larger one is counted too_large; peers should agree on
 * it). The other three are the stream mux's (vv_stream_mux_set_limits). Streams already
 * open keep what they reserved. [crdt] max_document_bytes, max_streams_per_peer,
 * stream_peer_mb and stream_total_mb. */
void vv_crdt_engine_set_stream_limits(struct vv_crdt_engine *e, uint64_t max_doc_bytes,
                                      uint32_t max_streams_per_peer, uint64_t max_peer_bytes,
                                      uint64_t max_total_bytes);
/* The budget of updates waiting for their dependencies, all documents together (defaults:
 * VV_CRDT_SYNC_PENDING_MAX_*). Applied at once. */
void vv_crdt_engine_set_pending_limits(struct vv_crdt_engine *e, size_t max_updates,
                                       size_t max_bytes, uint64_t max_age_ms);
/* Replaces the callbacks (NULL: none). */
void vv_crdt_engine_set_cbs(struct vv_crdt_engine *e, const struct vv_crdt_sync_cbs *cbs,
                            void *arg);

/* Creates an empty document, with this node as its creator and a policy (version 1) that
 * lets no other node in. VV_EEXIST when the id is taken, VV_EINVAL for a bad id. */
int vv_crdt_engine_create(struct vv_crdt_engine *e, const char *id, enum vv_crdt_kind kind,
                          struct vv_crdt_doc **out);
/* Adopts a document loaded from disk (takes d) with its joined peers. It has no policy (lets
 * no peer in) until vv_crdt_engine_adopt_policy or vv_crdt_engine_set_access gives it one. */
int vv_crdt_engine_adopt(struct vv_crdt_engine *e, struct vv_crdt_doc *d, const uint8_t *peers,
                         size_t n_peers);
/* Gives an adopted document its stored policy (checked and verified again: VV_ECRDT_POLICY
 * when it is not valid for that document). Joined peers it does not let read are dropped. */
int vv_crdt_engine_adopt_policy(struct vv_crdt_engine *e, const char *id, const uint8_t *policy,
                                size_t len);
/* The document's policy (borrowed until it changes), NULL when it has none. */
const struct vv_crdt_policy *vv_crdt_engine_policy(const struct vv_crdt_engine *e, const char *id);
/*
 * Replaces the lists of the document's policy: a new version signed by this node. Only the
 * creator may (VV_ECRDT_DENIED otherwise); a document without a policy (stored before
 * policies) gets its first one, with this node as creator and VV_CRDT_POLICY_ADOPTED; the
 * flag stays in later versions. The policy is sent to the joined peers; those it no longer lets
 * read are dropped from the document's peers (they stop syncing; a node that finds itself
 * shut out by a policy it takes drops all its peers of that document and keeps its copy). VV_ELIMIT
 * past VV_CRDT_POLICY_MAX_NODES.
 */
int vv_crdt_engine_set_access(struct vv_crdt_engine *e, const char *id, const uint8_t *readers,
                              size_t n_readers, const uint8_t *writers, size_t n_writers);
struct vv_crdt_doc *vv_crdt_engine_find(const struct vv_crdt_engine *e, const char *id);
/* Drops a document from memory and from its peers' sync (LEAVE sent). */
int vv_crdt_engine_remove(struct vv_crdt_engine *e, const char *id);

/* A local operation (JSON, see crdt_doc.h): applied, persisted (callback), sent.
 * VV_ECRDT_DENIED when the policy does not let this node write. */
int vv_crdt_engine_op(struct vv_crdt_engine *e, const char *id, const json_t *op, char *err,
                      size_t err_len);
/* Shares a document with a peer and starts a sync round with it (when connected): the
 * policy, then SYNC. VV_ECRDT_DENIED when the policy does not let that peer read, or no
 * longer lets this node in. */
int vv_crdt_engine_join(struct vv_crdt_engine *e, const char *id,
                        const uint8_t peer[VV_NODE_ID_BYTES]);
/* Stops sharing with peer (NULL: with every peer); the peers are told. */
int vv_crdt_engine_leave(struct vv_crdt_engine *e, const char *id, const uint8_t *peer);
/* A sync round with peer now (it must be joined). VV_ECONN_NOT_CONNECTED when not connected. */
int vv_crdt_engine_sync(struct vv_crdt_engine *e, const char *id,
                        const uint8_t peer[VV_NODE_ID_BYTES]);

/* Listing. */
size_t vv_crdt_engine_count(const struct vv_crdt_engine *e);
struct vv_crdt_doc *vv_crdt_engine_doc_at(const struct vv_crdt_engine *e, size_t i);
size_t vv_crdt_engine_peers(const struct vv_crdt_engine *e, const char *id,
                            const uint8_t **peers); /* n × 32 bytes, borrowed */
const struct vv_crdt_sync_stats *vv_crdt_engine_stats(const struct vv_crdt_engine *e);

uint64_t vv_crdt_engine_replica(const struct vv_crdt_engine *e);

/* The node module (crdt_module.c): the engine on the node's environment, the document store
 * in state_dir/crdt.sqlite, the crdt.* RPC methods. */
struct vv_module;
extern const struct vv_module vv_crdt_module;

/* [crdt] in vivimd.conf (src/crdt/crdt_config.c). */
struct vv_crdt_settings {
    uint32_t anti_entropy_ms;    /* how often each shared document is re-synced */
    uint32_t compact_updates;    /* logged updates per document before a snapshot */
    uint32_t max_peer_documents; /* documents peers may create here by syncing them */
    bool auto_join;              /* a peer syncing a document with us is joined to it */
    int synchronous;             /* VV_CONFIG_SYNC_NORMAL or _FULL */
    uint32_t max_document_bytes; /* largest update over a stream, either way */
    uint32_t max_streams_per_peer;
    uint32_t stream_peer_mb, stream_total_mb; /* incoming stream buffers, MiB */
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_crdt_settings_section;
const struct vv_crdt_settings *vv_crdt_settings(const struct vv_config *c);

/* For tests: the longest chain in the table of documents by id. */
size_t vv__crdt_engine_longest_chain(const struct vv_crdt_engine *e);

#endif
