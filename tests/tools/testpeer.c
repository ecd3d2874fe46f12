/*
 * vivim-testpeer: a scripted peer for the integration tests, playing the parts a real
 * vivimd never would. It completes a genuine handshake (its own fresh identity) with the
 * node at HOST:PORT and then misbehaves as MODE says:
 *
 *   handshake        complete the handshake, print the node's ID, wait for one frame, exit
 *   garbage          then send raw bytes that are no sealed message at all
 *   badframe         then send a correctly sealed message that is not a wire frame
 *   oversized        then send a length prefix of 2 GiB
 *   noread N SECS    then send N valid PING frames without ever reading the answers, and
 *                    hold the connection open for SECS seconds
 *   partial N SECS   then start a 1 MiB frame, send N bytes of it, and hold for SECS seconds
 *                    (exit 0 when the node closed the connection meanwhile, 3 when not)
 *   crdtpile DOC N AGENTS SECS
 *                    then offer a new text document DOC (its policy, made by this peer and
 *                    naming the node a writer: the node creates it and auto-joins), SYNC, and
 *                    one UPDATE of N one-item records over AGENTS replicas, all without
 *                    origins (tests/tools/seq_pile.h: the quadratic pile of issue 9), read
 *                    what the node sends for SECS seconds, exit 0
 *   crdtprobe DOC TYPE SECS
 *                    then ask for document DOC of TYPE (0..5) by name, as a connected node
 *                    that was not let in would: SYNC with an empty state vector and reply
 *                    true (in the form before access policies too, without version and
 *                    creator, which such a node answered); read for SECS seconds and print
 *                    how many CRDT frames of each kind
 *                    came back ("updates U syncs S policies P"), exit 0
 *   pubsubspam N SECS
 *                    then announce subscriptions to N distinct pubsub topics ("spam:" and a
 *                    number, prefixed by this peer's random ID so that two runs do not share
 *                    topics), in SUBSCRIPTIONS frames of 256, then read what the node sends
 *                    for SECS seconds; print "announced N", exit 0
 *   crdtorphan DOC SECS
 *                    then offer a new text document DOC as above, SYNC, and
 *                    one UPDATE that continues a replica's typing whose beginning is never
 *                    sent: it waits at the node for a dependency that never comes; read what
 *                    the node sends for SECS seconds, exit 0
 *
 * For the first four it exits 0 when the node closed the connection within 10 seconds (or,
 * for handshake, sent a frame), 1 otherwise. Plain blocking POSIX sockets: this is a test
 * tool, not part of the daemon.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <msgpack.h>
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "seq_pile.h"
#include "vivim/common.h"
#include "vivim/crdt_seq.h"
#include "vivim/crdt_sync.h"
#include "vivim/net.h"
#include "vivim/pubsub_wire.h"
#include "vivim/session.h"
#include "vivim/wire.h"

struct peer {
    int fd;
    bool established, got_frame;
    uint8_t node_id[VV_NODE_ID_BYTES];
    uint16_t frame_type;
    unsigned crdt_frames[4];      /* CRDT frames received, by low byte of the type (SYNC..POLICY) */
    const struct vv_identity *me; /* this peer's identity: creator of the documents it offers */
};

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void cb_write(void *arg, const uint8_t *data, size_t len)
{
    struct peer *p = arg;
    write_all(p->fd, data, len);
}

static void cb_established(void *arg, const uint8_t node_id[VV_NODE_ID_BYTES], const uint8_t pk[32],
                           const uint8_t *hello, size_t hello_len)
{
    (void)pk;
    (void)hello;
    (void)hello_len;
    struct peer *p = arg;
    p->established = true;
    memcpy(p->node_id, node_id, VV_NODE_ID_BYTES);
}

static void cb_frame(void *arg, const uint8_t *data, size_t len)
{
    struct peer *p = arg;
    struct vv_wire_header h;
    if (vv_wire_check(data, len, &h) != 0)
        return;
    if (!p->got_frame) {
        p->got_frame = true;
        p->frame_type = h.type;
    }
    if (h.type >= VV_CRDT_MSG_SYNC && h.type <= VV_CRDT_MSG_POLICY)
        p->crdt_frames[h.type - VV_CRDT_MSG_SYNC]++;
}

