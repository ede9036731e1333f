/*
 * The dump tests' scenario, shared by test_dump.c (in-process) and
 * dump_target.c (a process for weft-dump(1) to read): fibers parked in
 * every wait kind, three parked at the same place (folded stacks), one
 * spinning forever on its worker, one finished and not joined. The
 * parked functions have distinctive names that the backtraces must show.
 *
 * Use: weft_run(sc_main) on one thread; on another, wait for sc_ready,
 * look (sc_check_json), then sc_release(); weft_run then returns and
 * sc_results_ok() says whether every fiber finished with its exact
 * result. Header-only; one includer per program.
 */
#ifndef WEFT_TESTS_DUMP_SCENARIO_H
#define WEFT_TESTS_DUMP_SCENARIO_H

#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json_mini.h"

enum sc_kind {
    SC_MAIN, SC_HOLDER, SC_MUTEX, SC_COND, SC_WG1, SC_WG2, SC_WG3, SC_SEM, SC_JOIN,
    SC_SLEEP, SC_CHAN_SEND, SC_CHAN_RECV, SC_SELECT, SC_FD_READ, SC_FD_WRITE,
    SC_BLOCKING, SC_SPIN, SC_DONE, SC_COUNT
};

struct sc_fiber {
    const char *name;       /* the fiber's name                                */
    const char *fn_name;    /* must appear in its backtrace (NULL: none)       */
    const char *state;      /* "parked", "running" or "done"                   */
    const char *kind;       /* wait kind when parked                           */
    char        detail[128];/* expected wait detail (a prefix if detail_prefix)*/
    int         detail_prefix;
    const char *shape, *shape_end; /* what any such detail starts and ends with */
    weft_fiber *f;
    uint64_t    id;
    intptr_t    result, expect;
};

static struct sc_fiber sc[SC_COUNT];
static _Atomic int sc_ready;       /* sc_main has set everything up    */
static _Atomic int sc_stop;        /* the spinner and sleeper may end  */
static _Atomic int sc_holding;     /* the holder has the mutex         */
static int sc_cond_flag;           /* with sc_cmtx                     */
static weft_mutex sc_mtx, sc_cmtx;
static weft_cond sc_cv;
static weft_wg sc_wg;
static weft_sem sc_sem, sc_hold_sem;
static weft_chan *sc_ch_send, *sc_ch_recv, *sc_ch_sel_a, *sc_ch_sel_b;
static int sc_pipe_r[2], sc_pipe_w[2], sc_pipe_b[2];

/* Keeps the call before it a real call with a frame after it. */
#define SC_KEEP_FRAME() __asm__ volatile("" ::: "memory")

static __attribute__((noinline)) void *parked_holding_mutex_fn(void *arg)
{
    (void)arg;
    weft_mutex_lock(&sc_mtx);
    atomic_store(&sc_holding, 1);
    weft_sem_wait(&sc_hold_sem);
    SC_KEEP_FRAME();
    weft_mutex_unlock(&sc_mtx);
    return (void *)100;
}

static __attribute__((noinline)) void *parked_in_mutex_fn(void *arg)
{
    (void)arg;
    weft_mutex_lock(&sc_mtx);
    SC_KEEP_FRAME();
    weft_mutex_unlock(&sc_mtx);
    return (void *)1;
}

static __attribute__((noinline)) void *parked_in_cond_fn(void *arg)
{
    (void)arg;
    weft_mutex_lock(&sc_cmtx);
    while (!sc_cond_flag)
        weft_cond_wait(&sc_cv, &sc_cmtx);
    SC_KEEP_FRAME();
    weft_mutex_unlock(&sc_cmtx);
    return (void *)2;
}

static __attribute__((noinline)) void *parked_in_wg_fn(void *arg)
{
    (void)arg;
    weft_wg_wait(&sc_wg);
    SC_KEEP_FRAME();
    return (void *)3;
}

static __attribute__((noinline)) void *parked_in_sem_fn(void *arg)
{
    (void)arg;
    weft_sem_wait(&sc_sem);
    SC_KEEP_FRAME();
    return (void *)4;
}

static __attribute__((noinline)) void *parked_in_join_fn(void *arg)
{
    void *r = NULL;
    if (weft_join(arg, &r) != 0)
        return (void *)-1;
    SC_KEEP_FRAME();
    return (void *)((intptr_t)r + 10);
}

