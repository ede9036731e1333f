/*
 * The netpoller: per-fd state, wait slots, and the wait every fd wrapper
 * parks in. Internal. The design is argued in docs/design.md
 * ("Netpoller") and at the top of netpoll.c.
 */
#ifndef WEFT_IO_NETPOLL_H
#define WEFT_IO_NETPOLL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct poller;
struct worker;

/* Directions: index into np_desc.slot, and bit (1 << dir) in masks. */
enum { NP_READ = 0, NP_WRITE = 1 };
#define NP_RBIT (1u << NP_READ)
#define NP_WBIT (1u << NP_WRITE)

/* What the first use of an fd in this run found (np_desc.state & 3). */
enum { NP_UNKNOWN = 0, NP_POLLABLE = 1, NP_PLAIN = 2 };

/*
 * A pollable descriptor: everything the netpoller knows about one fd
 * number. Lives in the fd table (netpoll.c) and is never freed while the
 * process runs, so a stale pointer (an epoll event in flight, a timer)
 * always points at valid memory; `gen` tells a waiter that the fd it
 * started on was closed.
 *
 * state  (epoch << 2) | kind: the kind is valid only while epoch equals
 *        the current run's (netpoll.c); written with lock held (release),
 *        read without it (acquire).
 * slot   per direction: NP_NONE, NP_READY, NP_WAIT, or a parked fiber's
 *        control block, with NP_DUAL set when it waits on both (see
 *        netpoll.c for the transitions).
 * gen    bumped by weft_close; a waiter that sees it change fails -EBADF.
 * nb_set the runtime turned O_NONBLOCK on (plain threads then poll()).
 * sock   a socket (write and writev then go out as send and sendmsg with
 *        MSG_NOSIGNAL: a closed peer gives -EPIPE, never SIGPIPE); set
 *        with stream by np_prepare, valid with the state's kind.
 */
struct np_desc {
    /* What every call and every edge touches comes first, in one cache
     * line (the table's chunks are line-aligned): slot to rdhup. */
    _Alignas(64) _Atomic uintptr_t slot[2];
    _Atomic uint32_t  state;
    _Atomic uint32_t  gen;
    _Atomic int64_t   timeout[2];  /* per-fd read/write timeouts, ns; 0: none */
    int               fd;
    _Atomic uint32_t  redges;      /* read edges delivered, mod 2^32      */
    _Atomic uint32_t  rdrained;    /* see np_read_skips; 0: nothing known */
    uint8_t           stream;      /* a SOCK_STREAM socket; with state    */
    uint8_t           sock;        /* a socket of any type; with state    */
    _Atomic uint8_t   rdhup;       /* a hang-up or error was delivered    */
    _Atomic int       nb_set;
    struct poller    *poller;      /* registered in; with lock, valid with state */
    pthread_mutex_t   lock;        /* first use, close, dual waits */
};

/*
 * The fd table: a fixed array of chunk pointers, each chunk NP_CHUNK
 * descriptors (netpoll.c), for fds below NP_NEAR_FDS (4M). Here so that
 * the fd wrappers' fast path can index it inline. Larger fds (possible
 * only where fs.nr_open and RLIMIT_NOFILE were raised beyond 4M) get
 * descriptors too, from a second table reached out of line
 * (np_lookup_far), so every fd works the same.
 */
#define NP_CHUNK_SHIFT 10
#define NP_CHUNK       (1u << NP_CHUNK_SHIFT)
#define NP_CHUNKS      4096u
#define NP_NEAR_FDS    (NP_CHUNK * NP_CHUNKS)

extern _Atomic(struct np_desc *) weft__np_table[NP_CHUNKS];
/* The current run's epoch (see np_desc.state). */
extern _Atomic uint32_t weft__np_epoch;

/*
 * Skipping the read that would fail. A read on a stream socket that
 * returns less than it asked for (and more than 0) has emptied the
 * receive queue: the kernel stops copying only when the queue is empty.
 * Every byte that arrives later raises an edge, and its delivery bumps
 * `redges`. So if a short read began when redges was e, and redges is
 * still e, whatever is in the socket now has an edge still to come, and
 * the next blocking read can wait for it at once instead of making a
 * system call that would fail with EAGAIN (in an echo server, one of the
 * three calls per message). Any edge delivered since, a full read, an
 * error or end of file makes the next read try the call first. End of
 * file and errors are states rather than data: once an edge has said
 * the peer hung up (rdhup, sticky for the rest of the registration), no
 * read skips, since no further edge may come.
 * Concurrent readers do not break this: a read by another fiber only
 * takes bytes away. Fiber on pd's descriptor.
 */

