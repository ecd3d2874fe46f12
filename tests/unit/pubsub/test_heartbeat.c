/*
 * The router's heartbeat in slices (src/pubsub/router.c, docs/pubsub.md "Router"): with
 * thousands of joined topics one loop turn maintains at most heartbeat_slice_topics of them,
 * the round goes on from a short timer until every topic was maintained, each peer hears of
 * every GRAFT (in as many CONTROL frames as the graft list's bound needs), and gossip stays
 * within one heartbeat's budget per peer however many slices the round took. One router on
 * a fake env (fake_env.h); the peers are node IDs whose frames the test writes.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fake_env.h"
#include "vivim/pubsub.h"
#include "vivim/wire.h"

#define N_TOPICS 5000
#define N_PEERS  3
#define SLICE    256

static void topic_name(char *buf, size_t cap, int i)
{
    snprintf(buf, cap, "topic:%d", i);
}

/* SUBSCRIPTIONS from peer to the router for topics [0, N_TOPICS). */
static void announce_all(struct vv_fake_env *fe, const uint8_t *peer)
{
    static char names[VV_PUBSUB_MAX_SUBS_PER_FRAME][24];
    struct vv_pubsub_sub subs[VV_PUBSUB_MAX_SUBS_PER_FRAME];
    for (int from = 0; from < N_TOPICS; from += VV_PUBSUB_MAX_SUBS_PER_FRAME) {
        int n = N_TOPICS - from < VV_PUBSUB_MAX_SUBS_PER_FRAME ? N_TOPICS - from
                                                               : VV_PUBSUB_MAX_SUBS_PER_FRAME;
        for (int i = 0; i < n; i++) {
            topic_name(names[i], sizeof(names[i]), from + i);
            subs[i] = (struct vv_pubsub_sub){true, names[i], strlen(names[i])};
        }
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_PUBSUB_TYPE_SUBSCRIPTIONS, 0);
        assert_int_equal(vv_pubsub_subs_encode(&pk, subs, (uint32_t)n), 0);
        vv_fake_env_deliver(fe, peer, VV_CHANNEL_PUBSUB, (const uint8_t *)sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* Topics whose mesh holds every peer. */
static int full_meshes(const struct vv_pubsub *ps)
{
    int n = 0;
    char name[24];
    for (int i = 0; i < N_TOPICS; i++) {
        topic_name(name, sizeof(name), i);
        n += vv_pubsub_mesh_size(ps, name, strlen(name)) == N_PEERS;
    }
    return n;
}

struct counts {
    uint32_t grafts[N_PEERS], ihave_frames[N_PEERS], ihave_ids[N_PEERS];
};

/* Takes the outbox, counting per peer GRAFT entries, CONTROL frames with IHAVE and their
 * IDs. */
static void count_control(struct vv_fake_env *fe, uint8_t (*peers)[VV_NODE_ID_BYTES],
                          struct counts *n)
{
    struct vv_fake_msg m;
    while (vv_fake_env_pop(fe, &m)) {
        struct vv_wire_frame f;
        int p = -1;
        for (int i = 0; i < N_PEERS; i++)
            if (memcmp(m.peer, peers[i], VV_NODE_ID_BYTES) == 0)
                p = i;
        assert_true(p >= 0);
        assert_int_equal(vv_wire_decode(m.data, m.len, &f), 0);
        if (f.h.type == VV_PUBSUB_TYPE_CONTROL) {
            struct vv_pubsub_control c;
            assert_int_equal(vv_pubsub_control_decode(&f.body, &c), 0);
            n->grafts[p] += c.n_graft;
            n->ihave_frames[p] += c.n_ihave > 0;
            for (uint32_t i = 0; i < c.n_ihave; i++)
                n->ihave_ids[p] += c.ihave[i].n_ids;
            vv_pubsub_control_free(&c);
        }
        vv_wire_frame_free(&f);
        vv_fake_msg_free(&m);
    }
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void test_heartbeat_maintains_5000_topics_in_bounded_slices(void **state)
{
    (void)state;
    struct vv_pubsub_config cfg;
    vv_pubsub_config_defaults(&cfg);
    cfg.max_peer_topics = N_TOPICS;
    cfg.heartbeat_slice_topics = SLICE;
    static struct vv_fake_env fe;
    vv_fake_env_init(&fe, 7);
    struct vv_pubsub *ps = vv_pubsub_new(&fe.env, &cfg, NULL, NULL);
    assert_non_null(ps);
    char name[24];
    for (int i = 0; i < N_TOPICS; i++) {
        topic_name(name, sizeof(name), i);
        assert_int_equal(vv_pubsub_join(ps, name, strlen(name)), 0);
    }
    /* Peers come and say they are subscribed to every topic: no mesh yet (joining grafted
     * no one, there was no one), the heartbeat will graft them. */
    uint8_t peers[N_PEERS][VV_NODE_ID_BYTES];
    for (int i = 0; i < N_PEERS; i++) {
        memset(peers[i], 0xa0 + i, VV_NODE_ID_BYTES);
        vv_fake_env_peer_up(&fe, peers[i]);
        announce_all(&fe, peers[i]);
    }
    vv_fake_env_clear_outbox(&fe);
    assert_int_equal(full_meshes(ps), 0);
    assert_int_equal(vv_fake_env_timers_pending(&fe, true), 0);

    /* Round one, slice by slice: the first fires from the heartbeat timer, the others from
     * the one-shot timer each slice leaves for the next loop turn. */
    static struct counts n;
    const struct vv_pubsub_stats *st = vv_pubsub_stats(ps);
    int steps = 0;
    double slowest_ms = 0;
    do {
        uint64_t before = st->heartbeat_topics;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_true(vv_fake_env_fire_next(&fe));
        double ms = ms_since(&t0);
        slowest_ms = ms > slowest_ms ? ms : slowest_ms;
        steps++;
        assert_true(st->heartbeat_topics - before <= SLICE);
        int done = full_meshes(ps);
        assert_int_equal(done, steps * SLICE < N_TOPICS ? steps * SLICE : N_TOPICS);
        count_control(&fe, peers, &n);
    } while (vv_fake_env_timers_pending(&fe, true) > 0);
    assert_int_equal(steps, (N_TOPICS + SLICE - 1) / SLICE);
    assert_int_equal(st->heartbeat_topics, N_TOPICS);
    assert_int_equal(full_meshes(ps), N_TOPICS);
    /* Each peer was told of each of the 5,000 GRAFTs (64 a frame). */
    for (int i = 0; i < N_PEERS; i++)
        assert_int_equal(n.grafts[i], N_TOPICS);
    print_message("  %d slices of at most %d topics, the slowest %.1f ms\n", steps, SLICE,
                  slowest_ms);

    /* The next round maintains every topic again, in as many slices, changing nothing. */
    uint64_t slices = st->heartbeat_slices, graft_sent = st->graft_sent;
    steps = 0;
    do {
        assert_true(vv_fake_env_fire_next(&fe));
        steps++;
    } while (vv_fake_env_timers_pending(&fe, true) > 0);
    assert_int_equal(st->heartbeat_topics, 2 * N_TOPICS);
    assert_int_equal(st->heartbeat_slices - slices, (uint64_t)steps);
    assert_int_equal(steps, (N_TOPICS + SLICE - 1) / SLICE);
    assert_int_equal(st->graft_sent, graft_sent);
    assert_int_equal(full_meshes(ps), N_TOPICS);
    vv_fake_env_clear_outbox(&fe);
    vv_pubsub_free(ps);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

/* A peer outside the meshes of many topics with recent messages gets at most
 * max_ihave_messages IHAVE frames and max_ihave_length IDs per round, however many slices
 * the round took. */
static void test_gossip_budget_holds_across_slices(void **state)
{
    (void)state;
    struct vv_pubsub_config cfg;
    vv_pubsub_config_defaults(&cfg);
    cfg.max_peer_topics = N_TOPICS;
    cfg.heartbeat_slice_topics = 8;
    cfg.d = cfg.d_lo = 1; /* one mesh peer per topic: the others get gossip */
    cfg.d_score = 1;
    cfg.d_lazy = N_PEERS;
    cfg.max_ihave_length = 60;
    cfg.max_ihave_messages = 3;
    static struct vv_fake_env fe;
    vv_fake_env_init(&fe, 9);
    struct vv_pubsub *ps = vv_pubsub_new(&fe.env, &cfg, NULL, NULL);
    assert_non_null(ps);
    uint8_t peers[N_PEERS][VV_NODE_ID_BYTES];
    for (int i = 0; i < N_PEERS; i++) {
        memset(peers[i], 0xb0 + i, VV_NODE_ID_BYTES);
        vv_fake_env_peer_up(&fe, peers[i]);
        announce_all(&fe, peers[i]);
    }
    /* 100 topics joined, each with 5 messages of its own in the cache. */
    char name[24];
    for (int i = 0; i < 100; i++) {
        topic_name(name, sizeof(name), i);
        assert_int_equal(vv_pubsub_join(ps, name, strlen(name)), 0);
        for (int k = 0; k < 5; k++)
            assert_int_equal(
                vv_pubsub_publish(ps, name, strlen(name), (const uint8_t *)"x", 1, NULL, NULL), 0);
    }
    vv_fake_env_clear_outbox(&fe);
    static struct counts n;
    int steps = 0;
    do {
        assert_true(vv_fake_env_fire_next(&fe));
        steps++;
        count_control(&fe, peers, &n);
    } while (vv_fake_env_timers_pending(&fe, true) > 0);
    assert_int_equal(steps, (100 + 7) / 8);
    /* Each peer is outside the mesh of about two topics in three: without the round's
     * budget it would be sent IHAVE in each of the 13 slices, about 330 IDs. */
    for (int i = 0; i < N_PEERS; i++) {
        assert_true(n.ihave_frames[i] >= 1);
        assert_true(n.ihave_frames[i] <= cfg.max_ihave_messages);
        assert_true(n.ihave_ids[i] <= cfg.max_ihave_length);
    }
    assert_true(vv_pubsub_stats(ps)->ihave_sent <= N_PEERS * cfg.max_ihave_messages);
    vv_pubsub_free(ps);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeat_maintains_5000_topics_in_bounded_slices),
        cmocka_unit_test(test_gossip_budget_holds_across_slices),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
