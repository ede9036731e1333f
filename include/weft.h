/*
 * weft: stackful fibers on every core.
 *
 * The one public header of libweft. Everything declared here is the API;
 * nothing else the library contains is. See the contract in the project's
 * documentation for the conventions, summarised here:
 *
 *  - Calls that return int return 0 (or a non-negative result) on success
 *    and a negative errno value on failure (-EINVAL, -ENOMEM, ...).
 *  - Calls that return a pointer return NULL and set errno on failure.
 *  - Times are nanoseconds.
 *
 * This header is C11 and C++ clean and includes only standard and POSIX
 * headers (<sys/socket.h>, <sys/types.h>, <sys/uio.h> for the I/O calls).
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <weft/version.h>

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_EXPORT __attribute__((visibility("default")))
#else
#define WEFT_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * weft_version - the library's version as "MAJOR.MINOR.PATCH".
 *
 * The string of the library actually loaded, which may be newer than the
 * WEFT_VERSION_* macros the caller was compiled with. Never NULL.
 */
WEFT_EXPORT const char *weft_version(void);

/* ===================================================================== */
/* Asymmetric coroutines                                                 */
/* ===================================================================== */

/*
 * Standalone stackful coroutines in the Lua / Python-generator style.
 * They need no runtime and work on any thread: create one, resume it with
 * a value, it yields a value back, and it finally returns a value.
 *
 * A coroutine may resume another one (nesting); the inner one yields back
 * to the outer. A suspended coroutine may be resumed from a different
 * thread than the one that resumed it before, one thread at a time.
 *
 * Each coroutine runs on its own stack (default 256 KiB, see
 * weft_coro_new) with a guard region below it; overflowing it prints
 *   weft: stack overflow in coroutine <id> '<name>' (stack <size> bytes)
 * and aborts the process rather than corrupting memory.
 */
typedef struct weft_coro weft_coro;

/* The body of a coroutine: co is the coroutine itself (for
 * weft_coro_yield), arg is the `in` of the first weft_coro_resume. The
 * value it returns is handed to that last resume's *out. */
typedef void *(*weft_coro_fn)(weft_coro *co, void *arg);

/* States, as weft_coro_status reports them. */
enum {
    WEFT_CORO_CREATED,   /* made, never resumed                          */
    WEFT_CORO_RUNNING,   /* running, or resuming another coroutine       */
    WEFT_CORO_SUSPENDED, /* stopped in weft_coro_yield                   */
    WEFT_CORO_DEAD       /* its function returned                        */
};

/*
 * weft_coro_new - make a coroutine that will run fn.
 *
 * stack_size: stack in bytes; up to 1 MiB it is rounded up to a power of
 * two (at least 16 KiB), above that to whole pages; 0 takes the default
 * (256 KiB). The stack is reserved, not
 * committed: memory is used only as deep as the coroutine goes. Nothing
 * runs until the first weft_coro_resume.
 *
 * Returns the coroutine in state WEFT_CORO_CREATED, or NULL with errno:
 * EINVAL (fn is NULL, or stack_size over 1 GiB), ENOMEM.
 */
WEFT_EXPORT weft_coro *weft_coro_new(weft_coro_fn fn, size_t stack_size);

/*
 * weft_coro_resume - run co until it yields or returns.
 *
 * The first resume calls fn(co, in); later ones make the pending
 * weft_coro_yield return `in`. When co yields, *out (if out is not NULL)
 * receives the yielded value and 1 is returned; when co's function
 * returns, *out receives its return value, co becomes WEFT_CORO_DEAD, its
 * stack is released, and 0 is returned.
 *
 * Errors: -EINVAL if co is NULL, running (it, or a coroutine it resumed,
 * is calling this), or dead. co is left unchanged.
 */
WEFT_EXPORT int weft_coro_resume(weft_coro *co, void *in, void **out);

/*
 * weft_coro_yield - suspend the calling coroutine co, handing `out` to
 * the weft_coro_resume that ran it.
 *
 * Returns the `in` of the resume that continues co. Must be called from
 * co itself; otherwise (co is NULL, not running, or another coroutine is
 * the one running on this thread) it returns NULL at once with errno set
 * to EINVAL and nothing is switched.
 */
WEFT_EXPORT void *weft_coro_yield(weft_coro *co, void *out);

/* weft_coro_status - one of WEFT_CORO_*; -EINVAL for NULL. */
WEFT_EXPORT int weft_coro_status(const weft_coro *co);

/*
 * weft_coro_free - release co and its stack.
 *
 * Allowed in every state but RUNNING. A suspended coroutine is discarded
 * where it stands: its frames are not unwound, so memory it allocated and
 * still holds is the caller's to account for. Freeing a running coroutine
 * does nothing and sets errno to EBUSY. NULL is ignored.
 */
