/* The RPC server as a node module, and rpc.discover. */
#include "rpc_internal.h"
#include "vivim/common.h"
#include "vivim/node.h"

static struct vv_rpc_answer discover(struct vv_rpc_request *req, json_t *params, void *data)
{
    /* No parameters (its schema says so): anything else is refused, naming it. */
    static const char *const none[] = {NULL};
    char err[128];
    if (vv_rpc_params_object(params, none, err, sizeof(err)) != 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    struct vv_rpc *rpc = data;
    return vv_rpc_reply(req, vv_rpc_describe(rpc));
}

static int rpc_init(struct vv_node *n)
{
    n->rpc = vv_rpc_new(n);
    static const struct vv_rpc_method m = {
        .name = "rpc.discover",
        .handler = discover,
        .summary = "Describes every method: its parameters and result, as JSON Schema.",
        .params_schema = "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
        .result_schema = "{\"type\":\"object\",\"description\":\"An OpenRPC-style document: "
                         "openrpc, info {title, version}, methods [{name, summary, params, "
                         "result}]\"}",
    };
    struct vv_rpc_method reg = m;
    reg.data = n->rpc;
    return vv_rpc_register(n->rpc, &reg);
}

static int rpc_start(struct vv_node *n)
{
    return vv__rpc_server_start(n->rpc, n);
}

static void rpc_stop(struct vv_node *n)
{
    vv__rpc_server_stop(n->rpc);
}

static void rpc_deinit(struct vv_node *n)
{
    vv_rpc_free(n->rpc);
    n->rpc = NULL;
}

static const char *const rpc_depends[] = {"monitor", NULL};

const struct vv_module vv_rpc_module = {
    .name = "rpc",
    .config = &vv_rpc_settings_section,
    .depends = rpc_depends,
    .init = rpc_init,
    .start = rpc_start,
    .stop = rpc_stop,
    .deinit = rpc_deinit,
};
