/*
 * Streams on vv_env: payloads larger than one message (1 MiB), with credit-based flow
 * control. Sans-I/O like the modules that use it: it acts only through vv_env (send, timers,
 * time), so it runs in the daemon and in the simulator alike.
 *
 * One multiplexer (struct vv_stream_mux) serves one module on its channel. The module keeps
 * its own channel handlers and hands them every message and peer event first:
 *
 *     static void on_recv(env, peer, data, len, arg) {
 *         if (vv_stream_mux_recv(m->streams, peer, data, len))
 *             return;                      // a stream frame: handled
 *         ...the module's own messages...
 *     }
 *     static void on_peer(env, peer, up, arg) { vv_stream_mux_peer(m->streams, peer, up); ... }
 *
 * Sending: vv_stream_open names the peer, a little metadata for the receiving module (what
 * the payload is), the total length when known, and a producer callback that is asked for
 * up to n bytes at a time, so the payload never has to exist whole in memory. The layer cuts
 * it into chunks of at most VV_STREAM_CHUNK_BYTES, sends them in order, and never has more
 * bytes unacknowledged than the receiver granted (CREDIT). A send refused for back-pressure
 * (VV_ECONN_BACKPRESSURE) pauses the stream and retries on a timer; it does not fail it.
 *
 * Receiving: the module's accept callback sees each OPEN and either refuses it (a negative
 * code) or accepts it, choosing a consumer callback (chunks handed over as they arrive) or
 * reassembly into one buffer up to a bound it sets (handed over at the end).
 *
 * Each stream, on each side, ends with exactly one call of its done callback: status 0 when
 * complete, else why it ended (cancelled here, aborted or refused by the peer, peer gone, no
 * progress for VV_STREAM_IDLE_TIMEOUT_MS, a bound exceeded, a protocol violation). After it
 * the stream pointer is invalid. The wire frames are in docs/protocol.md, "Streams".
 */
#ifndef VIVIM_ENV_STREAM_H
#define VIVIM_ENV_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"

/* Stream frame types: the low byte on any channel (type = channel << 8 | low byte). */
enum {
    VV_STREAM_MSG_OPEN = 0xF0,
    VV_STREAM_MSG_DATA = 0xF1,
    VV_STREAM_MSG_CREDIT = 0xF2,
    VV_STREAM_MSG_END = 0xF3,
    VV_STREAM_MSG_ABORT = 0xF4, /* from the sender: it gives its stream up */
    VV_STREAM_MSG_STOP = 0xF5,  /* from the receiver: it refuses or stops the peer's stream */
};

/* Why a stream was aborted or stopped, as carried on the wire (docs/protocol.md). */
enum vv_stream_code {
    VV_STREAM_CODE_CANCELLED = 0, /* the module on that side gave it up */
    VV_STREAM_CODE_REFUSED = 1,   /* the receiver does not want it */
    VV_STREAM_CODE_TOO_LARGE = 2, /* over the receiver's bound for it */
    VV_STREAM_CODE_BUSY = 3,      /* the receiver's limits (streams or bytes): try later */
    VV_STREAM_CODE_TIMEOUT = 4,   /* no progress for too long */
    VV_STREAM_CODE_PROTOCOL = 5,  /* a frame broke the rules */
    VV_STREAM_CODE_SOURCE = 6,    /* the sender's producer failed */
    VV_STREAM_CODE_SINK = 7,      /* the receiver's consumer failed */
};

/*
 * One DATA frame's payload at most. Far below the 1 MiB frame limit so that a stream's
 * chunks interleave with the other messages to the same peer (a chunk takes 0.5 ms at
 * 1 Gbit/s, 50 ms at 10 Mbit/s): a bulk transfer then delays a gossip message by one chunk,
 * not by a megabyte.
 */
#define VV_STREAM_CHUNK_BYTES (64u << 10)
/*
 * Credit a receiver grants by default: bytes in flight per stream. 1 MiB keeps a 100 Mbit/s
 * link busy over an 80 ms round trip (bandwidth-delay product), and is what a peer can make
 * us hold beyond what the module consumed.
 */
