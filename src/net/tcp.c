/*
 * The connection layer's libuv glue: TCP listen, accept, dial (with non-blocking name
 * resolution), one vv_session per connection, and the accounting that keeps memory bounded.
 *
 * Who owns what: struct vv_net owns every struct conn (all of them on one list) and the
 * table of established connections by node ID. A conn is freed only from its handle's close
 * callback (libuv's rule); until then its state is C_CLOSING and nothing is delivered from
 * it. A dial that is resolving a name is a struct dial (no handle yet); the net is freed
 * once every handle has closed and every resolution has come back.
 *
 * Reads go into one 64 KiB buffer shared by all connections (libuv calls alloc and read
 * back to back for one stream, and the session copies what it must keep), so an idle
 * connection costs its uv_tcp_t, this struct and its session's small inline buffer.
 * Writes are sealed into a scratch buffer and tried synchronously first; only what the
 * kernel does not take is copied into a heap write request and counted against the peer's
 * queue bound and the global budget.
 */
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/connmgr.h"
#include "vivim/env_request.h"
#include "vivim/keyed_hash.h"
#include "vivim/log.h"
#include "vivim/net.h"
#include "vivim/wire.h"

#define READ_BUFFER_BYTES (64u << 10)
#define SWEEP_MS          250 /* handshake timeouts, retired duplicates */
#define MIN_BUCKETS       64
#define RETIRE_MS         2000

/* C_RETIRING: the losing connection of a simultaneous dial. It is kept (unregistered, still
 * delivering what the peer sent on it) for RETIRE_MS before it is closed, because the peer
 * may not have completed the winning connection yet: closing at once would make it see its
 * only connection to us drop and report the peer down and up again. */
enum conn_state { C_CONNECTING, C_HANDSHAKE, C_ESTABLISHED, C_RETIRING, C_CLOSING };

struct conn {
    uv_tcp_t tcp; /* first: the handle's address is the conn's */
    struct vv_net *net;
    struct vv_session *session;
    enum conn_state state;
    bool inbound, registered, has_expect, deliver_failed;
    bool in_up_dispatch, down_deferred; /* see session_established */
    int node_type;
    uint32_t capabilities;
    uint8_t expect[VV_NODE_ID_BYTES];
    uint8_t id[VV_NODE_ID_BYTES];
    char remote[VV_NET_ADDRESS_BYTES];
    char listen[VV_NET_ADDRESS_BYTES];
    uint64_t started_ms, established_ms, retired_ms;
    uint64_t bytes_in, bytes_out, frames_in, frames_out, errors;
    uint64_t queued; /* bytes in write requests not yet completed */
    size_t rx_buffered;
    struct conn *prev, *next; /* every conn */
    struct conn *hnext;       /* bucket chain of the established table */
    uv_connect_t connect_req;
};

struct dial {
    uv_getaddrinfo_t req;
    struct vv_net *net;
    struct dial *prev, *next; /* resolutions in flight, cancelled at close */
    bool has_expect;
    uint8_t expect[VV_NODE_ID_BYTES];
    char address[VV_NET_ADDRESS_BYTES];
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    size_t len;
    uint8_t data[];
};

struct vv_net {
    uv_loop_t *loop;
    const struct vv_session_keys *keys;
    struct vv_env_uv *envu;
    struct vv_env *env;
    struct vv_net_config cfg;
    char listen_addr[VV_NET_ADDRESS_BYTES];
    uint8_t *hello;
    size_t hello_len;

    uv_tcp_t listener;
    bool listening;
    uint16_t bound_port;
    uv_timer_t sweep;

    struct conn *conns; /* list head */
    struct dial *dials; /* resolutions in flight */
    struct conn **buckets;
    size_t n_buckets;

    uint8_t *rbuf;    /* shared read buffer */
    bool rbuf_busy;   /* handed to libuv and not yet returned */
    uint8_t *scratch; /* sealing buffer for synchronous writes */

    vv_net_handshake_cb hs_cb;
    void *hs_arg;
    vv_net_dial_cb dial_cb;
    void *dial_arg;
    vv_net_conn_cb conn_cb;
    void *conn_arg;
    const struct vv_net_transport *transports[VV_NET_MAX_TRANSPORTS];
    unsigned n_transports;

    struct vv_net_stats stats;
    unsigned open_handles, pending_dials;
    bool closed;
};

static void conn_close(struct conn *c, const char *why);

/* ---- the table of established connections ------------------------------------------- */

size_t vv__net_id_bucket(const uint8_t id[VV_NODE_ID_BYTES], size_t n_buckets)
{
    /* Keyed, not the ID's first bytes: a peer grinds its key pair until its ID has the
     * prefix it wants, and many connections so made would share one chain. */
    return (size_t)(vv_keyed_hash64(id, VV_NODE_ID_BYTES) & (n_buckets - 1));
}

