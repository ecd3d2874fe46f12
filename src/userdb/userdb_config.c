/* [userdb]: the per-user databases' handle cache and durability. */
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/userdb.h"

#define S struct vv_userdb_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_U32_KEY(S, max_open, "0", 0, 1000000, false,
                      "Most per-user databases open at once (each costs three file "
                      "descriptors); 0 sizes the cache from the file-descriptor limit, keeping "
                      "256 descriptors for everything else."),
    VV_CONFIG_ENUM_KEY(S, synchronous, "normal", vv_config_sync_choices, false,
                       "Durability of per-user databases: normal or full, as for [registry] "
                       "synchronous."),
};
#undef S

const struct vv_config_section vv_userdb_settings_section =
    VV_CONFIG_SECTION("userdb",
                      "One SQLite file per user under state_dir/users/, named by the SHA-256 of "
                      "the owner DID.",
                      struct vv_userdb_settings, keys, NULL);

const struct vv_userdb_settings *vv_userdb_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_userdb_settings_section);
}
