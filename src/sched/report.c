/*
 * The report: what weft_dump writes and weft-dump(1) shows. Workers, then
 * every fiber grouped by state and wait reason, parked stacks symbolized
 * and folded (one backtrace for every set of fibers parked at the same
 * pcs), as text or as JSON.
 *
 * Reading a live runtime. The report runs beside the workers and stops
 * nothing. Under weft__rt.report_lock (which keeps the workers' array and
 * the registry's slabs alive) it walks the registry (weft__registry_walk)
 * and, per fiber:
 *   1. loads the registry words (state, wait, worker, since, wait_obj)
 *      with relaxed atomic loads: they describe, nothing is decided on
 *      them, so no ordering is wanted;
 *   2. copies the rest of the control block, the name, the stack
 *      descriptor and the live part of a suspended fiber's stack through
 *      the kernel, as weft__peek does (process_vm_readv on ourselves).
 *      Those fields belong to whichever thread runs the fiber; the
 *      kernel's copy is no data race for the sanitizers, and memory freed
 *      or unmapped meanwhile reads as EFAULT instead of crashing. Control
 *      blocks come WINDOW bytes at a time (the walk visits a slab in
 *      address order); a block from a window copied before step 1 counts
 *      only if the copy shows the state and since just loaded;
 *   3. loads state and since again: if either changed, the fiber moved
 *      while we looked, and the snapshot is taken again (up to
 *      SNAP_TRIES times; then it is printed marked "(moving)").
 * The stack copy is walked (ctx/unwind.c) while the lock is held; names
 * are looked up and the text made after it is released, and the text is
 * written to fd last, so a slow reader never holds report_lock.
 *
 * What it cannot see: a fiber that parked and was woken and parked again
 * within one millisecond (the coarse `since`) looks unchanged, and the
 * copy may mix the two; and in the few instructions between weft__park's
 * state store and the switch that saves its registers, a parked fiber's
 * saved sp is the previous one. Both give a wrong backtrace for that one
 * fiber, never a crash, and a report taken a moment later is right.
 *
 * Cost: per fiber a share of a window, one stack copy and one mincore();
 * the stack walks are memoized (unwind.c), names cached per pc. 100,000
 * fibers parked in one place: about 350 ms (bench/dump_bench.c).
 */
#define _GNU_SOURCE
#include "sched/sched.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ctx/unwind.h"
#include "io/dumpsrv.h"

#define SNAP_TRIES   3
#define MAX_FRAMES   48
#define STACK_COPY   (64u * 1024)  /* bytes of a stack copied for its walk */
#define DESC_BYTES   64u           /* the stack descriptor above `top`     */
#define NO_WORKER    UINT16_MAX
#define WINDOW       (32u * 1024)  /* control blocks copied at once        */

/* ---- the snapshot ----------------------------------------------------- */

enum { F_STARTED = 1, F_SUSPENDED = 2, F_MOVING = 4 };

struct frec {
    uint64_t  id;
    uintptr_t fn, spawn_pc, wait_obj;
    uint32_t  age_ms;
    uint32_t  stack_size, stack_used, stack_hwm;  /* bytes; 0: unknown */
    int32_t   stack;        /* index in snap.stk; -1: no backtrace      */
    uint16_t  worker;
    uint8_t   state, wait, flags;
    char      name[WEFT__FIBER_NAME];
};

struct wrec {
    int       wstate;
    int       has_running, has_runnext;
    uint64_t  running_id, runnext_id;
    uint32_t  running_ms;
    char      running_name[WEFT__FIBER_NAME];
    int64_t   deque;
    unsigned  inbox;
    uint32_t  timers;
    uint64_t  nswitch, nsteal, nsteal_try, npark, nwake;
};

/* A distinct backtrace: npcs pcs at snap.pcs[first]. */
struct stk {
    uint64_t hash;
    size_t   first;
    uint32_t npcs;
};

struct snap {
    struct weft__unwind *u;
    uint32_t now_ms;
    int64_t  now_ns;
    struct frec *f;
    size_t nf, fcap;
    struct wrec *w;
    unsigned nw;
    struct stk *stk;
    size_t nstk, stkcap;
    uintptr_t *pcs;
    size_t npcs, pcscap;
    uint32_t *stkidx;       /* open addressing over stk: index + 1 */
    size_t stkidx_cap;
    unsigned char *copy;    /* STACK_COPY + DESC_BYTES */
    unsigned char *mvec;    /* mincore's vector */
    size_t mvec_cap;
    /* A window of control blocks copied in one go: the walk visits a
     * slab's blocks in address order. */
    unsigned char *win;
    uintptr_t win_lo;
    size_t win_len;
    size_t page;
    pid_t pid;
    int oom;
};

/* Relaxed loads of the registry words: see the top of the file. */
#define REG_LOAD(p) atomic_load_explicit((p), memory_order_relaxed)

