/*
 * The idle protocol: searching (stealing), parking, waking. The steps
 * S1..S3, P1..P7 and W1..W4 are defined, and the absence of lost
 * wake-ups argued, in the essay at the top of sched.c; the comments here
 * name the step each piece implements.
 */
#include "sched/sched.h"
#include "sched/chaos.h"
#include "sched/trace.h"
#include "sched/fence.h"

#include <sched.h>
#include <stdint.h>

#define STEAL_ROUNDS 4
#define SPIN_PAUSES  128   /* between rounds: ~1-3 us on current x86 */

#if WEFT__TSAN
_Atomic int weft__fence_word; /* see fence.h */
#endif

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("pause" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

/* One pass over the victims, nearest level first, random start within a
 * level (S2). Owner worker. */
static struct weft_fiber *steal_pass(struct worker *w)
{
    unsigned max = (unsigned)(deque_capacity(&w->dq) / 2);
    unsigned lo = 0;
    for (int level = 0; level < TOPO_LEVELS; level++) {
        unsigned hi = w->level_end[level];
        unsigned span = hi - lo;
        if (span) {
            unsigned start = (unsigned)(weft__rand(w) % span);
            for (unsigned i = 0; i < span; i++) {
                struct worker *v = &weft__rt.workers[w->victims[lo + (start + i) % span]];
                weft__count(&w->nsteal_try);
                weft__chaos(CHAOS_STEAL);
                struct weft_fiber *f = deque_steal_half(&v->dq, &w->dq, max);
                if (f) {
                    weft__count(&w->nsteal);
                    weft__trace(w, TR_STEAL, v->index);
                    return f;
                }
            }
        }
        lo = hi;
    }
    return NULL;
}

struct weft_fiber *weft__search(struct worker *w)
{
    unsigned n = weft__rt.nworkers;
    if (n == 1)
        return NULL;
    if (!w->searching) {
        /* S1. Relaxed: a heuristic limit; a stale count costs a little
         * spinning or an early park, never a lost wake-up (P5 re-checks). */
        unsigned s = atomic_load_explicit(&weft__rt.nsearching, memory_order_relaxed);
        unsigned p = atomic_load_explicit(&weft__rt.nparked, memory_order_relaxed);
        if (2 * s >= n - p)
            return NULL;
        w->searching = 1;
        /* Relaxed: a report word (sched.h). */
        atomic_store_explicit(&w->wstate, WS_SEARCHING, memory_order_relaxed);
        /* seq_cst: I4; ordered before our steals, so a waker that reads
         * nsearching > 0 (W1) knows we have not given up yet. */
        atomic_fetch_add_explicit(&weft__rt.nsearching, 1, memory_order_seq_cst);
    }
    for (int round = 0; round < STEAL_ROUNDS; round++) {
        struct weft_fiber *f = steal_pass(w);
        if (!f)
            f = weft__global_take(&w->dq, (unsigned)(deque_capacity(&w->dq) / 2));
        if (f)
            return f;
        for (int i = 0; i < SPIN_PAUSES; i++)
            cpu_relax();
    }
    return NULL;
}

void weft__stop_searching(struct worker *w)
{
    w->searching = 0;
    /* Relaxed: a report word (sched.h). */
    atomic_store_explicit(&w->wstate, WS_SCHED, memory_order_relaxed);
    /* S3. seq_cst: I4. */
    if (atomic_fetch_sub_explicit(&weft__rt.nsearching, 1, memory_order_seq_cst) == 1) {
        /* We were the last searcher. The fiber we stole may have come
         * with more (pushed on our deque with release stores, not seq_cst
         * ones), so fence before W1's loads. */
        weft__fence_seq_cst();
        weft__wakep();
    }
}

void weft__wakep(void)
{
    /* W1. seq_cst: the caller's seq_cst publication precedes these loads
     * in the total order; they pair with P3 (nparked) and S1/P1
     * (nsearching) of the workers. */
    if (atomic_load_explicit(&weft__rt.nsearching, memory_order_seq_cst) != 0 ||
        atomic_load_explicit(&weft__rt.nparked, memory_order_seq_cst) == 0)
        return;
    /* W2. seq_cst: I4. Failure relaxed: somebody else got there. */
    unsigned zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&weft__rt.nsearching, &zero, 1,
                                                 memory_order_seq_cst,
                                                 memory_order_relaxed))
        return;
    /* W3. */
    struct worker *v = NULL;
    pthread_mutex_lock(&weft__rt.idle_lock);
    if (weft__rt.nidle > 0) {
        v = weft__rt.idle[--weft__rt.nidle];
        v->idle_pos = -1;
        v->handed_search = 1;
        /* seq_cst: I4, with idle_lock held. */
        atomic_fetch_sub_explicit(&weft__rt.nparked, 1, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&weft__rt.idle_lock);
    if (!v) {
        atomic_fetch_sub_explicit(&weft__rt.nsearching, 1, memory_order_seq_cst);
        return;
    }
    /* W4. */
    poller_wake(v->poller);
}

