/*
 * The daemon's datagrams (docs/protocol.md, "Datagrams"): one uv_udp_t bound to the [net]
 * listen address and port (the TCP listener's port when the configured one is 0, so one
 * port serves both), which sends the frames modules hand to vv_env_send_datagram and hands
 * what arrives to vv_env_receive_datagram. It owns the socket, a receive buffer of one
 * datagram and its counters; it keeps no state per peer and resolves no names (addresses
 * are numeric).
 *
 * Nothing here queues: a send the kernel does not take at once (uv_udp_try_send says
 * EAGAIN or ENOBUFS) is dropped, counted and reported as back-pressure, which is what a
 * datagram protocol expects of a full socket. A datagram refused on arrival (its envelope
 * or frame, or nobody takes it) is dropped, counted by reason, and logged at most once per
 * reason every DGRAM_LOG_INTERVAL_MS, so a flood of garbage costs no disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/net.h"

/* A reason's log line at most this often: one line tells the operator; a flood is in the
 * counters. */
#define DGRAM_LOG_INTERVAL_MS 5000

/* Inbound outcomes beyond the envelope's verdicts (vv_env_dgram_verdict). */
enum {
    IN_FRAME = VV_DGRAM_N_VERDICTS, /* the frame failed vv_wire_check */
    IN_UNHANDLED,                   /* nobody on its channel */
    IN_N,
};
static const char *const in_outcome[IN_N] = {
    [VV_DGRAM_OK] = "ok",
    [VV_DGRAM_SHORT] = "dropped_short",
    [VV_DGRAM_OVERSIZE] = "dropped_oversize",
    [VV_DGRAM_MAGIC] = "dropped_magic",
    [VV_DGRAM_VERSION] = "dropped_version",
    [VV_DGRAM_FLAGS] = "dropped_flags",
    [IN_FRAME] = "dropped_frame",
    [IN_UNHANDLED] = "dropped_unhandled",
};
enum { OUT_OK, OUT_BACKPRESSURE, OUT_ERROR, OUT_N };
static const char *const out_outcome[OUT_N] = {"ok", "dropped_backpressure", "dropped_error"};

struct vv_dgram {
    uv_udp_t udp;
    struct vv_env_uv *envu;
    int family; /* the socket's: AF_INET or AF_INET6 */
    uint16_t port;
    bool busy; /* the receive buffer is lent to libuv */
    /* One datagram and one byte more: a read that fills it was larger than any we accept. */
    uint8_t rbuf[VV_ENV_MAX_DATAGRAM_BYTES + 1];
    uint8_t sbuf[VV_ENV_MAX_DATAGRAM_BYTES];
    struct vv_counter *in[IN_N], *out[OUT_N];
    struct vv_counter *bytes_in, *bytes_out;
    uint64_t last_log_ms[IN_N];
    uint64_t suppressed[IN_N]; /* refusals not logged since the last line */
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct vv_dgram *d = h->data;
    if (d->busy) {
        *buf = uv_buf_init(NULL, 0); /* libuv then reports UV_ENOBUFS: nothing is lost */
        return;
    }
    d->busy = true;
    *buf = uv_buf_init((char *)d->rbuf, sizeof(d->rbuf));
}

/* Writes addr as a canonical numeric address; a v4-mapped IPv6 source (a dual-stack
 * socket's) as plain IPv4, so it compares equal to the address a module sent to. */
static int format_address(const struct sockaddr *addr, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN]; /* 46: with "[", "]:" and a port, within VV_ENV_ADDRESS_BYTES */
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        uv_ip4_name(a, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = a->sin6_port};
            memcpy(&v4.sin_addr, a->sin6_addr.s6_addr + 12, 4);
            uv_ip4_name(&v4, ip, sizeof(ip));
            snprintf(out, cap, "%s:%u", ip, ntohs(a->sin6_port));
        } else {
            uv_ip6_name(a, ip, sizeof(ip));
            snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
        }
    } else {
        return VV_EDGRAM_ADDRESS;
    }
    return vv_env_address_canon(out, out, cap);
}

static void refused(struct vv_dgram *d, int outcome, const char *from, size_t len)
{
    vv_counter_inc(d->in[outcome]);
    uint64_t now = uv_now(d->udp.loop);
    if (d->last_log_ms[outcome] != 0 && now - d->last_log_ms[outcome] < DGRAM_LOG_INTERVAL_MS) {
        d->suppressed[outcome]++;
        return;
    }
    const char *why = in_outcome[outcome] + sizeof("dropped_") - 1;
    if (d->suppressed[outcome] > 0)
        vv_log_warn("net",
                    "datagram of %zu bytes from %s dropped: %s (and %llu more since the last "
                    "such line)",
                    len, from, why, (unsigned long long)d->suppressed[outcome]);
    else
        vv_log_warn("net", "datagram of %zu bytes from %s dropped: %s", len, from, why);
    d->last_log_ms[outcome] = now ? now : 1;
    d->suppressed[outcome] = 0;
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
    struct vv_dgram *d = h->data;
    if (buf->base == (char *)d->rbuf)
        d->busy = false;
    if (nread < 0 || addr == NULL)
        return; /* a socket error (ICMP unreachable on Linux) or nothing read: no datagram */
    char from[VV_ENV_ADDRESS_BYTES];
    if (format_address(addr, from, sizeof(from)) != 0)
        return;
    size_t len = (size_t)nread;
    vv_counter_add(d->bytes_in, len);
    if (flags & UV_UDP_PARTIAL)
        len = sizeof(d->rbuf); /* cut by the buffer: larger than we accept */
    enum vv_env_dgram_verdict v;
    int rc = vv_env_receive_datagram(vv_env_uv_env(d->envu), from, d->rbuf, len, &v);
    if (rc == 0)
        vv_counter_inc(d->in[VV_DGRAM_OK]);
    else if (v != VV_DGRAM_OK)
        refused(d, v, from, len);
    else if (rc == VV_ENOTFOUND)
        refused(d, IN_UNHANDLED, from, len);
    else
        refused(d, rc == VV_EWIRE_TOO_LARGE ? VV_DGRAM_OVERSIZE : IN_FRAME, from, len);
}

