/*
 * The monitor's HTTP/1.1 endpoint on libuv, with requests parsed by http-parser.
 *
 * Bounded everywhere, by the [metrics] keys (struct vv__http_limits) and a few constants:
 *  - connections (max_connections). When every slot is taken, the connection that has
 *    waited longest for a request, idle or incomplete and not writing, is closed to make
 *    room, so a health check always gets through; /events subscribers are never evicted
 *    but are capped separately (VV_EVENTS_MAX_SUBSCRIBERS, and at most half the slots);
 *  - request line and headers (VV_HTTP_MAX_HEADER_BYTES, then 431);
 *  - time: a request must arrive whole within header_timeout_ms of its first byte (or of
 *    the connection), a keep-alive connection may wait idle_timeout_ms for the next one,
 *    and unsent answers must make progress within write_timeout_ms;
 *  - unsent bytes per connection: past pause_queue_bytes no further request is parsed and
 *    the socket is not read (the rest of the read buffer waits in the connection) until
 *    the answers are written; past max_queue_bytes the connection is closed.
 * Responses are produced synchronously while parsing, so pipelined requests are answered
 * in order. A connection struct owns a uv_tcp_t and a uv_timer_t and is freed when both
 * have closed; its one timer is re-armed for whichever deadline applies (conn_arm).
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
    bool paused;   /* not reading: too many unsent answers */
    size_t queued; /* bytes handed to uv_write and not yet written */
    /* Loop times (uv_now, ms). request_start is 0 when no request is in progress; a new
     * connection counts as one from its accept. */
    uint64_t request_start, idle_since, write_progress;
    /* Read but not yet parsed, while paused: a slice of read_buf, which is not reused
     * until it is consumed (reading is stopped meanwhile). */
    size_t pending_off, pending_len;
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

static void feed(struct http_conn *c, const char *data, size_t len);
static void conn_arm(struct http_conn *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

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

/* Counts a connection the server closes because of a limit ("header_timeout", ...). */
static void count_closed(struct vv_monitor *mon, const char *reason)
{
    const char *v[1] = {reason};
    vv_counter_inc(vv_counter_labels(mon->http_closed, v));
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
    vv_gauge_set(mon->connections, mon->n_conns);
    if (c->sse) {
        mon->n_subs--;
        vv_gauge_set(mon->subscribers, mon->n_subs);
    }
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
}

/* Parses what was read while paused, then reads again, unless it pauses once more. */
static void conn_resume(struct http_conn *c)
{
    c->paused = false;
    if (c->pending_len > 0) {
        size_t off = c->pending_off, len = c->pending_len;
        c->pending_len = 0;
        feed(c, c->read_buf + off, len);
    }
    if (!c->paused && !c->closing)
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = VV_CONTAINER_OF(req, struct write_req, req);
    struct http_conn *c = w->c;
    c->queued -= w->len;
    if (w->shared)
        vv__shared_buf_unref(w->shared);
    vv_free(w);
    if (c->closing)
        return;
    if (status < 0 || (c->close_after_write && c->queued == 0)) {
        conn_close(c);
        return;
    }
    uint64_t now = uv_now(c->tcp.loop);
    c->write_progress = now;
    if (c->queued == 0 && c->request_start == 0)
        c->idle_since = now;
    if (c->paused && c->queued < c->mon->limits.pause_queue_bytes)
        conn_resume(c);
    conn_arm(c);
}

static int conn_write(struct http_conn *c, const char *data, size_t len,
                      struct vv__shared_buf *shared)
{
    if (c->closing)
        return VV_ECLOSED;
    /* One answer larger than the limit is still sent whole; a queue of them is not. */
    if (c->queued > 0 && c->queued + len > c->mon->limits.max_queue_bytes) {
        if (c->sse)
            vv_counter_inc(c->mon->events_dropped); /* a subscriber that does not keep up */
        count_closed(c->mon, "queue_full");
        conn_close(c);
        return VV_ECLOSED;
    }
    if (c->queued == 0)
        c->write_progress = uv_now(c->tcp.loop); /* the write deadline counts from here */
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
    /* Subscribers are never evicted, so they may hold at most half of the slots. */
    unsigned cap = VV_MIN(VV_EVENTS_MAX_SUBSCRIBERS, mon->limits.max_connections / 2);
    if (mon->n_subs >= cap) {
        respond_error(c, 503, "/events");
        return;
    }
    count(mon, "/events", 200);
    static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n"
                              ": vivimd events\n\n";
    conn_write(c, hdr, sizeof(hdr) - 1, NULL);
    c->sse = true;
    c->request_start = 0; /* a stream has no request deadline, only the write deadline */
    mon->n_subs++;
    vv_gauge_set(mon->subscribers, mon->n_subs);
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
        if (c->sse && !c->closing && conn_write(c, NULL, frame->len, frame) == 0)
            conn_arm(c); /* conn_write lets go of a subscriber that does not keep up */
        c = next;
    }
}

/* ---- request parsing callbacks ------------------------------------------------------------ */

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    if (c->request_start == 0) /* a new connection's clock runs from its accept */
        c->request_start = uv_now(c->tcp.loop);
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
    if (c->closing || c->close_after_write)
        return 1; /* parse no further request that would not be answered */
    /* The next request gets its own header deadline; until it begins, the connection is
     * idle. */
    c->request_start = 0;
    c->idle_since = uv_now(c->tcp.loop);
    if (c->queued >= mon->limits.pause_queue_bytes)
        http_parser_pause(p, 1); /* no more answers until these are written (feed) */
    return 0;
}

