/*
 * echo-load: the closed-loop load generator of the "echo" benchmark
 * (bench/DEFINITIONS.md). Plain C, one epoll per generator thread, no
 * weft: it must not measure itself.
 *
 *   echo-load -p PORT [-h HOST] [-c CONNS] [-t THREADS] [-a CPUS]
 *             [-W SECONDS] [-d SECONDS] [-r WINDOWS] [-s BYTES]
 *             [-i IMPL] [-w WORKERS]
 *
 *   -p, -h  the echo server (host default 127.0.0.1, a numeric IPv4 address)
 *   -c      connections in total (default 64), split evenly over the threads
 *   -t      generator threads (default: one per CPU in -a, else 1)
 *   -a      CPU list to pin the threads to, e.g. "1" or "8-15" or "0,2,4";
 *           thread i runs on the i-th CPU of the list (round-robin)
 *   -W      warm-up before the first window (default 1 s; not counted)
 *   -d, -r  -r measured windows of -d seconds each (default 5 of 1 s)
 *   -s      message size (default 64, the definition's; at most 65536)
 *   -i, -w  impl= and workers= of the output line (what the server is)
 *
 * Every connection sends a message, waits until all of its bytes have come
 * back, checks them, and sends the next: a closed loop, one message in
 * flight per connection. Each message differs from the last (its bytes
 * are a hash of the connection number and the message number), so an
 * echo of stale or someone else's bytes is caught. Latency is the time
 * from the first byte written to the last byte read, kept in a histogram
 * per thread (log buckets: 32 per power of two, so a percentile is within
 * about 3%), merged at the end.
 *
 * Output, one line on stdout:
 *
 *   bench=echo impl=IMPL workers=N value=<msg/s, best window> unit=msg/s
 *     median=<msg/s, median window> p50_us=.. p99_us=.. errors=E conns=C
 *
 * p50/p99 cover every message completed in the measured windows. errors
 * counts connections that could not be made, connections the server
 * reset or closed, and corrupt echoes (a message with any byte that
 * differs from what was sent; its connection is then dropped, since the
 * stream cannot be trusted any more). The exit status is 1 when errors is
 * not 0 or nothing was echoed, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "echo-load"
#include "args.h"

#define MAX_SIZE    65536
#define MAX_WINDOWS 100
#define MAX_EVENTS  256

/* ---- latency histogram ------------------------------------------------------ */

/*
 * Values in ns. Below 32 every value has its own bucket; above, each power
 * of two [2^k, 2^(k+1)) is cut into 32 equal buckets: bucket
 * (k - 4) * 32 + the 5 bits below the top bit.
 */
#define SUB_BITS     5
#define SUB_BUCKETS  (1 << SUB_BITS)
#define HIST_BUCKETS ((64 - SUB_BITS + 1) * SUB_BUCKETS)

static unsigned hist_bucket(uint64_t ns)
{
    if (ns < SUB_BUCKETS)
        return (unsigned)ns;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    unsigned sub = (unsigned)(ns >> (msb - SUB_BITS)) & (SUB_BUCKETS - 1);
    return (msb - SUB_BITS + 1) * SUB_BUCKETS + sub;
}

/* The middle of bucket b, in ns. */
static double hist_value(unsigned b)
{
    if (b < SUB_BUCKETS)
        return b;
    unsigned msb = b / SUB_BUCKETS + SUB_BITS - 1;
    double width = ldexp(1.0, (int)(msb - SUB_BITS));
    return ((double)(SUB_BUCKETS + b % SUB_BUCKETS) + 0.5) * width;
}

/* The p-quantile (0 < p <= 1) of hist, in microseconds; 0 when empty. */
static double hist_quantile(const uint64_t *hist, double p)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++)
        total += hist[b];
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)total), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank)
            return hist_value(b) / 1000.0;
    }
    return hist_value(HIST_BUCKETS - 1) / 1000.0;
}

/* ---- configuration and shared state ------------------------------------------ */

static struct {
    struct sockaddr_in addr;
    int       conns, threads, windows;
    size_t    size;
    double    warmup_s, window_s;
    const char *impl;
    int       workers;
    int      *cpus;   /* -a, or NULL */
    int       ncpus;
} opt = {
    .conns = 64, .windows = 5, .size = 64, .warmup_s = 1.0, .window_s = 1.0,
    .impl = "unknown", .workers = 1,
};

