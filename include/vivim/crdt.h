/*
 * The CRDT types of vivimd other than the sequence (which is in vivim/crdt_seq.h): a hybrid
 * logical clock, G-Counter, PN-Counter, LWW-Register, add-wins OR-Set and LWW-Map.
 *
 * Pure data structures: no I/O, no clock reads (the caller passes the physical time in), no
 * randomness. Every type is a delta-state CRDT: a local operation changes the state and
 * returns an *update*, which is an encoded state fragment of the same format as the full
 * state. Applying an update (vv_*_apply) is a join, so updates can be applied in any order,
 * any number of times, and every replica that has applied the same set ends with the same
 * state and the same encoding. docs/crdt.md describes the encoding byte for byte.
 *
 * Replica ids are 64-bit numbers, never 0. The document layer derives them from the 32-byte
 * node id (the first 8 bytes, big-endian); every type uses the same id for the same node.
 *
 * Ownership: vv_*_new returns an object freed with the matching vv_*_free. Encoded buffers
 * (out/out_len pairs) are allocated with vv_xmalloc and freed by the caller with vv_free.
 * json_t results are new references the caller json_decref()s; json_t arguments are
 * borrowed. Values put into registers, sets and maps are stored as canonical JSON text
 * (json_dumps with JSON_COMPACT | JSON_SORT_KEYS).
 *
 * Errors: VV_ECRDT_DECODE for any malformed, truncated, oversized, non-canonical, unknown
 * version or wrong-type encoding; VV_ECRDT_CAUSALITY for an OR-Set delta that assumes dots
 * the receiver has not seen; VV_ECRDT_RANGE for a counter or clock that would overflow;
 * VV_ELIMIT for a local value or path, or a join result, over the limits below; VV_EINVAL
 * for bad arguments.
 * A call that fails never changes the object it was given.
 */
#ifndef VIVIM_CRDT_H
#define VIVIM_CRDT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* ---- encoding constants ------------------------------------------------------------------- */

#define VV_CRDT_FORMAT_VERSION 1 /* first byte of every encoding */

/* Second byte of every encoding of these types (the sequence's format has its own layout). */
enum vv_crdt_type {
    VV_CRDT_GCOUNTER = 0x01,
    VV_CRDT_PNCOUNTER = 0x02,
    VV_CRDT_LWWREG = 0x03,
    VV_CRDT_ORSET = 0x04,
    VV_CRDT_LWWMAP = 0x05,
    VV_CRDT_STATE_VECTOR = 0x06,
};

/* The type byte of an encoding (a vv_crdt_type, or another type's byte: the caller checks),
 * or VV_ECRDT_DECODE when buf is shorter than 2 bytes or of another format version. */
int vv_crdt_peek_type(const uint8_t *buf, size_t len);

/*
 * Decoding limits. They bound the memory a hostile encoding can make us allocate (together
 * with the rule that a count may never exceed the bytes left in the input) and the recursion
 * of nested maps. An update from a peer is at most VV_CRDT_SYNC_MAX_DOC_BYTES (64 MiB, through a
 * stream when over a frame: crdt_sync.h). A join (apply
 * or merge) whose result could pass them is refused with VV_ELIMIT, so no replica builds a
 * state its peers would not decode.
 */
#define VV_CRDT_MAX_REPLICAS    65536   /* entries of a counter or a state vector */
#define VV_CRDT_MAX_VALUE_BYTES 65536   /* canonical JSON text of one value */
#define VV_CRDT_MAX_ELEMENTS    1000000 /* OR-Set elements, map keys per level, dots */
#define VV_CRDT_MAX_KEY_BYTES   1024    /* one LWW-Map key (UTF-8, no NUL) */
#define VV_CRDT_MAX_DEPTH       16      /* LWW-Map nesting, counting the root as 1 */

/* ---- hybrid logical clock ----------------------------------------------------------------- */

/*
 * A timestamp: hlc = wall_ms << 16 | logical, with wall_ms the 48-bit milliseconds since the
 * Unix epoch and logical a 16-bit counter; replica breaks ties. Timestamps order by (hlc,
 * replica), so two events of different replicas never compare equal.
 */
struct vv_crdt_ts {
    uint64_t hlc;
    uint64_t replica;
};

