/*
 * The DHT node (src/dht/dht_node.c) on fake envs: it admits contacts only after a signed
 * PONG, serves FIND_NODE within the reply budget (twice the request to an unverified
 * source, in full to a padded request), signs its PONGs, stores values and provider records
 * only with a valid token and signature, and publishes and finds them across nodes.
 */
#include "vv_test.h"

#include <msgpack.h>
#include <sodium.h>
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

/* A connected peer's datagram address, as vivimd's connection manager would tell it. */
static int fake_peer_address(void *arg, const uint8_t id[VV_DHT_ID_BYTES], char *out, size_t cap)
{
    struct world *w = arg;
    struct vv_fake_env *fe = vv_fake_net_find(&w->net, id);
    if (fe == NULL)
        return VV_ENOTFOUND;
    vv_strlcpy(out, vv_fake_env_address(fe), cap);
    return 0;
}

static struct world *make_world(void)
{
    struct world *w = vv_xcalloc(1, sizeof(*w));
    vv_fake_net_init(&w->net);
    vv_fake_env_init(&w->server, 1);
    vv_fake_env_init(&w->client, 2);
    vv_fake_net_add(&w->net, &w->server);
    vv_fake_net_add(&w->net, &w->client);
    struct vv_dht_node_hooks hooks = {.peer_address = fake_peer_address, .arg = w};
    w->s = vv_dht_node_new(&w->server.env, NULL, &hooks);
    for (int i = 0; i < N_PEERS; i++) {
        vv_fake_env_init(&w->peers[i], 10 + (uint64_t)i);
        vv_fake_net_add(&w->net, &w->peers[i]);
        w->p[i] = vv_dht_node_new(&w->peers[i].env, NULL, &hooks);
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
static size_t ask_rq(struct world *w, const struct vv_dht_request *rq, struct answer *ans);

static size_t ask(struct world *w, uint16_t type, const uint8_t *target, size_t pad,
                  struct answer *ans)
{
    struct vv_dht_request rq = {.type = type, .pad_len = pad};
    memcpy(rq.target, target, VV_DHT_ID_BYTES);
    return ask_rq(w, &rq, ans);
}

static size_t ask_rq(struct world *w, const struct vv_dht_request *rq, struct answer *ans)
{
    uint16_t type = rq->type;
    uint8_t frame[VV_DHT_DATAGRAM_MAX_BYTES];
    size_t len;
    assert_int_equal(vv_dht_request_encode(rq, UINT64_MAX, frame, sizeof(frame), &len), 0);
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

static void test_pong_is_signed(void **state)
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
    free_world(w);
}

/* A token from a GET_VALUE to the server, for the client's address. */
static void get_token(struct world *w, const uint8_t *key, uint8_t token[VV_DHT_TOKEN_BYTES])
{
    struct answer ans;
    ask(w, VV_DHT_MSG_GET_VALUE, key, 600, &ans);
    assert_int_equal(ans.status, 0);
    assert_true(ans.decoded);
    memcpy(token, ans.rep.token, VV_DHT_TOKEN_BYTES);
}

static void put_request(struct world *w, struct vv_dht_request *rq, const uint8_t *key,
                        const uint8_t *value, size_t len, uint64_t seq)
{
    memset(rq, 0, sizeof(*rq));
    rq->type = VV_DHT_MSG_PUT_VALUE;
    memcpy(rq->target, key, VV_DHT_ID_BYTES);
    memcpy(rq->value.key, key, VV_DHT_ID_BYTES);
    rq->value.value = value;
    rq->value.len = len;
    rq->value.seq = seq;
    rq->value.expires_ms = vv_env_wall_ms(&w->client.env) + 60000;
    vv_dht_value_sign(&rq->value, w->client.env.identity->secret_key);
}

static void test_stores_need_a_token_and_a_valid_signature(void **state)
{
    (void)state;
    struct world *w = make_world();
    const struct vv_dht_node_stats *st = vv_dht_node_stats(w->s);
    uint8_t key[VV_DHT_ID_BYTES];
    memset(key, 0x33, sizeof(key));
    struct vv_dht_request rq;
    struct answer ans;
    /* No token (zeros): refused, nothing stored. */
    put_request(w, &rq, key, (const uint8_t *)"hello", 5, 10);
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.status, VV_EREQ_REMOTE);
    assert_int_equal(ans.code, VV_DHT_ANSWER_TOKEN);
    assert_int_equal(vv_dht_values_count(vv_dht_node_values(w->s)), 0);
    /* With the token of a GET: stored, and served to the next GET. */
    get_token(w, key, rq.token);
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.status, 0);
    assert_int_equal(st->stores_accepted, 1);
    assert_int_equal(vv_dht_values_count(vv_dht_node_values(w->s)), 1);
    ask(w, VV_DHT_MSG_GET_VALUE, key, 600, &ans);
    assert_int_equal(ans.rep.n_values, 1);
    assert_int_equal(ans.rep.values[0].seq, 10);
    assert_memory_equal(ans.rep.values[0].pk, w->client.env.identity->public_key, 32);
    /* The same seq again, or a lower one: stale. */
    uint8_t token[VV_DHT_TOKEN_BYTES];
    memcpy(token, rq.token, sizeof(token));
    put_request(w, &rq, key, (const uint8_t *)"older", 5, 9);
    memcpy(rq.token, token, sizeof(token));
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.code, VV_DHT_ANSWER_STALE_SEQ);
    /* A forged signature (a byte of the value changed after signing): refused after the
     * check, counted. */
    uint8_t forged[5] = {'h', 'e', 'l', 'l', 'o'};
    put_request(w, &rq, key, forged, 5, 11);
    memcpy(rq.token, token, sizeof(token));
    forged[0] = 'j';
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.code, VV_DHT_ANSWER_SIGNATURE);
    assert_int_equal(st->stores_refused[6], 1);
    /* Expired: refused before any check. */
    put_request(w, &rq, key, (const uint8_t *)"x", 1, 12);
    rq.value.expires_ms = vv_env_wall_ms(&w->client.env) - 1;
    vv_dht_value_sign(&rq.value, w->client.env.identity->secret_key);
    memcpy(rq.token, token, sizeof(token));
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.code, VV_DHT_ANSWER_EXPIRY);
    assert_int_equal(vv_dht_values_count(vv_dht_node_values(w->s)), 1);
    /* ADD_PROVIDER: signed by another key than the requester's: refused; by its own: stored. */
    memset(&rq, 0, sizeof(rq));
    rq.type = VV_DHT_MSG_ADD_PROVIDER;
    rq.record.content_id = "doc-1";
    rq.record.content_id_len = 5;
    rq.record.content_type = "text/plain";
    rq.record.content_type_len = 10;
    rq.record.expires_ms = vv_env_wall_ms(&w->client.env) + 60000;
    crypto_hash_sha256(rq.target, (const uint8_t *)"doc-1", 5);
    memcpy(rq.token, token, sizeof(token));
    vv_dht_provider_sign(rq.target, rq.record.expires_ms, w->server.env.identity->secret_key,
                         rq.provider_pk, rq.provider_sig);
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.code, VV_DHT_ANSWER_SIGNATURE);
    vv_dht_provider_sign(rq.target, rq.record.expires_ms, w->client.env.identity->secret_key,
                         rq.provider_pk, rq.provider_sig);
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.status, 0);
    /* A record whose key is not SHA-256(contentId) nor its address: refused. */
    rq.target[0] ^= 1;
    vv_dht_provider_sign(rq.target, rq.record.expires_ms, w->client.env.identity->secret_key,
                         rq.provider_pk, rq.provider_sig);
    ask_rq(w, &rq, &ans);
    assert_int_equal(ans.code, VV_DHT_ANSWER_KEY);
    rq.target[0] ^= 1;
    ask(w, VV_DHT_MSG_GET_PROVIDERS, rq.target, 600, &ans);
    assert_int_equal(ans.status, 0);
    assert_int_equal(ans.rep.n_providers, 1);
    assert_true(ans.rep.has_record);
    assert_memory_equal(ans.rep.providers[0].c.id, w->client.env.identity->node_id, 32);
    assert_true(strcmp(vv_fake_env_address(&w->client), "") != 0);
    free_world(w);
}

