/*
 * userdb.* RPC methods: a user's content records with their (encrypted) content as base64.
 * The contentId must be the SHA-256 of the content: content is addressed by its hash.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "vivim/common.h"
#include "vivim/node.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"
#include "vivim/userdb.h"

#define ERR_BYTES 256

static void answer(int status, json_t *result, const char *msg, void *arg)
{
    struct vv_rpc_request *req = arg;
    if (status == 0)
        vv_rpc_reply(req, json_incref(result));
    else
        vv_rpc_fail(req, status, "%s", msg ? msg : vv_strerror(status));
}

static struct vv_rpc_answer submitted(struct vv_rpc_request *req, int rc)
{
    return rc == 0 ? vv_rpc_pending(req) : vv_rpc_fail(req, rc, "%s", vv_strerror(rc));
}

/* ownerDid and (when asked) contentId, checked. */
static int owner_and_id(const json_t *params, const char **owner, const char **cid, char *err)
{
    if (vv_rpc_param_string(params, "ownerDid", true, VV_DID_MAX_BYTES, owner, err, ERR_BYTES) < 0)
        return -1;
    if (!vv_did_valid(*owner)) {
        snprintf(err, ERR_BYTES, "ownerDid: expected a DID (did:method:id, at most %d bytes)",
                 VV_DID_MAX_BYTES);
        return -1;
    }
    if (cid == NULL)
        return 0;
    if (vv_rpc_param_string(params, "contentId", true, 64, cid, err, ERR_BYTES) < 0)
        return -1;
    if (!vv_hex_is_sha256(*cid)) {
        snprintf(err, ERR_BYTES, "contentId: expected a SHA-256 as 64 lowercase hex digits");
        return -1;
    }
    return 0;
}

#define NEED_USERDB(req)                                                                           \
    do {                                                                                           \
        if (vv_userdb_of(vv_rpc_request_node(req)) == NULL)                                        \
            return vv_rpc_fail(req, VV_ENODE_SHUTTING_DOWN, "user databases are not running");     \
    } while (0)

static struct vv_rpc_answer m_put(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_USERDB(req);
    char err[ERR_BYTES];
    const char *owner, *cid, *b64;
    static const char *const allowed[] = {"ownerDid", "contentId", "content", "meta", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        owner_and_id(params, &owner, &cid, err) < 0 ||
        vv_rpc_param_string(params, "content", true, (VV_USERDB_MAX_CONTENT_BYTES / 3 + 1) * 4,
                            &b64, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    json_t *meta = json_object_get(params, "meta");
    if (meta != NULL && !json_is_object(meta))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "meta: expected an object");
    size_t b64len = strlen(b64);
    uint8_t *bytes = vv_xmalloc(b64len / 4 * 3 + 3);
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(bytes, b64len / 4 * 3 + 3, b64, b64len, NULL, &len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + b64len) {
        vv_free(bytes);
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "content: expected base64");
    }
    uint8_t h[32];
    char hex[65];
    crypto_hash_sha256(h, bytes, len);
    vv_hex_encode(h, 32, hex);
    if (strcmp(hex, cid) != 0) {
        vv_free(bytes);
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "contentId: is not the SHA-256 of content (%s)", hex);
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    int rc = vv_userdb_put(vv_userdb_of(vv_rpc_request_node(req)), owner, cid, bytes, len, meta,
                           now, answer, req);
    vv_free(bytes);
    return submitted(req, rc);
}

static struct vv_rpc_answer m_get(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_USERDB(req);
    char err[ERR_BYTES];
    const char *owner, *cid;
    static const char *const allowed[] = {"ownerDid", "contentId", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        owner_and_id(params, &owner, &cid, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    return submitted(req, vv_userdb_fetch_for_distribution(vv_userdb_of(vv_rpc_request_node(req)),
                                                           cid, owner, answer, req));
}

static struct vv_rpc_answer m_list(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_USERDB(req);
    char err[ERR_BYTES];
    const char *owner, *cursor = NULL;
    uint64_t limit = VV_REGISTRY_DEFAULT_PAGE;
    static const char *const allowed[] = {"ownerDid", "cursor", "limit", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        owner_and_id(params, &owner, NULL, err) < 0 ||
        vv_rpc_param_string(params, "cursor", false, 64, &cursor, err, sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "limit", false, 1, VV_REGISTRY_MAX_PAGE, &limit, err,
                          sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (cursor && !vv_hex_is_sha256(cursor))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "cursor: not a cursor list returned");
    return submitted(req, vv_userdb_list(vv_userdb_of(vv_rpc_request_node(req)), owner, cursor,
                                         (uint32_t)limit, answer, req));
}

int vv_userdb_rpc_register(struct vv_rpc *rpc);
int vv_userdb_rpc_register(struct vv_rpc *rpc)
{
    static const struct vv_rpc_method methods[] = {
        {"userdb.put", m_put, NULL,
         "Stores a user's content (base64) under its contentId, the SHA-256 of the bytes. "
         "Storing the same bytes again succeeds; other bytes under the same id do not.",
         "{\"type\":\"object\",\"required\":[\"ownerDid\",\"contentId\",\"content\"],"
         "\"properties\":{\"ownerDid\":{\"type\":\"string\"},\"contentId\":{\"type\":\"string\","
         "\"pattern\":\"^[0-9a-f]{64}$\"},\"content\":{\"type\":\"string\",\"contentEncoding\":"
         "\"base64\"},\"meta\":{\"type\":\"object\"}}}",
         "{\"type\":\"object\",\"properties\":{\"contentId\":{\"type\":\"string\"},\"size\":{"
         "\"type\":\"integer\"},\"createdAt\":{\"type\":\"integer\"}}}"},
        {"userdb.get", m_get, NULL,
         "A user's content record with its content (fetchContentForDistribution).",
         "{\"type\":\"object\",\"required\":[\"ownerDid\",\"contentId\"],\"properties\":{"
         "\"ownerDid\":{\"type\":\"string\"},\"contentId\":{\"type\":\"string\"}}}",
         "{\"type\":\"object\",\"properties\":{\"contentId\":{\"type\":\"string\"},\"content\":{"
         "\"type\":\"string\",\"contentEncoding\":\"base64\"},\"size\":{\"type\":\"integer\"},"
         "\"createdAt\":{\"type\":\"integer\"},\"meta\":{\"type\":\"object\"}}}"},
        {"userdb.list", m_list, NULL, "A page of a user's content records (without content).",
         "{\"type\":\"object\",\"required\":[\"ownerDid\"],\"properties\":{\"ownerDid\":{"
         "\"type\":\"string\"},\"cursor\":{\"type\":\"string\"},\"limit\":{\"type\":\"integer\","
         "\"minimum\":1,\"maximum\":1000}}}",
         "{\"type\":\"object\",\"properties\":{\"records\":{\"type\":\"array\"},\"nextCursor\":{"
         "\"type\":[\"string\",\"null\"]}}}"},
    };
    return vv_rpc_register_all(rpc, methods, VV_ARRAY_SIZE(methods));
}
