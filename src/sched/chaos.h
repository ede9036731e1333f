/*
 * Chaos mode (WEFT_DEBUG_CHAOS=SEED): perturbations at the runtime's race
 * windows, to make rare interleavings common in tests. Internal.
 *
 * Each window in the runtime carries one hook naming its site:
 *
 *   weft__chaos(SITE)          any context, locks held or not: may yield
 *                              the CPU to the OS (sched_yield), spin a
 *                              short while, or rarely sleep up to 200 us;
 *                              at the windows after a publishing step
 *                              (chaos.c's publish_window) 1 hit in 16
 *                              sleeps 20-500 us, long enough for the
 *                              other party to run to its end;
 *   weft__chaos_move(SITE)     only where the caller holds no runtime lock
 *                              and may switch (the entry of a blocking
 *                              call): the same, or, in a fiber with more
 *                              than one worker, a forced migration to
 *                              another worker (a park whose commit readies
 *                              the fiber in that worker's inbox).
 *
 * The choice comes from a per-thread xorshift PRNG seeded from SEED and
 * the worker's index (plain threads: SEED and the order in which they
 * first met a hook), so a worker makes the same sequence of choices for a
 * given seed; interleavings still differ from run to run, but a seed that
 * failed once fails again far more often than chance.
 *
 * Off (the default), each hook is one load of a global and a branch that
 * is predicted not taken; the slow path is out of line. Release builds
 * compile the hooks out (Meson option `chaos`, auto: on in every other
 * build type): measured, they cost chan-pingpong 12% of its instructions
 * (callgrind), too much for a debugging aid. The seed in use is
 * printed once to stderr when a run starts ("weft: chaos mode, seed N"),
 * so a failure can be replayed.
 */
#ifndef WEFT_SCHED_CHAOS_H
#define WEFT_SCHED_CHAOS_H

#include <stdatomic.h>

enum weft__chaos_site {
    CHAOS_SPIN_LOCK,      /* a contended spinlock, before retrying       */
    CHAOS_PARK_COMMIT,    /* a park commit, before it publishes the fiber */
    CHAOS_PARK_COMMITTED, /* a park commit, after it published the fiber */
    CHAOS_WAKE,           /* a waker, before it readies a claimed waiter */
    CHAOS_BLOCK,          /* entry of a blocking call (may migrate)      */
    CHAOS_MUTEX_UNLOCK,   /* unlock, between claiming and releasing      */
    CHAOS_MUTEX_QUEUE,    /* lock, with the queue lock held, before queueing */
    CHAOS_SEM_POST,       /* post, before the CAS that adds or releases  */
    CHAOS_WG_ADD,         /* add, before the CAS that may reach zero     */
    CHAOS_COND_RELEASE,   /* cond wait's commit, between its two releases */
    CHAOS_CHAN,           /* a channel op, after unlocking, before waking */
    CHAOS_SELECT_RELEASE, /* select's commit, between its releases       */
    CHAOS_READY,          /* a fiber being made runnable                 */
    CHAOS_STEAL,          /* a thief, before taking from a victim        */
    CHAOS_IDLE,           /* the idle protocol, before a worker parks    */
    CHAOS_NETPOLL,        /* the netpoller's slot protocol               */
    CHAOS_JOIN,           /* join and a fiber's finish                   */
    CHAOS_NSITES
};

/* Nonzero while a run has chaos mode on. Written before the workers
 * start, read-only while they run. */
extern _Atomic int weft__chaos_on;

void weft__chaos_hit(enum weft__chaos_site site);
void weft__chaos_hit_move(enum weft__chaos_site site);

#if WEFT__CHAOS
static inline __attribute__((always_inline)) void weft__chaos(enum weft__chaos_site site)
{
    /* Relaxed: set before the run's threads start (see above). */
    if (__builtin_expect(atomic_load_explicit(&weft__chaos_on, memory_order_relaxed), 0))
        weft__chaos_hit(site);
}

static inline __attribute__((always_inline)) void weft__chaos_move(enum weft__chaos_site site)
{
    /* Relaxed: as in weft__chaos. */
    if (__builtin_expect(atomic_load_explicit(&weft__chaos_on, memory_order_relaxed), 0))
        weft__chaos_hit_move(site);
}
#else
/* Built without the hooks (-Dchaos=disabled, or a release build). */
static inline void weft__chaos(enum weft__chaos_site site)
{
    (void)site;
}

static inline void weft__chaos_move(enum weft__chaos_site site)
{
    (void)site;
}
#endif

/* Read WEFT_DEBUG_CHAOS for the run that starts (weft_run, before the
 * workers start): on with its seed, or off. Prints the seed when on. */
void weft__chaos_configure(void);

#endif
