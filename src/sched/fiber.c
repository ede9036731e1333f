/*
 * Fibers: spawning, joining, detaching, sleeping, and a fiber's end.
 *
 * The join handshake runs on one atomic word per fiber:
 *
 *   RUNNING (0)  the fiber has not finished; nobody waits
 *   DONE (1)     it finished; result is valid
 *   DETACHED (2) it will free itself when it finishes
 *   pointer      a fiber waits in weft_join (the joiner's control block)
 *   pointer|4    a plain thread waits (a struct thread_waiter)
 *
 * Control blocks and thread waiters are at least 8-byte aligned, so the
 * small values and the tag bit never collide with a pointer. The finishing
 * side exchanges the word to DONE and acts on what it held; the joining
 * side CASes RUNNING to its own pointer, and a failed CAS means DONE.
 * Exactly one of them sees the other, whatever the interleaving.
 *
 * Misuse (a second join, a join after detach) is caught by `claimed`, set
 * by the first join or detach. A control block is recycled when its join
 * completes, still claimed, so a stale second join is answered -EINVAL
 * until the block is reused by a new spawn.
 *
 * Last touches. Whoever lets another party proceed must not touch what
 * that party may then free: the joiner frees the control block as soon
 * as weft_join returns, and a plain thread's waiter lives on its stack.
 * The finishing side's last touch of each, in every path:
 *
 *   finish, nobody waits     the exchange to DONE in weft__fiber_finish;
 *                            the stack went back before it, the exit is
 *                            counted after it (the worker's word, not f's)
 *   finish, fiber joiner     the same exchange; then only weft__ready_local
 *     parked after the       of the joiner, which cannot run before that
 *     finisher looked        ready completes (it is parked, on no queue)
 *   finish, fiber joiner     the release store of DONE in claim_joiner,
 *     parked before          then the switch to the joiner itself: the
 *     (exit to joiner)       joiner runs only because of that switch, and
 *                            the block's remaining bookkeeping (stack,
 *                            registry word) is done by the joiner's own
 *                            after_switch, before weft_join goes on
 *   finish, thread joiner    the exchange; then the release store of
 *                            `done` in the waiter, the last touch of the
 *                            waiter's memory; the futex wake after it is a
 *                            system call on the word's address, which
 *                            reads nothing (if the waiter has gone, at
 *                            most a spurious wake-up of a later waiter
 *                            there, which every futex user tolerates)
 *   finish, detached         the exchange finds DETACHED: the finisher
 *                            owns the block and frees it itself
 *   detach racing finish     the CAS of RUNNING to DETACHED and the
 *                            finisher's exchange: the second of the two
 *                            frees the block, the first never touches it
 *                            after its atomic
 *   inline join              the child never leaves the joiner's call, so
 *                            the joiner itself marks it done and frees it
 *   stack succession         weft__fiber_finish runs for the ended fiber
 *                            on the stack its successor now owns, before
 *                            the successor's function is called, and
 *                            touches nothing of the ended fiber after it
 *
 * Plain threads and the end of a run. Control blocks live in slabs that
 * weft_run frees when it returns, so a plain thread that joins, detaches
 * or spawns holds the run while it touches a block (run_hold): counted
 * among the foreign threads that weft_run waits for before freeing
 * anything, and only while the run is still RUNNING. A join or detach
 * after that fails with -ESRCH without touching the handle.
 */
#include "sched/sched.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/fmt.h"
#include "sched/chaos.h"
#include "sched/waitq.h"

#define JOIN_RUNNING  ((uintptr_t)0)
#define JOIN_DONE     ((uintptr_t)1)
#define JOIN_DETACHED ((uintptr_t)2)
#define JOIN_THREAD   ((uintptr_t)4)

#define ID_BATCH      1024

/* A plain thread blocked in weft_join; lives on that thread's stack. It
 * sleeps with the futex helpers of waitq.c, which every blocking object
 * shares. */
