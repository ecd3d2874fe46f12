/*
 * The pubsub router at 1,000 nodes (issue 12's simulator scenarios): round trips of 20 to
 * 200 ms, the daemon's connection manager on every node (everyone joins through node 0),
 * all nodes on one topic, a few hundred messages from publishers chosen by the seed.
 *
 * Scenarios: every message reaches every subscriber exactly once (with 512-byte messages,
 * with at most 2 duplicates per delivery under lazy push, and for comparison without it, with
 * IDONTWANT from 512 bytes, and with 1-byte messages, which lazy push leaves alone); a fifth
 * of the nodes
 * churning (crash and restart, or join, during the run); and 30% malicious peers, one
 * behaviour per scenario: drop everything, censor one origin, spam IHAVE, a covert flash
 * attack (forward well, then all stop at once and GRAFT-spam), a Sybil flood. Honest nodes
 * that stay up must get ≥ 99.9% of the messages.
 *
 * Attackers run the real router on a wrapping vv_env (struct attacker): it passes
 * everything through to the simulator's env except what the behaviour changes (MESSAGE
 * frames it drops, control frames it adds), so an attacker speaks the protocol exactly as
 * an honest node would and misbehaves only where the scenario says. They are a test-only
 * construct.
 *
 * Each scenario prints delivery ratio, delivery latency p50/p99 and duplicates per delivery,
 * and is checked for determinism on a prefix (mark_ms). These take minutes under ASan:
 * label long (`make check-long`). A failing run prints its seed; VV_SIM_SEED=<seed> replays
 * it.
 */
#include "vv_test.h"

#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "sim_test.h"
#include "vivim/connmgr.h"
#include "vivim/pubsub.h"
#include "vivim/wire.h"

static uint64_t seed;

#define MAXMSG   256 /* messages per scenario (a 1-byte payload names 256) */
#define MAXNODES 1400
static const char TOPIC[] = "network:announce";
#define TOPIC_LEN (sizeof(TOPIC) - 1)

#define WARMUP_MS      15000 /* connections, subscriptions and meshes form */
#define PUBLISH_GAP_MS 50    /* 20 messages per second */
#define SETTLE_MS      10000 /* after the last message: gossip and repairs finish */
#define SPAM_IDS       1000  /* fake IDs per spammed IHAVE */

enum role {
    HONEST = 0,
    ATK_DROP,   /* never forwards a message, never answers IWANT */
    ATK_CENSOR, /* forwards everything but one origin's messages */
    ATK_IHAVE,  /* IHAVE of SPAM_IDS fake IDs to every peer every second */
    ATK_FLASH,  /* forwards well until the flash, then drops and GRAFT-spams */
    ATK_SYBIL,  /* joins late, many identities, dials many honest nodes, drops */
};
static const char *const role_name[] = {"honest",     "drop everything", "censor one origin",
                                        "spam IHAVE", "covert flash",    "Sybil flood"};

struct scenario {
    uint32_t nodes;     /* started at time 0 */
    uint32_t messages;  /* <= MAXMSG */
    uint32_t msg_bytes; /* 1 (then messages <= 256) or more */
    uint32_t churn_pct; /* nodes crashing and restarting, plus as many joining (half each) */
    uint32_t attack_pct;
    enum role attack;
    uint64_t mark_ms; /* the determinism replay stops here */
    bool exactly_once;
    double min_ratio;
    uint32_t idontwant_min_bytes; /* the router's; 0 = its default */
    bool lazy_push_off;           /* unchoked_peers 0: every mesh peer sends everything */
    double max_dups;              /* duplicates per delivery at most; 0: not checked */
};

struct attacker;

struct ps_node {
    struct vv_sim *sim;
    struct vv_pubsub *ps;
    uint32_t index;
    struct attacker *atk; /* NULL for honest nodes */
    uint8_t got[MAXMSG];  /* deliveries of message k (saturating) */
};

/* What a run knows about its nodes and messages (reset by each scenario). */
static enum role roles[MAXNODES];
static bool unstable[MAXNODES]; /* crashes, or joins late: not counted */
static uint32_t censored;       /* the origin ATK_CENSOR censors */
static bool flash_on;           /* ATK_FLASH attackers misbehave */
static uint32_t n_initial;
static uint64_t published_at[MAXMSG];
static uint32_t publisher[MAXMSG];
static const struct scenario *cur;
#define LAT_BUCKET_MS 5
#define LAT_BUCKETS   2000
static uint32_t lat_hist[LAT_BUCKETS];
static uint64_t lat_n;

