/*
 * The CRDT sync engine (see crdt_sync.h for the protocol). Who owns what: the engine owns
 * every document (struct vv_crdt_doc) and, per document, the list of peers it is shared
 * with and its access policy; documents are found by id through a chained hash table and
 * listed through an array (removal moves the last entry into the hole). Invariant: every
 * joined peer of a document may read it under its policy (a policy change drops the others).
 */
#include <msgpack.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/crdt_sync.h"
#include "vivim/keyed_hash.h"
#include "vivim/log.h"
#include "sync_stream.h"
#include "vivim/env_stream.h"
#include "vivim/wire.h"

#define AE_DOCS_PER_TICK 256 /* anti-entropy rounds started per tick, at most */

/*
 * Work from peers is metered per loop turn (turns are told apart by env time, which the
 * daemon's driver reads once per turn): a message costs its bytes plus, for a text update,
 * the scan steps its integration took, and the delta bytes a SYNC made us encode times
 * DELTA_BYTE_WORK. Once a turn has spent TURN_WORK, messages wait in a bounded queue for the
 * next turns (a 1 ms timer), oldest first, so a read full of small costly messages cannot
 * hold the loop: one message at most overshoots the turn's allowance, and a text update
 * costs at most VV_CRDT_SEQ_WORK_MAX steps. Retrying buffered updates that a message
 * unblocked counts too (bytes decoded again plus their scan steps): a message retries at most
 * VV_CRDT_DOC_DRAIN_WORK, the rest goes on in later turns before the queued messages. About
 * 8 ns a step on the benchmark machines: TURN_WORK is a few milliseconds.
 */
#define TURN_WORK       (512u << 10)
#define DELTA_BYTE_WORK 4u
#define DEFER_MAX_MSGS  4096u
#define DEFER_MAX_BYTES (16u << 20)
/*
 * The largest update sent in one UPDATE frame: the frame limit less room for the header, the
 * document id (at most 128 bytes) and the bin's length field. A larger one goes through a
 * stream (sync_stream.c).
 */
#define INLINE_MAX_BYTES (VV_WIRE_MAX_FRAME_BYTES - 256)
/*
 * Large updates (complete streams) waiting in the deferred queue, in bytes. Outside the
 * queue's own byte bound (one would not fit in it), but bounded too: once a stream completes
 * the stream layer no longer counts its bytes, so peers finishing streams faster than the
 * loop applies them would otherwise pile them up here. As much as the stream layer may hold
 * for all peers together (VV_STREAM_MAX_TOTAL_BYTES); past it the update is dropped (counted
 * as deferred_dropped) and the next round brings it again.
 */
#define DEFER_MAX_LARGE_BYTES (256u << 20)
/* What checking a POLICY's signature costs the turn, in the same units: an Ed25519
 * verification takes about 50 us, some six thousand 8 ns steps. */
#define POLICY_VERIFY_WORK 8192u

struct deferred {
    struct deferred *next;
    uint8_t peer[VV_NODE_ID_BYTES];
    size_t len;
    /* A large update that came through a stream (large_id its document), or NULL: a message
     * in data. */
    char *large_id;
    uint8_t *large;
    uint8_t data[];
};

struct entry {
    struct vv_crdt_doc *doc;
    struct entry *dnext; /* in e->drain_head's list, when drain_queued */
    bool drain_queued;
    uint8_t (*peers)[VV_NODE_ID_BYTES];
    size_t n_peers, cap_peers;
    struct vv_crdt_policy *pol; /* NULL: none yet (adopted from disk), nobody else may in */
    size_t index;               /* in e->list */
    struct entry *hnext;
};

struct vv_crdt_engine {
    struct vv_env *env;
    uint64_t replica;
    struct vv_hlc clock;
    struct vv_crdt_sync_cbs cbs;
    void *arg;
    struct entry **list;
    size_t n, cap;
    struct entry **buckets;
    size_t n_buckets;
    uint64_t timer;
    uint32_t ae_ms;
    uint32_t max_peer_docs;
    bool auto_join;
    size_t ae_cursor;
    struct vv_crdt_sync_stats stats;
    uint64_t last_warn_ms;               /* refused updates are logged at most once a second */
    uint64_t unlogged;                   /* refusals since the last line */
    uint64_t turn_ms;                    /* env time of the turn being metered */
    uint64_t turn_work;                  /* work spent in it */
    struct deferred *dq_head, **dq_tail; /* messages waiting for a later turn, oldest first */
    uint64_t dq_timer;
    /* Buffered updates of every document, bounded together; documents whose buffered
     * updates were unblocked but not all retried yet (their drain goes on in later turns). */
    struct vv_crdt_pending_pool *pool;
    struct entry *drain_head, **drain_tail;
    uint64_t drops_logged, drops_log_ms;     /* dropped buffered updates already logged; when */
    struct vv__crdt_bulk *bulk;              /* updates larger than a frame, both ways */
    uint64_t max_doc_bytes;                  /* the largest update sent over a stream */
    uint64_t deferred_large_bytes;           /* of them, waiting in the deferred queue */
    uint64_t refuse_log_ms, refuse_unlogged; /* refusals by policy: one line a second */
};

uint64_t vv_crdt_engine_replica(const struct vv_crdt_engine *e)
{
    return e->replica;
}

/* ---- the table -------------------------------------------------------------------------- */

/* Keyed: peers name documents (a POLICY naming this node creates one here), and ids that collide
 * under an unkeyed hash such as FNV-1a take a few million tries to find. Nothing walks the
 * buckets for output: listing goes through e->list, so the random key shows nowhere. */
static uint64_t hash_id(const char *s)
{
    return vv_keyed_hash64(s, strlen(s));
}

static struct entry *find_entry(const struct vv_crdt_engine *e, const char *id)
{
    for (struct entry *x = e->buckets[hash_id(id) & (e->n_buckets - 1)]; x; x = x->hnext)
        if (strcmp(vv_crdt_doc_id(x->doc), id) == 0)
            return x;
    return NULL;
}

size_t vv__crdt_engine_longest_chain(const struct vv_crdt_engine *e)
{
    size_t worst = 0;
    for (size_t b = 0; b < e->n_buckets; b++) {
        size_t n = 0;
        for (const struct entry *x = e->buckets[b]; x; x = x->hnext)
            n++;
        worst = VV_MAX(worst, n);
    }
    return worst;
}

static void rehash(struct vv_crdt_engine *e, size_t n)
{
    struct entry **b = vv_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < e->n; i++) {
        struct entry *x = e->list[i];
        size_t k = hash_id(vv_crdt_doc_id(x->doc)) & (n - 1);
        x->hnext = b[k];
        b[k] = x;
    }
    vv_free(e->buckets);
    e->buckets = b;
    e->n_buckets = n;
}

