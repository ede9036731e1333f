/*
 * chan_prime_sieve: the concurrent prime sieve (from Go's tour), a
 * pipeline of fibers connected by unbuffered channels.
 *
 *   generate --2,3,4,...--> filter(2) --> filter(3) --> filter(5) --> main
 *
 * The generator sends 2, 3, 4, ... The first number to reach the end of
 * the chain is prime; main prints it and appends a filter fiber that
 * drops its multiples. After N primes main shuts the pipeline down from
 * the far end: it closes the channel it reads from, so the last filter's
 * next send fails with -EPIPE; that filter then closes its own input, and
 * so on back to the generator. weft_run returns once every fiber is done.
 *
 * Output: the first 20 primes, one per line.
 */
#include <stdio.h>

#include <weft.h>

#define N 20

struct filter {
    weft_chan *in, *out;
    int        prime;
};

static void *generate(void *arg)
{
    weft_chan *out = arg;
    for (int i = 2;; i++)
        if (weft_chan_send(out, &i) != 0)
            break; /* downstream closed: the pipeline is shutting down */
    return NULL;
}

static void *filter(void *arg)
{
    struct filter *f = arg;
    int v;
    while (weft_chan_recv(f->in, &v) == 0)
        if (v % f->prime != 0 && weft_chan_send(f->out, &v) != 0)
            break;
    weft_chan_close(f->in); /* pass the shutdown upstream */
    return NULL;
}

static void main_fiber(void *arg)
{
    (void)arg;
    weft_chan *chans[N + 1];
    weft_fiber *fibers[N + 1];
    struct filter filters[N];
    chans[0] = weft_chan_new(sizeof(int), 0);
    fibers[0] = weft_spawn(generate, chans[0]);
    int n = 0;
    for (; n < N; n++) {
        int prime;
        if (weft_chan_recv(chans[n], &prime) != 0)
            break;
        printf("%d\n", prime);
        chans[n + 1] = weft_chan_new(sizeof(int), 0);
        filters[n] = (struct filter){ chans[n], chans[n + 1], prime };
        fibers[n + 1] = weft_spawn(filter, &filters[n]);
    }
    weft_chan_close(chans[n]);
    for (int i = 0; i <= n; i++)
        weft_join(fibers[i], NULL);
    for (int i = 0; i <= n; i++)
        weft_chan_free(chans[i]);
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