WEFT_EXPORT void weft_coro_free(weft_coro *co);

/* Extensions beyond the contract. */

/* weft_coro_id - the coroutine's id: unique in the process, never reused,
 * as printed in overflow reports. 0 for NULL. */
WEFT_EXPORT uint64_t weft_coro_id(const weft_coro *co);

/* weft_coro_set_name - name co for reports (copied, truncated to 31
 * bytes; NULL clears it). 0, or -EINVAL for a NULL co. */
WEFT_EXPORT int weft_coro_set_name(weft_coro *co, const char *name);

/* ===================================================================== */
/* Runtime                                                               */
/* ===================================================================== */

/*
 * The M:N runtime: fibers (below) run on a set of worker threads, by
 * default one per physical core this process may use, and move between
 * them by work stealing. A program hands its main function to weft_run,
 * which returns once that function and every fiber it (transitively)
 * started have finished.
 *
 * Always initialise a weft_config with weft_config_init, then change
 * fields: more fields may be appended in later versions.
 */
typedef struct weft_config {
    unsigned workers;     /* 0: one per physical core, discovered with hwloc   */
    size_t   stack_size;  /* default fiber stack size in bytes (0: default)     */
    int      pin;         /* 1: pin each worker to its core (default 1)         */
    /* more fields may follow; always start from weft_config_init() */
} weft_config;

/*
 * weft_config_init - fill cfg with the defaults, then apply the
 * environment.
 *
 * Defaults: workers 0 (one per usable physical core), stack_size 0 (256
 * KiB), pin 1. Environment overrides, read on every call:
 *   WEFT_WORKERS=N      worker count (0: the default)
 *   WEFT_STACK_SIZE=N   default fiber stack in bytes; k, m, g suffixes
 *   WEFT_PIN=0|1        pin workers to cores
 * A value that does not parse as a number is ignored; one that parses but
 * is out of range is kept, so that weft_run rejects it with -EINVAL.
 * NULL is ignored. Any thread.
 */
WEFT_EXPORT void weft_config_init(weft_config *cfg);

/*
 * weft_run - run main_fn(arg) as the first fiber on a fresh set of worker
 * threads, and return when it and every other fiber have finished.
 *
 * cfg: NULL means weft_config_init's defaults. With workers == 0 the
 * count is the number of physical cores (not hardware threads) among the
 * CPUs the calling thread may run on (its affinity mask and the cgroup
 * cpuset), capped by the cgroup v2 CPU quota (cpu.max, rounded up) when
 * one is set. More workers than cores is allowed; with pin == 1 they are
 * pinned round-robin, one core each. stack_size becomes the default stack
 * of fibers and coroutines during the run (at least 16 KiB, rounded up as
 * weft_coro_new describes) and is restored afterwards.
 *
 * The calling thread does not become a worker: it waits, and its
 * affinity and state are left as they were. Fibers may still be spawned
 * by plain threads while the runtime runs. Set WEFT_DEBUG_MIGRATE=1 in the
 * environment to have every yield and wake-up move the fiber to another
 * worker, with two workers or more (a debugging aid that flushes out
 * thread-local assumptions).
 *
 * Returns 0 after a complete run, or a negative errno without running
 * anything: -EINVAL (main_fn NULL, workers > 4096, pin not 0 or 1,
 * stack_size over 1 GiB), -EBUSY (a runtime is already running in this
 * process, including a call from one of its fibers), -ENOMEM, -EAGAIN or
 * another errno if threads, pollers or memory cannot be had. May be
 * called again after it returns. Any thread.
 */
WEFT_EXPORT int weft_run(const weft_config *cfg, void (*main_fn)(void *arg), void *arg);

/* weft_workers - the worker count of the running runtime; 0 when none
 * runs. Any thread. */
WEFT_EXPORT unsigned weft_workers(void);

/* weft_worker - the index (0 .. weft_workers()-1) of the worker the caller
 * runs on, or -1 on a thread that is not a worker. A fiber may move to
 * another worker at any call that can switch (yield, sleep, join, ...),
 * so the answer is only current until then. Any thread. */
WEFT_EXPORT int weft_worker(void);

/* weft_now - the monotonic clock (CLOCK_MONOTONIC) in nanoseconds; the
 * clock that deadlines and timeouts are measured on. Any thread. */
WEFT_EXPORT uint64_t weft_now(void);

/* ===================================================================== */
/* Fibers                                                                */
/* ===================================================================== */

