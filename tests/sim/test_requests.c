/*
 * The request/response layer (vivim/env_request.h) between simulated nodes: the same
 * src/env/request.c the daemon runs, here over the simulator's links. Requests are answered
 * on a healthy network, time out under loss and across a partition, fail with
 * VV_EREQ_PEER_DOWN when the peer crashes (after the failure-detection delay, not at their
 * timeout), every request completes exactly once, and a seed replays to the same trace.
 * A failing run prints its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "sim_test.h"
#include "vivim/env_request.h"

#define RQ_TYPE 0x0f10 /* the scenario's request, on the test channel */

static uint64_t seed;

struct rq_params {
    uint32_t want;        /* connections each node keeps */
    uint32_t interval_ms; /* between one node's requests */
    uint32_t timeout_ms;
    int32_t only_from; /* >= 0: only this node sends requests */
    int32_t only_to;   /* >= 0: it sends them only to this node (and dials it) */
    bool hold;         /* servers never answer */
};

struct rq_node {
    struct vv_sim *sim;
    struct vv_env *env;
    const struct rq_params *p;
    uint32_t index;
    uint64_t sent, refused, ok, wrong, timeout, down, busy, other;
    uint64_t down_elapsed_max, down_elapsed_min;
    uint64_t served;
};

/* Totals over nodes, including those that crashed (their counts are folded in here when
 * they go). */
struct rq_totals {
    uint64_t sent, refused, ok, wrong, timeout, down, busy, other, served, in_flight;
    uint64_t down_elapsed_max, down_elapsed_min;
};

static struct rq_totals gone; /* nodes destroyed so far in the current run */

static void pack_uints(msgpack_sbuffer *sb, uint64_t a, uint64_t b, int n)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (n == 1) {
        msgpack_pack_uint64(&pk, a);
        return;
    }
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, a);
    msgpack_pack_uint64(&pk, b);
}

static void rq_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    struct rq_node *n = arg;
    (void)env;
    switch (a->status) {
    case 0: {
        /* The reply is [x, x + 1] for the request x. */
        const msgpack_object *o = &a->reply->body;
        if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2 &&
            o->via.array.ptr[1].via.u64 == o->via.array.ptr[0].via.u64 + 1)
            n->ok++;
        else
            n->wrong++;
        break;
    }
    case VV_EREQ_TIMEOUT:
        n->timeout++;
        break;
    case VV_EREQ_PEER_DOWN:
        n->down++;
        if (a->elapsed_ms > n->down_elapsed_max)
            n->down_elapsed_max = a->elapsed_ms;
        if (n->down_elapsed_min == 0 || a->elapsed_ms < n->down_elapsed_min)
            n->down_elapsed_min = a->elapsed_ms;
        break;
    case VV_EREQ_BUSY:
        n->busy++;
        break;
    default:
        n->other++;
    }
}

