/*
 * Test helpers for test_ctx.c: load known values into every callee-saved
 * register, switch away, and report what the registers hold when the
 * switch comes back; and the other side, which trashes all of them before
 * switching back. Written in assembly because C cannot pin values in
 * callee-saved registers across a call.
 */
    .text

/* void regs_roundtrip(void **save_sp, void *to_sp, uint64_t out[6])
 * Loads rbx, rbp, r12-r15 with distinct patterns, weft__ctx_jump()s to
 * to_sp, and stores the six registers into out[] once resumed. */
    .globl  regs_roundtrip
    .type   regs_roundtrip, @function
regs_roundtrip:
    .cfi_startproc
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    pushq   %rdx                    /* out; also aligns rsp for the call */
    .cfi_adjust_cfa_offset 8
    movabsq $0x1b1b1b1b1b1b1b1b, %rbx
    movabsq $0x2b2b2b2b2b2b2b2b, %rbp
    movabsq $0x3c3c3c3c3c3c3c3c, %r12
    movabsq $0x4d4d4d4d4d4d4d4d, %r13
    movabsq $0x5e5e5e5e5e5e5e5e, %r14
    movabsq $0x6f6f6f6f6f6f6f6f, %r15
    xorl    %edx, %edx
    call    weft__ctx_jump
    popq    %rdx
    .cfi_adjust_cfa_offset -8
    movq    %rbx, 0(%rdx)
    movq    %rbp, 8(%rdx)
    movq    %r12, 16(%rdx)
    movq    %r13, 24(%rdx)
    movq    %r14, 32(%rdx)
    movq    %r15, 40(%rdx)
    popq    %r15
    .cfi_adjust_cfa_offset -8
    popq    %r14
    .cfi_adjust_cfa_offset -8
    popq    %r13
    .cfi_adjust_cfa_offset -8
    popq    %r12
    .cfi_adjust_cfa_offset -8
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size   regs_roundtrip, .-regs_roundtrip

/* void clobber_and_jump(void **save_sp, void *to_sp)
 * Sets every callee-saved register to garbage and switches; restores its
 * caller's registers when resumed. */
    .globl  clobber_and_jump
    .type   clobber_and_jump, @function
clobber_and_jump:
    .cfi_startproc
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    subq    $8, %rsp
    .cfi_adjust_cfa_offset 8
    movq    $-1, %rbx
    movq    $-2, %rbp
    movq    $-3, %r12
    movq    $-4, %r13
    movq    $-5, %r14
    movq    $-6, %r15
    xorl    %edx, %edx
    call    weft__ctx_jump
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r15
    .cfi_adjust_cfa_offset -8
    popq    %r14
    .cfi_adjust_cfa_offset -8
    popq    %r13
    .cfi_adjust_cfa_offset -8
    popq    %r12
    .cfi_adjust_cfa_offset -8
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size   clobber_and_jump, .-clobber_and_jump

/* uintptr_t caller_sp(void): the caller's rsp just before its call
 * instruction, which the psABI requires to be 16-byte aligned. */
    .globl  caller_sp
    .type   caller_sp, @function
caller_sp:
    .cfi_startproc
    leaq    8(%rsp), %rax
    ret
    .cfi_endproc
    .size   caller_sp, .-caller_sp

    .section .note.GNU-stack, "", @progbits
