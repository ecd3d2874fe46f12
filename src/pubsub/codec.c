/*
 * Bodies of the pubsub channel's frames (docs/protocol.md, "Pubsub messages, channel 2").
 *
 * Decoding is strict: exact element counts, exact MessagePack types, every bound of
 * pubsub_wire.h checked before anything is allocated, topics and addresses through the
 * wire's text check. A decoded CONTROL gets its arrays in one allocation whose size follows
 * from list lengths already checked against their bounds, so a hostile frame costs at most
 * a few hundred kilobytes here, whatever it declares.
 */
#include <string.h>

#include "vivim/common.h"
#include "vivim/pubsub_wire.h"

#define BAD VV_EPUBSUB_MALFORMED

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    if (n > 0) /* an empty value may come with a NULL pointer, which memcpy must not get */
        msgpack_pack_str_body(pk, s, n);
}

static void pack_bin(msgpack_packer *pk, const void *b, size_t n)
{
    msgpack_pack_bin(pk, n);
    if (n > 0)
        msgpack_pack_bin_body(pk, b, n);
}

static int get_topic(const msgpack_object *o, const char **t, size_t *n)
{
    if (vv_wire_get_str(o, VV_PUBSUB_MAX_TOPIC_BYTES, t, n) != 0 || *n == 0)
        return BAD;
    return 0;
}

static int get_ids(const msgpack_object *o, uint32_t min, uint32_t max, const uint8_t **out,
                   uint32_t *n)
{
    const msgpack_object *it;
    if (vv_wire_get_array(o, min, max, &it, n) != 0)
        return BAD;
    for (uint32_t i = 0; i < *n; i++)
        if (vv_wire_get_bin(&it[i], VV_PUBSUB_ID_BYTES, VV_PUBSUB_ID_BYTES, &out[i], NULL) != 0)
            return BAD;
    return 0;
}

/* ---- SUBSCRIPTIONS: [[subscribe bool, topic str], ...] (1..256) ---------------------------- */

int vv_pubsub_subs_encode(msgpack_packer *pk, const struct vv_pubsub_sub *subs, uint32_t n)
{
    if (n == 0 || n > VV_PUBSUB_MAX_SUBS_PER_FRAME)
        return VV_EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (!vv_pubsub_topic_ok(subs[i].topic, subs[i].topic_len))
            return VV_EINVAL;
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_array(pk, 2);
        if (subs[i].subscribe)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        pack_str(pk, subs[i].topic, subs[i].topic_len);
    }
    return 0;
}

int vv_pubsub_subs_decode(const msgpack_object *body, struct vv_pubsub_sub *out, uint32_t cap,
                          uint32_t *n)
{
    const msgpack_object *it;
    uint32_t k;
    if (vv_wire_get_array(body, 1, VV_PUBSUB_MAX_SUBS_PER_FRAME, &it, &k) != 0 || k > cap)
        return BAD;
    for (uint32_t i = 0; i < k; i++) {
        const msgpack_object *e;
        if (vv_wire_get_array(&it[i], 2, 2, &e, NULL) != 0 ||
            vv_wire_get_bool(&e[0], &out[i].subscribe) != 0 ||
            get_topic(&e[1], &out[i].topic, &out[i].topic_len) != 0)
            return BAD;
    }
    *n = k;
    return 0;
}

/* ---- MESSAGE: [from, origin, seqno, topic, data, sig] ---------------------------------------- */

static bool msg_ok(const struct vv_pubsub_msg *m)
{
    return m->from && m->origin && m->sig && (m->data || m->data_len == 0) &&
           m->data_len <= VV_PUBSUB_MAX_DATA_BYTES && vv_pubsub_topic_ok(m->topic, m->topic_len);
}

int vv_pubsub_msg_encode(msgpack_packer *pk, const struct vv_pubsub_msg *m)
{
    if (!msg_ok(m))
        return VV_EINVAL;
    msgpack_pack_array(pk, 6);
    pack_bin(pk, m->from, VV_NODE_ID_BYTES);
    pack_bin(pk, m->origin, VV_ED25519_PK_BYTES);
    msgpack_pack_uint64(pk, m->seqno);
    pack_str(pk, m->topic, m->topic_len);
    pack_bin(pk, m->data, m->data_len);
    pack_bin(pk, m->sig, VV_PUBSUB_SIG_BYTES);
    return 0;
}