/* The pool's figures into the stats (after every change of the pool). */
static void pending_copy(struct vv_crdt_engine *e)
{
    const struct vv_crdt_pending_stats *ps = vv_crdt_pending_pool_stats(e->pool);
    e->stats.pending_updates = ps->updates;
    e->stats.pending_bytes = ps->bytes;
    e->stats.pending_evicted = ps->evicted;
    e->stats.pending_expired = ps->expired;
}

static struct entry *add_entry(struct vv_crdt_engine *e, struct vv_crdt_doc *d)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 16;
        e->list = vv_xrealloc(e->list, e->cap * sizeof(*e->list));
    }
    struct entry *x = vv_xcalloc(1, sizeof(*x));
    x->doc = d;
    x->index = e->n;
    e->list[e->n++] = x;
    if (e->n > e->n_buckets)
        rehash(e, e->n_buckets * 2);
    else {
        size_t k = hash_id(vv_crdt_doc_id(d)) & (e->n_buckets - 1);
        x->hnext = e->buckets[k];
        e->buckets[k] = x;
    }
    vv_crdt_doc_set_pool(d, e->pool);
    pending_copy(e);
    return x;
}

static void remove_entry(struct vv_crdt_engine *e, struct entry *x)
{
    struct entry **pp = &e->buckets[hash_id(vv_crdt_doc_id(x->doc)) & (e->n_buckets - 1)];
    while (*pp != x)
        pp = &(*pp)->hnext;
    *pp = x->hnext;
    if (x->drain_queued) {
        struct entry **dp = &e->drain_head;
        while (*dp != x)
            dp = &(*dp)->dnext;
        *dp = x->dnext;
        if (e->drain_tail == &x->dnext)
            e->drain_tail = dp;
    }
    struct entry *last = e->list[--e->n];
    e->list[x->index] = last;
    last->index = x->index;
    vv_crdt_doc_free(x->doc); /* its buffered updates leave the pool */
    pending_copy(e);
    vv_crdt_policy_free(x->pol);
    vv_free(x->peers);
    vv_free(x);
}

static bool has_peer(const struct entry *x, const uint8_t peer[VV_NODE_ID_BYTES])
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (memcmp(x->peers[i], peer, VV_NODE_ID_BYTES) == 0)
            return true;
    return false;
}

static int add_peer(struct vv_crdt_engine *e, struct entry *x, const uint8_t peer[VV_NODE_ID_BYTES])
{
    if (has_peer(x, peer))
        return 0;
    if (memcmp(peer, e->env->identity->node_id, VV_NODE_ID_BYTES) == 0)
        return VV_EINVAL;
    if (x->n_peers == VV_CRDT_SYNC_MAX_PEERS)
        return VV_ELIMIT;
    if (x->n_peers == x->cap_peers) {
        x->cap_peers = x->cap_peers ? 2 * x->cap_peers : 4;
        x->peers = vv_xrealloc(x->peers, x->cap_peers * VV_NODE_ID_BYTES);
    }
    memcpy(x->peers[x->n_peers++], peer, VV_NODE_ID_BYTES);
    if (e->cbs.peers_changed)
        e->cbs.peers_changed(e->arg, x->doc);
    return 0;
}

static void drop_peer(struct vv_crdt_engine *e, struct entry *x,
                      const uint8_t peer[VV_NODE_ID_BYTES])
{
    for (size_t i = 0; i < x->n_peers; i++) {
        if (memcmp(x->peers[i], peer, VV_NODE_ID_BYTES) == 0) {
            memmove(x->peers[i], x->peers[x->n_peers - 1], VV_NODE_ID_BYTES);
            x->n_peers--;
            if (e->cbs.peers_changed)
                e->cbs.peers_changed(e->arg, x->doc);
            return;
        }
    }
}

/* ---- messages ------------------------------------------------------------------------------ */

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_bin(msgpack_packer *pk, const uint8_t *b, size_t n)
{
    msgpack_pack_bin(pk, n);
    if (n > 0)
        msgpack_pack_bin_body(pk, b, n);
}

static int send_sb(struct vv_crdt_engine *e, const uint8_t peer[VV_NODE_ID_BYTES],
                   msgpack_sbuffer *sb)
{
    int rc;
    if (sb->size > VV_WIRE_MAX_FRAME_BYTES) {
        e->stats.too_large++;
        rc = VV_ELIMIT;
    } else {
        rc = vv_env_send(e->env, peer, VV_CHANNEL_CRDT, (const uint8_t *)sb->data, sb->size);
        if (rc != 0)
            e->stats.send_failures++;
    }
    msgpack_sbuffer_destroy(sb);
    return rc;
}

static int send_sync(struct vv_crdt_engine *e, struct entry *x,
                     const uint8_t peer[VV_NODE_ID_BYTES], bool reply)
{
    uint8_t *sv;
    size_t sv_len;
    if (x->pol == NULL)
        return VV_ECRDT_DENIED; /* adopted without a policy yet: no peer may in */
    if (vv_crdt_doc_state_vector(x->doc, &sv, &sv_len) != 0)
        return VV_ECRDT_TYPE;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_SYNC, 0);
    msgpack_pack_array(&pk, 6);
    pack_str(&pk, vv_crdt_doc_id(x->doc));
    msgpack_pack_uint8(&pk, (uint8_t)vv_crdt_doc_kind(x->doc));
    pack_bin(&pk, sv, sv_len);
    if (reply)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    msgpack_pack_uint64(&pk, x->pol->version); /* so the peer knows if ours is old */
    pack_bin(&pk, x->pol->creator, VV_NODE_ID_BYTES);
    vv_free(sv);
    int rc = send_sb(e, peer, &sb);
    if (rc == 0)
        e->stats.syncs_sent++;
    return rc;
}

static int send_update(struct vv_crdt_engine *e, struct entry *x,
                       const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *u, size_t len)
{
    if (len > INLINE_MAX_BYTES) {
        /* Larger than a frame: through a stream, unless a peer would refuse it anyway. */
        int rc = VV_ELIMIT;
        if (len > e->max_doc_bytes)
            e->stats.too_large++;
        else
            rc = vv__crdt_bulk_send(e->bulk, peer, vv_crdt_doc_id(x->doc), x->pol->creator, u, len);
        if (rc == 0)
            e->stats.updates_sent++;
        else if (rc != VV_EBUSY)
            e->stats.send_failures++;
        return rc;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_UPDATE, 0);
    msgpack_pack_array(&pk, 3);
    pack_str(&pk, vv_crdt_doc_id(x->doc));
    pack_bin(&pk, u, len);
    pack_bin(&pk, x->pol->creator, VV_NODE_ID_BYTES); /* which document of that name */
    int rc = send_sb(e, peer, &sb);
    if (rc == 0)
        e->stats.updates_sent++;
    return rc;
}

