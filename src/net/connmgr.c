/*
 * Connection manager: the address book and the policy that keeps this node well connected.
 * See include/vivim/connmgr.h for the behaviour. Sans-I/O: it acts only through vv_env
 * (connect, disconnect, send, timers, randomness), so it runs unchanged on the simulator.
 *
 * The address book is an array with a hash index on node ID (open addressing, linear
 * probing, backward-shift deletion); every per-event operation is O(1) on average, and the
 * once-per-tick policy pass is O(peers).
 *
 * Peer exchange is the one way a remote node can put entries into the address book that it
 * does not stand behind itself, so it is held tight: a PEX_RESPONSE counts only as the
 * answer to the one request we have outstanding with that peer, its addresses must be
 * numeric (a host name from a peer would make us resolve names of its choosing), the
 * entries it brings ("hearsay" until we reach them once) fill at most half of the book and
 * push out nothing but other hearsay that failed, and dials to hearsay are paced by a token
 * bucket. A node never sends a peer list nobody asked for, not even to a peer it trims.
 */
#include <arpa/inet.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/connmgr.h"
#include "vivim/keyed_hash.h"
#include "vivim/wire.h"
#include "vivim/log.h"

#define VV_CONNMGR_DIAL_TIMEOUT_MS 10000 /* a dial with no answer by then has failed */
#define VV_CONNMGR_MSG_MAX_BYTES   4096  /* a CONN-channel message larger than this is bad */
/* Hearsay may fill at most 1/VV_CONNMGR_HEARSAY_SHARE of the address book, so that peer
 * exchange can never crowd out the peers we have reached or were given. */
#define VV_CONNMGR_HEARSAY_SHARE 2

enum conn_msg {
    MSG_HELLO = 0,
    MSG_PING = 1,
    MSG_PONG = 2,
    MSG_PEX_REQUEST = 3,
    MSG_PEX_RESPONSE = 4,
};

struct peer {
    struct vv_connmgr_peer pub;
    uint64_t dial_deadline_ms;
    uint64_t last_ping_ms;
    uint64_t ping_nonce; /* of the ping in flight, 0 when none */
    bool closing;        /* we asked for the disconnect: not a failure */
    bool pex_answered;   /* we answered its PEX_REQUEST since it connected */
    bool pex_pending;    /* our PEX_REQUEST to it awaits its answer, sent at pex_asked_ms */
    uint64_t pex_asked_ms;
    bool hearsay; /* learned through peer exchange and never reached: dials are paced */
};

struct vv_connmgr {
    struct vv_env *env;
    struct vv_connmgr_config cfg;
    struct peer *peers;
    uint32_t n_peers;
    uint32_t *index; /* slot -> peer index + 1, 0 = empty; only peers with a known ID */
    uint32_t index_cap;
    uint32_t connected, dialing;
    uint64_t timer;
    uint64_t last_pex_ms;
    uint32_t n_hearsay;        /* peers with hearsay set */
    uint32_t n_tagged;         /* peers with at least one tag */
    uint32_t max_tagged;       /* cfg.max_tagged, at most max_known_peers / 2 */
    uint64_t pex_dial_tokens;  /* in thousandths of a dial; at most VV_CONNMGR_PEX_DIAL_BURST */
    uint64_t pex_dial_fill_ms; /* when the bucket was last filled */
    struct vv_connmgr_stats stats;
};

void vv_connmgr_config_defaults(struct vv_connmgr_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->low_water = 32;
    cfg->high_water = 64;
    cfg->max_known_peers = 4096;
    cfg->tick_ms = 1000;
    cfg->ping_interval_ms = 15000;
    cfg->idle_timeout_ms = 45000; /* three missed pings */
    cfg->backoff_base_ms = 1000;
    cfg->backoff_max_ms = 300000;
    cfg->pex_interval_ms = 30000;
    cfg->max_dials = 8;
    cfg->grace_ms = VV_CONNMGR_GRACE_MS;
    cfg->max_tagged = VV_CONNMGR_MAX_TAGGED_PEERS;
    cfg->node_type = VV_NODE_STORAGE;
    cfg->capabilities = 0;
}

/* ---- the ID index --------------------------------------------------------------------- */

/* Keyed: a node ID is a SHA-256 output, but a peer can grind IDs with a chosen prefix and
 * peer-exchange lists carry IDs nobody vouched for, so the peer picks the keys here. Their
 * first bytes as the hash would let it stack them in one probe run (vivim/keyed_hash.h). */
static uint32_t id_hash(const uint8_t *id)
{
    return (uint32_t)vv_keyed_hash64(id, VV_NODE_ID_BYTES);
}

static int64_t index_find(const struct vv_connmgr *cm, const uint8_t *id)
{
    uint32_t mask = cm->index_cap - 1;
    for (uint32_t s = id_hash(id) & mask;; s = (s + 1) & mask) {
        uint32_t v = cm->index[s];
        if (v == 0)
            return -1;
        if (memcmp(cm->peers[v - 1].pub.id, id, VV_NODE_ID_BYTES) == 0)
            return (int64_t)s;
    }
}

