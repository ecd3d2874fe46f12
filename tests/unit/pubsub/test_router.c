/*
 * The pubsub router (vivim/pubsub.h) on a net of shared fake envs (fake_env.h): messages wait
 * in the senders' outboxes until the test pumps, timers (the heartbeat, the signature
 * checks' batching) fire when the test moves the clocks. Checked: delivery once to every
 * subscriber; signatures (a forged message is dropped, its sender penalised, and the genuine
 * one with the same ID still accepted); topic policy (size, publishers) and the validator;
 * mesh sizes between D_lo and D_hi; IHAVE answered by IWANT and IWANT by the message;
 * IDONTWANT honoured; GRAFT during a backoff answered by PRUNE; the per-peer topic bound;
 * messages of topics not joined; fanout publishing; lazy push (a choking peer gets
 * announcements of large messages, an announced message is pulled after the wait and from
 * the next announcer when the first does not answer, and not at all when it came).
 */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/pubsub.h"
#include "vivim/wire.h"

#define MAXN 16

struct node {
    struct vv_fake_env f;
    struct vv_pubsub *ps;
    int delivered;
    uint8_t last_id[VV_PUBSUB_ID_BYTES];
    size_t last_len;
    enum vv_pubsub_verdict verdict; /* what the validator answers */
};

struct world {
    struct vv_fake_net net;
    struct node n[MAXN];
    int count;
};

static void on_deliver(void *arg, const struct vv_pubsub_msg *m,
                       const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    struct node *n = arg;
    n->delivered++;
    memcpy(n->last_id, id, VV_PUBSUB_ID_BYTES);
    n->last_len = m->data_len;
}

static enum vv_pubsub_verdict on_validate(void *arg, const uint8_t peer[VV_NODE_ID_BYTES],
                                          const struct vv_pubsub_msg *m)
{
    (void)peer;
    (void)m;
    return ((struct node *)arg)->verdict;
}

static void world_init(struct world *w, int count, const struct vv_pubsub_config *cfg)
{
    memset(w, 0, sizeof(*w));
    vv_fake_net_init(&w->net);
    w->count = count;
    static const struct vv_pubsub_cbs cbs = {on_deliver, on_validate};
    for (int i = 0; i < count; i++) {
        vv_fake_env_init(&w->n[i].f, (uint64_t)i + 1);
        vv_fake_net_add(&w->net, &w->n[i].f);
        w->n[i].ps = vv_pubsub_new(&w->n[i].f.env, cfg, &cbs, &w->n[i]);
        assert_non_null(w->n[i].ps);
    }
}

static void world_free(struct world *w)
{
    for (int i = 0; i < w->count; i++)
        vv_pubsub_free(w->n[i].ps);
    vv_fake_net_pump(&w->net);
    for (int i = 0; i < w->count; i++) {
        vv_env_fini(&w->n[i].f.env);
        vv_fake_env_free(&w->n[i].f);
    }
}

/* Delivers everything in flight and fires what fell due (signature batches), until quiet. */
static void settle(struct world *w)
{
    for (int i = 0; i < 1000; i++) {
        size_t moved = vv_fake_net_pump(&w->net);
        uint64_t fired = vv_fake_net_advance(&w->net, 0);
        if (moved == 0 && fired == 0)
            return;
    }
    fail_msg("the net did not settle");
}

/* Moves the clocks on ms, a millisecond at a time, settling after each (heartbeats). */
static void run(struct world *w, uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t++) {
        vv_fake_net_advance(&w->net, 1);
        settle(w);
    }
}

static void connect_all(struct world *w)
{
    for (int i = 0; i < w->count; i++)
        for (int j = i + 1; j < w->count; j++)
            vv_fake_net_connect(&w->net, &w->n[i].f, &w->n[j].f);
    settle(w);
}

static const char T[] = "circle:1";
#define TL (sizeof(T) - 1)

static void join_all(struct world *w)
{
    for (int i = 0; i < w->count; i++)
        assert_int_equal(vv_pubsub_join(w->n[i].ps, T, TL), 0);
    settle(w);
}

