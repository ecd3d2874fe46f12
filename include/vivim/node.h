/*
 * The node: one per vivimd process (and one per simulated node in tests). It owns the event
 * loop reference, the configuration, the identity and the table of modules, and wires the
 * modules together. Modules plug in through struct vv_module: the node initialises and
 * starts them in table order (dependencies first) and stops and deinitialises them in
 * reverse. Nothing calls up into the node except through the functions below.
 */
#ifndef VIVIM_NODE_H
#define VIVIM_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "vivim/config.h"
#include "vivim/identity.h"

struct vv_node;
struct vv_metrics;
struct vv_monitor;
struct vv_rpc;
struct vv_registry;
struct vv_userdb;
struct vv_env_uv;
struct vv_net;
struct vv_connmgr;
struct vv_net_module;
struct vv_crdt_module;

/*
 * A module's lifecycle hooks. Any hook may be NULL.
 * init:   allocate its state, read config, register RPC methods and metrics. No I/O yet.
 * start:  open sockets, start timers. A failure aborts start-up (already started modules are
 *         stopped in reverse).
 * stop:   close its handles; it must not free memory its close callbacks still need.
 * deinit: free everything, after the loop has run every close callback.
 */
struct vv_module {
    const char *name;
    int (*init)(struct vv_node *n);
    int (*start)(struct vv_node *n);
    void (*stop)(struct vv_node *n);
    void (*deinit)(struct vv_node *n);
    /* After a reload changed n->config's run-time keys: apply them. May be NULL. */
    void (*reload)(struct vv_node *n);
};

enum vv_module_state {
    VV_MODULE_NEW,
    VV_MODULE_INITIALIZED,
    VV_MODULE_RUNNING,
    VV_MODULE_STOPPED,
    VV_MODULE_FAILED,
};

const char *vv_module_state_name(enum vv_module_state s);

#define VV_NODE_MAX_MODULES 32

struct vv_node {
    uv_loop_t *loop;
    struct vv_config config;     /* the effective configuration; reload swaps fields */
    struct vv_identity identity; /* loaded or created at init */
    int state_lock_fd;           /* holds the flock on <state_dir>/vivimd.lock; -1 if none */
    uint64_t start_time_ms;      /* uv_now() when the node started */
    uint64_t start_wall_unix_s;  /* wall clock at start, for process_start_time_seconds */

    /* Module handles, set by each module's init; NULL when the module is absent. */
    struct vv_metrics *metrics;
    struct vv_monitor *monitor;
    struct vv_rpc *rpc;
    struct vv_registry *registry; /* content registry, SQLite or PostgreSQL */
    struct vv_userdb *userdb;     /* per-user databases */
    struct vv_env_uv *env;        /* the environment protocol modules run on (net module) */
    struct vv_net *net;           /* peer connections */
    struct vv_connmgr *connmgr;   /* which peers to keep */
    struct vv_net_module *net_module;
    struct vv_crdt_module *crdt; /* CRDT documents, their sync and their store */

    const struct vv_module *modules[VV_NODE_MAX_MODULES];
    enum vv_module_state module_states[VV_NODE_MAX_MODULES];
    int n_modules;

    bool stopping; /* set once by vv_node_request_stop */
    bool ready;    /* every module started */
    int exit_code; /* what the process exits with */
    /* Called when a stop is requested (signal, RPC). Set by main. */
    void (*on_stop_request)(struct vv_node *n);
    /* Called to reload the configuration (SIGHUP, RPC); fills msg (may be NULL). */
    int (*on_reload_request)(struct vv_node *n, char **msg);
};

/*
 * Prepares the node on loop with cfg (which the node takes: do not free it afterwards).
 * Takes the state directory (vv_node_lock_state_dir), then loads or creates the identity.
 * Returns 0 or a negative code with a message logged; on failure nothing is held.
 */
int vv_node_init(struct vv_node *n, uv_loop_t *loop, struct vv_config *cfg);
/* Appends a module; call before vv_node_start, in dependency order. */
void vv_node_add_module(struct vv_node *n, const struct vv_module *m);
/* Inits then starts every module in order. On failure stops what started; returns the code. */
int vv_node_start(struct vv_node *n);
/* Stops every running module in reverse order. Idempotent. */
void vv_node_stop(struct vv_node *n);
/* Deinits modules in reverse order and frees the node's own state. After the loop drained. */
void vv_node_deinit(struct vv_node *n);

/* Asks the process to stop gracefully (calls on_stop_request once). */
void vv_node_request_stop(struct vv_node *n);
/* Asks for a configuration reload. Returns its result; *msg (vv_free) describes changes. */
int vv_node_request_reload(struct vv_node *n, char **msg);

/*
 * Reloads the configuration file the node was started with: applies the keys that may
 * change at run time (the key table in config.c marks them; each running module's reload
 * hook applies its own), and logs and reports every other changed key as needing a
 * restart. A file
 * that fails to load leaves the running configuration untouched. *msg (vv_free) describes
 * what changed, or the error.
 */
int vv_node_reload_config(struct vv_node *n, char **msg);

#define VV_NODE_LOCK_FILE "vivimd.lock"

/*
 * Takes dir for this process, before anything in it is read or written: creates it (mode
 * 0700) if missing; refuses it (VV_ENODE_STATE_PERM) if group or others may write to it or
 * another user than root or ours owns it; then takes an exclusive flock on
 * <dir>/vivimd.lock and writes our PID into it. A lock held by another process gives
 * VV_ENODE_STATE_LOCKED and a message with its PID. Other failures give a negative errno.
 * err always names the directory. On success *lock_fd holds the lock until
 * vv_node_unlock_state_dir (or the process's end); on failure it is -1.
 */
int vv_node_lock_state_dir(const char *dir, int *lock_fd, char *err, size_t err_len);
/* Releases the lock taken by vv_node_lock_state_dir; lock_fd -1 is a no-op. */
void vv_node_unlock_state_dir(int lock_fd);

/* Milliseconds since the node started. */
uint64_t vv_node_uptime_ms(const struct vv_node *n);

#endif
