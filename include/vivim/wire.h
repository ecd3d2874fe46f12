/*
 * The frame codec of vivimd's peer protocol (docs/protocol.md, "Frames").
 *
 * After the Noise handshake, the plaintext of each transport message is one frame: a
 * MessagePack array of exactly five elements, [major, minor, type, request_id, body].
 * This module checks frames from peers, unpacks their bodies with msgpack-c, and writes
 * frame headers for senders. It does no I/O and keeps no state.
 *
 * Frames come from the network, so decoding is strict and bounded: before msgpack-c sees a
 * single byte (it bounds nothing and will allocate gigabytes for a five-byte array32
 * header), vv_wire_check walks the raw bytes once and rejects anything over the limits
 * below, any extension type, the reserved byte 0xc1, bytes after the frame and malformed
 * header fields. Only a frame that passed is handed to msgpack-c, whose allocation is then
 * bounded by VV_WIRE_MAX_OBJECTS and the frame's size.
 *
 * MessagePack allows an integer to be written in a wider encoding than it needs (1 as
 * 0xcf 00..01) and a non-negative integer to be written in a signed encoding (0xd0 0x05).
 * Both are accepted everywhere, in the header and in bodies: the value counts, not the
 * encoding. Encoders here always write the shortest form.
 */
#ifndef VIVIM_WIRE_H
#define VIVIM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "vivim/env.h"
#include "vivim/error.h"

#define VV_WIRE_MAJOR 1 /* a frame with another major version is refused (VV_EWIRE_VERSION) */
#define VV_WIRE_MINOR 0 /* ours; a peer's may be higher (see vv_wire_verdict) */

/* The whole frame, header included. Larger payloads travel as streams (env_stream.h). */
#define VV_WIRE_MAX_FRAME_BYTES VV_ENV_MAX_MESSAGE_BYTES
/* Containers nested in a frame, the frame's own array counting as level 1, so a body may
 * nest 15 levels. Real bodies nest 2 or 3; msgpack-c's unpacker stops at 32. */
#define VV_WIRE_MAX_DEPTH 16
/* Elements of one array, or entries (key-value pairs) of one map. */
#define VV_WIRE_MAX_CONTAINER 65536
/*
 * MessagePack values in one frame: the frame's array, its header fields, and every value in
 * the body, a map entry counting as two (its key and its value). msgpack-c spends 24 bytes
 * per value on 64-bit machines, so a frame may cost at most 6 MiB of unpacked objects (plus
 * the 1 MiB copy of its bytes), where without this limit a 1 MiB frame of one-byte values
 * would cost 24 MiB. 2^18 = four containers of the largest size, so a full-size map (131,072
 * values) fits in one frame.
 */
#define VV_WIRE_MAX_OBJECTS 262144

/* vv_wire_verdict: an unknown type from a newer peer, to be skipped (and counted). */
#define VV_WIRE_SKIP 1

struct vv_wire_header {
    uint32_t major, minor;     /* major == VV_WIRE_MAJOR, minor <= 65535 after a check passed */
    uint16_t type;             /* high byte: the channel (enum vv_channel in env.h) */
    uint64_t request_id;       /* 0: no reply expected; a reply carries its request's id */
    size_t body_off, body_len; /* the body's encoded bytes within the frame */
};

/*
 * Checks a whole frame (buf, len) without allocating anything, and parses its header into h
 * (zeroed first; meaningful only on success). Returns 0, or
 *   VV_EWIRE_TOO_LARGE    len > VV_WIRE_MAX_FRAME_BYTES, or a depth, container or object
 *                         limit exceeded;
 *   VV_EWIRE_TRUNCATED    the bytes end inside a value, or a declared length or element
 *                         count cannot fit in the bytes that remain (len 0 included);
 *   VV_EWIRE_MALFORMED    an extension type or the byte 0xc1, bytes after the frame, not an
 *                         array of 5, a header field that is not a non-negative integer,
 *                         minor or type > 65535;
 *   VV_EWIRE_VERSION      major != VV_WIRE_MAJOR.
 * A peer that sent a frame failing any of these is closed. (buf NULL with len > 0 is a
 * caller's bug: VV_EINVAL.)
 */
