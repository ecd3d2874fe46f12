/*
 * Loading and validating vivimd.conf.
 *
 * The file is INI, parsed by inih. Every key the daemon knows is in the table below with
 * its type, bounds and whether SIGHUP may change it; anything else is an error with the
 * file name and line number. Values are checked here, once, so the modules can trust the
 * struct they are given. Lines are bounded (VV_CONFIG_MAX_LINE_BYTES) and checked before
 * inih sees them, so a long line is reported, never silently split.
 *
 * Everything start-up would refuse about a value is refused here, so that `vivimd
 * --check-config`, start-up and reload (which all load through vv_config_parse) agree: the
 * listen addresses are tested with the same libuv calls the listeners use, the socket path
 * against sun_path, the region and advertised address against the hello decoder every peer
 * runs, the PostgreSQL URL with libpq's own parser. The modules keep their checks as a
 * backstop; a check added to a module belongs here too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <uv.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/connmgr.h"
#include "vivim/identity.h"
#include "vivim/net.h"
#include "vivim/session.h"

#define VV_CONFIG_MAX_LINE_BYTES 4096 /* a value longer than this is surely a mistake */
#define VV_CONFIG_MAX_BOOTSTRAP  64   /* bootstrap peers; more belong in DNS */
#define VV_CONFIG_MAX_PATH_BYTES 4096
/* The longest name vivimd makes under the state directory is users/xx/<sha256 hex>.db-journal
 * (84 bytes with its '/'); keeping 128 bytes for it leaves room for SQLite's suffixes. */
#define VV_CONFIG_STATE_DIR_MAX_BYTES (PATH_MAX - 128 - 1)
#define VV_CONFIG_SOCKET_MAX_BYTES    (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define VV_CONFIG_REGION_MAX_BYTES    (VV_CONNMGR_REGION_BYTES - 1) /* what peers decode */
#define VV_CONFIG_ADDRESS_MAX_BYTES   (VV_NET_ADDRESS_BYTES - 1)    /* advertise, bootstrap */

/* With both at their limits the hello still fits what peers accept. */
_Static_assert(VV_NET_ADDRESS_BYTES + VV_CONNMGR_REGION_BYTES + 32 <= VV_SESSION_MAX_HELLO_BYTES,
               "the longest advertise and region must fit in a hello");
_Static_assert(VV_CONNMGR_ADDRESS_BYTES == VV_NET_ADDRESS_BYTES,
               "an address the net layer accepts must fit the connection manager's");

enum key_type {
    KEY_STRING,    /* free text */
    KEY_PATH,      /* non-empty */
    KEY_STATE_DIR, /* a path short enough for every file made under it */
    KEY_SOCKET,    /* a path that fits sun_path */
    KEY_REGION,    /* text a peer's hello decoder accepts */
    KEY_U32,
    KEY_BOOL,
    KEY_LEVEL,
    KEY_NET_LISTEN,     /* IP address:port, [v6]:port: the peer listener does not resolve */
    KEY_METRICS_LISTEN, /* same, or localhost:port, or "" to disable */
    KEY_ADVERTISE,      /* host:port short enough for a hello, or "" */
    KEY_NODE_TYPE,
    KEY_BOOTSTRAP,
    KEY_REGISTRY_URL,
    KEY_SYNC, /* normal|full, stored as bool full */
};

struct key_def {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    uint32_t min, max; /* KEY_U32 only */
    bool reload;       /* SIGHUP applies a change at run time; otherwise it needs a restart */
};

