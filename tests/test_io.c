/*
 * The netpoller and the fd wrappers: byte-exact streams over socketpairs
 * and pipes, TCP through weft_listen_tcp / weft_dial_tcp / weft_accept,
 * per-fd and weft_wait_fd timeouts, close while a fiber waits, a busy
 * worker that must still deliver I/O, error cases, and the plain-thread
 * behaviour. Every test runs weft_run in Check's forked child. Fibers
 * record failures with EXPECT; the test checks them after weft_run.
 *
 * Fibers wait for each other only through the calls under test, joins,
 * or by watching a wait slot (np_lookup) with weft_yield, never by
 * sleeping. The suite must also pass with WEFT_DEBUG_MIGRATE=1, where
 * every wake-up moves the fiber to another worker, so a fiber's waits on
 * one fd come from different workers than the one whose epoll holds it.
 */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft.h>

#include "io/netpoll.h"
#include "common/sanitizer.h"

#define FIBER_TEST_TSAN_DIV 8
#include "fiber_test.h"


static void fixture_teardown(void)
{
    ck_assert_uint_eq(weft_workers(), 0);
}

/* The pattern byte at offset i of stream `seed`: cheap, position-keyed,
 * so a reader can check any chunk on its own. */
static uint8_t pattern(uint64_t seed, uint64_t i)
{
    uint64_t x = (i >> 3) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (uint8_t)(x >> ((i & 7) * 8));
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Wait until some fiber is parked on fd's direction dir. */
static void wait_parked(int fd, int dir)
{
    struct np_desc *pd = NULL;
    for (;;) {
        if (!pd)
            pd = np_lookup(fd);
        if (pd && atomic_load(&pd->slot[dir]) > 2)
            return;
        if (weft_self())
            weft_yield();
        else
            sched_yield();
    }
}

/* ---- streams over socketpairs and pipes ---------------------------------- */

struct stream {
    int      rfd, wfd;
    uint64_t seed;
    size_t   len;
    size_t   got;
    int      vectored;
};

static void *stream_writer(void *arg)
{
    struct stream *s = arg;
    uint64_t rng = s->seed | 1;
    uint8_t buf[65536];
    size_t off = 0;
    while (off < s->len) {
        size_t n = 1 + (size_t)(xorshift(&rng) % sizeof buf);
        if (n > s->len - off)
            n = s->len - off;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(s->seed, off + i);
        size_t done = 0;
        while (done < n) {
            ssize_t r;
            if (s->vectored) {
                size_t h = (n - done) / 2;
                struct iovec iov[2] = { { buf + done, h }, { buf + done + h, n - done - h } };
                r = weft_writev(s->wfd, iov, 2);
            } else {
                r = weft_write(s->wfd, buf + done, n - done);
            }
            EXPECT(r > 0);
            if (r <= 0)
                return NULL;
            done += (size_t)r;
        }
        off += n;
    }
    EXPECT(weft_close(s->wfd) == 0);
    return NULL;
}

static void *stream_reader(void *arg)
{
    struct stream *s = arg;
    uint64_t rng = (s->seed * 3) | 1;
    uint8_t buf[65536];
    for (;;) {
        size_t n = 1 + (size_t)(xorshift(&rng) % sizeof buf);
        ssize_t r;
        if (s->vectored) {
            struct iovec iov[2] = { { buf, n / 2 }, { buf + n / 2, n - n / 2 } };
            r = weft_readv(s->rfd, iov, 2);
        } else {
            r = weft_read(s->rfd, buf, n);
        }
        EXPECT(r >= 0);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(s->seed, s->got + (size_t)i)) {
                EXPECT(!"stream byte mismatch");
                return NULL;
            }
        s->got += (size_t)r;
    }
    EXPECT(s->got == s->len);
    EXPECT(weft_close(s->rfd) == 0);
    return NULL;
}

static void streams_main(void *arg)
{
    int pipes = (int)(intptr_t)arg;
    long n = sized(64);
    size_t len = (size_t)sized(1 << 20);
    struct stream *s = calloc((size_t)n, sizeof *s);
    weft_fiber **f = calloc((size_t)n * 2, sizeof *f);
    for (long i = 0; i < n; i++) {
        int fds[2];
        if (pipes)
            EXPECT(pipe2(fds, O_CLOEXEC) == 0);
        else
            EXPECT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
        s[i] = (struct stream){ .rfd = fds[0], .wfd = fds[1],
                                .seed = 0x1234567ull + (uint64_t)i * 7919,
                                .len = len, .vectored = (int)(i & 1) };
        f[2 * i] = weft_spawn(stream_reader, &s[i]);
        f[2 * i + 1] = weft_spawn(stream_writer, &s[i]);
    }
    for (long i = 0; i < 2 * n; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    for (long i = 0; i < n; i++)
        EXPECT(s[i].got == len);
    free(s);
    free(f);
}

START_TEST(stream_socketpairs)
{
    run(0, streams_main, (void *)0);
}
END_TEST

START_TEST(stream_pipes)
{
    run(0, streams_main, (void *)1);
}
END_TEST

START_TEST(stream_one_worker)
{
    run(1, streams_main, (void *)0);
}
END_TEST

/* ---- TCP ------------------------------------------------------------------ */

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t r = weft_recv(fd, buf, sizeof buf, 0);
        EXPECT(r >= 0);
        if (r <= 0)
            break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = weft_send(fd, buf + off, (size_t)(r - off), 0);
            EXPECT(w > 0);
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    EXPECT(weft_close(fd) == 0);
    return NULL;
}

struct tcp_server {
    int lfd, nconn;
};

static void *tcp_acceptor(void *arg)
{
    struct tcp_server *sv = arg;
    for (int i = 0; i < sv->nconn; i++) {
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        int fd = weft_accept(sv->lfd, (struct sockaddr *)&peer, &pl);
        EXPECT(fd >= 0);
        if (fd < 0)
            break;
        EXPECT((fcntl(fd, F_GETFL) & O_NONBLOCK) && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
        EXPECT(peer.sin_family == AF_INET);
        weft_spawn_opts o = { .detached = 1 };
        weft_spawn_ex(&o, echo_conn, (void *)(intptr_t)fd);
    }
    return NULL;
}

struct tcp_client {
    int      port, fd;
    uint64_t seed;
    size_t   len;
};

static void *tcp_client_writer(void *arg)
{
    struct tcp_client *c = arg;
    uint8_t buf[8192];
    for (size_t off = 0; off < c->len;) {
        size_t n = c->len - off < sizeof buf ? c->len - off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(c->seed, off + i);
        ssize_t w = weft_write(c->fd, buf, n);
        EXPECT(w > 0);
        if (w <= 0)
            return NULL;
        off += (size_t)w;
    }
    EXPECT(shutdown(c->fd, SHUT_WR) == 0);
    return NULL;
}

static void *tcp_client(void *arg)
{
    struct tcp_client *c = arg;
    c->fd = weft_dial_tcp("127.0.0.1", c->port, 10 * 1000000000ll);
    EXPECT(c->fd >= 0);
    if (c->fd < 0)
        return NULL;
    weft_fiber *wr = weft_spawn(tcp_client_writer, c);
    uint8_t buf[10000];
    size_t got = 0;
    for (;;) {
        ssize_t r = weft_read(c->fd, buf, sizeof buf);
        EXPECT(r >= 0);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(c->seed, got + (size_t)i)) {
                EXPECT(!"echo byte mismatch");
                r = -1;
                break;
            }
        if (r < 0)
            break;
        got += (size_t)r;
    }
    EXPECT(got == c->len);
    EXPECT(weft_join(wr, NULL) == 0);
    EXPECT(weft_close(c->fd) == 0);
    return NULL;
}

