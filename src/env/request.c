/*
 * The request/response layer on vv_env (vivim/env_request.h). It owns, per env: the
 * requests this node has outstanding (by id, by deadline, and per peer in the order sent),
 * the contexts of requests it is serving (by token, and per peer), one vv_env timer for the
 * earliest deadline, and the counters. It never touches a socket or a clock: bytes leave
 * through vv_env_send (transport_send below) and arrive through vv_env_deliver, time is
 * vv_env_now and its timers, so the daemon and the simulator run this same code.
 *
 * Determinism: every decision and every callback order depends only on the env's inputs
 * and its seeded randomness. The per-peer table uses the process-keyed hash (its bucket
 * order differs from run to run), so nothing here ever walks it; what must happen in an
 * order (failing a peer's requests when it goes down) walks the peer's own list, which is
 * in the order the requests were sent, and deadlines tie-break on the request's sequence
 * number.
 *
 * Datagrams: a request may go by datagram to an address instead of over a connection
 * (vv_env_request_datagram), and a request may arrive by datagram; its context then
 * answers by datagram to the source address. Their bounds are kept per address, not per
 * node ID: an outgoing request's per destination address, a served one's per source IP (a
 * claimed ID costs nothing to forge, an IP costs a machine; for IPv6 the /64, which one
 * subscriber usually holds whole). Both live in the peer table
 * under a key derived from the address (address_key), which no node ID can equal, so a
 * connection going down never touches them.
 *
 * Re-entrancy: a completion callback may send, cancel or complete other requests and reply
 * to contexts. Before a callback runs, its request is out of every structure, so nothing
 * it does can touch it. vv_env_fini must not be called from a callback.
 */
#include <arpa/inet.h>
#include <msgpack.h>
#include <sodium.h>
#include <string.h>

#include "env_internal.h"
#include "vivim/common.h"
#include "vivim/env_request.h"
#include "vivim/keyed_hash.h"

/* Buckets of the id and token tables when they are created; they double when fuller than
 * one entry per bucket. 16: most nodes have a handful of requests outstanding. */
#define INITIAL_BUCKETS 16

struct rpeer;

/* A request this node sent and awaits. */
struct req {
    uint64_t id;  /* on the wire */
    uint64_t seq; /* the layer's counter when it was sent: orders deadline ties and lists */
    uint16_t type;
    uint64_t sent_ms, deadline_ms;
    vv_env_answer_cb cb;
    void *arg;
    struct rpeer *peer;
    /* Sent by datagram: the destination (canonical; NULL over a connection), and the node
     * ID the answer must claim when the request named one (has_claim). */
    char *address;
    bool has_claim;
    uint8_t claim[VV_NODE_ID_BYTES];
    struct req *hnext;         /* id table chain */
    struct req *pprev, *pnext; /* the peer's list, in send order */
    size_t heap_ix;            /* position in the deadline heap */
};

/* A request this node serves: what a ctx token names. */
struct served {
    uint64_t token;
    uint64_t request_id; /* the requester's id, echoed in the answer */
    uint8_t channel;
    struct rpeer *peer;
    char *address; /* arrived by datagram: where the answer goes; NULL over a connection */
    struct served *hnext;
    struct served *pprev, *pnext; /* the peer's list */
};

/* One peer with something outstanding either way; freed when both counts are 0. */
struct rpeer {
    uint8_t id[VV_NODE_ID_BYTES];
    uint32_t n_out, n_served;
    struct req *out_head, *out_tail;
    struct served *srv_head;
    struct rpeer *hnext;
};

struct vv__env_req {
    struct vv_env *env;
    struct vv_env_req_limits limits;
    struct vv_env_req_stats stats;
    uint64_t seq;        /* requests ever sent */
    uint64_t id_key[2];  /* the secret of the id bijection */
    uint64_t next_token; /* serving contexts ever created */
    struct req **ids;    /* id table */
    size_t n_ids_buckets;
    struct served **tokens; /* token table */
    size_t n_token_buckets;
    struct rpeer **peers; /* peer table, keyed hash */
    size_t n_peer_buckets, n_peers;
    struct req **heap; /* min-heap on (deadline_ms, seq) */
    size_t heap_len, heap_cap;
    uint64_t timer_id;    /* 0: no timer armed */
    uint64_t timer_at_ms; /* when the armed timer fires */
};

static const struct vv_env_req_stats zero_stats;

/* ---- creation ---------------------------------------------------------------------------- */

