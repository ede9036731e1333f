/*
 * The blocking pool: weft_blocking's result and where fn runs, a worker
 * that keeps running fibers while one waits in the pool, the thread cap
 * and the FIFO queue beyond it, idle threads exiting, weft_run joining
 * the pool, and the two users inside the library: regular-file I/O
 * (fd.c) and name lookups (net.c). Every test runs in Check's forked
 * child; fibers record failures with EXPECT.
 *
 * Nothing here sleeps to synchronise: pool functions wait on a barrier,
 * a pipe or an atomic the test sets; fibers wait for a condition with
 * weft_yield or, for the idle timeout, poll weft__blocking_threads()
 * with weft_sleep under an overall deadline.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft.h>

#include "io/blocking.h"

#define FIBER_TEST_TSAN_DIV 8
#include "fiber_test.h"

#define SEC 1000000000ll

static void clear_env(void)
{
    unsetenv("WEFT_BLOCKING_MAX");
    unsetenv("WEFT_BLOCKING_IDLE_MS");
}

static void setup(void)
{
    fixture_setup();
    clear_env();
}

static void teardown(void)
{
    /* weft_run has returned: the runtime and every pool thread are gone. */
    ck_assert_uint_eq(weft_workers(), 0);
    ck_assert_uint_eq(weft__blocking_threads(), 0);
    clear_env();
}

static void *add_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

/* Records the thread it runs on in *arg. */
static void *record_thread(void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return arg;
}

/* ---- results and where fn runs ------------------------------------------- */

static void result_main(void *arg)
{
    (void)arg;
    uint64_t before = weft__blocking_calls();
    EXPECT(weft_blocking(add_one, (void *)41) == (void *)42);
    pthread_t worker_thread = pthread_self();
    pthread_t t;
    EXPECT(weft_blocking(record_thread, &t) == &t);
    EXPECT(!pthread_equal(t, worker_thread)); /* a pool thread ran it */
    EXPECT(weft__blocking_calls() == before + 2);
    EXPECT(weft__blocking_threads() >= 1); /* idle for 10 s by default */
    EXPECT(weft__blocking_cap() == 64);
    errno = 0;
    EXPECT(weft_blocking(NULL, NULL) == NULL);
    EXPECT(errno == EINVAL);
    EXPECT(weft__blocking_calls() == before + 2);
}

START_TEST(result_returned)
{
    run(2, result_main, NULL);
}
END_TEST

/* A plain thread started by a fiber: its call runs inline. */
static void *plain_caller(void *arg)
{
    pthread_t t;
    if (weft_blocking(record_thread, &t) != &t || !pthread_equal(t, pthread_self()))
        return NULL;
    return arg;
}

/* On a pool thread: a nested call runs inline there. */
static void *nested_call(void *arg)
{
    pthread_t inner;
    if (weft_blocking(record_thread, &inner) != &inner)
        return NULL;
    *(pthread_t *)arg = pthread_self();
    return pthread_equal(inner, pthread_self()) ? arg : NULL;
}

static void inline_main(void *arg)
{
    (void)arg;
    uint64_t before = weft__blocking_calls();
    pthread_t t;
    int marker;
    void *res = NULL;
    EXPECT(pthread_create(&t, NULL, plain_caller, &marker) == 0);
    EXPECT(pthread_join(t, &res) == 0);
    EXPECT(res == &marker);
    EXPECT(weft__blocking_calls() == before);
    pthread_t pool_thread;
    EXPECT(weft_blocking(nested_call, &pool_thread) == &pool_thread);
    EXPECT(weft__blocking_calls() == before + 1);
}

START_TEST(off_fiber_inline)
{
    /* No runtime at all. */
    uint64_t before = weft__blocking_calls();
    pthread_t t;
    ck_assert_ptr_eq(weft_blocking(record_thread, &t), &t);
    ck_assert(pthread_equal(t, pthread_self()));
    ck_assert_uint_eq(weft__blocking_calls(), before);
    ck_assert_uint_eq(weft__blocking_threads(), 0);
    ck_assert_uint_eq(weft__blocking_cap(), 0);
    /* A plain thread and a pool thread while the runtime runs. */
    run(2, inline_main, NULL);
}
END_TEST

