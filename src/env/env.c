/*
 * The implementation-independent half of vv_env: channel dispatch, signing, unbiased
 * random numbers, and the datagram envelope (docs/protocol.md, "Datagrams") with its checks,
 * so the daemon, the simulator and the fake env open and refuse datagrams alike. It holds no state
 * of its own; everything is in the struct vv_env. The request/response layer (request.c) sees every
 * delivered message and every peer-down event first, through the two vv__env_req_* hooks below.
 */
#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "env_internal.h"
#include "vivim/common.h"
#include "vivim/env.h"
#include "vivim/wire.h"

void vv_env_set_channel(struct vv_env *env, enum vv_channel ch, vv_env_recv_cb recv,
                        vv_env_peer_cb peer, void *arg)
{
    struct vv_env_channel *c = &env->channels[ch];
    c->recv = recv;
    c->peer = peer;
    c->arg = arg;
}

void vv_env_set_peer_manager(struct vv_env *env, const struct vv_env_peer_manager *pm)
{
    if (pm != NULL)
        env->peers = *pm;
    else
        memset(&env->peers, 0, sizeof(env->peers));
}

uint64_t vv_env_random_below(struct vv_env *env, uint64_t bound)
{
    if (bound <= 1)
        return 0;
    /* Rejection sampling: draw again when the value falls in the short last bucket. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do {
        vv_env_random(env, &r, sizeof(r));
    } while (r >= limit);
    return r % bound;
}

void vv_env_sign(struct vv_env *env, const uint8_t *msg, size_t len, uint8_t sig[64])
{
    crypto_sign_detached(sig, NULL, msg, len, env->identity->secret_key);
}

void vv_env_deliver(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                    const uint8_t *data, size_t len)
{
    if (channel >= VV_ENV_MAX_CHANNELS)
        return; /* the wire layer counts these; a simulator never produces one */
    if (vv__env_req_deliver(env, peer, channel, data, len))
        return; /* an answer, or a request for the channel's server */
    struct vv_env_channel *c = &env->channels[channel];
    if (c->recv != NULL)
        c->recv(env, peer, data, len, c->arg);
}

static void tell_channels(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up)
{
    /* In the same ordered dispatch as the channels, and before them: a channel that hears
     * "down" has no request left outstanding to that peer. */
    if (!up)
        vv__env_req_peer_down(env, peer);
    for (int i = 0; i < VV_ENV_MAX_CHANNELS; i++) {
        struct vv_env_channel *c = &env->channels[i];
        if (c->peer != NULL)
            c->peer(env, peer, up, c->arg);
    }
}

void vv_env_peer_event(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up)
{
    if (env->dispatching) {
        /* Told after the event being told now (its channels must all hear it first). The
         * array lives only while events are held. */
        if (env->n_held == env->cap_held) {
            env->cap_held = env->cap_held ? env->cap_held * 2 : 4;
            env->held = vv_xrealloc(env->held, env->cap_held * sizeof(*env->held));
        }
        struct vv__env_peer_ev *h = &env->held[env->n_held++];
        memcpy(h->peer, peer, VV_NODE_ID_BYTES);
        h->up = up;
        return;
    }
    env->dispatching = true;
    tell_channels(env, peer, up);
    for (size_t i = 0; i < env->n_held; i++) {
        struct vv__env_peer_ev ev = env->held[i]; /* a copy: telling may grow the array */
        tell_channels(env, ev.peer, ev.up);
    }
    vv_free(env->held);
    env->held = NULL;
    env->n_held = env->cap_held = 0;
    env->dispatching = false;
}

void vv_env_fini(struct vv_env *env)
{
    vv__env_req_free(env);
    vv__env_verify_free(env);
    vv_free(env->held);
    env->held = NULL;
    env->n_held = env->cap_held = 0;
    env->dispatching = false;
}

/* ---- datagrams ----------------------------------------------------------------------- */

static const uint8_t dgram_magic[2] = {'V', 'D'};

void vv_env_set_datagram_handler(struct vv_env *env, enum vv_channel ch, vv_env_datagram_cb cb,
                                 void *arg)
{
    if ((unsigned)ch >= VV_ENV_MAX_CHANNELS)
        return;
    env->channels[ch].datagram = cb;
    env->channels[ch].datagram_arg = arg;
}

int vv_env_address_canon(const char *in, char *out, size_t cap)
{
    if (in == NULL)
        return VV_EDGRAM_ADDRESS;
    const char *colon = strrchr(in, ':');
    if (colon == NULL || colon == in)
        return VV_EDGRAM_ADDRESS;
    char host[INET6_ADDRSTRLEN + 2];
    size_t hl = (size_t)(colon - in);
    bool v6 = in[0] == '[';
    if (v6) {
        if (hl < 3 || in[hl - 1] != ']')
            return VV_EDGRAM_ADDRESS;
        in++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host))
        return VV_EDGRAM_ADDRESS;
    memcpy(host, in, hl);
    host[hl] = '\0';
    /* The port: 1..65535 in decimal digits only (strtoul takes signs and spaces). */
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (pl == 0 || pl > 5 || strspn(p, "0123456789") != pl)
        return VV_EDGRAM_ADDRESS;
    unsigned long port = strtoul(p, NULL, 10);
    if (port == 0 || port > 65535)
        return VV_EDGRAM_ADDRESS;
    uint8_t bin[16];
    char ip[INET6_ADDRSTRLEN];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, bin) != 1 ||
        inet_ntop(v6 ? AF_INET6 : AF_INET, bin, ip, sizeof(ip)) == NULL)
        return VV_EDGRAM_ADDRESS;
    int n = snprintf(out, cap, v6 ? "[%s]:%lu" : "%s:%lu", ip, port);
    return n < 0 || (size_t)n >= cap ? VV_EDGRAM_ADDRESS : 0;
}