static size_t bucket_of(const struct vv_net *net, const uint8_t id[VV_NODE_ID_BYTES])
{
    return vv__net_id_bucket(id, net->n_buckets);
}

static struct conn *table_find(const struct vv_net *net, const uint8_t id[VV_NODE_ID_BYTES])
{
    for (struct conn *c = net->buckets[bucket_of(net, id)]; c; c = c->hnext)
        if (memcmp(c->id, id, VV_NODE_ID_BYTES) == 0)
            return c;
    return NULL;
}

static void table_grow(struct vv_net *net)
{
    size_t n = net->n_buckets * 2;
    struct conn **b = vv_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < net->n_buckets; i++) {
        struct conn *c = net->buckets[i];
        while (c) {
            struct conn *next = c->hnext;
            size_t k = vv__net_id_bucket(c->id, n);
            c->hnext = b[k];
            b[k] = c;
            c = next;
        }
    }
    vv_free(net->buckets);
    net->buckets = b;
    net->n_buckets = n;
}

static void table_add(struct vv_net *net, struct conn *c)
{
    if (net->stats.connections + 1 > net->n_buckets)
        table_grow(net);
    size_t k = bucket_of(net, c->id);
    c->hnext = net->buckets[k];
    net->buckets[k] = c;
    c->registered = true;
    net->stats.connections++;
}

static void table_remove(struct vv_net *net, struct conn *c)
{
    struct conn **pp = &net->buckets[bucket_of(net, c->id)];
    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = c->hnext;
        net->stats.connections--;
    }
    c->registered = false;
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void maybe_free(struct vv_net *net)
{
    if (!net->closed || net->open_handles != 0 || net->pending_dials != 0)
        return;
    vv_free(net->buckets);
    vv_free(net->rbuf);
    vv_free(net->scratch);
    vv_free(net->hello);
    vv_free(net);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct vv_net *net = h->data;
    net->open_handles--;
    maybe_free(net);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    struct vv_net *net = c->net;
    if (c->prev)
        c->prev->next = c->next;
    else
        net->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    vv_session_free(c->session);
    vv_free(c);
    net->open_handles--;
    maybe_free(net);
}

static void conn_close(struct conn *c, const char *why)
{
    if (c->state == C_CLOSING)
        return;
    struct vv_net *net = c->net;
    enum conn_state was = c->state;
    c->state = C_CLOSING;
    if (c->session != NULL)
        vv_session_abort(c->session); /* nothing more is delivered from it */
    if (was == C_HANDSHAKE || was == C_CONNECTING)
        net->stats.half_open--;
    net->stats.rx_buffered_bytes -= c->rx_buffered;
    c->rx_buffered = 0;
    vv_log_debug("net", "closing %s%s: %s", c->remote, c->inbound ? " (inbound)" : "", why);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    if (!c->inbound && was <= C_HANDSHAKE && net->dial_cb && !net->closed)
        net->dial_cb(net->dial_arg, c->remote, NULL, why);
    if (c->registered) {
        table_remove(net, c);
        if (!net->closed && c->in_up_dispatch) {
            /* A module closed it while modules were still being told it came up: they hear
             * of the close once all of them heard of the opening. */
            c->down_deferred = true;
        } else if (!net->closed) {
            vv_env_peer_event(net->env, c->id, false);
            if (net->conn_cb)
                net->conn_cb(net->conn_arg, c->id, c->remote, c->inbound, false, why);
        }
    } else if (c->has_expect && !net->closed && was <= C_HANDSHAKE &&
               table_find(net, c->expect) == NULL) {
        /* A failed dial to a known node: the connection manager backs off now rather than
         * at its dial deadline. */
        vv_env_peer_event(net->env, c->expect, false);
    }
}

/* ---- writing ------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;
    struct vv_net *net = c->net;
    c->queued -= w->len;
    net->stats.queued_bytes -= w->len;
    vv_free(w);
    if (status < 0 && status != UV_ECANCELED) {
        c->errors++;
        conn_close(c, uv_strerror(status));
    }
}

/* Puts bytes on the socket: synchronously when nothing is queued ahead of them, the rest
 * through a heap write request. */
static int conn_write(struct conn *c, const uint8_t *data, size_t len)
{
    struct vv_net *net = c->net;
    size_t off = 0;
    if (c->queued == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n > 0)
            off = (size_t)n;
        else if (n != UV_EAGAIN && n != UV_ENOSYS)
            return n;
    }
    c->bytes_out += len;
    net->stats.bytes_out += len;
    if (off == len)
        return 0;
    size_t rest = len - off;
    struct wreq *w = vv_xmalloc(sizeof(*w) + rest);
    w->c = c;
    w->len = rest;
    memcpy(w->data, data + off, rest);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        vv_free(w);
        return rc;
    }
    c->queued += rest;
    net->stats.queued_bytes += rest;
    return 0;
}

