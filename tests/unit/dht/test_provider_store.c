/* The provider store: records must belong to their key, a key lists its most recent
 * providers (at most 2 per source), quotas and fair eviction, a sliced expiry sweep, and a
 * million records in at most 64 MiB, counted through the allocator. */
#include "vv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "vivim/dht_store.h"

#define NOW    1700000000000ull
#define MINUTE 60000ull

static char cid_buf[64];

/* A record for content id `cid`, its key = SHA-256(cid) in key. */
static struct vv_dht_content_record record(const char *cid, uint8_t key[32], uint64_t expires)
{
    struct vv_dht_content_record r;
    memset(&r, 0, sizeof(r));
    r.content_id = cid;
    r.content_id_len = strlen(cid);
    r.content_type = "application/octet-stream";
    r.content_type_len = strlen(r.content_type);
    memset(r.address, 0xaa, 32);
    r.size = 4096;
    r.created_ms = NOW - 1000;
    r.expires_ms = expires;
    r.replication_factor = 3;
    crypto_hash_sha256(key, (const uint8_t *)cid, r.content_id_len);
    return r;
}

/* Provider number i (its node ID starts with i) at a.b.c.d:port. */
static struct vv_dht_contact provider(unsigned i, unsigned a, unsigned b, unsigned c, unsigned d,
                                      unsigned port)
{
    struct vv_dht_contact p;
    char s[48];
    memset(&p, 0, sizeof(p));
    memcpy(p.id, &i, sizeof(i));
    p.id[31] = 0x77;
    snprintf(s, sizeof(s), "%u.%u.%u.%u:%u", a, b, c, d, port);
    assert_int_equal(vv_dht_addr_parse(s, strlen(s), &p.addr), 0);
    return p;
}

static void test_record_must_belong_to_its_key(void **state)
{
    (void)state;
    uint8_t key[32], other[32];
    struct vv_dht_content_record r = record("blob-1", key, NOW + MINUTE);
    assert_int_equal(vv_dht_content_record_check(&r, key), 0);
    memset(other, 0xaa, 32); /* the storage address is a key too */
    assert_int_equal(vv_dht_content_record_check(&r, other), 0);
    other[0] = 1;
    assert_int_equal(vv_dht_content_record_check(&r, other), VV_EDHT_KEY_MISMATCH);
    struct vv_dht_providers *s = vv_dht_providers_new(NULL);
    struct vv_dht_contact p = provider(1, 20, 0, ((1) >> 8) & 255, (1) & 255, 1);
    assert_int_equal(vv_dht_providers_add(s, other, &r, &p, NOW), VV_EDHT_KEY_MISMATCH);
    static char long_id[VV_DHT_CONTENT_ID_MAX + 2];
    memset(long_id, 'x', VV_DHT_CONTENT_ID_MAX + 1);
    struct vv_dht_content_record big = record(long_id, key, NOW + MINUTE);
    assert_int_equal(vv_dht_providers_add(s, key, &big, &p, NOW), VV_EDHT_TOO_LARGE);
    r = record("blob-1", key, NOW);
    assert_int_equal(vv_dht_providers_add(s, key, &r, &p, NOW), VV_EDHT_EXPIRY);
    assert_int_equal(vv_dht_providers_count(s), 0);
    vv_dht_providers_free(s);
}

