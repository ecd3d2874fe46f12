/*
 * A CRDT document far larger than one message (5 MiB of text) reaches new replicas over
 * bandwidth-limited links with small connection queues: node 0 writes it, node 1 (empty)
 * receives it through a stream, node 2 (empty) receives it from node 1 (which joins it when the
 * document, with node 0's access policy letting both write, reaches it), while node 0 keeps
 * typing. All three converge; the transfer met back-pressure and went on; two runs with one
 * seed give one trace hash. Before streams, the delta over 1 MiB was never sent and the new
 * replicas stayed empty. A failing run prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "vivim/crdt_sync.h"

#define N_NODES    3
#define DOC        "book:1"
#define PIECE      (64u << 10)
#define PIECES     80 /* 80 x 64 KiB = 5 MiB */
#define EDIT_END   8000
#define RUN_END_MS 40000

static uint64_t seed;

struct app {
    struct vv_sim *sim;
    struct vv_env *env;
    uint32_t index;
    struct vv_crdt_engine *e;
    uint64_t dial_timer, edit_timer;
    size_t edits;
};

static void dial(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    /* 0 - 1 - 2: node 2 never talks to node 0. */
    if (a->index == 0)
        vv_env_connect(env, vv_sim_node_id(a->sim, 1), NULL);
    if (a->index == 2)
        vv_env_connect(env, vv_sim_node_id(a->sim, 1), NULL);
}

/* Node 0 types a few letters somewhere while the big transfer runs. */
static void edit(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    if (vv_env_now(env) > EDIT_END)
        return;
    /* Only node 0 writes: its length is known without rendering 5 MiB. */
    size_t len = (size_t)PIECES * PIECE + 3 * a->edits++;
    json_t *op = json_pack("{s:{s:I, s:s}}", "insert", "pos",
                           (json_int_t)vv_env_random_below(env, len + 1), "text", "xyz");
    char err[128];
    assert_int_equal(vv_crdt_engine_op(a->e, DOC, op, err, sizeof(err)), 0);
    json_decref(op);
}

static void write_book(struct app *a)
{
    assert_int_equal(vv_crdt_engine_create(a->e, DOC, VV_CRDT_KIND_TEXT, NULL), 0);
    char *text = vv_xmalloc(PIECE + 1);
    for (int p = 0; p < PIECES; p++) {
        uint8_t r[PIECE];
        vv_env_random(a->env, r, sizeof(r));
        for (size_t i = 0; i < PIECE; i++)
            text[i] = (char)('a' + r[i] % 26);
        text[PIECE] = '\0';
        json_t *op =
            json_pack("{s:{s:I, s:s}}", "insert", "pos", (json_int_t)p * PIECE, "text", text);
        char err[128];
        assert_int_equal(vv_crdt_engine_op(a->e, DOC, op, err, sizeof(err)), 0);
        json_decref(op);
    }
    vv_free(text);
}

/* Node 1 passes the document on to node 2 as soon as it has it (node 0's policy lets both
 * write, so node 1 may relay it). */
static void created(void *arg, struct vv_crdt_doc *d)
{
    struct app *a = arg;
    if (a->index == 1)
        vv_crdt_engine_join(a->e, vv_crdt_doc_id(d), vv_sim_node_id(a->sim, 2));
}

static void *app_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct app *a = vv_xcalloc(1, sizeof(*a));
    a->sim = sim;
    a->env = env;
    a->index = index;
    a->e = vv_crdt_engine_new(env, 0, 2000, NULL, NULL);
    if (index == 0) {
        write_book(a);
        uint8_t writers[2 * VV_NODE_ID_BYTES];
        memcpy(writers, vv_sim_node_id(sim, 1), VV_NODE_ID_BYTES);
        memcpy(writers + VV_NODE_ID_BYTES, vv_sim_node_id(sim, 2), VV_NODE_ID_BYTES);
        assert_int_equal(vv_crdt_engine_set_access(a->e, DOC, NULL, 0, writers, 2), 0);
        vv_crdt_engine_join(a->e, DOC, vv_sim_node_id(sim, 1));
        a->edit_timer = vv_env_timer_start(env, 1500, 1500, edit, a);
    }
    if (index == 1) {
        static const struct vv_crdt_sync_cbs cbs = {.created = created};
        vv_crdt_engine_set_cbs(a->e, &cbs, a);
    }
    a->dial_timer = vv_env_timer_start(env, 1000, 1000, dial, a);
    return a;
}

