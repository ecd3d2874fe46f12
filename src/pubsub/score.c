/*
 * Peer scores (pubsub_core.h), after GossipSub v1.1's score function.
 *
 * Per peer: the application value (P5), the behaviour penalty counter (P7), its IP (P6 counts
 * connected peers per IP) and a short array of per-topic counters, one for each scored topic
 * the peer did something in (P1..P4). Scores are computed when asked, from the counters and
 * `now`, so P1 (time in mesh) and P3's activation need no timer; the counters decay once per
 * decay interval. Peers, topics and IPs are found through keyed-hash indexes.
 *
 * A disconnected peer with a score above zero is forgotten; one at or below zero is kept,
 * frozen, for retain_score_ms, so that reconnecting does not wash a penalty off.
 */
#include <math.h>
#include <string.h>

#include "pubsub/pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/keyed_hash.h"
#include "vivim/pubsub_core.h"

struct tstats {
    uint32_t topic;
    bool in_mesh;
    uint64_t graft_ms; /* when the peer last entered the mesh */
    double first;      /* P2 counter */
    double mesh;       /* P3 counter */
    double failure;    /* P3b counter */
    double invalid;    /* P4 counter (squared in the score) */
};

struct peer {
    uint8_t id[VV_NODE_ID_BYTES];
    uint64_t h;
    bool used, connected;
    uint64_t expires_ms; /* when retained (not connected): forgotten then */
    uint32_t ip;         /* entry in ips, VV__PS_NIL when unknown or not connected */
    double app, behaviour;
    struct tstats *t;
    uint32_t n_t;
    uint32_t next_free;
};

struct topic {
    char *name;
    size_t len;
    struct vv_pubsub_topic_score_params p;
};

struct ipent {
    uint8_t ip[16];
    uint64_t h;
    uint32_t count; /* connected peers with this IP; 0: a free entry */
    uint32_t next_free;
};

struct vv_pubsub_score {
    struct vv_pubsub_score_params p;
    struct peer *peers;
    uint32_t cap, n, free_list, reclaim_cursor;
    struct vv__ps_map peer_map;
    struct topic *topics;
    uint32_t n_topics;
    struct vv__ps_map topic_map;
    struct ipent *ips;
    uint32_t ip_cap, ip_free;
    struct vv__ps_map ip_map;
};

#define FAIL VV_EPUBSUB_PARAMS

static bool in01(double x)
{
    return x > 0 && x < 1;
}

int vv_pubsub_score_params_check(const struct vv_pubsub_score_params *p)
{
    /* The spec asks for a positive P5 weight, a negative P6 and P7 weight; 0 is allowed too,
     * and turns the term off. */
    if (!isfinite(p->topic_score_cap) || p->topic_score_cap < 0 ||
        !isfinite(p->app_specific_weight) || p->app_specific_weight < 0)
        return FAIL;
    if (!isfinite(p->ip_colocation_factor_weight) || p->ip_colocation_factor_weight > 0)
        return FAIL;
    if (p->ip_colocation_factor_weight != 0 &&
        !(isfinite(p->ip_colocation_factor_threshold) && p->ip_colocation_factor_threshold >= 1))
        return FAIL;
    if (!isfinite(p->behaviour_penalty_weight) || p->behaviour_penalty_weight > 0)
        return FAIL;
    if (p->behaviour_penalty_weight != 0 &&
        (!in01(p->behaviour_penalty_decay) || !isfinite(p->behaviour_penalty_threshold) ||
         p->behaviour_penalty_threshold < 0))
        return FAIL;
    if (!(p->behaviour_penalty_decay >= 0 && p->behaviour_penalty_decay < 1) ||
        !isfinite(p->behaviour_penalty_threshold))
        return FAIL;
    if (p->decay_interval_ms < 1000 || !in01(p->decay_to_zero))
        return FAIL;
    if (p->max_peers == 0 || p->max_peers >= VV__PS_NIL || p->max_topics == 0 ||
        p->max_topics >= VV__PS_NIL)
        return FAIL;
    return 0;
}

