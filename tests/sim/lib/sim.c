/*
 * The simulator's engine: event heap, timers, network model, faults, accounting.
 * See sim.h for the model. Single-threaded and free of OS randomness and clocks, so the
 * only input that changes a run is the seed (and the scenario the test writes).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "vivim/common.h"

enum ev_kind {
    EV_TIMER,
    EV_DELIVER,
    EV_LINK_UP,     /* a connect completes or fails, at the dialer */
    EV_LINK_ACCEPT, /* the dialer's last handshake message reaches the other side */
    EV_LINK_DOWN,   /* node learns that a connection is gone */
    EV_CRASH,
    EV_RESTART,
    EV_JOIN,
    EV_PARTITION,
    EV_CUSTOM,
    EV_DATAGRAM, /* a datagram reaches node (ptr: struct datagram) */
};

struct event {
    uint64_t t_us;
    uint64_t seq;
    uint32_t kind;
    uint32_t node; /* the node it concerns (receiver for deliveries) */
    uint32_t peer; /* the other node, where there is one */
    uint32_t inc;  /* node's incarnation when scheduled */
    uint32_t peer_inc;
    void *ptr; /* timer record, message, partition map, or custom callback */
    void *arg;
    uint64_t aux_us; /* EV_LINK_UP: the one-way latency its handshake was drawn with */
};

struct timer_rec {
    uint64_t id; /* (generation << 32) | slot */
    uint32_t node, inc;
    uint64_t repeat_us;
    vv_env_timer_cb cb;
    void *arg;
    bool cancelled;
    bool live; /* in the heap */
    uint32_t next_free;
};

struct message {
    uint8_t channel;
    uint32_t len;
    uint8_t data[];
};

/* A datagram in flight: the whole datagram as sent (envelope and frame) and its source. */
struct datagram {
    uint32_t from; /* the sender's index */
    uint32_t len;
    uint8_t data[];
};

/* IPv4 and UDP headers: what a datagram costs on the uplink beyond its payload. */
#define DATAGRAM_OVERHEAD_BYTES 28
#define SIM_PORT                4747

/* A message of the link still waiting in the sender's uplink (it leaves at depart_us). */
struct qent {
    uint64_t depart_us;
    uint64_t bytes;
};

struct link {
    uint32_t peer;
    uint32_t peer_inc;
    uint64_t last_arrival_us; /* keeps each connection in order */
    /* The daemon bounds what waits for one peer ([net] peer_queue_bytes) and refuses sends
     * past it (VV_ECONN_BACKPRESSURE); here what waits is what has not left the uplink yet. */
    struct qent *q;
    uint32_t q_head, q_n, q_cap;
    uint64_t q_bytes;
};

struct sim_node {
    struct vv_sim *sim;
    uint32_t index;
    uint32_t region;
    uint32_t inc; /* incarnation: bumped by each crash, voids old timers and messages */
    bool up;
    bool exists;
    struct vv_identity identity;
    struct vv_env env;
    struct vv_connmgr *cm; /* the daemon's connection manager, when cfg.connmgr */
    void *app;
    uint64_t rng[4];
    uint64_t uplink_free_us;
    struct link *links;
    uint32_t n_links, cap_links;
    struct vv_sim_counters c;
};

struct verify_slot {
    uint8_t key[16];
    uint8_t used, ok;
};

#define VERIFY_CACHE_SLOTS (1u << 16)
#define CONNECT_TIMEOUT_MS 5000 /* a dial to a dead or unreachable node fails after this */

struct vv_sim {
    struct vv_sim_config cfg;
    struct vv_sim_app app;
    uint64_t now_us;
    uint64_t seq;
    struct event *heap;
    size_t heap_len, heap_cap;
    struct sim_node *nodes;
    uint32_t n_nodes;      /* created so far (including pending joins) */
    uint32_t *index_table; /* open addressing: node ID prefix -> index + 1 */
    uint32_t index_cap;
    uint32_t *partition; /* group per node, or NULL */
    struct timer_rec *timers;
    uint32_t n_timers, cap_timers, free_timer;
    struct verify_slot *verify_cache;
    uint64_t rng[4]; /* the network's own stream: loss, jitter */
    struct vv_sim_counters total;
    uint64_t events;
    uint64_t trace;
};

/* ---- randomness: xoshiro256** seeded through splitmix64 ------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(uint64_t s[4], uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1342543de82ef95ull);
    for (int i = 0; i < 4; i++)
        s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double rng_unit(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

uint64_t vv_sim_seed_from_env(uint64_t fallback)
{
    const char *e = getenv("VV_SIM_SEED");
    if (e == NULL || *e == '\0')
        return fallback;
    return strtoull(e, NULL, 0);
}

/* ---- trace hash ------------------------------------------------------------------------- */

