/*
 * The monitor module: creates the metrics registry (first module of the node), registers
 * the process and build metrics, turns warnings into events, keeps the recent events, and
 * runs the HTTP endpoint (http.c).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "monitor_internal.h"
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/log.h"
#include "vivim/node.h"

/* ---- process metrics, read from /proc at scrape time ------------------------------------ */

struct proc_stat {
    double cpu_s, vsize, rss;
};

static void read_proc_stat(struct proc_stat *ps)
{
    memset(ps, 0, sizeof(*ps));
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which is in parentheses and may hold spaces. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return;
    unsigned long utime = 0, stime = 0, vsize = 0;
    long rss = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            utime = strtoul(tok, NULL, 10);
        else if (field == 15)
            stime = strtoul(tok, NULL, 10);
        else if (field == 23)
            vsize = strtoul(tok, NULL, 10);
        else if (field == 24) {
            rss = strtol(tok, NULL, 10);
            break;
        }
    }
    long hz = sysconf(_SC_CLK_TCK);
    ps->cpu_s = (double)(utime + stime) / (double)(hz > 0 ? hz : 100);
    ps->vsize = (double)vsize;
    ps->rss = (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double cpu_seconds(void *d)
{
    (void)d;
    struct proc_stat ps;
    read_proc_stat(&ps);
    return ps.cpu_s;
}

static double resident_bytes(void *d)
{
    (void)d;
    struct proc_stat ps;
    read_proc_stat(&ps);
    return ps.rss;
}

static double virtual_bytes(void *d)
{
    (void)d;
    struct proc_stat ps;
    read_proc_stat(&ps);
    return ps.vsize;
}

static double open_fds(void *d)
{
    (void)d;
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return 0;
    double n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n - 1; /* the directory's own descriptor */
}

static double max_fds(void *d)
{
    (void)d;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0;
    return (double)rl.rlim_cur;
}

static double start_time(void *d)
{
    return (double)((struct vv_monitor *)d)->n->start_wall_unix_s;
}

static double ready(void *d)
{
    struct vv_node *n = ((struct vv_monitor *)d)->n;
    return n->ready && !n->stopping ? 1 : 0;
}

static double uptime(void *d)
{
    return (double)vv_node_uptime_ms(((struct vv_monitor *)d)->n) / 1000.0;
}

/* ---- events ------------------------------------------------------------------------------ */

void vv__shared_buf_unref(struct vv__shared_buf *b)
{
    if (--b->refs == 0)
        vv_free(b);
}

void vv_monitor_event(struct vv_monitor *mon, const char *kind, json_t *data)
{
    if (mon == NULL) {
        json_decref(data);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_t *ev = json_pack("{s:s, s:I, s:o}", "kind", kind, "time",
                           (json_int_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, "data",
                           data ? data : json_object());
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (text == NULL)
        return;
    /* SSE frame: the kind is the event name; JSON never holds a raw newline. */
    size_t need = strlen(kind) + strlen(text) + 32;
    struct vv__shared_buf *b = vv_xmalloc(sizeof(*b) + need);
    b->refs = 1;
    b->len = (size_t)snprintf(b->data, need, "event: %s\ndata: %s\n\n", kind, text);
    free(text);
    if (mon->events_total) {
        const char *v[1] = {kind};
        vv_counter_inc(vv_counter_labels(mon->events_total, v));
    }
    /* Keep it among the recent ones (the ring holds a reference)... */
    struct vv__shared_buf **slot = &mon->recent[mon->recent_next];
    if (*slot)
        vv__shared_buf_unref(*slot);
    *slot = b;
    b->refs++;
    mon->recent_next = (mon->recent_next + 1) % VV_EVENTS_RECENT;
    if (mon->n_recent < VV_EVENTS_RECENT)
        mon->n_recent++;
    /* ...and send it to whoever listens now. */
    vv__monitor_fanout(mon, b);
    vv__shared_buf_unref(b);
}

static void log_hook(enum vv_log_level level, const char *module, const char *msg, void *data)
{
    if (level > VV_LOG_WARN)
        return;
    vv_monitor_event(data, "log",
                     json_pack("{s:s, s:s, s:s}", "level", vv_log_level_name(level), "module",
                               module, "message", msg));
}

void vv_monitor_url(const struct vv_monitor *mon, char *out, size_t len)
{
    snprintf(out, len, "%s", mon && mon->listening ? mon->url : "disabled");
}

/*
 * Every module the node holds, with its lifecycle state, and the answer of its health hook
 * when it is running and declares one. A running module that reports "ok": false (a
 * registry that lost its database, say) makes the node "degraded" and the status 503, so a
 * load balancer or systemd's health check sees it.
 */
json_t *vv__monitor_health(struct vv_monitor *mon, int *status)
{
    struct vv_node *n = mon->n;
    bool healthy = true;
    json_t *modules = json_object(), *checks = json_object();
    for (int i = 0; i < n->n_modules; i++) {
        const struct vv_module *m = n->modules[i];
        json_object_set_new(modules, m->name,
                            json_string(vv_module_state_name(n->module_states[i])));
        if (m->health == NULL || n->module_states[i] != VV_MODULE_RUNNING)
            continue;
        json_t *h = m->health(n);
        if (h == NULL)
            continue;
        healthy &= json_is_true(json_object_get(h, "ok"));
        json_object_set_new(checks, m->name, h);
    }
    const char *state = n->stopping ? "stopping"
                        : !n->ready ? "starting"
                        : healthy   ? "ok"
                                    : "degraded";
    *status = strcmp(state, "ok") == 0 ? 200 : 503;
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "status", state, "nodeId",
                     n->identity.node_id_hex, "uptimeSeconds",
                     (json_int_t)(vv_node_uptime_ms(n) / 1000), "version", VIVIM_VERSION, "modules",
                     modules, "checks", checks);
}

/* ---- loop turns ------------------------------------------------------------------------- */

/*
 * Runs once per loop turn, right before the loop polls. The wall time since the previous
 * prepare minus the time the loop slept in poll meanwhile is what the turn worked: timers,
 * I/O callbacks, idle and check handles. "No turn longer than a few milliseconds" is a rule
 * of this daemon; this is where an operator (and the hostile-peer tests) see whether it holds.
 */
static void on_loop_prepare(uv_prepare_t *h)
{
    struct vv_monitor *mon = h->data;
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(h->loop);
    if (mon->probe_prev_ns != 0) {
        uint64_t span = now - mon->probe_prev_ns, slept = idle - mon->probe_prev_idle_ns;
        double busy = span > slept ? (double)(span - slept) / 1e9 : 0.0;
        vv_histogram_observe(mon->loop_busy, busy);
        if (busy > mon->loop_busy_max_s)
            mon->loop_busy_max_s = busy;
    }
    mon->probe_prev_ns = now;
    mon->probe_prev_idle_ns = idle;
}

static double loop_busy_max(void *d)
{
    return ((struct vv_monitor *)d)->loop_busy_max_s;
}

static void loop_probe_start(struct vv_monitor *mon)
{
    uv_loop_t *loop = mon->n->loop;
    if (uv_loop_configure(loop, UV_METRICS_IDLE_TIME) != 0)
        return; /* a libuv without idle-time accounting: no loop metrics */
    uv_prepare_init(loop, &mon->loop_probe);
    mon->loop_probe.data = mon;
    uv_prepare_start(&mon->loop_probe, on_loop_prepare);
    uv_unref((uv_handle_t *)&mon->loop_probe); /* it must not keep the loop alive */
    mon->loop_probe_on = true;
}

/* ---- the module --------------------------------------------------------------------------- */

static int monitor_init(struct vv_node *n)
{
    n->metrics = vv_metrics_new();
    struct vv_monitor *mon = vv_xcalloc(1, sizeof(*mon));
    mon->n = n;
    n->monitor = mon;
    struct vv_metrics *m = n->metrics;
    struct vv_gauge *build = vv_metrics_gauge(
        m, "vivimd_build_info", "Always 1; the labels say which vivimd this is.", "version");
    const char *v[1] = {VIVIM_VERSION};
    vv_gauge_set(vv_gauge_labels(build, v), 1);
    vv_metrics_counter_fn(m, "process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.", cpu_seconds, mon);
    vv_metrics_gauge_fn(m, "process_resident_memory_bytes", "Resident memory size in bytes.",
                        resident_bytes, mon);
    vv_metrics_gauge_fn(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                        virtual_bytes, mon);
    vv_metrics_gauge_fn(m, "process_open_fds", "Number of open file descriptors.", open_fds, mon);
    vv_metrics_gauge_fn(m, "process_max_fds", "Maximum number of open file descriptors.", max_fds,
                        mon);
    vv_metrics_gauge_fn(m, "process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.", start_time, mon);
    vv_metrics_gauge_fn(m, "vivimd_ready",
                        "1 when every module has started and the node is not "
                        "stopping.",
                        ready, mon);
    vv_metrics_gauge_fn(m, "vivimd_uptime_seconds", "Seconds since the node started.", uptime, mon);
    mon->http_requests =
        vv_metrics_counter(m, "vivimd_http_requests_total",
                           "Requests to the metrics endpoint, by path and status.", "path,code");
    mon->connections = vv_metrics_gauge(m, "vivimd_http_connections",
                                        "Open connections to the metrics endpoint.", NULL);
    mon->http_paused = vv_metrics_counter(
        m, "vivimd_http_connections_paused_total",
        "Times a connection's requests were not read because its answers were not.", NULL);
    mon->http_closed = vv_metrics_counter(
        m, "vivimd_http_connections_closed_total",
        "Connections the metrics endpoint closed or refused at a limit, by reason.", "reason");
    mon->subscribers =
        vv_metrics_gauge(m, "vivimd_events_subscribers", "Clients following /events.", NULL);
    mon->events_dropped =
        vv_metrics_counter(m, "vivimd_events_dropped_total",
                           "/events subscribers cut off because they did not keep up.", NULL);
    mon->events_total =
        vv_metrics_counter(m, "vivimd_events_total", "Events published, by kind.", "kind");
    mon->loop_busy = vv_metrics_histogram(
        m, "vivimd_loop_busy_seconds",
        "Time each turn of the event loop worked (not counting its wait for I/O).", NULL,
        vv_metrics_latency_seconds_buckets, vv_metrics_latency_seconds_buckets_len);
    vv_metrics_gauge_fn(m, "vivimd_loop_busy_max_seconds",
                        "The longest turn of the event loop since the node started.", loop_busy_max,
                        mon);
    return 0;
}

static int monitor_start(struct vv_node *n)
{
    struct vv_monitor *mon = n->monitor;
    vv_log_set_hook(log_hook, mon);
    loop_probe_start(mon);
    const struct vv_monitor_settings *cfg = vv_monitor_settings(&n->config);
    if (cfg->listen[0] == '\0') {
        vv_log_info("monitor", "metrics endpoint disabled");
        return 0;
    }
    struct vv__http_limits limits = {
        .max_connections = cfg->max_connections,
        .header_timeout_ms = cfg->header_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .write_timeout_ms = cfg->write_timeout_ms,
        .pause_queue_bytes = cfg->pause_queue_bytes,
        .max_queue_bytes = cfg->max_queue_bytes,
    };
    return vv__monitor_http_start(mon, cfg->listen, &limits);
}

static void monitor_stop(struct vv_node *n)
{
    vv_log_set_hook(NULL, NULL);
    struct vv_monitor *mon = n->monitor;
    if (mon->loop_probe_on) {
        uv_close((uv_handle_t *)&mon->loop_probe, NULL); /* mon outlives the loop's drain */
        mon->loop_probe_on = false;
    }
    vv__monitor_http_stop(mon);
}

static void monitor_deinit(struct vv_node *n)
{
    struct vv_monitor *mon = n->monitor;
    if (mon) {
        for (unsigned i = 0; i < VV_EVENTS_RECENT; i++)
            if (mon->recent[i])
                vv__shared_buf_unref(mon->recent[i]);
        vv_free(mon);
    }
    vv_metrics_free(n->metrics);
    n->monitor = NULL;
    n->metrics = NULL;
}

const struct vv_module vv_monitor_module = {
    .name = "monitor",
    .config = &vv_monitor_settings_section,
    .init = monitor_init,
    .start = monitor_start,
    .stop = monitor_stop,
    .deinit = monitor_deinit,
};
