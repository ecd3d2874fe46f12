/*
 * Compact numeric addresses for the DHT: an IP and a port, parsed only from numeric text
 * (a name from a peer is never resolved), classified (loopback, private, link-local) and cut
 * to the prefix the diversity limits and the quotas count by: /24 for IPv4, /64 for IPv6,
 * the blocks one operator typically gets for the price of one.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "dht/dht_internal.h"
#include "vivim/dht_core.h"

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static int parse_port(const char *p, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5 || p[0] == '0')
        return VV_EDHT_ADDRESS;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return VV_EDHT_ADDRESS;
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return VV_EDHT_ADDRESS;
    *port = (uint16_t)v;
    return 0;
}

/* Stores a 16-byte IPv6 address, folding IPv4-mapped ones into INET4. */
static void set_v6(struct vv_dht_addr *a, const uint8_t ip[16])
{
    memset(a->ip, 0, sizeof(a->ip));
    if (memcmp(ip, mapped_prefix, sizeof(mapped_prefix)) == 0) {
        a->family = VV_DHT_INET4;
        memcpy(a->ip, ip + 12, 4);
    } else {
        a->family = VV_DHT_INET6;
        memcpy(a->ip, ip, 16);
    }
}

static bool valid(const struct vv_dht_addr *a)
{
    if (a->port == 0)
        return false;
    if (a->family == VV_DHT_INET4)
        return !all_zero(a->ip, 4) && all_zero(a->ip + 4, 12);
    if (a->family == VV_DHT_INET6)
        return !all_zero(a->ip, 16) && memcmp(a->ip, mapped_prefix, 12) != 0;
    return false;
}

int vv_dht_addr_parse(const char *s, size_t len, struct vv_dht_addr *out)
{
    char host[64];
    struct vv_dht_addr a;
    memset(&a, 0, sizeof(a));
    if (s == NULL || len < 3)
        return VV_EDHT_ADDRESS;
    const char *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || (size_t)(close - s) + 1 >= len || close[1] != ':')
            return VV_EDHT_ADDRESS;
        hlen = (size_t)(close - s) - 1;
        if (hlen == 0 || hlen >= sizeof(host))
            return VV_EDHT_ADDRESS;
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        uint8_t ip[16];
        if (inet_pton(AF_INET6, host, ip) != 1)
            return VV_EDHT_ADDRESS;
        set_v6(&a, ip);
        colon = close + 1;
    } else {
        colon = memchr(s, ':', len);
        if (colon == NULL)
            return VV_EDHT_ADDRESS;
        hlen = (size_t)(colon - s);
        if (hlen == 0 || hlen >= sizeof(host))
            return VV_EDHT_ADDRESS;
        memcpy(host, s, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET, host, a.ip) != 1)
            return VV_EDHT_ADDRESS;
        a.family = VV_DHT_INET4;
    }
    size_t plen = len - (size_t)(colon + 1 - s);
    if (memchr(s, '\0', len) != NULL || parse_port(colon + 1, plen, &a.port) != 0)
        return VV_EDHT_ADDRESS;
    if (!valid(&a))
        return VV_EDHT_ADDRESS;
    *out = a;
    return 0;
}

int vv_dht_addr_format(const struct vv_dht_addr *a, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (!valid(a) || len < VV_DHT_ADDR_STR_BYTES)
        return VV_EINVAL;
    if (a->family == VV_DHT_INET4) {
        inet_ntop(AF_INET, a->ip, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, (unsigned)a->port);
    } else {
        inet_ntop(AF_INET6, a->ip, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, (unsigned)a->port);
    }
    return 0;
}

bool vv_dht_addr_equal(const struct vv_dht_addr *a, const struct vv_dht_addr *b)
{
    return a->family == b->family && a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

enum vv_dht_addr_class vv_dht_addr_classify(const struct vv_dht_addr *a)
{
    const uint8_t *ip = a->ip;
    if (a->family == VV_DHT_INET4) {
        if (ip[0] == 127)
            return VV_DHT_ADDR_LOOPBACK;
        if (ip[0] == 10 || (ip[0] == 172 && (ip[1] & 0xf0) == 16) || (ip[0] == 192 && ip[1] == 168))
            return VV_DHT_ADDR_PRIVATE;
        if (ip[0] == 169 && ip[1] == 254)
            return VV_DHT_ADDR_LINK_LOCAL;
        return VV_DHT_ADDR_PUBLIC;
    }
    if (all_zero(ip, 15) && ip[15] == 1)
        return VV_DHT_ADDR_LOOPBACK;
    if ((ip[0] & 0xfe) == 0xfc)
        return VV_DHT_ADDR_PRIVATE;
    if (ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80)
        return VV_DHT_ADDR_LINK_LOCAL;
    return VV_DHT_ADDR_PUBLIC;
}

bool vv_dht_addr_diversity_exempt(const struct vv_dht_addr *a)
{
    enum vv_dht_addr_class c = vv_dht_addr_classify(a);
    return c == VV_DHT_ADDR_LOOPBACK || c == VV_DHT_ADDR_PRIVATE;
}

void vv_dht_addr_prefix(const struct vv_dht_addr *a, uint8_t out[VV_DHT_PREFIX_BYTES])
{
    memset(out, 0, VV_DHT_PREFIX_BYTES);
    out[0] = a->family;
    memcpy(out + 1, a->ip, a->family == VV_DHT_INET4 ? 3 : 8);
}

size_t vv_dht_addr_to_compact(const struct vv_dht_addr *a, uint8_t out[VV_DHT_ADDR_COMPACT_MAX])
{
    size_t n = a->family == VV_DHT_INET4 ? 4 : 16;
    memcpy(out, a->ip, n);
    out[n] = (uint8_t)(a->port >> 8);
    out[n + 1] = (uint8_t)a->port;
    return n + 2;
}

int vv_dht_addr_from_compact(const uint8_t *p, size_t n, struct vv_dht_addr *out)
{
    struct vv_dht_addr a;
    memset(&a, 0, sizeof(a));
    if (n == 6) {
        a.family = VV_DHT_INET4;
        memcpy(a.ip, p, 4);
    } else if (n == 18) {
        a.family = VV_DHT_INET6;
        memcpy(a.ip, p, 16);
    } else {
        return VV_EDHT_ADDRESS;
    }
    a.port = (uint16_t)(p[n - 2] << 8 | p[n - 1]);
    if (!valid(&a))
        return VV_EDHT_ADDRESS;
    *out = a;
    return 0;
}

void vv__dht_source_key(const struct vv_dht_addr *a, uint8_t out[VV__DHT_SOURCE_BYTES])
{
    memset(out, 0, VV__DHT_SOURCE_BYTES);
    if (!vv_dht_addr_diversity_exempt(a)) {
        vv_dht_addr_prefix(a, out);
        return;
    }
    out[0] = (uint8_t)(a->family | 0x80); /* never equal to a prefix key */
    memcpy(out + 1, a->ip, 16);
    out[17] = (uint8_t)(a->port >> 8);
    out[18] = (uint8_t)a->port;
}
