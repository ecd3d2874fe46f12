/*
 * The peer protocol's frame codec: round trips at every header field's boundaries, and each
 * rejection rule from hand-written bytes, limits exactly at and one past their bound.
 */
#include "vv_test.h"

#include <string.h>

#include "vivim/wire.h"

/* ---- A byte builder for hand-written frames ------------------------------------------- */

struct bb {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct bb *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = vv_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put1(struct bb *b, uint8_t c)
{
    put(b, &c, 1);
}

static void putrep(struct bb *b, uint8_t c, size_t count)
{
    for (size_t i = 0; i < count; i++)
        put1(b, c);
}

/* A tag byte followed by v as a w-byte big-endian number. */
static void put_be(struct bb *b, uint8_t tag, uint64_t v, size_t w)
{
    put1(b, tag);
    for (size_t i = 0; i < w; i++)
        put1(b, (uint8_t)(v >> (8 * (w - 1 - i))));
}

/* The header [1, 0, 0x0f01, 0] as the shortest encoding writes it. */
static void hdr(struct bb *b)
{
    static const uint8_t h[] = {0x95, 0x01, 0x00, 0xcd, 0x0f, 0x01, 0x00};
    put(b, h, sizeof(h));
}

static int check_bytes(const uint8_t *p, size_t n)
{
    struct vv_wire_header h;
    return vv_wire_check(p, n, &h);
}

/* Checks and decodes; asserts both agree, and returns the result. */
static int both(struct bb *b)
{
    struct vv_wire_header h;
    int rc = vv_wire_check(b->p, b->n, &h);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(b->p, b->n, &f), rc);
    if (rc == 0) {
        assert_int_equal(f.h.body_off + f.h.body_len, b->n);
        assert_non_null(f.zone);
    } else {
        assert_null(f.zone);
    }
    vv_wire_frame_free(&f);
    return rc;
}

static void bb_free(struct bb *b)
{
    vv_free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- Round trips ---------------------------------------------------------------------- */

static void test_round_trip_every_header_boundary(void **state)
{
    (void)state;
    static const uint16_t types[] = {0, 1, 0x7f, 0x80, 0xff, 0x100, 0x0f00, 0xffff};
    static const uint64_t ids[] = {0,         1,          127,       128,        255,
                                   256,       65535,      65536,     UINT32_MAX, 1ull << 32,
                                   INT64_MAX, 1ull << 63, UINT64_MAX};
    static const uint16_t minors[] = {0, 1, 127, 128, 255, 256, 65535};
    for (size_t t = 0; t < VV_ARRAY_SIZE(types); t++)
        for (size_t i = 0; i < VV_ARRAY_SIZE(ids); i++)
            for (size_t m = 0; m < VV_ARRAY_SIZE(minors); m++) {
                msgpack_sbuffer sb;
                msgpack_packer pk;
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                if (m == 0)
                    vv_wire_begin(&pk, types[t], ids[i]);
                else
                    vv_wire_begin_minor(&pk, minors[m], types[t], ids[i]);
                size_t body_off = sb.size;
                msgpack_pack_array(&pk, 2);
                msgpack_pack_uint64(&pk, ids[i]);
                msgpack_pack_str_with_body(&pk, "hé", 3);

                struct vv_wire_frame f;
                assert_int_equal(vv_wire_decode((const uint8_t *)sb.data, sb.size, &f), 0);
                assert_int_equal(f.h.major, VV_WIRE_MAJOR);
                assert_int_equal(f.h.minor, minors[m]);
                assert_int_equal(f.h.type, types[t]);
                assert_true(f.h.request_id == ids[i]);
                assert_int_equal(f.h.body_off, body_off);
                assert_int_equal(f.h.body_len, sb.size - body_off);
                assert_int_equal(vv_wire_channel(f.h.type), types[t] >> 8);
                const msgpack_object *items;
                uint32_t n;
                uint64_t v;
                const char *s;
                size_t sl;
                assert_int_equal(vv_wire_get_array(&f.body, 2, 2, &items, &n), 0);
                assert_int_equal(n, 2);
                assert_int_equal(vv_wire_get_u64(&items[0], UINT64_MAX, &v), 0);
                assert_true(v == ids[i]);
                assert_int_equal(vv_wire_get_str(&items[1], 16, &s, &sl), 0);
                assert_int_equal(sl, 3);
                assert_memory_equal(s, "hé", 3);
                vv_wire_frame_free(&f);
                msgpack_sbuffer_destroy(&sb);
            }
}

static void test_header_is_written_in_shortest_form(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, 0x0102, 300);
    msgpack_pack_nil(&pk);
    static const uint8_t want[] = {0x95, 0x01, 0x00, 0xcd, 0x01, 0x02, 0xcd, 0x01, 0x2c, 0xc0};
    assert_int_equal(sb.size, sizeof(want));
    assert_memory_equal(sb.data, want, sizeof(want));
    msgpack_sbuffer_destroy(&sb);
}

