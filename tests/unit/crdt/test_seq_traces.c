/*
 * The sequence CRDT on recorded editing: every trace in $VIVIM_SHARED_DATA/editing-traces
 * (README.md there gives the format) replayed on one replica must give exactly endContent;
 * the same trace split between two replicas that sync midway and at the end must converge to
 * it; the state must load back. A synthetic typing trace with Unicode runs always, so the
 * test means something where the shared data is missing.
 */
#include "vv_test.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/crdt_seq.h"

struct patch {
    size_t pos, del;
    char *ins; /* UTF-8, NUL-terminated */
    size_t ins_len;
};

struct trace {
    struct patch *p;
    size_t n;
    char *end;
};

static void trace_free(struct trace *t)
{
    for (size_t i = 0; i < t->n; i++)
        vv_free(t->p[i].ins);
    vv_free(t->p);
    vv_free(t->end);
}

/* zlib is not a dependency: gzip decompresses. Returns false if the file cannot be read. */
static bool trace_load(const char *path, struct trace *t)
{
    char *cmd = vv_xasprintf("gzip -dc '%s'", path);
    FILE *f = popen(cmd, "r");
    vv_free(cmd);
    if (f == NULL)
        return false;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    if (pclose(f) != 0) {
        free(buf);
        return false;
    }
    json_error_t err;
    json_t *root = json_loadb(buf, n, 0, &err);
    free(buf);
    assert_non_null(root);
    memset(t, 0, sizeof(*t));
    t->end = vv_xstrdup(json_string_value(json_object_get(root, "endContent")));
    json_t *txns = json_object_get(root, "txns");
    size_t cap_p = 1024, i, j;
    json_t *txn, *patch;
    t->p = vv_xmalloc(cap_p * sizeof(*t->p));
    json_array_foreach(txns, i, txn)
    {
        json_array_foreach(json_object_get(txn, "patches"), j, patch)
        {
            if (t->n == cap_p)
                t->p = vv_xrealloc(t->p, (cap_p *= 2) * sizeof(*t->p));
            struct patch *p = &t->p[t->n++];
            p->pos = (size_t)json_integer_value(json_array_get(patch, 0));
            p->del = (size_t)json_integer_value(json_array_get(patch, 1));
            json_t *s = json_array_get(patch, 2);
            p->ins_len = json_string_length(s);
            p->ins = vv_xstrndup(json_string_value(s), p->ins_len);
        }
    }
    json_decref(root);
    return true;
}

static void apply_patches(struct vv_crdt_seq *d, const struct trace *t, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        const struct patch *p = &t->p[i];
        if (p->del)
            assert_int_equal(vv_crdt_seq_delete(d, p->pos, p->del, NULL, NULL), 0);
        if (p->ins_len)
            assert_int_equal(vv_crdt_seq_insert(d, p->pos, p->ins, p->ins_len, NULL, NULL), 0);
    }
}

static void expect_text(struct vv_crdt_seq *d, const char *want)
{
    char *got = vv_crdt_seq_text(d, NULL);
    if (strcmp(got, want) != 0) {
        size_t k = 0;
        while (got[k] && got[k] == want[k])
            k++;
        fail_msg("text differs at byte %zu (lengths %zu and %zu)", k, strlen(got), strlen(want));
    }
    vv_free(got);
}

static void expect_same(struct vv_crdt_seq *a, struct vv_crdt_seq *b)
{
    uint8_t *ea, *eb;
    size_t la, lb;
    vv_crdt_seq_encode_state(a, &ea, &la);
    vv_crdt_seq_encode_state(b, &eb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ea, eb, la);
    vv_free(ea);
    vv_free(eb);
}