int vv_env_address_ip(const char *address, char *out, size_t cap)
{
    const char *colon = strrchr(address, ':');
    if (colon == NULL)
        return VV_EINVAL;
    const char *b = address;
    size_t n = (size_t)(colon - address);
    if (n >= 2 && b[0] == '[' && b[n - 1] == ']') {
        b++;
        n -= 2;
    }
    if (n >= cap)
        return VV_EINVAL;
    memcpy(out, b, n);
    out[n] = '\0';
    return 0;
}

const char *vv_env_datagram_verdict_name(enum vv_env_dgram_verdict v)
{
    static const char *const names[VV_DGRAM_N_VERDICTS] = {"ok",    "short",   "oversize",
                                                           "magic", "version", "flags"};
    return (unsigned)v < VV_DGRAM_N_VERDICTS ? names[v] : "unknown";
}

size_t vv_env_datagram_seal(const uint8_t id[VV_NODE_ID_BYTES], const uint8_t *frame, size_t len,
                            uint8_t *out, size_t cap)
{
    if (cap < VV_ENV_DATAGRAM_HEADER_BYTES + len)
        return 0;
    memcpy(out, dgram_magic, 2);
    out[2] = VV_ENV_DATAGRAM_VERSION;
    out[3] = 0; /* flags: none defined */
    memcpy(out + 4, id, VV_NODE_ID_BYTES);
    memcpy(out + VV_ENV_DATAGRAM_HEADER_BYTES, frame, len);
    return VV_ENV_DATAGRAM_HEADER_BYTES + len;
}

enum vv_env_dgram_verdict vv_env_datagram_open(const uint8_t *buf, size_t len,
                                               const uint8_t **claimed, const uint8_t **frame,
                                               size_t *frame_len)
{
    /* In this order, so a reader of the counters knows the first thing that was wrong. */
    if (len > VV_ENV_MAX_DATAGRAM_BYTES)
        return VV_DGRAM_OVERSIZE;
    if (len < VV_ENV_DATAGRAM_HEADER_BYTES)
        return VV_DGRAM_SHORT;
    if (memcmp(buf, dgram_magic, 2) != 0)
        return VV_DGRAM_MAGIC;
    if (buf[2] != VV_ENV_DATAGRAM_VERSION)
        return VV_DGRAM_VERSION;
    /* No flag is defined yet; one set means a meaning we do not know (a compression or an
     * encryption a later version adds), so reading on would misread it. */
    if (buf[3] != 0)
        return VV_DGRAM_FLAGS;
    *claimed = buf + 4;
    *frame = buf + VV_ENV_DATAGRAM_HEADER_BYTES;
    *frame_len = len - VV_ENV_DATAGRAM_HEADER_BYTES;
    return VV_DGRAM_OK;
}

int vv_env_send_datagram(struct vv_env *env, const char *address, const uint8_t *frame, size_t len)
{
    if (frame == NULL || len == 0)
        return VV_EINVAL;
    if (len > VV_ENV_MAX_DATAGRAM_FRAME_BYTES)
        return VV_EWIRE_TOO_LARGE;
    struct vv_wire_header h;
    if (vv_wire_check(frame, len, &h) != 0)
        return VV_EINVAL;
    char canon[VV_ENV_ADDRESS_BYTES];
    int rc = vv_env_address_canon(address, canon, sizeof(canon));
    if (rc != 0)
        return rc;
    if (env->ops->datagram == NULL)
        return VV_EDGRAM_UNSUPPORTED;
    rc = env->ops->datagram(env->impl, canon, frame, len);
    if (rc == 0)
        env->dgram.sent++;
    else
        env->dgram.send_fails++;
    return rc;
}

int vv_env_deliver_datagram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                            const char *from, const uint8_t *frame, size_t len)
{
    struct vv_wire_header h;
    int rc =
        len > VV_ENV_MAX_DATAGRAM_FRAME_BYTES ? VV_EWIRE_TOO_LARGE : vv_wire_check(frame, len, &h);
    if (rc != 0) {
        env->dgram.bad_frame++;
        return rc;
    }
    uint8_t ch = vv_wire_channel(h.type);
    if (ch >= VV_ENV_MAX_CHANNELS) {
        env->dgram.unhandled++;
        return VV_ENOTFOUND;
    }
    if (vv__env_req_deliver_datagram(env, claimed, from, ch, frame, len)) {
        env->dgram.delivered++;
        return 0;
    }
    struct vv_env_channel *c = &env->channels[ch];
    if (c->datagram == NULL) {
        env->dgram.unhandled++;
        return VV_ENOTFOUND;
    }
    env->dgram.delivered++;
    c->datagram(env, claimed, from, frame, len, c->datagram_arg);
    return 0;
}

int vv_env_receive_datagram(struct vv_env *env, const char *from, const uint8_t *buf, size_t len,
                            enum vv_env_dgram_verdict *verdict)
{
    const uint8_t *claimed, *frame;
    size_t flen;
    enum vv_env_dgram_verdict v = vv_env_datagram_open(buf, len, &claimed, &frame, &flen);
    if (verdict)
        *verdict = v;
    if (v != VV_DGRAM_OK)
        return VV_EDGRAM_MALFORMED;
    return vv_env_deliver_datagram(env, claimed, from, frame, flen);
}
