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
 * The fast path. Once an fd is known in the run (np_known_pollable), a
 * fiber's read, write, readv, writev, recv(from) and send(to) go straight
 * to the system call and, on EAGAIN, to np_wait (fast_retry): no
 * descriptor set-up, no call record. Outside sanitizer builds on x86-64
 * the call is made without libc's wrapper (ctx/arch/x86_64_syscall.h):
 * the result is -errno already, and the cancellation switch libc puts
 * around every blocking call is skipped, which is a fifth of the
 * user-space instructions an echo message costs.
 *
 * On a plain thread a call behaves like the blocking call: it is made
 * directly; only if it fails with EAGAIN on an fd that the runtime made
 * non-blocking does it poll() for the direction (honouring the per-fd
 * timeout) and try again. An fd the caller made non-blocking itself keeps
 * returning -EAGAIN there, as the plain call would.
 *
 * SIGPIPE. write and writev on a socket go out as send and sendmsg with
 * MSG_NOSIGNAL (the send calls always add it), so a closed peer is
 * -EPIPE and never kills the process. In a fiber the descriptor knows
 * whether the fd is a socket (np_desc.sock, found once by np_prepare), so
 * the fast path picks the call with one test of a byte on the line it
 * reads anyway; on a plain thread, which has no registration, the send
 * is tried first and write(2) made only if the kernel says ENOTSOCK.
 *
 * fds. Every fd from 0 to INT_MAX has a descriptor (netpoll.h's near and
 * far tables), so none is mistaken for a file; a number that is not open
 * fails with -EBADF.
 *
 * Last touches (see also netpoll.c's and blocking.c's). A call's own
 * records (struct io_call, struct fast) live in the calling fiber's
 * frame and are handed to no one but the blocking pool: a file's call
 * runs file_call on a pool thread, which only reads the record and
 * returns the result as its value; blocking.c's exchange is the step
 * that lets the fiber return, and nothing after it touches the record.
 * weft_close is np_close: the descriptor is reset before close(2) frees
 * the number, never after.
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

#include "common/sanitizer.h"
#include "io/blocking.h"
#include "io/fd.h"
#include "io/netpoll.h"
#include "sched/sched.h"

#if defined(__x86_64__) && !WEFT__ASAN && !WEFT__TSAN
#include <sys/syscall.h>

#include "ctx/arch/x86_64_syscall.h"
/* The fast path's system call: `raw` (a weft__syscall6 call, -errno on
 * failure) where it can bypass libc, else `libc` (-1 and errno). */
#define FAST_CALL(raw, libc) (raw)
#else
#define FAST_CALL(raw, libc) neg_errno(libc)
#endif

/* The calls that make sense on files come first (do_io's NP_PLAIN test). */
enum { OP_READ, OP_WRITE, OP_READV, OP_WRITEV, OP_RECVFROM, OP_SENDTO };

struct io_call {
    int                    op, fd, flags, iovcnt;
    int                    sock;     /* fd is a socket: 1, not: 0, unknown: -1 */
    void                  *buf;
    const void            *cbuf;
    size_t                 n;
    const struct iovec    *iov;
    struct sockaddr       *addr;
    socklen_t             *addrlen;
    const struct sockaddr *caddr;
    socklen_t              caddrlen;
};

/* write(2) and writev(2) on a socket, as send and sendmsg with
 * MSG_NOSIGNAL: a peer that went away gives EPIPE, never SIGPIPE (a
 * runtime serving many peers must not be killed by one of them). -1 and
 * errno on failure. Any thread. */
static ssize_t sock_write(int fd, const void *buf, size_t n)
{
    return sendto(fd, buf, n, MSG_NOSIGNAL, NULL, 0);
}

static ssize_t sock_writev(int fd, const struct iovec *iov, int iovcnt)
{
    /* sendmsg says EMSGSIZE where writev says EINVAL. */
    if (iovcnt < 0 || iovcnt > IOV_MAX) {
        errno = EINVAL;
        return -1;
    }
    struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    return sendmsg(fd, &mh, MSG_NOSIGNAL);
}

/* A write in c on an fd that may be a socket (c->sock): as a socket
 * first (unknown: until the kernel says ENOTSOCK), then as write(2)
 * (which raises SIGPIPE on a pipe whose reader is gone, as it always
 * does). */
static ssize_t write_once(const struct io_call *c)
{
    if (c->sock != 0) {
        ssize_t r = c->op == OP_WRITE ? sock_write(c->fd, c->cbuf, c->n)
                                      : sock_writev(c->fd, c->iov, c->iovcnt);
        if (r >= 0 || c->sock > 0 || errno != ENOTSOCK)
            return r;
    }
    return c->op == OP_WRITE ? write(c->fd, c->cbuf, c->n) : writev(c->fd, c->iov, c->iovcnt);
}

