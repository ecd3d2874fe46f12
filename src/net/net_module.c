/*
 * The peer network as a node module: it builds, in order, the libuv environment (vv_env),
 * the session keys, the connection layer (net.h: TCP + sessions) and the connection manager
 * (connmgr.h: policy), feeds the manager the configured bootstrap peers, and registers the
 * net metrics. Stopping tears them down in reverse. The peers.* RPC methods are in
 * net_rpc.c; mDNS discovery, when enabled, in mdns_glue.c.
 *
 * Other modules reach peers through n->env (struct vv_env_uv: vv_env_uv_env gives the
 * vv_env protocol modules run on).
 */
#include <stdio.h>
#include <string.h>

#include "net_internal.h"
#include "vivim/env_request.h"
#include "vivim/env_verify.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/monitor.h"
#include "vivim/node.h"

static const char *const node_type_names[VV_NODE_TYPE_COUNT] = {
    "bootstrap", "relay", "indexer", "storage", "edge", "client", "self_hosted"};

/* What each node type offers, advertised in its hello. */
static const uint32_t node_type_caps[VV_NODE_TYPE_COUNT] = {
    [VV_NODE_BOOTSTRAP] = VV_CAP_DHT,
    [VV_NODE_RELAY] = VV_CAP_DHT | VV_CAP_PUBSUB | VV_CAP_RELAY,
    [VV_NODE_INDEXER] = VV_CAP_DHT | VV_CAP_PUBSUB | VV_CAP_CRDT,
    [VV_NODE_STORAGE] = VV_CAP_DHT | VV_CAP_PUBSUB | VV_CAP_STORE | VV_CAP_CRDT,
    [VV_NODE_EDGE] = VV_CAP_DHT | VV_CAP_PUBSUB | VV_CAP_RELAY,
    [VV_NODE_CLIENT] = VV_CAP_PUBSUB | VV_CAP_CRDT,
    [VV_NODE_SELF_HOSTED] =
        VV_CAP_DHT | VV_CAP_PUBSUB | VV_CAP_STORE | VV_CAP_CRDT | VV_CAP_FEDERATION,
};

const char *vv__net_node_type_name(int t)
{
    return t >= 0 && t < VV_NODE_TYPE_COUNT ? node_type_names[t] : "unknown";
}

int vv__net_node_type_parse(const char *s)
{
    for (int i = 0; i < VV_NODE_TYPE_COUNT; i++)
        if (strcmp(s, node_type_names[i]) == 0)
            return i;
    return -1;
}

/* ---- metrics ------------------------------------------------------------------------- */

#define NET_STAT_FN(field)                                                                         \
    static double stat_##field(void *data)                                                         \
    {                                                                                              \
        struct vv_net_module *m = data;                                                            \
        return m->net ? (double)vv_net_stats(m->net)->field : 0.0;                                 \
    }
NET_STAT_FN(connections)
NET_STAT_FN(half_open)
NET_STAT_FN(queued_bytes)
NET_STAT_FN(rx_buffered_bytes)
NET_STAT_FN(accepted)
NET_STAT_FN(dials)
NET_STAT_FN(dial_failures)
NET_STAT_FN(handshakes_ok)
NET_STAT_FN(handshakes_failed)
NET_STAT_FN(handshake_timeouts)
NET_STAT_FN(refused_half_open)
NET_STAT_FN(refused_max_connections)
NET_STAT_FN(duplicates_closed)
NET_STAT_FN(frames_in)
NET_STAT_FN(frames_out)
NET_STAT_FN(bytes_in)
NET_STAT_FN(bytes_out)
NET_STAT_FN(decode_errors)
NET_STAT_FN(frames_skipped)
NET_STAT_FN(drops_backpressure)
NET_STAT_FN(drops_budget)
NET_STAT_FN(budget_closes)

#define CM_STAT_FN(field)                                                                          \
    static double cm_##field(void *data)                                                           \
    {                                                                                              \
        struct vv_net_module *m = data;                                                            \
        return m->connmgr ? (double)vv_connmgr_stats(m->connmgr)->field : 0.0;                     \
    }
