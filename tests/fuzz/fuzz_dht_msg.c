/* Fuzz target: every decoder of the DHT's channel-1 messages. The first byte picks what the
 * rest is: 0..5 an answer to request type 0x0100 + n, 6 a request frame, 7 an address in text.
 * What decodes must encode again and decode to the same thing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/dht_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[VV_WIRE_MAX_FRAME_BYTES];

static void request(const uint8_t *data, size_t size)
{
    struct vv_wire_frame f;
    if (vv_wire_decode(data, size, &f) != 0)
        return;
    struct vv_dht_request rq, again;
    if (f.h.request_id != 0 && vv_dht_request_decode(f.h.type, &f.body, &rq) == 0) {
        size_t n;
        if (vv_dht_request_encode(&rq, f.h.request_id, out, sizeof(out), &n) != 0)
            abort();
        struct vv_wire_frame g;
        if (vv_wire_decode(out, n, &g) != 0 ||
            vv_dht_request_decode(g.h.type, &g.body, &again) != 0)
            abort();
        if (memcmp(again.target, rq.target, 32) != 0 || again.pad_len != rq.pad_len ||
            again.value.len != rq.value.len || again.value.seq != rq.value.seq ||
            again.record.content_id_len != rq.record.content_id_len ||
            memcmp(again.token, rq.token, sizeof(rq.token)) != 0 ||
            memcmp(again.provider_pk, rq.provider_pk, sizeof(rq.provider_pk)) != 0 ||
            memcmp(again.provider_sig, rq.provider_sig, sizeof(rq.provider_sig)) != 0)
            abort();
        vv_wire_frame_free(&g);
    }
    vv_wire_frame_free(&f);
}

static void reply(uint16_t type, const uint8_t *data, size_t size)
{
    struct vv_wire_frame f;
    if (vv_wire_decode(data, size, &f) != 0)
        return;
    static struct vv_dht_reply r, again;
    if (f.h.request_id != 0 && vv_dht_reply_decode(type, &f.body, &r) == 0) {
        size_t n;
        /* A connection-sized budget: nothing is cut, so everything must come back. */
        int rc = vv_dht_reply_encode(&r, f.h.request_id, sizeof(out), out, sizeof(out), &n, NULL);
        if (rc != 0)
            abort();
        struct vv_wire_frame g;
        if (vv_wire_decode(out, n, &g) != 0 || vv_dht_reply_decode(type, &g.body, &again) != 0)
            abort();
        if (again.n_nodes != r.n_nodes || again.n_values != r.n_values ||
            again.n_providers != r.n_providers || again.omitted != r.omitted ||
            again.has_record != r.has_record)
            abort();
        for (size_t i = 0; i < r.n_nodes; i++)
            if (!vv_dht_addr_equal(&again.nodes[i].addr, &r.nodes[i].addr))
                abort();
        vv_wire_frame_free(&g);
        /* And cut to a datagram it still decodes. */
        if (vv_dht_reply_encode(&r, f.h.request_id, VV_DHT_DATAGRAM_MAX_BYTES, out, sizeof(out), &n,
                                NULL) == 0) {
            if (n > VV_DHT_DATAGRAM_MAX_BYTES || vv_wire_decode(out, n, &g) != 0 ||
                vv_dht_reply_decode(type, &g.body, &again) != 0)
                abort();
            vv_wire_frame_free(&g);
        }
    }
    vv_wire_frame_free(&f);
}

static void address(const uint8_t *data, size_t size)
{
    struct vv_dht_addr a, b;
    if (vv_dht_addr_parse((const char *)data, size, &a) != 0)
        return;
    char text[VV_DHT_ADDR_STR_BYTES];
    if (vv_dht_addr_format(&a, text, sizeof(text)) != 0 ||
        vv_dht_addr_parse(text, strlen(text), &b) != 0 || !vv_dht_addr_equal(&a, &b))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 8;
    data++;
    size--;
    if (mode < 6)
        reply((uint16_t)(VV_DHT_MSG_PING + mode), data, size);
    else if (mode == 6)
        request(data, size);
    else
        address(data, size);
    return 0;
}
