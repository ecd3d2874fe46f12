/*
 * The project's allocator: the C library's by default, cmocka's in unit tests.
 * Failure to allocate aborts: vivimd bounds its memory use by design, so running out means
 * the machine is in trouble and carrying on would only corrupt state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vivim/common.h"

static struct vv_allocator alloc = {malloc, calloc, realloc, free};

void vv_set_allocator(const struct vv_allocator *a)
{
    if (a == NULL || a->malloc_fn == NULL) {
        alloc = (struct vv_allocator){malloc, calloc, realloc, free};
        return;
    }
    alloc = *a;
}

static void *check(void *p)
{
    if (p == NULL) {
        fputs("vivim: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *vv_xmalloc(size_t n)
{
    return check(alloc.malloc_fn(n ? n : 1));
}

void *vv_xcalloc(size_t count, size_t size)
{
    if (count == 0 || size == 0)
        count = size = 1;
    return check(alloc.calloc_fn(count, size));
}

void *vv_xrealloc(void *p, size_t n)
{
    return check(alloc.realloc_fn(p, n ? n : 1));
}

char *vv_xstrdup(const char *s)
{
    return vv_xstrndup(s, strlen(s));
}

char *vv_xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = vv_xmalloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *vv_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *s = vv_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void vv_free(void *p)
{
    if (p != NULL)
        alloc.free_fn(p);
}

size_t vv_strlcpy(char *dst, const char *src, size_t dst_size)
{
    size_t len = strlen(src);
    if (dst_size > 0) {
        size_t n = len < dst_size - 1 ? len : dst_size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

void vv_hex_encode(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * len] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool vv_hex_is_sha256(const char *s)
{
    size_t i = 0;
    for (; s[i] && i < 65; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == 64;
}

int vv_hex_decode(const char *hex, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(hex[2 * i]);
        int lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return VV_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[2 * len] == '\0' ? 0 : VV_EINVAL;
}
