/*
 * The blocking pool: weft_blocking, and through it the regular-file I/O
 * of fd.c and the name lookups of net.c.
 *
 * A fiber that must make a call the netpoller cannot wait for (a disk
 * read, getaddrinfo, a library that blocks) hands it to a pool thread and
 * parks; its worker runs other fibers meanwhile. The pool threads are
 * plain threads: weft calls made by the function they run take their
 * plain-thread paths.
 *
 * The hand-over, per call (the request lives on the calling fiber's
 * stack, which stays put while it is parked):
 *   1. The fiber fills in the request (state PENDING) and submits it
 *      under the pool lock: to an idle thread directly, else to a new
 *      thread while the pool is below its cap, else to the FIFO queue.
 *   2. It parks. The park commit (on the worker, after its context is
 *      saved) CASes PENDING -> the fiber's address. If the CAS fails the
 *      call is finished already and the park is cancelled.
 *   3. The pool thread runs fn, stores the result and exchanges the state
 *      to DONE. If the old value is a fiber, it readies that fiber (from
 *      a plain thread: the global queue). It never touches the request
 *      after the exchange: with PENDING the fiber may already have read
 *      DONE and returned.
 * Exactly one of the two CASes that can move the state away from PENDING
 * wins, so the fiber is readied once or not parked at all; no lock is
 * held across the switch.
 *
 * Last touch. The request is on the fiber's stack, so it is gone as soon
 * as the fiber may run again. The step that lets the fiber proceed is the
 * pool thread's exchange to DONE in run_request: if the fiber has not
 * committed its park yet, its commit's CAS then fails and it returns at
 * once; if it has, the exchange hands the pool thread its address, and
 * weft__ready makes it runnable. So run_request writes the result BEFORE
 * the exchange, and after it touches only the fiber's control block, in
 * weft__ready (the fiber cannot finish, and its block cannot be reused,
 * before it runs); the pool thread then goes back to the pool's lock and
 * its own variables, never to the request. On the fiber's side the
 * submit is the hand-over: the request is the pool's from the unlock in
 * submit until the exchange, and the fiber reads it again (state, result)
 * only after its park returns. arg and what fn reaches through it are
 * fn's to touch while it runs, which ends before the exchange.
 *
 * Growth, cap, shrink. Threads are created only when a call finds no idle
 * thread, up to a cap (WEFT_BLOCKING_MAX, default 64, read when the run's
 * first call starts the pool); beyond it calls wait in FIFO order. Idle
 * threads wait on their own condition variable in a LIFO list: the most
 * recently idle thread gets the next call, so the surplus stays idle and
 * exits after WEFT_BLOCKING_IDLE_MS (default 10 s). A thread that
 * finishes a call takes the queue's head before it goes idle, so the
 * queue is non-empty only while no thread is idle: nothing waits while a
 * thread sleeps.
 *
 * No thread at all. If pthread_create fails while the pool has no
 * thread, nobody would ever run a queued call: the fiber runs fn itself,
 * blocking its worker (and fn then runs in the fiber, so weft calls in
 * it park the fiber instead of blocking a thread). With threads alive,
 * the call is queued for them.
 *
 * Joining. A thread that exits (idle, or the runtime stopping) joins the
 * one that exited before it and leaves itself to be joined by the next,
 * so at most one exited thread is ever unjoined; weft__blocking_stop
 * waits for the last thread to go and joins it, which joins them all.
 * That leaves nothing behind for the leak checkers and lets weft_run be
 * called again.
 *
 * Rejected: one shared condition variable for the idle threads. A
 * submitter cannot tell whether the thread it signalled has woken yet,
 * so a burst of calls either creates threads although some are idle, or
 * queues calls behind a thread that is not coming; a direct hand-off to
 * a named idle thread has neither problem. A lock-free queue: a call here
 * costs a system call or a disk access anyway, and the lock is held for
 * a few list operations.
 */
