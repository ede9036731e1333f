/* x86-64 Linux: a system call without libc's wrapper. Internal. */
#ifndef WEFT_ARCH_X86_64_SYSCALL_H
#define WEFT_ARCH_X86_64_SYSCALL_H

/*
 * System call nr with up to six arguments (unused ones 0). The kernel's
 * convention: the number in rax, the arguments in rdi, rsi, rdx, r10, r8,
 * r9; the `syscall` instruction clobbers rcx (return address) and r11
 * (flags); the result comes back in rax, -errno (-4095 to -1) on failure.
 *
 * What libc's wrappers add and the fd wrappers' fast path (io/fd.c) does
 * not need: errno (the result is already -errno) and the asynchronous
 * cancellation switch around the call (a fiber is not a thread to
 * cancel). Sanitizer builds keep the libc calls, whose interceptors check
 * buffers (ASan) and model the happens-before edge a byte sent through a
 * socket carries (TSan).
 */
static inline long weft__syscall6(long nr, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#endif