static void session_write(void *arg, const uint8_t *data, size_t len)
{
    struct conn *c = arg;
    if (c->state == C_CLOSING)
        return;
    int rc = conn_write(c, data, len);
    if (rc < 0) {
        c->errors++;
        conn_close(c, uv_strerror(rc));
    }
}

int vv_net_send(struct vv_net *net, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *frame,
                size_t len)
{
    if (len == 0 || len > VV_SESSION_MAX_FRAME_BYTES)
        return VV_EINVAL;
    struct conn *c = table_find(net, peer);
    if (c == NULL || c->state != C_ESTABLISHED)
        return VV_ECONN_NOT_CONNECTED;
    size_t wire_len = len + VV_SESSION_OVERHEAD;
    if (c->queued + wire_len > net->cfg.peer_queue_bytes) {
        net->stats.drops_backpressure++;
        return VV_ECONN_BACKPRESSURE;
    }
    if (net->stats.queued_bytes + net->stats.rx_buffered_bytes + wire_len >
        net->cfg.memory_budget_bytes) {
        net->stats.drops_budget++;
        return VV_ECONN_BACKPRESSURE;
    }
    int rc = vv_session_seal(c->session, frame, len, net->scratch, len + VV_SESSION_OVERHEAD);
    if (rc == 0)
        rc = conn_write(c, net->scratch, wire_len);
    if (rc < 0) {
        c->errors++;
        conn_close(c, rc == VV_ESTATE ? "session closed" : uv_strerror(rc));
        return VV_ECONN_NOT_CONNECTED;
    }
    c->frames_out++;
    net->stats.frames_out++;
    return 0;
}

/* ---- receiving ----------------------------------------------------------------------- */

static void session_established(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES],
                                const uint8_t pk[32], const uint8_t *hello, size_t hello_len)
{
    (void)pk;
    struct conn *c = arg;
    struct vv_net *net = c->net;
    if (c->state == C_CLOSING)
        return;
    double secs = (double)(uv_now(net->loop) - c->started_ms) / 1000.0;
    memcpy(c->id, node_id, VV_NODE_ID_BYTES);
    if (memcmp(node_id, net->keys->id->node_id, VV_NODE_ID_BYTES) == 0) {
        net->stats.handshakes_failed++;
        conn_close(c, "connected to itself");
        return;
    }
    if (vv_net_hello_decode(hello, hello_len, &c->node_type, &c->capabilities, c->listen,
                            sizeof(c->listen)) != 0) {
        net->stats.handshakes_failed++;
        net->stats.decode_errors++;
        conn_close(c, "malformed hello");
        return;
    }
    net->stats.handshakes_ok++;
    if (net->hs_cb)
        net->hs_cb(net->hs_arg, true, secs);
    net->stats.half_open--;
    c->state = C_ESTABLISHED;
    c->established_ms = uv_now(net->loop);

    struct conn *old = table_find(net, node_id);
    if (old != NULL) {
        /* Both sides dialled: keep the connection whose dialler has the smaller node ID, so
         * that both ends keep the same one. Two dials in one direction: keep the first. */
        bool old_ours = !old->inbound, new_ours = !c->inbound;
        bool keep_new = false;
        if (old_ours != new_ours) {
            bool i_am_smaller = memcmp(net->keys->id->node_id, node_id, VV_NODE_ID_BYTES) < 0;
            keep_new = (new_ours == i_am_smaller);
        }
        net->stats.duplicates_closed++;
        if (!c->inbound && net->dial_cb)
            net->dial_cb(net->dial_arg, c->remote, node_id, NULL);
        struct conn *loser = keep_new ? old : c;
        if (keep_new) {
            /* Move the registration without telling modules the peer went away. */
            table_remove(net, old);
            table_add(net, c);
        }
        loser->state = C_RETIRING;
        loser->retired_ms = uv_now(net->loop);
        return;
    }
    if (net->stats.connections >= net->cfg.max_connections) {
        net->stats.refused_max_connections++;
        if (!c->inbound && net->dial_cb)
            net->dial_cb(net->dial_arg, c->remote, NULL, "connection limit");
        conn_close(c, "connection limit");
        return;
    }
    if (!c->inbound && net->dial_cb)
        net->dial_cb(net->dial_arg, c->remote, node_id, NULL);
    table_add(net, c);
    char hex[VV_NODE_ID_HEX_BYTES];
    vv_hex_encode(c->id, VV_NODE_ID_BYTES, hex);
    vv_log_debug("net", "connected to %.16s… at %s%s", hex, c->remote,
                 c->inbound ? " (inbound)" : "");
    c->in_up_dispatch = true;
    vv_env_peer_event(net->env, c->id, true);
    c->in_up_dispatch = false;
    if (net->conn_cb)
        net->conn_cb(net->conn_arg, c->id, c->remote, c->inbound, true, NULL);
    if (c->down_deferred && !net->closed) {
        vv_env_peer_event(net->env, c->id, false);
        if (net->conn_cb)
            net->conn_cb(net->conn_arg, c->id, c->remote, c->inbound, false,
                         "closed while coming up");
    }
}

