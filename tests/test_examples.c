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
 * The two servers (echo_server, http_hello) are also driven by clients
 * in this process: see "the servers" below.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
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

/* A running example: its pid and the read ends of its stdout and stderr
 * (-1 once at end of file), with what has been read so far. */
struct child {
    pid_t          pid;
    int            fds[2];
    struct capture *dest[2];
};

/*
 * Start the program named by the environment variable env_var with the
 * given arguments (NULL-terminated; may be NULL) and stdin on /dev/null,
 * its stdout and stderr going into r.
 */
static void start_example(const char *env_var, const char *const *args,
                          struct run_result *r, struct child *c)
{
    const char *path = getenv(env_var);
    ck_assert_msg(path && *path,
                  "%s is not set; run this test through `meson test`", env_var);

    const char *argv[16] = { path };
    for (int i = 0; args && args[i]; i++) {
        ck_assert_int_lt(i + 2, 16);
        argv[i + 1] = args[i];
    }

    memset(r, 0, sizeof *r);
    int out_pipe[2], err_pipe[2];
    ck_assert_int_eq(pipe2(out_pipe, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(err_pipe, O_CLOEXEC), 0);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* A server example outlives a test that fails half-way through
         * its clients: have it killed when the test process ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* dup2 clears O_CLOEXEC on the copies; the originals close at exec. */
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 ||
            dup2(out_pipe[1], STDOUT_FILENO) < 0 ||
            dup2(err_pipe[1], STDERR_FILENO) < 0)
            _exit(126);
        execv(path, (char *const *)argv);
        /* stderr is the pipe now: the test will show this. */
        static const char msg[] = "exec failed\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)ignored;
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    *c = (struct child){ pid, { out_pipe[0], err_pipe[0] }, { &r->out, &r->err } };
}

/*
 * Read both streams together with poll, so a child filling one of them
 * can never block on the other: until both are closed, or, with
 * until_line, until stdout holds a whole line (then 1 is returned; 0
 * means stdout closed first).
 */
static int pump(struct child *c, int until_line)
{
    for (;;) {
        if (until_line && c->dest[0]->data && strchr(c->dest[0]->data, '\n'))
            return 1;
        struct pollfd p[2] = {
            { .fd = c->fds[0], .events = POLLIN }, /* poll ignores negative fds */
            { .fd = c->fds[1], .events = POLLIN },
        };
        if (p[0].fd < 0 && (p[1].fd < 0 || until_line))
            return 0;
        if (poll(p, 2, -1) < 0) {
            ck_assert_int_eq(errno, EINTR);
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            char buf[4096];
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            ck_assert_int_ge(n, 0);
            if (n == 0) { /* EOF: the child closed this stream */
                close(p[i].fd);
                c->fds[i] = -1;
            } else {
                capture_append(c->dest[i], buf, (size_t)n);
            }
        }
    }
}

/* Collect the rest of the child's output, then reap it. */
static void finish_example(struct child *c, struct run_result *r)
{
    pump(c, 0);
    pid_t got;
    do
        got = waitpid(c->pid, &r->status, 0);
    while (got < 0 && errno == EINTR);
    ck_assert_int_eq(got, c->pid);
}

/* Run the example with no arguments to the end. */
static void run_example(const char *env_var, struct run_result *r)
{
    struct child c;
    start_example(env_var, NULL, r, &c);
    finish_example(&c, r);
}

/* The example must have exited 0, printed nothing on stderr and exactly
 * `expected` on stdout. */
static void assert_result(const char *env_var, const struct run_result *r,
                          const char *expected)
{
    ck_assert_msg(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
                  "%s: %s %d; stderr:\n%s", getenv(env_var),
                  WIFEXITED(r->status) ? "exit status" : "killed by signal",
                  WIFEXITED(r->status) ? WEXITSTATUS(r->status)
                                       : WTERMSIG(r->status),
                  r->err.data ? r->err.data : "");
    ck_assert_msg(r->err.len == 0, "%s wrote to stderr:\n%s", getenv(env_var),
                  r->err.data);

    size_t expected_len = strlen(expected);
    size_t same = 0;
    while (same < r->out.len && same < expected_len &&
           r->out.data[same] == expected[same])
        same++;
    ck_assert_msg(same == r->out.len && same == expected_len,
                  "%s: stdout differs from byte %zu on (got %zu bytes, "
                  "expected %zu)\n--- got:\n%s--- expected:\n%s",
                  getenv(env_var), same, r->out.len, expected_len,
                  r->out.data ? r->out.data : "", expected);
}

