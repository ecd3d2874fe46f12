/* Configuration loading: defaults, every kind of error with its line, reload round trip. */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vivim/config.h"
#include "vivim/connmgr.h"
#include "vivim/crdt_sync.h"
#include "vivim/monitor.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"
#include "vivim/userdb.h"

static int parse(const char *text, struct vv_config *cfg, char *err)
{
    return vv_config_parse("test.conf", text, strlen(text), vv_node_config_schema(), cfg, err);
}

static void test_empty_file_gives_documented_defaults(void **state)
{
    (void)state;
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse("", &cfg, err), 0);
    assert_string_equal(vv_node_settings(&cfg)->state_dir, "/var/lib/vivim");
    assert_string_equal(vv_monitor_settings(&cfg)->listen, "127.0.0.1:9464");
    assert_string_equal(vv_registry_settings(&cfg)->url, "");
    assert_int_equal(vv_log_settings(&cfg)->level, VV_LOG_INFO);
    assert_int_equal(vv_rpc_settings(&cfg)->max_clients, 64);
    assert_false(vv_net_settings(&cfg)->mdns);
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
    assert_string_equal(vv_node_settings(&cfg)->state_dir, "/tmp/x");
    assert_int_equal(vv_node_settings(&cfg)->type, VV_NODE_INDEXER);
    assert_int_equal(vv_log_settings(&cfg)->level, VV_LOG_DEBUG);
    assert_int_equal(vv_rpc_settings(&cfg)->max_clients, 3);
    assert_string_equal(vv_monitor_settings(&cfg)->listen, "[::1]:0");
    assert_true(vv_net_settings(&cfg)->mdns);
    assert_string_equal(vv_registry_settings(&cfg)->url, "postgresql://vivim@localhost/vivim");
    assert_true((vv_registry_settings(&cfg)->synchronous == VV_CONFIG_SYNC_FULL));
    assert_false((vv_userdb_settings(&cfg)->synchronous == VV_CONFIG_SYNC_FULL));
    assert_int_equal(vv_userdb_settings(&cfg)->max_open, 500);
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
         "test.conf:2: [net] mdns: expected true, false, yes, no, on, off, 1 or 0"},
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
    off = sprintf(ok, "[registry]\nurl = postgresql://h/");
    memset(ok + off, 'y', 4000);
    strcpy(ok + off + 4000, "\n[log]\nlevel = warn\n");
    assert_int_equal(parse(ok, &cfg, err), 0);
    assert_int_equal(strlen(vv_registry_settings(&cfg)->url), 4000 + strlen("postgresql://h/"));
    assert_int_equal(vv_log_settings(&cfg)->level, VV_LOG_WARN);
    vv_config_free(&cfg);
    vv_free(ok);

    const char nul[] = "[node]\nregion = a\0b\n";
    assert_int_equal(
        vv_config_parse("test.conf", nul, sizeof(nul) - 1, vv_node_config_schema(), &cfg, err),
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
    assert_int_equal(vv_config_load(path, vv_node_config_schema(), &back, err), 0);
    assert_int_equal(vv_log_settings(&back)->level, VV_LOG_WARN);
    assert_string_equal(vv_net_settings(&back)->bootstrap, "h:1");
    assert_true(vv_net_settings(&back)->mdns);
    assert_string_equal(vv_rpc_settings(&back)->socket, vv_rpc_settings(&cfg)->socket);
    unlink(path);
    vv_config_free(&cfg);
    vv_config_free(&back);
}

