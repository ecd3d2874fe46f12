/*
 * One suite, both backends: the registry on SQLite (a real file) and on PostgreSQL (a real
 * server this test starts: initdb into a temporary directory, pg_ctl on a private socket).
 * Register, idempotent retry, queries with paging, status rules, expiry, access log
 * retention, stats, persistence across close and reopen; and for PostgreSQL, a server
 * restart in the middle of a stream of writes.
 */
#include "vv_test.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_harness.h"
#include "vivim/log.h"
#include "vivim/registry.h"

static int backend; /* 0 SQLite, 1 PostgreSQL */
static struct pg_harness pg;

struct result {
    bool done;
    int status;
    json_t *value;
    char msg[256];
};

static void on_result(int status, json_t *result, const char *msg, void *arg)
{
    struct result *r = arg;
    r->done = true;
    r->status = status;
    r->value = json_incref(result);
    if (msg)
        snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

struct fixture {
    uv_loop_t loop;
    char dir[64];
    char path[128];
    struct vv_registry *reg;
};

static void wait_for(struct fixture *f, struct result *r)
{
    while (!r->done)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void on_open(int status, const char *msg, void *arg)
{
    struct result *r = arg;
    r->done = true;
    r->status = status;
    if (msg)
        snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static void open_reg(struct fixture *f, uint32_t log_rows)
{
    struct vv_registry_config cfg = {.sqlite_path = f->path,
                                     .pg_url = pg.url,
                                     .access_log_max_rows = log_rows,
                                     .request_timeout_ms = 20000};
    struct result r = {0};
    int rc = backend == 0 ? vv_registry_open_sqlite(&f->loop, &cfg, on_open, &r, &f->reg)
                          : vv_registry_open_pg(&f->loop, &cfg, on_open, &r, &f->reg);
    assert_int_equal(rc, 0);
    wait_for(f, &r);
    if (r.status != 0)
        fail_msg("open: %s", r.msg);
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void close_reg(struct fixture *f)
{
    bool closed = false;
    vv_registry_close(f->reg, on_closed, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/vv-registry-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/registry.db", f->dir);
    uv_loop_init(&f->loop);
    if (backend == 1) {
        /* Each test starts from an empty database. */
        PGconn *c = PQconnectdb(pg.url);
        PGresult *res = PQexec(c, "DROP TABLE IF EXISTS access_log, record_audience, records, "
                                  "vivim_schema CASCADE");
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        PQfinish(c);
        if (!ok)
            return -1;
    }
    open_reg(f, 5);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    close_reg(f);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static json_t *make_record(const char *id, const char *owner, const char *aud_type,
                           const char *target, json_int_t expires)
{
    char content[65];
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)id, strlen(id));
    vv_hex_encode(h, 32, content);
    json_t *in = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:{s:s, s:[]}}", "id", id, "contentId",
                           content, "ownerDid", owner, "type", "acu", "size", 42, "hash", content,
                           "audience", "type", aud_type, "targets");
    if (target)
        json_array_append_new(json_object_get(json_object_get(in, "audience"), "targets"),
                              json_string(target));
    if (expires)
        json_object_set_new(in, "schedule", json_pack("{s:I}", "expiresAt", expires));
    json_t *out;
    char err[256];
    if (vv_record_validate(in, 1000, id, &out, err, sizeof(err)) != 0)
        fail_msg("validate: %s", err);
    json_decref(in);
    return out;
}

static struct result do_register(struct fixture *f, json_t *rec)
{
    struct result r = {0};
    assert_int_equal(vv_registry_register(f->reg, rec, on_result, &r), 0);
    wait_for(f, &r);
    return r;
}

static void test_register_find_and_idempotent_retry(void **state)
{
    struct fixture *f = *state;
    json_t *rec = make_record("r1", "did:key:alice", "public", NULL, 0);
    struct result r = do_register(f, rec);
    assert_int_equal(r.status, 0);
    assert_true(json_equal(r.value, rec));
    json_decref(r.value);

    r = do_register(f, rec); /* a retry converges */
    assert_int_equal(r.status, 0);
    json_decref(r.value);

    json_t *other = make_record("r1", "did:key:mallory", "public", NULL, 0);
    r = do_register(f, other);
    assert_int_equal(r.status, VV_EEXIST);
    assert_null(r.value);
    json_decref(other);

    struct result g = {0};
    vv_registry_find_by_id(f->reg, "r1", on_result, &g);
    wait_for(f, &g);
    assert_int_equal(g.status, 0);
    assert_string_equal(json_string_value(json_object_get(g.value, "ownerDid")), "did:key:alice");
    json_decref(g.value);

    struct result missing = {0};
    vv_registry_find_by_id(f->reg, "nope", on_result, &missing);
    wait_for(f, &missing);
    assert_int_equal(missing.status, VV_ENOTFOUND);
    json_decref(rec);
}

static uint32_t collect_pages(struct fixture *f, int kind, const char *key, const char *target,
                              uint32_t limit, uint32_t *pages)
{
    char *cursor = NULL;
    uint32_t total = 0;
    *pages = 0;
    char last_id[80] = "";
    for (;;) {
        struct result r = {0};
        int rc = kind == 0   ? vv_registry_find_by_owner(f->reg, key, cursor, limit, on_result, &r)
                 : kind == 1 ? vv_registry_find_by_audience(f->reg, key, target, cursor, limit,
                                                            on_result, &r)
                             : vv_registry_find_expired(f->reg, 5000, cursor, limit, on_result, &r);
        assert_int_equal(rc, 0);
        wait_for(f, &r);
        assert_int_equal(r.status, 0);
        json_t *recs = json_object_get(r.value, "records");
        assert_true(json_array_size(recs) <= limit);
        size_t i;
        json_t *v;
        json_array_foreach(recs, i, v)
        {
            const char *id = json_string_value(json_object_get(v, "id"));
            if (kind != 2)
                assert_true(strcmp(id, last_id) > 0); /* ordered, no repeats */
            snprintf(last_id, sizeof(last_id), "%s", id);
        }
        total += (uint32_t)json_array_size(recs);
        (*pages)++;
        vv_free(cursor);
        json_t *next = json_object_get(r.value, "nextCursor");
        cursor = json_is_string(next) ? vv_xstrdup(json_string_value(next)) : NULL;
        json_decref(r.value);
        if (cursor == NULL)
            break;
    }
    return total;
}

static void test_queries_page_through_everything_exactly_once(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 250; i++) {
        char id[16];
        snprintf(id, sizeof(id), "rec-%03d", i);
        json_t *rec =
            make_record(id, i % 5 ? "did:key:alice" : "did:key:bob", i % 2 ? "circle" : "public",
                        i % 2 ? "friends" : NULL, i % 10 == 0 ? 2000 + i : 0);
        struct result r = do_register(f, rec);
        assert_int_equal(r.status, 0);
        json_decref(r.value);
        json_decref(rec);
    }
    uint32_t pages;
    assert_int_equal(collect_pages(f, 0, "did:key:alice", NULL, 100, &pages), 200);
    assert_int_equal(pages, 2);
    assert_int_equal(collect_pages(f, 0, "did:key:bob", NULL, 7, &pages), 50);
    assert_int_equal(pages, 8);
    assert_int_equal(collect_pages(f, 0, "did:key:nobody", NULL, 10, &pages), 0);
    assert_int_equal(collect_pages(f, 1, "circle", "friends", 100, &pages), 125);
    assert_int_equal(collect_pages(f, 1, "public", NULL, 1000, &pages), 125);
    assert_int_equal(pages, 1);
    /* expiresAt 2000+i for every tenth record; all <= 5000. */
    assert_int_equal(collect_pages(f, 2, NULL, NULL, 4, &pages), 25);
    assert_int_equal(pages, 7);

    struct result bad = {0};
    assert_int_equal(
        vv_registry_find_by_owner(f->reg, "did:key:alice", "x' OR 1=1 --", 10, on_result, &bad),
        VV_EINVAL);
    assert_false(bad.done);
}

static void test_update_follows_status_rules_and_expired_query_sees_it(void **state)
{
    struct fixture *f = *state;
    json_t *rec = make_record("e1", "did:key:alice", "public", NULL, 3000);
    struct result r = do_register(f, rec);
    json_decref(r.value);
    json_decref(rec);

    json_t *patch = json_pack("{s:s, s:i}", "status", "revoked", "replicaCount", 2);
    struct result u = {0};
    vv_registry_update(f->reg, "e1", patch, on_result, &u);
    wait_for(f, &u);
    assert_int_equal(u.status, 0);
    assert_string_equal(json_string_value(json_object_get(u.value, "status")), "revoked");
    json_decref(u.value);
    json_decref(patch);

    /* Revoked is final, and a revoked record is not "expired active". */
    patch = json_pack("{s:s}", "status", "active");
    struct result back = {0};
    vv_registry_update(f->reg, "e1", patch, on_result, &back);
    wait_for(f, &back);
    assert_int_equal(back.status, VV_ESTATE);
    assert_string_equal(back.msg, "status: a revoked record cannot become active");
    json_decref(patch);
    uint32_t pages;
    assert_int_equal(collect_pages(f, 2, NULL, NULL, 10, &pages), 0);

    struct result st = {0};
    vv_registry_stats(f->reg, "e1", on_result, &st);
    wait_for(f, &st);
    assert_int_equal(json_integer_value(json_object_get(st.value, "replicaCount")), 2);
    assert_true(json_is_null(json_object_get(st.value, "lastAccess")));
    json_decref(st.value);
}

static void test_access_log_is_bounded_and_counts(void **state)
{
    struct fixture *f = *state; /* opened with a retention of 5 rows */
    json_t *rec = make_record("a1", "did:key:alice", "public", NULL, 0);
    struct result r = do_register(f, rec);
    json_decref(r.value);
    json_decref(rec);
    for (int i = 0; i < 12; i++) {
        struct result l = {0};
        vv_registry_log_access(f->reg, "a1", "did:key:reader", i % 2 ? "fetch" : "view", 10000 + i,
                               on_result, &l);
        wait_for(f, &l);
        assert_int_equal(l.status, 0);
        json_decref(l.value);
    }
    struct result log = {0};
    vv_registry_access_log(f->reg, "a1", NULL, 100, on_result, &log);
    wait_for(f, &log);
    json_t *entries = json_object_get(log.value, "entries");
    assert_int_equal(json_array_size(entries), 5);
    /* Newest first. */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(entries, 0), "at")), 10011);
    json_decref(log.value);

    struct result st = {0};
    vv_registry_stats(f->reg, "a1", on_result, &st);
    wait_for(f, &st);
    assert_int_equal(json_integer_value(json_object_get(st.value, "accessCount")), 12);
    assert_int_equal(json_integer_value(json_object_get(st.value, "lastAccess")), 10011);
    json_decref(st.value);

    struct result none = {0};
    vv_registry_log_access(f->reg, "missing", "x", "view", 1, on_result, &none);
    wait_for(f, &none);
    assert_int_equal(none.status, VV_ENOTFOUND);
}

