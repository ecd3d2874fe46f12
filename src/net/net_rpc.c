/*
 * The peers.* RPC methods. peers.connect answers when its dial has an outcome: the calls
 * waiting are kept on a list (struct vv__net_pending) matched by address against the net's
 * dial observer, with a deadline checked by a one-second timer.
 */
#include <stdio.h>
#include <string.h>

#include "net_internal.h"
#include "vivim/log.h"

#define CONNECT_GRACE_MS 5000 /* beyond the handshake timeout, for name resolution */

struct vv__net_pending {
    struct vv__net_pending *next;
    struct vv_rpc_request *req;
    char address[VV_NET_ADDRESS_BYTES];
    bool has_id;
    uint8_t id[VV_NODE_ID_BYTES];
    uint64_t deadline_ms;
};

static void answer_connected(struct vv__net_pending *p, const uint8_t *node_id, bool already)
{
    char hex[VV_NODE_ID_HEX_BYTES];
    vv_hex_encode(node_id, VV_NODE_ID_BYTES, hex);
    vv_rpc_reply(p->req, json_pack("{s:s, s:s, s:b}", "nodeId", hex, "address", p->address,
                                   "alreadyConnected", already));
}

static json_t *caps_json(uint32_t caps)
{
    static const char *const names[] = {"dht", "pubsub", "store", "relay", "crdt", "federation"};
    json_t *a = json_array();
    for (size_t i = 0; i < VV_ARRAY_SIZE(names); i++)
        if (caps & (1u << i))
            json_array_append_new(a, json_string(names[i]));
    return a;
}

static json_t *peer_json(struct vv_net_module *m, const struct vv_net_conn_info *ci,
                         const struct vv_connmgr_peer *cp)
{
    char hex[VV_NODE_ID_HEX_BYTES];
    vv_hex_encode(ci ? ci->node_id : cp->id, VV_NODE_ID_BYTES, hex);
    json_t *o = json_object();
    json_object_set_new(o, "nodeId", json_string(hex));
    json_object_set_new(o, "connected", json_boolean(ci != NULL));
    const char *addr = ci && ci->listen[0] ? ci->listen : cp ? cp->address : "";
    json_object_set_new(o, "address", json_string(addr));
    int type = ci                                         ? ci->node_type
               : cp && cp->node_type < VV_NODE_TYPE_COUNT ? (int)cp->node_type
                                                          : -1;
    json_object_set_new(o, "type", json_string(vv__net_node_type_name(type)));
    json_object_set_new(o, "capabilities",
                        caps_json(ci   ? ci->capabilities
                                  : cp ? cp->capabilities
                                       : 0));
    if (cp) {
        json_object_set_new(o, "region", json_string(cp->region));
        json_object_set_new(o, "rttMs", json_integer(cp->rtt_ms));
        json_object_set_new(o, "reputation", json_integer(cp->reputation));
        json_object_set_new(o, "bootstrap", json_boolean(cp->flags & VV_PEER_BOOTSTRAP));
        json_object_set_new(o, "protected", json_boolean(cp->flags & VV_PEER_PROTECTED));
        json_object_set_new(o, "failures", json_integer(cp->failures));
    }
    if (ci) {
        uint64_t now = uv_now(m->node->loop);
        uint64_t since_s =
            m->node->start_wall_unix_s + (ci->connected_since_ms - m->node->start_time_ms) / 1000;
        json_object_set_new(o, "remote", json_string(ci->remote));
        json_object_set_new(o, "inbound", json_boolean(ci->inbound));
        json_object_set_new(o, "connectedSince", json_integer((json_int_t)since_s));
        json_object_set_new(o, "connectedSeconds",
                            json_integer((json_int_t)((now - ci->connected_since_ms) / 1000)));
        json_object_set_new(o, "bytesIn", json_integer((json_int_t)ci->bytes_in));
        json_object_set_new(o, "bytesOut", json_integer((json_int_t)ci->bytes_out));
        json_object_set_new(o, "framesIn", json_integer((json_int_t)ci->frames_in));
        json_object_set_new(o, "framesOut", json_integer((json_int_t)ci->frames_out));
        json_object_set_new(o, "errors", json_integer((json_int_t)ci->errors));
        json_object_set_new(o, "queuedBytes", json_integer((json_int_t)ci->queued_bytes));
    }
    return o;
}