static void session_frame(void *arg, const uint8_t *data, size_t len)
{
    struct conn *c = arg;
    struct vv_net *net = c->net;
    if ((c->state != C_ESTABLISHED && c->state != C_RETIRING) || c->deliver_failed)
        return;
    if (c->state == C_RETIRING && table_find(net, c->id) == NULL)
        return; /* the peer went down: its modules were told, nothing more from it */
    c->frames_in++;
    net->stats.frames_in++;
    struct vv_wire_header h;
    int rc = vv_wire_check(data, len, &h);
    if (rc < 0) {
        c->errors++;
        net->stats.decode_errors++;
        c->deliver_failed = true; /* closed after the feed returns */
        vv_log_info("net", "malformed frame from %s: %s", c->remote, vv_strerror(rc));
        return;
    }
    uint8_t ch = vv_wire_channel(h.type);
    /* A channel is known when a module receives or serves on it; the request layer's answer
     * types are known on every channel (an answer nobody awaits is counted there, late). */
    bool known = ch < VV_ENV_MAX_CHANNELS &&
                 (net->env->channels[ch].recv != NULL || net->env->channels[ch].serve != NULL ||
                  vv_req_is_answer_type(h.type));
    rc = vv_wire_verdict(&h, known);
    if (rc == VV_WIRE_SKIP) {
        net->stats.frames_skipped++;
        return;
    }
    if (rc < 0) {
        c->errors++;
        net->stats.decode_errors++;
        c->deliver_failed = true;
        return;
    }
    /* The module may disconnect this peer from inside: conn_close defers the free. */
    vv_env_deliver(net->env, c->id, ch, data, len);
}

static const struct vv_session_cbs session_cbs = {
    .write = session_write,
    .established = session_established,
    .frame = session_frame,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = (struct conn *)h;
    struct vv_net *net = c->net;
    if (net->rbuf_busy) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS; cannot happen in practice */
        return;
    }
    net->rbuf_busy = true;
    *buf = uv_buf_init((char *)net->rbuf, READ_BUFFER_BYTES);
}

/*
 * Over the memory budget: the connection holding the largest partly received frame is
 * closed, until the total is back under. Pausing reads instead cannot work: a paused
 * connection keeps its partial frame, which is what holds the total up, so nothing would
 * ever resume (and every send would fail meanwhile). A peer that streams huge frames slowly
 * is the likely culprit; an honest one reconnects.
 */
static void enforce_budget(struct vv_net *net)
{
    while (net->stats.queued_bytes + net->stats.rx_buffered_bytes > net->cfg.memory_budget_bytes) {
        struct conn *worst = NULL;
        for (struct conn *c = net->conns; c; c = c->next)
            if (c->state != C_CLOSING && c->rx_buffered > 0 &&
                (worst == NULL || c->rx_buffered > worst->rx_buffered))
                worst = c;
        if (worst == NULL)
            return; /* the outbound queues alone: sends are refused until they drain */
        net->stats.budget_closes++;
        worst->errors++;
        conn_close(worst, "memory budget: largest partial frame");
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)s;
    struct vv_net *net = c->net;
    if (buf->base == (char *)net->rbuf)
        net->rbuf_busy = false;
    if (nread == 0 || c->state == C_CLOSING)
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            c->errors++;
        conn_close(c, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
        return;
    }
    c->bytes_in += (uint64_t)nread;
    net->stats.bytes_in += (uint64_t)nread;
    int rc = vv_session_feed(c->session, (const uint8_t *)buf->base, (size_t)nread);
    if (c->state == C_CLOSING)
        return;
    if (rc < 0) {
        c->errors++;
        if (c->state == C_HANDSHAKE) {
            net->stats.handshakes_failed++;
            if (net->hs_cb)
                net->hs_cb(net->hs_arg, false,
                           (double)(uv_now(net->loop) - c->started_ms) / 1000.0);
        } else {
            net->stats.decode_errors++;
        }
        conn_close(c, vv_strerror(rc));
        return;
    }
    if (c->deliver_failed) {
        conn_close(c, "malformed frame");
        return;
    }
    size_t now_buffered = vv_session_buffered(c->session);
    net->stats.rx_buffered_bytes += now_buffered;
    net->stats.rx_buffered_bytes -= c->rx_buffered;
    c->rx_buffered = now_buffered;
    if (net->stats.queued_bytes + net->stats.rx_buffered_bytes > net->cfg.memory_budget_bytes)
        enforce_budget(net);
}

