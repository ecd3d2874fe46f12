/*
 * The sync engine's large-payload path (see sync_stream.h). Who owns what: each outgoing
 * stream owns a copy of the update it sends (freed when the stream ends); each incoming one
 * is reassembled by the stream layer, which hands the whole buffer to the engine.
 *
 * A received update is applied as one unit after it is complete: the stream layer has then
 * checked that every byte came, in order, and exactly the declared length; the document's
 * decoder checks the encoding, and an update applies whole or not at all. It is not applied
 * in pieces because the encodings are not cut into independent parts: a text update's
 * records name replicas through one agent table and take their characters from one content
 * section, both of which may come last.
 */
#include <string.h>

#include "sync_stream.h"
#include "vivim/common.h"
#include "vivim/crdt_doc.h"
#include "vivim/crdt_sync.h"
#include "vivim/env_stream.h"
#include "vivim/error.h"

struct out {
    struct vv__crdt_bulk *b;
    struct out *next;
    struct vv_stream *s;
    uint8_t peer[VV_NODE_ID_BYTES];
    char id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
    uint8_t *u;
    size_t len, given;
};

struct in {
    struct vv__crdt_bulk *b;
    struct in *next;
    uint8_t peer[VV_NODE_ID_BYTES];
    char id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
};

struct vv__crdt_bulk {
    struct vv_env *env;
    struct vv_stream_mux *mux;
    struct vv__crdt_bulk_cbs cbs;
    void *arg;
    struct out *outs; /* streams being sent; few (at most 8 per peer, the mux's bound) */
    struct in *ins;   /* streams being received (the same bound) */
    struct vv__crdt_bulk_stats stats;
    uint64_t max_bytes; /* the largest update accepted from a peer */
};

static int produce(void *arg, struct vv_stream *s, uint8_t *buf, size_t n)
{
    struct out *o = arg;
    size_t k = VV_MIN(n, o->len - o->given);
    memcpy(buf, o->u + o->given, k);
    o->given += k;
    return (int)k;
}

static void out_done(void *arg, struct vv_stream *s, int status, uint8_t *buf, size_t len)
{
    struct out *o = arg;
    struct vv__crdt_bulk *b = o->b;
    if (status == 0)
        b->stats.sent++;
    else
        b->stats.send_failures++;
    struct out **pp = &b->outs;
    while (*pp != o)
        pp = &(*pp)->next;
    *pp = o->next;
    b->stats.in_flight_bytes -= o->len;
    vv_free(o->u);
    vv_free(o);
}

static void in_done(void *arg, struct vv_stream *s, int status, uint8_t *buf, size_t len)
{
    struct in *i = arg;
    struct vv__crdt_bulk *b = i->b;
    struct in **pp = &b->ins;
    while (*pp != i)
        pp = &(*pp)->next;
    *pp = i->next;
    if (status == 0) {
        b->stats.received++;
        b->cbs.arrived(b->arg, vv_stream_peer(s), i->id, buf, len);
    } else {
        b->stats.receive_failures++;
    }
    vv_free(i);
}

static int on_accept(void *arg, struct vv_stream *s, const uint8_t peer[VV_NODE_ID_BYTES],
                     const uint8_t *meta, size_t meta_len, uint64_t total,
                     struct vv_stream_accept *how)
{
    struct vv__crdt_bulk *b = arg;
    char id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
    const size_t head = 1 + VV_NODE_ID_BYTES; /* type byte and creator */
    if (meta_len < head + 1 || meta_len - head > VV_CRDT_DOC_ID_MAX_BYTES ||
        meta[0] != VV__CRDT_STREAM_UPDATE) {
        b->stats.receive_failures++;
        return VV_ESTREAM_REFUSED;
    }
    size_t idlen = meta_len - head;
    memcpy(id, meta + head, idlen);
    id[idlen] = '\0';
    if (strlen(id) != idlen || !vv_crdt_doc_id_valid(id) ||
        !b->cbs.wanted(b->arg, peer, meta + 1, id)) {
        b->stats.receive_failures++;
        return VV_ESTREAM_REFUSED;
    }
    if (total != VV_STREAM_LENGTH_UNKNOWN && total > b->max_bytes) {
        b->stats.receive_failures++;
        return VV_ESTREAM_TOO_LARGE;
    }
    struct in *i = vv_xcalloc(1, sizeof(*i));
    i->b = b;
    memcpy(i->peer, peer, VV_NODE_ID_BYTES);
    memcpy(i->id, id, idlen + 1);
    i->next = b->ins;
    b->ins = i;
    how->consume = NULL; /* reassembled: applied whole */
    how->max_bytes = b->max_bytes;
    how->done = in_done;
    how->arg = i;
    return 0;
}

