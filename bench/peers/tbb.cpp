// oneTBB peer for weft's scaling benchmarks: the same task trees written
// with tbb::task_group. TBB tasks are not fibers: they have no stack of their
// own and a waiting task_group::wait() runs queued tasks inline, so this peer
// shows what the work costs without stackful switching.
//
// Usage: peer-tbb <bench> [-w N] [-n SIZE]   (see peer.h)
//
//   skynet  1,111,111 tasks; each parent runs its 10 children in a
//           task_group, waits, and sums the results. -n: leaves.
//   fib     naive fib(n), every call with n >= 2 runs fib(n-1) as a task in
//           a task_group, computes fib(n-2) itself, then waits. -n: n.
//   spawn   one task_group runs n empty tasks, then waits. -n: count.
//
// N workers: tbb::global_control caps the process at N threads (the main
// thread included), and every run executes inside a task_arena of N slots.
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <memory>

#include "peer.h"

namespace {

std::unique_ptr<tbb::global_control> limit;
std::unique_ptr<tbb::task_arena> arena;

void pool_setup(int workers)
{
    limit = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism,
        static_cast<std::size_t>(workers));
    arena = std::make_unique<tbb::task_arena>(workers);
    arena->initialize();
}

void pool_teardown()
{
    arena.reset();
    limit.reset();
}

template <typename Fn>
double time_in_arena(Fn fn)
{
    double t0 = peer_now_ns();
    arena->execute(fn);
    return peer_now_ns() - t0;
}

// Sum of the leaf numbers num..num+size-1.
long long skynet(long long num, long long size)
{
    if (size == 1)
        return num;
    long long part = size / 10;
    long long sums[10];
    tbb::task_group children;
    for (int i = 0; i < 10; i++)
        children.run([&sums, i, num, part] {
            sums[i] = skynet(num + i * part, part);
        });
    children.wait();
    long long sum = 0;
    for (long long s : sums)
        sum += s;
    return sum;
}

double run_skynet(long long leaves)
{
    peer_check_skynet_size(leaves);
    long long sum = 0;
    double ns = time_in_arena([&sum, leaves] { sum = skynet(0, leaves); });
    if (sum != leaves * (leaves - 1) / 2)
        peer_fail("skynet sum %lld, want %lld", sum, leaves * (leaves - 1) / 2);
    return ns / 1e6;
}

long long fib(long long n)
{
    if (n < 2)
        return n;
    long long a = 0;
    tbb::task_group child;
    child.run([&a, n] { a = fib(n - 1); });
    long long b = fib(n - 2);
    child.wait();
    return a + b;
}

double run_fib(long long n)
{
    long long r = 0;
    double ns = time_in_arena([&r, n] { r = fib(n); });
    if (r != peer_fib_serial(n))
        peer_fail("fib(%lld) = %lld, want %lld", n, r, peer_fib_serial(n));
    return ns / 1e6;
}

// Like the fibers' spawn, nothing is left to check beyond the join itself:
// wait() returns only once every task has run.
double run_spawn(long long count)
{
    double ns = time_in_arena([count] {
        tbb::task_group tasks;
        for (long long i = 0; i < count; i++)
            tasks.run([] {});
        tasks.wait();
    });
    return ns / static_cast<double>(count);
}

const struct peer_bench benches[] = {
    {"skynet", "ms", 1000000, 0, run_skynet},
    {"fib", "ms", 30, 0, run_fib},
    {"spawn", "ns", 1000000, 0, run_spawn},
};

} // namespace

int main(int argc, char **argv)
{
    return peer_main(argc, argv, "tbb", benches, sizeof benches / sizeof benches[0],
                     peer_hooks{pool_setup, pool_teardown});
}
