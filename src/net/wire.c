/*
 * The peer protocol's frame codec (see wire.h). Every frame from a peer is first walked byte
 * by byte by prescan(), which allocates nothing and reads nothing past len; only a frame that
 * passed is given to msgpack-c. The header is then read from the raw bytes again, so that its
 * rules (exact types, ranges) do not depend on how msgpack-c happens to classify values.
 */
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/wire.h"

/* ---- Pre-scan -------------------------------------------------------------------------- */

struct scan {
    size_t objects;    /* values in the frame (a map entry counts two) */
    size_t containers; /* arrays and maps in the frame */
};

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * Walks the one MessagePack value that must fill buf exactly. Iterative: left[d] is the
 * number of values still to read in the container open at nesting level d (left[0] = the
 * frame itself, one value). Every declared length and count is compared with the bytes that
 * remain before anything else, so a lying header fails at once whatever it claims; element
 * counts reserve their values in `committed` when the container opens, so the object limit
 * also fails before the walk reaches the values.
 */
static int prescan(const uint8_t *b, size_t len, struct scan *sc)
{
    enum { SCALAR, ARRAY, MAP };
    uint32_t left[VV_WIRE_MAX_DEPTH + 1];
    size_t depth = 0, pos = 0, committed = 1;
    left[0] = 1;
    sc->objects = sc->containers = 0;
    if (len > VV_WIRE_MAX_FRAME_BYTES)
        return VV_EWIRE_TOO_LARGE;
    for (;;) {
        while (left[depth] == 0) {
            if (depth == 0)
                goto done;
            depth--;
        }
        left[depth]--;
        if (pos >= len)
            return VV_EWIRE_TRUNCATED;
        uint8_t t = b[pos++];
        int kind = SCALAR;
        size_t lenfield = 0; /* bytes of a big-endian length or count after t */
        uint64_t n = 0;      /* payload bytes (SCALAR) or element count (ARRAY, MAP) */
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
            /* positive/negative fixint, nil, false, true */
        } else if (t <= 0x8f) {
            kind = MAP, n = t & 0x0f;
        } else if (t <= 0x9f) {
            kind = ARRAY, n = t & 0x0f;
        } else if (t <= 0xbf) {
            n = t & 0x1f; /* fixstr */
        } else {
            switch (t) {
            case 0xc4: /* bin 8/16/32 */
            case 0xd9: /* str 8/16/32 */
                lenfield = 1;
                break;
            case 0xc5:
            case 0xda:
                lenfield = 2;
                break;
            case 0xc6:
            case 0xdb:
                lenfield = 4;
                break;
            case 0xca: /* float 32/64 */
                n = 4;
                break;
            case 0xcb:
                n = 8;
                break;
            case 0xcc: /* uint 8..64 */
            case 0xd0: /* int 8..64 */
                n = 1;
                break;
            case 0xcd:
            case 0xd1:
                n = 2;
                break;
            case 0xce:
            case 0xd2:
                n = 4;
                break;
            case 0xcf:
            case 0xd3:
                n = 8;
                break;
            case 0xdc: /* array 16/32, map 16/32 */
                kind = ARRAY, lenfield = 2;
                break;
            case 0xdd:
                kind = ARRAY, lenfield = 4;
                break;
            case 0xde:
                kind = MAP, lenfield = 2;
                break;
            case 0xdf:
                kind = MAP, lenfield = 4;
                break;
            default:
                /* 0xc1 (never used), ext 8/16/32 (0xc7-0xc9), fixext (0xd4-0xd8) */
                return VV_EWIRE_MALFORMED;
            }
        }
        if (lenfield) {
            if (lenfield > len - pos)
                return VV_EWIRE_TRUNCATED;
            n = be(b + pos, lenfield);
            pos += lenfield;
        }
        if (kind == SCALAR) {
            if (n > len - pos)
                return VV_EWIRE_TRUNCATED;
            pos += (size_t)n;
            continue;
        }
        /* Every value takes at least one byte. n <= 2^32-1, so 2n cannot overflow. */
        uint64_t values = kind == MAP ? 2 * n : n;
        if (values > len - pos)
            return VV_EWIRE_TRUNCATED;
        if (n > VV_WIRE_MAX_CONTAINER || depth + 1 > VV_WIRE_MAX_DEPTH)
            return VV_EWIRE_TOO_LARGE;
        committed += (size_t)values;
        if (committed > VV_WIRE_MAX_OBJECTS)
            return VV_EWIRE_TOO_LARGE;
        left[++depth] = (uint32_t)values;
        sc->containers++;
    }
done:
    if (pos != len)
        return VV_EWIRE_MALFORMED; /* bytes after the frame */
    sc->objects = committed;
    return 0;
}

/* ---- Header ---------------------------------------------------------------------------- */

