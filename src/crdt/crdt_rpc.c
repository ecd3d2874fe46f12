/* The crdt.* RPC methods. Writes (create, apply, join, leave, setAccess) answer once
 * durable. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "crdt_internal.h"

static struct vv_rpc_answer bad_params(struct vv_rpc_request *req, const char *err)
{
    return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
}

/* Reads docId (and checks it); 0 or -1 with err. */
static int doc_id_param(json_t *params, const char **id, char *err, size_t len)
{
    if (vv_rpc_param_string(params, "docId", true, VV_CRDT_DOC_ID_MAX_BYTES, id, err, len) != 0)
        return -1;
    if (!vv_crdt_doc_id_valid(*id)) {
        snprintf(err, len, "docId: 1 to %d printable ASCII characters, no spaces",
                 VV_CRDT_DOC_ID_MAX_BYTES);
        return -1;
    }
    return 0;
}

static struct vv_rpc_answer not_running(struct vv_rpc_request *req)
{
    return vv_rpc_fail(req, VV_ESTATE, "CRDT documents are not running");
}

static struct vv_rpc_answer no_doc(struct vv_rpc_request *req, const char *id)
{
    return vv_rpc_fail(req, VV_ECRDT_NO_DOC, "no document %s", id);
}

static json_t *b64(const uint8_t *b, size_t n)
{
    size_t cap = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = vv_xmalloc(cap);
    sodium_bin2base64(s, cap, b, n, sodium_base64_VARIANT_ORIGINAL);
    json_t *j = json_string(s);
    vv_free(s);
    return j;
}

static json_t *peers_json(struct vv_crdt_module *m, const char *id)
{
    const uint8_t *peers;
    size_t n = vv_crdt_engine_peers(m->engine, id, &peers);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char hex[VV_NODE_ID_HEX_BYTES];
        vv_hex_encode(peers + i * VV_NODE_ID_BYTES, VV_NODE_ID_BYTES, hex);
        json_array_append_new(a, json_string(hex));
    }
    return a;
}

static json_t *ids_json(uint8_t (*ids)[VV_NODE_ID_BYTES], size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char hex[VV_NODE_ID_HEX_BYTES];
        vv_hex_encode(ids[i], VV_NODE_ID_BYTES, hex);
        json_array_append_new(a, json_string(hex));
    }
    return a;
}

static const char *access_name(enum vv_crdt_access a)
{
    return a == VV_CRDT_ACCESS_WRITE ? "write" : a == VV_CRDT_ACCESS_READ ? "read" : "none";
}

/* What crdt.access answers: the policy, and what this node may do. */
static json_t *policy_json(struct vv_crdt_module *m, const char *id)
{
    const struct vv_crdt_policy *p = vv_crdt_engine_policy(m->engine, id);
    if (p == NULL)
        return json_pack("{s:s, s:n, s:I, s:[], s:[], s:s, s:b}", "docId", id, "creator", "version",
                         (json_int_t)0, "readers", "writers", "access", "none", "adopted", 0);
    char creator[VV_NODE_ID_HEX_BYTES], key[2 * VV_ED25519_PK_BYTES + 1];
    vv_hex_encode(p->creator, VV_NODE_ID_BYTES, creator);
    vv_hex_encode(p->creator_pk, VV_ED25519_PK_BYTES, key);
    /* Versions count changes by one from 1: far below 2^53, where JSON numbers stop being
     * exact. */
    return json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:s, s:b}", "docId", id, "creator", creator,
                     "creatorKey", key, "version", (json_int_t)p->version, "readers",
                     ids_json(p->readers, p->n_readers), "writers",
                     ids_json(p->writers, p->n_writers), "access",
                     access_name(vv_crdt_policy_access(p, m->node->identity.node_id)), "adopted",
                     (p->flags & VV_CRDT_POLICY_ADOPTED) != 0);
}