static const char *const cap_names[] = {"dht", "pubsub", "store", "relay", "crdt", "federation"};

struct list_ctx {
    struct vv_net_module *m;
    json_t *arr;
    /* Discovery filters (the seed's): all of caps, region, minimum reputation, type. */
    uint32_t caps;
    const char *region;
    int64_t min_reputation;
    int type;
};

static void list_one(const struct vv_net_conn_info *ci, void *arg)
{
    struct list_ctx *x = arg;
    const struct vv_connmgr_peer *cp =
        x->m->connmgr ? vv_connmgr_find(x->m->connmgr, ci->node_id) : NULL;
    if ((ci->capabilities & x->caps) != x->caps || (x->type >= 0 && ci->node_type != x->type))
        return;
    if (x->region != NULL && (cp == NULL || strcmp(cp->region, x->region) != 0))
        return;
    if (x->min_reputation > INT32_MIN && (cp == NULL || cp->reputation < x->min_reputation))
        return;
    json_array_append_new(x->arr, peer_json(x->m, ci, cp));
}

static struct vv_rpc_answer not_running(struct vv_rpc_request *req)
{
    return vv_rpc_fail(req, VV_ESTATE, "the peer network is not running");
}

static struct vv_rpc_answer peers_list(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_net_module *m = data;
    static const char *const allowed[] = {"capabilities", "region", "minReputation", "type", NULL};
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    struct list_ctx x = {m, NULL, 0, NULL, INT32_MIN, -1};
    json_t *caps = json_object_get(params, "capabilities");
    if (caps != NULL) {
        size_t i;
        json_t *c;
        if (!json_is_array(caps))
            return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "capabilities: expected an array");
        json_array_foreach(caps, i, c)
        {
            size_t k = 0;
            while (k < VV_ARRAY_SIZE(cap_names) &&
                   !(json_is_string(c) && strcmp(json_string_value(c), cap_names[k]) == 0))
                k++;
            if (k == VV_ARRAY_SIZE(cap_names))
                return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                                   "capabilities[%zu]: one of dht, pubsub, store, relay, crdt, "
                                   "federation",
                                   i);
            x.caps |= 1u << k;
        }
    }
    if (vv_rpc_param_string(params, "region", false, VV_CONNMGR_REGION_BYTES - 1, &x.region, err,
                            sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    json_t *rep = json_object_get(params, "minReputation");
    if (rep != NULL) {
        if (!json_is_integer(rep) || json_integer_value(rep) < VV_CONNMGR_REPUTATION_MIN ||
            json_integer_value(rep) > VV_CONNMGR_REPUTATION_MAX)
            return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                               "minReputation: an integer from -100 to 100");
        x.min_reputation = json_integer_value(rep);
    }
    const char *type = NULL;
    if (vv_rpc_param_string(params, "type", false, 32, &type, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (type != NULL && (x.type = vv__net_node_type_parse(type)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "type: one of bootstrap, relay, indexer, storage, edge, client, "
                           "self_hosted");
    if (m->net == NULL)
        return not_running(req);
    x.arr = json_array();
    vv_net_foreach(m->net, list_one, &x);
    return vv_rpc_reply(req, json_pack("{s:o, s:I, s:I}", "peers", x.arr, "connected",
                                       (json_int_t)vv_net_count(m->net), "known",
                                       (json_int_t)vv_connmgr_known_count(m->connmgr)));
}

/* The calls that take exactly {nodeId}: true with id read, or false with *a the answer. */
static bool node_id_call(struct vv_rpc_request *req, json_t *params, struct vv_net_module *m,
                         uint8_t id[VV_NODE_ID_BYTES], struct vv_rpc_answer *a)
{
    static const char *const allowed[] = {"nodeId", NULL};
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_node_id(params, "nodeId", true, id, err, sizeof(err)) != 0) {
        *a = vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
        return false;
    }
    if (m->net == NULL) {
        *a = not_running(req);
        return false;
    }
    return true;
}

static struct vv_rpc_answer peers_info(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_net_module *m = data;
    uint8_t id[VV_NODE_ID_BYTES];
    struct vv_rpc_answer a;
    if (!node_id_call(req, params, m, id, &a))
        return a;
    struct vv_net_conn_info ci;
    bool connected = vv_net_info(m->net, id, &ci) == 0;
    const struct vv_connmgr_peer *cp = vv_connmgr_find(m->connmgr, id);
    if (!connected && cp == NULL)
        return vv_rpc_fail(req, VV_ECONN_NOT_CONNECTED, "no such peer: not connected, not known");
    return vv_rpc_reply(req, peer_json(m, connected ? &ci : NULL, cp));
}

static struct vv_rpc_answer peers_disconnect(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_net_module *m = data;
    uint8_t id[VV_NODE_ID_BYTES];
    struct vv_rpc_answer a;
    if (!node_id_call(req, params, m, id, &a))
        return a;
    struct vv_net_conn_info ci;
    if (vv_net_info(m->net, id, &ci) != 0)
        return vv_rpc_fail(req, VV_ECONN_NOT_CONNECTED, "peer not connected");
    vv_connmgr_disconnect(m->connmgr, id);
    vv_net_disconnect(m->net, id); /* in case the manager did not know it yet */
    return vv_rpc_reply(req, json_pack("{s:b}", "disconnected", 1));
}

static struct vv_rpc_answer peers_connect(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_net_module *m = data;
    static const char *const allowed[] = {"address", "nodeId", NULL};
    char err[256];
    const char *address;
    uint8_t id[VV_NODE_ID_BYTES];
    int id_rc = 1;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "address", true, VV_NET_ADDRESS_BYTES - 1, &address, err,
                            sizeof(err)) != 0 ||
        (id_rc = vv_rpc_param_node_id(params, "nodeId", false, id, err, sizeof(err))) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    bool have_id = id_rc == 0;
    if (m->net == NULL)
        return not_running(req);
    if (vv_net_select_transport(m->net, address) == NULL)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "address: expected host:port or [v6]:port (the only transport is tcp)");
    struct vv_net_conn_info ci;
    if (have_id && vv_net_info(m->net, id, &ci) == 0) {
        char hex[VV_NODE_ID_HEX_BYTES];
        vv_hex_encode(id, VV_NODE_ID_BYTES, hex);
        return vv_rpc_reply(req, json_pack("{s:s, s:s, s:b}", "nodeId", hex, "address", address,
                                           "alreadyConnected", 1));
    }
    int rc = vv_connmgr_connect(m->connmgr, have_id ? id : NULL, address);
    if (rc == VV_EEXIST) {
        /* Connected already, under this address. */
        for (uint32_t i = 0; i < vv_connmgr_known_count(m->connmgr); i++) {
            const struct vv_connmgr_peer *cp = vv_connmgr_peer_at(m->connmgr, i);
            if (cp->connected && cp->id_known && strcmp(cp->address, address) == 0) {
                char hex[VV_NODE_ID_HEX_BYTES];
                vv_hex_encode(cp->id, VV_NODE_ID_BYTES, hex);
                return vv_rpc_reply(req, json_pack("{s:s, s:s, s:b}", "nodeId", hex, "address",
                                                   address, "alreadyConnected", 1));
            }
        }
    }
    if (rc != 0)
        return vv_rpc_fail(req, rc, "cannot dial %s: %s", address, vv_strerror(rc));
    struct vv__net_pending *p = vv_xcalloc(1, sizeof(*p));
    p->req = req;
    vv_strlcpy(p->address, address, sizeof(p->address));
    if (have_id) {
        p->has_id = true;
        memcpy(p->id, id, VV_NODE_ID_BYTES);
    }
    p->deadline_ms = uv_now(m->node->loop) +
                     vv_net_settings(&m->node->config)->handshake_timeout_ms + CONNECT_GRACE_MS;
    p->next = m->pending;
    m->pending = p;
    return vv_rpc_pending(req);
}