#define VV_HLC_WALL_BITS   48
#define VV_HLC_MAX_WALL_MS ((UINT64_C(1) << VV_HLC_WALL_BITS) - 1)
/* A remote timestamp more than this far ahead of our physical clock is refused by
 * vv_hlc_receive, so one peer with a broken (or hostile) clock cannot drag ours into the
 * future, where every later write of ours would carry its error. */
#define VV_HLC_MAX_DRIFT_MS (5 * 60 * 1000)

static inline uint64_t vv_hlc_wall_ms(uint64_t hlc)
{
    return hlc >> 16;
}
static inline uint16_t vv_hlc_logical(uint64_t hlc)
{
    return (uint16_t)(hlc & 0xffff);
}

/* The clock of one replica. last: the latest timestamp issued or received (hlc form). */
struct vv_hlc {
    uint64_t last;
    uint64_t replica;
};

/* replica must not be 0. */
void vv_hlc_init(struct vv_hlc *c, uint64_t replica);
/*
 * A timestamp for a local event at physical time phys_ms, greater than every timestamp this
 * clock issued or received before, even when phys_ms went backwards. Returns 0, or
 * VV_ECRDT_RANGE when the 48-bit wall time is exhausted (the clock is unchanged).
 */
int vv_hlc_now(struct vv_hlc *c, uint64_t phys_ms, struct vv_crdt_ts *out);
/*
 * Takes in a timestamp seen on a remote update, so later local timestamps exceed it. out
 * (may be NULL) receives the timestamp of the receive event. Returns 0, or VV_ECRDT_RANGE when
 * remote's wall time is more than VV_HLC_MAX_DRIFT_MS ahead of phys_ms (clock unchanged).
 */
int vv_hlc_receive(struct vv_hlc *c, uint64_t phys_ms, const struct vv_crdt_ts *remote,
                   struct vv_crdt_ts *out);
/* <0, 0, >0 by (hlc, replica). */
int vv_crdt_ts_cmp(const struct vv_crdt_ts *a, const struct vv_crdt_ts *b);

/* ---- state vectors ------------------------------------------------------------------------ */

/*
 * Per replica, how much of that replica's history a state contains (a counter's per-replica
 * total, the OR-Set's version vector). Entries sorted by replica, no duplicates, no zero
 * counters. A peer sends its vector; vv_*_delta_since answers with what the peer misses.
 */
struct vv_crdt_sv_entry {
    uint64_t replica;
    uint64_t counter;
};
struct vv_crdt_sv {
    size_t n;
    struct vv_crdt_sv_entry *e;
};

/* Frees the entries (sv itself is the caller's) and empties it. */
void vv_crdt_sv_clear(struct vv_crdt_sv *sv);
/* The counter for replica, 0 when absent. */
uint64_t vv_crdt_sv_get(const struct vv_crdt_sv *sv, uint64_t replica);
int vv_crdt_sv_encode(const struct vv_crdt_sv *sv, uint8_t **out, size_t *out_len);
/* On success *out holds new entries (clear it first); on failure *out is untouched. */
int vv_crdt_sv_decode(const uint8_t *buf, size_t len, struct vv_crdt_sv *out);

/* ---- G-Counter and PN-Counter ------------------------------------------------------------- */

struct vv_gcounter;
struct vv_pncounter;

struct vv_gcounter *vv_gcounter_new(void);
void vv_gcounter_free(struct vv_gcounter *c); /* NULL is fine */
/*
 * Adds amount (≥ 1) to replica's count. delta (may be NULL) receives the update to send.
 * Returns 0, VV_EINVAL, or VV_ECRDT_RANGE when the count would pass UINT64_MAX.
 */
int vv_gcounter_increment(struct vv_gcounter *c, uint64_t replica, uint64_t amount, uint8_t **delta,
                          size_t *delta_len);
/* The sum of all counts, saturated at INT64_MAX (JSON integers are signed 64-bit). */
int64_t vv_gcounter_value(const struct vv_gcounter *c);
int vv_gcounter_apply(struct vv_gcounter *c, const uint8_t *buf, size_t len);
int vv_gcounter_merge(struct vv_gcounter *dst, const struct vv_gcounter *src);
int vv_gcounter_encode(const struct vv_gcounter *c, uint8_t **out, size_t *out_len);
int vv_gcounter_decode(const uint8_t *buf, size_t len, struct vv_gcounter **out);
int vv_gcounter_state_vector(const struct vv_gcounter *c, struct vv_crdt_sv *out);
int vv_gcounter_delta_since(const struct vv_gcounter *c, const struct vv_crdt_sv *sv, uint8_t **out,
                            size_t *out_len);
