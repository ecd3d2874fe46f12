/*
 * One topic's mesh maintenance for one heartbeat (pubsub_core.h), after GossipSub v1.1's
 * heartbeat: a pure function of the candidates, the parameters and the caller's randomness.
 *
 * It keeps the current membership in a scratch array and applies the steps in the spec's
 * order, each seeing the mesh as the earlier steps left it; a peer pruned by one step is not
 * grafted by a later one (it would be backed off as soon as the PRUNE goes out).
 */
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/pubsub_core.h"

void vv_pubsub_mesh_params_defaults(struct vv_pubsub_mesh_params *p)
{
    p->d = 6;
    p->d_lo = 5;
    p->d_hi = 12;
    p->d_score = 4;
    p->d_out = 2;
    p->opportunistic_graft_peers = 2;
    p->opportunistic_graft_threshold = 1;
}

int vv_pubsub_mesh_params_check(const struct vv_pubsub_mesh_params *p)
{
    /* All zero is a node that keeps no mesh (the spec's bootstrappers: gossip and PX only). */
    if (p->d == 0 && p->d_lo == 0 && p->d_hi == 0 && p->d_score == 0 && p->d_out == 0)
        return 0;
    if (p->d == 0 || p->d_lo > p->d || p->d > p->d_hi || p->d_score > p->d || p->d_out >= p->d_lo ||
        p->d_out > p->d / 2)
        return VV_EPUBSUB_PARAMS;
    return 0;
}

struct sel {
    const struct vv_pubsub_mesh_candidate *c;
    uint32_t n;
    bool *in;     /* membership as decided so far */
    bool *pruned; /* pruned by this call */
    uint8_t *decision;
    uint32_t *tmp; /* n scratch indices */
    vv_pubsub_rand_cb rnd;
    void *ra;
};

static void shuffle(struct sel *s, uint32_t *a, uint32_t k)
{
    for (uint32_t i = k; i > 1; i--) {
        uint32_t j = s->rnd(s->ra, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static uint32_t mesh_size(const struct sel *s)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < s->n; i++)
        m += s->in[i];
    return m;
}

static void graft(struct sel *s, uint32_t i)
{
    s->in[i] = true;
    s->decision[i] = s->c[i].in_mesh ? VV_PUBSUB_MESH_KEEP : VV_PUBSUB_MESH_GRAFT;
}

static void prune(struct sel *s, uint32_t i)
{
    s->in[i] = false;
    s->pruned[i] = true;
    s->decision[i] = s->c[i].in_mesh ? VV_PUBSUB_MESH_PRUNE : VV_PUBSUB_MESH_KEEP;
}

/* Grafts up to want random peers outside the mesh that pass the filter: graftable, not
 * pruned by this call, score >= 0 and above min_score when has_min, outbound when
 * outbound_only. */
static void graft_random(struct sel *s, uint32_t want, bool outbound_only, bool has_min,
                         double min_score)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        const struct vv_pubsub_mesh_candidate *c = &s->c[i];
        if (s->in[i] || s->pruned[i] || !c->graftable || !(c->score >= 0) ||
            (outbound_only && !c->outbound) || (has_min && !(c->score > min_score)))
            continue;
        s->tmp[k++] = i;
    }
    shuffle(s, s->tmp, k);
    for (uint32_t j = 0; j < k && j < want; j++)
        graft(s, s->tmp[j]);
}

/* Score descending; equal scores keep their (shuffled) rank, as qsort is not stable. */
struct ranked {
    double score;
    uint32_t i, rank;
};

