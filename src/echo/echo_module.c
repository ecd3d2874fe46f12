/*
 * The echo module (vivim/echo.h): a server for VV_ECHO_TYPE_PING on the request layer and
 * the echo.ping RPC method. It owns its calls in flight (struct echo_call, at most
 * VV_ECHO_MAX_CALLS); the request layer owns the requests themselves and calls back exactly
 * once for each unless the module cancels it, which stop does for all.
 */
#include <msgpack.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/echo.h"
#include "vivim/env_request.h"
#include "vivim/env_uv.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/node.h"
#include "vivim/rpc.h"
#include "vivim/wire.h"

#define ECHO_DEFAULT_BYTES 32 /* echo.ping's payload unless the call says otherwise */

struct echo_call {
    struct echo *echo;
    struct vv_rpc_request *req;
    uint64_t id; /* the request layer's */
    uint8_t peer[VV_NODE_ID_BYTES];
    bool has_peer; /* false: a datagram ping by address alone */
    uint8_t *payload;
    size_t len;
    struct echo_call *next;
};

struct echo {
    struct vv_node *n;
    struct vv_env *env; /* set at start */
    struct echo_call *calls;
    unsigned n_calls;
    struct vv_counter *served; /* {result} */
    struct vv_counter *pings;  /* {result} */
    struct vv_histogram *rtt;
};

static struct echo *echo_of(struct vv_node *n)
{
    return vv_node_module_data(n, &vv_echo_module);
}

static void count(struct vv_counter *family, const char *result)
{
    const char *v[1] = {result};
    vv_counter_inc(vv_counter_labels(family, v));
}

/* ---- serving peers ------------------------------------------------------------------- */

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *request, void *arg)
{
    (void)peer;
    struct echo *e = arg;
    const struct vv_echo_settings *c = vv_echo_settings(&e->n->config);
    if (!c->serve) {
        count(e->served, "denied");
        vv_env_reply_error(env, ctx, VV_REQ_ERR_DENIED, "echo is not served here");
        return;
    }
    const uint8_t *p;
    size_t len;
    if (request->h.type != VV_ECHO_TYPE_PING) {
        count(e->served, "unsupported");
        vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, NULL);
        return;
    }
    if (vv_wire_get_bin(&request->body, 0, c->max_bytes, &p, &len) != 0) {
        count(e->served, "bad_request");
        vv_env_reply_error(env, ctx, VV_REQ_ERR_BAD_REQUEST, "expected a bin of at most max_bytes");
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_bin(&pk, len);
    msgpack_pack_bin_body(&pk, p, len);
    int rc = vv_env_reply(env, ctx, (const uint8_t *)sb.data, sb.size);
    count(e->served, rc == 0 ? "ok" : "unsent");
    msgpack_sbuffer_destroy(&sb);
}

/* ---- echo.ping ----------------------------------------------------------------------- */

static void unlink_call(struct echo *e, struct echo_call *call)
{
    for (struct echo_call **pp = &e->calls; *pp; pp = &(*pp)->next)
        if (*pp == call) {
            *pp = call->next;
            e->n_calls--;
            return;
        }
}

static void free_call(struct echo_call *call)
{
    vv_free(call->payload);
    vv_free(call);
}