struct got {
    bool done;
    struct vv_dht_store_result store;
    int status;
    size_t n_values;
    uint64_t seq;
    char value[64];
    size_t n_providers, streamed;
    uint8_t provider[VV_DHT_ID_BYTES];
};

static void on_stored(void *arg, const struct vv_dht_store_result *r)
{
    struct got *g = arg;
    g->done = true;
    g->store = *r;
}

static void on_got(void *arg, const struct vv_dht_get_result *r)
{
    struct got *g = arg;
    g->done = true;
    g->status = r->status;
    g->n_values = r->n_values;
    if (r->n_values > 0) {
        g->seq = r->values[0].seq;
        memcpy(g->value, r->values[0].value, VV_MIN(r->values[0].len, sizeof(g->value) - 1));
    }
    g->n_providers = r->n_providers;
    if (r->n_providers > 0)
        memcpy(g->provider, r->providers[0].c.id, VV_DHT_ID_BYTES);
}

static void on_provider(void *arg, const struct vv_dht_provider *p)
{
    struct got *g = arg;
    (void)p;
    g->streamed++;
}

static void test_published_values_and_providers_are_found_from_other_nodes(void **state)
{
    (void)state;
    struct world *w = make_world();
    join_all(w);
    for (int i = 0; i < N_PEERS; i++)
        assert_int_equal(vv_dht_node_bootstrap(w->p[i], vv_fake_env_address(&w->server)), 0);
    for (int i = 0; i < 20; i++)
        settle(w);
    uint8_t key[VV_DHT_ID_BYTES];
    memset(key, 0x42, sizeof(key));
    struct got put = {0};
    assert_int_equal(
        vv_dht_node_put(w->p[0], key, (const uint8_t *)"v1", 2, 60000, 0, on_stored, &put), 0);
    for (int i = 0; i < 20 && !put.done; i++)
        settle(w);
    assert_true(put.done);
    assert_int_equal(put.store.status, 0);
    assert_true(put.store.stored >= 10);
    /* Every node asked stored it, and so did the publisher: with 16 nodes and k = 20 it is
     * one of the k closest. */
    assert_int_equal(put.store.stored, put.store.tried + 1);
    assert_int_equal(vv_dht_values_count(vv_dht_node_values(w->p[0])), 1);
    /* A second put by the same publisher replaces the first everywhere. */
    memset(&put, 0, sizeof(put));
    assert_int_equal(
        vv_dht_node_put(w->p[0], key, (const uint8_t *)"v2", 2, 60000, 0, on_stored, &put), 0);
    for (int i = 0; i < 20 && !put.done; i++)
        settle(w);
    assert_true(put.store.stored >= 10);
    struct got get = {0};
    assert_int_equal(vv_dht_node_get(w->p[7], key, on_got, &get), 0);
    for (int i = 0; i < 20 && !get.done; i++)
        settle(w);
    assert_true(get.done);
    assert_int_equal(get.n_values, 1);
    assert_int_equal(get.seq, put.store.seq);
    assert_string_equal(get.value, "v2");
    /* Larger than a value may be: refused up front. */
    static uint8_t big[VV_DHT_VALUE_MAX_BYTES + 1];
    assert_int_equal(vv_dht_node_put(w->p[0], key, big, sizeof(big), 60000, 0, on_stored, &put),
                     VV_EDHT_TOO_LARGE);
    /* Providers: p[3] provides doc-7; p[9] finds it, streamed and in the result. */
    struct vv_dht_content_record rec = {
        .content_id = "doc-7",
        .content_id_len = 5,
        .content_type = "image/png",
        .content_type_len = 9,
        .size = 1234,
        .expires_ms = vv_env_wall_ms(&w->peers[3].env) + 60000,
    };
    struct got prov = {0};
    assert_int_equal(vv_dht_node_provide(w->p[3], &rec, on_stored, &prov), 0);
    for (int i = 0; i < 20 && !prov.done; i++)
        settle(w);
    assert_int_equal(prov.store.status, 0);
    assert_true(prov.store.stored >= 10);
    uint8_t pkey[VV_DHT_ID_BYTES];
    crypto_hash_sha256(pkey, (const uint8_t *)"doc-7", 5);
    memset(&get, 0, sizeof(get));
    assert_int_equal(vv_dht_node_get_providers(w->p[9], pkey, 5, on_provider, on_got, &get), 0);
    for (int i = 0; i < 20 && !get.done; i++)
        settle(w);
    assert_true(get.done);
    assert_int_equal(get.n_providers, 1);
    assert_int_equal(get.streamed, 1);
    assert_memory_equal(get.provider, w->peers[3].env.identity->node_id, VV_DHT_ID_BYTES);
    /* A key nobody provides: a complete lookup, no providers. */
    memset(&get, 0, sizeof(get));
    pkey[0] ^= 0xff;
    assert_int_equal(vv_dht_node_get_providers(w->p[9], pkey, 5, on_provider, on_got, &get), 0);
    for (int i = 0; i < 20 && !get.done; i++)
        settle(w);
    assert_true(get.done);
    assert_int_equal(get.n_providers, 0);
    /* Freed with a publish in flight: its callback fires, shutting down. */
    memset(&put, 0, sizeof(put));
    assert_int_equal(
        vv_dht_node_put(w->p[1], key, (const uint8_t *)"v3", 2, 60000, 0, on_stored, &put), 0);
    vv_dht_node_free(w->p[1]);
    w->p[1] = NULL;
    assert_true(put.done);
    assert_int_equal(put.store.status, VV_ENODE_SHUTTING_DOWN);
    free_world(w);
}

