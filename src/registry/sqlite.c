/*
 * The registry's embedded backend: one SQLite file in the state directory, WAL mode,
 * every statement run on the thread pool through vv_sqlite (one job at a time), so the loop
 * never waits on disk. A request is acknowledged (callback with status 0) only after its
 * transaction committed.
 *
 * Paging is keyset-based: a cursor is the last key of the previous page, so pages stay
 * stable and cheap however deep they go.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "registry_internal.h"

/* Append-only: a released vivimd's migrations are never edited, only followed by new ones. */
static const char *const migrations[] = {
    "CREATE TABLE records ("
    "  id TEXT PRIMARY KEY,"
    "  content_id TEXT NOT NULL,"
    "  owner_did TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  audience_type TEXT NOT NULL,"
    "  expires_at INTEGER,"
    "  status TEXT NOT NULL,"
    "  replica_count INTEGER NOT NULL,"
    "  access_count INTEGER NOT NULL DEFAULT 0,"
    "  last_access INTEGER,"
    "  doc TEXT NOT NULL);"
    "CREATE INDEX records_owner ON records(owner_did, id);"
    "CREATE INDEX records_expiry ON records(expires_at, id)"
    "  WHERE status = 'active' AND expires_at IS NOT NULL;"
    "CREATE TABLE record_audience ("
    "  audience_type TEXT NOT NULL, target TEXT NOT NULL,"
    "  record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (audience_type, target, record_id)) WITHOUT ROWID;"
    "CREATE INDEX record_audience_record ON record_audience(record_id);"
    "CREATE TABLE access_log ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  record_id TEXT NOT NULL, at INTEGER NOT NULL, actor TEXT NOT NULL,"
    "  action TEXT NOT NULL);"
    "CREATE INDEX access_log_record ON access_log(record_id, seq);",
    NULL,
};

struct batch;

struct sqlite_backend {
    struct vv_sqlite *db;
    struct batch *open_batch; /* queued, not started: new registrations join it */
};

#define request vv__registry_req

/* ---- helpers on the pool thread ---------------------------------------------------------- */

static int prep(sqlite3 *db, struct request *rq, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        snprintf(rq->msg, sizeof(rq->msg), "prepare: %s", sqlite3_errmsg(db));
        rq->status = VV_EIO;
        return -1;
    }
    return 0;
}

static void db_error(sqlite3 *db, struct request *rq)
{
    snprintf(rq->msg, sizeof(rq->msg), "%s", sqlite3_errmsg(db));
    rq->status = sqlite3_errcode(db) == SQLITE_BUSY ? VV_EBUSY : VV_EIO;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s == NULL)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static json_t *load_doc(sqlite3_stmt *st, int col)
{
    const char *text = (const char *)sqlite3_column_text(st, col);
    return text ? json_loads(text, 0, NULL) : NULL;
}

static bool exec_sql(sqlite3 *db, struct request *rq, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        db_error(db, rq);
        return false;
    }
    return true;
}

