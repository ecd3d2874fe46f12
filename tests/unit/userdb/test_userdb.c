/*
 * Per-user databases on real files: round trip, idempotent put, conflicts, paging, hostile
 * DIDs, and thousands of users through a small handle cache without exceeding its bound or
 * leaking file descriptors.
 */
#include "vv_test.h"

#include <dirent.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vivim/log.h"
#include "vivim/userdb.h"

struct result {
    bool done;
    int status;
    json_t *value;
};

static void on_result(int status, json_t *result, const char *msg, void *arg)
{
    (void)msg;
    struct result *r = arg;
    r->done = true;
    r->status = status;
    r->value = json_incref(result);
}

struct fixture {
    uv_loop_t loop;
    char dir[64];
    struct vv_userdb *u;
};

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void wait_for(struct fixture *f, struct result *r)
{
    while (!r->done)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void open_u(struct fixture *f, uint32_t max_open)
{
    struct vv_userdb_config cfg = {.dir = f->dir, .max_open = max_open};
    assert_int_equal(vv_userdb_open(&f->loop, &cfg, &f->u), 0);
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void close_u(struct fixture *f)
{
    bool closed = false;
    vv_userdb_close(f->u, on_closed, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/vv-userdb-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    strcat(f->dir, "/users");
    uv_loop_init(&f->loop);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[128];
    f->dir[strlen(f->dir) - strlen("/users")] = '\0';
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void content_id_of(const uint8_t *data, size_t len, char out[65])
{
    uint8_t h[32];
    crypto_hash_sha256(h, data, len);
    vv_hex_encode(h, 32, out);
}

static void test_put_get_list_round_trip_and_idempotence(void **state)
{
    struct fixture *f = *state;
    open_u(f, 8);
    const char *did = "did:key:alice";
    char ids[3][65];
    for (int i = 0; i < 3; i++) {
        uint8_t blob[100];
        memset(blob, i, sizeof(blob));
        blob[0] = 0; /* binary, with NULs */
        content_id_of(blob, sizeof(blob), ids[i]);
        struct result r = {0};
        json_t *meta = json_pack("{s:i}", "n", i);
        assert_int_equal(
            vv_userdb_put(f->u, did, ids[i], blob, sizeof(blob), meta, 1000 + i, on_result, &r), 0);
        json_decref(meta);
        wait_for(f, &r);
        assert_int_equal(r.status, 0);
        assert_int_equal(json_integer_value(json_object_get(r.value, "size")), 100);
        json_decref(r.value);
    }
    uint8_t blob1[100];
    memset(blob1, 1, sizeof(blob1));
    blob1[0] = 0;
    struct result same = {0};
    vv_userdb_put(f->u, did, ids[1], blob1, sizeof(blob1), NULL, 5000, on_result, &same);
    wait_for(f, &same);
    assert_int_equal(same.status, 0);
    assert_int_equal(json_integer_value(json_object_get(same.value, "createdAt")), 1001);
    json_decref(same.value);
    blob1[50] ^= 1;
    struct result diff = {0};
    vv_userdb_put(f->u, did, ids[1], blob1, sizeof(blob1), NULL, 5000, on_result, &diff);
    wait_for(f, &diff);
    assert_int_equal(diff.status, VV_EEXIST);

    struct result g = {0};
    vv_userdb_fetch_for_distribution(f->u, ids[2], did, on_result, &g);
    wait_for(f, &g);
    assert_int_equal(g.status, 0);
    uint8_t back[200];
    size_t back_len;
    assert_int_equal(sodium_base642bin(
                         back, sizeof(back), json_string_value(json_object_get(g.value, "content")),
                         strlen(json_string_value(json_object_get(g.value, "content"))), NULL,
                         &back_len, NULL, sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(back_len, 100);
    assert_int_equal(back[0], 0);
    assert_int_equal(back[99], 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(g.value, "meta"), "n")), 2);
    json_decref(g.value);

    /* Another user does not see alice's content. */
    struct result other = {0};
    vv_userdb_get(f->u, "did:key:bob", ids[2], on_result, &other);
    wait_for(f, &other);
    assert_int_equal(other.status, VV_ENOTFOUND);

    struct result l1 = {0};
    vv_userdb_list(f->u, did, NULL, 2, on_result, &l1);
    wait_for(f, &l1);
    assert_int_equal(json_array_size(json_object_get(l1.value, "records")), 2);
    const char *cursor = json_string_value(json_object_get(l1.value, "nextCursor"));
    assert_non_null(cursor);
    struct result l2 = {0};
    vv_userdb_list(f->u, did, cursor, 2, on_result, &l2);
    wait_for(f, &l2);
    assert_int_equal(json_array_size(json_object_get(l2.value, "records")), 1);
    assert_true(json_is_null(json_object_get(l2.value, "nextCursor")));
    json_decref(l1.value);
    json_decref(l2.value);
    close_u(f);
}

static void test_hostile_dids_are_refused_or_contained(void **state)
{
    struct fixture *f = *state;
    open_u(f, 4);
    char big[10300] = "did:key:";
    memset(big + 8, 'A', 10240);
    big[10248] = '\0';
    const char *bad[] = {"did:key:../../../etc/passwd",
                         "../../x",
                         "did:key:a/b",
                         "",
                         big,
                         "did:key:a\nb",
                         "did:key:"};
    char id[65];
    content_id_of((const uint8_t *)"x", 1, id);
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++) {
        struct result r = {0};
        assert_int_equal(
            vv_userdb_put(f->u, bad[i], id, (const uint8_t *)"x", 1, NULL, 1, on_result, &r),
            VV_EINVAL);
        assert_false(r.done);
    }
    /* A valid but odd DID lands inside the directory, under its hash. */
    const char *odd = "did:web:..%2F..%2Fetc:passwd";
    struct result r = {0};
    assert_int_equal(vv_userdb_put(f->u, odd, id, (const uint8_t *)"x", 1, NULL, 1, on_result, &r),
                     0);
    wait_for(f, &r);
    assert_int_equal(r.status, 0);
    json_decref(r.value);
    char path[512];
    assert_int_equal(vv_userdb_path(f->u, odd, path, sizeof(path)), 0);
    assert_int_equal(strncmp(path, f->dir, strlen(f->dir)), 0);
    assert_null(strstr(path + strlen(f->dir), ".."));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    close_u(f);
}

struct many {
    struct fixture *f;
    uint32_t outstanding, max_seen, failures;
};

static void many_cb(int status, json_t *result, const char *msg, void *arg)
{
    (void)result;
    (void)msg;
    struct many *m = arg;
    m->outstanding--;
    m->failures += status != 0;
    m->max_seen = VV_MAX(m->max_seen, vv_userdb_open_count(m->f->u));
}

static void test_10000_users_stay_within_the_handle_bound(void **state)
{
    struct fixture *f = *state;
    int fds_before = count_fds();
    const uint32_t users = 10000, bound = 32;
    open_u(f, bound);
    assert_int_equal(vv_userdb_max_open(f->u), bound);
    struct many m = {.f = f};
    char id[65];
    content_id_of((const uint8_t *)"hello", 5, id);
    /* Writes for every user queued at once, then reads back in another order. */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < users; i++) {
            char did[64];
            snprintf(did, sizeof(did), "did:key:user%u", pass ? (i * 7919) % users : i);
            int rc = pass == 0 ? vv_userdb_put(f->u, did, id, (const uint8_t *)"hello", 5, NULL, 1,
                                               many_cb, &m)
                               : vv_userdb_get(f->u, did, id, many_cb, &m);
            assert_int_equal(rc, 0);
            m.outstanding++;
            assert_true(vv_userdb_open_count(f->u) <= bound);
        }
        while (m.outstanding > 0)
            uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(m.failures, 0);
    assert_true(m.max_seen <= bound);
    /* Descriptors: at most three per open database, none left after close. */
    assert_true(count_fds() <= fds_before + (int)(3 * bound));
    close_u(f);
    assert_int_equal(count_fds(), fds_before);
}

/*
 * The cache of open databases is keyed by the SHA-256 of a DID an RPC client chooses; a
 * client can grind DIDs whose digests share their first bytes (12 bits take 4096 tries),
 * which an unkeyed "first 4 bytes" bucket turned into one chain. With the keyed hash, keys
 * that share all but their last 4 bytes spread over the buckets.
 */
static void test_keys_sharing_a_prefix_spread_over_cache_buckets(void **state)
{
    (void)state;
    enum { N = 4096 };
    static uint32_t count[VV_USERDB_HASH_BUCKETS];
    memset(count, 0, sizeof(count));
    uint32_t worst = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint8_t key[32];
        memset(key, 0x3c, sizeof(key));
        memcpy(key + sizeof(key) - sizeof(i), &i, sizeof(i));
        worst = VV_MAX(worst, ++count[vv__userdb_bucket(key)]);
    }
    assert_true(worst <= 24); /* about 7 for a random hash; 4096 for the first 4 bytes */
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_sharing_a_prefix_spread_over_cache_buckets),
        cmocka_unit_test_setup_teardown(test_put_get_list_round_trip_and_idempotence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hostile_dids_are_refused_or_contained, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_10000_users_stay_within_the_handle_bound, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
