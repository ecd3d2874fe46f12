/*
 * CRDT documents as a node module: the sync engine on the node's environment, and the
 * store that makes documents survive restarts (state_dir/crdt.sqlite).
 *
 * The store is a snapshot per document plus a log of the updates since; at start-up every
 * document is rebuilt from its snapshot and its log (synchronously, before the node is
 * ready). Writes are grouped: every update, new document and peer change goes into the
 * batch that is open, one transaction on the thread pool; a batch closes when the pool
 * takes it (so the next writes start the next batch). A crdt.apply or crdt.create is
 * answered only once the batch holding its write committed: durable before acknowledged.
 * When a document has logged compact_updates updates, its current state is written as its
 * snapshot and its log deleted, in the same ordered stream of batches, so no update logged
 * after the snapshot was taken is lost.
 *
 * The peers a document is shared with (crdt.join, a peer's sync with auto_join, the peer
 * lists stored with the documents) are asked of the connection manager with the tag "crdt"
 * (vv_env_want_peer), so that the connection is made and kept while any document is shared
 * with them; a peer no document is shared with any more is released.
 *
 * Who owns what: the module owns the engine (which owns the documents) and the open batch;
 * a batch owns its items and the RPC requests waiting for it until its done callback.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_internal.h"
#include "vivim/config.h"
#include "vivim/node.h"
#include "vivim/log.h"
#include "vivim/metrics.h"

static const char *const migrations[] = {
    "CREATE TABLE IF NOT EXISTS docs ("
    "  id TEXT PRIMARY KEY,"
    "  kind INTEGER NOT NULL,"
    "  snapshot BLOB,"
    "  peers BLOB NOT NULL DEFAULT x'') WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS updates ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  doc_id TEXT NOT NULL,"
    "  data BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS updates_doc ON updates(doc_id, seq);",
    /* Access policies (issue 10): the signed encoding of crdt_policy.h. Documents stored
     * before have none; load_all gives each one (see there). */
    "ALTER TABLE docs ADD COLUMN policy BLOB;",
    NULL,
};

enum item_kind { ITEM_DOC, ITEM_UPDATE, ITEM_PEERS, ITEM_SNAPSHOT, ITEM_POLICY };

struct item {
    enum item_kind kind;
    char id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
    int doc_kind;
    uint8_t *data;
    size_t len;
};

struct waiter {
    struct vv_rpc_request *req;
    json_t *result;
};

struct batch {
    struct vv_sqlite_job job; /* first */
    struct vv_crdt_module *m;
    struct item *items;
    size_t n, cap;
    struct waiter *waiters;
    size_t n_waiters, cap_waiters;
    int rc;
    bool submitted;
    char err[256];
};

/* ---- the batch's transaction, on the pool ------------------------------------------------- */