static void test_missing_file_is_a_clear_error(void **state)
{
    (void)state;
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(vv_config_load("/nonexistent/vivimd.conf", vv_node_config_schema(), &cfg, err),
                     VV_ECONFIG_OPEN);
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
    assert_int_equal(vv_net_settings(&cfg)->low_water, 100);
    assert_int_equal(vv_net_settings(&cfg)->high_water, 200);
    assert_int_equal(vv_net_settings(&cfg)->keepalive_ms, 1000);
    assert_string_equal(vv_net_settings(&cfg)->advertise, "10.0.0.1:4747");
    vv_config_free(&cfg);
    /* The error names a line that sets one of the keys involved: the later one. */
    assert_int_equal(parse("[net]\nlow_water = 10\nhigh_water = 5\n", &cfg, err), VV_ECONFIG_RANGE);
    assert_string_equal(err, "test.conf:3: [net] needs low_water (10) <= high_water (5) <= "
                             "max_connections (1024)");
    assert_int_equal(parse("[net]\nhigh_water = 2000\n", &cfg, err), VV_ECONFIG_RANGE);
    assert_string_equal(err, "test.conf:2: [net] needs low_water (32) <= high_water (2000) <= "
                             "max_connections (1024)");
    assert_int_equal(parse("[net]\nmax_connections = 10\n\n[log]\nlevel = warn\n", &cfg, err),
                     VV_ECONFIG_RANGE);
    assert_string_equal(err, "test.conf:2: [net] needs low_water (32) <= high_water (64) <= "
                             "max_connections (10)");
    assert_int_equal(
        parse("[net]\nhigh_water = 5\n[node]\ntype = relay\n[net]\nlow_water = 6\n", &cfg, err),
        VV_ECONFIG_RANGE);
    assert_non_null(strstr(err, "test.conf:6: "));
    assert_int_equal(parse("[net]\nhandshake_timeout_ms = 5\n", &cfg, err), VV_ECONFIG_RANGE);
    assert_int_equal(parse("[net]\nadvertise = nowhere\n", &cfg, err), VV_ECONFIG_VALUE);
}

/* What start-up refuses, the loader refuses first, naming the line (issue 9, item 5). */
static void test_values_startup_refuses_are_refused_at_load(void **state)
{
    (void)state;
    char long_region[41], long_sock[120], long_host[140], long_boot[200], long_dir[4000];
    memset(long_region, 'r', 40);
    long_region[40] = '\0';
    snprintf(long_sock, sizeof(long_sock), "/%0107d", 0); /* 108 bytes: over sun_path */
    snprintf(long_host, sizeof(long_host), "%0120d.example:4747", 0);
    snprintf(long_boot, sizeof(long_boot), "10.0.0.1:1, %s", long_host);
    long_dir[0] = '/';
    memset(long_dir + 1, 'd', sizeof(long_dir) - 2);
    long_dir[sizeof(long_dir) - 1] = '\0';
    struct {
        const char *section, *key, *value;
        int rc;
        const char *why;
    } cases[] = {
        {"metrics", "listen", "metrics.example.org:9464", VV_ECONFIG_VALUE,
         "[metrics] listen: expected an IP address and port (127.0.0.1:9464, [::1]:9464, "
         "localhost:9464); host names are not resolved"},
        {"net", "listen", "peers.example.org:4747", VV_ECONFIG_VALUE,
         "[net] listen: expected an IP address and port (0.0.0.0:4747, [::]:4747); host names "
         "are not resolved"},
        {"net", "listen", "localhost:4747", VV_ECONFIG_VALUE,
         "[net] listen: expected an IP address and port (0.0.0.0:4747, [::]:4747); host names "
         "are not resolved"},
        {"rpc", "socket", long_sock, VV_ECONFIG_RANGE,
         "[rpc] socket: 108 bytes; a Unix socket path holds at most 107"},
        {"node", "region", long_region, VV_ECONFIG_RANGE,
         "[node] region: 40 bytes; peers accept at most 31"},
        {"node", "region", "eu\twest", VV_ECONFIG_VALUE,
         "[node] region: peers accept only UTF-8 text without control characters"},
        {"node", "region", "caf\xc3", VV_ECONFIG_VALUE,
         "[node] region: peers accept only UTF-8 text without control characters"},
        {"net", "advertise", long_host, VV_ECONFIG_RANGE,
         "[net] advertise: 133 bytes; peers accept at most 127"},
        {"net", "bootstrap", long_boot, VV_ECONFIG_RANGE,
         "[net] bootstrap: bootstrap peer '0000000000000000000000000000000000000000000000000000"
         "0000000000000000000000000000': longer than 127 bytes"},
        {"registry", "url", "postgresql://vivim@/vivim?nosuchoption=1", VV_ECONFIG_VALUE,
         "[registry] url: invalid URI query parameter: \"nosuchoption\""},
        {"node", "state_dir", long_dir, VV_ECONFIG_RANGE,
         "[node] state_dir: 3999 bytes; at most 3967, so that every file under it has a path "
         "shorter than PATH_MAX"},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        size_t len = strlen(cases[i].value) + 64;
        char *text = vv_xmalloc(len);
        /* A comment first, so that the line named is not simply the second. */
        snprintf(text, len, "; x\n[%s]\n%s = %s\n", cases[i].section, cases[i].key, cases[i].value);
        char want[VV_CONFIG_ERR_BYTES];
        snprintf(want, sizeof(want), "test.conf:3: %s", cases[i].why);
        struct vv_config cfg;
        char err[VV_CONFIG_ERR_BYTES];
        int rc = parse(text, &cfg, err);
        if (rc != cases[i].rc || strcmp(err, want) != 0)
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, rc, err, cases[i].rc, want);
        vv_free(text);
    }
}