static void index_put(struct vv_connmgr *cm, uint32_t peer_idx)
{
    uint32_t mask = cm->index_cap - 1;
    uint32_t s = id_hash(cm->peers[peer_idx].pub.id) & mask;
    while (cm->index[s] != 0)
        s = (s + 1) & mask;
    cm->index[s] = peer_idx + 1;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void index_del_slot(struct vv_connmgr *cm, uint32_t s)
{
    uint32_t mask = cm->index_cap - 1;
    cm->index[s] = 0;
    for (uint32_t j = (s + 1) & mask; cm->index[j] != 0; j = (j + 1) & mask) {
        uint32_t v = cm->index[j];
        uint32_t home = id_hash(cm->peers[v - 1].pub.id) & mask;
        /* Move v back into the hole if its home is not in (s, j]. */
        bool between = s <= j ? (home > s && home <= j) : (home > s || home <= j);
        if (!between) {
            cm->index[s] = v;
            cm->index[j] = 0;
            s = j;
        }
    }
}

static void index_replace(struct vv_connmgr *cm, uint32_t from_idx, uint32_t to_idx)
{
    int64_t s = index_find(cm, cm->peers[from_idx].pub.id);
    if (s >= 0)
        cm->index[s] = to_idx + 1;
}

uint32_t vv__connmgr_longest_probe(const struct vv_connmgr *cm)
{
    uint32_t mask = cm->index_cap - 1, worst = 0;
    for (uint32_t s = 0; s < cm->index_cap; s++) {
        uint32_t v = cm->index[s];
        if (v != 0) {
            uint32_t home = id_hash(cm->peers[v - 1].pub.id) & mask;
            worst = VV_MAX(worst, ((s - home) & mask) + 1);
        }
    }
    return worst;
}

static struct peer *find_peer(const struct vv_connmgr *cm, const uint8_t *id)
{
    int64_t s = index_find(cm, id);
    return s < 0 ? NULL : &cm->peers[cm->index[s] - 1];
}

static struct peer *find_by_address(struct vv_connmgr *cm, const char *address)
{
    for (uint32_t i = 0; i < cm->n_peers; i++)
        if (strcmp(cm->peers[i].pub.address, address) == 0)
            return &cm->peers[i];
    return NULL;
}

/* The peer is no longer hearsay: we reached it, or the operator named it. */
static void vouch(struct vv_connmgr *cm, struct peer *p)
{
    if (p->hearsay) {
        p->hearsay = false;
        cm->n_hearsay--;
    }
}

static void remove_peer(struct vv_connmgr *cm, struct peer *p)
{
    vouch(cm, p);
    if (p->pub.n_tags > 0)
        cm->n_tagged--; /* not reached today: tagged entries are never chosen for removal */
    uint32_t i = (uint32_t)(p - cm->peers);
    if (p->pub.id_known) {
        int64_t s = index_find(cm, p->pub.id);
        if (s >= 0)
            index_del_slot(cm, (uint32_t)s);
    }
    uint32_t last = cm->n_peers - 1;
    if (i != last) {
        if (cm->peers[last].pub.id_known)
            index_replace(cm, last, i);
        cm->peers[i] = cm->peers[last];
    }
    cm->n_peers--;
}

/* The least valuable entry that may be forgotten: not connected, dialing, tagged, bootstrap
 * or protected; the one with the most failures. NULL when every entry is worth keeping. */
static struct peer *eviction_candidate(struct vv_connmgr *cm)
{
    struct peer *worst = NULL;
    for (uint32_t i = 0; i < cm->n_peers; i++) {
        struct peer *p = &cm->peers[i];
        if (p->pub.connected || p->pub.dialing || p->pub.n_tags > 0 ||
            (p->pub.flags & (VV_PEER_BOOTSTRAP | VV_PEER_PROTECTED)))
            continue;
        if (worst == NULL || p->pub.failures > worst->pub.failures ||
            (p->pub.failures == worst->pub.failures && p->pub.reputation < worst->pub.reputation))
            worst = p;
    }
    return worst;
}

static struct peer *new_peer(struct vv_connmgr *cm, const uint8_t *id, const char *address)
{
    if (cm->n_peers >= cm->cfg.max_known_peers) {
        struct peer *victim = eviction_candidate(cm);
        if (victim == NULL)
            return NULL;
        remove_peer(cm, victim);
    }
    struct peer *p = &cm->peers[cm->n_peers++];
    memset(p, 0, sizeof(*p));
    if (id != NULL) {
        memcpy(p->pub.id, id, VV_NODE_ID_BYTES);
        p->pub.id_known = true;
        index_put(cm, (uint32_t)(p - cm->peers));
    }
    if (address != NULL)
        vv_strlcpy(p->pub.address, address, sizeof(p->pub.address));
    p->pub.node_type = VV_NODE_TYPE_COUNT; /* unknown until HELLO */
    return p;
}

static bool is_self(const struct vv_connmgr *cm, const uint8_t *id)
{
    return memcmp(id, cm->env->identity->node_id, VV_NODE_ID_BYTES) == 0;
}

static void learn_address(struct vv_connmgr *cm, struct peer *p, const char *address, uint64_t now);

/* ---- messages ------------------------------------------------------------------------- */

static void send_buf(struct vv_connmgr *cm, struct peer *p, msgpack_sbuffer *sb)
{
    if (vv_env_send(cm->env, p->pub.id, VV_CHANNEL_CONN, (const uint8_t *)sb->data, sb->size) == 0)
        p->pub.msgs_out++;
    msgpack_sbuffer_destroy(sb);
}

/* Starts a message: a wire frame of this type whose body is an array of n elements. */
static void begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t n, uint8_t type)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    vv_wire_begin(pk, (uint16_t)((VV_CHANNEL_CONN << 8) | type), 0);
    msgpack_pack_array(pk, n);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void send_hello(struct vv_connmgr *cm, struct peer *p)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, 4, MSG_HELLO);
    pack_str(&pk, cm->cfg.self_address);
    msgpack_pack_uint8(&pk, (uint8_t)cm->cfg.node_type);
    msgpack_pack_uint32(&pk, cm->cfg.capabilities);
    pack_str(&pk, cm->cfg.region);
    send_buf(cm, p, &sb);
}

static void send_ping(struct vv_connmgr *cm, struct peer *p, uint64_t now)
{
    uint64_t nonce;
    do {
        vv_env_random(cm->env, &nonce, sizeof(nonce));
    } while (nonce == 0);
    p->ping_nonce = nonce;
    p->last_ping_ms = now;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, 2, MSG_PING);
    msgpack_pack_uint64(&pk, nonce);
    msgpack_pack_uint64(&pk, now);
    send_buf(cm, p, &sb);
    cm->stats.pings_sent++;
}

static void send_pong(struct vv_connmgr *cm, struct peer *p, uint64_t nonce, uint64_t sent)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, 2, MSG_PONG);
    msgpack_pack_uint64(&pk, nonce);
    msgpack_pack_uint64(&pk, sent);
    send_buf(cm, p, &sb);
}

