/*
 * Lifetimes: every synchronisation object may be freed (heap) or the
 * frame holding it left (stack) as soon as the last call on it has
 * returned in the party that frees it - even while the call that let
 * that party proceed (a post, a done, an unlock, a signal, a send) has
 * not yet returned (the contract's Conventions, "Lifetimes"). Each test
 * repeats such a hand-over sized(100000) times across the workers, with
 * the other party a fiber and then a plain thread, and frees at once; a
 * late touch by the library is a heap-use-after-free (ASan), a race on
 * freed memory (TSan), or, for stack frames, a changed value that the
 * scribbling below detects. The suite is meant to run under ASan and
 * under chaos mode (WEFT_DEBUG_CHAOS), which widens the windows.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>

#include "sync_test.h"

/* ---- a helper that runs one operation per object handed to it ----------- */

/* The other party: a fiber or a plain thread spinning on `slot`. It
 * takes each object put there and applies op to it (a post, a done...),
 * counting in `served`. The spin keeps it running in parallel with the
 * party that waits and frees, which is what opens the windows. */
struct helper {
    _Atomic(void *) slot;
    _Atomic long    served;
    _Atomic int     stop;
    void          (*op)(void *obj);
    int             fiber;
};

static void helper_loop(struct helper *h)
{
    unsigned idle = 0;
    while (!atomic_load(&h->stop)) {
        void *o = atomic_exchange(&h->slot, NULL);
        if (o) {
            h->op(o);
            atomic_fetch_add(&h->served, 1);
            idle = 0;
            continue;
        }
        if (++idle % 64 == 0) {
            if (h->fiber)
                weft_yield(); /* lets its worker run whatever waits there */
            else
                sched_yield();
        }
    }
}

static void *helper_fiber(void *arg)
{
    helper_loop(arg);
    return NULL;
}

static void *helper_thread(void *arg)
{
    /* Created from a worker, the thread inherits its pinning: undo it, so
     * that it runs beside the workers, not in turns with one of them. */
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; c++)
        CPU_SET(c, &all);
    EXPECT(sched_setaffinity(0, sizeof all, &all) == 0);
    helper_loop(arg);
    return NULL;
}

/* The freeing side's busy wait: yields to the worker's other fibers, and
 * now and then to the OS (the helper thread may share its CPU). */
static void relax(unsigned *n)
{
    if (++*n % 16 == 0)
        sched_yield();
    else
        weft_yield();
}

/* Hand obj to the helper (the previous one has been taken). */
static void hand(struct helper *h, void *obj)
{
    void *expect = NULL;
    unsigned n = 0;
    while (!atomic_compare_exchange_weak(&h->slot, &expect, obj)) {
        expect = NULL;
        relax(&n);
    }
}

struct scenario {
    int   thread;              /* helper is a plain thread, else a fiber */
    void (*op)(void *obj);     /* the helper's side                      */
    void (*round)(struct helper *h, long i); /* the freeing side, once   */
};

static long rounds;

/* Run sc->round sized(100000) times against a helper, then check the
 * helper served every round. The main fiber. */
static void scenario_main(void *arg)
{
    struct scenario *sc = arg;
    struct helper h = { NULL, 0, 0, sc->op, !sc->thread };
    weft_fiber *hf = NULL;
    pthread_t ht;
    if (sc->thread)
        EXPECT(pthread_create(&ht, NULL, helper_thread, &h) == 0);
    else
        hf = spawn(helper_fiber, &h);
    for (long i = 0; i < rounds; i++)
        sc->round(&h, i);
    atomic_store(&h.stop, 1);
    if (sc->thread)
        EXPECT(pthread_join(ht, NULL) == 0);
    else
        EXPECT(weft_join(hf, NULL) == 0);
    EXPECT(atomic_load(&h.served) == rounds);
}

/* sized(100000) rounds (a tenth under chaos mode: see sized). */
static long lifetime_rounds(void)
{
    return sized(100000);
}

/* run_scenario with a 1/div of the rounds, for the scenarios whose rounds
 * are slow (several OS-level yields each). */
