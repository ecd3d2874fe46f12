/*
 * Batched signature checks (vivim/env_verify.h) on the fake env, whose clock and timers the
 * test drives: verdicts right for good and bad signatures and never given from within the
 * call; checks of a turn gathered into batches of VV_VERIFY_BATCH_ITEMS, one batch per turn
 * without an offload operation; cancellation by id and by channel; the bounds; the env
 * ending with checks pending, and from within a verdict callback. A test offload operation
 * that holds jobs until the test runs them stands in for the thread pool: at most
 * VV_VERIFY_MAX_JOBS at once, a refused offload checked inline, a job finishing after the
 * env ended touching nothing. (The real thread pool: tests/unit/net/test_env_uv.c.)
 */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "fake_env.h"
#include "vivim/env_verify.h"

struct signer {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
};

static void signer_init(struct signer *s, uint8_t seed_byte)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, seed_byte, sizeof(seed));
    crypto_sign_seed_keypair(s->pk, s->sk, seed);
}

/* Message i: "message <i>", signed by s; a bad one has a flipped signature bit. */
struct item {
    char msg[32];
    size_t len;
    uint8_t sig[64];
    bool good;
};

static void make_item(struct item *it, const struct signer *s, int i, bool good)
{
    it->len = (size_t)snprintf(it->msg, sizeof(it->msg), "message %d", i);
    crypto_sign_detached(it->sig, NULL, (const uint8_t *)it->msg, it->len, s->sk);
    if (!good)
        it->sig[i % 64] ^= 0x01;
    it->good = good;
}

/* What the callbacks saw. */
#define MAXV 8192
struct seen {
    int n;
    int index[MAXV];
    bool ok[MAXV];
    struct vv_env *env; /* when set, the callback for index end_at ends the env */
    int end_at;
    struct vv_fake_env *fe; /* for callbacks that ask for a check in turn */
    const struct signer *s;
    bool resubmit;
};

struct ctx {
    struct seen *seen;
    int index;
};

static struct ctx ctxs[MAXV];

static void on_verdict(struct vv_env *env, bool ok, void *arg)
{
    struct ctx *c = arg;
    struct seen *s = c->seen;
    assert_true(s->n < MAXV);
    s->index[s->n] = c->index;
    s->ok[s->n] = ok;
    s->n++;
    if (s->env != NULL && c->index == s->end_at)
        vv_env_fini(env);
    if (s->resubmit && c->index == 0) {
        struct item it;
        make_item(&it, s->s, 1000, true);
        ctxs[1000] = (struct ctx){s, 1000};
        assert_int_equal(vv_env_verify_async(env, VV_CHANNEL_TEST, s->s->pk,
                                             (const uint8_t *)it.msg, it.len, it.sig, on_verdict,
                                             &ctxs[1000], NULL),
                         0);
        assert_int_equal(s->n, 1); /* not answered from within the call */
    }
}

static int submit(struct vv_fake_env *fe, struct seen *seen, const struct signer *s, int i,
                  bool good, enum vv_channel ch, uint64_t *id)
{
    struct item it;
    make_item(&it, s, i, good);
    ctxs[i] = (struct ctx){seen, i};
    int rc = vv_env_verify_async(&fe->env, ch, s->pk, (const uint8_t *)it.msg, it.len, it.sig,
                                 on_verdict, &ctxs[i], id);
    /* The layer keeps a copy: the caller's bytes may change at once. */
    memset(&it, 0xee, sizeof(it));
    return rc;
}

