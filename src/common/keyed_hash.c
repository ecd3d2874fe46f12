/*
 * The process-wide SipHash key and the hash built on it; see vivim/keyed_hash.h for why
 * tables of outside keys use it. The key is drawn under pthread_once, so the loop thread and
 * the SQLite workers may both be first without a race, and it is never written again.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/keyed_hash.h"

static uint8_t process_key[crypto_shorthash_KEYBYTES];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void draw_key(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "vivimd: libsodium failed to initialise; no key for hash tables\n");
        abort();
    }
    randombytes_buf(process_key, sizeof(process_key));
}

void vv_keyed_hash_init(void)
{
    pthread_once(&key_once, draw_key);
}

uint64_t vv_keyed_hash64(const void *buf, size_t len)
{
    static const uint8_t empty[1];
    uint8_t out[crypto_shorthash_BYTES];
    uint64_t h;

    vv_keyed_hash_init();
    crypto_shorthash(out, buf ? buf : empty, (unsigned long long)len, process_key);
    memcpy(&h, out, sizeof(h));
    return h;
}
