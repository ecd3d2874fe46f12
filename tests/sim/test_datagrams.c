/*
 * Datagrams between simulated nodes (sim.h: no connection, the uplink, latency, jitter and
 * loss of messages drawn per datagram, so they may reorder; dropped without a word at a
 * crashed node or an unknown address; refused over the size limit), and the request layer
 * over them: answered when both ends are up, timed out when the answer cannot come. Each
 * scenario runs twice with one seed and must give one trace hash. A failing run prints
 * its seed; VV_SIM_SEED=<seed> replays it.
 */
#include "vv_test.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "sim_test.h"
#include "vivim/env_request.h"
#include "vivim/wire.h"

#define DG_TYPE 0x0f20 /* a plain datagram on the test channel: body the sender's counter */
#define RQ_TYPE 0x0f21 /* a request by datagram, echoed by the server */
#define N_MAX   4096   /* datagrams one node records */

static uint64_t seed;

struct dg_node {
    struct vv_env *env;
    uint32_t index;
    uint64_t got[N_MAX]; /* counters received, in arrival order */
    uint32_t n_got;
    uint32_t bad_from; /* datagrams whose source or claimed ID is not a node's */
    uint32_t served;
};

/* The scenario's own record of what happened, which outlives crashed nodes. */
struct dg_world {
    struct vv_sim *sim;
    uint32_t answered, timed_out, other;
    uint64_t timeout_elapsed;
    int last_send_rc;
};

static struct dg_world *world;

static void on_datagram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                        const char *from, const uint8_t *frame, size_t len, void *arg)
{
    (void)env;
    struct dg_node *d = arg;
    struct vv_wire_frame f;
    uint64_t v;
    assert_int_equal(vv_wire_decode(frame, len, &f), 0);
    assert_int_equal(vv_wire_get_u64(&f.body, UINT64_MAX, &v), 0);
    vv_wire_frame_free(&f);
    /* The source address is the claimed node's address: nobody lies in this scenario. */
    int64_t idx = vv_sim_find(world->sim, claimed);
    char want[VV_ENV_ADDRESS_BYTES];
    if (idx >= 0)
        vv_sim_node_address(world->sim, (uint32_t)idx, want, sizeof(want));
    if (idx < 0 || strcmp(want, from) != 0)
        d->bad_from++;
    if (d->n_got < N_MAX)
        d->got[d->n_got++] = v;
}

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *req, void *arg)
{
    (void)peer;
    struct dg_node *d = arg;
    d->served++;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, req->body);
    assert_int_equal(vv_env_reply(env, ctx, (const uint8_t *)sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
}

static void *create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)sim;
    (void)arg;
    struct dg_node *d = vv_xcalloc(1, sizeof(*d));
    d->env = env;
    d->index = index;
    vv_env_set_datagram_handler(env, VV_CHANNEL_TEST, on_datagram, d);
    vv_env_set_server(env, VV_CHANNEL_TEST, serve, d);
    return d;
}

static void destroy(void *app, void *arg)
{
    (void)arg;
    vv_free(app);
}

static struct vv_sim *make_sim(uint64_t s, uint32_t n, double loss, uint32_t jitter_pct)
{
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, s, n);
    cfg.loss = loss;
    cfg.jitter_pct = jitter_pct;
    static const struct vv_sim_app app = {create, destroy, NULL};
    return vv_sim_new(&cfg, &app);
}

