/*
 * The scheduler's internal interface: fibers, workers, the runtime, and
 * the calls other subsystems (sync, channels, the netpoller) build on:
 * weft__park / weft__ready. Nothing here is installed. The design essay
 * is at the top of sched.c.
 */
#ifndef WEFT_SCHED_H
#define WEFT_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "weft_internal.h"
#include "ctx/ctx.h"
#include "ctx/arch/x86_64_tls.h"
#include "io/poller.h"
#include "sched/deque.h"
#include "sched/timer.h"
#include "sched/topo.h"

#define WEFT__CACHELINE     64
#define WEFT__FIBER_NAME    32
#define WEFT__MAX_WORKERS   4096
#define WEFT__MAX_STACK     ((size_t)1 << 30)
#define WEFT__FIBER_BATCH   256

#define weft__container_of(p, type, member) \
    ((type *)(void *)((char *)(p) - offsetof(type, member)))

struct worker;
struct gq_chunk;
struct fiber_slab;
struct trace_buf;

/* ---- fibers (fiber.c) --------------------------------------------------- */

/*
 * The fiber registry. Every control block lives in a slab (fiber.c) that
 * is never freed while the runtime runs, so a reader on another thread
 * (weft_dump, the monitor) may walk all of them at any moment: a block
 * whose `rstate` is FS_FREE is not a fiber now. The registry words below
 * are written by whoever moves the fiber between states, with relaxed
 * stores (they describe, they never decide: no thread acts on what it
 * reads there except to print it), and read with relaxed loads.
 */
enum weft__fstate {
    FS_FREE = 0,  /* in a cache, not a fiber                              */
    FS_RUNNABLE,  /* on a run queue (or about to be)                      */
    FS_RUNNING,   /* on a worker                                          */
    FS_PARKED,    /* blocked; `wait` and `wait_obj` say on what           */
    FS_DONE,      /* returned, waiting to be joined                       */
};

/* What a parked fiber waits for (the registry's wait reason). */
enum weft__wait {
    WAIT_NONE = 0,
    WAIT_JOIN,       /* obj: the id of the fiber joined                   */
    WAIT_SLEEP,      /* obj: the deadline (weft_now clock)                 */
    WAIT_MUTEX,      /* obj: the weft_mutex                                */
    WAIT_COND,       /* obj: the weft_cond                                 */
    WAIT_WG,         /* obj: the weft_wg                                   */
    WAIT_SEM,        /* obj: the weft_sem                                  */
    WAIT_CHAN_SEND,  /* obj: the weft_chan                                 */
    WAIT_CHAN_RECV,  /* obj: the weft_chan                                 */
    WAIT_SELECT,     /* obj: the first channel of the select               */
    WAIT_FD_READ,    /* obj: the fd                                        */
    WAIT_FD_WRITE,   /* obj: the fd                                        */
    WAIT_FD_RW,      /* obj: the fd                                        */
    WAIT_BLOCKING,   /* obj: the function run on the blocking pool         */
    WAIT_MIGRATE,    /* obj: the worker it moves to                        */
    WAIT__COUNT
};

/*
 * A fiber's control block: two cache lines. Allocated by weft_spawn*
 * from the registry's slabs, recycled by the join (or by the fiber itself
 * at exit when detached). While it has not started, ctx.stack is NULL
 * and the fiber holds no stack; it gets one when a worker first picks it
 * (or takes over the stack of the fiber that just ended there: see
 * "Stack succession" in sched.c), and gives it back, or hands it on, at
 * its end.
 *
 * Who may touch what: fn, id, stack_kib and spawn_pc are written before
 * the fiber is published and read-only after. ctx, arg and name belong to
 * whichever thread runs the fiber (or handles it in a handoff) at the
 * moment; the queues' release/acquire pairs carry them between threads.
 * join and claimed are atomics (see fiber.c). link belongs to the queue or
 * list the fiber is on. The registry words: see above.
 *
 * Two cache lines, and a burst of spawns keeps a million of them: the
 * first line holds what spawning, starting and ending a fiber touch most.
 * A fiber's timers live elsewhere (weft_sleep's on its own stack), since
 * most fibers never arm one.
 */
