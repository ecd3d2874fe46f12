/*
 * CRDT documents: one data type behind a common face, JSON operations, and the buffer of
 * updates that arrived before their dependencies (only the sequence has causal dependencies
 * between updates; the other types' updates are join-semilattice deltas that apply in any
 * order).
 */
#include <string.h>

#include "vivim/common.h"
#include "vivim/crdt_doc.h"
#include "vivim/crdt_seq.h"

/*
 * The buffer of updates waiting for their dependencies. Each waits for one item or dot
 * (replica, need) that the type named when it refused the update: it cannot apply before the
 * document holds that one, so it is not retried before. A document's waiting updates are
 * grouped by the replica they wait for, each group sorted by need, so that after the state
 * moved on only each group's first update is checked (a cheap lookup, no decoding); an update
 * is decoded again only once what it waited for arrived. A chain of n updates delivered in
 * any order is then drained with n retries, not the n^2 / 2 of retrying the whole buffer
 * after every success.
 *
 * Updates may also belong to a pool (struct vv_crdt_pending_pool) that bounds the buffers of
 * every document together, in count, bytes and age, and drops the oldest first.
 */
struct wait_group;

struct pending {
    struct pending *prev, *next;   /* in its group, by need ascending */
    struct pending *gprev, *gnext; /* in the pool, oldest first (none without a pool) */
    struct wait_group *grp;
    struct vv_crdt_doc *doc;
    uint64_t since_ms; /* pool time when it was buffered (or joined the pool) */
    uint64_t need;     /* the item or dot of grp->replica it waits for */
    size_t len;
    uint8_t data[];
};

/* The updates of one document waiting for items of one replica. */
struct wait_group {
    struct wait_group *next;
    uint64_t replica;
    struct pending *head, *tail;
};

struct vv_crdt_pending_pool {
    struct pending *head, *tail; /* every pooled update, oldest first */
    size_t max_updates, max_bytes;
    uint64_t max_age_ms, now_ms;
    struct vv_crdt_pending_stats stats;
};

struct vv_crdt_doc {
    char id[VV_CRDT_DOC_ID_MAX_BYTES + 1];
    enum vv_crdt_kind kind;
    uint64_t replica;
    union {
        struct vv_gcounter *g;
        struct vv_pncounter *pn;
        struct vv_lwwreg *reg;
        struct vv_orset *set;
        struct vv_crdt_seq *text;
        struct vv_lwwmap *map;
    } u;
    struct wait_group *groups;
    struct vv_crdt_pending_pool *pool; /* borrowed; NULL: this document's limits only */
    bool drain_due;                    /* the state moved on since the groups were checked */
    uint32_t log_count;
    size_t n_pending, pending_bytes;
    uint64_t last_work, last_drain_work; /* of the last apply or drain call */
    size_t fingerprint_bytes;            /* encoded by the last fingerprint */
};

static const char *const kind_names[VV_CRDT_KIND_COUNT] = {"gcounter", "counter", "register",
                                                           "set",      "text",    "map"};

const char *vv_crdt_kind_name(enum vv_crdt_kind k)
{
    return (unsigned)k < VV_CRDT_KIND_COUNT ? kind_names[k] : "unknown";
}

int vv_crdt_kind_parse(const char *s)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "rga") == 0)
        return VV_CRDT_KIND_TEXT;
    for (int i = 0; i < VV_CRDT_KIND_COUNT; i++)
        if (strcmp(s, kind_names[i]) == 0)
            return i;
    return -1;
}

bool vv_crdt_doc_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > VV_CRDT_DOC_ID_MAX_BYTES)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e)
            return false;
    return true;
}

struct vv_crdt_doc *vv_crdt_doc_new(const char *id, enum vv_crdt_kind kind, uint64_t replica)
{
    if (!vv_crdt_doc_id_valid(id) || (unsigned)kind >= VV_CRDT_KIND_COUNT)
        return NULL;
    struct vv_crdt_doc *d = vv_xcalloc(1, sizeof(*d));
    vv_strlcpy(d->id, id, sizeof(d->id));
    d->kind = kind;
    d->replica = replica;
    switch (kind) {
    case VV_CRDT_KIND_GCOUNTER:
        d->u.g = vv_gcounter_new();
        break;
    case VV_CRDT_KIND_COUNTER:
        d->u.pn = vv_pncounter_new();
        break;
    case VV_CRDT_KIND_REGISTER:
        d->u.reg = vv_lwwreg_new();
        break;
    case VV_CRDT_KIND_SET:
        d->u.set = vv_orset_new();
        break;
    case VV_CRDT_KIND_TEXT:
        d->u.text = vv_crdt_seq_new(replica);
        break;
    case VV_CRDT_KIND_MAP:
        d->u.map = vv_lwwmap_new();
        break;
    default:
        break;
    }
    return d;
}