/* ---- attackers: the router on a wrapping env ---------------------------------------------- */

struct attacker {
    struct vv_env env; /* what the router sees */
    struct vv_env *real;
    struct ps_node *node;
    uint64_t timer;
    uint64_t dropped; /* MESSAGE frames not sent */
};

static bool drops(struct attacker *a, const uint8_t *data, size_t len)
{
    switch (roles[a->node->index]) {
    case ATK_DROP:
    case ATK_IHAVE:
    case ATK_SYBIL:
        return true;
    case ATK_FLASH:
        return flash_on;
    case ATK_CENSOR: {
        struct vv_wire_frame f;
        struct vv_pubsub_msg m;
        bool censor = false;
        if (vv_wire_decode(data, len, &f) == 0) {
            if (vv_pubsub_msg_decode(&f.body, &m) == 0)
                censor =
                    memcmp(m.from, vv_sim_node_id(a->node->sim, censored), VV_NODE_ID_BYTES) == 0;
            vv_wire_frame_free(&f);
        }
        return censor;
    }
    default:
        return false;
    }
}

static int atk_send(void *impl, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t ch,
                    const uint8_t *data, size_t len)
{
    struct attacker *a = impl;
    uint16_t type;
    uint64_t rid;
    if (ch == VV_CHANNEL_PUBSUB && vv_wire_peek(data, len, &type, &rid) == 0 &&
        type == VV_PUBSUB_TYPE_MESSAGE && drops(a, data, len)) {
        a->dropped++;
        return 0; /* as if sent */
    }
    return a->real->ops->send(a->real->impl, peer, ch, data, len);
}

static uint64_t atk_now(void *impl)
{
    struct attacker *a = impl;
    return a->real->ops->now_ms(a->real->impl);
}

static uint64_t atk_timer_start(void *impl, uint64_t delay, uint64_t repeat, vv_env_timer_cb cb,
                                void *arg)
{
    struct attacker *a = impl; /* the router's and verifier's timers ignore their env */
    return a->real->ops->timer_start(a->real->impl, delay, repeat, cb, arg);
}

static void atk_timer_cancel(void *impl, uint64_t id)
{
    struct attacker *a = impl;
    a->real->ops->timer_cancel(a->real->impl, id);
}

static void atk_random(void *impl, void *buf, size_t len)
{
    struct attacker *a = impl;
    a->real->ops->random_bytes(a->real->impl, buf, len);
}

static int atk_connect(void *impl, const uint8_t *peer, const char *address)
{
    struct attacker *a = impl;
    return a->real->ops->connect(a->real->impl, peer, address);
}

static void atk_disconnect(void *impl, const uint8_t peer[VV_NODE_ID_BYTES])
{
    struct attacker *a = impl;
    a->real->ops->disconnect(a->real->impl, peer);
}

static bool atk_verify(void *impl, const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg,
                       size_t len, const uint8_t sig[64])
{
    struct attacker *a = impl;
    return a->real->ops->verify(a->real->impl, pk, msg, len, sig);
}

static const struct vv_env_ops atk_ops = {
    .now_ms = atk_now,
    .timer_start = atk_timer_start,
    .timer_cancel = atk_timer_cancel,
    .random_bytes = atk_random,
    .send = atk_send,
    .connect = atk_connect,
    .disconnect = atk_disconnect,
    .verify = atk_verify,
};

static void atk_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                     size_t len, void *arg)
{
    (void)env;
    struct attacker *a = arg;
    vv_env_deliver(&a->env, peer, VV_CHANNEL_PUBSUB, data, len);
}

static void atk_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    struct attacker *a = arg;
    vv_env_peer_event(&a->env, peer, up);
}

