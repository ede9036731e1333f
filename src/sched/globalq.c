/*
 * The global run queue: fibers spawned or woken by plain threads, and the
 * overflow of full deques. One mutex guards two FIFO lists:
 *
 *   chunks   arrays of up to GQ_CHUNK fiber pointers, moved in and out
 *            whole. A worker spilling half its deque, or taking a batch
 *            back, copies pointers only and never touches the control
 *            blocks, which after a big burst of spawns are long out of
 *            cache (walking an intrusive list of them costs a cache miss
 *            per fiber, serially).
 *   singles  an intrusive list through fiber->link, for one fiber at a
 *            time. It needs no memory, so readying a fiber from a plain
 *            thread cannot fail.
 *
 * Takers drain the singles first (they are spawns and wake-ups from
 * plain threads, usually waited for), then the chunks; each list stays
 * FIFO. gq_len counts the fibers in both and is the lock-free emptiness
 * hint that schedule loops read.
 */
#include "sched/sched.h"

#include <errno.h>

#include "common/alloc.h"

#define GQ_CHUNK 256   /* a quarter of a deque; a small allocation class */

struct gq_chunk {
    struct gq_chunk   *next;
    unsigned           head, n;   /* live entries are v[head .. n) */
    struct weft_fiber *v[GQ_CHUNK];
};

/* seq_cst add with gq_lock held: the publication that wakep's loads (W1)
 * and a parking worker's re-check (P5) are ordered against. */
static void count_in(size_t n)
{
    atomic_fetch_add_explicit(&weft__rt.gq_len, n, memory_order_seq_cst);
}

/* Append the n fibers first..last (linked, last->link NULL) to the list
 * of single fibers. With gq_lock held. */
static void singles_append(struct weft_fiber *first, struct weft_fiber *last, size_t n)
{
    if (weft__rt.gq_singles_tail)
        weft__rt.gq_singles_tail->link = first;
    else
        weft__rt.gq_singles = first;
    weft__rt.gq_singles_tail = last;
    count_in(n);
}

void weft__global_push(struct weft_fiber *f)
{
    weft__global_push_list(f, f, 1);
}

void weft__global_push_list(struct weft_fiber *first, struct weft_fiber *last, size_t n)
{
    last->link = NULL;
    pthread_mutex_lock(&weft__rt.gq_lock);
    singles_append(first, last, n);
    pthread_mutex_unlock(&weft__rt.gq_lock);
}

void weft__global_spill(struct deque *d, struct weft_fiber *f)
{
    struct gq_chunk *c = weft__malloc(sizeof *c);
    if (!c) {
        weft__global_push(f);
        return;
    }
    c->next = NULL;
    c->head = 0;
    c->n = deque_take_oldest(d, (void **)c->v, GQ_CHUNK - 1);
    c->v[c->n++] = f;
    pthread_mutex_lock(&weft__rt.gq_lock);
    if (weft__rt.gq_chunks_tail)
        weft__rt.gq_chunks_tail->next = c;
    else
        weft__rt.gq_chunks = c;
    weft__rt.gq_chunks_tail = c;
    count_in(c->n);
    pthread_mutex_unlock(&weft__rt.gq_lock);
}

struct weft_fiber *weft__global_take(struct deque *d, unsigned max)
{
    /* Relaxed: an emptiness hint that saves the lock; re-read under it. */
    if (!atomic_load_explicit(&weft__rt.gq_len, memory_order_relaxed) || max == 0)
        return NULL;
    struct weft_fiber *first = NULL;
    struct gq_chunk *emptied = NULL;
    unsigned got = 0;
    pthread_mutex_lock(&weft__rt.gq_lock);
    size_t len = atomic_load_explicit(&weft__rt.gq_len, memory_order_relaxed);
    size_t share = len / weft__rt.nworkers + 1; /* a fair share, as in Go */
    if (share < max)
        max = (unsigned)share;
    while (got < max && weft__rt.gq_singles) {
        struct weft_fiber *f = weft__rt.gq_singles;
        weft__rt.gq_singles = f->link;
        if (got++ == 0)
            first = f;
        else
            deque_push(d, f); /* room: the caller's promise */
    }
    if (!weft__rt.gq_singles)
        weft__rt.gq_singles_tail = NULL;
    struct gq_chunk *c = weft__rt.gq_chunks;
    if (got < max && c) {
        unsigned k = c->n - c->head;
        if (k > max - got)
            k = max - got;
        if (!first) {
            first = c->v[c->head++];
            k--;
            got++;
        }
        deque_push_many(d, (void *const *)&c->v[c->head], k);
        c->head += k;
        got += k;
        if (c->head == c->n) {
            weft__rt.gq_chunks = c->next;
            if (!c->next)
                weft__rt.gq_chunks_tail = NULL;
            emptied = c;
        }
    }
    /* Relaxed: taking work publishes nothing; with gq_lock held. */
    atomic_store_explicit(&weft__rt.gq_len, len - got, memory_order_relaxed);
    pthread_mutex_unlock(&weft__rt.gq_lock);
    weft__free(emptied, sizeof *emptied);
    return first;
}

int weft__submit_foreign(struct weft_fiber *f)
{
    f->link = NULL;
    weft__foreign_enter();
    pthread_mutex_lock(&weft__rt.gq_lock);
    /* Under gq_lock, like the final termination check: either that check
     * counts this fiber, or we see the shutdown it decided on. */
    if (atomic_load_explicit(&weft__rt.shutdown, memory_order_relaxed)) {
        pthread_mutex_unlock(&weft__rt.gq_lock);
        weft__foreign_leave();
        return -EPERM;
    }
    /* Relaxed: read under gq_lock by the termination check, or after an
     * acquire that follows this fiber's exit (runtime.c). */
    atomic_fetch_add_explicit(&weft__rt.foreign_spawned, 1, memory_order_relaxed);
    singles_append(f, f, 1);
    pthread_mutex_unlock(&weft__rt.gq_lock);
    weft__wakep();
    weft__foreign_leave();
    return 0;
}

void weft__global_discard(void)
{
    while (weft__rt.gq_singles) {
        struct weft_fiber *f = weft__rt.gq_singles;
        weft__rt.gq_singles = f->link;
        weft__fiber_free(f);
    }
    weft__rt.gq_singles_tail = NULL;
    while (weft__rt.gq_chunks) {
        struct gq_chunk *c = weft__rt.gq_chunks;
        weft__rt.gq_chunks = c->next;
        for (unsigned i = c->head; i < c->n; i++)
            weft__fiber_free(c->v[i]);
        weft__free(c, sizeof *c);
    }
    weft__rt.gq_chunks_tail = NULL;
    atomic_store(&weft__rt.gq_len, 0);
}
