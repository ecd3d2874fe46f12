/*
 * The DHT keyspace: 256-bit IDs under the XOR metric (Kademlia, section 2.1). A node's ID is
 * the SHA-256 of its Ed25519 public key, so nobody can choose an ID without a key that hashes
 * to it, and a key stored under an ID is found at the nodes whose IDs are XOR-closest.
 */
#include <string.h>

#include <sodium.h>

#include "vivim/dht_core.h"

void vv_dht_id_from_pk(const uint8_t pk[VV_DHT_PK_BYTES], uint8_t id[VV_DHT_ID_BYTES])
{
    crypto_hash_sha256(id, pk, VV_DHT_PK_BYTES);
}

void vv_dht_distance(const uint8_t *a, const uint8_t *b, uint8_t out[VV_DHT_ID_BYTES])
{
    for (size_t i = 0; i < VV_DHT_ID_BYTES; i++)
        out[i] = a[i] ^ b[i];
}

int vv_dht_distance_cmp(const uint8_t *target, const uint8_t *a, const uint8_t *b)
{
    /* The first byte where a and b differ decides: whichever agrees with target there is
     * closer, because every earlier byte contributes equally to both distances. */
    for (size_t i = 0; i < VV_DHT_ID_BYTES; i++) {
        uint8_t da = a[i] ^ target[i], db = b[i] ^ target[i];
        if (da != db)
            return da < db ? -1 : 1;
    }
    return 0;
}

unsigned vv_dht_common_prefix(const uint8_t *a, const uint8_t *b)
{
    for (size_t i = 0; i < VV_DHT_ID_BYTES; i++) {
        uint8_t x = a[i] ^ b[i];
        if (x != 0)
            return (unsigned)(i * 8) + (unsigned)__builtin_clz(x) - 24;
    }
    return VV_DHT_ID_BITS;
}

void vv_dht_id_in_bucket(const uint8_t *self, unsigned bucket, const uint8_t *random,
                         uint8_t out[VV_DHT_ID_BYTES])
{
    if (bucket >= VV_DHT_ID_BITS)
        bucket = VV_DHT_ID_BITS - 1;
    for (unsigned bit = 0; bit < VV_DHT_ID_BITS; bit++) {
        unsigned byte = bit / 8, mask = 0x80u >> (bit % 8);
        unsigned v;
        if (bit < bucket)
            v = self[byte] & mask;
        else if (bit == bucket)
            v = ~self[byte] & mask;
        else
            v = random[byte] & mask;
        out[byte] = (uint8_t)((out[byte] & ~mask) | v);
    }
}
