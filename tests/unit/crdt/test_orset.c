/*
 * OR-Set: add-wins under concurrent add and remove, observed removes win, the causal context
 * stays small after many add/remove cycles (no tombstones), "what you miss" deltas carry
 * removes, hostile encodings are refused without change, random delivery converges.
 */
#include "vv_test.h"

#include <string.h>

#include "types_prop.h"
#include "vivim/crdt.h"

struct upd {
    uint8_t *b;
    size_t n;
};

static struct upd add_str(struct vv_orset *s, uint64_t replica, const char *v)
{
    struct upd u;
    json_t *j = json_string(v);
    assert_int_equal(vv_orset_add(s, replica, j, &u.b, &u.n), 0);
    json_decref(j);
    return u;
}

static struct upd remove_str(struct vv_orset *s, const char *v)
{
    struct upd u;
    json_t *j = json_string(v);
    assert_int_equal(vv_orset_remove(s, j, &u.b, &u.n), 0);
    json_decref(j);
    return u;
}

static bool has_str(const struct vv_orset *s, const char *v)
{
    json_t *j = json_string(v);
    bool r = vv_orset_contains(s, j);
    json_decref(j);
    return r;
}

static void apply_free(struct vv_orset *s, struct upd u)
{
    assert_int_equal(vv_orset_apply(s, u.b, u.n), 0);
    vv_free(u.b);
}

static void assert_same_state(const struct vv_orset *a, const struct vv_orset *b)
{
    uint8_t *ea, *eb;
    size_t la, lb;
    vv_orset_encode(a, &ea, &la);
    vv_orset_encode(b, &eb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ea, eb, la);
    vv_free(ea);
    vv_free(eb);
}

static void test_values_are_json_sorted_by_encoding(void **state)
{
    (void)state;
    struct vv_orset *s = vv_orset_new();
    json_t *vals[] = {json_string("b"),           json_integer(10), json_integer(2),
                      json_pack("{s:i}", "k", 1), json_true(),      json_string("a")};
    for (size_t i = 0; i < VV_ARRAY_SIZE(vals); i++)
        assert_int_equal(vv_orset_add(s, 1, vals[i], NULL, NULL), 0);
    /* Adding again changes nothing visible. */
    assert_int_equal(vv_orset_add(s, 1, vals[0], NULL, NULL), 0);
    assert_int_equal(vv_orset_size(s), 6);
    json_t *j = vv_orset_to_json(s);
    char *text = json_dumps(j, JSON_COMPACT);
    /* Bytewise order of the canonical texts: "a" < "b" < 10 < 2 < true < {...} */
    assert_string_equal(text, "[\"a\",\"b\",10,2,true,{\"k\":1}]");
    free(text);
    json_decref(j);
    assert_int_equal(vv_orset_remove(s, vals[2], NULL, NULL), 0);
    assert_false(vv_orset_contains(s, vals[2]));
    assert_true(vv_orset_contains(s, vals[3]));
    assert_int_equal(vv_orset_size(s), 5);
    for (size_t i = 0; i < VV_ARRAY_SIZE(vals); i++)
        json_decref(vals[i]);
    vv_orset_free(s);
}

static void test_encoding_is_byte_exact(void **state)
{
    (void)state;
    struct vv_orset *s = vv_orset_new();
    struct upd u = add_str(s, 1, "a");
    const uint8_t want[] = {
        1, 0x04,                             /* version, OR-Set */
        1, 0,    0,   0,   0, 0, 0, 0, 1, 1, /* version vector: replica 1 → 1 */
        0,                                   /* dot cloud: empty */
        1,                                   /* one element */
        3, '"',  'a', '"',                   /* its canonical JSON text */
        1, 0,    0,   0,   0, 0, 0, 0, 1, 1, /* its dots: (1, 1) */
        0,                                   /* keep dots: none */
    };
    assert_int_equal(u.n, sizeof(want));
    assert_memory_equal(u.b, want, u.n);
    vv_free(u.b);
    uint8_t *e;
    size_t el;
    vv_orset_encode(s, &e, &el);
    assert_int_equal(el, sizeof(want));
    assert_memory_equal(e, want, el);
    vv_free(e);
    vv_orset_free(s);
}

