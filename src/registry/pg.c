/*
 * The registry's PostgreSQL backend: libpq's asynchronous API on the loop thread.
 *
 * Connection: PQconnectStart/PQconnectPoll driven by a uv_poll on PQsocket (re-created when
 * the socket changes). Set-up, one simple query at a time: take an advisory lock, apply the
 * missing migrations (each in its own transaction, recorded in vivim_schema), release the
 * lock, prepare every statement. Then the connection enters pipeline mode: each request is
 * PQsendQueryPrepared + PQpipelineSync, so many are on the wire at once and results come
 * back in order.
 *
 * Failure: when the connection breaks, requests already sent are retried if they are
 * idempotent (reads; register, which converges on the stored record; update, which is a
 * compare-and-set; deregister) and failed with VV_EIO otherwise (an access-log append whose
 * outcome is unknown). Then the backend reconnects with exponential backoff. Requests wait
 * in a bounded queue while disconnected and fail with VV_ETIMEDOUT after
 * request_timeout_ms, so none hangs.
 */
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry_internal.h"
#include "vivim/common.h"
#include "vivim/log.h"

#define PG_ADVISORY_LOCK_KEY   7411940 /* "vivim" registry migrations */
#define PG_BACKOFF_MIN_MS      100
#define PG_BACKOFF_MAX_MS      5000
#define PG_TICK_MS             250 /* timeouts and reconnects are checked this often */
#define PG_UPDATE_MAX_ATTEMPTS 8   /* compare-and-set retries under contention */
#define PG_BATCH_MAX           64  /* requests per pipeline sync, i.e. per transaction */

static const char *const migrations[] = {
    "CREATE TABLE records ("
    "  id text COLLATE \"C\" PRIMARY KEY,"
    "  content_id text NOT NULL,"
    "  owner_did text COLLATE \"C\" NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  audience_type text NOT NULL,"
    "  expires_at bigint,"
    "  status text NOT NULL,"
    "  replica_count bigint NOT NULL,"
    "  access_count bigint NOT NULL DEFAULT 0,"
    "  last_access bigint,"
    "  doc text NOT NULL);"
    "CREATE INDEX records_owner ON records (owner_did, id);"
    "CREATE INDEX records_expiry ON records (expires_at, id)"
    "  WHERE status = 'active' AND expires_at IS NOT NULL;"
    "CREATE TABLE record_audience ("
    "  audience_type text NOT NULL, target text COLLATE \"C\" NOT NULL,"
    "  record_id text COLLATE \"C\" NOT NULL REFERENCES records (id) ON DELETE CASCADE,"
    "  PRIMARY KEY (audience_type, target, record_id));"
    "CREATE INDEX record_audience_record ON record_audience (record_id);"
    "CREATE TABLE access_log ("
    "  seq bigserial PRIMARY KEY, record_id text COLLATE \"C\" NOT NULL,"
    "  at bigint NOT NULL, actor text NOT NULL, action text NOT NULL);"
    "CREATE INDEX access_log_record ON access_log (record_id, seq);",
};

struct stmt {
    const char *name;
    int nparams;
    const char *sql;
};

enum {
    ST_REGISTER,
    ST_FIND_ID,
    ST_UPDATE,
    ST_DEREGISTER,
    ST_FIND_OWNER,
    ST_FIND_AUDIENCE,
    ST_FIND_EXPIRED,
    ST_LOG_ACCESS,
    ST_STATS,
    ST_ACCESS_LOG,
    ST_COUNT
};

