/*
 * test-examples: run each program in examples/ and check what it prints.
 *
 * The examples are documentation, so their output is part of what they
 * teach: each test runs the built binary (found through the environment
 * variable examples/meson.build sets, EXAMPLE_<NAME>), captures all of
 * stdout and stderr, and requires exit status 0, an empty stderr and a
 * stdout equal byte for byte to the text written out below. The expected
 * texts are typed in by hand, not computed, so a change in what an
 * example does or in the coroutine semantics it relies on fails here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* No example prints anywhere near this much; more means it ran away. */
#define CAPTURE_MAX (1u << 20)

struct capture {
    char  *data;
    size_t len;
    size_t cap;
};

struct run_result {
    struct capture out;
    struct capture err;
    int            status; /* as waitpid reports it */
};

static void capture_append(struct capture *c, const char *buf, size_t n)
{
    ck_assert_msg(c->len + n <= CAPTURE_MAX, "example printed over %u bytes",
                  CAPTURE_MAX);
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *data = realloc(c->data, cap);
        ck_assert_ptr_nonnull(data);
        c->data = data;
        c->cap = cap;
    }
    memcpy(c->data + c->len, buf, n);
    c->len += n;
    c->data[c->len] = '\0'; /* for printing in failure messages */
}

static void run_result_free(struct run_result *r)
{
    free(r->out.data);
    free(r->err.data);
}

/*
 * Run the program named by the environment variable env_var with no
 * arguments and stdin on /dev/null, collecting both output streams until
 * both are closed, then reap it. Both pipes are drained together with
 * poll, so a child filling one of them can never block the other.
 */
static void run_example(const char *env_var, struct run_result *r)
{
    const char *path = getenv(env_var);
    ck_assert_msg(path && *path,
                  "%s is not set; run this test through `meson test`", env_var);

    memset(r, 0, sizeof *r);
    int out_pipe[2], err_pipe[2];
    ck_assert_int_eq(pipe2(out_pipe, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(err_pipe, O_CLOEXEC), 0);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* dup2 clears O_CLOEXEC on the copies; the originals close at exec. */
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 ||
            dup2(out_pipe[1], STDOUT_FILENO) < 0 ||
            dup2(err_pipe[1], STDERR_FILENO) < 0)
            _exit(126);
        execl(path, path, (char *)NULL);
        /* stderr is the pipe now: the test will show this. */
        static const char msg[] = "exec failed\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)ignored;
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);

    struct pollfd fds[2] = {
        { .fd = out_pipe[0], .events = POLLIN },
        { .fd = err_pipe[0], .events = POLLIN },
    };
    struct capture *dest[2] = { &r->out, &r->err };
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            ck_assert_int_eq(errno, EINTR);
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            char buf[4096];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            ck_assert_int_ge(n, 0);
            if (n == 0) { /* EOF: the child closed this stream */
                close(fds[i].fd);
                fds[i].fd = -1; /* poll ignores negative fds */
                open_fds--;
            } else {
                capture_append(dest[i], buf, (size_t)n);
            }
        }
    }

    pid_t got;
    do
        got = waitpid(pid, &r->status, 0);
    while (got < 0 && errno == EINTR);
    ck_assert_int_eq(got, pid);
}

/* The example must have exited 0, printed nothing on stderr and exactly
 * `expected` on stdout. */
static void assert_output(const char *env_var, const char *expected)
{
    struct run_result r;
    run_example(env_var, &r);

    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "%s: %s %d; stderr:\n%s", getenv(env_var),
                  WIFEXITED(r.status) ? "exit status" : "killed by signal",
                  WIFEXITED(r.status) ? WEXITSTATUS(r.status)
                                      : WTERMSIG(r.status),
                  r.err.data ? r.err.data : "");
    ck_assert_msg(r.err.len == 0, "%s wrote to stderr:\n%s", getenv(env_var),
                  r.err.data);

    size_t expected_len = strlen(expected);
    size_t same = 0;
    while (same < r.out.len && same < expected_len &&
           r.out.data[same] == expected[same])
        same++;
    ck_assert_msg(same == r.out.len && same == expected_len,
                  "%s: stdout differs from byte %zu on (got %zu bytes, "
                  "expected %zu)\n--- got:\n%s--- expected:\n%s",
                  getenv(env_var), same, r.out.len, expected_len,
                  r.out.data ? r.out.data : "", expected);

    run_result_free(&r);
}

