/*
 * Helpers the fd wrappers (fd.c) share with net.c. Internal.
 */
#ifndef WEFT_IO_FD_H
#define WEFT_IO_FD_H

#include <stdint.h>
#include <sys/socket.h>

struct np_desc;
struct worker;

/* errno, read by a call of its own. A fiber that parks may resume on
 * another worker thread, and glibc declares __errno_location const, so
 * in a function that parks between two reads of errno the compiler may
 * reuse the first thread's errno address for the second (the contract's
 * reason for returning errors as values). Every read of errno that a
 * park may precede in the same function goes through here: out of line,
 * it computes the address afresh on the thread that calls it. Any
 * thread. */
__attribute__((noinline)) int weft__errno(void);
/* 1 if the caller is a fiber (*wp: its worker), else 0 (*wp: the worker
 * or NULL). Any thread. */
int     weft__in_fiber(struct worker **wp);
/* The deadline for a call starting now in direction dir (NP_READ,
 * NP_WRITE) from pd's per-fd timeout; -1 for none (pd may be NULL). Any
 * thread. */
int64_t weft__fd_deadline(struct np_desc *pd, int dir);
/* poll() fd for events until deadline (weft_now clock; < 0: none),
 * retrying EINTR: revents (> 0), 0 when the deadline passed, -EBADF or
 * another -errno. Blocks the thread. Any thread. */
int     weft__poll_fd(int fd, short events, int64_t deadline);
/* weft_connect with a deadline (-1: none; -2: the fd's write timeout).
 * Any thread. */
int     weft__connect_until(int fd, const struct sockaddr *a, socklen_t al, int64_t deadline);

#endif
