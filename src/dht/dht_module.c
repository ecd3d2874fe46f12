/*
 * The dht module (vivim/dht.h): one DHT node (dht_node.c) on vivimd's env while [dht]
 * enabled is true, joined through the contacts saved in state_dir/dht.sqlite at the last run
 * (dht_persist.h), the numeric [net] bootstrap addresses and the peers the connection
 * manager connects; the dht.* RPC methods and the vivimd_dht_* metrics. It owns the node, the
 * store and one small struct per RPC call in flight; the node calls every call's callback
 * exactly once, with VV_ENODE_SHUTTING_DOWN from stop at the latest.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/connmgr.h"
#include "vivim/dht.h"
#include "vivim/dht_msg.h"
#include "vivim/dht_persist.h"
#include "vivim/env_request.h"
#include "vivim/env_uv.h"
#include "vivim/log.h"
#include "vivim/metrics.h"
#include "vivim/net.h"
#include "vivim/node.h"
#include "vivim/rpc.h"

/* The node's numbers the metrics read at scrape time: one probe per metric, one function. */
enum probe_kind {
    P_OWN,
    P_REPUBLISHED,
    P_RATE_LIMITED,
    P_VALUES,
    P_VALUE_BYTES,
    P_PROVIDERS,
    P_TABLE,
    P_VERIFIED,
    P_COUNT
};

struct dht;
struct probe {
    struct dht *m;
    enum probe_kind kind;
};

struct dht {
    struct vv_node *n;
    struct vv_env *env;      /* set at start */
    struct vv_dht_node *dht; /* NULL when disabled or stopped */
    struct vv_counter *lookups;
    struct vv_counter *rpcs;
    struct vv_counter *timeouts;
    struct vv_histogram *hops;
    struct vv_histogram *latency;
    struct vv_counter *stores;
    struct probe probes[P_COUNT];
    /* Persistence (state_dir/dht.sqlite): NULL when it could not be opened. */
    struct vv_dht_persist *disk;
    uint64_t persist_timer; /* VV_DHT_PERSIST_TICK_MS, 0 none */
    uint64_t last_save_ms;  /* env time */
    /* Saved contacts still to be offered to the node, restore[next_restore..n_restore). */
    struct vv_dht_saved_contact *restore;
    size_t n_restore, next_restore;
    struct vv_gauge *saved;
    struct vv_counter *persist_errors;
};

/* One RPC call waiting for the node (publish, get, providers). */
struct call {
    struct dht *m;
    struct vv_rpc_request *req;
    struct vv_rpc_conn *conn; /* dht.findProviders: where the notifications go (a ref) */
    char key_hex[2 * VV_DHT_ID_BYTES + 1];
    char content_id[VV_DHT_CONTENT_ID_MAX + 1];
};

/* How often saved contacts still waiting are offered again (the node takes them as its
 * verification pings, at most VV_DHT_MAX_PENDING_PINGS out, come back) and the save period
 * is checked. */
#define VV_DHT_PERSIST_TICK_MS 1000

static struct dht *dht_of(struct vv_node *n)
{
    return vv_node_module_data(n, &vv_dht_module);
}

static const char *type_name(uint16_t type)
{
    static const char *const names[] = {"ping",      "find_node",     "get_value",
                                        "put_value", "get_providers", "add_provider"};
    unsigned i = (unsigned)(type - VV_DHT_MSG_PING);
    return i < 6 ? names[i] : "other";
}

/* ---- hooks: metrics and the connection manager ------------------------------------------ */

static void on_rpc(void *arg, uint16_t type, bool in)
{
    struct dht *m = arg;
    const char *v[2] = {type_name(type), in ? "in" : "out"};
    vv_counter_inc(vv_counter_labels(m->rpcs, v));
}

static void on_timeout(void *arg)
{
    struct dht *m = arg;
    vv_counter_inc(m->timeouts);
}

static void on_lookup(void *arg, const char *kind, const char *outcome, uint32_t hops,
                      uint64_t elapsed_ms)
{
    struct dht *m = arg;
    const char *v[2] = {kind, outcome};
    vv_counter_inc(vv_counter_labels(m->lookups, v));
    if (strcmp(outcome, "ok") == 0) {
        vv_histogram_observe(m->hops, (double)hops);
        vv_histogram_observe(m->latency, (double)elapsed_ms / 1000.0);
    }
}

/*
 * A connected peer's datagram address: the address the connection manager knows it by,
 * which is the address we dialled or the listen address its HELLO advertised. vivimd's
 * UDP socket is bound to the [net] listen address and port, so that is where its DHT
 * answers. Only numeric addresses qualify (no DNS on the datagram path).
 */
static int peer_address(void *arg, const uint8_t id[VV_DHT_ID_BYTES], char *out, size_t cap)
{
    struct dht *m = arg;
    struct vv_connmgr *cm = vv_net_connmgr(m->n);
    const struct vv_connmgr_peer *p = cm ? vv_connmgr_find(cm, id) : NULL;
    if (p == NULL || p->address[0] == '\0')
        return VV_ENOTFOUND;
    return vv_env_address_canon(p->address, out, cap);
}

static void on_store(void *arg, uint16_t type, const char *outcome)
{
    struct dht *m = arg;
    const char *v[2] = {type_name(type), outcome};
    vv_counter_inc(vv_counter_labels(m->stores, v));
}

static double probe_value(void *data)
{
    const struct probe *p = data;
    const struct vv_dht_node *d = p->m->dht;
    if (d == NULL)
        return 0.0;
    switch (p->kind) {
    case P_OWN:
        return (double)vv_dht_node_own_count(d);
    case P_REPUBLISHED:
        return (double)vv_dht_node_stats(d)->republished;
    case P_RATE_LIMITED:
        return (double)vv_dht_node_stats(d)->rate_limited;
    case P_VALUES:
        return (double)vv_dht_values_count(vv_dht_node_values(d));
    case P_VALUE_BYTES:
        return (double)vv_dht_values_bytes(vv_dht_node_values(d));
    case P_PROVIDERS:
        return (double)vv_dht_providers_count(vv_dht_node_providers(d));
    case P_TABLE:
        return (double)vv_dht_rt_size(vv_dht_node_table(d));
    case P_VERIFIED:
        return (double)vv_dht_node_verified_count(d);
    default:
        return 0.0;
    }
}

