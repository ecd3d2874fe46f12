/*
 * vv_env: the only door protocol modules have to time, randomness, crypto and the network.
 *
 * Kademlia, gossip, CRDT sync, replication and the connection logic above the socket are
 * state machines: they are called with (message from a peer | timer fired | peer came or
 * went) and act through this interface. Two implementations exist: the daemon's (libuv
 * timers, the connection manager, libsodium's randomness) and the deterministic simulator's
 * (tests/sim/: virtual clock, modelled network, randomness from one seed), so the same code
 * runs in one vivimd and as 10,000 nodes in one test process.
 *
 * Rules for modules: never call uv_*, time(), rand(), sockets or threads; keep all state in
 * per-node structs; reach peers only through vv_env_send on your channel, and ask for the
 * connections you need with vv_env_want_peer (released with vv_env_release_peer).
 */
#ifndef VIVIM_ENV_H
#define VIVIM_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/error.h"
#include "vivim/identity.h"

/* Message channels: one per protocol module; a message is delivered to its channel's handler. */
enum vv_channel {
    VV_CHANNEL_CONN = 0, /* connection manager: ping, peer exchange */
    VV_CHANNEL_DHT = 1,
    VV_CHANNEL_PUBSUB = 2,
    VV_CHANNEL_CRDT = 3,
    VV_CHANNEL_STORE = 4,
    VV_CHANNEL_FEDERATION = 5,
    VV_CHANNEL_ECHO = 6,  /* the echo module: round trips through the request layer */
    VV_CHANNEL_TEST = 15, /* tests and simulator scenarios */
    VV_ENV_MAX_CHANNELS = 16,
};

#define VV_ENV_MAX_MESSAGE_BYTES (1u << 20) /* larger payloads travel as streams (env_stream.h) */

/*
 * Datagrams (docs/protocol.md, "Datagrams"): one wire frame to an address, without a
 * connection, unordered, lossy, neither encrypted nor authenticated. 1200 bytes of UDP
 * payload cross any path MTU (IPv6's minimum is 1280, less 48 of IPv6 and UDP headers);
 * the envelope is "VD", version, flags and the sender's claimed node ID (2 + 1 + 1 + 32).
 */
#define VV_ENV_MAX_DATAGRAM_BYTES       1200
#define VV_ENV_DATAGRAM_HEADER_BYTES    36
#define VV_ENV_MAX_DATAGRAM_FRAME_BYTES (VV_ENV_MAX_DATAGRAM_BYTES - VV_ENV_DATAGRAM_HEADER_BYTES)
#define VV_ENV_DATAGRAM_VERSION         1
/* A numeric address with its NUL: "255.255.255.255:65535" or "[<46 chars of IPv6>]:65535". */
#define VV_ENV_ADDRESS_BYTES 64

struct vv_env;

/* A timer fired; arg is what was given to vv_env_timer_start. */
typedef void (*vv_env_timer_cb)(struct vv_env *env, void *arg);
/* A message arrived on a channel. data is borrowed for the call. */
typedef void (*vv_env_recv_cb)(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES],
                               const uint8_t *data, size_t len, void *arg);
/* A datagram arrived for a channel: claimed is the node ID its envelope claims (nobody has
 * proved it), from the numeric source address, frame one frame that passed vv_wire_check
 * (at most VV_ENV_MAX_DATAGRAM_FRAME_BYTES). All borrowed for the call. */
typedef void (*vv_env_datagram_cb)(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                                   const char *from, const uint8_t *frame, size_t len, void *arg);
/* A peer connected (up) or disconnected (!up). */
typedef void (*vv_env_peer_cb)(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up,
                               void *arg);

