/*
 * Command-line number parsing shared by the load generators (echo-load,
 * idle-conns). Header-only; each program names itself in BENCH_PROG
 * before including it.
 */
#ifndef WEFT_BENCH_ARGS_H
#define WEFT_BENCH_ARGS_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef BENCH_PROG
#error "define BENCH_PROG (the program's name, for messages) before including args.h"
#endif

/* s as a decimal number in lo..hi; otherwise a one-line error naming the
 * option `what`, and exit status 2. */
static inline long parse_long(const char *s, long lo, long hi, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, BENCH_PROG ": %s must be a number in %ld..%ld, not '%s'\n",
                what, lo, hi, s);
        exit(2);
    }
    return v;
}

#endif
