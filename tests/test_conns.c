/*
 * test-conns: 10,000 TCP connections open at once through the netpoller.
 *
 * The test process runs a weft echo server (an accept fiber and a fiber
 * per connection, as examples/echo_server does); a child process it forks
 * runs one client fiber per connection under its own weft_run. Two
 * processes, because each TCP connection costs a descriptor at both ends
 * and RLIMIT_NOFILE is per process: one process would need 20,000.
 *
 * Every client connects, then waits until all clients have connected (so
 * every connection is open at once), sends ROUNDS messages of bytes that
 * depend on its connection number and reads each back, checking every
 * byte, then waits until every client has been echoed before closing (so
 * every server fiber is alive at once too). The counts asserted are exact:
 * connections accepted, clients verified, bytes echoed, end-of-streams
 * seen by the server, and the largest number of server connection fibers
 * alive at one time.
 *
 * Sizes: 10,000 connections times WEFT_TEST_SCALE, a tenth of that under
 * TSan (fiber_test.h's sized()). The soft RLIMIT_NOFILE is raised to the
 * hard limit first; where even the hard limit cannot hold a process's
 * share, the test runs with as many connections as it allows, says so on
 * stderr, and asserts exactly that count, failing if that is under
 * MIN_CONNS (raise the limit with `ulimit -Hn` or prlimit then).
 *
 * Nothing waits by sleeping: the clients meet at wait groups, and every
 * blocking call has a generous per-fd timeout only so that a bug fails the
 * test instead of hanging it.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft.h>

#define FIBER_TEST_TSAN_DIV 10
#include "fiber_test.h"

#define TARGET_CONNS 10000
#define MIN_CONNS    500    /* below this the limit is too low to test much */
#define FD_RESERVE   128    /* descriptors for everything but connections */
#define ROUNDS       3
#define MSG_SIZE     200
#define STACK_SIZE   (32 * 1024)
#define IO_TIMEOUT   (60ll * 1000 * 1000 * 1000)

/* ---- the server (this process) --------------------------------------------- */

static struct {
    int          lfd;
    long         conns;
    weft_wg      done;        /* one per accepted connection */
    _Atomic long accepted, live, max_live, eofs, bytes;
} srv;