static void tcp_main(void *arg)
{
    (void)arg;
    int lfd = weft_listen_tcp("127.0.0.1", 0, 128);
    EXPECT(lfd >= 0);
    if (lfd < 0)
        return;
    int port = local_port(lfd);
    int n = (int)sized(32);
    struct tcp_server sv = { lfd, n };
    weft_fiber *acc = weft_spawn(tcp_acceptor, &sv);
    struct tcp_client *c = calloc((size_t)n, sizeof *c);
    weft_fiber **f = calloc((size_t)n, sizeof *f);
    for (int i = 0; i < n; i++) {
        c[i] = (struct tcp_client){ .port = port, .seed = 99u + (uint64_t)i,
                                    .len = (size_t)sized(256 * 1024) };
        f[i] = weft_spawn(tcp_client, &c[i]);
    }
    for (int i = 0; i < n; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    EXPECT(weft_join(acc, NULL) == 0);
    EXPECT(weft_close(lfd) == 0);
    free(c);
    free(f);
}

START_TEST(tcp_echo)
{
    run(0, tcp_main, NULL);
}
END_TEST

static void tcp_errors_main(void *arg)
{
    (void)arg;
    /* A port nobody listens on: take one, close it. */
    int lfd = weft_listen_tcp(NULL, 0, 1);
    EXPECT(lfd >= 0);
    int port = local_port(lfd);
    EXPECT(weft_close(lfd) == 0);
    EXPECT(weft_dial_tcp("127.0.0.1", port, -1) == -ECONNREFUSED);
    EXPECT(weft_dial_tcp("127.0.0.1", 0, -1) == -EINVAL);
    EXPECT(weft_dial_tcp("127.0.0.1", 70000, -1) == -EINVAL);
    EXPECT(weft_listen_tcp("127.0.0.1", -1, 1) == -EINVAL);
    /* Two listeners on one port: the second fails. */
    int a = weft_listen_tcp("127.0.0.1", 0, 1);
    EXPECT(a >= 0);
    EXPECT(weft_listen_tcp("127.0.0.1", local_port(a), 1) == -EADDRINUSE);
    /* "localhost" resolves through getaddrinfo. */
    int b = weft_listen_tcp("localhost", 0, 1);
    EXPECT(b >= 0);
    if (b >= 0)
        EXPECT(weft_close(b) == 0);
    /* Accept with the listener's read timeout. */
    EXPECT(weft_fd_timeouts(a, 20 * 1000000, 0) == 0);
    uint64_t t0 = weft_now();
    EXPECT(weft_accept(a, NULL, NULL) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 20 * 1000000ull);
    EXPECT(weft_close(a) == 0);
}

START_TEST(tcp_errors)
{
    run(2, tcp_errors_main, NULL);
}
END_TEST

/* ---- timeouts --------------------------------------------------------------- */

static void timeouts_main(void *arg)
{
    (void)arg;
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    const int64_t ms = 1000000;
    /* Read timeout; the fd stays usable. */
    EXPECT(weft_fd_timeouts(sv[0], 20 * ms, 0) == 0);
    char c = 0;
    uint64_t t0 = weft_now();
    EXPECT(weft_read(sv[0], &c, 1) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= (uint64_t)(20 * ms));
    EXPECT(weft_write(sv[1], "x", 1) == 1);
    EXPECT(weft_read(sv[0], &c, 1) == 1 && c == 'x');
    EXPECT(weft_recv(sv[0], &c, 1, 0) == -ETIMEDOUT);
    EXPECT(weft_recv(sv[0], &c, 1, MSG_DONTWAIT) == -EAGAIN);
    /* weft_wait_fd's own timeout, and 0: just look. */
    t0 = weft_now();
    EXPECT(weft_wait_fd(sv[0], POLLIN, 10 * ms) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= (uint64_t)(10 * ms));
    EXPECT(weft_wait_fd(sv[0], POLLIN, 0) == -ETIMEDOUT);
    EXPECT(weft_wait_fd(sv[0], POLLOUT, -1) & POLLOUT);
    EXPECT(weft_wait_fd(sv[0], 0, -1) == -EINVAL);
    /* Write timeout: fill the buffer first. */
    static char junk[65536];
    while (weft_send(sv[1], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;
    EXPECT(weft_fd_timeouts(sv[1], 0, 15 * ms) == 0);
    EXPECT(weft_write(sv[1], junk, sizeof junk) == -ETIMEDOUT);
    /* Both directions at once: not writable, not readable. */
    EXPECT(weft_wait_fd(sv[1], POLLIN | POLLOUT, 10 * ms) == -ETIMEDOUT);
    /* Drain it all (until the read timeout): writable again. */
    char big[65536];
    ssize_t r;
    while ((r = weft_read(sv[0], big, sizeof big)) > 0)
        ;
    EXPECT(r == -ETIMEDOUT);
    EXPECT(weft_wait_fd(sv[1], POLLIN | POLLOUT, 10 * ms) & POLLOUT);
    EXPECT(weft_write(sv[1], "y", 1) == 1);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(timeouts)
{
    run(2, timeouts_main, NULL);
}
END_TEST

/* Many fibers time out at once while others get data: each wait ends
 * exactly once, with the right answer. */
struct race {
    int fd[2];
    int give;   /* 1: the peer writes, 0: nobody does */
};

static void *race_reader(void *arg)
{
    struct race *r = arg;
    char c;
    for (int round = 0; round < 20; round++) {
        ssize_t n = weft_read(r->fd[0], &c, 1);
        if (r->give)
            EXPECT(n == 1);
        else
            EXPECT(n == -ETIMEDOUT);
    }
    return NULL;
}

static void *race_writer(void *arg)
{
    struct race *r = arg;
    for (int round = 0; round < 20; round++) {
        EXPECT(weft_write(r->fd[1], "z", 1) == 1);
        weft_yield();
    }
    return NULL;
}

static void timeout_race_main(void *arg)
{
    (void)arg;
    enum { N = 32 };
    struct race r[N];
    weft_fiber *f[2 * N];
    int nf = 0;
    for (int i = 0; i < N; i++) {
        EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, r[i].fd) == 0);
        r[i].give = i & 1;
        /* Short timeouts: the givers' data arrives around the deadline. */
        EXPECT(weft_fd_timeouts(r[i].fd[0], r[i].give ? 5000000000ll : 1000000, 0) == 0);
        f[nf++] = weft_spawn(race_reader, &r[i]);
        if (r[i].give)
            f[nf++] = weft_spawn(race_writer, &r[i]);
    }
    for (int i = 0; i < nf; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    for (int i = 0; i < N; i++) {
        EXPECT(weft_close(r[i].fd[0]) == 0);
        EXPECT(weft_close(r[i].fd[1]) == 0);
    }
}

START_TEST(timeout_race)
{
    run(0, timeout_race_main, NULL);
}
END_TEST

/* ---- close while waiting ---------------------------------------------------- */

static void *blocked_reader(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c;
    EXPECT(weft_read(fd, &c, 1) == -EBADF);
    return NULL;
}

static void *blocked_dual(void *arg)
{
    int fd = (int)(intptr_t)arg;
    EXPECT(weft_wait_fd(fd, POLLIN | POLLOUT, -1) == -EBADF);
    return NULL;
}

static void close_waiting_main(void *arg)
{
    (void)arg;
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    weft_fiber *f = weft_spawn(blocked_reader, (void *)(intptr_t)sv[0]);
    wait_parked(sv[0], NP_READ);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_join(f, NULL) == 0);
    /* A second reader on the same fd while one waits: -EBUSY. */
    int tv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, tv) == 0);
    f = weft_spawn(blocked_reader, (void *)(intptr_t)tv[0]);
    wait_parked(tv[0], NP_READ);
    char c;
    EXPECT(weft_read(tv[0], &c, 1) == -EBUSY);
    EXPECT(weft_close(tv[0]) == 0);
    EXPECT(weft_join(f, NULL) == 0);
    /* A fiber in both slots (weft_wait_fd POLLIN|POLLOUT on a full,
     * unreadable socket). */
    static char junk[65536];
    int uv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, uv) == 0);
    while (weft_send(uv[1], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;
    f = weft_spawn(blocked_dual, (void *)(intptr_t)uv[1]);
    wait_parked(uv[1], NP_READ);
    EXPECT(weft_close(uv[1]) == 0);
    EXPECT(weft_join(f, NULL) == 0);
    EXPECT(weft_close(uv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
    EXPECT(weft_close(tv[1]) == 0);
}

START_TEST(close_while_waiting)
{
    run(0, close_waiting_main, NULL);
}
END_TEST

/* ---- calls on a known fd (fd.c's fast path) --------------------------------- */

/* The first read makes the fd known in the run; the second parks on the
 * fast path and must still see the close. */
static void *known_reader(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c = 0;
    EXPECT(weft_read(fd, &c, 1) == 1 && c == 'k');
    EXPECT(weft_read(fd, &c, 1) == -EBADF);
    return NULL;
}

static void known_fd_main(void *arg)
{
    (void)arg;
    const int64_t ms = 1000000;
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    EXPECT(write(sv[1], "k", 1) == 1);
    weft_fiber *f = weft_spawn(known_reader, (void *)(intptr_t)sv[0]);
    wait_parked(sv[0], NP_READ);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_join(f, NULL) == 0);
    EXPECT(weft_close(sv[1]) == 0);

    /* Every wrapper, byte-exact, once the fds are known. */
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char b[8] = { 0 };
    for (int round = 0; round < 2; round++) {
        EXPECT(weft_write(sv[0], "ab", 2) == 2);
        EXPECT(weft_read(sv[1], b, 2) == 2 && memcmp(b, "ab", 2) == 0);
        struct iovec out[2] = { { "cd", 2 }, { "efg", 3 } };
        EXPECT(weft_writev(sv[1], out, 2) == 5);
        char x[2], y[3];
        struct iovec in[2] = { { x, 2 }, { y, 3 } };
        EXPECT(weft_readv(sv[0], in, 2) == 5);
        EXPECT(memcmp(x, "cd", 2) == 0 && memcmp(y, "efg", 3) == 0);
        EXPECT(weft_send(sv[0], "hij", 3, 0) == 3);
        EXPECT(weft_recv(sv[1], b, sizeof b, 0) == 3 && memcmp(b, "hij", 3) == 0);
        EXPECT(weft_sendto(sv[1], "kl", 2, 0, NULL, 0) == 2);
        EXPECT(weft_recvfrom(sv[0], b, sizeof b, 0, NULL, NULL) == 2 && memcmp(b, "kl", 2) == 0);
    }
    /* MSG_DONTWAIT reports EAGAIN instead of waiting. */
    EXPECT(weft_recv(sv[1], b, sizeof b, MSG_DONTWAIT) == -EAGAIN);
    static char junk[65536];
    ssize_t r;
    while ((r = weft_send(sv[0], junk, sizeof junk, MSG_DONTWAIT)) > 0)
        ;
    EXPECT(r == -EAGAIN);
    /* Per-fd timeouts apply in both directions, and the fd stays usable. */
    EXPECT(weft_fd_timeouts(sv[0], 5 * ms, 5 * ms) == 0);
    EXPECT(weft_write(sv[0], "m", 1) == -ETIMEDOUT);
    EXPECT(weft_read(sv[0], b, 1) == -ETIMEDOUT);
    while (weft_recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;
    EXPECT(weft_write(sv[0], "n", 1) == 1);
    EXPECT(weft_read(sv[1], b, 1) == 1 && b[0] == 'n');
    /* A bad buffer is the kernel's -EFAULT, not a crash. */
    EXPECT(weft_write(sv[1], "o", 1) == 1);
    EXPECT(weft_read(sv[0], (void *)8, 1) == -EFAULT);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(known_fd_calls)
{
    run(2, known_fd_main, NULL);
}
END_TEST

/* ---- a read after a short read waits for the edge (np_read_skips) -------- */

struct late_write {
    int fd;
    int rfd;
};

static void *late_b_writer(void *arg)
{
    struct late_write *l = arg;
    wait_parked(l->rfd, NP_READ);
    EXPECT(weft_write(l->fd, "b", 1) == 1);
    return NULL;
}

static void read_skip_main(void *arg)
{
    (void)arg;
    const int64_t s = 1000000000;
    int sv[2];
    char b[100];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    EXPECT(weft_fd_timeouts(sv[0], 5 * s, 0) == 0);
    EXPECT(weft_recv(sv[0], b, sizeof b, MSG_DONTWAIT) == -EAGAIN); /* known now */
    struct np_desc *pd = np_lookup(sv[0]);
    EXPECT(pd != NULL);
    /* A short read: the next read skips its call and waits, and the
     * write that comes later wakes it with the byte. */
    EXPECT(write(sv[1], "a", 1) == 1);
    EXPECT(weft_recv(sv[0], b, sizeof b, 0) == 1 && b[0] == 'a');
    EXPECT(np_read_skips(pd));
    struct late_write l = { sv[1], sv[0] };
    weft_fiber *f = weft_spawn(late_b_writer, &l);
    EXPECT(weft_recv(sv[0], b, sizeof b, 0) == 1 && b[0] == 'b');
    EXPECT(weft_join(f, NULL) == 0);
    /* A full read says nothing about what is left. */
    EXPECT(write(sv[1], "cd", 2) == 2);
    EXPECT(weft_read(sv[0], b, 1) == 1 && b[0] == 'c');
    EXPECT(!np_read_skips(pd));
    EXPECT(weft_read(sv[0], b, sizeof b) == 1 && b[0] == 'd');
    /* Data and end of file, both delivered before the read that takes
     * the data: that read is short, but end of file raises no further
     * edge, so the next read must make its call (and get 0), not wait. */
    EXPECT(write(sv[1], "e", 1) == 1);
    EXPECT(close(sv[1]) == 0);
    while (!atomic_load(&pd->rdhup))
        weft_yield(); /* the worker's tick poll delivers the hang-up */
    EXPECT(weft_recv(sv[0], b, sizeof b, 0) == 1 && b[0] == 'e');
    EXPECT(weft_recv(sv[0], b, sizeof b, 0) == 0);
    EXPECT(weft_close(sv[0]) == 0);
}

START_TEST(read_after_short_read)
{
    run(1, read_skip_main, NULL);
}
END_TEST

/* ---- dual waits, stale timers ------------------------------------------------ */

static void *dual_waiter(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int r = weft_wait_fd(fd, POLLIN | POLLOUT, -1);
    EXPECT(r > 0 && (r & POLLIN) && !(r & POLLOUT));
    return NULL;
}

struct late {
    int rfd, wfd;
};

static void *late_writer(void *arg)
{
    struct late *l = arg;
    wait_parked(l->rfd, NP_READ);
    EXPECT(weft_write(l->wfd, "L", 1) == 1);
    return NULL;
}

static void dual_main(void *arg)
{
    (void)arg;
    const int64_t ms = 1000000;
    /* A fiber in both slots, woken by input: both slots are left free. */
    int uv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, uv) == 0);
    static char junk[65536];
    while (weft_send(uv[1], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;
    weft_fiber *f = weft_spawn(dual_waiter, (void *)(intptr_t)uv[1]);
    wait_parked(uv[1], NP_WRITE);
    EXPECT(weft_write(uv[0], "d", 1) == 1);
    EXPECT(weft_join(f, NULL) == 0);
    char c = 0;
    EXPECT(weft_read(uv[1], &c, 1) == 1 && c == 'd');
    EXPECT(weft_wait_fd(uv[1], POLLOUT, 5 * ms) == -ETIMEDOUT);
    EXPECT(weft_close(uv[0]) == 0);
    EXPECT(weft_close(uv[1]) == 0);

    /* I/O beats the timer; the timer left behind (when the fiber resumed
     * on another worker) must not end the next wait early. */
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    EXPECT(weft_fd_timeouts(sv[0], 30 * ms, 0) == 0);
    for (int round = 0; round < 4; round++) {
        struct late l = { sv[0], sv[1] };
        f = weft_spawn(late_writer, &l);
        EXPECT(weft_read(sv[0], &c, 1) == 1 && c == 'L');
        EXPECT(weft_join(f, NULL) == 0);
        uint64_t t1 = weft_now();
        EXPECT(weft_read(sv[0], &c, 1) == -ETIMEDOUT);
        EXPECT(weft_now() - t1 >= (uint64_t)(30 * ms));
    }
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(dual_wait_and_stale_timers)
{
    run(2, dual_main, NULL);
}
END_TEST

/* ---- migration, busy workers ------------------------------------------------- */

struct pingpong {
    int fd;
    int rounds;
    _Atomic int moved;
};

static void *ponger(void *arg)
{
    struct pingpong *p = arg;
    int last = weft_worker();
    for (int i = 0; i < p->rounds; i++) {
        uint32_t v = 0;
        EXPECT(weft_read(p->fd, &v, sizeof v) == sizeof v);
        EXPECT(v == (uint32_t)i);
        if (weft_worker() != last)
            atomic_fetch_add(&p->moved, 1);
        last = weft_worker();
        v++;
        EXPECT(weft_write(p->fd, &v, sizeof v) == sizeof v);
    }
    return NULL;
}

static void migrate_main(void *arg)
{
    (void)arg;
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct pingpong p = { .fd = sv[1], .rounds = (int)sized(5000) };
    weft_fiber *f = weft_spawn(ponger, &p);
    for (int i = 0; i < p.rounds; i++) {
        uint32_t v = (uint32_t)i;
        EXPECT(weft_write(sv[0], &v, sizeof v) == sizeof v);
        EXPECT(weft_read(sv[0], &v, sizeof v) == sizeof v);
        EXPECT(v == (uint32_t)i + 1);
    }
    EXPECT(weft_join(f, NULL) == 0);
    const char *m = getenv("WEFT_DEBUG_MIGRATE");
    if (m && *m == '1')
        EXPECT(atomic_load(&p.moved) > 0);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(migrate_between_waits)
{
    run(2, migrate_main, NULL);
}
END_TEST

/* One worker, one fiber that never parks: the worker must still read its
 * epoll (the tick poll), or the reader would never wake. */
static _Atomic int busy_done;

static void *busy_spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&busy_done))
        weft_yield();
    return NULL;
}

static void *busy_thread_writer(void *arg)
{
    const int *sv = arg;
    wait_parked(sv[0], NP_READ);
    EXPECT(write(sv[1], "q", 1) == 1);
    return NULL;
}

static void busy_main(void *arg)
{
    (void)arg;
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    atomic_store(&busy_done, 0);
    weft_fiber *spin = weft_spawn(busy_spinner, NULL);
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, busy_thread_writer, sv) == 0);
    char c = 0;
    EXPECT(weft_read(sv[0], &c, 1) == 1 && c == 'q');
    atomic_store(&busy_done, 1);
    EXPECT(weft_join(spin, NULL) == 0);
    pthread_join(t, NULL);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(busy_worker_polls)
{
    run(1, busy_main, NULL);
}
END_TEST

/* ---- errors, files ------------------------------------------------------------ */

static void errors_main(void *arg)
{
    (void)arg;
    char buf[64];
    EXPECT(weft_read(-1, buf, 1) == -EBADF);
    EXPECT(weft_write(-1, buf, 1) == -EBADF);
    EXPECT(weft_close(-1) == -EBADF);
    EXPECT(weft_wait_fd(-1, POLLIN, 0) == -EBADF);
    EXPECT(weft_fd_timeouts(-1, 0, 0) == -EBADF);
    EXPECT(weft_accept(-1, NULL, NULL) == -EBADF);
    EXPECT(weft_connect(-1, NULL, 0) == -EBADF);
    /* A number that is not open. Far above the fds in use: the kernel
     * hands out the lowest free number, and other threads of the process
     * (the runtime's monitor, while it starts) may open fds meanwhile, so
     * a low number just closed could be reused before we try it. */
    int p[2];
    EXPECT(pipe(p) == 0);
    int dead = fcntl(p[0], F_DUPFD_CLOEXEC, 900);
    EXPECT(dead >= 900);
    EXPECT(weft_close(dead) == 0);
    EXPECT(weft_read(dead, buf, 1) == -EBADF);
    EXPECT(weft_close(dead) == -EBADF);
    EXPECT(weft_wait_fd(dead, POLLIN, 0) == -EBADF);
    EXPECT(weft_fd_timeouts(dead, 1, 1) == -EBADF);
    /* Negative: no timeout (the contract), not an error. */
    EXPECT(weft_fd_timeouts(p[1], -1, 0) == 0);
    /* Socket calls on a pipe. */
    EXPECT(weft_send(p[1], "a", 1, 0) == -ENOTSOCK);
    EXPECT(weft_recv(p[1], buf, 1, 0) == -ENOTSOCK);
    EXPECT(weft_accept(p[1], NULL, NULL) == -ENOTSOCK);
    struct sockaddr_in a = { .sin_family = AF_INET };
    EXPECT(weft_connect(p[1], (struct sockaddr *)&a, sizeof a) == -ENOTSOCK);
    EXPECT(weft_close(p[0]) == 0);
    EXPECT(weft_close(p[1]) == 0);
    /* A regular file: plain calls. */
    char path[] = "/tmp/weft-test-io-XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0);
    unlink(path);
    EXPECT(weft_write(fd, "hello, file", 11) == 11);
    EXPECT(lseek(fd, 0, SEEK_SET) == 0);
    memset(buf, 0, sizeof buf);
    EXPECT(weft_read(fd, buf, sizeof buf) == 11);
    EXPECT(memcmp(buf, "hello, file", 11) == 0);
    EXPECT(weft_read(fd, buf, sizeof buf) == 0);
    EXPECT(weft_wait_fd(fd, POLLIN, -1) == POLLIN);
    EXPECT(weft_recv(fd, buf, 1, 0) == -ENOTSOCK);
    EXPECT(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
    EXPECT(weft_close(fd) == 0);
    /* A blocking fd turns non-blocking on first use in a fiber. */
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    EXPECT(weft_write(sv[0], "k", 1) == 1);
    EXPECT(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_read(sv[1], buf, 2) == 1);
    EXPECT(weft_read(sv[1], buf, 2) == 0);
    EXPECT(weft_send(sv[1], "k", 1, 0) == -EPIPE);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(errors_and_files)
{
    run(2, errors_main, NULL);
}
END_TEST

/* ---- plain threads -------------------------------------------------------------- */

static void *plain_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (int i = 0; i < 1000; i++)
        if (weft_write(fd, &i, sizeof i) != sizeof i)
            return (void *)1;
    return NULL;
}

static int g_sv[2];

static void touch_main(void *arg)
{
    (void)arg;
    /* Makes g_sv[0] non-blocking (registered in a worker's epoll). */
    EXPECT(weft_wait_fd(g_sv[0], POLLOUT, -1) & POLLOUT);
    EXPECT(fcntl(g_sv[0], F_GETFL) & O_NONBLOCK);
}

START_TEST(plain_thread_calls)
{
    char buf[16];
    ck_assert_int_eq(weft_read(-1, buf, 1), -EBADF);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(weft_recv(p[0], buf, 1, 0), -ENOTSOCK);
    ck_assert_int_eq(weft_wait_fd(p[0], POLLIN, 1000000), -ETIMEDOUT);
    ck_assert_int_eq(weft_close(p[0]), 0);
    ck_assert_int_eq(weft_close(p[1]), 0);

    /* An fd the runtime made non-blocking still blocks a plain thread. */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    run(2, touch_main, NULL);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, plain_writer, (void *)(intptr_t)g_sv[1]), 0);
    for (int i = 0; i < 1000; i++) {
        int v = -1;
        ck_assert_int_eq(weft_read(g_sv[0], &v, sizeof v), sizeof v);
        ck_assert_int_eq(v, i);
    }
    void *res;
    pthread_join(t, &res);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(weft_fd_timeouts(g_sv[0], 5000000, 0), 0);
    ck_assert_int_eq(weft_read(g_sv[0], buf, 1), -ETIMEDOUT);
    ck_assert_int_eq(weft_close(g_sv[0]), 0);
    ck_assert_int_eq(weft_close(g_sv[1]), 0);

    /* TCP with no runtime at all. */
    int lfd = weft_listen_tcp("127.0.0.1", 0, 4);
    ck_assert_int_ge(lfd, 0);
    int cfd = weft_dial_tcp("127.0.0.1", local_port(lfd), 1000000000);
    ck_assert_int_ge(cfd, 0);
    int afd = weft_accept(lfd, NULL, NULL);
    ck_assert_int_ge(afd, 0);
    ck_assert_int_eq(weft_send(cfd, "ping", 4, 0), 4);
    ck_assert_int_eq(weft_recv(afd, buf, 4, MSG_WAITALL), 4);
    ck_assert_int_eq(memcmp(buf, "ping", 4), 0);
    ck_assert_int_eq(weft_fd_timeouts(lfd, 2000000, 0), 0);
    ck_assert_int_eq(weft_accept(lfd, NULL, NULL), -ETIMEDOUT);
    ck_assert_int_eq(weft_close(afd), 0);
    ck_assert_int_eq(weft_close(cfd), 0);
    ck_assert_int_eq(weft_close(lfd), 0);
}
END_TEST

/* ---- weft_fd_timeouts: negative or 0 is no timeout ------------------------ */

struct unlimited_write {
    int         fd;
    _Atomic int done;
    ssize_t     result;
};

static void *unlimited_writer(void *arg)
{
    struct unlimited_write *u = arg;
    static char junk[4096];
    u->result = weft_write(u->fd, junk, sizeof junk);
    atomic_store(&u->done, 1);
    return NULL;
}

static void negative_timeouts_main(void *arg)
{
    (void)arg;
    const int64_t ms = 1000000;
    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    EXPECT(weft_fd_timeouts(sv[0], 30 * ms, -1) == 0);
    struct np_desc *pd = np_lookup(sv[0]);
    EXPECT(pd != NULL);
    if (!pd)
        return;
    EXPECT(atomic_load(&pd->timeout[NP_READ]) == 30 * ms);
    EXPECT(atomic_load(&pd->timeout[NP_WRITE]) == 0);
    /* Reads time out after about 30 ms ... */
    char c;
    uint64_t t0 = weft_now();
    EXPECT(weft_read(sv[0], &c, 1) == -ETIMEDOUT);
    uint64_t took = weft_now() - t0;
    EXPECT(took >= (uint64_t)(30 * ms));
    EXPECT(took < (uint64_t)(10000 * ms));
    /* ... writes have no limit: one into a full socket is still waiting
     * long after 30 ms, and completes once the peer reads. */
    static char junk[65536];
    while (weft_send(sv[0], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;
    struct unlimited_write u = { .fd = sv[0] };
    weft_fiber *f = weft_spawn(unlimited_writer, &u);
    wait_parked(sv[0], NP_WRITE);
    /* Time for a write timeout to fire if there were one; nothing is
     * synchronised by this sleep. */
    EXPECT(weft_sleep(150 * ms) == 0);
    EXPECT(!atomic_load(&u.done));
    EXPECT(atomic_load(&pd->slot[NP_WRITE]) > 2);
    while (weft_recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) > 0)
        ;
    EXPECT(weft_join(f, NULL) == 0);
    EXPECT(u.result == 4096);
    /* Any negative value, either direction, and 0: none. */
    EXPECT(weft_fd_timeouts(sv[1], -5, INT64_MIN) == 0);
    struct np_desc *pd1 = np_lookup(sv[1]);
    EXPECT(pd1 && atomic_load(&pd1->timeout[NP_READ]) == 0 &&
           atomic_load(&pd1->timeout[NP_WRITE]) == 0);
    EXPECT(weft_fd_timeouts(sv[0], 0, -1) == 0);
    EXPECT(atomic_load(&pd->timeout[NP_READ]) == 0);
    EXPECT(weft_close(sv[0]) == 0);
    EXPECT(weft_close(sv[1]) == 0);
}

START_TEST(fd_timeouts_negative_is_none)
{
    run(2, negative_timeouts_main, NULL);
}
END_TEST

/* ---- writes to a peer that closed: -EPIPE, never SIGPIPE ------------------- */

/* Write to fd (whose peer is gone) until a write fails with something
 * other than ECONNRESET (TCP reports the peer's reset once, then EPIPE):
 * that result, or 0 if none failed. */
static ssize_t write_until_error(int fd, int vectored)
{
    static char junk[256];
    for (int i = 0; i < 64; i++) {
        ssize_t r;
        if (vectored) {
            struct iovec iov[2] = { { junk, 100 }, { junk + 100, 100 } };
            r = weft_writev(fd, iov, 2);
        } else {
            r = weft_write(fd, junk, 200);
        }
        if (r < 0 && r != -ECONNRESET)
            return r;
    }
    return 0;
}

/* A socketpair whose peer end is closed already: the live end. */
static int orphan_unix_socket(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return -1;
    close(sv[1]);
    return sv[0];
}

/* A connected TCP socket whose peer has been closed. */
static int orphan_tcp_socket(void)
{
    int lfd = weft_listen_tcp("127.0.0.1", 0, 4);
    if (lfd < 0)
        return -1;
    int cfd = weft_dial_tcp("127.0.0.1", local_port(lfd), 10 * 1000000000ll);
    int afd = cfd >= 0 ? weft_accept(lfd, NULL, NULL) : -1;
    weft_close(lfd);
    if (afd < 0) {
        if (cfd >= 0)
            weft_close(cfd);
        return -1;
    }
    weft_close(afd);
    return cfd;
}

/* Every write path to an orphaned socket (first call, known fd, write
 * and writev, UNIX and TCP) returns -EPIPE. */
static void epipe_checks(void)
{
    for (int vectored = 0; vectored < 2; vectored++) {
        int fd = orphan_unix_socket();
        EXPECT(fd >= 0);
        EXPECT(write_until_error(fd, vectored) == -EPIPE); /* first use */
        EXPECT(write_until_error(fd, vectored) == -EPIPE); /* fd known */
        EXPECT(write_until_error(fd, !vectored) == -EPIPE);
        EXPECT(weft_send(fd, "x", 1, 0) == -EPIPE);
        EXPECT(weft_close(fd) == 0);
        fd = orphan_tcp_socket();
        EXPECT(fd >= 0);
        EXPECT(write_until_error(fd, vectored) == -EPIPE);
        EXPECT(write_until_error(fd, !vectored) == -EPIPE);
        EXPECT(weft_close(fd) == 0);
    }
    /* writev's own checks stay writev's, on a socket too. */
    int fd = orphan_unix_socket();
    struct iovec iov[1] = { { "x", 1 } };
    EXPECT(weft_writev(fd, iov, -1) == -EINVAL);
    EXPECT(weft_writev(fd, iov, IOV_MAX + 1) == -EINVAL);
    EXPECT(weft_close(fd) == 0);
}

static void *epipe_plain_thread(void *arg)
{
    (void)arg;
    epipe_checks();
    return NULL;
}

static void epipe_main(void *arg)
{
    (void)arg;
    epipe_checks();
    /* A plain thread while the runtime runs. */
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, epipe_plain_thread, NULL) == 0);
    EXPECT(pthread_join(t, NULL) == 0);
}