static __attribute__((noinline)) void *parked_in_sleep_fn(void *arg)
{
    (void)arg;
    /* Long sleeps, so that a dump (slow under TSan) rarely lands just as
     * one ends; the release waits for the current one to end. */
    while (!atomic_load(&sc_stop))
        weft_sleep(2000ll * 1000 * 1000);
    SC_KEEP_FRAME();
    return (void *)5;
}

static __attribute__((noinline)) void *parked_in_chan_send_fn(void *arg)
{
    (void)arg;
    int v = 11;
    int rc = weft_chan_send(sc_ch_send, &v);
    SC_KEEP_FRAME();
    return (void *)(intptr_t)(rc == 0 ? 6 : -1);
}

static __attribute__((noinline)) void *parked_in_chan_recv_fn(void *arg)
{
    (void)arg;
    int v = 0;
    int rc = weft_chan_recv(sc_ch_recv, &v);
    SC_KEEP_FRAME();
    return (void *)(intptr_t)(rc == 0 ? v : -1);
}

static __attribute__((noinline)) void *parked_in_select_fn(void *arg)
{
    (void)arg;
    int a = 0, b = 0;
    weft_select_case cs[2] = {
        { sc_ch_sel_a, WEFT_RECV, &a, 0 },
        { sc_ch_sel_b, WEFT_RECV, &b, 0 },
    };
    int i = weft_select(cs, 2, -1);
    SC_KEEP_FRAME();
    return (void *)(intptr_t)(i * 100 + (i == 1 ? b : a));
}

static __attribute__((noinline)) void *parked_in_fd_read_fn(void *arg)
{
    (void)arg;
    char c = 0;
    ssize_t n = weft_read(sc_pipe_r[0], &c, 1);
    SC_KEEP_FRAME();
    return (void *)(intptr_t)(n == 1 ? c : -1);
}

static __attribute__((noinline)) void *parked_in_fd_write_fn(void *arg)
{
    (void)arg;
    char c = 'w';
    ssize_t n = weft_write(sc_pipe_w[1], &c, 1);
    SC_KEEP_FRAME();
    return (void *)(intptr_t)n;
}

static __attribute__((noinline)) void *blocked_read_fn(void *arg)
{
    char c = 0;
    ssize_t n = read(*(int *)arg, &c, 1);
    return (void *)(intptr_t)(n == 1 ? c : -1);
}

static __attribute__((noinline)) void *parked_in_blocking_fn(void *arg)
{
    (void)arg;
    void *r = weft_blocking(blocked_read_fn, &sc_pipe_b[0]);
    SC_KEEP_FRAME();
    return r;
}

static __attribute__((noinline)) void *spinning_forever_fn(void *arg)
{
    (void)arg;
    volatile unsigned long spins = 0;
    while (!atomic_load_explicit(&sc_stop, memory_order_relaxed))
        spins++;
    return (void *)9;
}

static __attribute__((noinline)) void *finished_fn(void *arg)
{
    (void)arg;
    return (void *)7;
}

static void sc_set(enum sc_kind k, const char *name, const char *fn_name, const char *state,
                   const char *kind, const char *shape, const char *shape_end, intptr_t expect)
{
    sc[k].name = name;
    sc[k].fn_name = fn_name;
    sc[k].state = state;
    sc[k].kind = kind;
    sc[k].shape = shape;
    sc[k].shape_end = shape_end;
    sc[k].expect = expect;
}

/* What every scenario fiber should look like, without the addresses and
 * ids only the scenario's own process knows (for weft-dump's tests). */
