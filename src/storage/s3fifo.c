/*
 * S3-FIFO (see vivim/s3fifo.h): three intrusive doubly-linked FIFO lists over entries found
 * through a chained hash table keyed by SipHash (keys are addresses peers choose). Every
 * operation is O(1) amortized, except eviction, which moves at most a few entries per byte
 * freed (a main-queue entry is reinserted at most VV_S3FIFO_FREQ_MAX times before it goes).
 */
#include <string.h>

#include "vivim/common.h"
#include "vivim/keyed_hash.h"
#include "vivim/s3fifo.h"

enum queue { Q_SMALL, Q_MAIN, Q_GHOST, Q_PINNED };

struct entry {
    uint8_t key[32];
    uint64_t size;
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* in its queue; prev towards the head (newest) */
    uint8_t queue;             /* enum queue */
    uint8_t freq;              /* 0..VV_S3FIFO_FREQ_MAX */
};

struct list {
    struct entry *head, *tail; /* head: newest; eviction takes the tail */
    uint64_t bytes, n;
};

struct vv_s3fifo {
    uint64_t capacity, small_target, ghost_target; /* bytes */
    struct list small, main, ghost;
    uint64_t pinned_bytes, pinned_n;
    struct entry **buckets;
    size_t nbuckets, nentries; /* nbuckets a power of two */
    uint64_t hits, misses, evictions;
    vv_s3fifo_evict_cb cb;
    void *arg;
};

/* ---- lists and table --------------------------------------------------------------------- */

static void list_push(struct list *l, struct entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    l->head = e;
    if (!l->tail)
        l->tail = e;
    l->bytes += e->size;
    l->n++;
}

static void list_unlink(struct list *l, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
    l->bytes -= e->size;
    l->n--;
}

static size_t bucket_of(const struct vv_s3fifo *c, const uint8_t key[32])
{
    return (size_t)vv_keyed_hash64(key, 32) & (c->nbuckets - 1);
}

static struct entry *find(const struct vv_s3fifo *c, const uint8_t key[32])
{
    for (struct entry *e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, 32) == 0)
            return e;
    return NULL;
}

static void grow(struct vv_s3fifo *c)
{
    size_t old = c->nbuckets;
    struct entry **ob = c->buckets;
    c->nbuckets = old * 2;
    c->buckets = vv_xcalloc(c->nbuckets, sizeof(*c->buckets));
    for (size_t i = 0; i < old; i++) {
        struct entry *e = ob[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            size_t b = bucket_of(c, e->key);
            e->hnext = c->buckets[b];
            c->buckets[b] = e;
        }
    }
    vv_free(ob);
}

static struct entry *add(struct vv_s3fifo *c, const uint8_t key[32], uint64_t size)
{
    if (c->nentries >= c->nbuckets)
        grow(c);
    struct entry *e = vv_xcalloc(1, sizeof(*e));
    memcpy(e->key, key, 32);
    e->size = size;
    size_t b = bucket_of(c, key);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    c->nentries++;
    return e;
}

/* Unlinks e from the table and frees it; e must be in no queue. */
static void drop(struct vv_s3fifo *c, struct entry *e)
{
    struct entry **pp = &c->buckets[bucket_of(c, e->key)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    c->nentries--;
    vv_free(e);
}

static struct list *list_of(struct vv_s3fifo *c, struct entry *e)
{
    switch (e->queue) {
    case Q_SMALL:
        return &c->small;
    case Q_MAIN:
        return &c->main;
    case Q_GHOST:
        return &c->ghost;
    default:
        return NULL;
    }
}

/* Takes e out of wherever it is (a queue, or the pinned set). */
static void detach(struct vv_s3fifo *c, struct entry *e)
{
    struct list *l = list_of(c, e);
    if (l) {
        list_unlink(l, e);
    } else {
        c->pinned_bytes -= e->size;
        c->pinned_n--;
    }
}

/* ---- eviction ---------------------------------------------------------------------------- */

static void evicted(struct vv_s3fifo *c, struct entry *e)
{
    c->evictions++;
    if (c->cb)
        c->cb(e->key, e->size, c->arg);
}

static void evict_small(struct vv_s3fifo *c)
{
    struct entry *t = c->small.tail;
    list_unlink(&c->small, t);
    if (t->freq > 0) {
        /* Requested again during its stay in S: worth keeping. */
        t->freq = 0;
        t->queue = Q_MAIN;
        list_push(&c->main, t);
        return;
    }
    evicted(c, t);
    t->queue = Q_GHOST;
    list_push(&c->ghost, t);
    while (c->ghost.bytes > c->ghost_target && c->ghost.tail) {
        struct entry *g = c->ghost.tail;
        list_unlink(&c->ghost, g);
        drop(c, g);
    }
}

static void evict_main(struct vv_s3fifo *c)
{
    struct entry *t = c->main.tail;
    list_unlink(&c->main, t);
    if (t->freq > 0) {
        t->freq--;
        list_push(&c->main, t);
        return;
    }
    evicted(c, t);
    drop(c, t);
}

static void make_room(struct vv_s3fifo *c)
{
    while (c->small.bytes + c->main.bytes + c->pinned_bytes > c->capacity &&
           (c->small.n > 0 || c->main.n > 0)) {
        if (c->small.n > 0 && (c->small.bytes >= c->small_target || c->main.n == 0))
            evict_small(c);
        else
            evict_main(c);
    }
}

/* ---- API --------------------------------------------------------------------------------- */

struct vv_s3fifo *vv_s3fifo_new(uint64_t capacity_bytes, vv_s3fifo_evict_cb cb, void *arg)
{
    struct vv_s3fifo *c = vv_xcalloc(1, sizeof(*c));
    c->capacity = capacity_bytes ? capacity_bytes : 1;
    c->small_target = VV_MAX(c->capacity / 100 * VV_S3FIFO_SMALL_PERCENT, 1);
    c->ghost_target = c->capacity - VV_MIN(c->small_target, c->capacity - 1);
    c->nbuckets = 64;
    c->buckets = vv_xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->cb = cb;
    c->arg = arg;
    return c;
}

void vv_s3fifo_free(struct vv_s3fifo *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            vv_free(e);
        }
    }
    vv_free(c->buckets);
    vv_free(c);
}

