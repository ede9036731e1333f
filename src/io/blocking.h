/*
 * The blocking pool: plain threads that run the calls a worker must not
 * block in (weft_blocking, regular-file I/O, name lookups). Internal. The
 * design is argued at the top of blocking.c and in docs/design.md
 * ("Blocking pool").
 */
#ifndef WEFT_IO_BLOCKING_H
#define WEFT_IO_BLOCKING_H

#include <stdint.h>

/* Calls handed to the pool since the process started (not the ones run
 * inline). A relaxed count, for statistics and tests. Any thread. */
uint64_t weft__blocking_calls(void);
/* Pool threads alive now (busy, idle, or about to exit). A relaxed
 * snapshot. Any thread. */
unsigned weft__blocking_threads(void);
/* The thread cap of the pool in this run (WEFT_BLOCKING_MAX, read when
 * the run's first call started the pool), or 0 while it has not started.
 * Any thread. */
unsigned weft__blocking_cap(void);
/* The runtime is stopping (every worker has exited, so no fiber waits on
 * the pool): wake the idle threads, wait until every pool thread has
 * exited, join them, and forget the configuration so that the next run
 * reads the environment again. The caller of weft_run, after the workers
 * joined and before the runtime's queues and pollers are freed (a pool
 * thread's last weft__ready may still be touching them). */
void weft__blocking_stop(void);

#endif
