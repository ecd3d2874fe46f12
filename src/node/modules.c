/*
 * The modules of vivimd: adding a module is its folder (src/<module>/, with its struct
 * vv_module declaring its config section, dependencies, hooks) plus one line here. Order
 * does not matter for start-up (the node orders modules by their dependencies); it is the
 * order of the sections in vivimd.conf and of the modules in /health.
 */
#include <stdlib.h>

#include "vivim/config.h"
#include "vivim/crdt_sync.h"
#include "vivim/dht.h"
#include "vivim/echo.h"
#include "vivim/monitor.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/pubsub.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"
#include "vivim/userdb.h"

const struct vv_module *const vv_node_modules[] = {
    &vv_rpc_module,
    &vv_monitor_module,
    &vv_node_rpc_module,
    &vv_net_module,
    &vv_registry_module,
    &vv_userdb_module,
    &vv_crdt_module,
    &vv_pubsub_module,
    &vv_dht_module,
    &vv_echo_module,
    NULL,
};

static struct vv_config_schema schema;

const struct vv_config_schema *vv_node_config_schema(void)
{
    /* Built once, at start-up and before any thread: a pure function of the lists above. */
    if (schema.n_sections > 0)
        return &schema;
    schema.preamble = vv_node_config_preamble;
    schema.sections[schema.n_sections++] = &vv_node_settings_section;
    schema.sections[schema.n_sections++] = &vv_log_settings_section;
    for (size_t i = 0; vv_node_modules[i] != NULL; i++) {
        if (vv_node_modules[i]->config == NULL)
            continue;
        if (schema.n_sections == VV_CONFIG_MAX_SECTIONS)
            abort(); /* raise VV_CONFIG_MAX_SECTIONS */
        schema.sections[schema.n_sections++] = vv_node_modules[i]->config;
    }
    return &schema;
}
