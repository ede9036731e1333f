// Boost.Fiber peer for weft's scaling benchmarks: the same work written with
// boost::fibers, scheduled by algo::work_stealing on N threads.
//
// Usage: peer-boost-fiber <bench> [-w N] [-n SIZE]   (see peer.h)
//
//   skynet         1,111,111 fibers; each parent joins its 10 children, which
//                  leave their sums in the parent's array. -n: leaves.
//   fib            naive fib(n), every call with n >= 2 runs fib(n-1) in a
//                  child fiber and joins it. -n: n (default 30).
//   spawn          a root fiber starts n empty fibers (with launch::dispatch
//                  each runs to its end at once), then joins each one.
//   yield          two fibers alternately call this_fiber::yield(), n
//                  switches in total; always one thread.
//   chan-pingpong  two fibers pass a token through two
//                  boost::fibers::unbuffered_channel (rendezvous: push waits
//                  for the matching pop, like an unbuffered Go channel).
//   mutex          64 fibers increment one counter under a
//                  boost::fibers::mutex; value is ns per lock/unlock pair.
//
// Scheduling: work_stealing must be installed on every thread taking part,
// and its constructor waits (on a barrier inside Boost) until all N have
// installed it, so it can be set up only once per process. The main thread
// is one of the N; the other N-1 threads install it and then park their
// main fiber on a fiber condition variable, which leaves their dispatcher
// free to steal and run fibers until teardown sets `pool_done`. Idle
// threads spin (work_stealing's suspend=false, Boost's default).
//
// Starting fibers: launch::dispatch (the child runs at once, its parent
// waits in the ready queue) on 16 KiB fixedsize_stack stacks (the page-
// rounded stack_traits::minimum_size()): Boost's own skynet programs use
// dispatch and small fixed stacks too, and both make Boost faster here than
// its defaults (launch::post, 128 KiB stacks). The reason is memory:
// work_stealing hands a terminated fiber (and its stack) back only from the
// dispatcher, which runs only when its ready queue drains, so on a busy
// thread most fibers of a skynet/fib/spawn tree stay allocated until the
// tree is done (peak RSS grows linearly with the tree: 3.7 GB at 1,000,000
// leaves on one thread), and touching that much memory dominates the run.
// PEER_BOOST_LAUNCH=post|dispatch and PEER_BOOST_STACK=<bytes> override the
// choice, to measure the defaults.
#include <boost/fiber/all.hpp>

#include <cstdint>
#include <cstring>
#include <utility>
#include <thread>
#include <vector>

#include "peer.h"

