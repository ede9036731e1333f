/*
 * weft_stats_get: the runtime's counters, summed over the workers.
 *
 * Every counter is written by one thread (its worker, or a poller's
 * owner) with a relaxed load and store, and read here with relaxed loads:
 * statistics decide nothing, so no ordering is needed, and the owners pay
 * no locked instruction. When a run ends its totals are kept (under
 * report_lock, which also keeps the workers' array alive while a reader
 * sums it), so the counters of the last run stay readable after
 * weft_run returned.
 */
#include "sched/sched.h"

#include <errno.h>
#include <string.h>

#include "io/blocking.h"

/* The totals of the last run; with weft__rt.report_lock. */
static weft_stats last;

static uint64_t rd(const _Atomic uint64_t *c)
{
    /* Relaxed: see the top of the file. */
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Sum the running runtime's counters into *out. With report_lock held
 * and the workers' array alive. */
static void sum_workers(weft_stats *out)
{
    memset(out, 0, sizeof *out);
    uint64_t exited = 0;
    for (unsigned i = 0; i < weft__rt.nworkers; i++) {
        struct worker *w = &weft__rt.workers[i];
        out->fibers_spawned += rd(&w->nspawned);
        exited += rd(&w->nexited);
        out->switches += rd(&w->nswitch);
        out->steals += rd(&w->nsteal);
        out->steal_attempts += rd(&w->nsteal_try);
        out->parks += rd(&w->npark);
        out->wakeups += rd(&w->nwake);
        if (w->poller)
            out->polls += poller_calls(w->poller);
    }
    out->fibers_spawned += rd(&weft__rt.foreign_spawned);
    /* Read apart from the spawn counts: an exit seen without its spawn
     * would underflow. */
    out->fibers_live = out->fibers_spawned > exited ? out->fibers_spawned - exited : 0;
    out->blocking_calls = weft__blocking_calls();
}

void weft__stats_keep(void)
{
    pthread_mutex_lock(&weft__rt.report_lock);
    sum_workers(&last);
    last.fibers_live = 0;
    pthread_mutex_unlock(&weft__rt.report_lock);
}

int weft_stats_get(weft_stats *out)
{
    if (!out)
        return -EINVAL;
    pthread_mutex_lock(&weft__rt.report_lock);
    /* Acquire: pairs with weft_run's store of RT_RUNNING, after which the
     * workers' array is complete; report_lock keeps it from being freed. */
    if (atomic_load_explicit(&weft__rt.state, memory_order_acquire) == RT_RUNNING) {
        sum_workers(out);
    } else {
        *out = last;
        out->blocking_calls = weft__blocking_calls();
    }
    pthread_mutex_unlock(&weft__rt.report_lock);
    return 0;
}
