/*
 * The monitor's HTTP/1.1 endpoint on libuv, with requests parsed by http-parser.
 *
 * Bounded everywhere: connections (VV_HTTP_MAX_CONNECTIONS), request line and headers
 * (VV_HTTP_MAX_HEADER_BYTES, then 431), time to send a whole request
 * (VV_HTTP_REQUEST_TIMEOUT_MS, then the connection is closed), /events subscribers and
 * their unsent bytes. Responses are produced synchronously while parsing, so pipelined
 * requests are answered in order. A connection struct owns a uv_tcp_t and a uv_timer_t and
 * is freed when both have closed.
 */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_internal.h"
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/log.h"
#include "vivim/node.h"

#define URL_MAX_BYTES 2048

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    struct vv_monitor *mon;
    http_parser parser;
    char url[URL_MAX_BYTES + 1];
    size_t url_len;
    size_t header_bytes;
    int reject; /* 0, or the status to answer and then close (414, 431, 405) */
    bool sse;
    bool closing;
    bool close_after_write;
    size_t queued;
    struct http_conn *prev, *next;
    char read_buf[16384];
};

struct write_req {
    uv_write_t req;
    struct http_conn *c;
    struct vv__shared_buf *shared; /* or NULL: data follows */
    size_t len;
    char data[];
};

static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_header(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_message_complete(http_parser *p);

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header,
    .on_header_value = on_header,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static void count(struct vv_monitor *mon, const char *path, int code)
{
    char c[8];
    snprintf(c, sizeof(c), "%d", code);
    const char *v[2] = {path, c};
    vv_counter_inc(vv_counter_labels(mon->http_requests, v));
}

static void handle_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    if (--c->open_handles == 0)
        vv_free(c);
}

static void conn_close(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct vv_monitor *mon = c->mon;
    if (c->prev)
        c->prev->next = c->next;
    else
        mon->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mon->n_conns--;
    if (c->sse) {
        mon->n_subs--;
        vv_gauge_set(mon->subscribers, mon->n_subs);
    }
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
}

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = VV_CONTAINER_OF(req, struct write_req, req);
    struct http_conn *c = w->c;
    c->queued -= w->len;
    if (w->shared)
        vv__shared_buf_unref(w->shared);
    vv_free(w);
    if (status < 0 || (c->close_after_write && c->queued == 0))
        conn_close(c);
}

static int conn_write(struct http_conn *c, const char *data, size_t len,
                      struct vv__shared_buf *shared)
{
    if (c->closing)
        return VV_ECLOSED;
    struct write_req *w = vv_xmalloc(sizeof(*w) + (shared ? 0 : len));
    w->c = c;
    w->len = len;
    w->shared = shared;
    uv_buf_t buf;
    if (shared) {
        shared->refs++;
        buf = uv_buf_init(shared->data, (unsigned)shared->len);
    } else {
        memcpy(w->data, data, len);
        buf = uv_buf_init(w->data, (unsigned)len);
    }
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_done);
    if (rc != 0) {
        if (shared)
            vv__shared_buf_unref(shared);
        vv_free(w);
        conn_close(c);
        return rc;
    }
    c->queued += len;
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    }
    return "Error";
}

static void respond(struct http_conn *c, int status, const char *type, const char *body,
                    size_t body_len, bool head, bool keep_alive, const char *extra)
{
    char hdr[512];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                     status, reason(status), type, body_len, keep_alive ? "keep-alive" : "close",
                     extra ? extra : "");
    size_t total = (size_t)n + (head ? 0 : body_len);
    char *out = vv_xmalloc(total);
    memcpy(out, hdr, (size_t)n);
    if (!head && body_len)
        memcpy(out + n, body, body_len);
    conn_write(c, out, total, NULL);
    vv_free(out);
    if (!keep_alive) {
        c->close_after_write = true;
        if (c->queued == 0)
            conn_close(c);
    }
}