/* Asks p for peers, unless a request to it is still outstanding: one at a time per peer. */
static void send_pex_request(struct vv_connmgr *cm, struct peer *p, uint64_t now)
{
    if (p->pex_pending && now - p->pex_asked_ms <= VV_CONNMGR_PEX_TIMEOUT_MS)
        return;
    p->pex_pending = true;
    p->pex_asked_ms = now;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, 1, MSG_PEX_REQUEST);
    msgpack_pack_uint8(&pk, VV_CONNMGR_PEX_MAX);
    send_buf(cm, p, &sb);
    cm->stats.pex_sent++;
}

/*
 * Peer exchange carries only numeric addresses: an IPv4 literal in dotted decimal
 * (a.b.c.d, as inet_pton reads it) or an IPv6 literal in brackets, then ':' and a port
 * 1..65535 in decimal without sign or leading zeros; not the unspecified address (0.0.0.0,
 * [::]). A host name would make the receiver resolve a name of the sender's choosing.
 */
static bool pex_address_ok(const char *a)
{
    const char *host, *port;
    size_t hl;
    int af;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (close == NULL || close[1] != ':')
            return false;
        host = a + 1;
        hl = (size_t)(close - host);
        port = close + 2;
        af = AF_INET6;
    } else {
        const char *colon = strchr(a, ':');
        if (colon == NULL)
            return false;
        host = a;
        hl = (size_t)(colon - a);
        port = colon + 1;
        af = AF_INET;
    }
    char buf[64]; /* INET6_ADDRSTRLEN is 46 */
    uint8_t bin[16];
    if (hl == 0 || hl >= sizeof(buf))
        return false;
    memcpy(buf, host, hl);
    buf[hl] = '\0';
    if (inet_pton(af, buf, bin) != 1)
        return false;
    size_t blen = af == AF_INET ? 4 : 16;
    bool unspecified = true;
    for (size_t i = 0; i < blen; i++)
        unspecified &= bin[i] == 0;
    if (unspecified)
        return false;
    uint32_t v = 0;
    size_t k = 0;
    for (; port[k] >= '0' && port[k] <= '9' && k < 5; k++)
        v = v * 10 + (uint32_t)(port[k] - '0');
    return k > 0 && port[k] == '\0' && port[0] != '0' && v <= 65535;
}

/*
 * Answers a PEX_REQUEST with up to `want` peers at numeric addresses: connected peers
 * first, then peers we reached before (or were given) and have not failed to reach since.
 * Hearsay is not passed on, so one node's lies do not spread through honest ones.
 */
