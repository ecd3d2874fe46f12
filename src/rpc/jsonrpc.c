/*
 * The JSON-RPC 2.0 core: method table, request validation, dispatch, batches, answers and
 * notifications, independent of any socket. Every byte of a line is untrusted: depth is
 * checked before parsing, every member's type is checked after, and any failure becomes
 * the error object the specification prescribes.
 *
 * Lifetimes: a connection is reference-counted (its transport holds one reference; every
 * request in flight holds one). A request lives from dispatch until it is answered; a
 * batch lives until its last member is answered. Answers to a closed connection are
 * dropped.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "rpc_internal.h"
#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/node.h"

#define ANSWER_TOKEN 0x5ca1ab1eu

struct vv_rpc {
    struct vv_node *node;
    struct vv_rpc_method methods[VV_RPC_MAX_METHODS];
    int n_methods;
    struct vv__rpc_stats stats;
    struct vv__rpc_server *server;
    uint64_t in_flight; /* requests dispatched and not yet answered, on every connection */
};

struct vv_rpc_conn {
    struct vv_rpc *rpc;
    int refs;
    bool open;
    unsigned pending; /* requests dispatched and not yet answered */
    int (*write_cb)(void *io, const char *line, size_t len);
    void (*settled_cb)(void *io, unsigned pending); /* after each answer, while open */
    void *io;
};

struct batch {
    struct vv_rpc_conn *conn;
    json_t *responses; /* slots in request order; JSON null marks "no response" */
    size_t outstanding;
};

struct vv_rpc_request {
    struct vv_rpc_conn *conn;
    const struct vv_rpc_method *method;
    json_t *id; /* NULL for a notification */
    struct batch *batch;
    size_t slot;
    uint64_t start_ns;
};

/* ---- connections ------------------------------------------------------------------------ */

struct vv_rpc_conn *vv_rpc_conn_new(struct vv_rpc *rpc,
                                    int (*write_cb)(void *io, const char *line, size_t len),
                                    void *io)
{
    struct vv_rpc_conn *c = vv_xcalloc(1, sizeof(*c));
    c->rpc = rpc;
    c->refs = 1;
    c->open = true;
    c->write_cb = write_cb;
    c->io = io;
    return c;
}

void vv_rpc_conn_ref(struct vv_rpc_conn *c)
{
    c->refs++;
}

void vv_rpc_conn_unref(struct vv_rpc_conn *c)
{
    if (--c->refs == 0)
        vv_free(c);
}

void vv_rpc_conn_close(struct vv_rpc_conn *c)
{
    c->open = false;
    c->write_cb = NULL;
    c->settled_cb = NULL;
    c->io = NULL;
    vv_rpc_conn_unref(c);
}

bool vv_rpc_conn_is_open(const struct vv_rpc_conn *c)
{
    return c->open;
}

unsigned vv__rpc_conn_pending(const struct vv_rpc_conn *c)
{
    return c->pending;
}

void vv__rpc_conn_set_settled_cb(struct vv_rpc_conn *c, void (*cb)(void *io, unsigned pending))
{
    c->settled_cb = cb;
}

static void set_in_flight(struct vv_rpc *rpc, int delta)
{
    rpc->in_flight = (uint64_t)((int64_t)rpc->in_flight + delta);
    if (rpc->stats.in_flight)
        vv_gauge_set(rpc->stats.in_flight, (double)rpc->in_flight);
}

static int send_value(struct vv_rpc_conn *c, json_t *v)
{
    if (!c->open || c->write_cb == NULL)
        return VV_ECLOSED;
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return VV_ENOMEM;
    size_t n = strlen(text);
    char *line = vv_xmalloc(n + 1);
    memcpy(line, text, n);
    line[n] = '\n';
    free(text);
    int rc = c->write_cb(c->io, line, n + 1);
    vv_free(line);
    return rc;
}

int vv_rpc_notify(struct vv_rpc_conn *c, const char *method, json_t *params)
{
    json_t *msg = json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params",
                            params ? params : json_object());
    int rc = send_value(c, msg);
    json_decref(msg);
    return rc;
}

static json_t *error_object(int code, const char *message, const char *data)
{
    json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data)
        json_object_set_new(e, "data", json_string(data));
    return e;
}

