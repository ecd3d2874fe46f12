/*
 * Per-user SQLite databases behind a bounded LRU cache of open handles. See userdb.h.
 *
 * Ownership: the manager owns every handle; a handle owns its vv_sqlite; a request is owned
 * by the manager from submit until its callback returns. Handles in use (jobs queued or
 * running) are never evicted; when every handle is busy and the cache is full, requests
 * wait in a bounded queue and are served as handles free up.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "vivim/common.h"
#include "vivim/keyed_hash.h"
#include "vivim/log.h"
#include "vivim/registry.h"
#include "vivim/sqlite_worker.h"
#include "vivim/userdb.h"

#define HASH_BUCKETS VV_USERDB_HASH_BUCKETS

static const char *const migrations[] = {
    "CREATE TABLE content ("
    "  content_id TEXT PRIMARY KEY,"
    "  content BLOB NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  meta TEXT NOT NULL) WITHOUT ROWID;",
    NULL,
};

enum op { OP_PUT, OP_GET, OP_LIST };

struct handle {
    uint8_t key[32]; /* SHA-256 of the DID */
    struct vv_sqlite *db;
    unsigned active; /* requests submitted and not yet completed */
    bool closing;
    struct handle *hnext;               /* hash chain */
    struct handle *lru_prev, *lru_next; /* most recently used at the head */
    struct vv_userdb *u;
};

struct request {
    struct vv_sqlite_job job;
    struct vv_userdb *u;
    struct handle *h;
    enum op op;
    uint8_t key[32];
    char content_id[65];
    uint8_t *content;
    size_t len;
    char *meta;
    char *cursor;
    uint32_t limit;
    uint64_t now_ms;
    vv_userdb_cb cb;
    void *arg;
    struct request *wait_next;
    int status;
    json_t *result;
    char msg[160];
};

