/*
 * Batched signature checks off the loop (vivim/env_verify.h).
 *
 * Checks asked for during a loop turn go into the open batch; a 0 ms timer (armed by the
 * first check of a turn) closes it, and full batches are closed at once. Closed batches wait
 * in a FIFO for a slot: with an offload operation (the daemon), at most VV_VERIFY_MAX_JOBS
 * run on the thread pool at once and their verdicts are delivered from the pool's
 * completion callback; without one (simulator, fake env), one batch runs per timer turn,
 * inline, through ops->verify (which the simulator memoizes).
 *
 * A batch on the thread pool cannot be called back: when the env ends (vv_env_fini) with
 * batches running, they are detached (their layer pointer cleared) and free themselves when
 * the pool hands them back, touching nothing else. The worker thread reads only its own
 * batch's keys, messages and signatures and writes only its verdicts; everything else, the
 * callbacks and the cancelled marks included, is touched on the loop thread alone.
 */
#include <sodium.h>
#include <string.h>

#include "env_internal.h"
#include "vivim/common.h"
#include "vivim/env_verify.h"

struct check {
    uint64_t id;
    uint8_t ch;
    vv_env_verified_cb cb; /* NULL once cancelled */
    void *arg;
    uint8_t pk[VV_ED25519_PK_BYTES];
    uint8_t sig[64];
    uint8_t *msg;
    size_t len;
    bool ok; /* the verdict, written by whoever runs the batch */
};

struct batch {
    struct vv__env_verify *layer; /* NULL: detached, the env ended while it ran */
    struct batch *next;           /* in the ready FIFO or the running list */
    struct batch **pprev;         /* in the running list only */
    size_t n, bytes;
    struct check items[VV_VERIFY_BATCH_ITEMS];
};

struct vv__env_verify {
    struct vv_env *env;
    struct batch *open;                /* collecting this turn's checks */
    struct batch *ready, **ready_tail; /* closed, waiting for a slot */
    struct batch *running;             /* on the thread pool, or being delivered */
    uint32_t jobs;                     /* batches on the thread pool */
    uint64_t next_id;
    uint64_t timer; /* 0: none armed */
    int delivering; /* verdict callbacks on the stack */
    bool dead;      /* vv_env_fini ran from a callback: free when they return */
    struct vv_env_verify_stats stats;
};

static const struct vv_env_verify_stats zero_stats;

static void on_timer(struct vv_env *env, void *arg);

static struct vv__env_verify *layer(struct vv_env *env)
{
    if (env->verify == NULL) {
        struct vv__env_verify *v = vv_xcalloc(1, sizeof(*v));
        v->env = env;
        v->ready_tail = &v->ready;
        env->verify = v;
    }
    return env->verify;
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        vv_free(b->items[i].msg);
    vv_free(b);
}

static void arm(struct vv__env_verify *v)
{
    if (v->timer == 0)
        v->timer = vv_env_timer_start(v->env, 0, 0, on_timer, v);
}

static void close_open(struct vv__env_verify *v)
{
    struct batch *b = v->open;
    if (b == NULL)
        return;
    v->open = NULL;
    b->next = NULL;
    *v->ready_tail = b;
    v->ready_tail = &b->next;
}

static struct batch *take_ready(struct vv__env_verify *v)
{
    struct batch *b = v->ready;
    if (b != NULL) {
        v->ready = b->next;
        if (v->ready == NULL)
            v->ready_tail = &v->ready;
        v->stats.queued -= b->n;
        v->stats.running += b->n;
    }
    return b;
}

static void link_running(struct vv__env_verify *v, struct batch *b)
{
    b->next = v->running;
    if (b->next)
        b->next->pprev = &b->next;
    b->pprev = &v->running;
    v->running = b;
}

static void unlink_running(struct batch *b)
{
    *b->pprev = b->next;
    if (b->next)
        b->next->pprev = b->pprev;
}

static void free_layer(struct vv__env_verify *v)
{
    vv_env_timer_cancel(v->env, v->timer);
    if (v->open)
        batch_free(v->open);
    while (v->ready) {
        struct batch *b = v->ready;
        v->ready = b->next;
        batch_free(b);
    }
    /* Batches on the thread pool come back later: they free themselves. */
    for (struct batch *b = v->running; b != NULL; b = b->next)
        b->layer = NULL;
    vv_free(v);
}

/*
 * Hands a finished batch's verdicts to their callbacks (on the loop), then frees it. A
 * callback may ask for more checks, cancel others (of this batch too: each item's callback
 * is read just before its turn) or end the env. Returns false when the layer is gone (a
 * callback ended the env): the caller must not touch it.
 */
static bool deliver(struct vv__env_verify *v, struct batch *b)
{
    struct vv_env *env = v->env;
    v->stats.running -= b->n;
    v->stats.bytes -= b->bytes;
    v->stats.batches++;
    v->delivering++;
    for (size_t i = 0; i < b->n && !v->dead; i++) {
        struct check *c = &b->items[i];
        vv_env_verified_cb cb = c->cb;
        if (cb == NULL)
            continue;
        c->cb = NULL;
        if (c->ok)
            v->stats.valid++;
        else
            v->stats.invalid++;
        cb(env, c->ok, c->arg);
    }
    v->delivering--;
    batch_free(b);
    if (!v->dead)
        return true;
    if (v->delivering == 0)
        free_layer(v);
    return false;
}