/* A MESSAGE frame from origin key (pk, sk) with the given signature state. */
static size_t message_frame(uint8_t *out, size_t cap, const uint8_t *pk, const uint8_t *sk,
                            uint64_t seqno, const char *topic, const void *data, size_t len,
                            bool forge, uint8_t id_out[VV_PUBSUB_ID_BYTES])
{
    uint8_t from[VV_NODE_ID_BYTES];
    vv_identity_node_id(pk, from);
    struct vv_pubsub_msg m = {from, pk, seqno, topic, strlen(topic), data, len, NULL};
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    vv_pubsub_msg_sign(&m, sk, sig);
    if (forge)
        sig[5] ^= 1;
    m.sig = sig;
    if (id_out)
        vv_pubsub_msg_id(&m, id_out);
    msgpack_sbuffer sb;
    msgpack_packer pk2;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk2, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk2, VV_PUBSUB_TYPE_MESSAGE, 0);
    assert_int_equal(vv_pubsub_msg_encode(&pk2, &m), 0);
    assert_true(sb.size <= cap);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static size_t control_frame(uint8_t *out, size_t cap, const struct vv_pubsub_control *c)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CONTROL, 0);
    assert_int_equal(vv_pubsub_control_encode(&pk, c), 0);
    assert_true(sb.size <= cap);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* Frames of a type that `from` has sent to `to` and that wait in its outbox. */
static int outbox_count(const struct node *from, const struct node *to, uint16_t type)
{
    int n = 0;
    for (size_t i = 0; i < vv_fake_env_outbox_len(&from->f); i++) {
        const struct vv_fake_msg *m = vv_fake_env_peek(&from->f, i);
        uint16_t t;
        uint64_t rid;
        if (memcmp(m->peer, to->f.id.node_id, VV_NODE_ID_BYTES) == 0 &&
            vv_wire_peek(m->data, m->len, &t, &rid) == 0 && t == type)
            n++;
    }
    return n;
}