static bool is_creator(struct vv_crdt_module *m, const struct vv_crdt_policy *p)
{
    return p != NULL && memcmp(p->creator, m->node->identity.node_id, VV_NODE_ID_BYTES) == 0;
}

/* list (n ids) without node, and with it at the end when add: a new array to vv_free. */
static uint8_t *list_with(uint8_t (*list)[VV_NODE_ID_BYTES], size_t n,
                          const uint8_t node[VV_NODE_ID_BYTES], bool add, size_t *n_out)
{
    uint8_t *out = vv_xmalloc((n + 1) * VV_NODE_ID_BYTES);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(list[i], node, VV_NODE_ID_BYTES) != 0)
            memcpy(out + VV_NODE_ID_BYTES * k++, list[i], VV_NODE_ID_BYTES);
    if (add)
        memcpy(out + VV_NODE_ID_BYTES * k++, node, VV_NODE_ID_BYTES);
    *n_out = k;
    return out;
}

/* The creator gives node exactly `want` (read or write) in a new version of the policy. */
static int grant(struct vv_crdt_module *m, const char *id, const struct vv_crdt_policy *p,
                 const uint8_t node[VV_NODE_ID_BYTES], enum vv_crdt_access want)
{
    size_t nr, nw;
    uint8_t *r = list_with(p->readers, p->n_readers, node, want == VV_CRDT_ACCESS_READ, &nr);
    uint8_t *w = list_with(p->writers, p->n_writers, node, want == VV_CRDT_ACCESS_WRITE, &nw);
    int rc = vv_crdt_engine_set_access(m->engine, id, r, nr, w, nw);
    vv_free(r);
    vv_free(w);
    return rc;
}

static struct vv_rpc_answer crdt_create(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_crdt_module *m = data;
    static const char *const allowed[] = {"docId", "type", NULL};
    char err[256];
    const char *id, *type;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        doc_id_param(params, &id, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "type", true, 32, &type, err, sizeof(err)) != 0)
        return bad_params(req, err);
    int kind = vv_crdt_kind_parse(type);
    if (kind < 0)
        return bad_params(req, "type: one of gcounter, counter, register, set, text, map");
    if (m->engine == NULL)
        return not_running(req);
    struct vv_crdt_doc *d;
    int rc = vv_crdt_engine_create(m->engine, id, (enum vv_crdt_kind)kind, &d);
    if (rc == VV_EEXIST)
        return vv_rpc_fail(req, rc, "document %s exists", id);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    vv__crdt_store_created(m, d);
    vv__crdt_wait_stored(
        m, req,
        json_pack("{s:s, s:s}", "docId", id, "type", vv_crdt_kind_name((enum vv_crdt_kind)kind)));
    return vv_rpc_pending(req);
}

static struct vv_rpc_answer crdt_apply(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_crdt_module *m = data;
    static const char *const allowed[] = {"docId", "op", NULL};
    char err[256];
    const char *id;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        doc_id_param(params, &id, err, sizeof(err)) != 0)
        return bad_params(req, err);
    json_t *op = json_object_get(params, "op");
    if (op == NULL)
        return bad_params(req, "op: required");
    if (m->engine == NULL)
        return not_running(req);
    if (vv_crdt_engine_find(m->engine, id) == NULL)
        return no_doc(req, id);
    int rc = vv_crdt_engine_op(m->engine, id, op, err, sizeof(err));
    if (rc == VV_ECRDT_TYPE)
        return bad_params(req, err);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", err);
    vv__crdt_wait_stored(m, req, json_pack("{s:s, s:b}", "docId", id, "applied", 1));
    return vv_rpc_pending(req);
}

/* The calls that take exactly {docId} of an existing document: the document, or NULL with
 * *a the answer. */
