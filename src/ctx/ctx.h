/*
 * Internal context-switch and stack layer. Nothing here is installed.
 *
 * A weft__ctx is one execution context: a fiber, a coroutine, or a plain
 * thread's own stack while it has switched into one of those. Switching
 * is weft__ctx_switch(); it costs one call into the assembly in
 * src/ctx/arch/ plus, in sanitizer builds, the fiber annotations ASan and
 * TSan need. Stacks come from src/ctx/stack.c.
 */
#ifndef WEFT_CTX_H
#define WEFT_CTX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/sanitizer.h"

/* ---- stacks (stack.c) ------------------------------------------------ */

/* How a stack's lower end is protected. */
enum weft__stack_kind {
    WEFT__STACK_GUARD_MADV = 1, /* MADV_GUARD_INSTALL region, no extra VMA  */
    WEFT__STACK_GUARD_MPROT,    /* PROT_NONE pages: one extra VMA per stack  */
    WEFT__STACK_CANARY_MMAP,    /* no guard: a gap, canary and sp checks at
                                 * switches */
    WEFT__STACK_CANARY_HEAP,    /* same, memory from the allocator (no VMA)  */
};

/*
 * A stack. The descriptor lives in the highest bytes of the stack's own
 * memory, so a stack needs no allocation besides its mapping and the pool
 * links cost nothing.
 */
typedef struct weft__stack {
    char   *lo;              /* lowest usable byte (canary word if any)  */
    size_t  size;            /* nominal size, as asked for and reported;
                              * [lo, top) may be larger: the reserve */
    char   *top;             /* one past the highest usable byte, 64-aligned */
    void   *map;             /* start of the mapping, guard included      */
    size_t  map_size;        /* bytes mapped (or allocated)               */
    size_t  guard;           /* bytes of guard (canary stacks: of gap)
                              * below lo                                 */
    unsigned kind;           /* enum weft__stack_kind                     */
    unsigned vg_id;          /* valgrind stack id (0: not registered)     */
    struct weft__stack *next;/* free-list link while pooled               */
} weft__stack;

/* Nominal size of s (what was asked for, rounded up to pages); the
 * descriptor takes the top 64 bytes of it. Any thread. */
static inline size_t weft__stack_size(const weft__stack *s)
{
    return s->size;
}

/* A stack of at least `size` bytes (0: the default): sizes up to 1 MiB are
 * rounded up to a power of two from 16 KiB and come from the pool when one
 * is there; larger ones to whole pages. NULL with errno (ENOMEM, EINVAL for an absurd size) when
 * none can be had. Any thread. */
weft__stack *weft__stack_get(size_t size);
/* Give a stack back (to the pool, or unmap it). Any thread. */
void weft__stack_put(weft__stack *s);
/* The nominal size weft__stack_get(size) would serve (0: the default;
 * SIZE_MAX for a size it refuses). Any thread. */
size_t weft__stack_served_size(size_t size);
/* The canary value a stack of this kind must keep in its lowest word. */
uint64_t weft__stack_canary_value(const weft__stack *s);
/* Bytes of the stack that have been written, measured by scanning up from
 * the lowest word for the first non-zero one (fresh and trimmed pages read
 * as zero). Any thread; the stack must not be running. */
size_t weft__stack_used(const weft__stack *s);

size_t weft__stack_default_size(void);
/* Set the default (rounded like weft__stack_get); 0 restores the built-in
 * 256 KiB. Returns -EINVAL below 16 KiB or above 1 GiB. */
int    weft__stack_set_default_size(size_t size);

/* Test and tuning knobs (internal). */
/* Guarded stacks are made only while the process holds at most this
 * many mappings (counted for real, see stack.c); (size_t)-1 restores the
 * default (half of /proc/sys/vm/max_map_count). */
void   weft__stack_set_map_budget(size_t vmas);
/* Forget MADV_GUARD_INSTALL support (1: pretend the kernel lacks it). */
void   weft__stack_force_mprotect_guard(int on);
/* Empty the calling thread's cache and the global pool (unmaps). */
void   weft__stack_pool_drain(void);

struct weft__stack_stats {
    size_t mapped;        /* stacks that exist now, pooled ones included   */
    size_t pooled;        /* of those, in the global pool or this thread's cache */
    size_t guarded_vmas;  /* VMAs charged to guarded stacks                */
    size_t trims;         /* deep-touched stacks whose pages were dropped   */
};
void   weft__stack_stats(struct weft__stack_stats *out);

/* ---- contexts (ctx.c) -------------------------------------------------- */

enum weft__owner_kind { WEFT__OWNER_THREAD = 0, WEFT__OWNER_FIBER, WEFT__OWNER_CORO };

/* Who runs on a context, as overflow and crash reports name it: the owner
 * (a fiber's or coroutine's control block) keeps these two fields, and
 * the context points at them, so a rename needs no copy. */
struct weft__owner {
    uint64_t id;
    char    *name;   /* NUL-terminated, owned by the owner; may be NULL */
};

