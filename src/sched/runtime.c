/*
 * The runtime: configuration, starting and stopping the workers, and
 * deciding when weft_run is over.
 *
 * weft_run does not turn the calling thread into a worker: it starts W
 * worker threads, waits for them, and returns. The caller's affinity,
 * signal stack and thread-local caches are left as they were, and
 * weft_run can be called again (or from another thread) afterwards.
 *
 * Termination. weft_run returns when main_fn has returned and every
 * fiber has exited. A single live-fiber counter would be two contended
 * atomic additions per fiber; instead each worker counts the fibers it
 * spawned and the fibers that exited on it (owner-written, so plain
 * stores), and a worker about to park sums them: all exit counters first
 * (acquire), then all spawn counters. Every exit it counts happened after
 * that fiber's spawn, which the acquire makes visible, so if the two sums
 * are equal, every fiber spawned so far has exited; nothing is left to
 * spawn more, so the runtime is done. Plain threads may spawn too; their
 * spawns are counted (and the final check made) under the global queue's
 * lock, so a foreign spawn either is counted or sees the shutdown.
 */
#define _GNU_SOURCE
#include "sched/chaos.h"
#include "sched/sched.h"
#include "io/blocking.h"
#include "io/netpoll.h"
#include "sched/fence.h"
#include "sched/trace.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"

#define DEQUE_LOG2     10      /* 1024 fibers per worker before spilling */
#define MIN_STACK      (16u * 1024)

struct weft__runtime weft__rt = {
    .start_lock = PTHREAD_MUTEX_INITIALIZER,
    .idle_lock = PTHREAD_MUTEX_INITIALIZER,
    .gq_lock = PTHREAD_MUTEX_INITIALIZER,
    .fpool_lock = PTHREAD_MUTEX_INITIALIZER,
    .report_lock = PTHREAD_MUTEX_INITIALIZER,
    .next_id = 1,
};

/* What weft_run was asked to run, for the main fiber. Written before the
 * workers start (their start gate orders it). */
static void (*main_fn_saved)(void *);
static void *main_arg_saved;

uint32_t weft__now_ms(void)
{
    return (uint32_t)((uint64_t)weft__now() / 1000000u);
}

int64_t weft__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t weft_now(void)
{
    return (uint64_t)weft__now();
}

unsigned weft_workers(void)
{
    /* Relaxed: a fiber asking sees RUNNING (it runs); another thread gets
     * an answer that was true at some recent instant. */
    int s = atomic_load_explicit(&weft__rt.state, memory_order_relaxed);
    return s == RT_RUNNING ? weft__rt.nworkers : 0;
}

int weft_worker(void)
{
    struct worker *w = weft__worker_self();
    return w ? (int)w->index : -1;
}

/* ---- configuration ---------------------------------------------------- */

/* Whole-string unsigned decimal with an optional k/m/g suffix (powers of
 * 1024 when allow_suffix). 0, or -1 if s is not one. */
static int parse_size(const char *s, int allow_suffix, unsigned long long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    if (allow_suffix && *end) {
        unsigned shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return -1;
        }
        if (v > (~0ULL >> shift))
            return -1;
        v <<= shift;
        end++;
    }
    if (*end)
        return -1;
    *out = v;
    return 0;
}

void weft_config_init(weft_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->workers = 0;
    cfg->stack_size = 0;
    cfg->pin = 1;
    unsigned long long v;
    /* Values that do not parse are ignored; values out of range are kept
     * so that weft_run reports them (-EINVAL) rather than silently
     * running with something else. */
    if (parse_size(getenv("WEFT_WORKERS"), 0, &v) == 0)
        cfg->workers = v > UINT32_MAX ? UINT32_MAX : (unsigned)v;
    if (parse_size(getenv("WEFT_STACK_SIZE"), 1, &v) == 0)
        cfg->stack_size = (size_t)v;
    if (parse_size(getenv("WEFT_PIN"), 0, &v) == 0)
        cfg->pin = v > 1 ? 2 : (int)v;
}

