/*
 * weft_dump, the dump server and weft-dump(1).
 *
 * The scenario (dump_scenario.h) parks fibers in every wait kind, three
 * at one place, keeps one spinning forever on its worker and leaves one
 * finished and unjoined. The in-process tests dump it with weft_dump and
 * weft__report(json) from a plain thread and check every fiber's state,
 * wait reason and backtrace; then they release everything, and the run
 * must end with every fiber's exact result. The tool tests do the same
 * through tools/weft-dump against dump-target, a process running the
 * same scenario, plus its error messages. Waits poll their condition
 * against a deadline; nothing sleeps a fixed time to synchronise.
 */
#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fiber_test.h"
#include "dump_scenario.h"
#include "ctx/unwind.h"
#include "io/dumpsrv.h"
#include "io/netpoll.h"
#include "sched/sched.h"

#define DEADLINE_NS (60ll * 1000000000)

static void pause_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* A report into a memfd: weft_dump (json 0, public) or weft__report.
 * Returns the text (malloc'd, NUL-terminated) and its length in *len, or
 * NULL with the call's result in *len. */
static char *report_text(int json, long *len)
{
    int fd = memfd_create("dump", MFD_CLOEXEC);
    if (fd < 0) {
        *len = -errno;
        return NULL;
    }
    int rc = json ? weft__report(fd, 1) : weft_dump(fd);
    char *b = NULL;
    if (rc == 0) {
        off_t end = lseek(fd, 0, SEEK_END);
        b = malloc((size_t)end + 1);
        if (b && pread(fd, b, (size_t)end, 0) == end) {
            b[end] = 0;
            *len = (long)end;
        } else {
            free(b);
            b = NULL;
            *len = -EIO;
        }
    } else {
        *len = rc;
    }
    close(fd);
    return b;
}

/* ---- the scenario, in process ------------------------------------------ */

static char checker_why[1024];
static _Atomic int checker_ok;

/* The worker running the spinner, from the JSON workers list: -1 if no
 * worker shows it running. */
static int spinner_worker(const char *json, size_t len)
{
    struct jval doc;
    if (json_parse(json, len, &doc) != 0)
        return -1;
    int found = -1;
    const struct jval *ws = json_get(&doc, "workers");
    for (size_t i = 0; ws && i < ws->n; i++) {
        const struct jval *f = json_get(&ws->items[i], "fiber");
        const struct jval *id = json_get(f, "id");
        const char *st = json_str(&ws->items[i], "state");
        if (id && id->t == J_NUM && (uint64_t)id->num == sc[SC_SPIN].id && st &&
            strcmp(st, "running") == 0)
            found = (int)i;
    }
    json_free(&doc);
    return found;
}

static void *inproc_checker(void *arg)
{
    (void)arg;
    uint64_t end = weft_now() + DEADLINE_NS;
    while (atomic_load(&sc_ready) == 0 && weft_now() < end)
        pause_ms(5);
    int ok = atomic_load(&sc_ready) == 1;
    if (!ok)
        snprintf(checker_why, sizeof checker_why, "the scenario did not start");
    /* Until every fiber has reached its wait (and the done one is done). */
    while (ok) {
        long len;
        char *j = report_text(1, &len);
        int good = j && sc_check_json(j, (size_t)len, weft__unwind_full(), 0, checker_why,
                                      sizeof checker_why);
        if (good && spinner_worker(j, (size_t)len) < 0) {
            snprintf(checker_why, sizeof checker_why, "no worker shows the spinner running");
            good = 0;
        }
        free(j);
        if (good)
            break;
        if (weft_now() > end)
            ok = 0;
        else
            pause_ms(10);
    }
    /* The text report, several times: reading disturbs nothing. */
    for (int i = 0; ok && i < 3; i++) {
        long len;
        char *t = report_text(0, &len);
        if (!t) {
            snprintf(checker_why, sizeof checker_why, "weft_dump failed: %ld", len);
            ok = 0;
        } else {
            ok = sc_check_text(t, weft__unwind_full(), 0, checker_why, sizeof checker_why);
        }
        free(t);
    }
    atomic_store(&checker_ok, ok);
    sc_release();
    return NULL;
}

START_TEST(dump_every_wait_kind)
{
    ck_assert_int_eq(sc_prepare(), 0);
    atomic_store(&checker_ok, 0);
    checker_why[0] = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, inproc_checker, NULL), 0);
    run(4, sc_main, NULL);
    pthread_join(t, NULL);
    ck_assert_msg(atomic_load(&checker_ok), "%s", checker_why);
    char why[256];
    ck_assert_msg(sc_results_ok(why, sizeof why), "%s", why);
}
END_TEST

/* ---- many fibers -------------------------------------------------------- */

static weft_wg many_wg;
static _Atomic long many_parked;
static long many_n;

static __attribute__((noinline)) void *many_parked_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&many_parked, 1);
    weft_wg_wait(&many_wg);
    SC_KEEP_FRAME();
    return NULL;
}

static _Atomic int many_ok;
static char many_why[256];

/* Count the JSON report's fibers parked in wg, and the distinct stacks
 * they have. */
