/*
 * The DHT node (vivim/dht.h): the protocol core of dht_core.h, dht_msg.h and dht_lookup.h
 * wired to one vv_env. It owns the routing table, the verified-contact cache, the lookups
 * running and one context per request of its own in flight (struct req, on one list, so
 * vv_dht_node_free can cancel and free them all). It acts only through vv_env: requests by
 * datagram through the request layer, signature checks through vv_env_verify_async, time and
 * randomness from the env; it never calls libuv, so the simulator runs it as it is.
 *
 * Who enters the table: only a contact whose PONG to our PING from its address carried a
 * valid signature of (domain, our nonce, our ID) by the key whose SHA-256 is its ID. A
 * request served or an answer to a lookup from a contact not yet proven starts such a PING
 * (at most VV_DHT_MAX_PENDING_PINGS at once); one already proven at that address is
 * refreshed at once (its answers carry the measured RTT).
 */
#include <msgpack.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/dht.h"
#include "vivim/dht_msg.h"
#include "vivim/env_request.h"
#include "vivim/env_verify.h"
#include "vivim/wire.h"

/* Connected peers remembered until their address is known; more are not remembered. */
#define VV_DHT_WAITING_PEERS 32

/* A request id as large as the layer may choose (9 bytes encoded), so that a frame encoded
 * here to measure it is never shorter than the one the layer sends. */
#define WIDEST_REQUEST_ID UINT64_MAX

enum req_kind {
    REQ_PING_USER,    /* vv_dht_node_ping: cb */
    REQ_PING_CONTACT, /* verification of a candidate: offered to the table if it proves */
    REQ_PING_EVICT,   /* the oldest entry of a full bucket: ping_result */
    REQ_FIND_NODE,    /* a lookup's query */
};

struct lookup;

struct req {
    struct vv_dht_node *d;
    enum req_kind kind;
    uint64_t id; /* the request layer's */
    uint8_t nonce[VV_DHT_NONCE_BYTES];
    uint8_t peer[VV_DHT_ID_BYTES]; /* expected ID */
    bool has_peer;
    char address[VV_ENV_ADDRESS_BYTES];
    uint64_t sent_ms;
    uint64_t verify_id; /* a signature check in progress, 0 none */
    /* From the answer, kept while the signature is checked. */
    uint8_t answer_id[VV_DHT_ID_BYTES];
    uint32_t rtt_ms;
    /* REQ_PING_USER */
    vv_dht_ping_cb cb;
    void *cb_arg;
    /* REQ_FIND_NODE: the lookup by serial (it may have ended before the answer came) */
    uint64_t lookup_serial;
    struct req *prev, *next;
};

struct lookup {
    struct vv_dht_node *d;
    uint64_t serial;
    struct vv_dht_lookup *l;
    uint8_t target[VV_DHT_ID_BYTES];
    const char *kind;
    uint64_t start_ms;
    uint64_t timer;    /* wake at the next soft deadline, 0 none */
    uint64_t timer_at; /* when it fires */
    vv_dht_find_cb cb;
    void *cb_arg;
    /* RTTs measured in this lookup, by contact (closest, small list) */
    struct vv_dht_contact rtt_c[VV_DHT_LOOKUP_MAX_CANDIDATES];
    uint16_t rtt_v[VV_DHT_LOOKUP_MAX_CANDIDATES];
    size_t n_rtt;
    struct lookup *next;
};

struct vv_dht_node {
    struct vv_env *env;
    struct vv_dht_node_config cfg;
    struct vv_dht_node_hooks hooks;
    uint8_t self[VV_DHT_ID_BYTES];
    struct vv_dht_rt *rt;
    struct vv_dht_verified *verified;
    struct vv_dht_rtt rtt;
    struct req *reqs;
    uint32_t n_pings; /* REQ_PING_* in flight */
    struct lookup *lookups;
    uint32_t n_lookups;
    uint64_t next_serial;
    uint64_t tick;    /* maintenance timer */
    bool joined;      /* a self-lookup was started */
    bool refresh_all; /* after the self-lookup: refresh every bucket once */
    /* Connected peers whose address was not known yet at "up" (an inbound connection's
     * listen address comes with its HELLO, after "up"): asked again at each tick. */
    uint8_t waiting[VV_DHT_WAITING_PEERS][VV_DHT_ID_BYTES];
    uint32_t n_waiting;
    struct vv_dht_node_stats stats;
};

