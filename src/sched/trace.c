/*
 * The scheduler trace (weft-dump --trace, WEFT_TRACE=file).
 *
 * Each worker appends fixed-size events to its own buffer: no lock, no
 * shared cache line. A trace session allocates fresh buffers, publishes
 * each with a release store into w->trace, then turns weft__trace_on on.
 * Stopping turns it off, unpublishes the buffers and reads each one up
 * to the count its owner last published (release store of `n` after the
 * slot is written; acquire load here): an owner that still appends one
 * event after the stop writes past what is read, into a buffer that
 * stays allocated until the run ends, so nothing is read while written
 * and nothing is freed while in use. When the trace is off, recording
 * costs the one relaxed load and branch in weft__trace (trace.h).
 *
 * The output is Chrome trace-event JSON, which ui.perfetto.dev and
 * chrome://tracing open as is: one track (tid) per worker, named by a
 * metadata event; a complete ("X") slice per fiber run, named after the
 * fiber; instant events for steals, parks and wake-ups.
 */
#define _GNU_SOURCE
#include "sched/trace.h"
#include "sched/sched.h"

#include "common/peek.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#define DEFAULT_EVENTS (1u << 20)
#define MAX_EVENTS     (1u << 26)

struct trace_ev {
    int64_t            ts;    /* weft__now() */
    uint64_t           a;     /* see enum weft__trace_kind */
    char              *name;  /* TR_NAME: a malloc'd copy, freed with the buffer */
    uint32_t           kind;
};

struct trace_buf {
    struct trace_buf *next_old;   /* sessions kept until the run ends */
    uint64_t          first_id;   /* fiber running when the session began (0: none) */
    size_t            cap;
    _Atomic size_t    n;          /* owner: relaxed load, release store */
    uint64_t          dropped;    /* events lost to a full buffer; owner only */
    struct trace_ev   ev[];
};

_Atomic int weft__trace_on;

static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static struct trace_buf *old_bufs;     /* with trace_lock */
/* Session number, for weft_fiber.trace_gen. Relaxed: written with
 * trace_lock before the session is published, read by the owners. */
static _Atomic uint32_t session_gen;
static int64_t session_start;          /* with trace_lock */
static int     session_active;         /* with trace_lock */
static int     run_fd = -1;            /* WEFT_TRACE's file, with trace_lock */

/* Append one event; the slot, or NULL if the buffer is full. Owner. */
static struct trace_ev *append(struct trace_buf *b, unsigned kind, uint64_t a, char *name)
{
    /* Relaxed: only this worker writes n. */
    size_t n = atomic_load_explicit(&b->n, memory_order_relaxed);
    if (n == b->cap) {
        b->dropped++;
        return NULL;
    }
    struct trace_ev *e = &b->ev[n];
    e->ts = weft__now();
    e->a = a;
    e->name = name;
    e->kind = kind;
    /* Release: publishes the slot to the reader in weft__trace_end. */
    atomic_store_explicit(&b->n, n + 1, memory_order_release);
    return e;
}

void weft__trace_record(struct worker *w, unsigned kind, uint64_t a)
{
    /* Acquire: pairs with the release store in weft__trace_begin, so the
     * buffer's header is initialized. */
    struct trace_buf *b = atomic_load_explicit(&w->trace, memory_order_acquire);
    if (!b)
        return;
    if (kind == TR_RUN && a) {
        /* The fiber runs here, so its name and id are ours to read. Its
         * name goes into the trace once per session (it may be gone by
         * the time the trace is written). */
        struct weft_fiber *f = (struct weft_fiber *)(uintptr_t)a;
        a = f->id;
        uint32_t gen = atomic_load_explicit(&session_gen, memory_order_relaxed);
        if (f->name && f->trace_gen != gen) {
            f->trace_gen = gen;
            char *copy = strndup(f->name, WEFT__FIBER_NAME);
            if (copy && !append(b, TR_NAME, a, copy))
                free(copy);
        }
    }
    append(b, kind, a, NULL);
}