/* Reads a non-negative integer in any of its encodings at *pos; the pre-scan has made sure
 * the bytes are there, the bounds are checked again regardless. */
static int read_uint(const uint8_t *b, size_t len, size_t *pos, uint64_t *v)
{
    if (*pos >= len)
        return VV_EWIRE_TRUNCATED;
    uint8_t t = b[*pos];
    size_t w;
    bool is_signed = false;
    if (t <= 0x7f) {
        *v = t;
        *pos += 1;
        return 0;
    }
    if (t >= 0xcc && t <= 0xcf) {
        w = (size_t)1 << (t - 0xcc);
    } else if (t >= 0xd0 && t <= 0xd3) {
        w = (size_t)1 << (t - 0xd0);
        is_signed = true;
    } else {
        return VV_EWIRE_MALFORMED; /* negative fixint, float, str, nil, ... */
    }
    if (w > len - *pos - 1)
        return VV_EWIRE_TRUNCATED;
    uint64_t x = be(b + *pos + 1, w);
    if (is_signed && (x >> (8 * w - 1)) != 0)
        return VV_EWIRE_MALFORMED; /* a negative value */
    *v = x;
    *pos += 1 + w;
    return 0;
}

/* Reads an array header (fixarray, array 16 or array 32) at *pos. */
static int read_array(const uint8_t *b, size_t len, size_t *pos, uint64_t *n)
{
    if (*pos >= len)
        return VV_EWIRE_TRUNCATED;
    uint8_t t = b[*pos];
    size_t w;
    if (t >= 0x90 && t <= 0x9f) {
        *n = t & 0x0f;
        *pos += 1;
        return 0;
    }
    if (t == 0xdc)
        w = 2;
    else if (t == 0xdd)
        w = 4;
    else
        return VV_EWIRE_MALFORMED;
    if (w > len - *pos - 1)
        return VV_EWIRE_TRUNCATED;
    *n = be(b + *pos + 1, w);
    *pos += 1 + w;
    return 0;
}

static int check(const uint8_t *buf, size_t len, struct vv_wire_header *h, struct scan *sc)
{
    memset(h, 0, sizeof(*h));
    if (!buf && len > 0)
        return VV_EINVAL;
    int rc = prescan(buf, len, sc);
    if (rc < 0)
        return rc;
    size_t pos = 0;
    uint64_t n, major, minor, type, id;
    if ((rc = read_array(buf, len, &pos, &n)) < 0)
        return rc;
    if (n != 5)
        return VV_EWIRE_MALFORMED;
    if ((rc = read_uint(buf, len, &pos, &major)) < 0)
        return rc;
    if (major != VV_WIRE_MAJOR)
        return VV_EWIRE_VERSION;
    if ((rc = read_uint(buf, len, &pos, &minor)) < 0 ||
        (rc = read_uint(buf, len, &pos, &type)) < 0 || (rc = read_uint(buf, len, &pos, &id)) < 0)
        return rc;
    if (minor > UINT16_MAX || type > UINT16_MAX)
        return VV_EWIRE_MALFORMED;
    /* The pre-scan proved the array ends exactly at len, so the body is the rest. */
    if (pos >= len)
        return VV_EWIRE_TRUNCATED;
    h->major = (uint32_t)major;
    h->minor = (uint32_t)minor;
    h->type = (uint16_t)type;
    h->request_id = id;
    h->body_off = pos;
    h->body_len = len - pos;
    return 0;
}

int vv_wire_check(const uint8_t *buf, size_t len, struct vv_wire_header *h)
{
    struct scan sc;
    return check(buf, len, h, &sc);
}

int vv_wire_peek(const uint8_t *buf, size_t len, uint16_t *type, uint64_t *request_id)
{
    size_t pos = 0;
    uint64_t n, major, minor, t, id;
    int rc;
    if (!buf || len == 0)
        return VV_EWIRE_TRUNCATED;
    if ((rc = read_array(buf, len, &pos, &n)) < 0)
        return rc;
    if (n != 5)
        return VV_EWIRE_MALFORMED;
    if ((rc = read_uint(buf, len, &pos, &major)) < 0)
        return rc;
    if (major != VV_WIRE_MAJOR)
        return VV_EWIRE_VERSION;
    if ((rc = read_uint(buf, len, &pos, &minor)) < 0 || (rc = read_uint(buf, len, &pos, &t)) < 0 ||
        (rc = read_uint(buf, len, &pos, &id)) < 0)
        return rc;
    if (minor > UINT16_MAX || t > UINT16_MAX)
        return VV_EWIRE_MALFORMED;
    if (pos >= len)
        return VV_EWIRE_TRUNCATED; /* no body */
    *type = (uint16_t)t;
    *request_id = id;
    return 0;
}