static void run_scenario_div(int thread, void (*op)(void *),
                             void (*round)(struct helper *, long), long div)
{
    struct scenario sc = { thread, op, round };
    rounds = lifetime_rounds() / div > 0 ? lifetime_rounds() / div : 1;
    run(0, scenario_main, &sc);
}

static void run_scenario(int thread, void (*op)(void *), void (*round)(struct helper *, long))
{
    run_scenario_div(thread, op, round, 1);
}

/* ---- weft_wg: the waiter frees after wait returns -------------------------- */

static void wg_done_op(void *obj)
{
    weft_wg_done(obj);
}

static void wg_heap_round(struct helper *h, long i)
{
    (void)i;
    weft_wg *wg = malloc(sizeof *wg);
    EXPECT(wg != NULL);
    weft_wg_init(wg);
    weft_wg_add(wg, 1);
    hand(h, wg);
    weft_wg_wait(wg);
    free(wg);
}

/* The wait group on this frame, left as soon as wait returns. */
static __attribute__((noinline)) void wg_stack_once(struct helper *h)
{
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_add(&wg, 1);
    hand(h, &wg);
    weft_wg_wait(&wg);
}

static void wg_stack_round(struct helper *h, long i)
{
    (void)i;
    wg_stack_once(h);
    (void)scribble_below((uint64_t)i);
}

START_TEST(wg_freed_after_wait_fiber)
{
    run_scenario(0, wg_done_op, wg_heap_round);
    run_scenario(0, wg_done_op, wg_stack_round);
}
END_TEST

START_TEST(wg_freed_after_wait_thread)
{
    run_scenario(1, wg_done_op, wg_heap_round);
    run_scenario(1, wg_done_op, wg_stack_round);
}
END_TEST

/* ---- weft_sem: the waiter frees after wait returns ------------------------- */

static void sem_post_op(void *obj)
{
    weft_sem_post(obj);
}

static void sem_heap_round(struct helper *h, long i)
{
    weft_sem *s = malloc(sizeof *s);
    EXPECT(s != NULL);
    weft_sem_init(s, 0);
    hand(h, s);
    if (i % 2)
        weft_sem_wait(s);
    else
        EXPECT(weft_sem_timedwait(s, 10 * 1000000000LL) == 0);
    free(s);
}

static __attribute__((noinline)) void sem_stack_once(struct helper *h)
{
    weft_sem s = WEFT_SEM_INIT(0);
    hand(h, &s);
    weft_sem_wait(&s);
}

static void sem_stack_round(struct helper *h, long i)
{
    (void)i;
    sem_stack_once(h);
    (void)scribble_below((uint64_t)i);
}

START_TEST(sem_freed_after_wait_fiber)
{
    run_scenario(0, sem_post_op, sem_heap_round);
    run_scenario(0, sem_post_op, sem_stack_round);
}
END_TEST

START_TEST(sem_freed_after_wait_thread)
{
    run_scenario(1, sem_post_op, sem_heap_round);
    run_scenario(1, sem_post_op, sem_stack_round);
}
END_TEST

/* ---- weft_mutex: the last unlocker frees, another unlock in flight -------- */

/* The helper's side: take the mutex (queued behind the holder, or
 * spinning), release it, free it: its unlock is the last call, while the
 * holder's unlock that let it in may still be running. */
struct mbox {
    weft_mutex     m;
    _Atomic int    in;  /* the helper is about to lock */
};

static void mutex_take_free_op(void *obj)
{
    struct mbox *b = obj;
    atomic_store(&b->in, 1);
    weft_mutex_lock(&b->m);
    weft_mutex_unlock(&b->m);
    free(b);
}

