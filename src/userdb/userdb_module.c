/* Per-user databases as a node module. The RPC methods live in userdb_rpc.c. */
#include <stdio.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/node.h"
#include "vivim/rpc.h"
#include "vivim/userdb.h"

int vv_userdb_rpc_register(struct vv_rpc *rpc);

static int userdb_init(struct vv_node *n)
{
    return n->rpc ? vv_userdb_rpc_register(n->rpc) : 0;
}

static int userdb_start(struct vv_node *n)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/users", n->config.state_dir);
    struct vv_userdb_config cfg = {
        .dir = dir,
        .max_open = n->config.userdb_max_open,
        .full_sync = n->config.userdb_full_sync,
    };
    int rc = vv_userdb_open(n->loop, &cfg, &n->userdb);
    if (rc != 0) {
        vv_log_error("userdb", "cannot prepare %s: %s", dir, vv_strerror(rc));
        return rc;
    }
    vv_log_info("userdb", "per-user databases in %s, at most %u open", dir,
                vv_userdb_max_open(n->userdb));
    return 0;
}

static void userdb_stop(struct vv_node *n)
{
    if (n->userdb != NULL) {
        vv_userdb_close(n->userdb, NULL, NULL);
        n->userdb = NULL;
    }
}

const struct vv_module vv_userdb_module = {
    .name = "userdb",
    .init = userdb_init,
    .start = userdb_start,
    .stop = userdb_stop,
};