static void *server_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    long live = atomic_fetch_add(&srv.live, 1) + 1;
    long seen = atomic_load(&srv.max_live);
    while (live > seen && !atomic_compare_exchange_weak(&srv.max_live, &seen, live))
        ;
    EXPECT(weft_fd_timeouts(fd, IO_TIMEOUT, IO_TIMEOUT) == 0);
    char buf[512];
    for (;;) {
        ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
        EXPECT(n >= 0);
        if (n <= 0) {
            if (n == 0)
                atomic_fetch_add(&srv.eofs, 1);
            break;
        }
        atomic_fetch_add(&srv.bytes, n);
        for (ssize_t off = 0; off < n;) {
            ssize_t w = weft_send(fd, buf + off, (size_t)(n - off), 0);
            EXPECT(w > 0);
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    atomic_fetch_sub(&srv.live, 1);
    EXPECT(weft_close(fd) == 0);
    weft_wg_done(&srv.done);
    return NULL;
}

static void server_main(void *arg)
{
    (void)arg;
    weft_spawn_opts opts = { .name = "conn", .stack_size = STACK_SIZE, .detached = 1 };
    EXPECT(weft_fd_timeouts(srv.lfd, IO_TIMEOUT, 0) == 0);
    for (long i = 0; i < srv.conns; i++) {
        int fd = weft_accept(srv.lfd, NULL, NULL);
        EXPECT(fd >= 0);
        if (fd < 0)
            break;
        atomic_fetch_add(&srv.accepted, 1);
        weft_wg_add(&srv.done, 1);
        if (!weft_spawn_ex(&opts, server_conn, (void *)(intptr_t)fd)) {
            EXPECT(!"spawn of a server connection fiber failed");
            weft_close(fd);
            weft_wg_done(&srv.done);
        }
    }
    weft_wg_wait(&srv.done);
    EXPECT(weft_close(srv.lfd) == 0);
}

/* ---- the clients (the child process) ---------------------------------------- */

/* What the client process reports back through a pipe. */
struct client_report {
    int  started;          /* weft_run's result */
    int  failed;           /* an EXPECT failed */
    long verified;         /* clients whose every byte came back right */
    char where[256];
};

static struct {
    int          port;
    long         conns;
    weft_wg      connected, echoed;
    _Atomic long verified;
} cli;

static unsigned char conn_byte(long conn, long i)
{
    uint64_t x = ((uint64_t)conn << 32 | (uint64_t)i) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (unsigned char)(x >> 32);
}

static int echo_round(int fd, long conn, long base)
{
    unsigned char out[MSG_SIZE], in[MSG_SIZE];
    for (long i = 0; i < MSG_SIZE; i++)
        out[i] = conn_byte(conn, base + i);
    for (size_t off = 0; off < sizeof out;) {
        ssize_t w = weft_send(fd, out + off, sizeof out - off, 0);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    for (size_t got = 0; got < sizeof in;) {
        ssize_t r = weft_recv(fd, in + got, sizeof in - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return memcmp(in, out, sizeof in) == 0 ? 0 : -1;
}

static void *client(void *arg)
{
    long conn = (long)(intptr_t)arg;
    int fd = weft_dial_tcp("127.0.0.1", cli.port, IO_TIMEOUT);
    EXPECT(fd >= 0);
    /* Every connection is open before any data moves. */
    weft_wg_done(&cli.connected);
    weft_wg_wait(&cli.connected);
    int ok = fd >= 0 && weft_fd_timeouts(fd, IO_TIMEOUT, IO_TIMEOUT) == 0;
    for (long r = 0; ok && r < ROUNDS; r++)
        ok = echo_round(fd, conn, r * MSG_SIZE) == 0;
    EXPECT(ok);
    /* No connection closes before every one has been echoed. */
    weft_wg_done(&cli.echoed);
    weft_wg_wait(&cli.echoed);
    if (ok)
        atomic_fetch_add(&cli.verified, 1);
    if (fd >= 0)
        EXPECT(weft_close(fd) == 0);
    return NULL;
}

static void clients_main(void *arg)
{
    (void)arg;
    weft_fiber **f = calloc((size_t)cli.conns, sizeof *f);
    EXPECT(f != NULL);
    if (!f)
        return;
    weft_wg_add(&cli.connected, (int)cli.conns);
    weft_wg_add(&cli.echoed, (int)cli.conns);
    weft_spawn_opts opts = { .name = "client", .stack_size = STACK_SIZE };
    for (long i = 0; i < cli.conns; i++) {
        f[i] = weft_spawn_ex(&opts, client, (void *)(intptr_t)i);
        EXPECT(f[i] != NULL);
        if (!f[i]) {
            /* Stand in for it at both meeting points. */
            weft_wg_done(&cli.connected);
            weft_wg_done(&cli.echoed);
        }
    }
    for (long i = 0; i < cli.conns; i++)
        if (f[i])
            EXPECT(weft_join(f[i], NULL) == 0);
    free(f);
}

/* The child: run the clients, report on fd, exit. No Check asserts here
 * (they belong to the test process). */
__attribute__((noreturn)) static void client_process(int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    weft_config c;
    weft_config_init(&c);
    c.stack_size = STACK_SIZE;
    struct client_report rep = { 0 };
    rep.started = weft_run(&c, clients_main, NULL);
    rep.failed = atomic_load(&expect_failed);
    rep.verified = atomic_load(&cli.verified);
    snprintf(rep.where, sizeof rep.where, "%s", expect_where);
    _exit(write(fd, &rep, sizeof rep) == (ssize_t)sizeof rep ? 0 : 1);
}

/* ---- the test ------------------------------------------------------------------ */

/* Raise the soft RLIMIT_NOFILE to the hard limit; return it (LONG_MAX if
 * unlimited). */
static long raise_nofile(void)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)LONG_MAX
               ? LONG_MAX : (long)rl.rlim_cur;
}

START_TEST(ten_thousand)
{
    long want = sized(TARGET_CONNS);
    long limit = raise_nofile();
    long conns = want;
    if (limit - FD_RESERVE < conns) {
        conns = limit - FD_RESERVE;
        ck_assert_msg(conns >= MIN_CONNS && conns >= want / 20,
                      "RLIMIT_NOFILE's hard limit (%ld) leaves room for only %ld "
                      "connections per process, too few to test %ld: raise it "
                      "(ulimit -Hn, or prlimit --nofile)", limit, conns, want);
        fprintf(stderr, "test-conns: RLIMIT_NOFILE's hard limit (%ld) allows %ld "
                        "connections per process: testing %ld instead of %ld\n",
                limit, conns, conns, want);
    }

    srv.conns = conns;
    srv.lfd = weft_listen_tcp("127.0.0.1", 0, 4096);
    ck_assert_int_ge(srv.lfd, 0);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    ck_assert_int_eq(getsockname(srv.lfd, (struct sockaddr *)&a, &al), 0);
    cli.port = ntohs(a.sin_port);
    cli.conns = conns;

    /* Fork before either side starts a runtime: no threads yet. */
    int rp[2];
    ck_assert_int_eq(pipe(rp), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(rp[0]);
        close(srv.lfd);
        client_process(rp[1]);
    }
    close(rp[1]);

    weft_config c;
    weft_config_init(&c);
    c.stack_size = STACK_SIZE;
    ck_assert_int_eq(weft_run(&c, server_main, NULL), 0);

    struct client_report rep;
    ssize_t got = read(rp[0], &rep, sizeof rep);
    close(rp[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "client process ended with status %#x", status);
    ck_assert_int_eq(got, (ssize_t)sizeof rep);
    ck_assert_int_eq(rep.started, 0);
    ck_assert_msg(!rep.failed, "in a client fiber: %s", rep.where);
    CHECK_EXPECTATIONS();

    ck_assert_int_eq(rep.verified, conns);
    ck_assert_int_eq(atomic_load(&srv.accepted), conns);
    ck_assert_int_eq(atomic_load(&srv.max_live), conns);
    ck_assert_int_eq(atomic_load(&srv.eofs), conns);
    ck_assert_int_eq(atomic_load(&srv.bytes), conns * ROUNDS * MSG_SIZE);
    ck_assert_int_eq(atomic_load(&srv.live), 0);
}
END_TEST

static Suite *conns_suite(void)
{
    Suite *s = suite_create("conns");
    TCase *tc = tcase_create("tcp");
    tcase_add_checked_fixture(tc, fixture_setup, NULL);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, ten_thousand);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(conns_suite)