static struct vv_crdt_doc *doc_call(struct vv_rpc_request *req, json_t *params,
                                    struct vv_crdt_module *m, const char **id,
                                    struct vv_rpc_answer *a)
{
    static const char *const allowed[] = {"docId", NULL};
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        doc_id_param(params, id, err, sizeof(err)) != 0) {
        *a = bad_params(req, err);
        return NULL;
    }
    if (m->engine == NULL) {
        *a = not_running(req);
        return NULL;
    }
    struct vv_crdt_doc *d = vv_crdt_engine_find(m->engine, *id);
    if (d == NULL)
        *a = no_doc(req, *id);
    return d;
}

static struct vv_rpc_answer crdt_value(struct vv_rpc_request *req, json_t *params, void *data)
{
    const char *id;
    struct vv_rpc_answer a;
    struct vv_crdt_doc *d = doc_call(req, params, data, &id, &a);
    if (d == NULL)
        return a;
    return vv_rpc_reply(req, json_pack("{s:s, s:s, s:o}", "docId", id, "type",
                                       vv_crdt_kind_name(vv_crdt_doc_kind(d)), "value",
                                       vv_crdt_doc_value(d)));
}

static struct vv_rpc_answer crdt_state(struct vv_rpc_request *req, json_t *params, void *data)
{
    const char *id;
    struct vv_rpc_answer a;
    struct vv_crdt_doc *d = doc_call(req, params, data, &id, &a);
    if (d == NULL)
        return a;
    uint8_t *st;
    size_t n;
    int rc = vv_crdt_doc_state(d, &st, &n);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    json_t *r = json_pack("{s:s, s:s, s:o, s:I}", "docId", id, "type",
                          vv_crdt_kind_name(vv_crdt_doc_kind(d)), "state", b64(st, n), "bytes",
                          (json_int_t)n);
    vv_free(st);
    return vv_rpc_reply(req, r);
}

static struct vv_rpc_answer crdt_state_vector(struct vv_rpc_request *req, json_t *params,
                                              void *data)
{
    const char *id;
    struct vv_rpc_answer a;
    struct vv_crdt_doc *d = doc_call(req, params, data, &id, &a);
    if (d == NULL)
        return a;
    uint8_t *sv;
    size_t n;
    int rc = vv_crdt_doc_state_vector(d, &sv, &n);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    json_t *r = json_pack("{s:s, s:o, s:I}", "docId", id, "stateVector", b64(sv, n), "bytes",
                          (json_int_t)n);
    vv_free(sv);
    return vv_rpc_reply(req, r);
}

static struct vv_rpc_answer peer_call(struct vv_rpc_request *req, json_t *params, void *data,
                                      int which)
{
    struct vv_crdt_module *m = data;
    static const char *const allowed[] = {"docId", "nodeId", NULL};
    char err[256];
    const char *id;
    uint8_t peer[VV_NODE_ID_BYTES];
    int peer_rc = 1;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        doc_id_param(params, &id, err, sizeof(err)) != 0 ||
        (peer_rc = vv_rpc_param_node_id(params, "nodeId", which != 1, peer, err, sizeof(err))) < 0)
        return bad_params(req, err);
    bool have = peer_rc == 0;
    if (m->engine == NULL)
        return not_running(req);
    if (vv_crdt_engine_find(m->engine, id) == NULL)
        return no_doc(req, id);
    if (have && memcmp(peer, m->node->identity.node_id, VV_NODE_ID_BYTES) == 0)
        return bad_params(req, "nodeId: this node itself");
    int rc;
    json_t *result;
    if (which == 1) {
        rc = vv_crdt_engine_leave(m->engine, id, have ? peer : NULL);
        if (rc == VV_EINVAL)
            return vv_rpc_fail(req, rc, "document %s is not shared with that node", id);
        result = json_pack("{s:s, s:o}", "docId", id, "peers", peers_json(m, id));
    } else {
        rc = vv_crdt_engine_sync(m->engine, id, peer);
        const struct vv_crdt_policy *p = vv_crdt_engine_policy(m->engine, id);
        if (rc == VV_ECRDT_DENIED &&
            vv_crdt_policy_access(p, m->node->identity.node_id) == VV_CRDT_ACCESS_NONE)
            return vv_rpc_fail(req, rc, "the access policy of %s no longer lets this node in", id);
        if (rc == VV_ECRDT_DENIED)
            return vv_rpc_fail(req, rc,
                               "the access policy of %s does not let that node read it (the "
                               "creator adds it with crdt.join)",
                               id);
        if (rc == VV_ECONN_NOT_CONNECTED || rc == VV_ECONN_BACKPRESSURE)
            return vv_rpc_fail(req, rc,
                               "cannot reach that node now (%s); the round runs when it "
                               "connects",
                               vv_strerror(rc));
        result = json_pack("{s:s, s:b}", "docId", id, "started", 1);
    }
    if (rc != 0) {
        json_decref(result);
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    }
    /* Joins and leaves change the stored peer list: answer once it is durable. */
    vv__crdt_wait_stored(m, req, result);
    return vv_rpc_pending(req);
}

