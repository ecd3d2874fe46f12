/* The DHT's store on disk: contacts and own records survive a close and reopen, only the most
 * recently seen contacts are kept, and bad disk content (not a database, damaged pages,
 * another schema version, tables of another shape, malformed rows, a save killed halfway) is
 * logged and skipped or replaced, never a crash. */
#include "vv_test.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vivim/dht_persist.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    vv_test_use_cmocka_allocator();
    snprintf(dir, sizeof(dir), "/tmp/vv-dht-persist-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/%s", dir, VV_DHT_PERSIST_FILE);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct vv_dht_saved_contact contact(unsigned i, uint64_t seen)
{
    struct vv_dht_saved_contact c;
    memset(&c, 0, sizeof(c));
    memset(c.id, 0x5a, sizeof(c.id));
    memcpy(c.id, &i, sizeof(i));
    char a[64];
    if (i % 3 == 2)
        snprintf(a, sizeof(a), "[2001:db8::%x]:%u", i & 0xffff, 1000 + i % 60000);
    else
        snprintf(a, sizeof(a), "10.%u.%u.%u:%u", (i >> 16) & 255, (i >> 8) & 255, i & 255,
                 1000 + i % 60000);
    assert_int_equal(vv_dht_addr_parse(a, strlen(a), &c.addr), 0);
    c.last_seen_ms = seen;
    c.rtt_ms = (uint16_t)(i % 500);
    return c;
}

static void assert_contact_equal(const struct vv_dht_saved_contact *a,
                                 const struct vv_dht_saved_contact *b)
{
    assert_memory_equal(a->id, b->id, VV_DHT_ID_BYTES);
    assert_true(vv_dht_addr_equal(&a->addr, &b->addr));
    assert_int_equal(a->last_seen_ms, b->last_seen_ms);
    assert_int_equal(a->rtt_ms, b->rtt_ms);
}

static struct vv_dht_persist *open_ok(bool expect_recreated)
{
    struct vv_dht_persist *p;
    bool recreated = !expect_recreated;
    assert_int_equal(vv_dht_persist_open(path, &p, &recreated), 0);
    assert_non_null(p);
    assert_int_equal(recreated, expect_recreated);
    return p;
}

