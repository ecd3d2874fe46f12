/* Fuzz target: routing-table snapshots read back at start-up (a corrupt or hostile state file
 * must be refused or yield a table within its limits, never crash or leak). What restores
 * must snapshot and restore again to the same table. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/dht_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The seeds in tests/fuzz/corpus/dht_snapshot/ are made for this node ID. */
static const uint8_t self[VV_DHT_ID_BYTES] = {
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_dht_rt *rt = vv_dht_rt_new(self);
    size_t restored = 0;
    int rc = vv_dht_rt_restore(rt, data, size, 1000, &restored);
    if (restored != vv_dht_rt_size(rt) || restored > VV_DHT_ID_BITS * VV_DHT_K)
        abort();
    for (unsigned b = 0; b < VV_DHT_ID_BITS; b++)
        if (vv_dht_rt_bucket_size(rt, b) > VV_DHT_K)
            abort();
    if (rc == 0) {
        uint8_t *buf;
        size_t len;
        vv_dht_rt_snapshot(rt, &buf, &len);
        struct vv_dht_rt *again = vv_dht_rt_new(self);
        size_t n;
        if (vv_dht_rt_restore(again, buf, len, 2000, &n) != 0 || n != restored)
            abort();
        vv_dht_rt_free(again);
        vv_free(buf);
        struct vv_dht_contact near[VV_DHT_K];
        (void)vv_dht_rt_closest(rt, self, VV_DHT_K, near);
    }
    vv_dht_rt_free(rt);
    return 0;
}