int vv_pubsub_msg_decode(const msgpack_object *body, struct vv_pubsub_msg *out)
{
    const msgpack_object *e;
    struct vv_pubsub_msg m;
    if (vv_wire_get_array(body, 6, 6, &e, NULL) != 0 ||
        vv_wire_get_bin(&e[0], VV_NODE_ID_BYTES, VV_NODE_ID_BYTES, &m.from, NULL) != 0 ||
        vv_wire_get_bin(&e[1], VV_ED25519_PK_BYTES, VV_ED25519_PK_BYTES, &m.origin, NULL) != 0 ||
        vv_wire_get_u64(&e[2], UINT64_MAX, &m.seqno) != 0 ||
        get_topic(&e[3], &m.topic, &m.topic_len) != 0 ||
        vv_wire_get_bin(&e[4], 0, VV_PUBSUB_MAX_DATA_BYTES, &m.data, &m.data_len) != 0 ||
        vv_wire_get_bin(&e[5], VV_PUBSUB_SIG_BYTES, VV_PUBSUB_SIG_BYTES, &m.sig, NULL) != 0)
        return BAD;
    /* from is redundant with origin (it is its hash); a sender that gets it wrong is broken
     * or lying about whom the message is from, so it is refused here, before anything else
     * spends time on the message. */
    uint8_t id[VV_NODE_ID_BYTES];
    vv_identity_node_id(m.origin, id);
    if (memcmp(id, m.from, VV_NODE_ID_BYTES) != 0)
        return VV_EPUBSUB_ORIGIN;
    *out = m;
    return 0;
}

/* ---- CONTROL: [ihave, iwant, graft, prune, idontwant] -------------------------------------- */

int vv_pubsub_control_encode(msgpack_packer *pk, const struct vv_pubsub_control *c)
{
    uint64_t ihave_ids = 0;
    if (c->n_ihave > VV_PUBSUB_MAX_IHAVE_TOPICS || c->n_iwant > VV_PUBSUB_MAX_CONTROL_IDS ||
        c->n_graft > VV_PUBSUB_MAX_GRAFTS || c->n_prune > VV_PUBSUB_MAX_PRUNES ||
        c->n_idontwant > VV_PUBSUB_MAX_CONTROL_IDS ||
        c->n_ihave + c->n_iwant + c->n_graft + c->n_prune + c->n_idontwant == 0)
        return VV_EINVAL;
    for (uint32_t i = 0; i < c->n_ihave; i++) {
        if (!vv_pubsub_topic_ok(c->ihave[i].topic, c->ihave[i].topic_len) || c->ihave[i].n_ids == 0)
            return VV_EINVAL;
        ihave_ids += c->ihave[i].n_ids;
    }
    if (ihave_ids > VV_PUBSUB_MAX_CONTROL_IDS)
        return VV_EINVAL;
    for (uint32_t i = 0; i < c->n_graft; i++)
        if (!vv_pubsub_topic_ok(c->graft[i].topic, c->graft[i].topic_len))
            return VV_EINVAL;
    for (uint32_t i = 0; i < c->n_prune; i++) {
        const struct vv_pubsub_prune *p = &c->prune[i];
        if (!vv_pubsub_topic_ok(p->topic, p->topic_len) || p->backoff_s > VV_PUBSUB_MAX_BACKOFF_S ||
            p->n_px > VV_PUBSUB_MAX_PX)
            return VV_EINVAL;
        for (uint32_t j = 0; j < p->n_px; j++) {
            const struct vv_pubsub_px *x = &p->px[j];
            if (x->address &&
                (x->address_len > VV_PUBSUB_MAX_ADDRESS_BYTES ||
                 (x->address_len > 0 && !vv_pubsub_topic_ok(x->address, x->address_len))))
                return VV_EINVAL;
        }
    }
    msgpack_pack_array(pk, 5);
    msgpack_pack_array(pk, c->n_ihave);
    for (uint32_t i = 0; i < c->n_ihave; i++) {
        msgpack_pack_array(pk, 2);
        pack_str(pk, c->ihave[i].topic, c->ihave[i].topic_len);
        msgpack_pack_array(pk, c->ihave[i].n_ids);
        for (uint32_t j = 0; j < c->ihave[i].n_ids; j++)
            pack_bin(pk, c->ihave[i].ids[j], VV_PUBSUB_ID_BYTES);
    }
    msgpack_pack_array(pk, c->n_iwant);
    for (uint32_t i = 0; i < c->n_iwant; i++)
        pack_bin(pk, c->iwant[i], VV_PUBSUB_ID_BYTES);
    msgpack_pack_array(pk, c->n_graft);
    for (uint32_t i = 0; i < c->n_graft; i++)
        pack_str(pk, c->graft[i].topic, c->graft[i].topic_len);
    msgpack_pack_array(pk, c->n_prune);
    for (uint32_t i = 0; i < c->n_prune; i++) {
        const struct vv_pubsub_prune *p = &c->prune[i];
        msgpack_pack_array(pk, 3);
        pack_str(pk, p->topic, p->topic_len);
        msgpack_pack_uint32(pk, p->backoff_s);
        msgpack_pack_array(pk, p->n_px);
        for (uint32_t j = 0; j < p->n_px; j++) {
            msgpack_pack_array(pk, 2);
            pack_bin(pk, p->px[j].peer, VV_NODE_ID_BYTES);
            if (p->px[j].address)
                pack_str(pk, p->px[j].address, p->px[j].address_len);
            else
                msgpack_pack_nil(pk);
        }
    }
    msgpack_pack_array(pk, c->n_idontwant);
    for (uint32_t i = 0; i < c->n_idontwant; i++)
        pack_bin(pk, c->idontwant[i], VV_PUBSUB_ID_BYTES);
    return 0;
}

