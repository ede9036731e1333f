/*
 * chan_worker_pool: a pool of worker fibers fed by a channel, with the
 * results collected through a wait group.
 *
 * main sends 12 jobs (the numbers 1..12) into a buffered channel and
 * closes it; four workers receive jobs until the channel is drained and
 * closed, compute the length of each number's Collatz sequence, store it
 * in the job's own slot of the results array, and mark the job done on the
 * wait group. main waits on the group, then prints the results in job
 * order, so the output does not depend on which worker took which job:
 *
 *   collatz(1) = 0 steps
 *   ...
 *   collatz(12) = 9 steps
 *   12 jobs, 4 workers, 90 steps in all
 */
#include <stdio.h>

#include <weft.h>

#define JOBS    12
#define WORKERS 4

struct pool {
    weft_chan *jobs;
    weft_wg    done;
    int        steps[JOBS + 1]; /* each slot written by one worker only */
};

static int collatz(long n)
{
    int steps = 0;
    for (; n != 1; steps++)
        n = n % 2 ? 3 * n + 1 : n / 2;
    return steps;
}

static void *worker(void *arg)
{
    struct pool *p = arg;
    int job;
    while (weft_chan_recv(p->jobs, &job) == 0) {
        p->steps[job] = collatz(job);
        weft_wg_done(&p->done); /* publishes steps[job] to the waiter */
    }
    return NULL;
}

static void main_fiber(void *arg)
{
    (void)arg;
    struct pool p = { .jobs = weft_chan_new(sizeof(int), 4), .done = WEFT_WG_INIT };
    weft_fiber *workers[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        workers[i] = weft_spawn(worker, &p);
    weft_wg_add(&p.done, JOBS);
    for (int job = 1; job <= JOBS; job++)
        weft_chan_send(p.jobs, &job);
    weft_chan_close(p.jobs);
    weft_wg_wait(&p.done);
    int total = 0;
    for (int job = 1; job <= JOBS; job++) {
        printf("collatz(%d) = %d steps\n", job, p.steps[job]);
        total += p.steps[job];
    }
    printf("%d jobs, %d workers, %d steps in all\n", JOBS, WORKERS, total);
    for (int i = 0; i < WORKERS; i++)
        weft_join(workers[i], NULL);
    weft_chan_free(p.jobs);
}

int main(void)
{
    int rc = weft_run(NULL, main_fiber, NULL);
    if (rc != 0) {
        fprintf(stderr, "weft_run: error %d\n", rc);
        return 1;
    }
    return 0;
}