struct got_big {
    bool done;
    size_t n_values, len;
    uint32_t omitted;
    bool same;
};

static uint8_t big_value[20000];

static void on_got_big(void *arg, const struct vv_dht_get_result *r)
{
    struct got_big *g = arg;
    g->done = true;
    g->n_values = r->n_values;
    g->omitted = r->omitted;
    if (r->n_values == 1) {
        g->len = r->values[0].len;
        g->same = r->values[0].len == sizeof(big_value) &&
                  memcmp(r->values[0].value, big_value, sizeof(big_value)) == 0;
    }
}

static void test_values_too_large_for_a_datagram_go_over_connections(void **state)
{
    (void)state;
    struct world *w = make_world();
    join_all(w);
    for (int i = 0; i < N_PEERS; i++)
        assert_int_equal(vv_dht_node_bootstrap(w->p[i], vv_fake_env_address(&w->server)), 0);
    for (int i = 0; i < 20; i++)
        settle(w);
    /* Every node connected to every other (the fake env has no connection manager to ask:
     * a node that is not connected cannot be reached this way, and the store fails). */
    struct vv_fake_env *all[N_PEERS + 1];
    all[0] = &w->server;
    for (int i = 0; i < N_PEERS; i++)
        all[i + 1] = &w->peers[i];
    for (int i = 0; i <= N_PEERS; i++)
        for (int j = i + 1; j <= N_PEERS; j++)
            vv_fake_net_connect(&w->net, all[i], all[j]);
    settle(w);
    for (size_t i = 0; i < sizeof(big_value); i++)
        big_value[i] = (uint8_t)(i * 7);
    uint8_t key[VV_DHT_ID_BYTES];
    memset(key, 0x77, sizeof(key));
    struct got put = {0};
    assert_int_equal(
        vv_dht_node_put(w->p[0], key, big_value, sizeof(big_value), 60000, 0, on_stored, &put), 0);
    for (int i = 0; i < 20 && !put.done; i++)
        settle(w);
    assert_true(put.done);
    assert_int_equal(put.store.status, 0);
    assert_int_equal(put.store.stored, put.store.tried + 1);
    assert_true(put.store.tried >= 10);
    assert_int_equal(vv_dht_values_count(vv_dht_node_values(w->s)), 1);
    /* A node that joins now (its own store is empty): its GET by datagram learns that the
     * values did not fit (omitted) and fetches them over a connection, whole and verified. */
    struct vv_dht_node_hooks hooks = {.peer_address = fake_peer_address, .arg = w};
    struct vv_dht_node *late = vv_dht_node_new(&w->client.env, NULL, &hooks);
    for (int i = 0; i <= N_PEERS; i++)
        vv_fake_net_connect(&w->net, &w->client, all[i]);
    assert_int_equal(vv_dht_node_bootstrap(late, vv_fake_env_address(&w->server)), 0);
    for (int i = 0; i < 20; i++)
        settle(w);
    struct got_big g = {0};
    assert_int_equal(vv_dht_node_get(late, key, on_got_big, &g), 0);
    for (int i = 0; i < 20 && !g.done; i++)
        settle(w);
    assert_true(g.done);
    assert_int_equal(g.n_values, 1);
    assert_true(g.same);
    assert_true(g.omitted >= 1);
    assert_int_equal(vv_dht_values_count(vv_dht_node_values(late)), 0);
    vv_dht_node_free(late);
    free_world(w);
}