/* The document's policy, to a peer that may lack it or hold an older version. */
static void send_policy(struct vv_crdt_engine *e, struct entry *x,
                        const uint8_t peer[VV_NODE_ID_BYTES])
{
    if (x->pol == NULL)
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_POLICY, 0);
    msgpack_pack_array(&pk, 2);
    pack_str(&pk, vv_crdt_doc_id(x->doc));
    pack_bin(&pk, x->pol->bytes, x->pol->len);
    if (send_sb(e, peer, &sb) == 0)
        e->stats.policies_sent++;
}

static enum vv_crdt_access access_of(const struct entry *x, const uint8_t node[VV_NODE_ID_BYTES])
{
    return vv_crdt_policy_access(x->pol, node);
}

static bool self_writes(const struct vv_crdt_engine *e, const struct entry *x)
{
    return access_of(x, e->env->identity->node_id) == VV_CRDT_ACCESS_WRITE;
}

static bool self_reads(const struct vv_crdt_engine *e, const struct entry *x)
{
    return access_of(x, e->env->identity->node_id) != VV_CRDT_ACCESS_NONE;
}

static void send_leave(struct vv_crdt_engine *e, const char *id,
                       const uint8_t peer[VV_NODE_ID_BYTES])
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_LEAVE, 0);
    msgpack_pack_array(&pk, 1);
    pack_str(&pk, id);
    send_sb(e, peer, &sb);
}

/* ---- receiving ------------------------------------------------------------------------------ */

static bool get_id(const msgpack_object *o, char *out)
{
    const char *s;
    size_t n;
    if (vv_wire_get_str(o, VV_CRDT_DOC_ID_MAX_BYTES, &s, &n) != 0 || n == 0)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return vv_crdt_doc_id_valid(out);
}

/* Copies the pool's figures into the stats, and logs buffered updates dropped since the
 * last line (at most one line a minute: a peer may cause many). */
static void pending_note(struct vv_crdt_engine *e)
{
    const struct vv_crdt_pending_stats *ps = vv_crdt_pending_pool_stats(e->pool);
    pending_copy(e);
    uint64_t dropped = ps->evicted + ps->expired;
    uint64_t now = vv_env_now(e->env);
    if (dropped > e->drops_logged && (e->drops_log_ms == 0 || now - e->drops_log_ms >= 60000)) {
        vv_log_warn("crdt",
                    "%llu update(s) waiting for their dependencies dropped (%llu in all: %llu "
                    "past the age limit, %llu over the budget); the next sync round with their "
                    "senders brings again what is still missing",
                    (unsigned long long)(dropped - e->drops_logged), (unsigned long long)dropped,
                    (unsigned long long)ps->expired, (unsigned long long)ps->evicted);
        e->drops_logged = dropped;
        e->drops_log_ms = now ? now : 1;
    }
}

static void defer_arm(struct vv_crdt_engine *e);

/* Meters what the last apply or drain on x cost; queues x when its drain is unfinished. */
static void drain_account(struct vv_crdt_engine *e, struct entry *x)
{
    uint64_t steps = vv_crdt_doc_last_work(x->doc);
    e->stats.integration_steps += steps;
    e->turn_work += steps + vv_crdt_doc_last_drain_work(x->doc);
    if (vv_crdt_doc_drain_due(x->doc) && !x->drain_queued) {
        x->drain_queued = true;
        x->dnext = NULL;
        *e->drain_tail = x;
        e->drain_tail = &x->dnext;
        defer_arm(e);
    }
}

static void apply_remote(struct vv_crdt_engine *e, struct entry *x,
                         const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *u, size_t len)
{
    if (len == 0)
        return; /* nothing to bring */
    bool buffered = false;
    uint64_t before = vv_crdt_doc_fingerprint(x->doc);
    /* Twice (before and after): a set or map encodes its whole state each time. */
    e->turn_work += 2 * (uint64_t)vv_crdt_doc_fingerprint_bytes(x->doc) * DELTA_BYTE_WORK;
    vv_crdt_pending_pool_set_now(e->pool, vv_env_now(e->env));
    vv_crdt_pending_pool_expire(e->pool);
    int rc = vv_crdt_doc_apply(x->doc, u, len, &buffered);
    drain_account(e, x);
    pending_note(e);
    if (rc != 0) {
        e->stats.updates_rejected++;
        e->stats.updates_too_costly += rc == VV_ECRDT_COST;
        e->stats.updates_forged += rc == VV_ECRDT_HISTORY;
        /* A peer can send these as fast as it likes: one line a second says enough. */
        uint64_t now = vv_env_now(e->env);
        if (e->last_warn_ms == 0 || now - e->last_warn_ms >= 1000) {
            char hex[2 * VV_NODE_ID_BYTES + 1];
            vv_hex_encode(peer, VV_NODE_ID_BYTES, hex);
            vv_log_warn(
                "crdt", "update to %s from peer %.16s refused: %s (%llu more since the last)",
                vv_crdt_doc_id(x->doc), hex, vv_strerror(rc), (unsigned long long)e->unlogged);
            e->last_warn_ms = now ? now : 1;
            e->unlogged = 0;
        } else {
            e->unlogged++;
        }
        return;
    }
    e->stats.updates_received++;
    if (buffered)
        e->stats.updates_buffered++;
    /* A buffered update is kept for persistence too: it will apply after a restart as it
     * will here. One that brought nothing new (a repeated delta) is not logged. */
    if (e->cbs.updated && (buffered || vv_crdt_doc_fingerprint(x->doc) != before))
        e->cbs.updated(e->arg, x->doc, u, len, false);
}

static const char *const refusal_names[VV_CRDT_REFUSAL_COUNT] = {
    [VV_CRDT_REFUSED_READ] = "read",           [VV_CRDT_REFUSED_WRITE] = "write",
    [VV_CRDT_REFUSED_UNKNOWN] = "unknown_doc", [VV_CRDT_REFUSED_NOT_MEMBER] = "not_member",
    [VV_CRDT_REFUSED_CREATOR] = "creator",     [VV_CRDT_REFUSED_FORGED] = "forged",
    [VV_CRDT_REFUSED_STALE] = "stale",
};

const char *vv_crdt_refusal_name(enum vv_crdt_refusal r)
{
    return (unsigned)r < VV_CRDT_REFUSAL_COUNT ? refusal_names[r] : "unknown";
}