static void answered(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct echo_call *call = arg;
    struct echo *e = call->echo;
    unlink_call(e, call);
    char hex[2 * VV_NODE_ID_BYTES + 1] = "";
    /* By address alone: the ID the answer claimed (a datagram's is not proved). */
    const uint8_t *who = call->has_peer ? call->peer : a->peer;
    if (who != NULL)
        vv_hex_encode(who, VV_NODE_ID_BYTES, hex);
    const uint8_t *p;
    size_t len;
    if (a->status == VV_EREQ_REMOTE) {
        count(e->pings, "remote_error");
        vv_rpc_fail(call->req, a->status, "peer answered error %u: %.*s", a->error_code,
                    (int)a->error_message_len, a->error_message ? a->error_message : "");
    } else if (a->status != 0) {
        count(e->pings, a->status == VV_EREQ_TIMEOUT ? "timeout" : "failed");
        vv_rpc_fail(call->req, a->status, "%s", vv_strerror(a->status));
    } else if (vv_wire_get_bin(&a->reply->body, 0, call->len, &p, &len) != 0 || len != call->len ||
               memcmp(p, call->payload, len) != 0) {
        /* A peer that answers with other bytes is not echoing: say so, do not average it. */
        count(e->pings, "mismatch");
        vv_rpc_fail(call->req, VV_EREQ_BAD_ANSWER, "the answer is not the payload sent");
    } else {
        count(e->pings, "ok");
        vv_histogram_observe(e->rtt, (double)a->elapsed_ms / 1000.0);
        json_t *r = json_pack("{s:s, s:I, s:I}", "nodeId", hex, "rttMs", (json_int_t)a->elapsed_ms,
                              "bytes", (json_int_t)len);
        if (a->address != NULL)
            json_object_set_new(r, "address", json_string(a->address));
        vv_rpc_reply(call->req, r);
    }
    free_call(call);
}

static struct vv_rpc_answer ping(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct echo *e = data;
    static const char *const allowed[] = {"nodeId",  "bytes",    "timeoutMs",
                                          "address", "datagram", NULL};
    const struct vv_echo_settings *c = vv_echo_settings(&e->n->config);
    char err[256];
    uint8_t peer[VV_NODE_ID_BYTES];
    uint64_t bytes = VV_MIN(ECHO_DEFAULT_BYTES, c->max_bytes), timeout = c->timeout_ms;
    const char *address = NULL;
    /* By datagram, the address is what is needed and the node ID an extra check; over a
     * connection, the node ID is all there is. */
    json_t *dg = json_object_get(params, "datagram");
    if (dg != NULL && !json_is_boolean(dg))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "datagram: expected true or false");
    bool datagram = dg != NULL && json_is_true(dg);
    int has_peer;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        (has_peer = vv_rpc_param_node_id(params, "nodeId", !datagram, peer, err, sizeof(err))) <
            0 ||
        vv_rpc_param_string(params, "address", datagram, VV_ENV_ADDRESS_BYTES - 1, &address, err,
                            sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "bytes", false, 0, c->max_bytes, &bytes, err, sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "timeoutMs", false, 1, VV_REQ_MAX_TIMEOUT_MS, &timeout, err,
                          sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (!datagram && address != NULL)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "address: only with datagram: true (connections go by nodeId)");
    if (e->env == NULL)
        return vv_rpc_fail(req, VV_ENODE_SHUTTING_DOWN, "echo is not running");
    if (e->n_calls >= VV_ECHO_MAX_CALLS) {
        count(e->pings, "refused");
        return vv_rpc_fail(req, VV_EREQ_TOO_MANY, "%u echo.ping calls already waiting",
                           VV_ECHO_MAX_CALLS);
    }
    struct echo_call *call = vv_xcalloc(1, sizeof(*call));
    call->echo = e;
    call->req = req;
    call->has_peer = has_peer == 0;
    if (call->has_peer)
        memcpy(call->peer, peer, sizeof(peer));
    call->len = (size_t)bytes;
    call->payload = vv_xmalloc(call->len + 1);
    vv_env_random(e->env, call->payload, call->len);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_bin(&pk, call->len);
    msgpack_pack_bin_body(&pk, call->payload, call->len);
    int rc = datagram
                 ? vv_env_request_datagram(e->env, call->has_peer ? peer : NULL, address,
                                           VV_ECHO_TYPE_PING, (const uint8_t *)sb.data, sb.size,
                                           (uint32_t)timeout, answered, call, &call->id)
                 : vv_env_request(e->env, peer, VV_ECHO_TYPE_PING, (const uint8_t *)sb.data,
                                  sb.size, (uint32_t)timeout, answered, call, &call->id);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        free_call(call);
        count(e->pings, "refused");
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    call->next = e->calls;
    e->calls = call;
    e->n_calls++;
    return vv_rpc_pending(req);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int echo_init(struct vv_node *n)
{
    struct echo *e = vv_xcalloc(1, sizeof(*e));
    e->n = n;
    vv_node_set_module_data(n, &vv_echo_module, e);
    e->served = vv_metrics_counter(n->metrics, "vivimd_echo_served_total",
                                   "Echo requests from peers, by result.", "result");
    e->pings = vv_metrics_counter(n->metrics, "vivimd_echo_pings_total",
                                  "echo.ping calls, by result.", "result");
    e->rtt = vv_metrics_histogram(
        n->metrics, "vivimd_echo_rtt_seconds", "Round trips measured by echo.ping.", NULL,
        vv_metrics_latency_seconds_buckets, vv_metrics_latency_seconds_buckets_len);
    static const struct vv_rpc_method m = {
        .name = "echo.ping",
        .handler = ping,
        .summary = "Sends an echo request of `bytes` random bytes (default 32) to a connected "
                   "peer, or with datagram: true by datagram to `address`, through the request "
                   "layer and answers with the round trip.",
        .params_schema = "{\"type\":\"object\",\"properties\":{"
                         "\"nodeId\":{\"type\":\"string\",\"pattern\":\"^[0-9a-fA-F]{64}$\"},"
                         "\"address\":{\"type\":\"string\",\"maxLength\":63},"
                         "\"datagram\":{\"type\":\"boolean\"},"
                         "\"bytes\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":65536},"
                         "\"timeoutMs\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":600000}},"
                         "\"additionalProperties\":false}",
        .result_schema = "{\"type\":\"object\",\"properties\":{\"nodeId\":{\"type\":\"string\"},"
                         "\"address\":{\"type\":\"string\"},"
                         "\"rttMs\":{\"type\":\"integer\"},\"bytes\":{\"type\":\"integer\"}}}",
    };
    struct vv_rpc_method reg = m;
    reg.data = e;
    return vv_rpc_register(n->rpc, &reg);
}

