/*
 * mDNS discovery on the local network: the libuv side of mdns.c. One UDP socket on port
 * 5353 (shared with other mDNS responders through SO_REUSEADDR) joined to 224.0.0.251. We
 * ask for _vivim._tcp.local at start and every VV_MDNS_QUERY_MS, answer others' queries
 * with our announcement, and hand every peer we hear of to the connection manager, which
 * decides whether to dial it. Only when [net] mdns = true.
 */
#include <stdio.h>
#include <string.h>

#include "net_internal.h"
#include "vivim/log.h"
#include "vivim/mdns.h"

#define VV_MDNS_QUERY_MS        60000 /* re-ask for peers this often */
#define VV_MDNS_ANNOUNCE_MIN_MS 1000  /* answers to queries, at most this often */

struct vv__net_mdns {
    uv_udp_t udp;
    uv_timer_t timer;
    struct vv_net_module *m;
    char advertised[VV_MDNS_ADDR_MAX];
    uint8_t rbuf[VV_MDNS_MAX_PACKET];
    unsigned open;
    uint64_t packets, bad_packets, peers_found;
    uint64_t last_announce_ms;
};

struct send_req {
    uv_udp_send_t req;
    size_t len;
    uint8_t data[VV_MDNS_MAX_PACKET];
};

static void on_sent(uv_udp_send_t *req, int status)
{
    (void)status;
    vv_free(req);
}

static void send_packet(struct vv__net_mdns *d, const uint8_t *pkt, size_t len)
{
    struct send_req *r = vv_xmalloc(sizeof(*r));
    memcpy(r->data, pkt, len);
    r->len = len;
    struct sockaddr_in group;
    uv_ip4_addr(VV_MDNS_GROUP_V4, VV_MDNS_PORT, &group);
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)len);
    if (uv_udp_send(&r->req, &d->udp, &b, 1, (const struct sockaddr *)&group, on_sent) != 0)
        vv_free(r);
}

static void send_query(struct vv__net_mdns *d)
{
    uint8_t pkt[VV_MDNS_MAX_PACKET];
    int n = vv_mdns_build_query(pkt, sizeof(pkt), 0);
    if (n > 0)
        send_packet(d, pkt, (size_t)n);
}

static void send_announce(struct vv__net_mdns *d)
{
    if (d->advertised[0] == '\0')
        return; /* nothing useful to tell: we have no address peers could dial */
    uint8_t pkt[VV_MDNS_MAX_PACKET];
    int n = vv_mdns_build_announce(pkt, sizeof(pkt), d->m->node->identity.node_id, d->advertised);
    if (n > 0)
        send_packet(d, pkt, (size_t)n);
}

static void on_timer(uv_timer_t *t)
{
    struct vv__net_mdns *d = t->data;
    send_query(d);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct vv__net_mdns *d = h->data;
    *buf = uv_buf_init((char *)d->rbuf, sizeof(d->rbuf));
}

static void on_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags)
{
    struct vv__net_mdns *d = u->data;
    if (nread <= 0 || from == NULL || (flags & UV_UDP_PARTIAL))
        return;
    d->packets++;
    int for_us = 0;
    struct vv_mdns_peer peers[VV_MDNS_MAX_PEERS];
    size_t n = VV_MDNS_MAX_PEERS;
    if (vv_mdns_parse((const uint8_t *)buf->base, (size_t)nread, &for_us, peers, &n) != 0) {
        d->bad_packets++;
        return;
    }
    /* At most one announcement per second, however many queries arrive. */
    uint64_t now = uv_now(d->m->node->loop);
    if (for_us && now - d->last_announce_ms >= VV_MDNS_ANNOUNCE_MIN_MS) {
        d->last_announce_ms = now;
        send_announce(d);
    }
    for (size_t i = 0; i < n; i++) {
        if (memcmp(peers[i].id, d->m->node->identity.node_id, VV_NODE_ID_BYTES) == 0)
            continue;
        /* Only peers we do not know: an unauthenticated LAN host must not be able to point
         * known peers (bootstrap ones included) at bogus addresses. */
        if (d->m->connmgr && vv_connmgr_find(d->m->connmgr, peers[i].id) == NULL &&
            vv_connmgr_add_peer(d->m->connmgr, peers[i].id, peers[i].addr, 0) == 0)
            d->peers_found++;
    }
}

static void on_closed(uv_handle_t *h)
{
    struct vv__net_mdns *d = h->data;
    if (--d->open == 0)
        vv_free(d);
}

int vv__net_mdns_start(struct vv_net_module *m, const char *advertised, char *err, size_t len)
{
    struct vv__net_mdns *d = vv_xcalloc(1, sizeof(*d));
    d->m = m;
    vv_strlcpy(d->advertised, advertised, sizeof(d->advertised));
    uv_udp_init(m->node->loop, &d->udp);
    uv_timer_init(m->node->loop, &d->timer);
    d->udp.data = d->timer.data = d;
    d->open = 2;
    m->mdns = d;
    struct sockaddr_in any;
    uv_ip4_addr("0.0.0.0", VV_MDNS_PORT, &any);
    int rc = uv_udp_bind(&d->udp, (const struct sockaddr *)&any, UV_UDP_REUSEADDR);
    if (rc == 0)
        rc = uv_udp_set_membership(&d->udp, VV_MDNS_GROUP_V4, NULL, UV_JOIN_GROUP);
    if (rc == 0)
        rc = uv_udp_set_multicast_loop(&d->udp, 1);
    if (rc == 0)
        rc = uv_udp_recv_start(&d->udp, on_alloc, on_recv);
    if (rc != 0) {
        snprintf(err, len, "udp port %d, group %s: %s", VV_MDNS_PORT, VV_MDNS_GROUP_V4,
                 uv_strerror(rc));
        vv__net_mdns_stop(m);
        return rc;
    }
    uv_timer_start(&d->timer, on_timer, 0, VV_MDNS_QUERY_MS);
    send_announce(d);
    vv_log_info("net", "mDNS discovery on %s:%d", VV_MDNS_GROUP_V4, VV_MDNS_PORT);
    return 0;
}

void vv__net_mdns_stop(struct vv_net_module *m)
{
    struct vv__net_mdns *d = m->mdns;
    if (d == NULL)
        return;
    m->mdns = NULL;
    uv_close((uv_handle_t *)&d->udp, on_closed);
    uv_close((uv_handle_t *)&d->timer, on_closed);
}
