/*
 * The fake vv_env for unit tests (fake_env.h). It owns its timers, outbox and records, all
 * allocated with vv_xmalloc; it never reads the OS's clock or randomness. Timers live in an
 * unsorted array and the next one is found by a scan: unit tests keep a handful, and a scan
 * makes "a callback started or cancelled timers" need no care.
 */
#include "fake_env.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/error.h"

#define FAKE_START_MS 1000

/* ---- randomness: xoshiro256**, seeded by splitmix64 (as the simulator does) ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_random(struct vv_fake_env *fe)
{
    uint64_t *s = fe->rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* ---- the ops ---- */

static uint64_t f_now(void *impl)
{
    return ((struct vv_fake_env *)impl)->now_ms;
}

static uint64_t f_timer_start(void *impl, uint64_t delay_ms, uint64_t repeat_ms, vv_env_timer_cb cb,
                              void *arg)
{
    struct vv_fake_env *fe = impl;
    if (fe->n_timers == fe->cap_timers) {
        fe->cap_timers = fe->cap_timers ? fe->cap_timers * 2 : 8;
        fe->timers = vv_xrealloc(fe->timers, fe->cap_timers * sizeof(*fe->timers));
    }
    struct vv_fake_timer *t = &fe->timers[fe->n_timers++];
    *t = (struct vv_fake_timer){.id = ++fe->next_timer_id,
                                .due_ms = fe->now_ms + delay_ms,
                                .repeat_ms = repeat_ms,
                                .seq = fe->next_timer_seq++,
                                .cb = cb,
                                .arg = arg};
    return t->id;
}

static ptrdiff_t timer_index(const struct vv_fake_env *fe, uint64_t id)
{
    for (size_t i = 0; i < fe->n_timers; i++)
        if (fe->timers[i].id == id)
            return (ptrdiff_t)i;
    return -1;
}

static void f_timer_cancel(void *impl, uint64_t id)
{
    struct vv_fake_env *fe = impl;
    ptrdiff_t i = timer_index(fe, id);
    if (i >= 0)
        fe->timers[i] = fe->timers[--fe->n_timers];
}

static void f_random(void *impl, void *buf, size_t len)
{
    struct vv_fake_env *fe = impl;
    uint8_t *b = buf;
    while (len > 0) {
        uint64_t r = next_random(fe);
        size_t n = len < sizeof(r) ? len : sizeof(r);
        memcpy(b, &r, n);
        b += n;
        len -= n;
    }
}

static ptrdiff_t connected_index(const struct vv_fake_env *fe, const uint8_t *peer)
{
    for (size_t i = 0; i < fe->n_connected; i++)
        if (memcmp(fe->connected[i], peer, VV_NODE_ID_BYTES) == 0)
            return (ptrdiff_t)i;
    return -1;
}

static size_t queued_bytes_to(const struct vv_fake_env *fe, const uint8_t *peer)
{
    size_t bytes = 0;
    for (size_t i = fe->out_head; i < fe->out_tail; i++)
        if (memcmp(fe->out[i].peer, peer, VV_NODE_ID_BYTES) == 0)
            bytes += fe->out[i].len;
    return bytes;
}

