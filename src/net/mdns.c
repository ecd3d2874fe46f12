/*
 * mDNS messages: building our query and announcement, and parsing what arrives from the
 * local network. Sans-I/O. Every read is bounds-checked against the packet; compression
 * pointers may only point backwards, so a hostile packet cannot make the parser loop.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "vivim/common.h"
#include "vivim/mdns.h"

#define DNS_HEADER_BYTES 12
#define TYPE_TXT         16
#define TYPE_PTR         12
#define TYPE_ANY         255
#define CLASS_IN         1
#define NAME_MAX_BYTES   255
#define MAX_RECORDS      64 /* questions plus answers we look at in one packet */

struct writer {
    uint8_t *p;
    size_t len, cap;
    bool overflow;
};

static void put(struct writer *w, const void *data, size_t n)
{
    if (w->len + n > w->cap) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void put16(struct writer *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 2);
}

static void put32(struct writer *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 4);
}

/* Writes a dotted name as labels (no compression: our messages are small). */
static void put_name(struct writer *w, const char *name)
{
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n > 63) {
            w->overflow = true;
            return;
        }
        uint8_t l = (uint8_t)n;
        put(w, &l, 1);
        put(w, p, n);
        p += n + (dot ? 1 : 0);
    }
    uint8_t zero = 0;
    put(w, &zero, 1);
}

static void put_header(struct writer *w, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an)
{
    put16(w, id);
    put16(w, flags);
    put16(w, qd);
    put16(w, an);
    put16(w, 0);
    put16(w, 0);
}

int vv_mdns_build_query(uint8_t *out, size_t cap, uint16_t id)
{
    struct writer w = {out, 0, cap, false};
    put_header(&w, id, 0, 1, 0);
    put_name(&w, VV_MDNS_SERVICE);
    put16(&w, TYPE_PTR);
    put16(&w, CLASS_IN);
    return w.overflow ? VV_ELIMIT : (int)w.len;
}

int vv_mdns_build_announce(uint8_t *out, size_t cap, const uint8_t node_id[VV_NODE_ID_BYTES],
                           const char *addr)
{
    size_t alen = strlen(addr);
    if (alen == 0 || alen >= VV_MDNS_ADDR_MAX)
        return VV_EINVAL;
    char hex[2 * VV_NODE_ID_BYTES + 1];
    vv_hex_encode(node_id, VV_NODE_ID_BYTES, hex);
    char instance[NAME_MAX_BYTES + 1];
    snprintf(instance, sizeof(instance), "%.16s.%s", hex, VV_MDNS_SERVICE);

    struct writer w = {out, 0, cap, false};
    put_header(&w, 0, 0x8400, 0, 2); /* response, authoritative */
    /* PTR: service -> instance */
    put_name(&w, VV_MDNS_SERVICE);
    put16(&w, TYPE_PTR);
    put16(&w, CLASS_IN);
    put32(&w, VV_MDNS_TTL_S);
    size_t rdlen_at = w.len;
    put16(&w, 0);
    size_t start = w.len;
    put_name(&w, instance);
    if (!w.overflow) {
        uint16_t rdlen = (uint16_t)(w.len - start);
        out[rdlen_at] = (uint8_t)(rdlen >> 8);
        out[rdlen_at + 1] = (uint8_t)rdlen;
    }
    /* TXT on the instance: id=..., addr=... */
    put_name(&w, instance);
    put16(&w, TYPE_TXT);
    put16(&w, 0x8000 | CLASS_IN); /* cache-flush: this is the whole set */
    put32(&w, VV_MDNS_TTL_S);
    char id_kv[3 + 2 * VV_NODE_ID_BYTES + 1], addr_kv[5 + VV_MDNS_ADDR_MAX];
    int n1 = snprintf(id_kv, sizeof(id_kv), "id=%s", hex);
    int n2 = snprintf(addr_kv, sizeof(addr_kv), "addr=%s", addr);
    put16(&w, (uint16_t)(1 + n1 + 1 + n2));
    uint8_t l1 = (uint8_t)n1, l2 = (uint8_t)n2;
    put(&w, &l1, 1);
    put(&w, id_kv, (size_t)n1);
    put(&w, &l2, 1);
    put(&w, addr_kv, (size_t)n2);
    return w.overflow ? VV_ELIMIT : (int)w.len;
}

/* ---- parsing --------------------------------------------------------------------------- */

struct reader {
    const uint8_t *p;
    size_t len;
};

static int get16(const struct reader *r, size_t off, uint16_t *v)
{
    if (off + 2 > r->len)
        return VV_EWIRE_TRUNCATED;
    *v = (uint16_t)(r->p[off] << 8 | r->p[off + 1]);
    return 0;
}

/*
 * Reads the name at *off into out (dotted, lowercase-insensitive compare left to the caller)
 * and advances *off past it. Pointers must go strictly backwards.
 */
