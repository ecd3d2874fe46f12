/*
 * The store on its directory: file and SQLite I/O, synchronous, for worker threads only (see
 * vivim/store.h). What it must never do: acknowledge a store before its index commit, or
 * return a byte it has not just verified against its hash.
 *
 * Layout: index.sqlite (WAL, synchronous=FULL: a commit survives power loss), chunks/ab/cd/
 * <64 hex> (one file per chunk that is not inline), tmp/ (files being written), quarantine/
 * (chunk files that failed verification, kept for an operator to look at).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/store.h"
#include "storage/store_internal.h"

#define LOG_MOD         "store"
#define BUSY_TIMEOUT_MS 5000

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS objects("
    " addr BLOB PRIMARY KEY,"
    " manifest INTEGER NOT NULL," /* 1: data holds the manifest of a multi-chunk blob */
    " size INTEGER NOT NULL, chunks INTEGER NOT NULL,"
    " tier INTEGER NOT NULL, pinned INTEGER NOT NULL, owner BLOB,"
    " expiry INTEGER NOT NULL, created INTEGER NOT NULL,"
    " last_access INTEGER NOT NULL, access_count INTEGER NOT NULL,"
    " data BLOB" /* inline blob, manifest, or NULL: one chunk in a file named by addr */
    ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS chunks("
    " hash BLOB PRIMARY KEY, size INTEGER NOT NULL,"
    " refs INTEGER NOT NULL,"             /* occurrences in objects' manifests */
    " missing INTEGER NOT NULL DEFAULT 0" /* quarantined or gone; a new store rewrites it */
    ") WITHOUT ROWID;";

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int err_errno(void)
{
    return errno ? -errno : VV_EIO;
}

/* ---- paths and files --------------------------------------------------------------------- */

static char *chunk_path(const struct vv_store *s, const uint8_t hash[32])
{
    char hex[65];
    vv_hex_encode(hash, 32, hex);
    return vv_xasprintf("%s/chunks/%.2s/%.2s/%s", s->dir, hex, hex + 2, hex);
}

static int mkdir_if_missing(const char *path, bool *created)
{
    if (mkdir(path, 0700) == 0) {
        if (created)
            *created = true;
        return 0;
    }
    return errno == EEXIST ? 0 : err_errno();
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_errno();
    int rc = fsync(fd) == 0 ? 0 : err_errno();
    close(fd);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return err_errno();
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Directories to fsync once per blob: a bit per chunks/ab/cd and per chunks/ab created. */
struct dirty_dirs {
    uint8_t leaf[65536 / 8];
    uint8_t created_leaf[65536 / 8];
    uint8_t created_mid[256 / 8];
    bool any_mid_created;
};

/*
 * Writes one chunk: tmp/ file, fdatasync, rename into chunks/ab/cd/. The directories are
 * fsync'd later, once for the whole blob (flush_dirs).
 */
static int write_chunk(struct vv_store *s, const uint8_t hash[32], const uint8_t *p, size_t n,
                       struct dirty_dirs *dd)
{
    char hex[65];
    vv_hex_encode(hash, 32, hex);
    char *tmp = vv_xasprintf("%s/tmp/%s.%" PRIu64, s->dir, hex, s->tmp_seq++);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = err_errno();
        goto out;
    }
    rc = write_all(fd, p, n);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = err_errno();
    close(fd);
    if (rc != 0) {
        unlink(tmp);
        goto out;
    }
    unsigned mid = hash[0], leaf = ((unsigned)hash[0] << 8) | hash[1];
    char *d1 = vv_xasprintf("%s/chunks/%.2s", s->dir, hex);
    char *d2 = vv_xasprintf("%s/chunks/%.2s/%.2s", s->dir, hex, hex + 2);
    bool c1 = false, c2 = false;
    rc = mkdir_if_missing(d1, &c1);
    if (rc == 0)
        rc = mkdir_if_missing(d2, &c2);
    if (c1) {
        dd->created_mid[mid / 8] |= (uint8_t)(1u << (mid % 8));
        dd->any_mid_created = true;
    }
    if (c2)
        dd->created_leaf[leaf / 8] |= (uint8_t)(1u << (leaf % 8));
    dd->leaf[leaf / 8] |= (uint8_t)(1u << (leaf % 8));
    if (rc == 0) {
        char *dst = vv_xasprintf("%s/%s", d2, hex);
        if (rename(tmp, dst) != 0)
            rc = err_errno();
        vv_free(dst);
    }
    if (rc != 0)
        unlink(tmp);
    vv_free(d1);
    vv_free(d2);
out:
    vv_free(tmp);
    return rc;
}

/* fsyncs every directory whose entries changed: the leaves renamed into, the mid-level
 * directories a new leaf was created in, chunks/ when a mid-level one was created. */
static int flush_dirs(struct vv_store *s, const struct dirty_dirs *dd)
{
    int rc = 0;
    for (unsigned i = 0; i < 65536 && rc == 0; i++) {
        if (!(dd->leaf[i / 8] & (1u << (i % 8))))
            continue;
        char *p = vv_xasprintf("%s/chunks/%02x/%02x", s->dir, i >> 8, i & 0xff);
        rc = fsync_dir(p);
        vv_free(p);
    }
    for (unsigned m = 0; m < 256 && rc == 0; m++) {
        bool need = false;
        for (unsigned l = 0; l < 256 && !need; l++) {
            unsigned i = (m << 8) | l;
            need = dd->created_leaf[i / 8] & (1u << (i % 8));
        }
        if (!need)
            continue;
        char *p = vv_xasprintf("%s/chunks/%02x", s->dir, m);
        rc = fsync_dir(p);
        vv_free(p);
    }
    if (rc == 0 && dd->any_mid_created) {
        char *p = vv_xasprintf("%s/chunks", s->dir);
        rc = fsync_dir(p);
        vv_free(p);
    }
    return rc;
}

/* ---- index ------------------------------------------------------------------------------- */

static int db_exec(struct vv_store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        vv_log_error(LOG_MOD, "%s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return VV_ESTORE_INDEX;
    }
    return 0;
}

static sqlite3_stmt *prep(struct vv_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        vv_log_error(LOG_MOD, "prepare %s: %s", sql, sqlite3_errmsg(s->db));
        return NULL;
    }
    return st;
}

