/*
 * The gossip router (vivim/pubsub.h): peers, topics, meshes, the heartbeat, and the path of
 * a message from a peer's frame through the signature check to delivery and forwarding.
 *
 * Peers and topics live in arrays whose slots are reused; lookups go through keyed indexes
 * (pubsub_internal.h), and every decision walks the arrays in slot order, never an index in
 * bucket order, so a seeded simulation makes the same choices every run. Random choices
 * (mesh candidates, gossip targets) draw from vv_env_random.
 *
 * A message from a peer is checked in this order, cheapest first: the sender's score
 * (graylist), the frame and body decoding, the topic (joined), size and publishers, the
 * digest and the seen cache (a duplicate costs one hash, never a signature check), then the
 * signature off the loop. Only a message whose signature, topic policy and validator all
 * passed is delivered, cached and forwarded.
 */
#include <math.h>
#include <string.h>

#include "pubsub_internal.h"
#include "vivim/common.h"
#include "vivim/env_verify.h"
#include "vivim/keyed_hash.h"
#include "vivim/pubsub.h"
#include "vivim/wire.h"

#define TAG           "pubsub"
#define TAG_WEIGHT    20   /* a mesh peer: kept over plain connections */
#define SEEN_SWEEP    8192 /* seen IDs expired per heartbeat at most */
#define BACKOFF_SWEEP 1024
/* Lazy push (docs/pubsub.md): announced IDs awaiting their message, at most; announcers kept
 * per ID; the factor a link's credit and a topic's
 * message count keep per heartbeat (a half-life of one heartbeat: a link that stops
 * delivering loses its place within a heartbeat or two); the credit a later copy earns (a
 * link that delivers but is rarely first is kept as the second source rather than swapped
 * out as idle). */
#define PULL_MAX        4096
#define PULL_ANNOUNCERS 4
#define CHOKE_DECAY     0.5
#define DUP_CREDIT      0.25
/* How long a link that broke a promise stays distrusted (heartbeats): long enough that a
 * spammer's next IHAVE (every second) meets it, short enough that an honest link caught by a
 * slow answer recovers without delivering. */
#define DISTRUST_HEARTBEATS 10

/* ---- configuration ----------------------------------------------------------------------- */

void vv_pubsub_config_defaults(struct vv_pubsub_config *c)
{
    memset(c, 0, sizeof(*c));
    c->d = 6;
    c->d_lo = 5;
    c->d_hi = 12;
    c->d_lazy = 6;
    c->d_score = 4;
    c->heartbeat_ms = 1000;
    c->heartbeat_slice_topics = 256;
    c->fanout_ttl_ms = 60000;
    c->mcache_len = 5;
    c->mcache_gossip = 3;
    c->seen_ttl_ms = VV_PUBSUB_SEEN_TTL_MS;
    c->max_seen = 1000000;
    c->mcache_max_bytes = (size_t)64 << 20;
    c->gossip_factor = 0.25;
    c->max_ihave_length = 5000;
    c->max_ihave_messages = 10;
    c->gossip_retransmission = 3;
    c->max_peer_topics = 1000;
    c->max_known_topics = 10000;
    c->max_joined_topics = 10000;
    c->max_message_bytes = VV_PUBSUB_MAX_DATA_BYTES;
    c->idontwant_min_bytes = 1024;
    /* Lazy push: two mesh peers per topic push large messages, the rest announce them
     * (docs/pubsub.md, "Lazy push", gives the measurements behind each value). */
    c->lazy_min_bytes = 512;
    c->unchoked_peers = 2;
    c->announce_wait_ms = 10;
    c->pull_timeout_ms = 250;
    c->opportunistic_graft_ticks = 60;
    c->opportunistic_graft_peers = 2;
    c->prune_peers = 16;
    c->prune_backoff_ms = 60000;
    c->flood_publish = true;

    /* Peer score, in the manner of the deployments the v1.1 spec cites: a peer in the
     * mesh earns up to 10 for staying an hour, up to 10 for first deliveries; an invalid
     * message costs 100 (squared counter), a broken rule (GRAFT in backoff, malformed
     * frame) 10 per unit past 5 (squared). Thresholds: no gossip under -10, no flood
     * publishing under -50, everything ignored under -80. */
    struct vv_pubsub_score_params *s = &c->score;
    s->topic_score_cap = 50;
    s->app_specific_weight = 1;
    s->ip_colocation_factor_weight = 0; /* P6 needs addresses vv_env does not give */
    s->ip_colocation_factor_threshold = 1;
    s->behaviour_penalty_weight = -10;
    s->behaviour_penalty_threshold = 5;
    s->behaviour_penalty_decay = 0.9;
    s->decay_interval_ms = 1000;
    s->decay_to_zero = 0.01;
    s->retain_score_ms = 3600000;
    s->max_peers = 8192;
    s->max_topics = 10000;

    struct vv_pubsub_topic_score_params *t = &c->topic_score;
    t->topic_weight = 1;
    t->time_in_mesh_weight = 10.0 / 3600;
    t->time_in_mesh_quantum_ms = 1000;
    t->time_in_mesh_cap = 3600;
    t->first_message_deliveries_weight = 1;
    t->first_message_deliveries_decay = 0.9;
    t->first_message_deliveries_cap = 10;
    /* P3 (mesh delivery deficit) is off by default: it needs a topic's expected rate, which
     * the node does not know for arbitrary topics (the v1.1 spec warns against guessing). */
    t->mesh_message_deliveries_weight = 0;
    t->mesh_message_deliveries_decay = 0.5;
    t->mesh_failure_penalty_weight = 0;
    t->mesh_failure_penalty_decay = 0.5;
    t->invalid_message_deliveries_weight = -100;
    t->invalid_message_deliveries_decay = 0.5;

    c->thresholds.gossip = -10;
    c->thresholds.publish = -50;
    c->thresholds.graylist = -80;
    c->thresholds.accept_px = 10;
    c->thresholds.opportunistic_graft = 2;
}

int vv_pubsub_config_check(const struct vv_pubsub_config *c, char *why, size_t why_len)
{
    if (!(c->d_lo <= c->d && c->d <= c->d_hi && c->d_lo > 0 && c->d_score <= c->d)) {
        snprintf(why, why_len, "pubsub needs 0 < d_lo <= d <= d_hi and d_score <= d");
        return VV_EINVAL;
    }
    if (c->heartbeat_ms == 0 || c->heartbeat_slice_topics == 0 || c->mcache_len == 0 ||
        c->mcache_gossip == 0 || c->mcache_gossip > c->mcache_len || c->max_seen == 0 ||
        c->max_peer_topics == 0 || c->max_known_topics == 0 || c->max_joined_topics == 0 ||
        c->opportunistic_graft_ticks == 0 || c->pull_timeout_ms == 0 ||
        c->max_ihave_length > VV_PUBSUB_MAX_CONTROL_IDS || c->prune_peers > VV_PUBSUB_MAX_PX ||
        c->max_message_bytes > VV_PUBSUB_MAX_DATA_BYTES ||
        !(c->gossip_factor >= 0 && c->gossip_factor <= 1)) {
        snprintf(why, why_len, "pubsub parameter out of range (periods, cache windows, bounds)");
        return VV_EINVAL;
    }
    if (vv_pubsub_score_params_check(&c->score) != 0 ||
        vv_pubsub_topic_score_params_check(&c->topic_score) != 0 ||
        vv_pubsub_score_thresholds_check(&c->thresholds) != 0) {
        snprintf(why, why_len, "pubsub score parameters or thresholds are not sane");
        return VV_EPUBSUB_PARAMS;
    }
    return 0;
}

/* ---- state ------------------------------------------------------------------------------- */

struct idx_list {
    uint32_t *v;
    uint32_t n, cap;
};

static bool list_has(const struct idx_list *l, uint32_t x)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i] == x)
            return true;
    return false;
}

static void list_add(struct idx_list *l, uint32_t x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = vv_xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = x;
}

/* Removes x keeping the order (decisions walk lists in order). */
static bool list_remove(struct idx_list *l, uint32_t x)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i] == x) {
            memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(*l->v));
            l->n--;
            return true;
        }
    return false;
}

static void list_free(struct idx_list *l)
{
    vv_free(l->v);
    memset(l, 0, sizeof(*l));
}

struct peer {
    bool used;
    uint8_t id[VV_NODE_ID_BYTES];
    uint64_t hash;
    struct idx_list topics; /* topics it is subscribed to */
    struct vv_pubsub_idontwant *dontwant;
    uint32_t ihave_in;    /* IHAVE frames read from it this heartbeat */
    uint32_t iwant_asked; /* IDs asked of it this heartbeat */
    uint32_t iwant_served;
    uint32_t n_mesh;           /* meshes it is in: tagged while > 0 */
    struct idx_list choked_us; /* topics whose large messages it wants announced (CHOKE) */
    /* Control to send at the end of the heartbeat's slice. */
    struct idx_list graft, prune, ihave;
    uint32_t ihave_ids_out, ihave_msgs_out; /* IHAVE IDs and frames sent it this round */
};

struct topic {
    bool used;
    char *name;
    size_t len;
    uint64_t hash;
    struct idx_list subs;   /* peers subscribed, in the order they told us */
    struct idx_list mesh;   /* when joined */
    struct idx_list fanout; /* when published to without joining */
    uint64_t fanout_last_ms;
    bool has_fanout;
    bool joined;
    bool has_cfg;
    uint32_t max_bytes;
    uint8_t (*publishers)[VV_NODE_ID_BYTES];
    uint32_t n_publishers;
    /* This heartbeat's gossip: IDs of recent messages. */
    uint8_t (*gossip)[VV_PUBSUB_ID_BYTES];
    uint32_t n_gossip;
    /* Lazy push: one entry per mesh peer (joined topics), in the order they entered. */
    struct link {
        uint32_t peer;
        double credit; /* first notices lately (DUP_CREDIT per later copy), decaying */
        bool choked;   /* we told it CHOKE: it announces large messages instead */
        double copies; /* messages it sent us in full lately (first or not), decaying */
        /* Heartbeats left of distrust, set when it was swapped out as idle while unchoked or
         * did not answer a pull: meanwhile its announcements earn no credit and open no
         * pull (a peer that announces but never sends cannot win its place back by
         * announcing first, nor fill the pull table with IDs it made up). Delivering a
         * message ends it. */
        uint32_t distrust;
    } * links;
    uint32_t n_links, cap_links;
    double msgs; /* messages delivered lately, decaying as the credits */
};

/* An announced message awaited (lazy push): when to act next and whom to ask. */
struct pull_info {
    uint64_t due;
    uint32_t topic;       /* the announcers' links are this topic's */
    uint8_t n_from, next; /* announcers known; the next one to ask */
    uint8_t from[PULL_ANNOUNCERS][VV_NODE_ID_BYTES];
};

