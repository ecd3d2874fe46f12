/* Configuration loading: defaults, every kind of error with its line, reload round trip. */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vivim/config.h"

static int parse(const char *text, struct vv_config *cfg, char *err)
{
    return vv_config_parse("test.conf", text, strlen(text), cfg, err);
}

static void test_empty_file_gives_documented_defaults(void **state)
{
    (void)state;
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse("", &cfg, err), 0);
    assert_string_equal(cfg.state_dir, "/var/lib/vivim");
    assert_string_equal(cfg.metrics_listen, "127.0.0.1:9464");
    assert_string_equal(cfg.registry_url, "");
    assert_int_equal(cfg.log_level, VV_LOG_INFO);
    assert_int_equal(cfg.rpc_max_clients, 64);
    assert_false(cfg.net_mdns);
    vv_config_free(&cfg);
}

static void test_valid_file_sets_every_kind_of_value(void **state)
{
    (void)state;
    const char *text = "; comment\n"
                       "# another\n"
                       "[node]\n"
                       "state_dir = /tmp/x\n"
                       "type = indexer\n"
                       "[log]\n"
                       "level = debug\n"
                       "[rpc]\n"
                       "socket = /tmp/x/s.sock\n"
                       "max_clients = 3\n"
                       "[metrics]\n"
                       "listen = [::1]:0\n"
                       "[net]\n"
                       "listen = 127.0.0.1:4000\n"
                       "bootstrap = 10.0.0.1:4747, "
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@"
                       "seed.example.org:4747\n"
                       "mdns = yes\n"
                       "[registry]\n"
                       "url = postgresql://vivim@localhost/vivim\n"
                       "synchronous = full\n"
                       "[userdb]\n"
                       "max_open = 500\n";
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse(text, &cfg, err), 0);
    assert_string_equal(cfg.state_dir, "/tmp/x");
    assert_string_equal(cfg.node_type, "indexer");
    assert_int_equal(cfg.log_level, VV_LOG_DEBUG);
    assert_int_equal(cfg.rpc_max_clients, 3);
    assert_string_equal(cfg.metrics_listen, "[::1]:0");
    assert_true(cfg.net_mdns);
    assert_string_equal(cfg.registry_url, "postgresql://vivim@localhost/vivim");
    assert_true(cfg.registry_full_sync);
    assert_false(cfg.userdb_full_sync);
    assert_int_equal(cfg.userdb_max_open, 500);
    assert_string_equal(cfg.path, "test.conf");
    vv_config_free(&cfg);
}

struct bad_case {
    const char *text;
    int rc;
    const char *msg; /* expected exactly, including file:line */
};

