/*
 * The weft scheduler.
 *
 * Fibers run on W worker threads, by default one per physical core this
 * process may use (topo.c), each pinned to its core. Every worker owns:
 *
 *   runnext   one slot for the fiber it spawned or woke last: it runs next,
 *             while its creator's data is hot in this core's cache. Only
 *             the owner touches it (no atomics, never stolen);
 *   deque     a bounded Chase-Lev deque (deque.c): the owner pushes and
 *             pops at the bottom (LIFO, depth-first), thieves take the
 *             oldest half from the top;
 *   timers    a min-heap of deadlines (timer.c) for sleeps and, later, I/O;
 *   poller    its epoll instance (io/poller_epoll.c), the one place where
 *             the worker blocks;
 *   inbox     a locked list other threads push to when a fiber must run on
 *             this particular worker (WEFT_DEBUG_MIGRATE; later, wake-ups
 *             aimed at a worker).
 *
 * Shared by all: the global queue (globalq.c: a mutex, array chunks for
 * deque overflow, an intrusive list for fibers made or woken by plain
 * threads); the list of parked workers; two counters, nsearching (workers
 * looking for work to steal) and nparked (workers on the idle list).
 *
 * Switching. A fiber that yields, parks or exits picks its successor from
 * local sources itself and switches straight to it: one context switch per
 * fiber change, which the yield target (<= 15 ns) cannot afford to double.
 * Only when nothing local is runnable does it switch to the worker's
 * scheduler context (the worker thread's own stack), which steals, parks
 * and runs the idle protocol. The price of switching directly is that the
 * leaving fiber is still on its stack when it decides where it goes, so it
 * must not be visible to any other thread yet: it records a handoff in the
 * worker (yield: requeue me; park: run this commit function; exit: finish
 * me) and whichever context runs next performs it first thing after the
 * switch (after_switch). That is also why a parked fiber's wait list is
 * published by a commit callback rather than before the switch: a waker on
 * another worker could otherwise resume a fiber whose registers are not
 * saved yet.
 *
 * Picking (pick_local), in order: due timers are fired; the inbox is
 * drained (its first fiber runs at once); every 61st pick polls the
 * worker's epoll without waiting (the netpoller's I/O events ready their
 * fibers, so a busy worker cannot starve them) and takes one fiber
 * from the global queue first, so it cannot starve behind a worker that
 * keeps making local work (Go's fairness tick); runnext, unless it has
 * been picked RUNNEXT_BUDGET times in a row (two fibers waking each other
 * would otherwise keep the deque waiting forever; the budget plays the
 * role of Go's inherited time slice); the I/O queue's head; the deque's
 * bottom; runnext after all; a batch from the global queue. A yield instead takes the deque's
 * oldest fiber and goes to the bottom itself, so yielding fibers
 * round-robin; on the fairness tick it first moves runnext and the I/O
 * queue to the deque's bottom (yield_share), so that fibers woken there
 * get their turn in that round however long the others keep yielding.
 * A fiber that exits while another fiber waits to join it
 * switches straight to that joiner (charged to the runnext budget): the
 * order in which fork-join programs complete stays depth-first. Stealing
 * happens only in the scheduler context.
 *
 * The I/O queue. Fibers the netpoller readies (their fd became ready) go
 * to a per-worker FIFO list, not to runnext: a poll hands over a batch of
 * ready connections at once, and readying them through runnext would push
 * each one down the LIFO deque, so that under steady load the earliest
 * ready connection ran last (at 1,000 echo connections, a p99 of 8x the
 * hand-written epoll server's). FIFO serves them in the order the kernel
 * saw them ready, as Go's netpoller does. The list is owner-only, so
 * after each batch (weft__ready_io_end) a worker with parked peers hands
 * the newer half to the global queue and wakes one of them.
 *
 * Inline join. weft_join on a child that has not started and is the next
 * thing this worker would run anyway (its runnext, or its deque's bottom)
 * takes the child off the queue and runs it right there, as a call on the
 * joiner's stack (weft__join_inline): no stack to get and return, no
 * switch, no park. Fork-join code (spawn children, then join them newest
 * first) thus costs about what a function call plus the spawn does, as
 * TBB's tasks do. The child is still a fiber of its own: weft_self() is
 * the child, reports name it, and if it parks, the joiner's stack parks
 * under it and may resume on another worker. It runs in place only if the
 * room left on the joiner's stack is at least the child's own stack size
 * (stack.c maps every pooled stack with a reserve of its size below it,
 * address space only, so the room exists), so it never gets less stack
 * than a stack of its own would give it.
 *
 * Stack succession. When a fiber's function returns and the next fiber
 * this worker picks has not started and wants a stack of the same size,
 * the next one takes the ended fiber's stack and context over and its
 * function is called from the same frame (succeed, in fiber_entry's
 * loop): no stack is returned or fetched and nothing is switched. The
 * ended fiber is finished (join handshake, counts) right there, its stack
 * kept. A burst of spawned fibers that each run to their end thus runs
 * on one stack, at the cost of a call each, as a pool of tasks would.
 *
 * Invariants.
 *  I1 A runnable fiber is in exactly one place: a runnext slot, a deque,
 *     the global queue, an inbox, an I/O queue, a worker's stack wait
 *     list (not started, no stack to be had), or a worker's `current`.
 *     Parked fibers are in none of these; whoever their commit
 *     published them to owns them until weft__ready.
 *  I2 A fiber becomes reachable by another thread only after its context
 *     is saved: every handoff runs after the switch away from it.
 *  I3 A fiber holds a stack only from its first pick to its end; the
 *     stack is returned to the pool, or handed to its successor, before
 *     the join handshake completes.
 *  I4 nsearching counts workers with `searching` set plus the one a waker
 *     has claimed for a worker it is waking (handed_search); nparked
 *     counts the workers on the idle list.
 *  I5 No lost wake-up: if work is published where another worker can
 *     take it, some worker that has not committed to sleep will see it
 *     (argued after the protocol). Work in a runnext slot needs nobody:
 *     its owner is running and will pick it.
 *  I6 weft_run ends only when every fiber ever spawned has exited: the
 *     per-worker spawned and exited counters sum equal (runtime.c).
 *
 * The idle protocol. Spinning (searching):
 *  S1 A worker with nothing local becomes searching only if fewer than
 *     half of the non-parked workers already are (2*nsearching < W -
 *     nparked); otherwise it goes straight to P1. A worker woken by W4, or
 *     one whose re-check found work (P5), is searching already.
 *  S2 Up to STEAL_ROUNDS rounds over the other workers in topology order
 *     (sharing L2, then L3, then NUMA node, then the rest; random start
 *     within each level), stealing half of each deque, then a batch from
 *     the global queue; a short pause between rounds.
 *  S3 Found work: searching ends (nsearching--). If this worker was the
 *     last searcher it calls wakep (W1): there may be more work and nobody
 *     is looking. Parallelism thus ramps up one worker at a time.
 * Parking:
 *  P1 If searching, nsearching-- (seq_cst).
 *  P2 Termination check (runtime.c), after a seq_cst fence (two workers
 *     counting their last exits together must not both miss the other):
 *     if every fiber has exited, shut down and wake every parked worker.
 *  P3 poller_prepare: state PARKING, then a seq_cst fence. Before P4:
 *     a waker may pop us from the moment we are on the list (W3).
 *  P4 Under idle_lock: push self on the idle list, nparked++ (seq_cst);
 *     then a seq_cst fence.
 *  P5 Re-check everything a waker could have published: the global queue,
 *     the own inbox, every deque, the shutdown flag. If anything is there:
 *     poller_cancel, leave the idle list (P7), become searching, go to S2.
 *  P6 poller_wait until woken, an I/O event, or the next own timer.
 *  P7 Under idle_lock: if still on the idle list, leave it (nparked--);
 *     otherwise a waker popped us (W3) and handed us its nsearching
 *     count: we are searching.
 * Waking, after publishing stealable work with a seq_cst operation (the
 * add to the global queue length or an inbox length) or a plain store
 * followed by a seq_cst fence (a deque push: the fiber a spawn or wake-up
 * displaces from runnext, a batch taken from the global queue, fibers
 * stolen by the last searcher):
 *  W1 If nsearching > 0 or nparked == 0, stop: a searcher will see the
 *     work, or will re-check at P5 before it sleeps; a worker about to
 *     park re-checks at P5 too.
 *  W2 CAS nsearching 0 -> 1. If that fails somebody else is searching or
 *     waking: stop. This is what prevents a thundering herd: one wake-up
 *     per burst of work, and more only as searchers find work (S3).
 *  W3 Under idle_lock pop a parked worker (nparked--) and mark it
 *     handed_search. If there is none, nsearching-- and stop: the worker
 *     that left the list is awake and searching.
 *  W4 poller_wake it: one eventfd write, only if it is in P3..P6.
 * Why no wake-up is lost (I5): a worker can only sleep at P6 after
 * registering at P4 and fencing after it. A waker publishes, then reads
 * nsearching and nparked after a seq_cst operation. Either the waker's
 * reads come after the sleeper's P4 in the seq_cst order, so it sees
 * nparked > 0 and goes on to W2; or they come before, and the sleeper's
 * P5 re-check comes after the publication and sees the work. If W1 or W2
 * stop because nsearching > 0, the searcher counted there has not yet
 * done its P1 decrement (the read saw it), so its P5 re-check comes after
 * the publication and sees the work. That includes a worker popped at
 * W3, which holds the count W2 added and so must not sleep through its
 * wake-up even when the work it was woken for is taken elsewhere before
 * its P5: it announced PARKING (P3) before joining the list (P4), and the
 * waker loads its poller state after popping it under idle_lock, so W4
 * writes the eventfd (or the worker is past P5/P6 already, and P7 makes
 * it a searcher). The other order, joining and then announcing, let a
 * waker pop a worker in between and write nothing; that worker slept
 * holding nsearching = 1, every later W1 stopped there, and work readied
 * by plain threads waited for ever. poller_prepare/poller_wake use the
 * same argument between one waker and one sleeper's poller state (the
 * debug mode's inbox pushes, the shutdown broadcast).
 *
 * Rejected approaches.
 *  - A switch through the scheduler context on every fiber change (Go's
 *    g0): simplest to reason about, but two switches per yield.
 *  - A stealable runnext (Go's): every spawn and wake-up would pay a
 *    locked exchange, and a wake-up fence for work that its own worker is
 *    about to run anyway. Here the slot holds one fiber, which runs as
 *    soon as the current fiber blocks, yields or ends; the fiber it
 *    displaces goes to the deque and is stealable from then on.
 *  - Handing a newly runnable fiber directly to a parked worker (also
 *    rejected by Go): it thrashes worker state and destroys the locality
 *    runnext exists for; the woken worker steals instead.
 *  - Waking a worker on every ready, or all of them: a thundering herd
 *    of workers that find nothing and park again (W2 bounds it to one).
 *  - An owner-FIFO run queue (Go's, where the owner CASes the head too),
 *    or a fairness tick that runs the oldest local fiber: fair by
 *    construction, but fork-join programs then run breadth-first and keep
 *    a stack alive per started fiber (fib(30) peaked at 9005 live stacks
 *    that way, against 30 depth-first). The price of LIFO: a fiber in the
 *    deque can wait as long as its worker keeps producing newer work;
 *    idle workers steal oldest-first, yields rotate, and the global queue
 *    is served every 61 picks.
 *  - A global live-fiber counter for weft_run's termination: two
 *    contended atomic additions per fiber on one cache line; per-worker
 *    counters written by their owner cost plain stores and are summed
 *    only by a worker about to park.
 *  - Claiming a whole half with one CAS in steal-half: not correct with
 *    this deque (see deque.c).
 *  - Parking on a futex and leaving I/O to a separate poller thread: two
 *    wake-up paths, and a thread handoff for every I/O event. With epoll
 *    as the park point a parked worker is also the one that polls.
 *  - Work-first spawn (run the child at once, the parent goes to the
 *    deque): it bounds live stacks as well, but weft_spawn would then
 *    switch (and migrate) its caller, and the contract says calls that
 *    return a pointer never park; runnext plus the exit-to-joiner handoff
 *    give the same depth-first order without that.
 */
