/*
 * Channels and weft_select: buffered and unbuffered semantics, MPMC with
 * exact sums and per-sender order, close with waiters on both sides,
 * timeouts, every element-size class of the copy with every send and
 * receive variant, stale select waiters at a queue's head, select
 * fairness and readiness rules, plain threads on either end, and every
 * error case. Sizes scale with WEFT_TEST_SCALE; the suite must pass
 * with WEFT_DEBUG_MIGRATE=1.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "sync_test.h"

/* ---- basics ------------------------------------------------------------ */

START_TEST(buffered_basics_no_runtime)
{
    /* Try variants need no runtime at all. */
    weft_chan *ch = weft_chan_new(sizeof(int), 4);
    ck_assert_ptr_nonnull(ch);
    int v;
    ck_assert_int_eq(weft_chan_try_recv(ch, &v), -EAGAIN);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(weft_chan_try_send(ch, &i), 0);
    ck_assert_int_eq(weft_chan_try_send(ch, &v), -EAGAIN);
    ck_assert_uint_eq(weft_chan_len(ch), 4);
    ck_assert_int_eq(weft_chan_recv(ch, &v), 0);
    ck_assert_int_eq(v, 0);
    int x = 4;
    ck_assert_int_eq(weft_chan_send(ch, &x), 0); /* wraps around */
    for (int i = 1; i <= 4; i++) {
        ck_assert_int_eq(weft_chan_try_recv(ch, &v), 0);
        ck_assert_int_eq(v, i);
    }
    ck_assert_uint_eq(weft_chan_len(ch), 0);
    ck_assert_int_eq(weft_chan_recv_timeout(ch, &v, 0), -ETIMEDOUT);
    x = 7;
    ck_assert_int_eq(weft_chan_send_timeout(ch, &x, 0), 0);
    weft_chan_close(ch);
    weft_chan_close(ch); /* idempotent */
    ck_assert_int_eq(weft_chan_try_send(ch, &x), -EPIPE);
    ck_assert_int_eq(weft_chan_send(ch, &x), -EPIPE);
    ck_assert_int_eq(weft_chan_recv(ch, &v), 0); /* drains first */
    ck_assert_int_eq(v, 7);
    ck_assert_int_eq(weft_chan_recv(ch, &v), -EPIPE);
    ck_assert_int_eq(weft_chan_try_recv(ch, &v), -EPIPE);
    ck_assert_int_eq(weft_chan_recv_timeout(ch, &v, 1000), -EPIPE);
    weft_chan_free(ch);
}
END_TEST

