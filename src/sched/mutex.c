/*
 * weft_mutex: a lock word plus a wait queue (waitq.h).
 *
 * State word bits, changed only by atomic RMWs:
 *   M_LOCKED   somebody holds the mutex
 *   M_WAITERS  the queue may be non-empty: unlock must take the slow
 *              path. Set only with the queue lock held and M_LOCKED set;
 *              cleared with the queue lock held when the queue empties.
 *
 * Lock: one CAS on the fast path; then SPIN_ROUNDS tries (none for a
 * fiber on a single worker, where the holder cannot run meanwhile).
 * Barging is allowed, as in Go's normal mode: a running fiber that finds
 * the mutex free takes it, which keeps a contended mutex hot. Then, under the queue
 * lock, either take the mutex or set M_WAITERS and queue up (at the head
 * if this is a retry after a wake-up, so arrival order is kept).
 * Unlock, slow path: claim the oldest waiter. If it has waited more than
 * HANDOFF_NS since it first queued, hand it the mutex directly (M_LOCKED
 * stays set, nobody can barge) - Go's starvation mode, which bounds how
 * long any waiter waits; otherwise release the mutex and let the woken
 * waiter compete for it.
 */
#include "sched/waitq.h"

#include <errno.h>

#define M_LOCKED    1u
#define M_WAITERS   2u
#define SPIN_ROUNDS 100
#define HANDOFF_NS  1000000

#define RESULT_RETRY   0
#define RESULT_HANDOFF 1

struct mutex_impl {
    _Atomic unsigned   state;
    struct weft__waitq q;
};
_Static_assert(sizeof(struct mutex_impl) == sizeof(weft_mutex), "weft_mutex layout");

static struct mutex_impl *impl(weft_mutex *m)
{
    return (struct mutex_impl *)(void *)m;
}

void weft_mutex_init(weft_mutex *m)
{
    struct mutex_impl *x = impl(m);
    atomic_init(&x->state, 0);
    atomic_init(&x->q.lock, 0);
    x->q.head = x->q.tail = NULL;
}

int weft_mutex_trylock(weft_mutex *m)
{
    struct mutex_impl *x = impl(m);
    /* Relaxed: a hint; the CAS decides. */
    unsigned s = atomic_load_explicit(&x->state, memory_order_relaxed);
    /* Acquire: pairs with the release in weft_mutex_unlock. */
    while (!(s & M_LOCKED))
        if (atomic_compare_exchange_weak_explicit(&x->state, &s, s | M_LOCKED,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return 0;
    return -EBUSY;
}

static void release_q(void *arg)
{
    weft__spin_unlock(&((struct weft__waitq *)arg)->lock);
}

/* Any fiber or thread. */
static void lock_slow(struct mutex_impl *x)
{
    int64_t since = 0;
    /* A fiber on the only worker spins in vain: the holder cannot run
     * (or is a plain thread, rare enough to park for). */
    int spins = weft__worker_self() && weft__rt.nworkers < 2 ? 0 : SPIN_ROUNDS;
    for (;;) {
        for (int i = 0; i < spins; i++) {
            if (weft_mutex_trylock((weft_mutex *)(void *)x) == 0)
                return;
            __builtin_ia32_pause();
        }
        weft__spin_lock(&x->q.lock);
        /* Relaxed: the CASes below decide. */
        unsigned s = atomic_load_explicit(&x->state, memory_order_relaxed);
        for (;;) {
            if (!(s & M_LOCKED)) {
                /* Acquire: pairs with the release in weft_mutex_unlock. */
                if (atomic_compare_exchange_weak_explicit(&x->state, &s, s | M_LOCKED,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)) {
                    weft__spin_unlock(&x->q.lock);
                    return;
                }
                continue;
            }
            /* Relaxed: the queue lock orders M_WAITERS against unlock's
             * slow path, which takes it before looking at the queue; an
             * unlock on the fast path fails its CAS on the changed word. */
            if (atomic_compare_exchange_weak_explicit(&x->state, &s, s | M_WAITERS,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        }
        struct weft__parker p;
        struct weft__waiter w = { .index = 0, .result = RESULT_RETRY };
        weft__parker_init(&p, -1);
        int retry = since != 0; /* woken before: back to the head */
        w.since = retry ? since : weft__now();
        since = w.since;
        weft__waitq_push(&x->q, &w, &p, retry);
        weft__wait_reason(WAIT_MUTEX, (uintptr_t)x);
        weft__parker_block(&p, release_q, &x->q);
        if (w.result == RESULT_HANDOFF)
            return; /* the unlocker left M_LOCKED set for us */
    }
}

void weft_mutex_lock(weft_mutex *m)
{
    struct mutex_impl *x = impl(m);
    unsigned expect = 0;
    /* Acquire: pairs with the release in weft_mutex_unlock. */
    if (atomic_compare_exchange_strong_explicit(&x->state, &expect, M_LOCKED,
                                                memory_order_acquire,
                                                memory_order_relaxed))
        return;
    lock_slow(x);
}

void weft_mutex_unlock(weft_mutex *m)
{
    struct mutex_impl *x = impl(m);
    unsigned expect = M_LOCKED;
    /* Release: publishes the critical section to the next locker's
     * acquire. */
    if (atomic_compare_exchange_strong_explicit(&x->state, &expect, 0,
                                                memory_order_release,
                                                memory_order_relaxed))
        return;
    weft__spin_lock(&x->q.lock);
    struct weft__waiter *w = weft__waitq_claim(&x->q);
    unsigned clear = x->q.head ? 0 : M_WAITERS;
    if (w && weft__now() - w->since > HANDOFF_NS) {
        w->result = RESULT_HANDOFF;
        /* Release: as above, for the waiter we hand the mutex to (the
         * wake-up orders it too). */
        atomic_fetch_and_explicit(&x->state, ~clear, memory_order_release);
    } else {
        if (w)
            w->result = RESULT_RETRY;
        /* Release: as above. */
        atomic_fetch_and_explicit(&x->state, ~(M_LOCKED | clear), memory_order_release);
    }
    weft__spin_unlock(&x->q.lock);
    if (w)
        weft__parker_wake(w->p);
}
