/*
 * What env.c and request.c share: the hooks through which the channel dispatcher hands
 * messages and peer-down events to the request layer first.
 */
#ifndef VIVIM_ENV_INTERNAL_H
#define VIVIM_ENV_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"

/* Returns true when the message was the request layer's (an answer, or a request for a
 * channel with a server) and must not reach the channel's recv handler. */
bool vv__env_req_deliver(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                         const uint8_t *data, size_t len);
/* The same for a datagram's frame (already checked): an answer to a datagram request, or a
 * request for a channel with a server. */
bool vv__env_req_deliver_datagram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                                  const char *from, uint8_t channel, const uint8_t *data,
                                  size_t len);
/* Fails the requests outstanding to peer and drops the ones it had us serving. */
void vv__env_req_peer_down(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES]);
/* Frees the layer's state without callbacks; env->req is NULL afterwards. */
void vv__env_req_free(struct vv_env *env);

/* Frees the verification layer's state without callbacks (batches on the thread pool are
 * detached and free themselves); env->verify is NULL afterwards. */
void vv__env_verify_free(struct vv_env *env);

#endif
