/*
 * weft-dump(1): print the workers and fibers of a running weft process.
 *
 * It asks the process over its dump socket (src/io/dumpsrv.c; the
 * protocol is in src/io/dumpsrv.h) and prints what comes back. It never
 * stops, signals or traces the target: the process writes its own report
 * from its monitor thread, which answers even when every worker is stuck.
 * It does not link libweft, so one tool serves every process that speaks
 * its protocol version. See weft-dump.1 for the interface.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <weft/version.h>

#include "io/dumpsrv.h"

#define REPLY_TIMEOUT_MS 10000

struct buf {
    char  *p;
    size_t len, cap;
};

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

__attribute__((format(printf, 1, 2)))
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("weft-dump: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weft-dump [--json] [--watch SECONDS] PID\n"
            "       weft-dump --trace SECONDS -o FILE PID\n"
            "Print the workers and fibers of a running weft process.\n"
            "\n"
            "  --json             the same report as JSON\n"
            "  --watch SECONDS    clear the screen and refresh every SECONDS until interrupted\n"
            "  --trace SECONDS    record the scheduler for SECONDS (1..3600) and write\n"
            "                     Chrome/Perfetto trace-event JSON to FILE (-o FILE)\n"
            "  -h, --help         this help\n"
            "      --version      the tool's version and protocol\n");
}

static int buf_add(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

/* Does /proc/PID/maps name libweft? -1 if it cannot be read (another
 * user's process, for one). */
static int maps_mention_weft(pid_t pid)
{
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int found = 0, any = 0;
    while (!found && fgets(line, sizeof line, f)) {
        any = 1;
        found = strstr(line, "/libweft.so") != NULL;
    }
    fclose(f);
    return any ? found : -1;
}

/* Read until the peer closes, into b. 0, or -1 on a timeout or error. */
static int read_all(int fd, struct buf *b, int timeout_ms)
{
    char chunk[65536];
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR) {
            if (interrupted)
                return -1;
            continue;
        }
        if (r <= 0)
            return -1;
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return b->len ? 0 : -1; /* a reset after the reply: keep it */
        if (n == 0)
            return 0;
        if (buf_add(b, chunk, (size_t)n) != 0)
            return -1;
    }
}

/*
 * Fetch one report from pid into out (the report alone, without the OK
 * line). 0, or 1 after printing the one-line error.
 */
static int fetch(pid_t pid, const char *kind, int timeout_ms, struct buf *out)
{
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return fail("no such process: %d", (int)pid);
    int eperm = errno == EPERM;

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket: %s", strerror(errno));
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, WEFT__DUMP_SOCKET_PREFIX "%d",
                     (int)pid);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (connect(fd, (struct sockaddr *)&a, alen) != 0) {
        int e = errno;
        close(fd);
        if (e != ECONNREFUSED && e != ENOENT)
            return fail("cannot reach process %d: %s", (int)pid, strerror(e));
        if (kill(pid, 0) != 0 && errno == ESRCH)
            return fail("no such process: %d", (int)pid);
        if (eperm)
            return fail("permission denied: process %d belongs to another user", (int)pid);
        if (maps_mention_weft(pid) == 1)
            return fail("no weft runtime running in process %d", (int)pid);
        return fail("not a weft process: %d", (int)pid);
    }

    char req[64];
    int rn = snprintf(req, sizeof req, "weft-dump %d %s\n", WEFT__DUMP_PROTOCOL, kind);
    /* A refused client may find the socket closed already: its ERR line
     * is still there to read. */
    (void)send(fd, req, (size_t)rn, MSG_NOSIGNAL);
    struct buf reply = { 0 };
    int rc = read_all(fd, &reply, timeout_ms);
    close(fd);
    if (rc != 0 && !reply.len) {
        free(reply.p);
        if (interrupted)
            return 1;
        return fail("process %d did not answer within %d s", (int)pid, timeout_ms / 1000);
    }
    char *nl = reply.p ? memchr(reply.p, '\n', reply.len) : NULL;
    if (!nl) {
        free(reply.p);
        return fail("process %d sent no reply (it may have ended its runtime)", (int)pid);
    }
    *nl = 0;
    const char *line = reply.p;
    int proto;
    if (strncmp(line, "OK ", 3) == 0 && sscanf(line + 3, "%d", &proto) == 1 &&
        proto == WEFT__DUMP_PROTOCOL) {
        size_t head = (size_t)(nl + 1 - reply.p);
        int err = buf_add(out, reply.p + head, reply.len - head);
        free(reply.p);
        return err ? fail("out of memory") : 0;
    }
    int r;
    const char *speaks;
    if (strncmp(line, "ERR permission denied", 21) == 0)
        r = fail("permission denied: process %d belongs to another user", (int)pid);
    else if (strncmp(line, "ERR incompatible protocol", 25) == 0 &&
             (speaks = strstr(line, "speaks ")) != NULL)
        r = fail("incompatible weft version in process %d (protocol %d, this tool speaks %d)",
                 (int)pid, atoi(speaks + 7), WEFT__DUMP_PROTOCOL);
    else if (strncmp(line, "ERR busy", 8) == 0)
        r = fail("process %d is busy with other dumps; try again", (int)pid);
    else if (strncmp(line, "ERR trace", 9) == 0)
        r = fail("process %d cannot trace now: %s", (int)pid, line + 10);
    else if (strncmp(line, "ERR no weft runtime", 19) == 0)
        r = fail("no weft runtime running in process %d", (int)pid);
    else if (strncmp(line, "OK ", 3) == 0)
        r = fail("incompatible weft version in process %d (protocol %d, this tool speaks %d)",
                 (int)pid, atoi(line + 3), WEFT__DUMP_PROTOCOL);
    else
        r = fail("unexpected reply from process %d: %.100s", (int)pid, line);
    free(reply.p);
    return r;
}