static int echo_start(struct vv_node *n)
{
    struct echo *e = echo_of(n);
    e->env = vv_env_uv_env(n->env);
    vv_env_set_server(e->env, VV_CHANNEL_ECHO, serve, e);
    return 0;
}

/* Calls in flight are cancelled (their callbacks will not fire) and answered here. */
static void echo_stop(struct vv_node *n)
{
    struct echo *e = echo_of(n);
    if (e == NULL || e->env == NULL)
        return;
    vv_env_set_server(e->env, VV_CHANNEL_ECHO, NULL, NULL);
    vv_env_request_cancel_channel(e->env, VV_CHANNEL_ECHO);
    while (e->calls != NULL) {
        struct echo_call *call = e->calls;
        e->calls = call->next;
        vv_rpc_fail(call->req, VV_ENODE_SHUTTING_DOWN, "the node is stopping");
        free_call(call);
    }
    e->n_calls = 0;
    e->env = NULL;
}

static void echo_deinit(struct vv_node *n)
{
    vv_free(echo_of(n));
    vv_node_set_module_data(n, &vv_echo_module, NULL);
}

/* serve, max_bytes and timeout_ms are read at each use: a reload needs nothing more. */
static void echo_reload(struct vv_node *n)
{
    const struct vv_echo_settings *c = vv_echo_settings(&n->config);
    vv_log_info("echo", "serve %s, max_bytes %u, timeout_ms %u", c->serve ? "on" : "off",
                c->max_bytes, c->timeout_ms);
}

static json_t *echo_health(struct vv_node *n)
{
    struct echo *e = echo_of(n);
    return json_pack("{s:b, s:I}", "ok", e != NULL && e->env != NULL, "calls",
                     (json_int_t)(e ? e->n_calls : 0));
}

static const char *const echo_depends[] = {"net", "rpc", "monitor", NULL};

const struct vv_module vv_echo_module = {
    .name = "echo",
    .config = &vv_echo_settings_section,
    .depends = echo_depends,
    .init = echo_init,
    .start = echo_start,
    .stop = echo_stop,
    .deinit = echo_deinit,
    .reload = echo_reload,
    .health = echo_health,
};