struct pending {
    struct vv_pubsub *ps;
    struct pending *prev, *next;
    uint8_t peer[VV_NODE_ID_BYTES];
    struct vv_pubsub_rbuf *frame;
    uint8_t id[VV_PUBSUB_ID_BYTES];
    bool announced; /* a choked link announced it first (and got the credit) */
};

struct vv_pubsub {
    struct vv_env *env;
    struct vv_pubsub_config cfg;
    struct vv_pubsub_cbs cbs;
    void *arg;
    struct peer *peers;
    uint32_t n_peers; /* slots */
    struct vv__ps_map peer_map;
    struct topic *topics;
    uint32_t n_topics;    /* slots */
    uint32_t topics_cap;  /* slots allocated */
    uint32_t topics_free; /* every slot below it is used */
    uint32_t known_topics;
    struct vv__ps_map topic_map;
    struct idx_list joined; /* topics in the order joined */
    struct vv_pubsub_mcache *mcache;
    struct vv_pubsub_seen *seen;
    struct vv_pubsub_backoff *backoff;
    struct vv_pubsub_score *score;
    uint64_t seqno;
    uint64_t timer;
    uint64_t ticks;
    /* The heartbeat round in progress: topic slots below hb_cursor are done; the rest are
     * taken heartbeat_slice_topics at a time, one slice per loop turn (hb_slice_timer). */
    bool hb_running;
    uint32_t hb_cursor;
    uint64_t hb_slice_timer;
    /* While a slice runs: each peer's score, NAN until asked (a score costs O(topics the
     * peer is active in), and a slice asks it once per topic it shares with us). */
    double *slice_scores;
    uint8_t (*gossip_scratch)[VV_PUBSUB_ID_BYTES]; /* max_ihave_length IDs */
    uint64_t last_decay_ms;
    struct pending *pending;
    /* Lazy push: IDs announced and not yet here (an idset, whose entry numbers are stable,
     * with pull_info in a parallel array), and the one timer for the earliest due. */
    struct vv__ps_idset pulls;
    struct pull_info *pull_info;
    uint32_t pull_info_cap;
    uint64_t pull_timer, pull_due;
    bool pull_armed;
    struct vv_pubsub_stats stats;
};

static uint64_t now_ms(const struct vv_pubsub *ps)
{
    return vv_env_now(ps->env);
}

/* ---- peers ------------------------------------------------------------------------------- */

static bool peer_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub *ps = ctx;
    return ps->peers[v].used && memcmp(ps->peers[v].id, key, VV_NODE_ID_BYTES) == 0;
}

static uint32_t peer_find(const struct vv_pubsub *ps, const uint8_t *id)
{
    return vv__ps_map_find(&ps->peer_map, vv_keyed_hash64(id, VV_NODE_ID_BYTES), peer_eq, ps, id);
}

static uint32_t peer_add(struct vv_pubsub *ps, const uint8_t *id)
{
    uint32_t i = peer_find(ps, id);
    if (i != VV__PS_NIL)
        return i;
    for (i = 0; i < ps->n_peers && ps->peers[i].used; i++)
        ;
    if (i == ps->n_peers) {
        ps->peers = vv_xrealloc(ps->peers, (ps->n_peers + 1) * sizeof(*ps->peers));
        ps->n_peers++;
    }
    struct peer *p = &ps->peers[i];
    memset(p, 0, sizeof(*p));
    p->used = true;
    memcpy(p->id, id, VV_NODE_ID_BYTES);
    p->hash = vv_keyed_hash64(id, VV_NODE_ID_BYTES);
    struct vv_pubsub_idontwant_config dc;
    vv_pubsub_idontwant_config_defaults(&dc);
    vv_pubsub_idontwant_new(&dc, &p->dontwant);
    vv__ps_map_insert(&ps->peer_map, p->hash, i);
    (void)vv_pubsub_score_add_peer(ps->score, id, NULL, now_ms(ps));
    return i;
}

static double score_of(const struct vv_pubsub *ps, uint32_t pi)
{
    /* During a heartbeat slice each peer's score is computed once (heartbeat_step). */
    if (ps->slice_scores != NULL) {
        if (isnan(ps->slice_scores[pi]))
            ps->slice_scores[pi] = vv_pubsub_score_get(ps->score, ps->peers[pi].id, now_ms(ps));
        return ps->slice_scores[pi];
    }
    return vv_pubsub_score_get(ps->score, ps->peers[pi].id, now_ms(ps));
}

static void mesh_joined(struct vv_pubsub *ps, uint32_t pi)
{
    struct peer *p = &ps->peers[pi];
    if (p->n_mesh++ == 0)
        (void)vv_env_want_peer(ps->env, p->id, NULL, TAG, TAG_WEIGHT);
}

static void mesh_left(struct vv_pubsub *ps, uint32_t pi)
{
    struct peer *p = &ps->peers[pi];
    if (p->n_mesh > 0 && --p->n_mesh == 0)
        (void)vv_env_release_peer(ps->env, p->id, TAG);
}

/* ---- lazy push: mesh links --------------------------------------------------------------- */

static struct link *link_of(struct topic *t, uint32_t pi)
{
    for (uint32_t i = 0; i < t->n_links; i++)
        if (t->links[i].peer == pi)
            return &t->links[i];
    return NULL;
}

/* pi entered ti's mesh: a fresh link, unchoked both ways (a choke lasts as long as the
 * link: either side leaving the mesh ends it). */
static void link_add(struct vv_pubsub *ps, struct topic *t, uint32_t ti, uint32_t pi)
{
    list_remove(&ps->peers[pi].choked_us, ti);
    if (link_of(t, pi) != NULL)
        return;
    if (t->n_links == t->cap_links) {
        t->cap_links = t->cap_links ? t->cap_links * 2 : 8;
        t->links = vv_xrealloc(t->links, t->cap_links * sizeof(*t->links));
    }
    t->links[t->n_links++] = (struct link){pi, 0, false, 0, 0};
}

static void link_drop(struct vv_pubsub *ps, struct topic *t, uint32_t ti, uint32_t pi)
{
    list_remove(&ps->peers[pi].choked_us, ti);
    struct link *l = link_of(t, pi);
    if (l == NULL)
        return;
    uint32_t i = (uint32_t)(l - t->links);
    memmove(&t->links[i], &t->links[i + 1], (t->n_links - i - 1) * sizeof(*t->links));
    t->n_links--;
}

/* ---- topics ------------------------------------------------------------------------------ */

struct topic_key {
    const char *name;
    size_t len;
};

static bool topic_eq(const void *ctx, uint32_t v, const void *key)
{
    const struct vv_pubsub *ps = ctx;
    const struct topic_key *k = key;
    const struct topic *t = &ps->topics[v];
    return t->used && t->len == k->len && memcmp(t->name, k->name, k->len) == 0;
}

static uint32_t topic_find(const struct vv_pubsub *ps, const char *name, size_t len)
{
    struct topic_key k = {name, len};
    return vv__ps_map_find(&ps->topic_map, vv_keyed_hash64(name, len), topic_eq, ps, &k);
}

/* The topic's slot, created if needed; VV__PS_NIL when a peer's subscription would pass
 * max_known_topics (local=false). */
static uint32_t topic_get(struct vv_pubsub *ps, const char *name, size_t len, bool local)
{
    uint32_t i = topic_find(ps, name, len);
    if (i != VV__PS_NIL)
        return i;
    if (!local && ps->known_topics >= ps->cfg.max_known_topics)
        return VV__PS_NIL;
    /* Slots below topics_free are all in use: the scan starts there. The array grows by
     * doubling, so that a peer announcing its thousand topics costs a few copies, not one
     * per topic (quadratic: seconds of the loop under a sanitizer's copying realloc). */
    for (i = ps->topics_free; i < ps->n_topics && ps->topics[i].used; i++)
        ;
    if (i == ps->n_topics) {
        if (ps->n_topics == ps->topics_cap) {
            ps->topics_cap = ps->topics_cap ? 2 * ps->topics_cap : 16;
            ps->topics = vv_xrealloc(ps->topics, ps->topics_cap * sizeof(*ps->topics));
        }
        ps->n_topics++;
    }
    ps->topics_free = i + 1;
    struct topic *t = &ps->topics[i];
    memset(t, 0, sizeof(*t));
    t->used = true;
    t->name = vv_xmalloc(len + 1);
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->len = len;
    t->hash = vv_keyed_hash64(name, len);
    vv__ps_map_insert(&ps->topic_map, t->hash, i);
    ps->known_topics++;
    return i;
}

static void topic_release(struct vv_pubsub *ps, uint32_t ti)
{
    struct topic *t = &ps->topics[ti];
    vv__ps_map_remove(&ps->topic_map, t->hash, ti);
    list_free(&t->subs);
    list_free(&t->mesh);
    list_free(&t->fanout);
    vv_free(t->links);
    vv_free(t->publishers);
    vv_free(t->gossip);
    vv_free(t->name);
    memset(t, 0, sizeof(*t));
    ps->known_topics--;
    ps->topics_free = VV_MIN(ps->topics_free, ti);
}

/* A topic nobody here needs any more: no subscriber known, not joined, no policy, no
 * fanout. */
static void topic_maybe_release(struct vv_pubsub *ps, uint32_t ti)
{
    struct topic *t = &ps->topics[ti];
    if (t->used && t->subs.n == 0 && !t->joined && !t->has_cfg && !t->has_fanout)
        topic_release(ps, ti);
}

static uint32_t max_bytes_of(const struct vv_pubsub *ps, const struct topic *t)
{
    return t->has_cfg && t->max_bytes ? t->max_bytes : ps->cfg.max_message_bytes;
}

/* ---- sending ----------------------------------------------------------------------------- */

static void send_bytes(struct vv_pubsub *ps, uint32_t pi, const uint8_t *b, size_t len)
{
    int rc = vv_env_send(ps->env, ps->peers[pi].id, VV_CHANNEL_PUBSUB, b, len);
    if (rc == VV_ECONN_BACKPRESSURE)
        ps->stats.dropped_queue_full++;
}

