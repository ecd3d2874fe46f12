/*
 * S3-FIFO vs LRU hit ratio (issue 13's benchmark; goal: >= 8 points better) on seeded Zipf
 * traces with one-hit wonders, caches of 1% and 10% of the trace's footprint. Prints one line
 * per trace and size for docs/benchmarks.md. Usage: bench_s3fifo [seed]
 */
#include <stdio.h>
#include <stdlib.h>

#include "s3fifo_sim.h"

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 42;
    const double alphas[] = {0.8, 1.0, 1.2}, ohws[] = {0.10, 0.25, 0.50};
    const double fractions[] = {0.01, 0.10};
    printf("seed %llu, 100,000 objects, 1,000,000 requests\n", (unsigned long long)seed);
    printf("%-6s %-6s %-6s %9s %9s %8s\n", "zipf", "ohw", "cache", "S3-FIFO", "LRU", "points");
    for (size_t a = 0; a < sizeof(alphas) / sizeof(alphas[0]); a++) {
        for (size_t o = 0; o < sizeof(ohws) / sizeof(ohws[0]); o++) {
            struct sim_trace t;
            sim_trace_make(&t, seed, 100000, 1000000, alphas[a], ohws[o]);
            for (size_t f = 0; f < sizeof(fractions) / sizeof(fractions[0]); f++) {
                uint64_t cap = (uint64_t)((double)t.distinct * fractions[f]) * SIM_OBJECT_BYTES;
                double s3 = sim_s3fifo(&t, cap), lru = sim_lru(&t, cap);
                printf("%-6.1f %4.0f%%  %4.0f%%  %8.2f%% %8.2f%% %+8.2f\n", alphas[a],
                       ohws[o] * 100, fractions[f] * 100, s3 * 100, lru * 100, (s3 - lru) * 100);
            }
            sim_trace_free(&t);
        }
    }
    return 0;
}