struct thread_waiter {
    _Alignas(8) _Atomic uint32_t done;
};

/* ---- control blocks ------------------------------------------------------ */

/* w's thread, or any thread when w is NULL. */
static uint64_t new_id(struct worker *w)
{
    /* Relaxed: ids need only be unique, which fetch_add is at any order. */
    if (!w)
        return atomic_fetch_add_explicit(&weft__rt.next_id, 1, memory_order_relaxed);
    if (w->id_next == w->id_end) {
        w->id_next = atomic_fetch_add_explicit(&weft__rt.next_id, ID_BATCH,
                                               memory_order_relaxed);
        w->id_end = w->id_next + ID_BATCH;
    }
    return w->id_next++;
}

/* Copy name into f's name buffer, allocating it on first use. 0 or
 * -ENOMEM. The thread that owns f at the moment. */
static int set_name(struct weft_fiber *f, const char *name)
{
    if (!f->name) {
        if (!name)
            return 0;
        f->name = weft__malloc(WEFT__FIBER_NAME);
        if (!f->name)
            return -ENOMEM;
    }
    weft__copy_name(f->name, WEFT__FIBER_NAME, name);
    return 0;
}

/*
 * Control blocks are recycled, not freed, while the runtime runs (as Go
 * keeps its goroutine descriptors): spawn and join pay no allocator call,
 * and a block never returns to the allocator while a stale handle to it
 * may still be passed to weft_join. They are made WEFT__FIBER_BATCH at a
 * time in a slab, and every slab is on one list (weft__rt.slabs): that
 * list is the fiber registry, which weft_dump and the monitor walk
 * without taking any lock a fiber operation takes.
 *
 * Each worker keeps two magazines of up to WEFT__FIBER_BATCH blocks; when
 * both are full, one goes to the global pool as a whole batch, and an
 * empty worker takes a whole batch back (or a new slab), so a worker that
 * only spawns and one that only joins balance out through the pool with
 * one lock per batch and no list walking. Plain threads take and give
 * single blocks under fpool_lock. Everything is freed when weft_run ends.
 * The cost: a burst of N live fibers keeps N x 128 bytes until then.
 */
struct fiber_slab {
    struct fiber_slab *next;
    struct weft_fiber  f[WEFT__FIBER_BATCH];
};

/* A new slab, pushed on the registry; returns its blocks as one chain
 * (linked through `link`), all FS_FREE. NULL if out of memory. Any thread. */
static struct weft_fiber *slab_new(void)
{
    struct fiber_slab *s = weft__aligned_alloc(WEFT__CACHELINE, sizeof *s);
    if (!s)
        return NULL;
    memset(s, 0, sizeof *s); /* FS_FREE, no name */
    for (unsigned i = 0; i < WEFT__FIBER_BATCH; i++)
        s->f[i].link = i + 1 < WEFT__FIBER_BATCH ? &s->f[i + 1] : NULL;
    struct fiber_slab *head = atomic_load_explicit(&weft__rt.slabs, memory_order_relaxed);
    do
        s->next = head;
    /* Release: a walker that finds s (acquire load of the head) sees its
     * blocks initialized. Failure relaxed: we only retry. */
    while (!atomic_compare_exchange_weak_explicit(&weft__rt.slabs, &head, s,
                                                  memory_order_release,
                                                  memory_order_relaxed));
    return &s->f[0];
}

void weft__registry_walk(void (*fn)(struct weft_fiber *f, void *arg), void *arg)
{
    /* Acquire: pairs with the release CAS in slab_new. */
    for (struct fiber_slab *s = atomic_load_explicit(&weft__rt.slabs, memory_order_acquire);
         s; s = s->next)
        for (unsigned i = 0; i < WEFT__FIBER_BATCH; i++)
            /* Relaxed: see the registry in sched.h. */
            if (atomic_load_explicit(&s->f[i].rstate, memory_order_relaxed) != FS_FREE)
                fn(&s->f[i], arg);
}

