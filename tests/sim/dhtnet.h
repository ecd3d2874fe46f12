/*
 * dhtnet: a network of DHT nodes (vivim/dht.h) on the simulator, shared by the DHT
 * simulation test (test_dht.c), the long one (long_dht.c) and the benchmark
 * (tests/bench/bench_sim_dht.c). Nodes join through the datagram addresses of a few
 * bootstrap nodes; nodes publish values (vv_dht_node_put) and provider records
 * (vv_dht_node_provide); batches of GET and GET_PROVIDERS lookups from random live nodes
 * for records whose publisher is alive measure success, hops, time to the first result and
 * to completion, and queries. Some nodes may be attackers: a real DHT node (it joins,
 * proves its ID, stores what it is sent) whose FIND_NODE, GET_VALUE and GET_PROVIDERS
 * answers name 20 made-up nodes closer to the target than any real one, each at the address
 * of a random attacker, so a lookup path that asks one stays captured by attackers.
 *
 * The network's region round trips are 20 to 200 ms (issue 11). One dhtnet at a time per
 * process (the callbacks reach it through a static pointer). Include after sim.h.
 */
#ifndef VV_DHTNET_H
#define VV_DHTNET_H

#include <msgpack.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "vivim/common.h"
#include "vivim/dht.h"
#include "vivim/env_request.h"
#include "vivim/wire.h"

#define DHTNET_MAX_LOOKUPS     2000 /* per batch */
#define DHTNET_RECORD_TTL_MS   (48ull * 3600 * 1000)
#define DHTNET_CHURN_BOOTSTRAP 4 /* live nodes a node joining mid-run is given */

struct dhtnet_params {
    uint32_t n_nodes;        /* started at time 0 */
    uint32_t max_nodes;      /* with later joins; 0 = n_nodes */
    uint32_t n_bootstrap;    /* nodes 0..n_bootstrap-1: everyone's first contacts */
    uint32_t join_spread_ms; /* between two initial nodes' joins */
    uint32_t paths;          /* disjoint paths of every honest node's lookups (0: default) */
    uint32_t alpha;          /* queries in flight per path (0: default) */
    uint32_t republish_ms;   /* 0: default */
    uint32_t attackers_pct;  /* of the nodes other than the bootstrap ones */
};

struct dhtnet_app {
    struct vv_env *env;
    struct vv_sim *sim;
    uint32_t index;
    bool attacker;
    struct vv_dht_node *dht;
    uint64_t join_timer;
    vv_env_serve_cb inner_serve; /* an attacker's real server, for PING and stores */
    void *inner_arg;
};

enum dhtnet_kind { DHTNET_VALUE, DHTNET_PROVIDER };

struct dhtnet_record {
    uint8_t key[VV_DHT_ID_BYTES];
    uint32_t publisher;
    uint8_t kind;
    bool stored; /* the publish's store reached at least one node */
    bool done;
};

struct dhtnet_lookup {
    uint32_t record, origin;
    bool local; /* the origin held the record itself when the lookup started */
    bool done, ok;
    uint32_t hops, queries, answered;
    uint64_t first_ms, ms;
};

/* Figures of one batch of lookups. */
struct dhtnet_batch {
    uint32_t n, done, ok;
    uint64_t hops_med, hops_p99, hops_max;
    uint64_t first_med, first_p99; /* ms to the first value/provider, successful lookups
                                    * whose origin did not hold the record itself */
    uint32_t local;                /* lookups whose origin held the record itself */
    uint64_t ms_med, ms_p99;       /* ms to completion */
    double queries_mean;           /* datagram requests per lookup (each answered one: 2) */
    double answered_mean;
};