/* A CHOKE (choke true) or UNCHOKE of topic T from `from` to `to`. */
static void deliver_choke(struct node *to, const struct node *from, bool choke)
{
    struct vv_pubsub_sub e = {choke, T, TL};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CHOKE, 0);
    assert_int_equal(vv_pubsub_subs_encode(&pk, &e, 1), 0);
    vv_env_deliver(&to->f.env, from->f.id.node_id, VV_CHANNEL_PUBSUB, (const uint8_t *)sb.data,
                   sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* An IHAVE of one ID on T from `from` to `to`. */
static void deliver_ihave(struct node *to, const struct node *from, const uint8_t *id)
{
    const uint8_t *ids[1] = {id};
    struct vv_pubsub_ihave ih = {T, TL, ids, 1};
    struct vv_pubsub_control c = {.ihave = &ih, .n_ihave = 1};
    uint8_t buf[512];
    size_t n = control_frame(buf, sizeof(buf), &c);
    vv_env_deliver(&to->f.env, from->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
}

/* Whether `from`'s outbox holds an IWANT for id to `to`. */
static bool iwant_waits(const struct node *from, const struct node *to, const uint8_t *id)
{
    bool found = false;
    for (size_t i = 0; i < vv_fake_env_outbox_len(&from->f) && !found; i++) {
        const struct vv_fake_msg *m = vv_fake_env_peek(&from->f, i);
        struct vv_wire_frame f;
        if (memcmp(m->peer, to->f.id.node_id, VV_NODE_ID_BYTES) != 0 ||
            vv_wire_decode(m->data, m->len, &f) != 0)
            continue;
        struct vv_pubsub_control c;
        if (f.h.type == VV_PUBSUB_TYPE_CONTROL && vv_pubsub_control_decode(&f.body, &c) == 0) {
            for (uint32_t k = 0; k < c.n_iwant; k++)
                found |= memcmp(c.iwant[k], id, VV_PUBSUB_ID_BYTES) == 0;
            vv_pubsub_control_free(&c);
        }
        vv_wire_frame_free(&f);
    }
    return found;
}

static void test_every_subscriber_gets_each_message_once(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 6, NULL);
    connect_all(&w);
    join_all(&w);
    run(&w, 3000); /* heartbeats: meshes settle */
    for (int i = 0; i < w.count; i++) {
        uint32_t mesh = vv_pubsub_mesh_size(w.n[i].ps, T, TL);
        assert_true(mesh >= 1 && mesh <= 5); /* five others: all of them at most */
        assert_int_equal(vv_pubsub_topic_peers(w.n[i].ps, T, TL), 5);
    }
    uint8_t id[VV_PUBSUB_ID_BYTES];
    uint32_t peers = 0;
    assert_int_equal(vv_pubsub_publish(w.n[0].ps, T, TL, (const uint8_t *)"hello", 5, id, &peers),
                     0);
    assert_int_equal(peers, 5); /* flood publishing: every subscriber */
    run(&w, 10);
    for (int i = 0; i < w.count; i++) {
        assert_int_equal(w.n[i].delivered, 1); /* the publisher's own delivery included */
        assert_memory_equal(w.n[i].last_id, id, VV_PUBSUB_ID_BYTES);
    }
    uint64_t dups = 0;
    for (int i = 1; i < w.count; i++) {
        const struct vv_pubsub_stats *s = vv_pubsub_stats(w.n[i].ps);
        assert_int_equal(s->invalid_signature, 0);
        dups += s->duplicates;
    }
    /* Duplicates are possible (forwarding meets flooding), never a second delivery. */
    run(&w, 5000);
    for (int i = 0; i < w.count; i++)
        assert_int_equal(w.n[i].delivered, 1);
    (void)dups;
    world_free(&w);
}

static void test_forged_signature_is_dropped_and_penalised(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 3, NULL);
    connect_all(&w);
    join_all(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    /* B forwards a message of C's with a broken signature. */
    uint8_t buf[2048], id[VV_PUBSUB_ID_BYTES], id2[VV_PUBSUB_ID_BYTES];
    size_t n = message_frame(buf, sizeof(buf), w.n[2].f.id.public_key, w.n[2].f.id.secret_key, 7, T,
                             "x", 1, true, id);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(a->delivered, 0);
    assert_int_equal(vv_pubsub_stats(a->ps)->invalid_signature, 1);
    assert_true(vv_pubsub_peer_score(a->ps, b->f.id.node_id) < -50);
    /* The genuine message has the same ID (it does not cover the signature): accepted. */
    n = message_frame(buf, sizeof(buf), w.n[2].f.id.public_key, w.n[2].f.id.secret_key, 7, T, "x",
                      1, false, id2);
    assert_memory_equal(id, id2, VV_PUBSUB_ID_BYTES);
    vv_env_deliver(&a->f.env, w.n[2].f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(a->delivered, 1);
    /* B, graylisted now, is not heard at all. */
    n = message_frame(buf, sizeof(buf), w.n[2].f.id.public_key, w.n[2].f.id.secret_key, 8, T, "y",
                      1, false, NULL);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(a->delivered, 1);
    assert_int_equal(vv_pubsub_stats(a->ps)->dropped_graylisted, 1);
    /* The metrics' summary sees it: two peers, one graylisted, the lowest score B's. */
    double min, mean;
    uint32_t gray;
    assert_int_equal(vv_pubsub_score_summary(a->ps, &min, &mean, &gray), 2);
    assert_int_equal(gray, 1);
    assert_true(min == vv_pubsub_peer_score(a->ps, b->f.id.node_id));
    assert_true(mean < 0 && mean > min);
    world_free(&w);
}

static void test_topic_policy_and_validator(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 5, NULL);
    /* b is the topic's one publisher at a; c, d and e forward what breaks a's rules (each
     * check from its own peer, so that one's standing does not blur the next). */
    struct node *a = &w.n[0], *b = &w.n[1], *c = &w.n[2], *d = &w.n[3], *e = &w.n[4];
    const uint8_t(*only_b)[VV_NODE_ID_BYTES] = &b->f.id.node_id;
    struct vv_pubsub_topic_config tc = {
        .max_message_bytes = 4, .publishers = only_b, .n_publishers = 1};
    assert_int_equal(vv_pubsub_create_topic(a->ps, T, TL, &tc), 0);
    connect_all(&w);
    join_all(&w);
    uint8_t buf[2048];
    /* From C: not a publisher of the topic at A. */
    size_t n = message_frame(buf, sizeof(buf), c->f.id.public_key, c->f.id.secret_key, 1, T, "ok",
                             2, false, NULL);
    vv_env_deliver(&a->f.env, c->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    /* From B, but over 4 bytes (forwarded by D). */
    n = message_frame(buf, sizeof(buf), b->f.id.public_key, b->f.id.secret_key, 2, T, "large", 5,
                      false, NULL);
    vv_env_deliver(&a->f.env, d->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(a->delivered, 0);
    assert_int_equal(vv_pubsub_stats(a->ps)->dropped_publisher, 1);
    assert_int_equal(vv_pubsub_stats(a->ps)->dropped_too_large, 1);
    /* A's policy is its own: the peers that forwarded the messages are not held to it. */
    assert_true(vv_pubsub_peer_score(a->ps, c->f.id.node_id) >= 0);
    assert_true(vv_pubsub_peer_score(a->ps, d->f.id.node_id) >= 0);
    /* From B within the size, but the validator rejects (forwarded by E: penalised), then
     * ignores (no penalty), then accepts. */
    a->verdict = VV_PUBSUB_REJECT;
    n = message_frame(buf, sizeof(buf), b->f.id.public_key, b->f.id.secret_key, 3, T, "a", 1, false,
                      NULL);
    vv_env_deliver(&a->f.env, e->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(vv_pubsub_stats(a->ps)->rejected, 1);
    assert_true(vv_pubsub_peer_score(a->ps, e->f.id.node_id) < 0);
    a->verdict = VV_PUBSUB_IGNORE;
    n = message_frame(buf, sizeof(buf), b->f.id.public_key, b->f.id.secret_key, 4, T, "b", 1, false,
                      NULL);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(vv_pubsub_stats(a->ps)->ignored, 1);
    assert_int_equal(a->delivered, 0);
    assert_true(vv_pubsub_peer_score(a->ps, b->f.id.node_id) >= 0);
    a->verdict = VV_PUBSUB_ACCEPT;
    n = message_frame(buf, sizeof(buf), b->f.id.public_key, b->f.id.secret_key, 5, T, "c", 1, false,
                      NULL);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(a->delivered, 1);
    /* A publisher may not exceed its own topic's size either. */
    assert_int_equal(vv_pubsub_publish(a->ps, T, TL, (const uint8_t *)"12345", 5, NULL, NULL),
                     VV_ELIMIT);
    world_free(&w);
}

/* Fifteen nodes around a hub: the hub's mesh stays between D_lo and D_hi. */
static void test_mesh_stays_between_d_lo_and_d_hi(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 15, NULL);
    for (int i = 1; i < w.count; i++)
        vv_fake_net_connect(&w.net, &w.n[0].f, &w.n[i].f);
    settle(&w);
    join_all(&w);
    for (int s = 0; s < 5; s++) {
        run(&w, 1000);
        uint32_t mesh = vv_pubsub_mesh_size(w.n[0].ps, T, TL);
        assert_true(mesh >= 5 && mesh <= 12);
    }
    /* Every leaf meshed with the hub (its only peer) and asked to; the hub pruned those
     * past D_hi back to D. */
    const struct vv_pubsub_stats *hub = vv_pubsub_stats(w.n[0].ps);
    assert_true(hub->graft_received >= 13);
    assert_true(hub->prune_sent >= 1);
    world_free(&w);
}

static void test_ihave_iwant_and_idontwant(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 2, NULL);
    connect_all(&w);
    join_all(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    /* B announces an ID A has not seen: A asks for it. */
    uint8_t unseen[VV_PUBSUB_ID_BYTES];
    memset(unseen, 0x42, sizeof(unseen));
    const uint8_t *ids[1] = {unseen};
    struct vv_pubsub_ihave ih = {T, TL, ids, 1};
    struct vv_pubsub_control c = {.ihave = &ih, .n_ihave = 1};
    uint8_t buf[4096];
    size_t n = control_frame(buf, sizeof(buf), &c);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    assert_int_equal(vv_pubsub_stats(a->ps)->iwant_sent, 1);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_CONTROL), 1);
    settle(&w);
    /* A publishes; B asks for it by IWANT: A sends it again from its cache. */
    uint8_t id[VV_PUBSUB_ID_BYTES];
    assert_int_equal(vv_pubsub_publish(a->ps, T, TL, (const uint8_t *)"m", 1, id, NULL), 0);
    settle(&w);
    const uint8_t *want[1] = {id};
    struct vv_pubsub_control iw = {.iwant = want, .n_iwant = 1};
    n = control_frame(buf, sizeof(buf), &iw);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_MESSAGE), 1);
    assert_int_equal(vv_pubsub_stats(a->ps)->iwant_served, 1);
    settle(&w);
    /* B says IDONTWANT for it: the next IWANT is not served. */
    struct vv_pubsub_control dw = {.idontwant = want, .n_idontwant = 1};
    n = control_frame(buf, sizeof(buf), &dw);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    n = control_frame(buf, sizeof(buf), &iw);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_MESSAGE), 0);
    assert_int_equal(vv_pubsub_stats(a->ps)->iwant_served, 1);
    world_free(&w);
}

