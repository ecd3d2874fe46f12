/*
 * The fake vv_env for unit tests: one implementation of include/vivim/env.h that a test
 * drives by hand, instead of a hand-written copy in every test file.
 *
 * What it gives:
 * - a manual clock: now_ms is a field; vv_fake_env_advance() moves it on and fires the
 *   timers that fall due, in (due time, start order), each with the clock at its due time;
 *   writing now_ms directly moves the clock without firing anything (timers that fell due
 *   then fire at the next advance, with the clock where it is); a repeating timer is
 *   re-armed its period after the clock at which it fired, as libuv does;
 * - vv_fake_env_fire_next() to run the next timer at once whatever its due time, for tests
 *   that drive a module's periodic tick by hand;
 * - random bytes from a seeded stream (the same seed gives the same bytes);
 * - an outbox: every accepted send is recorded (peer, channel, bytes) in order, and the
 *   test pops or inspects it;
 * - send failures on demand: every send refused with a code, sends to peers not connected
 *   refused (require_connected), back-pressure past a number of queued bytes per peer;
 * - connect and disconnect calls recorded; disconnect may report "down" at once;
 * - verify is libsodium's Ed25519, counted; the identity is a real key pair from the seed;
 * - a fake net joining two or more fake envs: messages in their outboxes are delivered to
 *   the env whose node ID they name, in the order they were sent across the whole net.
 *
 * Usage:
 *
 *     struct vv_fake_env a;
 *     vv_fake_env_init(&a, 1);               // seed 1: keys and random stream
 *     struct vv_connmgr *cm = vv_connmgr_new(&a.env, &cfg);
 *     vv_fake_env_advance(&a, 1000);         // a second passes; its timers fire
 *     struct vv_fake_msg m;
 *     assert_true(vv_fake_env_pop(&a, &m));  // what it sent first
 *     vv_fake_msg_free(&m);
 *     vv_connmgr_free(cm);
 *     vv_fake_env_free(&a);                  // frees outbox, timers and records
 *
 * Two nodes: vv_fake_net_init(&net); vv_fake_net_add(&net, &a); vv_fake_net_add(&net, &b);
 * then vv_fake_net_pump(&net) delivers until no message is in flight.
 *
 * The ops table is a copy in each fake (fe->ops), filled by vv_fake_env_init from
 * vv_fake_env_default_ops: a test may replace one op for itself, and an op added to
 * struct vv_env_ops later gets its default in one place (fake_env.c) or stays NULL until a
 * test sets it. Everything is allocated with vv_xmalloc, so cmocka's allocator (vv_test.h)
 * sees a fake that was not freed. Not thread-safe; one loop, like the module under test.
 */
#ifndef VV_FAKE_ENV_H
#define VV_FAKE_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/env.h"
#include "vivim/identity.h"

/* A message a fake env accepted for sending. data is owned by whoever holds the record. */
struct vv_fake_msg {
    uint8_t from[VV_NODE_ID_BYTES]; /* the sender's node ID */
    uint8_t peer[VV_NODE_ID_BYTES]; /* whom it was sent to */
    uint8_t channel;
    uint8_t *data;
    size_t len;
    uint64_t seq;     /* send order across the fake net (or within the env without one) */
    uint64_t sent_ms; /* the sender's clock at the send */
};

/* A connect call: peer all zero and has_peer false when the module dialled by address. */
struct vv_fake_connect {
    bool has_peer;
    uint8_t peer[VV_NODE_ID_BYTES];
    char address[128]; /* "" when none was given; longer ones are cut */
};

struct vv_fake_timer {
    uint64_t id; /* > 0 */
    uint64_t due_ms;
    uint64_t repeat_ms; /* 0 = one-shot */
    uint64_t seq;       /* start order: ties on due_ms fire in it */
    vv_env_timer_cb cb;
    void *arg;
};

struct vv_fake_net;

