/* Node identity: created once with mode 0600, reloaded identically, bad files refused intact. */
#include "vv_test.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vivim/identity.h"

struct fixture {
    char dir[64];
    char key[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/vv-identity-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->key, sizeof(f->key), "%s/%s", f->dir, VV_IDENTITY_FILE);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char tmp[160];
    unlink(f->key);
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->key);
    unlink(tmp);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void file_bytes(const char *path, uint8_t *buf, size_t len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(buf, 1, len, fp), len);
    fclose(fp);
}

static void test_first_start_creates_0600_key_and_node_id_is_sha256_of_pk(void **state)
{
    struct fixture *f = *state;
    struct vv_identity id;
    char err[256];
    assert_int_equal(vv_identity_load_or_create(f->dir, &id, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(f->key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, VV_ED25519_SK_BYTES);

    uint8_t expect[32];
    crypto_hash_sha256(expect, id.public_key, sizeof(id.public_key));
    assert_memory_equal(id.node_id, expect, 32);
    assert_int_equal(strlen(id.node_id_hex), 64);
    for (const char *p = id.node_id_hex; *p; p++)
        assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));

    /* The key signs, and the signature verifies under the public key. */
    uint8_t sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const uint8_t *)"m", 1, id.secret_key);
    assert_int_equal(crypto_sign_verify_detached(sig, (const uint8_t *)"m", 1, id.public_key), 0);
    vv_identity_clear(&id);
}

static void test_second_start_loads_the_same_identity(void **state)
{
    struct fixture *f = *state;
    struct vv_identity a, b;
    char err[256];
    assert_int_equal(vv_identity_load_or_create(f->dir, &a, err, sizeof(err)), 0);
    uint8_t before[64];
    file_bytes(f->key, before, 64);
    assert_int_equal(vv_identity_load_or_create(f->dir, &b, err, sizeof(err)), 0);
    assert_string_equal(a.node_id_hex, b.node_id_hex);
    uint8_t after[64];
    file_bytes(f->key, after, 64);
    assert_memory_equal(before, after, 64);
}

static void test_group_readable_key_is_refused_and_left_alone(void **state)
{
    struct fixture *f = *state;
    struct vv_identity id;
    char err[512];
    assert_int_equal(vv_identity_load_or_create(f->dir, &id, err, sizeof(err)), 0);
    assert_int_equal(chmod(f->key, 0640), 0);
    assert_int_equal(vv_identity_load_or_create(f->dir, &id, err, sizeof(err)), VV_EKEY_PERM);
    assert_non_null(strstr(err, "chmod 600"));
    struct stat st;
    assert_int_equal(stat(f->key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
}

static void test_wrong_size_key_is_refused_never_overwritten(void **state)
{
    struct fixture *f = *state;
    int fd = open(f->key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "short", 5), 5);
    close(fd);
    struct vv_identity id;
    char err[512];
    assert_int_equal(vv_identity_load_or_create(f->dir, &id, err, sizeof(err)), VV_EKEY_SIZE);
    assert_non_null(strstr(err, "has 5 bytes, expected 64"));
    uint8_t b[5];
    file_bytes(f->key, b, 5);
    assert_memory_equal(b, "short", 5);
}

static void test_key_whose_halves_disagree_is_corrupt(void **state)
{
    struct fixture *f = *state;
    struct vv_identity id;
    char err[512];
    assert_int_equal(vv_identity_load_or_create(f->dir, &id, err, sizeof(err)), 0);
    uint8_t sk[64];
    file_bytes(f->key, sk, 64);
    sk[40] ^= 1; /* flip a bit of the public half */
    int fd = open(f->key, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, sk, 64), 64);
    close(fd);
    assert_int_equal(vv_identity_load_or_create(f->dir, &id, err, sizeof(err)), VV_EKEY_CORRUPT);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_first_start_creates_0600_key_and_node_id_is_sha256_of_pk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_start_loads_the_same_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_readable_key_is_refused_and_left_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_size_key_is_refused_never_overwritten, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_key_whose_halves_disagree_is_corrupt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
