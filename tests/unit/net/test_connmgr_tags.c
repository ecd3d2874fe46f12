/* Peers on demand: a module tags the peers it needs (vv_env_want_peer); the connection
 * manager dials them at once, re-dials them while tagged, trims them last, and spares every
 * new connection for a grace period. A fake vv_env whose timer the test fires by hand and
 * whose connections come up and go down when the test says (disconnects at once). */
#include "vv_test.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "vivim/connmgr.h"
#include "vivim/wire.h"

#define MAX_DIALS_SEEN 64

struct fake {
    uint64_t now;
    vv_env_timer_cb cb;
    void *arg;
    struct vv_env *env;
    int dials;
    uint8_t dialled[MAX_DIALS_SEEN][VV_NODE_ID_BYTES];
    char last_address[128];
    int disconnects;
};

static uint64_t f_now(void *impl)
{
    return ((struct fake *)impl)->now;
}
static uint64_t f_timer(void *impl, uint64_t d, uint64_t r, vv_env_timer_cb cb, void *arg)
{
    (void)d, (void)r;
    struct fake *f = impl;
    f->cb = cb;
    f->arg = arg;
    return 1;
}
static void f_cancel(void *impl, uint64_t id)
{
    (void)impl, (void)id;
}
/* Small and never zero (a ping nonce must not be 0): jitter and random picks stay near 0. */
static void f_random(void *impl, void *buf, size_t len)
{
    (void)impl;
    memset(buf, 0, len);
    ((uint8_t *)buf)[0] = 1;
}
static int f_send(void *impl, const uint8_t *p, uint8_t ch, const uint8_t *d, size_t n)
{
    (void)impl, (void)p, (void)ch, (void)d, (void)n;
    return 0;
}
/* As the daemon's transport: a dial needs an address. */
static int f_connect(void *impl, const uint8_t *peer, const char *address)
{
    struct fake *f = impl;
    if (address == NULL || address[0] == '\0')
        return VV_ECONN_NOT_CONNECTED;
    if (f->dials < MAX_DIALS_SEEN && peer != NULL)
        memcpy(f->dialled[f->dials], peer, VV_NODE_ID_BYTES);
    f->dials++;
    snprintf(f->last_address, sizeof(f->last_address), "%s", address);
    return 0;
}
static void f_disconnect(void *impl, const uint8_t *peer)
{
    struct fake *f = impl;
    f->disconnects++;
    vv_env_peer_event(f->env, peer, false);
}
static bool f_verify(void *impl, const uint8_t *pk, const uint8_t *m, size_t n, const uint8_t *s)
{
    (void)impl, (void)pk, (void)m, (void)n, (void)s;
    return false;
}
static const struct vv_env_ops ops = {f_now,     f_timer,      f_cancel, f_random, f_send,
                                      f_connect, f_disconnect, f_verify, NULL,     NULL};

struct rig {
    struct fake f;
    struct vv_identity self;
    struct vv_env env;
    struct vv_connmgr *cm;
};

static void rig_init(struct rig *r, uint32_t low, uint32_t high, uint32_t max_known)
{
    memset(r, 0, sizeof(*r));
    r->f.now = 1000;
    r->self.node_id[0] = 0xee;
    r->env = (struct vv_env){.ops = &ops, .impl = &r->f, .identity = &r->self};
    r->f.env = &r->env;
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    cfg.low_water = low;
    cfg.high_water = high;
    if (max_known)
        cfg.max_known_peers = max_known;
    r->cm = vv_connmgr_new(&r->env, &cfg);
}

static void tick(struct rig *r)
{
    r->f.cb(&r->env, r->f.arg);
}

static void node(uint8_t out[VV_NODE_ID_BYTES], int i)
{
    memset(out, 0, VV_NODE_ID_BYTES);
    out[0] = (uint8_t)(i + 1);
    out[1] = 0x5a;
}

static bool connected(struct rig *r, int i)
{
    uint8_t id[VV_NODE_ID_BYTES];
    node(id, i);
    const struct vv_connmgr_peer *p = vv_connmgr_find(r->cm, id);
    return p != NULL && p->connected;
}

/* Peer i connects to us (an inbound connection, or our dial completing). */
static void up(struct rig *r, int i)
{
    uint8_t id[VV_NODE_ID_BYTES];
    node(id, i);
    vv_env_peer_event(&r->env, id, true);
}

