/*
 * weft_sem: a count and a wait queue (waitq.h). wait takes a unit with a
 * CAS when one is there; otherwise it queues under the queue lock after
 * re-checking. post hands its unit straight to the oldest waiter, else
 * adds it to the count: a unit never sits in the count while somebody is
 * queued, so waiters are served in order.
 *
 * One 64-bit word holds the count and the queue's state, so that a post
 * changes both in one atomic step:
 *
 *   bits 0-31   count        units available (WEFT_SEM_INIT(n) sets it)
 *   bit  32     S_QLOCK      the wait queue's lock (a spinlock bit)
 *   bit  33     S_WAITERS    the queue may be non-empty; set by a waiter,
 *                            with S_QLOCK held, in a CAS that sees count 0;
 *                            cleared with S_QLOCK held when the queue
 *                            empties. So S_WAITERS implies count 0, and
 *                            the count only grows while it is clear.
 *
 * No lost wake-up: a waiter sets S_WAITERS only with the count at 0 (its
 * CAS fails if a post added a unit first, and it retries the take); a
 * post that sees S_WAITERS takes the queue lock, which the waiter holds
 * until its park commit, so it finds the waiter queued.
 *
 * Lifetime (the contract's rule: a waiter may free the semaphore as soon
 * as its wait returns, while the post that woke it, or that added the
 * unit it took, is still inside weft_sem_post). A post's last access is
 * the one RMW that lets another party proceed:
 *  - no waiters: the CAS that adds the unit (a lock-free taker may take
 *    it, return and free the semaphore at once);
 *  - waiters: under S_QLOCK it claims the head, then one CAS drops
 *    S_QLOCK (and S_WAITERS if the queue emptied), and the wake-up reads
 *    only the claimed waiter's parker, on the waiter's stack, which the
 *    waiter cannot leave before it is woken; with nobody left to claim,
 *    that CAS adds the unit as well.
 * (Before, the post added the unit under a separate lock word and
 * released that lock afterwards: a taker could return and free the
 * semaphore in between, and the release wrote to freed memory.)
 */
#include "sched/waitq.h"
#include "sched/chaos.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define S_COUNT   0xffffffffull
#define S_QLOCK   (1ull << 32)
#define S_WAITERS (1ull << 33)

struct sem_impl {
    _Atomic uint64_t   word;
    struct weft__waitq q; /* q.lock unused: S_QLOCK is the lock */
};
_Static_assert(sizeof(struct sem_impl) == sizeof(weft_sem), "weft_sem layout");

static struct sem_impl *impl(weft_sem *s)
{
    return (struct sem_impl *)(void *)s;
}

void weft_sem_init(weft_sem *s, unsigned count)
{
    struct sem_impl *x = impl(s);
    atomic_init(&x->word, count);
    atomic_init(&x->q.lock, 0);
    x->q.head = x->q.tail = NULL;
}

