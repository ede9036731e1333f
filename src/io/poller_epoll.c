/*
 * The epoll backend of the poller (see poller.h).
 *
 * One epoll instance per worker, with one eventfd registered once at
 * creation as the wake-up channel (its epoll data is NULL; fds the
 * netpoller registers carry their struct np_desc as data, and their
 * events go to netpoll_deliver). Waiting uses
 * epoll_pwait2, whose timespec timeout has nanosecond resolution, so a
 * parked worker wakes for its next timer within the kernel's timer slack
 * rather than rounded up to the next millisecond; kernels before 5.11 lack
 * it and get epoll_wait with the timeout rounded up to whole ms.
 *
 * The state word decides whether poller_wake needs the eventfd at all:
 *
 *   RUNNING  --poller_prepare-->  PARKING  --poller_wake-->  NOTIFIED
 *      ^                             |                          |
 *      +------ poller_wait returns / poller_cancel -------------+
 *
 * Only the waker that moves PARKING to NOTIFIED writes the eventfd, so a
 * burst of wakes costs one write, and a running owner costs none.
 */
#define _GNU_SOURCE
#include "io/poller.h"
#include "common/sanitizer.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "sched/fence.h"

enum { P_RUNNING = 0, P_PARKING, P_NOTIFIED };

/* Events taken per epoll_wait. A parked worker waits on its thread's own
 * stack and takes as many as the hand-written epoll peer does; the
 * non-blocking poll of a busy worker runs on whatever fiber stack it is
 * on (and on the monitor's), so it takes fewer. */
#define MAX_EVENTS_WAIT 256
#define MAX_EVENTS_POLL 64

struct poller {
    int epfd;
    int evfd;
    _Atomic int state;
    /* fds registered here and not yet closed through weft_close; only a
     * heuristic for poller_poll (an fd closed with close() stays counted). */
    _Atomic unsigned nfds;
    /* epoll calls, for statistics: incremented by the owner only (a
     * relaxed load and store), read by anyone. */
    _Atomic uint64_t ncalls;
};

static void count_call(struct poller *p)
{
    atomic_store_explicit(&p->ncalls,
                          atomic_load_explicit(&p->ncalls, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

uint64_t poller_calls(const struct poller *p)
{
    /* Relaxed: a statistic. */
    return atomic_load_explicit(&p->ncalls, memory_order_relaxed);
}

/* 1: try epoll_pwait2; 0: the kernel lacks it. Relaxed: a cached fact;
 * racing first calls both find out the same thing. */
static _Atomic int use_pwait2 = 1;

int poller_init(struct poller **out)
{
#if WEFT__VALGRIND
    /* Valgrind (3.19 at least) does not know epoll_pwait2: it returns
     * ENOSYS, which we would handle, but also warns on stderr. */
    if (RUNNING_ON_VALGRIND)
        atomic_store_explicit(&use_pwait2, 0, memory_order_relaxed);
#endif
    int err;
    struct poller *p = weft__calloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    atomic_init(&p->state, P_RUNNING);
    atomic_init(&p->nfds, 0);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        err = -errno;
        goto fail_free;
    }
    p->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->evfd < 0) {
        err = -errno;
        goto fail_epoll;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) != 0) {
        err = -errno;
        goto fail_eventfd;
    }
    *out = p;
    return 0;

fail_eventfd:
    close(p->evfd);
fail_epoll:
    close(p->epfd);
fail_free:
    weft__free(p, sizeof *p);
    return err;
}

void poller_close(struct poller *p)
{
    if (!p)
        return;
    close(p->evfd);
    close(p->epfd);
    weft__free(p, sizeof *p);
}

void poller_prepare(struct poller *p)
{
    atomic_store_explicit(&p->state, P_PARKING, memory_order_seq_cst);
    /* seq_cst fence: orders the store above before the caller's re-check
     * loads, and pairs with the waker's seq_cst publication (a seq_cst
     * operation or fence before its load of state in poller_wake): either
     * the waker sees PARKING or our re-check sees its work. */
    weft__fence_seq_cst();
}

void poller_cancel(struct poller *p)
{
    /* Relaxed: nothing is published by leaving PARKING; a waker that
     * still sees PARKING writes the eventfd needlessly, and the next wait
     * returns once at once, which the caller tolerates. */
    atomic_store_explicit(&p->state, P_RUNNING, memory_order_relaxed);
}