static void test_channel_is_the_high_byte_of_the_type(void **state)
{
    (void)state;
    assert_int_equal(vv_wire_channel(0x0000), VV_CHANNEL_CONN);
    assert_int_equal(vv_wire_channel(0x01ff), VV_CHANNEL_DHT);
    assert_int_equal(vv_wire_channel(0x0300), VV_CHANNEL_CRDT);
    assert_int_equal(vv_wire_channel(0x0f42), VV_CHANNEL_TEST);
    assert_int_equal(vv_wire_channel(0xffff), 0xff);
}

static void test_non_minimal_and_signed_encodings_of_non_negative_ints_are_accepted(void **state)
{
    (void)state;
    struct bb b = {0};
    put_be(&b, 0xdc, 5, 2);                  /* array 16 holding 5 */
    put_be(&b, 0xcf, 1, 8);                  /* major as uint 64 */
    put_be(&b, 0xd0, 3, 1);                  /* minor as int 8 */
    put_be(&b, 0xd2, 0x0201, 4);             /* type as int 32 */
    put_be(&b, 0xd3, 0x7fffffffffffffff, 8); /* request id as int 64 */
    put_be(&b, 0xd1, 5, 2);                  /* body: 5 as int 16 */
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(b.p, b.n, &f), 0);
    assert_int_equal(f.h.major, 1);
    assert_int_equal(f.h.minor, 3);
    assert_int_equal(f.h.type, 0x0201);
    assert_true(f.h.request_id == INT64_MAX);
    assert_int_equal(f.h.body_off, 3 + 9 + 2 + 5 + 9);
    assert_int_equal(f.h.body_len, 3);
    uint64_t v;
    assert_int_equal(vv_wire_get_u64(&f.body, 5, &v), 0);
    assert_int_equal(v, 5);
    vv_wire_frame_free(&f);
    bb_free(&b);
}

static void test_body_may_be_any_single_value(void **state)
{
    (void)state;
    static const uint8_t bodies[][10] = {
        {1, 0xc0},                                                 /* nil */
        {1, 0xff},                                                 /* -1 */
        {5, 0xca, 0x3f, 0x80, 0x00, 0x00},                         /* 1.0f */
        {3, 0x81, 0xa1, 'k'},                                      /* truncated map: see below */
        {4, 0x81, 0xa1, 'k', 0xc3},                                /* {"k": true} */
        {3, 0xc4, 0x01, 0x00},                                     /* bin 8 */
        {9, 0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}, /* pi */
        {1, 0x90},                                                 /* [] */
        {1, 0x80},                                                 /* {} */
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(bodies); i++) {
        struct bb b = {0};
        hdr(&b);
        put(&b, bodies[i] + 1, bodies[i][0]);
        assert_int_equal(both(&b), i == 3 ? VV_EWIRE_TRUNCATED : 0);
        bb_free(&b);
    }
}

static void test_decoded_body_outlives_the_buffer(void **state)
{
    (void)state;
    struct bb b = {0};
    hdr(&b);
    put1(&b, 0x92);
    put(&b, "\xa5hello", 6);
    put(&b, "\xc4\x03\x01\x02\x03", 5);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(b.p, b.n, &f), 0);
    memset(b.p, 0xee, b.n);
    bb_free(&b);
    const msgpack_object *it;
    const char *s;
    const uint8_t *bin;
    size_t n;
    assert_int_equal(vv_wire_get_array(&f.body, 2, 2, &it, NULL), 0);
    assert_int_equal(vv_wire_get_str(&it[0], 5, &s, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "hello", 5);
    assert_int_equal(vv_wire_get_bin(&it[1], 3, 3, &bin, NULL), 0);
    assert_memory_equal(bin, "\x01\x02\x03", 3);
    vv_wire_frame_free(&f);
    vv_wire_frame_free(&f); /* twice is harmless */
    vv_wire_frame_free(NULL);
}

/* ---- Rejections ----------------------------------------------------------------------- */

static void test_empty_input_is_truncated(void **state)
{
    (void)state;
    uint8_t x = 0;
    assert_int_equal(check_bytes(&x, 0), VV_EWIRE_TRUNCATED);
    assert_int_equal(check_bytes(NULL, 0), VV_EWIRE_TRUNCATED);
    assert_int_equal(check_bytes(NULL, 1), VV_EINVAL);
}

