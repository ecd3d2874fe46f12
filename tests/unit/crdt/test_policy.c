/*
 * Access policies of CRDT documents (src/crdt/policy.c): what a made policy says and signs,
 * the decoder's refusals of everything that is not exactly one well-formed policy, and the
 * bound on the nodes it names.
 */
#include "vv_test.h"

#include <string.h>

#include "fake_env.h"
#include "vivim/crdt_policy.h"

/* A node's keys are a fake env's (fake_env.h): a real Ed25519 key pair from the seed, signing
 * through vv_env_sign and verifying with libsodium, which is all a policy needs. k.id and
 * k.env are the fake's own fields. */

static void node(uint8_t out[VV_NODE_ID_BYTES], uint32_t i)
{
    memset(out, 0, VV_NODE_ID_BYTES);
    out[0] = (uint8_t)(i >> 24), out[1] = (uint8_t)(i >> 16), out[2] = (uint8_t)(i >> 8);
    out[3] = (uint8_t)i;
}

static void test_a_made_policy_decodes_to_what_was_given_and_verifies(void **state)
{
    (void)state;
    struct vv_fake_env k;
    vv_fake_env_init(&k, 1);
    uint8_t ids[4][VV_NODE_ID_BYTES];
    node(ids[0], 9), node(ids[1], 3), node(ids[2], 9), node(ids[3], 5);
    uint8_t w[2][VV_NODE_ID_BYTES];
    node(w[0], 5);
    memcpy(w[1], k.id.node_id, VV_NODE_ID_BYTES); /* the creator: left out, writes anyway */
    struct vv_crdt_policy *p;
    /* Readers 9, 3, 9 (repeated), 5 (also a writer): readers 3 and 9, writer 5. */
    assert_int_equal(
        vv_crdt_policy_make(&k.env, "doc:1", VV_CRDT_KIND_MAP, 0, 7, ids[0], 4, w[0], 2, &p), 0);
    assert_string_equal(p->doc_id, "doc:1");
    assert_int_equal(p->kind, VV_CRDT_KIND_MAP);
    assert_int_equal(p->version, 7);
    assert_memory_equal(p->creator, k.id.node_id, VV_NODE_ID_BYTES);
    assert_int_equal(p->n_readers, 2);
    assert_int_equal(p->n_writers, 1);
    assert_memory_equal(p->readers[0], ids[1], VV_NODE_ID_BYTES);
    assert_memory_equal(p->readers[1], ids[0], VV_NODE_ID_BYTES);
    assert_true(vv_crdt_policy_verify(&k.env, p));
    assert_int_equal(vv_crdt_policy_access(p, k.id.node_id), VV_CRDT_ACCESS_WRITE);
    assert_int_equal(vv_crdt_policy_access(p, ids[3]), VV_CRDT_ACCESS_WRITE);
    assert_int_equal(vv_crdt_policy_access(p, ids[1]), VV_CRDT_ACCESS_READ);
    uint8_t stranger[VV_NODE_ID_BYTES];
    node(stranger, 4);
    assert_int_equal(vv_crdt_policy_access(p, stranger), VV_CRDT_ACCESS_NONE);
    assert_int_equal(vv_crdt_policy_access(NULL, k.id.node_id), VV_CRDT_ACCESS_NONE);

    /* The decoder gives back the same policy; any changed byte breaks the signature or the
     * form. */
    struct vv_crdt_policy *q;
    assert_int_equal(vv_crdt_policy_decode(p->bytes, p->len, &q), 0);
    assert_int_equal(q->len, p->len);
    assert_memory_equal(q->bytes, p->bytes, p->len);
    for (size_t i = 0; i < p->len; i++) {
        q->bytes[i] ^= 0x40;
        struct vv_crdt_policy *r;
        if (vv_crdt_policy_decode(q->bytes, q->len, &r) == 0) {
            assert_false(vv_crdt_policy_verify(&k.env, r));
            vv_crdt_policy_free(r);
        }
        q->bytes[i] ^= 0x40;
    }
    vv_crdt_policy_free(q);
    /* Another key's signature over the same bytes is not the creator's. */
    struct vv_fake_env other;
    vv_fake_env_init(&other, 2);
    uint8_t *copy = vv_xmalloc(p->len);
    memcpy(copy, p->bytes, p->len);
    vv_env_sign(&other.env, copy, p->len - 64, copy + p->len - 64);
    assert_int_equal(vv_crdt_policy_decode(copy, p->len, &q), 0);
    assert_false(vv_crdt_policy_verify(&k.env, q));
    vv_crdt_policy_free(q);
    vv_free(copy);
    vv_crdt_policy_free(p);
    vv_fake_env_free(&other);
    vv_fake_env_free(&k);
}