/* redges now, read before a read's system call. */
static inline uint32_t np_read_edges(struct np_desc *pd)
{
    /* Relaxed: a hint; the slot protocol alone makes the wait that a
     * skip leads to safe (an edge delivered after this load either
     * changes redges, seen below, or leaves READY or wakes the waiter). */
    return atomic_load_explicit(&pd->redges, memory_order_relaxed);
}

/* 1 if the next blocking read on pd may skip its system call. */
static inline int np_read_skips(struct np_desc *pd)
{
    /* Relaxed: as in np_read_edges. */
    uint32_t d = atomic_load_explicit(&pd->rdrained, memory_order_relaxed);
    /* seq_cst rdhup: pairs with the store in netpoll_deliver; a hang-up
     * delivered before this load is seen here, and one delivered after
     * it goes through the slot and wakes the wait a skip leads to. */
    return d != 0 && d == np_read_edges(pd) + 1 && !atomic_load(&pd->rdhup);
}

/* A read that began at edge count e returned r (bytes or -errno) of the
 * `asked` bytes it asked for. */
static inline void np_read_done(struct np_desc *pd, uint32_t e, long r, unsigned long asked)
{
    if (!pd->stream)
        return;
    /* Relaxed: as in np_read_edges. e + 1 is never 0 but for e = ~0u,
     * where the hint is simply lost. */
    uint32_t d = r > 0 && (unsigned long)r < asked ? e + 1 : 0;
    if (atomic_load_explicit(&pd->rdrained, memory_order_relaxed) != d)
        atomic_store_explicit(&pd->rdrained, d, memory_order_relaxed);
}

/* The descriptor for fd, made on first use; NULL if fd < 0, out of
 * memory, or (for fds from NP_NEAR_FDS on, whose chunks are made only
 * for open fds) fd is not open. Any thread. */
struct np_desc *np_get(int fd);

/* np_lookup for fd >= NP_NEAR_FDS. Any thread. */
struct np_desc *np_lookup_far(int fd);

/* The descriptor for fd if one was ever made, else NULL. Any thread. */
static inline struct np_desc *np_lookup(int fd)
{
    if (fd < 0)
        return NULL;
    if ((unsigned)fd >= NP_NEAR_FDS)
        return np_lookup_far(fd);
    /* Acquire: pairs with the release in np_get, publishing the chunk's
     * initialized descriptors. */
    struct np_desc *c = atomic_load_explicit(&weft__np_table[(unsigned)fd >> NP_CHUNK_SHIFT],
                                             memory_order_acquire);
    return c ? &c[(unsigned)fd & (NP_CHUNK - 1)] : NULL;
}

/* 1 if pd is known in this run as an fd the netpoller watches (what
 * np_prepare returned NP_POLLABLE for), so a fiber may call it and wait
 * for its edges at once. Any thread. */
static inline int np_known_pollable(struct np_desc *pd)
{
    /* Relaxed epoch: it changes only while no worker runs (netpoll.c).
     * Acquire state: pairs with np_prepare's release, so the poller
     * pointer and the fd's O_NONBLOCK set before it are visible. */
    uint32_t cur = atomic_load_explicit(&weft__np_epoch, memory_order_relaxed);
    return atomic_load_explicit(&pd->state, memory_order_acquire) == ((cur << 2) | NP_POLLABLE);
}
/* Make sure pd is known in this run: on first use, registers the fd in
 * w's poller and makes it non-blocking (NP_POLLABLE), or finds that epoll
 * cannot watch it (NP_PLAIN). Returns the kind or a negative errno
 * (-EBADF ...). Worker w's thread (a fiber on it). */
int  np_prepare(struct np_desc *pd, struct worker *w);
/* fd was just made by the runtime, non-blocking (accept, socket): forget
 * whatever the table knew about the number. Any thread. */
void np_fresh(int fd);
/* Wait until one of the directions in mask is ready, the fd is closed
 * (gen no longer equals `gen`: -EBADF), or deadline (weft_now clock; < 0:
 * none) passes (-ETIMEDOUT). Returns the mask of ready directions (> 0),
 * which may be stale readiness: the caller retries its call. -EBUSY if
 * another fiber waits on the same direction, -ENOMEM. Fiber only. */
int  np_wait(struct np_desc *pd, unsigned mask, uint32_t gen, int64_t deadline);
/* Close fd: waiters get -EBADF, the state is forgotten. 0 or -errno. Any
 * thread. */
int  np_close(int fd);
/* The runtime stopped (every worker has exited): free the timers left in
 * the dead heaps and invalidate every registration. After the workers
 * joined. */
void weft__netpoll_stop(void);

#endif
