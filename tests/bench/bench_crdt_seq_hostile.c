/*
 * What hostile sequence updates cost now (issue 9, item 1): CPU time to refuse the probe's
 * update (one replica, 100,000 records claiming the document's ends as origins; it held the
 * loop for 32.6 s before the fix), to refuse a pile of 30,000 replicas at one place (stopped
 * by the work budget, VV_CRDT_SEQ_WORK_MAX scan steps, then rolled back), and the time one
 * budget's worth of scan steps takes, which is the longest any single update can hold the
 * loop for its integration. Median of 5.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../tools/seq_pile.h"
#include "vivim/crdt_seq.h"

#define RUNS 5

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run(const char *name, size_t n, uint32_t agents)
{
    size_t len;
    uint8_t *pile = vv_test_seq_pile(n, agents, 1000, &len);
    double t[RUNS];
    int rc = 0;
    uint64_t work = 0;
    for (int r = 0; r < RUNS; r++) {
        struct vv_crdt_seq *d = vv_crdt_seq_new(7);
        vv_crdt_seq_insert(d, 0, "some text already here", 22, NULL, NULL);
        double t0 = cpu_ms();
        rc = vv_crdt_seq_apply(d, pile, len);
        t[r] = cpu_ms() - t0;
        work = vv_crdt_seq_last_work(d);
        vv_crdt_seq_free(d);
    }
    qsort(t, RUNS, sizeof(double), cmp_double);
    printf("%-34s %8zu bytes  %-40s %9llu steps  %8.2f ms\n", name, len, vv_strerror(rc),
           (unsigned long long)work, t[RUNS / 2]);
    free(pile);
}

int main(void)
{
    printf("%-34s %14s  %-40s %15s  %11s\n", "update", "size", "result", "work", "cpu (median)");
    run("one replica, 100,000 records", 100000, 1);
    run("30,000 replicas, one record each", 30000, 30000);
    run("1,500 replicas, one record each", 1500, 1500);
    return 0;
}
