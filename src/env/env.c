/*
 * The implementation-independent half of vv_env: channel dispatch, signing, and unbiased
 * random numbers. It holds no state of its own; everything is in the struct vv_env. The
 * request/response layer (request.c) sees every delivered message and every peer-down
 * event first, through the two vv__env_req_* hooks below.
 */
#include <sodium.h>
#include <string.h>

#include "env_internal.h"
#include "vivim/common.h"
#include "vivim/env.h"

void vv_env_set_channel(struct vv_env *env, enum vv_channel ch, vv_env_recv_cb recv,
                        vv_env_peer_cb peer, void *arg)
{
    struct vv_env_channel *c = &env->channels[ch];
    c->recv = recv;
    c->peer = peer;
    c->arg = arg;
}

void vv_env_set_peer_manager(struct vv_env *env, const struct vv_env_peer_manager *pm)
{
    if (pm != NULL)
        env->peers = *pm;
    else
        memset(&env->peers, 0, sizeof(env->peers));
}

uint64_t vv_env_random_below(struct vv_env *env, uint64_t bound)
{
    if (bound <= 1)
        return 0;
    /* Rejection sampling: draw again when the value falls in the short last bucket. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do {
        vv_env_random(env, &r, sizeof(r));
    } while (r >= limit);
    return r % bound;
}

void vv_env_sign(struct vv_env *env, const uint8_t *msg, size_t len, uint8_t sig[64])
{
    crypto_sign_detached(sig, NULL, msg, len, env->identity->secret_key);
}

void vv_env_deliver(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                    const uint8_t *data, size_t len)
{
    if (channel >= VV_ENV_MAX_CHANNELS)
        return; /* the wire layer counts these; a simulator never produces one */
    if (vv__env_req_deliver(env, peer, channel, data, len))
        return; /* an answer, or a request for the channel's server */
    struct vv_env_channel *c = &env->channels[channel];
    if (c->recv != NULL)
        c->recv(env, peer, data, len, c->arg);
}

static void tell_channels(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up)
{
    /* In the same ordered dispatch as the channels, and before them: a channel that hears
     * "down" has no request left outstanding to that peer. */
    if (!up)
        vv__env_req_peer_down(env, peer);
    for (int i = 0; i < VV_ENV_MAX_CHANNELS; i++) {
        struct vv_env_channel *c = &env->channels[i];
        if (c->peer != NULL)
            c->peer(env, peer, up, c->arg);
    }
}

void vv_env_peer_event(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up)
{
    if (env->dispatching) {
        /* Told after the event being told now (its channels must all hear it first). The
         * array lives only while events are held. */
        if (env->n_held == env->cap_held) {
            env->cap_held = env->cap_held ? env->cap_held * 2 : 4;
            env->held = vv_xrealloc(env->held, env->cap_held * sizeof(*env->held));
        }
        struct vv__env_peer_ev *h = &env->held[env->n_held++];
        memcpy(h->peer, peer, VV_NODE_ID_BYTES);
        h->up = up;
        return;
    }
    env->dispatching = true;
    tell_channels(env, peer, up);
    for (size_t i = 0; i < env->n_held; i++) {
        struct vv__env_peer_ev ev = env->held[i]; /* a copy: telling may grow the array */
        tell_channels(env, ev.peer, ev.up);
    }
    vv_free(env->held);
    env->held = NULL;
    env->n_held = env->cap_held = 0;
    env->dispatching = false;
}

void vv_env_fini(struct vv_env *env)
{
    vv__env_req_free(env);
    vv__env_verify_free(env);
    vv_free(env->held);
    env->held = NULL;
    env->n_held = env->cap_held = 0;
    env->dispatching = false;
}