/* In a child with SIGPIPE at its default (killing) disposition: on a
 * plain thread with no runtime, then in fibers and a plain thread during
 * a run. Exit status 0 if every expectation held. */
static void epipe_child(void)
{
    signal(SIGPIPE, SIG_DFL);
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigprocmask(SIG_UNBLOCK, &pipe_only, NULL);
    epipe_checks();
    weft_config c;
    weft_config_init(&c);
    c.workers = 2;
    int rc = weft_run(&c, epipe_main, NULL);
    if (rc != 0 || atomic_load(&expect_failed)) {
        fprintf(stderr, "weft_run %d; %s\n", rc, expect_where);
        _exit(1);
    }
    _exit(0);
}

START_TEST(write_to_closed_peer_is_epipe)
{
    struct child_result r = run_in_child(epipe_child);
    ck_assert_msg(r.exited && r.status == 0, "child: exit %d, signal %d (SIGPIPE is %d): %s",
                  r.status, r.sig, SIGPIPE, r.err);
}
END_TEST

/* ---- fds the near table does not reach -------------------------------------- */

/* A fiber waiting to read fd, which is closed under it. */
static void *far_reader(void *arg)
{
    char c;
    EXPECT(weft_read((int)(intptr_t)arg, &c, 1) == -EBADF);
    return NULL;
}

