/*
 * The monitor (src/sched/monitor.c): a fiber that never yields does not
 * freeze the others. Its worker's run-next fiber, its deque and its ready
 * I/O (and, under WEFT_DEBUG_MIGRATE, its inbox) are taken over by the
 * other workers; WEFT_WATCHDOG_MS names it.
 *
 * Each scenario below deadlocks without the takeover: a fiber spins on a
 * worker until something that only that worker owns has run elsewhere.
 * The spins are bounded (SPIN_LIMIT_NS) so that a failure is reported
 * instead of hanging the suite.
 */
#include <weft.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "common/sanitizer.h"
#include "fiber_test.h"
#include "sched/trace.h"

#define SPIN_LIMIT_NS (20ll * 1000000000)

/* Spin on the calling worker, never yielding, until *flag is set or the
 * limit passes. 1 if the flag was seen. */
static int spin_until(_Atomic int *flag)
{
    uint64_t end = weft_now() + SPIN_LIMIT_NS;
    while (!atomic_load(flag))
        if (weft_now() > end)
            return 0;
    return 1;
}

/* ---- run-next takeover ----------------------------------------------------- */

static _Atomic int child_ran;

static void *set_child_ran(void *arg)
{
    (void)arg;
    atomic_store(&child_ran, 1);
    return NULL;
}

/* The child goes to this worker's run-next slot, which nobody steals; the
 * parent spins until it has run. */
static void runnext_main(void *arg)
{
    (void)arg;
    for (int round = 0; round < 3; round++) {
        atomic_store(&child_ran, 0);
        weft_fiber *f = weft_spawn(set_child_ran, NULL);
        EXPECT(f != NULL);
        EXPECT(spin_until(&child_ran));
        EXPECT(weft_join(f, NULL) == 0);
    }
}

START_TEST(takeover_runnext)
{
    run(2, runnext_main, NULL);
}
END_TEST

/* ---- deque takeover --------------------------------------------------------- */

enum { DEQUE_CHILDREN = 64 };
static _Atomic int children_done;

static void *count_child(void *arg)
{
    (void)arg;
    atomic_fetch_add(&children_done, 1);
    return NULL;
}

/* The children go to this worker's deque (and run-next); the parent spins
 * until every one has run. */
