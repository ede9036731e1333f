/*
 * weft_mutex, weft_cond, weft_wg, weft_sem: exact counts under contention
 * on all workers, hand-off (no waiter starves), timeouts, plain threads
 * on either side, static initialisers, and every error case. Every test
 * runs in Check's forked child; fiber-side checks use EXPECT. Sizes scale
 * with WEFT_TEST_SCALE; the suite must pass with WEFT_DEBUG_MIGRATE=1.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "sync_test.h"

#define NFIBERS 64

/* ---- mutex --------------------------------------------------------------- */

static weft_mutex counter_lock = WEFT_MUTEX_INIT;
static long counter;
static long per_fiber;

static void *increment(void *arg)
{
    (void)arg;
    for (long i = 0; i < per_fiber; i++) {
        if (i % 7 == 0 && weft_mutex_trylock(&counter_lock) == 0) {
            counter++;
            weft_mutex_unlock(&counter_lock);
            continue;
        }
        weft_mutex_lock(&counter_lock);
        long v = counter;
        if (i % 64 == 0)
            weft_yield(); /* hold it across a switch now and then */
        counter = v + 1;
        weft_mutex_unlock(&counter_lock);
    }
    return NULL;
}

static void counter_main(void *arg)
{
    (void)arg;
    weft_fiber *f[NFIBERS];
    for (int i = 0; i < NFIBERS; i++)
        f[i] = spawn(increment, NULL);
    for (int i = 0; i < NFIBERS; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
    EXPECT(counter == NFIBERS * per_fiber);
}

START_TEST(mutex_exact_count)
{
    per_fiber = sized(10000);
    run(0, counter_main, NULL);
    ck_assert_int_eq(counter, NFIBERS * per_fiber);
}
END_TEST

/* Fibers and plain threads on one mutex; the main fiber waits for the
 * threads through a wait group they finish from outside the runtime. */
static weft_wg threads_done = WEFT_WG_INIT;

static void *thread_increment(void *arg)
{
    increment(arg);
    weft_wg_done(&threads_done);
    return NULL;
}

static void mixed_main(void *arg)
{
    (void)arg;
    pthread_t th[4];
    weft_fiber *f[16];
    weft_wg_add(&threads_done, 4);
    for (int i = 0; i < 4; i++)
        EXPECT(pthread_create(&th[i], NULL, thread_increment, NULL) == 0);
    for (int i = 0; i < 16; i++)
        f[i] = spawn(increment, NULL);
    for (int i = 0; i < 16; i++)
        weft_join(f[i], NULL);
    weft_wg_wait(&threads_done);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL); /* they have finished: returns at once */
    EXPECT(counter == 20 * per_fiber);
}

START_TEST(mutex_fibers_and_threads)
{
    per_fiber = sized(5000);
    run(2, mixed_main, NULL);
}
END_TEST

