/*
 * Channels' internal layout, shared by chan.c (the channel itself) and
 * select.c (the one engine every send, receive and select runs on).
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

/* The engine: weft_select's contract, with n >= 1. Any fiber or thread. */
int weft__chan_select(weft_select_case *cases, size_t n, int64_t timeout_ns);

#endif
