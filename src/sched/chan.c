/*
 * Channels: creation, closing, the ring, the rendezvous, and the
 * one-channel operation that every send and receive is.
 *
 * A single operation (weft__chan_op) takes the channel's lock and tries
 * the case (weft__chan_perform, the same code weft_select runs on the
 * case it picks):
 *  - send: closed -> -EPIPE; else claim the oldest waiting receiver and
 *    copy the value straight into its buffer (the rendezvous: the send is
 *    complete once the receiver has the value); else append to the ring.
 *  - receive: claim the oldest waiting sender: unbuffered, copy its value;
 *    buffered (the ring is full, or it would not wait), take the ring's
 *    head and append the sender's value, which keeps each sender's order;
 *    else take the ring's head; else closed -> -EPIPE.
 *  A claim skips waiters whose parker was decided elsewhere (a select
 *  case that won on another channel, a timed-out waiter) and drops them.
 * If the case cannot complete it returns -ETIMEDOUT for a timeout of 0
 * (the try variants' -EAGAIN); otherwise it links one waiter on the channel's queue and blocks
 * (waitq.h), the lock dropped by the park commit. Whoever claims the
 * waiter performs the case from the other side, so an awake waiter only
 * reads its result; a timed-out one unlinks itself.
 *
 * Unlike weft_select (select.c) this path sorts no locks, draws no random
 * number and keeps no array of waiters: one lock, one waiter on the
 * stack. weft_select hands it a select whose cases name one channel
 * operation only (the others NULL) as well.
 */
#include "sched/chan.h"
#include "sched/chaos.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"

weft_chan *weft_chan_new(size_t elem_size, size_t capacity)
{
    if (capacity && elem_size > SIZE_MAX / capacity) {
        errno = EINVAL;
        return NULL;
    }
    struct weft_chan *ch = weft__malloc(sizeof *ch);
    if (!ch) {
        errno = ENOMEM;
        return NULL;
    }
    ch->buf = NULL;
    if (capacity) { /* at least one byte, so ring arithmetic never meets NULL */
        ch->buf = weft__malloc(elem_size ? capacity * elem_size : 1);
        if (!ch->buf) {
            weft__free(ch, sizeof *ch);
            errno = ENOMEM;
            return NULL;
        }
    }
    atomic_init(&ch->lock, 0);
    ch->closed = 0;
    ch->elem_size = elem_size;
    ch->cap = capacity;
    ch->head = 0;
    atomic_init(&ch->len, 0);
    ch->sendq.head = ch->sendq.tail = NULL;
    ch->recvq.head = ch->recvq.tail = NULL;
    atomic_init(&ch->sendq.lock, 0);
    atomic_init(&ch->recvq.lock, 0);
    return ch;
}

void weft_chan_free(weft_chan *ch)
{
    if (!ch)
        return;
    if (ch->buf)
        weft__free(ch->buf, ch->elem_size ? ch->cap * ch->elem_size : 1);
    weft__free(ch, sizeof *ch);
}

size_t weft_chan_len(const weft_chan *ch)
{
    /* Relaxed: a snapshot, as documented. */
    return ch ? atomic_load_explicit(&ch->len, memory_order_relaxed) : 0;
}

/* Claim every waiter on q for the close: result -EPIPE, onto *tail.
 * With ch's lock held. */
static struct weft__waiter **claim_all(struct weft__waitq *q, struct weft__waiter **tail)
{
    struct weft__waiter *w;
    while ((w = weft__waitq_claim(q)) != NULL) {
        w->result = -EPIPE;
        *tail = w;
        tail = &w->next;
    }
    return tail;
}

void weft_chan_close(weft_chan *ch)
{
    if (!ch)
        return;
    struct weft__waiter *chain = NULL, **tail = &chain;
    weft__spin_lock(&ch->lock);
    if (!ch->closed) {
        ch->closed = 1;
        /* Receivers waiting means the ring is empty: they get -EPIPE.
         * Senders get -EPIPE; their values are not delivered. */
        tail = claim_all(&ch->recvq, tail);
        tail = claim_all(&ch->sendq, tail);
    }
    weft__spin_unlock(&ch->lock);
    weft__chaos(CHAOS_CHAN);
    weft__waiters_wake(chain);
}

/* ---- the ring and the rendezvous ------------------------------------- */

/* Copy one element of n bytes. The common sizes get fixed-size copies,
 * which the compiler turns into a move or two instead of a call into
 * libc; 8 bytes (a pointer, a 64-bit integer), the most common size of
 * all, is tested first. n == 0 (pure signals) may come with NULL
 * buffers. */
static inline __attribute__((always_inline)) void elem_copy(void *dst, const void *src, size_t n)
{
    if (__builtin_expect(n == 8, 1)) {
        memcpy(dst, src, 8);
        return;
    }
    switch (n) {
    case 0:
        return;
    case 1:
        memcpy(dst, src, 1);
        return;
    case 2:
        memcpy(dst, src, 2);
        return;
    case 4:
        memcpy(dst, src, 4);
        return;
    case 16:
        memcpy(dst, src, 16);
        return;
    default:
        memcpy(dst, src, n);
        return;
    }
}

/* Append the value at src to the ring (it has room). With ch's lock. */
static inline void ring_put(struct weft_chan *ch, const void *src)
{
    /* Relaxed: written with the lock held; readers outside it only take a
     * snapshot (weft_chan_len). */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    size_t tail = ch->head + len;
    if (tail >= ch->cap)
        tail -= ch->cap;
    elem_copy(ch->buf + tail * ch->elem_size, src, ch->elem_size);
    atomic_store_explicit(&ch->len, len + 1, memory_order_relaxed);
}