static void test_wanted_peer_is_dialled_at_once_and_while_tagged(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 0, 4, 0); /* low water 0: nothing but the tag makes it dial */
    uint8_t b[VV_NODE_ID_BYTES];
    node(b, 1);
    assert_int_equal(vv_env_want_peer(&r.env, b, "10.0.0.2:4747", "crdt", 10), 0);
    assert_int_equal(r.f.dials, 1); /* at once, not at the next tick */
    assert_memory_equal(r.f.dialled[0], b, VV_NODE_ID_BYTES);
    assert_string_equal(r.f.last_address, "10.0.0.2:4747");
    assert_int_equal(vv_connmgr_tagged_count(r.cm), 1);
    /* Wanting it again while the dial is in flight dials nothing more. */
    assert_int_equal(vv_env_want_peer(&r.env, b, NULL, "crdt", 20), 0);
    assert_int_equal(r.f.dials, 1);
    assert_int_equal(vv_connmgr_find(r.cm, b)->tag_weight, 20);

    /* The dial fails: backoff, then a re-dial while the tag is held. */
    vv_env_peer_event(&r.env, b, false);
    const struct vv_connmgr_peer *p = vv_connmgr_find(r.cm, b);
    assert_int_equal(p->failures, 1);
    uint64_t retry = p->next_dial_ms;
    assert_true(retry > r.f.now);
    tick(&r);
    assert_int_equal(r.f.dials, 1);
    r.f.now = retry;
    tick(&r);
    assert_int_equal(r.f.dials, 2);

    /* Connected, then dropped: re-dialled after the backoff. */
    up(&r, 1);
    assert_true(connected(&r, 1));
    vv_env_peer_event(&r.env, b, false);
    r.f.now = vv_connmgr_find(r.cm, b)->next_dial_ms;
    tick(&r);
    assert_int_equal(r.f.dials, 3);

    /* Released: the failed dial is not retried. */
    assert_int_equal(vv_env_release_peer(&r.env, b, "crdt"), 0);
    assert_int_equal(vv_connmgr_tagged_count(r.cm), 0);
    assert_int_equal(vv_connmgr_find(r.cm, b)->n_tags, 0);
    vv_env_peer_event(&r.env, b, false);
    r.f.now = vv_connmgr_find(r.cm, b)->next_dial_ms + 1;
    tick(&r);
    assert_int_equal(r.f.dials, 3);
    /* Releasing what is not held does nothing. */
    assert_int_equal(vv_env_release_peer(&r.env, b, "crdt"), 0);
    vv_connmgr_free(r.cm);
}

static void test_wanted_peer_without_address_is_dialled_when_one_is_learned(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 0, 4, 0);
    uint8_t b[VV_NODE_ID_BYTES];
    node(b, 2);
    assert_int_equal(vv_env_want_peer(&r.env, b, NULL, "crdt", 1), 0);
    assert_int_equal(r.f.dials, 0); /* no address: the transport cannot dial */
    /* Discovery (or the operator) supplies it: dialled at once, the backoff forgotten. */
    assert_int_equal(vv_connmgr_add_peer(r.cm, b, "10.0.0.3:4747", 0), 0);
    assert_int_equal(r.f.dials, 1);
    assert_string_equal(r.f.last_address, "10.0.0.3:4747");
    vv_connmgr_free(r.cm);
}