/* A decay factor, whether its weight is set or not: a counter multiplied by it must stay
 * finite and shrink. */
static bool decay_ok(double x)
{
    return x >= 0 && x < 1;
}

int vv_pubsub_topic_score_params_check(const struct vv_pubsub_topic_score_params *p)
{
    if (!decay_ok(p->first_message_deliveries_decay) ||
        !decay_ok(p->mesh_message_deliveries_decay) || !decay_ok(p->mesh_failure_penalty_decay) ||
        !decay_ok(p->invalid_message_deliveries_decay))
        return FAIL;
    if (!isfinite(p->topic_weight) || p->topic_weight < 0)
        return FAIL;
    if (!isfinite(p->time_in_mesh_weight) || p->time_in_mesh_weight < 0)
        return FAIL;
    if (p->time_in_mesh_weight != 0 && (p->time_in_mesh_quantum_ms == 0 ||
                                        !isfinite(p->time_in_mesh_cap) || p->time_in_mesh_cap <= 0))
        return FAIL;
    if (!isfinite(p->first_message_deliveries_weight) || p->first_message_deliveries_weight < 0)
        return FAIL;
    if (p->first_message_deliveries_weight != 0 &&
        (!in01(p->first_message_deliveries_decay) || !isfinite(p->first_message_deliveries_cap) ||
         p->first_message_deliveries_cap <= 0))
        return FAIL;
    if (!isfinite(p->mesh_message_deliveries_weight) || p->mesh_message_deliveries_weight > 0)
        return FAIL;
    if (p->mesh_message_deliveries_weight != 0 &&
        (!in01(p->mesh_message_deliveries_decay) || !isfinite(p->mesh_message_deliveries_cap) ||
         !isfinite(p->mesh_message_deliveries_threshold) ||
         p->mesh_message_deliveries_threshold <= 0 ||
         p->mesh_message_deliveries_cap < p->mesh_message_deliveries_threshold ||
         p->mesh_message_deliveries_activation_ms < 1000))
        return FAIL;
    if (!isfinite(p->mesh_failure_penalty_weight) || p->mesh_failure_penalty_weight > 0)
        return FAIL;
    if (p->mesh_failure_penalty_weight != 0 && !in01(p->mesh_failure_penalty_decay))
        return FAIL;
    if (!isfinite(p->invalid_message_deliveries_weight) || p->invalid_message_deliveries_weight > 0)
        return FAIL;
    if (p->invalid_message_deliveries_weight != 0 && !in01(p->invalid_message_deliveries_decay))
        return FAIL;
    return 0;
}

int vv_pubsub_score_thresholds_check(const struct vv_pubsub_score_thresholds *t)
{
    if (!isfinite(t->gossip) || !isfinite(t->publish) || !isfinite(t->graylist) ||
        !isfinite(t->accept_px) || !isfinite(t->opportunistic_graft))
        return FAIL;
    if (!(t->gossip < 0) || !(t->publish < t->gossip) || !(t->graylist < t->publish) ||
        t->accept_px < 0 || t->opportunistic_graft < 0)
        return FAIL;
    return 0;
}

double vv_pubsub_score_decay_factor(const struct vv_pubsub_score_params *p, uint64_t decay_ms)
{
    double ticks = (double)decay_ms / (double)p->decay_interval_ms;
    if (ticks < 1)
        ticks = 1;
    return pow(p->decay_to_zero, 1.0 / ticks);
}

/* ---- tables -------------------------------------------------------------------------------- */

static bool peer_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub_score *s = ctx;
    return memcmp(s->peers[v].id, key, VV_NODE_ID_BYTES) == 0;
}

static bool ip_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub_score *s = ctx;
    return memcmp(s->ips[v].ip, key, 16) == 0;
}

struct tkey {
    const char *t;
    size_t n;
};