/* An own provider record of node env for "doc-<i>", as the republish keeps it. */
static void own_body(struct vv_fake_env *fe, int i, uint64_t expires, msgpack_sbuffer *sb)
{
    char cid[32];
    int n = snprintf(cid, sizeof(cid), "doc-%d", i);
    struct vv_dht_request rq = {.type = VV_DHT_MSG_ADD_PROVIDER};
    rq.record.content_id = cid;
    rq.record.content_id_len = (size_t)n;
    rq.record.content_type = "";
    rq.record.expires_ms = expires;
    crypto_hash_sha256(rq.target, (const uint8_t *)cid, (size_t)n);
    vv_dht_provider_sign(rq.target, expires, fe->env.identity->secret_key, rq.provider_pk,
                         rq.provider_sig);
    uint8_t frame[VV_DHT_DATAGRAM_MAX_BYTES];
    size_t len;
    assert_int_equal(vv_dht_request_encode(&rq, 1, frame, sizeof(frame), &len), 0);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(frame, len, &f), 0);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, f.body);
    vv_wire_frame_free(&f);
}

static void test_own_records_are_republished_by_region_and_expire(void **state)
{
    (void)state;
    struct world *w = make_world();
    join_all(w);
    for (int i = 0; i < N_PEERS; i++)
        assert_int_equal(vv_dht_node_bootstrap(w->p[i], vv_fake_env_address(&w->server)), 0);
    for (int i = 0; i < 20; i++)
        settle(w);
    /* 100 records restored (as after a restart), due at once. */
    uint64_t expires = vv_env_wall_ms(&w->peers[0].env) + 600000;
    for (int i = 0; i < 100; i++) {
        msgpack_sbuffer sb;
        own_body(&w->peers[0], i, expires, &sb);
        assert_int_equal(vv_dht_node_restore_own(w->p[0], VV_DHT_MSG_ADD_PROVIDER,
                                                 (const uint8_t *)sb.data, sb.size),
                         0);
        msgpack_sbuffer_destroy(&sb);
    }
    /* Bad bodies are refused: garbage, the wrong type, expired. */
    assert_int_equal(
        vv_dht_node_restore_own(w->p[0], VV_DHT_MSG_ADD_PROVIDER, (const uint8_t *)"\x91\x01", 2),
        VV_EDHT_MALFORMED);
    {
        msgpack_sbuffer sb;
        own_body(&w->peers[0], 1, expires, &sb);
        assert_int_equal(vv_dht_node_restore_own(w->p[0], VV_DHT_MSG_PUT_VALUE,
                                                 (const uint8_t *)sb.data, sb.size),
                         VV_EDHT_MALFORMED);
        msgpack_sbuffer_destroy(&sb);
        own_body(&w->peers[0], 1, 1000, &sb);
        assert_int_equal(vv_dht_node_restore_own(w->p[0], VV_DHT_MSG_ADD_PROVIDER,
                                                 (const uint8_t *)sb.data, sb.size),
                         VV_EDHT_EXPIRY);
        msgpack_sbuffer_destroy(&sb);
    }
    assert_int_equal(vv_dht_node_own_count(w->p[0]), 100);
    assert_int_equal(vv_dht_providers_count(vv_dht_node_providers(w->s)), 0);
    /* Fifteen nodes, fewer than k: one region; 48 records per region lookup, one lookup per
     * maintenance tick. */
    /* (settle: 50 ms of pumped time; a timer fired in one long advance would see its
     * datagrams unanswered, as the fake net delivers only when pumped) */
    for (int t = 0; t < 4 * VV_DHT_TICK_MS / 50; t++)
        settle(w);
    const struct vv_dht_node_stats *st = vv_dht_node_stats(w->p[0]);
    assert_int_equal(st->republish_lookups, 3);
    assert_int_equal(st->republished, 100 * N_PEERS); /* the server and 13 other peers */
    assert_int_equal(vv_dht_providers_count(vv_dht_node_providers(w->s)), 100);
    /* Found from another node. */
    uint8_t key[VV_DHT_ID_BYTES];
    crypto_hash_sha256(key, (const uint8_t *)"doc-77", 6);
    struct got get = {0};
    assert_int_equal(vv_dht_node_get_providers(w->p[9], key, 5, NULL, on_got, &get), 0);
    for (int i = 0; i < 20 && !get.done; i++)
        settle(w);
    assert_int_equal(get.n_providers, 1);
    assert_memory_equal(get.provider, w->peers[0].env.identity->node_id, VV_DHT_ID_BYTES);
    /* Not republished again before the period is over. */
    for (int t = 0; t < VV_DHT_TICK_MS / 50; t++)
        settle(w);
    assert_int_equal(st->republish_lookups, 3);
    /* Expired: dropped from the own records (and from the stores at their next sweep). */
    for (int t = 0; t < 130; t++)
        vv_fake_net_advance(&w->net, VV_DHT_TICK_MS);
    settle(w);
    assert_int_equal(vv_dht_node_own_count(w->p[0]), 0);
    assert_int_equal(vv_dht_providers_count(vv_dht_node_providers(w->s)), 0);
    free_world(w);
}

