/*
 * The monitor: one plain thread per run ("weft-mon") that watches the
 * workers from outside, so that no fiber can freeze the others, and that
 * serves weft-dump (io/dumpsrv.c) even when every worker is stuck.
 *
 * Progress. Each worker counts its context switches (nswitch) and
 * publishes the fiber it runs (running). Every tick the monitor samples
 * both; a worker whose running fiber and switch count have not changed
 * since an earlier sample has run that one fiber, without yielding, for
 * at least the time between the two samples.
 *
 * Takeover. A worker stuck in one fiber for TAKEOVER_MS still owns work
 * that the others must get to:
 *   1. its ready I/O: the monitor drains the stuck worker's epoll itself
 *      (epoll_wait may be called on any epoll fd from any thread, and the
 *      kernel hands each edge-triggered event to one caller), and the
 *      wait slots ready the fibers through the global queue (netpoll.c:
 *      any thread may unblock);
 *   2. its deque: other workers steal from it anyway; the monitor makes
 *      sure one is awake to do so (weft__wakep after a fence);
 *   3. its run-next slot and its I/O queue, which nobody steals: the
 *      monitor sends the worker's thread TAKEOVER_SIGNAL, whose handler,
 *      running on that thread, moves those fibers to the deque, unless the signal arrived
 *      while the worker was inside the scheduler's own runnext or deque
 *      code (w->in_rt, see sched.c), in which case the next tick tries
 *      again. The owner's accesses stay plain moves; the handler excludes
 *      itself by running on the same thread.
 *   4. its inbox, under WEFT_DEBUG_MIGRATE only: the mode sends every
 *      yield and wake-up to another worker's inbox, which only its owner
 *      drains, so a stuck worker would strand a share of all wake-ups
 *      (with two workers, every one). The monitor moves the inbox to the
 *      global queue: a fiber there was sent only to move and may run
 *      anywhere. While a worker is stuck in that mode the monitor ticks
 *      every MIGRATE_TICK_MS, not TICK_MS: each wake-up sent there waits
 *      for the next tick (at 10 ms, a two-worker echo served 100 round
 *      trips a second).
 * Not taken over: timers armed in the stuck worker's heap (a sleeping
 * fiber whose timer lives there wakes when the worker comes back), and
 * fibers sent to its inbox to disarm such a timer. Outside the debug mode
 * those are all an inbox holds; in it, step 4 takes them too, and each
 * hops back to the inbox from wherever it runs (fiber_block in waitq.c),
 * once per tick at most.
 *
 * The signal is installed only for the run and only when its disposition
 * was the default one (a program that handles SIGURG itself keeps it,
 * and gets no run-next takeover). It is sent once per stuck episode and
 * only when the run-next slot holds a fiber; a stuck fiber blocked in a
 * system call may see that call fail with EINTR once.
 *
 * Watchdog. WEFT_WATCHDOG_MS=N logs, once per episode, any fiber that has
 * run N ms without yielding, counted in the worker thread's CPU time (a
 * worker the kernel has descheduled is not running its fiber):
 *   weft: watchdog: fiber 17 'spinner' has run 1002 ms without yielding on worker 3
 *
 * Ticks are TICK_MS while any worker runs a fiber (MIGRATE_TICK_MS while
 * step 4 takes an inbox over), doubling up to IDLE_TICK_MS while none
 * does, so an idle process wakes rarely.
 */
#define _GNU_SOURCE
#include "sched/sched.h"
#include "sched/fence.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/fmt.h"
#include "common/peek.h"
#include "io/dumpsrv.h"

#define TICK_MS          10
#define IDLE_TICK_MS     500
#define MIGRATE_TICK_MS  1
#define TAKEOVER_MS      10
#define TAKEOVER_SIGNAL  SIGURG
#define MAX_POLLFDS      8

/* What the monitor remembers of one worker between ticks. */
struct watch {
    struct weft_fiber *fiber;   /* running at the last sample (NULL: none) */
    uint64_t           nswitch; /* its switch count then                   */
    int64_t            since;   /* when this (fiber, nswitch) was first seen */
    int64_t            cpu_since; /* the worker thread's CPU time then     */
    int                logged;  /* the watchdog spoke for this episode     */
    int                signalled; /* run-next takeover asked this episode  */
};

static struct {
    pthread_t        thread;
    int              started;
    int              stop_fd;     /* eventfd: weft__monitor_stop */
    int64_t          watchdog_ns; /* 0: off */
    int              takeover;    /* more than one worker                 */
    int              sig_installed;
    struct sigaction sig_old;
    struct watch    *watch;
} mon = { .stop_fd = -1 };

/* ---- the run-next takeover signal ---------------------------------------- */

/* On the stuck worker's own thread. Async-signal-safe: relaxed atomics
 * and the owner's deque push (plain stores), nothing else. */
