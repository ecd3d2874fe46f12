/*
 * The sequence update a hostile peer sends to make integration quadratic (issue 9, item 1):
 * n one-item records spread round-robin over `agents` replicas (ids id_base, id_base + 1, ...),
 * every record without origins, so that each lands at the document's start among all the
 * others as a concurrent sibling. About 4 bytes a record for one agent. Shared by the unit
 * tests, the fuzz corpus and vivim-testpeer; the format is docs/crdt.md's "Sequence".
 */
#ifndef VIVIM_TESTS_SEQ_PILE_H
#define VIVIM_TESTS_SEQ_PILE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct vv_test_buf {
    uint8_t *p;
    size_t n, cap;
};

static inline void vv_test_put(struct vv_test_buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static inline void vv_test_put_varint(struct vv_test_buf *b, uint64_t v)
{
    while (v >= 0x80) {
        uint8_t c = (uint8_t)(v | 0x80);
        vv_test_put(b, &c, 1);
        v >>= 7;
    }
    uint8_t c = (uint8_t)v;
    vv_test_put(b, &c, 1);
}

/* Returns the update (free() it) and its length in *len. */
static inline uint8_t *vv_test_seq_pile(size_t n, uint32_t agents, uint64_t id_base, size_t *len)
{
    struct vv_test_buf b = {0};
    uint8_t head[2] = {1, 0}; /* version 1, no flags */
    vv_test_put(&b, head, 2);
    vv_test_put_varint(&b, agents);
    for (uint32_t a = 0; a < agents; a++) {
        uint8_t be[8];
        for (int i = 0; i < 8; i++)
            be[i] = (uint8_t)((id_base + a) >> (56 - 8 * i));
        vv_test_put(&b, be, 8);
    }
    vv_test_put_varint(&b, n);
    for (size_t i = 0; i < n; i++) {
        /* Header: length 1 (from bit 7), both origins absent, "same agent" when it is. */
        int same = i > 0 && agents == 1;
        vv_test_put_varint(&b, 1u << 7 | (same ? 0x40u : 0u));
        if (!same)
            vv_test_put_varint(&b, i % agents);
        vv_test_put_varint(&b, 0); /* seq: right after the agent's previous record */
    }
    vv_test_put_varint(&b, 0); /* no deletions */
    vv_test_put_varint(&b, n); /* content: n bytes, raw */
    uint8_t raw = 0;
    vv_test_put(&b, &raw, 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)('a' + i % 26);
        vv_test_put(&b, &c, 1);
    }
    *len = b.n;
    return b.p;
}

#endif