static void rq_serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                     const struct vv_wire_frame *req, void *arg)
{
    struct rq_node *n = arg;
    (void)peer;
    n->served++;
    if (n->p->hold)
        return; /* never answered: dropped when the peer goes, or at the end */
    uint64_t x;
    if (vv_wire_get_u64(&req->body, UINT64_MAX - 1, &x) != 0) {
        vv_env_reply_error(env, ctx, VV_REQ_ERR_BAD_REQUEST, "want a uint");
        return;
    }
    msgpack_sbuffer sb;
    pack_uints(&sb, x, x + 1, 2);
    vv_env_reply(env, ctx, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void rq_tick(struct vv_env *env, void *arg)
{
    struct rq_node *n = arg;
    const struct rq_params *p = n->p;
    if (p->only_from >= 0 && (uint32_t)p->only_from != n->index)
        return;
    uint32_t links = vv_sim_links(n->sim, n->index);
    const uint8_t *to;
    if (p->only_to >= 0) {
        to = vv_sim_node_id(n->sim, (uint32_t)p->only_to);
        bool linked = false;
        for (uint32_t k = 0; k < links; k++)
            linked |= vv_sim_link_peer(n->sim, n->index, k) == (uint32_t)p->only_to;
        if (!linked) {
            vv_env_connect(env, to, NULL);
            return;
        }
    } else {
        uint32_t count = vv_sim_node_count(n->sim);
        if (links < p->want && count > 1) {
            uint32_t t = (uint32_t)vv_env_random_below(env, count);
            if (t != n->index)
                vv_env_connect(env, vv_sim_node_id(n->sim, t), NULL);
        }
        if (links == 0)
            return;
        to = vv_sim_node_id(
            n->sim, vv_sim_link_peer(n->sim, n->index, (uint32_t)vv_env_random_below(env, links)));
    }
    msgpack_sbuffer sb;
    pack_uints(&sb, vv_env_random_below(env, UINT32_MAX), 0, 1);
    int rc = vv_env_request(env, to, RQ_TYPE, (const uint8_t *)sb.data, sb.size, p->timeout_ms,
                            rq_answer, n, NULL);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0)
        n->sent++;
    else
        n->refused++;
}

static void *rq_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    struct rq_node *n = vv_xcalloc(1, sizeof(*n));
    n->sim = sim;
    n->env = env;
    n->p = arg;
    n->index = index;
    vv_env_set_server(env, VV_CHANNEL_TEST, rq_serve, n);
    uint64_t first = vv_env_random_below(env, n->p->interval_ms);
    vv_env_timer_start(env, first + 1, n->p->interval_ms, rq_tick, n);
    return n;
}

static void fold(struct rq_totals *t, const struct rq_node *n)
{
    t->sent += n->sent;
    t->refused += n->refused;
    t->ok += n->ok;
    t->wrong += n->wrong;
    t->timeout += n->timeout;
    t->down += n->down;
    t->busy += n->busy;
    t->other += n->other;
    t->served += n->served;
    t->in_flight += vv_env_req_stats(n->env)->in_flight;
    if (n->down_elapsed_max > t->down_elapsed_max)
        t->down_elapsed_max = n->down_elapsed_max;
    if (n->down_elapsed_min && (!t->down_elapsed_min || n->down_elapsed_min < t->down_elapsed_min))
        t->down_elapsed_min = n->down_elapsed_min;
}

static void rq_destroy(void *app, void *arg)
{
    (void)arg;
    /* Called before the node's env forgets its requests: those in flight count as such. */
    fold(&gone, app);
    vv_free(app);
}

static struct rq_totals totals(struct vv_sim *sim)
{
    struct rq_totals t = gone;
    for (uint32_t i = 0; i < vv_sim_node_count(sim); i++)
        if (vv_sim_node_up(sim, i))
            fold(&t, vv_sim_app_of(sim, i));
    return t;
}

/* Every request sent completed exactly once, or is still in flight. */
static void assert_accounted(const struct rq_totals *t)
{
    assert_int_equal(t->sent,
                     t->ok + t->wrong + t->timeout + t->down + t->busy + t->other + t->in_flight);
    assert_int_equal(t->wrong, 0);
    assert_int_equal(t->other, 0);
}

static struct vv_sim *rq_sim(uint64_t s, uint32_t n, double loss, struct rq_params *p)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, s, n);
    cfg.loss = loss;
    struct vv_sim_app app = {rq_create, rq_destroy, p};
    memset(&gone, 0, sizeof(gone));
    return vv_sim_new(&cfg, &app);
}