struct dhtnet {
    struct vv_sim *sim;
    struct dhtnet_params p;
    uint64_t rng;
    struct dhtnet_record *records;
    uint32_t n_records, cap_records;
    struct dhtnet_lookup lk[DHTNET_MAX_LOOKUPS];
    uint32_t n_lk;
    uint64_t rpc_out[6]; /* requests sent by every node, by type - VV_DHT_MSG_PING */
    uint32_t *attackers; /* indexes of attacker nodes */
    uint32_t n_attackers;
};

static struct dhtnet *dhtnet;

static uint64_t dhtnet_rand(void)
{
    /* splitmix64: the scenario's own choices, from the run's seed */
    uint64_t z = (dhtnet->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t dhtnet_random_live(bool honest)
{
    uint32_t n = vv_sim_node_count(dhtnet->sim);
    for (;;) {
        uint32_t i = (uint32_t)(dhtnet_rand() % n);
        if (!vv_sim_node_up(dhtnet->sim, i))
            continue;
        struct dhtnet_app *a = vv_sim_app_of(dhtnet->sim, i);
        if (honest && a->attacker)
            continue;
        return i;
    }
}

/* ---- attackers ---------------------------------------------------------------------------- */

static void dhtnet_reply(struct vv_env *env, uint64_t ctx, const struct vv_dht_reply *rep)
{
    uint8_t out[VV_ENV_MAX_DATAGRAM_FRAME_BYTES];
    size_t len;
    /* The widest request id, so the body fits whatever id the layer puts around it. */
    if (vv_dht_reply_encode(rep, UINT64_MAX, VV_DHT_DATAGRAM_MAX_BYTES, out, sizeof(out), &len,
                            NULL) != 0) {
        vv_env_reply_error(env, ctx, VV_REQ_ERR_INTERNAL, NULL);
        return;
    }
    struct vv_wire_frame f;
    if (vv_wire_decode(out, len, &f) == 0) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, f.body);
        vv_env_reply(env, ctx, (const uint8_t *)sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    } else {
        vv_env_reply_error(env, ctx, VV_REQ_ERR_INTERNAL, NULL);
    }
    vv_wire_frame_free(&f);
}

/* FIND_NODE, GET_VALUE, GET_PROVIDERS: 20 made-up nodes sharing the target's first 24 bytes
 * (closer than any real node), each at a random attacker's address; no values, no
 * providers. PING and stores: the real node's answers. */
static void dhtnet_attacker_serve(struct vv_env *env, uint64_t ctx,
                                  const uint8_t peer[VV_NODE_ID_BYTES],
                                  const struct vv_wire_frame *request, void *arg)
{
    struct dhtnet_app *a = arg;
    uint16_t type = request->h.type;
    struct vv_dht_request rq;
    if ((type != VV_DHT_MSG_FIND_NODE && type != VV_DHT_MSG_GET_VALUE &&
         type != VV_DHT_MSG_GET_PROVIDERS) ||
        vv_dht_request_decode(type, &request->body, &rq) != 0) {
        a->inner_serve(env, ctx, peer, request, a->inner_arg);
        return;
    }
    struct vv_dht_reply *rep = vv_xcalloc(1, sizeof(*rep));
    rep->type = type;
    rep->n_nodes = VV_DHT_MAX_NODES;
    for (size_t i = 0; i < rep->n_nodes; i++) {
        memcpy(rep->nodes[i].id, rq.target, VV_DHT_ID_BYTES);
        uint64_t r = dhtnet_rand();
        memcpy(rep->nodes[i].id + VV_DHT_ID_BYTES - 8, &r, 8);
        uint32_t at = dhtnet->attackers[dhtnet_rand() % dhtnet->n_attackers];
        char addr[VV_ENV_ADDRESS_BYTES];
        vv_sim_node_address(a->sim, at, addr, sizeof(addr));
        vv_dht_addr_parse(addr, strlen(addr), &rep->nodes[i].addr);
    }
    if (type != VV_DHT_MSG_FIND_NODE) {
        for (size_t b = 0; b + 8 <= sizeof(rep->token); b += 8) { /* a token that fits nothing */
            uint64_t r = dhtnet_rand();
            memcpy(rep->token + b, &r, 8);
        }
    }
    dhtnet_reply(env, ctx, rep);
    vv_free(rep);
}

/* ---- nodes -------------------------------------------------------------------------------- */

static void dhtnet_join(struct vv_env *env, void *arg)
{
    (void)env;
    struct dhtnet_app *a = arg;
    a->join_timer = 0;
    if (a->index < dhtnet->p.n_nodes) {
        for (uint32_t b = 0; b < dhtnet->p.n_bootstrap; b++) {
            if (b == a->index)
                continue;
            char addr[VV_ENV_ADDRESS_BYTES];
            vv_sim_node_address(a->sim, b, addr, sizeof(addr));
            vv_dht_node_bootstrap(a->dht, addr);
        }
        return;
    }
    /* A node joining mid-run: a few live nodes, as a bootstrap list or a peer exchange gives. */
    for (uint32_t b = 0; b < DHTNET_CHURN_BOOTSTRAP; b++) {
        uint32_t i = dhtnet_random_live(false);
        if (i == a->index)
            continue;
        char addr[VV_ENV_ADDRESS_BYTES];
        vv_sim_node_address(a->sim, i, addr, sizeof(addr));
        vv_dht_node_bootstrap(a->dht, addr);
    }
}

static void dhtnet_rpc(void *arg, uint16_t type, bool in)
{
    (void)arg;
    if (!in && type >= VV_DHT_MSG_PING && type <= VV_DHT_MSG_ADD_PROVIDER)
        dhtnet->rpc_out[type - VV_DHT_MSG_PING]++;
}

static void *dhtnet_create(struct vv_sim *sim, struct vv_env *env, uint32_t index, void *arg)
{
    (void)arg;
    struct dhtnet_app *a = vv_xcalloc(1, sizeof(*a));
    a->env = env;
    a->sim = sim;
    a->index = index;
    a->attacker = index >= dhtnet->p.n_bootstrap && index < dhtnet->p.n_nodes &&
                  dhtnet_rand() % 100 < dhtnet->p.attackers_pct;
    struct vv_dht_node_config c;
    vv_dht_node_config_defaults(&c);
    if (dhtnet->p.paths)
        c.paths = dhtnet->p.paths;
    if (dhtnet->p.alpha)
        c.alpha = dhtnet->p.alpha;
    if (dhtnet->p.republish_ms)
        c.republish_ms = dhtnet->p.republish_ms;
    const struct vv_dht_node_hooks hooks = {.rpc = dhtnet_rpc};
    a->dht = vv_dht_node_new(env, &c, &hooks);
    if (a->attacker) {
        a->inner_serve = env->channels[VV_CHANNEL_DHT].serve;
        a->inner_arg = env->channels[VV_CHANNEL_DHT].serve_arg;
        vv_env_set_server(env, VV_CHANNEL_DHT, dhtnet_attacker_serve, a);
        dhtnet->attackers[dhtnet->n_attackers++] = index;
    }
    uint64_t delay = index < dhtnet->p.n_nodes ? (uint64_t)index * dhtnet->p.join_spread_ms : 0;
    a->join_timer = vv_env_timer_start(env, delay, 0, dhtnet_join, a);
    return a;
}

static void dhtnet_destroy(void *app, void *arg)
{
    (void)arg;
    struct dhtnet_app *a = app;
    vv_dht_node_free(a->dht);
    vv_free(a);
}

/* 4 regions, one-way 10 to 100 ms: round trips of 20 to 200 ms. */
static const uint32_t dhtnet_latency_ms[4][4] = {
    {10, 30, 60, 100},
    {30, 10, 40, 80},
    {60, 40, 10, 50},
    {100, 80, 50, 10},
};

static struct vv_sim *dhtnet_new(const struct dhtnet_params *p, uint64_t seed)
{
    dhtnet = vv_xcalloc(1, sizeof(*dhtnet));
    dhtnet->p = *p;
    dhtnet->rng = seed;
    uint32_t max = p->max_nodes ? p->max_nodes : p->n_nodes;
    dhtnet->attackers = vv_xcalloc(max, sizeof(uint32_t));
    struct vv_sim_config cfg;
    vv_sim_config_defaults(&cfg, seed, p->n_nodes);
    cfg.max_nodes = max;
    cfg.n_regions = 4;
    for (int a = 0; a < 4; a++) /* cfg's matrix is VV_SIM_MAX_REGIONS wide */
        for (int b = 0; b < 4; b++)
            cfg.latency_ms[a][b] = dhtnet_latency_ms[a][b];
    static const struct vv_sim_app app = {dhtnet_create, dhtnet_destroy, NULL};
    return dhtnet->sim = vv_sim_new(&cfg, &app);
}

static void dhtnet_free(void)
{
    vv_sim_free(dhtnet->sim);
    vv_free(dhtnet->records);
    vv_free(dhtnet->attackers);
    vv_free(dhtnet);
    dhtnet = NULL;
}

static struct vv_dht_node *dhtnet_dht(uint32_t i)
{
    return ((struct dhtnet_app *)vv_sim_app_of(dhtnet->sim, i))->dht;
}

/* ---- publishing --------------------------------------------------------------------------- */

static void dhtnet_stored(void *arg, const struct vv_dht_store_result *r)
{
    struct dhtnet_record *rec = &dhtnet->records[(uintptr_t)arg];
    rec->done = true;
    rec->stored = r->status == 0 && r->stored > 0;
}

static void dhtnet_content_id(uint32_t i, char *out, size_t cap)
{
    snprintf(out, cap, "dhtnet-content-%u", i);
}

/* Publishes record n_records from a random live honest node, now. */
static void dhtnet_publish_one(struct vv_sim *sim, void *arg)
{
    (void)sim;
    (void)arg;
    if (dhtnet->n_records == dhtnet->cap_records) {
        dhtnet->cap_records = dhtnet->cap_records ? dhtnet->cap_records * 2 : 256;
        dhtnet->records =
            vv_xrealloc(dhtnet->records, dhtnet->cap_records * sizeof(*dhtnet->records));
    }
    uint32_t i = dhtnet->n_records++;
    struct dhtnet_record *rec = &dhtnet->records[i];
    memset(rec, 0, sizeof(*rec));
    rec->publisher = dhtnet_random_live(true);
    rec->kind = i % 2 ? DHTNET_PROVIDER : DHTNET_VALUE;
    struct dhtnet_app *a = vv_sim_app_of(dhtnet->sim, rec->publisher);
    int rc;
    if (rec->kind == DHTNET_VALUE) {
        for (size_t b = 0; b < VV_DHT_ID_BYTES; b += 8) {
            uint64_t r = dhtnet_rand();
            memcpy(rec->key + b, &r, 8);
        }
        char value[32];
        int len = snprintf(value, sizeof(value), "value %u", i);
        rc = vv_dht_node_put(a->dht, rec->key, (const uint8_t *)value, (size_t)len,
                             DHTNET_RECORD_TTL_MS, 0, dhtnet_stored, (void *)(uintptr_t)i);
    } else {
        char cid[48];
        dhtnet_content_id(i, cid, sizeof(cid));
        crypto_hash_sha256(rec->key, (const uint8_t *)cid, strlen(cid));
        uint64_t wall = vv_env_wall_ms(a->env);
        struct vv_dht_content_record cr = {
            .content_id = cid,
            .content_id_len = strlen(cid),
            .content_type = "blob",
            .content_type_len = 4,
            .size = 1000 + i,
            .created_ms = wall,
            .expires_ms = wall + DHTNET_RECORD_TTL_MS,
            .replication_factor = 3,
        };
        memcpy(cr.address, rec->key, sizeof(cr.address));
        rc = vv_dht_node_provide(a->dht, &cr, dhtnet_stored, (void *)(uintptr_t)i);
    }
    if (rc != 0)
        rec->done = true; /* not stored: never looked up */
}

/* n publishes from t, gap_ms apart. */
static void dhtnet_publish(uint64_t t, uint32_t n, uint64_t gap_ms)
{
    for (uint32_t i = 0; i < n; i++)
        vv_sim_at(dhtnet->sim, t + i * gap_ms, dhtnet_publish_one, NULL);
}

static uint32_t dhtnet_stored_count(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < dhtnet->n_records; i++)
        n += dhtnet->records[i].stored;
    return n;
}

