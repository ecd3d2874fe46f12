/*
 * Determinism, checked by every simulator test: a scenario is run twice with one seed and
 * both runs must give one trace hash (and, where asked, a run with another seed a different
 * one). Include after vv_test.h.
 *
 * A scenario is a function that builds its simulator from run->seed, moves time only through
 * vv_sim_run_to(), asserts what it asserts, and calls vv_sim_run_done() before freeing it:
 *
 *     static void churn(struct vv_sim_run *run, void *arg)
 *     {
 *         struct vv_sim *sim = make_sim(run->seed, ...);
 *         if (!vv_sim_run_to(run, sim, 25000))
 *             goto out;                 // a shortened replay ended here
 *         ...assertions...
 *     out:
 *         vv_sim_run_done(run, sim);
 *         vv_sim_free(sim);
 *     }
 *     VV_SIM_CHECK_DETERMINISM(churn, &params, seed, 0, true);
 *
 * The first run is the whole scenario. With mark_ms 0 the second run is whole too and the
 * hashes at the end are compared. A scenario too slow to run twice in the test time budget
 * passes a mark_ms: the first run notes its hash at that time on the way, the second run (a
 * replay) stops there, skipping what comes after, and the two hashes at the mark must be
 * equal. The run with another seed (seed + 1), when asked for, stops at the mark as well.
 *
 * Each run prints its seed, trace hash and wall time, so a hash can also be compared across
 * processes (VV_SIM_SEED=<seed> replays a run).
 */
#ifndef VV_SIM_TEST_H
#define VV_SIM_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "sim.h"

struct vv_sim_run {
    uint64_t seed;
    uint64_t mark_ms; /* whose hash is compared; UINT64_MAX = the end of the scenario */
    bool replay;      /* stop at mark_ms: a scenario's vv_sim_run_to returns false there */
    bool marked;      /* hash holds the trace hash at mark_ms (or at the end) */
    uint64_t hash;
};

typedef void (*vv_sim_scenario_fn)(struct vv_sim_run *run, void *arg);

/*
 * Runs sim up to t_ms, noting the trace hash when the run passes its mark. Returns false
 * when this run is a replay that ended at its mark: the scenario then skips to
 * vv_sim_run_done and frees the simulator.
 */
static inline bool vv_sim_run_to(struct vv_sim_run *run, struct vv_sim *sim, uint64_t t_ms)
{
    if (!run->marked && run->mark_ms <= t_ms) {
        /* Stopping at the mark and going on is the same run as not stopping: events due at
         * mark_ms run in the first part either way. */
        vv_sim_run_until(sim, run->mark_ms);
        run->hash = vv_sim_trace_hash(sim);
        run->marked = true;
        if (run->replay)
            return false;
    }
    vv_sim_run_until(sim, t_ms);
    return true;
}

/* Notes the hash at the end, for a run whose mark is the end (or that never reached it). */
static inline void vv_sim_run_done(struct vv_sim_run *run, const struct vv_sim *sim)
{
    if (!run->marked) {
        run->hash = vv_sim_trace_hash(sim);
        run->marked = true;
    }
}

static inline double vv_sim__wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the test's own time, never the simulation's */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One run; which names it in the line printed ("run 1", "run 2", "another seed"). */
static inline uint64_t vv_sim__run_once(const char *name, const char *which, vv_sim_scenario_fn fn,
                                        void *arg, uint64_t seed, uint64_t mark_ms, bool replay)
{
    struct vv_sim_run run = {.seed = seed, .mark_ms = mark_ms, .replay = replay};
    double t0 = vv_sim__wall_s();
    fn(&run, arg);
    if (!run.marked)
        fail_msg("%s: the scenario did not call vv_sim_run_done", name);
    char at[32] = "the end";
    if (mark_ms != UINT64_MAX)
        snprintf(at, sizeof(at), "%llu ms", (unsigned long long)mark_ms);
    printf("%s: %s, seed %llu, %s: trace hash %016llx at %s (%.1f s)\n", name, which,
           (unsigned long long)seed, replay ? "replayed to the mark" : "whole",
           (unsigned long long)run.hash, at, vv_sim__wall_s() - t0);
    fflush(stdout);
    return run.hash;
}

/*
 * Runs fn with seed, then again (whole when mark_ms is 0, else up to mark_ms), and fails
 * unless both give one trace hash; with other_seed, a run with seed + 1 (up to the mark)
 * must give another. Returns the hash.
 */
static inline uint64_t vv_sim_check_determinism(const char *name, vv_sim_scenario_fn fn, void *arg,
                                                uint64_t seed, uint64_t mark_ms, bool other_seed)
{
    uint64_t mark = mark_ms ? mark_ms : UINT64_MAX;
    uint64_t first = vv_sim__run_once(name, "run 1", fn, arg, seed, mark, false);
    uint64_t second = vv_sim__run_once(name, "run 2", fn, arg, seed, mark, mark_ms != 0);
    if (first != second)
        fail_msg("%s: seed %llu: two runs differ: trace hash %016llx vs %016llx "
                 "(VV_SIM_SEED=%llu replays it)",
                 name, (unsigned long long)seed, (unsigned long long)first,
                 (unsigned long long)second, (unsigned long long)seed);
    if (other_seed) {
        uint64_t other =
            vv_sim__run_once(name, "another seed", fn, arg, seed + 1, mark, mark_ms != 0);
        if (other == first)
            fail_msg("%s: seeds %llu and %llu give one trace hash %016llx: the seed is not "
                     "used",
                     name, (unsigned long long)seed, (unsigned long long)(seed + 1),
                     (unsigned long long)first);
    }
    return first;
}

#define VV_SIM_CHECK_DETERMINISM(fn, arg, seed, mark_ms, other_seed)                               \
    vv_sim_check_determinism(#fn, fn, arg, seed, mark_ms, other_seed)

#endif
