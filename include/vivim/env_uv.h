/*
 * The daemon's vv_env: libuv timers, libsodium randomness, the loop's clock, and a
 * transport (the connection layer) for messages. Protocol modules see only struct vv_env.
 */
#ifndef VIVIM_ENV_UV_H
#define VIVIM_ENV_UV_H

#include <uv.h>

#include "vivim/env.h"

/* What the connection layer provides to the environment. Any op may be NULL (then
 * send/connect fail with VV_ECONN_NOT_CONNECTED and disconnect does nothing). */
struct vv_env_transport {
    int (*send)(void *t, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel, const uint8_t *data,
                size_t len);
    int (*connect)(void *t, const uint8_t *peer, const char *address);
    void (*disconnect)(void *t, const uint8_t peer[VV_NODE_ID_BYTES]);
    void *t;
};

struct vv_env_uv;

/* Creates the environment on loop for identity (borrowed; must outlive it). */
struct vv_env_uv *vv_env_uv_new(uv_loop_t *loop, const struct vv_identity *identity);
void vv_env_uv_set_transport(struct vv_env_uv *e, const struct vv_env_transport *t);
/* The datagram transport (net.h, vv_dgram_open): send as the env's datagram op (see
 * struct vv_env_ops); NULL detaches it (sends then fail with VV_EDGRAM_UNSUPPORTED). */
void vv_env_uv_set_datagram(struct vv_env_uv *e,
                            int (*send)(void *t, const char *address, const uint8_t *frame,
                                        size_t len),
                            void *t);
struct vv_env *vv_env_uv_env(struct vv_env_uv *e);
/* Timers still pending. */
unsigned vv_env_uv_timers(const struct vv_env_uv *e);
/* Cancels every timer and frees the environment once their handles have closed. */
void vv_env_uv_close(struct vv_env_uv *e);

#endif
