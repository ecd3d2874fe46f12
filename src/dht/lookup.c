/*
 * The iterative lookup (vivim/dht_lookup.h). Candidates live in one array sorted by XOR
 * distance to the target, nearest first, at most VV_DHT_LOOKUP_MAX_CANDIDATES of them: a
 * lookup touches a few dozen, so insertion by moving the tail and linear searches by ID
 * cost less than any index would. Every candidate belongs to one path.
 */
#include <string.h>

#include "vivim/common.h"
#include "vivim/dht_lookup.h"

enum cstate { C_NEW, C_INFLIGHT, C_SLOW, C_ANSWERED, C_FAILED };

struct cand {
    struct vv_dht_contact c;
    uint8_t dist[VV_DHT_ID_BYTES];
    uint64_t soft_at;
    uint16_t rtt_ms;
    uint8_t state, path, depth;
};

struct vv_dht_lookup {
    uint8_t target[VV_DHT_ID_BYTES];
    uint8_t self[VV_DHT_ID_BYTES];
    struct vv_dht_lookup_config cfg;
    const struct vv_dht_rtt *rtt;
    struct cand *c; /* sorted by dist */
    size_t n;
    uint32_t seeded; /* starting contacts dealt so far: the next one's path */
    bool stopped;
    struct vv_dht_lookup_stats stats;
};

void vv_dht_lookup_config_defaults(struct vv_dht_lookup_config *cfg)
{
    cfg->k = VV_DHT_K;
    cfg->alpha = 3;
    cfg->paths = 1;
    cfg->max_queries = 200;
    cfg->min_timeout_ms = 10;
    cfg->max_timeout_ms = 2000;
}

/* ---- round-trip estimate ---------------------------------------------------------------- */

void vv_dht_rtt_sample(struct vv_dht_rtt *r, uint32_t rtt_ms)
{
    if (!r->measured) {
        r->srtt_ms = rtt_ms;
        r->rttvar_ms = rtt_ms / 2;
        r->measured = true;
        return;
    }
    /* RFC 6298: rttvar = 3/4 rttvar + 1/4 |srtt - r|, srtt = 7/8 srtt + 1/8 r. */
    uint32_t diff = r->srtt_ms > rtt_ms ? r->srtt_ms - rtt_ms : rtt_ms - r->srtt_ms;
    r->rttvar_ms = (uint32_t)(((uint64_t)r->rttvar_ms * 3 + diff) / 4);
    r->srtt_ms = (uint32_t)(((uint64_t)r->srtt_ms * 7 + rtt_ms) / 8);
}

uint32_t vv_dht_rtt_timeout(const struct vv_dht_rtt *r, uint32_t contact_rtt_ms, uint32_t min_ms,
                            uint32_t max_ms)
{
    uint64_t t;
    if (contact_rtt_ms != 0)
        t = 2 * (uint64_t)contact_rtt_ms;
    else if (r != NULL && r->measured)
        t = (uint64_t)r->srtt_ms + 4 * (uint64_t)r->rttvar_ms;
    else
        t = max_ms;
    if (t < min_ms)
        t = min_ms;
    if (t > max_ms)
        t = max_ms;
    return (uint32_t)t;
}

/* ---- candidates ------------------------------------------------------------------------ */

static struct cand *find(const struct vv_dht_lookup *l, const uint8_t *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (memcmp(l->c[i].c.id, id, VV_DHT_ID_BYTES) == 0)
            return &l->c[i];
    return NULL;
}

/* Adds a candidate on path at depth; a known ID only lowers its depth (while not asked). */
static void add(struct vv_dht_lookup *l, const struct vv_dht_contact *ct, uint16_t rtt_ms,
                uint8_t path, uint8_t depth)
{
    if (memcmp(ct->id, l->self, VV_DHT_ID_BYTES) == 0)
        return;
    struct cand *old = find(l, ct->id);
    if (old != NULL) {
        if (old->state == C_NEW && depth < old->depth && old->path == path)
            old->depth = depth;
        return;
    }
    uint8_t dist[VV_DHT_ID_BYTES];
    vv_dht_distance(ct->id, l->target, dist);
    size_t pos = l->n;
    while (pos > 0 && memcmp(l->c[pos - 1].dist, dist, VV_DHT_ID_BYTES) > 0)
        pos--;
    if (l->n == VV_DHT_LOOKUP_MAX_CANDIDATES) {
        /* Full: the farthest candidate nobody is waiting on makes room, if it is farther. */
        size_t victim = l->n;
        while (victim > pos) {
            uint8_t s = l->c[victim - 1].state;
            if (s == C_NEW || s == C_FAILED)
                break;
            victim--;
        }
        if (victim == pos) {
            l->stats.candidates_dropped++;
            return;
        }
        victim--;
        memmove(&l->c[victim], &l->c[victim + 1], (l->n - victim - 1) * sizeof(*l->c));
        l->n--;
        l->stats.candidates_dropped++;
    }
    memmove(&l->c[pos + 1], &l->c[pos], (l->n - pos) * sizeof(*l->c));
    struct cand *c = &l->c[pos];
    memset(c, 0, sizeof(*c));
    c->c = *ct;
    memcpy(c->dist, dist, VV_DHT_ID_BYTES);
    c->rtt_ms = rtt_ms;
    c->state = C_NEW;
    c->path = path;
    c->depth = depth;
    l->n++;
}