#define _GNU_SOURCE
#include "io/blocking.h"

#include <weft.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "sched/sched.h"

#define DEFAULT_CAP      64
#define MAX_CAP          4096
#define DEFAULT_IDLE_MS  10000
#define MAX_IDLE_MS      INT32_MAX   /* ~24 days; beyond is a bad value */

/* A request's state word: REQ_PENDING, REQ_DONE, or the address of the
 * fiber parked on it (control blocks are aligned, never 0 or 1). */
enum { REQ_PENDING = 0, REQ_DONE = 1 };

/* One call, on the calling fiber's stack. fn and arg are written before
 * the submit (published by the pool lock); result by the pool thread
 * before its exchange of state; next belongs to the queue. */
struct blocking_req {
    weft_fn              fn;
    void                *arg;
    void                *result;
    struct blocking_req *next;
    _Atomic uintptr_t    state;
};

/* An idle pool thread, on that thread's stack. All fields with pool.lock
 * held. */
struct pool_thread {
    pthread_cond_t       wake;        /* CLOCK_MONOTONIC: the idle timeout */
    struct blocking_req *work;        /* handed over by a submitter        */
    struct pool_thread  *next, *prev; /* the idle list                     */
};

/* The pool. Every field with lock held. */
static struct {
    pthread_mutex_t      lock;
    pthread_cond_t       gone;        /* the last thread exited (stop waits) */
    struct blocking_req *head, *tail; /* calls beyond the cap, FIFO          */
    struct pool_thread  *idle;        /* idle threads, most recent first     */
    unsigned             nthreads;    /* alive or being created              */
    unsigned             cap;
    int64_t              idle_ns;
    int                  started, stopping;
    int                  have_zombie; /* an exited thread not joined yet:    */
    pthread_t            zombie;      /*   it                                */
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .gone = PTHREAD_COND_INITIALIZER,
};

/* Calls handed to the pool since the process started; any thread. */
static _Atomic uint64_t ncalls;
/* Mirrors of pool.nthreads and pool.cap (0 while stopped) for readers
 * without the lock; written with it held. */
static _Atomic unsigned nalive;
static _Atomic unsigned cap_now;

uint64_t weft__blocking_calls(void)
{
    /* Relaxed: a statistic; no data hangs off it. */
    return atomic_load_explicit(&ncalls, memory_order_relaxed);
}

unsigned weft__blocking_threads(void)
{
    /* Relaxed: a snapshot of a value written under the pool lock. */
    return atomic_load_explicit(&nalive, memory_order_relaxed);
}

unsigned weft__blocking_cap(void)
{
    /* Relaxed: as above. */
    return atomic_load_explicit(&cap_now, memory_order_relaxed);
}

/* pool.nthreads changed. With pool.lock held. */
static void threads_changed(void)
{
    /* Relaxed: the mirror is only ever read as a snapshot. */
    atomic_store_explicit(&nalive, pool.nthreads, memory_order_relaxed);
}

/* ---- configuration ---------------------------------------------------- */

/* The whole of getenv(name) as a decimal in [lo, hi], or def. Any thread
 * (nobody calls setenv while the runtime runs). */
static long long env_number(const char *name, long long lo, long long hi, long long def)
{
    const char *s = getenv(name);
    if (!s || *s < '0' || *s > '9')
        return def;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return def;
    return v;
}

/* The run's first call. With pool.lock held. */
static void pool_start(void)
{
    pool.cap = (unsigned)env_number("WEFT_BLOCKING_MAX", 1, MAX_CAP, DEFAULT_CAP);
    pool.idle_ns = env_number("WEFT_BLOCKING_IDLE_MS", 0, MAX_IDLE_MS, DEFAULT_IDLE_MS) *
                   1000000;
    pool.started = 1;
    /* Relaxed: a snapshot for weft__blocking_cap. */
    atomic_store_explicit(&cap_now, pool.cap, memory_order_relaxed);
}