struct weft_fiber {
    /* First line: what a park and a wake-up touch (the switch, the I/O
     * queue, the registry words), so a parked fiber costs one cold line
     * to wake and run, not two. */
    _Alignas(WEFT__CACHELINE) weft__ctx ctx;
    struct weft_fiber *link;       /* global queue, inbox, free list    */
    /* The registry. */
    _Atomic uint8_t    rstate;     /* enum weft__fstate                  */
    _Atomic uint8_t    wait;       /* enum weft__wait while FS_PARKED    */
    _Atomic uint16_t   worker;     /* the worker it last ran on          */
    _Atomic uint32_t   since;      /* weft__coarse_ms() of the last change */
    _Atomic uintptr_t  wait_obj;   /* see enum weft__wait                */
    /* The kinds of its last 8 waits, newest in the low byte, for crash
     * reports. Only the fiber itself touches it (weft__wait_reason, and
     * a fatal-signal handler on its own thread). */
    uint64_t           wait_hist;
    /* Second line: start, end, names. */
    weft_fn            fn;
    void              *arg;        /* fn's argument; its result after   */
    union {                        /* ctx.owner points at `who`          */
        struct weft__owner who;
        struct {
            uint64_t id;
            char    *name;         /* NULL, or WEFT__FIBER_NAME bytes    */
        };
    };
    _Atomic uintptr_t  join;       /* join word, see fiber.c             */
    _Atomic int        claimed;    /* joined or detached already         */
    uint32_t           stack_kib;  /* asked for; 0: the runtime default  */
    void              *spawn_pc;   /* return address of weft_spawn*'s caller */
    uint32_t           trace_gen;  /* trace session that has its name (trace.c) */
};
#if !WEFT__ASAN && !WEFT__TSAN
_Static_assert(sizeof(struct weft_fiber) == 2 * WEFT__CACHELINE,
               "a fiber's control block is two cache lines");
_Static_assert(offsetof(struct weft_fiber, wait_hist) + sizeof(uint64_t) == WEFT__CACHELINE,
               "a park and a wake-up touch only the first line");
#endif

/* Milliseconds on the weft_now clock, truncated to 32 bits: what the
 * registry's `since` holds (differences are taken modulo 2^32). Any
 * thread. */
uint32_t weft__now_ms(void);

/* Registry bookkeeping, by whoever moves f: relaxed stores (see above). */
static inline void weft__fstate_set(struct weft_fiber *f, unsigned st, uint32_t now_ms)
{
    if (!WEFT__REGISTRY)
        return; /* compiled out (-Dregistry=false), to measure its cost */
    atomic_store_explicit(&f->rstate, (uint8_t)st, memory_order_relaxed);
    atomic_store_explicit(&f->since, now_ms, memory_order_relaxed);
}


/* The name of a wait reason ("chan recv", "fd read", ...). */
const char *weft__wait_name(unsigned why);
/* Make fatal-signal reports (ctx.c) name a crashing fiber's last wait. */
void weft__fiber_crash_hook_install(void);

/* Call fn(f, arg) for every block that is a fiber now (rstate not
 * FS_FREE when looked at; it may change while fn runs). The walk takes no
 * lock any fiber operation takes. Any thread, while the runtime runs. */
void weft__registry_walk(void (*fn)(struct weft_fiber *f, void *arg), void *arg);

/* A new, unstarted control block for fn(arg) with options o (not NULL),
 * from w's free list when w is not NULL. NULL if out of memory. The
 * calling thread (w's, if given). */
struct weft_fiber *weft__fiber_new(struct worker *w, const weft_spawn_opts *o,
                                   weft_fn fn, void *arg);
/* Finish a fiber that has switched away for good: give its stack back,
 * then complete the join handshake (wake the joiner, or free the block if
 * detached) unless weft__fiber_claim_joiner already did. The worker it
 * ran on (w, the calling one), in the handoff after the switch. */
void weft__fiber_finish(struct worker *w, struct weft_fiber *f, int joiner_claimed);
/* f (running, about to exit) has a fiber parked in weft_join on it:
 * mark f done and return that joiner, which the caller must switch to
 * directly (nobody else will wake it). NULL if there is none. f's own
 * thread, before its last switch. */