static void test_every_proper_prefix_is_truncated(void **state)
{
    (void)state;
    struct bb b = {0};
    put_be(&b, 0xdc, 5, 2);
    put_be(&b, 0xcf, 1, 8);
    put_be(&b, 0xcd, 7, 2);
    put_be(&b, 0xce, 0x0101, 4);
    put_be(&b, 0xcf, 99, 8);
    put_be(&b, 0xdf, 1, 4); /* body: {str: [bin, float, float32, int, "x"]} */
    put_be(&b, 0xda, 3, 2);
    put(&b, "abc", 3);
    put_be(&b, 0xdd, 5, 4);
    put_be(&b, 0xc5, 2, 2);
    put(&b, "\x01\x02", 2);
    put_be(&b, 0xcb, 0, 8);
    put_be(&b, 0xca, 0, 4);
    put_be(&b, 0xd3, (uint64_t)-5, 8);
    put(&b, "\xa1x", 2);
    assert_int_equal(both(&b), 0);
    for (size_t cut = 0; cut < b.n; cut++)
        assert_int_equal(check_bytes(b.p, cut), VV_EWIRE_TRUNCATED);
    bb_free(&b);
}

static void test_frame_over_one_mib_is_too_large(void **state)
{
    (void)state;
    /* 7 bytes of header, 5 of bin 32 header, then the payload. */
    size_t payload = VV_WIRE_MAX_FRAME_BYTES - 12;
    struct bb b = {0};
    hdr(&b);
    put_be(&b, 0xc6, payload, 4);
    putrep(&b, 0xab, payload);
    assert_int_equal(b.n, VV_WIRE_MAX_FRAME_BYTES);
    assert_int_equal(both(&b), 0);
    bb_free(&b);

    hdr(&b);
    put_be(&b, 0xc6, payload + 1, 4);
    putrep(&b, 0xab, payload + 1);
    assert_int_equal(both(&b), VV_EWIRE_TOO_LARGE);
    bb_free(&b);
}

/* A frame whose containers nest `levels` deep, counting the frame's own array. */
static int nested(size_t levels, uint8_t innermost)
{
    struct bb b = {0};
    hdr(&b);
    putrep(&b, 0x91, levels - 2);
    put1(&b, innermost);
    int rc = both(&b);
    bb_free(&b);
    return rc;
}

static void test_nesting_16_is_accepted_17_is_too_large(void **state)
{
    (void)state;
    assert_int_equal(nested(VV_WIRE_MAX_DEPTH, 0x90), 0); /* innermost: [] */
    assert_int_equal(nested(VV_WIRE_MAX_DEPTH - 1, 0x91), VV_EWIRE_TRUNCATED);
    assert_int_equal(nested(VV_WIRE_MAX_DEPTH + 1, 0x90), VV_EWIRE_TOO_LARGE); /* even empty */
    assert_int_equal(nested(VV_WIRE_MAX_DEPTH + 1, 0x80), VV_EWIRE_TOO_LARGE); /* {} */
    assert_int_equal(nested(VV_WIRE_MAX_DEPTH + 20, 0x90), VV_EWIRE_TOO_LARGE);

    /* The deepest frame decodes into the objects it says. */
    struct bb b = {0};
    hdr(&b);
    putrep(&b, 0x91, VV_WIRE_MAX_DEPTH - 1);
    put1(&b, 0x07);
    struct vv_wire_frame f;
    assert_int_equal(vv_wire_decode(b.p, b.n, &f), 0);
    const msgpack_object *o = &f.body;
    for (int i = 0; i < VV_WIRE_MAX_DEPTH - 1; i++) {
        const msgpack_object *it;
        assert_int_equal(vv_wire_get_array(o, 1, 1, &it, NULL), 0);
        o = it;
    }
    uint64_t v;
    assert_int_equal(vv_wire_get_u64(o, 7, &v), 0);
    assert_int_equal(v, 7);
    vv_wire_frame_free(&f);
    bb_free(&b);
}

static void test_container_65536_is_accepted_65537_is_too_large(void **state)
{
    (void)state;
    for (int map = 0; map <= 1; map++)
        for (size_t extra = 0; extra <= 1; extra++) {
            size_t n = VV_WIRE_MAX_CONTAINER + extra;
            struct bb b = {0};
            hdr(&b);
            put_be(&b, map ? 0xdf : 0xdd, n, 4);
            putrep(&b, 0x01, map ? 2 * n : n);
            int rc = both(&b);
            assert_int_equal(rc, extra ? VV_EWIRE_TOO_LARGE : 0);
            if (!extra) {
                struct vv_wire_frame f;
                assert_int_equal(vv_wire_decode(b.p, b.n, &f), 0);
                assert_int_equal(f.body.type, map ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_ARRAY);
                assert_int_equal(map ? f.body.via.map.size : f.body.via.array.size, n);
                vv_wire_frame_free(&f);
            }
            bb_free(&b);
        }
}