/* ---- lists ------------------------------------------------------------ */

/* With pool.lock held, all four. */
static void queue_push(struct blocking_req *r)
{
    r->next = NULL;
    if (pool.tail)
        pool.tail->next = r;
    else
        pool.head = r;
    pool.tail = r;
}

static struct blocking_req *queue_pop(void)
{
    struct blocking_req *r = pool.head;
    if (r && !(pool.head = r->next))
        pool.tail = NULL;
    return r;
}

static void idle_push(struct pool_thread *t)
{
    t->prev = NULL;
    t->next = pool.idle;
    if (pool.idle)
        pool.idle->prev = t;
    pool.idle = t;
}

static void idle_remove(struct pool_thread *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        pool.idle = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
}

/* Give r to the most recently idle thread. 0, or -1 if none is idle.
 * With pool.lock held. */
static int hand_to_idle(struct blocking_req *r)
{
    struct pool_thread *t = pool.idle;
    if (!t)
        return -1;
    idle_remove(t);
    t->work = r;
    pthread_cond_signal(&t->wake);
    return 0;
}

/* ---- pool threads ------------------------------------------------------ */

/* Run r and wake its fiber. A pool thread. */
static void run_request(struct blocking_req *r)
{
    r->result = r->fn(r->arg);
    /* acq_rel. Release: publishes result to the fiber, which acquires it
     * in the commit's failed CAS or its load after the park. Acquire:
     * pairs with the commit's release CAS, so the fiber's saved context
     * is visible before we ready it. r may be gone after this. */
    uintptr_t old = atomic_exchange_explicit(&r->state, REQ_DONE, memory_order_acq_rel);
    if (old != REQ_PENDING)
        weft__ready((struct weft_fiber *)old);
}

/* Wait idle on self until a call is handed over (returned), the idle
 * time passes or the pool stops (NULL: exit). With pool.lock held,
 * which the wait drops. A pool thread. */
static struct blocking_req *idle_wait(struct pool_thread *self)
{
    struct timespec ts;
    int64_t deadline = weft__now();
    deadline = pool.idle_ns > INT64_MAX - deadline ? INT64_MAX : deadline + pool.idle_ns;
    ts.tv_sec = (time_t)(deadline / 1000000000);
    ts.tv_nsec = (long)(deadline % 1000000000);
    self->work = NULL;
    idle_push(self);
    while (!self->work && !pool.stopping)
        if (pthread_cond_timedwait(&self->wake, &pool.lock, &ts) == ETIMEDOUT)
            break;
    struct blocking_req *r = self->work;
    if (!r)
        idle_remove(self); /* a submitter that took us would have set work */
    return r;
}

/* A pool thread: runs its first call (arg), then the queue's head or what
 * submitters hand it while idle, until the idle time passes or the pool
 * stops. */
static void *pool_thread_main(void *arg)
{
    struct blocking_req *r = arg;
    struct pool_thread self;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* weft__now's clock */
    pthread_cond_init(&self.wake, &ca);
    pthread_condattr_destroy(&ca);

    pthread_mutex_lock(&pool.lock);
    for (;;) {
        if (r) {
            pthread_mutex_unlock(&pool.lock);
            run_request(r);
            pthread_mutex_lock(&pool.lock);
        }
        if ((r = queue_pop()) != NULL)
            continue;
        if (pool.stopping || !(r = idle_wait(&self)))
            break;
    }
    pool.nthreads--;
    threads_changed();
    int join_prev = pool.have_zombie;
    pthread_t prev = pool.zombie;
    pool.zombie = pthread_self();
    pool.have_zombie = 1;
    if (pool.nthreads == 0)
        pthread_cond_broadcast(&pool.gone);
    pthread_mutex_unlock(&pool.lock);
    /* Nobody can signal self.wake any more: we left the idle list under
     * the lock, and every signal is sent with it held. */
    pthread_cond_destroy(&self.wake);
    if (join_prev)
        pthread_join(prev, NULL);
    return NULL;
}