static void healthy_network(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct rq_params p = {
        .want = 4, .interval_ms = 100, .timeout_ms = 2000, .only_from = -1, .only_to = -1};
    struct vv_sim *sim = rq_sim(run->seed, 50, 0.0, &p);
    if (!vv_sim_run_to(run, sim, 20000))
        goto out;
    struct rq_totals t = totals(sim);
    assert_accounted(&t);
    assert_true(t.sent > 5000);
    assert_int_equal(t.timeout, 0);
    assert_int_equal(t.down, 0);
    assert_int_equal(t.busy, 0);
    /* All but those sent in the last round trip are answered. */
    assert_true(t.in_flight < 200);
    assert_int_equal(t.ok + t.in_flight, t.sent);
    assert_true(t.served >= t.ok); /* every answer came from a server that saw the request */
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_requests_are_answered_on_a_healthy_network(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(healthy_network, NULL, seed, 0, false);
}

static void lossy_network(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct rq_params p = {
        .want = 4, .interval_ms = 100, .timeout_ms = 1000, .only_from = -1, .only_to = -1};
    struct vv_sim *sim = rq_sim(run->seed, 50, 0.1, &p);
    if (!vv_sim_run_to(run, sim, 20000))
        goto out;
    struct rq_totals t = totals(sim);
    assert_accounted(&t);
    /* A request or its answer is lost with probability 1 - 0.9^2 = 19%. */
    double lost = (double)t.timeout / (double)(t.sent - t.in_flight);
    printf("loss 10%%: %llu sent, %llu answered, %llu timed out (%.1f%%)\n",
           (unsigned long long)t.sent, (unsigned long long)t.ok, (unsigned long long)t.timeout,
           100.0 * lost);
    assert_true(lost > 0.14 && lost < 0.24);
    assert_int_equal(t.down, 0);
    /* Answers that arrive are correct, and nothing is answered twice. */
    assert_true(t.ok > 0);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_requests_time_out_under_loss(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(lossy_network, NULL, seed, 0, false);
}

/* Requests live longer than failure detection (3 s): those sent across the cut just before
 * it are failed when the links break, the ones after never leave (no link). */
static void partition_long_timeout(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    enum { N = 20 };
    struct rq_params p = {
        .want = 6, .interval_ms = 100, .timeout_ms = 10000, .only_from = -1, .only_to = -1};
    struct vv_sim *sim = rq_sim(run->seed, N, 0.0, &p);
    uint32_t group[N];
    for (uint32_t i = 0; i < N; i++)
        group[i] = i % 2;
    vv_sim_partition_at(sim, 5001, group);
    if (!vv_sim_run_to(run, sim, 5000))
        goto out;
    struct rq_totals before = totals(sim);
    assert_int_equal(before.down + before.timeout, 0);
    if (!vv_sim_run_to(run, sim, 20000))
        goto out;
    struct rq_totals t = totals(sim);
    assert_accounted(&t);
    printf("partition: %llu sent, %llu answered, %llu failed by peer down, %llu timed out\n",
           (unsigned long long)t.sent, (unsigned long long)t.ok, (unsigned long long)t.down,
           (unsigned long long)t.timeout);
    assert_true(t.down > 0);
    /* They were failed by the link breaking (about 3 s after the cut), not by their own
     * 10 s timeout. */
    assert_true(t.down_elapsed_max < 5000);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

/* The same cut with a timeout shorter than failure detection: they time out instead. */
static void partition_short_timeout(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    enum { N = 20 };
    struct rq_params p = {
        .want = 6, .interval_ms = 100, .timeout_ms = 500, .only_from = -1, .only_to = -1};
    struct vv_sim *sim = rq_sim(run->seed, N, 0.0, &p);
    uint32_t group[N];
    for (uint32_t i = 0; i < N; i++)
        group[i] = i % 2;
    vv_sim_partition_at(sim, 5001, group);
    if (!vv_sim_run_to(run, sim, 20000))
        goto out;
    struct rq_totals t = totals(sim);
    assert_accounted(&t);
    assert_true(t.timeout > 0);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_requests_across_a_partition_time_out_then_fail_when_links_break(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(partition_long_timeout, NULL, seed, 0, false);
    VV_SIM_CHECK_DETERMINISM(partition_short_timeout, NULL, seed, 0, false);
}

static void crashed_peer(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    /* Node 0 asks node 1 every 100 ms with a 60 s timeout; node 1 never answers. Node 1
     * crashes at 5 s; the link breaks for node 0 at 8 s (3 s detection). */
    struct rq_params p = {.want = 1,
                          .interval_ms = 100,
                          .timeout_ms = 60000,
                          .only_from = 0,
                          .only_to = 1,
                          .hold = true};
    struct vv_sim *sim = rq_sim(run->seed, 3, 0.0, &p);
    vv_sim_crash_at(sim, 5000, 1);
    if (!vv_sim_run_to(run, sim, 7990))
        goto out;
    struct rq_node *n0 = vv_sim_app_of(sim, 0);
    assert_true(n0->sent > 40);
    assert_int_equal(n0->down, 0);
    /* Sends after the crash still go out (the link looks up until detection) and wait. */
    assert_int_equal(vv_env_req_stats(n0->env)->in_flight, n0->sent);
    if (!vv_sim_run_to(run, sim, 8100))
        goto out;
    assert_int_equal(n0->down, n0->sent);
    assert_int_equal(n0->timeout, 0);
    assert_int_equal(vv_env_req_stats(n0->env)->in_flight, 0);
    /* The oldest had waited since before the crash: failed at detection, not at its 60 s
     * timeout. */
    assert_true(n0->down_elapsed_max > 7000 && n0->down_elapsed_max <= 8000);
    /* Never more than the per-peer bound in flight: the rest were refused at once. */
    assert_int_equal(n0->sent, VV_REQ_DEFAULT_MAX_PER_PEER);
    assert_true(n0->refused > 0);
    assert_int_equal(vv_env_req_stats(n0->env)->refused, n0->refused);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_a_crashed_peer_fails_its_requests_after_failure_detection(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(crashed_peer, NULL, seed, 0, false);
}

/* One scenario with every outcome: loss, a partition that heals, a crash and restart. */
static void run_mixed(uint64_t s, uint64_t *hash, struct rq_totals *out)
{
    enum { N = 40 };
    struct rq_params p = {
        .want = 4, .interval_ms = 50, .timeout_ms = 800, .only_from = -1, .only_to = -1};
    struct vv_sim *sim = rq_sim(s, N, 0.05, &p);
    uint32_t group[N];
    for (uint32_t i = 0; i < N; i++)
        group[i] = i < N / 4;
    vv_sim_partition_at(sim, 4000, group);
    vv_sim_partition_at(sim, 9000, NULL);
    vv_sim_crash_at(sim, 6000, 3);
    vv_sim_restart_at(sim, 12000, 3);
    vv_sim_run_until(sim, 16000);
    *hash = vv_sim_trace_hash(sim);
    *out = totals(sim);
    vv_sim_free(sim);
}

static void test_same_seed_gives_the_same_trace_and_outcomes(void **state)
{
    (void)state;
    uint64_t h1, h2, h3;
    struct rq_totals a, b, c;
    run_mixed(seed, &h1, &a);
    run_mixed(seed, &h2, &b);
    run_mixed(seed + 1, &h3, &c);
    if (h1 != h2)
        fail_msg("seed %llu: two runs differ: %016llx vs %016llx", (unsigned long long)seed,
                 (unsigned long long)h1, (unsigned long long)h2);
    assert_memory_equal(&a, &b, sizeof(a));
    assert_true(h1 != h3);
    assert_accounted(&a);
    assert_true(a.ok > 0 && a.timeout > 0 && a.down > 0);
    printf("mixed: %llu sent, %llu answered, %llu timed out, %llu peer down, trace %016llx\n",
           (unsigned long long)a.sent, (unsigned long long)a.ok, (unsigned long long)a.timeout,
           (unsigned long long)a.down, (unsigned long long)h1);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    seed = vv_sim_seed_from_env(20261205);
    printf("sim seed %llu (replay with VV_SIM_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_are_answered_on_a_healthy_network),
        cmocka_unit_test(test_requests_time_out_under_loss),
        cmocka_unit_test(test_requests_across_a_partition_time_out_then_fail_when_links_break),
        cmocka_unit_test(test_a_crashed_peer_fails_its_requests_after_failure_detection),
        cmocka_unit_test(test_same_seed_gives_the_same_trace_and_outcomes),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (failed)
        printf("sim: failing seed %llu: VV_SIM_SEED=%llu %s\n", (unsigned long long)seed,
               (unsigned long long)seed, "sim_test_requests");
    return failed;
}
