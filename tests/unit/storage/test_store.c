/*
 * The local content store on real files: addresses match docs/storage.md's test vectors,
 * small and multi-chunk blobs round-trip, a flipped byte is never returned (quarantined and
 * counted), capacity is refused, start-up removes temporary and unreferenced files, deletes
 * free shared chunks only when unused, and the async API delivers on the loop with a bound.
 */
#include "vv_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vivim/log.h"
#include "vivim/store.h"

struct fixture {
    char dir[64];
};

static int setup(void **state)
{
    vv_test_use_cmocka_allocator();
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/vv-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    strcat(f->dir, "/store");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'", (int)(strlen(f->dir) - 6), f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static uint8_t *pattern(size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i % 251);
    return b;
}

static void hex_equal(const uint8_t addr[32], const char *hex)
{
    char got[65];
    vv_hex_encode(addr, 32, got);
    assert_string_equal(got, hex);
}

static struct vv_store *open_store(const char *dir, uint64_t cap)
{
    struct vv_store_config cfg = {.dir = dir, .capacity_bytes = cap};
    struct vv_store *s;
    assert_int_equal(vv_store_open(&cfg, &s), 0);
    return s;
}

static void expect_blob(struct vv_store *s, const uint8_t addr[32], const uint8_t *want, size_t n)
{
    uint8_t *got;
    size_t len;
    assert_int_equal(vv_store_get(s, addr, &got, &len), 0);
    assert_int_equal(len, n);
    assert_memory_equal(got, want, n);
    vv_free(got);
}