/* ---- dial outcomes ----------------------------------------------------------------------- */

static void on_dial(void *arg, const char *address, const uint8_t *node_id, const char *why)
{
    struct vv_net_module *m = arg;
    if (node_id == NULL) {
        vv__net_dial_failed(m, address, why);
        if (m->connmgr)
            vv_connmgr_dial_failed(m->connmgr, address);
    }
    struct vv__net_pending **pp = &m->pending;
    while (*pp) {
        struct vv__net_pending *p = *pp;
        /* The dial of this call, or (when it named the node) any dial that reached that
         * node: the manager may have been dialling it at another address already. */
        bool same_node =
            node_id != NULL && p->has_id && memcmp(p->id, node_id, VV_NODE_ID_BYTES) == 0;
        if (strcmp(p->address, address) != 0 && !same_node) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        if (node_id != NULL) {
            answer_connected(p, node_id, false);
        } else {
            vv_rpc_fail(p->req, VV_ECONN_NOT_CONNECTED, "dial to %s failed: %s", address,
                        why ? why : "unknown");
        }
        vv_free(p);
    }
}

static void on_pending_timer(uv_timer_t *t)
{
    struct vv_net_module *m = t->data;
    uint64_t now = uv_now(m->node->loop);
    struct vv__net_pending **pp = &m->pending;
    while (*pp) {
        struct vv__net_pending *p = *pp;
        struct vv_net_conn_info ci;
        bool connected = p->has_id && m->net && vv_net_info(m->net, p->id, &ci) == 0;
        if (now < p->deadline_ms && !connected) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        if (connected)
            answer_connected(p, p->id, false); /* it came through another dial */
        else
            vv_rpc_fail(p->req, VV_ECONN_NOT_CONNECTED, "dial to %s: no answer in time",
                        p->address);
        vv_free(p);
    }
}

