/*
 * bench=dump: how long weft_dump takes with many parked fibers (default
 * 100,000, all parked in one wait group, as a server with that many idle
 * connections would have them parked in a few places). The report goes
 * to /dev/null; the time is the median of REPS dumps, taken on a plain
 * thread (the blocking pool) while the fibers stay parked.
 *
 *   bench-dump [FIBERS [WORKERS]]
 *   bench=dump impl=weft workers=N value=<ms> unit=ms fibers=100000
 */
#include <weft.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define REPS 7

static weft_wg gate;
static _Atomic long arrived;
static long nfibers = 100000;
static double times_ms[REPS];
static int dump_err;

static void *parked_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&arrived, 1);
    weft_wg_wait(&gate);
    return NULL;
}

/* On a blocking-pool thread: the fibers stay parked meanwhile. */
static void *dump_many(void *arg)
{
    (void)arg;
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        dump_err = -1;
        return NULL;
    }
    (void)weft_dump(fd); /* warm-up: first-use costs (debug info, caches) */
    for (int i = 0; i < REPS && !dump_err; i++) {
        uint64_t t0 = weft_now();
        dump_err = weft_dump(fd);
        times_ms[i] = (double)(weft_now() - t0) / 1e6;
    }
    close(fd);
    return NULL;
}

static void bench_main(void *arg)
{
    *(unsigned *)arg = weft_workers();
    weft_spawn_opts o = { NULL, 16 * 1024, 1 };
    for (long i = 0; i < nfibers; i++)
        if (!weft_spawn_ex(&o, parked_fn, NULL)) {
            perror("weft_spawn_ex");
            exit(1);
        }
    while (atomic_load(&arrived) < nfibers)
        weft_sleep(1000000);
    weft_sleep(20 * 1000000); /* the last arrivals reach their wait */
    weft_blocking(dump_many, NULL);
    weft_wg_done(&gate);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    weft_config c;
    weft_config_init(&c);
    if (argc > 1)
        nfibers = atol(argv[1]);
    if (argc > 2)
        c.workers = (unsigned)atoi(argv[2]);
    if (nfibers <= 0) {
        fprintf(stderr, "usage: bench-dump [FIBERS [WORKERS]]\n");
        return 2;
    }
    weft_wg_init(&gate);
    weft_wg_add(&gate, 1);
    unsigned workers = 0;
    int rc = weft_run(&c, bench_main, &workers);
    if (rc != 0 || dump_err) {
        fprintf(stderr, "bench-dump: weft_run %d, weft_dump %d\n", rc, dump_err);
        return 1;
    }
    qsort(times_ms, REPS, sizeof *times_ms, cmp_double);
    printf("bench=dump impl=weft workers=%u value=%.1f unit=ms fibers=%ld min=%.1f max=%.1f\n",
           workers, times_ms[REPS / 2], nfibers, times_ms[0], times_ms[REPS - 1]);
    return 0;
}
