/* CRDT documents: JSON operations on every type, remote updates in any order with duplicates,
 * the causal buffer and its bound, deltas from state vectors, and hostile input. */
#include "vv_test.h"

#include <string.h>

#include "vivim/crdt_doc.h"

struct upd {
    uint8_t *b;
    size_t n;
};

static struct upd op(struct vv_crdt_doc *d, struct vv_hlc *clock, uint64_t now, const char *json)
{
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    assert_non_null(o);
    struct upd u;
    char err[256];
    int rc = vv_crdt_doc_op(d, o, clock, now, &u.b, &u.n, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: %s", json, err);
    json_decref(o);
    return u;
}

static int op_rc(struct vv_crdt_doc *d, struct vv_hlc *clock, const char *json, char *err)
{
    json_t *o = json_loads(json, JSON_DECODE_ANY, NULL);
    uint8_t *b;
    size_t n;
    int rc = vv_crdt_doc_op(d, o, clock, 1000, &b, &n, err, 256);
    json_decref(o);
    if (rc == 0)
        vv_free(b);
    return rc;
}

static void assert_value(struct vv_crdt_doc *d, const char *json)
{
    json_t *want = json_loads(json, JSON_DECODE_ANY, NULL);
    json_t *got = vv_crdt_doc_value(d);
    if (!json_equal(want, got)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        fail_msg("value %s, expected %s", g, json);
    }
    json_decref(want);
    json_decref(got);
}

static void test_names_and_ids(void **state)
{
    (void)state;
    for (int k = 0; k < VV_CRDT_KIND_COUNT; k++)
        assert_int_equal(vv_crdt_kind_parse(vv_crdt_kind_name(k)), k);
    assert_int_equal(vv_crdt_kind_parse("rga"), VV_CRDT_KIND_TEXT);
    assert_int_equal(vv_crdt_kind_parse("tree"), -1);
    assert_true(vv_crdt_doc_id_valid("content:abc/1"));
    assert_false(vv_crdt_doc_id_valid(""));
    assert_false(vv_crdt_doc_id_valid("a b"));
    char longid[200];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_false(vv_crdt_doc_id_valid(longid));
    assert_null(vv_crdt_doc_new("bad id", VV_CRDT_KIND_SET, 1));
}

static void test_operations_of_every_type(void **state)
{
    (void)state;
    struct vv_hlc clock;
    vv_hlc_init(&clock, 1);
    char err[256];
    struct upd u;

    struct vv_crdt_doc *c = vv_crdt_doc_new("c", VV_CRDT_KIND_COUNTER, 1);
    u = op(c, &clock, 1000, "{\"increment\":5}");
    vv_free(u.b);
    u = op(c, &clock, 1000, "{\"decrement\":7}");
    vv_free(u.b);
    assert_value(c, "-2");
    assert_int_equal(op_rc(c, &clock, "{\"add\":1}", err), VV_ECRDT_TYPE);
    assert_non_null(strstr(err, "increment"));
    assert_int_equal(op_rc(c, &clock, "{\"increment\":0}", err), VV_ECRDT_TYPE);
    assert_int_equal(op_rc(c, &clock, "{\"increment\":1.5}", err), VV_ECRDT_TYPE);
    assert_int_equal(op_rc(c, &clock, "[1]", err), VV_ECRDT_TYPE);
    vv_crdt_doc_free(c);

    struct vv_crdt_doc *g = vv_crdt_doc_new("g", VV_CRDT_KIND_GCOUNTER, 1);
    assert_int_equal(op_rc(g, &clock, "{\"increment\":-1}", err), VV_ECRDT_TYPE);
    u = op(g, &clock, 1000, "{\"increment\":3}");
    vv_free(u.b);
    assert_value(g, "3");
    vv_crdt_doc_free(g);

    struct vv_crdt_doc *r = vv_crdt_doc_new("r", VV_CRDT_KIND_REGISTER, 1);
    u = op(r, &clock, 1000, "{\"set\":{\"name\":\"Alice\"}}");
    vv_free(u.b);
    u = op(r, &clock, 1000, "{\"set\":\"Bob\"}"); /* same millisecond: still later */
    vv_free(u.b);
    assert_value(r, "\"Bob\"");
    vv_crdt_doc_free(r);

    struct vv_crdt_doc *s = vv_crdt_doc_new("s", VV_CRDT_KIND_SET, 1);
    u = op(s, &clock, 1000, "{\"add\":\"x\"}");
    vv_free(u.b);
    u = op(s, &clock, 1000, "{\"add\":2}");
    vv_free(u.b);
    u = op(s, &clock, 1000, "{\"remove\":\"x\"}");
    vv_free(u.b);
    assert_value(s, "[2]");
    vv_crdt_doc_free(s);

    struct vv_crdt_doc *t = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 1);
    u = op(t, &clock, 1000, "{\"insert\":{\"pos\":0,\"text\":\"héllo wörld\"}}");
    vv_free(u.b);
    u = op(t, &clock, 1000, "{\"delete\":{\"pos\":5,\"len\":6}}");
    vv_free(u.b);
    assert_value(t, "\"héllo\"");
    assert_int_equal(op_rc(t, &clock, "{\"insert\":{\"pos\":6,\"text\":\"x\"}}", err),
                     VV_ECRDT_RANGE);
    assert_non_null(strstr(err, "5 characters"));
    assert_int_equal(op_rc(t, &clock, "{\"delete\":{\"pos\":0,\"len\":0}}", err), VV_ECRDT_TYPE);
    assert_int_equal(op_rc(t, &clock, "{\"insert\":{\"pos\":-1,\"text\":\"x\"}}", err),
                     VV_ECRDT_TYPE);
    assert_int_equal(op_rc(t, &clock, "{\"insert\":{\"pos\":0,\"text\":\"\"}}", err),
                     VV_ECRDT_TYPE);
    vv_crdt_doc_free(t);