/* ---- the worker keeps running ------------------------------------------------- */

struct pipe_case {
    int         p[2];
    _Atomic int in_fn;
    char        got[8];
};

/* Blocks its thread in read(2) until the writer fiber writes. */
static void *blocking_pipe_read(void *arg)
{
    struct pipe_case *c = arg;
    atomic_store(&c->in_fn, 1);
    return (void *)(intptr_t)read(c->p[0], c->got, 5);
}

static void *pipe_writer(void *arg)
{
    struct pipe_case *c = arg;
    while (!atomic_load(&c->in_fn))
        weft_yield();
    EXPECT(weft_write(c->p[1], "hello", 5) == 5);
    return NULL;
}

static void pipe_main(void *arg)
{
    (void)arg;
    struct pipe_case c = { .in_fn = 0 };
    EXPECT(pipe2(c.p, O_CLOEXEC) == 0);
    weft_fiber *w = weft_spawn(pipe_writer, &c);
    EXPECT(w != NULL);
    /* With one worker this returns only if the worker ran the writer
     * while the read blocked a pool thread. */
    EXPECT((intptr_t)weft_blocking(blocking_pipe_read, &c) == 5);
    EXPECT(memcmp(c.got, "hello", 5) == 0);
    EXPECT(weft_join(w, NULL) == 0);
    EXPECT(weft_close(c.p[1]) == 0);
    EXPECT(close(c.p[0]) == 0);
}

START_TEST(one_worker_not_blocked)
{
    run(1, pipe_main, NULL);
}
END_TEST

/* ---- the cap ------------------------------------------------------------------- */

#define CAP_TEST_CAP     8
#define CAP_TEST_FIBERS  200   /* a multiple of the cap: every barrier fills */

static struct {
    pthread_barrier_t bar;
    _Atomic int inside, peak, threads_over;
} g_cap;

/* Every call waits until CAP_TEST_CAP calls are inside at once: the pool
 * must grow to the cap, and the test would hang if it stopped below. */
static void *cap_fn(void *arg)
{
    int now = atomic_fetch_add(&g_cap.inside, 1) + 1;
    int p = atomic_load(&g_cap.peak);
    while (now > p && !atomic_compare_exchange_weak(&g_cap.peak, &p, now))
        ;
    if (weft__blocking_threads() > CAP_TEST_CAP)
        atomic_store(&g_cap.threads_over, 1);
    pthread_barrier_wait(&g_cap.bar);
    atomic_fetch_sub(&g_cap.inside, 1);
    return (void *)((uintptr_t)arg * 3 + 1);
}

static void *cap_fiber(void *arg)
{
    EXPECT(weft_blocking(cap_fn, arg) == (void *)((uintptr_t)arg * 3 + 1));
    EXPECT(weft__blocking_threads() <= CAP_TEST_CAP);
    return NULL;
}