static int run_item(sqlite3 *db, const struct item *it)
{
    static const char *const sql[] = {
        [ITEM_DOC] = "INSERT OR IGNORE INTO docs(id, kind) VALUES (?1, ?2)",
        [ITEM_UPDATE] = "INSERT INTO updates(doc_id, data) VALUES (?1, ?3)",
        [ITEM_PEERS] = "UPDATE docs SET peers = ?3 WHERE id = ?1",
        [ITEM_SNAPSHOT] = "UPDATE docs SET snapshot = ?3 WHERE id = ?1",
        [ITEM_POLICY] = "UPDATE docs SET policy = ?3 WHERE id = ?1",
    };
    sqlite3_stmt *st;
    int rc;
    if (it->kind != ITEM_DOC) {
        /* The document's row, in case the batch that created it failed: a later write must
         * not be kept where loading cannot find it. */
        struct item doc = *it;
        doc.kind = ITEM_DOC;
        if ((rc = run_item(db, &doc)) != SQLITE_OK)
            return rc;
    }
    rc = sqlite3_prepare_v2(db, sql[it->kind], -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, it->id, -1, SQLITE_STATIC);
    if (it->kind == ITEM_DOC)
        sqlite3_bind_int(st, 2, it->doc_kind);
    else
        sqlite3_bind_blob(st, 3, it->data ? (const void *)it->data : "", (int)it->len,
                          SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return rc;
    if (it->kind == ITEM_SNAPSHOT) {
        /* Every update logged before this point is in the snapshot. */
        rc = sqlite3_prepare_v2(db, "DELETE FROM updates WHERE doc_id = ?1", -1, &st, NULL);
        if (rc != SQLITE_OK)
            return rc;
        sqlite3_bind_text(st, 1, it->id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return rc;
    }
    return SQLITE_OK;
}

static void batch_work(sqlite3 *db, struct vv_sqlite_job *job)
{
    struct batch *b = (struct batch *)job;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < b->n; i++)
        rc = run_item(db, &b->items[i]);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(b->err, sizeof(b->err), "%s", sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        b->rc = VV_EIO;
    }
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        vv_free(b->items[i].data);
    vv_free(b->items);
    vv_free(b->waiters);
    vv_free(b);
}

static void batch_done(struct vv_sqlite_job *job, int status)
{
    struct batch *b = (struct batch *)job;
    struct vv_crdt_module *m = b->m;
    int rc = status != 0 ? status : b->rc;
    m->pending_batches--;
    /* A store that failed to open finishes jobs without starting them (no on_start). */
    if (m->open == b)
        m->open = NULL;
    if (rc != 0) {
        m->store_errors++;
        vv_log_error("crdt", "document store write failed: %s",
                     b->err[0] ? b->err : vv_strerror(rc));
    }
    for (size_t i = 0; i < b->n_waiters; i++) {
        struct waiter *w = &b->waiters[i];
        if (rc == 0)
            vv_rpc_reply(w->req, w->result);
        else {
            json_decref(w->result);
            vv_rpc_fail(w->req, VV_EIO,
                        "applied in memory and sent to peers, but not stored (it may be lost at "
                        "restart): %s",
                        b->err[0] ? b->err : vv_strerror(rc));
        }
    }
    batch_free(b);
}

static void batch_started(struct vv_sqlite_job *job)
{
    struct batch *b = (struct batch *)job;
    if (b->m->open == b)
        b->m->open = NULL; /* later writes go into a new batch */
}

static void submit_open(struct vv_crdt_module *m)
{
    struct batch *b = m->open;
    if (b == NULL || b->submitted)
        return;
    b->submitted = true;
    /* The pool takes it when the batches before it are done; until then (on_start) writes
     * still join it. on_start may run inside this call when the pool is idle. */
    vv_sqlite_submit(m->db, &b->job, batch_work, batch_done);
}

static void on_flush(uv_timer_t *t)
{
    submit_open(t->data);
}

static struct batch *open_batch(struct vv_crdt_module *m)
{
    if (m->open != NULL)
        return m->open;
    struct batch *b = vv_xcalloc(1, sizeof(*b));
    b->m = m;
    b->job.on_start = batch_started;
    m->open = b;
    m->pending_batches++;
    /* Submitted at the end of this turn of the loop, so that every write made in it (an RPC
     * batch, a burst of updates from a peer) joins one transaction. */
    uv_timer_start(m->flush, on_flush, 0, 0);
    return b;
}

static void add_item(struct vv_crdt_module *m, enum item_kind kind, struct vv_crdt_doc *d,
                     const uint8_t *data, size_t len, bool copy)
{
    if (m->db == NULL)
        return;
    struct batch *b = open_batch(m);
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 16;
        b->items = vv_xrealloc(b->items, b->cap * sizeof(*b->items));
    }
    struct item *it = &b->items[b->n++];
    memset(it, 0, sizeof(*it));
    it->kind = kind;
    vv_strlcpy(it->id, vv_crdt_doc_id(d), sizeof(it->id));
    it->doc_kind = (int)vv_crdt_doc_kind(d);
    if (copy) {
        it->data = len > 0 ? vv_xmalloc(len) : NULL;
        if (len > 0)
            memcpy(it->data, data, len);
    } else {
        it->data = (uint8_t *)data; /* taken */
    }
    it->len = len;
}

/* Makes req wait for the batch holding the writes just added (result is taken). */
void vv__crdt_wait_stored(struct vv_crdt_module *m, struct vv_rpc_request *req, json_t *result)
{
    if (m->db == NULL || m->open == NULL) {
        vv_rpc_reply(req, result); /* nothing was written */
        return;
    }
    struct batch *b = m->open;
    if (b->n_waiters == b->cap_waiters) {
        b->cap_waiters = b->cap_waiters ? 2 * b->cap_waiters : 4;
        b->waiters = vv_xrealloc(b->waiters, b->cap_waiters * sizeof(*b->waiters));
    }
    b->waiters[b->n_waiters++] = (struct waiter){req, result};
}

/* ---- engine callbacks ------------------------------------------------------------------------ */

static void on_created(void *arg, struct vv_crdt_doc *d)
{
    struct vv_crdt_module *m = arg;
    add_item(m, ITEM_DOC, d, NULL, 0, false);
}