static void app_destroy(void *app, void *arg)
{
    (void)arg;
    struct app *a = app;
    vv_env_timer_cancel(a->env, a->dial_timer);
    vv_env_timer_cancel(a->env, a->edit_timer);
    vv_crdt_engine_free(a->e);
    vv_free(a);
}

static uint64_t run_once(void)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, seed, N_NODES);
    cfg.n_regions = 2;
    cfg.uplink_bytes_per_s = 4u << 20; /* 32 Mbit/s: 5 MiB take over a second on the wire */
    cfg.peer_queue_bytes = 256u << 10; /* four chunks: the stream meets back-pressure */
    struct vv_sim_app app = {app_create, app_destroy, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    vv_sim_run_until(sim, RUN_END_MS);

    json_t *ref = NULL;
    for (uint32_t i = 0; i < N_NODES; i++) {
        struct app *a = vv_sim_app_of(sim, i);
        struct vv_crdt_doc *d = vv_crdt_engine_find(a->e, DOC);
        if (d == NULL)
            fail_msg("seed %llu: node %u has no document", (unsigned long long)seed, i);
        assert_int_equal(vv_crdt_doc_pending(d), 0);
        json_t *v = vv_crdt_doc_value(d);
        if (ref == NULL) {
            ref = v;
            continue;
        }
        if (!json_equal(ref, v))
            fail_msg("seed %llu: node %u has %zu characters, node 0 %zu", (unsigned long long)seed,
                     i, json_string_length(v), json_string_length(ref));
        json_decref(v);
    }
    assert_true(json_string_length(ref) >= (size_t)PIECES * PIECE);
    json_decref(ref);

    const struct vv_crdt_sync_stats *s0 =
        vv_crdt_engine_stats(((struct app *)vv_sim_app_of(sim, 0))->e);
    const struct vv_crdt_sync_stats *s1 =
        vv_crdt_engine_stats(((struct app *)vv_sim_app_of(sim, 1))->e);
    const struct vv_crdt_sync_stats *s2 =
        vv_crdt_engine_stats(((struct app *)vv_sim_app_of(sim, 2))->e);
    assert_true(s0->streams_sent >= 1);
    assert_true(s1->streams_received >= 1);
    assert_true(s1->streams_sent >= 1);
    assert_true(s2->streams_received >= 1);
    assert_int_equal(s0->too_large + s1->too_large, 0);
    assert_int_equal(s1->stream_bad_frames + s2->stream_bad_frames, 0);
    assert_int_equal(s0->stream_bytes_in_flight, 0);
    /* The links were full at times: sends were refused and the streams waited. */
    assert_true(vv_sim_node_counters(sim, 0)->msgs_refused > 0);
    fprintf(stderr,
            "seed %llu: %llu bytes delivered, %llu sends refused (back-pressure), streams "
            "0->1 %llu, 1->2 %llu, skipped %llu\n",
            (unsigned long long)seed, (unsigned long long)vv_sim_totals(sim)->bytes_delivered,
            (unsigned long long)vv_sim_totals(sim)->msgs_refused,
            (unsigned long long)s0->streams_sent, (unsigned long long)s1->streams_sent,
            (unsigned long long)(s0->streams_skipped + s1->streams_skipped));
    uint64_t h = vv_sim_trace_hash(sim);
    vv_sim_free(sim);
    return h;
}

static void test_five_mib_document_reaches_new_replicas(void **state)
{
    (void)state;
    uint64_t h1 = run_once();
    uint64_t h2 = run_once();
    assert_int_equal(h1, h2); /* one seed, one trace */
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    seed = vv_sim_seed_from_env(20261205);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_five_mib_document_reaches_new_replicas),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "failing seed: %llu (VV_SIM_SEED=%llu to replay)\n",
                (unsigned long long)seed, (unsigned long long)seed);
    return rc;
}
