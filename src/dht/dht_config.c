/* [dht]: the DHT module's parameters (docs/dht.md gives the reason for each value). */
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/dht.h"

#define S struct vv_dht_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_BOOL_KEY(S, enabled, "true", false,
                       "Run the DHT: serve PING and FIND_NODE on channel 1, join through the "
                       "[net] bootstrap addresses and connected peers, keep a routing table."),
    VV_CONFIG_U32_KEY(S, k, "20", 1, 20, true,
                      "Lookup result size: a lookup ends when the k closest nodes it found have "
                      "answered, and FIND_NODE answers carry up to k contacts (1 to 20; the "
                      "routing table's buckets hold 20)."),
    VV_CONFIG_U32_KEY(S, alpha, "3", 1, 16, true,
                      "Queries a lookup keeps in flight per path, slow ones not counted."),
    VV_CONFIG_U32_KEY(S, disjoint_paths, "1", 1, 8, true,
                      "Disjoint lookup paths (S/Kademlia): more resist nodes that answer with "
                      "bogus contacts, at the cost of more queries."),
    VV_CONFIG_U32_KEY(S, query_timeout_ms, "2000", 10, 60000, true,
                      "Longest wait for one DHT answer (ms): the cap of the adaptive per-node "
                      "timeouts, and the timeout of pings."),
    VV_CONFIG_U32_KEY(S, refresh_ms, "900000", 1000, 86400000, true,
                      "A bucket that saw no lookup and no new or answering contact for this "
                      "long is refreshed by a lookup for a random ID in it (ms)."),
    VV_CONFIG_U32_KEY(S, save_ms, "60000", 1000, 86400000, true,
                      "How often the routing table's contacts are saved to "
                      "state_dir/dht.sqlite (ms), besides at stop; a restarted node pings them "
                      "to rejoin without its bootstrap list."),
    VV_CONFIG_U32_KEY(S, max_verified, "4096", 16, 1048576, false,
                      "Verified (node ID, address) pairs remembered, so that a contact proves "
                      "its ID by signature once an hour at most."),
    VV_CONFIG_U32_KEY(S, record_ttl_s, "86400", 60, 172800, true,
                      "Lifetime of a value or provider record published without a ttl "
                      "(seconds; stores accept at most 48 hours)."),
    VV_CONFIG_U32_KEY(S, republish_s, "3600", 10, 86400, true,
                      "This node's own values and provider records are stored again at the k "
                      "closest nodes this often (seconds), until they expire, so that nodes that "
                      "joined near a key get it; one lookup per keyspace region, not per key."),
    VV_CONFIG_U32_KEY(S, rate_per_source, "200", 0, 1000000, true,
                      "DHT requests served by datagram per second per source network (/24, /64; "
                      "one address and port on loopback and private ranges); more are answered "
                      "busy. 0: no limit."),
    VV_CONFIG_U32_KEY(S, rate_burst, "400", 1, 1000000, true,
                      "Requests one source may send at once above its rate (a republish sends "
                      "up to 48 stores to one node at a time)."),
    VV_CONFIG_U32_KEY(S, store_max_mb, "64", 1, 4096, false,
                      "Bytes of values this node stores for others (MiB; each value is charged "
                      "256 bytes besides its own), a sixteenth of it per source network."),
    VV_CONFIG_U32_KEY(S, provider_max_records, "1000000", 1000, 10000000, false,
                      "(key, provider) entries this node stores for others; a million take "
                      "about 45 MB."),
};
#undef S

const struct vv_config_section vv_dht_settings_section = VV_CONFIG_SECTION(
    "dht", "The Kademlia DHT: routing table, lookups, values and provider records.",
    struct vv_dht_settings, keys, NULL);

const struct vv_dht_settings *vv_dht_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_dht_settings_section);
}

void vv_dht_node_config_from_settings(const struct vv_dht_settings *s, struct vv_dht_node_config *c)
{
    vv_dht_node_config_defaults(c);
    c->k = s->k;
    c->alpha = s->alpha;
    c->paths = s->disjoint_paths;
    c->max_timeout_ms = s->query_timeout_ms;
    c->refresh_ms = s->refresh_ms;
    c->max_verified = s->max_verified;
    c->republish_ms = s->republish_s * 1000u;
    c->rate_per_source = s->rate_per_source;
    c->rate_burst = s->rate_burst;
    c->values.max_bytes = (uint64_t)s->store_max_mb << 20;
    c->values.source_max_bytes = c->values.max_bytes / 16;
    c->values.max_count = (uint32_t)VV_MIN((uint64_t)UINT32_MAX, c->values.max_bytes / 1024);
    c->values.source_max_count = VV_MAX(1u, c->values.max_count / 16);
    c->providers.max_records = s->provider_max_records;
    c->providers.max_keys = VV_MAX(1000u, s->provider_max_records / 8);
    c->providers.source_max_records = VV_MAX(1000u, s->provider_max_records / 8);
}
