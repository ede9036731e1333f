/*
 * A bounded Chase–Lev work-stealing deque of pointers. Internal.
 *
 * One owner pushes and pops at the bottom (LIFO); any number of thieves
 * take from the top (FIFO). The buffer never grows: a push to a full deque
 * fails and the caller spills work elsewhere (the scheduler's global
 * queue), which keeps every slot address stable for the life of the deque
 * and makes the protocol simpler than the resizing original.
 *
 * Thread rules, per function: "owner" means the one thread that owns the
 * deque at that moment (the worker running it); "any thread" includes the
 * owner itself, which may steal from its own top end.
 */
#ifndef WEFT_SCHED_DEQUE_H
#define WEFT_SCHED_DEQUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define DEQUE_CACHELINE 64

struct deque {
    /* top: written only by successful CASes (thieves, or the owner taking
     * the last item); the one word thieves contend on. */
    _Alignas(DEQUE_CACHELINE) _Atomic int64_t top;
    /* bottom: written only by the owner, read by thieves. Its own line,
     * so a push does not invalidate the line thieves CAS. */
    _Alignas(DEQUE_CACHELINE) _Atomic int64_t bottom;
    _Alignas(DEQUE_CACHELINE) _Atomic(void *) *slots;
    int64_t mask;      /* capacity - 1; capacity is a power of two */
    int     solo;      /* no thieves: the owner skips its locked operations */
};

/* Results of deque_steal. */
enum { DEQUE_OK = 0, DEQUE_EMPTY, DEQUE_ABORT };

/* Make an empty deque of 2^log2_cap slots (1 <= log2_cap <= 24). 0 or
 * -ENOMEM. Before the deque is shared. */
int  deque_init(struct deque *d, unsigned log2_cap);
/* Declare that no thread but the owner will ever use d (a runtime with a
 * single worker): pop and deque_take_oldest then need no locked
 * instruction. Before the deque is used. */
static inline void deque_set_solo(struct deque *d, int solo)
{
    d->solo = solo;
}
/* Free the buffer. The deque must be empty and no longer shared. */
void deque_destroy(struct deque *d);

/* Push x (not NULL) at the bottom. 0, or -1 when the deque is full.
 * Owner only. */
/* Pop the most recently pushed item; NULL when empty (or when a thief
 * took the last item first). Owner only. */
void *deque_pop(struct deque *d);
/* Take the oldest item into *out. DEQUE_OK, DEQUE_EMPTY, or DEQUE_ABORT
 * when another thread won the race for it (the deque may still hold
 * items: retrying is the caller's choice). Any thread. */
int  deque_steal(struct deque *d, void **out);
/* Move up to half of victim's items (at most max) into thief, oldest
 * first, and return the first one moved directly instead of pushing it;
 * NULL if none could be taken. thief must be empty enough to hold them.
 * Owner of thief only; victim may be any deque but thief. */
void *deque_steal_half(struct deque *victim, struct deque *thief, unsigned max);

/* Push up to n items of v at the bottom, v[0] first (so v[n-1] is popped
 * first); one release store publishes them all. Returns how many fitted.
 * Owner only. */
unsigned deque_push_many(struct deque *d, void *const *v, unsigned n);
/* Take up to max of the oldest items into out, oldest first, with a
 * single CAS against the thieves. Returns how many. Owner only (thieves
 * use deque_steal: see deque.c for why a range claim is safe only for the
 * owner). */
unsigned deque_take_oldest(struct deque *d, void **out, unsigned max);

/* Items in the deque at some recent instant; exact for the owner when no
 * thief is active, a hint otherwise. Any thread. */
/* Push x at the bottom. 0, or -1 if the deque is full. Owner only. Inline:
 * every spawn and yield pushes. */
static inline int deque_push(struct deque *d, void *x)
{
    /* Relaxed: only the owner writes bottom. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    /* Acquire: pairs with the successful CAS of top in deque_steal (and
     * deque_pop). Slot b & mask last held item b - capacity; a thief read
     * it before moving top past it, and this acquire orders that read
     * before our overwrite below, so the thief cannot see the new item
     * under the old index. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    if (b - t > d->mask)
        return -1;
    /* Relaxed: published by the release store of bottom just below. */
    atomic_store_explicit(&d->slots[b & d->mask], x, memory_order_relaxed);
    /* Release: publishes the slot written above (and everything the
     * owner wrote to the item before pushing it); pairs with the seq_cst
     * (hence acquire) load of bottom in deque_steal. */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return 0;
}

/* Take the oldest item (the top), as a thief would, but as the owner: the
 * item or NULL. Inline for a deque without thieves, which needs no locked
 * instruction (every yield on one worker takes one). Owner only. */
static inline void *deque_take_oldest_one(struct deque *d)
{
    if (d->solo) {
        /* Relaxed throughout: nobody else reads this deque. */
        int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
        if (atomic_load_explicit(&d->bottom, memory_order_relaxed) - t <= 0)
            return NULL;
        void *x = atomic_load_explicit(&d->slots[t & d->mask], memory_order_relaxed);
        atomic_store_explicit(&d->top, t + 1, memory_order_relaxed);
        return x;
    }
    void *x;
    return deque_take_oldest(d, &x, 1) ? x : NULL;
}

static inline int64_t deque_size(struct deque *d)
{
    /* Relaxed: a hint only (idle re-checks re-validate by stealing). */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    return b > t ? b - t : 0;
}

/* The item deque_pop would return next, without taking it (NULL if
 * empty), as a prefetch hint. Owner only. */
static inline void *deque_peek(struct deque *d)
{
    /* Relaxed: the owner's own writes; a thief may take the item at any
     * moment, which only makes the hint useless. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    if (b < atomic_load_explicit(&d->top, memory_order_relaxed))
        return NULL;
    return atomic_load_explicit(&d->slots[b & d->mask], memory_order_relaxed);
}

/* Capacity in items. Any thread. */
static inline int64_t deque_capacity(const struct deque *d)
{
    return d->mask + 1;
}

#endif