struct vv_userdb {
    uv_loop_t *loop;
    char *dir;
    bool full_sync;
    uint32_t max_open;
    uint32_t open_count; /* open or closing */
    uint32_t closing_count;
    struct handle *buckets[HASH_BUCKETS];
    struct handle *lru_head, *lru_tail;
    struct request *wait_head, *wait_tail;
    uint32_t waiting;
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* ---- cache bookkeeping ------------------------------------------------------------------ */

/* Keyed: the key is the SHA-256 of a DID an RPC client chose, and 4096 buckets are 12 bits
 * that a client grinds in a few thousand tries; with the digest's first bytes as the bucket,
 * its databases would all hang on one chain. */
static uint32_t bucket_of(const uint8_t key[32])
{
    return (uint32_t)(vv_keyed_hash64(key, 32) % HASH_BUCKETS);
}

uint32_t vv__userdb_bucket(const uint8_t key[32])
{
    return bucket_of(key);
}

static void lru_unlink(struct vv_userdb *u, struct handle *h)
{
    if (h->lru_prev)
        h->lru_prev->lru_next = h->lru_next;
    else
        u->lru_head = h->lru_next;
    if (h->lru_next)
        h->lru_next->lru_prev = h->lru_prev;
    else
        u->lru_tail = h->lru_prev;
    h->lru_prev = h->lru_next = NULL;
}

static void lru_push_front(struct vv_userdb *u, struct handle *h)
{
    h->lru_next = u->lru_head;
    h->lru_prev = NULL;
    if (u->lru_head)
        u->lru_head->lru_prev = h;
    u->lru_head = h;
    if (u->lru_tail == NULL)
        u->lru_tail = h;
}

static struct handle *lookup(struct vv_userdb *u, const uint8_t key[32])
{
    for (struct handle *h = u->buckets[bucket_of(key)]; h; h = h->hnext)
        if (!h->closing && memcmp(h->key, key, 32) == 0)
            return h;
    return NULL;
}

static void unhash(struct vv_userdb *u, struct handle *h)
{
    struct handle **pp = &u->buckets[bucket_of(h->key)];
    while (*pp && *pp != h)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = h->hnext;
}

static void drain_waiting(struct vv_userdb *u);

static void handle_closed(void *arg)
{
    struct handle *h = arg;
    struct vv_userdb *u = h->u;
    vv_free(h);
    u->open_count--;
    u->closing_count--;
    if (u->closing) {
        if (u->open_count == 0) {
            void (*cb)(void *) = u->close_cb;
            void *cb_arg = u->close_arg;
            vv_free(u->dir);
            vv_free(u);
            if (cb)
                cb(cb_arg);
        }
        return;
    }
    drain_waiting(u);
}

static void close_handle(struct vv_userdb *u, struct handle *h)
{
    h->closing = true;
    u->closing_count++;
    unhash(u, h);
    lru_unlink(u, h);
    vv_sqlite_close(h->db, handle_closed, h);
}

/* Closes the least recently used idle handle. Returns false when every handle is busy. */
static bool evict_one(struct vv_userdb *u)
{
    for (struct handle *h = u->lru_tail; h; h = h->lru_prev) {
        if (h->active == 0) {
            close_handle(u, h);
            return true;
        }
    }
    return false;
}

static void opened(struct vv_sqlite *s, int status, const char *msg, void *arg)
{
    (void)s;
    (void)arg;
    if (status != 0)
        vv_log_warn("userdb", "cannot open a user database: %s", msg ? msg : vv_strerror(status));
    /* Jobs queued behind the open complete with VV_EIO on failure; the handle is then idle
     * and will be evicted like any other. */
}

static struct handle *get_handle(struct vv_userdb *u, const uint8_t key[32])
{
    struct handle *h = lookup(u, key);
    if (h != NULL) {
        lru_unlink(u, h);
        lru_push_front(u, h);
        return h;
    }
    if (u->open_count >= u->max_open) {
        /* One eviction per waiting request at most: each frees one slot when it completes. */
        if (u->closing_count <= u->waiting)
            evict_one(u);
        return NULL;
    }
    h = vv_xcalloc(1, sizeof(*h));
    memcpy(h->key, key, 32);
    h->u = u;
    char path[4200];
    char hex[65];
    vv_hex_encode(key, 32, hex);
    snprintf(path, sizeof(path), "%s/%.2s/%s.db", u->dir, hex, hex);
    u->open_count++;
    vv_sqlite_open(u->loop, path, u->full_sync ? VV_SQLITE_SYNC_FULL : VV_SQLITE_SYNC_NORMAL,
                   migrations, opened, h, &h->db);
    uint32_t b = bucket_of(key);
    h->hnext = u->buckets[b];
    u->buckets[b] = h;
    lru_push_front(u, h);
    return h;
}

/* ---- jobs (pool thread) ---------------------------------------------------------------- */

static void fail(struct request *rq, sqlite3 *db, int status)
{
    rq->status = status;
    snprintf(rq->msg, sizeof(rq->msg), "%s", db ? sqlite3_errmsg(db) : vv_strerror(status));
}

static json_t *row_summary(sqlite3_stmt *st)
{
    return json_pack("{s:s, s:I, s:I}", "contentId", (const char *)sqlite3_column_text(st, 0),
                     "size", (json_int_t)sqlite3_column_int64(st, 1), "createdAt",
                     (json_int_t)sqlite3_column_int64(st, 2));
}

static void work(sqlite3 *db, struct vv_sqlite_job *job)
{
    struct request *rq = VV_CONTAINER_OF(job, struct request, job);
    sqlite3_stmt *st = NULL;
    if (rq->op == OP_PUT) {
        if (sqlite3_prepare_v2(db,
                               "INSERT INTO content (content_id, content, size, created_at, meta) "
                               "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (content_id) DO NOTHING",
                               -1, &st, NULL) != SQLITE_OK)
            return fail(rq, db, VV_EIO);
        sqlite3_bind_text(st, 1, rq->content_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, rq->content, (int)rq->len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)rq->len);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)rq->now_ms);
        sqlite3_bind_text(st, 5, rq->meta ? rq->meta : "{}", -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        int changed = sqlite3_changes(db);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return fail(rq, db, VV_EIO);
        uint64_t created = rq->now_ms;
        if (changed == 0) {
            /* Already stored: identical bytes make the put idempotent; others conflict. */
            if (sqlite3_prepare_v2(db,
                                   "SELECT content, created_at FROM content WHERE content_id = ?1",
                                   -1, &st, NULL) != SQLITE_OK)
                return fail(rq, db, VV_EIO);
            sqlite3_bind_text(st, 1, rq->content_id, -1, SQLITE_STATIC);
            bool same = false;
            if (sqlite3_step(st) == SQLITE_ROW) {
                same =
                    (size_t)sqlite3_column_bytes(st, 0) == rq->len &&
                    (rq->len == 0 || memcmp(sqlite3_column_blob(st, 0), rq->content, rq->len) == 0);
                created = (uint64_t)sqlite3_column_int64(st, 1);
            }
            sqlite3_finalize(st);
            if (!same) {
                rq->status = VV_EEXIST;
                snprintf(rq->msg, sizeof(rq->msg),
                         "different content is stored under this contentId");
                return;
            }
        }
        rq->result = json_pack("{s:s, s:I, s:I}", "contentId", rq->content_id, "size",
                               (json_int_t)rq->len, "createdAt", (json_int_t)created);
        return;
    }
    if (rq->op == OP_GET) {
        if (sqlite3_prepare_v2(db,
                               "SELECT content_id, size, created_at, content, meta FROM content "
                               "WHERE content_id = ?1",
                               -1, &st, NULL) != SQLITE_OK)
            return fail(rq, db, VV_EIO);
        sqlite3_bind_text(st, 1, rq->content_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            int n = sqlite3_column_bytes(st, 3);
            const uint8_t *blob = sqlite3_column_blob(st, 3);
            size_t b64len = sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_ORIGINAL);
            char *b64 = vv_xmalloc(b64len);
            sodium_bin2base64(b64, b64len, blob ? blob : (const uint8_t *)"", (size_t)n,
                              sodium_base64_VARIANT_ORIGINAL);
            json_t *meta = json_loads((const char *)sqlite3_column_text(st, 4), 0, NULL);
            rq->result = row_summary(st);
            json_object_set_new(rq->result, "content", json_string(b64));
            json_object_set_new(rq->result, "meta", meta ? meta : json_object());
            vv_free(b64);
        } else if (rc == SQLITE_DONE) {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no content with this contentId for this owner");
        } else {
            fail(rq, db, VV_EIO);
        }
        sqlite3_finalize(st);
        return;
    }
    /* OP_LIST */
    if (sqlite3_prepare_v2(db,
                           "SELECT content_id, size, created_at FROM content WHERE content_id > ?1 "
                           "ORDER BY content_id LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(rq, db, VV_EIO);
    sqlite3_bind_text(st, 1, rq->cursor ? rq->cursor : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, (int)rq->limit + 1);
    json_t *records = json_array(), *next = json_null();
    uint32_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == rq->limit) {
            json_decref(next);
            next = json_string(json_string_value(
                json_object_get(json_array_get(records, count - 1), "contentId")));
            break;
        }
        json_array_append_new(records, row_summary(st));
        count++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        json_decref(records);
        json_decref(next);
        return fail(rq, db, VV_EIO);
    }
    rq->result = json_pack("{s:o, s:o}", "records", records, "nextCursor", next);
}