static void send_control_to_links(struct attacker *a, const struct vv_pubsub_control *c)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CONTROL, 0);
    assert_int_equal(vv_pubsub_control_encode(&pk, c), 0);
    struct vv_sim *sim = a->node->sim;
    uint32_t self = a->node->index;
    for (uint32_t k = 0; k < vv_sim_links(sim, self); k++)
        (void)vv_env_send(a->real, vv_sim_node_id(sim, vv_sim_link_peer(sim, self, k)),
                          VV_CHANNEL_PUBSUB, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* Every second: the behaviour's own frames. */
static void atk_tick(struct vv_env *env, void *arg)
{
    (void)env;
    struct attacker *a = arg;
    enum role r = roles[a->node->index];
    if (r == ATK_IHAVE) {
        static uint8_t fake[SPAM_IDS][VV_PUBSUB_ID_BYTES];
        static const uint8_t *ids[SPAM_IDS];
        vv_env_random(a->real, fake, sizeof(fake));
        for (uint32_t i = 0; i < SPAM_IDS; i++)
            ids[i] = fake[i];
        struct vv_pubsub_ihave ih = {TOPIC, TOPIC_LEN, ids, SPAM_IDS};
        struct vv_pubsub_control c = {.ihave = &ih, .n_ihave = 1};
        send_control_to_links(a, &c);
    } else if ((r == ATK_FLASH && flash_on) || r == ATK_SYBIL) {
        struct vv_pubsub_topic_ref g = {TOPIC, TOPIC_LEN};
        struct vv_pubsub_control c = {.graft = &g, .n_graft = 1};
        send_control_to_links(a, &c);
    }
}

static struct attacker *attacker_new(struct vv_env *real, struct ps_node *n)
{
    struct attacker *a = vv_xcalloc(1, sizeof(*a));
    a->real = real;
    a->node = n;
    a->env.ops = &atk_ops;
    a->env.impl = a;
    a->env.identity = real->identity;
    a->env.peers = real->peers; /* the connection manager answers the router's want_peer */
    vv_env_set_channel(real, VV_CHANNEL_PUBSUB, atk_recv, atk_peer, a);
    a->timer = vv_env_timer_start(real, 1000 + vv_env_random_below(real, 1000), 1000, atk_tick, a);
    return a;
}

static void attacker_free(struct attacker *a)
{
    vv_env_timer_cancel(a->real, a->timer);
    vv_env_fini(&a->env);
    vv_free(a);
}

/* ---- nodes -------------------------------------------------------------------------------- */

static uint32_t msg_index(const struct vv_pubsub_msg *m)
{
    if (cur->msg_bytes == 1)
        return m->data_len == 1 ? m->data[0] : MAXMSG;
    return m->data_len >= 2 ? (uint32_t)m->data[0] | (uint32_t)m->data[1] << 8 : MAXMSG;
}

static void deliver(void *arg, const struct vv_pubsub_msg *m, const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    (void)id;
    struct ps_node *n = arg;
    uint32_t k = msg_index(m);
    if (k >= cur->messages)
        return;
    if (n->got[k] < 255 && n->got[k]++ == 0 && roles[n->index] == HONEST && !unstable[n->index]) {
        uint64_t lat = vv_sim_now_ms(n->sim) - published_at[k];
        lat_hist[VV_MIN(lat / LAT_BUCKET_MS, (uint64_t)LAT_BUCKETS - 1)]++;
        lat_n++;
    }
}

static void *ps_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct ps_node *n = vv_xcalloc(1, sizeof(*n));
    n->sim = sim;
    n->index = index;
    static const struct vv_pubsub_cbs cbs = {deliver, NULL};
    struct vv_env *renv = env;
    if (roles[index] != HONEST) {
        n->atk = attacker_new(env, n);
        renv = &n->atk->env;
    }
    struct vv_pubsub_config pc;
    vv_pubsub_config_defaults(&pc);
    if (cur->idontwant_min_bytes)
        pc.idontwant_min_bytes = cur->idontwant_min_bytes;
    if (cur->lazy_push_off)
        pc.unchoked_peers = 0;
    n->ps = vv_pubsub_new(renv, &pc, &cbs, n);
    assert_non_null(n->ps);
    /* Everyone joins through node 0, then learns the others by peer exchange. */
    if (index != 0)
        vv_connmgr_add_peer(vv_sim_connmgr(sim, index), vv_sim_node_id(sim, 0), "10.0.0.1:4747",
                            VV_PEER_BOOTSTRAP);
    if (roles[index] == ATK_SYBIL) /* many identities, each dialling many honest nodes */
        for (uint32_t k = 0; k < 24; k++) {
            uint32_t to = 1 + (uint32_t)vv_env_random_below(env, n_initial - 1);
            char address[VV_ENV_ADDRESS_BYTES];
            vv_sim_node_address(sim, to, address, sizeof(address));
            (void)vv_env_want_peer(env, vv_sim_node_id(sim, to), address, "sybil", 100);
        }
    assert_int_equal(vv_pubsub_join(n->ps, TOPIC, TOPIC_LEN), 0);
    return n;
}