/* Runs a statement that returns no rows. Finalizes it. */
static int step_done(struct vv_store *s, sqlite3_stmt *st)
{
    if (st == NULL)
        return VV_ESTORE_INDEX;
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        vv_log_error(LOG_MOD, "index: %s", sqlite3_errmsg(s->db));
        return VV_ESTORE_INDEX;
    }
    return 0;
}

static void flush_access_locked(struct vv_store *s)
{
    if (s->n_access == 0)
        return;
    bool own_txn = sqlite3_get_autocommit(s->db);
    if (own_txn && db_exec(s, "BEGIN IMMEDIATE") != 0)
        return;
    for (unsigned i = 0; i < s->n_access; i++) {
        sqlite3_stmt *st = prep(s, "UPDATE objects SET access_count = access_count + ?,"
                                   " last_access = max(last_access, ?) WHERE addr = ?");
        if (st == NULL)
            break;
        sqlite3_bind_int64(st, 1, s->access[i].count);
        sqlite3_bind_int64(st, 2, s->access[i].last_ms);
        sqlite3_bind_blob(st, 3, s->access[i].addr, 32, SQLITE_STATIC);
        step_done(s, st);
    }
    if (own_txn && db_exec(s, "COMMIT") != 0)
        db_exec(s, "ROLLBACK");
    s->n_access = 0;
}

static void note_access_locked(struct vv_store *s, const uint8_t addr[32])
{
    int64_t t = now_ms();
    for (unsigned i = 0; i < s->n_access; i++) {
        if (memcmp(s->access[i].addr, addr, 32) == 0) {
            s->access[i].count++;
            s->access[i].last_ms = t;
            return;
        }
    }
    if (s->n_access == VV_STORE_ACCESS_BATCH)
        flush_access_locked(s);
    struct vv__store_access *a = &s->access[s->n_access++];
    memcpy(a->addr, addr, 32);
    a->count = 1;
    a->last_ms = t;
}

/* ---- open and start-up cleanup ----------------------------------------------------------- */

static bool chunk_known(struct vv_store *s, const uint8_t hash[32])
{
    sqlite3_stmt *st = prep(s, "SELECT 1 FROM chunks WHERE hash = ?");
    if (st == NULL)
        return true; /* never delete on doubt */
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc != SQLITE_DONE;
}

static void remove_tmp(struct vv_store *s)
{
    char *p = vv_xasprintf("%s/tmp", s->dir);
    DIR *d = opendir(p);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            if (unlinkat(dirfd(d), e->d_name, 0) == 0)
                s->tmp_removed++;
        }
        closedir(d);
    }
    vv_free(p);
}

static bool is_hex2(const char *n)
{
    return strlen(n) == 2 && strspn(n, "0123456789abcdef") == 2;
}

/* Removes chunk files no index row names: a store that crashed before its commit. */
static void remove_orphans(struct vv_store *s)
{
    char *root = vv_xasprintf("%s/chunks", s->dir);
    DIR *d1 = opendir(root);
    struct dirent *e1, *e2, *e3;
    while (d1 != NULL && (e1 = readdir(d1)) != NULL) {
        if (!is_hex2(e1->d_name))
            continue;
        char *p1 = vv_xasprintf("%s/%s", root, e1->d_name);
        DIR *d2 = opendir(p1);
        while (d2 != NULL && (e2 = readdir(d2)) != NULL) {
            if (!is_hex2(e2->d_name))
                continue;
            char *p2 = vv_xasprintf("%s/%s", p1, e2->d_name);
            DIR *d3 = opendir(p2);
            while (d3 != NULL && (e3 = readdir(d3)) != NULL) {
                if (e3->d_name[0] == '.' && (e3->d_name[1] == 0 || strcmp(e3->d_name, "..") == 0))
                    continue;
                uint8_t h[32];
                bool named = vv_hex_is_sha256(e3->d_name) && vv_hex_decode(e3->d_name, h, 32) == 0;
                if (named && chunk_known(s, h))
                    continue;
                if (unlinkat(dirfd(d3), e3->d_name, 0) == 0)
                    s->orphans_removed++;
            }
            if (d3 != NULL)
                closedir(d3);
            vv_free(p2);
        }
        if (d2 != NULL)
            closedir(d2);
        vv_free(p1);
    }
    if (d1 != NULL)
        closedir(d1);
    vv_free(root);
}

static int load_totals(struct vv_store *s)
{
    sqlite3_stmt *st = prep(s, "SELECT (SELECT count(*) FROM objects),"
                               " (SELECT coalesce(sum(length(data)), 0) FROM objects),"
                               " (SELECT coalesce(sum(size), 0) FROM chunks)");
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return VV_ESTORE_INDEX;
    }
    s->objects = (uint64_t)sqlite3_column_int64(st, 0);
    s->used_bytes = (uint64_t)sqlite3_column_int64(st, 1) + (uint64_t)sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    return 0;
}

static void on_cache_evict(const uint8_t key[32], uint64_t size, void *arg);
static void delete_victims_locked(struct vv_store *s);
static bool evictable(int tier, bool pinned, bool has_owner);

/* Per-tier totals, and the hot and warm eviction queues rebuilt from the index in the order
 * objects were last read. A capacity lowered since the last run evicts here. */
