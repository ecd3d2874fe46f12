/*
 * registry.* RPC methods. Input is validated here, before any disk work, with -32602 and a
 * message naming the bad field; the registry then answers asynchronously.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "vivim/common.h"
#include "vivim/node.h"
#include "vivim/registry.h"
#include "vivim/rpc.h"

#define ERR_BYTES 256

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* The registry's completion, turned into the RPC answer. */
static void answer(int status, json_t *result, const char *msg, void *arg)
{
    struct vv_rpc_request *req = arg;
    if (status == 0)
        vv_rpc_reply(req, json_incref(result));
    else
        vv_rpc_fail(req, status == VV_EINVAL ? VV_RPC_INVALID_PARAMS : status, "%s",
                    msg ? msg : vv_strerror(status));
}

/* Submits, or answers at once if the registry refused synchronously. */
static struct vv_rpc_answer submitted(struct vv_rpc_request *req, int rc)
{
    if (rc == 0)
        return vv_rpc_pending(req);
    return vv_rpc_fail(req, rc == VV_EINVAL ? VV_RPC_INVALID_PARAMS : rc, "%s",
                       rc == VV_EINVAL ? "cursor: not a cursor this registry returned"
                                       : vv_strerror(rc));
}

static struct vv_registry *registry_of(struct vv_rpc_request *req)
{
    return vv_registry_of(vv_rpc_request_node(req));
}

#define NEED_REGISTRY(req)                                                                         \
    do {                                                                                           \
        if (registry_of(req) == NULL)                                                              \
            return vv_rpc_fail(req, VV_ENODE_SHUTTING_DOWN, "the registry is not running");        \
    } while (0)

static int get_id(const json_t *params, const char *name, const char **out, char *err)
{
    int rc = vv_rpc_param_string(params, name, true, VV_RECORD_ID_MAX_BYTES, out, err, ERR_BYTES);
    if (rc == 0 && !vv_record_id_valid(*out)) {
        snprintf(err, ERR_BYTES, "%s: expected 1 to %d characters of A-Z, a-z, 0-9, '-' or '_'",
                 name, VV_RECORD_ID_MAX_BYTES);
        return -1;
    }
    return rc;
}

static int get_page(const json_t *params, const char **cursor, uint32_t *limit, char *err)
{
    *cursor = NULL;
    uint64_t l = VV_REGISTRY_DEFAULT_PAGE;
    if (vv_rpc_param_string(params, "cursor", false, VV_CURSOR_MAX_BYTES, cursor, err, ERR_BYTES) <
            0 ||
        vv_rpc_param_uint(params, "limit", false, 1, VV_REGISTRY_MAX_PAGE, &l, err, ERR_BYTES) < 0)
        return -1;
    *limit = (uint32_t)l;
    return 0;
}

