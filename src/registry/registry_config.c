/* [registry]: which database holds the content registry, and how durably. */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/registry.h"

/* Empty, or a PostgreSQL URL libpq's own parser accepts: a URL it cannot parse would
 * otherwise be retried for ever. */
static int check_url(const char *v, char *why, size_t why_len)
{
    if (*v == '\0')
        return 0;
    if (strncmp(v, "postgresql://", 13) != 0 && strncmp(v, "postgres://", 11) != 0) {
        snprintf(why, why_len,
                 "expected empty (SQLite in the state directory) or a postgresql:// URL");
        return VV_ECONFIG_VALUE;
    }
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

#define S struct vv_registry_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_TEXT_KEY(S, url, "", check_url, false,
                       "Content registry backend: empty for SQLite in the state directory (the "
                       "embedded default), or a PostgreSQL URL such as "
                       "postgresql://vivim@/vivim?host=/run/postgresql (checked with libpq's "
                       "parser when the file is loaded; the server is reached only at "
                       "start-up)."),
    VV_CONFIG_U32_KEY(S, access_log_max_rows, "100000", 100, 100000000, false,
                      "Access log rows kept (100 to 100000000); the oldest are pruned as new "
                      "ones arrive."),
    VV_CONFIG_ENUM_KEY(S, synchronous, "normal", vv_config_sync_choices, false,
                       "SQLite durability: normal (WAL, synchronous=NORMAL: survives a crash of "
                       "vivimd, may lose the last commits on power loss) or full "
                       "(synchronous=FULL: survives power loss, slower). Ignored for "
                       "PostgreSQL, whose durability is the server's."),
};
#undef S

const struct vv_config_section vv_registry_settings_section =
    VV_CONFIG_SECTION("registry", NULL, struct vv_registry_settings, keys, NULL);

const struct vv_registry_settings *vv_registry_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_registry_settings_section);
}
