/*
 * Shared by the cmocka unit tests: include after <cmocka.h>'s prerequisites.
 *
 * vv_test_use_cmocka_allocator() routes every vv_x* allocation through cmocka's test
 * allocator, so a test that leaks memory, overruns a buffer's guard bytes or frees twice
 * fails with the file and line of the allocation. Call it at the start of each test
 * (cmocka checks for leaks per test), or pass VV_TEST_SETUP as the group setup.
 */
#ifndef VV_TEST_H
#define VV_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "vivim/common.h"

static void *vv_test__malloc(size_t n)
{
    return _test_malloc(n, __FILE__, __LINE__);
}
static void *vv_test__calloc(size_t c, size_t s)
{
    return _test_calloc(c, s, __FILE__, __LINE__);
}
static void *vv_test__realloc(void *p, size_t n)
{
    return _test_realloc(p, n, __FILE__, __LINE__);
}
static void vv_test__free(void *p)
{
    _test_free(p, __FILE__, __LINE__);
}

static inline void vv_test_use_cmocka_allocator(void)
{
    static const struct vv_allocator a = {vv_test__malloc, vv_test__calloc, vv_test__realloc,
                                          vv_test__free};
    vv_set_allocator(&a);
}

/* A cmocka group setup that installs the allocator. */
static inline int vv_test_group_setup(void **state)
{
    (void)state;
    vv_test_use_cmocka_allocator();
    return 0;
}

#endif
