/*
 * switch-cost: what one switch between two execution contexts costs, from
 * weft's raw context switch up to a process switch through the kernel
 * (see "switch-cost" in bench/DEFINITIONS.md).
 *
 * Each implementation hands control back and forth between two contexts
 * ROUNDTRIPS times (default 1,000,000). The figure is nanoseconds per
 * ONE-WAY switch: the time of all round trips / (2 * ROUNDTRIPS).
 *
 *   weft            weft__ctx_jump, the bare assembly, no scheduler: the
 *                   main stack and one fiber stack bounce a value, both
 *                   through the same loop (see weft_bounce).
 *   ucontext        swapcontext ping-pong (glibc; one sigprocmask syscall
 *                   per switch, which is why it is slow).
 *   boost-context   boost::context::fiber resume() ping-pong, when Boost
 *                   was found at configure time (switch_boost.cpp).
 *   thread-futex    two threads hand a token through a futex word: each
 *                   side stores, FUTEX_WAKEs the other and FUTEX_WAITs.
 *                   No spinning, so every switch goes through the kernel.
 *   thread-condvar  the same with one mutex and two condition variables.
 *   process-pipe    two processes echo one byte over a pair of pipes.
 *
 * The thread and process pairs run twice: both sides pinned to one CPU
 * (cpus=1: the kernel switches between them on that CPU) and pinned to two
 * different CPUs (cpus=2: each wakeup crosses CPUs and the woken side may
 * have to leave idle). The in-process pairs are pinned to one CPU. Pinning
 * uses sched_setaffinity() on the first (and second) CPU this process may
 * use; with a single usable CPU the cpus=2 rows print skipped=one-cpu.
 *
 * Each measurement runs once as a warm-up (ROUNDTRIPS / 10), then 5 times;
 * every run checks that the other side saw exactly ROUNDTRIPS round trips
 * (the program exits 1 otherwise). Output on stdout, one line per row:
 *
 *   bench=switch-cost impl=weft workers=1 value=10.36 unit=ns cycles=26.9
 *       cpus=1 median=10.41 roundtrips=1000000
 *
 * value is the best of the 5 runs, median their median; cycles is TSC
 * ticks per one-way switch in the best run (rdtsc: the constant-rate
 * timestamp counter, not core clock cycles; hardware cycle counters are
 * not available on the VMs we run on). A human-readable table follows on
 * stderr, so stdout stays machine-readable.
 *
 * Usage: bench-switch [-n ROUNDTRIPS] [-w N] [-i IMPL[,IMPL...]]
 *   -n  round trips per run (shrink it for a smoke test)
 *   -w  accepted for the suite's common interface and ignored: this
 *       benchmark always reports workers=1
 *   -i  measure only the named implementations (for profiling one, e.g.
 *       under valgrind --tool=callgrind)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "ctx/ctx.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

#ifndef SWITCH_HAVE_BOOST
#define SWITCH_HAVE_BOOST 0
#endif

#if SWITCH_HAVE_BOOST
/* switch_boost.cpp */
int switch_boost_open(void);
long switch_boost_run(long n);
void switch_boost_close(void);
#endif

#define REPS 5

/* One run of n round trips: wall time and TSC ticks across all of them. */
struct run_time {
    double   ns;
    uint64_t tsc;
};

/*
 * An implementation under test. run() performs n round trips, timing them
 * with clock_start/clock_stop, and returns the number of round trips the
 * other side counted (anything but n is a failure), or -1 on a system
 * error. open/close (optional) set up state that outlives a single run,
 * outside the timed region.
 */
struct impl {
    const char *name;
    int         cpus;        /* 1: both sides on one CPU; 2: on two      */
    const char *skip;        /* non-NULL: print a skipped line instead    */
    int  (*open)(void);
    long (*run)(long n, struct run_time *t);
    void (*close)(void);
};

static int cpu_a, cpu_b;     /* the CPUs the two sides are pinned to now  */

