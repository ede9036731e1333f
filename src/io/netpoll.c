/*
 * The netpoller: the fd table, the per-direction wait slots, and the
 * wait that the fd wrappers (fd.c) park in.
 *
 * Registration. The first time a fiber uses an fd in a run, the fd is
 * added to the epoll of the worker that fiber runs on, edge-triggered for
 * both directions (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET), once; it is never
 * modified or re-armed afterwards, and the kernel drops it on close. The
 * fiber may later wait on the fd from any worker: the event is delivered
 * by whichever worker owns that epoll (when it parks in poller_wait, or
 * every FAIRNESS_TICK picks while it is busy, sched.c), and that worker
 * readies the waiter. docs/design.md argues edge-triggered against
 * one-shot.
 *
 * Wait slots. Each direction of an np_desc has one word (Go's pollDesc
 * rg/wg):
 *
 *   NP_NONE   nobody waits, no edge pending
 *   NP_READY  an edge arrived that no waiter consumed yet
 *   NP_WAIT   a fiber is about to park (set before its switch)
 *   fiber     that fiber is parked; NP_DUAL tagged if it also sits in the
 *             other direction's slot (weft_wait_fd with POLLIN|POLLOUT)
 *
 * Transitions, all by CAS (seq_cst, because the close protocol below is a
 * store-load (Dekker) pattern between gen and the slots):
 *   waiter   NONE -> WAIT (then re-checks gen), WAIT -> fiber in the park
 *            commit (after its context is saved), READY -> NONE (consume)
 *   unblock  READY stays; NONE -> READY (edge, no waiter); WAIT -> READY
 *            or NONE (the commit's CAS then fails and the park is
 *            cancelled); fiber -> READY (edge) or NONE (close, timer),
 *            and the unblocker alone calls weft__ready on it.
 * A fiber pointer leaves a slot only by one successful CAS, so a fiber is
 * readied at most once per park (no double wake-up), and a waiter parks
 * only after publishing itself where any later edge, close or timer will
 * find it (no lost wake-up). Tagged (dual) pointers change only with
 * pd->lock held, and the unblocker that takes one clears the other slot
 * in the same critical section.
 *
 * Timers. A wait with a deadline allocates an np_timer in its park
 * commit and arms it on the worker the fiber left (timer heaps are
 * owner-only). The timer unblocks with NONE: the waiter wakes, sees no
 * READY, and fails with -ETIMEDOUT if its deadline passed (else waits
 * again: a timer left over from an earlier wait only causes one spurious
 * wake-up). If I/O wins, the waiter removes the timer itself when it runs
 * on the timer's worker; otherwise the timer stays armed and fires
 * harmlessly later. Two references (the heap's and the waiter's) decide
 * who frees it; the ones still armed when the runtime stops are freed by
 * weft__netpoll_stop, found through per-worker lists.
 *
 * Last touches. A descriptor is never freed, but its fd number passes
 * to a new owner at close(2), and a waiter's frame (struct np_wait) goes
 * away once the waiter runs again. For each hand-over, the step that
 * lets the other party proceed, and what is touched after it:
 *   waiter's commit  slots_publish's CAS (or, for a dual wait, the unlock
 *            after both CASes) makes the fiber findable: an unblocker may
 *            ready it and it may return at once on another worker.
 *            wait_commit writes wr->timer BEFORE it and touches wr no
 *            more; a failed CAS means not parked, and wr is still ours.
 *   unblock  (edge, timer, close) the CAS that takes a fiber out of its
 *            slot gives that caller the sole right to weft__ready it;
 *            weft__ready is the step. Afterwards the unblocker only
 *            compares the pointer (fw != fr); the np_wait record is never
 *            touched by an unblocker at all. A timer's own record is
 *            reference-counted (timer_unref): the fiber and the heap each
 *            drop theirs, the last frees.
 *   weft_close  np_close bumps gen (waiters see -EBADF), readies the
 *            waiters, then resets the descriptor (state, timeouts,
 *            nb_set, poller) and only then calls close(2), which frees
 *            the number: from there on another thread may get the number
 *            from socket()/accept() and set up the same descriptor
 *            (np_fresh, weft_fd_timeouts, the fast path's state check),
 *            so nothing of it is written after close(2); only pd->lock is
 *            released, which such a new owner's np_fresh/np_prepare waits
 *            for. (A woken waiter cannot reuse the number before close(2)
 *            returns: the kernel still holds it.)
 *   edges in flight  an event fetched by a worker before close(2) may be
 *            delivered after it, to a descriptor that now serves a new fd
 *            with the same number: it marks a slot READY (a spurious
 *            wake-up: the woken call retries and waits again) or sets
 *            rdhup (which only turns off read skipping). Edges are hints,
 *            so this is harmless by design.
 */