static void sc_expectations(void)
{
    memset(sc, 0, sizeof sc);
    sc_set(SC_MAIN, "main", "sc_main", "parked", "join", "join fiber ", "", 0);
    sc_set(SC_HOLDER, "holder", "parked_holding_mutex_fn", "parked", "sem", "sem 0x", "", 100);
    sc_set(SC_MUTEX, "mutex-waiter", "parked_in_mutex_fn", "parked", "mutex", "mutex 0x", "", 1);
    sc_set(SC_COND, "cond-waiter", "parked_in_cond_fn", "parked", "cond", "cond 0x", "", 2);
    sc_set(SC_WG1, "wg-waiter", "parked_in_wg_fn", "parked", "wg", "wg 0x", "", 3);
    sc_set(SC_WG2, "wg-waiter", "parked_in_wg_fn", "parked", "wg", "wg 0x", "", 3);
    sc_set(SC_WG3, "wg-waiter", "parked_in_wg_fn", "parked", "wg", "wg 0x", "", 3);
    sc_set(SC_SEM, "sem-waiter", "parked_in_sem_fn", "parked", "sem", "sem 0x", "", 4);
    sc_set(SC_JOIN, "joiner", "parked_in_join_fn", "parked", "join", "join fiber ", "", 14);
    sc_set(SC_SLEEP, "sleeper", "parked_in_sleep_fn", "parked", "sleep", "sleep until ", " ms", 5);
    sc_set(SC_CHAN_SEND, "sender", "parked_in_chan_send_fn", "parked", "chan send", "chan send 0x",
           "", 6);
    sc_set(SC_CHAN_RECV, "receiver", "parked_in_chan_recv_fn", "parked", "chan recv",
           "chan recv 0x", "", 22);
    sc_set(SC_SELECT, "selector", "parked_in_select_fn", "parked", "select", "select 0x", "", 133);
    sc_set(SC_FD_READ, "reader", "parked_in_fd_read_fn", "parked", "fd read", "fd ", " read", 'r');
    sc_set(SC_FD_WRITE, "writer", "parked_in_fd_write_fn", "parked", "fd write", "fd ", " write",
           1);
    sc_set(SC_BLOCKING, "blocker", "parked_in_blocking_fn", "parked", "blocking call",
           "blocking call blocked_read_fn", "", 'b');
    sc_set(SC_SPIN, "spinner", NULL, "running", NULL, NULL, NULL, 9);
    sc_set(SC_DONE, "finished", NULL, "done", NULL, NULL, NULL, 7);
}

static inline __attribute__((always_inline)) weft_fiber *sc_spawn(enum sc_kind k, weft_fn fn,
                                                                  void *arg)
{
    weft_spawn_opts o = { sc[k].name, 0, 0 };
    weft_fiber *f = weft_spawn_ex(&o, fn, arg);
    if (f) {
        sc[k].f = f;
        sc[k].id = weft_fiber_id(f);
    }
    return f;
}

/* Pipes and channels, before weft_run. 0 or -1. */
static int sc_prepare(void)
{
    sc_expectations();
    atomic_store(&sc_ready, 0);
    atomic_store(&sc_stop, 0);
    atomic_store(&sc_holding, 0);
    sc_cond_flag = 0;
    weft_mutex_init(&sc_mtx);
    weft_mutex_init(&sc_cmtx);
    weft_cond_init(&sc_cv);
    weft_wg_init(&sc_wg);
    weft_wg_add(&sc_wg, 1);
    weft_sem_init(&sc_sem, 0);
    weft_sem_init(&sc_hold_sem, 0);
    sc_ch_send = weft_chan_new(sizeof(int), 0);
    sc_ch_recv = weft_chan_new(sizeof(int), 0);
    sc_ch_sel_a = weft_chan_new(sizeof(int), 0);
    sc_ch_sel_b = weft_chan_new(sizeof(int), 0);
    if (!sc_ch_send || !sc_ch_recv || !sc_ch_sel_a || !sc_ch_sel_b)
        return -1;
    if (pipe2(sc_pipe_r, O_CLOEXEC) || pipe2(sc_pipe_w, O_CLOEXEC | O_NONBLOCK) ||
        pipe2(sc_pipe_b, O_CLOEXEC))
        return -1;
    /* Fill the write pipe, so that the fiber's write waits. */
    static char chunk[4096];
    while (write(sc_pipe_w[1], chunk, sizeof chunk) > 0)
        ;
    while (write(sc_pipe_w[1], chunk, 1) > 0)
        ;
    if (errno != EAGAIN)
        return -1;

    snprintf(sc[SC_HOLDER].detail, sizeof sc[0].detail, "sem %p", (void *)&sc_hold_sem);
    snprintf(sc[SC_MUTEX].detail, sizeof sc[0].detail, "mutex %p", (void *)&sc_mtx);
    snprintf(sc[SC_COND].detail, sizeof sc[0].detail, "cond %p", (void *)&sc_cv);
    for (int k = SC_WG1; k <= SC_WG3; k++)
        snprintf(sc[k].detail, sizeof sc[0].detail, "wg %p", (void *)&sc_wg);
    snprintf(sc[SC_SEM].detail, sizeof sc[0].detail, "sem %p", (void *)&sc_sem);
    snprintf(sc[SC_SLEEP].detail, sizeof sc[0].detail, "sleep until +");
    sc[SC_SLEEP].detail_prefix = 1;
    snprintf(sc[SC_CHAN_SEND].detail, sizeof sc[0].detail, "chan send %p", (void *)sc_ch_send);
    snprintf(sc[SC_CHAN_RECV].detail, sizeof sc[0].detail, "chan recv %p", (void *)sc_ch_recv);
    snprintf(sc[SC_SELECT].detail, sizeof sc[0].detail, "select %p", (void *)sc_ch_sel_a);
    snprintf(sc[SC_FD_READ].detail, sizeof sc[0].detail, "fd %d read", sc_pipe_r[0]);
    snprintf(sc[SC_FD_WRITE].detail, sizeof sc[0].detail, "fd %d write", sc_pipe_w[1]);
    snprintf(sc[SC_BLOCKING].detail, sizeof sc[0].detail, "blocking call blocked_read_fn");
    sc[SC_BLOCKING].detail_prefix = 1;
    return 0;
}

