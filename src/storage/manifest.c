/*
 * Addresses and manifests (docs/storage.md): pure functions, no I/O. The manifest decoder
 * reads outside input (a peer's bytes) and accepts exactly one encoding per blob, so that a
 * manifest's hash is a function of the blob alone.
 */
#include <sodium.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/store.h"
#include "storage/store_internal.h"

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static const uint8_t manifest_magic[4] = {'V', 'V', 'M', 1};

uint32_t vv__store_chunk_count(uint64_t size)
{
    return (uint32_t)((size + VV_STORE_CHUNK_BYTES - 1) / VV_STORE_CHUNK_BYTES);
}

size_t vv_store_manifest_len(uint64_t size)
{
    return VV_STORE_MANIFEST_HEADER_BYTES + (size_t)vv__store_chunk_count(size) * 32;
}

int vv_store_manifest_decode(const uint8_t *buf, size_t len, struct vv_store_manifest *out)
{
    if (len < VV_STORE_MANIFEST_HEADER_BYTES || len > VV_STORE_MANIFEST_MAX_BYTES)
        return VV_ESTORE_MANIFEST;
    if (memcmp(buf, manifest_magic, sizeof(manifest_magic)) != 0)
        return VV_ESTORE_MANIFEST;
    uint64_t size = get_be64(buf + 4);
    uint32_t chunk_bytes = get_be32(buf + 12);
    uint32_t chunks = get_be32(buf + 16);
    if (chunk_bytes != VV_STORE_CHUNK_BYTES || size <= VV_STORE_CHUNK_BYTES ||
        size > VV_STORE_MAX_BLOB_BYTES || chunks != vv__store_chunk_count(size) ||
        len != VV_STORE_MANIFEST_HEADER_BYTES + (size_t)chunks * 32)
        return VV_ESTORE_MANIFEST;
    out->size = size;
    out->chunk_bytes = chunk_bytes;
    out->chunks = chunks;
    out->chunk_hashes = buf + VV_STORE_MANIFEST_HEADER_BYTES;
    return 0;
}

void vv__store_manifest_build(const uint8_t *data, uint64_t size, uint8_t *out)
{
    uint32_t n = vv__store_chunk_count(size);
    memcpy(out, manifest_magic, 4);
    put_be64(out + 4, size);
    put_be32(out + 12, VV_STORE_CHUNK_BYTES);
    put_be32(out + 16, n);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = (uint64_t)i * VV_STORE_CHUNK_BYTES;
        size_t clen = (size_t)VV_MIN((uint64_t)VV_STORE_CHUNK_BYTES, size - off);
        crypto_hash_sha256(out + VV_STORE_MANIFEST_HEADER_BYTES + (size_t)i * 32, data + off, clen);
    }
}

int vv_store_address(const uint8_t *data, size_t len, uint8_t addr[VV_STORE_ADDR_BYTES])
{
    if ((uint64_t)len > VV_STORE_MAX_BLOB_BYTES)
        return VV_ESTORE_TOO_LARGE;
    if (len <= VV_STORE_CHUNK_BYTES) {
        struct vv_store_manifest m;
        if (vv_store_manifest_decode(data, len, &m) == 0)
            return VV_ESTORE_AMBIGUOUS;
        crypto_hash_sha256(addr, data, len);
        return 0;
    }
    size_t mlen = vv_store_manifest_len(len);
    uint8_t *man = vv_xmalloc(mlen);
    vv__store_manifest_build(data, len, man);
    crypto_hash_sha256(addr, man, mlen);
    vv_free(man);
    return 0;
}