static void count_wg(const char *json, size_t len, long *nwg, long *nstacks, long *nfibers)
{
    *nwg = *nstacks = *nfibers = -1;
    struct jval doc;
    if (json_parse(json, len, &doc) != 0)
        return;
    const struct jval *fs = json_get(&doc, "fibers");
    long n = 0, first_stack = -2, distinct = 0;
    for (size_t i = 0; fs && i < fs->n; i++) {
        const char *k = json_str(json_get(&fs->items[i], "wait"), "kind");
        if (!k || strcmp(k, "wg") != 0)
            continue;
        n++;
        const struct jval *st = json_get(&fs->items[i], "stack");
        long s = st && st->t == J_NUM ? (long)st->num : -1;
        if (s != first_stack) {
            distinct++;
            first_stack = s;
        }
    }
    *nwg = n;
    *nstacks = distinct;
    *nfibers = fs ? (long)fs->n : -1;
    json_free(&doc);
}

static void *many_checker(void *arg)
{
    (void)arg;
    uint64_t end = weft_now() + DEADLINE_NS;
    int ok = 0;
    while (weft_now() < end) {
        if (atomic_load(&many_parked) < many_n) {
            pause_ms(5);
            continue;
        }
        long len, nwg, nstacks, nfibers;
        char *j = report_text(1, &len);
        if (j)
            count_wg(j, (size_t)len, &nwg, &nstacks, &nfibers);
        free(j);
        if (j && nwg == many_n) {
            /* Every waiter in one group with one stack (they sit in
             * stack order), and main. */
            ok = nstacks == 1 && (nfibers == many_n || nfibers == many_n + 1);
            if (!ok)
                snprintf(many_why, sizeof many_why, "%ld stacks for the waiters, %ld fibers",
                         nstacks, nfibers);
            break;
        }
        pause_ms(10);
    }
    if (ok) {
        long len;
        char *t = report_text(0, &len);
        char want[64];
        snprintf(want, sizeof want, "    %ld fibers with this stack: ids ", many_n);
        ok = t && strstr(t, want) && (!weft__unwind_full() || strstr(t, " many_parked_fn+0x"));
        if (!ok)
            snprintf(many_why, sizeof many_why, "the text report does not fold the waiters");
        free(t);
    } else if (!many_why[0]) {
        snprintf(many_why, sizeof many_why, "the waiters never all showed as parked");
    }
    atomic_store(&many_ok, ok);
    weft_wg_done(&many_wg);
    return NULL;
}

static void many_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { "many", 16 * 1024, 1 };
    for (long i = 0; i < many_n; i++)
        EXPECT(weft_spawn_ex(&o, many_parked_fn, NULL) != NULL);
}

START_TEST(dump_many_parked_fibers_folded)
{
    many_n = sized(20000);
    atomic_store(&many_parked, 0);
    atomic_store(&many_ok, 0);
    many_why[0] = 0;
    weft_wg_init(&many_wg);
    weft_wg_add(&many_wg, 1);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, many_checker, NULL), 0);
    run(2, many_main, NULL);
    pthread_join(t, NULL);
    ck_assert_msg(atomic_load(&many_ok), "%s", many_why);
}
END_TEST

/* ---- from a fiber; names that need escaping ------------------------------ */

static weft_sem names_sem;
/* Quotes, a backslash, control characters, UTF-8; and a name whose
 * 31-byte cut falls inside a two-byte character. */
static const char odd_name[] = "a\"b\\c\nd\x01\xc3\xa9";
static const char cut_name[] = "012345678901234567890123456789\xc3\xa9";

static __attribute__((noinline)) void *names_parked_fn(void *arg)
{
    (void)arg;
    weft_sem_wait(&names_sem);
    SC_KEEP_FRAME();
    return NULL;
}

static void names_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o1 = { odd_name, 0, 0 }, o2 = { cut_name, 0, 0 };
    weft_fiber *a = weft_spawn_ex(&o1, names_parked_fn, NULL);
    weft_fiber *b = weft_spawn_ex(&o2, names_parked_fn, NULL);
    EXPECT(a && b);
    /* Both parked: the report (made on this fiber's stack) shows them. */
    uint64_t end = weft_now() + DEADLINE_NS;
    int seen = 0;
    while (!seen && weft_now() < end) {
        long len;
        char *j = report_text(1, &len);
        struct jval doc;
        if (j && json_parse(j, (size_t)len, &doc) == 0) {
            int parked = 0, named = 0;
            const struct jval *fs = json_get(&doc, "fibers");
            for (size_t i = 0; fs && i < fs->n; i++) {
                const char *name = json_str(&fs->items[i], "name");
                const char *st = json_str(&fs->items[i], "state");
                if (!name)
                    continue;
                if (strcmp(name, odd_name) == 0 ||
                    strcmp(name, "012345678901234567890123456789\xef\xbf\xbd") == 0) {
                    named++;
                    parked += st && strcmp(st, "parked") == 0;
                }
                if (strcmp(name, "main") == 0)
                    EXPECT(st && strcmp(st, "running") == 0);
            }
            seen = named == 2 && parked == 2;
            json_free(&doc);
        } else {
            EXPECT(!"the JSON report parses");
            break;
        }
        free(j);
        if (!seen)
            weft_sleep(2000000);
    }
    EXPECT(seen);
    long len;
    char *t = report_text(0, &len);
    EXPECT(t && strstr(t, "'a\"b\\c?d?\xc3\xa9': sem 0x"));
    free(t);
    weft_sem_post(&names_sem);
    weft_sem_post(&names_sem);
    EXPECT(weft_join(a, NULL) == 0 && weft_join(b, NULL) == 0);
}

START_TEST(dump_from_a_fiber_with_odd_names)
{
    weft_sem_init(&names_sem, 0);
    run(2, names_main, NULL);
}
END_TEST