/* ---- timing ------------------------------------------------------------ */

static inline uint64_t tsc_now(void)
{
#if HAVE_TSC
    return __rdtsc();
#else
    return 0;
#endif
}

static inline double mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct stopwatch {
    double   ns;
    uint64_t tsc;
};

static inline void clock_start(struct stopwatch *w)
{
    w->ns = mono_ns();
    w->tsc = tsc_now();
}

static inline void clock_stop(const struct stopwatch *w, struct run_time *t)
{
    uint64_t tsc = tsc_now();
    t->ns = mono_ns() - w->ns;
    t->tsc = tsc - w->tsc;
}

/* ---- pinning ----------------------------------------------------------- */

static int pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("bench-switch: sched_setaffinity");
        return -1;
    }
    return 0;
}

/* ---- weft: the raw assembly -------------------------------------------- */

/* The main side and the fiber side. While the fiber is suspended its saved
 * stack pointer is in weft_fiber.sp, and the other way round. */
static weft__ctx weft_main, weft_fiber;
static weft__stack *weft_stack;
static long weft_pongs;

/* Sanitizer builds must tell ASan/TSan about every switch, so there the
 * benchmark goes through weft__ctx_switch (its figure is then not the raw
 * cost, but such builds are not for measuring anyway). */
#if WEFT__ASAN || WEFT__TSAN
#define WEFT_JUMP(from, to, v) weft__ctx_switch((from), (to), (v))
#else
#define WEFT_JUMP(from, to, v) weft__ctx_jump(&(from)->sp, (to)->sp, (v))
#endif

/*
 * Both sides run this one loop, so each switch resumes the other side at
 * the very call site it is leaving from. That is how weft's scheduler
 * switches (every yield, park and exit goes through one function), and it
 * is what lets the switch's plain ret be predicted: the return-stack
 * predictor expects ret to go back to the latest call, and here the
 * resumed context's return address is that same call site.
 */
__attribute__((noinline)) static void *weft_bounce(weft__ctx *self, weft__ctx *other,
                                                   long n, long *count, void *v)
{
    for (long i = 0; i < n; i++) {
        (*count)++;
        v = WEFT_JUMP(self, other, v);
    }
    return v;
}

static void weft_pong(void *v)
{
    weft_bounce(&weft_fiber, &weft_main, __LONG_MAX__, &weft_pongs, v);
    abort(); /* never gets that far */
}

static int weft_open(void)
{
    weft_stack = weft__stack_get(0);
    if (!weft_stack) {
        perror("bench-switch: weft__stack_get");
        return -1;
    }
    weft__ctx_init_current(&weft_main);
    weft__ctx_make(&weft_fiber, weft_stack, weft_pong);
    return 0;
}

static long weft_run(long n, struct run_time *t)
{
    struct stopwatch w;
    long pings = 0;
    weft_pongs = 0;
    clock_start(&w);
    weft_bounce(&weft_main, &weft_fiber, n, &pings, NULL);
    clock_stop(&w, t);
    /* Each of main's n switches runs the fiber's loop body once. */
    return weft_pongs;
}

static void weft_close(void)
{
    /* The fiber stays suspended inside weft_pong forever; nothing on its
     * stack needs unwinding, so dropping the stack is its whole teardown. */
    weft__ctx_destroy(&weft_fiber);
    weft__ctx_destroy(&weft_main);
    weft__stack_put(weft_stack);
}

/* ---- ucontext ---------------------------------------------------------- */

#define UC_STACK_SIZE (256 * 1024)

static ucontext_t uc_main, uc_fiber;
static void *uc_stack;
static long uc_pongs;

static void uc_pong(void)
{
    for (;;) {
        uc_pongs++;
        swapcontext(&uc_fiber, &uc_main);
    }
}