static void test_each_bad_file_names_its_line(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"[node]\nstate_dir = /x\n[bogus]\nkey = 1\n", VV_ECONFIG_UNKNOWN,
         "test.conf:3: unknown section [bogus]"},
        {"[bogus]\n", VV_ECONFIG_UNKNOWN, "test.conf:1: unknown section [bogus]"},
        {"[node]\n\nstate_dri = /x\n", VV_ECONFIG_UNKNOWN,
         "test.conf:3: unknown key 'state_dri' in section [node]"},
        {"[rpc]\nmax_clients = many\n", VV_ECONFIG_VALUE,
         "test.conf:2: [rpc] max_clients: expected a whole number from 1 to 4096"},
        {"[rpc]\nmax_clients = 0\n", VV_ECONFIG_RANGE,
         "test.conf:2: [rpc] max_clients: 0 is out of range (1 to 4096)"},
        {"[rpc]\nmax_clients = -1\n", VV_ECONFIG_VALUE,
         "test.conf:2: [rpc] max_clients: expected a whole number from 1 to 4096"},
        {"[rpc]\nmax_clients = 99999999999999999999999\n", VV_ECONFIG_RANGE,
         "test.conf:2: [rpc] max_clients: 99999999999999999999999 is out of range (1 to 4096)"},
        {"[log]\nlevel = loud\n", VV_ECONFIG_VALUE,
         "test.conf:2: [log] level: expected one of error, warn, notice, info, debug"},
        {"[metrics]\nlisten = localhost\n", VV_ECONFIG_VALUE,
         "test.conf:2: [metrics] listen: expected host:port or [ipv6]:port with a port from 0 "
         "to 65535"},
        {"[metrics]\nlisten = 1.2.3.4:65536\n", VV_ECONFIG_VALUE,
         "test.conf:2: [metrics] listen: expected host:port or [ipv6]:port with a port from 0 "
         "to 65535"},
        {"[net]\nlisten = [zz]:1\n", VV_ECONFIG_VALUE,
         "test.conf:2: [net] listen: expected host:port or [ipv6]:port with a port from 0 to "
         "65535"},
        {"[net]\nmdns = maybe\n", VV_ECONFIG_VALUE,
         "test.conf:2: [net] mdns: expected true or false"},
        {"[net]\nbootstrap = abc@1.2.3.4:5\n", VV_ECONFIG_VALUE,
         "test.conf:2: [net] bootstrap: bootstrap peer 'abc': node ID must be 64 hex digits"},
        {"[net]\nbootstrap = 1.2.3.4:0\n", VV_ECONFIG_VALUE,
         "test.conf:2: [net] bootstrap: bootstrap peer '1.2.3.4:0': expected host:port or "
         "nodeid@host:port"},
        {"[node]\ntype = laptop\n", VV_ECONFIG_VALUE,
         "test.conf:2: [node] type: expected one of bootstrap, relay, indexer, storage, edge, "
         "client, self_hosted"},
        {"[registry]\nurl = mysql://x\n", VV_ECONFIG_VALUE,
         "test.conf:2: [registry] url: expected empty (SQLite in the state directory) or a "
         "postgresql:// URL"},
        {"[node]\nstate_dir =\n", VV_ECONFIG_VALUE,
         "test.conf:2: [node] state_dir: expected a path"},
        {"[log]\nlevel = info\nlevel = debug\n", VV_ECONFIG_VALUE,
         "test.conf:3: [log] level is set twice"},
        {"state_dir = /x\n", VV_ECONFIG_SYNTAX,
         "test.conf:1: 'state_dir' is outside any [section]"},
        {"[registry]\nsynchronous = sometimes\n", VV_ECONFIG_VALUE,
         "test.conf:2: [registry] synchronous: expected normal or full"},
        {"[userdb]\nmax_open = -5\n", VV_ECONFIG_VALUE,
         "test.conf:2: [userdb] max_open: expected a whole number from 0 to 1000000"},
        {"[node]\njust some words\n", VV_ECONFIG_SYNTAX,
         "test.conf:2: syntax error (expected [section], key = value or a comment)"},
        {"[node\n", VV_ECONFIG_SYNTAX,
         "test.conf:1: syntax error (expected [section], key = value or a comment)"},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        struct vv_config cfg;
        char err[VV_CONFIG_ERR_BYTES];
        int rc = parse(cases[i].text, &cfg, err);
        if (rc != cases[i].rc || strcmp(err, cases[i].msg) != 0)
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, rc, err, cases[i].rc, cases[i].msg);
    }
}

static void test_long_line_and_nul_byte_are_reported_not_split(void **state)
{
    (void)state;
    size_t n = 5000;
    char *text = vv_xmalloc(n + 64);
    int off = sprintf(text, "[node]\nregion = ");
    memset(text + off, 'x', n);
    strcpy(text + off + n, "\n");
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse(text, &cfg, err), VV_ECONFIG_SYNTAX);
    assert_string_equal(err, "test.conf:2: line longer than 4096 bytes");
    vv_free(text);

    /* A value close to the limit is kept whole. */
    char *ok = vv_xmalloc(4200);
    off = sprintf(ok, "[node]\nregion = ");
    memset(ok + off, 'y', 4000);
    strcpy(ok + off + 4000, "\n[log]\nlevel = warn\n");
    assert_int_equal(parse(ok, &cfg, err), 0);
    assert_int_equal(strlen(cfg.region), 4000);
    assert_int_equal(cfg.log_level, VV_LOG_WARN);
    vv_config_free(&cfg);
    vv_free(ok);

    const char nul[] = "[node]\nregion = a\0b\n";
    assert_int_equal(vv_config_parse("test.conf", nul, sizeof(nul) - 1, &cfg, err),
                     VV_ECONFIG_SYNTAX);
    assert_string_equal(err, "test.conf:2: NUL byte in the file");
}

static void test_printed_config_loads_back_identically(void **state)
{
    (void)state;
    struct vv_config cfg, back;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse("[log]\nlevel = warn\n[net]\nbootstrap = h:1\nmdns = on\n", &cfg, err),
                     0);
    char path[] = "/tmp/vv-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    vv_config_print(&cfg, f);
    fclose(f);
    assert_int_equal(vv_config_load(path, &back, err), 0);
    assert_int_equal(back.log_level, VV_LOG_WARN);
    assert_string_equal(back.net_bootstrap, "h:1");
    assert_true(back.net_mdns);
    assert_string_equal(back.rpc_socket, cfg.rpc_socket);
    unlink(path);
    vv_config_free(&cfg);
    vv_config_free(&back);
}