    struct vv_crdt_doc *m = vv_crdt_doc_new("m", VV_CRDT_KIND_MAP, 1);
    u = op(m, &clock, 1000, "{\"put\":{\"key\":\"name\",\"value\":\"Alice\"}}");
    vv_free(u.b);
    u = op(m, &clock, 1000, "{\"put\":{\"key\":[\"address\",\"city\"],\"value\":\"Paris\"}}");
    vv_free(u.b);
    u = op(m, &clock, 1000, "{\"put\":{\"key\":\"age\",\"value\":30}}");
    vv_free(u.b);
    u = op(m, &clock, 1000, "{\"del\":{\"key\":\"age\"}}");
    vv_free(u.b);
    assert_value(m, "{\"name\":\"Alice\",\"address\":{\"city\":\"Paris\"}}");
    assert_int_equal(op_rc(m, &clock, "{\"put\":{\"key\":3,\"value\":1}}", err), VV_ECRDT_TYPE);
    vv_crdt_doc_free(m);
}

/* Two text replicas; B receives A's updates in reverse order, twice: it buffers what it
 * cannot place yet and ends equal to A. */
static void test_out_of_order_updates_are_buffered_then_applied(void **state)
{
    (void)state;
    struct vv_hlc clock;
    vv_hlc_init(&clock, 1);
    struct vv_crdt_doc *a = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 1);
    struct vv_crdt_doc *b = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 2);
    struct upd u[20];
    for (int i = 0; i < 20; i++) {
        char j[96];
        if (i % 5 == 4)
            snprintf(j, sizeof(j), "{\"delete\":{\"pos\":%d,\"len\":1}}", i / 2);
        else
            snprintf(j, sizeof(j), "{\"insert\":{\"pos\":%d,\"text\":\"%c\"}}", i / 3, 'a' + i);
        u[i] = op(a, &clock, 1000, j);
    }
    int buffered_seen = 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 19; i >= 0; i--) {
            bool buffered;
            assert_int_equal(vv_crdt_doc_apply(b, u[i].b, u[i].n, &buffered), 0);
            buffered_seen += buffered;
        }
    }
    assert_true(buffered_seen > 0);
    assert_int_equal(vv_crdt_doc_pending(b), 0);
    json_t *va = vv_crdt_doc_value(a), *vb = vv_crdt_doc_value(b);
    assert_true(json_equal(va, vb));
    json_decref(va);
    json_decref(vb);
    for (int i = 0; i < 20; i++)
        vv_free(u[i].b);
    vv_crdt_doc_free(a);
    vv_crdt_doc_free(b);
}

