/*
 * The iterative lookup (vivim/dht_lookup.h) against a network modelled in this test: nodes
 * with random IDs, each with a Kademlia routing table over the others (up to k per bucket),
 * answering a query with the k contacts of its table closest to the target. The test plays
 * the module: it sends what vv_dht_lookup_next asks, delivers answers after each node's
 * round-trip time, and fails queries at their hard timeout. Checked: the round-trip
 * estimator; lookups finding the true closest nodes in few hops; soft timeouts moving on
 * past dead nodes after about a round trip, with late answers still taken; the end condition
 * and answers after it; the bounds under an endless stream of fresh IDs; disjoint paths
 * holding where one path is captured by nodes answering with bogus closer nodes.
 */
#include "vv_test.h"

#include <string.h>

#include "vivim/dht_lookup.h"

/* ---- a deterministic modelled network ------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static void rnd_id(uint8_t *id)
{
    for (int i = 0; i < VV_DHT_ID_BYTES; i += 8) {
        uint64_t x = rnd();
        memcpy(id + i, &x, 8);
    }
}

#define MAXN 2000
#define K    20

struct net {
    size_t n;
    struct vv_dht_contact node[MAXN];
    uint32_t *table[MAXN]; /* indices of the contacts each node knows */
    size_t table_len[MAXN];
    uint32_t rtt[MAXN]; /* ms */
    bool dead[MAXN];    /* never answers */
    bool evil[MAXN];    /* answers with the evil nodes closest to the target */
};

static void net_init(struct net *w, size_t n, uint64_t seed)
{
    memset(w, 0, sizeof(*w));
    rng_state = seed;
    w->n = n;
    for (size_t i = 0; i < n; i++) {
        rnd_id(w->node[i].id);
        w->node[i].addr.family = VV_DHT_INET4;
        w->node[i].addr.ip[0] = 10;
        w->node[i].addr.ip[1] = (uint8_t)(i >> 16);
        w->node[i].addr.ip[2] = (uint8_t)(i >> 8);
        w->node[i].addr.ip[3] = (uint8_t)i;
        w->node[i].addr.port = 4747;
        w->rtt[i] = 10 + (uint32_t)(rnd() % 41); /* 10 .. 50 ms */
    }
    /* Tables: every other node, bucket by bucket, the first k met in a random order. */
    uint32_t *perm = vv_xmalloc(n * sizeof(*perm));
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++)
            perm[j] = (uint32_t)j;
        for (size_t j = n - 1; j > 0; j--) {
            size_t r = rnd() % (j + 1);
            uint32_t t = perm[j];
            perm[j] = perm[r];
            perm[r] = t;
        }
        uint8_t fill[257] = {0};
        w->table[i] = vv_xmalloc(n * sizeof(uint32_t));
        for (size_t j = 0; j < n; j++) {
            uint32_t o = perm[j];
            if (o == i)
                continue;
            unsigned b = vv_dht_common_prefix(w->node[i].id, w->node[o].id);
            if (fill[b] < K) {
                fill[b]++;
                w->table[i][w->table_len[i]++] = o;
            }
        }
    }
    vv_free(perm);
}

static void net_free(struct net *w)
{
    for (size_t i = 0; i < w->n; i++)
        vv_free(w->table[i]);
}

/* The node with that ID, or -1: a sybil an evil node made up (served by the attacker). */
static long index_of(const struct net *w, const uint8_t *id)
{
    for (size_t i = 0; i < w->n; i++)
        if (memcmp(w->node[i].id, id, VV_DHT_ID_BYTES) == 0)
            return (long)i;
    return -1;
}

/* The n nodes of set (indices) closest to target, nearest first, into out (indices). */
static size_t closest_of(const struct net *w, const uint32_t *set, size_t len,
                         const uint8_t *target, size_t n, uint32_t *out)
{
    size_t got = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t x = set[i];
        size_t pos = got;
        while (pos > 0 && vv_dht_distance_cmp(target, w->node[out[pos - 1]].id, w->node[x].id) > 0)
            pos--;
        if (pos >= n)
            continue;
        size_t move = (got < n ? got : n - 1) - pos;
        memmove(&out[pos + 1], &out[pos], move * sizeof(*out));
        out[pos] = x;
        if (got < n)
            got++;
    }
    return got;
}

