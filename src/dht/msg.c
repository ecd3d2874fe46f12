/*
 * The DHT's message codec (include/vivim/dht_msg.h; docs/protocol.md, "DHT messages,
 * channel 1"). Encoders pack into the caller's fixed buffer through a bounded msgpack-c
 * writer, so nothing is allocated and an answer over its budget is simply re-encoded with
 * shorter lists. Decoders read the msgpack objects of a frame vv_wire_decode checked, through
 * wire.h's exact-type accessors.
 */
#include <string.h>

#include <sodium.h>

#include "vivim/common.h"
#include "vivim/dht_msg.h"

#define VV_DHT_RECORD_FIELDS 7

/* ---- a bounded writer ------------------------------------------------------------------ */

struct fixed {
    uint8_t *p;
    size_t cap, len; /* len counts on past cap, so an overflow is seen at the end */
};

static int fixed_write(void *data, const char *buf, size_t n)
{
    struct fixed *f = data;
    if (n > 0 && f->len <= f->cap && n <= f->cap - f->len)
        memcpy(f->p + f->len, buf, n);
    f->len += n;
    return 0;
}

static void pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

static void pack_str(msgpack_packer *pk, const char *p, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, p, n);
}

static void pack_zeros(msgpack_packer *pk, size_t n)
{
    static const uint8_t zeros[64];
    msgpack_pack_bin(pk, n);
    while (n > 0) {
        size_t k = VV_MIN(n, sizeof(zeros));
        msgpack_pack_bin_body(pk, zeros, k);
        n -= k;
    }
}

static void pack_contact(msgpack_packer *pk, const struct vv_dht_contact *c)
{
    uint8_t a[VV_DHT_ADDR_COMPACT_MAX];
    msgpack_pack_array(pk, 2);
    pack_bin(pk, c->id, VV_DHT_ID_BYTES);
    pack_bin(pk, a, vv_dht_addr_to_compact(&c->addr, a));
}

static void pack_record(msgpack_packer *pk, const struct vv_dht_content_record *r)
{
    msgpack_pack_array(pk, VV_DHT_RECORD_FIELDS);
    pack_str(pk, r->content_id, r->content_id_len);
    pack_str(pk, r->content_type, r->content_type_len);
    pack_bin(pk, r->address, 32);
    msgpack_pack_uint64(pk, r->size);
    msgpack_pack_uint64(pk, r->created_ms);
    msgpack_pack_uint64(pk, r->expires_ms);
    msgpack_pack_uint64(pk, r->replication_factor);
}

/* ---- codes and budget ----------------------------------------------------------------- */

uint16_t vv_dht_answer_code(int err)
{
    switch (err) {
    case VV_EDHT_TOKEN:
        return VV_DHT_ANSWER_TOKEN;
    case VV_EDHT_STALE_SEQ:
        return VV_DHT_ANSWER_STALE_SEQ;
    case VV_EDHT_TOO_LARGE:
        return VV_DHT_ANSWER_TOO_LARGE;
    case VV_EDHT_EXPIRY:
        return VV_DHT_ANSWER_EXPIRY;
    case VV_EDHT_QUOTA:
        return VV_DHT_ANSWER_QUOTA;
    case VV_EDHT_FULL:
        return VV_DHT_ANSWER_FULL;
    case VV_EDHT_SIGNATURE:
        return VV_DHT_ANSWER_SIGNATURE;
    case VV_EDHT_KEY_MISMATCH:
        return VV_DHT_ANSWER_KEY;
    case VV_EDHT_MALFORMED:
        return 3; /* bad request */
    default:
        return 5; /* internal */
    }
}

size_t vv_dht_reply_budget(size_t req_len, bool verified)
{
    if (verified || req_len >= VV_DHT_DATAGRAM_MAX_BYTES / 2)
        return VV_DHT_DATAGRAM_MAX_BYTES;
    return 2 * req_len;
}

/* ---- requests ------------------------------------------------------------------------- */

static bool is_request(uint16_t type)
{
    return type >= VV_DHT_MSG_PING && type <= VV_DHT_MSG_ADD_PROVIDER;
}

