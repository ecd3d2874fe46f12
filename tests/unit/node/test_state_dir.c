/* The state directory: one holder at a time, refused when others may write in it. */
#include "vv_test.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vivim/node.h"

struct fixture {
    char dir[64];
    char lock[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/vv-statedir-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->lock, sizeof(f->lock), "%s/%s", f->dir, VV_NODE_LOCK_FILE);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/new", f->dir);
    rmdir(sub);
    unlink(f->lock);
    chmod(f->dir, 0700);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void read_file(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(buf, 1, cap - 1, fp);
    buf[n] = '\0';
    fclose(fp);
}

static void test_second_holder_is_refused_with_the_first_ones_pid(void **state)
{
    struct fixture *f = *state;
    char err[512], want[512], pid[32];
    int a, b;
    assert_int_equal(vv_node_lock_state_dir(f->dir, &a, err, sizeof(err)), 0);
    assert_true(a >= 0);
    read_file(f->lock, pid, sizeof(pid));
    char mine[32];
    snprintf(mine, sizeof(mine), "%ld\n", (long)getpid());
    assert_string_equal(pid, mine);

    /* flock is per open file: a second open in this process conflicts like a second vivimd. */
    assert_int_equal(vv_node_lock_state_dir(f->dir, &b, err, sizeof(err)), VV_ENODE_STATE_LOCKED);
    assert_int_equal(b, -1);
    snprintf(want, sizeof(want),
             "state directory %s is in use by another vivimd (pid %ld); stop it first, or give "
             "this one its own [node] state_dir",
             f->dir, (long)getpid());
    assert_string_equal(err, want);
    read_file(f->lock, pid, sizeof(pid));
    assert_string_equal(pid, mine); /* the refused one did not touch the holder's PID */

    vv_node_unlock_state_dir(a);
    /* The file stays; whoever takes it next writes its PID over a stale one. */
    int fd = open(f->lock, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "999999999\n", 10), 10);
    close(fd);
    assert_int_equal(vv_node_lock_state_dir(f->dir, &b, err, sizeof(err)), 0);
    read_file(f->lock, pid, sizeof(pid));
    assert_string_equal(pid, mine);
    vv_node_unlock_state_dir(b);
    vv_node_unlock_state_dir(-1); /* no-op */
}

static void test_writable_by_others_is_refused_before_anything_is_written(void **state)
{
    struct fixture *f = *state;
    static const mode_t modes[] = {0777, 0770, 0720, 0702, 01777};
    for (size_t i = 0; i < VV_ARRAY_SIZE(modes); i++) {
        assert_int_equal(chmod(f->dir, modes[i]), 0);
        char err[512], want[512];
        int fd;
        assert_int_equal(vv_node_lock_state_dir(f->dir, &fd, err, sizeof(err)),
                         VV_ENODE_STATE_PERM);
        assert_int_equal(fd, -1);
        snprintf(want, sizeof(want),
                 "state directory %s is writable by group or others (mode %04o); run: chmod 700 "
                 "%s",
                 f->dir, (unsigned)modes[i], f->dir);
        assert_string_equal(err, want);
        assert_int_equal(access(f->lock, F_OK), -1); /* no lock file made */
    }
    /* Readable by group or others is the operator's choice. */
    assert_int_equal(chmod(f->dir, 0755), 0);
    char err[512];
    int fd;
    assert_int_equal(vv_node_lock_state_dir(f->dir, &fd, err, sizeof(err)), 0);
    vv_node_unlock_state_dir(fd);
}

static void test_missing_dir_is_created_0700(void **state)
{
    struct fixture *f = *state;
    char sub[128], err[512], lock[160];
    snprintf(sub, sizeof(sub), "%s/new", f->dir);
    mode_t old = umask(0);
    int fd;
    int rc = vv_node_lock_state_dir(sub, &fd, err, sizeof(err));
    umask(old);
    assert_int_equal(rc, 0);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    snprintf(lock, sizeof(lock), "%s/%s", sub, VV_NODE_LOCK_FILE);
    assert_int_equal(stat(lock, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    vv_node_unlock_state_dir(fd);
    unlink(lock);
}

static void test_a_file_in_place_of_the_dir_is_an_error(void **state)
{
    struct fixture *f = *state;
    char err[512];
    int fd;
    /* The lock file path is a regular file, not a directory. */
    int tmp = open(f->lock, O_WRONLY | O_CREAT, 0600);
    assert_true(tmp >= 0);
    close(tmp);
    assert_true(vv_node_lock_state_dir(f->lock, &fd, err, sizeof(err)) < 0);
    assert_int_equal(fd, -1);
    assert_non_null(strstr(err, f->lock));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_second_holder_is_refused_with_the_first_ones_pid,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_writable_by_others_is_refused_before_anything_is_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_dir_is_created_0700, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_file_in_place_of_the_dir_is_an_error, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