void vv_dht_node_config_defaults(struct vv_dht_node_config *c)
{
    c->k = VV_DHT_K;
    c->alpha = 3;
    c->paths = 1;
    c->max_timeout_ms = 2000;
    c->refresh_ms = 15 * 60 * 1000;
    c->max_verified = 4096;
}

/* ---- small helpers --------------------------------------------------------------------- */

static void hook_rpc(struct vv_dht_node *d, uint16_t type, bool in)
{
    if (d->hooks.rpc)
        d->hooks.rpc(d->hooks.arg, type, in);
}

static int addr_of(const char *s, struct vv_dht_addr *a)
{
    return vv_dht_addr_parse(s, strlen(s), a);
}

static uint16_t rtt16(uint64_t ms)
{
    return ms == 0 ? 1 : ms > UINT16_MAX ? UINT16_MAX : (uint16_t)ms;
}

/* Packs the body of the request rq (encoded by the codec as a whole frame, whose body the
 * request layer wants alone) into sb. */
static int request_body(const struct vv_dht_request *rq, msgpack_sbuffer *sb)
{
    uint8_t frame[VV_DHT_DATAGRAM_MAX_BYTES];
    size_t len;
    int rc = vv_dht_request_encode(rq, WIDEST_REQUEST_ID, frame, sizeof(frame), &len);
    if (rc != 0)
        return rc;
    struct vv_wire_frame f;
    rc = vv_wire_decode(frame, len, &f);
    if (rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, f.body);
    }
    vv_wire_frame_free(&f);
    return rc;
}

/* The length of a frame of this type, id and body, as the peer sent it (re-encoded). */
static size_t frame_len(uint16_t type, const msgpack_object *body)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, 1);
    msgpack_pack_object(&pk, *body);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void req_link(struct vv_dht_node *d, struct req *r)
{
    r->next = d->reqs;
    if (d->reqs)
        d->reqs->prev = r;
    d->reqs = r;
    if (r->kind != REQ_FIND_NODE)
        d->n_pings++;
}

static void req_free(struct req *r)
{
    struct vv_dht_node *d = r->d;
    if (r->prev)
        r->prev->next = r->next;
    else
        d->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->kind != REQ_FIND_NODE)
        d->n_pings--;
    vv_free(r);
}

/* ---- pings and verification ------------------------------------------------------------ */

static void ping_answered(struct vv_env *env, const struct vv_env_answer *a, void *arg);

static int send_ping(struct vv_dht_node *d, enum req_kind kind, const uint8_t *id,
                     const char *address, vv_dht_ping_cb cb, void *cb_arg)
{
    struct req *r = vv_xcalloc(1, sizeof(*r));
    r->d = d;
    r->kind = kind;
    if (id) {
        memcpy(r->peer, id, VV_DHT_ID_BYTES);
        r->has_peer = true;
    }
    if (vv_env_address_canon(address, r->address, sizeof(r->address)) != 0) {
        vv_free(r);
        return VV_EDHT_ADDRESS;
    }
    r->cb = cb;
    r->cb_arg = cb_arg;
    struct vv_dht_request rq = {.type = VV_DHT_MSG_PING};
    vv_env_random(d->env, rq.target, sizeof(rq.target));
    memcpy(r->nonce, rq.target, sizeof(r->nonce));
    /* Padded so that a node that has not verified us may answer in full (dht_msg.h). */
    rq.pad_len = VV_DHT_PING_MIN_BYTES;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = request_body(&rq, &sb);
    if (rc == 0)
        rc = vv_env_request_datagram(d->env, id, r->address, VV_DHT_MSG_PING,
                                     (const uint8_t *)sb.data, sb.size, d->cfg.max_timeout_ms,
                                     ping_answered, r, &r->id);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        vv_free(r);
        return rc;
    }
    r->sent_ms = vv_env_now(d->env);
    req_link(d, r);
    d->stats.pings_sent++;
    hook_rpc(d, VV_DHT_MSG_PING, false);
    return 0;
}

static void start_self_lookup(struct vv_dht_node *d);

