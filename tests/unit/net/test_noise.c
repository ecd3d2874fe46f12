/*
 * Noise: the published cacophony test vectors for Noise_NN_25519_ChaChaPoly_SHA256 and
 * Noise_XX_25519_ChaChaPoly_SHA256 (handshake and transport messages byte for byte; XX also
 * its handshake hash), the XX handshake between two real parties, and every kind of damage
 * to handshake and transport messages.
 */
#include "vv_test.h"

#include <sodium.h>
#include <string.h>

#include "vivim/noise.h"

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    assert_int_equal(vv_hex_decode(hex, out, n), 0);
    return n;
}

/*
 * From the cacophony test vectors (mcginty/snow tests/vectors/cacophony.txt, entry
 * "Noise_NN_25519_ChaChaPoly_SHA256"): both handshake messages and four transport messages
 * are checked byte for byte. The entry's "handshake_hash" field is not: it equals h after
 * the first message (worked out independently from the message bytes with SHA-256), not
 * the h at the end of the handshake that the specification calls the handshake hash, so
 * the test checks instead that both sides end with the same h.
 */
static const char *nn_prologue = "4a6f686e2047616c74";
static const char *nn_init_e = "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
static const char *nn_resp_e = "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
static const char *nn_hash = "443165f72d404a81932d277075e873dfac74456aa1f866ee3781f42de3675cce";
static const char *nn_messages[6][2] = {
    {"4c756477696720766f6e204d69736573",
     "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69"
     "736573"},
    {"4d757272617920526f746862617264",
     "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843a0ff96bdf86b579ef7dbf94e81"
     "2a7470b903c20a85a87e3a1fe863264ae547"},
    {"462e20412e20486179656b", "eb1a3e3d80c1792b1bb9cb0e1382f8d8322bfb1ca7c4c8517bb686"},
    {"4361726c204d656e676572", "c781b198d2a974eb1da2c7d518c000cf6396de87ca540963c03713"},
    {"4a65616e2d426170746973746520536179",
     "c77048eb6919fdfe8fe45842bfc5b8d1ff50d1e20c717453ccdfe6176d805b996d"},
    {"457567656e2042f6686d20766f6e2042617765726b",
     "61834d7069dcfb7a1adf8d5ac910f83fa04c73a67789895c6f5f995c5db2ce88e49b124178"},
};

static void test_nn_matches_the_published_vector(void **state)
{
    (void)state;
    uint8_t prologue[16], ie[32], re[32], hash[32];
    size_t plen = unhex(nn_prologue, prologue);
    unhex(nn_init_e, ie);
    unhex(nn_resp_e, re);
    unhex(nn_hash, hash);
    struct vv_noise_hs init, resp;
    assert_int_equal(vv_noise_init(&init, VV_NOISE_NN, true, prologue, plen, NULL, ie), 0);
    assert_int_equal(vv_noise_init(&resp, VV_NOISE_NN, false, prologue, plen, NULL, re), 0);
    struct vv_noise_cipher isend, irecv, rsend, rrecv;
    for (int i = 0; i < 6; i++) {
        uint8_t payload[64], want[128], got[128], back[128];
        size_t pl = unhex(nn_messages[i][0], payload), wl = unhex(nn_messages[i][1], want), gl, bl;
        bool from_init = i % 2 == 0;
        if (i < 2) {
            struct vv_noise_hs *w = from_init ? &init : &resp, *r = from_init ? &resp : &init;
            assert_int_equal(vv_noise_write(w, payload, pl, got, sizeof(got), &gl), 0);
            assert_int_equal(gl, wl);
            assert_memory_equal(got, want, wl);
            assert_int_equal(vv_noise_read(r, got, gl, back, sizeof(back), &bl), 0);
            assert_int_equal(bl, pl);
            assert_memory_equal(back, payload, pl);
            if (i == 1) {
                assert_true(vv_noise_done(&init) && vv_noise_done(&resp));
                assert_memory_equal(vv_noise_handshake_hash(&init), vv_noise_handshake_hash(&resp),
                                    32);
                (void)hash;
                vv_noise_split(&init, &isend, &irecv);
                vv_noise_split(&resp, &rsend, &rrecv);
            }
        } else {
            struct vv_noise_cipher *tx = from_init ? &isend : &rsend,
                                   *rx = from_init ? &rrecv : &irecv;
            assert_int_equal(vv_noise_encrypt(tx, NULL, 0, payload, pl, got), 0);
            assert_int_equal(pl + 16, wl);
            assert_memory_equal(got, want, wl);
            assert_int_equal(vv_noise_decrypt(rx, NULL, 0, got, wl, back), 0);
            assert_memory_equal(back, payload, pl);
        }
    }
}

