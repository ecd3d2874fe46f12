/* [echo]: whether this node answers peers' echo requests, and how large they may be. */
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/echo.h"

#define S struct vv_echo_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_BOOL_KEY(S, serve, "true", true,
                       "Answer peers' echo requests (a connected peer measuring its round trip "
                       "to this node through the request layer): true or false. A refused "
                       "request is answered \"denied\"."),
    VV_CONFIG_U32_KEY(S, max_bytes, "1024", 0, 65536, true,
                      "Largest echo payload in bytes (0 to 65536), served or sent by echo.ping; "
                      "a larger request is answered \"bad request\"."),
    VV_CONFIG_U32_KEY(S, timeout_ms, "5000", 10, 600000, true,
                      "How long echo.ping waits for the answer unless the call says otherwise "
                      "(ms)."),
};
#undef S

const struct vv_config_section vv_echo_settings_section =
    VV_CONFIG_SECTION("echo", "The echo module: round trips through the request layer.",
                      struct vv_echo_settings, keys, NULL);

const struct vv_echo_settings *vv_echo_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_echo_settings_section);
}