static void test_missing_file_is_a_clear_error(void **state)
{
    (void)state;
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(vv_config_load("/nonexistent/vivimd.conf", &cfg, err), VV_ECONFIG_OPEN);
    assert_string_equal(err, "/nonexistent/vivimd.conf: cannot open: No such file or directory");
}

static void test_net_limits_relation_checked_after_all_keys(void **state)
{
    (void)state;
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    /* Any order of keys: the relation low <= high <= max_connections is checked at the end. */
    assert_int_equal(parse("[net]\nhigh_water = 200\nmax_connections = 300\nlow_water = 100\n"
                           "keepalive_ms = 1000\nadvertise = 10.0.0.1:4747\n",
                           &cfg, err),
                     0);
    assert_int_equal(cfg.net_low_water, 100);
    assert_int_equal(cfg.net_high_water, 200);
    assert_int_equal(cfg.net_keepalive_ms, 1000);
    assert_string_equal(cfg.net_advertise, "10.0.0.1:4747");
    vv_config_free(&cfg);
    assert_int_equal(parse("[net]\nlow_water = 10\nhigh_water = 5\n", &cfg, err), VV_ECONFIG_RANGE);
    assert_non_null(strstr(err, "low_water (10) <= high_water (5)"));
    assert_int_equal(parse("[net]\nhigh_water = 2000\n", &cfg, err), VV_ECONFIG_RANGE);
    assert_non_null(strstr(err, "max_connections (1024)"));
    assert_int_equal(parse("[net]\nhandshake_timeout_ms = 5\n", &cfg, err), VV_ECONFIG_RANGE);
    assert_int_equal(parse("[net]\nadvertise = nowhere\n", &cfg, err), VV_ECONFIG_VALUE);
}

static void test_metrics_limits_load_and_pause_must_be_below_max(void **state)
{
    (void)state;
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse("[metrics]\nmax_queue_bytes = 65536\nheader_timeout_ms = 250\n"
                           "pause_queue_bytes = 4096\nmax_connections = 2\n",
                           &cfg, err),
                     0);
    assert_int_equal(cfg.metrics_header_timeout_ms, 250);
    assert_int_equal(cfg.metrics_pause_queue_bytes, 4096);
    assert_int_equal(cfg.metrics_max_queue_bytes, 65536);
    assert_int_equal(cfg.metrics_max_connections, 2);
    vv_config_free(&cfg);
    assert_int_equal(parse("[metrics]\npause_queue_bytes = 2097152\n", &cfg, err),
                     VV_ECONFIG_RANGE);
    assert_non_null(strstr(err, "pause_queue_bytes (2097152) < max_queue_bytes (1048576)"));
    assert_int_equal(parse("[metrics]\nmax_connections = 1\n", &cfg, err), VV_ECONFIG_RANGE);
}

static void test_split_hostport(void **state)
{
    (void)state;
    char host[64];
    uint16_t port;
    assert_int_equal(vv_config_split_hostport("[::1]:9464", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9464);
    assert_int_equal(vv_config_split_hostport("node-1.example:80", host, sizeof(host), &port), 0);
    assert_string_equal(host, "node-1.example");
    assert_int_equal(vv_config_split_hostport("::1:80", host, sizeof(host), &port), VV_EINVAL);
    assert_int_equal(vv_config_split_hostport("h:", host, sizeof(host), &port), VV_EINVAL);
    assert_int_equal(vv_config_split_hostport(":80", host, sizeof(host), &port), VV_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_file_gives_documented_defaults),
        cmocka_unit_test(test_valid_file_sets_every_kind_of_value),
        cmocka_unit_test(test_each_bad_file_names_its_line),
        cmocka_unit_test(test_long_line_and_nul_byte_are_reported_not_split),
        cmocka_unit_test(test_printed_config_loads_back_identically),
        cmocka_unit_test(test_missing_file_is_a_clear_error),
        cmocka_unit_test(test_split_hostport),
        cmocka_unit_test(test_net_limits_relation_checked_after_all_keys),
        cmocka_unit_test(test_metrics_limits_load_and_pause_must_be_below_max),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