static void send_control(struct vv_pubsub *ps, uint32_t pi, const struct vv_pubsub_control *c)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CONTROL, 0);
    if (vv_pubsub_control_encode(&pk, c) == 0)
        send_bytes(ps, pi, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* SUBSCRIPTIONS for the given topics (all joined ones when ti is VV__PS_NIL), in frames of
 * at most VV_PUBSUB_MAX_SUBS_PER_FRAME. */
static void send_subs(struct vv_pubsub *ps, uint32_t pi, uint32_t ti, bool subscribe)
{
    struct vv_pubsub_sub subs[VV_PUBSUB_MAX_SUBS_PER_FRAME];
    uint32_t total = ti == VV__PS_NIL ? ps->joined.n : 1;
    for (uint32_t from = 0; from < total; from += VV_PUBSUB_MAX_SUBS_PER_FRAME) {
        uint32_t n = VV_MIN(total - from, (uint32_t)VV_PUBSUB_MAX_SUBS_PER_FRAME);
        for (uint32_t i = 0; i < n; i++) {
            const struct topic *t = &ps->topics[ti == VV__PS_NIL ? ps->joined.v[from + i] : ti];
            subs[i] = (struct vv_pubsub_sub){subscribe, t->name, t->len};
        }
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_PUBSUB_TYPE_SUBSCRIPTIONS, 0);
        if (vv_pubsub_subs_encode(&pk, subs, n) == 0)
            send_bytes(ps, pi, (const uint8_t *)sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void send_graft_now(struct vv_pubsub *ps, uint32_t pi, uint32_t ti)
{
    const struct topic *t = &ps->topics[ti];
    struct vv_pubsub_topic_ref g = {t->name, t->len};
    struct vv_pubsub_control c = {.graft = &g, .n_graft = 1};
    send_control(ps, pi, &c);
    ps->stats.graft_sent++;
}

/* A PRUNE for topic ti to peer pi, with our backoff and up to prune_peers other
 * subscribers of the topic as peer exchange (when with_px). */
static void send_prune_now(struct vv_pubsub *ps, uint32_t pi, uint32_t ti, bool with_px)
{
    const struct topic *t = &ps->topics[ti];
    struct vv_pubsub_px px[VV_PUBSUB_MAX_PX];
    uint32_t n_px = 0;
    for (uint32_t i = 0; with_px && i < t->subs.n && n_px < ps->cfg.prune_peers; i++) {
        uint32_t q = t->subs.v[i];
        if (q != pi && score_of(ps, q) >= 0)
            px[n_px++] = (struct vv_pubsub_px){ps->peers[q].id, NULL, 0};
    }
    struct vv_pubsub_prune pr = {t->name, t->len, ps->cfg.prune_backoff_ms / 1000, px, n_px};
    struct vv_pubsub_control c = {.prune = &pr, .n_prune = 1};
    send_control(ps, pi, &c);
    ps->stats.prune_sent++;
}

/* ---- mesh changes ------------------------------------------------------------------------- */

static void graft(struct vv_pubsub *ps, uint32_t ti, uint32_t pi, bool now_send)
{
    struct topic *t = &ps->topics[ti];
    list_add(&t->mesh, pi);
    link_add(ps, t, ti, pi);
    mesh_joined(ps, pi);
    vv_pubsub_score_graft(ps->score, ps->peers[pi].id, t->name, t->len, now_ms(ps));
    if (now_send)
        send_graft_now(ps, pi, ti);
    else if (!list_has(&ps->peers[pi].graft, ti))
        list_add(&ps->peers[pi].graft, ti);
}

/* Takes pi out of ti's mesh and backs off; tell: queue a PRUNE for the heartbeat. */
static void prune(struct vv_pubsub *ps, uint32_t ti, uint32_t pi, bool tell)
{
    struct topic *t = &ps->topics[ti];
    if (!list_remove(&t->mesh, pi))
        return;
    link_drop(ps, t, ti, pi);
    mesh_left(ps, pi);
    uint64_t now = now_ms(ps);
    vv_pubsub_score_prune(ps->score, ps->peers[pi].id, t->name, t->len, now);
    (void)vv_pubsub_backoff_add(ps->backoff, ps->peers[pi].id, t->name, t->len, now,
                                ps->cfg.prune_backoff_ms);
    if (tell && !list_has(&ps->peers[pi].prune, ti))
        list_add(&ps->peers[pi].prune, ti);
}

/* Shuffles v[0..n) with the env's randomness (Fisher-Yates). */
static void shuffle(struct vv_pubsub *ps, uint32_t *v, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)vv_env_random_below(ps->env, i);
        uint32_t x = v[i - 1];
        v[i - 1] = v[j];
        v[j] = x;
    }
}

/* Subscribers of ti that are not in exclude (may be NULL), not backed off (when
 * check_backoff) and score at least min_score: into out (caller frees), shuffled. */
static uint32_t candidates(struct vv_pubsub *ps, uint32_t ti, const struct idx_list *exclude,
                           bool check_backoff, double min_score, uint32_t **out)
{
    struct topic *t = &ps->topics[ti];
    uint32_t *v = vv_xmalloc((t->subs.n + 1) * sizeof(*v));
    uint32_t n = 0;
    uint64_t now = now_ms(ps);
    for (uint32_t i = 0; i < t->subs.n; i++) {
        uint32_t q = t->subs.v[i];
        if (exclude && list_has(exclude, q))
            continue;
        if (check_backoff &&
            vv_pubsub_backoff_active(ps->backoff, ps->peers[q].id, t->name, t->len, now))
            continue;
        if (score_of(ps, q) < min_score)
            continue;
        v[n++] = q;
    }
    shuffle(ps, v, n);
    *out = v;
    return n;
}

/* ---- subscriptions from peers ------------------------------------------------------------- */

static void peer_unsubscribe(struct vv_pubsub *ps, uint32_t pi, uint32_t ti)
{
    struct topic *t = &ps->topics[ti];
    list_remove(&t->subs, pi);
    if (list_has(&t->mesh, pi)) {
        list_remove(&t->mesh, pi);
        link_drop(ps, t, ti, pi);
        mesh_left(ps, pi);
        vv_pubsub_score_prune(ps->score, ps->peers[pi].id, t->name, t->len, now_ms(ps));
    }
    list_remove(&t->fanout, pi);
    list_remove(&ps->peers[pi].topics, ti);
    topic_maybe_release(ps, ti);
}

static void on_subscriptions(struct vv_pubsub *ps, uint32_t pi, const msgpack_object *body)
{
    static struct vv_pubsub_sub subs[VV_PUBSUB_MAX_SUBS_PER_FRAME];
    uint32_t n = 0;
    if (vv_pubsub_subs_decode(body, subs, VV_PUBSUB_MAX_SUBS_PER_FRAME, &n) != 0) {
        ps->stats.bad_frames++;
        vv_pubsub_score_penalty(ps->score, ps->peers[pi].id, 1);
        return;
    }
    struct peer *p = &ps->peers[pi];
    for (uint32_t i = 0; i < n; i++) {
        if (subs[i].subscribe) {
            uint32_t ti = topic_find(ps, subs[i].topic, subs[i].topic_len);
            if (ti != VV__PS_NIL && list_has(&p->topics, ti))
                continue;
            if (p->topics.n >= ps->cfg.max_peer_topics) {
                ps->stats.topics_refused++;
                continue;
            }
            if (ti == VV__PS_NIL)
                ti = topic_get(ps, subs[i].topic, subs[i].topic_len, false);
            if (ti == VV__PS_NIL) {
                ps->stats.topics_refused++;
                continue;
            }
            list_add(&ps->topics[ti].subs, pi);
            list_add(&p->topics, ti);
        } else {
            uint32_t ti = topic_find(ps, subs[i].topic, subs[i].topic_len);
            if (ti != VV__PS_NIL && list_has(&p->topics, ti))
                peer_unsubscribe(ps, pi, ti);
        }
    }
}

/* ---- lazy push: pulls ----------------------------------------------------------------------
 * A mesh peer we choked announces each large message it gets (IHAVE of one ID). The first
 * announcement of an ID we have not seen opens an entry: if the message has not come from an
 * unchoked peer announce_wait_ms later, it is asked (IWANT) of an announcer, and
 * pull_timeout_ms after each ask of another, until it arrives or the announcers run out
 * (then the heartbeat's gossip is what is left). An announcer asked that did not answer
 * broke its promise: its link is distrusted. The next asked is one not distrusted that sent
 * us the most messages lately, the earliest announcer among equals. One timer serves all entries:
 * it fires at the earliest due, and each firing walks the entries (at most PULL_MAX; a firing acts
 * on every entry due by then, so announcements arriving together are asked together). */

static void on_pull_timer(struct vv_env *env, void *arg);

static void pull_arm(struct vv_pubsub *ps, uint64_t due)
{
    if (ps->pull_armed && ps->pull_due <= due)
        return;
    if (ps->pull_armed)
        vv_env_timer_cancel(ps->env, ps->pull_timer);
    uint64_t now = now_ms(ps);
    ps->pull_timer = vv_env_timer_start(ps->env, due > now ? due - now : 0, 0, on_pull_timer, ps);
    ps->pull_due = due;
    ps->pull_armed = true;
}

/* The message with this ID arrived: nothing more to pull. Returns true when it had been
 * announced (the announcer got the credit of the first notice). */
static bool pull_forget(struct vv_pubsub *ps, const uint8_t *id)
{
    uint32_t i = vv__ps_idset_find(&ps->pulls, id);
    if (i == VV__PS_NIL)
        return false;
    vv__ps_idset_remove(&ps->pulls, i);
    return true;
}

/* Mesh link l of peer pi, which we choked, announced id (not seen here). The first notice of
 * a message earns the link the credit a first delivery earns, so that choked links which
 * are faster than the unchoked ones take their place. */
static void pull_note(struct vv_pubsub *ps, uint32_t ti, uint32_t pi, struct link *l,
                      const uint8_t *id, uint64_t now)
{
    ps->stats.announce_received++;
    uint32_t i = vv__ps_idset_find(&ps->pulls, id);
    if (i == VV__PS_NIL) {
        if (l->distrust > 0)
            return;
        l->credit += 1;
        /* A full table forgets its oldest entry: an announcement costs at most one entry,
         * and what is forgotten is still offered by the heartbeat's gossip. */
        (void)vv__ps_idset_add(&ps->pulls, id, 0);
        i = vv__ps_idset_find(&ps->pulls, id);
        if (ps->pulls.cap > ps->pull_info_cap) {
            ps->pull_info = vv_xrealloc(ps->pull_info, ps->pulls.cap * sizeof(*ps->pull_info));
            ps->pull_info_cap = ps->pulls.cap;
        }
        struct pull_info *pl = &ps->pull_info[i];
        memset(pl, 0, sizeof(*pl));
        pl->topic = ti;
        pl->due = now + ps->cfg.announce_wait_ms;
        pull_arm(ps, pl->due);
    }
    struct pull_info *pl = &ps->pull_info[i];
    for (uint32_t k = 0; k < pl->n_from; k++)
        if (memcmp(pl->from[k], ps->peers[pi].id, VV_NODE_ID_BYTES) == 0)
            return;
    if (pl->n_from < PULL_ANNOUNCERS)
        memcpy(pl->from[pl->n_from++], ps->peers[pi].id, VV_NODE_ID_BYTES);
}

/* Entries due: ask each of its next announcer still connected; one IWANT per peer. */
static void on_pull_timer(struct vv_env *env, void *arg)
{
    (void)env;
    struct vv_pubsub *ps = arg;
    ps->pull_armed = false;
    uint64_t now = now_ms(ps), next_due = UINT64_MAX;
    uint32_t n_ask = 0;
    uint32_t *ask_peer = vv_xmalloc((ps->pulls.n + 1) * sizeof(*ask_peer));
    const uint8_t **ask_id = vv_xmalloc((ps->pulls.n + 1) * sizeof(*ask_id));
    for (uint32_t i = ps->pulls.oldest, nx; i != VV__PS_NIL; i = nx) {
        nx = ps->pulls.e[i].next;
        struct pull_info *pl = &ps->pull_info[i];
        if (pl->due > now) {
            next_due = VV_MIN(next_due, pl->due);
            continue;
        }
        uint32_t to = VV__PS_NIL;
        struct topic *t = &ps->topics[pl->topic];
        if (!vv_pubsub_seen_has(ps->seen, ps->pulls.e[i].id, now)) {
            /* The peer asked last did not answer: a broken promise. Its link loses its
             * credit and its announcements earn none until it delivers again. */
            if (pl->next > 0 && t->used) {
                uint32_t q = peer_find(ps, pl->from[pl->next - 1]);
                struct link *l = q != VV__PS_NIL ? link_of(t, q) : NULL;
                if (l) {
                    l->credit = 0;
                    l->distrust = DISTRUST_HEARTBEATS;
                }
            }
            /* The announcer to ask: not distrusted, and of those the one that sent us the
             * most messages lately (a peer that announces but never sends has none); the
             * earliest announcer among equals. */
            uint32_t best = pl->n_from;
            double best_copies = -1;
            for (uint32_t k = pl->next; k < pl->n_from && t->used; k++) {
                uint32_t q = peer_find(ps, pl->from[k]);
                struct link *l = q != VV__PS_NIL ? link_of(t, q) : NULL;
                if (l && !l->distrust && l->copies > best_copies) {
                    best = k;
                    best_copies = l->copies;
                }
            }
            if (best < pl->n_from && best > pl->next) {
                uint8_t tmp[VV_NODE_ID_BYTES];
                memcpy(tmp, pl->from[best], sizeof(tmp));
                memmove(pl->from[pl->next + 1], pl->from[pl->next],
                        (best - pl->next) * sizeof(pl->from[0]));
                memcpy(pl->from[pl->next], tmp, sizeof(tmp));
            }
            while (to == VV__PS_NIL && pl->next < pl->n_from) {
                uint32_t q = peer_find(ps, pl->from[pl->next++]);
                if (q != VV__PS_NIL && score_of(ps, q) >= ps->cfg.thresholds.gossip)
                    to = q;
            }
        }
        if (to == VV__PS_NIL) {
            vv__ps_idset_remove(&ps->pulls, i); /* here, or nobody left to ask */
            continue;
        }
        ask_peer[n_ask] = to;
        ask_id[n_ask++] = ps->pulls.e[i].id;
        pl->due = now + ps->cfg.pull_timeout_ms;
        next_due = VV_MIN(next_due, pl->due);
    }
    /* One IWANT per peer (the IDs of one peer gathered in order). */
    const uint8_t **ids = vv_xmalloc((n_ask + 1) * sizeof(*ids));
    for (uint32_t a = 0; a < n_ask; a++) {
        uint32_t q = ask_peer[a];
        if (q == VV__PS_NIL)
            continue;
        uint32_t n = 0;
        for (uint32_t b = a; b < n_ask; b++)
            if (ask_peer[b] == q && n < VV_PUBSUB_MAX_CONTROL_IDS) {
                ids[n++] = ask_id[b];
                ask_peer[b] = VV__PS_NIL;
            }
        struct vv_pubsub_control w = {.iwant = ids, .n_iwant = n};
        send_control(ps, q, &w);
        ps->stats.iwant_sent++;
        ps->stats.pulls += n;
    }
    vv_free(ids);
    vv_free(ask_id);
    vv_free(ask_peer);
    if (next_due != UINT64_MAX)
        pull_arm(ps, next_due);
}

/* ---- lazy push: choking ---------------------------------------------------------------------- */

static uint32_t rand_below(void *arg, uint32_t bound);

static void send_choke(struct vv_pubsub *ps, uint32_t pi, uint32_t ti, bool choke)
{
    const struct topic *t = &ps->topics[ti];
    struct vv_pubsub_sub e = {choke, t->name, t->len};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CHOKE, 0);
    if (vv_pubsub_subs_encode(&pk, &e, 1) == 0)
        send_bytes(ps, pi, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (choke)
        ps->stats.choke_sent++;
    else
        ps->stats.unchoke_sent++;
}

/* One heartbeat of a joined topic's chokes: vv_pubsub_choke_select over its mesh links, a
 * CHOKE for each change, then the credits decay. */
static void maintain_chokes(struct vv_pubsub *ps, uint32_t ti)
{
    struct topic *t = &ps->topics[ti];
    uint32_t n = t->n_links;
    if (n > 0) {
        struct vv_pubsub_choke_link *l = vv_xmalloc(n * sizeof(*l));
        bool *choked = vv_xmalloc(n * sizeof(*choked));
        for (uint32_t i = 0; i < n; i++)
            l[i] = (struct vv_pubsub_choke_link){t->links[i].credit, t->links[i].choked};
        bool flowing = t->msgs >= 2;
        if (vv_pubsub_choke_select(ps->cfg.unchoked_peers, l, n, flowing, rand_below, ps, choked) >
            0)
            for (uint32_t i = 0; i < n; i++)
                if (choked[i] != t->links[i].choked) {
                    if (choked[i] && flowing && t->links[i].credit < VV_PUBSUB_CHOKE_IDLE_CREDIT)
                        t->links[i].distrust = DISTRUST_HEARTBEATS;
                    t->links[i].choked = choked[i];
                    send_choke(ps, t->links[i].peer, ti, choked[i]);
                }
        vv_free(choked);
        vv_free(l);
    }
    for (uint32_t i = 0; i < n; i++) {
        t->links[i].credit *= CHOKE_DECAY;
        t->links[i].copies *= CHOKE_DECAY;
        if (t->links[i].distrust > 0)
            t->links[i].distrust--;
    }
    t->msgs *= CHOKE_DECAY;
}

/* CHOKE from a peer: for the topics whose mesh holds it, announce large messages to it
 * instead of sending them (choke), or send them again. Topics where it is not in our mesh
 * are ignored: a choke lasts as long as the link. */
static void on_choke(struct vv_pubsub *ps, uint32_t pi, const msgpack_object *body)
{
    static struct vv_pubsub_sub e[VV_PUBSUB_MAX_SUBS_PER_FRAME];
    uint32_t n = 0;
    if (vv_pubsub_subs_decode(body, e, VV_PUBSUB_MAX_SUBS_PER_FRAME, &n) != 0) {
        ps->stats.bad_frames++;
        vv_pubsub_score_penalty(ps->score, ps->peers[pi].id, 1);
        return;
    }
    struct peer *p = &ps->peers[pi];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t ti = topic_find(ps, e[i].topic, e[i].topic_len);
        if (ti == VV__PS_NIL || link_of(&ps->topics[ti], pi) == NULL)
            continue;
        if (!e[i].subscribe)
            list_remove(&p->choked_us, ti);
        else if (!list_has(&p->choked_us, ti))
            list_add(&p->choked_us, ti);
    }
}

