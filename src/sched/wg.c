/*
 * weft_wg: a counter and a wait queue (waitq.h), with the counter and the
 * queue's state in one 64-bit word so that the add that releases the
 * waiters changes both in one atomic step:
 *
 *   bit  0      W_QLOCK     the wait queue's lock (a spinlock bit)
 *   bit  1      W_WAITERS   somebody is queued; set with W_QLOCK held by
 *                           a waiter that saw a nonzero count, cleared by
 *                           the add that brings the count to zero
 *   bits 2-63   the counter (signed: the word shifted right by 2)
 *
 * Add: one CAS adds delta. The one that brings the counter to zero with
 * W_WAITERS set instead CASes the word to "count 0, W_QLOCK" (waiting
 * while a waiter holds the lock), claims every queued waiter, drops
 * W_QLOCK, and wakes them. Wait: a zero counter returns at once;
 * otherwise, with W_QLOCK held, one CAS that sees a nonzero counter sets
 * W_WAITERS, and the waiter queues and parks (the park commit drops the
 * lock). No lost wake-up: the waiter's CAS and the releasing add's CAS
 * are ordered on the word; whichever add comes after the waiter's CAS
 * and reaches zero sees W_WAITERS and needs W_QLOCK, which the waiter
 * holds until it is queued. Waiters queued before a release are all
 * claimed by it, and only those (a waiter that arrives while the
 * releaser holds the lock waits for it and sees the new counter).
 *
 * Lifetime (the contract's rule: a waiter may free the wait group as soon
 * as weft_wg_wait returns, while the weft_wg_done that released it is
 * still inside the call). The add's last access is the RMW that lets
 * another party proceed: with no waiter queued, the CAS that brings the
 * counter to zero; with waiters, the RMW that drops W_QLOCK - before it
 * they are claimed but not woken, so none can return - and the wake-ups
 * after it read only the waiters' own parkers. (Before, the counter
 * reached zero first and the queue lock was taken afterwards: a waiter on
 * the fast path could return and free the wait group in between.)
 */
#include "sched/waitq.h"
#include "sched/chaos.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define W_QLOCK   1
#define W_WAITERS 2
#define W_SHIFT   2

struct wg_impl {
    _Atomic int64_t    word;
    struct weft__waitq q; /* q.lock unused: W_QLOCK is the lock */
};
_Static_assert(sizeof(struct wg_impl) == sizeof(weft_wg), "weft_wg layout");

static struct wg_impl *impl(weft_wg *wg)
{
    return (struct wg_impl *)(void *)wg;
}

/* The counter a word holds. */
static int64_t count_of(int64_t w)
{
    return w >> W_SHIFT; /* arithmetic: gcc and clang, documented */
}

void weft_wg_init(weft_wg *wg)
{
    struct wg_impl *x = impl(wg);
    atomic_init(&x->word, 0);
    atomic_init(&x->q.lock, 0);
    x->q.head = x->q.tail = NULL;
}

static __attribute__((noreturn, cold)) void went_negative(void)
{
    fputs("weft: weft_wg counter went negative\n", stderr);
    abort();
}

/* Spin until W_QLOCK looks free; returns the word then. Any thread. */
static int64_t wait_qlock_free(struct wg_impl *x, unsigned *n)
{
    int64_t s;
    /* Relaxed: a hint; the caller's CAS decides. */
    while ((s = atomic_load_explicit(&x->word, memory_order_relaxed)) & W_QLOCK) {
        if (++*n < 64)
            weft__cpu_relax();
        else
            sched_yield(); /* the holder was preempted */
    }
    return s;
}

void weft_wg_add(weft_wg *wg, int delta)
{
    struct wg_impl *x = impl(wg);
    if (delta == 0)
        return;
    unsigned spins = 0;
    weft__chaos(CHAOS_WG_ADD);
    int64_t s = atomic_load(&x->word);
    for (;;) {
        int64_t c = count_of(s) + delta;
        if (c < 0)
            went_negative();
        if (c > 0 || !(s & W_WAITERS)) {
            /* Seq_cst (as the counter always was): the last access to *x
             * when no waiter is queued. */
            if (atomic_compare_exchange_weak(&x->word, &s, s + (int64_t)delta * (1 << W_SHIFT)))
                return;
            continue;
        }
        if (s & W_QLOCK) { /* a waiter is queueing: it will be ours */
            s = wait_qlock_free(x, &spins);
            continue;
        }
        /* Counter to zero, waiters dropped from the word, queue locked. */
        if (atomic_compare_exchange_weak(&x->word, &s, W_QLOCK))
            break;
    }
    struct weft__waiter *chain = NULL, **tail = &chain, *w;
    while ((w = weft__waitq_claim(&x->q)) != NULL) {
        *tail = w;
        tail = &w->next;
    }
    weft__chaos(CHAOS_WG_ADD);
    /* Release: publishes the queue to the next W_QLOCK holder. The last
     * access to *x: the claimed waiters cannot return before they are
     * woken below, through their own parkers. */
    atomic_fetch_and_explicit(&x->word, ~(int64_t)W_QLOCK, memory_order_release);
    weft__waiters_wake(chain);
}

void weft_wg_done(weft_wg *wg)
{
    weft_wg_add(wg, -1);
}

/* A waiter's park commit: drop W_QLOCK. */
static void release_q(void *arg)
{
    struct wg_impl *x = arg;
    /* Release: publishes our queue entry to the add that claims it. */
    atomic_fetch_and_explicit(&x->word, ~(int64_t)W_QLOCK, memory_order_release);
}

void weft_wg_wait(weft_wg *wg)
{
    struct wg_impl *x = impl(wg);
    if (count_of(atomic_load(&x->word)) == 0)
        return;
    weft__chaos_move(CHAOS_BLOCK);
    unsigned spins = 0;
    int64_t s;
    for (;;) {
        /* Acquire: pairs with the release RMWs that drop W_QLOCK. */
        s = atomic_fetch_or_explicit(&x->word, W_QLOCK, memory_order_acquire);
        if (!(s & W_QLOCK))
            break;
        wait_qlock_free(x, &spins);
    }
    s |= W_QLOCK;
    for (;;) {
        if (count_of(s) == 0) {
            release_q(x);
            return;
        }
        /* Seq_cst, as the adds: orders our W_WAITERS against them. */
        if (atomic_compare_exchange_weak(&x->word, &s, s | W_WAITERS))
            break;
    }
    struct weft__parker p;
    struct weft__waiter w = { .index = 0 };
    weft__parker_init(&p, -1);
    weft__waitq_push(&x->q, &w, &p, 0);
    weft__wait_reason(WAIT_WG, (uintptr_t)wg);
    weft__parker_block(&p, release_q, x);
}
