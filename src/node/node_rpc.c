/* The node's own RPC methods: node.status, node.shutdown, node.reload. */
#include <string.h>

#include "vivim/common.h"
#include "vivim/monitor.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/rpc.h"

/* These methods take no parameters: anything else in params is refused, naming it, before
 * the method acts (node.shutdown {"bogus":1} must not stop the node). */
static bool no_params_ok(struct vv_rpc_request *req, const json_t *params, struct vv_rpc_answer *a)
{
    static const char *const none[] = {NULL};
    char err[128];
    if (vv_rpc_params_object(params, none, err, sizeof(err)) == 0)
        return true;
    *a = vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    return false;
}

static struct vv_rpc_answer status(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_rpc_answer a;
    if (!no_params_ok(req, params, &a))
        return a;
    struct vv_node *n = data;
    json_t *modules = json_object();
    for (int i = 0; i < n->n_modules; i++)
        json_object_set_new(modules, n->modules[i]->name,
                            json_string(vv_module_state_name(n->module_states[i])));
    char metrics[128] = "";
    if (n->monitor)
        vv_monitor_url(n->monitor, metrics, sizeof(metrics));
    const char *type = "?";
    for (const struct vv_config_choice *c = vv_node_type_choices; c->name; c++)
        if (c->value == vv_node_settings(&n->config)->type)
            type = c->name;
    /* A program built without the net module has no [net] section. */
    const char *net = vv_node_module_state(n, &vv_net_module) == VV_MODULE_NEW
                          ? ""
                          : vv_net_settings(&n->config)->listen;
    json_t *result =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:{s:s, s:s, s:s}, s:o, s:s}", "nodeId",
                  n->identity.node_id_hex, "publicKey", "", "version", VIVIM_VERSION,
                  "uptimeSeconds", (json_int_t)(vv_node_uptime_ms(n) / 1000), "nodeType", type,
                  "listen", "rpc", vv_rpc_settings(&n->config)->socket, "metrics", metrics, "net",
                  net, "modules", modules, "state",
                  n->stopping ? "stopping"
                  : n->ready  ? "ready"
                              : "starting");
    char pk[2 * VV_ED25519_PK_BYTES + 1];
    vv_hex_encode(n->identity.public_key, VV_ED25519_PK_BYTES, pk);
    json_object_set_new(result, "publicKey", json_string(pk));
    return vv_rpc_reply(req, result);
}

static struct vv_rpc_answer shutdown_(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_rpc_answer a;
    if (!no_params_ok(req, params, &a))
        return a;
    struct vv_node *n = data;
    /* The answer is written before the stop closes the socket. */
    a = vv_rpc_reply(req, json_pack("{s:b}", "stopping", 1));
    vv_node_request_stop(n);
    return a;
}

static struct vv_rpc_answer reload(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_rpc_answer a;
    if (!no_params_ok(req, params, &a))
        return a;
    struct vv_node *n = data;
    char *msg = NULL;
    int rc = vv_node_request_reload(n, &msg);
    a = rc == 0 ? vv_rpc_reply(req, json_pack("{s:s}", "changes", msg ? msg : "no changes"))
                : vv_rpc_fail(req, rc, "%s", msg ? msg : vv_strerror(rc));
    vv_free(msg);
    return a;
}

static const char no_params[] =
    "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}";

static int node_rpc_init(struct vv_node *n)
{
    const struct vv_rpc_method methods[] = {
        {"node.status", status, n,
         "The node's identity, version, uptime, listen addresses and module states.", no_params,
         "{\"type\":\"object\",\"properties\":{"
         "\"nodeId\":{\"type\":\"string\",\"description\":\"SHA-256 of the Ed25519 public key, "
         "hex\"},"
         "\"publicKey\":{\"type\":\"string\",\"description\":\"Ed25519 public key, hex\"},"
         "\"version\":{\"type\":\"string\"},"
         "\"uptimeSeconds\":{\"type\":\"integer\"},"
         "\"nodeType\":{\"type\":\"string\"},"
         "\"state\":{\"enum\":[\"starting\",\"ready\",\"stopping\"]},"
         "\"listen\":{\"type\":\"object\",\"properties\":{\"rpc\":{\"type\":\"string\"},"
         "\"metrics\":{\"type\":\"string\"},\"net\":{\"type\":\"string\"}}},"
         "\"modules\":{\"type\":\"object\",\"additionalProperties\":{\"enum\":[\"new\","
         "\"initialized\",\"running\",\"stopped\",\"failed\"]}}}}"},
        {"node.shutdown", shutdown_, n,
         "Stops the node gracefully, as SIGTERM does; answers before stopping.", no_params,
         "{\"type\":\"object\",\"properties\":{\"stopping\":{\"const\":true}}}"},
        {"node.reload", reload, n,
         "Re-reads the configuration file, as SIGHUP does; says what changed. A file that "
         "fails to load is an error and the running configuration is kept.",
         no_params, "{\"type\":\"object\",\"properties\":{\"changes\":{\"type\":\"string\"}}}"},
    };
    return vv_rpc_register_all(n->rpc, methods, VV_ARRAY_SIZE(methods));
}

static const char *const node_rpc_depends[] = {"rpc", NULL};

const struct vv_module vv_node_rpc_module = {
    .name = "node",
    .depends = node_rpc_depends,
    .init = node_rpc_init,
};