/* ---- RPC ------------------------------------------------------------------------------- */

static json_t *contact_json(const struct vv_dht_contact *c)
{
    char hex[2 * VV_DHT_ID_BYTES + 1], a[VV_DHT_ADDR_STR_BYTES];
    vv_hex_encode(c->id, VV_DHT_ID_BYTES, hex);
    if (vv_dht_addr_format(&c->addr, a, sizeof(a)) != 0)
        a[0] = '\0';
    return json_pack("{s:s, s:s}", "nodeId", hex, "address", a);
}

static struct vv_rpc_answer not_running(struct vv_rpc_request *req, struct dht *m)
{
    (void)m;
    return vv_rpc_fail(req, VV_ESTATE, "the DHT is not running ([dht] enabled = false?)");
}

static void found(void *arg, const struct vv_dht_find_result *r)
{
    struct vv_rpc_request *req = arg;
    if (r->status != 0) {
        vv_rpc_fail(req, r->status, "%s", vv_strerror(r->status));
        return;
    }
    json_t *closest = json_array();
    for (size_t i = 0; i < r->n; i++) {
        json_t *c = contact_json(&r->closest[i]);
        json_object_set_new(c, "rttMs", json_integer(r->rtt_ms[i]));
        json_array_append_new(closest, c);
    }
    vv_rpc_reply(req, json_pack("{s:o, s:I, s:I, s:I}", "closest", closest, "hops",
                                (json_int_t)r->hops, "ms", (json_int_t)r->elapsed_ms, "queries",
                                (json_int_t)r->stats.queries));
}

