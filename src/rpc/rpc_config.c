/* [rpc]: the JSON-RPC socket and the limits each client lives within. */
#include <stdio.h>
#include <sys/un.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/rpc.h"

#define VV_RPC_SOCKET_MAX_BYTES (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

static int check_socket(const char *v, char *why, size_t why_len)
{
    int rc = vv_config_check_path(v, why, why_len);
    if (rc != 0)
        return rc;
    return vv_config_check_max_bytes(v, VV_RPC_SOCKET_MAX_BYTES, "a Unix socket path holds", why,
                                     why_len);
}

#define S struct vv_rpc_settings
static const struct vv_config_key rpc_keys[] = {
    VV_CONFIG_TEXT_KEY(S, socket, "/run/vivim/vivimd.sock", check_socket, false,
                       "Unix socket for JSON-RPC 2.0 (vivimctl, the publishing pipeline). "
                       "Created with mode 0660 and removed at shutdown. A second vivimd on the "
                       "same socket refuses to start. At most 107 bytes (the limit of a Unix "
                       "socket path)."),
    VV_CONFIG_U32_KEY(S, max_clients, "64", 1, 4096, false,
                      "Concurrent RPC connections (1 to 4096); a client past the limit gets an "
                      "error and is closed."),
    VV_CONFIG_U32_KEY(S, max_line_bytes, "1048576", 1024, 64u << 20, false,
                      "Longest request line in bytes (1024 to 67108864); a longer line is "
                      "answered with an error and discarded up to its newline."),
    VV_CONFIG_U32_KEY(S, max_queue_bytes, "16777216", 64u << 10, 1u << 30, false,
                      "Unsent reply bytes buffered per client (65536 to 1073741824) before a "
                      "client that does not read is disconnected."),
    VV_CONFIG_U32_KEY(S, max_in_flight, "64", 1, 65536, false,
                      "Calls per client dispatched and not yet answered (1 to 65536); at the "
                      "limit the client's socket is not read until half are answered."),
    VV_CONFIG_U32_KEY(S, lines_per_turn, "32", 1, 65536, false,
                      "Request lines of one client dispatched per turn of the event loop (1 to "
                      "65536), so that one client's burst cannot delay the others."),
};
#undef S

const struct vv_config_section vv_rpc_settings_section =
    VV_CONFIG_SECTION("rpc", NULL, struct vv_rpc_settings, rpc_keys, NULL);

const struct vv_rpc_settings *vv_rpc_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_rpc_settings_section);
}