/* w's thread. */
static struct weft_fiber *cache_get(struct worker *w)
{
    if (!w->fcache) {
        if (w->fspare) {
            w->fcache = w->fspare;
            w->fspare = NULL;
            w->nfcache = WEFT__FIBER_BATCH;
        } else if (atomic_load_explicit(&weft__rt.fpool_batches, memory_order_relaxed)) {
            /* Relaxed: a hint that saves the lock; re-checked under it. */
            pthread_mutex_lock(&weft__rt.fpool_lock);
            struct weft_fiber *b = weft__rt.fpool;
            if (b) {
                weft__rt.fpool = b->arg;
                atomic_store_explicit(&weft__rt.fpool_batches,
                                      atomic_load_explicit(&weft__rt.fpool_batches,
                                                           memory_order_relaxed) - 1,
                                      memory_order_relaxed);
                w->fcache = b;
                w->nfcache = WEFT__FIBER_BATCH;
            }
            pthread_mutex_unlock(&weft__rt.fpool_lock);
        }
        if (!w->fcache && (w->fcache = slab_new()) != NULL)
            w->nfcache = WEFT__FIBER_BATCH;
    }
    struct weft_fiber *f = w->fcache;
    if (f) {
        w->fcache = f->link;
        w->nfcache--;
        /* After a burst of spawns the free blocks are long out of cache,
         * and the list is a pointer chase: start loading the next block
         * now, so that the next spawn's miss overlaps this one's work. */
        if (w->fcache)
            __builtin_prefetch(w->fcache, 1);
    }
    return f;
}

