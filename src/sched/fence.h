/*
 * The seq_cst fence of the idle protocol. Internal.
 *
 * The park/wake protocol (sched.c) orders a store on one side against a
 * load on the other (Dekker's pattern), which needs a full fence after
 * the store. ThreadSanitizer does not model atomic_thread_fence (gcc
 * warns, -Wtsan), so TSan builds use a seq_cst read-modify-write of a
 * private word instead: on x86-64 the same locked instruction the fence
 * compiles to, and since these fences only order atomics against atomics
 * (they never publish plain data; release/acquire pairs do that), TSan's
 * view of happens-before does not depend on them.
 */
#ifndef WEFT_SCHED_FENCE_H
#define WEFT_SCHED_FENCE_H

#include <stdatomic.h>

#include "common/sanitizer.h"

#if WEFT__TSAN
extern _Atomic int weft__fence_word;
#endif

static inline void weft__fence_seq_cst(void)
{
#if WEFT__TSAN
    atomic_fetch_add_explicit(&weft__fence_word, 0, memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

#endif