/* ---- messages ---------------------------------------------------------------------------- */

static void pending_unlink(struct vv_pubsub *ps, struct pending *pd)
{
    if (pd->prev)
        pd->prev->next = pd->next;
    else
        ps->pending = pd->next;
    if (pd->next)
        pd->next->prev = pd->prev;
    ps->stats.verifying--;
}

static void pending_free(struct pending *pd)
{
    vv_pubsub_rbuf_unref(pd->frame);
    vv_free(pd);
}

static bool publisher_allowed(const struct topic *t, const uint8_t *from)
{
    if (!t->has_cfg || t->publishers == NULL)
        return true;
    for (uint32_t i = 0; i < t->n_publishers; i++)
        if (memcmp(t->publishers[i], from, VV_NODE_ID_BYTES) == 0)
            return true;
    return false;
}

/* An announcement: IHAVE of one message, sent at once to a mesh peer that choked us. */
static void send_announce(struct vv_pubsub *ps, uint32_t pi, uint32_t ti, const uint8_t *id)
{
    const struct topic *t = &ps->topics[ti];
    const uint8_t *ids[1] = {id};
    struct vv_pubsub_ihave ih = {t->name, t->len, ids, 1};
    struct vv_pubsub_control c = {.ihave = &ih, .n_ihave = 1};
    send_control(ps, pi, &c);
    ps->stats.announce_sent++;
}

/* Sends a validated message's frame to the topic's mesh (or, when from_self and
 * flood_publish, to every subscriber above the publish threshold; not joined: fanout),
 * except to source and to peers that said they do not want it; a mesh peer that choked us
 * gets an announcement instead when the data is at least lazy_min_bytes (our own messages
 * go in full: the first hop is the publisher's). Returns the peers sent to. */
static uint32_t forward(struct vv_pubsub *ps, uint32_t ti, const uint8_t *id,
                        struct vv_pubsub_rbuf *frame, size_t data_len, uint32_t source,
                        bool from_self, bool first_hop)
{
    struct topic *t = &ps->topics[ti];
    uint32_t sent = 0;
    const struct idx_list *to = &t->mesh;
    if (from_self && ps->cfg.flood_publish)
        to = &t->subs;
    else if (!t->joined)
        to = &t->fanout;
    for (uint32_t i = 0; i < to->n; i++) {
        uint32_t q = to->v[i];
        if (q == source)
            continue;
        if (from_self && score_of(ps, q) < ps->cfg.thresholds.publish)
            continue;
        if (vv_pubsub_idontwant_has(ps->peers[q].dontwant, id)) {
            ps->stats.idontwant_saved++;
            continue;
        }
        if (!from_self && !first_hop && data_len >= ps->cfg.lazy_min_bytes &&
            list_has(&ps->peers[q].choked_us, ti)) {
            send_announce(ps, q, ti, id);
            continue;
        }
        send_bytes(ps, q, frame->bytes, frame->len);
        sent++;
    }
    if (!from_self)
        ps->stats.forwarded += sent;
    return sent;
}