static void cap_main(void *arg)
{
    (void)arg;
    uint64_t before = weft__blocking_calls();
    weft_fiber *f[CAP_TEST_FIBERS];
    for (uintptr_t i = 0; i < CAP_TEST_FIBERS; i++)
        EXPECT((f[i] = weft_spawn(cap_fiber, (void *)i)) != NULL);
    for (int i = 0; i < CAP_TEST_FIBERS; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    EXPECT(weft__blocking_cap() == CAP_TEST_CAP);
    EXPECT(atomic_load(&g_cap.peak) == CAP_TEST_CAP);
    EXPECT(!atomic_load(&g_cap.threads_over));
    EXPECT(weft__blocking_threads() <= CAP_TEST_CAP);
    EXPECT(weft__blocking_calls() == before + CAP_TEST_FIBERS);
}

START_TEST(cap_respected)
{
    ck_assert_int_eq(setenv("WEFT_BLOCKING_MAX", "8", 1), 0);
    ck_assert_int_eq(pthread_barrier_init(&g_cap.bar, NULL, CAP_TEST_CAP), 0);
    run(4, cap_main, NULL);
    pthread_barrier_destroy(&g_cap.bar);
}
END_TEST

#define FIFO_CALLS 16

static struct {
    int         p[2];
    _Atomic int tickets;
    int         order[FIFO_CALLS];
    int         nran;          /* only the single pool thread writes these */
} g_fifo;

static void *fifo_fn(void *arg)
{
    int ticket = (int)(intptr_t)arg;
    if (ticket == 0) {
        /* Hold the only pool thread until every call is queued. */
        char c;
        if (read(g_fifo.p[0], &c, 1) != 1)
            return NULL;
    }
    g_fifo.order[g_fifo.nran++] = ticket;
    return arg;
}

static void *fifo_fiber(void *arg)
{
    (void)arg;
    /* One worker: nothing else runs between taking the ticket and
     * queueing the call, so ticket order is queue order. */
    int ticket = atomic_fetch_add(&g_fifo.tickets, 1);
    EXPECT(weft_blocking(fifo_fn, (void *)(intptr_t)ticket) == (void *)(intptr_t)ticket);
    return NULL;
}

static void fifo_main(void *arg)
{
    (void)arg;
    EXPECT(pipe2(g_fifo.p, O_CLOEXEC) == 0);
    weft_fiber *f[FIFO_CALLS];
    for (int i = 0; i < FIFO_CALLS; i++)
        EXPECT((f[i] = weft_spawn(fifo_fiber, NULL)) != NULL);
    while (atomic_load(&g_fifo.tickets) < FIFO_CALLS)
        weft_yield();
    EXPECT(weft__blocking_threads() == 1);
    EXPECT(weft_write(g_fifo.p[1], "x", 1) == 1);
    for (int i = 0; i < FIFO_CALLS; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    EXPECT(g_fifo.nran == FIFO_CALLS);
    for (int i = 0; i < FIFO_CALLS; i++)
        EXPECT(g_fifo.order[i] == i);
    EXPECT(weft_close(g_fifo.p[1]) == 0);
    EXPECT(close(g_fifo.p[0]) == 0);
}

START_TEST(fifo_beyond_cap)
{
    ck_assert_int_eq(setenv("WEFT_BLOCKING_MAX", "1", 1), 0);
    run(1, fifo_main, NULL);
}
END_TEST

/* ---- shrinking, stopping, configuration ------------------------------------------ */

#define SHRINK_THREADS 4

static pthread_barrier_t g_shrink_bar;

static void *shrink_fn(void *arg)
{
    pthread_barrier_wait(&g_shrink_bar);
    /* All SHRINK_THREADS calls are inside, each on its own thread, and
     * the cap allows no more. */
    return weft__blocking_threads() == SHRINK_THREADS ? arg : NULL;
}

static void *shrink_fiber(void *arg)
{
    EXPECT(weft_blocking(shrink_fn, arg) == arg);
    return NULL;
}

/* Poll until the pool has no thread; 0, or -1 after `limit` ns. */
static int wait_pool_empty(int64_t limit)
{
    uint64_t end = weft_now() + (uint64_t)limit;
    while (weft__blocking_threads() != 0) {
        if (weft_now() > end)
            return -1;
        weft_sleep(1000000);
    }
    return 0;
}

static void shrink_main(void *arg)
{
    (void)arg;
    weft_fiber *f[SHRINK_THREADS];
    for (uintptr_t i = 0; i < SHRINK_THREADS; i++)
        EXPECT((f[i] = weft_spawn(shrink_fiber, (void *)(i + 1))) != NULL);
    for (int i = 0; i < SHRINK_THREADS; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    EXPECT(wait_pool_empty(30 * SEC) == 0);
    /* The pool grows again on demand. */
    EXPECT(weft_blocking(add_one, (void *)1) == (void *)2);
    EXPECT(wait_pool_empty(30 * SEC) == 0);
}

START_TEST(idle_threads_exit)
{
    ck_assert_int_eq(setenv("WEFT_BLOCKING_MAX", "4", 1), 0);
    ck_assert_int_eq(setenv("WEFT_BLOCKING_IDLE_MS", "20", 1), 0);
    ck_assert_int_eq(pthread_barrier_init(&g_shrink_bar, NULL, SHRINK_THREADS), 0);
    run(2, shrink_main, NULL);
    pthread_barrier_destroy(&g_shrink_bar);
}
END_TEST

static void cap_probe_main(void *arg)
{
    /* The pool starts with the run's first call and reads the
     * environment then. */
    EXPECT(weft__blocking_cap() == 0);
    EXPECT(weft_blocking(add_one, (void *)1) == (void *)2);
    *(unsigned *)arg = weft__blocking_cap();
    EXPECT(weft__blocking_threads() >= 1);
}

static unsigned run_cap_probe(const char *max)
{
    if (max)
        ck_assert_int_eq(setenv("WEFT_BLOCKING_MAX", max, 1), 0);
    else
        unsetenv("WEFT_BLOCKING_MAX");
    unsigned cap = 0;
    run(2, cap_probe_main, &cap);
    /* weft_run joined the pool's threads (the idle time is 10 s). */
    ck_assert_uint_eq(weft__blocking_threads(), 0);
    ck_assert_uint_eq(weft__blocking_cap(), 0);
    return cap;
}

START_TEST(stop_and_rerun)
{
    ck_assert_uint_eq(run_cap_probe(NULL), 64);
    ck_assert_uint_eq(run_cap_probe("3"), 3);
    ck_assert_uint_eq(run_cap_probe("4096"), 4096);
    /* Bad values: the default. */
    ck_assert_uint_eq(run_cap_probe("junk"), 64);
    ck_assert_uint_eq(run_cap_probe("0"), 64);
    ck_assert_uint_eq(run_cap_probe("-5"), 64);
    ck_assert_uint_eq(run_cap_probe("8x"), 64);
    ck_assert_uint_eq(run_cap_probe("4097"), 64);
    ck_assert_uint_eq(run_cap_probe("99999999999999999999"), 64);
}
END_TEST

/* ---- regular files ---------------------------------------------------------------- */

static struct {
    _Atomic int      done;
    _Atomic uint64_t ticks;
} g_file;

static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_file.done)) {
        atomic_fetch_add(&g_file.ticks, 1);
        weft_yield();
    }
    return NULL;
}