CM_STAT_FN(trimmed)
CM_STAT_FN(idle_drops)
CM_STAT_FN(pings_sent)
CM_STAT_FN(pongs_received)
CM_STAT_FN(pex_peers_learned)
CM_STAT_FN(pex_unsolicited)
CM_STAT_FN(pex_entries_refused)
CM_STAT_FN(bad_messages)
CM_STAT_FN(tags_refused)

static double tagged_peers(void *data)
{
    struct vv_net_module *m = data;
    return m->connmgr ? (double)vv_connmgr_tagged_count(m->connmgr) : 0.0;
}

/* The request layer's counters (vivim/env_request.h), on the env this module owns. */
#define REQ_STAT_FN(field)                                                                         \
    static double req_##field(void *data)                                                          \
    {                                                                                              \
        struct vv_net_module *m = data;                                                            \
        return m->envu ? (double)vv_env_req_stats(vv_env_uv_env(m->envu))->field : 0.0;            \
    }
REQ_STAT_FN(sent)
REQ_STAT_FN(answered)
REQ_STAT_FN(remote_errors)
REQ_STAT_FN(busy)
REQ_STAT_FN(timed_out)
REQ_STAT_FN(peer_down)
REQ_STAT_FN(cancelled)
REQ_STAT_FN(bad_answers)
REQ_STAT_FN(late)
REQ_STAT_FN(refused)
REQ_STAT_FN(served)
REQ_STAT_FN(served_busy)
REQ_STAT_FN(served_dropped)
REQ_STAT_FN(answers_unsent)
REQ_STAT_FN(bad_requests)
REQ_STAT_FN(in_flight)
REQ_STAT_FN(serving)

/* The signature-check layer's counters (vivim/env_verify.h). */
#define VERIFY_STAT_FN(field)                                                                      \
    static double verify_##field(void *data)                                                       \
    {                                                                                              \
        struct vv_net_module *m = data;                                                            \
        return m->envu ? (double)vv_env_verify_stats(vv_env_uv_env(m->envu))->field : 0.0;         \
    }
VERIFY_STAT_FN(valid)
VERIFY_STAT_FN(invalid)
VERIFY_STAT_FN(cancelled)
VERIFY_STAT_FN(busy)
VERIFY_STAT_FN(batches)
VERIFY_STAT_FN(offloaded)
VERIFY_STAT_FN(queued)
VERIFY_STAT_FN(running)
VERIFY_STAT_FN(bytes)

static double known_peers(void *data)
{
    struct vv_net_module *m = data;
    return m->connmgr ? (double)vv_connmgr_known_count(m->connmgr) : 0.0;
}