/* What an implementation provides. impl is the implementation's own per-node state. */
struct vv_env_ops {
    uint64_t (*now_ms)(void *impl);
    /* Returns a timer id > 0. repeat_ms 0 = one-shot. */
    uint64_t (*timer_start)(void *impl, uint64_t delay_ms, uint64_t repeat_ms, vv_env_timer_cb cb,
                            void *arg);
    /* Cancelling an id that already fired (one-shot) or is unknown does nothing. */
    void (*timer_cancel)(void *impl, uint64_t id);
    void (*random_bytes)(void *impl, void *buf, size_t len);
    /* Queues data for peer on channel. VV_ECONN_NOT_CONNECTED, VV_ECONN_BACKPRESSURE, ... */
    int (*send)(void *impl, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                const uint8_t *data, size_t len);
    /* Asks for a connection to peer (by ID, or by address when peer is NULL). Completion is
     * reported through the peer callbacks. */
    int (*connect)(void *impl, const uint8_t *peer, const char *address);
    void (*disconnect)(void *impl, const uint8_t peer[VV_NODE_ID_BYTES]);
    /* Ed25519 verification; the simulator may memoize it (a pure function of its inputs). */
    bool (*verify)(void *impl, const uint8_t pk[VV_ED25519_PK_BYTES], const uint8_t *msg,
                   size_t len, const uint8_t sig[64]);
    /* Wall-clock time in ms since 1970 (hybrid logical clocks need it). May be NULL: then
     * now_ms plus a fixed epoch stands in, which is what a simulation wants. */
    uint64_t (*wall_ms)(void *impl);
    /* Runs work(job) off the loop (a worker thread), then done(job) on the loop; returns 0,
     * or an error and then neither runs. done runs even after the env ended, and must then
     * touch nothing but job. May be NULL: the work runs inline instead (the simulator, the
     * fake env). Used by vivim/env_verify.h. */
    int (*offload)(void *impl, void (*work)(void *job), void (*done)(void *job), void *job);
    /* Sends one frame (already checked, at most VV_ENV_MAX_DATAGRAM_FRAME_BYTES) in a
     * datagram envelope carrying this node's ID to address (canonical numeric "ip:port" or
     * "[v6]:port"). 0 when handed to the network (it may still be lost),
     * VV_ECONN_BACKPRESSURE when the socket's buffer is full (dropped), another error when
     * the address cannot be sent to. NULL: the environment has no datagrams. */
    int (*datagram)(void *impl, const char *address, const uint8_t *frame, size_t len);
};

struct vv_wire_frame;
/* A request arrived for this channel's server (vivim/env_request.h); ctx answers it. */
typedef void (*vv_env_serve_cb)(struct vv_env *env, uint64_t ctx,
                                const uint8_t peer[VV_NODE_ID_BYTES],
                                const struct vv_wire_frame *request, void *arg);

/*
 * Peers on demand: who answers vv_env_want_peer and vv_env_release_peer on this env. The
 * connection manager registers itself here when it starts on an env (vv_connmgr_new), in the
 * daemon and in the simulator alike, so a module's requests meet the same policy in both.
 */
struct vv_env_peer_manager {
    int (*want)(void *arg, const uint8_t id[VV_NODE_ID_BYTES], const char *address, const char *tag,
                uint32_t weight);
    int (*release)(void *arg, const uint8_t id[VV_NODE_ID_BYTES], const char *tag);
    void *arg;
};

struct vv_env_channel {
    vv_env_recv_cb recv;
    vv_env_peer_cb peer;
    void *arg;
    /* The channel's request server, or NULL (vv_env_set_server in vivim/env_request.h). */
    vv_env_serve_cb serve;
    void *serve_arg;
    /* The channel's datagram handler, or NULL (vv_env_set_datagram_handler). */
    vv_env_datagram_cb datagram;
    void *datagram_arg;
};

/* What vv_env_deliver_datagram did with the datagrams it was given (monotonic). */
struct vv_env_datagram_stats {
    uint64_t delivered;  /* to a channel's handler or to the request layer */
    uint64_t bad_frame;  /* the frame failed vv_wire_check or was over the size limit */
    uint64_t unhandled;  /* no handler on its channel and not the request layer's */
    uint64_t sent;       /* accepted by the implementation */
    uint64_t send_fails; /* refused by the implementation (back-pressure, address) */
};

struct vv__env_peer_ev {
    uint8_t peer[VV_NODE_ID_BYTES];
    bool up;
};

struct vv_env {
    const struct vv_env_ops *ops;
    void *impl;
    const struct vv_identity *identity; /* this node's keys and ID */
    struct vv_env_channel channels[VV_ENV_MAX_CHANNELS];
    struct vv_env_peer_manager peers; /* all NULL until a connection manager registers */
    /* Peer events raised while the channels are being told of another (a module that
     * disconnects a peer from its "up" callback) wait here and are told after it, in order:
     * no channel hears "down" before "up", whichever driver raised them (env.c). */
    bool dispatching;
    struct vv__env_peer_ev *held; /* NULL unless events are held */
    size_t n_held, cap_held;
    /* The request/response layer's state (src/env/request.c); NULL until a module first
     * sends a request, serves a channel or sets limits. Freed by vv_env_fini. */
    struct vv__env_req *req;
    /* Batched signature checks (src/env/verify.c, vivim/env_verify.h); NULL until the first
     * check. Freed by vv_env_fini. */
    struct vv__env_verify *verify;
    struct vv_env_datagram_stats dgram;
};

/* Called by modules. Sets the channel's message and peer-event handlers (its request server,
 * if any, is left as it is). */
void vv_env_set_channel(struct vv_env *env, enum vv_channel ch, vv_env_recv_cb recv,
                        vv_env_peer_cb peer, void *arg);

