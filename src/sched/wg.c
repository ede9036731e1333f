/*
 * weft_wg: a counter and a wait queue (waitq.h). The counter is changed
 * with seq_cst RMWs outside the queue lock; a waiter re-reads it under
 * the lock before queueing, and whoever brings it to zero takes the lock
 * afterwards to release the queue, so a waiter either sees zero or is
 * queued before the releaser looks.
 */
#include "sched/waitq.h"

#include <stdio.h>
#include <stdlib.h>

struct wg_impl {
    _Atomic int64_t    count;
    struct weft__waitq q;
};
_Static_assert(sizeof(struct wg_impl) == sizeof(weft_wg), "weft_wg layout");

static struct wg_impl *impl(weft_wg *wg)
{
    return (struct wg_impl *)(void *)wg;
}

void weft_wg_init(weft_wg *wg)
{
    struct wg_impl *x = impl(wg);
    atomic_init(&x->count, 0);
    atomic_init(&x->q.lock, 0);
    x->q.head = x->q.tail = NULL;
}

void weft_wg_add(weft_wg *wg, int delta)
{
    struct wg_impl *x = impl(wg);
    int64_t v = atomic_fetch_add(&x->count, delta) + delta;
    if (v < 0) {
        fputs("weft: weft_wg counter went negative\n", stderr);
        abort();
    }
    if (v > 0 || delta == 0)
        return;
    struct weft__waiter *chain = NULL, **tail = &chain, *w;
    weft__spin_lock(&x->q.lock);
    while ((w = weft__waitq_claim(&x->q)) != NULL) {
        *tail = w;
        tail = &w->next;
    }
    weft__spin_unlock(&x->q.lock);
    weft__waiters_wake(chain);
}

void weft_wg_done(weft_wg *wg)
{
    weft_wg_add(wg, -1);
}

static void release_q(void *arg)
{
    weft__spin_unlock(&((struct weft__waitq *)arg)->lock);
}

void weft_wg_wait(weft_wg *wg)
{
    struct wg_impl *x = impl(wg);
    if (atomic_load(&x->count) == 0)
        return;
    weft__spin_lock(&x->q.lock);
    if (atomic_load(&x->count) == 0) {
        weft__spin_unlock(&x->q.lock);
        return;
    }
    struct weft__parker p;
    struct weft__waiter w = { .index = 0 };
    weft__parker_init(&p, -1);
    weft__waitq_push(&x->q, &w, &p, 0);
    weft__wait_reason(WAIT_WG, (uintptr_t)wg);
    weft__parker_block(&p, release_q, &x->q);
}