#define F(field) offsetof(struct vv_config, field)
static const struct key_def keys[] = {
    {"node", "state_dir", KEY_STATE_DIR, F(state_dir), 0, 0, false},
    {"node", "type", KEY_NODE_TYPE, F(node_type), 0, 0, false},
    {"node", "region", KEY_REGION, F(region), 0, 0, false},
    {"log", "level", KEY_LEVEL, F(log_level), 0, 0, true},
    {"rpc", "socket", KEY_SOCKET, F(rpc_socket), 0, 0, false},
    {"rpc", "max_clients", KEY_U32, F(rpc_max_clients), 1, 4096, false},
    {"rpc", "max_line_bytes", KEY_U32, F(rpc_max_line_bytes), 1024, 64u << 20, false},
    {"rpc", "max_queue_bytes", KEY_U32, F(rpc_max_queue_bytes), 64u << 10, 1u << 30, false},
    {"rpc", "max_in_flight", KEY_U32, F(rpc_max_in_flight), 1, 65536, false},
    {"rpc", "lines_per_turn", KEY_U32, F(rpc_lines_per_turn), 1, 65536, false},
    {"metrics", "listen", KEY_METRICS_LISTEN, F(metrics_listen), 0, 0, false},
    {"metrics", "max_connections", KEY_U32, F(metrics_max_connections), 2, 100000, false},
    {"metrics", "header_timeout_ms", KEY_U32, F(metrics_header_timeout_ms), 100, 600000, false},
    {"metrics", "idle_timeout_ms", KEY_U32, F(metrics_idle_timeout_ms), 100, 3600000, false},
    {"metrics", "write_timeout_ms", KEY_U32, F(metrics_write_timeout_ms), 100, 3600000, false},
    {"metrics", "pause_queue_bytes", KEY_U32, F(metrics_pause_queue_bytes), 4096, 1u << 30, false},
    {"metrics", "max_queue_bytes", KEY_U32, F(metrics_max_queue_bytes), 65536, 1u << 30, false},
    {"net", "listen", KEY_NET_LISTEN, F(net_listen), 0, 0, false},
    {"net", "bootstrap", KEY_BOOTSTRAP, F(net_bootstrap), 0, 0, false},
    {"net", "mdns", KEY_BOOL, F(net_mdns), 0, 0, false},
    {"net", "max_connections", KEY_U32, F(net_max_connections), 1, 100000, false},
    {"net", "advertise", KEY_ADVERTISE, F(net_advertise), 0, 0, false},
    {"net", "low_water", KEY_U32, F(net_low_water), 1, 100000, false},
    {"net", "high_water", KEY_U32, F(net_high_water), 1, 100000, false},
    {"net", "max_half_open", KEY_U32, F(net_max_half_open), 1, 100000, false},
    {"net", "handshake_timeout_ms", KEY_U32, F(net_handshake_timeout_ms), 100, 600000, false},
    {"net", "peer_queue_bytes", KEY_U32, F(net_peer_queue_bytes), 65536, 1u << 30, false},
    {"net", "memory_budget_mb", KEY_U32, F(net_memory_budget_mb), 1, 1u << 20, false},
    {"net", "keepalive_ms", KEY_U32, F(net_keepalive_ms), 100, 3600000, false},
    {"net", "reconnect_max_ms", KEY_U32, F(net_reconnect_max_ms), 100, 86400000, false},
    {"registry", "url", KEY_REGISTRY_URL, F(registry_url), 0, 0, false},
    {"registry", "access_log_max_rows", KEY_U32, F(registry_access_log_max_rows), 100, 100000000,
     false},
    {"registry", "synchronous", KEY_SYNC, F(registry_full_sync), 0, 0, false},
    {"userdb", "max_open", KEY_U32, F(userdb_max_open), 0, 1000000, false},
    {"userdb", "synchronous", KEY_SYNC, F(userdb_full_sync), 0, 0, false},
    {"crdt", "anti_entropy_ms", KEY_U32, F(crdt_anti_entropy_ms), 100, 3600000, false},
    {"crdt", "compact_updates", KEY_U32, F(crdt_compact_updates), 10, 10000000, false},
    {"crdt", "max_peer_documents", KEY_U32, F(crdt_max_peer_documents), 0, 100000, true},
    {"crdt", "auto_join", KEY_BOOL, F(crdt_auto_join), 0, 0, true},
    {"crdt", "synchronous", KEY_SYNC, F(crdt_full_sync), 0, 0, false},
};
#undef F

static const char *const node_types[] = {"bootstrap", "relay",  "indexer",    "storage",
                                         "edge",      "client", "self_hosted"};