static void deque_main(void *arg)
{
    (void)arg;
    atomic_store(&children_done, 0);
    weft_fiber *f[DEQUE_CHILDREN];
    for (int i = 0; i < DEQUE_CHILDREN; i++)
        EXPECT((f[i] = weft_spawn(count_child, NULL)) != NULL);
    uint64_t end = weft_now() + SPIN_LIMIT_NS;
    while (atomic_load(&children_done) < DEQUE_CHILDREN && weft_now() < end)
        ;
    EXPECT(atomic_load(&children_done) == DEQUE_CHILDREN);
    for (int i = 0; i < DEQUE_CHILDREN; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
}

START_TEST(takeover_deque)
{
    run(2, deque_main, NULL);
}
END_TEST

/* ---- ready I/O takeover ---------------------------------------------------- */

struct io_case {
    int           fds[2];
    _Atomic int   reader_worker;  /* where the reader registered the fd */
    _Atomic int   reader_parked;  /* about to read                      */
    _Atomic int   got;            /* the byte read, or -errno           */
    _Atomic int   done;
};

static void *pipe_reader(void *arg)
{
    struct io_case *c = arg;
    atomic_store(&c->reader_worker, weft_worker());
    atomic_store(&c->reader_parked, 1);
    char b;
    ssize_t n = weft_read(c->fds[0], &b, 1);
    atomic_store(&c->got, n == 1 ? (unsigned char)b : (int)n);
    atomic_store(&c->done, 1);
    return NULL;
}

/* A reader parks on a pipe registered in this worker's epoll; this fiber
 * then writes the pipe and spins until the reader got the byte: only the
 * monitor polls this worker's epoll meanwhile. Retried with a new pipe
 * until the reader registered on our worker (it may have been stolen). */
static void io_main(void *arg)
{
    (void)arg;
    for (int attempt = 0; attempt < 100; attempt++) {
        struct io_case c;
        memset(&c, 0, sizeof c);
        EXPECT(pipe2(c.fds, O_CLOEXEC) == 0);
        atomic_store(&c.reader_worker, -1);
        weft_fiber *r = weft_spawn(pipe_reader, &c);
        EXPECT(r != NULL);
        while (!atomic_load(&c.reader_parked))
            weft_yield();
        /* If it runs on our worker it has parked in weft_read by now
         * (it cannot be preempted between the store and the read); a few
         * more yields let a stolen reader get there too. */
        for (int i = 0; i < 8; i++)
            weft_yield();
        int same = atomic_load(&c.reader_worker) == weft_worker();
        EXPECT(weft_write(c.fds[1], "x", 1) == 1);
        if (same)
            EXPECT(spin_until(&c.done));
        EXPECT(weft_join(r, NULL) == 0);
        EXPECT(atomic_load(&c.got) == 'x');
        weft_close(c.fds[0]);
        weft_close(c.fds[1]);
        if (same)
            return;
    }
    EXPECT(!"the reader never registered on the spinner's worker");
}

START_TEST(takeover_io)
{
    run(2, io_main, NULL);
}
END_TEST

/* ---- inbox takeover (debug migration) -------------------------------------- */

enum { INBOX_YIELDS = 20 };

struct inbox_case {
    _Atomic int spinner_worker;  /* where the spinner spins; -1: not yet */
    _Atomic int stop;
    _Atomic int spun;            /* the spinner saw stop in time        */
};

static void *inbox_spinner(void *arg)
{
    struct inbox_case *c = arg;
    atomic_store(&c->spinner_worker, weft_worker());
    atomic_store(&c->spun, spin_until(&c->stop));
    return NULL;
}

/* Under WEFT_DEBUG_MIGRATE with two workers, every yield sends the
 * yielder to the other worker's inbox, here the spinner's, which only
 * the monitor empties while the spinner runs. */
static void inbox_main(void *arg)
{
    struct inbox_case *c = arg;
    weft_fiber *f = weft_spawn(inbox_spinner, c);
    EXPECT(f != NULL);
    uint64_t end = weft_now() + SPIN_LIMIT_NS;
    while (atomic_load(&c->spinner_worker) < 0 && weft_now() < end)
        weft_yield();
    int at = atomic_load(&c->spinner_worker);
    EXPECT(at >= 0);
    for (int i = 0; i < INBOX_YIELDS; i++) {
        weft_yield();
        /* Off the spinner's inbox, run by the worker that is left. */
        EXPECT(weft_worker() != at);
    }
    atomic_store(&c->stop, 1);
    EXPECT(weft_join(f, NULL) == 0);
    EXPECT(atomic_load(&c->spun));
}

START_TEST(takeover_inbox)
{
    /* Saved and put back: with CK_FORK=no the next tests share our
     * environment, and the whole suite may run under the mode. */
    const char *was = getenv("WEFT_DEBUG_MIGRATE");
    char *saved = was ? strdup(was) : NULL;
    setenv("WEFT_DEBUG_MIGRATE", "1", 1);
    struct inbox_case c;
    memset(&c, 0, sizeof c);
    atomic_store(&c.spinner_worker, -1);
    run(2, inbox_main, &c);
    if (saved)
        setenv("WEFT_DEBUG_MIGRATE", saved, 1);
    else
        unsetenv("WEFT_DEBUG_MIGRATE");
    free(saved);
}
END_TEST

/* ---- an echo client served while a worker spins forever -------------------- */

enum { ECHO_CONNS = 8, ECHO_ROUNDS = 200 };

struct echo {
    int          lfd, port;
    _Atomic int  stop;            /* the clients are done               */
    _Atomic int  client_errors;
};

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[64];
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf)) > 0)
        if (weft_write(fd, buf, (size_t)n) != n)
            break;
    weft_close(fd);
    return NULL;
}

