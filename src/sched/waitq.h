/*
 * Wait queues: the one blocking mechanism under every synchronisation
 * object and channel. Internal.
 *
 * A blocked fiber or thread owns one `parker` (on its stack) and links one
 * `waiter` per queue it waits on (one for a mutex or a channel operation,
 * one per case for weft_select). All waiters of a parker share its state
 * word, and exactly one party moves it out of PARK_WAITING:
 *
 *   PARK_WAITING   linked, nobody decided yet
 *   PARK_CLAIMED   a waker won (under the queue's lock); it has written
 *                  the waiter's result and data and will wake it
 *   PARK_WOKEN     plain threads only: the waker has finished writing
 *                  (the futex word the thread sleeps on)
 *   PARK_TIMEDOUT  the deadline won (the worker's timer or the thread's
 *                  futex timeout); the blocked side unlinks itself
 *
 * Who can race for the decision: the claimers of each of the parker's
 * waiters (each under its own queue's lock) and the deadline. A parker
 * with one waiter and no deadline - every blocking call but weft_select
 * and the timed ones - is decided by a claimer holding that one lock, so
 * the claim is a plain store; the others (`contended`) claim with a CAS.
 *
 * A queue is an intrusive doubly linked list guarded by a lock word the
 * owning object keeps (a spinlock: nothing blocks while holding one).
 * Waiters whose parker was decided elsewhere (a select case that lost, a
 * timed-out waiter) stay linked until whoever holds the lock next meets
 * them (waitq_claim drops them) or their owner unlinks them.
 *
 * A fiber blocks holding the object's lock across weft__park: the lock is
 * released by the park commit, after the switch, so a waker can never
 * ready a fiber whose context is not saved yet. Nothing in the switch path
 * takes these locks (see weft__parker_block).
 */
#ifndef WEFT_SCHED_WAITQ_H
#define WEFT_SCHED_WAITQ_H

#include <stdatomic.h>
#include <stdint.h>

#include "ctx/arch/relax.h"
#include "sched/sched.h"

enum { PARK_WAITING = 0, PARK_CLAIMED, PARK_WOKEN, PARK_TIMEDOUT };

struct weft__parker {
    _Atomic uint32_t   state;    /* PARK_*; the futex word for threads    */
    int                winner;   /* index of the claimed waiter; by the waker */
    int                contended; /* a deadline, or several waiters (see above) */
    struct weft_fiber *fiber;    /* NULL: a plain thread                  */
    struct worker     *tworker;  /* whose heap holds `timer`; NULL: none  */
    int64_t            deadline; /* weft__now() clock; < 0: none          */
    struct weft__timer timer;
};

struct weft__waiter {
    struct weft__waiter *next, *prev;
    struct weft__waitq  *q;      /* non-NULL while linked; with the lock  */
    struct weft__parker *p;
    void                *elem;   /* channels: value to send / receive into */
    int                  index;  /* select: the case                      */
    int                  result; /* written by the waker                  */
    int64_t              since;  /* mutex: first enqueue, for hand-off    */
};

/* Mirrors struct weft_private_waitq in weft.h (checked in waitq.c). */
struct weft__waitq {
    _Atomic unsigned     lock;   /* the owner's lock word (may be unused) */
    struct weft__waiter *head, *tail;
};

/* weft__spin_lock's contended path: spin until the word looks free,
 * then retry. Any thread or fiber. */
void weft__spin_lock_slow(_Atomic unsigned *l);

/* A tiny lock: spins, then yields the CPU. Held only for a few hundred
 * instructions, never across a block (except into a park commit). The
 * uncontended case is one exchange, inline. Any thread or fiber. */
static inline void weft__spin_lock(_Atomic unsigned *l)
{
    /* Acquire: pairs with the release store in weft__spin_unlock. */
    if (__builtin_expect(atomic_exchange_explicit(l, 1, memory_order_acquire) != 0, 0))
        weft__spin_lock_slow(l);
}

static inline void weft__spin_unlock(_Atomic unsigned *l)
{
    /* Release: publishes the critical section; pairs with the acquire
     * exchange in weft__spin_lock. */
    atomic_store_explicit(l, 0, memory_order_release);
}

/* A parker for the calling fiber or thread, with deadline (< 0: none),
 * for one waiter. Its own thread. */
static inline void weft__parker_init(struct weft__parker *p, int64_t deadline)
{
    atomic_init(&p->state, PARK_WAITING);
    p->winner = -1;
    p->contended = deadline >= 0;
    struct worker *w = weft__worker_self();
    p->fiber = w ? w->current : NULL;
    p->tworker = NULL;
    p->deadline = deadline;
}

/* weft__parker_init for a parker whose waiters go on several queues
 * (weft_select). Its own thread. */
