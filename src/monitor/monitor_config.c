/* [metrics]: the HTTP endpoint serving /metrics, /health and /events, and its limits. */
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/monitor.h"

/* Empty (disabled), an IP address and port, or localhost:port (bound as 127.0.0.1). */
static int check_listen(const char *v, char *why, size_t why_len)
{
    if (*v == '\0' || strncmp(v, "localhost:", 10) == 0)
        return *v == '\0' ? 0 : vv_config_check_hostport(v, why, why_len);
    int rc = vv_config_check_hostport(v, why, why_len);
    if (rc != 0)
        return rc;
    rc = vv_config_check_listen(v, why, why_len);
    if (rc == VV_ECONFIG_VALUE)
        snprintf(why, why_len,
                 "expected an IP address and port (127.0.0.1:9464, [::1]:9464, localhost:9464); "
                 "host names are not resolved");
    return rc;
}

/* Reading must pause before the queue reaches the size that closes the connection. */
static int check_section(const void *values, char *why, size_t why_len, const char **a,
                         const char **b)
{
    const struct vv_monitor_settings *c = values;
    if (c->pause_queue_bytes < c->max_queue_bytes)
        return 0;
    snprintf(why, why_len, "[metrics] needs pause_queue_bytes (%u) < max_queue_bytes (%u)",
             c->pause_queue_bytes, c->max_queue_bytes);
    *a = "pause_queue_bytes";
    *b = "max_queue_bytes";
    return VV_ECONFIG_RANGE;
}

#define S struct vv_monitor_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_TEXT_KEY(S, listen, "127.0.0.1:9464", check_listen, false,
                       "IP address and port of the HTTP endpoint serving /metrics (Prometheus), "
                       "/health and /events (Server-Sent Events). IPv6 as [::1]:9464; localhost "
                       "means 127.0.0.1; other host names are not resolved. Empty disables the "
                       "endpoint. Keep it on a loopback or management address: it is "
                       "unauthenticated."),
    VV_CONFIG_U32_KEY(S, max_connections, "64", 2, 100000, false,
                      "Open connections, /events subscribers included; when all are taken the "
                      "oldest idle or incomplete one gives way to a new one."),
    VV_CONFIG_U32_KEY(S, header_timeout_ms, "5000", 100, 600000, false,
                      "A request's line and headers must arrive within this many ms of its "
                      "first byte."),
    VV_CONFIG_U32_KEY(S, idle_timeout_ms, "10000", 100, 3600000, false,
                      "A keep-alive connection with no request in progress is closed after "
                      "this many ms."),
    VV_CONFIG_U32_KEY(S, write_timeout_ms, "15000", 100, 3600000, false,
                      "A connection whose unsent answers make no progress for this many ms is "
                      "closed."),
    VV_CONFIG_U32_KEY(S, pause_queue_bytes, "262144", 4096, 1u << 30, false,
                      "Past this many bytes of unsent answers, a connection's requests are not "
                      "read."),
    VV_CONFIG_U32_KEY(S, max_queue_bytes, "1048576", 65536, 1u << 30, false,
                      "Past this many bytes of unsent answers (or events), the connection is "
                      "closed."),
};
#undef S

const struct vv_config_section vv_monitor_settings_section =
    VV_CONFIG_SECTION("metrics", NULL, struct vv_monitor_settings, keys, check_section);

const struct vv_monitor_settings *vv_monitor_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_monitor_settings_section);
}
