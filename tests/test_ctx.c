/*
 * test-ctx: the context switch and the stacks.
 *
 * Registers and FP control words across switches, stack alignment at
 * entry, deep recursion, guard-page and canary overflow detection (in
 * forked children, expecting the report and SIGABRT), the map-budget
 * fallback, the pool and its trimming.
 */
#include <check.h>
#include <errno.h>
#include <fenv.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctx/ctx.h"

#include "test_util.h"

/* From ctx_regs_x86_64.S. */
void regs_roundtrip(void **save_sp, void *to_sp, uint64_t out[6]);
void clobber_and_jump(void **save_sp, void *to_sp);
uintptr_t caller_sp(void);

static weft__ctx main_ctx, other_ctx;

/* ---- callee-saved registers ---------------------------------------- */

static void clobber_entry(void *val)
{
    (void)val;
    for (;;)
        clobber_and_jump(&other_ctx.sp, main_ctx.sp);
}

START_TEST(callee_saved_registers_survive)
{
#if WEFT__ASAN || WEFT__TSAN
    /* Raw, unannotated jumps: the assembly is the same in every build and
     * this test runs in the release build and under valgrind. */
    return;
#endif
    weft__stack *st = weft__stack_get(0);
    ck_assert_ptr_nonnull(st);
    weft__ctx_init_current(&main_ctx);
    weft__ctx_make(&other_ctx, st, clobber_entry);
    static const uint64_t want[6] = {
        0x1b1b1b1b1b1b1b1bu, 0x2b2b2b2b2b2b2b2bu, 0x3c3c3c3c3c3c3c3cu,
        0x4d4d4d4d4d4d4d4du, 0x5e5e5e5e5e5e5e5eu, 0x6f6f6f6f6f6f6f6fu,
    };
    static const char *names[6] = { "rbx", "rbp", "r12", "r13", "r14", "r15" };
    /* First round enters the fresh context; the next ones resume it. */
    for (int round = 0; round < 3; round++) {
        uint64_t got[6] = { 0 };
        regs_roundtrip(&main_ctx.sp, other_ctx.sp, got);
        for (int i = 0; i < 6; i++)
            ck_assert_msg(got[i] == want[i], "round %d: %s = %#lx, want %#lx", round,
                          names[i], (unsigned long)got[i], (unsigned long)want[i]);
    }
    weft__ctx_destroy(&other_ctx);
    weft__stack_put(st);
}
END_TEST

/* ---- FP control words ------------------------------------------------ */

static uint32_t get_mxcsr(void)
{
    uint32_t v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}
static void set_mxcsr(uint32_t v) { __asm__ volatile("ldmxcsr %0" : : "m"(v)); }
static uint16_t get_fpucw(void)
{
    uint16_t v;
    __asm__ volatile("fnstcw %0" : "=m"(v));
    return v;
}
static void set_fpucw(uint16_t v) { __asm__ volatile("fldcw %0" : : "m"(v)); }

/* Control bits only: the status flags in MXCSR's low 6 bits are not
 * preserved by design (the psABI makes them caller-saved). */
#define MXCSR_CTRL(v) ((v) & 0xffc0u)
/* Valgrind's x87 emulation drops the precision-control bits (9:8) of the
 * control word; under it only the rest is compared. */
#define FPUCW(v) (skip_under_valgrind() ? (unsigned)((v) & ~0x300u) : (unsigned)(v))

static uint32_t fp_seen_mxcsr_at_entry;
static uint16_t fp_seen_fpucw_at_entry;
static int fp_other_ok;

static void fp_entry(void *val)
{
    (void)val;
    fp_seen_mxcsr_at_entry = get_mxcsr();
    fp_seen_fpucw_at_entry = get_fpucw();
    /* This context's own settings: round down, 24-bit x87 precision. */
    set_mxcsr(0x3f80);
    set_fpucw(0x047f);
    for (;;) {
        weft__ctx_switch(&other_ctx, &main_ctx, NULL);
        fp_other_ok = MXCSR_CTRL(get_mxcsr()) == 0x3f80 && FPUCW(get_fpucw()) == FPUCW(0x047f);
    }
}

