/*
 * The node's lifecycle: module table, start in order, stop in reverse, reload.
 *
 * The node owns its configuration and identity and hands each module a pointer to itself;
 * modules keep their state in their own handle fields (n->rpc, n->monitor, ...). Start-up
 * is all-or-nothing: when a module fails to start, the ones already running are stopped in
 * reverse order and the error is returned to main, which exits non-zero.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/monitor.h"
#include "vivim/node.h"

const char *vv_module_state_name(enum vv_module_state s)
{
    switch (s) {
    case VV_MODULE_NEW:
        return "new";
    case VV_MODULE_INITIALIZED:
        return "initialized";
    case VV_MODULE_RUNNING:
        return "running";
    case VV_MODULE_STOPPED:
        return "stopped";
    case VV_MODULE_FAILED:
        return "failed";
    }
    return "unknown";
}

int vv_node_init(struct vv_node *n, uv_loop_t *loop, struct vv_config *cfg)
{
    memset(n, 0, sizeof(*n));
    n->state_lock_fd = -1;
    n->loop = loop;
    n->config = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* the node owns the strings now */
    uv_update_time(loop);
    n->start_time_ms = uv_now(loop);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    n->start_wall_unix_s = (uint64_t)tv.tv_sec;

    /* The lock comes first: a second vivimd must not read or create the identity, nor
     * open any database, in a directory another one is using. */
    char err[512] = "";
    const char *state_dir = vv_node_settings(&n->config)->state_dir;
    int rc = vv_node_lock_state_dir(state_dir, &n->state_lock_fd, err, sizeof(err));
    if (rc != 0) {
        vv_log_error("node", "%s", err);
        vv_config_free(&n->config);
        return rc;
    }
    rc = vv_identity_load_or_create(state_dir, &n->identity, err, sizeof(err));
    if (rc != 0) {
        vv_log_error("node", "identity: %s", err);
        vv_node_unlock_state_dir(n->state_lock_fd);
        n->state_lock_fd = -1;
        vv_config_free(&n->config);
        return rc;
    }
    return 0;
}

void vv_node_add_module(struct vv_node *n, const struct vv_module *m)
{
    if (n->n_modules >= VV_NODE_MAX_MODULES)
        abort(); /* a programming error: raise VV_NODE_MAX_MODULES */
    n->module_states[n->n_modules] = VV_MODULE_NEW;
    n->module_data[n->n_modules] = NULL;
    n->modules[n->n_modules++] = m;
}

static int module_index(const struct vv_node *n, const struct vv_module *m)
{
    for (int i = 0; i < n->n_modules; i++)
        if (n->modules[i] == m)
            return i;
    return -1;
}

static int module_by_name(const struct vv_node *n, const char *name)
{
    for (int i = 0; i < n->n_modules; i++)
        if (strcmp(n->modules[i]->name, name) == 0)
            return i;
    return -1;
}

void vv_node_set_module_data(struct vv_node *n, const struct vv_module *m, void *data)
{
    int i = module_index(n, m);
    if (i < 0)
        abort(); /* only a module the node holds has a slot */
    n->module_data[i] = data;
}

void *vv_node_module_data(const struct vv_node *n, const struct vv_module *m)
{
    int i = module_index(n, m);
    return i < 0 ? NULL : n->module_data[i];
}

enum vv_module_state vv_node_module_state(const struct vv_node *n, const struct vv_module *m)
{
    int i = module_index(n, m);
    return i < 0 ? VV_MODULE_NEW : n->module_states[i];
}

/*
 * Orders n->modules so that every module comes after the ones it depends on; among modules
 * whose dependencies are met, the one added first goes first (so the order is stable and a
 * list without dependencies keeps its order). Names the problem and returns
 * VV_ENODE_MODULE_DEPS for a missing dependency or a cycle.
 */
static int order_modules(struct vv_node *n)
{
    for (int i = 0; i < n->n_modules; i++) {
        const struct vv_module *m = n->modules[i];
        for (const char *const *d = m->depends; d && *d; d++)
            if (module_by_name(n, *d) < 0) {
                vv_log_error("node", "module %s depends on module %s, which this program lacks",
                             m->name, *d);
                return VV_ENODE_MODULE_DEPS;
            }
    }
    const struct vv_module *sorted[VV_NODE_MAX_MODULES];
    bool placed[VV_NODE_MAX_MODULES] = {false};
    int count = 0;
    while (count < n->n_modules) {
        int pick = -1;
        for (int i = 0; i < n->n_modules && pick < 0; i++) {
            if (placed[i])
                continue;
            bool ready = true;
            for (const char *const *d = n->modules[i]->depends; d && *d && ready; d++)
                ready = placed[module_by_name(n, *d)];
            if (ready)
                pick = i;
        }
        if (pick < 0) {
            for (int i = 0; i < n->n_modules; i++)
                if (!placed[i])
                    vv_log_error("node", "module %s is part of a dependency cycle",
                                 n->modules[i]->name);
            return VV_ENODE_MODULE_DEPS;
        }
        placed[pick] = true;
        sorted[count++] = n->modules[pick];
    }
    memcpy(n->modules, sorted, sizeof(sorted[0]) * (size_t)count);
    return 0;
}

