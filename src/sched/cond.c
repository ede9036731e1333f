/*
 * weft_cond: a wait queue (waitq.h) whose own lock word guards it. A
 * waiter queues itself under that lock, then - in the same step that
 * drops it (the park commit, or before a thread sleeps) - unlocks the
 * mutex: a signal from anyone who locks the mutex after that finds it.
 *
 * Lifetime (a waiter may free the condition variable as soon as its wait
 * returns, while the signal that woke it is still inside the call): a
 * signaller claims waiters under the queue lock and drops the lock before
 * waking them; the wake-ups read only the waiters' own parkers, and a
 * claimed waiter cannot return before it is woken. The waiter's park
 * commit drops the queue lock and then unlocks the mutex (whose own
 * lifetime argument is in mutex.c), reading both pointers first.
 */
#include "sched/waitq.h"
#include "sched/chaos.h"

#include <errno.h>

struct cond_impl {
    struct weft__waitq q;
};
_Static_assert(sizeof(struct cond_impl) == sizeof(weft_cond), "weft_cond layout");

static struct weft__waitq *cq(weft_cond *c)
{
    return &((struct cond_impl *)(void *)c)->q;
}

void weft_cond_init(weft_cond *c)
{
    struct weft__waitq *q = cq(c);
    atomic_init(&q->lock, 0);
    q->head = q->tail = NULL;
}

struct cond_release {
    struct weft__waitq *q;
    weft_mutex         *m;
};

/* Drop the queue lock, then the mutex. Where weft__parker_block runs it.
 * r is on the waiter's stack: both fields are read before the first
 * release, after which a signaller may wake the waiter. */
static void cond_release(void *arg)
{
    struct cond_release *r = arg;
    struct weft__waitq *q = r->q;
    weft_mutex *m = r->m;
    weft__spin_unlock(&q->lock);
    weft__chaos(CHAOS_COND_RELEASE);
    weft_mutex_unlock(m);
}

int weft_cond_timedwait(weft_cond *c, weft_mutex *m, int64_t timeout_ns)
{
    if (!c || !m)
        return -EINVAL;
    if (!weft__mutex_held(m))
        return -EPERM; /* nobody holds m: it cannot be the caller's */
    struct weft__waitq *q = cq(c);
    struct weft__parker p;
    struct weft__waiter w = { .index = 0 };
    struct cond_release r = { q, m };
    weft__chaos_move(CHAOS_BLOCK);
    weft__parker_init(&p, weft__deadline(timeout_ns));
    weft__spin_lock(&q->lock);
    weft__waitq_push(q, &w, &p, 0);
    weft__wait_reason(WAIT_COND, (uintptr_t)c);
    int rc = weft__parker_block(&p, cond_release, &r);
    if (rc != 0) {
        weft__waiter_cancel(&q->lock, q, &w);
        rc = rc == -ENOMEM ? -ENOMEM : -ETIMEDOUT;
    }
    weft_mutex_lock(m);
    return rc;
}

void weft_cond_wait(weft_cond *c, weft_mutex *m)
{
    (void)weft_cond_timedwait(c, m, -1);
}

void weft_cond_signal(weft_cond *c)
{
    struct weft__waitq *q = cq(c);
    weft__spin_lock(&q->lock);
    struct weft__waiter *w = weft__waitq_claim(q);
    weft__spin_unlock(&q->lock);
    if (w)
        weft__parker_wake(w->p);
}

void weft_cond_broadcast(weft_cond *c)
{
    struct weft__waitq *q = cq(c);
    struct weft__waiter *chain = NULL, **tail = &chain, *w;
    weft__spin_lock(&q->lock);
    while ((w = weft__waitq_claim(q)) != NULL) {
        *tail = w;
        tail = &w->next;
    }
    weft__spin_unlock(&q->lock);
    weft__waiters_wake(chain);
}
