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
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/dht.h"
#include "vivim/dht_msg.h"
#include "vivim/env_request.h"
#include "vivim/env_verify.h"
#include "vivim/wire.h"

/* Stored records examined for expiry per maintenance tick (each store): about a
 * millisecond; a full provider store of a million entries is swept in under an hour. */
#define VV_DHT_EXPIRE_PER_TICK 8192

/* Connected peers remembered until their address is known; more are not remembered. */
#define VV_DHT_WAITING_PEERS 32

/* A request id as large as the layer may choose (9 bytes encoded), so that a frame encoded
 * here to measure it is never shorter than the one the layer sends. */
#define WIDEST_REQUEST_ID UINT64_MAX

enum req_kind {
    REQ_PING_USER,    /* vv_dht_node_ping: cb */
    REQ_PING_CONTACT, /* verification of a candidate: offered to the table if it proves */
    REQ_PING_EVICT,   /* the oldest entry of a full bucket: ping_result */
    REQ_QUERY,        /* a lookup's query: FIND_NODE, GET_VALUE or GET_PROVIDERS */
    REQ_STORE,        /* a publish's PUT_VALUE or ADD_PROVIDER to one node */
};

struct lookup;
struct store_op;

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
    struct vv_dht_addr observed; /* our address as the PONG saw it */
    bool has_observed;
    /* REQ_PING_USER */
    vv_dht_ping_cb cb;
    void *cb_arg;
    /* REQ_QUERY: the lookup by serial (it may have ended before the answer came) */
    uint64_t lookup_serial;
    uint16_t qtype;
    /* REQ_STORE */
    struct store_op *op;
    struct req *prev, *next;
};

/* A value a GET lookup collected: one per publisher, the highest seq seen, kept once its
 * signature verified. */
struct got_value {
    struct lookup *lk;
    struct vv_dht_value v; /* v.value points at bytes */
    uint8_t *bytes;
    uint64_t verify_id; /* a check in progress, 0 none */
    bool ok;            /* verified */
};

/* A publish: its lookup, then one store request per chosen node. */
struct store_op {
    struct vv_dht_node *d;
    uint16_t type; /* PUT_VALUE or ADD_PROVIDER */
    uint8_t key[VV_DHT_ID_BYTES];
    struct vv_dht_value v; /* PUT_VALUE, signed; v.value points at bytes */
    uint8_t *bytes;
    struct vv_dht_content_record rec; /* ADD_PROVIDER; strings point at cid, ctype */
    char cid[VV_DHT_CONTENT_ID_MAX], ctype[VV_DHT_CONTENT_TYPE_MAX];
    uint8_t ppk[VV_DHT_PK_BYTES], psig[VV_DHT_SIG_BYTES];
    uint32_t outstanding, stored, tried, hops;
    uint64_t start_ms;
    vv_dht_store_cb cb;
    void *cb_arg;
};

/* A request over a connection (a value too large for a datagram): sent when the peer is
 * connected, which the connection manager is asked for (tag "dht") if it is not. */
enum conn_kind { CONN_PUT, CONN_FETCH };
struct conn_req {
    struct vv_dht_node *d;
    enum conn_kind kind;
    uint8_t peer[VV_DHT_ID_BYTES];
    uint16_t type;
    uint8_t *body;
    size_t len;
    struct store_op *op;    /* CONN_PUT */
    uint64_t lookup_serial; /* CONN_FETCH */
    uint64_t timer;         /* waiting for the connection, 0 none */
    uint64_t req_id;        /* in flight, 0 none */
    bool tagged;            /* we asked the connection manager for the peer */
    struct conn_req *prev, *next;
};

/* One of this node's own records (dht.h, "this node's own records"). */
struct own {
    uint16_t type; /* PUT_VALUE or ADD_PROVIDER */
    uint8_t key[VV_DHT_ID_BYTES];
    uint8_t *body; /* the request's encoded body, token zeros */
    size_t body_len;
    uint64_t expires_ms; /* wall clock */
    uint64_t due_ms;     /* monotonic: the next republish */
};

/* A PUT_VALUE or ADD_PROVIDER served, waiting for its signature check. */
struct pending_store {
    struct vv_dht_node *d;
    uint64_t ctx;
    uint16_t type;
    uint8_t key[VV_DHT_ID_BYTES];
    struct vv_dht_value v; /* PUT_VALUE; v.value points at bytes */
    uint8_t *bytes;
    struct vv_dht_content_record rec; /* ADD_PROVIDER */
    char cid[VV_DHT_CONTENT_ID_MAX], ctype[VV_DHT_CONTENT_TYPE_MAX];
    struct vv_dht_contact provider; /* ADD_PROVIDER: the requester, proved by token */
    struct vv_dht_addr source;
    uint64_t verify_id;
    struct pending_store *prev, *next;
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
    uint16_t qtype; /* FIND_NODE, GET_VALUE, GET_PROVIDERS */
    /* The contacts that answered in this lookup: measured RTT and the write token given */
    struct vv_dht_contact rtt_c[VV_DHT_LOOKUP_MAX_CANDIDATES];
    uint16_t rtt_v[VV_DHT_LOOKUP_MAX_CANDIDATES];
    uint8_t tok[VV_DHT_LOOKUP_MAX_CANDIDATES][VV_DHT_TOKEN_BYTES];
    bool has_tok[VV_DHT_LOOKUP_MAX_CANDIDATES];
    size_t n_rtt;
    /* GET_VALUE */
    struct got_value vals[VV_DHT_MAX_VALUES];
    size_t n_vals;
    uint32_t verifying; /* checks of vals in progress */
    uint32_t fetching;  /* values being fetched over connections (answers' omitted) */
    uint32_t n_fetches; /* fetches started */
    uint32_t n_checks;  /* value signature checks started (bounded per lookup) */
    uint32_t omitted;
    /* GET_PROVIDERS */
    struct vv_dht_provider *provs; /* limit entries */
    size_t n_provs;
    uint32_t limit;
    bool has_record;
    struct vv_dht_content_record rec; /* strings point at rec_cid, rec_type */
    char rec_cid[VV_DHT_CONTENT_ID_MAX], rec_type[VV_DHT_CONTENT_TYPE_MAX];
    uint64_t first_ms; /* the first value or provider, ms after start; 0 none */
    bool steered_out;  /* the state machine is done; waiting for value checks */
    bool local_done;   /* this node's own store was consulted */
    bool republish;    /* a region lookup of the republish */
    vv_dht_provider_cb each;
    vv_dht_get_cb get_cb;
    struct store_op *op; /* a publish waiting for this lookup */
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
    /* What this node stores for others, and the secret of its write tokens. */
    struct vv_dht_values *values;
    struct vv_dht_providers *providers;
    struct vv_dht_tokens tokens;
    struct vv_dht_rate *rate; /* requests served by datagram, per source */
    struct conn_req *conns;   /* requests over connections */
    uint32_t n_conns;
    struct pending_store *pending;
    uint32_t n_pending;
    uint64_t last_seq; /* the highest sequence number this node published */
    /* Our address as the last verified PONG saw it (for listing ourselves as a provider in
     * our own store), and whether one came yet. */
    struct vv_dht_addr observed;
    bool has_observed;
    /* Own records, sorted by (key, type); region lookups of the republish running. */
    struct own *own;
    size_t n_own, cap_own;
    uint32_t n_republish;
    struct vv_dht_node_stats stats;
};

const char *const vv_dht_refusal_names[10] = {"token", "stale",     "too_large", "expiry", "quota",
                                              "full",  "signature", "key",       "busy",   "other"};

enum refusal {
    R_TOKEN,
    R_STALE,
    R_TOO_LARGE,
    R_EXPIRY,
    R_QUOTA,
    R_FULL,
    R_SIG,
    R_KEY,
    R_BUSY,
    R_OTHER
};

static enum refusal refusal_of(int err)
{
    switch (err) {
    case VV_EDHT_TOKEN:
        return R_TOKEN;
    case VV_EDHT_STALE_SEQ:
        return R_STALE;
    case VV_EDHT_TOO_LARGE:
        return R_TOO_LARGE;
    case VV_EDHT_EXPIRY:
        return R_EXPIRY;
    case VV_EDHT_QUOTA:
        return R_QUOTA;
    case VV_EDHT_FULL:
        return R_FULL;
    case VV_EDHT_SIGNATURE:
        return R_SIG;
    case VV_EDHT_KEY_MISMATCH:
        return R_KEY;
    case VV_EBUSY:
        return R_BUSY;
    default:
        return R_OTHER;
    }
}

