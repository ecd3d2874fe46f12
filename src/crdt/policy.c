/*
 * Access policies of CRDT documents: encoding, decoding, signing (see crdt_policy.h, and
 * docs/crdt.md "Access policy" for the byte layout). Everything read here may come from a
 * peer: every length is checked against the bytes that remain before it is used.
 */
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"
#include "vivim/crdt_policy.h"
#include "vivim/error.h"

void vv_crdt_policy_free(struct vv_crdt_policy *p)
{
    if (p == NULL)
        return;
    vv_free(p->readers);
    vv_free(p->writers);
    vv_free(p->bytes);
    vv_free(p);
}

/* A reader of the encoding that never reads past its end. */
struct cursor {
    const uint8_t *p;
    size_t left;
};

static const uint8_t *take(struct cursor *c, size_t n)
{
    if (n > c->left)
        return NULL;
    const uint8_t *r = c->p;
    c->p += n;
    c->left -= n;
    return r;
}

/* A list: u16 count, then count node IDs in strictly ascending order. */
static int take_list(struct cursor *c, size_t *budget, uint8_t (**out)[VV_NODE_ID_BYTES],
                     size_t *n_out)
{
    const uint8_t *b = take(c, 2);
    if (b == NULL)
        return VV_ECRDT_POLICY;
    size_t n = (size_t)b[0] << 8 | b[1];
    if (n > *budget)
        return VV_ECRDT_POLICY;
    const uint8_t *ids = take(c, n * VV_NODE_ID_BYTES);
    if (ids == NULL)
        return VV_ECRDT_POLICY;
    for (size_t i = 1; i < n; i++)
        if (memcmp(ids + (i - 1) * VV_NODE_ID_BYTES, ids + i * VV_NODE_ID_BYTES,
                   VV_NODE_ID_BYTES) >= 0)
            return VV_ECRDT_POLICY;
    *budget -= n;
    *n_out = n;
    *out = NULL;
    if (n > 0) {
        *out = vv_xmalloc(n * VV_NODE_ID_BYTES);
        memcpy(*out, ids, n * VV_NODE_ID_BYTES);
    }
    return 0;
}

int vv_crdt_policy_decode(const uint8_t *buf, size_t len, struct vv_crdt_policy **out)
{
    *out = NULL;
    if (buf == NULL || len > VV_CRDT_POLICY_MAX_BYTES)
        return VV_ECRDT_POLICY;
    struct cursor c = {buf, len};
    const uint8_t *magic = take(&c, VV_CRDT_POLICY_MAGIC_BYTES);
    if (magic == NULL || memcmp(magic, VV_CRDT_POLICY_MAGIC, VV_CRDT_POLICY_MAGIC_BYTES) != 0)
        return VV_ECRDT_POLICY;
    const uint8_t *b = take(&c, 1);
    size_t id_len = b ? *b : 0;
    const uint8_t *id = take(&c, id_len);
    if (id == NULL || id_len == 0 || id_len > VV_CRDT_DOC_ID_MAX_BYTES)
        return VV_ECRDT_POLICY;
    struct vv_crdt_policy *p = vv_xcalloc(1, sizeof(*p));
    memcpy(p->doc_id, id, id_len);
    p->doc_id[id_len] = '\0';
    int rc = VV_ECRDT_POLICY;
    const uint8_t *kind = take(&c, 2); /* the type, then the flags */
    const uint8_t *pk = kind ? take(&c, VV_ED25519_PK_BYTES) : NULL;
    const uint8_t *ver = pk ? take(&c, 8) : NULL;
    /* An id with a NUL inside is refused here: the copy would read shorter. */
    if (!vv_crdt_doc_id_valid(p->doc_id) || strlen(p->doc_id) != id_len || ver == NULL ||
        kind[0] >= VV_CRDT_KIND_COUNT || (kind[1] & ~VV_CRDT_POLICY_ADOPTED) != 0)
        goto fail;
    p->kind = (enum vv_crdt_kind)kind[0];
    p->flags = kind[1];
    memcpy(p->creator_pk, pk, VV_ED25519_PK_BYTES);
    vv_identity_node_id(p->creator_pk, p->creator);
    for (int i = 0; i < 8; i++)
        p->version = p->version << 8 | ver[i];
    if (p->version == 0)
        goto fail;
    size_t budget = VV_CRDT_POLICY_MAX_NODES;
    if (take_list(&c, &budget, &p->readers, &p->n_readers) != 0 ||
        take_list(&c, &budget, &p->writers, &p->n_writers) != 0)
        goto fail;
    if (c.left != VV_CRDT_POLICY_SIG_BYTES)
        goto fail; /* no signature, or bytes after it */
    p->bytes = vv_xmalloc(len);
    memcpy(p->bytes, buf, len);
    p->len = len;
    *out = p;
    return 0;
fail:
    vv_crdt_policy_free(p);
    return rc;
}

bool vv_crdt_policy_verify(struct vv_env *env, const struct vv_crdt_policy *p)
{
    size_t signed_len = p->len - VV_CRDT_POLICY_SIG_BYTES;
    return vv_env_verify(env, p->creator_pk, p->bytes, signed_len, p->bytes + signed_len);
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, VV_NODE_ID_BYTES);
}