/* ---- lookups ------------------------------------------------------------------------------ */

static void dhtnet_got(void *arg, const struct vv_dht_get_result *r)
{
    struct dhtnet_lookup *l = arg;
    const struct dhtnet_record *rec = &dhtnet->records[l->record];
    const uint8_t *pid = vv_sim_node_id(dhtnet->sim, rec->publisher);
    l->done = true;
    l->hops = r->hops;
    l->ms = r->elapsed_ms;
    l->first_ms = r->first_ms;
    l->queries = r->stats.queries;
    l->answered = r->stats.answered;
    if (r->status != 0)
        return;
    if (rec->kind == DHTNET_VALUE) {
        for (size_t i = 0; i < r->n_values && !l->ok; i++) {
            uint8_t id[VV_DHT_ID_BYTES];
            crypto_hash_sha256(id, r->values[i].pk, VV_DHT_PK_BYTES);
            l->ok = memcmp(id, pid, VV_DHT_ID_BYTES) == 0;
        }
    } else {
        for (size_t i = 0; i < r->n_providers && !l->ok; i++)
            l->ok = memcmp(r->providers[i].c.id, pid, VV_DHT_ID_BYTES) == 0;
    }
}

/* Starts lookup l->(index): a record stored whose publisher is up, from another live honest
 * node. */