/* Take the ring's head into dst (it is not empty). With ch's lock. */
static inline void ring_take(struct weft_chan *ch, void *dst)
{
    /* Relaxed: as in ring_put. */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    elem_copy(dst, ch->buf + ch->head * ch->elem_size, ch->elem_size);
    if (++ch->head == ch->cap)
        ch->head = 0;
    atomic_store_explicit(&ch->len, len - 1, memory_order_relaxed);
}

/* weft__chan_perform, inlined into the single operation. With
 * c->chan's lock. */
static inline __attribute__((always_inline))
int perform(weft_select_case *c, struct weft__parker **wake)
{
    struct weft_chan *ch = c->chan;
    struct weft__waiter *w;
    *wake = NULL;
    c->result = 0;
    /* Relaxed: with the lock held, len is ours to read. */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    if (c->op == WEFT_SEND) {
        if (ch->closed) {
            c->result = -EPIPE;
        } else if ((w = weft__waitq_claim(&ch->recvq)) != NULL) {
            elem_copy(w->elem, c->elem, ch->elem_size);
            w->result = 0;
            *wake = w->p;
        } else if (len < ch->cap) {
            ring_put(ch, c->elem);
        } else {
            return 0;
        }
        return 1;
    }
    if ((w = weft__waitq_claim(&ch->sendq)) != NULL) {
        if (ch->cap == 0) {
            elem_copy(c->elem, w->elem, ch->elem_size);
        } else {
            ring_take(ch, c->elem);
            ring_put(ch, w->elem);
        }
        w->result = 0;
        *wake = w->p;
    } else if (len > 0) {
        ring_take(ch, c->elem);
    } else if (ch->closed) {
        c->result = -EPIPE;
    } else {
        return 0;
    }
    return 1;
}

int weft__chan_perform(weft_select_case *c, struct weft__parker **wake)
{
    return perform(c, wake);
}

/* ---- one operation ------------------------------------------------------ */

/* weft__chan_op, inlined into each public call so that op and the
 * timeout's kind are constants there. */
static inline __attribute__((always_inline))
int chan_op(struct weft_chan *ch, int op, void *elem, int64_t timeout_ns)
{
    weft__chaos_move(CHAOS_BLOCK);
    /* The clock is read only for a real timeout, and before the lock. */
    int64_t deadline = timeout_ns > 0 ? weft__deadline(timeout_ns) : -1;
    weft_select_case c = { ch, op, elem, 0 };
    struct weft__parker *wake;
    weft__spin_lock(&ch->lock);
    if (perform(&c, &wake)) {
        weft__spin_unlock(&ch->lock);
        weft__chaos(CHAOS_CHAN);
        if (wake)
            weft__parker_wake(wake);
        return c.result;
    }
    if (timeout_ns == 0) {
        weft__spin_unlock(&ch->lock);
        return -ETIMEDOUT;
    }
    struct weft__parker p;
    struct weft__waiter w;
    struct weft__waitq *q = weft__chan_waitq(ch, op);
    weft__parker_init(&p, deadline);
    w.elem = elem;
    w.index = 0;
    w.result = 0;
    weft__waitq_push(q, &w, &p, 0);
    weft__wait_reason(op == WEFT_SEND ? WAIT_CHAN_SEND : WAIT_CHAN_RECV, (uintptr_t)ch);
    int rc = weft__parker_block_unlock(&p, &ch->lock);
    if (rc == 0)
        return w.result; /* the claimer unlinked w and performed the case */
    weft__waiter_cancel(&ch->lock, q, &w);
    return rc;
}

int weft__chan_op(struct weft_chan *ch, int op, void *elem, int64_t timeout_ns)
{
    return chan_op(ch, op, elem, timeout_ns);
}

/* A channel and an element the call can copy: not NULL unless the
 * elements are empty. */
static inline int bad_args(const struct weft_chan *ch, const void *elem)
{
    return __builtin_expect(!ch || !elem, 0) && (!ch || ch->elem_size);
}

int weft_chan_send(weft_chan *ch, const void *elem)
{
    return bad_args(ch, elem) ? -EINVAL : chan_op(ch, WEFT_SEND, (void *)(uintptr_t)elem, -1);
}

int weft_chan_recv(weft_chan *ch, void *elem)
{
    return bad_args(ch, elem) ? -EINVAL : chan_op(ch, WEFT_RECV, elem, -1);
}

int weft_chan_try_send(weft_chan *ch, const void *elem)
{
    if (bad_args(ch, elem))
        return -EINVAL;
    int rc = chan_op(ch, WEFT_SEND, (void *)(uintptr_t)elem, 0);
    return rc == -ETIMEDOUT ? -EAGAIN : rc;
}

int weft_chan_try_recv(weft_chan *ch, void *elem)
{
    if (bad_args(ch, elem))
        return -EINVAL;
    int rc = chan_op(ch, WEFT_RECV, elem, 0);
    return rc == -ETIMEDOUT ? -EAGAIN : rc;
}

int weft_chan_send_timeout(weft_chan *ch, const void *elem, int64_t ns)
{
    return bad_args(ch, elem) ? -EINVAL : chan_op(ch, WEFT_SEND, (void *)(uintptr_t)elem, ns);
}

int weft_chan_recv_timeout(weft_chan *ch, void *elem, int64_t ns)
{
    return bad_args(ch, elem) ? -EINVAL : chan_op(ch, WEFT_RECV, elem, ns);
}
