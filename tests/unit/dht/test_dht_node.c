/*
 * The DHT node (src/dht/dht_node.c) on fake envs: it admits contacts only after a signed
 * PONG, serves FIND_NODE within the reply budget (twice the request to an unverified
 * source, in full to a padded request), signs its PONGs, and answers value and provider
 * requests "unsupported" for now.
 */
#include "vv_test.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/dht.h"
#include "vivim/dht_msg.h"
#include "vivim/env_request.h"

#define N_PEERS 14 /* the fake net holds 16 envs: server, client and these */

struct world {
    struct vv_fake_net net;
    struct vv_fake_env server, client, peers[N_PEERS];
    struct vv_dht_node *s, *p[N_PEERS];
};

struct answer {
    bool done;
    int status;
    uint32_t code;
    struct vv_dht_reply rep;
    bool decoded;
    size_t reply_bytes;
};

static void settle(struct world *w)
{
    for (int i = 0; i < 50; i++) {
        vv_fake_net_pump_all(&w->net);
        vv_fake_net_advance(&w->net, 1);
    }
}

static struct world *make_world(void)
{
    struct world *w = vv_xcalloc(1, sizeof(*w));
    vv_fake_net_init(&w->net);
    vv_fake_env_init(&w->server, 1);
    vv_fake_env_init(&w->client, 2);
    vv_fake_net_add(&w->net, &w->server);
    vv_fake_net_add(&w->net, &w->client);
    w->s = vv_dht_node_new(&w->server.env, NULL, NULL);
    for (int i = 0; i < N_PEERS; i++) {
        vv_fake_env_init(&w->peers[i], 10 + (uint64_t)i);
        vv_fake_net_add(&w->net, &w->peers[i]);
        w->p[i] = vv_dht_node_new(&w->peers[i].env, NULL, NULL);
    }
    return w;
}

static void free_world(struct world *w)
{
    vv_dht_node_free(w->s);
    for (int i = 0; i < N_PEERS; i++) {
        vv_dht_node_free(w->p[i]);
        vv_env_fini(&w->peers[i].env);
        vv_fake_env_free(&w->peers[i]);
    }
    vv_env_fini(&w->server.env);
    vv_env_fini(&w->client.env);
    vv_fake_env_free(&w->server);
    vv_fake_env_free(&w->client);
    vv_free(w);
}

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct answer *ans = arg;
    ans->done = true;
    ans->status = a->status;
    ans->code = a->error_code;
    if (a->status == 0) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, a->reply->h.type, a->id);
        msgpack_pack_object(&pk, a->reply->body);
        ans->reply_bytes = sb.size;
        msgpack_sbuffer_destroy(&sb);
        ans->decoded = vv_dht_reply_decode(a->type, &a->reply->body, &ans->rep) == 0;
    }
}

/* The client sends a request of type with target and pad bytes to the server by datagram;
 * returns the request frame's size. */
static size_t ask(struct world *w, uint16_t type, const uint8_t *target, size_t pad,
                  struct answer *ans)
{
    struct vv_dht_request rq = {.type = type, .pad_len = pad};
    memcpy(rq.target, target, VV_DHT_ID_BYTES);
    uint8_t frame[VV_DHT_DATAGRAM_MAX_BYTES];
    size_t len;
    assert_int_equal(vv_dht_request_encode(&rq, UINT64_MAX, frame, sizeof(frame), &len), 0);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(frame, len, &f), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, f.body);
    vv_wire_frame_free(&f);
    memset(ans, 0, sizeof(*ans));
    assert_int_equal(vv_env_request_datagram(&w->client.env, w->server.env.identity->node_id,
                                             vv_fake_env_address(&w->server), type,
                                             (const uint8_t *)sb.data, sb.size, 1000, on_answer,
                                             ans, NULL),
                     0);
    msgpack_sbuffer_destroy(&sb);
    settle(w);
    assert_true(ans->done);
    return len;
}

static void join_all(struct world *w)
{
    for (int i = 0; i < N_PEERS; i++)
        assert_int_equal(vv_dht_node_bootstrap(w->s, vv_fake_env_address(&w->peers[i])), 0);
    settle(w);
}

static void test_contacts_enter_the_table_only_after_a_signed_pong(void **state)
{
    (void)state;
    struct world *w = make_world();
    assert_int_equal(vv_dht_rt_size(vv_dht_node_table(w->s)), 0);
    join_all(w);
    assert_int_equal(vv_dht_rt_size(vv_dht_node_table(w->s)), N_PEERS);
    assert_int_equal(vv_dht_node_stats(w->s)->pongs_verified, N_PEERS);
    /* The peers were asked by the server (and its self-lookup): they verified it back. */
    assert_true(vv_dht_rt_find(vv_dht_node_table(w->p[0]), w->server.env.identity->node_id, NULL) ==
                0);
    /* A client without a DHT node: its requests are served, but it never proves itself
     * (its channel 1 has no server to answer the PING), so it never enters the table. */
    uint8_t target[VV_DHT_ID_BYTES] = {0};
    struct answer ans;
    ask(w, VV_DHT_MSG_FIND_NODE, target, 0, &ans);
    assert_int_equal(vv_dht_rt_find(vv_dht_node_table(w->s), w->client.env.identity->node_id, NULL),
                     VV_ENOTFOUND);
    free_world(w);
}

/* Saved contacts (vv_dht_node_add_candidate) are pinged and enter the table only with a PONG
 * that proves the expected ID; with VV_DHT_MAX_PENDING_PINGS out, the caller is told to wait. */
