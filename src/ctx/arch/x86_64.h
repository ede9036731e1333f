/* x86-64 System V: the initial frame of a fresh context. Internal. */
#ifndef WEFT_ARCH_X86_64_H
#define WEFT_ARCH_X86_64_H

#include <stdint.h>
#include <string.h>

void weft__ctx_trampoline(void);

/*
 * Lay out, just below `top`, the frame weft__ctx_jump pops (see the
 * diagram in x86_64_sysv.S) so that the first switch "returns" into
 * weft__ctx_trampoline with r12 = entry. MXCSR and the x87 control word
 * are copied from the creating thread, as a new thread inherits them.
 * Returns the context's initial stack pointer.
 */
static inline void *weft__arch_make_frame(char *top, void (*entry)(void *))
{
    /* After the 8 pops and the ret, rsp = frame + 64 must be 16-aligned
     * for the trampoline's call; top is 64-aligned and the slot just below
     * it is a zero "return address" that ends any unwind. */
    uint64_t *frame = (uint64_t *)(void *)(top - 16 - 64);
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    memset(frame, 0, 64 + 16);
    memcpy((char *)frame, &mxcsr, 4);
    memcpy((char *)frame + 4, &fpucw, 2);
    frame[1] = (uint64_t)(uintptr_t)entry;                /* r12 */
    frame[6] = 0;                                         /* rbp */
    frame[7] = (uint64_t)(uintptr_t)weft__ctx_trampoline; /* ret */
    return frame;
}

#endif