/* A proven contact: into the table, with what the table asks for. */
static void offer(struct vv_dht_node *d, const uint8_t *id, const struct vv_dht_addr *addr,
                  uint32_t rtt_ms)
{
    uint64_t now = vv_env_now(d->env);
    struct vv_dht_contact c;
    memcpy(c.id, id, VV_DHT_ID_BYTES);
    c.addr = *addr;
    struct vv_dht_offer_result res;
    vv_dht_rt_offer(d->rt, &c, now, &res);
    if (res.outcome == VV_DHT_OFFER_ADDED || res.outcome == VV_DHT_OFFER_UPDATED)
        vv_dht_rt_seen(d->rt, id, rtt_ms, now);
    if (res.outcome == VV_DHT_OFFER_NEEDS_PING) {
        char s[VV_DHT_ADDR_STR_BYTES];
        if (vv_dht_addr_format(&res.ping.addr, s, sizeof(s)) == 0 &&
            send_ping(d, REQ_PING_EVICT, res.ping.id, s, NULL, NULL) != 0)
            vv_dht_rt_ping_result(d->rt, res.ping.id, false, now, NULL);
    }
    if (!d->joined && vv_dht_rt_size(d->rt) > 0)
        start_self_lookup(d);
}

/* The end of a ping: status 0 with the proven id, or an error. */
static void ping_done(struct req *r, int status, const uint8_t *id, bool verified_now)
{
    struct vv_dht_node *d = r->d;
    uint64_t now = vv_env_now(d->env);
    struct vv_dht_addr addr;
    bool addr_ok = addr_of(r->address, &addr) == 0;
    if (status == 0 && addr_ok) {
        offer(d, id, &addr, r->rtt_ms);
    } else if (r->has_peer && vv_dht_rt_find(d->rt, r->peer, NULL) == 0) {
        if (r->kind == REQ_PING_EVICT)
            vv_dht_rt_ping_result(d->rt, r->peer, false, now, NULL);
        else
            vv_dht_rt_failed(d->rt, r->peer, now, NULL);
    }
    if (r->kind == REQ_PING_USER && r->cb)
        r->cb(r->cb_arg, status, status == 0 ? id : NULL, r->address, r->rtt_ms, verified_now);
    req_free(r);
}

static void pong_verified(struct vv_env *env, bool ok, void *arg)
{
    (void)env;
    struct req *r = arg;
    struct vv_dht_node *d = r->d;
    r->verify_id = 0;
    struct vv_dht_addr addr;
    if (!ok || addr_of(r->address, &addr) != 0) {
        d->stats.pongs_bad++;
        ping_done(r, VV_EDHT_SIGNATURE, NULL, false);
        return;
    }
    d->stats.pongs_verified++;
    vv_dht_verified_add(d->verified, r->answer_id, &addr, vv_env_now(d->env));
    ping_done(r, 0, r->answer_id, true);
}

static void ping_answered(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    struct req *r = arg;
    struct vv_dht_node *d = r->d;
    r->id = 0;
    if (a->status != 0) {
        if (a->status == VV_EREQ_TIMEOUT) {
            d->stats.timeouts++;
            if (d->hooks.timeout)
                d->hooks.timeout(d->hooks.arg);
        }
        ping_done(r, a->status, NULL, false);
        return;
    }
    struct vv_dht_reply rep;
    if (vv_dht_reply_decode(VV_DHT_MSG_PING, &a->reply->body, &rep) != 0) {
        d->stats.pongs_bad++;
        ping_done(r, VV_EDHT_MALFORMED, NULL, false);
        return;
    }
    vv_dht_id_from_pk(rep.pk, r->answer_id);
    r->rtt_ms = rtt16(a->elapsed_ms);
    vv_dht_rtt_sample(&d->rtt, r->rtt_ms);
    if ((r->has_peer && memcmp(r->answer_id, r->peer, VV_DHT_ID_BYTES) != 0) ||
        memcmp(r->answer_id, d->self, VV_DHT_ID_BYTES) == 0) {
        d->stats.pongs_bad++;
        ping_done(r, VV_EDHT_SIGNATURE, NULL, false);
        return;
    }
    struct vv_dht_addr addr;
    if (addr_of(r->address, &addr) == 0 &&
        vv_dht_verified_has(d->verified, r->answer_id, &addr, vv_env_now(env))) {
        ping_done(r, 0, r->answer_id, false);
        return;
    }
    uint8_t msg[VV_DHT_PING_SIGNED_BYTES];
    vv_dht_pong_signed_bytes(r->nonce, d->self, msg);
    int rc = vv_env_verify_async(env, VV_CHANNEL_DHT, rep.pk, msg, sizeof(msg), rep.sig,
                                 pong_verified, r, &r->verify_id);
    if (rc != 0)
        ping_done(r, rc, NULL, false);
}

/* A contact that spoke to us or answered a query, not proven at this address yet: verify it
 * when there is room; if it is in the table already at this address, it was seen now. */
