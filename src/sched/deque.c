/*
 * Bounded Chase–Lev deque.
 *
 * The algorithm is Chase and Lev's ("Dynamic circular work-stealing
 * deque", SPAA 2005) with the C11 memory orderings that Lê, Pop, Cohen and
 * Zappa Nardelli proved sufficient ("Correct and efficient work-stealing
 * for weak memory models", PPoPP 2013), minus the resizing: the buffer is
 * fixed, a push to a full deque fails.
 *
 * Indices top and bottom only grow (64-bit: they cannot wrap in the life
 * of a process); slot i lives at slots[i & mask]. Items are in [top,
 * bottom). The owner pushes at bottom and pops at bottom - 1; thieves take
 * slot top and claim it by CASing top to top + 1. The only item owner and
 * thieves can both reach is the last one, and the owner then claims it
 * with the same CAS, so every item is taken exactly once.
 *
 * Where the paper uses a seq_cst fence we use seq_cst operations instead.
 * In pop, the paper has "store bottom (relaxed); fence(seq_cst); load top
 * (relaxed)"; we have "exchange bottom (seq_cst); load top (seq_cst)". In
 * steal, "load top (acquire); fence(seq_cst); load bottom (acquire)"
 * becomes two seq_cst loads. Both pairs still sit in the single total
 * order S of seq_cst operations, which is all the proof needs: either the
 * owner's load of top follows the thief's load of bottom in S, or the
 * thief sees the decremented bottom. ThreadSanitizer models seq_cst
 * operations exactly but ignores stand-alone fences, so this form keeps
 * TSan builds free of false reports; on x86-64 it costs the same (one
 * locked instruction in pop, plain loads in steal) and steal gets cheaper.
 * The paper's release fence in push becomes a release store of bottom,
 * for the same reason.
 */
#include "sched/deque.h"

#include <errno.h>

#include "common/alloc.h"

int deque_init(struct deque *d, unsigned log2_cap)
{
    if (log2_cap < 1 || log2_cap > 24)
        return -EINVAL;
    size_t cap = (size_t)1 << log2_cap;
    d->slots = weft__calloc(cap * sizeof *d->slots);
    if (!d->slots)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        atomic_init(&d->slots[i], NULL);
    d->mask = (int64_t)cap - 1;
    d->solo = 0;
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    return 0;
}

void deque_destroy(struct deque *d)
{
    weft__free((void *)d->slots, (size_t)(d->mask + 1) * sizeof *d->slots);
    d->slots = NULL;
}

void *deque_pop(struct deque *d)
{
    /* Relaxed: only the owner writes bottom; top only grows, so a stale
     * top can only make an empty deque look non-empty, never the
     * reverse. This early exit keeps an empty pop free of any locked
     * instruction. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    if (b < atomic_load_explicit(&d->top, memory_order_relaxed))
        return NULL;
    if (d->solo) {
        /* Relaxed throughout: nobody else reads this deque. */
        atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
        return atomic_load_explicit(&d->slots[b & d->mask], memory_order_relaxed);
    }
    /* seq_cst (stands in for the paper's store + seq_cst fence): the
     * reservation of slot b must be ordered before our load of top, and
     * pairs with the seq_cst loads of top and bottom in deque_steal, so
     * that a thief and the owner cannot both miss each other's claim. */
    atomic_exchange_explicit(&d->bottom, b, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    void *x = NULL;
    if (t <= b) {
        /* Relaxed: the owner wrote this slot itself. */
        x = atomic_load_explicit(&d->slots[b & d->mask], memory_order_relaxed);
        if (t == b) {
            /* The last item: race the thieves for it with their own CAS.
             * seq_cst: part of the same total order as the thieves' CAS;
             * failure relaxed: we only learn that we lost. */
            if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1,
                                                         memory_order_seq_cst,
                                                         memory_order_relaxed))
                x = NULL;
            /* Relaxed: owner-only store; top == b + 1 now either way. */
            atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        }
    } else {
        /* Relaxed: owner-only store restoring the empty deque. */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return x;
}

