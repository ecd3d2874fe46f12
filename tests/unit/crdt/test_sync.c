/*
 * The sync engine between two nodes wired through a net of two fake vv_envs (fake_env.h:
 * messages wait in the senders' outboxes and are delivered when the test pumps): sharing on one
 * side, auto-join on and off, updates from peers not joined, LEAVE, the counters, and the per-turn
 * work allowance with its bounded queue of deferred messages.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "../../tools/seq_pile.h"
#include "fake_env.h"
#include "vivim/crdt_sync.h"
#include "vivim/wire.h"

struct node {
    struct vv_fake_env f;
    struct vv_crdt_engine *e;
};

struct world {
    struct vv_fake_net net; /* messages wait in the senders' outboxes until pumped */
    struct node n[2];
};

/* The engine keeps one one-shot timer (its deferred-work turn) at a time. */
static uint64_t one_shot_at_a_time(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb,
                                   void *arg)
{
    if (r == 0)
        assert_int_equal(vv_fake_env_timers_pending(impl, true), 0);
    return vv_fake_env_default_ops.timer_start(impl, d, r, cb, arg);
}

/* Anti-entropy rounds never come within these tests (the period is 49 days): the tests drive
 * sync rounds themselves. */
#define NO_ANTI_ENTROPY_MS UINT32_MAX

static void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    vv_fake_net_init(&w->net);
    for (int i = 0; i < 2; i++) {
        struct node *n = &w->n[i];
        vv_fake_env_init(&n->f, (uint64_t)i + 1);
        n->f.ops.timer_start = one_shot_at_a_time;
        memset(n->f.id.node_id, 0xa0 + i, VV_NODE_ID_BYTES);
        vv_fake_net_add(&w->net, &n->f);
        n->e = vv_crdt_engine_new(&n->f.env, 0, NO_ANTI_ENTROPY_MS, NULL, NULL);
    }
}

/* Moves both clocks on without firing anything. */
static void jump(struct world *w, uint64_t ms)
{
    for (int i = 0; i < 2; i++)
        w->n[i].f.now_ms += ms;
}

/* Moves time on a millisecond at a time, firing one-shot timers, until none is pending. */
static void run_timers(struct world *w)
{
    while (vv_fake_env_timers_pending(&w->n[0].f, true) +
               vv_fake_env_timers_pending(&w->n[1].f, true) >
           0)
        vv_fake_net_advance(&w->net, 1);
}

static void pump(struct world *w)
{
    vv_fake_net_pump(&w->net);
}

static void world_free(struct world *w)
{
    pump(w);
    for (int i = 0; i < 2; i++)
        vv_crdt_engine_free(w->n[i].e);
    for (int i = 0; i < 2; i++)
        vv_fake_env_free(&w->n[i].f);
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
    assert_int_equal(vv_crdt_engine_join(a->e, "t", b->f.id.node_id), 0);
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
    assert_int_equal(vv_crdt_engine_leave(b->e, "t", a->f.id.node_id), 0);
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
    assert_int_equal(vv_crdt_engine_join(a->e, "c", b->f.id.node_id), 0);
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
    assert_int_equal(vv_crdt_engine_join(b->e, "c", a->f.id.node_id), 0);
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
        assert_int_equal(vv_crdt_engine_join(a->e, ids[i], b->f.id.node_id), 0);
    }
    pump(&w);
    assert_int_equal(vv_crdt_engine_count(b->e), 2);
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_refused, 1);
    /* A type clash on an existing document is a malformed message, and changes nothing. */
    assert_int_equal(vv_crdt_engine_create(a->e, "x", VV_CRDT_KIND_TEXT, NULL), 0);
    assert_int_equal(vv_crdt_engine_create(b->e, "x", VV_CRDT_KIND_MAP, NULL), 0);
    uint64_t bad = vv_crdt_engine_stats(b->e)->bad_messages;
    assert_int_equal(vv_crdt_engine_join(a->e, "x", b->f.id.node_id), 0);
    pump(&w);
    assert_int_equal(vv_crdt_engine_stats(b->e)->bad_messages, bad + 1);
    assert_int_equal(vv_crdt_doc_kind(vv_crdt_engine_find(b->e, "x")), VV_CRDT_KIND_MAP);
    world_free(&w);
}