/* Without any runtime: two plain threads and the static initialiser. */
START_TEST(mutex_plain_threads_no_runtime)
{
    per_fiber = sized(20000);
    pthread_t a, b;
    ck_assert_int_eq(pthread_create(&a, NULL, increment, NULL), 0);
    ck_assert_int_eq(pthread_create(&b, NULL, increment, NULL), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    ck_assert_int_eq(counter, 2 * per_fiber);
}
END_TEST

/* Two plain threads hammering the mutex (threads, so that they cannot
 * starve the fibers' worker of CPU) cannot keep a waiting fiber out for
 * long: after a millisecond of waiting it gets the mutex handed over. */
static _Atomic int waiter_got;

static void *hog(void *arg)
{
    weft_mutex *m = arg;
    uint64_t end = weft_now() + 5000000000ull;
    while (!atomic_load(&waiter_got) && weft_now() < end) {
        weft_mutex_lock(m);
        for (volatile int i = 0; i < 200; i++)
            ;
        weft_mutex_unlock(m);
    }
    return NULL;
}

static void *late_waiter(void *arg)
{
    weft_mutex *m = arg;
    weft_mutex_lock(m);
    atomic_store(&waiter_got, 1);
    weft_mutex_unlock(m);
    return NULL;
}

static void handoff_main(void *arg)
{
    (void)arg;
    weft_mutex m;
    weft_mutex_init(&m);
    pthread_t h[2];
    for (int i = 0; i < 2; i++)
        EXPECT(pthread_create(&h[i], NULL, hog, &m) == 0);
    weft_sleep(2000000);
    for (int round = 0; round < 20; round++) {
        atomic_store(&waiter_got, 0);
        uint64_t t0 = weft_now();
        weft_join(spawn(late_waiter, &m), NULL);
        EXPECT(weft_now() - t0 < 1000000000ull);
    }
    atomic_store(&waiter_got, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(h[i], NULL);
}

START_TEST(mutex_waiter_does_not_starve)
{
    run(1, handoff_main, NULL);
}
END_TEST

/* Fibers hammering the mutex on every worker, more of them than workers
 * (so that some are always queued and unlocks have somebody to wake),
 * with nothing between two critical sections: a late waiter, fiber or
 * plain thread, still gets the mutex within a bound, and every increment
 * is counted exactly. The hogs never yield; they switch only when they
 * park on the mutex, so a waiter woken onto a hog's worker runs only
 * once that hog parks: unlocks must not wait for it forever (with
 * WEFT_DEBUG_MIGRATE=1 it sits in an inbox, which nothing else moves). */
#define HOGS 4

struct hammer {
    weft_mutex  m;
    long        count;   /* under m */
    _Atomic int stop;
    weft_wg     thread_done;
};

static struct hammer ham;

static void *hammer_hog(void *arg)
{
    (void)arg;
    long n = 0;
    while (!atomic_load(&ham.stop)) {
        weft_mutex_lock(&ham.m);
        ham.count++;
        weft_mutex_unlock(&ham.m);
        n++;
    }
    return (void *)(intptr_t)n;
}

static void *hammer_late(void *arg)
{
    (void)arg;
    weft_mutex_lock(&ham.m);
    ham.count++;
    weft_mutex_unlock(&ham.m);
    return NULL;
}

static void *hammer_late_thread(void *arg)
{
    hammer_late(arg);
    weft_wg_done(&ham.thread_done);
    return NULL;
}

static void hammer_main(void *arg)
{
    (void)arg;
    weft_fiber *hog[HOGS];
    for (int i = 0; i < HOGS; i++)
        hog[i] = spawn(hammer_hog, NULL);
    /* Until the hogs are under way (they have to let us run: each parks
     * whenever it loses the mutex). */
    for (long seen = 0; seen < 1000;) {
        weft_mutex_lock(&ham.m);
        seen = ham.count;
        weft_mutex_unlock(&ham.m);
        weft_yield();
    }
    long rounds = sized(20) < 4 ? 4 : sized(20), late = 0;
    for (long round = 0; round < rounds; round++) {
        uint64_t t0 = weft_now();
        if (round % 2 == 0) {
            weft_join(spawn(hammer_late, NULL), NULL);
        } else {
            pthread_t th;
            weft_wg_add(&ham.thread_done, 1);
            EXPECT(pthread_create(&th, NULL, hammer_late_thread, NULL) == 0);
            weft_wg_wait(&ham.thread_done);
            pthread_join(th, NULL); /* it has finished: returns at once */
        }
        late++;
        EXPECT(weft_now() - t0 < 1000000000ull);
    }
    atomic_store(&ham.stop, 1);
    long total = late;
    for (int i = 0; i < HOGS; i++) {
        void *n;
        EXPECT(weft_join(hog[i], &n) == 0);
        total += (long)(intptr_t)n;
    }
    EXPECT(ham.count == total);
}

START_TEST(mutex_late_waiter_among_fiber_hogs)
{
    weft_mutex_init(&ham.m);
    weft_wg_init(&ham.thread_done);
    run(2, hammer_main, NULL);
}
END_TEST

static void *unlock_it(void *arg)
{
    weft_mutex_unlock(arg);
    return NULL;
}

static void trylock_main(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    EXPECT(weft_mutex_trylock(&m) == 0);
    EXPECT(weft_mutex_trylock(&m) == -EBUSY);
    /* Unlocked by another fiber than the one that locked it. */
    weft_join(spawn(unlock_it, &m), NULL);
    EXPECT(weft_mutex_trylock(&m) == 0);
    weft_mutex_unlock(&m);
}

START_TEST(mutex_trylock_busy)
{
    run(2, trylock_main, NULL);
}
END_TEST

/* ---- condition variable ----------------------------------------------- */

struct box {
    weft_mutex m;
    weft_cond  c;
    long       value;
    long       taken;
    int        waiting;
};

static void *cond_consumer(void *arg)
{
    struct box *b = arg;
    long n = per_fiber;
    for (long i = 0; i < n; i++) {
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

static void cond_main(void *arg)
{
    (void)arg;
    struct box b = { WEFT_MUTEX_INIT, WEFT_COND_INIT, 0, 0, 0 };
    weft_fiber *f[8];
    for (int i = 0; i < 8; i++)
        f[i] = spawn(cond_consumer, &b);
    for (long i = 0; i < 8 * per_fiber; i++) {
        weft_mutex_lock(&b.m);
        while (b.value >= 4)
            weft_cond_wait(&b.c, &b.m);
        b.value++;
        weft_cond_signal(&b.c);
        weft_mutex_unlock(&b.m);
    }
    for (int i = 0; i < 8; i++)
        weft_join(f[i], NULL);
    EXPECT(b.taken == 8 * per_fiber);
    EXPECT(b.value == 0);
}

START_TEST(cond_producer_consumers)
{
    per_fiber = sized(5000);
    run(0, cond_main, NULL);
}
END_TEST

static void *cond_wait_once(void *arg)
{
    struct box *b = arg;
    weft_mutex_lock(&b->m);
    b->waiting++;
    while (b->value == 0)
        weft_cond_wait(&b->c, &b->m);
    b->taken++;
    weft_mutex_unlock(&b->m);
    return NULL;
}

static void broadcast_main(void *arg)
{
    (void)arg;
    struct box b = { WEFT_MUTEX_INIT, WEFT_COND_INIT, 0, 0, 0 };
    weft_fiber *f[NFIBERS];
    for (int i = 0; i < NFIBERS; i++)
        f[i] = spawn(cond_wait_once, &b);
    for (;;) { /* until all wait (a yield loop: they need the mutex) */
        weft_mutex_lock(&b.m);
        int all = b.waiting == NFIBERS;
        weft_mutex_unlock(&b.m);
        if (all)
            break;
        weft_yield();
    }
    weft_mutex_lock(&b.m);
    b.value = 1;
    weft_cond_broadcast(&b.c);
    weft_mutex_unlock(&b.m);
    for (int i = 0; i < NFIBERS; i++)
        weft_join(f[i], NULL);
    EXPECT(b.taken == NFIBERS);
}

START_TEST(cond_broadcast_wakes_all)
{
    run(0, broadcast_main, NULL);
}
END_TEST

static void *signal_later(void *arg)
{
    struct box *b = arg;
    weft_mutex_lock(&b->m);
    b->value = 1;
    weft_cond_signal(&b->c);
    weft_mutex_unlock(&b->m);
    return NULL;
}

static void timedwait_main(void *arg)
{
    (void)arg;
    struct box b = { WEFT_MUTEX_INIT, WEFT_COND_INIT, 0, 0, 0 };
    weft_mutex_lock(&b.m);
    uint64_t t0 = weft_now();
    EXPECT(weft_cond_timedwait(&b.c, &b.m, 20000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 20000000);
    EXPECT(weft_mutex_trylock(&b.m) == -EBUSY); /* reacquired */
    EXPECT(weft_cond_timedwait(&b.c, &b.m, 0) == -ETIMEDOUT);
    /* Signalled well before a long deadline, many times over: each wait
     * disarms its timer (on the worker that armed it) before returning. */
    long n = sized(2000);
    for (long i = 0; i < n; i++) {
        b.value = 0;
        weft_fiber *f = spawn(signal_later, &b);
        int rc = 0;
        while (b.value == 0 && rc == 0)
            rc = weft_cond_timedwait(&b.c, &b.m, 10000000000ll);
        EXPECT(rc == 0);
        weft_mutex_unlock(&b.m);
        weft_join(f, NULL);
        weft_mutex_lock(&b.m);
    }
    weft_mutex_unlock(&b.m);
}

START_TEST(cond_timedwait)
{
    run(2, timedwait_main, NULL);
}
END_TEST

/* A plain thread waits on a condition a fiber signals, and times out. */
static void *thread_cond(void *arg)
{
    struct box *b = arg;
    weft_mutex_lock(&b->m);
    EXPECT(weft_cond_timedwait(&b->c, &b->m, 5000000) == -ETIMEDOUT);
    b->waiting = 1;
    while (b->value == 0)
        weft_cond_wait(&b->c, &b->m);
    weft_mutex_unlock(&b->m);
    return NULL;
}

static void thread_cond_main(void *arg)
{
    struct box *b = arg;
    for (;;) {
        weft_mutex_lock(&b->m);
        int ready = b->waiting;
        if (ready) {
            b->value = 1;
            weft_cond_signal(&b->c);
        }
        weft_mutex_unlock(&b->m);
        if (ready)
            break;
        weft_sleep(100000); /* polling a flag, not synchronising */
    }
}

START_TEST(cond_plain_thread)
{
    struct box b = { WEFT_MUTEX_INIT, WEFT_COND_INIT, 0, 0, 0 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_cond, &b), 0);
    run(1, thread_cond_main, &b);
    pthread_join(th, NULL);
    CHECK_EXPECTATIONS();
}
END_TEST

/* ---- wait group --------------------------------------------------------- */

static _Atomic long wg_sum;

static void *wg_worker(void *arg)
{
    weft_wg *wg = arg;
    for (int i = 0; i < 100; i++)
        atomic_fetch_add(&wg_sum, 1);
    if (weft_fiber_id(weft_self()) % 2)
        weft_yield();
    weft_wg_done(wg);
    return NULL;
}

static void wg_main(void *arg)
{
    (void)arg;
    weft_wg wg;
    weft_wg_init(&wg);
    weft_wg_wait(&wg); /* zero: returns at once */
    long rounds = sized(200);
    for (long r = 0; r < rounds; r++) {
        atomic_store(&wg_sum, 0);
        weft_wg_add(&wg, NFIBERS);
        for (int i = 0; i < NFIBERS; i++) {
            weft_fiber *f = spawn(wg_worker, &wg);
            weft_detach(f);
        }
        weft_wg_wait(&wg);
        EXPECT(atomic_load(&wg_sum) == NFIBERS * 100);
    }
    weft_wg_add(&wg, 0);
    weft_wg_wait(&wg);
}

START_TEST(wg_waits_for_all)
{
    run(0, wg_main, NULL);
}
END_TEST

/* Plain threads wait on a group the fibers finish. */
static weft_wg thread_wg = WEFT_WG_INIT;
static _Atomic int thread_waiters_out;

static void *thread_wg_wait(void *arg)
{
    (void)arg;
    weft_wg_wait(&thread_wg);
    EXPECT(atomic_load(&wg_sum) == NFIBERS * 100);
    atomic_fetch_add(&thread_waiters_out, 1);
    return NULL;
}

static void thread_wg_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < NFIBERS; i++)
        weft_detach(spawn(wg_worker, &thread_wg));
}

START_TEST(wg_plain_thread_waiters)
{
    pthread_t th[3];
    weft_wg_add(&thread_wg, NFIBERS);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_wg_wait, NULL), 0);
    run(2, thread_wg_main, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&thread_waiters_out), 3);
    CHECK_EXPECTATIONS();
}
END_TEST

