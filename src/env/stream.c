/*
 * Streams on vv_env (see env_stream.h for the interface, docs/protocol.md "Streams" for the
 * frames). Who owns what: the mux owns every open stream, in one array (removal moves the
 * last entry into the hole); a stream owns its unsent frame (at most one: the layer never
 * queues more than one frame per stream, back-pressure waits with it) and, when reassembling,
 * its receive buffer until the done callback takes it.
 *
 * Lookups scan the array: it holds at most max_streams (1,024 by default) and a scan costs
 * far less than the 64 KiB chunk that caused it. Nothing is keyed by peer-chosen bytes, so
 * there is no table to flood.
 *
 * Callbacks (accept, produce, consume, done) run with the mux consistent; a stream is
 * removed from the array before its done callback runs, so the callback may open or cancel
 * other streams. Producers and consumers must not cancel their own stream (they return a
 * negative code instead).
 */
#include <msgpack.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/env_stream.h"
#include "vivim/error.h"
#include "vivim/wire.h"

struct vv_stream {
    struct vv_stream_mux *mux;
    uint8_t peer[VV_NODE_ID_BYTES];
    uint64_t sid; /* >= 1, chosen by the sending side */
    bool out;
    uint64_t total;  /* declared, or VV_STREAM_LENGTH_UNKNOWN */
    uint64_t offset; /* payload bytes sent (out: handed to vv_env_send) or received (in) */
    uint64_t limit;  /* out: the peer's credit; in: the credit granted (exclusive offsets) */
    uint64_t last_progress_ms;
    size_t index; /* in mux->streams */
    vv_stream_done_cb done;
    void *arg;
    /* sending */
    vv_stream_produce_cb produce;
    uint8_t *pending; /* one encoded frame not yet accepted by vv_env_send, or NULL */
    size_t pending_len;
    size_t pending_payload; /* its payload bytes (DATA) */
    bool pending_end;       /* it is the END frame */
    bool producer_busy;     /* produce returned VV_EBUSY: wait for vv_stream_resume */
    bool produced_all;      /* produce returned 0, or the declared total was given */
    uint64_t retry_timer;
    /* receiving */
    vv_stream_consume_cb consume; /* NULL: reassembly into buf */
    uint64_t max_bytes;
    uint32_t window;
    uint64_t reserved; /* bytes counted against the peer's and the mux's bounds */
    uint8_t *buf;
    size_t buf_cap;
    bool credit_due; /* a CREDIT could not be sent (back-pressure): retried by the timer */
};

struct vv_stream_mux {
    struct vv_env *env;
    enum vv_channel ch;
    vv_stream_accept_cb accept;
    void *arg;
    struct vv_stream **streams;
    size_t n, cap;
    uint64_t next_sid; /* outgoing ids: one counter for every peer, never reused */
    uint32_t max_per_peer;
    uint64_t max_peer_bytes, max_total_bytes;
    uint64_t tick_timer; /* idle check, running while any stream is open */
    uint8_t *scratch;    /* VV_STREAM_CHUNK_BYTES for the producer */
    struct vv_stream_stats stats;
};

/* ---- frames ------------------------------------------------------------------------------ */

static uint16_t frame_type(const struct vv_stream_mux *mux, uint8_t low)
{
    return (uint16_t)((unsigned)mux->ch << 8 | low);
}

/* Packs [sid, value] or [sid, value, bytes] behind the frame header; returns the buffer. */
static void encode(const struct vv_stream_mux *mux, uint8_t low, uint64_t sid, bool value_nil,
                   uint64_t value, const uint8_t *bytes, size_t n, bool with_bytes,
                   msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, frame_type(mux, low), 0);
    msgpack_pack_array(&pk, with_bytes ? 3 : 2);
    msgpack_pack_uint64(&pk, sid);
    if (value_nil)
        msgpack_pack_nil(&pk);
    else
        msgpack_pack_uint64(&pk, value);
    if (with_bytes) {
        msgpack_pack_bin(&pk, n);
        if (n > 0)
            msgpack_pack_bin_body(&pk, bytes, n);
    }
}

