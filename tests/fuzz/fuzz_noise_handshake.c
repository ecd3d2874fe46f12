/*
 * Fuzz target: Noise XX handshake messages from a hostile peer. The input is split into
 * the messages a peer would send: to a responder (messages 1 and 3) and to an initiator
 * (message 2). Every read must fail cleanly or succeed, never crash or overrun.
 */
#include <sodium.h>
#include <stdint.h>
#include <string.h>

#include "vivim/noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t s1[32], s2[32];
    static int ready;
    if (!ready) {
        if (sodium_init() < 0)
            return 0;
        memset(s1, 1, 32);
        memset(s2, 2, 32);
        ready = 1;
    }
    size_t cut = size ? data[0] % (size + 1) : 0;
    const uint8_t *a = data + (size ? 1 : 0);
    size_t alen = cut > 0 ? cut - 1 : 0, blen = size > cut ? size - cut : 0;
    const uint8_t *b = data + cut;
    uint8_t out[1024], payload[VV_NOISE_MAX_MSG_BYTES];
    size_t n, pl;

    struct vv_noise_hs r;
    vv_noise_init(&r, VV_NOISE_XX, false, NULL, 0, s1, NULL);
    if (vv_noise_read(&r, a, alen, payload, sizeof(payload), &pl) == 0 &&
        vv_noise_write(&r, NULL, 0, out, sizeof(out), &n) == 0)
        vv_noise_read(&r, b, blen, payload, sizeof(payload), &pl);

    struct vv_noise_hs i;
    vv_noise_init(&i, VV_NOISE_XX, true, NULL, 0, s2, NULL);
    if (vv_noise_write(&i, NULL, 0, out, sizeof(out), &n) == 0)
        vv_noise_read(&i, data, size, payload, sizeof(payload), &pl);
    return 0;
}