/*
 * A fiber is a function running on its own stack, scheduled cooperatively
 * by the runtime: it runs until it yields, sleeps, waits (join, mutex,
 * channel, I/O) or returns, and may continue on another worker thread
 * after any of those. Thread-local variables therefore change under a
 * fiber's feet across such calls; the runtime's own calls return errors
 * as values, never through errno, except those returning pointers.
 *
 * A fiber that has not started yet holds no stack, and a finished fiber
 * gives its stack back at once: until it is joined it holds only its
 * small control block (128 bytes).
 */
typedef struct weft_fiber weft_fiber;

/* A fiber's function: arg is weft_spawn's arg, the return value is what
 * weft_join hands back. */
typedef void *(*weft_fn)(void *arg);

typedef struct weft_spawn_opts {
    const char *name;       /* copied; shown by weft-dump (NULL: none)      */
    size_t      stack_size; /* 0: runtime default                           */
    int         detached;   /* 1: no join; resources freed at exit          */
} weft_spawn_opts;

/*
 * weft_spawn - start fn(arg) as a new joinable fiber.
 *
 * The caller keeps running; weft_spawn never switches. Spawned from a
 * fiber, the new fiber runs next on the same worker, as soon as the
 * caller yields, waits or returns; once a later spawn or wake-up on that
 * worker takes its place, idle workers may steal it. Spawned from a plain
 * thread, it goes to a queue every worker takes from. Every joinable
 * fiber must be joined (weft_join) or detached (weft_detach) exactly
 * once, or its control block is never freed.
 *
 * Returns the fiber's handle, or NULL with errno: EINVAL (fn is NULL),
 * EPERM (no runtime is running: spawns from plain threads are accepted
 * only between weft_run's start and its end), ENOMEM, EAGAIN (stacks
 * could not be mapped recently; retry later). Fibers spawned before that
 * which could not start yet wait for a stack, off the run queues, and
 * start as soon as one can be had; running fibers are not held up. Any
 * thread while the runtime runs.
 */
WEFT_EXPORT weft_fiber *weft_spawn(weft_fn fn, void *arg);

/*
 * weft_spawn_ex - weft_spawn with options (o may be NULL: the defaults).
 *
 * o->name names the fiber (copied, truncated to 31 bytes); o->stack_size
 * is its stack (0: the runtime default; at least 16 KiB, rounded up as
 * weft_coro_new describes); o->detached = 1 makes it detached from the
 * start: it cannot be joined and frees itself when it returns. The handle
 * of a detached fiber is only good for weft_fiber_id until the fiber
 * finishes.
 * Errors as weft_spawn, plus EINVAL for a stack_size over 1 GiB.
 */
WEFT_EXPORT weft_fiber *weft_spawn_ex(const weft_spawn_opts *o, weft_fn fn, void *arg);

/*
 * weft_join - wait for f to return, store its return value in *result
 * (if result is not NULL), and free f.
 *
 * From a fiber the caller parks (its worker runs other fibers); from a
 * plain thread the thread blocks. f is freed on return: the handle must
 * not be used again.
 *
 * Returns 0, or: -EINVAL (f is NULL, or was already joined or detached;
 * detected as long as its control block has not been reused by a later
 * spawn), -EDEADLK (f is the calling fiber), -ESRCH (a plain thread's
 * join once the run that spawned f has ended or is ending, i.e. weft_run
 * has returned or is about to: every fiber's control block goes with its
 * run, so f is not touched and its result is lost). A handle belongs to
 * its run: passing it to any call in a later run is undefined. Any thread.
 */
WEFT_EXPORT int weft_join(weft_fiber *f, void **result);

/*
 * weft_detach - let f free itself when it returns; it can no longer be
 * joined. If f has already finished it is freed now.
 *
 * Returns 0, or -EINVAL (f is NULL, or already joined or detached),
 * -ESRCH (a plain thread's detach once f's run has ended or is ending,
 * as for weft_join). Any thread; never switches.
 */
WEFT_EXPORT int weft_detach(weft_fiber *f);

/*
 * weft_yield - let the other runnable fibers of this worker run; the
 * caller goes to the back of the worker's queue and continues when its
 * turn comes (possibly on another worker). Returns at once when nothing
 * else is runnable here. On a plain thread it calls sched_yield().
 */
WEFT_EXPORT void weft_yield(void);

/*
 * weft_sleep - suspend the calling fiber for at least ns nanoseconds; its
 * worker runs other fibers meanwhile. On an idle runtime the wake-up is
 * typically within tens of microseconds of the deadline.
 *
 * ns == 0 yields. On a plain thread it sleeps the thread (nanosleep,
 * resumed after signals). Returns 0, or -EINVAL (ns < 0: there is no
 * "forever" sleep), -ENOMEM (no memory for the timer).
 */