static struct vv__env_req *layer(struct vv_env *env)
{
    if (env->req != NULL)
        return env->req;
    struct vv__env_req *r = vv_xcalloc(1, sizeof(*r));
    r->env = env;
    r->limits = (struct vv_env_req_limits){VV_REQ_DEFAULT_MAX_PER_PEER, VV_REQ_DEFAULT_MAX_TOTAL,
                                           VV_REQ_DEFAULT_MAX_SERVED_PER_PEER,
                                           VV_REQ_DEFAULT_MAX_SERVED_TOTAL};
    vv_env_random(env, r->id_key, sizeof(r->id_key));
    r->n_ids_buckets = r->n_token_buckets = r->n_peer_buckets = INITIAL_BUCKETS;
    r->ids = vv_xcalloc(r->n_ids_buckets, sizeof(*r->ids));
    r->tokens = vv_xcalloc(r->n_token_buckets, sizeof(*r->tokens));
    r->peers = vv_xcalloc(r->n_peer_buckets, sizeof(*r->peers));
    env->req = r;
    return r;
}

/* The splitmix64 finalizer: each step (xor with a shift of itself, multiplication by an
 * odd number) is invertible, so the whole is a bijection of 64-bit numbers. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The id of the seq-th request: a keyed bijection of the counter, so ids never repeat
 * within 2^64 requests and someone off the path cannot predict the next one (which is what
 * a request sent by datagram will need against forged answers). */
static uint64_t id_of(const struct vv__env_req *r, uint64_t seq)
{
    return mix64(seq + r->id_key[0]) ^ r->id_key[1];
}

/* ---- the id, token and peer tables ------------------------------------------------------- */

/* Ids are already mixed; tokens are a counter, whose low bits spread evenly. */
static size_t bucket64(uint64_t key, size_t n)
{
    return (size_t)(key & (n - 1));
}

static void ids_grow(struct vv__env_req *r)
{
    size_t n = r->n_ids_buckets * 2;
    struct req **t = vv_xcalloc(n, sizeof(*t));
    for (size_t b = 0; b < r->n_ids_buckets; b++) {
        for (struct req *q = r->ids[b], *next; q; q = next) {
            next = q->hnext;
            q->hnext = t[bucket64(q->id, n)];
            t[bucket64(q->id, n)] = q;
        }
    }
    vv_free(r->ids);
    r->ids = t;
    r->n_ids_buckets = n;
}

static struct req *ids_find(const struct vv__env_req *r, uint64_t id)
{
    for (struct req *q = r->ids[bucket64(id, r->n_ids_buckets)]; q; q = q->hnext)
        if (q->id == id)
            return q;
    return NULL;
}

static void ids_remove(struct vv__env_req *r, struct req *q)
{
    struct req **pp = &r->ids[bucket64(q->id, r->n_ids_buckets)];
    while (*pp != q)
        pp = &(*pp)->hnext;
    *pp = q->hnext;
}

static void tokens_grow(struct vv__env_req *r)
{
    size_t n = r->n_token_buckets * 2;
    struct served **t = vv_xcalloc(n, sizeof(*t));
    for (size_t b = 0; b < r->n_token_buckets; b++) {
        for (struct served *s = r->tokens[b], *next; s; s = next) {
            next = s->hnext;
            s->hnext = t[bucket64(s->token, n)];
            t[bucket64(s->token, n)] = s;
        }
    }
    vv_free(r->tokens);
    r->tokens = t;
    r->n_token_buckets = n;
}

static struct served *tokens_find(const struct vv__env_req *r, uint64_t token)
{
    if (r == NULL)
        return NULL;
    for (struct served *s = r->tokens[bucket64(token, r->n_token_buckets)]; s; s = s->hnext)
        if (s->token == token)
            return s;
    return NULL;
}

/* Peer IDs are chosen by whoever connects (a node ID is a hash, but of a key anyone can
 * grind), so this table takes the process-keyed hash (vivim/keyed_hash.h). */
static size_t peer_bucket(const uint8_t id[VV_NODE_ID_BYTES], size_t n)
{
    return (size_t)(vv_keyed_hash64(id, VV_NODE_ID_BYTES) & (n - 1));
}

static struct rpeer *peer_find(const struct vv__env_req *r, const uint8_t id[VV_NODE_ID_BYTES])
{
    for (struct rpeer *p = r->peers[peer_bucket(id, r->n_peer_buckets)]; p; p = p->hnext)
        if (memcmp(p->id, id, VV_NODE_ID_BYTES) == 0)
            return p;
    return NULL;
}

static struct rpeer *peer_get(struct vv__env_req *r, const uint8_t id[VV_NODE_ID_BYTES])
{
    struct rpeer *p = peer_find(r, id);
    if (p != NULL)
        return p;
    if (r->n_peers >= r->n_peer_buckets) {
        size_t n = r->n_peer_buckets * 2;
        struct rpeer **t = vv_xcalloc(n, sizeof(*t));
        for (size_t b = 0; b < r->n_peer_buckets; b++) {
            for (struct rpeer *x = r->peers[b], *next; x; x = next) {
                next = x->hnext;
                x->hnext = t[peer_bucket(x->id, n)];
                t[peer_bucket(x->id, n)] = x;
            }
        }
        vv_free(r->peers);
        r->peers = t;
        r->n_peer_buckets = n;
    }
    p = vv_xcalloc(1, sizeof(*p));
    memcpy(p->id, id, VV_NODE_ID_BYTES);
    size_t b = peer_bucket(id, r->n_peer_buckets);
    p->hnext = r->peers[b];
    r->peers[b] = p;
    r->n_peers++;
    return p;
}