/* What node x answers for target: its table's k closest. An evil node, or a sybil (x < 0),
 * answers with k made-up IDs sharing 64 bits with the target, closer than any real node,
 * at addresses the attacker answers on: a path that asks one is captured. */
static size_t answer(const struct net *w, long x, const uint8_t *target, struct vv_dht_contact *out)
{
    if (x < 0 || w->evil[x]) {
        for (size_t i = 0; i < K; i++) {
            memcpy(out[i].id, target, VV_DHT_ID_BYTES);
            for (int b = 8; b < VV_DHT_ID_BYTES; b++)
                out[i].id[b] = (uint8_t)rnd();
            out[i].addr = w->node[0].addr;
        }
        return K;
    }
    uint32_t idx[K];
    size_t got = closest_of(w, w->table[x], w->table_len[x], target, K, idx);
    for (size_t i = 0; i < got; i++)
        out[i] = w->node[idx[i]];
    return got;
}

/* The true k closest live honest nodes. */
static size_t truth(const struct net *w, const uint8_t *target, uint32_t *out)
{
    uint32_t *all = vv_xmalloc(w->n * sizeof(*all));
    size_t m = 0;
    for (size_t i = 0; i < w->n; i++)
        if (!w->dead[i] && !w->evil[i])
            all[m++] = (uint32_t)i;
    size_t got = closest_of(w, all, m, target, K, out);
    vv_free(all);
    return got;
}

/* ---- the module's part: events in time order ------------------------------------------ */

struct event {
    uint64_t at;
    long node; /* -1: a sybil */
    uint8_t id[VV_DHT_ID_BYTES];
    bool fail; /* hard timeout, else an answer */
};

struct run {
    uint64_t now, done_at;
    uint32_t hops, queries;
    const uint32_t *watch; /* nodes whose answers the test looks for */
    size_t n_watch;
    bool watch_seen; /* one of them answered during the lookup */
};

/* Runs a lookup by node `from` for target to its end; returns the closest it found. */
static size_t run_lookup(struct net *w, size_t from, const uint8_t *target,
                         const struct vv_dht_lookup_config *cfg, struct vv_dht_contact *result,
                         struct run *r)
{
    struct vv_dht_rtt est = {0};
    struct vv_dht_lookup *l = vv_dht_lookup_new(target, w->node[from].id, cfg, &est);
    struct vv_dht_contact seed[K];
    uint16_t seed_rtt[K];
    size_t ns = answer(w, from, target, seed);
    for (size_t i = 0; i < ns; i++)
        seed_rtt[i] = (uint16_t)w->rtt[index_of(w, seed[i].id)];
    r->watch_seen = false;
    vv_dht_lookup_seed(l, seed, seed_rtt, ns);
    static struct event ev[4096];
    size_t nev = 0;
    uint64_t now = 0;
    for (;;) {
        struct vv_dht_lookup_query q[64];
        size_t nq = vv_dht_lookup_next(l, now, q, 64);
        for (size_t i = 0; i < nq; i++) {
            long x = index_of(w, q[i].to.id);
            assert_true(q[i].soft_timeout_ms <= q[i].hard_timeout_ms);
            assert_true(nev < 4096);
            struct event *e = &ev[nev++];
            memcpy(e->id, q[i].to.id, VV_DHT_ID_BYTES);
            e->node = x;
            e->fail = x >= 0 && w->dead[x];
            e->at = now + (e->fail ? q[i].hard_timeout_ms : x >= 0 ? w->rtt[x] : 10);
        }
        if (vv_dht_lookup_done(l))
            break;
        /* The next event, or the lookup's own wake-up. */
        uint64_t wake = vv_dht_lookup_wake_at(l);
        size_t best = nev;
        for (size_t i = 0; i < nev; i++)
            if (best == nev || ev[i].at < ev[best].at)
                best = i;
        if (best == nev && wake == UINT64_MAX)
            fail_msg("a lookup that is not done has nothing to wait for");
        if (best == nev || wake < ev[best].at) {
            now = wake;
            continue;
        }
        struct event e = ev[best];
        ev[best] = ev[--nev];
        now = e.at;
        if (e.fail) {
            (void)vv_dht_lookup_failed(l, e.id, now);
        } else {
            struct vv_dht_contact closer[K];
            size_t nc = answer(w, e.node, target, closer);
            vv_dht_rtt_sample(&est, e.node >= 0 ? w->rtt[e.node] : 10);
            if (vv_dht_lookup_answered(l, e.id, now, closer, nc) == 0)
                for (size_t i = 0; i < r->n_watch; i++)
                    r->watch_seen |= e.node == (long)r->watch[i];
        }
    }
    size_t got = vv_dht_lookup_closest(l, result, K);
    r->now = now;
    r->done_at = now;
    r->hops = vv_dht_lookup_hops(l);
    r->queries = vv_dht_lookup_stats(l)->queries;
    assert_true(r->queries <= cfg->max_queries);
    vv_dht_lookup_free(l);
    return got;
}