static uint8_t file_byte(size_t i)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    return (uint8_t)((x >> 56) ^ i);
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* One file call through the pool: the ticker must have run meanwhile (on
 * the single worker it can only run while this fiber is parked). */
#define FILE_CALL(expr, result)                                         \
    do {                                                                \
        uint64_t t0_ = atomic_load(&g_file.ticks);                      \
        uint64_t c0_ = weft__blocking_calls();                          \
        (result) = (expr);                                              \
        EXPECT(atomic_load(&g_file.ticks) > t0_);                       \
        EXPECT(weft__blocking_calls() == c0_ + 1);                      \
    } while (0)

static void file_main(void *arg)
{
    (void)arg;
    size_t len = (size_t)sized(1 << 20);
    uint8_t *buf = malloc(65536);
    EXPECT(buf != NULL);
    char path[] = "/tmp/weft-test-blocking-XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0);
    EXPECT(unlink(path) == 0);
    weft_fiber *tk = weft_spawn(ticker, NULL);
    EXPECT(tk != NULL);

    uint64_t rng = 0x2545F4914F6CDD1Dull;
    size_t off = 0;
    int vectored = 0;
    while (off < len) {
        size_t n = 1 + (size_t)(next_rand(&rng) % 65536);
        if (n > len - off)
            n = len - off;
        for (size_t i = 0; i < n; i++)
            buf[i] = file_byte(off + i);
        ssize_t r;
        if (vectored) {
            struct iovec iov[2] = { { buf, n / 2 }, { buf + n / 2, n - n / 2 } };
            FILE_CALL(weft_writev(fd, iov, 2), r);
        } else {
            FILE_CALL(weft_write(fd, buf, n), r);
        }
        EXPECT(r == (ssize_t)n); /* regular files write everything */
        if (r != (ssize_t)n)
            break;
        off += n;
        vectored ^= 1;
    }
    EXPECT(lseek(fd, 0, SEEK_SET) == 0);
    size_t got = 0;
    for (;;) {
        size_t n = 1 + (size_t)(next_rand(&rng) % 65536);
        ssize_t r;
        if (vectored) {
            struct iovec iov[2] = { { buf, n / 2 }, { buf + n / 2, n - n / 2 } };
            FILE_CALL(weft_readv(fd, iov, 2), r);
        } else {
            FILE_CALL(weft_read(fd, buf, n), r);
        }
        vectored ^= 1;
        EXPECT(r >= 0);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != file_byte(got + (size_t)i)) {
                EXPECT(!"file byte mismatch");
                r = -1;
                break;
            }
        if (r < 0)
            break;
        got += (size_t)r;
    }
    EXPECT(got == len);
    /* Per-fd timeouts do not apply to files. */
    EXPECT(weft_fd_timeouts(fd, 1, 1) == 0);
    EXPECT(lseek(fd, 0, SEEK_SET) == 0);
    EXPECT(weft_read(fd, buf, 16) == 16);
    /* The socket calls fail at once, without the pool. */
    uint64_t c0 = weft__blocking_calls();
    EXPECT(weft_recv(fd, buf, 1, 0) == -ENOTSOCK);
    EXPECT(weft__blocking_calls() == c0);
    EXPECT(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
    EXPECT(weft_close(fd) == 0);
    atomic_store(&g_file.done, 1);
    EXPECT(weft_join(tk, NULL) == 0);
    free(buf);
}