/*
 * By the creator: gives the node the access asked for (default write) in a new version of the
 * policy, then shares the document with it. By another node: shares the document with a node
 * the policy already lets in (access, when given, must not exceed what it allows).
 */
static struct vv_rpc_answer crdt_join(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_crdt_module *m = data;
    static const char *const allowed[] = {"docId", "nodeId", "access", NULL};
    char err[256];
    const char *id, *access = NULL;
    uint8_t peer[VV_NODE_ID_BYTES];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        doc_id_param(params, &id, err, sizeof(err)) != 0 ||
        vv_rpc_param_node_id(params, "nodeId", true, peer, err, sizeof(err)) != 0 ||
        vv_rpc_param_string(params, "access", false, 8, &access, err, sizeof(err)) < 0)
        return bad_params(req, err);
    enum vv_crdt_access want = VV_CRDT_ACCESS_WRITE;
    if (access != NULL && strcmp(access, "read") == 0)
        want = VV_CRDT_ACCESS_READ;
    else if (access != NULL && strcmp(access, "write") != 0)
        return bad_params(req, "access: \"read\" or \"write\"");
    if (m->engine == NULL)
        return not_running(req);
    if (vv_crdt_engine_find(m->engine, id) == NULL)
        return no_doc(req, id);
    if (memcmp(peer, m->node->identity.node_id, VV_NODE_ID_BYTES) == 0)
        return bad_params(req, "nodeId: this node itself");
    const struct vv_crdt_policy *p = vv_crdt_engine_policy(m->engine, id);
    enum vv_crdt_access have = vv_crdt_policy_access(p, peer);
    int rc = 0;
    if (is_creator(m, p)) {
        if (have != want)
            rc = grant(m, id, p, peer, want);
        if (rc == VV_ELIMIT)
            return vv_rpc_fail(req, rc, "the access policy of %s names %d nodes already", id,
                               VV_CRDT_POLICY_MAX_NODES);
    } else if (have == VV_CRDT_ACCESS_NONE || (access != NULL && want > have)) {
        char creator[VV_NODE_ID_HEX_BYTES] = "(unknown)";
        if (p != NULL)
            vv_hex_encode(p->creator, VV_NODE_ID_BYTES, creator);
        return vv_rpc_fail(
            req, VV_ECRDT_DENIED,
            "the access policy of %s does not let that node %s it; only its "
            "creator %.16s can change that",
            id, want == VV_CRDT_ACCESS_WRITE && have == VV_CRDT_ACCESS_READ ? "write" : "read",
            creator);
    }
    if (rc == 0)
        rc = vv_crdt_engine_join(m->engine, id, peer);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    p = vv_crdt_engine_policy(m->engine, id);
    /* The policy and the peer list are stored: answer once they are durable. */
    vv__crdt_wait_stored(m, req,
                         json_pack("{s:s, s:o, s:s, s:I}", "docId", id, "peers", peers_json(m, id),
                                   "access", access_name(vv_crdt_policy_access(p, peer)), "version",
                                   (json_int_t)(p ? p->version : 0)));
    return vv_rpc_pending(req);
}