struct relog {
    struct vv_crdt_module *m;
    struct vv_crdt_doc *d;
};

static void relog_pending(void *arg, const uint8_t *u, size_t len)
{
    struct relog *r = arg;
    add_item(r->m, ITEM_UPDATE, r->d, u, len, true);
}

static void on_updated(void *arg, struct vv_crdt_doc *d, const uint8_t *u, size_t len, bool local)
{
    struct vv_crdt_module *m = arg;
    if (local)
        m->local_updates++;
    else
        m->remote_updates++;
    add_item(m, ITEM_UPDATE, d, u, len, true);
    uint32_t *count = vv_crdt_doc_log_count(d);
    if (++*count >= m->compact_updates) {
        vv_crdt_doc_compact(d); /* the snapshot is a good moment to let deleted text go */
        uint8_t *st;
        size_t stn;
        if (vv_crdt_doc_state(d, &st, &stn) == 0) {
            add_item(m, ITEM_SNAPSHOT, d, st, stn, false);
            /*
             * Updates still waiting for their dependencies are not in the state: they are
             * logged again right after the snapshot (same transaction, after the log was
             * deleted), so they survive it and a restart as they would have without it. They
             * were waiting legitimately as far as anyone can tell (a dependency in flight),
             * and dropping them would cost a sync round to repair; one that never completes
             * leaves the buffer by the pool's age or budget limit (crdt_sync.h) and is then
             * gone from the log at the next snapshot. They do not count towards the next
             * snapshot, so a document full of waiting updates is not snapshotted at every
             * update.
             */
            struct relog r = {m, d};
            vv_crdt_doc_pending_foreach(d, relog_pending, &r);
            *count = 0;
            m->compactions++;
        }
    }
}

/* ---- peers on demand ------------------------------------------------------------------- */

#define CRDT_PEER_TAG "crdt"
/* The weight of the "crdt" tag: against other modules' tags it decides which tagged peers
 * go first when more than high_water tagged peers are connected. Weights are relative
 * between modules (docs/architecture.md, "Peers on demand"); 10 leaves room below for
 * peers held for passing reasons, since sync partners are what a document's replication
 * rests on. */
#define CRDT_PEER_WEIGHT 10

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, VV_NODE_ID_BYTES);
}

/*
 * Brings the tags in line with the documents' peer lists: every peer some document is shared
 * with is wanted, every peer tagged before that none is shared with any more is released.
 * O(peers of all documents), once per loop turn in which some list changed.
 */
static void retag(struct vv_env *env, void *arg)
{
    struct vv_crdt_module *m = arg;
    m->retag_timer = 0;
    size_t total = 0, n_docs = m->engine ? vv_crdt_engine_count(m->engine) : 0;
    for (size_t i = 0; i < n_docs; i++) {
        const uint8_t *peers;
        total += vv_crdt_engine_peers(m->engine,
                                      vv_crdt_doc_id(vv_crdt_engine_doc_at(m->engine, i)), &peers);
    }
    uint8_t(*want)[VV_NODE_ID_BYTES] = vv_xmalloc(VV_MAX(total, (size_t)1) * VV_NODE_ID_BYTES);
    size_t n = 0;
    for (size_t i = 0; i < n_docs; i++) {
        const uint8_t *peers;
        size_t k = vv_crdt_engine_peers(
            m->engine, vv_crdt_doc_id(vv_crdt_engine_doc_at(m->engine, i)), &peers);
        if (k > 0)
            memcpy(want[n], peers, k * VV_NODE_ID_BYTES);
        n += k;
    }
    qsort(want, n, VV_NODE_ID_BYTES, cmp_id);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || memcmp(want[u - 1], want[i], VV_NODE_ID_BYTES) != 0)
            memmove(want[u++], want[i], VV_NODE_ID_BYTES);
    /* Merge the two sorted lists: released what is gone, wanted what is new. A want the
     * connection manager refuses (its bounds; counted there) is tried again at the next
     * change, so the new list keeps only the tags we hold. */
    uint8_t(*held)[VV_NODE_ID_BYTES] = vv_xmalloc(VV_MAX(u, (size_t)1) * VV_NODE_ID_BYTES);
    size_t h = 0, a = 0, b = 0;
    while (a < m->n_tagged || b < u) {
        int c = a == m->n_tagged ? 1 : b == u ? -1 : cmp_id(m->tagged[a], want[b]);
        if (c < 0) {
            vv_env_release_peer(env, m->tagged[a++], CRDT_PEER_TAG);
        } else if (c == 0) {
            memcpy(held[h++], want[b++], VV_NODE_ID_BYTES);
            a++;
        } else {
            int rc = vv_env_want_peer(env, want[b], NULL, CRDT_PEER_TAG, CRDT_PEER_WEIGHT);
            if (rc == 0)
                memcpy(held[h++], want[b], VV_NODE_ID_BYTES);
            else
                vv_log_debug("crdt", "connection to a document's peer not asked for: %s",
                             vv_strerror(rc));
            b++;
        }
    }
    vv_free(want);
    vv_free(m->tagged);
    m->tagged = held;
    m->n_tagged = h;
}