static const struct stmt stmts[ST_COUNT] = {
    [ST_REGISTER] = {"vv_register", 10,
                     "WITH ins AS (INSERT INTO records (id, content_id, owner_did, created_at, "
                     "audience_type, expires_at, status, replica_count, doc) VALUES ($1, $2, $3, "
                     "$4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING RETURNING id), "
                     "aud AS (INSERT INTO record_audience (audience_type, target, record_id) "
                     "SELECT $5, t, $1 FROM json_array_elements_text($10::json) AS t "
                     "WHERE EXISTS (SELECT 1 FROM ins) ON CONFLICT DO NOTHING) "
                     "SELECT (SELECT count(*) FROM ins), (SELECT doc FROM records WHERE id = $1)"},
    [ST_FIND_ID] = {"vv_find_id", 1, "SELECT doc FROM records WHERE id = $1"},
    [ST_UPDATE] = {"vv_update", 8,
                   "WITH upd AS (UPDATE records SET audience_type = $2, expires_at = $3, "
                   "status = $4, replica_count = $5, doc = $6 WHERE id = $1 AND doc = $7 "
                   "RETURNING id), "
                   "del AS (DELETE FROM record_audience WHERE record_id IN (SELECT id FROM upd) "
                   "AND NOT (audience_type = $2 AND target IN "
                   "(SELECT json_array_elements_text($8::json)))), "
                   "ins AS (INSERT INTO record_audience (audience_type, target, record_id) "
                   "SELECT $2, t, $1 FROM json_array_elements_text($8::json) AS t "
                   "WHERE EXISTS (SELECT 1 FROM upd) ON CONFLICT DO NOTHING) "
                   "SELECT count(*) FROM upd"},
    [ST_DEREGISTER] = {"vv_deregister", 1,
                       "WITH d AS (DELETE FROM records WHERE id = $1 RETURNING id), "
                       "l AS (DELETE FROM access_log WHERE record_id IN (SELECT id FROM d)) "
                       "SELECT count(*) FROM d"},
    [ST_FIND_OWNER] = {"vv_find_owner", 3,
                       "SELECT doc, id FROM records WHERE owner_did = $1 AND id > $2 "
                       "ORDER BY id LIMIT $3"},
    [ST_FIND_AUDIENCE] = {"vv_find_audience", 4,
                          "SELECT r.doc, r.id FROM record_audience a JOIN records r "
                          "ON r.id = a.record_id WHERE a.audience_type = $1 AND a.target = $2 "
                          "AND a.record_id > $3 ORDER BY a.record_id LIMIT $4"},
    [ST_FIND_EXPIRED] = {"vv_find_expired", 4,
                         "SELECT doc, expires_at::text || ':' || id FROM records "
                         "WHERE status = 'active' AND expires_at IS NOT NULL "
                         "AND expires_at <= $1 AND (expires_at > $2 OR (expires_at = $2 "
                         "AND id > $3)) ORDER BY expires_at, id LIMIT $4"},
    [ST_LOG_ACCESS] = {"vv_log_access", 5,
                       "WITH u AS (UPDATE records SET access_count = access_count + 1, "
                       "last_access = $2 WHERE id = $1 RETURNING id), "
                       "i AS (INSERT INTO access_log (record_id, at, actor, action) "
                       "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM u) RETURNING seq), "
                       "p AS (DELETE FROM access_log WHERE seq <= (SELECT seq FROM i) - $5) "
                       "SELECT count(*) FROM u"},
    [ST_STATS] = {"vv_stats", 1,
                  "SELECT access_count, replica_count, last_access FROM records WHERE id = $1"},
    [ST_ACCESS_LOG] = {"vv_access_log", 3,
                       "SELECT json_build_object('at', at, 'actor', actor, 'action', action)"
                       "::text, seq::text AS k FROM access_log WHERE record_id = $1 AND seq < $2 "
                       "ORDER BY access_log.seq DESC LIMIT $3"},
};

enum pg_state { PG_IDLE, PG_CONNECTING, PG_SETUP, PG_READY };
enum setup_step { SETUP_LOCK, SETUP_MIGRATE, SETUP_UNLOCK, SETUP_PREPARE };

struct pg_backend {
    struct vv_registry *r;
    char *url;
    PGconn *conn;
    uv_poll_t *poll; /* heap: freed from its close callback */
    int poll_fd;
    int poll_events;
    uv_timer_t timer;
    enum pg_state state;
    enum setup_step step;
    int step_index;  /* migration or statement being applied */
    int version;     /* schema version read under the lock */
    bool step_error; /* a result of the current set-up step failed */
    char step_msg[256];
    struct vv__registry_req *wait_head, *wait_tail; /* not sent yet */
    struct vv__registry_req *sent_head, *sent_tail; /* in the pipeline, in order */
    struct vv__registry_req *await;                 /* the sent request whose result is due next */
    int phase;         /* of await: 0 result, 1 end of results, 2 sync */
    bool batch_failed; /* a statement of the current batch failed */
    uint32_t backoff_ms;
    uint64_t reconnect_at_ms;
    bool reported_open;
    bool closing;
};

static void on_io(uv_poll_t *h, int status, int events);
static void drop_connection(struct pg_backend *b, const char *why);

/* ---- queues ------------------------------------------------------------------------------- */

static void push_back(struct vv__registry_req **head, struct vv__registry_req **tail,
                      struct vv__registry_req *rq)
{
    rq->next = NULL;
    if (*tail)
        (*tail)->next = rq;
    else
        *head = rq;
    *tail = rq;
}

static struct vv__registry_req *pop_front(struct vv__registry_req **head,
                                          struct vv__registry_req **tail)
{
    struct vv__registry_req *rq = *head;
    if (rq) {
        *head = rq->next;
        if (*head == NULL)
            *tail = NULL;
    }
    return rq;
}

static void complete(struct pg_backend *b, struct vv__registry_req *rq, int status)
{
    vv__registry_complete(b->r, rq, status);
}

