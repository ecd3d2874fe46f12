/*
 * The one hash for hash tables whose keys come from outside the process: node IDs a peer
 * sends, document ids a peer names, DIDs an RPC client passes, dots in a peer's update.
 *
 * An unkeyed hash (FNV, "the first bytes of a SHA-256", a fixed mixer) lets whoever chooses
 * the keys choose their buckets too: IDs that share a prefix, or strings found by a short
 * brute force, all land in one chain and turn every lookup into a scan of the whole table
 * (hash flooding). SipHash-2-4 under a secret random key takes that choice away: without the
 * key nobody can tell which keys collide.
 *
 * The key is drawn once per process from libsodium's randombytes and never leaves it. Bucket
 * positions therefore differ from run to run, so no table built on this hash may let them
 * show: nothing iterates such a table in bucket order to produce output, a trace or a
 * decision; each keeps a separate list or sorted array for that.
 */
#ifndef VIVIM_KEYED_HASH_H
#define VIVIM_KEYED_HASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Draws the process key, calling sodium_init first. The daemon calls it at start-up;
 * vv_keyed_hash64 calls it on first use, so tests and tools need not. Thread-safe; only the
 * first call does anything. Aborts if libsodium cannot initialise (no randomness).
 */
void vv_keyed_hash_init(void);

/* SipHash-2-4 (libsodium's crypto_shorthash) of len bytes under the process key. buf may be
 * NULL when len is 0. */
uint64_t vv_keyed_hash64(const void *buf, size_t len);

#endif