/* Recounts at the end of this loop turn: a burst of joins costs one pass. */
static void schedule_retag(struct vv_crdt_module *m)
{
    if (m->retag_timer == 0 && m->node->env != NULL)
        m->retag_timer = vv_env_timer_start(vv_env_uv_env(m->node->env), 0, 0, retag, m);
}

/* Gives up every tag (the module stops). */
static void release_all(struct vv_crdt_module *m)
{
    if (m->node->env != NULL) {
        struct vv_env *env = vv_env_uv_env(m->node->env);
        vv_env_timer_cancel(env, m->retag_timer);
        for (size_t i = 0; i < m->n_tagged; i++)
            vv_env_release_peer(env, m->tagged[i], CRDT_PEER_TAG);
    }
    m->retag_timer = 0;
    vv_free(m->tagged);
    m->tagged = NULL;
    m->n_tagged = 0;
}

static void on_peers_changed(void *arg, struct vv_crdt_doc *d)
{
    struct vv_crdt_module *m = arg;
    const uint8_t *peers;
    size_t n = vv_crdt_engine_peers(m->engine, vv_crdt_doc_id(d), &peers);
    add_item(m, ITEM_PEERS, d, peers, n * VV_NODE_ID_BYTES, true);
    schedule_retag(m);
}

static void on_policy_changed(void *arg, struct vv_crdt_doc *d, const struct vv_crdt_policy *p)
{
    add_item(arg, ITEM_POLICY, d, p->bytes, p->len, true);
}

static void on_refused(void *arg, enum vv_crdt_refusal why)
{
    struct vv_crdt_module *m = arg;
    if (m->refused[why] != NULL)
        vv_counter_inc(m->refused[why]);
}

void vv__crdt_store_created(struct vv_crdt_module *m, struct vv_crdt_doc *d)
{
    on_created(m, d);
}

/* ---- loading ------------------------------------------------------------------------------- */

/* Brings the store's schema up to date before loading (the store opened afterwards on the
 * thread pool then finds nothing to do): the same append-only list and user_version count. */
static int migrate(sqlite3 *db)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    for (int i = version; rc == SQLITE_OK && i < (int)VV_ARRAY_SIZE(migrations) - 1; i++) {
        char set[64];
        snprintf(set, sizeof(set), "PRAGMA user_version=%d;", i + 1);
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE;", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, migrations[i], NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, set, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "COMMIT;", NULL, NULL, NULL);
        else
            sqlite3_exec(db, "ROLLBACK;", NULL, NULL, NULL);
    }
    return rc;
}

/*
 * A document stored without a policy (before issue 10) gets one now: this node as its
 * creator, its joined peers as writers, so that an upgrade keeps sharing it as before. Each
 * node that held it makes its own; see docs/crdt.md ("Upgrading") for what that implies.
 */
static int give_policy(struct vv_crdt_module *m, sqlite3 *db, const char *id)
{
    const uint8_t *peers;
    size_t n = vv_crdt_engine_peers(m->engine, id, &peers);
    int rc = vv_crdt_engine_set_access(m->engine, id, NULL, 0, peers, n);
    const struct vv_crdt_policy *p = vv_crdt_engine_policy(m->engine, id);
    if (rc != 0 || p == NULL)
        return rc != 0 ? rc : VV_ECRDT_POLICY;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "UPDATE docs SET policy = ?2 WHERE id = ?1", -1, &st, NULL) !=
        SQLITE_OK)
        return VV_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, p->bytes, (int)p->len, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : VV_EIO;
    sqlite3_finalize(st);
    return rc;
}

