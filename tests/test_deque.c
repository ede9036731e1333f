/*
 * The Chase–Lev deque alone (src/sched/deque.c): sequential semantics,
 * then an owner pushing and popping while three thieves steal, with every
 * item accounted for exactly once. Sizes scale with WEFT_TEST_SCALE.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "sched/deque.h"

#define THIEVES 3

static long scale(void)
{
    const char *s = getenv("WEFT_TEST_SCALE");
    long v = s ? atol(s) : 1;
    return v > 0 ? v : 1;
}

/* Items are small integers disguised as pointers; 0 would be NULL. */
static void *item(uintptr_t i) { return (void *)(i + 1); }
static uintptr_t index_of(void *p) { return (uintptr_t)p - 1; }

START_TEST(sequential_order)
{
    struct deque d;
    ck_assert_int_eq(deque_init(&d, 3), 0);
    ck_assert_int_eq(deque_capacity(&d), 8);
    ck_assert_ptr_null(deque_pop(&d));
    void *x;
    ck_assert_int_eq(deque_steal(&d, &x), DEQUE_EMPTY);
    for (uintptr_t i = 0; i < 8; i++)
        ck_assert_int_eq(deque_push(&d, item(i)), 0);
    ck_assert_int_eq(deque_push(&d, item(8)), -1); /* full */
    ck_assert_int_eq(deque_size(&d), 8);
    /* Thieves take the oldest, the owner the newest. */
    ck_assert_int_eq(deque_steal(&d, &x), DEQUE_OK);
    ck_assert_uint_eq(index_of(x), 0);
    ck_assert_uint_eq(index_of(deque_pop(&d)), 7);
    ck_assert_uint_eq(index_of(deque_pop(&d)), 6);
    ck_assert_int_eq(deque_steal(&d, &x), DEQUE_OK);
    ck_assert_uint_eq(index_of(x), 1);
    /* Wrap around the ring. */
    for (uintptr_t i = 100; i < 104; i++)
        ck_assert_int_eq(deque_push(&d, item(i)), 0);
    ck_assert_int_eq(deque_size(&d), 8);
    for (uintptr_t want = 2; want < 6; want++) {
        ck_assert_int_eq(deque_steal(&d, &x), DEQUE_OK);
        ck_assert_uint_eq(index_of(x), want);
    }
    for (uintptr_t want = 103; want >= 100; want--)
        ck_assert_uint_eq(index_of(deque_pop(&d)), want);
    ck_assert_ptr_null(deque_pop(&d));
    ck_assert_int_eq(deque_size(&d), 0);
    deque_destroy(&d);
}
END_TEST

START_TEST(steal_half_moves_half)
{
    struct deque v, t;
    ck_assert_int_eq(deque_init(&v, 6), 0);
    ck_assert_int_eq(deque_init(&t, 6), 0);
    for (uintptr_t i = 0; i < 10; i++)
        ck_assert_int_eq(deque_push(&v, item(i)), 0);
    void *first = deque_steal_half(&v, &t, 32);
    ck_assert_ptr_nonnull(first);
    ck_assert_uint_eq(index_of(first), 0);      /* the oldest, returned */
    ck_assert_int_eq(deque_size(&t), 4);         /* 1, 2, 3, 4 pushed    */
    ck_assert_int_eq(deque_size(&v), 5);
    for (uintptr_t want = 4; want >= 1; want--)
        ck_assert_uint_eq(index_of(deque_pop(&t)), want);
    /* max bounds the batch. */
    first = deque_steal_half(&v, &t, 1);
    ck_assert_uint_eq(index_of(first), 5);
    ck_assert_int_eq(deque_size(&t), 0);
    while (deque_pop(&v))
        ;
    ck_assert_ptr_null(deque_steal_half(&v, &t, 32));
    deque_destroy(&v);
    deque_destroy(&t);
}
END_TEST

/* ---- concurrent --------------------------------------------------------- */

struct shared {
    struct deque     owner;
    uintptr_t        n;
    _Atomic unsigned *taken;   /* per item: how many times it was taken */
    _Atomic int      done;     /* owner finished pushing                */
    _Atomic long     total;
    int              half;     /* thieves use steal-half                */
};

static void take(struct shared *s, void *x)
{
    uintptr_t i = index_of(x);
    ck_assert_uint_lt(i, s->n);
    atomic_fetch_add_explicit(&s->taken[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->total, 1, memory_order_relaxed);
}

static void *thief(void *arg)
{
    struct shared *s = arg;
    struct deque mine;
    ck_assert_int_eq(deque_init(&mine, 8), 0);
    for (;;) {
        int done = atomic_load_explicit(&s->done, memory_order_acquire);
        void *x;
        int got = 0;
        if (s->half) {
            x = deque_steal_half(&s->owner, &mine, 16);
            if (x) {
                take(s, x);
                got = 1;
                while ((x = deque_pop(&mine)))
                    take(s, x);
            }
        } else {
            int r = deque_steal(&s->owner, &x);
            if (r == DEQUE_OK) {
                take(s, x);
                got = 1;
            } else if (r == DEQUE_ABORT) {
                got = 1; /* contended: not empty */
            }
        }
        if (!got && done && deque_size(&s->owner) == 0)
            break;
    }
    deque_destroy(&mine);
    return NULL;
}

static void run_concurrent(int half)
{
    static struct shared s;
    s.n = (uintptr_t)(200000 * scale());
    s.taken = calloc(s.n, sizeof *s.taken);
    ck_assert_ptr_nonnull(s.taken);
    atomic_store(&s.done, 0);
    atomic_store(&s.total, 0);
    s.half = half;
    /* A small ring, so indices wrap thousands of times. */
    ck_assert_int_eq(deque_init(&s.owner, 6), 0);
    pthread_t th[THIEVES];
    for (int i = 0; i < THIEVES; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thief, &s), 0);
    unsigned rng = 12345;
    for (uintptr_t i = 0; i < s.n; i++) {
        while (deque_push(&s.owner, item(i)) != 0) {
            void *x = deque_pop(&s.owner); /* full: the owner works too */
            if (x)
                take(&s, x);
        }
        rng = rng * 1103515245 + 12345;
        if ((rng >> 16) % 3 == 0) {
            void *x = deque_pop(&s.owner);
            if (x)
                take(&s, x);
        }
    }
    atomic_store_explicit(&s.done, 1, memory_order_release);
    void *x;
    while ((x = deque_pop(&s.owner)))
        take(&s, x);
    for (int i = 0; i < THIEVES; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&s.total), (long)s.n);
    for (uintptr_t i = 0; i < s.n; i++)
        ck_assert_msg(atomic_load(&s.taken[i]) == 1, "item %lu taken %u times",
                      (unsigned long)i, atomic_load(&s.taken[i]));
    deque_destroy(&s.owner);
    free(s.taken);
}

START_TEST(owner_and_three_thieves)
{
    run_concurrent(0);
}
END_TEST

START_TEST(owner_and_three_half_thieves)
{
    run_concurrent(1);
}
END_TEST

static Suite *deque_suite(void)
{
    Suite *s = suite_create("deque");
    TCase *tc = tcase_create("sequential");
    tcase_add_test(tc, sequential_order);
    tcase_add_test(tc, steal_half_moves_half);
    suite_add_tcase(s, tc);
    tc = tcase_create("concurrent");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, owner_and_three_thieves);
    tcase_add_test(tc, owner_and_three_half_thieves);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(deque_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