/* ---- connection setup ---------------------------------------------------------------- */

static struct conn *conn_new(struct vv_net *net, bool inbound)
{
    struct conn *c = vv_xcalloc(1, sizeof(*c));
    c->net = net;
    c->inbound = inbound;
    c->node_type = -1;
    c->state = C_CONNECTING;
    c->started_ms = uv_now(net->loop);
    uv_tcp_init(net->loop, &c->tcp);
    c->tcp.data = net;
    net->open_handles++;
    net->stats.half_open++;
    c->next = net->conns;
    if (net->conns)
        net->conns->prev = c;
    net->conns = c;
    return c;
}

static void format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[64] = "?";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(out, cap, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(out, cap, "[%s]:%u", ip, port);
    } else {
        snprintf(out, cap, "?");
    }
}

static int conn_begin_session(struct conn *c)
{
    struct vv_net *net = c->net;
    c->state = C_HANDSHAKE;
    c->session = vv_session_new(net->keys, !c->inbound, c->has_expect ? c->expect : NULL,
                                net->hello, net->hello_len, &session_cbs, c);
    if (c->session == NULL)
        return VV_EINVAL;
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc == 0)
        rc = vv_session_start(c->session);
    return rc;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct vv_net *net = server->data;
    if (status < 0 || net->closed)
        return;
    struct conn *c = conn_new(net, true);
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        conn_close(c, uv_strerror(rc));
        return;
    }
    net->stats.accepted++;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
        format_addr((struct sockaddr *)&ss, c->remote, sizeof(c->remote));
    /* half_open already counts this one. */
    if (net->stats.half_open > net->cfg.max_half_open) {
        net->stats.refused_half_open++;
        conn_close(c, "too many connections in their handshake");
        return;
    }
    if (net->stats.connections + net->stats.half_open >
        (uint64_t)net->cfg.max_connections + net->cfg.max_half_open) {
        net->stats.refused_max_connections++;
        conn_close(c, "connection limit");
        return;
    }
    rc = conn_begin_session(c);
    if (rc < 0)
        conn_close(c, vv_strerror(rc));
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct vv_net *net = c->net;
    if (c->state == C_CLOSING)
        return;
    if (status < 0) {
        net->stats.dial_failures++;
        conn_close(c, uv_strerror(status));
        return;
    }
    int rc = conn_begin_session(c);
    if (rc < 0) {
        net->stats.dial_failures++;
        conn_close(c, vv_strerror(rc));
    }
}

static int dial_sockaddr(struct vv_net *net, const struct sockaddr *sa, const char *address,
                         const uint8_t *expect)
{
    struct conn *c = conn_new(net, false);
    vv_strlcpy(c->remote, address, sizeof(c->remote));
    if (expect != NULL) {
        c->has_expect = true;
        memcpy(c->expect, expect, VV_NODE_ID_BYTES);
    }
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect);
    if (rc < 0) {
        net->stats.dial_failures++;
        c->has_expect = false; /* reported by the caller's return value */
        conn_close(c, uv_strerror(rc));
        return rc;
    }
    return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct dial *d = req->data;
    struct vv_net *net = d->net;
    net->pending_dials--;
    if (d->prev)
        d->prev->next = d->next;
    else
        net->dials = d->next;
    if (d->next)
        d->next->prev = d->prev;
    if (net->closed) {
        uv_freeaddrinfo(res);
        vv_free(d);
        maybe_free(net);
        return;
    }
    if (status < 0 || res == NULL) {
        net->stats.dial_failures++;
        vv_log_info("net", "cannot resolve %s: %s", d->address, uv_strerror(status));
        if (net->dial_cb)
            net->dial_cb(net->dial_arg, d->address, NULL, "cannot resolve the host name");
        if (d->has_expect && table_find(net, d->expect) == NULL)
            vv_env_peer_event(net->env, d->expect, false);
    } else {
        int rc = dial_sockaddr(net, res->ai_addr, d->address, d->has_expect ? d->expect : NULL);
        if (rc < 0 && d->has_expect && table_find(net, d->expect) == NULL)
            vv_env_peer_event(net->env, d->expect, false);
    }
    uv_freeaddrinfo(res);
    vv_free(d);
}

/* ---- transports ------------------------------------------------------------------------ */

static bool tcp_handles(const char *address)
{
    if (strstr(address, "://") != NULL)
        return false;
    char host[256];
    uint16_t port;
    return vv_config_split_hostport(address, host, sizeof(host), &port) == 0;
}

static int tcp_dial(struct vv_net *net, const uint8_t *expect, const char *address);
static int tcp_listen(struct vv_net *net, const char *address, char *err, size_t err_len);

static const struct vv_net_transport tcp_transport = {"tcp", tcp_handles, tcp_listen, tcp_dial};