/*
 * The phase the run is in: 0 warm-up, 1..windows the measured windows,
 * windows + 1 stop. Written by the main thread only; generator threads
 * read it after every message to know which window the message counts in.
 * Relaxed both ways: a message counted in the neighbouring window by a
 * thread that sees the change a little late shifts nothing measurable,
 * and the final counts are read after pthread_join.
 */
static _Atomic int phase;

static pthread_barrier_t connected;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- one generator thread ----------------------------------------------------- */

struct conn {
    int      fd;
    uint32_t id;          /* connection number, 0 .. conns-1 */
    uint32_t seq;         /* message number */
    uint32_t sent, got;   /* bytes of the current message */
    int      want_out;    /* registered for EPOLLOUT (a write was short) */
    uint64_t t_start;     /* when the current message's first byte went */
    unsigned char msg[];  /* the current message, opt.size bytes */
};

struct gen {
    pthread_t     tid;
    int           index, cpu;       /* cpu -1: not pinned */
    int           epfd;
    uint32_t      first, count;     /* its connections: first .. first+count-1 */
    struct conn **conns;
    uint64_t      msgs[MAX_WINDOWS + 2]; /* messages completed, by phase */
    uint64_t      errors;
    uint64_t     *hist;             /* latencies in the measured windows */
    unsigned char buf[MAX_SIZE];
};

/* Fill the message for c's current sequence number. */
static void make_message(struct conn *c)
{
    uint64_t x = ((uint64_t)c->id << 32 | c->seq) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < opt.size; i += 8) {
        /* splitmix64 step */
        x += 0x9E3779B97F4A7C15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        size_t n = opt.size - i < 8 ? opt.size - i : 8;
        memcpy(c->msg + i, &z, n);
    }
    c->sent = c->got = 0;
}

static void drop_conn(struct gen *g, struct conn *c)
{
    g->errors++;
    epoll_ctl(g->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void watch(struct gen *g, struct conn *c, int out)
{
    struct epoll_event ev = { .events = out ? EPOLLOUT : EPOLLIN, .data.ptr = c };
    if (epoll_ctl(g->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        drop_conn(g, c);
        return;
    }
    c->want_out = out;
}

/* Write what is left of c's message; wait for EPOLLOUT if it does not all
 * go. */
static void send_rest(struct gen *g, struct conn *c)
{
    while (c->sent < opt.size) {
        ssize_t n = write(c->fd, c->msg + c->sent, opt.size - c->sent);
        if (n > 0) {
            c->sent += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out)
                watch(g, c, 1);
            return;
        }
        drop_conn(g, c);
        return;
    }
    if (c->want_out)
        watch(g, c, 0);
}

static void start_message(struct gen *g, struct conn *c)
{
    make_message(c);
    c->t_start = now_ns();
    send_rest(g, c);
}

/* Read what has come back of c's message and check it. The echo of a
 * message can only arrive once it has all been sent, except for a server
 * that echoes a prefix early, which is fine: the bytes are checked against
 * the message, wherever they are. */
static void receive(struct gen *g, struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, g->buf, opt.size - c->got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0 || (size_t)n + c->got > c->sent) {
            /* Closed, reset, or more echoed than sent. */
            drop_conn(g, c);
            return;
        }
        if (memcmp(g->buf, c->msg + c->got, (size_t)n) != 0) {
            drop_conn(g, c);
            return;
        }
        c->got += (uint32_t)n;
        if (c->got < opt.size)
            continue;
        uint64_t t = now_ns();
        int ph = atomic_load_explicit(&phase, memory_order_relaxed);
        g->msgs[ph]++;
        if (ph >= 1 && ph <= opt.windows)
            g->hist[hist_bucket(t - c->t_start)]++;
        c->seq++;
        start_message(g, c);
        return;
    }
}

