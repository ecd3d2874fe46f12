/*
 * One node's pubsub throughput (issue 12, "Benchmarks"): unique signed messages per second
 * that one router receives from a peer, verifies (off the loop, on the env's worker
 * threads, as in vivimd), delivers and forwards to its mesh.
 *
 * Three ends on one libuv loop over real loopback connections (Noise sessions, frames):
 * a source that sends pre-signed 256-byte MESSAGE frames of 16 origins, the node running
 * the router (vv_pubsub on vv_env_uv) joined to the topic, and a sink in the node's mesh
 * (it GRAFTs) that counts the copies forwarded to it. The source keeps at most
 * IN_FLIGHT_MAX messages between sending and the node's verdict, so that nothing is dropped
 * for lack of verification slots (VV_VERIFY_MAX_ITEMS): the figure is what the node
 * sustains. The source's sealing and the sink's opening run on the same loop thread as the
 * node, so the figure is a lower bound of the node alone.
 *
 * Not measured here: deliveries to RPC subscribers (pubsub.message notifications) and the
 * Redis PUBLISH reference of issue 12.
 *
 * Usage: bench_pubsub_node [messages] (default 50,000). Prints a Markdown table.
 */
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "vivim/common.h"
#include "vivim/env_uv.h"
#include "vivim/net.h"
#include "vivim/pubsub.h"
#include "vivim/wire.h"

#define ORIGINS       16
#define DATA_BYTES    256
#define IN_FLIGHT_MAX 2048
#define STALL_S       20.0

static const char TOPIC[] = "bench:node";
#define TOPIC_LEN (sizeof(TOPIC) - 1)

struct end {
    struct vv_identity id;
    struct vv_session_keys keys;
    struct vv_env_uv *envu;
    struct vv_net *net;
    uint64_t ups;
    uint64_t messages; /* MESSAGE frames received (the sink) */
};

static uv_loop_t loop;
static uint64_t delivered;

static void raw_recv(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], const uint8_t *data,
                     size_t len, void *arg)
{
    (void)env;
    (void)peer;
    struct end *e = arg;
    struct vv_wire_header h;
    if (vv_wire_check(data, len, &h) == 0 && h.type == VV_PUBSUB_TYPE_MESSAGE)
        e->messages++;
}

static void raw_peer(struct vv_env *env, const uint8_t peer[VV_NODE_ID_BYTES], bool up, void *arg)
{
    (void)env;
    (void)peer;
    struct end *e = arg;
    if (up)
        e->ups++;
}

static void on_deliver(void *arg, const struct vv_pubsub_msg *m,
                       const uint8_t id[VV_PUBSUB_ID_BYTES])
{
    (void)arg;
    (void)m;
    (void)id;
    delivered++;
}