static void takeover_handler(int sig)
{
    (void)sig;
    int saved = errno;
    struct worker *w = weft__worker_self();
    /* Relaxed, with a signal fence: the interrupted code is this thread's
     * own (see rt_enter in sched.c). running != NULL: a fiber runs (the
     * scheduler context touches runnext with in_rt clear). */
    if (w && !atomic_load_explicit(&w->in_rt, memory_order_relaxed) &&
        atomic_load_explicit(&w->running, memory_order_relaxed)) {
        atomic_signal_fence(memory_order_seq_cst);
        struct weft_fiber *f = atomic_load_explicit(&w->runnext, memory_order_relaxed);
        if (f && deque_push(&w->dq, f) == 0)
            atomic_store_explicit(&w->runnext, NULL, memory_order_relaxed);
        /* Its I/O queue, oldest first, as far as the deque has room.
         * f->link is read before the push: once pushed, f may be stolen,
         * run, finish and have its block recycled (cache_put writes
         * link) on another worker before this handler goes on. */
        unsigned moved = 0;
        while ((f = w->ioq_head) != NULL) {
            struct weft_fiber *next = f->link;
            if (deque_push(&w->dq, f) != 0)
                break;
            w->ioq_head = next;
            moved++;
        }
        if (!w->ioq_head)
            w->ioq_tail = NULL;
        atomic_store_explicit(&w->ioq_n,
                              atomic_load_explicit(&w->ioq_n, memory_order_relaxed) - moved,
                              memory_order_relaxed);
    }
    errno = saved;
}

static void signal_install(void)
{
    struct sigaction old;
    if (sigaction(TAKEOVER_SIGNAL, NULL, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
        old.sa_handler != SIG_DFL)
        return; /* the program's own: leave it alone */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = takeover_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(TAKEOVER_SIGNAL, &sa, &mon.sig_old) == 0)
        mon.sig_installed = 1;
}

static void signal_restore(void)
{
    if (mon.sig_installed)
        sigaction(TAKEOVER_SIGNAL, &mon.sig_old, NULL);
    mon.sig_installed = 0;
}

/* ---- the watchdog and the takeover --------------------------------------- */

