/*
 * Program for test-gdb-fibers: a runtime of two workers whose fibers are
 * parked in five kinds of waits, each from a function of its own with a
 * name gdb_fibers.sh can look for in a backtrace. Once every one of them
 * is parked and its context saved, the main fiber calls
 * gdb_fibers_ready(), where the script's gdb has a breakpoint and runs
 * tools/weft-gdb.py's commands, on the live process and on a core file
 * of it (`gdb-fibers mprotect-guard`: see main).
 *
 * "Context saved" needs care: the registry marks a fiber parked just
 * before it switches away, so a parked fiber on another worker may not
 * have saved its registers yet. The main fiber therefore also waits until
 * every other worker has gone idle (which it does only after its
 * switches are over); a fiber that parked on the main fiber's own worker
 * finished its switch before the main fiber got that worker back.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"
#include "sched/sched.h"

enum { FIB_SLEEP, FIB_JOIN, FIB_RECV, FIB_LOCK, FIB_READ, NFIBERS };

static const char *const fiber_names[NFIBERS] = {
    "sleeper", "joiner", "chan-reader", "mutex-waiter", "pipe-reader",
};
static const unsigned fiber_waits[NFIBERS] = {
    WAIT_SLEEP, WAIT_JOIN, WAIT_CHAN_RECV, WAIT_MUTEX, WAIT_FD_READ,
};

/* Read by gdb_fibers.sh through gdb: the fibers' ids and wait objects. */
uint64_t gdb_fibers_ids[NFIBERS];
uint64_t gdb_fibers_main_id;
weft_chan *gdb_fibers_chan;
weft_mutex gdb_fibers_mutex = WEFT_MUTEX_INIT;
int gdb_fibers_pipe[2];

static struct weft_fiber *fibers[NFIBERS];

/* The waits. The empty asm after each call keeps it from being a tail
 * call, so every one of these functions has a frame of its own. */
__attribute__((noinline)) static void gdb_fibers_sleep_here(void)
{
    weft_sleep((int64_t)3600 * 1000000000);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void gdb_fibers_join_here(void)
{
    weft_join(fibers[FIB_SLEEP], NULL);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void gdb_fibers_recv_here(void)
{
    int x;
    weft_chan_recv(gdb_fibers_chan, &x);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void gdb_fibers_lock_here(void)
{
    weft_mutex_lock(&gdb_fibers_mutex);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void gdb_fibers_read_here(void)
{
    char c;
    weft_read(gdb_fibers_pipe[0], &c, 1);
    __asm__ volatile("" ::: "memory");
}

static void *fiber_main(void *arg)
{
    switch ((int)(intptr_t)arg) {
    case FIB_SLEEP: gdb_fibers_sleep_here(); break;
    case FIB_JOIN:  gdb_fibers_join_here();  break;
    case FIB_RECV:  gdb_fibers_recv_here();  break;
    case FIB_LOCK:  gdb_fibers_lock_here();  break;
    case FIB_READ:  gdb_fibers_read_here();  break;
    }
    return NULL;
}

/* The breakpoint. */
__attribute__((noinline)) void gdb_fibers_ready(void);
__attribute__((noinline)) void gdb_fibers_ready(void)
{
    __asm__ volatile("" ::: "memory");
}

static int all_parked(void)
{
    for (int i = 0; i < NFIBERS; i++)
        if (atomic_load(&fibers[i]->rstate) != FS_PARKED ||
            atomic_load(&fibers[i]->wait) != fiber_waits[i])
            return 0;
    /* Looked at after the fibers: see the top of the file. */
    int me = weft_worker();
    for (unsigned i = 0; i < weft__rt.nworkers; i++)
        if ((int)i != me && atomic_load(&weft__rt.workers[i].wstate) != WS_PARKED)
            return 0;
    return 1;
}

static void main_fiber(void *arg)
{
    (void)arg;
    gdb_fibers_main_id = weft_fiber_id(weft_self());
    gdb_fibers_chan = weft_chan_new(sizeof(int), 0);
    if (!gdb_fibers_chan || pipe2(gdb_fibers_pipe, O_CLOEXEC) != 0) {
        perror("gdb-fibers: setup");
        _exit(2);
    }
    weft_mutex_lock(&gdb_fibers_mutex);
    for (int i = 0; i < NFIBERS; i++) {
        weft_spawn_opts o = { .name = fiber_names[i] };
        fibers[i] = weft_spawn_ex(&o, fiber_main, (void *)(intptr_t)i);
        if (!fibers[i]) {
            perror("gdb-fibers: spawn");
            _exit(2);
        }
        gdb_fibers_ids[i] = weft_fiber_id(fibers[i]);
    }
    while (!all_parked())
        weft_yield();
    gdb_fibers_ready();
    /* The sleeper would keep the run going for an hour: leave now. */
    puts("gdb-fibers: done");
    fflush(stdout);
    _exit(0);
}

int main(int argc, char **argv)
{
    /* gdb's gcore (13 at least) leaves out a whole mapping when part of
     * it cannot be read, which is what guard pages installed with
     * MADV_GUARD_INSTALL inside a stack's mapping look like: the core
     * variant of the test asks for PROT_NONE guard pages, separate
     * mappings that gcore skips on their own. */
    if (argc > 1 && strcmp(argv[1], "mprotect-guard") == 0)
        weft__stack_force_mprotect_guard(1);
    weft_config cfg;
    weft_config_init(&cfg);
    cfg.workers = 2;
    cfg.pin = 0;
    int rc = weft_run(&cfg, main_fiber, NULL);
    fprintf(stderr, "gdb-fibers: weft_run returned %d\n", rc);
    return 1;
}