#include "sched/sched.h"
#include "sched/chaos.h"
#include "sched/fence.h"
#include "sched/trace.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>

#include "common/alloc.h"

#define RUNNEXT_BUDGET 16
#define FAIRNESS_TICK  61
#define TIMER_BATCH    32
#define NOSTACK_RETRY_MIN_NS  1000000   /* first retry of the stack wait list */
#define NOSTACK_RETRY_MAX_NS 16000000   /* back-off cap while nothing starts  */

__thread struct worker *weft__tls_worker
    __attribute__((tls_model("initial-exec"), visibility("hidden")));

void weft__worker_bind(struct worker *w)
{
    weft__tls_worker = w;
}

/* ---- local queues ------------------------------------------------------------ */

/* f just became stealable (a plain release store into the deque): wake an
 * idle worker if the protocol says so. The fence makes the release store
 * count as a seq_cst publication for W1. Owner worker. */
static void published_to_deque(void)
{
    if (weft__rt.nworkers > 1) {
        weft__fence_seq_cst();
        weft__wakep();
    }
}

/* Owner worker. */
static void push_local(struct worker *w, struct weft_fiber *f)
{
    if (__builtin_expect(deque_push(&w->dq, f) != 0, 0)) {
        /* Full: the older half and f go to the global queue, where every
         * worker can find them. */
        weft__global_spill(&w->dq, f);
        weft__wakep(); /* the spill published with a seq_cst add */
    }
}

