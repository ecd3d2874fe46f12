/*
 * The node's Ed25519 identity, kept in <state_dir>/node.key.
 *
 * The file holds the 32-byte seed followed by the 32-byte public key (64 bytes, libsodium's
 * secret-key layout), mode 0600. It is created once, atomically (temporary file, fsync,
 * rename, fsync of the directory), and never rewritten: an operator who finds the node
 * refusing to start because of its key must be able to trust that the key is still there.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vivim/common.h"
#include "vivim/identity.h"

void vv_identity_node_id(const uint8_t pk[VV_ED25519_PK_BYTES], uint8_t out[VV_NODE_ID_BYTES])
{
    crypto_hash_sha256(out, pk, VV_ED25519_PK_BYTES);
}

void vv_identity_clear(struct vv_identity *id)
{
    sodium_memzero(id->secret_key, sizeof(id->secret_key));
}

static void finish(struct vv_identity *id)
{
    vv_identity_node_id(id->public_key, id->node_id);
    vv_hex_encode(id->node_id, VV_NODE_ID_BYTES, id->node_id_hex);
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int create_key(const char *dir, const char *path, struct vv_identity *id, char *err,
                      size_t err_len)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%.4150s.tmp", path) >= sizeof(tmp))
        return VV_EINVAL;
    if (crypto_sign_keypair(id->public_key, id->secret_key) != 0)
        return VV_EIO;
    unlink(tmp); /* a leftover from a crash during an earlier first start */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int rc = -errno;
        snprintf(err, err_len, "cannot create %s: %s", tmp, strerror(errno));
        return rc;
    }
    int rc = write_all(fd, id->secret_key, VV_ED25519_SK_BYTES);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        snprintf(err, err_len, "cannot write %s: %s", path, strerror(-rc));
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    finish(id);
    return 0;
}

int vv_identity_load_or_create(const char *state_dir, struct vv_identity *id, char *err,
                               size_t err_len)
{
    memset(id, 0, sizeof(*id));
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        int rc = -errno;
        snprintf(err, err_len, "cannot create state directory %s: %s", state_dir, strerror(errno));
        return rc;
    }
    char path[4200];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", state_dir, VV_IDENTITY_FILE) >=
        sizeof(path)) {
        snprintf(err, err_len, "state directory path too long");
        return VV_EINVAL;
    }

    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return create_key(state_dir, path, id, err, err_len);
        int rc = -errno;
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        snprintf(err, err_len, "cannot stat %s: %s", path, strerror(-rc));
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, err_len, "%s is not a regular file", path);
        return VV_EKEY_CORRUPT;
    }
    if (st.st_mode & 077) {
        close(fd);
        snprintf(err, err_len, "%s is readable by group or others (mode %03o); run: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        return VV_EKEY_PERM;
    }
    if (st.st_size != VV_ED25519_SK_BYTES) {
        close(fd);
        snprintf(err, err_len,
                 "%s has %lld bytes, expected %d; it is not a vivimd key (left untouched)", path,
                 (long long)st.st_size, VV_ED25519_SK_BYTES);
        return VV_EKEY_SIZE;
    }
    uint8_t sk[VV_ED25519_SK_BYTES];
    ssize_t n;
    do {
        n = read(fd, sk, sizeof(sk));
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n != (ssize_t)sizeof(sk)) {
        sodium_memzero(sk, sizeof(sk));
        snprintf(err, err_len, "cannot read %s", path);
        return VV_EIO;
    }
    /* The public half must be the one the seed derives; otherwise the file is damaged. */
    uint8_t pk[VV_ED25519_PK_BYTES], check_sk[VV_ED25519_SK_BYTES];
    crypto_sign_seed_keypair(pk, check_sk, sk);
    bool ok = sodium_memcmp(check_sk, sk, sizeof(sk)) == 0;
    sodium_memzero(check_sk, sizeof(check_sk));
    if (!ok) {
        sodium_memzero(sk, sizeof(sk));
        snprintf(err, err_len, "%s is corrupt: its public key does not match its seed", path);
        return VV_EKEY_CORRUPT;
    }
    memcpy(id->secret_key, sk, sizeof(sk));
    memcpy(id->public_key, pk, sizeof(pk));
    sodium_memzero(sk, sizeof(sk));
    finish(id);
    return 0;
}