/* Seals one frame (at most a wire frame's size) and writes it. */
static void send_frame(struct peer *p, struct vv_session *s, const msgpack_sbuffer *sb)
{
    size_t n = sb->size + VV_SESSION_OVERHEAD;
    uint8_t *out = malloc(n);
    if (out == NULL || vv_session_seal(s, (const uint8_t *)sb->data, sb->size, out, n) != 0) {
        fprintf(stderr, "cannot seal a frame of %zu bytes\n", sb->size);
        exit(1);
    }
    write_all(p->fd, out, n);
    free(out);
}

/* Offers a new text document doc, made by this peer (its policy names the node a writer: the
 * node creates it and auto-joins this peer), syncs it, and sends one UPDATE. */
static void send_text_update(struct peer *p, struct vv_session *s, const char *doc,
                             const uint8_t *u, size_t ulen)
{
    struct vv_env env = {.identity = p->me}; /* for signing only */
    struct vv_crdt_policy *pol;
    if (vv_crdt_policy_make(&env, doc, VV_CRDT_KIND_TEXT, 0, 1, NULL, 0, p->node_id, 1, &pol) !=
        0) {
        fprintf(stderr, "cannot make a policy for %s\n", doc);
        exit(1);
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, VV_CRDT_MSG_POLICY, 0);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_bin(&pk, pol->len);
    msgpack_pack_bin_body(&pk, pol->bytes, pol->len);
    send_frame(p, s, &sb);
    msgpack_sbuffer_clear(&sb);
    vv_crdt_policy_free(pol);
    vv_wire_begin(&pk, VV_CRDT_MSG_SYNC, 0);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_uint64(&pk, VV_CRDT_KIND_TEXT);
    msgpack_pack_bin(&pk, 0); /* an empty state vector */
    msgpack_pack_false(&pk);
    msgpack_pack_uint64(&pk, 1); /* the policy's version */
    msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
    msgpack_pack_bin_body(&pk, p->me->node_id, VV_NODE_ID_BYTES); /* its creator */
    send_frame(p, s, &sb);
    msgpack_sbuffer_clear(&sb);
    vv_wire_begin(&pk, VV_CRDT_MSG_UPDATE, 0);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_str(&pk, strlen(doc));
    msgpack_pack_str_body(&pk, doc, strlen(doc));
    msgpack_pack_bin(&pk, ulen);
    msgpack_pack_bin_body(&pk, u, ulen);
    msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
    msgpack_pack_bin_body(&pk, p->me->node_id, VV_NODE_ID_BYTES);
    send_frame(p, s, &sb);
    msgpack_sbuffer_destroy(&sb);
    printf("sent %zu bytes\n", ulen);
    fflush(stdout);
}

/* Reads (and decrypts) what the node sends for secs seconds or until it closes; returns 0. */
static int read_for(struct peer *p, struct vv_session *s, int secs)
{
    uint8_t buf[65536];
    for (int waited = 0; waited < secs * 1000; waited += 100) {
        struct pollfd pfd = {p->fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) > 0) {
            ssize_t r = read(p->fd, buf, sizeof(buf));
            if (r <= 0 || vv_session_feed(s, buf, (size_t)r) != 0)
                break;
        }
    }
    return 0;
}