static void assert_output(const char *env_var, const char *expected)
{
    struct run_result r;
    run_example(env_var, &r);
    assert_result(env_var, &r, expected);
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

/* ---- the servers ------------------------------------------------------------
 *
 * echo_server and http_hello run until killed, except with -n N: then
 * they exit 0 once N connections have come and gone. Each test starts one
 * on port 0 (a free port, which it prints), runs its clients against it,
 * closes them, and checks that the server exited cleanly having printed
 * just its one line.
 */

/* Start a server example and wait for its "listening on
 * 127.0.0.1:PORT" line; returns the port. */
static int start_server(const char *env_var, const char *const *args,
                        struct run_result *r, struct child *c)
{
    start_example(env_var, args, r, c);
    ck_assert_msg(pump(c, 1), "%s exited before it listened; stderr:\n%s",
                  getenv(env_var), r->err.data ? r->err.data : "");
    const char *at = strstr(r->out.data, "127.0.0.1:");
    ck_assert_msg(at, "%s: no address in \"%s\"", getenv(env_var), r->out.data);
    int port = atoi(at + strlen("127.0.0.1:"));
    ck_assert_int_gt(port, 0);
    return port;
}

/* A blocking client socket connected to 127.0.0.1:port. Its timeouts
 * turn a server that stops answering into a failure, not a hang. */
static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = { .tv_sec = 30 };
    int one = 1;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&a, sizeof a) == 0,
                  "connect to port %d: %s", port, strerror(errno));
    return fd;
}

static void send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        ck_assert_msg(w > 0, "send: %s", w < 0 ? strerror(errno) : "sent nothing");
        p += w;
        n -= (size_t)w;
    }
}

static void send_text(int fd, const char *text)
{
    send_all(fd, text, strlen(text));
}

/* Exactly n bytes, or fail (end of stream, error, timeout). */
static void recv_exact(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t got = recv(fd, p, n, 0);
        ck_assert_msg(got > 0, "recv: %s (%zu bytes still expected)",
                      got < 0 ? strerror(errno) : "end of stream", n);
        p += got;
        n -= (size_t)got;
    }
}

/* The server must close its side next, with nothing more to say. */
static void expect_eof(int fd)
{
    char c;
    ssize_t got = recv(fd, &c, 1, 0);
    ck_assert_msg(got == 0, "expected end of stream, got %s",
                  got < 0 ? strerror(errno) : "a byte");
}

/* Byte i of client k's stream: a different sequence on every
 * connection, so an echo sent to the wrong client is caught. */
static unsigned char stream_byte(unsigned k, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)k << 56);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return (unsigned char)(x >> 40);
}

/*
 * Eight clients, all connected before any of them sends, then six rounds:
 * every client sends a chunk (1 byte to 64 KiB, each client a different
 * size in each round), then every client reads its chunk back and checks
 * it byte for byte. Finally each half-closes and must see the server
 * close too.
 */
