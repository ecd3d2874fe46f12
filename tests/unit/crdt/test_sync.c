/*
 * The sync engine between two nodes wired through a net of two fake vv_envs (fake_env.h:
 * messages wait in the senders' outboxes and are delivered when the test pumps): sharing on one
 * side, auto-join on and off, updates from peers not joined, LEAVE, the counters, the per-turn work
 * allowance with its bounded queue of deferred messages, and documents' access policies (who reads,
 * who writes, forged and stale policies, changes reaching the peers).
 */
#include "vv_test.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "../../tools/seq_pile.h"
#include "fake_env.h"
#include "vivim/crdt_sync.h"
#include "vivim/wire.h"

/* A message held back from the net, to be delivered by hand. */
struct msg {
    uint8_t *data;
    size_t len;
};

struct node {
    struct vv_fake_env f; /* a real Ed25519 identity; node_id = SHA-256(public key) */
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
        vv_fake_env_init(&n->f, (uint64_t)i + 1); /* the same keys every run */
        n->f.ops.timer_start = one_shot_at_a_time;
        uint8_t derived[VV_NODE_ID_BYTES];
        vv_identity_node_id(n->f.id.public_key, derived);
        assert_memory_equal(derived, n->f.id.node_id, VV_NODE_ID_BYTES);
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

static size_t in_flight(struct world *w)
{
    return vv_fake_net_in_flight(&w->net);
}

static struct msg take(struct world *w);

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

/* The creator a gives b access to doc (b alone besides a), and shares doc with it. */
static void share(struct node *a, const char *doc, struct node *b, enum vv_crdt_access access)
{
    const uint8_t *id = b->f.id.node_id;
    bool w = access == VV_CRDT_ACCESS_WRITE;
    assert_int_equal(vv_crdt_engine_set_access(a->e, doc, w ? NULL : id, !w, w ? id : NULL, w), 0);
    assert_int_equal(vv_crdt_engine_join(a->e, doc, id), 0);
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
    share(a, "t", b, VV_CRDT_ACCESS_WRITE);
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
    share(a, "c", b, VV_CRDT_ACCESS_WRITE);
    pump(&w);
    assert_null(vv_crdt_engine_find(b->e, "c")); /* B did not take it */
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_refused, 1);
    /* B's own document, shared with A: A joined B, but B has not joined A, so A's sync
     * rounds and updates are refused at B. */
    assert_int_equal(vv_crdt_engine_create(b->e, "d", VV_CRDT_KIND_COUNTER, NULL), 0);
    const uint8_t *aid = a->f.id.node_id;
    assert_int_equal(vv_crdt_engine_set_access(b->e, "d", NULL, 0, aid, 1), 0);
    vv_crdt_engine_set_auto_join(b->e, true);
    assert_int_equal(vv_crdt_engine_join(b->e, "d", aid), 0);
    pump(&w);
    assert_non_null(vv_crdt_engine_find(a->e, "d"));
    assert_int_equal(vv_crdt_engine_leave(b->e, "d", aid), 0); /* B stops sharing: LEAVE */
    vv_crdt_engine_set_auto_join(b->e, false);
    pump(&w);
    apply(a, "d", "{\"increment\":1}");
    assert_int_equal(vv_crdt_engine_join(a->e, "d", b->f.id.node_id), 0);
    pump(&w);
    apply(a, "d", "{\"increment\":1}"); /* sent to B, which ignores it */
    pump(&w);
    json_t *v = vv_crdt_doc_value(vv_crdt_engine_find(b->e, "d"));
    assert_int_equal(json_integer_value(v), 0);
    json_decref(v);
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_refused, 2);
    /* B joins A: now they sync, both ways. */
    assert_int_equal(vv_crdt_engine_join(b->e, "d", aid), 0);
    pump(&w);
    apply(b, "d", "{\"increment\":10}");
    pump(&w);
    for (int i = 0; i < 2; i++) {
        v = vv_crdt_doc_value(vv_crdt_engine_find(w.n[i].e, "d"));
        assert_int_equal(json_integer_value(v), 12);
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
        share(a, ids[i], b, VV_CRDT_ACCESS_WRITE);
    }
    pump(&w);
    assert_int_equal(vv_crdt_engine_count(b->e), 2);
    assert_int_equal(vv_crdt_engine_stats(b->e)->docs_refused, 1);
    /* A document of the same name made by another node (of another type, too) is not
     * replaced: the policy of another creator is refused, and so is its sender. */
    assert_int_equal(vv_crdt_engine_create(a->e, "x", VV_CRDT_KIND_TEXT, NULL), 0);
    assert_int_equal(vv_crdt_engine_create(b->e, "x", VV_CRDT_KIND_MAP, NULL), 0);
    share(a, "x", b, VV_CRDT_ACCESS_WRITE);
    pump(&w);
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(b->e);
    assert_int_equal(st->refused[VV_CRDT_REFUSED_CREATOR], 1);
    assert_int_equal(st->refused[VV_CRDT_REFUSED_READ], 1);
    assert_int_equal(vv_crdt_doc_kind(vv_crdt_engine_find(b->e, "x")), VV_CRDT_KIND_MAP);
    world_free(&w);
}