/* ---- without a runtime --------------------------------------------------- */

START_TEST(dump_needs_a_runtime)
{
    long len;
    char *t = report_text(0, &len);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(len, -EPERM);
    ck_assert_int_eq(weft_dump(-1), -EBADF);
    ck_assert_int_eq(weft__dumpsrv_started_ns(), 0);
}
END_TEST

/* ---- a dump that finds no fiber ------------------------------------------ */

/*
 * At the end of a run (the main fiber and every other one have returned,
 * the workers are exiting) the runtime still counts as running and the
 * dump server still answers, but the registry holds no fiber; with
 * -Dregistry=false it never holds one. That state is made here directly:
 * a runtime with no fiber marked running under report_lock, as weft_run
 * marks it, both before any run (no registry slab) and after one (slabs
 * whose every entry is free).
 */
static void mark_running(int on)
{
    pthread_mutex_lock(&weft__rt.report_lock);
    atomic_store(&weft__rt.state, on ? RT_RUNNING : RT_STOPPED);
    pthread_mutex_unlock(&weft__rt.report_lock);
}

static void no_fiber_main(void *arg)
{
    (void)arg;
}

static void no_fiber_child(void)
{
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            weft_config c;
            weft_config_init(&c);
            c.workers = 1;
            if (weft_run(&c, no_fiber_main, NULL) != 0)
                _exit(2);
        }
        mark_running(1);
        long tlen, jlen;
        char *t = report_text(0, &tlen);
        char *j = report_text(1, &jlen);
        mark_running(0);
        if (!t || !strstr(t, "weft-dump: pid") || !strstr(t, ", 0 workers")) {
            fprintf(stderr, "round %d: text report (%ld): %s\n", round, tlen, t ? t : "");
            _exit(3);
        }
        struct jval doc;
        if (!j || json_parse(j, (size_t)jlen, &doc) != 0) {
            fprintf(stderr, "round %d: JSON report (%ld): %s\n", round, jlen, j ? j : "");
            _exit(4);
        }
        const struct jval *fibers = json_get(&doc, "fibers");
        int empty = fibers && fibers->t == J_ARR && fibers->n == 0;
        json_free(&doc);
        if (!empty) {
            fprintf(stderr, "round %d: JSON fibers not an empty list: %s\n", round, j);
            _exit(5);
        }
        free(t);
        free(j);
    }
    _exit(0);
}

START_TEST(dump_with_no_fiber)
{
    /* In a child, so that a sanitizer that halts on error fails the test
     * with its exit status, and one that only prints fails it here. */
    struct child_result r = run_in_child(no_fiber_child);
    ck_assert_msg(r.exited && r.status == 0, "child: exit %d, signal %d: %s", r.status, r.sig,
                  r.err);
    ck_assert_msg(!strstr(r.err, "runtime error"), "undefined behaviour: %s", r.err);
}
END_TEST

/* ---- weft_dump on a full non-blocking socket ----------------------------- */

/*
 * weft_dump writes the whole report: on a non-blocking fd whose buffer
 * is full it waits for room (a fiber parks, a plain thread polls)
 * instead of failing with -EAGAIN half-way. The socket's send buffer is
 * made as small as the kernel allows and the report far larger (a line
 * per parked fiber); the reader starts only once the dumping fiber is
 * parked on the socket.
 */
#define FULL_PARKED 200

static weft_sem full_sem;
static int full_sv[2];
static _Atomic int full_dump_rc = 1;

static void *full_parked(void *arg)
{
    (void)arg;
    weft_sem_wait(&full_sem);
    return NULL;
}

static void *full_dumper(void *arg)
{
    (void)arg;
    atomic_store(&full_dump_rc, weft_dump(full_sv[0]));
    EXPECT(shutdown(full_sv[0], SHUT_WR) == 0);
    return NULL;
}

/* Read fd to its end; the byte count, the text in *out (malloc'd). */
static size_t read_all(int fd, char **out)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            b = realloc(b, cap *= 2);
        ssize_t n = weft_read(fd, b + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    b[len] = 0;
    *out = b;
    return len;
}

static void *full_plain_dumper(void *arg)
{
    (void)arg;
    atomic_store(&full_dump_rc, weft_dump(full_sv[0]));
    shutdown(full_sv[0], SHUT_WR);
    return NULL;
}

static void full_check(size_t len, const char *text)
{
    EXPECT(atomic_load(&full_dump_rc) == 0);
    EXPECT(len > 4 * 4608); /* well past the smallest send buffer */
    EXPECT(strstr(text, "weft-dump: pid") == text);
    EXPECT(len > 0 && text[len - 1] == '\n');
    EXPECT(strstr(text, "full-parked") != NULL);
}