struct vv_fake_env {
    struct vv_env env; /* hand &fe->env to the module under test */
    struct vv_env_ops ops;
    struct vv_identity id; /* a real Ed25519 key pair from the seed; tests may set node_id */
    uint64_t now_ms;       /* the clock; 1000 after init */
    uint64_t rng[4];       /* xoshiro256** state */

    /* Timers, unordered; the next to fire is found by a scan (tests keep a handful). */
    struct vv_fake_timer *timers;
    size_t n_timers, cap_timers;
    uint64_t next_timer_id, next_timer_seq;
    uint64_t timers_fired;

    /* The outbox: accepted sends not yet popped or delivered, oldest first from out_head. */
    struct vv_fake_msg *out;
    size_t out_head, out_tail, cap_out;
    uint64_t sends;        /* accepted */
    uint64_t sends_failed; /* refused for any of the reasons below */

    /* Send failures, checked in this order. */
    int send_rc;             /* if non-zero, every send returns it */
    bool require_connected;  /* sends to peers not marked connected: NOT_CONNECTED */
    size_t peer_queue_bytes; /* if non-zero: more queued for one peer = BACKPRESSURE */
    uint8_t (*connected)[VV_NODE_ID_BYTES]; /* peers marked connected, in the order marked */
    size_t n_connected, cap_connected;

    /* connect and disconnect. */
    int connect_rc; /* returned by connect (the call is recorded either way) */
    struct vv_fake_connect *connects;
    size_t n_connects, cap_connects;
    uint8_t (*disconnects)[VV_NODE_ID_BYTES];
    size_t n_disconnects, cap_disconnects;
    bool report_disconnects; /* disconnect raises "down" at once, as the simulator does */

    uint64_t verifies; /* verify calls */

    struct vv_fake_net *net; /* set by vv_fake_net_add */

    /* ---- transport habits (the "links by hand" section at the end) ---- */
    /* connect with no address (NULL or "") is recorded, then refused VV_ECONN_NOT_CONNECTED,
     * as the daemon's transport does: it dials addresses, not bare IDs. */
    bool connect_needs_address;
    /* A send that passes every check above fails instead, as the daemon's transport does when
     * a socket write fails: the peer is marked not connected, "down" is raised from inside the
     * send, and the send returns VV_ECONN_NOT_CONNECTED (counted in sends_failed). */
    bool down_on_send;
    struct vv_fake_dgrams *dgrams; /* the datagrams block at the end of this file */
};

/* The ops vv_fake_env_init copies into fe->ops. */
extern const struct vv_env_ops vv_fake_env_default_ops;

/* Sets up fe: clock at 1000 ms, random stream and key pair from seed, empty records. */
void vv_fake_env_init(struct vv_fake_env *fe, uint64_t seed);
/* Frees everything the fake holds (outbox included). The module must be freed first: its
 * timer cancels still reach the fake. */
void vv_fake_env_free(struct vv_fake_env *fe);

/* ---- clock and timers ---- */

/* Moves the clock on by ms, firing every timer due by then in (due, start order), each with
 * now_ms set to its due time (or left where it is, if it fell due in the past). Timers that
 * callbacks start are fired too if due in time. Returns the number fired. */
uint64_t vv_fake_env_advance(struct vv_fake_env *fe, uint64_t ms);
/* Fires the timer that would fire next, now, without moving the clock; a repeating timer is
 * re-armed repeat_ms from now. Returns false when no timer is pending. */
bool vv_fake_env_fire_next(struct vv_fake_env *fe);
/* Pending timers; one_shot_only counts only those that fire once. */
size_t vv_fake_env_timers_pending(const struct vv_fake_env *fe, bool one_shot_only);
/* The pending timer with this id, or NULL. */
const struct vv_fake_timer *vv_fake_env_timer(const struct vv_fake_env *fe, uint64_t id);

/* ---- outbox ---- */