START_TEST(interleave)
{
    assert_output("EXAMPLE_CORO_INTERLEAVE",
                  "count 1\n"
                  "letter a\n"
                  "count 2\n"
                  "letter b\n"
                  "count 3\n"
                  "letter c\n"
                  "count 4\n"
                  "letters finished\n"
                  "count 5\n"
                  "counter finished\n"
                  "all finished after 6 rounds\n");
}
END_TEST

START_TEST(producer_consumer)
{
    assert_output("EXAMPLE_CORO_PRODUCER_CONSUMER",
                  "consumer: ready\n"
                  "producer: sending \"apples\"\n"
                  "consumer: received \"apples\"\n"
                  "producer: answer \"200 OK\"\n"
                  "producer: sending \"bread\"\n"
                  "consumer: received \"bread\"\n"
                  "producer: answer \"200 OK\"\n"
                  "producer: sending \"cheese\"\n"
                  "consumer: received \"cheese\"\n"
                  "producer: answer \"200 OK\"\n"
                  "producer: sending \"dates\"\n"
                  "consumer: received \"dates\"\n"
                  "producer: answer \"200 OK\"\n"
                  "producer: sending end of stream\n"
                  "consumer: stopping\n"
                  "producer: consumer took 4 items, 22 bytes\n");
}
END_TEST

START_TEST(averager)
{
    assert_output("EXAMPLE_CORO_AVERAGER",
                  "send 10.00 -> average 10.00\n"
                  "send 20.00 -> average 15.00\n"
                  "send 30.00 -> average 20.00\n"
                  "send 5.00 -> average 16.25\n"
                  "send 7.50 -> average 14.50\n"
                  "send end -> count 5, average 14.50\n");
}
END_TEST

START_TEST(delegate)
{
    assert_output("EXAMPLE_CORO_DELEGATE",
                  "main: start outer with 100\n"
                  "  outer: yield 1\n"
                  "main: got 1, send 10\n"
                  "  outer: got 10\n"
                  "  outer: delegating to inner\n"
                  "    inner: started with 100\n"
                  "    inner: yield 101\n"
                  "main: got 101, send 1010\n"
                  "    inner: got 1010\n"
                  "    inner: yield 102\n"
                  "main: got 102, send 1020\n"
                  "    inner: got 1020\n"
                  "    inner: return 2030\n"
                  "  outer: inner returned 2030\n"
                  "  outer: yield 2\n"
                  "main: got 2, send 20\n"
                  "  outer: got 20\n"
                  "  outer: return 2060\n"
                  "main: outer returned 2060, main sent 2060 in total\n");
}
END_TEST

START_TEST(chan_producer_consumer)
{
    assert_output("EXAMPLE_CHAN_PRODUCER_CONSUMER",
                  "got 1\n"
                  "got 2\n"
                  "got 3\n"
                  "got 4\n"
                  "got 5\n"
                  "got 6\n"
                  "got 7\n"
                  "got 8\n"
                  "got 9\n"
                  "got 10\n"
                  "channel closed after 10 values, sum 55\n");
}
END_TEST

START_TEST(chan_prime_sieve)
{
    assert_output("EXAMPLE_CHAN_PRIME_SIEVE",
                  "2\n3\n5\n7\n11\n13\n17\n19\n23\n29\n"
                  "31\n37\n41\n43\n47\n53\n59\n61\n67\n71\n");
}
END_TEST

START_TEST(chan_worker_pool)
{
    assert_output("EXAMPLE_CHAN_WORKER_POOL",
                  "collatz(1) = 0 steps\n"
                  "collatz(2) = 1 steps\n"
                  "collatz(3) = 7 steps\n"
                  "collatz(4) = 2 steps\n"
                  "collatz(5) = 5 steps\n"
                  "collatz(6) = 8 steps\n"
                  "collatz(7) = 16 steps\n"
                  "collatz(8) = 3 steps\n"
                  "collatz(9) = 19 steps\n"
                  "collatz(10) = 6 steps\n"
                  "collatz(11) = 14 steps\n"
                  "collatz(12) = 9 steps\n"
                  "12 jobs, 4 workers, 90 steps in all\n");
}
END_TEST

static Suite *examples_suite(void)
{
    Suite *s = suite_create("examples");
    TCase *tc = tcase_create("coro");
    /* Generous: under `meson test --setup valgrind` the example runs
     * under valgrind too (--trace-children). */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, interleave);
    tcase_add_test(tc, producer_consumer);
    tcase_add_test(tc, averager);
    tcase_add_test(tc, delegate);
    suite_add_tcase(s, tc);
    tc = tcase_create("chan");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, chan_producer_consumer);
    tcase_add_test(tc, chan_prime_sieve);
    tcase_add_test(tc, chan_worker_pool);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(examples_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