/* A text UPDATE frame for doc (of creator) carrying the quadratic pile of `agents` one-letter
 * records. */
static uint8_t *pile_frame(const char *doc, const uint8_t *creator, uint32_t agents, size_t *len)
{
    size_t ul;
    uint8_t *u = vv_test_seq_pile(agents, agents, 1000, &ul);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_UPDATE, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_bin(&pk, ul);
    msgpack_pack_bin_body(&pk, u, ul);
    msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
    msgpack_pack_bin_body(&pk, creator, VV_NODE_ID_BYTES);
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
    share(a, "t", b, VV_CRDT_ACCESS_WRITE);
    pump(&w);
    assert_text(b, "t", "hello");

    /* A's next edit, held back from the queue to be delivered by hand. */
    apply(a, "t", "{\"insert\":{\"pos\":5,\"text\":\" world\"}}");
    assert_int_equal(in_flight(&w), 1);
    struct msg edit = take(&w);

    /* 1,500 replicas at one place: about 1.1 million scan steps, accepted, and over the turn's
     * allowance; everything after it this turn waits. */
    size_t pl;
    uint8_t *pile = pile_frame("t", a->f.id.node_id, 1500, &pl);
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

/* Takes the message A just sent out of the queue, undelivered. */
static struct msg take(struct world *w)
{
    assert_int_equal(in_flight(w), 1);
    struct vv_fake_msg m;
    assert_true(vv_fake_env_pop(&w->n[0].f, &m));
    return (struct msg){.data = m.data, .len = m.len};
}

static void deliver(struct node *to, struct node *from, struct msg m)
{
    vv_env_deliver(&to->f.env, from->f.id.node_id, VV_CHANNEL_CRDT, m.data, m.len);
    vv_free(m.data);
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
        share(a, ids[k], b, VV_CRDT_ACCESS_WRITE);
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
    share(a, "t", b, VV_CRDT_ACCESS_WRITE);
    pump(&w);
    /* N edits of 400 characters each (about 800 KB of updates), the first held back. */
    char json[600];
    char text[401];
    text[400] = '\0';
    struct msg first = {0};
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 400; j++)
            text[j] = (char)('a' + (j * 7 + i + j / 26) % 26); /* no runs to compress */
        snprintf(json, sizeof(json), "{\"insert\":{\"pos\":%d,\"text\":\"%s\"}}", i * 400, text);
        apply(a, "t", json);
        struct msg m = take(&w);
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
    share(a, "m", b, VV_CRDT_ACCESS_WRITE);
    /* The first sync already meters a's answers: let the deferred ones run. */
    for (int i = 0; i < 4; i++) {
        pump(&w);
        run_timers(&w);
    }
    assert_true(vv_crdt_engine_stats(a->e)->deferred_total > 0);
    jump(&w, 10); /* a new turn for b */
    enum { EDITS = 10 };
    struct msg held[EDITS];
    for (int i = 0; i < EDITS; i++) {
        snprintf(op, sizeof(op), "{\"put\":{\"key\":\"key-%04d\",\"value\":\"new\"}}", i);
        apply(a, "m", op);
        assert_int_equal(in_flight(&w), 1);
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

/* A frame of the CRDT channel: [docId, bin] (POLICY), or [docId, bin, creator] (UPDATE) when
 * creator is not NULL. */
static struct msg frame_id_bin(uint16_t type, const char *doc, const uint8_t *b, size_t n,
                               const uint8_t *creator)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, 0);
    msgpack_pack_array(&pk, creator ? 3 : 2);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, b, n);
    if (creator) {
        msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
        msgpack_pack_bin_body(&pk, creator, VV_NODE_ID_BYTES);
    }
    struct msg m = {.data = vv_xmalloc(sb.size), .len = sb.size};
    memcpy(m.data, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

/* An UPDATE for text doc (of creator) inserting s at 0, made by a replica of its own (as a
 * peer that writes without leave would). */
static struct msg forged_text_update(const char *doc, const uint8_t *creator, const char *s)
{
    struct vv_crdt_doc *d = vv_crdt_doc_new(doc, VV_CRDT_KIND_TEXT, 0x7777);
    struct vv_hlc clock;
    vv_hlc_init(&clock, 0x7777);
    char json[128], err[128];
    snprintf(json, sizeof(json), "{\"insert\":{\"pos\":0,\"text\":\"%s\"}}", s);
    json_t *op = json_loads(json, 0, NULL);
    uint8_t *u;
    size_t ul;
    assert_int_equal(vv_crdt_doc_op(d, op, &clock, 1, &u, &ul, err, sizeof(err)), 0);
    json_decref(op);
    struct msg m = frame_id_bin(VV_CRDT_MSG_UPDATE, doc, u, ul, creator);
    vv_free(u);
    vv_crdt_doc_free(d);
    return m;
}

/* A SYNC frame: [docId, type, state vector, reply, version, creator] (what a peer sends to
 * start a round). */
static struct msg sync_frame(const char *doc, enum vv_crdt_kind kind, const uint8_t *creator)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_SYNC, 0);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_uint8(&pk, (uint8_t)kind);
    msgpack_pack_bin(&pk, 0);
    msgpack_pack_true(&pk);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
    msgpack_pack_bin_body(&pk, creator, VV_NODE_ID_BYTES);
    struct msg m = {.data = vv_xmalloc(sb.size), .len = sb.size};
    memcpy(m.data, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

/* Delivers every queued message to its node except those for `drop` (which never hear). */
static void pump_except(struct world *w, int drop)
{
    while (in_flight(w) > 0) {
        int to = -1;
        for (int i = 0; i < 2; i++)
            if (vv_fake_env_outbox_len(&w->n[1 - i].f) > 0 &&
                (to < 0 || vv_fake_env_peek(&w->n[1 - i].f, 0)->seq <
                               vv_fake_env_peek(&w->n[1 - to].f, 0)->seq))
                to = i;
        struct vv_fake_msg m;
        assert_true(vv_fake_env_pop(&w->n[1 - to].f, &m));
        assert_memory_equal(m.peer, w->n[to].f.id.node_id, VV_NODE_ID_BYTES);
        if (to != drop)
            vv_fake_env_deliver_msg(&w->n[to].f, &m);
        else
            vv_fake_msg_free(&m);
    }
}

/* A connected node that the creator did not let in learns nothing of the document (a SYNC
 * for it is refused, with or without a policy of its own) and cannot change it. */
static void test_peer_not_in_the_policy_gets_nothing_and_cannot_write(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_crdt_engine_create(a->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    apply(a, "t", "{\"insert\":{\"pos\":0,\"text\":\"secret\"}}");
    /* The creator cannot share it with B before B is in the policy. */
    assert_int_equal(vv_crdt_engine_join(a->e, "t", b->f.id.node_id), VV_ECRDT_DENIED);
    assert_int_equal(in_flight(&w), 0); /* nothing sent */
    /* B asks for it by name: refused, nothing comes back. */
    struct msg sync = sync_frame("t", VV_CRDT_KIND_TEXT, a->f.id.node_id);
    deliver(a, b, sync);
    assert_int_equal(in_flight(&w), 0);
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(a->e);
    assert_int_equal(st->refused[VV_CRDT_REFUSED_READ], 1);
    const uint8_t *peers;
    assert_int_equal(vv_crdt_engine_peers(a->e, "t", &peers), 0);
    /* B makes a document of that name itself, lets A in and syncs: A refuses B's policy (A
     * knows the creator of "t") and B's sync, and sends nothing of its own document. */
    assert_int_equal(vv_crdt_engine_create(b->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    assert_int_equal(vv_crdt_engine_set_access(b->e, "t", NULL, 0, a->f.id.node_id, 1), 0);
    assert_int_equal(vv_crdt_engine_join(b->e, "t", a->f.id.node_id), 0);
    pump(&w);
    assert_int_equal(st->refused[VV_CRDT_REFUSED_CREATOR], 1);
    assert_int_equal(st->refused[VV_CRDT_REFUSED_READ], 2);
    assert_text(b, "t", "");
    /* B's writes, through its own document or forged by hand, are refused. */
    apply(b, "t", "{\"insert\":{\"pos\":0,\"text\":\"vandal\"}}");
    pump(&w);
    deliver(a, b, forged_text_update("t", a->f.id.node_id, "forged"));
    assert_int_equal(st->refused[VV_CRDT_REFUSED_WRITE], 2);
    assert_int_equal(st->updates_received, 0);
    assert_text(a, "t", "secret");
    /* Its SYNC for a document A does not hold creates nothing there. */
    deliver(a, b, sync_frame("other", VV_CRDT_KIND_SET, b->f.id.node_id));
    assert_null(vv_crdt_engine_find(a->e, "other"));
    assert_int_equal(st->refused[VV_CRDT_REFUSED_UNKNOWN], 1);
    assert_int_equal(st->docs_created_by_peers, 0);
    world_free(&w);
}

/* A reader gets the document and every later edit, but cannot write: its own operations
 * fail, and its updates are refused. Promoted to writer, its edits reach the creator;
 * removed, it hears nothing more. Each change reaches it as a new policy version. */
static void test_readers_read_writers_write_and_changes_propagate(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    char err[128];
    assert_int_equal(vv_crdt_engine_create(a->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    apply(a, "t", "{\"insert\":{\"pos\":0,\"text\":\"news\"}}");
    share(a, "t", b, VV_CRDT_ACCESS_READ);
    pump(&w);
    assert_text(b, "t", "news");
    const struct vv_crdt_policy *pb = vv_crdt_engine_policy(b->e, "t");
    assert_non_null(pb);
    assert_int_equal(pb->version, 2);
    assert_memory_equal(pb->creator, a->f.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(vv_crdt_policy_access(pb, b->f.id.node_id), VV_CRDT_ACCESS_READ);
    apply(a, "t", "{\"insert\":{\"pos\":4,\"text\":\"!\"}}");
    pump(&w);
    assert_text(b, "t", "news!");
    /* B may not write: locally refused, and a forged update is refused at A. */
    json_t *op = json_loads("{\"insert\":{\"pos\":0,\"text\":\"x\"}}", 0, NULL);
    assert_int_equal(vv_crdt_engine_op(b->e, "t", op, err, sizeof(err)), VV_ECRDT_DENIED);
    assert_text(b, "t", "news!");
    deliver(a, b, forged_text_update("t", a->f.id.node_id, "fake "));
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(a->e);
    assert_int_equal(st->refused[VV_CRDT_REFUSED_WRITE], 1);
    assert_text(a, "t", "news!");
    /* A promotes B: version 3 reaches B, and B's edits reach A. */
    assert_int_equal(vv_crdt_engine_set_access(a->e, "t", NULL, 0, b->f.id.node_id, 1), 0);
    pump(&w);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 3);
    assert_int_equal(vv_crdt_engine_op(b->e, "t", op, err, sizeof(err)), 0);
    pump(&w);
    assert_text(a, "t", "xnews!");
    assert_int_equal(vv_crdt_engine_stats(b->e)->policies_accepted, 2); /* v2, v3 */
    /* A removes B: B learns it (version 4) and cannot write any more; A dropped B, so A's
     * edits do not reach it; B stops syncing (it drops A), and a sync round it asks for by
     * hand is refused. */
    assert_int_equal(vv_crdt_engine_set_access(a->e, "t", NULL, 0, NULL, 0), 0);
    pump(&w);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 4);
    const uint8_t *peers;
    assert_int_equal(vv_crdt_engine_peers(a->e, "t", &peers), 0);
    assert_int_equal(vv_crdt_engine_op(b->e, "t", op, err, sizeof(err)), VV_ECRDT_DENIED);
    assert_int_equal(vv_crdt_engine_peers(b->e, "t", &peers), 0);
    apply(a, "t", "{\"insert\":{\"pos\":0,\"text\":\"private \"}}");
    assert_int_equal(vv_crdt_engine_sync(b->e, "t", a->f.id.node_id), VV_ECRDT_DENIED);
    deliver(a, b, sync_frame("t", VV_CRDT_KIND_TEXT, a->f.id.node_id));
    pump(&w);
    assert_text(b, "t", "xnews!");
    assert_int_equal(st->refused[VV_CRDT_REFUSED_READ], 1);
    json_decref(op);
    world_free(&w);
}

/* Policies that are not the creator's newest are refused and change nothing: malformed, a
 * bad signature, another creator, an older version, one for a document we lack that does not
 * name us. A node that missed a change catches up from the version its peer's SYNC shows. */
static void test_forged_and_stale_policies_are_refused(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_crdt_engine_create(a->e, "t", VV_CRDT_KIND_TEXT, NULL), 0);
    const struct vv_crdt_policy *p1 = vv_crdt_engine_policy(a->e, "t");
    uint8_t *v1 = vv_xmalloc(p1->len);
    size_t v1_len = p1->len;
    memcpy(v1, p1->bytes, v1_len);
    share(a, "t", b, VV_CRDT_ACCESS_WRITE); /* version 2 */
    pump(&w);
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(b->e);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 2);

    /* Version 1, replayed: older, refused; A hears of it and sends version 2 back. */
    deliver(b, a, frame_id_bin(VV_CRDT_MSG_POLICY, "t", v1, v1_len, NULL));
    assert_int_equal(st->refused[VV_CRDT_REFUSED_STALE], 1);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 2);
    pump(&w);

    /* Version 3 made by A with one signature bit flipped: forged. So is garbage, and a
     * valid policy sent under another document's id. */
    struct vv_crdt_policy *p3;
    assert_int_equal(vv_crdt_policy_make(&a->f.env, "t", VV_CRDT_KIND_TEXT, 0, 3, b->f.id.node_id,
                                         1, NULL, 0, &p3),
                     0);
    p3->bytes[p3->len - 1] ^= 1;
    deliver(b, a, frame_id_bin(VV_CRDT_MSG_POLICY, "t", p3->bytes, p3->len, NULL));
    p3->bytes[p3->len - 1] ^= 1;
    deliver(b, a, frame_id_bin(VV_CRDT_MSG_POLICY, "t", (const uint8_t *)"junk", 4, NULL));
    deliver(b, a, frame_id_bin(VV_CRDT_MSG_POLICY, "u", p3->bytes, p3->len, NULL));
    assert_int_equal(st->refused[VV_CRDT_REFUSED_FORGED], 3);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 2);
    assert_null(vv_crdt_engine_find(b->e, "u"));

    /* Another node's policy for "t" (B signs one itself, as any impostor could): B's engine
     * sees it as a peer's, from a creator other than the one it knows. */
    struct vv_crdt_policy *other;
    assert_int_equal(vv_crdt_policy_make(&b->f.env, "t", VV_CRDT_KIND_TEXT, 0, 99, a->f.id.node_id,
                                         1, NULL, 0, &other),
                     0);
    deliver(b, a, frame_id_bin(VV_CRDT_MSG_POLICY, "t", other->bytes, other->len, NULL));
    assert_int_equal(st->refused[VV_CRDT_REFUSED_CREATOR], 1);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 2);
    vv_crdt_policy_free(other);

    /* A's policy for a document B lacks and is not named in: not created. */
    struct vv_crdt_policy *pu;
    assert_int_equal(
        vv_crdt_policy_make(&a->f.env, "u", VV_CRDT_KIND_SET, 0, 1, NULL, 0, NULL, 0, &pu), 0);
    deliver(b, a, frame_id_bin(VV_CRDT_MSG_POLICY, "u", pu->bytes, pu->len, NULL));
    assert_int_equal(st->refused[VV_CRDT_REFUSED_NOT_MEMBER], 1);
    assert_null(vv_crdt_engine_find(b->e, "u"));
    vv_crdt_policy_free(pu);

    vv_crdt_policy_free(p3);

    /* A change B misses (lost on the way: A makes B a reader) reaches it from the version in
     * A's answer to B's next SYNC; B's writes are refused from then on. */
    assert_int_equal(vv_crdt_engine_set_access(a->e, "t", b->f.id.node_id, 1, NULL, 0), 0);
    pump_except(&w, 1);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 2);
    assert_int_equal(vv_crdt_engine_sync(b->e, "t", a->f.id.node_id), 0);
    pump(&w);
    assert_int_equal(vv_crdt_engine_policy(b->e, "t")->version, 3);
    assert_int_equal(vv_crdt_policy_access(vv_crdt_engine_policy(b->e, "t"), b->f.id.node_id),
                     VV_CRDT_ACCESS_READ);
    vv_free(v1);
    world_free(&w);
}

