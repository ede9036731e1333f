/*
 * coro_averager: a coroutine that keeps a running average.
 *
 * The averager's state (count and sum) lives in ordinary local variables
 * on its own stack and survives between resumes, where a plain callback
 * would need a context struct to carry it.
 *
 *   - Every resume sends one value (a pointer to a double that main owns).
 *     The first one arrives as the function's `arg`, every later one as
 *     the return value of weft_coro_yield, so no priming resume is needed.
 *   - After each value the averager yields the running average, as a
 *     pointer to a double in its own frame. That pointer is valid while the
 *     averager is suspended (its stack is intact) and main reads it at
 *     once, before resuming again.
 *   - A NULL value is the sentinel: the averager returns a struct result
 *     {count, average}. The result is malloc'd, since the coroutine's stack
 *     is released when it returns; main frees it.
 *
 * Expected output:
 *   send 10.00 -> average 10.00
 *   send 20.00 -> average 15.00
 *   send 30.00 -> average 20.00
 *   send 5.00 -> average 16.25
 *   send 7.50 -> average 14.50
 *   send end -> count 5, average 14.50
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

struct avg_result {
    int    count;
    double average;
};

static void *averager(weft_coro *co, void *arg)
{
    const double *value = arg;
    int count = 0;
    double sum = 0.0;
    double average = 0.0;

    while (value) {
        count++;
        sum += *value;
        average = sum / count;
        /* Report the average and wait for the next value. */
        value = weft_coro_yield(co, &average);
    }

    struct avg_result *res = malloc(sizeof *res);
    if (!res) {
        fprintf(stderr, "averager: out of memory\n");
        exit(EXIT_FAILURE);
    }
    res->count = count;
    res->average = average; /* 0 when no value was ever sent */
    return res;
}

int main(void)
{
    const double values[] = { 10.0, 20.0, 30.0, 5.0, 7.5 };
    enum { NVALUES = sizeof values / sizeof values[0] };

    weft_coro *co = weft_coro_new(averager, 0);
    if (!co) {
        fprintf(stderr, "weft_coro_new: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }

    for (int i = 0; i < NVALUES; i++) {
        void *out;
        /* The cast drops const only to fit void *; the averager only reads. */
        int rc = weft_coro_resume(co, (void *)&values[i], &out);
        if (rc != 1) {
            fprintf(stderr, "weft_coro_resume: %s\n",
                    rc < 0 ? strerror(-rc) : "averager returned early");
            return EXIT_FAILURE;
        }
        printf("send %.2f -> average %.2f\n", values[i], *(const double *)out);
    }

    void *out;
    int rc = weft_coro_resume(co, NULL, &out);
    if (rc != 0) {
        fprintf(stderr, "weft_coro_resume: %s\n",
                rc < 0 ? strerror(-rc) : "averager ignored the sentinel");
        return EXIT_FAILURE;
    }
    struct avg_result *res = out;
    printf("send end -> count %d, average %.2f\n", res->count, res->average);

    free(res);
    weft_coro_free(co);
    return EXIT_SUCCESS;
}
