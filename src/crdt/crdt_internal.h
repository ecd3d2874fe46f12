/* What the CRDT module's glue files share (crdt_module.c, crdt_rpc.c). */
#ifndef VIVIM_CRDT_INTERNAL_H
#define VIVIM_CRDT_INTERNAL_H

#include <uv.h>

#include "vivim/common.h"
#include "vivim/crdt_sync.h"
#include "vivim/env_uv.h"
#include "vivim/node.h"
#include "vivim/rpc.h"
#include "vivim/sqlite_worker.h"

struct batch;

struct vv_crdt_module {
    struct vv_node *node;
    struct vv_crdt_engine *engine;
    struct vv_sqlite *db;
    struct batch *open; /* the batch writes join, until the pool takes it */
    uv_timer_t *flush;  /* submits the open batch at the end of the loop's turn */
    unsigned pending_batches;
    uint32_t compact_updates;
    uint64_t local_updates, remote_updates, compactions, store_errors;
    /* Peers on demand: the peers we hold the "crdt" tag on (vv_env_want_peer), sorted, and
     * the env timer that recounts them at the end of the turn after the peer lists changed. */
    uint8_t (*tagged)[VV_NODE_ID_BYTES];
    size_t n_tagged;
    uint64_t retag_timer;
    struct vv_counter *refused[VV_CRDT_REFUSAL_COUNT]; /* vivimd_crdt_refused_total{reason} */
};

int vv__crdt_rpc_register(struct vv_crdt_module *m, struct vv_rpc *rpc);
/* Answers req with result (taken) once the writes made so far are committed. */
void vv__crdt_wait_stored(struct vv_crdt_module *m, struct vv_rpc_request *req, json_t *result);
/* Logs the creation of a document made here. */
void vv__crdt_store_created(struct vv_crdt_module *m, struct vv_crdt_doc *d);

#endif
