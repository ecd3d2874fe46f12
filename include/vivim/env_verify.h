/*
 * Signature checks off the event loop, in batches.
 *
 * An Ed25519 verification costs about 50 us of CPU; a pubsub node receiving thousands of
 * signed messages a second, or a DHT node checking every new contact's signed answer, would
 * spend most of each loop turn on them if it checked inline (vv_env_verify). Instead a module
 * hands each check to vv_env_verify_async and gets its verdict later, on the loop, through a
 * callback. The layer gathers the checks asked for during one loop turn into batches (at most
 * VV_VERIFY_BATCH_ITEMS each) and runs each batch where the environment says:
 *
 *  - in vivimd, on libuv's thread pool (struct vv_env_ops.offload), at most
 *    VV_VERIFY_MAX_JOBS batches at once so the pool keeps threads for SQLite's work: one node
 *    uses every core for verification and its loop never waits for one;
 *  - in the simulator and the unit tests' fake env (no offload operation), inline, from a
 *    0 ms timer: the same verdicts, virtual time does not move, and runs stay deterministic.
 *
 * Either way the callback never fires from within vv_env_verify_async, and fires exactly
 * once per accepted check unless the check is cancelled (then never). Verdicts of one batch
 * come in submission order; batches on the thread pool may finish in any order, so a module
 * must not rely on the order of verdicts for checks asked in different turns.
 *
 * The layer copies the key, the signature and the message: the caller may free them on
 * return. Its memory is bounded: at most VV_VERIFY_MAX_ITEMS checks and
 * VV_VERIFY_MAX_BYTES message bytes wait or run at once; past them a check is refused with
 * VV_EBUSY (counted), and the module decides what that means (pubsub drops the message as
 * it would a message from a flooding peer).
 */
#ifndef VIVIM_ENV_VERIFY_H
#define VIVIM_ENV_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"

/* Checks in one batch: at 50 us each a batch is about 3 ms of one core, short enough that a
 * batch's first verdict is not held long behind its last, long enough that the cost of a
 * thread-pool round trip (tens of us) is noise. */
#define VV_VERIFY_BATCH_ITEMS 64
/* Batches on the thread pool at once: libuv's pool has 4 threads by default and SQLite's
 * work shares it; 2 batches use both cores of a small node and leave the pool 2 threads. */
#define VV_VERIFY_MAX_JOBS 2
/* Checks waiting or running, and their message bytes: 4096 checks are 0.2 s of one core;
 * more means the node is being flooded faster than it can check. */
#define VV_VERIFY_MAX_ITEMS 4096
#define VV_VERIFY_MAX_BYTES (16u << 20)

/* A verdict: ok is true when sig is pk's signature of the message. */
typedef void (*vv_env_verified_cb)(struct vv_env *env, bool ok, void *arg);

/*
 * Asks for a check of sig (64 bytes) over msg[0..len) by pk (32 bytes), for a module on
 * channel ch (vv_env_verify_cancel_channel cancels a channel's checks when the module stops).
 * On 0, cb(env, ok, arg) fires later, once; *id (when id is not NULL) names the check for
 * vv_env_verify_cancel. Returns VV_EBUSY past the bounds above, VV_EINVAL for a message
 * longer than VV_VERIFY_MAX_BYTES, a NULL key, signature or callback, or a channel out of
 * range; then cb never fires.
 */
int vv_env_verify_async(struct vv_env *env, enum vv_channel ch,
                        const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg, size_t len,
                        const uint8_t sig[64], vv_env_verified_cb cb, void *arg, uint64_t *id);
/* The check's callback will not fire. Unknown or finished ids do nothing. */
void vv_env_verify_cancel(struct vv_env *env, uint64_t id);
/* Cancels every check of channel ch (for a module's stop hook). */
void vv_env_verify_cancel_channel(struct vv_env *env, enum vv_channel ch);

/* Counters (monotonic) and gauges (queued, running, bytes) of one env's layer. */
struct vv_env_verify_stats {
    uint64_t valid, invalid; /* verdicts given (cancelled checks are not counted here) */
    uint64_t cancelled;      /* checks cancelled before their verdict */
    uint64_t busy;           /* checks refused: the bounds were reached */
    uint64_t batches;        /* batches run (offloaded or inline) */
    uint64_t offloaded;      /* of them, on the thread pool */
    uint64_t queued;         /* checks waiting for a batch slot, now */
    uint64_t running;        /* checks in batches being run, now */
    uint64_t bytes;          /* message bytes of the queued and running checks, now */
};
const struct vv_env_verify_stats *vv_env_verify_stats(struct vv_env *env);

#endif