/* A frame of exactly `objects` values: [hdr, [[65536 x 1] x 3, [m x 1]]]. */
static int with_objects(size_t objects)
{
    size_t fixed = 1 + 4 + 1 + 4 + 3 * (size_t)VV_WIRE_MAX_CONTAINER;
    struct bb b = {0};
    hdr(&b);
    put1(&b, 0x94);
    for (int i = 0; i < 3; i++) {
        put_be(&b, 0xdd, VV_WIRE_MAX_CONTAINER, 4);
        putrep(&b, 0x01, VV_WIRE_MAX_CONTAINER);
    }
    put_be(&b, 0xdd, objects - fixed, 4);
    putrep(&b, 0x01, objects - fixed);
    int rc = both(&b);
    bb_free(&b);
    return rc;
}

static void test_object_limit_is_exact(void **state)
{
    (void)state;
    assert_int_equal(with_objects(VV_WIRE_MAX_OBJECTS), 0);
    assert_int_equal(with_objects(VV_WIRE_MAX_OBJECTS + 1), VV_EWIRE_TOO_LARGE);
}

/* Counts vv_x* allocations, passing them on to cmocka's allocator. */
static size_t allocs;
static void *count_malloc(size_t n)
{
    allocs++;
    return _test_malloc(n, __FILE__, __LINE__);
}
static void *count_calloc(size_t c, size_t s)
{
    allocs++;
    return _test_calloc(c, s, __FILE__, __LINE__);
}
static void *count_realloc(void *p, size_t n)
{
    allocs++;
    return _test_realloc(p, n, __FILE__, __LINE__);
}
static void count_free(void *p)
{
    _test_free(p, __FILE__, __LINE__);
}

static void test_huge_declared_lengths_on_a_tiny_buffer_fail_without_allocating(void **state)
{
    (void)state;
    /* If any of these reached msgpack-c it would ask for up to 4 billion objects (about
     * 100 GB), which ASan refuses loudly; vv_wire_* itself must not allocate either. */
    static const uint8_t cases[][12] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff},                               /* frame: array 32 */
        {0xdf, 0xff, 0xff, 0xff, 0xff},                               /* frame: map 32 */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff}, /* body: array 32 */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0xdf, 0x80, 0x00, 0x00, 0x00}, /* body: map 32 */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0xdb, 0xff, 0xff, 0xff, 0xff}, /* body: str 32 */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0xc6, 0xff, 0xff, 0xff, 0xff}, /* body: bin 32 */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0xdc, 0xff, 0xff},             /* body: array 16 */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0x92, 0x01},                   /* 2 claimed, 1 there */
        {0x95, 0x01, 0x00, 0x00, 0x00, 0x81, 0x01},                   /* map: 2 values, 1 */
    };
    static const size_t lens[] = {5, 5, 10, 10, 10, 10, 8, 7, 7};
    static const struct vv_allocator counting = {count_malloc, count_calloc, count_realloc,
                                                 count_free};
    vv_set_allocator(&counting);
    allocs = 0;
    for (size_t i = 0; i < VV_ARRAY_SIZE(lens); i++) {
        struct vv_wire_frame f;
        assert_int_equal(check_bytes(cases[i], lens[i]), VV_EWIRE_TRUNCATED);
        assert_int_equal(vv_wire_decode(cases[i], lens[i], &f), VV_EWIRE_TRUNCATED);
        assert_null(f.zone);
        vv_wire_frame_free(&f);
    }
    vv_test_use_cmocka_allocator();
    assert_int_equal(allocs, 0);

    /* The count is compared with the bytes after it, not with the frame's size: 100,000
     * would fit in this frame, but only 10 bytes follow it. */
    struct bb big = {0};
    hdr(&big);
    put1(&big, 0x92);
    put_be(&big, 0xc6, 150000, 4);
    putrep(&big, 0x00, 150000);
    put_be(&big, 0xdd, 100000, 4);
    putrep(&big, 0x00, 10);
    assert_int_equal(both(&big), VV_EWIRE_TRUNCATED);
    bb_free(&big);

    /* A count that fits the bytes that remain but is over the container limit. */
    struct bb b = {0};
    hdr(&b);
    put_be(&b, 0xdd, 100000, 4);
    putrep(&b, 0xc0, 100000);
    assert_int_equal(both(&b), VV_EWIRE_TOO_LARGE);
    bb_free(&b);
}

