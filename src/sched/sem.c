/*
 * weft_sem: a count and a wait queue (waitq.h). wait takes a unit with a
 * CAS when one is there; otherwise it queues under the lock after
 * re-checking. post hands its unit straight to the oldest waiter, else
 * adds it to the count, under the lock: a unit never sits in the count
 * while somebody is queued, so waiters are served in order.
 */
#include "sched/waitq.h"

#include <errno.h>

struct sem_impl {
    _Atomic unsigned   count;
    struct weft__waitq q;
};
_Static_assert(sizeof(struct sem_impl) == sizeof(weft_sem), "weft_sem layout");

static struct sem_impl *impl(weft_sem *s)
{
    return (struct sem_impl *)(void *)s;
}

void weft_sem_init(weft_sem *s, unsigned count)
{
    struct sem_impl *x = impl(s);
    atomic_init(&x->count, count);
    atomic_init(&x->q.lock, 0);
    x->q.head = x->q.tail = NULL;
}

/* Take a unit if there is one. Any thread. */
static int take(struct sem_impl *x)
{
    /* Relaxed: the CAS decides. */
    unsigned c = atomic_load_explicit(&x->count, memory_order_relaxed);
    while (c > 0)
        /* Acquire: pairs with the release add in weft_sem_post. */
        if (atomic_compare_exchange_weak_explicit(&x->count, &c, c - 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

static void release_q(void *arg)
{
    weft__spin_unlock(&((struct weft__waitq *)arg)->lock);
}

int weft_sem_timedwait(weft_sem *s, int64_t timeout_ns)
{
    struct sem_impl *x = impl(s);
    if (take(x))
        return 0;
    if (timeout_ns == 0)
        return -ETIMEDOUT;
    struct weft__parker p;
    struct weft__waiter w = { .index = 0 };
    weft__parker_init(&p, weft__deadline(timeout_ns));
    weft__spin_lock(&x->q.lock);
    if (take(x)) {
        weft__spin_unlock(&x->q.lock);
        return 0;
    }
    weft__waitq_push(&x->q, &w, &p, 0);
    weft__wait_reason(WAIT_SEM, (uintptr_t)s);
    int rc = weft__parker_block(&p, release_q, &x->q);
    if (rc != 0) {
        weft__waiter_cancel(&x->q.lock, &x->q, &w);
        return rc == -ENOMEM ? -ENOMEM : -ETIMEDOUT;
    }
    return 0; /* the poster handed us its unit */
}

void weft_sem_wait(weft_sem *s)
{
    (void)weft_sem_timedwait(s, -1);
}

void weft_sem_post(weft_sem *s)
{
    struct sem_impl *x = impl(s);
    weft__spin_lock(&x->q.lock);
    struct weft__waiter *w = weft__waitq_claim(&x->q);
    if (!w)
        /* Release: publishes what came before the post to the taker's
         * acquire CAS. */
        atomic_fetch_add_explicit(&x->count, 1, memory_order_release);
    weft__spin_unlock(&x->q.lock);
    if (w)
        weft__parker_wake(w->p);
}
