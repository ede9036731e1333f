/*
 * weft_select's engine. A select with exactly one case on a channel is
 * a single operation (weft__chan_op, chan.c); this is the rest.
 *
 * 1. Lock every distinct channel of the cases, in address order (so two
 *    selects over the same channels cannot deadlock).
 * 2. Scan: a send case is ready if the channel is closed, a receiver
 *    waits, or the ring has room; a receive case if a sender waits, the
 *    ring holds a value, or the channel is closed. Pick one ready case
 *    uniformly at random (reservoir sampling in one pass) and perform it
 *    with weft__chan_perform (chan.c: the rendezvous and the ring, the
 *    same code as a single send or receive). Performing can fail when
 *    the waiter at the head of a queue is a select case that won
 *    elsewhere or timed out after the scan looked: it is dropped and the
 *    scan repeats.
 * 3. Nothing ready and a timeout of 0: unlock, -ETIMEDOUT.
 * 4. Otherwise queue one waiter per case on its channel, all sharing one
 *    parker, and block (waitq.h): the locks are dropped only after the
 *    fiber has switched away (or before the thread sleeps). The party
 *    that claims the parker performs the case from the other side,
 *    records the winning index and wakes us.
 * 5. Awake: unlink the cases that did not win (each under its channel's
 *    lock); on a timeout, all of them.
 *
 * Lifetime: the park commit (unlock_all) drops several locks, and the
 * first one it drops lets a claimer on that channel wake us: we may run
 * on another worker while the commit still walks our lock array, on our
 * stack (or the heap, freed before we return). That is safe because of
 * the order: the commit releases the locks from the last to the first,
 * and step 5 takes them from the first, so a woken select waits in step
 * 5 for locks[0] - the commit's last release, after which it reads
 * nothing - before it can leave step 5, free the array or return. (A
 * timed-out select goes through step 5 as well.) Keep both orders.
 */
#include "sched/chan.h"
#include "sched/chaos.h"

#include <errno.h>
#include <limits.h>

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

/* Reservoir sampling's draw for the k-th ready case (k >= 2): true with
 * probability 1/k. The high 32 bits of a random word scaled into [0, k)
 * by a multiply and a shift, not a division; the bias is below k / 2^32.
 * Any thread. */
static int pick_kth(size_t k)
{
    return ((select_rand() >> 32) * (uint64_t)k >> 32) == 0;
}

struct sel {
    weft_chan **locks;   /* distinct channels, sorted                    */
    size_t      nlocks;
};

/* Last to first: see Lifetime at the top. locks[0]'s release is the last
 * access to *s and to the array. */
static void unlock_all(void *arg)
{
    struct sel *s = arg;
    weft_chan **locks = s->locks;
    for (size_t i = s->nlocks; i-- > 0;) {
        weft__spin_unlock(&locks[i]->lock);
        if (i)
            weft__chaos(CHAOS_SELECT_RELEASE);
    }
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
        for (size_t k = s->nlocks++; k > j; k--)
            s->locks[k] = s->locks[k - 1];
        s->locks[j] = ch;
    }
}

int weft__chan_select(weft_select_case *cases, size_t n, int64_t timeout_ns)
{
    size_t live = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        if (cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV)
            return -EINVAL;
        if (!cases[i].elem && cases[i].chan->elem_size)
            return -EINVAL; /* nothing to copy from or into */
        if (!live++)
            first = i;
    }
    if (live == 1) {
        weft_select_case *c = &cases[first];
        int rc = weft__chan_op(c->chan, c->op, c->elem, timeout_ns);
        if (rc == -ETIMEDOUT || rc == -ENOMEM)
            return rc;
        c->result = rc;
        return (int)first;
    }

    weft_chan *small_locks[SMALL_CASES];
    struct weft__waiter small_waiters[SMALL_CASES];
    weft_chan **locks = small_locks;
    struct weft__waiter *waiters = small_waiters;
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
            if (cases[i].chan && ready(&cases[i]) && (++nready == 1 || pick_kth(nready)))
                pick = i;
        if (!nready)
            break;
        if (weft__chan_perform(&cases[pick], &wake)) {
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
    weft__parker_init_multi(&p, deadline);
    for (size_t i = 0; i < n; i++) {
        weft_chan *ch = cases[i].chan;
        if (!ch)
            continue;
        struct weft__waiter *w = &waiters[i];
        w->elem = cases[i].elem;
        w->index = (int)i;
        w->result = 0;
        weft__waitq_push(weft__chan_waitq(ch, cases[i].op), w, &p, 0);
    }
    /* The registry's wait reason: the first channel of the select (none
     * when it has no channel and waits for its timeout, or forever). */
    weft__wait_reason(WAIT_SELECT, live ? (uintptr_t)cases[first].chan : 0);
    rc = weft__parker_block(&p, unlock_all, &s);
    if (rc == 0) {
        rc = p.winner;
        cases[rc].result = waiters[rc].result;
    }
    /* The winner was unlinked by its claimer; unlink the rest. */
    for (size_t i = 0; i < s.nlocks; i++) {
        weft_chan *ch = s.locks[i];
        weft__spin_lock(&ch->lock);
        for (size_t j = 0; j < n; j++)
            if (cases[j].chan == ch)
                weft__waitq_remove(weft__chan_waitq(ch, cases[j].op), &waiters[j]);
        weft__spin_unlock(&ch->lock);
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