static void free_timer(uv_handle_t *h)
{
    vv_free(h);
}

void vv__net_rpc_attach(struct vv_net_module *m)
{
    vv_net_set_dial_cb(m->net, on_dial, m);
    m->pending_timer = vv_xmalloc(sizeof(*m->pending_timer));
    uv_timer_init(m->node->loop, m->pending_timer);
    m->pending_timer->data = m;
    uv_timer_start(m->pending_timer, on_pending_timer, 1000, 1000);
    uv_unref((uv_handle_t *)m->pending_timer);
}

void vv__net_rpc_detach(struct vv_net_module *m)
{
    while (m->pending) {
        struct vv__net_pending *p = m->pending;
        m->pending = p->next;
        vv_rpc_fail(p->req, VV_ESTATE, "the node is stopping");
        vv_free(p);
    }
    if (m->net)
        vv_net_set_dial_cb(m->net, NULL, NULL);
    if (m->pending_timer) {
        uv_close((uv_handle_t *)m->pending_timer, free_timer);
        m->pending_timer = NULL;
    }
}

/* ---- registration ---------------------------------------------------------------------- */

#define PEER_SCHEMA                                                                                \
    "{\"type\":\"object\",\"properties\":{"                                                        \
    "\"nodeId\":{\"type\":\"string\"},\"connected\":{\"type\":\"boolean\"},"                       \
    "\"address\":{\"type\":\"string\",\"description\":\"the address it advertises, or the one "    \
    "we know\"},"                                                                                  \
    "\"type\":{\"enum\":[\"bootstrap\",\"relay\",\"indexer\",\"storage\",\"edge\",\"client\","     \
    "\"self_hosted\",\"unknown\"]},"                                                               \
    "\"capabilities\":{\"type\":\"array\",\"items\":{\"enum\":[\"dht\",\"pubsub\",\"store\","      \
    "\"relay\",\"crdt\",\"federation\"]}},"                                                        \
    "\"region\":{\"type\":\"string\"},\"rttMs\":{\"type\":\"integer\"},"                           \
    "\"reputation\":{\"type\":\"integer\"},\"bootstrap\":{\"type\":\"boolean\"},"                  \
    "\"protected\":{\"type\":\"boolean\"},\"failures\":{\"type\":\"integer\"},"                    \
    "\"remote\":{\"type\":\"string\"},\"inbound\":{\"type\":\"boolean\"},"                         \
    "\"connectedSince\":{\"type\":\"integer\",\"description\":\"Unix seconds\"},"                  \
    "\"connectedSeconds\":{\"type\":\"integer\"},"                                                 \
    "\"bytesIn\":{\"type\":\"integer\"},\"bytesOut\":{\"type\":\"integer\"},"                      \
    "\"framesIn\":{\"type\":\"integer\"},\"framesOut\":{\"type\":\"integer\"},"                    \
    "\"errors\":{\"type\":\"integer\"},\"queuedBytes\":{\"type\":\"integer\"}}}"