static struct vv_rpc_answer find_node(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {"nodeId", NULL};
    char err[256];
    uint8_t target[VV_DHT_ID_BYTES];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_node_id(params, "nodeId", true, target, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (m->dht == NULL)
        return not_running(req, m);
    int rc = vv_dht_node_find_node(m->dht, target, found, req);
    if (rc == VV_ENOTFOUND)
        return vv_rpc_fail(req, rc, "the routing table is empty: no node to ask");
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    return vv_rpc_pending(req);
}

static void pinged(void *arg, int status, const uint8_t *id, const char *address, uint32_t rtt_ms,
                   bool verified_now)
{
    struct vv_rpc_request *req = arg;
    if (status != 0) {
        vv_rpc_fail(req, status, "ping of %s: %s", address, vv_strerror(status));
        return;
    }
    char hex[2 * VV_DHT_ID_BYTES + 1];
    vv_hex_encode(id, VV_DHT_ID_BYTES, hex);
    vv_rpc_reply(req, json_pack("{s:s, s:s, s:I, s:b}", "nodeId", hex, "address", address, "rttMs",
                                (json_int_t)rtt_ms, "verified", verified_now));
}

static struct vv_rpc_answer ping(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {"nodeId", "address", NULL};
    char err[256];
    uint8_t id[VV_DHT_ID_BYTES];
    const char *address = NULL;
    int has_id;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        (has_id = vv_rpc_param_node_id(params, "nodeId", false, id, err, sizeof(err))) < 0 ||
        vv_rpc_param_string(params, "address", false, VV_ENV_ADDRESS_BYTES - 1, &address, err,
                            sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (has_id != 0 && address == NULL)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "nodeId or address is required");
    if (m->dht == NULL)
        return not_running(req, m);
    char a[VV_DHT_ADDR_STR_BYTES];
    if (address == NULL) {
        /* By ID alone: the address the routing table has for it. */
        struct vv_dht_rt_entry e;
        if (vv_dht_rt_find(vv_dht_node_table(m->dht), id, &e) != 0 ||
            vv_dht_addr_format(&e.c.addr, a, sizeof(a)) != 0)
            return vv_rpc_fail(req, VV_ENOTFOUND,
                               "nodeId is not in the routing table: give its address");
        address = a;
    }
    int rc = vv_dht_node_ping(m->dht, has_id == 0 ? id : NULL, address, pinged, req);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    return vv_rpc_pending(req);
}

static struct vv_rpc_answer routing_table(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {NULL};
    char err[256];
    if (params != NULL && vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (m->dht == NULL)
        return not_running(req, m);
    const struct vv_dht_rt *rt = vv_dht_node_table(m->dht);
    uint64_t now = vv_env_now(m->env);
    json_t *buckets = json_array();
    for (unsigned b = 0; b < VV_DHT_ID_BITS; b++) {
        struct vv_dht_rt_entry e[VV_DHT_K];
        size_t n = vv_dht_rt_bucket_entries(rt, b, e, VV_DHT_K);
        if (n == 0)
            continue;
        json_t *contacts = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *c = contact_json(&e[i].c);
            json_object_set_new(c, "rttMs", json_integer(e[i].rtt_ms));
            json_object_set_new(
                c, "lastSeenMs",
                json_integer((json_int_t)(now >= e[i].last_seen_ms ? now - e[i].last_seen_ms : 0)));
            json_object_set_new(c, "failures", json_integer(e[i].failures));
            json_array_append_new(contacts, c);
        }
        json_array_append_new(buckets,
                              json_pack("{s:i, s:o, s:I}", "index", (int)b, "contacts", contacts,
                                        "cached", (json_int_t)vv_dht_rt_bucket_cached(rt, b)));
    }
    return vv_rpc_reply(
        req, json_pack("{s:o, s:I}", "buckets", buckets, "size", (json_int_t)vv_dht_rt_size(rt)));
}

static struct vv_rpc_answer refresh_bucket(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {"index", NULL};
    char err[256];
    uint64_t index;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_uint(params, "index", true, 0, VV_DHT_ID_BITS - 1, &index, err, sizeof(err)) <
            0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (m->dht == NULL)
        return not_running(req, m);
    int rc = vv_dht_node_refresh_bucket(m->dht, (unsigned)index);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    return vv_rpc_reply(req, json_pack("{s:b, s:i}", "started", 1, "index", (int)index));
}

static struct vv_rpc_answer stats(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    (void)params;
    if (m->dht == NULL)
        return not_running(req, m);
    const struct vv_dht_node_stats *s = vv_dht_node_stats(m->dht);
    json_t *served = json_object();
    for (uint16_t t = 0; t < 6; t++)
        json_object_set_new(served, type_name((uint16_t)(VV_DHT_MSG_PING + t)),
                            json_integer((json_int_t)s->served[t]));
    json_t *r = json_pack(
        "{s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
        "tableSize", (json_int_t)vv_dht_rt_size(vv_dht_node_table(m->dht)), "verified",
        (json_int_t)vv_dht_node_verified_count(m->dht), "lookupsRunning",
        (json_int_t)vv_dht_node_lookups_running(m->dht), "served", served, "servedUnsupported",
        (json_int_t)s->served_unsupported, "servedBad", (json_int_t)s->served_bad, "pingsSent",
        (json_int_t)s->pings_sent, "pingsSkipped", (json_int_t)s->pings_skipped, "pongsVerified",
        (json_int_t)s->pongs_verified, "pongsBad", (json_int_t)s->pongs_bad, "queriesSent",
        (json_int_t)s->queries_sent, "queriesAnswered", (json_int_t)s->queries_answered,
        "queriesFailed", (json_int_t)s->queries_failed, "timeouts", (json_int_t)s->timeouts,
        "lookups", (json_int_t)s->lookups, "lookupsFailed", (json_int_t)s->lookups_failed, "srttMs",
        (json_int_t)vv_dht_node_srtt_ms(m->dht));
    json_t *refused = json_object();
    for (size_t i = 0; i < 10; i++)
        json_object_set_new(refused, vv_dht_refusal_names[i],
                            json_integer((json_int_t)s->stores_refused[i]));
    json_object_set_new(r, "storesAccepted", json_integer((json_int_t)s->stores_accepted));
    json_object_set_new(r, "storesRefused", refused);
    json_object_set_new(r, "valuesBad", json_integer((json_int_t)s->values_bad));
    json_object_set_new(r, "rateLimited", json_integer((json_int_t)s->rate_limited));
    json_object_set_new(r, "ownRecords", json_integer((json_int_t)vv_dht_node_own_count(m->dht)));
    json_object_set_new(r, "republishLookups", json_integer((json_int_t)s->republish_lookups));
    json_object_set_new(r, "republished", json_integer((json_int_t)s->republished));
    return vv_rpc_reply(req, r);
}

/* ---- RPC: values and providers --------------------------------------------------------- */

static struct call *call_new(struct dht *m, struct vv_rpc_request *req)
{
    struct call *c = vv_xcalloc(1, sizeof(*c));
    c->m = m;
    c->req = req;
    return c;
}

static void call_free(struct call *c)
{
    if (c->conn)
        vv_rpc_conn_unref(c->conn);
    vv_free(c);
}

static char *base64_of(const uint8_t *p, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = vv_xmalloc(cap);
    sodium_bin2base64(out, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

/* ttl: seconds, default [dht] record_ttl_s, at most 48 hours (what stores accept). */
static int ttl_param(struct dht *m, const json_t *params, uint64_t *ttl_ms, char *err, size_t n)
{
    uint64_t ttl;
    int rc = vv_rpc_param_uint(params, "ttl", false, 1, VV_DHT_MAX_TTL_S, &ttl, err, n);
    if (rc < 0)
        return rc;
    *ttl_ms = (rc == 1 ? vv_dht_settings(&m->n->config)->record_ttl_s : ttl) * 1000u;
    return 0;
}

static void stored(void *arg, const struct vv_dht_store_result *r)
{
    struct call *c = arg;
    if (r->status != 0) {
        vv_rpc_fail(c->req, r->status, "no node stored it (%u asked): %s", r->tried,
                    vv_strerror(r->status));
    } else if (c->content_id[0] != '\0') {
        vv_rpc_reply(c->req, json_pack("{s:s, s:s, s:I, s:I, s:I}", "contentId", c->content_id,
                                       "key", c->key_hex, "storedAt", (json_int_t)r->stored, "hops",
                                       (json_int_t)r->hops, "ms", (json_int_t)r->elapsed_ms));
    } else {
        vv_rpc_reply(c->req,
                     json_pack("{s:s, s:I, s:I, s:I, s:I}", "key", c->key_hex, "seq",
                               (json_int_t)r->seq, "storedAt", (json_int_t)r->stored, "hops",
                               (json_int_t)r->hops, "ms", (json_int_t)r->elapsed_ms));
    }
    call_free(c);
}

static struct vv_rpc_answer publish(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {"key", "value", "ttl", NULL};
    char err[256];
    const char *key, *b64;
    uint64_t ttl_ms;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "key", true, VV_DHT_RPC_KEY_MAX, &key, err, sizeof(err)) < 0 ||
        vv_rpc_param_string(params, "value", true, (VV_DHT_VALUE_MAX_BYTES / 3 + 1) * 4, &b64, err,
                            sizeof(err)) < 0 ||
        ttl_param(m, params, &ttl_ms, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    size_t b64len = strlen(b64), len = 0;
    uint8_t *bytes = vv_xmalloc(b64len / 4 * 3 + 3);
    const char *end = NULL;
    if (sodium_base642bin(bytes, b64len / 4 * 3 + 3, b64, b64len, NULL, &len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + b64len) {
        vv_free(bytes);
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "value: expected base64");
    }
    if (m->dht == NULL) {
        vv_free(bytes);
        return not_running(req, m);
    }
    if (len > VV_DHT_VALUE_MAX_BYTES) {
        vv_free(bytes);
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "value: %zu bytes, at most %d", len,
                           VV_DHT_VALUE_MAX_BYTES);
    }
    uint8_t k[VV_DHT_ID_BYTES];
    crypto_hash_sha256(k, (const uint8_t *)key, strlen(key));
    struct call *c = call_new(m, req);
    vv_hex_encode(k, VV_DHT_ID_BYTES, c->key_hex);
    int rc = vv_dht_node_put(m->dht, k, bytes, len, ttl_ms, 0, stored, c);
    vv_free(bytes);
    if (rc != 0) {
        call_free(c);
        if (rc == VV_ENOTFOUND)
            return vv_rpc_fail(req, rc, "the routing table is empty: no node to ask");
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    return vv_rpc_pending(req);
}

static void got_values(void *arg, const struct vv_dht_get_result *r)
{
    struct call *c = arg;
    if (r->status != 0) {
        vv_rpc_fail(c->req, r->status, "%s", vv_strerror(r->status));
        call_free(c);
        return;
    }
    json_t *values = json_array();
    for (size_t i = 0; i < r->n_values; i++) {
        const struct vv_dht_value *v = &r->values[i];
        uint8_t id[VV_DHT_ID_BYTES];
        char hex[2 * VV_DHT_ID_BYTES + 1];
        vv_dht_id_from_pk(v->pk, id);
        vv_hex_encode(id, VV_DHT_ID_BYTES, hex);
        char *b64 = base64_of(v->value, v->len);
        json_array_append_new(values, json_pack("{s:s, s:s, s:I, s:I}", "value", b64, "publisher",
                                                hex, "seq", (json_int_t)v->seq, "expiresAt",
                                                (json_int_t)v->expires_ms));
        vv_free(b64);
    }
    vv_rpc_reply(c->req,
                 json_pack("{s:s, s:o, s:I, s:I, s:I, s:I}", "key", c->key_hex, "values", values,
                           "omitted", (json_int_t)r->omitted, "hops", (json_int_t)r->hops, "ms",
                           (json_int_t)r->elapsed_ms, "queries", (json_int_t)r->stats.queries));
    call_free(c);
}

static struct vv_rpc_answer get(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {"key", NULL};
    char err[256];
    const char *key;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "key", true, VV_DHT_RPC_KEY_MAX, &key, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (m->dht == NULL)
        return not_running(req, m);
    uint8_t k[VV_DHT_ID_BYTES];
    crypto_hash_sha256(k, (const uint8_t *)key, strlen(key));
    struct call *c = call_new(m, req);
    vv_hex_encode(k, VV_DHT_ID_BYTES, c->key_hex);
    int rc = vv_dht_node_get(m->dht, k, got_values, c);
    if (rc != 0) {
        call_free(c);
        if (rc == VV_ENOTFOUND)
            return vv_rpc_fail(req, rc, "the routing table is empty: no node to ask");
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    return vv_rpc_pending(req);
}

static struct vv_rpc_answer publish_content(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct dht *m = data;
    static const char *const allowed[] = {"contentId",         "contentType", "size",
                                          "replicationFactor", "ttl",         NULL};
    char err[256];
    const char *cid, *ctype = "";
    uint64_t size = 0, repl = 3, ttl_ms;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "contentId", true, VV_DHT_CONTENT_ID_MAX, &cid, err,
                            sizeof(err)) < 0 ||
        vv_rpc_param_string(params, "contentType", false, VV_DHT_CONTENT_TYPE_MAX, &ctype, err,
                            sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "size", false, 0, UINT64_MAX >> 1, &size, err, sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "replicationFactor", false, 1, 255, &repl, err, sizeof(err)) <
            0 ||
        ttl_param(m, params, &ttl_ms, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (cid[0] == '\0')
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "contentId: must not be empty");
    if (m->dht == NULL)
        return not_running(req, m);
    uint64_t wall = vv_env_wall_ms(m->env);
    struct vv_dht_content_record rec = {
        .content_id = cid,
        .content_id_len = strlen(cid),
        .content_type = ctype,
        .content_type_len = strlen(ctype),
        .size = size,
        .created_ms = wall,
        .expires_ms = wall + ttl_ms,
        .replication_factor = (uint8_t)repl,
    };
    crypto_hash_sha256(rec.address, (const uint8_t *)cid, rec.content_id_len);
    struct call *c = call_new(m, req);
    vv_strlcpy(c->content_id, cid, sizeof(c->content_id));
    vv_hex_encode(rec.address, VV_DHT_ID_BYTES, c->key_hex);
    int rc = vv_dht_node_provide(m->dht, &rec, stored, c);
    if (rc != 0) {
        call_free(c);
        if (rc == VV_ENOTFOUND)
            return vv_rpc_fail(req, rc, "the routing table is empty: no node to ask");
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    return vv_rpc_pending(req);
}

static json_t *provider_json(const struct vv_dht_provider *p)
{
    json_t *j = contact_json(&p->c);
    json_object_set_new(j, "expiresAt", json_integer((json_int_t)p->expires_ms));
    return j;
}

static void provider_found(void *arg, const struct vv_dht_provider *p)
{
    struct call *c = arg;
    if (c->conn == NULL || !vv_rpc_conn_is_open(c->conn))
        return;
    json_t *j = provider_json(p);
    json_object_set_new(j, "contentId", json_string(c->content_id));
    vv_rpc_notify(c->conn, "dht.provider", j);
}

static void got_providers(void *arg, const struct vv_dht_get_result *r)
{
    struct call *c = arg;
    if (r->status != 0) {
        vv_rpc_fail(c->req, r->status, "%s", vv_strerror(r->status));
        call_free(c);
        return;
    }
    json_t *providers = json_array();
    for (size_t i = 0; i < r->n_providers; i++)
        json_array_append_new(providers, provider_json(&r->providers[i]));
    json_t *res = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I}", "contentId", c->content_id,
                            "key", c->key_hex, "providers", providers, "hops", (json_int_t)r->hops,
                            "ms", (json_int_t)r->elapsed_ms, "firstMs", (json_int_t)r->first_ms,
                            "queries", (json_int_t)r->stats.queries);
    if (r->has_record) {
        char type[VV_DHT_CONTENT_TYPE_MAX + 1];
        memcpy(type, r->record.content_type, r->record.content_type_len);
        type[r->record.content_type_len] = '\0';
        json_object_set_new(res, "contentType", json_string(type));
        json_object_set_new(res, "size", json_integer((json_int_t)r->record.size));
        json_object_set_new(res, "replicationFactor", json_integer(r->record.replication_factor));
    }
    vv_rpc_reply(c->req, res);
    call_free(c);
}

static struct vv_rpc_answer providers_lookup(struct vv_rpc_request *req, json_t *params,
                                             struct dht *m, bool stream)
{
    static const char *const allowed[] = {"contentId", "limit", NULL};
    char err[256];
    const char *cid;
    uint64_t limit = 20;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "contentId", true, VV_DHT_CONTENT_ID_MAX, &cid, err,
                            sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "limit", false, 1, VV_DHT_GET_MAX_PROVIDERS, &limit, err,
                          sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (cid[0] == '\0')
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "contentId: must not be empty");
    if (m->dht == NULL)
        return not_running(req, m);
    uint8_t k[VV_DHT_ID_BYTES];
    crypto_hash_sha256(k, (const uint8_t *)cid, strlen(cid));
    struct call *c = call_new(m, req);
    vv_strlcpy(c->content_id, cid, sizeof(c->content_id));
    vv_hex_encode(k, VV_DHT_ID_BYTES, c->key_hex);
    if (stream) {
        c->conn = vv_rpc_request_conn(req);
        if (c->conn)
            vv_rpc_conn_ref(c->conn);
    }
    int rc = vv_dht_node_get_providers(m->dht, k, (uint32_t)limit, stream ? provider_found : NULL,
                                       got_providers, c);
    if (rc != 0) {
        call_free(c);
        if (rc == VV_ENOTFOUND)
            return vv_rpc_fail(req, rc, "the routing table is empty: no node to ask");
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    return vv_rpc_pending(req);
}

static struct vv_rpc_answer get_providers(struct vv_rpc_request *req, json_t *params, void *data)
{
    return providers_lookup(req, params, data, false);
}

static struct vv_rpc_answer find_providers(struct vv_rpc_request *req, json_t *params, void *data)
{
    return providers_lookup(req, params, data, true);
}

#define ID_SCHEMA "{\"type\":\"string\",\"pattern\":\"^[0-9a-fA-F]{64}$\"}"

static int register_methods(struct dht *m, struct vv_rpc *rpc)
{
    const struct vv_rpc_method methods[] = {
        {.name = "dht.findNode",
         .handler = find_node,
         .summary = "Runs an iterative FIND_NODE lookup for `nodeId` and answers with the k "
                    "closest nodes that answered (nearest first, with the round trip measured "
                    "to each), the lookup's hops and its duration in ms.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"nodeId\":" ID_SCHEMA
                          "},\"required\":[\"nodeId\"],\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"closest\":{\"type\":\"array\"},"
                          "\"hops\":{\"type\":\"integer\"},\"ms\":{\"type\":\"integer\"},"
                          "\"queries\":{\"type\":\"integer\"}}}",
         .data = m},
        {.name = "dht.ping",
         .handler = ping,
         .summary = "Sends a DHT PING by datagram to `address` (or to the address the routing "
                    "table has for `nodeId`) and checks the signed PONG; `verified` is true "
                    "when this call checked the signature (false: the pair was verified "
                    "before). A node that proves its ID is offered to the routing table.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"nodeId\":" ID_SCHEMA
                          ",\"address\":{\"type\":\"string\",\"maxLength\":63}},"
                          "\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"nodeId\":{\"type\":\"string\"},"
                          "\"address\":{\"type\":\"string\"},\"rttMs\":{\"type\":\"integer\"},"
                          "\"verified\":{\"type\":\"boolean\"}}}",
         .data = m},
        {.name = "dht.routingTable",
         .handler = routing_table,
         .summary = "The routing table: its non-empty buckets with their contacts (least "
                    "recently seen first: smoothed rttMs, lastSeenMs ago, consecutive failures) "
                    "and replacement candidates cached, and the number of contacts.",
         .params_schema = "{\"type\":\"object\",\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"buckets\":{\"type\":\"array\"},"
                          "\"size\":{\"type\":\"integer\"}}}",
         .data = m},
        {.name = "dht.refreshBucket",
         .handler = refresh_bucket,
         .summary = "Starts a refresh lookup for a random ID in bucket `index` (0 to 255) and "
                    "answers at once.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"index\":{\"type\":\"integer\","
                          "\"minimum\":0,\"maximum\":255}},\"required\":[\"index\"],"
                          "\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"started\":{\"type\":\"boolean\"},"
                          "\"index\":{\"type\":\"integer\"}}}",
         .data = m},
        {.name = "dht.publish",
         .handler = publish,
         .summary = "Signs `value` (base64, at most 64 KiB; over 900 bytes it travels over "
                    "connections) with this node's key and stores "
                    "it under SHA-256(`key`) at the k closest nodes, expiring after `ttl` "
                    "seconds ([dht] record_ttl_s by default, at most 172800); answers the key "
                    "(hex), the sequence number published and how many nodes stored it.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\","
                          "\"maxLength\":1024},\"value\":{\"type\":\"string\"},\"ttl\":"
                          "{\"type\":\"integer\",\"minimum\":1,\"maximum\":172800}},"
                          "\"required\":[\"key\",\"value\"],\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"},"
                          "\"seq\":{\"type\":\"integer\"},\"storedAt\":{\"type\":\"integer\"},"
                          "\"hops\":{\"type\":\"integer\"},\"ms\":{\"type\":\"integer\"}}}",
         .data = m},
        {.name = "dht.get",
         .handler = get,
         .summary = "Looks up the values under SHA-256(`key`): one per publisher, the highest "
                    "sequence number found, each signature checked; with the lookup's hops and "
                    "duration in ms.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\","
                          "\"maxLength\":1024}},\"required\":[\"key\"],"
                          "\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\"},"
                          "\"values\":{\"type\":\"array\"},\"omitted\":{\"type\":\"integer\"},"
                          "\"hops\":{\"type\":\"integer\"},\"ms\":{\"type\":\"integer\"}}}",
         .data = m},
        {.name = "dht.publishContent",
         .handler = publish_content,
         .summary = "Announces this node as a provider of `contentId` (its DHT key: "
                    "SHA-256(contentId)) at the k closest nodes, with the record's contentType, "
                    "size and replicationFactor, for `ttl` seconds; answers how many stored it.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"contentId\":{\"type\":"
                          "\"string\",\"minLength\":1,\"maxLength\":128},\"contentType\":{"
                          "\"type\":\"string\",\"maxLength\":64},\"size\":{\"type\":"
                          "\"integer\",\"minimum\":0},\"replicationFactor\":{\"type\":"
                          "\"integer\",\"minimum\":1,\"maximum\":255},\"ttl\":{\"type\":"
                          "\"integer\",\"minimum\":1,\"maximum\":172800}},\"required\":["
                          "\"contentId\"],\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"contentId\":{\"type\":"
                          "\"string\"},\"key\":{\"type\":\"string\"},\"storedAt\":{\"type\":"
                          "\"integer\"}}}",
         .data = m},
        {.name = "dht.getProviders",
         .handler = get_providers,
         .summary = "Looks up the providers of `contentId` (at most `limit`, default 20, up to "
                    "256): a complete lookup, or until limit providers are known; answers them "
                    "with the record's metadata, hops, ms and firstMs (when the first provider "
                    "arrived).",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"contentId\":{\"type\":"
                          "\"string\",\"minLength\":1,\"maxLength\":128},\"limit\":{\"type\":"
                          "\"integer\",\"minimum\":1,\"maximum\":256}},\"required\":["
                          "\"contentId\"],\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"providers\":{\"type\":"
                          "\"array\"},\"hops\":{\"type\":\"integer\"},\"ms\":{\"type\":"
                          "\"integer\"}}}",
         .data = m},
        {.name = "dht.findProviders",
         .handler = find_providers,
         .summary = "As dht.getProviders, streamed: each provider is sent as a `dht.provider` "
                    "notification ({contentId, nodeId, address, expiresAt}) on the caller's "
                    "connection as soon as an answer names it; then the result.",
         .params_schema = "{\"type\":\"object\",\"properties\":{\"contentId\":{\"type\":"
                          "\"string\",\"minLength\":1,\"maxLength\":128},\"limit\":{\"type\":"
                          "\"integer\",\"minimum\":1,\"maximum\":256}},\"required\":["
                          "\"contentId\"],\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\",\"properties\":{\"providers\":{\"type\":"
                          "\"array\"},\"hops\":{\"type\":\"integer\"},\"ms\":{\"type\":"
                          "\"integer\"}}}",
         .data = m},
        {.name = "dht.stats",
         .handler = stats,
         .summary = "The DHT node's counters: table and verified-cache sizes, requests served "
                    "by type, pings, queries, timeouts, lookups and the smoothed round trip.",
         .params_schema = "{\"type\":\"object\",\"additionalProperties\":false}",
         .result_schema = "{\"type\":\"object\"}",
         .data = m},
    };
    return vv_rpc_register_all(rpc, methods, sizeof(methods) / sizeof(methods[0]));
}

/* ---- persistence: state_dir/dht.sqlite ------------------------------------------------ */

/*
 * Saves the table's contacts (stale ones left out: they probably left). Runs on the loop: at
 * most a few thousand rows in one transaction of a WAL database without fsync at commit,
 * a few ms at 2,000 (figures in vivim/dht_persist.h), every [dht] save_ms and at stop.
 */
static void persist_save(struct dht *m)
{
    if (m->disk == NULL || m->dht == NULL)
        return;
    const struct vv_dht_rt *rt = vv_dht_node_table(m->dht);
    uint64_t now = vv_env_now(m->env), wall = vv_env_wall_ms(m->env);
    struct vv_dht_saved_contact *c = vv_xcalloc(vv_dht_rt_size(rt) + 1, sizeof(*c));
    size_t n = 0;
    for (unsigned b = 0; b < VV_DHT_ID_BITS; b++) {
        struct vv_dht_rt_entry e[VV_DHT_K];
        size_t got = vv_dht_rt_bucket_entries(rt, b, e, VV_DHT_K);
        for (size_t i = 0; i < got; i++) {
            if (e[i].failures >= VV_DHT_MAX_FAILURES)
                continue;
            memcpy(c[n].id, e[i].c.id, VV_DHT_ID_BYTES);
            c[n].addr = e[i].c.addr;
            /* The table's times are of the monotonic clock, which a restart resets. */
            uint64_t ago = now >= e[i].last_seen_ms ? now - e[i].last_seen_ms : 0;
            c[n].last_seen_ms = wall >= ago ? wall - ago : 0;
            c[n].rtt_ms = e[i].rtt_ms;
            n++;
        }
    }
    size_t kept = 0;
    if (vv_dht_persist_save_contacts(m->disk, c, n, &kept) == 0)
        vv_gauge_set(m->saved, (double)kept);
    else
        vv_counter_inc(m->persist_errors);
    vv_free(c);
    m->last_save_ms = now;
}

/* Offers the saved contacts still waiting until the node has no room for more pings. */
static void persist_drain(struct dht *m)
{
    while (m->next_restore < m->n_restore) {
        const struct vv_dht_saved_contact *c = &m->restore[m->next_restore];
        char a[VV_DHT_ADDR_STR_BYTES];
        int rc = vv_dht_addr_format(&c->addr, a, sizeof(a));
        if (rc == 0)
            rc = vv_dht_node_add_candidate(m->dht, c->id, a);
        if (rc == VV_EBUSY)
            return;
        m->next_restore++;
    }
    vv_free(m->restore);
    m->restore = NULL;
    m->n_restore = m->next_restore = 0;
}

static void persist_tick(struct vv_env *env, void *arg)
{
    struct dht *m = arg;
    if (m->dht == NULL)
        return;
    if (m->restore != NULL)
        persist_drain(m);
    uint32_t period = vv_dht_settings(&m->n->config)->save_ms;
    if (vv_env_now(env) - m->last_save_ms >= period)
        persist_save(m);
}

/* Opens the store and loads the saved contacts for persist_drain. Without a store the node
 * runs as before, from its bootstrap list: the contacts are soft state, not worth a failed
 * start. */
static void persist_start(struct dht *m)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", vv_node_settings(&m->n->config)->state_dir,
             VV_DHT_PERSIST_FILE);
    bool recreated = false;
    if (vv_dht_persist_open(path, &m->disk, &recreated) != 0) {
        vv_counter_inc(m->persist_errors);
        vv_log_warn("dht", "running without a saved routing table (%s cannot be used)", path);
        return;
    }
    if (recreated)
        vv_counter_inc(m->persist_errors);
    m->restore = vv_xcalloc(VV_DHT_PERSIST_MAX_CONTACTS, sizeof(*m->restore));
    size_t skipped = 0;
    if (vv_dht_persist_load_contacts(m->disk, VV_DHT_PERSIST_MAX_CONTACTS, m->restore,
                                     &m->n_restore, &skipped) != 0) {
        vv_counter_inc(m->persist_errors);
        m->n_restore = 0;
    }
    vv_counter_add(m->persist_errors, skipped);
    vv_gauge_set(m->saved, (double)m->n_restore);
    vv_log_info("dht", "%zu saved contact(s) in %s to verify", m->n_restore, path);
    m->last_save_ms = vv_env_now(m->env);
    m->persist_timer =
        vv_env_timer_start(m->env, VV_DHT_PERSIST_TICK_MS, VV_DHT_PERSIST_TICK_MS, persist_tick, m);
}