static void test_ext_types_and_0xc1_are_malformed(void **state)
{
    (void)state;
    /* Each with a well-formed payload after it, so only the type can be blamed. */
    static const uint8_t cases[][8] = {
        {3, 0xc7, 0x01, 0x05},             /* ext 8, length 1, type 5 (payload follows) */
        {4, 0xc8, 0x00, 0x01, 0x05},       /* ext 16 */
        {6, 0xc9, 0x00, 0x00, 0x00, 0x01}, /* ext 32 */
        {2, 0xd4, 0x05},                   /* fixext 1 */
        {2, 0xd5, 0x05},                   /* fixext 2 */
        {2, 0xd6, 0xff},                   /* fixext 4 (-1: timestamp) */
        {2, 0xd7, 0xff},                   /* fixext 8 */
        {2, 0xd8, 0x05},                   /* fixext 16 */
        {1, 0xc1},                         /* never used */
    };
    static const size_t payload[] = {1, 1, 1, 1, 2, 4, 8, 16, 0};
    for (size_t i = 0; i < VV_ARRAY_SIZE(payload); i++)
        for (int nested_in_body = 0; nested_in_body <= 1; nested_in_body++) {
            struct bb b = {0};
            hdr(&b);
            if (nested_in_body)
                put(&b, "\x92\xc0\x81\xa1k", 5); /* [nil, {"k": <here>}] */
            put(&b, cases[i] + 1, cases[i][0]);
            putrep(&b, 0x00, payload[i]);
            assert_int_equal(both(&b), VV_EWIRE_MALFORMED);
            bb_free(&b);
        }
    /* 0xc1 as the very first byte and in a header field. */
    assert_int_equal(check_bytes((const uint8_t *)"\xc1", 1), VV_EWIRE_MALFORMED);
    assert_int_equal(check_bytes((const uint8_t *)"\x95\x01\xc1\x00\x00\xc0", 6),
                     VV_EWIRE_MALFORMED);
}

static void test_trailing_bytes_are_malformed(void **state)
{
    (void)state;
    struct bb b = {0};
    hdr(&b);
    put1(&b, 0xc0);
    assert_int_equal(both(&b), 0);
    put1(&b, 0x00);
    assert_int_equal(both(&b), VV_EWIRE_MALFORMED);
    b.n--;
    hdr(&b); /* two frames in one message */
    put1(&b, 0xc0);
    assert_int_equal(both(&b), VV_EWIRE_MALFORMED);
    bb_free(&b);
}

static void test_frame_must_be_an_array_of_five(void **state)
{
    (void)state;
    static const uint8_t cases[][8] = {
        {5, 0x94, 0x01, 0x00, 0x00, 0x00},             /* 4 elements */
        {7, 0x96, 0x01, 0x00, 0x00, 0x00, 0xc0, 0xc0}, /* 6 elements */
        {1, 0x90},                                     /* [] */
        {1, 0x01},                                     /* a bare int */
        {1, 0xc0},                                     /* nil */
        {2, 0xa1, 'x'},                                /* a string */
        {3, 0x81, 0x01, 0x01},                         /* {1: 1} */
        {6, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00},       /* map of 5: truncated first */
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++)
        assert_int_equal(check_bytes(cases[i] + 1, cases[i][0]),
                         i == 7 ? VV_EWIRE_TRUNCATED : VV_EWIRE_MALFORMED);
    /* The same map of five pairs, complete, is still not a frame. */
    assert_int_equal(
        check_bytes((const uint8_t *)"\x85\x01\x00\x02\x00\x03\x00\x04\x00\x05\xc0", 11),
        VV_EWIRE_MALFORMED);
}

static void test_header_fields_must_be_non_negative_integers(void **state)
{
    (void)state;
    /* Replacements for one header field, each a well-formed value of another type. */
    static const uint8_t bad[][6] = {
        {1, 0xff},                         /* -1 */
        {2, 0xd0, 0x80},                   /* int 8: -128 */
        {3, 0xd1, 0xff, 0xfe},             /* int 16: -2 */
        {5, 0xca, 0x3f, 0x80, 0x00, 0x00}, /* 1.0f */
        {2, 0xa1, '1'},                    /* "1" */
        {1, 0xc0},                         /* nil */
        {1, 0xc3},                         /* true */
        {2, 0x91, 0x01},                   /* [1] */
        {3, 0xc4, 0x01, 0x01},             /* bin */
        {1, 0x80},                         /* {} */
    };
    static const uint8_t good[4] = {0x01, 0x00, 0x00, 0x00};
    for (size_t field = 0; field < 4; field++)
        for (size_t i = 0; i < VV_ARRAY_SIZE(bad); i++) {
            struct bb b = {0};
            put1(&b, 0x95);
            for (size_t k = 0; k < 4; k++) {
                if (k == field)
                    put(&b, bad[i] + 1, bad[i][0]);
                else
                    put1(&b, good[k]);
            }
            put1(&b, 0xc0);
            assert_int_equal(both(&b), VV_EWIRE_MALFORMED);
            bb_free(&b);
        }
}