START_TEST(fp_control_words_survive)
{
    uint32_t saved_mxcsr = get_mxcsr();
    uint16_t saved_cw = get_fpucw();
    /* Creator's settings: round toward zero, 53-bit x87 precision. */
    set_mxcsr(0x7f80);
    set_fpucw(0x0e7f);
    weft__stack *st = weft__stack_get(0);
    ck_assert_ptr_nonnull(st);
    weft__ctx_init_current(&main_ctx);
    weft__ctx_make(&other_ctx, st, fp_entry);
    weft__ctx_switch(&main_ctx, &other_ctx, NULL);
    /* A fresh context starts with its creator's control words. */
    ck_assert_uint_eq(MXCSR_CTRL(fp_seen_mxcsr_at_entry), 0x7f80);
    ck_assert_uint_eq(FPUCW(fp_seen_fpucw_at_entry), FPUCW(0x0e7f));
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(MXCSR_CTRL(get_mxcsr()), 0x7f80);
        ck_assert_uint_eq(FPUCW(get_fpucw()), FPUCW(0x0e7f));
        fp_other_ok = 0;
        weft__ctx_switch(&main_ctx, &other_ctx, NULL);
        ck_assert_int_eq(fp_other_ok, 1);
    }
    ck_assert_uint_eq(MXCSR_CTRL(get_mxcsr()), 0x7f80);
    ck_assert_uint_eq(FPUCW(get_fpucw()), FPUCW(0x0e7f));
    set_mxcsr(saved_mxcsr);
    set_fpucw(saved_cw);
    weft__ctx_destroy(&other_ctx);
    weft__stack_put(st);
}
END_TEST

/* ---- alignment and the handed-over value ------------------------------ */

static uintptr_t align_sp_seen;
static void *align_val_seen;

static void align_entry(void *val)
{
    align_val_seen = val;
    align_sp_seen = caller_sp();
    void *next = weft__ctx_switch(&other_ctx, &main_ctx, (void *)0x1234);
    align_val_seen = next;
    weft__ctx_exit(&other_ctx, &main_ctx, (void *)0x5678);
}

START_TEST(entry_stack_is_16_byte_aligned)
{
    /* Every stack size the pool can hand out, not just the default. */
    static const size_t sizes[] = { 0, 16384, 20000, 65536 + 4096, 1 << 20, (2 << 20) + 1 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        weft__stack *st = weft__stack_get(sizes[i]);
        ck_assert_ptr_nonnull(st);
        weft__ctx_init_current(&main_ctx);
        weft__ctx_make(&other_ctx, st, align_entry);
        align_sp_seen = 1;
        void *r = weft__ctx_switch(&main_ctx, &other_ctx, (void *)0xabc);
        ck_assert_ptr_eq(align_val_seen, (void *)0xabc);
        ck_assert_ptr_eq(r, (void *)0x1234);
        ck_assert_msg(align_sp_seen % 16 == 0, "rsp at a call site in the entry: %#lx",
                      (unsigned long)align_sp_seen);
        ck_assert(align_sp_seen > (uintptr_t)st->lo && align_sp_seen < (uintptr_t)st->top);
        r = weft__ctx_switch(&main_ctx, &other_ctx, (void *)0xdef);
        ck_assert_ptr_eq(align_val_seen, (void *)0xdef);
        ck_assert_ptr_eq(r, (void *)0x5678);
        weft__ctx_destroy(&other_ctx);
        weft__stack_put(st);
    }
}
END_TEST

/* ---- deep recursion ----------------------------------------------------- */

static unsigned long recurse(int depth)
{
    volatile unsigned char frame[900];
    for (size_t i = 0; i < sizeof frame; i++)
        frame[i] = (unsigned char)(depth + i);
    if (depth == 0)
        return frame[5];
    return recurse(depth - 1) + frame[depth % sizeof frame];
}

static unsigned long recurse_result;
static void recurse_entry(void *val)
{
    recurse_result = recurse((int)(intptr_t)val);
    weft__ctx_exit(&other_ctx, &main_ctx, NULL);
}

