/*
 * Chaos mode's slow path (see chaos.h): the per-thread PRNG and the
 * perturbations.
 */
#include "sched/chaos.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctx/arch/relax.h"
#include "sched/sched.h"

_Atomic int weft__chaos_on;
/* Written by configure; a plain thread left from an earlier run may read
 * it meanwhile, hence atomic (relaxed: any seed will do for it). */
static _Atomic uint64_t chaos_seed;
/* Bumped by every configure, so that threads reseed for a new run. */
static _Atomic unsigned chaos_gen;
/* Plain threads' ids, in the order they first meet a hook. */
static _Atomic unsigned chaos_threads;

static __thread uint64_t tls_state;
static __thread unsigned tls_gen;

/* splitmix64: spreads seed and index over the whole state. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The calling thread's next number. Any thread. */
static uint64_t next(void)
{
    /* Relaxed: the generation only changes between runs (before the
     * workers start); a plain thread racing a reconfigure reseeds later. */
    unsigned gen = atomic_load_explicit(&chaos_gen, memory_order_relaxed);
    if (tls_gen != gen) {
        struct worker *w = weft__worker_self();
        /* Relaxed: a counter; only its uniqueness matters. */
        uint64_t id = w ? w->index
                        : 0x10000u + atomic_fetch_add_explicit(&chaos_threads, 1,
                                                               memory_order_relaxed);
        tls_state = mix(atomic_load_explicit(&chaos_seed, memory_order_relaxed) ^ mix(id)) | 1;
        tls_gen = gen;
    }
    uint64_t x = tls_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return tls_state = x;
}

/* One hit: 1 in 32 yields the CPU, 2 in 32 spin up to 512 pauses,
 * 1 in 256 sleeps up to 200 us (long enough for timers and the mutex's
 * lapse to act inside the window); the rest pass. */
static void perturb(uint64_t r)
{
    switch (r & 31) {
    case 0:
        sched_yield();
        break;
    case 3: case 4:
        for (unsigned i = (unsigned)(r >> 8) % 512; i > 0; i--)
            weft__cpu_relax();
        break;
    case 7:
        if (((r >> 8) & 7) == 0) {
            struct timespec ts = { 0, (long)((r >> 16) % 200000) };
            nanosleep(&ts, NULL);
        }
        break;
    default:
        break;
    }
}

/* The windows right after a step that lets another party proceed, or
 * right before the last access that must come before it: a stall there
 * gives the other party time to run to its end (return, free, leave the
 * frame), which is what a lifetime bug needs. They stall longer and more
 * often: 1 in 16 hits sleeps 20-500 us. */
static int publish_window(enum weft__chaos_site site)
{
    switch (site) {
    case CHAOS_PARK_COMMITTED:
    case CHAOS_WAKE:
    case CHAOS_MUTEX_UNLOCK:
    case CHAOS_SEM_POST:
    case CHAOS_WG_ADD:
    case CHAOS_COND_RELEASE:
    case CHAOS_CHAN:
    case CHAOS_SELECT_RELEASE:
    case CHAOS_JOIN:
        return 1;
    default:
        return 0;
    }
}

void weft__chaos_hit(enum weft__chaos_site site)
{
    uint64_t r = next();
    if (publish_window(site) && ((r >> 40) & 15) == 0) {
        /* 1 in 16 of these: 20-500 us; 1 in 16 of those: 1-4 ms, past
         * the mutex's lapse (LAPSE_UNITS), so that other unlocks wake
         * the waiters this one has not woken yet. */
        long ns = ((r >> 44) & 15) == 0 ? 1000000 + (long)((r >> 48) % 3000000)
                                        : 20000 + (long)((r >> 48) % 480000);
        struct timespec ts = { 0, ns };
        nanosleep(&ts, NULL);
        return;
    }
    perturb(r);
}

/* Park commit of a forced migration: ready the fiber on worker arg. */
static int move_commit(struct weft_fiber *self, void *arg)
{
    weft__ready_on(arg, self);
    return 1;
}

void weft__chaos_hit_move(enum weft__chaos_site site)
{
    (void)site;
    uint64_t r = next();
    struct worker *w = weft__worker_self();
    /* Under WEFT_DEBUG_MIGRATE every switch moves already. */
    if (w && w->current && weft__rt.nworkers > 1 && !weft__rt.migrate &&
        ((r >> 5) & 7) == 0) {
        unsigned to = (w->index + 1 + (unsigned)(r >> 32) % (weft__rt.nworkers - 1)) %
                      weft__rt.nworkers;
        weft__park(move_commit, &weft__rt.workers[to]);
        return;
    }
    perturb(r);
}

void weft__chaos_configure(void)
{
    const char *s = getenv("WEFT_DEBUG_CHAOS");
    atomic_store(&weft__chaos_on, 0);
    if (!s || !*s)
        return;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || s[0] == '-') {
        fprintf(stderr, "weft: WEFT_DEBUG_CHAOS=%s is not a seed (an unsigned "
                        "number); chaos mode stays off\n", s);
        return;
    }
#if !WEFT__CHAOS
    fprintf(stderr, "weft: WEFT_DEBUG_CHAOS=%s ignored: this libweft was built "
                    "without chaos mode (meson -Dchaos=enabled, or a non-release build)\n", s);
    return;
#endif
    atomic_store_explicit(&chaos_seed, v, memory_order_relaxed);
    /* Relaxed: read by next(), ordered by the workers' start. */
    atomic_fetch_add_explicit(&chaos_gen, 1, memory_order_relaxed);
    atomic_store(&weft__chaos_on, 1);
    fprintf(stderr, "weft: chaos mode, seed %llu (WEFT_DEBUG_CHAOS)\n", v);
}