/* Counts a refusal and logs it, at most one line a second (a peer may send many). */
static void refuse(struct vv_crdt_engine *e, enum vv_crdt_refusal why, const char *id,
                   const uint8_t peer[VV_NODE_ID_BYTES])
{
    e->stats.refused[why]++;
    if (e->cbs.refused)
        e->cbs.refused(e->arg, why);
    uint64_t now = vv_env_now(e->env);
    if (e->refuse_log_ms != 0 && now - e->refuse_log_ms < 1000) {
        e->refuse_unlogged++;
        return;
    }
    static const char *const what[VV_CRDT_REFUSAL_COUNT] = {
        [VV_CRDT_REFUSED_READ] = "sync refused: the policy does not let it read",
        [VV_CRDT_REFUSED_WRITE] = "update refused: the policy does not let it write",
        [VV_CRDT_REFUSED_UNKNOWN] = "sync for a document not held here ignored",
        [VV_CRDT_REFUSED_NOT_MEMBER] = "policy ignored: it does not name this node",
        [VV_CRDT_REFUSED_CREATOR] = "policy refused: signed by another creator than the known one",
        [VV_CRDT_REFUSED_FORGED] = "policy refused: malformed or not signed by its creator",
        [VV_CRDT_REFUSED_STALE] = "policy refused: older than the one held",
    };
    char hex[2 * VV_NODE_ID_BYTES + 1];
    vv_hex_encode(peer, VV_NODE_ID_BYTES, hex);
    vv_log_warn("crdt", "%s from peer %.16s: %s (%llu more refusals since the last line)", id, hex,
                what[why], (unsigned long long)e->refuse_unlogged);
    e->refuse_log_ms = now ? now : 1;
    e->refuse_unlogged = 0;
}

/* Drops the joined peers the policy does not let read: they stop syncing. All of them when
 * it shuts this node out: nobody would answer it any more (it keeps what it has). */
static void prune_peers(struct vv_crdt_engine *e, struct entry *x)
{
    bool out = !self_reads(e, x);
    for (size_t i = x->n_peers; i-- > 0;) {
        if (out || access_of(x, x->peers[i]) == VV_CRDT_ACCESS_NONE) {
            uint8_t p[VV_NODE_ID_BYTES];
            memcpy(p, x->peers[i], VV_NODE_ID_BYTES);
            drop_peer(e, x, p);
        }
    }
}

/* Makes p (taken) x's policy: persisted, sent to the joined peers but `from` (NULL: all),
 * the removed ones included so they learn it, then the peers it shuts out are dropped. */
static void install_policy(struct vv_crdt_engine *e, struct entry *x, struct vv_crdt_policy *p,
                           const uint8_t *from)
{
    vv_crdt_policy_free(x->pol);
    x->pol = p;
    if (e->cbs.policy_changed)
        e->cbs.policy_changed(e->arg, x->doc, p);
    for (size_t i = 0; i < x->n_peers; i++)
        if (from == NULL || memcmp(from, x->peers[i], VV_NODE_ID_BYTES) != 0)
            send_policy(e, x, x->peers[i]);
    prune_peers(e, x);
}

/*
 * Whether a peer's SYNC or UPDATE is about our document of that name: the one of the same
 * creator. Two nodes may each make a document of one name; a node that took one of them
 * then refuses the other's messages (counted as "creator") and stops syncing it with that
 * peer, so the two never mix, even through nodes that are writers in both.
 */
static bool same_creator(struct vv_crdt_engine *e, struct entry *x,
                         const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *creator)
{
    if (memcmp(creator, x->pol->creator, VV_NODE_ID_BYTES) == 0 ||
        (x->pol->flags & VV_CRDT_POLICY_ADOPTED))
        return true;
    refuse(e, VV_CRDT_REFUSED_CREATOR, vv_crdt_doc_id(x->doc), peer);
    drop_peer(e, x, peer);
    return false;
}

/* POLICY: a peer offers a document's policy. Returns false when the message is malformed
 * (a type clash with our copy); refusals are counted by reason. */
static bool handle_policy(struct vv_crdt_engine *e, const uint8_t peer[VV_NODE_ID_BYTES],
                          const char *id, const uint8_t *b, size_t len)
{
    struct vv_crdt_policy *p;
    if (vv_crdt_policy_decode(b, len, &p) != 0 || strcmp(p->doc_id, id) != 0) {
        vv_crdt_policy_free(p);
        refuse(e, VV_CRDT_REFUSED_FORGED, id, peer);
        return true;
    }
    struct entry *x = find_entry(e, id);
    const struct vv_crdt_policy *have = x ? x->pol : NULL;
    bool ok = true;
    if (have != NULL && memcmp(have->creator_pk, p->creator_pk, VV_ED25519_PK_BYTES) != 0) {
        /* The first creator seen for an id wins here: another node may have made a document
         * of the same name, and it cannot take this one over. */
        refuse(e, VV_CRDT_REFUSED_CREATOR, id, peer);
        if (!(have->flags & VV_CRDT_POLICY_ADOPTED))
            drop_peer(e, x, peer); /* it holds the other document */
    } else if (have != NULL && p->version <= have->version) {
        if (p->version < have->version) {
            refuse(e, VV_CRDT_REFUSED_STALE, id, peer);
            if (access_of(x, peer) != VV_CRDT_ACCESS_NONE)
                send_policy(e, x, peer); /* it is behind: bring it up to date */
        }                                /* the same version again: nothing new */
    } else if ((e->turn_work += POLICY_VERIFY_WORK, !vv_crdt_policy_verify(e->env, p))) {
        refuse(e, VV_CRDT_REFUSED_FORGED, id, peer);
    } else if (x != NULL && vv_crdt_doc_kind(x->doc) != p->kind) {
        ok = false; /* a type clash is the peer's error */
    } else if (x != NULL) {
        e->stats.policies_accepted++;
        install_policy(e, x, p, peer);
        return true;
    } else if (vv_crdt_policy_access(p, e->env->identity->node_id) == VV_CRDT_ACCESS_NONE) {
        refuse(e, VV_CRDT_REFUSED_NOT_MEMBER, id, peer);
    } else if (!e->auto_join || e->n >= VV_CRDT_SYNC_MAX_DOCS ||
               e->stats.docs_created_by_peers >= e->max_peer_docs) {
        e->stats.docs_refused++; /* peers may not create documents here (any more) */
    } else {
        struct vv_crdt_doc *d = vv_crdt_doc_new(id, p->kind, e->replica);
        x = add_entry(e, d);
        e->stats.docs_created_by_peers++;
        e->stats.policies_accepted++;
        install_policy(e, x, p, peer);
        if (e->cbs.created) /* with its policy: the callback may join peers to it */
            e->cbs.created(e->arg, d);
        return true;
    }
    vv_crdt_policy_free(p);
    return ok;
}