static int connect_one(struct gen *g, struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r;
    do
        r = connect(c->fd, (const struct sockaddr *)&opt.addr, sizeof opt.addr);
    while (r != 0 && errno == EINTR);
    int fl = fcntl(c->fd, F_GETFL);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (r != 0 || fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
        epoll_ctl(g->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void *gen_main(void *arg)
{
    struct gen *g = arg;
    if (g->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(g->cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
            fprintf(stderr, "echo-load: cannot pin thread %d to cpu %d\n", g->index, g->cpu);
    }
    for (uint32_t i = 0; i < g->count; i++) {
        struct conn *c = g->conns[i];
        if (connect_one(g, c) != 0)
            g->errors++;
    }
    pthread_barrier_wait(&connected);
    for (uint32_t i = 0; i < g->count; i++)
        if (g->conns[i]->fd >= 0)
            start_message(g, g->conns[i]);

    struct epoll_event evs[MAX_EVENTS];
    while (atomic_load_explicit(&phase, memory_order_relaxed) <= opt.windows) {
        /* The timeout only bounds how late a thread with no live
         * connection notices the stop. */
        int n = epoll_wait(g->epfd, evs, MAX_EVENTS, 10);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue; /* dropped earlier in this batch */
            if (c->want_out)
                send_rest(g, c);
            else
                receive(g, c);
        }
    }
    for (uint32_t i = 0; i < g->count; i++)
        if (g->conns[i]->fd >= 0)
            close(g->conns[i]->fd);
    return NULL;
}

/* ---- options ------------------------------------------------------------------ */

__attribute__((noreturn)) static void usage(const char *why)
{
    if (why)
        fprintf(stderr, "echo-load: %s\n", why);
    fprintf(stderr, "usage: echo-load -p PORT [-h HOST] [-c CONNS] [-t THREADS] [-a CPUS]\n"
                    "                 [-W SECONDS] [-d SECONDS] [-r WINDOWS] [-s BYTES]\n"
                    "                 [-i IMPL] [-w WORKERS]\n");
    exit(2);
}

static double parse_seconds(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v <= 3600)) {
        fprintf(stderr, "echo-load: %s must be seconds in 0..3600, not '%s'\n", what, s);
        exit(2);
    }
    return v;
}

/* "1", "8-15", "0,2,4-5" -> opt.cpus / opt.ncpus. */
static void parse_cpus(const char *s)
{
    opt.cpus = malloc(CPU_SETSIZE * sizeof *opt.cpus);
    if (!opt.cpus)
        usage("out of memory");
    opt.ncpus = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10), hi = lo;
        if (end == p)
            usage("bad CPU list");
        p = end;
        if (*p == '-') {
            hi = strtol(p + 1, &end, 10);
            if (end == p + 1)
                usage("bad CPU list");
            p = end;
        }
        if (lo < 0 || hi < lo || hi >= CPU_SETSIZE)
            usage("bad CPU list");
        for (long c = lo; c <= hi && opt.ncpus < CPU_SETSIZE; c++)
            opt.cpus[opt.ncpus++] = (int)c;
        if (*p == ',')
            p++;
        else if (*p)
            usage("bad CPU list");
    }
    if (opt.ncpus == 0)
        usage("empty CPU list");
}

static void parse_args(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = -1;
    int c;
    while ((c = getopt(argc, argv, "p:h:c:t:a:W:d:r:s:i:w:")) != -1) {
        switch (c) {
        case 'p': port = parse_long(optarg, 1, 65535, "-p"); break;
        case 'h': host = optarg; break;
        case 'c': opt.conns = (int)parse_long(optarg, 1, 1 << 24, "-c"); break;
        case 't': opt.threads = (int)parse_long(optarg, 1, 1024, "-t"); break;
        case 'a': parse_cpus(optarg); break;
        case 'W': opt.warmup_s = parse_seconds(optarg, "-W"); break;
        case 'd': opt.window_s = parse_seconds(optarg, "-d"); break;
        case 'r': opt.windows = (int)parse_long(optarg, 1, MAX_WINDOWS, "-r"); break;
        case 's': opt.size = (size_t)parse_long(optarg, 1, MAX_SIZE, "-s"); break;
        case 'i': opt.impl = optarg; break;
        case 'w': opt.workers = (int)parse_long(optarg, 1, 1 << 20, "-w"); break;
        default: usage(NULL);
        }
    }
    if (optind != argc)
        usage("unexpected argument");
    if (port < 0)
        usage("-p PORT is required");
    if (opt.window_s <= 0)
        usage("-d must be more than 0");
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &opt.addr.sin_addr) != 1)
        usage("-h takes a numeric IPv4 address");
    if (opt.threads == 0)
        opt.threads = opt.cpus ? opt.ncpus : 1;
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
}