static struct vv_rpc_answer crdt_access(struct vv_rpc_request *req, json_t *params, void *data)
{
    const char *id;
    struct vv_rpc_answer a;
    if (doc_call(req, params, data, &id, &a) == NULL)
        return a;
    return vv_rpc_reply(req, policy_json(data, id));
}

/* A JSON array of node IDs into n × 32 bytes (a new array to vv_free); -1 with err. */
static int ids_param(json_t *params, const char *name, uint8_t **out, size_t *n, char *err,
                     size_t err_len)
{
    json_t *a = json_object_get(params, name);
    if (!json_is_array(a)) {
        snprintf(err, err_len, "%s: required, an array of node IDs", name);
        return -1;
    }
    if (json_array_size(a) > VV_CRDT_POLICY_MAX_NODES) {
        snprintf(err, err_len, "%s: at most %d node IDs", name, VV_CRDT_POLICY_MAX_NODES);
        return -1;
    }
    *n = json_array_size(a);
    *out = vv_xmalloc(*n * VV_NODE_ID_BYTES + 1);
    for (size_t i = 0; i < *n; i++) {
        const char *hex = json_string_value(json_array_get(a, i));
        if (hex == NULL || strlen(hex) != 2 * VV_NODE_ID_BYTES ||
            vv_hex_decode(hex, *out + i * VV_NODE_ID_BYTES, VV_NODE_ID_BYTES) != 0) {
            snprintf(err, err_len, "%s[%zu]: a node ID, 64 hex digits", name, i);
            vv_free(*out);
            *out = NULL;
            return -1;
        }
    }
    return 0;
}

static struct vv_rpc_answer crdt_set_access(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_crdt_module *m = data;
    static const char *const allowed[] = {"docId", "readers", "writers", NULL};
    char err[256];
    const char *id;
    uint8_t *r = NULL, *w = NULL;
    size_t nr = 0, nw = 0;
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0 ||
        doc_id_param(params, &id, err, sizeof(err)) != 0 ||
        ids_param(params, "readers", &r, &nr, err, sizeof(err)) != 0 ||
        ids_param(params, "writers", &w, &nw, err, sizeof(err)) != 0) {
        vv_free(r);
        return bad_params(req, err);
    }
    int rc = m->engine == NULL                            ? VV_ESTATE
             : vv_crdt_engine_find(m->engine, id) == NULL ? VV_ECRDT_NO_DOC
                                                          : 0;
    if (rc == 0)
        rc = vv_crdt_engine_set_access(m->engine, id, r, nr, w, nw);
    vv_free(r);
    vv_free(w);
    if (rc == VV_ESTATE)
        return not_running(req);
    if (rc == VV_ECRDT_NO_DOC)
        return no_doc(req, id);
    if (rc == VV_ECRDT_DENIED)
        return vv_rpc_fail(req, rc,
                           "only the creator of %s can change its access policy (crdt.access "
                           "names it)",
                           id);
    if (rc == VV_ELIMIT)
        return vv_rpc_fail(req, rc, "an access policy names at most %d nodes",
                           VV_CRDT_POLICY_MAX_NODES);
    if (rc != 0)
        return vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
    vv__crdt_wait_stored(m, req, policy_json(m, id));
    return vv_rpc_pending(req);
}
static struct vv_rpc_answer crdt_leave(struct vv_rpc_request *req, json_t *params, void *data)
{
    return peer_call(req, params, data, 1);
}
static struct vv_rpc_answer crdt_sync(struct vv_rpc_request *req, json_t *params, void *data)
{
    return peer_call(req, params, data, 2);
}

