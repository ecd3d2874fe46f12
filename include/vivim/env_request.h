/*
 * Requests with timeouts: the one request/response layer every protocol module uses on
 * vv_env (docs/protocol.md, "Requests and answers"; docs/architecture.md, "Requests").
 *
 * A module sends a request (peer, frame type, body, timeout) and gets exactly one
 * completion callback: the peer's answer, its error answer, or a local verdict (timed out,
 * peer went down, peer busy, malformed answer). A request refused at once (too many in
 * flight, the transport refused the send, bad arguments) is an error return from
 * vv_env_request, and then no callback ever fires. A cancelled request never calls back.
 *
 * On the other side, a module that serves a channel (vv_env_set_server) gets each request
 * with a context, ctx, and ends it exactly once, now or later, with vv_env_reply or
 * vv_env_reply_error. A peer with too many requests in service is answered "busy" at once,
 * without the server seeing the request.
 *
 * Correlation is by the frame's request_id, which the layer chooses: unique per env (a keyed
 * bijection of a counter, so it never repeats and cannot be guessed by anyone who does not
 * see the traffic) and never 0. An answer must come from the peer the request went to, on
 * the request's channel; any other answer, and an answer after a timeout or cancellation,
 * is dropped and counted (late).
 *
 * The layer is implemented once (src/env/request.c) over vv_env's send, deliver, peer events
 * and timers, so it behaves the same under the daemon's libuv driver and the simulator. All
 * functions run on the env's loop thread; none may be called from another thread.
 */
#ifndef VIVIM_ENV_REQUEST_H
#define VIVIM_ENV_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"
#include "vivim/wire.h"

/* Answers travel in two types reserved in every channel (the low byte of the type): a
 * reply [.., (ch << 8) | 0xff, request_id, body] and an error answer
 * [.., (ch << 8) | 0xfe, request_id, [code, message]]. Modules number their own types
 * below 0xfe. */
#define VV_REQ_TYPE_REPLY 0xff
#define VV_REQ_TYPE_ERROR 0xfe

static inline bool vv_req_is_answer_type(uint16_t type)
{
    return (type & 0xff) >= VV_REQ_TYPE_ERROR;
}

/* Codes in error answers (on the wire, so never renumbered). 1..255 are the layer's and
 * mean the same on every channel; a module defines its own from VV_REQ_ERR_MODULE_FIRST. */
enum vv_req_error_code {
    VV_REQ_ERR_BUSY = 1,        /* too many of the sender's requests in service: retry later */
    VV_REQ_ERR_UNSUPPORTED = 2, /* the server does not know this request type */
    VV_REQ_ERR_BAD_REQUEST = 3, /* the request's body is malformed */
    VV_REQ_ERR_DENIED = 4,      /* not allowed for this peer */
    VV_REQ_ERR_INTERNAL = 5,    /* the server failed (its log says why) */
    VV_REQ_ERR_UNAVAILABLE = 6, /* the service is stopping or not ready */
    VV_REQ_ERR_MODULE_FIRST = 256,
};
#define VV_REQ_ERROR_CODE_MAX          65535u /* codes are 1..65535 */
#define VV_REQ_ERROR_MESSAGE_MAX_BYTES 256    /* a short reason for a log line, not a payload */

/* Longest timeout a request may have: 10 minutes. Longer waits are a protocol's own
 * state, not one request; the bound keeps a typo from pinning a slot for days. */
#define VV_REQ_MAX_TIMEOUT_MS (10u * 60u * 1000u)

/*
 * Bounds (vv_env_req_set_limits). Defaults: VV_REQ_DEFAULT_*. In vivimd they are the config
 * keys [net] request_max_per_peer, request_max_total, serve_max_per_peer, serve_max_total,
 * changed on reload (a lowered bound refuses new requests; none in flight is cut short).
 */
struct vv_env_req_limits {
    uint32_t max_per_peer;        /* requests in flight to one peer */
    uint32_t max_total;           /* requests in flight from this node */
    uint32_t max_served_per_peer; /* one peer's requests in service here at once */
    uint32_t max_served_total;    /* all peers' requests in service here at once */
};
/* 64 per peer: a DHT lookup keeps 3 in flight per peer at most, storage 50 chunk transfers
 * over all peers; 64 leaves headroom and caps what one slow peer pins (a request costs
 * about 100 bytes here, its context about 80 on the server). The server's per-peer bound
 * equals the client's, so a well-behaved client is never answered busy. */