void vv_config_defaults(struct vv_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->state_dir = vv_xstrdup("/var/lib/vivim");
    cfg->node_type = vv_xstrdup("storage");
    cfg->region = vv_xstrdup("");
    cfg->log_level = VV_LOG_INFO;
    cfg->rpc_socket = vv_xstrdup("/run/vivim/vivimd.sock");
    cfg->rpc_max_clients = 64;
    cfg->rpc_max_line_bytes = 1u << 20;
    cfg->rpc_max_queue_bytes = 16u << 20;
    cfg->rpc_max_in_flight = 64;
    cfg->rpc_lines_per_turn = 32;
    cfg->metrics_listen = vv_xstrdup("127.0.0.1:9464");
    cfg->metrics_max_connections = 64;
    cfg->metrics_header_timeout_ms = 5000;
    cfg->metrics_idle_timeout_ms = 10000;
    cfg->metrics_write_timeout_ms = 15000;
    cfg->metrics_pause_queue_bytes = 256u << 10;
    cfg->metrics_max_queue_bytes = 1u << 20;
    cfg->net_listen = vv_xstrdup("0.0.0.0:4747");
    cfg->net_bootstrap = vv_xstrdup("");
    cfg->net_mdns = false;
    cfg->net_max_connections = 1024;
    cfg->net_advertise = vv_xstrdup("");
    cfg->net_low_water = 32;
    cfg->net_high_water = 64;
    cfg->net_max_half_open = 256;
    cfg->net_handshake_timeout_ms = 5000;
    cfg->net_peer_queue_bytes = 8u << 20;
    cfg->net_memory_budget_mb = 256;
    cfg->net_keepalive_ms = 15000;
    cfg->net_reconnect_max_ms = 300000;
    cfg->registry_url = vv_xstrdup("");
    cfg->registry_access_log_max_rows = 100000;
    cfg->registry_full_sync = false;
    cfg->userdb_max_open = 0;
    cfg->userdb_full_sync = false;
    cfg->crdt_anti_entropy_ms = 5000;
    cfg->crdt_compact_updates = 1000;
    cfg->crdt_max_peer_documents = 10000;
    cfg->crdt_auto_join = true;
    cfg->crdt_full_sync = false;
    cfg->path = NULL;
}

void vv_config_free(struct vv_config *cfg)
{
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++) {
        enum key_type t = keys[i].type;
        if (t == KEY_U32 || t == KEY_BOOL || t == KEY_LEVEL || t == KEY_SYNC)
            continue;
        char **p = (char **)((char *)cfg + keys[i].offset);
        vv_free(*p);
        *p = NULL;
    }
    vv_free(cfg->path);
    cfg->path = NULL;
}

/* ---- value checks --------------------------------------------------------------------- */

static int parse_u32(const char *v, uint32_t min, uint32_t max, uint32_t *out, char *why,
                     size_t why_len)
{
    if (*v == '\0' || *v == '-' || *v == '+') {
        snprintf(why, why_len, "expected a whole number from %u to %u", min, max);
        return VV_ECONFIG_VALUE;
    }
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end != '\0') {
        snprintf(why, why_len, "expected a whole number from %u to %u", min, max);
        return VV_ECONFIG_VALUE;
    }
    if (errno == ERANGE || n < min || n > max) {
        snprintf(why, why_len, "%s is out of range (%u to %u)", v, min, max);
        return VV_ECONFIG_RANGE;
    }
    *out = (uint32_t)n;
    return 0;
}