static bool topic_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub_score *s = ctx;
    const struct tkey *k = key;
    return s->topics[v].len == k->n && memcmp(s->topics[v].name, k->t, k->n) == 0;
}

static struct peer *find_peer(const struct vv_pubsub_score *s, const uint8_t *id)
{
    uint32_t i =
        vv__ps_map_find(&s->peer_map, vv_keyed_hash64(id, VV_NODE_ID_BYTES), peer_eq, s, id);
    return i == VV__PS_NIL ? NULL : &s->peers[i];
}

static uint32_t find_topic(const struct vv_pubsub_score *s, const char *t, size_t n)
{
    struct tkey k = {t, n};
    return vv__ps_map_find(&s->topic_map, vv_keyed_hash64(t, n), topic_eq, s, &k);
}

static void ip_release(struct vv_pubsub_score *s, struct peer *p)
{
    if (p->ip == VV__PS_NIL)
        return;
    struct ipent *e = &s->ips[p->ip];
    if (--e->count == 0) {
        vv__ps_map_remove(&s->ip_map, e->h, p->ip);
        e->next_free = s->ip_free;
        s->ip_free = p->ip;
    }
    p->ip = VV__PS_NIL;
}

static void ip_take(struct vv_pubsub_score *s, struct peer *p, const uint8_t ip[16])
{
    uint64_t h = vv_keyed_hash64(ip, 16);
    uint32_t i = vv__ps_map_find(&s->ip_map, h, ip_eq, s, ip);
    if (i == VV__PS_NIL) {
        if (s->ip_free == VV__PS_NIL) {
            /* At most one entry per connected peer, so max_peers bounds this array too. */
            uint32_t nc = s->ip_cap ? s->ip_cap * 2 : 16;
            s->ips = vv_xrealloc(s->ips, (size_t)nc * sizeof(*s->ips));
            for (uint32_t k = nc; k-- > s->ip_cap;) {
                s->ips[k].count = 0;
                s->ips[k].next_free = s->ip_free;
                s->ip_free = k;
            }
            s->ip_cap = nc;
        }
        i = s->ip_free;
        s->ip_free = s->ips[i].next_free;
        memcpy(s->ips[i].ip, ip, 16);
        s->ips[i].h = h;
        s->ips[i].count = 0;
        vv__ps_map_insert(&s->ip_map, h, i);
    }
    s->ips[i].count++;
    p->ip = i;
}

static void peer_delete(struct vv_pubsub_score *s, struct peer *p)
{
    uint32_t i = (uint32_t)(p - s->peers);
    ip_release(s, p);
    vv__ps_map_remove(&s->peer_map, p->h, i);
    vv_free(p->t);
    p->t = NULL;
    p->n_t = 0;
    p->used = false;
    p->next_free = s->free_list;
    s->free_list = i;
    s->n--;
}

/* Arrays that only grow (a peer's topic counters, the scored topics) double when their
 * count reaches 4, 8, 16...: growing them one entry at a time made a peer grafted into
 * thousands of meshes cost a copy of its whole array per topic (quadratic). */
static bool grow_due(uint32_t n)
{
    return n == 0 || (n >= 4 && (n & (n - 1)) == 0);
}

static size_t grown(uint32_t n)
{
    return n == 0 ? 4 : (size_t)n * 2;
}

/* The counters of peer p in topic ti, created when create is set; NULL otherwise. */
static struct tstats *tstats_of(struct peer *p, uint32_t ti, bool create)
{
    for (uint32_t k = 0; k < p->n_t; k++)
        if (p->t[k].topic == ti)
            return &p->t[k];
    if (!create)
        return NULL;
    /* The count is bounded by the number of scored topics. */
    if (grow_due(p->n_t))
        p->t = vv_xrealloc(p->t, grown(p->n_t) * sizeof(*p->t));
    struct tstats *t = &p->t[p->n_t++];
    memset(t, 0, sizeof(*t));
    t->topic = ti;
    return t;
}

