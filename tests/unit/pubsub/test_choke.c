/*
 * Choke selection (vv_pubsub_choke_select, pubsub_core.h): how many links stay unchoked,
 * which ones (credit, with hysteresis), and that a link delivering nothing is swapped out
 * while messages flow.
 */
#include "vv_test.h"

#include <string.h>

#include "vivim/pubsub_core.h"

static uint32_t first_choice(void *arg, uint32_t bound)
{
    (void)bound;
    (*(int *)arg)++;
    return 0;
}

static uint32_t unchoked_count(const bool *choked, uint32_t n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        k += !choked[i];
    return k;
}

static void test_new_links_are_choked_down_to_the_best_two(void **state)
{
    (void)state;
    /* Six fresh links (all unchoked, as a new link is): the two best credited stay. */
    struct vv_pubsub_choke_link l[6] = {{0, false}, {3, false}, {1, false},
                                        {5, false}, {0, false}, {2, false}};
    bool choked[6];
    int calls = 0;
    assert_int_equal(vv_pubsub_choke_select(2, l, 6, false, first_choice, &calls, choked), 4);
    assert_int_equal(unchoked_count(choked, 6), 2);
    assert_false(choked[3]);
    assert_false(choked[1]);
    /* No credit at all: the first links stay (ties go to the lower index). */
    struct vv_pubsub_choke_link z[4] = {{0, false}, {0, false}, {0, false}, {0, false}};
    assert_int_equal(vv_pubsub_choke_select(2, z, 4, false, first_choice, &calls, choked), 2);
    assert_false(choked[0]);
    assert_false(choked[1]);
    assert_true(choked[2] && choked[3]);
    assert_int_equal(calls, 0);
}

static void test_a_lost_unchoked_link_is_replaced_by_the_best_choked(void **state)
{
    (void)state;
    struct vv_pubsub_choke_link l[4] = {{4, false}, {1, true}, {2, true}, {0.5, true}};
    bool choked[4];
    int calls = 0;
    assert_int_equal(vv_pubsub_choke_select(2, l, 4, false, first_choice, &calls, choked), 1);
    assert_false(choked[0]);
    assert_false(choked[2]);
    assert_true(choked[1] && choked[3]);
    /* Fewer links than places: all unchoked. */
    assert_int_equal(vv_pubsub_choke_select(5, l, 4, false, first_choice, &calls, choked), 3);
    assert_int_equal(unchoked_count(choked, 4), 4);
}

static void test_a_faster_choked_link_takes_a_place_only_by_a_margin(void **state)
{
    (void)state;
    bool choked[3];
    int calls = 0;
    /* 5 > 1.5 * 2 + 1: swapped. */
    struct vv_pubsub_choke_link a[3] = {{10, false}, {2, false}, {5, true}};
    assert_int_equal(vv_pubsub_choke_select(2, a, 3, false, first_choice, &calls, choked), 2);
    assert_true(choked[1]);
    assert_false(choked[2]);
    /* 4 is not > 1.5 * 2 + 1: kept as it is (no flapping between equals). */
    struct vv_pubsub_choke_link b[3] = {{10, false}, {2, false}, {4, true}};
    assert_int_equal(vv_pubsub_choke_select(2, b, 3, false, first_choice, &calls, choked), 0);
    assert_false(choked[1]);
    assert_true(choked[2]);
}

static void test_an_idle_unchoked_link_is_swapped_while_messages_flow(void **state)
{
    (void)state;
    /* Link 1 is unchoked but brought nothing: while messages flow it goes, and a random
     * choked link (here the first, by the callback) takes its place. */
    struct vv_pubsub_choke_link l[4] = {{8, false}, {0.1, false}, {0.2, true}, {0, true}};
    bool choked[4];
    int calls = 0;
    assert_int_equal(vv_pubsub_choke_select(2, l, 4, true, first_choice, &calls, choked), 2);
    assert_int_equal(calls, 1);
    assert_true(choked[1]);
    assert_false(choked[2]);
    assert_int_equal(unchoked_count(choked, 4), 2);
    /* Idle topic: nothing to judge by, nothing changes. */
    assert_int_equal(vv_pubsub_choke_select(2, l, 4, false, first_choice, &calls, choked), 0);
}

static void test_zero_unchoked_turns_choking_off(void **state)
{
    (void)state;
    struct vv_pubsub_choke_link l[3] = {{1, true}, {0, false}, {2, true}};
    bool choked[3];
    int calls = 0;
    assert_int_equal(vv_pubsub_choke_select(0, l, 3, true, first_choice, &calls, choked), 2);
    assert_int_equal(unchoked_count(choked, 3), 3);
    assert_int_equal(calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_links_are_choked_down_to_the_best_two),
        cmocka_unit_test(test_a_lost_unchoked_link_is_replaced_by_the_best_choked),
        cmocka_unit_test(test_a_faster_choked_link_takes_a_place_only_by_a_margin),
        cmocka_unit_test(test_an_idle_unchoked_link_is_swapped_while_messages_flow),
        cmocka_unit_test(test_zero_unchoked_turns_choking_off),
    };
    return cmocka_run_group_tests(tests, vv_test_group_setup, NULL);
}
