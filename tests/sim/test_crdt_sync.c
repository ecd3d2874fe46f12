/*
 * CRDT sync on the simulator: 50 replicas of four documents (text, counter, set, map) made by
 * one node whose access policy lets every other node but one write, each node sharing them
 * with a few neighbours only (a node joins its neighbours when a document reaches it),
 * editing concurrently through a partition of the network into two halves and while a fifth
 * of the nodes crash and come back empty; once the network heals, every replica converges
 * to the same values. The node left out of the policy, which makes documents of the same
 * names and shares them with its neighbours, gets nothing of theirs and changes nothing. A
 * writer the creator removes later learns it through its neighbours and stops; every other
 * node ends with the creator's last policy. And a writer sending hostile CRDT messages
 * changes nothing. Each scenario runs twice with one seed and must give one trace hash
 * (sim_test.h). A failing run prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "sim_test.h"
#include "vivim/crdt_sync.h"
#include "vivim/wire.h"

#define N_NODES           50
#define NEIGHBORS         3 /* each node dials this many; links are symmetric, so degree is ~6 */
#define EDIT_END_MS       90000
#define CREATOR           1 /* makes the documents; never crashes (the crashes hit multiples of 5) */
#define OUTSIDER          2 /* not in the policy: an impostor with documents of the same names */
#define OUTSIDER_START_MS 10000
#define REMOVED           13    /* a writer until the creator removes it, at REMOVE_AT_MS */
#define REMOVE_AT_MS      60000 /* after the partition healed and the crashed nodes returned */
/* Each scenario takes most of a minute under the sanitizers: the second run replays the
 * first 30 s (joins, edits, the partition, the first crashes) rather than all 120 s, and must
 * reach the trace hash the full run had there. */
#define REPLAY_MS 30000

static uint64_t seed;
static const char *const doc_ids[] = {"text:1", "count:1", "set:1", "map:1"};
static const enum vv_crdt_kind doc_kinds[] = {VV_CRDT_KIND_TEXT, VV_CRDT_KIND_COUNTER,
                                              VV_CRDT_KIND_SET, VV_CRDT_KIND_MAP};

struct app {
    struct vv_sim *sim;
    struct vv_env *env;
    uint32_t index;
    struct vv_crdt_engine *e;
    uint32_t neighbors[NEIGHBORS];
    uint64_t edit_timer, dial_timer, evil_timer, make_timer;
    bool evil;
};

static uint32_t evil_node = UINT32_MAX;
static uint32_t outsider = UINT32_MAX;
static uint32_t removed = UINT32_MAX;

/* A document reached this node (a neighbour's policy named it): share it with our own
 * neighbours in turn, so it spreads over the whole graph. */
static void on_created(void *arg, struct vv_crdt_doc *d)
{
    struct app *a = arg;
    for (int k = 0; k < NEIGHBORS; k++) {
        const uint8_t *n = vv_sim_node_id(a->sim, a->neighbors[k]);
        if (vv_crdt_policy_access(vv_crdt_engine_policy(a->e, vv_crdt_doc_id(d)), n) !=
            VV_CRDT_ACCESS_NONE)
            assert_int_equal(vv_crdt_engine_join(a->e, vv_crdt_doc_id(d), n), 0);
    }
}