static void trace_mix(struct vv_sim *sim, uint64_t v)
{
    uint64_t h = sim->trace ^ v;
    h *= 0x100000001b3ull;
    sim->trace = h ^ (h >> 29);
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- event heap ------------------------------------------------------------------------- */

static bool ev_before(const struct event *a, const struct event *b)
{
    return a->t_us < b->t_us || (a->t_us == b->t_us && a->seq < b->seq);
}

static void push(struct vv_sim *sim, struct event ev)
{
    if (ev.t_us < sim->now_us)
        ev.t_us = sim->now_us;
    ev.seq = sim->seq++;
    if (sim->heap_len == sim->heap_cap) {
        sim->heap_cap = sim->heap_cap ? sim->heap_cap * 2 : 1024;
        sim->heap = vv_xrealloc(sim->heap, sim->heap_cap * sizeof(*sim->heap));
    }
    size_t i = sim->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_before(&ev, &sim->heap[parent]))
            break;
        sim->heap[i] = sim->heap[parent];
        i = parent;
    }
    sim->heap[i] = ev;
}

static struct event pop(struct vv_sim *sim)
{
    struct event top = sim->heap[0];
    struct event last = sim->heap[--sim->heap_len];
    size_t i = 0, n = sim->heap_len;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct event *best = &last;
        if (l < n && ev_before(&sim->heap[l], best)) {
            m = l;
            best = &sim->heap[l];
        }
        if (r < n && ev_before(&sim->heap[r], best))
            m = r;
        if (m == i)
            break;
        sim->heap[i] = sim->heap[m];
        i = m;
    }
    if (n > 0)
        sim->heap[i] = last;
    return top;
}

/* ---- nodes ------------------------------------------------------------------------------ */

static struct sim_node *node_of(void *impl)
{
    return impl;
}

static uint64_t id_key(const uint8_t *id)
{
    uint64_t k;
    memcpy(&k, id, sizeof(k));
    return k;
}

static void index_insert(struct vv_sim *sim, uint32_t idx)
{
    uint32_t mask = sim->index_cap - 1;
    uint32_t slot = (uint32_t)id_key(sim->nodes[idx].identity.node_id) & mask;
    while (sim->index_table[slot] != 0)
        slot = (slot + 1) & mask;
    sim->index_table[slot] = idx + 1;
}

int64_t vv_sim_find(const struct vv_sim *sim, const uint8_t id[VV_NODE_ID_BYTES])
{
    uint32_t mask = sim->index_cap - 1;
    uint32_t slot = (uint32_t)id_key(id) & mask;
    while (sim->index_table[slot] != 0) {
        uint32_t idx = sim->index_table[slot] - 1;
        if (memcmp(sim->nodes[idx].identity.node_id, id, VV_NODE_ID_BYTES) == 0)
            return idx;
        slot = (slot + 1) & mask;
    }
    return -1;
}

static struct link *find_link(struct sim_node *n, uint32_t peer)
{
    for (uint32_t i = 0; i < n->n_links; i++)
        if (n->links[i].peer == peer)
            return &n->links[i];
    return NULL;
}

static void add_link(struct sim_node *n, uint32_t peer, uint32_t peer_inc)
{
    if (n->n_links == n->cap_links) {
        n->cap_links = n->cap_links ? n->cap_links * 2 : 8;
        n->links = vv_xrealloc(n->links, n->cap_links * sizeof(*n->links));
    }
    n->links[n->n_links++] = (struct link){.peer = peer, .peer_inc = peer_inc};
}

static bool remove_link(struct sim_node *n, uint32_t peer)
{
    struct link *l = find_link(n, peer);
    if (l == NULL)
        return false;
    vv_free(l->q);
    *l = n->links[--n->n_links];
    return true;
}

static bool partitioned(const struct vv_sim *sim, uint32_t a, uint32_t b)
{
    return sim->partition != NULL && sim->partition[a] != sim->partition[b];
}

static uint64_t latency_us(struct vv_sim *sim, uint32_t a, uint32_t b)
{
    uint64_t base =
        (uint64_t)sim->cfg.latency_ms[sim->nodes[a].region][sim->nodes[b].region] * 1000;
    uint64_t jitter = base * sim->cfg.jitter_pct / 100;
    return base + (jitter ? rng_next(sim->rng) % (jitter + 1) : 0);
}

/* ---- vv_env operations for a simulated node -------------------------------------------- */

static uint64_t op_now_ms(void *impl)
{
    return node_of(impl)->sim->now_us / 1000;
}

static uint64_t op_timer_start(void *impl, uint64_t delay_ms, uint64_t repeat_ms,
                               vv_env_timer_cb cb, void *arg)
{
    struct sim_node *n = node_of(impl);
    struct vv_sim *sim = n->sim;
    uint32_t slot;
    if (sim->free_timer != UINT32_MAX) {
        slot = sim->free_timer;
        sim->free_timer = sim->timers[slot].next_free;
    } else {
        if (sim->n_timers == sim->cap_timers) {
            sim->cap_timers = sim->cap_timers ? sim->cap_timers * 2 : 1024;
            sim->timers = vv_xrealloc(sim->timers, sim->cap_timers * sizeof(*sim->timers));
        }
        slot = sim->n_timers++;
        sim->timers[slot].id = slot; /* generation 0 */
    }
    struct timer_rec *t = &sim->timers[slot];
    uint64_t gen = (t->id >> 32) + 1;
    *t = (struct timer_rec){.id = gen << 32 | slot,
                            .node = n->index,
                            .inc = n->inc,
                            .repeat_us = repeat_ms * 1000,
                            .cb = cb,
                            .arg = arg,
                            .live = true};
    push(sim, (struct event){.t_us = sim->now_us + delay_ms * 1000,
                             .kind = EV_TIMER,
                             .node = n->index,
                             .inc = n->inc,
                             .arg = (void *)(uintptr_t)slot});
    return t->id;
}