static int f_send(void *impl, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                  const uint8_t *data, size_t len)
{
    struct vv_fake_env *fe = impl;
    int rc = fe->send_rc;
    if (rc == 0 && fe->require_connected && connected_index(fe, peer) < 0)
        rc = VV_ECONN_NOT_CONNECTED;
    if (rc == 0 && fe->peer_queue_bytes != 0 &&
        queued_bytes_to(fe, peer) + len > fe->peer_queue_bytes)
        rc = VV_ECONN_BACKPRESSURE;
    if (rc != 0) {
        fe->sends_failed++;
        return rc;
    }
    if (fe->down_on_send) {
        fe->sends_failed++;
        vv_fake_env_peer_down(fe, peer);
        return VV_ECONN_NOT_CONNECTED;
    }
    if (fe->out_tail == fe->cap_out) {
        /* Slide the live part down before growing: a long test pops as it goes. */
        size_t live = fe->out_tail - fe->out_head;
        if (fe->out_head > 0 && live < fe->cap_out / 2) {
            memmove(fe->out, fe->out + fe->out_head, live * sizeof(*fe->out));
        } else {
            fe->cap_out = fe->cap_out ? fe->cap_out * 2 : 16;
            fe->out = vv_xrealloc(fe->out, fe->cap_out * sizeof(*fe->out));
            memmove(fe->out, fe->out + fe->out_head, live * sizeof(*fe->out));
        }
        fe->out_head = 0;
        fe->out_tail = live;
    }
    struct vv_fake_msg *m = &fe->out[fe->out_tail++];
    memcpy(m->from, fe->id.node_id, VV_NODE_ID_BYTES);
    memcpy(m->peer, peer, VV_NODE_ID_BYTES);
    m->channel = channel;
    m->data = vv_xmalloc(len ? len : 1);
    if (len)
        memcpy(m->data, data, len);
    m->len = len;
    m->seq = fe->net ? fe->net->next_seq++ : fe->sends;
    m->sent_ms = fe->now_ms;
    fe->sends++;
    return 0;
}

static int f_connect(void *impl, const uint8_t *peer, const char *address)
{
    struct vv_fake_env *fe = impl;
    if (fe->n_connects == fe->cap_connects) {
        fe->cap_connects = fe->cap_connects ? fe->cap_connects * 2 : 16;
        fe->connects = vv_xrealloc(fe->connects, fe->cap_connects * sizeof(*fe->connects));
    }
    struct vv_fake_connect *c = &fe->connects[fe->n_connects++];
    memset(c, 0, sizeof(*c));
    c->has_peer = peer != NULL;
    if (peer)
        memcpy(c->peer, peer, VV_NODE_ID_BYTES);
    snprintf(c->address, sizeof(c->address), "%s", address ? address : "");
    if (fe->connect_needs_address && (address == NULL || address[0] == '\0'))
        return VV_ECONN_NOT_CONNECTED;
    return fe->connect_rc;
}

static void f_disconnect(void *impl, const uint8_t peer[VV_NODE_ID_BYTES])
{
    struct vv_fake_env *fe = impl;
    if (fe->n_disconnects == fe->cap_disconnects) {
        fe->cap_disconnects = fe->cap_disconnects ? fe->cap_disconnects * 2 : 16;
        fe->disconnects =
            vv_xrealloc(fe->disconnects, fe->cap_disconnects * sizeof(*fe->disconnects));
    }
    memcpy(fe->disconnects[fe->n_disconnects++], peer, VV_NODE_ID_BYTES);
    if (fe->report_disconnects)
        vv_fake_env_peer_down(fe, peer);
}

static bool f_verify(void *impl, const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg,
                     size_t len, const uint8_t sig[64])
{
    struct vv_fake_env *fe = impl;
    fe->verifies++;
    return crypto_sign_verify_detached(sig, msg, (unsigned long long)len, pk) == 0;
}

static int f_datagram(void *impl, const char *address, const uint8_t *frame, size_t len);
static void dgrams_free(struct vv_fake_env *fe);

/* Designated: an op added to vv_env_ops is NULL here until it gets a default. */
const struct vv_env_ops vv_fake_env_default_ops = {
    .now_ms = f_now,
    .timer_start = f_timer_start,
    .timer_cancel = f_timer_cancel,
    .random_bytes = f_random,
    .send = f_send,
    .connect = f_connect,
    .disconnect = f_disconnect,
    .verify = f_verify,
    .wall_ms = NULL, /* now_ms + VV_ENV_SIM_EPOCH_MS */
    .datagram = f_datagram,
};

/* ---- life ---- */

void vv_fake_env_init(struct vv_fake_env *fe, uint64_t seed)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "fake_env: libsodium failed to initialise\n");
        abort();
    }
    memset(fe, 0, sizeof(*fe));
    fe->ops = vv_fake_env_default_ops;
    fe->now_ms = FAKE_START_MS;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        fe->rng[i] = splitmix64(&x);
    uint8_t key_seed[crypto_sign_SEEDBYTES];
    f_random(fe, key_seed, sizeof(key_seed));
    crypto_sign_seed_keypair(fe->id.public_key, fe->id.secret_key, key_seed);
    crypto_hash_sha256(fe->id.node_id, fe->id.public_key, sizeof(fe->id.public_key));
    sodium_bin2hex(fe->id.node_id_hex, sizeof(fe->id.node_id_hex), fe->id.node_id,
                   VV_NODE_ID_BYTES);
    fe->env = (struct vv_env){.ops = &fe->ops, .impl = fe, .identity = &fe->id};
}