/* A PEX_RESPONSE from `from` with one entry: node `who` at address. */
static void deliver_pex_entry(struct rig *r, int from, int who, const char *address)
{
    enum { PEX_RESPONSE = 4 };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vv_wire_begin(&pk, (uint16_t)((VV_CHANNEL_CONN << 8) | PEX_RESPONSE), 0);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    uint8_t id[VV_NODE_ID_BYTES], src[VV_NODE_ID_BYTES];
    node(id, who);
    node(src, from);
    msgpack_pack_bin(&pk, VV_NODE_ID_BYTES);
    msgpack_pack_bin_body(&pk, id, VV_NODE_ID_BYTES);
    msgpack_pack_str(&pk, strlen(address));
    msgpack_pack_str_body(&pk, address, strlen(address));
    vv_env_deliver(&r->env, src, VV_CHANNEL_CONN, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_peer_exchange_supplies_the_address_of_a_wanted_peer(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 4, 8, 0); /* short of peers: each neighbour that connects is asked for more */
    uint8_t b[VV_NODE_ID_BYTES], c[VV_NODE_ID_BYTES];
    node(b, 7);
    node(c, 8);
    assert_int_equal(vv_env_want_peer(&r.env, b, NULL, "crdt", 1), 0);
    assert_int_equal(vv_connmgr_add_peer(r.cm, c, NULL, 0), 0); /* known by ID, not wanted */
    /* A host name for B is not taken (a name from a peer is never resolved). */
    up(&r, 0);
    deliver_pex_entry(&r, 0, 7, "evil.example:4747");
    assert_int_equal(r.f.dials, 0);
    assert_string_equal(vv_connmgr_find(r.cm, b)->address, "");
    /* An address for a peer nobody wants changes nothing we know of it, as before. */
    up(&r, 1);
    deliver_pex_entry(&r, 1, 8, "10.0.0.8:4747");
    assert_string_equal(vv_connmgr_find(r.cm, c)->address, "");
    assert_int_equal(r.f.dials, 0);
    /* A numeric address for B is taken, and B is dialled at once. */
    up(&r, 2);
    deliver_pex_entry(&r, 2, 7, "10.0.0.7:4747");
    assert_int_equal(r.f.dials, 1);
    assert_memory_equal(r.f.dialled[0], b, VV_NODE_ID_BYTES);
    assert_string_equal(r.f.last_address, "10.0.0.7:4747");
    vv_connmgr_free(r.cm);
}

static void test_address_book_knows_the_wanted_peer(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 0, 4, 0);
    uint8_t b[VV_NODE_ID_BYTES];
    node(b, 3);
    /* A bootstrap entry with its ID (low water 0: never dialled for its own sake). */
    assert_int_equal(vv_connmgr_add_peer(r.cm, b, "10.0.0.4:4747", VV_PEER_BOOTSTRAP), 0);
    tick(&r);
    assert_int_equal(r.f.dials, 0);
    assert_int_equal(vv_env_want_peer(&r.env, b, NULL, "crdt", 1), 0);
    assert_int_equal(r.f.dials, 1);
    assert_string_equal(r.f.last_address, "10.0.0.4:4747");
    vv_connmgr_free(r.cm);
}

static void test_new_connections_get_a_grace_period(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 2, 4, 0);
    for (int i = 0; i < 3; i++)
        up(&r, i);
    r.f.now += 20000;
    for (int i = 3; i < 6; i++)
        up(&r, i);
    /* Six connected, none with an RTT; nobody is trimmed while all are young. */
    tick(&r);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 0);
    assert_int_equal(vv_connmgr_connected_count(r.cm), 6);
    /* The first three are past the grace period and go; the young three stay, though that
     * leaves more than low water. */
    r.f.now += VV_CONNMGR_GRACE_MS - 20000;
    tick(&r);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 3);
    for (int i = 0; i < 3; i++)
        assert_false(connected(&r, i));
    for (int i = 3; i < 6; i++)
        assert_true(connected(&r, i));
    vv_connmgr_free(r.cm);
}

static void test_a_flooded_node_cuts_the_grace_period_short(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 1, 2, 0);
    for (int i = 0; i < 6; i++)
        up(&r, i);
    uint8_t t[VV_NODE_ID_BYTES];
    node(t, 5);
    assert_int_equal(vv_env_want_peer(&r.env, t, NULL, "crdt", 1), 0);
    /* Six young connections, more than twice high water: spared for a moment (the request
     * a joining node sends on connecting gets there), then trimmed back to twice high
     * water; the tagged one keeps its full grace period. */
    r.f.now += 1000;
    tick(&r);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 0);
    r.f.now += VV_CONNMGR_GRACE_MS / VV_CONNMGR_GRACE_FLOOD_DIVISOR;
    tick(&r);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 2);
    assert_int_equal(vv_connmgr_connected_count(r.cm), VV_CONNMGR_GRACE_OVERFLOW * 2);
    assert_true(connected(&r, 5));
    vv_connmgr_free(r.cm);
}

static void test_untagged_peers_are_trimmed_before_tagged_ones(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 2, 4, 0);
    for (int i = 0; i < 6; i++)
        up(&r, i);
    uint8_t t[VV_NODE_ID_BYTES];
    node(t, 5);
    assert_int_equal(vv_env_want_peer(&r.env, t, NULL, "crdt", 1), 0);
    r.f.now += VV_CONNMGR_GRACE_MS;
    tick(&r);
    /* Six down to low water two: four untagged go, the tagged peer stays. */
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 4);
    assert_int_equal(vv_connmgr_connected_count(r.cm), 2);
    assert_true(connected(&r, 5));
    vv_connmgr_free(r.cm);
}