static void candidate(struct vv_dht_node *d, const uint8_t *id, const char *address,
                      uint32_t rtt_ms)
{
    if (memcmp(id, d->self, VV_DHT_ID_BYTES) == 0)
        return;
    struct vv_dht_addr addr;
    if (addr_of(address, &addr) != 0)
        return;
    uint64_t now = vv_env_now(d->env);
    struct vv_dht_rt_entry e;
    if (vv_dht_rt_find(d->rt, id, &e) == 0 && vv_dht_addr_equal(&e.c.addr, &addr)) {
        vv_dht_rt_seen(d->rt, id, rtt_ms, now);
        return;
    }
    if (vv_dht_verified_has(d->verified, id, &addr, now)) {
        offer(d, id, &addr, rtt_ms);
        return;
    }
    for (struct req *r = d->reqs; r; r = r->next)
        if (r->kind != REQ_FIND_NODE &&
            ((r->has_peer && memcmp(r->peer, id, VV_DHT_ID_BYTES) == 0) ||
             strcmp(r->address, address) == 0))
            return; /* a ping is out already (a bootstrap ping names only the address) */
    if (d->n_pings >= VV_DHT_MAX_PENDING_PINGS) {
        d->stats.pings_skipped++;
        return;
    }
    send_ping(d, REQ_PING_CONTACT, id, address, NULL, NULL);
}

int vv_dht_node_ping(struct vv_dht_node *d, const uint8_t *id, const char *address,
                     vv_dht_ping_cb cb, void *arg)
{
    return send_ping(d, REQ_PING_USER, id, address, cb, arg);
}

int vv_dht_node_bootstrap(struct vv_dht_node *d, const char *address)
{
    if (d->n_pings >= VV_DHT_MAX_PENDING_PINGS)
        return VV_EBUSY;
    return send_ping(d, REQ_PING_CONTACT, NULL, address, NULL, NULL);
}

void vv_dht_node_peer_up(struct vv_dht_node *d, const uint8_t id[VV_DHT_ID_BYTES])
{
    char address[VV_ENV_ADDRESS_BYTES];
    if (d->hooks.peer_address == NULL)
        return;
    if (d->hooks.peer_address(d->hooks.arg, id, address, sizeof(address)) == 0) {
        candidate(d, id, address, 0);
        return;
    }
    for (uint32_t i = 0; i < d->n_waiting; i++)
        if (memcmp(d->waiting[i], id, VV_DHT_ID_BYTES) == 0)
            return;
    if (d->n_waiting < VV_DHT_WAITING_PEERS)
        memcpy(d->waiting[d->n_waiting++], id, VV_DHT_ID_BYTES);
}

int vv_dht_node_add_candidate(struct vv_dht_node *d, const uint8_t id[VV_DHT_ID_BYTES],
                              const char *address)
{
    char canon[VV_ENV_ADDRESS_BYTES];
    struct vv_dht_addr addr;
    if (vv_env_address_canon(address, canon, sizeof(canon)) != 0 || addr_of(canon, &addr) != 0)
        return VV_EDHT_ADDRESS;
    if (vv_dht_rt_find(d->rt, id, NULL) == 0)
        return 0; /* in the table: its own answers keep it fresh, an old claim must not */
    if (d->n_pings >= VV_DHT_MAX_PENDING_PINGS)
        return VV_EBUSY;
    candidate(d, id, canon, 0);
    return 0;
}

/* Peers that came up before their address was known: tried once more, then forgotten. */
static void retry_waiting(struct vv_dht_node *d)
{
    uint32_t n = d->n_waiting;
    uint8_t ids[VV_DHT_WAITING_PEERS][VV_DHT_ID_BYTES];
    memcpy(ids, d->waiting, (size_t)n * VV_DHT_ID_BYTES);
    d->n_waiting = 0;
    for (uint32_t i = 0; i < n; i++) {
        char address[VV_ENV_ADDRESS_BYTES];
        if (d->hooks.peer_address(d->hooks.arg, ids[i], address, sizeof(address)) == 0)
            candidate(d, ids[i], address, 0);
    }
}