static void op_timer_cancel(void *impl, uint64_t id)
{
    struct vv_sim *sim = node_of(impl)->sim;
    uint32_t slot = (uint32_t)id;
    if (slot < sim->n_timers && sim->timers[slot].id == id && sim->timers[slot].live)
        sim->timers[slot].cancelled = true;
}

static void op_random(void *impl, void *buf, size_t len)
{
    struct sim_node *n = node_of(impl);
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t r = rng_next(n->rng);
        size_t k = len < 8 ? len : 8;
        memcpy(p, &r, k);
        p += k;
        len -= k;
    }
}

static int op_send(void *impl, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                   const uint8_t *data, size_t len)
{
    struct sim_node *n = node_of(impl);
    struct vv_sim *sim = n->sim;
    if (len > VV_ENV_MAX_MESSAGE_BYTES || channel >= VV_ENV_MAX_CHANNELS)
        return VV_EINVAL;
    int64_t dst = vv_sim_find(sim, peer);
    struct link *l = dst < 0 ? NULL : find_link(n, (uint32_t)dst);
    if (l == NULL)
        return VV_ECONN_NOT_CONNECTED;
    uint64_t wire = len + sim->cfg.per_message_overhead_bytes;
    if (sim->cfg.peer_queue_bytes) {
        while (l->q_head < l->q_n && l->q[l->q_head].depart_us <= sim->now_us)
            l->q_bytes -= l->q[l->q_head++].bytes;
        if (l->q_head == l->q_n)
            l->q_head = l->q_n = 0;
        if (l->q_bytes + wire > sim->cfg.peer_queue_bytes) {
            n->c.msgs_refused++;
            sim->total.msgs_refused++;
            return VV_ECONN_BACKPRESSURE;
        }
    }
    n->c.msgs_sent++;
    n->c.bytes_sent += wire;
    sim->total.msgs_sent++;
    sim->total.bytes_sent += wire;

    /* The uplink serialises the node's messages; then the link's latency applies. */
    uint64_t depart = sim->now_us > n->uplink_free_us ? sim->now_us : n->uplink_free_us;
    if (sim->cfg.uplink_bytes_per_s)
        depart += wire * 1000000 / sim->cfg.uplink_bytes_per_s;
    n->uplink_free_us = depart;
    if (sim->cfg.peer_queue_bytes && depart > sim->now_us) {
        if (l->q_n == l->q_cap) {
            if (l->q_head > 0) { /* slide the live entries down before growing */
                memmove(l->q, l->q + l->q_head, (l->q_n - l->q_head) * sizeof(*l->q));
                l->q_n -= l->q_head;
                l->q_head = 0;
            }
            if (l->q_n == l->q_cap) {
                l->q_cap = l->q_cap ? l->q_cap * 2 : 16;
                l->q = vv_xrealloc(l->q, l->q_cap * sizeof(*l->q));
            }
        }
        l->q[l->q_n++] = (struct qent){depart, wire};
        l->q_bytes += wire;
    }
    uint64_t arrive = depart + latency_us(sim, n->index, (uint32_t)dst);
    if (arrive < l->last_arrival_us)
        arrive = l->last_arrival_us; /* a stream: no overtaking */
    l->last_arrival_us = arrive;

    if (sim->cfg.loss > 0 && rng_unit(sim->rng) < sim->cfg.loss) {
        n->c.msgs_dropped++;
        sim->total.msgs_dropped++;
        return 0; /* lost on the way: the sender cannot tell */
    }
    struct message *m = vv_xmalloc(sizeof(*m) + len);
    m->channel = channel;
    m->len = (uint32_t)len;
    memcpy(m->data, data, len);
    push(sim, (struct event){.t_us = arrive,
                             .kind = EV_DELIVER,
                             .node = (uint32_t)dst,
                             .peer = n->index,
                             .inc = l->peer_inc,
                             .peer_inc = n->inc,
                             .ptr = m});
    return 0;
}

static int op_connect(void *impl, const uint8_t *peer, const char *address)
{
    struct sim_node *n = node_of(impl);
    struct vv_sim *sim = n->sim;
    int64_t dst = -1;
    if (peer != NULL)
        dst = vv_sim_find(sim, peer);
    else if (address != NULL && strncmp(address, "sim:", 4) == 0)
        dst = strtol(address + 4, NULL, 10);
    if (dst < 0 || dst >= sim->n_nodes || (uint32_t)dst == n->index)
        return VV_EINVAL;
    if (find_link(n, (uint32_t)dst) != NULL)
        return VV_EEXIST;
    n->c.connects++;
    sim->total.connects++;
    struct sim_node *d = &sim->nodes[dst];
    bool reachable = d->up && !partitioned(sim, n->index, (uint32_t)dst);
    /*
     * As in the daemon: TCP's handshake is a round trip, then Noise XX's first two messages
     * another; the dialer may send once it has the second (it sends the third with its first
     * data), so it is up after two round trips, and the other side half a round trip later,
     * when the third arrives. A failure shows after the dial timeout.
     */
    uint64_t lat = latency_us(sim, n->index, (uint32_t)dst);
    uint64_t when = reachable ? 4 * lat : (uint64_t)CONNECT_TIMEOUT_MS * 1000;
    push(sim, (struct event){.t_us = sim->now_us + when,
                             .kind = EV_LINK_UP,
                             .node = n->index,
                             .peer = (uint32_t)dst,
                             .inc = n->inc,
                             .peer_inc = d->inc,
                             .arg = (void *)(uintptr_t)reachable,
                             .aux_us = lat});
    return 0;
}

