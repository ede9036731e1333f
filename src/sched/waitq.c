/*
 * Wait queues' out-of-line half: the spinlock's contended path, waking
 * and blocking parkers, and the futex helpers (see waitq.h for the state
 * machine; the queue operations themselves are inline there). Also the
 * thread-side wait that weft_join uses (fiber.c).
 */
#include "sched/waitq.h"
#include "sched/chaos.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(struct weft__waitq) == sizeof(struct weft_private_waitq) &&
               _Alignof(struct weft__waitq) == _Alignof(struct weft_private_waitq),
               "weft.h's struct weft_private_waitq must mirror struct weft__waitq");

#define SPIN_TRIES 64

void weft__spin_lock_slow(_Atomic unsigned *l)
{
    for (unsigned n = 0;; n++) {
        /* Relaxed: spin on a read until the word looks free. */
        while (atomic_load_explicit(l, memory_order_relaxed)) {
            weft__chaos(CHAOS_SPIN_LOCK);
            if (++n < SPIN_TRIES)
                weft__cpu_relax();
            else
                sched_yield(); /* the holder was preempted */
        }
        /* Acquire: pairs with the release store in weft__spin_unlock. */
        if (!atomic_exchange_explicit(l, 1, memory_order_acquire))
            return;
    }
}

/* ---- futex ----------------------------------------------------------- */

int weft__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline >= 0) {
        if (weft__now() >= deadline)
            return -ETIMEDOUT;
        /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, the
         * clock weft__now reads. */
        ts.tv_sec = (time_t)(deadline / 1000000000);
        ts.tv_nsec = (long)(deadline % 1000000000);
        tsp = &ts;
    }
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, val, tsp, NULL,
            FUTEX_BITSET_MATCH_ANY);
    return 0;
}

void weft__futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- queues ---------------------------------------------------------- */