static void test_tagged_peers_are_trimmed_only_above_high_water_lightest_first(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 1, 3, 0);
    for (int i = 0; i < 5; i++) {
        up(&r, i);
        uint8_t id[VV_NODE_ID_BYTES];
        node(id, i);
        /* Weights 50, 40, 30, 20, 10; peer 0 carries two tags (30 + 20 = 50). */
        if (i == 0) {
            assert_int_equal(vv_env_want_peer(&r.env, id, NULL, "crdt", 30), 0);
            assert_int_equal(vv_env_want_peer(&r.env, id, NULL, "pubsub", 20), 0);
        } else {
            assert_int_equal(vv_env_want_peer(&r.env, id, NULL, "crdt", (uint32_t)(50 - 10 * i)),
                             0);
        }
    }
    assert_int_equal(vv_connmgr_find(r.cm, (uint8_t[VV_NODE_ID_BYTES]){1, 0x5a})->tag_weight, 50);
    r.f.now += VV_CONNMGR_GRACE_MS;
    tick(&r);
    /* Five tagged, high water three: the two lightest go, and no more (not to low water). */
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 2);
    for (int i = 0; i < 3; i++)
        assert_true(connected(&r, i));
    assert_false(connected(&r, 3));
    assert_false(connected(&r, 4));
    /* Not re-dialled while high water is reached (they would be trimmed again). */
    int dials = r.f.dials;
    r.f.now += 600000;
    tick(&r);
    assert_int_equal(r.f.dials, dials);
    vv_connmgr_free(r.cm);
}

static void test_protected_peer_outlasts_tagged_ones(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 0, 1, 0);
    for (int i = 0; i < 3; i++) {
        up(&r, i);
        uint8_t id[VV_NODE_ID_BYTES];
        node(id, i);
        assert_int_equal(vv_env_want_peer(&r.env, id, NULL, "crdt", 100), 0);
    }
    uint8_t p[VV_NODE_ID_BYTES];
    node(p, 3);
    up(&r, 3);
    vv_connmgr_protect(r.cm, p, true);
    r.f.now += VV_CONNMGR_GRACE_MS;
    tick(&r);
    /* Three tagged, high water one: two tagged go; the protected one stays. */
    assert_true(connected(&r, 3));
    assert_int_equal(vv_connmgr_connected_count(r.cm), 2);
    assert_int_equal(vv_connmgr_stats(r.cm)->trimmed, 2);
    vv_connmgr_free(r.cm);
}

static void test_released_peer_is_trimmed_like_any_other(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 1, 3, 0);
    for (int i = 0; i < 4; i++)
        up(&r, i);
    uint8_t id[VV_NODE_ID_BYTES];
    node(id, 0);
    assert_int_equal(vv_env_want_peer(&r.env, id, NULL, "crdt", 1000), 0);
    assert_int_equal(vv_env_release_peer(&r.env, id, "crdt"), 0);
    for (int i = 1; i < 3; i++) {
        uint8_t other[VV_NODE_ID_BYTES];
        node(other, i);
        vv_connmgr_protect(r.cm, other, true);
    }
    r.f.now += VV_CONNMGR_GRACE_MS;
    tick(&r);
    /* Four connected, high water three: the untagged 0 and 3 both go (a peer still tagged
     * would have been kept once the count fell to high water). */
    assert_false(connected(&r, 0));
    assert_false(connected(&r, 3));
    assert_int_equal(vv_connmgr_connected_count(r.cm), 2);
    vv_connmgr_free(r.cm);
}

