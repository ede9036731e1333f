/*
 * x86-64 System V context switch for weft.
 *
 * A suspended context is nothing but its saved stack pointer. Everything
 * the psABI makes callee-saved is pushed on the context's own stack before
 * the switch, and popped from the other stack after it:
 *
 *        higher addresses
 *     +------------------+
 *     | return address   |  sp + 0x38   where weft__ctx_jump "returns" to
 *     | rbp              |  sp + 0x30
 *     | rbx              |  sp + 0x28
 *     | r15              |  sp + 0x20
 *     | r14              |  sp + 0x18
 *     | r13              |  sp + 0x10
 *     | r12              |  sp + 0x08
 *     | x87 CW | MXCSR   |  sp + 0x04 (16 bits, x87 control word)
 *     |                  |  sp + 0x00 (32 bits, MXCSR control/status)
 *     +------------------+  <- saved sp (what weft__ctx_jump stores)
 *        lower addresses
 *
 * 64 bytes in all. Caller-saved registers (rax, rcx, rdx, rsi, rdi,
 * r8-r11, xmm0-15, the x87 stack) need no saving: weft__ctx_jump is an
 * ordinary call as far as the compiler is concerned.
 *
 * void *weft__ctx_jump(void **save_sp, void *to_sp, void *val)
 *   rdi: where to store the current context's stack pointer
 *   rsi: the stack pointer of the context to resume
 *   rdx: a value handed over; it is what the resumed weft__ctx_jump call
 *        returns, and, for a fresh context, the argument of its entry.
 *
 * CFI: the frame above has the same shape on both stacks, so the one
 * CFA rule ("CFA = rsp + k" while the registers are pushed) holds on
 * either side of the stack-pointer swap. A debugger or unwinder that is
 * shown a suspended context with pc = weft__ctx_resume_pc and rsp = the
 * saved sp walks straight into the code that suspended it.
 */

/* Push the frame drawn above (callee-saved registers, then MXCSR and the
 * x87 control word), with its CFI. */
.macro SAVE_FRAME
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbx, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r15, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r14, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r13, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r12, 0
    leaq    -8(%rsp), %rsp
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
.endm

/* Pop it again, MXCSR and control word excepted (the caller restores
 * those, or has no need to). */
.macro DROP_FRAME
    leaq    8(%rsp), %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore r12
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore r13
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore r14
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore r15
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore rbp
.endm

    .text
    .globl  weft__ctx_jump
    .hidden weft__ctx_jump
    .type   weft__ctx_jump, @function
    .p2align 4
weft__ctx_jump:
    .cfi_startproc
    SAVE_FRAME

    movq    %rsp, (%rdi)
    movq    %rsi, %rsp

    .globl  weft__ctx_resume_pc
    .hidden weft__ctx_resume_pc
weft__ctx_resume_pc:
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    DROP_FRAME
    movq    %rdx, %rax
    /* A plain ret, on purpose. The return-stack predictor assumes ret
     * goes back to the most recent call on this thread, which holds when
     * the resumed context suspended itself from the same call site: true
     * of weft's scheduler, where every switch goes through one function.
     * An indirect jmp (pop + jmp, as Boost.Context does) wins a ping-pong
     * between two different call sites, but leaves the return stack one
     * entry out of step, so the resumed context's later returns
     * mispredict: measured in the scheduler's yield, 13 ns with ret
     * against 21 ns with jmp. For a fresh context this ret lands in
     * weft__ctx_trampoline, which takes the value from rax. */
    ret
    .cfi_endproc
    .size   weft__ctx_jump, .-weft__ctx_jump

/*
 * void *weft__ctx_call(void **save_sp, void *(*fn)(void *), void *arg)
 *
 * Call fn(arg) on the current stack and return its result, after pushing
 * the callee-saved registers in exactly the frame weft__ctx_jump pushes
 * and storing the stack pointer in *save_sp. While fn runs (and wherever
 * it parks), *save_sp therefore describes the caller as a suspended
 * context: an unwinder shown pc = weft__ctx_resume_pc and rsp = *save_sp
 * walks into the caller. The scheduler's inline join runs a child this
 * way, so that the joiner's backtrace stays readable beneath it. The
 * caller's context is never resumed through *save_sp: fn returns here.
 * The pops at the end restore what fn preserved anyway (psABI), and keep
 * the CFI one simple rule.
 */
    .globl  weft__ctx_call
    .hidden weft__ctx_call
    .type   weft__ctx_call, @function
    .p2align 4
weft__ctx_call:
    .cfi_startproc
    SAVE_FRAME
    movq    %rsp, (%rdi)
    movq    %rsi, %rax
    movq    %rdx, %rdi
    /* rsp % 16 == 0 here: entered with 8, then 56 bytes pushed. */
    callq   *%rax
    DROP_FRAME
    ret
    .cfi_endproc
    .size   weft__ctx_call, .-weft__ctx_call

/*
 * First code run on a fresh stack. weft__ctx_make leaves the entry
 * function in r12 and the handed-over value arrives in rax; both go to
 * weft__ctx_start(val, entry), which finishes the sanitizers' side of the
 * switch and calls entry(val). The entry must never return (it ends by switching away for good); if it does,
 * weft__ctx_entry_returned reports it and aborts, so the context can
 * never "return into nothing". rip is marked undefined so that
 * backtraces end here cleanly.
 */
    .globl  weft__ctx_trampoline
    .hidden weft__ctx_trampoline
    .type   weft__ctx_trampoline, @function
    .p2align 4
weft__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    xorl    %ebp, %ebp
    movq    %rax, %rdi
    /* rsp is 16-byte aligned here (weft__ctx_make sees to it), so the
     * entry starts with the psABI's rsp % 16 == 8 after the call. */
    movq    %r12, %rsi
    callq   weft__ctx_start
    callq   weft__ctx_entry_returned
    ud2
    .cfi_endproc
    .size   weft__ctx_trampoline, .-weft__ctx_trampoline

    .section .note.GNU-stack, "", @progbits