/* The peer-table key of an address: a hash, in its own domain, of a tag (what the bound is
 * for) and the address. A node ID is SHA-256 of a key; nobody can make one equal this. */
static void address_key(char tag, const char *address, uint8_t key[VV_NODE_ID_BYTES])
{
    static const char domain[] = "vivim datagram bound";
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, VV_NODE_ID_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)domain, sizeof(domain));
    crypto_generichash_update(&st, (const unsigned char *)&tag, 1);
    crypto_generichash_update(&st, (const unsigned char *)address, strlen(address));
    crypto_generichash_final(&st, key, VV_NODE_ID_BYTES);
}

/* Frees p once nothing refers to it. */
static void peer_put(struct vv__env_req *r, struct rpeer *p)
{
    if (p->n_out > 0 || p->n_served > 0)
        return;
    struct rpeer **pp = &r->peers[peer_bucket(p->id, r->n_peer_buckets)];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    r->n_peers--;
    vv_free(p);
}

/* ---- the deadline heap and its one timer ------------------------------------------------- */

static bool earlier(const struct req *a, const struct req *b)
{
    return a->deadline_ms < b->deadline_ms || (a->deadline_ms == b->deadline_ms && a->seq < b->seq);
}

static void heap_set(struct vv__env_req *r, size_t i, struct req *q)
{
    r->heap[i] = q;
    q->heap_ix = i;
}

static void heap_up(struct vv__env_req *r, size_t i)
{
    struct req *q = r->heap[i];
    while (i > 0 && earlier(q, r->heap[(i - 1) / 2])) {
        heap_set(r, i, r->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(r, i, q);
}

static void heap_down(struct vv__env_req *r, size_t i)
{
    struct req *q = r->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->heap_len)
            break;
        if (c + 1 < r->heap_len && earlier(r->heap[c + 1], r->heap[c]))
            c++;
        if (!earlier(r->heap[c], q))
            break;
        heap_set(r, i, r->heap[c]);
        i = c;
    }
    heap_set(r, i, q);
}

static void heap_push(struct vv__env_req *r, struct req *q)
{
    if (r->heap_len == r->heap_cap) {
        r->heap_cap = r->heap_cap ? r->heap_cap * 2 : INITIAL_BUCKETS;
        r->heap = vv_xrealloc(r->heap, r->heap_cap * sizeof(*r->heap));
    }
    heap_set(r, r->heap_len++, q);
    heap_up(r, r->heap_len - 1);
}

static void heap_remove(struct vv__env_req *r, struct req *q)
{
    size_t i = q->heap_ix;
    struct req *last = r->heap[--r->heap_len];
    if (last == q)
        return;
    heap_set(r, i, last);
    heap_up(r, i);
    heap_down(r, last->heap_ix);
}

static void on_timer(struct vv_env *env, void *arg);

/*
 * Keeps one timer armed no later than the earliest deadline. A timer that would fire
 * earlier than needed (its request was answered) is left alone: it fires, finds nothing
 * due and re-arms, which costs less than restarting the timer on every answer.
 */
static void arm(struct vv__env_req *r)
{
    struct vv_env *env = r->env;
    if (r->heap_len == 0) {
        vv_env_timer_cancel(env, r->timer_id);
        r->timer_id = 0;
        return;
    }
    uint64_t at = r->heap[0]->deadline_ms;
    if (r->timer_id != 0 && r->timer_at_ms <= at)
        return;
    vv_env_timer_cancel(env, r->timer_id);
    uint64_t now = vv_env_now(env);
    r->timer_id = vv_env_timer_start(env, at > now ? at - now : 0, 0, on_timer, r);
    r->timer_at_ms = at;
}

/* ---- completing a request ---------------------------------------------------------------- */

/* Takes q out of every structure; the caller frees it. */
static void unlink_req(struct vv__env_req *r, struct req *q)
{
    ids_remove(r, q);
    heap_remove(r, q);
    struct rpeer *p = q->peer;
    if (q->pprev)
        q->pprev->pnext = q->pnext;
    else
        p->out_head = q->pnext;
    if (q->pnext)
        q->pnext->pprev = q->pprev;
    else
        p->out_tail = q->pprev;
    p->n_out--;
    r->stats.in_flight--;
}

