/*
 * Helpers shared by test-sync and test-chan: expectations recorded inside
 * fibers (Check's asserts must not fire on worker threads), sizes scaled
 * by WEFT_TEST_SCALE, and running a main function under weft_run.
 */
#ifndef WEFT_TESTS_SYNC_TEST_H
#define WEFT_TESTS_SYNC_TEST_H

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "common/sanitizer.h"

static _Atomic int expect_failed;
static char expect_where[256];

#define EXPECT(cond)                                                          \
    do {                                                                      \
        if (!(cond) && !atomic_exchange(&expect_failed, 1))                   \
            snprintf(expect_where, sizeof expect_where, "%s:%d: %s",          \
                     __FILE__, __LINE__, #cond);                              \
    } while (0)

#define CHECK_EXPECTATIONS() \
    ck_assert_msg(!atomic_load(&expect_failed), "in a fiber: %s", expect_where)

/* n times WEFT_TEST_SCALE; a tenth under TSan, whose fiber switches are
 * slow. Counts asserted stay exact. */
static inline long sized(long n)
{
    const char *s = getenv("WEFT_TEST_SCALE");
    long v = s ? atol(s) : 1;
    n *= v > 0 ? v : 1;
#if WEFT__TSAN
    n /= 10;
#endif
    return n > 0 ? n : 1;
}

/* Run main_fn on `workers` workers (0: all) and assert success. */
static inline void run(unsigned workers, void (*main_fn)(void *), void *arg)
{
    weft_config c;
    weft_config_init(&c);
    c.workers = workers;
    ck_assert_int_eq(weft_run(&c, main_fn, arg), 0);
    CHECK_EXPECTATIONS();
}

static inline void fixture_setup(void)
{
    atomic_store(&expect_failed, 0);
    expect_where[0] = 0;
}

static inline void fixture_teardown(void)
{
    ck_assert_uint_eq(weft_workers(), 0);
}

static inline TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 240);
    suite_add_tcase(s, tc);
    return tc;
}

static inline weft_fiber *spawn(weft_fn fn, void *arg)
{
    weft_fiber *f = weft_spawn(fn, arg);
    EXPECT(f != NULL);
    return f;
}

static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
