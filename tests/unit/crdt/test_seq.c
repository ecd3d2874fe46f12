/*
 * The sequence CRDT: local edits against a plain model, UTF-8, run splitting and merging,
 * encode/decode round trips, deltas, duplicates and causality, hostile input, convergence of
 * 3-5 replicas under random delivery with duplication and delay, and non-interleaving of
 * concurrent forward and backward typing (Fugue paper, Weidner & Kleppmann 2023).
 */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/crdt_seq.h"

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static uint32_t rnd_below(uint32_t n)
{
    return n ? (uint32_t)(rnd() % n) : 0;
}

static void expect_text(struct vv_crdt_seq *d, const char *want)
{
    size_t n;
    char *t = vv_crdt_seq_text(d, &n);
    assert_string_equal(t, want);
    assert_int_equal(n, strlen(want));
    assert_int_equal(vv_crdt_seq_utf8_len(d), strlen(want));
    vv_free(t);
}

static void ins(struct vv_crdt_seq *d, size_t pos, const char *s)
{
    assert_int_equal(vv_crdt_seq_insert(d, pos, s, strlen(s), NULL, NULL), 0);
}

static void del(struct vv_crdt_seq *d, size_t pos, size_t len)
{
    assert_int_equal(vv_crdt_seq_delete(d, pos, len, NULL, NULL), 0);
}

/* Everything b has goes into a and back. */
static void sync2(struct vv_crdt_seq *a, struct vv_crdt_seq *b)
{
    assert_int_equal(vv_crdt_seq_merge(a, b), 0);
    assert_int_equal(vv_crdt_seq_merge(b, a), 0);
}

static void expect_same(struct vv_crdt_seq *a, struct vv_crdt_seq *b)
{
    char *ta = vv_crdt_seq_text(a, NULL), *tb = vv_crdt_seq_text(b, NULL);
    assert_string_equal(ta, tb);
    vv_free(ta);
    vv_free(tb);
    uint8_t *ea, *eb;
    size_t la, lb;
    vv_crdt_seq_encode_state(a, &ea, &la);
    vv_crdt_seq_encode_state(b, &eb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ea, eb, la);
    vv_free(ea);
    vv_free(eb);
}

/* ---- local edits ------------------------------------------------------------------------ */

static void test_insert_delete_edit_the_text(void **state)
{
    (void)state;
    struct vv_crdt_seq *d = vv_crdt_seq_new(7);
    expect_text(d, "");
    ins(d, 0, "world");
    ins(d, 0, "hello ");
    ins(d, 11, "!");
    expect_text(d, "hello world!");
    del(d, 5, 6);
    expect_text(d, "hello!");
    ins(d, 5, ", you");
    expect_text(d, "hello, you!");
    del(d, 0, vv_crdt_seq_len(d));
    expect_text(d, "");
    ins(d, 0, "again");
    expect_text(d, "again");
    assert_int_equal(vv_crdt_seq_insert(d, 6, "x", 1, NULL, NULL), VV_ECRDT_RANGE);
    assert_int_equal(vv_crdt_seq_delete(d, 3, 3, NULL, NULL), VV_ECRDT_RANGE);
    assert_int_equal(vv_crdt_seq_delete(d, 6, 0, NULL, NULL), VV_ECRDT_RANGE);
    assert_int_equal(vv_crdt_seq_delete(d, 5, 0, NULL, NULL), 0);
    expect_text(d, "again");
    vv_crdt_seq_free(d);
}

static void test_positions_count_code_points(void **state)
{
    (void)state;
    struct vv_crdt_seq *d = vv_crdt_seq_new(1);
    ins(d, 0, "h\xC3\xA9llo"); /* "héllo": 5 code points, 6 bytes */
    assert_int_equal(vv_crdt_seq_len(d), 5);
    ins(d, 2, "\xF0\x9F\x98\x80"); /* U+1F600 after "hé" */
    ins(d, 0, "\xE2\x82\xAC");     /* U+20AC at the start */
    expect_text(d, "\xE2\x82\xAC"
                   "h\xC3\xA9\xF0\x9F\x98\x80llo");
    assert_int_equal(vv_crdt_seq_len(d), 7);
    del(d, 2, 2); /* "é" and the emoji */
    expect_text(d, "\xE2\x82\xAChllo");
    vv_crdt_seq_free(d);
}

static void test_invalid_utf8_is_refused_and_changes_nothing(void **state)
{
    (void)state;
    static const char *bad[] = {
        "\x80",             /* lone continuation */
        "\xC3",             /* truncated */
        "\xC0\xAF",         /* overlong '/' */
        "\xED\xA0\x80",     /* surrogate U+D800 */
        "\xF4\x90\x80\x80", /* past U+10FFFF */
        "ab\xFF",           /* invalid byte after valid text */
    };
    struct vv_crdt_seq *d = vv_crdt_seq_new(1);
    ins(d, 0, "ok");
    for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++) {
        uint8_t *u = (uint8_t *)"x";
        size_t ul = 1;
        assert_int_equal(vv_crdt_seq_insert(d, 1, bad[i], strlen(bad[i]), &u, &ul), VV_EINVAL);
        assert_null(u);
        expect_text(d, "ok");
    }
    /* An empty insert is no edit and no update. */
    uint8_t *u = (uint8_t *)"x";
    size_t ul = 1;
    assert_int_equal(vv_crdt_seq_insert(d, 1, "", 0, &u, &ul), 0);
    assert_null(u);
    assert_int_equal(ul, 0);
    vv_crdt_seq_free(d);
}