static void edit(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    if (vv_env_now(env) > EDIT_END_MS)
        return;
    char err[128];
    json_t *op = NULL;
    const char *id = doc_ids[vv_env_random_below(env, 4)];
    struct vv_crdt_doc *d = vv_crdt_engine_find(a->e, id);
    if (d == NULL)
        return; /* not here yet (or, after a crash, not again yet) */
    switch (vv_crdt_doc_kind(d)) {
    case VV_CRDT_KIND_TEXT: {
        json_t *v = vv_crdt_doc_value(d);
        size_t len = json_string_length(v); /* ASCII only here: bytes = characters */
        json_decref(v);
        if (len > 0 && vv_env_random_below(env, 3) == 0) {
            size_t pos = vv_env_random_below(env, len);
            op = json_pack(
                "{s:{s:I, s:I}}", "delete", "pos", (json_int_t)pos, "len",
                (json_int_t)(1 + vv_env_random_below(env, len - pos < 3 ? len - pos : 3)));
        } else {
            char text[8];
            snprintf(text, sizeof(text), "%c%u",
                     a->index == outsider ? 'Z' : 'a' + (int)(a->index % 26),
                     (unsigned)vv_env_random_below(env, 10));
            op = json_pack("{s:{s:I, s:s}}", "insert", "pos",
                           (json_int_t)vv_env_random_below(env, len + 1), "text", text);
        }
        break;
    }
    case VV_CRDT_KIND_COUNTER: {
        int n = (int)vv_env_random_below(env, 7) - 3;
        op = json_pack("{s:i}", "increment", n != 0 ? n : 1);
        break;
    }
    case VV_CRDT_KIND_SET:
        op = json_pack("{s:i}", vv_env_random_below(env, 3) ? "add" : "remove",
                       (int)vv_env_random_below(env, 20));
        break;
    default: {
        char key[8];
        snprintf(key, sizeof(key), "k%u", (unsigned)vv_env_random_below(env, 10));
        if (vv_env_random_below(env, 4) == 0)
            op = json_pack("{s:{s:s}}", "del", "key", key);
        else
            op = json_pack("{s:{s:s, s:i}}", "put", "key", key, "value", (int)a->index);
        break;
    }
    }
    int rc = vv_crdt_engine_op(a->e, id, op, err, sizeof(err));
    assert_true(rc == 0 || rc == VV_ECRDT_RANGE || (rc == VV_ECRDT_DENIED && a->index == removed));
    json_decref(op);
}

static void dial(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    for (int k = 0; k < NEIGHBORS; k++)
        vv_env_connect(env, vv_sim_node_id(a->sim, a->neighbors[k]), NULL);
}

/* A hostile peer: well-formed frames with hostile contents, and garbage. */
static void evil_tick(struct vv_env *env, void *arg)
{
    struct app *a = arg;
    for (int k = 0; k < NEIGHBORS; k++) {
        const uint8_t *to = vv_sim_node_id(a->sim, a->neighbors[k]);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_CRDT_MSG_UPDATE, 0);
        msgpack_pack_array(&pk, 3);
        msgpack_pack_str(&pk, 6);
        msgpack_pack_str_body(&pk, "text:1", 6);
        uint8_t junk[40];
        vv_env_random(env, junk, sizeof(junk));
        junk[0] = 1; /* a plausible version byte, then noise */
        msgpack_pack_bin(&pk, sizeof(junk));
        msgpack_pack_bin_body(&pk, junk, sizeof(junk));
        msgpack_pack_bin(&pk, VV_NODE_ID_BYTES); /* the document of the right creator */
        msgpack_pack_bin_body(&pk, vv_sim_node_id(a->sim, CREATOR), VV_NODE_ID_BYTES);
        vv_env_send(env, to, VV_CHANNEL_CRDT, (const uint8_t *)sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        static const uint8_t garbage[] = {0x95, 0x01, 0x00, 0xcd, 0x03, 0x01, 0x00, 0xc1};
        vv_env_send(env, to, VV_CHANNEL_CRDT, garbage, sizeof(garbage));
    }
}

/*
 * The creator lets every node but the outsider write; the outsider, later, the same with
 * itself as creator of documents of the same names. By then its neighbours hold the
 * creator's documents (a node holds the first of two same-named documents that reaches it).
 */
static void make_docs(struct vv_env *env, void *arg)
{
    (void)env;
    struct app *a = arg;
    a->make_timer = 0;
    static uint8_t writers[N_NODES][VV_NODE_ID_BYTES];
    size_t n = 0;
    for (uint32_t i = 0; i < N_NODES; i++)
        if (i != outsider || a->index == outsider)
            memcpy(writers[n++], vv_sim_node_id(a->sim, i), VV_NODE_ID_BYTES);
    for (int d = 0; d < 4; d++) {
        assert_int_equal(vv_crdt_engine_create(a->e, doc_ids[d], doc_kinds[d], NULL), 0);
        assert_int_equal(vv_crdt_engine_set_access(a->e, doc_ids[d], NULL, 0, writers[0], n), 0);
        on_created(a, vv_crdt_engine_find(a->e, doc_ids[d])); /* joins its neighbours */
    }
}

/* The creator removes one writer: version 3 of every policy. */
static void remove_writer(struct vv_env *env, void *arg)
{
    (void)env;
    struct app *a = arg;
    a->make_timer = 0;
    static uint8_t writers[N_NODES][VV_NODE_ID_BYTES];
    size_t n = 0;
    for (uint32_t i = 0; i < N_NODES; i++)
        if (i != outsider && i != removed)
            memcpy(writers[n++], vv_sim_node_id(a->sim, i), VV_NODE_ID_BYTES);
    for (int d = 0; d < 4; d++)
        assert_int_equal(vv_crdt_engine_set_access(a->e, doc_ids[d], NULL, 0, writers[0], n), 0);
}