namespace {

using boost::fibers::fiber;

// How fibers are started; see the header comment. Set once by pool_setup.
boost::fibers::launch launch_policy = boost::fibers::launch::dispatch;
std::size_t stack_size = 16 * 1024;

// Every fiber of this peer is started here.
template <typename... Args>
fiber start(Args &&...args)
{
    return fiber(launch_policy, std::allocator_arg,
                 boost::fibers::fixedsize_stack(stack_size),
                 std::forward<Args>(args)...);
}

std::vector<std::thread> pool_threads;
boost::fibers::mutex pool_mutex;
boost::fibers::condition_variable pool_cond;
bool pool_done = false;

void pool_setup(int workers)
{
    if (const char *l = getenv("PEER_BOOST_LAUNCH")) {
        if (strcmp(l, "post") == 0)
            launch_policy = boost::fibers::launch::post;
        else if (strcmp(l, "dispatch") != 0)
            peer_fail("PEER_BOOST_LAUNCH must be post or dispatch, not '%s'", l);
    }
    if (const char *st = getenv("PEER_BOOST_STACK"))
        stack_size = static_cast<std::size_t>(peer_parse_positive("PEER_BOOST_STACK", st));
    const auto n = static_cast<std::uint32_t>(workers);
    for (int i = 1; i < workers; i++) {
        pool_threads.emplace_back([n] {
            boost::fibers::use_scheduling_algorithm<
                boost::fibers::algo::work_stealing>(n);
            std::unique_lock<boost::fibers::mutex> lock(pool_mutex);
            pool_cond.wait(lock, [] { return pool_done; });
        });
    }
    boost::fibers::use_scheduling_algorithm<boost::fibers::algo::work_stealing>(n);
}

void pool_teardown()
{
    {
        std::unique_lock<boost::fibers::mutex> lock(pool_mutex);
        pool_done = true;
    }
    pool_cond.notify_all();
    for (auto &t : pool_threads)
        t.join();
}

// Runs fn in a root fiber and returns the wall time in ns, so every benchmark
// starts from a fiber that any worker may run, as weft's do.
template <typename Fn>
double time_root(Fn fn)
{
    double t0 = peer_now_ns();
    fiber root = start(fn);
    root.join();
    return peer_now_ns() - t0;
}

// Sum of the leaf numbers num..num+size-1.
long long skynet(long long num, long long size)
{
    if (size == 1)
        return num;
    long long part = size / 10;
    long long sums[10];
    fiber children[10];
    for (int i = 0; i < 10; i++)
        children[i] = start([&sums, i, num, part] {
            sums[i] = skynet(num + i * part, part);
        });
    long long sum = 0;
    for (int i = 0; i < 10; i++) {
        children[i].join();
        sum += sums[i];
    }
    return sum;
}

double run_skynet(long long leaves)
{
    peer_check_skynet_size(leaves);
    long long sum = 0;
    double ns = time_root([&sum, leaves] { sum = skynet(0, leaves); });
    if (sum != leaves * (leaves - 1) / 2)
        peer_fail("skynet sum %lld, want %lld", sum, leaves * (leaves - 1) / 2);
    return ns / 1e6;
}

long long fib(long long n)
{
    if (n < 2)
        return n;
    long long a = 0;
    fiber child = start([&a, n] { a = fib(n - 1); });
    long long b = fib(n - 2);
    child.join();
    return a + b;
}

double run_fib(long long n)
{
    long long r = 0;
    double ns = time_root([&r, n] { r = fib(n); });
    if (r != peer_fib_serial(n))
        peer_fail("fib(%lld) = %lld, want %lld", n, r, peer_fib_serial(n));
    return ns / 1e6;
}

double run_spawn(long long count)
{
    long long joined = 0;
    double ns = time_root([&joined, count] {
        std::vector<fiber> fibers;
        fibers.reserve(static_cast<std::size_t>(count));
        for (long long i = 0; i < count; i++)
            fibers.push_back(start([] {}));
        for (auto &f : fibers) {
            f.join();
            joined++;
        }
    });
    if (joined != count)
        peer_fail("spawn joined %lld fibers, want %lld", joined, count);
    return ns / static_cast<double>(count);
}

// Checks that the fibers really alternate: after nearly every yield (start-
// up and the last rounds aside) the other one must have run. last names the
// fiber that ran most recently; one thread runs both.
double run_yield(long long switches)
{
    long long half = switches / 2, counts[2] = {0, 0}, alternated = 0;
    if (half == 0)
        peer_fail("yield needs at least 2 switches");
    double ns = time_root([&counts, &alternated, half] {
        int last = -1;
        auto body = [&counts, &alternated, &last, half](int me) {
            for (long long i = 0; i < half; i++) {
                last = me;
                boost::this_fiber::yield();
                alternated += last != me;
                counts[me]++;
            }
        };
        fiber a = start(body, 0), b = start(body, 1);
        a.join();
        b.join();
    });
    if (counts[0] != half || counts[1] != half)
        peer_fail("yield counts %lld/%lld, want %lld each", counts[0], counts[1], half);
    if (alternated < 2 * half * 9 / 10 - 4)
        peer_fail("yield: only %lld of %lld yields switched to the other fiber",
                  alternated, 2 * half);
    return ns / static_cast<double>(2 * half);
}

double run_pingpong(long long trips)
{
    using channel = boost::fibers::unbuffered_channel<long long>;
    using boost::fibers::channel_op_status;
    long long last = -1;
    bool ok_a = true, ok_b = true;
    double ns = time_root([&last, &ok_a, &ok_b, trips] {
        channel ping, pong;
        fiber a = start([&] {
            for (long long i = 0; i < trips; i++) {
                ok_a &= ping.push(i) == channel_op_status::success;
                ok_a &= pong.pop(last) == channel_op_status::success;
            }
        });
        fiber b = start([&] {
            long long v = 0;
            for (long long i = 0; i < trips; i++) {
                ok_b &= ping.pop(v) == channel_op_status::success;
                ok_b &= pong.push(v + 1) == channel_op_status::success;
            }
        });
        a.join();
        b.join();
    });
    if (!ok_a || !ok_b || last != trips)
        peer_fail("chan-pingpong: last token %lld, want %lld", last, trips);
    return ns / static_cast<double>(trips);
}

double run_mutex(long long total)
{
    const int nfibers = 64;
    long long per = total < nfibers ? 1 : total / nfibers;
    long long counter = 0;
    double ns = time_root([&counter, per] {
        boost::fibers::mutex m;
        std::vector<fiber> fibers;
        for (int f = 0; f < nfibers; f++)
            fibers.push_back(start([&m, &counter, per] {
                for (long long i = 0; i < per; i++) {
                    std::lock_guard<boost::fibers::mutex> hold(m);
                    counter++;
                }
            }));
        for (auto &f : fibers)
            f.join();
    });
    if (counter != per * nfibers)
        peer_fail("mutex counter %lld, want %lld", counter, per * nfibers);
    return ns / static_cast<double>(per * nfibers);
}

const struct peer_bench benches[] = {
    {"skynet", "ms", 1000000, 0, run_skynet},
    {"fib", "ms", 30, 0, run_fib},
    {"spawn", "ns", 1000000, 0, run_spawn},
    {"yield", "ns", 10000000, 1, run_yield},
    {"chan-pingpong", "ns", 1000000, 0, run_pingpong},
    {"mutex", "ns", 6400000, 0, run_mutex},
};

} // namespace

int main(int argc, char **argv)
{
    return peer_main(argc, argv, "boost-fiber", benches,
                     sizeof benches / sizeof benches[0],
                     peer_hooks{pool_setup, pool_teardown});
}