START_TEST(regular_file_through_pool)
{
    run(1, file_main, NULL);
}
END_TEST

static void dir_main(void *arg)
{
    (void)arg;
    int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    EXPECT(fd >= 0);
    char buf[16] = "";
    uint64_t before = weft__blocking_calls();
    EXPECT(weft_read(fd, buf, sizeof buf) == -EISDIR);
    struct iovec iov = { buf, sizeof buf };
    EXPECT(weft_readv(fd, &iov, 1) == -EISDIR);
    EXPECT(weft_write(fd, buf, 1) == -EBADF); /* opened read-only */
    EXPECT(weft__blocking_calls() == before + 3);
    EXPECT(weft_close(fd) == 0);
}

START_TEST(directory_read)
{
    run(2, dir_main, NULL);
    /* And on a plain thread, with the plain call. */
    int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    char buf[16];
    ck_assert_int_eq(weft_read(fd, buf, sizeof buf), -EISDIR);
    ck_assert_int_eq(weft_close(fd), 0);
}
END_TEST

/* ---- name lookups --------------------------------------------------------------------- */

static void *pong_server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int afd = weft_accept(lfd, NULL, NULL);
    EXPECT(afd >= 0);
    char buf[4];
    EXPECT(weft_recv(afd, buf, 4, MSG_WAITALL) == 4);
    EXPECT(memcmp(buf, "ping", 4) == 0);
    EXPECT(weft_send(afd, "pong", 4, 0) == 4);
    EXPECT(weft_close(afd) == 0);
    return NULL;
}

static void dial_main(void *arg)
{
    (void)arg;
    int lfd = weft_listen_tcp("127.0.0.1", 0, 8);
    EXPECT(lfd >= 0);
    int port = local_port(lfd);
    EXPECT(port > 0);
    weft_fiber *srv = weft_spawn(pong_server, (void *)(intptr_t)lfd);
    EXPECT(srv != NULL);
    uint64_t before = weft__blocking_calls();
    int cfd = weft_dial_tcp("localhost", port, 10 * SEC);
    EXPECT(cfd >= 0);
    EXPECT(weft__blocking_calls() > before);
    char buf[4];
    EXPECT(weft_send(cfd, "ping", 4, 0) == 4);
    EXPECT(weft_recv(cfd, buf, 4, MSG_WAITALL) == 4);
    EXPECT(memcmp(buf, "pong", 4) == 0);
    EXPECT(weft_join(srv, NULL) == 0);
    EXPECT(weft_close(cfd) == 0);
    EXPECT(weft_close(lfd) == 0);
    /* A numeric address needs no lookup. */
    before = weft__blocking_calls();
    lfd = weft_listen_tcp("127.0.0.1", 0, 8);
    EXPECT(lfd >= 0);
    EXPECT(weft__blocking_calls() == before);
    EXPECT(weft_close(lfd) == 0);
    /* A name for the listener too. */
    lfd = weft_listen_tcp("localhost", 0, 8);
    EXPECT(lfd >= 0);
    EXPECT(weft__blocking_calls() == before + 1);
    EXPECT(weft_close(lfd) == 0);
}