/* Completes q with a (status and answer fields filled by the caller). */
static void complete(struct vv__env_req *r, struct req *q, struct vv_env_answer *a)
{
    uint8_t peer[VV_NODE_ID_BYTES];
    char address[VV_ENV_ADDRESS_BYTES];
    if (q->address == NULL) {
        memcpy(peer, q->peer->id, VV_NODE_ID_BYTES);
        a->peer = peer;
    } else {
        /* By datagram: the node named, else the one whose answer this is (a->peer, set by
         * the caller), else none. */
        if (q->has_claim) {
            memcpy(peer, q->claim, VV_NODE_ID_BYTES);
            a->peer = peer;
        } else if (a->peer != NULL) {
            memcpy(peer, a->peer, VV_NODE_ID_BYTES);
            a->peer = peer;
        }
        vv_strlcpy(address, q->address, sizeof(address));
        a->address = address;
        vv_free(q->address);
    }
    unlink_req(r, q);
    peer_put(r, q->peer);
    a->id = q->id;
    a->type = q->type;
    uint64_t now = vv_env_now(r->env);
    a->elapsed_ms = now > q->sent_ms ? now - q->sent_ms : 0;
    switch (a->status) {
    case 0:
        r->stats.answered++;
        break;
    case VV_EREQ_REMOTE:
        r->stats.remote_errors++;
        break;
    case VV_EREQ_BUSY:
        r->stats.busy++;
        break;
    case VV_EREQ_TIMEOUT:
        r->stats.timed_out++;
        break;
    case VV_EREQ_PEER_DOWN:
        r->stats.peer_down++;
        break;
    default:
        r->stats.bad_answers++;
        break;
    }
    vv_env_answer_cb cb = q->cb;
    void *arg = q->arg;
    vv_free(q);
    cb(r->env, a, arg);
}

static void on_timer(struct vv_env *env, void *arg)
{
    struct vv__env_req *r = arg;
    r->timer_id = 0; /* one-shot: it is spent */
    uint64_t now = vv_env_now(env);
    while (r->heap_len > 0 && r->heap[0]->deadline_ms <= now) {
        struct vv_env_answer a = {.status = VV_EREQ_TIMEOUT};
        complete(r, r->heap[0], &a);
    }
    arm(r);
}

/* ---- frames ------------------------------------------------------------------------------ */

/*
 * The one place bytes of this layer leave the node: over the peer's connection, or by
 * datagram when there is an address (the request remembers which way it went, a served
 * context the way its request came).
 */
static int transport_send(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES],
                          const char *address, uint8_t channel, const uint8_t *frame, size_t len)
{
    if (address != NULL)
        return vv_env_send_datagram(env, address, frame, len);
    return vv_env_send(env, peer, (enum vv_channel)channel, frame, len);
}

/* Builds [major, minor, type, id, body] in sb from an encoded body, and checks the result
 * as a receiver will. Returns 0, VV_EWIRE_TOO_LARGE, or VV_EINVAL for a body that is not
 * one MessagePack value within the frame limits. sb is initialised here in every case. */
static int build_frame(msgpack_sbuffer *sb, uint16_t type, uint64_t id, const uint8_t *body,
                       size_t body_len, size_t max)
{
    msgpack_sbuffer_init(sb);
    if (body == NULL || body_len == 0)
        return VV_EINVAL;
    if (body_len > max)
        return VV_EWIRE_TOO_LARGE;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, id);
    msgpack_sbuffer_write(sb, (const char *)body, body_len);
    struct vv_wire_header h;
    int rc = vv_wire_check((const uint8_t *)sb->data, sb->size, &h);
    if (rc == VV_EWIRE_TOO_LARGE && sb->size > VV_WIRE_MAX_FRAME_BYTES)
        return VV_EWIRE_TOO_LARGE;
    if (rc == 0 && sb->size > max)
        return VV_EWIRE_TOO_LARGE;
    return rc < 0 ? VV_EINVAL : 0;
}

/* ---- sending requests -------------------------------------------------------------------- */

/* Sends a request over the connection to peer (address NULL), or by datagram to address
 * (peer then the node ID the answer must claim, or NULL). */
