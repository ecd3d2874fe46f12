/*
 * The peer connection layer of the daemon: transports (TCP today), secure sessions over
 * them, and the bookkeeping that keeps it bounded. It implements the network half of vv_env
 * (send, connect, disconnect) for the libuv driver: protocol modules never see a socket.
 *
 * Who owns what: struct vv_net owns every connection (a libuv stream, its vv_session, its
 * outbound queue accounting) and the table from node ID to the connection that carries that
 * peer's traffic. Policy (whom to dial, when to give up, whom to trim) belongs to the
 * connection manager (connmgr.h), which acts through vv_env.
 *
 * Rules it enforces:
 *  - one connection per peer: when two connections to one node ID complete (both sides
 *    dialled at once), the one dialled by the node with the smaller node ID is kept, on both
 *    sides, and the other is closed;
 *  - a connection that has not completed its handshake after handshake_timeout_ms is closed,
 *    and at most max_half_open of them exist at once (more are refused at accept);
 *  - every peer's outbound queue is bounded (peer_queue_bytes): a send beyond it fails with
 *    VV_ECONN_BACKPRESSURE, so a peer that never reads costs at most that much; all queues
 *    and partly received frames together stay under memory_budget_bytes (sends fail while
 *    over, and the connection holding the largest partial frame is closed);
 *  - every received frame is checked (wire.h) before a module sees it; a malformed frame
 *    closes the connection.
 */
#ifndef VIVIM_NET_H
#define VIVIM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "vivim/env.h"
#include "vivim/env_uv.h"
#include "vivim/session.h"

#define VV_NET_ADDRESS_BYTES 128 /* host:port text, with its NUL */

struct vv_net_config {
    const char *listen; /* host:port to accept peers on; NULL or "" for none */
    uint32_t max_connections;
    uint32_t max_half_open;        /* connections still in their handshake */
    uint32_t handshake_timeout_ms; /* from TCP connect/accept to verified identity */
    uint32_t peer_queue_bytes;     /* outbound bytes queued per peer */
    uint64_t memory_budget_bytes;  /* all outbound queues + partial inbound frames */
    const uint8_t *hello;          /* carried in the handshake (msgpack, see protocol.md) */
    size_t hello_len;
};

void vv_net_config_defaults(struct vv_net_config *cfg);

struct vv_net_stats {
    uint64_t accepted, dials, dial_failures, handshakes_ok, handshakes_failed, handshake_timeouts,
        refused_half_open, refused_max_connections, duplicates_closed;
    uint64_t frames_in, frames_out, bytes_in, bytes_out, decode_errors, frames_skipped;
    uint64_t drops_backpressure, drops_budget, budget_closes;
    uint32_t connections, half_open;          /* now */
    uint64_t queued_bytes, rx_buffered_bytes; /* now */
};

/* What peers.list and peers.info show of one connection. */
struct vv_net_conn_info {
    uint8_t node_id[VV_NODE_ID_BYTES];
    char remote[VV_NET_ADDRESS_BYTES]; /* the socket's peer address */
    char listen[VV_NET_ADDRESS_BYTES]; /* the address it advertised in its hello, or "" */
    bool inbound;
    int node_type;         /* enum vv_node_type, -1 when its hello did not say */
    uint32_t capabilities; /* VV_CAP_* bits */
    uint64_t connected_since_ms;
    uint64_t bytes_in, bytes_out, frames_in, frames_out, errors;
    uint64_t queued_bytes;
};

struct vv_net;

/* Observer of handshakes (for the latency histogram): seconds from connect/accept. */
typedef void (*vv_net_handshake_cb)(void *arg, bool ok, double seconds);

/*
 * Creates the connection layer on loop for the node whose session keys are keys (borrowed)
 * and delivers to env (the libuv environment, whose transport it becomes). Returns NULL
 * with err filled when cfg is unusable.
 */
struct vv_net *vv_net_new(uv_loop_t *loop, const struct vv_session_keys *keys,
                          struct vv_env_uv *env, const struct vv_net_config *cfg, char *err,
                          size_t err_len);
/* Starts listening (when cfg->listen is set). 0, or a libuv error with err filled. */
int vv_net_listen(struct vv_net *net, char *err, size_t err_len);
/* The port actually bound (useful with port 0), or 0. */
uint16_t vv_net_bound_port(const struct vv_net *net);
void vv_net_set_handshake_cb(struct vv_net *net, vv_net_handshake_cb cb, void *arg);
/* Observer of dials: address as given to vv_net_connect; node_id when the handshake
 * completed (even if the connection then turned out to be a duplicate), else NULL with why. */
typedef void (*vv_net_dial_cb)(void *arg, const char *address, const uint8_t *node_id,
                               const char *why);
void vv_net_set_dial_cb(struct vv_net *net, vv_net_dial_cb cb, void *arg);
/* Observer of established connections coming (up) and going (!up, with why). */
typedef void (*vv_net_conn_cb)(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES],
                               const char *remote, bool inbound, bool up, const char *why);
void vv_net_set_conn_cb(struct vv_net *net, vv_net_conn_cb cb, void *arg);
/* Closes every connection and the listener; frees the net once their handles closed. */
void vv_net_close(struct vv_net *net);

/* The vv_env side (also reachable through the environment). */
int vv_net_send(struct vv_net *net, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *frame,
                size_t len);
