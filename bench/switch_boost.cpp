/*
 * The boost-context row of bench-switch (switch.c): the same ping-pong as
 * weft's, between the main stack and one boost::context::fiber. Linked
 * into bench-switch only when Meson finds Boost.Context, so switch.c's
 * harness (pinning, warm-up, repetitions, output) is shared, and the loop
 * being timed is entirely in here: switch.c's clock brackets one call.
 *
 * Each resume() hands the resumer over as a fiber object and gets the
 * other side back the same way; that move is part of how Boost.Context is
 * used, so it belongs in its figure.
 */
#include <boost/context/fiber.hpp>

#include <cstdio>
#include <exception>
#include <utility>

namespace bctx = boost::context;

extern "C" {
int switch_boost_open(void);
long switch_boost_run(long n);
void switch_boost_close(void);
}

/* The suspended pong side while the main side runs; empty otherwise. */
static bctx::fiber pong_side;
static long pongs;

int switch_boost_open(void)
{
    try {
        pong_side = bctx::fiber{[](bctx::fiber &&main_side) {
            for (;;) {
                pongs++;
                main_side = std::move(main_side).resume();
            }
            return std::move(main_side);
        }};
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench-switch: boost::context::fiber: %s\n", e.what());
        return -1;
    }
    return 0;
}

long switch_boost_run(long n)
{
    pongs = 0;
    for (long i = 0; i < n; i++)
        pong_side = std::move(pong_side).resume();
    return pongs;
}

void switch_boost_close(void)
{
    /* Dropping a suspended fiber unwinds its stack (forced_unwind) and
     * frees it. */
    pong_side = bctx::fiber{};
}