static int request_start(struct vv_env *env, const uint8_t *peer, const char *address,
                         uint16_t type, const uint8_t *body, size_t body_len, uint32_t timeout_ms,
                         vv_env_answer_cb cb, void *arg, uint64_t *id)
{
    uint8_t ch = vv_wire_channel(type);
    if (cb == NULL || (peer == NULL && address == NULL) || timeout_ms == 0 ||
        timeout_ms > VV_REQ_MAX_TIMEOUT_MS || ch >= VV_ENV_MAX_CHANNELS ||
        vv_req_is_answer_type(type))
        return VV_EINVAL;
    char canon[VV_ENV_ADDRESS_BYTES];
    uint8_t key[VV_NODE_ID_BYTES];
    const uint8_t *pkey = peer;
    if (address != NULL) {
        int arc = vv_env_address_canon(address, canon, sizeof(canon));
        if (arc != 0)
            return arc;
        address = canon;
        address_key('o', canon, key);
        pkey = key;
    }
    struct vv__env_req *r = layer(env);
    struct rpeer *p = peer_find(r, pkey);
    if (r->stats.in_flight >= r->limits.max_total ||
        (p != NULL && p->n_out >= r->limits.max_per_peer)) {
        r->stats.refused++;
        return VV_EREQ_TOO_MANY;
    }
    uint64_t seq = r->seq + 1;
    uint64_t rid = id_of(r, seq);
    if (rid == 0) /* once in 2^64 requests: skip the one counter value that maps to 0 */
        rid = id_of(r, ++seq);
    msgpack_sbuffer sb;
    int rc = build_frame(&sb, type, rid, body, body_len,
                         address ? VV_ENV_MAX_DATAGRAM_FRAME_BYTES : VV_WIRE_MAX_FRAME_BYTES);
    /* The send may report the peer down from inside (a failed socket write): that fails
     * this peer's other requests, with their callbacks, and may free p; this request is
     * not in the tables yet, and p is looked up again below. The counter moves first, so a
     * request sent from one of those callbacks gets another id (a refused send burns one). */
    if (rc == 0) {
        r->seq = seq;
        rc = transport_send(env, peer, address, ch, (const uint8_t *)sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        if (rc != VV_EINVAL && rc != VV_EWIRE_TOO_LARGE)
            r->stats.refused++;
        return rc;
    }
    p = peer_get(r, pkey);
    struct req *q = vv_xcalloc(1, sizeof(*q));
    if (address != NULL) {
        q->address = vv_xstrdup(address);
        q->has_claim = peer != NULL;
        if (peer != NULL)
            memcpy(q->claim, peer, VV_NODE_ID_BYTES);
    }
    q->id = rid;
    q->seq = seq;
    q->type = type;
    q->sent_ms = vv_env_now(env);
    q->deadline_ms = q->sent_ms + timeout_ms;
    q->cb = cb;
    q->arg = arg;
    q->peer = p;
    q->pprev = p->out_tail;
    if (p->out_tail)
        p->out_tail->pnext = q;
    else
        p->out_head = q;
    p->out_tail = q;
    p->n_out++;
    if (r->stats.in_flight + 1 > r->n_ids_buckets)
        ids_grow(r);
    size_t b = bucket64(rid, r->n_ids_buckets);
    q->hnext = r->ids[b];
    r->ids[b] = q;
    heap_push(r, q);
    r->stats.in_flight++;
    r->stats.sent++;
    arm(r);
    if (id)
        *id = rid;
    return 0;
}

int vv_env_request(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint16_t type,
                   const uint8_t *body, size_t body_len, uint32_t timeout_ms, vv_env_answer_cb cb,
                   void *arg, uint64_t *id)
{
    if (peer == NULL)
        return VV_EINVAL;
    return request_start(env, peer, NULL, type, body, body_len, timeout_ms, cb, arg, id);
}

int vv_env_request_datagram(struct vv_env *env, const uint8_t *peer, const char *address,
                            uint16_t type, const uint8_t *body, size_t body_len,
                            uint32_t timeout_ms, vv_env_answer_cb cb, void *arg, uint64_t *id)
{
    if (address == NULL)
        return VV_EINVAL;
    return request_start(env, peer, address, type, body, body_len, timeout_ms, cb, arg, id);
}

int vv_env_request_cancel(struct vv_env *env, uint64_t id)
{
    struct vv__env_req *r = env->req;
    struct req *q = r ? ids_find(r, id) : NULL;
    if (q == NULL)
        return VV_ENOTFOUND;
    unlink_req(r, q);
    peer_put(r, q->peer);
    vv_free(q->address);
    vv_free(q);
    r->stats.cancelled++;
    arm(r);
    return 0;
}

size_t vv_env_request_cancel_channel(struct vv_env *env, enum vv_channel ch)
{
    struct vv__env_req *r = env->req;
    if (r == NULL)
        return 0;
    /* No callback fires, so the order of this walk shows nowhere. */
    size_t n = 0;
    for (size_t b = 0; b < r->n_ids_buckets; b++) {
        struct req *q = r->ids[b];
        while (q) {
            struct req *next = q->hnext;
            if (vv_wire_channel(q->type) == ch) {
                vv_env_request_cancel(env, q->id);
                n++;
            }
            q = next;
        }
    }
    return n;
}

/* ---- answers arriving -------------------------------------------------------------------- */

/* Reads an error answer's body [code, message]. */
static int parse_error(const msgpack_object *body, uint32_t *code, const char **msg, size_t *len)
{
    const msgpack_object *a;
    uint64_t c;
    if (vv_wire_get_array(body, 2, 2, &a, NULL) != 0 ||
        vv_wire_get_u64(&a[0], VV_REQ_ERROR_CODE_MAX, &c) != 0 || c == 0 ||
        vv_wire_get_str(&a[1], VV_REQ_ERROR_MESSAGE_MAX_BYTES, msg, len) != 0)
        return VV_EWIRE_MALFORMED;
    *code = (uint32_t)c;
    return 0;
}

/* Whether an answer from peer (over a connection: from NULL) or from the address from
 * claiming to be peer (by datagram) may complete q. */
static bool answer_matches(const struct req *q, const uint8_t peer[VV_NODE_ID_BYTES],
                           const char *from)
{
    if (from == NULL)
        return q->address == NULL && memcmp(q->peer->id, peer, VV_NODE_ID_BYTES) == 0;
    /* By datagram: from the address asked (the id is secret from anyone off the path, the
     * address is what they would have to spoof too), claiming the ID asked for, if any. */
    return q->address != NULL && strcmp(q->address, from) == 0 &&
           (!q->has_claim || memcmp(q->claim, peer, VV_NODE_ID_BYTES) == 0);
}

static void on_answer(struct vv__env_req *r, const uint8_t peer[VV_NODE_ID_BYTES], const char *from,
                      uint8_t channel, uint16_t type, uint64_t rid, const uint8_t *data, size_t len)
{
    if (rid == 0) {
        r->stats.bad_answers++; /* an answer to nothing: the peer's bug, dropped */
        return;
    }
    struct req *q = ids_find(r, rid);
    /* Only the peer asked, on the channel asked, the way asked, may answer. */
    if (q == NULL || vv_wire_channel(q->type) != channel || !answer_matches(q, peer, from)) {
        r->stats.late++;
        return;
    }
    struct vv_wire_frame f;
    struct vv_env_answer a = {0};
    if (from != NULL)
        a.peer = peer; /* complete keeps the named peer's ID when there is one */
    if (vv_wire_decode(data, len, &f) != 0) {
        a.status = VV_EREQ_BAD_ANSWER;
        complete(r, q, &a);
        arm(r);
        return;
    }
    if ((type & 0xff) == VV_REQ_TYPE_REPLY) {
        a.status = 0;
        a.reply = &f;
    } else if (parse_error(&f.body, &a.error_code, &a.error_message, &a.error_message_len) == 0) {
        a.status = a.error_code == VV_REQ_ERR_BUSY ? VV_EREQ_BUSY : VV_EREQ_REMOTE;
    } else {
        a.status = VV_EREQ_BAD_ANSWER;
    }
    complete(r, q, &a);
    vv_wire_frame_free(&f);
    arm(r); /* the last one answered: no timer left behind */
}

/* ---- serving ----------------------------------------------------------------------------- */

static int send_error(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const char *address,
                      uint8_t channel, uint64_t rid, uint32_t code, const char *msg, size_t msg_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, (uint16_t)(channel << 8 | VV_REQ_TYPE_ERROR), rid);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint32(&pk, code);
    msgpack_pack_str(&pk, msg_len);
    msgpack_pack_str_body(&pk, msg_len ? msg : "", msg_len);
    int rc = transport_send(env, peer, address, channel, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/*
 * The served bound's key of a source address: its IPv4 address, whatever port and ID it
 * claims; for IPv6 its /64, since one subscriber is routinely given a /64 and can send from
 * any address in it.
 */
static void source_key(const char *from, uint8_t key[VV_NODE_ID_BYTES])
{
    char ip[VV_ENV_ADDRESS_BYTES];
    uint8_t a6[16];
    if (vv_env_address_ip(from, ip, sizeof(ip)) != 0)
        vv_strlcpy(ip, from, sizeof(ip));
    if (strchr(ip, ':') != NULL && inet_pton(AF_INET6, ip, a6) == 1) {
        memset(a6 + 8, 0, 8);
        inet_ntop(AF_INET6, a6, ip, sizeof(ip));
    }
    address_key('s', ip, key);
}

static void on_request(struct vv__env_req *r, const uint8_t peer[VV_NODE_ID_BYTES],
                       const char *from, uint8_t channel, uint64_t rid, const uint8_t *data,
                       size_t len)
{
    struct vv_env *env = r->env;
    uint8_t key[VV_NODE_ID_BYTES];
    const uint8_t *pkey = peer;
    if (from != NULL) {
        source_key(from, key);
        pkey = key;
    }
    struct rpeer *p = peer_find(r, pkey);
    if (r->stats.serving >= r->limits.max_served_total ||
        (p != NULL && p->n_served >= r->limits.max_served_per_peer)) {
        r->stats.served_busy++;
        static const char busy[] = "busy";
        if (send_error(env, peer, from, channel, rid, VV_REQ_ERR_BUSY, busy, sizeof(busy) - 1) != 0)
            r->stats.answers_unsent++;
        return;
    }
    struct vv_wire_frame f;
    if (vv_wire_decode(data, len, &f) != 0) {
        /* The daemon's transport checked the frame already; a simulated peer's module may
         * send anything. Unanswerable: dropped (the requester times out). */
        r->stats.bad_requests++;
        return;
    }
    p = peer_get(r, pkey);
    struct served *s = vv_xcalloc(1, sizeof(*s));
    s->address = from ? vv_xstrdup(from) : NULL;
    s->token = ++r->next_token;
    s->request_id = rid;
    s->channel = channel;
    s->peer = p;
    s->pnext = p->srv_head;
    if (p->srv_head)
        p->srv_head->pprev = s;
    p->srv_head = s;
    p->n_served++;
    if (r->stats.serving + 1 > r->n_token_buckets)
        tokens_grow(r);
    size_t b = bucket64(s->token, r->n_token_buckets);
    s->hnext = r->tokens[b];
    r->tokens[b] = s;
    r->stats.serving++;
    r->stats.served++;
    struct vv_env_channel *c = &env->channels[channel];
    c->serve(env, s->token, peer, &f, c->serve_arg);
    vv_wire_frame_free(&f);
}

/* Takes s out of every structure and frees it (and its peer, when that was the last). */
static void end_served(struct vv__env_req *r, struct served *s)
{
    struct served **pp = &r->tokens[bucket64(s->token, r->n_token_buckets)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    struct rpeer *p = s->peer;
    if (s->pprev)
        s->pprev->pnext = s->pnext;
    else
        p->srv_head = s->pnext;
    if (s->pnext)
        s->pnext->pprev = s->pprev;
    p->n_served--;
    r->stats.serving--;
    vv_free(s->address);
    vv_free(s);
    peer_put(r, p);
}

/*
 * Ends s before its answer is sent, keeping what the send needs. The transport may report
 * the peer down from inside the send (the daemon's does when the socket write fails), and
 * that drops the peer's contexts: s must already be gone by then.
 */
struct served_copy {
    uint8_t peer[VV_NODE_ID_BYTES];
    uint8_t channel;
    uint64_t request_id;
    bool by_datagram;
    char address[VV_ENV_ADDRESS_BYTES];
};

static struct served_copy end_served_copy(struct vv__env_req *r, struct served *s)
{
    struct served_copy c;
    memcpy(c.peer, s->peer->id, VV_NODE_ID_BYTES);
    c.channel = s->channel;
    c.request_id = s->request_id;
    c.by_datagram = s->address != NULL;
    if (c.by_datagram)
        vv_strlcpy(c.address, s->address, sizeof(c.address));
    end_served(r, s);
    return c;
}

void vv_env_set_server(struct vv_env *env, enum vv_channel ch, vv_env_serve_cb cb, void *arg)
{
    if ((unsigned)ch >= VV_ENV_MAX_CHANNELS)
        return;
    struct vv__env_req *r = layer(env);
    env->channels[ch].serve = cb;
    env->channels[ch].serve_arg = arg;
    if (cb != NULL)
        return;
    for (size_t b = 0; b < r->n_token_buckets; b++) {
        struct served *s = r->tokens[b];
        while (s) {
            struct served *next = s->hnext;
            if (s->channel == ch) {
                end_served(r, s);
                r->stats.served_dropped++;
            }
            s = next;
        }
    }
}

int vv_env_reply(struct vv_env *env, uint64_t ctx, const uint8_t *body, size_t body_len)
{
    struct vv__env_req *r = env->req;
    struct served *s = tokens_find(r, ctx);
    if (s == NULL)
        return VV_ENOTFOUND;
    msgpack_sbuffer sb;
    int rc = build_frame(&sb, (uint16_t)(s->channel << 8 | VV_REQ_TYPE_REPLY), s->request_id, body,
                         body_len,
                         s->address ? VV_ENV_MAX_DATAGRAM_FRAME_BYTES : VV_WIRE_MAX_FRAME_BYTES);
    if (rc == 0) {
        struct served_copy c = end_served_copy(r, s);
        rc = transport_send(env, c.peer, c.by_datagram ? c.address : NULL, c.channel,
                            (const uint8_t *)sb.data, sb.size);
        if (rc != 0)
            r->stats.answers_unsent++;
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* The longest prefix of at most max bytes that does not cut a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    return k;
}

int vv_env_reply_error(struct vv_env *env, uint64_t ctx, uint32_t code, const char *message)
{
    struct vv__env_req *r = env->req;
    if (code == 0 || code > VV_REQ_ERROR_CODE_MAX)
        return VV_EINVAL;
    struct served *s = tokens_find(r, ctx);
    if (s == NULL)
        return VV_ENOTFOUND;
    size_t n = message ? utf8_cut(message, strlen(message), VV_REQ_ERROR_MESSAGE_MAX_BYTES) : 0;
    /* The receiver checks the text as it checks every str from a peer; a message that would
     * fail there is not worth losing the answer for. Checked the same way, by decoding. */
    if (n > 0) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, 0, 0);
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, message, n);
        struct vv_wire_frame f;
        const char *p;
        if (vv_wire_decode((const uint8_t *)sb.data, sb.size, &f) != 0 ||
            vv_wire_get_str(&f.body, VV_REQ_ERROR_MESSAGE_MAX_BYTES, &p, NULL) != 0)
            n = 0;
        vv_wire_frame_free(&f);
        msgpack_sbuffer_destroy(&sb);
    }
    struct served_copy c = end_served_copy(r, s);
    int rc = send_error(env, c.peer, c.by_datagram ? c.address : NULL, c.channel, c.request_id,
                        code, message, n);
    if (rc != 0)
        r->stats.answers_unsent++;
    return rc;
}

/* ---- the hooks env.c calls --------------------------------------------------------------- */

bool vv__env_req_deliver(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                         const uint8_t *data, size_t len)
{
    uint16_t type;
    uint64_t rid;
    /* Not a frame, or a frame for another channel than it came on (a simulated module may
     * send anything): the channel's module decides, as before this layer existed. */
    if (vv_wire_peek(data, len, &type, &rid) != 0 || vv_wire_channel(type) != channel)
        return false;
    if (vv_req_is_answer_type(type)) {
        on_answer(layer(env), peer, NULL, channel, type, rid, data, len);
        return true;
    }
    if (rid == 0 || env->channels[channel].serve == NULL)
        return false;
    on_request(layer(env), peer, NULL, channel, rid, data, len);
    return true;
}

bool vv__env_req_deliver_datagram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                                  const char *from, uint8_t channel, const uint8_t *data,
                                  size_t len)
{
    uint16_t type;
    uint64_t rid;
    if (vv_wire_peek(data, len, &type, &rid) != 0)
        return false;
    if (vv_req_is_answer_type(type)) {
        on_answer(layer(env), claimed, from, channel, type, rid, data, len);
        return true;
    }
    if (rid == 0 || env->channels[channel].serve == NULL)
        return false;
    on_request(layer(env), claimed, from, channel, rid, data, len);
    return true;
}

