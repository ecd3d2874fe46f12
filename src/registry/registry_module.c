/*
 * The registry as a node module: which backend, where, and its lifecycle on the node.
 * The RPC methods live in registry_rpc.c.
 */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/node.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"

static void opened(int status, const char *msg, void *arg)
{
    struct vv_node *n = arg;
    if (n->stopping || n->registry == NULL)
        return; /* the node stopped before the backend opened: nothing to report */
    if (status == 0) {
        vv_log_info("registry", "%s backend ready", vv_registry_backend_name(n->registry));
        return;
    }
    if (n->config.registry_url[0] == '\0') {
        /* The embedded database is ours: if it cannot open, the node cannot work. */
        vv_log_error("registry", "cannot open the SQLite registry: %s", msg ? msg : "");
        n->exit_code = 1;
        vv_node_request_stop(n);
    } else {
        vv_log_warn("registry",
                    "PostgreSQL not reachable yet (%s); requests wait while it "
                    "reconnects",
                    msg ? msg : "");
    }
}

int vv_registry_rpc_register(struct vv_rpc *rpc);

static int registry_init(struct vv_node *n)
{
    return n->rpc ? vv_registry_rpc_register(n->rpc) : 0;
}

static int registry_start(struct vv_node *n)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/registry.db", n->config.state_dir);
    struct vv_registry_config cfg = {
        .sqlite_path = path,
        .sqlite_full_sync = n->config.registry_full_sync,
        .pg_url = n->config.registry_url,
        .access_log_max_rows = n->config.registry_access_log_max_rows,
    };
    if (n->config.registry_url[0] == '\0')
        return vv_registry_open_sqlite(n->loop, &cfg, opened, n, &n->registry);
    return vv_registry_open_pg(n->loop, &cfg, opened, n, &n->registry);
}

static void registry_stop(struct vv_node *n)
{
    if (n->registry != NULL) {
        vv_registry_close(n->registry, NULL, NULL); /* frees itself once drained */
        n->registry = NULL;
    }
}

const struct vv_module vv_registry_module = {
    .name = "registry",
    .init = registry_init,
    .start = registry_start,
    .stop = registry_stop,
};
