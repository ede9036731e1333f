/*
 * The fd wrappers: weft_read ... weft_close, weft_wait_fd,
 * weft_fd_timeouts.
 *
 * In a fiber, a call first makes sure the fd is known in this run
 * (np_prepare: registered in the caller's worker's epoll and switched to
 * O_NONBLOCK, once), then loops: try the system call; on EAGAIN wait for
 * the direction's edge (np_wait) and try again. EINTR is retried. Files
 * epoll cannot watch (regular files, directories: NP_PLAIN) are never
 * "not ready", they are slow: read, write, readv and writev on them run
 * on the blocking pool (blocking.c) while the fiber parks, so the worker
 * goes on with other fibers while the disk works. Per-fd timeouts do not
 * apply there (a disk access cannot be abandoned half-way).
 *
 * On a plain thread a call behaves like the blocking call: it is made
 * directly; only if it fails with EAGAIN on an fd that the runtime made
 * non-blocking does it poll() for the direction (honouring the per-fd
 * timeout) and try again. An fd the caller made non-blocking itself keeps
 * returning -EAGAIN there, as the plain call would.
 */
#define _GNU_SOURCE
#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/blocking.h"
#include "io/fd.h"
#include "io/netpoll.h"
#include "sched/sched.h"

/* The calls that make sense on files come first (do_io's NP_PLAIN test). */
enum { OP_READ, OP_WRITE, OP_READV, OP_WRITEV, OP_RECVFROM, OP_SENDTO };

struct io_call {
    int                    op, fd, flags, iovcnt;
    void                  *buf;
    const void            *cbuf;
    size_t                 n;
    const struct iovec    *iov;
    struct sockaddr       *addr;
    socklen_t             *addrlen;
    const struct sockaddr *caddr;
    socklen_t              caddrlen;
};

/* One attempt; -1 and errno on failure. Any thread. */
static ssize_t call_once(const struct io_call *c)
{
    switch (c->op) {
    case OP_READ:     return read(c->fd, c->buf, c->n);
    case OP_WRITE:    return write(c->fd, c->cbuf, c->n);
    case OP_READV:    return readv(c->fd, c->iov, c->iovcnt);
    case OP_WRITEV:   return writev(c->fd, c->iov, c->iovcnt);
    case OP_RECVFROM: return recvfrom(c->fd, c->buf, c->n, c->flags, c->addr, c->addrlen);
    default:          return sendto(c->fd, c->cbuf, c->n, c->flags, c->caddr, c->caddrlen);
    }
}

static int is_again(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK;
}

int64_t weft__fd_deadline(struct np_desc *pd, int dir)
{
    /* Relaxed: a configuration value read on its own (weft_fd_timeouts). */
    int64_t t = pd ? atomic_load_explicit(&pd->timeout[dir], memory_order_relaxed) : 0;
    if (t <= 0)
        return -1;
    int64_t now = weft__now();
    return t > INT64_MAX - now ? INT64_MAX : now + t;
}

int weft__poll_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - weft__now();
            if (left <= 0)
                left = 0;
            int64_t r = (left + 999999) / 1000000;
            ms = r > INT_MAX ? INT_MAX : (int)r;
        }
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            if (deadline >= 0 && weft__now() >= deadline)
                return 0;
            continue;
        }
        if (p.revents & POLLNVAL)
            return -EBADF;
        return p.revents;
    }
}

int weft__in_fiber(struct worker **wp)
{
    struct worker *w = weft__worker_self();
    *wp = w;
    return w && w->current;
}

/* The plain-thread path. Any non-fiber thread. */
static ssize_t plain_io(const struct io_call *c, int dir, int nowait)
{
    int64_t deadline = -2;
    for (;;) {
        ssize_t r = call_once(c);
        if (r >= 0)
            return r;
        int e = errno;
        if (e == EINTR)
            continue;
        struct np_desc *pd;
        /* Relaxed nb_set: see np_prepare. */
        if (!is_again(e) || nowait || !(pd = np_lookup(c->fd)) ||
            !atomic_load_explicit(&pd->nb_set, memory_order_relaxed))
            return -e;
        if (deadline == -2)
            deadline = weft__fd_deadline(pd, dir);
        int rc = weft__poll_fd(c->fd, dir == NP_READ ? POLLIN : POLLOUT, deadline);
        if (rc == 0)
            return -ETIMEDOUT;
        if (rc < 0)
            return rc;
    }
}