static void test_graft_in_backoff_is_pruned_and_penalised(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 2, NULL);
    connect_all(&w);
    join_all(&w);
    run(&w, 1100); /* a heartbeat: the meshes form */
    struct node *a = &w.n[0], *b = &w.n[1];
    assert_int_equal(vv_pubsub_mesh_size(a->ps, T, TL), 1);
    /* B prunes A; A backs off; B grafts again at once: A refuses with PRUNE. */
    struct vv_pubsub_prune pr = {T, TL, 60, NULL, 0};
    struct vv_pubsub_control c = {.prune = &pr, .n_prune = 1};
    uint8_t buf[1024];
    size_t n = control_frame(buf, sizeof(buf), &c);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    assert_int_equal(vv_pubsub_mesh_size(a->ps, T, TL), 0);
    struct vv_pubsub_topic_ref g = {T, TL};
    struct vv_pubsub_control gc = {.graft = &g, .n_graft = 1};
    n = control_frame(buf, sizeof(buf), &gc);
    double before = vv_pubsub_peer_score(a->ps, b->f.id.node_id);
    for (int i = 0; i < 10; i++)
        vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    /* Each GRAFT in the backoff is refused with a PRUNE and costs a behaviour penalty of 2
     * (sent within 10 s of the backoff); past the penalty threshold the score falls
     * quadratically, B is graylisted, and its later GRAFTs are not even answered. */
    assert_int_equal(vv_pubsub_mesh_size(a->ps, T, TL), 0);
    int prunes = outbox_count(a, b, VV_PUBSUB_TYPE_CONTROL);
    assert_true(prunes >= 3 && prunes < 10);
    assert_true(vv_pubsub_peer_score(a->ps, b->f.id.node_id) < before);
    assert_true(vv_pubsub_peer_score(a->ps, b->f.id.node_id) < -80);
    assert_int_equal(vv_pubsub_stats(a->ps)->dropped_graylisted, (uint64_t)(10 - prunes));
    world_free(&w);
}