/*
 * Which deadline applies, and when it falls: unsent answers must make progress; a request
 * in progress must arrive whole; a keep-alive connection may wait idle for so long.
 * Subscribers have only the write deadline.
 */
static const char *conn_deadline(const struct http_conn *c, uint64_t *at)
{
    const struct vv__http_limits *l = &c->mon->limits;
    if (c->queued > 0) {
        *at = c->write_progress + l->write_timeout_ms;
        return "write_timeout";
    }
    if (c->sse)
        return NULL;
    if (c->request_start != 0) {
        *at = c->request_start + l->header_timeout_ms;
        return "header_timeout";
    }
    *at = c->idle_since + l->idle_timeout_ms;
    return "idle_timeout";
}

static void on_timeout(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    uint64_t at = 0;
    const char *reason = conn_deadline(c, &at);
    if (reason == NULL)
        return;
    if (uv_now(t->loop) < at) {
        conn_arm(c);
        return;
    }
    if (c->sse)
        vv_counter_inc(c->mon->events_dropped);
    count_closed(c->mon, reason);
    conn_close(c);
}

/* Re-arms the connection's timer for the deadline that applies now. */
static void conn_arm(struct http_conn *c)
{
    if (c->closing)
        return;
    uint64_t at = 0;
    if (conn_deadline(c, &at) == NULL) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = uv_now(c->tcp.loop);
    uv_timer_start(&c->timer, on_timeout, at > now ? at - now : 0, 0);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct http_conn *c = h->data;
    *buf = uv_buf_init(c->read_buf, sizeof(c->read_buf));
}

/*
 * Parses requests from data and answers them. When the answers queued pass
 * pause_queue_bytes, on_message_complete pauses the parser: the rest of data (a slice of
 * read_buf) is kept, reading stops, and write_done resumes once the answers are written.
 * So one read of pipelined requests queues at most one answer past the pause limit.
 */
static void feed(struct http_conn *c, const char *data, size_t len)
{
    if (c->sse || c->close_after_write || c->closing)
        return; /* a subscriber sends nothing we use; a closing one is done */
    if (c->request_start == 0 && len > 0)
        c->request_start = uv_now(c->tcp.loop); /* before on_message_begin: whitespace */
    size_t parsed = http_parser_execute(&c->parser, &settings, data, len);
    if (c->closing || c->sse)
        return;
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) {
        http_parser_pause(&c->parser, 0);
        c->pending_off = (size_t)(data + parsed - c->read_buf);
        c->pending_len = len - parsed;
        if (!c->paused) {
            c->paused = true;
            vv_counter_inc(c->mon->http_paused);
            uv_read_stop((uv_stream_t *)&c->tcp);
        }
        return;
    }
    if (c->reject) {
        respond_error(c, c->reject, c->reject == 405 ? "other" : "bad");
        return;
    }
    if (c->parser.upgrade || parsed != len || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        if (!c->close_after_write)
            respond_error(c, 400, "bad");
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    feed(c, buf->base, (size_t)nread);
    conn_arm(c);
}

/*
 * Makes room for a new connection when every slot is taken: closes the one that has
 * waited longest for a request (idle since its last answer, or with a request still
 * incomplete) among those not writing an answer. Subscribers are capped separately and
 * never evicted. Returns false when every connection is busy writing or streaming.
 */
static bool evict_one(struct vv_monitor *mon)
{
    struct http_conn *oldest = NULL;
    uint64_t oldest_since = 0;
    for (struct http_conn *c = mon->conns; c; c = c->next) {
        if (c->sse || c->closing || c->queued > 0 || c->paused || c->close_after_write)
            continue;
        uint64_t since = c->request_start != 0 ? c->request_start : c->idle_since;
        if (oldest == NULL || since <= oldest_since) {
            oldest = c;
            oldest_since = since;
        }
    }
    if (oldest == NULL)
        return false;
    count_closed(mon, "evicted");
    conn_close(oldest);
    return true;
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
    bool accepted = uv_accept(listener, (uv_stream_t *)&c->tcp) == 0;
    if (accepted && mon->n_conns >= mon->limits.max_connections && !evict_one(mon)) {
        count_closed(mon, "full");
        accepted = false;
    }
    if (!accepted) {
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
        uv_close((uv_handle_t *)&c->timer, handle_closed);
        return;
    }
    c->next = mon->conns;
    if (mon->conns)
        mon->conns->prev = c;
    mon->conns = c;
    mon->n_conns++;
    vv_gauge_set(mon->connections, mon->n_conns);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->request_start = uv_now(listener->loop); /* the first request's header deadline */
    c->idle_since = c->request_start;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    conn_arm(c);
}

static void keepalive(uv_timer_t *t)
{
    struct vv_monitor *mon = t->data;
    static const char ping[] = ": keepalive\n\n";
    struct http_conn *c = mon->conns;
    while (c) {
        struct http_conn *next = c->next;
        if (c->sse && !c->closing && conn_write(c, ping, sizeof(ping) - 1, NULL) == 0)
            conn_arm(c);
        c = next;
    }
}

int vv__monitor_http_start(struct vv_monitor *mon, const char *listen,
                           const struct vv__http_limits *limits)
{
    mon->limits = *limits;
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