struct weft_fiber *weft__fiber_claim_joiner(struct weft_fiber *f);
/* Give a control block back (the worker's magazines, or the allocator off
 * a worker). Any thread. */
void weft__fiber_free(struct weft_fiber *f);
/* Free the calling worker's magazines. Its own thread, at the end. */
void weft__fiber_cache_release(struct worker *w);
/* Free the global pool of control blocks. After every worker stopped. */
void weft__fiber_pool_release(void);

/* ---- workers ------------------------------------------------------------- */

/* What the context switched to must do with the fiber that left. */
enum weft__handoff {
    HANDOFF_NONE = 0,
    HANDOFF_YIELD,   /* put it back on a run queue                         */
    HANDOFF_PARK,    /* run park_commit; if that refuses, make it runnable  */
    HANDOFF_EXIT,    /* weft__fiber_finish                                  */
    HANDOFF_EXIT_TO_JOINER, /* weft__fiber_finish; the joiner runs already */
};

struct worker {
    /* Owner-only state: read and written by this worker's thread alone
     * (other threads may read `current` and the counters for reports). */
    struct weft_fiber *current;    /* running fiber; NULL in the scheduler */
    /* Owner-only, but also read by the monitor (a hint) and moved by the
     * takeover signal handler on the owner's own thread (monitor.c):
     * relaxed atomics, which cost plain moves. */
    _Atomic(struct weft_fiber *) runnext; /* stolen only by takeover   */
    /* Fibers the netpoller readied here, oldest first (through `link`):
     * run in the order their I/O became ready. ioq_n is read by the
     * monitor as a hint. */
    struct weft_fiber *ioq_head, *ioq_tail;
    _Atomic unsigned   ioq_n;
    /* 1 while the owner is in code that touches runnext or its deque's
     * owner side (the takeover handler then leaves them alone). Same
     * thread only: relaxed, ordered by signal fences. */
    _Atomic int        in_rt;
    unsigned           index;
    unsigned           tick;       /* picks since the last fairness check */
    unsigned           runnext_streak; /* consecutive runnext picks       */
    int                searching;  /* counted in weft__rt.nsearching      */
    int                handoff;    /* enum weft__handoff, for: */
    struct weft_fiber *handoff_fiber;
    int              (*park_commit)(struct weft_fiber *self, void *arg);
    void              *park_arg;
    uint64_t           id_next, id_end;  /* fiber id batch               */
    struct weft_fiber *fcache;     /* free control blocks (fiber.c):      */
    struct weft_fiber *fspare;     /*   two magazines of at most           */
    unsigned           nfcache;    /*   WEFT__FIBER_BATCH each             */
    uint64_t           rng;
    unsigned          *victims;    /* other workers, nearest first        */
    unsigned           level_end[TOPO_LEVELS];
    struct timer_heap  timers;
    weft__ctx          sched_ctx;  /* this thread's own stack             */
    pthread_t          thread;
    /* Termination counters: written by the owner only, read by any
     * worker checking for quiescence (runtime.c). */
    _Atomic uint64_t   nspawned;
    _Atomic uint64_t   nexited;
    /* Statistics (weft_stats_get) and the monitor's progress check:
     * written by the owner only, with relaxed load+store (no locked
     * instruction), read by anyone with relaxed loads. */
    _Atomic uint64_t   nswitch;    /* context switches                   */
    _Atomic uint64_t   nsteal;     /* successful steals                   */
    _Atomic uint64_t   nsteal_try; /* victims tried                       */
    _Atomic uint64_t   npark;      /* fibers parked                       */
    _Atomic uint64_t   nwake;      /* times this worker woke from idle    */
    _Atomic uint32_t   clock_ms;   /* coarse clock, see weft__clock_ms    */
    _Atomic int        wstate;     /* enum weft__wstate, for reports      */
    /* `current` for other threads (the monitor, reports): relaxed
     * stores by the owner at every switch, relaxed loads. */
    _Atomic(struct weft_fiber *) running;
    /* The trace buffer while a trace records (trace.c). */
    _Atomic(struct trace_buf *) trace;
    /* Fibers picked to start that got no stack, oldest first (through
     * `link`); their retry timer, in the heap's reserved slot; its
     * back-off in ns (0: none yet). Owner only (sched.c, "Out of
     * stacks"). */
    struct weft_fiber *nostack_head, *nostack_tail;
    struct weft__timer nostack_timer;
    int64_t            nostack_backoff;