START_TEST(deep_recursion_within_the_stack)
{
    /* About 200 KiB of frames on a 256 KiB stack (less under sanitizers,
     * whose frames are several times larger). */
    int depth = (WEFT__ASAN || WEFT__TSAN) ? 40 : 200;
    unsigned long want = recurse(depth);
    weft__stack *st = weft__stack_get(256 * 1024);
    ck_assert_ptr_nonnull(st);
    weft__ctx_init_current(&main_ctx);
    weft__ctx_make(&other_ctx, st, recurse_entry);
    weft__ctx_switch(&main_ctx, &other_ctx, (void *)(intptr_t)depth);
    ck_assert_uint_eq(recurse_result, want);
    if (!(WEFT__ASAN || WEFT__TSAN))
        ck_assert_uint_ge(weft__stack_used(st), 150 * 1024);
    weft__ctx_destroy(&other_ctx);
    weft__stack_put(st);
}
END_TEST

/* ---- overflow detection --------------------------------------------------- */

DEFINE_RUNAWAY(runaway, 512)

static void runaway_entry(void *val)
{
    (void)val;
    runaway(0);
    weft__ctx_exit(&other_ctx, &main_ctx, NULL);
}

/* In a child: a fiber-owned context on a stack of `kind` recurses forever. */
static void child_overflow(int force_mprotect)
{
    weft__ctx_thread_prepare();
    weft__stack_force_mprotect_guard(force_mprotect);
    weft__stack *st = weft__stack_get(64 * 1024);
    if (!st)
        _exit(3);
    if (force_mprotect && st->kind != WEFT__STACK_GUARD_MPROT)
        _exit(4);
    weft__ctx_init_current(&main_ctx);
    weft__ctx_make(&other_ctx, st, runaway_entry);
    static char name[] = "runaway";
    static const struct weft__owner who = { 42, name };
    other_ctx.owner_kind = WEFT__OWNER_FIBER;
    other_ctx.owner = &who;
    weft__ctx_switch(&main_ctx, &other_ctx, NULL);
    _exit(5); /* not reached */
}

static void child_overflow_madv(void) { child_overflow(0); }
static void child_overflow_mprot(void) { child_overflow(1); }

static void expect_overflow_report(void (*child)(void), const char *pattern)
{
    struct child_result r = run_in_child(child);
    ck_assert_msg(r.signaled && r.sig == SIGABRT,
                  "child should abort with SIGABRT: signaled=%d sig=%d status=%d, stderr: %s",
                  r.signaled, r.sig, r.status, r.err);
    ck_assert_msg(matches(r.err, pattern), "stderr %s does not match /%s/", r.err, pattern);
}

START_TEST(guard_overflow_is_reported)
{
    if (skip_under_valgrind() || WEFT__ASAN)
        return; /* ASan reports the overflow itself, before our handler */
    expect_overflow_report(child_overflow_madv,
        "^weft: stack overflow in fiber 42 'runaway' \\(stack 65536 bytes\\)\n");
}
END_TEST

START_TEST(mprotect_guard_overflow_is_reported)
{
    if (skip_under_valgrind() || WEFT__ASAN)
        return;
    expect_overflow_report(child_overflow_mprot,
        "^weft: stack overflow in fiber 42 'runaway' \\(stack 65536 bytes\\)\n");
}
END_TEST

/* Canary stacks: a frame that reaches the lowest word breaks the canary,
 * and the next switch away from the context reports it. */
static void canary_smash_entry(void *val)
{
    weft__stack *st = val;
    volatile unsigned char *low = (volatile unsigned char *)st->lo;
    for (int i = 0; i < 64; i++) /* what a too-deep frame would write */
        low[i] = 0xa5;
    weft__ctx_switch(&other_ctx, &main_ctx, NULL);
    _exit(6); /* not reached */
}