/* ---- the socket --------------------------------------------------------------------------- */

static void free_poll(uv_handle_t *h)
{
    vv_free(h);
}

static void stop_poll(struct pg_backend *b)
{
    if (b->poll) {
        uv_close((uv_handle_t *)b->poll, free_poll);
        b->poll = NULL;
    }
    b->poll_fd = -1;
    b->poll_events = 0;
}

/* Watches PQsocket for events; a new socket gets a new uv_poll. */
static void watch(struct pg_backend *b, int events)
{
    int fd = PQsocket(b->conn);
    if (fd < 0) {
        drop_connection(b, "no socket");
        return;
    }
    if (b->poll && b->poll_fd != fd)
        stop_poll(b);
    if (b->poll == NULL) {
        b->poll = vv_xmalloc(sizeof(*b->poll));
        if (uv_poll_init_socket(b->r->loop, b->poll, fd) != 0) {
            vv_free(b->poll);
            b->poll = NULL;
            drop_connection(b, "cannot watch the socket");
            return;
        }
        b->poll->data = b;
        b->poll_fd = fd;
        b->poll_events = 0;
    }
    if (events != b->poll_events) {
        uv_poll_start(b->poll, events, on_io);
        b->poll_events = events;
    }
}

/* Flushes libpq's output buffer; keeps watching for writability while data remains. */
static void flush(struct pg_backend *b)
{
    int rc = PQflush(b->conn);
    if (rc < 0) {
        drop_connection(b, PQerrorMessage(b->conn));
        return;
    }
    watch(b, UV_READABLE | (rc == 1 ? UV_WRITABLE : 0));
}

/* ---- connecting and set-up ---------------------------------------------------------------- */

static void schedule_reconnect(struct pg_backend *b)
{
    b->state = PG_IDLE;
    uint64_t jitter = b->backoff_ms / 4 ? randombytes_uniform(b->backoff_ms / 4) : 0;
    b->reconnect_at_ms = uv_now(b->r->loop) + b->backoff_ms + jitter;
    b->backoff_ms = VV_MIN(b->backoff_ms * 2, PG_BACKOFF_MAX_MS);
}

static void report_open(struct pg_backend *b, int status, const char *msg)
{
    if (b->reported_open || b->r->open_cb == NULL)
        return;
    b->reported_open = true;
    b->r->open_cb(status, msg, b->r->open_arg);
}

static void drop_connection(struct pg_backend *b, const char *why)
{
    if (b->conn == NULL)
        return;
    char msg[256];
    snprintf(msg, sizeof(msg), "PostgreSQL connection lost: %s", why ? why : "unknown");
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    if (b->state == PG_READY)
        vv_log_warn("registry", "%s; reconnecting", msg);
    else
        vv_log_warn("registry", "PostgreSQL not ready (%s); retrying in %u ms", msg, b->backoff_ms);
    if (b->state != PG_READY)
        report_open(b, VV_EIO, msg);
    stop_poll(b);
    PQfinish(b->conn);
    b->conn = NULL;
    /* Requests on the wire: retry the idempotent ones (in order, ahead of the waiting). */
    struct vv__registry_req *retry_head = NULL, *retry_tail = NULL, *rq;
    while ((rq = pop_front(&b->sent_head, &b->sent_tail)) != NULL) {
        if (rq->op == VV__REG_LOG_ACCESS) {
            snprintf(rq->msg, sizeof(rq->msg), "%.200s; the access may or may not be logged", msg);
            complete(b, rq, VV_EIO);
            continue;
        }
        rq->stage = 0;
        json_decref(rq->result);
        rq->result = NULL;
        rq->status = 0;
        rq->msg[0] = '\0';
        if (rq->op == VV__REG_DEREGISTER)
            rq->attempts++; /* a retried delete that finds nothing has succeeded */
        push_back(&retry_head, &retry_tail, rq);
    }
    if (retry_head) {
        retry_tail->next = b->wait_head;
        b->wait_head = retry_head;
        if (b->wait_tail == NULL)
            b->wait_tail = retry_tail;
    }
    b->await = NULL;
    b->phase = 0;
    b->batch_failed = false;
    schedule_reconnect(b);
}

/* Server notices ("relation already exists, skipping") go to the debug log, not stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    vv_log_debug("registry", "PostgreSQL: %.*s", (int)strcspn(message, "\n"), message);
}

static void start_connect(struct pg_backend *b)
{
    b->conn = PQconnectStart(b->url);
    if (b->conn == NULL) {
        vv_log_error("registry", "PostgreSQL: out of memory starting a connection");
        schedule_reconnect(b);
        return;
    }
    if (PQstatus(b->conn) == CONNECTION_BAD) {
        drop_connection(b, PQerrorMessage(b->conn));
        return;
    }
    PQsetNoticeProcessor(b->conn, on_notice, NULL);
    b->state = PG_CONNECTING;
    watch(b, UV_WRITABLE); /* PQconnectPoll starts as if it had returned POLLING_WRITING */
}