static void test_other_major_versions_are_refused(void **state)
{
    (void)state;
    static const uint64_t majors[] = {0, 2, 255, 0x100000001ull, UINT64_MAX};
    for (size_t i = 0; i < VV_ARRAY_SIZE(majors); i++) {
        struct bb b = {0};
        put1(&b, 0x95);
        put_be(&b, 0xcf, majors[i], 8);
        put(&b, "\x00\x00\x00\xc0", 4);
        assert_int_equal(both(&b), VV_EWIRE_VERSION);
        bb_free(&b);
    }
}

static void test_minor_and_type_above_65535_are_malformed(void **state)
{
    (void)state;
    for (int field = 1; field <= 2; field++)
        for (uint64_t v = 65535; v <= 65536; v++) {
            struct bb b = {0};
            put(&b, "\x95\x01", 2);
            put_be(&b, 0xce, field == 1 ? v : 0, 4);
            put_be(&b, 0xce, field == 2 ? v : 0, 4);
            put(&b, "\x00\xc0", 2);
            assert_int_equal(both(&b), v == 65535 ? 0 : VV_EWIRE_MALFORMED);
            bb_free(&b);
        }
}

/* ---- Verdicts ------------------------------------------------------------------------- */

/* vv_wire_peek reads the header alone: the same header as vv_wire_check on any frame that
 * passes, the same header errors, and a body it never looks at. */
static void test_peek_reads_the_header_without_the_body(void **state)
{
    (void)state;
    uint16_t type = 0;
    uint64_t id = 0;
    /* Example frame of docs/protocol.md: type 0x0102, request 7, body [true]. */
    static const uint8_t ex[] = {0x95, 0x01, 0x00, 0xcd, 0x01, 0x02, 0x07, 0x91, 0xc3};
    assert_int_equal(vv_wire_peek(ex, sizeof(ex), &type, &id), 0);
    assert_int_equal(type, 0x0102);
    assert_int_equal(id, 7);
    /* The widest request id. */
    static const uint8_t wide[] = {0x95, 0x01, 0x00, 0x01, 0xcf, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0};
    assert_int_equal(vv_wire_peek(wide, sizeof(wide), &type, &id), 0);
    assert_int_equal(id, UINT64_MAX);
    /* A body vv_wire_check refuses is not looked at. */
    static const uint8_t bad_body[] = {0x95, 0x01, 0x00, 0x01, 0x02, 0xd4, 0x00, 0x00};
    assert_int_equal(vv_wire_peek(bad_body, sizeof(bad_body), &type, &id), 0);
    assert_int_equal(check_bytes(bad_body, sizeof(bad_body)), VV_EWIRE_MALFORMED);
    /* Header errors: the same codes as the check. */
    static const uint8_t no_body[] = {0x95, 0x01, 0x00, 0x01, 0x02};
    static const uint8_t four[] = {0x94, 0x01, 0x00, 0x01, 0x02};
    static const uint8_t major2[] = {0x95, 0x02, 0x00, 0x01, 0x02, 0xc0};
    static const uint8_t neg_id[] = {0x95, 0x01, 0x00, 0x01, 0xff, 0xc0};
    static const uint8_t big_type[] = {0x95, 0x01, 0x00, 0xce, 0x00, 0x01, 0x00, 0x00, 0x01, 0xc0};
    static const uint8_t cut_id[] = {0x95, 0x01, 0x00, 0x01, 0xcf, 0x00};
    assert_int_equal(vv_wire_peek(no_body, sizeof(no_body), &type, &id), VV_EWIRE_TRUNCATED);
    assert_int_equal(vv_wire_peek(four, sizeof(four), &type, &id), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_peek(major2, sizeof(major2), &type, &id), VV_EWIRE_VERSION);
    assert_int_equal(vv_wire_peek(neg_id, sizeof(neg_id), &type, &id), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_peek(big_type, sizeof(big_type), &type, &id), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_peek(cut_id, sizeof(cut_id), &type, &id), VV_EWIRE_TRUNCATED);
    assert_int_equal(vv_wire_peek(ex, 0, &type, &id), VV_EWIRE_TRUNCATED);
    assert_int_equal(vv_wire_peek(NULL, 0, &type, &id), VV_EWIRE_TRUNCATED);
    /* Bytes that are no frame at all (a simulated module's raw message). */
    assert_int_equal(vv_wire_peek((const uint8_t *)"P123", 4, &type, &id), VV_EWIRE_MALFORMED);
}