static void test_pending_buffer_is_bounded(void **state)
{
    (void)state;
    struct vv_hlc clock;
    vv_hlc_init(&clock, 1);
    struct vv_crdt_doc *a = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 1);
    struct vv_crdt_doc *b = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 2);
    struct upd first = op(a, &clock, 1000, "{\"insert\":{\"pos\":0,\"text\":\"x\"}}");
    int limited = 0;
    for (int i = 0; i < VV_CRDT_DOC_MAX_PENDING + 10; i++) {
        /* Each depends on the first, which B has not seen. */
        struct upd u = op(a, &clock, 1000, "{\"insert\":{\"pos\":1,\"text\":\"y\"}}");
        int rc = vv_crdt_doc_apply(b, u.b, u.n, NULL);
        if (rc == VV_ELIMIT)
            limited++;
        else
            assert_int_equal(rc, 0);
        vv_free(u.b);
    }
    assert_int_equal(limited, 10);
    assert_int_equal(vv_crdt_doc_pending(b), VV_CRDT_DOC_MAX_PENDING);
    assert_int_equal(vv_crdt_doc_apply(b, first.b, first.n, NULL), 0);
    assert_int_equal(vv_crdt_doc_pending(b), 0);
    /* The ten refused ones are repaired by a delta sync. */
    uint8_t *sv, *delta;
    size_t svn, dn;
    assert_int_equal(vv_crdt_doc_state_vector(b, &sv, &svn), 0);
    assert_int_equal(vv_crdt_doc_delta(a, sv, svn, &delta, &dn), 0);
    assert_int_equal(vv_crdt_doc_apply(b, delta, dn, NULL), 0);
    json_t *va = vv_crdt_doc_value(a), *vb = vv_crdt_doc_value(b);
    assert_true(json_equal(va, vb));
    assert_int_equal(json_string_length(vb), VV_CRDT_DOC_MAX_PENDING + 11);
    json_decref(va);
    json_decref(vb);
    vv_free(sv);
    vv_free(delta);
    vv_free(first.b);
    vv_crdt_doc_free(a);
    vv_crdt_doc_free(b);
}

/* For every type: B catches up from A's delta against B's state vector, and from A's full
 * state; junk is refused without changing B. */
/* A chain of n one-letter appends by one replica reaches another replica with its first
 * update last, the rest newest first or oldest first. Every buffered update applies, and the
 * retries cost what decoding each once costs, plus a few units a lookup: linear. (Retrying
 * the whole buffer after every success decoded about n^2 / 2 updates.) */
static void test_buffered_chain_drains_with_linear_work(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct vv_hlc clock;
    vv_hlc_init(&clock, 1);
    struct vv_crdt_doc *a = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 1);
    static struct upd u[N];
    size_t bytes = 0;
    char json[96];
    for (int i = 0; i < N; i++) {
        snprintf(json, sizeof(json), "{\"insert\":{\"pos\":%d,\"text\":\"%c\"}}", i, 'a' + i % 26);
        u[i] = op(a, &clock, 1000, json);
        bytes += i > 0 ? u[i].n : 0;
    }
    json_t *want = vv_crdt_doc_value(a);
    for (int order = 0; order < 2; order++) {
        struct vv_crdt_doc *b = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 2);
        for (int k = 1; k < N; k++) {
            int i = order == 0 ? N - k : k;
            bool buffered;
            assert_int_equal(vv_crdt_doc_apply(b, u[i].b, u[i].n, &buffered), 0);
            assert_true(buffered);
        }
        assert_int_equal(vv_crdt_doc_pending(b), N - 1);
        assert_int_equal(vv_crdt_doc_apply(b, u[0].b, u[0].n, NULL), 0);
        uint64_t work = vv_crdt_doc_last_drain_work(b);
        while (vv_crdt_doc_drain_due(b))
            work += vv_crdt_doc_drain(b, UINT64_MAX);
        assert_int_equal(vv_crdt_doc_pending(b), 0);
        json_t *got = vv_crdt_doc_value(b);
        assert_true(json_equal(got, want));
        json_decref(got);
        /* Each buffered update decoded again once, each lookup a few units. */
        assert_true(work >= bytes);
        if (work > bytes + 16 * N)
            fail_msg("order %d: %llu units of retry work for %zu bytes buffered", order,
                     (unsigned long long)work, bytes);
        vv_crdt_doc_free(b);
    }
    json_decref(want);
    for (int i = 0; i < N; i++)
        vv_free(u[i].b);
    vv_crdt_doc_free(a);
}

/* A pool bounds the buffers of several documents together: the oldest go first to make
 * room, and those older than the age limit on expiry; a document freed leaves the pool. */