static void test_verdicts_are_right_and_come_later(void **state)
{
    (void)state;
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 1);
    struct signer s;
    signer_init(&s, 7);
    struct seen seen = {0};
    for (int i = 0; i < 10; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, i % 3 != 0, VV_CHANNEL_TEST, NULL), 0);
    assert_int_equal(seen.n, 0);
    assert_int_equal(vv_env_verify_stats(&fe.env)->queued, 10);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, 10);
    for (int k = 0; k < 10; k++) {
        assert_int_equal(seen.index[k], k); /* one batch: submission order */
        assert_int_equal(seen.ok[k], k % 3 != 0);
    }
    const struct vv_env_verify_stats *st = vv_env_verify_stats(&fe.env);
    assert_int_equal(st->valid, 6);
    assert_int_equal(st->invalid, 4);
    assert_int_equal(st->batches, 1);
    assert_int_equal(st->offloaded, 0);
    assert_int_equal(st->queued + st->running + st->bytes, 0);
    assert_int_equal(fe.verifies, 10); /* through the env's verify op, inline */
    /* A signature by another key, over the same bytes, is refused. */
    struct signer other;
    signer_init(&other, 8);
    struct item it;
    make_item(&it, &other, 50, true);
    ctxs[50] = (struct ctx){&seen, 50};
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, s.pk, (const uint8_t *)it.msg,
                                         it.len, it.sig, on_verdict, &ctxs[50], NULL),
                     0);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, 11);
    assert_false(seen.ok[10]);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

/* 150 checks: batches of 64, 64 and 22, one per turn. */
static void test_checks_are_batched_one_batch_per_turn_inline(void **state)
{
    (void)state;
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 2);
    struct signer s;
    signer_init(&s, 9);
    struct seen seen = {0};
    for (int i = 0; i < 150; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, true, VV_CHANNEL_TEST, NULL), 0);
    assert_true(vv_fake_env_fire_next(&fe));
    assert_int_equal(seen.n, VV_VERIFY_BATCH_ITEMS);
    assert_true(vv_fake_env_fire_next(&fe));
    assert_int_equal(seen.n, 2 * VV_VERIFY_BATCH_ITEMS);
    assert_true(vv_fake_env_fire_next(&fe));
    assert_int_equal(seen.n, 150);
    assert_false(vv_fake_env_fire_next(&fe)); /* nothing left armed */
    for (int k = 0; k < 150; k++)
        assert_true(seen.ok[k]);
    assert_int_equal(vv_env_verify_stats(&fe.env)->batches, 3);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

static void test_cancel_by_id_and_by_channel(void **state)
{
    (void)state;
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 3);
    struct signer s;
    signer_init(&s, 10);
    struct seen seen = {0};
    uint64_t ids[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(
            submit(&fe, &seen, &s, i, true, i < 3 ? VV_CHANNEL_PUBSUB : VV_CHANNEL_DHT, &ids[i]),
            0);
    vv_env_verify_cancel(&fe.env, ids[4]);
    vv_env_verify_cancel(&fe.env, ids[4]); /* twice: nothing more */
    vv_env_verify_cancel(&fe.env, 999999); /* unknown: nothing */
    vv_env_verify_cancel_channel(&fe.env, VV_CHANNEL_PUBSUB);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.index[0], 3);
    assert_int_equal(seen.index[1], 5);
    assert_int_equal(vv_env_verify_stats(&fe.env)->cancelled, 4);
    vv_env_verify_cancel(&fe.env, ids[3]); /* finished: nothing */
    assert_int_equal(vv_env_verify_stats(&fe.env)->cancelled, 4);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