static size_t overlap(const struct net *w, const struct vv_dht_contact *got, size_t n,
                      const uint32_t *want, size_t m)
{
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++)
            same += memcmp(got[i].id, w->node[want[j]].id, VV_DHT_ID_BYTES) == 0;
    return same;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_rtt_estimator_and_timeouts(void **state)
{
    (void)state;
    struct vv_dht_rtt r = {0};
    /* Nothing measured: the cap. */
    assert_int_equal(vv_dht_rtt_timeout(&r, 0, 10, 2000), 2000);
    assert_int_equal(vv_dht_rtt_timeout(NULL, 0, 10, 2000), 2000);
    vv_dht_rtt_sample(&r, 100);
    assert_int_equal(r.srtt_ms, 100);
    assert_int_equal(r.rttvar_ms, 50);
    assert_int_equal(vv_dht_rtt_timeout(&r, 0, 10, 2000), 300);
    vv_dht_rtt_sample(&r, 20); /* rttvar = (150 + 80) / 4, srtt = (700 + 20) / 8 */
    assert_int_equal(r.rttvar_ms, 57);
    assert_int_equal(r.srtt_ms, 90);
    /* The contact's own RTT first; then the clamps. */
    assert_int_equal(vv_dht_rtt_timeout(&r, 30, 10, 2000), 60);
    assert_int_equal(vv_dht_rtt_timeout(&r, 2, 10, 2000), 10);
    assert_int_equal(vv_dht_rtt_timeout(&r, 5000, 10, 2000), 2000);
}

static void test_lookups_find_the_closest_nodes_in_few_hops(void **state)
{
    (void)state;
    static struct net w;
    net_init(&w, MAXN, 1);
    struct vv_dht_lookup_config cfg;
    vv_dht_lookup_config_defaults(&cfg);
    uint32_t max_hops = 0, exact = 0;
    for (int t = 0; t < 20; t++) {
        uint8_t target[VV_DHT_ID_BYTES];
        rnd_id(target);
        struct vv_dht_contact got[K];
        struct run r = {0};
        size_t n = run_lookup(&w, rnd() % w.n, target, &cfg, got, &r);
        uint32_t want[K];
        size_t m = truth(&w, target, want);
        assert_int_equal(n, K);
        /* The nearest node is always found, and nearly all of the k nearest. */
        assert_memory_equal(got[0].id, w.node[want[0]].id, VV_DHT_ID_BYTES);
        assert_true(overlap(&w, got, n, want, m) >= K - 2);
        exact += overlap(&w, got, n, want, m) == K;
        max_hops = VV_MAX(max_hops, r.hops);
        assert_true(r.hops >= 1);
    }
    assert_true(exact >= 15);
    assert_true(max_hops <= 5); /* log2(2000 / 20) is under 7 */
    net_free(&w);
}

/* A third of the nodes dead: lookups still end with the closest live nodes, and they end in
 * a few round trips of the dead nodes' soft timeouts, far sooner than their hard timeouts
 * (2 s each) would let them. */