static void test_concurrent_add_wins_over_remove(void **state)
{
    (void)state;
    struct vv_orset *a = vv_orset_new(), *b = vv_orset_new();
    apply_free(b, add_str(a, 1, "x"));
    /* b removes the add it saw, while a adds x again: the new add survives. */
    struct upd rm = remove_str(b, "x");
    struct upd re = add_str(a, 1, "x");
    assert_false(has_str(b, "x"));
    apply_free(a, rm);
    apply_free(b, re);
    assert_true(has_str(a, "x"));
    assert_true(has_str(b, "x"));
    assert_same_state(a, b);
    /* Concurrent adds at two replicas and a remove that saw only one: x stays. */
    struct vv_orset *c = vv_orset_new();
    struct upd ay = add_str(a, 1, "y"), cy = add_str(c, 3, "y");
    assert_int_equal(vv_orset_apply(b, ay.b, ay.n), 0);
    struct upd rmy = remove_str(b, "y");
    apply_free(a, rmy);
    assert_false(has_str(a, "y"));
    apply_free(a, cy);
    assert_true(has_str(a, "y"));
    vv_free(ay.b);
    vv_orset_free(a);
    vv_orset_free(b);
    vv_orset_free(c);
}

static void test_observed_remove_wins_and_stays_removed(void **state)
{
    (void)state;
    struct vv_orset *a = vv_orset_new(), *b = vv_orset_new();
    struct upd add = add_str(a, 1, "x");
    assert_int_equal(vv_orset_apply(b, add.b, add.n), 0);
    apply_free(a, remove_str(b, "x"));
    assert_false(has_str(a, "x"));
    /* The old add arriving again (a duplicate) does not bring x back. */
    assert_int_equal(vv_orset_apply(a, add.b, add.n), 0);
    assert_int_equal(vv_orset_apply(b, add.b, add.n), 0);
    assert_false(has_str(a, "x"));
    assert_false(has_str(b, "x"));
    /* Removing an absent value is a harmless no-op. */
    struct upd none = remove_str(a, "nothing");
    assert_int_equal(vv_orset_apply(b, none.b, none.n), 0);
    vv_free(none.b);
    vv_free(add.b);
    assert_same_state(a, b);
    vv_orset_free(a);
    vv_orset_free(b);
}

static void test_many_add_remove_cycles_leave_no_tombstones(void **state)
{
    (void)state;
    enum { CYCLES = 2000 };
    struct vv_orset *a = vv_orset_new(), *in_order = vv_orset_new(), *reversed = vv_orset_new();
    struct upd *ups = vv_xcalloc(2 * CYCLES, sizeof(*ups));
    char name[32];
    for (int i = 0; i < CYCLES; i++) {
        snprintf(name, sizeof(name), "item-%d", i % 37);
        ups[2 * i] = add_str(a, 1, name);
        ups[2 * i + 1] = remove_str(a, name);
    }
    for (int i = 0; i < 2 * CYCLES; i++)
        assert_int_equal(vv_orset_apply(in_order, ups[i].b, ups[i].n), 0);
    for (int i = 2 * CYCLES - 1; i >= 0; i--) {
        assert_int_equal(vv_orset_apply(reversed, ups[i].b, ups[i].n), 0);
        vv_free(ups[i].b);
    }
    vv_free(ups);
    uint8_t *e;
    size_t el;
    assert_int_equal(vv_orset_size(in_order), 0);
    assert_int_equal(vv_orset_size(reversed), 0);
    /* One version-vector entry and nothing else, however many cycles. */
    assert_int_equal(vv_orset_context_size(in_order), 16);
    assert_int_equal(vv_orset_context_size(reversed), 16);
    vv_orset_encode(reversed, &e, &el);
    assert_true(el <= 2 + 1 + 8 + 2 + 1 + 1 + 1);
    vv_free(e);
    assert_same_state(in_order, reversed);
    vv_orset_free(a);
    vv_orset_free(in_order);
    vv_orset_free(reversed);
}

static void test_delta_since_carries_adds_and_removes(void **state)
{
    (void)state;
    struct vv_orset *a = vv_orset_new(), *b = vv_orset_new(), *empty = vv_orset_new();
    char name[16];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "v%03d", i);
        vv_free(add_str(a, 1, name).b);
    }
    uint8_t *full;
    size_t fl;
    vv_orset_encode(a, &full, &fl);
    assert_int_equal(vv_orset_apply(b, full, fl), 0);
    /* a removes some that b has, adds new ones; b sends its vector. */
    vv_free(remove_str(a, "v010").b);
    vv_free(remove_str(a, "v050").b);
    vv_free(add_str(a, 1, "new").b);
    struct vv_crdt_sv sv = {0};
    assert_int_equal(vv_orset_state_vector(b, &sv), 0);
    assert_int_equal(vv_crdt_sv_get(&sv, 1), 100);
    uint8_t *d;
    size_t dl;
    assert_int_equal(vv_orset_delta_since(a, &sv, &d, &dl), 0);
    assert_true(dl < fl); /* values of what b has are not sent again */
    /* A replica without b's history can't use it, and is not changed. */
    assert_int_equal(vv_orset_apply(empty, d, dl), VV_ECRDT_CAUSALITY);
    assert_int_equal(vv_orset_size(empty), 0);
    assert_int_equal(vv_orset_context_size(empty), 0);
    struct vv_orset *x = NULL;
    assert_int_equal(vv_orset_decode(d, dl, &x), VV_ECRDT_DECODE); /* not a state */
    assert_int_equal(vv_orset_apply(b, d, dl), 0);
    assert_false(has_str(b, "v010"));
    assert_false(has_str(b, "v050"));
    assert_true(has_str(b, "v051"));
    assert_true(has_str(b, "new"));
    assert_same_state(a, b);
    vv_free(d);
    vv_free(full);
    vv_crdt_sv_clear(&sv);
    vv_orset_free(a);
    vv_orset_free(b);
    vv_orset_free(empty);
}

