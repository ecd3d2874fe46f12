/* Fuzz target: mDNS packets from the local network (anyone on the LAN can send them). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/mdns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int ours;
    struct vv_mdns_peer peers[VV_MDNS_MAX_PEERS];
    size_t np = 0;
    int rc = vv_mdns_parse(data, size, &ours, peers, &np);
    if (np > VV_MDNS_MAX_PEERS || (rc != 0 && rc > -10000))
        abort();
    for (size_t i = 0; i < np; i++)
        if (strnlen(peers[i].addr, sizeof(peers[i].addr)) == sizeof(peers[i].addr))
            abort(); /* every address is terminated */
    return 0;
}
