/*
 * Content records: validation of untrusted input into the normalized form every backend
 * stores, update merging, and the status rules. Pure functions: no I/O, no clock (the
 * caller passes now), no randomness (the caller passes a generated id).
 */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/registry.h"

#define MAX_SAFE_INTEGER 9007199254740991LL /* 2^53-1: exact in every JSON reader */

static const char *const status_names[] = {"active", "expired", "revoked", "archived"};
static const char *const type_names[] = {"conversation", "acu", "collection"};
static const char *const audience_names[] = {"public", "circle", "users", "link"};

const char *vv_record_status_name(enum vv_record_status s)
{
    return (unsigned)s < VV_ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}

int vv_record_status_parse(const char *s, enum vv_record_status *out)
{
    for (size_t i = 0; i < VV_ARRAY_SIZE(status_names); i++) {
        if (strcmp(s, status_names[i]) == 0) {
            *out = (enum vv_record_status)i;
            return 0;
        }
    }
    return VV_EINVAL;
}

bool vv_record_status_transition_ok(enum vv_record_status from, enum vv_record_status to)
{
    if (from == to)
        return true;
    switch (from) {
    case VV_RECORD_ACTIVE:
        return true; /* to expired, revoked or archived */
    case VV_RECORD_EXPIRED:
    case VV_RECORD_ARCHIVED:
        return to != from;
    case VV_RECORD_REVOKED:
        return false; /* revocation is final */
    }
    return false;
}

bool vv_did_valid(const char *did)
{
    size_t len = strlen(did);
    if (len > VV_DID_MAX_BYTES || strncmp(did, "did:", 4) != 0)
        return false;
    const char *p = did + 4;
    const char *method = p;
    while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
        p++;
    if (p == method || *p != ':')
        return false;
    p++;
    if (*p == '\0')
        return false;
    /* method-specific-id: ALPHA / DIGIT / "." / "-" / "_" / ":" / pct-encoded; not ending in ':' */
    for (; *p; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '-' || c == '_' || c == ':')
            continue;
        if (c == '%' && strchr("0123456789ABCDEFabcdef", p[1]) && p[1] &&
            strchr("0123456789ABCDEFabcdef", p[2]) && p[2]) {
            p += 2;
            continue;
        }
        return false;
    }
    return did[len - 1] != ':';
}

bool vv_record_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > VV_RECORD_ID_MAX_BYTES)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return false;
    return true;
}

static int enum_index(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_len, __VA_ARGS__);                                                       \
        return VV_EINVAL;                                                                          \
    } while (0)

static int get_ms(const json_t *v, const char *field, json_int_t *out, char *err, size_t err_len)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > MAX_SAFE_INTEGER)
        FAIL("%s: expected milliseconds since 1970 as a non-negative integer", field);
    *out = json_integer_value(v);
    return 0;
}

static int check_audience(const json_t *a, char *err, size_t err_len)
{
    if (!json_is_object(a))
        FAIL("audience: expected an object {type, targets}");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)a, key, v)
    {
        if (strcmp(key, "type") != 0 && strcmp(key, "targets") != 0)
            FAIL("audience.%.32s: unknown field", key);
    }
    json_t *type = json_object_get(a, "type");
    if (!json_is_string(type) ||
        enum_index(json_string_value(type), audience_names, VV_ARRAY_SIZE(audience_names)) < 0)
        FAIL("audience.type: expected one of public, circle, users, link");
    json_t *targets = json_object_get(a, "targets");
    if (targets == NULL)
        return 0;
    if (!json_is_array(targets))
        FAIL("audience.targets: expected an array of strings");
    if (json_array_size(targets) > VV_AUDIENCE_MAX_TARGETS)
        FAIL("audience.targets: more than %d entries", VV_AUDIENCE_MAX_TARGETS);
    size_t i;
    json_array_foreach(targets, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > VV_AUDIENCE_TARGET_MAX_BYTES ||
            strlen(json_string_value(v)) != json_string_length(v))
            FAIL("audience.targets[%zu]: expected a non-empty string of at most %d bytes", i,
                 VV_AUDIENCE_TARGET_MAX_BYTES);
        if (strcmp(json_string_value(type), "users") == 0 && !vv_did_valid(json_string_value(v)))
            FAIL("audience.targets[%zu]: expected a DID (did:method:id)", i);
    }
    if (strcmp(json_string_value(type), "public") != 0 && json_array_size(targets) == 0)
        FAIL("audience.targets: a %s audience needs at least one target", json_string_value(type));
    return 0;
}