static void full_main(void *arg)
{
    (void)arg;
    weft_fiber *f[FULL_PARKED];
    for (int i = 0; i < FULL_PARKED; i++) {
        weft_spawn_opts o = { .name = "full-parked" };
        f[i] = weft_spawn_ex(&o, full_parked, NULL);
    }
    for (int round = 0; round < 2; round++) {
        EXPECT(socketpair(AF_UNIX, SOCK_STREAM, 0, full_sv) == 0);
        int one = 1;
        EXPECT(setsockopt(full_sv[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof one) == 0);
        EXPECT(fcntl(full_sv[0], F_SETFL, O_NONBLOCK) == 0);
        atomic_store(&full_dump_rc, 1);
        if (round == 0) {
            /* A fiber: it must park on the socket, not give up. */
            weft_fiber *d = weft_spawn(full_dumper, NULL);
            for (;;) {
                struct np_desc *pd = np_lookup(full_sv[0]);
                if (atomic_load(&full_dump_rc) != 1 ||
                    (pd && atomic_load(&pd->slot[NP_WRITE]) > 2))
                    break;
                weft_yield();
            }
            EXPECT(atomic_load(&full_dump_rc) == 1); /* still writing */
            char *text;
            size_t len = read_all(full_sv[1], &text);
            EXPECT(weft_join(d, NULL) == 0);
            full_check(len, text);
            free(text);
        } else {
            /* A plain thread. */
            pthread_t t;
            EXPECT(pthread_create(&t, NULL, full_plain_dumper, NULL) == 0);
            char *text;
            size_t len = read_all(full_sv[1], &text);
            EXPECT(pthread_join(t, NULL) == 0);
            full_check(len, text);
            free(text);
        }
        EXPECT(weft_close(full_sv[0]) == 0 && weft_close(full_sv[1]) == 0);
    }
    for (int i = 0; i < FULL_PARKED; i++)
        weft_sem_post(&full_sem);
    for (int i = 0; i < FULL_PARKED; i++)
        EXPECT(weft_join(f[i], NULL) == 0);
}

START_TEST(dump_waits_on_a_full_socket)
{
    weft_sem_init(&full_sem, 0);
    run(2, full_main, NULL);
}
END_TEST

/* ---- the protocol, from inside ----------------------------------------- */

static int connect_self(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, WEFT__DUMP_SOCKET_PREFIX "%d",
                     (int)getpid());
    if (connect(fd, (struct sockaddr *)&a,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send req (NULL: nothing) on fd and read until EOF. malloc'd text. */
static char *exchange(int fd, const char *req)
{
    if (req)
        (void)!send(fd, req, strlen(req), MSG_NOSIGNAL);
    size_t cap = 65536, len = 0;
    char *b = malloc(cap);
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 30000) <= 0)
            break;
        if (len + 4096 > cap)
            b = realloc(b, cap *= 2);
        ssize_t n = recv(fd, b + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    b[len] = 0;
    return b;
}

static weft_sem proto_done;
static char proto_why[512];
static _Atomic int proto_ok;

static void *proto_client(void *arg)
{
    (void)arg;
    int ok = 1;
    uint64_t end = weft_now() + DEADLINE_NS;
    int fd;
    /* The monitor starts the server just after the workers. */
    while ((fd = connect_self()) < 0 && weft_now() < end)
        pause_ms(5);
    if (fd < 0) {
        snprintf(proto_why, sizeof proto_why, "the dump socket never appeared");
        ok = 0;
    }
    if (ok && weft__dumpsrv_start() != -EALREADY) {
        snprintf(proto_why, sizeof proto_why, "a second start was not refused");
        ok = 0;
    }
    if (ok) {
        char *r = exchange(fd, "weft-dump 1 json\n");
        char head[64];
        snprintf(head, sizeof head, "OK %d %s\n", WEFT__DUMP_PROTOCOL, weft_version());
        struct jval doc;
        if (strncmp(r, head, strlen(head)) != 0) {
            snprintf(proto_why, sizeof proto_why, "json request answered: %.80s", r);
            ok = 0;
        } else if (json_parse(r + strlen(head), strlen(r + strlen(head)), &doc) != 0) {
            snprintf(proto_why, sizeof proto_why, "the JSON report does not parse");
            ok = 0;
        } else {
            const struct jval *p = json_get(&doc, "protocol");
            if (!p || p->t != J_NUM || (int)p->num != WEFT__DUMP_PROTOCOL) {
                snprintf(proto_why, sizeof proto_why, "the report's protocol is wrong");
                ok = 0;
            }
            json_free(&doc);
        }
        free(r);
    }
    if (fd >= 0)
        close(fd);
    static const struct { const char *req, *answer; } cases[] = {
        { "weft-dump 99 text\n", "ERR incompatible protocol 99: this process speaks 1\n" },
        { "hello\n", "ERR bad request" },
        { "weft-dump 1 xml\n", "ERR bad request" },
        { "weft-dump 1 text\n", "OK 1 " },
    };
    for (size_t i = 0; ok && i < sizeof cases / sizeof *cases; i++) {
        fd = connect_self();
        char *r = fd >= 0 ? exchange(fd, cases[i].req) : NULL;
        if (!r || strncmp(r, cases[i].answer, strlen(cases[i].answer)) != 0) {
            snprintf(proto_why, sizeof proto_why, "'%.20s' answered '%.80s'", cases[i].req,
                     r ? r : "(no connection)");
            ok = 0;
        }
        free(r);
        if (fd >= 0)
            close(fd);
    }
    /* Clients that leave before the answer cost their thread an EPIPE,
     * never the process a SIGPIPE. */
    for (int i = 0; ok && i < 20; i++) {
        fd = connect_self();
        if (fd >= 0) {
            (void)!send(fd, "weft-dump 1 json\n", 17, MSG_NOSIGNAL);
            close(fd);
        }
    }
    /* Clients that say nothing hold their threads, not the server: with
     * every slot taken the next one is told so at once. The idle ones
     * time out after 2 s; if the server had not accepted all four by
     * then, try again with four new ones. */
    int busy = 0;
    while (ok && !busy && weft_now() < end) {
        int idle[4], nidle = 0;
        for (; nidle < 4; nidle++)
            if ((idle[nidle] = connect_self()) < 0)
                break;
        uint64_t round_end = weft_now() + 1000000000;
        while (nidle == 4 && !busy && weft_now() < round_end) {
            fd = connect_self();
            char *r = fd >= 0 ? exchange(fd, "weft-dump 1 text\n") : NULL;
            if (fd >= 0)
                close(fd);
            busy = r && strncmp(r, "ERR busy", 8) == 0;
            free(r);
            if (!busy)
                pause_ms(5);
        }
        for (int i = 0; i < nidle; i++)
            close(idle[i]);
    }
    if (ok && !busy) {
        snprintf(proto_why, sizeof proto_why, "a fifth client was never refused");
        ok = 0;
    }
    atomic_store(&proto_ok, ok);
    weft_sem_post(&proto_done);
    return NULL;
}

static void proto_main(void *arg)
{
    (void)arg;
    weft_sem_wait(&proto_done);
}

START_TEST(dump_protocol)
{
    weft_sem_init(&proto_done, 0);
    atomic_store(&proto_ok, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, proto_client, NULL), 0);
    run(2, proto_main, NULL);
    pthread_join(t, NULL);
    ck_assert_msg(atomic_load(&proto_ok), "%s", proto_why);
    /* The server is gone with the run. */
    ck_assert_int_lt(connect_self(), 0);
    ck_assert_int_eq(weft__dumpsrv_started_ns(), 0);
}
END_TEST

/* ---- every worker stuck ---------------------------------------------------- */

static _Atomic int stuck_stop, stuck_spinning, stuck_ok;
static char stuck_why[512];

static __attribute__((noinline)) void *stuck_spin_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&stuck_spinning, 1);
    volatile unsigned long spins = 0;
    while (!atomic_load_explicit(&stuck_stop, memory_order_relaxed))
        spins++;
    return NULL;
}