void vv_fake_env_free(struct vv_fake_env *fe)
{
    vv_fake_env_clear_outbox(fe);
    vv_free(fe->out);
    vv_free(fe->timers);
    vv_free(fe->connected);
    vv_free(fe->connects);
    vv_free(fe->disconnects);
    vv_free(fe->env.held);
    dgrams_free(fe);
    memset(fe, 0, sizeof(*fe));
}

/* ---- clock and timers ---- */

/* The timer that fires next (earliest due, then earliest started), or -1. */
static ptrdiff_t next_timer(const struct vv_fake_env *fe)
{
    ptrdiff_t best = -1;
    for (size_t i = 0; i < fe->n_timers; i++) {
        const struct vv_fake_timer *t = &fe->timers[i];
        if (best < 0 || t->due_ms < fe->timers[best].due_ms ||
            (t->due_ms == fe->timers[best].due_ms && t->seq < fe->timers[best].seq))
            best = (ptrdiff_t)i;
    }
    return best;
}

/* Runs timer i: a one-shot is removed first (its callback may start another); a repeating
 * one is re-armed repeat_ms from the clock as it fires, as libuv does, so a clock written
 * far ahead does not make it fire once for every period it skipped. */
static void fire(struct vv_fake_env *fe, size_t i)
{
    struct vv_fake_timer t = fe->timers[i];
    if (t.repeat_ms == 0) {
        fe->timers[i] = fe->timers[--fe->n_timers];
    } else {
        fe->timers[i].due_ms = fe->now_ms + t.repeat_ms;
        fe->timers[i].seq = fe->next_timer_seq++;
    }
    fe->timers_fired++;
    t.cb(&fe->env, t.arg);
}

uint64_t vv_fake_env_advance(struct vv_fake_env *fe, uint64_t ms)
{
    uint64_t target = fe->now_ms + ms, fired = 0;
    for (ptrdiff_t i; (i = next_timer(fe)) >= 0 && fe->timers[i].due_ms <= target; fired++) {
        if (fe->timers[i].due_ms > fe->now_ms)
            fe->now_ms = fe->timers[i].due_ms;
        fire(fe, (size_t)i);
    }
    fe->now_ms = target;
    return fired;
}

bool vv_fake_env_fire_next(struct vv_fake_env *fe)
{
    ptrdiff_t i = next_timer(fe);
    if (i < 0)
        return false;
    fire(fe, (size_t)i);
    return true;
}

size_t vv_fake_env_timers_pending(const struct vv_fake_env *fe, bool one_shot_only)
{
    size_t n = 0;
    for (size_t i = 0; i < fe->n_timers; i++)
        n += !one_shot_only || fe->timers[i].repeat_ms == 0;
    return n;
}

const struct vv_fake_timer *vv_fake_env_timer(const struct vv_fake_env *fe, uint64_t id)
{
    ptrdiff_t i = timer_index(fe, id);
    return i < 0 ? NULL : &fe->timers[i];
}

/* ---- outbox ---- */

size_t vv_fake_env_outbox_len(const struct vv_fake_env *fe)
{
    return fe->out_tail - fe->out_head;
}

const struct vv_fake_msg *vv_fake_env_peek(const struct vv_fake_env *fe, size_t i)
{
    return i < vv_fake_env_outbox_len(fe) ? &fe->out[fe->out_head + i] : NULL;
}

bool vv_fake_env_pop(struct vv_fake_env *fe, struct vv_fake_msg *out)
{
    if (fe->out_head == fe->out_tail)
        return false;
    *out = fe->out[fe->out_head++];
    if (fe->out_head == fe->out_tail)
        fe->out_head = fe->out_tail = 0;
    return true;
}

