/* The metrics registry's Prometheus rendering, exactly, and its bounds. */
#include "vv_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vivim/metrics.h"

__attribute__((noinline)) static char *render(struct vv_metrics *m)
{
    char *out;
    size_t len;
    vv_metrics_render(m, &out, &len);
    assert_int_equal(strlen(out), len);
    return out;
}

static double fixed(void *d)
{
    return *(double *)d;
}

static void test_each_kind_renders_exactly(void **state)
{
    (void)state;
    struct vv_metrics *m = vv_metrics_new();
    struct vv_counter *c = vv_metrics_counter(m, "t_requests_total", "Requests.", NULL);
    vv_counter_add(c, 41);
    vv_counter_inc(c);
    struct vv_gauge *g = vv_metrics_gauge(m, "t_temperature_celsius", "Temp.", NULL);
    vv_gauge_set(g, 21.5);
    vv_gauge_add(g, -0.25);
    const double bounds[] = {0.1, 1};
    struct vv_histogram *h =
        vv_metrics_histogram(m, "t_latency_seconds", "Latency.", NULL, bounds, 2);
    vv_histogram_observe(h, 0.05);
    vv_histogram_observe(h, 0.1); /* le is inclusive */
    vv_histogram_observe(h, 0.5);
    vv_histogram_observe(h, 7);
    double inf = INFINITY;
    vv_metrics_gauge_fn(m, "t_inf", "Infinite.", fixed, &inf);
    char *out = render(m);
    const char *want =
        "# HELP vivimd_metrics_cardinality_overflow_total Label value tuples folded into "
        "\"other\" because a family had too many.\n"
        "# TYPE vivimd_metrics_cardinality_overflow_total counter\n"
        "vivimd_metrics_cardinality_overflow_total 0\n"
        "# HELP t_requests_total Requests.\n"
        "# TYPE t_requests_total counter\n"
        "t_requests_total 42\n"
        "# HELP t_temperature_celsius Temp.\n"
        "# TYPE t_temperature_celsius gauge\n"
        "t_temperature_celsius 21.25\n"
        "# HELP t_latency_seconds Latency.\n"
        "# TYPE t_latency_seconds histogram\n"
        "t_latency_seconds_bucket{le=\"0.1\"} 2\n"
        "t_latency_seconds_bucket{le=\"1\"} 3\n"
        "t_latency_seconds_bucket{le=\"+Inf\"} 4\n"
        "t_latency_seconds_sum 7.65\n"
        "t_latency_seconds_count 4\n"
        "# HELP t_inf Infinite.\n"
        "# TYPE t_inf gauge\n"
        "t_inf +Inf\n";
    assert_string_equal(out, want);
    vv_free(out);
    assert_int_equal(vv_counter_value(c), 42);
    assert_true(vv_gauge_value(g) == 21.25);
    vv_metrics_free(m);
}

static void test_labels_are_escaped_and_help_too(void **state)
{
    (void)state;
    struct vv_metrics *m = vv_metrics_new();
    struct vv_counter *c =
        vv_metrics_counter(m, "t_hits_total", "Hits \\ with\nnewline.", "path,code");
    const char *v1[] = {"/a\"b\\c\nd", "200"};
    vv_counter_inc(vv_counter_labels(c, v1));
    vv_counter_inc(vv_counter_labels(c, v1));
    const char *v2[] = {"/x", "404"};
    vv_counter_inc(vv_counter_labels(c, v2));
    char *out = render(m);
    assert_non_null(strstr(out, "# HELP t_hits_total Hits \\\\ with\\nnewline.\n"));
    assert_non_null(strstr(out, "t_hits_total{path=\"/a\\\"b\\\\c\\nd\",code=\"200\"} 2\n"));
    assert_non_null(strstr(out, "t_hits_total{path=\"/x\",code=\"404\"} 1\n"));
    vv_free(out);
    /* The same registration returns the same family. */
    assert_ptr_equal(vv_metrics_counter(m, "t_hits_total", "Hits.", "path,code"), c);
    vv_metrics_free(m);
}

static void test_cardinality_is_bounded_and_overflow_counted(void **state)
{
    (void)state;
    struct vv_metrics *m = vv_metrics_new();
    struct vv_gauge *g = vv_metrics_gauge(m, "t_peer_bytes", "Per peer.", "peer");
    for (int i = 0; i < VV_METRICS_MAX_CHILDREN + 50; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        const char *v[] = {name};
        vv_gauge_add(vv_gauge_labels(g, v), 1);
    }
    char *out = render(m);
    int lines = 0;
    for (size_t off = 0; strstr(out + off, "t_peer_bytes{") != NULL; lines++)
        off = (size_t)(strstr(out + off, "t_peer_bytes{") - out) + 1;
    assert_int_equal(lines, VV_METRICS_MAX_CHILDREN + 1);
    assert_non_null(strstr(out, "t_peer_bytes{peer=\"other\"} 50\n"));
    assert_non_null(strstr(out, "vivimd_metrics_cardinality_overflow_total 50\n"));
    vv_free(out);
    vv_metrics_free(m);
}

static void test_promtool_accepts_a_realistic_page(void **state)
{
    (void)state;
    if (access("/usr/bin/promtool", X_OK) != 0)
        skip();
    struct vv_metrics *m = vv_metrics_new();
    struct vv_counter *c =
        vv_metrics_counter(m, "vivimd_x_requests_total", "Requests.", "method,outcome");
    const char *v[] = {"node.status", "ok"};
    vv_counter_inc(vv_counter_labels(c, v));
    struct vv_histogram *h = vv_metrics_histogram(m, "vivimd_x_duration_seconds", "Durations.",
                                                  "method", vv_metrics_latency_seconds_buckets,
                                                  vv_metrics_latency_seconds_buckets_len);
    const char *hv[] = {"node.status"};
    vv_histogram_observe(vv_histogram_labels(h, hv), 0.003);
    double one = 1;
    vv_metrics_counter_fn(m, "process_cpu_seconds_total", "CPU.", fixed, &one);
    vv_metrics_gauge(m, "vivimd_x_clients", "Clients.", NULL);
    char *out = render(m);
    char path[] = "/tmp/vv-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, out, strlen(out)), (ssize_t)strlen(out));
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s.out 2>&1", path, path);
    assert_int_equal(system(cmd), 0);
    char outpath[64];
    snprintf(outpath, sizeof(outpath), "%s.out", path);
    FILE *f = fopen(outpath, "r");
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    if (n != 0)
        fail_msg("promtool warned: %s", buf);
    unlink(path);
    unlink(outpath);
    vv_free(out);
    vv_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_kind_renders_exactly),
        cmocka_unit_test(test_labels_are_escaped_and_help_too),
        cmocka_unit_test(test_cardinality_is_bounded_and_overflow_counted),
        cmocka_unit_test(test_promtool_accepts_a_realistic_page),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
