/* x86-64: reading a thread-local pointer afresh. Internal. */
#ifndef WEFT_ARCH_X86_64_TLS_H
#define WEFT_ARCH_X86_64_TLS_H

/*
 * The value of `var`, a pointer-sized initial-exec __thread variable, on
 * the thread running this code now. A fiber can move to another thread
 * at any switch, and a compiler that has computed a TLS address once may
 * reuse it after a switch (it cannot know that the thread changed). This
 * read cannot be merged with another or moved across a switch: a
 * volatile asm with a memory clobber, two instructions (the GOT slot
 * holding var's offset from the thread pointer, then the %fs-relative
 * load), which the linker relaxes to one where it can.
 */
#define WEFT__TLS_READ_FRESH(var)                                             \
    __extension__({                                                           \
        __typeof__(var) weft_v_;                                              \
        __asm__ volatile("movq " #var "@gottpoff(%%rip), %0\n\t"              \
                         "movq %%fs:(%0), %0"                                 \
                         : "=r"(weft_v_)                                      \
                         :                                                    \
                         : "memory");                                         \
        weft_v_;                                                              \
    })

#endif