static void send_pex_response(struct vv_connmgr *cm, struct peer *to, uint32_t want)
{
    want = VV_MIN(want, VV_CONNMGR_PEX_MAX);
    uint32_t picked[VV_CONNMGR_PEX_MAX];
    uint32_t n = 0;
    /* Connected peers first, then peers we know and have not failed to reach. */
    for (int pass = 0; pass < 2 && cm->n_peers > 0; pass++) {
        uint32_t start = (uint32_t)vv_env_random_below(cm->env, cm->n_peers);
        for (uint32_t k = 0; k < cm->n_peers && n < want; k++) {
            uint32_t i = (start + k) % cm->n_peers;
            struct peer *p = &cm->peers[i];
            bool eligible = pass == 0 ? p->pub.connected && !p->closing
                                      : !p->pub.connected && !p->hearsay && p->pub.failures == 0 &&
                                            p->pub.reputation >= 0;
            if (p != to && eligible && p->pub.id_known && pex_address_ok(p->pub.address))
                picked[n++] = i;
        }
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    begin(&sb, &pk, 1, MSG_PEX_RESPONSE);
    msgpack_pack_array(&pk, n);
    for (uint32_t k = 0; k < n; k++) {
        struct peer *p = &cm->peers[picked[k]];
        msgpack_pack_array(&pk, 2);
        msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
        msgpack_pack_bin_body(&pk, p->pub.id, VV_NODE_ID_BYTES);
        pack_str(&pk, p->pub.address);
    }
    send_buf(cm, to, &sb);
}

/* ---- decoding: strict, every field checked -------------------------------------------- */

static bool get_uint(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return false;
    *out = o->via.u64;
    return true;
}

/* A string from a peer, copied NUL-terminated into out[cap]: accepted exactly when the wire
 * codec's text check accepts it (valid UTF-8 without control characters), so that no text
 * is stored here that the rest of the daemon (peers.list's JSON) would refuse. */
static bool get_str(const msgpack_object *o, char *out, size_t cap)
{
    const char *s;
    size_t n;
    if (vv_wire_get_str(o, cap - 1, &s, &n) != 0)
        return false;
    if (n > 0) /* an empty string may come with no pointer at all */
        memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

static void penalize(struct vv_connmgr *cm, struct peer *p, const char *why)
{
    cm->stats.bad_messages++;
    p->pub.reputation -= VV_CONNMGR_BAD_PENALTY;
    vv_log_debug("connmgr", "bad message from %.16s…: %s", p->pub.address[0] ? p->pub.address : "?",
                 why);
    if (p->pub.reputation <= VV_CONNMGR_REPUTATION_MIN && p->pub.connected) {
        p->closing = true;
        vv_env_disconnect(cm->env, p->pub.id);
    }
}

static void adopt_address(struct vv_connmgr *cm, struct peer **pp, const char *address)
{
    struct peer *p = *pp;
    if (address[0] == '\0' || strcmp(p->pub.address, address) == 0)
        return;
    /* A bootstrap entry we dialled by address only: merge it into the entry with the ID. */
    struct peer *anon = find_by_address(cm, address);
    if (anon != NULL && !anon->pub.id_known) {
        p->pub.flags |= anon->pub.flags;
        if (anon->pub.dialing) {
            anon->pub.dialing = false;
            cm->dialing--;
        }
        uint8_t id[VV_NODE_ID_BYTES];
        memcpy(id, p->pub.id, sizeof(id));
        remove_peer(cm, anon); /* may move *p in the array */
        p = find_peer(cm, id);
        *pp = p;
    }
    vv_strlcpy(p->pub.address, address, sizeof(p->pub.address));
}

/*
 * Whether one more hearsay entry may join the book: while hearsay fills less than its share
 * and the book has room, yes; otherwise only in place of hearsay that already failed (the
 * one that failed most), which is removed. Nothing we reached or were given is pushed out.
 */
static bool make_room_for_hearsay(struct vv_connmgr *cm)
{
    if (cm->n_hearsay < cm->cfg.max_known_peers / VV_CONNMGR_HEARSAY_SHARE &&
        cm->n_peers < cm->cfg.max_known_peers)
        return true;
    struct peer *worst = NULL;
    for (uint32_t i = 0; i < cm->n_peers; i++) {
        struct peer *p = &cm->peers[i];
        if (p->hearsay && !p->pub.dialing && p->pub.n_tags == 0 && p->pub.failures > 0 &&
            (worst == NULL || p->pub.failures > worst->pub.failures))
            worst = p;
    }
    if (worst == NULL)
        return false;
    remove_peer(cm, worst);
    return true;
}

static void on_recv(struct vv_env *env, const uint8_t id[VV_NODE_ID_BYTES], const uint8_t *data,
                    size_t len, void *arg)
{
    struct vv_connmgr *cm = arg;
    struct peer *p = find_peer(cm, id);
    if (p == NULL || !p->pub.connected)
        return; /* a late message from a peer we already dropped */
    uint64_t now = vv_env_now(env);
    p->pub.last_heard_ms = now;
    p->pub.msgs_in++;
    if (len > VV_CONNMGR_MSG_MAX_BYTES) {
        penalize(cm, p, "oversized");
        return;
    }
    struct vv_wire_frame f;
    if (vv_wire_decode(data, len, &f) != 0) {
        penalize(cm, p, "malformed");
        return;
    }
    if (f.body.type != MSGPACK_OBJECT_ARRAY) {
        vv_wire_frame_free(&f);
        penalize(cm, p, "malformed");
        return;
    }
    uint64_t type = f.h.type & 0xffu;
    int verdict = vv_wire_verdict(&f.h, vv_wire_channel(f.h.type) == VV_CHANNEL_CONN &&
                                            type <= MSG_PEX_RESPONSE);
    if (verdict != 0) {
        /* Unknown types of a newer minor version are skipped, not punished. */
        if (verdict < 0)
            penalize(cm, p, "unknown type");
        vv_wire_frame_free(&f);
        return;
    }
    const msgpack_object *a = f.body.via.array.ptr;
    uint32_t n = f.body.via.array.size;
    uint64_t x, y;
    if (type == MSG_HELLO) {
        char address[VV_CONNMGR_ADDRESS_BYTES], region[VV_CONNMGR_REGION_BYTES];
        uint64_t ntype, caps;
        if (n == 4 && get_str(&a[0], address, sizeof(address)) &&
            get_uint(&a[1], VV_NODE_TYPE_COUNT - 1, &ntype) && get_uint(&a[2], UINT32_MAX, &caps) &&
            get_str(&a[3], region, sizeof(region))) {
            adopt_address(cm, &p, address);
            p->pub.node_type = (enum vv_node_type)ntype;
            p->pub.capabilities = (uint32_t)caps;
            vv_strlcpy(p->pub.region, region, sizeof(p->pub.region));
        } else {
            penalize(cm, p, "bad HELLO");
        }
    } else if (type == MSG_PING) {
        if (n == 2 && get_uint(&a[0], UINT64_MAX, &x) && get_uint(&a[1], UINT64_MAX, &y))
            send_pong(cm, p, x, y);
        else
            penalize(cm, p, "bad PING");
    } else if (type == MSG_PONG) {
        if (n == 2 && get_uint(&a[0], UINT64_MAX, &x) && get_uint(&a[1], UINT64_MAX, &y)) {
            /* Only the answer to our ping in flight counts; a stale or forged one is ignored. */
            if (x == p->ping_nonce && y == p->last_ping_ms && now >= y) {
                uint32_t rtt = (uint32_t)VV_MIN(now - y, UINT32_MAX);
                p->pub.rtt_ms =
                    p->pub.rtt_ms == 0 ? (rtt ? rtt : 1) : (7 * p->pub.rtt_ms + rtt) / 8;
                p->ping_nonce = 0;
                if (p->pub.reputation < VV_CONNMGR_REPUTATION_MAX)
                    p->pub.reputation++;
                cm->stats.pongs_received++;
            }
        } else {
            penalize(cm, p, "bad PONG");
        }
    } else if (type == MSG_PEX_REQUEST) {
        if (n == 1 && get_uint(&a[0], 255, &x)) {
            send_pex_response(cm, p, (uint32_t)x);
            p->pex_answered = true;
        } else
            penalize(cm, p, "bad PEX request");
    } else if (type == MSG_PEX_RESPONSE) {
        if (n != 1 || a[0].type != MSGPACK_OBJECT_ARRAY ||
            a[0].via.array.size > VV_CONNMGR_PEX_MAX) {
            penalize(cm, p, "bad PEX response");
        } else if (!p->pex_pending || now - p->pex_asked_ms > VV_CONNMGR_PEX_TIMEOUT_MS) {
            /* Not an answer to a request of ours (or too late to be one): it would let the
             * peer steer our dials. Ignored, not punished: an honest peer's answer that
             * missed the deadline looks the same. */
            p->pex_pending = false;
            cm->stats.pex_unsolicited++;
        } else {
            p->pex_pending = false;
            uint8_t from[VV_NODE_ID_BYTES];
            memcpy(from, p->pub.id, sizeof(from));
            for (uint32_t i = 0; i < a[0].via.array.size; i++) {
                const msgpack_object *e = &a[0].via.array.ptr[i];
                char address[VV_CONNMGR_ADDRESS_BYTES];
                if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
                    e->via.array.ptr[0].type != MSGPACK_OBJECT_BIN ||
                    e->via.array.ptr[0].via.bin.size != VV_NODE_ID_BYTES ||
                    !get_str(&e->via.array.ptr[1], address, sizeof(address)) ||
                    address[0] == '\0') {
                    struct peer *sender = find_peer(cm, from);
                    if (sender != NULL)
                        penalize(cm, sender, "bad PEX entry");
                    break;
                }
                const uint8_t *pid = (const uint8_t *)e->via.array.ptr[0].via.bin.ptr;
                if (is_self(cm, pid))
                    continue;
                struct peer *known = find_peer(cm, pid);
                if (known != NULL) {
                    /* A peer a module wants but whose address we lack: this may be it (a
                     * wrong one only fails its handshake; dials stay under backoff). */
                    if (known->pub.address[0] == '\0' && known->pub.n_tags > 0 &&
                        pex_address_ok(address))
                        learn_address(cm, known, address, now);
                    continue;
                }
                if (!pex_address_ok(address) || !make_room_for_hearsay(cm)) {
                    cm->stats.pex_entries_refused++;
                    continue;
                }
                struct peer *q = new_peer(cm, pid, address);
                q->hearsay = true;
                cm->n_hearsay++;
                cm->stats.pex_peers_learned++;
            }
        }
    }
    vv_wire_frame_free(&f);
}

/* ---- connection events ----------------------------------------------------------------- */

static uint64_t backoff_ms(struct vv_connmgr *cm, uint32_t failures)
{
    uint32_t shift = failures > 0 ? VV_MIN(failures - 1, 20u) : 0;
    uint64_t d =
        VV_MIN((uint64_t)cm->cfg.backoff_base_ms << shift, (uint64_t)cm->cfg.backoff_max_ms);
    /* Equal jitter: half fixed, half random, so retries of many nodes spread out. */
    return d / 2 + vv_env_random_below(cm->env, d / 2 + 1);
}

static void on_peer(struct vv_env *env, const uint8_t id[VV_NODE_ID_BYTES], bool up, void *arg)
{
    struct vv_connmgr *cm = arg;
    uint64_t now = vv_env_now(env);
    struct peer *p = find_peer(cm, id);
    if (up) {
        if (p == NULL)
            p = new_peer(cm, id, NULL);
        if (p == NULL) {
            /* Address book full of peers worth more: refuse the connection. */
            vv_env_disconnect(env, id);
            return;
        }
        if (p->pub.dialing) {
            p->pub.dialing = false;
            cm->dialing--;
        }
        if (p->pub.connected)
            return;
        if (p->pub.reputation <= VV_CONNMGR_REPUTATION_MIN) {
            vv_env_disconnect(env, id); /* it misbehaved before: not welcome back */
            return;
        }
        p->pub.connected = true;
        p->pub.connected_since_ms = now;
        p->pub.last_heard_ms = now;
        p->pub.failures = 0;
        p->closing = false;
        p->pex_pending = false;
        p->pex_answered = false;
        vouch(cm, p);
        /* Spread first pings over the interval. */
        p->last_ping_ms = now - vv_env_random_below(env, cm->cfg.ping_interval_ms);
        p->ping_nonce = 0;
        cm->connected++;
        cm->stats.connects++;
        send_hello(cm, p);
        if (cm->connected < cm->cfg.low_water)
            send_pex_request(cm, p, now); /* short of peers: ask the first one we meet */
        return;
    }
    if (p == NULL)
        return;
    if (p->pub.dialing) {
        p->pub.dialing = false;
        cm->dialing--;
        p->pub.failures++;
        cm->stats.dial_failures++;
        p->pub.next_dial_ms = now + backoff_ms(cm, p->pub.failures);
    }
    if (p->pub.connected) {
        p->pub.connected = false;
        cm->connected--;
        cm->stats.disconnects++;
        if (!p->closing)
            p->pub.failures++;
        p->pub.next_dial_ms = now + backoff_ms(cm, p->pub.failures ? p->pub.failures : 1);
        p->closing = false;
        p->pex_pending = false; /* its answer can no longer arrive */
    }
}

void vv_connmgr_dial_failed(struct vv_connmgr *cm, const char *address)
{
    struct peer *p = address != NULL ? find_by_address(cm, address) : NULL;
    if (p == NULL || !p->pub.dialing || p->pub.connected)
        return;
    uint64_t now = vv_env_now(cm->env);
    p->pub.dialing = false;
    cm->dialing--;
    p->pub.failures++;
    cm->stats.dial_failures++;
    p->pub.next_dial_ms = now + backoff_ms(cm, p->pub.failures);
}

/* ---- the periodic policy pass ----------------------------------------------------------- */

static int start_dial(struct vv_connmgr *cm, struct peer *p, uint64_t now)
{
    int rc = vv_env_connect(cm->env, p->pub.id_known ? p->pub.id : NULL,
                            p->pub.address[0] ? p->pub.address : NULL);
    cm->stats.dials++;
    if (rc != 0) {
        p->pub.failures++;
        cm->stats.dial_failures++;
        p->pub.next_dial_ms = now + backoff_ms(cm, p->pub.failures);
        return rc;
    }
    p->pub.dialing = true;
    p->dial_deadline_ms = now + VV_CONNMGR_DIAL_TIMEOUT_MS;
    cm->dialing++;
    return 0;
}

static bool dialable(const struct peer *p, uint64_t now)
{
    return !p->pub.connected && !p->pub.dialing && p->pub.next_dial_ms <= now &&
           p->pub.reputation > VV_CONNMGR_REPUTATION_MIN &&
           (p->pub.id_known || p->pub.address[0] != '\0');
}

/* Usefulness for trimming: reputation, then measured RTT, then age. Higher keeps. Only
 * peers past their grace period are compared, so an RTT is measured by then unless the peer
 * ignores our pings (an unmeasured RTT is then rightly taken as poor). */
static int64_t usefulness(const struct peer *p, uint64_t now)
{
    int64_t rtt = p->pub.rtt_ms ? p->pub.rtt_ms : 1000;
    int64_t age_s = (int64_t)((now - p->pub.connected_since_ms) / 1000);
    return (int64_t)p->pub.reputation * 100000 - rtt * 10 + VV_MIN(age_s, 3600);
}

/* Whether p is still spared as a new connection (connmgr.h, VV_CONNMGR_GRACE_MS). */
static bool in_grace(const struct vv_connmgr *cm, const struct peer *p, uint64_t now)
{
    uint64_t age = now - p->pub.connected_since_ms;
    if (age >= cm->cfg.grace_ms)
        return false;
    bool flooded = cm->connected > (uint64_t)VV_CONNMGR_GRACE_OVERFLOW * cm->cfg.high_water;
    if (!flooded || p->pub.n_tags > 0)
        return true;
    return !p->pex_answered && age < cm->cfg.grace_ms / VV_CONNMGR_GRACE_FLOOD_DIVISOR;
}

/* Tagged peers connected (and not being closed), and with dialing those being dialled too:
 * at most high_water of them are kept. */
static uint32_t tagged_in_use(const struct vv_connmgr *cm, bool dialing)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < cm->n_peers && cm->n_tagged > 0; i++) {
        const struct peer *p = &cm->peers[i];
        n +=
            p->pub.n_tags > 0 && ((dialing && p->pub.dialing) || (p->pub.connected && !p->closing));
    }
    return n;
}