static void test_bounds_and_bad_arguments(void **state)
{
    (void)state;
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 4);
    struct signer s;
    signer_init(&s, 11);
    struct seen seen = {0};
    uint8_t sig[64] = {0};
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, NULL, (const uint8_t *)"x", 1,
                                         sig, on_verdict, &ctxs[0], NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, s.pk, NULL, 1, sig, on_verdict,
                                         &ctxs[0], NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, s.pk, (const uint8_t *)"x", 1,
                                         sig, NULL, NULL, NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_verify_async(&fe.env, (enum vv_channel)VV_ENV_MAX_CHANNELS, s.pk,
                                         (const uint8_t *)"x", 1, sig, on_verdict, &ctxs[0], NULL),
                     VV_EINVAL);
    /* The count bound. */
    for (int i = 0; i < VV_VERIFY_MAX_ITEMS; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, true, VV_CHANNEL_TEST, NULL), 0);
    assert_int_equal(submit(&fe, &seen, &s, VV_VERIFY_MAX_ITEMS, true, VV_CHANNEL_TEST, NULL),
                     VV_EBUSY);
    assert_int_equal(vv_env_verify_stats(&fe.env)->busy, 1);
    while (vv_fake_env_fire_next(&fe))
        ;
    assert_int_equal(seen.n, VV_VERIFY_MAX_ITEMS);
    /* The byte bound: one message of the whole budget fits, and then not one byte more. */
    size_t big = VV_VERIFY_MAX_BYTES;
    uint8_t *msg = vv_xcalloc(1, big + 1);
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, s.pk, msg, big + 1, sig,
                                         on_verdict, &ctxs[0], NULL),
                     VV_EINVAL);
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, s.pk, msg, big, sig, on_verdict,
                                         &ctxs[0], NULL),
                     0);
    assert_int_equal(vv_env_verify_async(&fe.env, VV_CHANNEL_TEST, s.pk, msg, 1, sig, on_verdict,
                                         &ctxs[1], NULL),
                     VV_EBUSY);
    vv_free(msg);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, VV_VERIFY_MAX_ITEMS + 1);
    assert_false(seen.ok[VV_VERIFY_MAX_ITEMS]); /* zeros are no signature */
    assert_int_equal(vv_env_verify_stats(&fe.env)->bytes, 0);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

/* The env ends with checks pending: no verdict, nothing leaks (the allocator checks), and
 * the env works again afterwards. */
static void test_env_end_drops_pending_checks(void **state)
{
    (void)state;
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 5);
    struct signer s;
    signer_init(&s, 12);
    struct seen seen = {0};
    for (int i = 0; i < 100; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, true, VV_CHANNEL_TEST, NULL), 0);
    vv_env_fini(&fe.env);
    vv_fake_env_advance(&fe, 10);
    assert_int_equal(seen.n, 0);
    assert_int_equal(submit(&fe, &seen, &s, 0, true, VV_CHANNEL_TEST, NULL), 0);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, 1);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

/* A verdict callback ends the env: the rest of its batch gets no verdict. A callback that
 * asks for another check gets its verdict in a later turn. */
static void test_callbacks_may_end_the_env_or_ask_again(void **state)
{
    (void)state;
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 6);
    struct signer s;
    signer_init(&s, 13);
    struct seen seen = {.env = &fe.env, .end_at = 2};
    for (int i = 0; i < 5; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, true, VV_CHANNEL_TEST, NULL), 0);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, 3);
    assert_null(fe.env.verify);
    vv_fake_env_advance(&fe, 10);
    assert_int_equal(seen.n, 3);

    struct seen again = {.resubmit = true, .s = &s, .fe = &fe};
    assert_int_equal(submit(&fe, &again, &s, 0, true, VV_CHANNEL_TEST, NULL), 0);
    assert_true(vv_fake_env_fire_next(&fe));
    assert_int_equal(again.n, 1);
    assert_true(vv_fake_env_fire_next(&fe));
    assert_int_equal(again.n, 2);
    assert_int_equal(again.index[1], 1000);
    assert_true(again.ok[1]);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

/* ---- a held offload: the test plays the thread pool ---- */

#define MAXJOBS 64
struct pool {
    void (*work[MAXJOBS])(void *);
    void (*done[MAXJOBS])(void *);
    void *job[MAXJOBS];
    int n;
    int refuse; /* refuse this many offloads */
};
static struct pool pool;

static int held_offload(void *impl, void (*work)(void *), void (*done)(void *), void *job)
{
    (void)impl;
    if (pool.refuse > 0) {
        pool.refuse--;
        return VV_EIO;
    }
    assert_true(pool.n < MAXJOBS);
    pool.work[pool.n] = work;
    pool.done[pool.n] = done;
    pool.job[pool.n] = job;
    pool.n++;
    return 0;
}