static void test_records_survive_reopen_and_deregister_removes(void **state)
{
    struct fixture *f = *state;
    json_t *rec = make_record("p1", "did:key:alice", "users", "did:key:bob", 0);
    struct result r = do_register(f, rec);
    json_decref(r.value);
    close_reg(f);
    open_reg(f, 5);
    struct result g = {0};
    vv_registry_find_by_id(f->reg, "p1", on_result, &g);
    wait_for(f, &g);
    assert_int_equal(g.status, 0);
    assert_true(json_equal(g.value, rec));
    json_decref(g.value);
    json_decref(rec);

    struct result d = {0};
    vv_registry_deregister(f->reg, "p1", on_result, &d);
    wait_for(f, &d);
    assert_int_equal(d.status, 0);
    json_decref(d.value);
    uint32_t pages;
    assert_int_equal(collect_pages(f, 1, "users", "did:key:bob", 10, &pages), 0);
    struct result again = {0};
    vv_registry_deregister(f->reg, "p1", on_result, &again);
    wait_for(f, &again);
    assert_int_equal(again.status, VV_ENOTFOUND);
}

static void test_close_cancels_queued_requests(void **state)
{
    struct fixture *f = *state;
    struct result rs[20];
    memset(rs, 0, sizeof(rs));
    for (int i = 0; i < 20; i++)
        vv_registry_find_by_id(f->reg, "whatever", on_result, &rs[i]);
    close_reg(f);
    int cancelled = 0, answered = 0;
    for (int i = 0; i < 20; i++) {
        assert_true(rs[i].done);
        cancelled += rs[i].status == VV_ECLOSED;
        answered += rs[i].status == VV_ENOTFOUND;
    }
    assert_int_equal(cancelled + answered, 20);
    assert_true(cancelled > 0);
    open_reg(f, 5); /* for teardown */
}