#define VV_REQ_DEFAULT_MAX_PER_PEER 64
/* 4096 overall: 64 peers' worth at the per-peer bound, well under 1 MiB of state. */
#define VV_REQ_DEFAULT_MAX_TOTAL           4096
#define VV_REQ_DEFAULT_MAX_SERVED_PER_PEER 64
#define VV_REQ_DEFAULT_MAX_SERVED_TOTAL    4096

/* Counters (monotonic) and gauges (in_flight, serving) of one env's layer. */
struct vv_env_req_stats {
    uint64_t sent;           /* requests handed to the transport */
    uint64_t answered;       /* completed by a reply */
    uint64_t remote_errors;  /* completed by an error answer other than busy */
    uint64_t busy;           /* completed by a busy answer */
    uint64_t timed_out;      /* completed by their deadline */
    uint64_t peer_down;      /* failed because the peer went down */
    uint64_t cancelled;      /* cancelled by their module (no callback) */
    uint64_t bad_answers;    /* completed by a malformed answer, or an answer without an id */
    uint64_t late;           /* answers dropped: after timeout or cancel, or never asked */
    uint64_t refused;        /* vv_env_request refused: limits, or the transport refused */
    uint64_t served;         /* requests handed to a server */
    uint64_t served_busy;    /* requests answered busy at once (served-per-peer bound) */
    uint64_t served_dropped; /* contexts dropped: the peer went down, or the server left */
    uint64_t answers_unsent; /* replies or error answers the transport refused */
    uint64_t bad_requests;   /* request frames that failed to decode (dropped) */
    uint64_t in_flight;      /* gauge: requests outstanding now */
    uint64_t serving;        /* gauge: contexts not yet answered now */
};

/* What a completion callback receives; everything is borrowed for the call. */
struct vv_env_answer {
    uint64_t id; /* the request's id */
    /* VV_NODE_ID_BYTES. By datagram: the node ID the request named, else the ID the answer
     * claimed (unproved), else NULL (no answer came). */
    const uint8_t *peer;
    /* The address a datagram request went to (canonical); NULL over a connection. */
    const char *address;
    uint16_t type; /* the request's type */
    /*
     * 0: the peer replied; reply holds the reply frame (its body is the answer).
     * VV_EREQ_REMOTE: the peer answered with an error: error_code and error_message.
     * VV_EREQ_BUSY: the peer had too many of our requests in service (error_code 1).
     * VV_EREQ_TIMEOUT: no answer within the timeout.
     * VV_EREQ_PEER_DOWN: the peer went down first (told before the channels hear "down").
     * VV_EREQ_BAD_ANSWER: the answer did not decode (an error answer of the wrong shape).
     */
    int status;
    uint64_t elapsed_ms; /* from the send to this completion */
    const struct vv_wire_frame *reply;
    uint32_t error_code;
    const char *error_message; /* not NUL-terminated: error_message_len bytes */
    size_t error_message_len;
};

typedef void (*vv_env_answer_cb)(struct vv_env *env, const struct vv_env_answer *a, void *arg);

/*
 * Sends a request of type (whose high byte is the channel; its low byte must be below
 * 0xfe) to peer, with body the encoding of exactly one MessagePack value (copied). cb fires
 * exactly once, with arg, after this call has returned 0. *id (may be NULL) receives the
 * request's id, for vv_env_request_cancel. Returns 0, or:
 *   VV_EINVAL              cb NULL, timeout_ms 0 or over VV_REQ_MAX_TIMEOUT_MS, a reserved
 *                          type, or a body that is not one MessagePack value within the
 *                          frame limits;
 *   VV_EWIRE_TOO_LARGE     the frame would exceed VV_WIRE_MAX_FRAME_BYTES;
 *   VV_EREQ_TOO_MANY       max_per_peer requests to this peer, or max_total in all, are
 *                          outstanding;
 *   the transport's error  VV_ECONN_NOT_CONNECTED, VV_ECONN_BACKPRESSURE, ...
 * and then cb never fires.
 */