int vv_pubsub_score_new(const struct vv_pubsub_score_params *p, struct vv_pubsub_score **out)
{
    int rc = vv_pubsub_score_params_check(p);
    if (rc != 0)
        return rc;
    struct vv_pubsub_score *s = vv_xcalloc(1, sizeof(*s));
    s->p = *p;
    s->free_list = s->ip_free = VV__PS_NIL;
    vv__ps_map_init(&s->peer_map);
    vv__ps_map_init(&s->topic_map);
    vv__ps_map_init(&s->ip_map);
    *out = s;
    return 0;
}

void vv_pubsub_score_free(struct vv_pubsub_score *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->cap; i++)
        if (s->peers[i].used)
            vv_free(s->peers[i].t);
    vv_free(s->peers);
    for (uint32_t i = 0; i < s->n_topics; i++)
        vv_free(s->topics[i].name);
    vv_free(s->topics);
    vv_free(s->ips);
    vv__ps_map_free(&s->peer_map);
    vv__ps_map_free(&s->topic_map);
    vv__ps_map_free(&s->ip_map);
    vv_free(s);
}

int vv_pubsub_score_set_topic(struct vv_pubsub_score *s, const char *topic, size_t topic_len,
                              const struct vv_pubsub_topic_score_params *p)
{
    int rc = vv_pubsub_topic_score_params_check(p);
    if (rc != 0)
        return rc;
    uint32_t i = find_topic(s, topic, topic_len);
    if (i != VV__PS_NIL) {
        s->topics[i].p = *p;
        return 0;
    }
    if (s->n_topics >= s->p.max_topics)
        return VV_ELIMIT;
    if (grow_due(s->n_topics))
        s->topics = vv_xrealloc(s->topics, grown(s->n_topics) * sizeof(*s->topics));
    struct topic *t = &s->topics[s->n_topics];
    t->name = vv_xmalloc(topic_len ? topic_len : 1);
    memcpy(t->name, topic, topic_len);
    t->len = topic_len;
    t->p = *p;
    vv__ps_map_insert(&s->topic_map, vv_keyed_hash64(topic, topic_len), s->n_topics);
    s->n_topics++;
    return 0;
}

/* ---- the score ----------------------------------------------------------------------------- */

static bool p3_active(const struct topic *tp, const struct tstats *t, uint64_t now)
{
    /* The spec's "meshTime > MeshMessageDeliveriesActivation": strictly after. */
    return t->in_mesh && now - t->graft_ms > tp->p.mesh_message_deliveries_activation_ms;
}

static double deficit_sq(const struct topic *tp, const struct tstats *t)
{
    double d = tp->p.mesh_message_deliveries_threshold - t->mesh;
    return d > 0 ? d * d : 0;
}

static double score_of(const struct vv_pubsub_score *s, const struct peer *p, uint64_t now)
{
    double topics = 0;
    for (uint32_t k = 0; k < p->n_t; k++) {
        const struct tstats *t = &p->t[k];
        const struct topic *tp = &s->topics[t->topic];
        const struct vv_pubsub_topic_score_params *q = &tp->p;
        double v = 0;
        if (t->in_mesh && q->time_in_mesh_weight != 0) {
            /* P1: whole quanta in the mesh, capped. */
            double p1 = (double)((now - t->graft_ms) / q->time_in_mesh_quantum_ms);
            v += q->time_in_mesh_weight * VV_MIN(p1, q->time_in_mesh_cap);
        }
        v += q->first_message_deliveries_weight * t->first; /* P2 */
        if (q->mesh_message_deliveries_weight != 0 && p3_active(tp, t, now))
            v += q->mesh_message_deliveries_weight * deficit_sq(tp, t);      /* P3 */
        v += q->mesh_failure_penalty_weight * t->failure;                    /* P3b */
        v += q->invalid_message_deliveries_weight * t->invalid * t->invalid; /* P4 */
        topics += q->topic_weight * v;
    }
    if (s->p.topic_score_cap > 0 && topics > s->p.topic_score_cap)
        topics = s->p.topic_score_cap;
    double score = topics + s->p.app_specific_weight * p->app; /* P5 */
    if (p->ip != VV__PS_NIL) {                                 /* P6 */
        double surplus = (double)s->ips[p->ip].count - s->p.ip_colocation_factor_threshold;
        if (surplus > 0)
            score += s->p.ip_colocation_factor_weight * surplus * surplus;
    }
    double excess = p->behaviour - s->p.behaviour_penalty_threshold; /* P7 */
    if (excess > 0)
        score += s->p.behaviour_penalty_weight * excess * excess;
    return score;
}