/* Elements of each request's body, without the optional pad. */
static uint32_t request_fields(uint16_t type)
{
    switch (type) {
    case VV_DHT_MSG_PUT_VALUE:
        return 7;
    case VV_DHT_MSG_ADD_PROVIDER:
        return 5;
    default:
        return 1;
    }
}

int vv_dht_request_encode(const struct vv_dht_request *rq, uint64_t request_id, uint8_t *out,
                          size_t cap, size_t *len)
{
    if (!is_request(rq->type) || request_id == 0 || rq->pad_len > VV_DHT_PAD_MAX_BYTES)
        return VV_EINVAL;
    if (rq->type == VV_DHT_MSG_PUT_VALUE && rq->value.len > VV_DHT_VALUE_MAX_BYTES)
        return VV_EINVAL;
    if (rq->type == VV_DHT_MSG_ADD_PROVIDER &&
        (rq->record.content_id_len == 0 || rq->record.content_id_len > VV_DHT_CONTENT_ID_MAX ||
         rq->record.content_type_len > VV_DHT_CONTENT_TYPE_MAX))
        return VV_EINVAL;
    struct fixed f = {out, cap, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f, fixed_write);
    vv_wire_begin(&pk, rq->type, request_id);
    uint32_t n = request_fields(rq->type) + (rq->pad_len > 0);
    msgpack_pack_array(&pk, n);
    pack_bin(&pk, rq->target, VV_DHT_ID_BYTES);
    if (rq->type == VV_DHT_MSG_PUT_VALUE) {
        msgpack_pack_uint64(&pk, rq->value.seq);
        msgpack_pack_uint64(&pk, rq->value.expires_ms);
        pack_bin(&pk, rq->value.value, rq->value.len);
        pack_bin(&pk, rq->value.sig, VV_DHT_SIG_BYTES);
        pack_bin(&pk, rq->value.pk, VV_DHT_PK_BYTES);
        pack_bin(&pk, rq->token, VV_DHT_TOKEN_BYTES);
    } else if (rq->type == VV_DHT_MSG_ADD_PROVIDER) {
        pack_record(&pk, &rq->record);
        pack_bin(&pk, rq->token, VV_DHT_TOKEN_BYTES);
        pack_bin(&pk, rq->provider_pk, VV_DHT_PK_BYTES);
        pack_bin(&pk, rq->provider_sig, VV_DHT_SIG_BYTES);
    }
    if (rq->pad_len > 0)
        pack_zeros(&pk, rq->pad_len);
    *len = f.len;
    return f.len <= cap ? 0 : VV_ELIMIT;
}

static int get_bytes(const msgpack_object *o, uint8_t *out, size_t n)
{
    const uint8_t *p;
    if (vv_wire_get_bin(o, n, n, &p, NULL) != 0)
        return VV_EDHT_MALFORMED;
    memcpy(out, p, n);
    return 0;
}

static int get_record(const msgpack_object *o, struct vv_dht_content_record *r)
{
    const msgpack_object *f;
    uint64_t repl;
    memset(r, 0, sizeof(*r));
    if (vv_wire_get_array(o, VV_DHT_RECORD_FIELDS, VV_DHT_RECORD_FIELDS, &f, NULL) != 0 ||
        vv_wire_get_str(&f[0], VV_DHT_CONTENT_ID_MAX, &r->content_id, &r->content_id_len) != 0 ||
        r->content_id_len == 0 ||
        vv_wire_get_str(&f[1], VV_DHT_CONTENT_TYPE_MAX, &r->content_type, &r->content_type_len) !=
            0 ||
        get_bytes(&f[2], r->address, 32) != 0 ||
        vv_wire_get_u64(&f[3], UINT64_MAX, &r->size) != 0 ||
        vv_wire_get_u64(&f[4], UINT64_MAX, &r->created_ms) != 0 ||
        vv_wire_get_u64(&f[5], UINT64_MAX, &r->expires_ms) != 0 ||
        vv_wire_get_u64(&f[6], UINT8_MAX, &repl) != 0)
        return VV_EDHT_MALFORMED;
    r->replication_factor = (uint8_t)repl;
    return 0;
}

