/*
 * Choke selection (pubsub_core.h): which mesh links of one topic keep pushing this node the
 * topic's large messages in full. A pure function of the links' credits and flags, in the
 * manner of mesh selection: the router keeps the credits and sends the CHOKE frames.
 *
 * The aim is to receive each message in full from about `unchoked` links (so duplicates per
 * delivery stay near unchoked - 1) while the links that deliver first stay among them
 * (latency), and a link that stopped delivering is replaced within a heartbeat or two
 * (attackers). The other links announce what they receive, so a message the unchoked links
 * fail to bring is still pulled (router.c, "Lazy push").
 */
#include "vivim/pubsub_core.h"

/* The unchoked link with the lowest credit (the highest index among equals), or n. */
static uint32_t worst_unchoked(const struct vv_pubsub_choke_link *l, uint32_t n, const bool *choked)
{
    uint32_t w = n;
    for (uint32_t i = 0; i < n; i++)
        if (!choked[i] && (w == n || l[i].credit <= l[w].credit))
            w = i;
    return w;
}

/* The choked link with the highest credit (the lowest index among equals), or n. */
static uint32_t best_choked(const struct vv_pubsub_choke_link *l, uint32_t n, const bool *choked)
{
    uint32_t b = n;
    for (uint32_t i = 0; i < n; i++)
        if (choked[i] && (b == n || l[i].credit > l[b].credit))
            b = i;
    return b;
}

uint32_t vv_pubsub_choke_select(uint32_t unchoked, const struct vv_pubsub_choke_link *l, uint32_t n,
                                bool flowing, vv_pubsub_rand_cb rand_cb, void *rand_arg,
                                bool *choked)
{
    uint32_t open = 0;
    for (uint32_t i = 0; i < n; i++) {
        choked[i] = unchoked > 0 && l[i].choked;
        open += !choked[i];
    }
    if (unchoked == 0)
        goto out;
    while (open > unchoked) {
        choked[worst_unchoked(l, n, choked)] = true;
        open--;
    }
    while (open < unchoked && open < n) {
        choked[best_choked(l, n, choked)] = false;
        open++;
    }
    /* Each swap moves a strictly better link in, so this ends within n swaps. */
    for (uint32_t k = 0; k < n; k++) {
        uint32_t w = worst_unchoked(l, n, choked), b = best_choked(l, n, choked);
        if (w == n || b == n ||
            !(l[b].credit >
              VV_PUBSUB_CHOKE_SWAP_FACTOR * l[w].credit + VV_PUBSUB_CHOKE_SWAP_MARGIN))
            break;
        choked[w] = true;
        choked[b] = false;
    }
    if (flowing) {
        uint32_t w = worst_unchoked(l, n, choked);
        uint32_t n_choked = n - open;
        if (w < n && n_choked > 0 && l[w].credit < VV_PUBSUB_CHOKE_IDLE_CREDIT) {
            uint32_t pick = rand_cb(rand_arg, n_choked);
            for (uint32_t i = 0; i < n; i++)
                if (choked[i] && pick-- == 0) {
                    choked[i] = false;
                    choked[w] = true;
                    break;
                }
        }
    }
out:;
    uint32_t changed = 0;
    for (uint32_t i = 0; i < n; i++)
        changed += choked[i] != l[i].choked;
    return changed;
}