static int load_tiers(struct vv_store *s)
{
    sqlite3_stmt *st = prep(s, "SELECT tier, count(*), coalesce(sum(size), 0) FROM objects"
                               " GROUP BY tier");
    if (st == NULL)
        return VV_ESTORE_INDEX;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int t = sqlite3_column_int(st, 0);
        if (t < 0 || t >= VV_STORE_TIERS)
            continue;
        s->tier_objects[t] = (uint64_t)sqlite3_column_int64(st, 1);
        s->tier_bytes[t] = (uint64_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    for (int t = 0; t < 2; t++) {
        uint64_t cap = s->tier_capacity[t] ? s->tier_capacity[t] : s->capacity_bytes;
        if (cap)
            s->cache[t] = vv_s3fifo_new(cap, on_cache_evict, s);
    }
    if (s->cache[0] == NULL && s->cache[1] == NULL)
        return 0;
    st = prep(s, "SELECT addr, tier, pinned, coalesce(length(owner) = 32, 0), size FROM objects"
                 " WHERE tier < 2 ORDER BY last_access, created");
    if (st == NULL)
        return VV_ESTORE_INDEX;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int t = sqlite3_column_int(st, 1);
        if (sqlite3_column_bytes(st, 0) != 32 || t < 0 || t >= 2 || s->cache[t] == NULL)
            continue;
        const uint8_t *a = sqlite3_column_blob(st, 0);
        uint64_t size = (uint64_t)sqlite3_column_int64(st, 4);
        if (evictable(t, sqlite3_column_int(st, 2) != 0, sqlite3_column_int(st, 3) != 0))
            vv_s3fifo_insert(s->cache[t], a, size);
        else
            vv_s3fifo_pin(s->cache[t], a, size);
    }
    sqlite3_finalize(st);
    delete_victims_locked(s); /* after the scan: no delete while it reads */
    while (s->capacity_bytes && s->used_bytes > s->capacity_bytes &&
           ((s->cache[0] && vv_s3fifo_evict_one(s->cache[0])) ||
            (s->cache[1] && vv_s3fifo_evict_one(s->cache[1]))))
        delete_victims_locked(s);
    return 0;
}

