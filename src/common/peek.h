/* Fault-tolerant reads of our own memory. Internal. */
#ifndef WEFT_PEEK_H
#define WEFT_PEEK_H

#include <errno.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/*
 * Copy n bytes at src into dst through the kernel (process_vm_readv on
 * our own pid): memory unmapped meanwhile gives -EFAULT instead of a
 * crash, and the copy is no data race for the sanitizers. For readers
 * that look at another thread's objects without synchronising with it
 * (weft_dump, the monitor): what they read may be stale or torn, and is
 * only ever printed. 0 or a negative errno. Any thread.
 */
static inline int weft__peek(void *dst, const void *src, size_t n)
{
    struct iovec l = { dst, n }, r = { (void *)(uintptr_t)src, n };
    ssize_t got = process_vm_readv(getpid(), &l, 1, &r, 1, 0);
    if (got < 0)
        return -errno;
    return (size_t)got == n ? 0 : -EFAULT;
}

#endif
