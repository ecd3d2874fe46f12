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
                      "Documents other nodes may create here by offering them (a document's "
                      "access policy naming this node; 0: only documents created here, with "
                      "crdt.create, are synced). Beyond it, documents offered by peers are not "
                      "created."),
    VV_CONFIG_BOOL_KEY(S, auto_join, "true", true,
                       "true: a node the document's access policy lets in that syncs it is "
                       "joined to it, and a peer's policy naming this node creates the document "
                       "here, so sharing on the creator's side is enough. false: only nodes "
                       "joined here with crdt.join are synced with, and peers create no "
                       "documents here."),
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