/*
 * Trims until low_water peers remain. Never a protected peer, nor one in its grace period.
 * Untagged peers go first, least useful first; tagged peers only while more than high_water
 * tagged peers are connected, least total weight first (then least useful). Tags thus let
 * modules hold up to high_water connections, and since tagged peers are dialled only while
 * fewer than high_water are in use, a tagged peer trimmed is not dialled again at once.
 */
static void trim(struct vv_connmgr *cm, uint64_t now)
{
    uint32_t tagged = tagged_in_use(cm, false);
    while (cm->connected > cm->cfg.low_water) {
        struct peer *worst = NULL;
        int64_t worst_u = 0;
        bool over_high = tagged > cm->cfg.high_water;
        for (uint32_t i = 0; i < cm->n_peers; i++) {
            struct peer *p = &cm->peers[i];
            if (!p->pub.connected || p->closing || (p->pub.flags & VV_PEER_PROTECTED) ||
                in_grace(cm, p, now))
                continue;
            if (p->pub.n_tags > 0 && !over_high)
                continue;
            int64_t u = usefulness(p, now);
            /* Untagged before tagged; among tagged, the lighter first. */
            bool worse;
            if (worst == NULL)
                worse = true;
            else if ((p->pub.n_tags > 0) != (worst->pub.n_tags > 0))
                worse = p->pub.n_tags == 0;
            else if (p->pub.tag_weight != worst->pub.tag_weight)
                worse = p->pub.tag_weight < worst->pub.tag_weight;
            else
                worse = u < worst_u;
            if (worse) {
                worst = p;
                worst_u = u;
            }
        }
        if (worst == NULL)
            return; /* everything left is protected, young, or tagged below high_water */
        worst->closing = true;
        cm->stats.trimmed++;
        if (worst->pub.n_tags > 0)
            tagged--;
        /* No peer list goes with it (unlike gossipsub's prune with peer exchange): a list
         * nobody asked for is what receivers refuse. The grace period gave a peer that joined
         * through us time to ask. The peer callback will come back and mark it
         * disconnected. */
        uint32_t before = cm->connected;
        vv_env_disconnect(cm->env, worst->pub.id);
        if (cm->connected == before) {
            /* An implementation that reports later: stop here and finish next tick. */
            return;
        }
    }
}