/* Start a pool thread whose first call is r. 0 or a positive errno. The
 * new thread blocks the asynchronous signals, so that the process's
 * handlers never run on it (the faults stay deliverable). Any thread. */
static int spawn_thread(struct blocking_req *r)
{
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGSYS);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int e = pthread_create(&t, NULL, pool_thread_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e == 0)
        pthread_setname_np(t, "weft-blocking");
    return e;
}

/* ---- submitting ------------------------------------------------------- */

/* Hand r to the pool: 1, or 0 when no pool thread exists or can be made
 * (the caller runs it itself). A fiber; never parks. */
static int submit(struct blocking_req *r)
{
    int handed = 1;
    pthread_mutex_lock(&pool.lock);
    if (!pool.started)
        pool_start();
    if (hand_to_idle(r) == 0)
        goto out;
    if (pool.nthreads >= pool.cap) {
        queue_push(r);
        goto out;
    }
    pool.nthreads++; /* reserves the slot while we create the thread */
    threads_changed();
    pthread_mutex_unlock(&pool.lock);
    if (spawn_thread(r) == 0)
        return 1;
    pthread_mutex_lock(&pool.lock);
    pool.nthreads--;
    threads_changed();
    if (hand_to_idle(r) == 0)
        goto out;
    if (pool.nthreads > 0)
        queue_push(r); /* the others are busy: one takes it before it idles */
    else
        handed = 0;
out:
    pthread_mutex_unlock(&pool.lock);
    return handed;
}

/* Park commit: publish self as the request's waiter, unless the call has
 * finished already (then the park is cancelled). The worker the fiber
 * left. */
static int blocking_commit(struct weft_fiber *self, void *arg)
{
    struct blocking_req *r = arg;
    uintptr_t expect = REQ_PENDING;
    /* Release: publishes self (its saved context) to the pool thread's
     * exchange. Failure acquire: pairs with that exchange's release; the
     * result is visible to the fiber, which continues at once. */
    return atomic_compare_exchange_strong_explicit(&r->state, &expect, (uintptr_t)self,
                                                   memory_order_release,
                                                   memory_order_acquire);
}

void *weft_blocking(weft_fn fn, void *arg)
{
    if (!fn) {
        errno = EINVAL;
        return NULL;
    }
    struct worker *w = weft__worker_self();
    if (!w || !w->current)
        return fn(arg);
    struct blocking_req r = { .fn = fn, .arg = arg };
    atomic_init(&r.state, REQ_PENDING);
    if (!submit(&r))
        return fn(arg);
    /* Relaxed: a statistic. Counted by the caller, so that the count
     * includes this call once it returns. */
    atomic_fetch_add_explicit(&ncalls, 1, memory_order_relaxed);
    weft__wait_reason(WAIT_BLOCKING, (uintptr_t)fn);
    weft__park(blocking_commit, &r);
    /* Acquire: pairs with the pool thread's release exchange (the
     * ready's hand-over orders it too); the result is written. */
    (void)atomic_load_explicit(&r.state, memory_order_acquire);
    return r.result;
}

/* ---- stopping --------------------------------------------------------- */

void weft__blocking_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    for (struct pool_thread *t = pool.idle; t; t = t->next)
        pthread_cond_signal(&t->wake);
    while (pool.nthreads > 0)
        pthread_cond_wait(&pool.gone, &pool.lock);
    int join_last = pool.have_zombie;
    pthread_t last = pool.zombie;
    pool.have_zombie = 0;
    /* Every fiber has exited, so no call can be queued. */
    pool.head = pool.tail = NULL;
    pool.started = 0;
    pool.stopping = 0;
    /* Relaxed: a snapshot for weft__blocking_cap. */
    atomic_store_explicit(&cap_now, 0, memory_order_relaxed);
    pthread_mutex_unlock(&pool.lock);
    if (join_last)
        pthread_join(last, NULL);
}