int vv_node_start(struct vv_node *n)
{
    int rc = order_modules(n);
    if (rc != 0)
        return rc;
    for (int i = 0; i < n->n_modules && rc == 0; i++) {
        const struct vv_module *m = n->modules[i];
        rc = m->init ? m->init(n) : 0;
        if (rc != 0) {
            vv_log_error("node", "module %s failed to initialise: %s", m->name, vv_strerror(rc));
            n->module_states[i] = VV_MODULE_FAILED;
        } else {
            n->module_states[i] = VV_MODULE_INITIALIZED;
        }
    }
    for (int i = 0; i < n->n_modules && rc == 0; i++) {
        const struct vv_module *m = n->modules[i];
        rc = m->start ? m->start(n) : 0;
        if (rc != 0) {
            vv_log_error("node", "module %s failed to start: %s", m->name, vv_strerror(rc));
            n->module_states[i] = VV_MODULE_FAILED;
        } else {
            n->module_states[i] = VV_MODULE_RUNNING;
            vv_log_debug("node", "module %s started", m->name);
        }
    }
    if (rc != 0) {
        vv_node_stop(n);
        return rc;
    }
    n->ready = true;
    return 0;
}

void vv_node_stop(struct vv_node *n)
{
    n->ready = false;
    for (int i = n->n_modules - 1; i >= 0; i--) {
        if (n->module_states[i] != VV_MODULE_RUNNING)
            continue;
        const struct vv_module *m = n->modules[i];
        if (m->stop)
            m->stop(n);
        n->module_states[i] = VV_MODULE_STOPPED;
        vv_log_debug("node", "module %s stopped", m->name);
    }
}

void vv_node_deinit(struct vv_node *n)
{
    for (int i = n->n_modules - 1; i >= 0; i--) {
        /* A module that failed in init may have allocated part of its state. */
        if (n->module_states[i] == VV_MODULE_NEW)
            continue;
        if (n->modules[i]->deinit)
            n->modules[i]->deinit(n);
    }
    n->n_modules = 0;
    vv_identity_clear(&n->identity);
    /* Last: every module has closed its files in the directory by now. */
    vv_node_unlock_state_dir(n->state_lock_fd);
    n->state_lock_fd = -1;
    vv_config_free(&n->config);
}

void vv_node_request_stop(struct vv_node *n)
{
    if (n->stopping)
        return;
    n->stopping = true;
    if (n->on_stop_request)
        n->on_stop_request(n);
}

int vv_node_request_reload(struct vv_node *n, char **msg)
{
    if (msg)
        *msg = NULL;
    if (n->stopping)
        return VV_ENODE_SHUTTING_DOWN;
    if (n->on_reload_request)
        return n->on_reload_request(n, msg);
    return vv_node_reload_config(n, msg);
}

/* The reload's answer, built as the key table is walked; grows as needed. */
struct reload_notes {
    char *text;
    size_t len, cap;
    char *restart; /* keys that need a restart, comma-separated */
    size_t rlen, rcap;
};

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (*len + (size_t)n + 1 > *cap) {
        *cap = (*len + (size_t)n + 1) * 2;
        *buf = vv_xrealloc(*buf, *cap);
    }
    va_start(ap, fmt);
    vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

static void note_change(const char *section, const char *key, bool reload, void *arg)
{
    struct reload_notes *r = arg;
    if (!reload)
        append(&r->restart, &r->rlen, &r->rcap, "%s%s.%s", r->rlen ? ", " : "", section, key);
    else if (strcmp(section, "log") != 0) /* the level is noted with its values */
        append(&r->text, &r->len, &r->cap, "%s%s.%s applied", r->len ? "; " : "", section, key);
}

int vv_node_reload_config(struct vv_node *n, char **msg)
{
    if (msg)
        *msg = NULL;
    if (n->config.path == NULL) {
        if (msg)
            *msg = vv_xstrdup("no configuration file to reload (running on defaults)");
        return 0;
    }
    struct vv_config fresh;
    char err[VV_CONFIG_ERR_BYTES];
    int rc = vv_config_load(n->config.path, n->config.schema, &fresh, err);
    if (rc != 0) {
        vv_log_error("node", "reload failed, keeping the running configuration: %s", err);
        vv_monitor_event(n->monitor, "node.reload", json_pack("{s:b, s:s}", "ok", 0, "error", err));
        if (msg)
            *msg = vv_xstrdup(err);
        return rc;
    }

    /* Every key is either applied here or reported as needing a restart (the key table in
     * config.c says which); nothing changes silently. */
    struct vv_config *old = &n->config;
    struct reload_notes r = {0};
    int old_level = vv_log_settings(old)->level, new_level = vv_log_settings(&fresh)->level;
    if (new_level != old_level)
        append(&r.text, &r.len, &r.cap, "log.level %s -> %s", vv_log_level_name(old_level),
               vv_log_level_name(new_level));
    vv_config_diff(old, &fresh, note_change, &r);
    vv_config_apply_reloadable(old, &fresh);
    vv_log_set_level(vv_log_settings(old)->level);
    for (int i = 0; i < n->n_modules; i++)
        if (n->module_states[i] == VV_MODULE_RUNNING && n->modules[i]->reload)
            n->modules[i]->reload(n);
    if (r.rlen > 0)
        append(&r.text, &r.len, &r.cap, "%schanged but needs a restart: %s", r.len ? "; " : "",
               r.restart);
    if (r.len == 0)
        append(&r.text, &r.len, &r.cap, "no changes");
    vv_free(r.restart);
    vv_config_free(&fresh);
    vv_log_notice("node", "configuration reloaded from %s: %s", old->path, r.text);
    vv_monitor_event(n->monitor, "node.reload",
                     json_pack("{s:b, s:s}", "ok", 1, "changes", r.text));
    if (msg)
        *msg = r.text;
    else
        vv_free(r.text);
    return 0;
}

uint64_t vv_node_uptime_ms(const struct vv_node *n)
{
    return uv_now(n->loop) - n->start_time_ms;
}
