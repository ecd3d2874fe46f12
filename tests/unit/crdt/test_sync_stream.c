/*
 * The sync engine's large-payload path (src/crdt/sync_stream.c) between two engines wired
 * through an in-memory fake env (self-contained here): a delta larger than a frame reaches a
 * new replica whole through a stream; a second one is not started while the first is going;
 * a peer that is not joined, metadata that names no document, and a length over
 * VV_CRDT_SYNC_MAX_DOC_BYTES are refused with STOP before any byte is kept.
 */
#include "vv_test.h"

#include <jansson.h>
#include <stdio.h>
#include <sodium.h>
#include <string.h>

#include "vivim/crdt_sync.h"
#include "vivim/env_stream.h"
#include "vivim/wire.h"

#define QMAX   1024
#define TMAX   64
#define DOC    "book:1"
#define CHUNKS 48 /* x 64 KiB of text: 3 MiB */

struct msg {
    int to;
    uint8_t *data;
    size_t len;
};
struct timer {
    struct vv_env *env;
    uint64_t id, due, repeat;
    vv_env_timer_cb cb;
    void *arg;
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
    size_t head, tail;
    struct timer t[TMAX];
    uint64_t next_id, now;
    uint64_t stops_to_0; /* STOP frames node 1 sent */
    uint64_t last_stop_code;
};

static uint64_t f_now(void *impl)
{
    return ((struct node *)impl)->w->now;
}
static uint64_t f_timer(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    struct node *n = impl;
    struct world *w = n->w;
    for (int i = 0; i < TMAX; i++)
        if (w->t[i].id == 0) {
            w->t[i] = (struct timer){&n->env, ++w->next_id, w->now + d, r, cb, arg};
            return w->t[i].id;
        }
    fail_msg("out of timers");
    return 0;
}
static void f_cancel(void *impl, uint64_t id)
{
    struct world *w = ((struct node *)impl)->w;
    for (int i = 0; i < TMAX; i++)
        if (w->t[i].id == id)
            w->t[i].id = 0;
}
static void f_random(void *impl, void *buf, size_t len)
{
    struct node *n = impl;
    memset(buf, 0x11 * (n->index + 1), len);
}
static int f_send(void *impl, const uint8_t *peer, uint8_t ch, const uint8_t *data, size_t len)
{
    struct node *n = impl;
    struct world *w = n->w;
    assert_true(len <= VV_WIRE_MAX_FRAME_BYTES);
    assert_true(w->tail - w->head < QMAX);
    if (n->index == 1) {
        struct vv_wire_frame wf;
        struct vv_stream_frame f;
        if (vv_stream_frame_decode(data, len, &wf, &f) == 0 && f.type == VV_STREAM_MSG_STOP) {
            w->stops_to_0++;
            w->last_stop_code = f.value;
        }
        vv_wire_frame_free(&wf);
    }
    struct msg *m = &w->q[w->tail++ % QMAX];
    m->to = 1 - n->index;
    m->data = vv_xmalloc(len);
    memcpy(m->data, data, len);
    m->len = len;
    return 0;
}
static int f_connect(void *impl, const uint8_t *peer, const char *address)
{
    return 0;
}
static void f_disconnect(void *impl, const uint8_t *peer)
{
}
static bool f_verify(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    (void)impl;
    return crypto_sign_verify_detached(s, m, n, pk) == 0; /* access policies are signed */
}
static const struct vv_env_ops ops = {f_now,     f_timer,      f_cancel, f_random, f_send,
                                      f_connect, f_disconnect, f_verify, NULL,     NULL};

static void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    w->now = 1000;
    for (int i = 0; i < 2; i++) {
        struct node *n = &w->n[i];
        n->w = w;
        n->index = i;
        uint8_t seed[crypto_sign_SEEDBYTES];
        memset(seed, 0xa0 + i, sizeof(seed)); /* the same keys every run */
        crypto_sign_seed_keypair(n->id.public_key, n->id.secret_key, seed);
        vv_identity_node_id(n->id.public_key, n->id.node_id);
        n->env = (struct vv_env){.ops = &ops, .impl = n, .identity = &n->id};
        /* Anti-entropy far away: rounds are driven by the test. */
        n->e = vv_crdt_engine_new(&n->env, 0, 1000000, NULL, NULL);
    }
}

static void deliver_one(struct world *w)
{
    struct msg m = w->q[w->head++ % QMAX];
    vv_env_deliver(&w->n[m.to].env, w->n[1 - m.to].id.node_id, VV_CHANNEL_CRDT, m.data, m.len);
    vv_free(m.data);
}