static void watchdog_log(struct worker *w, struct weft_fiber *f, int64_t ran_ns)
{
    /* The fiber is running elsewhere: copy what we print through
     * weft__peek (its name may be freed or renamed meanwhile). */
    uint64_t id = 0;
    char *name_ptr = NULL;
    char name[WEFT__FIBER_NAME] = "";
    if (weft__peek(&id, &f->id, sizeof id) != 0)
        return;
    if (weft__peek(&name_ptr, &f->name, sizeof name_ptr) == 0 && name_ptr &&
        weft__peek(name, name_ptr, sizeof name) == 0)
        name[sizeof name - 1] = 0;
    else
        name[0] = 0;
    char line[160];
    int n = snprintf(line, sizeof line,
                     "weft: watchdog: fiber %llu '%s' has run %lld ms without yielding on worker %u\n",
                     (unsigned long long)id, name, (long long)(ran_ns / 1000000), w->index);
    if (n > 0)
        (void)!write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Step 4: move w's inbox, in order, to the global queue. The monitor
 * thread, with weft__rt.migrate set. */
static void inbox_take_over(struct worker *w)
{
    /* Relaxed: a hint that saves the lock; re-read under it. */
    if (!atomic_load_explicit(&w->inbox_len, memory_order_relaxed))
        return;
    pthread_mutex_lock(&w->inbox_lock);
    struct weft_fiber *first = w->inbox_head, *last = w->inbox_tail;
    unsigned n = atomic_load_explicit(&w->inbox_len, memory_order_relaxed);
    w->inbox_head = w->inbox_tail = NULL;
    /* Relaxed: with inbox_lock held; emptying publishes nothing (as the
     * owner's drain_inbox in sched.c). */
    atomic_store_explicit(&w->inbox_len, 0, memory_order_relaxed);
    pthread_mutex_unlock(&w->inbox_lock);
    /* Already FS_RUNNABLE (push_inbox). The push's seq_cst add is the
     * publication step 2's wakep relies on. */
    if (first)
        weft__global_push_list(first, last, n);
}

/* w has run one fiber for TAKEOVER_MS or more. The monitor thread. */
static void take_over(struct worker *w, struct watch *s)
{
    /* 1. Its ready I/O, readied through the global queue. */
    poller_poll(w->poller);
    /* 4. Its inbox (debug migration), to the global queue. */
    if (weft__rt.migrate)
        inbox_take_over(w);
    /* 3. Its run-next fiber, through its own thread. Relaxed: a hint;
     * the handler re-reads it on the owner's thread. */
    int owned = atomic_load_explicit(&w->runnext, memory_order_relaxed) ||
                atomic_load_explicit(&w->ioq_n, memory_order_relaxed);
    if (mon.sig_installed && !s->signalled && owned) {
        if (pthread_kill(w->thread, TAKEOVER_SIGNAL) == 0)
            s->signalled = 1;
    } else if (s->signalled && owned) {
        s->signalled = 0; /* the handler found it busy: ask again next tick */
    }
    /* 2. Its deque, and what the two steps above queued: make sure a
     * worker is awake to take it. The fence makes the publications we
     * look for (the handler's release store, our own global pushes)
     * count as seq_cst for weft__wakep's protocol. */
    if (deque_size(&w->dq) > 0 ||
        atomic_load_explicit(&weft__rt.gq_len, memory_order_relaxed) > 0) {
        weft__fence_seq_cst();
        weft__wakep();
    }
}

/* CPU time of w's thread, ns; 0 if it cannot be read. Monitor thread. */
static int64_t thread_cpu_ns(struct worker *w)
{
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(w->thread, &cid) != 0 || clock_gettime(cid, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sample every worker; returns 1 if any runs a fiber. *inbox_watch is set
 * if a stuck worker's inbox is being taken over (step 4). Monitor thread. */
static int check_workers(int64_t now, int *inbox_watch)
{
    int busy = 0;
    *inbox_watch = 0;
    for (unsigned i = 0; i < weft__rt.nworkers; i++) {
        struct worker *w = &weft__rt.workers[i];
        struct watch *s = &mon.watch[i];
        /* Relaxed: samples; a stale one delays a decision by a tick. */
        struct weft_fiber *f = atomic_load_explicit(&w->running, memory_order_relaxed);
        uint64_t sw = atomic_load_explicit(&w->nswitch, memory_order_relaxed);
        if (!f || f != s->fiber || sw != s->nswitch) {
            s->fiber = f;
            s->nswitch = sw;
            s->since = now;
            s->cpu_since = mon.watchdog_ns && f ? thread_cpu_ns(w) : 0;
            s->logged = 0;
            s->signalled = 0;
            busy |= f != NULL;
            continue;
        }
        busy = 1;
        int64_t ran = now - s->since;
        if (mon.watchdog_ns && ran >= mon.watchdog_ns && !s->logged) {
            int64_t cpu = thread_cpu_ns(w) - s->cpu_since;
            if (cpu >= mon.watchdog_ns) {
                watchdog_log(w, f, cpu);
                s->logged = 1;
            }
        }
        if (mon.takeover && ran >= (int64_t)TAKEOVER_MS * 1000000) {
            take_over(w, s);
            *inbox_watch |= weft__rt.migrate;
        }
    }
    return busy;
}

static void *monitor_main(void *unused)
{
    (void)unused;
    int tick = TICK_MS;
    for (;;) {
        struct pollfd pf[MAX_POLLFDS];
        pf[0].fd = mon.stop_fd;
        pf[0].events = POLLIN;
        int n = 1 + weft__dumpsrv_fds(pf + 1, MAX_POLLFDS - 1);
        int r = poll(pf, (nfds_t)n, tick);
        if (r > 0) {
            if (pf[0].revents)
                break;
            for (int i = 1; i < n; i++)
                if (pf[i].revents)
                    weft__dumpsrv_ready(pf[i].fd);
        }
        int inbox_watch;
        int busy = check_workers(weft__now(), &inbox_watch);
        if (inbox_watch)
            tick = MIGRATE_TICK_MS;
        else if (busy || mon.watchdog_ns)
            tick = TICK_MS;
        else if (tick < IDLE_TICK_MS)
            tick = tick * 2 > IDLE_TICK_MS ? IDLE_TICK_MS : tick * 2;
    }
    return NULL;
}

/* ---- start and stop --------------------------------------------------------- */

static int64_t env_ms(const char *name)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0 || v > 86400000LL) {
        static const char msg[] = "weft: ignoring a bad WEFT_WATCHDOG_MS (want 1..86400000)\n";
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
        return 0;
    }
    return (int64_t)v * 1000000;
}

int weft__monitor_start(void)
{
    mon.watchdog_ns = env_ms("WEFT_WATCHDOG_MS");
    mon.takeover = weft__rt.nworkers > 1;
    mon.watch = calloc(weft__rt.nworkers, sizeof *mon.watch);
    if (!mon.watch)
        return -ENOMEM;
    mon.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (mon.stop_fd < 0) {
        int err = -errno;
        free(mon.watch);
        mon.watch = NULL;
        return err;
    }
    if (mon.takeover)
        signal_install();
    weft__dumpsrv_start(); /* without it, the run goes on undumpable */
    int e = pthread_create(&mon.thread, NULL, monitor_main, NULL);
    if (e) {
        weft__dumpsrv_stop();
        signal_restore();
        close(mon.stop_fd);
        mon.stop_fd = -1;
        free(mon.watch);
        mon.watch = NULL;
        return -e;
    }
    pthread_setname_np(mon.thread, "weft-mon");
    mon.started = 1;
    return 0;
}

void weft__monitor_stop(void)
{
    if (!mon.started)
        return;
    uint64_t one = 1;
    (void)!write(mon.stop_fd, &one, sizeof one);
    pthread_join(mon.thread, NULL);
    mon.started = 0;
    weft__dumpsrv_stop();
    signal_restore();
    close(mon.stop_fd);
    mon.stop_fd = -1;
    free(mon.watch);
    mon.watch = NULL;
}