/* A message's signature was checked (off the loop). */
static void on_verified(struct vv_env *env, bool ok, void *arg)
{
    (void)env;
    struct pending *pd = arg;
    struct vv_pubsub *ps = pd->ps;
    pending_unlink(ps, pd);
    uint32_t pi = peer_find(ps, pd->peer); /* may have left meanwhile */
    struct vv_wire_frame f;
    struct vv_pubsub_msg m;
    if (vv_wire_decode(pd->frame->bytes, pd->frame->len, &f) != 0 ||
        vv_pubsub_msg_decode(&f.body, &m) != 0) {
        vv_wire_frame_free(&f); /* decoded once already: cannot happen */
        pending_free(pd);
        return;
    }
    uint32_t ti = topic_find(ps, m.topic, m.topic_len);
    if (!ok) {
        ps->stats.invalid_signature++;
        vv_pubsub_seen_remove(ps->seen, pd->id); /* the genuine one may still come */
        if (pi != VV__PS_NIL)
            vv_pubsub_score_invalid(ps->score, pd->peer, m.topic, m.topic_len);
    } else if (ti == VV__PS_NIL || !ps->topics[ti].joined) {
        ps->stats.dropped_not_joined++; /* left while it was checked */
    } else {
        enum vv_pubsub_verdict v =
            ps->cbs.validate ? ps->cbs.validate(ps->arg, pd->peer, &m) : VV_PUBSUB_ACCEPT;
        if (v == VV_PUBSUB_REJECT) {
            ps->stats.rejected++;
            if (pi != VV__PS_NIL)
                vv_pubsub_score_invalid(ps->score, pd->peer, m.topic, m.topic_len);
        } else if (v == VV_PUBSUB_IGNORE) {
            ps->stats.ignored++;
        } else {
            struct topic *t = &ps->topics[ti];
            struct link *l = pi != VV__PS_NIL ? link_of(t, pi) : NULL;
            if (pi != VV__PS_NIL)
                vv_pubsub_score_first_delivery(ps->score, pd->peer, m.topic, m.topic_len);
            if (l) {
                l->credit += pd->announced ? DUP_CREDIT : 1;
                l->copies += 1;
                l->distrust = 0;
            }
            t->msgs += 1;
            (void)vv_pubsub_mcache_put(ps->mcache, pd->id, m.topic, m.topic_len, pd->frame);
            /* From the origin itself: the first hop of a message, which the publisher
             * flooded to its subscribers; these relays push it to their whole mesh, which
             * widens the front early for few copies (docs/pubsub.md, "Lazy push"). */
            bool first_hop = memcmp(pd->peer, m.from, VV_NODE_ID_BYTES) == 0;
            forward(ps, ti, pd->id, pd->frame, m.data_len, pi, false, first_hop);
            ps->stats.delivered++;
            if (ps->cbs.deliver)
                ps->cbs.deliver(ps->arg, &m, pd->id);
        }
    }
    vv_wire_frame_free(&f);
    pending_free(pd);
}

static void send_idontwant(struct vv_pubsub *ps, uint32_t ti, uint32_t source, const uint8_t *id)
{
    const struct topic *t = &ps->topics[ti];
    const uint8_t *ids[1] = {id};
    struct vv_pubsub_control c = {.idontwant = ids, .n_idontwant = 1};
    for (uint32_t i = 0; i < t->mesh.n; i++)
        if (t->mesh.v[i] != source) {
            send_control(ps, t->mesh.v[i], &c);
            ps->stats.idontwant_sent++;
        }
}

static void on_message(struct vv_pubsub *ps, uint32_t pi, const struct vv_wire_frame *f,
                       const uint8_t *data, size_t len)
{
    struct vv_pubsub_msg m;
    const uint8_t *peer = ps->peers[pi].id;
    if (vv_pubsub_msg_decode(&f->body, &m) != 0) {
        ps->stats.bad_frames++;
        vv_pubsub_score_penalty(ps->score, peer, 1);
        return;
    }
    uint32_t ti = topic_find(ps, m.topic, m.topic_len);
    if (ti == VV__PS_NIL || !ps->topics[ti].joined) {
        ps->stats.dropped_not_joined++;
        return;
    }
    struct topic *t = &ps->topics[ti];
    /* The topic's policy is this node's own (pubsub.createTopic): a peer cannot know it, so
     * a message breaking it is dropped and counted, not held against the peer. (The
     * validator's reject is.) */
    if (m.data_len > max_bytes_of(ps, t)) {
        ps->stats.dropped_too_large++;
        return;
    }
    if (!publisher_allowed(t, m.from)) {
        ps->stats.dropped_publisher++;
        return;
    }
    uint8_t digest[VV_PUBSUB_DIGEST_BYTES];
    vv_pubsub_msg_digest(&m, digest);
    uint64_t now = now_ms(ps);
    if (vv_pubsub_seen_add(ps->seen, digest, now) == VV_EEXIST) {
        ps->stats.duplicates++;
        if (vv_pubsub_mcache_get(ps->mcache, digest) != NULL && list_has(&t->mesh, pi))
            vv_pubsub_score_near_first_delivery(ps->score, peer, m.topic, m.topic_len);
        struct link *l = link_of(t, pi);
        if (l) {
            l->credit += DUP_CREDIT;
            l->copies += 1;
            l->distrust = 0;
        }
        return;
    }
    bool announced = pull_forget(ps, digest);
    if (m.data_len >= ps->cfg.idontwant_min_bytes)
        send_idontwant(ps, ti, pi, digest);
    struct pending *pd = vv_xcalloc(1, sizeof(*pd));
    pd->ps = ps;
    memcpy(pd->peer, peer, VV_NODE_ID_BYTES);
    memcpy(pd->id, digest, VV_PUBSUB_ID_BYTES);
    pd->announced = announced;
    pd->frame = vv_pubsub_rbuf_new(data, len);
    uint8_t signed_bytes[VV_PUBSUB_SIGNED_BYTES];
    vv_pubsub_signed_bytes(digest, signed_bytes);
    int rc = vv_env_verify_async(ps->env, VV_CHANNEL_PUBSUB, m.origin, signed_bytes,
                                 sizeof(signed_bytes), m.sig, on_verified, pd, NULL);
    if (rc != 0) {
        ps->stats.dropped_verify_busy++;
        vv_pubsub_seen_remove(ps->seen, digest);
        pending_free(pd);
        return;
    }
    pd->next = ps->pending;
    if (pd->next)
        pd->next->prev = pd;
    ps->pending = pd;
    ps->stats.verifying++;
}

/* ---- control ----------------------------------------------------------------------------- */

static void on_graft(struct vv_pubsub *ps, uint32_t pi, const struct vv_pubsub_topic_ref *g)
{
    ps->stats.graft_received++;
    uint32_t ti = topic_find(ps, g->topic, g->topic_len);
    if (ti == VV__PS_NIL || !ps->topics[ti].joined) {
        /* Not a topic of ours (yet): ignored, as go-libp2p does. A PRUNE would make the
         * grafter back off us for a minute, and the backoff it then holds would refuse our
         * own GRAFT when we join a moment later: two nodes joining a topic at nearly the
         * same time would stay out of each other's mesh. */
        return;
    }
    struct topic *t = &ps->topics[ti];
    if (list_has(&t->mesh, pi))
        return;
    uint32_t penalty = 0;
    if (vv_pubsub_backoff_on_graft(ps->backoff, ps->peers[pi].id, t->name, t->len, now_ms(ps),
                                   &penalty) != 0) {
        vv_pubsub_score_penalty(ps->score, ps->peers[pi].id, penalty);
        send_prune_now(ps, pi, ti, false);
        return;
    }
    if (score_of(ps, pi) < 0 || t->mesh.n >= ps->cfg.d_hi) {
        (void)vv_pubsub_backoff_add(ps->backoff, ps->peers[pi].id, t->name, t->len, now_ms(ps),
                                    ps->cfg.prune_backoff_ms);
        send_prune_now(ps, pi, ti, score_of(ps, pi) >= 0);
        return;
    }
    if (!list_has(&t->subs, pi)) {
        /* A GRAFT implies the subscription (the peer's SUBSCRIPTIONS may have been lost). */
        if (ps->peers[pi].topics.n >= ps->cfg.max_peer_topics) {
            ps->stats.topics_refused++;
            send_prune_now(ps, pi, ti, false);
            return;
        }
        list_add(&t->subs, pi);
        list_add(&ps->peers[pi].topics, ti);
    }
    list_add(&t->mesh, pi);
    link_add(ps, t, ti, pi);
    mesh_joined(ps, pi);
    vv_pubsub_score_graft(ps->score, ps->peers[pi].id, t->name, t->len, now_ms(ps));
}

static void on_prune(struct vv_pubsub *ps, uint32_t pi, const struct vv_pubsub_prune *pr)
{
    ps->stats.prune_received++;
    uint32_t ti = topic_find(ps, pr->topic, pr->topic_len);
    if (ti == VV__PS_NIL)
        return;
    struct topic *t = &ps->topics[ti];
    uint64_t now = now_ms(ps);
    if (list_remove(&t->mesh, pi)) {
        link_drop(ps, t, ti, pi);
        mesh_left(ps, pi);
        vv_pubsub_score_prune(ps->score, ps->peers[pi].id, t->name, t->len, now);
    }
    uint64_t backoff = pr->backoff_s ? (uint64_t)pr->backoff_s * 1000 : ps->cfg.prune_backoff_ms;
    (void)vv_pubsub_backoff_add(ps->backoff, ps->peers[pi].id, t->name, t->len, now, backoff);
    /* Peer exchange only from peers we think well of. */
    if (pr->n_px == 0 || !t->joined || score_of(ps, pi) < ps->cfg.thresholds.accept_px)
        return;
    for (uint32_t i = 0; i < pr->n_px && i < ps->cfg.prune_peers; i++) {
        if (peer_find(ps, pr->px[i].peer) != VV__PS_NIL)
            continue;
        char addr[VV_PUBSUB_MAX_ADDRESS_BYTES + 1];
        const char *a = NULL;
        if (pr->px[i].address != NULL) {
            memcpy(addr, pr->px[i].address, pr->px[i].address_len);
            addr[pr->px[i].address_len] = '\0';
            a = addr;
        }
        (void)vv_env_connect(ps->env, pr->px[i].peer, a);
    }
}

