/* [crdt]: how documents shared with peers are kept in sync and stored. */
#include "vivim/common.h"
#include "vivim/config.h"
#include "vivim/crdt_sync.h"

#define S struct vv_crdt_settings
static const struct vv_config_key keys[] = {
    VV_CONFIG_U32_KEY(S, anti_entropy_ms, "5000", 100, 3600000, false,
                      "How often each document shared with peers is re-synced with one of them "
                      "(ms): repairs updates lost to disconnections."),
    VV_CONFIG_U32_KEY(S, compact_updates, "1000", 10, 10000000, false,
                      "Updates logged for one document before its log is folded into a "
                      "snapshot (on the thread pool)."),
    VV_CONFIG_U32_KEY(S, max_peer_documents, "10000", 0, 100000, true,
                      "Documents other nodes may create here by sharing them with this node "
                      "(0: only documents created here, with crdt.create, are synced). Beyond "
                      "it their sync requests are ignored."),
    VV_CONFIG_BOOL_KEY(S, auto_join, "true", true,
                       "true: a node that syncs a document with this one is joined to it (it "
                       "may then read and write it), so sharing on one side is enough. false: "
                       "only nodes joined here with crdt.join are synced with; both sides must "
                       "join each other. Use false where peers are not trusted."),
    VV_CONFIG_ENUM_KEY(S, synchronous, "normal", vv_config_sync_choices, false,
                       "Durability of the document store (state_dir/crdt.sqlite): normal or "
                       "full, as for [registry] synchronous."),
};
#undef S

const struct vv_config_section vv_crdt_settings_section =
    VV_CONFIG_SECTION("crdt", NULL, struct vv_crdt_settings, keys, NULL);

const struct vv_crdt_settings *vv_crdt_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_crdt_settings_section);
}