#define VV_STREAM_WINDOW_BYTES (1u << 20)
/* Metadata in OPEN: enough for a document id or a content id and a few fields. */
#define VV_STREAM_MAX_META_BYTES 1024
/* A stream that moves no byte (either way) for this long is aborted with TIMEOUT: the peer
 * is stuck or gone without a "down", and the stream's memory must come back. */
#define VV_STREAM_IDLE_TIMEOUT_MS 30000
/* How soon a send refused for back-pressure is tried again: a few ms lets the connection's
 * queue drain a chunk or two (64 KiB at 100 Mbit/s is 5 ms) without spinning. */
#define VV_STREAM_RETRY_MS 5
/* Default bounds (vv_stream_mux_set_limits changes them). Open streams per peer in each
 * direction: a peer cannot pile up half-open streams. */
#define VV_STREAM_MAX_PER_PEER 8
/* Bytes a peer's incoming streams may hold here (reassembly buffers reserved at accept, plus
 * granted credit of consumer-mode streams), and all peers together. */
#define VV_STREAM_MAX_PEER_BYTES  (96u << 20)
#define VV_STREAM_MAX_TOTAL_BYTES (256u << 20)
/* Open streams in all, both directions: bounds the mux's memory and its lookups. */
#define VV_STREAM_MAX_STREAMS 1024

/* A total length that is not known when the stream opens (the producer ends it). */
#define VV_STREAM_LENGTH_UNKNOWN UINT64_MAX

struct vv_stream_mux;
struct vv_stream;

/*
 * Producer: write up to n (> 0) bytes into buf. Returns the number written (1..n); 0 at the
 * end of the payload (for a known total, only once it has all been given); VV_EAGAIN-like
 * "nothing now" as VV_EBUSY, after which the layer waits for vv_stream_resume; or another
 * negative code to abort the stream (SOURCE).
 */
typedef int (*vv_stream_produce_cb)(void *arg, struct vv_stream *s, uint8_t *buf, size_t n);
/* Consumer (receiving side, consumer mode): n > 0 bytes at offset, in order. Returns 0, or a
 * negative code to stop the stream (SINK). data is borrowed for the call. */
typedef int (*vv_stream_consume_cb)(void *arg, struct vv_stream *s, const uint8_t *data, size_t n);
/*
 * The end, exactly once per stream and side. status 0 = complete. For a reassembled stream
 * that completed, buf (len bytes) is handed over: the callback owns it (vv_free), else NULL.
 * The stream is gone after the call.
 */
typedef void (*vv_stream_done_cb)(void *arg, struct vv_stream *s, int status, uint8_t *buf,
                                  size_t len);

/* What a module decides about an incoming stream. */
struct vv_stream_accept {
    /* Consumer mode when set; else reassembly into one buffer of at most max_bytes. */
    vv_stream_consume_cb consume;
    uint64_t max_bytes;     /* both modes: a stream longer than this is stopped (TOO_LARGE) */
    uint32_t window;        /* credit granted ahead; 0 = VV_STREAM_WINDOW_BYTES */
    vv_stream_done_cb done; /* required */
    void *arg;
};

/*
 * Accept callback: a peer opened a stream (total may be VV_STREAM_LENGTH_UNKNOWN; meta is
 * borrowed). Fill *how and return 0 to accept; return a negative code to refuse (the peer is
 * told REFUSED, or TOO_LARGE for VV_ESTREAM_TOO_LARGE, BUSY for VV_EBUSY or VV_ELIMIT). No
 * done callback fires for a stream the callback refused. Once it accepted, how->done fires
 * exactly once, even when the layer then refuses the stream after all (a total over
 * how->max_bytes: VV_ESTREAM_TOO_LARGE; over the per-peer or total bytes: VV_EBUSY), from
 * inside vv_stream_mux_recv.
 */
typedef int (*vv_stream_accept_cb)(void *arg, struct vv_stream *s,
                                   const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *meta,
                                   size_t meta_len, uint64_t total, struct vv_stream_accept *how);