static struct vv_rpc_answer m_register(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    uint8_t rnd[16];
    char gen[33];
    randombytes_buf(rnd, sizeof(rnd));
    vv_hex_encode(rnd, sizeof(rnd), gen);
    json_t *rec;
    if (vv_record_validate(params, wall_ms(), gen, &rec, err, sizeof(err)) != 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    int rc = vv_registry_register(registry_of(req), rec, answer, req);
    json_decref(rec);
    return submitted(req, rc);
}

static struct vv_rpc_answer m_update(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *id;
    static const char *const allowed[] = {"id", "patch", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        get_id(params, "id", &id, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    json_t *patch = json_object_get(params, "patch");
    if (!json_is_object(patch) || json_object_size(patch) == 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "patch: expected an object of fields to change");
    /* Check the patch's fields now, so a bad one is named before any disk work. */
    json_t *probe = json_pack("{s:s, s:s}", "status", "active", "id", id);
    json_object_set_new(probe, "audience", json_pack("{s:s, s:[]}", "type", "public", "targets"));
    json_t *merged = NULL;
    int vrc = vv_record_apply_update(probe, patch, &merged, err, sizeof(err));
    json_decref(probe);
    json_decref(merged);
    if (vrc == VV_EINVAL)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "patch.%s", err);
    return submitted(req, vv_registry_update(registry_of(req), id, patch, answer, req));
}

static struct vv_rpc_answer by_id(struct vv_rpc_request *req, json_t *params,
                                  int (*fn)(struct vv_registry *, const char *, vv_registry_cb,
                                            void *))
{
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *id;
    static const char *const allowed[] = {"id", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        get_id(params, "id", &id, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    return submitted(req, fn(registry_of(req), id, answer, req));
}

static struct vv_rpc_answer m_deregister(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    return by_id(req, params, vv_registry_deregister);
}

static struct vv_rpc_answer m_find_by_id(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    return by_id(req, params, vv_registry_find_by_id);
}

static struct vv_rpc_answer m_stats(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    return by_id(req, params, vv_registry_stats);
}

static struct vv_rpc_answer m_find_by_owner(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *owner, *cursor;
    uint32_t limit;
    static const char *const allowed[] = {"ownerDid", "cursor", "limit", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        vv_rpc_param_string(params, "ownerDid", true, VV_DID_MAX_BYTES, &owner, err, sizeof(err)) <
            0 ||
        get_page(params, &cursor, &limit, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (!vv_did_valid(owner))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "ownerDid: expected a DID (did:method:id)");
    return submitted(
        req, vv_registry_find_by_owner(registry_of(req), owner, cursor, limit, answer, req));
}

static struct vv_rpc_answer m_find_by_audience(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *type, *target = NULL, *cursor;
    uint32_t limit;
    static const char *const allowed[] = {"type", "target", "cursor", "limit", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        vv_rpc_param_string(params, "type", true, 16, &type, err, sizeof(err)) < 0 ||
        vv_rpc_param_string(params, "target", false, VV_AUDIENCE_TARGET_MAX_BYTES, &target, err,
                            sizeof(err)) < 0 ||
        get_page(params, &cursor, &limit, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    if (strcmp(type, "public") && strcmp(type, "circle") && strcmp(type, "users") &&
        strcmp(type, "link"))
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS,
                           "type: expected one of public, circle, users, link");
    if (strcmp(type, "public") != 0 && target == NULL)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "target: required for a %s audience", type);
    return submitted(req, vv_registry_find_by_audience(registry_of(req), type, target, cursor,
                                                       limit, answer, req));
}

static struct vv_rpc_answer m_find_expired(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *cursor;
    uint32_t limit;
    uint64_t now = wall_ms();
    static const char *const allowed[] = {"now", "cursor", "limit", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        vv_rpc_param_uint(params, "now", false, 0, 9007199254740991ULL, &now, err, sizeof(err)) <
            0 ||
        get_page(params, &cursor, &limit, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    return submitted(req,
                     vv_registry_find_expired(registry_of(req), now, cursor, limit, answer, req));
}

static struct vv_rpc_answer m_access_log(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *id, *cursor;
    uint32_t limit;
    static const char *const allowed[] = {"id", "cursor", "limit", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        get_id(params, "id", &id, err) < 0 || get_page(params, &cursor, &limit, err) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    return submitted(req, vv_registry_access_log(registry_of(req), id, cursor, limit, answer, req));
}

static struct vv_rpc_answer m_log_access(struct vv_rpc_request *req, json_t *params, void *d)
{
    (void)d;
    NEED_REGISTRY(req);
    char err[ERR_BYTES];
    const char *id, *actor, *action;
    static const char *const allowed[] = {"id", "actor", "action", NULL};
    if (vv_rpc_params_object(params, allowed, err, sizeof(err)) < 0 ||
        get_id(params, "id", &id, err) < 0 ||
        vv_rpc_param_string(params, "actor", true, VV_DID_MAX_BYTES, &actor, err, sizeof(err)) <
            0 ||
        vv_rpc_param_string(params, "action", true, 32, &action, err, sizeof(err)) < 0)
        return vv_rpc_fail(req, VV_RPC_INVALID_PARAMS, "%s", err);
    return submitted(
        req, vv_registry_log_access(registry_of(req), id, actor, action, wall_ms(), answer, req));
}

#define RECORD_SCHEMA                                                                              \
    "{\"type\":\"object\",\"required\":[\"contentId\",\"ownerDid\",\"type\",\"size\",\"hash\","    \
    "\"audience\"],\"properties\":{"                                                               \
    "\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_-]{1,64}$\"},"                          \
    "\"contentId\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{64}$\"},"                          \
    "\"ownerDid\":{\"type\":\"string\",\"description\":\"did:method:id, at most 256 bytes\"},"     \
    "\"createdAt\":{\"type\":\"integer\",\"description\":\"ms since 1970\"},"                      \
    "\"type\":{\"enum\":[\"conversation\",\"acu\",\"collection\"]},"                               \
    "\"size\":{\"type\":\"integer\",\"minimum\":0},"                                               \
    "\"hash\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{64}$\"},"                               \
    "\"audience\":{\"type\":\"object\",\"properties\":{\"type\":{\"enum\":[\"public\","            \
    "\"circle\",\"users\",\"link\"]},\"targets\":{\"type\":\"array\",\"items\":{\"type\":"         \
    "\"string\"},\"maxItems\":1000}}},"                                                            \
    "\"permissions\":{\"type\":\"object\"},"                                                       \
    "\"schedule\":{\"type\":\"object\",\"properties\":{\"publishAt\":{\"type\":\"integer\"},"      \
    "\"expiresAt\":{\"type\":\"integer\"}}},"                                                      \
    "\"providers\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"pattern\":"                \
    "\"^[0-9a-f]{64}$\"},\"maxItems\":64},"                                                        \
    "\"replicaCount\":{\"type\":\"integer\",\"minimum\":0},"                                       \
    "\"status\":{\"enum\":[\"active\",\"expired\",\"revoked\",\"archived\"]}}}"
#define ID_PARAM "\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_-]{1,64}$\"}"
#define PAGE_PARAMS                                                                                \
    "\"cursor\":{\"type\":\"string\",\"description\":\"nextCursor of the previous page\"},"        \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":100}"
#define PAGE_RESULT                                                                                \
    "{\"type\":\"object\",\"properties\":{\"records\":{\"type\":\"array\","                        \
    "\"items\":" RECORD_SCHEMA "},\"nextCursor\":{\"type\":[\"string\",\"null\"]}}}"

int vv_registry_rpc_register(struct vv_rpc *rpc);
int vv_registry_rpc_register(struct vv_rpc *rpc)
{
    static const struct vv_rpc_method methods[] = {
        {"registry.register", m_register, NULL,
         "Registers a content record (params: the record). Registering the same id, content "
         "and owner again returns the stored record.",
         RECORD_SCHEMA, RECORD_SCHEMA},
        {"registry.update", m_update, NULL,
         "Changes a record's mutable fields (audience, permissions, schedule, providers, "
         "replicaCount, status). A revoked record stays revoked.",
         "{\"type\":\"object\",\"required\":[\"id\",\"patch\"],\"properties\":{" ID_PARAM
         ",\"patch\":{\"type\":\"object\"}}}",
         RECORD_SCHEMA},
        {"registry.deregister", m_deregister, NULL, "Removes a record and its access log.",
         "{\"type\":\"object\",\"required\":[\"id\"],\"properties\":{" ID_PARAM "}}",
         "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"deregistered\":"
         "{\"const\":true}}}"},
        {"registry.findById", m_find_by_id, NULL, "One record by its id.",
         "{\"type\":\"object\",\"required\":[\"id\"],\"properties\":{" ID_PARAM "}}",
         RECORD_SCHEMA},
        {"registry.findByOwner", m_find_by_owner, NULL,
         "A page of an owner's records, in id order.",
         "{\"type\":\"object\",\"required\":[\"ownerDid\"],\"properties\":{\"ownerDid\":{"
         "\"type\":\"string\"}," PAGE_PARAMS "}}",
         PAGE_RESULT},
        {"registry.findByAudience", m_find_by_audience, NULL,
         "A page of the records visible to an audience (a circle, a user, a link, or public).",
         "{\"type\":\"object\",\"required\":[\"type\"],\"properties\":{\"type\":{\"enum\":["
         "\"public\",\"circle\",\"users\",\"link\"]},\"target\":{\"type\":\"string\"}," PAGE_PARAMS
         "}}",
         PAGE_RESULT},
        {"registry.findExpired", m_find_expired, NULL,
         "A page of active records whose expiresAt has passed (now defaults to the clock).",
         "{\"type\":\"object\",\"properties\":{\"now\":{\"type\":\"integer\"}," PAGE_PARAMS "}}",
         PAGE_RESULT},
        {"registry.stats", m_stats, NULL,
         "Access count, replica count and last access of a record.",
         "{\"type\":\"object\",\"required\":[\"id\"],\"properties\":{" ID_PARAM "}}",
         "{\"type\":\"object\",\"properties\":{\"accessCount\":{\"type\":\"integer\"},"
         "\"replicaCount\":{\"type\":\"integer\"},\"lastAccess\":{\"type\":[\"integer\","
         "\"null\"]}}}"},
        {"registry.accessLog", m_access_log, NULL,
         "A page of a record's access log, newest first (the log keeps [registry] "
         "access_log_max_rows rows).",
         "{\"type\":\"object\",\"required\":[\"id\"],\"properties\":{" ID_PARAM "," PAGE_PARAMS
         "}}",
         "{\"type\":\"object\",\"properties\":{\"entries\":{\"type\":\"array\",\"items\":{"
         "\"type\":\"object\",\"properties\":{\"at\":{\"type\":\"integer\"},\"actor\":{\"type\":"
         "\"string\"},\"action\":{\"type\":\"string\"}}}},\"nextCursor\":{\"type\":[\"string\","
         "\"null\"]}}}"},
        {"registry.logAccess", m_log_access, NULL,
         "Records an access to a record (who, what) in its log and counts.",
         "{\"type\":\"object\",\"required\":[\"id\",\"actor\",\"action\"],\"properties\":{" ID_PARAM
         ",\"actor\":{\"type\":\"string\"},\"action\":{\"type\":\"string\",\"maxLength\":32}}}",
         "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"at\":{\"type\":"
         "\"integer\"}}}"},
    };
    return vv_rpc_register_all(rpc, methods, VV_ARRAY_SIZE(methods));
}
