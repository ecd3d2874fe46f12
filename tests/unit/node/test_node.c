/* Module lifecycle: start in order, stop in reverse, all-or-nothing start, config reload. */
#include "vv_test.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vivim/node.h"
#include "vivim/rpc.h"

static char trace[256];

static void note(const char *what, const char *name)
{
    size_t off = strlen(trace);
    snprintf(trace + off, sizeof(trace) - off, "%s%s:%s", off ? " " : "", what, name);
}

#define FAKE_MODULE(id, start_rc, ...)                                                             \
    static int id##_init(struct vv_node *n)                                                        \
    {                                                                                              \
        (void)n;                                                                                   \
        note("init", #id);                                                                         \
        return 0;                                                                                  \
    }                                                                                              \
    static int id##_start(struct vv_node *n)                                                       \
    {                                                                                              \
        (void)n;                                                                                   \
        note("start", #id);                                                                        \
        return start_rc;                                                                           \
    }                                                                                              \
    static void id##_stop(struct vv_node *n)                                                       \
    {                                                                                              \
        (void)n;                                                                                   \
        note("stop", #id);                                                                         \
    }                                                                                              \
    static void id##_deinit(struct vv_node *n)                                                     \
    {                                                                                              \
        (void)n;                                                                                   \
        note("deinit", #id);                                                                       \
    }                                                                                              \
    static const char *const id##_deps[] = {__VA_ARGS__};                                          \
    static const struct vv_module id = {                                                           \
        .name = #id,                                                                               \
        .depends = id##_deps,                                                                      \
        .init = id##_init,                                                                         \
        .start = id##_start,                                                                       \
        .stop = id##_stop,                                                                         \
        .deinit = id##_deinit,                                                                     \
    };

FAKE_MODULE(a, 0, NULL)
FAKE_MODULE(b, 0, NULL)
FAKE_MODULE(broken, VV_EIO, NULL)
FAKE_MODULE(c, 0, "b", "a", NULL) /* needs both */
FAKE_MODULE(d, 0, "a", NULL)
FAKE_MODULE(orphan, 0, "nowhere", NULL)
FAKE_MODULE(x, 0, "y", NULL)
FAKE_MODULE(y, 0, "x", NULL)

struct fixture {
    char dir[64];
    char conf[128];
    uv_loop_t loop;
    struct vv_node node;
};

static void write_conf(struct fixture *f, const char *level)
{
    FILE *fp = fopen(f->conf, "w");
    fprintf(fp, "[node]\nstate_dir = %s\n[log]\nlevel = %s\n", f->dir, level);
    fclose(fp);
}

static int setup(void **state)
{
    vv_test_use_cmocka_allocator();
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/vv-node-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->conf, sizeof(f->conf), "%s/vivimd.conf", f->dir);
    write_conf(f, "info");
    uv_loop_init(&f->loop);
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    if (vv_config_load(f->conf, vv_node_config_schema(), &cfg, err) != 0)
        return -1;
    if (vv_node_init(&f->node, &f->loop, &cfg) != 0)
        return -1;
    trace[0] = '\0';
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    vv_node_deinit(&f->node);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char p[160];
    snprintf(p, sizeof(p), "%s/node.key", f->dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/" VV_NODE_LOCK_FILE, f->dir);
    unlink(p);
    unlink(f->conf);
    rmdir(f->dir);
    free(f);
    vv_log_set_level(VV_LOG_INFO);
    return 0;
}

static void test_modules_start_in_order_and_stop_in_reverse(void **state)
{
    struct fixture *f = *state;
    vv_node_add_module(&f->node, &a);
    vv_node_add_module(&f->node, &b);
    assert_int_equal(vv_node_start(&f->node), 0);
    assert_true(f->node.ready);
    assert_int_equal(f->node.module_states[1], VV_MODULE_RUNNING);
    vv_node_stop(&f->node);
    vv_node_stop(&f->node); /* idempotent */
    vv_node_deinit(&f->node);
    assert_string_equal(trace, "init:a init:b start:a start:b stop:b stop:a deinit:b deinit:a");
}

static void test_failed_start_stops_what_already_started(void **state)
{
    struct fixture *f = *state;
    vv_node_add_module(&f->node, &a);
    vv_node_add_module(&f->node, &broken);
    vv_node_add_module(&f->node, &b);
    assert_int_equal(vv_node_start(&f->node), VV_EIO);
    assert_false(f->node.ready);
    assert_int_equal(f->node.module_states[1], VV_MODULE_FAILED);
    assert_string_equal(f->node.modules[1]->name, "broken");
    assert_string_equal(vv_module_state_name(f->node.module_states[1]), "failed");
    assert_string_equal(trace, "init:a init:broken init:b start:a start:broken stop:a");
}

/* Start order follows the declared dependencies, whatever order modules were added in;
 * among modules whose dependencies are met, the first added goes first. */
static void test_dependencies_order_the_start(void **state)
{
    struct fixture *f = *state;
    vv_node_add_module(&f->node, &c);
    vv_node_add_module(&f->node, &d);
    vv_node_add_module(&f->node, &b);
    vv_node_add_module(&f->node, &a);
    assert_int_equal(vv_node_start(&f->node), 0);
    vv_node_stop(&f->node);
    assert_string_equal(trace, "init:b init:a init:c init:d start:b start:a start:c start:d "
                               "stop:d stop:c stop:a stop:b");
    assert_string_equal(f->node.modules[0]->name, "b");
    assert_int_equal(vv_node_module_state(&f->node, &c), VV_MODULE_STOPPED);
}

/* A dependency the program lacks, or a cycle, is a clear start-up error before any module
 * initialises. */
static void test_missing_or_circular_dependency_refuses_to_start(void **state)
{
    struct fixture *f = *state;
    vv_node_add_module(&f->node, &a);
    vv_node_add_module(&f->node, &orphan);
    assert_int_equal(vv_node_start(&f->node), VV_ENODE_MODULE_DEPS);
    assert_string_equal(trace, "");

    struct fixture g = {0};
    memcpy(&g, f, sizeof(g));
    g.node.n_modules = 0;
    vv_node_add_module(&g.node, &x);
    vv_node_add_module(&g.node, &a);
    vv_node_add_module(&g.node, &y);
    assert_int_equal(vv_node_start(&g.node), VV_ENODE_MODULE_DEPS);
    assert_string_equal(trace, "");
    assert_int_equal(vv_node_module_state(&g.node, &a), VV_MODULE_NEW);
}

static void test_module_data_slots(void **state)
{
    struct fixture *f = *state;
    int mine = 7;
    vv_node_add_module(&f->node, &a);
    assert_null(vv_node_module_data(&f->node, &a));
    assert_null(vv_node_module_data(&f->node, &b)); /* not added: no slot, no crash */
    vv_node_set_module_data(&f->node, &a, &mine);
    assert_ptr_equal(vv_node_module_data(&f->node, &a), &mine);
    assert_int_equal(vv_node_module_state(&f->node, &b), VV_MODULE_NEW);
}

static void test_reload_applies_log_level_and_keeps_config_on_bad_file(void **state)
{
    struct fixture *f = *state;
    write_conf(f, "debug");
    char *msg = NULL;
    assert_int_equal(vv_node_request_reload(&f->node, &msg), 0);
    assert_string_equal(msg, "log.level info -> debug");
    vv_free(msg);
    assert_int_equal(vv_log_get_level(), VV_LOG_DEBUG);
    assert_int_equal(vv_log_settings(&f->node.config)->level, VV_LOG_DEBUG);

    FILE *fp = fopen(f->conf, "w");
    fprintf(fp, "[log]\nlevel = shout\n");
    fclose(fp);
    assert_int_equal(vv_node_request_reload(&f->node, &msg), VV_ECONFIG_VALUE);
    assert_non_null(strstr(msg, "vivimd.conf:2: [log] level"));
    vv_free(msg);
    assert_int_equal(vv_log_get_level(), VV_LOG_DEBUG);

    fp = fopen(f->conf, "w");
    fprintf(fp, "[node]\nstate_dir = %s\n[log]\nlevel = debug\n[rpc]\nsocket = /tmp/other.sock\n",
            f->dir);
    fclose(fp);
    assert_int_equal(vv_node_request_reload(&f->node, &msg), 0);
    assert_string_equal(msg, "changed but needs a restart: rpc.socket");
    vv_free(msg);
    assert_string_equal(vv_rpc_settings(&f->node.config)->socket, "/run/vivim/vivimd.sock");
}

static void stop_cb(struct vv_node *n)
{
    note("stop-requested", n->identity.node_id_hex[0] ? "node" : "?");
}

static void test_stop_request_fires_once_and_blocks_reload(void **state)
{
    struct fixture *f = *state;
    f->node.on_stop_request = stop_cb;
    vv_node_request_stop(&f->node);
    vv_node_request_stop(&f->node);
    assert_string_equal(trace, "stop-requested:node");
    char *msg;
    assert_int_equal(vv_node_request_reload(&f->node, &msg), VV_ENODE_SHUTTING_DOWN);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_ERROR); /* expected failures below log errors */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_modules_start_in_order_and_stop_in_reverse, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_start_stops_what_already_started, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dependencies_order_the_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_or_circular_dependency_refuses_to_start, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_module_data_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_applies_log_level_and_keeps_config_on_bad_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_request_fires_once_and_blocks_reload, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