static void *echo_accept(void *arg)
{
    struct echo *e = arg;
    for (int i = 0; i < ECHO_CONNS; i++) {
        int fd = weft_accept(e->lfd, NULL, NULL);
        if (fd < 0)
            break;
        weft_spawn_opts o = { .name = "echo-conn", .detached = 1 };
        EXPECT(weft_spawn_ex(&o, echo_conn, (void *)(intptr_t)fd) != NULL);
    }
    return NULL;
}

/* Spins forever (until the clients are done), never yielding. */
static void *spinner(void *arg)
{
    struct echo *e = arg;
    EXPECT(weft_set_name("spinner") == 0);
    EXPECT(spin_until(&e->stop));
    return NULL;
}

/* A plain-thread client: ECHO_ROUNDS exact round trips per connection,
 * with a receive timeout so that a frozen server fails the test. */
static void *echo_client(void *arg)
{
    struct echo *e = arg;
    for (int c = 0; c < ECHO_CONNS; c++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)e->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { 20, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            atomic_fetch_add(&e->client_errors, 1);
            if (fd >= 0)
                close(fd);
            continue;
        }
        for (int i = 0; i < ECHO_ROUNDS; i++) {
            char out[16], in[16];
            int len = snprintf(out, sizeof out, "%d:%d", c, i);
            if (write(fd, out, (size_t)len) != len) {
                atomic_fetch_add(&e->client_errors, 1);
                break;
            }
            int got = 0;
            while (got < len) {
                ssize_t n = read(fd, in + got, (size_t)(len - got));
                if (n <= 0)
                    break;
                got += (int)n;
            }
            if (got != len || memcmp(in, out, (size_t)len) != 0) {
                atomic_fetch_add(&e->client_errors, 1);
                break;
            }
        }
        close(fd);
    }
    atomic_store(&e->stop, 1);
    return NULL;
}

static void *client_thread(void *arg)
{
    return echo_client(arg);
}

static void echo_main(void *arg)
{
    struct echo *e = arg;
    e->lfd = weft_listen_tcp("127.0.0.1", 0, 64);
    EXPECT(e->lfd >= 0);
    if (e->lfd < 0)
        return;
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    EXPECT(getsockname(e->lfd, (struct sockaddr *)&a, &al) == 0);
    e->port = ntohs(a.sin_port);
    weft_fiber *acc = weft_spawn(echo_accept, e);
    /* One spinner per worker but one: the echo runs on what is left,
     * and whatever the spinners' workers own must be taken over. */
    weft_fiber *spin[8];
    unsigned nspin = weft_workers() - 1 < 8 ? weft_workers() - 1 : 8;
    for (unsigned i = 0; i < nspin; i++)
        EXPECT((spin[i] = weft_spawn(spinner, e)) != NULL);
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, client_thread, e) == 0);
    EXPECT(weft_join(acc, NULL) == 0);
    for (unsigned i = 0; i < nspin; i++)
        EXPECT(weft_join(spin[i], NULL) == 0);
    pthread_join(t, NULL);
    weft_close(e->lfd);
}

START_TEST(spinning_fiber_does_not_stop_echo)
{
    struct echo e;
    memset(&e, 0, sizeof e);
    run(2, echo_main, &e);
    ck_assert_int_eq(atomic_load(&e.client_errors), 0);
    ck_assert_int_eq(atomic_load(&e.stop), 1);
}
END_TEST

/* ---- the watchdog ------------------------------------------------------------ */

/* The worker thread's CPU time before the spin: read by the spinner
 * itself on entry (below). */
static __thread int64_t thread_cpu_at_start;

/* Spin until this thread has used 300 ms of CPU (the watchdog counts
 * CPU time; on a loaded machine wall time says little), or 20 s passed. */
static void *spin_300ms(void *arg)
{
    (void)arg;
    weft_set_name("busy-loop");
    uint64_t end = weft_now() + 20000 * 1000000ull;
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    thread_cpu_at_start = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    do
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    while ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec < 300 * 1000000ll + thread_cpu_at_start &&
           weft_now() < end);
    return NULL;
}