static void mutex_round(struct helper *h, long i)
{
    struct mbox *b = malloc(sizeof *b);
    EXPECT(b != NULL);
    weft_mutex_init(&b->m);
    atomic_init(&b->in, 0);
    weft_mutex_lock(&b->m);
    long served = atomic_load(&h->served);
    hand(h, b);
    /* Hold it until the helper is on its way, a little longer on some
     * rounds so that it queues. */
    unsigned n = 0;
    while (!atomic_load(&b->in))
        relax(&n);
    for (long k = i % 8; k > 0; k--)
        sched_yield();
    weft_mutex_unlock(&b->m); /* b may be freed while this runs */
    while (atomic_load(&h->served) == served)
        relax(&n);
}

/* The unlock in flight is the helper's, one that must wake a queued
 * waiter W; the freeing side keeps locking and unlocking until W has
 * been through (woken by the helper's unlock, or by the freeing side's
 * own unlocks should that one be slow), then frees at once: its own last
 * unlock has returned and W's calls have, while the helper's unlock may
 * still be inside the call (which the contract allows). A slow unlock
 * that touched the mutex after letting W go writes freed memory. */
struct mfree {
    weft_mutex  m;
    _Atomic int holds, w_in, unlocking, w_done;
};

static void mutex_unlock_waking_op(void *obj)
{
    struct mfree *b = obj;
    weft_mutex_lock(&b->m);
    atomic_store(&b->holds, 1);
    /* In a fiber, weft_yield: the fiber that spawns W may be waiting for
     * this worker (a chaos-mode move puts it in our inbox). */
    while (!atomic_load(&b->w_in))
        weft_yield();
    for (int k = 0; k < 4; k++) /* let W queue up behind us */
        weft_yield();
    atomic_store(&b->unlocking, 1);
    weft_mutex_unlock(&b->m); /* b may be freed while this runs */
}

static void *mutex_queued_waiter(void *arg)
{
    struct mfree *b = arg;
    atomic_store(&b->w_in, 1);
    weft_mutex_lock(&b->m);
    weft_mutex_unlock(&b->m);
    atomic_store(&b->w_done, 1);
    return NULL;
}

static void mutex_in_flight_round(struct helper *h, long i)
{
    (void)i;
    struct mfree *b = malloc(sizeof *b);
    EXPECT(b != NULL);
    weft_mutex_init(&b->m);
    atomic_init(&b->holds, 0);
    atomic_init(&b->w_in, 0);
    atomic_init(&b->unlocking, 0);
    atomic_init(&b->w_done, 0);
    hand(h, b);
    unsigned n = 0;
    while (!atomic_load(&b->holds))
        relax(&n);
    weft_fiber *w = spawn(mutex_queued_waiter, b);
    while (!atomic_load(&b->unlocking))
        relax(&n);
    while (!atomic_load(&b->w_done)) {
        if (weft_mutex_trylock(&b->m) == 0)
            weft_mutex_unlock(&b->m);
        if (++n % 64 == 0)
            weft_yield();
    }
    EXPECT(weft_join(w, NULL) == 0);
    free(b);
}

START_TEST(mutex_freed_while_an_unlock_wakes_fiber)
{
    run_scenario_div(0, mutex_unlock_waking_op, mutex_in_flight_round, 20);
}
END_TEST

START_TEST(mutex_freed_while_an_unlock_wakes_thread)
{
    run_scenario_div(1, mutex_unlock_waking_op, mutex_in_flight_round, 20);
}
END_TEST

START_TEST(mutex_freed_by_last_unlocker_fiber)
{
    run_scenario(0, mutex_take_free_op, mutex_round);
}
END_TEST

START_TEST(mutex_freed_by_last_unlocker_thread)
{
    run_scenario(1, mutex_take_free_op, mutex_round);
}
END_TEST

/* ---- weft_cond + weft_mutex: producer/consumers on a box freed at once ---- */

/* The shape of test-sync's cond_producer_consumers, with the box on the
 * heap, freed as soon as every consumer has been joined, many times
 * over: a consumer's cond wait unlocks the mutex in its park commit, on
 * the worker it left, while the consumer may already run elsewhere, take
 * the mutex, finish and be joined. */
struct cbox {
    weft_mutex m;
    weft_cond  c;
    long       value, taken, per;
};

