/*
 * Contexts: making them, the sanitizer halves of a switch, and reporting
 * stack overflows.
 *
 * Overflow reporting. A guarded stack that overflows touches its guard
 * region and the kernel raises SIGSEGV on the overflowing thread, whose
 * stack is by then unusable, so the handler runs on an alternate signal
 * stack that weft__ctx_thread_prepare() gives every thread that switches
 * contexts. The handler looks at the context running on the thread
 * (weft__ctx_running): if the faulting address lies in that context's
 * guard region it prints one line naming the owner and aborts. Any other
 * SIGSEGV is passed on to whatever handler was installed before ours, or
 * to the default action, exactly as if we had never been there. A canary
 * stack has no guard, but a gap below it (stack.c); every time its
 * context is switched away from (weft__ctx_check_canary in ctx.h: every
 * park, yield and exit of what runs there), its lowest word is checked,
 * which catches an overflow that came back up over it, and so is the
 * stack pointer, which catches a frame that reaches into the gap and is
 * still live (a fiber that parks deep).
 *
 * Crash reports. The same handler also catches SIGILL, SIGFPE and
 * SIGABRT, and for any fatal signal raised while a fiber or coroutine
 * runs it first prints who was running: the owner's id and name, what
 * the owner layer adds (the scheduler's hook: the fiber's last wait), and
 * a backtrace through the signal frame (glibc's backtrace, whose unwinder
 * reads the CFI; symbols as backtrace_symbols_fd finds them in the
 * dynamic symbol tables). Then the signal goes on as described above, so
 * the process still dies of it (or the program's own handler runs). One
 * report per thread: an overflow's abort() does not report twice.
 */
#include "ctx/ctx.h"

#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx/arch/x86_64.h"
#include "common/fmt.h"

__thread weft__ctx *weft__ctx_running __attribute__((tls_model("initial-exec")));

void weft__ctx_init_current(weft__ctx *c)
{
    weft__ctx *cur = weft__ctx_running;
    memset(c, 0, sizeof *c);
    if (cur) {
        c->canary = cur->canary;
        c->stack = cur->stack;
        c->owner_kind = cur->owner_kind;
        c->owner = cur->owner;
#if WEFT__ASAN
        c->asan_bottom = cur->asan_bottom;
        c->asan_size = cur->asan_size;
#endif
    }
#if WEFT__TSAN
    c->tsan_fiber = __tsan_get_current_fiber();
    c->tsan_owned = 0;
#endif
}

void weft__ctx_make(weft__ctx *c, weft__stack *stack, void (*entry)(void *))
{
    /* Field by field rather than a memset: this runs on every fiber's
     * first pick. */
    c->stack = stack;
    c->canary = stack->kind == WEFT__STACK_CANARY_MMAP || stack->kind == WEFT__STACK_CANARY_HEAP;
    c->owner_kind = WEFT__OWNER_THREAD;
    c->owner = NULL;
    c->sp = weft__arch_make_frame(stack->top, entry);
#if WEFT__ASAN
    c->asan_fake = NULL;
    c->asan_bottom = stack->lo;
    c->asan_size = (size_t)(stack->top - stack->lo);
#endif
#if WEFT__TSAN
    c->tsan_fiber = __tsan_create_fiber(0);
    c->tsan_owned = 1;
#endif
}

void weft__ctx_destroy(weft__ctx *c)
{
#if WEFT__TSAN
    if (c->tsan_owned && c->tsan_fiber) {
        __tsan_destroy_fiber(c->tsan_fiber);
        c->tsan_fiber = NULL;
        c->tsan_owned = 0;
    }
#else
    (void)c;
#endif
}

#if WEFT__ASAN
/* The context that switched last on this thread, so the arriving side can
 * record the bounds ASan reports for it. Accessed through noinline
 * functions: after a switch the code may be on another thread, and a TLS
 * address computed before the switch must not be reused. */
static __thread weft__ctx *asan_switcher;

__attribute__((noinline)) void weft__ctx_asan_leave(weft__ctx *from, weft__ctx *to, int exiting)
{
    asan_switcher = exiting ? NULL : from;
    __sanitizer_start_switch_fiber(exiting ? NULL : &from->asan_fake,
                                   to->asan_bottom, to->asan_size);
}