/* Takes the one message in flight out of its sender's outbox, undelivered. */
static struct vv_fake_msg take(struct world *w)
{
    assert_int_equal(vv_fake_net_in_flight(&w->net), 1);
    struct vv_fake_msg m = {0};
    for (int i = 0; i < 2; i++)
        if (vv_fake_env_pop(&w->n[i].f, &m))
            break;
    return m;
}

static void deliver(struct node *to, struct node *from, struct vv_fake_msg m)
{
    assert_memory_equal(m.from, from->f.id.node_id, VV_NODE_ID_BYTES);
    vv_fake_env_deliver_msg(&to->f, &m);
}

/* A text UPDATE frame for doc carrying the quadratic pile of `agents` one-letter records. */
static uint8_t *pile_frame(const char *doc, uint32_t agents, size_t *len)
{
    size_t ul;
    uint8_t *u = vv_test_seq_pile(agents, agents, 1000, &ul);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_UPDATE, 0);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_bin(&pk, ul);
    msgpack_pack_bin_body(&pk, u, ul);
    free(u);
    uint8_t *f = vv_xmalloc(sb.size);
    memcpy(f, sb.data, sb.size);
    *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return f;
}

/* One costly update spends the turn's allowance: the messages after it wait for later turns,
 * in order, in a queue of at most 4,096; past that they are dropped and counted, and the next
 * sync round brings their content anyway. */
static void test_costly_messages_wait_for_later_turns_in_a_bounded_queue(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_crdt_engine_create(a->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    apply(a, "t", "{\"insert\":{\"pos\":0,\"text\":\"hello\"}}");
    assert_int_equal(vv_crdt_engine_join(a->e, "t", b->f.id.node_id), 0);
    pump(&w);
    assert_text(b, "t", "hello");

    /* A's next edit, held back from the queue to be delivered by hand. */
    apply(a, "t", "{\"insert\":{\"pos\":5,\"text\":\" world\"}}");
    struct vv_fake_msg edit = take(&w);

    /* 1,500 replicas at one place: about 1.1 million scan steps, accepted, and over the turn's
     * allowance; everything after it this turn waits. */
    size_t pl;
    uint8_t *pile = pile_frame("t", 1500, &pl);
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(b->e);
    vv_env_deliver(&b->f.env, a->f.id.node_id, VV_CHANNEL_CRDT, pile, pl);
    assert_int_equal(st->updates_received, 2);
    assert_true(st->integration_steps > 1000000);
    for (int i = 0; i < 5000; i++)
        vv_env_deliver(&b->f.env, a->f.id.node_id, VV_CHANNEL_CRDT, edit.data, edit.len);
    assert_int_equal(st->deferred_msgs, 4096);
    assert_int_equal(st->deferred_total, 4096);
    assert_int_equal(st->deferred_dropped, 5000 - 4096);
    assert_int_equal(st->updates_received, 2); /* nothing of them ran yet */
    assert_int_equal(vv_fake_env_timers_pending(&b->f, true), 1);

    /* Later turns work the queue off in order; the edit applies once, its repeats change
     * nothing. */
    run_timers(&w);
    assert_int_equal(st->deferred_msgs, 0);
    assert_int_equal(st->deferred_bytes, 0);
    assert_int_equal(st->updates_received, 2 + 4096);
    json_t *v = vv_crdt_doc_value(vv_crdt_engine_find(b->e, "t"));
    const char *text = json_string_value(v);
    assert_int_equal(strlen(text), 1500 + 11);
    assert_non_null(strstr(text, "hello world"));
    json_decref(v);

    /* Another costly message, then the queue holds a message when the engine is freed:
     * nothing leaks (cmocka's allocator checks). */
    vv_env_deliver(&b->f.env, a->f.id.node_id, VV_CHANNEL_CRDT, pile, pl);
    vv_env_deliver(&b->f.env, a->f.id.node_id, VV_CHANNEL_CRDT, edit.data, edit.len);
    vv_free(edit.data);
    vv_free(pile);
    world_free(&w);
}

/* A peer's updates whose dependency never comes are bounded across all documents (the
 * oldest dropped to make room, counted) and dropped after the age limit; the next sync round
 * brings the documents up to date anyway. */
static void test_buffered_updates_have_a_budget_across_documents_and_an_age_limit(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    vv_crdt_engine_set_pending_limits(b->e, 4, 1 << 20, 60000);
    const char *ids[] = {"t0", "t1", "t2"};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(vv_crdt_engine_create(a->e, ids[k], VV_CRDT_KIND_TEXT, NULL), 0);
        assert_int_equal(vv_crdt_engine_join(a->e, ids[k], b->f.id.node_id), 0);
    }
    pump(&w);
    /* Per document: the first edit is lost on the way, the next two wait for it at B. */
    for (int k = 0; k < 3; k++) {
        apply(a, ids[k], "{\"insert\":{\"pos\":0,\"text\":\"x\"}}");
        vv_free(take(&w).data);
        apply(a, ids[k], "{\"insert\":{\"pos\":1,\"text\":\"y\"}}");
        deliver(b, a, take(&w));
        jump(&w, 10);
        apply(a, ids[k], "{\"insert\":{\"pos\":2,\"text\":\"z\"}}");
        deliver(b, a, take(&w));
        jump(&w, 10);
    }
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(b->e);
    size_t held[3];
    for (int k = 0; k < 3; k++)
        held[k] = vv_crdt_doc_pending(vv_crdt_engine_find(b->e, ids[k]));
    assert_int_equal(held[0], 0); /* the oldest two went for the newest two */
    assert_int_equal(held[1], 2);
    assert_int_equal(held[2], 2);
    assert_int_equal(st->pending_updates, 4);
    assert_int_equal(st->pending_evicted, 2);
    assert_int_equal(st->updates_buffered, 6);

    /* A minute later nothing waits any more: the next update from the peer (or the
     * anti-entropy tick) expires them. */
    jump(&w, 60000);
    apply(a, ids[0], "{\"insert\":{\"pos\":3,\"text\":\"!\"}}");
    deliver(b, a, take(&w));
    for (int k = 1; k < 3; k++)
        assert_int_equal(vv_crdt_doc_pending(vv_crdt_engine_find(b->e, ids[k])), 0);
    assert_int_equal(st->pending_expired, 4);
    assert_int_equal(st->pending_updates, 1); /* the new one, which waits too */

    /* A sync round with A repairs every document. */
    for (int k = 0; k < 3; k++)
        assert_int_equal(vv_crdt_engine_sync(b->e, ids[k], a->f.id.node_id), 0);
    pump(&w);
    assert_text(b, "t0", "xyz!");
    assert_text(b, "t1", "xyz");
    assert_text(b, "t2", "xyz");
    assert_int_equal(st->pending_updates, 0);
    world_free(&w);
}