/* Documents stored before policies: each node gives its copy a policy of its own (itself as
 * creator, its peers as writers, marked adopted), and the two keep syncing as before, though
 * each refuses the other's policy. */
static void test_documents_from_before_policies_keep_syncing(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    for (int i = 0; i < 2; i++) {
        struct node *n = &w.n[i], *other = &w.n[1 - i];
        struct vv_crdt_doc *d =
            vv_crdt_doc_new("legacy", VV_CRDT_KIND_TEXT, vv_crdt_engine_replica(n->e));
        assert_int_equal(vv_crdt_engine_adopt(n->e, d, other->f.id.node_id, 1), 0);
        assert_null(vv_crdt_engine_policy(n->e, "legacy"));
        const uint8_t *peers;
        assert_int_equal(vv_crdt_engine_peers(n->e, "legacy", &peers), 1);
        assert_int_equal(vv_crdt_engine_set_access(n->e, "legacy", NULL, 0, peers, 1), 0);
        const struct vv_crdt_policy *p = vv_crdt_engine_policy(n->e, "legacy");
        assert_int_equal(p->flags, VV_CRDT_POLICY_ADOPTED);
        assert_int_equal(p->version, 1);
    }
    pump(&w);
    apply(a, "legacy", "{\"insert\":{\"pos\":0,\"text\":\"old\"}}");
    pump(&w);
    apply(b, "legacy", "{\"insert\":{\"pos\":3,\"text\":\" doc\"}}");
    pump(&w);
    assert_text(a, "legacy", "old doc");
    assert_text(b, "legacy", "old doc");
    assert_true(vv_crdt_engine_stats(a->e)->refused[VV_CRDT_REFUSED_CREATOR] > 0);
    /* A's later versions stay adopted. */
    assert_int_equal(vv_crdt_engine_set_access(a->e, "legacy", NULL, 0, b->f.id.node_id, 1), 0);
    assert_int_equal(vv_crdt_engine_policy(a->e, "legacy")->flags, VV_CRDT_POLICY_ADOPTED);
    world_free(&w);
}

