/*
 * The state directory: one vivimd at a time, and nobody else may write in it.
 *
 * Two daemons on one directory share an identity and write the same SQLite files; what one
 * acknowledges the other may lose at restart. So the node takes an exclusive flock(2) on
 * <state_dir>/vivimd.lock before it reads or writes anything else there, holds it for the
 * process's life (the kernel drops it when the process dies, even by SIGKILL, so there is no
 * stale lock to clean up), and writes its PID into the file for operators. The file is never
 * removed: unlinking a lock file races with a process that has just opened it.
 *
 * The directory holds the node's secret key. One that group or others can write lets them
 * swap the key or the databases under the node, so it is refused, as ssh refuses such a
 * home directory; so is one owned by another user (root excepted), who could loosen it at
 * any time. Reading is the operator's choice (a backup group, for instance): the key file
 * itself must be 0600 (identity.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vivim/common.h"
#include "vivim/node.h"

/* Refuses a directory others could write in; fd is open on it. */
static int check_owner_and_mode(int fd, const char *dir, char *err, size_t err_len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        snprintf(err, err_len, "cannot stat state directory %s: %s", dir, strerror(errno));
        return rc;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(err, err_len,
                 "state directory %s is owned by uid %u, not by the user vivimd runs as (uid "
                 "%u); run: chown %u %s",
                 dir, (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid(), dir);
        return VV_ENODE_STATE_PERM;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, err_len,
                 "state directory %s is writable by group or others (mode %04o); run: chmod 700 "
                 "%s",
                 dir, (unsigned)(st.st_mode & 07777), dir);
        return VV_ENODE_STATE_PERM;
    }
    return 0;
}

/* Reads the PID the holder wrote, for the message; "unknown" if it has not written it yet. */
static void read_holder(int fd, char *out, size_t cap)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    size_t len = n > 0 ? (size_t)n : 0;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        len--;
    buf[len] = '\0';
    bool digits = len > 0;
    for (size_t i = 0; i < len; i++)
        digits &= buf[i] >= '0' && buf[i] <= '9';
    snprintf(out, cap, "%s", digits ? buf : "unknown");
}

int vv_node_lock_state_dir(const char *dir, int *lock_fd, char *err, size_t err_len)
{
    *lock_fd = -1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int rc = -errno;
        snprintf(err, err_len, "cannot create state directory %s: %s", dir, strerror(errno));
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int rc = -errno;
        snprintf(err, err_len, "cannot open state directory %s: %s", dir, strerror(errno));
        return rc;
    }
    int rc = check_owner_and_mode(dfd, dir, err, err_len);
    if (rc != 0) {
        close(dfd);
        return rc;
    }
    int fd = openat(dfd, VV_NODE_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    close(dfd);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, err_len, "cannot open %s/%s: %s", dir, VV_NODE_LOCK_FILE, strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, err_len, "%s/%s is not a regular file", dir, VV_NODE_LOCK_FILE);
        return VV_EINVAL;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        rc = -errno;
        if (errno == EWOULDBLOCK) {
            char pid[32];
            read_holder(fd, pid, sizeof(pid));
            snprintf(err, err_len,
                     "state directory %s is in use by another vivimd (pid %s); stop it first, "
                     "or give this one its own [node] state_dir",
                     dir, pid);
            rc = VV_ENODE_STATE_LOCKED;
        } else {
            snprintf(err, err_len, "cannot lock %s/%s: %s", dir, VV_NODE_LOCK_FILE,
                     strerror(errno));
        }
        close(fd);
        return rc;
    }
    /* Ours now: the PID of the previous holder (dead) is replaced. */
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    errno = 0;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        rc = errno ? -errno : VV_EIO; /* a short write sets no errno */
        snprintf(err, err_len, "cannot write %s/%s: %s", dir, VV_NODE_LOCK_FILE, strerror(errno));
        close(fd);
        return rc;
    }
    *lock_fd = fd;
    return 0;
}

void vv_node_unlock_state_dir(int lock_fd)
{
    if (lock_fd >= 0)
        close(lock_fd); /* releases the flock; the file and its PID stay */
}
