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
#include <stdint.h>

#include "weft_internal.h"
#include "ctx/ctx.h"
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

/* ---- fibers (fiber.c) --------------------------------------------------- */

/*
 * A fiber's control block: 128 bytes in release builds (one allocation
 * class, two cache lines), since a million unjoined fibers are a million
 * of these. Allocated by weft_spawn*, freed by the join (or by the fiber
 * itself at exit when detached). While it has not started, ctx.stack is
 * NULL and the fiber holds no stack; it gets one when a worker first picks
 * it, and gives it back as soon as it has switched away for the last time.
 *
 * Who may touch what: fn, id and stack_kib are written before
 * the fiber is published and read-only after. ctx, arg, timer and name
 * belong to whichever thread runs the fiber (or handles it in a handoff)
 * at the moment; the queues' release/acquire pairs carry them between
 * threads. join and claimed are atomics (see fiber.c). link belongs to
 * the queue or list the fiber is on.
 */
struct weft_fiber {
    weft__ctx          ctx;
    struct weft_fiber *link;       /* global queue, inbox, free list    */
    weft_fn            fn;
    void              *arg;        /* fn's argument; its result after   */
    uint64_t           id;
    _Atomic uintptr_t  join;       /* join word, see fiber.c             */
    _Atomic int        claimed;    /* joined or detached already         */
    uint32_t           stack_kib;  /* asked for; 0: the runtime default  */
    struct weft__timer timer;      /* sleeps; later I/O deadlines        */
    char              *name;       /* NULL, or WEFT__FIBER_NAME bytes    */
};

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
    struct weft_fiber *runnext;    /* never stolen (see the essay)         */
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

    /* Shared with thieves (the deque aligns its own hot words). */
    struct deque       dq;

    /* Shared with remote pushers (debug migration) and wakers. */
    _Alignas(WEFT__CACHELINE) pthread_mutex_t inbox_lock;
    struct weft_fiber *inbox_head, *inbox_tail;   /* with inbox_lock     */
    _Atomic unsigned   inbox_len;
    struct poller     *poller;
    int                idle_pos;      /* in weft__rt.idle; -1: not there. With idle_lock */
    int                handed_search; /* a waker made us a searcher. With idle_lock */
};

/* The worker the calling thread is, or NULL on a plain thread. Not
 * inlined, on purpose: after a context switch the caller may be on
 * another thread, and an inlined TLS access could reuse the address
 * computed before the switch. Any thread. */
struct worker *weft__worker_self(void);

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

    /* Free control blocks beyond the workers' magazines (fiber.c): full
     * batches, linked through their first block's arg. */
    _Alignas(WEFT__CACHELINE) pthread_mutex_t fpool_lock;
    struct weft_fiber *fpool;        /* with fpool_lock                    */
    _Atomic size_t    fpool_batches; /* written with fpool_lock            */

    /* Ids, stack pressure. */
    _Alignas(WEFT__CACHELINE) _Atomic uint64_t next_id;
    _Atomic int       stack_starved; /* spawn fails with EAGAIN while set  */
};

extern struct weft__runtime weft__rt;

/* Are all fibers finished? Initiate shutdown if so (waking every parked
 * worker). Returns 1 once the runtime is shutting down. Any worker. */
int weft__check_termination(void);

/* Monotonic clock, ns (the public weft_now, callable internally). */
int64_t weft__now(void);

/* ---- scheduling (sched.c) ------------------------------------------------- */

/* Make f runnable: into the calling worker's run-next slot, or the global
 * queue off-worker (waking an idle worker when the protocol says so). f
 * must be parked (or new) and on no queue. Any thread. */
void weft__ready(struct weft_fiber *f);
/* weft__ready for a caller that knows it is worker w. Owner worker w. */
void weft__ready_local(struct worker *w, struct weft_fiber *f);
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