int vv_store_open(const struct vv_store_config *cfg, struct vv_store **out)
{
    *out = NULL;
    if (cfg == NULL || cfg->dir == NULL || cfg->dir[0] == 0)
        return VV_EINVAL;
    struct vv_store *s = vv_xcalloc(1, sizeof(*s));
    s->dir = vv_xstrdup(cfg->dir);
    s->capacity_bytes = cfg->capacity_bytes;
    for (int t = 0; t < VV_STORE_TIERS; t++)
        s->tier_capacity[t] = cfg->tier_capacity[t];
    s->hot_retention_ms = cfg->hot_retention_ms;
    s->removed = vv_xcalloc(VV_STORE_REMOVED_MAX, sizeof(*s->removed));
    s->max_pending = cfg->max_pending ? cfg->max_pending : VV_STORE_DEFAULT_MAX_PENDING;
    pthread_mutex_init(&s->lock, NULL);
    int rc = mkdir_if_missing(s->dir, NULL);
    const char *subs[] = {"chunks", "tmp", "quarantine"};
    for (size_t i = 0; rc == 0 && i < VV_ARRAY_SIZE(subs); i++) {
        char *p = vv_xasprintf("%s/%s", s->dir, subs[i]);
        rc = mkdir_if_missing(p, NULL);
        vv_free(p);
    }
    if (rc != 0) {
        vv_log_error(LOG_MOD, "cannot create %s: %s", s->dir, vv_strerror(rc));
        goto fail;
    }
    char *dbp = vv_xasprintf("%s/index.sqlite", s->dir);
    if (sqlite3_open_v2(dbp, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        vv_log_error(LOG_MOD, "cannot open %s: %s", dbp, s->db ? sqlite3_errmsg(s->db) : "?");
        vv_free(dbp);
        rc = VV_ESTORE_INDEX;
        goto fail;
    }
    vv_free(dbp);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    rc = db_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
    if (rc == 0)
        rc = db_exec(s, schema);
    if (rc == 0)
        rc = load_totals(s);
    if (rc == 0)
        rc = load_tiers(s);
    if (rc != 0)
        goto fail;
    remove_tmp(s);
    remove_orphans(s);
    if (s->evictions)
        vv_log_notice(LOG_MOD, "start-up: evicted %" PRIu64 " objects over the capacity",
                      s->evictions);
    if (s->tmp_removed || s->orphans_removed)
        vv_log_notice(LOG_MOD,
                      "start-up: removed %" PRIu64 " temporary and %" PRIu64
                      " unreferenced chunk files",
                      s->tmp_removed, s->orphans_removed);
    *out = s;
    return 0;
fail:
    vv_store_close(s);
    return rc;
}

void vv_store_close(struct vv_store *s)
{
    if (s == NULL)
        return;
    if (s->db != NULL) {
        flush_access_locked(s);
        sqlite3_close(s->db);
    }
    pthread_mutex_destroy(&s->lock);
    for (int t = 0; t < 2; t++)
        vv_s3fifo_free(s->cache[t]);
    vv_free(s->victims);
    vv_free(s->removed);
    vv_free(s->dir);
    vv_free(s);
}

void vv_store_counters(struct vv_store *s, struct vv_store_counters *out)
{
    pthread_mutex_lock(&s->lock);
    *out = (struct vv_store_counters){
        .objects = s->objects,
        .used_bytes = s->used_bytes,
        .verify_failures = s->verify_failures,
        .quarantined = s->quarantined,
        .startup_tmp_removed = s->tmp_removed,
        .startup_orphans_removed = s->orphans_removed,
        .evictions = s->evictions,
        .expired = s->expired,
        .reads_hit = s->reads_hit,
        .reads_miss = s->reads_miss,
        .removed_pending = s->removed_n,
        .removed_dropped = s->removed_dropped,
    };
    for (int t = 0; t < VV_STORE_TIERS; t++) {
        out->tier_bytes[t] = s->tier_bytes[t];
        out->tier_objects[t] = s->tier_objects[t];
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- put --------------------------------------------------------------------------------- */

static void enqueue_locked(struct vv_store *s, const uint8_t addr[32], int tier, bool pinned,
                           bool has_owner, uint64_t size);
static int set_pinned_locked(struct vv_store *s, const uint8_t addr[32], bool pinned);

/* -1: no row; 0: present; 1: present but missing (must be rewritten). */
static int chunk_state(struct vv_store *s, const uint8_t hash[32])
{
    sqlite3_stmt *st = prep(s, "SELECT missing FROM chunks WHERE hash = ?");
    if (st == NULL)
        return -1;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_ROW ? (sqlite3_column_int(st, 0) != 0) : -1;
    sqlite3_finalize(st);
    return r;
}

static bool object_exists(struct vv_store *s, const uint8_t addr[32])
{
    sqlite3_stmt *st = prep(s, "SELECT 1 FROM objects WHERE addr = ?");
    if (st == NULL)
        return false;
    sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
    bool r = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return r;
}

/* A chunk of the blob being stored. */
struct piece {
    const uint8_t *hash;
    const uint8_t *data;
    size_t len;
    int state; /* chunk_state before the store */
};

/* Reads the pieces' chunk states and returns the bytes the store takes: base (the index's
 * copy) plus each chunk not stored yet, once. */
static uint64_t pieces_new_bytes(struct vv_store *s, struct piece *pc, uint32_t np, bool multi,
                                 uint64_t base)
{
    uint64_t new_bytes = base;
    for (uint32_t i = 0; i < np; i++) {
        pc[i].state = chunk_state(s, pc[i].hash);
        /* The same chunk twice in one blob: only its first occurrence is new. */
        bool dup = false;
        for (uint32_t j = 0; multi && j < i && !dup && pc[i].state < 0; j++)
            dup = memcmp(pc[j].hash, pc[i].hash, 32) == 0;
        if (pc[i].state < 0 && !dup)
            new_bytes += pc[i].len;
        if (dup)
            pc[i].state = 2; /* written with its first occurrence */
    }
    return new_bytes;
}

/*
 * Makes room for a new object of size bytes in tier, taking *new_bytes on disk: evicts cache
 * content (S3-FIFO order) until it fits the tier's bound and the store's capacity, or fails
 * with VV_ESTORE_FULL. An eviction can free chunks the new blob shares, so *new_bytes is
 * recounted after each round.
 */
static int make_room_locked(struct vv_store *s, int tier, uint64_t size, struct piece *pc,
                            uint32_t np, bool multi, uint64_t base, uint64_t *new_bytes)
{
    if (s->tier_capacity[tier] && s->tier_bytes[tier] + size > s->tier_capacity[tier]) {
        if (tier < 2 && s->cache[tier]) {
            vv_s3fifo_reserve(s->cache[tier], size);
            delete_victims_locked(s);
            *new_bytes = pieces_new_bytes(s, pc, np, multi, base);
        }
        if (s->tier_bytes[tier] + size > s->tier_capacity[tier])
            return VV_ESTORE_FULL;
    }
    while (s->capacity_bytes && s->used_bytes + *new_bytes > s->capacity_bytes) {
        bool evicted = false;
        while (s->used_bytes + *new_bytes > s->capacity_bytes &&
               ((s->cache[0] && vv_s3fifo_evict_one(s->cache[0])) ||
                (s->cache[1] && vv_s3fifo_evict_one(s->cache[1])))) {
            delete_victims_locked(s);
            evicted = true;
        }
        if (!evicted)
            return VV_ESTORE_FULL;
        *new_bytes = pieces_new_bytes(s, pc, np, multi, base);
    }
    return 0;
}

static int put_locked(struct vv_store *s, const uint8_t *data, size_t len,
                      const struct vv_store_put_opts *opts, uint8_t addr[32])
{
    if ((uint64_t)len > VV_STORE_MAX_BLOB_BYTES)
        return VV_ESTORE_TOO_LARGE;
    struct vv_store_manifest probe;
    uint8_t *man = NULL;
    size_t man_len = 0;
    uint32_t n = 1;
    if (len <= VV_STORE_CHUNK_BYTES) {
        if (vv_store_manifest_decode(data, len, &probe) == 0)
            return VV_ESTORE_AMBIGUOUS;
        crypto_hash_sha256(addr, data, len);
    } else {
        man_len = vv_store_manifest_len(len);
        man = vv_xmalloc(man_len);
        vv__store_manifest_build(data, len, man);
        crypto_hash_sha256(addr, man, man_len);
        n = vv__store_chunk_count(len);
    }
    bool inline_blob = man == NULL && len <= VV_STORE_INLINE_MAX_BYTES;
    bool exists = object_exists(s, addr);

    /* Which chunks need a file, and how many new bytes the store takes. */
    uint32_t np = inline_blob ? 0 : n;
    struct piece *pc = np ? vv_xcalloc(np, sizeof(*pc)) : NULL;
    for (uint32_t i = 0; i < np; i++) {
        size_t off = (size_t)i * VV_STORE_CHUNK_BYTES;
        pc[i].hash = man ? man + VV_STORE_MANIFEST_HEADER_BYTES + (size_t)i * 32 : addr;
        pc[i].data = data + off;
        pc[i].len = VV_MIN((size_t)VV_STORE_CHUNK_BYTES, len - off);
    }
    uint64_t new_bytes =
        pieces_new_bytes(s, pc, np, man != NULL, exists ? 0 : (inline_blob ? len : man_len));
    int rc = 0;
    int tier = opts ? (int)opts->tier : VV_STORE_TIER_HOT;
    bool pinned = opts && opts->pinned, owned = opts && opts->owner;
    if (tier < 0 || tier >= VV_STORE_TIERS) {
        rc = VV_EINVAL;
        goto out;
    }
    if (!exists) {
        rc = make_room_locked(s, tier, len, pc, np, man != NULL, inline_blob ? len : man_len,
                              &new_bytes);
        if (rc != 0)
            goto out;
    }

    /* 1. chunk files, each fdatasync'd and renamed; 2. their directories, once. */
    struct dirty_dirs *dd = vv_xcalloc(1, sizeof(*dd));
    bool wrote = false;
    for (uint32_t i = 0; i < np && rc == 0; i++) {
        if (pc[i].state == -1 || pc[i].state == 1) {
            rc = write_chunk(s, pc[i].hash, pc[i].data, pc[i].len, dd);
            wrote = true;
        }
    }
    if (rc == 0 && wrote)
        rc = flush_dirs(s, dd);
    vv_free(dd);
    if (rc != 0) {
        vv_log_error(LOG_MOD, "writing a chunk: %s", vv_strerror(rc));
        goto out; /* files written so far are orphans: removed at the next start */
    }

    /* 3. the index commit: the blob exists from here on. */
    rc = db_exec(s, "BEGIN IMMEDIATE");
    if (rc != 0)
        goto out;
    flush_access_locked(s);
    int64_t t = now_ms();
    if (!exists) {
        sqlite3_stmt *st = prep(s, "INSERT INTO objects(addr, manifest, size, chunks, tier,"
                                   " pinned, owner, expiry, created, last_access, access_count,"
                                   " data) VALUES(?,?,?,?,?,?,?,?,?,?,0,?)");
        if (st != NULL) {
            sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
            sqlite3_bind_int(st, 2, man != NULL);
            sqlite3_bind_int64(st, 3, (sqlite3_int64)len);
            sqlite3_bind_int64(st, 4, n);
            sqlite3_bind_int(st, 5, opts ? (int)opts->tier : 0);
            sqlite3_bind_int(st, 6, opts && opts->pinned);
            if (opts && opts->owner)
                sqlite3_bind_blob(st, 7, opts->owner, 32, SQLITE_STATIC);
            sqlite3_bind_int64(st, 8, opts ? opts->expiry_ms : 0);
            sqlite3_bind_int64(st, 9, t);
            sqlite3_bind_int64(st, 10, t);
            if (man)
                sqlite3_bind_blob(st, 11, man, (int)man_len, SQLITE_STATIC);
            else if (inline_blob)
                sqlite3_bind_blob(st, 11, len ? (const void *)data : "", (int)len, SQLITE_STATIC);
        }
        rc = step_done(s, st);
    } else if (opts && opts->pinned) {
        sqlite3_stmt *st = prep(s, "UPDATE objects SET pinned = 1 WHERE addr = ?");
        if (st)
            sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
        rc = step_done(s, st);
    }
    for (uint32_t i = 0; i < np && rc == 0; i++) {
        sqlite3_stmt *st;
        if (!exists) {
            st = prep(s, "INSERT INTO chunks(hash, size, refs, missing) VALUES(?,?,1,0)"
                         " ON CONFLICT(hash) DO UPDATE SET refs = refs + 1, missing = 0");
            if (st) {
                sqlite3_bind_blob(st, 1, pc[i].hash, 32, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)pc[i].len);
            }
        } else if (pc[i].state == 1) {
            st = prep(s, "UPDATE chunks SET missing = 0 WHERE hash = ?");
            if (st)
                sqlite3_bind_blob(st, 1, pc[i].hash, 32, SQLITE_STATIC);
        } else {
            continue;
        }
        rc = step_done(s, st);
    }
    if (rc == 0)
        rc = db_exec(s, "COMMIT");
    if (rc != 0) {
        db_exec(s, "ROLLBACK");
        goto out;
    }
    s->used_bytes += new_bytes;
    if (!exists) {
        s->objects++;
        s->tier_bytes[tier] += len;
        s->tier_objects[tier]++;
        enqueue_locked(s, addr, tier, pinned, owned, len);
    } else if (pinned) {
        set_pinned_locked(s, addr, true);
    }
out:
    vv_free(pc);
    vv_free(man);
    return rc;
}

int vv_store_put(struct vv_store *s, const uint8_t *data, size_t len,
                 const struct vv_store_put_opts *opts, uint8_t addr[VV_STORE_ADDR_BYTES])
{
    if (data == NULL && len > 0)
        return VV_EINVAL;
    pthread_mutex_lock(&s->lock);
    int rc = put_locked(s, data ? data : (const uint8_t *)"", len, opts, addr);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- reads ------------------------------------------------------------------------------- */

static void mark_missing(struct vv_store *s, const uint8_t hash[32])
{
    sqlite3_stmt *st = prep(s, "UPDATE chunks SET missing = 1 WHERE hash = ?");
    if (st)
        sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    step_done(s, st);
}

/* Moves a chunk file that failed its hash to quarantine/, marks it missing, counts it. */
static void quarantine(struct vv_store *s, const uint8_t hash[32], const char *path)
{
    char hex[65];
    vv_hex_encode(hash, 32, hex);
    char *dst = vv_xasprintf("%s/quarantine/%s", s->dir, hex);
    s->verify_failures++;
    if (rename(path, dst) == 0)
        s->quarantined++;
    else
        unlink(path); /* never leave it where a read would find it */
    mark_missing(s, hash);
    vv_log_error(LOG_MOD, "chunk %s failed verification: quarantined", hex);
    vv_free(dst);
}

/* Reads chunk hash (expected len bytes) into dst and verifies it. */
static int read_chunk(struct vv_store *s, const uint8_t hash[32], uint8_t *dst, size_t len)
{
    char *path = chunk_path(s, hash);
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? VV_ESTORE_MISSING : err_errno();
        if (rc == VV_ESTORE_MISSING)
            mark_missing(s, hash);
        goto out;
    }
    size_t got = 0;
    uint8_t extra;
    while (got < len) {
        ssize_t r = read(fd, dst + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    bool longer = got == len && read(fd, &extra, 1) > 0;
    close(fd);
    uint8_t h[32];
    if (got == len)
        crypto_hash_sha256(h, dst, len);
    if (got != len || longer || sodium_memcmp(h, hash, 32) != 0) {
        memset(dst, 0, len);
        quarantine(s, hash, path);
        rc = VV_ESTORE_CORRUPT;
    }
out:
    vv_free(path);
    return rc;
}

struct obj {
    bool manifest;
    uint64_t size;
    uint8_t *data; /* inline blob or manifest, or NULL */
    size_t data_len;
};

static int load_obj(struct vv_store *s, const uint8_t addr[32], struct obj *o)
{
    memset(o, 0, sizeof(*o));
    sqlite3_stmt *st = prep(s, "SELECT manifest, size, data FROM objects WHERE addr = ?");
    if (st == NULL)
        return VV_ESTORE_INDEX;
    sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        return r == SQLITE_DONE ? VV_ENOTFOUND : VV_ESTORE_INDEX;
    }
    o->manifest = sqlite3_column_int(st, 0) != 0;
    o->size = (uint64_t)sqlite3_column_int64(st, 1);
    if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
        const void *b = sqlite3_column_blob(st, 2);
        o->data_len = (size_t)sqlite3_column_bytes(st, 2);
        o->data = vv_xmalloc(o->data_len ? o->data_len : 1);
        if (o->data_len)
            memcpy(o->data, b, o->data_len);
    }
    sqlite3_finalize(st);
    /* What the index holds is verified like a chunk file: the address is its hash. */
    if (o->data) {
        uint8_t h[32];
        crypto_hash_sha256(h, o->data, o->data_len);
        if (sodium_memcmp(h, addr, 32) != 0) {
            char hex[65];
            vv_hex_encode(addr, 32, hex);
            s->verify_failures++;
            vv_log_error(LOG_MOD, "index copy of %s failed verification", hex);
            vv_free(o->data);
            o->data = NULL;
            return VV_ESTORE_CORRUPT;
        }
    }
    return 0;
}

static int get_locked(struct vv_store *s, const uint8_t addr[32], bool raw, bool count,
                      uint8_t **out, size_t *out_len)
{
    struct obj o;
    int rc = load_obj(s, addr, &o);
    if (rc == VV_ENOTFOUND && raw) {
        /* A chunk of a stored blob, asked for by its hash. */
        sqlite3_stmt *st = prep(s, "SELECT size FROM chunks WHERE hash = ? AND missing = 0");
        if (st == NULL)
            return VV_ESTORE_INDEX;
        sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW) {
            sqlite3_finalize(st);
            return VV_ENOTFOUND;
        }
        size_t len = (size_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        uint8_t *buf = vv_xmalloc(len ? len : 1);
        rc = read_chunk(s, addr, buf, len);
        if (rc != 0) {
            vv_free(buf);
            return rc;
        }
        *out = buf;
        *out_len = len;
        return 0;
    }
    if (rc != 0)
        return rc;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (o.data && (!o.manifest || raw)) {
        buf = o.data; /* inline blob, or the manifest itself */
        len = o.data_len;
        o.data = NULL;
    } else if (!o.manifest) {
        len = (size_t)o.size;
        buf = vv_xmalloc(len);
        rc = read_chunk(s, addr, buf, len);
    } else {
        struct vv_store_manifest m;
        rc = o.data ? vv_store_manifest_decode(o.data, o.data_len, &m) : VV_ESTORE_CORRUPT;
        if (rc == 0 && m.size != o.size)
            rc = VV_ESTORE_CORRUPT;
        if (rc == 0) {
            len = (size_t)m.size;
            buf = vv_xmalloc(len);
            for (uint32_t i = 0; i < m.chunks && rc == 0; i++) {
                size_t off = (size_t)i * VV_STORE_CHUNK_BYTES;
                rc = read_chunk(s, m.chunk_hashes + (size_t)i * 32, buf + off,
                                VV_MIN((size_t)VV_STORE_CHUNK_BYTES, len - off));
            }
        }
    }
    vv_free(o.data);
    if (rc != 0) {
        vv_free(buf);
        return rc;
    }
    if (count)
        note_access_locked(s, addr);
    *out = buf;
    *out_len = len;
    return 0;
}

int vv_store_get(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES], uint8_t **out,
                 size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    pthread_mutex_lock(&s->lock);
    int rc = get_locked(s, addr, false, true, out, out_len);
    if (rc == 0) {
        s->reads_hit++;
        for (int t = 0; t < 2; t++)
            if (s->cache[t] && vv_s3fifo_contains(s->cache[t], addr))
                vv_s3fifo_get(s->cache[t], addr);
    } else if (rc == VV_ENOTFOUND) {
        s->reads_miss++;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int vv_store_get_raw(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES], uint8_t **out,
                     size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    pthread_mutex_lock(&s->lock);
    int rc = get_locked(s, addr, true, false, out, out_len);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int vv_store_stat(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES],
                  struct vv_store_stat *out)
{
    pthread_mutex_lock(&s->lock);
    flush_access_locked(s);
    sqlite3_stmt *st = prep(s, "SELECT size, chunks, manifest, tier, pinned, owner, expiry,"
                               " created, last_access, access_count FROM objects WHERE addr = ?");
    int rc = VV_ESTORE_INDEX;
    if (st != NULL) {
        sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
        int r = sqlite3_step(st);
        rc = r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? VV_ENOTFOUND : VV_ESTORE_INDEX;
        if (rc == 0) {
            memset(out, 0, sizeof(*out));
            out->size = (uint64_t)sqlite3_column_int64(st, 0);
            out->chunks = (uint32_t)sqlite3_column_int64(st, 1);
            out->manifest = sqlite3_column_int(st, 2) != 0;
            out->tier = (enum vv_store_tier)sqlite3_column_int(st, 3);
            out->pinned = sqlite3_column_int(st, 4) != 0;
            if (sqlite3_column_bytes(st, 5) == 32) {
                out->has_owner = true;
                memcpy(out->owner, sqlite3_column_blob(st, 5), 32);
            }
            out->expiry_ms = sqlite3_column_int64(st, 6);
            out->created_ms = sqlite3_column_int64(st, 7);
            out->last_access_ms = sqlite3_column_int64(st, 8);
            out->access_count = (uint64_t)sqlite3_column_int64(st, 9);
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- delete and check -------------------------------------------------------------------- */

/* Drops one reference to a chunk; when none is left, deletes its row and adds its hash to
 * *gone (files are unlinked after the commit: a crash in between leaves an orphan). */
static int unref_chunk(struct vv_store *s, const uint8_t hash[32], uint8_t **gone, size_t *ngone,
                       uint64_t *freed)
{
    sqlite3_stmt *st = prep(s, "UPDATE chunks SET refs = refs - 1 WHERE hash = ?"
                               " RETURNING refs, size");
    if (st == NULL)
        return VV_ESTORE_INDEX;
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int r = sqlite3_step(st);
    int64_t refs = r == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 1;
    uint64_t size = r == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 1) : 0;
    sqlite3_finalize(st);
    if (r != SQLITE_ROW)
        return 0;
    if (refs > 0)
        return 0;
    st = prep(s, "DELETE FROM chunks WHERE hash = ?");
    if (st)
        sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int rc = step_done(s, st);
    if (rc == 0) {
        *gone = vv_xrealloc(*gone, (*ngone + 1) * 32);
        memcpy(*gone + *ngone * 32, hash, 32);
        (*ngone)++;
        *freed += size;
    }
    return rc;
}

enum removal { REMOVE_ASKED, REMOVE_EVICTED, REMOVE_EXPIRED };

static void note_removed_locked(struct vv_store *s, const uint8_t addr[32])
{
    if (s->removed_n == VV_STORE_REMOVED_MAX) {
        s->removed_head = (s->removed_head + 1) % VV_STORE_REMOVED_MAX;
        s->removed_n--;
        s->removed_dropped++;
    }
    memcpy(s->removed[(s->removed_head + s->removed_n) % VV_STORE_REMOVED_MAX], addr, 32);
    s->removed_n++;
}

/* Deletes one object under the lock. An object the eviction queue gave up is already out of
 * it; any other removal takes it out. */
static int delete_locked(struct vv_store *s, const uint8_t addr[32], enum removal why)
{
    uint8_t *gone = NULL;
    size_t ngone = 0;
    uint64_t freed = 0;
    sqlite3_stmt *st = NULL;
    int rc = db_exec(s, "BEGIN IMMEDIATE");
    if (rc != 0)
        goto out;
    flush_access_locked(s);
    st = prep(s, "SELECT manifest, size, data, tier FROM objects WHERE addr = ?");
    if (st == NULL) {
        rc = VV_ESTORE_INDEX;
        goto rollback;
    }
    sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = VV_ENOTFOUND;
        goto rollback;
    }
    bool manifest = sqlite3_column_int(st, 0) != 0;
    uint64_t size = (uint64_t)sqlite3_column_int64(st, 1);
    size_t dlen = (size_t)sqlite3_column_bytes(st, 2);
    bool has_data = sqlite3_column_type(st, 2) != SQLITE_NULL;
    int tier = sqlite3_column_int(st, 3);
    freed += has_data ? dlen : 0;
    if (manifest) {
        struct vv_store_manifest m;
        uint8_t *copy = vv_xmalloc(dlen ? dlen : 1);
        memcpy(copy, sqlite3_column_blob(st, 2), dlen);
        if (vv_store_manifest_decode(copy, dlen, &m) == 0)
            for (uint32_t i = 0; i < m.chunks && rc == 0; i++)
                rc = unref_chunk(s, m.chunk_hashes + (size_t)i * 32, &gone, &ngone, &freed);
        vv_free(copy);
    } else if (!has_data) {
        rc = unref_chunk(s, addr, &gone, &ngone, &freed);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != 0)
        goto rollback;
    st = prep(s, "DELETE FROM objects WHERE addr = ?");
    if (st)
        sqlite3_bind_blob(st, 1, addr, 32, SQLITE_STATIC);
    rc = step_done(s, st);
    st = NULL;
    if (rc == 0)
        rc = db_exec(s, "COMMIT");
    if (rc != 0)
        goto rollback;
    s->objects--;
    s->used_bytes -= VV_MIN(freed, s->used_bytes);
    if (tier >= 0 && tier < VV_STORE_TIERS) {
        s->tier_bytes[tier] -= VV_MIN(size, s->tier_bytes[tier]);
        s->tier_objects[tier] -= VV_MIN(1u, s->tier_objects[tier]);
        if (why != REMOVE_EVICTED && tier < 2 && s->cache[tier])
            vv_s3fifo_remove(s->cache[tier], addr);
    }
    if (why == REMOVE_EVICTED)
        s->evictions++;
    else if (why == REMOVE_EXPIRED)
        s->expired++;
    if (why != REMOVE_ASKED)
        note_removed_locked(s, addr);
    for (size_t i = 0; i < ngone; i++) {
        char *p = chunk_path(s, gone + i * 32);
        unlink(p);
        vv_free(p);
    }
    goto out;
rollback:
    sqlite3_finalize(st);
    db_exec(s, "ROLLBACK");
out:
    vv_free(gone);
    return rc;
}

/* Deletes what the eviction queues gave up. A failure leaves the object stored (and out of
 * its queue until the next open); it is logged. */
static void delete_victims_locked(struct vv_store *s)
{
    for (size_t i = 0; i < s->n_victims; i++) {
        int rc = delete_locked(s, s->victims + i * 32, REMOVE_EVICTED);
        if (rc != 0 && rc != VV_ENOTFOUND) {
            char hex[65];
            vv_hex_encode(s->victims + i * 32, 32, hex);
            vv_log_error(LOG_MOD, "evicting %s: %s", hex, vv_strerror(rc));
        }
    }
    s->n_victims = 0;
}

static void on_cache_evict(const uint8_t key[32], uint64_t size, void *arg)
{
    (void)size;
    struct vv_store *s = arg;
    if (s->n_victims == s->cap_victims) {
        s->cap_victims = s->cap_victims ? 2 * s->cap_victims : 16;
        s->victims = vv_xrealloc(s->victims, s->cap_victims * 32);
    }
    memcpy(s->victims + s->n_victims * 32, key, 32);
    s->n_victims++;
}

int vv_store_delete(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES])
{
    pthread_mutex_lock(&s->lock);
    int rc = delete_locked(s, addr, REMOVE_ASKED);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static bool evictable(int tier, bool pinned, bool has_owner)
{
    return tier != VV_STORE_TIER_COLD && !pinned && !has_owner;
}

/* Puts an object into its tier's queue: evictable ones in S3-FIFO order, others pinned. */
static void enqueue_locked(struct vv_store *s, const uint8_t addr[32], int tier, bool pinned,
                           bool has_owner, uint64_t size)
{
    if (tier < 0 || tier >= 2 || s->cache[tier] == NULL)
        return;
    if (evictable(tier, pinned, has_owner))
        vv_s3fifo_insert(s->cache[tier], addr, size);
    else
        vv_s3fifo_pin(s->cache[tier], addr, size);
    delete_victims_locked(s);
}

static int set_pinned_locked(struct vv_store *s, const uint8_t addr[32], bool pinned)
{
    sqlite3_stmt *st = prep(s, "UPDATE objects SET pinned = ? WHERE addr = ?"
                               " RETURNING tier, coalesce(length(owner) = 32, 0), size");
    /* (not "owner IS NOT NULL": SQLite 3.40 answered 1 for a NULL owner in RETURNING) */
    int rc = VV_ESTORE_INDEX;
    if (st != NULL) {
        sqlite3_bind_int(st, 1, pinned);
        sqlite3_bind_blob(st, 2, addr, 32, SQLITE_STATIC);
        int r = sqlite3_step(st);
        rc = r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? VV_ENOTFOUND : VV_ESTORE_INDEX;
        int tier = rc == 0 ? sqlite3_column_int(st, 0) : -1;
        bool owned = rc == 0 && sqlite3_column_int(st, 1) != 0;
        uint64_t size = rc == 0 ? (uint64_t)sqlite3_column_int64(st, 2) : 0;
        sqlite3_finalize(st);
        if (rc == 0 && tier >= 0 && tier < 2 && s->cache[tier]) {
            if (pinned || owned)
                vv_s3fifo_pin(s->cache[tier], addr, size);
            else if (vv_s3fifo_unpin(s->cache[tier], addr) == VV_ENOTFOUND &&
                     !vv_s3fifo_contains(s->cache[tier], addr))
                vv_s3fifo_insert(s->cache[tier], addr, size);
            delete_victims_locked(s);
        }
    }
    return rc;
}

int vv_store_set_pinned(struct vv_store *s, const uint8_t addr[VV_STORE_ADDR_BYTES], bool pinned)
{
    pthread_mutex_lock(&s->lock);
    int rc = set_pinned_locked(s, addr, pinned);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int vv_store_expire(struct vv_store *s, int64_t now, size_t max, size_t *removed)
{
    if (removed)
        *removed = 0;
    pthread_mutex_lock(&s->lock);
    flush_access_locked(s);
    sqlite3_stmt *st = prep(s, "SELECT addr FROM objects WHERE (expiry != 0 AND expiry <= ?1)"
                               " OR (?2 > 0 AND tier = 0 AND pinned = 0 AND owner IS NULL"
                               " AND last_access < ?1 - ?2) LIMIT ?3");
    int rc = st ? 0 : VV_ESTORE_INDEX;
    uint8_t *addrs = NULL;
    size_t n = 0;
    if (st) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, s->hot_retention_ms);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)VV_MIN(max, (size_t)INT32_MAX));
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (sqlite3_column_bytes(st, 0) != 32)
                continue;
            addrs = vv_xrealloc(addrs, (n + 1) * 32);
            memcpy(addrs + n * 32, sqlite3_column_blob(st, 0), 32);
            n++;
        }
        sqlite3_finalize(st);
    }
    for (size_t i = 0; i < n; i++) {
        int r = delete_locked(s, addrs + i * 32, REMOVE_EXPIRED);
        if (r == 0 && removed)
            (*removed)++;
        else if (r != 0 && r != VV_ENOTFOUND)
            rc = r;
    }
    vv_free(addrs);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t vv_store_drain_removed(struct vv_store *s, uint8_t *addrs, size_t max)
{
    pthread_mutex_lock(&s->lock);
    size_t n = 0;
    while (n < max && s->removed_n > 0) {
        memcpy(addrs + n * 32, s->removed[s->removed_head], 32);
        s->removed_head = (s->removed_head + 1) % VV_STORE_REMOVED_MAX;
        s->removed_n--;
        n++;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

int vv_store_check(struct vv_store *s, uint64_t *objects, uint64_t *bad)
{
    *objects = *bad = 0;
    pthread_mutex_lock(&s->lock);
    uint8_t *addrs = NULL;
    size_t n = 0;
    sqlite3_stmt *st = prep(s, "SELECT addr FROM objects");
    int rc = st ? 0 : VV_ESTORE_INDEX;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != 32)
            continue;
        addrs = vv_xrealloc(addrs, (n + 1) * 32);
        memcpy(addrs + n * 32, sqlite3_column_blob(st, 0), 32);
        n++;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n; i++) {
        uint8_t *buf;
        size_t len;
        (*objects)++;
        if (get_locked(s, addrs + i * 32, false, false, &buf, &len) != 0)
            (*bad)++;
        else
            vv_free(buf);
    }
    vv_free(addrs);
    pthread_mutex_unlock(&s->lock);
    return rc;
}