double vv_pubsub_score_get(const struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                           uint64_t now)
{
    const struct peer *p = find_peer(s, peer);
    return p ? score_of(s, p, now) : 0;
}

uint32_t vv_pubsub_score_count(const struct vv_pubsub_score *s)
{
    return s->n;
}

/* ---- peers --------------------------------------------------------------------------------- */

/* Frees retained peers whose time is up, looking at no more than budget entries. */
static void reclaim(struct vv_pubsub_score *s, uint64_t now, uint32_t budget)
{
    for (uint32_t k = 0; k < budget && s->cap > 0; k++) {
        struct peer *p = &s->peers[s->reclaim_cursor];
        s->reclaim_cursor = (s->reclaim_cursor + 1) % s->cap;
        if (p->used && !p->connected && p->expires_ms <= now)
            peer_delete(s, p);
    }
}

int vv_pubsub_score_add_peer(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             const uint8_t ip[16], uint64_t now)
{
    struct peer *p = find_peer(s, peer);
    if (p == NULL) {
        if (s->n >= s->p.max_peers) {
            reclaim(s, now, 64);
            if (s->n >= s->p.max_peers)
                return VV_ELIMIT;
        }
        if (s->free_list == VV__PS_NIL) {
            uint32_t nc = s->cap ? s->cap * 2 : 16;
            if (nc > s->p.max_peers)
                nc = s->p.max_peers;
            s->peers = vv_xrealloc(s->peers, (size_t)nc * sizeof(*s->peers));
            for (uint32_t k = nc; k-- > s->cap;) {
                s->peers[k].used = false;
                s->peers[k].next_free = s->free_list;
                s->free_list = k;
            }
            s->cap = nc;
        }
        uint32_t i = s->free_list;
        p = &s->peers[i];
        s->free_list = p->next_free;
        memset(p, 0, sizeof(*p));
        memcpy(p->id, peer, VV_NODE_ID_BYTES);
        p->h = vv_keyed_hash64(peer, VV_NODE_ID_BYTES);
        p->used = true;
        p->ip = VV__PS_NIL;
        vv__ps_map_insert(&s->peer_map, p->h, i);
        s->n++;
    } else if (p->connected) {
        ip_release(s, p); /* a second connection report: take the new address */
    }
    p->connected = true;
    if (ip)
        ip_take(s, p, ip);
    return 0;
}

void vv_pubsub_score_remove_peer(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                                 uint64_t now)
{
    struct peer *p = find_peer(s, peer);
    if (p == NULL || !p->connected)
        return;
    /* Nothing to hold against a peer in good standing. */
    if (score_of(s, p, now) > 0) {
        peer_delete(s, p);
        return;
    }
    for (uint32_t k = 0; k < p->n_t; k++) {
        struct tstats *t = &p->t[k];
        const struct topic *tp = &s->topics[t->topic];
        t->first = 0;
        if (tp->p.mesh_message_deliveries_weight != 0 && p3_active(tp, t, now))
            t->failure += deficit_sq(tp, t);
        t->in_mesh = false;
    }
    ip_release(s, p);
    p->connected = false;
    p->expires_ms = now + s->p.retain_score_ms;
}