static void far_fds_main(void *arg)
{
    char buf[4] = { 0 };
    struct iovec iov[1] = { { buf, 1 } };
    struct sockaddr_in a = { .sin_family = AF_INET };
    /* Not open: -EBADF from every call, not "a regular file, ready". */
    const int bad[] = { INT_MAX, (int)NP_NEAR_FDS, (int)NP_NEAR_FDS + 12345, INT_MAX - 1024 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = bad[i];
        EXPECT(weft_wait_fd(fd, POLLIN, -1) == -EBADF);
        EXPECT(weft_wait_fd(fd, POLLOUT, 0) == -EBADF);
        EXPECT(weft_read(fd, buf, 1) == -EBADF);
        EXPECT(weft_write(fd, buf, 1) == -EBADF);
        EXPECT(weft_readv(fd, iov, 1) == -EBADF);
        EXPECT(weft_writev(fd, iov, 1) == -EBADF);
        EXPECT(weft_recv(fd, buf, 1, 0) == -EBADF);
        EXPECT(weft_send(fd, buf, 1, 0) == -EBADF);
        EXPECT(weft_accept(fd, NULL, NULL) == -EBADF);
        EXPECT(weft_connect(fd, (struct sockaddr *)&a, sizeof a) == -EBADF);
        EXPECT(weft_fd_timeouts(fd, 1, 1) == -EBADF);
        EXPECT(weft_close(fd) == -EBADF);
    }
    /* A stray large number costs no descriptor chunk. */
    EXPECT(np_lookup(INT_MAX) == NULL);
    int far = (int)(intptr_t)arg;
    if (far < 0)
        return;
    /* An open fd beyond the near table behaves as any other. */
    const int64_t ms = 1000000;
    int peer = far - 1;
    EXPECT(weft_write(peer, "ab", 2) == 2);
    EXPECT(weft_wait_fd(far, POLLIN, 1000 * ms) & POLLIN);
    EXPECT(weft_read(far, buf, 1) == 1 && buf[0] == 'a');
    EXPECT(weft_read(far, buf, 4) == 1 && buf[0] == 'b');
    struct np_desc *pd = np_lookup(far);
    EXPECT(pd && pd->fd == far && np_known_pollable(pd));
    EXPECT(weft_fd_timeouts(far, 20 * ms, -1) == 0);
    EXPECT(weft_read(far, buf, 1) == -ETIMEDOUT);
    EXPECT(weft_send(far, "c", 1, 0) == 1);
    EXPECT(weft_recv(peer, buf, 4, 0) == 1 && buf[0] == 'c');
    weft_fiber *f = weft_spawn(far_reader, (void *)(intptr_t)far);
    wait_parked(far, NP_READ);
    EXPECT(weft_close(far) == 0);
    EXPECT(weft_join(f, NULL) == 0);
    EXPECT(weft_wait_fd(far, POLLIN, -1) == -EBADF);
    EXPECT(weft_close(peer) == 0);
}

