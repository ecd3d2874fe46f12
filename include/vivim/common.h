/*
 * Small things every module uses: the allocator, array sizes, bounded string copies.
 *
 * Allocation failure aborts the process (vv_xmalloc and friends), so callers do not drown in
 * NULL checks. All memory that vivimd's own code allocates goes through these functions and is
 * released with vv_free(); unit tests route them to cmocka's allocator so a leak fails the
 * test. Never free() a vv_x* pointer or vv_free() a malloc() pointer.
 */
#ifndef VIVIM_COMMON_H
#define VIVIM_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vivim/error.h"

#define VV_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VV_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define VV_MAX(a, b)     ((a) > (b) ? (a) : (b))
#define VV_UNUSED(x)     ((void)(x))

/* Containing struct from a pointer to one of its members. */
#define VV_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

void *vv_xmalloc(size_t n);
void *vv_xcalloc(size_t count, size_t size);
void *vv_xrealloc(void *p, size_t n);
char *vv_xstrdup(const char *s);
char *vv_xstrndup(const char *s, size_t n);
/* printf into a new string; never returns NULL. */
char *vv_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vv_free(void *p);

/*
 * Route every vv_x* allocation through other functions (unit tests pass cmocka's). Pass NULLs
 * to restore the C library's. Not thread-safe: call before anything is allocated.
 */
struct vv_allocator {
    void *(*malloc_fn)(size_t n);
    void *(*calloc_fn)(size_t count, size_t size);
    void *(*realloc_fn)(void *p, size_t n);
    void (*free_fn)(void *p);
};
void vv_set_allocator(const struct vv_allocator *a);

/* Copies at most dst_size-1 bytes and always terminates. Returns strlen(src). */
size_t vv_strlcpy(char *dst, const char *src, size_t dst_size);

/* Lowercase hex of len bytes into out, which must hold 2*len+1 bytes. */
void vv_hex_encode(const uint8_t *bytes, size_t len, char *out);
/* True when s is exactly 64 lowercase hex digits (a SHA-256 or node ID as text). */
bool vv_hex_is_sha256(const char *s);
/* Parses exactly 2*len hex digits. Returns 0 or VV_EINVAL. */
int vv_hex_decode(const char *hex, uint8_t *out, size_t len);

#endif