static void test_pool_bounds_buffers_of_all_documents(void **state)
{
    (void)state;
    struct vv_hlc clock;
    vv_hlc_init(&clock, 1);
    struct vv_crdt_pending_pool *pool = vv_crdt_pending_pool_new(3, 1 << 20, 1000);
    struct vv_crdt_doc *src[2], *dst[2];
    struct upd first[2], later[2][2];
    for (int k = 0; k < 2; k++) {
        src[k] = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 10 + k);
        dst[k] = vv_crdt_doc_new("t", VV_CRDT_KIND_TEXT, 20 + k);
        vv_crdt_doc_set_pool(dst[k], pool);
        first[k] = op(src[k], &clock, 1000, "{\"insert\":{\"pos\":0,\"text\":\"x\"}}");
        later[k][0] = op(src[k], &clock, 1000, "{\"insert\":{\"pos\":1,\"text\":\"y\"}}");
        later[k][1] = op(src[k], &clock, 1000, "{\"insert\":{\"pos\":2,\"text\":\"z\"}}");
    }
    const struct vv_crdt_pending_stats *st = vv_crdt_pending_pool_stats(pool);
    vv_crdt_pending_pool_set_now(pool, 100);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++) {
            vv_crdt_pending_pool_set_now(pool, 100 + 10 * (2 * k + j));
            assert_int_equal(vv_crdt_doc_apply(dst[k], later[k][j].b, later[k][j].n, NULL), 0);
        }
    /* Four buffered, three allowed: the oldest (document 0's first) went. */
    assert_int_equal(st->updates, 3);
    assert_int_equal(st->evicted, 1);
    assert_int_equal(vv_crdt_doc_pending(dst[0]), 1);
    assert_int_equal(vv_crdt_doc_pending(dst[1]), 2);
    /* Document 1's dependency arrives: its chain applies and leaves the pool. */
    assert_int_equal(vv_crdt_doc_apply(dst[1], first[1].b, first[1].n, NULL), 0);
    assert_value(dst[1], "\"xyz\"");
    assert_int_equal(st->updates, 1);
    /* Document 0's remaining one expires 1000 ms after it was buffered, not before. */
    vv_crdt_pending_pool_set_now(pool, 100 + 10 + 999);
    assert_int_equal(vv_crdt_pending_pool_expire(pool), 0);
    vv_crdt_pending_pool_set_now(pool, 100 + 10 + 1000);
    assert_int_equal(vv_crdt_pending_pool_expire(pool), 1);
    assert_int_equal(st->expired, 1);
    assert_int_equal(vv_crdt_doc_pending(dst[0]), 0);
    assert_int_equal(st->updates, 0);
    assert_int_equal(st->bytes, 0);
    /* An update larger than the whole byte budget is refused; a freed document leaves. */
    vv_crdt_pending_pool_set_limits(pool, 3, 4, 1000);
    assert_int_equal(vv_crdt_doc_apply(dst[0], later[0][1].b, later[0][1].n, NULL), VV_ELIMIT);
    vv_crdt_pending_pool_set_limits(pool, 3, 1 << 20, 1000);
    assert_int_equal(vv_crdt_doc_apply(dst[0], later[0][1].b, later[0][1].n, NULL), 0);
    assert_int_equal(st->updates, 1);
    vv_crdt_doc_free(dst[0]);
    assert_int_equal(st->updates, 0);
    for (int k = 0; k < 2; k++) {
        vv_free(first[k].b);
        vv_free(later[k][0].b);
        vv_free(later[k][1].b);
        vv_crdt_doc_free(src[k]);
    }
    vv_crdt_doc_free(dst[1]);
    vv_crdt_pending_pool_free(pool);
}