/* The updates that one update unblocks are retried within the turn's work allowance; the
 * rest in later turns, oldest first, until the document is whole. */
static void test_unblocked_updates_drain_across_turns(void **state)
{
    (void)state;
    enum { N = 800 };
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_crdt_engine_create(a->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    assert_int_equal(vv_crdt_engine_join(a->e, "t", b->f.id.node_id), 0);
    pump(&w);
    /* N edits of 400 characters each (about 800 KB of updates), the first held back. */
    char json[600];
    char text[401];
    text[400] = '\0';
    struct vv_fake_msg first = {0};
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 400; j++)
            text[j] = (char)('a' + (j * 7 + i + j / 26) % 26); /* no runs to compress */
        snprintf(json, sizeof(json), "{\"insert\":{\"pos\":%d,\"text\":\"%s\"}}", i * 400, text);
        apply(a, "t", json);
        struct vv_fake_msg m = take(&w);
        if (i == 0) {
            first = m;
        } else {
            deliver(b, a, m);
            run_timers(&w); /* a turn for each, as if they came over time */
        }
    }
    struct vv_crdt_doc *d = vv_crdt_engine_find(b->e, "t");
    assert_int_equal(vv_crdt_doc_pending(d), N - 1);
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(b->e);
    jump(&w, 1);
    deliver(b, a, first);
    /* This turn applied some of them, not all: the rest wait for the next turns. */
    size_t left = vv_crdt_doc_pending(d);
    assert_true(left > 0);
    assert_true(left < N - 1);
    assert_int_equal(vv_fake_env_timers_pending(&b->f, true), 1);
    run_timers(&w);
    assert_int_equal(vv_crdt_doc_pending(d), 0);
    assert_int_equal(st->pending_updates, 0);
    json_t *va = vv_crdt_doc_value(vv_crdt_engine_find(a->e, "t"));
    json_t *vb = vv_crdt_doc_value(d);
    assert_true(json_equal(va, vb));
    assert_int_equal(json_string_length(vb), (size_t)N * 400);
    json_decref(va);
    json_decref(vb);
    world_free(&w);
}

