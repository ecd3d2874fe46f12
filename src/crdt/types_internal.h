/*
 * Shared by the files of the non-sequence CRDT types: the byte writer and the strict reader
 * of the encoding (codec.c), and canonical JSON values. Not for other modules.
 */
#ifndef VIVIM_CRDT_TYPES_INTERNAL_H
#define VIVIM_CRDT_TYPES_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "vivim/common.h"
#include "vivim/crdt.h"

/* A growing output buffer (vv_xrealloc; never fails). */
struct vv__crdt_w {
    uint8_t *p;
    size_t len, cap;
};

void vv__crdt_w_init(struct vv__crdt_w *w, uint8_t type);
void vv__crdt_w_bytes(struct vv__crdt_w *w, const void *data, size_t n);
void vv__crdt_w_u8(struct vv__crdt_w *w, uint8_t v);
void vv__crdt_w_varint(struct vv__crdt_w *w, uint64_t v);
void vv__crdt_w_u64be(struct vv__crdt_w *w, uint64_t v);
/* Length (varint) then bytes. */
void vv__crdt_w_blob(struct vv__crdt_w *w, const void *data, size_t n);
/* Hands the buffer to the caller. */
void vv__crdt_w_finish(struct vv__crdt_w *w, uint8_t **out, size_t *out_len);
void vv__crdt_w_discard(struct vv__crdt_w *w);

/*
 * A bounded reader. Every read checks the bytes left; the first failure sets err and makes
 * every later read fail too, so decoders check once at the end of a block.
 */
struct vv__crdt_r {
    const uint8_t *p, *end;
    bool err;
};

/* Checks the version and type bytes. Returns 0 or VV_ECRDT_DECODE. */
int vv__crdt_r_init(struct vv__crdt_r *r, const uint8_t *buf, size_t len, uint8_t type);
uint8_t vv__crdt_r_u8(struct vv__crdt_r *r);
/* Unsigned LEB128, minimal form only, at most 64 bits. */
uint64_t vv__crdt_r_varint(struct vv__crdt_r *r);
uint64_t vv__crdt_r_u64be(struct vv__crdt_r *r);
/* A replica id: 8 bytes big-endian, not 0. */
uint64_t vv__crdt_r_replica(struct vv__crdt_r *r);
/* A count of items of at least min_item_bytes each: fails when above max or when the input
 * has too few bytes left to hold them (so no allocation exceeds the input's size). */
size_t vv__crdt_r_count(struct vv__crdt_r *r, size_t max, size_t min_item_bytes);
/* A length-prefixed byte string of at most max bytes, returned in place. */
const uint8_t *vv__crdt_r_blob(struct vv__crdt_r *r, size_t max, size_t *len);
/* 0 when no error and every byte was consumed, else VV_ECRDT_DECODE. */
int vv__crdt_r_done(const struct vv__crdt_r *r);

/*
 * Canonical JSON values: json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY),
 * as bytes without a terminator (vv_xmalloc'd).
 */
int vv__crdt_value_dump(const json_t *v, char **out, size_t *out_len);
/* True when text is a JSON value whose canonical form is exactly text. */
bool vv__crdt_value_is_canonical(const uint8_t *text, size_t len);
/* Parses a stored value back (NULL only when the text was never canonical). */
json_t *vv__crdt_value_load(const char *text, size_t len);
/* Bytewise order of values: memcmp, then the shorter first. */
int vv__crdt_bytes_cmp(const void *a, size_t alen, const void *b, size_t blen);

/* The state vector encoding body, shared with the OR-Set's version vector. */
void vv__crdt_sv_write(struct vv__crdt_w *w, const struct vv_crdt_sv_entry *e, size_t n);
/* Reads into newly allocated entries; on error nothing is allocated. */
int vv__crdt_sv_read(struct vv__crdt_r *r, struct vv_crdt_sv_entry **e, size_t *n);

/*
 * A timestamp for a local write that must beat an entry written at beat_hlc (0: none): the
 * clock first takes beat_hlc in as vv_hlc_receive does, so a write always wins over what it
 * overwrites, and an entry more than VV_HLC_MAX_DRIFT_MS ahead of phys_ms is not followed into
 * the future (VV_ECRDT_RANGE, clock unchanged).
 */
int vv__crdt_clock_beat(struct vv_hlc *c, uint64_t phys_ms, uint64_t beat_hlc,
                        struct vv_crdt_ts *out);

#endif