static void end_init(struct end *e, bool raw)
{
    memset(e, 0, sizeof(*e));
    crypto_sign_keypair(e->id.public_key, e->id.secret_key);
    vv_identity_node_id(e->id.public_key, e->id.node_id);
    vv_session_keys_init(&e->keys, &e->id);
    e->envu = vv_env_uv_new(&loop, &e->id);
    if (raw)
        vv_env_set_channel(vv_env_uv_env(e->envu), VV_CHANNEL_PUBSUB, raw_recv, raw_peer, e);
    struct vv_net_config cfg;
    vv_net_config_defaults(&cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.peer_queue_bytes = 64u << 20;
    cfg.memory_budget_bytes = 1ull << 30;
    uint8_t hello[64];
    size_t hl;
    vv_net_hello_encode(3, 0, "127.0.0.1:1", "", hello, sizeof(hello), &hl);
    cfg.hello = hello;
    cfg.hello_len = hl;
    char err[256];
    e->net = vv_net_new(&loop, &e->keys, e->envu, &cfg, err, sizeof(err));
    if (e->net == NULL || vv_net_listen(e->net, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_pubsub_node: %s\n", err);
        exit(1);
    }
}

static void end_close(struct end *e)
{
    vv_net_close(e->net);
    vv_env_uv_close(e->envu);
    vv_session_keys_clear(&e->keys);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void send_body(struct end *from, const uint8_t *to, uint16_t type,
                      void (*pack)(msgpack_packer *pk))
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, type, 0);
    pack(&pk);
    if (vv_env_send(vv_env_uv_env(from->envu), to, VV_CHANNEL_PUBSUB, (const uint8_t *)sb.data,
                    sb.size) != 0) {
        fprintf(stderr, "bench_pubsub_node: cannot send a control frame\n");
        exit(1);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void pack_subscribe(msgpack_packer *pk)
{
    struct vv_pubsub_sub s = {true, TOPIC, TOPIC_LEN};
    (void)vv_pubsub_subs_encode(pk, &s, 1);
}

static void pack_graft(msgpack_packer *pk)
{
    struct vv_pubsub_topic_ref g = {TOPIC, TOPIC_LEN};
    struct vv_pubsub_control c = {.graft = &g, .n_graft = 1};
    (void)vv_pubsub_control_encode(pk, &c);
}

struct frame {
    uint8_t *bytes;
    size_t len;
};

/* n MESSAGE frames of DATA_BYTES random bytes, signed by ORIGINS identities in turn. */
static struct frame *make_messages(size_t n)
{
    struct vv_identity origins[ORIGINS];
    for (int i = 0; i < ORIGINS; i++) {
        crypto_sign_keypair(origins[i].public_key, origins[i].secret_key);
        vv_identity_node_id(origins[i].public_key, origins[i].node_id);
    }
    struct frame *f = vv_xcalloc(n, sizeof(*f));
    uint8_t data[DATA_BYTES];
    for (size_t i = 0; i < n; i++) {
        const struct vv_identity *o = &origins[i % ORIGINS];
        randombytes_buf(data, sizeof(data));
        struct vv_pubsub_msg m = {.from = o->node_id,
                                  .origin = o->public_key,
                                  .seqno = i + 1,
                                  .topic = TOPIC,
                                  .topic_len = TOPIC_LEN,
                                  .data = data,
                                  .data_len = sizeof(data)};
        uint8_t digest[VV_PUBSUB_DIGEST_BYTES], signed_bytes[VV_PUBSUB_SIGNED_BYTES];
        uint8_t sig[VV_PUBSUB_SIG_BYTES];
        vv_pubsub_msg_digest(&m, digest);
        vv_pubsub_signed_bytes(digest, signed_bytes);
        crypto_sign_detached(sig, NULL, signed_bytes, sizeof(signed_bytes), o->secret_key);
        m.sig = sig;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        vv_wire_begin(&pk, VV_PUBSUB_TYPE_MESSAGE, 0);
        if (vv_pubsub_msg_encode(&pk, &m) != 0) {
            fprintf(stderr, "bench_pubsub_node: cannot encode a message\n");
            exit(1);
        }
        f[i].len = sb.size;
        f[i].bytes = vv_xmalloc(sb.size);
        memcpy(f[i].bytes, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
    return f;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 50000;
    if (sodium_init() < 0 || n == 0)
        return 1;
    uv_loop_init(&loop);
    struct end src, node, sink;
    end_init(&src, true);
    end_init(&node, false);
    end_init(&sink, true);
    struct vv_pubsub_config cfg;
    vv_pubsub_config_defaults(&cfg);
    static const struct vv_pubsub_cbs cbs = {on_deliver, NULL};
    struct vv_pubsub *ps = vv_pubsub_new(vv_env_uv_env(node.envu), &cfg, &cbs, NULL);
    if (ps == NULL || vv_pubsub_join(ps, TOPIC, TOPIC_LEN) != 0)
        return 1;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", vv_net_bound_port(node.net));
    vv_net_connect(src.net, node.id.node_id, addr);
    vv_net_connect(sink.net, node.id.node_id, addr);
    while (src.ups < 1 || sink.ups < 1)
        uv_run(&loop, UV_RUN_ONCE);
    send_body(&sink, node.id.node_id, VV_PUBSUB_TYPE_SUBSCRIPTIONS, pack_subscribe);
    send_body(&sink, node.id.node_id, VV_PUBSUB_TYPE_CONTROL, pack_graft);
    while (vv_pubsub_mesh_size(ps, TOPIC, TOPIC_LEN) < 1)
        uv_run(&loop, UV_RUN_ONCE);

    double t_sign = now_s();
    struct frame *f = make_messages(n);
    t_sign = now_s() - t_sign;

    const struct vv_pubsub_stats *st = vv_pubsub_stats(ps);
    struct vv_env *src_env = vv_env_uv_env(src.envu);
    size_t sent = 0;
    double t0 = now_s(), c0 = cpu_s(), last_progress = t0;
    uint64_t last_done = 0;
    for (;;) {
        uint64_t done = st->delivered + st->invalid_signature + st->dropped_verify_busy;
        while (sent < n && sent - done < IN_FLIGHT_MAX) {
            int rc = vv_env_send(src_env, node.id.node_id, VV_CHANNEL_PUBSUB, f[sent].bytes,
                                 f[sent].len);
            if (rc != 0)
                break; /* the source's queue is full: let the loop move it */
            sent++;
        }
        if (done >= n && sink.messages >= st->delivered)
            break;
        uv_run(&loop, UV_RUN_ONCE);
        if (done != last_done) {
            last_done = done;
            last_progress = now_s();
        } else if (now_s() - last_progress > STALL_S) {
            fprintf(stderr, "bench_pubsub_node: stalled at %llu of %zu\n", (unsigned long long)done,
                    n);
            return 1;
        }
    }
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    printf("| measure | value |\n| --- | ---: |\n");
    printf("| messages (%d-byte data, %d origins) | %zu |\n", DATA_BYTES, ORIGINS, n);
    printf("| verified, delivered and forwarded per second | %.0f |\n", (double)n / wall);
    printf("| delivered here / forwarded to the mesh peer | %llu / %llu |\n",
           (unsigned long long)st->delivered, (unsigned long long)sink.messages);
    printf("| dropped (verification full, bad signature) | %llu, %llu |\n",
           (unsigned long long)st->dropped_verify_busy, (unsigned long long)st->invalid_signature);
    printf("| CPU seconds per 1,000 messages (all three ends, all threads) | %.4f |\n",
           cpu / (double)n * 1000.0);
    printf("| CPU cores busy on average | %.2f |\n", cpu / wall);
    printf("| signing them beforehand, one thread (messages/s) | %.0f |\n", (double)n / t_sign);
    for (size_t i = 0; i < n; i++)
        vv_free(f[i].bytes);
    vv_free(f);
    vv_pubsub_free(ps);
    end_close(&src);
    end_close(&node);
    end_close(&sink);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
