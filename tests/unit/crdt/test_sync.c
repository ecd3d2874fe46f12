/*
 * The sync engine between two nodes wired through an in-memory vv_env pair (messages are
 * queued and delivered when the test pumps): sharing on one side, auto-join on and off,
 * updates from peers not joined, LEAVE, and the counters.
 */
#include "vv_test.h"

#include <string.h>

#include "vivim/crdt_sync.h"

#define QMAX 256

struct msg {
    int to;
    uint8_t *data;
    size_t len;
};

struct world;
struct node {
    struct world *w;
    int index;
    struct vv_identity id;
    struct vv_env env;
    struct vv_crdt_engine *e;
};

struct world {
    struct node n[2];
    struct msg q[QMAX];
    int head, tail;
    uint64_t now;
};

static uint64_t p_now(void *impl)
{
    return ((struct node *)impl)->w->now;
}
static uint64_t p_timer(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    (void)impl, (void)d, (void)r, (void)cb, (void)arg;
    return 1; /* anti-entropy is not needed here: rounds are driven by the test */
}
static void p_cancel(void *impl, uint64_t id)
{
    (void)impl, (void)id;
}
static void p_random(void *impl, void *buf, size_t len)
{
    struct node *n = impl;
    memset(buf, 0x11 * (n->index + 1), len);
}
static int p_send(void *impl, const uint8_t *peer, uint8_t ch, const uint8_t *data, size_t len)
{
    (void)peer, (void)ch;
    struct node *n = impl;
    struct world *w = n->w;
    assert_true(w->tail - w->head < QMAX);
    struct msg *m = &w->q[w->tail++ % QMAX];
    m->to = 1 - n->index;
    m->data = vv_xmalloc(len);
    memcpy(m->data, data, len);
    m->len = len;
    return 0;
}
static int p_connect(void *impl, const uint8_t *peer, const char *address)
{
    (void)impl, (void)peer, (void)address;
    return 0;
}
static void p_disconnect(void *impl, const uint8_t *peer)
{
    (void)impl, (void)peer;
}
static bool p_verify(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    (void)impl, (void)pk, (void)m, (void)n, (void)s;
    return false;
}
static const struct vv_env_ops ops = {p_now,     p_timer,      p_cancel, p_random, p_send,
                                      p_connect, p_disconnect, p_verify, NULL};

static void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    w->now = 1000;
    for (int i = 0; i < 2; i++) {
        struct node *n = &w->n[i];
        n->w = w;
        n->index = i;
        memset(n->id.node_id, 0xa0 + i, VV_NODE_ID_BYTES);
        n->env = (struct vv_env){.ops = &ops, .impl = n, .identity = &n->id};
        n->e = vv_crdt_engine_new(&n->env, 0, 1000, NULL, NULL);
    }
}

static void pump(struct world *w)
{
    while (w->head < w->tail) {
        struct msg m = w->q[w->head++ % QMAX];
        struct node *to = &w->n[m.to];
        vv_env_deliver(&to->env, w->n[1 - m.to].id.node_id, VV_CHANNEL_CRDT, m.data, m.len);
        vv_free(m.data);
    }
}

static void world_free(struct world *w)
{
    pump(w);
    for (int i = 0; i < 2; i++)
        vv_crdt_engine_free(w->n[i].e);
}

static void apply(struct node *n, const char *doc, const char *json)
{
    json_t *op = json_loads(json, 0, NULL);
    char err[128];
    assert_int_equal(vv_crdt_engine_op(n->e, doc, op, err, sizeof(err)), 0);
    json_decref(op);
}

static void assert_text(struct node *n, const char *doc, const char *want)
{
    struct vv_crdt_doc *d = vv_crdt_engine_find(n->e, doc);
    assert_non_null(d);
    json_t *v = vv_crdt_doc_value(d);
    assert_string_equal(json_string_value(v), want);
    json_decref(v);
}

