/*
 * test-coro: the weft_coro_* API.
 *
 * Every status transition, resume/yield/return values, every misuse
 * error, nesting, resumption from another thread, overflow reports, and
 * create/free cycles that must not leak stacks.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#include "ctx/ctx.h"

#include "test_util.h"

#define P(x) ((void *)(intptr_t)(x))
#define I(p) ((intptr_t)(p))

/* ---- statuses and values ---------------------------------------------- */

static int status_inside;

static void *echo_twice(weft_coro *co, void *arg)
{
    status_inside = weft_coro_status(co);
    void *a = weft_coro_yield(co, P(I(arg) + 1));
    void *b = weft_coro_yield(co, P(I(a) * 10));
    return P(I(b) + 1000);
}

START_TEST(status_transitions_and_values)
{
    weft_coro *co = weft_coro_new(echo_twice, 0);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_CREATED);
    void *out = NULL;
    ck_assert_int_eq(weft_coro_resume(co, P(5), &out), 1);
    ck_assert_int_eq(status_inside, WEFT_CORO_RUNNING);
    ck_assert_int_eq(I(out), 6);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_SUSPENDED);
    ck_assert_int_eq(weft_coro_resume(co, P(7), &out), 1);
    ck_assert_int_eq(I(out), 70);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_SUSPENDED);
    ck_assert_int_eq(weft_coro_resume(co, P(3), &out), 0);
    ck_assert_int_eq(I(out), 1003);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_DEAD);
    /* A dead coroutine cannot be resumed, and out is left alone. */
    out = P(-1);
    ck_assert_int_eq(weft_coro_resume(co, NULL, &out), -EINVAL);
    ck_assert_ptr_eq(out, P(-1));
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_DEAD);
    weft_coro_free(co);
}
END_TEST

static void *return_at_once(weft_coro *co, void *arg)
{
    (void)co;
    return arg;
}

START_TEST(return_without_yield_and_null_out)
{
    weft_coro *co = weft_coro_new(return_at_once, 64 * 1024);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(weft_coro_resume(co, P(9), NULL), 0);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_DEAD);
    weft_coro_free(co);
}
END_TEST

/* ---- misuse ---------------------------------------------------------------- */

static int self_resume_rc, outer_yield_errno;
static void *outer_yield_ret;

static void *resumes_itself(weft_coro *co, void *arg)
{
    (void)arg;
    self_resume_rc = weft_coro_resume(co, NULL, NULL);
    return NULL;
}

START_TEST(misuse_is_rejected)
{
    errno = 0;
    ck_assert_ptr_null(weft_coro_new(NULL, 0));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(weft_coro_new(return_at_once, (size_t)1 << 40));
    ck_assert_int_eq(errno, EINVAL);

    ck_assert_int_eq(weft_coro_resume(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(weft_coro_status(NULL), -EINVAL);
    weft_coro_free(NULL);

    /* Resuming a running coroutine (itself). */
    weft_coro *co = weft_coro_new(resumes_itself, 0);
    ck_assert_int_eq(weft_coro_resume(co, NULL, NULL), 0);
    ck_assert_int_eq(self_resume_rc, -EINVAL);
    weft_coro_free(co);

    /* Yielding from outside any coroutine, or a coroutine that is not
     * running, does nothing and says EINVAL. */
    co = weft_coro_new(echo_twice, 0);
    errno = 0;
    ck_assert_ptr_null(weft_coro_yield(co, P(1)));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_CREATED);
    errno = 0;
    ck_assert_ptr_null(weft_coro_yield(NULL, P(1)));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(weft_coro_resume(co, P(1), NULL), 1);
    errno = 0;
    ck_assert_ptr_null(weft_coro_yield(co, P(1))); /* suspended, not running */
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_SUSPENDED);
    weft_coro_free(co); /* freeing a suspended one is allowed */
}
END_TEST

/* Freeing a running coroutine (itself, or its resumer) is refused: nothing
 * is freed, errno says EBUSY, and the coroutine carries on. */
static int free_self_errno, free_self_status;

static void *frees_itself(weft_coro *co, void *arg)
{
    (void)arg;
    errno = 0;
    weft_coro_free(co);
    free_self_errno = errno;
    free_self_status = weft_coro_status(co);
    return weft_coro_yield(co, P(5));
}