void vv_dht_node_config_defaults(struct vv_dht_node_config *c)
{
    c->k = VV_DHT_K;
    c->alpha = 3;
    c->paths = 1;
    c->max_timeout_ms = 2000;
    c->refresh_ms = 15 * 60 * 1000;
    c->max_verified = 4096;
    c->republish_ms = 60 * 60 * 1000;
    c->rate_per_source = 200;
    c->rate_burst = 400;
    c->max_own = 262144;
    vv_dht_values_config_defaults(&c->values);
    vv_dht_providers_config_defaults(&c->providers);
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
    uint8_t small[VV_DHT_DATAGRAM_MAX_BYTES];
    bool large = rq->type == VV_DHT_MSG_PUT_VALUE && rq->value.len > VV_DHT_PUT_MAX_BYTES;
    size_t cap = large ? VV_DHT_VALUE_MAX_BYTES + 1024 : sizeof(small);
    uint8_t *frame = large ? vv_xmalloc(cap) : small;
    size_t len;
    int rc = vv_dht_request_encode(rq, WIDEST_REQUEST_ID, frame, cap, &len);
    if (rc != 0) {
        if (frame != small)
            vv_free(frame);
        return rc;
    }
    struct vv_wire_frame f;
    rc = vv_wire_decode(frame, len, &f);
    if (rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, f.body);
    }
    vv_wire_frame_free(&f);
    if (frame != small)
        vv_free(frame);
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
    if (r->kind <= REQ_PING_EVICT)
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
    if (r->kind <= REQ_PING_EVICT)
        d->n_pings--;
    vv_free(r);
}

/* Sends rq by datagram to r's peer and address as the request of r (filled by the caller,
 * not linked yet) and links r; on an error r is freed. The one way the node's own requests
 * by datagram go out: pings, lookup queries and stores. */
