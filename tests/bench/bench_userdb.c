/*
 * Per-user databases: put and get latency (p50/p99) with 10,000 users and a cache of 1,000
 * open handles, requests one at a time from random users (so most miss the cache and open
 * a database), then again from a hot set of 500 users that stays in the cache.
 * Usage: bench_userdb [users] [cache].
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vivim/log.h"
#include "vivim/userdb.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct ctx {
    uv_loop_t loop;
    struct vv_userdb *u;
    bool done;
    int failed;
};

static void on_done(int status, json_t *result, const char *msg, void *arg)
{
    (void)result;
    (void)msg;
    struct ctx *c = arg;
    c->done = true;
    c->failed += status != 0;
}

static void one(struct ctx *c, int put, uint32_t user, double *out_ms)
{
    char did[48], cid[65];
    uint8_t blob[4096], h[32];
    snprintf(did, sizeof(did), "did:key:bench%u", user);
    memset(blob, (int)user, sizeof(blob));
    crypto_hash_sha256(h, blob, sizeof(blob));
    for (int i = 0; i < 32; i++)
        snprintf(cid + 2 * i, 3, "%02x", h[i]);
    c->done = false;
    double t0 = now_s();
    if (put)
        vv_userdb_put(c->u, did, cid, blob, sizeof(blob), NULL, 1, on_done, c);
    else
        vv_userdb_get(c->u, did, cid, on_done, c);
    while (!c->done)
        uv_run(&c->loop, UV_RUN_ONCE);
    *out_ms = (now_s() - t0) * 1000;
}

static void report(const char *what, double *t, int n)
{
    qsort(t, (size_t)n, sizeof(double), cmp);
    printf("bench_userdb: %s: p50 %.3f ms, p99 %.3f ms (%d calls)\n", what, t[n / 2],
           t[n * 99 / 100], n);
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_WARN);
    uint32_t users = argc > 1 ? (uint32_t)atoi(argv[1]) : 10000;
    uint32_t cache = argc > 2 ? (uint32_t)atoi(argv[2]) : 1000;
    char dir[] = "/tmp/vv-bench-userdb-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    struct ctx c = {0};
    uv_loop_init(&c.loop);
    struct vv_userdb_config cfg = {.dir = dir, .max_open = cache};
    if (vv_userdb_open(&c.loop, &cfg, &c.u) != 0)
        return 1;
    double *t = malloc(sizeof(double) * users);
    for (uint32_t i = 0; i < users; i++)
        one(&c, 1, i, &t[i]);
    report("put, every user once (creates its database)", t, (int)users);
    for (uint32_t i = 0; i < users; i++)
        one(&c, 0, randombytes_uniform(users), &t[i]);
    report("get, random users (mostly cache misses)", t, (int)users);
    for (uint32_t i = 0; i < users; i++)
        one(&c, 0, randombytes_uniform(cache / 2), &t[i]);
    report("get, hot users (cache hits)", t, (int)users);
    for (uint32_t i = 0; i < users; i++)
        one(&c, 1, randombytes_uniform(cache / 2), &t[i]);
    report("put, hot users (idempotent re-put)", t, (int)users);
    printf("bench_userdb: %u users, cache of %u handles, %u open at the end, %d failures\n", users,
           cache, vv_userdb_open_count(c.u), c.failed);
    free(t);
    vv_userdb_close(c.u, NULL, NULL);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    uv_loop_close(&c.loop);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 && c.failed == 0 ? 0 : 1;
}
