/*
 * The network monitor: the metrics registry every module reports through (n->metrics),
 * the node's events, and the HTTP endpoint operators scrape and tail:
 *
 *   GET /metrics  Prometheus text format 0.0.4
 *   GET /health   JSON; 200 when the node is ready and every module's health hook says ok,
 *                 503 while starting, stopping or degraded
 *   GET /events   Server-Sent Events: node events and warnings, as they happen
 *
 * HTTP requests are parsed by http-parser; requests are bounded in size and time, other
 * paths get 404 and other methods 405. A client that sends requests without reading the
 * answers is paused, then closed; when every connection slot is taken, the oldest idle or
 * incomplete connection gives way to a new one, so /health always gets through. The monitor is the
 * first module of the node, since every other module registers its metrics at init.
 */
#ifndef VIVIM_MONITOR_H
#define VIVIM_MONITOR_H

#include <jansson.h>
#include <stddef.h>

/*
 * Connections, deadlines and unsent bytes per connection are limited by the [metrics] keys
 * of the configuration (max_connections, header_timeout_ms, idle_timeout_ms,
 * write_timeout_ms, pause_queue_bytes, max_queue_bytes); these are the fixed ones.
 */
#define VV_HTTP_MAX_HEADER_BYTES  8192 /* request line plus headers */
#define VV_EVENTS_MAX_SUBSCRIBERS 16   /* and at most half of [metrics] max_connections */
#define VV_EVENTS_KEEPALIVE_MS    15000
#define VV_EVENTS_RECENT          32 /* replayed to a new subscriber */

#include <stdint.h>

struct vv_monitor;
struct vv_module;
extern const struct vv_module vv_monitor_module;

/* [metrics] in vivimd.conf (src/monitor/monitor_config.c). */
struct vv_monitor_settings {
    char *listen;               /* ip:port or localhost:port, "" disables the endpoint */
    uint32_t max_connections;   /* open connections, /events subscribers included */
    uint32_t header_timeout_ms; /* a request must arrive whole within this */
    uint32_t idle_timeout_ms;   /* keep-alive connection with no request in progress */
    uint32_t write_timeout_ms;  /* unsent answers with no write progress */
    uint32_t pause_queue_bytes; /* unsent answers past which requests are not read */
    uint32_t max_queue_bytes;   /* unsent bytes past which the connection is closed */
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_monitor_settings_section;
const struct vv_monitor_settings *vv_monitor_settings(const struct vv_config *c);

/*
 * Publishes an event of a kind ("node.started", "node.reload", "log", ...) with data (an
 * object, taken; may be NULL) to every /events subscriber, serialized once.
 */
void vv_monitor_event(struct vv_monitor *mon, const char *kind, json_t *data);

/* "http://127.0.0.1:9464" (the bound address), or "disabled". */
void vv_monitor_url(const struct vv_monitor *mon, char *out, size_t len);

#endif