/* The runtime's main function. */
static __attribute__((noinline)) void sc_main(void *arg)
{
    (void)arg;
    sc[SC_MAIN].id = weft_fiber_id(weft_self());
    sc[SC_MAIN].f = weft_self();
    if (!sc_spawn(SC_HOLDER, parked_holding_mutex_fn, NULL))
        return;
    while (!atomic_load(&sc_holding))
        weft_sleep(1000 * 1000);
    int ok = sc_spawn(SC_MUTEX, parked_in_mutex_fn, NULL) &&
             sc_spawn(SC_COND, parked_in_cond_fn, NULL) &&
             sc_spawn(SC_WG1, parked_in_wg_fn, NULL) &&
             sc_spawn(SC_WG2, parked_in_wg_fn, NULL) &&
             sc_spawn(SC_WG3, parked_in_wg_fn, NULL) &&
             sc_spawn(SC_SEM, parked_in_sem_fn, NULL) &&
             sc_spawn(SC_JOIN, parked_in_join_fn, sc[SC_SEM].f) &&
             sc_spawn(SC_SLEEP, parked_in_sleep_fn, NULL) &&
             sc_spawn(SC_CHAN_SEND, parked_in_chan_send_fn, NULL) &&
             sc_spawn(SC_CHAN_RECV, parked_in_chan_recv_fn, NULL) &&
             sc_spawn(SC_SELECT, parked_in_select_fn, NULL) &&
             sc_spawn(SC_FD_READ, parked_in_fd_read_fn, NULL) &&
             sc_spawn(SC_FD_WRITE, parked_in_fd_write_fn, NULL) &&
             sc_spawn(SC_BLOCKING, parked_in_blocking_fn, NULL) &&
             sc_spawn(SC_SPIN, spinning_forever_fn, NULL) &&
             sc_spawn(SC_DONE, finished_fn, NULL);
    snprintf(sc[SC_JOIN].detail, sizeof sc[0].detail, "join fiber %" PRIu64, sc[SC_SEM].id);
    snprintf(sc[SC_MAIN].detail, sizeof sc[0].detail, "join fiber %" PRIu64, sc[SC_HOLDER].id);
    atomic_store(&sc_ready, ok ? 1 : -1);
    /* Join everything but the sem waiter (the joiner joins it). */
    for (int k = SC_HOLDER; k < SC_COUNT; k++) {
        if (k == SC_SEM || !sc[k].f)
            continue;
        void *r = NULL;
        sc[k].result = weft_join(sc[k].f, &r) == 0 ? (intptr_t)r : -1000;
    }
    sc[SC_SEM].result = sc[SC_JOIN].result - 10;
    SC_KEEP_FRAME();
}