/* Runs sql on the file directly, as a damaged or foreign file would hold it. */
static void raw(const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void test_contacts_survive_a_reopen_most_recent_first(void **state)
{
    (void)state;
    struct vv_dht_persist *p = open_ok(false);
    struct vv_dht_saved_contact in[3] = {contact(1, 1000), contact(2, 3000), contact(3, 2000)};
    size_t kept = 0;
    assert_int_equal(vv_dht_persist_save_contacts(p, in, 3, &kept), 0);
    assert_int_equal(kept, 3);
    vv_dht_persist_close(p);

    p = open_ok(false);
    struct vv_dht_saved_contact out[8];
    size_t n = 0, skipped = 1;
    assert_int_equal(vv_dht_persist_load_contacts(p, 8, out, &n, &skipped), 0);
    assert_int_equal(n, 3);
    assert_int_equal(skipped, 0);
    assert_contact_equal(&out[0], &in[1]); /* IPv6, seen last */
    assert_contact_equal(&out[1], &in[2]);
    assert_contact_equal(&out[2], &in[0]);

    /* A contact saved again replaces its row (a new address, seen later); one not in this
     * save stays. */
    struct vv_dht_saved_contact moved = contact(1, 5000);
    moved.addr = contact(7, 0).addr;
    assert_int_equal(vv_dht_persist_save_contacts(p, &moved, 1, &kept), 0);
    assert_int_equal(kept, 3);
    assert_int_equal(vv_dht_persist_load_contacts(p, 8, out, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_contact_equal(&out[0], &moved);
    /* Saving nothing changes nothing: a node stopped before it rejoined keeps its contacts. */
    assert_int_equal(vv_dht_persist_save_contacts(p, NULL, 0, &kept), 0);
    assert_int_equal(kept, 3);
    vv_dht_persist_close(p);
}

static void test_only_the_most_recently_seen_contacts_are_kept(void **state)
{
    (void)state;
    struct vv_dht_persist *p = open_ok(false);
    size_t total = VV_DHT_PERSIST_MAX_CONTACTS + 500;
    struct vv_dht_saved_contact *in = vv_xcalloc(total, sizeof(*in));
    for (size_t i = 0; i < total; i++)
        in[i] = contact((unsigned)i, 1000000 + i);
    size_t kept = 0;
    assert_int_equal(vv_dht_persist_save_contacts(p, in, total, &kept), 0);
    assert_int_equal(kept, VV_DHT_PERSIST_MAX_CONTACTS);

    /* What a save every minute costs on the loop: the table saved again, seen later. */
    for (size_t i = 0; i < VV_DHT_PERSIST_MAX_CONTACTS; i++)
        in[i].last_seen_ms += 10000000;
    uint64_t t0 = mono_us();
    assert_int_equal(vv_dht_persist_save_contacts(p, in, VV_DHT_PERSIST_MAX_CONTACTS, &kept), 0);
    uint64_t t1 = mono_us();
    print_message("saving %d contacts took %.2f ms (this build, wall clock)\n",
                  VV_DHT_PERSIST_MAX_CONTACTS, (double)(t1 - t0) / 1000.0);
    assert_int_equal(kept, VV_DHT_PERSIST_MAX_CONTACTS);
    vv_dht_persist_close(p);

    p = open_ok(false);
    struct vv_dht_saved_contact *out = vv_xcalloc(total, sizeof(*out));
    size_t n = 0;
    assert_int_equal(vv_dht_persist_load_contacts(p, total, out, &n, NULL), 0);
    assert_int_equal(n, VV_DHT_PERSIST_MAX_CONTACTS);
    for (size_t i = 0; i < n; i++) /* the ones seen last, newest first */
        assert_contact_equal(&out[i], &in[VV_DHT_PERSIST_MAX_CONTACTS - 1 - i]);
    /* The caller's bound. */
    assert_int_equal(vv_dht_persist_load_contacts(p, 10, out, &n, NULL), 0);
    assert_int_equal(n, 10);
    assert_contact_equal(&out[0], &in[VV_DHT_PERSIST_MAX_CONTACTS - 1]);
    vv_dht_persist_close(p);
    vv_free(out);
    vv_free(in);
}

static void test_a_file_that_is_not_a_database_is_moved_aside(void **state)
{
    (void)state;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 10000; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    struct vv_dht_persist *p = open_ok(true);
    char bad[160];
    snprintf(bad, sizeof(bad), "%s.bad", path);
    assert_true(exists(bad));
    struct vv_dht_saved_contact c = contact(1, 1), out[2];
    size_t n = 1;
    assert_int_equal(vv_dht_persist_load_contacts(p, 2, out, &n, NULL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(vv_dht_persist_save_contacts(p, &c, 1, NULL), 0);
    vv_dht_persist_close(p);
    p = open_ok(false);
    assert_int_equal(vv_dht_persist_load_contacts(p, 2, out, &n, NULL), 0);
    assert_int_equal(n, 1);
    vv_dht_persist_close(p);
}

static void test_damaged_pages_are_found_and_the_file_replaced(void **state)
{
    (void)state;
    struct vv_dht_persist *p = open_ok(false);
    struct vv_dht_saved_contact *in = vv_xcalloc(VV_DHT_PERSIST_MAX_CONTACTS, sizeof(*in));
    for (size_t i = 0; i < VV_DHT_PERSIST_MAX_CONTACTS; i++)
        in[i] = contact((unsigned)i, 1 + i);
    assert_int_equal(vv_dht_persist_save_contacts(p, in, VV_DHT_PERSIST_MAX_CONTACTS, NULL), 0);
    vv_dht_persist_close(p); /* the last close checkpoints the WAL into the file */
    vv_free(in);
    /* Scribble over pages 3 to 6, the header intact. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 2 * 4096, SEEK_SET), 0);
    for (int i = 0; i < 4 * 4096; i++)
        fputc(0xa5 ^ (i & 0x3f), f);
    fclose(f);
    p = open_ok(true);
    struct vv_dht_saved_contact out[4];
    size_t n = 1;
    assert_int_equal(vv_dht_persist_load_contacts(p, 4, out, &n, NULL), 0);
    assert_int_equal(n, 0);
    vv_dht_persist_close(p);
}

static void test_another_schema_version_or_shape_is_moved_aside(void **state)
{
    (void)state;
    /* A version from the future. */
    raw("CREATE TABLE contacts (id BLOB); PRAGMA user_version = 2;");
    struct vv_dht_persist *p = open_ok(true);
    struct vv_dht_saved_contact c = contact(1, 1);
    assert_int_equal(vv_dht_persist_save_contacts(p, &c, 1, NULL), 0);
    vv_dht_persist_close(p);
    p = open_ok(false); /* the new file is ours */
    vv_dht_persist_close(p);

    /* The right version, tables of another shape. */
    raw("DROP TABLE contacts; CREATE TABLE contacts (x TEXT);");
    p = open_ok(true);
    vv_dht_persist_close(p);
    raw("DROP TABLE own_records;");
    p = open_ok(true);
    vv_dht_persist_close(p);
}

static void test_an_unusable_directory_is_an_error_not_a_crash(void **state)
{
    (void)state;
    struct vv_dht_persist *p = (struct vv_dht_persist *)1;
    bool recreated = true;
    char missing[192];
    snprintf(missing, sizeof(missing), "%s/no/such/dir/dht.sqlite", dir);
    assert_int_equal(vv_dht_persist_open(missing, &p, &recreated), VV_EIO);
    assert_null(p);
    assert_false(recreated);
}

static void test_malformed_contact_rows_are_skipped_and_deleted(void **state)
{
    (void)state;
    struct vv_dht_persist *p = open_ok(false);
    struct vv_dht_saved_contact good = contact(9, 100);
    assert_int_equal(vv_dht_persist_save_contacts(p, &good, 1, NULL), 0);
    vv_dht_persist_close(p);
    /* Each newer than the good one, so a load bounded to a few rows meets them first. */
    raw("INSERT INTO contacts VALUES (zeroblob(31), '10.0.0.1:1', 900, 1);"
        "INSERT INTO contacts VALUES (zeroblob(33), '10.0.0.1:1', 901, 1);"
        "INSERT INTO contacts VALUES (randomblob(32), 'example.com:4747', 902, 1);"
        "INSERT INTO contacts VALUES (randomblob(32), '10.0.0.1', 903, 1);"
        "INSERT INTO contacts VALUES (randomblob(32), '0.0.0.0:80', 904, 1);"
        "INSERT INTO contacts VALUES (randomblob(32), '10.0.0.1:0', 905, 1);"
        "INSERT INTO contacts VALUES (randomblob(32), '10.0.0.1:1', 906, 70000);"
        "INSERT INTO contacts VALUES (randomblob(32), '10.0.0.1:1', 907, -1);"
        "INSERT INTO contacts VALUES (randomblob(32), '10.0.0.1:1', -5, 1);");
    p = open_ok(false);
    struct vv_dht_saved_contact out[16];
    size_t n = 0, skipped = 0;
    assert_int_equal(vv_dht_persist_load_contacts(p, 16, out, &n, &skipped), 0);
    assert_int_equal(n, 1);
    assert_int_equal(skipped, 9);
    assert_contact_equal(&out[0], &good);
    /* Deleted: the next load finds none. */
    assert_int_equal(vv_dht_persist_load_contacts(p, 16, out, &n, &skipped), 0);
    assert_int_equal(n, 1);
    assert_int_equal(skipped, 0);
    vv_dht_persist_close(p);
}

/* ---- own records ---------------------------------------------------------------------------- */

struct seen {
    size_t n;
    int64_t kind[8];
    uint8_t key[8][VV_DHT_ID_BYTES];
    size_t len[8];
    uint8_t first_byte[8];
    uint64_t expires[8];
    size_t stop_after; /* 0: never */
};

static int on_record(void *arg, int64_t kind, const uint8_t key[VV_DHT_ID_BYTES],
                     const uint8_t *body, size_t len, uint64_t expires_ms)
{
    struct seen *s = arg;
    assert_true(s->n < 8);
    s->kind[s->n] = kind;
    memcpy(s->key[s->n], key, VV_DHT_ID_BYTES);
    s->len[s->n] = len;
    s->first_byte[s->n] = len > 0 ? body[0] : 0;
    s->expires[s->n] = expires_ms;
    s->n++;
    return s->stop_after != 0 && s->n == s->stop_after ? 42 : 0;
}

static void test_own_records_are_put_replaced_deleted_and_loaded(void **state)
{
    (void)state;
    struct vv_dht_persist *p = open_ok(false);
    uint8_t k1[32], k2[32], body[300];
    memset(k1, 1, sizeof(k1));
    memset(k2, 2, sizeof(k2));
    memset(body, 0x77, sizeof(body));
    assert_int_equal(vv_dht_persist_put_record(p, 1, k2, body, 300, 5000), 0);
    assert_int_equal(vv_dht_persist_put_record(p, 1, k1, body, 10, 6000), 0);
    assert_int_equal(vv_dht_persist_put_record(p, 2, k1, NULL, 0, 7000), 0); /* empty body */
    body[0] = 0x11;
    assert_int_equal(vv_dht_persist_put_record(p, 1, k2, body, 20, 8000), 0); /* replaces */
    /* Refused before the disk. */
    uint8_t *big = vv_xcalloc(1, VV_DHT_PERSIST_MAX_BODY_BYTES + 1);
    assert_int_equal(vv_dht_persist_put_record(p, 3, k1, big, VV_DHT_PERSIST_MAX_BODY_BYTES + 1, 1),
                     VV_EINVAL);
    assert_int_equal(vv_dht_persist_put_record(p, 3, k1, big, VV_DHT_PERSIST_MAX_BODY_BYTES, 1), 0);
    vv_free(big);
    assert_int_equal(vv_dht_persist_put_record(p, -1, k1, body, 1, 1), VV_EINVAL);
    assert_int_equal(vv_dht_persist_delete_record(p, 3, k1), 0);
    assert_int_equal(vv_dht_persist_delete_record(p, 3, k1), VV_ENOTFOUND);
    vv_dht_persist_close(p);

    p = open_ok(false);
    struct seen s = {0};
    size_t skipped = 1;
    assert_int_equal(vv_dht_persist_load_records(p, on_record, &s, &skipped), 0);
    assert_int_equal(skipped, 0);
    assert_int_equal(s.n, 3); /* by kind, then key */
    assert_int_equal(s.kind[0], 1);
    assert_memory_equal(s.key[0], k1, 32);
    assert_int_equal(s.len[0], 10);
    assert_int_equal(s.expires[0], 6000);
    assert_int_equal(s.kind[1], 1);
    assert_memory_equal(s.key[1], k2, 32);
    assert_int_equal(s.len[1], 20);
    assert_int_equal(s.first_byte[1], 0x11);
    assert_int_equal(s.expires[1], 8000);
    assert_int_equal(s.kind[2], 2);
    assert_int_equal(s.len[2], 0);

    /* The callback stops the iteration. */
    struct seen stop = {.stop_after = 2};
    assert_int_equal(vv_dht_persist_load_records(p, on_record, &stop, NULL), 42);
    assert_int_equal(stop.n, 2);

    /* Expiry: at or before now. */
    size_t deleted = 0;
    assert_int_equal(vv_dht_persist_expire_records(p, 6000, &deleted), 0);
    assert_int_equal(deleted, 1);
    memset(&s, 0, sizeof(s));
    assert_int_equal(vv_dht_persist_load_records(p, on_record, &s, NULL), 0);
    assert_int_equal(s.n, 2);
    assert_memory_equal(s.key[0], k2, 32);
    vv_dht_persist_close(p);
}

static void test_malformed_record_rows_are_skipped_and_deleted(void **state)
{
    (void)state;
    struct vv_dht_persist *p = open_ok(false);
    uint8_t k[32] = {7};
    assert_int_equal(vv_dht_persist_put_record(p, 1, k, k, 3, 100), 0);
    vv_dht_persist_close(p);
    raw("INSERT INTO own_records VALUES (1, zeroblob(31), x'00', 1);"
        "INSERT INTO own_records VALUES (-2, zeroblob(32), x'00', 1);"
        "INSERT INTO own_records VALUES (2, zeroblob(32), zeroblob(131073), 1);"
        "INSERT INTO own_records VALUES (3, zeroblob(32), x'00', -1);");
    p = open_ok(false);
    struct seen s = {0};
    size_t skipped = 0;
    assert_int_equal(vv_dht_persist_load_records(p, on_record, &s, &skipped), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(skipped, 4);
    memset(&s, 0, sizeof(s));
    assert_int_equal(vv_dht_persist_load_records(p, on_record, &s, &skipped), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(skipped, 0);
    vv_dht_persist_close(p);
}

/* A process killed with SIGKILL while it saves, again and again: the file opens without
 * recovery and holds exactly one whole save (WAL: a transaction is all or nothing). */
static void test_a_save_killed_halfway_leaves_the_last_whole_save(void **state)
{
    (void)state;
    enum { N = 1000 };
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        vv_set_allocator(NULL);
        struct vv_dht_persist *p;
        if (vv_dht_persist_open(path, &p, NULL) != 0)
            _exit(2);
        static struct vv_dht_saved_contact in[N];
        for (uint64_t gen = 1;; gen++) {
            /* Every contact of a save carries the save's generation in its RTT. */
            for (unsigned i = 0; i < N; i++) {
                in[i] = contact(i + (unsigned)(gen % 3) * N, gen * 10000 + i);
                in[i].rtt_ms = (uint16_t)gen;
            }
            if (vv_dht_persist_save_contacts(p, in, N, NULL) != 0)
                _exit(3);
        }
    }
    usleep(400 * 1000);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    struct vv_dht_persist *p = open_ok(false);
    struct vv_dht_saved_contact *out = vv_xcalloc(VV_DHT_PERSIST_MAX_CONTACTS, sizeof(*out));
    size_t n = 0, skipped = 1;
    assert_int_equal(
        vv_dht_persist_load_contacts(p, VV_DHT_PERSIST_MAX_CONTACTS, out, &n, &skipped), 0);
    assert_int_equal(skipped, 0);
    assert_true(n >= N);
    /* The newest N rows are one save: one generation, every contact of it. */
    uint16_t gen = out[0].rtt_ms;
    assert_true(gen >= 1);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(out[i].rtt_ms, gen);
        assert_int_equal(out[i].last_seen_ms, (uint64_t)gen * 10000 + (N - 1 - i));
    }
    print_message("killed after %u whole saves\n", (unsigned)gen);
    vv_free(out);
    vv_dht_persist_close(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_contacts_survive_a_reopen_most_recent_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_only_the_most_recently_seen_contacts_are_kept, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_file_that_is_not_a_database_is_moved_aside, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_pages_are_found_and_the_file_replaced, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_another_schema_version_or_shape_is_moved_aside, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_unusable_directory_is_an_error_not_a_crash, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_contact_rows_are_skipped_and_deleted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_own_records_are_put_replaced_deleted_and_loaded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_record_rows_are_skipped_and_deleted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_save_killed_halfway_leaves_the_last_whole_save,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