static int read_name(const struct reader *r, size_t *off, char *out, size_t cap)
{
    size_t pos = *off, written = 0;
    bool jumped = false;
    size_t limit = pos; /* a pointer must point before the label that holds it */
    for (int hops = 0; hops < 128; hops++) {
        if (pos >= r->len)
            return VV_EWIRE_TRUNCATED;
        uint8_t l = r->p[pos];
        if (l == 0) {
            if (!jumped)
                *off = pos + 1;
            if (written == 0 && cap > 0)
                out[0] = '\0';
            else if (written > 0)
                out[written - 1] = '\0'; /* drop the trailing dot */
            return 0;
        }
        if ((l & 0xc0) == 0xc0) {
            if (pos + 1 >= r->len)
                return VV_EWIRE_TRUNCATED;
            size_t target = (size_t)(l & 0x3f) << 8 | r->p[pos + 1];
            if (target >= limit)
                return VV_EWIRE_MALFORMED; /* forward or self pointer: could loop */
            if (!jumped)
                *off = pos + 2;
            jumped = true;
            limit = target;
            pos = target;
            continue;
        }
        if (l & 0xc0)
            return VV_EWIRE_MALFORMED; /* 0x40 and 0x80 label types are not used */
        if (pos + 1 + l > r->len)
            return VV_EWIRE_TRUNCATED;
        if (written + l + 1 > NAME_MAX_BYTES || written + l + 1 >= cap)
            return VV_EWIRE_MALFORMED;
        memcpy(out + written, r->p + pos + 1, l);
        written += l;
        out[written++] = '.';
        pos += 1 + (size_t)l;
        if (!jumped)
            limit = pos;
    }
    return VV_EWIRE_MALFORMED;
}

static bool name_eq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

/* Does name end with ".<service>"? */
static bool is_instance_of_service(const char *name)
{
    size_t n = strlen(name), s = strlen(VV_MDNS_SERVICE);
    return n > s + 1 && name[n - s - 1] == '.' && name_eq(name + n - s, VV_MDNS_SERVICE);
}

static void parse_txt(const uint8_t *rd, size_t rdlen, struct vv_mdns_peer *peers, size_t *n_peers)
{
    char id_hex[2 * VV_NODE_ID_BYTES + 1] = "";
    char addr[VV_MDNS_ADDR_MAX] = "";
    size_t i = 0;
    while (i < rdlen) {
        size_t l = rd[i];
        if (i + 1 + l > rdlen)
            return; /* malformed string: ignore the record */
        const char *s = (const char *)rd + i + 1;
        if (l == 3 + 2 * VV_NODE_ID_BYTES && memcmp(s, "id=", 3) == 0) {
            memcpy(id_hex, s + 3, 2 * VV_NODE_ID_BYTES);
            id_hex[2 * VV_NODE_ID_BYTES] = '\0';
        } else if (l > 5 && l < 5 + VV_MDNS_ADDR_MAX && memcmp(s, "addr=", 5) == 0) {
            memcpy(addr, s + 5, l - 5);
            addr[l - 5] = '\0';
        }
        i += 1 + l;
    }
    if (*n_peers >= VV_MDNS_MAX_PEERS || addr[0] == '\0' ||
        strlen(addr) != strnlen(addr, sizeof(addr)))
        return;
    for (const char *c = addr; *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
            return; /* printable, no spaces: an address, nothing else */
    struct vv_mdns_peer *p = &peers[*n_peers];
    if (vv_hex_decode(id_hex, p->id, VV_NODE_ID_BYTES) != 0)
        return;
    memcpy(p->addr, addr, sizeof(p->addr));
    (*n_peers)++;
}

int vv_mdns_parse(const uint8_t *pkt, size_t len, int *is_query_for_us, struct vv_mdns_peer *peers,
                  size_t *n_peers)
{
    *is_query_for_us = 0;
    *n_peers = 0;
    if (len < DNS_HEADER_BYTES)
        return VV_EWIRE_TRUNCATED;
    if (len > VV_MDNS_MAX_PACKET * 6)
        return VV_EWIRE_MALFORMED; /* jumbo frames at most */
    struct reader r = {pkt, len};
    uint16_t flags, qd, an, ns, ar;
    get16(&r, 2, &flags);
    get16(&r, 4, &qd);
    get16(&r, 6, &an);
    get16(&r, 8, &ns);
    get16(&r, 10, &ar);
    if ((unsigned)qd + an + ns + ar > MAX_RECORDS)
        return VV_EWIRE_MALFORMED;
    size_t off = DNS_HEADER_BYTES;
    char name[NAME_MAX_BYTES + 2];
    bool response = flags & 0x8000;
    for (unsigned i = 0; i < qd; i++) {
        int rc = read_name(&r, &off, name, sizeof(name));
        if (rc != 0)
            return rc;
        uint16_t type, cls;
        if (get16(&r, off, &type) || get16(&r, off + 2, &cls))
            return VV_EWIRE_TRUNCATED;
        off += 4;
        if (!response && (type == TYPE_PTR || type == TYPE_ANY) && name_eq(name, VV_MDNS_SERVICE))
            *is_query_for_us = 1;
    }
    unsigned records = (unsigned)an + ns + ar;
    for (unsigned i = 0; i < records; i++) {
        int rc = read_name(&r, &off, name, sizeof(name));
        if (rc != 0)
            return rc;
        uint16_t type, cls, rdlen, ttl_hi, ttl_lo;
        if (get16(&r, off, &type) || get16(&r, off + 2, &cls) || get16(&r, off + 4, &ttl_hi) ||
            get16(&r, off + 6, &ttl_lo) || get16(&r, off + 8, &rdlen))
            return VV_EWIRE_TRUNCATED;
        off += 10;
        if (off + rdlen > len)
            return VV_EWIRE_TRUNCATED;
        if (response && type == TYPE_TXT && (ttl_hi | ttl_lo) != 0 && is_instance_of_service(name))
            parse_txt(pkt + off, rdlen, peers, n_peers);
        off += rdlen;
    }
    return 0;
}