/* A DNS name or a numeric address: letters, digits, '-', '.', and ':' inside brackets. */
static bool valid_host(const char *h, size_t len, bool bracketed)
{
    if (len == 0 || len > 253)
        return false;
    char buf[256];
    memcpy(buf, h, len);
    buf[len] = '\0';
    if (bracketed) {
        struct in6_addr a6;
        return inet_pton(AF_INET6, buf, &a6) == 1;
    }
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

int vv_config_split_hostport(const char *s, char *host, size_t host_len, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    bool bracketed = false;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return VV_EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        bracketed = true;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return VV_EINVAL;
        hl = (size_t)(colon - s);
    }
    if (!valid_host(h, hl, bracketed) || hl + 1 > host_len)
        return VV_EINVAL;
    uint32_t p;
    char why[8];
    if (parse_u32(colon + 1, 0, 65535, &p, why, sizeof(why)) != 0)
        return VV_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static int check_hostport(const char *v, char *why, size_t why_len)
{
    char host[256];
    uint16_t port;
    if (vv_config_split_hostport(v, host, sizeof(host), &port) != 0) {
        snprintf(why, why_len, "expected host:port or [ipv6]:port with a port from 0 to 65535");
        return VV_ECONFIG_VALUE;
    }
    return 0;
}

/*
 * A listen address: host:port whose host is an IP address, tested with the libuv calls the
 * listeners bind with (src/net/tcp.c, src/monitor/http.c); the metrics endpoint also takes
 * "localhost", which it binds as 127.0.0.1.
 */
static int check_listen(const char *v, bool metrics, char *why, size_t why_len)
{
    int rc = check_hostport(v, why, why_len);
    if (rc != 0)
        return rc;
    char host[256];
    uint16_t port;
    vv_config_split_hostport(v, host, sizeof(host), &port);
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if ((metrics && strcmp(host, "localhost") == 0) || uv_ip4_addr(host, port, &a4) == 0 ||
        (strchr(host, ':') != NULL && uv_ip6_addr(host, port, &a6) == 0))
        return 0;
    snprintf(why, why_len, "expected an IP address and port (%s); host names are not resolved",
             metrics ? "127.0.0.1:9464, [::1]:9464, localhost:9464" : "0.0.0.0:4747, [::]:4747");
    return VV_ECONFIG_VALUE;
}

static int check_max_bytes(const char *v, size_t max, const char *who, char *why, size_t why_len)
{
    size_t n = strlen(v);
    if (n <= max)
        return 0;
    snprintf(why, why_len, "%zu bytes; %s at most %zu", n, who, max);
    return VV_ECONFIG_RANGE;
}

/* The region travels in the hello: it is checked by the decoder each peer runs on it. */
static int check_region(const char *v, char *why, size_t why_len)
{
    int rc = check_max_bytes(v, VV_CONFIG_REGION_MAX_BYTES, "peers accept", why, why_len);
    if (rc != 0)
        return rc;
    uint8_t hello[VV_SESSION_MAX_HELLO_BYTES];
    size_t len;
    char listen[VV_NET_ADDRESS_BYTES];
    int type;
    uint32_t caps;
    if (vv_net_hello_encode(0, 0, "", v, hello, sizeof(hello), &len) != 0 ||
        vv_net_hello_decode(hello, len, &type, &caps, listen, sizeof(listen)) != 0) {
        snprintf(why, why_len, "peers accept only UTF-8 text without control characters");
        return VV_ECONFIG_VALUE;
    }
    return 0;
}

/* libpq's own parser: a URL it cannot parse would otherwise be retried for ever. */
static int check_pg_url(const char *v, char *why, size_t why_len)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(v, &msg);
    if (opts != NULL) {
        PQconninfoFree(opts);
        return 0;
    }
    if (msg == NULL) {
        snprintf(why, why_len, "libpq cannot parse this URL");
    } else {
        size_t n = strlen(msg);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '.' || msg[n - 1] == ' '))
            n--;
        snprintf(why, why_len, "%.*s", (int)VV_MIN(n, 150), msg);
        PQfreemem(msg);
    }
    return VV_ECONFIG_VALUE;
}

