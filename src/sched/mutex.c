/*
 * weft_mutex: a lock word plus a wait queue (waitq.h).
 *
 * The state word, changed only by atomic RMWs:
 *
 *   bit  0      M_LOCKED    somebody holds the mutex (or it is being
 *                           handed to the queue's head: M_STARVING)
 *   bit  1      M_WAITERS   the queue may be non-empty: unlock must look
 *                           at the bits below. Set only with the queue
 *                           lock held and M_LOCKED set; cleared with the
 *                           queue lock held when the queue empties.
 *   bit  2      M_WOKEN     a waiter that an unlock claimed and woke is on
 *                           its way: it has not yet taken the mutex or
 *                           queued up again. It clears the bit in the CAS
 *                           that does either. While the bit is set,
 *                           unlock wakes nobody (but see U4: after a
 *                           lapse two waiters are on their way, and the
 *                           first one back clears the bit for both,
 *                           which costs at most an early wake).
 *   bit  3      M_STARVING  hand-off mode: the next unlock hands the
 *                           mutex to the queue's head instead of
 *                           releasing it. Set only together with M_LOCKED,
 *                           and M_LOCKED is never cleared while it is set:
 *                           STARVING implies LOCKED, so nobody can barge
 *                           in, and nobody spins for it.
 *   bits 4-13   M_TICKS     unlocks M_WOKEN kept from waking anybody since
 *                           the last wake, modulo 1024
 *   bits 14-30  M_WOKE_AT   when the last wake was, in units of 2^19 ns,
 *                           modulo 2^17 units (about 68 s)
 *   bit  31     M_QLOCK     the wait queue's lock (a spinlock bit, held
 *                           for a few hundred instructions). It lives in
 *                           the state word so that an unlock that must
 *                           look at the queue releases the mutex and the
 *                           queue lock in ONE atomic step: see Lifetime.
 *
 * Lock (any fiber or thread):
 *  L1 One atomic OR of M_LOCKED: the mutex was free iff M_LOCKED was
 *     clear, whatever other bits are set (waiters queued, one woken).
 *     Barging is allowed (Go's normal mode): a running fiber that finds
 *     the mutex free takes it, ahead of queued waiters, which keeps a
 *     contended mutex hot on one worker.
 *  L2 Spin while the mutex is held (not in hand-off mode) and spinning
 *     can pay (can_spin): up to SPIN_ROUNDS rounds of SPIN_PAUSES polls,
 *     reading the word; a free word is taken with a CAS at any time.
 *  L3 Under the queue lock: if the mutex is free, take it; otherwise CAS
 *     in M_WAITERS (and, if woken before, drop M_WOKEN and add
 *     M_STARVING once HANDOFF_NS have passed since we first queued),
 *     queue up - at the head if woken before, so arrival order is kept -
 *     and park.
 *  L4 Woken by a hand-off: the mutex is ours. Woken by U3: spin again
 *     (L2, with a fresh budget), then L3; the CAS that takes the mutex
 *     or queues us drops M_WOKEN.
 * Unlock (any fiber or thread; the caller holds the mutex):
 *  U1 Read the word. Without waiters, or with a woken waiter on its way
 *     (then counting a tick), one CAS clears M_LOCKED: one RMW also while
 *     waiters are queued, the common case under contention. Else:
 *  U2 M_STARVING: take the queue lock (still holding the mutex), claim
 *     the head and hand it the mutex (M_LOCKED stays set). Hand-off mode
 *     ends when the queue empties or its new head has waited less than
 *     HANDOFF_NS. One CAS drops the queue lock (and the bits that end).
 *  U3 M_WAITERS without M_WOKEN: take the queue lock (still holding the
 *     mutex) and claim the head; then one CAS clears M_LOCKED and
 *     M_QLOCK, sets M_WOKEN and stamps M_WOKE_AT; then wake the claimed
 *     waiter (L4) through its own parker.
 *  U4 Lapse: every 1024th tick reads the clock; if the woken waiter has
 *     been on its way for LAPSE_UNITS, it is presumed stuck where it was
 *     readied (behind a fiber that does not block), and this unlock does
 *     U3 anyway, waking the next waiter too.
 *
 * Lifetime (the contract's rule: the mutex may be freed as soon as the
 * last unlock has returned in the fiber that frees it, even while some
 * other unlock is still inside weft_mutex_unlock). The step that lets
 * another party proceed is the RMW that clears M_LOCKED: after it any
 * fiber may lock, unlock, and free the mutex. So every unlock's LAST
 * access to the mutex is that RMW:
 *  - U1 and the tick path: the CAS that clears M_LOCKED, nothing after;
 *  - U3: the queue lock is taken and the head claimed BEFORE the mutex is
 *    released, and the CAS that clears M_LOCKED also clears M_QLOCK; the
 *    wake-up after it reads only the claimed waiter's parker, on the
 *    waiter's stack, which cannot go away before the waiter is woken;
 *  - U2: the mutex passes to the claimed waiter (M_LOCKED stays set), and
 *    nobody can free it before that waiter runs and unlocks it; the CAS
 *    that drops M_QLOCK is the last access, the wake-up reads the parker.
 *    With nobody to hand to, the same CAS clears M_LOCKED too.
 * A locker (L3) touches the mutex only while its own lock call is in
 * progress, which the rule forbids freeing under; its park commit's
 * release of M_QLOCK runs before anybody can claim it.
 * (Before the queue lock lived in this word, U3 released M_LOCKED and
 * then took the separate queue lock: a fiber could lock, unlock and free
 * the mutex in between - the freed memory then served as a spinlock.)
 * No lost wake-up: a waiter is queued only with M_LOCKED set (L3's CAS
 * fails otherwise), so an unlock comes after it. That unlock wakes a
 * waiter (U2, U3), or finds M_WOKEN set; the woken waiter then either
 * takes the mutex (and unlocks later) or queues with M_LOCKED set and
 * drops M_WOKEN in one CAS, after which the next unlock wakes; if it
 * never comes back, unlocks that keep coming lapse (U4).
 *
 * Why M_WOKEN (Go's mutexWoken): without it every unlock under contention
 * claims and wakes a waiter, which costs the queue lock, a run-queue push
 * (or a futex wake for a thread), a push of the run-next slot's previous
 * occupant to the deque with a wake-up of an idle worker, while the woken
 * waiter mostly finds the mutex taken again and re-queues. A woken fiber
 * is readied into the waker's run-next slot, so with M_WOKEN the holder
 * keeps its worker and the mutex hot until it blocks or ends, the woken
 * waiter runs right after it, and no other worker is disturbed.
 *
 * No starvation: the queue's head is woken at the first unlock after the
 * previous woken waiter took the mutex or queued again, and queues again
 * (at the head) only with M_LOCKED set; once it has waited HANDOFF_NS it
 * sets M_STARVING as it does, and the next unlock hands it the mutex. A
 * woken waiter that cannot run - readied behind a fiber that keeps the
 * mutex busy without ever blocking: in its worker's run-next slot until
 * the monitor's takeover moves it, or in an inbox (WEFT_DEBUG_MIGRATE) -
 * holds up nobody for longer than the lapse: the waiter woken next
 * displaces it from the run-next slot to the deque, where idle workers
 * steal, or (readied on another worker) competes from there.
 *
 * Spinning (can_spin, Go's canSpin): a spin only pays if the holder can
 * release meanwhile, i.e. runs on another CPU. A fiber spins only if the
 * runtime has another worker that is neither parked nor searching (the
 * holder may run there; the holder is not recorded, as that would cost
 * the fast path) and its own worker has nothing else to run in its
 * run-next slot, deque or inbox (otherwise parking lets that work run,
 * e.g. the waiter a previous unlock readied here, which would wait
 * behind our spin). A plain thread always spins its budget before
 * sleeping.
 *
 * Rejected:
 *  - Handing the mutex to every woken waiter (a fair FIFO lock): each
 *    lock/unlock under contention becomes a park and a wake.
 *  - Waking a waiter per unlock (the previous protocol): see M_WOKEN.
 *  - Spinners setting M_WOKEN too (Go does): it saves the wake-up of a
 *    waiter while a spinner is about to take the mutex, but a chain of
 *    spinners that each win could keep the queue's head from ever being
 *    woken, so hand-off would no longer bound its wait; measured, it
 *    bought nothing (bench-sched mutex, and plain threads hammering).
 *  - Waking a waiter on another, idle worker so that it competes at
 *    once: two workers bouncing the lock's cache line serve fewer
 *    lock/unlock pairs than one worker alone.
 *  - Recording the holder's worker, to spin only while it runs
 *    elsewhere: a TLS read and a wider word on every fast-path lock.
 *  - A CAS 0 -> LOCKED as the fast path (the previous one): with waiters
 *    queued the word is never 0, so a contended lock paid a failed CAS
 *    and a second one; the OR and the read-then-CAS unlock cost the same
 *    uncontended and one RMW each with flags set.
 *  - Counting unlocks alone for the lapse (no clock): the bound would
 *    scale with the length of the critical section.
 */