/* This node's own records: kept on disk as the node gives them (kind = the request type),
 * so that a restarted node republishes them. A commit in WAL mode with synchronous=NORMAL:
 * a kill -9 loses nothing committed; a power loss may lose the last ones, which the
 * publisher (the distribution pipeline) publishes again. */
static void on_own(void *arg, uint16_t type, const uint8_t key[VV_DHT_ID_BYTES],
                   const uint8_t *body, size_t len, uint64_t expires_ms)
{
    struct dht *m = arg;
    if (m->disk == NULL)
        return;
    int rc = body != NULL ? vv_dht_persist_put_record(m->disk, type, key, body, len, expires_ms)
                          : vv_dht_persist_delete_record(m->disk, type, key);
    if (rc != 0 && rc != VV_ENOTFOUND) {
        vv_counter_inc(m->persist_errors);
        vv_log_warn("dht", "own record %s: %s", body ? "save" : "delete", vv_strerror(rc));
    }
}

struct restore_ctx {
    struct dht *m;
    size_t restored, refused;
};

static int restore_own(void *arg, int64_t kind, const uint8_t key[VV_DHT_ID_BYTES],
                       const uint8_t *body, size_t len, uint64_t expires_ms)
{
    (void)key;
    (void)expires_ms;
    struct restore_ctx *rc = arg;
    if (kind < 0 || kind > UINT16_MAX ||
        vv_dht_node_restore_own(rc->m->dht, (uint16_t)kind, body, len) != 0)
        rc->refused++;
    else
        rc->restored++;
    return 0;
}