static void test_typing_makes_one_run_and_edits_split_it(void **state)
{
    (void)state;
    struct vv_crdt_seq *d = vv_crdt_seq_new(1);
    const char *s = "the quick brown fox";
    for (size_t i = 0; s[i]; i++)
        assert_int_equal(vv_crdt_seq_insert(d, i, s + i, 1, NULL, NULL), 0);
    assert_int_equal(vv_crdt_seq_run_count(d), 1); /* forward typing extends one run */
    ins(d, 4, "very ");                            /* splits it: left, insert, right */
    assert_int_equal(vv_crdt_seq_run_count(d), 3);
    expect_text(d, "the very quick brown fox");
    del(d, 0, 4); /* "the " deleted: a tombstone run, split from the first run */
    expect_text(d, "very quick brown fox");
    assert_int_equal(vv_crdt_seq_run_count(d), 3);
    del(d, 5, 1); /* "q", the first of the right part: splits it in two */
    expect_text(d, "very uick brown fox");
    assert_int_equal(vv_crdt_seq_run_count(d), 4);
    /* Backspacing the end deletes char by char; adjacent tombstones of one run merge. */
    for (int i = 0; i < 3; i++)
        del(d, vv_crdt_seq_len(d) - 1, 1);
    expect_text(d, "very uick brown ");
    assert_int_equal(vv_crdt_seq_run_count(d), 5);
    /* The encoding of the split document loads back to the same text. */
    uint8_t *e;
    size_t el;
    vv_crdt_seq_encode_state(d, &e, &el);
    struct vv_crdt_seq *c = vv_crdt_seq_new(2);
    assert_int_equal(vv_crdt_seq_apply(c, e, el), 0);
    expect_text(c, "very uick brown ");
    expect_same(c, d);
    vv_free(e);
    vv_crdt_seq_free(c);
    vv_crdt_seq_free(d);
}