    /* Shared with thieves (the deque aligns its own hot words). */
    struct deque       dq;

    /* Shared with remote pushers (debug migration) and wakers, and
     * emptied by the monitor's takeover of a stuck worker (monitor.c). */
    _Alignas(WEFT__CACHELINE) pthread_mutex_t inbox_lock;
    struct weft_fiber *inbox_head, *inbox_tail;   /* with inbox_lock     */
    _Atomic unsigned   inbox_len;
    struct poller     *poller;
    int                idle_pos;      /* in weft__rt.idle; -1: not there. With idle_lock */
    int                handed_search; /* a waker made us a searcher. With idle_lock */
};

/* What a worker is doing, for reports. */
enum weft__wstate { WS_SCHED = 0, WS_RUNNING, WS_SEARCHING, WS_PARKED, WS_STOPPED };

/* Owner-only counter increment: a relaxed load and store, no locked
 * instruction (only the owner writes; readers tolerate a stale value). */
static inline void weft__count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* The registry's clock for a caller that knows its worker w (NULL: a
 * plain thread): w's coarse clock, refreshed every FAIRNESS_TICK picks
 * and at every wake-up (sched.c), so reading it costs a load; off-worker
 * the real clock. */
static inline uint32_t weft__clock_ms(struct worker *w)
{
    /* Relaxed: a coarse timestamp, owner-written; see struct worker. */
    return w ? atomic_load_explicit(&w->clock_ms, memory_order_relaxed) : weft__now_ms();
}

/* The calling thread's worker (weft__worker_bind). Read only through
 * weft__worker_self. */
extern __thread struct worker *weft__tls_worker
    __attribute__((tls_model("initial-exec"), visibility("hidden")));

/* The worker the calling thread is, or NULL on a plain thread. After a
 * context switch the caller may be on another thread, so the TLS read
 * must happen afresh each time (an ordinary inlined TLS access could
 * reuse the address computed before the switch): see
 * WEFT__TLS_READ_FRESH. Any thread. */
static inline __attribute__((always_inline)) struct worker *weft__worker_self(void)
{
    return WEFT__TLS_READ_FRESH(weft__tls_worker);
}

/* The caller is about to park on obj for reason `why` (enum
 * weft__wait): record it before weft__park. A no-op on a plain thread.
 * Any thread. */
static inline void weft__wait_reason(unsigned why, uintptr_t obj)
{
    struct worker *w = weft__worker_self();
    struct weft_fiber *self = w ? w->current : NULL;
    if (!self || !WEFT__REGISTRY)
        return; /* a plain thread: not in the registry */
    self->wait_hist = self->wait_hist << 8 | (uint8_t)why;
    /* Relaxed: registry words, see above. */
    atomic_store_explicit(&self->wait, (uint8_t)why, memory_order_relaxed);
    atomic_store_explicit(&self->wait_obj, obj, memory_order_relaxed);
}

/* ---- the runtime (runtime.c) -------------------------------------------- */

enum { RT_STOPPED = 0, RT_STARTING, RT_RUNNING, RT_STOPPING };

struct weft__runtime {
    /* Read-mostly while running. */
    _Atomic int       state;         /* RT_*                               */
    unsigned          nworkers;
    struct worker    *workers;
    int               migrate;       /* WEFT_DEBUG_MIGRATE, and > 1 worker */
    int               pin;
    struct topo       topo;
    pthread_mutex_t   start_lock;    /* held while the workers are created */
    _Atomic unsigned  workers_ready; /* workers set up, waiting at the gate */

    /* Idle protocol (idle.c). */
    _Alignas(WEFT__CACHELINE) _Atomic unsigned nsearching;
    _Atomic unsigned  nparked;
    _Atomic int       shutdown;
    _Alignas(WEFT__CACHELINE) pthread_mutex_t idle_lock;
    struct worker   **idle;          /* parked workers, with idle_lock     */
    unsigned          nidle;         /* with idle_lock                     */