static uint32_t age_of(uint32_t now_ms, uint32_t since)
{
    uint32_t d = now_ms - since; /* modulo 2^32 */
    return d > UINT32_MAX / 2 ? 0 : d; /* a `since` just ahead of our clock */
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Copy up to n bytes at src (our own memory, possibly freed meanwhile)
 * through the kernel, as weft__peek does; returns how many were copied
 * before the first unreadable page, or -1. */
static ssize_t peek_some(const struct snap *s, void *dst, const void *src, size_t n)
{
    struct iovec l = { dst, n }, r = { (void *)(uintptr_t)src, n };
    return process_vm_readv(s->pid, &l, 1, &r, 1, 0);
}

/* weft__peek with the pid looked up once per report: 0 or -EFAULT. */
static int peek(const struct snap *s, void *dst, const void *src, size_t n)
{
    return peek_some(s, dst, src, n) == (ssize_t)n ? 0 : -EFAULT;
}

/* A copy of f's control block: from the window when it covers f and
 * `fresh` is not asked for, else from a new window starting at f. */
static int copy_block(struct snap *s, struct weft_fiber *f, struct weft_fiber *out, int fresh)
{
    uintptr_t a = (uintptr_t)f;
    if (fresh)
        return peek(s, out, f, sizeof *out);
    if (!(a >= s->win_lo && a + sizeof *out <= s->win_lo + s->win_len)) {
        ssize_t n = peek_some(s, s->win, f, WINDOW);
        if (n < (ssize_t)sizeof *out) {
            s->win_len = 0;
            return peek(s, out, f, sizeof *out);
        }
        s->win_lo = a;
        s->win_len = (size_t)n;
    }
    memcpy(out, s->win + (a - s->win_lo), sizeof *out);
    return 0;
}

static uint64_t hash_pcs(const uintptr_t *pcs, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)pcs[i];
        h *= 0x100000001b3ull;
        h ^= h >> 31;
    }
    return h ? h : 1;
}

/* The index of the backtrace pcs[0..n) in s->stk, adding it if new; -1
 * if out of memory. */
static int32_t intern_stack(struct snap *s, const uintptr_t *pcs, int n)
{
    uint64_t h = hash_pcs(pcs, n);
    if (2 * (s->nstk + 1) > s->stkidx_cap) {
        size_t cap = s->stkidx_cap ? s->stkidx_cap * 2 : 256;
        uint32_t *t = calloc(cap, sizeof *t);
        if (!t)
            return -1;
        for (size_t i = 0; i < s->nstk; i++) {
            size_t j = s->stk[i].hash & (cap - 1);
            while (t[j])
                j = (j + 1) & (cap - 1);
            t[j] = (uint32_t)i + 1;
        }
        free(s->stkidx);
        s->stkidx = t;
        s->stkidx_cap = cap;
    }
    size_t j = h & (s->stkidx_cap - 1);
    for (; s->stkidx[j]; j = (j + 1) & (s->stkidx_cap - 1)) {
        struct stk *k = &s->stk[s->stkidx[j] - 1];
        if (k->hash == h && k->npcs == (uint32_t)n &&
            memcmp(&s->pcs[k->first], pcs, (size_t)n * sizeof *pcs) == 0)
            return (int32_t)(s->stkidx[j] - 1);
    }
    if (grow((void **)&s->stk, &s->stkcap, s->nstk + 1, sizeof *s->stk) ||
        grow((void **)&s->pcs, &s->pcscap, s->npcs + (size_t)n, sizeof *s->pcs))
        return -1;
    memcpy(&s->pcs[s->npcs], pcs, (size_t)n * sizeof *pcs);
    s->stk[s->nstk] = (struct stk){ h, s->npcs, (uint32_t)n };
    s->npcs += (size_t)n;
    s->stkidx[j] = (uint32_t)s->nstk + 1;
    return (int32_t)s->nstk++;
}

/* Bytes of the stack d whose pages are resident, counted from the top
 * down to the first page that is not: how deep the stack has been used
 * since it was mapped or last trimmed (stack.c). mincore() reads page
 * tables only, never the memory. */
static uint32_t stack_hwm(struct snap *s, const weft__stack *d)
{
    uintptr_t lo = (uintptr_t)d->lo & ~(uintptr_t)(s->page - 1);
    uintptr_t hi = ((uintptr_t)d->top + DESC_BYTES + s->page - 1) & ~(uintptr_t)(s->page - 1);
    if (hi <= lo || hi - lo > WEFT__MAX_STACK + s->page)
        return 0;
    size_t np = (hi - lo) / s->page;
    if (grow((void **)&s->mvec, &s->mvec_cap, np, 1) != 0)
        return 0;
    if (mincore((void *)lo, hi - lo, s->mvec) != 0)
        return 0;
    size_t i = np;
    while (i > 0 && (s->mvec[i - 1] & 1))
        i--;
    uintptr_t deepest = i == np ? (uintptr_t)d->top : lo + i * s->page;
    if (deepest < (uintptr_t)d->lo)
        deepest = (uintptr_t)d->lo;
    return (uint32_t)((uintptr_t)d->top - deepest);
}

/* The stack of the fiber copied in c: size, use, high-water mark and, if
 * it is suspended, its backtrace into pcs. */