/* Sends a control frame once; back-pressure or a gone peer loses it (see the callers). */
static int send_small(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t low,
                      uint64_t sid, uint64_t value)
{
    msgpack_sbuffer sb;
    encode(mux, low, sid, false, value, NULL, 0, false, &sb);
    int rc = vv_env_send(mux->env, peer, mux->ch, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/*
 * Reads the frame header's type without decoding the frame: the module's own messages (up to
 * 1 MiB) must not be walked twice. Accepts every integer encoding the codec accepts; any
 * doubt answers "not a stream frame", and the module's decoder then judges the bytes.
 */
static bool peek_int(const uint8_t *b, size_t len, size_t *pos, uint64_t *v)
{
    if (*pos >= len)
        return false;
    uint8_t t = b[(*pos)++];
    size_t n;
    if (t <= 0x7f) {
        *v = t;
        return true;
    }
    switch (t) {
    case 0xcc:
    case 0xd0:
        n = 1;
        break;
    case 0xcd:
    case 0xd1:
        n = 2;
        break;
    case 0xce:
    case 0xd2:
        n = 4;
        break;
    case 0xcf:
    case 0xd3:
        n = 8;
        break;
    default:
        return false;
    }
    if (n > len - *pos)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | b[(*pos)++];
    if (t >= 0xd0 && (b[*pos - n] & 0x80))
        return false; /* negative */
    *v = x;
    return true;
}

static bool peek_type(const uint8_t *b, size_t len, uint64_t *type)
{
    size_t pos;
    if (len >= 1 && b[0] == 0x95)
        pos = 1;
    else if (len >= 3 && b[0] == 0xdc && b[1] == 0 && b[2] == 5)
        pos = 3;
    else if (len >= 5 && b[0] == 0xdd && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[4] == 5)
        pos = 5;
    else
        return false;
    uint64_t major, minor;
    return peek_int(b, len, &pos, &major) && peek_int(b, len, &pos, &minor) &&
           peek_int(b, len, &pos, type);
}

int vv_stream_frame_decode(const uint8_t *data, size_t len, struct vv_wire_frame *wf,
                           struct vv_stream_frame *out)
{
    memset(out, 0, sizeof(*out));
    int rc = vv_wire_decode(data, len, wf);
    if (rc != 0)
        return rc;
    uint8_t low = (uint8_t)(wf->h.type & 0xff);
    if (low < VV_STREAM_MSG_OPEN || low > VV_STREAM_MSG_STOP)
        return VV_ESTREAM_PROTOCOL;
    out->type = low;
    const msgpack_object *a;
    uint32_t n;
    bool three = low == VV_STREAM_MSG_OPEN || low == VV_STREAM_MSG_DATA;
    if (vv_wire_get_array(&wf->body, three ? 3 : 2, three ? 3 : 2, &a, &n) != 0 ||
        vv_wire_get_u64(&a[0], UINT64_MAX, &out->sid) != 0 || out->sid == 0)
        return VV_ESTREAM_PROTOCOL;
    switch (low) {
    case VV_STREAM_MSG_OPEN:
        if (a[1].type == MSGPACK_OBJECT_NIL)
            out->value = VV_STREAM_LENGTH_UNKNOWN;
        else if (vv_wire_get_u64(&a[1], VV_STREAM_LENGTH_UNKNOWN - 1, &out->value) != 0)
            return VV_ESTREAM_PROTOCOL;
        if (vv_wire_get_bin(&a[2], 0, VV_STREAM_MAX_META_BYTES, &out->bytes, &out->n_bytes) != 0)
            return VV_ESTREAM_PROTOCOL;
        break;
    case VV_STREAM_MSG_DATA:
        if (vv_wire_get_u64(&a[1], UINT64_MAX, &out->value) != 0 ||
            vv_wire_get_bin(&a[2], 0, VV_STREAM_CHUNK_BYTES, &out->bytes, &out->n_bytes) != 0 ||
            out->n_bytes == 0)
            return VV_ESTREAM_PROTOCOL;
        break;
    case VV_STREAM_MSG_ABORT:
    case VV_STREAM_MSG_STOP:
        if (vv_wire_get_u64(&a[1], 65535, &out->value) != 0)
            return VV_ESTREAM_PROTOCOL;
        break;
    default: /* CREDIT, END */
        if (vv_wire_get_u64(&a[1], UINT64_MAX, &out->value) != 0)
            return VV_ESTREAM_PROTOCOL;
        break;
    }
    return 0;
}

/* ---- codes -------------------------------------------------------------------------------- */

/* What a code from the peer means here. */
static int status_of(uint64_t code)
{
    switch (code) {
    case VV_STREAM_CODE_REFUSED:
        return VV_ESTREAM_REFUSED;
    case VV_STREAM_CODE_TOO_LARGE:
        return VV_ESTREAM_TOO_LARGE;
    case VV_STREAM_CODE_BUSY:
        return VV_EBUSY;
    case VV_STREAM_CODE_TIMEOUT:
        return VV_ETIMEDOUT;
    case VV_STREAM_CODE_PROTOCOL:
        return VV_ESTREAM_PROTOCOL;
    default: /* CANCELLED, SOURCE, SINK, and codes of newer versions */
        return VV_ESTREAM_ABORTED;
    }
}

/* The code a module's refusal is told as. */
static uint64_t code_of_refusal(int rc)
{
    if (rc == VV_ESTREAM_TOO_LARGE)
        return VV_STREAM_CODE_TOO_LARGE;
    if (rc == VV_EBUSY || rc == VV_ELIMIT)
        return VV_STREAM_CODE_BUSY;
    return VV_STREAM_CODE_REFUSED;
}

/* ---- the table of streams ---------------------------------------------------------------- */

static void on_tick(struct vv_env *env, void *arg);

static struct vv_stream *find(const struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                              bool out, uint64_t sid)
{
    for (size_t i = 0; i < mux->n; i++) {
        struct vv_stream *s = mux->streams[i];
        if (s->sid == sid && s->out == out && memcmp(s->peer, peer, VV_NODE_ID_BYTES) == 0)
            return s;
    }
    return NULL;
}

/* Incoming streams of peer, and the bytes they reserved. */
static size_t count_peer(const struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                         bool out, uint64_t *reserved)
{
    size_t n = 0;
    uint64_t r = 0;
    for (size_t i = 0; i < mux->n; i++) {
        const struct vv_stream *s = mux->streams[i];
        if (s->out == out && memcmp(s->peer, peer, VV_NODE_ID_BYTES) == 0) {
            n++;
            r += s->reserved;
        }
    }
    if (reserved)
        *reserved = r;
    return n;
}

static struct vv_stream *add(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                             bool out, uint64_t sid)
{
    if (mux->n == mux->cap) {
        mux->cap = mux->cap ? 2 * mux->cap : 8;
        mux->streams = vv_xrealloc(mux->streams, mux->cap * sizeof(*mux->streams));
    }
    struct vv_stream *s = vv_xcalloc(1, sizeof(*s));
    s->mux = mux;
    memcpy(s->peer, peer, VV_NODE_ID_BYTES);
    s->out = out;
    s->sid = sid;
    s->last_progress_ms = vv_env_now(mux->env);
    s->index = mux->n;
    mux->streams[mux->n++] = s;
    if (out)
        mux->stats.open_out++;
    else
        mux->stats.open_in++;
    if (mux->tick_timer == 0)
        mux->tick_timer = vv_env_timer_start(mux->env, VV_STREAM_IDLE_TIMEOUT_MS / 4,
                                             VV_STREAM_IDLE_TIMEOUT_MS / 4, on_tick, mux);
    return s;
}

/* Takes s out of the mux and frees everything but what the done callback is handed. */
static void unlink_stream(struct vv_stream *s)
{
    struct vv_stream_mux *mux = s->mux;
    struct vv_stream *last = mux->streams[--mux->n];
    mux->streams[s->index] = last;
    last->index = s->index;
    if (s->out)
        mux->stats.open_out--;
    else
        mux->stats.open_in--;
    mux->stats.buffered_bytes -= s->reserved;
    vv_env_timer_cancel(mux->env, s->retry_timer);
    vv_free(s->pending);
    if (mux->n == 0) {
        vv_env_timer_cancel(mux->env, mux->tick_timer);
        mux->tick_timer = 0;
    }
}

/* Ends s: out of the mux, then the done callback (exactly once), then freed. */
static void finish(struct vv_stream *s, int status)
{
    struct vv_stream_mux *mux = s->mux;
    unlink_stream(s);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (s->out) {
        if (status == 0)
            mux->stats.completed_out++;
        else
            mux->stats.failed_out++;
    } else {
        if (status == 0) {
            mux->stats.completed_in++;
            if (s->consume == NULL) {
                buf = s->buf; /* handed over */
                len = (size_t)s->offset;
                s->buf = NULL;
                if (buf == NULL)
                    buf = vv_xmalloc(1); /* an empty payload still comes as a buffer */
            }
        } else {
            mux->stats.failed_in++;
        }
    }
    vv_free(s->buf);
    s->done(s->arg, s, status, buf, len);
    vv_free(s);
}

/* Tells the peer this side ends s (best effort: a lost frame ends it there by timeout). */
static void tell_end(struct vv_stream *s, uint64_t code)
{
    send_small(s->mux, s->peer, s->out ? VV_STREAM_MSG_ABORT : VV_STREAM_MSG_STOP, s->sid, code);
}

/* ---- sending ----------------------------------------------------------------------------- */

static void pump(struct vv_stream *s);

static void on_retry(struct vv_env *env, void *arg)
{
    (void)env;
    struct vv_stream *s = arg;
    s->retry_timer = 0;
    if (s->out) {
        pump(s);
        return;
    }
    /* A CREDIT that met back-pressure. */
    s->credit_due = false;
    int rc = send_small(s->mux, s->peer, VV_STREAM_MSG_CREDIT, s->sid, s->limit);
    if (rc == VV_ECONN_BACKPRESSURE) {
        s->credit_due = true;
        s->mux->stats.backpressure_waits++;
        s->retry_timer = vv_env_timer_start(s->mux->env, VV_STREAM_RETRY_MS, 0, on_retry, s);
    }
}

static void set_pending(struct vv_stream *s, msgpack_sbuffer *sb, size_t payload, bool end)
{
    /* A copy in the project's allocator (msgpack's buffer comes from malloc). */
    s->pending_len = sb->size;
    s->pending = vv_xmalloc(sb->size);
    memcpy(s->pending, sb->data, sb->size);
    msgpack_sbuffer_destroy(sb);
    s->pending_payload = payload;
    s->pending_end = end;
}

/* Sends what the credit allows: the pending frame first, then chunks from the producer, and
 * END once the producer gave everything. Stops at back-pressure (a retry timer), at the end
 * of the credit, or when the producer has nothing for now. */
static void pump(struct vv_stream *s)
{
    struct vv_stream_mux *mux = s->mux;
    for (;;) {
        if (s->pending != NULL) {
            int rc = vv_env_send(mux->env, s->peer, mux->ch, s->pending, s->pending_len);
            if (rc == VV_ECONN_BACKPRESSURE) {
                mux->stats.backpressure_waits++;
                if (s->retry_timer == 0)
                    s->retry_timer =
                        vv_env_timer_start(mux->env, VV_STREAM_RETRY_MS, 0, on_retry, s);
                return;
            }
            if (rc != 0) {
                finish(s, rc); /* the peer is gone: nobody to tell */
                return;
            }
            vv_free(s->pending);
            s->pending = NULL;
            s->offset += s->pending_payload;
            mux->stats.bytes_sent += s->pending_payload;
            s->last_progress_ms = vv_env_now(mux->env);
            if (s->pending_end) {
                finish(s, 0);
                return;
            }
            continue;
        }
        msgpack_sbuffer sb;
        if (!s->produced_all && s->total != VV_STREAM_LENGTH_UNKNOWN && s->offset == s->total)
            s->produced_all = true;
        if (s->produced_all) {
            encode(mux, VV_STREAM_MSG_END, s->sid, false, s->offset, NULL, 0, false, &sb);
            set_pending(s, &sb, 0, true);
            continue;
        }
        if (s->producer_busy || s->offset >= s->limit)
            return; /* vv_stream_resume, or a CREDIT, calls again */
        uint64_t n = VV_MIN((uint64_t)VV_STREAM_CHUNK_BYTES, s->limit - s->offset);
        if (s->total != VV_STREAM_LENGTH_UNKNOWN)
            n = VV_MIN(n, s->total - s->offset);
        int r = s->produce(s->arg, s, mux->scratch, (size_t)n);
        if (r == VV_EBUSY) {
            s->producer_busy = true;
            return;
        }
        if (r < 0 || (uint64_t)r > n || (r == 0 && s->total != VV_STREAM_LENGTH_UNKNOWN)) {
            /* A failed producer, or one that gave more than asked or ended short of the
             * declared total. */
            tell_end(s, VV_STREAM_CODE_SOURCE);
            finish(s, r < 0 ? r : VV_EINVAL);
            return;
        }
        if (r == 0) {
            s->produced_all = true;
            continue;
        }
        encode(mux, VV_STREAM_MSG_DATA, s->sid, false, s->offset, mux->scratch, (size_t)r, true,
               &sb);
        set_pending(s, &sb, (size_t)r, false);
    }
}

int vv_stream_open(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                   const uint8_t *meta, size_t meta_len, uint64_t total,
                   vv_stream_produce_cb produce, vv_stream_done_cb done, void *arg,
                   struct vv_stream **out)
{
    if (produce == NULL || done == NULL || meta_len > VV_STREAM_MAX_META_BYTES ||
        (meta == NULL && meta_len > 0))
        return VV_EINVAL;
    if (mux->n >= VV_STREAM_MAX_STREAMS || count_peer(mux, peer, true, NULL) >= mux->max_per_peer)
        return VV_ELIMIT;
    msgpack_sbuffer sb;
    uint64_t sid = mux->next_sid++;
    encode(mux, VV_STREAM_MSG_OPEN, sid, total == VV_STREAM_LENGTH_UNKNOWN, total, meta, meta_len,
           true, &sb);
    int rc = vv_env_send(mux->env, peer, mux->ch, (const uint8_t *)sb.data, sb.size);
    if (rc != 0 && rc != VV_ECONN_BACKPRESSURE) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    struct vv_stream *s = add(mux, peer, true, sid);
    s->total = total;
    s->produce = produce;
    s->done = done;
    s->arg = arg;
    mux->stats.opened_out++;
    if (rc == VV_ECONN_BACKPRESSURE) {
        /* OPEN goes out first, when the queue has room; no data before the peer's CREDIT. */
        set_pending(s, &sb, 0, false);
        mux->stats.backpressure_waits++;
        s->retry_timer = vv_env_timer_start(mux->env, VV_STREAM_RETRY_MS, 0, on_retry, s);
    } else {
        msgpack_sbuffer_destroy(&sb);
    }
    if (out)
        *out = s;
    return 0;
}

void vv_stream_resume(struct vv_stream *s)
{
    if (!s->out || !s->producer_busy)
        return;
    s->producer_busy = false;
    if (s->pending == NULL)
        pump(s);
}

void vv_stream_cancel(struct vv_stream *s)
{
    tell_end(s, VV_STREAM_CODE_CANCELLED);
    finish(s, VV_ECLOSED);
}

/* ---- receiving ----------------------------------------------------------------------------- */

/* Stops an incoming stream for a rule it broke (or a bound) and ends it here. */
static void stop(struct vv_stream *s, uint64_t code, int status)
{
    tell_end(s, code);
    finish(s, status);
}

/* Grants more credit once half the window is used: one CREDIT per half window, not per
 * chunk, never past what the stream may still bring. first: the CREDIT that accepts the
 * stream goes out even when it grants nothing (an empty payload). */
static void grant(struct vv_stream *s, bool first)
{
    uint64_t cap = s->max_bytes;
    if (s->total != VV_STREAM_LENGTH_UNKNOWN)
        cap = VV_MIN(cap, s->total);
    if (!first && (s->limit >= cap || s->limit - s->offset > s->window / 2))
        return;
    s->limit = cap - s->offset > s->window ? s->offset + s->window : cap;
    if (s->credit_due)
        return; /* the retry sends the newest limit */
    int rc = send_small(s->mux, s->peer, VV_STREAM_MSG_CREDIT, s->sid, s->limit);
    if (rc == VV_ECONN_BACKPRESSURE) {
        s->credit_due = true;
        s->mux->stats.backpressure_waits++;
        if (s->retry_timer == 0)
            s->retry_timer = vv_env_timer_start(s->mux->env, VV_STREAM_RETRY_MS, 0, on_retry, s);
    }
}

static void refuse(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES], uint64_t sid,
                   uint64_t code)
{
    mux->stats.refused++;
    send_small(mux, peer, VV_STREAM_MSG_STOP, sid, code);
}

static void on_open(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                    const struct vv_stream_frame *f)
{
    struct vv_stream *old = find(mux, peer, false, f->sid);
    if (old != NULL) {
        /* An id reused while open: the peer broke the rules; both go. */
        mux->stats.bad_frames++;
        stop(old, VV_STREAM_CODE_PROTOCOL, VV_ESTREAM_PROTOCOL);
        return;
    }
    if (mux->accept == NULL) {
        refuse(mux, peer, f->sid, VV_STREAM_CODE_REFUSED);
        return;
    }
    uint64_t peer_reserved;
    if (mux->n >= VV_STREAM_MAX_STREAMS ||
        count_peer(mux, peer, false, &peer_reserved) >= mux->max_per_peer) {
        refuse(mux, peer, f->sid, VV_STREAM_CODE_BUSY);
        return;
    }
    struct vv_stream *s = add(mux, peer, false, f->sid);
    s->total = f->value;
    struct vv_stream_accept how = {0};
    int rc = mux->accept(mux->arg, s, peer, f->bytes, f->n_bytes, f->value, &how);
    bool accepted = rc == 0 && how.done != NULL; /* the module now expects one done call */
    uint64_t code = VV_STREAM_CODE_REFUSED;
    if (rc == 0 && (how.done == NULL || how.max_bytes == 0))
        rc = VV_EINVAL; /* the module's bug: refused rather than kept without an end */
    if (rc == 0 && s->total != VV_STREAM_LENGTH_UNKNOWN && s->total > how.max_bytes)
        rc = VV_ESTREAM_TOO_LARGE;
    if (rc == 0) {
        s->window = how.window ? how.window : VV_STREAM_WINDOW_BYTES;
        s->window = (uint32_t)VV_MAX(s->window, VV_STREAM_CHUNK_BYTES);
        uint64_t need = how.consume ? s->window : how.max_bytes;
        if (how.consume == NULL && s->total != VV_STREAM_LENGTH_UNKNOWN)
            need = s->total;
        if (peer_reserved + need > mux->max_peer_bytes ||
            mux->stats.buffered_bytes + need > mux->max_total_bytes)
            rc = VV_EBUSY;
        else
            s->reserved = need;
    }
    if (rc != 0) {
        /* Refused, by the module or, after it accepted, by a bound: in the second case its
         * done callback is how it learns (and frees what it gave as arg). */
        code = code_of_refusal(rc);
        unlink_stream(s);
        refuse(mux, peer, f->sid, code);
        if (accepted)
            how.done(how.arg, s, rc, NULL, 0);
        vv_free(s);
        return;
    }
    mux->stats.buffered_bytes += s->reserved;
    mux->stats.opened_in++;
    s->consume = how.consume;
    s->max_bytes = how.max_bytes;
    s->done = how.done;
    s->arg = how.arg;
    grant(s, true);
}

static void on_data(struct vv_stream_mux *mux, struct vv_stream *s, const struct vv_stream_frame *f)
{
    uint64_t n = f->n_bytes;
    if (f->value != s->offset || n > s->limit - s->offset) {
        /* Out of order, or past the credit granted: flow control was not respected. */
        mux->stats.bad_frames++;
        stop(s, VV_STREAM_CODE_PROTOCOL, VV_ESTREAM_PROTOCOL);
        return;
    }
    if (s->total != VV_STREAM_LENGTH_UNKNOWN && n > s->total - s->offset) {
        mux->stats.bad_frames++;
        stop(s, VV_STREAM_CODE_PROTOCOL, VV_ESTREAM_PROTOCOL);
        return;
    }
    if (n > s->max_bytes - s->offset) {
        stop(s, VV_STREAM_CODE_TOO_LARGE, VV_ESTREAM_TOO_LARGE);
        return;
    }
    if (s->consume != NULL) {
        int rc = s->consume(s->arg, s, f->bytes, (size_t)n);
        if (rc < 0) {
            stop(s, VV_STREAM_CODE_SINK, rc);
            return;
        }
    } else {
        if (s->offset + n > s->buf_cap) {
            /* Grows by doubling up to what was reserved: a peer that declares 64 MiB and
             * sends one chunk costs one chunk of memory, not 64 MiB. */
            uint64_t cap = VV_MAX((uint64_t)s->buf_cap * 2, s->offset + n);
            cap = VV_MIN(cap, s->reserved);
            s->buf = vv_xrealloc(s->buf, (size_t)cap);
            s->buf_cap = (size_t)cap;
        }
        memcpy(s->buf + s->offset, f->bytes, (size_t)n);
    }
    s->offset += n;
    mux->stats.bytes_received += n;
    s->last_progress_ms = vv_env_now(mux->env);
    grant(s, false);
}

bool vv_stream_mux_recv(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                        const uint8_t *data, size_t len)
{
    uint64_t type;
    if (!peek_type(data, len, &type) || type > 0xffff || (type >> 8) != (uint64_t)mux->ch ||
        (type & 0xff) < VV_STREAM_MSG_OPEN || (type & 0xff) > VV_STREAM_MSG_STOP)
        return false;
    struct vv_wire_frame wf;
    struct vv_stream_frame f;
    if (vv_stream_frame_decode(data, len, &wf, &f) != 0) {
        mux->stats.bad_frames++;
        vv_wire_frame_free(&wf);
        return true;
    }
    struct vv_stream *s = NULL;
    switch (f.type) {
    case VV_STREAM_MSG_OPEN:
        on_open(mux, peer, &f);
        break;
    case VV_STREAM_MSG_DATA:
    case VV_STREAM_MSG_END:
    case VV_STREAM_MSG_ABORT:
        s = find(mux, peer, false, f.sid);
        if (s == NULL) {
            mux->stats.stray_frames++;
        } else if (f.type == VV_STREAM_MSG_DATA) {
            on_data(mux, s, &f);
        } else if (f.type == VV_STREAM_MSG_ABORT) {
            finish(s, status_of(f.value));
        } else if (f.value != s->offset ||
                   (s->total != VV_STREAM_LENGTH_UNKNOWN && s->total != s->offset)) {
            mux->stats.bad_frames++;
            stop(s, VV_STREAM_CODE_PROTOCOL, VV_ESTREAM_PROTOCOL);
        } else {
            finish(s, 0);
        }
        break;
    default: /* CREDIT, STOP: about a stream this side opened */
        s = find(mux, peer, true, f.sid);
        if (s == NULL) {
            mux->stats.stray_frames++;
        } else if (f.type == VV_STREAM_MSG_STOP) {
            finish(s, status_of(f.value));
        } else {
            /* A lower limit (repeated) changes nothing; any CREDIT, the first included (the
             * stream's acceptance, maybe of an empty payload), lets the sender go on. */
            if (f.value > s->limit) {
                s->limit = f.value;
                s->last_progress_ms = vv_env_now(mux->env);
            }
            if (s->pending == NULL)
                pump(s);
        }
        break;
    }
    vv_wire_frame_free(&wf);
    return true;
}

void vv_stream_mux_peer(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES], bool up)
{
    if (up)
        return;
    /* One at a time: a done callback may open or end other streams. */
    for (size_t i = 0; i < mux->n;) {
        struct vv_stream *s = mux->streams[i];
        if (memcmp(s->peer, peer, VV_NODE_ID_BYTES) == 0) {
            finish(s, VV_ECONN_NOT_CONNECTED);
            i = 0;
        } else {
            i++;
        }
    }
}

