/* Fuzz target: CRDT sync messages from a peer (SYNC, UPDATE, LEAVE, POLICY) into an engine
 * holding a document of every type, made here, the peer a writer of all of them and joined.
 * Whatever arrives, the engine must stay bounded, every document must still encode and load
 * back to the same value, and every policy it holds must be one the decoder accepts. A
 * signature "verifies" when its first byte is even, so that the fuzzer reaches what follows a
 * valid policy (new versions, documents offered by peers) as well as the refusals. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/crdt_sync.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t now_ms(void *impl)
{
    (void)impl;
    return 1000;
}
static uint64_t timer_start(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    (void)impl, (void)d, (void)r, (void)cb, (void)arg;
    return 1;
}
static void timer_cancel(void *impl, uint64_t id)
{
    (void)impl, (void)id;
}
static void random_bytes(void *impl, void *buf, size_t len)
{
    (void)impl;
    memset(buf, 0x5a, len); /* deterministic */
}
static int send_(void *impl, const uint8_t *peer, uint8_t ch, const uint8_t *d, size_t n)
{
    (void)impl, (void)peer, (void)ch, (void)d, (void)n;
    return 0;
}
static int connect_(void *impl, const uint8_t *peer, const char *address)
{
    (void)impl, (void)peer, (void)address;
    return 0;
}
static void disconnect_(void *impl, const uint8_t *peer)
{
    (void)impl, (void)peer;
}
static bool verify(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    (void)impl, (void)pk, (void)m, (void)n;
    return (s[0] & 1) == 0;
}

static const struct vv_env_ops ops = {now_ms,   timer_start, timer_cancel, random_bytes, send_,
                                      connect_, disconnect_, verify,       NULL,         NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Not a real key pair (nothing here checks our own signatures): a fixed public key, so the
     * seeds in corpus/crdt_sync can name this node (SHA-256 of 32 bytes 0x11). */
    static struct vv_identity id;
    if (id.public_key[0] == 0) {
        memset(id.public_key, 0x11, sizeof(id.public_key));
        memset(id.secret_key, 0x22, sizeof(id.secret_key));
        vv_identity_node_id(id.public_key, id.node_id);
    }
    struct vv_env env = {.ops = &ops, .impl = NULL, .identity = &id};
    struct vv_crdt_engine *e = vv_crdt_engine_new(&env, 7, 1000, NULL, NULL);
    static const char *const ids[] = {"g", "c", "r", "s", "t", "m"};
    uint8_t peer[VV_NODE_ID_BYTES];
    memset(peer, 0xab, sizeof(peer));
    for (int k = 0; k < VV_CRDT_KIND_COUNT; k++) {
        vv_crdt_engine_create(e, ids[k], (enum vv_crdt_kind)k, NULL);
        vv_crdt_engine_set_access(e, ids[k], NULL, 0, peer, 1);
        vv_crdt_engine_join(e, ids[k], peer);
    }
    /* The input is a sequence of messages: 2-byte big-endian length, then the bytes. */
    size_t off = 0;
    while (off + 2 <= size) {
        size_t n = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (n > size - off)
            n = size - off;
        vv_env_deliver(&env, peer, VV_CHANNEL_CRDT, data + off, n);
        off += n;
    }
    if (vv_crdt_engine_count(e) > VV_CRDT_SYNC_MAX_DOCS)
        abort();
    for (size_t i = 0; i < vv_crdt_engine_count(e); i++) {
        struct vv_crdt_doc *d = vv_crdt_engine_doc_at(e, i);
        const struct vv_crdt_policy *p = vv_crdt_engine_policy(e, vv_crdt_doc_id(d));
        struct vv_crdt_policy *again;
        if (p == NULL || vv_crdt_policy_decode(p->bytes, p->len, &again) != 0 ||
            strcmp(again->doc_id, vv_crdt_doc_id(d)) != 0 || again->kind != vv_crdt_doc_kind(d))
            abort();
        vv_crdt_policy_free(again);
        uint8_t *st;
        size_t n;
        if (vv_crdt_doc_state(d, &st, &n) != 0)
            abort();
        struct vv_crdt_doc *copy = vv_crdt_doc_new("copy", vv_crdt_doc_kind(d), 9);
        if (n > 0 && vv_crdt_doc_apply(copy, st, n, NULL) != 0)
            abort();
        json_t *a = vv_crdt_doc_value(d), *b = vv_crdt_doc_value(copy);
        if (!json_equal(a, b))
            abort();
        json_decref(a);
        json_decref(b);
        vv_free(st);
        vv_crdt_doc_free(copy);
    }
    vv_crdt_engine_free(e);
    vv_env_fini(&env); /* a frame with a request id started the request layer on it */
    return 0;
}