static void snap_stack(struct snap *s, const struct weft_fiber *c, struct frec *r,
                       uintptr_t *pcs, int *npcs)
{
    uintptr_t top = (uintptr_t)c->ctx.stack; /* the descriptor sits at top */
    uintptr_t sp = (uintptr_t)c->ctx.sp;
    int suspended = r->state == FS_PARKED || r->state == FS_RUNNABLE;
    weft__stack d;
    size_t got = 0; /* bytes of the stack copied from sp */
    r->flags |= F_STARTED;
    if (suspended && sp % 8 == 0 && sp < top && top - sp <= WEFT__MAX_STACK) {
        size_t live = top - sp;
        if (live <= STACK_COPY) {
            if (peek(s, s->copy, (void *)sp, live + DESC_BYTES) != 0)
                return;
            memcpy(&d, s->copy + live, sizeof d);
            got = live;
        } else {
            if (peek(s, &d, (void *)top, sizeof d) != 0 ||
                peek(s, s->copy, (void *)sp, STACK_COPY) != 0)
                return;
            got = STACK_COPY;
        }
    } else if (peek(s, &d, (void *)top, sizeof d) != 0) {
        return;
    }
    if ((uintptr_t)d.top != top || (uintptr_t)d.lo >= top || d.size > WEFT__MAX_STACK + DESC_BYTES)
        return; /* not (or no longer) a stack descriptor */
    r->stack_size = (uint32_t)d.size;
    r->stack_hwm = stack_hwm(s, &d);
    if (!got || sp < (uintptr_t)d.lo)
        return;
    r->flags |= F_SUSPENDED;
    r->stack_used = (uint32_t)(top - sp);
    struct weft__unwind_stack us = { sp, (uintptr_t)d.lo, top, s->copy, got };
    *npcs = weft__unwind_ctx(s->u, &us, pcs, MAX_FRAMES);
}

/* One look at f (the first from the window of blocks, later ones fresh).
 * 0: consistent; 1: it moved meanwhile; -1: not a fiber (any more). */
static int snap_fiber(struct snap *s, struct weft_fiber *f, struct frec *r,
                      uintptr_t *pcs, int *npcs, int fresh)
{
    unsigned st = REG_LOAD(&f->rstate);
    uint32_t since = REG_LOAD(&f->since);
    if (st == FS_FREE)
        return -1;
    memset(r, 0, sizeof *r);
    r->state = (uint8_t)st;
    r->wait = REG_LOAD(&f->wait);
    r->wait_obj = REG_LOAD(&f->wait_obj);
    r->worker = REG_LOAD(&f->worker);
    r->age_ms = age_of(s->now_ms, since);
    r->stack = -1;
    *npcs = 0;
    struct weft_fiber c;
    if (copy_block(s, f, &c, fresh) != 0)
        return -1;
    /* A window copied before this fiber's registry words were loaded is
     * current only if it shows the same state since the same time. The
     * copy is ours: relaxed loads of our own memory. */
    if (atomic_load_explicit(&c.rstate, memory_order_relaxed) != st ||
        atomic_load_explicit(&c.since, memory_order_relaxed) != since)
        return fresh ? 1 : snap_fiber(s, f, r, pcs, npcs, 1);
    r->id = c.id;
    r->fn = (uintptr_t)c.fn;
    r->spawn_pc = (uintptr_t)c.spawn_pc;
    if (c.name && peek(s, r->name, c.name, sizeof r->name) == 0)
        r->name[sizeof r->name - 1] = 0;
    else
        r->name[0] = 0;
    if (c.ctx.stack && st != FS_DONE)
        snap_stack(s, &c, r, pcs, npcs);
    if (REG_LOAD(&f->rstate) != st || REG_LOAD(&f->since) != since)
        return 1;
    return 0;
}

static void visit(struct weft_fiber *f, void *arg)
{
    struct snap *s = arg;
    if (s->oom)
        return;
    struct frec r;
    uintptr_t pcs[MAX_FRAMES];
    int npcs = 0, rc = 1;
    for (int t = 0; t < SNAP_TRIES && rc == 1; t++)
        rc = snap_fiber(s, f, &r, pcs, &npcs, t > 0);
    if (rc < 0)
        return;
    if (rc == 1)
        r.flags |= F_MOVING;
    if (npcs > 0 && (r.stack = intern_stack(s, pcs, npcs)) < 0) {
        s->oom = 1;
        return;
    }
    if (grow((void **)&s->f, &s->fcap, s->nf + 1, sizeof *s->f) != 0) {
        s->oom = 1;
        return;
    }
    s->f[s->nf++] = r;
}

/* The id and name of the fiber at f, which runs elsewhere. */
static int peek_id_name(const struct snap *s, struct weft_fiber *f, uint64_t *id, char *name)
{
    char *np = NULL;
    name[0] = 0;
    if (peek(s, id, &f->id, sizeof *id) != 0)
        return -1;
    if (peek(s, &np, &f->name, sizeof np) == 0 && np &&
        peek(s, name, np, WEFT__FIBER_NAME) == 0)
        name[WEFT__FIBER_NAME - 1] = 0;
    else
        name[0] = 0;
    return 0;
}