int vv_env_request(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint16_t type,
                   const uint8_t *body, size_t body_len, uint32_t timeout_ms, vv_env_answer_cb cb,
                   void *arg, uint64_t *id);

/*
 * The same by datagram (docs/protocol.md, "Datagrams"): the request goes to address (a
 * numeric "ip:port" or "[v6]:port") without a connection, and only an answer by datagram
 * from that address (and, when peer is not NULL, claiming that node ID) completes it. The
 * whole frame must fit VV_ENV_MAX_DATAGRAM_FRAME_BYTES (else VV_EWIRE_TOO_LARGE) and the
 * server's answer must too. The per-peer bound counts per destination address. Lost
 * datagrams are not resent: the request times out, and the module decides whether to ask
 * again. A connection going down does not fail it. Returns as vv_env_request, and
 * VV_EDGRAM_ADDRESS or VV_EDGRAM_UNSUPPORTED.
 */
int vv_env_request_datagram(struct vv_env *env, const uint8_t *peer, const char *address,
                            uint16_t type, const uint8_t *body, size_t body_len,
                            uint32_t timeout_ms, vv_env_answer_cb cb, void *arg, uint64_t *id);

/* Cancels a request: its callback will not fire, and an answer to it is dropped as late.
 * Returns 0, or VV_ENOTFOUND when it already completed (or never existed). */
int vv_env_request_cancel(struct vv_env *env, uint64_t id);
/* Cancels every request outstanding on channel ch (a module stopping). Returns how many. */
size_t vv_env_request_cancel_channel(struct vv_env *env, enum vv_channel ch);

/*
 * Makes cb the server of channel ch: requests on ch (frames with a request id other than 0
 * and a type that is not an answer) go to cb instead of the channel's recv handler. The
 * request frame is borrowed for the call; ctx is the server's until it ends it with
 * vv_env_reply or vv_env_reply_error (exactly once). cb NULL removes the server: contexts
 * not yet answered on ch are dropped (their requesters time out; a later reply is a no-op)
 * and requests on ch reach recv again.
 */
void vv_env_set_server(struct vv_env *env, enum vv_channel ch, vv_env_serve_cb cb, void *arg);

/*
 * Ends ctx with a reply whose body is the encoding of exactly one MessagePack value
 * (copied). Returns 0 when the reply was handed to the transport; VV_ENOTFOUND when ctx is
 * no longer live (the peer went down, or it was answered already): a no-op; the transport's
 * error when it refused the reply (ctx is ended anyway; the requester will time out);
 * VV_EINVAL or VV_EWIRE_TOO_LARGE for a bad body, in which case ctx stays live.
 */
int vv_env_reply(struct vv_env *env, uint64_t ctx, const uint8_t *body, size_t body_len);
/*
 * Ends ctx with an error answer: code 1..65535 (enum vv_req_error_code, or the module's own
 * from VV_REQ_ERR_MODULE_FIRST) and message (may be NULL; cut to
 * VV_REQ_ERROR_MESSAGE_MAX_BYTES at a character boundary; must pass the wire's text check,
 * else it is sent empty). Returns as vv_env_reply; VV_EINVAL (ctx still live) for code 0 or
 * over 65535.
 */
int vv_env_reply_error(struct vv_env *env, uint64_t ctx, uint32_t code, const char *message);

/*
 * Where a request in service came from: the source address (canonical) when it arrived by
 * datagram, NULL when over a connection or when ctx is not live. Such a context's peer (in
 * the serve callback) is only the ID the datagram claimed, and its answer goes back by
 * datagram to this address (so it must fit VV_ENV_MAX_DATAGRAM_FRAME_BYTES). Requests by
 * datagram are bounded per source IP (max_served_per_peer), not per claimed ID.
 */
const char *vv_env_request_source(struct vv_env *env, uint64_t ctx);

/* Sets the bounds; a field 0 keeps its default. Lowering a bound does not end what is in
 * flight; new requests wait below it. */
void vv_env_req_set_limits(struct vv_env *env, const struct vv_env_req_limits *limits);
/* The layer's counters; all zero before the layer was first used. Borrowed; valid until
 * the next call into the layer. */
const struct vv_env_req_stats *vv_env_req_stats(struct vv_env *env);

#endif
