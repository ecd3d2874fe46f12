/*
 * vivimd: command line, configuration, the module table, signals, systemd notification, and
 * an orderly shutdown that drains every handle and closes the loop.
 *
 * Start-up: parse arguments -> load config (any error: "file:line: what", exit 1) -> load or
 * create the identity -> init and start modules in table order -> READY=1. Shutdown
 * (SIGTERM, SIGINT, node.shutdown): STOPPING=1 -> stop modules in reverse -> run the loop
 * until every handle has closed (after VV_SHUTDOWN_DEADLINE_MS, handles still open are
 * logged and closed) -> uv_loop_close() must return 0 -> exit 0.
 */
#include <getopt.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/crdt_sync.h"
#include "vivim/keyed_hash.h"
#include "vivim/log.h"
#include "vivim/monitor.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"
#include "vivim/userdb.h"
#include "vivim/sd_notify.h"

#define VV_SHUTDOWN_DEADLINE_MS 5000 /* then whatever is still open is reported and closed */

struct daemon {
    struct vv_node node;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t watchdog;
    uv_timer_t deadline;
    bool watchdog_on;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: vivimd [--config PATH] [--check-config]\n"
            "       vivimd --print-default-config | --modules | --version | --help\n"
            "\n"
            "  -c, --config PATH       configuration file (default %s)\n"
            "      --check-config      validate the configuration, print the effective one, exit\n"
            "      --print-default-config\n"
            "                          print every key with its default and documentation\n"
            "      --modules           list the modules: config section, dependencies, health\n"
            "  -V, --version           print the version and exit\n"
            "  -h, --help              print this help and exit\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration.\n",
            VV_CONFIG_DEFAULT_PATH);
}

/* One line per module of this program: name, config section, dependencies, whether it has
 * a health check. What /health and vivimd.conf must agree with. */
static void print_modules(FILE *out)
{
    for (size_t i = 0; vv_node_modules[i] != NULL; i++) {
        const struct vv_module *m = vv_node_modules[i];
        fprintf(out, "%s section=%s depends=", m->name, m->config ? m->config->name : "-");
        int k = 0;
        for (const char *const *d = m->depends; d && *d; d++)
            fprintf(out, "%s%s", k++ ? "," : "", *d);
        fprintf(out, "%s health=%s\n", k ? "" : "-", m->health ? "yes" : "no");
    }
}

static void on_deadline(uv_timer_t *t);