/* Every connection is an fd: take as many as the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)opt.conns + 16 + (rlim_t)opt.threads > rl.rlim_cur) {
        fprintf(stderr, "echo-load: %d connections need more fds than RLIMIT_NOFILE "
                        "allows (%llu); raise it (ulimit -n)\n",
                opt.conns, (unsigned long long)rl.rlim_cur);
        exit(2);
    }
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = { (time_t)(t / 1000000000u), (long)(t % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    raise_fd_limit();

    struct gen *gens = calloc((size_t)opt.threads, sizeof *gens);
    struct conn **conns = calloc((size_t)opt.conns, sizeof *conns);
    if (!gens || !conns) {
        fprintf(stderr, "echo-load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < opt.conns; i++) {
        conns[i] = calloc(1, sizeof *conns[i] + opt.size);
        if (!conns[i]) {
            fprintf(stderr, "echo-load: out of memory\n");
            return 1;
        }
        conns[i]->fd = -1;
        conns[i]->id = (uint32_t)i;
    }
    pthread_barrier_init(&connected, NULL, (unsigned)opt.threads + 1);
    uint32_t next = 0;
    for (int i = 0; i < opt.threads; i++) {
        struct gen *g = &gens[i];
        g->index = i;
        g->cpu = opt.cpus ? opt.cpus[i % opt.ncpus] : -1;
        g->first = next;
        g->count = (uint32_t)(opt.conns / opt.threads + (i < opt.conns % opt.threads));
        g->conns = conns + next;
        next += g->count;
        g->epfd = epoll_create1(EPOLL_CLOEXEC);
        g->hist = calloc(HIST_BUCKETS, sizeof *g->hist);
        if (g->epfd < 0 || !g->hist ||
            pthread_create(&g->tid, NULL, gen_main, g) != 0) {
            fprintf(stderr, "echo-load: cannot start thread %d: %s\n", i, strerror(errno));
            return 1;
        }
    }

    /* Every connection is made (or has failed) when the barrier opens. */
    pthread_barrier_wait(&connected);
    uint64_t edges[MAX_WINDOWS + 1];
    uint64_t t = now_ns() + (uint64_t)(opt.warmup_s * 1e9);
    sleep_until(t);
    for (int w = 1; w <= opt.windows + 1; w++) {
        edges[w - 1] = now_ns();
        atomic_store_explicit(&phase, w, memory_order_relaxed);
        if (w <= opt.windows) {
            t = edges[w - 1] + (uint64_t)(opt.window_s * 1e9);
            sleep_until(t);
        }
    }

    uint64_t errors = 0, total = 0;
    uint64_t *hist = calloc(HIST_BUCKETS, sizeof *hist);
    double rates[MAX_WINDOWS];
    if (!hist) {
        fprintf(stderr, "echo-load: out of memory\n");
        return 1;
    }
    for (int w = 0; w < opt.windows; w++)
        rates[w] = 0;
    for (int i = 0; i < opt.threads; i++) {
        struct gen *g = &gens[i];
        pthread_join(g->tid, NULL);
        errors += g->errors;
        for (int w = 0; w < opt.windows; w++) {
            rates[w] += (double)g->msgs[w + 1];
            total += g->msgs[w + 1];
        }
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            hist[b] += g->hist[b];
        close(g->epfd);
        free(g->hist);
    }
    for (int w = 0; w < opt.windows; w++)
        rates[w] /= (double)(edges[w + 1] - edges[w]) / 1e9;
    qsort(rates, (size_t)opt.windows, sizeof *rates, cmp_double);

    printf("bench=echo impl=%s workers=%d value=%.0f unit=msg/s median=%.0f "
           "p50_us=%.1f p99_us=%.1f errors=%llu conns=%d\n",
           opt.impl, opt.workers, rates[opt.windows - 1], rates[opt.windows / 2],
           hist_quantile(hist, 0.50), hist_quantile(hist, 0.99),
           (unsigned long long)errors, opt.conns);
    fflush(stdout);
    if (errors)
        fprintf(stderr, "echo-load: %llu errors (failed connections or corrupt echoes)\n",
                (unsigned long long)errors);
    if (total == 0)
        fprintf(stderr, "echo-load: nothing was echoed\n");

    for (int i = 0; i < opt.conns; i++)
        free(conns[i]);
    free(conns);
    free(gens);
    free(hist);
    free(opt.cpus);
    pthread_barrier_destroy(&connected);
    return errors || total == 0 ? 1 : 0;
}
