/*
 * peer.h - the driver shared by the C and C++ peer programs (Boost.Fiber,
 * TBB, OpenMP): argument parsing, warm-up and repetitions, and the one
 * output line, so every peer measures and reports the same way.
 *
 * Usage of a peer: peer-<impl> <bench> [-w N] [-n SIZE]
 *
 * The worker count comes from -w, else WEFT_WORKERS, else the number of
 * online CPUs. -n changes the problem size (fib's n, skynet's leaf count,
 * a count of fibers, switches or round trips) so tests can run small.
 * One warm-up run, then PEER_REPS measured runs; the line printed is
 *
 *   bench=<name> impl=<impl> workers=<N> value=<best> unit=<u> median=<median>
 *
 * with n=<SIZE> appended when -n changed the size. A benchmark checks its
 * own result and calls peer_fail() on a wrong one, which exits with 1.
 *
 * Header-only on purpose: each peer is one program built from one source.
 */
#ifndef WEFT_BENCH_PEER_H
#define WEFT_BENCH_PEER_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PEER_REPS 5

/* "boost-fiber", "tbb", ...: set by peer_main, names the program in errors. */
static const char *peer_impl = "?";

struct peer_bench {
    const char *name;
    const char *unit;        /* "ms" for whole-run time, "ns" per unit of work */
    long long default_size;
    int one_worker;          /* the definition fixes the worker count at 1 */
    /* Runs the work once at size and returns the figure in unit. */
    double (*run)(long long size);
};

struct peer_hooks {
    /* Before the first run, with the final worker count; may be NULL. */
    void (*setup)(int workers);
    /* After the last run; may be NULL. */
    void (*teardown)(void);
};

static inline double peer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2), noreturn))
static inline void peer_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "peer-%s: ", peer_impl);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static inline long long peer_parse_positive(const char *what, const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1)
        peer_fail("%s must be a positive integer, not '%s'", what, s);
    return v;
}

static inline int peer_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline void peer_usage(const char *impl, const struct peer_bench *benches,
                              size_t nbench)
{
    fprintf(stderr, "usage: peer-%s ", impl);
    for (size_t i = 0; i < nbench; i++)
        fprintf(stderr, "%s%s", i ? "|" : "", benches[i].name);
    fputs(" [-w N] [-n SIZE]\n", stderr);
    exit(2);
}

static inline int peer_main(int argc, char **argv, const char *impl,
                            const struct peer_bench *benches, size_t nbench,
                            struct peer_hooks hooks)
{
    peer_impl = impl;
    if (argc < 2)
        peer_usage(impl, benches, nbench);
    const struct peer_bench *b = NULL;
    for (size_t i = 0; i < nbench; i++)
        if (strcmp(argv[1], benches[i].name) == 0)
            b = &benches[i];
    if (b == NULL) {
        fprintf(stderr, "peer-%s: unknown benchmark '%s'\n", impl, argv[1]);
        peer_usage(impl, benches, nbench);
    }

    long long workers = 0, size = b->default_size;
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            peer_usage(impl, benches, nbench);
        if (strcmp(argv[i], "-w") == 0)
            workers = peer_parse_positive("-w", argv[i + 1]);
        else if (strcmp(argv[i], "-n") == 0)
            size = peer_parse_positive("-n", argv[i + 1]);
        else
            peer_usage(impl, benches, nbench);
    }
    if (workers == 0) {
        const char *env = getenv("WEFT_WORKERS");
        if (env != NULL && *env != '\0')
            workers = peer_parse_positive("WEFT_WORKERS", env);
        else
            workers = sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (workers > 4096)
        peer_fail("-w %lld: too many workers", workers);
    if (b->one_worker && workers != 1) {
        fprintf(stderr, "peer-%s: %s runs on one worker by definition; "
                "ignoring -w %lld\n", impl, b->name, workers);
        workers = 1;
    }

    if (hooks.setup != NULL)
        hooks.setup((int)workers);
    b->run(size);
    double samples[PEER_REPS];
    for (int r = 0; r < PEER_REPS; r++)
        samples[r] = b->run(size);
    if (hooks.teardown != NULL)
        hooks.teardown();

    qsort(samples, PEER_REPS, sizeof samples[0], peer_cmp_double);
    printf("bench=%s impl=%s workers=%lld value=%.1f unit=%s median=%.1f",
           b->name, impl, workers, samples[0], b->unit, samples[PEER_REPS / 2]);
    if (size != b->default_size)
        printf(" n=%lld", size);
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Checks shared by several peers. */

static inline long long peer_fib_serial(long long n)
{
    long long a = 0, b = 1;
    for (long long i = 0; i < n; i++) {
        long long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

/* Fails unless leaves is a power of 10 (skynet's tree has fan-out 10). */
static inline void peer_check_skynet_size(long long leaves)
{
    for (long long l = leaves; l > 1; l /= 10)
        if (l % 10 != 0)
            peer_fail("skynet size %lld is not a power of 10", leaves);
}

#endif