static size_t frame_u64(uint16_t type, uint64_t v, uint8_t *out, size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, 0);
    msgpack_pack_uint64(&pk, v);
    assert_true(sb.size <= cap);
    memcpy(out, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* Node 0 sends `count` datagrams numbered from `first` to node `to`, all at once. */
struct burst {
    uint32_t to, count;
    uint64_t first;
    const char *address; /* instead of node `to`'s, when set */
};

static void send_burst(struct vv_sim *sim, void *arg)
{
    struct burst *b = arg;
    char addr[VV_ENV_ADDRESS_BYTES];
    vv_sim_node_address(sim, b->to, addr, sizeof(addr));
    struct vv_env *env = vv_sim_env(sim, 0);
    for (uint32_t i = 0; i < b->count; i++) {
        uint8_t f[64];
        size_t n = frame_u64(DG_TYPE, b->first + i, f, sizeof(f));
        world->last_send_rc = vv_env_send_datagram(env, b->address ? b->address : addr, f, n);
        assert_int_equal(world->last_send_rc, 0);
    }
}

static struct dg_node *app(struct vv_sim *sim, uint32_t i)
{
    return vv_sim_app_of(sim, i);
}

/* ---- reordering ------------------------------------------------------------------------ */

static void reorder(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct dg_world w = {0};
    world = &w;
    struct vv_sim *sim = w.sim = make_sim(run->seed, 2, 0, 50);
    struct burst b = {.to = 1, .count = 500, .first = 1};
    vv_sim_at(sim, 1000, send_burst, &b);
    if (!vv_sim_run_to(run, sim, 5000))
        goto out;
    struct dg_node *d = app(sim, 1);
    assert_int_equal(d->n_got, 500); /* no loss configured: all arrive */
    assert_int_equal(d->bad_from, 0);
    uint32_t inversions = 0;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < d->n_got; i++) {
        sum += d->got[i];
        inversions += i > 0 && d->got[i] < d->got[i - 1];
    }
    assert_int_equal(sum, 500 * 501 / 2); /* each once */
    assert_true(inversions > 0);          /* datagrams overtake each other */
    assert_int_equal(vv_sim_totals(sim)->dgrams_delivered, 500);
    assert_int_equal(vv_sim_links(sim, 0), 0); /* no connection was needed */
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_datagrams_need_no_connection_and_may_reorder(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(reorder, NULL, seed, 0, true);
}

/* ---- loss ------------------------------------------------------------------------------ */

static void lossy(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct dg_world w = {0};
    world = &w;
    struct vv_sim *sim = w.sim = make_sim(run->seed, 2, 0.2, 10);
    struct burst b = {.to = 1, .count = 2000, .first = 1};
    vv_sim_at(sim, 1000, send_burst, &b);
    if (!vv_sim_run_to(run, sim, 5000))
        goto out;
    const struct vv_sim_counters *t = vv_sim_totals(sim);
    assert_int_equal(t->dgrams_sent, 2000);
    assert_int_equal(t->dgrams_delivered + t->dgrams_dropped, 2000);
    assert_int_equal(app(sim, 1)->n_got, t->dgrams_delivered);
    /* 20% loss of 2000: 400 expected, sd about 18. */
    assert_in_range(t->dgrams_dropped, 300, 500);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_datagrams_are_lost_at_the_configured_rate(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(lossy, NULL, seed, 0, true);
}

/* ---- crash, unknown address, oversize -------------------------------------------------- */

static void oversize(struct vv_sim *sim, void *arg)
{
    (void)arg;
    struct vv_env *env = vv_sim_env(sim, 0);
    char addr[VV_ENV_ADDRESS_BYTES];
    vv_sim_node_address(sim, 1, addr, sizeof(addr));
    /* A frame of exactly one byte over the limit: a bin body padded to size. */
    uint8_t f[VV_ENV_MAX_DATAGRAM_FRAME_BYTES + 1];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, DG_TYPE, 0);
    size_t hdr = sb.size + 3; /* bin16 header */
    uint8_t zeros[VV_ENV_MAX_DATAGRAM_FRAME_BYTES] = {0};
    msgpack_pack_bin(&pk, sizeof(f) - hdr);
    msgpack_pack_bin_body(&pk, zeros, sizeof(f) - hdr);
    assert_int_equal(sb.size, sizeof(f));
    memcpy(f, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(vv_env_send_datagram(env, addr, f, sizeof(f)), VV_EWIRE_TOO_LARGE);
    /* The simulator's own op refuses it too, whoever calls it. */
    assert_int_equal(env->ops->datagram(env->impl, addr, f, sizeof(f)), VV_EWIRE_TOO_LARGE);
}

static void crash(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct dg_world w = {0};
    world = &w;
    struct vv_sim *sim = w.sim = make_sim(run->seed, 3, 0, 10);
    struct burst to_crashed = {.to = 1, .count = 10, .first = 100};
    struct burst to_nowhere = {.count = 10, .first = 200, .address = "10.0.0.99:4747"};
    struct burst other_port = {.count = 10, .first = 300, .address = "10.0.0.2:4748"};
    struct burst after = {.to = 1, .count = 10, .first = 400};
    struct burst to_two = {.to = 2, .count = 10, .first = 500};
    vv_sim_crash_at(sim, 500, 1);
    vv_sim_at(sim, 1000, send_burst, &to_crashed);
    vv_sim_at(sim, 1000, send_burst, &to_nowhere);
    vv_sim_at(sim, 1000, send_burst, &other_port);
    vv_sim_at(sim, 1000, send_burst, &to_two);
    vv_sim_at(sim, 1000, oversize, NULL);
    vv_sim_restart_at(sim, 2000, 1);
    vv_sim_at(sim, 3000, send_burst, &after);
    if (!vv_sim_run_to(run, sim, 1999))
        goto out;
    assert_int_equal(app(sim, 2)->n_got, 10);
    const struct vv_sim_counters *t = vv_sim_totals(sim);
    assert_int_equal(t->dgrams_sent, 40);
    assert_int_equal(t->dgrams_dropped, 30); /* crashed, no such node, no such port */
    if (!vv_sim_run_to(run, sim, 5000))
        goto out;
    /* The restarted node gets only what was sent after it came back. */
    struct dg_node *d = app(sim, 1);
    assert_int_equal(d->n_got, 10);
    for (uint32_t i = 0; i < d->n_got; i++)
        assert_in_range(d->got[i], 400, 409);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_datagrams_to_a_crashed_node_or_unknown_address_vanish(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(crash, NULL, seed, 0, false);
}

/* ---- requests by datagram -------------------------------------------------------------- */

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    (void)arg;
    if (a->status == 0) {
        world->answered++;
    } else if (a->status == VV_EREQ_TIMEOUT) {
        world->timed_out++;
        world->timeout_elapsed = a->elapsed_ms;
    } else {
        world->other++;
    }
}

static void ask(struct vv_sim *sim, void *arg)
{
    uint32_t to = (uint32_t)(uintptr_t)arg;
    char addr[VV_ENV_ADDRESS_BYTES];
    vv_sim_node_address(sim, to, addr, sizeof(addr));
    uint8_t body[16];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_uint64(&pk, 42);
    memcpy(body, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(vv_env_request_datagram(vv_sim_env(sim, 0), vv_sim_node_id(sim, to), addr,
                                             RQ_TYPE, body, n, 2000, on_answer, NULL, NULL),
                     0);
}

static void requests(struct vv_sim_run *run, void *arg)
{
    (void)arg;
    struct dg_world w = {0};
    world = &w;
    struct vv_sim *sim = w.sim = make_sim(run->seed, 3, 0, 10);
    for (uint64_t t = 1000; t < 1100; t += 10)
        vv_sim_at(sim, t, ask, (void *)(uintptr_t)1);
    vv_sim_crash_at(sim, 3000, 2);
    vv_sim_at(sim, 4000, ask, (void *)(uintptr_t)2);
    if (!vv_sim_run_to(run, sim, 3500))
        goto out;
    assert_int_equal(w.answered, 10);
    assert_int_equal(app(sim, 1)->served, 10);
    assert_int_equal(w.timed_out, 0);
    if (!vv_sim_run_to(run, sim, 10000))
        goto out;
    assert_int_equal(w.answered, 10);
    assert_int_equal(w.timed_out, 1);
    assert_int_equal(w.timeout_elapsed, 2000);
    assert_int_equal(w.other, 0);
    assert_int_equal(vv_env_req_stats(vv_sim_env(sim, 0))->in_flight, 0);
    assert_int_equal(vv_sim_links(sim, 0), 0);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

static void test_requests_by_datagram_are_answered_or_time_out(void **state)
{
    (void)state;
    VV_SIM_CHECK_DETERMINISM(requests, NULL, seed, 0, false);
}

int main(void)
{
    seed = vv_sim_seed_from_env(20261206);
    printf("seed %llu (VV_SIM_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_datagrams_need_no_connection_and_may_reorder),
        cmocka_unit_test(test_datagrams_are_lost_at_the_configured_rate),
        cmocka_unit_test(test_datagrams_to_a_crashed_node_or_unknown_address_vanish),
        cmocka_unit_test(test_requests_by_datagram_are_answered_or_time_out),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
