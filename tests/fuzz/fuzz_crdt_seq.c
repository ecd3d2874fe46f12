/*
 * Fuzz target: sequence CRDT updates from peers (anyone the node syncs with can send them).
 * The input is applied to an empty document and to one holding text from two replicas; a
 * failing update must leave the document as it was, and a document that accepted one must
 * still encode, load back to the same state, and accept local edits. tests/fuzz/crdt_seq.dict
 * holds the pieces of the quadratic pile (issue 9, item 1); libFuzzer's -timeout catches an
 * input that integrates slowly.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/crdt_seq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void state(struct vv_crdt_seq *d, uint8_t **out, size_t *len)
{
    vv_crdt_seq_encode_state(d, out, len);
}

static void check(struct vv_crdt_seq *d, const uint8_t *data, size_t size)
{
    uint8_t *before, *after;
    size_t bl, al;
    state(d, &before, &bl);
    int rc = vv_crdt_seq_apply(d, data, size);
    state(d, &after, &al);
    if (rc != 0) {
        if (rc != VV_ECRDT_DECODE && rc != VV_ECRDT_CAUSALITY && rc != VV_ELIMIT &&
            rc != VV_ECRDT_COST && rc != VV_ECRDT_HISTORY)
            abort();
        if (bl != al || memcmp(before, after, bl) != 0)
            abort(); /* a refused update changed the document */
    } else {
        /* The new state loads back to itself. */
        struct vv_crdt_seq *l = vv_crdt_seq_new(77);
        if (vv_crdt_seq_apply(l, after, al) != 0)
            abort();
        uint8_t *again;
        size_t gl;
        state(l, &again, &gl);
        if (gl != al || memcmp(again, after, al) != 0)
            abort();
        vv_free(again);
        vv_crdt_seq_free(l);
        /* Compaction changes nothing visible: the encoded state stays byte for byte. */
        vv_crdt_seq_compact(d, NULL);
        state(d, &again, &gl);
        if (gl != al || memcmp(again, after, al) != 0)
            abort();
        vv_free(again);
        /* Local edits still work, and the text length agrees with the text. */
        size_t n = vv_crdt_seq_len(d);
        if (vv_crdt_seq_insert(d, n / 2, "\xC3\xA9t\xC3\xA9", 5, NULL, NULL) != 0)
            abort();
        if (n > 0 && vv_crdt_seq_delete(d, 0, 1, NULL, NULL) != 0)
            abort();
        size_t tl;
        char *t = vv_crdt_seq_text(d, &tl);
        if (tl != vv_crdt_seq_utf8_len(d) || strlen(t) > tl)
            abort();
        vv_free(t);
    }
    vv_free(before);
    vv_free(after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vv_crdt_seq *empty = vv_crdt_seq_new(5);
    check(empty, data, size);
    vv_crdt_seq_free(empty);

    /* A document with items of replicas 1 and 5 (the ids the seeds use) and a tombstone. */
    struct vv_crdt_seq *a = vv_crdt_seq_new(1), *b = vv_crdt_seq_new(5);
    vv_crdt_seq_insert(a, 0, "hello", 5, NULL, NULL);
    vv_crdt_seq_merge(b, a);
    vv_crdt_seq_insert(b, 2, "XY", 2, NULL, NULL);
    vv_crdt_seq_delete(b, 0, 1, NULL, NULL);
    check(b, data, size);

    /* The input as a peer's state vector: a delta or VV_ECRDT_DECODE, never a crash. */
    uint8_t *delta;
    size_t dl;
    int rc = vv_crdt_seq_encode_delta(b, data, size, &delta, &dl);
    if (rc != 0 && rc != VV_ECRDT_DECODE)
        abort();
    if (rc == 0) {
        struct vv_crdt_seq *c = vv_crdt_seq_new(5);
        rc = vv_crdt_seq_apply(c, delta, dl);
        /* Our own encoding is never malformed. A history the fuzzer made may cost more, or
         * show its forgery, when integrated in the delta's order rather than its own. */
        if (rc != 0 && rc != VV_ECRDT_CAUSALITY && rc != VV_ECRDT_COST && rc != VV_ECRDT_HISTORY)
            abort();
        vv_crdt_seq_free(c);
        vv_free(delta);
    }
    vv_crdt_seq_free(a);
    vv_crdt_seq_free(b);
    return 0;
}
