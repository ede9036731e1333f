/*
 * Helpers shared by test-sync and test-chan, on top of fiber_test.h: a
 * checked fixture per test case and a spawn that records its failure.
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
#include "fiber_test.h"


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