static int check_config(const weft_config *c)
{
    if (c->workers > WEFT__MAX_WORKERS)
        return -EINVAL;
    if (c->pin != 0 && c->pin != 1)
        return -EINVAL;
    if (c->stack_size > WEFT__MAX_STACK)
        return -EINVAL;
    return 0;
}

static int env_flag(const char *name)
{
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

/* ---- termination -------------------------------------------------------- */

/* Any thread; see the comment at the top. */
static int quiescent(void)
{
    uint64_t exited = 0, spawned = 0;
    for (unsigned i = 0; i < weft__rt.nworkers; i++)
        /* Acquire: pairs with the release store in weft__fiber_finish, so
         * the spawns of every fiber counted here are visible below. */
        exited += atomic_load_explicit(&weft__rt.workers[i].nexited, memory_order_acquire);
    for (unsigned i = 0; i < weft__rt.nworkers; i++)
        /* Relaxed: ordered after the acquire loads above. */
        spawned += atomic_load_explicit(&weft__rt.workers[i].nspawned, memory_order_relaxed);
    spawned += atomic_load_explicit(&weft__rt.foreign_spawned, memory_order_relaxed);
    return exited == spawned;
}

int weft__check_termination(void)
{
    if (atomic_load_explicit(&weft__rt.shutdown, memory_order_seq_cst))
        return 1;
    /* seq_cst fence: two workers that count their last exits at the same
     * moment and then check must not both miss the other's store (each
     * would park, and weft_run would never return). With a fence between
     * each one's exit-counter store and its loads here, the later of the
     * two in the seq_cst order sees both. */
    weft__fence_seq_cst();
    if (!quiescent())
        return 0;
    pthread_mutex_lock(&weft__rt.gq_lock);
    int decided = !atomic_load_explicit(&weft__rt.shutdown, memory_order_relaxed) && quiescent();
    if (decided)
        /* seq_cst: pairs with the seq_cst load at P5 of every parker. */
        atomic_store_explicit(&weft__rt.shutdown, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&weft__rt.gq_lock);
    if (!decided)
        return atomic_load_explicit(&weft__rt.shutdown, memory_order_seq_cst);
    pthread_mutex_lock(&weft__rt.idle_lock);
    for (unsigned i = 0; i < weft__rt.nidle; i++)
        poller_wake(weft__rt.idle[i]->poller);
    pthread_mutex_unlock(&weft__rt.idle_lock);
    return 1;
}

/* ---- workers ---------------------------------------------------------- */

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    /* Set up before any fiber runs, when memory cannot have run short
     * yet: weft_run opens the start gate only once every worker has
     * counted itself here. Warming the allocator is part of it: jemalloc
     * 5.3 crashes (SIGSEGV in mallocx) when a thread's very first
     * allocation fails for want of memory, and a worker's first one (a
     * fiber slab, a timer array, a queue chunk), or a worker that had not
     * even got this far, could come after a fiber capped the address
     * space. So could the mapping of the overflow handler's signal
     * stack. */
    if (weft__rt.pin)
        topo_pin(&weft__rt.topo, w->index); /* on failure: run unpinned */
    weft__ctx_thread_prepare();
    weft__free(weft__malloc(64), 64);
    /* Release: pairs with weft_run's acquire load. */
    atomic_fetch_add_explicit(&weft__rt.workers_ready, 1, memory_order_release);
    /* The start gate: weft_run holds start_lock until every worker exists
     * and the runtime is fully set up. */
    pthread_mutex_lock(&weft__rt.start_lock);
    pthread_mutex_unlock(&weft__rt.start_lock);
    weft__worker_bind(w);
    if (!atomic_load_explicit(&weft__rt.shutdown, memory_order_seq_cst))
        weft__worker_loop(w);
    weft__worker_cleanup(w);
    weft__worker_bind(NULL);
    return NULL;
}