static void snap_workers(struct snap *s)
{
    for (unsigned i = 0; i < s->nw; i++) {
        struct worker *w = &weft__rt.workers[i];
        struct wrec *r = &s->w[i];
        /* Relaxed: the owner's statistics and report words (sched.h). */
        r->wstate = atomic_load_explicit(&w->wstate, memory_order_relaxed);
        struct weft_fiber *run = atomic_load_explicit(&w->running, memory_order_relaxed);
        if (run && peek_id_name(s, run, &r->running_id, r->running_name) == 0) {
            r->has_running = 1;
            r->running_ms = age_of(s->now_ms, REG_LOAD(&run->since));
        }
        struct weft_fiber *next = atomic_load_explicit(&w->runnext, memory_order_relaxed);
        char ignored[WEFT__FIBER_NAME];
        if (next && peek_id_name(s, next, &r->runnext_id, ignored) == 0)
            r->has_runnext = 1;
        r->deque = deque_size(&w->dq);
        r->inbox = atomic_load_explicit(&w->inbox_len, memory_order_relaxed);
        if (peek(s, &r->timers, &w->timers.n, sizeof r->timers) != 0)
            r->timers = 0;
        r->nswitch = atomic_load_explicit(&w->nswitch, memory_order_relaxed);
        r->nsteal = atomic_load_explicit(&w->nsteal, memory_order_relaxed);
        r->nsteal_try = atomic_load_explicit(&w->nsteal_try, memory_order_relaxed);
        r->npark = atomic_load_explicit(&w->npark, memory_order_relaxed);
        r->nwake = atomic_load_explicit(&w->nwake, memory_order_relaxed);
    }
}

static void snap_free(struct snap *s)
{
    weft__unwind_end(s->u);
    free(s->f);
    free(s->w);
    free(s->stk);
    free(s->pcs);
    free(s->stkidx);
    free(s->copy);
    free(s->mvec);
    free(s->win);
}

/* Take the snapshot. 0, -EPERM (no runtime), -ENOMEM. */
static int snap_take(struct snap *s)
{
    memset(s, 0, sizeof *s);
    s->page = (size_t)sysconf(_SC_PAGESIZE);
    s->pid = getpid();
    s->copy = malloc(STACK_COPY + DESC_BYTES);
    s->win = malloc(WINDOW);
    if (!s->copy || !s->win)
        return -ENOMEM;
    pthread_mutex_lock(&weft__rt.report_lock);
    /* Acquire: pairs with weft_run's store of RT_RUNNING, after which the
     * workers' array is complete; report_lock keeps it and the registry
     * from being freed until we unlock. */
    if (atomic_load_explicit(&weft__rt.state, memory_order_acquire) != RT_RUNNING) {
        pthread_mutex_unlock(&weft__rt.report_lock);
        return -EPERM;
    }
    int err = -ENOMEM;
    s->u = weft__unwind_begin();
    s->nw = weft__rt.nworkers;
    s->w = calloc(s->nw ? s->nw : 1, sizeof *s->w);
    if (s->u && s->w) {
        s->now_ns = weft__now();
        s->now_ms = weft__now_ms();
        snap_workers(s);
        weft__registry_walk(visit, s);
        err = s->oom ? -ENOMEM : 0;
    }
    pthread_mutex_unlock(&weft__rt.report_lock);
    return err;
}

/* ---- grouping ------------------------------------------------------------ */

/* Groups in report order: running, runnable, parked by wait reason, done. */
static unsigned group_of(const struct frec *r)
{
    switch (r->state) {
    case FS_RUNNING:  return 0;
    case FS_RUNNABLE: return 1;
    case FS_PARKED:   return 2 + (r->wait < WAIT__COUNT ? r->wait : WAIT_NONE);
    default:          return 2 + WAIT__COUNT;
    }
}

static int frec_cmp(const void *a, const void *b)
{
    const struct frec *x = a, *y = b;
    unsigned gx = group_of(x), gy = group_of(y);
    if (gx != gy)
        return gx < gy ? -1 : 1;
    if (x->stack != y->stack)
        return x->stack < y->stack ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}


static const char *state_name(unsigned st)
{
    switch (st) {
    case FS_RUNNING:  return "running";
    case FS_RUNNABLE: return "runnable";
    case FS_PARKED:   return "parked";
    case FS_DONE:     return "done";
    default:          return "free";
    }
}

static const char *wait_name(unsigned w)
{
    return weft__wait_name(w);
}

static const char *worker_state(const struct wrec *w)
{
    if (w->has_running)
        return "running";
    switch (w->wstate) {
    case WS_SEARCHING: return "searching";
    case WS_PARKED:    return "idle";
    case WS_STOPPED:   return "stopped";
    default:           return "scheduling";
    }
}

/* ---- output buffer ---------------------------------------------------- */