static void send_setup_step(struct pg_backend *b)
{
    char sql[8192];
    int ok = 1;
    b->step_error = false;
    switch (b->step) {
    case SETUP_LOCK:
        snprintf(sql, sizeof(sql),
                 "SELECT pg_advisory_lock(%d);"
                 "CREATE TABLE IF NOT EXISTS vivim_schema (version integer NOT NULL);"
                 "INSERT INTO vivim_schema SELECT 0 WHERE NOT EXISTS "
                 "(SELECT 1 FROM vivim_schema);"
                 "SELECT version FROM vivim_schema",
                 PG_ADVISORY_LOCK_KEY);
        ok = PQsendQuery(b->conn, sql);
        break;
    case SETUP_MIGRATE:
        snprintf(sql, sizeof(sql), "BEGIN; %s UPDATE vivim_schema SET version = %d; COMMIT",
                 migrations[b->step_index], b->step_index + 1);
        ok = PQsendQuery(b->conn, sql);
        break;
    case SETUP_UNLOCK:
        snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)", PG_ADVISORY_LOCK_KEY);
        ok = PQsendQuery(b->conn, sql);
        break;
    case SETUP_PREPARE:
        ok = PQsendPrepare(b->conn, stmts[b->step_index].name, stmts[b->step_index].sql,
                           stmts[b->step_index].nparams, NULL);
        break;
    }
    if (!ok) {
        drop_connection(b, PQerrorMessage(b->conn));
        return;
    }
    flush(b);
}

static void send_requests(struct pg_backend *b);

/* All results of the current set-up step have arrived: move to the next. */
static void setup_step_done(struct pg_backend *b)
{
    int known = (int)VV_ARRAY_SIZE(migrations);
    if (b->step_error) {
        char why[300];
        snprintf(why, sizeof(why), "set-up failed: %s", b->step_msg);
        drop_connection(b, why);
        return;
    }
    switch (b->step) {
    case SETUP_LOCK:
        if (b->version > known) {
            snprintf(b->step_msg, sizeof(b->step_msg),
                     "database schema version %d is newer than this vivimd knows (%d)", b->version,
                     known);
            b->step_error = true;
            setup_step_done(b);
            return;
        }
        b->step_index = b->version;
        b->step = b->step_index < known ? SETUP_MIGRATE : SETUP_UNLOCK;
        break;
    case SETUP_MIGRATE:
        b->step_index++;
        if (b->step_index >= known)
            b->step = SETUP_UNLOCK;
        break;
    case SETUP_UNLOCK:
        b->step = SETUP_PREPARE;
        b->step_index = 0;
        break;
    case SETUP_PREPARE:
        if (++b->step_index < ST_COUNT)
            break;
        if (PQenterPipelineMode(b->conn) != 1) {
            drop_connection(b, "cannot enter pipeline mode");
            return;
        }
        b->state = PG_READY;
        b->backoff_ms = PG_BACKOFF_MIN_MS;
        vv_log_info("registry", "PostgreSQL ready (schema version %d)", known);
        report_open(b, 0, NULL);
        send_requests(b);
        return;
    }
    send_setup_step(b);
}

static void handle_setup_results(struct pg_backend *b)
{
    while (!PQisBusy(b->conn)) {
        PGresult *res = PQgetResult(b->conn);
        if (res == NULL) {
            setup_step_done(b);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!b->step_error)
                snprintf(b->step_msg, sizeof(b->step_msg), "%s", PQresultErrorMessage(res));
            b->step_error = true;
        } else if (b->step == SETUP_LOCK && st == PGRES_TUPLES_OK && PQnfields(res) == 1 &&
                   strcmp(PQfname(res, 0), "version") == 0 && PQntuples(res) == 1) {
            b->version = atoi(PQgetvalue(res, 0, 0));
        }
        PQclear(res);
    }
}

/* ---- requests ------------------------------------------------------------------------------ */