static int check_schedule(const json_t *s, char *err, size_t err_len)
{
    if (!json_is_object(s))
        FAIL("schedule: expected an object {publishAt, expiresAt}");
    const char *key;
    json_t *v;
    json_int_t pub = 0, exp = 0;
    json_object_foreach((json_t *)s, key, v)
    {
        if (strcmp(key, "publishAt") == 0) {
            if (get_ms(v, "schedule.publishAt", &pub, err, err_len) != 0)
                return VV_EINVAL;
        } else if (strcmp(key, "expiresAt") == 0) {
            if (!json_is_null(v) && get_ms(v, "schedule.expiresAt", &exp, err, err_len) != 0)
                return VV_EINVAL;
        } else {
            FAIL("schedule.%.32s: unknown field", key);
        }
    }
    if (exp != 0 && pub != 0 && exp <= pub)
        FAIL("schedule.expiresAt: must be later than publishAt");
    return 0;
}

static int check_providers(const json_t *p, char *err, size_t err_len)
{
    if (!json_is_array(p) || json_array_size(p) > VV_RECORD_MAX_PROVIDERS)
        FAIL("providers: expected an array of at most %d node IDs", VV_RECORD_MAX_PROVIDERS);
    size_t i;
    json_t *v;
    json_array_foreach(p, i, v)
    {
        if (!json_is_string(v) || !vv_hex_is_sha256(json_string_value(v)))
            FAIL("providers[%zu]: expected a node ID (64 lowercase hex digits)", i);
    }
    return 0;
}

static int check_permissions(const json_t *p, char *err, size_t err_len)
{
    if (!json_is_object(p))
        FAIL("permissions: expected an object");
    char *s = json_dumps(p, JSON_COMPACT);
    size_t n = s ? strlen(s) : 0;
    free(s); /* jansson's allocator */
    if (n > VV_PERMISSIONS_MAX_BYTES)
        FAIL("permissions: larger than %d bytes", VV_PERMISSIONS_MAX_BYTES);
    return 0;
}

static int check_mutable(const char *key, const json_t *v, char *err, size_t err_len, bool *known)
{
    *known = true;
    if (strcmp(key, "audience") == 0)
        return check_audience(v, err, err_len);
    if (strcmp(key, "permissions") == 0)
        return check_permissions(v, err, err_len);
    if (strcmp(key, "schedule") == 0)
        return check_schedule(v, err, err_len);
    if (strcmp(key, "providers") == 0)
        return check_providers(v, err, err_len);
    if (strcmp(key, "replicaCount") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
            FAIL("replicaCount: expected an integer from 0 to 1000000");
        return 0;
    }
    if (strcmp(key, "status") == 0) {
        enum vv_record_status st;
        if (!json_is_string(v) || vv_record_status_parse(json_string_value(v), &st) != 0)
            FAIL("status: expected one of active, expired, revoked, archived");
        return 0;
    }
    *known = false;
    return 0;
}