#define _GNU_SOURCE
#include "io/netpoll.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "io/poller.h"
#include "sched/chaos.h"
#include "sched/sched.h"

#define NP_NONE  ((uintptr_t)0)
#define NP_READY ((uintptr_t)1)
#define NP_WAIT  ((uintptr_t)2)
#define NP_DUAL  ((uintptr_t)1)   /* tag on a fiber pointer (>= 8-aligned) */

/* ---- the fd table ---------------------------------------------------------- */

/*
 * Two levels (netpoll.h): a fixed array of chunk pointers, each chunk
 * NP_CHUNK descriptors. Readers index it without a lock (an acquire load
 * of the chunk pointer); chunks are made under table_lock and never
 * freed, so a descriptor's address is stable for the life of the process
 * (reachable from here, so LeakSanitizer does not count it). Unlike one
 * array grown by realloc, nothing a reader holds can move.
 */
_Atomic(struct np_desc *) weft__np_table[NP_CHUNKS];
_Static_assert(offsetof(struct np_desc, rdhup) + sizeof(uint8_t) <= 64,
               "the fields every call touches share one cache line");
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

/* Current run; bumped when a runtime stops, so registrations in the
 * closed epolls are redone. Relaxed everywhere: it changes only while no
 * worker runs, and thread creation/join order it against every reader. */
_Atomic uint32_t weft__np_epoch = 1;

/*
 * The far table: chunk pointers for the fds from NP_NEAR_FDS to INT_MAX,
 * NP_FAR_CHUNKS of them (16 MiB, zero pages until used), made by the
 * first np_get of such an fd and, like the chunks, never freed. Out of
 * line: the fast path's bounds test sends only those fds here. Acquire
 * loads of the table and its slots pair with the release stores in
 * np_get.
 */
#define NP_FAR_CHUNKS (((unsigned)INT_MAX >> NP_CHUNK_SHIFT) + 1 - NP_CHUNKS)
static _Atomic(_Atomic(struct np_desc *) *) far_table;

struct np_desc *np_lookup_far(int fd)
{
    _Atomic(struct np_desc *) *t = atomic_load_explicit(&far_table, memory_order_acquire);
    if (!t)
        return NULL;
    unsigned ci = ((unsigned)fd >> NP_CHUNK_SHIFT) - NP_CHUNKS;
    struct np_desc *c = atomic_load_explicit(&t[ci], memory_order_acquire);
    return c ? &c[(unsigned)fd & (NP_CHUNK - 1)] : NULL;
}

/* Where the chunk pointer for chunk ci lives, making the far table if
 * needed; NULL if out of memory. With table_lock held. */
static _Atomic(struct np_desc *) *chunk_slot(unsigned ci)
{
    if (ci < NP_CHUNKS)
        return &weft__np_table[ci];
    /* Relaxed: with table_lock held, which orders the writers. */
    _Atomic(struct np_desc *) *t = atomic_load_explicit(&far_table, memory_order_relaxed);
    if (!t) {
        t = calloc(NP_FAR_CHUNKS, sizeof *t);
        if (!t)
            return NULL;
        /* Release: pairs with the acquire in np_lookup_far. */
        atomic_store_explicit(&far_table, t, memory_order_release);
    }
    return &t[ci - NP_CHUNKS];
}