static inline uint64_t vv_env_now(struct vv_env *env)
{
    return env->ops->now_ms(env->impl);
}
#define VV_ENV_SIM_EPOCH_MS UINT64_C(1800000000000) /* 2027-01-15: simulated wall time 0 */
static inline uint64_t vv_env_wall_ms(struct vv_env *env)
{
    return env->ops->wall_ms ? env->ops->wall_ms(env->impl)
                             : VV_ENV_SIM_EPOCH_MS + env->ops->now_ms(env->impl);
}
static inline uint64_t vv_env_timer_start(struct vv_env *env, uint64_t delay_ms, uint64_t repeat_ms,
                                          vv_env_timer_cb cb, void *arg)
{
    return env->ops->timer_start(env->impl, delay_ms, repeat_ms, cb, arg);
}
static inline void vv_env_timer_cancel(struct vv_env *env, uint64_t id)
{
    if (id != 0)
        env->ops->timer_cancel(env->impl, id);
}
static inline void vv_env_random(struct vv_env *env, void *buf, size_t len)
{
    env->ops->random_bytes(env->impl, buf, len);
}
/* A uniformly distributed number in [0, bound), bound > 0, without modulo bias. */
uint64_t vv_env_random_below(struct vv_env *env, uint64_t bound);
static inline int vv_env_send(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES],
                              enum vv_channel ch, const uint8_t *data, size_t len)
{
    return env->ops->send(env->impl, peer, (uint8_t)ch, data, len);
}
static inline int vv_env_connect(struct vv_env *env, const uint8_t *peer, const char *address)
{
    return env->ops->connect(env->impl, peer, address);
}
/*
 * Asks for a connection to the node `id` and keeps it while the tag is held: the connection
 * manager dials it now (or when its address becomes known, or its backoff ends), re-dials it
 * after failures while the tag is held, and trims it last (docs/architecture.md, "Peers on
 * demand"). address may be NULL (then the address book, a HELLO or peer exchange supply it).
 * tag is a short reason (at most VV_ENV_TAG_BYTES - 1 bytes, e.g. "crdt"); wanting a peer
 * again with the same tag only updates its weight. Returns 0, VV_EINVAL, VV_ELIMIT when the
 * peer has too many tags or too many peers are tagged (counted), or VV_ESTATE when no
 * connection manager runs on this env.
 */
#define VV_ENV_TAG_BYTES 16
static inline int vv_env_want_peer(struct vv_env *env, const uint8_t id[VV_NODE_ID_BYTES],
                                   const char *address, const char *tag, uint32_t weight)
{
    if (env->peers.want == NULL)
        return VV_ESTATE;
    return env->peers.want(env->peers.arg, id, address, tag, weight);
}
/* Gives up the tag; the connection stays until trimming or the peer closes it. Releasing a
 * tag that is not held does nothing. Returns 0 or VV_ESTATE (no connection manager). */
static inline int vv_env_release_peer(struct vv_env *env, const uint8_t id[VV_NODE_ID_BYTES],
                                      const char *tag)
{
    if (env->peers.release == NULL)
        return VV_ESTATE;
    return env->peers.release(env->peers.arg, id, tag);
}
/* Called by the connection manager (NULLs unregister). */
void vv_env_set_peer_manager(struct vv_env *env, const struct vv_env_peer_manager *pm);
static inline void vv_env_disconnect(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES])
{
    env->ops->disconnect(env->impl, peer);
}
static inline bool vv_env_verify(struct vv_env *env, const uint8_t pk[VV_ED25519_PK_BYTES],
                                 const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    return env->ops->verify(env->impl, pk, msg, len, sig);
}
/*
 * Datagrams. vv_env_send_datagram sends frame (one whole wire frame, copied; its type's high
 * byte names the channel) to address, a numeric "ip:port" or "[v6]:port" (no names: no DNS
 * on this path). Returns 0 when the implementation took it (it may still be lost),
 * VV_EWIRE_TOO_LARGE over VV_ENV_MAX_DATAGRAM_FRAME_BYTES, VV_EINVAL for a frame that fails
 * vv_wire_check, VV_EDGRAM_ADDRESS for an address that is not numeric, VV_EDGRAM_UNSUPPORTED
 * when the environment has no datagrams, or the implementation's error
 * (VV_ECONN_BACKPRESSURE: the socket's buffer is full, the datagram dropped).
 */
int vv_env_send_datagram(struct vv_env *env, const char *address, const uint8_t *frame, size_t len);
/* Sets the channel's datagram handler (cb NULL removes it: its datagrams are dropped). */
void vv_env_set_datagram_handler(struct vv_env *env, enum vv_channel ch, vv_env_datagram_cb cb,
                                 void *arg);
