/*
 * Unwinding suspended contexts and naming code addresses, for weft_dump
 * (sched/report.c). Internal.
 *
 * A suspended context is its saved stack pointer (see the register
 * diagram in arch/x86_64_sysv.S); the unwinder starts from the registers
 * saved there and walks the frames above with the CFI of the code, using
 * elfutils' libdwfl when the build has it (meson option `unwind`).
 * Without it, a backtrace is the one frame the switch returns to, and
 * names come from dladdr() (exported symbols only).
 *
 * Nothing here reads another context's stack directly: every read goes
 * through a copy the caller made, or through weft__peek, so memory that
 * is unmapped or reused meanwhile gives a short backtrace, never a crash
 * or a sanitizer report.
 */
#ifndef WEFT_CTX_UNWIND_H
#define WEFT_CTX_UNWIND_H

#include <stddef.h>
#include <stdint.h>

/* One report's unwinding and symbol session. */
struct weft__unwind;

/* A suspended context's stack, as the caller copied it. */
struct weft__unwind_stack {
    uintptr_t sp;        /* the saved stack pointer (ctx.sp)                 */
    uintptr_t lo, top;   /* the stack's usable range [lo, top)               */
    const unsigned char *copy; /* copy_len bytes copied from sp upwards      */
    size_t    copy_len;  /* may be shorter than top - sp (deep stacks)       */
};

/* What a code address is. Strings belong to the session. */
struct weft__sym {
    const char *func;    /* NULL: no symbol covers it                        */
    uintptr_t   off;     /* pc - the symbol's start                          */
    const char *file;    /* NULL without line information                     */
    int         line;
    const char *module;  /* the object's path; NULL if not mapped from one   */
};

/* Start a session: learn what is mapped now (libraries may have been
 * loaded since the last one). NULL if out of memory. One session at a
 * time per process (the caller holds weft__rt.report_lock or is alone).
 * Any thread. */
struct weft__unwind *weft__unwind_begin(void);
/* End it, freeing everything it made. */
void weft__unwind_end(struct weft__unwind *u);

/* Walk the suspended context described by s: fill pcs[0..max) with the
 * return addresses of its frames, innermost first (the first is where
 * the context switch returns to). Returns how many; 0 if even the saved
 * frame could not be read. The caller's thread, within the session. */
int weft__unwind_ctx(struct weft__unwind *u, const struct weft__unwind_stack *s,
                     uintptr_t *pcs, int max);

/* Name pc. is_ret: pc is a return address, so its line is the call's
 * (looked up at pc - 1). Results are cached for the session. */
void weft__unwind_sym(struct weft__unwind *u, uintptr_t pc, int is_ret,
                      struct weft__sym *out);

/* 1 if this build unwinds whole stacks (libdw), 0 if it reports the
 * resume frame only. */
int weft__unwind_full(void);

#endif