static void test_dead_nodes_cost_about_a_round_trip(void **state)
{
    (void)state;
    static struct net w;
    net_init(&w, MAXN, 2);
    for (size_t i = 0; i < w.n; i++)
        w.dead[i] = rnd() % 3 == 0;
    struct vv_dht_lookup_config cfg;
    vv_dht_lookup_config_defaults(&cfg);
    uint64_t worst = 0;
    for (int t = 0; t < 20; t++) {
        uint8_t target[VV_DHT_ID_BYTES];
        rnd_id(target);
        size_t from;
        do
            from = rnd() % w.n;
        while (w.dead[from]);
        struct vv_dht_contact got[K];
        struct run r = {0};
        size_t n = run_lookup(&w, from, target, &cfg, got, &r);
        uint32_t want[K];
        size_t m = truth(&w, target, want);
        /* The other nodes' tables still list the dead ones (nothing evicts them in this
         * model), and answers name the k closest a table holds, so live nodes past the k
         * closest of all may never be named: the lookup owes about the live ones among the
         * k closest of all (a table may lack one of those), and never a dead one. */
        uint32_t all[MAXN], top[K];
        for (size_t i = 0; i < w.n; i++)
            all[i] = (uint32_t)i;
        closest_of(&w, all, w.n, target, K, top);
        size_t live = 0;
        for (size_t i = 0; i < K; i++)
            live += !w.dead[top[i]];
        assert_true(n >= live - 2);
        for (size_t i = 0; i < n; i++)
            assert_false(w.dead[index_of(&w, got[i].id)]);
        assert_memory_equal(got[0].id, w.node[want[0]].id, VV_DHT_ID_BYTES);
        assert_true(overlap(&w, got, n, want, m) >= live - 2);
        worst = VV_MAX(worst, r.done_at);
    }
    /* Hops of at most 50 ms plus soft timeouts of at most 100 ms: well under one hard
     * timeout. */
    /* Each dead node costs its soft timeout, about 70 ms here (srtt + 4 rttvar), where a
     * fixed timeout would cost 2 s: the slowest lookup (about 1 s in this run) stays under
     * a single such timeout. */
    print_message("slowest lookup with a third of the nodes dead: %llu ms\n",
                  (unsigned long long)worst);
    assert_true(worst < 2000);
    net_free(&w);
}

static void contact(struct vv_dht_contact *c, uint8_t first)
{
    memset(c, 0, sizeof(*c));
    memset(c->id, 0, VV_DHT_ID_BYTES);
    c->id[0] = first;
    c->addr.family = VV_DHT_INET4;
    c->addr.ip[0] = 10;
    c->addr.ip[3] = first;
    c->addr.port = 4747;
}

/* alpha 1: a silent node holds the lookup for its soft timeout, then the next is asked; the
 * silent node's late answer still counts. */
static void test_soft_timeout_moves_on_and_late_answers_count(void **state)
{
    (void)state;
    uint8_t target[VV_DHT_ID_BYTES] = {0}, self[VV_DHT_ID_BYTES];
    memset(self, 0xff, sizeof(self));
    struct vv_dht_lookup_config cfg;
    vv_dht_lookup_config_defaults(&cfg);
    cfg.alpha = 1;
    struct vv_dht_lookup *l = vv_dht_lookup_new(target, self, &cfg, NULL);
    struct vv_dht_contact seed[2], closer[1];
    contact(&seed[0], 0x10); /* nearer: asked first */
    contact(&seed[1], 0x20);
    contact(&closer[0], 0x01);
    uint16_t rtt[2] = {40, 60};
    vv_dht_lookup_seed(l, seed, rtt, 2);
    struct vv_dht_lookup_query q[4];
    assert_int_equal(vv_dht_lookup_next(l, 1000, q, 4), 1);
    assert_int_equal(q[0].to.id[0], 0x10);
    assert_int_equal(q[0].soft_timeout_ms, 80);
    assert_int_equal(q[0].hard_timeout_ms, 320);
    assert_int_equal(q[0].depth, 1);
    assert_int_equal(vv_dht_lookup_wake_at(l), 1080);
    assert_int_equal(vv_dht_lookup_next(l, 1079, q, 4), 0);
    assert_int_equal(vv_dht_lookup_next(l, 1080, q, 4), 1);
    assert_int_equal(q[0].to.id[0], 0x20);
    assert_int_equal(vv_dht_lookup_stats(l)->slow, 1);
    assert_int_equal(vv_dht_lookup_in_flight(l), 2);
    /* The slow one answers late, naming a closer node: it is asked next. */
    assert_int_equal(vv_dht_lookup_answered(l, seed[0].id, 1150, closer, 1), 0);
    assert_int_equal(vv_dht_lookup_stats(l)->late_answers, 1);
    assert_int_equal(vv_dht_lookup_next(l, 1150, q, 4), 0); /* 0x20 still holds the slot */
    assert_int_equal(vv_dht_lookup_answered(l, seed[1].id, 1160, NULL, 0), 0);
    assert_int_equal(vv_dht_lookup_next(l, 1160, q, 4), 1);
    assert_int_equal(q[0].to.id[0], 0x01);
    assert_int_equal(q[0].depth, 2);
    assert_false(vv_dht_lookup_done(l));
    assert_int_equal(vv_dht_lookup_answered(l, closer[0].id, 1220, NULL, 0), 0);
    assert_true(vv_dht_lookup_done(l));
    assert_int_equal(vv_dht_lookup_hops(l), 2);
    struct vv_dht_contact out[4];
    assert_int_equal(vv_dht_lookup_closest(l, out, 4), 3);
    assert_int_equal(out[0].id[0], 0x01);
    assert_int_equal(out[1].id[0], 0x10);
    assert_int_equal(out[2].id[0], 0x20);
    vv_dht_lookup_free(l);
}

