/*
 * The sequence CRDT against updates built to cost: piles of concurrent inserts at one place
 * (issue 9, item 1: one peer update of 400 KB held the loop for 32 s), impossible histories,
 * and the all-or-nothing rollback that refusing them mid-way relies on. Honest merges of long
 * diverged histories must stay well inside the budget.
 */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/seq_pile.h"
#include "vivim/crdt_seq.h"

static void state_of(struct vv_crdt_seq *d, uint8_t **out, size_t *len)
{
    vv_crdt_seq_encode_state(d, out, len);
}

static void expect_state(struct vv_crdt_seq *d, const uint8_t *want, size_t want_len)
{
    uint8_t *s;
    size_t n;
    state_of(d, &s, &n);
    assert_int_equal(n, want_len);
    assert_memory_equal(s, want, n);
    vv_free(s);
}

static void expect_same(struct vv_crdt_seq *a, struct vv_crdt_seq *b)
{
    uint8_t *s;
    size_t n;
    state_of(a, &s, &n);
    expect_state(b, s, n);
    vv_free(s);
}

/* A document holding text of replicas 1 and 2, with a tombstone and a few runs. */
static struct vv_crdt_seq *base_doc(uint64_t self)
{
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    assert_int_equal(vv_crdt_seq_insert(a, 0, "hello world", 11, NULL, NULL), 0);
    assert_int_equal(vv_crdt_seq_merge(b, a), 0);
    assert_int_equal(vv_crdt_seq_insert(b, 5, ",", 1, NULL, NULL), 0);
    assert_int_equal(vv_crdt_seq_delete(b, 0, 1, NULL, NULL), 0);
    struct vv_crdt_seq *d = vv_crdt_seq_new(self);
    assert_int_equal(vv_crdt_seq_merge(d, b), 0);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
    return d;
}

/* The probe's update: one replica, 100,000 records all claiming the document's ends as
 * origins. The second record already meets the first between its origins, which no honest
 * writer can produce: refused at once, nothing changed. */
static void test_one_replica_pile_is_refused_at_once_and_changes_nothing(void **state)
{
    (void)state;
    size_t len;
    uint8_t *pile = vv_test_seq_pile(100000, 1, 900, &len);
    assert_true(len < 420000); /* about 4 bytes a record, as the probe measured */

    struct vv_crdt_seq *empty = vv_crdt_seq_new(7);
    assert_int_equal(vv_crdt_seq_apply(empty, pile, len), VV_ECRDT_HISTORY);
    assert_int_equal(vv_crdt_seq_len(empty), 0);
    assert_int_equal(vv_crdt_seq_run_count(empty), 0);
    assert_true(vv_crdt_seq_last_work(empty) <= 2);

    struct vv_crdt_seq *d = base_doc(7);
    uint8_t *before;
    size_t bl;
    state_of(d, &before, &bl);
    assert_int_equal(vv_crdt_seq_apply(d, pile, len), VV_ECRDT_HISTORY);
    expect_state(d, before, bl);
    vv_free(before);
    free(pile);
    vv_crdt_seq_free(empty);
    vv_crdt_seq_free(d);
}

/* The same pile spread over 30,000 replicas is a history an honest network could write in
 * principle (each typed one letter into an empty document, none seeing another), but placing
 * it costs n^2/2 scan steps: refused once the budget (VV_CRDT_SEQ_WORK_MAX steps) is spent, and
 * rolled back whole. */