/* Comma-separated "host:port" or "<64 hex digits>@host:port"; spaces around commas allowed. */
static int check_bootstrap(const char *v, char *why, size_t why_len)
{
    char *copy = vv_xstrdup(v);
    int rc = 0, count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l > 0 && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
            tok[--l] = '\0';
        if (l == 0)
            continue;
        if (++count > VV_CONFIG_MAX_BOOTSTRAP) {
            snprintf(why, why_len, "more than %d bootstrap peers", VV_CONFIG_MAX_BOOTSTRAP);
            rc = VV_ECONFIG_RANGE;
            break;
        }
        char *at = strchr(tok, '@');
        if (at != NULL) {
            uint8_t id[VV_NODE_ID_BYTES];
            *at = '\0';
            if (strlen(tok) != 2 * VV_NODE_ID_BYTES || vv_hex_decode(tok, id, sizeof(id)) != 0) {
                snprintf(why, why_len, "bootstrap peer '%.80s': node ID must be 64 hex digits",
                         tok);
                rc = VV_ECONFIG_VALUE;
                break;
            }
            tok = at + 1;
        }
        char host[256];
        uint16_t port;
        if (vv_config_split_hostport(tok, host, sizeof(host), &port) != 0 || port == 0) {
            snprintf(why, why_len, "bootstrap peer '%.80s': expected host:port or nodeid@host:port",
                     tok);
            rc = VV_ECONFIG_VALUE;
            break;
        }
        if (strlen(tok) > VV_CONFIG_ADDRESS_MAX_BYTES) {
            /* The connection manager would drop it at start-up with only a warning. */
            snprintf(why, why_len, "bootstrap peer '%.80s': longer than %zu bytes", tok,
                     (size_t)VV_CONFIG_ADDRESS_MAX_BYTES);
            rc = VV_ECONFIG_RANGE;
            break;
        }
    }
    vv_free(copy);
    return rc;
}

static int set_key(struct vv_config *cfg, const struct key_def *k, const char *v, char *why,
                   size_t why_len)
{
    void *field = (char *)cfg + k->offset;
    int rc;
    switch (k->type) {
    case KEY_U32:
        return parse_u32(v, k->min, k->max, field, why, why_len);
    case KEY_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0 ||
            strcmp(v, "1") == 0)
            *(bool *)field = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0 ||
                 strcmp(v, "0") == 0)
            *(bool *)field = false;
        else {
            snprintf(why, why_len, "expected true, false, yes, no, on, off, 1 or 0");
            return VV_ECONFIG_VALUE;
        }
        return 0;
    case KEY_SYNC:
        if (strcmp(v, "normal") == 0)
            *(bool *)field = false;
        else if (strcmp(v, "full") == 0)
            *(bool *)field = true;
        else {
            snprintf(why, why_len, "expected normal or full");
            return VV_ECONFIG_VALUE;
        }
        return 0;
    case KEY_LEVEL:
        if (vv_log_parse_level(v, field) != 0) {
            snprintf(why, why_len, "expected one of error, warn, notice, info, debug");
            return VV_ECONFIG_VALUE;
        }
        return 0;
    case KEY_PATH:
    case KEY_STATE_DIR:
    case KEY_SOCKET:
        if (*v == '\0' || strlen(v) >= VV_CONFIG_MAX_PATH_BYTES) {
            snprintf(why, why_len, "expected a path");
            return VV_ECONFIG_VALUE;
        }
        if (k->type == KEY_STATE_DIR && strlen(v) > VV_CONFIG_STATE_DIR_MAX_BYTES) {
            snprintf(why, why_len,
                     "%zu bytes; at most %d, so that every file under it has a path shorter "
                     "than PATH_MAX",
                     strlen(v), VV_CONFIG_STATE_DIR_MAX_BYTES);
            return VV_ECONFIG_RANGE;
        }
        if (k->type == KEY_SOCKET &&
            (rc = check_max_bytes(v, VV_CONFIG_SOCKET_MAX_BYTES, "a Unix socket path holds", why,
                                  why_len)) != 0)
            return rc;
        break;
    case KEY_REGION:
        if ((rc = check_region(v, why, why_len)) != 0)
            return rc;
        break;
    case KEY_NET_LISTEN:
        if ((rc = check_listen(v, false, why, why_len)) != 0)
            return rc;
        break;
    case KEY_METRICS_LISTEN:
        if (*v != '\0' && (rc = check_listen(v, true, why, why_len)) != 0)
            return rc;
        break;
    case KEY_ADVERTISE:
        if (*v != '\0' && ((rc = check_hostport(v, why, why_len)) != 0 ||
                           (rc = check_max_bytes(v, VV_CONFIG_ADDRESS_MAX_BYTES, "peers accept",
                                                 why, why_len)) != 0))
            return rc;
        break;
    case KEY_NODE_TYPE: {
        bool ok = false;
        for (size_t i = 0; i < VV_ARRAY_SIZE(node_types); i++)
            ok |= strcmp(v, node_types[i]) == 0;
        if (!ok) {
            snprintf(why, why_len,
                     "expected one of bootstrap, relay, indexer, storage, edge, client, "
                     "self_hosted");
            return VV_ECONFIG_VALUE;
        }
        break;
    }
    case KEY_BOOTSTRAP:
        if ((rc = check_bootstrap(v, why, why_len)) != 0)
            return rc;
        break;
    case KEY_REGISTRY_URL:
        if (*v != '\0' && strncmp(v, "postgresql://", 13) != 0 &&
            strncmp(v, "postgres://", 11) != 0) {
            snprintf(why, why_len,
                     "expected empty (SQLite in the state directory) or a postgresql:// URL");
            return VV_ECONFIG_VALUE;
        }
        if (*v != '\0' && (rc = check_pg_url(v, why, why_len)) != 0)
            return rc;
        break;
    case KEY_STRING:
        break;
    }
    char **s = field;
    vv_free(*s);
    *s = vv_xstrdup(v);
    return 0;
}

