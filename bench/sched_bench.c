/*
 * bench-sched: weft's scaling benchmarks, the same work as the peers in
 * bench/peers/ (Go, Boost.Fiber, TBB, OpenMP) so the figures compare one
 * to one (see "skynet", "fib", "spawn" and "yield" in bench/DEFINITIONS.md).
 * Public API only: this is what a user of libweft would write.
 *
 *   skynet  a root fiber spawns 10 children, each 10 more, down to the
 *           leaves (1,000,000 by default: 1,111,111 fibers); leaf i
 *           returns i, every parent joins its 10 children (newest
 *           first) and returns the sum. -n: leaves (a power of 10).
 *           unit=ms.
 *   fib     naive fib(n) (default 30): every call with n >= 2 spawns one
 *           fiber for fib(n-1), computes fib(n-2) itself, joins the child.
 *           -n: n. unit=ms.
 *   spawn   a root fiber spawns n (1,000,000) empty fibers, then joins
 *           them all. unit=ns per fiber.
 *   yield   two fibers on one worker alternately call weft_yield, n
 *           (10,000,000) switches in total. Always one worker, like the
 *           peers: -w is overridden with a note on stderr. unit=ns per
 *           switch.
 *   chan-pingpong  two fibers pass a token through two unbuffered
 *           channels (ping, pong), n (1,000,000) round trips; run at the
 *           requested workers. unit=ns per round trip.
 *   mutex   64 fibers on all workers increment one counter under one
 *           weft_mutex, n (6,400,000) increments in total (n / 64 each),
 *           as the Go and Boost.Fiber peers do. unit=ns per lock/unlock
 *           pair.
 *
 * Usage: bench-sched <skynet|fib|spawn|yield|chan-pingpong|mutex> [-w N] [-n SIZE]
 *
 * The worker count comes from -w, else from weft_config_init (which reads
 * WEFT_WORKERS, then falls back to one per physical core); the count
 * reported is the one the runtime actually ran with (weft_workers()).
 * Workers are pinned (weft's default, WEFT_PIN=0 turns it off).
 *
 * Timing, as the peers do it: one runtime (one weft_run) serves the
 * warm-up and all 5 measured runs, so starting and stopping the worker
 * threads is never timed. Inside main_fn each run is timed with
 * clock_gettime(CLOCK_MONOTONIC) from before the root fiber (or, for
 * yield, the two fibers) is spawned until after it is joined, like
 * Boost.Fiber's time_root and Go's `go root(); <-done`.
 *
 * Stacks: every fiber gets a 16 KiB stack (the smallest weft allows;
 * none of them goes more than a few frames deep), the size the
 * Boost.Fiber peer gives all of its fibers; Go starts goroutines at 2 KiB
 * and grows them. The size is set as the run's default (cfg.stack_size),
 * not per spawn (weft_spawn_ex's stack_size): weft reuses stacks of the
 * default size only, and maps and unmaps every stack of another size, so
 * per-spawn 16 KiB stacks make skynet 100 to 200 times slower (one mmap,
 * madvise and munmap per fiber).
 *
 * Each run's result is checked (skynet's sum, fib's value, every spawned
 * fiber's return value, and for yield both fibers' counts plus that each
 * yield really switched to the other fiber); a wrong one prints a message
 * on stderr and the program exits 1 without printing a figure. Output on
 * stdout, one line:
 *
 *   bench=<name> impl=weft workers=<N> value=<best> unit=<ms|ns> median=<median>
 *
 * with n=<SIZE> appended when -n changed the size (as the peers do).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#define REPS        5
#define SMALL_STACK (16 * 1024)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* For what cannot be recovered from inside the tree (a spawn or a join
 * that fails): the figures would mean nothing, so stop at once. _exit,
 * because the workers are still running fibers. Any fiber. */
__attribute__((noreturn)) static void die(const char *what, int err)
{
    fprintf(stderr, "bench-sched: %s: %s\n", what, strerror(err));
    _exit(1);
}

static weft_fiber *spawn(weft_fn fn, void *arg)
{
    weft_fiber *f = weft_spawn(fn, arg);
    if (!f)
        die("weft_spawn", errno);
    return f;
}

static void *join(weft_fiber *f)
{
    void *result;
    int rc = weft_join(f, &result);
    if (rc != 0)
        die("weft_join", -rc);
    return result;
}