START_TEST(fds_beyond_the_table)
{
    /* A valid fd past the near table needs RLIMIT_NOFILE (and so the
     * system's fs.nr_open) above 4M; where the system allows less, the
     * test covers the numbers that are not open only, and says so. */
    int far = -1;
    struct rlimit rl = { NP_NEAR_FDS + 64, NP_NEAR_FDS + 64 };
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        far = (int)NP_NEAR_FDS + 9;
        ck_assert_int_eq(dup2(sv[0], far), far);
        ck_assert_int_eq(dup2(sv[1], far - 1), far - 1);
        close(sv[0]);
        close(sv[1]);
    } else {
        fprintf(stderr, "fds_beyond_the_table: RLIMIT_NOFILE cannot exceed %u here "
                "(fs.nr_open); open far fds not exercised\n", NP_NEAR_FDS);
    }
    run(2, far_fds_main, (void *)(intptr_t)far);
}
END_TEST

/* ---- weft_close forgets the fd before the number is free ------------------ */

/*
 * close() is interposed for this test program: after the real close, an
 * armed hook runs as "another party" that gets the number at once. np_close
 * calls it right at the step that frees the number, so the hook sees
 * what such a party would, deterministically.
 */
static void (*_Atomic after_close)(int fd);

static int real_close(int fd)
{
    static _Atomic(int (*)(int)) real;
    int (*f)(int) = atomic_load_explicit(&real, memory_order_acquire);
    if (!f) {
        void *sym = dlsym(RTLD_NEXT, "close");
        memcpy(&f, &sym, sizeof f);
        atomic_store_explicit(&real, f, memory_order_release);
    }
    return f(fd);
}