/* One attempt; -1 and errno on failure. Any thread. */
static ssize_t call_once(const struct io_call *c)
{
    switch (c->op) {
    case OP_READ:     return read(c->fd, c->buf, c->n);
    case OP_WRITE:    return write_once(c);
    case OP_READV:    return readv(c->fd, c->iov, c->iovcnt);
    case OP_WRITEV:   return write_once(c);
    case OP_RECVFROM: return recvfrom(c->fd, c->buf, c->n, c->flags, c->addr, c->addrlen);
    default:          return sendto(c->fd, c->cbuf, c->n, c->flags, c->caddr, c->caddrlen);
    }
}

static int is_again(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK;
}

int weft__errno(void)
{
    return errno;
}

static inline ssize_t neg_errno(ssize_t r)
{
    return r < 0 ? -weft__errno() : r;
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
 * kind (NP_POLLABLE, NP_PLAIN, or a negative errno: from np_prepare,
 * -EBADF for an fd that is not open, -ENOMEM for no descriptor) and the
 * generation a wait must be for. w's fiber only. */
struct fd_view {
    struct np_desc *pd;
    int kind;
    uint32_t gen;
};

static struct fd_view fd_view(int fd, struct worker *w)
{
    struct fd_view v = { np_get(fd), NP_PLAIN, 0 };
    if (!v.pd) {
        /* Without a descriptor nothing is known about fd: never guess
         * (a guess of "plain file" made any bad fd look always ready). */
        v.kind = fcntl(fd, F_GETFD) < 0 ? -EBADF : -ENOMEM;
        return v;
    }
    if ((v.kind = np_prepare(v.pd, w)) >= 0)
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

/* A fiber's call on a pollable fd: the descriptor, the generation it
 * began on, its deadline (-2: not computed yet). */
struct fast {
    struct np_desc *pd;
    uint32_t gen;
    int64_t deadline;
};

/* The call in direction dir failed with err (-errno): 0 to try it again
 * (EINTR, or EAGAIN and the fd became ready), else the call's result
 * (err, or -ETIMEDOUT, -EBADF ... from the wait). Fiber only. */
static ssize_t fast_retry(struct fast *f, int dir, int nowait, ssize_t err)
{
    if (err == -EINTR)
        return 0;
    if (!is_again((int)-err) || nowait)
        return err;
    if (f->deadline == -2)
        f->deadline = weft__fd_deadline(f->pd, dir);
    int rc = np_wait(f->pd, 1u << dir, f->gen, f->deadline);
    return rc < 0 ? rc : 0;
}

/* The system call c in direction dir, waiting for readiness in a fiber:
 * the first call on an fd in a run, files, plain threads. c->sock is
 * filled in here. Any thread. */
static ssize_t do_io(struct io_call *c, int dir, int nowait)
{
    if (c->fd < 0)
        return -EBADF;
    struct worker *w;
    c->sock = -1;
    if (!weft__in_fiber(&w))
        return plain_io(c, dir, nowait);
    struct fd_view v = fd_view(c->fd, w);
    if (v.kind < 0)
        return v.kind;
    struct np_desc *pd = v.pd;
    int kind = v.kind;
    uint32_t gen = v.gen;
    /* Files epoll refuses are never sockets. */
    c->sock = kind == NP_POLLABLE ? pd->sock : 0;
    /* The socket calls fail at once on such files (-ENOTSOCK): no need to
     * hand them over. */
    if (kind == NP_PLAIN && c->op <= OP_WRITEV)
        return (ssize_t)(intptr_t)weft_blocking(file_call, (void *)c);
    struct fast f = { pd, gen, -2 };
    for (;;) {
        ssize_t r = neg_errno(call_once(c));
        if (r >= 0)
            return r;
        if (kind != NP_POLLABLE && r != -EINTR)
            return r;
        if ((r = fast_retry(&f, dir, nowait, r)) < 0)
            return r;
    }
}

/*
 * The fast path (see the top of the file): in a fiber, on an fd known to
 * be pollable in this run, f is set up and the caller loops on its
 * system call and fast_retry; otherwise the caller takes do_io.
 */
static inline int fast_begin(int fd, struct fast *f)
{
    struct worker *w = weft__worker_self();
    if (!w || !w->current || !(f->pd = np_lookup(fd)) || !np_known_pollable(f->pd))
        return 0;
    /* seq_cst: see np_close. Read before the call, so a close from here
     * on fails the wait with -EBADF. */
    f->gen = atomic_load(&f->pd->gen);
    f->deadline = -2;
    return 1;
}

/*
 * The slow paths of the wrappers below, out of line: the call record
 * lives in their frames, so the fast path's frame, and the fiber stack a
 * parked call spans, stay small.
 */
static __attribute__((noinline)) ssize_t read_slow(int fd, void *buf, size_t n)
{
    struct io_call c = { .op = OP_READ, .fd = fd, .buf = buf, .n = n };
    return do_io(&c, NP_READ, 0);
}

static __attribute__((noinline)) ssize_t write_slow(int fd, const void *buf, size_t n)
{
    struct io_call c = { .op = OP_WRITE, .fd = fd, .cbuf = buf, .n = n };
    return do_io(&c, NP_WRITE, 0);
}

static __attribute__((noinline)) ssize_t vec_slow(int fd, const struct iovec *iov, int iovcnt, int op)
{
    struct io_call c = { .op = op, .fd = fd, .iov = iov, .iovcnt = iovcnt };
    return do_io(&c, op == OP_READV ? NP_READ : NP_WRITE, 0);
}

static __attribute__((noinline)) ssize_t recvfrom_slow(int fd, void *buf, size_t n, int flags,
                                                      struct sockaddr *a, socklen_t *al)
{
    struct io_call c = { .op = OP_RECVFROM, .fd = fd, .buf = buf, .n = n,
                         .flags = flags, .addr = a, .addrlen = al };
    return do_io(&c, NP_READ, (flags & MSG_DONTWAIT) != 0);
}

static __attribute__((noinline)) ssize_t sendto_slow(int fd, const void *buf, size_t n, int flags,
                                                    const struct sockaddr *a, socklen_t al)
{
    struct io_call c = { .op = OP_SENDTO, .fd = fd, .cbuf = buf, .n = n,
                         .flags = flags, .caddr = a, .caddrlen = al };
    return do_io(&c, NP_WRITE, (flags & MSG_DONTWAIT) != 0);
}

/*
 * The fast path of one wrapper: if fast_begin applies, loop on the system
 * call (`raw` and `libc` as in FAST_CALL) in direction dir and RETURN ITS
 * RESULT FROM THE ENCLOSING WRAPPER; otherwise fall through to the
 * wrapper's slow path. A read notes what it found (np_read_done: `asked`
 * bytes asked for, 0 to note nothing useful), and one that may wait
 * (skip_ok) waits for the edge at once when the last short read left
 * the socket empty and no edge has come since (np_read_skips). dir,
 * skip_ok are constants, so a write's loop has none of this. raw and
 * libc may read f_.pd, the fd's descriptor (the writes look at
 * f_.pd->sock).
 */
#define RETURN_FAST_PATH(fd, dir, skip_ok, nowait, asked, raw, libc)            \
    do {                                                                      \
        struct fast f_;                                                       \
        if (fast_begin((fd), &f_)) {                                          \
            for (;;) {                                                        \
                ssize_t r_;                                                   \
                uint32_t e_ = (dir) == NP_READ ? np_read_edges(f_.pd) : 0;    \
                if ((skip_ok) && np_read_skips(f_.pd)) {                      \
                    r_ = -EAGAIN;                                             \
                } else {                                                      \
                    r_ = FAST_CALL(raw, libc);                                \
                    if ((dir) == NP_READ)                                     \
                        np_read_done(f_.pd, e_, r_, (asked));                 \
                }                                                             \
                if (r_ >= 0 || (r_ = fast_retry(&f_, (dir), (nowait), r_)) < 0) \
                    return r_;                                                \
            }                                                                 \
        }                                                                     \
    } while (0)

#if defined(__x86_64__) && !WEFT__ASAN && !WEFT__TSAN
/* sock_write and sock_writev as raw system calls: -errno on failure. */
static inline long raw_sock_write(int fd, const void *buf, size_t n)
{
    return weft__syscall6(SYS_sendto, fd, (long)buf, (long)n, MSG_NOSIGNAL, 0, 0);
}

static inline long raw_sock_writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    return weft__syscall6(SYS_sendmsg, fd, (long)&mh, MSG_NOSIGNAL, 0, 0, 0);
}
#endif

ssize_t weft_read(int fd, void *buf, size_t n)
{
    RETURN_FAST_PATH(fd, NP_READ, 1, 0, n,
                     weft__syscall6(SYS_read, fd, (long)buf, (long)n, 0, 0, 0),
                     read(fd, buf, n));
    return read_slow(fd, buf, n);
}

ssize_t weft_write(int fd, const void *buf, size_t n)
{
    /* On a socket, send with MSG_NOSIGNAL (sock_write). */
    RETURN_FAST_PATH(fd, NP_WRITE, 0, 0, 0,
                     f_.pd->sock ? raw_sock_write(fd, buf, n)
                                 : weft__syscall6(SYS_write, fd, (long)buf, (long)n, 0, 0, 0),
                     f_.pd->sock ? sock_write(fd, buf, n) : write(fd, buf, n));
    return write_slow(fd, buf, n);
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    RETURN_FAST_PATH(fd, NP_READ, 0, 0, 0,
                     weft__syscall6(SYS_readv, fd, (long)iov, iovcnt, 0, 0, 0),
                     readv(fd, iov, iovcnt));
    return vec_slow(fd, iov, iovcnt, OP_READV);
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt)
{
    /* On a socket, sendmsg with MSG_NOSIGNAL (sock_writev). */
    RETURN_FAST_PATH(fd, NP_WRITE, 0, 0, 0,
                     f_.pd->sock ? raw_sock_writev(fd, iov, iovcnt)
                                 : weft__syscall6(SYS_writev, fd, (long)iov, iovcnt, 0, 0, 0),
                     f_.pd->sock ? sock_writev(fd, iov, iovcnt) : writev(fd, iov, iovcnt));
    return vec_slow(fd, iov, iovcnt, OP_WRITEV);
}

/* weft_recvfrom and weft_sendto, inlined into their short forms too
 * (which would otherwise call them through the PLT). */
static inline __attribute__((always_inline)) ssize_t
recvfrom_inline(int fd, void *buf, size_t n, int flags, struct sockaddr *a, socklen_t *al)
{
    /* Flags that change what a short count means (MSG_PEEK, MSG_WAITALL,
     * MSG_OOB ...): neither skip nor note. */
    int plain = (flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_CMSG_CLOEXEC)) == 0;
    int nowait = (flags & MSG_DONTWAIT) != 0;
    RETURN_FAST_PATH(fd, NP_READ, plain && !nowait, nowait, plain ? n : 0,
                     weft__syscall6(SYS_recvfrom, fd, (long)buf, (long)n, flags,
                                    (long)a, (long)al),
                     recvfrom(fd, buf, n, flags, a, al));
    return recvfrom_slow(fd, buf, n, flags, a, al);
}