static void on_stop_request(struct vv_node *n)
{
    struct daemon *d = VV_CONTAINER_OF(n, struct daemon, node);
    vv_log_notice("vivimd", "stopping");
    vv_sd_notify("STOPPING=1\nSTATUS=stopping");
    vv_node_stop(n);
    /* The signal handlers stay installed (a second SIGTERM must not kill a process that is
     * already stopping gracefully) but no longer keep the loop alive; closed at the end. */
    uv_unref((uv_handle_t *)&d->sig_term);
    uv_unref((uv_handle_t *)&d->sig_int);
    uv_unref((uv_handle_t *)&d->sig_hup);
    if (d->watchdog_on)
        uv_close((uv_handle_t *)&d->watchdog, NULL);
    /* Unreferenced: it fires only if something keeps the loop alive past the deadline. */
    uv_timer_start(&d->deadline, on_deadline, VV_SHUTDOWN_DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&d->deadline);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (signum == SIGHUP) {
        char *msg = NULL;
        vv_node_request_reload(&d->node, &msg);
        vv_free(msg);
        return;
    }
    if (d->node.stopping) {
        vv_log_notice("vivimd", "received %s: already stopping",
                      signum == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
    vv_log_notice("vivimd", "received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    vv_node_request_stop(&d->node);
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    vv_sd_notify("WATCHDOG=1");
}

static void report_open_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    vv_log_warn("vivimd", "shutdown: closing a %s handle still open after %d ms",
                uv_handle_type_name(uv_handle_get_type(h)), VV_SHUTDOWN_DEADLINE_MS);
    uv_close(h, NULL);
}

static void on_deadline(uv_timer_t *t)
{
    uv_walk(t->loop, report_open_handle, NULL);
}

static int start_signals(struct daemon *d)
{
    uv_loop_t *loop = d->node.loop;
    struct {
        uv_signal_t *h;
        int sig;
    } sigs[] = {{&d->sig_term, SIGTERM}, {&d->sig_int, SIGINT}, {&d->sig_hup, SIGHUP}};
    for (size_t i = 0; i < VV_ARRAY_SIZE(sigs); i++) {
        uv_signal_init(loop, sigs[i].h); /* all initialised first: teardown closes all */
        sigs[i].h->data = d;
    }
    for (size_t i = 0; i < VV_ARRAY_SIZE(sigs); i++) {
        int rc = uv_signal_start(sigs[i].h, on_signal, sigs[i].sig);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int run(const char *config_path)
{
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    if (vv_config_load(config_path, vv_node_config_schema(), &cfg, err) != 0) {
        vv_log_error("vivimd", "%s", err);
        return 1;
    }
    vv_log_set_level(vv_log_settings(&cfg)->level);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        vv_config_free(&cfg);
        return 1;
    }
    struct daemon *d = vv_xcalloc(1, sizeof(*d));
    int exit_code = 1;
    if (vv_node_init(&d->node, &loop, &cfg) != 0) {
        uv_loop_close(&loop);
        vv_free(d);
        return 1;
    }
    struct vv_node *n = &d->node;
    n->on_stop_request = on_stop_request;
    uv_timer_init(&loop, &d->deadline);
    if (start_signals(d) != 0) {
        vv_log_error("vivimd", "cannot install signal handlers");
        goto teardown;
    }
    for (size_t i = 0; vv_node_modules[i] != NULL; i++)
        vv_node_add_module(n, vv_node_modules[i]);

    int rc = vv_node_start(n);
    if (rc != 0) {
        vv_log_error("vivimd", "start-up failed: %s", vv_strerror(rc));
        n->stopping = true;
        on_stop_request(n);
        goto drain;
    }

    uint64_t wd_usec = vv_sd_watchdog_usec();
    if (wd_usec > 0) {
        uint64_t every_ms = wd_usec / 2000 ? wd_usec / 2000 : 1; /* half the interval */
        uv_timer_init(&loop, &d->watchdog);
        uv_timer_start(&d->watchdog, on_watchdog, every_ms, every_ms);
        d->watchdog_on = true;
    }
    char metrics[128] = "disabled";
    if (n->monitor != NULL)
        vv_monitor_url(n->monitor, metrics, sizeof(metrics));
    vv_log_notice("vivimd", "ready: node %s, rpc %s, metrics %s", n->identity.node_id_hex,
                  vv_rpc_settings(&n->config)->socket, metrics);
    char status[256];
    snprintf(status, sizeof(status), "READY=1\nSTATUS=running, node %.16s",
             n->identity.node_id_hex);
    vv_sd_notify(status);
    vv_monitor_event(
        n->monitor, "node.ready",
        json_pack("{s:s, s:s}", "nodeId", n->identity.node_id_hex, "version", VIVIM_VERSION));
    exit_code = 0;

drain:
    uv_run(&loop, UV_RUN_DEFAULT);
teardown:
    if (!n->stopping) {
        n->stopping = true;
        on_stop_request(n);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_close((uv_handle_t *)&d->deadline, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    vv_node_deinit(n);
    int close_rc = uv_loop_close(&loop);
    if (close_rc != 0) {
        vv_log_error("vivimd", "event loop did not close cleanly: %s", vv_strerror(close_rc));
        exit_code = 1;
    }
    if (exit_code == 0)
        vv_log_notice("vivimd", "stopped");
    exit_code = exit_code ? exit_code : n->exit_code;
    vv_free(d);
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'k'},
        {"print-default-config", no_argument, NULL, 'P'},
        {"modules", no_argument, NULL, 'M'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = VV_CONFIG_DEFAULT_PATH;
    bool check = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'P':
            vv_config_print_defaults(vv_node_config_schema(), stdout);
            return 0;
        case 'M':
            print_modules(stdout);
            return 0;
        case 'V':
            printf("vivimd %s\n", VIVIM_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vivimd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    vv_log_init();
    if (check) {
        struct vv_config cfg;
        char err[VV_CONFIG_ERR_BYTES];
        if (vv_config_load(config_path, vv_node_config_schema(), &cfg, err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        vv_config_print(&cfg, stdout);
        vv_config_free(&cfg);
        return 0;
    }
    if (sodium_init() < 0) {
        vv_log_error("vivimd", "libsodium failed to initialise");
        return 1;
    }
    vv_keyed_hash_init(); /* the key of every table of outside keys, before any thread */
    signal(SIGPIPE, SIG_IGN);
    /* libuv's thread pool (4 threads by default) runs SQLite jobs of three stores and peer
     * name lookups; a few slow DNS answers must not hold every store's commits. Read once,
     * at the pool's first use; an operator's own setting wins. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);
    return run(config_path);
}