static void on_tick(struct vv_env *env, void *arg)
{
    struct vv_stream_mux *mux = arg;
    uint64_t now = vv_env_now(env);
    for (size_t i = 0; i < mux->n;) {
        struct vv_stream *s = mux->streams[i];
        if (now - s->last_progress_ms >= VV_STREAM_IDLE_TIMEOUT_MS) {
            tell_end(s, VV_STREAM_CODE_TIMEOUT);
            finish(s, VV_ETIMEDOUT);
            i = 0;
        } else {
            i++;
        }
    }
}

/* ---- the mux ------------------------------------------------------------------------------ */

struct vv_stream_mux *vv_stream_mux_new(struct vv_env *env, enum vv_channel ch,
                                        vv_stream_accept_cb accept, void *arg)
{
    struct vv_stream_mux *mux = vv_xcalloc(1, sizeof(*mux));
    mux->env = env;
    mux->ch = ch;
    mux->accept = accept;
    mux->arg = arg;
    mux->next_sid = 1;
    mux->max_per_peer = VV_STREAM_MAX_PER_PEER;
    mux->max_peer_bytes = VV_STREAM_MAX_PEER_BYTES;
    mux->max_total_bytes = VV_STREAM_MAX_TOTAL_BYTES;
    mux->scratch = vv_xmalloc(VV_STREAM_CHUNK_BYTES);
    return mux;
}