int deque_steal(struct deque *d, void **out)
{
    /* seq_cst (acquire + the paper's fence): we must read top before
     * bottom in the total order that the owner's exchange of bottom and
     * load of top also belong to. Acquire part: pairs with the previous
     * successful CAS of top. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    /* seq_cst: see above. Acquire part: pairs with the release store of
     * bottom in deque_push, publishing slot t and the item it points to. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    if (t >= b)
        return DEQUE_EMPTY;
    /* Relaxed: made visible by the acquire on bottom; if the owner has
     * since reused the slot, top has moved and the CAS below fails. */
    void *x = atomic_load_explicit(&d->slots[t & d->mask], memory_order_relaxed);
    /* seq_cst: claims item t against other thieves and the owner's CAS in
     * deque_pop (same total order). Release part: pairs with the acquire
     * load of top in deque_push (our read of the slot happens before the
     * owner overwrites it). Failure relaxed: we discard x. */
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1,
                                                 memory_order_seq_cst,
                                                 memory_order_relaxed))
        return DEQUE_ABORT;
    *out = x;
    return DEQUE_OK;
}

unsigned deque_push_many(struct deque *d, void *const *v, unsigned n)
{
    /* Relaxed and acquire, as in deque_push. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    int64_t room = d->mask + 1 - (b - t);
    if ((int64_t)n > room)
        n = room > 0 ? (unsigned)room : 0;
    for (unsigned i = 0; i < n; i++)
        /* Relaxed: published by the release store below. */
        atomic_store_explicit(&d->slots[(b + i) & d->mask], v[i], memory_order_relaxed);
    /* Release: publishes all the slots above; pairs with the acquire in
     * deque_steal, as in deque_push. */
    if (n)
        atomic_store_explicit(&d->bottom, b + n, memory_order_release);
    return n;
}

/*
 * The owner may claim a whole range at the top with one CAS, because the
 * hazard that forbids it to thieves (see steal-half below) is the owner
 * popping into the claimed range meanwhile; here the claimant is the
 * owner, which is not popping. Thieves racing for the same top lose their
 * CAS, or win theirs first and make ours fail, and we retry.
 */
unsigned deque_take_oldest(struct deque *d, void **out, unsigned max)
{
    if (d->solo) {
        /* Relaxed throughout: nobody else reads this deque. */
        int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
        int64_t n = atomic_load_explicit(&d->bottom, memory_order_relaxed) - t;
        if (n <= 0)
            return 0;
        if (n > (int64_t)max)
            n = max;
        for (int64_t i = 0; i < n; i++)
            out[i] = atomic_load_explicit(&d->slots[(t + i) & d->mask], memory_order_relaxed);
        atomic_store_explicit(&d->top, t + n, memory_order_relaxed);
        return (unsigned)n;
    }
    for (;;) {
        /* seq_cst: as in deque_steal; also pairs with the thieves' CAS. */
        int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
        /* Relaxed: only the owner (we) writes bottom. */
        int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
        int64_t n = b - t;
        if (n <= 0)
            return 0;
        if (n > (int64_t)max)
            n = max;
        for (int64_t i = 0; i < n; i++)
            /* Relaxed: our own writes. */
            out[i] = atomic_load_explicit(&d->slots[(t + i) & d->mask], memory_order_relaxed);
        /* seq_cst: the same total order as the thieves' CAS of top.
         * Failure relaxed: a thief took the top item; retry. */
        if (atomic_compare_exchange_strong_explicit(&d->top, &t, t + n,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed))
            return (unsigned)n;
    }
}

/*
 * Steal-half is a run of ordinary steals. Claiming the whole range
 * [t, t + n) with one CAS of top would be cheaper, but it is not correct
 * with this deque: the owner pops without a CAS whenever it sees more than
 * one item, so between the thief's read of bottom and its CAS the owner
 * can pop down into the range the thief is about to claim, and both would
 * take the same items. Each single steal re-reads bottom and is covered by
 * the proof; after the first one the line holding top is already in the
 * thief's cache, so the extra CASes are cheap.
 */
void *deque_steal_half(struct deque *victim, struct deque *thief, unsigned max)
{
    int64_t n = (deque_size(victim) + 1) / 2;
    int64_t room = deque_capacity(thief) - deque_size(thief) + 1;
    if (n > (int64_t)max)
        n = max;
    if (n > room)
        n = room;
    if (n < 1)
        n = 1; /* the size was a relaxed hint; let the steal itself decide */
    void *first = NULL;
    for (int64_t i = 0; i < n; i++) {
        void *x;
        int r = deque_steal(victim, &x);
        if (r == DEQUE_ABORT && i == 0)
            r = deque_steal(victim, &x); /* one retry: a lost race is not emptiness */
        if (r != DEQUE_OK)
            break;
        if (!first)
            first = x;
        else
            deque_push(thief, x); /* room was checked above */
    }
    return first;
}
