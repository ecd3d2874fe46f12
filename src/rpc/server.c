/*
 * The RPC socket: a Unix stream listener and its clients, in libuv. Frames lines, enforces
 * the line, client and output-queue limits, and hands complete lines to the core
 * (jsonrpc.c). A client struct owns its uv_pipe_t and is freed from the close callback.
 *
 * Flow control: a client's bytes are read into its read buffer and dispatched from there,
 * at most lines_per_turn lines per turn of the loop, and none while the client has
 * max_in_flight calls unanswered (handlers that answer later: storage writes, peers). While
 * unread lines remain in the buffer, or the client is at its in-flight limit, its socket is
 * not read: the kernel's buffers fill and the client's writes block, so a client that
 * pipelines without reading holds at most max_in_flight calls and one read buffer of ours,
 * and its unanswered work cannot starve the other clients. The rest of a buffer is
 * dispatched on later turns by the pump (an idle handle, active only while some client has
 * lines waiting); a client at its limit is woken by its answers, once half are in.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "rpc_internal.h"
#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/node.h"

#define READ_CHUNK_BYTES 65536

struct client;

struct vv__rpc_server {
    struct vv_rpc *rpc;
    uv_pipe_t listener;
    bool listening;
    char *path;
    uint32_t max_clients, max_line, max_queue;
    uint32_t max_in_flight;  /* unanswered calls per client before its reads pause */
    uint32_t lines_per_turn; /* lines of one client dispatched per turn of the loop */
    struct client *clients;  /* doubly linked */
    uint32_t n_clients;
    uv_idle_t pump;   /* runs client_pump for the scheduled clients, each turn */
    int open_handles; /* listener and pump: srv is freed when both are closed */
    unsigned n_scheduled;
};

struct client {
    uv_pipe_t h;
    struct vv__rpc_server *srv;
    struct vv_rpc_conn *conn;
    char *line; /* the partial line so far */
    size_t len, cap;
    bool discarding; /* inside an over-long line: drop until its newline */
    size_t queued;   /* bytes handed to uv_write and not yet written, with their requests */
    bool closing;
    bool reading;   /* uv_read_start in effect */
    bool waiting;   /* paused at max_in_flight until answers bring it to half */
    bool scheduled; /* client_pump runs for it on the next pump pass */
    /* read_buf[in_off, in_end) holds bytes read and not yet dispatched; the socket is not
     * read while it is non-empty, so alloc_cb can always hand out the whole buffer. */
    size_t in_off, in_end;
    char read_buf[READ_CHUNK_BYTES];
    struct client *prev, *next;
};

struct write_req {
    uv_write_t req;
    struct client *cl;
    size_t cost; /* what it holds of cl->queued */
    char data[];
};

static void set_clients_gauge(struct vv__rpc_server *srv)
{
    struct vv__rpc_stats *st = vv__rpc_stats(srv->rpc);
    if (st->clients)
        vv_gauge_set(st->clients, srv->n_clients);
}

static void client_freed(uv_handle_t *h)
{
    struct client *cl = h->data;
    vv_free(cl->line);
    vv_free(cl);
}

static void client_close(struct client *cl)
{
    if (cl->closing)
        return;
    cl->closing = true;
    struct vv__rpc_server *srv = cl->srv;
    if (cl->scheduled && srv && --srv->n_scheduled == 0)
        uv_idle_stop(&srv->pump);
    cl->scheduled = false;
    if (cl->prev)
        cl->prev->next = cl->next;
    else if (srv)
        srv->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    if (srv) {
        srv->n_clients--;
        set_clients_gauge(srv);
    }
    if (cl->conn) {
        vv_rpc_conn_close(cl->conn); /* pending answers to it are dropped */
        cl->conn = NULL;
    }
    uv_close((uv_handle_t *)&cl->h, client_freed);
}

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = VV_CONTAINER_OF(req, struct write_req, req);
    struct client *cl = w->cl;
    cl->queued -= w->cost;
    vv_free(w);
    if (status < 0 && status != UV_ECANCELED)
        client_close(cl);
}

