/* Shared by the RPC core (jsonrpc.c) and its socket server (server.c). */
#ifndef VIVIM_RPC_INTERNAL_H
#define VIVIM_RPC_INTERNAL_H

#include "vivim/rpc.h"

struct vv_metrics;
struct vv__rpc_server;

struct vv__rpc_stats {
    struct vv_counter *requests; /* {method, outcome} */
    struct vv_histogram *duration;
    struct vv_gauge *clients;
    struct vv_counter *errors;      /* {kind} */
    struct vv_gauge *in_flight;     /* requests dispatched and not yet answered */
    struct vv_counter *read_pauses; /* clients paused at their in-flight limit */
};

/* Writes an error response with id null (framing errors: line too long, parse error). */
void vv__rpc_conn_error(struct vv_rpc_conn *c, int code, const char *message, const char *data);
/* Counts an error of a kind: parse, invalid, too_long, queue_full, too_many_clients. */
void vv__rpc_count_error(struct vv_rpc *rpc, const char *kind);
struct vv__rpc_stats *vv__rpc_stats(struct vv_rpc *rpc);
struct vv__rpc_server **vv__rpc_server_slot(struct vv_rpc *rpc);
unsigned vv__rpc_conn_pending(const struct vv_rpc_conn *c);
/* cb(io, pending) runs after each answer to c while c is open (never after
 * vv_rpc_conn_close), so the transport can resume reading a client it paused. It may run
 * from inside vv_rpc_conn_input (an answer given at once) or from any later callback; it
 * must not feed input to c itself. */
void vv__rpc_conn_set_settled_cb(struct vv_rpc_conn *c, void (*cb)(void *io, unsigned pending));

int vv__rpc_server_start(struct vv_rpc *rpc, struct vv_node *n);
void vv__rpc_server_stop(struct vv_rpc *rpc);

#endif