static void test_bounds_topics_not_joined_and_fanout(void **state)
{
    (void)state;
    struct vv_pubsub_config cfg;
    vv_pubsub_config_defaults(&cfg);
    cfg.max_peer_topics = 3;
    static struct world w;
    world_init(&w, 4, &cfg);
    connect_all(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    /* B tells A of five topics: A keeps three. */
    struct vv_pubsub_sub subs[5];
    char names[5][8];
    for (int i = 0; i < 5; i++) {
        names[i][0] = 't';
        names[i][1] = (char)('0' + i);
        subs[i] = (struct vv_pubsub_sub){true, names[i], 2};
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_SUBSCRIPTIONS, 0);
    assert_int_equal(vv_pubsub_subs_encode(&pk, subs, 5), 0);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, (const uint8_t *)sb.data,
                   sb.size);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(vv_pubsub_stats(a->ps)->topics_refused, 2);
    assert_int_equal(vv_pubsub_topic_peers(a->ps, "t0", 2), 1);
    assert_int_equal(vv_pubsub_topic_peers(a->ps, "t4", 2), 0);
    /* A message on a topic A did not join: dropped before any signature check. */
    uint8_t buf[2048];
    size_t n = message_frame(buf, sizeof(buf), b->f.id.public_key, b->f.id.secret_key, 1, "t0", "z",
                             1, false, NULL);
    vv_env_deliver(&a->f.env, b->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    settle(&w);
    assert_int_equal(vv_pubsub_stats(a->ps)->dropped_not_joined, 1);
    /* The others join T; A, not joined, publishes to them through fanout: to C and D, since
     * B's subscription to T passed its bound of three topics at A. */
    for (int i = 1; i < w.count; i++)
        assert_int_equal(vv_pubsub_join(w.n[i].ps, T, TL), 0);
    settle(&w);
    uint32_t peers = 0;
    assert_int_equal(vv_pubsub_publish(a->ps, T, TL, (const uint8_t *)"f", 1, NULL, &peers), 0);
    assert_int_equal(peers, 2);
    settle(&w);
    assert_int_equal(a->delivered, 0);
    assert_int_equal(w.n[2].delivered, 1);
    assert_int_equal(w.n[3].delivered, 1);
    world_free(&w);
}

/* SUBSCRIPTIONS from `from` to a, for the topics named. */
static void announce(struct node *a, const struct node *from, const char *const *names, int n)
{
    struct vv_pubsub_sub subs[8];
    for (int i = 0; i < n; i++)
        subs[i] = (struct vv_pubsub_sub){true, names[i], strlen(names[i])};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_SUBSCRIPTIONS, 0);
    assert_int_equal(vv_pubsub_subs_encode(&pk, subs, (uint32_t)n), 0);
    vv_env_deliver(&a->f.env, from->f.id.node_id, VV_CHANNEL_PUBSUB, (const uint8_t *)sb.data,
                   sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* Topics known from all peers are bounded (max_known_topics) besides each peer's
 * (max_peer_topics); a topic two peers share counts once; a peer's topics are forgotten when
 * it goes, so that its spam does not outlive it. */
static void test_known_topics_bounded_and_forgotten_with_their_peers(void **state)
{
    (void)state;
    struct vv_pubsub_config cfg;
    vv_pubsub_config_defaults(&cfg);
    cfg.max_peer_topics = 3;
    cfg.max_known_topics = 4;
    static struct world w;
    world_init(&w, 3, &cfg);
    connect_all(&w);
    struct node *a = &w.n[0], *b = &w.n[1], *c = &w.n[2];
    static const char *const from_b[] = {"t0", "t1", "t2", "t3"};
    static const char *const from_c[] = {"t2", "t4", "t5"};
    announce(a, b, from_b, 4); /* t3: past B's three */
    assert_int_equal(vv_pubsub_known_topics(a->ps), 3);
    assert_int_equal(vv_pubsub_stats(a->ps)->topics_refused, 1);
    announce(a, c, from_c, 3); /* t2 known already; t4 the fourth; t5 past four */
    assert_int_equal(vv_pubsub_known_topics(a->ps), 4);
    assert_int_equal(vv_pubsub_stats(a->ps)->topics_refused, 2);
    assert_int_equal(vv_pubsub_topic_peers(a->ps, "t2", 2), 2);
    assert_int_equal(vv_pubsub_topic_peers(a->ps, "t5", 2), 0);
    /* This node's own topics are not refused by the peers' bound. */
    assert_int_equal(vv_pubsub_join(a->ps, "mine", 4), 0);
    assert_int_equal(vv_pubsub_known_topics(a->ps), 5);
    /* B goes: t0 and t1 go with it, t2 stays (C's). */
    vv_env_peer_event(&a->f.env, b->f.id.node_id, false);
    assert_int_equal(vv_pubsub_known_topics(a->ps), 3);
    assert_int_equal(vv_pubsub_topic_peers(a->ps, "t2", 2), 1);
    /* Room again: C's t5 is taken when announced again. */
    announce(a, c, &from_c[2], 1);
    assert_int_equal(vv_pubsub_topic_peers(a->ps, "t5", 2), 1);
    world_free(&w);
}

/* Two nodes join a topic one after the other: the first one's GRAFT reaches the second
 * before it joined and is ignored (no PRUNE, so no backoff on either side), and once both
 * joined they are in each other's mesh. */
static void test_graft_before_joining_does_not_lock_out(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 2, NULL);
    connect_all(&w);
    struct node *a = &w.n[0], *b = &w.n[1];
    /* B subscribes on paper (its SUBSCRIPTIONS are seen by A) but A's GRAFT comes first. */
    assert_int_equal(vv_pubsub_join(a->ps, T, TL), 0);
    settle(&w);
    struct vv_pubsub_topic_ref g = {T, TL};
    struct vv_pubsub_control gc = {.graft = &g, .n_graft = 1};
    uint8_t buf[1024];
    size_t n = control_frame(buf, sizeof(buf), &gc);
    vv_env_deliver(&b->f.env, a->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    assert_int_equal(outbox_count(b, a, VV_PUBSUB_TYPE_CONTROL), 0);
    assert_int_equal(vv_pubsub_stats(b->ps)->prune_sent, 0);
    assert_int_equal(vv_pubsub_join(b->ps, T, TL), 0);
    run(&w, 1100);
    assert_int_equal(vv_pubsub_mesh_size(a->ps, T, TL), 1);
    assert_int_equal(vv_pubsub_mesh_size(b->ps, T, TL), 1);
    assert_int_equal(vv_pubsub_stats(a->ps)->prune_received, 0);
    world_free(&w);
}

static void test_choking_peer_gets_announcements_of_large_messages(void **state)
{
    (void)state;
    static struct world w;
    world_init(&w, 3, NULL);
    connect_all(&w);
    join_all(&w);
    run(&w, 2000); /* a heartbeat: A's mesh is B and C, neither choked (two stay unchoked) */
    struct node *a = &w.n[0], *b = &w.n[1], *c = &w.n[2];
    assert_int_equal(vv_pubsub_mesh_size(a->ps, T, TL), 2);
    deliver_choke(a, b, true);
    /* C forwards a 600-byte message of another origin: B, which choked A, gets an IHAVE of it
     * instead of the message; C, the sender, nothing. */
    uint8_t pk[VV_ED25519_PK_BYTES], sk[VV_ED25519_SK_BYTES];
    crypto_sign_keypair(pk, sk);
    static uint8_t data[600], buf[2048];
    size_t n = message_frame(buf, sizeof(buf), pk, sk, 1, T, data, sizeof(data), false, NULL);
    vv_env_deliver(&a->f.env, c->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    vv_fake_net_advance(&w.net, 0); /* the signature check; nothing pumped */
    assert_int_equal(a->delivered, 1);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_MESSAGE), 0);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_CONTROL), 1);
    assert_int_equal(outbox_count(a, c, VV_PUBSUB_TYPE_MESSAGE), 0);
    assert_int_equal(vv_pubsub_stats(a->ps)->announce_sent, 1);
    settle(&w);
    /* A small message goes in full all the same. */
    n = message_frame(buf, sizeof(buf), pk, sk, 2, T, data, 100, false, NULL);
    vv_env_deliver(&a->f.env, c->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    vv_fake_net_advance(&w.net, 0);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_MESSAGE), 1);
    settle(&w);
    /* So does a large one that came from its origin (the first hop). */
    n = message_frame(buf, sizeof(buf), c->f.id.public_key, c->f.id.secret_key, 3, T, data,
                      sizeof(data), false, NULL);
    vv_env_deliver(&a->f.env, c->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    vv_fake_net_advance(&w.net, 0);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_MESSAGE), 1);
    settle(&w);
    /* After UNCHOKE, B gets large messages in full again. */
    deliver_choke(a, b, false);
    n = message_frame(buf, sizeof(buf), pk, sk, 4, T, data, sizeof(data), false, NULL);
    vv_env_deliver(&a->f.env, c->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    vv_fake_net_advance(&w.net, 0);
    assert_int_equal(outbox_count(a, b, VV_PUBSUB_TYPE_MESSAGE), 1);
    assert_int_equal(vv_pubsub_stats(a->ps)->announce_sent, 1);
    settle(&w);
    assert_int_equal(a->delivered, 4);
    world_free(&w);
}