static void tick(struct vv_env *env, void *arg)
{
    struct vv_connmgr *cm = arg;
    uint64_t now = vv_env_now(env);

    for (uint32_t i = 0; i < cm->n_peers; i++) {
        struct peer *p = &cm->peers[i];
        if (p->pub.dialing && now >= p->dial_deadline_ms) {
            p->pub.dialing = false;
            cm->dialing--;
            p->pub.failures++;
            cm->stats.dial_failures++;
            p->pub.next_dial_ms = now + backoff_ms(cm, p->pub.failures);
        }
        if (!p->pub.connected || p->closing)
            continue;
        if (now - p->pub.last_heard_ms >= cm->cfg.idle_timeout_ms) {
            cm->stats.idle_drops++;
            vv_env_disconnect(env, p->pub.id); /* not closing: counts as a failure */
            continue;
        }
        if (now - p->last_ping_ms >= cm->cfg.ping_interval_ms)
            send_ping(cm, p, now);
    }

    if (cm->connected > cm->cfg.high_water)
        trim(cm, now);

    /* The hearsay dial budget: VV_CONNMGR_PEX_DIALS_PER_S tokens a second, at most
     * VV_CONNMGR_PEX_DIAL_BURST saved up. */
    uint64_t cap = (uint64_t)VV_CONNMGR_PEX_DIAL_BURST * 1000;
    if (now > cm->pex_dial_fill_ms) {
        uint64_t add = (now - cm->pex_dial_fill_ms) * VV_CONNMGR_PEX_DIALS_PER_S;
        cm->pex_dial_tokens = add >= cap - cm->pex_dial_tokens ? cap : cm->pex_dial_tokens + add;
        cm->pex_dial_fill_ms = now;
    }

    /* Tagged peers first: a module needs them. Not when high_water tagged peers are in use
     * (trimming would take them again), not past max_dials, not paced like other hearsay
     * (each one is a peer a module asked for by ID, and its dials are under backoff). */
    if (cm->n_tagged > 0) {
        uint32_t in_use = tagged_in_use(cm, true);
        for (uint32_t i = 0; i < cm->n_peers; i++) {
            if (in_use >= cm->cfg.high_water || cm->dialing >= cm->cfg.max_dials)
                break;
            struct peer *p = &cm->peers[i];
            if (p->pub.n_tags > 0 && dialable(p, now) && start_dial(cm, p, now) == 0)
                in_use++;
        }
    }

    /* Dial from a random starting point, so that all nodes do not chase the same peers. */
    if (cm->connected + cm->dialing < cm->cfg.low_water && cm->n_peers > 0) {
        uint32_t start = (uint32_t)vv_env_random_below(env, cm->n_peers);
        for (uint32_t k = 0; k < cm->n_peers; k++) {
            if (cm->connected + cm->dialing >= cm->cfg.low_water ||
                cm->dialing >= cm->cfg.max_dials)
                break;
            struct peer *p = &cm->peers[(start + k) % cm->n_peers];
            if (!dialable(p, now))
                continue;
            if (p->hearsay) {
                if (cm->pex_dial_tokens < 1000)
                    continue; /* out of budget: only vouched-for peers this tick */
                cm->pex_dial_tokens -= 1000;
            }
            start_dial(cm, p, now);
        }
    }

    /* Peer exchange: ask one random neighbour, more often while we are short of peers. */
    uint64_t every =
        cm->connected < cm->cfg.low_water ? cm->cfg.pex_interval_ms / 10 : cm->cfg.pex_interval_ms;
    if (cm->connected > 0 && now - cm->last_pex_ms >= every) {
        uint32_t pick = (uint32_t)vv_env_random_below(env, cm->connected);
        for (uint32_t i = 0; i < cm->n_peers; i++) {
            struct peer *p = &cm->peers[i];
            if (p->pub.connected && !p->closing && pick-- == 0) {
                send_pex_request(cm, p, now); /* not if one to it is still outstanding */
                break;
            }
        }
        cm->last_pex_ms = now;
    }
}