static void pool_unlink(struct vv_crdt_pending_pool *pool, struct pending *p)
{
    *(p->gprev ? &p->gprev->gnext : &pool->head) = p->gnext;
    *(p->gnext ? &p->gnext->gprev : &pool->tail) = p->gprev;
    p->gprev = p->gnext = NULL;
    pool->stats.updates--;
    pool->stats.bytes -= p->len;
}

static void pool_append(struct vv_crdt_pending_pool *pool, struct pending *p)
{
    p->since_ms = pool->now_ms;
    p->gnext = NULL;
    p->gprev = pool->tail;
    *(pool->tail ? &pool->tail->gnext : &pool->head) = p;
    pool->tail = p;
    pool->stats.updates++;
    pool->stats.bytes += p->len;
}

static void group_unlink(struct pending *p)
{
    struct wait_group *g = p->grp;
    *(p->prev ? &p->prev->next : &g->head) = p->next;
    *(p->next ? &p->next->prev : &g->tail) = p->prev;
    p->prev = p->next = NULL;
    p->grp = NULL;
}

/* Files p under the group of the replica it waits for, by need. Updates mostly arrive in
 * order of what they wait for, or in reverse: both ends are tried first. */
static void group_insert(struct vv_crdt_doc *d, struct pending *p, uint64_t replica)
{
    struct wait_group *g = d->groups;
    while (g != NULL && g->replica != replica)
        g = g->next;
    if (g == NULL) {
        g = vv_xcalloc(1, sizeof(*g));
        g->replica = replica;
        g->next = d->groups;
        d->groups = g;
    }
    p->grp = g;
    struct pending *after = g->tail;
    if (after != NULL && after->need > p->need) {
        after = NULL;
        if (g->head->need <= p->need)
            for (after = g->head; after->next->need <= p->need; after = after->next)
                ;
    }
    p->prev = after;
    p->next = after ? after->next : g->head;
    *(p->next ? &p->next->prev : &g->tail) = p;
    *(after ? &after->next : &g->head) = p;
}

/* Frees the groups left empty. */
static void groups_sweep(struct vv_crdt_doc *d)
{
    for (struct wait_group **gg = &d->groups; *gg;) {
        struct wait_group *g = *gg;
        if (g->head == NULL) {
            *gg = g->next;
            vv_free(g);
        } else {
            gg = &g->next;
        }
    }
}

/* Removes p from everything and frees it (its group may be left empty). */
static void pending_free(struct vv_crdt_doc *d, struct pending *p)
{
    if (p->grp)
        group_unlink(p);
    if (d->pool)
        pool_unlink(d->pool, p);
    d->n_pending--;
    d->pending_bytes -= p->len;
    vv_free(p);
}

static void drop_pending(struct vv_crdt_doc *d)
{
    for (struct wait_group *g = d->groups; g; g = g->next)
        while (g->head)
            pending_free(d, g->head);
    groups_sweep(d);
}

void vv_crdt_doc_free(struct vv_crdt_doc *d)
{
    if (d == NULL)
        return;
    switch (d->kind) {
    case VV_CRDT_KIND_GCOUNTER:
        vv_gcounter_free(d->u.g);
        break;
    case VV_CRDT_KIND_COUNTER:
        vv_pncounter_free(d->u.pn);
        break;
    case VV_CRDT_KIND_REGISTER:
        vv_lwwreg_free(d->u.reg);
        break;
    case VV_CRDT_KIND_SET:
        vv_orset_free(d->u.set);
        break;
    case VV_CRDT_KIND_TEXT:
        vv_crdt_seq_free(d->u.text);
        break;
    case VV_CRDT_KIND_MAP:
        vv_lwwmap_free(d->u.map);
        break;
    default:
        break;
    }
    drop_pending(d); /* and out of the pool */
    vv_free(d);
}