static void child_canary(void)
{
    weft__stack_set_map_budget(0);
    weft__stack *st = weft__stack_get(64 * 1024);
    if (!st || st->kind != WEFT__STACK_CANARY_MMAP)
        _exit(3);
    weft__ctx_init_current(&main_ctx);
    weft__ctx_make(&other_ctx, st, canary_smash_entry);
    static char name[] = "smash";
    static const struct weft__owner who = { 7, name };
    other_ctx.owner_kind = WEFT__OWNER_CORO;
    other_ctx.owner = &who;
    weft__ctx_switch(&main_ctx, &other_ctx, st);
    _exit(5);
}

START_TEST(canary_overflow_is_reported)
{
    if (skip_under_valgrind())
        return;
    expect_overflow_report(child_canary,
        "^weft: stack overflow in coroutine 7 'smash' \\(stack 65536 bytes\\)\n");
}
END_TEST

/* A frame that reaches below a canary stack without writing its canary
 * word (a big local, most of it untouched) lands in the gap below the
 * stack, and the switch away, made with that frame still live, finds
 * the stack pointer below the stack. */
static __attribute__((noinline)) void deep_frame_then_switch(weft__stack *st)
{
    char *here = __builtin_frame_address(0);
    size_t depth = (size_t)(here - st->lo) + 4096;
    volatile char *frame = __builtin_alloca(depth);
    frame[0] = 1;
    weft__ctx_switch(&other_ctx, &main_ctx, NULL);
    frame[depth - 1] = frame[0];
}

static void canary_deep_entry(void *val)
{
    deep_frame_then_switch(val);
    _exit(6); /* not reached */
}

static void child_canary_deep(void)
{
    weft__stack_set_map_budget(0);
    weft__stack *st = weft__stack_get(64 * 1024);
    if (!st || st->kind != WEFT__STACK_CANARY_MMAP)
        _exit(3);
    weft__ctx_init_current(&main_ctx);
    weft__ctx_make(&other_ctx, st, canary_deep_entry);
    static char name[] = "deep";
    static const struct weft__owner who = { 8, name };
    other_ctx.owner_kind = WEFT__OWNER_CORO;
    other_ctx.owner = &who;
    weft__ctx_switch(&main_ctx, &other_ctx, st);
    _exit(5);
}

START_TEST(canary_stack_frame_below_is_reported)
{
    if (skip_under_valgrind() || WEFT__ASAN)
        return; /* ASan checks the frame itself */
    expect_overflow_report(child_canary_deep,
        "^weft: stack overflow in coroutine 8 'deep' \\(stack 65536 bytes\\)\n");
}
END_TEST

/* ---- map budget fallback --------------------------------------------------- */

static void noop_entry(void *val)
{
    (void)val;
    weft__ctx_exit(&other_ctx, &main_ctx, (void *)1);
}

/* The mappings this process holds (lines of /proc/self/maps). */
static size_t maps_held(void)
{
    size_t n = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    for (int c; (c = getc(f)) != EOF;)
        n += c == '\n';
    fclose(f);
    return n;
}

/* mprotect guards cost two mappings a stack: with a budget of mappings a
 * little above what the process holds, stacks past it get no guard (a
 * canary, and a gap below), and every one of them still runs code. */