static void test_many_replica_pile_is_refused_by_the_budget_and_rolled_back(void **state)
{
    (void)state;
    size_t len;
    uint8_t *pile = vv_test_seq_pile(30000, 30000, 1000, &len);
    struct vv_crdt_seq *d = base_doc(7), *twin = base_doc(7);
    uint8_t *before;
    size_t bl;
    state_of(d, &before, &bl);
    assert_int_equal(vv_crdt_seq_apply(d, pile, len), VV_ECRDT_COST);
    assert_int_equal(vv_crdt_seq_last_work(d), (uint64_t)VV_CRDT_SEQ_WORK_MAX + 1);
    expect_state(d, before, bl);

    /* The document works on as if the pile never came: local edits and a remote update give
     * what they give on a twin that never saw it. */
    struct vv_crdt_seq *r = vv_crdt_seq_new(3);
    assert_int_equal(vv_crdt_seq_merge(r, d), 0);
    uint8_t *u;
    size_t ul;
    assert_int_equal(vv_crdt_seq_insert(r, 3, "remote", 6, &u, &ul), 0);
    assert_int_equal(vv_crdt_seq_apply(d, u, ul), 0);
    assert_int_equal(vv_crdt_seq_apply(twin, u, ul), 0);
    assert_int_equal(vv_crdt_seq_insert(d, 1, "local", 5, NULL, NULL), 0);
    assert_int_equal(vv_crdt_seq_insert(twin, 1, "local", 5, NULL, NULL), 0);
    expect_same(d, twin);
    vv_free(u);
    vv_free(before);
    free(pile);
    vv_crdt_seq_free(r);
    vv_crdt_seq_free(d);
    vv_crdt_seq_free(twin);
}

/* A few hundred replicas typing at one place at once is within the budget, and the pile
 * converges whether it comes whole or record by record in reverse. */
static void test_modest_concurrency_at_one_place_is_accepted_and_converges(void **state)
{
    (void)state;
    enum { N = 300 };
    size_t len;
    uint8_t *pile = vv_test_seq_pile(N, N, 5000, &len);
    struct vv_crdt_seq *whole = vv_crdt_seq_new(7), *parts = vv_crdt_seq_new(8);
    assert_int_equal(vv_crdt_seq_apply(whole, pile, len), 0);
    assert_true(vv_crdt_seq_last_work(whole) <= (uint64_t)N * N / 2);
    for (int i = N - 1; i >= 0; i--) {
        size_t ol;
        uint8_t *one = vv_test_seq_pile(1, 1, 5000 + (uint64_t)i, &ol);
        /* The single record must carry its letter of the pile. */
        one[ol - 1] = (uint8_t)('a' + i % 26);
        assert_int_equal(vv_crdt_seq_apply(parts, one, ol), 0);
        free(one);
    }
    assert_int_equal(vv_crdt_seq_len(whole), N);
    expect_same(whole, parts);
    free(pile);
    vv_crdt_seq_free(whole);
    vv_crdt_seq_free(parts);
}

/* A forged update whose first record splits a run of the document and whose second record,
 * of the same replica and with the same origins, is impossible: the split, the new run and
 * the new replica are all undone. */
static void test_refused_update_undoes_its_splits_runs_and_replicas(void **state)
{
    (void)state;
    struct vv_crdt_seq *d = vv_crdt_seq_new(1);
    assert_int_equal(vv_crdt_seq_insert(d, 0, "hello", 5, NULL, NULL), 0);
    assert_int_equal(vv_crdt_seq_run_count(d), 1);
    uint8_t *before;
    size_t bl;
    state_of(d, &before, &bl);

    struct vv_test_buf b = {0};
    uint8_t head[2] = {1, 0};
    vv_test_put(&b, head, 2);
    vv_test_put_varint(&b, 2);
    uint8_t ids[16] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 99};
    vv_test_put(&b, ids, 16);
    vv_test_put_varint(&b, 2);
    for (int i = 0; i < 2; i++) {
        /* length 1, left and right origins explicit (3), "same agent" for the second */
        vv_test_put_varint(&b, 1u << 7 | 3u << 1 | 3u << 3 | (i ? 0x40u : 0u));
        vv_test_put_varint(&b, 0); /* left origin: replica 1, seq 2 */
        vv_test_put_varint(&b, 2);
        if (i == 0)
            vv_test_put_varint(&b, 1); /* the record's replica: 99 */
        vv_test_put_varint(&b, 0);     /* its seq follows on */
        vv_test_put_varint(&b, 0);     /* right origin: replica 1, seq 3 */
        vv_test_put_varint(&b, 3);
    }
    vv_test_put_varint(&b, 0);
    vv_test_put_varint(&b, 2);
    uint8_t content[3] = {0, 'X', 'Y'};
    vv_test_put(&b, content, 3);

    assert_int_equal(vv_crdt_seq_apply(d, b.p, b.n), VV_ECRDT_HISTORY);
    expect_state(d, before, bl);
    assert_int_equal(vv_crdt_seq_run_count(d), 1);

    /* Typing on at the end still extends the one run: the index and the text agree. */
    assert_int_equal(vv_crdt_seq_insert(d, 5, "!", 1, NULL, NULL), 0);
    assert_int_equal(vv_crdt_seq_run_count(d), 1);
    size_t n;
    char *t = vv_crdt_seq_text(d, &n);
    assert_string_equal(t, "hello!");
    vv_free(t);

    /* Only the first record is honest: alone, it applies and lands inside the run. */
    uint8_t *first = b.p; /* rewrite the record count and drop the second record */
    struct vv_test_buf c = {0};
    vv_test_put(&c, first, 2 + 1 + 16);
    vv_test_put_varint(&c, 1);
    vv_test_put_varint(&c, 1u << 7 | 3u << 1 | 3u << 3);
    uint8_t rec[6] = {0, 2, 1, 0, 0, 3};
    vv_test_put(&c, rec, 6);
    vv_test_put_varint(&c, 0);
    vv_test_put_varint(&c, 1);
    uint8_t one[2] = {0, 'X'};
    vv_test_put(&c, one, 2);
    assert_int_equal(vv_crdt_seq_apply(d, c.p, c.n), 0);
    t = vv_crdt_seq_text(d, &n);
    assert_string_equal(t, "helXlo!");
    vv_free(t);
    free(b.p);
    free(c.p);
    vv_free(before);
    vv_crdt_seq_free(d);
}