static void ps_destroy(void *app, void *arg)
{
    (void)arg;
    struct ps_node *n = app;
    vv_pubsub_free(n->ps);
    if (n->atk)
        attacker_free(n->atk);
    vv_free(n);
}

static void do_publish(struct vv_sim *sim, void *arg)
{
    uint32_t k = (uint32_t)(uintptr_t)arg;
    assert_true(vv_sim_node_up(sim, publisher[k]));
    struct ps_node *n = vv_sim_app_of(sim, publisher[k]);
    uint8_t buf[4096] = {0};
    buf[0] = (uint8_t)k;
    buf[1] = (uint8_t)(k >> 8);
    published_at[k] = vv_sim_now_ms(sim);
    assert_int_equal(vv_pubsub_publish(n->ps, TOPIC, TOPIC_LEN, buf, cur->msg_bytes, NULL, NULL),
                     0);
}

static void do_flash(struct vv_sim *sim, void *arg)
{
    (void)sim;
    (void)arg;
    flash_on = true;
}

/* One-way latency between four regions: round trips of 20 to 200 ms. */
static const uint32_t latency_ms[4][4] = {
    {10, 35, 60, 100},
    {35, 10, 45, 80},
    {60, 45, 10, 55},
    {100, 80, 55, 10},
};

static uint32_t mix(uint64_t s, uint32_t i, uint32_t salt)
{
    uint64_t x = s * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + salt;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return (uint32_t)x;
}

static uint64_t percentile(uint32_t pct)
{
    uint64_t seen = 0;
    for (uint32_t b = 0; b < LAT_BUCKETS; b++) {
        seen += lat_hist[b];
        if (seen * 100 >= lat_n * pct)
            return (uint64_t)(b + 1) * LAT_BUCKET_MS;
    }
    return (uint64_t)LAT_BUCKETS * LAT_BUCKET_MS;
}