/* Replays t one way, split two ways, and through the encodings. */
static void check_trace(const char *name, const struct trace *t)
{
    struct vv_crdt_seq *one = vv_crdt_seq_new(1);
    apply_patches(one, t, 0, t->n);
    expect_text(one, t->end);

    /* The state loads back. */
    uint8_t *e;
    size_t el;
    vv_crdt_seq_encode_state(one, &e, &el);
    struct vv_crdt_seq *loaded = vv_crdt_seq_new(5);
    assert_int_equal(vv_crdt_seq_apply(loaded, e, el), 0);
    expect_text(loaded, t->end);
    expect_same(one, loaded);

    /* Compaction keeps the text and the encoded state exactly and shrinks memory to what
     * the visible text and the tombstone structure need. */
    struct vv_crdt_seq_compact_stats cs;
    vv_crdt_seq_compact(one, &cs);
    expect_text(one, t->end);
    uint8_t *ec;
    size_t ecl;
    vv_crdt_seq_encode_state(one, &ec, &ecl);
    assert_int_equal(ecl, el);
    assert_memory_equal(ec, e, el);
    vv_free(ec);
    assert_int_equal(cs.chars_after, vv_crdt_seq_len(one));
    assert_true(cs.bytes_after < cs.bytes_before);
    assert_true(cs.runs_after <= cs.runs_before);
    printf("  %s compacted: %zu -> %zu runs, %zu -> %zu code points kept, %zu -> %zu bytes "
           "(loaded copy: %zu bytes)\n",
           name, cs.runs_before, cs.runs_after, cs.chars_before, cs.chars_after, cs.bytes_before,
           cs.bytes_after, vv_crdt_seq_mem_bytes(loaded));

    /* Two replicas: A edits the first half, they sync, B edits the rest, they sync. */
    struct vv_crdt_seq *a = vv_crdt_seq_new(2), *b = vv_crdt_seq_new(3);
    size_t mid = t->n / 2;
    apply_patches(a, t, 0, mid);
    vv_crdt_seq_compact(a, NULL); /* a compacted replica syncs with one that never compacts */
    assert_int_equal(vv_crdt_seq_merge(b, a), 0);
    apply_patches(b, t, mid, t->n);
    assert_int_equal(vv_crdt_seq_merge(a, b), 0);
    assert_int_equal(vv_crdt_seq_merge(b, a), 0);
    expect_text(a, t->end);
    expect_text(b, t->end);
    expect_same(a, b);
    printf("  %s: %zu patches, %zu chars, %zu runs, state %zu bytes\n", name, t->n,
           vv_crdt_seq_len(one), vv_crdt_seq_run_count(one), el);
    vv_free(e);
    vv_crdt_seq_free(one);
    vv_crdt_seq_free(loaded);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

static void test_recorded_traces_replay_exactly(void **state)
{
    (void)state;
    const char *root = getenv("VIVIM_SHARED_DATA");
    char *dir = root ? vv_xasprintf("%s/editing-traces", root)
                     : vv_xstrdup("../shared/data/editing-traces");
    DIR *dh = opendir(dir);
    if (dh == NULL) {
        printf("  SKIP: %s is missing; no recorded trace was replayed\n", dir);
        vv_free(dir);
        return;
    }
    struct dirent *de;
    int count = 0;
    while ((de = readdir(dh)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 8 || strcmp(de->d_name + nl - 8, ".json.gz") != 0)
            continue;
        char *path = vv_xasprintf("%s/%s", dir, de->d_name);
        struct trace t;
        if (!trace_load(path, &t))
            fail_msg("cannot read %s", path);
        check_trace(de->d_name, &t);
        trace_free(&t);
        vv_free(path);
        count++;
    }
    closedir(dh);
    printf("  %d recorded traces replayed from %s\n", count, dir);
    vv_free(dir);
    assert_true(count > 0);
}

/* ---- synthetic typing ---------------------------------------------------------------------- */

static uint64_t rng_state = 0x7ea1c0ffee;

static uint32_t rnd_below(uint32_t n)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return n ? (uint32_t)(x % n) : 0;
}