/*
 * Canonical form of a numeric address: "a.b.c.d:port" or "[v6]:port" as inet_ntop writes
 * the IP, so two spellings of one address compare equal as strings. Returns 0, or
 * VV_EDGRAM_ADDRESS (not numeric, no port, port 0, or out won't hold it). out may be in.
 */
int vv_env_address_canon(const char *in, char *out, size_t cap);
/* The IP of a canonical address, without port or brackets, into out. 0 or VV_EINVAL. */
int vv_env_address_ip(const char *address, char *out, size_t cap);

/* Why a datagram's envelope was refused (vv_env_datagram_open). */
enum vv_env_dgram_verdict {
    VV_DGRAM_OK = 0,
    VV_DGRAM_SHORT,    /* fewer bytes than the envelope */
    VV_DGRAM_OVERSIZE, /* more than VV_ENV_MAX_DATAGRAM_BYTES */
    VV_DGRAM_MAGIC,    /* does not start with "VD" */
    VV_DGRAM_VERSION,  /* another version than VV_ENV_DATAGRAM_VERSION */
    VV_DGRAM_FLAGS,    /* flags not 0 */
    VV_DGRAM_N_VERDICTS,
};
/* "ok", "short", "oversize", "magic", "version", "flags". */
const char *vv_env_datagram_verdict_name(enum vv_env_dgram_verdict v);
/* Writes the envelope for this node's ID then frame into out (cap at least
 * VV_ENV_DATAGRAM_HEADER_BYTES + len); returns the bytes written. For implementations. */
size_t vv_env_datagram_seal(const uint8_t id[VV_NODE_ID_BYTES], const uint8_t *frame, size_t len,
                            uint8_t *out, size_t cap);
/* Reads a datagram's envelope: on VV_DGRAM_OK, *claimed points at the claimed ID and
 * (*frame, *frame_len) at the frame (not yet checked), all inside buf. */
enum vv_env_dgram_verdict vv_env_datagram_open(const uint8_t *buf, size_t len,
                                               const uint8_t **claimed, const uint8_t **frame,
                                               size_t *frame_len);

/* Signs with this node's key (a pure computation, the same in every implementation). */
void vv_env_sign(struct vv_env *env, const uint8_t *msg, size_t len, uint8_t sig[64]);

/*
 * Called by implementations: hand an arrived message or a peer event to the modules.
 *
 * vv_env_deliver first offers the message to the request layer (vivim/env_request.h): an
 * answer (a frame whose type's low byte is 0xfe or 0xff) completes the request it names, and
 * a request (request id not 0) on a channel with a server goes to that server; everything
 * else reaches the channel's recv handler as it arrived. vv_env_peer_event for a peer going
 * down first fails every request outstanding to it and drops the requests it had us serving,
 * then tells the channels (so a channel that hears "down" has nothing outstanding there).
 */
void vv_env_deliver(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], uint8_t channel,
                    const uint8_t *data, size_t len);
void vv_env_peer_event(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up);
/*
 * Called by implementations with a datagram's frame once its envelope was opened: from is
 * the source address in canonical form (vv_env_address_canon). The frame is checked
 * (vv_wire_check, at most VV_ENV_MAX_DATAGRAM_FRAME_BYTES); then an answer or a request for
 * a served channel goes to the request layer, the rest to the channel's datagram handler.
 * Returns 0 when delivered, the check's error for a bad frame (VV_EWIRE_TOO_LARGE over the
 * limit), VV_ENOTFOUND when nobody takes it; every datagram not delivered is dropped and
 * counted in env->dgram.
 */
int vv_env_deliver_datagram(struct vv_env *env, const uint8_t claimed[VV_NODE_ID_BYTES],
                            const char *from, const uint8_t *frame, size_t len);
/*
 * Opens a whole datagram (envelope and frame) and delivers its frame as above: what an
 * implementation calls with the bytes a socket read. *verdict (may be NULL) says what the
 * envelope check found. Returns vv_env_deliver_datagram's result, or VV_EDGRAM_MALFORMED
 * for a refused envelope (dropped).
 */
int vv_env_receive_datagram(struct vv_env *env, const char *from, const uint8_t *buf, size_t len,
                            enum vv_env_dgram_verdict *verdict);
/*
 * Called by implementations when an environment ends (the daemon's close, a simulated
 * node's crash or the simulation's end): frees what env.c and the request layer hold and
 * cancels the layer's timer. Requests still outstanding are dropped without a callback (the
 * modules that sent them are gone or going), and so are signature checks not yet given
 * their verdict. The env may be used again afterwards, empty.
 */
void vv_env_fini(struct vv_env *env);

#endif
