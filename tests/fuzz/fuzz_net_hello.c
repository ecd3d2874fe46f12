/* Fuzz target: the hello a peer sends inside its handshake (after its identity verified, but
 * any node can make an identity). A hello that decodes must encode back to the same facts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/connmgr.h"
#include "vivim/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int type;
    uint32_t caps;
    char listen[VV_NET_ADDRESS_BYTES];
    if (vv_net_hello_decode(data, size, &type, &caps, listen, sizeof(listen)) != 0)
        return 0;
    if (type < 0 || type >= VV_NODE_TYPE_COUNT || strnlen(listen, sizeof(listen)) >= sizeof(listen))
        abort();
    uint8_t again[VV_SESSION_MAX_HELLO_BYTES];
    size_t n;
    if (vv_net_hello_encode(type, caps, listen, "", again, sizeof(again), &n) != 0)
        abort();
    int type2;
    uint32_t caps2;
    char listen2[VV_NET_ADDRESS_BYTES];
    if (vv_net_hello_decode(again, n, &type2, &caps2, listen2, sizeof(listen2)) != 0 ||
        type2 != type || caps2 != caps || strcmp(listen, listen2) != 0)
        abort();
    return 0;
}