static void test_providers_are_listed_most_recent_first(void **state)
{
    (void)state;
    struct vv_dht_providers *s = vv_dht_providers_new(NULL);
    uint8_t key[32];
    struct vv_dht_content_record r = record("blob-2", key, NOW + MINUTE);
    struct vv_dht_contact p[3];
    for (unsigned i = 0; i < 3; i++) {
        p[i] = provider(i, 20, i, 0, 1, 1); /* three /24s */
        assert_int_equal(vv_dht_providers_add(s, key, &r, &p[i], NOW + i), 0);
    }
    /* p[0] announces again, later: it is the most recent now, with the later expiry. */
    r.expires_ms = NOW + 5 * MINUTE;
    assert_int_equal(vv_dht_providers_add(s, key, &r, &p[0], NOW + 10), 0);
    assert_int_equal(vv_dht_providers_count(s), 3);
    struct vv_dht_content_record got;
    struct vv_dht_provider out[VV_DHT_MAX_PROVIDERS];
    assert_int_equal(vv_dht_providers_get(s, key, NOW, &got, out, VV_DHT_MAX_PROVIDERS), 3);
    assert_memory_equal(out[0].c.id, p[0].id, 32);
    assert_true(vv_dht_addr_equal(&out[0].c.addr, &p[0].addr));
    assert_int_equal(out[0].expires_ms, NOW + 5 * MINUTE);
    assert_memory_equal(out[1].c.id, p[2].id, 32);
    assert_memory_equal(out[2].c.id, p[1].id, 32);
    assert_int_equal(got.content_id_len, 6);
    assert_memory_equal(got.content_id, "blob-2", 6);
    assert_int_equal(got.content_type_len, strlen("application/octet-stream"));
    assert_memory_equal(got.content_type, "application/octet-stream", got.content_type_len);
    assert_int_equal(got.size, 4096);
    assert_int_equal(got.created_ms, NOW - 1000);
    assert_int_equal(got.expires_ms, NOW + 5 * MINUTE);
    assert_int_equal(got.replication_factor, 3);
    /* After p[1] and p[2] expire only p[0] is served. */
    assert_int_equal(vv_dht_providers_get(s, key, NOW + 2 * MINUTE, NULL, out, 20), 1);
    assert_int_equal(vv_dht_providers_get(s, key, NOW + 6 * MINUTE, NULL, out, 20), VV_ENOTFOUND);
    vv_dht_providers_free(s);
}

static void test_key_keeps_the_most_recent_twenty_two_per_source(void **state)
{
    (void)state;
    struct vv_dht_providers *s = vv_dht_providers_new(NULL);
    uint8_t key[32];
    struct vv_dht_content_record r = record("blob-3", key, NOW + MINUTE);
    for (unsigned i = 0; i < 25; i++) {
        struct vv_dht_contact p =
            provider(i, 20, 0, ((i) >> 8) & 255, (i)&255, 1); /* distinct /24s */
        p.addr.ip[2] = (uint8_t)i;
        assert_int_equal(vv_dht_providers_add(s, key, &r, &p, NOW), 0);
    }
    struct vv_dht_provider out[VV_DHT_MAX_PROVIDERS + 5];
    assert_int_equal(vv_dht_providers_get(s, key, NOW, NULL, out, 25), VV_DHT_MAX_PROVIDERS);
    for (unsigned j = 0; j < VV_DHT_MAX_PROVIDERS; j++) {
        unsigned want = 24 - j;
        assert_memory_equal(out[j].c.id, &want, sizeof(want));
    }
    assert_int_equal(vv_dht_providers_count(s), VV_DHT_MAX_PROVIDERS);
    assert_int_equal(vv_dht_providers_idents(s), VV_DHT_MAX_PROVIDERS);
    /* Three providers from one /24: the third replaces that /24's oldest, not someone else. */
    uint8_t key2[32];
    struct vv_dht_content_record r2 = record("blob-4", key2, NOW + MINUTE);
    struct vv_dht_contact honest = provider(100, 30, 0, ((100) >> 8) & 255, (100) & 255, 1);
    assert_int_equal(vv_dht_providers_add(s, key2, &r2, &honest, NOW), 0);
    for (unsigned i = 0; i < 3; i++) {
        struct vv_dht_contact p = provider(200 + i, 66, 6, 6, 0, (200 + i) & 255);
        assert_int_equal(vv_dht_providers_add(s, key2, &r2, &p, NOW), 0);
    }
    assert_int_equal(vv_dht_providers_get(s, key2, NOW, NULL, out, 25), 3);
    assert_memory_equal(out[2].c.id, honest.id, 32);
    unsigned first = 200;
    for (int j = 0; j < 3; j++)
        assert_memory_not_equal(out[j].c.id, &first, sizeof(first));
    vv_dht_providers_free(s);
}