/* Handles one message from a peer; adds what it cost to the turn's work. */
static void handle_msg(struct vv_crdt_engine *e, const uint8_t peer[VV_NODE_ID_BYTES],
                       const uint8_t *data, size_t len)
{
    e->turn_work += len;
    struct vv_wire_frame f;
    if (vv_wire_decode(data, len, &f) != 0) {
        e->stats.bad_messages++;
        return;
    }
    const msgpack_object *a;
    uint32_t n;
    char id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
    bool ok = vv_wire_get_array(&f.body, 1, 6, &a, &n) == 0 && get_id(&a[0], id);
    const uint8_t *creator = NULL;
    if (ok && f.h.type == VV_CRDT_MSG_SYNC && n == 6) {
        uint64_t kind = 0, version = 0;
        const uint8_t *sv;
        size_t sv_len;
        bool reply;
        ok = vv_wire_get_u64(&a[1], VV_CRDT_KIND_COUNT - 1, &kind) == 0 &&
             vv_wire_get_bin(&a[2], 0, VV_WIRE_MAX_FRAME_BYTES, &sv, &sv_len) == 0 &&
             vv_wire_get_bool(&a[3], &reply) == 0 &&
             vv_wire_get_u64(&a[4], UINT64_MAX, &version) == 0 &&
             vv_wire_get_bin(&a[5], VV_NODE_ID_BYTES, VV_NODE_ID_BYTES, &creator, NULL) == 0;
        struct entry *x = ok ? find_entry(e, id) : NULL;
        enum vv_crdt_access acc = x ? access_of(x, peer) : VV_CRDT_ACCESS_NONE;
        if (ok)
            e->stats.syncs_received++;
        if (!ok) {
            /* counted below */
        } else if (x == NULL) {
            refuse(e, VV_CRDT_REFUSED_UNKNOWN, id, peer); /* only a POLICY creates one */
        } else if (acc == VV_CRDT_ACCESS_NONE) {
            refuse(e, VV_CRDT_REFUSED_READ, id, peer);
        } else if (!same_creator(e, x, peer, creator)) {
            /* refused: it holds another document of that name */
        } else if (!self_reads(e, x)) {
            /* this node was shut out of the document: it syncs it no more */
        } else if (!e->auto_join && !has_peer(x, peer)) {
            e->stats.docs_refused++; /* not shared with that peer here */
        } else if (vv_crdt_doc_kind(x->doc) != (enum vv_crdt_kind)kind) {
            ok = false; /* a type clash is the peer's error */
        } else if (add_peer(e, x, peer) == 0) {
            if (version < x->pol->version)
                send_policy(e, x, peer); /* it holds an older one (or none) */
            /* A delta only from a writer: the peer accepts updates from writers alone. */
            uint8_t *delta;
            size_t dl;
            if (!self_writes(e, x)) {
                /* nothing to send */
            } else if (vv__crdt_bulk_skip(e->bulk, peer, id)) {
                /* Our stream of this document to that peer is still going: the delta
                 * would repeat it (megabytes to encode for nothing). The next round after
                 * it brings the rest. */
            } else if (vv_crdt_doc_delta(x->doc, sv, sv_len, &delta, &dl) == 0) {
                e->turn_work += (uint64_t)dl * DELTA_BYTE_WORK;
                if (dl > 0)
                    send_update(e, x, peer, delta, dl);
                vv_free(delta);
            } else {
                ok = false;
            }
            /* Asking for its updates is for writers only: we would refuse a reader's. Not
             * while that peer streams this document here (as in on_tick). */
            if (reply && acc == VV_CRDT_ACCESS_WRITE && !vv__crdt_bulk_receiving(e->bulk, peer, id))
                send_sync(e, x, peer, false);
        }
    } else if (ok && f.h.type == VV_CRDT_MSG_UPDATE && n == 3) {
        const uint8_t *u;
        size_t ul;
        ok = vv_wire_get_bin(&a[1], 0, VV_WIRE_MAX_FRAME_BYTES, &u, &ul) == 0 &&
             vv_wire_get_bin(&a[2], VV_NODE_ID_BYTES, VV_NODE_ID_BYTES, &creator, NULL) == 0;
        struct entry *x = ok ? find_entry(e, id) : NULL;
        if (x != NULL && access_of(x, peer) != VV_CRDT_ACCESS_WRITE)
            refuse(e, VV_CRDT_REFUSED_WRITE, id, peer);
        else if (x != NULL && has_peer(x, peer) && same_creator(e, x, peer, creator))
            apply_remote(e, x, peer, u, ul);
    } else if (ok && f.h.type == VV_CRDT_MSG_POLICY && n == 2) {
        const uint8_t *b;
        size_t bl;
        ok = vv_wire_get_bin(&a[1], 0, VV_CRDT_POLICY_MAX_BYTES, &b, &bl) == 0 &&
             handle_policy(e, peer, id, b, bl);
    } else if (ok && f.h.type == VV_CRDT_MSG_LEAVE && n == 1) {
        struct entry *x = find_entry(e, id);
        if (x != NULL)
            drop_peer(e, x, peer);
    } else if (ok && vv_wire_verdict(&f.h, false) == VV_WIRE_SKIP) {
        /* a message of a newer minor version: skipped */
    } else {
        ok = false;
    }
    if (!ok)
        e->stats.bad_messages++;
    vv_wire_frame_free(&f);
}

/* A large update (from a stream) for document id: applied whole, metered like a message of
 * its size. Takes u. */
static void handle_large(struct vv_crdt_engine *e, const uint8_t peer[VV_NODE_ID_BYTES],
                         const char *id, uint8_t *u, size_t len)
{
    e->turn_work += len;
    struct entry *x = find_entry(e, id);
    /* The policy may have changed while the stream was coming: checked again. */
    if (x != NULL && has_peer(x, peer) && access_of(x, peer) == VV_CRDT_ACCESS_WRITE)
        apply_remote(e, x, peer, u, len);
    vv_free(u);
}

static void defer_drain(struct vv_env *env, void *arg);

/* Starts metering a new turn when env time moved on. */
static void turn_begin(struct vv_crdt_engine *e)
{
    uint64_t now = vv_env_now(e->env);
    if (now != e->turn_ms) {
        e->turn_ms = now;
        e->turn_work = 0;
    }
}

static void defer_arm(struct vv_crdt_engine *e)
{
    if (e->dq_timer == 0)
        e->dq_timer = vv_env_timer_start(e->env, 1, 0, defer_drain, e);
}