int weft__trace_begin(size_t events)
{
    if (!events)
        events = DEFAULT_EVENTS;
    if (events > MAX_EVENTS)
        events = MAX_EVENTS;
    pthread_mutex_lock(&weft__rt.report_lock);
    int err = 0;
    /* Acquire: the workers' array is complete once RUNNING is seen;
     * report_lock keeps it alive. */
    if (atomic_load_explicit(&weft__rt.state, memory_order_acquire) != RT_RUNNING) {
        err = -EPERM;
        goto out;
    }
    pthread_mutex_lock(&trace_lock);
    if (session_active) {
        err = -EBUSY;
        goto out_trace;
    }
    size_t size = sizeof(struct trace_buf) + events * sizeof(struct trace_ev);
    for (unsigned i = 0; i < weft__rt.nworkers; i++) {
        struct trace_buf *b = malloc(size);
        if (!b) {
            err = -ENOMEM;
            break;
        }
        b->cap = events;
        /* What the worker runs now: its slice starts with the session.
         * Relaxed load and a fault-tolerant copy (the fiber may finish
         * meanwhile: then the slice is a little long). */
        struct weft_fiber *cur = atomic_load_explicit(&weft__rt.workers[i].running,
                                                      memory_order_relaxed);
        b->first_id = 0;
        if (cur && weft__peek(&b->first_id, &cur->id, sizeof b->first_id) != 0)
            b->first_id = 0;
        atomic_init(&b->n, 0);
        b->dropped = 0;
        b->next_old = old_bufs;
        old_bufs = b;
        /* Release: see weft__trace_record. */
        atomic_store_explicit(&weft__rt.workers[i].trace, b, memory_order_release);
    }
    if (err) {
        for (unsigned i = 0; i < weft__rt.nworkers; i++)
            atomic_store_explicit(&weft__rt.workers[i].trace, NULL, memory_order_relaxed);
        goto out_trace;
    }
    session_start = weft__now();
    session_active = 1;
    /* Relaxed: see session_gen. Never 0, which new blocks hold. */
    uint32_t g = atomic_load_explicit(&session_gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&session_gen, g ? g : 1, memory_order_relaxed);
    /* Relaxed: a hint (trace.h); the buffers are published above. */
    atomic_store_explicit(&weft__trace_on, 1, memory_order_relaxed);
out_trace:
    pthread_mutex_unlock(&trace_lock);
out:
    pthread_mutex_unlock(&weft__rt.report_lock);
    return err;
}

/* ---- writing ---------------------------------------------------------------- */

struct out {
    int  fd;
    int  err;
    size_t len;
    char buf[16384];
};

static void out_flush(struct out *o)
{
    size_t off = 0;
    while (!o->err && off < o->len) {
        ssize_t n = write(o->fd, o->buf + off, o->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            o->err = -errno;
            break;
        }
        off += (size_t)n;
    }
    o->len = 0;
}

__attribute__((format(printf, 2, 3)))
static void out_printf(struct out *o, const char *fmt, ...)
{
    if (sizeof o->buf - o->len < 512)
        out_flush(o);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof o->buf - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < sizeof o->buf - o->len ? (size_t)n : sizeof o->buf - o->len - 1;
}

/* Fiber id -> name, from the TR_NAME events: open addressing. */
struct names {
    size_t   cap;   /* a power of two */
    uint64_t *id;
    const char **name;
};

static void names_put(struct names *m, uint64_t id, const char *name)
{
    if (!m->cap)
        return;
    for (size_t i = (size_t)(id * 0x9e3779b97f4a7c15ull) & (m->cap - 1);; i = (i + 1) & (m->cap - 1))
        if (!m->id[i] || m->id[i] == id) {
            m->id[i] = id;
            m->name[i] = name;
            return;
        }
}

static const char *names_get(const struct names *m, uint64_t id)
{
    if (!m->cap)
        return NULL;
    for (size_t i = (size_t)(id * 0x9e3779b97f4a7c15ull) & (m->cap - 1); m->id[i];
         i = (i + 1) & (m->cap - 1))
        if (m->id[i] == id)
            return m->name[i];
    return NULL;
}