/* Writes the record row and its audience rows (inside the caller's transaction). */
static bool write_record(sqlite3 *db, struct request *rq, json_t *rec, bool insert)
{
    sqlite3_stmt *st;
    const char *sql = insert ? "INSERT INTO records (id, content_id, owner_did, created_at, "
                               "audience_type, expires_at, status, replica_count, doc) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                             : "UPDATE records SET content_id = ?2, owner_did = ?3, "
                               "created_at = ?4, audience_type = ?5, expires_at = ?6, "
                               "status = ?7, replica_count = ?8, doc = ?9 WHERE id = ?1";
    if (prep(db, rq, sql, &st) != 0)
        return false;
    json_t *aud = json_object_get(rec, "audience");
    json_t *exp = json_object_get(json_object_get(rec, "schedule"), "expiresAt");
    char *doc = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    bind_text(st, 1, json_string_value(json_object_get(rec, "id")));
    bind_text(st, 2, json_string_value(json_object_get(rec, "contentId")));
    bind_text(st, 3, json_string_value(json_object_get(rec, "ownerDid")));
    sqlite3_bind_int64(st, 4, json_integer_value(json_object_get(rec, "createdAt")));
    bind_text(st, 5, json_string_value(json_object_get(aud, "type")));
    if (json_is_integer(exp))
        sqlite3_bind_int64(st, 6, json_integer_value(exp));
    else
        sqlite3_bind_null(st, 6);
    bind_text(st, 7, json_string_value(json_object_get(rec, "status")));
    sqlite3_bind_int64(st, 8, json_integer_value(json_object_get(rec, "replicaCount")));
    bind_text(st, 9, doc);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    free(doc);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT) {
            rq->status = VV_EEXIST;
            snprintf(rq->msg, sizeof(rq->msg), "a record with this id exists");
        } else {
            db_error(db, rq);
        }
        return false;
    }
    /* Audience index: one row per target ('' for public), rebuilt on every write. */
    const char *id = json_string_value(json_object_get(rec, "id"));
    if (!insert) {
        if (prep(db, rq, "DELETE FROM record_audience WHERE record_id = ?1", &st) != 0)
            return false;
        bind_text(st, 1, id);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            db_error(db, rq);
            return false;
        }
    }
    if (prep(db, rq,
             "INSERT OR IGNORE INTO record_audience (audience_type, target, record_id) "
             "VALUES (?1, ?2, ?3)",
             &st) != 0)
        return false;
    json_t *targets = json_object_get(aud, "targets");
    size_t n = json_array_size(targets);
    for (size_t i = 0; i < (n ? n : 1); i++) {
        sqlite3_reset(st);
        bind_text(st, 1, json_string_value(json_object_get(aud, "type")));
        bind_text(st, 2, n ? json_string_value(json_array_get(targets, i)) : "");
        bind_text(st, 3, id);
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlite3_finalize(st);
            db_error(db, rq);
            return false;
        }
    }
    sqlite3_finalize(st);
    return true;
}

static json_t *read_record(sqlite3 *db, struct request *rq, const char *id)
{
    sqlite3_stmt *st;
    if (prep(db, rq, "SELECT doc FROM records WHERE id = ?1", &st) != 0)
        return NULL;
    bind_text(st, 1, id);
    json_t *rec = NULL;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        rec = load_doc(st, 0);
    } else if (rc == SQLITE_DONE) {
        rq->status = VV_ENOTFOUND;
        snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
    } else {
        db_error(db, rq);
    }
    sqlite3_finalize(st);
    return rec;
}

/* Runs a paged query whose rows are (doc, key): limit+1 rows tell whether more follow. */
static void page(sqlite3 *db, struct request *rq, sqlite3_stmt *st, int limit_param, bool entries)
{
    sqlite3_bind_int(st, limit_param, (int)rq->limit + 1);
    json_t *items = json_array();
    bool more = false;
    uint32_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == rq->limit) {
            more = true;
            break;
        }
        json_t *item = load_doc(st, 0);
        if (item)
            json_array_append_new(items, item);
        vv_free(rq->last_key);
        rq->last_key = vv_xstrdup((const char *)sqlite3_column_text(st, 1));
        count++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_error(db, rq);
        json_decref(items);
        return;
    }
    rq->result = vv__registry_page(items, more ? rq->last_key : NULL, entries);
}

/*
 * One registration inside the batch's transaction, under a savepoint so that its failure
 * leaves the others intact. Registering the same id again with the same content and owner
 * returns the stored record (a retried distribute converges).
 */
static void register_one(sqlite3 *db, struct request *rq)
{
    json_t *rec = json_loads(rq->doc, 0, NULL);
    if (!exec_sql(db, rq, "SAVEPOINT reg")) {
        json_decref(rec);
        return;
    }
    if (write_record(db, rq, rec, true)) {
        rq->result = json_incref(rec);
        exec_sql(db, rq, "RELEASE reg");
        json_decref(rec);
        return;
    }
    struct request scratch = {0};
    exec_sql(db, &scratch, "ROLLBACK TO reg");
    exec_sql(db, &scratch, "RELEASE reg");
    if (rq->status == VV_EEXIST) {
        rq->status = 0;
        json_t *cur = read_record(db, rq, json_string_value(json_object_get(rec, "id")));
        if (cur &&
            json_equal(json_object_get(cur, "contentId"), json_object_get(rec, "contentId")) &&
            json_equal(json_object_get(cur, "ownerDid"), json_object_get(rec, "ownerDid"))) {
            rq->result = cur;
        } else {
            json_decref(cur);
            rq->status = VV_EEXIST;
            snprintf(rq->msg, sizeof(rq->msg), "a different record with this id exists");
        }
    }
    json_decref(rec);
}