int close(int fd)
{
    int r = real_close(fd);
    void (*hook)(int) = atomic_load(&after_close);
    if (hook && r == 0)
        hook(fd);
    return r;
}

static struct {
    int target, keeper;   /* the fd weft_close'd; an fd to dup2 onto it */
    int newfd, stale_known, waiter_gone, timeouts_rc;
} reuse;

/* The new owner of the number: dup2 onto it, look at the descriptor as
 * the fast path would, set a read timeout (weft_fd_timeouts takes no
 * lock, so it may run while np_close still holds pd->lock). */
static void reuse_number(int fd)
{
    if (fd != reuse.target)
        return;
    atomic_store(&after_close, NULL);
    reuse.newfd = dup2(reuse.keeper, fd);
    struct np_desc *pd = np_lookup(fd);
    reuse.stale_known = pd && np_known_pollable(pd);
    reuse.waiter_gone = pd && atomic_load(&pd->slot[NP_READ]) <= 2 &&
                        atomic_load(&pd->slot[NP_WRITE]) <= 2;
    reuse.timeouts_rc = weft_fd_timeouts(fd, 30 * 1000000ll, 0);
}

static void close_reuse_main(void *arg)
{
    (void)arg;
    for (int round = 0; round < 2; round++) {
        int sv[2], tv[2];
        EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, tv) == 0);
        /* The fd to close is known to the netpoller, with a timeout set
         * and, in round 1, a reader parked on it. */
        EXPECT(weft_wait_fd(sv[0], POLLOUT, -1) & POLLOUT);
        EXPECT(weft_fd_timeouts(sv[0], 0, 5 * 1000000000ll) == 0);
        weft_fiber *f = NULL;
        if (round == 1) {
            f = weft_spawn(far_reader, (void *)(intptr_t)sv[0]);
            wait_parked(sv[0], NP_READ);
        }
        memset(&reuse, 0, sizeof reuse);
        reuse.target = sv[0];
        reuse.keeper = tv[0];
        reuse.newfd = -1;
        atomic_store(&after_close, reuse_number);
        EXPECT(weft_close(sv[0]) == 0);
        atomic_store(&after_close, NULL);
        if (f)
            EXPECT(weft_join(f, NULL) == 0);
        int fd = sv[0];
        EXPECT(reuse.newfd == fd);
        if (reuse.newfd != fd)
            continue;
        /* What the new owner saw and set survives the close. */
        EXPECT(!reuse.stale_known);
        EXPECT(reuse.waiter_gone);
        EXPECT(reuse.timeouts_rc == 0);
        struct np_desc *pd = np_lookup(fd);
        int kept = pd && atomic_load(&pd->timeout[NP_READ]) == 30 * 1000000ll &&
                   atomic_load(&pd->timeout[NP_WRITE]) == 0;
        EXPECT(kept);
        /* And the new fd works: registered afresh, its timeout honoured
         * (only asked when kept: else the read would wait for ever). */
        if (kept) {
            char c;
            EXPECT(weft_read(fd, &c, 1) == -ETIMEDOUT);
            EXPECT(weft_write(tv[1], "r", 1) == 1);
            EXPECT(weft_read(fd, &c, 1) == 1 && c == 'r');
        }
        EXPECT(weft_close(fd) == 0);
        EXPECT(weft_close(tv[0]) == 0);
        EXPECT(weft_close(tv[1]) == 0);
        EXPECT(weft_close(sv[1]) == 0);
    }
}