static void pubsub_network(struct vv_sim_run *run, void *arg)
{
    const struct scenario *sc = arg;
    cur = sc;
    memset(roles, 0, sizeof(roles));
    memset(unstable, 0, sizeof(unstable));
    memset(lat_hist, 0, sizeof(lat_hist));
    lat_n = 0;
    flash_on = false;
    n_initial = sc->nodes;
    uint64_t start = WARMUP_MS;
    uint64_t last = start + (uint64_t)PUBLISH_GAP_MS * sc->messages;
    uint64_t end = last + SETTLE_MS;
    bool sybil = sc->attack == ATK_SYBIL;
    /* Sybils are extra identities joining during the warm-up: 30% of all nodes. */
    uint32_t n_sybil = sybil ? sc->nodes * sc->attack_pct / (100 - sc->attack_pct) : 0;
    uint32_t n_join = sc->nodes * sc->churn_pct / 200;
    uint32_t max_nodes = sc->nodes + n_sybil + n_join;
    assert_true(max_nodes <= MAXNODES);
    if (sybil) {
        /* With the honest network up (mesh scores built), the Sybils arrive at once. */
        start += 15000;
        last += 15000;
        end += 15000;
        for (uint32_t i = sc->nodes; i < sc->nodes + n_sybil; i++)
            roles[i] = ATK_SYBIL;
    } else if (sc->attack != HONEST) {
        for (uint32_t i = 1; i < sc->nodes; i++)
            if (mix(run->seed, i, 1) % 100 < sc->attack_pct)
                roles[i] = sc->attack;
    }
    if (sc->attack == ATK_FLASH) {
        /* Quiet in the meshes for 60 s (time in mesh), forwarding the first half of the
         * messages well (first deliveries), then all attackers flash at once. */
        start += 45000;
        last += 45000;
        end += 45000;
    }
    /* Publishers: honest nodes, the censored origin among them (every fifth message). */
    uint32_t churn = sc->nodes * sc->churn_pct / 200;
    for (uint32_t i = 1, c = 0; i < sc->nodes && c < churn; i++)
        if (roles[i] == HONEST && mix(run->seed, i, 2) % 100 < sc->churn_pct) {
            unstable[i] = true;
            c++;
        }
    censored = 0;
    for (uint32_t k = 0; k < sc->messages; k++) {
        uint32_t p = 1 + mix(run->seed, k, 3) % (sc->nodes - 1);
        while (roles[p] != HONEST || unstable[p])
            p = 1 + (p % (sc->nodes - 1));
        if (k == 0)
            censored = p;
        publisher[k] = k % 5 == 0 ? censored : p;
    }

    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, run->seed, sc->nodes);
    cfg.max_nodes = max_nodes;
    for (uint32_t a = 0; a < 4; a++)
        for (uint32_t b = 0; b < 4; b++)
            cfg.latency_ms[a][b] = latency_ms[a][b];
    cfg.connmgr = true;
    vv_connmgr_config_defaults(&cfg.connmgr_cfg);
    cfg.connmgr_cfg.low_water = 8;
    cfg.connmgr_cfg.high_water = 16;
    struct vv_sim_app app = {ps_create, ps_destroy, NULL};
    struct vv_sim *sim = vv_sim_new(&cfg, &app);

    for (uint32_t k = 0; k < sc->messages; k++)
        vv_sim_at(sim, start + (uint64_t)PUBLISH_GAP_MS * k, do_publish, (void *)(uintptr_t)k);
    if (sc->attack == ATK_FLASH)
        vv_sim_at(sim, start + (uint64_t)PUBLISH_GAP_MS * (sc->messages / 2) - 25, do_flash, NULL);
    for (uint32_t i = 0; i < n_sybil; i++)
        (void)vv_sim_join_at(sim, start - 5000 + i % 1000);
    /* Churn: half crash in the message window and restart 5 to 15 s later; as many new
     * nodes join in the window. */
    for (uint32_t i = 1; i < sc->nodes; i++)
        if (unstable[i]) {
            uint64_t at = start + mix(run->seed, i, 4) % (last - start);
            vv_sim_crash_at(sim, at, i);
            vv_sim_restart_at(sim, at + 5000 + mix(run->seed, i, 5) % 10000, i);
        }
    for (uint32_t j = 0; j < n_join; j++) {
        uint32_t idx = vv_sim_join_at(sim, start + mix(run->seed, j, 6) % (last - start));
        unstable[idx] = true;
    }

    if (!vv_sim_run_to(run, sim, end))
        goto out;

    uint64_t want = 0, got = 0, twice = 0, dups = 0, delivered = 0, dropped = 0;
    uint64_t pulls = 0, announced = 0, chokes = 0;
    uint32_t counted = 0;
    for (uint32_t i = 0; i < sc->nodes; i++) {
        if (roles[i] != HONEST || unstable[i])
            continue;
        assert_true(vv_sim_node_up(sim, i));
        struct ps_node *n = vv_sim_app_of(sim, i);
        counted++;
        for (uint32_t k = 0; k < sc->messages; k++) {
            want++;
            got += n->got[k] > 0;
            twice += n->got[k] > 1;
        }
        const struct vv_pubsub_stats *s = vv_pubsub_stats(n->ps);
        dups += s->duplicates;
        delivered += s->delivered;
        pulls += s->pulls;
        announced += s->announce_sent;
        chokes += s->choke_sent + s->unchoke_sent;
    }
    for (uint32_t i = 0; i < vv_sim_node_count(sim); i++)
        if (roles[i] != HONEST && vv_sim_node_up(sim, i))
            dropped += ((struct ps_node *)vv_sim_app_of(sim, i))->atk->dropped;
    double ratio = want ? (double)got / (double)want : 0;
    struct vv_pubsub_config pc;
    vv_pubsub_config_defaults(&pc);
    double dups_per = delivered ? (double)dups / (double)delivered : 0;
    printf("pubsub %u nodes, %s%s%s: %u honest nodes counted, %u messages of %u bytes: "
           "delivered %.4f%% (%llu missing), p50 %llu ms, p99 %llu ms; %.2f duplicates per "
           "delivery (IDONTWANT from %u bytes); attackers dropped %llu copies\n",
           vv_sim_node_count(sim), role_name[sc->attack], sc->churn_pct ? " with churn" : "",
           sc->lazy_push_off ? ", lazy push off" : "", counted, sc->messages, sc->msg_bytes,
           ratio * 100, (unsigned long long)(want - got), (unsigned long long)percentile(50),
           (unsigned long long)percentile(99), dups_per,
           sc->idontwant_min_bytes ? sc->idontwant_min_bytes : pc.idontwant_min_bytes,
           (unsigned long long)dropped);
    printf("  lazy push: %.2f announcements sent and %.3f pulls per delivery, %.1f CHOKE "
           "changes per node\n",
           delivered ? (double)announced / (double)delivered : 0,
           delivered ? (double)pulls / (double)delivered : 0,
           counted ? (double)chokes / counted : 0);
    fflush(stdout);
    if (sc->exactly_once) {
        assert_int_equal(want - got, 0);
        assert_int_equal(twice, 0);
    }
    assert_true(ratio >= sc->min_ratio);
    if (sc->max_dups > 0)
        assert_true(dups_per <= sc->max_dups);
