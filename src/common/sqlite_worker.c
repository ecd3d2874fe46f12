/*
 * SQLite connections driven from the loop, executed on the thread pool, one job at a time.
 * Used by the registry's embedded backend and the per-user databases. See sqlite_worker.h.
 *
 * Invariant: at most one uv_work_t of a handle is queued or running at any time (`running`);
 * the loop thread reads or writes the handle's queue only, never `db`, except to hand it to
 * the next job.
 */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/sqlite_worker.h"

#define VV_SQLITE_BUSY_TIMEOUT_MS 5000

struct vv_sqlite {
    uv_loop_t *loop;
    sqlite3 *db;
    char *path;
    enum vv_sqlite_sync sync;
    const char *const *migrations;
    struct vv_sqlite_job *head, *tail;
    unsigned pending;
    bool running;
    bool closing;
    bool failed; /* open failed: jobs complete with VV_EIO without running */
    int schema_version;
    char msg[256];
    void (*open_cb)(struct vv_sqlite *s, int status, const char *msg, void *arg);
    void *open_arg;
    void (*close_cb)(void *arg);
    void *close_arg;
    int open_status;
    struct vv_sqlite_job open_job, close_job;
};

static void kick(struct vv_sqlite *s);

static void work_cb(uv_work_t *req)
{
    struct vv_sqlite_job *job = VV_CONTAINER_OF(req, struct vv_sqlite_job, req);
    job->work(job->owner->db, job);
}

static void after_cb(uv_work_t *req, int status)
{
    struct vv_sqlite_job *job = VV_CONTAINER_OF(req, struct vv_sqlite_job, req);
    struct vv_sqlite *s = job->owner;
    s->running = false;
    s->pending--;
    if (job == &s->close_job) {
        void (*cb)(void *) = s->close_cb;
        void *arg = s->close_arg;
        vv_free(s->path);
        vv_free(s);
        if (cb)
            cb(arg);
        return;
    }
    job->done(job, status);
    kick(s);
}

static void kick(struct vv_sqlite *s)
{
    while (!s->running && s->head != NULL) {
        struct vv_sqlite_job *job = s->head;
        s->head = job->next;
        if (s->head == NULL)
            s->tail = NULL;
        if (s->failed && job != &s->close_job) {
            s->pending--;
            job->done(job, VV_EIO);
            continue;
        }
        s->running = true;
        if (job->on_start)
            job->on_start(job);
        uv_queue_work(s->loop, &job->req, work_cb, after_cb);
    }
}

static void enqueue(struct vv_sqlite *s, struct vv_sqlite_job *job)
{
    job->owner = s;
    job->next = NULL;
    if (s->tail)
        s->tail->next = job;
    else
        s->head = job;
    s->tail = job;
    s->pending++;
    kick(s);
}

/* ---- open and migrations (pool thread) -------------------------------------------------- */

static int exec(sqlite3 *db, const char *sql, char *msg, size_t msg_len)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        snprintf(msg, msg_len, "%s", err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
    }
    return rc;
}