static void schedule_link_down(struct vv_sim *sim, uint32_t node, uint32_t peer, uint64_t delay_us)
{
    push(sim, (struct event){.t_us = sim->now_us + delay_us,
                             .kind = EV_LINK_DOWN,
                             .node = node,
                             .peer = peer,
                             .inc = sim->nodes[node].inc});
}

static void op_disconnect(void *impl, const uint8_t peer[VV_NODE_ID_BYTES])
{
    struct sim_node *n = node_of(impl);
    struct vv_sim *sim = n->sim;
    int64_t dst = vv_sim_find(sim, peer);
    struct link *l = dst < 0 ? NULL : find_link(n, (uint32_t)dst);
    if (l == NULL)
        return;
    /* The other side sees the close after one-way latency, and after everything sent before
     * it (a stream's FIN follows its data); we report ours at once. */
    uint64_t at = sim->now_us + latency_us(sim, n->index, (uint32_t)dst);
    if (at < l->last_arrival_us)
        at = l->last_arrival_us;
    remove_link(n, (uint32_t)dst);
    n->c.disconnects++;
    sim->total.disconnects++;
    schedule_link_down(sim, (uint32_t)dst, n->index, at - sim->now_us);
    vv_env_peer_event(&n->env, peer, false);
}

static bool op_verify(void *impl, const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg,
                      size_t len, const uint8_t sig[64])
{
    struct vv_sim *sim = node_of(impl)->sim;
    /* Memoized by a hash of all inputs: the answer is a pure function of them. */
    uint8_t key[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(key));
    crypto_generichash_update(&st, pk, VV_ED25519_PK_BYTES);
    crypto_generichash_update(&st, sig, 64);
    crypto_generichash_update(&st, msg, len);
    crypto_generichash_final(&st, key, sizeof(key));
    uint32_t slot;
    memcpy(&slot, key, sizeof(slot));
    struct verify_slot *v = &sim->verify_cache[slot % VERIFY_CACHE_SLOTS];
    if (v->used && memcmp(v->key, key, sizeof(key)) == 0)
        return v->ok;
    bool ok = crypto_sign_verify_detached(sig, msg, len, pk) == 0;
    memcpy(v->key, key, sizeof(key));
    v->used = 1;
    v->ok = ok;
    return ok;
}

/*
 * Node i's address is 10.x.y.z:4747 with x.y.z = i + 1, the address the connection manager
 * advertises for it here (vv_sim_node_address); a datagram to any other address, or to a
 * node that does not exist yet, goes nowhere.
 */
static int64_t address_node(const struct vv_sim *sim, const char *address)
{
    unsigned a, x, y, z, port;
    char tail;
    if (sscanf(address, "%u.%u.%u.%u:%u%c", &a, &x, &y, &z, &port, &tail) != 5 || a != 10 ||
        x > 255 || y > 255 || z > 255 || port != SIM_PORT)
        return -1;
    uint32_t idx = (x << 16 | y << 8 | z);
    if (idx == 0 || idx - 1 >= sim->n_nodes)
        return -1;
    return (int64_t)idx - 1;
}

void vv_sim_node_address(const struct vv_sim *sim, uint32_t node, char *out, size_t cap)
{
    (void)sim;
    snprintf(out, cap, "10.%u.%u.%u:%u", (node + 1) >> 16, ((node + 1) >> 8) & 255,
             (node + 1) & 255, SIM_PORT);
}

/*
 * A datagram: no connection, the same uplink, latency, jitter and loss as a message, but
 * each drawn on its own, so datagrams overtake each other. Whether it arrives (destination
 * up, not partitioned away) is decided when it arrives, as on a network.
 */
static int op_datagram(void *impl, const char *address, const uint8_t *frame, size_t len)
{
    struct sim_node *n = node_of(impl);
    struct vv_sim *sim = n->sim;
    if (len > VV_ENV_MAX_DATAGRAM_FRAME_BYTES)
        return VV_EWIRE_TOO_LARGE;
    size_t total = VV_ENV_DATAGRAM_HEADER_BYTES + len;
    uint64_t wire = total + DATAGRAM_OVERHEAD_BYTES;
    n->c.dgrams_sent++;
    sim->total.dgrams_sent++;
    n->c.bytes_sent += wire;
    sim->total.bytes_sent += wire;
    uint64_t depart = sim->now_us > n->uplink_free_us ? sim->now_us : n->uplink_free_us;
    if (sim->cfg.uplink_bytes_per_s)
        depart += wire * 1000000 / sim->cfg.uplink_bytes_per_s;
    n->uplink_free_us = depart;
    int64_t dst = address_node(sim, address);
    /* Drawn in this order whatever the outcome, so one datagram more or less to nowhere
     * does not shift the draws of the others. */
    uint64_t lat = latency_us(sim, n->index, dst < 0 ? n->index : (uint32_t)dst);
    bool lost = sim->cfg.loss > 0 && rng_unit(sim->rng) < sim->cfg.loss;
    if (dst < 0 || lost) {
        n->c.dgrams_dropped++;
        sim->total.dgrams_dropped++;
        return 0; /* the sender cannot tell */
    }
    struct datagram *d = vv_xmalloc(sizeof(*d) + total);
    d->from = n->index;
    d->len = (uint32_t)vv_env_datagram_seal(n->identity.node_id, frame, len, d->data, total);
    push(sim, (struct event){.t_us = depart + lat,
                             .kind = EV_DATAGRAM,
                             .node = (uint32_t)dst,
                             .peer = n->index,
                             .ptr = d});
    return 0;
}

