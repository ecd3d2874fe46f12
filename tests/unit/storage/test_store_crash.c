/*
 * Durable before acknowledged, under SIGKILL: a child process stores blobs (inline, one-chunk
 * files and multi-chunk) in a loop and reports each address on a pipe after vv_store_put
 * returned; the parent kills it at a random moment, reopens the store, and checks that every
 * acknowledged blob is present and reads back exactly, and that every blob the index holds
 * verifies (no torn blob is visible). Seeded: a failing seed is printed and replays.
 */
#include "vv_test.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vivim/log.h"
#include "vivim/store.h"

#define ROUNDS        24 /* VV_STORE_CRASH_ROUNDS overrides */
#define MAX_KILL_MS   300
#define MAX_PER_CHILD 100000
#define READY         UINT64_MAX /* the child's first record: its store is open */

struct ack {
    uint64_t seed;
    uint8_t addr[32];
};

static uint64_t rng(uint64_t *x)
{
    /* splitmix64 */
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The blob of a seed: a third inline, a third one-chunk files, a third multi-chunk. */
static uint8_t *make_blob(uint64_t seed, size_t *len)
{
    uint64_t x = seed;
    uint64_t r = rng(&x);
    switch (r % 3) {
    case 0:
        *len = 1 + rng(&x) % VV_STORE_INLINE_MAX_BYTES;
        break;
    case 1:
        *len = VV_STORE_INLINE_MAX_BYTES + 1 + rng(&x) % (VV_STORE_CHUNK_BYTES - 65536);
        break;
    default:
        *len = VV_STORE_CHUNK_BYTES + 1 + rng(&x) % (4 * VV_STORE_CHUNK_BYTES);
        break;
    }
    uint8_t *b = malloc(*len);
    for (size_t i = 0; i < *len; i += 8) {
        uint64_t v = rng(&x);
        memcpy(b + i, &v, VV_MIN((size_t)8, *len - i));
    }
    return b;
}

static void child(const char *dir, int wfd, uint64_t base)
{
    struct vv_store_config cfg = {.dir = dir};
    struct vv_store *s;
    if (vv_store_open(&cfg, &s) != 0)
        _exit(2);
    struct ack ready = {.seed = READY};
    if (write(wfd, &ready, sizeof(ready)) != (ssize_t)sizeof(ready))
        _exit(4);
    for (uint64_t i = 0; i < MAX_PER_CHILD; i++) {
        struct ack a = {.seed = base + i};
        size_t len;
        uint8_t *b = make_blob(a.seed, &len);
        if (vv_store_put(s, b, len, NULL, a.addr) != 0)
            _exit(3);
        free(b);
        /* Acknowledged: the address goes out only after the call returned. */
        if (write(wfd, &a, sizeof(a)) != (ssize_t)sizeof(a))
            _exit(4);
    }
    _exit(0);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Collects acknowledgements until the deadline (-1: none), EOF, or, when stop_after >= 0,
 * that many records (the READY record included). Returns the records read. */
static long read_acks(int fd, struct ack **acks, size_t *n, int64_t deadline_ms, long stop_after)
{
    long records = 0;
    for (;;) {
        if (stop_after >= 0 && records >= stop_after)
            return records;
        int wait = -1;
        if (deadline_ms >= 0) {
            wait = (int)(deadline_ms - mono_ms());
            if (wait <= 0)
                return records;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return records;
        struct ack a;
        ssize_t got = read(fd, &a, sizeof(a));
        if (got == 0)
            return records;               /* EOF */
        assert_int_equal(got, sizeof(a)); /* pipe writes up to PIPE_BUF are atomic */
        records++;
        if (a.seed == READY)
            continue;
        *acks = realloc(*acks, (*n + 1) * sizeof(**acks));
        (*acks)[(*n)++] = a;
    }
}

static void test_every_acknowledged_store_survives_sigkill(void **state)
{
    (void)state;
    char root[64] = "/tmp/vv-store-crash-XXXXXX";
    assert_non_null(mkdtemp(root));
    char dir[96];
    snprintf(dir, sizeof(dir), "%s/store", root);
    uint64_t seed = (uint64_t)time(NULL);
    const char *env = getenv("VV_TEST_SEED");
    if (env)
        seed = strtoull(env, NULL, 10);
    printf("seed %llu (VV_TEST_SEED=%llu replays)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    int rounds = ROUNDS;
    if (getenv("VV_STORE_CRASH_ROUNDS"))
        rounds = atoi(getenv("VV_STORE_CRASH_ROUNDS"));
    uint64_t x = seed;
    struct ack *acks = NULL;
    size_t n = 0, min_acks = 0;
    uint64_t objects = 0, cleaned = 0;
    for (int round = 0; round < rounds; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        int64_t kill_after = 20 + (int64_t)(rng(&x) % MAX_KILL_MS);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child(dir, fds[1], seed * 1000000 + (uint64_t)round * MAX_PER_CHILD);
        }
        close(fds[1]);
        size_t before = n;
        /* Every fourth round the kill lands anywhere, start-up cleanup included; the others
         * wait for the store to open and 0 to 3 stores to be acknowledged (so the test makes
         * progress however slow the disk), then kill within 100 ms. */
        if (round % 4 != 0) {
            long want = 1 + (long)(rng(&x) % 4);
            assert_int_equal(read_acks(fds[0], &acks, &n, -1, want), want);
            min_acks += (size_t)want - 1;
            kill_after = (int64_t)(rng(&x) % 100);
        }
        read_acks(fds[0], &acks, &n, mono_ms() + kill_after, -1);
        kill(pid, SIGKILL);
        read_acks(fds[0], &acks, &n, -1, -1); /* what was written before the kill */
        close(fds[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
            fail_msg("seed %llu round %d: the child ended by itself (status 0x%x)",
                     (unsigned long long)seed, round, (unsigned)st);

        struct vv_store_config cfg = {.dir = dir};
        struct vv_store *s;
        assert_int_equal(vv_store_open(&cfg, &s), 0);
        for (size_t i = 0; i < n; i++) {
            size_t len, glen;
            uint8_t *want = make_blob(acks[i].seed, &len), *got;
            int rc = vv_store_get(s, acks[i].addr, &got, &glen);
            if (rc != 0 || glen != len || memcmp(got, want, len) != 0)
                fail_msg("seed %llu round %d: acknowledged blob %llu lost or wrong (%s)",
                         (unsigned long long)seed, round, (unsigned long long)acks[i].seed,
                         vv_strerror(rc));
            vv_free(got);
            free(want);
        }
        uint64_t checked, bad;
        assert_int_equal(vv_store_check(s, &checked, &bad), 0);
        if (bad != 0)
            fail_msg("seed %llu round %d: %llu torn blobs", (unsigned long long)seed, round,
                     (unsigned long long)bad);
        assert_true(checked >= n);
        struct vv_store_counters c;
        vv_store_counters(s, &c);
        cleaned += c.startup_tmp_removed + c.startup_orphans_removed;
        objects = checked;
        vv_store_close(s);
        printf("round %2d: killed after %3lld ms, %3zu acknowledged (+%zu), %llu objects\n", round,
               (long long)kill_after, n, n - before, (unsigned long long)checked);
    }
    printf("%zu acknowledged stores, %llu objects, %llu leftover files removed at start-up\n", n,
           (unsigned long long)objects, (unsigned long long)cleaned);
    assert_true(n >= min_acks); /* every kill came after the stores it waited for */
    free(acks);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    vv_log_set_level(VV_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_acknowledged_store_survives_sigkill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
