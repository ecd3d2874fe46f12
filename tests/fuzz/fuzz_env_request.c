/*
 * Fuzz target: what a hostile peer can send the request layer (src/env/request.c). One
 * node with two requests outstanding to the peer and a server on the test channel gets one
 * frame from it: the input as it is, or the input's bytes after the first as the body of a
 * reply, an error answer (code + message: the layer's decoder of outside bytes) or a
 * request carrying an outstanding request's id. Then the peer goes down.
 *
 * Must hold: no crash, leak or sanitizer report; each request completes at most once, and
 * both have completed once the peer is down; an error answer handed to a module has a code
 * 1..65535 and a message without control characters; every frame the layer sends (answers,
 * busy) passes the receiver's vv_wire_check.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/env_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQ_TYPE 0x0f01

static uint64_t now_ms(void *impl)
{
    (void)impl;
    return 0;
}

static uint64_t timer_start(void *impl, uint64_t delay, uint64_t repeat, vv_env_timer_cb cb,
                            void *arg)
{
    (void)impl, (void)delay, (void)repeat, (void)cb, (void)arg;
    static uint64_t next;
    return ++next; /* never fires: time stands still */
}

static void timer_cancel(void *impl, uint64_t id)
{
    (void)impl, (void)id;
}

static void random_bytes(void *impl, void *buf, size_t len)
{
    (void)impl;
    memset(buf, 0x5a, len);
}

static int send_frame(void *impl, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                      const uint8_t *data, size_t len)
{
    (void)impl, (void)peer;
    struct vv_wire_header h;
    if (vv_wire_check(data, len, &h) != 0 || vv_wire_channel(h.type) != channel)
        abort(); /* the layer sent what a receiver would refuse */
    return 0;
}

static int connect_peer(void *impl, const uint8_t *peer, const char *address)
{
    (void)impl, (void)peer, (void)address;
    return 0;
}

static void disconnect_peer(void *impl, const uint8_t peer[VV_NODE_ID_BYTES])
{
    (void)impl, (void)peer;
}

static bool verify(void *impl, const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg,
                   size_t len, const uint8_t sig[64])
{
    (void)impl, (void)pk, (void)msg, (void)len, (void)sig;
    return false;
}

static const struct vv_env_ops ops = {
    .now_ms = now_ms,
    .timer_start = timer_start,
    .timer_cancel = timer_cancel,
    .random_bytes = random_bytes,
    .send = send_frame,
    .connect = connect_peer,
    .disconnect = disconnect_peer,
    .verify = verify,
};

static int completions[2];

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    int *count = arg;
    if (++*count > 1)
        abort(); /* completed twice */
    if (a->status == VV_EREQ_REMOTE || a->status == VV_EREQ_BUSY) {
        if (a->error_code == 0 || a->error_code > VV_REQ_ERROR_CODE_MAX ||
            a->error_message_len > VV_REQ_ERROR_MESSAGE_MAX_BYTES)
            abort();
        for (size_t i = 0; i < a->error_message_len; i++) {
            uint8_t c = (uint8_t)a->error_message[i];
            if (c < 0x20 || c == 0x7f)
                abort();
        }
    }
    if (a->status == 0 && a->reply == NULL)
        abort();
}

/* Answers by echoing the body, with an error, or not yet, by the body's first byte. */
static uint64_t held;
static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *req, void *arg)
{
    (void)peer, (void)arg;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, req->body);
    switch (sb.size ? (uint8_t)sb.data[0] % 3 : 0) {
    case 0:
        vv_env_reply(env, ctx, (const uint8_t *)sb.data, sb.size);
        break;
    case 1:
        vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, "unknown request");
        break;
    default:
        held = ctx; /* dropped when the peer goes down */
    }
    msgpack_sbuffer_destroy(&sb);
}

static size_t frame(uint8_t *out, size_t cap, uint16_t type, uint64_t id, const uint8_t *body,
                    size_t len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, id);
    msgpack_sbuffer_write(&sb, (const char *)body, len);
    size_t n = sb.size <= cap ? sb.size : 0;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 4096)
        return 0;
    struct vv_identity me = {0};
    memset(me.node_id, 1, sizeof(me.node_id));
    uint8_t peer[VV_NODE_ID_BYTES];
    memset(peer, 2, sizeof(peer));
    struct vv_env env = {.ops = &ops, .impl = NULL, .identity = &me};
    vv_env_set_server(&env, VV_CHANNEL_TEST, serve, NULL);
    completions[0] = completions[1] = 0;
    held = 0;
    static const uint8_t body[] = {0xc0};
    uint64_t ids[2];
    for (int i = 0; i < 2; i++)
        if (vv_env_request(&env, peer, REQ_TYPE, body, 1, 1000, on_answer, &completions[i],
                           &ids[i]) != 0)
            abort();

    uint8_t buf[4096 + 32];
    const uint8_t *msg = data + 1;
    size_t len = size - 1;
    switch (data[0] & 3) {
    case 1:
        len = frame(buf, sizeof(buf), 0x0f00 | VV_REQ_TYPE_REPLY, ids[data[0] >> 7], data + 1,
                    size - 1);
        msg = buf;
        break;
    case 2:
        len = frame(buf, sizeof(buf), 0x0f00 | VV_REQ_TYPE_ERROR, ids[data[0] >> 7], data + 1,
                    size - 1);
        msg = buf;
        break;
    case 3:
        len = frame(buf, sizeof(buf), REQ_TYPE, ids[data[0] >> 7], data + 1, size - 1);
        msg = buf;
        break;
    default:
        break;
    }
    /* The daemon's transport delivers only frames that passed vv_wire_check, on the channel
     * their type names; a simulated peer's bytes arrive unchecked. Both are tried. */
    struct vv_wire_header h;
    if (vv_wire_check(msg, len, &h) == 0 && vv_wire_channel(h.type) < VV_ENV_MAX_CHANNELS)
        vv_env_deliver(&env, peer, vv_wire_channel(h.type), msg, len);
    else
        vv_env_deliver(&env, peer, VV_CHANNEL_TEST, msg, len);

    vv_env_peer_event(&env, peer, false);
    if (completions[0] != 1 || completions[1] != 1)
        abort(); /* the peer is down: both must have completed */
    if (vv_env_req_stats(&env)->in_flight != 0 || vv_env_req_stats(&env)->serving != 0)
        abort();
    if (held && vv_env_reply(&env, held, body, 1) != VV_ENOTFOUND)
        abort(); /* a context of a peer that went down must be gone */
    held = 0;
    vv_env_fini(&env);
    return 0;
}