static json_t *error_response(json_t *id, int code, const char *message, const char *data)
{
    return json_pack("{s:s, s:o, s:O}", "jsonrpc", "2.0", "error",
                     error_object(code, message, data), "id", id ? id : json_null());
}

void vv__rpc_conn_error(struct vv_rpc_conn *c, int code, const char *message, const char *data)
{
    json_t *r = error_response(NULL, code, message, data);
    send_value(c, r);
    json_decref(r);
}

/* ---- stats ------------------------------------------------------------------------------- */

struct vv__rpc_stats *vv__rpc_stats(struct vv_rpc *rpc)
{
    return &rpc->stats;
}

struct vv__rpc_server **vv__rpc_server_slot(struct vv_rpc *rpc)
{
    return &rpc->server;
}

void vv__rpc_count_error(struct vv_rpc *rpc, const char *kind)
{
    if (rpc->stats.errors == NULL)
        return;
    const char *v[1] = {kind};
    vv_counter_inc(vv_counter_labels(rpc->stats.errors, v));
}

static void count_request(struct vv_rpc *rpc, const char *method, const char *outcome,
                          uint64_t start_ns)
{
    if (rpc->stats.requests == NULL)
        return;
    const char *v[2] = {method, outcome};
    vv_counter_inc(vv_counter_labels(rpc->stats.requests, v));
    if (rpc->stats.duration && start_ns)
        vv_histogram_observe(rpc->stats.duration, (double)(uv_hrtime() - start_ns) / 1e9);
}

/* ---- answers ----------------------------------------------------------------------------- */

/* One member of a batch is settled; the last one sends the batch's answer. */
static void batch_settle(struct batch *b)
{
    if (--b->outstanding > 0)
        return;
    /* Drop the "no response" slots (notifications); an all-notification batch gets no
     * reply at all. */
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(b->responses, i, v)
    {
        if (!json_is_null(v))
            json_array_append(out, v);
    }
    if (json_array_size(out) > 0)
        send_value(b->conn, out);
    json_decref(out);
    json_decref(b->responses);
    vv_rpc_conn_unref(b->conn);
    vv_free(b);
}

static void deliver(struct vv_rpc_request *req, json_t *response /* taken, may be NULL */)
{
    struct vv_rpc_conn *c = req->conn;
    if (req->batch != NULL) {
        if (response)
            json_array_set_new(req->batch->responses, req->slot, response);
        batch_settle(req->batch);
    } else if (response) {
        send_value(c, response);
        json_decref(response);
    }
    c->pending--;
    set_in_flight(c->rpc, -1);
    json_decref(req->id);
    vv_free(req);
    /* The transport may resume reading a client it paused at its in-flight limit. */
    if (c->open && c->settled_cb)
        c->settled_cb(c->io, c->pending);
    vv_rpc_conn_unref(c);
}

struct vv_rpc_answer vv_rpc_reply(struct vv_rpc_request *req, json_t *result)
{
    count_request(req->conn->rpc, req->method ? req->method->name : "unknown", "ok", req->start_ns);
    json_t *resp = NULL;
    if (req->id != NULL)
        resp = json_pack("{s:s, s:o, s:O}", "jsonrpc", "2.0", "result",
                         result ? result : json_null(), "id", req->id);
    else
        json_decref(result);
    deliver(req, resp);
    return (struct vv_rpc_answer){ANSWER_TOKEN};
}

struct vv_rpc_answer vv_rpc_fail(struct vv_rpc_request *req, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *outcome = code == VV_RPC_INVALID_PARAMS   ? "invalid_params"
                          : code == VV_RPC_INTERNAL_ERROR ? "internal_error"
                                                          : "error";
    count_request(req->conn->rpc, req->method ? req->method->name : "unknown", outcome,
                  req->start_ns);
    /* Project codes carry their symbolic name, so scripts need not know the numbers. */
    const char *data = code <= -10000 && code > -32000 ? vv_err_name(code) : NULL;
    json_t *resp = req->id ? error_response(req->id, code, msg, data) : NULL;
    deliver(req, resp);
    return (struct vv_rpc_answer){ANSWER_TOKEN};
}