void vv_fake_env_clear_outbox(struct vv_fake_env *fe)
{
    struct vv_fake_msg m;
    while (vv_fake_env_pop(fe, &m))
        vv_fake_msg_free(&m);
}

size_t vv_fake_env_count_sent(const struct vv_fake_env *fe, const uint8_t *peer, int channel)
{
    size_t n = 0;
    for (size_t i = fe->out_head; i < fe->out_tail; i++) {
        const struct vv_fake_msg *m = &fe->out[i];
        n += (peer == NULL || memcmp(m->peer, peer, VV_NODE_ID_BYTES) == 0) &&
             (channel < 0 || m->channel == channel);
    }
    return n;
}

void vv_fake_msg_free(struct vv_fake_msg *m)
{
    vv_free(m->data);
    m->data = NULL;
    m->len = 0;
}

/* ---- peers ---- */

void vv_fake_env_peer_up(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES])
{
    if (connected_index(fe, peer) < 0) {
        if (fe->n_connected == fe->cap_connected) {
            fe->cap_connected = fe->cap_connected ? fe->cap_connected * 2 : 8;
            fe->connected = vv_xrealloc(fe->connected, fe->cap_connected * sizeof(*fe->connected));
        }
        memcpy(fe->connected[fe->n_connected++], peer, VV_NODE_ID_BYTES);
    }
    vv_env_peer_event(&fe->env, peer, true);
}

void vv_fake_env_peer_down(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES])
{
    ptrdiff_t i = connected_index(fe, peer);
    if (i >= 0) {
        memmove(fe->connected[i], fe->connected[i + 1],
                (fe->n_connected - (size_t)i - 1) * sizeof(*fe->connected));
        fe->n_connected--;
    }
    vv_env_peer_event(&fe->env, peer, false);
}

bool vv_fake_env_is_connected(const struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES])
{
    return connected_index(fe, peer) >= 0;
}

size_t vv_fake_env_disconnect_count(const struct vv_fake_env *fe,
                                    const uint8_t peer[VV_NODE_ID_BYTES])
{
    size_t n = 0;
    for (size_t i = 0; i < fe->n_disconnects; i++)
        n += memcmp(fe->disconnects[i], peer, VV_NODE_ID_BYTES) == 0;
    return n;
}

bool vv_fake_env_dialled(const struct vv_fake_env *fe, const char *needle)
{
    for (size_t i = 0; i < fe->n_connects; i++)
        if (strstr(fe->connects[i].address, needle) != NULL)
            return true;
    return false;
}

void vv_fake_env_deliver(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES],
                         uint8_t channel, const uint8_t *data, size_t len)
{
    vv_env_deliver(&fe->env, peer, channel, data, len);
}

void vv_fake_env_deliver_msg(struct vv_fake_env *to, struct vv_fake_msg *m)
{
    vv_env_deliver(&to->env, m->from, m->channel, m->data, m->len);
    vv_fake_msg_free(m);
}

/* ---- several envs ---- */

void vv_fake_net_init(struct vv_fake_net *net)
{
    memset(net, 0, sizeof(*net));
}

void vv_fake_net_add(struct vv_fake_net *net, struct vv_fake_env *fe)
{
    if (net->n_envs == VV_FAKE_NET_MAX_ENVS) {
        fprintf(stderr, "fake_env: more than %d envs in one net\n", VV_FAKE_NET_MAX_ENVS);
        abort();
    }
    net->envs[net->n_envs++] = fe;
    fe->net = net;
}

void vv_fake_net_connect(struct vv_fake_net *net, struct vv_fake_env *a, struct vv_fake_env *b)
{
    (void)net;
    vv_fake_env_peer_up(a, b->id.node_id);
    vv_fake_env_peer_up(b, a->id.node_id);
}

size_t vv_fake_net_in_flight(const struct vv_fake_net *net)
{
    size_t n = 0;
    for (size_t i = 0; i < net->n_envs; i++)
        n += vv_fake_env_outbox_len(net->envs[i]);
    return n;
}

