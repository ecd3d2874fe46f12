/*
 * Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014) in one 64-bit word:
 * 48 bits of wall milliseconds and a 16-bit logical counter, so "the next timestamp" is
 * simply max(physical time << 16, last + 1). The logical counter overflowing into the wall
 * bits is the same thing as the clock running 1 ms ahead of physical time, which is what the
 * algorithm allows anyway; only the very last value of the 48-bit range is an error.
 */
#include "crdt/types_internal.h"

void vv_hlc_init(struct vv_hlc *c, uint64_t replica)
{
    c->last = 0;
    c->replica = replica;
}

static uint64_t phys_hlc(uint64_t phys_ms)
{
    return VV_MIN(phys_ms, VV_HLC_MAX_WALL_MS) << 16;
}

/* The timestamp after both `last` and physical time, or 0 when the range is exhausted. */
static uint64_t next_after(uint64_t last, uint64_t phys_ms)
{
    uint64_t p = phys_hlc(phys_ms);
    if (p > last)
        return p;
    return last == UINT64_MAX ? 0 : last + 1;
}

int vv_hlc_now(struct vv_hlc *c, uint64_t phys_ms, struct vv_crdt_ts *out)
{
    uint64_t t = next_after(c->last, phys_ms);
    if (t == 0)
        return VV_ECRDT_RANGE;
    c->last = t;
    out->hlc = t;
    out->replica = c->replica;
    return 0;
}

int vv_hlc_receive(struct vv_hlc *c, uint64_t phys_ms, const struct vv_crdt_ts *remote,
                   struct vv_crdt_ts *out)
{
    uint64_t wall = vv_hlc_wall_ms(remote->hlc);
    if (wall > phys_ms && wall - phys_ms > VV_HLC_MAX_DRIFT_MS)
        return VV_ECRDT_RANGE;
    uint64_t t = next_after(VV_MAX(c->last, remote->hlc), phys_ms);
    if (t == 0)
        return VV_ECRDT_RANGE;
    c->last = t;
    if (out) {
        out->hlc = t;
        out->replica = c->replica;
    }
    return 0;
}

int vv_crdt_ts_cmp(const struct vv_crdt_ts *a, const struct vv_crdt_ts *b)
{
    if (a->hlc != b->hlc)
        return a->hlc < b->hlc ? -1 : 1;
    if (a->replica != b->replica)
        return a->replica < b->replica ? -1 : 1;
    return 0;
}

int vv__crdt_clock_beat(struct vv_hlc *c, uint64_t phys_ms, uint64_t beat_hlc,
                        struct vv_crdt_ts *out)
{
    struct vv_hlc saved = *c;
    int rc = 0;
    if (beat_hlc > c->last)
        rc = vv_hlc_receive(c, phys_ms, &(struct vv_crdt_ts){beat_hlc, 0}, NULL);
    if (rc == 0)
        rc = vv_hlc_now(c, phys_ms, out);
    if (rc)
        *c = saved;
    return rc;
}
