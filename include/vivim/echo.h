/*
 * The echo module: the smallest real module, and the worked example of "Writing a module"
 * in docs/architecture.md. It serves echo requests from peers on VV_CHANNEL_ECHO through
 * the request layer (vivim/env_request.h) and offers `echo.ping {nodeId, bytes?,
 * timeoutMs?}`, which sends one to a connected peer and answers with the round trip, or
 * `echo.ping {datagram: true, address, nodeId?, ...}`, which sends it by datagram.
 * Everything it has is declared in its folder (src/echo/): its [echo] section, its
 * dependencies, its hooks, its RPC method and its metrics.
 */
#ifndef VIVIM_ECHO_H
#define VIVIM_ECHO_H

#include <stdbool.h>
#include <stdint.h>

#include "vivim/env.h"

/* The one request type: body a bin of 0..[echo] max_bytes bytes; the reply echoes it. */
#define VV_ECHO_TYPE_PING ((uint16_t)((VV_CHANNEL_ECHO << 8) | 0x01))

/* echo.ping calls waiting for their answer; more are refused (they would only queue
 * behind the request layer's own per-peer bound). */
#define VV_ECHO_MAX_CALLS 64

struct vv_module;
extern const struct vv_module vv_echo_module;

/* [echo] in vivimd.conf (src/echo/echo_config.c). */
struct vv_echo_settings {
    bool serve;          /* answer peers' echo requests */
    uint32_t max_bytes;  /* largest payload served or sent */
    uint32_t timeout_ms; /* echo.ping's default timeout */
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_echo_settings_section;
const struct vv_echo_settings *vv_echo_settings(const struct vv_config *c);

#endif