static void respond_error(struct http_conn *c, int status, const char *path)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
    count(c->mon, path, status);
    respond(c, status, "text/plain; charset=utf-8", body, (size_t)n, false, false,
            status == 405 ? "Allow: GET, HEAD\r\n" : NULL);
}

static void start_events(struct http_conn *c)
{
    struct vv_monitor *mon = c->mon;
    if (mon->n_subs >= VV_EVENTS_MAX_SUBSCRIBERS) {
        respond_error(c, 503, "/events");
        return;
    }
    count(mon, "/events", 200);
    static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n"
                              ": vivimd events\n\n";
    conn_write(c, hdr, sizeof(hdr) - 1, NULL);
    c->sse = true;
    mon->n_subs++;
    vv_gauge_set(mon->subscribers, mon->n_subs);
    uv_timer_stop(&c->timer); /* a stream has no request deadline */
    /* Replay the recent events, oldest first. */
    for (unsigned k = 0; k < mon->n_recent; k++) {
        unsigned i = (mon->recent_next + VV_EVENTS_RECENT - mon->n_recent + k) % VV_EVENTS_RECENT;
        conn_write(c, NULL, mon->recent[i]->len, mon->recent[i]);
    }
}

void vv__monitor_fanout(struct vv_monitor *mon, struct vv__shared_buf *frame)
{
    struct http_conn *c = mon->conns;
    while (c) {
        struct http_conn *next = c->next;
        if (c->sse && !c->closing) {
            if (c->queued + frame->len > VV_EVENTS_MAX_QUEUE_BYTES) {
                vv_counter_inc(mon->events_dropped);
                conn_close(c); /* a subscriber that does not keep up is let go */
            } else {
                conn_write(c, NULL, frame->len, frame);
            }
        }
        c = next;
    }
}