/* Runs the oldest held job: its work, then its completion. */
static void pool_run_one(void)
{
    assert_true(pool.n > 0);
    void (*work)(void *) = pool.work[0], (*done)(void *) = pool.done[0];
    void *job = pool.job[0];
    memmove(pool.work, pool.work + 1, (size_t)(pool.n - 1) * sizeof(pool.work[0]));
    memmove(pool.done, pool.done + 1, (size_t)(pool.n - 1) * sizeof(pool.done[0]));
    memmove(pool.job, pool.job + 1, (size_t)(pool.n - 1) * sizeof(pool.job[0]));
    pool.n--;
    work(job);
    done(job);
}

static void test_offloaded_batches_respect_the_job_bound(void **state)
{
    (void)state;
    memset(&pool, 0, sizeof(pool));
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 7);
    fe.ops.offload = held_offload;
    struct signer s;
    signer_init(&s, 14);
    struct seen seen = {0};
    int total = 5 * VV_VERIFY_BATCH_ITEMS;
    for (int i = 0; i < total; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, i % 7 != 0, VV_CHANNEL_TEST, NULL), 0);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(pool.n, VV_VERIFY_MAX_JOBS);
    assert_int_equal(seen.n, 0);
    assert_int_equal(fe.verifies, 0); /* not inline */
    const struct vv_env_verify_stats *st = vv_env_verify_stats(&fe.env);
    assert_int_equal(st->running, VV_VERIFY_MAX_JOBS * VV_VERIFY_BATCH_ITEMS);
    assert_int_equal(st->queued, total - VV_VERIFY_MAX_JOBS * VV_VERIFY_BATCH_ITEMS);
    /* Each completion starts the next batch waiting. */
    while (pool.n > 0) {
        pool_run_one();
        assert_true(pool.n <= VV_VERIFY_MAX_JOBS);
    }
    assert_int_equal(seen.n, total);
    for (int k = 0; k < total; k++)
        assert_int_equal(seen.ok[k], seen.index[k] % 7 != 0);
    assert_int_equal(st->offloaded, 5);
    assert_int_equal(st->batches, 5);

    /* A refused offload: that batch is checked inline at once. */
    pool.refuse = 1;
    assert_int_equal(submit(&fe, &seen, &s, 0, true, VV_CHANNEL_TEST, NULL), 0);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(seen.n, total + 1);
    assert_int_equal(fe.verifies, 1);
    assert_int_equal(pool.n, 0);
    vv_env_fini(&fe.env);
    vv_fake_env_free(&fe);
}

/* The env ends while batches are on the pool: they come back later and free themselves,
 * with no verdict (the allocator would see a leak, ASan a use after free). */
static void test_offloaded_batches_outlive_the_env(void **state)
{
    (void)state;
    memset(&pool, 0, sizeof(pool));
    struct vv_fake_env fe;
    vv_fake_env_init(&fe, 8);
    fe.ops.offload = held_offload;
    struct signer s;
    signer_init(&s, 15);
    struct seen seen = {0};
    for (int i = 0; i < 3 * VV_VERIFY_BATCH_ITEMS; i++)
        assert_int_equal(submit(&fe, &seen, &s, i, true, VV_CHANNEL_TEST, NULL), 0);
    vv_fake_env_advance(&fe, 0);
    assert_int_equal(pool.n, VV_VERIFY_MAX_JOBS);
    vv_env_fini(&fe.env);
    while (pool.n > 0)
        pool_run_one();
    assert_int_equal(seen.n, 0);
    vv_fake_env_free(&fe);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdicts_are_right_and_come_later),
        cmocka_unit_test(test_checks_are_batched_one_batch_per_turn_inline),
        cmocka_unit_test(test_cancel_by_id_and_by_channel),
        cmocka_unit_test(test_bounds_and_bad_arguments),
        cmocka_unit_test(test_env_end_drops_pending_checks),
        cmocka_unit_test(test_callbacks_may_end_the_env_or_ask_again),
        cmocka_unit_test(test_offloaded_batches_respect_the_job_bound),
        cmocka_unit_test(test_offloaded_batches_outlive_the_env),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