static int uc_open(void)
{
    uc_stack = malloc(UC_STACK_SIZE);
    if (!uc_stack || getcontext(&uc_fiber) != 0) {
        perror("bench-switch: ucontext");
        free(uc_stack);
        return -1;
    }
    uc_fiber.uc_stack.ss_sp = uc_stack;
    uc_fiber.uc_stack.ss_size = UC_STACK_SIZE;
    uc_fiber.uc_link = NULL;
    makecontext(&uc_fiber, uc_pong, 0);
    return 0;
}

static long uc_run(long n, struct run_time *t)
{
    struct stopwatch w;
    uc_pongs = 0;
    clock_start(&w);
    for (long i = 0; i < n; i++)
        if (swapcontext(&uc_main, &uc_fiber) != 0)
            return -1;
    clock_stop(&w, t);
    return uc_pongs;
}

static void uc_close(void)
{
    free(uc_stack);
}

/* ---- boost-context ------------------------------------------------------ */

#if SWITCH_HAVE_BOOST
static long boost_run(long n, struct run_time *t)
{
    struct stopwatch w;
    clock_start(&w);
    long r = switch_boost_run(n);
    clock_stop(&w, t);
    return r;
}
#endif

/* ---- two threads ------------------------------------------------------- */

/*
 * The token is a sequence number: the main thread stores 2i+1 to hand
 * round trip i to the partner, the partner answers with 2i+2. Each side
 * waits for the value it expects, so a stale wakeup simply waits again.
 */
struct thread_pair {
    pthread_barrier_t start;     /* partner pinned and ready              */
    long              n;
    long              partner_count;
    uint32_t          seq;       /* futex word (thread-futex)             */
    pthread_mutex_t   mu;        /* guards seq (thread-condvar)           */
    pthread_cond_t    to_partner, to_main;
    int               failed;    /* partner could not pin itself          */
};

static struct thread_pair tp;