struct vv_fake_env *vv_fake_net_find(const struct vv_fake_net *net,
                                     const uint8_t id[VV_NODE_ID_BYTES])
{
    for (size_t i = 0; i < net->n_envs; i++)
        if (memcmp(net->envs[i]->id.node_id, id, VV_NODE_ID_BYTES) == 0)
            return net->envs[i];
    return NULL;
}

bool vv_fake_net_deliver_one(struct vv_fake_net *net)
{
    struct vv_fake_env *from = NULL;
    for (size_t i = 0; i < net->n_envs; i++) {
        const struct vv_fake_msg *m = vv_fake_env_peek(net->envs[i], 0);
        if (m != NULL && (from == NULL || m->seq < vv_fake_env_peek(from, 0)->seq))
            from = net->envs[i];
    }
    if (from == NULL)
        return false;
    struct vv_fake_msg m;
    vv_fake_env_pop(from, &m);
    struct vv_fake_env *to = vv_fake_net_find(net, m.peer);
    if (to == NULL) {
        net->dropped++;
        vv_fake_msg_free(&m);
        return true;
    }
    net->delivered++;
    vv_fake_env_deliver_msg(to, &m);
    return true;
}

size_t vv_fake_net_pump(struct vv_fake_net *net)
{
    size_t n = 0;
    while (vv_fake_net_deliver_one(net))
        n++;
    return n;
}

uint64_t vv_fake_net_advance(struct vv_fake_net *net, uint64_t ms)
{
    uint64_t target[VV_FAKE_NET_MAX_ENVS], fired = 0;
    for (size_t i = 0; i < net->n_envs; i++)
        target[i] = net->envs[i]->now_ms + ms;
    for (;;) {
        struct vv_fake_env *best = NULL;
        ptrdiff_t bt = -1;
        for (size_t i = 0; i < net->n_envs; i++) {
            struct vv_fake_env *fe = net->envs[i];
            ptrdiff_t t = next_timer(fe);
            if (t < 0 || fe->timers[t].due_ms > target[i])
                continue;
            if (best == NULL || fe->timers[t].due_ms < best->timers[bt].due_ms)
                best = fe, bt = t;
        }
        if (best == NULL)
            break;
        if (best->timers[bt].due_ms > best->now_ms)
            best->now_ms = best->timers[bt].due_ms;
        fire(best, (size_t)bt);
        fired++;
    }
    for (size_t i = 0; i < net->n_envs; i++)
        net->envs[i]->now_ms = target[i];
    return fired;
}

/* ---- links by hand ---- */

void vv_fake_env_set_connected(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES],
                               bool connected)
{
    ptrdiff_t i = connected_index(fe, peer);
    if (connected && i < 0) {
        if (fe->n_connected == fe->cap_connected) {
            fe->cap_connected = fe->cap_connected ? fe->cap_connected * 2 : 8;
            fe->connected = vv_xrealloc(fe->connected, fe->cap_connected * sizeof(*fe->connected));
        }
        memcpy(fe->connected[fe->n_connected++], peer, VV_NODE_ID_BYTES);
    } else if (!connected && i >= 0) {
        memmove(fe->connected[i], fe->connected[i + 1],
                (fe->n_connected - (size_t)i - 1) * sizeof(*fe->connected));
        fe->n_connected--;
    }
}

/* The env whose oldest message was sent first of all in flight, or NULL. */
static struct vv_fake_env *next_sender(const struct vv_fake_net *net)
{
    struct vv_fake_env *from = NULL;
    for (size_t i = 0; i < net->n_envs; i++) {
        const struct vv_fake_msg *m = vv_fake_env_peek(net->envs[i], 0);
        if (m != NULL && (from == NULL || m->seq < vv_fake_env_peek(from, 0)->seq))
            from = net->envs[i];
    }
    return from;
}

const struct vv_fake_msg *vv_fake_net_peek(const struct vv_fake_net *net)
{
    struct vv_fake_env *from = next_sender(net);
    return from ? vv_fake_env_peek(from, 0) : NULL;
}

bool vv_fake_net_drop_one(struct vv_fake_net *net)
{
    struct vv_fake_env *from = next_sender(net);
    struct vv_fake_msg m;
    if (from == NULL || !vv_fake_env_pop(from, &m))
        return false;
    net->dropped++;
    vv_fake_msg_free(&m);
    return true;
}