/* Random local edits against a plain array of code points. */
static void test_random_local_edits_match_a_model(void **state)
{
    (void)state;
    rng_state = 0x5eed1234abcdULL;
    static const char *pieces[] = {"a",  "bc", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80x",
                                   "xyz"};
    static const uint32_t piece_cps[][3] = {{'a'},    {'b', 'c'},     {0xE9},
                                            {0x20AC}, {0x1F600, 'x'}, {'x', 'y', 'z'}};
    static const size_t piece_n[] = {1, 2, 1, 1, 2, 3};
    uint32_t *model = vv_xmalloc(20000 * sizeof(uint32_t));
    size_t mn = 0;
    struct vv_crdt_seq *d = vv_crdt_seq_new(9);
    for (int step = 0; step < 4000; step++) {
        if (mn == 0 || rnd_below(3) > 0) {
            size_t k = rnd_below(VV_ARRAY_SIZE(pieces)), pos = rnd_below((uint32_t)mn + 1);
            ins(d, pos, pieces[k]);
            memmove(model + pos + piece_n[k], model + pos, (mn - pos) * sizeof(uint32_t));
            memcpy(model + pos, piece_cps[k], piece_n[k] * sizeof(uint32_t));
            mn += piece_n[k];
        } else {
            size_t pos = rnd_below((uint32_t)mn), len = 1 + rnd_below(VV_MIN(5, mn - pos));
            del(d, pos, len);
            memmove(model + pos, model + pos + len, (mn - pos - len) * sizeof(uint32_t));
            mn -= len;
        }
        assert_int_equal(vv_crdt_seq_len(d), mn);
    }
    char *want = vv_xmalloc(mn * 4 + 1);
    size_t wn = 0;
    for (size_t i = 0; i < mn; i++) {
        uint32_t c = model[i];
        if (c < 0x80) {
            want[wn++] = (char)c;
        } else if (c < 0x800) {
            want[wn++] = (char)(0xC0 | (c >> 6));
            want[wn++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            want[wn++] = (char)(0xE0 | (c >> 12));
            want[wn++] = (char)(0x80 | ((c >> 6) & 0x3F));
            want[wn++] = (char)(0x80 | (c & 0x3F));
        } else {
            want[wn++] = (char)(0xF0 | (c >> 18));
            want[wn++] = (char)(0x80 | ((c >> 12) & 0x3F));
            want[wn++] = (char)(0x80 | ((c >> 6) & 0x3F));
            want[wn++] = (char)(0x80 | (c & 0x3F));
        }
    }
    want[wn] = 0;
    expect_text(d, want);
    vv_free(want);
    vv_free(model);
    vv_crdt_seq_free(d);
}

/* ---- updates, deltas, encodings ----------------------------------------------------------- */

static void test_updates_replay_on_another_replica(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    uint8_t *u;
    size_t ul;
    assert_int_equal(vv_crdt_seq_insert(a, 0, "hello world", 11, &u, &ul), 0);
    assert_non_null(u);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0); /* a duplicate changes nothing */
    vv_free(u);
    assert_int_equal(vv_crdt_seq_delete(a, 0, 6, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0);
    vv_free(u);
    expect_text(b, "world");
    expect_same(a, b);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

static void test_missing_dependencies_are_reported_then_apply_later(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    uint8_t *u1, *u2, *u3;
    size_t l1, l2, l3;
    assert_int_equal(vv_crdt_seq_insert(a, 0, "abc", 3, &u1, &l1), 0);
    assert_int_equal(vv_crdt_seq_insert(a, 1, "XY", 2, &u2, &l2), 0);
    assert_int_equal(vv_crdt_seq_delete(a, 0, 2, &u3, &l3), 0);
    /* Delivered backwards: each needs what came before. */
    assert_int_equal(vv_crdt_seq_apply(b, u3, l3), VV_ECRDT_CAUSALITY);
    assert_int_equal(vv_crdt_seq_apply(b, u2, l2), VV_ECRDT_CAUSALITY);
    expect_text(b, "");
    assert_int_equal(vv_crdt_seq_apply(b, u1, l1), 0);
    expect_text(b, "abc");
    assert_int_equal(vv_crdt_seq_apply(b, u3, l3), VV_ECRDT_CAUSALITY);
    assert_int_equal(vv_crdt_seq_apply(b, u2, l2), 0);
    assert_int_equal(vv_crdt_seq_apply(b, u3, l3), 0);
    expect_text(b, "Ybc");
    expect_same(a, b);
    vv_free(u1);
    vv_free(u2);
    vv_free(u3);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

static void test_delta_sends_only_what_the_peer_lacks(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    char big[2001];
    rng_state = 42;
    for (int i = 0; i < 2000; i++)
        big[i] = (char)('a' + rnd_below(26)); /* random: the coded text stays near 1,200 bytes */
    big[2000] = 0;
    ins(a, 0, big);
    sync2(a, b);
    ins(a, 1000, "new");
    del(a, 0, 10);
    uint8_t *sv, *delta, *full;
    size_t svl, dl, fl;
    vv_crdt_seq_state_vector(b, &sv, &svl);
    assert_int_equal(vv_crdt_seq_encode_delta(a, sv, svl, &delta, &dl), 0);
    assert_int_equal(vv_crdt_seq_encode_delta(a, NULL, 0, &full, &fl), 0);
    assert_true(dl < 64);   /* three characters and one deleted range, not 2,000 */
    assert_true(fl > 1000); /* the full delta carries all the text */
    assert_int_equal(vv_crdt_seq_apply(b, delta, dl), 0);
    expect_same(a, b);
    /* A full delta into an empty replica gives the same document. */
    struct vv_crdt_seq *c = vv_crdt_seq_new(3);
    assert_int_equal(vv_crdt_seq_apply(c, full, fl), 0);
    expect_same(a, c);
    /* A malformed state vector is refused. */
    uint8_t *o = (uint8_t *)"x";
    size_t ol = 1;
    assert_int_equal(vv_crdt_seq_encode_delta(a, sv, svl - 1, &o, &ol), VV_ECRDT_DECODE);
    assert_null(o);
    static const uint8_t bad_version[] = {9, 0};
    assert_int_equal(vv_crdt_seq_encode_delta(a, bad_version, 2, &o, &ol), VV_ECRDT_DECODE);
    vv_free(sv);
    vv_free(delta);
    vv_free(full);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
    vv_crdt_seq_free(c);
}

static void test_state_round_trips_through_the_encoding(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(0xAAAA), *b = vv_crdt_seq_new(0xBBBB);
    ins(a, 0,
        "Gr\xC3\xBC\xC3\x9F"
        "e aus Berlin");
    sync2(a, b);
    ins(b, 6, " und Hallo");
    del(a, 0, 2);
    ins(a, 0, "\xF0\x9F\x91\x8B ");
    sync2(a, b);
    uint8_t *e;
    size_t el;
    vv_crdt_seq_encode_state(a, &e, &el);
    assert_true(el > 2 && e[0] == 1); /* version 1 */
    struct vv_crdt_seq *c = vv_crdt_seq_new(3);
    assert_int_equal(vv_crdt_seq_apply(c, e, el), 0);
    expect_same(a, c);
    /* Loading the state into a replica that already has everything changes nothing. */
    assert_int_equal(vv_crdt_seq_apply(b, e, el), 0);
    expect_same(a, b);
    /* The loaded replica keeps editing and syncing like the others. */
    ins(c, 3, "zz");
    sync2(a, c);
    expect_same(a, c);
    /* A replica restored from its own saved state continues its seqs: its new edits reach a
     * peer that had its old ones. */
    uint8_t *saved, *u;
    size_t sl, ul;
    vv_crdt_seq_encode_state(a, &saved, &sl);
    struct vv_crdt_seq *a2 = vv_crdt_seq_new(0xAAAA);
    assert_int_equal(vv_crdt_seq_apply(a2, saved, sl), 0);
    assert_int_equal(vv_crdt_seq_insert(a2, 0, "restored ", 9, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0);
    sync2(b, c);
    expect_same(a2, b);
    expect_same(a2, c);
    vv_free(u);
    vv_free(saved);
    vv_crdt_seq_free(a2);
    vv_free(e);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
    vv_crdt_seq_free(c);
}

/* ---- hostile input ------------------------------------------------------------------------ */

static bool hostile_on_compacted; /* apply_checked compacts the base document first */

/* Applies buf to a copy of doc state `base`; returns rc and checks an error left it alone. */
static int apply_checked(const uint8_t *base, size_t base_len, const uint8_t *buf, size_t len)
{
    struct vv_crdt_seq *d = vv_crdt_seq_new(99);
    assert_int_equal(vv_crdt_seq_apply(d, base, base_len), 0);
    if (hostile_on_compacted) {
        /* tombstones with their text dropped, a compacted index and tree */
        if (vv_crdt_seq_len(d) > 1)
            assert_int_equal(vv_crdt_seq_delete(d, 0, 1, NULL, NULL), 0);
        vv_crdt_seq_compact(d, NULL);
    }
    uint8_t *before, *after;
    size_t bl, al;
    vv_crdt_seq_encode_state(d, &before, &bl);
    int rc = vv_crdt_seq_apply(d, buf, len);
    if (rc != 0) {
        assert_true(rc == VV_ECRDT_DECODE || rc == VV_ECRDT_CAUSALITY || rc == VV_ELIMIT);
        vv_crdt_seq_encode_state(d, &after, &al);
        assert_int_equal(al, bl);
        assert_memory_equal(before, after, bl);
        vv_free(after);
    }
    vv_free(before);
    vv_crdt_seq_free(d);
    return rc;
}

static void test_hostile_updates_are_refused_without_change(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    ins(a, 0, "base text");
    sync2(a, b);
    uint8_t *base;
    size_t base_len;
    vv_crdt_seq_encode_state(a, &base, &base_len);
    ins(b, 4,
        " \xC3\xA9"
        "dited");
    del(b, 0, 2);
    ins(a, 9, "!");
    uint8_t *sv, *u;
    size_t svl, ul;
    vv_crdt_seq_state_vector(a, &sv, &svl);
    assert_int_equal(vv_crdt_seq_encode_delta(b, sv, svl, &u, &ul), 0);
    assert_int_equal(apply_checked(base, base_len, u, ul), 0);

    /* Every truncation fails (the content length must match exactly). */
    for (size_t n = 0; n < ul; n++)
        assert_int_equal(apply_checked(base, base_len, u, n), VV_ECRDT_DECODE);
    /* Trailing bytes fail. */
    uint8_t *longer = vv_xmalloc(ul + 1);
    memcpy(longer, u, ul);
    longer[ul] = 0;
    assert_int_equal(apply_checked(base, base_len, longer, ul + 1), VV_ECRDT_DECODE);
    /* Unknown version and unknown flags. */
    memcpy(longer, u, ul);
    longer[0] = 2;
    assert_int_equal(apply_checked(base, base_len, longer, ul), VV_ECRDT_DECODE);
    longer[0] = 1;
    longer[1] = 0x80;
    assert_int_equal(apply_checked(base, base_len, longer, ul), VV_ECRDT_DECODE);
    /* Every single-byte corruption either applies or fails cleanly. */
    for (size_t i = 0; i < ul; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(longer, u, ul);
            longer[i] ^= (uint8_t)(1u << bit);
            (void)apply_checked(base, base_len, longer, ul);
        }
    }
    vv_free(longer);

    /* Hand-made: huge counts, ids past the table, a record whose origin is itself. */
    static const uint8_t huge_agents[] = {1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F};
    static const uint8_t huge_records[] = {1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0, 0};
    /* Record headers are len << 7 | same agent << 6 | continues << 5 | right origin mode << 3 |
     * left origin mode << 1 | deleted; content is raw length, method 0 (raw), bytes.
     * One agent (id 5), one visible record of 1 item at seq 0 whose left origin is explicit
     * (agent 0, seq 0): itself. */
    static const uint8_t self_origin[] = {1, 0,    1,    5, 0, 0, 0, 0, 0, 0, 0,
                                          1, 0x86, 0x01, 0, 0, 0, 0, 0, 1, 0, 'x'};
    /* a record naming agent 3 of a one-agent table */
    static const uint8_t bad_agent[] = {1, 0, 1,    5,    0, 0, 0, 0, 0, 0,
                                        0, 1, 0x80, 0x01, 3, 0, 0, 1, 0, 'x'};
    /* a visible record of 2 items with 1 code point of content */
    static const uint8_t short_content[] = {1, 0, 1,    5,    0, 0, 0, 0, 0, 0,
                                            0, 1, 0x80, 0x02, 0, 0, 0, 1, 0, 'x'};
    /* a deleted record of 2^31 - 1 items: the seq limit, but costs no memory */
    static const uint8_t long_tombstone[] = {1,    0,    1,    5,    0,    0,    0, 0, 0, 0, 0, 1,
                                             0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0, 0, 0, 0, 0};
    /* a record that starts at seq 7 of an unknown replica: needs items 0..6 */
    static const uint8_t gap[] = {1, 0, 1,    5,    0, 0,  0, 0, 0, 0,
                                  0, 1, 0x80, 0x01, 0, 14, 0, 1, 0, 'x'};
    /* coded content (method 1) that claims far more text than its code can hold */
    static const uint8_t ratio[] = {1, 0, 0, 0, 0, 0x80, 0x80, 0x04, 1, 1, 0, 0};
    /* unknown content method */
    static const uint8_t method[] = {1, 0, 0, 0, 0, 1, 7, 'x'};
    /* non-minimal varint (0x80 0x00 for 0) */
    static const uint8_t overlong[] = {1, 0, 0x80, 0x00, 0, 0, 0};
    assert_int_equal(apply_checked(base, base_len, huge_agents, sizeof(huge_agents)),
                     VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, huge_records, sizeof(huge_records)),
                     VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, self_origin, sizeof(self_origin)),
                     VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, bad_agent, sizeof(bad_agent)), VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, short_content, sizeof(short_content)),
                     VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, long_tombstone, sizeof(long_tombstone)), 0);
    assert_int_equal(apply_checked(base, base_len, gap, sizeof(gap)), VV_ECRDT_CAUSALITY);
    assert_int_equal(apply_checked(base, base_len, overlong, sizeof(overlong)), VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, ratio, sizeof(ratio)), VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, method, sizeof(method)), VV_ECRDT_DECODE);
    assert_int_equal(apply_checked(base, base_len, NULL, 0), VV_ECRDT_DECODE);

    vv_free(base);
    vv_free(sv);
    vv_free(u);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