int vv_net_add_transport(struct vv_net *net, const struct vv_net_transport *t)
{
    for (unsigned i = 0; i < net->n_transports; i++)
        if (strcmp(net->transports[i]->name, t->name) == 0)
            return VV_EEXIST;
    if (net->n_transports == VV_NET_MAX_TRANSPORTS)
        return VV_ELIMIT;
    net->transports[net->n_transports++] = t;
    return 0;
}

const struct vv_net_transport *vv_net_select_transport(const struct vv_net *net,
                                                       const char *address)
{
    if (address == NULL || *address == '\0' || strlen(address) >= VV_NET_ADDRESS_BYTES)
        return NULL;
    for (unsigned i = net->n_transports; i-- > 0;)
        if (net->transports[i]->handles(address))
            return net->transports[i];
    return NULL;
}

int vv_net_connect(struct vv_net *net, const uint8_t *expect, const char *address)
{
    if (net->closed)
        return VV_ESTATE;
    if (expect != NULL && table_find(net, expect) != NULL)
        return 0; /* already connected */
    const struct vv_net_transport *t = vv_net_select_transport(net, address);
    if (t == NULL)
        return VV_EINVAL;
    /* One dial at a time to a node or an address: two connections in the same direction
     * could be resolved differently by the two ends (each keeps the one it completed
     * first), so the second is not made. */
    for (const struct conn *c = net->conns; c; c = c->next) {
        if (c->inbound || c->state > C_HANDSHAKE)
            continue;
        if ((expect != NULL && c->has_expect && memcmp(c->expect, expect, VV_NODE_ID_BYTES) == 0) ||
            strcmp(c->remote, address) == 0)
            return 0;
    }
    for (const struct dial *d = net->dials; d; d = d->next)
        if ((expect != NULL && d->has_expect && memcmp(d->expect, expect, VV_NODE_ID_BYTES) == 0) ||
            strcmp(d->address, address) == 0)
            return 0;
    if (net->stats.half_open >= net->cfg.max_half_open) {
        net->stats.refused_half_open++;
        return VV_ECONN_LIMIT;
    }
    net->stats.dials++;
    return t->dial(net, expect, address);
}

static int tcp_dial(struct vv_net *net, const uint8_t *expect, const char *address)
{
    char host[256];
    uint16_t port;
    vv_config_split_hostport(address, host, sizeof(host), &port);
    if (port == 0)
        return VV_EINVAL;
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0)
        return dial_sockaddr(net, (struct sockaddr *)&ss, address, expect);

    struct dial *d = vv_xcalloc(1, sizeof(*d));
    d->net = net;
    d->req.data = d;
    vv_strlcpy(d->address, address, sizeof(d->address));
    if (expect != NULL) {
        d->has_expect = true;
        memcpy(d->expect, expect, VV_NODE_ID_BYTES);
    }
    char port_s[8];
    snprintf(port_s, sizeof(port_s), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(net->loop, &d->req, on_resolved, host, port_s, &hints);
    if (rc < 0) {
        vv_free(d);
        net->stats.dial_failures++;
        return rc;
    }
    d->next = net->dials;
    if (net->dials)
        net->dials->prev = d;
    net->dials = d;
    net->pending_dials++;
    return 0;
}

void vv_net_disconnect(struct vv_net *net, const uint8_t peer[VV_NODE_ID_BYTES])
{
    struct conn *c = table_find(net, peer);
    if (c != NULL)
        conn_close(c, "disconnected on request");
}

/* ---- the sweep: handshake deadlines and retired duplicates ----------------------------------- */

static void on_sweep(uv_timer_t *t)
{
    struct vv_net *net = t->data;
    uint64_t now = uv_now(net->loop);
    struct conn *c = net->conns;
    while (c) {
        struct conn *next = c->next;
        if ((c->state == C_HANDSHAKE || c->state == C_CONNECTING) &&
            now - c->started_ms >= net->cfg.handshake_timeout_ms) {
            net->stats.handshake_timeouts++;
            if (c->state == C_HANDSHAKE && net->hs_cb)
                net->hs_cb(net->hs_arg, false, (double)(now - c->started_ms) / 1000.0);
            if (!c->inbound)
                net->stats.dial_failures++;
            conn_close(c, "handshake timeout");
        } else if (c->state == C_RETIRING && now - c->retired_ms >= RETIRE_MS) {
            conn_close(c, "duplicate connection");
        }
        c = next;
    }
}

/* ---- the net ------------------------------------------------------------------------- */

void vv_net_config_defaults(struct vv_net_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_connections = 1024;
    cfg->max_half_open = 256;
    cfg->handshake_timeout_ms = 5000;
    cfg->peer_queue_bytes = 8u << 20;
    cfg->memory_budget_bytes = 256u << 20;
}