static void work(void *job)
{
    struct batch *b = job;
    for (size_t i = 0; i < b->n; i++) {
        struct check *c = &b->items[i];
        c->ok = crypto_sign_verify_detached(c->sig, c->msg, c->len, c->pk) == 0;
    }
}

static void pump(struct vv__env_verify *v);

static void done(void *job)
{
    struct batch *b = job;
    struct vv__env_verify *v = b->layer;
    if (v == NULL) {
        batch_free(b); /* the env ended meanwhile */
        return;
    }
    unlink_running(b);
    v->jobs--;
    if (deliver(v, b))
        pump(v);
}

static bool run_inline(struct vv__env_verify *v, struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct check *c = &b->items[i];
        if (c->cb != NULL)
            c->ok = vv_env_verify(v->env, c->pk, c->msg, c->len, c->sig);
    }
    return deliver(v, b);
}

/* Starts what the slots allow. Called from the timer or a completion, never from within
 * vv_env_verify_async. */
static void pump(struct vv__env_verify *v)
{
    struct vv_env *env = v->env;
    if (env->ops->offload == NULL) {
        /* One batch per turn: a turn never runs more than VV_VERIFY_BATCH_ITEMS checks. */
        struct batch *b = take_ready(v);
        if (v->ready != NULL)
            arm(v);
        if (b != NULL)
            (void)run_inline(v, b);
        return;
    }
    while (v->jobs < VV_VERIFY_MAX_JOBS && v->ready != NULL) {
        struct batch *b = take_ready(v);
        b->layer = v;
        link_running(v, b);
        if (env->ops->offload(env->impl, work, done, b) != 0) {
            /* No thread for it (the pool refused): checked here, in this turn, so that
             * nothing waits for a completion that will not come. */
            unlink_running(b);
            if (!run_inline(v, b))
                return;
            continue;
        }
        v->jobs++;
        v->stats.offloaded++;
    }
}

static void on_timer(struct vv_env *env, void *arg)
{
    (void)env;
    struct vv__env_verify *v = arg;
    v->timer = 0;
    close_open(v);
    pump(v);
}

int vv_env_verify_async(struct vv_env *env, enum vv_channel ch,
                        const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg, size_t len,
                        const uint8_t sig[64], vv_env_verified_cb cb, void *arg, uint64_t *id)
{
    if (pk == NULL || sig == NULL || cb == NULL || (msg == NULL && len > 0) ||
        (unsigned)ch >= VV_ENV_MAX_CHANNELS || len > VV_VERIFY_MAX_BYTES)
        return VV_EINVAL;
    struct vv__env_verify *v = layer(env);
    uint64_t waiting = v->stats.queued + v->stats.running;
    if (waiting >= VV_VERIFY_MAX_ITEMS || v->stats.bytes + len > VV_VERIFY_MAX_BYTES) {
        v->stats.busy++;
        return VV_EBUSY;
    }
    if (v->open == NULL)
        v->open = vv_xcalloc(1, sizeof(*v->open));
    struct batch *b = v->open;
    struct check *c = &b->items[b->n++];
    c->id = ++v->next_id;
    c->ch = (uint8_t)ch;
    c->cb = cb;
    c->arg = arg;
    memcpy(c->pk, pk, VV_ED25519_PK_BYTES);
    memcpy(c->sig, sig, 64);
    c->len = len;
    c->msg = vv_xmalloc(len ? len : 1);
    if (len)
        memcpy(c->msg, msg, len);
    b->bytes += len;
    v->stats.bytes += len;
    v->stats.queued++;
    if (id != NULL)
        *id = c->id;
    if (b->n == VV_VERIFY_BATCH_ITEMS)
        close_open(v);
    arm(v);
    return 0;
}

/* Cancels the checks for which match(c, key) holds, wherever they wait. */
static void cancel_where(struct vv_env *env, bool (*match)(const struct check *, uint64_t),
                         uint64_t key)
{
    struct vv__env_verify *v = env->verify;
    if (v == NULL)
        return;
    struct batch *lists[3] = {v->open, v->ready, v->running};
    for (int l = 0; l < 3; l++)
        for (struct batch *b = lists[l]; b != NULL; b = l == 0 ? NULL : b->next)
            for (size_t i = 0; i < b->n; i++)
                if (b->items[i].cb != NULL && match(&b->items[i], key)) {
                    b->items[i].cb = NULL;
                    v->stats.cancelled++;
                }
}

static bool by_id(const struct check *c, uint64_t id)
{
    return c->id == id;
}

static bool by_channel(const struct check *c, uint64_t ch)
{
    return c->ch == ch;
}

void vv_env_verify_cancel(struct vv_env *env, uint64_t id)
{
    if (id != 0)
        cancel_where(env, by_id, id);
}

void vv_env_verify_cancel_channel(struct vv_env *env, enum vv_channel ch)
{
    cancel_where(env, by_channel, (uint64_t)ch);
}

const struct vv_env_verify_stats *vv_env_verify_stats(struct vv_env *env)
{
    return env->verify ? &env->verify->stats : &zero_stats;
}

void vv__env_verify_free(struct vv_env *env)
{
    struct vv__env_verify *v = env->verify;
    if (v == NULL)
        return;
    env->verify = NULL;
    if (v->delivering > 0) {
        /* From a verdict callback: the delivery loop frees it when it unwinds. The open
         * and waiting batches go now; nothing else will be delivered. */
        v->dead = true;
        vv_env_timer_cancel(env, v->timer);
        v->timer = 0;
        return;
    }
    free_layer(v);
}