/* A JSON-safe copy of fiber id's name, or "". */
static void fiber_name(const struct names *m, uint64_t id, char *dst, size_t cap)
{
    const char *name = names_get(m, id);
    size_t j = 0;
    for (size_t i = 0; name && name[i] && j + 1 < cap; i++) {
        unsigned char c = (unsigned char)name[i];
        dst[j++] = (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f) ? '?' : (char)c;
    }
    dst[j] = 0;
}

static double us(int64_t ts, int64_t base)
{
    return (double)(ts - base) / 1000.0;
}

static void write_worker(struct out *o, const struct names *m, int pid, unsigned w,
                         const struct trace_buf *b, size_t n, int64_t base, int64_t end,
                         int *first)
{
    out_printf(o, "%s\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%u,"
               "\"args\":{\"name\":\"weft worker %u\"}}", *first ? "" : ",", pid, w, w);
    *first = 0;
    if (b->first_id) {
        /* The fiber that was running when the session began, until the
         * worker's first event (all session long if it never yielded). */
        size_t j = 0;
        while (j < n && b->ev[j].kind == TR_NAME)
            j++;
        char name[WEFT__FIBER_NAME];
        fiber_name(m, b->first_id, name, sizeof name);
        out_printf(o, ",\n{\"name\":\"fiber %llu%s%s%s\",\"cat\":\"fiber\",\"ph\":\"X\","
                   "\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":%u,\"args\":{\"fiber\":%llu}}",
                   (unsigned long long)b->first_id, name[0] ? " '" : "", name,
                   name[0] ? "'" : "", 0.0, us(j < n ? b->ev[j].ts : end, base), pid, w,
                   (unsigned long long)b->first_id);
    }
    for (size_t i = 0; i < n; i++) {
        const struct trace_ev *e = &b->ev[i];
        switch (e->kind) {
        case TR_RUN: {
            if (!e->a)
                break;
            size_t j = i + 1;
            while (j < n && b->ev[j].kind == TR_NAME)
                j++;
            int64_t stop = j < n ? b->ev[j].ts : end;
            char name[WEFT__FIBER_NAME];
            fiber_name(m, e->a, name, sizeof name);
            out_printf(o, ",\n{\"name\":\"fiber %llu%s%s%s\",\"cat\":\"fiber\",\"ph\":\"X\","
                       "\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":%u,\"args\":{\"fiber\":%llu}}",
                       (unsigned long long)e->a, name[0] ? " '" : "", name, name[0] ? "'" : "",
                       us(e->ts, base), us(stop, e->ts), pid, w,
                       (unsigned long long)e->a);
            break;
        }
        case TR_STEAL:
            out_printf(o, ",\n{\"name\":\"steal\",\"cat\":\"sched\",\"ph\":\"i\",\"s\":\"t\","
                       "\"ts\":%.3f,\"pid\":%d,\"tid\":%u,\"args\":{\"victim\":%llu}}",
                       us(e->ts, base), pid, w, (unsigned long long)e->a);
            break;
        case TR_PARK:
        case TR_WAKE:
            out_printf(o, ",\n{\"name\":\"%s\",\"cat\":\"sched\",\"ph\":\"i\",\"s\":\"t\","
                       "\"ts\":%.3f,\"pid\":%d,\"tid\":%u}",
                       e->kind == TR_PARK ? "park" : "wake", us(e->ts, base), pid, w);
            break;
        }
    }
}

