/*
 * vivimd's configuration: an INI file (inih) whose every section and key is documented in
 * config/vivimd.conf. Loading is strict: an unknown section or key, a malformed value or a
 * number out of range stops with "file:line: what is wrong", and so does any value start-up
 * or the peers would refuse (a listen host that is not an IP address, a socket path past
 * sun_path, a region or address longer than a hello carries): --check-config, start-up and
 * reload all load through vv_config_parse, so they cannot disagree. A loaded config is a
 * plain value: reload builds a new one and the node swaps the keys that may change at run
 * time.
 */
#ifndef VIVIM_CONFIG_H
#define VIVIM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vivim/log.h"

#define VV_CONFIG_DEFAULT_PATH "/etc/vivim/vivimd.conf"
#define VV_CONFIG_MAX_BYTES    (1024 * 1024) /* a config file larger than this is refused */
#define VV_CONFIG_ERR_BYTES    512

struct vv_config {
    /* [node] */
    char *state_dir; /* identity key, SQLite files; created 0700 if missing, locked at start */
    char *node_type; /* bootstrap|relay|indexer|storage|edge|client|self_hosted */
    char *region;    /* label advertised to peers: "" or up to 31 bytes of UTF-8 text */
    /* [log] */
    enum vv_log_level log_level;
    /* [rpc] */
    char *rpc_socket;             /* Unix socket path */
    uint32_t rpc_max_clients;     /* concurrent connections */
    uint32_t rpc_max_line_bytes;  /* one request line */
    uint32_t rpc_max_queue_bytes; /* unsent replies per client before it is cut off */
    uint32_t rpc_max_in_flight;   /* unanswered calls per client before its reads pause */
    uint32_t rpc_lines_per_turn;  /* request lines of one client dispatched per loop turn */
    /* [metrics] */
    char *metrics_listen;               /* ip:port or localhost:port, "" disables the endpoint */
    uint32_t metrics_max_connections;   /* open connections, /events subscribers included */
    uint32_t metrics_header_timeout_ms; /* a request must arrive whole within this */
    uint32_t metrics_idle_timeout_ms;   /* keep-alive connection with no request in progress */
    uint32_t metrics_write_timeout_ms;  /* unsent answers with no write progress */
    uint32_t metrics_pause_queue_bytes; /* unsent answers past which requests are not read */
    uint32_t metrics_max_queue_bytes;   /* unsent bytes past which the connection is closed */
    /* [net] */
    char *net_listen;    /* ip:port this node accepts peers on */
    char *net_bootstrap; /* comma-separated host:port or nodeid@host:port, may be "" */
    bool net_mdns;
    uint32_t net_max_connections;
    char *net_advertise;        /* host:port peers should dial us at; "" = from listen */
    uint32_t net_low_water;     /* dial until this many peers are connected */
    uint32_t net_high_water;    /* above this many, trim the least useful */
    uint32_t net_max_half_open; /* connections in their handshake at once */
    uint32_t net_handshake_timeout_ms;
    uint32_t net_peer_queue_bytes; /* outbound bytes queued per peer */
    uint32_t net_memory_budget_mb; /* all peer queues and partial frames together */
    uint32_t net_keepalive_ms;     /* ping period per peer; silent for 3 periods = dropped */
    uint32_t net_reconnect_max_ms; /* cap on the re-dial backoff */
    /* [registry] */
    char *registry_url; /* "" = SQLite in state_dir; postgresql://... for PostgreSQL */
    uint32_t registry_access_log_max_rows; /* access log retention */
    bool registry_full_sync;               /* SQLite synchronous=FULL */
    /* [userdb] */
    uint32_t userdb_max_open; /* open per-user databases; 0 = from RLIMIT_NOFILE */
    bool userdb_full_sync;    /* synchronous=FULL instead of NORMAL */
    /* [crdt] */
    uint32_t crdt_anti_entropy_ms;    /* how often each shared document is re-synced */
    uint32_t crdt_compact_updates;    /* logged updates per document before a snapshot */
    uint32_t crdt_max_peer_documents; /* documents peers may create here by syncing them */
    bool crdt_auto_join;              /* a peer syncing a document with us is joined to it */
    bool crdt_full_sync;

    char *path; /* the file this was loaded from (copy), or NULL for defaults */
};

/* Fills cfg with the built-in defaults (the values config/vivimd.conf documents). */
void vv_config_defaults(struct vv_config *cfg);

/*
 * Loads path on top of the defaults. On error returns a negative VV_ECONFIG_* code, leaves
 * *cfg holding nothing that needs freeing, and writes "path:line: message" into err.
 */
int vv_config_load(const char *path, struct vv_config *cfg, char err[VV_CONFIG_ERR_BYTES]);

/* Parses from memory (fuzzing, tests); name is used in messages. Same contract as load. */
int vv_config_parse(const char *name, const char *text, size_t len, struct vv_config *cfg,
                    char err[VV_CONFIG_ERR_BYTES]);

/* Writes the effective configuration as an INI file that vv_config_load accepts. */
void vv_config_print(const struct vv_config *cfg, FILE *out);

/* Calls fn(section, key, reload, arg) for every key whose value differs between a and b, in
 * the order of the key table. reload: SIGHUP applies the key at run time; when false, a
 * change takes effect only at the next start. */
typedef void (*vv_config_change_cb)(const char *section, const char *key, bool reload, void *arg);
void vv_config_diff(const struct vv_config *a, const struct vv_config *b, vv_config_change_cb fn,
                    void *arg);
/* Copies the value of every key SIGHUP may apply from src into dst (strings duplicated). */
void vv_config_apply_reloadable(struct vv_config *dst, const struct vv_config *src);

void vv_config_free(struct vv_config *cfg);

/*
 * Splits "host:port" or "[ipv6]:port" (as validated by the loader). host receives the name
 * or address without brackets. Returns 0 or VV_EINVAL.
 */
int vv_config_split_hostport(const char *s, char *host, size_t host_len, uint16_t *port);

#endif