static bool send_one(struct pg_backend *b, struct vv__registry_req *rq)
{
    const char *p[10] = {0};
    char n1[24], n2[24], n3[24];
    int st = -1;
    json_t *rec = NULL;
    char *targets = NULL;
    switch (rq->op) {
    case VV__REG_REGISTER: {
        rec = json_loads(rq->doc, 0, NULL);
        json_t *aud = json_object_get(rec, "audience");
        json_t *exp = json_object_get(json_object_get(rec, "schedule"), "expiresAt");
        json_t *t = json_object_get(aud, "targets");
        targets = json_array_size(t) ? json_dumps(t, JSON_COMPACT) : strdup("[\"\"]");
        snprintf(n1, sizeof(n1), "%lld",
                 (long long)json_integer_value(json_object_get(rec, "createdAt")));
        snprintf(n2, sizeof(n2), "%lld", (long long)json_integer_value(exp));
        snprintf(n3, sizeof(n3), "%lld",
                 (long long)json_integer_value(json_object_get(rec, "replicaCount")));
        p[0] = rq->a;
        p[1] = json_string_value(json_object_get(rec, "contentId"));
        p[2] = json_string_value(json_object_get(rec, "ownerDid"));
        p[3] = n1;
        p[4] = json_string_value(json_object_get(aud, "type"));
        p[5] = json_is_integer(exp) ? n2 : NULL;
        p[6] = json_string_value(json_object_get(rec, "status"));
        p[7] = n3;
        p[8] = rq->doc;
        p[9] = targets;
        st = ST_REGISTER;
        break;
    }
    case VV__REG_UPDATE:
        if (rq->stage == 0) {
            p[0] = rq->a;
            st = ST_FIND_ID;
            break;
        }
        rec = json_loads(rq->merged, 0, NULL);
        {
            json_t *aud = json_object_get(rec, "audience");
            json_t *exp = json_object_get(json_object_get(rec, "schedule"), "expiresAt");
            json_t *t = json_object_get(aud, "targets");
            targets = json_array_size(t) ? json_dumps(t, JSON_COMPACT) : strdup("[\"\"]");
            snprintf(n2, sizeof(n2), "%lld", (long long)json_integer_value(exp));
            snprintf(n3, sizeof(n3), "%lld",
                     (long long)json_integer_value(json_object_get(rec, "replicaCount")));
            p[0] = rq->a;
            p[1] = json_string_value(json_object_get(aud, "type"));
            p[2] = json_is_integer(exp) ? n2 : NULL;
            p[3] = json_string_value(json_object_get(rec, "status"));
            p[4] = n3;
            p[5] = rq->merged;
            p[6] = rq->old_doc;
            p[7] = targets;
        }
        st = ST_UPDATE;
        break;
    case VV__REG_DEREGISTER:
        p[0] = rq->a;
        st = ST_DEREGISTER;
        break;
    case VV__REG_FIND_ID:
        p[0] = rq->a;
        st = ST_FIND_ID;
        break;
    case VV__REG_FIND_OWNER:
        snprintf(n1, sizeof(n1), "%u", rq->limit + 1);
        p[0] = rq->a;
        p[1] = rq->b ? rq->b : "";
        p[2] = n1;
        st = ST_FIND_OWNER;
        break;
    case VV__REG_FIND_AUDIENCE:
        snprintf(n1, sizeof(n1), "%u", rq->limit + 1);
        p[0] = rq->a;
        p[1] = rq->c;
        p[2] = rq->b ? rq->b : "";
        p[3] = n1;
        st = ST_FIND_AUDIENCE;
        break;
    case VV__REG_FIND_EXPIRED: {
        long long after_t = -1;
        const char *after_id = "";
        if (rq->b) {
            after_t = strtoll(rq->b, NULL, 10);
            const char *colon = strchr(rq->b, ':');
            after_id = colon ? colon + 1 : "";
        }
        snprintf(n1, sizeof(n1), "%llu", (unsigned long long)rq->n);
        snprintf(n2, sizeof(n2), "%lld", after_t);
        snprintf(n3, sizeof(n3), "%u", rq->limit + 1);
        p[0] = n1;
        p[1] = n2;
        p[2] = after_id;
        p[3] = n3;
        st = ST_FIND_EXPIRED;
        break;
    }
    case VV__REG_LOG_ACCESS:
        snprintf(n1, sizeof(n1), "%llu", (unsigned long long)rq->n);
        snprintf(n2, sizeof(n2), "%u", b->r->cfg.access_log_max_rows);
        p[0] = rq->a;
        p[1] = n1;
        p[2] = rq->b;
        p[3] = rq->c;
        p[4] = n2;
        st = ST_LOG_ACCESS;
        break;
    case VV__REG_STATS:
        p[0] = rq->a;
        st = ST_STATS;
        break;
    case VV__REG_ACCESS_LOG:
        snprintf(n1, sizeof(n1), "%s", rq->b ? rq->b : "9223372036854775807");
        snprintf(n2, sizeof(n2), "%u", rq->limit + 1);
        p[0] = rq->a;
        p[1] = n1;
        p[2] = n2;
        st = ST_ACCESS_LOG;
        break;
    }
    int ok = PQsendQueryPrepared(b->conn, stmts[st].name, stmts[st].nparams, p, NULL, NULL, 0);
    json_decref(rec);
    free(targets);
    return ok;
}