static const struct vv_env_ops sim_env_ops = {
    .now_ms = op_now_ms,
    .timer_start = op_timer_start,
    .timer_cancel = op_timer_cancel,
    .random_bytes = op_random,
    .send = op_send,
    .connect = op_connect,
    .disconnect = op_disconnect,
    .verify = op_verify,
    .datagram = op_datagram,
};

/* ---- lifecycle of nodes --------------------------------------------------------------- */

static void node_create(struct vv_sim *sim, uint32_t idx)
{
    struct sim_node *n = &sim->nodes[idx];
    n->sim = sim;
    n->index = idx;
    n->region = idx % sim->cfg.n_regions;
    n->exists = true;
    rng_seed(n->rng, sim->cfg.seed, (uint64_t)idx + 1);
    uint8_t seed[32];
    for (int i = 0; i < 4; i++) {
        uint64_t r = rng_next(n->rng);
        memcpy(seed + 8 * i, &r, 8);
    }
    crypto_sign_seed_keypair(n->identity.public_key, n->identity.secret_key, seed);
    vv_identity_node_id(n->identity.public_key, n->identity.node_id);
    vv_hex_encode(n->identity.node_id, VV_NODE_ID_BYTES, n->identity.node_id_hex);
    n->env.ops = &sim_env_ops;
    n->env.impl = n;
    n->env.identity = &n->identity;
    index_insert(sim, idx);
}

static void node_boot(struct vv_sim *sim, uint32_t idx)
{
    struct sim_node *n = &sim->nodes[idx];
    n->up = true;
    memset(n->env.channels, 0, sizeof(n->env.channels));
    memset(&n->env.peers, 0, sizeof(n->env.peers));
    /* As in vivimd, the connection manager starts before the modules that ask it for peers
     * (vv_env_want_peer) and stops after them. */
    if (sim->cfg.connmgr) {
        /* Each node advertises an address of its own, numeric as peer exchange requires:
         * node i at 10.x.y.z with x.y.z = i + 1 (dials go by node ID here). */
        struct vv_connmgr_config cc = sim->cfg.connmgr_cfg;
        if (cc.self_address[0] == '\0')
            snprintf(cc.self_address, sizeof(cc.self_address), "10.%u.%u.%u:4747", (idx + 1) >> 16,
                     ((idx + 1) >> 8) & 255, (idx + 1) & 255);
        n->cm = vv_connmgr_new(&n->env, &cc);
    }
    n->app = sim->app.create ? sim->app.create(sim, &n->env, idx, sim->app.arg) : NULL;
}

static void node_crash(struct vv_sim *sim, uint32_t idx)
{
    struct sim_node *n = &sim->nodes[idx];
    if (!n->up)
        return;
    n->up = false;
    n->inc++; /* voids its timers and the messages in flight to and from it */
    if (sim->app.destroy)
        sim->app.destroy(n->app, sim->app.arg);
    n->app = NULL;
    vv_connmgr_free(n->cm);
    n->cm = NULL;
    vv_env_fini(&n->env); /* memory state gone: the request layer's too, without callbacks */
    memset(n->env.channels, 0, sizeof(n->env.channels));
    for (uint32_t i = 0; i < n->n_links; i++) {
        schedule_link_down(sim, n->links[i].peer, idx, (uint64_t)sim->cfg.fail_detect_ms * 1000);
        vv_free(n->links[i].q);
    }
    n->n_links = 0;
    n->uplink_free_us = 0;
}

/* ---- the event loop ------------------------------------------------------------------- */