/* ---- loop side ---------------------------------------------------------------------------- */

static void free_request(struct request *rq)
{
    json_decref(rq->result);
    vv_free(rq->content);
    vv_free(rq->meta);
    vv_free(rq->cursor);
    vv_free(rq);
}

static void done(struct vv_sqlite_job *job, int status)
{
    struct request *rq = VV_CONTAINER_OF(job, struct request, job);
    struct vv_userdb *u = rq->u;
    rq->h->active--;
    int st = status == UV_ECANCELED ? VV_ECLOSED : status != 0 ? status : rq->status;
    if (st != 0 && rq->msg[0] == '\0')
        vv_strlcpy(rq->msg, vv_strerror(st), sizeof(rq->msg));
    rq->cb(st, st == 0 ? rq->result : NULL, st == 0 ? NULL : rq->msg, rq->arg);
    free_request(rq);
    if (!u->closing && u->waiting > 0)
        drain_waiting(u);
}

static void dispatch(struct vv_userdb *u, struct request *rq, struct handle *h)
{
    rq->h = h;
    h->active++;
    vv_sqlite_submit(h->db, &rq->job, work, done);
}

/* Serves waiting requests in order while handles can be had. */
static void drain_waiting(struct vv_userdb *u)
{
    while (u->wait_head != NULL) {
        struct request *rq = u->wait_head;
        struct handle *h = get_handle(u, rq->key);
        if (h == NULL)
            return; /* an eviction (if any was possible) is under way; we come back then */
        u->wait_head = rq->wait_next;
        if (u->wait_head == NULL)
            u->wait_tail = NULL;
        u->waiting--;
        dispatch(u, rq, h);
    }
}

