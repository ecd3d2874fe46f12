/*
 * S3-FIFO vs LRU on a seeded synthetic trace: requests to N objects drawn from a Zipf
 * distribution, interleaved with one-hit wonders (keys requested once and never again), all
 * objects of one size. Shared by tests/unit/storage/test_s3fifo.c (which asserts the margin)
 * and tests/bench/bench_s3fifo.c (which prints the figures for docs/benchmarks.md).
 * Header-only: the functions are static.
 */
#ifndef VV_S3FIFO_SIM_H
#define VV_S3FIFO_SIM_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/s3fifo.h"

#define SIM_OBJECT_BYTES 4096

struct sim_trace {
    uint64_t *ids; /* ids < objects: Zipf; ids >= objects: one-hit wonders */
    size_t n;
    uint64_t distinct; /* objects requested at least once */
    uint64_t max_id;
};

static uint64_t sim_rng(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* requests draws; a fraction ohw of them one-hit wonders; Zipf exponent alpha over objects. */
static void sim_trace_make(struct sim_trace *t, uint64_t seed, size_t objects, size_t requests,
                           double alpha, double ohw)
{
    double *cdf = malloc(objects * sizeof(*cdf));
    double sum = 0;
    for (size_t i = 0; i < objects; i++)
        cdf[i] = (sum += 1.0 / pow((double)(i + 1), alpha));
    for (size_t i = 0; i < objects; i++)
        cdf[i] /= sum;
    t->ids = malloc(requests * sizeof(*t->ids));
    t->n = requests;
    uint8_t *seen = calloc(objects, 1);
    uint64_t x = seed, next_ohw = objects;
    t->distinct = 0;
    for (size_t r = 0; r < requests; r++) {
        double u = (double)(sim_rng(&x) >> 11) / 9007199254740992.0;
        if (u < ohw) {
            t->ids[r] = next_ohw++;
            t->distinct++;
            continue;
        }
        double v = (double)(sim_rng(&x) >> 11) / 9007199254740992.0;
        size_t lo = 0, hi = objects - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (cdf[mid] < v)
                lo = mid + 1;
            else
                hi = mid;
        }
        /* Scatter ranks over ids so popularity does not follow insertion order. */
        uint64_t id = (lo * 2654435761u) % objects;
        t->ids[r] = id;
        if (!seen[id]) {
            seen[id] = 1;
            t->distinct++;
        }
    }
    t->max_id = next_ohw;
    free(seen);
    free(cdf);
}

static void sim_trace_free(struct sim_trace *t)
{
    free(t->ids);
}

static void sim_key(uint64_t id, uint8_t key[32])
{
    memset(key, 0, 32);
    memcpy(key, &id, sizeof(id));
}

static double sim_s3fifo(const struct sim_trace *t, uint64_t capacity_bytes)
{
    struct vv_s3fifo *c = vv_s3fifo_new(capacity_bytes, NULL, NULL);
    uint64_t hits = 0;
    uint8_t key[32];
    for (size_t r = 0; r < t->n; r++) {
        sim_key(t->ids[r], key);
        if (vv_s3fifo_get(c, key))
            hits++;
        else
            vv_s3fifo_insert(c, key, SIM_OBJECT_BYTES);
    }
    vv_s3fifo_free(c);
    return (double)hits / (double)t->n;
}

/* A textbook LRU over ids: intrusive list in arrays indexed by id. */
static double sim_lru(const struct sim_trace *t, uint64_t capacity_bytes)
{
    size_t m = t->max_id;
    int64_t *prev = malloc(m * sizeof(*prev)), *next = malloc(m * sizeof(*next));
    uint8_t *in = calloc(m, 1);
    int64_t head = -1, tail = -1;
    uint64_t used = 0, hits = 0;
    for (size_t r = 0; r < t->n; r++) {
        int64_t id = (int64_t)t->ids[r];
        if (in[id]) {
            hits++;
            if (head == id)
                continue;
            /* unlink */
            next[prev[id]] = next[id];
            if (next[id] >= 0)
                prev[next[id]] = prev[id];
            else
                tail = prev[id];
        } else {
            in[id] = 1;
            used += SIM_OBJECT_BYTES;
        }
        prev[id] = -1;
        next[id] = head;
        if (head >= 0)
            prev[head] = id;
        head = id;
        if (tail < 0)
            tail = id;
        while (used > capacity_bytes) {
            int64_t v = tail;
            tail = prev[v];
            if (tail >= 0)
                next[tail] = -1;
            else
                head = -1;
            in[v] = 0;
            used -= SIM_OBJECT_BYTES;
        }
    }
    free(prev);
    free(next);
    free(in);
    return (double)hits / (double)t->n;
}

#endif
