/*
 * Standalone asymmetric coroutines (weft_coro_*), built directly on the
 * context layer: no runtime, any thread.
 *
 * A coroutine owns two contexts: its own (ctx) and, while it runs, the
 * context of whoever resumed it (caller). Resume switches caller -> ctx,
 * yield and return switch ctx -> caller, so nesting needs no stack of
 * coroutines: each one simply remembers its own resumer.
 *
 * The status field is the single source of truth for misuse checks. It is
 * only written by the thread running the coroutine or resuming it, and a
 * coroutine is used by one thread at a time (the caller's contract), so it
 * needs no atomics; moving a suspended coroutine to another thread needs
 * whatever synchronisation the caller used to hand it over.
 */
#include "weft_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "common/alloc.h"
#include "ctx/ctx.h"

#define CORO_NAME_MAX 32

struct weft_coro {
    weft__ctx    ctx;       /* the coroutine's own context                */
    weft__ctx    caller;    /* its resumer's, while it runs               */
    weft__stack *stack;     /* NULL once dead                             */
    weft_coro_fn fn;
    void        *first_in;  /* the first resume's `in`, for fn's arg      */
    int          status;
    uint64_t     id;
    char         name[CORO_NAME_MAX];
    struct weft__owner who; /* id and name, for ctx's reports */
};

/* Relaxed: ids need only be unique, and fetch_add is atomic at any order. */
static _Atomic uint64_t next_coro_id = 1;

static void coro_entry(void *val)
{
    weft_coro *co = val;
    void *ret = co->fn(co, co->first_in);
    co->status = WEFT_CORO_DEAD;
    weft__ctx_exit(&co->ctx, &co->caller, ret);
}

weft_coro *weft_coro_new(weft_coro_fn fn, size_t stack_size)
{
    if (!fn) {
        errno = EINVAL;
        return NULL;
    }
    weft_coro *co = weft__malloc(sizeof *co);
    if (!co) {
        errno = ENOMEM;
        return NULL;
    }
    co->stack = weft__stack_get(stack_size);
    if (!co->stack) {
        int e = errno;
        weft__free(co, sizeof *co);
        errno = e;
        return NULL;
    }
    weft__ctx_make(&co->ctx, co->stack, coro_entry);
    co->id = atomic_fetch_add_explicit(&next_coro_id, 1, memory_order_relaxed);
    co->name[0] = 0;
    co->ctx.owner_kind = WEFT__OWNER_CORO;
    co->who.id = co->id;
    co->who.name = co->name;
    co->ctx.owner = &co->who;
    co->fn = fn;
    co->first_in = NULL;
    co->status = WEFT_CORO_CREATED;
    return co;
}

static void release_stack(weft_coro *co)
{
    weft__ctx_destroy(&co->ctx);
    weft__stack_put(co->stack);
    co->stack = NULL;
}

int weft_coro_resume(weft_coro *co, void *in, void **out)
{
    if (!co || (co->status != WEFT_CORO_CREATED && co->status != WEFT_CORO_SUSPENDED))
        return -EINVAL;
    weft__ctx_thread_prepare();
    weft__ctx *outer = weft__ctx_running;
    weft__ctx_init_current(&co->caller);
    void *val = in;
    if (co->status == WEFT_CORO_CREATED) {
        co->first_in = in;
        val = co;
    }
    co->status = WEFT_CORO_RUNNING;
    void *got = weft__ctx_switch(&co->caller, &co->ctx, val);
    /* Back in the resumer: restore what was running before, so a nested
     * resumer's overflow is still reported as its own. */
    weft__ctx_running = outer;
    if (out)
        *out = got;
    if (co->status == WEFT_CORO_DEAD) {
        release_stack(co);
        return 0;
    }
    return 1;
}

void *weft_coro_yield(weft_coro *co, void *out)
{
    if (!co || co->status != WEFT_CORO_RUNNING || weft__ctx_running != &co->ctx) {
        errno = EINVAL;
        return NULL;
    }
    co->status = WEFT_CORO_SUSPENDED;
    return weft__ctx_switch(&co->ctx, &co->caller, out);
}

int weft_coro_status(const weft_coro *co)
{
    return co ? co->status : -EINVAL;
}

void weft_coro_free(weft_coro *co)
{
    if (!co)
        return;
    if (co->status == WEFT_CORO_RUNNING) {
        errno = EBUSY;
        return;
    }
    if (co->stack)
        release_stack(co);
    weft__free(co, sizeof *co);
}

uint64_t weft_coro_id(const weft_coro *co)
{
    return co ? co->id : 0;
}

int weft_coro_set_name(weft_coro *co, const char *name)
{
    if (!co)
        return -EINVAL;
    weft__copy_name(co->name, sizeof co->name, name);
    return 0;
}