/* ---- serving ------------------------------------------------------------------------- */

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *request, void *arg)
{
    struct vv_dht_node *d = arg;
    uint16_t type = request->h.type;
    /* Copied: the layer frees it with ctx, when we answer. */
    char source_buf[VV_ENV_ADDRESS_BYTES];
    const char *source = vv_env_request_source(env, ctx);
    if (source != NULL) {
        vv_strlcpy(source_buf, source, sizeof(source_buf));
        source = source_buf;
    }
    struct vv_dht_request rq;
    int rc = vv_dht_request_decode(type, &request->body, &rq);
    if (rc == VV_EWIRE_UNKNOWN_TYPE) {
        d->stats.served_unsupported++;
        vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, NULL);
        return;
    }
    if (rc != 0) {
        d->stats.served_bad++;
        vv_env_reply_error(env, ctx, VV_REQ_ERR_BAD_REQUEST, "malformed DHT request");
        return;
    }
    d->stats.served[type - VV_DHT_MSG_PING]++;
    hook_rpc(d, type, true);
    if (type != VV_DHT_MSG_PING && type != VV_DHT_MSG_FIND_NODE) {
        d->stats.served_unsupported++;
        vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, "not supported yet");
        return;
    }
    struct vv_dht_addr from;
    bool has_from = source != NULL && addr_of(source, &from) == 0;
    uint64_t now = vv_env_now(env);
    bool verified = !source || (has_from && vv_dht_verified_has(d->verified, peer, &from, now));
    size_t budget = source ? vv_dht_reply_budget(frame_len(type, &request->body), verified)
                           : VV_DHT_DATAGRAM_MAX_BYTES;
    struct vv_dht_reply *rep = vv_xcalloc(1, sizeof(*rep));
    rep->type = type;
    if (type == VV_DHT_MSG_PING) {
        if (!has_from) {
            /* Over a connection the session already proved both IDs; and the PONG's
             * `observed` needs a datagram's source address. */
            vv_free(rep);
            vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, "PING only by datagram");
            return;
        }
        memcpy(rep->pk, env->identity->public_key, VV_DHT_PK_BYTES);
        vv_dht_pong_sign(rq.target, peer, env->identity->secret_key, rep->sig);
        rep->observed = from;
    } else {
        rep->n_nodes =
            vv_dht_rt_closest(d->rt, rq.target, VV_MIN(d->cfg.k, VV_DHT_MAX_NODES), rep->nodes);
    }
    uint8_t *out = vv_xmalloc(VV_DHT_DATAGRAM_MAX_BYTES);
    size_t len;
    rc = vv_dht_reply_encode(rep, WIDEST_REQUEST_ID, budget, out, VV_DHT_DATAGRAM_MAX_BYTES, &len,
                             NULL);
    if (rc == 0) {
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
    } else {
        /* Not even an empty answer fits twice the request: an unpadded PING. */
        vv_env_reply_error(env, ctx, VV_DHT_ANSWER_TOO_LARGE, "pad the request");
    }
    vv_free(out);
    vv_free(rep);
    /* Whoever asks us is a candidate for our table too (it still has to prove its ID). */
    if (source)
        candidate(d, peer, source, 0);
}

/* ---- lookups ------------------------------------------------------------------------- */

static void lookup_drive(struct lookup *lk);

static struct lookup *lookup_by_serial(struct vv_dht_node *d, uint64_t serial)
{
    for (struct lookup *lk = d->lookups; lk; lk = lk->next)
        if (lk->serial == serial)
            return lk;
    return NULL;
}

static void lookup_free(struct lookup *lk)
{
    struct vv_dht_node *d = lk->d;
    for (struct lookup **pp = &d->lookups; *pp; pp = &(*pp)->next)
        if (*pp == lk) {
            *pp = lk->next;
            d->n_lookups--;
            break;
        }
    vv_env_timer_cancel(d->env, lk->timer);
    vv_dht_lookup_free(lk->l);
    vv_free(lk);
}