START_TEST(wg_negative_aborts)
{
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_add(&wg, 1);
    weft_wg_done(&wg);
    weft_wg_done(&wg);
}
END_TEST

/* ---- semaphore ---------------------------------------------------------- */

static weft_sem slots = WEFT_SEM_INIT(3);
static _Atomic int inside, max_inside;

static void *sem_user(void *arg)
{
    (void)arg;
    for (long i = 0; i < per_fiber; i++) {
        weft_sem_wait(&slots);
        int n = atomic_fetch_add(&inside, 1) + 1;
        int m = atomic_load(&max_inside);
        while (n > m && !atomic_compare_exchange_weak(&max_inside, &m, n))
            ;
        if (i % 4 == 0)
            weft_yield();
        atomic_fetch_sub(&inside, 1);
        weft_sem_post(&slots);
    }
    return NULL;
}

static void sem_main(void *arg)
{
    (void)arg;
    weft_fiber *f[NFIBERS];
    for (int i = 0; i < NFIBERS; i++)
        f[i] = spawn(sem_user, NULL);
    for (int i = 0; i < NFIBERS; i++)
        weft_join(f[i], NULL);
    EXPECT(atomic_load(&max_inside) <= 3);
    EXPECT(atomic_load(&max_inside) >= 1);
    /* All three units are back. */
    for (int i = 0; i < 3; i++)
        EXPECT(weft_sem_timedwait(&slots, 0) == 0);
    EXPECT(weft_sem_timedwait(&slots, 0) == -ETIMEDOUT);
}