/* Messages sent and not yet popped or delivered. */
size_t vv_fake_env_outbox_len(const struct vv_fake_env *fe);
/* The i-th oldest of them (borrowed, valid until the next send, pop or delivery), or NULL. */
const struct vv_fake_msg *vv_fake_env_peek(const struct vv_fake_env *fe, size_t i);
/* Takes the oldest into *out (the caller then owns out->data: vv_fake_msg_free). Returns
 * false when the outbox is empty. */
bool vv_fake_env_pop(struct vv_fake_env *fe, struct vv_fake_msg *out);
/* Drops every message in the outbox. */
void vv_fake_env_clear_outbox(struct vv_fake_env *fe);
/* How many messages in the outbox go to peer on channel (either may be "any": peer NULL,
 * channel -1). */
size_t vv_fake_env_count_sent(const struct vv_fake_env *fe, const uint8_t *peer, int channel);
void vv_fake_msg_free(struct vv_fake_msg *m);

/* ---- peers ---- */

/* Marks peer connected (for require_connected) and raises "up" on the env's channels. */
void vv_fake_env_peer_up(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES]);
/* Marks peer not connected and raises "down". */
void vv_fake_env_peer_down(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES]);
bool vv_fake_env_is_connected(const struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES]);
/* How many times the module disconnected peer. */
size_t vv_fake_env_disconnect_count(const struct vv_fake_env *fe,
                                    const uint8_t peer[VV_NODE_ID_BYTES]);
/* Whether the module dialled an address containing needle. */
bool vv_fake_env_dialled(const struct vv_fake_env *fe, const char *needle);

/* Hands data to the module as if peer had sent it on channel. */
void vv_fake_env_deliver(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES],
                         uint8_t channel, const uint8_t *data, size_t len);
/* Delivers m to `to` as from m->from, then frees m's data. */
void vv_fake_env_deliver_msg(struct vv_fake_env *to, struct vv_fake_msg *m);

/* ---- several envs ---- */

#define VV_FAKE_NET_MAX_ENVS 16

/* Envs whose outboxes are delivered to each other, by node ID. */
struct vv_fake_net {
    struct vv_fake_env *envs[VV_FAKE_NET_MAX_ENVS];
    size_t n_envs;
    uint64_t next_seq;
    uint64_t delivered, dropped; /* dropped: addressed to no env of the net */
};

void vv_fake_net_init(struct vv_fake_net *net);
/* Adds fe (not owned). Messages fe sends from now on are numbered in the net's order. */
void vv_fake_net_add(struct vv_fake_net *net, struct vv_fake_env *fe);
/* Marks a and b connected to each other and raises "up" on both (a first). */
void vv_fake_net_connect(struct vv_fake_net *net, struct vv_fake_env *a, struct vv_fake_env *b);
/* Messages in flight in the whole net. */
size_t vv_fake_net_in_flight(const struct vv_fake_net *net);
/* Delivers the message sent first of all in flight. Returns false when none is. */
bool vv_fake_net_deliver_one(struct vv_fake_net *net);
/* Delivers until nothing is in flight (messages sent by receivers included). Returns the
 * number delivered. */
size_t vv_fake_net_pump(struct vv_fake_net *net);
/* The env whose node ID is id, or NULL. */
struct vv_fake_env *vv_fake_net_find(const struct vv_fake_net *net,
                                     const uint8_t id[VV_NODE_ID_BYTES]);
/* Moves every env's clock on by ms together, firing timers in due order across envs;
 * messages are not delivered (pump for that). Returns the number of timers fired. */
uint64_t vv_fake_net_advance(struct vv_fake_net *net, uint64_t ms);

/* ---- links by hand ----
 * For tests that cut and mend links themselves, watch what the net is about to deliver, or
 * lose messages on the way. */

/* Marks peer connected or not (for require_connected) without raising any event: a link
 * the test sets up before the modules start, or cuts silently. */
void vv_fake_env_set_connected(struct vv_fake_env *fe, const uint8_t peer[VV_NODE_ID_BYTES],
                               bool connected);
/* The message vv_fake_net_deliver_one delivers next (borrowed, valid until the next send,
 * delivery or drop), or NULL when none is in flight. */