/* Two nodes make documents of one name: a node holding one never takes the other's updates,
 * even from a node that its own policy lets write. */
static void test_same_named_documents_of_two_creators_do_not_mix(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(vv_crdt_engine_create(w.n[i].e, "n", VV_CRDT_KIND_TEXT, NULL), 0);
        assert_int_equal(
            vv_crdt_engine_set_access(w.n[i].e, "n", NULL, 0, w.n[1 - i].f.id.node_id, 1), 0);
    }
    apply(a, "n", "{\"insert\":{\"pos\":0,\"text\":\"a\"}}");
    apply(b, "n", "{\"insert\":{\"pos\":0,\"text\":\"b\"}}");
    assert_int_equal(vv_crdt_engine_join(a->e, "n", b->f.id.node_id), 0);
    assert_int_equal(vv_crdt_engine_join(b->e, "n", a->f.id.node_id), 0);
    pump(&w);
    apply(b, "n", "{\"insert\":{\"pos\":1,\"text\":\"b\"}}");
    deliver(a, b, forged_text_update("n", b->f.id.node_id, "x")); /* B's document's update */
    pump(&w);
    assert_text(a, "n", "a");
    assert_text(b, "n", "bb");
    const struct vv_crdt_sync_stats *st = vv_crdt_engine_stats(a->e);
    assert_true(st->refused[VV_CRDT_REFUSED_CREATOR] >= 2); /* B's policy, its SYNC */
    assert_int_equal(st->updates_received, 0);
    const uint8_t *peers;
    assert_int_equal(vv_crdt_engine_peers(a->e, "n", &peers), 0); /* A stopped syncing with B */
    world_free(&w);
}