#include "sched/waitq.h"
#include "sched/chaos.h"

#include <errno.h>
#include <sched.h>

#define M_LOCKED     1u
#define M_WAITERS    2u
#define M_WOKEN      4u
#define M_STARVING   8u
#define M_TICK       (1u << 4)
#define M_TICKS      (0x3ffu << 4)
#define M_WOKE_SHIFT 14
#define M_WOKE_AT    (0x1ffffu << M_WOKE_SHIFT)
#define M_QLOCK      (1u << 31)

#define WOKE_UNIT_SHIFT 19 /* ns per M_WOKE_AT unit: 2^19, about 0.5 ms */
#define LAPSE_UNITS     3  /* more than HANDOFF_NS, at most 1.6 ms */
#define SPIN_ROUNDS     4
#define SPIN_PAUSES     30
#define HANDOFF_NS      1000000

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

int weft__mutex_held(weft_mutex *m)
{
    /* Relaxed: the caller holds it or not; only a misuse reads a stale
     * value, and then it reads "free", which is right for that thread. */
    return (atomic_load_explicit(&impl(m)->state, memory_order_relaxed) & M_LOCKED) != 0;
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
    if (!m)
        return -EINVAL;
    struct mutex_impl *x = impl(m);
    /* Relaxed: a hint; the CAS decides. */
    unsigned s = atomic_load_explicit(&x->state, memory_order_relaxed);
    /* Acquire: pairs with the release in weft_mutex_unlock. M_STARVING
     * implies M_LOCKED, so a mutex being handed over is never taken. */
    while (!(s & M_LOCKED))
        if (atomic_compare_exchange_weak_explicit(&x->state, &s, s | M_LOCKED,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return 0;
    return -EBUSY;
}

/* Take the queue lock, M_QLOCK, spinning while somebody else holds it;
 * returns the word as the RMW that took it left it. Any fiber or
 * thread. */
static unsigned qlock(struct mutex_impl *x)
{
    for (unsigned n = 0;; n++) {
        /* Acquire: pairs with the release that dropped M_QLOCK (qunlock,
         * or the CASes in unlock_locked), so the queue is as its last
         * holder left it. */
        unsigned s = atomic_fetch_or_explicit(&x->state, M_QLOCK, memory_order_acquire);
        if (!(s & M_QLOCK))
            return s | M_QLOCK;
        /* Relaxed: spin on a read until the bit looks free. */
        while (atomic_load_explicit(&x->state, memory_order_relaxed) & M_QLOCK) {
            if (++n < 64)
                weft__cpu_relax();
            else
                sched_yield(); /* the holder was preempted */
        }
    }
}

/* Drop the queue lock. With it held; the caller's lock call is still in
 * progress, so the mutex is alive. */
static void qunlock(struct mutex_impl *x)
{
    /* Release: publishes the queue's changes; pairs with qlock's acquire. */
    atomic_fetch_and_explicit(&x->state, ~M_QLOCK, memory_order_release);
}

/* A locker's park commit (or a thread's release before it sleeps). */
static void release_q(void *arg)
{
    qunlock(arg);
}

/* May a spin for a mutex held elsewhere pay off (see the header)? The
 * calling fiber or thread. */
static int can_spin(void)
{
    struct worker *w = weft__worker_self();
    if (!w)
        return 1;
    unsigned n = weft__rt.nworkers;
    if (n < 2)
        return 0;
    /* Relaxed: hints; a wrong guess costs one spin or one park. */
    unsigned idle = atomic_load_explicit(&weft__rt.nparked, memory_order_relaxed) +
                    atomic_load_explicit(&weft__rt.nsearching, memory_order_relaxed);
    if (idle + 1 >= n)
        return 0;
    /* Relaxed: runnext is owner-only and we are its owner; the inbox
     * length is a hint (see pick_local). */
    return !atomic_load_explicit(&w->runnext, memory_order_relaxed) &&
           !atomic_load_explicit(&w->inbox_len, memory_order_relaxed) &&
           deque_size(&w->dq) == 0;
}

/* Poll the word up to SPIN_PAUSES times while it stays held; returns the
 * last value read. Any thread. */
static unsigned spin_round(struct mutex_impl *x)
{
    unsigned s = 0;
    for (int i = 0; i < SPIN_PAUSES; i++) {
        weft__cpu_relax();
        /* Relaxed: a hint; the caller's CAS decides. */
        s = atomic_load_explicit(&x->state, memory_order_relaxed);
        if (!(s & M_LOCKED))
            break;
    }
    return s;
}

/* L2..L4 of the header; s is the word as last seen. Out of line, so that
 * the fast path needs no stack frame. Any fiber or thread. */
static __attribute__((noinline)) void lock_slow(struct mutex_impl *x, unsigned s)
{
    weft__chaos_move(CHAOS_BLOCK);
    int64_t since = 0;  /* first enqueue; 0: never queued */
    int starving = 0;   /* woken, and waited over HANDOFF_NS since `since` */
    unsigned woken = 0; /* M_WOKEN once an unlock woke us (U3) */
    int rounds = 0;
    for (;;) {
        if (!(s & M_LOCKED)) {
            /* Acquire: pairs with the release in weft_mutex_unlock. */
            if (atomic_compare_exchange_weak_explicit(&x->state, &s, (s | M_LOCKED) & ~woken,
                                                      memory_order_acquire,
                                                      memory_order_relaxed))
                return;
            continue;
        }
        if (!(s & M_STARVING) && rounds < SPIN_ROUNDS && can_spin()) {
            s = spin_round(x);
            rounds++;
            continue;
        }
        s = qlock(x);
        for (;;) {
            if (!(s & M_LOCKED)) {
                /* Acquire: pairs with the release in weft_mutex_unlock;
                 * release: drops the queue lock in the same step. */
                if (atomic_compare_exchange_weak_explicit(&x->state, &s,
                                                          (s | M_LOCKED) & ~(woken | M_QLOCK),
                                                          memory_order_acq_rel,
                                                          memory_order_relaxed))
                    return;
                continue;
            }
            unsigned n = (s | M_WAITERS) & ~woken;
            if (starving)
                n |= M_STARVING;
            /* Relaxed: the queue lock orders M_WAITERS against unlock's
             * slow paths, which take it before looking at the queue; an
             * unlock that has not seen the new word fails its CAS. */
            if (atomic_compare_exchange_weak_explicit(&x->state, &s, n,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        }
        weft__chaos(CHAOS_MUTEX_QUEUE);
        struct weft__parker p;
        struct weft__waiter w = { .index = 0, .result = RESULT_RETRY };
        weft__parker_init(&p, -1);
        int retry = since != 0; /* woken before: back to the head */
        w.since = retry ? since : weft__now();
        since = w.since;
        weft__waitq_push(&x->q, &w, &p, retry);
        weft__wait_reason(WAIT_MUTEX, (uintptr_t)x);
        weft__parker_block(&p, release_q, x);
        if (w.result == RESULT_HANDOFF)
            return; /* the unlocker left M_LOCKED set for us */
        woken = M_WOKEN;
        starving = weft__now() - since > HANDOFF_NS;
        rounds = 0;
        /* Relaxed: as at the top of this loop. */
        s = atomic_load_explicit(&x->state, memory_order_relaxed);
    }
}

void weft_mutex_lock(weft_mutex *m)
{
    struct mutex_impl *x = impl(m);
    /* Acquire: pairs with the release in weft_mutex_unlock. Setting a
     * bit that is set already changes nothing (M_STARVING comes with
     * M_LOCKED), so this one RMW (a `lock bts`) takes a free mutex
     * whatever other bits are set. */
    if (!(atomic_fetch_or_explicit(&x->state, M_LOCKED, memory_order_acquire) & M_LOCKED))
        return;
    /* Relaxed: a hint; lock_slow's CASes decide. */
    lock_slow(x, atomic_load_explicit(&x->state, memory_order_relaxed));
}

/* The current time as M_WOKE_AT holds it. Any thread. */
static unsigned woke_stamp(void)
{
    return ((unsigned)((uint64_t)weft__now() >> WOKE_UNIT_SHIFT) << M_WOKE_SHIFT) & M_WOKE_AT;
}

/* Has the waiter woken at s's M_WOKE_AT been on its way for LAPSE_UNITS
 * (modulo the field's range: a wrong answer costs one early or late
 * wake)? Any thread. */
static int lapsed(unsigned s)
{
    return ((woke_stamp() - (s & M_WOKE_AT)) & M_WOKE_AT) >> M_WOKE_SHIFT >= LAPSE_UNITS;
}

/* Does an unlock that sees s have to look at the queue (U2, U3, U4)? */
static int must_wake(unsigned s)
{
    if (s & M_STARVING)
        return 1;
    return (s & M_WAITERS) &&
           (!(s & M_WOKEN) || ((s & M_TICKS) == M_TICKS && lapsed(s)));
}

/* U2..U4 under the queue lock: claim the head (if any is still needed),
 * then release the queue lock - and, unless the mutex is handed over,
 * the mutex - in one CAS, the last access to *x (see Lifetime); then wake
 * the claimed waiter through its parker. By the holder. */
static void unlock_locked(struct mutex_impl *x)
{
    unsigned s = qlock(x);
    struct weft__waiter *w = NULL;
    /* Under the queue lock only the holder (us) and lockers that hold the
     * queue lock change M_STARVING and M_WAITERS, so what we decide here
     * stays right until our CAS; the CAS loop below only absorbs other
     * bits (M_LOCKED stays ours, lockers' OR of it changes nothing). */
    int handoff = (s & M_STARVING) != 0;
    int wake = must_wake(s); /* read once: lapsed() reads the clock */
    if (wake)
        w = weft__waitq_claim(&x->q);
    int64_t head_since = x->q.head ? x->q.head->since : 0;
    int empty = x->q.head == NULL;
    if (w)
        w->result = handoff ? RESULT_HANDOFF : RESULT_RETRY;
    weft__chaos(CHAOS_MUTEX_UNLOCK);
    unsigned stamp = w && !handoff ? woke_stamp() : 0;
    for (;;) {
        unsigned n = s & ~M_QLOCK;
        if (handoff) {
            if (empty)
                n &= ~(M_WAITERS | M_STARVING);
            else if (weft__now() - head_since <= HANDOFF_NS)
                n &= ~M_STARVING;
            if (!w)
                n &= ~(M_LOCKED | M_STARVING); /* nobody to hand it to */
        } else {
            n &= ~M_LOCKED;
            if (empty)
                n &= ~M_WAITERS;
            if (w)
                n = (n & ~(M_TICKS | M_WOKE_AT)) | M_WOKEN | stamp;
            else if (wake)
                n &= ~M_WOKEN; /* nobody on the way after all */
            else if (n & M_WAITERS)
                n = (n & ~M_TICKS) | ((s + M_TICK) & M_TICKS);
        }
        /* Release: publishes the critical section to the next locker's
         * acquire (or, on a hand-off, the queue's changes: the new holder
         * is ordered by the wake-up), and the queue to the next qlock. */
        if (atomic_compare_exchange_weak_explicit(&x->state, &s, n,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            break;
    }
    /* x may be gone from here on: only the waiter's own memory. */
    if (w)
        weft__parker_wake(w->p);
}

/* U1's tick path and U2..U4 of the header; s is the word as last seen.
 * Out of line, as lock_slow. By the holder. */
static __attribute__((noinline)) void unlock_slow(struct mutex_impl *x, unsigned s)
{
    for (;;) {
        if (must_wake(s)) {
            unlock_locked(x);
            return;
        }
        /* Ticks count only while somebody is queued; the 1024th wraps
         * to 0 here, after the lapse check above said no. */
        unsigned n = s & M_WAITERS
                         ? (s & ~(M_LOCKED | M_TICKS)) | ((s + M_TICK) & M_TICKS)
                         : s & ~M_LOCKED;
        /* Release: publishes the critical section to the next locker's
         * acquire. The last access to *x. */
        weft__chaos(CHAOS_MUTEX_UNLOCK);
        if (atomic_compare_exchange_weak_explicit(&x->state, &s, n,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
}

void weft_mutex_unlock(weft_mutex *m)
{
    struct mutex_impl *x = impl(m);
    /* Relaxed: a hint; the CAS decides. Reading first makes U1 one RMW
     * whatever the other bits are. */
    unsigned s = atomic_load_explicit(&x->state, memory_order_relaxed);
    unsigned n = s; /* s: take the slow path */
    if (!(s & (M_WAITERS | M_STARVING)))
        n = s & ~M_LOCKED; /* nobody queued (M_WOKEN may stay set) */
    else if ((s & (M_WOKEN | M_STARVING)) == M_WOKEN && (s & M_TICKS) != M_TICKS)
        n = (s & ~M_LOCKED) + M_TICK; /* a woken waiter is on its way */
    /* Release: publishes the critical section to the next locker's
     * acquire. */
    if (n != s && atomic_compare_exchange_strong_explicit(&x->state, &s, n,
                                                          memory_order_release,
                                                          memory_order_relaxed))
        return;
    unlock_slow(x, s);
}
