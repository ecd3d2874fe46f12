/*
 * The DHT's store on disk (vivim/dht_persist.h): one SQLite connection to
 * <state_dir>/dht.sqlite, owned by the struct below, with two tables, the saved contacts and
 * this node's own records. Every row read is checked before it is returned, since the file
 * is outside input like any other; what does not pass is skipped and deleted, and a file
 * that cannot be read at all is moved aside and replaced. It never aborts on disk content.
 */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vivim/common.h"
#include "vivim/dht_persist.h"
#include "vivim/log.h"

/* The file is ours alone (the state directory is locked), so a lock held for long is a bug
 * or a stuck disk: wait a little, then fail the call rather than the loop. */
#define BUSY_TIMEOUT_MS 1000

/* The schema of version 1. STRICT: SQLite refuses values of another type on write. */
static const char SCHEMA[] =
    "CREATE TABLE contacts ("
    "  id BLOB PRIMARY KEY,"           /* node ID, 32 bytes */
    "  address TEXT NOT NULL,"         /* "a.b.c.d:port" or "[v6]:port" */
    "  last_seen_ms INTEGER NOT NULL," /* Unix ms */
    "  rtt_ms INTEGER NOT NULL"        /* smoothed, 0 = unknown */
    ") STRICT;"
    /* No index on last_seen_ms: sorting 2,000 rows at a load or a trim costs less than
     * keeping an index up to date at every save, where nearly every row's time changes. */
    "CREATE TABLE own_records ("
    "  kind INTEGER NOT NULL,"
    "  key BLOB NOT NULL," /* 32 bytes */
    "  body BLOB NOT NULL,"
    "  expires_ms INTEGER NOT NULL," /* Unix ms */
    "  PRIMARY KEY (kind, key)"
    ") STRICT;";

/* What the code reads: prepared at open, so that tables of another shape are found then. */
static const char *const PROBES[] = {
    "SELECT id, address, last_seen_ms, rtt_ms FROM contacts LIMIT 0",
    "SELECT kind, key, body, expires_ms FROM own_records LIMIT 0",
};

struct vv_dht_persist {
    sqlite3 *db;
    char *path;
};

/* ---- opening ------------------------------------------------------------------------- */