static void lookup_finish(struct lookup *lk, int status)
{
    struct vv_dht_node *d = lk->d;
    struct vv_dht_find_result *res = vv_xcalloc(1, sizeof(*res));
    res->status = status;
    res->n = vv_dht_lookup_closest(lk->l, res->closest, VV_MIN(d->cfg.k, VV_DHT_K));
    for (size_t i = 0; i < res->n; i++)
        for (size_t j = 0; j < lk->n_rtt; j++)
            if (memcmp(lk->rtt_c[j].id, res->closest[i].id, VV_DHT_ID_BYTES) == 0)
                res->rtt_ms[i] = lk->rtt_v[j];
    res->hops = vv_dht_lookup_hops(lk->l);
    res->elapsed_ms = vv_env_now(d->env) - lk->start_ms;
    res->stats = *vv_dht_lookup_stats(lk->l);
    bool ok = status == 0 && res->n > 0;
    d->stats.lookups++;
    if (!ok)
        d->stats.lookups_failed++;
    if (d->hooks.lookup)
        d->hooks.lookup(d->hooks.arg, lk->kind, ok ? "ok" : "failed", res->hops, res->elapsed_ms);
    const char *kind = lk->kind;
    vv_dht_find_cb cb = lk->cb;
    void *cb_arg = lk->cb_arg;
    lookup_free(lk);
    if (cb)
        cb(cb_arg, res);
    vv_free(res);
    /* The join's self-lookup ended: every bucket gets one refresh, as Kademlia's join does,
     * so that the far buckets fill too. */
    if (strcmp(kind, "self") == 0)
        d->refresh_all = true;
}

static void query_answered(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    struct req *r = arg;
    struct vv_dht_node *d = r->d;
    uint64_t now = vv_env_now(env);
    struct lookup *lk = lookup_by_serial(d, r->lookup_serial);
    struct vv_dht_reply *rep = NULL;
    if (a->status == 0) {
        rep = vv_xmalloc(sizeof(*rep));
        if (vv_dht_reply_decode(VV_DHT_MSG_FIND_NODE, &a->reply->body, rep) != 0) {
            vv_free(rep);
            rep = NULL;
        }
    }
    if (rep != NULL) {
        d->stats.queries_answered++;
        uint32_t rtt = rtt16(a->elapsed_ms);
        vv_dht_rtt_sample(&d->rtt, rtt);
        if (lk) {
            vv_dht_lookup_answered(lk->l, r->peer, now, rep->nodes, rep->n_nodes);
            if (lk->n_rtt < VV_DHT_LOOKUP_MAX_CANDIDATES) {
                memcpy(lk->rtt_c[lk->n_rtt].id, r->peer, VV_DHT_ID_BYTES);
                lk->rtt_v[lk->n_rtt++] = (uint16_t)rtt;
            }
        }
        candidate(d, r->peer, r->address, rtt);
        vv_free(rep);
    } else {
        d->stats.queries_failed++;
        if (a->status == VV_EREQ_TIMEOUT) {
            d->stats.timeouts++;
            if (d->hooks.timeout)
                d->hooks.timeout(d->hooks.arg);
        }
        if (lk)
            vv_dht_lookup_failed(lk->l, r->peer, now);
        if (vv_dht_rt_find(d->rt, r->peer, NULL) == 0)
            vv_dht_rt_failed(d->rt, r->peer, now, NULL);
    }
    req_free(r);
    if (lk)
        lookup_drive(lk);
}

static void lookup_wake(struct vv_env *env, void *arg)
{
    (void)env;
    struct lookup *lk = arg;
    lk->timer = 0;
    lookup_drive(lk);
}

static int send_query(struct lookup *lk, const struct vv_dht_lookup_query *q)
{
    struct vv_dht_node *d = lk->d;
    struct req *r = vv_xcalloc(1, sizeof(*r));
    r->d = d;
    r->kind = REQ_FIND_NODE;
    memcpy(r->peer, q->to.id, VV_DHT_ID_BYTES);
    r->has_peer = true;
    r->lookup_serial = lk->serial;
    if (vv_dht_addr_format(&q->to.addr, r->address, sizeof(r->address)) != 0) {
        vv_free(r);
        return VV_EDHT_ADDRESS;
    }
    struct vv_dht_request rq = {.type = VV_DHT_MSG_FIND_NODE};
    memcpy(rq.target, lk->target, VV_DHT_ID_BYTES);
    /* Padded unless the node verified us long ago is not known here: a FIND_NODE answer of
     * 20 contacts is about 850 bytes, so the request is padded to half of that, which any
     * node may answer in full (no amplification). */
    rq.pad_len = 440;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = request_body(&rq, &sb);
    if (rc == 0)
        rc = vv_env_request_datagram(d->env, r->peer, r->address, VV_DHT_MSG_FIND_NODE,
                                     (const uint8_t *)sb.data, sb.size, q->hard_timeout_ms,
                                     query_answered, r, &r->id);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        vv_free(r);
        return rc;
    }
    r->sent_ms = vv_env_now(d->env);
    req_link(d, r);
    d->stats.queries_sent++;
    hook_rpc(d, VV_DHT_MSG_FIND_NODE, false);
    return 0;
}