static void test_hostile_encodings_are_rejected_without_change(void **state)
{
    (void)state;
    struct vv_orset *s = vv_orset_new();
    vv_free(add_str(s, 5, "keep").b);
    uint8_t *before;
    size_t bl;
    vv_orset_encode(s, &before, &bl);
    const uint8_t unknown_version[] = {9, 0x04, 0, 0, 0, 0};
    const uint8_t wrong_type[] = {1, 0x05, 0, 0, 0, 0};
    const uint8_t huge_elements[] = {1, 0x04, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f};
    /* A dot alive but outside the context. */
    const uint8_t dot_outside[] = {1, 0x04, 0, 0, 1, 3, '"', 'z', '"', 1,
                                   0, 0,    0, 0, 0, 0, 0,   1,   1,   0};
    /* A value that is not canonical JSON (a space). */
    const uint8_t not_canonical[] = {1,   0x04, 1,   0,   0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 4,
                                     '[', ' ',  '1', ']', 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0};
    /* A cloud dot that belongs in the version vector (not compact). */
    const uint8_t cloud_not_compact[] = {1, 0x04, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0};
    /* The same dot alive under two elements. */
    const uint8_t dot_twice[] = {1, 0x04, 1, 0, 0, 0, 0, 0,   0, 0, 1, 1, 0, 2, 1, '1', 1, 0, 0, 0,
                                 0, 0,    0, 0, 1, 1, 1, '2', 1, 0, 0, 0, 0, 0, 0, 0,   1, 1, 0};
    const uint8_t *cases[] = {unknown_version, wrong_type,        huge_elements, dot_outside,
                              not_canonical,   cloud_not_compact, dot_twice};
    const size_t lens[] = {sizeof(unknown_version), sizeof(wrong_type),
                           sizeof(huge_elements),   sizeof(dot_outside),
                           sizeof(not_canonical),   sizeof(cloud_not_compact),
                           sizeof(dot_twice)};
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        assert_int_equal(vv_orset_apply(s, cases[i], lens[i]), VV_ECRDT_DECODE);
        struct vv_orset *x = NULL;
        assert_int_equal(vv_orset_decode(cases[i], lens[i], &x), VV_ECRDT_DECODE);
    }
    /* The dot_twice case with the second element's dot changed is valid: the check is real. */
    uint8_t fixed[sizeof(dot_twice)];
    memcpy(fixed, dot_twice, sizeof(fixed));
    fixed[11] = 2;                /* vv: replica 1 → 2 */
    fixed[sizeof(fixed) - 2] = 2; /* second element's dot: (1, 2) */
    assert_int_equal(vv_orset_apply(s, fixed, sizeof(fixed)), 0);
    assert_int_equal(vv_orset_size(s), 3);
    vv_orset_free(s);
    s = vv_orset_new();
    vv_free(add_str(s, 5, "keep").b);
    for (size_t n = 0; n < bl; n++)
        assert_int_equal(vv_orset_apply(s, before, n), VV_ECRDT_DECODE);
    uint8_t *after;
    size_t al;
    vv_orset_encode(s, &after, &al);
    assert_int_equal(al, bl);
    assert_memory_equal(after, before, bl);
    vv_free(before);
    vv_free(after);
    vv_orset_free(s);
}