START_TEST(free_while_running_is_refused)
{
    weft_coro *co = weft_coro_new(frees_itself, 0);
    ck_assert_ptr_nonnull(co);
    void *out = NULL;
    ck_assert_int_eq(weft_coro_resume(co, NULL, &out), 1);
    ck_assert_int_eq(free_self_errno, EBUSY);
    ck_assert_int_eq(free_self_status, WEFT_CORO_RUNNING);
    ck_assert_ptr_eq(out, P(5));
    ck_assert_int_eq(weft_coro_resume(co, P(6), &out), 0);
    ck_assert_ptr_eq(out, P(6));
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_DEAD);
    /* Dead: resume refused, free allowed. */
    ck_assert_int_eq(weft_coro_resume(co, NULL, &out), -EINVAL);
    weft_coro_free(co);
}
END_TEST

/* ---- nesting ---------------------------------------------------------------- */

static weft_coro *outer_co;
static int inner_resume_outer_rc;

static void *inner_fn(weft_coro *co, void *arg)
{
    /* The outer coroutine is running (it resumed us): not resumable, and
     * we cannot yield on its behalf. */
    inner_resume_outer_rc = weft_coro_resume(outer_co, NULL, NULL);
    errno = 0;
    outer_yield_ret = weft_coro_yield(outer_co, P(99));
    outer_yield_errno = errno;
    for (intptr_t i = I(arg); i < I(arg) + 3; i++)
        weft_coro_yield(co, P(i));
    return P(-7);
}

/* Re-yields everything the inner coroutine yields (Python's yield from),
 * then yields the inner's return value. */
static void *outer_fn(weft_coro *co, void *arg)
{
    weft_coro *inner = weft_coro_new(inner_fn, 0);
    ck_assert_ptr_nonnull(inner);
    void *v;
    int rc;
    ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_RUNNING);
    while ((rc = weft_coro_resume(inner, arg, &v)) == 1) {
        ck_assert_int_eq(weft_coro_status(co), WEFT_CORO_RUNNING);
        weft_coro_yield(co, v);
    }
    ck_assert_int_eq(rc, 0);
    weft_coro_free(inner);
    weft_coro_yield(co, v);
    return P(1234);
}

START_TEST(nesting_like_yield_from)
{
    outer_co = weft_coro_new(outer_fn, 0);
    ck_assert_ptr_nonnull(outer_co);
    intptr_t got[8];
    int n = 0, rc;
    void *v;
    while ((rc = weft_coro_resume(outer_co, P(100), &v)) == 1) {
        ck_assert_int_lt(n, 8);
        got[n++] = I(v);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(I(v), 1234);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(got[0], 100);
    ck_assert_int_eq(got[1], 101);
    ck_assert_int_eq(got[2], 102);
    ck_assert_int_eq(got[3], -7);
    ck_assert_int_eq(inner_resume_outer_rc, -EINVAL);
    ck_assert_ptr_null(outer_yield_ret);
    ck_assert_int_eq(outer_yield_errno, EINVAL);
    weft_coro_free(outer_co);
}
END_TEST

/* ---- other threads ---------------------------------------------------------- */

static void *counter_fn(weft_coro *co, void *arg)
{
    intptr_t sum = I(arg);
    for (;;) {
        void *in = weft_coro_yield(co, P(sum));
        if (!in)
            return P(-sum);
        sum += I(in);
    }
}

struct resume_job {
    weft_coro *co;
    intptr_t in, out;
    int rc;
};

static void *resume_on_thread(void *p)
{
    struct resume_job *j = p;
    void *out;
    j->rc = weft_coro_resume(j->co, P(j->in), &out);
    j->out = I(out);
    return NULL;
}

START_TEST(resumed_from_other_threads)
{
    weft_coro *co = weft_coro_new(counter_fn, 0);
    ck_assert_ptr_nonnull(co);
    intptr_t want = 0;
    /* Alternate between this thread and fresh threads; pthread_join
     * orders each hand-over. */
    for (int i = 1; i <= 20; i++) {
        struct resume_job j = { co, i, 0, 0 };
        want += i;
        if (i % 2) {
            pthread_t t;
            ck_assert_int_eq(pthread_create(&t, NULL, resume_on_thread, &j), 0);
            ck_assert_int_eq(pthread_join(t, NULL), 0);
        } else {
            resume_on_thread(&j);
        }
        ck_assert_int_eq(j.rc, 1);
        ck_assert_int_eq(j.out, want);
    }
    struct resume_job end = { co, 0, 0, 0 };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, resume_on_thread, &end), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(end.rc, 0);
    ck_assert_int_eq(end.out, -want);
    weft_coro_free(co);
}
END_TEST

/* ---- ids, names, lifetimes -------------------------------------------------- */