static void test_end_and_unasked_answers(void **state)
{
    (void)state;
    uint8_t target[VV_DHT_ID_BYTES] = {0}, self[VV_DHT_ID_BYTES] = {0};
    self[0] = 0x05;
    struct vv_dht_lookup_config cfg;
    vv_dht_lookup_config_defaults(&cfg);
    cfg.k = 2;
    struct vv_dht_lookup *l = vv_dht_lookup_new(target, self, &cfg, NULL);
    /* Nothing to start from: over at once. */
    assert_true(vv_dht_lookup_done(l));
    struct vv_dht_contact seed[4];
    contact(&seed[0], 0x40);
    contact(&seed[1], 0x30);
    contact(&seed[2], 0x30); /* a duplicate */
    contact(&seed[3], 0x05); /* ourselves */
    seed[3].id[0] = 0x05;
    vv_dht_lookup_seed(l, seed, NULL, 4);
    struct vv_dht_lookup_query q[8];
    assert_int_equal(vv_dht_lookup_next(l, 0, q, 8), 2);
    struct vv_dht_contact stranger;
    contact(&stranger, 0x77);
    assert_int_equal(vv_dht_lookup_answered(l, stranger.id, 1, NULL, 0), VV_ENOTFOUND);
    assert_int_equal(vv_dht_lookup_failed(l, seed[0].id, 1), 0);
    assert_int_equal(vv_dht_lookup_failed(l, seed[0].id, 1), VV_ENOTFOUND); /* twice */
    assert_false(vv_dht_lookup_done(l));
    assert_int_equal(vv_dht_lookup_answered(l, seed[1].id, 2, NULL, 0), 0);
    assert_int_equal(vv_dht_lookup_answered(l, seed[1].id, 2, NULL, 0), VV_ENOTFOUND);
    /* k = 2, but only one node left that did not fail: it answered, the lookup is over. */
    assert_true(vv_dht_lookup_done(l));
    assert_int_equal(vv_dht_lookup_next(l, 3, q, 8), 0);
    vv_dht_lookup_free(l);

    /* Stopped early: over, answers ignored. */
    l = vv_dht_lookup_new(target, self, &cfg, NULL);
    vv_dht_lookup_seed(l, seed, NULL, 2);
    assert_int_equal(vv_dht_lookup_next(l, 0, q, 8), 2);
    vv_dht_lookup_stop(l);
    assert_true(vv_dht_lookup_done(l));
    assert_int_equal(vv_dht_lookup_answered(l, seed[1].id, 1, NULL, 0), VV_ENOTFOUND);
    assert_int_equal(vv_dht_lookup_wake_at(l), UINT64_MAX);
    vv_dht_lookup_free(l);
}

/* Every answer names 20 fresh IDs, each closer than the last: the lookup still ends, after
 * max_queries, and holds at most VV_DHT_LOOKUP_MAX_CANDIDATES candidates. */