static void *app_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct app *a = vv_xcalloc(1, sizeof(*a));
    a->sim = sim;
    a->env = env;
    a->index = index;
    static const struct vv_crdt_sync_cbs cbs = {.created = on_created};
    a->e = vv_crdt_engine_new(env, 0, 2000, &cbs, a); /* a fresh replica id per start */
    /* Neighbours: the next node on a ring, and two chosen by a hash of the index, so the
     * graph is connected and the same on every restart. */
    a->neighbors[0] = (index + 1) % N_NODES;
    a->neighbors[1] = (index * 7 + 3) % N_NODES;
    a->neighbors[2] = (index * 13 + 11) % N_NODES;
    for (int k = 0; k < NEIGHBORS; k++)
        if (a->neighbors[k] == index)
            a->neighbors[k] = (index + 2) % N_NODES;
    if (index == CREATOR) {
        make_docs(env, a);
        if (removed != UINT32_MAX)
            a->make_timer = vv_env_timer_start(env, REMOVE_AT_MS, 0, remove_writer, a);
    } else if (index == outsider)
        a->make_timer = vv_env_timer_start(env, OUTSIDER_START_MS, 0, make_docs, a);
    a->dial_timer = vv_env_timer_start(env, 10, 1000, dial, a);
    if (index == evil_node)
        a->evil_timer = vv_env_timer_start(env, 500, 700, evil_tick, a);
    else
        a->edit_timer = vv_env_timer_start(env, 100 + vv_env_random_below(env, 500),
                                           300 + vv_env_random_below(env, 400), edit, a);
    return a;
}

static void app_destroy(void *app, void *arg)
{
    (void)arg;
    struct app *a = app;
    vv_env_timer_cancel(a->env, a->edit_timer);
    vv_env_timer_cancel(a->env, a->dial_timer);
    vv_env_timer_cancel(a->env, a->evil_timer);
    vv_env_timer_cancel(a->env, a->make_timer);
    vv_crdt_engine_free(a->e);
    vv_free(a);
}

static void check_converged(struct vv_sim *sim, uint32_t skip)
{
    json_t *ref[4] = {0};
    uint32_t ref_node = UINT32_MAX;
    for (uint32_t i = 0; i < N_NODES; i++) {
        if (i == skip || !vv_sim_node_up(sim, i))
            continue;
        struct app *a = vv_sim_app_of(sim, i);
        if (i == outsider)
            continue; /* checked by its caller */
        for (int d = 0; d < 4; d++) {
            struct vv_crdt_doc *doc = vv_crdt_engine_find(a->e, doc_ids[d]);
            assert_non_null(doc);
            assert_int_equal(vv_crdt_doc_pending(doc), 0);
            json_t *v = vv_crdt_doc_value(doc);
            if (ref[d] == NULL) {
                ref[d] = v;
                ref_node = i;
                continue;
            }
            if (!json_equal(ref[d], v)) {
                char *x = json_dumps(ref[d], JSON_COMPACT), *y = json_dumps(v, JSON_COMPACT);
                fail_msg("seed %llu: %s differs between node %u and node %u:\n%.300s\n%.300s",
                         (unsigned long long)seed, doc_ids[d], ref_node, i, x, y);
            }
            json_decref(v);
        }
    }
    /* Something happened in every document, and nothing of the outsider's. */
    assert_true(json_string_length(ref[0]) > 0);
    assert_null(strchr(json_string_value(ref[0]), 'Z'));
    assert_true(json_array_size(ref[2]) > 0);
    assert_true(json_object_size(ref[3]) > 0);
    for (int d = 0; d < 4; d++)
        json_decref(ref[d]);
}