bool vv_s3fifo_get(struct vv_s3fifo *c, const uint8_t key[32])
{
    struct entry *e = find(c, key);
    if (e == NULL || e->queue == Q_GHOST) {
        c->misses++;
        return false;
    }
    if (e->freq < VV_S3FIFO_FREQ_MAX)
        e->freq++;
    c->hits++;
    return true;
}

int vv_s3fifo_insert(struct vv_s3fifo *c, const uint8_t key[32], uint64_t size)
{
    if (size > c->capacity)
        return VV_ELIMIT;
    struct entry *e = find(c, key);
    if (e && e->queue != Q_GHOST)
        return VV_EEXIST;
    if (e) {
        /* Evicted from S recently and back already: straight to the main queue. */
        list_unlink(&c->ghost, e);
        e->size = size;
        e->freq = 0;
        e->queue = Q_MAIN;
        list_push(&c->main, e);
    } else {
        e = add(c, key, size);
        e->queue = Q_SMALL;
        list_push(&c->small, e);
    }
    make_room(c);
    return 0;
}

int vv_s3fifo_pin(struct vv_s3fifo *c, const uint8_t key[32], uint64_t size)
{
    struct entry *e = find(c, key);
    if (e && e->queue == Q_PINNED)
        return 0;
    if (e)
        detach(c, e);
    else
        e = add(c, key, size);
    e->size = size;
    e->queue = Q_PINNED;
    e->freq = 0;
    c->pinned_bytes += size;
    c->pinned_n++;
    make_room(c);
    return 0;
}

int vv_s3fifo_reserve(struct vv_s3fifo *c, uint64_t bytes)
{
    if (bytes > c->capacity)
        return VV_ELIMIT;
    /* As if bytes more were pinned: the queues give up what that needs. */
    c->pinned_bytes += bytes;
    make_room(c);
    c->pinned_bytes -= bytes;
    return c->small.bytes + c->main.bytes + c->pinned_bytes + bytes <= c->capacity ? 0 : VV_ELIMIT;
}

bool vv_s3fifo_evict_one(struct vv_s3fifo *c)
{
    uint64_t before = c->evictions;
    while (c->evictions == before && (c->small.n > 0 || c->main.n > 0)) {
        if (c->small.n > 0 && (c->small.bytes >= c->small_target || c->main.n == 0))
            evict_small(c);
        else
            evict_main(c);
    }
    return c->evictions != before;
}

int vv_s3fifo_unpin(struct vv_s3fifo *c, const uint8_t key[32])
{
    struct entry *e = find(c, key);
    if (e == NULL || e->queue != Q_PINNED)
        return VV_ENOTFOUND;
    detach(c, e);
    e->queue = Q_MAIN;
    list_push(&c->main, e);
    make_room(c);
    return 0;
}

int vv_s3fifo_remove(struct vv_s3fifo *c, const uint8_t key[32])
{
    struct entry *e = find(c, key);
    if (e == NULL)
        return VV_ENOTFOUND;
    bool ghost = e->queue == Q_GHOST;
    detach(c, e);
    drop(c, e);
    return ghost ? VV_ENOTFOUND : 0;
}

bool vv_s3fifo_contains(const struct vv_s3fifo *c, const uint8_t key[32])
{
    const struct entry *e = find(c, key);
    return e != NULL && e->queue != Q_GHOST;
}

void vv_s3fifo_stats(const struct vv_s3fifo *c, struct vv_s3fifo_stats *out)
{
    *out = (struct vv_s3fifo_stats){
        .capacity_bytes = c->capacity,
        .used_bytes = c->small.bytes + c->main.bytes + c->pinned_bytes,
        .small_bytes = c->small.bytes,
        .main_bytes = c->main.bytes,
        .pinned_bytes = c->pinned_bytes,
        .cached = c->small.n + c->main.n + c->pinned_n,
        .ghosts = c->ghost.n,
        .hits = c->hits,
        .misses = c->misses,
        .evictions = c->evictions,
    };
}