static void defer_drain(struct vv_env *env, void *arg)
{
    (void)env;
    struct vv_crdt_engine *e = arg;
    e->dq_timer = 0;
    turn_begin(e);
    /* Unfinished drains first (what they retry arrived before the queued messages), then
     * the queue, within the turn's allowance. */
    while (e->drain_head != NULL && e->turn_work < TURN_WORK) {
        struct entry *x = e->drain_head;
        e->drain_head = x->dnext;
        if (e->drain_head == NULL)
            e->drain_tail = &e->drain_head;
        x->drain_queued = false;
        vv_crdt_doc_drain(x->doc, TURN_WORK - e->turn_work);
        drain_account(e, x); /* queued again at the end when still unfinished */
    }
    if (e->drain_head != NULL)
        pending_note(e);
    while (e->dq_head != NULL && e->turn_work < TURN_WORK) {
        struct deferred *m = e->dq_head;
        e->dq_head = m->next;
        if (e->dq_head == NULL)
            e->dq_tail = &e->dq_head;
        e->stats.deferred_msgs--;
        e->stats.deferred_bytes -= m->len;
        if (m->large_id != NULL) {
            e->deferred_large_bytes -= m->len;
            handle_large(e, m->peer, m->large_id, m->large, m->len);
            vv_free(m->large_id);
        } else {
            handle_msg(e, m->peer, m->data, m->len);
        }
        vv_free(m);
    }
    pending_note(e);
    if (e->dq_head != NULL || e->drain_head != NULL)
        defer_arm(e);
}

/* Whether peer may stream an update of id here: as for UPDATE, a joined peer the policy lets
 * write, naming the creator we know (refusals counted as for UPDATE). */
static bool bulk_wanted(void *arg, const uint8_t peer[VV_NODE_ID_BYTES],
                        const uint8_t creator[VV_NODE_ID_BYTES], const char *id)
{
    struct vv_crdt_engine *e = arg;
    struct entry *x = find_entry(e, id);
    if (x == NULL || !has_peer(x, peer))
        return false;
    if (access_of(x, peer) != VV_CRDT_ACCESS_WRITE) {
        refuse(e, VV_CRDT_REFUSED_WRITE, id, peer);
        return false;
    }
    return same_creator(e, x, peer, creator);
}

/*
 * A large update arrived whole. It is applied now when the turn has work left and nothing
 * waits, else it waits behind the queued messages, outside the queue's byte bound (one would
 * not fit in it: dropping it would waste the whole transfer) but within DEFER_MAX_LARGE_BYTES.
 */
static void bulk_arrived(void *arg, const uint8_t peer[VV_NODE_ID_BYTES], const char *id,
                         uint8_t *buf, size_t len)
{
    struct vv_crdt_engine *e = arg;
    turn_begin(e);
    if (e->dq_head == NULL && e->turn_work < TURN_WORK) {
        handle_large(e, peer, id, buf, len);
        return;
    }
    if (e->deferred_large_bytes + len > DEFER_MAX_LARGE_BYTES) {
        e->stats.deferred_dropped++;
        vv_free(buf);
        return;
    }
    e->deferred_large_bytes += len;
    struct deferred *m = vv_xcalloc(1, sizeof(*m));
    memcpy(m->peer, peer, VV_NODE_ID_BYTES);
    m->len = len;
    m->large_id = vv_xstrdup(id);
    m->large = buf;
    *e->dq_tail = m;
    e->dq_tail = &m->next;
    e->stats.deferred_msgs++;
    e->stats.deferred_bytes += len;
    e->stats.deferred_total++;
    defer_arm(e);
}

static void on_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    (void)env;
    struct vv_crdt_engine *e = arg;
    /* Stream frames are handled at once (a copy of at most one chunk each, within the
     * credit granted); the update they carry is metered when it is applied. */
    if (vv__crdt_bulk_recv(e->bulk, peer, data, len))
        return;
    turn_begin(e);
    if (e->dq_head == NULL && e->turn_work < TURN_WORK) {
        handle_msg(e, peer, data, len);
        return;
    }
    /* Behind the queue, in order. A full queue drops the message: the next sync round
     * (on reconnect, or anti-entropy) brings whatever it carried again. */
    if (e->stats.deferred_msgs >= DEFER_MAX_MSGS ||
        e->stats.deferred_bytes + len > DEFER_MAX_BYTES) {
        e->stats.deferred_dropped++;
        return;
    }
    struct deferred *m = vv_xmalloc(sizeof(*m) + len);
    m->next = NULL;
    m->large_id = NULL;
    m->large = NULL;
    memcpy(m->peer, peer, VV_NODE_ID_BYTES);
    m->len = len;
    memcpy(m->data, data, len);
    *e->dq_tail = m;
    e->dq_tail = &m->next;
    e->stats.deferred_msgs++;
    e->stats.deferred_bytes += len;
    e->stats.deferred_total++;
    defer_arm(e);
}

static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    struct vv_crdt_engine *e = arg;
    vv__crdt_bulk_peer(e->bulk, peer, up); /* "down" ends its streams */
    if (!up)
        return;
    /* A peer came (back): catch up on every document shared with it. The policy goes first:
     * the peer may have lost the document, or missed a change of the policy. */
    for (size_t i = 0; i < e->n; i++) {
        if (has_peer(e->list[i], peer)) {
            send_policy(e, e->list[i], peer);
            send_sync(e, e->list[i], peer, true);
        }
    }
}

static void on_tick(struct vv_env *env, void *arg)
{
    struct vv_crdt_engine *e = arg;
    size_t rounds = 0;
    for (size_t k = 0; k < e->n && rounds < AE_DOCS_PER_TICK; k++) {
        struct entry *x = e->list[(e->ae_cursor + k) % e->n];
        if (x->n_peers == 0)
            continue;
        const uint8_t *p = x->peers[vv_env_random_below(env, x->n_peers)];
        /* Not while that peer streams this document here: our state vector has not moved
         * yet, so the round would only make it send the same megabytes again. */
        if (!vv__crdt_bulk_receiving(e->bulk, p, vv_crdt_doc_id(x->doc)))
            send_sync(e, x, p, true);
        rounds++;
    }
    if (e->n > 0)
        e->ae_cursor = (e->ae_cursor + AE_DOCS_PER_TICK) % e->n;
    /* Buffered updates whose dependency did not come in max_age_ms go (counted, logged). */
    vv_crdt_pending_pool_set_now(e->pool, vv_env_now(env));
    vv_crdt_pending_pool_expire(e->pool);
    pending_note(e);
}

/* ---- the engine ------------------------------------------------------------------------------ */