static int send_req(struct vv_dht_node *d, struct req *r, const struct vv_dht_request *rq,
                    uint32_t timeout_ms, vv_env_answer_cb cb)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = request_body(rq, &sb);
    if (rc == 0)
        rc = vv_env_request_datagram(d->env, r->has_peer ? r->peer : NULL, r->address, rq->type,
                                     (const uint8_t *)sb.data, sb.size, timeout_ms, cb, r, &r->id);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        vv_free(r);
        return rc;
    }
    r->sent_ms = vv_env_now(d->env);
    req_link(d, r);
    hook_rpc(d, rq->type, false);
    return 0;
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
    int rc = send_req(d, r, &rq, d->cfg.max_timeout_ms, ping_answered);
    if (rc == 0)
        d->stats.pings_sent++;
    return rc;
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
    if (r->has_observed) {
        d->observed = r->observed;
        d->has_observed = true;
    }
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
    r->observed = rep.observed;
    r->has_observed = true;
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
        if (r->kind <= REQ_PING_EVICT &&
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

static void pending_unlink(struct pending_store *ps)
{
    struct vv_dht_node *d = ps->d;
    if (ps->prev)
        ps->prev->next = ps->next;
    else
        d->pending = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    d->n_pending--;
}

static void pending_free(struct pending_store *ps)
{
    vv_free(ps->bytes);
    vv_free(ps);
}

/* Refuses a store: counted by reason, answered with the channel's code. */
static void refuse(struct vv_dht_node *d, uint64_t ctx, uint16_t type, int err, const char *message)
{
    enum refusal why = refusal_of(err);
    d->stats.stores_refused[why]++;
    if (d->hooks.store)
        d->hooks.store(d->hooks.arg, type, vv_dht_refusal_names[why]);
    uint32_t code = err == VV_EBUSY ? VV_REQ_ERR_BUSY : vv_dht_answer_code(err);
    vv_env_reply_error(d->env, ctx, code, message);
}

static void store_verified(struct vv_env *env, bool ok, void *arg)
{
    struct pending_store *ps = arg;
    struct vv_dht_node *d = ps->d;
    ps->verify_id = 0;
    pending_unlink(ps);
    int rc;
    if (!ok) {
        rc = VV_EDHT_SIGNATURE;
    } else if (ps->type == VV_DHT_MSG_PUT_VALUE) {
        rc = vv_dht_values_put(d->values, &ps->v, &ps->source, vv_env_wall_ms(env));
    } else {
        rc = vv_dht_providers_add(d->providers, ps->key, &ps->rec, &ps->provider,
                                  vv_env_wall_ms(env));
    }
    if (rc != 0) {
        refuse(d, ps->ctx, ps->type, rc, vv_strerror(rc));
    } else {
        static const uint8_t msgpack_true = 0xc3;
        d->stats.stores_accepted++;
        if (d->hooks.store)
            d->hooks.store(d->hooks.arg, ps->type, "accepted");
        vv_env_reply(env, ps->ctx, &msgpack_true, 1);
    }
    pending_free(ps);
}

/*
 * PUT_VALUE and ADD_PROVIDER. By datagram the token must prove the source address; over a
 * connection the session proved the requester's ID and its address is the one the connection
 * manager knows it by (no token needed). The cheap checks come first, the signature last, off
 * the loop; the store's own checks run again when the verdict comes (it may have changed).
 */
static void serve_store(struct vv_dht_node *d, uint64_t ctx, const uint8_t *peer,
                        const char *source, const struct vv_dht_request *rq)
{
    uint64_t now = vv_env_now(d->env), wall = vv_env_wall_ms(d->env);
    struct vv_dht_addr src;
    if (source != NULL) {
        if (addr_of(source, &src) != 0) {
            refuse(d, ctx, rq->type, VV_EDHT_ADDRESS, "unusable source address");
            return;
        }
        if (vv_dht_token_check(&d->tokens, &src, now, rq->token, VV_DHT_TOKEN_BYTES) != 0) {
            refuse(d, ctx, rq->type, VV_EDHT_TOKEN, "token missing, wrong or expired");
            return;
        }
    } else {
        char a[VV_ENV_ADDRESS_BYTES];
        if (d->hooks.peer_address == NULL ||
            d->hooks.peer_address(d->hooks.arg, peer, a, sizeof(a)) != 0 || addr_of(a, &src) != 0) {
            refuse(d, ctx, rq->type, VV_EDHT_ADDRESS, "the peer's address is not known");
            return;
        }
    }
    if (d->n_pending >= VV_DHT_MAX_PENDING_STORES) {
        refuse(d, ctx, rq->type, VV_EBUSY, "too many stores in progress");
        return;
    }
    struct pending_store *ps = vv_xcalloc(1, sizeof(*ps));
    ps->d = d;
    ps->ctx = ctx;
    ps->type = rq->type;
    ps->source = src;
    memcpy(ps->key, rq->target, VV_DHT_ID_BYTES);
    uint8_t pmsg[VV_DHT_PROVIDER_SIGNED_BYTES];
    uint8_t *msg = pmsg;
    size_t mlen = sizeof(pmsg);
    const uint8_t *pk, *sig;
    int rc;
    if (rq->type == VV_DHT_MSG_PUT_VALUE) {
        rc = vv_dht_values_check(d->values, &rq->value, wall);
        if (rc == 0) {
            ps->v = rq->value;
            ps->bytes = vv_xmalloc(rq->value.len ? rq->value.len : 1);
            memcpy(ps->bytes, rq->value.value, rq->value.len);
            ps->v.value = ps->bytes;
            mlen = vv_dht_value_signed_len(&ps->v);
            msg = vv_xmalloc(mlen);
            vv_dht_value_signed_bytes(&ps->v, msg);
        }
        pk = ps->v.pk;
        sig = ps->v.sig;
    } else {
        uint8_t id[VV_DHT_ID_BYTES];
        rc = vv_dht_content_record_check(&rq->record, rq->target);
        if (rc == 0 && rq->record.expires_ms <= wall)
            rc = VV_EDHT_EXPIRY;
        vv_dht_id_from_pk(rq->provider_pk, id);
        if (rc == 0 && memcmp(id, peer, VV_DHT_ID_BYTES) != 0)
            rc = VV_EDHT_SIGNATURE; /* the key is not the requester's */
        if (rc == 0) {
            ps->rec = rq->record;
            memcpy(ps->cid, rq->record.content_id, rq->record.content_id_len);
            memcpy(ps->ctype, rq->record.content_type, rq->record.content_type_len);
            ps->rec.content_id = ps->cid;
            ps->rec.content_type = ps->ctype;
            memcpy(ps->provider.id, peer, VV_DHT_ID_BYTES);
            ps->provider.addr = src;
            vv_dht_provider_signed_bytes(rq->target, rq->record.expires_ms, pmsg);
        }
        pk = rq->provider_pk;
        sig = rq->provider_sig;
    }
    if (rc == 0)
        rc = vv_env_verify_async(d->env, VV_CHANNEL_DHT, pk, msg, mlen, sig, store_verified, ps,
                                 &ps->verify_id);
    if (msg != pmsg)
        vv_free(msg);
    if (rc != 0) {
        pending_free(ps);
        refuse(d, ctx, rq->type, rc, vv_strerror(rc));
        return;
    }
    ps->next = d->pending;
    if (d->pending)
        d->pending->prev = ps;
    d->pending = ps;
    d->n_pending++;
}

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
    /* A source over its rate is answered busy before anything else is done for it (the
     * answer is smaller than the request: no amplification). */
    struct vv_dht_addr src_addr;
    if (source != NULL && addr_of(source, &src_addr) == 0 &&
        !vv_dht_rate_take(d->rate, &src_addr, vv_env_now(env))) {
        d->stats.rate_limited++;
        vv_env_reply_error(env, ctx, VV_REQ_ERR_BUSY, NULL);
        return;
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
    if (type == VV_DHT_MSG_PUT_VALUE || type == VV_DHT_MSG_ADD_PROVIDER) {
        serve_store(d, ctx, peer, source, &rq);
        if (source)
            candidate(d, peer, source, 0);
        return;
    }
    struct vv_dht_addr from;
    bool has_from = source != NULL && addr_of(source, &from) == 0;
    uint64_t now = vv_env_now(env);
    bool verified = !source || (has_from && vv_dht_verified_has(d->verified, peer, &from, now));
    /* Over a connection the frame limit is the budget (values too large for a datagram are
     * fetched that way). */
    size_t budget = source ? vv_dht_reply_budget(frame_len(type, &request->body), verified)
                           : VV_DHT_CONN_REPLY_MAX_BYTES;
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
        uint64_t wall = vv_env_wall_ms(env);
        if (type == VV_DHT_MSG_GET_VALUE) {
            rep->n_values =
                vv_dht_values_get(d->values, rq.target, wall, rep->values, VV_DHT_MAX_VALUES);
        } else if (type == VV_DHT_MSG_GET_PROVIDERS) {
            int n = vv_dht_providers_get(d->providers, rq.target, wall, &rep->record,
                                         rep->providers, VV_DHT_MAX_PROVIDERS);
            if (n > 0) {
                rep->has_record = true;
                rep->n_providers = (size_t)n;
            }
        }
        if (type != VV_DHT_MSG_FIND_NODE && has_from)
            vv_dht_token_make(&d->tokens, &from, now, rep->token);
    }
    uint8_t *out = vv_xmalloc(budget);
    size_t len;
    rc = vv_dht_reply_encode(rep, WIDEST_REQUEST_ID, budget, out, budget, &len, NULL);
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
static void store_start(struct store_op *op, struct lookup *lk, int status);
static void republish_region(struct lookup *lk);
static int own_keep(struct vv_dht_node *d, const struct store_op *op, uint64_t expires_ms,
                    uint64_t due_ms, bool tell);

static struct lookup *lookup_by_serial(struct vv_dht_node *d, uint64_t serial)
{
    for (struct lookup *lk = d->lookups; lk; lk = lk->next)
        if (lk->serial == serial)
            return lk;
    return NULL;
}

/* Takes the lookup off the node's list and cancels what it waits for; its memory stays. */
static void lookup_unlink(struct lookup *lk)
{
    struct vv_dht_node *d = lk->d;
    for (struct lookup **pp = &d->lookups; *pp; pp = &(*pp)->next)
        if (*pp == lk) {
            *pp = lk->next;
            d->n_lookups--;
            break;
        }
    vv_env_timer_cancel(d->env, lk->timer);
    lk->timer = 0;
    for (size_t i = 0; i < lk->n_vals; i++)
        if (lk->vals[i].verify_id != 0) {
            vv_env_verify_cancel(d->env, lk->vals[i].verify_id);
            lk->vals[i].verify_id = 0;
        }
    lk->verifying = 0;
    lk->fetching = 0; /* their answers find no lookup of this serial and are dropped */
}

static void lookup_destroy(struct lookup *lk)
{
    vv_dht_lookup_free(lk->l);
    for (size_t i = 0; i < lk->n_vals; i++)
        vv_free(lk->vals[i].bytes);
    vv_free(lk->provs);
    vv_free(lk);
}

static const char *lookup_outcome(bool ok)
{
    return ok ? "ok" : "failed";
}

static int value_newer_first(const void *a, const void *b)
{
    const struct vv_dht_value *x = a, *y = b;
    return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

static void lookup_finish(struct lookup *lk, int status)
{
    struct vv_dht_node *d = lk->d;
    lookup_unlink(lk);
    uint32_t hops = vv_dht_lookup_hops(lk->l);
    uint64_t elapsed = vv_env_now(d->env) - lk->start_ms;
    struct vv_dht_contact closest[VV_DHT_K];
    size_t n = vv_dht_lookup_closest(lk->l, closest, VV_MIN(d->cfg.k, VV_DHT_K));
    bool ok = status == 0 && n > 0;
    d->stats.lookups++;
    if (!ok)
        d->stats.lookups_failed++;
    if (d->hooks.lookup)
        d->hooks.lookup(d->hooks.arg, lk->kind, lookup_outcome(ok), hops, elapsed);
    const char *kind = lk->kind;
    if (lk->republish) {
        d->n_republish--;
        if (status == 0)
            republish_region(lk);
    } else if (lk->op != NULL) {
        store_start(lk->op, lk, status);
    } else if (lk->qtype == VV_DHT_MSG_FIND_NODE) {
        struct vv_dht_find_result *res = vv_xcalloc(1, sizeof(*res));
        res->status = status;
        res->n = n;
        memcpy(res->closest, closest, n * sizeof(closest[0]));
        for (size_t i = 0; i < res->n; i++)
            for (size_t j = 0; j < lk->n_rtt; j++)
                if (memcmp(lk->rtt_c[j].id, res->closest[i].id, VV_DHT_ID_BYTES) == 0)
                    res->rtt_ms[i] = lk->rtt_v[j];
        res->hops = hops;
        res->elapsed_ms = elapsed;
        res->stats = *vv_dht_lookup_stats(lk->l);
        if (lk->cb)
            lk->cb(lk->cb_arg, res);
        vv_free(res);
    } else if (lk->get_cb != NULL) {
        struct vv_dht_get_result *res = vv_xcalloc(1, sizeof(*res));
        res->status = status;
        for (size_t i = 0; i < lk->n_vals; i++)
            if (lk->vals[i].ok)
                res->values[res->n_values++] = lk->vals[i].v;
        qsort(res->values, res->n_values, sizeof(res->values[0]), value_newer_first);
        res->omitted = lk->omitted;
        res->has_record = lk->has_record;
        res->record = lk->rec;
        res->providers = lk->provs;
        res->n_providers = lk->n_provs;
        res->hops = hops;
        res->elapsed_ms = elapsed;
        res->first_ms = lk->first_ms;
        res->stats = *vv_dht_lookup_stats(lk->l);
        lk->get_cb(lk->cb_arg, res);
        vv_free(res);
    }
    lookup_destroy(lk);
    /* The join's self-lookup ended: every bucket gets one refresh, as Kademlia's join does,
     * so that the far buckets fill too. */
    if (strcmp(kind, "self") == 0)
        d->refresh_all = true;
}

static void mark_first(struct lookup *lk)
{
    if (lk->first_ms == 0) {
        uint64_t t = vv_env_now(lk->d->env) - lk->start_ms;
        lk->first_ms = t == 0 ? 1 : t;
    }
}

static void value_verified(struct vv_env *env, bool ok, void *arg)
{
    (void)env;
    struct got_value *g = arg;
    struct lookup *lk = g->lk;
    g->verify_id = 0;
    lk->verifying--;
    if (ok) {
        g->ok = true;
        mark_first(lk);
    } else {
        lk->d->stats.values_bad++;
        vv_free(g->bytes);
        g->bytes = NULL;
        memset(&g->v, 0, sizeof(g->v)); /* a free slot: no publisher */
    }
    if (lk->steered_out && lk->verifying == 0 && lk->fetching == 0)
        lookup_finish(lk, 0);
}

/* The values of a GET_VALUE answer: per publisher, a higher seq than held is checked (off
 * the loop) and then replaces it. At most VV_DHT_MAX_VALUES publishers are followed. */
static void take_values(struct lookup *lk, const struct vv_dht_reply *rep)
{
    struct vv_dht_node *d = lk->d;
    uint64_t wall = vv_env_wall_ms(d->env);
    static const uint8_t no_pk[VV_DHT_PK_BYTES];
    lk->omitted += rep->omitted;
    for (size_t i = 0; i < rep->n_values; i++) {
        struct vv_dht_value v = rep->values[i];
        memcpy(v.key, lk->target, VV_DHT_ID_BYTES);
        if (v.expires_ms <= wall || v.len > VV_DHT_VALUE_MAX_BYTES)
            continue;
        struct got_value *g = NULL, *free_slot = NULL;
        for (size_t j = 0; j < lk->n_vals; j++) {
            if (memcmp(lk->vals[j].v.pk, v.pk, VV_DHT_PK_BYTES) == 0)
                g = &lk->vals[j];
            else if (free_slot == NULL && memcmp(lk->vals[j].v.pk, no_pk, VV_DHT_PK_BYTES) == 0)
                free_slot = &lk->vals[j];
        }
        if (g != NULL && g->v.seq >= v.seq)
            continue;
        /* Bounded: answers naming ever higher seqs for one publisher, or many publishers,
         * cost at most this many signature checks per lookup. */
        if (lk->n_checks >= VV_DHT_MAX_CHECKS_PER_LOOKUP) {
            d->stats.values_bad++;
            continue;
        }
        if (g == NULL)
            g = free_slot;
        if (g == NULL && lk->n_vals < VV_DHT_MAX_VALUES)
            g = &lk->vals[lk->n_vals++];
        if (g == NULL)
            continue;
        if (g->verify_id != 0) {
            vv_env_verify_cancel(d->env, g->verify_id);
            g->verify_id = 0;
            lk->verifying--;
        }
        vv_free(g->bytes);
        g->lk = lk;
        g->ok = false;
        g->bytes = vv_xmalloc(v.len ? v.len : 1);
        memcpy(g->bytes, v.value, v.len);
        g->v = v;
        g->v.value = g->bytes;
        size_t mlen = vv_dht_value_signed_len(&g->v);
        uint8_t *msg = vv_xmalloc(mlen);
        vv_dht_value_signed_bytes(&g->v, msg);
        int rc = vv_env_verify_async(d->env, VV_CHANNEL_DHT, g->v.pk, msg, mlen, g->v.sig,
                                     value_verified, g, &g->verify_id);
        vv_free(msg);
        if (rc != 0) {
            vv_free(g->bytes);
            g->bytes = NULL;
            memset(&g->v, 0, sizeof(g->v));
            continue;
        }
        lk->verifying++;
        lk->n_checks++;
    }
}

/* The providers of a GET_PROVIDERS answer, each node ID once, streamed to the caller. */
static void take_providers(struct lookup *lk, const struct vv_dht_reply *rep)
{
    uint64_t wall = vv_env_wall_ms(lk->d->env);
    if (lk->limit == 0)
        return;
    if (rep->has_record && !lk->has_record) {
        lk->has_record = true;
        lk->rec = rep->record;
        memcpy(lk->rec_cid, rep->record.content_id, rep->record.content_id_len);
        memcpy(lk->rec_type, rep->record.content_type, rep->record.content_type_len);
        lk->rec.content_id = lk->rec_cid;
        lk->rec.content_type = lk->rec_type;
    }
    for (size_t i = 0; i < rep->n_providers && lk->n_provs < lk->limit; i++) {
        const struct vv_dht_provider *p = &rep->providers[i];
        if (p->expires_ms <= wall)
            continue;
        bool known = false;
        for (size_t j = 0; j < lk->n_provs && !known; j++)
            known = memcmp(lk->provs[j].c.id, p->c.id, VV_DHT_ID_BYTES) == 0;
        if (known)
            continue;
        lk->provs[lk->n_provs++] = *p;
        mark_first(lk);
        if (lk->each)
            lk->each(lk->cb_arg, p);
    }
    if (lk->n_provs >= lk->limit)
        vv_dht_lookup_stop(lk->l);
}

/* What this node's own store holds for the key counts as an answer too (it may be one of
 * the k closest, and a node that published stores its own record): consulted at the
 * lookup's first turn. Values in the store were verified when stored. */
static void take_local(struct lookup *lk)
{
    struct vv_dht_node *d = lk->d;
    uint64_t wall = vv_env_wall_ms(d->env);
    if (lk->qtype == VV_DHT_MSG_GET_VALUE && lk->op == NULL) {
        struct vv_dht_value v[VV_DHT_MAX_VALUES];
        size_t n = vv_dht_values_get(d->values, lk->target, wall, v, VV_DHT_MAX_VALUES);
        for (size_t i = 0; i < n && lk->n_vals < VV_DHT_MAX_VALUES; i++) {
            struct got_value *g = &lk->vals[lk->n_vals++];
            g->lk = lk;
            g->v = v[i];
            g->bytes = vv_xmalloc(v[i].len ? v[i].len : 1);
            memcpy(g->bytes, v[i].value, v[i].len);
            g->v.value = g->bytes;
            g->ok = true;
            mark_first(lk);
        }
    } else if (lk->qtype == VV_DHT_MSG_GET_PROVIDERS && lk->limit > 0) {
        struct vv_dht_reply *rep = vv_xcalloc(1, sizeof(*rep));
        int n = vv_dht_providers_get(d->providers, lk->target, wall, &rep->record, rep->providers,
                                     VV_DHT_MAX_PROVIDERS);
        if (n > 0) {
            rep->has_record = true;
            rep->n_providers = (size_t)n;
            take_providers(lk, rep);
        }
        vv_free(rep);
    }
}

static void fetch_omitted(struct lookup *lk, const uint8_t *peer, const char *address);

static void query_answered(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    struct req *r = arg;
    struct vv_dht_node *d = r->d;
    uint64_t now = vv_env_now(env);
    struct lookup *lk = lookup_by_serial(d, r->lookup_serial);
    struct vv_dht_reply *rep = NULL;
    if (a->status == 0) {
        rep = vv_xmalloc(sizeof(*rep));
        if (vv_dht_reply_decode(r->qtype, &a->reply->body, rep) != 0) {
            vv_free(rep);
            rep = NULL;
        }
    }
    if (rep != NULL) {
        d->stats.queries_answered++;
        uint32_t rtt = rtt16(a->elapsed_ms);
        vv_dht_rtt_sample(&d->rtt, rtt);
        if (lk && vv_dht_lookup_answered(lk->l, r->peer, now, rep->nodes, rep->n_nodes) == 0) {
            if (lk->n_rtt < VV_DHT_LOOKUP_MAX_CANDIDATES) {
                size_t j = lk->n_rtt++;
                memcpy(lk->rtt_c[j].id, r->peer, VV_DHT_ID_BYTES);
                addr_of(r->address, &lk->rtt_c[j].addr);
                lk->rtt_v[j] = (uint16_t)rtt;
                if (r->qtype != VV_DHT_MSG_FIND_NODE) {
                    memcpy(lk->tok[j], rep->token, VV_DHT_TOKEN_BYTES);
                    lk->has_tok[j] = true;
                }
            }
            if (r->qtype == VV_DHT_MSG_GET_VALUE) {
                take_values(lk, rep);
                if (rep->omitted > 0 && lk->op == NULL && lk->n_fetches < VV_DHT_MAX_FETCHES)
                    fetch_omitted(lk, r->peer, r->address);
            } else if (r->qtype == VV_DHT_MSG_GET_PROVIDERS)
                take_providers(lk, rep);
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
    r->kind = REQ_QUERY;
    r->qtype = lk->qtype;
    memcpy(r->peer, q->to.id, VV_DHT_ID_BYTES);
    r->has_peer = true;
    r->lookup_serial = lk->serial;
    if (vv_dht_addr_format(&q->to.addr, r->address, sizeof(r->address)) != 0) {
        vv_free(r);
        return VV_EDHT_ADDRESS;
    }
    struct vv_dht_request rq = {.type = lk->qtype};
    memcpy(rq.target, lk->target, VV_DHT_ID_BYTES);
    /* Padded, as whether the node verified us long ago is not known here: a full answer (20
     * contacts, about 850 bytes; a datagram for GET_VALUE and GET_PROVIDERS) is allowed to
     * a request of half its size (no amplification). */
    rq.pad_len = lk->qtype == VV_DHT_MSG_FIND_NODE ? 440 : 540;
    int rc = send_req(d, r, &rq, q->hard_timeout_ms, query_answered);
    if (rc == 0)
        d->stats.queries_sent++;
    return rc;
}

static void take_local(struct lookup *lk);

static void lookup_drive(struct lookup *lk)
{
    struct vv_dht_node *d = lk->d;
    if (lk->steered_out)
        return;
    if (!lk->local_done) {
        lk->local_done = true;
        take_local(lk);
        if (vv_dht_lookup_done(lk->l) && lk->verifying == 0 && lk->fetching == 0) {
            lookup_finish(lk, 0);
            return;
        }
    }
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
        if (lk->verifying > 0 || lk->fetching > 0) {
            /* The values still being checked or fetched decide the result: wait. */
            lk->steered_out = true;
            vv_env_timer_cancel(d->env, lk->timer);
            lk->timer = 0;
            return;
        }
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
                        uint16_t qtype, struct lookup **out)
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
    lc.paths = qtype == VV_DHT_MSG_FIND_NODE || qtype == VV_DHT_MSG_GET_VALUE ||
                       qtype == VV_DHT_MSG_GET_PROVIDERS
                   ? d->cfg.paths
                   : 1;
    lc.max_timeout_ms = d->cfg.max_timeout_ms;
    lc.min_timeout_ms = VV_DHT_MIN_SOFT_TIMEOUT_MS;
    if (lc.min_timeout_ms > lc.max_timeout_ms)
        lc.min_timeout_ms = lc.max_timeout_ms;
    struct lookup *lk = vv_xcalloc(1, sizeof(*lk));
    lk->d = d;
    lk->serial = ++d->next_serial;
    memcpy(lk->target, target, VV_DHT_ID_BYTES);
    lk->kind = kind;
    lk->qtype = qtype;
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
    if (out)
        *out = lk;
    return 0;
}

int vv_dht_node_find_node(struct vv_dht_node *d, const uint8_t target[VV_DHT_ID_BYTES],
                          vv_dht_find_cb cb, void *arg)
{
    struct lookup *lk;
    int rc = lookup_start(d, target, "find_node", VV_DHT_MSG_FIND_NODE, &lk);
    if (rc == 0) {
        lk->cb = cb;
        lk->cb_arg = arg;
    }
    return rc;
}

static void start_self_lookup(struct vv_dht_node *d)
{
    if (lookup_start(d, d->self, "self", VV_DHT_MSG_FIND_NODE, NULL) == 0)
        d->joined = true;
}

int vv_dht_node_refresh_bucket(struct vv_dht_node *d, unsigned index)
{
    if (index >= VV_DHT_ID_BITS)
        return VV_EINVAL;
    uint8_t rnd[VV_DHT_ID_BYTES], target[VV_DHT_ID_BYTES];
    vv_env_random(d->env, rnd, sizeof(rnd));
    vv_dht_id_in_bucket(d->self, index, rnd, target);
    return lookup_start(d, target, "refresh", VV_DHT_MSG_FIND_NODE, NULL);
}

/* ---- values and providers: getting ---------------------------------------------------- */

int vv_dht_node_get(struct vv_dht_node *d, const uint8_t key[VV_DHT_ID_BYTES], vv_dht_get_cb cb,
                    void *arg)
{
    struct lookup *lk;
    int rc = lookup_start(d, key, "get", VV_DHT_MSG_GET_VALUE, &lk);
    if (rc == 0) {
        lk->get_cb = cb;
        lk->cb_arg = arg;
    }
    return rc;
}

int vv_dht_node_get_providers(struct vv_dht_node *d, const uint8_t key[VV_DHT_ID_BYTES],
                              uint32_t limit, vv_dht_provider_cb each, vv_dht_get_cb cb, void *arg)
{
    if (limit == 0 || limit > VV_DHT_GET_MAX_PROVIDERS)
        return VV_EINVAL;
    struct lookup *lk;
    int rc = lookup_start(d, key, "get_providers", VV_DHT_MSG_GET_PROVIDERS, &lk);
    if (rc == 0) {
        lk->get_cb = cb;
        lk->each = each;
        lk->cb_arg = arg;
        lk->limit = limit;
        lk->provs = vv_xcalloc(limit, sizeof(*lk->provs));
    }
    return rc;
}

/* ---- values and providers: publishing ------------------------------------------------- */

static void store_op_end(struct store_op *op, int status)
{
    struct vv_dht_store_result res = {
        .status = op->stored > 0 ? 0
                  : status != 0  ? status
                                 : VV_ENOTFOUND,
        .stored = op->stored,
        .tried = op->tried,
        .hops = op->hops,
        .elapsed_ms = vv_env_now(op->d->env) - op->start_ms,
        .seq = op->type == VV_DHT_MSG_PUT_VALUE ? op->v.seq : 0,
    };
    if (op->cb)
        op->cb(op->cb_arg, &res);
    vv_free(op->bytes);
    vv_free(op);
}

static void store_answered(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct req *r = arg;
    struct vv_dht_node *d = r->d;
    struct store_op *op = r->op;
    if (a->status == 0)
        op->stored++;
    else if (a->status == VV_EREQ_TIMEOUT) {
        d->stats.timeouts++;
        if (d->hooks.timeout)
            d->hooks.timeout(d->hooks.arg);
    }
    req_free(r);
    if (--op->outstanding == 0)
        store_op_end(op, 0);
}

/* ---- requests over connections: values too large for a datagram ---------------------- */

static void conn_free(struct conn_req *c, bool release)
{
    struct vv_dht_node *d = c->d;
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->n_conns--;
    vv_env_timer_cancel(d->env, c->timer);
    if (release && c->tagged) {
        bool other = false; /* another request of ours still needs the peer */
        for (struct conn_req *o = d->conns; o && !other; o = o->next)
            other = o->tagged && memcmp(o->peer, c->peer, VV_DHT_ID_BYTES) == 0;
        if (!other)
            vv_env_release_peer(d->env, c->peer, VV_DHT_PEER_TAG);
    }
    vv_free(c->body);
    vv_free(c);
}

/* The end of a request over a connection: status 0 with the reply, or an error. */
static void conn_done(struct conn_req *c, int status, const struct vv_wire_frame *reply)
{
    struct vv_dht_node *d = c->d;
    if (status == VV_EREQ_TIMEOUT) {
        d->stats.timeouts++;
        if (d->hooks.timeout)
            d->hooks.timeout(d->hooks.arg);
    }
    if (c->kind == CONN_PUT) {
        struct store_op *op = c->op;
        if (status == 0)
            op->stored++;
        conn_free(c, true);
        if (--op->outstanding == 0)
            store_op_end(op, 0);
        return;
    }
    struct lookup *lk = lookup_by_serial(d, c->lookup_serial);
    if (lk != NULL) {
        lk->fetching--;
        struct vv_dht_reply *rep = vv_xmalloc(sizeof(*rep));
        if (status == 0 && vv_dht_reply_decode(VV_DHT_MSG_GET_VALUE, &reply->body, rep) == 0) {
            rep->omitted = 0; /* over a connection: what did not fit is not asked again */
            take_values(lk, rep);
        }
        vv_free(rep);
    }
    conn_free(c, true);
    if (lk != NULL && lk->steered_out && lk->verifying == 0 && lk->fetching == 0)
        lookup_finish(lk, 0);
}

static void conn_answered(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct conn_req *c = arg;
    c->req_id = 0;
    conn_done(c, a->status, a->status == 0 ? a->reply : NULL);
}

static int conn_send(struct conn_req *c)
{
    struct vv_dht_node *d = c->d;
    int rc = vv_env_request(d->env, c->peer, c->type, c->body, c->len, d->cfg.max_timeout_ms * 2,
                            conn_answered, c, &c->req_id);
    if (rc == 0) {
        vv_env_timer_cancel(d->env, c->timer);
        c->timer = 0;
        hook_rpc(d, c->type, false);
    }
    return rc;
}

static void conn_timeout(struct vv_env *env, void *arg)
{
    (void)env;
    struct conn_req *c = arg;
    c->timer = 0;
    conn_done(c, VV_EREQ_TIMEOUT, NULL);
}

/* A connected peer: the requests waiting for it go. */
static void conns_peer_up(struct vv_dht_node *d, const uint8_t *peer)
{
    for (struct conn_req *c = d->conns, *next; c; c = next) {
        next = c->next;
        if (c->req_id == 0 && c->timer != 0 && memcmp(c->peer, peer, VV_DHT_ID_BYTES) == 0 &&
            conn_send(c) != 0)
            conn_done(c, VV_ECONN_NOT_CONNECTED, NULL);
    }
}

/* Sends a request over a connection to peer (at address, which the connection manager is
 * given if it must dial); body is taken. Returns 0 (conn_done runs once later) or an error
 * (body freed). */
static int conn_start(struct vv_dht_node *d, enum conn_kind kind, const uint8_t *peer,
                      const char *address, uint16_t type, uint8_t *body, size_t len,
                      struct store_op *op, uint64_t lookup_serial)
{
    if (d->n_conns >= VV_DHT_MAX_CONN_REQUESTS) {
        vv_free(body);
        return VV_EBUSY;
    }
    struct conn_req *c = vv_xcalloc(1, sizeof(*c));
    c->d = d;
    c->kind = kind;
    memcpy(c->peer, peer, VV_DHT_ID_BYTES);
    c->type = type;
    c->body = body;
    c->len = len;
    c->op = op;
    c->lookup_serial = lookup_serial;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->n_conns++;
    if (conn_send(c) == 0)
        return 0;
    /* Not connected: ask for the peer and wait for it (the connection manager dials). */
    int rc = vv_env_want_peer(d->env, peer, address, VV_DHT_PEER_TAG, 1);
    if (rc != 0) {
        conn_free(c, false); /* frees body */
        return rc;
    }
    c->tagged = true;
    c->timer = vv_env_timer_start(d->env, VV_DHT_CONNECT_TIMEOUT_MS, 0, conn_timeout, c);
    return 0;
}

/* An answer said it held values that did not fit a datagram: ask that node for them over a
 * connection (the lookup waits for the answer). */
static void fetch_omitted(struct lookup *lk, const uint8_t *peer, const char *address)
{
    struct vv_dht_node *d = lk->d;
    struct vv_dht_request rq = {.type = VV_DHT_MSG_GET_VALUE};
    memcpy(rq.target, lk->target, VV_DHT_ID_BYTES);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (request_body(&rq, &sb) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    lk->n_fetches++;
    if (conn_start(d, CONN_FETCH, peer, address, VV_DHT_MSG_GET_VALUE, (uint8_t *)sb.data, sb.size,
                   NULL, lk->serial) == 0)
        lk->fetching++;
}

static int send_store(struct store_op *op, const struct vv_dht_contact *to, const uint8_t *token)
{
    struct vv_dht_node *d = op->d;
    struct req *r = vv_xcalloc(1, sizeof(*r));
    r->d = d;
    r->kind = REQ_STORE;
    r->op = op;
    memcpy(r->peer, to->id, VV_DHT_ID_BYTES);
    r->has_peer = true;
    if (vv_dht_addr_format(&to->addr, r->address, sizeof(r->address)) != 0) {
        vv_free(r);
        return VV_EDHT_ADDRESS;
    }
    struct vv_dht_request rq = {.type = op->type};
    memcpy(rq.target, op->key, VV_DHT_ID_BYTES);
    memcpy(rq.token, token, VV_DHT_TOKEN_BYTES);
    if (op->type == VV_DHT_MSG_PUT_VALUE) {
        rq.value = op->v;
    } else {
        rq.record = op->rec;
        memcpy(rq.provider_pk, op->ppk, VV_DHT_PK_BYTES);
        memcpy(rq.provider_sig, op->psig, VV_DHT_SIG_BYTES);
    }
    int rc;
    if (op->type == VV_DHT_MSG_PUT_VALUE && op->v.len > VV_DHT_PUT_MAX_BYTES) {
        /* Too large for a datagram: over a connection, where no token is needed. */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        rc = request_body(&rq, &sb);
        if (rc == 0)
            rc = conn_start(d, CONN_PUT, to->id, r->address, op->type, (uint8_t *)sb.data, sb.size,
                            op, 0); /* takes the body */
        else
            msgpack_sbuffer_destroy(&sb);
        vv_free(r);
    } else {
        rc = send_req(d, r, &rq, d->cfg.max_timeout_ms, store_answered);
    }
    if (rc == 0) {
        op->outstanding++;
        op->tried++;
    }
    return rc;
}

/* Stores a publish in this node's own store: a value under this node's observed address (or
 * loopback, before any PONG told it) as its source; a provider entry only once the address
 * others see this node at is known. */
static int store_local(struct store_op *op)
{
    struct vv_dht_node *d = op->d;
    uint64_t wall = vv_env_wall_ms(d->env);
    struct vv_dht_addr self_addr;
    if (d->has_observed)
        self_addr = d->observed;
    else if (addr_of("127.0.0.1:1", &self_addr) != 0)
        return VV_EDHT_ADDRESS;
    if (op->type == VV_DHT_MSG_PUT_VALUE)
        return vv_dht_values_put(d->values, &op->v, &self_addr, wall);
    if (!d->has_observed)
        return VV_EDHT_ADDRESS;
    struct vv_dht_contact me;
    memcpy(me.id, d->self, VV_DHT_ID_BYTES);
    me.addr = self_addr;
    return vv_dht_providers_add(d->providers, op->key, &op->rec, &me, wall);
}

/* The publish's lookup ended: a store request to each of the k closest that answered with a
 * token, and to itself when it is one of them. */
static void store_start(struct store_op *op, struct lookup *lk, int status)
{
    struct vv_dht_node *d = op->d;
    op->hops = vv_dht_lookup_hops(lk->l);
    if (status != 0) {
        store_op_end(op, status);
        return;
    }
    uint32_t k = VV_MIN(d->cfg.k, VV_DHT_K);
    struct vv_dht_contact closest[VV_DHT_K];
    size_t n = vv_dht_lookup_closest(lk->l, closest, k);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < lk->n_rtt; j++)
            if (lk->has_tok[j] && memcmp(lk->rtt_c[j].id, closest[i].id, VV_DHT_ID_BYTES) == 0) {
                send_store(op, &closest[i], lk->tok[j]);
                break;
            }
    /* This node is one of the k closest too: it stores the record itself. */
    if (n < k || vv_dht_distance_cmp(op->key, d->self, closest[n - 1].id) < 0) {
        if (store_local(op) == 0)
            op->stored++;
    }
    if (op->outstanding == 0)
        store_op_end(op, VV_ENOTFOUND);
}

static uint64_t next_seq(struct vv_dht_node *d)
{
    uint64_t wall = vv_env_wall_ms(d->env);
    d->last_seq = wall > d->last_seq ? wall : d->last_seq + 1;
    return d->last_seq;
}

int vv_dht_node_put(struct vv_dht_node *d, const uint8_t key[VV_DHT_ID_BYTES], const uint8_t *value,
                    size_t len, uint64_t ttl_ms, uint64_t seq, vv_dht_store_cb cb, void *arg)
{
    if (len > VV_DHT_VALUE_MAX_BYTES)
        return VV_EDHT_TOO_LARGE;
    if (ttl_ms == 0 || ttl_ms > d->cfg.values.max_ttl_ms)
        return VV_EDHT_EXPIRY;
    struct store_op *op = vv_xcalloc(1, sizeof(*op));
    op->d = d;
    op->type = VV_DHT_MSG_PUT_VALUE;
    memcpy(op->key, key, VV_DHT_ID_BYTES);
    op->bytes = vv_xmalloc(len ? len : 1);
    memcpy(op->bytes, value, len);
    memcpy(op->v.key, key, VV_DHT_ID_BYTES);
    op->v.value = op->bytes;
    op->v.len = len;
    if (seq > d->last_seq)
        d->last_seq = seq;
    op->v.seq = seq ? seq : next_seq(d);
    op->v.expires_ms = vv_env_wall_ms(d->env) + ttl_ms;
    vv_dht_value_sign(&op->v, d->env->identity->secret_key);
    op->cb = cb;
    op->cb_arg = arg;
    op->start_ms = vv_env_now(d->env);
    struct lookup *lk;
    int rc = lookup_start(d, key, "put", VV_DHT_MSG_GET_VALUE, &lk);
    if (rc != 0) {
        vv_free(op->bytes);
        vv_free(op);
        return rc;
    }
    lk->op = op;
    own_keep(d, op, op->v.expires_ms, op->start_ms + d->cfg.republish_ms, true);
    return 0;
}

int vv_dht_node_provide(struct vv_dht_node *d, const struct vv_dht_content_record *rec,
                        vv_dht_store_cb cb, void *arg)
{
    uint8_t key[VV_DHT_ID_BYTES];
    if (rec->content_id_len == 0 || rec->content_id_len > VV_DHT_CONTENT_ID_MAX ||
        rec->content_type_len > VV_DHT_CONTENT_TYPE_MAX)
        return VV_EINVAL;
    crypto_hash_sha256(key, (const uint8_t *)rec->content_id, rec->content_id_len);
    uint64_t wall = vv_env_wall_ms(d->env);
    if (rec->expires_ms <= wall || rec->expires_ms - wall > d->cfg.providers.max_ttl_ms)
        return VV_EDHT_EXPIRY;
    struct store_op *op = vv_xcalloc(1, sizeof(*op));
    op->d = d;
    op->type = VV_DHT_MSG_ADD_PROVIDER;
    memcpy(op->key, key, VV_DHT_ID_BYTES);
    op->rec = *rec;
    memcpy(op->cid, rec->content_id, rec->content_id_len);
    memcpy(op->ctype, rec->content_type, rec->content_type_len);
    op->rec.content_id = op->cid;
    op->rec.content_type = op->ctype;
    vv_dht_provider_sign(key, rec->expires_ms, d->env->identity->secret_key, op->ppk, op->psig);
    op->cb = cb;
    op->cb_arg = arg;
    op->start_ms = vv_env_now(d->env);
    struct lookup *lk;
    int rc = lookup_start(d, key, "provide", VV_DHT_MSG_GET_PROVIDERS, &lk);
    if (rc != 0) {
        vv_free(op);
        return rc;
    }
    lk->op = op;
    own_keep(d, op, op->rec.expires_ms, op->start_ms + d->cfg.republish_ms, true);
    return 0;
}

/* ---- this node's own records: kept, republished by region, expired ------------------- */

/* The request of an op (token left zero): what an own record keeps. */
static void op_request(const struct store_op *op, struct vv_dht_request *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->type = op->type;
    memcpy(rq->target, op->key, VV_DHT_ID_BYTES);
    if (op->type == VV_DHT_MSG_PUT_VALUE) {
        rq->value = op->v;
    } else {
        rq->record = op->rec;
        memcpy(rq->provider_pk, op->ppk, VV_DHT_PK_BYTES);
        memcpy(rq->provider_sig, op->psig, VV_DHT_SIG_BYTES);
    }
}

/* An op (without callback) from a decoded request: copies what it points at. */
static struct store_op *op_from_request(struct vv_dht_node *d, const struct vv_dht_request *rq)
{
    struct store_op *op = vv_xcalloc(1, sizeof(*op));
    op->d = d;
    op->type = rq->type;
    memcpy(op->key, rq->target, VV_DHT_ID_BYTES);
    if (rq->type == VV_DHT_MSG_PUT_VALUE) {
        op->v = rq->value;
        op->bytes = vv_xmalloc(rq->value.len ? rq->value.len : 1);
        memcpy(op->bytes, rq->value.value, rq->value.len);
        op->v.value = op->bytes;
    } else {
        op->rec = rq->record;
        memcpy(op->cid, rq->record.content_id, rq->record.content_id_len);
        memcpy(op->ctype, rq->record.content_type, rq->record.content_type_len);
        op->rec.content_id = op->cid;
        op->rec.content_type = op->ctype;
        memcpy(op->ppk, rq->provider_pk, VV_DHT_PK_BYTES);
        memcpy(op->psig, rq->provider_sig, VV_DHT_SIG_BYTES);
    }
    op->start_ms = vv_env_now(d->env);
    return op;
}

static int own_cmp(const uint8_t *key, uint16_t type, const struct own *o)
{
    int c = memcmp(key, o->key, VV_DHT_ID_BYTES);
    return c != 0 ? c : (int)type - (int)o->type;
}

/* The index of (key, type), or where it would go. */
static size_t own_find(const struct vv_dht_node *d, const uint8_t *key, uint16_t type, bool *found)
{
    size_t lo = 0, hi = d->n_own;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = own_cmp(key, type, &d->own[mid]);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    *found = false;
    return lo;
}

/* Keeps op's record as this node's own (replacing one of the same key and type), next
 * republished at due_ms, and tells the module. */
static int own_keep(struct vv_dht_node *d, const struct store_op *op, uint64_t expires_ms,
                    uint64_t due_ms, bool tell)
{
    struct vv_dht_request rq;
    op_request(op, &rq);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = request_body(&rq, &sb);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    bool found;
    size_t i = own_find(d, op->key, op->type, &found);
    if (!found) {
        if (d->n_own >= d->cfg.max_own) {
            d->stats.own_dropped++;
            msgpack_sbuffer_destroy(&sb);
            return VV_ELIMIT;
        }
        if (d->n_own == d->cap_own) {
            d->cap_own = d->cap_own ? 2 * d->cap_own : 64;
            d->own = vv_xrealloc(d->own, d->cap_own * sizeof(*d->own));
        }
        memmove(&d->own[i + 1], &d->own[i], (d->n_own - i) * sizeof(*d->own));
        d->n_own++;
        memset(&d->own[i], 0, sizeof(d->own[i]));
        d->own[i].type = op->type;
        memcpy(d->own[i].key, op->key, VV_DHT_ID_BYTES);
    }
    struct own *o = &d->own[i];
    vv_free(o->body);
    o->body = (uint8_t *)sb.data; /* taken from the buffer */
    o->body_len = sb.size;
    o->expires_ms = expires_ms;
    o->due_ms = due_ms;
    if (tell && d->hooks.own)
        d->hooks.own(d->hooks.arg, o->type, o->key, o->body, o->body_len, o->expires_ms);
    return 0;
}

static void own_remove(struct vv_dht_node *d, size_t i, bool tell)
{
    struct own *o = &d->own[i];
    if (tell && d->hooks.own)
        d->hooks.own(d->hooks.arg, o->type, o->key, NULL, 0, o->expires_ms);
    vv_free(o->body);
    memmove(&d->own[i], &d->own[i + 1], (d->n_own - i - 1) * sizeof(*d->own));
    d->n_own--;
}

static struct store_op *op_from_own(struct vv_dht_node *d, const struct own *o)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    struct store_op *op = NULL;
    struct vv_dht_request rq;
    if (msgpack_unpack_next(&u, (const char *)o->body, o->body_len, NULL) ==
            MSGPACK_UNPACK_SUCCESS &&
        vv_dht_request_decode(o->type, &u.data, &rq) == 0)
        op = op_from_request(d, &rq);
    msgpack_unpacked_destroy(&u);
    return op;
}

int vv_dht_node_restore_own(struct vv_dht_node *d, uint16_t type, const uint8_t *body, size_t len)
{
    if (type != VV_DHT_MSG_PUT_VALUE && type != VV_DHT_MSG_ADD_PROVIDER)
        return VV_EDHT_MALFORMED;
    struct own tmp = {.type = type, .body = (uint8_t *)body, .body_len = len};
    struct store_op *op = op_from_own(d, &tmp);
    if (op == NULL)
        return VV_EDHT_MALFORMED;
    uint64_t expires = type == VV_DHT_MSG_PUT_VALUE ? op->v.expires_ms : op->rec.expires_ms;
    int rc = expires <= vv_env_wall_ms(d->env) ? VV_EDHT_EXPIRY : 0;
    /* Due at once: after a restart the nodes around the key may have changed. */
    if (rc == 0)
        rc = own_keep(d, op, expires, vv_env_now(d->env), false);
    vv_free(op->bytes);
    vv_free(op);
    return rc;
}

size_t vv_dht_node_own_count(const struct vv_dht_node *d)
{
    return d->n_own;
}

/* The republish's step at each tick: expired own records go; region lookups start for due
 * ones (VV_DHT_REPUBLISH_LOOKUPS at once). */
static void republish_tick(struct vv_dht_node *d)
{
    uint64_t now = vv_env_now(d->env), wall = vv_env_wall_ms(d->env);
    for (size_t i = 0; i < d->n_own;) {
        if (d->own[i].expires_ms <= wall)
            own_remove(d, i, true);
        else
            i++;
    }
    for (size_t i = 0; i < d->n_own && d->n_republish < VV_DHT_REPUBLISH_LOOKUPS; i++) {
        if (d->own[i].due_ms > now)
            continue;
        /* Not due again while this region's lookup runs: its end sets the next due time. */
        d->own[i].due_ms = now + d->cfg.max_timeout_ms * 4u + 1000u;
        struct lookup *lk;
        if (lookup_start(d, d->own[i].key, "republish", VV_DHT_MSG_GET_PROVIDERS, &lk) != 0)
            break;
        lk->republish = true;
        d->n_republish++;
        d->stats.republish_lookups++;
        /* Skip the rest of this region now (as far as the routing table tells: the keys
         * sharing as many leading bits as its k-th closest contact to this key): they ride
         * on this lookup. */
        struct vv_dht_contact c[VV_DHT_K];
        uint32_t k = VV_MIN(d->cfg.k, VV_DHT_K);
        size_t n = vv_dht_rt_closest(d->rt, d->own[i].key, k, c);
        unsigned prefix = n < k ? 0 : vv_dht_common_prefix(d->own[i].key, c[n - 1].id);
        if (prefix == 0)
            break; /* a small network: one region, one lookup */
        while (i + 1 < d->n_own && vv_dht_common_prefix(d->own[i + 1].key, d->own[i].key) >= prefix)
            i++;
    }
}

/* A region lookup ended: the due own records of the region its k closest cover go to their
 * own k closest among the nodes that answered with a token. */
static void republish_region(struct lookup *lk)
{
    struct vv_dht_node *d = lk->d;
    uint64_t now = vv_env_now(d->env);
    uint32_t k = VV_MIN(d->cfg.k, VV_DHT_K);
    struct vv_dht_contact closest[VV_DHT_K];
    size_t n = vv_dht_lookup_closest(lk->l, closest, k);
    if (n == 0)
        return;
    /* The region: keys sharing as many leading bits with the target as the farthest of the
     * k closest does (with fewer than k nodes, the network is small: the whole keyspace). */
    unsigned prefix = n < k ? 0 : vv_dht_common_prefix(lk->target, closest[n - 1].id);
    bool found;
    size_t at = own_find(d, lk->target, 0, &found);
    size_t lo = at, hi = at;
    while (lo > 0 && vv_dht_common_prefix(d->own[lo - 1].key, lk->target) >= prefix)
        lo--;
    while (hi < d->n_own && vv_dht_common_prefix(d->own[hi].key, lk->target) >= prefix)
        hi++;
    /* The candidates: every node that answered with a token. */
    size_t nc = 0;
    struct vv_dht_contact *cand = vv_xmalloc(lk->n_rtt * sizeof(*cand) + 1);
    const uint8_t **tok = vv_xmalloc(lk->n_rtt * sizeof(*tok) + 1);
    for (size_t j = 0; j < lk->n_rtt; j++)
        if (lk->has_tok[j]) {
            cand[nc] = lk->rtt_c[j];
            tok[nc++] = lk->tok[j];
        }
    uint32_t batch = 0;
    for (size_t i = lo; i < hi && batch < VV_DHT_REPUBLISH_BATCH; i++) {
        struct own *o = &d->own[i];
        /* Due, or due within half a period (else it was just published or republished). */
        if (o->due_ms > now + d->cfg.republish_ms / 2 &&
            memcmp(o->key, lk->target, VV_DHT_ID_BYTES) != 0)
            continue;
        struct store_op *op = op_from_own(d, o);
        o->due_ms = now + d->cfg.republish_ms;
        if (op == NULL)
            continue;
        batch++;
        /* Its k closest among the candidates: k passes of a selection. */
        bool used[VV_DHT_LOOKUP_MAX_CANDIDATES] = {false};
        for (uint32_t r = 0; r < k && r < nc; r++) {
            size_t best = SIZE_MAX;
            for (size_t j = 0; j < nc; j++)
                if (!used[j] && (best == SIZE_MAX ||
                                 vv_dht_distance_cmp(o->key, cand[j].id, cand[best].id) < 0))
                    best = j;
            used[best] = true;
            if (send_store(op, &cand[best], tok[best]) == 0)
                d->stats.republished++;
        }
        if (op->outstanding == 0)
            store_op_end(op, VV_ENOTFOUND);
    }
    vv_free(cand);
    vv_free(tok);
}

const struct vv_dht_values *vv_dht_node_values(const struct vv_dht_node *d)
{
    return d->values;
}

const struct vv_dht_providers *vv_dht_node_providers(const struct vv_dht_node *d)
{
    return d->providers;
}

/* ---- maintenance ----------------------------------------------------------------------- */

static void tick(struct vv_env *env, void *arg)
{
    struct vv_dht_node *d = arg;
    uint64_t now = vv_env_now(env);
    uint64_t wall = vv_env_wall_ms(env);
    /* Expiry in slices: a tick examines a bounded number of stored records. */
    vv_dht_values_expire(d->values, wall, VV_DHT_EXPIRE_PER_TICK);
    vv_dht_providers_expire(d->providers, wall, VV_DHT_EXPIRE_PER_TICK);
    if (d->n_waiting > 0)
        retry_waiting(d);
    if (d->n_own > 0 && vv_dht_rt_size(d->rt) > 0)
        republish_tick(d);
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
    if (up) {
        conns_peer_up(arg, peer);
        vv_dht_node_peer_up(arg, peer);
    }
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
    d->values = vv_dht_values_new(&d->cfg.values);
    d->providers = vv_dht_providers_new(&d->cfg.providers);
    uint8_t master[VV_DHT_TOKEN_SECRET_BYTES];
    vv_env_random(env, master, sizeof(master));
    vv_dht_tokens_init(&d->tokens, master);
    sodium_memzero(master, sizeof(master));
    uint8_t hk[crypto_shorthash_KEYBYTES];
    vv_env_random(env, hk, sizeof(hk));
    d->rate = vv_dht_rate_new(VV_DHT_RATE_SOURCES, d->cfg.rate_per_source, d->cfg.rate_burst, hk);
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
    /* The cache and the stores are sized once. */
    struct vv_dht_values_config vc = d->cfg.values;
    struct vv_dht_providers_config pc = d->cfg.providers;
    d->cfg = *cfg;
    d->cfg.max_verified = max_verified;
    d->cfg.values = vc;
    d->cfg.providers = pc;
    vv_dht_rate_set(d->rate, d->cfg.rate_per_source, d->cfg.rate_burst);
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
        struct store_op *op = r->kind == REQ_STORE ? r->op : NULL;
        if (r->kind == REQ_PING_USER && r->cb)
            r->cb(r->cb_arg, VV_ENODE_SHUTTING_DOWN, NULL, r->address, 0, false);
        req_free(r);
        if (op != NULL && --op->outstanding == 0)
            store_op_end(op, VV_ENODE_SHUTTING_DOWN);
    }
    /* Requests over connections: cancelled with the channel's above; their ops end. */
    while (d->conns) {
        struct conn_req *c = d->conns;
        struct store_op *op = c->kind == CONN_PUT ? c->op : NULL;
        conn_free(c, true);
        if (op != NULL && --op->outstanding == 0)
            store_op_end(op, VV_ENODE_SHUTTING_DOWN);
    }
    /* Their contexts went with the server; their checks with the channel's. */
    while (d->pending) {
        struct pending_store *ps = d->pending;
        pending_unlink(ps);
        pending_free(ps);
    }
    for (size_t i = 0; i < d->n_own; i++)
        vv_free(d->own[i].body);
    vv_free(d->own);
    vv_dht_values_free(d->values);
    vv_dht_providers_free(d->providers);
    vv_dht_tokens_clear(&d->tokens);
    vv_dht_rate_free(d->rate);
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