    /* Global run queue (globalq.c). */
    _Alignas(WEFT__CACHELINE) pthread_mutex_t gq_lock;
    struct gq_chunk   *gq_chunks, *gq_chunks_tail;   /* with gq_lock       */
    struct weft_fiber *gq_singles, *gq_singles_tail; /* with gq_lock       */
    _Atomic size_t    gq_len;        /* fibers in both; written with gq_lock */
    _Atomic uint64_t  foreign_spawned; /* fibers spawned off-worker        */
    /* Threads that are not workers between publishing a fiber to the
     * global queue and the end of their weft__wakep (weft__foreign_*),
     * or joining, detaching or spawning (fiber.c, run_hold): weft_run
     * frees nothing they touch until it drops to zero. */
    _Atomic unsigned  foreign_wakers;

    /* Free control blocks beyond the workers' magazines (fiber.c): full
     * batches, linked through their first block's arg. */
    _Alignas(WEFT__CACHELINE) pthread_mutex_t fpool_lock;
    struct weft_fiber *fpool;        /* with fpool_lock                    */
    _Atomic size_t    fpool_batches; /* written with fpool_lock            */

    /* The registry (fiber.c): every slab of control blocks, newest
     * first. Pushed with a release CAS, walked after an acquire load;
     * freed only when the run ends, with report_lock held, which every
     * walker off the runtime's own threads holds too. */
    _Atomic(struct fiber_slab *) slabs;
    struct weft_fiber *floose;       /* with fpool_lock: single free blocks */
    pthread_mutex_t   report_lock;

    /* Ids, stack pressure. */
    _Alignas(WEFT__CACHELINE) _Atomic uint64_t next_id;
    _Atomic int       stack_starved; /* spawn fails with EAGAIN while set  */
};

extern struct weft__runtime weft__rt;

/* Are all fibers finished? Initiate shutdown if so (waking every parked
 * worker). Returns 1 once the runtime is shutting down. Any worker. */
int weft__check_termination(void);

/* Start the monitor thread (monitor.c) for a run whose workers all
 * started; 0 or a negative errno. Stop it (a no-op if it did not start)
 * after the workers joined. The caller of weft_run. */
int  weft__monitor_start(void);
void weft__monitor_stop(void);

/* Keep the run's counters for weft_stats_get after it ends. The caller
 * of weft_run, after the workers joined. */
void weft__stats_keep(void);

/* Monotonic clock, ns (the public weft_now, callable internally). */
int64_t weft__now(void);

/* ---- scheduling (sched.c) ------------------------------------------------- */

/* Make f runnable: into the calling worker's run-next slot, or the global
 * queue off-worker (waking an idle worker when the protocol says so). f
 * must be parked (or new) and on no queue. Any thread. */
void weft__ready(struct weft_fiber *f);
/* weft__ready for a caller that knows it is worker w. Owner worker w. */
void weft__ready_local(struct worker *w, struct weft_fiber *f);
/* weft__ready for a fiber whose I/O became ready: on a worker, to the
 * tail of its I/O queue, which runs first in, first out (a connection
 * that became ready earlier is served earlier); elsewhere weft__ready.
 * Then, once per batch of events, weft__ready_io_end. Any thread. */
void weft__ready_io(struct weft_fiber *f);
/* A batch of weft__ready_io calls is over: if other workers are parked,
 * hand them the newer half of this worker's I/O queue (global queue, one
 * wake-up). Any thread (a no-op off-worker). */
void weft__ready_io_end(void);
/* Make f runnable on worker v in particular (its inbox, or its run-next
 * slot when the caller is v): for a fiber that must disarm a timer in v's
 * heap. f as for weft__ready. Any thread. */
void weft__ready_on(struct worker *v, struct weft_fiber *f);
/* Park the calling fiber. Once it has switched away, commit(self, arg)
 * runs on the worker; it publishes self to whoever will weft__ready it
 * (a wait list, a timer) and returns 1, or returns 0 to cancel the park,
 * and self is made runnable at once. The wait cannot be woken before
 * commit ran, so no lock or flag needs to survive the switch. Returns
 * after weft__ready(self). Fiber only. */