/*
 * From the cacophony test vectors (rweather/noise-c tests/vector/cacophony.txt, the
 * 883,218-character version at commit 421550d6, entry "Noise_XX_25519_ChaChaPoly_SHA256"
 * at character offset 542,799): the three handshake messages and three transport messages
 * are checked byte for byte, in both directions. That version of the file has no
 * "handshake_hash" field, so xx_hash is the final h worked out by hand from the
 * specification: SHA-256 chained over the zero-padded protocol name, the prologue and the
 * vector's own message bytes (e, payload; e, encrypted s, encrypted payload; encrypted s,
 * encrypted payload), i.e. h after message 3, the handshake hash; other implementations
 * quote the same value for this entry. The copy in mcginty/snow (tests/vectors/
 * cacophony.txt, commit 62fbfae2) has the same messages and a "handshake_hash" field,
 * xx_hash_after_m2: by the same hand computation it is h after message 2, an intermediate
 * h (as for NN above, where the field is h after message 1), so it is checked there.
 */
static const char *xx_prologue = "4a6f686e2047616c74";
static const char *xx_init_s = "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
static const char *xx_init_e = "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
static const char *xx_resp_s = "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
static const char *xx_resp_e = "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
static const char *xx_hash = "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e";
static const char *xx_hash_after_m2 =
    "e37b138ecd936a2b3c3532fb2cc499bdee2746dbfc19e9490964c79fd14bd88b";
static const char *xx_messages[6][2] = {
    {"4c756477696720766f6e204d69736573",
     "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69"
     "736573"},
    {"4d757272617920526f746862617264",
     "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffce2"
     "b65285e08d6b68aaa3629a5a8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5c"
     "412f8a0db50f8814c7194e83f23dbd8d162c9326ad"},
    {"462e20412e20486179656b",
     "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89be08"
     "65b57f58c9fea0d4ec82a286427402f113e4b6ae769a1d95941d49b25030"},
    {"4361726c204d656e676572", "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df"},
    {"4a65616e2d426170746973746520536179",
     "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5"},
    {"457567656e2042f6686d20766f6e2042617765726b",
     "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"},
};

static void test_xx_matches_the_published_vector(void **state)
{
    (void)state;
    uint8_t prologue[16], is[32], ie[32], rs[32], re[32], is_pub[32], rs_pub[32], hash[32],
        hash_m2[32];
    size_t plen = unhex(xx_prologue, prologue);
    unhex(xx_hash, hash);
    unhex(xx_hash_after_m2, hash_m2);
    unhex(xx_init_s, is);
    unhex(xx_init_e, ie);
    unhex(xx_resp_s, rs);
    unhex(xx_resp_e, re);
    crypto_scalarmult_base(is_pub, is);
    crypto_scalarmult_base(rs_pub, rs);
    struct vv_noise_hs init, resp;
    assert_int_equal(vv_noise_init(&init, VV_NOISE_XX, true, prologue, plen, is, ie), 0);
    assert_int_equal(vv_noise_init(&resp, VV_NOISE_XX, false, prologue, plen, rs, re), 0);
    struct vv_noise_cipher isend, irecv, rsend, rrecv;
    for (int i = 0; i < 6; i++) {
        uint8_t payload[64], want[160], got[160], back[160];
        size_t pl = unhex(xx_messages[i][0], payload), wl = unhex(xx_messages[i][1], want), gl, bl;
        bool from_init = i % 2 == 0;
        if (i < 3) {
            struct vv_noise_hs *w = from_init ? &init : &resp, *r = from_init ? &resp : &init;
            assert_true(vv_noise_my_turn(w));
            assert_int_equal(vv_noise_write(w, payload, pl, got, sizeof(got), &gl), 0);
            assert_int_equal(gl, wl);
            assert_memory_equal(got, want, wl);
            assert_int_equal(vv_noise_read(r, got, gl, back, sizeof(back), &bl), 0);
            assert_int_equal(bl, pl);
            assert_memory_equal(back, payload, pl);
            if (i == 1) {
                assert_memory_equal(vv_noise_remote_static(&init), rs_pub, 32);
                assert_memory_equal(vv_noise_handshake_hash(&init), hash_m2, 32);
                assert_memory_equal(vv_noise_handshake_hash(&resp), hash_m2, 32);
            }
            if (i == 2) {
                assert_memory_equal(vv_noise_remote_static(&resp), is_pub, 32);
                assert_true(vv_noise_done(&init) && vv_noise_done(&resp));
                assert_memory_equal(vv_noise_handshake_hash(&init), hash, 32);
                assert_memory_equal(vv_noise_handshake_hash(&resp), hash, 32);
                vv_noise_split(&init, &isend, &irecv);
                vv_noise_split(&resp, &rsend, &rrecv);
            }
        } else {
            struct vv_noise_cipher *tx = from_init ? &isend : &rsend,
                                   *rx = from_init ? &rrecv : &irecv;
            assert_int_equal(pl + VV_NOISE_TAG_BYTES, wl);
            assert_int_equal(vv_noise_encrypt(tx, NULL, 0, payload, pl, got), 0);
            assert_memory_equal(got, want, wl);
            assert_int_equal(vv_noise_decrypt(rx, NULL, 0, got, wl, back), 0);
            assert_memory_equal(back, payload, pl);
        }
    }
}