int vv_wire_verdict(const struct vv_wire_header *h, bool type_known)
{
    if (type_known)
        return 0;
    return h->minor > VV_WIRE_MINOR ? VV_WIRE_SKIP : VV_EWIRE_UNKNOWN_TYPE;
}

/* ---- Decoding -------------------------------------------------------------------------- */

int vv_wire_decode(const uint8_t *buf, size_t len, struct vv_wire_frame *out)
{
    struct scan sc;
    memset(out, 0, sizeof(*out));
    int rc = check(buf, len, &out->h, &sc);
    if (rc < 0)
        return rc;
    /*
     * One chunk for everything when the estimate holds: the copy of the bytes (msgpack-c's
     * strings and bins point into the buffer it unpacks), one msgpack_object per value and
     * alignment padding for each container's element array. The zone grows if it is short.
     */
    size_t chunk = len + sc.objects * sizeof(msgpack_object) + sc.containers * sizeof(void *) + 64;
    msgpack_zone *z = vv_xmalloc(sizeof(*z));
    if (!msgpack_zone_init(z, chunk))
        abort(); /* out of memory: the same policy as vv_xmalloc */
    char *copy = msgpack_zone_malloc_no_align(z, len);
    if (!copy)
        abort();
    memcpy(copy, buf, len);
    size_t off = 0;
    msgpack_object top;
    msgpack_unpack_return ur = msgpack_unpack(copy, len, &off, z, &top);
    /* Cannot fail after the pre-scan; checked anyway rather than trusted. */
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len || top.type != MSGPACK_OBJECT_ARRAY ||
        top.via.array.size != 5) {
        msgpack_zone_destroy(z);
        vv_free(z);
        memset(out, 0, sizeof(*out));
        return ur == MSGPACK_UNPACK_NOMEM_ERROR ? VV_ENOMEM : VV_EWIRE_MALFORMED;
    }
    out->body = top.via.array.ptr[4];
    out->zone = z;
    return 0;
}

void vv_wire_frame_free(struct vv_wire_frame *f)
{
    if (!f || !f->zone)
        return;
    msgpack_zone_destroy(f->zone);
    vv_free(f->zone);
    f->zone = NULL;
}

/* ---- Encoding -------------------------------------------------------------------------- */

void vv_wire_begin_minor(msgpack_packer *pk, uint16_t minor, uint16_t type, uint64_t request_id)
{
    /* msgpack-c's sized pack functions write the shortest encoding of the value. */
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint32(pk, VV_WIRE_MAJOR);
    msgpack_pack_uint16(pk, minor);
    msgpack_pack_uint16(pk, type);
    msgpack_pack_uint64(pk, request_id);
}

void vv_wire_begin(msgpack_packer *pk, uint16_t type, uint64_t request_id)
{
    vv_wire_begin_minor(pk, VV_WIRE_MINOR, type, request_id);
}

/* ---- Body accessors -------------------------------------------------------------------- */

int vv_wire_get_u64(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return VV_EWIRE_MALFORMED;
    *out = o->via.u64;
    return 0;
}

int vv_wire_get_bin(const msgpack_object *o, size_t exact_len_or_0, size_t max, const uint8_t **p,
                    size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_BIN || o->via.bin.size > max ||
        (exact_len_or_0 && o->via.bin.size != exact_len_or_0))
        return VV_EWIRE_MALFORMED;
    *p = (const uint8_t *)o->via.bin.ptr;
    if (n)
        *n = o->via.bin.size;
    return 0;
}

/*
 * Strict UTF-8 (RFC 3629): shortest forms only, no surrogates, nothing above U+10FFFF; and
 * no code point of Unicode's control category Cc (U+0000..U+001F, U+007F..U+009F).
 */
static bool text_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t k; /* continuation bytes */
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return false; /* a continuation byte, 0xc0/0xc1 (overlong) or 0xf5.. */
        if (k > n - i - 1)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
            return false;
        i += k + 1;
    }
    return true;
}

int vv_wire_get_str(const msgpack_object *o, size_t max, const char **p, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size > max ||
        !text_ok((const uint8_t *)o->via.str.ptr, o->via.str.size))
        return VV_EWIRE_MALFORMED;
    *p = o->via.str.ptr;
    if (n)
        *n = o->via.str.size;
    return 0;
}

int vv_wire_get_array(const msgpack_object *o, uint32_t min, uint32_t max,
                      const msgpack_object **items, uint32_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < min || o->via.array.size > max)
        return VV_EWIRE_MALFORMED;
    *items = o->via.array.ptr;
    if (n)
        *n = o->via.array.size;
    return 0;
}

int vv_wire_get_bool(const msgpack_object *o, bool *out)
{
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return VV_EWIRE_MALFORMED;
    *out = o->via.boolean;
    return 0;
}