struct np_desc *np_get(int fd)
{
    struct np_desc *pd = np_lookup(fd);
    if (pd || fd < 0)
        return pd;
    /* A far chunk only for an open fd: a stray large number must not
     * cost a chunk. */
    if ((unsigned)fd >= NP_NEAR_FDS && fcntl(fd, F_GETFD) < 0)
        return NULL;
    unsigned ci = (unsigned)fd >> NP_CHUNK_SHIFT;
    pthread_mutex_lock(&table_lock);
    _Atomic(struct np_desc *) *slot = chunk_slot(ci);
    /* Relaxed: with table_lock held, which orders the writers. */
    struct np_desc *c = slot ? atomic_load_explicit(slot, memory_order_relaxed) : NULL;
    if (slot && !c) {
        c = weft__aligned_alloc(_Alignof(struct np_desc), NP_CHUNK * sizeof *c);
        if (c) {
            memset(c, 0, NP_CHUNK * sizeof *c);
            for (unsigned i = 0; i < NP_CHUNK; i++) {
                pthread_mutex_init(&c[i].lock, NULL);
                c[i].fd = (int)((ci << NP_CHUNK_SHIFT) | i);
            }
            /* Release: pairs with the acquire in np_lookup(_far). */
            atomic_store_explicit(slot, c, memory_order_release);
        }
    }
    pthread_mutex_unlock(&table_lock);
    return c ? &c[(unsigned)fd & (NP_CHUNK - 1)] : NULL;
}

static uint32_t epoch_now(void)
{
    return atomic_load_explicit(&weft__np_epoch, memory_order_relaxed);
}