static char *chunk_file(const char *dir, const uint8_t hash[32])
{
    char hex[65];
    vv_hex_encode(hash, 32, hex);
    static char p[256];
    snprintf(p, sizeof(p), "%s/chunks/%.2s/%.2s/%s", dir, hex, hex + 2, hex);
    return p;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The vectors of docs/storage.md, computed there with Python's hashlib. */
static void test_addresses_match_the_spec_vectors(void **state)
{
    (void)state;
    uint8_t a[32];
    assert_int_equal(vv_store_address((const uint8_t *)"", 0, a), 0);
    hex_equal(a, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(vv_store_address((const uint8_t *)"vivim", 5, a), 0);
    hex_equal(a, "c7bfdcd0cfb3822792332cde37bfcd62648f9ed3caaef853cf15f6c02113c787");
    uint8_t *b = pattern(600000);
    assert_int_equal(vv_store_address(b, 262144, a), 0);
    hex_equal(a, "31a1f9dea0169551092d05e8bf4a446228c8c3eb4c9b713c66adcb7fd53c89be");
    assert_int_equal(vv_store_address(b, 600000, a), 0);
    hex_equal(a, "a5ebfdd6b6e65194c3853e297399dd2174f97741391049df82c7153fbdb20859");
    free(b);
}

static void test_manifest_decoder_accepts_only_the_canonical_encoding(void **state)
{
    (void)state;
    static const char hex[] = "56564d0100000000000927c00004000000000003"
                              "31a1f9dea0169551092d05e8bf4a446228c8c3eb4c9b713c66adcb7fd53c89be"
                              "e31bdc63577fe76f6441014aaaa2226d9ffce11b44d0d510cade132b79fd7d76"
                              "af826a5d9b025eb5dfe0f2d655ab88b95ebbe74a4ea70e11ee81b63b5fc1f6c1";
    uint8_t m[116], x[117];
    assert_int_equal(vv_hex_decode(hex, m, sizeof(m)), 0);
    struct vv_store_manifest d;
    assert_int_equal(vv_store_manifest_decode(m, sizeof(m), &d), 0);
    assert_int_equal(d.size, 600000);
    assert_int_equal(d.chunks, 3);
    uint8_t a[32];
    crypto_hash_sha256(a, m, sizeof(m));
    hex_equal(a, "a5ebfdd6b6e65194c3853e297399dd2174f97741391049df82c7153fbdb20859");
    /* Trailing byte, truncation, other version, other chunk size, wrong count, one-chunk size. */
    memcpy(x, m, sizeof(m));
    x[116] = 0;
    assert_int_equal(vv_store_manifest_decode(x, 117, &d), VV_ESTORE_MANIFEST);
    assert_int_equal(vv_store_manifest_decode(m, 115, &d), VV_ESTORE_MANIFEST);
    const int offs[] = {3, 13, 19, 4};
    for (size_t i = 0; i < VV_ARRAY_SIZE(offs); i++) {
        memcpy(x, m, sizeof(m));
        x[offs[i]] ^= 1;
        assert_int_equal(vv_store_manifest_decode(x, sizeof(m), &d), VV_ESTORE_MANIFEST);
    }
    memcpy(x, m, sizeof(m));
    x[9] = 0x04; /* size 0x040000 = one chunk exactly */
    x[10] = 0;
    x[11] = 0;
    x[19] = 1;
    assert_int_equal(vv_store_manifest_decode(x, 52, &d), VV_ESTORE_MANIFEST);
    /* A one-chunk blob whose bytes are a manifest is refused: addresses stay unambiguous. */
    assert_int_equal(vv_store_address(m, sizeof(m), a), VV_ESTORE_AMBIGUOUS);
}

static void test_small_and_multi_chunk_blobs_round_trip(void **state)
{
    struct fixture *f = *state;
    struct vv_store *s = open_store(f->dir, 0);
    const size_t sizes[] = {0, 1, 5, 65536, 65537, 262144, 262145, 600000, 3 * 262144};
    uint8_t addrs[VV_ARRAY_SIZE(sizes)][32];
    for (size_t i = 0; i < VV_ARRAY_SIZE(sizes); i++) {
        uint8_t *b = pattern(sizes[i]);
        uint8_t want[32];
        assert_int_equal(vv_store_address(b, sizes[i], want), 0);
        assert_int_equal(vv_store_put(s, b, sizes[i], NULL, addrs[i]), 0);
        assert_memory_equal(addrs[i], want, 32);
        expect_blob(s, addrs[i], b, sizes[i]);
        free(b);
    }
    vv_store_close(s);
    /* After a reopen, everything is still there; stats and access counts persist. */
    s = open_store(f->dir, 0);
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    assert_int_equal(c.objects, VV_ARRAY_SIZE(sizes));
    for (size_t i = 0; i < VV_ARRAY_SIZE(sizes); i++) {
        uint8_t *b = pattern(sizes[i]);
        expect_blob(s, addrs[i], b, sizes[i]);
        free(b);
        struct vv_store_stat st;
        assert_int_equal(vv_store_stat(s, addrs[i], &st), 0);
        assert_int_equal(st.size, sizes[i]);
        assert_int_equal(st.manifest, sizes[i] > 262144);
        assert_int_equal(st.access_count, 2);
    }
    /* Storing again is idempotent and uses no more room. */
    uint8_t *b = pattern(600000), again[32];
    vv_store_counters(s, &c);
    uint64_t used = c.used_bytes;
    assert_int_equal(vv_store_put(s, b, 600000, NULL, again), 0);
    vv_store_counters(s, &c);
    assert_int_equal(c.used_bytes, used);
    /* The manifest and its chunks are served raw, as a fetcher gets them. */
    uint8_t *raw;
    size_t rlen;
    assert_int_equal(vv_store_get_raw(s, again, &raw, &rlen), 0);
    struct vv_store_manifest m;
    assert_int_equal(vv_store_manifest_decode(raw, rlen, &m), 0);
    uint8_t *chunk;
    size_t clen;
    assert_int_equal(vv_store_get_raw(s, m.chunk_hashes + 64, &chunk, &clen), 0);
    assert_int_equal(clen, 600000 - 2 * 262144);
    assert_memory_equal(chunk, b + 2 * 262144, clen);
    vv_free(chunk);
    vv_free(raw);
    free(b);
    uint64_t n, bad;
    assert_int_equal(vv_store_check(s, &n, &bad), 0);
    assert_int_equal(n, VV_ARRAY_SIZE(sizes));
    assert_int_equal(bad, 0);
    uint8_t zero[32] = {0};
    uint8_t *none;
    size_t nlen;
    assert_int_equal(vv_store_get(s, zero, &none, &nlen), VV_ENOTFOUND);
    assert_null(none);
    vv_store_close(s);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t c;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void test_flipped_byte_is_never_returned_and_is_quarantined(void **state)
{
    struct fixture *f = *state;
    struct vv_store *s = open_store(f->dir, 0);
    uint8_t *b = pattern(600000), addr[32], one[32];
    assert_int_equal(vv_store_put(s, b, 600000, NULL, addr), 0);
    assert_int_equal(vv_store_put(s, b + 1000, 100000, NULL, one), 0); /* a 100 KB file chunk */
    uint8_t *raw;
    size_t rlen;
    assert_int_equal(vv_store_get_raw(s, addr, &raw, &rlen), 0);
    struct vv_store_manifest m;
    assert_int_equal(vv_store_manifest_decode(raw, rlen, &m), 0);
    const uint8_t *h1 = m.chunk_hashes + 32;
    char path[256];
    snprintf(path, sizeof(path), "%s", chunk_file(f->dir, h1));
    flip_byte(path, 12345);
    flip_byte(chunk_file(f->dir, one), 99999);

    uint8_t *got = (uint8_t *)1;
    size_t len = 1;
    assert_int_equal(vv_store_get(s, addr, &got, &len), VV_ESTORE_CORRUPT);
    assert_null(got);
    assert_int_equal(len, 0);
    assert_int_equal(vv_store_get(s, one, &got, &len), VV_ESTORE_CORRUPT);
    assert_null(got);
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    assert_int_equal(c.verify_failures, 2);
    assert_int_equal(c.quarantined, 2);
    assert_int_equal(access(path, F_OK), -1);
    char q[256];
    snprintf(q, sizeof(q), "%s/quarantine", f->dir);
    assert_int_equal(count_files(q), 2);
    /* Later reads know the chunk is missing; the other blobs' chunks still serve. */
    assert_int_equal(vv_store_get(s, addr, &got, &len), VV_ESTORE_MISSING);
    assert_int_equal(vv_store_get_raw(s, h1, &got, &len), VV_ENOTFOUND);
    uint8_t *c0;
    assert_int_equal(vv_store_get_raw(s, m.chunk_hashes, &c0, &len), 0);
    vv_free(c0);
    uint64_t n, bad;
    assert_int_equal(vv_store_check(s, &n, &bad), 0);
    assert_int_equal(bad, 2);
    /* Storing the blob again repairs it. */
    uint8_t again[32];
    assert_int_equal(vv_store_put(s, b, 600000, NULL, again), 0);
    expect_blob(s, addr, b, 600000);
    assert_int_equal(vv_store_put(s, b + 1000, 100000, NULL, again), 0);
    expect_blob(s, one, b + 1000, 100000);
    /* A truncated file fails as well. */
    assert_int_equal(truncate(chunk_file(f->dir, one), 50000), 0);
    assert_int_equal(vv_store_get(s, one, &got, &len), VV_ESTORE_CORRUPT);
    vv_free(raw);
    free(b);
    vv_store_close(s);
}

static void test_capacity_is_refused_before_anything_is_written(void **state)
{
    struct fixture *f = *state;
    struct vv_store *s = open_store(f->dir, 1000000);
    uint8_t *b = pattern(1000000), a[32];
    /* Pinned content is never evicted: a store it leaves no room for is refused. */
    const struct vv_store_put_opts pin = {.pinned = true};
    assert_int_equal(vv_store_put(s, b, 600000, &pin, a), 0);
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    assert_int_equal(c.used_bytes, 600000 + 116);
    /* 600,001 bytes share no chunk with the first blob's last: over 1,000,000. */
    assert_int_equal(vv_store_put(s, b + 1, 600000, NULL, a), VV_ESTORE_FULL);
    assert_int_equal(vv_store_put(s, b, 1000000, &pin, a), VV_ESTORE_FULL);
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s/tmp", f->dir);
    assert_int_equal(count_files(tmp), 0);
    vv_store_counters(s, &c);
    assert_int_equal(c.objects, 1);
    assert_int_equal(c.used_bytes, 600000 + 116);
    /* A blob sharing the stored chunks needs only its new ones: the first two chunks. */
    assert_int_equal(vv_store_put(s, b, 524288 + 1000, &pin, a), 0);
    /* Deleting makes room again; the shared chunks stay while the other blob uses them. */
    uint8_t first[32];
    assert_int_equal(vv_store_address(b, 600000, first), 0);
    assert_int_equal(vv_store_delete(s, first), 0);
    expect_blob(s, a, b, 524288 + 1000);
    assert_int_equal(vv_store_delete(s, a), 0);
    assert_int_equal(vv_store_delete(s, a), VV_ENOTFOUND);
    vv_store_counters(s, &c);
    assert_int_equal(c.used_bytes, 0);
    assert_int_equal(c.objects, 0);
    assert_int_equal(vv_store_put(s, b, 900000, NULL, a), 0);
    free(b);
    vv_store_close(s);
}

/* A distinct blob of n bytes per seed (a one-chunk blob unless n > 256 KiB). */
static uint8_t *blob_of(uint32_t seed, size_t n)
{
    uint8_t *b = malloc(n);
    uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1); /* xorshift64: no two chunks alike */
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)x;
    }
    return b;
}