START_TEST(errors)
{
    int v = 0;
    ck_assert_int_eq(weft_chan_send(NULL, &v), -EINVAL);
    ck_assert_int_eq(weft_chan_recv(NULL, &v), -EINVAL);
    ck_assert_int_eq(weft_chan_try_send(NULL, &v), -EINVAL);
    ck_assert_int_eq(weft_chan_try_recv(NULL, &v), -EINVAL);
    ck_assert_int_eq(weft_chan_send_timeout(NULL, &v, 0), -EINVAL);
    ck_assert_int_eq(weft_chan_recv_timeout(NULL, &v, 0), -EINVAL);
    ck_assert_uint_eq(weft_chan_len(NULL), 0);
    weft_chan_close(NULL);
    weft_chan_free(NULL);
    errno = 0;
    ck_assert_ptr_null(weft_chan_new(SIZE_MAX / 2, 4));
    ck_assert_int_eq(errno, EINVAL);
    weft_chan *ch = weft_chan_new(sizeof v, 1);
    weft_select_case bad = { ch, 3, &v, 0 };
    ck_assert_int_eq(weft_select(&bad, 1, 0), -EINVAL);
    ck_assert_int_eq(weft_select(NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(weft_select(NULL, 0, 0), -ETIMEDOUT);
    /* Nothing to wait for but the timeout (no cases, or only NULL
     * channels): it waits it out, then -ETIMEDOUT. */
    uint64_t t0 = weft_now();
    ck_assert_int_eq(weft_select(NULL, 0, 2000000), -ETIMEDOUT);
    ck_assert_uint_ge(weft_now() - t0, 2000000);
    weft_select_case nils[2] = { { NULL, WEFT_RECV, &v, 0 }, { NULL, WEFT_SEND, &v, 0 } };
    t0 = weft_now();
    ck_assert_int_eq(weft_select(nils, 2, 2000000), -ETIMEDOUT);
    ck_assert_uint_ge(weft_now() - t0, 2000000);
    /* An unbuffered channel with nobody on the other side. */
    weft_chan *u = weft_chan_new(sizeof v, 0);
    ck_assert_int_eq(weft_chan_try_send(u, &v), -EAGAIN);
    ck_assert_int_eq(weft_chan_try_recv(u, &v), -EAGAIN);
    ck_assert_int_eq(weft_chan_send_timeout(u, &v, 1000000), -ETIMEDOUT);
    weft_chan_free(u);
    weft_chan_free(ch);
    /* Zero-size elements: pure signals. */
    weft_chan *sig = weft_chan_new(0, 2);
    ck_assert_int_eq(weft_chan_try_send(sig, NULL), 0);
    ck_assert_uint_eq(weft_chan_len(sig), 1);
    ck_assert_int_eq(weft_chan_try_recv(sig, NULL), 0);
    weft_chan_free(sig);
}
END_TEST

/* ---- rendezvous -------------------------------------------------------- */

static _Atomic int sent;

static void *send_one(void *arg)
{
    int v = 42;
    EXPECT(weft_chan_send(arg, &v) == 0);
    atomic_store(&sent, 1);
    return NULL;
}

static void rendezvous_main(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_new(sizeof(int), 0);
    weft_fiber *f = spawn(send_one, ch);
    for (int i = 0; i < 100; i++) {
        weft_yield();
        EXPECT(!atomic_load(&sent)); /* nobody received yet */
    }
    int v = 0;
    EXPECT(weft_chan_recv(ch, &v) == 0);
    EXPECT(v == 42);
    weft_join(f, NULL);
    EXPECT(atomic_load(&sent));
    weft_chan_free(ch);
}

START_TEST(unbuffered_rendezvous)
{
    run(2, rendezvous_main, NULL);
}
END_TEST

/* ---- MPMC ----------------------------------------------------------------- */

#define NPROD 8
#define NCONS 8

struct mpmc {
    weft_chan *ch;
    long       per;
    weft_wg    producers;
    _Atomic uint64_t sum;
    _Atomic long     count;
};

static void *producer(void *arg)
{
    struct mpmc *m = arg;
    static _Atomic int next_id;
    uint64_t id = (uint64_t)atomic_fetch_add(&next_id, 1) % NPROD;
    for (long i = 0; i < m->per; i++) {
        uint64_t v = id << 32 | (uint64_t)i;
        EXPECT(weft_chan_send(m->ch, &v) == 0);
    }
    weft_wg_done(&m->producers);
    return NULL;
}

static void *consumer(void *arg)
{
    struct mpmc *m = arg;
    long last[NPROD];
    for (int i = 0; i < NPROD; i++)
        last[i] = -1;
    uint64_t v, sum = 0;
    long n = 0;
    while (weft_chan_recv(m->ch, &v) == 0) {
        unsigned id = (unsigned)(v >> 32);
        long seq = (long)(v & 0xffffffffu);
        EXPECT(id < NPROD);
        EXPECT(seq > last[id % NPROD]); /* per-sender order */
        last[id % NPROD] = seq;
        sum += v & 0xffffffffu;
        n++;
    }
    atomic_fetch_add(&m->sum, sum);
    atomic_fetch_add(&m->count, n);
    return NULL;
}

static void mpmc_main(void *arg)
{
    size_t cap = (size_t)(uintptr_t)arg;
    struct mpmc m;
    m.ch = weft_chan_new(sizeof(uint64_t), cap);
    m.per = sized(20000);
    weft_wg_init(&m.producers);
    atomic_init(&m.sum, 0);
    atomic_init(&m.count, 0);
    weft_wg_add(&m.producers, NPROD);
    weft_fiber *c[NCONS];
    for (int i = 0; i < NCONS; i++)
        c[i] = spawn(consumer, &m);
    for (int i = 0; i < NPROD; i++)
        weft_detach(spawn(producer, &m));
    weft_wg_wait(&m.producers);
    weft_chan_close(m.ch);
    for (int i = 0; i < NCONS; i++)
        weft_join(c[i], NULL);
    long per = m.per;
    EXPECT(atomic_load(&m.count) == NPROD * per);
    EXPECT(atomic_load(&m.sum) == (uint64_t)NPROD * (uint64_t)(per * (per - 1) / 2));
    weft_chan_free(m.ch);
}

START_TEST(mpmc_buffered)
{
    run(0, mpmc_main, (void *)(uintptr_t)16);
}
END_TEST

START_TEST(mpmc_unbuffered)
{
    run(0, mpmc_main, (void *)(uintptr_t)0);
}
END_TEST

/* ---- close with waiters ------------------------------------------------ */

static _Atomic int epipe_count;

static void *blocked_recv(void *arg)
{
    int v;
    if (weft_chan_recv(arg, &v) == -EPIPE)
        atomic_fetch_add(&epipe_count, 1);
    return NULL;
}

static void *blocked_send(void *arg)
{
    int v = 1;
    if (weft_chan_send(arg, &v) == -EPIPE)
        atomic_fetch_add(&epipe_count, 1);
    return NULL;
}

static void *blocked_select(void *arg)
{
    weft_chan **ch = arg;
    int a, b = 5;
    weft_select_case cs[2] = { { ch[0], WEFT_RECV, &a, 0 }, { ch[1], WEFT_SEND, &b, 0 } };
    int i = weft_select(cs, 2, -1);
    if (i >= 0 && cs[i].result == -EPIPE)
        atomic_fetch_add(&epipe_count, 1);
    return NULL;
}

static void close_main(void *arg)
{
    (void)arg;
    weft_chan *empty = weft_chan_new(sizeof(int), 0);
    weft_chan *full = weft_chan_new(sizeof(int), 1);
    int one = 1;
    EXPECT(weft_chan_send(full, &one) == 0);
    weft_chan *both[2] = { empty, full };
    weft_fiber *f[25];
    for (int i = 0; i < 8; i++)
        f[i] = spawn(blocked_recv, empty);
    for (int i = 8; i < 16; i++)
        f[i] = spawn(blocked_send, empty);
    for (int i = 16; i < 24; i++)
        f[i] = spawn(blocked_send, full);
    f[24] = spawn(blocked_select, both);
    /* Give them time to queue, so that the close finds waiters (the
     * checks below hold whenever each fiber gets there). */
    weft_sleep(20000000);
    weft_chan_close(empty);
    weft_chan_close(full);
    for (int i = 0; i < 25; i++)
        weft_join(f[i], NULL);
    /* On `empty`, the 8 receivers, 8 senders and the select may have met
     * in pairs (a pair sees no -EPIPE, and at most 8 pairs form: one side
     * is always a sender); everything else got -EPIPE, so 25 - 2k. */
    int n = atomic_load(&epipe_count);
    EXPECT(n >= 9 && n <= 25 && (n - 9) % 2 == 0);
    int v = 0;
    EXPECT(weft_chan_recv(full, &v) == 0 && v == 1); /* still drains */
    EXPECT(weft_chan_recv(full, &v) == -EPIPE);
    weft_chan_free(empty);
    weft_chan_free(full);
}

START_TEST(close_wakes_waiters)
{
    run(0, close_main, NULL);
}
END_TEST

/* ---- timeouts ----------------------------------------------------------- */

static void *send_after(void *arg)
{
    weft_sleep(2000000);
    int v = 9;
    EXPECT(weft_chan_send(arg, &v) == 0);
    return NULL;
}

static void *recv_many(void *arg)
{
    long n = sized(2000);
    for (long i = 0; i < n; i++) {
        long v;
        EXPECT(weft_chan_recv_timeout(arg, &v, 10000000000ll) == 0);
        EXPECT(v == i);
    }
    return NULL;
}

static void timeout_main(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_new(sizeof(int), 0);
    int v = 0;
    uint64_t t0 = weft_now();
    EXPECT(weft_chan_recv_timeout(ch, &v, 10000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 10000000);
    t0 = weft_now();
    EXPECT(weft_chan_send_timeout(ch, &v, 5000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 5000000);
    EXPECT(weft_chan_recv_timeout(ch, &v, 0) == -ETIMEDOUT);
    weft_fiber *f = spawn(send_after, ch);
    EXPECT(weft_chan_recv_timeout(ch, &v, 10000000000ll) == 0 && v == 9);
    weft_join(f, NULL);
    weft_chan_free(ch);
    /* Timed receives satisfied long before their deadline, many times
     * over, on both workers: each disarms its timer. */
    weft_chan *lc = weft_chan_new(sizeof(long), 0);
    f = spawn(recv_many, lc);
    long n = sized(2000);
    for (long i = 0; i < n; i++)
        EXPECT(weft_chan_send(lc, &i) == 0);
    weft_join(f, NULL);
    weft_chan_free(lc);
}

START_TEST(timeouts)
{
    run(2, timeout_main, NULL);
}
END_TEST

/* ---- select ---------------------------------------------------------------- */

static void fairness_main(void *arg)
{
    (void)arg;
    enum { K = 3 };
    weft_chan *ch[K];
    long rounds = 30000;
    long hits[K] = { 0 };
    for (int k = 0; k < K; k++) {
        ch[k] = weft_chan_new(sizeof(int), 4);
        for (int j = 0; j < 4; j++)
            weft_chan_send(ch[k], &j);
    }
    for (long r = 0; r < rounds; r++) {
        int v[K];
        weft_select_case cs[K];
        for (int k = 0; k < K; k++)
            cs[k] = (weft_select_case){ ch[k], WEFT_RECV, &v[k], 0 };
        int i = weft_select(cs, K, 0);
        EXPECT(i >= 0 && i < K);
        if (i < 0)
            break;
        hits[i]++;
        EXPECT(cs[i].result == 0);
        weft_chan_send(ch[i], &v[i]); /* refill: all stay ready */
    }
    /* Expected 10000 each, sd ~82: 9000..11000 is over 12 sd. */
    for (int k = 0; k < K; k++)
        EXPECT(hits[k] > rounds / K - 1000 && hits[k] < rounds / K + 1000);
    for (int k = 0; k < K; k++)
        weft_chan_free(ch[k]);
}

START_TEST(select_fair)
{
    run(1, fairness_main, NULL);
}
END_TEST

static void *select_sender(void *arg)
{
    int v = 77;
    weft_sleep(1000000);
    EXPECT(weft_chan_send(arg, &v) == 0);
    return NULL;
}

static void *select_receiver(void *arg)
{
    int v = 0;
    EXPECT(weft_chan_recv(arg, &v) == 0);
    EXPECT(v == 13);
    return NULL;
}

static void select_main(void *arg)
{
    (void)arg;
    weft_chan *a = weft_chan_new(sizeof(int), 0);
    weft_chan *b = weft_chan_new(sizeof(int), 0);
    weft_chan *closed = weft_chan_new(sizeof(int), 1);
    weft_chan_close(closed);
    int x = 0, y = 0;

    /* Poll with nothing ready; NULL channels never ready. */
    weft_select_case cs[3] = { { a, WEFT_RECV, &x, 0 }, { NULL, WEFT_RECV, &y, 0 },
                               { b, WEFT_SEND, &y, 0 } };
    EXPECT(weft_select(cs, 3, 0) == -ETIMEDOUT);
    uint64_t t0 = weft_now();
    EXPECT(weft_select(cs, 3, 5000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 5000000);
    weft_select_case nul[2] = { { NULL, WEFT_RECV, &x, 0 }, { NULL, WEFT_SEND, &y, 0 } };
    EXPECT(weft_select(nul, 2, 1000000) == -ETIMEDOUT);

    /* Blocking, woken by a sender on the second channel. */
    weft_fiber *f = spawn(select_sender, b);
    weft_select_case rb[2] = { { a, WEFT_RECV, &x, 0 }, { b, WEFT_RECV, &y, 0 } };
    EXPECT(weft_select(rb, 2, -1) == 1);
    EXPECT(rb[1].result == 0 && y == 77);
    weft_join(f, NULL);

    /* A send case completes into a waiting receiver. */
    f = spawn(select_receiver, a);
    int v = 13;
    weft_select_case sa[2] = { { b, WEFT_RECV, &x, 0 }, { a, WEFT_SEND, &v, 0 } };
    EXPECT(weft_select(sa, 2, 10000000000ll) == 1);
    EXPECT(sa[1].result == 0);
    weft_join(f, NULL);

    /* A closed channel is ready, with -EPIPE, on both ops. */
    weft_select_case cl[2] = { { a, WEFT_RECV, &x, 0 }, { closed, WEFT_RECV, &y, 0 } };
    EXPECT(weft_select(cl, 2, 0) == 1 && cl[1].result == -EPIPE);
    cl[1].op = WEFT_SEND;
    EXPECT(weft_select(cl, 2, -1) == 1 && cl[1].result == -EPIPE);

    /* Many cases (the allocated path) and one channel twice. */
    enum { N = 20 };
    weft_chan *buf = weft_chan_new(sizeof(int), 1);
    weft_select_case many[N];
    int vals[N];
    for (int i = 0; i < N; i++)
        many[i] = (weft_select_case){ i == N - 1 ? buf : a, WEFT_RECV, &vals[i], 0 };
    EXPECT(weft_select(many, N, 0) == -ETIMEDOUT);
    v = 5;
    weft_chan_send(buf, &v);
    EXPECT(weft_select(many, N, 0) == N - 1 && vals[N - 1] == 5);
    weft_select_case twice[2] = { { buf, WEFT_SEND, &v, 0 }, { buf, WEFT_RECV, &x, 0 } };
    EXPECT(weft_select(twice, 2, -1) == 0); /* empty: only the send is ready */
    EXPECT(weft_select(twice, 2, -1) == 1 && x == 5); /* full: only the receive */

    /* In a fiber too: no cases, or only NULL channels, wait out the
     * timeout on the worker's timer. */
    t0 = weft_now();
    EXPECT(weft_select(NULL, 0, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);
    weft_select_case nils[2] = { { NULL, WEFT_RECV, &x, 0 }, { NULL, WEFT_SEND, &v, 0 } };
    t0 = weft_now();
    EXPECT(weft_select(nils, 2, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);

    weft_chan_free(buf);
    weft_chan_free(a);
    weft_chan_free(b);
    weft_chan_free(closed);
}

START_TEST(select_rules)
{
    run(2, select_main, NULL);
}
END_TEST

/* Selects on both sides of two unbuffered channels: every value is
 * delivered exactly once. */
static void *select_pump(void *arg)
{
    weft_chan **ch = arg;
    long n = sized(20000), got = 0, sent_n = 0;
    long in = 0, out = 0;
    while (got < n || sent_n < n) {
        weft_select_case cs[2] = { { sent_n < n ? ch[0] : NULL, WEFT_SEND, &out, 0 },
                                   { got < n ? ch[1] : NULL, WEFT_RECV, &in, 0 } };
        int i = weft_select(cs, 2, -1);
        if (i == 0) {
            sent_n++;
            out++;
        } else if (i == 1) {
            EXPECT(in == got);
            got++;
        } else {
            EXPECT(0);
            break;
        }
    }
    return NULL;
}

static void select_pair_main(void *arg)
{
    (void)arg;
    weft_chan *c0 = weft_chan_new(sizeof(long), 0), *c1 = weft_chan_new(sizeof(long), 0);
    weft_chan *p1[2] = { c0, c1 }, *p2[2] = { c1, c0 };
    weft_fiber *a = spawn(select_pump, p1), *b = spawn(select_pump, p2);
    weft_join(a, NULL);
    weft_join(b, NULL);
    weft_chan_free(c0);
    weft_chan_free(c1);
}

START_TEST(select_both_sides)
{
    run(0, select_pair_main, NULL);
}
END_TEST

/* ---- single operations ---------------------------------------------------- */

/* Element sizes around the fixed-size copies (1, 2, 4, 8, 16), odd ones
 * and a large one, each through an unbuffered and a small buffered
 * channel, with every variant of send and receive on both ends. The
 * receive buffer has guard bytes on both sides: a copy of the wrong size
 * shows. */
static const size_t elem_sizes[] = { 1, 2, 3, 4, 8, 16, 100 };
#define ELEM_MAX   100
#define ELEM_GUARD 16

struct sized_pipe {
    weft_chan *ch;
    size_t     size;
    long       n;
};

static unsigned char pattern(long i, size_t k)
{
    return (unsigned char)(i * 31 + (long)k * 7 + 1);
}

/* The i-th send: plain, timed (no real limit), timed with a negative
 * timeout, or try until it goes through. */
static int send_variant(weft_chan *ch, const void *v, long i)
{
    switch (i % 4) {
    case 0:
        return weft_chan_send(ch, v);
    case 1:
        return weft_chan_send_timeout(ch, v, 10000000000ll);
    case 2:
        return weft_chan_send_timeout(ch, v, -1);
    default: {
        int rc;
        while ((rc = weft_chan_try_send(ch, v)) == -EAGAIN)
            weft_yield();
        return rc;
    }
    }
}

/* The i-th receive: a try only where the i-th send blocks (two tries on
 * an unbuffered channel never meet). */
static int recv_variant(weft_chan *ch, void *v, long i)
{
    switch (i % 4) {
    case 0: {
        int rc;
        while ((rc = weft_chan_try_recv(ch, v)) == -EAGAIN)
            weft_yield();
        return rc;
    }
    case 2:
        return weft_chan_recv_timeout(ch, v, 10000000000ll);
    default:
        return weft_chan_recv(ch, v);
    }
}

static void *sized_sender(void *arg)
{
    struct sized_pipe *sp = arg;
    unsigned char v[ELEM_MAX];
    for (long i = 0; i < sp->n; i++) {
        for (size_t k = 0; k < sp->size; k++)
            v[k] = pattern(i, k);
        EXPECT(send_variant(sp->ch, v, i) == 0);
    }
    return NULL;
}

static void elem_sizes_main(void *arg)
{
    (void)arg;
    for (size_t s = 0; s < sizeof elem_sizes / sizeof *elem_sizes; s++) {
        for (size_t cap = 0; cap <= 3; cap += 3) {
            struct sized_pipe sp = { weft_chan_new(elem_sizes[s], cap), elem_sizes[s],
                                     sized(300) };
            weft_fiber *f = spawn(sized_sender, &sp);
            unsigned char buf[ELEM_GUARD + ELEM_MAX + ELEM_GUARD];
            for (long i = 0; i < sp.n; i++) {
                memset(buf, 0xa5, sizeof buf);
                EXPECT(recv_variant(sp.ch, buf + ELEM_GUARD, i) == 0);
                for (size_t k = 0; k < sizeof buf; k++) {
                    int in = k >= ELEM_GUARD && k < ELEM_GUARD + sp.size;
                    EXPECT(buf[k] == (in ? pattern(i, k - ELEM_GUARD) : 0xa5));
                }
                if (i % 7 == 0) /* let the ring fill, so senders queue on it */
                    weft_yield();
            }
            weft_join(f, NULL);
            unsigned char x;
            EXPECT(weft_chan_try_recv(sp.ch, &x) == -EAGAIN);
            weft_chan_free(sp.ch);
        }
    }
}

START_TEST(elem_sizes_all_variants)
{
    run(2, elem_sizes_main, NULL);
}
END_TEST

/* One long through ch, by a fiber: sent, or received and checked. */
struct long_msg {
    weft_chan *ch;
    long       v;
};

static void *send_long(void *arg)
{
    struct long_msg *m = arg;
    EXPECT(weft_chan_send(m->ch, &m->v) == 0);
    return NULL;
}

static void *recv_long(void *arg)
{
    struct long_msg *m = arg;
    long v = 0;
    EXPECT(weft_chan_recv(m->ch, &v) == 0);
    EXPECT(v == m->v);
    return NULL;
}

/* Try variants against a peer that is (or will be) blocked on the other
 * side: they complete the rendezvous, on both kinds of channel. */
static void try_main(void *arg)
{
    (void)arg;
    for (size_t cap = 0; cap <= 2; cap += 2) {
        weft_chan *ch = weft_chan_new(sizeof(long), cap);
        long v = 11, got = 0;
        /* A blocked receiver takes a try_send's value. */
        struct long_msg m = { ch, 11 };
        weft_fiber *f = spawn(recv_long, &m);
        int rc;
        while ((rc = weft_chan_try_send(ch, &v)) == -EAGAIN)
            weft_yield();
        EXPECT(rc == 0);
        weft_join(f, NULL);
        /* A blocked sender hands its value to try_recv. */
        f = spawn(send_long, &m);
        while ((rc = weft_chan_try_recv(ch, &got)) == -EAGAIN)
            weft_yield();
        EXPECT(rc == 0 && got == 11);
        weft_join(f, NULL);
        /* Nobody there: try fails both ways, or fills the ring. */
        EXPECT(weft_chan_try_recv(ch, &got) == -EAGAIN);
        for (size_t i = 0; i < cap; i++)
            EXPECT(weft_chan_try_send(ch, &v) == 0);
        EXPECT(weft_chan_try_send(ch, &v) == -EAGAIN);
        EXPECT(weft_chan_len(ch) == cap);
        /* Closed: -EPIPE for sends; receives drain, then -EPIPE. */
        weft_chan_close(ch);
        EXPECT(weft_chan_try_send(ch, &v) == -EPIPE);
        for (size_t i = 0; i < cap; i++)
            EXPECT(weft_chan_try_recv(ch, &got) == 0 && got == 11);
        EXPECT(weft_chan_try_recv(ch, &got) == -EPIPE);
        weft_chan_free(ch);
    }
}

START_TEST(try_against_blocked_peers)
{
    run(2, try_main, NULL);
}
END_TEST

/* Timed single operations: the limit holds, a timed-out value is never
 * delivered, and no stale waiter is left behind. */
static void *recv_after_yields(void *arg)
{
    for (int i = 0; i < 10; i++)
        weft_yield();
    long v = 0;
    EXPECT(weft_chan_recv_timeout(arg, &v, 10000000000ll) == 0);
    EXPECT(v == 21);
    return NULL;
}

static void single_timeout_main(void *arg)
{
    (void)arg;
    long v = 5, got = 0;
    /* Unbuffered, nobody there. */
    weft_chan *u = weft_chan_new(sizeof(long), 0);
    uint64_t t0 = weft_now();
    EXPECT(weft_chan_send_timeout(u, &v, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);
    EXPECT(weft_chan_try_recv(u, &got) == -EAGAIN); /* the sender is gone */
    t0 = weft_now();
    EXPECT(weft_chan_recv_timeout(u, &got, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);
    EXPECT(weft_chan_try_send(u, &v) == -EAGAIN); /* the receiver is gone */
    /* A timed send completed by a receiver long before its deadline. */
    weft_fiber *f = spawn(recv_after_yields, u);
    v = 21;
    EXPECT(weft_chan_send_timeout(u, &v, 10000000000ll) == 0);
    weft_join(f, NULL);
    weft_chan_free(u);

    /* Buffered: full for sends, empty for receives. */
    weft_chan *b = weft_chan_new(sizeof(long), 2);
    for (long i = 1; i <= 2; i++)
        EXPECT(weft_chan_send_timeout(b, &i, 0) == 0);
    v = 99;
    EXPECT(weft_chan_send_timeout(b, &v, 0) == -ETIMEDOUT);
    t0 = weft_now();
    EXPECT(weft_chan_send_timeout(b, &v, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);
    EXPECT(weft_chan_len(b) == 2);
    for (long i = 1; i <= 2; i++)
        EXPECT(weft_chan_recv_timeout(b, &got, 0) == 0 && got == i); /* 99 never */
    EXPECT(weft_chan_recv_timeout(b, &got, 0) == -ETIMEDOUT);
    t0 = weft_now();
    EXPECT(weft_chan_recv_timeout(b, &got, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);
    EXPECT(weft_chan_try_recv(b, &got) == -EAGAIN);
    weft_chan_close(b);
    EXPECT(weft_chan_send_timeout(b, &v, 1000000) == -EPIPE);
    EXPECT(weft_chan_recv_timeout(b, &got, 1000000) == -EPIPE);
    weft_chan_free(b);
}

START_TEST(single_op_timeouts)
{
    run(2, single_timeout_main, NULL);
}
END_TEST

/* Close while single operations wait, timed and untimed, on both kinds of
 * channel. On one worker a spawned fiber runs until it blocks before the
 * yield returns; the results hold whenever the close lands. */
struct blocked_op {
    weft_chan *ch;
    int        op;
    int64_t    timeout;
    int        rc;
};

static void *blocked_op_run(void *arg)
{
    struct blocked_op *b = arg;
    long v = 77;
    b->rc = b->op == WEFT_SEND ? weft_chan_send_timeout(b->ch, &v, b->timeout)
                               : weft_chan_recv_timeout(b->ch, &v, b->timeout);
    return NULL;
}

static void close_single_main(void *arg)
{
    (void)arg;
    for (int timed = 0; timed < 2; timed++) {
        int64_t timeout = timed ? 10000000000ll : -1;
        weft_chan *ch[4] = { weft_chan_new(sizeof(long), 0), weft_chan_new(sizeof(long), 0),
                             weft_chan_new(sizeof(long), 1), weft_chan_new(sizeof(long), 1) };
        long one = 1;
        EXPECT(weft_chan_send(ch[3], &one) == 0);
        struct blocked_op ops[4] = { { ch[0], WEFT_SEND, timeout, 1 },
                                     { ch[1], WEFT_RECV, timeout, 1 },
                                     { ch[2], WEFT_RECV, timeout, 1 },   /* empty */
                                     { ch[3], WEFT_SEND, timeout, 1 } }; /* full */
        weft_fiber *f[4];
        for (int i = 0; i < 4; i++) {
            f[i] = spawn(blocked_op_run, &ops[i]);
            weft_yield();
        }
        for (int i = 0; i < 4; i++)
            weft_chan_close(ch[i]);
        for (int i = 0; i < 4; i++) {
            weft_join(f[i], NULL);
            EXPECT(ops[i].rc == -EPIPE);
        }
        long v = 0;
        EXPECT(weft_chan_recv(ch[3], &v) == 0 && v == 1); /* 77 was not delivered */
        for (int i = 0; i < 4; i++) {
            EXPECT(weft_chan_recv(ch[i], &v) == -EPIPE);
            weft_chan_free(ch[i]);
        }
    }
}

START_TEST(close_single_ops)
{
    run(1, close_single_main, NULL);
}
END_TEST

/* A queue whose head is a select case that already won elsewhere: single
 * operations skip it and reach the live waiter behind it (or find
 * nobody), and the select keeps the value it won. */
struct stale {
    weft_chan *a, *b;
    long       got_a, got_b;
    int        index;
};

static void *stale_select(void *arg)
{
    struct stale *s = arg;
    weft_select_case cs[2] = { { s->a, WEFT_RECV, &s->got_a, 0 },
                               { s->b, WEFT_RECV, &s->got_b, 0 } };
    s->index = weft_select(cs, 2, -1);
    EXPECT(s->index < 0 || cs[s->index].result == 0);
    return NULL;
}

static void stale_main(void *arg)
{
    (void)arg;
    struct stale s = { weft_chan_new(sizeof(long), 0), weft_chan_new(sizeof(long), 0),
                       0, 0, -1 };
    weft_fiber *fs = spawn(stale_select, &s);
    weft_yield(); /* the select queues on a and b */
    struct long_msg m = { s.b, 32 };
    weft_fiber *fr = spawn(recv_long, &m);
    weft_yield(); /* the receiver queues on b, behind the select */
    long v = 31;
    EXPECT(weft_chan_send(s.a, &v) == 0); /* the select wins on a */
    v = 32;
    EXPECT(weft_chan_send(s.b, &v) == 0); /* to the receiver, not the select */
    EXPECT(weft_chan_try_send(s.b, &v) == -EAGAIN);
    weft_join(fs, NULL);
    weft_join(fr, NULL);
    EXPECT(s.index == 0 && s.got_a == 31 && s.got_b == 0);
    weft_chan_free(s.a);
    weft_chan_free(s.b);
}

START_TEST(stale_select_waiters)
{
    run(1, stale_main, NULL);
}
END_TEST

/* A select with one live case runs as a single operation: the index is
 * that case's, and timeouts and close behave as in any select. */
static void select_one_main(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_new(sizeof(long), 0);
    long v = 0;
    weft_select_case cs[3] = { { NULL, WEFT_SEND, &v, 0 }, { NULL, WEFT_RECV, &v, 0 },
                               { ch, WEFT_RECV, &v, 5 } };
    EXPECT(weft_select(cs, 3, 0) == -ETIMEDOUT);
    uint64_t t0 = weft_now();
    EXPECT(weft_select(cs, 3, 2000000) == -ETIMEDOUT);
    EXPECT(weft_now() - t0 >= 2000000);
    EXPECT(cs[2].result == 5); /* untouched on a timeout */
    struct long_msg m = { ch, 7 };
    weft_fiber *f = spawn(send_long, &m);
    EXPECT(weft_select(cs, 3, -1) == 2);
    EXPECT(cs[2].result == 0 && v == 7);
    weft_join(f, NULL);
    cs[2].op = 3;
    EXPECT(weft_select(cs, 3, 0) == -EINVAL);
    cs[2].op = WEFT_SEND;
    weft_chan_close(ch);
    EXPECT(weft_select(cs, 3, -1) == 2 && cs[2].result == -EPIPE);
    weft_chan_free(ch);
}

START_TEST(select_one_live_case)
{
    run(2, select_one_main, NULL);
}
END_TEST

/* ---- plain threads ------------------------------------------------------ */

struct thread_ends {
    weft_chan *to_fiber, *to_thread;
    long       n;
};

static void *thread_end(void *arg)
{
    struct thread_ends *t = arg;
    for (long i = 0; i < t->n; i++)
        EXPECT(weft_chan_send(t->to_fiber, &i) == 0);
    long v, expect = 0;
    while (weft_chan_recv(t->to_thread, &v) == 0)
        EXPECT(v == expect++);
    EXPECT(expect == t->n);
    /* Select and a timeout from a thread. */
    weft_select_case cs[1] = { { t->to_fiber, WEFT_RECV, &v, 0 } };
    EXPECT(weft_select(cs, 1, 2000000) == -ETIMEDOUT);
    EXPECT(weft_chan_recv_timeout(t->to_fiber, &v, 1000000) == -ETIMEDOUT);
    return NULL;
}

static void thread_ends_main(void *arg)
{
    struct thread_ends *t = arg;
    long v;
    for (long i = 0; i < t->n; i++) {
        EXPECT(weft_chan_recv(t->to_fiber, &v) == 0);
        EXPECT(v == i);
    }
    for (long i = 0; i < t->n; i++)
        EXPECT(weft_chan_send(t->to_thread, &i) == 0);
    weft_chan_close(t->to_thread);
}

START_TEST(plain_thread_ends)
{
    struct thread_ends t = { weft_chan_new(sizeof(long), 0), weft_chan_new(sizeof(long), 3),
                             sized(5000) };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_end, &t), 0);
    run(2, thread_ends_main, &t);
    pthread_join(th, NULL);
    CHECK_EXPECTATIONS();
    weft_chan_free(t.to_fiber);
    weft_chan_free(t.to_thread);
}
END_TEST

static void *thread_send(void *arg)
{
    long v = 3;
    EXPECT(weft_chan_send(arg, &v) == 0);
    return NULL;
}

START_TEST(two_plain_threads)
{
    /* No runtime: a thread sends, this thread receives (rendezvous). */
    weft_chan *ch = weft_chan_new(sizeof(long), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_send, ch), 0);
    long v = 0;
    ck_assert_int_eq(weft_chan_recv(ch, &v), 0);
    ck_assert_int_eq(v, 3);
    pthread_join(th, NULL);
    CHECK_EXPECTATIONS();
    weft_chan_free(ch);
}
END_TEST

/* A plain thread in timed and untimed single operations, completed by a
 * fiber or by a close: the thread's futex wait and its wake-up. */
struct thread_timed {
    weft_chan *data, *closing;
    long       n;
    int        closed_rc;
};

static void *thread_timed_end(void *arg)
{
    struct thread_timed *t = arg;
    for (long i = 0; i < t->n; i++) {
        long v = -1;
        EXPECT(weft_chan_recv_timeout(t->data, &v, 10000000000ll) == 0);
        EXPECT(v == i);
        EXPECT(weft_chan_send_timeout(t->data, &v, 10000000000ll) == 0);
    }
    long v;
    t->closed_rc = weft_chan_recv(t->closing, &v);
    return NULL;
}

static void thread_timed_main(void *arg)
{
    struct thread_timed *t = arg;
    for (long i = 0; i < t->n; i++) {
        long v = i;
        EXPECT(weft_chan_send(t->data, &v) == 0);
        v = -1;
        EXPECT(weft_chan_recv(t->data, &v) == 0);
        EXPECT(v == i);
    }
    weft_chan_close(t->closing);
}

START_TEST(plain_thread_single_ops)
{
    struct thread_timed t = { weft_chan_new(sizeof(long), 0), weft_chan_new(sizeof(long), 0),
                              sized(2000), 1 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_timed_end, &t), 0);
    run(2, thread_timed_main, &t);
    pthread_join(th, NULL);
    CHECK_EXPECTATIONS();
    ck_assert_int_eq(t.closed_rc, -EPIPE);
    weft_chan_free(t.data);
    weft_chan_free(t.closing);
}
END_TEST

/* A NULL element where a value must be copied is refused before the call
 * does anything; an empty element needs no buffer. */
START_TEST(null_elem_is_einval)
{
    weft_chan *ch = weft_chan_new(sizeof(int), 1);
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(weft_chan_send(ch, NULL), -EINVAL);
    ck_assert_int_eq(weft_chan_try_send(ch, NULL), -EINVAL);
    ck_assert_int_eq(weft_chan_send_timeout(ch, NULL, 0), -EINVAL);
    ck_assert_uint_eq(weft_chan_len(ch), 0);
    int v = 5;
    ck_assert_int_eq(weft_chan_send(ch, &v), 0);
    ck_assert_int_eq(weft_chan_recv(ch, NULL), -EINVAL);
    ck_assert_int_eq(weft_chan_try_recv(ch, NULL), -EINVAL);
    ck_assert_int_eq(weft_chan_recv_timeout(ch, NULL, 0), -EINVAL);
    ck_assert_uint_eq(weft_chan_len(ch), 1); /* the value is still there */
    weft_chan *other = weft_chan_new(sizeof(int), 0);
    weft_select_case cs[2] = { { ch, WEFT_RECV, NULL, 0 }, { other, WEFT_RECV, &v, 0 } };
    ck_assert_int_eq(weft_select(cs, 2, 0), -EINVAL);
    ck_assert_uint_eq(weft_chan_len(ch), 1);
    ck_assert_int_eq(weft_chan_recv(ch, &v), 0);
    ck_assert_int_eq(v, 5);
    weft_chan *empty = weft_chan_new(0, 1); /* empty elements: NULL is fine */
    ck_assert_int_eq(weft_chan_try_send(empty, NULL), 0);
    ck_assert_int_eq(weft_chan_try_recv(empty, NULL), 0);
    weft_chan_free(empty);
    weft_chan_free(other);
    weft_chan_free(ch);
}
END_TEST

static Suite *chan_suite(void)
{
    Suite *s = suite_create("chan");
    TCase *tc = tcase(s, "chan");
    tcase_add_test(tc, buffered_basics_no_runtime);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, null_elem_is_einval);
    tcase_add_test(tc, unbuffered_rendezvous);
    tcase_add_test(tc, mpmc_buffered);
    tcase_add_test(tc, mpmc_unbuffered);
    tcase_add_test(tc, close_wakes_waiters);
    tcase_add_test(tc, timeouts);
    tc = tcase(s, "single");
    tcase_add_test(tc, elem_sizes_all_variants);
    tcase_add_test(tc, try_against_blocked_peers);
    tcase_add_test(tc, single_op_timeouts);
    tcase_add_test(tc, close_single_ops);
    tcase_add_test(tc, stale_select_waiters);
    tcase_add_test(tc, select_one_live_case);
    tc = tcase(s, "select");
    tcase_add_test(tc, select_fair);
    tcase_add_test(tc, select_rules);
    tcase_add_test(tc, select_both_sides);
    tc = tcase(s, "threads");
    tcase_add_test(tc, plain_thread_ends);
    tcase_add_test(tc, two_plain_threads);
    tcase_add_test(tc, plain_thread_single_ops);
    return s;
}

int main(void)
{
    return run_suite(chan_suite());
}