/*
 * Sends every waiting request. A sync (the end of an implicit transaction) follows every
 * PG_BATCH_MAX requests and the last one, so a burst commits in few transactions; nothing
 * is acknowledged before its batch's sync arrived, that is, before it committed.
 */
static void send_requests(struct pg_backend *b)
{
    if (b->state != PG_READY || b->wait_head == NULL)
        return;
    struct vv__registry_req *rq;
    int in_batch = 0;
    while ((rq = pop_front(&b->wait_head, &b->wait_tail)) != NULL) {
        rq->batch_end = ++in_batch == PG_BATCH_MAX || b->wait_head == NULL;
        push_back(&b->sent_head, &b->sent_tail, rq);
        if (b->await == NULL)
            b->await = rq;
        if (!send_one(b, rq)) {
            drop_connection(b, PQerrorMessage(b->conn));
            return;
        }
        if (rq->batch_end) {
            if (!PQpipelineSync(b->conn)) {
                drop_connection(b, PQerrorMessage(b->conn));
                return;
            }
            in_batch = 0;
        }
    }
    flush(b);
}

static json_t *parse_doc(const char *text)
{
    return text ? json_loads(text, 0, NULL) : NULL;
}

/* Turns the result of sent_head into its outcome. Returns true when the request is done;
 * false when it continues (an update's next stage), which re-queues it. */
static bool finish_result(struct pg_backend *b, struct vv__registry_req *rq, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK) {
        snprintf(rq->msg, sizeof(rq->msg), "%s", PQresultErrorMessage(res));
        for (char *p = rq->msg; *p; p++)
            if (*p == '\n')
                *p = ' ';
        rq->status = VV_EIO;
        return true;
    }
    int rows = PQntuples(res);
    switch (rq->op) {
    case VV__REG_REGISTER:
        if (rows == 1 && atoi(PQgetvalue(res, 0, 0)) == 1) {
            rq->result = parse_doc(rq->doc);
        } else {
            json_t *mine = parse_doc(rq->doc);
            json_t *cur = PQgetisnull(res, 0, 1) ? NULL : parse_doc(PQgetvalue(res, 0, 1));
            if (cur &&
                json_equal(json_object_get(cur, "contentId"), json_object_get(mine, "contentId")) &&
                json_equal(json_object_get(cur, "ownerDid"), json_object_get(mine, "ownerDid"))) {
                rq->result = cur;
            } else {
                json_decref(cur);
                rq->status = VV_EEXIST;
                snprintf(rq->msg, sizeof(rq->msg), "a different record with this id exists");
            }
            json_decref(mine);
        }
        return true;
    case VV__REG_FIND_ID:
    case VV__REG_UPDATE:
        if (rq->op == VV__REG_UPDATE && rq->stage == 1) {
            if (atoi(PQgetvalue(res, 0, 0)) == 1) {
                rq->result = parse_doc(rq->merged);
                return true;
            }
            /* Someone changed the record between our read and write: read again. */
            if (++rq->attempts >= PG_UPDATE_MAX_ATTEMPTS) {
                rq->status = VV_EBUSY;
                snprintf(rq->msg, sizeof(rq->msg), "record changed concurrently; try again");
                return true;
            }
            rq->stage = 0;
            return false;
        }
        if (rows == 0) {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
            return true;
        }
        if (rq->op == VV__REG_FIND_ID) {
            rq->result = parse_doc(PQgetvalue(res, 0, 0));
            return true;
        }
        {
            json_t *cur = parse_doc(PQgetvalue(res, 0, 0));
            json_t *patch = parse_doc(rq->doc), *merged = NULL;
            int rc = vv_record_apply_update(cur, patch, &merged, rq->msg, sizeof(rq->msg));
            json_decref(patch);
            if (rc != 0) {
                json_decref(cur);
                rq->status = rc;
                return true;
            }
            vv_free(rq->old_doc);
            vv_free(rq->merged);
            rq->old_doc = vv_xstrdup(PQgetvalue(res, 0, 0));
            char *m = json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS);
            rq->merged = vv_xstrdup(m);
            free(m);
            json_decref(merged);
            json_decref(cur);
            rq->stage = 1;
            return false;
        }
    case VV__REG_DEREGISTER:
        if (atoi(PQgetvalue(res, 0, 0)) == 1 || rq->attempts > 0) {
            rq->result = json_pack("{s:s, s:b}", "id", rq->a, "deregistered", 1);
        } else {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
        }
        return true;
    case VV__REG_LOG_ACCESS:
        if (atoi(PQgetvalue(res, 0, 0)) == 1) {
            rq->result = json_pack("{s:s, s:I}", "id", rq->a, "at", (json_int_t)rq->n);
        } else {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
        }
        return true;
    case VV__REG_STATS:
        if (rows == 0) {
            rq->status = VV_ENOTFOUND;
            snprintf(rq->msg, sizeof(rq->msg), "no record with this id");
        } else {
            json_t *last =
                PQgetisnull(res, 0, 2) ? json_null() : json_integer(atoll(PQgetvalue(res, 0, 2)));
            rq->result = json_pack("{s:I, s:I, s:o}", "accessCount",
                                   (json_int_t)atoll(PQgetvalue(res, 0, 0)), "replicaCount",
                                   (json_int_t)atoll(PQgetvalue(res, 0, 1)), "lastAccess", last);
        }
        return true;
    case VV__REG_FIND_OWNER:
    case VV__REG_FIND_AUDIENCE:
    case VV__REG_FIND_EXPIRED:
    case VV__REG_ACCESS_LOG: {
        json_t *items = json_array();
        int n = VV_MIN(rows, (int)rq->limit);
        for (int i = 0; i < n; i++) {
            json_t *item = parse_doc(PQgetvalue(res, i, 0));
            if (item)
                json_array_append_new(items, item);
        }
        const char *next = rows > (int)rq->limit ? PQgetvalue(res, n - 1, 1) : NULL;
        rq->result = vv__registry_page(items, next, rq->op == VV__REG_ACCESS_LOG);
        return true;
    }
    }
    return true;
}