WEFT_EXPORT int weft_sleep(int64_t ns);

/* weft_self - the calling fiber, or NULL on a plain thread. Any thread. */
WEFT_EXPORT weft_fiber *weft_self(void);

/* weft_fiber_id - f's id: unique in the process and never reused, also
 * across runs; 0 for NULL. The id appears in stack-overflow reports. Any
 * thread, while f is valid. */
WEFT_EXPORT uint64_t weft_fiber_id(const weft_fiber *f);

/* weft_set_name - name the calling fiber (copied, truncated to 31 bytes;
 * NULL clears it), for weft-dump and overflow reports. Returns 0, or
 * -EPERM when called outside a fiber. */
WEFT_EXPORT int weft_set_name(const char *name);

/* ===================================================================== */
/* Synchronisation                                                       */
/* ===================================================================== */

/*
 * Fiber-aware mutex, condition variable, wait group and counting
 * semaphore. A fiber that has to wait parks (its worker runs other
 * fibers meanwhile); a plain thread that has to wait sleeps in the
 * kernel (futex). Fibers and plain threads may share one object.
 *
 * The structs are embeddable so that they need no allocation: declare
 * one, initialise it with its _init function or static initialiser, and
 * simply stop using it when done (there is no destroy call). No waiter
 * may be blocked on an object whose memory goes away. Their fields are
 * private; a struct must not be copied while in use.
 */

/* Private: the wait queue every object below embeds (a lock word and an
 * intrusive list of waiters). */
struct weft_private_waitq {
    unsigned _lock;
    void    *_head;
    void    *_tail;
};
#define WEFT_PRIVATE_WAITQ_INIT { 0, 0, 0 }

/*
 * weft_mutex: mutual exclusion, not recursive.
 *
 * weft_mutex_lock acquires m, waiting as long as it takes: it spins
 * briefly, then parks the calling fiber (or blocks the calling thread).
 * Waiters are queued first-come first-served; an unlock normally lets the
 * woken waiter compete with newcomers (throughput), but a waiter that has
 * waited over a millisecond gets the mutex handed to it directly, so no
 * waiter starves.
 * weft_mutex_trylock acquires m only if it is free: 0, or -EBUSY
 * (-EINVAL for a NULL m).
 * weft_mutex_unlock releases m, which the caller must hold (it may be
 * called from another fiber or thread than the one that locked it).
 * Any fiber or thread, while the runtime runs or not. Lifetime (as
 * pthread_mutex_destroy): the mutex may be freed, or the frame holding it
 * left, as soon as no call on it is in progress and none will start,
 * e.g. right after the last weft_mutex_unlock returns in the fiber that
 * frees it, even while another fiber's unlock has not yet returned.
 */
typedef struct weft_mutex {
    unsigned            _state;
    struct weft_private_waitq _q;
} weft_mutex;
#define WEFT_MUTEX_INIT { 0, WEFT_PRIVATE_WAITQ_INIT }

WEFT_EXPORT void weft_mutex_init(weft_mutex *m);
WEFT_EXPORT void weft_mutex_lock(weft_mutex *m);
WEFT_EXPORT int  weft_mutex_trylock(weft_mutex *m);
WEFT_EXPORT void weft_mutex_unlock(weft_mutex *m);

/*
 * weft_cond: condition variable, used with a weft_mutex.
 *
 * weft_cond_wait atomically releases m (which the caller holds) and waits
 * until signalled; it reacquires m before returning. As with POSIX,
 * wake-ups may be spurious in principle: wait in a loop on the predicate.
 * weft_cond_timedwait does the same for at most timeout_ns nanoseconds
 * (negative: no limit): 0 when signalled, -ETIMEDOUT when the time ran
 * out (m is reacquired either way); it may return -ENOMEM if no timer
 * could be armed. Misuse it detects: -EINVAL for a NULL c or m, -EPERM
 * when m is not locked at all (it returns at once, m untouched).
 * weft_cond_signal wakes the longest-waiting waiter, if any;
 * weft_cond_broadcast wakes them all. Neither requires holding m.
 * Any fiber or thread. Lifetime: the condition variable may be freed as
 * soon as no call on it is in progress and none will start, e.g. by a
 * waiter right after its wait returns, even while the signal that woke it
 * has not yet returned.
 */
typedef struct weft_cond {
    struct weft_private_waitq _q;
} weft_cond;
#define WEFT_COND_INIT { WEFT_PRIVATE_WAITQ_INIT }

WEFT_EXPORT void weft_cond_init(weft_cond *c);
WEFT_EXPORT void weft_cond_wait(weft_cond *c, weft_mutex *m);
WEFT_EXPORT int  weft_cond_timedwait(weft_cond *c, weft_mutex *m, int64_t timeout_ns);
WEFT_EXPORT void weft_cond_signal(weft_cond *c);
WEFT_EXPORT void weft_cond_broadcast(weft_cond *c);

