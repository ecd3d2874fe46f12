/* Per-user databases as a node module. The RPC methods live in userdb_rpc.c, the [userdb]
 * section in userdb_config.c. */
#include <stdio.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/log.h"
#include "vivim/node.h"
#include "vivim/rpc.h"
#include "vivim/userdb.h"

int vv_userdb_rpc_register(struct vv_rpc *rpc);

struct vv_userdb *vv_userdb_of(const struct vv_node *n)
{
    return vv_node_module_data(n, &vv_userdb_module);
}

static int userdb_init(struct vv_node *n)
{
    return n->rpc ? vv_userdb_rpc_register(n->rpc) : 0;
}

static int userdb_start(struct vv_node *n)
{
    const struct vv_userdb_settings *c = vv_userdb_settings(&n->config);
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/users", vv_node_settings(&n->config)->state_dir);
    struct vv_userdb_config cfg = {
        .dir = dir,
        .max_open = c->max_open,
        .full_sync = c->synchronous == VV_CONFIG_SYNC_FULL,
    };
    struct vv_userdb *u = NULL;
    int rc = vv_userdb_open(n->loop, &cfg, &u);
    if (rc != 0) {
        vv_log_error("userdb", "cannot prepare %s: %s", dir, vv_strerror(rc));
        return rc;
    }
    vv_node_set_module_data(n, &vv_userdb_module, u);
    vv_log_info("userdb", "per-user databases in %s, at most %u open", dir, vv_userdb_max_open(u));
    return 0;
}

static void userdb_stop(struct vv_node *n)
{
    struct vv_userdb *u = vv_userdb_of(n);
    if (u != NULL) {
        vv_userdb_close(u, NULL, NULL);
        vv_node_set_module_data(n, &vv_userdb_module, NULL);
    }
}

static json_t *userdb_health(struct vv_node *n)
{
    struct vv_userdb *u = vv_userdb_of(n);
    if (u == NULL)
        return json_pack("{s:b}", "ok", 0);
    return json_pack("{s:b, s:I, s:I}", "ok", 1, "open", (json_int_t)vv_userdb_open_count(u),
                     "maxOpen", (json_int_t)vv_userdb_max_open(u));
}

static const char *const userdb_depends[] = {"rpc", NULL};

const struct vv_module vv_userdb_module = {
    .name = "userdb",
    .config = &vv_userdb_settings_section,
    .depends = userdb_depends,
    .init = userdb_init,
    .start = userdb_start,
    .stop = userdb_stop,
    .health = userdb_health,
};