/* The same hostile inputs against a compacted document: refused the same way, no change. */
static void test_hostile_updates_are_refused_by_a_compacted_document(void **state)
{
    hostile_on_compacted = true;
    test_hostile_updates_are_refused_without_change(state);
    hostile_on_compacted = false;
}

/* ---- non-interleaving --------------------------------------------------------------------- */

/* Replica `d` types `word` at pos: forward (each character after the previous) or backward
 * (each character at pos, so the word is typed last letter first). */
static void type_word(struct vv_crdt_seq *d, size_t pos, const char *word, bool backward)
{
    size_t n = strlen(word);
    for (size_t i = 0; i < n; i++) {
        if (backward)
            assert_int_equal(vv_crdt_seq_insert(d, pos, word + n - 1 - i, 1, NULL, NULL), 0);
        else
            assert_int_equal(vv_crdt_seq_insert(d, pos + i, word + i, 1, NULL, NULL), 0);
    }
}

static void check_no_interleaving(uint64_t id_a, uint64_t id_b, bool back_a, bool back_b)
{
    struct vv_crdt_seq *a = vv_crdt_seq_new(id_a), *b = vv_crdt_seq_new(id_b);
    ins(a, 0, "[]");
    sync2(a, b);
    type_word(a, 1, "alpha", back_a);
    type_word(b, 1, "omega", back_b);
    sync2(a, b);
    expect_same(a, b);
    char *t = vv_crdt_seq_text(a, NULL);
    if (strcmp(t, "[alphaomega]") != 0 && strcmp(t, "[omegaalpha]") != 0)
        fail_msg("interleaved: %s (ids %llu/%llu, backward %d/%d)", t, (unsigned long long)id_a,
                 (unsigned long long)id_b, back_a, back_b);
    vv_free(t);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

static void test_concurrent_typing_at_one_place_never_interleaves(void **state)
{
    (void)state;
    for (int mode = 0; mode < 4; mode++) {
        check_no_interleaving(1, 2, mode & 1, mode & 2);
        check_no_interleaving(2, 1, mode & 1, mode & 2);
    }
}

static void test_three_replicas_typing_backward_at_one_place_never_interleave(void **state)
{
    (void)state;
    struct vv_crdt_seq *r[3];
    for (int i = 0; i < 3; i++)
        r[i] = vv_crdt_seq_new(100 + (uint64_t)i * 7);
    ins(r[0], 0, "<>");
    for (int i = 1; i < 3; i++)
        sync2(r[0], r[i]);
    static const char *words[] = {"abcd", "EFGH", "1234"};
    for (int i = 0; i < 3; i++)
        type_word(r[i], 1, words[i], i != 1);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                if (i != j)
                    assert_int_equal(vv_crdt_seq_merge(r[i], r[j]), 0);
    char *t = vv_crdt_seq_text(r[0], NULL);
    for (int i = 0; i < 3; i++)
        if (strstr(t, words[i]) == NULL)
            fail_msg("interleaved: %s", t);
    assert_int_equal(strlen(t), 14);
    vv_free(t);
    expect_same(r[0], r[1]);
    expect_same(r[0], r[2]);
    for (int i = 0; i < 3; i++)
        vv_crdt_seq_free(r[i]);
}

/* ---- convergence under random delivery ----------------------------------------------------- */

struct msg {
    uint8_t *buf;
    size_t len;
};

struct inbox {
    struct msg *m;
    size_t n, cap;
};

static void push(struct inbox *q, const uint8_t *buf, size_t len)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 16;
        q->m = vv_xrealloc(q->m, q->cap * sizeof(*q->m));
    }
    q->m[q->n].buf = vv_xmalloc(len);
    memcpy(q->m[q->n].buf, buf, len);
    q->m[q->n++].len = len;
}