static void run_event(struct vv_sim *sim, struct event *ev)
{
    struct sim_node *n = ev->node < sim->n_nodes ? &sim->nodes[ev->node] : NULL;
    trace_mix(sim, ev->t_us);
    trace_mix(sim, (uint64_t)ev->kind << 32 | ev->node);
    switch (ev->kind) {
    case EV_TIMER: {
        uint32_t slot = (uint32_t)(uintptr_t)ev->arg;
        struct timer_rec *t = &sim->timers[slot];
        if (t->cancelled || t->inc != n->inc || !n->up) {
            t->live = false;
            t->next_free = sim->free_timer;
            sim->free_timer = slot;
            return;
        }
        n->c.timers_fired++;
        sim->total.timers_fired++;
        vv_env_timer_cb cb = t->cb;
        void *arg = t->arg;
        if (t->repeat_us > 0) {
            push(sim, (struct event){.t_us = sim->now_us + t->repeat_us,
                                     .kind = EV_TIMER,
                                     .node = ev->node,
                                     .inc = ev->inc,
                                     .arg = ev->arg});
        } else {
            t->live = false;
            t->next_free = sim->free_timer;
            sim->free_timer = slot;
        }
        cb(&n->env, arg);
        return;
    }
    case EV_DELIVER: {
        struct message *m = ev->ptr;
        struct sim_node *src = &sim->nodes[ev->peer];
        bool ok = n->up && n->inc == ev->inc && src->inc == ev->peer_inc &&
                  !partitioned(sim, ev->node, ev->peer) && find_link(n, ev->peer) != NULL;
        if (ok) {
            trace_mix(sim, hash_bytes(m->data, m->len) ^ ((uint64_t)m->channel << 56) ^ ev->peer);
            uint64_t wire = m->len + sim->cfg.per_message_overhead_bytes;
            n->c.msgs_delivered++;
            n->c.bytes_delivered += wire;
            sim->total.msgs_delivered++;
            sim->total.bytes_delivered += wire;
            vv_env_deliver(&n->env, src->identity.node_id, m->channel, m->data, m->len);
        } else {
            src->c.msgs_dropped++;
            sim->total.msgs_dropped++;
        }
        vv_free(m);
        return;
    }
    case EV_LINK_UP: {
        struct sim_node *d = &sim->nodes[ev->peer];
        if (!n->up || n->inc != ev->inc)
            return; /* the dialer crashed meanwhile */
        /* Fails if the target was unreachable at dial time, or stopped being so since. */
        bool ok = ev->arg != NULL && d->up && d->inc == ev->peer_inc &&
                  !partitioned(sim, ev->node, ev->peer) && find_link(n, ev->peer) == NULL;
        if (!ok) {
            if (find_link(n, ev->peer) == NULL)
                vv_env_peer_event(&n->env, d->identity.node_id, false);
            return;
        }
        add_link(n, ev->peer, d->inc);
        /* The other side is up when the last handshake message arrives; what the dialer
         * sends from now on follows that message on the stream, so it arrives no earlier
         * and, at the same instant, after the accept (pushed first). */
        find_link(n, ev->peer)->last_arrival_us = sim->now_us + ev->aux_us;
        push(sim, (struct event){.t_us = sim->now_us + ev->aux_us,
                                 .kind = EV_LINK_ACCEPT,
                                 .node = ev->peer,
                                 .peer = ev->node,
                                 .inc = d->inc,
                                 .peer_inc = n->inc});
        vv_env_peer_event(&n->env, d->identity.node_id, true);
        return;
    }
    case EV_LINK_ACCEPT: {
        struct sim_node *dialer = &sim->nodes[ev->peer];
        /* A dialer that crashed since sent no last message; one that hung up after it did,
         * and its close follows on the stream (a link-down event already queued). */
        bool dialer_on = dialer->up && dialer->inc == ev->peer_inc;
        if (!n->up || n->inc != ev->inc || partitioned(sim, ev->node, ev->peer)) {
            /* The connection died in its handshake: the dialer notices as for a crash. */
            if (dialer_on && find_link(dialer, ev->node) != NULL)
                schedule_link_down(sim, ev->peer, ev->node,
                                   (uint64_t)sim->cfg.fail_detect_ms * 1000);
            return;
        }
        if (!dialer_on || find_link(n, ev->peer) != NULL)
            return; /* the dialer crashed, or the two connected the other way */
        add_link(n, ev->peer, dialer->inc);
        vv_env_peer_event(&n->env, dialer->identity.node_id, true);
        return;
    }
    case EV_LINK_DOWN:
        if (!n->up || n->inc != ev->inc)
            return;
        if (remove_link(n, ev->peer))
            vv_env_peer_event(&n->env, sim->nodes[ev->peer].identity.node_id, false);
        return;
    case EV_CRASH:
        node_crash(sim, ev->node);
        return;
    case EV_RESTART:
        if (!n->up)
            node_boot(sim, ev->node);
        return;
    case EV_JOIN:
        node_boot(sim, ev->node);
        return;
    case EV_PARTITION: {
        vv_free(sim->partition);
        sim->partition = ev->ptr;
        if (sim->partition == NULL)
            return;
        /* Connections across the cut time out on both sides. */
        for (uint32_t i = 0; i < sim->n_nodes; i++) {
            struct sim_node *a = &sim->nodes[i];
            for (uint32_t k = 0; a->up && k < a->n_links; k++)
                if (partitioned(sim, i, a->links[k].peer))
                    schedule_link_down(sim, i, a->links[k].peer,
                                       (uint64_t)sim->cfg.fail_detect_ms * 1000);
        }
        return;
    }
    case EV_CUSTOM: {
        void (*fn)(struct vv_sim *, void *) = (void (*)(struct vv_sim *, void *))ev->ptr;
        fn(sim, ev->arg);
        return;
    }
    case EV_DATAGRAM: {
        struct datagram *d = ev->ptr;
        struct sim_node *src = &sim->nodes[d->from];
        if (n->up && !partitioned(sim, ev->node, d->from)) {
            trace_mix(sim, hash_bytes(d->data, d->len) ^ ((uint64_t)d->from << 40));
            n->c.dgrams_delivered++;
            sim->total.dgrams_delivered++;
            n->c.bytes_delivered += d->len + DATAGRAM_OVERHEAD_BYTES;
            sim->total.bytes_delivered += d->len + DATAGRAM_OVERHEAD_BYTES;
            char from[VV_ENV_ADDRESS_BYTES];
            vv_sim_node_address(sim, d->from, from, sizeof(from));
            vv_env_receive_datagram(&n->env, from, d->data, d->len, NULL);
        } else {
            src->c.dgrams_dropped++;
            sim->total.dgrams_dropped++;
        }
        vv_free(d);
        return;
    }
    }
}