/* Let every fiber finish. Any plain thread, after sc_ready. */
static inline void sc_release(void)
{
    weft_sem_post(&sc_hold_sem);
    weft_mutex_lock(&sc_cmtx);
    sc_cond_flag = 1;
    weft_mutex_unlock(&sc_cmtx);
    weft_cond_broadcast(&sc_cv);
    weft_wg_done(&sc_wg);
    weft_sem_post(&sc_sem);
    int v = 0;
    weft_chan_recv(sc_ch_send, &v);
    v = 22;
    weft_chan_send(sc_ch_recv, &v);
    v = 33;
    weft_chan_send(sc_ch_sel_b, &v);
    (void)!write(sc_pipe_r[1], "r", 1);
    char buf[4096];
    while (read(sc_pipe_w[0], buf, sizeof buf) > 0)
        ;
    (void)!write(sc_pipe_b[1], "b", 1);
    atomic_store(&sc_stop, 1);
}

/* After weft_run: did every fiber end with its result? Frees the pipes
 * and channels. 1 or 0 (with the first mismatch in why). */
static inline int sc_results_ok(char *why, size_t cap)
{
    int ok = 1;
    for (int k = SC_HOLDER; k < SC_COUNT && ok; k++) {
        if (sc[k].result != sc[k].expect) {
            snprintf(why, cap, "fiber '%s' returned %ld, expected %ld", sc[k].name,
                     (long)sc[k].result, (long)sc[k].expect);
            ok = 0;
        }
    }
    weft_chan_free(sc_ch_send);
    weft_chan_free(sc_ch_recv);
    weft_chan_free(sc_ch_sel_a);
    weft_chan_free(sc_ch_sel_b);
    int *fds[] = { sc_pipe_r, sc_pipe_w, sc_pipe_b };
    for (int i = 0; i < 3; i++) {
        close(fds[i][0]);
        close(fds[i][1]);
    }
    return ok;
}

/* ---- checking a report ---------------------------------------------------- */

/* The report's fiber for scenario entry k: by id when the ids are known
 * (the scenario's own process), else the n-th fiber named like it, n
 * being k's rank among the entries with that name. NULL if none. */
static const struct jval *sc_json_fiber(const struct jval *doc, int k, int by_name)
{
    const struct jval *fibers = json_get(doc, "fibers");
    if (!fibers || fibers->t != J_ARR)
        return NULL;
    int rank = 0;
    for (int j = 0; j < k; j++)
        rank += strcmp(sc[j].name, sc[k].name) == 0;
    for (size_t i = 0; i < fibers->n; i++) {
        const struct jval *f = &fibers->items[i];
        if (by_name) {
            const char *name = json_str(f, "name");
            if (name && strcmp(name, sc[k].name) == 0 && rank-- == 0)
                return f;
        } else {
            const struct jval *idv = json_get(f, "id");
            if (idv && idv->t == J_NUM && (uint64_t)idv->num == sc[k].id)
                return f;
        }
    }
    return NULL;
}

/* Is fn a frame of the fiber's backtrace? */
static int sc_json_stack_has(const struct jval *doc, const struct jval *fiber, const char *fn)
{
    const struct jval *idx = json_get(fiber, "stack");
    const struct jval *stacks = json_get(doc, "stacks");
    if (!idx || idx->t != J_NUM || !stacks || stacks->t != J_ARR ||
        (size_t)idx->num >= stacks->n)
        return 0;
    const struct jval *frames = json_get(&stacks->items[(size_t)idx->num], "frames");
    for (size_t i = 0; frames && i < frames->n; i++) {
        const char *name = json_str(&frames->items[i], "function");
        if (name && strcmp(name, fn) == 0)
            return 1;
    }
    return 0;
}

/* Without libdw (full 0) a static function has no name: the blocking
 * call's detail is then only checked for its kind. */
static int sc_detail_ok(const struct sc_fiber *e, const char *d, int by_name, int full)
{
    if (!full && e == &sc[SC_BLOCKING])
        return strncmp(d, "blocking call ", 14) == 0;
    if (!by_name)
        return e->detail_prefix ? strncmp(d, e->detail, strlen(e->detail)) == 0
                                : strcmp(d, e->detail) == 0;
    size_t n = strlen(d), a = strlen(e->shape), b = strlen(e->shape_end);
    return n >= a + b && strncmp(d, e->shape, a) == 0 && strcmp(d + n - b, e->shape_end) == 0;
}

/*
 * Does the JSON report show every scenario fiber as expected? full: the
 * build unwinds whole stacks, so each parked fiber's function must be in
 * its backtrace. by_name: the ids and addresses are not known here (the
 * scenario runs in another process): match fibers by name and details by
 * their shape. 1, or 0 with the first difference in why.
 */