/* Delivers one random message of q to d; returns whether it applied. */
static bool deliver_one(struct vv_crdt_seq *d, struct inbox *q)
{
    size_t k = rnd_below((uint32_t)q->n);
    int rc = vv_crdt_seq_apply(d, q->m[k].buf, q->m[k].len);
    if (rc == VV_ECRDT_CAUSALITY)
        return false; /* stays queued: delayed */
    assert_int_equal(rc, 0);
    vv_free(q->m[k].buf);
    q->m[k] = q->m[--q->n];
    return true;
}

static void random_edit(struct vv_crdt_seq *d, uint8_t **u, size_t *ul)
{
    static const char *texts[] = {
        "a", "bc", "\xC3\xA9", "\xE2\x82\xAC\xE2\x82\xAC", "xyz ", "\xF0\x9F\x98\x80"};
    size_t len = vv_crdt_seq_len(d);
    if (len == 0 || rnd_below(10) < 7) {
        const char *t = texts[rnd_below(VV_ARRAY_SIZE(texts))];
        assert_int_equal(vv_crdt_seq_insert(d, rnd_below((uint32_t)len + 1), t, strlen(t), u, ul),
                         0);
    } else {
        size_t pos = rnd_below((uint32_t)len);
        assert_int_equal(vv_crdt_seq_delete(d, pos, 1 + rnd_below(VV_MIN(4, len - pos)), u, ul), 0);
    }
}

/* With `compact`, replicas compact at random moments (and some at the end) while they edit
 * and exchange updates, deltas and states; compacted and uncompacted ones must converge to
 * the same encoded state. */
static void converge_run(uint64_t seed, int nrep, int steps, bool compact)
{
    rng_state = seed;
    struct vv_crdt_seq *r[5];
    struct inbox q[5] = {0};
    for (int i = 0; i < nrep; i++)
        r[i] = vv_crdt_seq_new(rnd());
    for (int s = 0; s < steps; s++) {
        int who = (int)rnd_below((uint32_t)nrep);
        if (compact && rnd_below(8) == 0) {
            struct vv_crdt_seq_compact_stats st;
            char *before = vv_crdt_seq_text(r[who], NULL);
            vv_crdt_seq_compact(r[who], &st);
            expect_text(r[who], before);
            vv_free(before);
            assert_int_equal(st.chars_after, vv_crdt_seq_len(r[who]));
            assert_true(st.runs_after <= st.runs_before);
        }
        uint32_t what = rnd_below(10);
        if (what < 6) {
            uint8_t *u;
            size_t ul;
            random_edit(r[who], &u, &ul);
            for (int j = 0; j < nrep; j++) {
                if (j == who)
                    continue;
                push(&q[j], u, ul);
                if (rnd_below(5) == 0)
                    push(&q[j], u, ul); /* duplicated */
            }
            vv_free(u);
        } else if (what < 9) {
            if (q[who].n)
                deliver_one(r[who], &q[who]);
        } else {
            int other = (int)rnd_below((uint32_t)nrep);
            if (other != who && rnd_below(2)) {
                assert_int_equal(vv_crdt_seq_merge(r[who], r[other]), 0);
            } else if (other != who) {
                /* the other's whole state, in document order, into a non-empty replica */
                uint8_t *st;
                size_t sl;
                vv_crdt_seq_encode_state(r[other], &st, &sl);
                assert_int_equal(vv_crdt_seq_apply(r[who], st, sl), 0);
                vv_free(st);
            }
        }
    }
    /* Drain: every message eventually applies. */
    for (int i = 0; i < nrep; i++) {
        int stuck = 0;
        while (q[i].n) {
            if (deliver_one(r[i], &q[i]))
                stuck = 0;
            else if (++stuck > 100000)
                fail_msg("seed %llu: replica %d cannot apply its inbox", (unsigned long long)seed,
                         i);
        }
        vv_free(q[i].m);
    }
    for (int i = 1; i < nrep; i++)
        expect_same(r[0], r[i]);
    if (compact) {
        for (int i = 0; i < nrep; i += 2)
            vv_crdt_seq_compact(r[i], NULL);
        for (int i = 1; i < nrep; i++)
            expect_same(r[0], r[i]);
    }
    for (int i = 0; i < nrep; i++)
        vv_crdt_seq_free(r[i]);
}

static void test_replicas_converge_under_random_delivery(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 24; seed++) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ULL;
        converge_run(s, 3 + (int)(seed % 3), 300, false);
    }
}

static void test_replicas_converge_with_random_compactions(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 24; seed++) {
        uint64_t s = seed * 0xD1B54A32D192ED03ULL;
        converge_run(s, 3 + (int)(seed % 3), 400, true);
    }
}

/*
 * Compaction changes nothing observable: same text, state vector and encoded state; the
 * deleted text leaves memory; a compacted replica and an uncompacted copy of it (same
 * replica id) then make byte-identical updates for the same edits and accept the same ones.
 */