int vv_dht_request_decode(uint16_t type, const msgpack_object *body, struct vv_dht_request *out)
{
    memset(out, 0, sizeof(*out));
    if (!is_request(type))
        return VV_EWIRE_UNKNOWN_TYPE;
    out->type = type;
    uint32_t want = request_fields(type), n;
    const msgpack_object *f;
    if (vv_wire_get_array(body, want, want + 1, &f, &n) != 0 ||
        get_bytes(&f[0], out->target, VV_DHT_ID_BYTES) != 0)
        return VV_EDHT_MALFORMED;
    if (type == VV_DHT_MSG_PUT_VALUE) {
        struct vv_dht_value *v = &out->value;
        memcpy(v->key, out->target, VV_DHT_ID_BYTES);
        if (vv_wire_get_u64(&f[1], UINT64_MAX, &v->seq) != 0 ||
            vv_wire_get_u64(&f[2], UINT64_MAX, &v->expires_ms) != 0 ||
            vv_wire_get_bin(&f[3], 0, VV_DHT_VALUE_MAX_BYTES, &v->value, &v->len) != 0 ||
            get_bytes(&f[4], v->sig, VV_DHT_SIG_BYTES) != 0 ||
            get_bytes(&f[5], v->pk, VV_DHT_PK_BYTES) != 0 ||
            get_bytes(&f[6], out->token, VV_DHT_TOKEN_BYTES) != 0)
            return VV_EDHT_MALFORMED;
    } else if (type == VV_DHT_MSG_ADD_PROVIDER) {
        if (get_record(&f[1], &out->record) != 0 ||
            get_bytes(&f[2], out->token, VV_DHT_TOKEN_BYTES) != 0 ||
            get_bytes(&f[3], out->provider_pk, VV_DHT_PK_BYTES) != 0 ||
            get_bytes(&f[4], out->provider_sig, VV_DHT_SIG_BYTES) != 0)
            return VV_EDHT_MALFORMED;
    }
    if (n == want + 1) {
        if (vv_wire_get_bin(&f[want], 0, VV_DHT_PAD_MAX_BYTES, &out->pad, &out->pad_len) != 0 ||
            out->pad_len == 0)
            return VV_EDHT_MALFORMED;
    }
    return 0;
}

/* ---- replies -------------------------------------------------------------------------- */

static void pack_nodes(msgpack_packer *pk, const struct vv_dht_contact *c, size_t n)
{
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        pack_contact(pk, &c[i]);
}

