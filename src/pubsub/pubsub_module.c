/*
 * The pubsub module: the router (vivim/pubsub.h) on the node's env, [pubsub], the
 * vivimd_pubsub_* metrics, topic policy and retention, and the pubsub.* RPC methods with
 * their subscriptions, whose messages go to the subscribing client as pubsub.message
 * notifications on its connection.
 *
 * A topic the node joins for an RPC subscription is left when its last subscription goes
 * (pubsub.unsubscribe, the client gone, or cut off for not reading: the RPC server then
 * closes the connection with VV_ERPC_QUEUE_FULL). Retained messages (a topic's retain) are
 * kept in memory, bounded by retain and by VV_PUBSUB_RETAIN_BYTES per topic.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/env_request.h"
#include "vivim/env_uv.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/node.h"
#include "vivim/pubsub.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"

#define SWEEP_MS               1000
#define VV_PUBSUB_RETAIN_BYTES (16u << 20) /* retained data of one topic at most */
#define TOPIC_ID_MAX_BYTES     200         /* circleId, contentId */
#define HISTORY_PEERS          2           /* mesh peers asked for a topic's history */
#define HISTORY_TIMEOUT_MS     10000
/* A history reply's frames: within one frame, with room for the header and the array. */
#define HISTORY_REPLY_BYTES (VV_WIRE_MAX_FRAME_BYTES - 4096)

struct retained {
    uint8_t id[VV_PUBSUB_ID_BYTES];
    uint8_t from[VV_NODE_ID_BYTES];
    uint8_t origin[VV_ED25519_PK_BYTES]; /* with sig: the message can be sent on as signed */
    uint8_t sig[VV_PUBSUB_SIG_BYTES];
    uint64_t seqno;
    uint64_t received_ms; /* wall clock */
    uint8_t *data;
    size_t len;
};

struct mtopic {
    char *name;
    size_t len;
    bool has_policy;
    uint32_t retain;
    struct retained *ring; /* retain slots */
    uint32_t head, n;      /* oldest at head */
    size_t bytes;
    uint32_t subs;     /* RPC subscriptions */
    bool joined;       /* by this module: subscriptions or retention */
    bool history_sync; /* its history was asked of mesh peers since it was joined */
    struct mtopic *next;
};

struct rsub {
    uint64_t id;
    struct mtopic *t;
    struct vv_rpc_conn *conn;
    struct rsub *next;
};

struct psm {
    struct vv_node *n;
    struct vv_pubsub *ps;
    struct vv_env *env;
    struct mtopic *topics;
    uint32_t n_topics;
    struct rsub *subs;
    uint32_t n_subs;
    uint64_t next_sub;
    uint64_t sweep;
    struct vv_counter *dropped; /* {reason} */
    struct vv_pubsub_stats synced;
    uint64_t notify_failed;
};

static struct psm *psm_of(struct vv_node *n)
{
    return vv_node_module_data(n, &vv_pubsub_module);
}

/* ---- topics ------------------------------------------------------------------------------ */