static void test_tags_are_bounded_and_refusals_counted(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, 0, 4, 8); /* an address book of 8: at most 4 tagged peers */
    uint8_t a[VV_NODE_ID_BYTES];
    node(a, 0);
    char name[VV_CONNMGR_TAG_BYTES];
    for (int k = 0; k < VV_CONNMGR_MAX_TAGS_PER_PEER; k++) {
        snprintf(name, sizeof(name), "mod%d", k);
        assert_int_equal(vv_env_want_peer(&r.env, a, NULL, name, 1), 0);
    }
    assert_int_equal(vv_env_want_peer(&r.env, a, NULL, "onemore", 1), VV_ELIMIT);
    assert_int_equal(vv_connmgr_stats(r.cm)->tags_refused, 1);
    /* A tag it holds may be set again. */
    assert_int_equal(vv_env_want_peer(&r.env, a, NULL, "mod0", 7), 0);
    assert_int_equal(vv_connmgr_find(r.cm, a)->n_tags, VV_CONNMGR_MAX_TAGS_PER_PEER);
    assert_int_equal(vv_connmgr_find(r.cm, a)->tag_weight, VV_CONNMGR_MAX_TAGS_PER_PEER - 1 + 7);

    for (int i = 1; i < 4; i++) {
        uint8_t id[VV_NODE_ID_BYTES];
        node(id, i);
        assert_int_equal(vv_env_want_peer(&r.env, id, NULL, "crdt", 1), 0);
    }
    assert_int_equal(vv_connmgr_tagged_count(r.cm), 4);
    uint8_t e[VV_NODE_ID_BYTES];
    node(e, 4);
    assert_int_equal(vv_env_want_peer(&r.env, e, NULL, "crdt", 1), VV_ELIMIT);
    assert_int_equal(vv_connmgr_stats(r.cm)->tags_refused, 2);
    assert_null(vv_connmgr_find(r.cm, e));
    /* Room again once one is released. */
    uint8_t one[VV_NODE_ID_BYTES];
    node(one, 1);
    vv_env_release_peer(&r.env, one, "crdt");
    assert_int_equal(vv_env_want_peer(&r.env, e, NULL, "crdt", 1), 0);

    /* Tagged entries are not pushed out of a full address book. */
    for (int i = 10; i < 30; i++) {
        uint8_t id[VV_NODE_ID_BYTES];
        node(id, i);
        vv_connmgr_add_peer(r.cm, id, "10.9.9.9:1", 0);
    }
    assert_non_null(vv_connmgr_find(r.cm, e));
    assert_non_null(vv_connmgr_find(r.cm, a));

    /* Malformed requests. */
    assert_int_equal(vv_env_want_peer(&r.env, e, NULL, "", 1), VV_EINVAL);
    assert_int_equal(vv_env_want_peer(&r.env, e, NULL, "two words", 1), VV_EINVAL);
    assert_int_equal(vv_env_want_peer(&r.env, e, NULL, "muchtoolongatagname", 1), VV_EINVAL);
    assert_int_equal(vv_env_want_peer(&r.env, e, NULL, "caf\xc3\xa9", 1), VV_EINVAL);
    assert_int_equal(vv_env_want_peer(&r.env, r.self.node_id, NULL, "crdt", 1), VV_EINVAL);
    vv_connmgr_free(r.cm);
}

static void test_no_manager_no_peers_on_demand(void **state)
{
    (void)state;
    struct fake f = {.now = 1};
    struct vv_identity self = {0};
    struct vv_env env = {.ops = &ops, .impl = &f, .identity = &self};
    f.env = &env;
    uint8_t b[VV_NODE_ID_BYTES];
    node(b, 1);
    assert_int_equal(vv_env_want_peer(&env, b, NULL, "crdt", 1), VV_ESTATE);
    struct vv_connmgr_config cfg;
    vv_connmgr_config_defaults(&cfg);
    struct vv_connmgr *cm = vv_connmgr_new(&env, &cfg);
    assert_int_equal(vv_env_want_peer(&env, b, NULL, "crdt", 1), 0);
    vv_connmgr_free(cm);
    assert_int_equal(vv_env_want_peer(&env, b, NULL, "crdt", 1), VV_ESTATE);
    assert_int_equal(vv_env_release_peer(&env, b, "crdt"), VV_ESTATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted_peer_is_dialled_at_once_and_while_tagged),
        cmocka_unit_test(test_wanted_peer_without_address_is_dialled_when_one_is_learned),
        cmocka_unit_test(test_peer_exchange_supplies_the_address_of_a_wanted_peer),
        cmocka_unit_test(test_address_book_knows_the_wanted_peer),
        cmocka_unit_test(test_new_connections_get_a_grace_period),
        cmocka_unit_test(test_a_flooded_node_cuts_the_grace_period_short),
        cmocka_unit_test(test_untagged_peers_are_trimmed_before_tagged_ones),
        cmocka_unit_test(test_tagged_peers_are_trimmed_only_above_high_water_lightest_first),
        cmocka_unit_test(test_protected_peer_outlasts_tagged_ones),
        cmocka_unit_test(test_released_peer_is_trimmed_like_any_other),
        cmocka_unit_test(test_tags_are_bounded_and_refusals_counted),
        cmocka_unit_test(test_no_manager_no_peers_on_demand),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