static void dhtnet_start_lookup(struct vv_sim *sim, void *arg)
{
    (void)sim;
    struct dhtnet_lookup *l = &dhtnet->lk[(uintptr_t)arg];
    uint32_t r;
    for (;;) {
        r = (uint32_t)(dhtnet_rand() % dhtnet->n_records);
        if (dhtnet->records[r].stored && vv_sim_node_up(dhtnet->sim, dhtnet->records[r].publisher))
            break;
    }
    uint32_t origin;
    do
        origin = dhtnet_random_live(true);
    while (origin == dhtnet->records[r].publisher);
    l->record = r;
    l->origin = origin;
    struct vv_dht_node *d = dhtnet_dht(origin);
    uint64_t wall = vv_env_wall_ms(vv_sim_env(dhtnet->sim, origin));
    struct vv_dht_value v;
    struct vv_dht_content_record cr;
    struct vv_dht_provider pv;
    l->local =
        dhtnet->records[r].kind == DHTNET_VALUE
            ? vv_dht_values_get(vv_dht_node_values(d), dhtnet->records[r].key, wall, &v, 1) > 0
            : vv_dht_providers_get(vv_dht_node_providers(d), dhtnet->records[r].key, wall, &cr, &pv,
                                   1) > 0;
    int rc = dhtnet->records[r].kind == DHTNET_VALUE
                 ? vv_dht_node_get(d, dhtnet->records[r].key, dhtnet_got, l)
                 : vv_dht_node_get_providers(d, dhtnet->records[r].key, VV_DHT_GET_MAX_PROVIDERS,
                                             NULL, dhtnet_got, l);
    if (rc != 0)
        l->done = true; /* counted as a failure */
}