typedef struct weft__ctx {
    void        *sp;         /* saved stack pointer while suspended          */
    weft__stack *stack;      /* NULL: a thread's own stack                   */
    const struct weft__owner *owner; /* NULL: a thread                       */
    uint8_t      owner_kind; /* enum weft__owner_kind                        */
    uint8_t      canary;     /* 1: check the stack's canary word when leaving */
#if WEFT__ASAN
    void        *asan_fake;  /* ASan fake-stack handle while suspended       */
    const void  *asan_bottom;
    size_t       asan_size;
#endif
#if WEFT__TSAN
    void        *tsan_fiber;
    int          tsan_owned; /* created by us, destroyed by weft__ctx_destroy */
#endif
} weft__ctx;

/* The context running on this thread (NULL before any switch). Read by
 * the SIGSEGV handler to attribute a guard-page hit. initial-exec: one
 * %fs-relative access, no __tls_get_addr call in the switch path. */
extern __thread weft__ctx *weft__ctx_running
    __attribute__((tls_model("initial-exec")));

/* The assembly (src/ctx/arch/). */
void *weft__ctx_jump(void **save_sp, void *to_sp, void *val);
extern const char weft__ctx_resume_pc[];
/* Call fn(arg) on the current stack, with the caller saved as if it were
 * a context suspended at *save_sp (the frame weft__ctx_jump leaves), so
 * unwinders can walk the caller while fn runs or parks. Returns fn's
 * result. The caller is never resumed through *save_sp. */
void *weft__ctx_call(void **save_sp, void *(*fn)(void *), void *arg);

/* Describe the calling thread's own stack as a context to switch from.
 * Copies the owner, stack and canary of the context running now, if any,
 * so a nested switch reports the right owner. Calling thread only. */
void weft__ctx_init_current(weft__ctx *c);
/* Make a fresh context on `stack` that starts in entry(val), val being the
 * value passed by the first switch to it. entry must never return: it ends
 * with weft__ctx_exit(). */
void weft__ctx_make(weft__ctx *c, weft__stack *stack, void (*entry)(void *val));
/* Release sanitizer state of a context that will never run again and is
 * not running now. Any thread. */
void weft__ctx_destroy(weft__ctx *c);
/* Make sure the calling thread can report a stack overflow: a process-wide
 * SIGSEGV handler and an alternate signal stack for this thread. Cheap
 * after the first call on a thread. */
void weft__ctx_thread_prepare(void);

/* Report a broken canary or guard hit on c and abort. */
__attribute__((noreturn, cold)) void weft__ctx_overflow(const weft__ctx *c);

/* Set by the owner layer (the scheduler): prints, async-signal-safely,
 * what it knows of context c (a fiber's last wait) to fd when a fatal
 * signal hits while c runs. NULL: nothing more. */
typedef void (*weft__ctx_crash_fn)(const weft__ctx *c, int fd);
/* Relaxed loads and stores: the hook is static code, set once before
 * any fiber runs; a handler that sees NULL just prints less. */
extern _Atomic(weft__ctx_crash_fn) weft__ctx_crash_hook;

/* Sanitizer halves of a switch; compiled away in other builds. */
#if WEFT__ASAN
void weft__ctx_asan_leave(weft__ctx *from, weft__ctx *to, int exiting);
void weft__ctx_asan_arrive(weft__ctx *from);
#endif

/* The check of a canary stack (ctx.c): its canary word, and whether the
 * stack pointer is below the stack (a frame that overflowed into the gap
 * and is still live). Returns only if both are fine. Runs on c's stack. */
void weft__ctx_check_canary_stack(const weft__ctx *c);

/* At every switch away from c (so at every park, yield and exit of what
 * runs on it), on c's stack. Stacks with a guard cost one load and a
 * branch. */
static inline void weft__ctx_check_canary(const weft__ctx *c)
{
    if (__builtin_expect(c->canary, 0))
        weft__ctx_check_canary_stack(c);
}

/* Everything a switch does before the jump: the canary check, the
 * sanitizers' half, and the running-context note. exiting: `from` will
 * never run again (ASan then frees its fake stack). */
static inline void weft__ctx_leave(weft__ctx *from, weft__ctx *to, int exiting)
{
    weft__ctx_check_canary(from);
#if WEFT__ASAN
    weft__ctx_asan_leave(from, to, exiting);
#else
    (void)exiting;
#endif
#if WEFT__TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    weft__ctx_running = to;
}

/*
 * Suspend `from` (the context running on this thread) and run `to`. Returns
 * the `val` of the switch that later resumes `from`. Calling thread only;
 * `to` must be suspended and not running anywhere else.
 */
static inline void *weft__ctx_switch(weft__ctx *from, weft__ctx *to, void *val)
{
    weft__ctx_leave(from, to, 0);
    void *r = weft__ctx_jump(&from->sp, to->sp, val);
#if WEFT__ASAN
    weft__ctx_asan_arrive(from);
#endif
    return r;
}

/* Leave `from` for good and run `to`. */
__attribute__((noreturn))
void weft__ctx_exit(weft__ctx *from, weft__ctx *to, void *val);

#endif