/*
 * weft_wg: wait group (Go's sync.WaitGroup).
 *
 * weft_wg_add adds delta (which may be negative) to the counter;
 * weft_wg_done subtracts one. When the counter reaches zero every waiter
 * is released. A counter driven below zero is a program error: the
 * process aborts. weft_wg_wait returns once the counter is zero (at once
 * if it is). Add before starting what will call done. Any fiber or thread.
 * Lifetime: the wait group may be freed (or the frame holding it left)
 * as soon as weft_wg_wait has returned in every waiter, even while the
 * weft_wg_done that released them has not yet returned.
 */
typedef struct weft_wg {
    int64_t             _count;
    struct weft_private_waitq _q;
} weft_wg;
#define WEFT_WG_INIT { 0, WEFT_PRIVATE_WAITQ_INIT }

WEFT_EXPORT void weft_wg_init(weft_wg *wg);
WEFT_EXPORT void weft_wg_add(weft_wg *wg, int delta);
WEFT_EXPORT void weft_wg_done(weft_wg *wg);
WEFT_EXPORT void weft_wg_wait(weft_wg *wg);

/*
 * weft_sem: counting semaphore.
 *
 * weft_sem_init / WEFT_SEM_INIT(n) set the count to n. weft_sem_wait
 * takes one unit, waiting while the count is zero; waiters are served in
 * arrival order (a post hands its unit straight to the oldest waiter).
 * weft_sem_timedwait waits at most timeout_ns nanoseconds (negative: no
 * limit, 0: do not wait): 0, or -ETIMEDOUT (or -ENOMEM if no timer could
 * be armed; -EINVAL for a NULL s). weft_sem_post adds one unit or wakes one waiter; a post
 * that would take the count past UINT_MAX is a program error: the
 * process aborts with a message.
 * Any fiber or thread. Lifetime: the semaphore may be freed as soon as
 * no call on it is in progress and none will start, e.g. by a waiter
 * right after its wait returns, even while the post that woke it has
 * not yet returned.
 */
typedef struct weft_sem {
    uint64_t            _word;  /* count (low 32 bits) and flags */
    struct weft_private_waitq _q;
} weft_sem;
#define WEFT_SEM_INIT(n) { (unsigned)(n), WEFT_PRIVATE_WAITQ_INIT }

WEFT_EXPORT void weft_sem_init(weft_sem *s, unsigned count);
WEFT_EXPORT void weft_sem_wait(weft_sem *s);
WEFT_EXPORT int  weft_sem_timedwait(weft_sem *s, int64_t timeout_ns);
WEFT_EXPORT void weft_sem_post(weft_sem *s);

/* ===================================================================== */
/* Channels                                                              */
/* ===================================================================== */

/*
 * Go-style channels carrying fixed-size values (copied in and out), for
 * fibers and plain threads alike, on either end. Values from one sender
 * arrive in the order sent.
 *
 * weft_chan_new makes a channel of elements of elem_size bytes (0 is
 * allowed: pure signals; elem may then be NULL) with room for capacity
 * buffered values; capacity 0 makes it unbuffered: a send completes only
 * once a receiver has taken the value (rendezvous). Returns NULL with
 * errno ENOMEM (or EINVAL for a size overflow).
 *
 * weft_chan_send copies *elem in, waiting for room or a receiver: 0, or
 * -EPIPE if the channel is (or gets, while waiting) closed; the value is
 * then not delivered. weft_chan_recv copies the next value to *elem,
 * waiting for one: 0, or -EPIPE once the channel is closed and drained.
 * The try variants never wait: -EAGAIN where they would. The timeout
 * variants wait at most ns nanoseconds (negative: no limit, 0: do not
 * wait): -ETIMEDOUT when the time ran out (-ENOMEM if no timer could be
 * armed). Every one of them returns -EINVAL, touching nothing, for a NULL
 * channel, or a NULL elem on a channel whose elements are not empty.
 * weft_chan_close marks the channel closed and wakes every waiter
 * (senders get -EPIPE; receivers drain what is buffered, then get
 * -EPIPE); closing twice is harmless. weft_chan_free releases it: only
 * once no fiber or thread uses it or can still reach it. weft_chan_len is
 * the number of buffered values (a snapshot).
 * Waiting fibers park; waiting threads sleep. Any fiber or thread.
 */
typedef struct weft_chan weft_chan;

