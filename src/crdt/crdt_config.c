/* [crdt]: how documents shared with peers are kept in sync and stored. */
#include <stdio.h>

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
    VV_CONFIG_U32_KEY(S, max_document_bytes, "67108864", 1u << 20, 1u << 30, true,
                      "The largest update (a whole document to a new replica) accepted from a "
                      "peer or sent to one, in bytes; larger ones are counted "
                      "(vivimd_crdt_too_large_total) and not sent. Every node of a network "
                      "should use one value. At most stream_peer_mb MiB."),
    VV_CONFIG_U32_KEY(S, max_streams_per_peer, "8", 1, 1024, true,
                      "Updates larger than a frame (1 MiB) travel as streams: at most this many "
                      "open with one peer in each direction."),
    VV_CONFIG_U32_KEY(S, stream_peer_mb, "96", 1, 65536, true,
                      "MiB one peer's incoming streams may hold here while they arrive (each "
                      "reserves its document's size). At most stream_total_mb."),
    VV_CONFIG_U32_KEY(S, stream_total_mb, "256", 1, 65536, true,
                      "MiB all peers' incoming streams may hold here together."),
};
#undef S

static int check_section(const void *values, char *why, size_t why_len, const char **a,
                         const char **b)
{
    const struct vv_crdt_settings *c = values;
    if ((uint64_t)c->max_document_bytes > (uint64_t)c->stream_peer_mb << 20) {
        snprintf(why, why_len,
                 "[crdt] max_document_bytes (%u) is more than stream_peer_mb (%u MiB): such a "
                 "document could never be received",
                 c->max_document_bytes, c->stream_peer_mb);
        *a = "max_document_bytes";
        *b = "stream_peer_mb";
        return VV_ECONFIG_RANGE;
    }
    if (c->stream_peer_mb > c->stream_total_mb) {
        snprintf(why, why_len, "[crdt] needs stream_peer_mb (%u) <= stream_total_mb (%u)",
                 c->stream_peer_mb, c->stream_total_mb);
        *a = "stream_peer_mb";
        *b = "stream_total_mb";
        return VV_ECONFIG_RANGE;
    }
    return 0;
}

const struct vv_config_section vv_crdt_settings_section =
    VV_CONFIG_SECTION("crdt", NULL, struct vv_crdt_settings, keys, check_section);

const struct vv_crdt_settings *vv_crdt_settings(const struct vv_config *c)
{
    return vv_config_get(c, &vv_crdt_settings_section);
}