/* FNV-1a, the table's hash before it was keyed: what a peer can compute too. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211u;
    return h;
}

/*
 * A peer names documents (SYNC with auto_join creates them here); it can pick ids that an
 * unkeyed hash puts in one bucket, found by a brute force of a few million FNV steps. With
 * the keyed hash those ids spread out, and the longest chain stays short.
 */
static void test_document_ids_chosen_to_collide_do_not_share_one_chain(void **state)
{
    (void)state;
    enum { N = 2048 }; /* the table then has 2048 buckets: collide in the low 11 bits */
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0];
    char id[32];
    uint32_t made = 0;
    for (uint32_t k = 0; made < N; k++) {
        snprintf(id, sizeof(id), "flood-%u", k);
        if ((fnv1a(id) & (N - 1)) != 0)
            continue;
        assert_int_equal(vv_crdt_engine_create(a->e, id, VV_CRDT_KIND_SET, NULL), 0);
        made++;
    }
    assert_int_equal(vv_crdt_engine_count(a->e), N);
    /* Under FNV-1a every one of them is in bucket 0: a chain of 2048. */
    assert_true(vv__crdt_engine_longest_chain(a->e) <= 24);
    assert_non_null(vv_crdt_engine_find(a->e, id));
    world_free(&w);
}

/* A set or map answers "did this update change anything?" by encoding its whole state, twice:
 * that work counts against the turn like any other, so a burst of tiny updates to a large map
 * spreads over turns instead of holding one. */
static void test_tiny_updates_to_a_large_map_are_metered_by_its_state(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_crdt_engine_create(a->e, "m", VV_CRDT_KIND_MAP, NULL), 0);
    char op[256];
    for (int i = 0; i < 1000; i++) {
        snprintf(op, sizeof(op), "{\"put\":{\"key\":\"key-%04d\",\"value\":\"%0100d\"}}", i, i);
        apply(a, "m", op);
    }
    assert_int_equal(vv_crdt_engine_join(a->e, "m", b->f.id.node_id), 0);
    /* The first sync already meters a's answers: let the deferred ones run. */
    for (int i = 0; i < 4; i++) {
        pump(&w);
        run_timers(&w);
    }
    assert_true(vv_crdt_engine_stats(a->e)->deferred_total > 0);
    jump(&w, 10); /* a new turn for b */
    enum { EDITS = 10 };
    struct vv_fake_msg held[EDITS];
    for (int i = 0; i < EDITS; i++) {
        snprintf(op, sizeof(op), "{\"put\":{\"key\":\"key-%04d\",\"value\":\"new\"}}", i);
        apply(a, "m", op);
        held[i] = take(&w);
    }
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(b->e);
    uint64_t received = st->updates_received;
    uint64_t deferred = st->deferred_total;
    for (int i = 0; i < EDITS; i++)
        vv_env_deliver(&b->f.env, a->f.id.node_id, VV_CHANNEL_CRDT, held[i].data, held[i].len);
    /* The state is about 120 KB: each update costs about a megabyte of the allowance. */
    assert_int_equal(st->updates_received, received + 1);
    assert_int_equal(st->deferred_total, deferred + EDITS - 1);
    run_timers(&w);
    assert_int_equal(st->updates_received, received + EDITS);
    json_t *va = vv_crdt_doc_value(vv_crdt_engine_find(a->e, "m"));
    json_t *vb = vv_crdt_doc_value(vv_crdt_engine_find(b->e, "m"));
    assert_true(json_equal(va, vb));
    json_decref(va);
    json_decref(vb);
    for (int i = 0; i < EDITS; i++)
        vv_free(held[i].data);
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharing_on_one_side_is_enough),
        cmocka_unit_test(test_without_auto_join_both_sides_must_join),
        cmocka_unit_test(test_peer_created_documents_are_capped),
        cmocka_unit_test(test_costly_messages_wait_for_later_turns_in_a_bounded_queue),
        cmocka_unit_test(test_tiny_updates_to_a_large_map_are_metered_by_its_state),
        cmocka_unit_test(test_buffered_updates_have_a_budget_across_documents_and_an_age_limit),
        cmocka_unit_test(test_unblocked_updates_drain_across_turns),
        cmocka_unit_test(test_document_ids_chosen_to_collide_do_not_share_one_chain),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
