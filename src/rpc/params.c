/* Checking named parameters: every message names the field and says what it should be. */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/rpc.h"

int vv_rpc_params_object(const json_t *params, const char *const *allowed, char *err,
                         size_t err_len)
{
    if (!json_is_object(params)) {
        snprintf(err, err_len, "params: expected an object of named parameters");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)params, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok) {
            snprintf(err, err_len, "%.64s: unknown parameter", key);
            return -1;
        }
    }
    return 0;
}

int vv_rpc_param_string(const json_t *params, const char *name, bool required, size_t max_bytes,
                        const char **out, char *err, size_t err_len)
{
    json_t *v = json_object_get(params, name);
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return 1;
        snprintf(err, err_len, "%s: required", name);
        return -1;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
        json_string_length(v) > max_bytes) {
        snprintf(err, err_len, "%s: expected a string of at most %zu bytes", name, max_bytes);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int vv_rpc_param_node_id(const json_t *params, const char *name, bool required,
                         uint8_t out[VV_NODE_ID_BYTES], char *err, size_t err_len)
{
    const char *s;
    int rc = vv_rpc_param_string(params, name, required, 2 * VV_NODE_ID_BYTES, &s, err, err_len);
    if (rc != 0)
        return rc;
    if (strlen(s) != 2 * VV_NODE_ID_BYTES || vv_hex_decode(s, out, VV_NODE_ID_BYTES) != 0) {
        snprintf(err, err_len, "%s: expected 64 hex digits", name);
        return -1;
    }
    return 0;
}

int vv_rpc_param_uint(const json_t *params, const char *name, bool required, uint64_t min,
                      uint64_t max, uint64_t *out, char *err, size_t err_len)
{
    json_t *v = json_object_get(params, name);
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return 1;
        snprintf(err, err_len, "%s: required", name);
        return -1;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max) {
        snprintf(err, err_len, "%s: expected an integer from %llu to %llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}