static void run(struct world *w, uint64_t ms)
{
    uint64_t end = w->now + ms;
    while (w->now < end) {
        if (w->head < w->tail) {
            deliver_one(w);
            continue;
        }
        w->now++;
        for (int i = 0; i < TMAX; i++) {
            struct timer t = w->t[i];
            if (t.id == 0 || t.due > w->now)
                continue;
            if (t.repeat)
                w->t[i].due = w->now + t.repeat;
            else
                w->t[i].id = 0;
            t.cb(t.env, t.arg);
        }
    }
}

static void world_free(struct world *w)
{
    for (int i = 0; i < 2; i++)
        vv_crdt_engine_free(w->n[i].e);
    while (w->head < w->tail)
        vv_free(w->q[w->head++ % QMAX].data);
}

/* Node `from` (the document's creator) lets node `to` write DOC and joins it. */
static void share(struct world *w, int from, int to)
{
    const uint8_t *id = w->n[to].id.node_id;
    assert_int_equal(vv_crdt_engine_set_access(w->n[from].e, DOC, NULL, 0, id, 1), 0);
    assert_int_equal(vv_crdt_engine_join(w->n[from].e, DOC, id), 0);
}

static void write_book(struct node *n)
{
    assert_int_equal(vv_crdt_engine_create(n->e, DOC, VV_CRDT_KIND_TEXT, NULL), 0);
    char *text = vv_xmalloc((64u << 10) + 1);
    uint32_t x = 1;
    for (int c = 0; c < CHUNKS; c++) {
        /* Pseudo-random letters: the text encoding compresses its content, and a periodic
         * text would fit in one frame. */
        for (size_t i = 0; i < (64u << 10); i++) {
            x = x * 1103515245u + 12345u;
            text[i] = (char)('a' + (x >> 16) % 26);
        }
        text[64u << 10] = '\0';
        json_t *op =
            json_pack("{s:{s:I, s:s}}", "insert", "pos", (json_int_t)c << 16, "text", text);
        char err[128];
        assert_int_equal(vv_crdt_engine_op(n->e, DOC, op, err, sizeof(err)), 0);
        json_decref(op);
    }
    vv_free(text);
}

static void assert_same_text(struct world *w)
{
    json_t *a = vv_crdt_doc_value(vv_crdt_engine_find(w->n[0].e, DOC));
    struct vv_crdt_doc *d1 = vv_crdt_engine_find(w->n[1].e, DOC);
    assert_non_null(d1);
    json_t *b = vv_crdt_doc_value(d1);
    assert_int_equal(json_string_length(b), (size_t)CHUNKS << 16);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
}

static void test_large_delta_reaches_a_new_replica_whole(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    write_book(&w->n[0]);
    share(w, 0, 1);
    run(w, 1000);
    assert_same_text(w);
    const struct vv_crdt_sync_stats *s0 = vv_crdt_engine_stats(w->n[0].e);
    const struct vv_crdt_sync_stats *s1 = vv_crdt_engine_stats(w->n[1].e);
    assert_int_equal(s0->streams_sent, 1);
    assert_int_equal(s1->streams_received, 1);
    assert_int_equal(s0->too_large, 0);
    assert_int_equal(s0->stream_bytes_in_flight, 0);
    assert_true(s1->stream_bytes_received > (1u << 20));
    assert_int_equal(s1->updates_received, 1);
    world_free(w);
    vv_free(w);
}

/* While the stream is going, more sync rounds neither start a second stream from the sender
 * nor are asked for by the receiver. */