/* The own records saved before: restored (and due for republish at once); the expired and
 * unreadable ones are deleted. */
static void persist_restore_own(struct dht *m)
{
    if (m->disk == NULL)
        return;
    size_t expired = 0, skipped = 0;
    if (vv_dht_persist_expire_records(m->disk, vv_env_wall_ms(m->env), &expired) != 0)
        vv_counter_inc(m->persist_errors);
    struct restore_ctx rc = {.m = m};
    if (vv_dht_persist_load_records(m->disk, restore_own, &rc, &skipped) != 0)
        vv_counter_inc(m->persist_errors);
    vv_counter_add(m->persist_errors, skipped + rc.refused);
    if (rc.restored + rc.refused + expired > 0)
        vv_log_info("dht", "%zu own record(s) restored for republish (%zu expired, %zu refused)",
                    rc.restored, expired, rc.refused + skipped);
}

/* Saves a last time and closes the store; the node still runs. */
static void persist_stop(struct dht *m)
{
    if (m->persist_timer != 0)
        vv_env_timer_cancel(m->env, m->persist_timer);
    m->persist_timer = 0;
    persist_save(m);
    vv_dht_persist_close(m->disk);
    m->disk = NULL;
    vv_free(m->restore);
    m->restore = NULL;
    m->n_restore = m->next_restore = 0;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int dht_init(struct vv_node *n)
{
    struct dht *m = vv_xcalloc(1, sizeof(*m));
    m->n = n;
    vv_node_set_module_data(n, &vv_dht_module, m);
    struct vv_metrics *mx = n->metrics;
    m->lookups = vv_metrics_counter(mx, "vivimd_dht_lookups_total",
                                    "DHT lookups ended, by kind (find_node, self, refresh) and "
                                    "outcome (ok: some node answered, failed).",
                                    "kind,outcome");
    m->rpcs = vv_metrics_counter(mx, "vivimd_dht_rpcs_total",
                                 "DHT requests, by type and direction (out: sent, in: served).",
                                 "type,direction");
    m->timeouts = vv_metrics_counter(mx, "vivimd_dht_timeouts_total",
                                     "DHT requests of this node that got no answer in time.", NULL);
    static const double hop_bounds[] = {1, 2, 3, 4, 5, 6, 8, 10};
    m->hops = vv_metrics_histogram(mx, "vivimd_dht_lookup_hops",
                                   "Hops of the DHT lookups that found nodes.", NULL, hop_bounds,
                                   sizeof(hop_bounds) / sizeof(hop_bounds[0]));
    m->latency = vv_metrics_histogram(
        mx, "vivimd_dht_lookup_seconds", "Duration of the DHT lookups that found nodes.", NULL,
        vv_metrics_latency_seconds_buckets, vv_metrics_latency_seconds_buckets_len);
    for (int i = 0; i < P_COUNT; i++)
        m->probes[i] = (struct probe){.m = m, .kind = (enum probe_kind)i};
    m->stores = vv_metrics_counter(mx, "vivimd_dht_stores_total",
                                   "PUT_VALUE and ADD_PROVIDER requests served, by type and "
                                   "outcome (accepted, or the refusal: token, stale, too_large, "
                                   "expiry, quota, full, signature, key, busy, other).",
                                   "type,outcome");
    vv_metrics_gauge_fn(mx, "vivimd_dht_own_records",
                        "This node's own values and provider records, republished until they "
                        "expire.",
                        probe_value, &m->probes[P_OWN]);
    vv_metrics_counter_fn(mx, "vivimd_dht_republished_total",
                          "Stores of this node's own records sent by the republish.", probe_value,
                          &m->probes[P_REPUBLISHED]);
    vv_metrics_counter_fn(mx, "vivimd_dht_rate_limited_total",
                          "DHT requests by datagram answered busy: their source network was over "
                          "[dht] rate_per_source.",
                          probe_value, &m->probes[P_RATE_LIMITED]);
    vv_metrics_gauge_fn(mx, "vivimd_dht_values_stored",
                        "Signed values this node stores for others.", probe_value,
                        &m->probes[P_VALUES]);
    vv_metrics_gauge_fn(mx, "vivimd_dht_value_bytes",
                        "Bytes charged for the values this node stores (value bytes plus a "
                        "fixed overhead each).",
                        probe_value, &m->probes[P_VALUE_BYTES]);
    vv_metrics_gauge_fn(mx, "vivimd_dht_provider_records",
                        "(key, provider) entries this node stores for others.", probe_value,
                        &m->probes[P_PROVIDERS]);
    vv_metrics_gauge_fn(mx, "vivimd_dht_table_contacts", "Contacts in the DHT routing table.",
                        probe_value, &m->probes[P_TABLE]);
    vv_metrics_gauge_fn(mx, "vivimd_dht_verified_contacts",
                        "(node ID, address) pairs in the DHT's verified-contact cache.",
                        probe_value, &m->probes[P_VERIFIED]);
    m->saved = vv_metrics_gauge(mx, "vivimd_dht_saved_contacts",
                                "Contacts in state_dir/dht.sqlite after the last save (or the "
                                "load at start).",
                                NULL);
    m->persist_errors = vv_metrics_counter(
        mx, "vivimd_dht_persist_errors_total",
        "Errors of the DHT's store on disk: a failed open, load or save, a file replaced as "
        "unreadable, a malformed row skipped.",
        NULL);
    return register_methods(m, n->rpc);
}

/* Joins through the [net] bootstrap entries (host:port or nodeid@host:port) that are numeric
 * addresses; names are left to the connection manager, whose connected peers join us too. */
static void bootstrap(struct dht *m)
{
    const struct vv_net_settings *ns = vv_net_settings(&m->n->config);
    if (ns->bootstrap == NULL)
        return;
    char *copy = vv_xstrdup(ns->bootstrap);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        char *at = strchr(tok, '@');
        const char *addr = at ? at + 1 : tok;
        char canon[VV_ENV_ADDRESS_BYTES];
        if (vv_env_address_canon(addr, canon, sizeof(canon)) != 0) {
            vv_log_info("dht", "bootstrap %s: not numeric, left to the connection manager", addr);
            continue;
        }
        int rc = vv_dht_node_bootstrap(m->dht, canon);
        if (rc != 0)
            vv_log_warn("dht", "bootstrap %s: %s", canon, vv_strerror(rc));
    }
    vv_free(copy);
}