/* Dials address (host:port, [v6]:port or a DNS name); expect, when not NULL, is the node ID
 * the answer must prove. Host names resolve without blocking the loop. */
int vv_net_connect(struct vv_net *net, const uint8_t *expect, const char *address);
void vv_net_disconnect(struct vv_net *net, const uint8_t peer[VV_NODE_ID_BYTES]);

const struct vv_net_stats *vv_net_stats(const struct vv_net *net);
/* Established connections: how many, and the info of one. */
uint32_t vv_net_count(const struct vv_net *net);
int vv_net_info(const struct vv_net *net, const uint8_t id[VV_NODE_ID_BYTES],
                struct vv_net_conn_info *out);
/* Calls fn for every established connection. */
void vv_net_foreach(const struct vv_net *net,
                    void (*fn)(const struct vv_net_conn_info *info, void *arg), void *arg);

/*
 * Transports: how addresses of one kind are listened on and dialled. TCP (host:port,
 * [v6]:port, name:port) is built in; WebSocket (ws://) and QUIC (quic://) are to be added
 * with vv_net_add_transport and until then such addresses are refused with VV_EINVAL. A
 * transport's listen/dial produce connections that carry the same sessions and frames.
 */
struct vv_net_transport {
    const char *name;                     /* "tcp" */
    bool (*handles)(const char *address); /* does this address belong to it? */
    int (*listen)(struct vv_net *net, const char *address, char *err, size_t err_len);
    int (*dial)(struct vv_net *net, const uint8_t *expect, const char *address);
};
#define VV_NET_MAX_TRANSPORTS 4
/* Adds a transport (t is borrowed; asked before those added earlier). VV_EEXIST for a name
 * already present, VV_ELIMIT beyond VV_NET_MAX_TRANSPORTS. */
int vv_net_add_transport(struct vv_net *net, const struct vv_net_transport *t);
/* The transport for address, or NULL. */
const struct vv_net_transport *vv_net_select_transport(const struct vv_net *net,
                                                       const char *address);

/* The hello a node carries in its handshake: [node type, capabilities, listen, region]. */
int vv_net_hello_encode(int node_type, uint32_t capabilities, const char *listen,
                        const char *region, uint8_t *out, size_t cap, size_t *len);
int vv_net_hello_decode(const uint8_t *buf, size_t len, int *node_type, uint32_t *capabilities,
                        char *listen, size_t listen_cap);

/*
 * Datagrams (dgram.c): one UDP socket bound to listen's host and port (tcp_port when
 * listen's port is 0), which becomes env's datagram transport; its counters go to mx
 * (vivimd_net_datagrams_total, vivimd_net_datagram_bytes_total). Returns NULL with err
 * filled when the socket cannot be bound. vv_dgram_close detaches it from the env and
 * frees it once its handle has closed.
 */
struct vv_dgram;
struct vv_metrics;
struct vv_dgram *vv_dgram_open(uv_loop_t *loop, struct vv_env_uv *envu, const char *listen,
                               uint16_t tcp_port, struct vv_metrics *mx, char *err, size_t err_len);
uint16_t vv_dgram_port(const struct vv_dgram *d);
void vv_dgram_close(struct vv_dgram *d);

/* The node module (net_module.c). */
struct vv_module;
extern const struct vv_module vv_net_module;
struct vv_node;
struct vv_connmgr;
/* The node's connection manager while net runs, else NULL (for modules that need what it
 * knows of a peer, such as the address a connected peer listens on). */
struct vv_connmgr *vv_net_connmgr(struct vv_node *n);

/* [net] in vivimd.conf (src/net/net_config.c). */
struct vv_net_settings {
    char *listen;    /* ip:port this node accepts peers on */
    char *bootstrap; /* comma-separated host:port or nodeid@host:port, may be "" */
    bool mdns;
    uint32_t max_connections;
    char *advertise;        /* host:port peers should dial us at; "" = from listen */
    uint32_t low_water;     /* dial until this many peers are connected */
    uint32_t high_water;    /* above this many, trim the least useful */
    uint32_t max_half_open; /* connections in their handshake at once */
    uint32_t handshake_timeout_ms;
    uint32_t peer_queue_bytes; /* outbound bytes queued per peer */
    uint32_t memory_budget_mb; /* all peer queues and partial frames together */
    uint32_t keepalive_ms;     /* ping period per peer; silent for 3 periods = dropped */
    uint32_t reconnect_max_ms; /* cap on the re-dial backoff */
    uint32_t grace_period_ms;  /* new connections are not trimmed this long */
    uint32_t max_tagged_peers; /* peers modules may tag at once (vv_env_want_peer) */
    /* The request layer's bounds (env_request.h, struct vv_env_req_limits). */
    uint32_t request_max_per_peer, request_max_total;
    uint32_t serve_max_per_peer, serve_max_total;
};
struct vv_config;
struct vv_config_section;
extern const struct vv_config_section vv_net_settings_section;
const struct vv_net_settings *vv_net_settings(const struct vv_config *c);

/* For tests: the bucket of the table of established connections that holds id when the
 * table has n_buckets buckets (a power of two). */
size_t vv__net_id_bucket(const uint8_t id[VV_NODE_ID_BYTES], size_t n_buckets);

#endif
