/*
 * coro_producer_consumer: a consumer coroutine fed by its producer.
 *
 * Values travel both ways through one resume/yield pair:
 *
 *   producer (main)                         consumer (coroutine)
 *   weft_coro_resume(co, item, &answer) --> item = weft_coro_yield(co, answer)
 *   answer                              <-- the value passed to that yield
 *
 * The consumer sits in weft_coro_yield waiting for work. Each resume hands
 * it an item and each yield hands back the answer for that item ("200 OK").
 * The item's pointer stays the producer's: the consumer only reads it
 * while it runs.
 *
 * The very first resume cannot deliver an item: it starts the coroutine
 * and becomes its `arg`. So main "primes" the consumer with a first resume
 * whose `in` is ignored, which runs it up to its first yield; from then on
 * every resume is answered by exactly one yield.
 *
 * A NULL item tells the consumer to stop. It then returns a summary; the
 * return value arrives in the last resume's *out, which returns 0 because
 * the coroutine is now dead. The summary is allocated with malloc and
 * handed to main to free: a pointer into the consumer's own locals would
 * dangle, because a dead coroutine's stack is released.
 *
 * Expected output:
 *   consumer: ready
 *   producer: sending "apples"
 *   consumer: received "apples"
 *   producer: answer "200 OK"
 *   producer: sending "bread"
 *   consumer: received "bread"
 *   producer: answer "200 OK"
 *   producer: sending "cheese"
 *   consumer: received "cheese"
 *   producer: answer "200 OK"
 *   producer: sending "dates"
 *   consumer: received "dates"
 *   producer: answer "200 OK"
 *   producer: sending end of stream
 *   consumer: stopping
 *   producer: consumer took 4 items, 22 bytes
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

/* What the consumer returns when told to stop; main frees it. */
struct summary {
    int    items;
    size_t bytes;
};

static void *consumer(weft_coro *co, void *arg)
{
    (void)arg; /* the priming resume carries nothing */

    struct summary *sum = malloc(sizeof *sum);
    if (!sum) {
        fprintf(stderr, "consumer: out of memory\n");
        exit(EXIT_FAILURE);
    }
    sum->items = 0;
    sum->bytes = 0;

    printf("consumer: ready\n");
    /* Suspend with nothing to say; the next resume brings the first item. */
    const char *item = weft_coro_yield(co, NULL);
    while (item) {
        printf("consumer: received \"%s\"\n", item);
        sum->items++;
        sum->bytes += strlen(item);
        /* Answer this item and wait for the next one, in one call. */
        item = weft_coro_yield(co, "200 OK");
    }
    printf("consumer: stopping\n");
    return sum;
}

/* Resume the consumer with `in`; on failure report it and exit. */
static int resume_or_die(weft_coro *co, void *in, void **out)
{
    int rc = weft_coro_resume(co, in, out);
    if (rc < 0) {
        fprintf(stderr, "weft_coro_resume: %s\n", strerror(-rc));
        exit(EXIT_FAILURE);
    }
    return rc;
}

int main(void)
{
    /* Writable copies: the consumer is handed pointers, not literals. */
    char items[][8] = { "apples", "bread", "cheese", "dates" };
    enum { NITEMS = sizeof items / sizeof items[0] };

    weft_coro *co = weft_coro_new(consumer, 0);
    if (!co) {
        fprintf(stderr, "weft_coro_new: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }

    /* Prime: run the consumer up to its first yield. It must still be
     * alive afterwards (rc 1), or there is nobody to send to. */
    if (resume_or_die(co, NULL, NULL) != 1) {
        fprintf(stderr, "consumer ended before taking any item\n");
        return EXIT_FAILURE;
    }

    for (int i = 0; i < NITEMS; i++) {
        void *answer;
        printf("producer: sending \"%s\"\n", items[i]);
        if (resume_or_die(co, items[i], &answer) != 1) {
            fprintf(stderr, "consumer ended early\n");
            return EXIT_FAILURE;
        }
        printf("producer: answer \"%s\"\n", (const char *)answer);
    }

    /* NULL is the end of the stream: the consumer returns its summary. */
    void *ret;
    printf("producer: sending end of stream\n");
    if (resume_or_die(co, NULL, &ret) != 0) {
        fprintf(stderr, "consumer did not stop\n");
        return EXIT_FAILURE;
    }
    struct summary *sum = ret;
    printf("producer: consumer took %d items, %zu bytes\n", sum->items,
           sum->bytes);

    free(sum);
    weft_coro_free(co);
    return EXIT_SUCCESS;
}