int64_t weft__deadline(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    int64_t now = weft__now();
    return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

void weft__waiter_cancel(_Atomic unsigned *l, struct weft__waitq *q, struct weft__waiter *w)
{
    weft__spin_lock(l);
    weft__waitq_remove(q, w);
    weft__spin_unlock(l);
}

/* ---- waking ---------------------------------------------------------- */

void weft__parker_wake(struct weft__parker *p)
{
    weft__chaos(CHAOS_WAKE);
    struct weft_fiber *f = p->fiber;
    if (f) {
        /* A fiber with an armed timer goes back to the worker whose heap
         * holds it, so that it can disarm it there (timers are owner-only). */
        struct worker *tw = p->tworker;
        if (tw)
            weft__ready_on(tw, f);
        else
            weft__ready(f);
        return;
    }
    /* Release: publishes the waker's writes (result, data); pairs with
     * the acquire load in thread_block. */
    atomic_store_explicit(&p->state, PARK_WOKEN, memory_order_release);
    /* The thread may have returned already; a wake on a dead futex word
     * is harmless (see thread_waiter_wake in fiber.c). */
    weft__futex_wake(&p->state);
}

void weft__waiters_wake(struct weft__waiter *chain)
{
    while (chain) {
        struct weft__waiter *next = chain->next;
        weft__parker_wake(chain->p);
        chain = next;
    }
}

/* ---- blocking -------------------------------------------------------- */

/* The deadline won on a fiber's timer. Owner worker (tworker). */
static void timeout_fire(struct weft__timer *t)
{
    struct weft__parker *p = weft__container_of(t, struct weft__parker, timer);
    struct weft_fiber *f = p->fiber;
    uint32_t expect = PARK_WAITING;
    /* Relaxed both ways: success makes us the only one to ready f, and
     * the ready's queue hand-over publishes the state; failure means a
     * waker claimed it and will ready it. */
    if (atomic_compare_exchange_strong_explicit(&p->state, &expect, PARK_TIMEDOUT,
                                                memory_order_relaxed,
                                                memory_order_relaxed))
        weft__ready_local(weft__worker_self(), f);
}

struct block_args {
    struct weft__parker *p;
    void (*release)(void *);
    void *arg;
};

/* Park commit: arm the deadline on this worker, then drop the locks (from
 * then on a waker may ready us). Always parks. The worker the fiber left. */
static int block_commit(struct weft_fiber *self, void *arg)
{
    (void)self;
    struct block_args *a = arg;
    struct weft__parker *p = a->p;
    if (p->deadline >= 0) {
        struct worker *w = weft__worker_self();
        timer_init(&p->timer, timeout_fire);
        if (timer_add(&w->timers, &p->timer, p->deadline) == 0) {
            p->tworker = w; /* read by wakers under the lock we drop next */
        } else {
            /* Relaxed: nobody else can see p before release() below. */
            atomic_store_explicit(&p->state, PARK_TIMEDOUT, memory_order_relaxed);
            p->deadline = -2; /* tells the fiber: -ENOMEM */
            a->release(a->arg);
            return 0;
        }
    }
    a->release(a->arg);
    weft__chaos(CHAOS_PARK_COMMITTED);
    return 1;
}

/* Park commit that only moves the fiber to worker arg. */
static int hop_commit(struct weft_fiber *self, void *arg)
{
    weft__ready_on(arg, self);
    return 1;
}

/* The calling fiber. */
static int fiber_block(struct weft__parker *p, void (*release)(void *), void *arg)
{
    struct block_args a = { p, release, arg };
    weft__park(block_commit, &a);
    if (p->deadline == -2)
        return -ENOMEM;
    /* Relaxed: we were readied by the party that decided, after it
     * decided; the ready's hand-over orders this load after it. */
    if (atomic_load_explicit(&p->state, memory_order_relaxed) == PARK_TIMEDOUT)
        return -ETIMEDOUT; /* the timer fired and is disarmed */
    if (p->tworker) {
        /* Claimed while the timer is (maybe) armed on p->tworker: go
         * there and disarm it before p leaves the stack. A waker sends us
         * there directly; this loop covers a steal on the way. */
        struct worker *w;
        while ((w = weft__worker_self()) != p->tworker)
            weft__park(hop_commit, p->tworker);
        if (timer_armed(&p->timer))
            timer_remove(&w->timers, &p->timer);
    }
    return 0;
}

/* The calling plain thread. Kept out of line: the fiber path stays lean. */
static __attribute__((noinline)) int thread_block(struct weft__parker *p, void (*release)(void *), void *arg)
{
    release(arg);
    weft__chaos(CHAOS_PARK_COMMITTED);
    int64_t deadline = p->deadline;
    for (;;) {
        /* Acquire: pairs with the release store in weft__parker_wake. */
        uint32_t s = atomic_load_explicit(&p->state, memory_order_acquire);
        if (s == PARK_WOKEN)
            return 0;
        if (s == PARK_TIMEDOUT)
            return -ETIMEDOUT;
        if (weft__futex_wait(&p->state, s, s == PARK_WAITING ? deadline : -1) == -ETIMEDOUT) {
            uint32_t expect = PARK_WAITING;
            /* Relaxed: success means nobody will write to us; failure
             * (claimed) loops to wait for PARK_WOKEN with acquire. */
            if (atomic_compare_exchange_strong_explicit(&p->state, &expect, PARK_TIMEDOUT,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed))
                return -ETIMEDOUT;
        }
    }
}

int weft__parker_block(struct weft__parker *p, void (*release)(void *), void *arg)
{
    return p->fiber ? fiber_block(p, release, arg) : thread_block(p, release, arg);
}

/* weft__parker_block_unlock's release in the general case. */
static void spin_release(void *lock)
{
    weft__spin_unlock(lock);
}

/* Park commit of a fiber without a deadline: publish it by dropping the
 * lock its waiter is queued under. The worker the fiber left. */
static int unlock_commit(struct weft_fiber *self, void *lock)
{
    (void)self;
    weft__spin_unlock(lock);
    weft__chaos(CHAOS_PARK_COMMITTED);
    return 1;
}

int weft__parker_block_unlock(struct weft__parker *p, _Atomic unsigned *lock)
{
    if (p->fiber && p->deadline < 0) {
        weft__park(unlock_commit, (void *)lock);
        /* Only a claim readies a fiber that has no deadline: nothing
         * for fiber_block's checks to find. */
        return 0;
    }
    return weft__parker_block(p, spin_release, (void *)lock);
}