/* ---- parsing -------------------------------------------------------------------------- */

struct parse_ctx {
    struct vv_config *cfg;
    int rc;                                      /* first error */
    char why[256];                               /* its message, without the file:line prefix */
    int line_of[sizeof(keys) / sizeof(keys[0])]; /* where each key was set; 0 = not set */
    const char *text;
    size_t len;
    /* inih's handler is not told its line: our reader hands inih one line per call and
     * counts them, so that checks made after every key is read can name a real line. */
    size_t pos;    /* next byte of text for the reader */
    int line;      /* line of the text last handed to inih */
    bool mid_line; /* the last piece handed over did not end its line */
};

/* The line that set [section] name, or 0 if the file did not set it. */
static int line_of(const struct parse_ctx *ctx, const char *section, const char *name)
{
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return ctx->line_of[i];
    abort(); /* a key missing from keys[] is a programming error */
}

/* ini_reader over ctx->text, as inih's string reader, counting lines. */
static char *read_line(char *str, int num, void *stream)
{
    struct parse_ctx *ctx = stream;
    if (ctx->pos >= ctx->len || num < 2)
        return NULL;
    if (!ctx->mid_line)
        ctx->line++;
    size_t n = 0;
    while (n < (size_t)num - 1 && ctx->pos < ctx->len) {
        char c = ctx->text[ctx->pos++];
        str[n++] = c;
        if (c == '\n')
            break;
    }
    str[n] = '\0';
    ctx->mid_line = str[n - 1] != '\n';
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *ctx = user;
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++) {
        if (strcmp(keys[i].section, section) != 0 || strcmp(keys[i].name, name) != 0)
            continue;
        if (ctx->line_of[i] != 0) {
            snprintf(ctx->why, sizeof(ctx->why), "[%s] %s is set twice", section, name);
            ctx->rc = VV_ECONFIG_VALUE;
            return 0;
        }
        ctx->line_of[i] = ctx->line;
        char why[200];
        int rc = set_key(ctx->cfg, &keys[i], value, why, sizeof(why));
        if (rc != 0) {
            snprintf(ctx->why, sizeof(ctx->why), "[%s] %s: %s", section, name, why);
            ctx->rc = rc;
            return 0;
        }
        return 1;
    }
    if (*section == '\0') {
        snprintf(ctx->why, sizeof(ctx->why), "'%.64s' is outside any [section]", name);
        ctx->rc = VV_ECONFIG_SYNTAX;
        return 0;
    }
    bool known_section = false;
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++)
        known_section |= strcmp(keys[i].section, section) == 0;
    if (!known_section)
        snprintf(ctx->why, sizeof(ctx->why), "unknown section [%.64s]", section);
    else
        snprintf(ctx->why, sizeof(ctx->why), "unknown key '%.64s' in section [%s]", name, section);
    ctx->rc = VV_ECONFIG_UNKNOWN;
    return 0;
}

/*
 * Checks what inih would otherwise accept or mangle: NUL bytes, over-long lines, sections
 * without keys (an unknown empty section is still a mistake), and keys before any section.
 * Returns the 1-based line of the first problem, or 0.
 */