struct vv_dht_lookup *vv_dht_lookup_new(const uint8_t target[VV_DHT_ID_BYTES],
                                        const uint8_t self[VV_DHT_ID_BYTES],
                                        const struct vv_dht_lookup_config *cfg,
                                        const struct vv_dht_rtt *rtt)
{
    struct vv_dht_lookup *l = vv_xcalloc(1, sizeof(*l));
    memcpy(l->target, target, VV_DHT_ID_BYTES);
    memcpy(l->self, self, VV_DHT_ID_BYTES);
    if (cfg != NULL)
        l->cfg = *cfg;
    else
        vv_dht_lookup_config_defaults(&l->cfg);
    if (l->cfg.k == 0)
        l->cfg.k = VV_DHT_K;
    if (l->cfg.alpha == 0)
        l->cfg.alpha = 1;
    if (l->cfg.paths == 0)
        l->cfg.paths = 1;
    if (l->cfg.paths > VV_DHT_LOOKUP_MAX_PATHS)
        l->cfg.paths = VV_DHT_LOOKUP_MAX_PATHS;
    if (l->cfg.max_timeout_ms < l->cfg.min_timeout_ms)
        l->cfg.max_timeout_ms = l->cfg.min_timeout_ms;
    l->rtt = rtt;
    l->c = vv_xcalloc(VV_DHT_LOOKUP_MAX_CANDIDATES, sizeof(*l->c));
    return l;
}

void vv_dht_lookup_free(struct vv_dht_lookup *l)
{
    if (l == NULL)
        return;
    vv_free(l->c);
    vv_free(l);
}

void vv_dht_lookup_seed(struct vv_dht_lookup *l, const struct vv_dht_contact *c,
                        const uint16_t *rtt_ms, size_t n)
{
    /* Nearest first, so that round robin gives every path a share of the near ones. */
    size_t *order = vv_xmalloc((n ? n : 1) * sizeof(*order));
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++) {
        size_t x = order[i], j = i;
        while (j > 0 && vv_dht_distance_cmp(l->target, c[order[j - 1]].id, c[x].id) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = x;
    }
    for (size_t i = 0; i < n; i++) {
        const struct vv_dht_contact *ct = &c[order[i]];
        if (memcmp(ct->id, l->self, VV_DHT_ID_BYTES) == 0 || find(l, ct->id) != NULL)
            continue;
        uint8_t path = (uint8_t)(l->seeded++ % l->cfg.paths);
        add(l, ct, rtt_ms ? rtt_ms[order[i]] : 0, path, 1);
    }
    vv_free(order);
}

/* ---- steering -------------------------------------------------------------------------- */

/* Whether path p is over: its k closest candidates that are neither failed nor slow have
 * all answered. *want receives how many of them still need a query. */
static bool path_done(const struct vv_dht_lookup *l, uint32_t p, uint32_t *want, uint32_t *active)
{
    uint32_t seen = 0, w = 0, a = 0;
    bool done = true;
    for (size_t i = 0; i < l->n; i++) {
        const struct cand *c = &l->c[i];
        if (c->path != p)
            continue;
        if (c->state == C_INFLIGHT)
            a++;
        if (c->state == C_FAILED || c->state == C_SLOW || seen >= l->cfg.k)
            continue;
        seen++;
        if (c->state == C_NEW) {
            w++;
            done = false;
        } else if (c->state == C_INFLIGHT) {
            done = false;
        }
    }
    if (want)
        *want = w;
    if (active)
        *active = a;
    return done;
}

static uint32_t active_total(const struct vv_dht_lookup *l)
{
    uint32_t a = 0;
    for (size_t i = 0; i < l->n; i++)
        a += l->c[i].state == C_INFLIGHT;
    return a;
}

bool vv_dht_lookup_done(const struct vv_dht_lookup *l)
{
    if (l->stopped)
        return true;
    if (l->stats.queries >= l->cfg.max_queries && active_total(l) == 0)
        return true;
    for (uint32_t p = 0; p < l->cfg.paths; p++)
        if (!path_done(l, p, NULL, NULL))
            return false;
    return true;
}