static int decode_control(const msgpack_object *lists, struct vv_pubsub_control *c,
                          struct vv_pubsub_ihave *ihave, const uint8_t **ids,
                          struct vv_pubsub_topic_ref *graft, struct vv_pubsub_prune *prune,
                          struct vv_pubsub_px *px)
{
    const msgpack_object *it;
    uint32_t n, used = 0; /* IDs taken from ids[] so far */

    /* ihave: [[topic, [id, ...]], ...], 1..5000 IDs per entry, 5000 in all */
    vv_wire_get_array(&lists[0], 0, VV_PUBSUB_MAX_IHAVE_TOPICS, &it, &n);
    uint32_t ihave_ids = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *e;
        uint32_t k;
        if (vv_wire_get_array(&it[i], 2, 2, &e, NULL) != 0 ||
            get_topic(&e[0], &ihave[i].topic, &ihave[i].topic_len) != 0 ||
            get_ids(&e[1], 1, VV_PUBSUB_MAX_CONTROL_IDS - ihave_ids, ids + used, &k) != 0)
            return BAD;
        ihave[i].ids = ids + used;
        ihave[i].n_ids = k;
        ihave_ids += k;
        used += k;
    }
    c->ihave = ihave;
    c->n_ihave = n;

    /* iwant: [id, ...] */
    if (get_ids(&lists[1], 0, VV_PUBSUB_MAX_CONTROL_IDS, ids + used, &n) != 0)
        return BAD;
    c->iwant = ids + used;
    c->n_iwant = n;
    used += n;

    /* graft: [topic, ...] */
    vv_wire_get_array(&lists[2], 0, VV_PUBSUB_MAX_GRAFTS, &it, &n);
    for (uint32_t i = 0; i < n; i++)
        if (get_topic(&it[i], &graft[i].topic, &graft[i].topic_len) != 0)
            return BAD;
    c->graft = graft;
    c->n_graft = n;

    /* prune: [[topic, backoff seconds, [[peer id, address str or nil], ...]], ...] */
    vv_wire_get_array(&lists[3], 0, VV_PUBSUB_MAX_PRUNES, &it, &n);
    uint32_t px_used = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *e, *xs;
        uint64_t backoff;
        uint32_t k;
        if (vv_wire_get_array(&it[i], 3, 3, &e, NULL) != 0 ||
            get_topic(&e[0], &prune[i].topic, &prune[i].topic_len) != 0 ||
            vv_wire_get_u64(&e[1], VV_PUBSUB_MAX_BACKOFF_S, &backoff) != 0 ||
            vv_wire_get_array(&e[2], 0, VV_PUBSUB_MAX_PX, &xs, &k) != 0)
            return BAD;
        prune[i].backoff_s = (uint32_t)backoff;
        prune[i].px = px + px_used;
        prune[i].n_px = k;
        for (uint32_t j = 0; j < k; j++) {
            struct vv_pubsub_px *x = &px[px_used++];
            const msgpack_object *pe;
            if (vv_wire_get_array(&xs[j], 2, 2, &pe, NULL) != 0 ||
                vv_wire_get_bin(&pe[0], VV_NODE_ID_BYTES, VV_NODE_ID_BYTES, &x->peer, NULL) != 0)
                return BAD;
            x->address = NULL;
            x->address_len = 0;
            if (pe[1].type != MSGPACK_OBJECT_NIL &&
                vv_wire_get_str(&pe[1], VV_PUBSUB_MAX_ADDRESS_BYTES, &x->address,
                                &x->address_len) != 0)
                return BAD;
        }
    }
    c->prune = prune;
    c->n_prune = n;

    /* idontwant: [id, ...] */
    if (get_ids(&lists[4], 0, VV_PUBSUB_MAX_CONTROL_IDS, ids + used, &n) != 0)
        return BAD;
    c->idontwant = ids + used;
    c->n_idontwant = n;

    if (c->n_ihave + c->n_iwant + c->n_graft + c->n_prune + c->n_idontwant == 0)
        return BAD; /* a CONTROL that says nothing */
    return 0;
}