static inline int sc_check_json(const char *text, size_t len, int full, int by_name, char *why,
                         size_t cap)
{
    struct jval doc;
    if (json_parse(text, len, &doc) != 0) {
        snprintf(why, cap, "the report is not valid JSON");
        return 0;
    }
    int ok = 1;
    for (int k = 0; k < SC_COUNT && ok; k++) {
        const struct sc_fiber *e = &sc[k];
        const struct jval *f = sc_json_fiber(&doc, k, by_name);
        const char *state = f ? json_str(f, "state") : NULL;
        const char *name = f ? json_str(f, "name") : NULL;
        if (!f) {
            snprintf(why, cap, "fiber %" PRIu64 " '%s' missing", e->id, e->name);
            ok = 0;
        } else if (!name || strcmp(name, e->name) != 0) {
            snprintf(why, cap, "fiber %" PRIu64 " is named '%s', not '%s'", e->id,
                     name ? name : "(null)", e->name);
            ok = 0;
        } else if (!state || strcmp(state, e->state) != 0) {
            snprintf(why, cap, "fiber '%s' is %s, not %s", e->name, state ? state : "(null)",
                     e->state);
            ok = 0;
        } else if (e->kind) {
            const struct jval *w = json_get(f, "wait");
            const char *kind = json_str(w, "kind"), *detail = json_str(w, "detail");
            if (!kind || strcmp(kind, e->kind) != 0 || !detail ||
                !sc_detail_ok(e, detail, by_name, full)) {
                snprintf(why, cap, "fiber '%s' waits in '%s: %s', expected '%s: %s'", e->name,
                         kind ? kind : "(null)", detail ? detail : "(null)", e->kind,
                         by_name ? e->shape : e->detail);
                ok = 0;
            } else if (full && e->fn_name && !sc_json_stack_has(&doc, f, e->fn_name)) {
                snprintf(why, cap, "fiber '%s': %s not in its backtrace", e->name, e->fn_name);
                ok = 0;
            }
        } else if (strcmp(e->state, "running") == 0) {
            const struct jval *st = json_get(f, "stack");
            if (!st || st->t != J_NULL) {
                snprintf(why, cap, "running fiber '%s' has a backtrace", e->name);
                ok = 0;
            }
        }
    }
    json_free(&doc);
    return ok;
}

/* Does the text report show every scenario fiber as expected? by_name
 * as for sc_check_json. */
static inline int sc_check_text(const char *text, int full, int by_name, char *why, size_t cap)
{
    char want[256];
    for (int k = 0; k < SC_COUNT; k++) {
        const struct sc_fiber *e = &sc[k];
        char id[24];
        snprintf(id, sizeof id, "%" PRIu64, e->id);
        if (by_name || (!full && k == SC_BLOCKING)) {
            /* The first line of the name's fibers is enough here: the
             * JSON check matched each one. */
            snprintf(want, sizeof want, " '%s'%s%s", e->name, e->kind ? ": " : "  worker",
                     !e->kind ? "" : full || k != SC_BLOCKING ? e->shape : "blocking call ");
        } else if (e->kind) {
            snprintf(want, sizeof want, "  fiber %s '%s': %s", id, e->name, e->detail);
        } else {
            snprintf(want, sizeof want, "  fiber %s '%s'  worker", id, e->name);
        }
        if (!strstr(text, want)) {
            snprintf(why, cap, "text report lacks \"%s\"", want);
            return 0;
        }
        if (full && e->fn_name) {
            snprintf(want, sizeof want, " %s+0x", e->fn_name);
            if (!strstr(text, want)) {
                snprintf(why, cap, "text report has no frame in %s", e->fn_name);
                return 0;
            }
        }
    }
    static const char *const must[] = {
        "\nworkers\n", "\nrunning (", "    running on worker ", "\nparked: mutex (1)\n",
        "\nparked: wg (3)\n", "    3 fibers with this stack: ids ", "\ndone, not joined (1)\n",
        /* names of static functions: with libdw only */
        "fn spinning_forever_fn", ", spawned at sc_main+0x",
    };
    size_t nmust = sizeof must / sizeof *must - (full ? 0 : 2);
    for (size_t i = 0; i < nmust; i++) {
        if (!strstr(text, must[i])) {
            snprintf(why, cap, "text report lacks \"%s\"", must[i]);
            return 0;
        }
    }
    return 1;
}

#endif
