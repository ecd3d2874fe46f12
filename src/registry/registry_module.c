/*
 * The registry as a node module: which backend, where, and its lifecycle on the node.
 * The RPC methods live in registry_rpc.c, the [registry] section in registry_config.c.
 */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/log.h"
#include "vivim/node.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"

/* The module's slot: the backend opens asynchronously and reports through opened(). */
struct registry_module {
    struct vv_node *n;
    struct vv_registry *reg;
};

static void opened(int status, const char *msg, void *arg)
{
    struct registry_module *m = arg;
    struct vv_node *n = m->n;
    if (n->stopping || m->reg == NULL)
        return; /* the node stopped before the backend opened: nothing to report */
    if (status == 0) {
        vv_log_info("registry", "%s backend ready", vv_registry_backend_name(m->reg));
        return;
    }
    if (vv_registry_settings(&n->config)->url[0] == '\0') {
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

struct vv_registry *vv_registry_of(const struct vv_node *n)
{
    struct registry_module *m = vv_node_module_data(n, &vv_registry_module);
    return m ? m->reg : NULL;
}

static int registry_init(struct vv_node *n)
{
    struct registry_module *m = vv_xcalloc(1, sizeof(*m));
    m->n = n;
    vv_node_set_module_data(n, &vv_registry_module, m);
    return n->rpc ? vv_registry_rpc_register(n->rpc) : 0;
}

static int registry_start(struct vv_node *n)
{
    struct registry_module *m = vv_node_module_data(n, &vv_registry_module);
    const struct vv_registry_settings *c = vv_registry_settings(&n->config);
    char path[4200];
    snprintf(path, sizeof(path), "%s/registry.db", vv_node_settings(&n->config)->state_dir);
    struct vv_registry_config cfg = {
        .sqlite_path = path,
        .sqlite_full_sync = c->synchronous == VV_CONFIG_SYNC_FULL,
        .pg_url = c->url,
        .access_log_max_rows = c->access_log_max_rows,
    };
    if (c->url[0] == '\0')
        return vv_registry_open_sqlite(n->loop, &cfg, opened, m, &m->reg);
    return vv_registry_open_pg(n->loop, &cfg, opened, m, &m->reg);
}

static void registry_stop(struct vv_node *n)
{
    struct registry_module *m = vv_node_module_data(n, &vv_registry_module);
    if (m != NULL && m->reg != NULL) {
        vv_registry_close(m->reg, NULL, NULL); /* frees itself once drained */
        m->reg = NULL;
    }
}

static void registry_deinit(struct vv_node *n)
{
    vv_free(vv_node_module_data(n, &vv_registry_module));
    vv_node_set_module_data(n, &vv_registry_module, NULL);
}

/* Degraded while PostgreSQL is unreachable: requests then wait (and may time out). */
static json_t *registry_health(struct vv_node *n)
{
    struct vv_registry *r = vv_registry_of(n);
    if (r == NULL)
        return json_pack("{s:b}", "ok", 0);
    bool up = vv_registry_connected(r);
    return json_pack("{s:b, s:s, s:b, s:I}", "ok", up, "backend", vv_registry_backend_name(r),
                     "connected", up, "queued", (json_int_t)vv_registry_queued(r));
}

static const char *const registry_depends[] = {"rpc", NULL};

const struct vv_module vv_registry_module = {
    .name = "registry",
    .config = &vv_registry_settings_section,
    .depends = registry_depends,
    .init = registry_init,
    .start = registry_start,
    .stop = registry_stop,
    .deinit = registry_deinit,
    .health = registry_health,
};
