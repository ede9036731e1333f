/*
 * OpenMP peer for weft's scaling benchmarks: the same task trees written
 * with `#pragma omp task` / `taskwait` (GCC's libgomp).
 *
 * Usage: peer-openmp <bench> [-w N] [-n SIZE]   (see peer.h)
 *
 *   skynet  1,111,111 tasks; each parent creates its 10 children as tasks,
 *           waits for them (taskwait) and sums their results. -n: leaves.
 *   fib     naive fib(n), every call with n >= 2 creates a task for
 *           fib(n-1), computes fib(n-2) itself, then taskwait. -n: n.
 *
 * Each run is one `parallel num_threads(N)` region whose `single` thread
 * starts the tree; the team's threads (libgomp keeps them between regions)
 * execute the tasks. libgomp may run a task at once instead of queueing it
 * (always with a team of one, and when too many tasks are queued), so at one
 * worker these figures are close to plain recursive calls.
 */
#include <omp.h>

#include "peer.h"

static int team_size = 1;

static void pool_setup(int workers)
{
    team_size = workers;
    omp_set_num_threads(workers);
}

/* Sum of the leaf numbers num..num+size-1. */
static long long skynet(long long num, long long size)
{
    if (size == 1)
        return num;
    long long part = size / 10;
    long long sums[10];
    for (int i = 0; i < 10; i++) {
#pragma omp task default(none) firstprivate(i, num, part) shared(sums)
        sums[i] = skynet(num + i * part, part);
    }
#pragma omp taskwait
    long long sum = 0;
    for (int i = 0; i < 10; i++)
        sum += sums[i];
    return sum;
}

static double run_skynet(long long leaves)
{
    peer_check_skynet_size(leaves);
    long long sum = 0;
    double t0 = peer_now_ns();
#pragma omp parallel num_threads(team_size) default(none) shared(sum, leaves)
#pragma omp single
    sum = skynet(0, leaves);
    double ns = peer_now_ns() - t0;
    if (sum != leaves * (leaves - 1) / 2)
        peer_fail("skynet sum %lld, want %lld", sum, leaves * (leaves - 1) / 2);
    return ns / 1e6;
}

static long long fib(long long n)
{
    if (n < 2)
        return n;
    long long a = 0;
#pragma omp task default(none) firstprivate(n) shared(a)
    a = fib(n - 1);
    long long b = fib(n - 2);
#pragma omp taskwait
    return a + b;
}

static double run_fib(long long n)
{
    long long r = 0;
    double t0 = peer_now_ns();
#pragma omp parallel num_threads(team_size) default(none) shared(r, n)
#pragma omp single
    r = fib(n);
    double ns = peer_now_ns() - t0;
    if (r != peer_fib_serial(n))
        peer_fail("fib(%lld) = %lld, want %lld", n, r, peer_fib_serial(n));
    return ns / 1e6;
}

static const struct peer_bench benches[] = {
    {"skynet", "ms", 1000000, 0, run_skynet},
    {"fib", "ms", 30, 0, run_fib},
};

int main(int argc, char **argv)
{
    struct peer_hooks hooks = {pool_setup, NULL};
    return peer_main(argc, argv, "openmp", benches, sizeof benches / sizeof benches[0],
                     hooks);
}