static bool stored(struct vv_store *s, const uint8_t addr[32])
{
    struct vv_store_stat st;
    return vv_store_stat(s, addr, &st) == 0;
}

static void test_cache_content_is_evicted_in_s3fifo_order_to_make_room(void **state)
{
    struct fixture *f = *state;
    /* 1 MB on disk; ten 100 KB cache blobs fill it. */
    struct vv_store *s = open_store(f->dir, 1000000);
    uint8_t addrs[24][32];
    for (uint32_t i = 0; i < 9; i++) {
        uint8_t *b = blob_of(i, 100000);
        assert_int_equal(vv_store_put(s, b, 100000, NULL, addrs[i]), 0);
        free(b);
    }
    /* Blob 0 is read again: S3-FIFO keeps it over the one-hit wonders. */
    uint8_t *got;
    size_t len;
    assert_int_equal(vv_store_get(s, addrs[0], &got, &len), 0);
    vv_free(got);
    /* A pinned 300 KB blob and an owned one: outside the queues. */
    const uint8_t owner[32] = {1};
    const struct vv_store_put_opts pin = {.pinned = true}, own = {.owner = owner};
    uint8_t *b = blob_of(100, 300000);
    assert_int_equal(vv_store_put(s, b, 300000, &pin, addrs[20]), 0);
    free(b);
    b = blob_of(101, 100000);
    assert_int_equal(vv_store_put(s, b, 100000, &own, addrs[21]), 0);
    free(b);
    for (uint32_t i = 9; i < 20; i++) {
        b = blob_of(i, 100000);
        assert_int_equal(vv_store_put(s, b, 100000, NULL, addrs[i]), 0);
        free(b);
        struct vv_store_counters c;
        vv_store_counters(s, &c);
        assert_true(c.used_bytes <= 1000000);
    }
    assert_true(stored(s, addrs[0]));
    assert_true(stored(s, addrs[20]));
    assert_true(stored(s, addrs[21]));
    assert_true(stored(s, addrs[19]));
    assert_false(stored(s, addrs[1])); /* the oldest one-hit wonder went first */
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    assert_true(c.evictions >= 9);
    assert_int_equal(c.tier_objects[VV_STORE_TIER_HOT], c.objects);
    assert_int_equal(c.tier_bytes[VV_STORE_TIER_HOT], 300000 + 100000 * (c.objects - 1));
    /* Every eviction is queued for the owner to withdraw, in order. */
    uint8_t drained[64 * 32];
    size_t n = vv_store_drain_removed(s, drained, 64);
    assert_int_equal(n, c.evictions);
    assert_memory_equal(drained, addrs[1], 32);
    assert_int_equal(vv_store_drain_removed(s, drained, 64), 0);
    /* Unpinning puts the 300 KB blob back in the queue; a 700 KB blob then evicts it. */
    assert_int_equal(vv_store_set_pinned(s, addrs[20], false), 0);
    assert_int_equal(vv_store_set_pinned(s, addrs[22], false), VV_ENOTFOUND);
    b = blob_of(102, 700000);
    assert_int_equal(vv_store_put(s, b, 700000, NULL, addrs[22]), 0);
    free(b);
    assert_false(stored(s, addrs[20]));
    assert_true(stored(s, addrs[21])); /* owned: never */
    /* Nothing evictable is big enough for 950 KB beside the owned 100 KB. */
    b = blob_of(103, 950000);
    vv_store_counters(s, &c);
    assert_int_equal(vv_store_put(s, b, 950000, NULL, addrs[23]), VV_ESTORE_FULL);
    free(b);
    assert_true(stored(s, addrs[21]));
    vv_store_close(s);
}

