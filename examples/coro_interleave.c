/*
 * coro_interleave: two coroutines taking turns on one thread.
 *
 * A coroutine runs until it calls weft_coro_yield, which hands control
 * back to whoever resumed it; the next weft_coro_resume continues it from
 * that very point, local variables and all. Nothing runs concurrently:
 * main decides who runs next, so the output is fully deterministic.
 *
 * Here one coroutine counts 1..5 and the other prints the letters of
 * "abc". Each prints one line per turn and yields. main is the whole
 * "scheduler": a round-robin loop that resumes every coroutine still
 * alive, once per round, until all of them have returned. The letters run
 * out first, so the counter finishes its last rounds alone.
 *
 * Each coroutine gets its parameter from the `in` of its first resume,
 * which becomes the `arg` of its function.
 *
 * Expected output:
 *   count 1
 *   letter a
 *   count 2
 *   letter b
 *   count 3
 *   letter c
 *   count 4
 *   letters finished
 *   count 5
 *   counter finished
 *   all finished after 6 rounds
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

/* Prints 1..*arg, one number per turn. */
static void *count_up(weft_coro *co, void *arg)
{
    int limit = *(const int *)arg;

    for (int i = 1; i <= limit; i++) {
        printf("count %d\n", i);
        /* Give the turn back to main; we carry on from here next time. */
        weft_coro_yield(co, NULL);
    }
    return NULL;
}

/* Prints the characters of the string arg, one per turn. */
static void *print_letters(weft_coro *co, void *arg)
{
    for (const char *p = arg; *p; p++) {
        printf("letter %c\n", *p);
        weft_coro_yield(co, NULL);
    }
    return NULL;
}

struct task {
    const char *name;
    weft_coro_fn fn;
    void *arg;     /* the first resume's `in`: becomes fn's arg */
    weft_coro *co;
};

int main(void)
{
    int limit = 5;
    char alphabet[] = "abc";
    struct task tasks[] = {
        { "counter", count_up, &limit, NULL },
        { "letters", print_letters, alphabet, NULL },
    };
    enum { NTASKS = sizeof tasks / sizeof tasks[0] };

    for (int i = 0; i < NTASKS; i++) {
        tasks[i].co = weft_coro_new(tasks[i].fn, 0);
        if (!tasks[i].co) {
            fprintf(stderr, "weft_coro_new(%s): %s\n", tasks[i].name,
                    strerror(errno));
            return EXIT_FAILURE;
        }
    }

    int alive = NTASKS;
    int rounds = 0;
    while (alive > 0) {
        rounds++;
        for (int i = 0; i < NTASKS; i++) {
            if (weft_coro_status(tasks[i].co) == WEFT_CORO_DEAD)
                continue;
            /* The first resume starts fn(co, arg); later ones make the
             * pending weft_coro_yield return (the value is unused here). */
            int rc = weft_coro_resume(tasks[i].co, tasks[i].arg, NULL);
            if (rc < 0) {
                fprintf(stderr, "weft_coro_resume(%s): %s\n", tasks[i].name,
                        strerror(-rc));
                return EXIT_FAILURE;
            }
            if (rc == 0) { /* its function returned: it is dead now */
                printf("%s finished\n", tasks[i].name);
                alive--;
            }
        }
    }
    printf("all finished after %d rounds\n", rounds);

    for (int i = 0; i < NTASKS; i++)
        weft_coro_free(tasks[i].co);
    return EXIT_SUCCESS;
}