/* w's thread. */
static void cache_put(struct worker *w, struct weft_fiber *f)
{
    if (w->nfcache == WEFT__FIBER_BATCH) {
        if (w->fspare) {
            struct weft_fiber *b = w->fspare;
            pthread_mutex_lock(&weft__rt.fpool_lock);
            b->arg = weft__rt.fpool;
            weft__rt.fpool = b;
            /* Relaxed: with fpool_lock held; see cache_get. */
            atomic_store_explicit(&weft__rt.fpool_batches,
                                  atomic_load_explicit(&weft__rt.fpool_batches,
                                                       memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            pthread_mutex_unlock(&weft__rt.fpool_lock);
        }
        w->fspare = w->fcache;
        w->fcache = NULL;
        w->nfcache = 0;
    }
    f->link = w->fcache;
    w->fcache = f;
    w->nfcache++;
}

/* A block for a plain thread. Any thread. */
static struct weft_fiber *loose_get(void)
{
    pthread_mutex_lock(&weft__rt.fpool_lock);
    struct weft_fiber *f = weft__rt.floose;
    if (!f && (f = slab_new()) != NULL)
        weft__rt.floose = f;
    if (f)
        weft__rt.floose = f->link;
    pthread_mutex_unlock(&weft__rt.fpool_lock);
    return f;
}

/* A block freed by a plain thread. Any thread. */
static void loose_put(struct weft_fiber *f)
{
    pthread_mutex_lock(&weft__rt.fpool_lock);
    f->link = weft__rt.floose;
    weft__rt.floose = f;
    pthread_mutex_unlock(&weft__rt.fpool_lock);
}

void weft__fiber_cache_release(struct worker *w)
{
    /* The blocks belong to the slabs, freed by weft__fiber_pool_release. */
    w->fcache = w->fspare = NULL;
    w->nfcache = 0;
}

void weft__fiber_pool_release(void)
{
    pthread_mutex_lock(&weft__rt.report_lock);
    /* Relaxed: no worker runs any more (they were joined). */
    struct fiber_slab *s = atomic_exchange_explicit(&weft__rt.slabs, NULL, memory_order_relaxed);
    while (s) {
        struct fiber_slab *next = s->next;
        for (unsigned i = 0; i < WEFT__FIBER_BATCH; i++)
            if (s->f[i].name)
                weft__free(s->f[i].name, WEFT__FIBER_NAME);
        weft__aligned_free(s, WEFT__CACHELINE, sizeof *s);
        s = next;
    }
    weft__rt.fpool = NULL;
    weft__rt.floose = NULL;
    atomic_store_explicit(&weft__rt.fpool_batches, 0, memory_order_relaxed);
    pthread_mutex_unlock(&weft__rt.report_lock);
}

struct weft_fiber *weft__fiber_new(struct worker *w, const weft_spawn_opts *o,
                                   weft_fn fn, void *arg)
{
    struct weft_fiber *f = w ? cache_get(w) : loose_get();
    if (!f)
        return NULL;
    f->ctx.stack = NULL; /* not started: no stack yet */
    f->id = new_id(w);
    f->link = NULL;
    f->fn = fn;
    f->arg = arg;
    f->stack_kib = (uint32_t)((o->stack_size + 1023) / 1024);
    /* Relaxed: the block is not shared yet; the run queue's release
     * publishes these to whoever runs or joins the fiber. */
    atomic_store_explicit(&f->join, o->detached ? JOIN_DETACHED : JOIN_RUNNING,
                          memory_order_relaxed);
    atomic_store_explicit(&f->claimed, o->detached ? 1 : 0, memory_order_relaxed);
    f->spawn_pc = NULL;
    f->trace_gen = 0; /* its name is not in any trace yet */
    f->wait_hist = 0;
    atomic_store_explicit(&f->wait, WAIT_NONE, memory_order_relaxed);
    atomic_store_explicit(&f->worker, UINT16_MAX, memory_order_relaxed);
    weft__fstate_set(f, FS_RUNNABLE, weft__clock_ms(w));
    if (o->name && set_name(f, o->name) != 0) {
        weft__fiber_free(f);
        return NULL;
    }
    return f;
}

/* weft__fiber_free for a caller that knows its worker w (NULL: none).
 * The calling thread (w's). */
static void fiber_free_on(struct worker *w, struct weft_fiber *f)
{
    if (__builtin_expect(f->name != NULL, 0)) {
        char *name = f->name;
        f->name = NULL;
        /* Relaxed: after the name pointer is cleared, so a registry
         * reader that still sees the fiber reads either the name or
         * NULL (it copies names fault-tolerantly; see dump). */
        atomic_store_explicit(&f->rstate, FS_FREE, memory_order_relaxed);
        weft__free(name, WEFT__FIBER_NAME);
    } else {
        atomic_store_explicit(&f->rstate, FS_FREE, memory_order_relaxed);
    }
    if (w)
        cache_put(w, f);
    else
        loose_put(f);
}

void weft__fiber_free(struct weft_fiber *f)
{
    fiber_free_on(weft__worker_self(), f);
}

/* ---- plain threads and the end of a run ---------------------------------- */

/*
 * A plain thread is about to touch control blocks (join, detach, spawn):
 * hold the run, so that weft_run does not free the slabs meanwhile. 0, or
 * -1 if no run is going on (none started, or it is ending: its blocks are
 * gone or about to be). Release with weft__foreign_leave. Dekker's
 * pattern with the end of weft_run (runtime.c): our seq_cst add, then a
 * seq_cst load of the state; weft_run's seq_cst store of RT_STOPPING, a
 * seq_cst fence, then its load of the count (weft__foreign_quiesce):
 * either we see the run stopping, or weft_run waits for us. Any thread
 * that is not a worker.
 */
static int run_hold(void)
{
    atomic_fetch_add_explicit(&weft__rt.foreign_wakers, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&weft__rt.state, memory_order_seq_cst) == RT_RUNNING)
        return 0;
    weft__foreign_leave();
    return -1;
}

/* ---- spawning ------------------------------------------------------------ */

/* spawn from a plain thread: the block comes from the run's slabs, so
 * the run is held meanwhile; the final word on whether the run still
 * takes fibers is weft__submit_foreign's, under the queue lock. */
static weft_fiber *spawn_foreign(const weft_spawn_opts *o, weft_fn fn, void *arg, void *pc)
{
    if (run_hold() != 0) {
        errno = EPERM;
        return NULL;
    }
    struct weft_fiber *f = NULL;
    int err = 0;
    /* Relaxed: a flag read on its own (see start_fiber in sched.c). */
    if (atomic_load_explicit(&weft__rt.stack_starved, memory_order_relaxed))
        err = EAGAIN;
    else if (!(f = weft__fiber_new(NULL, o, fn, arg)))
        err = ENOMEM;
    if (f) {
        f->spawn_pc = pc;
        if (weft__submit_foreign(f) != 0) {
            weft__fiber_free(f);
            f = NULL;
            err = EPERM;
        }
    }
    weft__foreign_leave();
    if (!f)
        errno = err;
    return f;
}

/* weft_spawn_ex, with the caller's return address for the registry. */
static weft_fiber *spawn(const weft_spawn_opts *o, weft_fn fn, void *arg, void *pc)
{
    static const weft_spawn_opts defaults = { NULL, 0, 0 };
    if (!o)
        o = &defaults;
    if (!fn || o->stack_size > WEFT__MAX_STACK) {
        errno = EINVAL;
        return NULL;
    }
    struct worker *w = weft__worker_self();
    if (!w)
        return spawn_foreign(o, fn, arg, pc);
    /* Relaxed: a flag read on its own (see start_fiber in sched.c). */
    if (atomic_load_explicit(&weft__rt.stack_starved, memory_order_relaxed)) {
        errno = EAGAIN;
        return NULL;
    }
    struct weft_fiber *f = weft__fiber_new(w, o, fn, arg);
    if (!f) {
        errno = ENOMEM;
        return NULL;
    }
    f->spawn_pc = pc;
    /* Relaxed: owner-only counter; the release store of the child's exit
     * (weft__fiber_finish) comes after this in happens-before. */
    atomic_store_explicit(&w->nspawned,
                          atomic_load_explicit(&w->nspawned, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    weft__ready_local(w, f);
    return f;
}

weft_fiber *weft_spawn_ex(const weft_spawn_opts *o, weft_fn fn, void *arg)
{
    return spawn(o, fn, arg, __builtin_return_address(0));
}

weft_fiber *weft_spawn(weft_fn fn, void *arg)
{
    return spawn(NULL, fn, arg, __builtin_return_address(0));
}

/* ---- the end of a fiber ---------------------------------------------- */

static void thread_waiter_wake(struct thread_waiter *tw)
{
    /* Release: publishes the result and DONE to the waiting thread; pairs
     * with the acquire load in thread_join. */
    atomic_store_explicit(&tw->done, 1, memory_order_release);
    /* The waiter may already have seen `done` and returned; waking a
     * futex word that is gone is harmless (at most a spurious wake-up of
     * whatever waits there next, which every futex user tolerates). */
    weft__futex_wake(&tw->done);
}

static int is_fiber_joiner(uintptr_t j)
{
    return j != JOIN_RUNNING && j != JOIN_DONE && j != JOIN_DETACHED && !(j & JOIN_THREAD);
}

/*
 * Handing the CPU straight to the joiner when a child exits keeps
 * fork-join programs depth-first: otherwise the exiting child would pick
 * the next queued fiber (starting a new subtree, with a new stack) while
 * its parent sits readied in runnext, to be pushed down the deque by the
 * next spawn. With the handoff, fib(30) runs with a few dozen live stacks
 * instead of thousands.
 */
struct weft_fiber *weft__fiber_claim_joiner(struct weft_fiber *f)
{
    /* Acquire: pairs with join_commit's release CAS; the joiner's
     * context was saved before its commit ran. */
    uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
    if (!is_fiber_joiner(j))
        return NULL;
    /* A plain store, no exchange: once the word holds a parked joiner,
     * nobody but this finisher writes it (the join was claimed, so no
     * detach or second join gets that far, and the joiner runs only
     * when we switch to it). Release: publishes the result (in arg) to
     * the joiner; pairs with its acquire load in weft_join. DONE before
     * our last switch is safe for the same reason. */
    atomic_store_explicit(&f->join, JOIN_DONE, memory_order_release);
    return (struct weft_fiber *)j;
}

void weft__fiber_finish(struct worker *w, struct weft_fiber *f, int joiner_claimed)
{
    /* Before the join word says DONE: from then on the joiner may
     * recycle the block. */
    weft__fstate_set(f, FS_DONE, weft__clock_ms(w));
    weft__ctx_destroy(&f->ctx);
    weft__stack_put(f->ctx.stack);
    f->ctx.stack = NULL;
    weft__chaos(CHAOS_JOIN);
    if (!joiner_claimed) {
        /* acq_rel: release publishes the result (in arg) to the joiner;
         * acquire pairs with the joiner's release CAS, so we see the
         * joiner's saved state before readying it. */
        uintptr_t old = atomic_exchange_explicit(&f->join, JOIN_DONE, memory_order_acq_rel);
        if (old == JOIN_DETACHED)
            fiber_free_on(w, f);
        else if (old & JOIN_THREAD)
            thread_waiter_wake((struct thread_waiter *)(old & ~JOIN_THREAD));
        else if (old != JOIN_RUNNING)
            weft__ready_local(w, (struct weft_fiber *)old);
    }
    /* Release: pairs with the acquire in quiescent() (runtime.c); counted
     * last, so that a worker deciding the runtime is over cannot race
     * with anything above. */
    atomic_store_explicit(&w->nexited,
                          atomic_load_explicit(&w->nexited, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* ---- joining and detaching -------------------------------------------- */

/* Park commit for weft_join: publish self as f's joiner. */
static int join_commit(struct weft_fiber *self, void *arg)
{
    struct weft_fiber *f = arg;
    uintptr_t expect = JOIN_RUNNING;
    weft__chaos(CHAOS_JOIN);
    /* Release: publishes self (its saved context) to the finisher, which
     * acquires it in its exchange. Failure acquire: f is DONE, and we
     * will read its result. */
    return atomic_compare_exchange_strong_explicit(&f->join, &expect, (uintptr_t)self,
                                                   memory_order_release,
                                                   memory_order_acquire);
}

static void thread_join(struct weft_fiber *f)
{
    struct thread_waiter tw;
    atomic_init(&tw.done, 0);
    uintptr_t expect = JOIN_RUNNING;
    /* Release: publishes tw to the finisher. Failure acquire: f is DONE. */
    if (!atomic_compare_exchange_strong_explicit(&f->join, &expect,
                                                 (uintptr_t)&tw | JOIN_THREAD,
                                                 memory_order_release,
                                                 memory_order_acquire))
        return;
    /* Acquire: pairs with the release store in thread_waiter_wake. */
    while (!atomic_load_explicit(&tw.done, memory_order_acquire))
        weft__futex_wait(&tw.done, 0, -1);
}

/* weft_join, for a caller that is worker w running self (NULL, NULL: a
 * plain thread holding the run). Inline: the fiber's join is the hot
 * path of fork-join code. */
static inline __attribute__((always_inline))
int join(struct worker *w, struct weft_fiber *self, struct weft_fiber *f, void **result)
{
    if (f == self)
        return -EDEADLK;
    /* Relaxed: only decides who gets to join; the join word carries the
     * data. */
    if (atomic_exchange_explicit(&f->claimed, 1, memory_order_relaxed))
        return -EINVAL;
    /* Acquire: pairs with the exchange in weft__fiber_finish (or the
     * store in weft__fiber_claim_joiner). */
    if (atomic_load_explicit(&f->join, memory_order_acquire) != JOIN_DONE) {
        if (self) {
            weft__wait_reason(WAIT_JOIN, (uintptr_t)f->id);
            /* f not started and next in line here: run it in place. */
            if (!weft__join_inline(w, self, f))
                weft__park(join_commit, f);
            w = weft__worker_self(); /* we may have moved */
        } else {
            thread_join(f);
        }
        /* Acquire: as above; we were readied after DONE was stored. */
        (void)atomic_load_explicit(&f->join, memory_order_acquire);
    }
    if (result)
        *result = f->arg; /* the result, once the fiber has finished */
    fiber_free_on(w, f);
    return 0;
}

/* weft_join on a plain thread: the block must outlive our last touch
 * of it, so the run is held meanwhile. */
static __attribute__((noinline)) int join_foreign(struct weft_fiber *f, void **result)
{
    if (run_hold() != 0)
        return -ESRCH;
    int err = join(NULL, NULL, f, result);
    weft__foreign_leave();
    return err;
}

int weft_join(weft_fiber *f, void **result)
{
    if (!f)
        return -EINVAL;
    struct worker *w = weft__worker_self();
    if (__builtin_expect(!w, 0))
        return join_foreign(f, result);
    return join(w, w->current, f, result);
}

/* weft_detach, for a worker or a plain thread holding the run. */
static int detach(struct weft_fiber *f)
{
    /* Relaxed: as in weft_join. */
    if (atomic_exchange_explicit(&f->claimed, 1, memory_order_relaxed))
        return -EINVAL;
    uintptr_t expect = JOIN_RUNNING;
    /* Release/acquire: pairs with the exchange in weft__fiber_finish;
     * whichever comes second frees the block. */
    if (atomic_compare_exchange_strong_explicit(&f->join, &expect, JOIN_DETACHED,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return 0;
    weft__fiber_free(f); /* already finished */
    return 0;
}

int weft_detach(weft_fiber *f)
{
    if (!f)
        return -EINVAL;
    if (weft__worker_self())
        return detach(f);
    /* A plain thread: as in weft_join. */
    if (run_hold() != 0)
        return -ESRCH;
    int err = detach(f);
    weft__foreign_leave();
    return err;
}

/* ---- the calling fiber ------------------------------------------------ */

weft_fiber *weft_self(void)
{
    struct worker *w = weft__worker_self();
    return w ? w->current : NULL;
}

uint64_t weft_fiber_id(const weft_fiber *f)
{
    return f ? f->id : 0;
}

int weft_set_name(const char *name)
{
    struct weft_fiber *self = weft_self();
    if (!self)
        return -EPERM;
    int err = set_name(self, name);
    self->trace_gen = 0; /* a running trace records the new name */
    return err;
}

/* ---- sleeping ------------------------------------------------------------ */

/* A sleeping fiber's timer, on its own stack while it sleeps. */
struct sleeper {
    struct weft__timer t;
    struct weft_fiber *f;
    int64_t            deadline;
    int                err;
};

static void sleep_fire(struct weft__timer *t)
{
    /* The timer is out of the heap; once readied, the fiber (and with
     * it the sleeper) may run anywhere, so f is read first. */
    weft__ready(weft__container_of(t, struct sleeper, t)->f);
}

/* Park commit for weft_sleep: arm the timer on the worker the fiber just
 * left (arming before the switch could fire it while still running). */
static int sleep_commit(struct weft_fiber *self, void *arg)
{
    (void)self;
    struct sleeper *sl = arg;
    struct worker *w = weft__worker_self();
    if (timer_add(&w->timers, &sl->t, sl->deadline) != 0) {
        sl->err = -ENOMEM;
        return 0;
    }
    return 1;
}

int weft_sleep(int64_t ns)
{
    if (ns < 0)
        return -EINVAL;
    struct weft_fiber *self = weft_self();
    if (!self) {
        struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        return 0;
    }
    if (ns == 0) {
        weft_yield();
        return 0;
    }
    int64_t now = weft__now();
    struct sleeper sl = { .f = self, .deadline = ns > INT64_MAX - now ? INT64_MAX : now + ns };
    timer_init(&sl.t, sleep_fire);
    weft__wait_reason(WAIT_SLEEP, (uintptr_t)sl.deadline);
    weft__park(sleep_commit, &sl);
    return sl.err;
}

/* ---- names of wait reasons, crash reports -------------------------------- */

static const char *const wait_names[WAIT__COUNT] = {
    [WAIT_NONE] = "unknown",        [WAIT_JOIN] = "join",
    [WAIT_SLEEP] = "sleep",         [WAIT_MUTEX] = "mutex",
    [WAIT_COND] = "cond",           [WAIT_WG] = "wg",
    [WAIT_SEM] = "sem",             [WAIT_CHAN_SEND] = "chan send",
    [WAIT_CHAN_RECV] = "chan recv", [WAIT_SELECT] = "select",
    [WAIT_FD_READ] = "fd read",     [WAIT_FD_WRITE] = "fd write",
    [WAIT_FD_RW] = "fd read+write", [WAIT_BLOCKING] = "blocking call",
    [WAIT_MIGRATE] = "migrate",
};

const char *weft__wait_name(unsigned why)
{
    return why < WAIT__COUNT && wait_names[why] ? wait_names[why] : "unknown";
}

/* weft__ctx_crash_hook for fibers: the last wait, the worker, the spawn
 * site. The fiber is running on this thread, so its fields are ours to
 * read. Async-signal-safe. */
static void crash_hook(const weft__ctx *c, int fd)
{
    if (c->owner_kind != WEFT__OWNER_FIBER)
        return;
    const struct weft_fiber *f = weft__container_of(c, const struct weft_fiber, ctx);
    char buf[256];
    struct weft__fmt o = WEFT__FMT_INIT(buf);
    /* Relaxed: registry words (sched.h); this thread wrote the last ones. */
    unsigned why = atomic_load_explicit(&f->wait, memory_order_relaxed);
    weft__fmt_str(&o, "weft: on worker ");
    weft__fmt_u64(&o, atomic_load_explicit(&f->worker, memory_order_relaxed));
    weft__fmt_str(&o, "; last wait: ");
    if (why == WAIT_NONE) {
        weft__fmt_str(&o, "none (it never blocked)");
    } else {
        weft__fmt_str(&o, weft__wait_name(why));
        uintptr_t obj = atomic_load_explicit(&f->wait_obj, memory_order_relaxed);
        if (why == WAIT_JOIN) {
            weft__fmt_str(&o, " fiber ");
            weft__fmt_u64(&o, obj);
        } else if (why == WAIT_FD_READ || why == WAIT_FD_WRITE || why == WAIT_FD_RW) {
            weft__fmt_str(&o, " fd ");
            weft__fmt_u64(&o, obj);
        } else if (why != WAIT_SLEEP) {
            weft__fmt_str(&o, " 0x");
            weft__fmt_hex(&o, obj);
        }
    }
    if (f->wait_hist >> 8) {
        weft__fmt_str(&o, "; waits before it, newest first:");
        for (uint64_t h = f->wait_hist >> 8; h; h >>= 8) {
            weft__fmt_str(&o, " ");
            weft__fmt_str(&o, weft__wait_name((unsigned)(h & 0xff)));
        }
    }
    weft__fmt_str(&o, "; spawned from 0x");
    weft__fmt_hex(&o, (uint64_t)(uintptr_t)f->spawn_pc);
    weft__fmt_str(&o, "\n");
    weft__fmt_write(&o, fd);
}

void weft__fiber_crash_hook_install(void)
{
    /* Relaxed: see weft__ctx_crash_hook in ctx.h. */
    atomic_store_explicit(&weft__ctx_crash_hook, crash_hook, memory_order_relaxed);
}