static void on_control(struct vv_pubsub *ps, uint32_t pi, const msgpack_object *body)
{
    struct vv_pubsub_control c;
    if (vv_pubsub_control_decode(body, &c) != 0) {
        ps->stats.bad_frames++;
        vv_pubsub_score_penalty(ps->score, ps->peers[pi].id, 1);
        return;
    }
    struct peer *p = &ps->peers[pi];
    double sc = score_of(ps, pi);
    uint64_t now = now_ms(ps);
    /* IHAVE: from a mesh peer we choked, announcements (pulled later if the message does
     * not come); from others, gossip: ask at once for what we have not seen. Both within
     * this heartbeat's budget of IDs asked of the peer. */
    if (c.n_ihave > 0) {
        ps->stats.ihave_received++;
        if (sc >= ps->cfg.thresholds.gossip) {
            const uint8_t **want = vv_xmalloc(VV_PUBSUB_MAX_CONTROL_IDS * sizeof(*want));
            uint32_t nw = 0;
            int gossip_read = -1; /* this frame's gossip read: unknown yet */
            for (uint32_t i = 0; i < c.n_ihave; i++) {
                uint32_t ti = topic_find(ps, c.ihave[i].topic, c.ihave[i].topic_len);
                if (ti == VV__PS_NIL || !ps->topics[ti].joined)
                    continue;
                struct link *l = link_of(&ps->topics[ti], pi);
                bool announce = l != NULL && l->choked;
                if (!announce && gossip_read < 0)
                    gossip_read = p->ihave_in++ < ps->cfg.max_ihave_messages;
                if (!announce && !gossip_read)
                    continue;
                for (uint32_t j = 0; j < c.ihave[i].n_ids; j++) {
                    if (p->iwant_asked >= ps->cfg.max_ihave_length)
                        break;
                    if (vv_pubsub_seen_has(ps->seen, c.ihave[i].ids[j], now))
                        continue;
                    p->iwant_asked++;
                    if (announce)
                        pull_note(ps, ti, pi, l, c.ihave[i].ids[j], now);
                    else
                        want[nw++] = c.ihave[i].ids[j];
                }
            }
            if (nw > 0) {
                struct vv_pubsub_control w = {.iwant = want, .n_iwant = nw};
                send_control(ps, pi, &w);
                ps->stats.iwant_sent++;
            }
            vv_free(want);
        }
    }
    /* IWANT: answer from the message cache. */
    if (c.n_iwant > 0) {
        ps->stats.iwant_received++;
        for (uint32_t i = 0; i < c.n_iwant && sc >= ps->cfg.thresholds.gossip; i++) {
            if (p->iwant_served >= ps->cfg.max_ihave_length * ps->cfg.gossip_retransmission)
                break;
            struct vv_pubsub_rbuf *fr = vv_pubsub_mcache_get(ps->mcache, c.iwant[i]);
            if (fr == NULL || vv_pubsub_idontwant_has(p->dontwant, c.iwant[i]))
                continue;
            send_bytes(ps, pi, fr->bytes, fr->len);
            p->iwant_served++;
            ps->stats.iwant_served++;
        }
    }
    for (uint32_t i = 0; i < c.n_graft; i++)
        on_graft(ps, pi, &c.graft[i]);
    for (uint32_t i = 0; i < c.n_prune; i++)
        on_prune(ps, pi, &c.prune[i]);
    if (c.n_idontwant > 0) {
        ps->stats.idontwant_received++;
        for (uint32_t i = 0; i < c.n_idontwant; i++)
            (void)vv_pubsub_idontwant_add(p->dontwant, c.idontwant[i]);
    }
    vv_pubsub_control_free(&c);
}

/* ---- channel ----------------------------------------------------------------------------- */

static void on_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    (void)env;
    struct vv_pubsub *ps = arg;
    uint32_t pi = peer_add(ps, peer);
    if (score_of(ps, pi) < ps->cfg.thresholds.graylist) {
        ps->stats.dropped_graylisted++;
        return;
    }
    struct vv_wire_frame f;
    if (vv_wire_decode(data, len, &f) != 0) {
        ps->stats.bad_frames++;
        vv_pubsub_score_penalty(ps->score, peer, 1);
        return;
    }
    switch (f.h.type) {
    case VV_PUBSUB_TYPE_SUBSCRIPTIONS:
        on_subscriptions(ps, pi, &f.body);
        break;
    case VV_PUBSUB_TYPE_MESSAGE:
        on_message(ps, pi, &f, data, len);
        break;
    case VV_PUBSUB_TYPE_CONTROL:
        on_control(ps, pi, &f.body);
        break;
    case VV_PUBSUB_TYPE_CHOKE:
        on_choke(ps, pi, &f.body);
        break;
    default:
        if (vv_wire_verdict(&f.h, false) != VV_WIRE_SKIP) {
            ps->stats.bad_frames++;
            vv_pubsub_score_penalty(ps->score, peer, 1);
        }
        break;
    }
    vv_wire_frame_free(&f);
}

static void peer_remove(struct vv_pubsub *ps, uint32_t pi)
{
    struct peer *p = &ps->peers[pi];
    while (p->topics.n > 0)
        peer_unsubscribe(ps, pi, p->topics.v[p->topics.n - 1]);
    for (uint32_t ti = 0; ti < ps->n_topics; ti++) /* meshes without a subscription */
        if (ps->topics[ti].used && list_remove(&ps->topics[ti].mesh, pi)) {
            link_drop(ps, &ps->topics[ti], ti, pi);
            mesh_left(ps, pi);
        }
    if (p->n_mesh > 0) {
        p->n_mesh = 1;
        mesh_left(ps, pi);
    }
    vv_pubsub_score_remove_peer(ps->score, p->id, now_ms(ps));
    vv__ps_map_remove(&ps->peer_map, p->hash, pi);
    vv_pubsub_idontwant_free(p->dontwant);
    list_free(&p->topics);
    list_free(&p->choked_us);
    list_free(&p->graft);
    list_free(&p->prune);
    list_free(&p->ihave);
    memset(p, 0, sizeof(*p));
}

static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    struct vv_pubsub *ps = arg;
    if (up) {
        uint32_t pi = peer_add(ps, peer);
        if (ps->joined.n > 0)
            send_subs(ps, pi, VV__PS_NIL, true);
        return;
    }
    uint32_t pi = peer_find(ps, peer);
    if (pi != VV__PS_NIL)
        peer_remove(ps, pi);
}

/* ---- heartbeat --------------------------------------------------------------------------- */

static uint32_t rand_below(void *arg, uint32_t bound)
{
    return (uint32_t)vv_env_random_below(((struct vv_pubsub *)arg)->env, bound);
}

/* One heartbeat of one joined topic's mesh: the decisions of vv_pubsub_mesh_select
 * (pubsub_core.h) over the topic's subscribers, then the GRAFTs and PRUNEs they call for
 * (sent with the heartbeat's other control). Direction is not known on vv_env, so no peer
 * counts as outbound and D_out is 0. */
static void maintain_mesh(struct vv_pubsub *ps, uint32_t ti)
{
    struct topic *t = &ps->topics[ti];
    uint32_t n = t->subs.n;
    if (n == 0)
        return;
    struct vv_pubsub_mesh_candidate *c = vv_xmalloc(n * sizeof(*c));
    uint8_t *decision = vv_xmalloc(n);
    uint32_t *who = vv_xmalloc(n * sizeof(*who));
    uint64_t now = now_ms(ps);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t q = t->subs.v[i];
        who[i] = q;
        c[i].score = score_of(ps, q);
        c[i].in_mesh = list_has(&t->mesh, q);
        c[i].outbound = false;
        c[i].graftable =
            !vv_pubsub_backoff_active(ps->backoff, ps->peers[q].id, t->name, t->len, now);
    }
    struct vv_pubsub_mesh_params mp = {ps->cfg.d,
                                       ps->cfg.d_lo,
                                       ps->cfg.d_hi,
                                       ps->cfg.d_score,
                                       0,
                                       ps->cfg.opportunistic_graft_peers,
                                       ps->cfg.thresholds.opportunistic_graft};
    bool opportunistic = ps->ticks % ps->cfg.opportunistic_graft_ticks == 0;
    vv_pubsub_mesh_select(&mp, c, n, opportunistic, rand_below, ps, decision);
    for (uint32_t i = 0; i < n; i++) {
        if (decision[i] == VV_PUBSUB_MESH_PRUNE)
            prune(ps, ti, who[i], true);
        else if (decision[i] == VV_PUBSUB_MESH_GRAFT)
            graft(ps, ti, who[i], false);
    }
    vv_free(who);
    vv_free(decision);
    vv_free(c);
}

static void maintain_fanout(struct vv_pubsub *ps, uint32_t ti, uint64_t now)
{
    struct topic *t = &ps->topics[ti];
    if (!t->has_fanout)
        return;
    if (t->joined || now - t->fanout_last_ms > ps->cfg.fanout_ttl_ms) {
        list_free(&t->fanout);
        t->has_fanout = false;
        return;
    }
    for (uint32_t i = 0; i < t->fanout.n;) {
        uint32_t q = t->fanout.v[i];
        if (!list_has(&t->subs, q) || score_of(ps, q) < ps->cfg.thresholds.publish)
            list_remove(&t->fanout, q);
        else
            i++;
    }
    if (t->fanout.n < ps->cfg.d) {
        uint32_t *cand;
        uint32_t n = candidates(ps, ti, &t->fanout, false, ps->cfg.thresholds.publish, &cand);
        for (uint32_t i = 0; i < n && t->fanout.n < ps->cfg.d; i++)
            list_add(&t->fanout, cand[i]);
        vv_free(cand);
    }
}

/* IHAVE for the topic's recent messages to d_lazy (or gossip_factor of the eligible) peers
 * outside its mesh and fanout. */
static void plan_gossip(struct vv_pubsub *ps, uint32_t ti)
{
    struct topic *t = &ps->topics[ti];
    if (!t->joined && !t->has_fanout)
        return;
    /* The IDs go through the slice's scratch buffer and are kept, sized to what there is,
     * only until the slice's control is sent: a buffer of max_ihave_length IDs per topic
     * (100 KB) would cost a node with 10,000 joined topics a gigabyte. */
    if (ps->gossip_scratch == NULL)
        ps->gossip_scratch = vv_xmalloc(ps->cfg.max_ihave_length * sizeof(*ps->gossip_scratch));
    uint32_t n_ids = vv_pubsub_mcache_gossip_ids(ps->mcache, t->name, t->len, ps->gossip_scratch,
                                                 ps->cfg.max_ihave_length);
    if (n_ids == 0)
        return;
    vv_free(t->gossip);
    t->gossip = vv_xmalloc(n_ids * sizeof(*t->gossip));
    memcpy(t->gossip, ps->gossip_scratch, n_ids * sizeof(*t->gossip));
    t->n_gossip = n_ids;
    uint32_t *cand;
    uint32_t n = candidates(ps, ti, t->joined ? &t->mesh : &t->fanout, false,
                            ps->cfg.thresholds.gossip, &cand);
    uint32_t target = VV_MAX(ps->cfg.d_lazy, (uint32_t)(ps->cfg.gossip_factor * n));
    for (uint32_t i = 0; i < n && i < target; i++)
        if (!list_has(&ps->peers[cand[i]].ihave, ti))
            list_add(&ps->peers[cand[i]].ihave, ti);
    vv_free(cand);
}

/*
 * Sends each peer what this slice of the heartbeat decided: every GRAFT and PRUNE, in as
 * many CONTROL frames as the lists' bounds need (a peer grafted into hundreds of meshes in
 * one slice hears of each), the first frame carrying IHAVE within the peer's gossip budget
 * for the round: max_ihave_length IDs and max_ihave_messages frames, what the peer reads of
 * us per heartbeat, so that several slices do not send more gossip than one heartbeat did.
 */
