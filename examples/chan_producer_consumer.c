/*
 * chan_producer_consumer: two fibers connected by a buffered channel.
 *
 * The producer sends the numbers 1..10 and closes the channel; the
 * consumer receives until weft_chan_recv reports -EPIPE (closed and
 * drained), printing each value. The channel holds at most three values,
 * so the producer runs ahead of the consumer by at most three and then
 * waits (parks) for room. Only the consumer prints, so the output is the
 * same whichever worker runs which fiber:
 *
 *   got 1
 *   ...
 *   got 10
 *   channel closed after 10 values, sum 55
 */
#include <errno.h>
#include <stdio.h>

#include <weft.h>

static void *producer(void *arg)
{
    weft_chan *ch = arg;
    for (int i = 1; i <= 10; i++)
        weft_chan_send(ch, &i);
    weft_chan_close(ch); /* the consumer still gets what is buffered */
    return NULL;
}

static void *consumer(void *arg)
{
    weft_chan *ch = arg;
    int v, n = 0, sum = 0;
    while (weft_chan_recv(ch, &v) == 0) {
        printf("got %d\n", v);
        n++;
        sum += v;
    }
    printf("channel closed after %d values, sum %d\n", n, sum);
    return NULL;
}

static void main_fiber(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_new(sizeof(int), 3);
    if (!ch) {
        perror("weft_chan_new");
        return;
    }
    weft_fiber *c = weft_spawn(consumer, ch);
    weft_fiber *p = weft_spawn(producer, ch);
    weft_join(p, NULL);
    weft_join(c, NULL);
    weft_chan_free(ch); /* nobody uses it any more */
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