void vv_stream_mux_free(struct vv_stream_mux *mux)
{
    if (mux == NULL)
        return;
    while (mux->n > 0)
        vv_stream_cancel(mux->streams[mux->n - 1]);
    vv_env_timer_cancel(mux->env, mux->tick_timer);
    vv_free(mux->streams);
    vv_free(mux->scratch);
    vv_free(mux);
}

void vv_stream_mux_set_limits(struct vv_stream_mux *mux, uint32_t max_per_peer,
                              uint64_t max_peer_bytes, uint64_t max_total_bytes)
{
    if (max_per_peer)
        mux->max_per_peer = max_per_peer;
    if (max_peer_bytes)
        mux->max_peer_bytes = max_peer_bytes;
    if (max_total_bytes)
        mux->max_total_bytes = max_total_bytes;
}

const uint8_t *vv_stream_peer(const struct vv_stream *s)
{
    return s->peer;
}

uint64_t vv_stream_id(const struct vv_stream *s)
{
    return s->sid;
}

bool vv_stream_outgoing(const struct vv_stream *s)
{
    return s->out;
}

uint64_t vv_stream_offset(const struct vv_stream *s)
{
    return s->offset;
}

uint64_t vv_stream_total(const struct vv_stream *s)
{
    return s->total;
}

const struct vv_stream_stats *vv_stream_mux_stats(const struct vv_stream_mux *mux)
{
    return &mux->stats;
}