WEFT_EXPORT weft_chan *weft_chan_new(size_t elem_size, size_t capacity);
WEFT_EXPORT int  weft_chan_send(weft_chan *ch, const void *elem);
WEFT_EXPORT int  weft_chan_recv(weft_chan *ch, void *elem);
WEFT_EXPORT int  weft_chan_try_send(weft_chan *ch, const void *elem);
WEFT_EXPORT int  weft_chan_try_recv(weft_chan *ch, void *elem);
WEFT_EXPORT int  weft_chan_send_timeout(weft_chan *ch, const void *elem, int64_t ns);
WEFT_EXPORT int  weft_chan_recv_timeout(weft_chan *ch, void *elem, int64_t ns);
WEFT_EXPORT void weft_chan_close(weft_chan *ch);
WEFT_EXPORT void weft_chan_free(weft_chan *ch);
WEFT_EXPORT size_t weft_chan_len(const weft_chan *ch);

/*
 * weft_select: wait on several channel operations, complete exactly one.
 *
 * cases[0..n) each name a channel, an op (WEFT_SEND with the value at
 * elem, or WEFT_RECV into the buffer at elem) and receive `result`. A
 * case is ready when its operation could complete at once; a case on a
 * closed channel is ready too and completes with result -EPIPE. A NULL
 * channel is never ready (Go's nil channel). Among the ready cases one is
 * chosen uniformly at random; if none is, the call waits up to timeout_ns
 * nanoseconds (negative: no limit; 0: just poll, Go's `default:`).
 * Returns the index of the case that completed (its result is 0 or
 * -EPIPE; the other cases' results are untouched), -ETIMEDOUT, -EINVAL
 * for a bad op, cases NULL with n > 0, n over INT_MAX, or a NULL elem on
 * a channel whose elements are not empty, or -ENOMEM. A
 * channel may appear in several cases. With no channel at all and no
 * timeout it waits forever, like Go's empty select. Any fiber or thread.
 */
enum { WEFT_SEND = 1, WEFT_RECV = 2 };
typedef struct weft_select_case {
    weft_chan  *chan;    /* NULL: never ready (Go's nil channel)          */
    int         op;      /* WEFT_SEND or WEFT_RECV                         */
    void       *elem;    /* value to send / buffer to receive into         */
    int         result;  /* out: 0, or -EPIPE when the channel was closed  */
} weft_select_case;

WEFT_EXPORT int weft_select(weft_select_case *cases, size_t n, int64_t timeout_ns);

/* ===================================================================== */
/* Network and file I/O                                                  */
/* ===================================================================== */

/*
 * Fiber-aware wrappers of the POSIX fd calls. In a fiber, a call that
 * would block parks the fiber instead (its worker runs other fibers) and
 * resumes it when the fd is ready, through the worker's epoll (the
 * netpoller). Every call returns a result >= 0 on success and a negative
 * errno on failure, never -EINTR (interrupted calls are restarted), and in
 * a fiber never -EAGAIN (except with MSG_DONTWAIT).
 *
 * Any fd may be passed, of any number up to INT_MAX (a number that is
 * not open fails with -EBADF). The first call on an fd from a fiber
 * registers it with the netpoller and turns on O_NONBLOCK on its open
 * file description
 * (shared with dup()ed and inherited copies); the flag is left on
 * afterwards, as Go does. Regular files and directories, which epoll
 * cannot wait on, are read and written on the blocking pool
 * (weft_blocking): the fiber parks while a pool thread makes the call.
 * Per-fd timeouts do not apply to them (a disk access cannot be
 * abandoned half-way).
 *
 * Called outside a fiber (on a plain thread) the wrappers behave like the
 * plain blocking call: when an fd the runtime made non-blocking is not
 * ready they wait in poll(), honouring the per-fd timeouts; an fd the
 * caller made non-blocking itself still fails with -EAGAIN, as the plain
 * call would.
 *
 * In a fiber, once an fd is known to the netpoller, the calls go to the
 * kernel without libc's wrappers (outside sanitizer builds, on x86-64):
 * errno is left alone, and they are not pthread cancellation points.
 *
 * Rules: close an fd used with these calls through weft_close (a plain
 * close() followed by reuse of the number in the same run leaves the
 * table's registration stale, and waits on the new fd may never end). At
 * most one fiber may wait per direction of an fd at a time (one reader
 * and one writer); a second waiter fails with -EBUSY. Closing an fd while
 * another fiber is inside a call on it (not waiting) has the usual POSIX
 * race.
 */