START_TEST(sem_bounds_concurrency)
{
    per_fiber = sized(1000);
    run(0, sem_main, NULL);
}
END_TEST

struct order {
    weft_sem  sem;
    weft_mutex m;
    int       next;
    int       seen[8];
    int       nseen;
};

static struct order ord;

static void *sem_in_order(void *arg)
{
    int me = (int)(intptr_t)arg;
    weft_sem_wait(&ord.sem);
    weft_mutex_lock(&ord.m);
    ord.seen[ord.nseen++] = me;
    weft_mutex_unlock(&ord.m);
    return NULL;
}

static void sem_fifo_main(void *arg)
{
    (void)arg;
    weft_sem_init(&ord.sem, 0);
    weft_mutex_init(&ord.m);
    weft_fiber *f[8];
    /* One at a time, each parked before the next starts: the queue order
     * is the spawn order. */
    for (int i = 0; i < 8; i++) {
        f[i] = spawn(sem_in_order, (void *)(intptr_t)i);
        weft_yield(); /* one worker: it runs to its wait before we resume */
    }
    for (int i = 0; i < 8; i++) {
        weft_sem_post(&ord.sem); /* goes to the oldest waiter ... */
        weft_yield();            /* ... which runs before the next post */
    }
    for (int i = 0; i < 8; i++)
        weft_join(f[i], NULL);
    EXPECT(ord.nseen == 8);
    for (int i = 0; i < 8; i++)
        EXPECT(ord.seen[i] == i);
}

