/*
 * Registry benchmark on both backends, side by side: register N records (default
 * 1,000,000) through the asynchronous API with up to 256 requests in flight (on PostgreSQL
 * that is pipeline mode), then findById and findByOwner latency (p50/p99 over 10,000 random
 * calls, one at a time) and a findExpired sweep. PostgreSQL is a throwaway local server on a
 * Unix socket, started by the benchmark. Usage: bench_registry [N] [sqlite|pg|both].
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vivim/common.h"
#include "vivim/log.h"
#include "vivim/registry.h"
#include "../unit/registry/pg_harness.h"

static const char *backend_name = "sqlite";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct ctx {
    uv_loop_t loop;
    struct vv_registry *reg;
    uint32_t inflight, done, failed;
    bool flag;
    json_t *last;
};

static void on_any(int status, json_t *result, const char *msg, void *arg)
{
    struct ctx *c = arg;
    (void)msg;
    c->inflight--;
    c->done++;
    c->failed += status != 0;
    c->flag = true;
    json_decref(c->last);
    c->last = json_incref(result);
}

static void on_open(int status, const char *msg, void *arg)
{
    struct ctx *c = arg;
    if (status != 0) {
        fprintf(stderr, "open: %s\n", msg);
        exit(1);
    }
    c->flag = true;
}

static json_t *record(uint32_t i)
{
    char id[32], owner[48], content[65];
    uint8_t h[32];
    snprintf(id, sizeof(id), "r%09u", i);
    snprintf(owner, sizeof(owner), "did:key:owner%u", i % 10000); /* 100 records per owner */
    crypto_hash_sha256(h, (const uint8_t *)id, strlen(id));
    vv_hex_encode(h, 32, content);
    json_t *in =
        json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:{s:s, s:[s]}, s:{s:I}}", "id", id, "contentId",
                  content, "ownerDid", owner, "type", "acu", "size", 4096, "hash", content,
                  "audience", "type", "circle", "targets", i % 2 ? "c1" : "c2", "schedule",
                  "expiresAt", (json_int_t)(i % 100 == 0 ? 1000 : 4000000000000LL));
    json_t *out;
    char err[256];
    if (vv_record_validate(in, 1, id, &out, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    json_decref(in);
    return out;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void latency(struct ctx *c, const char *what, uint32_t n, int kind)
{
    double *t = malloc(sizeof(double) * 10000);
    for (int k = 0; k < 10000; k++) {
        char key[48];
        uint32_t i = (uint32_t)randombytes_uniform(n);
        double t0 = now_s();
        c->flag = false;
        c->inflight++;
        if (kind == 0) {
            snprintf(key, sizeof(key), "r%09u", i);
            vv_registry_find_by_id(c->reg, key, on_any, c);
        } else {
            snprintf(key, sizeof(key), "did:key:owner%u", i % 10000);
            vv_registry_find_by_owner(c->reg, key, NULL, 100, on_any, c);
        }
        while (!c->flag)
            uv_run(&c->loop, UV_RUN_ONCE);
        t[k] = (now_s() - t0) * 1000;
    }
    qsort(t, 10000, sizeof(double), cmp_double);
    printf("bench_registry %s: %s at %u records: p50 %.3f ms, p99 %.3f ms\n", backend_name, what, n,
           t[5000], t[9900]);
    free(t);
}

static int run(uint32_t n, bool pg_backend, const char *pg_url)
{
    char dir[] = "/tmp/vv-bench-registry-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[128];
    snprintf(path, sizeof(path), "%s/registry.db", dir);
    struct ctx c = {0};
    uv_loop_init(&c.loop);
    struct vv_registry_config cfg = {
        .sqlite_path = path, .pg_url = pg_url, .max_queue = 100000, .request_timeout_ms = 600000};
    backend_name = pg_backend ? "postgresql" : "sqlite";
    if (pg_backend)
        vv_registry_open_pg(&c.loop, &cfg, on_open, &c, &c.reg);
    else
        vv_registry_open_sqlite(&c.loop, &cfg, on_open, &c, &c.reg);
    while (!c.flag)
        uv_run(&c.loop, UV_RUN_ONCE);

    double t0 = now_s();
    const uint32_t depth = 256;
    for (uint32_t i = 0; i < n; i++) {
        json_t *r = record(i);
        c.inflight++;
        vv_registry_register(c.reg, r, on_any, &c);
        json_decref(r);
        while (c.inflight >= depth)
            uv_run(&c.loop, UV_RUN_ONCE);
    }
    while (c.inflight > 0)
        uv_run(&c.loop, UV_RUN_ONCE);
    double t1 = now_s();
    printf("bench_registry %s: registered %u records in %.1f s: %.0f records/s (%u failed, %u in "
           "flight; %s)\n",
           backend_name, n, t1 - t0, n / (t1 - t0), c.failed, depth,
           pg_backend ? "pipelined, up to 64 per transaction"
                      : "grouped, up to 256 per transaction");

    latency(&c, "findById", n, 0);
    latency(&c, "findByOwner (100 per page)", n, 1);

    double s0 = now_s();
    char *cursor = NULL;
    uint32_t expired = 0;
    do {
        c.flag = false;
        c.inflight++;
        vv_registry_find_expired(c.reg, 2000, cursor, 1000, on_any, &c);
        while (!c.flag)
            uv_run(&c.loop, UV_RUN_ONCE);
        expired += (uint32_t)json_array_size(json_object_get(c.last, "records"));
        free(cursor);
        json_t *next = json_object_get(c.last, "nextCursor");
        cursor = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
    } while (cursor != NULL);
    printf("bench_registry %s: findExpired sweep of %u expired records in %.1f ms\n", backend_name,
           expired, (now_s() - s0) * 1000);
    json_decref(c.last);
    c.last = NULL;
    vv_registry_close(c.reg, NULL, NULL);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    uv_loop_close(&c.loop);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_WARN);
    uint32_t n = argc > 1 ? (uint32_t)atoi(argv[1]) : 1000000;
    const char *which = argc > 2 ? argv[2] : "both";
    int rc = 0;
    if (strcmp(which, "pg") != 0)
        rc |= run(n, false, NULL);
    if (strcmp(which, "sqlite") != 0) {
        struct pg_harness pg;
        if (pg_harness_start(&pg) != 0) {
            fprintf(stderr, "bench_registry: could not start PostgreSQL\n");
            return 1;
        }
        rc |= run(n, true, pg.url);
        pg_harness_stop(&pg);
    }
    return rc;
}