static void test_delta_state_and_hostile_input(void **state)
{
    (void)state;
    static const char *const ops[VV_CRDT_KIND_COUNT][2] = {
        {"{\"increment\":2}", "{\"increment\":5}"},
        {"{\"increment\":2}", "{\"decrement\":5}"},
        {"{\"set\":1}", "{\"set\":[1,2]}"},
        {"{\"add\":\"a\"}", "{\"add\":\"b\"}"},
        {"{\"insert\":{\"pos\":0,\"text\":\"ab\"}}", "{\"insert\":{\"pos\":1,\"text\":\"Z\"}}"},
        {"{\"put\":{\"key\":\"a\",\"value\":1}}", "{\"put\":{\"key\":\"b\",\"value\":2}}"},
    };
    for (int k = 0; k < VV_CRDT_KIND_COUNT; k++) {
        struct vv_hlc ca, cb;
        vv_hlc_init(&ca, 1);
        vv_hlc_init(&cb, 2);
        struct vv_crdt_doc *a = vv_crdt_doc_new("d", k, 1);
        struct vv_crdt_doc *b = vv_crdt_doc_new("d", k, 2);
        struct upd u1 = op(a, &ca, 1000, ops[k][0]);
        assert_int_equal(vv_crdt_doc_apply(b, u1.b, u1.n, NULL), 0);
        struct upd u2 = op(a, &ca, 2000, ops[k][1]);
        uint8_t *sv, *delta, *st;
        size_t svn, dn, stn;
        assert_int_equal(vv_crdt_doc_state_vector(b, &sv, &svn), 0);
        assert_int_equal(vv_crdt_doc_delta(a, sv, svn, &delta, &dn), 0);
        json_t *before = vv_crdt_doc_value(b);
        static const uint8_t junk[] = {0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
        assert_int_equal(vv_crdt_doc_apply(b, junk, sizeof(junk), NULL) < 0, 1);
        assert_int_equal(vv_crdt_doc_apply(b, junk, 0, NULL), VV_ECRDT_DECODE);
        json_t *after = vv_crdt_doc_value(b);
        assert_true(json_equal(before, after));
        assert_int_equal(vv_crdt_doc_apply(b, delta, dn, NULL), 0);
        json_t *va = vv_crdt_doc_value(a), *vb = vv_crdt_doc_value(b);
        if (!json_equal(va, vb))
            fail_msg("%s: delta did not bring B level", vv_crdt_kind_name(k));
        /* A fresh replica from the full state. */
        struct vv_crdt_doc *c = vv_crdt_doc_new("d", k, 3);
        assert_int_equal(vv_crdt_doc_state(a, &st, &stn), 0);
        assert_int_equal(vv_crdt_doc_apply(c, st, stn, NULL), 0);
        json_t *vc = vv_crdt_doc_value(c);
        assert_true(json_equal(va, vc));
        json_decref(before);
        json_decref(after);
        json_decref(va);
        json_decref(vb);
        json_decref(vc);
        vv_free(sv);
        vv_free(delta);
        vv_free(st);
        vv_free(u1.b);
        vv_free(u2.b);
        vv_crdt_doc_free(a);
        vv_crdt_doc_free(b);
        vv_crdt_doc_free(c);
    }
}

/* A remove that takes away only some of an element's dots must count as a change (the sync
 * layer logs only updates that change the document). */
static void test_fingerprint_sees_partial_set_removes(void **state)
{
    (void)state;
    struct vv_hlc clock;
    vv_hlc_init(&clock, 1);
    struct vv_crdt_doc *a = vv_crdt_doc_new("s", VV_CRDT_KIND_SET, 1);
    struct vv_crdt_doc *b = vv_crdt_doc_new("s", VV_CRDT_KIND_SET, 2);
    struct vv_crdt_doc *n = vv_crdt_doc_new("s", VV_CRDT_KIND_SET, 3);
    struct upd ua = op(a, &clock, 1000, "{\"add\":\"x\"}");
    struct upd ub = op(b, &clock, 1000, "{\"add\":\"x\"}");
    assert_int_equal(vv_crdt_doc_apply(n, ua.b, ua.n, NULL), 0);
    assert_int_equal(vv_crdt_doc_apply(n, ub.b, ub.n, NULL), 0);
    struct upd rm = op(a, &clock, 1000, "{\"remove\":\"x\"}");
    uint64_t before = vv_crdt_doc_fingerprint(n);
    assert_int_equal(vv_crdt_doc_apply(n, rm.b, rm.n, NULL), 0);
    assert_true(vv_crdt_doc_fingerprint(n) != before);
    assert_value(n, "[\"x\"]"); /* B's add is still there */
    /* Applying it again changes nothing, and the fingerprint says so. */
    before = vv_crdt_doc_fingerprint(n);
    assert_int_equal(vv_crdt_doc_apply(n, rm.b, rm.n, NULL), 0);
    assert_true(vv_crdt_doc_fingerprint(n) == before);
    vv_free(ua.b);
    vv_free(ub.b);
    vv_free(rm.b);
    vv_crdt_doc_free(a);
    vv_crdt_doc_free(b);
    vv_crdt_doc_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_ids),
        cmocka_unit_test(test_operations_of_every_type),
        cmocka_unit_test(test_out_of_order_updates_are_buffered_then_applied),
        cmocka_unit_test(test_pending_buffer_is_bounded),
        cmocka_unit_test(test_buffered_chain_drains_with_linear_work),
        cmocka_unit_test(test_pool_bounds_buffers_of_all_documents),
        cmocka_unit_test(test_delta_state_and_hostile_input),
        cmocka_unit_test(test_fingerprint_sees_partial_set_removes),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