static int load_all(struct vv_crdt_module *m, const char *path)
{
    sqlite3 *db;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK)
        rc = migrate(db);
    sqlite3_stmt *docs = NULL, *ups = NULL;
    char **unsigned_ids = NULL; /* documents stored without a policy */
    size_t n_unsigned = 0;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT id, kind, snapshot, peers, policy FROM docs", -1, &docs,
                                NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT data FROM updates WHERE doc_id = ?1 ORDER BY seq", -1,
                                &ups, NULL);
    size_t n_docs = 0, n_updates = 0, bad = 0;
    while (rc == SQLITE_OK && sqlite3_step(docs) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(docs, 0);
        int kind = sqlite3_column_int(docs, 1);
        struct vv_crdt_doc *d =
            id ? vv_crdt_doc_new(id, (enum vv_crdt_kind)kind, vv_crdt_engine_replica(m->engine))
               : NULL;
        if (d == NULL) {
            bad++;
            continue;
        }
        const void *snap = sqlite3_column_blob(docs, 2);
        int snap_len = sqlite3_column_bytes(docs, 2);
        if (snap != NULL && snap_len > 0 && vv_crdt_doc_apply(d, snap, (size_t)snap_len, NULL) != 0)
            bad++;
        sqlite3_bind_text(ups, 1, id, -1, SQLITE_TRANSIENT);
        uint32_t logged = 0;
        while (sqlite3_step(ups) == SQLITE_ROW) {
            const void *u = sqlite3_column_blob(ups, 0);
            int ul = sqlite3_column_bytes(ups, 0);
            if (u == NULL || ul <= 0 || vv_crdt_doc_apply(d, u, (size_t)ul, NULL) != 0)
                bad++;
            logged++;
            n_updates++;
        }
        sqlite3_reset(ups);
        vv_crdt_doc_drain(d, UINT64_MAX); /* what the replay unblocked, all of it */
        /* Updates still waiting do not count towards the next snapshot (see on_updated). */
        size_t waiting = vv_crdt_doc_pending(d);
        *vv_crdt_doc_log_count(d) = logged - (uint32_t)VV_MIN((size_t)logged, waiting);
        const void *peers = sqlite3_column_blob(docs, 3);
        int pl = sqlite3_column_bytes(docs, 3);
        vv_crdt_engine_adopt(m->engine, d, peers,
                             peers && pl % VV_NODE_ID_BYTES == 0 ? (size_t)pl / VV_NODE_ID_BYTES
                                                                 : 0);
        const void *pol = sqlite3_column_blob(docs, 4);
        int pol_len = sqlite3_column_bytes(docs, 4);
        if (pol == NULL) {
            unsigned_ids = vv_xrealloc(unsigned_ids, (n_unsigned + 1) * sizeof(*unsigned_ids));
            unsigned_ids[n_unsigned++] = vv_xstrdup(id);
        } else if (vv_crdt_engine_adopt_policy(m->engine, id, pol, (size_t)pol_len) != 0) {
            /* Not valid for this document (the file was changed by hand?): no peer may in
             * until the creator's next version arrives. */
            vv_log_warn("crdt", "document %s: its stored access policy is not valid", id);
            bad++;
        }
        n_docs++;
    }
    if (rc != SQLITE_OK)
        vv_log_error("crdt", "cannot load %s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(docs);
    sqlite3_finalize(ups);
    for (size_t i = 0; i < n_unsigned; i++) {
        if (rc == SQLITE_OK && give_policy(m, db, unsigned_ids[i]) != 0) {
            vv_log_error("crdt", "cannot store the access policy of %s: %s", unsigned_ids[i],
                         sqlite3_errmsg(db));
            rc = SQLITE_ERROR;
        }
        vv_free(unsigned_ids[i]);
    }
    vv_free(unsigned_ids);
    if (rc == SQLITE_OK && n_unsigned > 0)
        vv_log_info("crdt",
                    "%zu document(s) stored before access policies got one: this node as "
                    "creator, their peers as writers",
                    n_unsigned);
    sqlite3_close(db);
    if (rc == SQLITE_OK) {
        vv_log_info("crdt", "%zu document(s) loaded from %s (%zu logged updates)", n_docs, path,
                    n_updates);
        if (bad > 0)
            vv_log_warn("crdt", "%zu stored update(s) or document(s) could not be applied", bad);
    }
    return rc == SQLITE_OK ? 0 : VV_EIO;
}

/* ---- metrics ------------------------------------------------------------------------------ */

#define ENGINE_STAT(field)                                                                         \
    static double st_##field(void *data)                                                           \
    {                                                                                              \
        struct vv_crdt_module *m = data;                                                           \
        return m->engine ? (double)vv_crdt_engine_stats(m->engine)->field : 0.0;                   \
    }