#define NODE_ID_PARAMS                                                                             \
    "{\"type\":\"object\",\"required\":[\"nodeId\"],\"properties\":{\"nodeId\":{\"type\":"         \
    "\"string\",\"pattern\":\"^[0-9a-fA-F]{64}$\"}},\"additionalProperties\":false}"

int vv__net_rpc_register(struct vv_net_module *m, struct vv_rpc *rpc)
{
    const struct vv_rpc_method methods[] = {
        {"peers.list", peers_list, m,
         "Connected peers: node ID, address, type, capabilities, RTT, connected since, bytes. "
         "Optional filters: peers with all of capabilities, in region, with at least "
         "minReputation, of type.",
         "{\"type\":\"object\",\"properties\":{\"capabilities\":{\"type\":\"array\","
         "\"items\":{\"enum\":[\"dht\",\"pubsub\",\"store\",\"relay\",\"crdt\","
         "\"federation\"]}},\"region\":{\"type\":\"string\"},\"minReputation\":{"
         "\"type\":\"integer\",\"minimum\":-100,\"maximum\":100},\"type\":{\"type\":"
         "\"string\"}},\"additionalProperties\":false}",
         "{\"type\":\"object\",\"properties\":{\"peers\":{\"type\":\"array\",\"items\":" PEER_SCHEMA
         "},\"connected\":{\"type\":\"integer\"},\"known\":{\"type\":\"integer\"}}}"},
        {"peers.info", peers_info, m,
         "One peer, connected or only known to the connection manager (then connected is "
         "false and the connection fields are absent).",
         NODE_ID_PARAMS, PEER_SCHEMA},
        {"peers.connect", peers_connect, m,
         "Dials address (host:port, [v6]:port or a DNS name) and answers once the handshake "
         "completed or failed. With nodeId, a peer answering with another identity is refused. "
         "The peer is added to the address book.",
         "{\"type\":\"object\",\"required\":[\"address\"],\"properties\":{\"address\":{\"type\":"
         "\"string\"},\"nodeId\":{\"type\":\"string\",\"pattern\":\"^[0-9a-fA-F]{64}$\"}},"
         "\"additionalProperties\":false}",
         "{\"type\":\"object\",\"properties\":{\"nodeId\":{\"type\":\"string\"},\"address\":{"
         "\"type\":\"string\"},\"alreadyConnected\":{\"type\":\"boolean\"}}}"},
        {"peers.disconnect", peers_disconnect, m,
         "Closes the connection to a peer. The connection manager may dial it again later "
         "(bootstrap peers, or when short of peers).",
         NODE_ID_PARAMS,
         "{\"type\":\"object\",\"properties\":{\"disconnected\":{\"const\":true}}}"},
    };
    return vv_rpc_register_all(rpc, methods, VV_ARRAY_SIZE(methods));
}
