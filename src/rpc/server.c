/*
 * The RPC socket: a Unix stream listener and its clients, in libuv. Frames lines, enforces
 * the line, client and output-queue limits, and hands complete lines to the core
 * (jsonrpc.c). A client struct owns its uv_pipe_t and is freed from the close callback.
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
    struct client *clients; /* doubly linked */
    uint32_t n_clients;
};

struct client {
    uv_pipe_t h;
    struct vv__rpc_server *srv;
    struct vv_rpc_conn *conn;
    char *line; /* the partial line so far */
    size_t len, cap;
    bool discarding; /* inside an over-long line: drop until its newline */
    size_t queued;   /* bytes handed to uv_write and not yet written */
    bool closing;
    char read_buf[READ_CHUNK_BYTES];
    struct client *prev, *next;
};

struct write_req {
    uv_write_t req;
    struct client *cl;
    size_t len;
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
    cl->queued -= w->len;
    vv_free(w);
    if (status < 0 && status != UV_ECANCELED)
        client_close(cl);
}

static int client_write(void *io, const char *data, size_t len)
{
    struct client *cl = io;
    if (cl->closing)
        return VV_ECLOSED;
    if (cl->queued + len > cl->srv->max_queue) {
        /* A client that does not read must not grow our memory: cut it off. */
        vv__rpc_count_error(cl->srv->rpc, "queue_full");
        vv_log_warn("rpc", "client not reading (%zu bytes queued): disconnected", cl->queued);
        client_close(cl);
        return VV_ERPC_QUEUE_FULL;
    }
    struct write_req *w = vv_xmalloc(sizeof(*w) + len);
    w->cl = cl;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&cl->h, &buf, 1, write_done);
    if (rc != 0) {
        vv_free(w);
        client_close(cl);
        return rc;
    }
    cl->queued += len;
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct client *cl = h->data;
    *buf = uv_buf_init(cl->read_buf, sizeof(cl->read_buf));
}

static void append(struct client *cl, const char *p, size_t n)
{
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

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *cl = s->data;
    if (nread < 0) {
        client_close(cl);
        return;
    }
    const char *p = buf->base, *end = buf->base + nread;
    while (p < end && !cl->closing) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t chunk = (size_t)((nl ? nl : end) - p);
        if (cl->discarding) {
            if (nl)
                cl->discarding = false;
        } else if (cl->len + chunk > cl->srv->max_line) {
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
                if (len > 0)
                    vv_rpc_conn_input(cl->conn, cl->line, len);
            }
        }
        p += chunk + (nl ? 1 : 0);
    }
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
    cl->next = srv->clients;
    if (srv->clients)
        srv->clients->prev = cl;
    srv->clients = cl;
    srv->n_clients++;
    set_clients_gauge(srv);
    uv_read_start((uv_stream_t *)&cl->h, alloc_cb, read_cb);
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

static void listener_closed(uv_handle_t *h)
{
    struct vv__rpc_server *srv = h->data;
    vv_free(srv->path);
    vv_free(srv);
}

int vv__rpc_server_start(struct vv_rpc *rpc, struct vv_node *n)
{
    const char *path = n->config.rpc_socket;
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
    srv->max_clients = n->config.rpc_max_clients;
    srv->max_line = n->config.rpc_max_line_bytes;
    srv->max_queue = n->config.rpc_max_queue_bytes;
    uv_pipe_init(n->loop, &srv->listener, 0);
    srv->listener.data = srv;
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
        uv_close((uv_handle_t *)&srv->listener, listener_closed);
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
    uv_close((uv_handle_t *)&srv->listener, listener_closed);
}