static void flush_control(struct vv_pubsub *ps)
{
    for (uint32_t pi = 0; pi < ps->n_peers; pi++) {
        struct peer *p = &ps->peers[pi];
        if (!p->used || p->graft.n + p->prune.n + p->ihave.n == 0)
            continue;
        /* IHAVE entries until the round's ID budget for the peer, or one frame's, is spent. */
        struct vv_pubsub_ihave ih[VV_PUBSUB_MAX_IHAVE_TOPICS];
        const uint8_t **ids = NULL;
        uint32_t nih = 0, nids = 0;
        uint32_t id_budget =
            ps->cfg.max_ihave_length - VV_MIN(p->ihave_ids_out, ps->cfg.max_ihave_length);
        if (p->ihave_msgs_out >= ps->cfg.max_ihave_messages)
            id_budget = 0;
        if (p->ihave.n > 0 && id_budget > 0)
            ids = vv_xmalloc(id_budget * sizeof(*ids));
        for (uint32_t i = 0; ids && i < p->ihave.n && nih < VV_PUBSUB_MAX_IHAVE_TOPICS; i++) {
            const struct topic *t = &ps->topics[p->ihave.v[i]];
            uint32_t take = VV_MIN(t->n_gossip, id_budget - nids);
            if (take == 0)
                break;
            for (uint32_t j = 0; j < take; j++)
                ids[nids + j] = t->gossip[j];
            ih[nih++] = (struct vv_pubsub_ihave){t->name, t->len, &ids[nids], take};
            nids += take;
        }
        p->ihave_ids_out += nids;
        p->ihave_msgs_out += nih > 0;
        ps->stats.ihave_sent += nih > 0;
        uint32_t gi = 0, pri = 0;
        do {
            uint32_t ng = VV_MIN(p->graft.n - gi, (uint32_t)VV_PUBSUB_MAX_GRAFTS);
            uint32_t np = VV_MIN(p->prune.n - pri, (uint32_t)VV_PUBSUB_MAX_PRUNES);
            struct vv_pubsub_topic_ref g[VV_PUBSUB_MAX_GRAFTS];
            struct vv_pubsub_prune pr[VV_PUBSUB_MAX_PRUNES];
            for (uint32_t i = 0; i < ng; i++)
                g[i] = (struct vv_pubsub_topic_ref){ps->topics[p->graft.v[gi + i]].name,
                                                    ps->topics[p->graft.v[gi + i]].len};
            for (uint32_t i = 0; i < np; i++)
                pr[i] = (struct vv_pubsub_prune){ps->topics[p->prune.v[pri + i]].name,
                                                 ps->topics[p->prune.v[pri + i]].len,
                                                 ps->cfg.prune_backoff_ms / 1000, NULL, 0};
            struct vv_pubsub_control c = {
                .ihave = ih, .n_ihave = nih, .graft = g, .n_graft = ng, .prune = pr, .n_prune = np};
            if (nih + ng + np > 0)
                send_control(ps, pi, &c);
            ps->stats.graft_sent += ng;
            ps->stats.prune_sent += np;
            gi += ng;
            pri += np;
            nih = 0; /* IHAVE in the first frame only */
        } while (gi < p->graft.n || pri < p->prune.n);
        vv_free(ids);
        p->graft.n = p->prune.n = p->ihave.n = 0;
    }
}

/*
 * The heartbeat runs in rounds. A round starts at each heartbeat_ms tick (score decay, the
 * tick count) and maintains the topic slots in order, at most heartbeat_slice_topics active
 * ones (joined or with fanout: mesh, fanout, gossip) per loop turn, sending each slice's
 * control at once; the next slice runs from a 1 ms timer, so that sockets are read between
 * slices (libuv runs a timer started from a timer callback in the same pass when its delay
 * is 0). Idle slots (known only from peers) cost a test each. When the last slot is done,
 * the per-heartbeat rest runs: the message cache's window shifts, per-peer budgets reset,
 * backoff and seen caches are swept, unneeded topics released. A tick that comes while a
 * round is still running (a round longer than heartbeat_ms) starts nothing: the round goes
 * on, and the next round starts at the next tick.
 *
 * Why: a round costs O(active topics x their subscribers x a score each); with thousands of
 * joined topics one pass would hold the loop for tens of ms. Messages arriving between
 * slices are handled as at any time (the mesh of a topic not yet maintained this round is
 * last round's).
 */
static void heartbeat_slice(struct vv_env *env, void *arg);

static void heartbeat_finish(struct vv_pubsub *ps)
{
    uint64_t now = now_ms(ps);
    vv_pubsub_mcache_shift(ps->mcache);
    for (uint32_t pi = 0; pi < ps->n_peers; pi++) {
        struct peer *p = &ps->peers[pi];
        if (!p->used)
            continue;
        vv_pubsub_idontwant_heartbeat(p->dontwant);
        p->ihave_in = p->iwant_asked = p->iwant_served = 0;
        p->ihave_ids_out = p->ihave_msgs_out = 0;
    }
    (void)vv_pubsub_backoff_sweep(ps->backoff, now, BACKOFF_SWEEP);
    (void)vv_pubsub_seen_sweep(ps->seen, now, SEEN_SWEEP);
    for (uint32_t ti = 0; ti < ps->n_topics; ti++)
        topic_maybe_release(ps, ti);
    ps->hb_running = false;
}

/* One slice of the round: up to heartbeat_slice_topics active topics from hb_cursor. */
static void heartbeat_step(struct vv_pubsub *ps)
{
    uint64_t now = now_ms(ps);
    uint32_t budget = ps->cfg.heartbeat_slice_topics;
    uint32_t first = ps->hb_cursor;
    ps->slice_scores = vv_xmalloc((ps->n_peers + 1) * sizeof(*ps->slice_scores));
    for (uint32_t pi = 0; pi < ps->n_peers; pi++)
        ps->slice_scores[pi] = NAN;
    while (ps->hb_cursor < ps->n_topics && budget > 0) {
        uint32_t ti = ps->hb_cursor++;
        const struct topic *t = &ps->topics[ti];
        if (!t->used || (!t->joined && !t->has_fanout))
            continue;
        if (t->joined)
            maintain_mesh(ps, ti);
        maintain_fanout(ps, ti, now);
        plan_gossip(ps, ti);
        ps->stats.heartbeat_topics++;
        budget--;
    }
    flush_control(ps);
    /* After the GRAFTs have gone: a CHOKE must not reach a peer before the GRAFT that made
     * the link (it would ignore the CHOKE and keep sending). */
    for (uint32_t ti = first; ti < ps->hb_cursor; ti++)
        if (ps->topics[ti].used && ps->topics[ti].joined)
            maintain_chokes(ps, ti);
    vv_free(ps->slice_scores);
    ps->slice_scores = NULL;
    for (uint32_t ti = first; ti < ps->hb_cursor; ti++) {
        struct topic *t = &ps->topics[ti];
        vv_free(t->gossip);
        t->gossip = NULL;
        t->n_gossip = 0;
    }
    ps->stats.heartbeat_slices++;
    /* Done when no slot is left, or none of those left is active. */
    uint32_t ti = ps->hb_cursor;
    while (ti < ps->n_topics &&
           !(ps->topics[ti].used && (ps->topics[ti].joined || ps->topics[ti].has_fanout)))
        ti++;
    ps->hb_cursor = ti;
    if (ti < ps->n_topics)
        ps->hb_slice_timer = vv_env_timer_start(ps->env, 1, 0, heartbeat_slice, ps);
    else
        heartbeat_finish(ps);
}

static void heartbeat_slice(struct vv_env *env, void *arg)
{
    (void)env;
    struct vv_pubsub *ps = arg;
    ps->hb_slice_timer = 0;
    heartbeat_step(ps);
}

static void heartbeat(struct vv_env *env, void *arg)
{
    (void)env;
    struct vv_pubsub *ps = arg;
    if (ps->hb_running)
        return;
    uint64_t now = now_ms(ps);
    ps->ticks++;
    if (now - ps->last_decay_ms >= ps->cfg.score.decay_interval_ms) {
        vv_pubsub_score_decay(ps->score, now);
        ps->last_decay_ms = now;
    }
    ps->hb_running = true;
    ps->hb_cursor = 0;
    heartbeat_step(ps);
}

/* ---- the API ----------------------------------------------------------------------------- */

struct vv_pubsub *vv_pubsub_new(struct vv_env *env, const struct vv_pubsub_config *cfg,
                                const struct vv_pubsub_cbs *cbs, void *arg)
{
    struct vv_pubsub_config c;
    if (cfg == NULL)
        vv_pubsub_config_defaults(&c);
    else
        c = *cfg;
    char why[160];
    if (vv_pubsub_config_check(&c, why, sizeof(why)) != 0)
        return NULL;
    struct vv_pubsub *ps = vv_xcalloc(1, sizeof(*ps));
    ps->env = env;
    ps->cfg = c;
    if (cbs)
        ps->cbs = *cbs;
    ps->arg = arg;
    vv__ps_map_init(&ps->peer_map);
    vv__ps_map_init(&ps->topic_map);
    struct vv_pubsub_mcache_config mc;
    vv_pubsub_mcache_config_defaults(&mc);
    mc.history_length = c.mcache_len;
    mc.gossip_length = c.mcache_gossip;
    mc.max_bytes = c.mcache_max_bytes;
    (void)vv_pubsub_mcache_new(&mc, &ps->mcache);
    vv_pubsub_seen_new(c.seen_ttl_ms, c.max_seen, &ps->seen);
    vv__ps_idset_init(&ps->pulls, PULL_MAX);
    struct vv_pubsub_backoff_config bc;
    vv_pubsub_backoff_config_defaults(&bc);
    bc.prune_backoff_ms = c.prune_backoff_ms;
    vv_pubsub_backoff_new(&bc, &ps->backoff);
    (void)vv_pubsub_score_new(&c.score, &ps->score);
    /* Sequence numbers start at the wall clock in microseconds, so a restarted node does
     * not reuse one (a reused (origin, seqno) with other data is another message, but peers'
     * seen caches would not care; the ID covers the data). */
    ps->seqno = vv_env_wall_ms(env) * 1000;
    ps->last_decay_ms = vv_env_now(env);
    vv_env_set_channel(env, VV_CHANNEL_PUBSUB, on_recv, on_peer, ps);
    uint64_t first = vv_env_random_below(env, c.heartbeat_ms) + 1;
    ps->timer = vv_env_timer_start(env, first, c.heartbeat_ms, heartbeat, ps);
    return ps;
}

void vv_pubsub_free(struct vv_pubsub *ps)
{
    if (ps == NULL)
        return;
    vv_env_timer_cancel(ps->env, ps->timer);
    if (ps->hb_slice_timer != 0)
        vv_env_timer_cancel(ps->env, ps->hb_slice_timer);
    if (ps->pull_armed)
        vv_env_timer_cancel(ps->env, ps->pull_timer);
    vv_env_verify_cancel_channel(ps->env, VV_CHANNEL_PUBSUB);
    vv_env_set_channel(ps->env, VV_CHANNEL_PUBSUB, NULL, NULL, NULL);
    while (ps->pending) {
        struct pending *pd = ps->pending;
        ps->pending = pd->next;
        pending_free(pd);
    }
    for (uint32_t pi = 0; pi < ps->n_peers; pi++)
        if (ps->peers[pi].used) {
            if (ps->peers[pi].n_mesh > 0)
                (void)vv_env_release_peer(ps->env, ps->peers[pi].id, TAG);
            vv_pubsub_idontwant_free(ps->peers[pi].dontwant);
            list_free(&ps->peers[pi].topics);
            list_free(&ps->peers[pi].choked_us);
            list_free(&ps->peers[pi].graft);
            list_free(&ps->peers[pi].prune);
            list_free(&ps->peers[pi].ihave);
        }
    for (uint32_t ti = 0; ti < ps->n_topics; ti++)
        if (ps->topics[ti].used)
            topic_release(ps, ti);
    vv_free(ps->peers);
    vv_free(ps->topics);
    vv_free(ps->gossip_scratch);
    list_free(&ps->joined);
    vv__ps_map_free(&ps->peer_map);
    vv__ps_map_free(&ps->topic_map);
    vv_pubsub_mcache_free(ps->mcache);
    vv_pubsub_seen_free(ps->seen);
    vv__ps_idset_free(&ps->pulls);
    vv_free(ps->pull_info);
    vv_pubsub_backoff_free(ps->backoff);
    vv_pubsub_score_free(ps->score);
    vv_free(ps);
}