static struct vv_rpc_answer crdt_list(struct vv_rpc_request *req, json_t *params, void *data)
{
    struct vv_crdt_module *m = data;
    static const char *const allowed[] = {NULL};
    char err[256];
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) != 0)
        return bad_params(req, err);
    if (m->engine == NULL)
        return not_running(req);
    json_t *a = json_array();
    for (size_t i = 0; i < vv_crdt_engine_count(m->engine); i++) {
        struct vv_crdt_doc *d = vv_crdt_engine_doc_at(m->engine, i);
        json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:I}", "docId", vv_crdt_doc_id(d),
                                           "type", vv_crdt_kind_name(vv_crdt_doc_kind(d)), "peers",
                                           peers_json(m, vv_crdt_doc_id(d)), "pending",
                                           (json_int_t)vv_crdt_doc_pending(d)));
    }
    return vv_rpc_reply(req, json_pack("{s:o}", "documents", a));
}

#define DOC_PARAMS                                                                                 \
    "{\"type\":\"object\",\"required\":[\"docId\"],\"properties\":{\"docId\":{\"type\":"           \
    "\"string\",\"maxLength\":128}},\"additionalProperties\":false}"
#define DOC_NODE_PARAMS(req)                                                                       \
    "{\"type\":\"object\",\"required\":[\"docId\"" req "],\"properties\":{\"docId\":{\"type\":"    \
    "\"string\",\"maxLength\":128},\"nodeId\":{\"type\":\"string\",\"pattern\":"                   \
    "\"^[0-9a-fA-F]{64}$\"}},\"additionalProperties\":false}"
#define ACCESS_RESULT                                                                              \
    "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"creator\":{"           \
    "\"type\":\"string\"},\"creatorKey\":{\"type\":\"string\"},\"version\":{\"type\":"             \
    "\"integer\"},\"readers\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"               \
    "\"writers\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"access\":{\"enum\":"       \
    "[\"none\",\"read\",\"write\"]},\"adopted\":{\"type\":\"boolean\"}}}"
#define PEERS_RESULT                                                                               \
    "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"peers\":{\"type\":"    \
    "\"array\",\"items\":{\"type\":\"string\"}}}}"