START_TEST(sem_fifo)
{
    run(1, sem_fifo_main, NULL);
}
END_TEST

static void *post_later(void *arg)
{
    weft_sleep(2000000);
    weft_sem_post(arg);
    return NULL;
}

static void sem_timeout_main(void *arg)
{
    (void)arg;
    weft_sem s;
    weft_sem_init(&s, 0);
    uint64_t t0 = weft_now();
    EXPECT(weft_sem_timedwait(&s, 10000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 10000000);
    EXPECT(weft_sem_timedwait(&s, 0) == -ETIMEDOUT);
    weft_fiber *f = spawn(post_later, &s);
    EXPECT(weft_sem_timedwait(&s, 10000000000ll) == 0);
    weft_join(f, NULL);
    f = spawn(post_later, &s);
    weft_sem_wait(&s);
    weft_join(f, NULL);
}

START_TEST(sem_timedwait)
{
    run(2, sem_timeout_main, NULL);
}
END_TEST

/* A plain thread waits (and times out) on a semaphore fibers post. */
static weft_sem thread_sem = WEFT_SEM_INIT(0);

static void *thread_sem_wait(void *arg)
{
    (void)arg;
    for (int i = 0; i < NFIBERS; i++)
        weft_sem_wait(&thread_sem);
    return NULL;
}

static void *poster(void *arg)
{
    (void)arg;
    weft_sem_post(&thread_sem);
    return NULL;
}

static void thread_sem_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < NFIBERS; i++)
        weft_detach(spawn(poster, NULL));
}