/* ---- skynet --------------------------------------------------------------- */

/* The leaves num .. num+size-1; lives in the parent's frame, which the
 * parent leaves only after joining the child. */
struct skynet_range {
    long long num, size;
};

static void *skynet(void *arg)
{
    const struct skynet_range *r = arg;
    if (r->size == 1)
        return (void *)(uintptr_t)r->num;
    struct skynet_range parts[10];
    weft_fiber *children[10];
    long long part = r->size / 10;
    for (int i = 0; i < 10; i++) {
        parts[i] = (struct skynet_range){ r->num + i * part, part };
        children[i] = spawn(skynet, &parts[i]);
    }
    /* Newest first: the order in which this worker would run them (its
     * run-next slot, then its deque's bottom), so each join finds its
     * child not started yet and weft_join runs it in place. Joining
     * oldest first gives the same sum but parks on a child that sits
     * under nine others. */
    uintptr_t sum = 0;
    for (int i = 10; i-- > 0;)
        sum += (uintptr_t)join(children[i]);
    return (void *)sum;
}

static int check_skynet_size(long long leaves)
{
    for (long long l = leaves; l > 1; l /= 10)
        if (l % 10 != 0) {
            fprintf(stderr, "bench-sched: skynet size %lld is not a power of 10\n", leaves);
            return -1;
        }
    return 0;
}

static int run_skynet(long long leaves, double *value)
{
    struct skynet_range all = { 0, leaves };
    double t0 = now_ns();
    uintptr_t sum = (uintptr_t)join(spawn(skynet, &all));
    *value = (now_ns() - t0) / 1e6;
    if ((long long)sum != leaves * (leaves - 1) / 2) {
        fprintf(stderr, "bench-sched: skynet sum %llu, want %lld\n",
                (unsigned long long)sum, leaves * (leaves - 1) / 2);
        return -1;
    }
    return 0;
}

/* ---- fib ------------------------------------------------------------------ */

static void *fib(void *arg)
{
    intptr_t n = (intptr_t)arg;
    if (n < 2)
        return (void *)n;
    weft_fiber *child = spawn(fib, (void *)(n - 1));
    intptr_t b = (intptr_t)fib((void *)(n - 2));
    return (void *)((intptr_t)join(child) + b);
}