static void *cbox_consumer(void *arg)
{
    struct cbox *b = arg;
    for (long i = 0; i < b->per; i++) {
        weft_mutex_lock(&b->m);
        while (b->value == 0)
            weft_cond_wait(&b->c, &b->m);
        b->value--;
        b->taken++;
        weft_cond_broadcast(&b->c);
        weft_mutex_unlock(&b->m);
    }
    return NULL;
}

#define CBOX_CONSUMERS 3

static void cond_box_main(void *arg)
{
    (void)arg;
    long boxes = rounds / 20 > 0 ? rounds / 20 : 1;
    for (long r = 0; r < boxes; r++) {
        struct cbox *b = malloc(sizeof *b);
        EXPECT(b != NULL);
        weft_mutex_init(&b->m);
        weft_cond_init(&b->c);
        b->value = b->taken = 0;
        b->per = 3; /* short-lived boxes: many ends, each a chance */
        weft_fiber *f[CBOX_CONSUMERS];
        for (int i = 0; i < CBOX_CONSUMERS; i++)
            f[i] = spawn(cbox_consumer, b);
        for (long i = 0; i < CBOX_CONSUMERS * b->per; i++) {
            weft_mutex_lock(&b->m);
            while (b->value >= 2)
                weft_cond_wait(&b->c, &b->m);
            b->value++;
            weft_cond_signal(&b->c);
            weft_mutex_unlock(&b->m);
        }
        for (int i = 0; i < CBOX_CONSUMERS; i++)
            EXPECT(weft_join(f[i], NULL) == 0);
        EXPECT(b->taken == CBOX_CONSUMERS * b->per);
        free(b);
    }
}

START_TEST(cond_box_freed_after_join)
{
    rounds = lifetime_rounds();
    run(0, cond_box_main, NULL);
}
END_TEST

/* The helper signals a waiter that frees the cond (and its mutex) as soon
 * as its wait returns. The waiter waits exactly once (no predicate: only
 * the signal wakes it, as weft's cond has no spurious wake-ups), and the
 * helper takes the mutex first, which it gets only once the waiter is
 * queued, then signals without it: the waiter may run, return and free
 * while weft_cond_signal is still inside the call. */
struct cwait {
    weft_mutex m;
    weft_cond  c;
};

static void cond_signal_op(void *obj)
{
    struct cwait *w = obj;
    weft_mutex_lock(&w->m);
    weft_mutex_unlock(&w->m);
    weft_cond_signal(&w->c);
}

static void cond_round(struct helper *h, long i)
{
    struct cwait *w = malloc(sizeof *w);
    EXPECT(w != NULL);
    weft_mutex_init(&w->m);
    weft_cond_init(&w->c);
    weft_mutex_lock(&w->m);
    hand(h, w);
    if (i % 2)
        weft_cond_wait(&w->c, &w->m);
    else
        EXPECT(weft_cond_timedwait(&w->c, &w->m, 10 * 1000000000LL) == 0);
    weft_mutex_unlock(&w->m);
    free(w);
}

START_TEST(cond_freed_after_wait_fiber)
{
    run_scenario(0, cond_signal_op, cond_round);
}
END_TEST

START_TEST(cond_freed_after_wait_thread)
{
    run_scenario(1, cond_signal_op, cond_round);
}
END_TEST

/* ---- weft_select: the frame holding the cases left at once ---------------- */

/* The select parks on two channels with a heap of cases; the helper's
 * send wakes it from another worker while the park commit may still be
 * releasing the channels' locks. The select's frame (and its lock
 * array) is gone as soon as it returns. */
struct selbox {
    weft_chan *a, *b;
};

static void select_send_op(void *obj)
{
    struct selbox *s = obj;
    int v = 7;
    EXPECT(weft_chan_send(s->b, &v) == 0);
}