static bool in_sorted(const uint8_t *list, size_t n, const uint8_t *id)
{
    return n > 0 && bsearch(id, list, n, VV_NODE_ID_BYTES, cmp_id) != NULL;
}

/* Sorts list in place and drops repeats, the creator, and (when not NULL) the nodes of
 * the sorted list `minus`; returns the count left. */
static size_t normalize(uint8_t *list, size_t n, const uint8_t *creator, const uint8_t *minus,
                        size_t n_minus)
{
    if (n > 1)
        qsort(list, n, VV_NODE_ID_BYTES, cmp_id);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *id = list + i * VV_NODE_ID_BYTES;
        if (memcmp(id, creator, VV_NODE_ID_BYTES) == 0 || in_sorted(minus, n_minus, id) ||
            (k > 0 && memcmp(list + (k - 1) * VV_NODE_ID_BYTES, id, VV_NODE_ID_BYTES) == 0))
            continue;
        memmove(list + k * VV_NODE_ID_BYTES, id, VV_NODE_ID_BYTES);
        k++;
    }
    return k;
}

static void put_list(uint8_t **w, const uint8_t *list, size_t n)
{
    (*w)[0] = (uint8_t)(n >> 8);
    (*w)[1] = (uint8_t)n;
    *w += 2;
    if (n > 0)
        memcpy(*w, list, n * VV_NODE_ID_BYTES);
    *w += n * VV_NODE_ID_BYTES;
}

int vv_crdt_policy_make(struct vv_env *env, const char *doc_id, enum vv_crdt_kind kind,
                        uint8_t flags, uint64_t version, const uint8_t *readers, size_t n_readers,
                        const uint8_t *writers, size_t n_writers, struct vv_crdt_policy **out)
{
    *out = NULL;
    if (!vv_crdt_doc_id_valid(doc_id) || (unsigned)kind >= VV_CRDT_KIND_COUNT || version == 0 ||
        (flags & ~VV_CRDT_POLICY_ADOPTED) != 0)
        return VV_EINVAL;
    if (n_readers > SIZE_MAX / 2 / VV_NODE_ID_BYTES || n_writers > SIZE_MAX / 2 / VV_NODE_ID_BYTES)
        return VV_ELIMIT;
    const uint8_t *creator = env->identity->node_id;
    uint8_t *w_list = vv_xmalloc(n_writers * VV_NODE_ID_BYTES + 1);
    uint8_t *r_list = vv_xmalloc(n_readers * VV_NODE_ID_BYTES + 1);
    if (n_writers > 0)
        memcpy(w_list, writers, n_writers * VV_NODE_ID_BYTES);
    if (n_readers > 0)
        memcpy(r_list, readers, n_readers * VV_NODE_ID_BYTES);
    size_t nw = normalize(w_list, n_writers, creator, NULL, 0);
    size_t nr = normalize(r_list, n_readers, creator, w_list, nw); /* writers read anyway */
    int rc = 0;
    if (nw + nr > VV_CRDT_POLICY_MAX_NODES) {
        rc = VV_ELIMIT;
    } else {
        size_t id_len = strlen(doc_id);
        size_t len = VV_CRDT_POLICY_MAGIC_BYTES + 1 + id_len + 2 + VV_ED25519_PK_BYTES + 8 + 2 +
                     nr * VV_NODE_ID_BYTES + 2 + nw * VV_NODE_ID_BYTES + VV_CRDT_POLICY_SIG_BYTES;
        uint8_t *buf = vv_xmalloc(len), *w = buf;
        memcpy(w, VV_CRDT_POLICY_MAGIC, VV_CRDT_POLICY_MAGIC_BYTES);
        w += VV_CRDT_POLICY_MAGIC_BYTES;
        *w++ = (uint8_t)id_len;
        memcpy(w, doc_id, id_len);
        w += id_len;
        *w++ = (uint8_t)kind;
        *w++ = flags;
        memcpy(w, env->identity->public_key, VV_ED25519_PK_BYTES);
        w += VV_ED25519_PK_BYTES;
        for (int i = 7; i >= 0; i--)
            *w++ = (uint8_t)(version >> (8 * i));
        put_list(&w, r_list, nr);
        put_list(&w, w_list, nw);
        vv_env_sign(env, buf, (size_t)(w - buf), w);
        rc = vv_crdt_policy_decode(buf, len, out);
        vv_free(buf);
    }
    vv_free(w_list);
    vv_free(r_list);
    return rc;
}

static bool listed(uint8_t (*list)[VV_NODE_ID_BYTES], size_t n, const uint8_t *node)
{
    return n > 0 && bsearch(node, list, n, VV_NODE_ID_BYTES, cmp_id) != NULL;
}

enum vv_crdt_access vv_crdt_policy_access(const struct vv_crdt_policy *p,
                                          const uint8_t node[VV_NODE_ID_BYTES])
{
    if (p == NULL)
        return VV_CRDT_ACCESS_NONE;
    if (memcmp(node, p->creator, VV_NODE_ID_BYTES) == 0 || listed(p->writers, p->n_writers, node))
        return VV_CRDT_ACCESS_WRITE;
    return listed(p->readers, p->n_readers, node) ? VV_CRDT_ACCESS_READ : VV_CRDT_ACCESS_NONE;
}