struct out {
    char  *p;
    size_t len, cap;
    int    oom;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (grow((void **)&o->p, &o->cap, o->len + n + 1, 1) != 0) {
        o->oom = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void putf(struct out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof buf) {
        put(o, buf, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        o->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    put(o, big, (size_t)n);
    free(big);
}

/* A name as text: control characters (and bytes a terminal could take
 * for one) become '?'. */
static void put_name_text(struct out *o, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char x = c < 0x20 || c == 0x7f ? '?' : (char)c;
        put(o, &x, 1);
    }
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (!len || len > n || c > 0xf4)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (len == 3 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0)))
        return 0; /* overlong, surrogate */
    if (len == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90)))
        return 0;
    return len;
}

/* s as a JSON string: quoted, escaped, invalid UTF-8 replaced (a name
 * cut at 31 bytes may end inside a character). NULL gives null. */
static void put_json_str(struct out *o, const char *s)
{
    if (!s) {
        puts_(o, "null");
        return;
    }
    put(o, "\"", 1);
    size_t n = strlen(s);
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            put(o, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            putf(o, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            put(o, (const char *)p + i, 1);
            i++;
        } else {
            size_t len = utf8_len(p + i, n - i);
            if (len) {
                put(o, (const char *)p + i, len);
                i += len;
            } else {
                puts_(o, "\\ufffd");
                i++;
            }
        }
    }
    put(o, "\"", 1);
}

/* ---- text ------------------------------------------------------------- */

static void put_ms(struct out *o, uint64_t ms)
{
    if (ms < 10000)
        putf(o, "%" PRIu64 " ms", ms);
    else
        putf(o, "%.1f s", (double)ms / 1000.0);
}

static void put_bytes(struct out *o, uint64_t b)
{
    if (b < 1024)
        putf(o, "%" PRIu64 " B", b);
    else if (b % (1024 * 1024) == 0)
        putf(o, "%" PRIu64 " MiB", b >> 20);
    else if (b % 1024 == 0)
        putf(o, "%" PRIu64 " KiB", b >> 10);
    else if (b < 1024 * 1024)
        putf(o, "%.1f KiB", (double)b / 1024.0);
    else
        putf(o, "%.1f MiB", (double)b / (1024.0 * 1024.0));
}

/* "name+0x1c (file:line)", or the module and offset when no symbol
 * covers pc. */
static void put_sym_text(struct out *o, struct weft__unwind *u, uintptr_t pc, int is_ret)
{
    if (!pc) {
        puts_(o, "-");
        return;
    }
    struct weft__sym y;
    weft__unwind_sym(u, pc, is_ret, &y);
    if (y.func) {
        puts_(o, y.func);
        if (y.off)
            putf(o, "+0x%" PRIxPTR, y.off);
    } else {
        putf(o, "0x%" PRIxPTR, pc);
        if (y.module) {
            const char *base = strrchr(y.module, '/');
            putf(o, " in %s", base ? base + 1 : y.module);
        }
    }
    if (y.file)
        putf(o, " (%s:%d)", y.file, y.line);
}

static void put_wait_text(struct out *o, const struct snap *s, const struct frec *r)
{
    uintptr_t x = r->wait_obj;
    switch (r->wait) {
    case WAIT_JOIN:
        putf(o, "join fiber %" PRIu64, (uint64_t)x);
        break;
    case WAIT_SLEEP: {
        double ms = (double)((int64_t)x - s->now_ns) / 1e6;
        if (ms < 10000 && ms > -10000)
            putf(o, "sleep until %+.1f ms", ms);
        else
            putf(o, "sleep until %+.1f s", ms / 1000.0);
        break;
    }
    case WAIT_FD_READ:
    case WAIT_FD_WRITE:
    case WAIT_FD_RW:
        putf(o, "fd %d %s", (int)x,
             r->wait == WAIT_FD_READ ? "read" : r->wait == WAIT_FD_WRITE ? "write" : "read+write");
        break;
    case WAIT_BLOCKING:
        puts_(o, "blocking call ");
        put_sym_text(o, s->u, x, 0);
        break;
    case WAIT_MIGRATE:
        putf(o, "migrate to worker %u", (unsigned)x);
        break;
    case WAIT_NONE:
        puts_(o, "unknown");
        break;
    default:
        putf(o, "%s 0x%" PRIxPTR, wait_name(r->wait), x);
        break;
    }
}

static void put_fiber_text(struct out *o, const struct snap *s, const struct frec *r)
{
    putf(o, "  fiber %" PRIu64, r->id);
    if (r->name[0]) {
        puts_(o, " '");
        put_name_text(o, r->name);
        puts_(o, "'");
    }
    if (r->state == FS_PARKED) {
        puts_(o, ": ");
        put_wait_text(o, s, r);
    }
    if (r->flags & F_MOVING)
        puts_(o, " (moving)");
    if (r->worker != NO_WORKER)
        putf(o, "  worker %u", (unsigned)r->worker);
    puts_(o, "  for ");
    put_ms(o, r->age_ms);
    if (r->stack_size) {
        puts_(o, "  stack ");
        if (r->flags & F_SUSPENDED) {
            put_bytes(o, r->stack_used);
            puts_(o, " of ");
        }
        put_bytes(o, r->stack_size);
        puts_(o, " (high-water ");
        put_bytes(o, r->stack_hwm);
        puts_(o, ")");
    } else if (!(r->flags & F_STARTED) && r->state == FS_RUNNABLE) {
        puts_(o, "  not started");
    }
    puts_(o, "\n    fn ");
    put_sym_text(o, s->u, r->fn, 0);
    puts_(o, ", spawned at ");
    put_sym_text(o, s->u, r->spawn_pc, 1);
    puts_(o, "\n");
}