static long futex_op(uint32_t *word, int op, uint32_t val)
{
    return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

/* Wait until *word == want. Either thread of the pair. */
static inline void futex_await(uint32_t *word, uint32_t want)
{
    uint32_t cur;
    /* acquire: pairs with the release store in futex_hand, so whatever
     * the other side wrote before handing over is visible here. */
    while ((cur = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != want)
        futex_op(word, FUTEX_WAIT_PRIVATE, cur);
}

static inline void futex_hand(uint32_t *word, uint32_t val)
{
    /* release: pairs with the acquire load in futex_await. */
    __atomic_store_n(word, val, __ATOMIC_RELEASE);
    futex_op(word, FUTEX_WAKE_PRIVATE, 1);
}

static void *futex_partner(void *arg)
{
    (void)arg;
    tp.failed = pin_self(cpu_b) != 0;
    pthread_barrier_wait(&tp.start);
    if (tp.failed)
        return NULL;
    for (long k = 0; k < tp.n; k++) {
        futex_await(&tp.seq, (uint32_t)(2 * k + 1));
        tp.partner_count++;
        futex_hand(&tp.seq, (uint32_t)(2 * k + 2));
    }
    return NULL;
}

static void futex_main(long n)
{
    for (long i = 0; i < n; i++) {
        futex_hand(&tp.seq, (uint32_t)(2 * i + 1));
        futex_await(&tp.seq, (uint32_t)(2 * i + 2));
    }
}

static void *condvar_partner(void *arg)
{
    (void)arg;
    tp.failed = pin_self(cpu_b) != 0;
    pthread_barrier_wait(&tp.start);
    if (tp.failed)
        return NULL;
    pthread_mutex_lock(&tp.mu);
    for (long k = 0; k < tp.n; k++) {
        while (tp.seq != (uint32_t)(2 * k + 1))
            pthread_cond_wait(&tp.to_partner, &tp.mu);
        tp.partner_count++;
        tp.seq = (uint32_t)(2 * k + 2);
        pthread_cond_signal(&tp.to_main);
    }
    pthread_mutex_unlock(&tp.mu);
    return NULL;
}

static void condvar_main(long n)
{
    pthread_mutex_lock(&tp.mu);
    for (long i = 0; i < n; i++) {
        tp.seq = (uint32_t)(2 * i + 1);
        pthread_cond_signal(&tp.to_partner);
        while (tp.seq != (uint32_t)(2 * i + 2))
            pthread_cond_wait(&tp.to_main, &tp.mu);
    }
    pthread_mutex_unlock(&tp.mu);
}

/* One run: a fresh partner thread, so no state leaks between runs; its
 * creation and pinning happen before the clock starts. The main thread is
 * the pinging side and is already pinned to cpu_a. */
static long thread_pair_run(long n, struct run_time *t,
                            void *(*partner)(void *), void (*ping)(long))
{
    struct stopwatch w;
    pthread_t th;
    tp.n = n;
    tp.partner_count = 0;
    tp.seq = 0;
    tp.failed = 0;
    pthread_barrier_init(&tp.start, NULL, 2);
    pthread_mutex_init(&tp.mu, NULL);
    pthread_cond_init(&tp.to_partner, NULL);
    pthread_cond_init(&tp.to_main, NULL);
    int e = pthread_create(&th, NULL, partner, NULL);
    if (e != 0) {
        fprintf(stderr, "bench-switch: pthread_create: %s\n", strerror(e));
        return -1;
    }
    pthread_barrier_wait(&tp.start);
    if (!tp.failed) {
        clock_start(&w);
        ping(n);
        clock_stop(&w, t);
    }
    pthread_join(th, NULL);
    pthread_barrier_destroy(&tp.start);
    pthread_mutex_destroy(&tp.mu);
    pthread_cond_destroy(&tp.to_partner);
    pthread_cond_destroy(&tp.to_main);
    if (tp.failed)
        return -1;
    return tp.seq == (uint32_t)(2 * n) ? tp.partner_count : -1;
}

static long futex_run(long n, struct run_time *t)
{
    return thread_pair_run(n, t, futex_partner, futex_main);
}

static long condvar_run(long n, struct run_time *t)
{
    return thread_pair_run(n, t, condvar_partner, condvar_main);
}

/* ---- two processes ------------------------------------------------------ */

static int read_byte(int fd, unsigned char *b)
{
    ssize_t r;
    do
        r = read(fd, b, 1);
    while (r < 0 && errno == EINTR);
    return r == 1 ? 0 : -1;
}

static int write_byte(int fd, unsigned char b)
{
    ssize_t r;
    do
        r = write(fd, &b, 1);
    while (r < 0 && errno == EINTR);
    return r == 1 ? 0 : -1;
}

/* The child echoes byte k + 1 for the k-th byte it reads, checking that it
 * reads k: a lost or duplicated byte is a failed run, not a fast one. Its
 * exit status reports whether all n round trips arrived intact. */
static __attribute__((noreturn)) void pipe_child(int in, int out, long n)
{
    unsigned char b;
    if (pin_self(cpu_b) != 0 || write_byte(out, 0xff) != 0)
        _exit(2);
    for (long k = 0; k < n; k++) {
        if (read_byte(in, &b) != 0 || b != (unsigned char)k)
            _exit(1);
        if (write_byte(out, (unsigned char)(k + 1)) != 0)
            _exit(2);
    }
    _exit(0);
}

static long pipe_run(long n, struct run_time *t)
{
    int to_child[2], to_parent[2];
    struct stopwatch w;
    unsigned char b;
    long done = 0;
    if (pipe(to_child) != 0)
        return -1;
    if (pipe(to_parent) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        pipe_child(to_child[0], to_parent[1], n);
    }
    close(to_child[0]);
    close(to_parent[1]);
    /* The child's first byte says it is pinned and running. */
    if (pid > 0 && read_byte(to_parent[0], &b) == 0) {
        clock_start(&w);
        for (; done < n; done++) {
            if (write_byte(to_child[1], (unsigned char)done) != 0 ||
                read_byte(to_parent[0], &b) != 0 || b != (unsigned char)(done + 1))
                break;
        }
        clock_stop(&w, t);
    }
    close(to_child[1]);
    close(to_parent[0]);
    if (pid < 0) {
        perror("bench-switch: fork");
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return done;
}

/* ---- the harness -------------------------------------------------------- */

struct result {
    const struct impl *impl;
    double best_ns, median_ns, cycles;   /* per one-way switch             */
    double tsc_per_ns;                   /* of the best run                */
    long   roundtrips;                   /* per timed run                  */
};

/*
 * About how long one timed run may take. A round trip through the kernel
 * between two CPUs costs 50-100 us on a busy virtual machine, where a
 * million of them, six times over, would hold the suite for minutes per
 * row; such rows get fewer round trips (at least PROBE), the cheap ones
 * keep -n. The count used is printed with each row.
 */
#define RUN_BUDGET_NS 250e6
#define PROBE         1000

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int mismatch(const struct impl *im, long n, long got)
{
    if (got == -1)
        fprintf(stderr, "bench-switch: %s cpus=%d: run failed\n", im->name, im->cpus);
    else
        fprintf(stderr, "bench-switch: %s cpus=%d: %ld round trips counted, %ld expected\n",
                im->name, im->cpus, got, n);
    return -1;
}

static int measure(const struct impl *im, long n, struct result *r)
{
    struct run_time t;
    double per[REPS];
    long got;

    long probe = n < PROBE ? n : PROBE;
    if ((got = im->run(probe, &t)) != probe)
        return mismatch(im, probe, got);
    double per_rt = t.ns / (double)probe;
    if (per_rt > 0 && (double)n * per_rt > RUN_BUDGET_NS) {
        n = (long)(RUN_BUDGET_NS / per_rt);
        if (n < probe)
            n = probe;
    }
    r->roundtrips = n;
    long warm = n / 10 > 0 ? n / 10 : 1;
    if ((got = im->run(warm, &t)) != warm)
        return mismatch(im, warm, got);
    r->best_ns = -1;
    for (int i = 0; i < REPS; i++) {
        if ((got = im->run(n, &t)) != n)
            return mismatch(im, n, got);
        per[i] = t.ns / (2.0 * (double)n);
        if (r->best_ns < 0 || per[i] < r->best_ns) {
            r->best_ns = per[i];
            r->cycles = (double)t.tsc / (2.0 * (double)n);
            r->tsc_per_ns = t.ns > 0 ? (double)t.tsc / t.ns : 0;
        }
    }
    qsort(per, REPS, sizeof per[0], cmp_double);
    r->median_ns = per[REPS / 2];
    return 0;
}

static int wanted(const char *only, const char *name)
{
    if (!only)
        return 1;
    size_t len = strlen(name);
    for (const char *p = only; *p;) {
        size_t l = strcspn(p, ",");
        if (l == len && strncmp(p, name, len) == 0)
            return 1;
        p += l + (p[l] == ',');
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-switch [-n ROUNDTRIPS] [-w N] [-i IMPL[,IMPL...]]\n");
    exit(2);
}

static long parse_long(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    long n = 1000000;
    const char *only = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "n:w:i:")) != -1) {
        switch (opt) {
        case 'n': n = parse_long(optarg); break;
        case 'w': (void)parse_long(optarg); break;
        case 'i': only = optarg; break;
        default: usage();
        }
    }
    if (optind != argc || n > INT32_MAX / 2)
        usage();

    /* The two CPUs the pairs use: the first two this process may run on. */
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        perror("bench-switch: sched_getaffinity");
        return 1;
    }
    int first = -1, second = -1;
    for (int c = 0; c < CPU_SETSIZE && second < 0; c++) {
        if (!CPU_ISSET(c, &allowed))
            continue;
        if (first < 0)
            first = c;
        else
            second = c;
    }
    const char *one_cpu = second < 0 ? "one-cpu" : NULL;

    const struct impl impls[] = {
        { "weft", 1, NULL, weft_open, weft_run, weft_close },
        { "ucontext", 1, NULL, uc_open, uc_run, uc_close },
#if SWITCH_HAVE_BOOST
        { "boost-context", 1, NULL, switch_boost_open, boost_run, switch_boost_close },
#else
        { "boost-context", 1, "not-installed", NULL, NULL, NULL },
#endif
        { "thread-futex", 1, NULL, NULL, futex_run, NULL },
        { "thread-futex", 2, one_cpu, NULL, futex_run, NULL },
        { "thread-condvar", 1, NULL, NULL, condvar_run, NULL },
        { "thread-condvar", 2, one_cpu, NULL, condvar_run, NULL },
        { "process-pipe", 1, NULL, NULL, pipe_run, NULL },
        { "process-pipe", 2, one_cpu, NULL, pipe_run, NULL },
    };
    enum { NIMPL = sizeof impls / sizeof impls[0] };
    if (only) {
        /* A misspelt -i must not pass for a run that measured nothing. */
        for (const char *p = only; *p;) {
            size_t l = strcspn(p, ",");
            int known = 0;
            for (int i = 0; i < NIMPL; i++)
                known |= strlen(impls[i].name) == l && strncmp(p, impls[i].name, l) == 0;
            if (!known) {
                fprintf(stderr, "bench-switch: unknown impl '%.*s'\n", (int)l, p);
                usage();
            }
            p += l + (p[l] == ',');
        }
    }
    struct result results[NIMPL];
    int nresults = 0, failed = 0;

    /* Every pinging side is this thread, on the first CPU; partners move
     * themselves to cpu_b. */
    if (pin_self(first) != 0)
        return 1;

    for (int i = 0; i < NIMPL; i++) {
        const struct impl *im = &impls[i];
        if (!wanted(only, im->name))
            continue;
        if (im->skip) {
            printf("bench=switch-cost impl=%s workers=1 cpus=%d skipped=%s\n",
                   im->name, im->cpus, im->skip);
            fflush(stdout);
            continue;
        }
        cpu_a = first;
        cpu_b = im->cpus == 2 ? second : first;
        struct result *r = &results[nresults];
        r->impl = im;
        int rc = im->open ? im->open() : 0;
        if (rc == 0) {
            rc = measure(im, n, r);
            if (im->close)
                im->close();
        }
        if (rc != 0) {
            printf("bench=switch-cost impl=%s workers=1 cpus=%d failed=1\n", im->name, im->cpus);
            fflush(stdout);
            failed = 1;
            continue;
        }
        printf("bench=switch-cost impl=%s workers=1 value=%.2f unit=ns cycles=%.1f cpus=%d "
               "median=%.2f roundtrips=%ld\n",
               im->name, r->best_ns, r->cycles, im->cpus, r->median_ns, r->roundtrips);
        fflush(stdout);
        nresults++;
    }

    fprintf(stderr, "\nswitch-cost: up to %ld round trips (fewer where a run would pass %.2f s),"
                    " best and median of %d runs after a warm-up, per one-way switch\n",
            n, RUN_BUDGET_NS / 1e9, REPS);
    fprintf(stderr, "%-16s %4s %10s %10s %11s\n", "impl", "cpus", "best ns", "median ns",
            "tsc cycles");
    for (int i = 0; i < nresults; i++) {
        const struct result *r = &results[i];
        fprintf(stderr, "%-16s %4d %10.2f %10.2f %11.1f\n", r->impl->name, r->impl->cpus,
                r->best_ns, r->median_ns, r->cycles);
    }
    if (nresults > 0 && HAVE_TSC)
        fprintf(stderr, "(tsc cycles: timestamp-counter ticks, %.2f GHz here, not core cycles)\n",
                results[0].tsc_per_ns);
    return failed;
}