static __attribute__((noinline)) int select_once(struct selbox *s, struct helper *h, size_t ncases)
{
    int va = 0, vb = 0;
    weft_select_case cs[12];
    for (size_t k = 0; k < ncases; k++) {
        cs[k].chan = k % 2 ? s->b : s->a;
        cs[k].op = WEFT_RECV;
        cs[k].elem = k % 2 ? (void *)&vb : (void *)&va;
        cs[k].result = 0;
    }
    hand(h, s);
    int rc = weft_select(cs, ncases, -1);
    EXPECT(rc >= 0 && rc % 2 == 1 && vb == 7);
    return rc;
}

static void select_round(struct helper *h, long i)
{
    static struct selbox s; /* channels live across rounds */
    if (i == 0) {
        s.a = weft_chan_new(sizeof(int), 0);
        s.b = weft_chan_new(sizeof(int), 0);
    }
    /* 2 cases: the small path; 10: the heap lock array. */
    select_once(&s, h, i % 3 == 0 ? 10 : 2);
    (void)scribble_below((uint64_t)i);
    if (i == rounds - 1) {
        /* Wait for the helper's last send to return before freeing. */
        unsigned n = 0;
        while (atomic_load(&h->served) != rounds)
            relax(&n);
        weft_chan_free(s.a);
        weft_chan_free(s.b);
    }
}

START_TEST(select_frame_left_after_return_fiber)
{
    run_scenario(0, select_send_op, select_round);
}
END_TEST

START_TEST(select_frame_left_after_return_thread)
{
    run_scenario(1, select_send_op, select_round);
}
END_TEST

/* ---- weft_chan: a receiver frees its buffer and frame at once ------------- */

static void chan_send_op(void *obj)
{
    weft_chan *ch = obj;
    long v = 42;
    EXPECT(weft_chan_send(ch, &v) == 0);
}

static void chan_round(struct helper *h, long i)
{
    static weft_chan *ch;
    if (i == 0)
        ch = weft_chan_new(sizeof(long), 0);
    long *buf = malloc(sizeof *buf); /* the receive buffer: freed at once */
    EXPECT(buf != NULL);
    hand(h, ch);
    EXPECT(weft_chan_recv(ch, buf) == 0 && *buf == 42);
    free(buf);
    if (i == rounds - 1) {
        unsigned n = 0;
        while (atomic_load(&h->served) != rounds)
            relax(&n);
        weft_chan_free(ch);
    }
}

START_TEST(chan_buffer_freed_after_recv_fiber)
{
    run_scenario(0, chan_send_op, chan_round);
}
END_TEST

START_TEST(chan_buffer_freed_after_recv_thread)
{
    run_scenario(1, chan_send_op, chan_round);
}
END_TEST

static Suite *lifetime_suite(void)
{
    Suite *s = suite_create("lifetime");
    TCase *tc = tcase(s, "wg");
    tcase_add_test(tc, wg_freed_after_wait_fiber);
    tcase_add_test(tc, wg_freed_after_wait_thread);
    tc = tcase(s, "sem");
    tcase_add_test(tc, sem_freed_after_wait_fiber);
    tcase_add_test(tc, sem_freed_after_wait_thread);
    tc = tcase(s, "mutex");
    tcase_add_test(tc, mutex_freed_by_last_unlocker_fiber);
    tcase_add_test(tc, mutex_freed_by_last_unlocker_thread);
    tc = tcase(s, "mutex_in_flight");
    tcase_add_test(tc, mutex_freed_while_an_unlock_wakes_fiber);
    tcase_add_test(tc, mutex_freed_while_an_unlock_wakes_thread);
    tc = tcase(s, "cond");
    tcase_add_test(tc, cond_box_freed_after_join);
    tcase_add_test(tc, cond_freed_after_wait_fiber);
    tcase_add_test(tc, cond_freed_after_wait_thread);
    tc = tcase(s, "select");
    tcase_add_test(tc, select_frame_left_after_return_fiber);
    tcase_add_test(tc, select_frame_left_after_return_thread);
    tc = tcase(s, "chan");
    tcase_add_test(tc, chan_buffer_freed_after_recv_fiber);
    tcase_add_test(tc, chan_buffer_freed_after_recv_thread);
    return s;
}

int main(void)
{
    return run_suite(lifetime_suite());
}