/* Ids as ranges: "3-7, 9, 12-14". */
static void put_id_ranges(struct out *o, const struct frec *f, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && f[j + 1].id == f[j].id + 1)
            j++;
        if (i)
            puts_(o, ", ");
        if (j > i)
            putf(o, "%" PRIu64 "-%" PRIu64, f[i].id, f[j].id);
        else
            putf(o, "%" PRIu64, f[i].id);
        i = j + 1;
    }
}

static void put_stack_text(struct out *o, const struct snap *s, int32_t k)
{
    const struct stk *t = &s->stk[k];
    for (uint32_t i = 0; i < t->npcs; i++) {
        uintptr_t pc = s->pcs[t->first + i];
        putf(o, "      #%-2u 0x%016" PRIxPTR " ", i, pc);
        put_sym_text(o, s->u, pc, 1);
        puts_(o, "\n");
    }
}

static void text_report(struct out *o, const struct snap *s, const weft_stats *st)
{
    int64_t started = weft__dumpsrv_started_ns();
    putf(o, "weft-dump: pid %d, weft %s, %u workers", (int)getpid(), weft_version(), s->nw);
    if (started > 0 && s->now_ns >= started)
        putf(o, ", up %.3f s", (double)(s->now_ns - started) / 1e9);
    puts_(o, "\n");
    putf(o, "stats: fibers_live %" PRIu64 "  fibers_spawned %" PRIu64 "  switches %" PRIu64
            "  steals %" PRIu64 "/%" PRIu64 "  parks %" PRIu64 "  wakeups %" PRIu64
            "  polls %" PRIu64 "  blocking_calls %" PRIu64 "\n",
         st->fibers_live, st->fibers_spawned, st->switches, st->steals, st->steal_attempts,
         st->parks, st->wakeups, st->polls, st->blocking_calls);
    if (!weft__unwind_full())
        puts_(o, "(built without libdw: backtraces show the resume frame only)\n");

    puts_(o, "\nworkers\n");
    for (unsigned i = 0; i < s->nw; i++) {
        const struct wrec *w = &s->w[i];
        putf(o, "  worker %u: %s", i, worker_state(w));
        if (w->has_running) {
            putf(o, " fiber %" PRIu64, w->running_id);
            if (w->running_name[0]) {
                puts_(o, " '");
                put_name_text(o, w->running_name);
                puts_(o, "'");
            }
            puts_(o, " for ");
            put_ms(o, w->running_ms);
        }
        putf(o, "\n    deque %" PRId64 "  runnext ", w->deque);
        if (w->has_runnext)
            putf(o, "fiber %" PRIu64, w->runnext_id);
        else
            puts_(o, "-");
        putf(o, "  inbox %u  timers %" PRIu32 "  switches %" PRIu64 "  steals %" PRIu64
                "/%" PRIu64 "  parks %" PRIu64 "  wakeups %" PRIu64 "\n",
             w->inbox, w->timers, w->nswitch, w->nsteal, w->nsteal_try, w->npark, w->nwake);
    }

    size_t count[4] = { 0 };
    for (size_t i = 0; i < s->nf; i++)
        count[s->f[i].state == FS_RUNNING ? 0 : s->f[i].state == FS_RUNNABLE ? 1
              : s->f[i].state == FS_PARKED ? 2 : 3]++;
    putf(o, "\nfibers: %zu (running %zu, runnable %zu, parked %zu, done %zu)\n",
         s->nf, count[0], count[1], count[2], count[3]);

    for (size_t i = 0; i < s->nf;) {
        unsigned g = group_of(&s->f[i]);
        size_t end = i;
        while (end < s->nf && group_of(&s->f[end]) == g)
            end++;
        const struct frec *r0 = &s->f[i];
        if (r0->state == FS_PARKED)
            putf(o, "\nparked: %s (%zu)\n", wait_name(r0->wait), end - i);
        else if (r0->state == FS_DONE)
            putf(o, "\ndone, not joined (%zu)\n", end - i);
        else
            putf(o, "\n%s (%zu)\n", state_name(r0->state), end - i);
        /* Runs of one backtrace within the group (sorted by stack). */
        for (size_t j = i; j < end;) {
            size_t k = j + 1;
            while (k < end && s->f[k].stack == s->f[j].stack)
                k++;
            for (size_t x = j; x < k; x++) {
                put_fiber_text(o, s, &s->f[x]);
                if (s->f[x].state == FS_RUNNING)
                    putf(o, "    running on worker %u\n", (unsigned)s->f[x].worker);
            }
            if (s->f[j].stack >= 0) {
                if (k - j > 1) {
                    putf(o, "    %zu fibers with this stack: ids ", k - j);
                    put_id_ranges(o, &s->f[j], k - j);
                    puts_(o, "\n");
                } else {
                    puts_(o, "    stack:\n");
                }
                put_stack_text(o, s, s->f[j].stack);
            }
            j = k;
        }
        i = end;
    }
}