static int client_write(void *io, const char *data, size_t len)
{
    struct client *cl = io;
    if (cl->closing)
        return VV_ECLOSED;
    /* Each write is charged what it holds, request included: a small answer costs several
     * times its length, and max_queue_bytes should bound memory, not only payload. */
    size_t cost = sizeof(struct write_req) + len;
    if (cl->queued + cost > cl->srv->max_queue) {
        /* A client that does not read must not grow our memory: cut it off. */
        vv__rpc_count_error(cl->srv->rpc, "queue_full");
        vv_log_warn("rpc", "client not reading (%zu bytes queued): disconnected", cl->queued);
        client_close(cl);
        return VV_ERPC_QUEUE_FULL;
    }
    struct write_req *w = vv_xmalloc(sizeof(*w) + len);
    w->cl = cl;
    w->cost = cost;
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&cl->h, &buf, 1, write_done);
    if (rc != 0) {
        vv_free(w);
        client_close(cl);
        return rc;
    }
    cl->queued += cost;
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct client *cl = h->data;
    /* Reading is stopped while read_buf holds undispatched bytes, so it is free here. */
    *buf = uv_buf_init(cl->read_buf, sizeof(cl->read_buf));
}

static void append(struct client *cl, const char *p, size_t n)
{
    if (n == 0)
        return; /* cl->line may still be NULL: memcpy must not see it, even for 0 bytes */
    if (cl->len + n > cl->cap) {
        size_t cap = cl->cap ? cl->cap : 4096;
        while (cap < cl->len + n)
            cap *= 2;
        cl->line = vv_xrealloc(cl->line, cap);
        cl->cap = cap;
    }
    memcpy(cl->line + cl->len, p, n);
    cl->len += n;
}