uint64_t vv_sim_run_until(struct vv_sim *sim, uint64_t t_ms)
{
    uint64_t limit = t_ms * 1000, ran = 0;
    while (sim->heap_len > 0 && sim->heap[0].t_us <= limit) {
        struct event ev = pop(sim);
        sim->now_us = ev.t_us;
        sim->events++;
        ran++;
        run_event(sim, &ev);
    }
    if (sim->now_us < limit)
        sim->now_us = limit;
    return ran;
}

/* ---- construction ----------------------------------------------------------------------- */

void vv_sim_config_defaults(struct vv_sim_config *cfg, uint64_t seed, uint32_t n_nodes)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->seed = seed;
    cfg->n_nodes = n_nodes;
    cfg->n_regions = 4;
    cfg->jitter_pct = 10;
    cfg->uplink_bytes_per_s = 125000000; /* 1 Gbit/s */
    cfg->fail_detect_ms = 3000;
    cfg->per_message_overhead_bytes = 4 + 17 + 16; /* length prefix, frame header, MAC */
    cfg->peer_queue_bytes = 8u << 20;              /* the daemon's [net] peer_queue_bytes */
}

/* One-way ms between four regions, roughly: same region, neighbouring, cross-ocean, far. */
static const uint32_t default_latency_ms[4][4] = {
    {5, 40, 75, 120},
    {40, 5, 50, 95},
    {75, 50, 5, 60},
    {120, 95, 60, 5},
};

struct vv_sim *vv_sim_new(const struct vv_sim_config *cfg, const struct vv_sim_app *app)
{
    struct vv_sim *sim = vv_xcalloc(1, sizeof(*sim));
    sim->cfg = *cfg;
    if (sim->cfg.n_regions == 0 || sim->cfg.n_regions > VV_SIM_MAX_REGIONS)
        sim->cfg.n_regions = 4;
    if (sim->cfg.max_nodes < sim->cfg.n_nodes)
        sim->cfg.max_nodes = sim->cfg.n_nodes;
    bool zero = true;
    for (int a = 0; a < VV_SIM_MAX_REGIONS; a++)
        for (int b = 0; b < VV_SIM_MAX_REGIONS; b++)
            zero &= sim->cfg.latency_ms[a][b] == 0;
    if (zero)
        for (uint32_t a = 0; a < sim->cfg.n_regions; a++)
            for (uint32_t b = 0; b < sim->cfg.n_regions; b++)
                sim->cfg.latency_ms[a][b] = default_latency_ms[a % 4][b % 4];
    if (app)
        sim->app = *app;
    sim->free_timer = UINT32_MAX;
    rng_seed(sim->rng, cfg->seed, 0);
    sim->nodes = vv_xcalloc(sim->cfg.max_nodes, sizeof(*sim->nodes));
    sim->index_cap = 16;
    while (sim->index_cap < 2 * sim->cfg.max_nodes)
        sim->index_cap *= 2;
    sim->index_table = vv_xcalloc(sim->index_cap, sizeof(*sim->index_table));
    sim->verify_cache = vv_xcalloc(VERIFY_CACHE_SLOTS, sizeof(*sim->verify_cache));
    sim->trace = 0xcbf29ce484222325ull ^ cfg->seed;
    for (uint32_t i = 0; i < sim->cfg.n_nodes; i++)
        node_create(sim, i);
    sim->n_nodes = sim->cfg.n_nodes;
    for (uint32_t i = 0; i < sim->cfg.n_nodes; i++)
        push(sim, (struct event){.t_us = 0, .kind = EV_JOIN, .node = i});
    return sim;
}

void vv_sim_free(struct vv_sim *sim)
{
    if (sim == NULL)
        return;
    for (uint32_t i = 0; i < sim->n_nodes; i++) {
        struct sim_node *n = &sim->nodes[i];
        if (n->up && sim->app.destroy)
            sim->app.destroy(n->app, sim->app.arg);
        vv_connmgr_free(n->cm);
        vv_env_fini(&n->env);
        for (uint32_t k = 0; k < n->n_links; k++)
            vv_free(n->links[k].q);
        vv_free(n->links);
        vv_identity_clear(&n->identity);
    }
    for (size_t i = 0; i < sim->heap_len; i++) {
        if (sim->heap[i].kind == EV_DELIVER || sim->heap[i].kind == EV_PARTITION ||
            sim->heap[i].kind == EV_DATAGRAM)
            vv_free(sim->heap[i].ptr);
    }
    vv_free(sim->heap);
    vv_free(sim->nodes);
    vv_free(sim->index_table);
    vv_free(sim->partition);
    vv_free(sim->timers);
    vv_free(sim->verify_cache);
    vv_free(sim);
}