static void stuck_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { "stuck", 0, 1 };
    EXPECT(weft_spawn_ex(&o, stuck_spin_fn, NULL) != NULL);
    EXPECT(weft_spawn_ex(&o, stuck_spin_fn, NULL) != NULL);
}

/* Both workers spin in fibers that never yield; the monitor still serves
 * the socket, and the report shows them running. */
static void *stuck_client(void *arg)
{
    (void)arg;
    uint64_t end = weft_now() + DEADLINE_NS;
    int ok = 0;
    while (!ok && weft_now() < end) {
        if (atomic_load(&stuck_spinning) < 2) {
            pause_ms(5);
            continue;
        }
        int fd = connect_self();
        char *r = fd >= 0 ? exchange(fd, "weft-dump 1 text\n") : NULL;
        if (fd >= 0)
            close(fd);
        ok = r && strncmp(r, "OK 1 ", 5) == 0 && strstr(r, "\nrunning (2)\n") &&
             strstr(r, "  worker 0: running fiber ") && strstr(r, "  worker 1: running fiber ");
        if (!ok) {
            snprintf(stuck_why, sizeof stuck_why, "%.400s", r ? r : "(no connection)");
            pause_ms(10);
        }
        free(r);
    }
    atomic_store(&stuck_ok, ok);
    atomic_store(&stuck_stop, 1);
    return NULL;
}

START_TEST(dump_when_every_worker_is_stuck)
{
    atomic_store(&stuck_stop, 0);
    atomic_store(&stuck_spinning, 0);
    atomic_store(&stuck_ok, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, stuck_client, NULL), 0);
    run(2, stuck_main, NULL);
    pthread_join(t, NULL);
    ck_assert_msg(atomic_load(&stuck_ok), "last answer: %s", stuck_why);
}
END_TEST

/* ---- the dump signal (in a child: it changes the process's signals) ------ */

static weft_sem sig_release;
static int sig_memfd;

static __attribute__((noinline)) void *parked_for_signal_fn(void *arg)
{
    (void)arg;
    weft_sem_wait(&sig_release);
    SC_KEEP_FRAME();
    return NULL;
}

static int memfd_has(int fd, const char *needle)
{
    off_t end = lseek(fd, 0, SEEK_END);
    char *buf = end > 0 ? malloc((size_t)end + 1) : NULL;
    int found = 0;
    if (buf && pread(fd, buf, (size_t)end, 0) == end) {
        buf[end] = 0;
        found = strstr(buf, needle) != NULL;
    }
    free(buf);
    return found;
}

static void signal_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { "sig-parked", 0, 0 };
    weft_fiber *f = weft_spawn_ex(&o, parked_for_signal_fn, NULL);
    EXPECT(f != NULL);
    uint64_t end = weft_now() + DEADLINE_NS;
    /* The handler exists once the server has started. */
    while (!weft__dumpsrv_started_ns() && weft_now() < end)
        weft_sleep(1000000);
    struct sigaction cur;
    EXPECT(sigaction(SIGUSR2, NULL, &cur) == 0 && cur.sa_handler != SIG_DFL);
    /* The fiber may not have parked yet when a dump is taken: ask again
     * every 100 ms until one shows it parked. */
    for (int i = 0; !memfd_has(sig_memfd, "'sig-parked': sem ") && weft_now() < end; i++) {
        if (i % 50 == 0)
            EXPECT(kill(getpid(), SIGUSR2) == 0);
        weft_sleep(2000000);
    }
    EXPECT(memfd_has(sig_memfd, "'sig-parked': sem "));
    EXPECT(memfd_has(sig_memfd, "weft-dump: pid "));
    weft_sem_post(&sig_release);
    EXPECT(weft_join(f, NULL) == 0);
}