struct burst {
    uint32_t ok, outstanding;
};

static void burst_cb(int status, json_t *result, const char *msg, void *arg)
{
    (void)result;
    (void)msg;
    struct burst *b = arg;
    b->outstanding--;
    b->ok += status == 0;
}

/* Many registrations in flight at once (they are grouped into transactions): every one
 * acknowledged is stored. */
static void test_concurrent_registrations_are_all_stored(void **state)
{
    struct fixture *f = *state;
    struct burst b = {0};
    for (uint32_t i = 0; i < 1500; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%04u", i);
        json_t *rec = make_record(id, "did:key:burst", "public", NULL, 0);
        assert_int_equal(vv_registry_register(f->reg, rec, burst_cb, &b), 0);
        json_decref(rec);
        b.outstanding++;
        if (i % 100 == 0)
            uv_run(&f->loop, UV_RUN_NOWAIT); /* let batches start while more arrive */
    }
    while (b.outstanding > 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(b.ok, 1500);
    uint32_t pages;
    assert_int_equal(collect_pages(f, 0, "did:key:burst", NULL, 1000, &pages), 1500);
}

/* A registration made while the previous batch is already running on the pool must go into
 * a new batch, not into the running one (where it would be acknowledged but not written). */
static void test_registration_after_a_batch_started_is_stored(void **state)
{
    struct fixture *f = *state;
    struct burst b = {0};
    for (uint32_t i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "late%u", i);
        json_t *rec = make_record(id, "did:key:late", "public", NULL, 0);
        assert_int_equal(vv_registry_register(f->reg, rec, burst_cb, &b), 0);
        json_decref(rec);
        b.outstanding++;
        usleep(100 * 1000); /* the pool finishes the running batch meanwhile */
    }
    while (b.outstanding > 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(b.ok, 3);
    uint32_t pages;
    assert_int_equal(collect_pages(f, 0, "did:key:late", NULL, 10, &pages), 3);
}

struct stream {
    uint32_t acked, failed, outstanding;
    char acked_ids[400][16];
};

static void stream_cb(int status, json_t *result, const char *msg, void *arg)
{
    (void)msg;
    struct stream *s = arg;
    s->outstanding--;
    if (status == 0)
        snprintf(s->acked_ids[s->acked++], 16, "%s",
                 json_string_value(json_object_get(result, "id")));
    else
        s->failed++;
}

static void test_pg_restart_mid_stream_loses_no_acknowledged_write(void **state)
{
    struct fixture *f = *state;
    if (backend != 1)
        skip();
    struct stream s = {0};
    for (uint32_t i = 0; i < 400; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%03u", i);
        json_t *rec = make_record(id, "did:key:alice", "public", NULL, 0);
        assert_int_equal(vv_registry_register(f->reg, rec, stream_cb, &s), 0);
        json_decref(rec);
        s.outstanding++;
        if (i == 200) {
            /* Let part of the stream through, then restart the server under it. */
            while (s.outstanding > 50)
                uv_run(&f->loop, UV_RUN_ONCE);
            assert_int_equal(pg_harness_restart(&pg), 0);
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    /* Nothing hangs: every request completes (registers are retried after reconnect). */
    while (s.outstanding > 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(s.acked + s.failed, 400);
    assert_int_equal(s.failed, 0);
    for (uint32_t i = 0; i < s.acked; i++) {
        struct result g = {0};
        vv_registry_find_by_id(f->reg, s.acked_ids[i], on_result, &g);
        wait_for(f, &g);
        if (g.status != 0)
            fail_msg("acknowledged record %s missing: %s", s.acked_ids[i], g.msg);
        json_decref(g.value);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_find_and_idempotent_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries_page_through_everything_exactly_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_update_follows_status_rules_and_expired_query_sees_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_log_is_bounded_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_records_survive_reopen_and_deregister_removes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_queued_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_registrations_are_all_stored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registration_after_a_batch_started_is_stored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pg_restart_mid_stream_loses_no_acknowledged_write,
                                        setup, teardown),
    };
    backend = 0;
    int failed = cmocka_run_group_tests_name("registry on SQLite", tests, NULL, NULL);
    if (pg_harness_start(&pg) != 0) {
        fprintf(stderr,
                "could not start a PostgreSQL server (is the postgresql package "
                "installed? `make test` installs it); log in %s\n",
                pg.dir);
        return 1;
    }
    backend = 1;
    failed += cmocka_run_group_tests_name("registry on PostgreSQL", tests, NULL, NULL);
    pg_harness_stop(&pg);
    return failed;
}