static int submit(struct vv_userdb *u, struct request *rq)
{
    if (u->closing) {
        free_request(rq);
        return VV_ECLOSED;
    }
    if (u->wait_head == NULL) {
        struct handle *h = get_handle(u, rq->key);
        if (h != NULL) {
            dispatch(u, rq, h);
            return 0;
        }
    }
    if (u->waiting >= VV_USERDB_MAX_WAITING) {
        free_request(rq);
        return VV_EBUSY;
    }
    rq->wait_next = NULL;
    if (u->wait_tail)
        u->wait_tail->wait_next = rq;
    else
        u->wait_head = rq;
    u->wait_tail = rq;
    u->waiting++;
    return 0;
}

static struct request *new_request(struct vv_userdb *u, enum op op, const char *did,
                                   vv_userdb_cb cb, void *arg)
{
    struct request *rq = vv_xcalloc(1, sizeof(*rq));
    rq->u = u;
    rq->op = op;
    rq->cb = cb;
    rq->arg = arg;
    crypto_hash_sha256(rq->key, (const uint8_t *)did, strlen(did));
    return rq;
}

int vv_userdb_put(struct vv_userdb *u, const char *owner_did, const char *content_id,
                  const uint8_t *content, size_t len, const json_t *meta, uint64_t now_ms,
                  vv_userdb_cb cb, void *arg)
{
    if (owner_did == NULL || !vv_did_valid(owner_did) || !vv_hex_is_sha256(content_id) ||
        len > VV_USERDB_MAX_CONTENT_BYTES || (meta != NULL && !json_is_object(meta)))
        return VV_EINVAL;
    struct request *rq = new_request(u, OP_PUT, owner_did, cb, arg);
    memcpy(rq->content_id, content_id, 65);
    rq->content = vv_xmalloc(len ? len : 1);
    if (len)
        memcpy(rq->content, content, len);
    rq->len = len;
    rq->now_ms = now_ms;
    if (meta != NULL) {
        char *m = json_dumps(meta, JSON_COMPACT);
        rq->meta = vv_xstrdup(m ? m : "{}");
        free(m);
    }
    return submit(u, rq);
}

int vv_userdb_get(struct vv_userdb *u, const char *owner_did, const char *content_id,
                  vv_userdb_cb cb, void *arg)
{
    if (owner_did == NULL || !vv_did_valid(owner_did) || !vv_hex_is_sha256(content_id))
        return VV_EINVAL;
    struct request *rq = new_request(u, OP_GET, owner_did, cb, arg);
    memcpy(rq->content_id, content_id, 65);
    return submit(u, rq);
}