START_TEST(close_forgets_before_the_number_is_free)
{
    run(2, close_reuse_main, NULL);
}
END_TEST

/* ---- a woken waiter's frame is not touched after the wake ------------------- */

/*
 * np_wait's record (struct np_wait) is on the waiting fiber's stack.
 * Pairs of fibers on every worker ping-pong bytes (woken by edges), and
 * now and then a reader is woken by weft_close (-EBADF) or by its
 * per-fd timeout (-ETIMEDOUT); right after every wake the woken fiber
 * writes over the stack below its frame. An unblocker, timer or commit
 * still touching the record after the wake races with those writes
 * (TSan) or changes them under the fiber's checks.
 */
#define WAKE_PAIRS 4

static void *closed_reader(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c;
    EXPECT(weft_read(fd, &c, 1) == -EBADF);
    EXPECT(scribble_below((uint64_t)fd));
    return NULL;
}

static void *ping_side(void *arg)
{
    int *fds = arg;   /* fds[0] ours, fds[1] the peer's, fds[2] iterations */
    int fd = fds[0];
    char c = 0;
    for (int i = 0; i < fds[2]; i++) {
        EXPECT(weft_write(fd, &c, 1) == 1);
        EXPECT(weft_read(fd, &c, 1) == 1);
        EXPECT(scribble_below((uint64_t)i));
        c++;
    }
    return NULL;
}