static void check_echo_server(const char *mode, const char *mode_text)
{
    enum { CLIENTS = 8, ROUNDS = 6 };
    static const size_t sizes[ROUNDS] = { 1, 64, 1000, 4096, 16385, 65536 };
    const char *args[] = { "-h", "127.0.0.1", "-p", "0", "-w", "2", "-m", mode,
                           "-n", "8", NULL };
    struct run_result r;
    struct child c;
    int port = start_server("EXAMPLE_ECHO_SERVER", args, &r, &c);

    int fds[CLIENTS];
    uint64_t pos[CLIENTS] = { 0 };
    unsigned char *out = malloc(65536), *in = malloc(65536);
    ck_assert(out && in);
    for (int k = 0; k < CLIENTS; k++)
        fds[k] = dial(port);
    for (int round = 0; round < ROUNDS; round++) {
        for (unsigned k = 0; k < CLIENTS; k++) {
            size_t n = sizes[(round + k) % ROUNDS];
            for (size_t i = 0; i < n; i++)
                out[i] = stream_byte(k, pos[k] + i);
            send_all(fds[k], out, n);
        }
        for (unsigned k = 0; k < CLIENTS; k++) {
            size_t n = sizes[(round + k) % ROUNDS];
            recv_exact(fds[k], in, n);
            size_t same = 0;
            while (same < n && in[same] == stream_byte(k, pos[k] + same))
                same++;
            ck_assert_msg(same == n, "client %u, byte %llu: got %#x, sent %#x", k,
                          (unsigned long long)(pos[k] + same), in[same],
                          stream_byte(k, pos[k] + same));
            pos[k] += n;
        }
    }
    for (int k = 0; k < CLIENTS; k++) {
        ck_assert_int_eq(shutdown(fds[k], SHUT_WR), 0);
        expect_eof(fds[k]);
        close(fds[k]);
    }
    free(out);
    free(in);

    finish_example(&c, &r);
    char expected[200];
    snprintf(expected, sizeof expected,
             "echo_server: listening on 127.0.0.1:%d (2 workers, %s)\n", port, mode_text);
    assert_result("EXAMPLE_ECHO_SERVER", &r, expected);
    run_result_free(&r);
}

START_TEST(echo_server_reuseport)
{
    check_echo_server("reuseport", "a SO_REUSEPORT listener per worker");
}
END_TEST

START_TEST(echo_server_shared)
{
    check_echo_server("shared", "one shared listener");
}
END_TEST

#define HELLO_KEEP_ALIVE                                                      \
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"   \
    "\r\nHello, World!"
#define HELLO_CLOSE                                                           \
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"   \
    "Connection: close\r\n\r\nHello, World!"

/* The next bytes on fd must be exactly `expected`. */
static void expect_text(int fd, const char *expected)
{
    size_t n = strlen(expected);
    char *got = calloc(1, n + 1);
    ck_assert_ptr_nonnull(got);
    recv_exact(fd, got, n);
    ck_assert_msg(memcmp(got, expected, n) == 0,
                  "--- got:\n%s\n--- expected:\n%s", got, expected);
    free(got);
}

START_TEST(http_hello)
{
    const char *args[] = { "-h", "127.0.0.1", "-p", "0", "-w", "2", "-n", "2", NULL };
    struct run_result r;
    struct child c;
    int port = start_server("EXAMPLE_HTTP_HELLO", args, &r, &c);

    /* Keep-alive: several requests on one connection, each answered in
     * turn; one arrives in two pieces, two arrive in one write
     * (pipelined), one has a body to skip. */
    int fd = dial(port);
    send_text(fd, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    expect_text(fd, HELLO_KEEP_ALIVE);
    send_text(fd, "GET /second HTTP/1.1\r\nHo");
    send_text(fd, "st: localhost\r\nAccept: */*\r\n\r\n");
    expect_text(fd, HELLO_KEEP_ALIVE);
    send_text(fd, "GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  "GET /b HTTP/1.1\r\nHost: localhost\r\n\r\n");
    expect_text(fd, HELLO_KEEP_ALIVE HELLO_KEEP_ALIVE);
    send_text(fd, "POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\n\r\n"
                  "a=1&b=2");
    expect_text(fd, HELLO_KEEP_ALIVE);
    /* "Connection: close": the answer says so, then the server closes. */
    send_text(fd, "GET /bye HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    expect_text(fd, HELLO_CLOSE);
    expect_eof(fd);
    close(fd);

    /* HTTP/1.0 without keep-alive: one answer, then the server closes. */
    fd = dial(port);
    send_text(fd, "GET / HTTP/1.0\r\n\r\n");
    expect_text(fd, HELLO_CLOSE);
    expect_eof(fd);
    close(fd);

    finish_example(&c, &r);
    char expected[200];
    snprintf(expected, sizeof expected,
             "http_hello: listening on 127.0.0.1:%d (2 workers)\n", port);
    assert_result("EXAMPLE_HTTP_HELLO", &r, expected);
    run_result_free(&r);
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
    tc = tcase_create("servers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, echo_server_reuseport);
    tcase_add_test(tc, echo_server_shared);
    tcase_add_test(tc, http_hello);
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