/* ---- request parsing callbacks ------------------------------------------------------------ */

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    c->url_len = 0;
    c->header_bytes = 0;
    c->reject = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    c->header_bytes += len;
    if (c->url_len + len > URL_MAX_BYTES) {
        c->reject = 414;
        return 1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_header(http_parser *p, const char *at, size_t len)
{
    (void)at;
    struct http_conn *c = p->data;
    c->header_bytes += len;
    if (c->header_bytes > VV_HTTP_MAX_HEADER_BYTES) {
        c->reject = 431;
        return 1;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
        c->reject = 405; /* and never read a body we do not want */
        return -1;       /* http-parser: 1 would mean "no body"; anything else stops */
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    struct vv_monitor *mon = c->mon;
    bool head = p->method == HTTP_HEAD;
    bool keep = http_should_keep_alive(p) != 0;
    char *q = strchr(c->url, '?');
    if (q)
        *q = '\0';
    const char *path = c->url;
    if (strcmp(path, "/metrics") == 0) {
        char *text;
        size_t len;
        count(mon, "/metrics", 200); /* counted first so the page includes this scrape */
        vv_metrics_render(mon->n->metrics, &text, &len);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, head, keep, NULL);
        vv_free(text);
    } else if (strcmp(path, "/health") == 0) {
        int status;
        json_t *h = vv__monitor_health(mon, &status);
        char *body = json_dumps(h, JSON_COMPACT);
        json_decref(h);
        size_t len = strlen(body);
        char *line = vv_xmalloc(len + 1);
        memcpy(line, body, len);
        line[len] = '\n';
        free(body);
        count(mon, "/health", status);
        respond(c, status, "application/json", line, len + 1, head, keep, NULL);
        vv_free(line);
    } else if (strcmp(path, "/events") == 0 && !head) {
        start_events(c);
        return 1; /* nothing more is read as requests on a stream */
    } else {
        respond_error(c, 404, "other");
        return 1;
    }
    /* The next request on this connection gets a fresh deadline. */
    if (!c->closing)
        uv_timer_again(&c->timer);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    if (!c->sse)
        conn_close(c); /* too slow, or idle on keep-alive */
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct http_conn *c = h->data;
    *buf = uv_buf_init(c->read_buf, sizeof(c->read_buf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->sse || c->close_after_write || c->closing)
        return; /* a subscriber sends nothing we use; a closing one is done */
    size_t parsed = http_parser_execute(&c->parser, &settings, buf->base, (size_t)nread);
    if (c->closing || c->sse)
        return;
    if (c->reject) {
        respond_error(c, c->reject, c->reject == 405 ? "other" : "bad");
        return;
    }
    if (c->parser.upgrade || parsed != (size_t)nread || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        if (!c->close_after_write)
            respond_error(c, 400, "bad");
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct vv_monitor *mon = listener->data;
    if (status < 0)
        return;
    struct http_conn *c = vv_xcalloc(1, sizeof(*c));
    c->mon = mon;
    uv_tcp_init(listener->loop, &c->tcp);
    uv_timer_init(listener->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
        mon->n_conns >= VV_HTTP_MAX_CONNECTIONS) {
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
        uv_close((uv_handle_t *)&c->timer, handle_closed);
        return;
    }
    c->next = mon->conns;
    if (mon->conns)
        mon->conns->prev = c;
    mon->conns = c;
    mon->n_conns++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_timer_start(&c->timer, on_timeout, VV_HTTP_REQUEST_TIMEOUT_MS, VV_HTTP_REQUEST_TIMEOUT_MS);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void keepalive(uv_timer_t *t)
{
    struct vv_monitor *mon = t->data;
    static const char ping[] = ": keepalive\n\n";
    for (struct http_conn *c = mon->conns; c; c = c->next)
        if (c->sse && !c->closing && c->queued + sizeof(ping) <= VV_EVENTS_MAX_QUEUE_BYTES)
            conn_write(c, ping, sizeof(ping) - 1, NULL);
}

int vv__monitor_http_start(struct vv_monitor *mon, const char *listen)
{
    char host[256];
    uint16_t port;
    if (vv_config_split_hostport(listen, host, sizeof(host), &port) != 0)
        return VV_EINVAL;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_storage ss;
    bool v6 = strchr(host, ':') != NULL;
    int rc = v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc != 0) {
        vv_log_error("monitor",
                     "[metrics] listen: '%s' is not a numeric IP address "
                     "(use 127.0.0.1, [::1] or an interface address)",
                     host);
        return VV_EINVAL;
    }
    uv_tcp_init(mon->n->loop, &mon->listener);
    mon->listener.data = mon;
    rc = uv_tcp_bind(&mon->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&mon->listener, 64, on_connection);
    if (rc != 0) {
        vv_log_error("monitor", "cannot listen on %s: %s", listen, vv_strerror(rc));
        uv_close((uv_handle_t *)&mon->listener, NULL);
        return rc;
    }
    /* Report the port actually bound (port 0 asks for any). */
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&mon->listener, (struct sockaddr *)&bound, &blen);
    char ip[64];
    uint16_t bport;
    if (bound.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
        bport = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        snprintf(mon->url, sizeof(mon->url), "http://[%s]:%u", ip, bport);
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
        bport = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        snprintf(mon->url, sizeof(mon->url), "http://%s:%u", ip, bport);
    }
    mon->listening = true;
    uv_timer_init(mon->n->loop, &mon->keepalive);
    mon->keepalive.data = mon;
    uv_timer_start(&mon->keepalive, keepalive, VV_EVENTS_KEEPALIVE_MS, VV_EVENTS_KEEPALIVE_MS);
    mon->keepalive_on = true;
    vv_log_info("monitor", "metrics on %s/metrics", mon->url);
    return 0;
}

void vv__monitor_http_stop(struct vv_monitor *mon)
{
    if (!mon->listening)
        return;
    mon->listening = false;
    while (mon->conns)
        conn_close(mon->conns);
    uv_close((uv_handle_t *)&mon->listener, NULL);
    if (mon->keepalive_on) {
        uv_close((uv_handle_t *)&mon->keepalive, NULL);
        mon->keepalive_on = false;
    }
}