static int by_score_desc(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void trim(struct sel *s, const struct vv_pubsub_mesh_params *p)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < s->n; i++)
        if (s->in[i])
            s->tmp[m++] = i;
    /* Shuffle, then order by score: the best d_score are kept by merit, equal scores in a
     * random order. */
    shuffle(s, s->tmp, m);
    struct ranked *r = vv_xmalloc(m * sizeof(*r));
    for (uint32_t k = 0; k < m; k++)
        r[k] = (struct ranked){s->c[s->tmp[k]].score, s->tmp[k], k};
    qsort(r, m, sizeof(*r), by_score_desc);
    for (uint32_t k = 0; k < m; k++)
        s->tmp[k] = r[k].i;
    vv_free(r);
    /* The rest of the d places go to random peers among the others, so that a peer cannot
     * hold a place by score alone (nor an attacker crowd out by being well behaved for a
     * while). */
    shuffle(s, s->tmp + p->d_score, m - p->d_score);
    /* Outbound quota: when the d kept hold fewer than d_out outbound peers, outbound peers
     * from beyond d take the places of the last inbound ones kept. */
    uint32_t out = 0;
    for (uint32_t k = 0; k < p->d; k++)
        out += s->c[s->tmp[k]].outbound;
    uint32_t back = p->d;
    for (uint32_t k = p->d; k < m && out < p->d_out; k++) {
        if (!s->c[s->tmp[k]].outbound)
            continue;
        while (back > 0 && s->c[s->tmp[back - 1]].outbound)
            back--;
        if (back == 0)
            break;
        uint32_t t = s->tmp[back - 1];
        s->tmp[back - 1] = s->tmp[k];
        s->tmp[k] = t;
        back--;
        out++;
    }
    for (uint32_t k = p->d; k < m; k++)
        prune(s, s->tmp[k]);
}

uint32_t vv_pubsub_mesh_select(const struct vv_pubsub_mesh_params *p,
                               const struct vv_pubsub_mesh_candidate *c, uint32_t n,
                               bool opportunistic, vv_pubsub_rand_cb rand_cb, void *rand_arg,
                               uint8_t *decision)
{
    struct sel s = {c,
                    n,
                    vv_xcalloc(n ? n : 1, sizeof(bool)),
                    vv_xcalloc(n ? n : 1, sizeof(bool)),
                    decision,
                    vv_xmalloc((n ? n : 1) * sizeof(uint32_t)),
                    rand_cb,
                    rand_arg};
    for (uint32_t i = 0; i < n; i++) {
        s.in[i] = c[i].in_mesh;
        decision[i] = VV_PUBSUB_MESH_KEEP;
    }
    if (vv_pubsub_mesh_params_check(p) != 0) {
        /* The steps below rely on d_score <= d <= d_hi; unchecked parameters change nothing. */
        uint32_t m = mesh_size(&s);
        vv_free(s.in);
        vv_free(s.pruned);
        vv_free(s.tmp);
        return m;
    }
    /* 1. Negative scores leave the mesh. */
    for (uint32_t i = 0; i < n; i++)
        if (s.in[i] && !(c[i].score >= 0))
            prune(&s, i);
    /* 2. Too few: graft up to d. */
    uint32_t m = mesh_size(&s);
    if (m < p->d_lo)
        graft_random(&s, p->d - m, false, false, 0);
    /* 3. Too many: down to d. */
    m = mesh_size(&s);
    if (m > p->d_hi)
        trim(&s, p);
    /* 4. Too few outbound: graft outbound peers. */
    m = mesh_size(&s);
    if (m >= p->d_lo) {
        uint32_t out = 0;
        for (uint32_t i = 0; i < n; i++)
            out += s.in[i] && c[i].outbound;
        if (out < p->d_out)
            graft_random(&s, p->d_out - out, true, false, 0);
    }
    /* 5. Opportunistic grafting: a mesh whose median score is low takes in a few peers that
     * score better than the median, so a mesh captured by poorly scoring (but not negative)
     * peers recovers over time. */
    m = mesh_size(&s);
    if (opportunistic && m > 1) {
        double *sc = vv_xmalloc(m * sizeof(*sc));
        uint32_t k = 0;
        for (uint32_t i = 0; i < n; i++)
            if (s.in[i])
                sc[k++] = c[i].score;
        qsort(sc, m, sizeof(*sc), dbl_cmp);
        double median = sc[m / 2];
        vv_free(sc);
        if (median < p->opportunistic_graft_threshold)
            graft_random(&s, p->opportunistic_graft_peers, false, true, median);
    }
    m = mesh_size(&s);
    vv_free(s.in);
    vv_free(s.pruned);
    vv_free(s.tmp);
    return m;
}