/* How the calling fiber can wait on fd: its descriptor (NULL: none), its
 * kind (NP_POLLABLE, NP_PLAIN, or a negative errno from np_prepare) and
 * the generation a wait must be for. w's fiber only. */
struct fd_view {
    struct np_desc *pd;
    int kind;
    uint32_t gen;
};

static struct fd_view fd_view(int fd, struct worker *w)
{
    struct fd_view v = { np_get(fd), NP_PLAIN, 0 };
    if (v.pd && (v.kind = np_prepare(v.pd, w)) >= 0)
        v.gen = atomic_load(&v.pd->gen);
    return v;
}

/* One call on a file epoll cannot watch, with EINTR retried: the result
 * or -errno, as a pointer. A blocking-pool thread. */
static void *file_call(void *arg)
{
    const struct io_call *c = arg;
    ssize_t r;
    while ((r = call_once(c)) < 0 && errno == EINTR)
        ;
    return (void *)(intptr_t)(r < 0 ? -errno : r);
}

/* The system call c in direction dir, waiting for readiness in a fiber.
 * Any thread. */
static ssize_t do_io(const struct io_call *c, int dir, int nowait)
{
    if (c->fd < 0)
        return -EBADF;
    struct worker *w;
    if (!weft__in_fiber(&w))
        return plain_io(c, dir, nowait);
    struct fd_view v = fd_view(c->fd, w);
    if (v.kind < 0)
        return v.kind;
    struct np_desc *pd = v.pd;
    int kind = v.kind;
    uint32_t gen = v.gen;
    /* The socket calls fail at once on such files (-ENOTSOCK): no need to
     * hand them over. */
    if (kind == NP_PLAIN && c->op <= OP_WRITEV)
        return (ssize_t)(intptr_t)weft_blocking(file_call, (void *)c);
    int64_t deadline = -2;
    for (;;) {
        ssize_t r = call_once(c);
        if (r >= 0)
            return r;
        int e = errno;
        if (e == EINTR)
            continue;
        if (!is_again(e) || nowait || kind != NP_POLLABLE)
            return -e;
        if (deadline == -2)
            deadline = weft__fd_deadline(pd, dir);
        int rc = np_wait(pd, 1u << dir, gen, deadline);
        if (rc < 0)
            return rc;
    }
}

ssize_t weft_read(int fd, void *buf, size_t n)
{
    struct io_call c = { .op = OP_READ, .fd = fd, .buf = buf, .n = n };
    return do_io(&c, NP_READ, 0);
}

ssize_t weft_write(int fd, const void *buf, size_t n)
{
    struct io_call c = { .op = OP_WRITE, .fd = fd, .cbuf = buf, .n = n };
    return do_io(&c, NP_WRITE, 0);
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    struct io_call c = { .op = OP_READV, .fd = fd, .iov = iov, .iovcnt = iovcnt };
    return do_io(&c, NP_READ, 0);
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt)
{
    struct io_call c = { .op = OP_WRITEV, .fd = fd, .iov = iov, .iovcnt = iovcnt };
    return do_io(&c, NP_WRITE, 0);
}

ssize_t weft_recv(int fd, void *buf, size_t n, int flags)
{
    return weft_recvfrom(fd, buf, n, flags, NULL, NULL);
}

ssize_t weft_send(int fd, const void *buf, size_t n, int flags)
{
    return weft_sendto(fd, buf, n, flags, NULL, 0);
}

ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags,
                      struct sockaddr *a, socklen_t *al)
{
    struct io_call c = { .op = OP_RECVFROM, .fd = fd, .buf = buf, .n = n,
                         .flags = flags, .addr = a, .addrlen = al };
    return do_io(&c, NP_READ, (flags & MSG_DONTWAIT) != 0);
}

ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags,
                    const struct sockaddr *a, socklen_t al)
{
    /* MSG_NOSIGNAL: a write to a closed peer fails with -EPIPE rather than
     * killing the process, as a runtime that serves many peers needs. */
    struct io_call c = { .op = OP_SENDTO, .fd = fd, .cbuf = buf, .n = n,
                         .flags = flags | MSG_NOSIGNAL, .caddr = a, .caddrlen = al };
    return do_io(&c, NP_WRITE, (flags & MSG_DONTWAIT) != 0);
}