struct vv_crdt_engine *vv_crdt_engine_new(struct vv_env *env, uint64_t replica,
                                          uint32_t anti_entropy_ms,
                                          const struct vv_crdt_sync_cbs *cbs, void *arg)
{
    struct vv_crdt_engine *e = vv_xcalloc(1, sizeof(*e));
    e->env = env;
    while (replica == 0)
        vv_env_random(env, &replica, sizeof(replica));
    e->replica = replica;
    vv_hlc_init(&e->clock, replica);
    if (cbs)
        e->cbs = *cbs;
    e->arg = arg;
    e->n_buckets = 64;
    e->buckets = vv_xcalloc(e->n_buckets, sizeof(*e->buckets));
    e->ae_ms = anti_entropy_ms ? anti_entropy_ms : VV_CRDT_SYNC_ANTI_ENTROPY_MS;
    e->max_peer_docs = 10000;
    e->auto_join = true;
    e->dq_tail = &e->dq_head;
    e->drain_tail = &e->drain_head;
    e->pool =
        vv_crdt_pending_pool_new(VV_CRDT_SYNC_PENDING_MAX_UPDATES, VV_CRDT_SYNC_PENDING_MAX_BYTES,
                                 VV_CRDT_SYNC_PENDING_MAX_AGE_MS);
    vv_crdt_pending_pool_set_now(e->pool, vv_env_now(env));
    static const struct vv__crdt_bulk_cbs bulk_cbs = {bulk_wanted, bulk_arrived};
    e->bulk = vv__crdt_bulk_new(env, &bulk_cbs, e);
    e->max_doc_bytes = VV_CRDT_SYNC_MAX_DOC_BYTES;
    vv_env_set_channel(env, VV_CHANNEL_CRDT, on_recv, on_peer, e);
    e->timer = vv_env_timer_start(env, e->ae_ms, e->ae_ms, on_tick, e);
    return e;
}

void vv_crdt_engine_free(struct vv_crdt_engine *e)
{
    if (e == NULL)
        return;
    vv_env_timer_cancel(e->env, e->timer);
    vv_env_timer_cancel(e->env, e->dq_timer);
    vv_env_set_channel(e->env, VV_CHANNEL_CRDT, NULL, NULL, NULL);
    vv__crdt_bulk_free(e->bulk); /* streams end here: peers told, nothing more arrives */
    while (e->dq_head != NULL) {
        struct deferred *m = e->dq_head;
        e->dq_head = m->next;
        vv_free(m->large_id);
        vv_free(m->large);
        vv_free(m);
    }
    while (e->n > 0)
        remove_entry(e, e->list[e->n - 1]);
    vv_crdt_pending_pool_free(e->pool);
    vv_free(e->list);
    vv_free(e->buckets);
    vv_free(e);
}

void vv_crdt_engine_set_auto_join(struct vv_crdt_engine *e, bool on)
{
    e->auto_join = on;
}

void vv_crdt_engine_set_stream_limits(struct vv_crdt_engine *e, uint64_t max_doc_bytes,
                                      uint32_t max_streams_per_peer, uint64_t max_peer_bytes,
                                      uint64_t max_total_bytes)
{
    if (max_doc_bytes) {
        e->max_doc_bytes = max_doc_bytes;
        vv__crdt_bulk_set_max_bytes(e->bulk, max_doc_bytes);
    }
    vv_stream_mux_set_limits(vv__crdt_bulk_mux(e->bulk), max_streams_per_peer, max_peer_bytes,
                             max_total_bytes);
}

void vv_crdt_engine_set_pending_limits(struct vv_crdt_engine *e, size_t max_updates,
                                       size_t max_bytes, uint64_t max_age_ms)
{
    vv_crdt_pending_pool_set_limits(e->pool, max_updates, max_bytes, max_age_ms);
    pending_note(e);
}

void vv_crdt_engine_set_max_peer_docs(struct vv_crdt_engine *e, uint32_t max)
{
    e->max_peer_docs = max;
}

void vv_crdt_engine_set_cbs(struct vv_crdt_engine *e, const struct vv_crdt_sync_cbs *cbs, void *arg)
{
    if (cbs)
        e->cbs = *cbs;
    else
        memset(&e->cbs, 0, sizeof(e->cbs));
    e->arg = arg;
}

int vv_crdt_engine_create(struct vv_crdt_engine *e, const char *id, enum vv_crdt_kind kind,
                          struct vv_crdt_doc **out)
{
    if (!vv_crdt_doc_id_valid(id) || (unsigned)kind >= VV_CRDT_KIND_COUNT)
        return VV_EINVAL;
    if (find_entry(e, id) != NULL)
        return VV_EEXIST;
    if (e->n >= VV_CRDT_SYNC_MAX_DOCS)
        return VV_ELIMIT;
    struct vv_crdt_policy *p;
    int rc = vv_crdt_policy_make(e->env, id, kind, 0, 1, NULL, 0, NULL, 0, &p);
    if (rc != 0)
        return rc;
    struct vv_crdt_doc *d = vv_crdt_doc_new(id, kind, e->replica);
    install_policy(e, add_entry(e, d), p, NULL);
    if (out)
        *out = d;
    return 0;
}

int vv_crdt_engine_adopt(struct vv_crdt_engine *e, struct vv_crdt_doc *d, const uint8_t *peers,
                         size_t n_peers)
{
    if (find_entry(e, vv_crdt_doc_id(d)) != NULL) {
        vv_crdt_doc_free(d);
        return VV_EEXIST;
    }
    struct entry *x = add_entry(e, d);
    struct vv_crdt_sync_cbs saved = e->cbs;
    e->cbs.peers_changed = NULL; /* they come from disk: nothing to persist */
    for (size_t i = 0; i < n_peers; i++)
        add_peer(e, x, peers + i * VV_NODE_ID_BYTES);
    e->cbs = saved;
    return 0;
}

int vv_crdt_engine_adopt_policy(struct vv_crdt_engine *e, const char *id, const uint8_t *policy,
                                size_t len)
{
    struct entry *x = find_entry(e, id);
    if (x == NULL)
        return VV_ECRDT_NO_DOC;
    struct vv_crdt_policy *p;
    int rc = vv_crdt_policy_decode(policy, len, &p);
    if (rc == 0 && (strcmp(p->doc_id, id) != 0 || p->kind != vv_crdt_doc_kind(x->doc) ||
                    !vv_crdt_policy_verify(e->env, p)))
        rc = VV_ECRDT_POLICY;
    if (rc != 0) {
        vv_crdt_policy_free(p);
        return rc;
    }
    vv_crdt_policy_free(x->pol);
    x->pol = p; /* from disk: nothing to persist or send */
    prune_peers(e, x);
    return 0;
}

