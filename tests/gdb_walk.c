/*
 * Program for test-gdb-walk: suspends a context three calls deep, then
 * stops in checkpoint() so gdb can be pointed at the suspended context
 * (pc = weft__ctx_resume_pc, rsp = its saved sp) and asked for a
 * backtrace. The CFI in the switch must carry gdb through every frame
 * down to weft__ctx_trampoline.
 */
#include <stdio.h>

#include "ctx/ctx.h"

weft__ctx walk_main, walk_other;
void *walk_saved_sp;

__attribute__((noinline)) static void walk_leaf(void)
{
    weft__ctx_switch(&walk_other, &walk_main, NULL);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void walk_middle(void)
{
    walk_leaf();
    __asm__ volatile("" ::: "memory");
}

static void walk_entry(void *val)
{
    (void)val;
    walk_middle();
    weft__ctx_exit(&walk_other, &walk_main, NULL);
}

__attribute__((noinline)) void walk_checkpoint(void);
__attribute__((noinline)) void walk_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

int main(void)
{
    weft__stack *st = weft__stack_get(0);
    if (!st)
        return 2;
    weft__ctx_init_current(&walk_main);
    weft__ctx_make(&walk_other, st, walk_entry);
    weft__ctx_switch(&walk_main, &walk_other, NULL);
    walk_saved_sp = walk_other.sp;
    walk_checkpoint();
    weft__ctx_switch(&walk_main, &walk_other, NULL);
    weft__ctx_destroy(&walk_other);
    weft__stack_put(st);
    puts("done");
    return 0;
}