json_t *vv_gcounter_to_json(const struct vv_gcounter *c);

struct vv_pncounter *vv_pncounter_new(void);
void vv_pncounter_free(struct vv_pncounter *c);
/* Adds amount (≠ 0, may be negative; INT64_MIN is refused). */
int vv_pncounter_add(struct vv_pncounter *c, uint64_t replica, int64_t amount, uint8_t **delta,
                     size_t *delta_len);
/* Increments minus decrements, saturated to the int64_t range. */
int64_t vv_pncounter_value(const struct vv_pncounter *c);
int vv_pncounter_apply(struct vv_pncounter *c, const uint8_t *buf, size_t len);
int vv_pncounter_merge(struct vv_pncounter *dst, const struct vv_pncounter *src);
int vv_pncounter_encode(const struct vv_pncounter *c, uint8_t **out, size_t *out_len);
int vv_pncounter_decode(const uint8_t *buf, size_t len, struct vv_pncounter **out);
/* Per replica: increments + decrements (a count of that replica's history). */
int vv_pncounter_state_vector(const struct vv_pncounter *c, struct vv_crdt_sv *out);
int vv_pncounter_delta_since(const struct vv_pncounter *c, const struct vv_crdt_sv *sv,
                             uint8_t **out, size_t *out_len);
json_t *vv_pncounter_to_json(const struct vv_pncounter *c);

/* ---- LWW-Register ------------------------------------------------------------------------- */

struct vv_lwwreg;

struct vv_lwwreg *vv_lwwreg_new(void);
void vv_lwwreg_free(struct vv_lwwreg *r);
/* Sets the value (any JSON value, stored canonically) at a new timestamp from clock, greater
 * than the one it overwrites. VV_ECRDT_RANGE: the current value's timestamp is more than
 * VV_HLC_MAX_DRIFT_MS ahead of phys_ms (see vv_hlc_receive); nothing changes. */
int vv_lwwreg_set(struct vv_lwwreg *r, struct vv_hlc *clock, uint64_t phys_ms, const json_t *value,
                  uint8_t **delta, size_t *delta_len);
/* False until the first set; ts (may be NULL) receives the winning write's timestamp. */
bool vv_lwwreg_timestamp(const struct vv_lwwreg *r, struct vv_crdt_ts *ts);
int vv_lwwreg_apply(struct vv_lwwreg *r, const uint8_t *buf, size_t len);
int vv_lwwreg_merge(struct vv_lwwreg *dst, const struct vv_lwwreg *src);
int vv_lwwreg_encode(const struct vv_lwwreg *r, uint8_t **out, size_t *out_len);
int vv_lwwreg_decode(const uint8_t *buf, size_t len, struct vv_lwwreg **out);
/* The value, or JSON null before the first set. */
json_t *vv_lwwreg_to_json(const struct vv_lwwreg *r);

/* ---- OR-Set (add-wins, optimized: dots and a causal context) ------------------------------ */

struct vv_orset;

struct vv_orset *vv_orset_new(void);
void vv_orset_free(struct vv_orset *s);
/* Adds value with a new dot of replica (the local replica: it must be the only one issuing
 * that replica's dots). An add concurrent with a remove of the same value wins. */
int vv_orset_add(struct vv_orset *s, uint64_t replica, const json_t *value, uint8_t **delta,
                 size_t *delta_len);
/* Removes the adds of value this replica has seen; removing an absent value is a no-op whose
 * delta changes nothing. */
int vv_orset_remove(struct vv_orset *s, const json_t *value, uint8_t **delta, size_t *delta_len);
bool vv_orset_contains(const struct vv_orset *s, const json_t *value);
size_t vv_orset_size(const struct vv_orset *s);
/* VV_ECRDT_CAUSALITY: buf came from vv_orset_delta_since for a vector s does not cover. */
int vv_orset_apply(struct vv_orset *s, const uint8_t *buf, size_t len);
/* After vv_orset_apply answered VV_ECRDT_CAUSALITY: a dot (replica, counter) the update
 * assumed and s lacks; the update cannot apply before s has it. */
