/*
 * Helpers for the suites that run fibers under weft_run (sched, io, sync,
 * chan): expectations recorded inside fibers (Check's asserts must not
 * fire on worker threads), sizes scaled by WEFT_TEST_SCALE, and running a
 * main function under weft_run. A suite may define FIBER_TEST_TSAN_DIV
 * before including this, to shrink its sizes under TSan (default 10);
 * the counts asserted stay exact.
 */
#ifndef WEFT_TESTS_FIBER_TEST_H
#define WEFT_TESTS_FIBER_TEST_H

#include <check.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#include "common/sanitizer.h"
#include "test_util.h"

#ifndef FIBER_TEST_TSAN_DIV
#define FIBER_TEST_TSAN_DIV 10
#endif

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

/* n times WEFT_TEST_SCALE; divided by FIBER_TEST_TSAN_DIV under TSan,
 * whose fiber switches are slow, and by 10 under chaos mode
 * (WEFT_DEBUG_CHAOS), whose stalls make every round slow and whose
 * point is the interleavings, not the volume. */
static inline long sized(long n)
{
    n *= test_scale();
#if WEFT__TSAN
    n /= FIBER_TEST_TSAN_DIV;
#endif
    const char *chaos = getenv("WEFT_DEBUG_CHAOS");
    if (chaos && *chaos)
        n /= 10;
    return n > 0 ? n : 1;
}

/* Run main_fn on `workers` workers (0: default) and assert success. */
static inline void run(unsigned workers, void (*main_fn)(void *), void *arg)
{
    weft_config c;
    weft_config_init(&c);
    c.workers = workers;
    ck_assert_int_eq(weft_run(&c, main_fn, arg), 0);
    CHECK_EXPECTATIONS();
}

/* Overwrite (and read back) the stack just below the caller's frame,
 * where a frame just left was: a late write into it by the library shows
 * up as a changed word (returns 0), a late read sees garbage. */
static __attribute__((noinline, unused)) int scribble_below(uint64_t seed)
{
    volatile uint64_t words[512];
    for (size_t i = 0; i < 512; i++)
        words[i] = seed + i;
    int ok = 1;
    for (size_t i = 0; i < 512; i++)
        ok &= words[i] == seed + i;
    return ok;
}

static inline void fixture_setup(void)
{
    atomic_store(&expect_failed, 0);
    expect_where[0] = 0;
}

#endif
