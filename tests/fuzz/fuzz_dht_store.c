/* Fuzz target: the value and provider stores under any sequence of operations a hostile
 * network could cause (stores from chosen sources, keys and publishers, sweeps, time jumps),
 * with tight bounds so that quotas and evictions run. After every operation both stores'
 * self-checks must pass; at the end everything drains and is freed (no leak per input). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/dht_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vv_dht_addr source(uint8_t b)
{
    struct vv_dht_addr a;
    memset(&a, 0, sizeof(a));
    a.family = (b & 0x80) ? VV_DHT_INET6 : VV_DHT_INET4;
    a.ip[0] = (b & 0x40) ? 127 : 20;
    a.ip[1] = (uint8_t)(b & 3);
    a.ip[a.family == VV_DHT_INET4 ? 3 : 15] = (uint8_t)(1 + (b & 0x3c));
    a.port = (uint16_t)(1 + (b & 7));
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_dht_values_config vc;
    vv_dht_values_config_defaults(&vc);
    vc.max_bytes = 8000;
    vc.max_count = 24;
    vc.source_max_bytes = 3000;
    vc.source_max_count = 6;
    vc.max_per_key = 3;
    vc.max_ttl_ms = 600000;
    struct vv_dht_providers_config pc;
    vv_dht_providers_config_defaults(&pc);
    pc.max_records = 40;
    pc.max_keys = 12;
    pc.max_idents = 10;
    pc.source_max_records = 12;
    pc.source_max_idents = 3;
    pc.max_ttl_ms = 600000;
    struct vv_dht_values *vs = vv_dht_values_new(&vc);
    struct vv_dht_providers *ps = vv_dht_providers_new(&pc);
    static uint8_t bytes[2000];
    uint64_t now = 1700000000000ull;
    /* Each operation takes 5 bytes: op, key, who, seq/len, time step. */
    for (size_t i = 0; i + 5 <= size; i += 5) {
        const uint8_t *o = data + i;
        now += (uint64_t)o[4] * 1000;
        uint8_t key[32] = {0};
        key[0] = o[1] & 15;
        if (o[0] % 4 == 0) {
            struct vv_dht_value v;
            memset(&v, 0, sizeof(v));
            memcpy(v.key, key, 32);
            v.pk[0] = o[2] & 7;
            v.seq = o[3] & 7;
            v.expires_ms = now + 1000 + (uint64_t)o[3] * 3000;
            v.value = bytes;
            v.len = (size_t)(o[3] & 0xf8) * 8;
            struct vv_dht_addr src = source(o[2]);
            (void)vv_dht_values_put(vs, &v, &src, now);
        } else if (o[0] % 4 == 1) {
            char cid[4] = {'c', (char)('a' + (o[1] & 15)), 0, 0};
            struct vv_dht_content_record r;
            memset(&r, 0, sizeof(r));
            r.content_id = cid;
            r.content_id_len = 2;
            r.content_type = "t";
            r.content_type_len = o[3] & 1;
            memcpy(r.address, key, 32); /* keyed by its address */
            r.expires_ms = now + 1000 + (uint64_t)o[3] * 3000;
            struct vv_dht_contact p;
            memset(&p, 0, sizeof(p));
            p.id[0] = o[2];
            p.addr = source(o[2]);
            (void)vv_dht_providers_add(ps, key, &r, &p, now);
        } else if (o[0] % 4 == 2) {
            vv_dht_values_expire(vs, now, o[3] & 31);
            vv_dht_providers_expire(ps, now, o[3] & 31);
        } else {
            struct vv_dht_value out[4];
            struct vv_dht_provider prov[VV_DHT_MAX_PROVIDERS];
            struct vv_dht_content_record r;
            if (vv_dht_values_get(vs, key, now, out, 4) > vc.max_per_key)
                abort();
            (void)vv_dht_providers_get(ps, key, now, &r, prov, VV_DHT_MAX_PROVIDERS);
        }
        if (vv__dht_values_check(vs) != 0 || vv__dht_providers_check(ps) != 0)
            abort();
    }
    now += 3600000;
    while (vv_dht_values_count(vs) > 0)
        vv_dht_values_expire(vs, now, 16);
    while (vv_dht_providers_count(ps) > 0)
        vv_dht_providers_expire(ps, now, 16);
    if (vv_dht_providers_keys(ps) != 0 || vv_dht_providers_idents(ps) != 0 ||
        vv_dht_values_bytes(vs) != 0)
        abort();
    vv_dht_values_free(vs);
    vv_dht_providers_free(ps);
    return 0;
}