const struct vv_crdt_policy *vv_crdt_engine_policy(const struct vv_crdt_engine *e, const char *id)
{
    struct entry *x = find_entry(e, id);
    return x ? x->pol : NULL;
}

int vv_crdt_engine_set_access(struct vv_crdt_engine *e, const char *id, const uint8_t *readers,
                              size_t n_readers, const uint8_t *writers, size_t n_writers)
{
    struct entry *x = find_entry(e, id);
    if (x == NULL)
        return VV_ECRDT_NO_DOC;
    if (x->pol != NULL && memcmp(x->pol->creator, e->env->identity->node_id, VV_NODE_ID_BYTES) != 0)
        return VV_ECRDT_DENIED;
    if (x->pol != NULL && x->pol->version == UINT64_MAX)
        return VV_ELIMIT;
    struct vv_crdt_policy *p;
    int rc =
        /* A document without a policy was stored before policies: its first is adopted. */
        vv_crdt_policy_make(
            e->env, id, vv_crdt_doc_kind(x->doc), x->pol ? x->pol->flags : VV_CRDT_POLICY_ADOPTED,
            x->pol ? x->pol->version + 1 : 1, readers, n_readers, writers, n_writers, &p);
    if (rc != 0)
        return rc;
    install_policy(e, x, p, NULL);
    return 0;
}

struct vv_crdt_doc *vv_crdt_engine_find(const struct vv_crdt_engine *e, const char *id)
{
    struct entry *x = find_entry(e, id);
    return x ? x->doc : NULL;
}

int vv_crdt_engine_remove(struct vv_crdt_engine *e, const char *id)
{
    struct entry *x = find_entry(e, id);
    if (x == NULL)
        return VV_ECRDT_NO_DOC;
    for (size_t i = 0; i < x->n_peers; i++)
        send_leave(e, id, x->peers[i]);
    remove_entry(e, x);
    return 0;
}

int vv_crdt_engine_op(struct vv_crdt_engine *e, const char *id, const json_t *op, char *err,
                      size_t err_len)
{
    struct entry *x = find_entry(e, id);
    if (x == NULL) {
        snprintf(err, err_len, "no document %s", id);
        return VV_ECRDT_NO_DOC;
    }
    if (!self_writes(e, x)) {
        snprintf(err, err_len,
                 "document %s is read-only here: its access policy does not let this node write",
                 id);
        return VV_ECRDT_DENIED;
    }
    uint8_t *u;
    size_t ul;
    int rc = vv_crdt_doc_op(x->doc, op, &e->clock, vv_env_wall_ms(e->env), &u, &ul, err, err_len);
    if (rc != 0)
        return rc;
    if (ul > 0) {
        if (e->cbs.updated)
            e->cbs.updated(e->arg, x->doc, u, ul, true);
        for (size_t i = 0; i < x->n_peers; i++)
            send_update(e, x, x->peers[i], u, ul);
    }
    vv_free(u);
    return 0;
}

/* Joins peer to document id and starts a round with it; the send's own result in *sent. */
static int join_and_sync(struct vv_crdt_engine *e, const char *id,
                         const uint8_t peer[VV_NODE_ID_BYTES], int *sent)
{
    struct entry *x = find_entry(e, id);
    if (x == NULL)
        return VV_ECRDT_NO_DOC;
    if (access_of(x, peer) == VV_CRDT_ACCESS_NONE || !self_reads(e, x))
        return VV_ECRDT_DENIED;
    int rc = add_peer(e, x, peer);
    *sent = 0;
    if (rc == 0) {
        send_policy(e, x, peer); /* it may lack the document, or hold an older policy */
        /* While that peer streams this document here, the stream is the round. */
        if (!vv__crdt_bulk_receiving(e->bulk, peer, id))
            *sent = send_sync(e, x, peer, true);
    }
    return rc;
}

int vv_crdt_engine_join(struct vv_crdt_engine *e, const char *id,
                        const uint8_t peer[VV_NODE_ID_BYTES])
{
    int sent;
    return join_and_sync(e, id, peer, &sent); /* when not connected, the round runs on connect */
}

int vv_crdt_engine_leave(struct vv_crdt_engine *e, const char *id, const uint8_t *peer)
{
    struct entry *x = find_entry(e, id);
    if (x == NULL)
        return VV_ECRDT_NO_DOC;
    if (peer != NULL) {
        if (!has_peer(x, peer))
            return VV_EINVAL;
        send_leave(e, id, peer);
        drop_peer(e, x, peer);
        return 0;
    }
    while (x->n_peers > 0) {
        uint8_t p[VV_NODE_ID_BYTES];
        memcpy(p, x->peers[0], VV_NODE_ID_BYTES);
        send_leave(e, id, p);
        drop_peer(e, x, p);
    }
    return 0;
}

int vv_crdt_engine_sync(struct vv_crdt_engine *e, const char *id,
                        const uint8_t peer[VV_NODE_ID_BYTES])
{
    int sent = 0;
    int rc = join_and_sync(e, id, peer, &sent);
    if (rc != 0)
        return rc;
    return sent == VV_ECONN_NOT_CONNECTED || sent == VV_ECONN_BACKPRESSURE ? sent : 0;
}

size_t vv_crdt_engine_count(const struct vv_crdt_engine *e)
{
    return e->n;
}

struct vv_crdt_doc *vv_crdt_engine_doc_at(const struct vv_crdt_engine *e, size_t i)
{
    return i < e->n ? e->list[i]->doc : NULL;
}

size_t vv_crdt_engine_peers(const struct vv_crdt_engine *e, const char *id, const uint8_t **peers)
{
    struct entry *x = find_entry(e, id);
    *peers = x && x->n_peers ? &x->peers[0][0] : NULL;
    return x ? x->n_peers : 0;
}

const struct vv_crdt_sync_stats *vv_crdt_engine_stats(const struct vv_crdt_engine *e)
{
    /* The stream figures change inside the stream layer (timers, peer events): copied on
     * every read. The stats are the engine's own memory, written only here and in sync.c. */
    struct vv_crdt_sync_stats *st = (struct vv_crdt_sync_stats *)&e->stats;
    const struct vv__crdt_bulk_stats *bs = vv__crdt_bulk_stats(e->bulk);
    const struct vv_stream_stats *ms = vv_stream_mux_stats(vv__crdt_bulk_mux(e->bulk));
    st->streams_sent = bs->sent;
    st->streams_received = bs->received;
    st->streams_failed = bs->send_failures + bs->receive_failures;
    st->streams_skipped = bs->skipped;
    st->stream_bytes_in_flight = bs->in_flight_bytes;
    st->stream_bytes_received = ms->bytes_received;
    st->stream_bad_frames = ms->bad_frames;
    return &e->stats;
}