static int op_send(void *t, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                   const uint8_t *data, size_t len)
{
    (void)channel; /* the frame's type names its channel */
    return vv_net_send(t, peer, data, len);
}

static int op_connect(void *t, const uint8_t *peer, const char *address)
{
    struct vv_net *net = t;
    if (address == NULL || *address == '\0')
        return peer != NULL && table_find(net, peer) != NULL ? 0 : VV_ECONN_NOT_CONNECTED;
    return vv_net_connect(net, peer, address);
}

static void op_disconnect(void *t, const uint8_t peer[VV_NODE_ID_BYTES])
{
    vv_net_disconnect(t, peer);
}

struct vv_net *vv_net_new(uv_loop_t *loop, const struct vv_session_keys *keys,
                          struct vv_env_uv *env, const struct vv_net_config *cfg, char *err,
                          size_t err_len)
{
    if (cfg->hello_len > VV_SESSION_MAX_HELLO_BYTES || cfg->max_connections == 0 ||
        cfg->max_half_open == 0 || cfg->peer_queue_bytes < 2 * VV_SESSION_OVERHEAD) {
        snprintf(err, err_len, "invalid connection limits");
        return NULL;
    }
    struct vv_net *net = vv_xcalloc(1, sizeof(*net));
    net->loop = loop;
    net->keys = keys;
    net->envu = env;
    net->env = vv_env_uv_env(env);
    net->cfg = *cfg;
    if (cfg->listen != NULL)
        vv_strlcpy(net->listen_addr, cfg->listen, sizeof(net->listen_addr));
    net->cfg.listen = net->listen_addr;
    if (cfg->hello_len > 0) {
        net->hello = vv_xmalloc(cfg->hello_len);
        memcpy(net->hello, cfg->hello, cfg->hello_len);
        net->hello_len = cfg->hello_len;
    }
    net->cfg.hello = net->hello;
    net->n_buckets = MIN_BUCKETS;
    net->buckets = vv_xcalloc(net->n_buckets, sizeof(*net->buckets));
    net->rbuf = vv_xmalloc(READ_BUFFER_BYTES);
    net->scratch = vv_xmalloc(VV_SESSION_MAX_FRAME_BYTES + VV_SESSION_OVERHEAD);
    uv_timer_init(loop, &net->sweep);
    net->sweep.data = net;
    net->open_handles++;
    uv_timer_start(&net->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&net->sweep);

    vv_net_add_transport(net, &tcp_transport);
    struct vv_env_transport t = {op_send, op_connect, op_disconnect, net};
    vv_env_uv_set_transport(env, &t);
    return net;
}

int vv_net_listen(struct vv_net *net, char *err, size_t err_len)
{
    if (net->listen_addr[0] == '\0')
        return 0;
    const struct vv_net_transport *t = vv_net_select_transport(net, net->listen_addr);
    if (t == NULL) {
        snprintf(err, err_len, "[net] listen = %s: no transport for this address",
                 net->listen_addr);
        return VV_EINVAL;
    }
    return t->listen(net, net->listen_addr, err, err_len);
}

