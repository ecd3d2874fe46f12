/*
 * mDNS peer discovery on the local network (RFC 6762, DNS-SD RFC 6763), the message part.
 *
 * A node announces the service "_vivim._tcp.local": a PTR record naming its instance
 * "<first 16 hex digits of the node ID>._vivim._tcp.local", with a TXT record carrying
 * "id=<64 hex digits>" and "addr=<host:port>" (the address peers dial). Discovery sends a
 * PTR query for the service and reads the TXT records of the answers. This file only
 * builds and parses messages; the glue sends them to 224.0.0.251:5353.
 *
 * Parsing is strict and bounded: every length is checked against the packet, compression
 * pointers must point backwards (so they cannot loop), names are at most 255 bytes, and a
 * packet yields at most VV_MDNS_MAX_PEERS peers. A fuzz target covers it.
 */
#ifndef VIVIM_MDNS_H
#define VIVIM_MDNS_H

#include <stddef.h>
#include <stdint.h>

#include "vivim/identity.h"

#define VV_MDNS_PORT       5353
#define VV_MDNS_GROUP_V4   "224.0.0.251"
#define VV_MDNS_SERVICE    "_vivim._tcp.local"
#define VV_MDNS_MAX_PACKET 1500 /* one Ethernet frame: what we send and accept */
#define VV_MDNS_MAX_PEERS  16
#define VV_MDNS_ADDR_MAX   128
#define VV_MDNS_TTL_S      120

struct vv_mdns_peer {
    uint8_t id[VV_NODE_ID_BYTES];
    char addr[VV_MDNS_ADDR_MAX]; /* host:port as announced */
};

/* A PTR query for the service. Returns the length written, or VV_ELIMIT if cap is short. */
int vv_mdns_build_query(uint8_t *out, size_t cap, uint16_t id);

/* A response announcing this node (PTR + TXT). Returns the length, or VV_EINVAL/VV_ELIMIT. */
int vv_mdns_build_announce(uint8_t *out, size_t cap, const uint8_t node_id[VV_NODE_ID_BYTES],
                           const char *addr);

/*
 * Parses a received packet. For a query that asks for our service, *is_query_for_us = 1.
 * For a response, fills peers[0..*n_peers) with every well-formed vivim TXT record.
 * Returns 0, or VV_EWIRE_MALFORMED / VV_EWIRE_TRUNCATED for a packet that is not valid DNS.
 */
int vv_mdns_parse(const uint8_t *pkt, size_t len, int *is_query_for_us, struct vv_mdns_peer *peers,
                  size_t *n_peers);

#endif