/* Whether rc says the file's content is bad (as opposed to the disk or the directory). */
static bool content_error(int rc)
{
    int primary = rc & 0xff;
    return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT || primary == SQLITE_ERROR ||
           primary == SQLITE_SCHEMA || primary == SQLITE_FORMAT || primary == SQLITE_MISMATCH;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/*
 * Opens path and brings it to a usable state. Returns SQLITE_OK, or an SQLite code with a
 * reason in why; *bad_content says whether moving the file aside may help.
 */
static int try_open(const char *path, sqlite3 **out, char *why, size_t why_len, bool *bad_content)
{
    *out = NULL;
    *bad_content = false;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_NOFOLLOW,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(why, why_len, "cannot open: %s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        /* No permission, no directory, a symbolic link (NOFOLLOW): the operator's to fix, not
         * a file to move aside. */
        sqlite3_close_v2(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    /* journal_mode reads the header first: a file that is not a database fails here. */
    rc = exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    if (rc != SQLITE_OK) {
        snprintf(why, why_len, "%s", sqlite3_errmsg(db));
        goto fail;
    }
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(why, why_len, "%s", sqlite3_errmsg(db));
        goto fail;
    }
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    rc = sqlite3_finalize(st);
    if (version < 0 || rc != SQLITE_OK) {
        snprintf(why, why_len, "cannot read its schema version: %s", sqlite3_errmsg(db));
        rc = rc != SQLITE_OK ? rc : SQLITE_CORRUPT;
        goto fail;
    }
    if (version == 0) {
        char set[64];
        snprintf(set, sizeof(set), "PRAGMA user_version=%d;", VV_DHT_PERSIST_SCHEMA_VERSION);
        rc = exec(db, "BEGIN IMMEDIATE;");
        if (rc == SQLITE_OK)
            rc = exec(db, SCHEMA);
        if (rc == SQLITE_OK)
            rc = exec(db, set);
        if (rc == SQLITE_OK)
            rc = exec(db, "COMMIT;");
        if (rc != SQLITE_OK) {
            snprintf(why, why_len, "cannot create the schema: %s", sqlite3_errmsg(db));
            exec(db, "ROLLBACK;");
            goto fail;
        }
    } else if (version != VV_DHT_PERSIST_SCHEMA_VERSION) {
        snprintf(why, why_len, "schema version %d, this vivimd reads version %d", version,
                 VV_DHT_PERSIST_SCHEMA_VERSION);
        rc = SQLITE_FORMAT;
        goto fail;
    }
    for (size_t i = 0; i < VV_ARRAY_SIZE(PROBES); i++) {
        rc = sqlite3_prepare_v2(db, PROBES[i], -1, &st, NULL);
        sqlite3_finalize(st);
        if (rc != SQLITE_OK) {
            snprintf(why, why_len, "tables of another shape: %s", sqlite3_errmsg(db));
            goto fail;
        }
    }
    /* Pages that do not hold together. Cheap on a file this small (a few hundred pages). */
    rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        const char *res = NULL;
        if (sqlite3_step(st) == SQLITE_ROW)
            res = (const char *)sqlite3_column_text(st, 0);
        if (res == NULL || strcmp(res, "ok") != 0) {
            snprintf(why, why_len, "integrity check: %s", res ? res : sqlite3_errmsg(db));
            rc = SQLITE_CORRUPT;
        }
        int frc = sqlite3_finalize(st);
        if (rc == SQLITE_OK && frc != SQLITE_OK) {
            snprintf(why, why_len, "integrity check: %s", sqlite3_errmsg(db));
            rc = frc;
        }
    } else {
        snprintf(why, why_len, "%s", sqlite3_errmsg(db));
    }
    if (rc != SQLITE_OK)
        goto fail;
    *out = db;
    return SQLITE_OK;
fail:
    *bad_content = content_error(rc);
    sqlite3_close_v2(db);
    return rc;
}

/* Moves path (and its WAL, which belongs to it) to path.bad, and drops the shared-memory
 * index, so that the new file starts from nothing. Returns 0 or -errno. */
static int move_aside(const char *path)
{
    static const char *const suffixes[] = {"", "-wal"};
    for (size_t i = 0; i < VV_ARRAY_SIZE(suffixes); i++) {
        char from[PATH_MAX], to[PATH_MAX];
        if ((size_t)snprintf(from, sizeof(from), "%s%s", path, suffixes[i]) >= sizeof(from) ||
            (size_t)snprintf(to, sizeof(to), "%s.bad%s", path, suffixes[i]) >= sizeof(to))
            return -ENAMETOOLONG;
        unlink(to); /* an earlier bad file's WAL must not pair with this one */
        if (rename(from, to) != 0 && errno != ENOENT)
            return -errno;
    }
    char shm[PATH_MAX];
    if ((size_t)snprintf(shm, sizeof(shm), "%s-shm", path) < sizeof(shm))
        unlink(shm);
    return 0;
}

int vv_dht_persist_open(const char *path, struct vv_dht_persist **out, bool *recreated)
{
    *out = NULL;
    if (recreated)
        *recreated = false;
    char why[512];
    bool bad;
    sqlite3 *db;
    int rc = try_open(path, &db, why, sizeof(why), &bad);
    if (rc != SQLITE_OK && bad) {
        int mrc = move_aside(path);
        if (mrc != 0) {
            vv_log_error("dht", "%s: %s; cannot move it aside: %s", path, why, strerror(-mrc));
            return VV_EIO;
        }
        vv_log_warn("dht", "%s: %s; moved to %s.bad, starting an empty one", path, why, path);
        if (recreated)
            *recreated = true;
        rc = try_open(path, &db, why, sizeof(why), &bad);
    }
    if (rc != SQLITE_OK) {
        vv_log_error("dht", "%s: %s", path, why);
        return VV_EIO;
    }
    struct vv_dht_persist *p = vv_xcalloc(1, sizeof(*p));
    p->db = db;
    p->path = vv_xstrdup(path);
    *out = p;
    return 0;
}

void vv_dht_persist_close(struct vv_dht_persist *p)
{
    if (p == NULL)
        return;
    sqlite3_close_v2(p->db);
    vv_free(p->path);
    vv_free(p);
}

/* ---- helpers ---------------------------------------------------------------------------- */

static int fail(struct vv_dht_persist *p, const char *what)
{
    vv_log_error("dht", "%s: %s: %s", p->path, what, sqlite3_errmsg(p->db));
    return VV_EIO;
}

/* Deletes the rows of table whose rowids are listed; logs what was skipped and why. */
static void drop_bad_rows(struct vv_dht_persist *p, const char *table, const int64_t *rowids,
                          size_t n, const char *first_reason)
{
    if (n == 0)
        return;
    vv_log_warn("dht", "%s: %zu malformed row(s) in %s skipped and deleted (first: %s)", p->path, n,
                table, first_reason);
    char sql[96];
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE rowid = ?1", table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(p->db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail(p, "cannot delete malformed rows");
        return;
    }
    exec(p->db, "BEGIN IMMEDIATE;");
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, rowids[i]);
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (exec(p->db, "COMMIT;") != SQLITE_OK) {
        fail(p, "cannot delete malformed rows");
        exec(p->db, "ROLLBACK;");
    }
}