ENGINE_STAT(updates_sent)
ENGINE_STAT(updates_received)
ENGINE_STAT(updates_rejected)
ENGINE_STAT(updates_buffered)
ENGINE_STAT(syncs_sent)
ENGINE_STAT(syncs_received)
ENGINE_STAT(bad_messages)
ENGINE_STAT(too_large)
ENGINE_STAT(docs_refused)
ENGINE_STAT(updates_too_costly)
ENGINE_STAT(updates_forged)
ENGINE_STAT(integration_steps)
ENGINE_STAT(deferred_msgs)
ENGINE_STAT(deferred_bytes)
ENGINE_STAT(deferred_total)
ENGINE_STAT(deferred_dropped)
ENGINE_STAT(pending_updates)
ENGINE_STAT(pending_bytes)
ENGINE_STAT(pending_evicted)
ENGINE_STAT(pending_expired)
ENGINE_STAT(streams_sent)
ENGINE_STAT(streams_received)
ENGINE_STAT(streams_failed)
ENGINE_STAT(streams_skipped)
ENGINE_STAT(stream_bytes_in_flight)
ENGINE_STAT(stream_bytes_received)
ENGINE_STAT(stream_bad_frames)
ENGINE_STAT(policies_sent)
ENGINE_STAT(policies_accepted)

static double st_docs(void *data)
{
    struct vv_crdt_module *m = data;
    return m->engine ? (double)vv_crdt_engine_count(m->engine) : 0.0;
}
static double st_compactions(void *data)
{
    return (double)((struct vv_crdt_module *)data)->compactions;
}
static double st_store_errors(void *data)
{
    return (double)((struct vv_crdt_module *)data)->store_errors;
}

