/* Helpers shared by the Check suites. Header-only; each suite includes it
 * once. */
#ifndef WEFT_TEST_UTIL_H
#define WEFT_TEST_UTIL_H

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* How a forked child ended, and what it wrote to stderr. */
struct child_result {
    int  exited, status, signaled, sig;
    char err[4096];
};

/* Run fn in a forked child with stderr captured; fn should not return
 * (returning counts as exit 0). */
static inline struct child_result run_in_child(void (*fn)(void))
{
    struct child_result r;
    memset(&r, 0, sizeof r);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        close(p[1]);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t n;
    while ((n = read(p[0], r.err + len, sizeof r.err - 1 - len)) > 0)
        len += (size_t)n;
    close(p[0]);
    r.err[len] = 0;
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    r.exited = WIFEXITED(st);
    r.status = r.exited ? WEXITSTATUS(st) : -1;
    r.signaled = WIFSIGNALED(st);
    r.sig = r.signaled ? WTERMSIG(st) : 0;
    return r;
}

static inline int matches(const char *text, const char *pattern)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE) != 0)
        return 0;
    int ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* Tests that provoke faults on purpose do not run under valgrind, which
 * reports the fault itself. */
static inline int skip_under_valgrind(void)
{
    const char *v = getenv("WEFT_TEST_VALGRIND");
    return v && *v == '1';
}

/* Stress sizes scale with WEFT_TEST_SCALE (default 1). */
static inline long test_scale(void)
{
    const char *v = getenv("WEFT_TEST_SCALE");
    long s = v ? strtol(v, NULL, 10) : 1;
    return s > 0 ? s : 1;
}

/* Recursion with no end in practice, for overflow tests; the volatile
 * bound only keeps the compiler from proving it infinite. `frame` bytes
 * of stack per call. */
static volatile unsigned long runaway_limit = ~0ul;

#define DEFINE_RUNAWAY(name, frame)                                 \
    static unsigned long name(unsigned long n)                      \
    {                                                               \
        volatile char pad[frame];                                   \
        pad[0] = (char)n;                                           \
        if (n == runaway_limit)                                     \
            return 0;                                               \
        return name(n + 1) + (unsigned long)pad[0];                 \
    }

#define TEST_MAIN(make_suite)                                       \
    int main(void)                                                  \
    {                                                               \
        SRunner *sr = srunner_create(make_suite());                 \
        srunner_run_all(sr, CK_NORMAL);                             \
        int failed = srunner_ntests_failed(sr);                     \
        srunner_free(sr);                                           \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;           \
    }

/* The local port an IPv4 socket is bound to, or -1. */
static inline int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    return ntohs(a.sin_port);
}

#endif