static int tcp_listen(struct vv_net *net, const char *address, char *err, size_t err_len)
{
    char host[256];
    uint16_t port;
    int rc = vv_config_split_hostport(address, host, sizeof(host), &port);
    struct sockaddr_storage ss;
    if (rc == 0 && uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        rc = VV_EINVAL;
    if (rc != 0) {
        snprintf(err, err_len, "[net] listen = %s: not a numeric host:port", address);
        return VV_EINVAL;
    }
    uv_tcp_init(net->loop, &net->listener);
    net->listener.data = net;
    net->open_handles++;
    net->listening = true;
    rc = uv_tcp_bind(&net->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&net->listener, 511, on_connection);
    if (rc < 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", net->listen_addr, uv_strerror(rc));
        return rc;
    }
    int sl = sizeof(ss);
    if (uv_tcp_getsockname(&net->listener, (struct sockaddr *)&ss, &sl) == 0)
        net->bound_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

uint16_t vv_net_bound_port(const struct vv_net *net)
{
    return net->bound_port;
}

void vv_net_set_handshake_cb(struct vv_net *net, vv_net_handshake_cb cb, void *arg)
{
    net->hs_cb = cb;
    net->hs_arg = arg;
}

void vv_net_set_dial_cb(struct vv_net *net, vv_net_dial_cb cb, void *arg)
{
    net->dial_cb = cb;
    net->dial_arg = arg;
}

void vv_net_set_conn_cb(struct vv_net *net, vv_net_conn_cb cb, void *arg)
{
    net->conn_cb = cb;
    net->conn_arg = arg;
}

void vv_net_close(struct vv_net *net)
{
    if (net == NULL || net->closed)
        return;
    net->closed = true;
    struct vv_env_transport none = {0};
    vv_env_uv_set_transport(net->envu, &none);
    for (struct conn *c = net->conns; c; c = c->next)
        conn_close(c, "shutting down");
    uv_close((uv_handle_t *)&net->sweep, on_handle_closed);
    if (net->listening)
        uv_close((uv_handle_t *)&net->listener, on_handle_closed);
    /* Resolutions in flight are cancelled (one already running on the pool comes back when
     * it is done) and free themselves in their callback. */
    for (struct dial *d = net->dials; d; d = d->next)
        uv_cancel((uv_req_t *)&d->req);
    maybe_free(net);
}

const struct vv_net_stats *vv_net_stats(const struct vv_net *net)
{
    return &net->stats;
}

uint32_t vv_net_count(const struct vv_net *net)
{
    return net->stats.connections;
}

static void fill_info(const struct conn *c, struct vv_net_conn_info *o)
{
    memcpy(o->node_id, c->id, VV_NODE_ID_BYTES);
    vv_strlcpy(o->remote, c->remote, sizeof(o->remote));
    vv_strlcpy(o->listen, c->listen, sizeof(o->listen));
    o->inbound = c->inbound;
    o->node_type = c->node_type;
    o->capabilities = c->capabilities;
    o->connected_since_ms = c->established_ms;
    o->bytes_in = c->bytes_in;
    o->bytes_out = c->bytes_out;
    o->frames_in = c->frames_in;
    o->frames_out = c->frames_out;
    o->errors = c->errors;
    o->queued_bytes = c->queued;
}

int vv_net_info(const struct vv_net *net, const uint8_t id[VV_NODE_ID_BYTES],
                struct vv_net_conn_info *out)
{
    const struct conn *c = table_find(net, id);
    if (c == NULL)
        return VV_ECONN_NOT_CONNECTED;
    fill_info(c, out);
    return 0;
}

void vv_net_foreach(const struct vv_net *net,
                    void (*fn)(const struct vv_net_conn_info *info, void *arg), void *arg)
{
    for (const struct conn *c = net->conns; c; c = c->next) {
        if (!c->registered)
            continue;
        struct vv_net_conn_info info;
        fill_info(c, &info);
        fn(&info, arg);
    }
}

/* ---- hello --------------------------------------------------------------------------- */

int vv_net_hello_encode(int node_type, uint32_t capabilities, const char *listen,
                        const char *region, uint8_t *out, size_t cap, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint32(&pk, (uint32_t)node_type);
    msgpack_pack_uint32(&pk, capabilities);
    size_t n = strlen(listen);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, listen, n);
    n = strlen(region);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, region, n);
    int rc = 0;
    if (sb.size > cap || sb.size > VV_SESSION_MAX_HELLO_BYTES)
        rc = VV_ELIMIT;
    else
        memcpy(out, sb.data, sb.size), *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int vv_net_hello_decode(const uint8_t *buf, size_t len, int *node_type, uint32_t *capabilities,
                        char *listen, size_t listen_cap)
{
    /* The hello is a frame body: it goes through the same bounded pre-scan as a frame's, by
     * decoding it wrapped in a frame header [1, 0, 0, 0, hello]. */
    if (len == 0 || len > VV_SESSION_MAX_HELLO_BYTES)
        return VV_EWIRE_MALFORMED;
    uint8_t framed[5 + VV_SESSION_MAX_HELLO_BYTES];
    framed[0] = 0x95; /* fixarray of 5 */
    framed[1] = VV_WIRE_MAJOR;
    framed[2] = framed[3] = framed[4] = 0;
    memcpy(framed + 5, buf, len);
    struct vv_wire_frame f;
    int rc = vv_wire_decode(framed, 5 + len, &f);
    if (rc < 0)
        return VV_EWIRE_MALFORMED;
    const msgpack_object *a;
    uint32_t n;
    uint64_t t, caps;
    const char *s;
    size_t sl;
    rc = VV_EWIRE_MALFORMED;
    if (vv_wire_get_array(&f.body, 4, 4, &a, &n) == 0 &&
        vv_wire_get_u64(&a[0], VV_NODE_TYPE_COUNT - 1, &t) == 0 &&
        vv_wire_get_u64(&a[1], UINT32_MAX, &caps) == 0 &&
        vv_wire_get_str(&a[2], listen_cap - 1, &s, &sl) == 0 &&
        vv_wire_get_str(&a[3], VV_CONNMGR_REGION_BYTES - 1, &s, &sl) == 0) {
        vv_wire_get_str(&a[2], listen_cap - 1, &s, &sl);
        if (sl > 0)
            memcpy(listen, s, sl);
        listen[sl] = '\0';
        *node_type = (int)t;
        *capabilities = (uint32_t)caps;
        rc = 0;
    }
    vv_wire_frame_free(&f);
    return rc;
}