static int parse_pid(const char *s, pid_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0 || v > 0x3fffffff)
        return -1;
    *out = (pid_t)v;
    return 0;
}

static int watch(pid_t pid, int json, double secs)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!interrupted) {
        struct buf b = { 0 };
        if (fetch(pid, json ? "json" : "text", REPLY_TIMEOUT_MS, &b) != 0) {
            free(b.p);
            return interrupted ? 0 : 1;
        }
        char when[64] = "";
        time_t t = time(NULL);
        struct tm tm;
        if (localtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        printf("\033[H\033[2J" "Every %gs: weft-dump %d    %s\n\n", secs, (int)pid, when);
        if (b.len)
            fwrite(b.p, 1, b.len, stdout);
        fflush(stdout);
        free(b.p);
        struct timespec ts = { (time_t)secs, (long)((secs - floor(secs)) * 1e9) };
        while (!interrupted && nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' },
        { "watch", required_argument, NULL, 'w' },
        { "trace", required_argument, NULL, 't' },
        { "output", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int json = 0, c;
    double secs = 0;
    long trace_secs = 0;
    const char *out_path = NULL;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 't': {
            char *end;
            errno = 0;
            trace_secs = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || trace_secs < 1 || trace_secs > 3600) {
                fail("--trace wants a whole number of seconds from 1 to 3600, not '%s'", optarg);
                return 2;
            }
            break;
        }
        case 'o':
            out_path = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'w': {
            char *end;
            errno = 0;
            secs = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(secs >= 0.1) || secs > 86400) {
                fail("--watch wants a number of seconds from 0.1 to 86400, not '%s'", optarg);
                return 2;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("weft-dump %s (protocol %d)\n", WEFT_VERSION_STRING, WEFT__DUMP_PROTOCOL);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return 2;
    }
    pid_t pid;
    if (parse_pid(argv[optind], &pid) != 0) {
        fail("not a process id: '%s'", argv[optind]);
        return 2;
    }
    if (trace_secs) {
        if (!out_path || json || secs > 0) {
            fail("--trace wants -o FILE, and neither --json nor --watch");
            return 2;
        }
        char kind[32];
        snprintf(kind, sizeof kind, "trace %ld", trace_secs);
        struct buf t = { 0 };
        int rc = fetch(pid, kind, REPLY_TIMEOUT_MS + (int)trace_secs * 1000, &t);
        if (rc == 0) {
            FILE *f = fopen(out_path, "w");
            if (!f)
                rc = fail("cannot write %s: %s", out_path, strerror(errno));
            else if ((t.len && fwrite(t.p, 1, t.len, f) != t.len) | (fclose(f) != 0))
                rc = fail("writing %s: %s", out_path, strerror(errno));
        }
        free(t.p);
        return rc;
    }
    if (out_path) {
        fail("-o goes with --trace");
        return 2;
    }
    if (secs > 0)
        return watch(pid, json, secs);
    struct buf b = { 0 };
    int rc = fetch(pid, json ? "json" : "text", REPLY_TIMEOUT_MS, &b);
    if (rc == 0 && b.len && fwrite(b.p, 1, b.len, stdout) != b.len)
        rc = fail("writing the report: %s", strerror(errno));
    free(b.p);
    if (rc == 0 && fflush(stdout) != 0)
        rc = fail("writing the report: %s", strerror(errno));
    return rc;
}