static void partition_and_churn(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    evil_node = UINT32_MAX;
    outsider = OUTSIDER;
    removed = REMOVED;
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, N_NODES);
    cfg.n_regions = 3;
    cfg.loss = 0.01;
    struct vv_sim_app app = {app_create, app_destroy, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    /* Two halves from 20 s to 45 s. */
    static uint32_t halves[N_NODES];
    for (uint32_t i = 0; i < N_NODES; i++)
        halves[i] = i < N_NODES / 2 ? 0 : 1;
    vv_sim_partition_at(sim, 20000, halves);
    vv_sim_partition_at(sim, 45000, NULL);
    /* A fifth of the nodes crash and return with nothing: they catch up from neighbours. */
    for (uint32_t i = 0; i < N_NODES; i += 5) {
        vv_sim_crash_at(sim, 30000 + i * 100, i);
        vv_sim_restart_at(sim, 50000 + i * 100, i);
    }
    if (!vv_sim_run_to(run, sim, EDIT_END_MS + 30000))
        goto out;
    check_converged(sim, REMOVED);
    /* The removal reached every node, most of them through others (relayed, or brought by
     * the versions in SYNC); the removed node dropped its peers and the others dropped it. */
    for (uint32_t i = 0; i < N_NODES; i++) {
        struct app *a = vv_sim_app_of(sim, i);
        if (i == OUTSIDER)
            continue;
        for (int d = 0; d < 4; d++) {
            const struct vv_crdt_policy *p = vv_crdt_engine_policy(a->e, doc_ids[d]);
            assert_non_null(p);
            assert_int_equal(p->version, 3);
            const uint8_t *peers;
            size_t n = vv_crdt_engine_peers(a->e, doc_ids[d], &peers);
            if (i == REMOVED) {
                assert_int_equal(n, 0);
                continue;
            }
            for (size_t k = 0; k < n; k++)
                assert_memory_not_equal(peers + k * VV_NODE_ID_BYTES, vv_sim_node_id(sim, REMOVED),
                                        VV_NODE_ID_BYTES);
        }
    }
    /* The outsider's own documents hold only its own edits, and its neighbours refused its
     * policy, its sync rounds and its updates. */
    struct app *o = vv_sim_app_of(sim, OUTSIDER);
    json_t *ov = vv_crdt_doc_value(vv_crdt_engine_find(o->e, doc_ids[0]));
    for (const char *c = json_string_value(ov); *c; c++)
        assert_true(*c == 'Z' || (*c >= '0' && *c <= '9'));
    json_decref(ov);
    uint64_t refused[VV_CRDT_REFUSAL_COUNT] = {0};
    for (uint32_t i = 0; i < N_NODES; i++)
        for (int r = 0; r < VV_CRDT_REFUSAL_COUNT; r++)
            refused[r] +=
                vv_crdt_engine_stats(((struct app *)vv_sim_app_of(sim, i))->e)->refused[r];
    assert_true(refused[VV_CRDT_REFUSED_CREATOR] > 0);
    assert_true(refused[VV_CRDT_REFUSED_READ] > 0);
    assert_true(refused[VV_CRDT_REFUSED_WRITE] > 0);
    fprintf(stderr, "seed %llu: %llu messages, %llu bytes delivered\n",
            (unsigned long long)run->seed, (unsigned long long)vv_sim_totals(sim)->msgs_delivered,
            (unsigned long long)vv_sim_totals(sim)->bytes_delivered);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_fifty_replicas_converge_through_partition_and_churn(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(partition_and_churn, NULL, seed, REPLAY_MS, false);
}

static void hostile_peer(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    evil_node = 7; /* a writer: its junk reaches the document decoders */
    outsider = UINT32_MAX;
    removed = UINT32_MAX;
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, N_NODES);
    struct vv_sim_app app = {app_create, app_destroy, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);
    if (!vv_sim_run_to(run, sim, EDIT_END_MS + 30000))
        goto out;
    check_converged(sim, evil_node);
    uint64_t bad = 0, rejected = 0;
    for (uint32_t i = 0; i < N_NODES; i++) {
        struct app *a = vv_sim_app_of(sim, i);
        bad += vv_crdt_engine_stats(a->e)->bad_messages;
        rejected += vv_crdt_engine_stats(a->e)->updates_rejected;
    }
    assert_true(bad > 0);
    assert_true(rejected > 0);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_hostile_peer_changes_nothing(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(hostile_peer, NULL, seed + 1, REPLAY_MS, false);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    seed = vv_sim_seed_from_env(20261124);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifty_replicas_converge_through_partition_and_churn),
        cmocka_unit_test(test_hostile_peer_changes_nothing),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "failing seed: %llu (VV_SIM_SEED=%llu to replay)\n",
                (unsigned long long)seed, (unsigned long long)seed);
    return rc;
}