static void test_saved_candidates_are_verified_and_bounded_in_flight(void **state)
{
    (void)state;
    struct world *w = make_world();
    const struct vv_dht_rt *rt = vv_dht_node_table(w->s);
    assert_int_equal(vv_dht_node_add_candidate(w->s, w->peers[0].env.identity->node_id,
                                               vv_fake_env_address(&w->peers[0])),
                     0);
    /* Another node's ID at peer 1's address: peer 1 answers, but not as that ID. */
    assert_int_equal(vv_dht_node_add_candidate(w->s, w->peers[2].env.identity->node_id,
                                               vv_fake_env_address(&w->peers[1])),
                     0);
    assert_int_equal(
        vv_dht_node_add_candidate(w->s, w->peers[3].env.identity->node_id, "example.com:4747"),
        VV_EDHT_ADDRESS);
    settle(w);
    assert_int_equal(vv_dht_rt_find(rt, w->peers[0].env.identity->node_id, NULL), 0);
    assert_int_equal(vv_dht_rt_find(rt, w->peers[2].env.identity->node_id, NULL), VV_ENOTFOUND);
    /* In the table already: nothing sent. */
    uint64_t sent = vv_dht_node_stats(w->s)->pings_sent;
    assert_int_equal(vv_dht_node_add_candidate(w->s, w->peers[0].env.identity->node_id,
                                               vv_fake_env_address(&w->peers[0])),
                     0);
    assert_int_equal(vv_dht_node_stats(w->s)->pings_sent, sent);

    /* Addresses where nobody answers: the pings stay out until their timeout. */
    uint8_t id[VV_DHT_ID_BYTES];
    char a[64];
    unsigned i;
    int rc = 0;
    for (i = 0; i < 1000 && rc == 0; i++) {
        memset(id, 0x33, sizeof(id));
        memcpy(id, &i, sizeof(i));
        snprintf(a, sizeof(a), "10.77.%u.%u:4747", i / 250, 1 + i % 250);
        rc = vv_dht_node_add_candidate(w->s, id, a);
    }
    assert_int_equal(rc, VV_EBUSY);
    /* i - 1 were sent; the others out are the node's own (peer 1 asked us back). */
    assert_true(i - 1 <= VV_DHT_MAX_PENDING_PINGS && i - 1 >= VV_DHT_MAX_PENDING_PINGS - 4);
    /* After the timeout there is room again. */
    for (int t = 0; t < 30; t++) {
        vv_fake_net_pump_all(&w->net);
        vv_fake_net_advance(&w->net, 100);
    }
    assert_int_equal(vv_dht_node_add_candidate(w->s, id, a), 0);
    free_world(w);
}

static void test_find_node_answer_is_cut_to_the_reply_budget(void **state)
{
    (void)state;
    struct world *w = make_world();
    join_all(w);
    uint8_t target[VV_DHT_ID_BYTES];
    memset(target, 0x5a, sizeof(target));
    struct answer ans;
    /* Unpadded, from an unverified source: at most twice the request. */
    size_t req = ask(w, VV_DHT_MSG_FIND_NODE, target, 0, &ans);
    assert_int_equal(ans.status, 0);
    assert_true(ans.decoded);
    assert_true(ans.reply_bytes <= 2 * req);
    assert_true(ans.rep.n_nodes < N_PEERS);
    /* Padded to half a datagram: the whole answer, nearest first. */
    ask(w, VV_DHT_MSG_FIND_NODE, target, 600, &ans);
    assert_int_equal(ans.status, 0);
    assert_int_equal(ans.rep.n_nodes, N_PEERS);
    for (size_t i = 1; i < ans.rep.n_nodes; i++)
        assert_true(vv_dht_distance_cmp(target, ans.rep.nodes[i - 1].id, ans.rep.nodes[i].id) < 0);
    free_world(w);
}

static void test_pong_is_signed_and_values_are_not_served_yet(void **state)
{
    (void)state;
    struct world *w = make_world();
    uint8_t nonce[VV_DHT_ID_BYTES];
    memset(nonce, 7, sizeof(nonce));
    struct answer ans;
    ask(w, VV_DHT_MSG_PING, nonce, VV_DHT_PING_MIN_BYTES, &ans);
    assert_int_equal(ans.status, 0);
    assert_true(ans.decoded);
    assert_memory_equal(ans.rep.pk, w->server.env.identity->public_key, VV_DHT_PK_BYTES);
    assert_int_equal(
        vv_dht_pong_verify(nonce, w->client.env.identity->node_id, ans.rep.pk, ans.rep.sig), 0);
    /* The PONG does not prove the node to anyone else: another requester ID fails. */
    assert_int_equal(
        vv_dht_pong_verify(nonce, w->server.env.identity->node_id, ans.rep.pk, ans.rep.sig),
        VV_EDHT_SIGNATURE);
    ask(w, VV_DHT_MSG_GET_PROVIDERS, nonce, 0, &ans);
    assert_int_equal(ans.status, VV_EREQ_REMOTE);
    assert_int_equal(ans.code, VV_REQ_ERR_UNSUPPORTED);
    free_world(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contacts_enter_the_table_only_after_a_signed_pong),
        cmocka_unit_test(test_saved_candidates_are_verified_and_bounded_in_flight),
        cmocka_unit_test(test_find_node_answer_is_cut_to_the_reply_budget),
        cmocka_unit_test(test_pong_is_signed_and_values_are_not_served_yet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