void weft__park(int (*commit)(struct weft_fiber *self, void *arg), void *arg);
/* weft_join's fast path. If f (claimed by self's join, not finished) has
 * not started, is the next thing this worker would run (its run-next
 * slot or the bottom of its deque), and self's stack has room for f's
 * own stack size, take f off the queue and run it to completion right
 * here on self's stack, as a call; then return 1, with f marked done
 * and its result in f->arg (the caller frees the block). f is a fiber
 * of its own meanwhile (weft_self() is f; if it parks, self's stack
 * parks with it and may resume on another worker). Otherwise return 0
 * and change nothing. Fiber self, on worker w. */
int weft__join_inline(struct worker *w, struct weft_fiber *self, struct weft_fiber *f);
/* Run the worker's schedule loop until the runtime shuts down. The
 * worker's own thread, after setting it up. */
void weft__worker_loop(struct worker *w);
/* Tear down what the schedule loop leaves cached on w. Its own thread. */
void weft__worker_cleanup(struct worker *w);
/* Bind the calling thread to w (NULL: unbind). Its own thread. */
void weft__worker_bind(struct worker *w);

/* ---- the global queue (globalq.c) ---------------------------------------- */

/* Append one fiber. Never fails (no allocation). Callers wake a worker
 * (weft__wakep) as their situation requires. Any thread. */
void weft__global_push(struct weft_fiber *f);
/* Append the n fibers first..last, linked through `link`, in that order.
 * Never fails. As weft__global_push. Any thread. */
void weft__global_push_list(struct weft_fiber *first, struct weft_fiber *last, size_t n);
/* The owner's deque d is full: move its oldest half and f to the global
 * queue as one chunk (or f alone if no chunk can be allocated). Owner of d. */
void weft__global_spill(struct deque *d, struct weft_fiber *f);
/* Take up to max fibers: return the first, push the rest on d, which must
 * have room for max - 1. NULL if the queue is empty. Owner of d. */
struct weft_fiber *weft__global_take(struct deque *d, unsigned max);
/* A new fiber made by a plain thread: counted, queued, a worker woken.
 * 0, or -EPERM if the runtime is shutting down. Any non-worker thread. */
int  weft__submit_foreign(struct weft_fiber *f);
/* Free what a failed start left queued. No worker may be running. */
void weft__global_discard(void);

/* ---- the idle protocol (idle.c) ------------------------------------------ */

/* Look for work on other workers (steal-half), within the limit on
 * searching workers. Owner worker, in its scheduler context. */
struct weft_fiber *weft__search(struct worker *w);
/* Leave the searching state after finding work. Owner worker. */
void weft__stop_searching(struct worker *w);
/* Park w until work may be available (or its next timer). Returns 1 when
 * the runtime is shutting down. Owner worker, in its scheduler context. */
int  weft__idle(struct worker *w);
/* Work was just published with a seq_cst operation (or a plain store
 * followed by a seq_cst fence): if nobody searches and someone is parked,
 * wake exactly one parked worker. Any thread. */
void weft__wakep(void);
/* A thread that is not a worker brackets its publication of a fiber and
 * the weft__wakep after it with these, so that weft_run, which frees what
 * weft__wakep touches (the idle list, the pollers), waits for it: once the
 * fiber is published it may run, end, and end the run before the waker
 * has finished waking. Any thread. */
static inline void weft__foreign_enter(void)
{
    /* Relaxed: the publication that follows is a release operation (a
     * seq_cst add, or gq_lock's unlock), so whoever takes the fiber, and
     * hence the end of the run that follows the fiber's exit, sees this
     * count. */
    atomic_fetch_add_explicit(&weft__rt.foreign_wakers, 1, memory_order_relaxed);
}
static inline void weft__foreign_leave(void)
{
    /* Release: our wake-up's reads of the idle list and pollers happen
     * before weft_run's acquire load that sees the count drop. */
    atomic_fetch_sub_explicit(&weft__rt.foreign_wakers, 1, memory_order_release);
}
/* Wait until no thread is between weft__foreign_enter and _leave. The
 * thread ending weft_run, after every fiber has ended. */
void weft__foreign_quiesce(void);

/* Per-worker xorshift; owner only. */
static inline uint64_t weft__rand(struct worker *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rng = x;
}

#endif