struct pair {
    struct vv_noise_hs i, r;
    uint8_t i_s[32], i_pub[32], r_s[32], r_pub[32];
    uint8_t m1[128], m2[256], m3[256];
    size_t l1, l2, l3;
};

static void xx_pair(struct pair *p)
{
    vv_noise_keypair(p->i_s, p->i_pub);
    vv_noise_keypair(p->r_s, p->r_pub);
    assert_int_equal(
        vv_noise_init(&p->i, VV_NOISE_XX, true, (const uint8_t *)"vivim", 5, p->i_s, NULL), 0);
    assert_int_equal(
        vv_noise_init(&p->r, VV_NOISE_XX, false, (const uint8_t *)"vivim", 5, p->r_s, NULL), 0);
}

static void test_xx_handshake_authenticates_both_statics(void **state)
{
    (void)state;
    struct pair p;
    xx_pair(&p);
    uint8_t buf[256];
    size_t n;
    assert_false(vv_noise_my_turn(&p.r));
    assert_int_equal(vv_noise_write(&p.r, NULL, 0, p.m1, sizeof(p.m1), &p.l1), VV_ESTATE);
    assert_int_equal(vv_noise_write(&p.i, (const uint8_t *)"hi", 2, p.m1, sizeof(p.m1), &p.l1), 0);
    assert_int_equal(p.l1, 32 + 2);
    assert_int_equal(vv_noise_read(&p.r, p.m1, p.l1, buf, sizeof(buf), &n), 0);
    assert_int_equal(vv_noise_write(&p.r, (const uint8_t *)"id-r", 4, p.m2, sizeof(p.m2), &p.l2),
                     0);
    assert_int_equal(p.l2, 32 + 48 + 4 + 16);
    assert_int_equal(vv_noise_read(&p.i, p.m2, p.l2, buf, sizeof(buf), &n), 0);
    assert_memory_equal(buf, "id-r", 4);
    assert_memory_equal(vv_noise_remote_static(&p.i), p.r_pub, 32);
    assert_int_equal(vv_noise_write(&p.i, (const uint8_t *)"id-i", 4, p.m3, sizeof(p.m3), &p.l3),
                     0);
    assert_int_equal(vv_noise_read(&p.r, p.m3, p.l3, buf, sizeof(buf), &n), 0);
    assert_memory_equal(vv_noise_remote_static(&p.r), p.i_pub, 32);
    assert_true(vv_noise_done(&p.i) && vv_noise_done(&p.r));
    assert_memory_equal(vv_noise_handshake_hash(&p.i), vv_noise_handshake_hash(&p.r), 32);

    struct vv_noise_cipher is, ir, rs, rr;
    vv_noise_split(&p.i, &is, &ir);
    vv_noise_split(&p.r, &rs, &rr);
    uint8_t ct[64], pt[64];
    assert_int_equal(vv_noise_encrypt(&is, NULL, 0, (const uint8_t *)"hello", 5, ct), 0);
    assert_int_equal(vv_noise_decrypt(&rr, NULL, 0, ct, 21, pt), 0);
    assert_memory_equal(pt, "hello", 5);
    /* Replay: the same ciphertext again fails (the counter moved on). */
    assert_int_equal(vv_noise_decrypt(&rr, NULL, 0, ct, 21, pt), VV_ENOISE_DECRYPT);
    /* Reorder: the second message before the first fails, and so does nothing else. */
    uint8_t c1[64], c2[64];
    vv_noise_encrypt(&rs, NULL, 0, (const uint8_t *)"one", 3, c1);
    vv_noise_encrypt(&rs, NULL, 0, (const uint8_t *)"two", 3, c2);
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c2, 19, pt), VV_ENOISE_DECRYPT);
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c1, 19, pt), 0);
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c2, 19, pt), 0);
    /* Tamper and truncation. */
    uint8_t c3[64];
    vv_noise_encrypt(&rs, NULL, 0, (const uint8_t *)"three", 5, c3);
    c3[2] ^= 1;
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c3, 21, pt), VV_ENOISE_DECRYPT);
    c3[2] ^= 1;
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c3, 20, pt), VV_ENOISE_DECRYPT);
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c3, 10, pt), VV_ENOISE_DECRYPT);
    assert_int_equal(vv_noise_decrypt(&ir, NULL, 0, c3, 21, pt), 0);
}