int vv__crdt_rpc_register(struct vv_crdt_module *m, struct vv_rpc *rpc)
{
    const struct vv_rpc_method methods[] = {
        {"crdt.create", crdt_create, m,
         "Creates an empty document of a type: gcounter, counter (PN), register (LWW), set "
         "(add-wins OR-set), text (sequence) or map (LWW-map). This node is its creator; its "
         "access policy lets no other node in until crdt.join or crdt.setAccess. Answers once "
         "stored.",
         "{\"type\":\"object\",\"required\":[\"docId\",\"type\"],\"properties\":{\"docId\":{"
         "\"type\":\"string\",\"maxLength\":128},\"type\":{\"enum\":[\"gcounter\",\"counter\","
         "\"register\",\"set\",\"text\",\"map\"]}},\"additionalProperties\":false}",
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"type\":{"
         "\"type\":\"string\"}}}"},
        {"crdt.apply", crdt_apply, m,
         "Applies one operation: {\"increment\":n} / {\"decrement\":n} (counters), {\"set\":v} "
         "(register), {\"add\":v} / {\"remove\":v} (set), {\"insert\":{\"pos\":i,\"text\":s}} / "
         "{\"delete\":{\"pos\":i,\"len\":n}} (text; positions in Unicode code points), "
         "{\"put\":{\"key\":k,\"value\":v}} / {\"del\":{\"key\":k}} (map; k a string or an array "
         "of strings for nested maps). Sent to the document's peers; answers once stored.",
         "{\"type\":\"object\",\"required\":[\"docId\",\"op\"],\"properties\":{\"docId\":{"
         "\"type\":\"string\"},\"op\":{\"type\":\"object\",\"minProperties\":1,"
         "\"maxProperties\":1}},\"additionalProperties\":false}",
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"applied\":{"
         "\"const\":true}}}"},
        {"crdt.value", crdt_value, m, "The document's current value as JSON.", DOC_PARAMS,
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"type\":{"
         "\"type\":\"string\"},\"value\":{}}}"},
        {"crdt.state", crdt_state, m, "The document's full encoded state (docs/crdt.md), base64.",
         DOC_PARAMS,
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"type\":{"
         "\"type\":\"string\"},\"state\":{\"type\":\"string\",\"contentEncoding\":\"base64\"},"
         "\"bytes\":{\"type\":\"integer\"}}}"},
        {"crdt.stateVector", crdt_state_vector, m,
         "The document's encoded state vector, base64 (empty for register and map, whose "
         "deltas are their whole state).",
         DOC_PARAMS,
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"stateVector\":{"
         "\"type\":\"string\",\"contentEncoding\":\"base64\"},\"bytes\":{\"type\":\"integer\"}}}"},
        {"crdt.join", crdt_join, m,
         "Shares the document with a peer node and syncs with it now (or when it connects); "
         "the peer creates the document if it lacks it. On the creator, first gives the node "
         "access (\"write\" unless access says \"read\") in a new version of the policy; "
         "elsewhere, only a node the policy already lets in (at least as far as access "
         "asks) may be joined. Answers once the policy and peer list are stored.",
         "{\"type\":\"object\",\"required\":[\"docId\",\"nodeId\"],\"properties\":{"
         "\"docId\":{\"type\":\"string\",\"maxLength\":128},\"nodeId\":{\"type\":\"string\","
         "\"pattern\":\"^[0-9a-fA-F]{64}$\"},\"access\":{\"enum\":[\"read\",\"write\"]}},"
         "\"additionalProperties\":false}",
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"peers\":{"
         "\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"access\":{\"enum\":["
         "\"read\",\"write\"]},\"version\":{\"type\":\"integer\"}}}"},
        {"crdt.access", crdt_access, m,
         "The document's access policy: its creator (node ID and Ed25519 key), version, the "
         "nodes that may read and those that may write (the creator always may), and what "
         "this node may do (access).",
         DOC_PARAMS, ACCESS_RESULT},
        {"crdt.setAccess", crdt_set_access, m,
         "Replaces the readers and writers of the document's access policy (creator only; at "
         "most 1,024 nodes): a new version, signed, stored and sent to the document's peers. "
         "Peers no longer allowed to read are dropped and stop syncing. Answers the new "
         "policy once stored.",
         "{\"type\":\"object\",\"required\":[\"docId\",\"readers\",\"writers\"],"
         "\"properties\":{\"docId\":{\"type\":\"string\",\"maxLength\":128},\"readers\":{"
         "\"type\":\"array\",\"maxItems\":1024,\"items\":{\"type\":\"string\",\"pattern\":"
         "\"^[0-9a-fA-F]{64}$\"}},\"writers\":{\"type\":\"array\",\"maxItems\":1024,"
         "\"items\":{\"type\":\"string\",\"pattern\":\"^[0-9a-fA-F]{64}$\"}}},"
         "\"additionalProperties\":false}",
         ACCESS_RESULT},
        {"crdt.leave", crdt_leave, m,
         "Stops sharing the document with a peer (without nodeId: with every peer); the peers "
         "are told. The access policy is unchanged: a node it lets in may sync again (and be "
         "joined, with [crdt] auto_join); the creator shuts a node out with crdt.setAccess.",
         DOC_NODE_PARAMS(""), PEERS_RESULT},
        {"crdt.sync", crdt_sync, m,
         "Starts a sync round with a peer now: state vectors both ways, then exactly the missing "
         "updates. The peer is joined if it was not (the policy must let it read).",
         DOC_NODE_PARAMS(",\"nodeId\""),
         "{\"type\":\"object\",\"properties\":{\"docId\":{\"type\":\"string\"},\"started\":{"
         "\"const\":true}}}"},
        {"crdt.list", crdt_list, m, "Every document: id, type, peers, updates waiting.",
         "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
         "{\"type\":\"object\",\"properties\":{\"documents\":{\"type\":\"array\"}}}"},
    };
    return vv_rpc_register_all(rpc, methods, VV_ARRAY_SIZE(methods));
}
