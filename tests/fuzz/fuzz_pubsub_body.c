/* Fuzz target: every decoder of the pubsub channel's frame bodies (SUBSCRIPTIONS, MESSAGE,
 * CONTROL; CHOKE has the body of SUBSCRIPTIONS and its decoder), each run on every input that
 * passes the frame check, whatever its type. A body
 * one decoder accepts must be accepted by its encoder, and decode again to the same
 * encoding; nothing may leak (the CONTROL decoder allocates). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/pubsub_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*enc_fn)(msgpack_packer *pk, const void *v);

static int enc_subs(msgpack_packer *pk, const void *v)
{
    const struct {
        const struct vv_pubsub_sub *s;
        uint32_t n;
    } *a = v;
    return vv_pubsub_subs_encode(pk, a->s, a->n);
}

static int enc_msg(msgpack_packer *pk, const void *v)
{
    return vv_pubsub_msg_encode(pk, v);
}

static int enc_control(msgpack_packer *pk, const void *v)
{
    return vv_pubsub_control_encode(pk, v);
}

/* Encodes v as a frame body into sb (cleared first); aborts if the encoder refuses. */
static void encode(msgpack_sbuffer *sb, enc_fn fn, const void *v)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_PUBSUB_TYPE_CONTROL, 0);
    if (fn(&pk, v) != 0)
        abort();
}

static void check_subs(const msgpack_object *body)
{
    static struct vv_pubsub_sub subs[VV_PUBSUB_MAX_SUBS_PER_FRAME],
        again[VV_PUBSUB_MAX_SUBS_PER_FRAME];
    struct {
        const struct vv_pubsub_sub *s;
        uint32_t n;
    } a = {subs, 0}, b = {again, 0};
    if (vv_pubsub_subs_decode(body, subs, VV_PUBSUB_MAX_SUBS_PER_FRAME, &a.n) != 0)
        return;
    msgpack_sbuffer s1, s2;
    msgpack_sbuffer_init(&s1);
    msgpack_sbuffer_init(&s2);
    encode(&s1, enc_subs, &a);
    struct vv_wire_frame f;
    if (vv_wire_decode((const uint8_t *)s1.data, s1.size, &f) != 0 ||
        vv_pubsub_subs_decode(&f.body, again, VV_PUBSUB_MAX_SUBS_PER_FRAME, &b.n) != 0)
        abort();
    encode(&s2, enc_subs, &b);
    if (s1.size != s2.size || memcmp(s1.data, s2.data, s1.size) != 0)
        abort();
    vv_wire_frame_free(&f);
    msgpack_sbuffer_destroy(&s1);
    msgpack_sbuffer_destroy(&s2);
}

static void check_msg(const msgpack_object *body)
{
    struct vv_pubsub_msg m, m2;
    if (vv_pubsub_msg_decode(body, &m) != 0)
        return;
    /* The ID and digest are defined for every message a peer can send. */
    uint8_t d[VV_PUBSUB_DIGEST_BYTES];
    vv_pubsub_msg_digest(&m, d);
    msgpack_sbuffer s1, s2;
    msgpack_sbuffer_init(&s1);
    msgpack_sbuffer_init(&s2);
    encode(&s1, enc_msg, &m);
    struct vv_wire_frame f;
    if (vv_wire_decode((const uint8_t *)s1.data, s1.size, &f) != 0 ||
        vv_pubsub_msg_decode(&f.body, &m2) != 0)
        abort();
    encode(&s2, enc_msg, &m2);
    if (s1.size != s2.size || memcmp(s1.data, s2.data, s1.size) != 0)
        abort();
    uint8_t d2[VV_PUBSUB_DIGEST_BYTES];
    vv_pubsub_msg_digest(&m2, d2);
    if (memcmp(d, d2, sizeof(d)) != 0)
        abort();
    vv_wire_frame_free(&f);
    msgpack_sbuffer_destroy(&s1);
    msgpack_sbuffer_destroy(&s2);
}

static void check_control(const msgpack_object *body)
{
    struct vv_pubsub_control c, c2;
    if (vv_pubsub_control_decode(body, &c) != 0)
        return;
    msgpack_sbuffer s1, s2;
    msgpack_sbuffer_init(&s1);
    msgpack_sbuffer_init(&s2);
    encode(&s1, enc_control, &c);
    struct vv_wire_frame f;
    if (vv_wire_decode((const uint8_t *)s1.data, s1.size, &f) != 0 ||
        vv_pubsub_control_decode(&f.body, &c2) != 0)
        abort();
    encode(&s2, enc_control, &c2);
    if (s1.size != s2.size || memcmp(s1.data, s2.data, s1.size) != 0)
        abort();
    vv_pubsub_control_free(&c2);
    vv_wire_frame_free(&f);
    vv_pubsub_control_free(&c);
    msgpack_sbuffer_destroy(&s1);
    msgpack_sbuffer_destroy(&s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_wire_frame f;
    if (vv_wire_decode(data, size, &f) != 0)
        return 0;
    check_subs(&f.body);
    check_msg(&f.body);
    check_control(&f.body);
    vv_wire_frame_free(&f);
    return 0;
}