static void test_a_source_over_its_rate_is_answered_busy(void **state)
{
    (void)state;
    struct world *w = make_world();
    struct vv_dht_node_config cfg;
    vv_dht_node_config_defaults(&cfg);
    cfg.rate_per_source = 5;
    cfg.rate_burst = 5;
    vv_dht_node_reconfigure(w->s, &cfg);
    uint8_t target[VV_DHT_ID_BYTES] = {0};
    struct answer ans;
    int served = 0, busy = 0;
    /* Each ask takes 50 ms of fake time: a quarter of a token comes back meanwhile. */
    for (int i = 0; i < 20; i++) {
        ask(w, VV_DHT_MSG_FIND_NODE, target, 600, &ans);
        if (ans.status == 0)
            served++;
        else if (ans.status == VV_EREQ_BUSY) /* the layer maps error answer 1 to this */
            busy++;
    }
    assert_int_equal(served + busy, 20);
    assert_true(served >= 5 && served <= 10);
    assert_int_equal(vv_dht_node_stats(w->s)->rate_limited, (uint64_t)busy);
    free_world(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contacts_enter_the_table_only_after_a_signed_pong),
        cmocka_unit_test(test_saved_candidates_are_verified_and_bounded_in_flight),
        cmocka_unit_test(test_find_node_answer_is_cut_to_the_reply_budget),
        cmocka_unit_test(test_pong_is_signed),
        cmocka_unit_test(test_stores_need_a_token_and_a_valid_signature),
        cmocka_unit_test(test_published_values_and_providers_are_found_from_other_nodes),
        cmocka_unit_test(test_values_too_large_for_a_datagram_go_over_connections),
        cmocka_unit_test(test_own_records_are_republished_by_region_and_expire),
        cmocka_unit_test(test_a_source_over_its_rate_is_answered_busy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
