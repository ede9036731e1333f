/*
 * Channels' internal layout and the two halves of their implementation:
 * chan.c owns the channel (its ring, the rendezvous, and the one-channel
 * operation every send and receive runs as); select.c owns weft_select's
 * engine over several channels, which performs its chosen case with
 * chan.c's weft__chan_perform, so the case logic exists once.
 */
#ifndef WEFT_SCHED_CHAN_H
#define WEFT_SCHED_CHAN_H

#include "sched/waitq.h"

struct weft_chan {
    _Atomic unsigned   lock;      /* guards everything below but len reads */
    int                closed;
    size_t             elem_size;
    size_t             cap;       /* 0: unbuffered                         */
    size_t             head;      /* ring index of the oldest value        */
    _Atomic size_t     len;       /* values in the ring; written with lock */
    struct weft__waitq sendq;     /* waiting senders (their lock unused)   */
    struct weft__waitq recvq;     /* waiting receivers                     */
    unsigned char     *buf;       /* cap * elem_size bytes, or NULL        */
};

/* The queue a case of op (WEFT_SEND or WEFT_RECV) waits on. */
static inline struct weft__waitq *weft__chan_waitq(struct weft_chan *ch, int op)
{
    return op == WEFT_SEND ? &ch->sendq : &ch->recvq;
}

/*
 * Perform case c now if it can complete: returns 1 when done (c->result
 * set to 0 or -EPIPE; *wake is the parker to wake once the lock is
 * dropped, or NULL), 0 when it cannot complete yet (nothing was changed
 * but decided waiters dropped from the queue it looked at). c->chan not
 * NULL, c->op valid. With c->chan's lock held.
 */
int weft__chan_perform(weft_select_case *c, struct weft__parker **wake);

/*
 * One operation on one channel, timeout as weft_select's: 0 or -EPIPE
 * (the case's result), -ETIMEDOUT, or -ENOMEM (no timer could be armed).
 * ch not NULL, op valid. Any fiber or thread.
 */
int weft__chan_op(struct weft_chan *ch, int op, void *elem, int64_t timeout_ns);

/* weft_select's contract, once weft_select has checked n and cases
 * (the ops are checked here; cases may be NULL when n is 0). Any fiber
 * or thread. */
int weft__chan_select(weft_select_case *cases, size_t n, int64_t timeout_ns);

#endif
