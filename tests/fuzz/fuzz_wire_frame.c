/*
 * Fuzz target: peer protocol frames from a hostile peer (the plaintext of a Noise transport
 * message). Every input must be refused with one of the wire errors, or decoded. A decoded
 * frame is re-encoded (vv_wire_begin_minor + msgpack-c): that must decode again to the same
 * header, be no longer than the input (encoders write shortest forms), and give the same
 * body bytes when re-encoded once more. Every body value also goes through the accessors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The accessors on every value of a body; a str they accept holds no C0 control or DEL. */
static void walk(const msgpack_object *o, int depth)
{
    /* depth: the nesting level o has if it is a container (the body's is 2). */
    if ((o->type == MSGPACK_OBJECT_ARRAY || o->type == MSGPACK_OBJECT_MAP) &&
        depth > VV_WIRE_MAX_DEPTH)
        abort(); /* the pre-scan let through something deeper than the limit */
    uint64_t u;
    const char *s;
    const uint8_t *p;
    size_t n;
    bool flag;
    const msgpack_object *items;
    uint32_t count;
    int ok = 0;
    ok += vv_wire_get_u64(o, UINT64_MAX, &u) == 0;
    ok += vv_wire_get_bin(o, 0, SIZE_MAX, &p, &n) == 0;
    ok += vv_wire_get_bool(o, &flag) == 0;
    if (vv_wire_get_str(o, SIZE_MAX, &s, &n) == 0) {
        ok++;
        for (size_t i = 0; i < n; i++)
            if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
                abort();
    }
    if (vv_wire_get_array(o, 0, UINT32_MAX, &items, &count) == 0) {
        ok++;
        if (count > VV_WIRE_MAX_CONTAINER)
            abort();
        for (uint32_t i = 0; i < count; i++)
            walk(&items[i], depth + 1);
    }
    if (ok > 1)
        abort(); /* one value, one type */
    if (o->type == MSGPACK_OBJECT_MAP) {
        if (o->via.map.size > VV_WIRE_MAX_CONTAINER)
            abort();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            walk(&o->via.map.ptr[i].key, depth + 1);
            walk(&o->via.map.ptr[i].val, depth + 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_wire_header h;
    struct vv_wire_frame f;
    int crc = vv_wire_check(data, size, &h);
    int rc = vv_wire_decode(data, size, &f);
    if (rc != crc)
        abort();
    if (rc != 0) {
        if (rc != VV_EWIRE_TRUNCATED && rc != VV_EWIRE_TOO_LARGE && rc != VV_EWIRE_MALFORMED &&
            rc != VV_EWIRE_VERSION)
            abort();
        if (f.zone)
            abort();
        return 0;
    }
    if (memcmp(&h, &f.h, sizeof(h)) != 0 || h.major != VV_WIRE_MAJOR || h.minor > UINT16_MAX ||
        h.body_off + h.body_len != size || h.body_len == 0)
        abort();
    /* The body's bytes alone are exactly one value. */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, (const char *)data + h.body_off, h.body_len, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        off != h.body_len)
        abort();
    msgpack_unpacked_destroy(&u);

    walk(&f.body, 2);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin_minor(&pk, (uint16_t)f.h.minor, f.h.type, f.h.request_id);
    msgpack_pack_object(&pk, f.body);
    if (sb.size > size)
        abort();

    struct vv_wire_frame g;
    if (vv_wire_decode((const uint8_t *)sb.data, sb.size, &g) != 0)
        abort();
    if (g.h.major != f.h.major || g.h.minor != f.h.minor || g.h.type != f.h.type ||
        g.h.request_id != f.h.request_id || g.h.body_len > f.h.body_len ||
        g.h.body_off + g.h.body_len != sb.size)
        abort();

    msgpack_sbuffer sb2;
    msgpack_packer pk2;
    msgpack_sbuffer_init(&sb2);
    msgpack_packer_init(&pk2, &sb2, msgpack_sbuffer_write);
    msgpack_pack_object(&pk2, g.body);
    if (sb2.size != g.h.body_len || memcmp(sb2.data, sb.data + g.h.body_off, sb2.size) != 0)
        abort();

    msgpack_sbuffer_destroy(&sb2);
    msgpack_sbuffer_destroy(&sb);
    vv_wire_frame_free(&g);
    vv_wire_frame_free(&f);
    return 0;
}