/* Registrations queued together commit in one transaction (group commit). */
#define REGISTER_BATCH_MAX 256

struct batch {
    struct vv_sqlite_job job;
    struct sqlite_backend *b;
    struct request *items[REGISTER_BATCH_MAX];
    unsigned n;
};

static void batch_work(sqlite3 *db, struct vv_sqlite_job *job)
{
    struct batch *bt = VV_CONTAINER_OF(job, struct batch, job);
    struct request begin = {0};
    if (!exec_sql(db, &begin, "BEGIN IMMEDIATE")) {
        for (unsigned i = 0; i < bt->n; i++) {
            bt->items[i]->status = begin.status;
            memcpy(bt->items[i]->msg, begin.msg, sizeof(begin.msg));
        }
        return;
    }
    for (unsigned i = 0; i < bt->n; i++)
        register_one(db, bt->items[i]);
    struct request commit = {0};
    if (!exec_sql(db, &commit, "COMMIT")) {
        struct request scratch = {0};
        exec_sql(db, &scratch, "ROLLBACK");
        for (unsigned i = 0; i < bt->n; i++) {
            json_decref(bt->items[i]->result);
            bt->items[i]->result = NULL;
            bt->items[i]->status = commit.status;
            memcpy(bt->items[i]->msg, commit.msg, sizeof(commit.msg));
        }
    }
}