int weft_accept(int fd, struct sockaddr *a, socklen_t *al)
{
    if (fd < 0)
        return -EBADF;
    struct worker *w;
    int fiber = weft__in_fiber(&w);
    struct fd_view v = { NULL, NP_PLAIN, 0 };
    if (fiber && (v = fd_view(fd, w)).kind < 0)
        return v.kind;
    struct np_desc *pd = v.pd;
    int kind = v.kind;
    uint32_t gen = v.gen;
    int64_t deadline = -2;
    for (;;) {
        int nfd = accept4(fd, a, al, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nfd >= 0) {
            np_fresh(nfd);
            return nfd;
        }
        int e = errno;
        if (e == EINTR || e == ECONNABORTED)
            continue;
        if (!is_again(e))
            return -e;
        if (deadline == -2) {
            if (!pd)
                pd = np_lookup(fd);
            deadline = weft__fd_deadline(pd, NP_READ);
        }
        int rc;
        if (fiber && kind == NP_POLLABLE) {
            rc = np_wait(pd, NP_RBIT, gen, deadline);
        } else {
            /* Relaxed nb_set: see np_prepare. */
            if (fiber || !pd || !atomic_load_explicit(&pd->nb_set, memory_order_relaxed))
                return -e;
            rc = weft__poll_fd(fd, POLLIN, deadline);
            if (rc == 0)
                rc = -ETIMEDOUT;
        }
        if (rc < 0)
            return rc;
    }
}

int weft__connect_until(int fd, const struct sockaddr *a, socklen_t al, int64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    struct worker *w;
    int fiber = weft__in_fiber(&w);
    struct fd_view v = { NULL, NP_PLAIN, 0 };
    if (fiber && (v = fd_view(fd, w)).kind < 0)
        return v.kind;
    struct np_desc *pd = v.pd;
    int kind = v.kind;
    uint32_t gen = v.gen;
    if (connect(fd, a, al) == 0)
        return 0;
    int e = errno;
    /* After EINTR the connection goes on in the background, as after
     * EINPROGRESS: wait for it either way. */
    if (e != EINPROGRESS && e != EINTR)
        return -e;
    if (deadline == -2)
        deadline = weft__fd_deadline(pd ? pd : np_lookup(fd), NP_WRITE);
    if (fiber && kind == NP_POLLABLE) {
        for (;;) {
            int rc = np_wait(pd, NP_WBIT, gen, deadline);
            if (rc < 0)
                return rc;
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            if (poll(&p, 1, 0) > 0)
                break; /* else a stale edge: wait again */
        }
    } else {
        int rc = weft__poll_fd(fd, POLLOUT, deadline);
        if (rc == 0)
            return -ETIMEDOUT;
        if (rc < 0)
            return rc;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return -errno;
    return -err;
}

int weft_connect(int fd, const struct sockaddr *a, socklen_t al)
{
    return weft__connect_until(fd, a, al, -2);
}

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    return np_close(fd);
}

int weft_wait_fd(int fd, int events, int64_t timeout_ns)
{
    if (fd < 0)
        return -EBADF;
    events &= POLLIN | POLLOUT;
    if (!events)
        return -EINVAL;
    int64_t deadline = -1;
    if (timeout_ns >= 0) {
        int64_t now = weft__now();
        deadline = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
    }
    struct worker *w;
    if (!weft__in_fiber(&w)) {
        int rc = weft__poll_fd(fd, (short)events, deadline);
        return rc == 0 ? -ETIMEDOUT : rc;
    }
    struct fd_view v = fd_view(fd, w);
    if (v.kind < 0)
        return v.kind;
    if (v.kind == NP_PLAIN)
        return events; /* poll() calls such files always ready */
    struct np_desc *pd = v.pd;
    uint32_t gen = v.gen;
    unsigned mask = ((events & POLLIN) ? NP_RBIT : 0) | ((events & POLLOUT) ? NP_WBIT : 0);
    for (;;) {
        /* The edges are only hints; poll() says what holds now. */
        struct pollfd p = { .fd = fd, .events = (short)events };
        int n = poll(&p, 1, 0);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            return (p.revents & POLLNVAL) ? -EBADF : p.revents;
        int rc = np_wait(pd, mask, gen, deadline);
        if (rc < 0)
            return rc;
    }
}

int weft_fd_timeouts(int fd, int64_t read_ns, int64_t write_ns)
{
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return -EBADF;
    if (read_ns < 0 || write_ns < 0)
        return -EINVAL;
    struct np_desc *pd = np_get(fd);
    if (!pd)
        return -ENOMEM;
    /* Relaxed: configuration, read on its own by the next call. */
    atomic_store_explicit(&pd->timeout[NP_READ], read_ns, memory_order_relaxed);
    atomic_store_explicit(&pd->timeout[NP_WRITE], write_ns, memory_order_relaxed);
    return 0;
}