static inline __attribute__((always_inline)) ssize_t
sendto_inline(int fd, const void *buf, size_t n, int flags, const struct sockaddr *a, socklen_t al)
{
    /* MSG_NOSIGNAL: a write to a closed peer fails with -EPIPE rather than
     * killing the process, as a runtime that serves many peers needs. */
    int nowait = (flags & MSG_DONTWAIT) != 0;
    flags |= MSG_NOSIGNAL;
    RETURN_FAST_PATH(fd, NP_WRITE, 0, nowait, 0,
                     weft__syscall6(SYS_sendto, fd, (long)buf, (long)n, flags,
                                    (long)a, (long)al),
                     sendto(fd, buf, n, flags, a, al));
    return sendto_slow(fd, buf, n, flags, a, al);
}

ssize_t weft_recv(int fd, void *buf, size_t n, int flags)
{
    return recvfrom_inline(fd, buf, n, flags, NULL, NULL);
}

ssize_t weft_send(int fd, const void *buf, size_t n, int flags)
{
    return sendto_inline(fd, buf, n, flags, NULL, 0);
}

ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags,
                      struct sockaddr *a, socklen_t *al)
{
    return recvfrom_inline(fd, buf, n, flags, a, al);
}

ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags,
                    const struct sockaddr *a, socklen_t al)
{
    return sendto_inline(fd, buf, n, flags, a, al);
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
        int e = weft__errno(); /* the loop parks: see weft__errno */
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
        return -weft__errno(); /* after a park: see weft__errno */
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
        int e = n < 0 ? weft__errno() : 0; /* the loop parks: see weft__errno */
        if (n < 0 && e != EINTR)
            return -e;
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
    struct np_desc *pd = np_get(fd);
    if (!pd)
        return -ENOMEM;
    /* The contract: negative or 0 is no timeout in that direction (the
     * timeout convention's "negative: no timeout"); stored as 0, which
     * weft__fd_deadline reads as none. Relaxed: configuration, read on
     * its own by the next call. */
    atomic_store_explicit(&pd->timeout[NP_READ], read_ns > 0 ? read_ns : 0,
                          memory_order_relaxed);
    atomic_store_explicit(&pd->timeout[NP_WRITE], write_ns > 0 ? write_ns : 0,
                          memory_order_relaxed);
    return 0;
}