static void test_tier_bounds_expiry_and_a_lowered_capacity(void **state)
{
    struct fixture *f = *state;
    struct vv_store_config cfg = {.dir = f->dir,
                                  .tier_capacity = {0, 250000, 200000},
                                  .hot_retention_ms = 3600 * 1000};
    struct vv_store *s;
    assert_int_equal(vv_store_open(&cfg, &s), 0);
    uint8_t a[8][32];
    const struct vv_store_put_opts warm = {.tier = VV_STORE_TIER_WARM},
                                   cold = {.tier = VV_STORE_TIER_COLD},
                                   expiring = {.expiry_ms = 1000};
    for (uint32_t i = 0; i < 3; i++) {
        uint8_t *b = blob_of(i, 100000);
        assert_int_equal(vv_store_put(s, b, 100000, &warm, a[i]), 0);
        free(b);
    }
    /* The warm tier holds 250 KB: the third evicted the first. */
    assert_false(stored(s, a[0]));
    assert_true(stored(s, a[2]));
    /* The cold tier is never evicted: over its bound a store is refused. */
    uint8_t *b = blob_of(10, 150000);
    assert_int_equal(vv_store_put(s, b, 150000, &cold, a[3]), 0);
    free(b);
    b = blob_of(11, 100000);
    assert_int_equal(vv_store_put(s, b, 100000, &cold, a[4]), VV_ESTORE_FULL);
    free(b);
    /* Expiry removes what expired; hot content unread for the retention goes too. */
    b = blob_of(12, 1000);
    assert_int_equal(vv_store_put(s, b, 1000, &expiring, a[5]), 0);
    free(b);
    b = blob_of(13, 1000);
    assert_int_equal(vv_store_put(s, b, 1000, NULL, a[6]), 0);
    free(b);
    size_t removed;
    assert_int_equal(vv_store_expire(s, 2000, 100, &removed), 0);
    assert_int_equal(removed, 1); /* a[5]: expired; a[6] was just stored */
    assert_false(stored(s, a[5]));
    int64_t later = (int64_t)time(NULL) * 1000 + 2 * 3600 * 1000;
    assert_int_equal(vv_store_expire(s, later, 100, &removed), 0);
    assert_int_equal(removed, 1); /* a[6], unread for two hours; warm and cold stay */
    assert_false(stored(s, a[6]));
    assert_true(stored(s, a[3]));
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    assert_int_equal(c.expired, 2);
    assert_int_equal(c.tier_objects[VV_STORE_TIER_WARM], 2);
    assert_int_equal(c.tier_bytes[VV_STORE_TIER_COLD], 150000);
    vv_store_close(s);
    /* Reopened with a warm bound of 150 KB: one warm blob goes at start. */
    cfg.tier_capacity[VV_STORE_TIER_WARM] = 150000;
    assert_int_equal(vv_store_open(&cfg, &s), 0);
    vv_store_counters(s, &c);
    assert_int_equal(c.tier_objects[VV_STORE_TIER_WARM], 1);
    assert_int_equal(c.evictions, 1);
    assert_true(stored(s, a[3]));
    vv_store_close(s);
}