START_TEST(map_budget_falls_back_to_canaries)
{
    struct weft__stack_stats before;
    weft__stack_pool_drain();
    weft__stack_stats(&before);
    weft__stack_force_mprotect_guard(1);
    enum { N = 300, BUDGET = 40 };
    size_t held = maps_held();
    weft__stack_set_map_budget(held + BUDGET);
    weft__stack *st[N];
    int guarded = 0, canary = 0;
    for (int i = 0; i < N; i++) {
        st[i] = weft__stack_get(32 * 1024);
        ck_assert_msg(st[i] != NULL, "stack %d: %s", i, strerror(errno));
        if (st[i]->kind == WEFT__STACK_GUARD_MADV || st[i]->kind == WEFT__STACK_GUARD_MPROT) {
            guarded++;
        } else {
            canary++;
            ck_assert_uint_ge(st[i]->guard, 64 * 1024); /* the gap */
        }
    }
    /* Two mappings a guarded stack, but the first may merge with a
     * neighbouring mapping of the same protection (valgrind places maps
     * differently): the count is of real mappings, so allow that one. */
    ck_assert_int_gt(guarded, 0);
    ck_assert_int_le(guarded, BUDGET / 2 + 1);
    ck_assert_int_ge(canary, N - BUDGET / 2 - 1);
    /* Every one of them runs code. */
    for (int i = 0; i < N; i++) {
        weft__ctx_init_current(&main_ctx);
        weft__ctx_make(&other_ctx, st[i], noop_entry);
        ck_assert_ptr_eq(weft__ctx_switch(&main_ctx, &other_ctx, NULL), (void *)1);
        weft__ctx_destroy(&other_ctx);
    }
    for (int i = 0; i < N; i++)
        weft__stack_put(st[i]);
    weft__stack_set_map_budget((size_t)-1);
    weft__stack_force_mprotect_guard(0);
    weft__stack_pool_drain(); /* 32 KiB stacks are pooled */
    struct weft__stack_stats after;
    weft__stack_stats(&after);
    ck_assert_uint_eq(after.guarded_vmas, before.guarded_vmas);
    ck_assert_uint_eq(after.mapped, before.mapped);
}
END_TEST

/* The budget counts the mappings the process really holds, not one or two
 * per stack: guards installed with MADV_GUARD_INSTALL take no mapping of
 * their own and guarded neighbours merge, so with a budget only a little
 * above what the process holds, stack after stack is still guarded (a
 * million stacks were measured at 141 mappings). The old estimate stopped
 * guarding after `budget` stacks and handed out unguarded ones while
 * guards could still be had. */
START_TEST(guards_last_while_mappings_do)
{
    weft__stack_pool_drain();
    weft__stack *probe = weft__stack_get(32 * 1024);
    ck_assert_ptr_nonnull(probe);
    int madv = probe->kind == WEFT__STACK_GUARD_MADV;
    weft__stack_put(probe);
    weft__stack_pool_drain();
    if (!madv)
        return; /* mprotect guards do cost mappings: see the test above */
    enum { N = 1000, ROOM = 100 };
    size_t budget = maps_held() + ROOM;
    weft__stack_set_map_budget(budget);
    weft__stack **st = calloc(N, sizeof *st);
    int guarded = 0;
    for (int i = 0; i < N; i++) {
        st[i] = weft__stack_get(32 * 1024);
        ck_assert_ptr_nonnull(st[i]);
        if (st[i]->kind == WEFT__STACK_GUARD_MADV)
            guarded++;
        else /* only once the mappings really are at the budget */
            ck_assert_uint_ge(maps_held() + 1, budget);
    }
#if !WEFT__TSAN /* TSan maps metadata beside each mapping: no merging */
    ck_assert_int_eq(guarded, N);
#endif
    for (int i = 0; i < N; i++)
        weft__stack_put(st[i]);
    free(st);
    weft__stack_set_map_budget((size_t)-1);
    weft__stack_pool_drain();
}
END_TEST

/* ---- pool ------------------------------------------------------------------ */