/* Loses the messages in from's outbox addressed to `to`, keeping the others in order. */
static void drop_sent_to(struct vv_fake_net *net, struct vv_fake_env *from,
                         const uint8_t to[VV_NODE_ID_BYTES])
{
    size_t kept = from->out_head;
    for (size_t i = from->out_head; i < from->out_tail; i++) {
        if (memcmp(from->out[i].peer, to, VV_NODE_ID_BYTES) == 0) {
            vv_fake_msg_free(&from->out[i]);
            net->dropped++;
        } else {
            from->out[kept++] = from->out[i];
        }
    }
    from->out_tail = kept;
    if (from->out_head == from->out_tail)
        from->out_head = from->out_tail = 0;
}

void vv_fake_net_disconnect(struct vv_fake_net *net, struct vv_fake_env *a, struct vv_fake_env *b)
{
    /* Lost first: a module that hears "down" and sends again starts on an empty link. */
    drop_sent_to(net, a, b->id.node_id);
    drop_sent_to(net, b, a->id.node_id);
    vv_fake_env_peer_down(a, b->id.node_id);
    vv_fake_env_peer_down(b, a->id.node_id);
}

/* ---- datagrams ---- */

struct vv_fake_dgrams {
    char address[VV_ENV_ADDRESS_BYTES];
    int rc;
    struct vv_fake_dgram *q; /* pending, oldest first from head */
    size_t head, n, cap;
    uint64_t sent;
};

static struct vv_fake_dgrams *dgrams_of(struct vv_fake_env *fe)
{
    if (fe->dgrams == NULL) {
        fe->dgrams = vv_xcalloc(1, sizeof(*fe->dgrams));
        const uint8_t *id = fe->id.node_id;
        snprintf(fe->dgrams->address, sizeof(fe->dgrams->address), "10.%u.%u.%u:4747", id[0], id[1],
                 id[2]);
    }
    return fe->dgrams;
}

static void dgrams_free(struct vv_fake_env *fe)
{
    struct vv_fake_dgrams *b = fe->dgrams;
    if (b == NULL)
        return;
    for (size_t i = b->head; i < b->n; i++)
        vv_free(b->q[i].data);
    vv_free(b->q);
    vv_free(b);
    fe->dgrams = NULL;
}

static int f_datagram(void *impl, const char *address, const uint8_t *frame, size_t len)
{
    struct vv_fake_env *fe = impl;
    struct vv_fake_dgrams *b = dgrams_of(fe);
    if (b->rc != 0)
        return b->rc;
    if (b->n == b->cap) {
        if (b->head > 0) {
            memmove(b->q, b->q + b->head, (b->n - b->head) * sizeof(*b->q));
            b->n -= b->head;
            b->head = 0;
        }
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 16;
            b->q = vv_xrealloc(b->q, b->cap * sizeof(*b->q));
        }
    }
    struct vv_fake_dgram *d = &b->q[b->n++];
    memset(d, 0, sizeof(*d));
    memcpy(d->from, fe->id.node_id, VV_NODE_ID_BYTES);
    vv_strlcpy(d->from_address, b->address, sizeof(d->from_address));
    vv_strlcpy(d->to, address, sizeof(d->to));
    d->data = vv_xmalloc(VV_ENV_DATAGRAM_HEADER_BYTES + len);
    d->len = vv_env_datagram_seal(fe->id.node_id, frame, len, d->data,
                                  VV_ENV_DATAGRAM_HEADER_BYTES + len);
    d->seq = fe->net ? fe->net->next_seq++ : b->sent;
    b->sent++;
    return 0;
}

int vv_fake_env_set_address(struct vv_fake_env *fe, const char *address)
{
    char canon[VV_ENV_ADDRESS_BYTES];
    int rc = vv_env_address_canon(address, canon, sizeof(canon));
    if (rc == 0)
        vv_strlcpy(dgrams_of(fe)->address, canon, sizeof(canon));
    return rc;
}

const char *vv_fake_env_address(struct vv_fake_env *fe)
{
    return dgrams_of(fe)->address;
}

