/* Shared by the monitor's parts: the module (monitor.c) and the HTTP endpoint (http.c). */
#ifndef VIVIM_MONITOR_INTERNAL_H
#define VIVIM_MONITOR_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "vivim/metrics.h"
#include "vivim/monitor.h"

struct vv_node;
struct http_conn;

/* An event serialized once and shared, by reference count, by every subscriber's write. */
struct vv__shared_buf {
    int refs;
    size_t len;
    char data[];
};

/* The endpoint's limits, from the [metrics] keys of the configuration. */
struct vv__http_limits {
    unsigned max_connections;
    uint64_t header_timeout_ms, idle_timeout_ms, write_timeout_ms;
    size_t pause_queue_bytes, max_queue_bytes;
};

struct vv_monitor {
    struct vv_node *n;
    uv_tcp_t listener;
    bool listening;
    char url[128];
    struct vv__http_limits limits;
    struct http_conn *conns; /* every open HTTP connection, subscribers included */
    unsigned n_conns, n_subs;
    uv_timer_t keepalive;
    bool keepalive_on;
    struct vv__shared_buf *recent[VV_EVENTS_RECENT];
    unsigned recent_next, n_recent;
    struct vv_counter *http_requests; /* {path, code} */
    struct vv_gauge *connections;
    struct vv_counter *http_paused;
    struct vv_counter *http_closed; /* {reason} */
    struct vv_gauge *subscribers;
    struct vv_counter *events_dropped;
    struct vv_counter *events_total; /* {kind} */
    /* How long each turn of the event loop worked (its time minus what it slept in poll):
     * measured in a prepare handle, from libuv's idle-time accounting. */
    uv_prepare_t loop_probe;
    bool loop_probe_on;
    uint64_t probe_prev_ns, probe_prev_idle_ns; /* at the previous prepare; 0: not yet */
    struct vv_histogram *loop_busy;
    double loop_busy_max_s; /* the longest turn since the endpoint started */
};

void vv__shared_buf_unref(struct vv__shared_buf *b);
/* Sends an event frame to every subscriber (http.c). */
void vv__monitor_fanout(struct vv_monitor *mon, struct vv__shared_buf *frame);
int vv__monitor_http_start(struct vv_monitor *mon, const char *listen,
                           const struct vv__http_limits *limits);
void vv__monitor_http_stop(struct vv_monitor *mon);
/* The /health document and status code. */
json_t *vv__monitor_health(struct vv_monitor *mon, int *status);

#endif