/* ---- peers on demand: tags --------------------------------------------------------------- */

/* Dials a tagged peer now if it may be dialled and the bounds allow (see tick). */
static void dial_if_wanted(struct vv_connmgr *cm, struct peer *p, uint64_t now)
{
    if (p->pub.n_tags > 0 && dialable(p, now) && cm->dialing < cm->cfg.max_dials &&
        tagged_in_use(cm, true) < cm->cfg.high_water)
        start_dial(cm, p, now);
}

/* A new address for p, from peer exchange or the operator: a new chance, so the backoff of
 * dials to the old one (or to none) starts over, and a tagged peer is dialled at once. */
static void learn_address(struct vv_connmgr *cm, struct peer *p, const char *address, uint64_t now)
{
    vv_strlcpy(p->pub.address, address, sizeof(p->pub.address));
    if (p->pub.connected || p->pub.dialing)
        return;
    p->pub.failures = 0;
    p->pub.next_dial_ms = now;
    dial_if_wanted(cm, p, now);
}

static bool tag_name_ok(const char *tag)
{
    size_t n = 0;
    for (; tag[n] != '\0'; n++)
        if (tag[n] <= ' ' || tag[n] > '~' || n + 1 >= VV_CONNMGR_TAG_BYTES)
            return false;
    return n > 0;
}

static void sum_tags(struct peer *p)
{
    p->pub.tag_weight = 0;
    for (uint32_t i = 0; i < p->pub.n_tags; i++)
        p->pub.tag_weight += p->pub.tags[i].weight;
}

static int refuse_tag(struct vv_connmgr *cm)
{
    cm->stats.tags_refused++;
    return VV_ELIMIT;
}

int vv_connmgr_tag(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES], const char *address,
                   const char *tag, uint32_t weight)
{
    if (id == NULL || tag == NULL || !tag_name_ok(tag) || is_self(cm, id) ||
        (address != NULL && strlen(address) >= VV_CONNMGR_ADDRESS_BYTES))
        return VV_EINVAL;
    if (address != NULL && address[0] == '\0')
        address = NULL;
    uint64_t now = vv_env_now(cm->env);
    struct peer *p = find_peer(cm, id);
    if (p != NULL) {
        for (uint32_t i = 0; i < p->pub.n_tags; i++) {
            if (strcmp(p->pub.tags[i].name, tag) == 0) {
                p->pub.tags[i].weight = weight;
                sum_tags(p);
                if (address != NULL && strcmp(address, p->pub.address) != 0)
                    learn_address(cm, p, address, now);
                return 0;
            }
        }
        if (p->pub.n_tags == VV_CONNMGR_MAX_TAGS_PER_PEER)
            return refuse_tag(cm);
    }
    if ((p == NULL || p->pub.n_tags == 0) && cm->n_tagged >= cm->max_tagged)
        return refuse_tag(cm);
    if (p == NULL) {
        p = new_peer(cm, id, NULL);
        if (p == NULL)
            return refuse_tag(cm); /* the book is full of peers that may not be forgotten */
        p->pub.next_dial_ms = now;
    }
    if (p->pub.n_tags++ == 0)
        cm->n_tagged++;
    struct vv_connmgr_tag *t = &p->pub.tags[p->pub.n_tags - 1];
    vv_strlcpy(t->name, tag, sizeof(t->name));
    t->weight = weight;
    sum_tags(p);
    if (address != NULL && strcmp(address, p->pub.address) != 0)
        learn_address(cm, p, address, now); /* dials */
    else
        dial_if_wanted(cm, p, now);
    return 0;
}

int vv_connmgr_untag(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES], const char *tag)
{
    struct peer *p = id != NULL && tag != NULL ? find_peer(cm, id) : NULL;
    if (p == NULL)
        return 0;
    for (uint32_t i = 0; i < p->pub.n_tags; i++) {
        if (strcmp(p->pub.tags[i].name, tag) == 0) {
            p->pub.tags[i] = p->pub.tags[--p->pub.n_tags];
            memset(&p->pub.tags[p->pub.n_tags], 0, sizeof(p->pub.tags[0]));
            sum_tags(p);
            if (p->pub.n_tags == 0)
                cm->n_tagged--;
            break;
        }
    }
    return 0;
}

uint32_t vv_connmgr_tagged_count(const struct vv_connmgr *cm)
{
    return cm->n_tagged;
}

static int pm_want(void *arg, const uint8_t id[VV_NODE_ID_BYTES], const char *address,
                   const char *tag, uint32_t weight)
{
    return vv_connmgr_tag(arg, id, address, tag, weight);
}