/* A text of chunks x 64 KiB of pseudo-random letters (the text encoding compresses its
 * content, so a periodic text would fit in one frame). */
static void write_big(struct node *n, const char *doc, int chunks)
{
    assert_int_equal(vv_crdt_engine_create(n->e, doc, VV_CRDT_KIND_TEXT, NULL), 0);
    char *text = vv_xmalloc((64u << 10) + 1);
    uint32_t x = 7;
    for (int c = 0; c < chunks; c++) {
        for (size_t i = 0; i < (64u << 10); i++) {
            x = x * 1103515245u + 12345u;
            text[i] = (char)('a' + (x >> 16) % 26);
        }
        text[64u << 10] = '\0';
        json_t *op =
            json_pack("{s:{s:I, s:s}}", "insert", "pos", (json_int_t)c << 16, "text", text);
        char err[128];
        assert_int_equal(vv_crdt_engine_op(n->e, doc, op, err, sizeof(err)), 0);
        json_decref(op);
    }
    vv_free(text);
}

/* Moves time on by ms, a millisecond at a time, delivering everything sent meanwhile (the
 * stream layer's chunks and credit). */
static void settle(struct world *w, uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t++) {
        pump(w);
        vv_fake_net_advance(&w->net, 1);
    }
    pump(w);
}