/* In a run_in_child child: run main_fn on `workers` workers, exit 0 if
 * weft_run succeeded (the crash scenarios never get that far). */
static void child_run(unsigned workers, void (*main_fn)(void *))
{
    weft_config c;
    weft_config_init(&c);
    c.workers = workers;
    _exit(weft_run(&c, main_fn, NULL) == 0 ? 0 : 1);
}

static void watchdog_main(void *arg)
{
    (void)arg;
    weft_fiber *f = weft_spawn(spin_300ms, NULL);
    fprintf(stderr, "spinner id %llu\n", (unsigned long long)weft_fiber_id(f));
    weft_join(f, NULL);
}

static void watchdog_child(void)
{
    setenv("WEFT_WATCHDOG_MS", "50", 1);
    child_run(2, watchdog_main);
}

START_TEST(watchdog_names_the_fiber_once)
{
    struct child_result r = run_in_child(watchdog_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
    unsigned long long id = 0;
    const char *p = strstr(r.err, "spinner id ");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(sscanf(p, "spinner id %llu", &id), 1);
    char want[128];
    snprintf(want, sizeof want,
             "weft: watchdog: fiber %llu 'busy-loop' has run [0-9]+ ms without yielding on worker [0-9]+",
             id);
    ck_assert_msg(matches(r.err, want), "stderr: %s", r.err);
    const char *first = strstr(r.err, "weft: watchdog:");
    ck_assert_msg(strstr(first + 1, "weft: watchdog:") == NULL, "logged twice: %s", r.err);
}
END_TEST

/* No watchdog unless asked for; a fiber that yields is never named. */
static void *spin_yielding(void *arg)
{
    (void)arg;
    uint64_t end = weft_now() + 200 * 1000000ull;
    while (weft_now() < end)
        weft_yield();
    return NULL;
}

static void yielding_main(void *arg)
{
    (void)arg;
    weft_join(weft_spawn(spin_yielding, NULL), NULL);
}

static void yielding_child(void)
{
    setenv("WEFT_WATCHDOG_MS", "20", 1);
    child_run(1, yielding_main);
}

START_TEST(watchdog_quiet_for_yielding_fiber)
{
    struct child_result r = run_in_child(yielding_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
    ck_assert_msg(strstr(r.err, "watchdog") == NULL, "stderr: %s", r.err);
}
END_TEST

static void bad_env_child(void)
{
    setenv("WEFT_WATCHDOG_MS", "soon", 1);
    child_run(1, yielding_main);
}

START_TEST(watchdog_bad_value_warns)
{
    struct child_result r = run_in_child(bad_env_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
    ck_assert_msg(strstr(r.err, "WEFT_WATCHDOG_MS") != NULL, "stderr: %s", r.err);
}
END_TEST

/* ---- the trace ------------------------------------------------------------------- */

static void *traced_fiber(void *arg)
{
    char name[16];
    snprintf(name, sizeof name, "tr-%d", (int)(intptr_t)arg);
    weft_set_name(name);
    for (int i = 0; i < 10; i++)
        weft_yield();
    weft_sleep(1000000);
    return NULL;
}

static void traced_main(void *arg)
{
    (void)arg;
    weft_fiber *f[50];
    for (int i = 0; i < 50; i++)
        f[i] = weft_spawn(traced_fiber, (void *)(intptr_t)i);
    for (int i = 0; i < 50; i++)
        weft_join(f[i], NULL);
}

static char trace_path[64];

static void trace_child(void)
{
    setenv("WEFT_TRACE", trace_path, 1);
    child_run(2, traced_main);
}

/* Read a whole file into a malloc'd string. */
static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, fp), n);
    buf[n] = 0;
    fclose(fp);
    return buf;
}

/* The JSON is well-formed (python3's parser, when there is one) and has a
 * named track per worker with fiber run slices on it. */
