/* Record validation: every field's rules, normalization, update merging, status rules. */
#include "vv_test.h"

#include <string.h>

#include "vivim/registry.h"

static const char *good =
    "{\"contentId\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
    "\"ownerDid\":\"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK\","
    "\"type\":\"conversation\",\"size\":1234,"
    "\"hash\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\","
    "\"audience\":{\"type\":\"circle\",\"targets\":[\"circle-1\"]}}";

static json_t *with(const char *base, const char *key, json_t *value)
{
    json_t *o = json_loads(base, 0, NULL);
    if (value)
        json_object_set_new(o, key, value);
    else
        json_object_del(o, key);
    return o;
}

static void test_valid_record_is_normalized_with_defaults(void **state)
{
    (void)state;
    json_t *in = json_loads(good, 0, NULL), *out;
    char err[256];
    assert_int_equal(vv_record_validate(in, 1700000000000ULL, "gen-1", &out, err, sizeof(err)), 0);
    assert_string_equal(json_string_value(json_object_get(out, "id")), "gen-1");
    assert_int_equal(json_integer_value(json_object_get(out, "createdAt")), 1700000000000LL);
    assert_string_equal(json_string_value(json_object_get(out, "status")), "active");
    assert_int_equal(json_integer_value(json_object_get(out, "replicaCount")), 0);
    assert_true(json_is_array(json_object_get(out, "providers")));
    assert_true(json_is_object(json_object_get(out, "permissions")));
    json_decref(out);
    json_decref(in);
}

struct bad {
    const char *key;
    json_t *value; /* NULL: remove the key */
    const char *msg_prefix;
};

static void test_each_bad_field_is_named(void **state)
{
    (void)state;
    char long_did[400] = "did:web:";
    memset(long_did + 8, 'a', 300);
    long_did[308] = '\0';
    json_t *many = json_array();
    for (int i = 0; i < 1001; i++)
        json_array_append_new(many, json_string("t"));
    struct bad cases[] = {
        {"contentId", json_string("xyz"), "contentId: expected a SHA-256"},
        {"contentId",
         json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
         "contentId: expected a SHA-256"},
        {"contentId", NULL, "contentId: required"},
        {"ownerDid", json_string("alice"), "ownerDid: expected a DID"},
        {"ownerDid", json_string("did:key:../../etc/passwd"), "ownerDid: expected a DID"},
        {"ownerDid", json_string("did:Key:abc"), "ownerDid: expected a DID"},
        {"ownerDid", json_string(long_did), "ownerDid: expected a DID"},
        {"ownerDid", json_stringn("did:key:a\0b", 11), "ownerDid: expected a DID"},
        {"ownerDid", json_integer(5), "ownerDid: expected a DID"},
        {"type", json_string("video"), "type: expected one of"},
        {"size", json_integer(-1), "size: expected a non-negative integer"},
        {"size", json_real(1.5), "size: expected a non-negative integer"},
        {"hash", json_string("'; DROP TABLE records; --"), "hash: expected a SHA-256"},
        {"audience", json_string("public"), "audience: expected an object"},
        {"audience", json_pack("{s:s}", "type", "everyone"), "audience.type: expected one of"},
        {"audience", json_pack("{s:s, s:[]}", "type", "users", "targets"),
         "audience.targets: a users audience needs at least one target"},
        {"audience", json_pack("{s:s, s:[s]}", "type", "users", "targets", "bob"),
         "audience.targets[0]: expected a DID"},
        {"audience", json_pack("{s:s, s:o}", "type", "circle", "targets", many),
         "audience.targets: more than 1000 entries"},
        {"audience", json_pack("{s:s, s:i}", "type", "public", "extra", 1),
         "audience.extra: unknown field"},
        {"schedule",
         json_pack("{s:I, s:I}", "publishAt", (json_int_t)100, "expiresAt", (json_int_t)50),
         "schedule.expiresAt: must be later than publishAt"},
        {"providers", json_pack("[s]", "not-a-node-id"), "providers[0]: expected a node ID"},
        {"status", json_string("deleted"), "status: expected one of"},
        {"replicaCount", json_integer(-3), "replicaCount: expected an integer"},
        {"id", json_string("has space"), "id: expected 1 to 64 characters"},
        {"surprise", json_true(), "surprise: unknown field"},
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++) {
        json_t *in = with(good, cases[i].key, cases[i].value), *out = NULL;
        char err[256] = "";
        int rc = vv_record_validate(in, 1, "g", &out, err, sizeof(err));
        if (rc != VV_EINVAL || strncmp(err, cases[i].msg_prefix, strlen(cases[i].msg_prefix)) != 0)
            fail_msg("case %zu (%s): rc %d, err '%s'", i, cases[i].key, rc, err);
        assert_null(out);
        json_decref(in);
    }
}