const char *vv_crdt_doc_id(const struct vv_crdt_doc *d)
{
    return d->id;
}

enum vv_crdt_kind vv_crdt_doc_kind(const struct vv_crdt_doc *d)
{
    return d->kind;
}

void vv_crdt_doc_compact(struct vv_crdt_doc *d)
{
    if (d->kind == VV_CRDT_KIND_TEXT)
        vv_crdt_seq_compact(d->u.text, NULL);
}

uint32_t *vv_crdt_doc_log_count(struct vv_crdt_doc *d)
{
    return &d->log_count;
}

size_t vv_crdt_doc_pending(const struct vv_crdt_doc *d)
{
    return d->n_pending;
}

/* ---- local operations ----------------------------------------------------------------- */

/* The one key of a single-key object, or NULL. */
static const char *only_key(const json_t *op, json_t **val)
{
    if (!json_is_object(op) || json_object_size(op) != 1)
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)op, k, v)
    {
        *val = v;
        return k;
    }
    return NULL;
}

static bool get_size(const json_t *obj, const char *name, size_t *out)
{
    json_t *v = json_object_get(obj, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (size_t)json_integer_value(v);
    return true;
}

/* A map key path: a string, or an array of 1..VV_CRDT_MAX_DEPTH-1 strings. */
static int key_path(const json_t *k, const char **path, size_t *depth)
{
    if (json_is_string(k)) {
        path[0] = json_string_value(k);
        *depth = 1;
        return 0;
    }
    if (!json_is_array(k) || json_array_size(k) == 0 || json_array_size(k) >= VV_CRDT_MAX_DEPTH)
        return -1;
    for (size_t i = 0; i < json_array_size(k); i++) {
        json_t *e = json_array_get(k, i);
        if (!json_is_string(e))
            return -1;
        path[i] = json_string_value(e);
    }
    *depth = json_array_size(k);
    return 0;
}

#define OP_FAIL(...)                                                                               \
    do {                                                                                           \
        snprintf(err, err_len, __VA_ARGS__);                                                       \
        return VV_ECRDT_TYPE;                                                                      \
    } while (0)

int vv_crdt_doc_op(struct vv_crdt_doc *d, const json_t *op, struct vv_hlc *clock, uint64_t wall_ms,
                   uint8_t **update, size_t *update_len, char *err, size_t err_len)
{
    *update = NULL;
    *update_len = 0;
    err[0] = '\0';
    json_t *v = NULL;
    const char *verb = only_key(op, &v);
    if (verb == NULL)
        OP_FAIL("op: expected an object with one operation, such as {\"increment\":1}");
    int rc = VV_ECRDT_TYPE;
    switch (d->kind) {
    case VV_CRDT_KIND_GCOUNTER:
    case VV_CRDT_KIND_COUNTER: {
        bool dec = strcmp(verb, "decrement") == 0;
        if (!dec && strcmp(verb, "increment") != 0)
            OP_FAIL("op: a %s takes increment%s", kind_names[d->kind],
                    d->kind == VV_CRDT_KIND_COUNTER ? " or decrement" : "");
        if (!json_is_integer(v) || json_integer_value(v) == 0)
            OP_FAIL("op.%s: expected a non-zero integer", verb);
        json_int_t n = json_integer_value(v);
        if (n == INT64_MIN)
            OP_FAIL("op.%s: out of range", verb);
        if (dec)
            n = -n;
        if (d->kind == VV_CRDT_KIND_GCOUNTER) {
            if (n < 0)
                OP_FAIL("op: a gcounter only grows");
            rc = vv_gcounter_increment(d->u.g, d->replica, (uint64_t)n, update, update_len);
        } else {
            rc = vv_pncounter_add(d->u.pn, d->replica, (int64_t)n, update, update_len);
        }
        break;
    }
    case VV_CRDT_KIND_REGISTER:
        if (strcmp(verb, "set") != 0)
            OP_FAIL("op: a register takes set");
        rc = vv_lwwreg_set(d->u.reg, clock, wall_ms, v, update, update_len);
        break;
    case VV_CRDT_KIND_SET:
        if (strcmp(verb, "add") == 0)
            rc = vv_orset_add(d->u.set, d->replica, v, update, update_len);
        else if (strcmp(verb, "remove") == 0)
            rc = vv_orset_remove(d->u.set, v, update, update_len);
        else
            OP_FAIL("op: a set takes add or remove");
        break;
    case VV_CRDT_KIND_TEXT: {
        size_t pos, n;
        if (strcmp(verb, "insert") == 0) {
            json_t *t = json_object_get(v, "text");
            if (!json_is_object(v) || !get_size(v, "pos", &pos) || !json_is_string(t) ||
                json_object_size(v) != 2)
                OP_FAIL("op.insert: expected {\"pos\": integer >= 0, \"text\": string}");
            if (json_string_length(t) == 0)
                OP_FAIL("op.insert.text: empty");
            rc = vv_crdt_seq_insert(d->u.text, pos, json_string_value(t), json_string_length(t),
                                    update, update_len);
        } else if (strcmp(verb, "delete") == 0) {
            if (!json_is_object(v) || !get_size(v, "pos", &pos) || !get_size(v, "len", &n) ||
                json_object_size(v) != 2 || n == 0)
                OP_FAIL("op.delete: expected {\"pos\": integer >= 0, \"len\": integer >= 1}");
            rc = vv_crdt_seq_delete(d->u.text, pos, n, update, update_len);
        } else {
            OP_FAIL("op: a text takes insert or delete");
        }
        if (rc == VV_ECRDT_RANGE)
            snprintf(err, err_len, "op.%s: position or length beyond the text (%zu characters)",
                     verb, vv_crdt_seq_len(d->u.text));
        break;
    }
    case VV_CRDT_KIND_MAP: {
        const char *path[VV_CRDT_MAX_DEPTH];
        size_t depth;
        json_t *key = json_is_object(v) ? json_object_get(v, "key") : NULL;
        if (key == NULL || key_path(key, path, &depth) != 0)
            OP_FAIL("op.%s.key: expected a string or an array of strings (a nested path)", verb);
        if (strcmp(verb, "put") == 0) {
            json_t *val = json_object_get(v, "value");
            if (val == NULL || json_object_size(v) != 2)
                OP_FAIL("op.put: expected {\"key\": ..., \"value\": ...}");
            rc = vv_lwwmap_set(d->u.map, clock, wall_ms, path, depth, val, update, update_len);
        } else if (strcmp(verb, "del") == 0) {
            if (json_object_size(v) != 1)
                OP_FAIL("op.del: expected {\"key\": ...}");
            rc = vv_lwwmap_delete(d->u.map, clock, wall_ms, path, depth, update, update_len);
        } else {
            OP_FAIL("op: a map takes put or del");
        }
        break;
    }
    default:
        break;
    }
    if (rc != 0 && err[0] == '\0')
        snprintf(err, err_len, "%s", vv_strerror(rc));
    return rc;
}

/* ---- remote updates ------------------------------------------------------------------- */

static int apply_one(struct vv_crdt_doc *d, const uint8_t *buf, size_t len)
{
    switch (d->kind) {
    case VV_CRDT_KIND_GCOUNTER:
        return vv_gcounter_apply(d->u.g, buf, len);
    case VV_CRDT_KIND_COUNTER:
        return vv_pncounter_apply(d->u.pn, buf, len);
    case VV_CRDT_KIND_REGISTER:
        return vv_lwwreg_apply(d->u.reg, buf, len);
    case VV_CRDT_KIND_SET:
        return vv_orset_apply(d->u.set, buf, len);
    case VV_CRDT_KIND_TEXT:
        return vv_crdt_seq_apply(d->u.text, buf, len);
    case VV_CRDT_KIND_MAP:
        return vv_lwwmap_apply(d->u.map, buf, len);
    default:
        return VV_ECRDT_TYPE;
    }
}

/* A lookup of what a buffered update waits for costs about as much as decoding this many
 * bytes (a binary search or a hash probe): what the drain meters for each. */
#define DEP_CHECK_WORK 4u

/* What the update refused with VV_ECRDT_CAUSALITY waits for. */
static void last_missing(const struct vv_crdt_doc *d, uint64_t *replica, uint64_t *need)
{
    *replica = *need = 0;
    if (d->kind == VV_CRDT_KIND_TEXT)
        vv_crdt_seq_last_missing(d->u.text, replica, need);
    else if (d->kind == VV_CRDT_KIND_SET)
        vv_orset_last_missing(d->u.set, replica, need);
}

static bool dep_met(const struct vv_crdt_doc *d, uint64_t replica, uint64_t need)
{
    if (d->kind == VV_CRDT_KIND_TEXT)
        return vv_crdt_seq_has(d->u.text, replica, need);
    if (d->kind == VV_CRDT_KIND_SET)
        return vv_orset_has_dot(d->u.set, replica, need);
    return true;
}

static uint64_t steps_of(const struct vv_crdt_doc *d)
{
    return d->kind == VV_CRDT_KIND_TEXT ? vv_crdt_seq_last_work(d->u.text) : 0;
}

/*
 * Retries the first update of every group whose dependency arrived, until none is ready or
 * budget is spent. Each check costs DEP_CHECK_WORK and each retry its bytes; an update that
 * still lacks something is filed again under what it lacks now (the state only grows, so an
 * update is retried at most once per dependency it has).
 */
static uint64_t drain(struct vv_crdt_doc *d, uint64_t budget)
{
    uint64_t work = 0;
    while (d->drain_due && d->n_pending > 0) {
        d->drain_due = false;
        for (struct wait_group *g = d->groups; g; g = g->next) {
            while (g->head != NULL) {
                if (work >= budget) {
                    d->drain_due = true;
                    goto out;
                }
                struct pending *p = g->head;
                work += DEP_CHECK_WORK;
                if (!dep_met(d, g->replica, p->need))
                    break;
                group_unlink(p);
                work += p->len;
                int rc = apply_one(d, p->data, p->len);
                d->last_work += steps_of(d);
                if (rc == VV_ECRDT_CAUSALITY) {
                    uint64_t replica;
                    last_missing(d, &replica, &p->need);
                    group_insert(d, p, replica);
                    continue;
                }
                /* Applied, or now found to be bad: either way it leaves the buffer. */
                pending_free(d, p);
                if (rc == 0)
                    d->drain_due = true;
            }
        }
    }
out:
    groups_sweep(d);
    if (d->n_pending == 0)
        d->drain_due = false;
    d->last_drain_work += work;
    return work;
}

uint64_t vv_crdt_doc_drain(struct vv_crdt_doc *d, uint64_t budget)
{
    d->last_work = d->last_drain_work = 0;
    return drain(d, budget);
}

bool vv_crdt_doc_drain_due(const struct vv_crdt_doc *d)
{
    return d->drain_due;
}

/* Drops the pool's oldest updates until it holds at most max_updates and max_bytes. */
static void pool_shrink(struct vv_crdt_pending_pool *pool, size_t max_updates, size_t max_bytes)
{
    while (pool->head != NULL &&
           (pool->stats.updates > max_updates || pool->stats.bytes > max_bytes)) {
        struct pending *p = pool->head;
        struct vv_crdt_doc *owner = p->doc;
        pending_free(owner, p);
        groups_sweep(owner);
        pool->stats.evicted++;
    }
}

int vv_crdt_doc_apply(struct vv_crdt_doc *d, const uint8_t *buf, size_t len, bool *buffered)
{
    if (buffered)
        *buffered = false;
    d->last_work = d->last_drain_work = 0;
    if (buf == NULL || len == 0)
        return VV_ECRDT_DECODE;
    int rc = apply_one(d, buf, len);
    d->last_work = steps_of(d);
    if (rc == VV_ECRDT_CAUSALITY) {
        if (d->n_pending >= VV_CRDT_DOC_MAX_PENDING ||
            d->pending_bytes + len > VV_CRDT_DOC_MAX_PENDING_BYTES ||
            (d->pool && (d->pool->max_updates == 0 || len > d->pool->max_bytes)))
            return VV_ELIMIT;
        if (d->pool) /* room for it: the oldest go, from whichever document */
            pool_shrink(d->pool, d->pool->max_updates - 1, d->pool->max_bytes - len);
        struct pending *p = vv_xcalloc(1, sizeof(*p) + len);
        p->doc = d;
        p->len = len;
        memcpy(p->data, buf, len);
        uint64_t replica;
        last_missing(d, &replica, &p->need);
        group_insert(d, p, replica);
        if (d->pool)
            pool_append(d->pool, p);
        d->n_pending++;
        d->pending_bytes += len;
        if (buffered)
            *buffered = true;
        return 0;
    }
    if (rc == 0 && d->n_pending > 0) {
        d->drain_due = true;
        drain(d, VV_CRDT_DOC_DRAIN_WORK);
    }
    return rc;
}

uint64_t vv_crdt_doc_last_work(const struct vv_crdt_doc *d)
{
    return d->last_work;
}

uint64_t vv_crdt_doc_last_drain_work(const struct vv_crdt_doc *d)
{
    return d->last_drain_work;
}

void vv_crdt_doc_pending_foreach(const struct vv_crdt_doc *d,
                                 void (*cb)(void *arg, const uint8_t *update, size_t len),
                                 void *arg)
{
    for (const struct wait_group *g = d->groups; g; g = g->next)
        for (const struct pending *p = g->head; p; p = p->next)
            cb(arg, p->data, p->len);
}

/* ---- the pool ------------------------------------------------------------------------- */

struct vv_crdt_pending_pool *vv_crdt_pending_pool_new(size_t max_updates, size_t max_bytes,
                                                      uint64_t max_age_ms)
{
    struct vv_crdt_pending_pool *pool = vv_xcalloc(1, sizeof(*pool));
    vv_crdt_pending_pool_set_limits(pool, max_updates, max_bytes, max_age_ms);
    return pool;
}

void vv_crdt_pending_pool_free(struct vv_crdt_pending_pool *pool)
{
    vv_free(pool);
}

void vv_crdt_pending_pool_set_limits(struct vv_crdt_pending_pool *pool, size_t max_updates,
                                     size_t max_bytes, uint64_t max_age_ms)
{
    pool->max_updates = max_updates;
    pool->max_bytes = max_bytes;
    pool->max_age_ms = max_age_ms;
    pool_shrink(pool, max_updates, max_bytes);
}

void vv_crdt_pending_pool_set_now(struct vv_crdt_pending_pool *pool, uint64_t now_ms)
{
    pool->now_ms = now_ms;
}

size_t vv_crdt_pending_pool_expire(struct vv_crdt_pending_pool *pool)
{
    size_t n = 0;
    while (pool->head != NULL && pool->now_ms - pool->head->since_ms >= pool->max_age_ms) {
        struct pending *p = pool->head;
        struct vv_crdt_doc *owner = p->doc;
        pending_free(owner, p);
        groups_sweep(owner);
        pool->stats.expired++;
        n++;
    }
    return n;
}

const struct vv_crdt_pending_stats *
vv_crdt_pending_pool_stats(const struct vv_crdt_pending_pool *pool)
{
    return &pool->stats;
}

void vv_crdt_doc_set_pool(struct vv_crdt_doc *d, struct vv_crdt_pending_pool *pool)
{
    if (d->pool == pool)
        return;
    for (struct wait_group *g = d->groups; g; g = g->next)
        for (struct pending *p = g->head; p; p = p->next) {
            if (d->pool)
                pool_unlink(d->pool, p);
            if (pool)
                pool_append(pool, p);
        }
    d->pool = pool;
    if (pool)
        vv_crdt_pending_pool_set_limits(pool, pool->max_updates, pool->max_bytes, pool->max_age_ms);
}

/* ---- views ------------------------------------------------------------------------------ */

json_t *vv_crdt_doc_value(const struct vv_crdt_doc *d)
{
    switch (d->kind) {
    case VV_CRDT_KIND_GCOUNTER:
        return vv_gcounter_to_json(d->u.g);
    case VV_CRDT_KIND_COUNTER:
        return vv_pncounter_to_json(d->u.pn);
    case VV_CRDT_KIND_REGISTER:
        return vv_lwwreg_to_json(d->u.reg);
    case VV_CRDT_KIND_SET:
        return vv_orset_to_json(d->u.set);
    case VV_CRDT_KIND_MAP:
        return vv_lwwmap_to_json(d->u.map);
    case VV_CRDT_KIND_TEXT: {
        size_t n;
        char *t = vv_crdt_seq_text(d->u.text, &n);
        json_t *j = json_stringn(t, n);
        vv_free(t);
        return j;
    }
    default:
        return json_null();
    }
}

int vv_crdt_doc_state(struct vv_crdt_doc *d, uint8_t **out, size_t *out_len)
{
    switch (d->kind) {
    case VV_CRDT_KIND_GCOUNTER:
        return vv_gcounter_encode(d->u.g, out, out_len);
    case VV_CRDT_KIND_COUNTER:
        return vv_pncounter_encode(d->u.pn, out, out_len);
    case VV_CRDT_KIND_REGISTER:
        return vv_lwwreg_encode(d->u.reg, out, out_len);
    case VV_CRDT_KIND_SET:
        return vv_orset_encode(d->u.set, out, out_len);
    case VV_CRDT_KIND_MAP:
        return vv_lwwmap_encode(d->u.map, out, out_len);
    case VV_CRDT_KIND_TEXT:
        vv_crdt_seq_encode_state(d->u.text, out, out_len);
        return 0;
    default:
        return VV_ECRDT_TYPE;
    }
}

static int sv_of(struct vv_crdt_doc *d, struct vv_crdt_sv *sv)
{
    switch (d->kind) {
    case VV_CRDT_KIND_GCOUNTER:
        return vv_gcounter_state_vector(d->u.g, sv);
    case VV_CRDT_KIND_COUNTER:
        return vv_pncounter_state_vector(d->u.pn, sv);
    case VV_CRDT_KIND_SET:
        return vv_orset_state_vector(d->u.set, sv);
    default:
        return VV_ECRDT_TYPE;
    }
}

int vv_crdt_doc_state_vector(struct vv_crdt_doc *d, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    switch (d->kind) {
    case VV_CRDT_KIND_TEXT:
        vv_crdt_seq_state_vector(d->u.text, out, out_len);
        return 0;
    case VV_CRDT_KIND_REGISTER:
    case VV_CRDT_KIND_MAP:
        return 0; /* no state vector: the delta is the state */
    default: {
        struct vv_crdt_sv sv = {0};
        int rc = sv_of(d, &sv);
        if (rc == 0)
            rc = vv_crdt_sv_encode(&sv, out, out_len);
        vv_crdt_sv_clear(&sv);
        return rc;
    }
    }
}

int vv_crdt_doc_delta(struct vv_crdt_doc *d, const uint8_t *sv, size_t sv_len, uint8_t **out,
                      size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    switch (d->kind) {
    case VV_CRDT_KIND_TEXT:
        return vv_crdt_seq_encode_delta(d->u.text, sv_len ? sv : NULL, sv_len, out, out_len);
    case VV_CRDT_KIND_REGISTER:
    case VV_CRDT_KIND_MAP:
        return vv_crdt_doc_state(d, out, out_len);
    default: {
        struct vv_crdt_sv peer = {0};
        int rc = sv_len ? vv_crdt_sv_decode(sv, sv_len, &peer) : 0;
        if (rc != 0)
            return VV_ECRDT_DECODE;
        switch (d->kind) {
        case VV_CRDT_KIND_GCOUNTER:
            rc = vv_gcounter_delta_since(d->u.g, &peer, out, out_len);
            break;
        case VV_CRDT_KIND_COUNTER:
            rc = vv_pncounter_delta_since(d->u.pn, &peer, out, out_len);
            break;
        default:
            rc = vv_orset_delta_since(d->u.set, &peer, out, out_len);
            break;
        }
        vv_crdt_sv_clear(&peer);
        return rc;
    }
    }
}

static uint64_t fnv(uint64_t h, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211u;
    return h;
}

uint64_t vv_crdt_doc_fingerprint(struct vv_crdt_doc *d)
{
    uint64_t h = 1469598103934665603u;
    uint8_t *b = NULL;
    size_t n = 0, size = 0;
    switch (d->kind) {
    case VV_CRDT_KIND_REGISTER:
    case VV_CRDT_KIND_MAP:
        vv_crdt_doc_state(d, &b, &n);
        break;
    case VV_CRDT_KIND_TEXT:
        vv_crdt_doc_state_vector(d, &b, &n);
        size = vv_crdt_seq_utf8_len(d->u.text) * 1000003u + vv_crdt_seq_len(d->u.text);
        break;
    case VV_CRDT_KIND_SET:
        /* A remove that takes away some of an element's dots changes neither the state
         * vector nor the sizes: only the whole state tells. */
        vv_crdt_doc_state(d, &b, &n);
        break;
    default:
        vv_crdt_doc_state_vector(d, &b, &n);
        break;
    }
    h = fnv(h, b, n);
    h = fnv(h, (const uint8_t *)&size, sizeof(size));
    vv_free(b);
    d->fingerprint_bytes = n;
    return h;
}

size_t vv_crdt_doc_fingerprint_bytes(const struct vv_crdt_doc *d)
{
    return d->fingerprint_bytes;
}