/* ---- JSON --------------------------------------------------------------- */

static void put_sym_json(struct out *o, struct weft__unwind *u, uintptr_t pc, int is_ret)
{
    if (!pc) {
        puts_(o, "null");
        return;
    }
    struct weft__sym y;
    weft__unwind_sym(u, pc, is_ret, &y);
    putf(o, "{\"pc\":\"0x%" PRIxPTR "\",\"function\":", pc);
    put_json_str(o, y.func);
    putf(o, ",\"offset\":%" PRIuPTR ",\"file\":", y.func ? y.off : 0);
    put_json_str(o, y.file);
    if (y.file)
        putf(o, ",\"line\":%d", y.line);
    else
        puts_(o, ",\"line\":null");
    puts_(o, ",\"module\":");
    put_json_str(o, y.module);
    puts_(o, "}");
}

static void put_wait_json(struct out *o, const struct snap *s, const struct frec *r)
{
    putf(o, "{\"kind\":\"%s\",", wait_name(r->wait));
    uintptr_t x = r->wait_obj;
    switch (r->wait) {
    case WAIT_JOIN:
        putf(o, "\"fiber\":%" PRIu64 ",", (uint64_t)x);
        break;
    case WAIT_SLEEP:
        putf(o, "\"remaining_ms\":%.3f,", (double)((int64_t)x - s->now_ns) / 1e6);
        break;
    case WAIT_FD_READ:
    case WAIT_FD_WRITE:
    case WAIT_FD_RW:
        putf(o, "\"fd\":%d,", (int)x);
        break;
    case WAIT_BLOCKING:
        puts_(o, "\"function\":");
        put_sym_json(o, s->u, x, 0);
        puts_(o, ",");
        break;
    case WAIT_MIGRATE:
        putf(o, "\"worker\":%u,", (unsigned)x);
        break;
    case WAIT_NONE:
        break;
    default:
        putf(o, "\"object\":\"0x%" PRIxPTR "\",", x);
        break;
    }
    struct out d = { 0 };
    put_wait_text(&d, s, r);
    put(&d, "", 1);
    puts_(o, "\"detail\":");
    put_json_str(o, d.oom ? "" : d.p);
    free(d.p);
    puts_(o, "}");
}

