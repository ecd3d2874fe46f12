/* The libuv environment: timers fire on the real loop, cancel, repeat, and close cleanly;
 * signature checks run on libuv's thread pool and survive the env closing under them. */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "vivim/env_uv.h"
#include "vivim/env_verify.h"

struct probe {
    int fired_a, fired_b, repeats;
    uint64_t repeat_id, cancelled_id;
    struct vv_env *env;
};

static void cb_a(struct vv_env *env, void *arg)
{
    struct probe *p = arg;
    p->fired_a++;
    /* Cancelling from inside a callback, and a timer that was cancelled before. */
    vv_env_timer_cancel(env, p->cancelled_id);
}

static void cb_never(struct vv_env *env, void *arg)
{
    (void)env;
    (void)arg;
    fail_msg("a cancelled timer fired");
}

static void cb_repeat(struct vv_env *env, void *arg)
{
    struct probe *p = arg;
    if (++p->repeats == 3)
        vv_env_timer_cancel(env, p->repeat_id);
}

static void test_timers_fire_repeat_cancel_and_close_cleanly(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct vv_identity id = {0};
    struct vv_env_uv *e = vv_env_uv_new(&loop, &id);
    struct vv_env *env = vv_env_uv_env(e);
    struct probe p = {.env = env};
    uint64_t t0 = vv_env_now(env);
    vv_env_timer_start(env, 20, 0, cb_a, &p);
    p.cancelled_id = vv_env_timer_start(env, 10, 0, cb_never, &p);
    vv_env_timer_cancel(env, p.cancelled_id);
    p.repeat_id = vv_env_timer_start(env, 5, 5, cb_repeat, &p);
    assert_int_equal(vv_env_uv_timers(e), 2);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once no timer is left */
    assert_int_equal(p.fired_a, 1);
    assert_int_equal(p.repeats, 3);
    assert_true(vv_env_now(env) - t0 >= 15);
    assert_int_equal(vv_env_uv_timers(e), 0);

    /* Without a transport, messages cannot go anywhere. */
    uint8_t peer[VV_NODE_ID_BYTES] = {1};
    assert_int_equal(vv_env_send(env, peer, VV_CHANNEL_TEST, (const uint8_t *)"x", 1),
                     VV_ECONN_NOT_CONNECTED);
    uint8_t r1[16], r2[16];
    vv_env_random(env, r1, sizeof(r1));
    vv_env_random(env, r2, sizeof(r2));
    assert_memory_not_equal(r1, r2, sizeof(r1));

    /* Closing with timers pending frees everything once the loop runs. */
    vv_env_timer_start(env, 100000, 0, cb_never, &p);
    vv_env_uv_close(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

#define NCHECKS 300
struct verdicts {
    int n, wrong;
    bool want[NCHECKS];
    int seen[NCHECKS];
};
struct verdict_ctx {
    struct verdicts *v;
    int i;
};
static struct verdict_ctx vctx[NCHECKS];

static void on_verdict(struct vv_env *env, bool ok, void *arg)
{
    (void)env;
    struct verdict_ctx *c = arg;
    c->v->n++;
    c->v->seen[c->i]++;
    c->v->wrong += ok != c->v->want[c->i];
}

/* Asks for NCHECKS checks, every fifth with a bad signature. */
static void ask(struct vv_env *env, struct verdicts *v)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    for (int i = 0; i < NCHECKS; i++) {
        uint8_t msg[64], sig[64];
        randombytes_buf(msg, sizeof(msg));
        crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk);
        v->want[i] = i % 5 != 0;
        if (!v->want[i])
            msg[i % sizeof(msg)] ^= 0x80; /* the message changed after signing */
        vctx[i] = (struct verdict_ctx){v, i};
        assert_int_equal(vv_env_verify_async(env, VV_CHANNEL_TEST, pk, msg, sizeof(msg), sig,
                                             on_verdict, &vctx[i], NULL),
                         0);
    }
}

static void test_checks_run_on_the_thread_pool(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct vv_identity id = {0};
    struct vv_env_uv *e = vv_env_uv_new(&loop, &id);
    struct vv_env *env = vv_env_uv_env(e);
    struct verdicts v = {0};
    ask(env, &v);
    assert_int_equal(v.n, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once no timer or job is left */
    assert_int_equal(v.n, NCHECKS);
    assert_int_equal(v.wrong, 0);
    for (int i = 0; i < NCHECKS; i++)
        assert_int_equal(v.seen[i], 1);
    const struct vv_env_verify_stats *st = vv_env_verify_stats(env);
    assert_int_equal(st->valid, NCHECKS - NCHECKS / 5);
    assert_int_equal(st->invalid, NCHECKS / 5);
    assert_int_equal(st->offloaded, (NCHECKS + VV_VERIFY_BATCH_ITEMS - 1) / VV_VERIFY_BATCH_ITEMS);
    assert_int_equal(st->queued + st->running + st->bytes, 0);

    /* Closed while batches are on the pool: they come back and free themselves, and no
     * verdict comes after the close. (A batch may finish within the one loop turn run before
     * the close: its verdicts are given then, and right. Five batches wait behind the two
     * that run, so not all can.) */
    struct verdicts w = {0};
    ask(env, &w);
    uv_run(&loop, UV_RUN_NOWAIT); /* the batching timer: jobs go to the pool */
    int before_close = w.n;
    vv_env_uv_close(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w.n, before_close);
    assert_true(w.n < NCHECKS);
    assert_int_equal(w.wrong, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_repeat_cancel_and_close_cleanly),
        cmocka_unit_test(test_checks_run_on_the_thread_pool),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
