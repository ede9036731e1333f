/*
 * A process for weft-dump(1) to read (test_dump.c's tool tests): runs the
 * dump scenario (dump_scenario.h), checks its own report, prints "ready"
 * on stdout once every fiber is where it should be (or "fail: why"),
 * then waits for a line (or EOF) on stdin, releases every fiber, and
 * exits 0 if they all finished with their exact results.
 */
#include <weft.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dump_scenario.h"
#include "ctx/unwind.h"
#include "io/dumpsrv.h"

#define DEADLINE_NS (60ll * 1000000000)

static char why[512];

/* The report of this process in the kind asked for, NUL-terminated in
 * *out (malloc'd). Its length, or -1. */
static long report(int json, char **out)
{
    int fd = memfd_create("dump", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    long len = -1;
    if (weft__report(fd, json) == 0) {
        off_t end = lseek(fd, 0, SEEK_END);
        char *b = malloc((size_t)end + 1);
        if (b && pread(fd, b, (size_t)end, 0) == end) {
            b[end] = 0;
            *out = b;
            len = (long)end;
        } else {
            free(b);
        }
    }
    close(fd);
    return len;
}

static void pause_ms(long ms)
{
    struct timespec ts = { 0, ms * 1000000 };
    nanosleep(&ts, NULL);
}

static void *control(void *arg)
{
    (void)arg;
    uint64_t end = weft_now() + DEADLINE_NS;
    while (atomic_load(&sc_ready) == 0 && weft_now() < end)
        pause_ms(5);
    int ok = atomic_load(&sc_ready) == 1;
    if (!ok)
        snprintf(why, sizeof why, "the scenario did not start");
    /* Wait until the report shows everything in place (polling, with a
     * deadline: fibers reach their waits in their own time). */
    while (ok) {
        char *text = NULL;
        long len = report(1, &text);
        int good = len >= 0 && sc_check_json(text, (size_t)len, weft__unwind_full(),
                                              0, why, sizeof why);
        free(text);
        if (good)
            break;
        if (weft_now() > end) {
            ok = 0;
            break;
        }
        pause_ms(10);
    }
    printf(ok ? "ready\n" : "fail: %s\n", why);
    fflush(stdout);
    char line[64];
    (void)!fgets(line, sizeof line, stdin);
    sc_release();
    return NULL;
}

int main(void)
{
    if (sc_prepare() != 0) {
        printf("fail: setup\n");
        return 1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, control, NULL) != 0)
        return 1;
    weft_config c;
    weft_config_init(&c);
    c.workers = 4;
    int rc = weft_run(&c, sc_main, NULL);
    pthread_join(t, NULL);
    if (rc != 0) {
        fprintf(stderr, "dump-target: weft_run: %d\n", rc);
        return 1;
    }
    if (!sc_results_ok(why, sizeof why)) {
        fprintf(stderr, "dump-target: %s\n", why);
        return 1;
    }
    return 0;
}