/* Schedules n lookups from t, gap_ms apart. */
static void dhtnet_lookups(uint64_t t, uint32_t n, uint64_t gap_ms)
{
    if (n > DHTNET_MAX_LOOKUPS)
        n = DHTNET_MAX_LOOKUPS;
    memset(dhtnet->lk, 0, sizeof(dhtnet->lk));
    dhtnet->n_lk = n;
    for (uint32_t i = 0; i < n; i++)
        vv_sim_at(dhtnet->sim, t + i * gap_ms, dhtnet_start_lookup, (void *)(uintptr_t)i);
}

static int dhtnet_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t dhtnet_pct(uint64_t *v, size_t n, unsigned pct)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(v[0]), dhtnet_cmp_u64);
    size_t i = n * pct / 100;
    return v[i < n ? i : n - 1];
}

/* The figures of the last batch, printed with phase as a label. */
static struct dhtnet_batch dhtnet_batch(const char *phase)
{
    struct dhtnet_batch b = {.n = dhtnet->n_lk};
    uint64_t *hops = vv_xcalloc(b.n + 1, sizeof(uint64_t));
    uint64_t *first = vv_xcalloc(b.n + 1, sizeof(uint64_t));
    uint64_t *ms = vv_xcalloc(b.n + 1, sizeof(uint64_t));
    uint64_t queries = 0, answered = 0;
    size_t nf = 0;
    for (uint32_t i = 0; i < b.n; i++) {
        const struct dhtnet_lookup *l = &dhtnet->lk[i];
        b.done += l->done;
        b.ok += l->ok;
        hops[i] = l->hops;
        ms[i] = l->ms;
        b.local += l->local;
        if (l->ok && !l->local)
            first[nf++] = l->first_ms;
        queries += l->queries;
        answered += l->answered;
    }
    b.queries_mean = b.n ? (double)queries / b.n : 0;
    b.answered_mean = b.n ? (double)answered / b.n : 0;
    b.hops_med = dhtnet_pct(hops, b.n, 50);
    b.hops_p99 = dhtnet_pct(hops, b.n, 99);
    b.hops_max = b.n ? hops[b.n - 1] : 0;
    b.ms_med = dhtnet_pct(ms, b.n, 50);
    b.ms_p99 = dhtnet_pct(ms, b.n, 99);
    b.first_med = dhtnet_pct(first, nf, 50);
    b.first_p99 = dhtnet_pct(first, nf, 99);
    printf("%s: %u/%u lookups found the record (%u ended, %u held it locally); hops median %llu "
           "p99 %llu max %llu; first result (not local) median %llu ms p99 %llu ms; completion "
           "median %llu ms p99 %llu ms; queries per lookup %.1f (answered %.1f)\n",
           phase, b.ok, b.n, b.done, b.local, (unsigned long long)b.hops_med,
           (unsigned long long)b.hops_p99, (unsigned long long)b.hops_max,
           (unsigned long long)b.first_med, (unsigned long long)b.first_p99,
           (unsigned long long)b.ms_med, (unsigned long long)b.ms_p99, b.queries_mean,
           b.answered_mean);
    fflush(stdout);
    vv_free(hops);
    vv_free(first);
    vv_free(ms);
    return b;
}

/* Crashes live nodes at t until `dead` of the first n_nodes are down. */
static void dhtnet_crash_until(uint64_t t, uint32_t dead)
{
    struct vv_sim *sim = dhtnet->sim;
    for (;;) {
        uint32_t down = 0;
        for (uint32_t i = 0; i < dhtnet->p.n_nodes; i++)
            down += !vv_sim_node_up(sim, i);
        if (down >= dead)
            return;
        uint32_t i = (uint32_t)(dhtnet_rand() % dhtnet->p.n_nodes);
        if (!vv_sim_node_up(sim, i))
            continue;
        vv_sim_crash_at(sim, t, i);
        vv_sim_run_until(sim, t); /* so that vv_sim_node_up sees it */
    }
}

#endif