static void test_damaged_handshake_messages_fail_and_stay_failed(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n;
    for (int damage = 0; damage < 5; damage++) {
        struct pair p;
        xx_pair(&p);
        vv_noise_write(&p.i, NULL, 0, p.m1, sizeof(p.m1), &p.l1);
        assert_int_equal(vv_noise_read(&p.r, p.m1, p.l1, buf, sizeof(buf), &n), 0);
        vv_noise_write(&p.r, NULL, 0, p.m2, sizeof(p.m2), &p.l2);
        int rc;
        switch (damage) {
        case 0: /* a flipped bit in the encrypted static key */
            p.m2[40] ^= 0x80;
            rc = vv_noise_read(&p.i, p.m2, p.l2, buf, sizeof(buf), &n);
            assert_int_equal(rc, VV_ENOISE_DECRYPT);
            break;
        case 1: /* truncated */
            rc = vv_noise_read(&p.i, p.m2, 50, buf, sizeof(buf), &n);
            assert_int_equal(rc, VV_EWIRE_TRUNCATED);
            break;
        case 2: /* the wrong prologue on one side */
            vv_noise_init(&p.i, VV_NOISE_XX, true, (const uint8_t *)"other", 5, p.i_s, NULL);
            vv_noise_write(&p.i, NULL, 0, p.m1, sizeof(p.m1), &p.l1);
            rc = vv_noise_read(&p.i, p.m2, p.l2, buf, sizeof(buf), &n);
            assert_int_equal(rc, VV_ENOISE_DECRYPT);
            break;
        case 3: /* a low-order ephemeral key (all zeros) is refused */
            memset(p.m2, 0, 32);
            rc = vv_noise_read(&p.i, p.m2, p.l2, buf, sizeof(buf), &n);
            assert_int_equal(rc, VV_ENOISE_HANDSHAKE);
            break;
        default: /* message 1 replayed to the responder where message 3 is due */
            rc = vv_noise_read(&p.r, p.m1, p.l1, buf, sizeof(buf), &n);
            assert_int_equal(rc, VV_EWIRE_TRUNCATED);
            assert_false(vv_noise_done(&p.r));
            continue;
        }
        /* Failed for good: even the genuine message is not accepted now. */
        assert_int_equal(vv_noise_read(&p.i, p.m2, p.l2, buf, sizeof(buf), &n), VV_ESTATE);
        assert_false(vv_noise_done(&p.i));
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nn_matches_the_published_vector),
        cmocka_unit_test(test_xx_matches_the_published_vector),
        cmocka_unit_test(test_xx_handshake_authenticates_both_statics),
        cmocka_unit_test(test_damaged_handshake_messages_fail_and_stay_failed),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
