/*
 * The node: one per vivimd process. It owns the event loop reference, the configuration, the
 * identity and the modules. A module is its folder: it declares, in struct vv_module, its
 * config section, the modules it depends on, its lifecycle and health hooks; it registers
 * its RPC methods and metrics from its init hook and keeps its state in its own slot
 * (vv_node_set_module_data). The program lists its modules once (src/node/modules.c); the
 * node orders them by their dependencies, starts them in that order and stops them in
 * reverse. Nothing calls up into the node except through the functions below.
 */
#ifndef VIVIM_NODE_H
#define VIVIM_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "vivim/config.h"
#include "vivim/identity.h"

#include <jansson.h>

struct vv_node;
struct vv_metrics;
struct vv_monitor;
struct vv_rpc;
struct vv_env_uv;

/*
 * A module's declaration. Any hook may be NULL.
 * config:  its section of vivimd.conf (NULL: none); read it with vv_config_get(&n->config, ..).
 * depends: names of the modules it needs started before it, ended by NULL (NULL: none).
 * init:   allocate its state, read config, register RPC methods and metrics. No I/O yet.
 * start:  open sockets, start timers. A failure aborts start-up (already started modules are
 *         stopped in reverse).
 * stop:   close its handles; it must not free memory its close callbacks still need.
 * deinit: free everything, after the loop has run every close callback.
 */
struct vv_module {
    const char *name;
    const struct vv_config_section *config;
    const char *const *depends;
    int (*init)(struct vv_node *n);
    int (*start)(struct vv_node *n);
    void (*stop)(struct vv_node *n);
    void (*deinit)(struct vv_node *n);
    /* After a reload changed n->config's run-time keys: apply them. May be NULL. */
    void (*reload)(struct vv_node *n);
    /* Its part of /health: an object with at least "ok" (bool); a running module whose
     * answer says ok false makes the node's status "degraded". May be NULL. */
    json_t *(*health)(struct vv_node *n);
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

    /* The platform every module uses, set by the modules that provide it; NULL when absent. */
    struct vv_metrics *metrics; /* metrics registry (monitor) */
    struct vv_monitor *monitor; /* /metrics, /health, /events (monitor) */
    struct vv_rpc *rpc;         /* JSON-RPC methods (rpc) */
    struct vv_env_uv *env;      /* the environment protocol modules run on (net) */

    /* In start order (dependencies first), once vv_node_start has ordered them. */
    const struct vv_module *modules[VV_NODE_MAX_MODULES];
    enum vv_module_state module_states[VV_NODE_MAX_MODULES];
    void *module_data[VV_NODE_MAX_MODULES]; /* each module's own state */
    int n_modules;

    bool stopping; /* set once by vv_node_request_stop */
    bool ready;    /* every module started */
    int exit_code; /* what the process exits with */
    /* Called when a stop is requested (signal, RPC). Set by main. */
    void (*on_stop_request)(struct vv_node *n);
    /* Called to reload the configuration (SIGHUP, RPC); fills msg (may be NULL). */
    int (*on_reload_request)(struct vv_node *n, char **msg);
};

/* The node's own sections of vivimd.conf. */
struct vv_node_settings {
    char *state_dir; /* identity key, SQLite files; created 0700 if missing, locked at start */
    int type;        /* enum vv_node_type */
    char *region;    /* label advertised to peers: "" or up to 31 bytes of UTF-8 text */
};
struct vv_log_settings {
    int level; /* enum vv_log_level */
};
extern const struct vv_config_section vv_node_settings_section;
extern const struct vv_config_section vv_log_settings_section;
extern const struct vv_config_choice vv_node_type_choices[];
extern const char vv_node_config_preamble[];

static inline const struct vv_node_settings *vv_node_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_node_settings_section);
}
static inline const struct vv_log_settings *vv_log_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_log_settings_section);
}

/* The modules of this program, in no particular order, ended by NULL (src/node/modules.c:
 * adding a module is one line there). */
extern const struct vv_module *const vv_node_modules[];
/* The schema of vivimd.conf: [node], [log], then each listed module's section. */
const struct vv_config_schema *vv_node_config_schema(void);

/*
 * Prepares the node on loop with cfg (which the node takes: do not free it afterwards).
 * Takes the state directory (vv_node_lock_state_dir), then loads or creates the identity.
 * Returns 0 or a negative code with a message logged; on failure nothing is held.
 */
int vv_node_init(struct vv_node *n, uv_loop_t *loop, struct vv_config *cfg);
/* Adds a module; call before vv_node_start, in any order. */
void vv_node_add_module(struct vv_node *n, const struct vv_module *m);
/*
 * Orders the modules so that each comes after those it depends on (otherwise keeping the
 * order they were added in), then inits and starts each. A dependency on a module that was
 * not added, or a cycle, fails with VV_ENODE_MODULE_DEPS and a message naming the modules.
 * On failure stops what started; returns the code.
 */
int vv_node_start(struct vv_node *n);
/* A module's own state: set from its init hook, read by it and by modules that depend on it
 * (through an accessor in its header). NULL when the module is absent or not initialised. */
void vv_node_set_module_data(struct vv_node *n, const struct vv_module *m, void *data);
void *vv_node_module_data(const struct vv_node *n, const struct vv_module *m);
/* Where the module is in its lifecycle; VV_MODULE_NEW when it was not added. */
enum vv_module_state vv_node_module_state(const struct vv_node *n, const struct vv_module *m);
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