int vv_wire_check(const uint8_t *buf, size_t len, struct vv_wire_header *h);

/*
 * Reads only the header of a frame (its array of 5, major, minor, type and request id),
 * leaving the body unexamined: for a dispatcher that must route a frame the transport
 * already checked (or a simulator's, which checks nothing) without walking it twice.
 * Returns 0, or the first error vv_wire_check would report about the header itself; a 0
 * says nothing about the body, which must still be decoded with vv_wire_decode.
 */
int vv_wire_peek(const uint8_t *buf, size_t len, uint16_t *type, uint64_t *request_id);

/* The channel (module) a message type belongs to: its high byte. */
static inline uint8_t vv_wire_channel(uint16_t type)
{
    return (uint8_t)(type >> 8);
}

/*
 * What to do with a checked frame whose type the caller does (type_known) or does not know:
 * 0 = handle it; VV_WIRE_SKIP = unknown, but the peer speaks a newer minor version, so the
 * type may be one we have not learnt yet: skip the frame (and count it); VV_EWIRE_UNKNOWN_TYPE
 * = unknown at our minor version or an older one: a protocol violation, close.
 */
int vv_wire_verdict(const struct vv_wire_header *h, bool type_known);

/* A decoded frame. body and everything it points to (strings and bins included) live in
 * zone, a copy independent of the buffer decoded, until vv_wire_frame_free. */
struct vv_wire_frame {
    struct vv_wire_header h;
    msgpack_object body;
    msgpack_zone *zone;
};

/*
 * vv_wire_check, then unpacks the frame into out. Returns 0 or the check's error; on error
 * out holds nothing to free (vv_wire_frame_free on it is harmless).
 */
int vv_wire_decode(const uint8_t *buf, size_t len, struct vv_wire_frame *out);
/* Frees what vv_wire_decode allocated; f may be NULL; safe to call twice. */
void vv_wire_frame_free(struct vv_wire_frame *f);

/*
 * Encoding: writes the array header and the four header fields (our major and minor); the
 * caller then packs exactly one body object with the same packer. The caller keeps the
 * frame within VV_WIRE_MAX_FRAME_BYTES and the other limits; a receiver refuses it otherwise.
 */
void vv_wire_begin(msgpack_packer *pk, uint16_t type, uint64_t request_id);
/* The same with another minor version: for tests that play a newer or older peer. */
void vv_wire_begin_minor(msgpack_packer *pk, uint16_t minor, uint16_t type, uint64_t request_id);

/*
 * Exact-type accessors for decoding bodies. Each returns 0, or VV_EWIRE_MALFORMED when o is
 * NULL, of another type or out of the bounds given; out-parameters are written only on
 * success; a count or length out-parameter (n) may be NULL. Pointers returned point into the
 * frame's zone.
 */
/* A non-negative integer <= max. */
int vv_wire_get_u64(const msgpack_object *o, uint64_t max, uint64_t *out);
/* A bin of exactly exact_len_or_0 bytes (when not 0), and at most max bytes. */
int vv_wire_get_bin(const msgpack_object *o, size_t exact_len_or_0, size_t max, const uint8_t **p,
                    size_t *n);
/* A str of at most max bytes that is valid UTF-8 (shortest forms, no surrogates, at most
 * U+10FFFF) without control characters (U+0000..U+001F, U+007F..U+009F: no NUL, tab or
 * newline). Not NUL-terminated: use (p, n). */
int vv_wire_get_str(const msgpack_object *o, size_t max, const char **p, size_t *n);
/* An array of min..max elements. */
int vv_wire_get_array(const msgpack_object *o, uint32_t min, uint32_t max,
                      const msgpack_object **items, uint32_t *n);
int vv_wire_get_bool(const msgpack_object *o, bool *out);

#endif