static int prescan(struct parse_ctx *ctx)
{
    const char *p = ctx->text, *end = ctx->text + ctx->len;
    int line = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) > VV_CONFIG_MAX_LINE_BYTES) {
            snprintf(ctx->why, sizeof(ctx->why), "line longer than %d bytes",
                     VV_CONFIG_MAX_LINE_BYTES);
            ctx->rc = VV_ECONFIG_SYNTAX;
            return line;
        }
        if (memchr(p, '\0', (size_t)(le - p)) != NULL) {
            snprintf(ctx->why, sizeof(ctx->why), "NUL byte in the file");
            ctx->rc = VV_ECONFIG_SYNTAX;
            return line;
        }
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q < le && *q == '[') {
            const char *close = memchr(q, ']', (size_t)(le - q));
            if (close != NULL) {
                size_t n = (size_t)(close - q - 1);
                bool known = false;
                for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++)
                    known |= strlen(keys[i].section) == n && memcmp(keys[i].section, q + 1, n) == 0;
                if (!known) {
                    snprintf(ctx->why, sizeof(ctx->why), "unknown section [%.*s]",
                             (int)VV_MIN(n, 64), q + 1);
                    ctx->rc = VV_ECONFIG_UNKNOWN;
                    return line;
                }
            }
        }
        if (!nl)
            break;
        p = nl + 1;
        line++;
    }
    return 0;
}

int vv_config_parse(const char *name, const char *text, size_t len, struct vv_config *cfg,
                    char err[VV_CONFIG_ERR_BYTES])
{
    struct parse_ctx ctx = {.cfg = cfg, .text = text, .len = len};
    vv_config_defaults(cfg);
    err[0] = '\0';

    int line = len > VV_CONFIG_MAX_BYTES ? 1 : 0;
    if (line) {
        snprintf(ctx.why, sizeof(ctx.why), "file larger than %d bytes", VV_CONFIG_MAX_BYTES);
        ctx.rc = VV_ECONFIG_SYNTAX;
    } else {
        line = prescan(&ctx);
    }
    if (line == 0) {
        /* inih's line buffer must hold our longest line plus "\r\n\0"; these are the
         * Debian build's run-time knobs, set for each parse. */
        ini_use_stack = false;
        ini_allow_realloc = true;
        ini_max_line = VV_CONFIG_MAX_LINE_BYTES + 3;
        ini_allow_multiline = false;
        ini_stop_on_first_error = true;
        line = ini_parse_stream(read_line, &ctx, handler, &ctx);
        if (line > 0 && ctx.rc == 0) {
            snprintf(ctx.why, sizeof(ctx.why),
                     "syntax error (expected [section], key = value or a comment)");
            ctx.rc = VV_ECONFIG_SYNTAX;
        } else if (line < 0) {
            snprintf(ctx.why, sizeof(ctx.why), "out of memory while parsing");
            ctx.rc = VV_ENOMEM;
            line = 0;
        }
    }
    if (ctx.rc == 0 && (cfg->net_low_water > cfg->net_high_water ||
                        cfg->net_high_water > cfg->net_max_connections)) {
        /* Keys may come in any order: the relation is checked once all are read, and the
         * error names the later of the two keys that conflict (the defaults never do, so at
         * least one of them was set). */
        bool low_high = cfg->net_low_water > cfg->net_high_water;
        line = VV_MAX(line_of(&ctx, "net", "high_water"),
                      line_of(&ctx, "net", low_high ? "low_water" : "max_connections"));
        snprintf(ctx.why, sizeof(ctx.why),
                 "[net] needs low_water (%u) <= high_water (%u) <= max_connections (%u)",
                 cfg->net_low_water, cfg->net_high_water, cfg->net_max_connections);
        ctx.rc = VV_ECONFIG_RANGE;
    }
    if (ctx.rc == 0 && cfg->metrics_pause_queue_bytes >= cfg->metrics_max_queue_bytes) {
        /* Reading must pause before the queue reaches the size that closes the connection. */
        snprintf(ctx.why, sizeof(ctx.why),
                 "[metrics] needs pause_queue_bytes (%u) < max_queue_bytes (%u)",
                 cfg->metrics_pause_queue_bytes, cfg->metrics_max_queue_bytes);
        ctx.rc = VV_ECONFIG_RANGE;
        line = VV_MAX(line_of(&ctx, "metrics", "pause_queue_bytes"),
                      line_of(&ctx, "metrics", "max_queue_bytes"));
    }
    if (ctx.rc != 0) {
        snprintf(err, VV_CONFIG_ERR_BYTES, "%s:%d: %s", name, line, ctx.why);
        vv_config_free(cfg);
        return ctx.rc;
    }
    cfg->path = vv_xstrdup(name);
    return 0;
}

