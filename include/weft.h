/*
 * weft: stackful fibers on every core.
 *
 * The one public header of libweft. Everything declared here is the API;
 * nothing else the library contains is. See the contract in the project's
 * documentation for the conventions, summarised here:
 *
 *  - Calls that return int return 0 (or a non-negative result) on success
 *    and a negative errno value on failure (-EINVAL, -ENOMEM, ...).
 *  - Calls that return a pointer return NULL and set errno on failure.
 *  - Times are nanoseconds.
 *
 * This header is C11 and C++ clean and includes only standard headers.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#include <weft/version.h>

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_EXPORT __attribute__((visibility("default")))
#else
#define WEFT_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * weft_version - the library's version as "MAJOR.MINOR.PATCH".
 *
 * The string of the library actually loaded, which may be newer than the
 * WEFT_VERSION_* macros the caller was compiled with. Never NULL.
 */
WEFT_EXPORT const char *weft_version(void);

/* ===================================================================== */
/* Asymmetric coroutines                                                 */
/* ===================================================================== */

/*
 * Standalone stackful coroutines in the Lua / Python-generator style.
 * They need no runtime and work on any thread: create one, resume it with
 * a value, it yields a value back, and it finally returns a value.
 *
 * A coroutine may resume another one (nesting); the inner one yields back
 * to the outer. A suspended coroutine may be resumed from a different
 * thread than the one that resumed it before, one thread at a time.
 *
 * Each coroutine runs on its own stack (default 256 KiB, see
 * weft_coro_new) with a guard region below it; overflowing it prints
 *   weft: stack overflow in coroutine <id> '<name>' (stack <size> bytes)
 * and aborts the process rather than corrupting memory.
 */
typedef struct weft_coro weft_coro;

/* The body of a coroutine: co is the coroutine itself (for
 * weft_coro_yield), arg is the `in` of the first weft_coro_resume. The
 * value it returns is handed to that last resume's *out. */
typedef void *(*weft_coro_fn)(weft_coro *co, void *arg);

/* States, as weft_coro_status reports them. */
enum {
    WEFT_CORO_CREATED,   /* made, never resumed                          */
    WEFT_CORO_RUNNING,   /* running, or resuming another coroutine       */
    WEFT_CORO_SUSPENDED, /* stopped in weft_coro_yield                   */
    WEFT_CORO_DEAD       /* its function returned                        */
};

/*
 * weft_coro_new - make a coroutine that will run fn.
 *
 * stack_size: usable stack in bytes, rounded up to whole pages and to at
 * least 16 KiB; 0 takes the default (256 KiB). The stack is reserved, not
 * committed: memory is used only as deep as the coroutine goes. Nothing
 * runs until the first weft_coro_resume.
 *
 * Returns the coroutine in state WEFT_CORO_CREATED, or NULL with errno:
 * EINVAL (fn is NULL, or stack_size over 1 GiB), ENOMEM.
 */
WEFT_EXPORT weft_coro *weft_coro_new(weft_coro_fn fn, size_t stack_size);

/*
 * weft_coro_resume - run co until it yields or returns.
 *
 * The first resume calls fn(co, in); later ones make the pending
 * weft_coro_yield return `in`. When co yields, *out (if out is not NULL)
 * receives the yielded value and 1 is returned; when co's function
 * returns, *out receives its return value, co becomes WEFT_CORO_DEAD, its
 * stack is released, and 0 is returned.
 *
 * Errors: -EINVAL if co is NULL, running (it, or a coroutine it resumed,
 * is calling this), or dead. co is left unchanged.
 */
WEFT_EXPORT int weft_coro_resume(weft_coro *co, void *in, void **out);

/*
 * weft_coro_yield - suspend the calling coroutine co, handing `out` to
 * the weft_coro_resume that ran it.
 *
 * Returns the `in` of the resume that continues co. Must be called from
 * co itself; otherwise (co is NULL, not running, or another coroutine is
 * the one running on this thread) it returns NULL at once with errno set
 * to EINVAL and nothing is switched.
 */
WEFT_EXPORT void *weft_coro_yield(weft_coro *co, void *out);

/* weft_coro_status - one of WEFT_CORO_*; -EINVAL for NULL. */
WEFT_EXPORT int weft_coro_status(const weft_coro *co);

/*
 * weft_coro_free - release co and its stack.
 *
 * Allowed in every state but RUNNING. A suspended coroutine is discarded
 * where it stands: its frames are not unwound, so memory it allocated and
 * still holds is the caller's to account for. Freeing a running coroutine
 * does nothing and sets errno to EBUSY. NULL is ignored.
 */
WEFT_EXPORT void weft_coro_free(weft_coro *co);

/* Extensions beyond the contract. */

/* weft_coro_id - the coroutine's id: unique in the process, never reused,
 * as printed in overflow reports. 0 for NULL. */
WEFT_EXPORT uint64_t weft_coro_id(const weft_coro *co);

/* weft_coro_set_name - name co for reports (copied, truncated to 31
 * bytes; NULL clears it). 0, or -EINVAL for a NULL co. */
WEFT_EXPORT int weft_coro_set_name(weft_coro *co, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