void weft__foreign_quiesce(void)
{
    /* Acquire: pairs with weft__foreign_leave's release. A waker is in a
     * short stretch that never blocks (a lock, an eventfd write), and so
     * is a plain thread's join by now (every fiber has ended, so its wait
     * is over), so giving up the CPU until it is out is enough. */
    while (atomic_load_explicit(&weft__rt.foreign_wakers, memory_order_acquire))
        sched_yield();
}

/* P5: anything a waker could have published? Owner worker, after P4. */
static int work_visible(struct worker *w)
{
    /* Relaxed loads throughout: they follow the seq_cst fences of P3
     * (poller_prepare) and after P4, and every publication they look for
     * is a seq_cst operation or followed by a seq_cst fence, so by the
     * fence rules of C11 each load sees the publication if it preceded
     * our fence. */
    if (atomic_load_explicit(&weft__rt.gq_len, memory_order_relaxed) ||
        atomic_load_explicit(&w->inbox_len, memory_order_relaxed))
        return 1;
    for (unsigned i = 0; i < weft__rt.nworkers; i++)
        if (deque_size(&weft__rt.workers[i].dq) > 0)
            return 1;
    return 0;
}

/* P7. Owner worker. */
static void leave_idle(struct worker *w)
{
    pthread_mutex_lock(&weft__rt.idle_lock);
    if (w->idle_pos >= 0) {
        struct worker *last = weft__rt.idle[--weft__rt.nidle];
        weft__rt.idle[w->idle_pos] = last;
        last->idle_pos = w->idle_pos;
        w->idle_pos = -1;
        /* seq_cst: I4, with idle_lock held. */
        atomic_fetch_sub_explicit(&weft__rt.nparked, 1, memory_order_seq_cst);
    } else if (w->handed_search) {
        w->handed_search = 0;
        w->searching = 1; /* the count was added for us at W2 */
    }
    pthread_mutex_unlock(&weft__rt.idle_lock);
}

int weft__idle(struct worker *w)
{
    /* P1. seq_cst: I4; before the re-check at P5. */
    if (w->searching) {
        w->searching = 0;
        atomic_fetch_sub_explicit(&weft__rt.nsearching, 1, memory_order_seq_cst);
    }
    /* P2. */
    if (weft__check_termination())
        return 1;
    /* P3, before P4: from the moment a waker can pop us (W3), our
     * poller must be PARKING, so that its W4 writes the eventfd.
     * (Announced after joining the list, a waker could pop us in between,
     * find RUNNING and write nothing; if the work it published was taken
     * elsewhere before our P5, we slept at P6 holding the nsearching
     * count W2 added for us, and every later W1 stopped at it: work
     * readied by plain threads then waited for ever.) Our store of
     * PARKING is sequenced before the unlock at P4, and the waker's load
     * of the state after its lock, so it reads PARKING, NOTIFIED (another
     * waker wrote), or RUNNING from our own cancel or P6 return, after
     * which P7 finds handed_search. */
    poller_prepare(w->poller);
    weft__chaos(CHAOS_IDLE);
    /* P4. */
    pthread_mutex_lock(&weft__rt.idle_lock);
    w->idle_pos = (int)weft__rt.nidle;
    weft__rt.idle[weft__rt.nidle++] = w;
    /* seq_cst: pairs with W1's load of nparked. */
    atomic_fetch_add_explicit(&weft__rt.nparked, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&weft__rt.idle_lock);
    /* seq_cst fence: orders the add above before P5's relaxed loads.
     * Either W1's load of nparked comes after the add in the seq_cst
     * order (and the waker goes on to W2), or the waker's publication
     * precedes this fence and P5 sees it. poller_prepare's fence, now
     * before the add, cannot do this. */
    weft__fence_seq_cst();
    /* P5. seq_cst load of shutdown: pairs with the seq_cst store in
     * weft__check_termination. */
    if (atomic_load_explicit(&weft__rt.shutdown, memory_order_seq_cst) || work_visible(w)) {
        poller_cancel(w->poller);
        leave_idle(w);
        if (!w->searching && weft__rt.nworkers > 1) {
            w->searching = 1;
            atomic_fetch_add_explicit(&weft__rt.nsearching, 1, memory_order_seq_cst);
        }
        return atomic_load_explicit(&weft__rt.shutdown, memory_order_seq_cst);
    }
    /* P6. */
    int64_t timeout = -1;
    int64_t next = timer_next(&w->timers);
    if (next != INT64_MAX) {
        int64_t now = weft__now();
        timeout = next > now ? next - now : 0;
    }
    /* Relaxed: report words and the coarse clock (sched.h). */
    atomic_store_explicit(&w->wstate, WS_PARKED, memory_order_relaxed);
    weft__trace(w, TR_PARK, 0);
    poller_wait(w->poller, timeout);
    weft__trace(w, TR_WAKE, 0);
    atomic_store_explicit(&w->wstate, WS_SCHED, memory_order_relaxed);
    atomic_store_explicit(&w->clock_ms, weft__now_ms(), memory_order_relaxed);
    weft__count(&w->nwake);
    /* P7. */
    leave_idle(w);
    return atomic_load_explicit(&weft__rt.shutdown, memory_order_seq_cst);
}
