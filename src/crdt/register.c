/*
 * LWW-Register: one value (canonical JSON text) and the timestamp of the write that set it.
 * The join keeps the write with the greater timestamp (HLC, then replica id). Two different
 * values under one timestamp can only come from a forged or corrupt update; the bytewise
 * greater value wins then, so that replicas still agree.
 *
 * An update is the whole register, in the state format.
 */
#include <string.h>

#include "crdt/types_internal.h"

struct vv_lwwreg {
    bool set;
    struct vv_crdt_ts ts;
    char *val; /* canonical JSON text, val_len bytes, no terminator; NULL when !set */
    size_t val_len;
};

struct vv_lwwreg *vv_lwwreg_new(void)
{
    return vv_xcalloc(1, sizeof(struct vv_lwwreg));
}

void vv_lwwreg_free(struct vv_lwwreg *r)
{
    if (!r)
        return;
    vv_free(r->val);
    vv_free(r);
}

static void reg_encode(const struct vv_lwwreg *r, uint8_t **out, size_t *out_len)
{
    struct vv__crdt_w w;
    vv__crdt_w_init(&w, VV_CRDT_LWWREG);
    vv__crdt_w_u8(&w, r->set);
    if (r->set) {
        vv__crdt_w_u64be(&w, r->ts.hlc);
        vv__crdt_w_u64be(&w, r->ts.replica);
        vv__crdt_w_blob(&w, r->val, r->val_len);
    }
    vv__crdt_w_finish(&w, out, out_len);
}

/* Decodes into *out without copying the value: out->val points into buf. */
static int reg_decode_view(const uint8_t *buf, size_t len, struct vv_lwwreg *out)
{
    struct vv__crdt_r r;
    if (vv__crdt_r_init(&r, buf, len, VV_CRDT_LWWREG))
        return VV_ECRDT_DECODE;
    memset(out, 0, sizeof(*out));
    uint8_t present = vv__crdt_r_u8(&r);
    if (present > 1)
        return VV_ECRDT_DECODE;
    if (present) {
        out->set = true;
        out->ts.hlc = vv__crdt_r_u64be(&r);
        out->ts.replica = vv__crdt_r_replica(&r);
        out->val = (char *)vv__crdt_r_blob(&r, VV_CRDT_MAX_VALUE_BYTES, &out->val_len);
    }
    if (vv__crdt_r_done(&r))
        return VV_ECRDT_DECODE;
    if (present && !vv__crdt_value_is_canonical((const uint8_t *)out->val, out->val_len))
        return VV_ECRDT_DECODE;
    return 0;
}

/* True when the write (ts, val) beats what r holds. */
static bool reg_wins(const struct vv_lwwreg *r, const struct vv_crdt_ts *ts, const char *val,
                     size_t val_len)
{
    if (!r->set)
        return true;
    int c = vv_crdt_ts_cmp(ts, &r->ts);
    if (c)
        return c > 0;
    return vv__crdt_bytes_cmp(val, val_len, r->val, r->val_len) > 0;
}

static void reg_take(struct vv_lwwreg *r, const struct vv_crdt_ts *ts, const char *val,
                     size_t val_len)
{
    char *copy = vv_xmalloc(val_len);
    memcpy(copy, val, val_len);
    vv_free(r->val);
    r->set = true;
    r->ts = *ts;
    r->val = copy;
    r->val_len = val_len;
}

int vv_lwwreg_set(struct vv_lwwreg *r, struct vv_hlc *clock, uint64_t phys_ms, const json_t *value,
                  uint8_t **delta, size_t *delta_len)
{
    char *val;
    size_t val_len;
    int rc = vv__crdt_value_dump(value, &val, &val_len);
    if (rc)
        return rc;
    struct vv_crdt_ts ts;
    rc = vv__crdt_clock_beat(clock, phys_ms, r->set ? r->ts.hlc : 0, &ts);
    if (rc) {
        vv_free(val);
        return rc;
    }
    vv_free(r->val);
    r->set = true;
    r->ts = ts;
    r->val = val;
    r->val_len = val_len;
    if (delta)
        reg_encode(r, delta, delta_len);
    return 0;
}

bool vv_lwwreg_timestamp(const struct vv_lwwreg *r, struct vv_crdt_ts *ts)
{
    if (r->set && ts)
        *ts = r->ts;
    return r->set;
}

int vv_lwwreg_apply(struct vv_lwwreg *r, const uint8_t *buf, size_t len)
{
    struct vv_lwwreg d;
    int rc = reg_decode_view(buf, len, &d);
    if (rc)
        return rc;
    if (d.set && reg_wins(r, &d.ts, d.val, d.val_len))
        reg_take(r, &d.ts, d.val, d.val_len);
    return 0;
}

int vv_lwwreg_merge(struct vv_lwwreg *dst, const struct vv_lwwreg *src)
{
    if (src->set && reg_wins(dst, &src->ts, src->val, src->val_len))
        reg_take(dst, &src->ts, src->val, src->val_len);
    return 0;
}

int vv_lwwreg_encode(const struct vv_lwwreg *r, uint8_t **out, size_t *out_len)
{
    reg_encode(r, out, out_len);
    return 0;
}

int vv_lwwreg_decode(const uint8_t *buf, size_t len, struct vv_lwwreg **out)
{
    struct vv_lwwreg d;
    int rc = reg_decode_view(buf, len, &d);
    if (rc)
        return rc;
    struct vv_lwwreg *r = vv_lwwreg_new();
    if (d.set)
        reg_take(r, &d.ts, d.val, d.val_len);
    *out = r;
    return 0;
}

json_t *vv_lwwreg_to_json(const struct vv_lwwreg *r)
{
    if (!r->set)
        return json_null();
    json_t *v = vv__crdt_value_load(r->val, r->val_len);
    return v ? v : json_null();
}