/* Appends a request to a list, optionally from its first stage again. */
static void requeue(struct vv__registry_req **head, struct vv__registry_req **tail,
                    struct vv__registry_req *rq, bool reset)
{
    if (reset) {
        json_decref(rq->result);
        rq->result = NULL;
        rq->status = 0;
        rq->msg[0] = '\0';
        rq->stage = 0;
    }
    push_back(head, tail, rq);
}

/* The sync of a batch arrived: its transaction committed, or rolled back if batch_failed. */
static void finish_batch(struct pg_backend *b)
{
    struct vv__registry_req *again_head = NULL, *again_tail = NULL, *rq;
    bool last = false;
    bool failed = b->batch_failed;
    b->batch_failed = false;
    while (!last && (rq = pop_front(&b->sent_head, &b->sent_tail)) != NULL) {
        last = rq->batch_end;
        if (rq->own_error) {
            rq->own_error = false;
            complete(b, rq, rq->status);
        } else if (failed) {
            requeue(&again_head, &again_tail, rq, true); /* rolled back, or never run */
        } else if (rq->stage == -1) {
            complete(b, rq, rq->status);
        } else {
            requeue(&again_head, &again_tail, rq, false); /* an update's next stage */
        }
    }
    b->await = b->sent_head;
    if (again_head) {
        again_tail->next = b->wait_head;
        b->wait_head = again_head;
        if (b->wait_tail == NULL)
            b->wait_tail = again_tail;
    }
}

static void handle_pipeline_results(struct pg_backend *b)
{
    int idle = 0; /* NULLs in a row where a result was due: stop and wait for input */
    while (b->await != NULL && b->conn != NULL && !PQisBusy(b->conn) && idle < 2) {
        struct vv__registry_req *rq = b->await;
        PGresult *res = PQgetResult(b->conn);
        idle = res == NULL && b->phase != 1 ? idle + 1 : 0;
        if (b->phase == 0) {
            if (res == NULL)
                continue;
            ExecStatusType st = PQresultStatus(res);
            if (st == PGRES_PIPELINE_ABORTED) {
                b->batch_failed = true; /* not run: retried with its batch */
            } else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
                snprintf(rq->msg, sizeof(rq->msg), "%s", PQresultErrorMessage(res));
                for (char *p = rq->msg; *p; p++)
                    if (*p == '\n')
                        *p = ' ';
                rq->status = VV_EIO;
                rq->own_error = true;
                b->batch_failed = true;
            } else if (finish_result(b, rq, res)) {
                rq->stage = -1; /* outcome known; acknowledged when the batch commits */
            }
            PQclear(res);
            b->phase = 1;
        } else if (b->phase == 1) {
            if (res != NULL) {
                PQclear(res);
                continue;
            }
            if (rq->batch_end) {
                b->phase = 2;
            } else {
                b->await = rq->next;
                b->phase = 0;
            }
        } else {
            if (res == NULL)
                continue;
            ExecStatusType st = PQresultStatus(res);
            PQclear(res);
            if (st != PGRES_PIPELINE_SYNC)
                continue;
            b->phase = 0;
            finish_batch(b);
        }
    }
    if (b->conn != NULL)
        send_requests(b);
}