out:
    vv_sim_run_done(run, sim);
    vv_sim_free(sim);
}

#define RUN(...)                                                                                   \
    do {                                                                                           \
        struct scenario sc = {__VA_ARGS__};                                                        \
        VV_SIM_CHECK_DETERMINISM(pubsub_network, &sc, seed, sc.mark_ms, false);                    \
    } while (0)

static void test_1000_nodes_every_subscriber_gets_every_message_once(void **state)
{
    (void)state;
    /* Issue 12: at most 1.5 duplicates per delivery from 512 bytes; about 1.15 measured
     * (docs/benchmarks.md), 2.0 leaves a margin for other seeds. */
    RUN(.nodes = 1000, .messages = 200, .msg_bytes = 512, .mark_ms = WARMUP_MS + 2000,
        .exactly_once = true, .min_ratio = 1.0, .max_dups = 2.0);
}

static void test_1000_nodes_duplicates_without_lazy_push(void **state)
{
    (void)state;
    RUN(.nodes = 1000, .messages = 200, .msg_bytes = 512, .mark_ms = WARMUP_MS + 2000,
        .exactly_once = true, .min_ratio = 1.0, .lazy_push_off = true);
}

static void test_1000_nodes_duplicates_with_1_byte_messages(void **state)
{
    (void)state;
    RUN(.nodes = 1000, .messages = 200, .msg_bytes = 1, .mark_ms = WARMUP_MS + 2000,
        .exactly_once = true, .min_ratio = 1.0);
}

static void test_1000_nodes_duplicates_with_idontwant_from_512_bytes(void **state)
{
    (void)state;
    RUN(.nodes = 1000, .messages = 200, .msg_bytes = 512, .mark_ms = WARMUP_MS + 2000,
        .exactly_once = true, .min_ratio = 1.0, .idontwant_min_bytes = 512);
}

static void test_delivery_holds_with_a_fifth_churning(void **state)
{
    (void)state;
    RUN(.nodes = 1000, .messages = 200, .msg_bytes = 512, .churn_pct = 20,
        .mark_ms = WARMUP_MS + 2000, .min_ratio = 0.999);
}

#define ATTACK(fn, kind)                                                                           \
    static void fn(void **state)                                                                   \
    {                                                                                              \
        (void)state;                                                                               \
        RUN(.nodes = (kind) == ATK_SYBIL ? 700 : 1000, .messages = 200, .msg_bytes = 512,          \
            .attack_pct = 30, .attack = (kind), .mark_ms = WARMUP_MS + 2000, .min_ratio = 0.999);  \
    }
ATTACK(test_30pct_attackers_dropping_everything, ATK_DROP)
ATTACK(test_30pct_attackers_censoring_one_origin, ATK_CENSOR)
ATTACK(test_30pct_attackers_spamming_ihave, ATK_IHAVE)
ATTACK(test_30pct_attackers_in_a_covert_flash_attack, ATK_FLASH)
ATTACK(test_sybil_flood_of_30pct, ATK_SYBIL)

/* argv[1], when given, runs only the tests whose names match it (cmocka's pattern). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    seed = vv_sim_seed_from_env(20261206);
    printf("seed %llu\n", (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_1000_nodes_every_subscriber_gets_every_message_once),
        cmocka_unit_test(test_1000_nodes_duplicates_without_lazy_push),
        cmocka_unit_test(test_1000_nodes_duplicates_with_1_byte_messages),
        cmocka_unit_test(test_1000_nodes_duplicates_with_idontwant_from_512_bytes),
        cmocka_unit_test(test_delivery_holds_with_a_fifth_churning),
        cmocka_unit_test(test_30pct_attackers_dropping_everything),
        cmocka_unit_test(test_30pct_attackers_censoring_one_origin),
        cmocka_unit_test(test_30pct_attackers_spamming_ihave),
        cmocka_unit_test(test_30pct_attackers_in_a_covert_flash_attack),
        cmocka_unit_test(test_sybil_flood_of_30pct),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