START_TEST(pool_reuses_and_trims_deep_stacks)
{
    weft__stack_pool_drain();
    weft__stack *a = weft__stack_get(0);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(weft__stack_size(a), weft__stack_default_size());
    weft__stack_put(a);
    weft__stack *b = weft__stack_get(0);
    ck_assert_ptr_eq(a, b); /* the thread cache hands it straight back */

    /* Write the stack from the top down to near its end, as a deep call
     * chain would. */
    struct weft__stack_stats s0, s1;
    weft__stack_stats(&s0);
    memset(b->lo + 4096, 0x5a, (size_t)(b->top - b->lo) - 4096);
    weft__stack_put(b);
    weft__stack_stats(&s1);
    ck_assert_uint_eq(s1.trims, s0.trims + 1);
    weft__stack *c = weft__stack_get(0);
    ck_assert_ptr_eq(c, b);
    /* Below the keep line (the top 64 KiB) the pages were given back and
     * read as zero again; the top, which every user touches, is kept. */
    char *line = c->top + 64 - 64 * 1024;
#if WEFT__VALGRIND
    /* A recycled stack is undefined to memcheck; we inspect it on purpose. */
    VALGRIND_MAKE_MEM_DEFINED(c->lo, (size_t)(c->top - c->lo));
#endif
    for (char *p = c->lo + 4096; p < line; p += 512)
        ck_assert_uint_eq((unsigned char)*p, 0);
    for (char *p = line; p < c->top; p += 512)
        ck_assert_uint_eq((unsigned char)*p, 0x5a);
    /* A shallow user costs no trim. */
    memset(c->top - 4096, 0x5a, 4096);
    weft__stack_put(c);
    struct weft__stack_stats s2;
    weft__stack_stats(&s2);
    ck_assert_uint_eq(s2.trims, s1.trims);

    /* Other sizes up to 1 MiB round up to a power of two and are pooled
     * too; larger ones go back to the kernel. */
    weft__stack *odd = weft__stack_get(100 * 1024);
    ck_assert_ptr_nonnull(odd);
    ck_assert_uint_eq(weft__stack_size(odd), 128 * 1024);
    weft__stack_put(odd);
    ck_assert_ptr_eq(weft__stack_get(128 * 1024), odd);
    weft__stack_put(odd);
    weft__stack *big = weft__stack_get(3 * 1024 * 1024 + 1);
    ck_assert_ptr_nonnull(big);
    ck_assert_uint_eq(weft__stack_size(big), 3 * 1024 * 1024 + 4096);
    size_t mapped = (weft__stack_stats(&s2), s2.mapped);
    weft__stack_put(big);
    weft__stack_stats(&s2);
    ck_assert_uint_eq(s2.mapped, mapped - 1);
    weft__stack_pool_drain();
    weft__stack_stats(&s2);
    ck_assert_uint_eq(s2.pooled, 0);
}
END_TEST

START_TEST(bad_sizes_are_rejected)
{
    errno = 0;
    ck_assert_ptr_null(weft__stack_get((size_t)1 << 40));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(weft__stack_set_default_size(100), -EINVAL);
    ck_assert_int_eq(weft__stack_set_default_size((size_t)1 << 40), -EINVAL);
    size_t def = weft__stack_default_size();
    ck_assert_int_eq(weft__stack_set_default_size(128 * 1024), 0);
    ck_assert_uint_eq(weft__stack_default_size(), 128 * 1024);
    ck_assert_int_eq(weft__stack_set_default_size(0), 0);
    ck_assert_uint_eq(weft__stack_default_size(), 256 * 1024);
    ck_assert_int_eq(weft__stack_set_default_size(def), 0);
    /* A tiny request still gets a usable minimum. */
    weft__stack *s = weft__stack_get(1);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_ge(weft__stack_size(s), 16 * 1024);
    weft__stack_put(s);
}
END_TEST

static Suite *ctx_suite(void)
{
    Suite *s = suite_create("ctx");
    TCase *tc = tcase_create("switch");
    tcase_add_test(tc, callee_saved_registers_survive);
    tcase_add_test(tc, fp_control_words_survive);
    tcase_add_test(tc, entry_stack_is_16_byte_aligned);
    tcase_add_test(tc, deep_recursion_within_the_stack);
    suite_add_tcase(s, tc);
    tc = tcase_create("overflow");
    tcase_add_test(tc, guard_overflow_is_reported);
    tcase_add_test(tc, mprotect_guard_overflow_is_reported);
    tcase_add_test(tc, canary_overflow_is_reported);
    tcase_add_test(tc, canary_stack_frame_below_is_reported);
    suite_add_tcase(s, tc);
    tc = tcase_create("stacks");
    tcase_add_test(tc, map_budget_falls_back_to_canaries);
    tcase_add_test(tc, guards_last_while_mappings_do);
    tcase_add_test(tc, pool_reuses_and_trims_deep_stacks);
    tcase_add_test(tc, bad_sizes_are_rejected);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(ctx_suite)