/* weft_read, weft_write, weft_readv, weft_writev - read(2), write(2),
 * readv(2), writev(2). A read waits until some data (or end of file) is
 * there and returns what one read(2) returns (short counts happen); a
 * write waits until some of it can be written and returns the count
 * written. -ETIMEDOUT when the fd's read or write timeout
 * (weft_fd_timeouts) passes first, -EBADF for a bad or closed fd.
 * On a socket, weft_write and weft_writev never raise SIGPIPE: they are
 * made as send(2) / sendmsg(2) with MSG_NOSIGNAL, so a peer that closed
 * gives -EPIPE, in a fiber and on a plain thread alike (a library
 * serving many peers must not be killed by one of them). A pipe whose
 * reader is gone still raises SIGPIPE, as write(2) does: ignore or block
 * SIGPIPE to get -EPIPE there. */
WEFT_EXPORT ssize_t weft_read(int fd, void *buf, size_t n);
WEFT_EXPORT ssize_t weft_write(int fd, const void *buf, size_t n);
WEFT_EXPORT ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt);
WEFT_EXPORT ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt);

/* weft_recv, weft_send, weft_recvfrom, weft_sendto - the socket calls, as
 * weft_read and weft_write. MSG_DONTWAIT in flags: do not wait (-EAGAIN).
 * Sending always adds MSG_NOSIGNAL (a closed peer gives -EPIPE, no
 * SIGPIPE). -ENOTSOCK for an fd that is not a socket. */
WEFT_EXPORT ssize_t weft_recv(int fd, void *buf, size_t n, int flags);
WEFT_EXPORT ssize_t weft_send(int fd, const void *buf, size_t n, int flags);
WEFT_EXPORT ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags,
                                  struct sockaddr *a, socklen_t *al);
WEFT_EXPORT ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags,
                                const struct sockaddr *a, socklen_t al);

/* weft_accept - accept(2): wait for a connection on the listening socket
 * fd and return the new socket, made O_NONBLOCK | O_CLOEXEC (also on a
 * plain thread). a and al as for accept(2), may be NULL. Connections
 * aborted before they were accepted are skipped. -ETIMEDOUT after the
 * listener's read timeout. */
WEFT_EXPORT int weft_accept(int fd, struct sockaddr *a, socklen_t *al);

/* weft_connect - connect(2), waiting for the connection to complete (a
 * non-blocking connect, then the result from SO_ERROR): 0, or
 * -ECONNREFUSED, -ETIMEDOUT (the kernel's, or the fd's write timeout),
 * ... */
WEFT_EXPORT int weft_connect(int fd, const struct sockaddr *a, socklen_t al);

/* weft_close - close(2), after waking every fiber waiting on fd: their
 * calls fail with -EBADF. Also forgets the fd's per-fd state (timeouts).
 * 0, or -EBADF, -EIO. */
WEFT_EXPORT int weft_close(int fd);

/*
 * weft_wait_fd - wait until fd is ready for events (POLLIN, POLLOUT or
 * both, from <poll.h>) or timeout_ns passes (negative: no limit; 0: just
 * look). Returns the poll(2) revents (> 0: the requested bits that hold,
 * and POLLERR / POLLHUP), -ETIMEDOUT, -EBADF (bad fd, or closed with
 * weft_close meanwhile), -EINVAL (no event asked), -EBUSY (another fiber
 * waits on that direction). Regular files are always ready.
 */
WEFT_EXPORT int weft_wait_fd(int fd, int events, int64_t timeout_ns);

/*
 * weft_fd_timeouts - per-fd timeouts, like SO_RCVTIMEO / SO_SNDTIMEO: a
 * later read-side call (read, readv, recv, recvfrom, accept) or
 * write-side call (write, writev, send, sendto, connect) on fd that has
 * to wait longer than read_ns / write_ns nanoseconds fails with
 * -ETIMEDOUT; the fd stays usable. A negative value or 0 means no
 * timeout in that direction (the default), so weft_fd_timeouts(fd, t,
 * -1) limits reads only. Kept until weft_close. Returns 0, -EBADF (fd
 * not open), -ENOMEM.
 */
WEFT_EXPORT int weft_fd_timeouts(int fd, int64_t read_ns, int64_t write_ns);

/*
 * weft_listen_tcp - a TCP socket listening on host:port with backlog
 * (SO_REUSEADDR set), O_NONBLOCK | O_CLOEXEC. host NULL or "" listens on
 * every IPv4 address; a numeric IPv4 or IPv6 address is used directly; a
 * name is resolved with getaddrinfo, from a fiber on the blocking pool
 * (weft_blocking). port 0 picks a free port (getsockname tells which).
 * Returns the fd, or -EINVAL (port out of range), -ENXIO (unknown name),
 * -EADDRINUSE, ...
 */
WEFT_EXPORT int weft_listen_tcp(const char *host, int port, int backlog);

