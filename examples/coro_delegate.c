/*
 * coro_delegate: one coroutine delegating to another, like Python's
 * `yield from`.
 *
 * weft coroutines are asymmetric: weft_coro_yield always returns control
 * to whoever resumed the coroutine. When the outer coroutine resumes an
 * inner one, the inner one's yields therefore land in the outer one, not
 * in main. To make the inner coroutine's values reach main, the outer one
 * runs a small loop, yield_from() below:
 *
 *     main  --resume(v)-->  outer  --resume(v)-->  inner
 *     main  <--yield(x)--   outer  <--yield(x)--   inner
 *
 * Each value the inner coroutine yields is re-yielded by the outer one,
 * and each value main sends back is forwarded to the inner one, until the
 * inner coroutine returns. Its return value is the result of yield_from,
 * and the outer coroutine then goes on with yields of its own.
 *
 * The values are plain integers carried in the void * slots. main answers
 * every value x it receives with 10 * x. Each coroutine adds up what is
 * sent to it and returns the sum, the outer one including the inner one's
 * result, so what outer returns equals what main sent in total: every sent
 * value reached exactly one coroutine. The indentation of the output shows
 * the nesting depth of the code printing it.
 *
 * The outer coroutine creates and frees the inner one itself, so the
 * inner coroutine never outlives it. (Freeing the outer coroutine while it
 * is suspended inside yield_from would leak the inner one: frames of a
 * freed suspended coroutine are not unwound.)
 *
 * Expected output:
 *   main: start outer with 100
 *     outer: yield 1
 *   main: got 1, send 10
 *     outer: got 10
 *     outer: delegating to inner
 *       inner: started with 100
 *       inner: yield 101
 *   main: got 101, send 1010
 *       inner: got 1010
 *       inner: yield 102
 *   main: got 102, send 1020
 *       inner: got 1020
 *       inner: return 2030
 *     outer: inner returned 2030
 *     outer: yield 2
 *   main: got 2, send 20
 *     outer: got 20
 *     outer: return 2060
 *   main: outer returned 2060, main sent 2060 in total
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

/* Integers travel in the void * slots of resume and yield. */
static void *int_to_ptr(intptr_t v)
{
    return (void *)v;
}

static intptr_t ptr_to_int(void *p)
{
    return (intptr_t)p;
}

static int resume_or_die(const char *who, weft_coro *co, void *in, void **out)
{
    int rc = weft_coro_resume(co, in, out);
    if (rc < 0) {
        fprintf(stderr, "%s: weft_coro_resume: %s\n", who, strerror(-rc));
        exit(EXIT_FAILURE);
    }
    return rc;
}

/*
 * Run sub to completion on behalf of self, the coroutine calling this:
 * every value sub yields is yielded on from self, and every value self is
 * resumed with is sent on to sub. first_in is sub's first `in`, so it
 * becomes sub's arg. Returns sub's return value.
 */
static void *yield_from(weft_coro *self, weft_coro *sub, void *first_in)
{
    void *in = first_in;
    void *val;

    while (resume_or_die("yield_from", sub, in, &val) == 1)
        in = weft_coro_yield(self, val); /* pass val up, take the reply */
    return val; /* resume returned 0: val is sub's return value */
}

static void *inner(weft_coro *co, void *arg)
{
    intptr_t base = ptr_to_int(arg);
    intptr_t total = 0;

    printf("    inner: started with %jd\n", (intmax_t)base);
    for (intptr_t i = 1; i <= 2; i++) {
        printf("    inner: yield %jd\n", (intmax_t)(base + i));
        intptr_t got = ptr_to_int(weft_coro_yield(co, int_to_ptr(base + i)));
        printf("    inner: got %jd\n", (intmax_t)got);
        total += got;
    }
    printf("    inner: return %jd\n", (intmax_t)total);
    return int_to_ptr(total);
}

static void *outer(weft_coro *co, void *arg)
{
    intptr_t total = 0;
    intptr_t got;

    printf("  outer: yield 1\n");
    got = ptr_to_int(weft_coro_yield(co, int_to_ptr(1)));
    printf("  outer: got %jd\n", (intmax_t)got);
    total += got;

    printf("  outer: delegating to inner\n");
    weft_coro *sub = weft_coro_new(inner, 0);
    if (!sub) {
        fprintf(stderr, "outer: weft_coro_new: %s\n", strerror(errno));
        exit(EXIT_FAILURE);
    }
    /* Our own arg is handed down as the inner coroutine's arg. */
    intptr_t sub_result = ptr_to_int(yield_from(co, sub, arg));
    weft_coro_free(sub);
    printf("  outer: inner returned %jd\n", (intmax_t)sub_result);
    total += sub_result;

    printf("  outer: yield 2\n");
    got = ptr_to_int(weft_coro_yield(co, int_to_ptr(2)));
    printf("  outer: got %jd\n", (intmax_t)got);
    total += got;

    printf("  outer: return %jd\n", (intmax_t)total);
    return int_to_ptr(total);
}

int main(void)
{
    weft_coro *co = weft_coro_new(outer, 0);
    if (!co) {
        fprintf(stderr, "main: weft_coro_new: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }

    intptr_t sent = 0;
    void *val;
    printf("main: start outer with 100\n");
    int rc = resume_or_die("main", co, int_to_ptr(100), &val);
    while (rc == 1) {
        intptr_t got = ptr_to_int(val);
        intptr_t reply = 10 * got;
        printf("main: got %jd, send %jd\n", (intmax_t)got, (intmax_t)reply);
        sent += reply;
        rc = resume_or_die("main", co, int_to_ptr(reply), &val);
    }
    printf("main: outer returned %jd, main sent %jd in total\n",
           (intmax_t)ptr_to_int(val), (intmax_t)sent);

    weft_coro_free(co);
    return EXIT_SUCCESS;
}