__attribute__((noinline)) void weft__ctx_asan_arrive(weft__ctx *self)
{
    const void *bottom = NULL;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(self ? self->asan_fake : NULL, &bottom, &size);
    weft__ctx *prev = asan_switcher;
    if (prev) {
        /* For a thread's own stack ASan is the one that knows the bounds;
         * for our stacks this rewrites what weft__ctx_make set. */
        prev->asan_bottom = bottom;
        prev->asan_size = size;
    }
}
#endif

/* First C code on a fresh stack; called by weft__ctx_trampoline. */
void weft__ctx_start(void *val, void (*entry)(void *));
void weft__ctx_start(void *val, void (*entry)(void *))
{
#if WEFT__ASAN
    weft__ctx_asan_arrive(NULL);
#endif
    entry(val);
}

void weft__ctx_entry_returned(void);
void weft__ctx_entry_returned(void)
{
    static const char msg[] = "weft: internal error: a context entry returned\n";
    (void)!write(2, msg, sizeof msg - 1);
    abort();
}

void weft__ctx_exit(weft__ctx *from, weft__ctx *to, void *val)
{
    weft__ctx_leave(from, to, 1);
    weft__ctx_jump(&from->sp, to->sp, val);
    __builtin_unreachable();
}

/* ---- overflow reports ---------------------------------------------- */

static void report_overflow(const weft__ctx *c)
{
    char buf[256];
    struct weft__fmt f = WEFT__FMT_INIT(buf);
    weft__fmt_str(&f, "weft: stack overflow in ");
    weft__fmt_str(&f, c->owner_kind == WEFT__OWNER_FIBER ? "fiber"
                      : c->owner_kind == WEFT__OWNER_CORO ? "coroutine" : "thread");
    weft__fmt_str(&f, " ");
    weft__fmt_u64(&f, c->owner ? c->owner->id : 0);
    weft__fmt_str(&f, " '");
    weft__fmt_str(&f, c->owner && c->owner->name ? c->owner->name : "");
    weft__fmt_str(&f, "' (stack ");
    weft__fmt_u64(&f, c->stack ? weft__stack_size(c->stack) : 0);
    weft__fmt_str(&f, " bytes)\n");
    weft__fmt_write(&f, 2);
}

static __thread int crash_reported;

_Atomic(weft__ctx_crash_fn) weft__ctx_crash_hook;

static void report_details(const weft__ctx *c, int backtrace_too);

/* backtrace_too: 0 when the overflow was caught in the guard, in the
 * SIGSEGV handler: walking up from the faulting frame would read the
 * guard and fault again inside the handler. */
__attribute__((noreturn)) static void overflow(const weft__ctx *c, int backtrace_too)
{
    crash_reported = 1;
    report_overflow(c);
    if (c->owner_kind != WEFT__OWNER_THREAD)
        report_details(c, backtrace_too);
    abort();
}

void weft__ctx_overflow(const weft__ctx *c)
{
    overflow(c, 1);
}

void weft__ctx_check_canary_stack(const weft__ctx *c)
{
    /* The frame address, not a local's: under ASan locals may live on a
     * fake stack elsewhere. Callers run on c's stack, so a frame below
     * lo is an overflow still in progress, held in the gap. */
    const char *sp = __builtin_frame_address(0);
    const weft__stack *s = c->stack;
    if (__builtin_expect(sp < s->lo, 0) ||
        __builtin_expect(*(const uint64_t *)(const void *)s->lo != weft__stack_canary_value(s), 0))
        overflow(c, 1);
}

enum { SIG_SEGV, SIG_BUS, SIG_ILL, SIG_FPE, SIG_ABRT, NSIGS };
static const int fatal_sigs[NSIGS] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
static const char *const fatal_names[NSIGS] = { "SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT" };
static struct sigaction prev_act[NSIGS];

static int sig_index(int sig)
{
    for (int i = 0; i < NSIGS; i++)
        if (fatal_sigs[i] == sig)
            return i;
    return SIG_SEGV;
}

/* A fatal signal while the context c (a fiber's or a coroutine's) runs:
 * who it was, its last wait, where. Async-signal-safe but for glibc's
 * backtrace, which is warmed up at install time (its first call loads
 * libgcc_s). */