static void check_trace_json(const char *path, unsigned workers)
{
    char *t = slurp(path);
    ck_assert_msg(strncmp(t, "{\"displayTimeUnit\"", 18) == 0, "starts: %.40s", t);
    for (unsigned w = 0; w < workers; w++) {
        char want[64];
        snprintf(want, sizeof want, "\"args\":{\"name\":\"weft worker %u\"}", w);
        ck_assert_msg(strstr(t, want) != NULL, "no track for worker %u", w);
    }
    ck_assert_msg(strstr(t, "\"ph\":\"X\"") != NULL, "no run slice");
    ck_assert_msg(matches(t, "\"name\":\"fiber [0-9]+ 'tr-[0-9]+'\""), "no named slice");
    free(t);
    if (access("/usr/bin/python3", X_OK) == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
                 "assert isinstance(d[\"traceEvents\"], list)' %s", path);
        ck_assert_int_eq(system(cmd), 0);
    }
}

START_TEST(trace_from_env)
{
    snprintf(trace_path, sizeof trace_path, "/tmp/weft-trace-%d.json", (int)getpid());
    struct child_result r = run_in_child(trace_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
    check_trace_json(trace_path, 2);
    unlink(trace_path);
}
END_TEST

static void trace_api_main(void *arg)
{
    int fd = *(int *)arg;
    EXPECT(weft__trace_end(fd) == -EINVAL);   /* none records */
    EXPECT(weft__trace_begin(4096) == 0);
    EXPECT(weft__trace_begin(4096) == -EBUSY);
    traced_main(NULL);
    EXPECT(weft__trace_end(fd) == 0);
    EXPECT(weft__trace_end(fd) == -EINVAL);
}

START_TEST(trace_api)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/weft-trace-api-%d.json", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(weft__trace_begin(0), -EPERM); /* no runtime */
    run(2, trace_api_main, &fd);
    close(fd);
    check_trace_json(path, 2);
    unlink(path);
}
END_TEST

/* ---- crash reports ------------------------------------------------------------- */

/* Not static, and the test programs link with -rdynamic, so that
 * backtrace_symbols_fd can name it. */
void weft_test_crash_here(volatile int *p);
__attribute__((noinline)) void weft_test_crash_here(volatile int *p)
{
    *p = 1;
}

static void *crasher(void *arg)
{
    (void)arg;
    weft_set_name("crasher");
    weft_chan *ch = weft_chan_new(sizeof(int), 1);
    int v;
    weft_chan_recv_timeout(ch, &v, 1000); /* an earlier wait: empty, times out */
    weft_sleep(1000000); /* its last wait */
    /* Not NULL: UBSan would report a null store before the fault. */
    weft_test_crash_here((volatile int *)16);
    return NULL;
}

static void crash_main(void *arg)
{
    (void)arg;
    weft_join(weft_spawn(crasher, NULL), NULL);
}

static void crash_child(void)
{
    child_run(2, crash_main);
}

START_TEST(crash_report_names_fiber)
{
    struct child_result r = run_in_child(crash_child);
    ck_assert_msg(r.signaled || (r.exited && r.status != 0), "child survived: %s", r.err);
    ck_assert_msg(matches(r.err, "weft: fatal signal SIGSEGV \\(address 0x10\\) in fiber [0-9]+ 'crasher'"),
                  "stderr: %s", r.err);
    ck_assert_msg(strstr(r.err, "last wait: sleep; waits before it, newest first: chan recv;") != NULL,
                  "stderr: %s", r.err);
    ck_assert_msg(strstr(r.err, "weft_test_crash_here") != NULL, "stderr: %s", r.err);
}
END_TEST

static void *aborter(void *arg)
{
    weft_chan *ch = arg;
    weft_set_name("aborter");
    int v;
    weft_chan_recv(ch, &v);
    abort();
}

static void abort_main(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_new(sizeof(int), 0);
    weft_fiber *f = weft_spawn(aborter, ch);
    weft_yield(); /* one worker: the aborter runs and parks in its recv */
    int v = 7;
    weft_chan_send(ch, &v);
    weft_join(f, NULL);
}

static void abort_child(void)
{
    child_run(1, abort_main);
}