static void *wake_pair(void *arg)
{
    long n = (long)(intptr_t)arg;
    const int64_t ms = 1000000;
    for (long done = 0; done < n;) {
        /* Edges: a ping-pong of 64 rounds. */
        int sv[2];
        EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        int a[3] = { sv[0], sv[1], 64 }, b[3] = { sv[1], sv[0], 64 };
        weft_fiber *fa = weft_spawn(ping_side, a);
        weft_fiber *fb = weft_spawn(ping_side, b);
        EXPECT(weft_join(fa, NULL) == 0 && weft_join(fb, NULL) == 0);
        done += 2 * 64;
        /* A reader woken by close. */
        weft_fiber *r = weft_spawn(closed_reader, (void *)(intptr_t)sv[0]);
        wait_parked(sv[0], NP_READ);
        EXPECT(weft_close(sv[0]) == 0);
        EXPECT(weft_join(r, NULL) == 0);
        done++;
        /* A reader woken by its timeout. */
        char c;
        EXPECT(weft_fd_timeouts(sv[1], 1 * ms, -1) == 0);
        EXPECT(weft_read(sv[1], &c, 1) == 0); /* the peer is gone: EOF */
        int tv[2];
        EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, tv) == 0);
        EXPECT(weft_fd_timeouts(tv[0], 1 * ms, -1) == 0);
        EXPECT(weft_read(tv[0], &c, 1) == -ETIMEDOUT);
        EXPECT(scribble_below((uint64_t)done));
        done++;
        EXPECT(weft_close(tv[0]) == 0 && weft_close(tv[1]) == 0);
        EXPECT(weft_close(sv[1]) == 0);
    }
    return NULL;
}

static void wake_frames_main(void *arg)
{
    (void)arg;
    long per = sized(100000) / WAKE_PAIRS;
    weft_fiber *f[WAKE_PAIRS];
    for (int i = 0; i < WAKE_PAIRS; i++)
        f[i] = weft_spawn(wake_pair, (void *)(intptr_t)per);
    for (int i = 0; i < WAKE_PAIRS; i++)
        EXPECT(f[i] && weft_join(f[i], NULL) == 0);
}

START_TEST(waiter_frame_not_touched_after_wake)
{
    run(0, wake_frames_main, NULL);
}
END_TEST

/* ---- fibers woken by I/O run in the order their I/O became ready ------ */

#define FIFO_N 24

struct fifo_state {
    int         pipes[FIFO_N][2];
    _Atomic int next;          /* position in the run order */
    int         ran_at[FIFO_N];
};

static struct fifo_state fifo;

static void *fifo_reader(void *arg)
{
    int i = (int)(intptr_t)arg;
    char c;
    EXPECT(weft_read(fifo.pipes[i][0], &c, 1) == 1);
    fifo.ran_at[i] = atomic_fetch_add(&fifo.next, 1);
    return NULL;
}

static void fifo_main(void *arg)
{
    (void)arg;
    weft_fiber *f[FIFO_N];
    for (int i = 0; i < FIFO_N; i++) {
        EXPECT(pipe(fifo.pipes[i]) == 0);
        f[i] = weft_spawn(fifo_reader, (void *)(intptr_t)i);
    }
    for (int i = 0; i < FIFO_N; i++)
        wait_parked(fifo.pipes[i][0], NP_READ);
    /* Every reader is parked in the poller: make them ready in a
     * scrambled order, all before this worker polls again. */
    int order[FIFO_N];
    for (int i = 0; i < FIFO_N; i++)
        order[i] = (i * 7) % FIFO_N; /* 7 is prime to 24: a permutation */
    for (int i = 0; i < FIFO_N; i++)
        EXPECT(write(fifo.pipes[order[i]][1], "x", 1) == 1);
    for (int i = 0; i < FIFO_N; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    for (int i = 0; i < FIFO_N; i++)
        EXPECT(fifo.ran_at[order[i]] == i);
    for (int i = 0; i < FIFO_N; i++) {
        weft_close(fifo.pipes[i][0]);
        close(fifo.pipes[i][1]);
    }
}

START_TEST(io_wakeups_first_in_first_out)
{
    if (getenv("WEFT_DEBUG_MIGRATE") && strcmp(getenv("WEFT_DEBUG_MIGRATE"), "0") != 0)
        return; /* the debug mode sends every wake-up elsewhere */
    memset(&fifo, 0, sizeof fifo);
    run(1, fifo_main, NULL);
}
END_TEST

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("io");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, stream_socketpairs);
    tcase_add_test(tc, stream_pipes);
    tcase_add_test(tc, stream_one_worker);
    tcase_add_test(tc, tcp_echo);
    tcase_add_test(tc, tcp_errors);
    tcase_add_test(tc, timeouts);
    tcase_add_test(tc, timeout_race);
    tcase_add_test(tc, close_while_waiting);
    tcase_add_test(tc, known_fd_calls);
    tcase_add_test(tc, read_after_short_read);
    tcase_add_test(tc, dual_wait_and_stale_timers);
    tcase_add_test(tc, migrate_between_waits);
    tcase_add_test(tc, busy_worker_polls);
    tcase_add_test(tc, errors_and_files);
    tcase_add_test(tc, plain_thread_calls);
    tcase_add_test(tc, io_wakeups_first_in_first_out);
    suite_add_tcase(s, tc);
    /* One case each, so that CK_RUN_CASE can run them alone. */
    const struct {
        const char  *name;
        const TTest *test;
    } alone[] = {
        { "fd_timeouts_negative", fd_timeouts_negative_is_none },
        { "epipe", write_to_closed_peer_is_epipe },
        { "far_fds", fds_beyond_the_table },
        { "close_reuse", close_forgets_before_the_number_is_free },
        { "waiter_last_touch", waiter_frame_not_touched_after_wake },
    };
    for (size_t i = 0; i < sizeof alone / sizeof alone[0]; i++) {
        TCase *t = tcase_create(alone[i].name);
        tcase_add_checked_fixture(t, fixture_setup, fixture_teardown);
        tcase_set_timeout(t, 120);
        tcase_add_test(t, alone[i].test);
        suite_add_tcase(s, t);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(io_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