static void write_file(const char *path, size_t n)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (size_t i = 0; i < n; i++)
        fputc('x', fp);
    fclose(fp);
}

static void test_startup_removes_temp_files_and_orphan_chunks(void **state)
{
    struct fixture *f = *state;
    struct vv_store *s = open_store(f->dir, 0);
    uint8_t *b = pattern(300000), a[32];
    assert_int_equal(vv_store_put(s, b, 300000, NULL, a), 0);
    vv_store_close(s);
    char p[256];
    snprintf(p, sizeof(p), "%s/tmp/deadbeef.7", f->dir);
    write_file(p, 100);
    snprintf(p, sizeof(p), "%s/chunks/ab", f->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/chunks/ab/cd", f->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/chunks/ab/cd/abcd%060d", f->dir, 0);
    write_file(p, 100);
    snprintf(p, sizeof(p), "%s/chunks/ab/cd/junk", f->dir);
    write_file(p, 10);
    s = open_store(f->dir, 0);
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    assert_int_equal(c.startup_tmp_removed, 1);
    assert_int_equal(c.startup_orphans_removed, 2);
    snprintf(p, sizeof(p), "%s/chunks/ab/cd", f->dir);
    assert_int_equal(count_files(p), 0);
    snprintf(p, sizeof(p), "%s/tmp", f->dir);
    assert_int_equal(count_files(p), 0);
    expect_blob(s, a, b, 300000); /* referenced chunks stay */
    free(b);
    vv_store_close(s);
}