static int dht_start(struct vv_node *n)
{
    struct dht *m = dht_of(n);
    const struct vv_dht_settings *s = vv_dht_settings(&n->config);
    m->env = vv_env_uv_env(n->env);
    if (!s->enabled) {
        vv_log_info("dht", "disabled");
        return 0;
    }
    struct vv_dht_node_config cfg;
    vv_dht_node_config_from_settings(s, &cfg);
    struct vv_dht_node_hooks hooks = {
        .rpc = on_rpc,
        .timeout = on_timeout,
        .lookup = on_lookup,
        .peer_address = peer_address,
        .store = on_store,
        .own = on_own,
        .arg = m,
    };
    m->dht = vv_dht_node_new(m->env, &cfg, &hooks);
    persist_start(m);
    persist_restore_own(m);
    bootstrap(m);
    if (m->restore != NULL)
        persist_drain(m); /* after the bootstrap list, which the operator chose */
    return 0;
}

static void dht_stop(struct vv_node *n)
{
    struct dht *m = dht_of(n);
    if (m == NULL)
        return;
    if (m->dht != NULL)
        persist_stop(m);
    struct vv_dht_node *d = m->dht;
    m->dht = NULL;
    vv_dht_node_free(d); /* fails the RPC calls in flight: the node is stopping */
    m->env = NULL;
}

