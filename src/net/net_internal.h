/* What the net module's files share (net_module.c, net_rpc.c, mdns_glue.c). */
#ifndef VIVIM_NET_INTERNAL_H
#define VIVIM_NET_INTERNAL_H

#include <uv.h>

#include "vivim/common.h"
#include "vivim/connmgr.h"
#include "vivim/env_uv.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/rpc.h"
#include "vivim/session.h"

struct vv_histogram;
struct vv__net_pending; /* peers.connect calls waiting for their dial */
struct vv__net_mdns;

struct vv_net_module {
    struct vv_node *node;
    struct vv_session_keys keys;
    bool keys_set;
    struct vv_env_uv *envu;
    struct vv_net *net;
    struct vv_dgram *dgram; /* the UDP socket, when [net] listen is set */
    struct vv_connmgr *connmgr;
    struct vv_histogram *hs_ok;
    unsigned n_bootstrap;
    struct vv__net_pending *pending;
    uv_timer_t *pending_timer;
    struct vv__net_mdns *mdns;
};

const char *vv__net_node_type_name(int t);
int vv__net_node_type_parse(const char *s);

/* Publishes a failed dial on the monitor's event stream. */
void vv__net_dial_failed(struct vv_net_module *m, const char *address, const char *why);

int vv__net_rpc_register(struct vv_net_module *m, struct vv_rpc *rpc);
/* Hooks the RPC side to the started net (dial outcomes), and unhooks it, failing calls
 * still waiting. */
void vv__net_rpc_attach(struct vv_net_module *m);
void vv__net_rpc_detach(struct vv_net_module *m);

int vv__net_mdns_start(struct vv_net_module *m, const char *advertised, char *err, size_t len);
void vv__net_mdns_stop(struct vv_net_module *m);

#endif