static struct tstats *event(struct vv_pubsub_score *s, const uint8_t *peer, const char *topic,
                            size_t topic_len, struct topic **tp)
{
    struct peer *p = find_peer(s, peer);
    if (p == NULL || !p->connected)
        return NULL;
    uint32_t ti = find_topic(s, topic, topic_len);
    if (ti == VV__PS_NIL)
        return NULL;
    *tp = &s->topics[ti];
    return tstats_of(p, ti, true);
}

void vv_pubsub_score_graft(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                           const char *topic, size_t topic_len, uint64_t now)
{
    struct topic *tp;
    struct tstats *t = event(s, peer, topic, topic_len, &tp);
    if (t == NULL || t->in_mesh)
        return;
    t->in_mesh = true;
    t->graft_ms = now;
}

void vv_pubsub_score_prune(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                           const char *topic, size_t topic_len, uint64_t now)
{
    struct topic *tp;
    struct tstats *t = event(s, peer, topic, topic_len, &tp);
    if (t == NULL || !t->in_mesh)
        return;
    /* P3b: leaving the mesh with a deficit keeps it as a penalty that decays slowly, so that
     * a peer cannot shed its P3 by being pruned. */
    if (tp->p.mesh_message_deliveries_weight != 0 && p3_active(tp, t, now))
        t->failure += deficit_sq(tp, t);
    t->in_mesh = false;
}

void vv_pubsub_score_first_delivery(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                                    const char *topic, size_t topic_len)
{
    struct topic *tp;
    struct tstats *t = event(s, peer, topic, topic_len, &tp);
    if (t == NULL)
        return;
    t->first = VV_MIN(t->first + 1, tp->p.first_message_deliveries_cap);
    if (t->in_mesh)
        t->mesh = VV_MIN(t->mesh + 1, tp->p.mesh_message_deliveries_cap);
}

void vv_pubsub_score_near_first_delivery(struct vv_pubsub_score *s,
                                         const uint8_t peer[VV_NODE_ID_BYTES], const char *topic,
                                         size_t topic_len)
{
    struct topic *tp;
    struct tstats *t = event(s, peer, topic, topic_len, &tp);
    if (t != NULL && t->in_mesh)
        t->mesh = VV_MIN(t->mesh + 1, tp->p.mesh_message_deliveries_cap);
}

void vv_pubsub_score_invalid(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             const char *topic, size_t topic_len)
{
    struct topic *tp;
    struct tstats *t = event(s, peer, topic, topic_len, &tp);
    if (t != NULL)
        t->invalid += 1;
}

void vv_pubsub_score_penalty(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             double count)
{
    struct peer *p = find_peer(s, peer);
    if (p != NULL && p->connected && count > 0)
        p->behaviour += count;
}

void vv_pubsub_score_set_app(struct vv_pubsub_score *s, const uint8_t peer[VV_NODE_ID_BYTES],
                             double value)
{
    struct peer *p = find_peer(s, peer);
    if (p != NULL && isfinite(value))
        p->app = value;
}

static double decay(double v, double factor, double to_zero)
{
    v *= factor;
    return v < to_zero ? 0 : v;
}

void vv_pubsub_score_decay(struct vv_pubsub_score *s, uint64_t now)
{
    double z = s->p.decay_to_zero;
    for (uint32_t i = 0; i < s->cap; i++) {
        struct peer *p = &s->peers[i];
        if (!p->used)
            continue;
        if (!p->connected) {
            if (p->expires_ms <= now)
                peer_delete(s, p);
            continue;
        }
        for (uint32_t k = 0; k < p->n_t; k++) {
            struct tstats *t = &p->t[k];
            const struct vv_pubsub_topic_score_params *q = &s->topics[t->topic].p;
            t->first = decay(t->first, q->first_message_deliveries_decay, z);
            t->mesh = decay(t->mesh, q->mesh_message_deliveries_decay, z);
            t->failure = decay(t->failure, q->mesh_failure_penalty_decay, z);
            t->invalid = decay(t->invalid, q->invalid_message_deliveries_decay, z);
        }
        p->behaviour = decay(p->behaviour, s->p.behaviour_penalty_decay, z);
    }
}
