/*
 * weft__cpu_relax: the spin-wait hint (x86's `pause`), for every spin loop
 * in the runtime. Internal; any thread.
 */
#ifndef WEFT_CTX_ARCH_RELAX_H
#define WEFT_CTX_ARCH_RELAX_H

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("pause" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

#endif