static void register_metrics(struct vv_crdt_module *m, struct vv_metrics *mx)
{
    vv_metrics_gauge_fn(mx, "vivimd_crdt_documents", "CRDT documents held.", st_docs, m);
    vv_metrics_gauge_fn(mx, "vivimd_crdt_deferred_messages",
                        "CRDT messages from peers waiting for a later loop turn.", st_deferred_msgs,
                        m);
    vv_metrics_gauge_fn(mx, "vivimd_crdt_deferred_bytes",
                        "Bytes of CRDT messages from peers waiting for a later loop turn.",
                        st_deferred_bytes, m);
    vv_metrics_gauge_fn(mx, "vivimd_crdt_pending_updates",
                        "Updates from peers waiting for their dependencies, all documents.",
                        st_pending_updates, m);
    vv_metrics_gauge_fn(mx, "vivimd_crdt_stream_bytes_in_flight",
                        "Bytes of large updates held for streams being sent to peers.",
                        st_stream_bytes_in_flight, m);
    vv_metrics_gauge_fn(mx, "vivimd_crdt_pending_bytes",
                        "Bytes of updates from peers waiting for their dependencies.",
                        st_pending_bytes, m);
    static const struct {
        const char *name, *help;
        double (*fn)(void *);
    } c[] = {
        {"vivimd_crdt_updates_sent_total", "Updates sent to peers.", st_updates_sent},
        {"vivimd_crdt_updates_received_total", "Updates from peers accepted.", st_updates_received},
        {"vivimd_crdt_updates_rejected_total",
         "Updates from peers refused (malformed, hostile, or beyond a limit).",
         st_updates_rejected},
        {"vivimd_crdt_updates_buffered_total",
         "Updates from peers that waited for their dependencies.", st_updates_buffered},
        {"vivimd_crdt_syncs_sent_total", "Sync rounds started (state vectors sent).",
         st_syncs_sent},
        {"vivimd_crdt_syncs_received_total", "Sync rounds answered.", st_syncs_received},
        {"vivimd_crdt_bad_messages_total", "Malformed CRDT messages from peers.", st_bad_messages},
        {"vivimd_crdt_too_large_total",
         "Updates or deltas not sent because they exceed the largest document a peer accepts "
         "(64 MiB), or sync requests over the 1 MiB frame limit.",
         st_too_large},
        {"vivimd_crdt_streams_sent_total",
         "Updates larger than a frame sent whole to peers through streams.", st_streams_sent},
        {"vivimd_crdt_streams_received_total",
         "Updates larger than a frame received whole from peers through streams.",
         st_streams_received},
        {"vivimd_crdt_streams_failed_total",
         "CRDT streams, either way, that ended before completing (refused, aborted, peer gone, "
         "no progress for 30 s).",
         st_streams_failed},
        {"vivimd_crdt_streams_skipped_total",
         "Large updates not streamed because one of that document to that peer was still "
         "going.",
         st_streams_skipped},
        {"vivimd_crdt_stream_received_bytes_total", "Bytes received in CRDT streams.",
         st_stream_bytes_received},
        {"vivimd_crdt_stream_bad_frames_total",
         "Malformed or rule-breaking stream frames from peers on the CRDT channel.",
         st_stream_bad_frames},
        {"vivimd_crdt_docs_refused_total",
         "Documents peers offered (a policy naming this node) and that were not created: "
         "[crdt] auto_join off or max_peer_documents reached; and sync requests from peers not "
         "joined here with auto_join off.",
         st_docs_refused},
        {"vivimd_crdt_updates_too_costly_total",
         "Text updates from peers refused because integrating them would exceed the work "
         "budget (4,194,304 scan steps).",
         st_updates_too_costly},
        {"vivimd_crdt_updates_forged_total",
         "Text updates from peers refused because they contradict their replica's own history.",
         st_updates_forged},
        {"vivimd_crdt_integration_steps_total",
         "Scan steps spent integrating text updates from peers (refused ones included).",
         st_integration_steps},
        {"vivimd_crdt_deferred_total",
         "CRDT messages from peers held for a later loop turn (the turn's work was spent).",
         st_deferred_total},
        {"vivimd_crdt_deferred_dropped_total",
         "CRDT messages from peers dropped because the deferred queue was full (4,096 "
         "messages or 16 MiB); the next sync round brings their content again.",
         st_deferred_dropped},
        {"vivimd_crdt_pending_evicted_total",
         "Updates waiting for their dependencies dropped, oldest first, to make room for newer "
         "ones (4,096 updates or 32 MiB, all documents); the next sync round brings what is "
         "still missing.",
         st_pending_evicted},
        {"vivimd_crdt_pending_expired_total",
         "Updates dropped after waiting 10 minutes for their dependencies.", st_pending_expired},
        {"vivimd_crdt_policies_sent_total", "Document access policies sent to peers.",
         st_policies_sent},
        {"vivimd_crdt_policies_accepted_total",
         "Newer document access policies accepted from peers (documents created by them "
         "included).",
         st_policies_accepted},
        {"vivimd_crdt_compactions_total", "Document logs folded into snapshots.", st_compactions},
        {"vivimd_crdt_store_errors_total", "Failed writes to the document store.", st_store_errors},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(c); i++)
        vv_metrics_counter_fn(mx, c[i].name, c[i].help, c[i].fn, m);
    struct vv_counter *refused = vv_metrics_counter(
        mx, "vivimd_crdt_refused_total",
        "Messages from peers refused by a document's access policy, by reason.", "reason");
    for (int r = 0; r < VV_CRDT_REFUSAL_COUNT; r++) {
        const char *v[] = {vv_crdt_refusal_name((enum vv_crdt_refusal)r)};
        m->refused[r] = vv_counter_labels(refused, v); /* every reason shows, from 0 */
    }
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void free_handle(uv_handle_t *h)
{
    vv_free(h);
}

static void on_db_open(struct vv_sqlite *s, int status, const char *msg, void *arg)
{
    (void)s;
    struct vv_crdt_module *m = arg;
    if (status != 0) {
        m->store_errors++;
        vv_log_error("crdt", "document store: %s", msg ? msg : vv_strerror(status));
    }
}

static void crdt_stop(struct vv_node *n);

static int crdt_init(struct vv_node *n)
{
    struct vv_crdt_module *m = vv_xcalloc(1, sizeof(*m));
    m->node = n;
    vv_node_set_module_data(n, &vv_crdt_module, m);
    if (n->metrics)
        register_metrics(m, n->metrics);
    return n->rpc ? vv__crdt_rpc_register(m, n->rpc) : 0;
}

static void apply_stream_limits(struct vv_crdt_module *m, const struct vv_crdt_settings *c)
{
    vv_crdt_engine_set_stream_limits(m->engine, c->max_document_bytes, c->max_streams_per_peer,
                                     (uint64_t)c->stream_peer_mb << 20,
                                     (uint64_t)c->stream_total_mb << 20);
}

static int crdt_start(struct vv_node *n)
{
    struct vv_crdt_module *m = vv_node_module_data(n, &vv_crdt_module);
    const struct vv_crdt_settings *c = vv_crdt_settings(&n->config);
    if (n->env == NULL) {
        vv_log_error("crdt", "the peer network module must start first");
        return VV_ESTATE;
    }
    static const struct vv_crdt_sync_cbs cbs = {
        .created = on_created,
        .updated = on_updated,
        .peers_changed = on_peers_changed,
        .policy_changed = on_policy_changed,
        .refused = on_refused,
    };
    m->compact_updates = c->compact_updates;
    /* The callbacks are connected once the stored documents are in: loading writes nothing. */
    m->engine = vv_crdt_engine_new(vv_env_uv_env(n->env), 0, c->anti_entropy_ms, NULL, NULL);
    char path[4200];
    snprintf(path, sizeof(path), "%s/crdt.sqlite", vv_node_settings(&n->config)->state_dir);
    int rc = load_all(m, path);
    if (rc != 0) {
        vv_crdt_engine_free(m->engine);
        m->engine = NULL;
        return rc;
    }
    vv_crdt_engine_set_cbs(m->engine, &cbs, m);
    schedule_retag(m); /* the peers of the documents just loaded */
    vv_crdt_engine_set_max_peer_docs(m->engine, c->max_peer_documents);
    vv_crdt_engine_set_auto_join(m->engine, c->auto_join);
    apply_stream_limits(m, c);
    m->flush = vv_xmalloc(sizeof(*m->flush));
    uv_timer_init(n->loop, m->flush);
    m->flush->data = m;
    rc = vv_sqlite_open(n->loop, path,
                        c->synchronous == VV_CONFIG_SYNC_FULL ? VV_SQLITE_SYNC_FULL
                                                              : VV_SQLITE_SYNC_NORMAL,
                        migrations, on_db_open, m, &m->db);
    if (rc != 0) {
        vv_log_error("crdt", "cannot open %s: %s", path, vv_strerror(rc));
        m->db = NULL;
        crdt_stop(n);
        return rc;
    }
    vv_log_info("crdt", "replica %016llx, %zu document(s)",
                (unsigned long long)vv_crdt_engine_replica(m->engine),
                vv_crdt_engine_count(m->engine));
    return 0;
}

static void crdt_stop(struct vv_node *n)
{
    struct vv_crdt_module *m = vv_node_module_data(n, &vv_crdt_module);
    if (m == NULL)
        return;
    release_all(m);
    if (m->engine) {
        vv_crdt_engine_free(m->engine);
        m->engine = NULL;
    }
    if (m->db) {
        /* The open batch is submitted now; every queued batch is written before the close
         * job runs (the store's jobs run in order), and their waiters are answered. */
        submit_open(m);
        m->open = NULL;
        vv_sqlite_close_after_pending(m->db, NULL, NULL);
        m->db = NULL;
    }
    if (m->flush) {
        uv_close((uv_handle_t *)m->flush, free_handle);
        m->flush = NULL;
    }
}

static void crdt_deinit(struct vv_node *n)
{
    vv_free(vv_node_module_data(n, &vv_crdt_module));
    vv_node_set_module_data(n, &vv_crdt_module, NULL);
}

/* [crdt] auto_join, max_peer_documents and the stream bounds apply at once: they only
 * decide what the engine accepts (and sends) from now on. */
static void crdt_reload(struct vv_node *n)
{
    struct vv_crdt_module *m = vv_node_module_data(n, &vv_crdt_module);
    const struct vv_crdt_settings *c = vv_crdt_settings(&n->config);
    if (m == NULL || m->engine == NULL)
        return;
    vv_crdt_engine_set_max_peer_docs(m->engine, c->max_peer_documents);
    vv_crdt_engine_set_auto_join(m->engine, c->auto_join);
    apply_stream_limits(m, c);
}

/* Unhealthy without its document store; store errors (each also logged) are counted. */
static json_t *crdt_health(struct vv_node *n)
{
    struct vv_crdt_module *m = vv_node_module_data(n, &vv_crdt_module);
    if (m == NULL || m->engine == NULL)
        return json_pack("{s:b}", "ok", 0);
    return json_pack("{s:b, s:I, s:I}", "ok", m->db != NULL, "documents",
                     (json_int_t)vv_crdt_engine_count(m->engine), "storeErrors",
                     (json_int_t)m->store_errors);
}

static const char *const crdt_depends[] = {"net", "rpc", "monitor", NULL};

const struct vv_module vv_crdt_module = {
    .name = "crdt",
    .config = &vv_crdt_settings_section,
    .depends = crdt_depends,
    .health = crdt_health,
    .init = crdt_init,
    .start = crdt_start,
    .stop = crdt_stop,
    .deinit = crdt_deinit,
    .reload = crdt_reload,
};