static void test_endless_fresh_ids_are_bounded(void **state)
{
    (void)state;
    rng_state = 77;
    uint8_t target[VV_DHT_ID_BYTES] = {0}, self[VV_DHT_ID_BYTES];
    memset(self, 0xff, sizeof(self));
    struct vv_dht_lookup_config cfg;
    vv_dht_lookup_config_defaults(&cfg);
    struct vv_dht_lookup *l = vv_dht_lookup_new(target, self, &cfg, NULL);
    struct vv_dht_contact c[K];
    uint8_t level = 0xf0;
    for (int i = 0; i < K; i++) {
        rnd_id(c[i].id);
        c[i].id[0] = level;
        c[i].addr.family = VV_DHT_INET4;
        c[i].addr.ip[0] = 10;
        c[i].addr.port = 1;
    }
    vv_dht_lookup_seed(l, c, NULL, K);
    uint64_t now = 0;
    int rounds = 0;
    while (!vv_dht_lookup_done(l)) {
        assert_true(++rounds < 10000);
        struct vv_dht_lookup_query q[8];
        size_t nq = vv_dht_lookup_next(l, now, q, 8);
        for (size_t i = 0; i < nq; i++) {
            if (level > 0)
                level--;
            for (int j = 0; j < K; j++) {
                rnd_id(c[j].id);
                c[j].id[0] = level; /* ever closer, until the first byte is 0 */
            }
            assert_int_equal(vv_dht_lookup_answered(l, q[i].to.id, now, c, K), 0);
        }
        now++;
    }
    assert_int_equal(vv_dht_lookup_stats(l)->queries, cfg.max_queries);
    assert_true(vv_dht_lookup_stats(l)->candidates_dropped > 0);
    vv_dht_lookup_free(l);
}

/* A fifth of the nodes are evil: asked, they answer with made-up IDs closer to the target
 * than any real node, served by the attacker, so a path that meets one is captured. Success:
 * one of the k honest nodes closest to the target, which hold its records, answered during
 * the lookup (a GET then has its value). Disjoint paths reach one far more often than one
 * path does. */
static void test_disjoint_paths_survive_bogus_closer_nodes(void **state)
{
    (void)state;
    static struct net w;
    net_init(&w, MAXN, 3);
    for (size_t i = 0; i < w.n; i++)
        w.evil[i] = rnd() % 5 == 0;
    struct vv_dht_lookup_config one, four;
    vv_dht_lookup_config_defaults(&one);
    four = one;
    four.paths = 4;
    four.max_queries = 400;
    int ok_one = 0, ok_four = 0, ok_eight = 0, lookups = 40;
    struct vv_dht_lookup_config eight = four;
    eight.paths = 8;
    eight.max_queries = 800;
    for (int t = 0; t < lookups; t++) {
        uint8_t target[VV_DHT_ID_BYTES];
        rnd_id(target);
        size_t from;
        do
            from = rnd() % w.n;
        while (w.evil[from]);
        uint32_t want[K];
        truth(&w, target, want);
        struct vv_dht_contact got[K];
        struct run r = {.watch = want, .n_watch = K};
        run_lookup(&w, from, target, &one, got, &r);
        ok_one += r.watch_seen;
        run_lookup(&w, from, target, &four, got, &r);
        ok_four += r.watch_seen;
        run_lookup(&w, from, target, &eight, got, &r);
        ok_eight += r.watch_seen;
    }
    print_message("closest honest node reached: 1 path %d/%d, 4 paths %d/%d, 8 paths %d/%d\n",
                  ok_one, lookups, ok_four, lookups, ok_eight, lookups);
    assert_true(ok_four >= lookups * 9 / 10);
    assert_true(ok_four > ok_one);
    net_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtt_estimator_and_timeouts),
        cmocka_unit_test(test_lookups_find_the_closest_nodes_in_few_hops),
        cmocka_unit_test(test_dead_nodes_cost_about_a_round_trip),
        cmocka_unit_test(test_soft_timeout_moves_on_and_late_answers_count),
        cmocka_unit_test(test_end_and_unasked_answers),
        cmocka_unit_test(test_endless_fresh_ids_are_bounded),
        cmocka_unit_test(test_disjoint_paths_survive_bogus_closer_nodes),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
