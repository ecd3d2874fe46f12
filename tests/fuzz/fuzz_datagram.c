/*
 * Fuzz target: what anyone on the network can send a node's datagram socket
 * (docs/protocol.md, "Datagrams"). One node with two requests outstanding by datagram to
 * 192.0.2.2:4747 (one naming the peer's ID, one not), a server and a datagram handler on
 * the test channel gets one datagram: the input as it is, or the input's bytes after the
 * first wrapped in a valid envelope, raw or as the body of a reply, an error answer or a
 * request, from the address asked or another, claiming the peer's ID or another. It goes
 * through vv_env_receive_datagram (envelope, frame check, dispatch), as the daemon's socket
 * hands it over.
 *
 * Must hold: no crash, leak or sanitizer report; each request completes at most once and
 * only by an answer from the address asked; a handler sees only frames that pass
 * vv_wire_check within the datagram limit; every datagram the layer sends (answers, busy)
 * passes the check, fits VV_ENV_MAX_DATAGRAM_FRAME_BYTES and goes to the source.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/env_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQ_TYPE  0x0f01
#define PEER_ADDR "192.0.2.2:4747"

static const char *source; /* the address the current datagram came from */

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
    (void)impl, (void)peer, (void)channel, (void)data, (void)len;
    abort(); /* nothing here goes over a connection */
}

static int datagram(void *impl, const char *address, const uint8_t *frame, size_t len)
{
    (void)impl;
    struct vv_wire_header h;
    if (len > VV_ENV_MAX_DATAGRAM_FRAME_BYTES || vv_wire_check(frame, len, &h) != 0)
        abort(); /* the layer sent what a receiver would refuse */
    /* Only requests go to the peer asked; answers go back to where the request came from. */
    if (strcmp(address, PEER_ADDR) != 0 && (source == NULL || strcmp(address, source) != 0))
        abort();
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
    .datagram = datagram,
};

static int completions[2];

static void on_answer(struct vv_env *env, const struct vv_env_answer *a, void *arg)
{
    (void)env;
    int *count = arg;
    if (++*count > 1)
        abort(); /* completed twice */
    if (a->address == NULL || strcmp(a->address, PEER_ADDR) != 0)
        abort();
    if (source == NULL || strcmp(source, PEER_ADDR) != 0)
        abort(); /* completed by an answer from elsewhere */
    if (a->status == VV_EREQ_REMOTE || a->status == VV_EREQ_BUSY) {
        if (a->error_code == 0 || a->error_code > VV_REQ_ERROR_CODE_MAX ||
            a->error_message_len > VV_REQ_ERROR_MESSAGE_MAX_BYTES)
            abort();
    }
    if (a->status == 0 && a->reply == NULL)
        abort();
}

static void on_datagram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                        const char *from, const uint8_t *frame, size_t len, void *arg)
{
    (void)env, (void)claimed, (void)arg;
    struct vv_wire_header h;
    if (len > VV_ENV_MAX_DATAGRAM_FRAME_BYTES || vv_wire_check(frame, len, &h) != 0 ||
        strcmp(from, source) != 0)
        abort();
}

static void serve(struct vv_env *env, uint64_t ctx, const uint8_t peer[VV_NODE_ID_BYTES],
                  const struct vv_wire_frame *req, void *arg)
{
    (void)peer, (void)arg;
    const char *src = vv_env_request_source(env, ctx);
    if (src == NULL || strcmp(src, source) != 0)
        abort();
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, req->body);
    switch (sb.size ? (uint8_t)sb.data[0] % 3 : 0) {
    case 0: {
        /* Echoing the body may not fit a datagram: then the context stays live. */
        int rc = vv_env_reply(env, ctx, (const uint8_t *)sb.data, sb.size);
        if (rc == VV_EWIRE_TOO_LARGE && vv_env_reply_error(env, ctx, 3, "too large") != 0)
            abort();
        break;
    }
    case 1:
        vv_env_reply_error(env, ctx, VV_REQ_ERR_UNSUPPORTED, "unknown request");
        break;
    default:
        break; /* left in service: freed by vv_env_fini */
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
    if (size == 0 || size > 2048)
        return 0;
    struct vv_identity me = {0};
    memset(me.node_id, 1, sizeof(me.node_id));
    uint8_t peer[VV_NODE_ID_BYTES];
    memset(peer, 2, sizeof(peer));
    struct vv_env env = {.ops = &ops, .impl = NULL, .identity = &me};
    vv_env_set_server(&env, VV_CHANNEL_TEST, serve, NULL);
    vv_env_set_datagram_handler(&env, VV_CHANNEL_TEST, on_datagram, NULL);
    completions[0] = completions[1] = 0;
    source = NULL;
    static const uint8_t body[] = {0xc0};
    uint64_t ids[2];
    if (vv_env_request_datagram(&env, peer, PEER_ADDR, REQ_TYPE, body, 1, 1000, on_answer,
                                &completions[0], &ids[0]) != 0 ||
        vv_env_request_datagram(&env, NULL, PEER_ADDR, REQ_TYPE, body, 1, 1000, on_answer,
                                &completions[1], &ids[1]) != 0)
        abort();

    /* data[0]: bits 0-2 the shape, bit 3 the source, bit 4 the claimed ID, bit 7 which id. */
    static const char *const sources[2] = {PEER_ADDR, "[2001:db8::7]:4747"};
    source = sources[(data[0] >> 3) & 1];
    uint8_t claimed[VV_NODE_ID_BYTES];
    memset(claimed, (data[0] >> 4) & 1 ? 3 : 2, sizeof(claimed));
    uint8_t fr[2048 + 32];
    size_t fl = 0;
    uint64_t id = ids[data[0] >> 7];
    switch (data[0] & 7) {
    case 1:
        fl = frame(fr, sizeof(fr), 0x0f00 | VV_REQ_TYPE_REPLY, id, data + 1, size - 1);
        break;
    case 2:
        fl = frame(fr, sizeof(fr), 0x0f00 | VV_REQ_TYPE_ERROR, id, data + 1, size - 1);
        break;
    case 3:
        fl = frame(fr, sizeof(fr), REQ_TYPE, id, data + 1, size - 1);
        break;
    case 4:
        fl = size - 1; /* the rest is the frame */
        memcpy(fr, data + 1, fl);
        break;
    default:
        break;
    }
    if ((data[0] & 7) == 0 || (data[0] & 7) > 4) {
        /* The whole input is the datagram, envelope included. */
        vv_env_receive_datagram(&env, source, data, size, NULL);
    } else {
        uint8_t d[sizeof(fr) + VV_ENV_DATAGRAM_HEADER_BYTES];
        size_t n = vv_env_datagram_seal(claimed, fr, fl, d, sizeof(d));
        vv_env_receive_datagram(&env, source, d, n, NULL);
    }
    if (completions[0] > 1 || completions[1] > 1)
        abort();
    vv_env_fini(&env);
    return 0;
}