START_TEST(ids_are_unique_and_names_copied)
{
    weft_coro *a = weft_coro_new(return_at_once, 0);
    weft_coro *b = weft_coro_new(return_at_once, 0);
    ck_assert_uint_ne(weft_coro_id(a), 0);
    ck_assert_uint_gt(weft_coro_id(b), weft_coro_id(a));
    ck_assert_uint_eq(weft_coro_id(NULL), 0);
    char name[64];
    snprintf(name, sizeof name, "a-rather-long-name-that-will-be-truncated-somewhere");
    ck_assert_int_eq(weft_coro_set_name(a, name), 0);
    name[0] = 'X'; /* the coroutine keeps its own copy */
    ck_assert_int_eq(weft_coro_set_name(b, NULL), 0);
    ck_assert_int_eq(weft_coro_set_name(NULL, "x"), -EINVAL);
    weft_coro_free(a);
    weft_coro_free(b);
}
END_TEST

static void *yield_forever(weft_coro *co, void *arg)
{
    while (arg != P(-1))
        arg = weft_coro_yield(co, arg);
    return NULL;
}

START_TEST(create_free_cycles_do_not_leak)
{
    struct weft__stack_stats before, after;
    weft__stack_stats(&before);
    long n = 100000 * test_scale();
    if (skip_under_valgrind())
        n = 5000;
    if (WEFT__TSAN)
        n /= 5; /* a TSan fiber is costly to make; the checks are the same */
    for (long i = 0; i < n; i++) {
        weft_coro *co = weft_coro_new(i % 3 == 0 ? return_at_once : yield_forever, 0);
        ck_assert_ptr_nonnull(co);
        switch (i % 3) {
        case 0: /* run to completion: the stack goes back at death */
            ck_assert_int_eq(weft_coro_resume(co, P(i), NULL), 0);
            break;
        case 1: /* freed while suspended */
            ck_assert_int_eq(weft_coro_resume(co, P(i), NULL), 1);
            break;
        default: /* freed before it ever ran */
            break;
        }
        weft_coro_free(co);
    }
    weft__stack_stats(&after);
    /* Nothing outstanding but what the pools keep. */
    ck_assert_uint_le(after.mapped - after.pooled, before.mapped - before.pooled);
    ck_assert_uint_le(after.mapped, before.mapped + 16 + 1024);
}
END_TEST

/* ---- overflow ---------------------------------------------------------------- */

DEFINE_RUNAWAY(runaway, 256)

static void *overflow_fn(weft_coro *co, void *arg)
{
    (void)co;
    (void)arg;
    return P(runaway(0));
}

static void child_coro_overflow(void)
{
    weft_coro *co = weft_coro_new(overflow_fn, 32 * 1024);
    if (!co)
        _exit(3);
    weft_coro_set_name(co, "deep thought");
    char id[32];
    snprintf(id, sizeof id, "%llu\n", (unsigned long long)weft_coro_id(co));
    (void)!write(2, id, strlen(id));
    weft_coro_resume(co, NULL, NULL);
    _exit(5);
}

START_TEST(overflow_names_the_coroutine)
{
    if (skip_under_valgrind())
        return;
#if WEFT__ASAN
    return; /* ASan reports stack overflows itself */
#endif
    struct child_result r = run_in_child(child_coro_overflow);
    ck_assert_msg(r.signaled && r.sig == SIGABRT, "sig=%d status=%d err=%s", r.sig, r.status, r.err);
    unsigned long long id = strtoull(r.err, NULL, 10);
    char want[128];
    snprintf(want, sizeof want,
             "\nweft: stack overflow in coroutine %llu 'deep thought' (stack 32768 bytes)\n", id);
    ck_assert_msg(strstr(r.err, want) != NULL, "stderr: %s", r.err);
}
END_TEST

static Suite *coro_suite(void)
{
    Suite *s = suite_create("coro");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, status_transitions_and_values);
    tcase_add_test(tc, return_without_yield_and_null_out);
    tcase_add_test(tc, misuse_is_rejected);
    tcase_add_test(tc, free_while_running_is_refused);
    tcase_add_test(tc, nesting_like_yield_from);
    tcase_add_test(tc, resumed_from_other_threads);
    tcase_add_test(tc, ids_are_unique_and_names_copied);
    suite_add_tcase(s, tc);
    tc = tcase_create("lifetime");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, create_free_cycles_do_not_leak);
    tcase_add_test(tc, overflow_names_the_coroutine);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(coro_suite)