static void test_sharing_on_one_side_is_enough(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_crdt_engine_create(a->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    apply(a, "t", "{\"insert\":{\"pos\":0,\"text\":\"hello\"}}");
    assert_int_equal(vv_crdt_engine_join(a->e, "t", b->id.node_id), 0);
    pump(&w);
    assert_text(b, "t", "hello");
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_created_by_peers, 1);
    /* B was joined by A's SYNC, A by its own join: edits go both ways at once. */
    apply(b, "t", "{\"insert\":{\"pos\":5,\"text\":\" world\"}}");
    apply(a, "t", "{\"delete\":{\"pos\":0,\"len\":1}}");
    pump(&w);
    assert_text(a, "t", "ello world");
    assert_text(b, "t", "ello world");
    /* LEAVE: B stops; A's next edit does not reach it. */
    assert_int_equal(vv_crdt_engine_leave(b->e, "t", a->id.node_id), 0);
    pump(&w);
    const uint8_t *peers;
    assert_int_equal(vv_crdt_engine_peers(a->e, "t", &peers), 0);
    apply(a, "t", "{\"insert\":{\"pos\":0,\"text\":\"H\"}}");
    pump(&w);
    assert_text(b, "t", "ello world");
    world_free(&w);
}

static void test_without_auto_join_both_sides_must_join(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    vv_crdt_engine_set_auto_join(b->e, false);
    assert_int_equal(vv_crdt_engine_create(a->e, "c", VV_CRDT_KIND_COUNTER, NULL), 0);
    apply(a, "c", "{\"increment\":5}");
    assert_int_equal(vv_crdt_engine_join(a->e, "c", b->id.node_id), 0);
    pump(&w);
    assert_null(vv_crdt_engine_find(b->e, "c")); /* B did not take it */
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_refused, 1);
    /* B creates the document but has not joined A: A's updates are still refused. */
    assert_int_equal(vv_crdt_engine_create(b->e, "c", VV_CRDT_KIND_COUNTER, NULL), 0);
    apply(a, "c", "{\"increment\":1}");
    pump(&w);
    json_t *v = vv_crdt_doc_value(vv_crdt_engine_find(b->e, "c"));
    assert_int_equal(json_integer_value(v), 0);
    json_decref(v);
    /* B joins A: now they sync, both ways. */
    assert_int_equal(vv_crdt_engine_join(b->e, "c", a->id.node_id), 0);
    pump(&w);
    apply(b, "c", "{\"increment\":10}");
    pump(&w);
    for (int i = 0; i < 2; i++) {
        v = vv_crdt_doc_value(vv_crdt_engine_find(w.n[i].e, "c"));
        assert_int_equal(json_integer_value(v), 16);
        json_decref(v);
    }
    world_free(&w);
}

static void test_peer_created_documents_are_capped(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    vv_crdt_engine_set_max_peer_docs(b->e, 2);
    const char *ids[] = {"d1", "d2", "d3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vv_crdt_engine_create(a->e, ids[i], VV_CRDT_KIND_SET, NULL), 0);
        assert_int_equal(vv_crdt_engine_join(a->e, ids[i], b->id.node_id), 0);
    }
    pump(&w);
    assert_int_equal(vv_crdt_engine_count(b->e), 2);
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_refused, 1);
    /* A type clash on an existing document is a malformed message, and changes nothing. */
    assert_int_equal(vv_crdt_engine_create(a->e, "x", VV_CRDT_KIND_TEXT, NULL), 0);
    assert_int_equal(vv_crdt_engine_create(b->e, "x", VV_CRDT_KIND_MAP, NULL), 0);
    uint64_t bad = vv_crdt_engine_stats(b->e)->bad_messages;
    assert_int_equal(vv_crdt_engine_join(a->e, "x", b->id.node_id), 0);
    pump(&w);
    assert_int_equal(vv_crdt_engine_stats(b->e)->bad_messages, bad + 1);
    assert_int_equal(vv_crdt_doc_kind(vv_crdt_engine_find(b->e, "x")), VV_CRDT_KIND_MAP);
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharing_on_one_side_is_enough),
        cmocka_unit_test(test_without_auto_join_both_sides_must_join),
        cmocka_unit_test(test_peer_created_documents_are_capped),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