static void test_verdict_skips_unknown_types_only_from_newer_peers(void **state)
{
    (void)state;
    struct vv_wire_header h = {.major = VV_WIRE_MAJOR, .minor = VV_WIRE_MINOR, .type = 0x0107};
    assert_int_equal(vv_wire_verdict(&h, true), 0);
    assert_int_equal(vv_wire_verdict(&h, false), VV_EWIRE_UNKNOWN_TYPE);
    h.minor = VV_WIRE_MINOR + 1;
    assert_int_equal(vv_wire_verdict(&h, true), 0);
    assert_int_equal(vv_wire_verdict(&h, false), VV_WIRE_SKIP);
    h.minor = 65535;
    assert_int_equal(vv_wire_verdict(&h, false), VV_WIRE_SKIP);
    assert_true(VV_WIRE_SKIP > 0);
}

/* ---- Accessors ------------------------------------------------------------------------ */

/* Decodes a frame whose body is the given bytes. */
static void body_frame(struct vv_wire_frame *f, const void *body, size_t n)
{
    struct bb b = {0};
    hdr(&b);
    put(&b, body, n);
    assert_int_equal(vv_wire_decode(b.p, b.n, f), 0);
    bb_free(&b);
}

static void test_accessors_reject_other_types(void **state)
{
    (void)state;
    /* [1, -1, 1.5, "s", bin "b", true, nil, [], {}] */
    static const uint8_t body[] = {0x99, 0x01, 0xff, 0xcb, 0x3f, 0xf8, 0,    0,    0,    0,   0,
                                   0,    0xa1, 's',  0xc4, 0x01, 'b',  0xc3, 0xc0, 0x90, 0x80};
    struct vv_wire_frame f;
    body_frame(&f, body, sizeof(body));
    const msgpack_object *it;
    uint32_t n;
    assert_int_equal(vv_wire_get_array(&f.body, 9, 9, &it, &n), 0);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t u = 77;
        const uint8_t *p = NULL;
        const char *s = NULL;
        const msgpack_object *items = NULL;
        bool flag = false;
        assert_int_equal(vv_wire_get_u64(&it[i], UINT64_MAX, &u), i == 0 ? 0 : VV_EWIRE_MALFORMED);
        assert_int_equal(vv_wire_get_str(&it[i], 100, &s, NULL), i == 3 ? 0 : VV_EWIRE_MALFORMED);
        assert_int_equal(vv_wire_get_bin(&it[i], 0, 100, &p, NULL),
                         i == 4 ? 0 : VV_EWIRE_MALFORMED);
        assert_int_equal(vv_wire_get_bool(&it[i], &flag), i == 5 ? 0 : VV_EWIRE_MALFORMED);
        assert_int_equal(vv_wire_get_array(&it[i], 0, 100, &items, NULL),
                         i == 7 ? 0 : VV_EWIRE_MALFORMED);
        if (i != 0)
            assert_int_equal(u, 77); /* untouched on failure */
    }
    uint64_t u;
    assert_int_equal(vv_wire_get_u64(NULL, 1, &u), VV_EWIRE_MALFORMED);
    bool flag;
    assert_int_equal(vv_wire_get_bool(&it[5], &flag), 0);
    assert_true(flag);
    vv_wire_frame_free(&f);
}