struct vv__crdt_bulk *vv__crdt_bulk_new(struct vv_env *env, const struct vv__crdt_bulk_cbs *cbs,
                                        void *arg)
{
    struct vv__crdt_bulk *b = vv_xcalloc(1, sizeof(*b));
    b->env = env;
    b->cbs = *cbs;
    b->arg = arg;
    b->mux = vv_stream_mux_new(env, VV_CHANNEL_CRDT, on_accept, b);
    b->max_bytes = VV_CRDT_SYNC_MAX_DOC_BYTES;
    return b;
}

void vv__crdt_bulk_set_max_bytes(struct vv__crdt_bulk *b, uint64_t max_bytes)
{
    b->max_bytes = max_bytes;
}

void vv__crdt_bulk_free(struct vv__crdt_bulk *b)
{
    if (b == NULL)
        return;
    b->cbs.arrived = NULL; /* no stream completes while the mux is freed: all are cancelled */
    vv_stream_mux_free(b->mux);
    vv_free(b);
}

bool vv__crdt_bulk_recv(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                        const uint8_t *data, size_t len)
{
    return vv_stream_mux_recv(b->mux, peer, data, len);
}

void vv__crdt_bulk_peer(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES], bool up)
{
    vv_stream_mux_peer(b->mux, peer, up);
}

bool vv__crdt_bulk_skip(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                        const char *id)
{
    for (struct out *o = b->outs; o; o = o->next) {
        if (memcmp(o->peer, peer, VV_NODE_ID_BYTES) == 0 && strcmp(o->id, id) == 0) {
            b->stats.skipped++;
            return true;
        }
    }
    return false;
}

int vv__crdt_bulk_send(struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                       const char *id, const uint8_t creator[VV_NODE_ID_BYTES], const uint8_t *u,
                       size_t len)
{
    if (vv__crdt_bulk_skip(b, peer, id))
        return VV_EBUSY;
    size_t idlen = strlen(id);
    uint8_t meta[1 + VV_NODE_ID_BYTES + VV_CRDT_DOC_ID_MAX_BYTES];
    meta[0] = VV__CRDT_STREAM_UPDATE;
    memcpy(meta + 1, creator, VV_NODE_ID_BYTES);
    memcpy(meta + 1 + VV_NODE_ID_BYTES, id, idlen);
    struct out *o = vv_xcalloc(1, sizeof(*o));
    o->b = b;
    memcpy(o->peer, peer, VV_NODE_ID_BYTES);
    memcpy(o->id, id, idlen + 1);
    o->u = vv_xmalloc(len);
    memcpy(o->u, u, len);
    o->len = len;
    int rc = vv_stream_open(b->mux, peer, meta, 1 + VV_NODE_ID_BYTES + idlen, len, produce,
                            out_done, o, &o->s);
    if (rc != 0) {
        b->stats.send_failures++;
        vv_free(o->u);
        vv_free(o);
        return rc;
    }
    o->next = b->outs;
    b->outs = o;
    b->stats.in_flight_bytes += len;
    return 0;
}

bool vv__crdt_bulk_receiving(const struct vv__crdt_bulk *b, const uint8_t peer[VV_NODE_ID_BYTES],
                             const char *id)
{
    for (const struct in *i = b->ins; i; i = i->next)
        if (memcmp(i->peer, peer, VV_NODE_ID_BYTES) == 0 && strcmp(i->id, id) == 0)
            return true;
    return false;
}

const struct vv__crdt_bulk_stats *vv__crdt_bulk_stats(const struct vv__crdt_bulk *b)
{
    return &b->stats;
}

struct vv_stream_mux *vv__crdt_bulk_mux(struct vv__crdt_bulk *b)
{
    return b->mux;
}