static void test_source_quota_and_fair_eviction_when_full(void **state)
{
    (void)state;
    struct vv_dht_providers_config cfg;
    vv_dht_providers_config_defaults(&cfg);
    cfg.max_records = 300;
    cfg.source_max_records = 30;
    cfg.source_max_idents = 4;
    struct vv_dht_providers *s = vv_dht_providers_new(&cfg);
    char cid[32];
    uint8_t key[32];
    /* 20 honest providers, 3 records each. */
    for (unsigned h = 0; h < 20; h++)
        for (unsigned i = 0; i < 3; i++) {
            snprintf(cid, sizeof(cid), "honest-%u-%u", h, i);
            struct vv_dht_content_record r = record(cid, key, NOW + MINUTE);
            struct vv_dht_contact p = provider(h, 20, 0, ((h) >> 8) & 255, (h)&255, 1);
            p.addr.ip[2] = (uint8_t)h;
            assert_int_equal(vv_dht_providers_add(s, key, &r, &p, NOW), 0);
        }
    /* One source: 30 records at most, 4 identities at most. */
    int quota = 0;
    for (unsigned i = 0; i < 40; i++) {
        snprintf(cid, sizeof(cid), "q-%u", i);
        struct vv_dht_content_record r = record(cid, key, NOW + MINUTE);
        struct vv_dht_contact p = provider(1000 + i % 4, 66, 0, 0, 1, 1);
        p.addr.ip[3] = 1;
        p.addr.port = 1;
        quota += vv_dht_providers_add(s, key, &r, &p, NOW) == VV_EDHT_QUOTA;
    }
    assert_int_equal(quota, 10);
    struct vv_dht_contact fifth = provider(2000, 66, 0, 0, 1, 1);
    fifth.addr.ip[3] = 9;
    fifth.addr.port = 1;
    struct vv_dht_content_record r0 = record("q-x", key, NOW + MINUTE);
    assert_int_equal(vv_dht_providers_add(s, key, &r0, &fifth, NOW), VV_EDHT_QUOTA);
    /* A flood from 60 /24s, 30 each, into a store of 300. */
    for (unsigned a = 0; a < 60; a++)
        for (unsigned i = 0; i < 30; i++) {
            snprintf(cid, sizeof(cid), "flood-%u-%u", a, i);
            struct vv_dht_content_record r = record(cid, key, NOW + MINUTE);
            struct vv_dht_contact p =
                provider(5000 + a, 77, ((5000 + a) >> 8) & 255, (5000 + a) & 255, 1, 1);
            int rc = vv_dht_providers_add(s, key, &r, &p, NOW);
            assert_true(rc == 0 || rc == VV_EDHT_FULL);
        }
    assert_int_equal(vv_dht_providers_count(s), 300);
    for (unsigned h = 0; h < 20; h++)
        for (unsigned i = 0; i < 3; i++) {
            snprintf(cid, sizeof(cid), "honest-%u-%u", h, i);
            struct vv_dht_content_record r = record(cid, key, NOW + MINUTE);
            struct vv_dht_provider out[1];
            assert_int_equal(vv_dht_providers_get(s, key, NOW, NULL, out, 1), 1);
            (void)r;
        }
    vv_dht_providers_free(s);
}

static void test_sliced_sweep_drops_expired_keys_and_providers(void **state)
{
    (void)state;
    struct vv_dht_providers *s = vv_dht_providers_new(NULL);
    char cid[32];
    uint8_t key[32];
    for (unsigned i = 0; i < 500; i++) {
        snprintf(cid, sizeof(cid), "sweep-%u", i);
        struct vv_dht_content_record r = record(cid, key, NOW + (i % 5 ? MINUTE : 10 * MINUTE));
        struct vv_dht_contact p = provider(i % 50, 20, 0, ((i % 50) >> 8) & 255, (i % 50) & 255, 1);
        assert_int_equal(vv_dht_providers_add(s, key, &r, &p, NOW), 0);
    }
    assert_int_equal(vv_dht_providers_keys(s), 500);
    size_t dropped = 0;
    for (int call = 0; call < 50; call++) {
        size_t d = vv_dht_providers_expire(s, NOW + 2 * MINUTE, 10);
        assert_true(d <= 10);
        dropped += d;
    }
    assert_int_equal(dropped, 400);
    assert_int_equal(vv_dht_providers_count(s), 100);
    assert_int_equal(vv_dht_providers_keys(s), 100);
    assert_int_equal(vv_dht_providers_idents(s), 10); /* i % 50 with i % 5 == 0 */
    while (vv_dht_providers_expire(s, NOW + 11 * MINUTE, 7) > 0 || vv_dht_providers_count(s) > 0)
        ;
    assert_int_equal(vv_dht_providers_keys(s), 0);
    assert_int_equal(vv_dht_providers_idents(s), 0);
    vv_dht_providers_free(s);
}