static void test_merge_in_memory_equals_applying_the_encoding(void **state)
{
    (void)state;
    struct vv_orset *a = vv_orset_new(), *b = vv_orset_new(), *c = vv_orset_new();
    struct upd shared = add_str(a, 1, "shared");
    assert_int_equal(vv_orset_apply(b, shared.b, shared.n), 0);
    assert_int_equal(vv_orset_apply(c, shared.b, shared.n), 0);
    vv_free(shared.b);
    vv_free(add_str(a, 1, "only-a").b);
    vv_free(add_str(b, 2, "only-b").b);
    vv_free(remove_str(b, "shared").b);
    vv_free(add_str(c, 3, "only-c").b);
    /* c takes a by encoding then b by encoding; a takes c and b in memory. */
    uint8_t *e;
    size_t el;
    vv_orset_encode(a, &e, &el);
    assert_int_equal(vv_orset_apply(c, e, el), 0);
    vv_free(e);
    vv_orset_encode(b, &e, &el);
    assert_int_equal(vv_orset_apply(c, e, el), 0);
    vv_free(e);
    assert_int_equal(vv_orset_merge(a, b), 0);
    assert_int_equal(vv_orset_merge(a, c), 0);
    assert_int_equal(vv_orset_merge(a, a), 0);
    assert_same_state(a, c);
    assert_false(has_str(a, "shared"));
    assert_true(has_str(a, "only-a") && has_str(a, "only-b") && has_str(a, "only-c"));
    /* The merged state keeps working: a remove of an element merged in. */
    vv_free(remove_str(a, "only-b").b);
    assert_false(has_str(a, "only-b"));
    assert_int_equal(vv_orset_size(a), 2);
    vv_orset_free(a);
    vv_orset_free(b);
    vv_orset_free(c);
}

/* ---- convergence -------------------------------------------------------------------------- */

static void *os_create(void)
{
    return vv_orset_new();
}
static void os_destroy(void *o)
{
    vv_orset_free(o);
}
static int os_apply(void *o, const uint8_t *b, size_t l)
{
    return vv_orset_apply(o, b, l);
}
static int os_encode(const void *o, uint8_t **b, size_t *l)
{
    return vv_orset_encode(o, b, l);
}
static json_t *os_json(const void *o)
{
    return vv_orset_to_json(o);
}
static void os_op(void *o, unsigned r, uint64_t now, uint64_t *rng, uint8_t **d, size_t *dl)
{
    (void)now;
    /* A small universe so adds and removes of the same values collide often. */
    uint64_t k = prop_below(rng, 8);
    json_t *v = k < 4 ? json_integer((json_int_t)k) : json_sprintf("s%d", (int)k);
    if (prop_below(rng, 3) == 0)
        assert_int_equal(vv_orset_remove(o, v, d, dl), 0);
    else
        assert_int_equal(vv_orset_add(o, prop_replica_id(r), v, d, dl), 0);
    json_decref(v);
}

/* A wide universe: sets of hundreds of elements, so the dot index grows, collides and
 * shifts entries back on removal, and full-state merges take the merge-walk path. */
static void os_op_wide(void *o, unsigned r, uint64_t now, uint64_t *rng, uint8_t **d, size_t *dl)
{
    (void)now;
    json_t *v = json_integer((json_int_t)prop_below(rng, 600));
    if (prop_below(rng, 3) == 0)
        assert_int_equal(vv_orset_remove(o, v, d, dl), 0);
    else
        assert_int_equal(vv_orset_add(o, prop_replica_id(r), v, d, dl), 0);
    json_decref(v);
}

static void test_large_sets_converge(void **state)
{
    (void)state;
    const struct prop_type t = {os_create, os_destroy, os_apply, os_encode, os_json, os_op_wide};
    for (uint64_t seed = 100; seed < 104; seed++)
        prop_run(&t, 3 + (unsigned)(seed % 3), 3000, seed);
}

static void test_random_delivery_converges(void **state)
{
    (void)state;
    const struct prop_type t = {os_create, os_destroy, os_apply, os_encode, os_json, os_op};
    for (uint64_t seed = 1; seed <= 60; seed++)
        prop_run(&t, 3 + (unsigned)(seed % 3), 150, seed);
}

/* One round of anti-entropy from src to dst: dst sends its version vector, src answers with
 * delta_since, dst applies it. Goes through the encodings, as between two nodes. */
static void sync_by_state_vector(struct vv_orset *dst, const struct vv_orset *src)
{
    struct vv_crdt_sv sv = {0}, sv_in = {0};
    uint8_t *svb, *d;
    size_t svl, dl;
    assert_int_equal(vv_orset_state_vector(dst, &sv), 0);
    assert_int_equal(vv_crdt_sv_encode(&sv, &svb, &svl), 0);
    assert_int_equal(vv_crdt_sv_decode(svb, svl, &sv_in), 0);
    assert_int_equal(vv_orset_delta_since(src, &sv_in, &d, &dl), 0);
    assert_int_equal(vv_orset_apply(dst, d, dl), 0);
    vv_free(svb);
    vv_free(d);
    vv_crdt_sv_clear(&sv);
    vv_crdt_sv_clear(&sv_in);
}