static void test_did_syntax(void **state)
{
    (void)state;
    assert_true(vv_did_valid("did:example:123456789abcdefghi"));
    assert_true(vv_did_valid("did:web:example.com:user:alice"));
    assert_true(vv_did_valid("did:key:z6Mk%20x"));
    assert_false(vv_did_valid("did:example:"));
    assert_false(vv_did_valid("did::abc"));
    assert_false(vv_did_valid("did:ex/ample:abc"));
    assert_false(vv_did_valid("did:example:a/b"));
    assert_false(vv_did_valid("did:example:%zz"));
    assert_false(vv_did_valid("did:example:%2"));
    assert_false(vv_did_valid(""));
}

static void test_status_rules_revoked_is_final(void **state)
{
    (void)state;
    assert_true(vv_record_status_transition_ok(VV_RECORD_ACTIVE, VV_RECORD_REVOKED));
    assert_true(vv_record_status_transition_ok(VV_RECORD_EXPIRED, VV_RECORD_ACTIVE));
    assert_true(vv_record_status_transition_ok(VV_RECORD_ARCHIVED, VV_RECORD_ACTIVE));
    assert_false(vv_record_status_transition_ok(VV_RECORD_REVOKED, VV_RECORD_ACTIVE));
    assert_false(vv_record_status_transition_ok(VV_RECORD_REVOKED, VV_RECORD_ARCHIVED));
}

static void test_update_merges_mutable_fields_and_refuses_others(void **state)
{
    (void)state;
    json_t *in = json_loads(good, 0, NULL), *rec, *merged;
    char err[256];
    assert_int_equal(vv_record_validate(in, 1, "r1", &rec, err, sizeof(err)), 0);
    json_t *patch = json_pack("{s:i, s:s}", "replicaCount", 3, "status", "revoked");
    assert_int_equal(vv_record_apply_update(rec, patch, &merged, err, sizeof(err)), 0);
    assert_int_equal(json_integer_value(json_object_get(merged, "replicaCount")), 3);
    assert_string_equal(json_string_value(json_object_get(merged, "status")), "revoked");
    json_t *back = json_pack("{s:s}", "status", "active");
    json_t *none = NULL;
    assert_int_equal(vv_record_apply_update(merged, back, &none, err, sizeof(err)), VV_ESTATE);
    assert_string_equal(err, "status: a revoked record cannot become active");
    assert_null(none);
    json_t *owner = json_pack("{s:s}", "ownerDid", "did:key:other");
    assert_int_equal(vv_record_apply_update(rec, owner, &none, err, sizeof(err)), VV_EINVAL);
    assert_string_equal(err, "ownerDid: cannot be changed by an update (or unknown)");
    json_decref(owner);
    json_decref(back);
    json_decref(patch);
    json_decref(merged);
    json_decref(rec);
    json_decref(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_record_is_normalized_with_defaults),
        cmocka_unit_test(test_each_bad_field_is_named),
        cmocka_unit_test(test_did_syntax),
        cmocka_unit_test(test_status_rules_revoked_is_final),
        cmocka_unit_test(test_update_merges_mutable_fields_and_refuses_others),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