size_t vv_dht_lookup_next(struct vv_dht_lookup *l, uint64_t now, struct vv_dht_lookup_query *out,
                          size_t max)
{
    for (size_t i = 0; i < l->n; i++) {
        struct cand *c = &l->c[i];
        if (c->state == C_INFLIGHT && c->soft_at <= now) {
            c->state = C_SLOW;
            l->stats.slow++;
        }
    }
    if (vv_dht_lookup_done(l))
        return 0;
    size_t written = 0;
    for (uint32_t p = 0; p < l->cfg.paths && written < max; p++) {
        uint32_t want, active;
        if (path_done(l, p, &want, &active) || want == 0)
            continue;
        uint32_t seen = 0;
        for (size_t i = 0; i < l->n && written < max; i++) {
            struct cand *c = &l->c[i];
            if (c->path != p || c->state == C_FAILED || c->state == C_SLOW)
                continue;
            if (seen++ >= l->cfg.k || active >= l->cfg.alpha ||
                l->stats.queries >= l->cfg.max_queries)
                break;
            if (c->state != C_NEW)
                continue;
            uint32_t soft =
                vv_dht_rtt_timeout(l->rtt, c->rtt_ms, l->cfg.min_timeout_ms, l->cfg.max_timeout_ms);
            uint64_t hard = 4 * (uint64_t)soft;
            if (hard > l->cfg.max_timeout_ms)
                hard = VV_MAX(soft, l->cfg.max_timeout_ms);
            c->state = C_INFLIGHT;
            c->soft_at = now + soft;
            active++;
            l->stats.queries++;
            struct vv_dht_lookup_query *q = &out[written++];
            q->to = c->c;
            q->soft_timeout_ms = soft;
            q->hard_timeout_ms = (uint32_t)hard;
            q->path = c->path;
            q->depth = c->depth;
        }
    }
    return written;
}

uint64_t vv_dht_lookup_wake_at(const struct vv_dht_lookup *l)
{
    uint64_t at = UINT64_MAX;
    if (l->stopped)
        return at;
    for (size_t i = 0; i < l->n; i++)
        if (l->c[i].state == C_INFLIGHT && l->c[i].soft_at < at)
            at = l->c[i].soft_at;
    return at;
}

static struct cand *asked(struct vv_dht_lookup *l, const uint8_t *id)
{
    if (vv_dht_lookup_done(l))
        return NULL;
    struct cand *c = find(l, id);
    if (c == NULL || (c->state != C_INFLIGHT && c->state != C_SLOW))
        return NULL;
    return c;
}

int vv_dht_lookup_answered(struct vv_dht_lookup *l, const uint8_t id[VV_DHT_ID_BYTES], uint64_t now,
                           const struct vv_dht_contact *closer, size_t n)
{
    (void)now;
    struct cand *c = asked(l, id);
    if (c == NULL)
        return VV_ENOTFOUND;
    if (c->state == C_SLOW)
        l->stats.late_answers++;
    c->state = C_ANSWERED;
    l->stats.answered++;
    /* c may move as candidates are inserted: copy what the new ones inherit. */
    uint8_t path = c->path;
    uint8_t depth = c->depth < UINT8_MAX ? (uint8_t)(c->depth + 1) : UINT8_MAX;
    for (size_t i = 0; i < n; i++)
        add(l, &closer[i], 0, path, depth);
    return 0;
}

int vv_dht_lookup_failed(struct vv_dht_lookup *l, const uint8_t id[VV_DHT_ID_BYTES], uint64_t now)
{
    (void)now;
    struct cand *c = asked(l, id);
    if (c == NULL)
        return VV_ENOTFOUND;
    c->state = C_FAILED;
    l->stats.failed++;
    return 0;
}

void vv_dht_lookup_stop(struct vv_dht_lookup *l)
{
    l->stopped = true;
}

size_t vv_dht_lookup_closest(const struct vv_dht_lookup *l, struct vv_dht_contact *out, size_t max)
{
    size_t w = 0;
    for (size_t i = 0; i < l->n && w < max; i++)
        if (l->c[i].state == C_ANSWERED)
            out[w++] = l->c[i].c;
    return w;
}

uint32_t vv_dht_lookup_hops(const struct vv_dht_lookup *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->c[i].state == C_ANSWERED)
            return l->c[i].depth;
    return 0;
}

const struct vv_dht_lookup_stats *vv_dht_lookup_stats(const struct vv_dht_lookup *l)
{
    return &l->stats;
}

uint32_t vv_dht_lookup_in_flight(const struct vv_dht_lookup *l)
{
    uint32_t a = 0;
    for (size_t i = 0; i < l->n; i++)
        a += l->c[i].state == C_INFLIGHT || l->c[i].state == C_SLOW;
    return a;
}
