/*
 * weft_select, and the engine every channel operation runs on.
 *
 * 1. Lock every distinct channel of the cases, in address order (so two
 *    selects over the same channels cannot deadlock).
 * 2. Scan: a send case is ready if the channel is closed, a receiver
 *    waits, or the ring has room; a receive case if a sender waits, the
 *    ring holds a value, or the channel is closed. Pick one ready case
 *    uniformly at random (reservoir sampling in one pass) and run it:
 *    - send: closed -> -EPIPE; else claim the oldest waiting receiver and
 *      copy the value straight into its buffer (the rendezvous: the send
 *      is complete once the receiver has the value); else append to the
 *      ring.
 *    - receive: claim the oldest waiting sender: unbuffered, copy its
 *      value; buffered (the ring is full, or it would not wait), take the
 *      ring's head and append the sender's value, which keeps each
 *      sender's order; else take the ring's head; else closed -> -EPIPE.
 *    A claim can fail when the waiter at the head is a select case that
 *    won elsewhere or timed out: it is dropped and the scan repeats.
 * 3. Nothing ready and a timeout of 0: unlock, -ETIMEDOUT.
 * 4. Otherwise queue one waiter per case on its channel, all sharing one
 *    parker, and block (waitq.h): the locks are dropped only after the
 *    fiber has switched away (or before the thread sleeps). The party
 *    that claims the parker performs the case, as in step 2, from the
 *    other side, records the winning index and wakes us.
 * 5. Awake: unlink the cases that did not win (each under its channel's
 *    lock); on a timeout, all of them.
 */
#include "sched/chan.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "common/alloc.h"

#define SMALL_CASES 8

static __thread uint64_t tls_rng;

/* A random number for fair choice. Any thread. */
static uint64_t select_rand(void)
{
    struct worker *w = weft__worker_self();
    if (w)
        return weft__rand(w);
    if (!tls_rng)
        tls_rng = (uint64_t)weft__now() | 1;
    uint64_t x = tls_rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return tls_rng = x;
}

struct sel {
    weft_chan **locks;   /* distinct channels, sorted                    */
    size_t      nlocks;
};

static void unlock_all(void *arg)
{
    struct sel *s = arg;
    for (size_t i = s->nlocks; i-- > 0;)
        weft__spin_unlock(&s->locks[i]->lock);
}

/* Copy n bytes, tolerating elem_size 0 with NULL buffers. */
static void copy(void *dst, const void *src, size_t n)
{
    if (n)
        memcpy(dst, src, n);
}

/* Append the value at src to the ring (it has room). With ch's lock. */
static void ring_put(struct weft_chan *ch, const void *src)
{
    /* Relaxed: written with the lock held; readers outside it only take a
     * snapshot (weft_chan_len). */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    size_t tail = ch->head + len;
    if (tail >= ch->cap)
        tail -= ch->cap;
    copy(ch->buf + tail * ch->elem_size, src, ch->elem_size);
    atomic_store_explicit(&ch->len, len + 1, memory_order_relaxed);
}

/* Take the ring's head into dst (it is not empty). With ch's lock. */
static void ring_take(struct weft_chan *ch, void *dst)
{
    /* Relaxed: as in ring_put. */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    copy(dst, ch->buf + ch->head * ch->elem_size, ch->elem_size);
    if (++ch->head == ch->cap)
        ch->head = 0;
    atomic_store_explicit(&ch->len, len - 1, memory_order_relaxed);
}

/* Drop the decided waiters at the head of q; is a live one left? With
 * the channel's lock. */
static int has_waiter(struct weft__waitq *q)
{
    struct weft__waiter *w;
    /* Relaxed: a hint; the claim decides with a CAS. */
    while ((w = q->head) && atomic_load_explicit(&w->p->state, memory_order_relaxed) != PARK_WAITING)
        weft__waitq_remove(q, w);
    return w != NULL;
}

/* With c->chan's lock. */
static int ready(const weft_select_case *c)
{
    struct weft_chan *ch = c->chan;
    /* Relaxed: with the lock held, len is ours to read. */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    if (c->op == WEFT_SEND)
        return ch->closed || has_waiter(&ch->recvq) || len < ch->cap;
    return has_waiter(&ch->sendq) || len > 0 || ch->closed;
}

/*
 * Perform case c (found ready). Returns 1 when done (c->result set; *wake
 * is the parker to wake after unlocking, or NULL), 0 when it turned out
 * not to be ready (a claim lost its race). With c->chan's lock.
 */