/* ---- memory --------------------------------------------------------------------------- */

/* Every allocation is charged its size plus 16 bytes, what glibc's malloc adds per chunk. */
#define MALLOC_OVERHEAD 16
static size_t live_bytes, peak_bytes;

static void *count_malloc(size_t n)
{
    size_t *p = malloc(n + sizeof(size_t) * 2);
    assert_non_null(p);
    p[0] = n;
    live_bytes += n + MALLOC_OVERHEAD;
    peak_bytes = VV_MAX(peak_bytes, live_bytes);
    return p + 2;
}

static void *count_calloc(size_t c, size_t n)
{
    void *p = count_malloc(c * n);
    memset(p, 0, c * n);
    return p;
}

static void count_free(void *q)
{
    if (q == NULL)
        return;
    size_t *p = (size_t *)q - 2;
    live_bytes -= p[0] + MALLOC_OVERHEAD;
    free(p);
}

static void *count_realloc(void *q, size_t n)
{
    if (q == NULL)
        return count_malloc(n);
    size_t *p = (size_t *)q - 2;
    size_t old = p[0];
    void *r = count_malloc(n);
    memcpy(r, q, VV_MIN(old, n));
    count_free(q);
    return r;
}

static void test_a_million_records_fit_in_64_mib(void **state)
{
    (void)state;
    static const struct vv_allocator counting = {count_malloc, count_calloc, count_realloc,
                                                 count_free};
    vv_set_allocator(&counting);
    live_bytes = peak_bytes = 0;
    struct vv_dht_providers *s = vv_dht_providers_new(NULL);
    /* 100,000 keys x 10 providers, out of 1,000 storage nodes in 1,000 /24s; content ids of
     * 59 characters, as a CIDv1 in base32. */
    for (unsigned k = 0; k < 100000; k++) {
        snprintf(cid_buf, sizeof(cid_buf), "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7%08u",
                 k);
        uint8_t key[32];
        struct vv_dht_content_record r = record(cid_buf, key, NOW + 24 * 60 * MINUTE);
        for (unsigned j = 0; j < 10; j++) {
            unsigned node = (k * 7 + j * 101) % 1000;
            struct vv_dht_contact p = provider(node, 20, ((node) >> 8) & 255, (node)&255, 1, 4747);
            assert_int_equal(vv_dht_providers_add(s, key, &r, &p, NOW), 0);
        }
    }
    assert_int_equal(vv_dht_providers_count(s), 1000000);
    assert_int_equal(vv_dht_providers_keys(s), 100000);
    assert_int_equal(vv_dht_providers_idents(s), 1000);
    size_t held = live_bytes;
    printf("provider store: %zu bytes held for 1,000,000 records (%.1f per record), peak %zu\n",
           held, (double)held / 1e6, peak_bytes);
    assert_true(held <= 64u << 20);
    assert_true(peak_bytes <= 64u << 20);
    /* Spot check that it is all there. */
    snprintf(cid_buf, sizeof(cid_buf), "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7%08u",
             4242u);
    uint8_t key[32];
    (void)record(cid_buf, key, 0);
    struct vv_dht_provider out[20];
    assert_int_equal(vv_dht_providers_get(s, key, NOW, NULL, out, 20), 10);
    vv_dht_providers_free(s);
    assert_int_equal(live_bytes, 0);
    vv_test_use_cmocka_allocator();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_must_belong_to_its_key),
        cmocka_unit_test(test_providers_are_listed_most_recent_first),
        cmocka_unit_test(test_key_keeps_the_most_recent_twenty_two_per_source),
        cmocka_unit_test(test_source_quota_and_fair_eviction_when_full),
        cmocka_unit_test(test_sliced_sweep_drops_expired_keys_and_providers),
        cmocka_unit_test(test_a_million_records_fit_in_64_mib),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
