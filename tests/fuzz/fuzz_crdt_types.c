/*
 * Fuzz target: the decoders of the non-sequence CRDT types (updates and states arrive from
 * peers). For every type: decoding never crashes or leaks; what decodes re-encodes to the
 * same bytes (the encoding is canonical, so the decoder accepts nothing else); applying to a
 * populated state either fails and changes nothing, or succeeds and a second apply of the
 * same bytes changes nothing more (idempotence).
 */
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/crdt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_or_die(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    if (al != bl || memcmp(a, b, al) != 0)
        abort();
}

/* One type's checks, through its functions. */
#define CHECK_TYPE(T, populate)                                                                    \
    do {                                                                                           \
        struct vv_##T *x = NULL;                                                                   \
        int rc = vv_##T##_decode(data, size, &x);                                                  \
        if (rc == 0) {                                                                             \
            uint8_t *e;                                                                            \
            size_t el;                                                                             \
            vv_##T##_encode(x, &e, &el);                                                           \
            same_or_die(e, el, data, size);                                                        \
            vv_free(e);                                                                            \
            json_decref(vv_##T##_to_json(x));                                                      \
            vv_##T##_free(x);                                                                      \
        } else if (rc != VV_ECRDT_DECODE || x) {                                                   \
            abort();                                                                               \
        }                                                                                          \
        struct vv_##T *s = vv_##T##_new();                                                         \
        populate;                                                                                  \
        uint8_t *before, *after, *again;                                                           \
        size_t bl, al, gl;                                                                         \
        vv_##T##_encode(s, &before, &bl);                                                          \
        rc = vv_##T##_apply(s, data, size);                                                        \
        vv_##T##_encode(s, &after, &al);                                                           \
        if (rc != 0) {                                                                             \
            same_or_die(before, bl, after, al);                                                    \
        } else {                                                                                   \
            if (vv_##T##_apply(s, data, size) != 0)                                                \
                abort();                                                                           \
            vv_##T##_encode(s, &again, &gl);                                                       \
            same_or_die(after, al, again, gl);                                                     \
            vv_free(again);                                                                        \
        }                                                                                          \
        vv_free(before);                                                                           \
        vv_free(after);                                                                            \
        vv_##T##_free(s);                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v1 = json_integer(1), *v2 = json_string("x");
    struct vv_hlc clock;
    vv_hlc_init(&clock, 2);
    const char *path[] = {"k", "n"};

    CHECK_TYPE(gcounter, vv_gcounter_increment(s, 1, 3, NULL, NULL));
    CHECK_TYPE(pncounter, vv_pncounter_add(s, 1, -3, NULL, NULL));
    CHECK_TYPE(lwwreg, vv_lwwreg_set(s, &clock, 1000, v1, NULL, NULL));
    CHECK_TYPE(orset, {
        vv_orset_add(s, 1, v1, NULL, NULL);
        vv_orset_add(s, 2, v2, NULL, NULL);
        vv_orset_remove(s, v1, NULL, NULL);
    });
    CHECK_TYPE(lwwmap, {
        vv_lwwmap_set(s, &clock, 1000, path, 2, v1, NULL, NULL);
        vv_lwwmap_delete(s, &clock, 1001, path, 1, NULL, NULL);
    });

    /* A decoded OR-Set answers its own state vector with an update that changes nothing,
     * and keeps working under local operations (its dot index is built from the bytes). */
    struct vv_orset *os = NULL;
    if (vv_orset_decode(data, size, &os) == 0) {
        struct vv_crdt_sv osv = {0};
        uint8_t *d, *e1, *e2;
        size_t dl, l1, l2;
        vv_orset_state_vector(os, &osv);
        vv_orset_delta_since(os, &osv, &d, &dl);
        vv_orset_encode(os, &e1, &l1);
        if (vv_orset_apply(os, d, dl) != 0)
            abort();
        vv_orset_encode(os, &e2, &l2);
        same_or_die(e1, l1, e2, l2);
        json_t *all = vv_orset_to_json(os);
        size_t i;
        json_t *el;
        json_array_foreach(all, i, el)
        {
            if (i % 2 && vv_orset_remove(os, el, NULL, NULL) != 0)
                abort();
        }
        /* May be refused (a counter at the end of its range, the element limit): fine. */
        (void)vv_orset_add(os, 77, v2, NULL, NULL);
        json_decref(all);
        vv_free(d);
        vv_free(e1);
        vv_free(e2);
        vv_crdt_sv_clear(&osv);
        vv_orset_free(os);
    }
    /* A decoded map keeps working under local writes. */
    struct vv_lwwmap *lm = NULL;
    if (vv_lwwmap_decode(data, size, &lm) == 0) {
        struct vv_hlc c2;
        vv_hlc_init(&c2, 5);
        vv_lwwmap_set(lm, &c2, 2000000000000ULL, path, 2, v2, NULL, NULL);
        vv_lwwmap_delete(lm, &c2, 2000000000001ULL, path, 1, NULL, NULL);
        vv_lwwmap_compact(lm, 2000000000002ULL);
        vv_lwwmap_free(lm);
    }

    struct vv_crdt_sv sv = {0};
    if (vv_crdt_sv_decode(data, size, &sv) == 0) {
        uint8_t *e;
        size_t el;
        if (vv_crdt_sv_encode(&sv, &e, &el) != 0)
            abort();
        same_or_die(e, el, data, size);
        vv_free(e);
        vv_crdt_sv_clear(&sv);
    }
    json_decref(v1);
    json_decref(v2);
    return 0;
}
