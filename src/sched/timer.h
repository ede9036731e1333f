/*
 * Per-worker timers: a binary min-heap of deadlines. Internal.
 *
 * A timer is embedded in whatever waits on it (a sleeping fiber now, an
 * I/O wait with a deadline later). A heap belongs to one worker and is
 * touched only by that worker's thread: arming, disarming and firing are
 * all "owner worker only", so nothing here is atomic. The worker fires due
 * timers from its schedule loop and sleeps in the poller no longer than
 * until the earliest deadline.
 */
#ifndef WEFT_SCHED_TIMER_H
#define WEFT_SCHED_TIMER_H

#include <stddef.h>
#include <stdint.h>

#define TIMER_UNARMED UINT32_MAX

struct weft__timer {
    int64_t  when;   /* deadline on the weft_now() clock, ns             */
    /* Called by the owner worker once the timer is due and removed. */
    void   (*fire)(struct weft__timer *t);
    uint32_t slot;   /* index in the heap while armed, else TIMER_UNARMED */
    uint32_t seq;    /* arming order, compared modulo 2^32: equal
                        deadlines fire first-armed first */
};

struct timer_heap {
    struct weft__timer **v;
    uint32_t n, cap;
    uint32_t seq;
};

/* An empty heap (allocates nothing yet). */
void timer_heap_init(struct timer_heap *h);
/* Free the heap's array. Timers still armed are forgotten. */
void timer_heap_destroy(struct timer_heap *h);

static inline void timer_init(struct weft__timer *t, void (*fire)(struct weft__timer *))
{
    t->when = 0;
    t->seq = 0;
    t->slot = TIMER_UNARMED;
    t->fire = fire;
}

static inline int timer_armed(const struct weft__timer *t)
{
    return t->slot != TIMER_UNARMED;
}

/* Arm t (unarmed) to fire at `when`. 0 or -ENOMEM. Owner worker only.
 * It never takes the heap's last free slot, which is kept for one
 * reserved timer (timer_add_reserved). */
int  timer_add(struct timer_heap *h, struct weft__timer *t, int64_t when);
/* Make sure the heap has its slot for the reserved timer, allocating the
 * array if need be (before memory may run short). 0 or -ENOMEM. */
int  timer_heap_reserve(struct timer_heap *h);
/* Arm the heap's one reserved timer (a heap has at most one, and it must
 * have been reserved): never fails, so it serves what must be retried
 * when memory is short (the worker's stack retry, sched.c). */
void timer_add_reserved(struct timer_heap *h, struct weft__timer *t, int64_t when);
/* Disarm t, armed in h. Owner worker only. */
void timer_remove(struct timer_heap *h, struct weft__timer *t);
/* Remove and return the earliest timer if it is due at `now`, else NULL.
 * The caller fires it. Owner worker only. */
struct weft__timer *timer_pop_due(struct timer_heap *h, int64_t now);

/* Earliest deadline, or INT64_MAX when no timer is armed. Owner only. */
static inline int64_t timer_next(const struct timer_heap *h)
{
    return h->n ? h->v[0]->when : INT64_MAX;
}

#endif