static void register_metrics(struct vv_net_module *m, struct vv_metrics *mx)
{
    static const struct {
        bool counter;
        const char *name, *help;
        double (*fn)(void *);
    } defs[] = {
        {false, "vivimd_net_connections", "Peer connections established now.", stat_connections},
        {false, "vivimd_net_half_open", "Peer connections connecting or in their handshake now.",
         stat_half_open},
        {false, "vivimd_net_queued_bytes", "Bytes queued for peers, all connections.",
         stat_queued_bytes},
        {false, "vivimd_net_rx_buffered_bytes", "Bytes of partly received frames, all connections.",
         stat_rx_buffered_bytes},
        {false, "vivimd_net_known_peers", "Peers in the address book.", known_peers},
        {false, "vivimd_net_tagged_peers",
         "Peers a module asked to be connected to and holds a tag on (connected or not).",
         tagged_peers},
        {true, "vivimd_net_accepted_total", "Inbound TCP connections accepted.", stat_accepted},
        {true, "vivimd_net_dials_total", "Outbound connections attempted.", stat_dials},
        {true, "vivimd_net_dial_failures_total",
         "Outbound connections that failed before their handshake completed.", stat_dial_failures},
        {true, "vivimd_net_handshakes_total", "Handshakes that completed with a verified identity.",
         stat_handshakes_ok},
        {true, "vivimd_net_handshake_failures_total",
         "Handshakes that failed (bad message, wrong identity, bad signature).",
         stat_handshakes_failed},
        {true, "vivimd_net_handshake_timeouts_total",
         "Connections closed because their handshake took too long.", stat_handshake_timeouts},
        {true, "vivimd_net_refused_half_open_total",
         "Connections refused because too many were in their handshake.", stat_refused_half_open},
        {true, "vivimd_net_refused_limit_total",
         "Connections refused because max_connections was reached.", stat_refused_max_connections},
        {true, "vivimd_net_duplicates_closed_total",
         "Second connections to an already connected peer, closed.", stat_duplicates_closed},
        {true, "vivimd_net_frames_received_total", "Frames received from peers.", stat_frames_in},
        {true, "vivimd_net_frames_sent_total", "Frames sent to peers.", stat_frames_out},
        {true, "vivimd_net_bytes_received_total", "Bytes received from peers (on the wire).",
         stat_bytes_in},
        {true, "vivimd_net_bytes_sent_total", "Bytes sent to peers (on the wire).", stat_bytes_out},
        {true, "vivimd_net_decode_errors_total",
         "Malformed frames or session messages; each closes its connection.", stat_decode_errors},
        {true, "vivimd_net_frames_skipped_total",
         "Frames of unknown types from peers with a newer minor version, skipped.",
         stat_frames_skipped},
        {true, "vivimd_net_drops_backpressure_total",
         "Sends refused because the peer's outbound queue was full.", stat_drops_backpressure},
        {true, "vivimd_net_drops_budget_total",
         "Sends refused because the global network memory budget was reached.", stat_drops_budget},
        {true, "vivimd_net_budget_closes_total",
         "Connections closed because the memory budget was reached (the one holding the "
         "largest partly received frame).",
         stat_budget_closes},
        {true, "vivimd_net_trimmed_total", "Peers disconnected to get back under high_water.",
         cm_trimmed},
        {true, "vivimd_net_idle_drops_total", "Peers disconnected for not answering pings.",
         cm_idle_drops},
        {true, "vivimd_net_pings_sent_total", "Keepalive pings sent.", cm_pings_sent},
        {true, "vivimd_net_pongs_received_total", "Keepalive pongs received.", cm_pongs_received},
        {true, "vivimd_net_pex_peers_learned_total", "Peers learned through peer exchange.",
         cm_pex_peers_learned},
        {true, "vivimd_net_pex_unsolicited_total",
         "Peer-exchange answers ignored: not asked for, a second answer, or after the deadline.",
         cm_pex_unsolicited},
        {true, "vivimd_net_pex_entries_refused_total",
         "Peer-exchange entries refused: not a numeric address, or no room for unverified peers.",
         cm_pex_entries_refused},
        {true, "vivimd_net_bad_messages_total",
         "Malformed connection-manager messages (each lowers the sender's reputation).",
         cm_bad_messages},
        {false, "vivimd_env_requests_in_flight", "Requests to peers awaiting their answer now.",
         req_in_flight},
        {false, "vivimd_env_requests_serving",
         "Requests from peers handed to a module and not yet answered.", req_serving},
        {true, "vivimd_env_requests_sent_total", "Requests sent to peers.", req_sent},
        {true, "vivimd_env_requests_answered_total", "Requests completed by the peer's reply.",
         req_answered},
        {true, "vivimd_env_requests_remote_errors_total",
         "Requests completed by an error answer from the peer (other than busy).",
         req_remote_errors},
        {true, "vivimd_env_requests_busy_total",
         "Requests completed by a busy answer (the peer had too many of ours in service).",
         req_busy},
        {true, "vivimd_env_requests_timed_out_total", "Requests that reached their timeout.",
         req_timed_out},
        {true, "vivimd_env_requests_peer_down_total",
         "Requests failed because the connection to the peer closed first.", req_peer_down},
        {true, "vivimd_env_requests_cancelled_total", "Requests cancelled by their module.",
         req_cancelled},
        {true, "vivimd_env_requests_bad_answers_total",
         "Malformed answers, and answers without a request id.", req_bad_answers},
        {true, "vivimd_env_requests_late_total",
         "Answers dropped: after the timeout or cancellation, from another peer, or to nothing "
         "we sent.",
         req_late},
        {true, "vivimd_env_requests_refused_total",
         "Requests refused before sending: in-flight bound reached, or the transport refused.",
         req_refused},
        {true, "vivimd_env_requests_served_total", "Requests from peers handed to a module.",
         req_served},
        {true, "vivimd_env_requests_served_busy_total",
         "Requests from peers answered busy at once (the per-peer or total bound in service).",
         req_served_busy},
        {true, "vivimd_env_requests_served_dropped_total",
         "Requests in service dropped unanswered: the peer went down, or the module stopped "
         "serving.",
         req_served_dropped},
        {true, "vivimd_env_requests_answers_unsent_total",
         "Answers the transport refused (back-pressure or the connection gone).",
         req_answers_unsent},
        {true, "vivimd_env_requests_bad_requests_total",
         "Request frames from peers that failed to decode (dropped).", req_bad_requests},
        {true, "vivimd_env_verify_valid_total", "Signature checks off the loop found valid.",
         verify_valid},
        {true, "vivimd_env_verify_invalid_total", "Signature checks off the loop found invalid.",
         verify_invalid},
        {true, "vivimd_env_verify_cancelled_total",
         "Signature checks cancelled by their module before their verdict.", verify_cancelled},
        {true, "vivimd_env_verify_busy_total",
         "Signature checks refused: too many waiting (4096 checks or 16 MiB of messages).",
         verify_busy},
        {true, "vivimd_env_verify_batches_total", "Batches of signature checks run.",
         verify_batches},
        {true, "vivimd_env_verify_offloaded_total",
         "Batches of signature checks run on the thread pool (the others ran inline).",
         verify_offloaded},
        {false, "vivimd_env_verify_queued", "Signature checks waiting for a batch slot now.",
         verify_queued},
        {false, "vivimd_env_verify_running", "Signature checks in batches being run now.",
         verify_running},
        {false, "vivimd_env_verify_bytes", "Message bytes of the waiting and running checks now.",
         verify_bytes},
        {true, "vivimd_net_tags_refused_total",
         "Requests for a peer connection refused: too many tags on the peer, too many tagged "
         "peers, or no room in the address book.",
         cm_tags_refused},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(defs); i++) {
        if (defs[i].counter)
            vv_metrics_counter_fn(mx, defs[i].name, defs[i].help, defs[i].fn, m);
        else
            vv_metrics_gauge_fn(mx, defs[i].name, defs[i].help, defs[i].fn, m);
    }
    static const double hs_buckets[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                        0.05,   0.1,   0.25,  0.5,   1,    5};
    m->hs_ok = vv_metrics_histogram(mx, "vivimd_net_handshake_duration_seconds",
                                    "Time from TCP connect or accept to a verified identity.", NULL,
                                    hs_buckets, VV_ARRAY_SIZE(hs_buckets));
}