/* ---- contacts ----------------------------------------------------------------------------- */

int vv_dht_persist_save_contacts(struct vv_dht_persist *p, const struct vv_dht_saved_contact *c,
                                 size_t n, size_t *kept)
{
    sqlite3_stmt *ins = NULL, *trim = NULL, *count = NULL;
    if (sqlite3_prepare_v2(p->db,
                           "INSERT INTO contacts (id, address, last_seen_ms, rtt_ms) "
                           "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO UPDATE SET "
                           "address = excluded.address, last_seen_ms = excluded.last_seen_ms, "
                           "rtt_ms = excluded.rtt_ms",
                           -1, &ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(p->db,
                           "DELETE FROM contacts WHERE rowid NOT IN (SELECT rowid FROM contacts "
                           "ORDER BY last_seen_ms DESC LIMIT ?1)",
                           -1, &trim, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(p->db, "SELECT count(*) FROM contacts", -1, &count, NULL) != SQLITE_OK) {
        int rc = fail(p, "cannot save the contacts");
        sqlite3_finalize(ins);
        sqlite3_finalize(trim);
        sqlite3_finalize(count);
        return rc;
    }
    int rc = exec(p->db, "BEGIN IMMEDIATE;");
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        char a[VV_DHT_ADDR_STR_BYTES];
        if (vv_dht_addr_format(&c[i].addr, a, sizeof(a)) != 0)
            continue;
        sqlite3_bind_blob(ins, 1, c[i].id, VV_DHT_ID_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, a, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, (int64_t)VV_MIN(c[i].last_seen_ms, (uint64_t)INT64_MAX));
        sqlite3_bind_int(ins, 4, c[i].rtt_ms);
        rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(p->db);
        sqlite3_reset(ins);
    }
    int64_t rows = 0;
    if (rc == SQLITE_OK) {
        if (sqlite3_step(count) == SQLITE_ROW)
            rows = sqlite3_column_int64(count, 0);
        else
            rc = sqlite3_errcode(p->db);
    }
    if (rc == SQLITE_OK && rows > VV_DHT_PERSIST_MAX_CONTACTS) {
        sqlite3_bind_int64(trim, 1, VV_DHT_PERSIST_MAX_CONTACTS);
        rc = sqlite3_step(trim) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(p->db);
        rows = VV_DHT_PERSIST_MAX_CONTACTS;
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(trim);
    sqlite3_finalize(count);
    if (rc == SQLITE_OK)
        rc = exec(p->db, "COMMIT;");
    if (rc != SQLITE_OK) {
        int err = fail(p, "cannot save the contacts");
        exec(p->db, "ROLLBACK;");
        return err;
    }
    if (kept)
        *kept = (size_t)rows;
    return 0;
}

int vv_dht_persist_load_contacts(struct vv_dht_persist *p, size_t max,
                                 struct vv_dht_saved_contact *out, size_t *n, size_t *skipped)
{
    *n = 0;
    if (skipped)
        *skipped = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(p->db,
                           "SELECT rowid, id, address, last_seen_ms, rtt_ms FROM contacts "
                           "ORDER BY last_seen_ms DESC LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(p, "cannot load the contacts");
    /* Bad rows count against the bound too, so the reading stays bounded whatever the file
     * holds; they are deleted, so the next start reads further. */
    sqlite3_bind_int64(st, 1, (int64_t)VV_MIN(max, (size_t)INT64_MAX));
    int64_t *bad = NULL;
    size_t n_bad = 0, cap_bad = 0;
    const char *first = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *why = NULL;
        struct vv_dht_saved_contact c;
        memset(&c, 0, sizeof(c));
        /* The types first: reading a value as another type converts it. */
        int t_id = sqlite3_column_type(st, 1), t_seen = sqlite3_column_type(st, 3),
            t_rtt = sqlite3_column_type(st, 4);
        const void *id = sqlite3_column_blob(st, 1);
        const unsigned char *a = sqlite3_column_text(st, 2);
        int64_t seen = sqlite3_column_int64(st, 3);
        int64_t rtt = sqlite3_column_int64(st, 4);
        if (t_id != SQLITE_BLOB || sqlite3_column_bytes(st, 1) != VV_DHT_ID_BYTES || id == NULL)
            why = "a node ID that is not 32 bytes";
        else if (a == NULL || vv_dht_addr_parse((const char *)a,
                                                (size_t)sqlite3_column_bytes(st, 2), &c.addr) != 0)
            why = "not a numeric address with a port";
        else if (t_seen != SQLITE_INTEGER || seen < 0)
            why = "a last-seen time that is negative or not an integer";
        else if (t_rtt != SQLITE_INTEGER || rtt < 0 || rtt > UINT16_MAX)
            why = "a round trip out of range";
        if (why != NULL) {
            if (n_bad == cap_bad) {
                cap_bad = cap_bad ? 2 * cap_bad : 16;
                bad = vv_xrealloc(bad, cap_bad * sizeof(*bad));
            }
            bad[n_bad++] = sqlite3_column_int64(st, 0);
            if (first == NULL)
                first = why;
            continue;
        }
        memcpy(c.id, id, VV_DHT_ID_BYTES);
        c.last_seen_ms = (uint64_t)seen;
        c.rtt_ms = (uint16_t)rtt;
        out[(*n)++] = c;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        vv_free(bad);
        *n = 0;
        return fail(p, "cannot load the contacts");
    }
    drop_bad_rows(p, "contacts", bad, n_bad, first);
    vv_free(bad);
    if (skipped)
        *skipped = n_bad;
    return 0;
}

/* ---- own records ---------------------------------------------------------------------------- */

int vv_dht_persist_put_record(struct vv_dht_persist *p, int64_t kind,
                              const uint8_t key[VV_DHT_ID_BYTES], const uint8_t *body, size_t len,
                              uint64_t expires_ms)
{
    if (kind < 0 || len > VV_DHT_PERSIST_MAX_BODY_BYTES || (body == NULL && len > 0))
        return VV_EINVAL;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(p->db,
                           "INSERT OR REPLACE INTO own_records (kind, key, body, expires_ms) "
                           "VALUES (?1, ?2, ?3, ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(p, "cannot store a record");
    static const uint8_t empty[1];
    sqlite3_bind_int64(st, 1, kind);
    sqlite3_bind_blob(st, 2, key, VV_DHT_ID_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, len > 0 ? body : empty, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)VV_MIN(expires_ms, (uint64_t)INT64_MAX));
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : fail(p, "cannot store a record");
}

int vv_dht_persist_delete_record(struct vv_dht_persist *p, int64_t kind,
                                 const uint8_t key[VV_DHT_ID_BYTES])
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(p->db, "DELETE FROM own_records WHERE kind = ?1 AND key = ?2", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(p, "cannot delete a record");
    sqlite3_bind_int64(st, 1, kind);
    sqlite3_bind_blob(st, 2, key, VV_DHT_ID_BYTES, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(p, "cannot delete a record");
    return sqlite3_changes(p->db) > 0 ? 0 : VV_ENOTFOUND;
}

int vv_dht_persist_expire_records(struct vv_dht_persist *p, uint64_t now_ms, size_t *deleted)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(p->db, "DELETE FROM own_records WHERE expires_ms <= ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(p, "cannot delete expired records");
    sqlite3_bind_int64(st, 1, (int64_t)VV_MIN(now_ms, (uint64_t)INT64_MAX));
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(p, "cannot delete expired records");
    if (deleted)
        *deleted = (size_t)sqlite3_changes(p->db);
    return 0;
}

int vv_dht_persist_load_records(struct vv_dht_persist *p, vv_dht_persist_record_cb cb, void *arg,
                                size_t *skipped)
{
    if (skipped)
        *skipped = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(p->db,
                           "SELECT rowid, kind, key, body, expires_ms FROM own_records "
                           "ORDER BY kind, key",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(p, "cannot load the records");
    int64_t *bad = NULL;
    size_t n_bad = 0, cap_bad = 0;
    const char *first = NULL;
    int rc, stopped = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *why = NULL;
        /* The types first: reading a value as another type converts it. */
        int t_kind = sqlite3_column_type(st, 1), t_key = sqlite3_column_type(st, 2),
            t_body = sqlite3_column_type(st, 3), t_exp = sqlite3_column_type(st, 4);
        int64_t kind = sqlite3_column_int64(st, 1);
        const void *key = sqlite3_column_blob(st, 2);
        int key_len = sqlite3_column_bytes(st, 2);
        const void *body = sqlite3_column_blob(st, 3);
        int len = sqlite3_column_bytes(st, 3);
        int64_t expires = sqlite3_column_int64(st, 4);
        if (t_kind != SQLITE_INTEGER || kind < 0)
            why = "a kind that is negative or not an integer";
        else if (t_key != SQLITE_BLOB || key_len != VV_DHT_ID_BYTES || key == NULL)
            why = "a key that is not 32 bytes";
        else if (t_body != SQLITE_BLOB || (size_t)len > VV_DHT_PERSIST_MAX_BODY_BYTES)
            why = "a body that is not a blob of at most 128 KiB";
        else if (t_exp != SQLITE_INTEGER || expires < 0)
            why = "an expiry that is negative or not an integer";
        if (why != NULL) {
            if (n_bad == cap_bad) {
                cap_bad = cap_bad ? 2 * cap_bad : 16;
                bad = vv_xrealloc(bad, cap_bad * sizeof(*bad));
            }
            bad[n_bad++] = sqlite3_column_int64(st, 0);
            if (first == NULL)
                first = why;
            continue;
        }
        uint8_t k[VV_DHT_ID_BYTES];
        memcpy(k, key, VV_DHT_ID_BYTES);
        stopped = cb(arg, kind, k, body, (size_t)len, (uint64_t)expires);
        if (stopped != 0)
            break;
    }
    sqlite3_finalize(st);
    if (stopped == 0 && rc != SQLITE_DONE) {
        vv_free(bad);
        return fail(p, "cannot load the records");
    }
    drop_bad_rows(p, "own_records", bad, n_bad, first);
    vv_free(bad);
    if (skipped)
        *skipped = n_bad;
    return stopped;
}