int np_prepare(struct np_desc *pd, struct worker *w)
{
    uint32_t cur = epoch_now();
    /* Acquire: pairs with the release below; the poller pointer and the
     * fd's flags set before it are visible. */
    uint32_t st = atomic_load_explicit(&pd->state, memory_order_acquire);
    if ((st >> 2) == cur)
        return (int)(st & 3);
    pthread_mutex_lock(&pd->lock);
    int kind;
    st = atomic_load_explicit(&pd->state, memory_order_relaxed); /* lock held */
    if ((st >> 2) == cur) {
        kind = (int)(st & 3);
        goto out;
    }
    int fl = fcntl(pd->fd, F_GETFL);
    if (fl < 0) {
        kind = -errno;
        goto out;
    }
    int r = poller_register(w->poller, pd->fd, pd);
    if (r == -EPERM) {
        kind = NP_PLAIN;
    } else if (r == 0 || r == -EEXIST) {
        kind = NP_POLLABLE;
        if (!(fl & O_NONBLOCK)) {
            if (fcntl(pd->fd, F_SETFL, fl | O_NONBLOCK) != 0) {
                kind = -errno;
                goto out;
            }
            /* Relaxed: read by plain threads after their call failed with
             * EAGAIN, which the fcntl above happens before. */
            atomic_store_explicit(&pd->nb_set, 1, memory_order_relaxed);
        }
        pd->poller = r == 0 ? w->poller : NULL;
        int type = 0;
        socklen_t tl = sizeof type;
        pd->sock = getsockopt(pd->fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0;
        pd->stream = pd->sock && type == SOCK_STREAM;
        /* Relaxed: published by the release of state below. */
        atomic_store_explicit(&pd->rdrained, 0, memory_order_relaxed);
        atomic_store_explicit(&pd->rdhup, 0, memory_order_relaxed);
        atomic_store(&pd->slot[NP_READ], NP_NONE);
        atomic_store(&pd->slot[NP_WRITE], NP_NONE);
    } else {
        kind = r;
        goto out;
    }
    /* Release: pairs with the acquire above. */
    atomic_store_explicit(&pd->state, (cur << 2) | (uint32_t)kind, memory_order_release);
out:
    pthread_mutex_unlock(&pd->lock);
    return kind;
}

void np_fresh(int fd)
{
    struct np_desc *pd = np_get(fd);
    if (!pd)
        return;
    pthread_mutex_lock(&pd->lock);
    atomic_fetch_add(&pd->gen, 1);
    /* Relaxed: with pd->lock held; np_prepare re-reads it under the lock. */
    atomic_store_explicit(&pd->state, 0, memory_order_relaxed);
    atomic_store_explicit(&pd->timeout[0], 0, memory_order_relaxed);
    atomic_store_explicit(&pd->timeout[1], 0, memory_order_relaxed);
    /* Relaxed: see np_prepare. The runtime made it non-blocking. */
    atomic_store_explicit(&pd->nb_set, 1, memory_order_relaxed);
    pthread_mutex_unlock(&pd->lock);
}

/* ---- unblocking ---------------------------------------------------------- */

static struct weft_fiber *unblock(struct np_desc *pd, int dir, int ioready);

/* The slot holds a dual waiter: take it and clear its other slot, with
 * pd->lock held so a second unblocker cannot take the other copy. Any
 * thread. */
static struct weft_fiber *unblock_dual(struct np_desc *pd, int dir, int ioready)
{
    struct weft_fiber *f = NULL;
    pthread_mutex_lock(&pd->lock);
    uintptr_t old = atomic_load(&pd->slot[dir]);
    if (old > NP_WAIT && (old & NP_DUAL) &&
        atomic_compare_exchange_strong(&pd->slot[dir], &old, ioready ? NP_READY : NP_NONE)) {
        uintptr_t other = old;
        atomic_compare_exchange_strong(&pd->slot[dir ^ 1], &other, NP_NONE);
        f = (struct weft_fiber *)(old & ~NP_DUAL);
    }
    pthread_mutex_unlock(&pd->lock);
    return f ? f : unblock(pd, dir, ioready);
}

/* Move one slot on after an edge (ioready) or a close/timeout, and return
 * the fiber the caller must weft__ready, if any. Any thread. */
static struct weft_fiber *unblock(struct np_desc *pd, int dir, int ioready)
{
    _Atomic uintptr_t *s = &pd->slot[dir];
    for (;;) {
        uintptr_t old = atomic_load(s);
        if (old == NP_READY || (old == NP_NONE && !ioready))
            return NULL;
        if (old > NP_WAIT && (old & NP_DUAL))
            return unblock_dual(pd, dir, ioready);
        if (atomic_compare_exchange_weak(s, &old, ioready ? NP_READY : NP_NONE))
            return old > NP_WAIT ? (struct weft_fiber *)old : NULL;
    }
}

/* Unblock the directions in mask; ready whoever was parked. Any thread. */
static void unblock_ready(struct np_desc *pd, unsigned mask, int ioready)
{
    struct weft_fiber *fr = (mask & NP_RBIT) ? unblock(pd, NP_READ, ioready) : NULL;
    struct weft_fiber *fw = (mask & NP_WBIT) ? unblock(pd, NP_WRITE, ioready) : NULL;
    if (ioready) {
        if (fr)
            weft__ready_io(fr);
        if (fw && fw != fr)
            weft__ready_io(fw);
        return;
    }
    if (fr)
        weft__ready(fr);
    if (fw && fw != fr)
        weft__ready(fw);
}

void netpoll_deliver_end(void)
{
    weft__ready_io_end();
}

void netpoll_deliver(void *data, unsigned events)
{
    unsigned mask = 0;
    if (events & POLLER_IN) {
        mask |= NP_RBIT;
        /* seq_cst: see np_read_skips. Stored only once per registration. */
        if ((events & POLLER_HUP) && !atomic_load(&((struct np_desc *)data)->rdhup))
            atomic_store(&((struct np_desc *)data)->rdhup, 1);
        /* Relaxed: see np_read_edges. Before the unblock, so a reader
         * woken by this edge sees it counted. */
        atomic_fetch_add_explicit(&((struct np_desc *)data)->redges, 1, memory_order_relaxed);
    }
    if (events & POLLER_OUT)
        mask |= NP_WBIT;
    weft__chaos(CHAOS_NETPOLL);
    unblock_ready(data, mask, 1);
}

int np_close(int fd)
{
    struct np_desc *pd = np_lookup(fd);
    if (!pd)
        return close(fd) == 0 || errno == EINTR ? 0 : -errno;
    pthread_mutex_lock(&pd->lock);
    /* seq_cst: the store half of the Dekker pair with np_wait (slot CAS to
     * NP_WAIT, then load gen): either the waiter sees the new gen, or the
     * unblock below sees its WAIT or fiber. */
    atomic_fetch_add(&pd->gen, 1);
    uint32_t st = atomic_load_explicit(&pd->state, memory_order_relaxed); /* lock held */
    if ((st >> 2) == epoch_now() && pd->poller)
        poller_forget(pd->poller);
    pthread_mutex_unlock(&pd->lock);
    /* Outside the lock: a dual waiter's unblock takes it. */
    unblock_ready(pd, NP_RBIT | NP_WBIT, 0);
    pthread_mutex_lock(&pd->lock);
    /* Forget the fd BEFORE close(2) (see "Last touches" above): once the
     * kernel has freed the number, another thread may get it back from
     * socket() or accept() and set up the same descriptor (timeouts, the
     * fast path's "known pollable" state); nothing here may overwrite
     * that, nor leave the old fd's state for it to find. Relaxed: with
     * pd->lock held; np_prepare re-reads under the lock, and the fast
     * path's acquire load of state sees 0 or the new owner's value. */
    atomic_store_explicit(&pd->state, 0, memory_order_relaxed);
    atomic_store_explicit(&pd->timeout[0], 0, memory_order_relaxed);
    atomic_store_explicit(&pd->timeout[1], 0, memory_order_relaxed);
    atomic_store_explicit(&pd->nb_set, 0, memory_order_relaxed);
    pd->poller = NULL;
    /* The step that lets another party proceed: the number is free. Only
     * the unlock follows, which a new owner's np_fresh / np_prepare waits
     * for. */
    int r = close(fd) == 0 || errno == EINTR ? 0 : -errno;
    pthread_mutex_unlock(&pd->lock);
    return r;
}

/* ---- timers ------------------------------------------------------------- */

struct np_timer {
    struct weft__timer t;
    struct np_desc    *pd;
    unsigned           mask;
    _Atomic int        refs;     /* the heap's and the waiter's          */
    struct worker     *owner;    /* whose heap; written before publishing */
    struct np_timer   *prev, *next; /* owner's armed list; owner only    */
};

/* Timers armed in each worker's heap, by worker index: only that worker
 * touches its list, and weft__netpoll_stop after they all stopped. */
static struct np_timer *armed[WEFT__MAX_WORKERS];

/* Owner worker of t. */
static void armed_unlink(struct np_timer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        armed[t->owner->index] = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

/* Drop one reference; free on the last. acq_rel: the freeing side sees
 * every write of the other holder; pairs with the other fetch_sub. Any
 * thread. */
static void timer_unref(struct np_timer *t)
{
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        weft__free(t, sizeof *t);
}

/* Timer callback: owner worker, from its pick path. */
static void np_timer_fire(struct weft__timer *wt)
{
    struct np_timer *t = weft__container_of(wt, struct np_timer, t);
    armed_unlink(t);
    unblock_ready(t->pd, t->mask, 0);
    timer_unref(t);
}

/* After a wait: give up the waiter's reference, removing the timer from
 * the heap when we run on its worker and it is still armed. Fiber only. */
static void timer_release(struct np_timer *t)
{
    struct worker *w = weft__worker_self();
    if (w == t->owner && timer_armed(&t->t)) {
        timer_remove(&w->timers, &t->t);
        armed_unlink(t);
        weft__free(t, sizeof *t);
        return;
    }
    timer_unref(t);
}

void weft__netpoll_stop(void)
{
    for (unsigned i = 0; i < WEFT__MAX_WORKERS; i++) {
        struct np_timer *t = armed[i];
        armed[i] = NULL;
        while (t) {
            struct np_timer *next = t->next;
            weft__free(t, sizeof *t);
            t = next;
        }
    }
    /* Relaxed: see weft__np_epoch. */
    atomic_fetch_add_explicit(&weft__np_epoch, 1, memory_order_relaxed);
}

/* ---- waiting ------------------------------------------------------------ */

struct np_wait {
    struct np_desc  *pd;
    unsigned         mask;
    int64_t          deadline;
    struct np_timer *timer;   /* set by the commit                    */
    int              nomem;
};

/* Undo NP_WAIT (and our own tagged pointer) in the slots of mask; a slot
 * an unblocker moved already keeps its new value. With pd->lock held
 * when tagged is non-zero. Fiber or its commit. */
static void slots_undo(struct np_desc *pd, unsigned mask, uintptr_t tagged)
{
    for (int d = 0; d < 2; d++) {
        if (!(mask & (1u << d)))
            continue;
        uintptr_t e = NP_WAIT;
        if (!atomic_compare_exchange_strong(&pd->slot[d], &e, NP_NONE) && tagged) {
            e = tagged;
            atomic_compare_exchange_strong(&pd->slot[d], &e, NP_NONE);
        }
    }
}

/* Publish self in the slots: 1 if parked, 0 if an unblocker got there
 * first (the park is cancelled). The commit, on the worker self left. */
static int slots_publish(struct np_desc *pd, unsigned mask, struct weft_fiber *self)
{
    uintptr_t e = NP_WAIT;
    if (mask != (NP_RBIT | NP_WBIT)) {
        int d = mask == NP_RBIT ? NP_READ : NP_WRITE;
        return atomic_compare_exchange_strong(&pd->slot[d], &e, (uintptr_t)self);
    }
    uintptr_t tagged = (uintptr_t)self | NP_DUAL;
    pthread_mutex_lock(&pd->lock);
    int ok = atomic_compare_exchange_strong(&pd->slot[NP_READ], &e, tagged);
    e = NP_WAIT;
    ok = ok && atomic_compare_exchange_strong(&pd->slot[NP_WRITE], &e, tagged);
    if (!ok)
        slots_undo(pd, mask, tagged);
    pthread_mutex_unlock(&pd->lock);
    return ok;
}

/* Park commit of np_wait: arm the deadline timer on this worker, then
 * publish the fiber. The worker the fiber just left. */
static int wait_commit(struct weft_fiber *self, void *arg)
{
    weft__chaos(CHAOS_NETPOLL);
    struct np_wait *wr = arg;
    struct worker *w = weft__worker_self();
    struct np_timer *t = NULL;
    if (wr->deadline >= 0) {
        t = weft__malloc(sizeof *t);
        if (!t)
            goto nomem;
        t->pd = wr->pd;
        t->mask = wr->mask;
        t->owner = w;
        /* Relaxed: t is not shared until the publication below. */
        atomic_init(&t->refs, 2);
        timer_init(&t->t, np_timer_fire);
        if (timer_add(&w->timers, &t->t, wr->deadline) != 0) {
            weft__free(t, sizeof *t);
            goto nomem;
        }
        t->prev = NULL;
        t->next = armed[w->index];
        if (t->next)
            t->next->prev = t;
        armed[w->index] = t;
    }
    /* Before publishing: once published, the fiber may run elsewhere and
     * return, and wr (on its stack) is gone. */
    wr->timer = t;
    if (slots_publish(wr->pd, wr->mask, self))
        return 1;
    if (t) {
        timer_remove(&w->timers, &t->t);
        armed_unlink(t);
        weft__free(t, sizeof *t);
        wr->timer = NULL;
    }
    return 0;
nomem:
    wr->nomem = 1;
    slots_undo(wr->pd, wr->mask, 0);
    return 0;
}

/* Consume the READY edges of mask; returns the mask consumed. Fiber. */
static unsigned consume_ready(struct np_desc *pd, unsigned mask)
{
    unsigned got = 0;
    for (int d = 0; d < 2; d++) {
        uintptr_t e = NP_READY;
        /* The load first: a failed CAS costs as much as a successful one,
         * and most waits find no edge pending. */
        if ((mask & (1u << d)) && atomic_load(&pd->slot[d]) == NP_READY &&
            atomic_compare_exchange_strong(&pd->slot[d], &e, NP_NONE))
            got |= 1u << d;
    }
    return got;
}

int np_wait(struct np_desc *pd, unsigned mask, uint32_t gen, int64_t deadline)
{
    for (;;) {
        unsigned got = consume_ready(pd, mask);
        if (got)
            return (int)got;
        /* seq_cst loads of gen: see np_close. */
        if (atomic_load(&pd->gen) != gen)
            return -EBADF;
        if (deadline >= 0 && weft__now() >= deadline)
            return -ETIMEDOUT;
        unsigned claimed = 0;
        int busy = 0, ready = 0;
        for (int d = 0; d < 2; d++) {
            if (!(mask & (1u << d)))
                continue;
            uintptr_t e = NP_NONE;
            if (atomic_compare_exchange_strong(&pd->slot[d], &e, NP_WAIT))
                claimed |= 1u << d;
            else if (e == NP_READY)
                ready = 1;
            else
                busy = 1;
        }
        if (busy || ready) {
            slots_undo(pd, claimed, 0);
            if (busy)
                return -EBUSY;
            continue;
        }
        if (atomic_load(&pd->gen) != gen) {
            slots_undo(pd, claimed, 0);
            return -EBADF;
        }
        struct np_wait wr = { pd, mask, deadline, NULL, 0 };
        weft__wait_reason(mask == NP_RBIT ? WAIT_FD_READ
                          : mask == NP_WBIT ? WAIT_FD_WRITE : WAIT_FD_RW, (uintptr_t)pd->fd);
        weft__park(wait_commit, &wr);
        if (wr.timer)
            timer_release(wr.timer);
        if (wr.nomem)
            return -ENOMEM;
    }
}
