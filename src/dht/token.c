/*
 * Write tokens (BEP 5's "token"), bound to the requester's IP address. The secret changes
 * every VV_DHT_TOKEN_ROTATE_MS without any stored state: the secret of epoch e (now divided
 * by the period) is derived from the master secret, so a node never needs a timer or fresh
 * randomness to rotate, and a token cannot be checked against anything but the two epochs
 * still accepted.
 */
#include <string.h>

#include <sodium.h>

#include "vivim/dht_core.h"

void vv_dht_tokens_init(struct vv_dht_tokens *t, const uint8_t *master)
{
    memcpy(t->master, master, sizeof(t->master));
}

void vv_dht_tokens_clear(struct vv_dht_tokens *t)
{
    sodium_memzero(t->master, sizeof(t->master));
}

static void token_for_epoch(const struct vv_dht_tokens *t, const struct vv_dht_addr *a,
                            uint64_t epoch, uint8_t out[VV_DHT_TOKEN_BYTES])
{
    uint8_t secret[32], e[8], msg[17];
    for (int i = 0; i < 8; i++)
        e[i] = (uint8_t)(epoch >> (56 - 8 * i));
    crypto_generichash(secret, sizeof(secret), e, sizeof(e), t->master, sizeof(t->master));
    msg[0] = a->family;
    memcpy(msg + 1, a->ip, 16);
    crypto_generichash(out, VV_DHT_TOKEN_BYTES, msg, sizeof(msg), secret, sizeof(secret));
    sodium_memzero(secret, sizeof(secret));
}

void vv_dht_token_make(const struct vv_dht_tokens *t, const struct vv_dht_addr *requester,
                       uint64_t now, uint8_t out[VV_DHT_TOKEN_BYTES])
{
    token_for_epoch(t, requester, now / VV_DHT_TOKEN_ROTATE_MS, out);
}

int vv_dht_token_check(const struct vv_dht_tokens *t, const struct vv_dht_addr *requester,
                       uint64_t now, const uint8_t *token, size_t len)
{
    if (token == NULL || len != VV_DHT_TOKEN_BYTES)
        return VV_EDHT_TOKEN;
    uint64_t epoch = now / VV_DHT_TOKEN_ROTATE_MS;
    for (uint64_t back = 0; back <= 1 && back <= epoch; back++) {
        uint8_t want[VV_DHT_TOKEN_BYTES];
        token_for_epoch(t, requester, epoch - back, want);
        if (sodium_memcmp(want, token, VV_DHT_TOKEN_BYTES) == 0)
            return 0;
    }
    return VV_EDHT_TOKEN;
}