/* The owner's view of its runnext slot. Relaxed: owner-only (the
 * takeover handler runs on this thread, only outside rt_enter..leave). */
static inline struct weft_fiber *runnext_get(struct worker *w)
{
    return atomic_load_explicit(&w->runnext, memory_order_relaxed);
}

static inline void runnext_set(struct worker *w, struct weft_fiber *f)
{
    atomic_store_explicit(&w->runnext, f, memory_order_relaxed);
}

/* Enter code that touches runnext or the deque's owner side; returns the
 * previous state for rt_leave. The signal fences keep the compiler from
 * moving those accesses outside the bracket; the takeover handler runs
 * on this same thread, so no hardware ordering is needed. Owner. */
static inline int rt_enter(struct worker *w)
{
    int outer = atomic_load_explicit(&w->in_rt, memory_order_relaxed);
    atomic_store_explicit(&w->in_rt, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    return outer;
}

static inline void rt_leave(struct worker *w, int outer)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&w->in_rt, outer, memory_order_relaxed);
}

/* Make f the next fiber to run here; the fiber it displaces becomes
 * stealable. Owner worker. */
static void put_runnext(struct worker *w, struct weft_fiber *f)
{
    weft__fstate_set(f, FS_RUNNABLE, weft__clock_ms(w));
    int outer = rt_enter(w);
    struct weft_fiber *old = runnext_get(w);
    runnext_set(w, f);
    if (old)
        push_local(w, old);
    rt_leave(w, outer);
    if (old)
        published_to_deque();
}

/* Take f, the head of w's I/O queue, off it. Owner worker, inside
 * rt_enter (the takeover handler moves the queue too). */