static void too_long(struct client *cl)
{
    vv__rpc_count_error(cl->srv->rpc, "too_long");
    char msg[96];
    snprintf(msg, sizeof(msg), "request line longer than %u bytes", cl->srv->max_line);
    vv__rpc_conn_error(cl->conn, VV_RPC_INVALID_REQUEST, msg, "VV_ERPC_LINE_TOO_LONG");
    cl->discarding = true;
    cl->len = 0;
    if (cl->cap > 65536) { /* do not keep a huge buffer around */
        vv_free(cl->line);
        cl->line = NULL;
        cl->cap = 0;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void client_read(struct client *cl, bool on)
{
    if (cl->reading == on || cl->closing)
        return;
    int rc = on ? uv_read_start((uv_stream_t *)&cl->h, alloc_cb, read_cb)
                : uv_read_stop((uv_stream_t *)&cl->h);
    if (rc != 0) {
        client_close(cl);
        return;
    }
    cl->reading = on;
}

static void pump_cb(uv_idle_t *h);

static void client_schedule(struct client *cl)
{
    if (cl->scheduled || cl->closing)
        return;
    cl->scheduled = true;
    if (cl->srv->n_scheduled++ == 0)
        uv_idle_start(&cl->srv->pump, pump_cb);
}

/* Reads again, waits, or schedules the rest of the buffer, as the limits say. */
static void client_flow(struct client *cl)
{
    if (cl->closing)
        return;
    struct vv__rpc_server *srv = cl->srv;
    if (vv__rpc_conn_pending(cl->conn) >= srv->max_in_flight) {
        if (!cl->waiting) {
            cl->waiting = true;
            struct vv__rpc_stats *st = vv__rpc_stats(srv->rpc);
            if (st->read_pauses)
                vv_counter_inc(st->read_pauses);
        }
        client_read(cl, false);
    } else if (cl->in_off < cl->in_end) {
        client_read(cl, false); /* this turn's share is spent: the rest on the next */
        client_schedule(cl);
    } else {
        client_read(cl, true);
    }
}

/* Frames and dispatches lines from the read buffer, within this turn's share. */
static void client_pump(struct client *cl)
{
    struct vv__rpc_server *srv = cl->srv;
    uint32_t budget = srv->lines_per_turn;
    while (cl->in_off < cl->in_end && !cl->closing && budget > 0 &&
           vv__rpc_conn_pending(cl->conn) < srv->max_in_flight) {
        const char *p = cl->read_buf + cl->in_off, *end = cl->read_buf + cl->in_end;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t chunk = (size_t)((nl ? nl : end) - p);
        cl->in_off += chunk + (nl ? 1 : 0);
        if (nl)
            budget--;
        if (cl->discarding) {
            if (nl)
                cl->discarding = false;
        } else if (cl->len + chunk > srv->max_line) {
            too_long(cl);
            if (nl)
                cl->discarding = false;
        } else {
            append(cl, p, chunk);
            if (nl) {
                size_t len = cl->len;
                if (len > 0 && cl->line[len - 1] == '\r')
                    len--;
                cl->len = 0;
                /* An empty line too: the core answers it (a parse error). */
                vv_rpc_conn_input(cl->conn, len > 0 ? cl->line : "", len);
            }
        }
    }
    if (cl->in_off == cl->in_end)
        cl->in_off = cl->in_end = 0;
    client_flow(cl);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *cl = s->data;
    (void)buf; /* always cl->read_buf, empty when reading (see alloc_cb) */
    if (nread < 0) {
        client_close(cl);
        return;
    }
    cl->in_off = 0;
    cl->in_end = (size_t)nread;
    client_pump(cl);
}

/* An answer to cl came: resume it if it waits at its in-flight limit and half are in. */
static void client_settled(void *io, unsigned pending)
{
    struct client *cl = io;
    if (cl->waiting && !cl->closing && pending <= cl->srv->max_in_flight / 2) {
        cl->waiting = false;
        client_schedule(cl);
    }
}

/*
 * Once per turn while some client is scheduled: each gets its share. A client closed during
 * the pass is unlinked but not freed before the loop's closing phase, and keeps its next
 * pointer, so the walk goes on through it; clients accepted meanwhile (none: this runs
 * before polling) would only be added at the head.
 */
static void pump_cb(uv_idle_t *h)
{
    struct vv__rpc_server *srv = h->data;
    struct client *cl = srv->clients;
    while (cl != NULL) {
        struct client *next = cl->next;
        if (cl->scheduled && !cl->closing) {
            cl->scheduled = false;
            srv->n_scheduled--;
            client_pump(cl);
        }
        cl = next;
    }
    if (srv->n_scheduled == 0)
        uv_idle_stop(&srv->pump);
}

/* A client past the limit gets one error line and is closed once it is written. */
static void refuse_done(uv_write_t *req, int status)
{
    (void)status;
    uv_close((uv_handle_t *)req->handle, (uv_close_cb)vv_free);
    vv_free(req);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct vv__rpc_server *srv = listener->data;
    if (status < 0)
        return;
    if (srv->n_clients >= srv->max_clients) {
        uv_pipe_t *p = vv_xmalloc(sizeof(*p));
        uv_pipe_init(listener->loop, p, 0);
        if (uv_accept(listener, (uv_stream_t *)p) != 0) {
            uv_close((uv_handle_t *)p, (uv_close_cb)vv_free);
            return;
        }
        vv__rpc_count_error(srv->rpc, "too_many_clients");
        static const char line[] =
            "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-10402,\"message\":\"too many RPC "
            "clients\",\"data\":\"VV_ERPC_TOO_MANY_CLIENTS\"},\"id\":null}\n";
        uv_write_t *w = vv_xmalloc(sizeof(*w));
        uv_buf_t b = uv_buf_init((char *)line, sizeof(line) - 1);
        if (uv_write(w, (uv_stream_t *)p, &b, 1, refuse_done) != 0) {
            vv_free(w);
            uv_close((uv_handle_t *)p, (uv_close_cb)vv_free);
        }
        return;
    }
    struct client *cl = vv_xcalloc(1, sizeof(*cl));
    cl->srv = srv;
    uv_pipe_init(listener->loop, &cl->h, 0);
    cl->h.data = cl;
    if (uv_accept(listener, (uv_stream_t *)&cl->h) != 0) {
        cl->closing = true;
        uv_close((uv_handle_t *)&cl->h, client_freed);
        return;
    }
    cl->conn = vv_rpc_conn_new(srv->rpc, client_write, cl);
    vv__rpc_conn_set_settled_cb(cl->conn, client_settled);
    cl->next = srv->clients;
    if (srv->clients)
        srv->clients->prev = cl;
    srv->clients = cl;
    srv->n_clients++;
    set_clients_gauge(srv);
    client_read(cl, true);
}

/* Is a daemon answering on path? 1 yes, 0 no (stale or absent), <0 not a socket etc. */
static int probe_socket(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    vv_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN)
        return 1;
    return 0; /* ECONNREFUSED: nobody listens; a leftover from a crash */
}

static void server_handle_closed(uv_handle_t *h)
{
    struct vv__rpc_server *srv = h->data;
    if (--srv->open_handles > 0)
        return;
    vv_free(srv->path);
    vv_free(srv);
}

int vv__rpc_server_start(struct vv_rpc *rpc, struct vv_node *n)
{
    const struct vv_rpc_settings *cfg = vv_rpc_settings(&n->config);
    const char *path = cfg->socket;
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        vv_log_error("rpc", "socket path %s is longer than %zu bytes", path,
                     sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return VV_EINVAL;
    }
    int probe = probe_socket(path);
    if (probe == 1) {
        vv_log_error("rpc", "another vivimd is already running on %s", path);
        return VV_ENODE_RUNNING;
    }
    if (probe == -EEXIST) {
        vv_log_error("rpc", "%s exists and is not a socket; not touching it", path);
        return VV_EEXIST;
    }
    if (probe == 0)
        unlink(path); /* stale socket from a crash, or nothing */

    struct vv__rpc_server *srv = vv_xcalloc(1, sizeof(*srv));
    srv->rpc = rpc;
    srv->path = vv_xstrdup(path);
    srv->max_clients = cfg->max_clients;
    srv->max_line = cfg->max_line_bytes;
    srv->max_queue = cfg->max_queue_bytes;
    srv->max_in_flight = cfg->max_in_flight;
    srv->lines_per_turn = cfg->lines_per_turn;
    uv_pipe_init(n->loop, &srv->listener, 0);
    srv->listener.data = srv;
    uv_idle_init(n->loop, &srv->pump);
    srv->pump.data = srv;
    srv->open_handles = 2;
    /* Created 0660 from the start: no window in which others could connect. */
    mode_t old = umask(0117);
    int rc = uv_pipe_bind(&srv->listener, path);
    umask(old);
    if (rc == 0)
        rc = chmod(path, 0660) == 0 ? 0 : -errno;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (rc != 0) {
        vv_log_error("rpc", "cannot listen on %s: %s", path, vv_strerror(rc));
        uv_close((uv_handle_t *)&srv->pump, server_handle_closed);
        uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
        return rc;
    }
    srv->listening = true;
    *vv__rpc_server_slot(rpc) = srv;
    vv_log_info("rpc", "listening on %s", path);
    return 0;
}

void vv__rpc_server_stop(struct vv_rpc *rpc)
{
    struct vv__rpc_server *srv = *vv__rpc_server_slot(rpc);
    if (srv == NULL)
        return;
    *vv__rpc_server_slot(rpc) = NULL;
    while (srv->clients) {
        struct client *cl = srv->clients;
        client_close(cl);
        cl->srv = NULL;
    }
    unlink(srv->path);
    uv_close((uv_handle_t *)&srv->pump, server_handle_closed);
    uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
}