static int pm_release(void *arg, const uint8_t id[VV_NODE_ID_BYTES], const char *tag)
{
    return vv_connmgr_untag(arg, id, tag);
}

/* ---- public API ------------------------------------------------------------------------- */

struct vv_connmgr *vv_connmgr_new(struct vv_env *env, const struct vv_connmgr_config *cfg)
{
    struct vv_connmgr *cm = vv_xcalloc(1, sizeof(*cm));
    cm->env = env;
    cm->cfg = *cfg;
    if (cm->cfg.high_water < cm->cfg.low_water)
        cm->cfg.high_water = cm->cfg.low_water;
    if (cm->cfg.max_known_peers < cm->cfg.high_water + 1)
        cm->cfg.max_known_peers = cm->cfg.high_water + 1;
    cm->peers = vv_xcalloc(cm->cfg.max_known_peers, sizeof(*cm->peers));
    cm->index_cap = 16;
    while (cm->index_cap < 2 * cm->cfg.max_known_peers)
        cm->index_cap *= 2;
    cm->index = vv_xcalloc(cm->index_cap, sizeof(*cm->index));
    cm->pex_dial_tokens = (uint64_t)VV_CONNMGR_PEX_DIAL_BURST * 1000;
    cm->pex_dial_fill_ms = vv_env_now(env);
    cm->max_tagged =
        VV_MIN(cm->cfg.max_tagged ? cm->cfg.max_tagged : (uint32_t)VV_CONNMGR_MAX_TAGGED_PEERS,
               cm->cfg.max_known_peers / 2);
    vv_env_set_channel(env, VV_CHANNEL_CONN, on_recv, on_peer, cm);
    const struct vv_env_peer_manager pm = {pm_want, pm_release, cm};
    vv_env_set_peer_manager(env, &pm);
    uint64_t first = vv_env_random_below(env, cm->cfg.tick_ms) + 1;
    cm->timer = vv_env_timer_start(env, first, cm->cfg.tick_ms, tick, cm);
    return cm;
}

void vv_connmgr_free(struct vv_connmgr *cm)
{
    if (cm == NULL)
        return;
    vv_env_timer_cancel(cm->env, cm->timer);
    vv_env_set_channel(cm->env, VV_CHANNEL_CONN, NULL, NULL, NULL);
    if (cm->env->peers.arg == cm)
        vv_env_set_peer_manager(cm->env, NULL);
    vv_free(cm->index);
    vv_free(cm->peers);
    vv_free(cm);
}

int vv_connmgr_add_peer(struct vv_connmgr *cm, const uint8_t *id, const char *address,
                        uint32_t flags)
{
    if ((id == NULL && (address == NULL || *address == '\0')) ||
        (address != NULL && strlen(address) >= VV_CONNMGR_ADDRESS_BYTES))
        return VV_EINVAL;
    if (id != NULL && is_self(cm, id))
        return VV_EINVAL;
    struct peer *p = id != NULL ? find_peer(cm, id) : find_by_address(cm, address);
    if (p == NULL)
        p = new_peer(cm, id, address);
    if (p == NULL)
        return VV_ELIMIT;
    p->pub.flags |= flags;
    vouch(cm, p); /* the operator (config, RPC, local discovery) named it */
    if (address != NULL && *address != '\0' && strcmp(address, p->pub.address) != 0)
        learn_address(cm, p, address, vv_env_now(cm->env));
    return 0;
}

void vv_connmgr_protect(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES], bool on)
{
    struct peer *p = find_peer(cm, id);
    if (p == NULL)
        return;
    if (on)
        p->pub.flags |= VV_PEER_PROTECTED;
    else
        p->pub.flags &= ~VV_PEER_PROTECTED;
}

int vv_connmgr_connect(struct vv_connmgr *cm, const uint8_t *id, const char *address)
{
    int rc = vv_connmgr_add_peer(cm, id, address, 0);
    if (rc != 0)
        return rc;
    struct peer *p = id != NULL ? find_peer(cm, id) : find_by_address(cm, address);
    if (p->pub.connected)
        return VV_EEXIST;
    if (p->pub.dialing)
        return 0;
    uint64_t now = vv_env_now(cm->env);
    p->pub.next_dial_ms = now;
    return start_dial(cm, p, now); /* the transport's own error when the dial cannot start */
}

int vv_connmgr_disconnect(struct vv_connmgr *cm, const uint8_t id[VV_NODE_ID_BYTES])
{
    struct peer *p = find_peer(cm, id);
    if (p == NULL || !p->pub.connected)
        return VV_ECONN_NOT_CONNECTED;
    p->closing = true;
    vv_env_disconnect(cm->env, id);
    return 0;
}

uint32_t vv_connmgr_connected_count(const struct vv_connmgr *cm)
{
    return cm->connected;
}

uint32_t vv_connmgr_known_count(const struct vv_connmgr *cm)
{
    return cm->n_peers;
}

const struct vv_connmgr_peer *vv_connmgr_find(const struct vv_connmgr *cm,
                                              const uint8_t id[VV_NODE_ID_BYTES])
{
    struct peer *p = find_peer(cm, id);
    return p ? &p->pub : NULL;
}

const struct vv_connmgr_peer *vv_connmgr_peer_at(const struct vv_connmgr *cm, uint32_t i)
{
    return i < cm->n_peers ? &cm->peers[i].pub : NULL;
}

const struct vv_connmgr_stats *vv_connmgr_stats(const struct vv_connmgr *cm)
{
    return &cm->stats;
}

uint32_t vv_connmgr_select(const struct vv_connmgr *cm, uint32_t caps, const char *region,
                           int32_t min_reputation, const struct vv_connmgr_peer **out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < cm->n_peers && n < max; i++) {
        const struct vv_connmgr_peer *p = &cm->peers[i].pub;
        if (!p->connected || (p->capabilities & caps) != caps || p->reputation < min_reputation)
            continue;
        if (region != NULL && strcmp(p->region, region) != 0)
            continue;
        out[n++] = p;
    }
    return n;
}