void vv_fake_env_set_datagram_rc(struct vv_fake_env *fe, int rc)
{
    dgrams_of(fe)->rc = rc;
}

size_t vv_fake_env_datagrams_pending(const struct vv_fake_env *fe)
{
    return fe->dgrams ? fe->dgrams->n - fe->dgrams->head : 0;
}

uint64_t vv_fake_env_datagrams_sent(const struct vv_fake_env *fe)
{
    return fe->dgrams ? fe->dgrams->sent : 0;
}

const struct vv_fake_dgram *vv_fake_env_peek_datagram(const struct vv_fake_env *fe, size_t i)
{
    return i < vv_fake_env_datagrams_pending(fe) ? &fe->dgrams->q[fe->dgrams->head + i] : NULL;
}

bool vv_fake_env_pop_datagram(struct vv_fake_env *fe, struct vv_fake_dgram *out)
{
    if (vv_fake_env_datagrams_pending(fe) == 0)
        return false;
    struct vv_fake_dgrams *b = fe->dgrams;
    *out = b->q[b->head++];
    if (b->head == b->n)
        b->head = b->n = 0;
    return true;
}

void vv_fake_dgram_free(struct vv_fake_dgram *d)
{
    vv_free(d->data);
    d->data = NULL;
    d->len = 0;
}

int vv_fake_env_receive_datagram(struct vv_fake_env *fe, const char *from, const uint8_t *data,
                                 size_t len)
{
    return vv_env_receive_datagram(&fe->env, from, data, len, NULL);
}

int vv_fake_env_deliver_dgram(struct vv_fake_env *to, struct vv_fake_dgram *d)
{
    int rc = vv_fake_env_receive_datagram(to, d->from_address, d->data, d->len);
    vv_fake_dgram_free(d);
    return rc;
}

struct vv_fake_env *vv_fake_net_find_address(const struct vv_fake_net *net, const char *address)
{
    for (size_t i = 0; i < net->n_envs; i++)
        if (strcmp(vv_fake_env_address(net->envs[i]), address) == 0)
            return net->envs[i];
    return NULL;
}

/* The env whose oldest pending datagram was sent first, or NULL. */
static struct vv_fake_env *oldest_dgram_sender(const struct vv_fake_net *net)
{
    struct vv_fake_env *from = NULL;
    for (size_t i = 0; i < net->n_envs; i++) {
        const struct vv_fake_dgram *d = vv_fake_env_peek_datagram(net->envs[i], 0);
        if (d != NULL && (from == NULL || d->seq < vv_fake_env_peek_datagram(from, 0)->seq))
            from = net->envs[i];
    }
    return from;
}

bool vv_fake_net_deliver_datagram_one(struct vv_fake_net *net, uint64_t *undeliverable)
{
    struct vv_fake_env *from = oldest_dgram_sender(net);
    if (from == NULL)
        return false;
    struct vv_fake_dgram d;
    vv_fake_env_pop_datagram(from, &d);
    struct vv_fake_env *to = vv_fake_net_find_address(net, d.to);
    if (to == NULL) {
        if (undeliverable)
            (*undeliverable)++;
        vv_fake_dgram_free(&d);
        return true;
    }
    vv_fake_env_deliver_dgram(to, &d);
    return true;
}

size_t vv_fake_net_pump_all(struct vv_fake_net *net)
{
    size_t n = 0;
    for (;; n++) {
        struct vv_fake_env *df = oldest_dgram_sender(net);
        uint64_t dseq = df ? vv_fake_env_peek_datagram(df, 0)->seq : UINT64_MAX;
        uint64_t mseq = UINT64_MAX;
        for (size_t i = 0; i < net->n_envs; i++) {
            const struct vv_fake_msg *m = vv_fake_env_peek(net->envs[i], 0);
            if (m != NULL && m->seq < mseq)
                mseq = m->seq;
        }
        if (df == NULL && mseq == UINT64_MAX)
            return n;
        if (dseq < mseq)
            vv_fake_net_deliver_datagram_one(net, NULL);
        else
            vv_fake_net_deliver_one(net);
    }
}