static void signal_child(void)
{
    setenv("WEFT_DUMP_SIGNAL", "USR2", 1);
    weft_sem_init(&sig_release, 0);
    int saved = dup(2);
    sig_memfd = memfd_create("stderr", 0);
    dup2(sig_memfd, 2);
    weft_config c;
    weft_config_init(&c);
    c.workers = 2;
    int rc = weft_run(&c, signal_main, NULL);
    dup2(saved, 2);
    struct sigaction cur;
    sigaction(SIGUSR2, NULL, &cur);
    if (rc != 0 || atomic_load(&expect_failed) || cur.sa_handler != SIG_DFL) {
        fprintf(stderr, "signal dump: rc %d, %s, handler %s\n", rc, expect_where,
                cur.sa_handler == SIG_DFL ? "restored" : "left behind");
        _exit(1);
    }
    _exit(0);
}

START_TEST(dump_on_signal)
{
    struct child_result r = run_in_child(signal_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
}
END_TEST

static void no_signal_main(void *arg)
{
    (void)arg;
    uint64_t end = weft_now() + DEADLINE_NS;
    while (!weft__dumpsrv_started_ns() && weft_now() < end)
        weft_sleep(1000000);
    struct sigaction cur;
    EXPECT(sigaction(SIGUSR2, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL);
}

static void bad_signal_child(void)
{
    setenv("WEFT_DUMP_SIGNAL", "BOGUS", 1);
    weft_config c;
    weft_config_init(&c);
    c.workers = 1;
    int rc = weft_run(&c, no_signal_main, NULL);
    _exit(rc == 0 && !atomic_load(&expect_failed) ? 0 : 1);
}

static void default_signal_child(void)
{
    unsetenv("WEFT_DUMP_SIGNAL");
    weft_config c;
    weft_config_init(&c);
    c.workers = 1;
    int rc = weft_run(&c, no_signal_main, NULL);
    _exit(rc == 0 && !atomic_load(&expect_failed) ? 0 : 1);
}

START_TEST(dump_signal_only_when_asked)
{
    struct child_result r = run_in_child(default_signal_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
    ck_assert_str_eq(r.err, "");
    r = run_in_child(bad_signal_child);
    ck_assert_msg(r.exited && r.status == 0, "child: %s", r.err);
    ck_assert_msg(matches(r.err, "^weft: ignoring WEFT_DUMP_SIGNAL .*: BOGUS\n$"), "%s", r.err);
}
END_TEST

/* ---- weft-dump(1) ---------------------------------------------------------- */

struct prog_run {
    int   status;         /* exit status, or 128 + signal */
    char *out, *err;
    size_t outlen, errlen;
};

static void prog_free(struct prog_run *r)
{
    free(r->out);
    free(r->err);
}

/* Run argv (as uid when uid > 0) with stdout and stderr captured. */
static void run_prog(char *const argv[], uid_t uid, struct prog_run *r)
{
    memset(r, 0, sizeof *r);
    int o[2], e[2];
    ck_assert_int_eq(pipe2(o, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(e, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(o[1], 1);
        dup2(e[1], 2);
        if (uid > 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid(uid) != 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    size_t cap[2] = { 65536, 4096 }, len[2] = { 0, 0 };
    char *buf[2] = { malloc(cap[0]), malloc(cap[1]) };
    int fds[2] = { o[0], e[0] }, open_n = 2;
    uint64_t end = weft_now() + DEADLINE_NS;
    while (open_n > 0 && weft_now() < end) {
        struct pollfd p[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };
        if (poll(p, 2, 1000) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i] < 0 || !p[i].revents)
                continue;
            if (len[i] + 4096 > cap[i])
                buf[i] = realloc(buf[i], cap[i] *= 2);
            ssize_t n = read(fds[i], buf[i] + len[i], cap[i] - len[i] - 1);
            if (n <= 0) {
                close(fds[i]);
                p[i].fd = fds[i] = -1;
                open_n--;
            } else {
                len[i] += (size_t)n;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    buf[0][len[0]] = 0;
    buf[1][len[1]] = 0;
    r->out = buf[0];
    r->err = buf[1];
    r->outlen = len[0];
    r->errlen = len[1];
}

static const char *tool_path(void)
{
    const char *p = getenv("WEFT_DUMP_TOOL");
    ck_assert_msg(p && *p, "WEFT_DUMP_TOOL is not set (run through meson test)");
    return p;
}

struct target {
    pid_t pid;
    int   in, out;   /* its stdin (we write), its stdout (we read) */
};

/* Start dump-target and wait for its "ready". */
static void target_start(struct target *t)
{
    const char *path = getenv("WEFT_DUMP_TARGET");
    ck_assert_msg(path && *path, "WEFT_DUMP_TARGET is not set (run through meson test)");
    int in[2], out[2];
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    fflush(NULL);
    t->pid = fork();
    ck_assert_int_ge(t->pid, 0);
    if (t->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl(path, path, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    t->in = in[1];
    t->out = out[0];
    char line[600];
    size_t len = 0;
    uint64_t end = weft_now() + DEADLINE_NS;
    while (len + 1 < sizeof line && !memchr(line, '\n', len) && weft_now() < end) {
        struct pollfd p = { t->out, POLLIN, 0 };
        if (poll(&p, 1, 1000) <= 0)
            continue;
        ssize_t n = read(t->out, line + len, sizeof line - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    line[len] = 0;
    ck_assert_msg(strcmp(line, "ready\n") == 0, "dump-target said: '%s'", line);
}

/* Release the target's fibers; it must end with every result exact. */
static void target_finish(struct target *t)
{
    (void)!write(t->in, "go\n", 3);
    close(t->in);
    int st;
    ck_assert_int_eq(waitpid(t->pid, &st, 0), t->pid);
    close(t->out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dump-target ended with status %#x", st);
}

/* A copy of the tool that another user may run (the build tree may not
 * be readable by them). The directory is removed by tool_copy_free. */
static char *tool_copy(char *dir)
{
    strcpy(dir, "/tmp/weft-dump-test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(chmod(dir, 0755), 0);
    char *path = malloc(strlen(dir) + 16);
    sprintf(path, "%s/weft-dump", dir);
    int in = open(tool_path(), O_RDONLY | O_CLOEXEC);
    int out = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    ck_assert_int_ge(in, 0);
    ck_assert_int_ge(out, 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        ck_assert_int_eq(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
    return path;
}

static void tool_copy_free(char *dir, char *path)
{
    unlink(path);
    rmdir(dir);
    free(path);
}

START_TEST(tool_reads_a_running_process)
{
    sc_expectations();
    struct target t;
    target_start(&t);
    char pid[16], why[512];
    snprintf(pid, sizeof pid, "%d", (int)t.pid);
    const char *tool = tool_path();
    struct prog_run r;

    char *text_argv[] = { (char *)tool, pid, NULL };
    run_prog(text_argv, 0, &r);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    ck_assert_str_eq(r.err, "");
    ck_assert_msg(sc_check_text(r.out, weft__unwind_full(), 1, why, sizeof why), "%s\n%.2000s",
                  why, r.out);
    prog_free(&r);

    char *json_argv[] = { (char *)tool, "--json", pid, NULL };
    run_prog(json_argv, 0, &r);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    ck_assert_msg(sc_check_json(r.out, r.outlen, weft__unwind_full(), 1, why, sizeof why),
                  "%s", why);
    prog_free(&r);

    /* Another user is refused, with the one-line message. */
    if (geteuid() == 0) {
        char dir[64];
        char *copy = tool_copy(dir);
        char *as_nobody[] = { copy, pid, NULL };
        run_prog(as_nobody, 65534, &r);
        char want[128];
        snprintf(want, sizeof want,
                 "weft-dump: permission denied: process %s belongs to another user\n", pid);
        ck_assert_int_eq(r.status, 1);
        ck_assert_str_eq(r.err, want);
        ck_assert_str_eq(r.out, "");
        prog_free(&r);
        tool_copy_free(dir, copy);
    } else {
        fprintf(stderr, "tool_reads_a_running_process: not root, permission check skipped\n");
    }

    /* --trace records for a second and writes trace-event JSON with a
     * track per worker (the spinner's worker runs one long slice). */
    char tpath[64];
    snprintf(tpath, sizeof tpath, "/tmp/weft-dump-trace-%d.json", (int)getpid());
    char *trace_argv[] = { (char *)tool, "--trace", "1", "-o", tpath, pid, NULL };
    run_prog(trace_argv, 0, &r);
    ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
    prog_free(&r);
    {
        FILE *f = fopen(tpath, "r");
        ck_assert_ptr_nonnull(f);
        static char tbuf[1 << 20];
        size_t tn = fread(tbuf, 1, sizeof tbuf - 1, f);
        fclose(f);
        tbuf[tn] = 0;
        ck_assert_msg(strstr(tbuf, "\"traceEvents\"") != NULL, "%.200s", tbuf);
        ck_assert_msg(strstr(tbuf, "\"name\":\"weft worker 0\"") != NULL, "%.200s", tbuf);
        ck_assert_msg(strstr(tbuf, "\"ph\":\"X\"") != NULL, "no run slice: %.400s", tbuf);
        if (tn < sizeof tbuf - 1) {
            struct jval jv;
            ck_assert_msg(json_parse(tbuf, tn, &jv) == 0, "not JSON: %.400s", tbuf);
            json_free(&jv);
        }
        unlink(tpath);
    }
    /* -o without --trace, --trace without -o: usage errors. */
    char *bad_trace[] = { (char *)tool, "--trace", "1", pid, NULL };
    run_prog(bad_trace, 0, &r);
    ck_assert_int_eq(r.status, 2);
    prog_free(&r);

    /* --watch refreshes until interrupted. */
    int o[2];
    ck_assert_int_eq(pipe2(o, O_CLOEXEC), 0);
    pid_t w = fork();
    ck_assert_int_ge(w, 0);
    if (w == 0) {
        dup2(o[1], 1);
        execl(tool, tool, "--watch", "0.1", pid, (char *)NULL);
        _exit(127);
    }
    close(o[1]);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int headers = 0;
    uint64_t end = weft_now() + DEADLINE_NS;
    while (headers < 2 && weft_now() < end) {
        struct pollfd p = { o[0], POLLIN, 0 };
        if (poll(&p, 1, 1000) <= 0)
            continue;
        if (len + 65536 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(o[0], buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        headers = 0;
        for (const char *p2 = buf; (p2 = strstr(p2, "\033[H\033[2JEvery 0.1s: weft-dump ")); p2++)
            headers++;
    }
    kill(w, SIGINT);
    int st;
    ck_assert_int_eq(waitpid(w, &st, 0), w);
    close(o[0]);
    free(buf);
    ck_assert_int_ge(headers, 2);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--watch ended with %#x", st);

    target_finish(&t);
}
END_TEST

START_TEST(tool_errors)
{
    const char *tool = tool_path();
    struct prog_run r;
    char pid[32], want[160];

    /* A pid no process can have. */
    long pid_max = 4194304;
    FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
    if (f) {
        if (fscanf(f, "%ld", &pid_max) != 1)
            pid_max = 4194304;
        fclose(f);
    }
    snprintf(pid, sizeof pid, "%ld", pid_max + 1);
    char *none[] = { (char *)tool, pid, NULL };
    run_prog(none, 0, &r);
    snprintf(want, sizeof want, "weft-dump: no such process: %s\n", pid);
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.err, want);
    prog_free(&r);

    /* A process without weft. */
    pid_t s = fork();
    ck_assert_int_ge(s, 0);
    if (s == 0) {
        execlp("sleep", "sleep", "60", (char *)NULL);
        pause();
        _exit(0);
    }
    snprintf(pid, sizeof pid, "%d", (int)s);
    char *plain[] = { (char *)tool, pid, NULL };
    run_prog(plain, 0, &r);
    kill(s, SIGKILL);
    waitpid(s, NULL, 0);
    snprintf(want, sizeof want, "weft-dump: not a weft process: %s\n", pid);
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.err, want);
    prog_free(&r);

    /* Usage. */
    char *noargs[] = { (char *)tool, NULL };
    run_prog(noargs, 0, &r);
    ck_assert_int_eq(r.status, 2);
    prog_free(&r);
    char *badpid[] = { (char *)tool, "12ab", NULL };
    run_prog(badpid, 0, &r);
    ck_assert_int_eq(r.status, 2);
    ck_assert_str_eq(r.err, "weft-dump: not a process id: '12ab'\n");
    prog_free(&r);
    char *badwatch[] = { (char *)tool, "--watch", "0", "1", NULL };
    run_prog(badwatch, 0, &r);
    ck_assert_int_eq(r.status, 2);
    prog_free(&r);
    char *help[] = { (char *)tool, "--help", NULL };
    run_prog(help, 0, &r);
    ck_assert_int_eq(r.status, 0);
    ck_assert(strstr(r.out, "usage: weft-dump") != NULL);
    prog_free(&r);
    char *version[] = { (char *)tool, "--version", NULL };
    run_prog(version, 0, &r);
    ck_assert_int_eq(r.status, 0);
    snprintf(want, sizeof want, "weft-dump %s (protocol %d)\n", weft_version(),
             WEFT__DUMP_PROTOCOL);
    ck_assert_str_eq(r.out, want);
    prog_free(&r);
}
END_TEST

/* A server speaking another protocol version: this process, with no
 * runtime running, listening on its own dump name. */
static int fake_fd;

static void *fake_server(void *arg)
{
    (void)arg;
    int c = accept4(fake_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c >= 0) {
        char req[128];
        (void)!recv(c, req, sizeof req, 0);
        static const char reply[] = "ERR incompatible protocol 1: this process speaks 7\n";
        (void)!send(c, reply, sizeof reply - 1, MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

START_TEST(tool_incompatible_version)
{
    fake_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fake_fd, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, WEFT__DUMP_SOCKET_PREFIX "%d",
                     (int)getpid());
    ck_assert_int_eq(bind(fake_fd, (struct sockaddr *)&a,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)),
                     0);
    ck_assert_int_eq(listen(fake_fd, 1), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, fake_server, NULL), 0);
    char pid[16], want[160];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    char *argv[] = { (char *)tool_path(), pid, NULL };
    struct prog_run r;
    run_prog(argv, 0, &r);
    pthread_join(t, NULL);
    close(fake_fd);
    snprintf(want, sizeof want,
             "weft-dump: incompatible weft version in process %s (protocol 7, this tool "
             "speaks %d)\n", pid, WEFT__DUMP_PROTOCOL);
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.err, want);
    prog_free(&r);
}
END_TEST

static Suite *dump_suite(void)
{
    Suite *s = suite_create("dump");
    TCase *c = tcase_create("in-process");
    tcase_add_checked_fixture(c, fixture_setup, NULL);
    tcase_set_timeout(c, 240);
    tcase_add_test(c, dump_every_wait_kind);
    tcase_add_test(c, dump_many_parked_fibers_folded);
    tcase_add_test(c, dump_from_a_fiber_with_odd_names);
    tcase_add_test(c, dump_needs_a_runtime);
    tcase_add_test(c, dump_protocol);
    tcase_add_test(c, dump_when_every_worker_is_stuck);
    tcase_add_test(c, dump_on_signal);
    tcase_add_test(c, dump_signal_only_when_asked);
    suite_add_tcase(s, c);
    TCase *edges = tcase_create("edges");
    tcase_add_checked_fixture(edges, fixture_setup, NULL);
    tcase_set_timeout(edges, 240);
    tcase_add_test(edges, dump_with_no_fiber);
    tcase_add_test(edges, dump_waits_on_a_full_socket);
    suite_add_tcase(s, edges);
    TCase *tool = tcase_create("tool");
    tcase_add_checked_fixture(tool, fixture_setup, NULL);
    tcase_set_timeout(tool, 240);
    tcase_add_test(tool, tool_reads_a_running_process);
    tcase_add_test(tool, tool_errors);
    tcase_add_test(tool, tool_incompatible_version);
    suite_add_tcase(s, tool);
    return s;
}

TEST_MAIN(dump_suite)