/* Encodes r with the given list lengths; returns the frame's length (maybe > cap). */
static size_t encode_reply(const struct vv_dht_reply *r, uint64_t request_id, size_t n_values,
                           size_t n_providers, size_t n_nodes, uint32_t omitted, uint8_t *out,
                           size_t cap)
{
    struct fixed f = {out, cap, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f, fixed_write);
    vv_wire_begin(&pk, VV_DHT_MSG_REPLY, request_id);
    uint8_t a[VV_DHT_ADDR_COMPACT_MAX];
    switch (r->type) {
    case VV_DHT_MSG_PING:
        msgpack_pack_array(&pk, 3);
        pack_bin(&pk, r->pk, VV_DHT_PK_BYTES);
        pack_bin(&pk, r->sig, VV_DHT_SIG_BYTES);
        pack_bin(&pk, a, vv_dht_addr_to_compact(&r->observed, a));
        break;
    case VV_DHT_MSG_FIND_NODE:
        msgpack_pack_array(&pk, 1);
        pack_nodes(&pk, r->nodes, n_nodes);
        break;
    case VV_DHT_MSG_GET_VALUE:
        msgpack_pack_array(&pk, 4);
        msgpack_pack_array(&pk, (uint32_t)n_values);
        for (size_t i = 0; i < n_values; i++) {
            const struct vv_dht_value *v = &r->values[i];
            msgpack_pack_array(&pk, 5);
            pack_bin(&pk, v->pk, VV_DHT_PK_BYTES);
            msgpack_pack_uint64(&pk, v->seq);
            msgpack_pack_uint64(&pk, v->expires_ms);
            pack_bin(&pk, v->value, v->len);
            pack_bin(&pk, v->sig, VV_DHT_SIG_BYTES);
        }
        msgpack_pack_uint32(&pk, omitted);
        pack_nodes(&pk, r->nodes, n_nodes);
        pack_bin(&pk, r->token, VV_DHT_TOKEN_BYTES);
        break;
    case VV_DHT_MSG_GET_PROVIDERS:
        msgpack_pack_array(&pk, 4);
        if (r->has_record)
            pack_record(&pk, &r->record);
        else
            msgpack_pack_nil(&pk);
        msgpack_pack_array(&pk, (uint32_t)n_providers);
        for (size_t i = 0; i < n_providers; i++) {
            msgpack_pack_array(&pk, 3);
            pack_bin(&pk, r->providers[i].c.id, VV_DHT_ID_BYTES);
            pack_bin(&pk, a, vv_dht_addr_to_compact(&r->providers[i].c.addr, a));
            msgpack_pack_uint64(&pk, r->providers[i].expires_ms);
        }
        pack_nodes(&pk, r->nodes, n_nodes);
        pack_bin(&pk, r->token, VV_DHT_TOKEN_BYTES);
        break;
    default: /* PUT_VALUE, ADD_PROVIDER: stored */
        msgpack_pack_true(&pk);
        break;
    }
    return f.len;
}