void vv_orset_last_missing(const struct vv_orset *s, uint64_t *replica, uint64_t *counter);
/* Whether s's causal context holds the dot. */
bool vv_orset_has_dot(const struct vv_orset *s, uint64_t replica, uint64_t counter);
int vv_orset_merge(struct vv_orset *dst, const struct vv_orset *src);
int vv_orset_encode(const struct vv_orset *s, uint8_t **out, size_t *out_len);
int vv_orset_decode(const uint8_t *buf, size_t len, struct vv_orset **out);
/* The version vector of the causal context (dots beyond it, in the dot cloud, are left out). */
int vv_orset_state_vector(const struct vv_orset *s, struct vv_crdt_sv *out);
/* An update that brings a replica whose version vector is sv up to this state: the elements
 * whose dots sv lacks, with values, and the dots of those it has, without. */
int vv_orset_delta_since(const struct vv_orset *s, const struct vv_crdt_sv *sv, uint8_t **out,
                         size_t *out_len);
/* The elements as a JSON array sorted by their canonical JSON text (bytewise). */
json_t *vv_orset_to_json(const struct vv_orset *s);
/* Bytes of causal-context bookkeeping: version vector and dot cloud entries (for tests and
 * metrics; it stays small once updates stop arriving out of order). */
size_t vv_orset_context_size(const struct vv_orset *s);
/* For tests: the longest probe sequence in the set's index of live dots, in slots. */
size_t vv__orset_longest_probe(const struct vv_orset *s);

/* ---- LWW-Map ------------------------------------------------------------------------------ */

/*
 * String keys to LWW entries: a JSON value, a nested map, or a tombstone (a delete). Every
 * entry carries the timestamp of the write that made it; the greater timestamp wins. A nested
 * map keeps the timestamp of its creation, and writes inside it merge key by key, so two
 * replicas editing different keys of the same nested map both keep their edits; overwriting
 * or deleting the nested map itself replaces it whole.
 *
 * path: depth keys (NUL-terminated UTF-8), the last one naming the entry, the others naming
 * nested maps (created at a new timestamp when missing or not a map). 1 ≤ depth <
 * VV_CRDT_MAX_DEPTH.
 *
 * Writes take a timestamp from clock greater than the entry they replace; VV_ECRDT_RANGE when
 * that entry is more than VV_HLC_MAX_DRIFT_MS ahead of phys_ms (nothing changes).
 */
struct vv_lwwmap;

struct vv_lwwmap *vv_lwwmap_new(void);
void vv_lwwmap_free(struct vv_lwwmap *m);
int vv_lwwmap_set(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                  const char *const *path, size_t depth, const json_t *value, uint8_t **delta,
                  size_t *delta_len);
/* Puts an empty nested map at path (replacing what is there). */
int vv_lwwmap_set_map(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                      const char *const *path, size_t depth, uint8_t **delta, size_t *delta_len);
/* Writes a tombstone at path. VV_ENOTFOUND when a map on the path is missing. */
int vv_lwwmap_delete(struct vv_lwwmap *m, struct vv_hlc *clock, uint64_t phys_ms,
                     const char *const *path, size_t depth, uint8_t **delta, size_t *delta_len);
/* The live value at path (a nested map as a JSON object) or VV_ENOTFOUND. */
int vv_lwwmap_get(const struct vv_lwwmap *m, const char *const *path, size_t depth, json_t **out);
/*
 * Drops tombstones whose wall time is older than horizon_ms, at every depth, and remembers
 * the horizon: tombstones older than it that arrive later are not stored (the entry they
 * beat is still removed). Returns the number dropped. See docs/crdt.md for when it is safe.
 */
size_t vv_lwwmap_compact(struct vv_lwwmap *m, uint64_t horizon_ms);
/* Number of tombstones kept, at every depth. */
size_t vv_lwwmap_tombstones(const struct vv_lwwmap *m);
int vv_lwwmap_apply(struct vv_lwwmap *m, const uint8_t *buf, size_t len);
int vv_lwwmap_merge(struct vv_lwwmap *dst, const struct vv_lwwmap *src);
int vv_lwwmap_encode(const struct vv_lwwmap *m, uint8_t **out, size_t *out_len);
int vv_lwwmap_decode(const uint8_t *buf, size_t len, struct vv_lwwmap **out);
/* A JSON object of the live entries (nested maps as objects). */
json_t *vv_lwwmap_to_json(const struct vv_lwwmap *m);

#endif