static void work(sqlite3 *db, struct vv_sqlite_job *job)
{
    struct request *rq = VV_CONTAINER_OF(job, struct request, job);
    sqlite3_stmt *st;
    switch (rq->op) {
    case VV__REG_REGISTER:
        return; /* registrations run in batches: see batch_work */
    case VV__REG_UPDATE: {
        if (!exec_sql(db, rq, "BEGIN IMMEDIATE"))
            return;
        json_t *cur = read_record(db, rq, rq->a);
        json_t *patch = json_loads(rq->doc, 0, NULL), *merged = NULL;
        if (cur != NULL) {
            int rc = vv_record_apply_update(cur, patch, &merged, rq->msg, sizeof(rq->msg));
            if (rc != 0)
                rq->status = rc;
            else if (write_record(db, rq, merged, false) && exec_sql(db, rq, "COMMIT"))
                rq->result = json_incref(merged);
        }
        if (rq->result == NULL)
            exec_sql(db, &(struct request){0}, "ROLLBACK");
        json_decref(cur);
        json_decref(patch);
        json_decref(merged);
        return;
    }
    case VV__REG_DEREGISTER:
        if (!exec_sql(db, rq, "BEGIN IMMEDIATE"))
            return;
        if (prep(db, rq, "DELETE FROM records WHERE id = ?1", &st) != 0) {
            exec_sql(db, &(struct request){0}, "ROLLBACK");
            return;
        }
        bind_text(st, 1, rq->a);
        if (sqlite3_step(st) != SQLITE_DONE) {
            db_error(db, rq);
        } else if (sqlite3_changes(db) == 0) {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
        }
        sqlite3_finalize(st);
        if (rq->status == 0 &&
            prep(db, rq, "DELETE FROM access_log WHERE record_id = ?1", &st) == 0) {
            bind_text(st, 1, rq->a);
            if (sqlite3_step(st) != SQLITE_DONE)
                db_error(db, rq);
            sqlite3_finalize(st);
        }
        if (rq->status == 0 && exec_sql(db, rq, "COMMIT"))
            rq->result = json_pack("{s:s, s:b}", "id", rq->a, "deregistered", 1);
        else
            exec_sql(db, &(struct request){0}, "ROLLBACK");
        return;
    case VV__REG_FIND_ID:
        rq->result = read_record(db, rq, rq->a);
        return;
    case VV__REG_FIND_OWNER:
        if (prep(db, rq,
                 "SELECT doc, id FROM records WHERE owner_did = ?1 AND id > ?2 "
                 "ORDER BY id LIMIT ?3",
                 &st) != 0)
            return;
        bind_text(st, 1, rq->a);
        bind_text(st, 2, rq->b ? rq->b : "");
        page(db, rq, st, 3, false);
        return;
    case VV__REG_FIND_AUDIENCE:
        if (prep(db, rq,
                 "SELECT r.doc, r.id FROM record_audience a JOIN records r ON r.id = a.record_id "
                 "WHERE a.audience_type = ?1 AND a.target = ?2 AND a.record_id > ?3 "
                 "ORDER BY a.record_id LIMIT ?4",
                 &st) != 0)
            return;
        bind_text(st, 1, rq->a);
        bind_text(st, 2, rq->c);
        bind_text(st, 3, rq->b ? rq->b : "");
        page(db, rq, st, 4, false);
        return;
    case VV__REG_FIND_EXPIRED: {
        /* Cursor "expiresAt:id". */
        int64_t after_t = -1;
        const char *after_id = "";
        if (rq->b) {
            char *colon = strchr(rq->b, ':');
            after_t = strtoll(rq->b, NULL, 10);
            after_id = colon ? colon + 1 : "";
        }
        if (prep(db, rq,
                 "SELECT doc, expires_at || ':' || id FROM records "
                 "WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= ?1 "
                 "AND (expires_at > ?2 OR (expires_at = ?2 AND id > ?3)) "
                 "ORDER BY expires_at, id LIMIT ?4",
                 &st) != 0)
            return;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)rq->n);
        sqlite3_bind_int64(st, 2, after_t);
        bind_text(st, 3, after_id);
        page(db, rq, st, 4, false);
        return;
    }
    case VV__REG_LOG_ACCESS: {
        if (!exec_sql(db, rq, "BEGIN IMMEDIATE"))
            return;
        bool ok = prep(db, rq,
                       "UPDATE records SET access_count = access_count + 1, last_access = ?2 "
                       "WHERE id = ?1",
                       &st) == 0;
        if (ok) {
            bind_text(st, 1, rq->a);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)rq->n);
            ok = sqlite3_step(st) == SQLITE_DONE;
            if (!ok)
                db_error(db, rq);
            else if (sqlite3_changes(db) == 0) {
                ok = false;
                rq->status = VV_ENOTFOUND;
                snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
            }
            sqlite3_finalize(st);
        }
        if (ok && (ok = prep(db, rq,
                             "INSERT INTO access_log (record_id, at, actor, action) "
                             "VALUES (?1, ?2, ?3, ?4)",
                             &st) == 0)) {
            bind_text(st, 1, rq->a);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)rq->n);
            bind_text(st, 3, rq->b);
            bind_text(st, 4, rq->c);
            ok = sqlite3_step(st) == SQLITE_DONE;
            if (!ok)
                db_error(db, rq);
            sqlite3_finalize(st);
        }
        /* Retention: the log never holds more than access_log_max_rows rows. */
        if (ok && (ok = prep(db, rq, "DELETE FROM access_log WHERE seq <= last_insert_rowid() - ?1",
                             &st) == 0)) {
            sqlite3_bind_int64(st, 1, rq->reg->cfg.access_log_max_rows);
            ok = sqlite3_step(st) == SQLITE_DONE;
            if (!ok)
                db_error(db, rq);
            sqlite3_finalize(st);
        }
        if (ok && exec_sql(db, rq, "COMMIT"))
            rq->result = json_pack("{s:s, s:I}", "id", rq->a, "at", (json_int_t)rq->n);
        else
            exec_sql(db, &(struct request){0}, "ROLLBACK");
        return;
    }
    case VV__REG_STATS:
        if (prep(db, rq,
                 "SELECT access_count, replica_count, last_access FROM records WHERE id = ?1",
                 &st) != 0)
            return;
        bind_text(st, 1, rq->a);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            json_t *last = sqlite3_column_type(st, 2) == SQLITE_NULL
                               ? json_null()
                               : json_integer(sqlite3_column_int64(st, 2));
            rq->result = json_pack("{s:I, s:I, s:o}", "accessCount",
                                   (json_int_t)sqlite3_column_int64(st, 0), "replicaCount",
                                   (json_int_t)sqlite3_column_int64(st, 1), "lastAccess", last);
        } else if (rc == SQLITE_DONE) {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
        } else {
            db_error(db, rq);
        }
        sqlite3_finalize(st);
        return;
    case VV__REG_ACCESS_LOG: {
        if (prep(db, rq,
                 "SELECT json_object('at', at, 'actor', actor, 'action', action), seq "
                 "FROM access_log WHERE record_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                 &st) != 0)
            return;
        bind_text(st, 1, rq->a);
        sqlite3_bind_int64(st, 2, rq->b ? strtoll(rq->b, NULL, 10) : INT64_MAX);
        page(db, rq, st, 3, true);
        return;
    }
    }
}

