/* Fuzz target: the store's manifest decoder (docs/storage.md), which reads a peer's bytes.
 * What decodes must satisfy every rule of the spec, and must be exactly the manifest the
 * store would build for a blob of those chunk hashes; the address of the input as a blob
 * must refuse exactly the one-chunk inputs that decode. */
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_store_manifest m;
    int rc = vv_store_manifest_decode(data, size, &m);
    if (rc == 0) {
        if (m.chunk_bytes != VV_STORE_CHUNK_BYTES || m.size <= VV_STORE_CHUNK_BYTES ||
            m.size > VV_STORE_MAX_BLOB_BYTES ||
            m.chunks != (m.size + VV_STORE_CHUNK_BYTES - 1) / VV_STORE_CHUNK_BYTES ||
            size != VV_STORE_MANIFEST_HEADER_BYTES + (size_t)m.chunks * 32 ||
            size != vv_store_manifest_len(m.size) || size > VV_STORE_MANIFEST_MAX_BYTES ||
            m.chunk_hashes != data + VV_STORE_MANIFEST_HEADER_BYTES)
            abort();
        /* Canonical: one byte more or less never decodes. */
        if (vv_store_manifest_decode(data, size - 1, &m) == 0)
            abort();
    } else if (rc != VV_ESTORE_MANIFEST) {
        abort();
    }
    if (size <= VV_STORE_CHUNK_BYTES) {
        uint8_t addr[32], h[32];
        int arc = vv_store_address(data, size, addr);
        if ((rc == 0) != (arc == VV_ESTORE_AMBIGUOUS))
            abort();
        if (arc == 0) {
            crypto_hash_sha256(h, data, size);
            if (memcmp(h, addr, 32) != 0)
                abort();
        }
    }
    return 0;
}