struct vv_stream_stats {
    uint64_t opened_out, opened_in, completed_out, completed_in;
    uint64_t failed_out, failed_in; /* ended any other way */
    uint64_t refused;               /* incoming streams refused here (module, or a bound) */
    uint64_t bytes_sent, bytes_received;
    uint64_t backpressure_waits; /* sends refused for back-pressure, retried later */
    uint64_t bad_frames;         /* malformed or rule-breaking stream frames */
    uint64_t stray_frames;       /* frames for streams no longer open (late, after an abort) */
    uint64_t open_out, open_in;  /* now */
    uint64_t buffered_bytes;     /* now: reserved for incoming streams, every peer */
};

/* A multiplexer for channel ch. accept may be NULL: every incoming stream is refused. */
struct vv_stream_mux *vv_stream_mux_new(struct vv_env *env, enum vv_channel ch,
                                        vv_stream_accept_cb accept, void *arg);
/* Ends every open stream (the peers are told CANCELLED; each done callback fires with
 * VV_ECLOSED), cancels the timers, frees. mux may be NULL. */
void vv_stream_mux_free(struct vv_stream_mux *mux);
/* Changes the bounds (0 keeps one). Streams already open keep what they reserved. */
void vv_stream_mux_set_limits(struct vv_stream_mux *mux, uint32_t max_per_peer,
                              uint64_t max_peer_bytes, uint64_t max_total_bytes);

/* Hands a message from the channel to the mux: true when it was a stream frame (handled or
 * counted as bad); false when it belongs to the module. */
bool vv_stream_mux_recv(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                        const uint8_t *data, size_t len);
/* Hands a peer event to the mux: "down" ends the peer's streams (VV_ECONN_NOT_CONNECTED). */
void vv_stream_mux_peer(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES], bool up);

/*
 * Opens a stream to peer and sends OPEN. meta (meta_len <= VV_STREAM_MAX_META_BYTES) is
 * copied. total: the payload's length, or VV_STREAM_LENGTH_UNKNOWN. produce and done are
 * required; done fires exactly once, never from inside this call (a failure here is
 * returned instead: VV_ELIMIT over the bounds, VV_ECONN_NOT_CONNECTED, VV_EINVAL). out may
 * be NULL.
 */
int vv_stream_open(struct vv_stream_mux *mux, const uint8_t peer[VV_NODE_ID_BYTES],
                   const uint8_t *meta, size_t meta_len, uint64_t total,
                   vv_stream_produce_cb produce, vv_stream_done_cb done, void *arg,
                   struct vv_stream **out);
/* A producer that returned VV_EBUSY has bytes again. */
void vv_stream_resume(struct vv_stream *s);
/* Ends a stream from this side (either direction): the peer is told CANCELLED, and done
 * fires now with VV_ECLOSED. */
void vv_stream_cancel(struct vv_stream *s);

/* Inspection. */
const uint8_t *vv_stream_peer(const struct vv_stream *s);
uint64_t vv_stream_id(const struct vv_stream *s);
bool vv_stream_outgoing(const struct vv_stream *s);
uint64_t vv_stream_offset(const struct vv_stream *s); /* bytes sent or received so far */
uint64_t vv_stream_total(const struct vv_stream *s);  /* declared, or ..._LENGTH_UNKNOWN */
const struct vv_stream_stats *vv_stream_mux_stats(const struct vv_stream_mux *mux);

/* Decodes a stream frame's header and body without acting on it (the fuzz target's door).
 * Returns 0 and fills the fields the type has, or VV_EWIRE_* / VV_ESTREAM_PROTOCOL. */
struct vv_stream_frame {
    uint8_t type;         /* VV_STREAM_MSG_* */
    uint64_t sid;         /* >= 1 */
    uint64_t value;       /* OPEN: total; DATA: offset; CREDIT: limit; END: total; ABORT,
                           * STOP: code */
    const uint8_t *bytes; /* OPEN: meta; DATA: payload (into the frame's zone) */
    size_t n_bytes;
};
struct vv_wire_frame;
int vv_stream_frame_decode(const uint8_t *data, size_t len, struct vv_wire_frame *wf,
                           struct vv_stream_frame *out);

#endif