static void test_the_decoder_refuses_anything_but_one_policy(void **state)
{
    (void)state;
    struct vv_fake_env k;
    vv_fake_env_init(&k, 1);
    uint8_t ids[2][VV_NODE_ID_BYTES];
    node(ids[0], 1), node(ids[1], 2);
    struct vv_crdt_policy *p, *q;
    assert_int_equal(
        vv_crdt_policy_make(&k.env, "d", VV_CRDT_KIND_TEXT, 0, 1, ids[0], 2, NULL, 0, &p), 0);
    size_t n = p->len;
    uint8_t *b = vv_xmalloc(n + 1);
    memcpy(b, p->bytes, n);
    /* Every truncation, and one byte more. */
    for (size_t len = 0; len < n; len++)
        assert_int_equal(vv_crdt_policy_decode(b, len, &q), VV_ECRDT_POLICY);
    b[n] = 0;
    assert_int_equal(vv_crdt_policy_decode(b, n + 1, &q), VV_ECRDT_POLICY);
    assert_null(q);
    /* Readers out of order (swapped): refused. The readers start after magic, id length,
     * id "d", type, flags, key, version and count. */
    size_t r0 = VV_CRDT_POLICY_MAGIC_BYTES + 1 + 1 + 2 + 32 + 8 + 2;
    memcpy(b + r0, ids[1], VV_NODE_ID_BYTES);
    memcpy(b + r0 + VV_NODE_ID_BYTES, ids[0], VV_NODE_ID_BYTES);
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    memcpy(b + r0 + VV_NODE_ID_BYTES, ids[1], VV_NODE_ID_BYTES); /* a repeat: refused too */
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    memcpy(b, p->bytes, n);
    /* Version 0, an unknown type, an unknown flag, another magic, an id with a space. */
    size_t ver = VV_CRDT_POLICY_MAGIC_BYTES + 1 + 1 + 2 + 32;
    memset(b + ver, 0, 8);
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    memcpy(b, p->bytes, n);
    b[VV_CRDT_POLICY_MAGIC_BYTES + 2] = VV_CRDT_KIND_COUNT;
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    memcpy(b, p->bytes, n);
    b[VV_CRDT_POLICY_MAGIC_BYTES + 3] = 2;
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    b[VV_CRDT_POLICY_MAGIC_BYTES + 3] = VV_CRDT_POLICY_ADOPTED; /* known: decodes */
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), 0);
    assert_int_equal(q->flags, VV_CRDT_POLICY_ADOPTED);
    assert_false(vv_crdt_policy_verify(&k.env, q)); /* the flag is signed */
    vv_crdt_policy_free(q);
    memcpy(b, p->bytes, n);
    b[0] ^= 1;
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    memcpy(b, p->bytes, n);
    b[VV_CRDT_POLICY_MAGIC_BYTES + 1] = ' ';
    assert_int_equal(vv_crdt_policy_decode(b, n, &q), VV_ECRDT_POLICY);
    assert_int_equal(vv_crdt_policy_decode(NULL, 0, &q), VV_ECRDT_POLICY);
    vv_free(b);
    vv_crdt_policy_free(p);
    vv_fake_env_free(&k);
}

static void test_a_policy_names_at_most_1024_nodes(void **state)
{
    (void)state;
    struct vv_fake_env k;
    vv_fake_env_init(&k, 1);
    enum { N = VV_CRDT_POLICY_MAX_NODES + 1 };
    uint8_t(*ids)[VV_NODE_ID_BYTES] = vv_xmalloc(N * VV_NODE_ID_BYTES);
    for (uint32_t i = 0; i < N; i++)
        node(ids[i], i + 1);
    struct vv_crdt_policy *p;
    assert_int_equal(
        vv_crdt_policy_make(&k.env, "d", VV_CRDT_KIND_SET, 0, 1, ids[0], 24, ids[24], N - 24, &p),
        VV_ELIMIT);
    assert_null(p);
    /* 1,024 readers and writers together: the largest policy, within the bound. */
    assert_int_equal(
        vv_crdt_policy_make(&k.env, "d", VV_CRDT_KIND_SET, 0, 1, ids[0], 24, ids[24], N - 25, &p),
        0);
    assert_true(p->len <= VV_CRDT_POLICY_MAX_BYTES);
    assert_true(vv_crdt_policy_verify(&k.env, p));
    vv_crdt_policy_free(p);
    assert_int_equal(
        vv_crdt_policy_make(&k.env, "bad id", VV_CRDT_KIND_SET, 0, 1, NULL, 0, NULL, 0, &p),
        VV_EINVAL);
    assert_int_equal(vv_crdt_policy_make(&k.env, "d", VV_CRDT_KIND_SET, 0, 0, NULL, 0, NULL, 0, &p),
                     VV_EINVAL);
    assert_int_equal(vv_crdt_policy_make(&k.env, "d", VV_CRDT_KIND_SET, 4, 1, NULL, 0, NULL, 0, &p),
                     VV_EINVAL);
    vv_free(ids);
    vv_fake_env_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_made_policy_decodes_to_what_was_given_and_verifies),
        cmocka_unit_test(test_the_decoder_refuses_anything_but_one_policy),
        cmocka_unit_test(test_a_policy_names_at_most_1024_nodes),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