static long long fib_serial(long long n)
{
    long long a = 0, b = 1;
    for (long long i = 0; i < n; i++) {
        long long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

static int run_fib(long long n, double *value)
{
    if (n > 90) {
        fprintf(stderr, "bench-sched: fib(%lld) does not fit in 64 bits\n", n);
        return -1;
    }
    double t0 = now_ns();
    intptr_t r = (intptr_t)join(spawn(fib, (void *)(intptr_t)n));
    *value = (now_ns() - t0) / 1e6;
    if (r != fib_serial(n)) {
        fprintf(stderr, "bench-sched: fib(%lld) = %lld, want %lld\n",
                n, (long long)r, fib_serial(n));
        return -1;
    }
    return 0;
}

/* ---- spawn ---------------------------------------------------------------- */

static void *empty(void *arg)
{
    return arg;
}

/* The root: spawns count empty fibers, joins them in order, and returns
 * how many handed back the argument they were given. The handle array is
 * allocated inside the timed region, as the peers' vector is. */
static void *spawn_root(void *arg)
{
    long long count = *(const long long *)arg;
    weft_fiber **fibers = malloc((size_t)count * sizeof *fibers);
    if (!fibers)
        die("malloc", ENOMEM);
    for (long long i = 0; i < count; i++)
        fibers[i] = spawn(empty, (void *)(intptr_t)i);
    intptr_t ok = 0;
    for (long long i = 0; i < count; i++)
        ok += (intptr_t)join(fibers[i]) == i;
    free(fibers);
    return (void *)ok;
}

static int run_spawn(long long count, double *value)
{
    double t0 = now_ns();
    intptr_t ok = (intptr_t)join(spawn(spawn_root, &count));
    *value = (now_ns() - t0) / (double)count;
    if (ok != count) {
        fprintf(stderr, "bench-sched: spawn: %lld of %lld fibers returned their argument\n",
                (long long)ok, count);
        return -1;
    }
    return 0;
}

/* ---- yield ---------------------------------------------------------------- */

/*
 * Both fibers write `last` before each yield, so a fiber that finds the
 * other's mark when its yield returns knows that the other one ran in
 * between: a yield that returned without switching (or a scheduler that
 * ran the pair on two workers) would not count as a switch.
 */
struct yield_pair {
    long long half;          /* yields per fiber                          */
    long long counts[2];
    long long switched;      /* yields after which the other had run      */
    int       last;          /* who yielded last; one worker: no races    */
};

struct yielder {
    struct yield_pair *pair;
    int                me;
};

static void *yield_loop(void *arg)
{
    struct yielder *y = arg;
    struct yield_pair *p = y->pair;
    for (long long i = 0; i < p->half; i++) {
        p->last = y->me;
        weft_yield();
        p->switched += p->last != y->me;
        p->counts[y->me]++;
    }
    return NULL;
}

static int run_yield(long long switches, double *value)
{
    struct yield_pair p = { switches / 2, { 0, 0 }, 0, -1 };
    struct yielder a = { &p, 0 }, b = { &p, 1 };
    double t0 = now_ns();
    weft_fiber *fa = spawn(yield_loop, &a);
    weft_fiber *fb = spawn(yield_loop, &b);
    join(fa);
    join(fb);
    *value = (now_ns() - t0) / (double)(2 * p.half);
    if (p.counts[0] != p.half || p.counts[1] != p.half) {
        fprintf(stderr, "bench-sched: yield counts %lld/%lld, want %lld each\n",
                p.counts[0], p.counts[1], p.half);
        return -1;
    }
    /* The last yield of whichever fiber finishes second finds nothing
     * else to run; every other one must have switched. */
    if (p.switched < 2 * p.half - 1) {
        fprintf(stderr, "bench-sched: yield: only %lld of %lld yields switched to the "
                "other fiber\n", p.switched, 2 * p.half);
        return -1;
    }
    return 0;
}

/* ---- chan-pingpong ------------------------------------------------------- */

struct pingpong {
    weft_chan *ping, *pong;
    long long  trips, last;
    int        failed;
};

static void *pinger(void *arg)
{
    struct pingpong *p = arg;
    for (long long i = 0; i < p->trips; i++)
        if (weft_chan_send(p->ping, &i) != 0 || weft_chan_recv(p->pong, &p->last) != 0)
            p->failed = 1;
    return NULL;
}

static void *ponger(void *arg)
{
    struct pingpong *p = arg;
    for (long long i = 0, v; i < p->trips; i++) {
        if (weft_chan_recv(p->ping, &v) != 0)
            p->failed = 1;
        v++;
        if (weft_chan_send(p->pong, &v) != 0)
            p->failed = 1;
    }
    return NULL;
}

static int run_pingpong(long long trips, double *value)
{
    struct pingpong p = { weft_chan_new(sizeof(long long), 0),
                          weft_chan_new(sizeof(long long), 0), trips, 0, 0 };
    if (!p.ping || !p.pong)
        die("weft_chan_new", errno);
    double t0 = now_ns();
    weft_fiber *a = spawn(pinger, &p);
    weft_fiber *b = spawn(ponger, &p);
    join(a);
    join(b);
    *value = (now_ns() - t0) / (double)trips;
    weft_chan_free(p.ping);
    weft_chan_free(p.pong);
    if (p.failed || p.last != trips) {
        fprintf(stderr, "bench-sched: chan-pingpong: last token %lld, want %lld\n",
                p.last, trips);
        return -1;
    }
    return 0;
}

/* ---- mutex ------------------------------------------------------------------ */

#define MUTEX_FIBERS 64

struct mutex_bench {
    weft_mutex m;
    long long  counter, per;
};

static void *mutex_loop(void *arg)
{
    struct mutex_bench *b = arg;
    for (long long i = 0; i < b->per; i++) {
        weft_mutex_lock(&b->m);
        b->counter++;
        weft_mutex_unlock(&b->m);
    }
    return NULL;
}

static int run_mutex(long long total, double *value)
{
    struct mutex_bench b = { WEFT_MUTEX_INIT, 0,
                             total < MUTEX_FIBERS ? 1 : total / MUTEX_FIBERS };
    weft_fiber *f[MUTEX_FIBERS];
    double t0 = now_ns();
    for (int i = 0; i < MUTEX_FIBERS; i++)
        f[i] = spawn(mutex_loop, &b);
    for (int i = 0; i < MUTEX_FIBERS; i++)
        join(f[i]);
    *value = (now_ns() - t0) / (double)(b.per * MUTEX_FIBERS);
    if (b.counter != b.per * MUTEX_FIBERS) {
        fprintf(stderr, "bench-sched: mutex counter %lld, want %lld\n", b.counter,
                b.per * MUTEX_FIBERS);
        return -1;
    }
    return 0;
}

/* ---- the harness ---------------------------------------------------------- */

struct bench {
    const char *name;
    const char *unit;
    long long   default_size;
    int         one_worker;  /* the definition fixes the worker count at 1 */
    /* One run at size: its figure in unit, after checking the result.
     * 0, or -1 on a wrong result (already reported). Runs in a fiber. */
    int (*run)(long long size, double *value);
};

static const struct bench benches[] = {
    { "skynet", "ms", 1000000, 0, run_skynet },
    { "fib", "ms", 30, 0, run_fib },
    { "spawn", "ns", 1000000, 0, run_spawn },
    { "yield", "ns", 10000000, 1, run_yield },
    { "chan-pingpong", "ns", 1000000, 0, run_pingpong },
    { "mutex", "ns", 6400000, 0, run_mutex },
};

/* What main_fn is given and hands back. */
struct session {
    const struct bench *b;
    long long           size;
    unsigned            workers;      /* as the runtime ran               */
    double              samples[REPS];
    int                 failed;
};

/* The first fiber: a warm-up run, then REPS measured runs. */
static void session_main(void *arg)
{
    struct session *s = arg;
    double warm;
    s->workers = weft_workers();
    if (s->b->run(s->size, &warm) != 0) {
        s->failed = 1;
        return;
    }
    for (int r = 0; r < REPS; r++)
        if (s->b->run(s->size, &s->samples[r]) != 0) {
            s->failed = 1;
            return;
        }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static __attribute__((noreturn)) void usage(void)
{
    fputs("usage: bench-sched skynet|fib|spawn|yield|chan-pingpong|mutex [-w N] [-n SIZE]\n", stderr);
    exit(2);
}

static long long parse_positive(const char *what, const char *text)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 1) {
        fprintf(stderr, "bench-sched: %s must be a positive integer, not '%s'\n", what, text);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const struct bench *b = NULL;
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (strcmp(argv[1], benches[i].name) == 0)
            b = &benches[i];
    if (!b) {
        fprintf(stderr, "bench-sched: unknown benchmark '%s'\n", argv[1]);
        usage();
    }

    weft_config cfg;
    weft_config_init(&cfg);
    cfg.stack_size = SMALL_STACK;
    struct session s = { .b = b, .size = b->default_size };
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "-w") == 0) {
            long long w = parse_positive("-w", argv[i + 1]);
            if (w > 4096) {
                fprintf(stderr, "bench-sched: -w %lld: too many workers\n", w);
                return 2;
            }
            cfg.workers = (unsigned)w;
        } else if (strcmp(argv[i], "-n") == 0) {
            s.size = parse_positive("-n", argv[i + 1]);
        } else {
            usage();
        }
    }
    if (b->one_worker && cfg.workers != 1) {
        if (cfg.workers != 0)
            fprintf(stderr, "bench-sched: %s runs on one worker by definition; "
                    "ignoring -w %u\n", b->name, cfg.workers);
        cfg.workers = 1;
    }
    if (strcmp(b->name, "skynet") == 0 && check_skynet_size(s.size) != 0)
        return 2;
    if (strcmp(b->name, "yield") == 0 && s.size < 2) {
        fputs("bench-sched: yield needs at least 2 switches\n", stderr);
        return 2;
    }

    int rc = weft_run(&cfg, session_main, &s);
    if (rc != 0) {
        fprintf(stderr, "bench-sched: weft_run: %s\n", strerror(-rc));
        return 1;
    }
    if (s.failed)
        return 1;

    qsort(s.samples, REPS, sizeof s.samples[0], cmp_double);
    /* Per-fiber and per-switch figures are tens of ns: one more digit. */
    int prec = strcmp(b->unit, "ms") == 0 ? 1 : 2;
    printf("bench=%s impl=weft workers=%u value=%.*f unit=%s median=%.*f", b->name,
           s.workers, prec, s.samples[0], b->unit, prec, s.samples[REPS / 2]);
    if (s.size != b->default_size)
        printf(" n=%lld", s.size);
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : 1;
}