int weft__trace_end(int fd)
{
    pthread_mutex_lock(&weft__rt.report_lock);
    pthread_mutex_lock(&trace_lock);
    if (!session_active || !weft__rt.workers) {
        pthread_mutex_unlock(&trace_lock);
        pthread_mutex_unlock(&weft__rt.report_lock);
        return -EINVAL;
    }
    /* Relaxed: see weft__trace_begin. */
    atomic_store_explicit(&weft__trace_on, 0, memory_order_relaxed);
    int64_t end = weft__now();
    unsigned nw = weft__rt.nworkers;
    struct trace_buf **bufs = calloc(nw ? nw : 1, sizeof *bufs);
    size_t *counts = calloc(nw ? nw : 1, sizeof *counts);
    int err = 0;
    if (!bufs || !counts) {
        err = -ENOMEM;
    } else {
        for (unsigned i = 0; i < nw; i++) {
            /* Acquire: pairs with weft__trace_record's loads; we take the
             * buffer away (NULL) and read what was published. */
            bufs[i] = atomic_exchange_explicit(&weft__rt.workers[i].trace, NULL,
                                               memory_order_acq_rel);
            /* Acquire: pairs with the release store of n. */
            counts[i] = bufs[i] ? atomic_load_explicit(&bufs[i]->n, memory_order_acquire) : 0;
        }
    }
    session_active = 0;
    int64_t base = session_start;
    pthread_mutex_unlock(&trace_lock);
    if (!err) {
        struct out *o = malloc(sizeof *o);
        if (!o) {
            err = -ENOMEM;
        } else {
            o->fd = fd;
            o->err = 0;
            o->len = 0;
            int pid = (int)getpid();
            int first = 1;
            struct names m = { 0, NULL, NULL };
            size_t nnames = 0;
            for (unsigned i = 0; i < nw; i++)
                for (size_t k = 0; bufs[i] && k < counts[i]; k++)
                    nnames += bufs[i]->ev[k].kind == TR_NAME;
            if (nnames) {
                m.cap = 16;
                while (m.cap < 2 * nnames)
                    m.cap *= 2;
                m.id = calloc(m.cap, sizeof *m.id);
                m.name = calloc(m.cap, sizeof *m.name);
                if (!m.id || !m.name)
                    m.cap = 0;
                for (unsigned i = 0; m.cap && i < nw; i++)
                    for (size_t k = 0; bufs[i] && k < counts[i]; k++)
                        if (bufs[i]->ev[k].kind == TR_NAME)
                            names_put(&m, bufs[i]->ev[k].a, bufs[i]->ev[k].name);
            }
            out_printf(o, "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"producer\":\"weft %s\"},"
                       "\"traceEvents\":[", weft_version());
            for (unsigned i = 0; i < nw; i++)
                if (bufs[i])
                    write_worker(o, &m, pid, i, bufs[i], counts[i], base, end, &first);
            out_printf(o, "\n]}\n");
            out_flush(o);
            err = o->err;
            free(o);
            free(m.id);
            free(m.name);
        }
    }
    free(bufs);
    free(counts);
    pthread_mutex_unlock(&weft__rt.report_lock);
    return err;
}

/* ---- WEFT_TRACE=file ------------------------------------------------------------- */

void weft__trace_run_start(void)
{
    const char *path = getenv("WEFT_TRACE");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        char msg[256];
        int n = snprintf(msg, sizeof msg, "weft: WEFT_TRACE: cannot open %s: %s\n", path,
                         strerror(errno));
        if (n > 0)
            (void)!write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        return;
    }
    if (weft__trace_begin(0) != 0) {
        close(fd);
        return;
    }
    pthread_mutex_lock(&trace_lock);
    run_fd = fd;
    pthread_mutex_unlock(&trace_lock);
}

void weft__trace_run_end(void)
{
    pthread_mutex_lock(&trace_lock);
    int fd = run_fd;
    run_fd = -1;
    pthread_mutex_unlock(&trace_lock);
    if (fd >= 0) {
        int err = weft__trace_end(fd);
        if (err) {
            char msg[160];
            int n = snprintf(msg, sizeof msg, "weft: WEFT_TRACE: writing the trace failed: %s\n",
                             strerror(-err));
            if (n > 0)
                (void)!write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        }
        close(fd);
    }
    /* A session left open by weft-dump's client is dropped. */
    pthread_mutex_lock(&trace_lock);
    session_active = 0;
    /* Relaxed: no worker runs any more. */
    atomic_store_explicit(&weft__trace_on, 0, memory_order_relaxed);
    struct trace_buf *b = old_bufs;
    old_bufs = NULL;
    pthread_mutex_unlock(&trace_lock);
    while (b) {
        struct trace_buf *next = b->next_old;
        /* Relaxed: no worker runs any more. */
        size_t n = atomic_load_explicit(&b->n, memory_order_relaxed);
        for (size_t i = 0; i < n; i++)
            free(b->ev[i].name);
        free(b);
        b = next;
    }
}