static void test_announced_message_is_pulled_after_the_wait_then_elsewhere(void **state)
{
    (void)state;
    struct vv_pubsub_config cfg;
    vv_pubsub_config_defaults(&cfg);
    cfg.unchoked_peers = 1;
    cfg.announce_wait_ms = 10;
    cfg.pull_timeout_ms = 250;
    cfg.heartbeat_ms = 60000; /* one choking decision, then none during the test */
    static struct world w;
    world_init(&w, 4, &cfg);
    connect_all(&w);
    join_all(&w);
    struct node *a = &w.n[0]; /* its first heartbeat grafts B, C and D and chokes two */
    for (int i = 0; i < 700 && vv_pubsub_stats(a->ps)->choke_sent < 2; i++) {
        vv_fake_net_advance(&w.net, 100);
        settle(&w);
    }
    assert_int_equal(vv_pubsub_stats(a->ps)->choke_sent, 2); /* one of three stays unchoked */
    /* Gossip from the unchoked peer is asked at once; announcements from the choked ones
     * are not. */
    struct node *open = NULL, *choked[2];
    int n_choked = 0;
    for (int i = 1; i < 4; i++) {
        uint8_t id[VV_PUBSUB_ID_BYTES];
        memset(id, 0x10 + i, sizeof(id));
        deliver_ihave(a, &w.n[i], id);
        if (iwant_waits(a, &w.n[i], id))
            open = &w.n[i];
        else
            choked[n_choked++] = &w.n[i];
    }
    assert_non_null(open);
    assert_int_equal(n_choked, 2);
    /* An announced message that the unchoked peer brings within the wait is not pulled, nor
     * is one announced after it came. */
    uint8_t pk[VV_ED25519_PK_BYTES], sk[VV_ED25519_SK_BYTES], id[VV_PUBSUB_ID_BYTES];
    crypto_sign_keypair(pk, sk);
    static uint8_t data[600], buf[2048];
    size_t n = message_frame(buf, sizeof(buf), pk, sk, 1, T, data, sizeof(data), false, id);
    deliver_ihave(a, choked[0], id);
    vv_env_deliver(&a->f.env, open->f.id.node_id, VV_CHANNEL_PUBSUB, buf, n);
    deliver_ihave(a, choked[1], id);
    vv_fake_net_advance(&w.net, 20);
    assert_int_equal(a->delivered, 1);
    assert_false(iwant_waits(a, choked[0], id));
    assert_false(iwant_waits(a, choked[1], id));
    /* Both choked peers announce an unseen message: asked of the first after the wait, of
     * the second when the first has not answered within the pull timeout. */
    uint8_t idn[VV_PUBSUB_ID_BYTES];
    memset(idn, 0x77, sizeof(idn));
    deliver_ihave(a, choked[0], idn);
    deliver_ihave(a, choked[1], idn);
    vv_fake_net_advance(&w.net, 9);
    assert_false(iwant_waits(a, choked[0], idn));
    vv_fake_net_advance(&w.net, 1);
    assert_true(iwant_waits(a, choked[0], idn));
    assert_false(iwant_waits(a, choked[1], idn));
    vv_fake_net_advance(&w.net, 249);
    assert_false(iwant_waits(a, choked[1], idn));
    vv_fake_net_advance(&w.net, 1);
    assert_true(iwant_waits(a, choked[1], idn));
    settle(&w);
    /* The first broke its promise: what it announces now opens no pull (for a while). */
    memset(idn, 0x78, sizeof(idn));
    deliver_ihave(a, choked[0], idn);
    vv_fake_net_advance(&w.net, 300);
    assert_false(iwant_waits(a, choked[0], idn));
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_subscriber_gets_each_message_once),
        cmocka_unit_test(test_forged_signature_is_dropped_and_penalised),
        cmocka_unit_test(test_topic_policy_and_validator),
        cmocka_unit_test(test_mesh_stays_between_d_lo_and_d_hi),
        cmocka_unit_test(test_ihave_iwant_and_idontwant),
        cmocka_unit_test(test_graft_in_backoff_is_pruned_and_penalised),
        cmocka_unit_test(test_bounds_topics_not_joined_and_fanout),
        cmocka_unit_test(test_known_topics_bounded_and_forgotten_with_their_peers),
        cmocka_unit_test(test_graft_before_joining_does_not_lock_out),
        cmocka_unit_test(test_choking_peer_gets_announcements_of_large_messages),
        cmocka_unit_test(test_announced_message_is_pulled_after_the_wait_then_elsewhere),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
