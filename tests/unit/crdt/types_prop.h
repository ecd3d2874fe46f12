/*
 * A seeded convergence harness shared by the CRDT type tests: R replicas make random local
 * operations, each producing an update; between operations replicas apply random earlier
 * updates (so operations are concurrent with partly synced states); at the end every replica
 * applies every update in its own random order, with duplicates, and the full state of one
 * replica is applied to the others. All must end with the same encoding and the same JSON.
 * Include after vv_test.h. A failure prints the seed, and the same seed replays exactly.
 */
#ifndef VV_TYPES_PROP_H
#define VV_TYPES_PROP_H

#include <stdio.h>
#include <string.h>

#include "vivim/crdt.h"

/* splitmix64: small, seedable, the same sequence on every platform. */
static inline uint64_t prop_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t prop_below(uint64_t *s, uint64_t n)
{
    return prop_rand(s) % n;
}

struct prop_type {
    void *(*create)(void);
    void (*destroy)(void *obj);
    int (*apply)(void *obj, const uint8_t *buf, size_t len);
    int (*encode)(const void *obj, uint8_t **out, size_t *out_len);
    json_t *(*to_json)(const void *obj);
    /* One random local operation by replica index r (0-based) at logical time now_ms;
     * returns the update (vv_xmalloc'd) or NULL when the operation produced none. */
    void (*random_op)(void *obj, unsigned r, uint64_t now_ms, uint64_t *rng, uint8_t **delta,
                      size_t *delta_len);
};

struct prop_update {
    uint8_t *buf;
    size_t len;
};

#define PROP_MAX_REPLICAS 5

static inline void prop_apply_ok(const struct prop_type *t, void *obj, const struct prop_update *u,
                                 uint64_t seed)
{
    int rc = t->apply(obj, u->buf, u->len);
    if (rc != 0)
        fprintf(stderr, "seed %llu: apply failed: %s\n", (unsigned long long)seed, vv_strerror(rc));
    assert_int_equal(rc, 0);
}

/* Runs one scenario; returns the number of updates made. */
static inline size_t prop_run(const struct prop_type *t, unsigned replicas, unsigned ops,
                              uint64_t seed)
{
    uint64_t rng = seed;
    void *rep[PROP_MAX_REPLICAS];
    assert_true(replicas <= PROP_MAX_REPLICAS);
    for (unsigned i = 0; i < replicas; i++)
        rep[i] = t->create();
    struct prop_update *ups = vv_xcalloc(ops, sizeof(*ups));
    size_t nup = 0;
    uint64_t now = 1700000000000ULL;
    for (unsigned k = 0; k < ops; k++) {
        unsigned r = (unsigned)prop_below(&rng, replicas);
        /* Sync a little first: a few random earlier updates, possibly again. */
        unsigned syncs = nup ? (unsigned)prop_below(&rng, 3) : 0;
        for (unsigned j = 0; j < syncs; j++)
            prop_apply_ok(t, rep[r], &ups[prop_below(&rng, nup)], seed);
        now += prop_below(&rng, 3); /* often the same millisecond: logical counters used */
        uint8_t *d = NULL;
        size_t dl = 0;
        t->random_op(rep[r], r, now, &rng, &d, &dl);
        if (d)
            ups[nup++] = (struct prop_update){d, dl};
    }
    /* Everyone gets everything, in its own order, some twice. */
    size_t *order = vv_xcalloc(2 * nup + 1, sizeof(*order));
    for (unsigned i = 0; i < replicas; i++) {
        size_t n = 0;
        for (size_t j = 0; j < nup; j++) {
            order[n++] = j;
            if (prop_below(&rng, 4) == 0)
                order[n++] = j;
        }
        for (size_t j = n; j > 1; j--) {
            size_t x = (size_t)prop_below(&rng, j), tmp = order[j - 1];
            order[j - 1] = order[x];
            order[x] = tmp;
        }
        for (size_t j = 0; j < n; j++)
            prop_apply_ok(t, rep[i], &ups[order[j]], seed);
    }
    /* A full state is an update too: applying one replica's state changes nothing now. */
    uint8_t *full;
    size_t full_len;
    assert_int_equal(t->encode(rep[0], &full, &full_len), 0);
    for (unsigned i = 1; i < replicas; i++)
        prop_apply_ok(t, rep[i], &(struct prop_update){full, full_len}, seed);
    json_t *want = t->to_json(rep[0]);
    for (unsigned i = 1; i < replicas; i++) {
        uint8_t *e;
        size_t el;
        assert_int_equal(t->encode(rep[i], &e, &el), 0);
        json_t *got = t->to_json(rep[i]);
        if (el != full_len || memcmp(e, full, el) != 0 || !json_equal(got, want))
            fprintf(stderr, "seed %llu: replica %u differs from replica 0\n",
                    (unsigned long long)seed, i);
        assert_int_equal(el, full_len);
        assert_memory_equal(e, full, el);
        assert_true(json_equal(got, want));
        json_decref(got);
        vv_free(e);
    }
    json_decref(want);
    vv_free(full);
    vv_free(order);
    for (size_t j = 0; j < nup; j++)
        vv_free(ups[j].buf);
    vv_free(ups);
    for (unsigned i = 0; i < replicas; i++)
        t->destroy(rep[i]);
    return nup;
}

/* A replica id for replica index r: large, as real ids (node id prefixes) are. */
static inline uint64_t prop_replica_id(unsigned r)
{
    return 0x8000000000000000ULL + (uint64_t)r * 0x0101010101ULL + 1;
}

#endif