struct vv_rpc_answer vv_rpc_pending(struct vv_rpc_request *req)
{
    (void)req;
    return (struct vv_rpc_answer){ANSWER_TOKEN};
}

struct vv_node *vv_rpc_request_node(const struct vv_rpc_request *req)
{
    return req->conn->rpc->node;
}

struct vv_rpc_conn *vv_rpc_request_conn(struct vv_rpc_request *req)
{
    return req->conn;
}

/* ---- method table ------------------------------------------------------------------------ */

static const struct vv_rpc_method *find_method(const struct vv_rpc *rpc, const char *name)
{
    for (int i = 0; i < rpc->n_methods; i++)
        if (strcmp(rpc->methods[i].name, name) == 0)
            return &rpc->methods[i];
    return NULL;
}

int vv_rpc_register_all(struct vv_rpc *rpc, const struct vv_rpc_method *methods, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = vv_rpc_register(rpc, &methods[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int vv_rpc_register(struct vv_rpc *rpc, const struct vv_rpc_method *m)
{
    if (find_method(rpc, m->name))
        return VV_EEXIST;
    if (rpc->n_methods >= VV_RPC_MAX_METHODS)
        return VV_ELIMIT;
    rpc->methods[rpc->n_methods++] = *m;
    return 0;
}

json_t *vv_rpc_describe(const struct vv_rpc *rpc)
{
    json_t *methods = json_array();
    for (int i = 0; i < rpc->n_methods; i++) {
        const struct vv_rpc_method *m = &rpc->methods[i];
        json_t *params = m->params_schema ? json_loads(m->params_schema, 0, NULL) : NULL;
        json_t *result = m->result_schema ? json_loads(m->result_schema, 0, NULL) : NULL;
        if (m->params_schema && !params)
            vv_log_error("rpc", "%s: params schema is not valid JSON", m->name);
        if (m->result_schema && !result)
            vv_log_error("rpc", "%s: result schema is not valid JSON", m->name);
        json_array_append_new(methods, json_pack("{s:s, s:s, s:o, s:o}", "name", m->name, "summary",
                                                 m->summary ? m->summary : "", "params",
                                                 params ? params : json_object(), "result",
                                                 result ? result : json_object()));
    }
    return json_pack("{s:s, s:{s:s, s:s}, s:o}", "openrpc", "1.2.6", "info", "title", "vivimd",
                     "version", VIVIM_VERSION, "methods", methods);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* Nesting depth outside strings, without parsing: cheap, and it bounds the parser's stack. */
static bool depth_ok(const char *s, size_t len, int max)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max)
                return false;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return true;
}

static bool valid_id(const json_t *id)
{
    return json_is_string(id) || json_is_number(id) || json_is_null(id);
}

/* ---- numbers out of range -----------------------------------------------------------------
 *
 * JSON puts no bound on numbers, but jansson holds an integer in a json_int_t (64 bits) and
 * a real in a double, and refuses a whole document holding one beyond those
 * (json_error_numeric_overflow). Such a line is valid JSON, so a parse error (-32700, id
 * null) would be wrong: the request it holds is answered -32602 naming the parameter, with
 * its id. JSON_DECODE_INT_AS_REAL would turn every integer into a double, so instead a line
 * that failed this way is copied once with each out-of-range number replaced by a marker
 * string and parsed again; handle_one then looks for the markers, which never reach a
 * handler. That is one linear pass and one more parse, only for such lines; a line with a
 * real syntax error as well still fails the second parse and gets -32700. A marker holds a
 * NUL, which a client's string may hold too (JSON_ALLOW_NUL): on a line that also has an
 * out-of-range number such a string is taken for one, and the request, which has such a
 * number anyway, is refused all the same.
 */
#define MARK_INT_JSON  "\"\\u0000vv:int\""
#define MARK_REAL_JSON "\"\\u0000vv:real\""
static const char mark_int[] = "\0vv:int";
static const char mark_real[] = "\0vv:real";

enum mark { MARK_NONE, MARK_INT, MARK_REAL };

static enum mark mark_kind(const json_t *v)
{
    if (!json_is_string(v))
        return MARK_NONE;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == sizeof(mark_int) - 1 && memcmp(s, mark_int, n) == 0)
        return MARK_INT;
    if (n == sizeof(mark_real) - 1 && memcmp(s, mark_real, n) == 0)
        return MARK_REAL;
    return MARK_NONE;
}

struct textbuf {
    char *p;
    size_t len, cap;
};

static void textbuf_add(struct textbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = vv_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* The extent of the number starting at s[0] ('-' or a digit) by JSON's grammar. */
static size_t number_length(const char *s, size_t len, bool *integer)
{
    size_t i = 0;
    *integer = true;
    if (i < len && s[i] == '-')
        i++;
    while (i < len && is_digit(s[i]))
        i++;
    if (i < len && s[i] == '.') {
        *integer = false;
        for (i++; i < len && is_digit(s[i]); i++)
            ;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        *integer = false;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        while (i < len && is_digit(s[i]))
            i++;
    }
    return i;
}

/* Does the number tok (NUL-terminated) overflow what jansson holds? Mirrors jansson's own
 * test: strtoll's ERANGE for an integer, strtod's ERANGE with an infinite result (not an
 * underflow) for a real. */
static bool number_out_of_range(const char *tok, bool integer)
{
    errno = 0;
    if (integer) {
        (void)strtoll(tok, NULL, 10);
        return errno == ERANGE;
    }
    double d = strtod(tok, NULL);
    return errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
}

/* A copy of line (NUL-terminated, for strto*) with every out-of-range number outside
 * strings replaced by a marker. Returns the new text (vv_free it), or NULL if none was. */
static char *mark_out_of_range(const char *line, size_t len, size_t *out_len)
{
    char *copy = vv_xmalloc(len + 1);
    memcpy(copy, line, len);
    copy[len] = '\0';
    struct textbuf out = {0};
    size_t done = 0; /* copied to out up to here */
    bool in_string = false, marked = false;
    for (size_t i = 0; i < len; i++) {
        char ch = copy[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
            continue;
        }
        if (ch == '"') {
            in_string = true;
            continue;
        }
        if (ch != '-' && !is_digit(ch))
            continue;
        bool integer;
        size_t n = number_length(copy + i, len - i, &integer);
        char saved = copy[i + n];
        copy[i + n] = '\0';
        bool out_of_range = number_out_of_range(copy + i, integer);
        copy[i + n] = saved;
        if (out_of_range) {
            textbuf_add(&out, copy + done, i - done);
            const char *mark = integer ? MARK_INT_JSON : MARK_REAL_JSON;
            textbuf_add(&out, mark, strlen(mark));
            done = i + n;
            marked = true;
        }
        i += n - 1;
    }
    if (!marked) {
        vv_free(copy);
        vv_free(out.p);
        return NULL;
    }
    textbuf_add(&out, copy + done, len - done);
    vv_free(copy);
    *out_len = out.len;
    return out.p;
}

/* Finds the first marker inside v (depth-first) and writes where it is to path, as
 * "name.name[i]" relative to v; returns its kind. Depth is bounded by the check made
 * before parsing. */
static enum mark find_mark(const json_t *v, char *path, size_t cap, size_t at)
{
    enum mark k = mark_kind(v);
    if (k != MARK_NONE)
        return k;
    if (json_is_object(v)) {
        const char *key;
        json_t *m;
        json_object_foreach((json_t *)v, key, m)
        {
            int w = snprintf(path + at, cap - at, "%s%.64s", at ? "." : "", key);
            size_t next = w < 0 ? at : at + (size_t)w < cap ? at + (size_t)w : cap - 1;
            k = find_mark(m, path, cap, next);
            if (k != MARK_NONE)
                return k;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            int w = snprintf(path + at, cap - at, "[%zu]", i);
            size_t next = w < 0 ? at : at + (size_t)w < cap ? at + (size_t)w : cap - 1;
            k = find_mark(m, path, cap, next);
            if (k != MARK_NONE)
                return k;
        }
    }
    path[at] = '\0';
    return MARK_NONE;
}

/*
 * Handles one request object. Returns the response to send for it right now (errors found
 * before dispatch), or NULL when the request was dispatched (*dispatched: its handler
 * answers through deliver) or needs no response (a notification of an unknown method).
 */
static json_t *handle_one(struct vv_rpc_conn *c, json_t *msg, bool marked, struct batch *b,
                          size_t slot, bool *dispatched)
{
    *dispatched = false;
    struct vv_rpc *rpc = c->rpc;
    if (!json_is_object(msg)) {
        vv__rpc_count_error(rpc, "invalid");
        return error_response(NULL, VV_RPC_INVALID_REQUEST, "Invalid Request",
                              "a request must be an object");
    }
    json_t *id = json_object_get(msg, "id");
    bool id_out_of_range = marked && mark_kind(id) != MARK_NONE;
    json_t *reply_id = id && valid_id(id) && !id_out_of_range ? id : NULL;
    json_t *version = json_object_get(msg, "jsonrpc");
    json_t *method = json_object_get(msg, "method");
    json_t *params = json_object_get(msg, "params");
    const char *why = NULL;
    if (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0)
        why = "\"jsonrpc\" must be \"2.0\"";
    else if (!json_is_string(method) ||
             strlen(json_string_value(method)) != json_string_length(method))
        why = "\"method\" must be a string";
    else if (params != NULL && !json_is_object(params) && !json_is_array(params))
        why = "\"params\" must be an object or an array";
    else if (id != NULL && !valid_id(id))
        why = "\"id\" must be a string, a number or null";
    else if (id_out_of_range)
        why = "\"id\": number out of range";
    else {
        const char *key;
        json_t *v;
        json_object_foreach(msg, key, v)
        {
            if (strcmp(key, "jsonrpc") && strcmp(key, "method") && strcmp(key, "params") &&
                strcmp(key, "id")) {
                why = "unknown member in the request";
                break;
            }
        }
    }
    if (why != NULL) {
        vv__rpc_count_error(rpc, "invalid");
        return error_response(reply_id, VV_RPC_INVALID_REQUEST, "Invalid Request", why);
    }
    const struct vv_rpc_method *m = find_method(rpc, json_string_value(method));
    if (m == NULL) {
        count_request(rpc, "unknown", "method_not_found", 0);
        if (id == NULL)
            return NULL; /* a notification is never answered */
        return error_response(id, VV_RPC_METHOD_NOT_FOUND, "Method not found",
                              json_string_value(method));
    }
    if (marked && params != NULL) {
        char path[256] = "";
        enum mark k = find_mark(params, path, sizeof(path), 0);
        if (k != MARK_NONE) {
            count_request(rpc, m->name, "invalid_params", 0);
            if (id == NULL)
                return NULL;
            char msg_text[320];
            snprintf(
                msg_text, sizeof(msg_text), "%s%s: %s", json_is_array(params) ? "params" : "", path,
                k == MARK_INT ? "integer out of range (-2^63 to 2^63-1)" : "number out of range");
            return error_response(id, VV_RPC_INVALID_PARAMS, msg_text, NULL);
        }
    }

    *dispatched = true;
    struct vv_rpc_request *req = vv_xcalloc(1, sizeof(*req));
    req->conn = c;
    req->method = m;
    req->id = id ? json_incref(id) : NULL;
    req->batch = b;
    req->slot = slot;
    req->start_ns = uv_hrtime();
    vv_rpc_conn_ref(c);
    c->pending++;
    set_in_flight(rpc, +1);
    json_t *p = params ? json_incref(params) : json_object();
    struct vv_rpc_answer a = m->handler(req, p, m->data);
    json_decref(p);
    if (a.token_ != ANSWER_TOKEN)
        abort(); /* a handler that did not answer: a programming error */
    return NULL;
}

void vv_rpc_conn_input(struct vv_rpc_conn *c, const char *line, size_t len)
{
    struct vv_rpc *rpc = c->rpc;
    /* An empty or blank line is not JSON: JSON-RPC 2.0 answers what is not valid JSON with a
     * parse error, and so do we (jansson's own message for it would say less). */
    size_t blank = 0;
    while (blank < len && (line[blank] == ' ' || line[blank] == '\t' || line[blank] == '\r'))
        blank++;
    if (blank == len) {
        vv__rpc_count_error(rpc, "parse");
        vv__rpc_conn_error(c, VV_RPC_PARSE_ERROR, "Parse error", "empty line");
        return;
    }
    if (!depth_ok(line, len, VV_RPC_MAX_DEPTH)) {
        vv__rpc_count_error(rpc, "parse");
        vv__rpc_conn_error(c, VV_RPC_PARSE_ERROR, "Parse error", "nesting too deep");
        return;
    }
    json_error_t jerr;
    /* NUL inside strings is accepted here so that the field holding it can be named in
     * the error; every string a handler uses is checked for it (vv_rpc_param_string). */
    json_t *msg = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    bool marked = false;
    if (msg == NULL && json_error_code(&jerr) == json_error_numeric_overflow) {
        size_t mlen;
        char *m = mark_out_of_range(line, len, &mlen);
        if (m != NULL) {
            msg = json_loadb(m, mlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
            marked = msg != NULL;
            vv_free(m);
        }
    }
    if (msg == NULL) {
        vv__rpc_count_error(rpc, "parse");
        vv_log_debug("rpc", "parse error: %s", jerr.text);
        vv__rpc_conn_error(c, VV_RPC_PARSE_ERROR, "Parse error", jerr.text);
        return;
    }
    /* Keep the connection alive while handlers run, even if one closes it. */
    vv_rpc_conn_ref(c);
    bool dispatched;
    if (!json_is_array(msg)) {
        json_t *resp = handle_one(c, msg, marked, NULL, 0, &dispatched);
        if (resp) {
            send_value(c, resp);
            json_decref(resp);
        }
    } else if (json_array_size(msg) == 0) {
        vv__rpc_count_error(rpc, "invalid");
        vv__rpc_conn_error(c, VV_RPC_INVALID_REQUEST, "Invalid Request", "empty batch");
    } else if (json_array_size(msg) > VV_RPC_MAX_BATCH) {
        vv__rpc_count_error(rpc, "invalid");
        vv__rpc_conn_error(c, VV_RPC_INVALID_REQUEST, "Invalid Request", "batch too large");
    } else {
        size_t n = json_array_size(msg);
        struct batch *b = vv_xcalloc(1, sizeof(*b));
        b->conn = c;
        vv_rpc_conn_ref(c);
        b->responses = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(b->responses, json_null());
        /* One extra count held while dispatching, so the batch cannot finish early. */
        b->outstanding = n + 1;
        for (size_t i = 0; i < n; i++) {
            json_t *resp = handle_one(c, json_array_get(msg, i), marked, b, i, &dispatched);
            if (resp != NULL)
                json_array_set_new(b->responses, i, resp);
            if (!dispatched)
                b->outstanding--; /* settled now: an error, or an unanswered notification */
        }
        batch_settle(b); /* release the hold taken for dispatching */
    }
    json_decref(msg);
    vv_rpc_conn_unref(c);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

struct vv_rpc *vv_rpc_new(struct vv_node *n)
{
    struct vv_rpc *rpc = vv_xcalloc(1, sizeof(*rpc));
    rpc->node = n;
    if (n != NULL && n->metrics != NULL) {
        rpc->stats.requests =
            vv_metrics_counter(n->metrics, "vivimd_rpc_requests_total",
                               "JSON-RPC calls answered, by method and outcome.", "method,outcome");
        rpc->stats.duration = vv_metrics_histogram(
            n->metrics, "vivimd_rpc_request_duration_seconds",
            "Time from a call's arrival to its answer.", NULL, vv_metrics_latency_seconds_buckets,
            vv_metrics_latency_seconds_buckets_len);
        rpc->stats.clients =
            vv_metrics_gauge(n->metrics, "vivimd_rpc_clients", "Connected JSON-RPC clients.", NULL);
        rpc->stats.errors =
            vv_metrics_counter(n->metrics, "vivimd_rpc_errors_total",
                               "Bad input and limits hit on the RPC socket, by kind.", "kind");
        rpc->stats.in_flight = vv_metrics_gauge(
            n->metrics, "vivimd_rpc_requests_in_flight",
            "JSON-RPC calls dispatched and not yet answered, on every connection.", NULL);
        rpc->stats.read_pauses = vv_metrics_counter(
            n->metrics, "vivimd_rpc_read_pauses_total",
            "Times a client's socket stopped being read because it had [rpc] max_in_flight "
            "calls unanswered.",
            NULL);
    }
    return rpc;
}

void vv_rpc_free(struct vv_rpc *rpc)
{
    vv_free(rpc);
}