/* Reads until the node closes the connection; true if it did within timeout_ms. */
static bool wait_closed(int fd, int timeout_ms)
{
    uint8_t buf[4096];
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) > 0) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                return true;
        }
    }
    return false;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT handshake|garbage|badframe|oversized|noread N SECS\n",
                argv[0]);
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    const char *mode = argv[3];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(argv[1], argv[2], &hints, &res) != 0) {
        fprintf(stderr, "cannot resolve %s\n", argv[1]);
        return 1;
    }
    struct peer p = {.fd = socket(res->ai_family, SOCK_STREAM, 0)};
    if (p.fd >= 0 && strcmp(mode, "noread") == 0) {
        /* A small receive window, so the node's answers pile up on its side soon. */
        int small = 4096;
        setsockopt(p.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    }
    if (p.fd < 0 || connect(p.fd, res->ai_addr, res->ai_addrlen) != 0) {
        perror("connect");
        return 1;
    }
    freeaddrinfo(res);

    struct vv_identity id = {0};
    crypto_sign_keypair(id.public_key, id.secret_key);
    vv_identity_node_id(id.public_key, id.node_id);
    p.me = &id;
    struct vv_session_keys keys;
    vv_session_keys_init(&keys, &id);
    uint8_t hello[VV_SESSION_MAX_HELLO_BYTES];
    size_t hello_len;
    vv_net_hello_encode(5, 0, "", "", hello, sizeof(hello), &hello_len);
    struct vv_session_cbs cbs = {cb_write, cb_established, cb_frame};
    struct vv_session *s = vv_session_new(&keys, true, NULL, hello, hello_len, &cbs, &p);
    vv_session_start(s);
    uint8_t buf[65536];
    while (!p.established) {
        ssize_t n = read(p.fd, buf, sizeof(buf));
        if (n <= 0) {
            fprintf(stderr, "closed during the handshake\n");
            return 1;
        }
        if (vv_session_feed(s, buf, (size_t)n) != 0) {
            fprintf(stderr, "handshake failed\n");
            return 1;
        }
    }
    char hex[VV_NODE_ID_HEX_BYTES];
    vv_hex_encode(p.node_id, VV_NODE_ID_BYTES, hex);
    printf("%s\n", hex);
    fflush(stdout);

    int rc = 1;
    if (strcmp(mode, "handshake") == 0) {
        for (int i = 0; i < 100 && !p.got_frame; i++) {
            struct pollfd pfd = {p.fd, POLLIN, 0};
            if (poll(&pfd, 1, 100) > 0) {
                ssize_t n = read(p.fd, buf, sizeof(buf));
                if (n <= 0 || vv_session_feed(s, buf, (size_t)n) != 0)
                    break;
            }
        }
        if (p.got_frame)
            printf("frame type 0x%04x\n", p.frame_type);
        rc = p.got_frame ? 0 : 1;
    } else if (strcmp(mode, "garbage") == 0) {
        randombytes_buf(buf, 4096);
        /* A length prefix covering exactly the rest, so the bytes are read as one message. */
        buf[0] = 0;
        buf[1] = 0;
        buf[2] = (4096 - 4) >> 8;
        buf[3] = (4096 - 4) & 0xff;
        write_all(p.fd, buf, 4096);
        rc = wait_closed(p.fd, 10000) ? 0 : 1;
    } else if (strcmp(mode, "badframe") == 0) {
        static const uint8_t not_a_frame[] = "this is not a msgpack frame";
        uint8_t out[sizeof(not_a_frame) + VV_SESSION_OVERHEAD];
        vv_session_seal(s, not_a_frame, sizeof(not_a_frame), out, sizeof(out));
        write_all(p.fd, out, sizeof(out));
        rc = wait_closed(p.fd, 10000) ? 0 : 1;
    } else if (strcmp(mode, "oversized") == 0) {
        static const uint8_t len[] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0};
        write_all(p.fd, len, sizeof(len));
        rc = wait_closed(p.fd, 10000) ? 0 : 1;
    } else if (strcmp(mode, "noread") == 0 && argc >= 6) {
        long count = atol(argv[4]);
        int secs = atoi(argv[5]);
        /* PINGs (connection manager, type 0x0001): each asks the node for a PONG we never
         * read, so its queue towards us fills. */
        long sent = 0;
        for (long i = 0; i < count; i++) {
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            vv_wire_begin(&pk, 0x0001, 0);
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint64(&pk, (uint64_t)i + 1);
            msgpack_pack_uint64(&pk, (uint64_t)i);
            uint8_t out[256];
            vv_session_seal(s, (const uint8_t *)sb.data, sb.size, out, sizeof(out));
            size_t n = sb.size + VV_SESSION_OVERHEAD;
            msgpack_sbuffer_destroy(&sb);
            struct pollfd pfd = {p.fd, POLLOUT, 0};
            if (poll(&pfd, 1, 2000) <= 0)
                break; /* the node stopped reading from us too: that is allowed */
            ssize_t w = send(p.fd, out, n, MSG_NOSIGNAL);
            if (w != (ssize_t)n)
                break;
            sent++;
        }
        printf("sent %ld\n", sent);
        fflush(stdout);
        sleep((unsigned)secs);
        rc = 0;
    } else if (strcmp(mode, "partial") == 0 && argc >= 6) {
        size_t n = (size_t)atol(argv[4]);
        int secs = atoi(argv[5]);
        uint8_t len[4] = {0x00, 0x10, 0x00, 0x10}; /* 1 MiB + 16: the largest allowed */
        write_all(p.fd, len, sizeof(len));
        uint8_t *junk = malloc(n);
        randombytes_buf(junk, n);
        write_all(p.fd, junk, n);
        free(junk);
        printf("sent %zu\n", n);
        fflush(stdout);
        rc = wait_closed(p.fd, secs * 1000) ? 0 : 3;
    } else if (strcmp(mode, "crdtpile") == 0 && argc >= 8) {
        size_t ulen;
        uint8_t *u =
            vv_test_seq_pile((size_t)atol(argv[5]), (uint32_t)atol(argv[6]), 0x5eed0000, &ulen);
        send_text_update(&p, s, argv[4], u, ulen);
        free(u);
        rc = read_for(&p, s, atoi(argv[7]));
    } else if (strcmp(mode, "crdtprobe") == 0 && argc >= 7) {
        const char *doc = argv[4];
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_CRDT_MSG_SYNC, 0);
        msgpack_pack_array(&pk, 6);
        msgpack_pack_str(&pk, strlen(doc));
        msgpack_pack_str_body(&pk, doc, strlen(doc));
        msgpack_pack_uint64(&pk, (uint64_t)atoi(argv[5]));
        msgpack_pack_bin(&pk, 0); /* nothing yet: send everything */
        msgpack_pack_true(&pk);
        msgpack_pack_uint64(&pk, 0); /* no policy */
        uint8_t nobody[VV_NODE_ID_BYTES] = {0};
        msgpack_pack_bin(&pk, sizeof(nobody));
        msgpack_pack_bin_body(&pk, nobody, sizeof(nobody));
        send_frame(&p, s, &sb);
        msgpack_sbuffer_clear(&sb);
        vv_wire_begin(&pk, VV_CRDT_MSG_SYNC, 0);
        msgpack_pack_array(&pk, 4);
        msgpack_pack_str(&pk, strlen(doc));
        msgpack_pack_str_body(&pk, doc, strlen(doc));
        msgpack_pack_uint64(&pk, (uint64_t)atoi(argv[5]));
        msgpack_pack_bin(&pk, 0);
        msgpack_pack_true(&pk);
        send_frame(&p, s, &sb);
        msgpack_sbuffer_destroy(&sb);
        rc = read_for(&p, s, atoi(argv[6]));
        printf("updates %u syncs %u policies %u\n", p.crdt_frames[1], p.crdt_frames[0],
               p.crdt_frames[3]);
        fflush(stdout);
    } else if (strcmp(mode, "pubsubspam") == 0 && argc >= 6) {
        long count = atol(argv[4]);
        char hex8[9];
        vv_hex_encode(id.node_id, 4, hex8);
        static char names[VV_PUBSUB_MAX_SUBS_PER_FRAME][40];
        struct vv_pubsub_sub subs[VV_PUBSUB_MAX_SUBS_PER_FRAME];
        for (long from = 0; from < count; from += VV_PUBSUB_MAX_SUBS_PER_FRAME) {
            uint32_t n = (uint32_t)VV_MIN(count - from, (long)VV_PUBSUB_MAX_SUBS_PER_FRAME);
            for (uint32_t i = 0; i < n; i++) {
                int len = snprintf(names[i], sizeof(names[i]), "spam:%s:%ld", hex8, from + i);
                subs[i] = (struct vv_pubsub_sub){true, names[i], (size_t)len};
            }
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            vv_wire_begin(&pk, VV_PUBSUB_TYPE_SUBSCRIPTIONS, 0);
            if (vv_pubsub_subs_encode(&pk, subs, n) != 0) {
                fprintf(stderr, "cannot encode SUBSCRIPTIONS\n");
                return 1;
            }
            send_frame(&p, s, &sb);
            msgpack_sbuffer_destroy(&sb);
        }
        printf("announced %ld\n", count);
        fflush(stdout);
        rc = read_for(&p, s, atoi(argv[5]));
    } else if (strcmp(mode, "crdtorphan") == 0 && argc >= 6) {
        /* "lost" typed first (never sent), then "!" after it: the update sent. */
        struct vv_crdt_seq *t = vv_crdt_seq_new(0x0a5a0a5a0a5a0a5aull);
        uint8_t *u;
        size_t ulen;
        if (vv_crdt_seq_insert(t, 0, "lost", 4, &u, &ulen) != 0)
            return 1;
        vv_free(u);
        if (vv_crdt_seq_insert(t, 4, "!", 1, &u, &ulen) != 0)
            return 1;
        send_text_update(&p, s, argv[4], u, ulen);
        vv_free(u);
        vv_crdt_seq_free(t);
        rc = read_for(&p, s, atoi(argv[5]));
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        rc = 2;
    }
    vv_session_free(s);
    vv_session_keys_clear(&keys);
    close(p.fd);
    return rc;
}