/* The env's datagram op. address is canonical (vv_env_send_datagram made it so). */
static int dgram_send(void *t, const char *address, const uint8_t *frame, size_t len)
{
    struct vv_dgram *d = t;
    char host[64];
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    const char *colon = strrchr(address, ':');
    if (colon == NULL || vv_env_address_ip(address, host, sizeof(host)) != 0)
        return VV_EDGRAM_ADDRESS;
    int port = atoi(colon + 1); /* canonical: 1..65535 in digits */
    if (address[0] == '[') {
        if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
            return VV_EDGRAM_ADDRESS;
    } else if (d->family == AF_INET6) {
        /* An IPv4 destination from a dual-stack socket: as a v4-mapped address. */
        char mapped[80];
        snprintf(mapped, sizeof(mapped), "::ffff:%s", host);
        if (uv_ip6_addr(mapped, port, (struct sockaddr_in6 *)&ss) != 0)
            return VV_EDGRAM_ADDRESS;
    } else if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0) {
        return VV_EDGRAM_ADDRESS;
    }
    size_t n = vv_env_datagram_seal(vv_env_uv_env(d->envu)->identity->node_id, frame, len, d->sbuf,
                                    sizeof(d->sbuf));
    if (n == 0)
        return VV_EWIRE_TOO_LARGE;
    uv_buf_t b = uv_buf_init((char *)d->sbuf, (unsigned)n);
    int rc = uv_udp_try_send(&d->udp, &b, 1, (const struct sockaddr *)&ss);
    if (rc >= 0) {
        vv_counter_inc(d->out[OUT_OK]);
        vv_counter_add(d->bytes_out, n);
        return 0;
    }
    if (rc == UV_EAGAIN || rc == UV_ENOBUFS) {
        vv_counter_inc(d->out[OUT_BACKPRESSURE]);
        return VV_ECONN_BACKPRESSURE;
    }
    vv_counter_inc(d->out[OUT_ERROR]);
    return rc;
}

static void register_metrics(struct vv_dgram *d, struct vv_metrics *mx)
{
    struct vv_counter *n = vv_metrics_counter(
        mx, "vivimd_net_datagrams_total",
        "Peer datagrams, by direction and outcome (ok, or dropped and why).", "direction,outcome");
    struct vv_counter *b =
        vv_metrics_counter(mx, "vivimd_net_datagram_bytes_total",
                           "Bytes of peer datagrams (UDP payload), by direction.", "direction");
    for (int i = 0; i < IN_N; i++)
        d->in[i] = vv_counter_labels(n, (const char *[]){"in", in_outcome[i]});
    for (int i = 0; i < OUT_N; i++)
        d->out[i] = vv_counter_labels(n, (const char *[]){"out", out_outcome[i]});
    d->bytes_in = vv_counter_labels(b, (const char *[]){"in"});
    d->bytes_out = vv_counter_labels(b, (const char *[]){"out"});
}

struct vv_dgram *vv_dgram_open(uv_loop_t *loop, struct vv_env_uv *envu, const char *listen,
                               uint16_t tcp_port, struct vv_metrics *mx, char *err, size_t err_len)
{
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (vv_config_split_hostport(listen, host, sizeof(host), &port) != 0) {
        snprintf(err, err_len, "[net] listen = %s: not a numeric host:port", listen);
        return NULL;
    }
    if (port == 0)
        port = tcp_port;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, err_len, "[net] listen = %s: not a numeric host:port", listen);
        return NULL;
    }
    struct vv_dgram *d = vv_xcalloc(1, sizeof(*d));
    d->envu = envu;
    d->family = ss.ss_family;
    uv_udp_init(loop, &d->udp);
    d->udp.data = d;
    int rc = uv_udp_bind(&d->udp, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_udp_recv_start(&d->udp, on_alloc, on_recv);
    if (rc != 0) {
        snprintf(err, err_len, "cannot receive datagrams on %s port %u: %s", host, port,
                 uv_strerror(rc));
        vv_dgram_close(d);
        return NULL;
    }
    int sl = sizeof(ss);
    if (uv_udp_getsockname(&d->udp, (struct sockaddr *)&ss, &sl) == 0)
        d->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                : ((struct sockaddr_in6 *)&ss)->sin6_port);
    register_metrics(d, mx);
    vv_env_uv_set_datagram(envu, dgram_send, d);
    return d;
}

uint16_t vv_dgram_port(const struct vv_dgram *d)
{
    return d ? d->port : 0;
}

static void on_closed(uv_handle_t *h)
{
    vv_free(h->data);
}

void vv_dgram_close(struct vv_dgram *d)
{
    if (d == NULL)
        return;
    vv_env_uv_set_datagram(d->envu, NULL, NULL);
    uv_udp_recv_stop(&d->udp);
    uv_close((uv_handle_t *)&d->udp, on_closed);
}