/* ---- scenario ------------------------------------------------------------------------- */

void vv_sim_crash_at(struct vv_sim *sim, uint64_t t_ms, uint32_t node)
{
    push(sim, (struct event){.t_us = t_ms * 1000, .kind = EV_CRASH, .node = node});
}

void vv_sim_restart_at(struct vv_sim *sim, uint64_t t_ms, uint32_t node)
{
    push(sim, (struct event){.t_us = t_ms * 1000, .kind = EV_RESTART, .node = node});
}

uint32_t vv_sim_join_at(struct vv_sim *sim, uint64_t t_ms)
{
    if (sim->n_nodes >= sim->cfg.max_nodes)
        abort(); /* a scenario error: raise max_nodes */
    uint32_t idx = sim->n_nodes++;
    node_create(sim, idx);
    push(sim, (struct event){.t_us = t_ms * 1000, .kind = EV_JOIN, .node = idx});
    return idx;
}

void vv_sim_partition_at(struct vv_sim *sim, uint64_t t_ms, const uint32_t *group)
{
    uint32_t *copy = NULL;
    if (group != NULL) {
        copy = vv_xmalloc(sim->cfg.max_nodes * sizeof(*copy));
        memcpy(copy, group, sim->cfg.max_nodes * sizeof(*copy));
    }
    push(sim, (struct event){
                  .t_us = t_ms * 1000, .kind = EV_PARTITION, .ptr = copy, .node = UINT32_MAX});
}

void vv_sim_at(struct vv_sim *sim, uint64_t t_ms, void (*fn)(struct vv_sim *sim, void *arg),
               void *arg)
{
    push(sim, (struct event){.t_us = t_ms * 1000,
                             .kind = EV_CUSTOM,
                             .node = UINT32_MAX,
                             .ptr = (void *)fn,
                             .arg = arg});
}

/* ---- inspection ------------------------------------------------------------------------- */

uint64_t vv_sim_now_ms(const struct vv_sim *sim)
{
    return sim->now_us / 1000;
}
uint32_t vv_sim_node_count(const struct vv_sim *sim)
{
    return sim->n_nodes;
}
bool vv_sim_node_up(const struct vv_sim *sim, uint32_t node)
{
    return node < sim->n_nodes && sim->nodes[node].up;
}
struct vv_env *vv_sim_env(struct vv_sim *sim, uint32_t node)
{
    return &sim->nodes[node].env;
}
void *vv_sim_app_of(struct vv_sim *sim, uint32_t node)
{
    return sim->nodes[node].app;
}

struct vv_connmgr *vv_sim_connmgr(struct vv_sim *sim, uint32_t node)
{
    return sim->nodes[node].cm;
}
const uint8_t *vv_sim_node_id(const struct vv_sim *sim, uint32_t node)
{
    return sim->nodes[node].identity.node_id;
}
uint32_t vv_sim_links(const struct vv_sim *sim, uint32_t node)
{
    return sim->nodes[node].n_links;
}
uint32_t vv_sim_link_peer(const struct vv_sim *sim, uint32_t node, uint32_t k)
{
    return sim->nodes[node].links[k].peer;
}
const struct vv_sim_counters *vv_sim_node_counters(const struct vv_sim *sim, uint32_t node)
{
    return &sim->nodes[node].c;
}
const struct vv_sim_counters *vv_sim_totals(const struct vv_sim *sim)
{
    return &sim->total;
}
uint64_t vv_sim_events(const struct vv_sim *sim)
{
    return sim->events;
}
uint64_t vv_sim_trace_hash(const struct vv_sim *sim)
{
    return sim->trace;
}
uint64_t vv_sim_seed(const struct vv_sim *sim)
{
    return sim->cfg.seed;
}

void vv_sim_report(const struct vv_sim *sim, FILE *out)
{
    uint64_t max_msgs = 0, max_bytes = 0;
    for (uint32_t i = 0; i < sim->n_nodes; i++) {
        max_msgs = VV_MAX(max_msgs, sim->nodes[i].c.msgs_sent);
        max_bytes = VV_MAX(max_bytes, sim->nodes[i].c.bytes_sent);
    }
    const struct vv_sim_counters *t = &sim->total;
    double n = sim->n_nodes ? sim->n_nodes : 1;
    fprintf(out,
            "sim: seed %llu, %u nodes, %.1f s simulated, %llu events\n"
            "sim: messages sent %llu (%.1f per node, max %llu), delivered %llu, dropped %llu\n"
            "sim: bytes sent %llu (%.0f per node, max %llu); connects %llu, timers %llu\n"
            "sim: trace hash %016llx\n",
            (unsigned long long)sim->cfg.seed, sim->n_nodes, sim->now_us / 1e6,
            (unsigned long long)sim->events, (unsigned long long)t->msgs_sent, t->msgs_sent / n,
            (unsigned long long)max_msgs, (unsigned long long)t->msgs_delivered,
            (unsigned long long)t->msgs_dropped, (unsigned long long)t->bytes_sent,
            t->bytes_sent / n, (unsigned long long)max_bytes, (unsigned long long)t->connects,
            (unsigned long long)t->timers_fired, (unsigned long long)sim->trace);
}