const char *vv_env_request_source(struct vv_env *env, uint64_t ctx)
{
    struct served *s = tokens_find(env->req, ctx);
    return s ? s->address : NULL;
}

void vv__env_req_peer_down(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES])
{
    struct vv__env_req *r = env->req;
    if (r == NULL)
        return;
    struct rpeer *p = peer_find(r, peer);
    if (p == NULL)
        return;
    /* Its requests to us: nobody to answer any more. Keep p alive while doing so. */
    p->n_out++;
    while (p->srv_head) {
        end_served(r, p->srv_head);
        r->stats.served_dropped++;
    }
    p->n_out--;
    peer_put(r, p);
    /* Ours to it, oldest first. A callback may send a new request to the peer (the
     * transport may accept it while the connection is being torn down); that one is not
     * failed here but by its own timeout, so a callback that retries cannot loop. */
    uint64_t last = r->seq;
    for (;;) {
        p = peer_find(r, peer);
        if (p == NULL || p->out_head == NULL || p->out_head->seq > last)
            break;
        struct vv_env_answer a = {.status = VV_EREQ_PEER_DOWN};
        complete(r, p->out_head, &a);
    }
    arm(r);
}

void vv__env_req_free(struct vv_env *env)
{
    struct vv__env_req *r = env->req;
    if (r == NULL)
        return;
    vv_env_timer_cancel(env, r->timer_id);
    for (size_t b = 0; b < r->n_ids_buckets; b++) {
        for (struct req *q = r->ids[b], *next; q; q = next) {
            next = q->hnext;
            vv_free(q->address);
            vv_free(q);
        }
    }
    for (size_t b = 0; b < r->n_token_buckets; b++) {
        for (struct served *s = r->tokens[b], *next; s; s = next) {
            next = s->hnext;
            vv_free(s->address);
            vv_free(s);
        }
    }
    for (size_t b = 0; b < r->n_peer_buckets; b++) {
        for (struct rpeer *p = r->peers[b], *next; p; p = next) {
            next = p->hnext;
            vv_free(p);
        }
    }
    vv_free(r->ids);
    vv_free(r->tokens);
    vv_free(r->peers);
    vv_free(r->heap);
    vv_free(r);
    env->req = NULL;
    for (int i = 0; i < VV_ENV_MAX_CHANNELS; i++) {
        env->channels[i].serve = NULL;
        env->channels[i].serve_arg = NULL;
    }
}

/* ---- limits and counters ----------------------------------------------------------------- */

void vv_env_req_set_limits(struct vv_env *env, const struct vv_env_req_limits *limits)
{
    struct vv__env_req *r = layer(env);
    if (limits->max_per_peer)
        r->limits.max_per_peer = limits->max_per_peer;
    if (limits->max_total)
        r->limits.max_total = limits->max_total;
    if (limits->max_served_per_peer)
        r->limits.max_served_per_peer = limits->max_served_per_peer;
    if (limits->max_served_total)
        r->limits.max_served_total = limits->max_served_total;
}

const struct vv_env_req_stats *vv_env_req_stats(struct vv_env *env)
{
    return env->req ? &env->req->stats : &zero_stats;
}
