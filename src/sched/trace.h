/*
 * The scheduler trace: per-worker event buffers written as Chrome /
 * Perfetto trace-event JSON (one track per worker, a slice per fiber run,
 * instants for steals, parks and wake-ups). Internal; see trace.c.
 */
#ifndef WEFT_SCHED_TRACE_H
#define WEFT_SCHED_TRACE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct weft_fiber;

enum weft__trace_kind {
    TR_RUN = 1,   /* the worker switched to fiber `a` (0: its scheduler)   */
    TR_STEAL,     /* stole from worker `a`                                 */
    TR_PARK,      /* the worker went to sleep in its poller                */
    TR_WAKE,      /* ... and woke up                                       */
    TR_NAME,      /* fiber `a` is named (the event owns a copy of the name) */
};

/* Non-zero while a trace records. The one branch tracing costs when off:
 * relaxed, a hint; the buffers are found through w->trace (acquire). */
extern _Atomic int weft__trace_on;

/* Record an event on w's buffer. Owner worker, only when weft__trace_on. */
void weft__trace_record(struct worker *w, unsigned kind, uint64_t a);

static inline void weft__trace(struct worker *w, unsigned kind, uint64_t a)
{
    if (__builtin_expect(atomic_load_explicit(&weft__trace_on, memory_order_relaxed), 0))
        weft__trace_record(w, kind, a);
}

/* Start recording on every worker (events_per_worker: buffer size, 0:
 * default). 0, -EBUSY if a trace records already, -EPERM if no runtime
 * runs, -ENOMEM. Any thread while the runtime runs. */
int  weft__trace_begin(size_t events_per_worker);
/* Stop recording and write what was recorded to fd as trace-event JSON.
 * 0, -EINVAL if no trace records, or a negative errno from writing. Any
 * thread while the runtime runs (the run's end calls it too). */
int  weft__trace_end(int fd);
/* WEFT_TRACE=file: start recording at the start of a run. The caller of
 * weft_run, once the workers exist. */
void weft__trace_run_start(void);
/* The run ends (workers joined): write WEFT_TRACE's file if one records,
 * and free every buffer. The caller of weft_run. */
void weft__trace_run_end(void);

#endif