static inline void weft__parker_init_multi(struct weft__parker *p, int64_t deadline)
{
    weft__parker_init(p, deadline);
    p->contended = 1;
}

/* Deadline timeout_ns from now; -1 for a negative timeout. Any thread. */
int64_t weft__deadline(int64_t timeout_ns);

/* Link w (of parker p) at the tail / head of q. With q's lock held. */
static inline void weft__waitq_push(struct weft__waitq *q, struct weft__waiter *w,
                                    struct weft__parker *p, int front)
{
    w->p = p;
    w->q = q;
    if (front) {
        w->prev = NULL;
        w->next = q->head;
        if (q->head)
            q->head->prev = w;
        else
            q->tail = w;
        q->head = w;
    } else {
        w->next = NULL;
        w->prev = q->tail;
        if (q->tail)
            q->tail->next = w;
        else
            q->head = w;
        q->tail = w;
    }
}

/* Unlink w if it is still linked on q; its next and prev become NULL.
 * With q's lock held. */
static inline void weft__waitq_remove(struct weft__waitq *q, struct weft__waiter *w)
{
    if (w->q != q)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->q = NULL;
    w->next = w->prev = NULL;
}

/* Claim the first waiter whose parker is still waiting (dropping the
 * decided ones before it): its parker becomes PARK_CLAIMED with winner
 * set, it is unlinked, and the caller must fill in its result and wake it
 * with weft__parker_wake after releasing the lock. NULL if none. With q's
 * lock held. */
static inline struct weft__waiter *weft__waitq_claim(struct weft__waitq *q)
{
    struct weft__waiter *w;
    while ((w = q->head) != NULL) {
        /* weft__waitq_remove for the head, which has no prev. next
         * becomes NULL too: claimers chain what they claim through it. */
        struct weft__waiter *next = w->next;
        q->head = next;
        if (next)
            next->prev = NULL;
        else
            q->tail = NULL;
        w->q = NULL;
        w->next = NULL;
        struct weft__parker *p = w->p;
        if (!p->contended) {
            /* Relaxed: only we, under the lock we hold, can decide p (see
             * the top), so it is still waiting. The lock orders this
             * after its owner's writes; the wake-up (the ready's hand-
             * over, or PARK_WOKEN's release store) publishes it. */
            atomic_store_explicit(&p->state, PARK_CLAIMED, memory_order_relaxed);
            p->winner = w->index;
            return w;
        }
        uint32_t expect = PARK_WAITING;
        /* Acquire: orders our reads of the parker after its owner's
         * writes (its init, published to us by the queue lock too).
         * Relaxed on failure: a decided parker is just dropped; its owner
         * unlinks nothing twice (remove checks w->q under the lock). */
        if (atomic_compare_exchange_strong_explicit(&p->state, &expect, PARK_CLAIMED,
                                                    memory_order_acquire,
                                                    memory_order_relaxed)) {
            p->winner = w->index;
            return w;
        }
    }
    return NULL;
}

/* Wake a claimed parker. Reads p before waking; p may be gone after.
 * Any thread, no lock held. */
void weft__parker_wake(struct weft__parker *p);
/* Wake a chain of claimed waiters linked through `next` (as collected by
 * a broadcast). Any thread, no lock held. */
void weft__waiters_wake(struct weft__waiter *chain);

/*
 * Block until p is claimed or its deadline passes. Called with the
 * object's lock(s) held and p's waiters linked; release(arg) drops the
 * locks (for a fiber: in the park commit, after the switch, on the worker
 * it left; for a thread: before sleeping). Returns 0 when claimed (the
 * waker's writes are visible), -ETIMEDOUT when the deadline won (the
 * caller must unlink its waiters), -ENOMEM if a fiber's timer could not be
 * armed (treated as timed out as well). The calling fiber or thread.
 */
int weft__parker_block(struct weft__parker *p, void (*release)(void *), void *arg);
/* weft__parker_block where the release is unlocking the one spinlock
 * *lock: for a fiber without a deadline, the park commit is that unlock
 * alone. Same results and caller. */
int weft__parker_block_unlock(struct weft__parker *p, _Atomic unsigned *lock);

/* Is m locked (by anybody)? For weft_cond's misuse check. Any thread. */
int weft__mutex_held(weft_mutex *m);

/* Unlink w from q under lock l if still linked. Any thread. */
void weft__waiter_cancel(_Atomic unsigned *l, struct weft__waitq *q, struct weft__waiter *w);

/* Futex wait while *word == val, until the absolute weft__now() deadline
 * (< 0: none). Returns -ETIMEDOUT once past it, else 0 (possibly
 * spuriously). Any thread. */
int  weft__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t deadline);
/* Wake one thread waiting on word. Any thread. */
void weft__futex_wake(_Atomic uint32_t *word);

#endif