int vv_config_load(const char *path, struct vv_config *cfg, char err[VV_CONFIG_ERR_BYTES])
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, VV_CONFIG_ERR_BYTES, "%s: cannot open: %s", path, strerror(errno));
        memset(cfg, 0, sizeof(*cfg));
        return VV_ECONFIG_OPEN;
    }
    size_t cap = 4096, len = 0;
    char *buf = vv_xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len > VV_CONFIG_MAX_BYTES)
            break;
        if (len == cap)
            buf = vv_xrealloc(buf, cap *= 2);
    }
    int read_err = ferror(f);
    fclose(f);
    if (read_err) {
        vv_free(buf);
        snprintf(err, VV_CONFIG_ERR_BYTES, "%s: read error", path);
        memset(cfg, 0, sizeof(*cfg));
        return VV_ECONFIG_OPEN;
    }
    int rc = vv_config_parse(path, buf, len, cfg, err);
    vv_free(buf);
    return rc;
}

/* Whether the key's value differs between a and b. */
static bool key_differs(const struct key_def *k, const struct vv_config *a,
                        const struct vv_config *b)
{
    const void *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    switch (k->type) {
    case KEY_U32:
        return *(const uint32_t *)fa != *(const uint32_t *)fb;
    case KEY_BOOL:
    case KEY_SYNC:
        return *(const bool *)fa != *(const bool *)fb;
    case KEY_LEVEL:
        return *(const enum vv_log_level *)fa != *(const enum vv_log_level *)fb;
    default: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return strcmp(sa ? sa : "", sb ? sb : "") != 0;
    }
    }
}

void vv_config_diff(const struct vv_config *a, const struct vv_config *b, vv_config_change_cb fn,
                    void *arg)
{
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++)
        if (key_differs(&keys[i], a, b))
            fn(keys[i].section, keys[i].name, keys[i].reload, arg);
}

void vv_config_apply_reloadable(struct vv_config *dst, const struct vv_config *src)
{
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++) {
        const struct key_def *k = &keys[i];
        if (!k->reload || !key_differs(k, dst, src))
            continue;
        void *fd = (char *)dst + k->offset;
        const void *fs = (const char *)src + k->offset;
        switch (k->type) {
        case KEY_U32:
            *(uint32_t *)fd = *(const uint32_t *)fs;
            break;
        case KEY_BOOL:
        case KEY_SYNC:
            *(bool *)fd = *(const bool *)fs;
            break;
        case KEY_LEVEL:
            *(enum vv_log_level *)fd = *(const enum vv_log_level *)fs;
            break;
        default:
            vv_free(*(char **)fd);
            *(char **)fd = vv_xstrdup(*(char *const *)fs);
            break;
        }
    }
}

void vv_config_print(const struct vv_config *cfg, FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < VV_ARRAY_SIZE(keys); i++) {
        const struct key_def *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        const void *field = (const char *)cfg + k->offset;
        switch (k->type) {
        case KEY_U32:
            fprintf(out, "%s = %u\n", k->name, *(const uint32_t *)field);
            break;
        case KEY_BOOL:
            fprintf(out, "%s = %s\n", k->name, *(const bool *)field ? "true" : "false");
            break;
        case KEY_SYNC:
            fprintf(out, "%s = %s\n", k->name, *(const bool *)field ? "full" : "normal");
            break;
        case KEY_LEVEL:
            fprintf(out, "%s = %s\n", k->name,
                    vv_log_level_name(*(const enum vv_log_level *)field));
            break;
        default:
            fprintf(out, "%s = %s\n", k->name, *(char *const *)field);
            break;
        }
    }
}