START_TEST(dial_by_name)
{
    run(2, dial_main, NULL);
}
END_TEST

/* ---- the request's last touch ----------------------------------------------------- */

/*
 * blocking.c keeps a call's request on the calling fiber's stack, and
 * the pool thread must not touch it after the exchange that lets the
 * fiber return. Here every fiber, right after each call returns, writes
 * over the stack below its frame, where weft_blocking's frame and the
 * request were: a pool thread still touching the request then races
 * with these writes (TSan reports it), or writes into the new frame's
 * redzones or a freed fake frame (ASan, with
 * detect_stack_use_after_return), and the fiber's own checks see values
 * change under them. fn returns at once, so the pool's exchange often
 * comes before the park is committed (the commit fails and the fiber
 * goes on straight away) and sometimes after; every worker runs such
 * fibers. A regular-file write (fd.c's record, through the pool) is
 * mixed in.
 */
#define LAST_TOUCH_FIBERS 8

static void *bump(void *arg)
{
    uint64_t *v = arg;
    return (void *)(uintptr_t)(++*v ^ 0x5a5a);
}

static void *last_touch_fiber(void *arg)
{
    long n = (long)(intptr_t)arg;
    int fd = memfd_create("weft-last-touch", MFD_CLOEXEC);
    EXPECT(fd >= 0);
    for (long i = 0; i < n; i++) {
        uint64_t v = (uint64_t)i;
        void *r = weft_blocking(bump, &v);
        EXPECT(v == (uint64_t)i + 1);
        EXPECT((uintptr_t)r == (((uint64_t)i + 1) ^ 0x5a5a));
        EXPECT(scribble_below((uint64_t)i));
        if (fd >= 0 && i % 16 == 0) {
            uint64_t word = (uint64_t)i;
            EXPECT(weft_write(fd, &word, sizeof word) == sizeof word);
            EXPECT(scribble_below((uint64_t)i ^ 1));
        }
        if (i % 64 == 0)
            weft_yield(); /* move around the workers */
    }
    if (fd >= 0)
        EXPECT(weft_close(fd) == 0);
    return NULL;
}

static void last_touch_main(void *arg)
{
    (void)arg;
    long per = sized(100000) / LAST_TOUCH_FIBERS;
    weft_fiber *f[LAST_TOUCH_FIBERS];
    uint64_t c0 = weft__blocking_calls();
    for (int i = 0; i < LAST_TOUCH_FIBERS; i++)
        f[i] = weft_spawn(last_touch_fiber, (void *)(intptr_t)per);
    for (int i = 0; i < LAST_TOUCH_FIBERS; i++)
        EXPECT(f[i] && weft_join(f[i], NULL) == 0);
    /* Every call went through the pool. */
    EXPECT(weft__blocking_calls() - c0 >= (uint64_t)(per * LAST_TOUCH_FIBERS));
}

START_TEST(request_not_touched_after_wake)
{
    run(0, last_touch_main, NULL);
}
END_TEST

static Suite *blocking_suite(void)
{
    Suite *s = suite_create("blocking");
    TCase *tc = tcase_create("blocking");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, result_returned);
    tcase_add_test(tc, off_fiber_inline);
    tcase_add_test(tc, one_worker_not_blocked);
    tcase_add_test(tc, cap_respected);
    tcase_add_test(tc, fifo_beyond_cap);
    tcase_add_test(tc, idle_threads_exit);
    tcase_add_test(tc, stop_and_rerun);
    tcase_add_test(tc, regular_file_through_pool);
    tcase_add_test(tc, directory_read);
    tcase_add_test(tc, dial_by_name);
    suite_add_tcase(s, tc);
    TCase *lt = tcase_create("last_touch");
    tcase_add_checked_fixture(lt, setup, teardown);
    tcase_set_timeout(lt, 240);
    tcase_add_test(lt, request_not_touched_after_wake);
    suite_add_tcase(s, lt);
    return s;
}

TEST_MAIN(blocking_suite)