static int perform(weft_select_case *c, struct weft__parker **wake)
{
    struct weft_chan *ch = c->chan;
    struct weft__waiter *w;
    *wake = NULL;
    c->result = 0;
    /* Relaxed: as in ready. */
    size_t len = atomic_load_explicit(&ch->len, memory_order_relaxed);
    if (c->op == WEFT_SEND) {
        if (ch->closed) {
            c->result = -EPIPE;
        } else if ((w = weft__waitq_claim(&ch->recvq)) != NULL) {
            copy(w->elem, c->elem, ch->elem_size);
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
            copy(c->elem, w->elem, ch->elem_size);
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

/* Sort the distinct channels of cases into s->locks. */
static void collect(struct sel *s, const weft_select_case *cases, size_t n)
{
    s->nlocks = 0;
    for (size_t i = 0; i < n; i++) {
        weft_chan *ch = cases[i].chan;
        if (!ch)
            continue;
        size_t j = s->nlocks;
        while (j > 0 && (uintptr_t)s->locks[j - 1] > (uintptr_t)ch)
            j--;
        if (j > 0 && s->locks[j - 1] == ch)
            continue;
        memmove(&s->locks[j + 1], &s->locks[j], (s->nlocks - j) * sizeof *s->locks);
        s->locks[j] = ch;
        s->nlocks++;
    }
}

int weft__chan_select(weft_select_case *cases, size_t n, int64_t timeout_ns)
{
    weft_chan *small_locks[SMALL_CASES];
    struct weft__waiter small_waiters[SMALL_CASES];
    weft_chan **locks = small_locks;
    struct weft__waiter *waiters = small_waiters;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan && cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV)
            return -EINVAL;
    if (n > SMALL_CASES) {
        locks = weft__malloc(n * sizeof *locks);
        waiters = weft__malloc(n * sizeof *waiters);
        if (!locks || !waiters) {
            weft__free(locks, n * sizeof *locks);
            weft__free(waiters, n * sizeof *waiters);
            return -ENOMEM;
        }
    }
    struct sel s = { locks, 0 };
    collect(&s, cases, n);
    int64_t deadline = weft__deadline(timeout_ns);
    for (size_t i = 0; i < s.nlocks; i++)
        weft__spin_lock(&s.locks[i]->lock);

    int rc;
    struct weft__parker *wake;
    for (;;) {
        size_t nready = 0, pick = 0;
        for (size_t i = 0; i < n; i++)
            if (cases[i].chan && ready(&cases[i]) && select_rand() % ++nready == 0)
                pick = i;
        if (!nready)
            break;
        if (perform(&cases[pick], &wake)) {
            unlock_all(&s);
            if (wake)
                weft__parker_wake(wake);
            rc = (int)pick;
            goto out;
        }
    }
    if (timeout_ns == 0) {
        unlock_all(&s);
        rc = -ETIMEDOUT;
        goto out;
    }

    struct weft__parker p;
    weft__parker_init(&p, deadline);
    for (size_t i = 0; i < n; i++) {
        weft_chan *ch = cases[i].chan;
        if (!ch)
            continue;
        struct weft__waiter *w = &waiters[i];
        w->elem = cases[i].elem;
        w->index = (int)i;
        w->result = 0;
        weft__waitq_push(cases[i].op == WEFT_SEND ? &ch->sendq : &ch->recvq, w, &p, 0);
    }
    {
        /* The registry's wait reason: the channel and direction when
         * there is one channel, else the first channel of the select. */
        size_t live = 0, first = 0;
        for (size_t i = 0; i < n; i++)
            if (cases[i].chan && !live++)
                first = i;
        unsigned why = live > 1 ? WAIT_SELECT
                     : cases[first].op == WEFT_SEND ? WAIT_CHAN_SEND : WAIT_CHAN_RECV;
        weft__wait_reason(why, (uintptr_t)cases[first].chan);
    }
    rc = weft__parker_block(&p, unlock_all, &s);
    if (rc == 0) {
        rc = p.winner;
        cases[rc].result = waiters[rc].result;
    } else if (rc != -ENOMEM) {
        rc = -ETIMEDOUT;
    }
    /* The winner was unlinked by its claimer; unlink the rest. */
    if (n > 1 || rc < 0) {
        for (size_t i = 0; i < s.nlocks; i++) {
            weft_chan *ch = s.locks[i];
            weft__spin_lock(&ch->lock);
            for (size_t j = 0; j < n; j++) {
                if (cases[j].chan != ch)
                    continue;
                weft__waitq_remove(cases[j].op == WEFT_SEND ? &ch->sendq : &ch->recvq,
                                   &waiters[j]);
            }
            weft__spin_unlock(&ch->lock);
        }
    }
out:
    if (n > SMALL_CASES) {
        weft__free(locks, n * sizeof *locks);
        weft__free(waiters, n * sizeof *waiters);
    }
    return rc;
}

int weft_select(weft_select_case *cases, size_t n, int64_t timeout_ns)
{
    if (n > INT_MAX || (n && !cases))
        return -EINVAL;
    return weft__chan_select(cases, n, timeout_ns);
}