static size_t put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/*
 * A typist: a cursor that mostly types on (sometimes words with accents, CJK or emoji),
 * sometimes backspaces, sometimes jumps, sometimes pastes or cuts a block. The model is a
 * plain array of code points; the trace is built from it so endContent is known.
 */
static void synth_trace(struct trace *t, size_t nops)
{
    static const uint32_t alphabet[] = {'a',  'e',    't',    'o',     ' ',     'n',  0xE9,
                                        0xFC, 0x4E2D, 0x6587, 0x1F600, 0x1F44B, '\n', 'Z'};
    uint32_t *model = vv_xmalloc(nops * 8 * sizeof(uint32_t));
    size_t mn = 0, cursor = 0;
    memset(t, 0, sizeof(*t));
    t->p = vv_xmalloc(nops * sizeof(*t->p));
    for (size_t i = 0; i < nops; i++) {
        struct patch *p = &t->p[t->n++];
        memset(p, 0, sizeof(*p));
        uint32_t what = rnd_below(100);
        if (what < 5)
            cursor = rnd_below((uint32_t)mn + 1);
        if (what < 75 || mn == 0) {
            size_t k = what < 3 ? 1 + rnd_below(40) : 1; /* mostly one key, sometimes a paste */
            p->ins = vv_xmalloc(k * 4 + 1);
            memmove(model + cursor + k, model + cursor, (mn - cursor) * sizeof(uint32_t));
            for (size_t j = 0; j < k; j++) {
                uint32_t c = alphabet[rnd_below(VV_ARRAY_SIZE(alphabet))];
                model[cursor + j] = c;
                p->ins_len += put_utf8(p->ins + p->ins_len, c);
            }
            p->ins[p->ins_len] = 0;
            p->pos = cursor;
            mn += k;
            cursor += k;
        } else {
            if (cursor == 0)
                cursor = mn;
            size_t k = what > 97 ? VV_MIN(cursor, 1 + rnd_below(30)) : 1;
            p->pos = cursor - k;
            p->del = k;
            memmove(model + cursor - k, model + cursor, (mn - cursor) * sizeof(uint32_t));
            mn -= k;
            cursor -= k;
            p->ins = vv_xstrdup("");
        }
    }
    t->end = vv_xmalloc(mn * 4 + 1);
    size_t en = 0;
    for (size_t i = 0; i < mn; i++)
        en += put_utf8(t->end + en, model[i]);
    t->end[en] = 0;
    vv_free(model);
}

static void test_synthetic_unicode_typing_replays_exactly(void **state)
{
    (void)state;
    struct trace t;
    synth_trace(&t, 20000);
    check_trace("synthetic", &t);
    trace_free(&t);
}

/* Two replicas replay a trace independently (all concurrent) and merge: they converge. */
static void test_two_full_concurrent_replays_merge_and_converge(void **state)
{
    (void)state;
    struct trace t;
    synth_trace(&t, 5000);
    struct vv_crdt_seq *a = vv_crdt_seq_new(10), *b = vv_crdt_seq_new(20);
    apply_patches(a, &t, 0, t.n);
    apply_patches(b, &t, 0, t.n);
    assert_int_equal(vv_crdt_seq_merge(a, b), 0);
    assert_int_equal(vv_crdt_seq_merge(b, a), 0);
    expect_same(a, b);
    /* Neither replica's text interleaves into the other's: it is one copy after the other. */
    size_t n = strlen(t.end);
    char *twice = vv_xmalloc(2 * n + 1);
    memcpy(twice, t.end, n);
    memcpy(twice + n, t.end, n + 1);
    expect_text(a, twice);
    vv_free(twice);
    trace_free(&t);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_unicode_typing_replays_exactly),
        cmocka_unit_test(test_two_full_concurrent_replays_merge_and_converge),
        cmocka_unit_test(test_recorded_traces_replay_exactly),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