static inline void ioq_unlink_head(struct worker *w, struct weft_fiber *f)
{
    w->ioq_head = f->link;
    if (!w->ioq_head)
        w->ioq_tail = NULL;
    /* Relaxed: a hint for the monitor; the list itself is owner-only. */
    atomic_store_explicit(&w->ioq_n,
                          atomic_load_explicit(&w->ioq_n, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

/*
 * f, parked, is about to run, and next (or NULL) after it. A fiber woken
 * by I/O has been parked a while and its memory is cold: the frames its
 * return will walk (the saved registers at ctx.sp, then the callers'
 * frames above: the park, the wait, the wrapper, a few hundred bytes)
 * and, for the pick after this one, next's control block. Loading them
 * together overlaps misses that the switch would otherwise take one by
 * one. Owner worker.
 */
static inline void prefetch_resume(struct weft_fiber *f, struct weft_fiber *next)
{
    const char *sp = f->ctx.sp;
    for (int i = 0; i < 6; i++)
        __builtin_prefetch(sp + i * WEFT__CACHELINE, 1);
    if (next) {
        __builtin_prefetch(next, 1);
        __builtin_prefetch((const char *)next + WEFT__CACHELINE, 1);
    }
}

/* Owner worker. */
static inline struct weft_fiber *take_oldest(struct worker *w)
{
    return deque_take_oldest_one(&w->dq);
}

static void push_inbox(struct worker *v, struct weft_fiber *f);

/* A fiber bound to another worker's queue (debug migration): into that
 * worker's inbox, waking it if it sleeps. Owner worker w. */
static void push_remote(struct worker *w, struct weft_fiber *f)
{
    unsigned n = weft__rt.nworkers; /* > 1: see weft__rt.migrate */
    unsigned t = (w->index + 1 + (unsigned)(weft__rand(w) % (n - 1))) % n;
    push_inbox(&weft__rt.workers[t], f);
}

/* f into v's inbox, waking v if it sleeps. Any thread. */
static void push_inbox(struct worker *v, struct weft_fiber *f)
{
    weft__chaos(CHAOS_READY);
    weft__fstate_set(f, FS_RUNNABLE, weft__clock_ms(weft__worker_self()));
    f->link = NULL;
    pthread_mutex_lock(&v->inbox_lock);
    if (v->inbox_tail)
        v->inbox_tail->link = f;
    else
        v->inbox_head = f;
    v->inbox_tail = f;
    /* seq_cst: the publication v's re-check (P5) and poller_wake's load
     * of v's poller state are ordered against. */
    atomic_fetch_add_explicit(&v->inbox_len, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&v->inbox_lock);
    poller_wake(v->poller);
}

/* Empty the inbox: return its first fiber, to run here at once (it was
 * sent here to move), and queue the rest. Owner worker. */
static struct weft_fiber *drain_inbox(struct worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    struct weft_fiber *first = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    /* Relaxed: with inbox_lock held; emptying publishes nothing. */
    atomic_store_explicit(&w->inbox_len, 0, memory_order_relaxed);
    pthread_mutex_unlock(&w->inbox_lock);
    if (!first || !first->link)
        return first;
    for (struct weft_fiber *f = first->link, *next; f; f = next) {
        next = f->link;
        push_local(w, f);
    }
    published_to_deque();
    return first;
}

/* Owner worker. */
static void fire_timers(struct worker *w)
{
    int64_t now = weft__now();
    struct weft__timer *due[TIMER_BATCH];
    int n = 0;
    while (n < TIMER_BATCH && (due[n] = timer_pop_due(&w->timers, now)) != NULL)
        n++;
    /* Latest deadline first: each ready pushes the previous runnext
     * occupant down the LIFO deque, so the earliest one runs first. */
    while (n > 0) {
        struct weft__timer *t = due[--n];
        t->fire(t);
    }
}

/*
 * The yielders' share of the fairness tick. A yield takes the deque's
 * oldest fiber and requeues itself at the bottom, so the deque is the
 * yielders' round; but while it holds a fiber, a yield never looks at
 * runnext or the I/O queue, which every other pick serves before the
 * deque. Fibers woken there (a sleep's timer, a ready fd, a wake-up by
 * another fiber) would wait for as long as two fibers keep yielding.
 * So on the tick a yield moves them to the bottom, the back of the
 * round, I/O queue first (oldest first, as it would have run them): a
 * woken fiber then runs within FAIRNESS_TICK picks plus one round of the
 * deque, whatever the others do. Only on the tick, so the yield path
 * itself stays as it was. Owner worker, inside rt_enter.
 */
static __attribute__((noinline)) void yield_share(struct worker *w)
{
    struct weft_fiber *f = w->ioq_head, *rn = runnext_get(w);
    if (!f && !rn)
        return;
    if (f) {
        w->ioq_head = w->ioq_tail = NULL;
        /* Relaxed: see ioq_unlink_head. */
        atomic_store_explicit(&w->ioq_n, 0, memory_order_relaxed);
        for (struct weft_fiber *next; f; f = next) {
            next = f->link;
            push_local(w, f);
        }
    }
    if (rn) {
        runnext_set(w, NULL);
        push_local(w, rn);
    }
    published_to_deque();
}

/* The first steps of a pick, which most picks skip: due timers, the
 * inbox, the fairness tick (with yield_share for a yield). A fiber to
 * run at once, or NULL. Out of line, so that the common pick stays a few
 * loads. Owner worker. */
static __attribute__((noinline)) struct weft_fiber *pick_rare(struct worker *w, int yielding)
{
    struct weft_fiber *f;
    if (w->timers.n)
        fire_timers(w);
    /* Relaxed: a hint; the inbox is re-read under its lock, and the park
     * re-check (P5) reads it again after a fence. */
    if (atomic_load_explicit(&w->inbox_len, memory_order_relaxed) && (f = drain_inbox(w)))
        return f;
    if (w->tick >= FAIRNESS_TICK) {
        w->tick = 0;
        /* Relaxed: see struct worker (the registry's coarse clock). */
        atomic_store_explicit(&w->clock_ms, weft__now_ms(), memory_order_relaxed);
        /* A busy worker's epoll is otherwise read only when it parks:
         * deliver ready I/O here (a no-op without registered fds). */
        poller_poll(w->poller);
        if (yielding)
            yield_share(w);
        if ((f = weft__global_take(&w->dq, 1)))
            return f;
    }
    return NULL;
}

/* The next fiber to run from this worker's own sources; NULL if none.
 * Owner worker. */
static inline __attribute__((always_inline))
struct weft_fiber *pick_local(struct worker *w, int yielding)
{
    struct weft_fiber *f;
    unsigned tick = ++w->tick;
    /* Relaxed: as in pick_rare. */
    if (__builtin_expect(w->timers.n != 0 ||
                         atomic_load_explicit(&w->inbox_len, memory_order_relaxed) != 0 ||
                         tick >= FAIRNESS_TICK, 0) &&
        (f = pick_rare(w, yielding)) != NULL)
        return f;
    if (yielding && (f = take_oldest(w)))
        return f;
    if ((f = runnext_get(w)) && w->runnext_streak < RUNNEXT_BUDGET) {
        runnext_set(w, NULL);
        w->runnext_streak++;
        return f;
    }
    w->runnext_streak = 0;
    if ((f = w->ioq_head)) {
        ioq_unlink_head(w, f);
        prefetch_resume(f, w->ioq_head);
        return f;
    }
    if ((f = deque_pop(&w->dq))) {
        /* The next one's control block is probably cold (a burst of
         * spawns outgrows the cache): start loading it now. */
        void *next = deque_peek(&w->dq);
        if (next)
            __builtin_prefetch(next, 1);
        return f;
    }
    if ((f = runnext_get(w))) {
        runnext_set(w, NULL);
        w->runnext_streak = 1;
        return f;
    }
    /* The deque is empty here, so it has room for the batch. */
    f = weft__global_take(&w->dq, (unsigned)(deque_capacity(&w->dq) / 2));
    if (f && deque_size(&w->dq) > 0)
        published_to_deque(); /* the rest of the batch is stealable */
    return f;
}

/* ---- starting, switching, handoffs ---------------------------------------- */

static void fiber_entry(void *val);

/* Give f its stack on its first pick. 0, or -1 if no stack could be had.
 * Owner worker. */
static int start_fiber(struct weft_fiber *f)
{
    weft__stack *s = weft__stack_get((size_t)f->stack_kib * 1024);
    if (!s)
        return -1;
    weft__ctx_make(&f->ctx, s, fiber_entry);
    f->ctx.owner_kind = WEFT__OWNER_FIBER;
    f->ctx.owner = &f->who;
    /* Relaxed: a flag read on its own by weft_spawn; checked first so
     * the common case does not write the shared line. */
    if (atomic_load_explicit(&weft__rt.stack_starved, memory_order_relaxed))
        atomic_store_explicit(&weft__rt.stack_starved, 0, memory_order_relaxed);
    return 0;
}

/*
 * Out of stacks. A fiber that gets no stack at its first pick (no mapping
 * to be had: out of address space, or of mappings and allocator memory)
 * waits on its worker's stack wait list, off every run queue, and
 * weft_spawn fails with EAGAIN meanwhile (stack_starved): the runtime
 * goes on running what it has and says what it cannot start. While the
 * list holds fibers, the fibers picked after them join it without trying
 * (the oldest get the first stacks, and a burst of fibers that cannot
 * start costs no system call). One timer per worker retries the list:
 * the oldest fiber first, and as many after it as get a stack, stopping
 * at the first that does not; the retry backs off from 1 ms to 16 ms
 * while nothing starts. A fiber that got its stack is made runnable as a
 * wake-up would make it. No memory is needed: the list is intrusive and
 * the timer has the heap's reserved slot (timer_add_reserved), armed at
 * most once. The old way, a timer allocated per fiber and retried every
 * millisecond each (through the global queue when even that allocation
 * failed), buried the running fibers under failing mmaps: their switches
 * froze for over 25 s.
 */
static void nostack_retry(struct weft__timer *t);

/* f got no stack: to the tail of w's stack wait list. Owner worker. */
static void nostack_wait(struct worker *w, struct weft_fiber *f)
{
    /* Relaxed: see start_fiber. */
    if (!atomic_load_explicit(&weft__rt.stack_starved, memory_order_relaxed))
        atomic_store_explicit(&weft__rt.stack_starved, 1, memory_order_relaxed);
    f->link = NULL;
    if (w->nostack_tail)
        w->nostack_tail->link = f;
    else
        w->nostack_head = f;
    w->nostack_tail = f;
    if (!timer_armed(&w->nostack_timer)) {
        if (!w->nostack_backoff)
            w->nostack_backoff = NOSTACK_RETRY_MIN_NS;
        w->nostack_timer.fire = nostack_retry;
        timer_add_reserved(&w->timers, &w->nostack_timer, weft__now() + w->nostack_backoff);
    }
}

/* The stack wait list's timer. Owner worker (fire_timers). */
static void nostack_retry(struct weft__timer *t)
{
    struct worker *w = weft__container_of(t, struct worker, nostack_timer);
    int started = 0;
    struct weft_fiber *f;
    while ((f = w->nostack_head) != NULL && start_fiber(f) == 0) {
        w->nostack_head = f->link;
        if (!w->nostack_head)
            w->nostack_tail = NULL;
        started = 1;
        weft__ready_local(w, f);
    }
    if (!w->nostack_head) {
        w->nostack_backoff = 0;
        return;
    }
    if (started)
        w->nostack_backoff = NOSTACK_RETRY_MIN_NS;
    else if (w->nostack_backoff < NOSTACK_RETRY_MAX_NS)
        w->nostack_backoff *= 2;
    timer_add_reserved(&w->timers, &w->nostack_timer, weft__now() + w->nostack_backoff);
}

/* f, just picked, has no stack yet: give it one, or make it wait for one
 * and pick again. Out of line: the picks that switch to a started fiber
 * (every wake-up) stay short. Owner worker. */
static __attribute__((noinline)) struct weft_fiber *pick_start(struct worker *w,
                                                              struct weft_fiber *f,
                                                              int yielding)
{
    for (;;) {
        if (!w->nostack_head && start_fiber(f) == 0)
            return f;
        nostack_wait(w, f);
        f = pick_local(w, yielding);
        if (!f || f->ctx.stack)
            return f;
    }
}

/* pick_local, with the picked fiber's stack in place. Owner worker. */
static inline __attribute__((always_inline))
struct weft_fiber *pick_runnable(struct worker *w, int yielding)
{
    struct weft_fiber *f = pick_local(w, yielding);
    if (__builtin_expect(!f || f->ctx.stack != NULL, 1))
        return f;
    return pick_start(w, f, yielding);
}

/* Yield handoff: back on a run queue. A yield wakes nobody: this worker
 * is busy and will run the fiber itself. Owner worker. */
static void requeue(struct worker *w, struct weft_fiber *f)
{
    weft__fstate_set(f, FS_RUNNABLE, weft__clock_ms(w));
    if (weft__rt.migrate)
        push_remote(w, f);
    else
        push_local(w, f);
}

/* Perform the handoff the previous context left: the first thing every
 * context does when it gets the CPU back. Whatever thread we are on now. */
static void after_switch(void)
{
    struct worker *w = weft__worker_self();
    weft__count(&w->nswitch);
    int h = w->handoff;
    if (h != HANDOFF_NONE) {
        struct weft_fiber *prev = w->handoff_fiber;
        w->handoff = HANDOFF_NONE;
        switch (h) {
        case HANDOFF_YIELD:
            requeue(w, prev);
            break;
        case HANDOFF_PARK:
            weft__chaos(CHAOS_PARK_COMMIT);
            if (!w->park_commit(prev, w->park_arg))
                put_runnext(w, prev);
            weft__chaos(CHAOS_PARK_COMMITTED);
            break;
        case HANDOFF_EXIT:
            weft__fiber_finish(w, prev, 0);
            break;
        case HANDOFF_EXIT_TO_JOINER:
            weft__fiber_finish(w, prev, 1);
            break;
        }
    }
    /* The switch that began with rt_enter (weft_yield, weft__park,
     * exit_fiber, the worker loop) is over. */
    rt_leave(w, 0);
}

/* f is about to run on w: the registry's word. Owner worker. */
static inline void mark_running(struct worker *w, struct weft_fiber *f)
{
    /* Relaxed: registry words, see sched.h. */
    weft__fstate_set(f, FS_RUNNING, weft__clock_ms(w));
    if (WEFT__REGISTRY)
        atomic_store_explicit(&f->worker, (uint16_t)w->index, memory_order_relaxed);
    atomic_store_explicit(&w->running, f, memory_order_relaxed);
    weft__trace(w, TR_RUN, (uintptr_t)f);
}

/* w goes back to its scheduler context. Owner worker. */
static inline void mark_sched(struct worker *w)
{
    /* Relaxed: see mark_running. */
    atomic_store_explicit(&w->running, NULL, memory_order_relaxed);
    weft__trace(w, TR_RUN, 0);
}

/* Switch from the running fiber self to next (NULL: the scheduler
 * context), leaving `handoff` for the next context to perform. Returns
 * when self runs again, possibly on another worker. Owner worker. */
static void switch_away(struct worker *w, struct weft_fiber *self,
                        struct weft_fiber *next, int handoff)
{
    w->handoff = handoff;
    w->handoff_fiber = self;
    w->current = next;
    if (next)
        mark_running(w, next);
    else
        mark_sched(w);
    weft__ctx_switch(&self->ctx, next ? &next->ctx : &w->sched_ctx, next);
    after_switch();
}

/* The context running on this thread, written after a call that may have
 * moved us to another thread: not inlined, so the TLS address is taken
 * afresh (as weft__worker_self's). */
static __attribute__((noinline)) void set_ctx_running(weft__ctx *c)
{
    weft__ctx_running = c;
}

/* self has ended and next, just picked, has not started and wants a stack
 * of the same size: next takes over self's stack and its context (guard
 * or canary, sanitizer state), and starts in the frame self's entry
 * returned to, without a switch. self is finished here, its stack kept.
 * Returns next, now the running fiber. Owner worker, on self's stack. */
static struct weft_fiber *succeed(struct worker *w, struct weft_fiber *self,
                                  struct weft_fiber *next)
{
    weft__ctx_check_canary(&self->ctx);
    next->ctx = self->ctx;
    next->ctx.owner = &next->who;
    self->ctx.stack = NULL; /* next's now; weft__fiber_finish keeps it */
#if WEFT__TSAN
    self->ctx.tsan_owned = 0; /* so is the sanitizer fiber */
#endif
    w->current = next;
    mark_running(w, next);
    set_ctx_running(&next->ctx); /* self's function may have moved us */
    weft__fiber_finish(w, self, 0);
    weft__count(&w->nswitch);
    rt_leave(w, 0);
    return next;
}

/* The end of self, whose function has returned: run its parked joiner, or
 * the next fiber, there. Returns only when the next fiber has not started
 * yet and can have self's stack (see succeed); the caller then runs it in
 * the same frame. Owner worker. */
static struct weft_fiber *exit_fiber(struct weft_fiber *self)
{
    struct worker *w = weft__worker_self();
    rt_enter(w); /* left by the next context's after_switch, or succeed */
    /* A parked joiner runs next, as if woken into runnext: it inherits
     * the budget (and the debug mode moves it through weft__ready). */
    struct weft_fiber *next = NULL;
    if (!weft__rt.migrate && w->runnext_streak < RUNNEXT_BUDGET &&
        (next = weft__fiber_claim_joiner(self)) != NULL) {
        w->runnext_streak++;
        w->handoff = HANDOFF_EXIT_TO_JOINER;
    } else {
        next = pick_local(w, 0);
        if (next && !next->ctx.stack) {
            if (next->stack_kib == self->stack_kib)
                return succeed(w, self, next);
            next = pick_start(w, next, 0);
        }
        w->handoff = HANDOFF_EXIT;
    }
    w->handoff_fiber = self;
    w->current = next;
    if (next)
        mark_running(w, next);
    else
        mark_sched(w);
    weft__ctx_exit(&self->ctx, next ? &next->ctx : &w->sched_ctx, next);
}

/* First code of every fiber started by a switch, on its fresh stack; val
 * is the fiber. The fibers that succeed it on this stack run here too. */
static void fiber_entry(void *val)
{
    struct weft_fiber *f = val;
    after_switch();
    for (;;) {
        f->arg = f->fn(f->arg);
        f = exit_fiber(f);
    }
}

/* ---- the calls the rest of the runtime builds on ------------------------- */

void weft__ready(struct weft_fiber *f)
{
    weft__chaos(CHAOS_READY);
    struct worker *w = weft__worker_self();
    if (!w) {
        weft__foreign_enter();
        weft__fstate_set(f, FS_RUNNABLE, weft__now_ms());
        weft__global_push(f);
        weft__wakep(); /* the push published with a seq_cst add */
        weft__foreign_leave();
        return;
    }
    weft__ready_local(w, f);
}

void weft__ready_local(struct worker *w, struct weft_fiber *f)
{
    if (weft__rt.migrate)
        push_remote(w, f);
    else
        put_runnext(w, f);
}

void weft__ready_io(struct weft_fiber *f)
{
    struct worker *w = weft__worker_self();
    if (!w || weft__rt.migrate) {
        weft__ready(f);
        return;
    }
    weft__fstate_set(f, FS_RUNNABLE, weft__clock_ms(w));
    f->link = NULL;
    int outer = rt_enter(w);
    if (w->ioq_tail)
        w->ioq_tail->link = f;
    else
        w->ioq_head = f;
    w->ioq_tail = f;
    /* Relaxed: see ioq_unlink_head. */
    atomic_store_explicit(&w->ioq_n,
                          atomic_load_explicit(&w->ioq_n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    rt_leave(w, outer);
}

void weft__ready_io_end(void)
{
    struct worker *w = weft__worker_self();
    /* Relaxed: nparked is a hint here. A worker that parks just after we
     * look finds nothing of this batch, which its own worker runs. */
    if (!w || weft__rt.nworkers < 2 ||
        !atomic_load_explicit(&weft__rt.nparked, memory_order_relaxed))
        return;
    unsigned n = atomic_load_explicit(&w->ioq_n, memory_order_relaxed);
    if (n < 2)
        return;
    /* Keep the older half (it runs here next), hand over the rest. */
    int outer = rt_enter(w);
    struct weft_fiber *last = w->ioq_head;
    for (unsigned i = 1; i < n - n / 2; i++)
        last = last->link;
    struct weft_fiber *first = last->link, *tail = w->ioq_tail;
    last->link = NULL;
    w->ioq_tail = last;
    /* Relaxed: see ioq_unlink_head. */
    atomic_store_explicit(&w->ioq_n, n - n / 2, memory_order_relaxed);
    rt_leave(w, outer);
    weft__global_push_list(first, tail, n / 2);
    weft__wakep(); /* the push published with a seq_cst add */
}

void weft__ready_on(struct worker *v, struct weft_fiber *f)
{
    struct worker *w = weft__worker_self();
    if (w == v && !weft__rt.migrate)
        put_runnext(w, f);
    else
        push_inbox(v, f);
}

/* Take f out of w's run-next slot or off the bottom of its deque if it
 * is there and has not started. Owner worker. */
static int take_unstarted(struct worker *w, struct weft_fiber *f)
{
    int taken = 0;
    int outer = rt_enter(w);
    if (runnext_get(w) == f) {
        /* Ours alone in this slot: reading its stack word is safe. */
        if (!f->ctx.stack) {
            runnext_set(w, NULL);
            taken = 1;
        }
    } else if (deque_peek(&w->dq) == f && deque_pop(&w->dq) == f) {
        /* The pop made it ours (a thief could have taken it meanwhile;
         * then pop returned NULL). Started after all: back where it was,
         * the bottom, still stealable, so no wake-up is owed. */
        if (!f->ctx.stack)
            taken = 1;
        else
            push_local(w, f);
    }
    rt_leave(w, outer);
    return taken;
}

/* Bytes a child run inline needs on top of its own stack size: the frames
 * of weft_join and of this function down to f->fn. */
#define INLINE_MARGIN 1024

int weft__join_inline(struct worker *w, struct weft_fiber *self, struct weft_fiber *f)
{
    if (weft__rt.migrate)
        return 0; /* every start should move: leave f to the queues */
    weft__stack *s = self->ctx.stack;
    char *sp = __builtin_frame_address(0);
    if (!s || sp < s->lo || (size_t)(sp - s->lo) < INLINE_MARGIN)
        return 0;
    size_t room = (size_t)(sp - s->lo) - INLINE_MARGIN;
    if (room < weft__stack_served_size((size_t)f->stack_kib * 1024) ||
        !take_unstarted(w, f))
        return 0;
    /* f borrows self's context: the same stack, guard or canary, and
     * sanitizer state (one stack, one sanitizer fiber), under its own
     * name for crash and overflow reports. weft__ctx_call leaves self
     * looking suspended at the call, so weft-dump and gdb still show
     * its backtrace (weft_join's caller) while f runs or parks. */
    f->ctx = self->ctx;
    f->ctx.owner = &f->who;
#if WEFT__TSAN
    f->ctx.tsan_owned = 0;
#endif
    weft__fstate_set(self, FS_PARKED, weft__clock_ms(w));
    weft__count(&w->npark);
    weft__count(&w->nswitch);
    w->current = f;
    mark_running(w, f);
    set_ctx_running(&f->ctx);

    f->arg = weft__ctx_call(&self->ctx.sp, f->fn, f->arg);

    w = weft__worker_self(); /* f may have parked and moved on */
    set_ctx_running(&self->ctx);
    f->ctx.stack = NULL;
    weft__fstate_set(f, FS_DONE, weft__clock_ms(w));
    /* Release: pairs with the acquire in quiescent() (runtime.c), as
     * weft__fiber_finish's count. */
    atomic_store_explicit(&w->nexited,
                          atomic_load_explicit(&w->nexited, memory_order_relaxed) + 1,
                          memory_order_release);
    weft__count(&w->nswitch);
    w->current = self;
    mark_running(w, self);
    return 1;
}

void weft__park(int (*commit)(struct weft_fiber *self, void *arg), void *arg)
{
    struct worker *w = weft__worker_self();
    struct weft_fiber *self = w->current;
    rt_enter(w); /* left by after_switch when we run again */
    /* Before the commit publishes self: a waker's FS_RUNNABLE comes after. */
    weft__fstate_set(self, FS_PARKED, weft__clock_ms(w));
    weft__count(&w->npark);
    struct weft_fiber *next = pick_runnable(w, 0);
    w->park_commit = commit;
    w->park_arg = arg;
    switch_away(w, self, next, HANDOFF_PARK);
}

void weft_yield(void)
{
    weft__chaos_move(CHAOS_BLOCK); /* before w: a move changes it */
    struct worker *w = weft__worker_self();
    struct weft_fiber *self = w ? w->current : NULL;
    if (!self) {
        sched_yield();
        return;
    }
    rt_enter(w); /* left by after_switch, or below */
    struct weft_fiber *next = pick_runnable(w, 1);
    /* Nothing else to run here: carry on, unless the debug mode wants
     * this fiber moved anyway. Counted as a switch (to itself), so the
     * monitor sees the fiber yield. */
    if (!next && !weft__rt.migrate) {
        weft__count(&w->nswitch);
        rt_leave(w, 0);
        return;
    }
    switch_away(w, self, next, HANDOFF_YIELD);
}

void weft__worker_loop(struct worker *w)
{
    weft__ctx_init_current(&w->sched_ctx);
    /* Relaxed: see struct worker. */
    atomic_store_explicit(&w->clock_ms, weft__now_ms(), memory_order_relaxed);
    for (;;) {
        struct weft_fiber *f = pick_runnable(w, 0);
        if (!f) {
            f = weft__search(w);
            if (f && !f->ctx.stack && (w->nostack_head || start_fiber(f) != 0)) {
                nostack_wait(w, f);
                continue;
            }
        }
        if (!f) {
            if (weft__idle(w))
                break;
            continue;
        }
        if (w->searching)
            weft__stop_searching(w);
        rt_enter(w); /* left by f's after_switch */
        w->current = f;
        mark_running(w, f);
        weft__ctx_switch(&w->sched_ctx, &f->ctx, f);
        after_switch();
    }
}

void weft__worker_cleanup(struct worker *w)
{
    weft__fiber_cache_release(w);
    timer_heap_destroy(&w->timers);
}