static int worker_init(struct worker *w, unsigned index, unsigned n)
{
    memset(w, 0, sizeof *w);
    w->index = index;
    w->idle_pos = -1;
    w->rng = 0x9e3779b97f4a7c15ull * (index + 1) ^ (uint64_t)weft__now();
    if (!w->rng)
        w->rng = 1;
    atomic_init(&w->runnext, NULL);
    atomic_init(&w->inbox_len, 0);
    atomic_init(&w->nspawned, 0);
    atomic_init(&w->nexited, 0);
    timer_heap_init(&w->timers);
    timer_init(&w->nostack_timer, NULL);
    pthread_mutex_init(&w->inbox_lock, NULL);
    /* The stack retry's slot, taken now: it is armed when memory runs
     * short (sched.c, "Out of stacks"). */
    int err = timer_heap_reserve(&w->timers);
    if (err)
        goto fail_lock;
    err = deque_init(&w->dq, DEQUE_LOG2);
    if (err)
        goto fail_timers;
    deque_set_solo(&w->dq, n == 1); /* one worker: nobody steals */
    err = poller_init(&w->poller);
    if (err)
        goto fail_deque;
    w->victims = calloc(n > 1 ? n - 1 : 1, sizeof *w->victims);
    if (!w->victims) {
        err = -ENOMEM;
        goto fail_poller;
    }
    topo_victims(&weft__rt.topo, n, index, w->victims, w->level_end);
    return 0;

fail_poller:
    poller_close(w->poller);
fail_deque:
    deque_destroy(&w->dq);
fail_timers:
    timer_heap_destroy(&w->timers);
fail_lock:
    pthread_mutex_destroy(&w->inbox_lock);
    return err;
}

static void worker_fini(struct worker *w)
{
    timer_heap_destroy(&w->timers); /* a no-op if the worker ran (cleanup) */
    free(w->victims);
    poller_close(w->poller);
    deque_destroy(&w->dq);
    pthread_mutex_destroy(&w->inbox_lock);
}

static void *main_trampoline(void *unused)
{
    (void)unused;
    main_fn_saved(main_arg_saved);
    return NULL;
}

/* Everything between a successful claim of the runtime and the end of the
 * run. Caller of weft_run. */