static void on_handshake(void *arg, bool ok, double seconds)
{
    struct vv_net_module *m = arg;
    if (ok && m->hs_ok)
        vv_histogram_observe(m->hs_ok, seconds);
}

/* ---- events on the monitor's stream ------------------------------------------------------ */

static void on_conn(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES], const char *remote,
                    bool inbound, bool up, const char *why)
{
    struct vv_net_module *m = arg;
    if (m->node->monitor == NULL)
        return;
    char hex[VV_NODE_ID_HEX_BYTES];
    vv_hex_encode(node_id, VV_NODE_ID_BYTES, hex);
    json_t *data =
        json_pack("{s:s, s:s, s:b}", "nodeId", hex, "remote", remote, "inbound", inbound);
    if (!up)
        json_object_set_new(data, "reason", json_string(why ? why : ""));
    vv_monitor_event(m->node->monitor, up ? "peer.connected" : "peer.disconnected", data);
}

void vv__net_dial_failed(struct vv_net_module *m, const char *address, const char *why)
{
    if (m->node->monitor != NULL)
        vv_monitor_event(m->node->monitor, "peer.dial_failed",
                         json_pack("{s:s, s:s}", "address", address, "reason", why ? why : ""));
}

/* ---- bootstrap ----------------------------------------------------------------------- */

static void add_bootstrap(struct vv_net_module *m, const char *list)
{
    char *copy = vv_xstrdup(list);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l > 0 && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
            tok[--l] = '\0';
        if (l == 0)
            continue;
        uint8_t id[VV_NODE_ID_BYTES];
        const uint8_t *idp = NULL;
        char *at = strchr(tok, '@');
        if (at != NULL) {
            *at = '\0';
            if (vv_hex_decode(tok, id, sizeof(id)) == 0)
                idp = id;
            tok = at + 1;
        }
        int rc = vv_connmgr_add_peer(m->connmgr, idp, tok, VV_PEER_BOOTSTRAP);
        if (rc != 0)
            vv_log_warn("net", "bootstrap peer %s not added: %s", tok, vv_strerror(rc));
        else
            m->n_bootstrap++;
    }
    vv_free(copy);
}