int vv_pubsub_control_decode(const msgpack_object *body, struct vv_pubsub_control *out)
{
    memset(out, 0, sizeof(*out));
    const msgpack_object *lists, *it;
    uint32_t n_ihave, n_iwant, n_graft, n_prune, n_idontwant;
    /* The outer shape and each list's length against its bound first: they size the one
     * allocation below. */
    if (vv_wire_get_array(body, 5, 5, &lists, NULL) != 0 ||
        vv_wire_get_array(&lists[0], 0, VV_PUBSUB_MAX_IHAVE_TOPICS, &it, &n_ihave) != 0 ||
        vv_wire_get_array(&lists[1], 0, VV_PUBSUB_MAX_CONTROL_IDS, &it, &n_iwant) != 0 ||
        vv_wire_get_array(&lists[2], 0, VV_PUBSUB_MAX_GRAFTS, &it, &n_graft) != 0 ||
        vv_wire_get_array(&lists[3], 0, VV_PUBSUB_MAX_PRUNES, &it, &n_prune) != 0 ||
        vv_wire_get_array(&lists[4], 0, VV_PUBSUB_MAX_CONTROL_IDS, &it, &n_idontwant) != 0)
        return BAD;
    size_t n_ids = (size_t)VV_PUBSUB_MAX_CONTROL_IDS + n_iwant + n_idontwant;
    size_t n_px = (size_t)n_prune * VV_PUBSUB_MAX_PX;
    /* Largest case: 64 * 24 + 15000 * 8 + 64 * 16 + 64 * 32 + 1024 * 24 bytes ≈ 150 KB. */
    size_t sz = n_ihave * sizeof(struct vv_pubsub_ihave) + n_ids * sizeof(const uint8_t *) +
                n_graft * sizeof(struct vv_pubsub_topic_ref) +
                n_prune * sizeof(struct vv_pubsub_prune) + n_px * sizeof(struct vv_pubsub_px);
    char *block = vv_xmalloc(sz ? sz : 1), *p = block;
    struct vv_pubsub_ihave *ihave = (struct vv_pubsub_ihave *)p;
    p += n_ihave * sizeof(*ihave);
    struct vv_pubsub_prune *prune = (struct vv_pubsub_prune *)p;
    p += n_prune * sizeof(*prune);
    struct vv_pubsub_px *px = (struct vv_pubsub_px *)p;
    p += n_px * sizeof(*px);
    struct vv_pubsub_topic_ref *graft = (struct vv_pubsub_topic_ref *)p;
    p += n_graft * sizeof(*graft);
    const uint8_t **ids = (const uint8_t **)p;
    int rc = decode_control(lists, out, ihave, ids, graft, prune, px);
    if (rc != 0) {
        vv_free(block);
        memset(out, 0, sizeof(*out));
        return rc;
    }
    out->block_ = block;
    return 0;
}

void vv_pubsub_control_free(struct vv_pubsub_control *c)
{
    if (c == NULL)
        return;
    vv_free(c->block_);
    memset(c, 0, sizeof(*c));
}