static void test_accessors_enforce_bounds(void **state)
{
    (void)state;
    /* [300, bin 4, "abcd", [1, 2, 3]] */
    static const uint8_t body[] = {0x94, 0xcd, 0x01, 0x2c, 0xc4, 0x04, 1,    2,    3,   4,
                                   0xa4, 'a',  'b',  'c',  'd',  0x93, 0x01, 0x02, 0x03};
    struct vv_wire_frame f;
    body_frame(&f, body, sizeof(body));
    const msgpack_object *it, *inner;
    assert_int_equal(vv_wire_get_array(&f.body, 4, 4, &it, NULL), 0);
    assert_int_equal(vv_wire_get_array(&f.body, 5, 9, &it, NULL), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_get_array(&f.body, 0, 3, &it, NULL), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_get_array(&f.body, 0, 4, &it, NULL), 0);
    uint64_t u;
    assert_int_equal(vv_wire_get_u64(&it[0], 299, &u), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_get_u64(&it[0], 300, &u), 0);
    assert_int_equal(u, 300);
    const uint8_t *p;
    size_t n;
    assert_int_equal(vv_wire_get_bin(&it[1], 4, 4, &p, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(vv_wire_get_bin(&it[1], 3, 100, &p, &n), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_get_bin(&it[1], 5, 100, &p, &n), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_get_bin(&it[1], 0, 3, &p, &n), VV_EWIRE_MALFORMED);
    const char *s;
    assert_int_equal(vv_wire_get_str(&it[2], 3, &s, &n), VV_EWIRE_MALFORMED);
    assert_int_equal(vv_wire_get_str(&it[2], 4, &s, &n), 0);
    uint32_t cnt;
    assert_int_equal(vv_wire_get_array(&it[3], 3, 3, &inner, &cnt), 0);
    assert_int_equal(cnt, 3);
    vv_wire_frame_free(&f);
}

static int str_verdict(const char *bytes, size_t n)
{
    struct bb b = {0};
    put_be(&b, 0xd9, n, 1);
    put(&b, bytes, n);
    struct vv_wire_frame f;
    body_frame(&f, b.p, b.n);
    bb_free(&b);
    const char *s;
    size_t len = 0;
    int rc = vv_wire_get_str(&f.body, 255, &s, &len);
    if (rc == 0)
        assert_int_equal(len, n);
    vv_wire_frame_free(&f);
    return rc;
}

static void test_str_rejects_control_characters_and_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n;
        bool ok;
    } cases[] = {
        {"", 0, true},
        {"plain text: 10.0.0.1:4001", 25, true},
        {"\xc3\xa9", 2, true},          /* é */
        {"\xe2\x82\xac", 3, true},      /* € */
        {"\xf0\x9f\x98\x80", 4, true},  /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4, true},  /* U+10FFFF */
        {"\xc2\xa0", 2, true},          /* U+00A0, first after C1 */
        {"\xef\xbf\xbd", 3, true},      /* U+FFFD */
        {"a\0b", 3, false},             /* NUL */
        {"a\tb", 3, false},             /* tab */
        {"a\nb", 3, false},             /* newline */
        {"\x1f", 1, false},             /* unit separator */
        {"\x7f", 1, false},             /* DEL */
        {"\xc2\x80", 2, false},         /* U+0080, C1 */
        {"\xc2\x9f", 2, false},         /* U+009F, C1 */
        {"\x80", 1, false},             /* lone continuation */
        {"\xbf", 1, false},             /* lone continuation */
        {"\xc0\xaf", 2, false},         /* overlong '/' */
        {"\xc1\xbf", 2, false},         /* overlong */
        {"\xe0\x80\xaf", 3, false},     /* overlong '/' */
        {"\xe0\x9f\xbf", 3, false},     /* overlong U+07FF */
        {"\xf0\x80\x80\xaf", 4, false}, /* overlong '/' */
        {"\xf0\x8f\xbf\xbf", 4, false}, /* overlong U+FFFF */
        {"\xed\xa0\x80", 3, false},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3, false},     /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4, false}, /* U+110000 */
        {"\xf5\x80\x80\x80", 4, false}, /* 0xf5 lead */
        {"\xff", 1, false},
        {"\xe2\x82", 2, false},     /* cut short */
        {"\xc3", 1, false},         /* cut short */
        {"\xe2\x28\xa1", 3, false}, /* bad continuation */
        {"\xf0\x9f\x98", 3, false}, /* cut short */
    };
    for (size_t i = 0; i < VV_ARRAY_SIZE(cases); i++)
        assert_int_equal(str_verdict(cases[i].s, cases[i].n), cases[i].ok ? 0 : VV_EWIRE_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_header_boundary),
        cmocka_unit_test(test_header_is_written_in_shortest_form),
        cmocka_unit_test(test_channel_is_the_high_byte_of_the_type),
        cmocka_unit_test(test_non_minimal_and_signed_encodings_of_non_negative_ints_are_accepted),
        cmocka_unit_test(test_body_may_be_any_single_value),
        cmocka_unit_test(test_decoded_body_outlives_the_buffer),
        cmocka_unit_test(test_empty_input_is_truncated),
        cmocka_unit_test(test_every_proper_prefix_is_truncated),
        cmocka_unit_test(test_frame_over_one_mib_is_too_large),
        cmocka_unit_test(test_nesting_16_is_accepted_17_is_too_large),
        cmocka_unit_test(test_container_65536_is_accepted_65537_is_too_large),
        cmocka_unit_test(test_object_limit_is_exact),
        cmocka_unit_test(test_huge_declared_lengths_on_a_tiny_buffer_fail_without_allocating),
        cmocka_unit_test(test_ext_types_and_0xc1_are_malformed),
        cmocka_unit_test(test_trailing_bytes_are_malformed),
        cmocka_unit_test(test_frame_must_be_an_array_of_five),
        cmocka_unit_test(test_header_fields_must_be_non_negative_integers),
        cmocka_unit_test(test_other_major_versions_are_refused),
        cmocka_unit_test(test_minor_and_type_above_65535_are_malformed),
        cmocka_unit_test(test_peek_reads_the_header_without_the_body),
        cmocka_unit_test(test_verdict_skips_unknown_types_only_from_newer_peers),
        cmocka_unit_test(test_accessors_reject_other_types),
        cmocka_unit_test(test_accessors_enforce_bounds),
        cmocka_unit_test(test_str_rejects_control_characters_and_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
