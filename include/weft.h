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
 * This header is C11 and C++ clean and includes only standard headers.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

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
 * could not be mapped recently; retry later). Any thread while the
 * runtime runs.
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
 * spawn), -EDEADLK (f is the calling fiber). Any thread.
 */
WEFT_EXPORT int weft_join(weft_fiber *f, void **result);

/*
 * weft_detach - let f free itself when it returns; it can no longer be
 * joined. If f has already finished it is freed now.
 *
 * Returns 0, or -EINVAL (f is NULL, or already joined or detached).
 * Any thread; never switches.
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

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
