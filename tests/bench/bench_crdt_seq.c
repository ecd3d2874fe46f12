/*
 * The sequence CRDT on the shared editing traces, measured like the JS anchors
 * (tests/bench/crdt-js/bench.mjs, figures in docs/benchmarks.md): CPU time to replay every
 * patch into a fresh document (median of 5), the size of the encoded final document, CPU time
 * to load it into a fresh document (median of 5), and CPU time to merge two replicas that each
 * replayed the whole trace independently under different replica ids (median of 5). "exact"
 * means the final text equals endContent and the loaded document equals the original.
 * Then compaction (vv_crdt_seq_compact) of the replayed document: its CPU time (median of 5,
 * each on a fresh replay), the structures' bytes before and after (vv_crdt_seq_mem_bytes) and
 * the encoded size after it; "exact" also requires the same text and encoded state after.
 *
 * usage: bench_crdt_seq [TRACE.json.gz...]   (default: every trace in
 * $VIVIM_SHARED_DATA/editing-traces)
 */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vivim/crdt_seq.h"

#define RUNS 5

struct patch {
    size_t pos, del;
    const char *ins;
    size_t ins_len;
};

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

static double median(double *xs, int n)
{
    qsort(xs, (size_t)n, sizeof(double), cmp_double);
    return xs[n / 2];
}

static json_t *load_json(const char *path)
{
    char *cmd = vv_xasprintf("gzip -dc '%s'", path);
    FILE *f = popen(cmd, "r");
    vv_free(cmd);
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 20, n = 0, got;
    char *buf = vv_xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = vv_xrealloc(buf, cap *= 2);
    }
    int rc = pclose(f);
    json_t *root = rc == 0 ? json_loadb(buf, n, 0, NULL) : NULL;
    vv_free(buf);
    return root;
}

static struct vv_crdt_seq *replay(uint64_t replica, const struct patch *p, size_t n)
{
    struct vv_crdt_seq *d = vv_crdt_seq_new(replica);
    for (size_t i = 0; i < n; i++) {
        if (p[i].del && vv_crdt_seq_delete(d, p[i].pos, p[i].del, NULL, NULL) != 0)
            abort();
        if (p[i].ins_len && vv_crdt_seq_insert(d, p[i].pos, p[i].ins, p[i].ins_len, NULL, NULL))
            abort();
    }
    return d;
}

static bool same_state(struct vv_crdt_seq *a, struct vv_crdt_seq *b)
{
    uint8_t *ea, *eb;
    size_t la, lb;
    vv_crdt_seq_encode_state(a, &ea, &la);
    vv_crdt_seq_encode_state(b, &eb, &lb);
    bool same = la == lb && memcmp(ea, eb, la) == 0;
    vv_free(ea);
    vv_free(eb);
    return same;
}

