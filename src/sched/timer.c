/*
 * The timer heap: an array-backed binary min-heap ordered by (when, seq),
 * with each timer remembering its slot so that disarming a timer (an I/O
 * wait that completed before its deadline) is O(log n) rather than a
 * search. Owner worker only throughout; see timer.h.
 */
#include "sched/timer.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"

#define MIN_CAP 64

static int earlier(const struct weft__timer *a, const struct weft__timer *b)
{
    return a->when < b->when || (a->when == b->when && (int32_t)(a->seq - b->seq) < 0);
}

static void place(struct timer_heap *h, uint32_t i, struct weft__timer *t)
{
    h->v[i] = t;
    t->slot = i;
}

static void sift_up(struct timer_heap *h, uint32_t i)
{
    struct weft__timer *t = h->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!earlier(t, h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(struct timer_heap *h, uint32_t i)
{
    struct weft__timer *t = h->v[i];
    for (;;) {
        uint64_t c64 = 2 * (uint64_t)i + 1;
        if (c64 >= h->n)
            break;
        uint32_t c = (uint32_t)c64;
        if (c + 1 < h->n && earlier(h->v[c + 1], h->v[c]))
            c++;
        if (!earlier(h->v[c], t))
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, t);
}

void timer_heap_init(struct timer_heap *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
    h->seq = 0;
}

void timer_heap_destroy(struct timer_heap *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        h->v[i]->slot = TIMER_UNARMED;
    weft__free(h->v, h->cap * sizeof *h->v);
    timer_heap_init(h);
}

static int grow(struct timer_heap *h)
{
    if (h->cap >= UINT32_MAX / 2)
        return -ENOMEM;
    uint32_t cap = h->cap ? h->cap * 2 : MIN_CAP;
    struct weft__timer **v = weft__malloc(cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    if (h->n)
        memcpy(v, h->v, h->n * sizeof *v);
    weft__free(h->v, h->cap * sizeof *h->v);
    h->v = v;
    h->cap = cap;
    return 0;
}

static void insert(struct timer_heap *h, struct weft__timer *t, int64_t when)
{
    t->when = when;
    t->seq = h->seq++;
    place(h, h->n++, t);
    sift_up(h, h->n - 1);
}

int timer_add(struct timer_heap *h, struct weft__timer *t, int64_t when)
{
    /* Leave the last slot free: the reserved timer's. */
    if (h->n + 1 >= h->cap && grow(h) != 0)
        return -ENOMEM;
    insert(h, t, when);
    return 0;
}

int timer_heap_reserve(struct timer_heap *h)
{
    return h->cap > 0 ? 0 : grow(h);
}

void timer_add_reserved(struct timer_heap *h, struct weft__timer *t, int64_t when)
{
    /* Ordinary timers leave n <= cap - 1 (and cap >= 1, reserved), so
     * with at most one reserved timer armed there is always a slot. */
    if (h->n == h->cap)
        __builtin_trap();
    insert(h, t, when);
}

void timer_remove(struct timer_heap *h, struct weft__timer *t)
{
    uint32_t i = t->slot;
    t->slot = TIMER_UNARMED;
    struct weft__timer *last = h->v[--h->n];
    if (i == h->n)
        return;
    place(h, i, last);
    if (i > 0 && earlier(last, h->v[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct weft__timer *timer_pop_due(struct timer_heap *h, int64_t now)
{
    if (h->n == 0 || h->v[0]->when > now)
        return NULL;
    struct weft__timer *t = h->v[0];
    timer_remove(h, t);
    return t;
}