/* The address peers should dial: advertise, else listen unless it is a wildcard. */
static void advertised(const struct vv_net_settings *c, char *out, size_t cap)
{
    out[0] = '\0';
    if (c->advertise[0] != '\0') {
        vv_strlcpy(out, c->advertise, cap);
        return;
    }
    char host[256];
    uint16_t port;
    if (vv_config_split_hostport(c->listen, host, sizeof(host), &port) == 0 &&
        strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0 && port != 0)
        vv_strlcpy(out, c->listen, cap);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void net_stop(struct vv_node *n);

/* The request layer's bounds from [net]: at start and on every reload (a lowered bound
 * refuses new requests until those in flight drop under it; none is cut short). */
static void apply_request_limits(struct vv_net_module *m, const struct vv_net_settings *c)
{
    const struct vv_env_req_limits lim = {c->request_max_per_peer, c->request_max_total,
                                          c->serve_max_per_peer, c->serve_max_total};
    vv_env_req_set_limits(vv_env_uv_env(m->envu), &lim);
}

static int net_init(struct vv_node *n)
{
    struct vv_net_module *m = vv_xcalloc(1, sizeof(*m));
    m->node = n;
    vv_node_set_module_data(n, &vv_net_module, m);
    if (n->metrics)
        register_metrics(m, n->metrics);
    if (n->rpc) {
        int rc = vv__net_rpc_register(m, n->rpc);
        if (rc != 0)
            return rc;
    }
    return 0;
}

struct vv_connmgr *vv_net_connmgr(struct vv_node *n)
{
    struct vv_net_module *m = vv_node_module_data(n, &vv_net_module);
    return m ? m->connmgr : NULL;
}

static int net_start(struct vv_node *n)
{
    struct vv_net_module *m = vv_node_module_data(n, &vv_net_module);
    const struct vv_net_settings *c = vv_net_settings(&n->config);
    const struct vv_node_settings *node = vv_node_settings(&n->config);
    char err[256];

    vv_session_keys_init(&m->keys, &n->identity);
    m->keys_set = true;
    m->envu = vv_env_uv_new(n->loop, &n->identity);
    n->env = m->envu;
    apply_request_limits(m, c);

    int type = node->type;
    char adv[VV_CONNMGR_ADDRESS_BYTES];
    advertised(c, adv, sizeof(adv));
    uint8_t hello[VV_SESSION_MAX_HELLO_BYTES];
    size_t hello_len = 0;
    int rc = vv_net_hello_encode(type, node_type_caps[type], adv, node->region, hello,
                                 sizeof(hello), &hello_len);
    if (rc != 0) {
        vv_log_error("net", "advertised address or region too long");
        net_stop(n);
        return rc;
    }

    struct vv_net_config nc;
    vv_net_config_defaults(&nc);
    nc.listen = c->listen;
    nc.max_connections = c->max_connections;
    nc.max_half_open = c->max_half_open;
    nc.handshake_timeout_ms = c->handshake_timeout_ms;
    nc.peer_queue_bytes = c->peer_queue_bytes;
    nc.memory_budget_bytes = (uint64_t)c->memory_budget_mb << 20;
    nc.hello = hello;
    nc.hello_len = hello_len;
    m->net = vv_net_new(n->loop, &m->keys, m->envu, &nc, err, sizeof(err));
    if (m->net == NULL) {
        vv_log_error("net", "%s", err);
        net_stop(n);
        return VV_EINVAL;
    }
    vv_net_set_handshake_cb(m->net, on_handshake, m);
    vv_net_set_conn_cb(m->net, on_conn, m);
    rc = vv_net_listen(m->net, err, sizeof(err));
    if (rc != 0) {
        vv_log_error("net", "%s", err);
        net_stop(n); /* a module that fails to start is not stopped by the node */
        return rc;
    }
    /* Datagrams on the same host and port as the listener (docs/protocol.md). */
    if (c->listen != NULL && c->listen[0] != '\0') {
        m->dgram = vv_dgram_open(n->loop, m->envu, c->listen, vv_net_bound_port(m->net), n->metrics,
                                 err, sizeof(err));
        if (m->dgram == NULL) {
            vv_log_error("net", "%s", err);
            net_stop(n);
            return VV_EINVAL;
        }
    }

    struct vv_connmgr_config cc;
    vv_connmgr_config_defaults(&cc);
    cc.low_water = c->low_water;
    cc.high_water = c->high_water;
    cc.ping_interval_ms = c->keepalive_ms;
    cc.idle_timeout_ms = 3 * c->keepalive_ms;
    cc.backoff_max_ms = c->reconnect_max_ms;
    if (cc.backoff_base_ms > cc.backoff_max_ms)
        cc.backoff_base_ms = cc.backoff_max_ms;
    if (cc.pex_interval_ms > 2 * c->keepalive_ms)
        cc.pex_interval_ms = 2 * c->keepalive_ms;
    vv_strlcpy(cc.self_address, adv, sizeof(cc.self_address));
    cc.grace_ms = c->grace_period_ms;
    cc.max_tagged = c->max_tagged_peers;
    cc.node_type = (enum vv_node_type)type;
    cc.capabilities = node_type_caps[type];
    vv_strlcpy(cc.region, node->region, sizeof(cc.region));
    m->connmgr = vv_connmgr_new(vv_env_uv_env(m->envu), &cc);
    vv__net_rpc_attach(m);
    add_bootstrap(m, c->bootstrap);

    if (c->mdns) {
        rc = vv__net_mdns_start(m, adv, err, sizeof(err));
        if (rc != 0)
            vv_log_warn("net", "mDNS discovery not started: %s", err);
    }
    vv_log_info("net",
                "listening for peers on %s (TCP port %u, UDP port %u), %u bootstrap peer(s), "
                "node type %s",
                c->listen, vv_net_bound_port(m->net), vv_dgram_port(m->dgram), m->n_bootstrap,
                node_type_names[type]);
    return 0;
}

static void net_stop(struct vv_node *n)
{
    struct vv_net_module *m = vv_node_module_data(n, &vv_net_module);
    if (m == NULL)
        return;
    vv__net_mdns_stop(m);
    vv__net_rpc_detach(m);
    if (m->connmgr) {
        vv_connmgr_free(m->connmgr);
        m->connmgr = NULL;
    }
    if (m->dgram) {
        vv_dgram_close(m->dgram);
        m->dgram = NULL;
    }
    if (m->net) {
        vv_net_close(m->net);
        m->net = NULL;
    }
    if (m->envu) {
        vv_env_uv_close(m->envu);
        m->envu = NULL;
        n->env = NULL;
    }
}

static void net_deinit(struct vv_node *n)
{
    struct vv_net_module *m = vv_node_module_data(n, &vv_net_module);
    if (m == NULL)
        return;
    if (m->keys_set)
        vv_session_keys_clear(&m->keys);
    vv_free(m);
    vv_node_set_module_data(n, &vv_net_module, NULL);
}

/* Up when it listens; peers and the memory its queues use, for the operator's first look. */
static json_t *net_health(struct vv_node *n)
{
    struct vv_net_module *m = vv_node_module_data(n, &vv_net_module);
    if (m == NULL || m->net == NULL)
        return json_pack("{s:b}", "ok", 0);
    return json_pack("{s:b, s:I, s:I}", "ok", 1, "peers", (json_int_t)vv_net_count(m->net),
                     "queuedBytes", (json_int_t)vv_net_stats(m->net)->queued_bytes);
}

static void net_reload(struct vv_node *n)
{
    struct vv_net_module *m = vv_node_module_data(n, &vv_net_module);
    if (m != NULL && m->envu != NULL)
        apply_request_limits(m, vv_net_settings(&n->config));
}

static const char *const net_depends[] = {"monitor", "rpc", NULL};

const struct vv_module vv_net_module = {
    .name = "net",
    .config = &vv_net_settings_section,
    .depends = net_depends,
    .health = net_health,
    .init = net_init,
    .start = net_start,
    .stop = net_stop,
    .deinit = net_deinit,
    .reload = net_reload,
};