static struct mtopic *topic_find(struct psm *m, const char *name, size_t len)
{
    for (struct mtopic *t = m->topics; t; t = t->next)
        if (t->len == len && memcmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

static void ring_clear(struct mtopic *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        vv_free(t->ring[(t->head + i) % t->retain].data);
    vv_free(t->ring);
    t->ring = NULL;
    t->head = t->n = 0;
    t->bytes = 0;
}

static struct mtopic *topic_get(struct psm *m, const char *name, size_t len)
{
    struct mtopic *t = topic_find(m, name, len);
    if (t != NULL)
        return t;
    if (m->n_topics >= vv_pubsub_settings(&m->n->config)->max_joined_topics)
        return NULL;
    t = vv_xcalloc(1, sizeof(*t));
    t->name = vv_xmalloc(len + 1);
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->len = len;
    t->next = m->topics;
    m->topics = t;
    m->n_topics++;
    return t;
}

static void topic_maybe_free(struct psm *m, struct mtopic *t)
{
    if (t->has_policy || t->subs > 0 || t->joined)
        return;
    for (struct mtopic **pp = &m->topics; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    ring_clear(t);
    vv_free(t->name);
    vv_free(t);
    m->n_topics--;
}

static void retain_msg(struct mtopic *t, const struct vv_pubsub_msg *msg, const uint8_t *id,
                       uint64_t now_wall)
{
    if (t->retain == 0 || msg->data_len > VV_PUBSUB_RETAIN_BYTES)
        return;
    if (t->ring == NULL)
        t->ring = vv_xcalloc(t->retain, sizeof(*t->ring));
    while (t->n > 0 && (t->n == t->retain || t->bytes + msg->data_len > VV_PUBSUB_RETAIN_BYTES)) {
        struct retained *old = &t->ring[t->head];
        t->bytes -= old->len;
        vv_free(old->data);
        t->head = (t->head + 1) % t->retain;
        t->n--;
    }
    struct retained *r = &t->ring[(t->head + t->n) % t->retain];
    memcpy(r->id, id, VV_PUBSUB_ID_BYTES);
    memcpy(r->from, msg->from, VV_NODE_ID_BYTES);
    memcpy(r->origin, msg->origin, VV_ED25519_PK_BYTES);
    memcpy(r->sig, msg->sig, VV_PUBSUB_SIG_BYTES);
    r->seqno = msg->seqno;
    r->received_ms = now_wall;
    r->len = msg->data_len;
    r->data = vv_xmalloc(r->len + 1);
    if (r->len)
        memcpy(r->data, msg->data, r->len);
    t->bytes += r->len;
    t->n++;
}

/* A topic is joined while it has subscriptions or keeps messages (retain): a node keeps
 * only what it receives, and receives only what it joined. Joining again asks the mesh for
 * what was missed (the sweep, once the mesh has formed). */
static int update_joined(struct psm *m, struct mtopic *t)
{
    bool want = t->subs > 0 || t->retain > 0;
    if (m->ps == NULL || want == t->joined)
        return 0;
    if (want) {
        int rc = vv_pubsub_join(m->ps, t->name, t->len);
        if (rc != 0)
            return rc;
    } else {
        (void)vv_pubsub_leave(m->ps, t->name, t->len);
    }
    t->joined = want;
    t->history_sync = false;
    return 0;
}

/* ---- subscriptions ----------------------------------------------------------------------- */

static void sub_drop(struct psm *m, struct rsub *s)
{
    for (struct rsub **pp = &m->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    m->n_subs--;
    struct mtopic *t = s->t;
    vv_rpc_conn_unref(s->conn);
    vv_free(s);
    t->subs--;
    (void)update_joined(m, t);
    topic_maybe_free(m, t);
}

static char *b64(const uint8_t *data, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = vv_xmalloc(cap);
    sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

static json_t *message_json(const uint8_t *id, const uint8_t *from, uint64_t seqno,
                            const uint8_t *data, size_t len)
{
    char idhex[2 * VV_PUBSUB_ID_BYTES + 1], fromhex[2 * VV_NODE_ID_BYTES + 1];
    vv_hex_encode(id, VV_PUBSUB_ID_BYTES, idhex);
    vv_hex_encode(from, VV_NODE_ID_BYTES, fromhex);
    char *d = b64(data, len);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "messageId", idhex, "from", fromhex, "seqno",
                          (json_int_t)(seqno & INT64_MAX), "data", d);
    vv_free(d);
    return o;
}

static void on_deliver(void *arg, const struct vv_pubsub_msg *msg,
                       const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    struct psm *m = arg;
    struct mtopic *t = topic_find(m, msg->topic, msg->topic_len);
    if (t == NULL)
        return;
    retain_msg(t, msg, id, vv_env_wall_ms(m->env));
    if (t->subs == 0)
        return;
    /* The notification's fields are made once (base64, hex) and shared by reference among
     * the subscriptions' copies, which differ only in subscriptionId. */
    json_t *base = message_json(id, msg->from, msg->seqno, msg->data, msg->data_len);
    json_object_set_new(base, "topic", json_stringn(t->name, t->len));
    for (struct rsub *s = m->subs, *next; s; s = next) {
        next = s->next;
        if (s->t != t)
            continue;
        if (!vv_rpc_conn_is_open(s->conn)) {
            sub_drop(m, s);
            continue;
        }
        json_t *p = json_copy(base);
        json_object_set_new(p, "subscriptionId", json_integer((json_int_t)s->id));
        if (vv_rpc_notify(s->conn, "pubsub.message", p) != 0) {
            /* Closed, or cut off for not reading (the server closed it): its subscriptions
             * go. */
            m->notify_failed++;
            sub_drop(m, s);
        }
    }
    json_decref(base);
}

/* ---- history between nodes --------------------------------------------------------------- */

/* A peer asks for the messages this node keeps of a topic: [topic, max]. The reply holds at
 * most max of the newest (and what fits one frame), oldest first, each as the MESSAGE frame
 * it was, signature included, so the asker checks it like any message. A topic not kept
 * here gets an empty list. */
static void serve_history(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                          const struct vv_wire_frame *request, void *arg)
{
    (void)peer;
    struct psm *m = arg;
    const msgpack_object *a;
    uint32_t n;
    const char *topic;
    size_t tlen;
    uint64_t max;
    if (request->h.type != VV_PUBSUB_TYPE_HISTORY) {
        vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, NULL);
        return;
    }
    if (vv_wire_get_array(&request->body, 2, 2, &a, &n) != 0 ||
        vv_wire_get_str(&a[0], VV_PUBSUB_MAX_TOPIC_BYTES, &topic, &tlen) != 0 ||
        vv_wire_get_u64(&a[1], UINT32_MAX, &max) != 0) {
        vv_env_reply_error(env, ctx, VV_REQ_ERR_BAD_REQUEST, "expected [topic, max]");
        return;
    }
    struct mtopic *t = topic_find(m, topic, tlen);
    uint32_t have = t ? t->n : 0, take = 0;
    size_t bytes = 0;
    msgpack_sbuffer *frames = vv_xcalloc(have + 1, sizeof(*frames));
    /* Newest first while they fit, then sent oldest first. */
    for (uint32_t k = 0; k < have && take < max; k++) {
        const struct retained *r = &t->ring[(t->head + have - 1 - k) % t->retain];
        struct vv_pubsub_msg msg = {r->from, r->origin, r->seqno, t->name,
                                    t->len,  r->data,   r->len,   r->sig};
        msgpack_sbuffer *sb = &frames[take];
        msgpack_packer pk;
        msgpack_sbuffer_init(sb);
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_PUBSUB_TYPE_MESSAGE, 0);
        if (vv_pubsub_msg_encode(&pk, &msg) != 0 || bytes + sb->size + 8 > HISTORY_REPLY_BYTES) {
            msgpack_sbuffer_destroy(sb);
            break;
        }
        bytes += sb->size + 8;
        take++;
    }
    msgpack_sbuffer out;
    msgpack_packer pk;
    msgpack_sbuffer_init(&out);
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, take);
    for (uint32_t i = take; i-- > 0;) {
        msgpack_pack_bin(&pk, frames[i].size);
        msgpack_pack_bin_body(&pk, frames[i].data, frames[i].size);
        msgpack_sbuffer_destroy(&frames[i]);
    }
    vv_free(frames);
    (void)vv_env_reply(env, ctx, (const uint8_t *)out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

/* A mesh peer's history: each message goes through the router as if that peer had sent it
 * (signature, policy, seen cache), so what is new is delivered and kept. */
static void history_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    struct psm *m = arg;
    const msgpack_object *items;
    uint32_t n;
    if (a->status != 0 || m->ps == NULL || a->peer == NULL ||
        vv_wire_get_array(&a->reply->body, 0, VV_WIRE_MAX_CONTAINER, &items, &n) != 0) {
        vv_log_info("pubsub", "history request failed: %s",
                    vv_strerror(a->status ? a->status : VV_EINVAL));
        return;
    }
    char hex[2 * VV_NODE_ID_BYTES + 1];
    vv_hex_encode(a->peer, VV_NODE_ID_BYTES, hex);
    vv_log_info("pubsub", "history: %u message(s) from %.16s", n, hex);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *frame;
        size_t len;
        if (vv_wire_get_bin(&items[i], 0, VV_WIRE_MAX_FRAME_BYTES, &frame, &len) != 0)
            break;
        vv_pubsub_inject(m->ps, a->peer, frame, len);
    }
}

/* Topics joined to keep messages, whose mesh formed: ask up to HISTORY_PEERS mesh peers for
 * what they keep (once per joining). */
static void ask_history(struct psm *m)
{
    for (struct mtopic *t = m->topics; t; t = t->next) {
        if (!t->joined || t->retain == 0 || t->history_sync)
            continue;
        uint8_t peers[HISTORY_PEERS][VV_NODE_ID_BYTES];
        uint32_t np = vv_pubsub_mesh_peers(m->ps, t->name, t->len, peers, HISTORY_PEERS);
        if (np == 0)
            continue;
        t->history_sync = true;
        vv_log_info("pubsub", "asking %u mesh peer(s) for %s's history", np, t->name);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_str(&pk, t->len);
        msgpack_pack_str_body(&pk, t->name, t->len);
        msgpack_pack_uint32(&pk, t->retain);
        for (uint32_t i = 0; i < np; i++)
            (void)vv_env_request(m->env, peers[i], VV_PUBSUB_TYPE_HISTORY, (const uint8_t *)sb.data,
                                 sb.size, HISTORY_TIMEOUT_MS, history_answer, m, NULL);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* Closed connections' subscriptions go; the router's drop counters reach their metric. */
static void sweep(struct vv_env *env, void *arg)
{
    (void)env;
    struct psm *m = arg;
    for (struct rsub *s = m->subs, *next; s; s = next) {
        next = s->next;
        if (!vv_rpc_conn_is_open(s->conn))
            sub_drop(m, s);
    }
    if (m->ps == NULL)
        return;
    ask_history(m);
    const struct vv_pubsub_stats *st = vv_pubsub_stats(m->ps);
    struct {
        const char *reason;
        uint64_t now, *last;
    } r[] = {
        {"invalid_signature", st->invalid_signature, &m->synced.invalid_signature},
        {"rejected", st->rejected, &m->synced.rejected},
        {"ignored", st->ignored, &m->synced.ignored},
        {"not_joined", st->dropped_not_joined, &m->synced.dropped_not_joined},
        {"too_large", st->dropped_too_large, &m->synced.dropped_too_large},
        {"publisher", st->dropped_publisher, &m->synced.dropped_publisher},
        {"graylisted", st->dropped_graylisted, &m->synced.dropped_graylisted},
        {"verify_busy", st->dropped_verify_busy, &m->synced.dropped_verify_busy},
        {"queue_full", st->dropped_queue_full, &m->synced.dropped_queue_full},
        {"bad_frame", st->bad_frames, &m->synced.bad_frames},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(r); i++) {
        if (r[i].now > *r[i].last) {
            const char *v[1] = {r[i].reason};
            vv_counter_add(vv_counter_labels(m->dropped, v), r[i].now - *r[i].last);
        }
        *r[i].last = r[i].now;
    }
}

/* ---- RPC --------------------------------------------------------------------------------- */

#define NEED_RUNNING(m, req)                                                                       \
    do {                                                                                           \
        if ((m)->ps == NULL)                                                                       \
            return vv_rpc_fail(req, VV_ENODE_SHUTTING_DOWN, "pubsub is not running");              \
    } while (0)

static int topic_param(const json_t *params, const char *name, const char **topic, char *err,
                       size_t err_len)
{
    if (vv_rpc_param_string(params, name, true, VV_PUBSUB_MAX_TOPIC_BYTES, topic, err, err_len) < 0)
        return -1;
    if (!vv_pubsub_topic_ok(*topic, strlen(*topic))) {
        snprintf(err, err_len, "%s: expected 1 to %d bytes of text without control characters",
                 name, VV_PUBSUB_MAX_TOPIC_BYTES);
        return -1;
    }
    return 0;
}

static struct vv_rpc_answer subscribe_topic(struct psm *m, struct vv_rpc_request *req,
                                            const char *topic)
{
    const struct vv_pubsub_settings *c = vv_pubsub_settings(&m->n->config);
    if (m->n_subs >= c->max_subscriptions)
        return vv_rpc_fail(req, VV_ELIMIT,
                           "%u subscriptions already held ([pubsub] "
                           "max_subscriptions)",
                           c->max_subscriptions);
    /* One client's share: a scan of the subscriptions, at most max_subscriptions. */
    struct vv_rpc_conn *conn = vv_rpc_request_conn(req);
    uint32_t mine = 0;
    for (const struct rsub *s = m->subs; s; s = s->next)
        mine += s->conn == conn;
    if (mine >= c->max_client_subscriptions)
        return vv_rpc_fail(req, VV_ELIMIT,
                           "%u subscriptions already held on this connection ([pubsub] "
                           "max_client_subscriptions)",
                           c->max_client_subscriptions);
    size_t len = strlen(topic);
    struct mtopic *t = topic_get(m, topic, len);
    if (t == NULL)
        return vv_rpc_fail(req, VV_ELIMIT, "too many topics ([pubsub] max_joined_topics)");
    t->subs++;
    int rc = update_joined(m, t);
    if (rc != 0) {
        t->subs--;
        topic_maybe_free(m, t);
        return vv_rpc_fail(req, rc, "cannot join %s: %s", topic, vv_strerror(rc));
    }
    struct rsub *s = vv_xcalloc(1, sizeof(*s));
    s->id = ++m->next_sub;
    s->t = t;
    s->conn = conn;
    vv_rpc_conn_ref(s->conn);
    s->next = m->subs;
    m->subs = s;
    m->n_subs++;
    return vv_rpc_reply(
        req, json_pack("{s:I, s:s}", "subscriptionId", (json_int_t)s->id, "topic", topic));
}

static struct vv_rpc_answer rpc_subscribe(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {"topic", NULL};
    const char *topic;
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        topic_param(params, "topic", &topic, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    NEED_RUNNING(m, req);
    return subscribe_topic(m, req, topic);
}

/* pubsub.subscribeToCircle/User/Content: the seed's topic patterns. */
static struct vv_rpc_answer subscribe_pattern(struct vv_rpc_request *req, json_t *params,
                                              struct psm *m, const char *param, const char *prefix,
                                              bool did)
{
    const char *const allowed[] = {param, NULL};
    const char *v;
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        vv_rpc_param_string(params, param, true, TOPIC_ID_MAX_BYTES, &v, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (did && !vv_did_valid(v))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s: expected a DID", param);
    char topic[VV_PUBSUB_MAX_TOPIC_BYTES + 1];
    int n = snprintf(topic, sizeof(topic), "%s:%s", prefix, v);
    if (n <= 0 || (size_t)n >= sizeof(topic) || !vv_pubsub_topic_ok(topic, (size_t)n))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "%s: expected text without control characters", param);
    NEED_RUNNING(m, req);
    return subscribe_topic(m, req, topic);
}

static struct vv_rpc_answer rpc_sub_circle(struct vv_rpc_request *req, json_t *params, void *d)
{
    return subscribe_pattern(req, params, d, "circleId", "circle", false);
}

static struct vv_rpc_answer rpc_sub_user(struct vv_rpc_request *req, json_t *params, void *d)
{
    return subscribe_pattern(req, params, d, "did", "user", true);
}

static struct vv_rpc_answer rpc_sub_content(struct vv_rpc_request *req, json_t *params, void *d)
{
    return subscribe_pattern(req, params, d, "contentId", "content", false);
}

static struct vv_rpc_answer rpc_unsubscribe(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {"subscriptionId", NULL};
    uint64_t id;
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "subscriptionId", true, 1, UINT64_MAX, &id, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    for (struct rsub *s = m->subs; s; s = s->next)
        if (s->id == id) {
            /* Only the connection that subscribed may end it. */
            if (s->conn != vv_rpc_request_conn(req))
                break;
            sub_drop(m, s);
            return vv_rpc_reply(req, json_pack("{s:b}", "unsubscribed", 1));
        }
    return vv_rpc_fail(req, VV_ENOTFOUND, "no subscription %llu on this connection",
                       (unsigned long long)id);
}

static struct vv_rpc_answer rpc_publish(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {"topic", "data", NULL};
    const char *topic, *b64data;
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        topic_param(params, "topic", &topic, err, sizeof(err)) < 0 ||
        vv_rpc_param_string(params, "data", true, (VV_PUBSUB_MAX_DATA_BYTES / 3 + 1) * 4, &b64data,
                            err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    NEED_RUNNING(m, req);
    size_t b64len = strlen(b64data);
    uint8_t *bytes = vv_xmalloc(b64len / 4 * 3 + 3);
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(bytes, b64len / 4 * 3 + 3, b64data, b64len, NULL, &len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64data + b64len) {
        vv_free(bytes);
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "data: expected base64");
    }
    uint8_t id[VV_PUBSUB_ID_BYTES];
    uint32_t peers = 0;
    int rc = vv_pubsub_publish(m->ps, topic, strlen(topic), bytes, len, id, &peers);
    vv_free(bytes);
    if (rc == VV_ELIMIT)
        return vv_rpc_fail(req, rc, "data: larger than the topic allows");
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    char hex[2 * VV_PUBSUB_ID_BYTES + 1];
    vv_hex_encode(id, VV_PUBSUB_ID_BYTES, hex);
    return vv_rpc_reply(req, json_pack("{s:s, s:I}", "messageId", hex, "peers", (json_int_t)peers));
}

static struct vv_rpc_answer rpc_create_topic(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {"topic", "config", NULL};
    static const char *const cfg_allowed[] = {"maxMessageBytes", "publishers", "retain", NULL};
    const struct vv_pubsub_settings *c = vv_pubsub_settings(&m->n->config);
    const char *topic;
    char err[256];
    uint64_t max_bytes = 0, retain = 0;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        topic_param(params, "topic", &topic, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    json_t *cfg = json_object_get(params, "config");
    json_t *pubs = NULL;
    if (cfg != NULL) {
        if (!json_is_object(cfg) || vv_rpc_params_object(cfg, cfg_allowed, err, sizeof(err)) < 0 ||
            vv_rpc_param_uint(cfg, "maxMessageBytes", false, 0, VV_PUBSUB_MAX_DATA_BYTES,
                              &max_bytes, err, sizeof(err)) < 0 ||
            vv_rpc_param_uint(cfg, "retain", false, 0, c->max_retain, &retain, err, sizeof(err)) <
                0)
            return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "config: %s",
                               json_is_object(cfg) ? err : "expected an object");
        pubs = json_object_get(cfg, "publishers");
        if (pubs != NULL && (!json_is_array(pubs) || json_array_size(pubs) == 0 ||
                             json_array_size(pubs) > VV_PUBSUB_MAX_PUBLISHERS))
            return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                               "config.publishers: expected 1 to %d node IDs",
                               VV_PUBSUB_MAX_PUBLISHERS);
    }
    NEED_RUNNING(m, req);
    uint8_t(*ids)[VV_NODE_ID_BYTES] = NULL;
    size_t n_ids = pubs ? json_array_size(pubs) : 0;
    if (n_ids > 0) {
        ids = vv_xmalloc(n_ids * VV_NODE_ID_BYTES);
        for (size_t i = 0; i < n_ids; i++) {
            const char *h = json_string_value(json_array_get(pubs, i));
            if (h == NULL || strlen(h) != 2 * VV_NODE_ID_BYTES ||
                vv_hex_decode(h, ids[i], VV_NODE_ID_BYTES) != 0) {
                vv_free(ids);
                return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                                   "config.publishers[%zu]: expected 64 hex digits", i);
            }
        }
    }
    size_t len = strlen(topic);
    struct mtopic *t = topic_get(m, topic, len);
    if (t == NULL) {
        vv_free(ids);
        return vv_rpc_fail(req, VV_ELIMIT, "too many topics ([pubsub] max_joined_topics)");
    }
    struct vv_pubsub_topic_config tc = {.max_message_bytes = (uint32_t)max_bytes,
                                        .publishers = (const uint8_t(*)[VV_NODE_ID_BYTES])ids,
                                        .n_publishers = (uint32_t)n_ids,
                                        .retain = (uint32_t)retain};
    int rc = vv_pubsub_create_topic(m->ps, topic, len, &tc);
    vv_free(ids);
    if (rc != 0) {
        topic_maybe_free(m, t);
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    t->has_policy = true;
    if (t->retain != retain) {
        ring_clear(t);
        t->retain = (uint32_t)retain;
    }
    rc = update_joined(m, t);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "cannot join %s to keep its messages: %s", topic,
                           vv_strerror(rc));
    return vv_rpc_reply(req, json_pack("{s:s, s:I, s:I, s:I}", "topic", topic, "maxMessageBytes",
                                       (json_int_t)max_bytes, "publishers", (json_int_t)n_ids,
                                       "retain", (json_int_t)retain));
}

static struct vv_rpc_answer rpc_delete_topic(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {"topic", NULL};
    const char *topic;
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        topic_param(params, "topic", &topic, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    NEED_RUNNING(m, req);
    size_t len = strlen(topic);
    struct mtopic *t = topic_find(m, topic, len);
    if (t == NULL)
        return vv_rpc_fail(req, VV_ENOTFOUND, "no topic %s here", topic);
    /* Its subscriptions end; their clients see no more messages. */
    for (struct rsub *s = m->subs, *next; s; s = next) {
        next = s->next;
        if (s->t == t) {
            t->has_policy = true; /* keeps t alive through sub_drop */
            sub_drop(m, s);
        }
    }
    ring_clear(t); /* while retain still sizes the ring */
    t->retain = 0;
    (void)update_joined(m, t);
    (void)vv_pubsub_delete_topic(m->ps, topic, len);
    t->has_policy = false;
    t->joined = false;
    topic_maybe_free(m, t);
    return vv_rpc_reply(req, json_pack("{s:b}", "deleted", 1));
}

static struct vv_rpc_answer rpc_list_topics(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {NULL};
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    NEED_RUNNING(m, req);
    json_t *arr = json_array();
    for (struct mtopic *t = m->topics; t; t = t->next)
        json_array_append_new(
            arr, json_pack("{s:s%, s:I, s:b, s:I, s:I, s:I, s:I}", "topic", t->name, t->len,
                           "subscriptions", (json_int_t)t->subs, "joined",
                           vv_pubsub_joined(m->ps, t->name, t->len), "meshPeers",
                           (json_int_t)vv_pubsub_mesh_size(m->ps, t->name, t->len), "peers",
                           (json_int_t)vv_pubsub_topic_peers(m->ps, t->name, t->len), "retain",
                           (json_int_t)t->retain, "retained", (json_int_t)t->n));
    return vv_rpc_reply(req, json_pack("{s:o}", "topics", arr));
}

static struct vv_rpc_answer rpc_history(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct psm *m = data;
    static const char *const allowed[] = {"topic", "since", NULL};
    const char *topic;
    uint64_t since = 0;
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        topic_param(params, "topic", &topic, err, sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "since", false, 0, INT64_MAX, &since, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    NEED_RUNNING(m, req);
    struct mtopic *t = topic_find(m, topic, strlen(topic));
    json_t *arr = json_array();
    for (uint32_t i = 0; t != NULL && i < t->n; i++) {
        const struct retained *r = &t->ring[(t->head + i) % t->retain];
        if (r->received_ms <= since)
            continue;
        json_t *o = message_json(r->id, r->from, r->seqno, r->data, r->len);
        json_object_set_new(o, "receivedAt", json_integer((json_int_t)r->received_ms));
        json_array_append_new(arr, o);
    }
    return vv_rpc_reply(req, json_pack("{s:s, s:o}", "topic", topic, "messages", arr));
}

#define SCHEMA_TOPIC                                                                               \
    "{\"type\":\"object\",\"required\":[\"topic\"],\"properties\":{\"topic\":{\"type\":"           \
    "\"string\",\"minLength\":1,\"maxLength\":256}},\"additionalProperties\":false}"

static const struct vv_rpc_method methods[] = {
    {"pubsub.createTopic", rpc_create_topic, NULL,
     "Sets this node's policy for a topic: the largest message, the only publishers (node IDs) "
     "whose messages it accepts and forwards, and how many messages it keeps for "
     "pubsub.history.",
     "{\"type\":\"object\",\"required\":[\"topic\"],\"properties\":{\"topic\":{\"type\":"
     "\"string\"},\"config\":{\"type\":\"object\",\"properties\":{\"maxMessageBytes\":{"
     "\"type\":\"integer\"},\"publishers\":{\"type\":\"array\",\"items\":{\"type\":\"string\","
     "\"pattern\":\"^[0-9a-fA-F]{64}$\"}},\"retain\":{\"type\":\"integer\"}}}}}",
     "{\"type\":\"object\"}"},
    {"pubsub.deleteTopic", rpc_delete_topic, NULL,
     "Forgets a topic's policy and retained messages, ends its subscriptions and leaves it.",
     SCHEMA_TOPIC, "{\"type\":\"object\"}"},
    {"pubsub.listTopics", rpc_list_topics, NULL,
     "Topics with a policy or a subscription here: subscriptions, mesh and known peers, "
     "retention.",
     "{\"type\":\"object\"}", "{\"type\":\"object\"}"},
    {"pubsub.subscribe", rpc_subscribe, NULL,
     "Joins a topic; its messages then arrive on this connection as pubsub.message "
     "notifications until pubsub.unsubscribe or the connection ends.",
     SCHEMA_TOPIC, "{\"type\":\"object\"}"},
    {"pubsub.subscribeToCircle", rpc_sub_circle, NULL, "pubsub.subscribe to circle:{circleId}.",
     "{\"type\":\"object\",\"required\":[\"circleId\"]}", "{\"type\":\"object\"}"},
    {"pubsub.subscribeToUser", rpc_sub_user, NULL, "pubsub.subscribe to user:{did}.",
     "{\"type\":\"object\",\"required\":[\"did\"]}", "{\"type\":\"object\"}"},
    {"pubsub.subscribeToContent", rpc_sub_content, NULL, "pubsub.subscribe to content:{contentId}.",
     "{\"type\":\"object\",\"required\":[\"contentId\"]}", "{\"type\":\"object\"}"},
    {"pubsub.unsubscribe", rpc_unsubscribe, NULL,
     "Ends a subscription made on this connection; the topic is left when it was the last.",
     "{\"type\":\"object\",\"required\":[\"subscriptionId\"]}", "{\"type\":\"object\"}"},
    {"pubsub.publish", rpc_publish, NULL,
     "Signs and publishes data (base64) on a topic (joined or not); answers its message ID "
     "and the number of peers it was sent to.",
     "{\"type\":\"object\",\"required\":[\"topic\",\"data\"]}", "{\"type\":\"object\"}"},
    {"pubsub.history", rpc_history, NULL,
     "The messages a topic keeps (its retain), oldest first, received after `since` (ms since "
     "1970).",
     "{\"type\":\"object\",\"required\":[\"topic\"]}", "{\"type\":\"object\"}"},
};

/* ---- metrics ----------------------------------------------------------------------------- */

#define STAT_FN(field)                                                                             \
    static double stat_##field(void *data)                                                         \
    {                                                                                              \
        struct psm *m = data;                                                                      \
        return m->ps ? (double)vv_pubsub_stats(m->ps)->field : 0.0;                                \
    }
STAT_FN(published)
STAT_FN(delivered)
STAT_FN(forwarded)
STAT_FN(duplicates)
STAT_FN(ihave_sent)
STAT_FN(iwant_sent)
STAT_FN(iwant_served)
STAT_FN(graft_sent)
STAT_FN(prune_sent)
STAT_FN(graft_received)
STAT_FN(prune_received)
STAT_FN(idontwant_sent)
STAT_FN(idontwant_saved)
STAT_FN(topics_refused)
STAT_FN(verifying)

static double mesh_peers(void *data)
{
    struct psm *m = data;
    double n = 0;
    for (struct mtopic *t = m->topics; m->ps && t; t = t->next)
        n += vv_pubsub_mesh_size(m->ps, t->name, t->len);
    return n;
}

static double score_min(void *data)
{
    struct psm *m = data;
    double v = 0;
    if (m->ps)
        vv_pubsub_score_summary(m->ps, &v, NULL, NULL);
    return v;
}

static double score_mean(void *data)
{
    struct psm *m = data;
    double v = 0;
    if (m->ps)
        vv_pubsub_score_summary(m->ps, NULL, &v, NULL);
    return v;
}

static double graylisted(void *data)
{
    struct psm *m = data;
    uint32_t g = 0;
    if (m->ps)
        vv_pubsub_score_summary(m->ps, NULL, NULL, &g);
    return g;
}

static double topics_known(void *data)
{
    struct psm *m = data;
    return m->ps ? vv_pubsub_known_topics(m->ps) : 0;
}

static double subscriptions(void *data)
{
    return (double)((struct psm *)data)->n_subs;
}

static double topics_joined(void *data)
{
    struct psm *m = data;
    uint32_t n = 0;
    while (m->ps && vv_pubsub_joined_topic(m->ps, n, NULL) != NULL)
        n++;
    return n;
}

static void register_metrics(struct psm *m, struct vv_metrics *mx)
{
    static const struct {
        bool counter;
        const char *name, *help;
        double (*fn)(void *);
    } defs[] = {
        {true, "vivimd_pubsub_published_total", "Messages this node published.", stat_published},
        {true, "vivimd_pubsub_delivered_total",
         "Valid messages delivered here (own ones included), once each.", stat_delivered},
        {true, "vivimd_pubsub_forwarded_total", "Message copies forwarded to mesh peers.",
         stat_forwarded},
        {true, "vivimd_pubsub_duplicates_total", "Messages received again (already seen).",
         stat_duplicates},
        {true, "vivimd_pubsub_ihave_sent_total", "CONTROL frames with IHAVE gossip sent.",
         stat_ihave_sent},
        {true, "vivimd_pubsub_iwant_sent_total", "IWANT requests sent after IHAVE.",
         stat_iwant_sent},
        {true, "vivimd_pubsub_iwant_served_total", "Messages sent in answer to IWANT.",
         stat_iwant_served},
        {true, "vivimd_pubsub_graft_sent_total", "GRAFTs sent.", stat_graft_sent},
        {true, "vivimd_pubsub_prune_sent_total", "PRUNEs sent.", stat_prune_sent},
        {true, "vivimd_pubsub_graft_received_total", "GRAFTs received.", stat_graft_received},
        {true, "vivimd_pubsub_prune_received_total", "PRUNEs received.", stat_prune_received},
        {true, "vivimd_pubsub_idontwant_sent_total", "IDONTWANT notices sent.",
         stat_idontwant_sent},
        {true, "vivimd_pubsub_idontwant_saved_total",
         "Message sends skipped because the peer said IDONTWANT.", stat_idontwant_saved},
        {true, "vivimd_pubsub_topics_refused_total",
         "Peer subscriptions ignored past max_peer_topics or max_known_topics.",
         stat_topics_refused},
        {false, "vivimd_pubsub_verifying", "Message signatures being checked now.", stat_verifying},
        {false, "vivimd_pubsub_mesh_peers", "Mesh peers, all topics together.", mesh_peers},
        {false, "vivimd_pubsub_subscriptions", "RPC subscriptions held.", subscriptions},
        {false, "vivimd_pubsub_peer_score_min", "The lowest score of a connected peer.", score_min},
        {false, "vivimd_pubsub_peer_score_mean", "The mean score of the connected peers.",
         score_mean},
        {false, "vivimd_pubsub_peers_graylisted",
         "Connected peers scoring under the graylist threshold (not heard).", graylisted},
        {false, "vivimd_pubsub_topics_joined", "Topics this node is subscribed to.", topics_joined},
        {false, "vivimd_pubsub_topics_known",
         "Topics the router keeps state for (joined, with a policy, published to, or known from "
         "peers' subscriptions; bounded by max_known_topics).",
         topics_known},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(defs); i++) {
        if (defs[i].counter)
            vv_metrics_counter_fn(mx, defs[i].name, defs[i].help, defs[i].fn, m);
        else
            vv_metrics_gauge_fn(mx, defs[i].name, defs[i].help, defs[i].fn, m);
    }
    m->dropped = vv_metrics_counter(mx, "vivimd_pubsub_dropped_total",
                                    "Messages and frames from peers dropped, by reason (updated "
                                    "each second).",
                                    "reason");
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static int pubsub_init(struct vv_node *n)
{
    struct psm *m = vv_xcalloc(1, sizeof(*m));
    m->n = n;
    vv_node_set_module_data(n, &vv_pubsub_module, m);
    if (n->metrics)
        register_metrics(m, n->metrics);
    if (n->rpc)
        for (size_t i = 0; i < VV_ARRAY_SIZE(methods); i++) {
            struct vv_rpc_method reg = methods[i];
            reg.data = m;
            int rc = vv_rpc_register(n->rpc, &reg);
            if (rc != 0)
                return rc;
        }
    return 0;
}

static int pubsub_start(struct vv_node *n)
{
    struct psm *m = psm_of(n);
    struct vv_pubsub_config cfg;
    vv_pubsub_config_from_settings(vv_pubsub_settings(&n->config), &cfg);
    m->env = vv_env_uv_env(n->env);
    static const struct vv_pubsub_cbs cbs = {on_deliver, NULL};
    m->ps = vv_pubsub_new(m->env, &cfg, &cbs, m);
    if (m->ps == NULL) {
        vv_log_error("pubsub", "configuration refused by the router");
        return VV_EINVAL;
    }
    m->sweep = vv_env_timer_start(m->env, SWEEP_MS, SWEEP_MS, sweep, m);
    vv_env_set_server(m->env, VV_CHANNEL_PUBSUB, serve_history, m);
    return 0;
}

static void pubsub_stop(struct vv_node *n)
{
    struct psm *m = psm_of(n);
    if (m == NULL || m->ps == NULL)
        return;
    vv_env_timer_cancel(m->env, m->sweep);
    m->sweep = 0;
    vv_env_set_server(m->env, VV_CHANNEL_PUBSUB, NULL, NULL);
    vv_env_request_cancel_channel(m->env, VV_CHANNEL_PUBSUB);
    vv_pubsub_free(m->ps);
    m->ps = NULL;
    while (m->subs)
        sub_drop(m, m->subs);
    while (m->topics) {
        struct mtopic *t = m->topics;
        t->has_policy = false;
        t->subs = 0;
        t->joined = false;
        topic_maybe_free(m, t);
    }
    m->env = NULL;
}

static void pubsub_deinit(struct vv_node *n)
{
    vv_free(psm_of(n));
    vv_node_set_module_data(n, &vv_pubsub_module, NULL);
}

/* max_subscriptions, max_client_subscriptions and max_retain are read at each use. */
static void pubsub_reload(struct vv_node *n)
{
    const struct vv_pubsub_settings *c = vv_pubsub_settings(&n->config);
    vv_log_info("pubsub", "max_subscriptions %u, max_client_subscriptions %u, max_retain %u",
                c->max_subscriptions, c->max_client_subscriptions, c->max_retain);
}

static json_t *pubsub_health(struct vv_node *n)
{
    struct psm *m = psm_of(n);
    return json_pack("{s:b, s:I, s:I}", "ok", m != NULL && m->ps != NULL, "subscriptions",
                     (json_int_t)(m ? m->n_subs : 0), "topics", (json_int_t)(m ? m->n_topics : 0));
}

static const char *const pubsub_depends[] = {"net", "rpc", "monitor", NULL};

const struct vv_module vv_pubsub_module = {
    .name = "pubsub",
    .config = &vv_pubsub_settings_section,
    .depends = pubsub_depends,
    .init = pubsub_init,
    .start = pubsub_start,
    .stop = pubsub_stop,
    .deinit = pubsub_deinit,
    .reload = pubsub_reload,
    .health = pubsub_health,
};