static void json_report(struct out *o, const struct snap *s, const weft_stats *st)
{
    int64_t started = weft__dumpsrv_started_ns();
    putf(o, "{\"protocol\":%d,\"pid\":%d,\"weft_version\":", WEFT__DUMP_PROTOCOL, (int)getpid());
    put_json_str(o, weft_version());
    putf(o, ",\"full_backtraces\":%s,\"uptime_ms\":", weft__unwind_full() ? "true" : "false");
    if (started > 0 && s->now_ns >= started)
        putf(o, "%.3f", (double)(s->now_ns - started) / 1e6);
    else
        puts_(o, "null");
    putf(o, ",\"stats\":{\"fibers_live\":%" PRIu64 ",\"fibers_spawned\":%" PRIu64
            ",\"switches\":%" PRIu64 ",\"steals\":%" PRIu64 ",\"steal_attempts\":%" PRIu64
            ",\"parks\":%" PRIu64 ",\"wakeups\":%" PRIu64 ",\"polls\":%" PRIu64
            ",\"blocking_calls\":%" PRIu64 "}",
         st->fibers_live, st->fibers_spawned, st->switches, st->steals, st->steal_attempts,
         st->parks, st->wakeups, st->polls, st->blocking_calls);

    puts_(o, ",\n\"workers\":[");
    for (unsigned i = 0; i < s->nw; i++) {
        const struct wrec *w = &s->w[i];
        putf(o, "%s\n{\"index\":%u,\"state\":\"%s\",\"fiber\":", i ? "," : "", i, worker_state(w));
        if (w->has_running) {
            putf(o, "{\"id\":%" PRIu64 ",\"name\":", w->running_id);
            put_json_str(o, w->running_name);
            putf(o, ",\"for_ms\":%" PRIu32 "}", w->running_ms);
        } else {
            puts_(o, "null");
        }
        putf(o, ",\"deque\":%" PRId64 ",\"runnext\":", w->deque);
        if (w->has_runnext)
            putf(o, "%" PRIu64, w->runnext_id);
        else
            puts_(o, "null");
        putf(o, ",\"inbox\":%u,\"timers\":%" PRIu32 ",\"switches\":%" PRIu64
                ",\"steals\":%" PRIu64 ",\"steal_attempts\":%" PRIu64 ",\"parks\":%" PRIu64
                ",\"wakeups\":%" PRIu64 "}",
             w->inbox, w->timers, w->nswitch, w->nsteal, w->nsteal_try, w->npark, w->nwake);
    }

    puts_(o, "],\n\"fibers\":[");
    for (size_t i = 0; i < s->nf; i++) {
        const struct frec *r = &s->f[i];
        putf(o, "%s\n{\"id\":%" PRIu64 ",\"name\":", i ? "," : "", r->id);
        put_json_str(o, r->name[0] ? r->name : NULL);
        putf(o, ",\"state\":\"%s\",\"wait\":", state_name(r->state));
        if (r->state == FS_PARKED)
            put_wait_json(o, s, r);
        else
            puts_(o, "null");
        puts_(o, ",\"worker\":");
        if (r->worker != NO_WORKER)
            putf(o, "%u", (unsigned)r->worker);
        else
            puts_(o, "null");
        putf(o, ",\"for_ms\":%" PRIu32 ",\"moving\":%s,\"started\":%s,\"stack_size\":",
             r->age_ms, (r->flags & F_MOVING) ? "true" : "false",
             (r->flags & F_STARTED) ? "true" : "false");
        if (r->stack_size)
            putf(o, "%" PRIu32 ",\"stack_hwm\":%" PRIu32, r->stack_size, r->stack_hwm);
        else
            puts_(o, "null,\"stack_hwm\":null");
        puts_(o, ",\"stack_used\":");
        if (r->flags & F_SUSPENDED)
            putf(o, "%" PRIu32, r->stack_used);
        else
            puts_(o, "null");
        puts_(o, ",\"fn\":");
        put_sym_json(o, s->u, r->fn, 0);
        puts_(o, ",\"spawn_site\":");
        put_sym_json(o, s->u, r->spawn_pc, 1);
        puts_(o, ",\"stack\":");
        if (r->stack >= 0)
            putf(o, "%" PRId32, r->stack);
        else
            puts_(o, "null");
        puts_(o, "}");
    }

    /* Backtraces, each once; a fiber's "stack" is an index here. */
    puts_(o, "],\n\"stacks\":[");
    for (size_t k = 0; k < s->nstk; k++) {
        const struct stk *t = &s->stk[k];
        putf(o, "%s\n{\"index\":%zu,\"frames\":[", k ? "," : "", k);
        for (uint32_t i = 0; i < t->npcs; i++) {
            if (i)
                puts_(o, ",");
            put_sym_json(o, s->u, s->pcs[t->first + i], 1);
        }
        puts_(o, "]}");
    }
    puts_(o, "]}\n");
}

/* ---- entry points --------------------------------------------------- */

/* One send (sock) or write of p[0..n): the count, or -errno. Out of line,
 * so that errno is read on the thread that made the call: the loop
 * below may park a fiber in between, which then resumes on another
 * worker, and glibc's __errno_location is const, so a caller's compiler
 * could reuse the old thread's errno address. Any thread. */
static __attribute__((noinline)) ssize_t write_once(int fd, const char *p, size_t n, int sock)
{
    ssize_t w = sock ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
    return w < 0 ? -errno : w;
}

/* Write all n bytes of p to fd: 0, or -errno. With wait, a full
 * non-blocking fd is waited for (weft_wait_fd: a fiber parks, a plain
 * thread polls) rather than failing with -EAGAIN half-way. Any thread. */
static int write_out(int fd, const char *p, size_t n, int wait)
{
    int sock = 1;
    while (n > 0) {
        ssize_t w = write_once(fd, p, n, sock);
        if (w < 0) {
            if (w == -ENOTSOCK && sock) {
                sock = 0;
                continue;
            }
            if (w == -EINTR)
                continue;
            if (wait && (w == -EAGAIN || w == -EWOULDBLOCK)) {
                int rc = weft_wait_fd(fd, POLLOUT, -1);
                if (rc < 0)
                    return rc;
                continue;
            }
            return (int)w;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int weft__write_all(int fd, const char *p, size_t n)
{
    return write_out(fd, p, n, 0);
}

/* weft__report; wait as for write_out. */
static int report(int fd, int json, int wait)
{
    if (fd < 0)
        return -EBADF;
    weft_stats st;
    /* Before report_lock, which weft_stats_get takes itself. */
    weft_stats_get(&st);
    struct snap s;
    int err = snap_take(&s);
    if (err) {
        snap_free(&s);
        return err;
    }
    /* s.f is NULL when the walk found no fiber (the run is ending, or the
     * registry is compiled out), and qsort's array must not be NULL. */
    if (s.nf > 1)
        qsort(s.f, s.nf, sizeof *s.f, frec_cmp);
    struct out o = { 0 };
    if (json)
        json_report(&o, &s, &st);
    else
        text_report(&o, &s, &st);
    snap_free(&s);
    err = o.oom ? -ENOMEM : write_out(fd, o.p, o.len, wait);
    free(o.p);
    return err;
}

int weft__report(int fd, int json)
{
    /* No waiting: the dump server's sockets have a send timeout, which
     * must end a write to a client that stopped reading. */
    return report(fd, json, 0);
}

int weft_dump(int fd)
{
    return report(fd, 0, 1);
}
