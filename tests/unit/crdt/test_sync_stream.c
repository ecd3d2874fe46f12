/*
 * The sync engine's large-payload path (src/crdt/sync_stream.c) between two engines wired
 * through a net of two shared fake envs (fake_env.h: messages wait in the senders' outboxes
 * until the test delivers them): a delta larger than a frame reaches a new replica whole
 * through a stream; a second one is not started while the first is going; a peer that is not
 * joined, metadata that names no document, and a length over VV_CRDT_SYNC_MAX_DOC_BYTES are
 * refused with STOP before any byte is kept.
 */
#include "vv_test.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/crdt_sync.h"
#include "vivim/env_stream.h"
#include "vivim/wire.h"

#define DOC    "book:1"
#define CHUNKS 48 /* x 64 KiB of text: 3 MiB */

struct world;
struct node {
    struct vv_fake_env f; /* first: the fake's impl pointer is the node */
    struct world *w;
    struct vv_crdt_engine *e;
};
struct world {
    struct vv_fake_net net;
    struct node n[2];
    uint64_t stops_to_0; /* STOP frames node 1 sent */
    uint64_t last_stop_code;
};

/* Every send: no frame over the wire's limit, and node 1's STOP frames counted as they
 * leave. */
static int watched_send(void *impl, const uint8_t *peer, uint8_t ch, const uint8_t *data,
                        size_t len)
{
    struct node *n = impl;
    assert_true(len <= VV_WIRE_MAX_FRAME_BYTES);
    int rc = vv_fake_env_default_ops.send(impl, peer, ch, data, len);
    if (rc == 0 && n == &n->w->n[1]) {
        struct vv_wire_frame wf;
        struct vv_stream_frame f;
        if (vv_stream_frame_decode(data, len, &wf, &f) == 0 && f.type == VV_STREAM_MSG_STOP) {
            n->w->stops_to_0++;
            n->w->last_stop_code = f.value;
        }
        vv_wire_frame_free(&wf);
    }
    return rc;
}

static void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    vv_fake_net_init(&w->net);
    for (int i = 0; i < 2; i++) {
        struct node *n = &w->n[i];
        vv_fake_env_init(&n->f, (uint64_t)i + 1); /* the same keys every run */
        n->f.ops.send = watched_send;
        n->w = w;
        vv_fake_net_add(&w->net, &n->f);
        /* Anti-entropy far away: rounds are driven by the test. */
        n->e = vv_crdt_engine_new(&n->f.env, 0, 1000000, NULL, NULL);
    }
}

static bool in_flight(struct world *w)
{
    return vv_fake_net_in_flight(&w->net) > 0;
}

static void deliver_one(struct world *w)
{
    assert_true(vv_fake_net_deliver_one(&w->net));
}

/* Both clocks move on a millisecond without firing anything (a new loop turn). */
static void next_turn(struct world *w)
{
    for (int i = 0; i < 2; i++)
        w->n[i].f.now_ms++;
}

/* Delivers everything, a millisecond passing (and timers firing) whenever nothing is in
 * flight, until `ms` passed. */
static void run(struct world *w, uint64_t ms)
{
    uint64_t end = w->n[0].f.now_ms + ms;
    while (w->n[0].f.now_ms < end) {
        if (vv_fake_net_deliver_one(&w->net))
            continue;
        vv_fake_net_advance(&w->net, 1);
    }
}

static void world_free(struct world *w)
{
    for (int i = 0; i < 2; i++)
        vv_crdt_engine_free(w->n[i].e);
    for (int i = 0; i < 2; i++)
        vv_fake_env_free(&w->n[i].f); /* what is still in flight goes with the outboxes */
}

/* Node `from` (the document's creator) lets node `to` write DOC and joins it. */
static void share(struct world *w, int from, int to)
{
    const uint8_t *id = w->n[to].f.id.node_id;
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
    assert_int_equal(vv_crdt_engine_sync(w->n[0].e, DOC, w->n[1].f.id.node_id), 0);
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
    assert_int_equal(vv_crdt_engine_sync(w->n[1].e, DOC, w->n[0].f.id.node_id), 0);
    assert_int_equal(vv_crdt_engine_stats(w->n[1].e)->syncs_sent, syncs);
    /* A SYNC that left node 1 before the OPEN reached it (an empty state vector), arriving
     * while node 0's stream is going: no second stream, counted as skipped. */
    next_turn(w); /* a new loop turn: the first one's work allowance was spent on the delta */
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
    msgpack_pack_bin_body(&pk, w->n[0].f.id.node_id, VV_NODE_ID_BYTES);
    vv_env_deliver(&w->n[0].f.env, w->n[1].f.id.node_id, VV_CHANNEL_CRDT, (uint8_t *)sb.data,
                   sb.size);
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
    const struct vv_fake_msg *m = vv_fake_net_peek(&w->net);
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
    while (in_flight(w) && !next_is_end(w))
        deliver_one(w);
    assert_true(in_flight(w));
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
    vv_env_deliver(&w->n[1].f.env, w->n[0].f.id.node_id, VV_CHANNEL_CRDT, (uint8_t *)sb.data,
                   sb.size);
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
    vv_env_deliver(&w->n[1].f.env, w->n[0].f.id.node_id, VV_CHANNEL_CRDT, (uint8_t *)sb.data,
                   sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_unwanted_streams_are_refused(void **state)
{
    struct world *w = vv_xmalloc(sizeof(*w));
    world_init(w);
    const uint8_t *creator = w->n[1].f.id.node_id, *reader = w->n[0].f.id.node_id;
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
    vv_env_peer_event(&w->n[1].f.env, w->n[0].f.id.node_id, false);
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