static void lookup_drive(struct lookup *lk)
{
    struct vv_dht_node *d = lk->d;
    for (;;) {
        struct vv_dht_lookup_query q[16];
        uint64_t now = vv_env_now(d->env);
        size_t n = vv_dht_lookup_next(lk->l, now, q, 16);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++)
            if (send_query(lk, &q[i]) != 0)
                vv_dht_lookup_failed(lk->l, q[i].to.id, now);
    }
    if (vv_dht_lookup_done(lk->l)) {
        lookup_finish(lk, 0);
        return;
    }
    uint64_t at = vv_dht_lookup_wake_at(lk->l);
    if (at == UINT64_MAX || (lk->timer != 0 && lk->timer_at == at))
        return;
    vv_env_timer_cancel(d->env, lk->timer);
    uint64_t now = vv_env_now(d->env);
    lk->timer_at = at;
    lk->timer = vv_env_timer_start(d->env, at > now ? at - now : 0, 0, lookup_wake, lk);
}

static int lookup_start(struct vv_dht_node *d, const uint8_t *target, const char *kind,
                        vv_dht_find_cb cb, void *arg)
{
    if (d->n_lookups >= VV_DHT_MAX_LOOKUPS)
        return VV_EBUSY;
    struct vv_dht_contact seeds[VV_DHT_K];
    size_t n = vv_dht_rt_closest(d->rt, target, VV_DHT_K, seeds);
    if (n == 0)
        return VV_ENOTFOUND;
    uint16_t rtts[VV_DHT_K];
    for (size_t i = 0; i < n; i++) {
        struct vv_dht_rt_entry e;
        rtts[i] = vv_dht_rt_find(d->rt, seeds[i].id, &e) == 0 ? e.rtt_ms : 0;
    }
    struct vv_dht_lookup_config lc;
    vv_dht_lookup_config_defaults(&lc);
    lc.k = VV_MIN(d->cfg.k, VV_DHT_K);
    lc.alpha = d->cfg.alpha;
    lc.paths = d->cfg.paths;
    lc.max_timeout_ms = d->cfg.max_timeout_ms;
    lc.min_timeout_ms = VV_DHT_MIN_SOFT_TIMEOUT_MS;
    if (lc.min_timeout_ms > lc.max_timeout_ms)
        lc.min_timeout_ms = lc.max_timeout_ms;
    struct lookup *lk = vv_xcalloc(1, sizeof(*lk));
    lk->d = d;
    lk->serial = ++d->next_serial;
    memcpy(lk->target, target, VV_DHT_ID_BYTES);
    lk->kind = kind;
    lk->cb = cb;
    lk->cb_arg = arg;
    lk->start_ms = vv_env_now(d->env);
    lk->l = vv_dht_lookup_new(target, d->self, &lc, &d->rtt);
    vv_dht_lookup_seed(lk->l, seeds, rtts, n);
    lk->next = d->lookups;
    d->lookups = lk;
    d->n_lookups++;
    unsigned b = vv_dht_common_prefix(d->self, target);
    if (b < VV_DHT_ID_BITS)
        vv_dht_rt_touch_bucket(d->rt, b, lk->start_ms);
    /* Driven from a 0 ms timer, so a callback never fires from within the call. */
    lk->timer_at = lk->start_ms;
    lk->timer = vv_env_timer_start(d->env, 0, 0, lookup_wake, lk);
    return 0;
}

int vv_dht_node_find_node(struct vv_dht_node *d, const uint8_t target[VV_DHT_ID_BYTES],
                          vv_dht_find_cb cb, void *arg)
{
    return lookup_start(d, target, "find_node", cb, arg);
}

static void start_self_lookup(struct vv_dht_node *d)
{
    if (lookup_start(d, d->self, "self", NULL, NULL) == 0)
        d->joined = true;
}

int vv_dht_node_refresh_bucket(struct vv_dht_node *d, unsigned index)
{
    if (index >= VV_DHT_ID_BITS)
        return VV_EINVAL;
    uint8_t rnd[VV_DHT_ID_BYTES], target[VV_DHT_ID_BYTES];
    vv_env_random(d->env, rnd, sizeof(rnd));
    vv_dht_id_in_bucket(d->self, index, rnd, target);
    return lookup_start(d, target, "refresh", NULL, NULL);
}

/* ---- maintenance ----------------------------------------------------------------------- */