static void test_compaction_drops_deleted_text_and_changes_nothing_else(void **state)
{
    (void)state;
    rng_state = 0xC0A1E5CE;
    struct vv_crdt_seq *a = vv_crdt_seq_new(7), *peer = vv_crdt_seq_new(8);
    for (int i = 0; i < 3000; i++) {
        uint8_t *u;
        size_t ul;
        random_edit(a, &u, &ul);
        vv_free(u);
        if (i % 500 == 0) {
            random_edit(peer, &u, &ul);
            vv_free(u);
            sync2(a, peer);
        }
    }
    sync2(a, peer);
    uint8_t *st0, *sv0;
    size_t st0_len, sv0_len;
    vv_crdt_seq_encode_state(a, &st0, &st0_len);
    vv_crdt_seq_state_vector(a, &sv0, &sv0_len);
    char *text0 = vv_crdt_seq_text(a, NULL);
    struct vv_crdt_seq *copy = vv_crdt_seq_new(7);
    assert_int_equal(vv_crdt_seq_apply(copy, st0, st0_len), 0);

    struct vv_crdt_seq_compact_stats cs;
    vv_crdt_seq_compact(a, &cs);
    expect_text(a, text0);
    assert_int_equal(cs.chars_after, vv_crdt_seq_len(a));
    assert_true(cs.chars_before > cs.chars_after); /* random_edit deletes 3 times in 10 */
    assert_true(cs.bytes_after < cs.bytes_before);
    assert_int_equal(cs.bytes_after, vv_crdt_seq_mem_bytes(a));
    assert_int_equal(cs.runs_after, vv_crdt_seq_run_count(a));
    uint8_t *st1, *sv1;
    size_t st1_len, sv1_len;
    vv_crdt_seq_encode_state(a, &st1, &st1_len);
    vv_crdt_seq_state_vector(a, &sv1, &sv1_len);
    assert_int_equal(st1_len, st0_len);
    assert_memory_equal(st1, st0, st0_len);
    assert_int_equal(sv1_len, sv0_len);
    assert_memory_equal(sv1, sv0, sv0_len);
    /* Compacting twice changes nothing more. */
    struct vv_crdt_seq_compact_stats cs2;
    vv_crdt_seq_compact(a, &cs2);
    assert_int_equal(cs2.runs_after, cs.runs_after);
    assert_int_equal(cs2.chars_after, cs.chars_after);

    /* Same edits on the compacted replica and its uncompacted copy: same updates. */
    uint64_t saved = rng_state;
    for (int i = 0; i < 400; i++) {
        uint8_t *ua, *uc;
        size_t la, lc;
        rng_state = saved;
        random_edit(a, &ua, &la);
        rng_state = saved;
        random_edit(copy, &uc, &lc);
        saved = rng_state;
        assert_int_equal(la, lc);
        assert_memory_equal(ua, uc, la);
        assert_int_equal(vv_crdt_seq_apply(peer, ua, la), 0);
        vv_free(ua);
        vv_free(uc);
        if (i % 100 == 50)
            vv_crdt_seq_compact(a, NULL);
    }
    expect_same(a, copy);
    /* Deltas from the compacted replica bring an empty and a stale peer up to date. */
    struct vv_crdt_seq *fresh = vv_crdt_seq_new(9);
    assert_int_equal(vv_crdt_seq_merge(fresh, a), 0);
    assert_int_equal(vv_crdt_seq_merge(peer, a), 0);
    expect_same(fresh, copy);
    expect_same(peer, copy);
    /* ... and its deltas and updates reach it from the uncompacted side. */
    uint8_t *u;
    size_t ul;
    assert_int_equal(vv_crdt_seq_insert(peer, 0, "peer", 4, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(a, u, ul), 0);
    vv_free(u);
    assert_int_equal(vv_crdt_seq_merge(copy, peer), 0);
    expect_same(a, copy);

    vv_free(st0);
    vv_free(st1);
    vv_free(sv0);
    vv_free(sv1);
    vv_free(text0);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(copy);
    vv_crdt_seq_free(peer);
    vv_crdt_seq_free(fresh);
}

/*
 * Why compaction keeps tombstone ids: after every replica has every item and every deletion
 * (all state vectors equal, all texts equal), a new local insert still names a tombstone, as
 * its right origin (the item right after its left origin, tombstones included). A replica
 * without that tombstone cannot integrate the insert.
 */
static void test_new_inserts_still_name_tombstones_every_replica_has_seen(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2),
                       *only_a = vv_crdt_seq_new(3);
    uint8_t *u;
    size_t ul;
    assert_int_equal(vv_crdt_seq_insert(a, 0, "ac", 2, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(only_a, u, ul), 0); /* has a's items, none of b's */
    vv_free(u);
    sync2(a, b);
    ins(b, 1, "b"); /* b's item 0, between 'a' and 'c' */
    sync2(a, b);
    del(a, 1, 1); /* 'b' becomes a tombstone */
    sync2(a, b);
    uint8_t *sva, *svb;
    size_t la, lb;
    vv_crdt_seq_state_vector(a, &sva, &la);
    vv_crdt_seq_state_vector(b, &svb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(sva, svb, la); /* both have seen everything */
    expect_text(a, "ac");
    expect_text(b, "ac");
    vv_crdt_seq_compact(a, NULL);
    vv_crdt_seq_compact(b, NULL);
    /* Control: a types at the end (origins 'c' and none); the replica without b's items
     * integrates it. */
    assert_int_equal(vv_crdt_seq_insert(a, 2, "Y", 1, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(only_a, u, ul), 0);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0);
    vv_free(u);
    /* a types after 'a': left origin 'a', right origin the tombstone 'b'. */
    assert_int_equal(vv_crdt_seq_insert(a, 1, "X", 1, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(only_a, u, ul), VV_ECRDT_CAUSALITY);
    assert_int_equal(vv_crdt_seq_apply(b, u, ul), 0);
    expect_text(b, "aXcY");
    vv_free(u);
    vv_free(sva);
    vv_free(svb);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
    vv_crdt_seq_free(only_a);
}

/*
 * Tombstones with consecutive ids, adjacent in the document, whose right origins differ are
 * not one run: compaction must keep both (the encoding, and so every peer, would see the
 * second one's right origin change).
 */
static void test_compaction_keeps_adjacent_tombstones_with_different_origins(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    ins(a, 0, "a"); /* a:0, right origin none */
    sync2(a, b);
    ins(b, 1, "Z"); /* after 'a' */
    sync2(a, b);
    ins(a, 1, "b"); /* a:1, left origin 'a', right origin 'Z': "abZ" */
    sync2(a, b);
    expect_text(a, "abZ");
    del(a, 0, 2);
    sync2(a, b);
    size_t runs = vv_crdt_seq_run_count(a);
    assert_int_equal(runs, 3);
    vv_crdt_seq_compact(a, NULL);
    assert_int_equal(vv_crdt_seq_run_count(a), runs);
    expect_same(a, b);
    /* later concurrent inserts around the tombstones integrate the same on both */
    uint8_t *ua, *ub;
    size_t la, lb;
    assert_int_equal(vv_crdt_seq_insert(a, 0, "m", 1, &ua, &la), 0);
    assert_int_equal(vv_crdt_seq_insert(b, 0, "n", 1, &ub, &lb), 0);
    assert_int_equal(vv_crdt_seq_apply(a, ub, lb), 0);
    assert_int_equal(vv_crdt_seq_apply(b, ua, la), 0);
    vv_crdt_seq_compact(b, NULL);
    expect_same(a, b);
    vv_free(ua);
    vv_free(ub);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
}

/* An empty document and one whose every character is deleted compact and keep working. */
static void test_compaction_of_empty_and_fully_deleted_documents(void **state)
{
    (void)state;
    struct vv_crdt_seq *d = vv_crdt_seq_new(1);
    vv_crdt_seq_compact(d, NULL);
    assert_int_equal(vv_crdt_seq_run_count(d), 0);
    ins(d, 0, "hello world");
    del(d, 0, 11);
    struct vv_crdt_seq_compact_stats cs;
    vv_crdt_seq_compact(d, &cs);
    assert_int_equal(cs.chars_before, 11);
    assert_int_equal(cs.chars_after, 0);
    assert_int_equal(cs.runs_after, 1); /* the one tombstone run */
    expect_text(d, "");
    ins(d, 0, "\xC3\xA9t\xC3\xA9");
    expect_text(d, "\xC3\xA9t\xC3\xA9");
    vv_crdt_seq_free(d);
}

/* ---- against a naive reference ------------------------------------------------------------ */

/*
 * The YjsMod pseudo-code of docs/crdt.md, item by item on a plain array, with linear searches:
 * slow and obviously right. Random concurrent edits by 3 replicas, delivered in random order,
 * must give the same text on the real document as on the reference after every delivery, and
 * the real document must report VV_ECRDT_CAUSALITY exactly when the reference lacks an item.
 */
struct ritem {
    uint64_t agent, ol_agent, or_agent;
    uint32_t seq, ol_seq, or_seq;
    bool has_ol, has_or, deleted;
    char ch;
};

struct rdoc {
    struct ritem it[1024];
    int n;
};

static int rfind(const struct rdoc *d, uint64_t agent, uint32_t seq)
{
    for (int i = 0; i < d->n; i++)
        if (d->it[i].agent == agent && d->it[i].seq == seq)
            return i;
    return -1;
}

static void rinsert_at(struct rdoc *d, int at, const struct ritem *x)
{
    assert_true(d->n < 1024);
    memmove(&d->it[at + 1], &d->it[at], (size_t)(d->n - at) * sizeof(*x));
    d->it[at] = *x;
    d->n++;
}

/* Integrates x; false when an origin or the previous item of its replica is missing. */
static bool rintegrate(struct rdoc *d, const struct ritem *x)
{
    if (rfind(d, x->agent, x->seq) >= 0)
        return true;
    if (x->seq > 0 && rfind(d, x->agent, x->seq - 1) < 0)
        return false;
    int left = x->has_ol ? rfind(d, x->ol_agent, x->ol_seq) : -1;
    int right = x->has_or ? rfind(d, x->or_agent, x->or_seq) : d->n;
    if ((x->has_ol && left < 0) || (x->has_or && right < 0))
        return false;
    int dest = left + 1;
    bool scanning = false;
    for (int i = left + 1;; i++) {
        if (!scanning)
            dest = i;
        if (i == d->n || i == right)
            break;
        const struct ritem *o = &d->it[i];
        int oleft = o->has_ol ? rfind(d, o->ol_agent, o->ol_seq) : -1;
        int oright = o->has_or ? rfind(d, o->or_agent, o->or_seq) : d->n;
        if (oleft < left)
            break;
        if (oleft == left) {
            if (oright < right) {
                scanning = true;
            } else if (oright == right) {
                if (x->agent < o->agent)
                    break;
                scanning = false;
            } else {
                scanning = false;
            }
        }
    }
    rinsert_at(d, dest, x);
    return true;
}

static int rvisible(const struct rdoc *d, int pos) /* index of the pos-th visible item */
{
    for (int i = 0; i < d->n; i++)
        if (!d->it[i].deleted && pos-- == 0)
            return i;
    return -1;
}

struct rmsg {
    uint8_t *buf;
    size_t len;
    struct ritem items[8]; /* inserted items, or deleted ids (agent, seq) */
    int nitems;
    bool is_delete;
};

static bool rready(const struct rdoc *d, const struct rmsg *m)
{
    struct rdoc tmp; /* integrating chained items needs the earlier ones: try on a copy */
    memcpy(&tmp, d, sizeof(tmp));
    for (int k = 0; k < m->nitems; k++) {
        if (m->is_delete) {
            if (rfind(&tmp, m->items[k].agent, m->items[k].seq) < 0)
                return false;
        } else if (!rintegrate(&tmp, &m->items[k])) {
            return false;
        }
    }
    return true;
}

static void rapply(struct rdoc *d, const struct rmsg *m)
{
    for (int k = 0; k < m->nitems; k++) {
        if (m->is_delete)
            d->it[rfind(d, m->items[k].agent, m->items[k].seq)].deleted = true;
        else
            assert_true(rintegrate(d, &m->items[k]));
    }
}

static void rexpect_text(struct vv_crdt_seq *real, const struct rdoc *d)
{
    char want[1025];
    int n = 0;
    for (int i = 0; i < d->n; i++)
        if (!d->it[i].deleted)
            want[n++] = d->it[i].ch;
    want[n] = 0;
    expect_text(real, want);
}

/* With `compact`, the real replicas compact at random moments; nothing may change. */
static void reference_run(bool compact)
{
    enum { NREP = 3, MAXMSG = 256 };
    for (uint64_t seed = 1; seed <= 40; seed++) {
        rng_state = seed * 0x2545F4914F6CDD1DULL;
        static struct rdoc ref[NREP];
        struct vv_crdt_seq *real[NREP];
        uint64_t ids[NREP];
        uint32_t next[NREP] = {0};
        for (int i = 0; i < NREP; i++) {
            ids[i] = rnd() % 4 + (uint64_t)i * 4; /* distinct, random order */
            real[i] = vv_crdt_seq_new(ids[i]);
            ref[i].n = 0;
        }
        /* inbox[j]: messages not yet delivered to replica j */
        static struct rmsg msgs[MAXMSG];
        int nmsg = 0;
        bool delivered[MAXMSG][NREP];
        memset(delivered, 0, sizeof(delivered));
        for (int step = 0; step < 160; step++) {
            int who = (int)rnd_below(NREP);
            struct rdoc *d = &ref[who];
            if (compact && rnd_below(6) == 0) {
                vv_crdt_seq_compact(real[who], NULL);
                rexpect_text(real[who], d);
            }
            int vis = 0;
            for (int i = 0; i < d->n; i++)
                vis += !d->it[i].deleted;
            if (rnd_below(3) > 0 && nmsg < MAXMSG) {
                struct rmsg *m = &msgs[nmsg];
                memset(m, 0, sizeof(*m));
                if (vis == 0 || rnd_below(4) > 0) {
                    int pos = (int)rnd_below((uint32_t)vis + 1), k = 1 + (int)rnd_below(4);
                    char text[8];
                    for (int c = 0; c < k; c++)
                        text[c] = (char)('a' + rnd_below(26));
                    assert_int_equal(vv_crdt_seq_insert(real[who], (size_t)pos, text, (size_t)k,
                                                        &m->buf, &m->len),
                                     0);
                    /* the same items on the reference, one character at a time */
                    for (int c = 0; c < k; c++) {
                        struct ritem x = {.agent = ids[who], .seq = next[who]++, .ch = text[c]};
                        int li = pos + c > 0 ? rvisible(d, pos + c - 1) : -1;
                        if (li >= 0) {
                            x.has_ol = true;
                            x.ol_agent = d->it[li].agent;
                            x.ol_seq = d->it[li].seq;
                        }
                        if (li + 1 < d->n) {
                            x.has_or = true;
                            x.or_agent = d->it[li + 1].agent;
                            x.or_seq = d->it[li + 1].seq;
                        }
                        rinsert_at(d, li + 1, &x);
                        m->items[m->nitems++] = x;
                    }
                } else {
                    int pos = (int)rnd_below((uint32_t)vis);
                    int k = 1 + (int)rnd_below((uint32_t)VV_MIN(3, vis - pos));
                    assert_int_equal(
                        vv_crdt_seq_delete(real[who], (size_t)pos, (size_t)k, &m->buf, &m->len), 0);
                    m->is_delete = true;
                    for (int c = 0; c < k; c++) {
                        int ix = rvisible(d, pos);
                        d->it[ix].deleted = true;
                        m->items[m->nitems++] = d->it[ix];
                    }
                }
                delivered[nmsg][who] = true;
                nmsg++;
                rexpect_text(real[who], d);
            } else {
                /* deliver a random pending message to `who` (possibly too early) */
                int cand[MAXMSG], nc = 0;
                for (int i = 0; i < nmsg; i++)
                    if (!delivered[i][who])
                        cand[nc++] = i;
                if (nc == 0)
                    continue;
                int mi = cand[rnd_below((uint32_t)nc)];
                struct rmsg *m = &msgs[mi];
                int rc = vv_crdt_seq_apply(real[who], m->buf, m->len);
                if (rready(d, m)) {
                    if (rc != 0)
                        fail_msg("seed %llu: a ready update was refused (%d)",
                                 (unsigned long long)seed, rc);
                    rapply(d, m);
                    delivered[mi][who] = true;
                    if (rnd_below(4) == 0) /* a duplicate changes nothing */
                        assert_int_equal(vv_crdt_seq_apply(real[who], m->buf, m->len), 0);
                } else if (rc != VV_ECRDT_CAUSALITY) {
                    fail_msg("seed %llu: an early update gave %d", (unsigned long long)seed, rc);
                }
                rexpect_text(real[who], d);
            }
        }
        /* Deliver everything; every replica ends with the reference's text. */
        for (bool progress = true; progress;) {
            progress = false;
            for (int j = 0; j < NREP; j++)
                for (int i = 0; i < nmsg; i++)
                    if (!delivered[i][j] && rready(&ref[j], &msgs[i])) {
                        assert_int_equal(vv_crdt_seq_apply(real[j], msgs[i].buf, msgs[i].len), 0);
                        rapply(&ref[j], &msgs[i]);
                        delivered[i][j] = true;
                        progress = true;
                    }
        }
        for (int j = 0; j < NREP; j++) {
            for (int i = 0; i < nmsg; i++)
                assert_true(delivered[i][j]);
            rexpect_text(real[j], &ref[j]);
            if (j > 0)
                expect_same(real[0], real[j]);
        }
        for (int i = 0; i < nmsg; i++)
            vv_free(msgs[i].buf);
        for (int i = 0; i < NREP; i++)
            vv_crdt_seq_free(real[i]);
    }
}

static void test_matches_a_naive_yjsmod_reference(void **state)
{
    (void)state;
    reference_run(false);
}

static void test_compacting_replicas_still_match_the_reference(void **state)
{
    (void)state;
    reference_run(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_delete_edit_the_text),
        cmocka_unit_test(test_positions_count_code_points),
        cmocka_unit_test(test_invalid_utf8_is_refused_and_changes_nothing),
        cmocka_unit_test(test_typing_makes_one_run_and_edits_split_it),
        cmocka_unit_test(test_random_local_edits_match_a_model),
        cmocka_unit_test(test_updates_replay_on_another_replica),
        cmocka_unit_test(test_missing_dependencies_are_reported_then_apply_later),
        cmocka_unit_test(test_delta_sends_only_what_the_peer_lacks),
        cmocka_unit_test(test_state_round_trips_through_the_encoding),
        cmocka_unit_test(test_hostile_updates_are_refused_without_change),
        cmocka_unit_test(test_concurrent_typing_at_one_place_never_interleaves),
        cmocka_unit_test(test_three_replicas_typing_backward_at_one_place_never_interleave),
        cmocka_unit_test(test_replicas_converge_under_random_delivery),
        cmocka_unit_test(test_replicas_converge_with_random_compactions),
        cmocka_unit_test(test_compaction_drops_deleted_text_and_changes_nothing_else),
        cmocka_unit_test(test_compaction_of_empty_and_fully_deleted_documents),
        cmocka_unit_test(test_compaction_keeps_adjacent_tombstones_with_different_origins),
        cmocka_unit_test(test_new_inserts_still_name_tombstones_every_replica_has_seen),
        cmocka_unit_test(test_hostile_updates_are_refused_by_a_compacted_document),
        cmocka_unit_test(test_matches_a_naive_yjsmod_reference),
        cmocka_unit_test(test_compacting_replicas_still_match_the_reference),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