/* ---- backend ops (loop thread) ----------------------------------------------------------- */

static void done(struct vv_sqlite_job *job, int status)
{
    struct request *rq = VV_CONTAINER_OF(job, struct request, job);
    int st = status == UV_ECANCELED ? VV_ECLOSED : status != 0 ? status : rq->status;
    vv__registry_complete(rq->reg, rq, st);
}

static void batch_started(struct vv_sqlite_job *job)
{
    struct batch *bt = VV_CONTAINER_OF(job, struct batch, job);
    if (bt->b->open_batch == bt)
        bt->b->open_batch = NULL;
}

static void batch_done(struct vv_sqlite_job *job, int status)
{
    struct batch *bt = VV_CONTAINER_OF(job, struct batch, job);
    if (bt->b->open_batch == bt)
        bt->b->open_batch = NULL; /* cancelled before it started */
    for (unsigned i = 0; i < bt->n; i++) {
        struct request *rq = bt->items[i];
        int st = status == UV_ECANCELED ? VV_ECLOSED : status != 0 ? status : rq->status;
        vv__registry_complete(rq->reg, rq, st);
    }
    vv_free(bt);
}

static void sqlite_submit(struct vv_registry *r, struct request *rq)
{
    struct sqlite_backend *b = r->impl;
    if (rq->op == VV__REG_REGISTER) {
        if (b->open_batch != NULL && b->open_batch->n < REGISTER_BATCH_MAX) {
            b->open_batch->items[b->open_batch->n++] = rq;
            return;
        }
        struct batch *bt = vv_xcalloc(1, sizeof(*bt));
        bt->b = b;
        bt->items[bt->n++] = rq;
        bt->job.on_start = batch_started;
        /* Open before submitting: an idle worker starts the job inside submit, and
         * batch_started must then close it again. */
        b->open_batch = bt;
        if (vv_sqlite_submit(b->db, &bt->job, batch_work, batch_done) != 0) {
            b->open_batch = NULL;
            vv_free(bt);
            vv__registry_complete(r, rq, VV_ECLOSED);
        }
        return;
    }
    if (vv_sqlite_submit(b->db, &rq->job, work, done) != 0)
        vv__registry_complete(r, rq, VV_ECLOSED);
}

static void closed(void *arg)
{
    struct vv_registry *r = arg;
    vv_free(r->impl);
    vv__registry_closed(r);
}

static void sqlite_close(struct vv_registry *r)
{
    struct sqlite_backend *b = r->impl;
    vv_sqlite_close(b->db, closed, r);
}

const struct vv__registry_backend vv__registry_sqlite = {
    .name = "sqlite",
    .submit = sqlite_submit,
    .close = sqlite_close,
};

static void opened(struct vv_sqlite *s, int status, const char *msg, void *arg)
{
    (void)s;
    struct vv_registry *r = arg;
    if (r->open_cb)
        r->open_cb(status, msg, r->open_arg);
}

int vv_registry_open_sqlite(uv_loop_t *loop, const struct vv_registry_config *cfg,
                            void (*cb)(int status, const char *msg, void *arg), void *arg,
                            struct vv_registry **out)
{
    struct vv_registry *r = vv__registry_new(loop, cfg, cb, arg);
    struct sqlite_backend *b = vv_xcalloc(1, sizeof(*b));
    r->backend = &vv__registry_sqlite;
    r->impl = b;
    *out = r;
    return vv_sqlite_open(loop, cfg->sqlite_path,
                          cfg->sqlite_full_sync ? VV_SQLITE_SYNC_FULL : VV_SQLITE_SYNC_NORMAL,
                          migrations, opened, r, &b->db);
}