/* The limits themselves are accepted: what start-up accepts, the loader accepts. */
static void test_values_at_the_startup_limits_are_accepted(void **state)
{
    (void)state;
    char region[32], sock[108], adv[128];
    memset(region, 'r', 31);
    region[31] = '\0';
    snprintf(sock, sizeof(sock), "/%0106d", 0);
    snprintf(adv, sizeof(adv), "%0119d.ex:4747", 0);
    assert_int_equal(strlen(sock), 107);
    assert_int_equal(strlen(adv), 127);
    char text[1024];
    snprintf(text, sizeof(text),
             "[node]\nregion = %s\n[rpc]\nsocket = %s\n[metrics]\nlisten = localhost:0\n"
             "[net]\nlisten = [::]:4747\nadvertise = %s\nbootstrap = %s\n"
             "[registry]\nurl = postgresql://vivim@/vivim?host=/run/postgresql\n",
             region, sock, adv, adv);
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    assert_int_equal(parse(text, &cfg, err), 0);
    assert_string_equal(vv_node_settings(&cfg)->region, region);
    vv_config_free(&cfg);
    assert_int_equal(
        parse("[node]\nregion = Zürich-1\n[metrics]\nlisten = [::1]:9464\n", &cfg, err), 0);
    vv_config_free(&cfg);
    assert_int_equal(parse("[metrics]\nlisten =\n[net]\nlisten = 10.1.2.3:0\n", &cfg, err), 0);
    vv_config_free(&cfg);
}

/* Booleans take exactly the spellings config/vivimd.conf documents. */
static void test_booleans_take_the_documented_spellings(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    struct vv_config cfg;
    char err[VV_CONFIG_ERR_BYTES];
    char text[128];
    for (size_t i = 0; i < 4; i++) {
        snprintf(text, sizeof(text), "[net]\nmdns = %s\n[crdt]\nauto_join = %s\n", yes[i], no[i]);
        assert_int_equal(parse(text, &cfg, err), 0);
        assert_true(vv_net_settings(&cfg)->mdns);
        assert_false(vv_crdt_settings(&cfg)->auto_join);
        vv_config_free(&cfg);
    }
    assert_int_equal(parse("[crdt]\nauto_join = enabled\n", &cfg, err), VV_ECONFIG_VALUE);
    assert_string_equal(err,
                        "test.conf:2: [crdt] auto_join: expected true, false, yes, no, on, off, "
                        "1 or 0");
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
    assert_int_equal(vv_monitor_settings(&cfg)->header_timeout_ms, 250);
    assert_int_equal(vv_monitor_settings(&cfg)->pause_queue_bytes, 4096);
    assert_int_equal(vv_monitor_settings(&cfg)->max_queue_bytes, 65536);
    assert_int_equal(vv_monitor_settings(&cfg)->max_connections, 2);
    vv_config_free(&cfg);
    assert_int_equal(parse("[metrics]\npause_queue_bytes = 2097152\n", &cfg, err),
                     VV_ECONFIG_RANGE);
    assert_non_null(strstr(err, "pause_queue_bytes (2097152) < max_queue_bytes (1048576)"));
    assert_non_null(strstr(err, "test.conf:2:")); /* the line of the key, not line 0 */
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
        cmocka_unit_test(test_values_startup_refuses_are_refused_at_load),
        cmocka_unit_test(test_values_at_the_startup_limits_are_accepted),
        cmocka_unit_test(test_booleans_take_the_documented_spellings),
        cmocka_unit_test(test_metrics_limits_load_and_pause_must_be_below_max),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