/* r's omitted count plus the values beyond the first nv, saturating. */
static uint32_t add_omitted(const struct vv_dht_reply *r, size_t nv)
{
    uint64_t n = (uint64_t)r->omitted + (r->n_values - nv);
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

int vv_dht_reply_encode(const struct vv_dht_reply *r, uint64_t request_id, size_t budget,
                        uint8_t *out, size_t cap, size_t *len, struct vv_dht_reply *sent)
{
    if (!is_request(r->type) || request_id == 0 || r->n_nodes > VV_DHT_MAX_NODES ||
        r->n_values > VV_DHT_MAX_VALUES || r->n_providers > VV_DHT_MAX_PROVIDERS)
        return VV_EINVAL;
    for (size_t i = 0; i < r->n_values; i++)
        if (r->values[i].len > VV_DHT_VALUE_MAX_BYTES)
            return VV_EINVAL;
    size_t limit = VV_MIN(budget, cap);
    size_t nv = r->n_values, np = r->n_providers, nn = r->n_nodes;
    /* Values first: with no providers or nodes, as many as fit. A value that cannot fit is
     * counted in `omitted`; the encoding of omitted may grow by a few bytes, so it is counted
     * with the value left out. */
    while (nv > 0 && encode_reply(r, request_id, nv, 0, 0, add_omitted(r, nv), out, 0) > limit)
        nv--;
    uint32_t omitted = add_omitted(r, nv);
    while (np > 0 && encode_reply(r, request_id, nv, np, 0, omitted, out, 0) > limit)
        np--;
    while (nn > 0 && encode_reply(r, request_id, nv, np, nn, omitted, out, 0) > limit)
        nn--;
    size_t n = encode_reply(r, request_id, nv, np, nn, omitted, out, cap);
    if (n > limit)
        return VV_EDHT_NO_ROOM;
    *len = n;
    if (sent) {
        *sent = *r;
        sent->n_values = nv;
        sent->n_providers = np;
        sent->n_nodes = nn;
        sent->omitted = omitted;
    }
    return 0;
}

static int get_contact(const msgpack_object *o, struct vv_dht_contact *c)
{
    const msgpack_object *f;
    const uint8_t *a;
    size_t an;
    if (vv_wire_get_array(o, 2, 2, &f, NULL) != 0 ||
        get_bytes(&f[0], c->id, VV_DHT_ID_BYTES) != 0 ||
        vv_wire_get_bin(&f[1], 0, VV_DHT_ADDR_COMPACT_MAX, &a, &an) != 0 ||
        vv_dht_addr_from_compact(a, an, &c->addr) != 0)
        return VV_EDHT_MALFORMED;
    return 0;
}

static int get_nodes(const msgpack_object *o, struct vv_dht_reply *r)
{
    const msgpack_object *f;
    uint32_t n;
    if (vv_wire_get_array(o, 0, VV_DHT_MAX_NODES, &f, &n) != 0)
        return VV_EDHT_MALFORMED;
    for (uint32_t i = 0; i < n; i++)
        if (get_contact(&f[i], &r->nodes[i]) != 0)
            return VV_EDHT_MALFORMED;
    r->n_nodes = n;
    return 0;
}

int vv_dht_reply_decode(uint16_t request_type, const msgpack_object *body, struct vv_dht_reply *out)
{
    memset(out, 0, sizeof(*out));
    if (!is_request(request_type))
        return VV_EDHT_MALFORMED;
    out->type = request_type;
    const msgpack_object *f, *g;
    uint32_t n;
    bool ok;
    const uint8_t *a;
    size_t an;
    uint64_t omitted;
    switch (request_type) {
    case VV_DHT_MSG_PING:
        if (vv_wire_get_array(body, 3, 3, &f, NULL) != 0 ||
            get_bytes(&f[0], out->pk, VV_DHT_PK_BYTES) != 0 ||
            get_bytes(&f[1], out->sig, VV_DHT_SIG_BYTES) != 0 ||
            vv_wire_get_bin(&f[2], 0, VV_DHT_ADDR_COMPACT_MAX, &a, &an) != 0 ||
            vv_dht_addr_from_compact(a, an, &out->observed) != 0)
            return VV_EDHT_MALFORMED;
        return 0;
    case VV_DHT_MSG_FIND_NODE:
        if (vv_wire_get_array(body, 1, 1, &f, NULL) != 0 || get_nodes(&f[0], out) != 0)
            return VV_EDHT_MALFORMED;
        return 0;
    case VV_DHT_MSG_GET_VALUE:
        if (vv_wire_get_array(body, 4, 4, &f, NULL) != 0 ||
            vv_wire_get_array(&f[0], 0, VV_DHT_MAX_VALUES, &g, &n) != 0)
            return VV_EDHT_MALFORMED;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *v;
            struct vv_dht_value *val = &out->values[i];
            if (vv_wire_get_array(&g[i], 5, 5, &v, NULL) != 0 ||
                get_bytes(&v[0], val->pk, VV_DHT_PK_BYTES) != 0 ||
                vv_wire_get_u64(&v[1], UINT64_MAX, &val->seq) != 0 ||
                vv_wire_get_u64(&v[2], UINT64_MAX, &val->expires_ms) != 0 ||
                vv_wire_get_bin(&v[3], 0, VV_DHT_VALUE_MAX_BYTES, &val->value, &val->len) != 0 ||
                get_bytes(&v[4], val->sig, VV_DHT_SIG_BYTES) != 0)
                return VV_EDHT_MALFORMED;
        }
        out->n_values = n;
        ok = vv_wire_get_u64(&f[1], UINT32_MAX, &omitted) == 0 && get_nodes(&f[2], out) == 0 &&
             get_bytes(&f[3], out->token, VV_DHT_TOKEN_BYTES) == 0;
        out->omitted = (uint32_t)omitted;
        return ok ? 0 : VV_EDHT_MALFORMED;
    case VV_DHT_MSG_GET_PROVIDERS:
        if (vv_wire_get_array(body, 4, 4, &f, NULL) != 0)
            return VV_EDHT_MALFORMED;
        if (f[0].type != MSGPACK_OBJECT_NIL) {
            if (get_record(&f[0], &out->record) != 0)
                return VV_EDHT_MALFORMED;
            out->has_record = true;
        }
        if (vv_wire_get_array(&f[1], 0, VV_DHT_MAX_PROVIDERS, &g, &n) != 0)
            return VV_EDHT_MALFORMED;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *p;
            struct vv_dht_provider *pr = &out->providers[i];
            if (vv_wire_get_array(&g[i], 3, 3, &p, NULL) != 0 ||
                get_bytes(&p[0], pr->c.id, VV_DHT_ID_BYTES) != 0 ||
                vv_wire_get_bin(&p[1], 0, VV_DHT_ADDR_COMPACT_MAX, &a, &an) != 0 ||
                vv_dht_addr_from_compact(a, an, &pr->c.addr) != 0 ||
                vv_wire_get_u64(&p[2], UINT64_MAX, &pr->expires_ms) != 0)
                return VV_EDHT_MALFORMED;
        }
        out->n_providers = n;
        if (n > 0 && !out->has_record)
            return VV_EDHT_MALFORMED; /* providers of what? */
        if (get_nodes(&f[2], out) != 0 || get_bytes(&f[3], out->token, VV_DHT_TOKEN_BYTES) != 0)
            return VV_EDHT_MALFORMED;
        return 0;
    default: /* PUT_VALUE, ADD_PROVIDER */
        return vv_wire_get_bool(body, &ok) == 0 && ok ? 0 : VV_EDHT_MALFORMED;
    }
}