/* Two replicas that typed long texts apart into an empty document, then merged. One of them
 * started a new line at the top a thousand times: each of those scans every run the other
 * wrote (a million steps here). Honest merges like it stay inside the budget, both ways; one
 * with twice as many top lines would not (docs/crdt.md, "Cost of integration"). */
static void test_long_diverged_histories_merge_well_inside_the_budget(void **state)
{
    (void)state;
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(2);
    uint64_t rng = 12345;
    for (int i = 0; i < 20000; i++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        size_t la = vv_crdt_seq_len(a);
        /* a types forward with an occasional jump; b types forward too, and every 20th
         * letter it starts a new line at the top (backward at the start, a step per run of
         * a's text for each) */
        size_t pa = (rng >> 33) % 50 == 0 ? (size_t)((rng >> 40) % (la + 1)) : la;
        assert_int_equal(vv_crdt_seq_insert(a, pa, "a", 1, NULL, NULL), 0);
        size_t pb = i % 20 == 0 ? 0 : (size_t)(i % 20);
        assert_int_equal(vv_crdt_seq_insert(b, pb, "b", 1, NULL, NULL), 0);
    }
    struct vv_crdt_seq *a2 = vv_crdt_seq_new(1);
    assert_int_equal(vv_crdt_seq_merge(a2, a), 0);
    assert_int_equal(vv_crdt_seq_merge(a, b), 0);
    printf("# merge of b into a: %llu scan steps, %zu runs\n",
           (unsigned long long)vv_crdt_seq_last_work(a), vv_crdt_seq_run_count(a));
    assert_true(vv_crdt_seq_last_work(a) < VV_CRDT_SEQ_WORK_MAX);
    assert_int_equal(vv_crdt_seq_merge(b, a2), 0);
    assert_true(vv_crdt_seq_last_work(b) < VV_CRDT_SEQ_WORK_MAX);
    expect_same(a, b);
    assert_int_equal(vv_crdt_seq_len(a), 40000);
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(a2);
    vv_crdt_seq_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_replica_pile_is_refused_at_once_and_changes_nothing),
        cmocka_unit_test(test_many_replica_pile_is_refused_by_the_budget_and_rolled_back),
        cmocka_unit_test(test_modest_concurrency_at_one_place_is_accepted_and_converges),
        cmocka_unit_test(test_refused_update_undoes_its_splits_runs_and_replicas),
        cmocka_unit_test(test_long_diverged_histories_merge_well_inside_the_budget),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