START_TEST(crash_report_on_abort)
{
    struct child_result r = run_in_child(abort_child);
    ck_assert_msg(r.signaled && r.sig == SIGABRT, "child: %s", r.err);
    ck_assert_msg(matches(r.err, "weft: fatal signal SIGABRT in fiber [0-9]+ 'aborter'"),
                  "stderr: %s", r.err);
    ck_assert_msg(matches(r.err, "last wait: chan recv 0x[0-9a-f]+"), "stderr: %s", r.err);
    ck_assert_msg(strstr(r.err, "weft: backtrace") != NULL, "stderr: %s", r.err);
}
END_TEST

DEFINE_RUNAWAY(monitor_runaway, 512)

static void *overflower(void *arg)
{
    (void)arg;
    weft_set_name("deep");
    weft_sleep(1000); /* its last wait */
    monitor_runaway(0);
    return NULL;
}

static void overflow_main(void *arg)
{
    (void)arg;
    weft_join(weft_spawn(overflower, NULL), NULL);
}

static void overflow_child(void)
{
    child_run(1, overflow_main);
}

START_TEST(overflow_report_has_details)
{
    if (skip_under_valgrind() || WEFT__ASAN)
        return; /* ASan reports the overflow itself, before our handler */
    struct child_result r = run_in_child(overflow_child);
    ck_assert_msg(r.signaled && r.sig == SIGABRT, "child: %.300s", r.err);
    ck_assert_msg(matches(r.err, "weft: stack overflow in fiber [0-9]+ 'deep' \\(stack [0-9]+ bytes\\)"),
                  "stderr: %.300s", r.err);
    ck_assert_msg(strstr(r.err, "last wait: sleep") != NULL, "stderr: %.300s", r.err);
    ck_assert_msg(strstr(r.err, "weft: fatal signal") == NULL, "reported twice: %.300s", r.err);
}
END_TEST

/* ---- the monitor is up before main runs ---------------------------------- */

/* 1 if a thread of this process is named weft-mon. Any thread. */
static int monitor_thread_exists(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(name, sizeof name, f) && strncmp(name, "weft-mon", 8) == 0)
                found = 1;
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

static void monitor_up_main(void *arg)
{
    (void)arg;
    /* Its fds were opened before it was started: none can appear under
     * main (a number main freed, or the gap between two fds main opens
     * back to back, taken by the runtime). */
    EXPECT(monitor_thread_exists());
}

START_TEST(monitor_up_before_main)
{
    for (int i = 0; i < 20; i++)
        run(2, monitor_up_main, NULL);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("monitor");
    TCase *t = tcase_create("takeover");
    tcase_add_checked_fixture(t, fixture_setup, NULL);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, takeover_runnext);
    tcase_add_test(t, takeover_deque);
    tcase_add_test(t, takeover_io);
    tcase_add_test(t, takeover_inbox);
    tcase_add_test(t, spinning_fiber_does_not_stop_echo);
    tcase_add_test(t, monitor_up_before_main);
    suite_add_tcase(s, t);
    TCase *w = tcase_create("watchdog");
    tcase_set_timeout(w, 60);
    tcase_add_test(w, watchdog_names_the_fiber_once);
    tcase_add_test(w, watchdog_quiet_for_yielding_fiber);
    tcase_add_test(w, watchdog_bad_value_warns);
    suite_add_tcase(s, w);
    TCase *tr = tcase_create("trace");
    tcase_add_checked_fixture(tr, fixture_setup, NULL);
    tcase_set_timeout(tr, 60);
    tcase_add_test(tr, trace_from_env);
    tcase_add_test(tr, trace_api);
    suite_add_tcase(s, tr);
    TCase *cr = tcase_create("crash");
    tcase_set_timeout(cr, 60);
    tcase_add_test(cr, crash_report_names_fiber);
    tcase_add_test(cr, crash_report_on_abort);
    tcase_add_test(cr, overflow_report_has_details);
    suite_add_tcase(s, cr);
    return s;
}

TEST_MAIN(make_suite)