static void open_work(sqlite3 *unused, struct vv_sqlite_job *job)
{
    (void)unused;
    struct vv_sqlite *s = VV_CONTAINER_OF(job, struct vv_sqlite, open_job);
    int rc = sqlite3_open_v2(s->path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_NOFOLLOW,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(s->msg, sizeof(s->msg), "cannot open %s: %s", s->path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sqlite3_close_v2(s->db);
        s->db = NULL;
        s->open_status = VV_EIO;
        return;
    }
    sqlite3_busy_timeout(s->db, VV_SQLITE_BUSY_TIMEOUT_MS);
    char pragmas[160];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;",
             s->sync == VV_SQLITE_SYNC_FULL ? "FULL" : "NORMAL");
    if (exec(s->db, pragmas, s->msg, sizeof(s->msg)) != SQLITE_OK)
        goto fail;

    /* Migrations: an append-only list; user_version counts how many have run. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        goto fail_db;
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    int known = 0;
    while (s->migrations && s->migrations[known])
        known++;
    if (version > known) {
        snprintf(s->msg, sizeof(s->msg),
                 "%s has schema version %d, newer than this vivimd knows (%d): refusing to "
                 "downgrade",
                 s->path, version, known);
        goto fail_closed;
    }
    for (int i = version; i < known; i++) {
        char set[64];
        snprintf(set, sizeof(set), "PRAGMA user_version=%d;", i + 1);
        if (exec(s->db, "BEGIN IMMEDIATE;", s->msg, sizeof(s->msg)) != SQLITE_OK)
            goto fail;
        if (exec(s->db, s->migrations[i], s->msg, sizeof(s->msg)) != SQLITE_OK ||
            exec(s->db, set, s->msg, sizeof(s->msg)) != SQLITE_OK ||
            exec(s->db, "COMMIT;", s->msg, sizeof(s->msg)) != SQLITE_OK) {
            char ignore[8];
            exec(s->db, "ROLLBACK;", ignore, sizeof(ignore));
            goto fail;
        }
    }
    s->schema_version = known;
    s->open_status = 0;
    return;
fail_db:
    snprintf(s->msg, sizeof(s->msg), "%s", sqlite3_errmsg(s->db));
fail:
fail_closed:
    sqlite3_close_v2(s->db);
    s->db = NULL;
    s->open_status = VV_EIO;
}

static void open_done(struct vv_sqlite_job *job, int status)
{
    struct vv_sqlite *s = VV_CONTAINER_OF(job, struct vv_sqlite, open_job);
    int rc = status != 0 ? status : s->open_status;
    if (rc != 0) {
        s->failed = true;
        vv_log_error("sqlite", "%s", s->msg[0] ? s->msg : vv_strerror(rc));
    }
    if (s->open_cb)
        s->open_cb(s, rc, rc ? s->msg : NULL, s->open_arg);
}

int vv_sqlite_open(uv_loop_t *loop, const char *path, enum vv_sqlite_sync sync,
                   const char *const *migrations,
                   void (*cb)(struct vv_sqlite *s, int status, const char *msg, void *arg),
                   void *arg, struct vv_sqlite **out)
{
    struct vv_sqlite *s = vv_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->path = vv_xstrdup(path);
    s->sync = sync;
    s->migrations = migrations;
    s->open_cb = cb;
    s->open_arg = arg;
    s->open_job.work = open_work;
    s->open_job.done = open_done;
    *out = s;
    enqueue(s, &s->open_job);
    return 0;
}

int vv_sqlite_submit(struct vv_sqlite *s, struct vv_sqlite_job *job, vv_sqlite_work_fn work,
                     vv_sqlite_done_fn done)
{
    if (s->closing)
        return VV_ECLOSED;
    job->work = work;
    job->done = done;
    enqueue(s, job);
    return 0;
}

static void close_work(sqlite3 *db, struct vv_sqlite_job *job)
{
    (void)job;
    if (db != NULL)
        sqlite3_close_v2(db); /* finalizes nothing: every job finalizes its statements */
}

void vv_sqlite_close_after_pending(struct vv_sqlite *s, void (*cb)(void *arg), void *arg)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    /* Jobs already queued run first (the queue is in order); no new ones are taken. */
    s->close_job.work = close_work;
    s->close_job.done = NULL;
    enqueue(s, &s->close_job);
}

void vv_sqlite_close(struct vv_sqlite *s, void (*cb)(void *arg), void *arg)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    /* Jobs not started yet are cancelled, in order. */
    struct vv_sqlite_job *job = s->head;
    s->head = s->tail = NULL;
    while (job != NULL) {
        struct vv_sqlite_job *next = job->next;
        s->pending--;
        job->done(job, UV_ECANCELED);
        job = next;
    }
    s->close_job.work = close_work;
    s->close_job.done = NULL;
    s->failed = false; /* the close job must run even after a failed open */
    enqueue(s, &s->close_job);
}

unsigned vv_sqlite_pending(const struct vv_sqlite *s)
{
    return s->pending;
}

int vv_sqlite_schema_version(const struct vv_sqlite *s)
{
    return s->schema_version;
}