static void test_no_second_stream_while_one_is_going(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    write_book(&w->n[0]);
    share(w, 0, 1);
    /* POLICY -> node 1 creates the document; SYNC -> node 1 SYNCs back -> node 0 opens the
     * stream (a handful of messages; bounded so a lost step fails here). */
    for (int i = 0; i < 8 && vv_crdt_engine_stats(w->n[0].e)->updates_sent == 0; i++)
        deliver_one(w);
    assert_int_equal(vv_crdt_engine_stats(w->n[0].e)->streams_sent, 0);
    assert_int_equal(vv_crdt_engine_stats(w->n[0].e)->updates_sent, 1);
    /* Node 0 starts another round at once (crdt.sync): node 1, receiving the stream, answers
     * without a SYNC of its own, so nothing is sent twice. */
    assert_int_equal(vv_crdt_engine_sync(w->n[0].e, DOC, w->n[1].id.node_id), 0);
    run(w, 1000);
    assert_same_text(w);
    const struct vv_crdt_sync_stats *s0 = vv_crdt_engine_stats(w->n[0].e);
    assert_int_equal(s0->streams_sent, 1);
    assert_int_equal(vv_crdt_engine_stats(w->n[1].e)->streams_received, 1);
    /* A round node 1 starts while it receives is the stream itself: nothing is sent. */
    world_free(w);
    world_init(w);
    write_book(&w->n[0]);
    share(w, 0, 1);
    while (vv_crdt_engine_stats(w->n[0].e)->updates_sent == 0)
        deliver_one(w); /* until node 0 opened the stream */
    deliver_one(w);     /* the OPEN: node 1 accepts */
    uint64_t syncs = vv_crdt_engine_stats(w->n[1].e)->syncs_sent;
    assert_int_equal(vv_crdt_engine_sync(w->n[1].e, DOC, w->n[0].id.node_id), 0);
    assert_int_equal(vv_crdt_engine_stats(w->n[1].e)->syncs_sent, syncs);
    /* A SYNC that left node 1 before the OPEN reached it (an empty state vector), arriving
     * while node 0's stream is going: no second stream, counted as skipped. */
    w->now++; /* a new loop turn: the first one's work allowance was spent on the delta */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_SYNC, 0);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_str(&pk, strlen(DOC));
    msgpack_pack_str_body(&pk, DOC, strlen(DOC));
    msgpack_pack_uint8(&pk, VV_CRDT_KIND_TEXT);
    msgpack_pack_bin(&pk, 0);
    msgpack_pack_false(&pk);
    msgpack_pack_uint64(&pk, vv_crdt_engine_policy(w->n[0].e, DOC)->version);
    msgpack_pack_bin(&pk, VV_NODE_ID_BYTES); /* the creator: node 0 */
    msgpack_pack_bin_body(&pk, w->n[0].id.node_id, VV_NODE_ID_BYTES);
    vv_env_deliver(&w->n[0].env, w->n[1].id.node_id, VV_CHANNEL_CRDT, (uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(vv_crdt_engine_stats(w->n[0].e)->streams_skipped, 1);
    run(w, 1000);
    assert_same_text(w);
    assert_int_equal(vv_crdt_engine_stats(w->n[0].e)->streams_sent, 1);
    assert_int_equal(vv_crdt_engine_stats(w->n[1].e)->streams_received, 1);
    world_free(w);
    vv_free(w);
}

static bool next_is_end(struct world *w)
{
    struct msg *m = &w->q[w->head % QMAX];
    struct vv_wire_frame wf;
    struct vv_stream_frame f;
    bool end = vv_stream_frame_decode(m->data, m->len, &wf, &f) == 0 && f.type == VV_STREAM_MSG_END;
    vv_wire_frame_free(&wf);
    return end;
}

/* A large update that completes once the loop turn's work allowance is spent waits for a
 * later turn (the deferred queue), like any message, and is applied there. */
static void test_large_update_is_metered_like_a_message(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    write_book(&w->n[0]);
    share(w, 0, 1);
    while (w->head < w->tail && !next_is_end(w))
        deliver_one(w);
    assert_true(w->head < w->tail);
    /* In the same turn, a 600 KB message spends node 1's allowance (a junk update from the
     * joined peer: refused, but its bytes were work). */
    size_t junk_len = 600u << 10;
    uint8_t *junk = vv_xcalloc(1, junk_len);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_UPDATE, 0);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str(&pk, strlen(DOC));
    msgpack_pack_str_body(&pk, DOC, strlen(DOC));
    msgpack_pack_bin(&pk, junk_len);
    msgpack_pack_bin_body(&pk, junk, junk_len);
    vv_env_deliver(&w->n[1].env, w->n[0].id.node_id, VV_CHANNEL_CRDT, (uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    vv_free(junk);
    const struct vv_crdt_sync_stats *s1 = vv_crdt_engine_stats(w->n[1].e);
    uint64_t deferred = s1->deferred_total;
    deliver_one(w); /* the END: complete, but the turn is spent */
    s1 = vv_crdt_engine_stats(w->n[1].e);
    assert_int_equal(s1->streams_received, 1);
    assert_int_equal(s1->deferred_total, deferred + 1);
    assert_int_equal(s1->deferred_msgs, 1);
    assert_true(s1->deferred_bytes > (1u << 20));
    json_t *v = vv_crdt_doc_value(vv_crdt_engine_find(w->n[1].e, DOC));
    assert_int_equal(json_string_length(v), 0);
    json_decref(v);
    run(w, 10); /* the next turn applies it */
    assert_same_text(w);
    s1 = vv_crdt_engine_stats(w->n[1].e);
    assert_int_equal(s1->deferred_msgs, 0);
    assert_int_equal(s1->deferred_bytes, 0);
    world_free(w);
    vv_free(w);
}

/* Node 0 plays a peer that sends OPEN on its own. */
/* Node 0 opens stream sid to node 1 for DOC: metadata kind byte, creator, id. */
static void send_open(struct world *w, uint64_t sid, uint64_t total, uint8_t kind,
                      const uint8_t *creator)
{
    uint8_t meta[1 + VV_NODE_ID_BYTES + sizeof(DOC)];
    size_t meta_len = 1 + VV_NODE_ID_BYTES + strlen(DOC);
    meta[0] = kind;
    memcpy(meta + 1, creator, VV_NODE_ID_BYTES);
    memcpy(meta + 1 + VV_NODE_ID_BYTES, DOC, strlen(DOC));
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CHANNEL_CRDT << 8 | VV_STREAM_MSG_OPEN, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, sid);
    msgpack_pack_uint64(&pk, total);
    msgpack_pack_bin(&pk, meta_len);
    msgpack_pack_bin_body(&pk, meta, meta_len);
    vv_env_deliver(&w->n[1].env, w->n[0].id.node_id, VV_CHANNEL_CRDT, (uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_unwanted_streams_are_refused(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    const uint8_t *creator = w->n[1].id.node_id, *reader = w->n[0].id.node_id;
    /* No such document on node 1. */
    send_open(w, 1, 2u << 20, 0x01, creator);
    assert_int_equal(w->stops_to_0, 1);
    assert_int_equal(w->last_stop_code, VV_STREAM_CODE_REFUSED);
    /* The document exists but node 0 is not joined to it. */
    assert_int_equal(vv_crdt_engine_create(w->n[1].e, DOC, VV_CRDT_KIND_TEXT, NULL), 0);
    send_open(w, 2, 2u << 20, 0x01, creator);
    assert_int_equal(w->stops_to_0, 2);
    assert_int_equal(w->last_stop_code, VV_STREAM_CODE_REFUSED);
    /* Joined, but the policy lets node 0 only read: refused as an UPDATE would be. */
    assert_int_equal(vv_crdt_engine_set_access(w->n[1].e, DOC, reader, 1, NULL, 0), 0);
    assert_int_equal(vv_crdt_engine_join(w->n[1].e, DOC, reader), 0);
    send_open(w, 3, 2u << 20, 0x01, creator);
    assert_int_equal(w->stops_to_0, 3);
    assert_int_equal(w->last_stop_code, VV_STREAM_CODE_REFUSED);
    assert_int_equal(vv_crdt_engine_stats(w->n[1].e)->refused[VV_CRDT_REFUSED_WRITE], 1);
    /* A writer now, but over the largest document accepted. */
    share(w, 1, 0);
    send_open(w, 4, (uint64_t)VV_CRDT_SYNC_MAX_DOC_BYTES + 1, 0x01, creator);
    assert_int_equal(w->stops_to_0, 4);
    assert_int_equal(w->last_stop_code, VV_STREAM_CODE_TOO_LARGE);
    /* Metadata of another kind. */
    send_open(w, 5, 100, 0x02, creator);
    assert_int_equal(w->stops_to_0, 5);
    /* Within the bound: accepted (a CREDIT, no STOP), and nothing is held after a down. */
    send_open(w, 6, 2u << 20, 0x01, creator);
    assert_int_equal(w->stops_to_0, 5);
    /* Naming another creator: refused, and node 0 is dropped from the document's peers. */
    send_open(w, 7, 2u << 20, 0x01, reader);
    assert_int_equal(w->stops_to_0, 6);
    assert_int_equal(vv_crdt_engine_stats(w->n[1].e)->refused[VV_CRDT_REFUSED_CREATOR], 1);
    vv_env_peer_event(&w->n[1].env, w->n[0].id.node_id, false);
    const struct vv_crdt_sync_stats *s1 = vv_crdt_engine_stats(w->n[1].e);
    assert_int_equal(s1->streams_failed, 7);
    assert_int_equal(s1->streams_received, 0);
    assert_int_equal(vv_crdt_engine_count(w->n[1].e), 1);
    world_free(w);
    vv_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_delta_reaches_a_new_replica_whole),
        cmocka_unit_test(test_no_second_stream_while_one_is_going),
        cmocka_unit_test(test_large_update_is_metered_like_a_message),
        cmocka_unit_test(test_unwanted_streams_are_refused),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