static void on_io(uv_poll_t *h, int status, int events)
{
    struct pg_backend *b = h->data;
    if (b->conn == NULL)
        return;
    if (status < 0) {
        drop_connection(b, uv_strerror(status));
        return;
    }
    if (b->state == PG_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(b->conn);
        if (ps == PGRES_POLLING_FAILED) {
            drop_connection(b, PQerrorMessage(b->conn));
        } else if (ps == PGRES_POLLING_READING) {
            watch(b, UV_READABLE);
        } else if (ps == PGRES_POLLING_WRITING) {
            watch(b, UV_WRITABLE);
        } else if (ps == PGRES_POLLING_OK) {
            if (PQsetnonblocking(b->conn, 1) != 0) {
                drop_connection(b, "cannot make the connection non-blocking");
                return;
            }
            b->state = PG_SETUP;
            b->step = SETUP_LOCK;
            b->version = 0;
            send_setup_step(b);
        }
        return;
    }
    if (events & UV_WRITABLE) {
        flush(b);
        if (b->conn == NULL)
            return;
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(b->conn)) {
            drop_connection(b, PQerrorMessage(b->conn));
            return;
        }
        if (b->state == PG_SETUP)
            handle_setup_results(b);
        else if (b->state == PG_READY)
            handle_pipeline_results(b);
    }
}

/* ---- timers: reconnect and request deadlines --------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct pg_backend *b = t->data;
    uint64_t now = uv_now(b->r->loop);
    if (b->state == PG_IDLE && b->conn == NULL && now >= b->reconnect_at_ms)
        start_connect(b);
    /* Waiting requests past their deadline fail; the queue is in deadline order. */
    while (b->wait_head && b->wait_head->deadline_ms <= now) {
        struct vv__registry_req *rq = pop_front(&b->wait_head, &b->wait_tail);
        snprintf(rq->msg, sizeof(rq->msg), "PostgreSQL did not answer within %u ms",
                 b->r->cfg.request_timeout_ms);
        complete(b, rq, VV_ETIMEDOUT);
    }
    /* A request on the wire past its deadline means the server or network hangs. */
    if (b->sent_head && b->sent_head->deadline_ms <= now && b->conn)
        drop_connection(b, "request timed out");
}

/* ---- backend ops --------------------------------------------------------------------------- */

static void pg_submit(struct vv_registry *r, struct vv__registry_req *rq)
{
    struct pg_backend *b = r->impl;
    rq->deadline_ms = uv_now(r->loop) + r->cfg.request_timeout_ms;
    push_back(&b->wait_head, &b->wait_tail, rq);
    /* Idle: send at once. Busy: requests gather while results come back and then go out
     * together, a batch per sync, so load turns into fewer, larger transactions. */
    if (b->sent_head == NULL)
        send_requests(b);
}

static void timer_closed(uv_handle_t *h)
{
    struct pg_backend *b = h->data;
    struct vv_registry *r = b->r;
    vv_free(b->url);
    vv_free(b);
    vv__registry_closed(r);
}

static void pg_close(struct vv_registry *r)
{
    struct pg_backend *b = r->impl;
    b->closing = true;
    struct vv__registry_req *rq;
    while ((rq = pop_front(&b->wait_head, &b->wait_tail)) != NULL)
        complete(b, rq, VV_ECLOSED);
    while ((rq = pop_front(&b->sent_head, &b->sent_tail)) != NULL) {
        snprintf(rq->msg, sizeof(rq->msg), "registry closed before PostgreSQL answered");
        complete(b, rq, VV_ECLOSED);
    }
    stop_poll(b);
    if (b->conn) {
        PQfinish(b->conn);
        b->conn = NULL;
    }
    report_open(b, VV_ECLOSED, "closed");
    uv_close((uv_handle_t *)&b->timer, timer_closed);
}

static bool pg_connected(const struct vv_registry *r)
{
    const struct pg_backend *b = r->impl;
    return b->state == PG_READY;
}

const struct vv__registry_backend vv__registry_pg = {
    .name = "postgresql",
    .submit = pg_submit,
    .close = pg_close,
    .connected = pg_connected,
};

int vv_registry_open_pg(uv_loop_t *loop, const struct vv_registry_config *cfg,
                        void (*cb)(int status, const char *msg, void *arg), void *arg,
                        struct vv_registry **out)
{
    struct vv_registry *r = vv__registry_new(loop, cfg, cb, arg);
    struct pg_backend *b = vv_xcalloc(1, sizeof(*b));
    b->r = r;
    b->url = vv_xstrdup(cfg->pg_url);
    b->poll_fd = -1;
    b->backoff_ms = PG_BACKOFF_MIN_MS;
    r->backend = &vv__registry_pg;
    r->impl = b;
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    uv_timer_start(&b->timer, on_tick, PG_TICK_MS, PG_TICK_MS);
    *out = r;
    start_connect(b);
    return 0;
}