static int run(const weft_config *cfg)
{
    int err = topo_load(&weft__rt.topo);
    if (err)
        return err;
    unsigned n = cfg->workers ? cfg->workers : topo_default_workers(&weft__rt.topo);
    size_t old_stack = weft__stack_default_size();
    size_t stack = cfg->stack_size;
    if (stack && stack < MIN_STACK)
        stack = MIN_STACK;
    err = weft__stack_set_default_size(stack);
    if (err)
        goto out_topo;

    err = -ENOMEM;
    weft__rt.workers = aligned_alloc(WEFT__CACHELINE, n * sizeof *weft__rt.workers);
    weft__rt.idle = calloc(n, sizeof *weft__rt.idle);
    if (!weft__rt.workers || !weft__rt.idle)
        goto out_alloc;
    weft__rt.nworkers = n;
    weft__rt.pin = cfg->pin;
    /* With one worker there is nowhere to move to. */
    weft__rt.migrate = n > 1 && env_flag("WEFT_DEBUG_MIGRATE");
    weft__chaos_configure();
    weft__rt.nidle = 0;
    weft__rt.gq_chunks = weft__rt.gq_chunks_tail = NULL;
    weft__rt.gq_singles = weft__rt.gq_singles_tail = NULL;
    atomic_store(&weft__rt.gq_len, 0);
    atomic_store(&weft__rt.nsearching, 0);
    atomic_store(&weft__rt.nparked, 0);
    atomic_store(&weft__rt.shutdown, 0);
    atomic_store(&weft__rt.foreign_spawned, 0);
    atomic_store(&weft__rt.stack_starved, 0);
    atomic_store(&weft__rt.workers_ready, 0);
    unsigned made = 0;
    for (; made < n; made++)
        if ((err = worker_init(&weft__rt.workers[made], made, n)) != 0)
            goto out_workers;

    /* The main fiber, detached: weft_run's end is the only join it needs. */
    weft_spawn_opts mo = { .name = "main", .stack_size = 0, .detached = 1 };
    struct weft_fiber *mainf = weft__fiber_new(NULL, &mo, main_trampoline, NULL);
    if (!mainf) {
        err = -ENOMEM;
        goto out_workers;
    }
    weft__submit_foreign(mainf); /* cannot fail: shutdown is 0 */

    weft__fiber_crash_hook_install();
    pthread_mutex_lock(&weft__rt.start_lock);
    unsigned started = 0;
    for (; started < n; started++) {
        struct worker *w = &weft__rt.workers[started];
        int e = pthread_create(&w->thread, NULL, worker_thread, w);
        if (e) {
            err = -e;
            break;
        }
        char name[16]; /* the kernel's limit, NUL included */
        snprintf(name, sizeof name, "weft-w%u", started % 100000u);
        pthread_setname_np(w->thread, name);
    }
    if (started < n) {
        /* Could not start them all: stop the ones that exist before they
         * run anything, and drop the main fiber. */
        atomic_store(&weft__rt.shutdown, 1);
    } else {
        err = 0;
        /* Every worker set up (see worker_thread) before main can run.
         * Acquire: pairs with the workers' release add. */
        while (atomic_load_explicit(&weft__rt.workers_ready, memory_order_acquire) < n)
            sched_yield();
        atomic_store(&weft__rt.state, RT_RUNNING);
        /* WEFT_TRACE: before the workers pass the start gate, so the
         * trace sees the whole run. */
        weft__trace_run_start();
        /* The monitor (takeover, watchdog, weft-dump): the run goes on
         * without it if it cannot start. Started before the gate opens,
         * so the fds it opens (its eventfd, the dump socket) exist before
         * main runs: opened later, they could take a number main had
         * just freed, or land between two fds main opens in a row. */
        weft__monitor_start();
    }
    pthread_mutex_unlock(&weft__rt.start_lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(weft__rt.workers[i].thread, NULL);
    weft__monitor_stop();
    weft__trace_run_end();
    /* Before anything a pool thread's last weft__ready may touch (the
     * global queue, the idle list, the pollers) is torn down. */
    weft__blocking_stop();
    /* The run's totals for weft_stats_get; then no reader may start on
     * the workers (report_lock orders this against the readers), and no
     * plain thread may start to join, detach or spawn (fiber.c,
     * run_hold). seq_cst store, then a seq_cst fence before the
     * quiescence check's load: Dekker's pattern with run_hold's add and
     * load, so either that thread sees the run stopping or we see it. */
    weft__stats_keep();
    pthread_mutex_lock(&weft__rt.report_lock);
    atomic_store(&weft__rt.state, RT_STOPPING);
    pthread_mutex_unlock(&weft__rt.report_lock);
    weft__fence_seq_cst();
    /* Before anything a plain thread may still touch is freed: a fiber
     * it readied may have ended the run while it was still waking a
     * worker (the idle list, the pollers), and a join, detach or spawn
     * it began while the run was on still holds a control block. */
    weft__foreign_quiesce();
    /* Only a failed start leaves fibers behind (the main fiber). */
    weft__global_discard();
    weft__fiber_pool_release();
    weft__netpoll_stop();

out_workers:
    while (made > 0)
        worker_fini(&weft__rt.workers[--made]);
out_alloc:
    free(weft__rt.workers);
    free(weft__rt.idle);
    weft__rt.workers = NULL;
    weft__rt.idle = NULL;
    weft__rt.nworkers = 0;
    weft__stack_set_default_size(old_stack);
out_topo:
    topo_free(&weft__rt.topo);
    return err;
}

int weft_run(const weft_config *cfg, void (*main_fn)(void *arg), void *arg)
{
    weft_config defaults;
    if (!cfg) {
        weft_config_init(&defaults);
        cfg = &defaults;
    }
    int err = check_config(cfg);
    if (err)
        return err;
    if (!main_fn)
        return -EINVAL;
    int expect = RT_STOPPED;
    /* seq_cst: claims the runtime against other callers. */
    if (!atomic_compare_exchange_strong(&weft__rt.state, &expect, RT_STARTING))
        return -EBUSY;
    main_fn_saved = main_fn;
    main_arg_saved = arg;
    err = run(cfg);
    atomic_store(&weft__rt.state, RT_STOPPED);
    return err;
}