static size_t text_length(struct node *n, const char *doc)
{
    struct vv_crdt_doc *d = vv_crdt_engine_find(n->e, doc);
    if (d == NULL)
        return 0;
    json_t *v = vv_crdt_doc_value(d);
    size_t len = json_string_length(v);
    json_decref(v);
    return len;
}

/* [crdt] max_document_bytes (vv_crdt_engine_set_stream_limits): a sender does not send an
 * update over its own bound (counted too_large), a receiver refuses a stream over its own
 * (STOP, the transfer fails), and with both bounds over the update it arrives whole. */
static void test_max_document_bytes_bounds_large_updates_both_ways(void **state)
{
    (void)state;
    struct world w;
    world_init(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    write_big(a, "book", 48); /* 3 MiB of text, over 1 MiB encoded: a stream */
    vv_crdt_engine_set_stream_limits(a->e, 1u << 20, 0, 0, 0);
    share(a, "book", b, VV_CRDT_ACCESS_WRITE);
    settle(&w, 200);
    assert_true(vv_crdt_engine_stats(a->e)->too_large >= 1);
    assert_int_equal(vv_crdt_engine_stats(a->e)->streams_sent, 0);
    assert_int_equal(text_length(b, "book"), 0);

    /* The sender's bound raised, the receiver's lowered: the receiver refuses the stream. */
    vv_crdt_engine_set_stream_limits(a->e, 64u << 20, 0, 0, 0);
    vv_crdt_engine_set_stream_limits(b->e, 1u << 20, 0, 0, 0);
    assert_int_equal(vv_crdt_engine_sync(a->e, "book", b->f.id.node_id), 0);
    settle(&w, 200);
    assert_true(vv_crdt_engine_stats(a->e)->streams_failed >= 1);
    assert_int_equal(vv_crdt_engine_stats(b->e)->streams_received, 0);
    assert_int_equal(text_length(b, "book"), 0);

    /* Both over the update: it arrives whole. */
    vv_crdt_engine_set_stream_limits(b->e, 4u << 20, 0, 0, 0);
    assert_int_equal(vv_crdt_engine_sync(a->e, "book", b->f.id.node_id), 0);
    settle(&w, 2000);
    assert_int_equal(vv_crdt_engine_stats(b->e)->streams_received, 1);
    assert_int_equal(text_length(b, "book"), (size_t)48 << 16);
    world_free(&w);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharing_on_one_side_is_enough),
        cmocka_unit_test(test_without_auto_join_both_sides_must_join),
        cmocka_unit_test(test_peer_created_documents_are_capped),
        cmocka_unit_test(test_costly_messages_wait_for_later_turns_in_a_bounded_queue),
        cmocka_unit_test(test_tiny_updates_to_a_large_map_are_metered_by_its_state),
        cmocka_unit_test(test_buffered_updates_have_a_budget_across_documents_and_an_age_limit),
        cmocka_unit_test(test_unblocked_updates_drain_across_turns),
        cmocka_unit_test(test_document_ids_chosen_to_collide_do_not_share_one_chain),
        cmocka_unit_test(test_peer_not_in_the_policy_gets_nothing_and_cannot_write),
        cmocka_unit_test(test_readers_read_writers_write_and_changes_propagate),
        cmocka_unit_test(test_forged_and_stale_policies_are_refused),
        cmocka_unit_test(test_documents_from_before_policies_keep_syncing),
        cmocka_unit_test(test_same_named_documents_of_two_creators_do_not_mix),
        cmocka_unit_test(test_max_document_bytes_bounds_large_updates_both_ways),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