int vv_record_validate(const json_t *in, uint64_t now_ms, const char *generated_id, json_t **out,
                       char *err, size_t err_len)
{
    *out = NULL;
    if (!json_is_object(in))
        FAIL("record: expected an object");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)in, key, v)
    {
        bool known;
        if (check_mutable(key, v, err, err_len, &known) != 0)
            return VV_EINVAL;
        if (known)
            continue;
        if (strcmp(key, "id") == 0) {
            if (!json_is_string(v) || !vv_record_id_valid(json_string_value(v)))
                FAIL("id: expected 1 to %d characters of A-Z, a-z, 0-9, '-' or '_'",
                     VV_RECORD_ID_MAX_BYTES);
        } else if (strcmp(key, "contentId") == 0 || strcmp(key, "hash") == 0) {
            if (!json_is_string(v) || !vv_hex_is_sha256(json_string_value(v)))
                FAIL("%s: expected a SHA-256 as 64 lowercase hex digits", key);
        } else if (strcmp(key, "ownerDid") == 0) {
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
                !vv_did_valid(json_string_value(v)))
                FAIL("ownerDid: expected a DID (did:method:id, at most %d bytes)",
                     VV_DID_MAX_BYTES);
        } else if (strcmp(key, "type") == 0) {
            if (!json_is_string(v) ||
                enum_index(json_string_value(v), type_names, VV_ARRAY_SIZE(type_names)) < 0)
                FAIL("type: expected one of conversation, acu, collection");
        } else if (strcmp(key, "size") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > MAX_SAFE_INTEGER)
                FAIL("size: expected a non-negative integer of bytes");
        } else if (strcmp(key, "createdAt") == 0) {
            json_int_t ms;
            if (get_ms(v, "createdAt", &ms, err, err_len) != 0)
                return VV_EINVAL;
        } else {
            FAIL("%.64s: unknown field", key);
        }
    }
    static const char *const required[] = {"contentId", "ownerDid", "type",
                                           "size",      "hash",     "audience"};
    for (size_t i = 0; i < VV_ARRAY_SIZE(required); i++)
        if (json_object_get(in, required[i]) == NULL)
            FAIL("%s: required", required[i]);

    json_t *r = json_deep_copy(in);
    if (json_object_get(r, "id") == NULL)
        json_object_set_new(r, "id", json_string(generated_id));
    if (json_object_get(r, "createdAt") == NULL)
        json_object_set_new(r, "createdAt", json_integer((json_int_t)now_ms));
    if (json_object_get(r, "permissions") == NULL)
        json_object_set_new(r, "permissions", json_object());
    if (json_object_get(r, "schedule") == NULL)
        json_object_set_new(r, "schedule", json_object());
    if (json_object_get(r, "providers") == NULL)
        json_object_set_new(r, "providers", json_array());
    if (json_object_get(r, "replicaCount") == NULL)
        json_object_set_new(r, "replicaCount", json_integer(0));
    if (json_object_get(r, "status") == NULL)
        json_object_set_new(r, "status", json_string("active"));
    json_t *aud = json_object_get(r, "audience");
    if (json_object_get(aud, "targets") == NULL)
        json_object_set_new(aud, "targets", json_array());
    *out = r;
    return 0;
}

int vv_record_apply_update(const json_t *current, const json_t *patch, json_t **out, char *err,
                           size_t err_len)
{
    *out = NULL;
    if (!json_is_object(patch) || json_object_size(patch) == 0)
        FAIL("patch: expected a non-empty object of fields to change");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)patch, key, v)
    {
        bool known;
        if (check_mutable(key, v, err, err_len, &known) != 0)
            return VV_EINVAL;
        if (!known)
            FAIL("%.64s: cannot be changed by an update (or unknown)", key);
    }
    json_t *st = json_object_get(patch, "status");
    if (st != NULL) {
        enum vv_record_status from = VV_RECORD_ACTIVE, to = VV_RECORD_ACTIVE;
        vv_record_status_parse(json_string_value(json_object_get(current, "status")), &from);
        vv_record_status_parse(json_string_value(st), &to);
        if (!vv_record_status_transition_ok(from, to)) {
            snprintf(err, err_len, "status: a %s record cannot become %s", status_names[from],
                     status_names[to]);
            return VV_ESTATE;
        }
    }
    json_t *r = json_deep_copy(current);
    json_object_foreach((json_t *)patch, key, v)
    {
        json_object_set(r, key, v);
    }
    json_t *aud = json_object_get(r, "audience");
    if (json_object_get(aud, "targets") == NULL)
        json_object_set_new(aud, "targets", json_array());
    *out = r;
    return 0;
}
