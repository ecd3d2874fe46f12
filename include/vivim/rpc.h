/*
 * JSON-RPC 2.0 over a Unix stream socket: one compact JSON value per line, each way.
 *
 * Methods register next to the module that implements them (vv_rpc_register), with a
 * description of their parameters and result that rpc.discover serves. A handler cannot
 * return without answering: its return type, struct vv_rpc_answer, can only be obtained
 * from vv_rpc_reply, vv_rpc_fail or vv_rpc_pending (in the manner of Core Lightning's
 * command_success/command_fail/command_still_pending). A pending request is answered later
 * with vv_rpc_reply or vv_rpc_fail; if its client went away meanwhile the answer is dropped.
 *
 * The server may also push notifications to a client (vv_rpc_notify), for streams such as
 * pubsub messages; a handler keeps a reference to its connection for that.
 *
 * Limits (from [rpc] in the config): line length (a longer line is answered with an error
 * and discarded up to its newline; the connection stays usable), concurrent clients, unsent
 * bytes per client (a client that does not read is disconnected), JSON nesting depth, calls
 * in flight per client (its socket is not read meanwhile) and lines dispatched per client
 * per loop turn (so one client's burst cannot starve the others).
 */
#ifndef VIVIM_RPC_H
#define VIVIM_RPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/identity.h"

/* JSON-RPC 2.0's reserved codes. Application errors use the codes of vivim/error.h. */
#define VV_RPC_PARSE_ERROR      (-32700)
#define VV_RPC_INVALID_REQUEST  (-32600)
#define VV_RPC_METHOD_NOT_FOUND (-32601)
#define VV_RPC_INVALID_PARAMS   (-32602)
#define VV_RPC_INTERNAL_ERROR   (-32603)

#define VV_RPC_MAX_DEPTH   64   /* nesting of arrays and objects in one request */
#define VV_RPC_MAX_BATCH   1000 /* calls in one batch */
#define VV_RPC_MAX_METHODS 256

struct vv_rpc;
struct vv_rpc_conn;
struct vv_rpc_request;
struct vv_node;

/* What a handler returns. Only vv_rpc_reply/fail/pending make one. */
struct vv_rpc_answer {
    unsigned token_;
};

/*
 * A method. params is the request's "params" (an object or array; an empty object when
 * absent), borrowed for the call. data is the method's user data.
 */
typedef struct vv_rpc_answer (*vv_rpc_handler_fn)(struct vv_rpc_request *req, json_t *params,
                                                  void *data);

struct vv_rpc_method {
    const char *name; /* "module.verb" */
    vv_rpc_handler_fn handler;
    void *data;
    const char *summary; /* one sentence for rpc.discover and docs/rpc.md */
    /* JSON Schema texts (static strings) describing params and result. */
    const char *params_schema;
    const char *result_schema;
};

/* Registers a method (the descriptor is copied; its strings must be static). Returns 0,
 * VV_EEXIST for a duplicate name, VV_ELIMIT past VV_RPC_MAX_METHODS. */
int vv_rpc_register(struct vv_rpc *rpc, const struct vv_rpc_method *m);
/* Registers n methods in order; stops at the first error and returns it. */
int vv_rpc_register_all(struct vv_rpc *rpc, const struct vv_rpc_method *methods, size_t n);

/* Answers with result (taken). */
struct vv_rpc_answer vv_rpc_reply(struct vv_rpc_request *req, json_t *result);
/* Answers with an error: a JSON-RPC code or a vivim/error.h code, and a message. */
struct vv_rpc_answer vv_rpc_fail(struct vv_rpc_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers later: keep req and call vv_rpc_reply or vv_rpc_fail exactly once. */
struct vv_rpc_answer vv_rpc_pending(struct vv_rpc_request *req);

/* The node the server belongs to (for handlers). */
struct vv_node *vv_rpc_request_node(const struct vv_rpc_request *req);
/* The connection a request came on, borrowed; vv_rpc_conn_ref to keep it. */
struct vv_rpc_conn *vv_rpc_request_conn(struct vv_rpc_request *req);
void vv_rpc_conn_ref(struct vv_rpc_conn *c);
void vv_rpc_conn_unref(struct vv_rpc_conn *c);
/* False once the client disconnected or was cut off. */
bool vv_rpc_conn_is_open(const struct vv_rpc_conn *c);
/* Sends {"jsonrpc":"2.0","method":...,"params":...} to the client. params is taken.
 * Returns 0, VV_ECLOSED, or VV_ERPC_QUEUE_FULL (the client is then disconnected). */
int vv_rpc_notify(struct vv_rpc_conn *c, const char *method, json_t *params);

/* The whole method table as an OpenRPC-style document (for rpc.discover). New reference. */
json_t *vv_rpc_describe(const struct vv_rpc *rpc);

/* ---- parameter helpers (by-name params) ------------------------------------------------ */

/*
 * For handlers taking an object of named parameters. Each returns 0 when the value was
 * read, 1 when it is absent and optional, and -1 with a message naming the field in err
 * (answer it with vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err)).
 */
int vv_rpc_params_object(const json_t *params, const char *const *allowed, char *err,
                         size_t err_len);
int vv_rpc_param_string(const json_t *params, const char *name, bool required, size_t max_bytes,
                        const char **out, char *err, size_t err_len);
int vv_rpc_param_uint(const json_t *params, const char *name, bool required, uint64_t min,
                      uint64_t max, uint64_t *out, char *err, size_t err_len);
/* A node ID written as 64 hex digits. */
int vv_rpc_param_node_id(const json_t *params, const char *name, bool required,
                         uint8_t out[VV_NODE_ID_BYTES], char *err, size_t err_len);

/* ---- the module ---------------------------------------------------------------------- */

/* init creates n->rpc (methods can register from then on), start listens on [rpc] socket,
 * stop closes the listener and every client and removes the socket file. */
struct vv_module;
extern const struct vv_module vv_rpc_module;

/* [rpc] in vivimd.conf (src/rpc/rpc_config.c). */
struct vv_rpc_settings {
    char *socket;             /* Unix socket path */
    uint32_t max_clients;     /* concurrent connections */
    uint32_t max_line_bytes;  /* one request line */
    uint32_t max_queue_bytes; /* unsent replies per client before it is cut off */
    uint32_t max_in_flight;   /* unanswered calls per client before its reads pause */
    uint32_t lines_per_turn;  /* request lines of one client dispatched per loop turn */
};
struct vv_config_section;
struct vv_config;
extern const struct vv_config_section vv_rpc_settings_section;
const struct vv_rpc_settings *vv_rpc_settings(const struct vv_config *c);

/* The node's own methods (node.status, node.shutdown, node.reload) as a module. */
extern const struct vv_module vv_node_rpc_module;

/* ---- the transport-free core, for tests and the fuzz target ---------------------------- */

/*
 * A server without a socket: lines in, lines out through write_cb. Used by the socket
 * server for each connection and directly by unit tests and the fuzz target.
 */
struct vv_rpc *vv_rpc_new(struct vv_node *n);
void vv_rpc_free(struct vv_rpc *rpc);
/* Opens a connection whose output goes to write_cb (one line per call, with its newline). */
struct vv_rpc_conn *vv_rpc_conn_new(struct vv_rpc *rpc,
                                    int (*write_cb)(void *io, const char *line, size_t len),
                                    void *io);
/* Handles one complete line (without its newline). */
void vv_rpc_conn_input(struct vv_rpc_conn *c, const char *line, size_t len);
/* The transport closed: drops pending answers' destination; frees when unreferenced. */
void vv_rpc_conn_close(struct vv_rpc_conn *c);

#endif