static void report_crash(const weft__ctx *c, int sig, const siginfo_t *si)
{
    char buf[320];
    struct weft__fmt f = WEFT__FMT_INIT(buf);
    weft__fmt_str(&f, "weft: fatal signal ");
    weft__fmt_str(&f, fatal_names[sig_index(sig)]);
    if (sig == SIGSEGV || sig == SIGBUS) {
        weft__fmt_str(&f, " (address 0x");
        weft__fmt_hex(&f, (uint64_t)(uintptr_t)si->si_addr);
        weft__fmt_str(&f, ")");
    }
    weft__fmt_str(&f, " in ");
    weft__fmt_str(&f, c->owner_kind == WEFT__OWNER_FIBER ? "fiber" : "coroutine");
    weft__fmt_str(&f, " ");
    weft__fmt_u64(&f, c->owner ? c->owner->id : 0);
    weft__fmt_str(&f, " '");
    weft__fmt_str(&f, c->owner && c->owner->name ? c->owner->name : "");
    weft__fmt_str(&f, "'\n");
    weft__fmt_write(&f, 2);
    report_details(c, 1);
}

/* The owner layer's words on c (its last waits), then a backtrace of
 * the calling thread, through the signal frame when in a handler. */
static void report_details(const weft__ctx *c, int backtrace_too)
{
    /* Relaxed: see ctx.h. */
    weft__ctx_crash_fn hook = atomic_load_explicit(&weft__ctx_crash_hook, memory_order_relaxed);
    if (hook)
        hook(c, 2);
    if (!backtrace_too)
        return;
    static const char bt[] = "weft: backtrace (innermost first):\n";
    (void)!write(2, bt, sizeof bt - 1);
    void *pcs[64];
    int n = backtrace(pcs, 64);
    backtrace_symbols_fd(pcs, n, 2);
}

static void fatal_handler(int sig, siginfo_t *si, void *uc)
{
    const weft__ctx *c = weft__ctx_running;
    if ((sig == SIGSEGV || sig == SIGBUS) && c && c->stack && c->stack->guard) {
        const char *a = si->si_addr;
        const char *glo = (const char *)c->stack->lo - c->stack->guard;
        if (a >= glo && a < (const char *)c->stack->lo)
            overflow(c, 0);
    }
    if (c && c->owner_kind != WEFT__OWNER_THREAD && !crash_reported) {
        crash_reported = 1;
        report_crash(c, sig, si);
    }
    /* Hand it on as if we had never been installed. */
    struct sigaction *prev = &prev_act[sig_index(sig)];
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
        prev->sa_sigaction(sig, si, uc);
    } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
        prev->sa_handler(sig);
    } else {
        /* Re-raise with the default action when the faulting instruction
         * runs again (an ignored SIGSEGV would only fault forever). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, prev->sa_handler == SIG_IGN ? &dfl : prev, NULL);
    }
}

static void install_handler(void)
{
    void *warm[1];
    (void)backtrace(warm, 1); /* loads libgcc_s now, not in a handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fatal_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < NSIGS; i++)
        sigaction(fatal_sigs[i], &sa, &prev_act[i]);
}

#define ALTSTACK_SIZE (64 * 1024)
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static pthread_key_t altstack_key;
static __thread int altstack_ready;

static void altstack_release(void *p)
{
    stack_t ss;
    if (sigaltstack(NULL, &ss) == 0 && ss.ss_sp == p) {
        stack_t off = { .ss_flags = SS_DISABLE };
        sigaltstack(&off, NULL);
    }
    munmap(p, ALTSTACK_SIZE);
}

static void handler_init(void)
{
    pthread_key_create(&altstack_key, altstack_release);
    install_handler();
}

void weft__ctx_thread_prepare(void)
{
    if (__builtin_expect(altstack_ready, 1))
        return;
    pthread_once(&handler_once, handler_init);
    altstack_ready = 1;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) && cur.ss_size >= 16384)
        return; /* the thread already has one (the application's, or ASan's) */
    void *p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return; /* overflows still abort, only without the message */
    stack_t ss = { .ss_sp = p, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(p, ALTSTACK_SIZE);
        return;
    }
    pthread_setspecific(altstack_key, p);
}