static int wait_events(struct poller *p, struct epoll_event *evs, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    if (atomic_load_explicit(&use_pwait2, memory_order_relaxed)) {
        struct timespec ts, *tsp = NULL;
        if (timeout_ns >= 0) {
            ts.tv_sec = (time_t)(timeout_ns / 1000000000);
            ts.tv_nsec = (long)(timeout_ns % 1000000000);
            tsp = &ts;
        }
        long n = syscall(SYS_epoll_pwait2, p->epfd, evs, MAX_EVENTS_WAIT, tsp, NULL, _NSIG / 8);
        if (n >= 0 || errno != ENOSYS)
            return (int)n;
        atomic_store_explicit(&use_pwait2, 0, memory_order_relaxed);
    }
#endif
    int ms = -1;
    if (timeout_ns >= 0) {
        int64_t r = (timeout_ns + 999999) / 1000000;
        ms = r > INT_MAX ? INT_MAX : (int)r;
    }
    return epoll_wait(p->epfd, evs, MAX_EVENTS_WAIT, ms);
}

#define EV_IN  (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define EV_OUT (EPOLLOUT | EPOLLHUP | EPOLLERR)

/* Hand the n events in evs to the netpoller; 1 if the eventfd was among
 * them (it is drained). Owner only. */
static int dispatch(struct poller *p, const struct epoll_event *evs, int n)
{
    int woken = 0;
    for (int i = 0; i < n; i++) {
        /* A batch of events is a walk over cold records (one per fd):
         * start loading the one two steps ahead while this one is
         * delivered (NULL, the wake-up eventfd, is harmless to prefetch). */
        if (i + 2 < n)
            __builtin_prefetch(evs[i + 2].data.ptr, 1);
        if (evs[i].data.ptr == NULL) {
            uint64_t v;
            (void)!read(p->evfd, &v, sizeof v);
            woken = 1;
            continue;
        }
        unsigned ev = 0;
        if (evs[i].events & EV_IN)
            ev |= POLLER_IN;
        if (evs[i].events & EV_OUT)
            ev |= POLLER_OUT;
        if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            ev |= POLLER_HUP;
        netpoll_deliver(evs[i].data.ptr, ev);
    }
    netpoll_deliver_end();
    return woken;
}

int poller_register(struct poller *p, int fd, void *data)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.ptr = data,
    };
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    /* Relaxed: a counter for the poller_poll heuristic only. */
    atomic_fetch_add_explicit(&p->nfds, 1, memory_order_relaxed);
    return 0;
}

void poller_forget(struct poller *p)
{
    /* Relaxed: as in poller_register. */
    atomic_fetch_sub_explicit(&p->nfds, 1, memory_order_relaxed);
}

int poller_poll(struct poller *p)
{
    /* Relaxed: a hint; an fd registered by this owner is counted in
     * program order, and one whose count is stale costs a syscall. */
    if (atomic_load_explicit(&p->nfds, memory_order_relaxed) == 0)
        return 0;
    struct epoll_event evs[MAX_EVENTS_POLL];
    count_call(p);
    int n = epoll_wait(p->epfd, evs, MAX_EVENTS_POLL, 0);
    if (n <= 0)
        return 0;
    /* An eventfd event here is left over from a cancelled park (the state
     * is RUNNING, so no waker writes now); draining it is harmless. */
    dispatch(p, evs, n);
    return n;
}

int poller_wait(struct poller *p, int64_t timeout_ns)
{
    struct epoll_event evs[MAX_EVENTS_WAIT];
    count_call(p);
    int n = wait_events(p, evs, timeout_ns);
    int err = n < 0 && errno != EINTR ? -errno : 0;
    int woken = n > 0 ? dispatch(p, evs, n) : 0;
    /* Relaxed: as in poller_cancel. A wake that moved the state to
     * NOTIFIED but has not written yet makes the next wait return early
     * once. */
    atomic_store_explicit(&p->state, P_RUNNING, memory_order_relaxed);
    return err ? err : woken;
}

void poller_wake(struct poller *p)
{
    /* seq_cst: pairs with the store and fence in poller_prepare; the
     * caller published its work (with a seq_cst operation or fence)
     * before this load. */
    int s = atomic_load_explicit(&p->state, memory_order_seq_cst);
    if (s != P_PARKING)
        return;
    /* Relaxed both ways: the CAS only elects the one waker that writes;
     * the eventfd write itself is the signal. */
    if (!atomic_compare_exchange_strong_explicit(&p->state, &s, P_NOTIFIED,
                                                 memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    uint64_t one = 1;
    (void)!write(p->evfd, &one, sizeof one);
}