static void dht_deinit(struct vv_node *n)
{
    vv_free(dht_of(n));
    vv_node_set_module_data(n, &vv_dht_module, NULL);
}

static void dht_reload(struct vv_node *n)
{
    struct dht *m = dht_of(n);
    if (m == NULL || m->dht == NULL)
        return;
    struct vv_dht_node_config cfg;
    vv_dht_node_config_from_settings(vv_dht_settings(&n->config), &cfg);
    vv_dht_node_reconfigure(m->dht, &cfg);
}

static json_t *dht_health(struct vv_node *n)
{
    struct dht *m = dht_of(n);
    bool running = m != NULL && m->dht != NULL;
    return json_pack("{s:b, s:b, s:I}", "ok", m != NULL && m->env != NULL, "running", running,
                     "contacts",
                     (json_int_t)(running ? vv_dht_rt_size(vv_dht_node_table(m->dht)) : 0));
}

static const char *const dht_depends[] = {"net", "rpc", "monitor", NULL};

const struct vv_module vv_dht_module = {
    .name = "dht",
    .config = &vv_dht_settings_section,
    .depends = dht_depends,
    .init = dht_init,
    .start = dht_start,
    .stop = dht_stop,
    .deinit = dht_deinit,
    .reload = dht_reload,
    .health = dht_health,
};