int vv_pubsub_create_topic(struct vv_pubsub *ps, const char *topic, size_t len,
                           const struct vv_pubsub_topic_config *cfg)
{
    if (!vv_pubsub_topic_ok(topic, len) ||
        (cfg && (cfg->n_publishers > VV_PUBSUB_MAX_PUBLISHERS ||
                 cfg->max_message_bytes > VV_PUBSUB_MAX_DATA_BYTES ||
                 (cfg->n_publishers > 0 && cfg->publishers == NULL))))
        return VV_EINVAL;
    uint32_t ti = topic_get(ps, topic, len, true);
    struct topic *t = &ps->topics[ti];
    vv_free(t->publishers);
    t->publishers = NULL;
    t->n_publishers = 0;
    t->has_cfg = true;
    t->max_bytes = cfg ? cfg->max_message_bytes : 0;
    if (cfg && cfg->publishers != NULL) {
        t->publishers = vv_xmalloc((cfg->n_publishers + 1) * sizeof(*t->publishers));
        memcpy(t->publishers, cfg->publishers, cfg->n_publishers * sizeof(*t->publishers));
        t->n_publishers = cfg->n_publishers;
    }
    return 0;
}

int vv_pubsub_delete_topic(struct vv_pubsub *ps, const char *topic, size_t len)
{
    uint32_t ti = topic_find(ps, topic, len);
    if (ti == VV__PS_NIL)
        return VV_ENOTFOUND;
    (void)vv_pubsub_leave(ps, topic, len);
    struct topic *t = &ps->topics[ti];
    t->has_cfg = false;
    vv_free(t->publishers);
    t->publishers = NULL;
    t->n_publishers = 0;
    topic_maybe_release(ps, ti);
    return 0;
}

int vv_pubsub_join(struct vv_pubsub *ps, const char *topic, size_t len)
{
    if (!vv_pubsub_topic_ok(topic, len))
        return VV_EINVAL;
    uint32_t ti = topic_find(ps, topic, len);
    if (ti != VV__PS_NIL && ps->topics[ti].joined)
        return 0;
    if (ps->joined.n >= ps->cfg.max_joined_topics)
        return VV_ELIMIT;
    ti = topic_get(ps, topic, len, true);
    struct topic *t = &ps->topics[ti];
    t->joined = true;
    list_add(&ps->joined, ti);
    (void)vv_pubsub_score_set_topic(ps->score, t->name, t->len, &ps->cfg.topic_score);
    for (uint32_t pi = 0; pi < ps->n_peers; pi++)
        if (ps->peers[pi].used)
            send_subs(ps, pi, ti, true);
    /* The mesh: fanout peers first (they already get our messages), then others. */
    for (uint32_t i = 0; i < t->fanout.n && t->mesh.n < ps->cfg.d; i++)
        if (score_of(ps, t->fanout.v[i]) >= 0)
            graft(ps, ti, t->fanout.v[i], true);
    list_free(&t->fanout);
    t->has_fanout = false;
    uint32_t *cand;
    uint32_t n = candidates(ps, ti, &t->mesh, true, 0, &cand);
    for (uint32_t i = 0; i < n && t->mesh.n < ps->cfg.d; i++)
        graft(ps, ti, cand[i], true);
    vv_free(cand);
    return 0;
}

int vv_pubsub_leave(struct vv_pubsub *ps, const char *topic, size_t len)
{
    uint32_t ti = topic_find(ps, topic, len);
    if (ti == VV__PS_NIL || !ps->topics[ti].joined)
        return 0;
    struct topic *t = &ps->topics[ti];
    for (uint32_t pi = 0; pi < ps->n_peers; pi++)
        if (ps->peers[pi].used)
            send_subs(ps, pi, ti, false);
    while (t->mesh.n > 0) {
        uint32_t q = t->mesh.v[0];
        prune(ps, ti, q, false);
        send_prune_now(ps, q, ti, true);
    }
    t->joined = false;
    list_remove(&ps->joined, ti);
    topic_maybe_release(ps, ti);
    return 0;
}

bool vv_pubsub_joined(const struct vv_pubsub *ps, const char *topic, size_t len)
{
    uint32_t ti = topic_find(ps, topic, len);
    return ti != VV__PS_NIL && ps->topics[ti].joined;
}

int vv_pubsub_publish(struct vv_pubsub *ps, const char *topic, size_t len, const uint8_t *data,
                      size_t data_len, uint8_t id_out[VV_PUBSUB_ID_BYTES], uint32_t *peers)
{
    if (!vv_pubsub_topic_ok(topic, len) || (data == NULL && data_len > 0))
        return VV_EINVAL;
    uint32_t ti = topic_get(ps, topic, len, true);
    struct topic *t = &ps->topics[ti];
    if (data_len > max_bytes_of(ps, t)) {
        topic_maybe_release(ps, ti);
        return VV_ELIMIT;
    }
    const struct vv_identity *me = ps->env->identity;
    struct vv_pubsub_msg m = {.from = me->node_id,
                              .origin = me->public_key,
                              .seqno = ++ps->seqno,
                              .topic = t->name,
                              .topic_len = t->len,
                              .data = data,
                              .data_len = data_len};
    uint8_t digest[VV_PUBSUB_DIGEST_BYTES], signed_bytes[VV_PUBSUB_SIGNED_BYTES];
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    vv_pubsub_msg_digest(&m, digest);
    vv_pubsub_signed_bytes(digest, signed_bytes);
    vv_env_sign(ps->env, signed_bytes, sizeof(signed_bytes), sig);
    m.sig = sig;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_MESSAGE, 0);
    int rc = vv_pubsub_msg_encode(&pk, &m);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&sb);
        topic_maybe_release(ps, ti);
        return rc;
    }
    struct vv_pubsub_rbuf *frame = vv_pubsub_rbuf_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    uint64_t now = now_ms(ps);
    (void)vv_pubsub_seen_add(ps->seen, digest, now);
    (void)vv_pubsub_mcache_put(ps->mcache, digest, t->name, t->len, frame);
    if (!t->joined && !t->has_fanout) {
        t->has_fanout = true;
        uint32_t *cand;
        uint32_t n = candidates(ps, ti, NULL, false, ps->cfg.thresholds.publish, &cand);
        for (uint32_t i = 0; i < n && t->fanout.n < ps->cfg.d; i++)
            list_add(&t->fanout, cand[i]);
        vv_free(cand);
    }
    if (!t->joined)
        t->fanout_last_ms = now;
    uint32_t sent = forward(ps, ti, digest, frame, data_len, VV__PS_NIL, true, false);
    ps->stats.published++;
    if (t->joined && ps->cbs.deliver) {
        ps->stats.delivered++;
        ps->cbs.deliver(ps->arg, &m, digest);
    }
    vv_pubsub_rbuf_unref(frame);
    if (id_out)
        memcpy(id_out, digest, VV_PUBSUB_ID_BYTES);
    if (peers)
        *peers = sent;
    return 0;
}

void vv_pubsub_inject(struct vv_pubsub *ps, const uint8_t peer[VV_NODE_ID_BYTES],
                      const uint8_t *frame, size_t len)
{
    on_recv(ps->env, peer, frame, len, ps);
}

void vv_pubsub_set_app_score(struct vv_pubsub *ps, const uint8_t peer[VV_NODE_ID_BYTES],
                             double value)
{
    vv_pubsub_score_set_app(ps->score, peer, value);
}

const struct vv_pubsub_stats *vv_pubsub_stats(const struct vv_pubsub *ps)
{
    return &ps->stats;
}

uint32_t vv_pubsub_mesh_size(const struct vv_pubsub *ps, const char *topic, size_t len)
{
    uint32_t ti = topic_find(ps, topic, len);
    return ti == VV__PS_NIL ? 0 : ps->topics[ti].mesh.n;
}

uint32_t vv_pubsub_topic_peers(const struct vv_pubsub *ps, const char *topic, size_t len)
{
    uint32_t ti = topic_find(ps, topic, len);
    return ti == VV__PS_NIL ? 0 : ps->topics[ti].subs.n;
}

uint32_t vv_pubsub_known_topics(const struct vv_pubsub *ps)
{
    return ps->known_topics;
}

uint32_t vv_pubsub_mesh_peers(const struct vv_pubsub *ps, const char *topic, size_t len,
                              uint8_t (*out)[VV_NODE_ID_BYTES], uint32_t max)
{
    uint32_t ti = topic_find(ps, topic, len);
    if (ti == VV__PS_NIL)
        return 0;
    const struct topic *t = &ps->topics[ti];
    uint32_t n = VV_MIN(max, t->mesh.n);
    for (uint32_t i = 0; i < n; i++)
        memcpy(out[i], ps->peers[t->mesh.v[i]].id, VV_NODE_ID_BYTES);
    return n;
}

double vv_pubsub_peer_score(const struct vv_pubsub *ps, const uint8_t peer[VV_NODE_ID_BYTES])
{
    return vv_pubsub_score_get(ps->score, peer, vv_env_now(ps->env));
}

uint32_t vv_pubsub_score_summary(const struct vv_pubsub *ps, double *min, double *mean,
                                 uint32_t *below_graylist)
{
    uint32_t n = 0, gray = 0;
    double lo = 0, sum = 0;
    for (uint32_t pi = 0; pi < ps->n_peers; pi++) {
        if (!ps->peers[pi].used)
            continue;
        double s = score_of(ps, pi);
        lo = n == 0 || s < lo ? s : lo;
        sum += s;
        gray += s < ps->cfg.thresholds.graylist;
        n++;
    }
    if (min)
        *min = lo;
    if (mean)
        *mean = n ? sum / n : 0;
    if (below_graylist)
        *below_graylist = gray;
    return n;
}

const char *vv_pubsub_joined_topic(const struct vv_pubsub *ps, uint32_t i, size_t *len)
{
    if (i >= ps->joined.n)
        return NULL;
    const struct topic *t = &ps->topics[ps->joined.v[i]];
    if (len)
        *len = t->len;
    return t->name;
}