START_TEST(sem_plain_thread)
{
    pthread_t th;
    uint64_t t0 = weft_now();
    ck_assert_int_eq(weft_sem_timedwait(&thread_sem, 2000000), -ETIMEDOUT);
    ck_assert_uint_ge(weft_now() - t0, 2000000);
    ck_assert_int_eq(pthread_create(&th, NULL, thread_sem_wait, NULL), 0);
    run(2, thread_sem_main, NULL);
    pthread_join(th, NULL);
    CHECK_EXPECTATIONS();
}
END_TEST

/* Misuse the calls can detect comes back as an error and changes
 * nothing (the contract's Conventions). Outside a run: plain thread. */
START_TEST(misuse_errors)
{
    ck_assert_int_eq(weft_mutex_trylock(NULL), -EINVAL);
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_cond c = WEFT_COND_INIT;
    ck_assert_int_eq(weft_cond_timedwait(NULL, &m, 0), -EINVAL);
    ck_assert_int_eq(weft_cond_timedwait(&c, NULL, 0), -EINVAL);
    /* m not locked: refused at once, and m is not left locked. */
    ck_assert_int_eq(weft_cond_timedwait(&c, &m, -1), -EPERM);
    ck_assert_int_eq(weft_mutex_trylock(&m), 0);
    ck_assert_int_eq(weft_cond_timedwait(&c, &m, 0), -ETIMEDOUT);
    ck_assert_int_eq(weft_mutex_trylock(&m), -EBUSY); /* reacquired */
    weft_mutex_unlock(&m);
    ck_assert_int_eq(weft_sem_timedwait(NULL, 0), -EINVAL);
}
END_TEST

static Suite *sync_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase(s, "mutex");
    tcase_add_test(tc, misuse_errors);
    tcase_add_test(tc, mutex_exact_count);
    tcase_add_test(tc, mutex_fibers_and_threads);
    tcase_add_test(tc, mutex_plain_threads_no_runtime);
    tcase_add_test(tc, mutex_waiter_does_not_starve);
    tcase_add_test(tc, mutex_late_waiter_among_fiber_hogs);
    tcase_add_test(tc, mutex_trylock_busy);
    tc = tcase(s, "cond");
    tcase_add_test(tc, cond_producer_consumers);
    tcase_add_test(tc, cond_broadcast_wakes_all);
    tcase_add_test(tc, cond_timedwait);
    tcase_add_test(tc, cond_plain_thread);
    tc = tcase(s, "wg");
    tcase_add_test(tc, wg_waits_for_all);
    tcase_add_test(tc, wg_plain_thread_waiters);
    tcase_add_test_raise_signal(tc, wg_negative_aborts, SIGABRT);
    tc = tcase(s, "sem");
    tcase_add_test(tc, sem_bounds_concurrency);
    tcase_add_test(tc, sem_fifo);
    tcase_add_test(tc, sem_timedwait);
    tcase_add_test(tc, sem_plain_thread);
    return s;
}

int main(void)
{
    return run_suite(sync_suite());
}
