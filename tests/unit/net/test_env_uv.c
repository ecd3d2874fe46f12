/* The libuv environment: timers fire on the real loop, cancel, repeat, and close cleanly. */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "vivim/env_uv.h"

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

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_repeat_cancel_and_close_cleanly),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