/*
 * weft_dial_tcp - connect a TCP socket to host:port (resolved as in
 * weft_listen_tcp; each address in turn), waiting at most timeout_ns in
 * all (negative: no limit). Returns the fd (O_NONBLOCK | O_CLOEXEC), or
 * -ETIMEDOUT, -ECONNREFUSED, -ENXIO, -EINVAL (port not in 1..65535), ...
 */
WEFT_EXPORT int weft_dial_tcp(const char *host, int port, int64_t timeout_ns);

/*
 * weft_blocking - run fn(arg) on the blocking pool and return its result.
 *
 * For calls that block without an fd the netpoller could wait on: disk
 * I/O, name lookups, a library's blocking call. From a fiber, fn(arg) is
 * handed to a pool thread and the fiber parks until fn has returned; its
 * worker runs other fibers meanwhile. The result is fn's return value.
 * Called outside a fiber (a plain thread, a pool thread, or with no
 * runtime running), fn(arg) simply runs in the calling thread.
 *
 * The pool. Threads are created when a call finds no idle one, up to a
 * cap: WEFT_BLOCKING_MAX (1..4096, default 64), read from the environment
 * when the first call of a weft_run starts the pool; beyond the cap calls
 * wait in FIFO order for a thread to become free. A thread idle for
 * WEFT_BLOCKING_IDLE_MS milliseconds (default 10000; 0: exit as soon as
 * idle) exits. Values that do not parse or are out of range are ignored.
 * weft_run joins every pool thread before it returns. If no pool thread
 * exists and none can be created (pthread_create fails), the fiber runs
 * fn(arg) itself, blocking its worker (and weft calls inside fn then
 * behave as in that fiber): slower, but the call is not lost.
 *
 * fn runs on a plain thread with its own errno, so return results and
 * errors through the return value or arg, not errno. weft calls inside fn
 * take their plain-thread paths: they block the pool thread and never
 * park (weft_self() is NULL there, weft_spawn queues to the runtime,
 * synchronisation objects block the thread). fn must not wait for
 * something that only another weft_blocking call can provide: with every
 * pool thread waiting so, the calls queued behind them never start.
 * arg, and anything fn reaches through it, may live on the calling
 * fiber's stack: the fiber stays parked until fn has returned.
 *
 * Returns fn's result; NULL with errno EINVAL if fn is NULL. Any thread.
 */
WEFT_EXPORT void *weft_blocking(weft_fn fn, void *arg);

/* ===================================================================== */
/* Introspection                                                          */
/* ===================================================================== */

/*
 * Counters of the running runtime (or, when none runs, of the last run
 * in this process; all zero before the first). Each is a sum over the
 * workers, read without stopping them: the fields are a near-instant
 * view, not one atomic snapshot (fibers_live may lag a fiber that is
 * finishing right now).
 *
 *   fibers_live     spawned and not finished (runnable, running, parked)
 *   fibers_spawned  fibers ever spawned in this run (main included)
 *   switches        context switches (fiber to fiber, fiber to scheduler
 *                   and back; a yield with nothing else to run counts one)
 *   steals          successful steals (each moves up to half a deque)
 *   steal_attempts  deques looked at by a searching worker
 *   parks           times a fiber blocked (join, sleep, I/O, sync, ...)
 *   wakeups         times an idle worker woke up from its epoll wait
 *   polls           epoll calls by the workers (waits and busy polls)
 *   blocking_calls  calls handed to the blocking pool (weft_blocking,
 *                   regular-file I/O, name lookups)
 */
typedef struct weft_stats {
    uint64_t fibers_live, fibers_spawned, switches, steals, steal_attempts,
             parks, wakeups, polls, blocking_calls;
    /* more may follow */
} weft_stats;

/*
 * weft_stats_get - fill *out with the counters above. Returns 0, or
 * -EINVAL if out is NULL. Any thread; never blocks a worker.
 */
WEFT_EXPORT int weft_stats_get(weft_stats *out);

/*
 * weft_dump - write to fd the report that weft-dump(1) prints: every
 * worker (state, current fiber, queue lengths, counters), then every
 * fiber grouped by state and wait reason, with its id, name, worker,
 * time in its state, stack use, spawn site and, for parked fibers, a
 * symbolized backtrace. The runtime keeps running while it is written.
 * The whole report is written: on a non-blocking fd that is full the
 * call waits for room (a fiber parks, a plain thread polls) rather than
 * failing with -EAGAIN part-way; a socket gets MSG_NOSIGNAL (no SIGPIPE).
 * Returns 0, -EPERM if no runtime is running, -EBADF or another
 * negative errno if writing fd failed. Any thread, fibers included (a
 * write to a blocking fd may block the calling thread).
 */
WEFT_EXPORT int weft_dump(int fd);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