/* ---- PING's signature ------------------------------------------------------------------ */

void vv_dht_pong_signed_bytes(const uint8_t *nonce, const uint8_t *requester_id,
                              uint8_t out[VV_DHT_PING_SIGNED_BYTES])
{
    memcpy(out, VV_DHT_PING_DOMAIN, VV_DHT_PING_DOMAIN_LEN);
    memcpy(out + VV_DHT_PING_DOMAIN_LEN, nonce, VV_DHT_NONCE_BYTES);
    memcpy(out + VV_DHT_PING_DOMAIN_LEN + VV_DHT_NONCE_BYTES, requester_id, VV_DHT_ID_BYTES);
}

void vv_dht_pong_sign(const uint8_t *nonce, const uint8_t *requester_id, const uint8_t sk[64],
                      uint8_t sig[VV_DHT_SIG_BYTES])
{
    uint8_t m[VV_DHT_PING_SIGNED_BYTES];
    vv_dht_pong_signed_bytes(nonce, requester_id, m);
    crypto_sign_detached(sig, NULL, m, sizeof(m), sk);
}

int vv_dht_pong_verify(const uint8_t *nonce, const uint8_t *requester_id, const uint8_t *pk,
                       const uint8_t *sig)
{
    uint8_t m[VV_DHT_PING_SIGNED_BYTES];
    vv_dht_pong_signed_bytes(nonce, requester_id, m);
    return crypto_sign_verify_detached(sig, m, sizeof(m), pk) == 0 ? 0 : VV_EDHT_SIGNATURE;
}

/* ---- ADD_PROVIDER's signature ------------------------------------------------------------ */

void vv_dht_provider_signed_bytes(const uint8_t *key, uint64_t expires_ms,
                                  uint8_t out[VV_DHT_PROVIDER_SIGNED_BYTES])
{
    memcpy(out, VV_DHT_PROVIDER_DOMAIN, VV_DHT_PROVIDER_DOMAIN_LEN);
    memcpy(out + VV_DHT_PROVIDER_DOMAIN_LEN, key, VV_DHT_ID_BYTES);
    for (int i = 0; i < 8; i++)
        out[VV_DHT_PROVIDER_DOMAIN_LEN + VV_DHT_ID_BYTES + i] =
            (uint8_t)(expires_ms >> (56 - 8 * i));
}

void vv_dht_provider_sign(const uint8_t *key, uint64_t expires_ms, const uint8_t sk[64],
                          uint8_t pk[VV_DHT_PK_BYTES], uint8_t sig[VV_DHT_SIG_BYTES])
{
    uint8_t m[VV_DHT_PROVIDER_SIGNED_BYTES];
    vv_dht_provider_signed_bytes(key, expires_ms, m);
    crypto_sign_detached(sig, NULL, m, sizeof(m), sk);
    memcpy(pk, sk + 32, VV_DHT_PK_BYTES);
}