static void tick(struct vv_env *env, void *arg)
{
    struct vv_dht_node *d = arg;
    uint64_t now = vv_env_now(env);
    if (d->n_waiting > 0)
        retry_waiting(d);
    if (vv_dht_rt_size(d->rt) == 0)
        return;
    uint8_t idx[VV_DHT_ID_BITS];
    size_t n;
    if (d->refresh_all) {
        /* Every bucket up to one past the deepest non-empty one, once: as if all were idle. */
        n = vv_dht_rt_idle_buckets(d->rt, now + d->cfg.refresh_ms, d->cfg.refresh_ms, idx);
        d->refresh_all = false;
    } else {
        n = vv_dht_rt_idle_buckets(d->rt, now, d->cfg.refresh_ms, idx);
    }
    uint32_t started = 0;
    for (size_t i = 0; i < n && started < VV_DHT_REFRESH_PER_TICK; i++)
        if (vv_dht_node_refresh_bucket(d, idx[i]) == 0)
            started++;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void on_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    if (up)
        vv_dht_node_peer_up(arg, peer);
}

struct vv_dht_node *vv_dht_node_new(struct vv_env *env, const struct vv_dht_node_config *cfg,
                                    const struct vv_dht_node_hooks *hooks)
{
    struct vv_dht_node *d = vv_xcalloc(1, sizeof(*d));
    d->env = env;
    if (cfg)
        d->cfg = *cfg;
    else
        vv_dht_node_config_defaults(&d->cfg);
    if (hooks)
        d->hooks = *hooks;
    memcpy(d->self, env->identity->node_id, VV_DHT_ID_BYTES);
    d->rt = vv_dht_rt_new(d->self);
    d->verified = vv_dht_verified_new(d->cfg.max_verified, VV_DHT_VERIFIED_MAX_AGE_MS);
    vv_env_set_server(env, VV_CHANNEL_DHT, serve, d);
    vv_env_set_channel(env, VV_CHANNEL_DHT, NULL, on_peer, d);
    uint64_t period = VV_MIN((uint64_t)VV_DHT_TICK_MS, d->cfg.refresh_ms);
    d->tick = vv_env_timer_start(env, period, period, tick, d);
    return d;
}

void vv_dht_node_reconfigure(struct vv_dht_node *d, const struct vv_dht_node_config *cfg)
{
    uint32_t max_verified = d->cfg.max_verified;
    uint32_t refresh = d->cfg.refresh_ms;
    d->cfg = *cfg;
    d->cfg.max_verified = max_verified; /* the cache is sized once */
    if (refresh != cfg->refresh_ms) {
        vv_env_timer_cancel(d->env, d->tick);
        uint64_t period = VV_MIN((uint64_t)VV_DHT_TICK_MS, d->cfg.refresh_ms);
        d->tick = vv_env_timer_start(d->env, period, period, tick, d);
    }
}

void vv_dht_node_free(struct vv_dht_node *d)
{
    if (d == NULL)
        return;
    vv_env_set_server(d->env, VV_CHANNEL_DHT, NULL, NULL);
    vv_env_set_channel(d->env, VV_CHANNEL_DHT, NULL, NULL, NULL);
    vv_env_request_cancel_channel(d->env, VV_CHANNEL_DHT);
    vv_env_verify_cancel_channel(d->env, VV_CHANNEL_DHT);
    vv_env_timer_cancel(d->env, d->tick);
    while (d->lookups)
        lookup_finish(d->lookups, VV_ENODE_SHUTTING_DOWN);
    while (d->reqs) {
        struct req *r = d->reqs;
        if (r->kind == REQ_PING_USER && r->cb)
            r->cb(r->cb_arg, VV_ENODE_SHUTTING_DOWN, NULL, r->address, 0, false);
        req_free(r);
    }
    vv_dht_verified_free(d->verified);
    vv_dht_rt_free(d->rt);
    vv_free(d);
}

const struct vv_dht_rt *vv_dht_node_table(const struct vv_dht_node *d)
{
    return d->rt;
}

size_t vv_dht_node_verified_count(const struct vv_dht_node *d)
{
    return vv_dht_verified_count(d->verified);
}

const struct vv_dht_node_stats *vv_dht_node_stats(const struct vv_dht_node *d)
{
    return &d->stats;
}

uint32_t vv_dht_node_lookups_running(const struct vv_dht_node *d)
{
    return d->n_lookups;
}

uint32_t vv_dht_node_srtt_ms(const struct vv_dht_node *d)
{
    return d->rtt.measured ? d->rtt.srtt_ms : 0;
}
