/*
 * Channels: creation, closing, and the single-operation calls, which run
 * as a one-case select (select.c) so that sends, receives and selects
 * share one implementation of the rendezvous and the ring.
 */
#include "sched/chan.h"

#include <errno.h>
#include <stdint.h>

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
    weft__waiters_wake(chain);
}

/* One case, timeout as weft_select's. Any fiber or thread. */
static int one(weft_chan *ch, int op, void *elem, int64_t timeout_ns)
{
    if (!ch)
        return -EINVAL;
    weft_select_case c = { ch, op, elem, 0 };
    int rc = weft__chan_select(&c, 1, timeout_ns);
    return rc < 0 ? rc : c.result;
}

int weft_chan_send(weft_chan *ch, const void *elem)
{
    return one(ch, WEFT_SEND, (void *)(uintptr_t)elem, -1);
}

int weft_chan_recv(weft_chan *ch, void *elem)
{
    return one(ch, WEFT_RECV, elem, -1);
}

int weft_chan_try_send(weft_chan *ch, const void *elem)
{
    int rc = one(ch, WEFT_SEND, (void *)(uintptr_t)elem, 0);
    return rc == -ETIMEDOUT ? -EAGAIN : rc;
}

int weft_chan_try_recv(weft_chan *ch, void *elem)
{
    int rc = one(ch, WEFT_RECV, elem, 0);
    return rc == -ETIMEDOUT ? -EAGAIN : rc;
}

int weft_chan_send_timeout(weft_chan *ch, const void *elem, int64_t ns)
{
    return one(ch, WEFT_SEND, (void *)(uintptr_t)elem, ns);
}

int weft_chan_recv_timeout(weft_chan *ch, void *elem, int64_t ns)
{
    return one(ch, WEFT_RECV, elem, ns);
}
