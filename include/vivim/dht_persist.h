/*
 * The DHT's store on disk (src/dht/dht_persist.c): <state_dir>/dht.sqlite keeps the routing
 * table's verified contacts, so that a restarted node rejoins without its bootstrap list, and
 * this node's own published records (values, provider records), so that it can republish them.
 *
 * Everything here is soft state: contacts are pinged again before they enter the table, and
 * records are republished by their owner. So a file SQLite cannot read, a schema of another
 * version (PRAGMA user_version) or tables of another shape are logged, moved aside to
 * "<path>.bad" and replaced by an empty store; a row with a wrong blob size, a bad address or
 * an out-of-range number is logged, skipped and deleted. None of it stops the node.
 *
 * Threads: the calls run on the caller's thread and block it. vivimd calls them on the loop
 * thread, which the architecture allows only for short work; the choice is deliberate:
 * - the file is small: at most VV_DHT_PERSIST_MAX_CONTACTS contacts (about 120 bytes a row)
 *   and this node's own records;
 * - the contacts are saved every [dht] save_ms (default 60 s) and at stop, as one
 *   transaction, and loaded once at start;
 * - the database runs in WAL mode with synchronous=NORMAL: a commit appends to the WAL and
 *   does not fsync (a checkpoint, every 1,000 pages, does), and a kill -9 at any instant
 *   leaves the last committed save readable. A power loss may lose the last saves, which
 *   costs nothing but a slower rejoin.
 * Measured (gcc -O2, the 2-core development machine shared with other builds): a save of
 * 2,000 contacts costs about 3 ms of CPU and 3 to 8 ms of wall-clock time; of 400 (the table
 * of a million-node network), 0.6 ms. About one save in ten also checkpoints the WAL, which
 * fsyncs: 5 to 15 ms then.
 * Moving the save to the thread pool (vivim/sqlite_worker.h) would free the loop of even
 * that, at the cost of a copy of the table per save and a second way to close; not done.
 *
 * Nothing here knows the routing table or the clock: the caller converts its entries, with
 * last-seen times as Unix milliseconds (a monotonic clock does not survive a restart).
 */
#ifndef VIVIM_DHT_PERSIST_H
#define VIVIM_DHT_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/dht_core.h"

#define VV_DHT_PERSIST_FILE "dht.sqlite"
/* PRAGMA user_version of the schema this code writes. */
#define VV_DHT_PERSIST_SCHEMA_VERSION 1
/*
 * Contacts kept and loaded: the most recently seen. A table in a network of a million nodes
 * holds about 20 x log2(10^6) = 400 contacts; 2,000 is five times that, so that after a long
 * absence enough of them still answer, and pinging them all, 64 at a time with a 2 s timeout,
 * takes about a minute at worst.
 */
#define VV_DHT_PERSIST_MAX_CONTACTS 2000
/* The largest body of an own record: a value (64 KiB) with its signature and metadata. */
#define VV_DHT_PERSIST_MAX_BODY_BYTES (128u * 1024u)

struct vv_dht_persist;

/* A saved contact. */
struct vv_dht_saved_contact {
    uint8_t id[VV_DHT_ID_BYTES];
    struct vv_dht_addr addr;
    uint64_t last_seen_ms; /* Unix ms: the last answer, or when it entered the table */
    uint16_t rtt_ms;       /* smoothed, 0 = unknown */
};

/*
 * Opens path, creating it (and the schema) if missing. A file that is not a readable
 * database of this schema version is moved to "<path>.bad" (replacing an earlier one), logged,
 * and replaced by an empty store; *recreated (may be NULL) tells. Returns 0, or VV_EIO when
 * no store could be opened or created (the directory is not writable, the disk is full):
 * *out is NULL then.
 */
int vv_dht_persist_open(const char *path, struct vv_dht_persist **out, bool *recreated);
void vv_dht_persist_close(struct vv_dht_persist *p); /* p may be NULL */

/*
 * Saves contacts, in one transaction: each is inserted or replaces the row of its node ID;
 * then only the VV_DHT_PERSIST_MAX_CONTACTS most recently seen rows are kept. Contacts saved
 * before and not in this call stay until fresher ones push them out: a node stopped before
 * its saved contacts answered (no network at that moment) keeps them for its next start.
 * *kept (may be NULL) receives the number of rows after the save. Contacts with an address
 * that does not format are skipped. Returns 0 or VV_EIO (nothing changed).
 */
int vv_dht_persist_save_contacts(struct vv_dht_persist *p, const struct vv_dht_saved_contact *c,
                                 size_t n, size_t *kept);
/*
 * Loads up to max contacts, most recently seen first, into out (room for max). Rows that
 * are not valid (an ID of another size, an address vv_dht_addr_parse refuses, a negative
 * time, an RTT out of range) are skipped, counted in *skipped (may be NULL), logged once and
 * deleted. Returns 0 with *n set, or VV_EIO.
 */
int vv_dht_persist_load_contacts(struct vv_dht_persist *p, size_t max,
                                 struct vv_dht_saved_contact *out, size_t *n, size_t *skipped);

/*
 * This node's own published records, opaque to this store: a kind (the caller's, e.g. value
 * or provider record), a 32-byte key, a body (at most VV_DHT_PERSIST_MAX_BODY_BYTES, may be
 * empty) and an expiry in Unix ms. One row per (kind, key).
 */
/* Inserts or replaces the row of (kind, key); one transaction. Returns 0, VV_EINVAL (body too
 * large, kind negative) or VV_EIO. */
int vv_dht_persist_put_record(struct vv_dht_persist *p, int64_t kind,
                              const uint8_t key[VV_DHT_ID_BYTES], const uint8_t *body, size_t len,
                              uint64_t expires_ms);
/* Returns 0, VV_ENOTFOUND or VV_EIO. */
int vv_dht_persist_delete_record(struct vv_dht_persist *p, int64_t kind,
                                 const uint8_t key[VV_DHT_ID_BYTES]);
/* Deletes the rows that expired at or before now_ms; *deleted (may be NULL) counts them.
 * Returns 0 or VV_EIO. */
int vv_dht_persist_expire_records(struct vv_dht_persist *p, uint64_t now_ms, size_t *deleted);

/* Called once per valid row; body is borrowed for the call (NULL when len is 0). A non-zero
 * return stops the iteration and is returned by vv_dht_persist_load_records. */
typedef int (*vv_dht_persist_record_cb)(void *arg, int64_t kind, const uint8_t key[VV_DHT_ID_BYTES],
                                        const uint8_t *body, size_t len, uint64_t expires_ms);
/*
 * Calls cb for every valid record, by (kind, key). Rows that are not valid (a key of another
 * size, a body over the bound, a negative kind or expiry) are skipped, counted in *skipped
 * (may be NULL), logged once and deleted. The callback must not call this store. Meant for
 * start-up: it reads every row in one go. Returns 0, cb's non-zero return, or VV_EIO.
 */
int vv_dht_persist_load_records(struct vv_dht_persist *p, vv_dht_persist_record_cb cb, void *arg,
                                size_t *skipped);

#endif