int vv_userdb_fetch_for_distribution(struct vv_userdb *u, const char *content_id,
                                     const char *owner_did, vv_userdb_cb cb, void *arg)
{
    return vv_userdb_get(u, owner_did, content_id, cb, arg);
}

int vv_userdb_list(struct vv_userdb *u, const char *owner_did, const char *cursor, uint32_t limit,
                   vv_userdb_cb cb, void *arg)
{
    if (owner_did == NULL || !vv_did_valid(owner_did) ||
        (cursor != NULL && !vv_hex_is_sha256(cursor)))
        return VV_EINVAL;
    struct request *rq = new_request(u, OP_LIST, owner_did, cb, arg);
    rq->cursor = cursor ? vv_xstrdup(cursor) : NULL;
    rq->limit = limit == 0 ? VV_REGISTRY_DEFAULT_PAGE : VV_MIN(limit, VV_REGISTRY_MAX_PAGE);
    return submit(u, rq);
}

int vv_userdb_path(const struct vv_userdb *u, const char *owner_did, char *out, size_t len)
{
    if (owner_did == NULL) {
        snprintf(out, len, "%s", u->dir);
        return 0;
    }
    if (!vv_did_valid(owner_did))
        return VV_EINVAL;
    uint8_t key[32];
    char hex[65];
    crypto_hash_sha256(key, (const uint8_t *)owner_did, strlen(owner_did));
    vv_hex_encode(key, 32, hex);
    return (size_t)snprintf(out, len, "%s/%.2s/%s.db", u->dir, hex, hex) < len ? 0 : VV_EINVAL;
}

int vv_userdb_open(uv_loop_t *loop, const struct vv_userdb_config *cfg, struct vv_userdb **out)
{
    *out = NULL;
    if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    /* Shard directories are made once here, at start-up, so no request waits on mkdir. */
    for (int i = 0; i < 256; i++) {
        char p[4200];
        if ((size_t)snprintf(p, sizeof(p), "%s/%02x", cfg->dir, i) >= sizeof(p))
            return VV_EINVAL;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -errno;
    }
    struct vv_userdb *u = vv_xcalloc(1, sizeof(*u));
    u->loop = loop;
    u->dir = vv_xstrdup(cfg->dir);
    u->full_sync = cfg->full_sync;
    struct rlimit rl;
    uint64_t by_fds = 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur > VV_USERDB_FD_RESERVE + VV_USERDB_FDS_PER_DB)
        by_fds = (rl.rlim_cur - VV_USERDB_FD_RESERVE) / VV_USERDB_FDS_PER_DB;
    else if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == RLIM_INFINITY)
        by_fds = 100000;
    u->max_open = (uint32_t)(cfg->max_open ? VV_MIN((uint64_t)cfg->max_open, by_fds) : by_fds);
    if (u->max_open == 0)
        u->max_open = 1;
    *out = u;
    return 0;
}

void vv_userdb_close(struct vv_userdb *u, void (*cb)(void *arg), void *arg)
{
    if (u->closing)
        return;
    u->closing = true;
    u->close_cb = cb;
    u->close_arg = arg;
    while (u->wait_head) {
        struct request *rq = u->wait_head;
        u->wait_head = rq->wait_next;
        u->waiting--;
        rq->cb(VV_ECLOSED, NULL, vv_strerror(VV_ECLOSED), rq->arg);
        free_request(rq);
    }
    u->wait_tail = NULL;
    if (u->open_count == 0) {
        vv_free(u->dir);
        vv_free(u);
        if (cb)
            cb(arg);
        return;
    }
    /* Handles already closing finish on their own; close the rest. */
    while (u->lru_head)
        close_handle(u, u->lru_head);
}

uint32_t vv_userdb_open_count(const struct vv_userdb *u)
{
    return u->open_count;
}

uint32_t vv_userdb_max_open(const struct vv_userdb *u)
{
    return u->max_open;
}