const struct vv_fake_msg *vv_fake_net_peek(const struct vv_fake_net *net);
/* Loses the message vv_fake_net_deliver_one would deliver next (counted in dropped).
 * Returns false when none is in flight. */
bool vv_fake_net_drop_one(struct vv_fake_net *net);
/* The link between a and b goes down: both are marked not connected, "down" is raised on
 * both (a first), and the messages in flight between them, either way, are lost (counted in
 * dropped). Messages to or from other envs stay. */
void vv_fake_net_disconnect(struct vv_fake_net *net, struct vv_fake_env *a, struct vv_fake_env *b);
/* ---- datagrams ------------------------------------------------------------------------
 *
 * A fake env sends datagrams (vv_env_send_datagram) into a datagram outbox of its own; a
 * fake net delivers them to the env whose address they name, as whole datagrams (envelope
 * opened by vv_env_receive_datagram, so its checks run), with the sender's address as the
 * source. Each env has an address: by default "10.a.b.c:4747" from the first three bytes of
 * its node ID, or one set with vv_fake_env_set_address. Datagrams and messages share the
 * net's send numbering, so vv_fake_net_pump_all delivers both in the order sent; a test
 * that wants loss or reordering pops datagrams and delivers (or drops) them itself.
 */

/* A datagram a fake env accepted for sending: the whole datagram, envelope included. */
struct vv_fake_dgram {
    uint8_t from[VV_NODE_ID_BYTES];
    char from_address[VV_ENV_ADDRESS_BYTES];
    char to[VV_ENV_ADDRESS_BYTES]; /* canonical */
    uint8_t *data;                 /* owned by whoever holds the record */
    size_t len;
    uint64_t seq;
};

/* Sets fe's address (copied; canonicalised). Returns 0 or VV_EDGRAM_ADDRESS. */
int vv_fake_env_set_address(struct vv_fake_env *fe, const char *address);
/* fe's address (borrowed, valid while fe lives). */
const char *vv_fake_env_address(struct vv_fake_env *fe);
/* If non-zero, every datagram send returns it (and nothing is queued). */
void vv_fake_env_set_datagram_rc(struct vv_fake_env *fe, int rc);
/* Datagrams sent and not yet popped or delivered, and how many were accepted in all. */
size_t vv_fake_env_datagrams_pending(const struct vv_fake_env *fe);
uint64_t vv_fake_env_datagrams_sent(const struct vv_fake_env *fe);
/* The i-th oldest pending datagram (borrowed), or NULL. */
const struct vv_fake_dgram *vv_fake_env_peek_datagram(const struct vv_fake_env *fe, size_t i);
/* Takes the oldest into *out (then the caller's: vv_fake_dgram_free). False when none. */
bool vv_fake_env_pop_datagram(struct vv_fake_env *fe, struct vv_fake_dgram *out);
void vv_fake_dgram_free(struct vv_fake_dgram *d);
/* Hands a whole datagram (envelope and frame) to fe as if it came from address from.
 * Returns vv_env_receive_datagram's result. */
int vv_fake_env_receive_datagram(struct vv_fake_env *fe, const char *from, const uint8_t *data,
                                 size_t len);
/* Delivers d to `to` from d's sender address, then frees d's data. Returns as above. */
int vv_fake_env_deliver_dgram(struct vv_fake_env *to, struct vv_fake_dgram *d);

/* The env of the net with this address, or NULL. */
struct vv_fake_env *vv_fake_net_find_address(const struct vv_fake_net *net, const char *address);
/* Delivers the datagram sent first of all pending in the net (to no env: dropped, counted
 * in *undeliverable if not NULL). Returns false when none is pending. */
bool vv_fake_net_deliver_datagram_one(struct vv_fake_net *net, uint64_t *undeliverable);
/* Delivers messages and datagrams, oldest first, until none is in flight. Returns how many. */
size_t vv_fake_net_pump_all(struct vv_fake_net *net);

#endif