static void test_put_options_are_recorded(void **state)
{
    struct fixture *f = *state;
    struct vv_store *s = open_store(f->dir, 0);
    uint8_t owner[32], a[32];
    memset(owner, 7, sizeof(owner));
    struct vv_store_put_opts o = {
        .tier = VV_STORE_TIER_COLD, .pinned = true, .owner = owner, .expiry_ms = 1234};
    assert_int_equal(vv_store_put(s, (const uint8_t *)"abc", 3, &o, a), 0);
    struct vv_store_stat st;
    assert_int_equal(vv_store_stat(s, a, &st), 0);
    assert_int_equal(st.tier, VV_STORE_TIER_COLD);
    assert_true(st.pinned);
    assert_true(st.has_owner);
    assert_memory_equal(st.owner, owner, 32);
    assert_int_equal(st.expiry_ms, 1234);
    assert_true(st.created_ms > 0);
    assert_int_equal(st.access_count, 0);
    vv_store_close(s);
}

struct async_result {
    int calls, status;
    uint8_t addr[32];
    size_t len;
    bool match;
};

static uint8_t *async_blob;

static void on_put(int status, const uint8_t addr[32], void *arg)
{
    struct async_result *r = arg;
    r->calls++;
    r->status = status;
    memcpy(r->addr, addr, 32);
}

static void on_get(int status, const uint8_t *data, size_t len, void *arg)
{
    struct async_result *r = arg;
    r->calls++;
    r->status = status;
    r->len = len;
    r->match = data != NULL && async_blob != NULL && memcmp(data, async_blob, len) == 0;
}

static uint8_t *g_blob_for_free;

static int count_objects(struct vv_store *s, void *arg)
{
    (void)arg;
    struct vv_store_counters c;
    vv_store_counters(s, &c);
    return (int)c.objects;
}

static void on_called(int status, void *arg)
{
    struct async_result *r = arg;
    r->calls++;
    r->status = status;
}

static void test_async_api_delivers_on_the_loop_within_its_bound(void **state)
{
    struct fixture *f = *state;
    /* Pool threads allocate: cmocka's allocator is not thread-safe. */
    vv_set_allocator(NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct vv_store_config cfg = {.dir = f->dir, .max_pending = 2};
    struct vv_store *s;
    assert_int_equal(vv_store_open(&cfg, &s), 0);
    async_blob = pattern(700000);
    g_blob_for_free = async_blob;
    struct async_result r[3] = {{0}};
    assert_int_equal(vv_store_put_async(s, &loop, async_blob, 700000, NULL, on_put, &r[0]), 0);
    assert_int_equal(vv_store_put_async(s, &loop, async_blob, 100, NULL, on_put, &r[1]), 0);
    assert_int_equal(vv_store_pending(s), 2);
    assert_int_equal(vv_store_put_async(s, &loop, async_blob, 5, NULL, on_put, &r[2]), VV_EBUSY);
    assert_int_equal(r[0].calls + r[1].calls, 0); /* never called back synchronously */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(vv_store_pending(s), 0);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[2].calls, 0);
    struct async_result g = {0};
    assert_int_equal(vv_store_get_async(s, &loop, r[0].addr, on_get, &g), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.len, 700000);
    assert_true(g.match);

    /* The raw form of a multi-chunk address is its manifest (3 chunks: 20 + 96 bytes). */
    struct async_result raw = {0};
    async_blob = NULL;
    assert_int_equal(vv_store_get_raw_async(s, &loop, r[0].addr, on_get, &raw), 0);
    /* Any other work: runs on the pool, its status delivered on the loop. */
    struct async_result c = {0};
    assert_int_equal(vv_store_call_async(s, &loop, count_objects, on_called, &c), 0);
    assert_int_equal(vv_store_call_async(s, &loop, count_objects, NULL, &c), VV_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(raw.calls, 1);
    assert_int_equal(raw.status, 0);
    assert_int_equal(raw.len, 20 + 3 * 32);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, 2); /* the objects r[0] and r[1] stored */
    free(g_blob_for_free);
    vv_store_close(s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses_match_the_spec_vectors),
        cmocka_unit_test(test_manifest_decoder_accepts_only_the_canonical_encoding),
        cmocka_unit_test_setup_teardown(test_small_and_multi_chunk_blobs_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_is_never_returned_and_is_quarantined,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_is_refused_before_anything_is_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_startup_removes_temp_files_and_orphan_chunks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cache_content_is_evicted_in_s3fifo_order_to_make_room,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tier_bounds_expiry_and_a_lowered_capacity, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_put_options_are_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_api_delivers_on_the_loop_within_its_bound, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