static void test_state_vector_sync_converges(void **state)
{
    (void)state;
    enum { R = 4 };
    for (uint64_t seed = 1; seed <= 30; seed++) {
        uint64_t rng = seed;
        struct vv_orset *rep[R];
        for (int i = 0; i < R; i++)
            rep[i] = vv_orset_new();
        /* The join of every update made: what the replicas must end with. */
        struct vv_orset *truth = vv_orset_new();
        /* Random operations, with random one-way syncs between them. */
        for (int k = 0; k < 200; k++) {
            unsigned r = (unsigned)prop_below(&rng, R);
            if (prop_below(&rng, 4) == 0) {
                unsigned from = (unsigned)prop_below(&rng, R);
                if (from != r)
                    sync_by_state_vector(rep[r], rep[from]);
                continue;
            }
            uint8_t *d;
            size_t dl;
            os_op(rep[r], r, 0, &rng, &d, &dl);
            assert_int_equal(vv_orset_apply(truth, d, dl), 0);
            vv_free(d);
        }
        /* Then everyone pulls from everyone twice: equal states. */
        for (int round = 0; round < 2; round++)
            for (int i = 0; i < R; i++)
                for (int j = 0; j < R; j++)
                    if (i != j)
                        sync_by_state_vector(rep[i], rep[j]);
        for (int i = 0; i < R; i++)
            assert_same_state(truth, rep[i]);
        vv_orset_free(truth);
        for (int i = 0; i < R; i++)
            vv_orset_free(rep[i]);
    }
}

/* The inverse of an odd number modulo 2^64 (Newton's iteration). */
static uint64_t inverse_mod_2_64(uint64_t a)
{
    uint64_t x = a; /* right in the low 3 bits; each step doubles the right bits */
    for (int i = 0; i < 5; i++)
        x *= 2 - a * x;
    return x;
}

/*
 * The replica of a dot comes from whoever made it, so a peer picks the keys of the index of
 * live dots. The index once hashed dots with a fixed invertible mixer; this runs the mixer
 * backwards to make 10,000 dots (replica, 1) whose home slot is 0 in a table of any size up
 * to 2^14. With the keyed hash they spread, and the longest probe run stays short.
 */
static void test_dots_chosen_to_collide_do_not_form_one_probe_run(void **state)
{
    (void)state;
    enum { N = 10000 };
    const uint64_t c1 = 0x9e3779b97f4a7c15ULL, c2 = 0xbf58476d1ce4e5b9ULL;
    const uint64_t c1_inv = inverse_mod_2_64(c1), c2_inv = inverse_mod_2_64(c2);
    struct vv_orset *s = vv_orset_new();
    for (uint64_t i = 1; i <= N; i++) {
        /* Old mixer: h = r*c1 ^ counter; h ^= h >> 29; h *= c2; h ^= h >> 32; slot = low bits. */
        uint64_t h = i << 14;
        h ^= h >> 32;
        h *= c2_inv;
        h ^= (h >> 29) ^ (h >> 58);
        uint64_t replica = (h ^ 1) * c1_inv;
        assert_true(replica != 0);
        json_t *v = json_integer((json_int_t)i);
        assert_int_equal(vv_orset_add(s, replica, v, NULL, NULL), 0);
        json_decref(v);
    }
    assert_int_equal(vv_orset_size(s), N);
    /* Under the old mixer: one run of 10,000 slots. */
    assert_true(vv__orset_longest_probe(s) <= 100);
    vv_orset_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_are_json_sorted_by_encoding),
        cmocka_unit_test(test_encoding_is_byte_exact),
        cmocka_unit_test(test_concurrent_add_wins_over_remove),
        cmocka_unit_test(test_observed_remove_wins_and_stays_removed),
        cmocka_unit_test(test_many_add_remove_cycles_leave_no_tombstones),
        cmocka_unit_test(test_delta_since_carries_adds_and_removes),
        cmocka_unit_test(test_hostile_encodings_are_rejected_without_change),
        cmocka_unit_test(test_merge_in_memory_equals_applying_the_encoding),
        cmocka_unit_test(test_random_delivery_converges),
        cmocka_unit_test(test_large_sets_converge),
        cmocka_unit_test(test_state_vector_sync_converges),
        cmocka_unit_test(test_dots_chosen_to_collide_do_not_form_one_probe_run),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