/* Take a unit if there is one. Any thread. */
static int take(struct sem_impl *x)
{
    /* Relaxed: the CAS decides. */
    uint64_t c = atomic_load_explicit(&x->word, memory_order_relaxed);
    while (c & S_COUNT)
        /* Acquire: pairs with the release CASes in weft_sem_post. */
        if (atomic_compare_exchange_weak_explicit(&x->word, &c, c - 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

/* Take S_QLOCK; returns the word as the RMW that took it left it. Any
 * thread. */
static uint64_t qlock(struct sem_impl *x)
{
    for (unsigned n = 0;; n++) {
        /* Acquire: pairs with the release RMWs that drop S_QLOCK. */
        uint64_t s = atomic_fetch_or_explicit(&x->word, S_QLOCK, memory_order_acquire);
        if (!(s & S_QLOCK))
            return s | S_QLOCK;
        /* Relaxed: spin on a read until the bit looks free. */
        while (atomic_load_explicit(&x->word, memory_order_relaxed) & S_QLOCK) {
            if (++n < 64)
                weft__cpu_relax();
            else
                sched_yield(); /* the holder was preempted */
        }
    }
}

/* Drop S_QLOCK, and S_WAITERS too if the queue is empty. With S_QLOCK
 * held, by a waiter whose call is still in progress. */
static void qunlock(struct sem_impl *x)
{
    uint64_t clear = S_QLOCK | (x->q.head ? 0 : S_WAITERS);
    /* Release: publishes the queue's changes to the next qlock. */
    atomic_fetch_and_explicit(&x->word, ~clear, memory_order_release);
}

static void release_q(void *arg)
{
    qunlock(arg);
}

int weft_sem_timedwait(weft_sem *s, int64_t timeout_ns)
{
    if (!s)
        return -EINVAL;
    struct sem_impl *x = impl(s);
    if (take(x))
        return 0;
    if (timeout_ns == 0)
        return -ETIMEDOUT;
    weft__chaos_move(CHAOS_BLOCK);
    struct weft__parker p;
    struct weft__waiter w = { .index = 0 };
    weft__parker_init(&p, weft__deadline(timeout_ns));
    uint64_t c = qlock(x);
    for (;;) {
        if (c & S_COUNT) {
            /* Acquire: as in take(). */
            if (atomic_compare_exchange_weak_explicit(&x->word, &c, c - 1,
                                                      memory_order_acquire,
                                                      memory_order_relaxed)) {
                qunlock(x);
                return 0;
            }
            continue;
        }
        /* Relaxed: the queue lock we hold orders the queue; a post that
         * added a unit meanwhile makes this CAS fail. */
        if (atomic_compare_exchange_weak_explicit(&x->word, &c, c | S_WAITERS,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    weft__waitq_push(&x->q, &w, &p, 0);
    weft__wait_reason(WAIT_SEM, (uintptr_t)s);
    int rc = weft__parker_block(&p, release_q, x);
    if (rc != 0) {
        /* Timed out: our own call is still in progress, so x is alive. */
        qlock(x);
        weft__waitq_remove(&x->q, &w);
        qunlock(x);
        return rc == -ENOMEM ? -ENOMEM : -ETIMEDOUT;
    }
    return 0; /* the poster handed us its unit */
}

void weft_sem_wait(weft_sem *s)
{
    (void)weft_sem_timedwait(s, -1);
}

static __attribute__((noreturn, cold)) void overflow(void)
{
    fputs("weft: weft_sem_post: count would exceed UINT_MAX\n", stderr);
    abort();
}

void weft_sem_post(weft_sem *s)
{
    struct sem_impl *x = impl(s);
    /* Relaxed: a hint; the CAS decides. */
    weft__chaos(CHAOS_SEM_POST);
    uint64_t c = atomic_load_explicit(&x->word, memory_order_relaxed);
    while (!(c & S_WAITERS)) {
        if ((c & S_COUNT) == S_COUNT)
            overflow();
        /* Release: publishes what came before the post to the taker's
         * acquire. The last access to *x. */
        if (atomic_compare_exchange_weak_explicit(&x->word, &c, c + 1,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
    c = qlock(x);
    struct weft__waiter *w = weft__waitq_claim(&x->q);
    uint64_t clear = S_QLOCK | (x->q.head ? 0 : S_WAITERS);
    weft__chaos(CHAOS_SEM_POST);
    for (;;) {
        uint64_t n = c & ~clear;
        if (!w) { /* S_WAITERS, so the count is 0, and the queue is empty */
            n += 1;
        }
        /* Release: publishes the queue (to the next qlock) and, with no
         * waiter, the unit (to a taker's acquire). The last access to *x;
         * a claimed waiter is ordered by its wake-up. */
        if (atomic_compare_exchange_weak_explicit(&x->word, &c, n,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            break;
    }
    if (w)
        weft__parker_wake(w->p);
}