static void bench_trace(const char *path)
{
    json_t *root = load_json(path);
    if (root == NULL) {
        printf("| %s | cannot read |\n", path);
        return;
    }
    const char *end = json_string_value(json_object_get(root, "endContent"));
    json_t *txns = json_object_get(root, "txns"), *txn, *pj;
    size_t n = 0, cap = 1024, i, j;
    struct patch *p = vv_xmalloc(cap * sizeof(*p));
    json_array_foreach(txns, i, txn)
    {
        json_array_foreach(json_object_get(txn, "patches"), j, pj)
        {
            if (n == cap)
                p = vv_xrealloc(p, (cap *= 2) * sizeof(*p));
            json_t *s = json_array_get(pj, 2);
            p[n++] = (struct patch){(size_t)json_integer_value(json_array_get(pj, 0)),
                                    (size_t)json_integer_value(json_array_get(pj, 1)),
                                    json_string_value(s), json_string_length(s)};
        }
    }

    double t_replay[RUNS], t_load[RUNS], t_merge[RUNS];
    struct vv_crdt_seq *doc = NULL;
    for (int r = 0; r < RUNS; r++) {
        vv_crdt_seq_free(doc);
        double t0 = cpu_ms();
        doc = replay(1, p, n);
        t_replay[r] = cpu_ms() - t0;
    }
    char *text = vv_crdt_seq_text(doc, NULL);
    bool exact = strcmp(text, end) == 0;
    vv_free(text);

    uint8_t *enc;
    size_t enc_len;
    vv_crdt_seq_encode_state(doc, &enc, &enc_len);
    for (int r = 0; r < RUNS; r++) {
        struct vv_crdt_seq *l = vv_crdt_seq_new(9);
        double t0 = cpu_ms();
        int rc = vv_crdt_seq_apply(l, enc, enc_len);
        t_load[r] = cpu_ms() - t0;
        if (rc != 0 || (r == 0 && !same_state(doc, l)))
            exact = false;
        vv_crdt_seq_free(l);
    }

    size_t merged_len = 0;
    for (int r = 0; r < RUNS; r++) {
        struct vv_crdt_seq *a = replay(1, p, n), *b = replay(2, p, n);
        double t0 = cpu_ms();
        int rc = vv_crdt_seq_merge(a, b);
        t_merge[r] = cpu_ms() - t0;
        if (rc != 0)
            exact = false;
        merged_len = vv_crdt_seq_len(a);
        vv_crdt_seq_free(a);
        vv_crdt_seq_free(b);
    }
    if (merged_len != 2 * vv_crdt_seq_len(doc))
        exact = false;

    double t_compact[RUNS];
    struct vv_crdt_seq_compact_stats cs = {0};
    for (int r = 0; r < RUNS; r++) {
        struct vv_crdt_seq *c = replay(1, p, n);
        double t0 = cpu_ms();
        vv_crdt_seq_compact(c, &cs);
        t_compact[r] = cpu_ms() - t0;
        vv_crdt_seq_free(c);
    }
    uint8_t *cenc;
    size_t cenc_len;
    vv_crdt_seq_compact(doc, NULL);
    vv_crdt_seq_encode_state(doc, &cenc, &cenc_len);
    char *ctext = vv_crdt_seq_text(doc, NULL);
    if (strcmp(ctext, end) != 0 || cenc_len != enc_len || memcmp(cenc, enc, enc_len) != 0)
        exact = false;
    vv_free(ctext);
    vv_free(cenc);

    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    printf("| %.*s | vivimd | %.1f | %zu | %.2f | %.1f | %.2f | %zu -> %zu | %zu | %s |\n",
           (int)(strlen(base) - (strstr(base, ".json.gz") ? 8 : 0)), base, median(t_replay, RUNS),
           enc_len, median(t_load, RUNS), median(t_merge, RUNS), median(t_compact, RUNS),
           cs.bytes_before, cs.bytes_after, cenc_len, exact ? "exact" : "WRONG");
    fflush(stdout);
    vv_free(enc);
    vv_crdt_seq_free(doc);
    vv_free(p);
    json_decref(root);
}

int main(int argc, char **argv)
{
    printf(
        "| trace | implementation | replay ms (CPU, median) | encoded bytes | load ms | merge ms "
        "| compact ms | memory bytes before -> after compact | encoded bytes after compact "
        "| final text |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            bench_trace(argv[i]);
        return 0;
    }
    const char *root = getenv("VIVIM_SHARED_DATA");
    char *dir = root ? vv_xasprintf("%s/editing-traces", root)
                     : vv_xstrdup("../shared/data/editing-traces");
    struct dirent **names;
    int nn = scandir(dir, &names, NULL, alphasort);
    if (nn < 0) {
        printf("bench_crdt_seq: %s is missing; skipped\n", dir);
        vv_free(dir);
        return 0;
    }
    for (int i = 0; i < nn; i++) {
        size_t l = strlen(names[i]->d_name);
        if (l > 8 && strcmp(names[i]->d_name + l - 8, ".json.gz") == 0) {
            char *path = vv_xasprintf("%s/%s", dir, names[i]->d_name);
            bench_trace(path);
            vv_free(path);
        }
        free(names[i]);
    }
    free(names);
    vv_free(dir);
    return 0;
}
