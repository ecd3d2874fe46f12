/*
 * SQLite off the loop thread: a handle owns one sqlite3 connection and runs jobs on it on
 * libuv's thread pool, one at a time in submission order (SQLite connections are not to be
 * used from two threads at once, and ordering keeps read-your-writes simple). The loop
 * thread never touches the sqlite3 pointer while a job runs.
 *
 * A job is two functions: work(db, job) on a pool thread, which may only touch the job's
 * own memory and the db; and done(job, status) back on the loop thread, which always runs
 * (status is UV_ECANCELED when the handle closed before the job started).
 */
#ifndef VIVIM_SQLITE_WORKER_H
#define VIVIM_SQLITE_WORKER_H

#include <sqlite3.h>
#include <stdbool.h>
#include <uv.h>

struct vv_sqlite;
struct vv_sqlite_job;

typedef void (*vv_sqlite_work_fn)(sqlite3 *db, struct vv_sqlite_job *job);
typedef void (*vv_sqlite_done_fn)(struct vv_sqlite_job *job, int status);

/* Embed in your own request struct; the worker does not allocate per job. */
struct vv_sqlite_job {
    vv_sqlite_work_fn work;
    vv_sqlite_done_fn done;
    /* Optional (NULL when unused), set before submit: called on the loop thread just before
     * the job is handed to the pool, so a caller batching work into a queued job knows when
     * it may no longer add to it. It may run inside vv_sqlite_submit. */
    void (*on_start)(struct vv_sqlite_job *job);
    struct vv_sqlite *owner;
    struct vv_sqlite_job *next;
    uv_work_t req;
};

enum vv_sqlite_sync {
    VV_SQLITE_SYNC_NORMAL, /* WAL + synchronous=NORMAL: survives a process crash, not power loss */
    VV_SQLITE_SYNC_FULL,   /* WAL + synchronous=FULL: survives power loss too */
};

/*
 * Opens path (created if missing) with WAL, a busy timeout and foreign keys on, then runs
 * schema (may be NULL) as one transaction, all on the pool. cb fires on the loop with 0 or
 * an error; *out is valid from the call on (jobs submitted before the open completes wait).
 */
int vv_sqlite_open(uv_loop_t *loop, const char *path, enum vv_sqlite_sync sync,
                   const char *const *migrations,
                   void (*cb)(struct vv_sqlite *s, int status, const char *msg, void *arg),
                   void *arg, struct vv_sqlite **out);

/* Queues a job. Returns 0, or VV_ECLOSED after vv_sqlite_close. */
int vv_sqlite_submit(struct vv_sqlite *s, struct vv_sqlite_job *job, vv_sqlite_work_fn work,
                     vv_sqlite_done_fn done);

/* Jobs queued but not started finish with UV_ECANCELED; the one running completes; then the
 * connection closes on the pool and the handle frees itself, after which cb (may be NULL)
 * fires. */
void vv_sqlite_close(struct vv_sqlite *s, void (*cb)(void *arg), void *arg);
/* The same, but every job already submitted runs (or fails, after a failed open) before the
 * connection closes: for writes that were promised to be kept. */
void vv_sqlite_close_after_pending(struct vv_sqlite *s, void (*cb)(void *arg), void *arg);

/* Jobs waiting or running. */
unsigned vv_sqlite_pending(const struct vv_sqlite *s);

/* The user_version the migrations brought the database to. */
int vv_sqlite_schema_version(const struct vv_sqlite *s);

#endif
