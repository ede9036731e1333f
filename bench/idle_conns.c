/*
 * idle-conns: what an idle connection costs a server in memory. Opens N
 * connections to a running server, has each echo one byte (so the server
 * has really taken it on: accepted it, started whatever serves it, and
 * gone back to waiting on it), then reads the server's resident memory
 * (VmRSS in /proc/PID/status) and reports the growth divided by N.
 *
 *   idle-conns -p PORT -P SERVER_PID [-h HOST] [-n N] [-s PER_SOURCE]
 *              [-H SECONDS] [-i IMPL] [-w WORKERS]
 *
 *   -p, -h  the server (host default 127.0.0.1, numeric IPv4); it must
 *           echo (examples/echo_server, the echo peers)
 *   -P      the server's pid, whose VmRSS is read before and after
 *   -n      connections (default 100,000)
 *   -s      connections per client source address (default 20,000)
 *   -H      hold the connections this long after measuring (default 0),
 *           e.g. to look at the server with weft-dump or pmap
 *   -i, -w  impl= and workers= of the output line
 *
 * Output, one line on stdout:
 *
 *   bench=idle-conns impl=IMPL workers=W value=<bytes per connection>
 *     unit=B/conn n=N rss_before_kb=.. rss_after_kb=..
 *
 * Kernel memory (socket buffers, TCP state) is not in VmRSS: the figure is
 * the server program's own cost per connection.
 *
 * Two limits stand in the way of large N on one machine:
 *  - Ports. A TCP connection is named by (source ip, source port, dest ip,
 *    dest port), and the kernel picks source ports from
 *    net.ipv4.ip_local_port_range (about 28,000 by default), so one source
 *    address reaches one server port about 28,000 times. On loopback every
 *    127.x.y.z is local, so the client binds its sockets to 127.0.0.2,
 *    127.0.0.3, ... in turn, -s connections each (with
 *    IP_BIND_ADDRESS_NO_PORT, so the port is still chosen at connect).
 *  - Descriptors. Both processes need N + a few descriptors
 *    (RLIMIT_NOFILE). Both raise their soft limit to the hard limit; when
 *    that is still too low this program lowers N to what both limits allow
 *    (the server's is read from /proc/PID/limits), says so on stderr, and
 *    reports the N it used. For 100,000 as root: raise the hard limit in
 *    the shell that starts both, `ulimit -Hn 1048576; ulimit -n 1048576`,
 *    or give a running process more with `prlimit --pid PID
 *    --nofile=1048576:1048576`. That needs CAP_SYS_RESOURCE (plain root
 *    has it, many containers drop it) and fs.nr_open >= the new limit.
 *
 * Exit status 1 if a connection fails or echoes wrongly (no figure is
 * printed then), 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "idle-conns"
#include "args.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Descriptors kept back for everything that is not a connection. */
#define FD_RESERVE 64

__attribute__((noreturn)) static void usage(const char *why)
{
    if (why)
        fprintf(stderr, "idle-conns: %s\n", why);
    fprintf(stderr, "usage: idle-conns -p PORT -P SERVER_PID [-h HOST] [-n N] [-s PER_SOURCE]\n"
                    "                  [-H SECONDS] [-i IMPL] [-w WORKERS]\n");
    exit(2);
}

/* The number on the first line of /proc/PID/<file> that matches fmt
 * (a scanf format with one %ld), or -1. */
static long proc_number(long pid, const char *file, const char *fmt)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, fmt, &v) == 1)
            break;
    fclose(f);
    return v;
}

/* VmRSS of pid in kB, or -1. */
static long vm_rss_kb(long pid)
{
    return proc_number(pid, "status", "VmRSS: %ld kB");
}

/* The soft RLIMIT_NOFILE of pid, or -1 when unknown or unlimited. */
static long nofile_of(long pid)
{
    return proc_number(pid, "limits", "Max open files %ld");
}

static long own_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *impl = "unknown";
    long port = -1, pid = -1, n = 100000, per_source = 20000, hold_s = 0, workers = 1;
    int c;
    while ((c = getopt(argc, argv, "p:P:h:n:s:H:i:w:")) != -1) {
        switch (c) {
        case 'p': port = parse_long(optarg, 1, 65535, "-p"); break;
        case 'P': pid = parse_long(optarg, 1, 1L << 30, "-P"); break;
        case 'h': host = optarg; break;
        case 'n': n = parse_long(optarg, 1, 1L << 24, "-n"); break;
        case 's': per_source = parse_long(optarg, 1, 1L << 24, "-s"); break;
        case 'H': hold_s = parse_long(optarg, 0, 86400, "-H"); break;
        case 'i': impl = optarg; break;
        case 'w': workers = parse_long(optarg, 1, 1L << 20, "-w"); break;
        default: usage(NULL);
        }
    }
    if (optind != argc)
        usage("unexpected argument");
    if (port < 0 || pid < 0)
        usage("-p PORT and -P SERVER_PID are required");
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1)
        usage("-h takes a numeric IPv4 address");
    int loopback = (ntohl(dst.sin_addr.s_addr) >> 24) == 127;

    long mine = own_nofile(), theirs = nofile_of(pid);
    long fit = n;
    if (mine >= 0 && mine - FD_RESERVE < fit)
        fit = mine - FD_RESERVE;
    if (theirs >= 0 && theirs - FD_RESERVE < fit)
        fit = theirs - FD_RESERVE;
    if (fit < 1) {
        fprintf(stderr, "idle-conns: RLIMIT_NOFILE (here %ld, server %ld) leaves no room "
                        "for connections\n", mine, theirs);
        return 2;
    }
    if (fit < n) {
        fprintf(stderr, "idle-conns: RLIMIT_NOFILE (here %ld, server %ld) allows %ld "
                        "connections, not %ld: measuring %ld (see the comment at the top "
                        "of bench/idle_conns.c to raise it)\n", mine, theirs, fit, n, fit);
        n = fit;
    }
    int *fds = malloc((size_t)n * sizeof *fds);
    if (!fds) {
        fprintf(stderr, "idle-conns: out of memory\n");
        return 1;
    }

    long rss_before = vm_rss_kb(pid);
    if (rss_before < 0) {
        fprintf(stderr, "idle-conns: cannot read /proc/%ld/status\n", pid);
        return 1;
    }
    double t0 = now_s();
    long made = 0, failed = 0;
    for (; made < n; made++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fprintf(stderr, "idle-conns: socket %ld: %s\n", made, strerror(errno));
            failed = 1;
            break;
        }
        int one = 1;
        /* Seconds, not forever: a server that stops answering fails the
         * run instead of hanging it. */
        struct timeval tv = { .tv_sec = 10 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (loopback) {
            struct sockaddr_in src = { .sin_family = AF_INET };
            src.sin_addr.s_addr = htonl((127u << 24) + 2u + (uint32_t)(made / per_source));
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
                fprintf(stderr, "idle-conns: bind connection %ld: %s\n", made, strerror(errno));
                close(fd);
                failed = 1;
                break;
            }
        }
        if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
            fprintf(stderr, "idle-conns: connect %ld: %s\n", made, strerror(errno));
            close(fd);
            failed = 1;
            break;
        }
        fds[made] = fd;
    }
    /* One byte each, all sent before any is read back. */
    for (long i = 0; i < made && !failed; i++) {
        char b = (char)('a' + i % 26);
        if (send(fds[i], &b, 1, MSG_NOSIGNAL) != 1) {
            fprintf(stderr, "idle-conns: send on connection %ld: %s\n", i, strerror(errno));
            failed = 1;
        }
    }
    for (long i = 0; i < made && !failed; i++) {
        char b;
        ssize_t r = recv(fds[i], &b, 1, 0);
        if (r != 1 || b != (char)('a' + i % 26)) {
            fprintf(stderr, "idle-conns: connection %ld: %s\n", i,
                    r < 0 ? strerror(errno) : r == 0 ? "closed by the server" : "wrong echo");
            failed = 1;
        }
    }
    double t1 = now_s();
    long rss_after = -1;
    if (!failed) {
        /* The server wrote the last echo just now; give it a moment to go
         * back to waiting on every connection before reading its memory. */
        struct timespec settle = { 0, 500 * 1000 * 1000 };
        nanosleep(&settle, NULL);
        rss_after = vm_rss_kb(pid);
        if (rss_after < 0) {
            fprintf(stderr, "idle-conns: the server (pid %ld) is gone\n", pid);
            failed = 1;
        }
    }
    if (!failed) {
        printf("bench=idle-conns impl=%s workers=%ld value=%.0f unit=B/conn n=%ld "
               "rss_before_kb=%ld rss_after_kb=%ld\n",
               impl, workers, (double)(rss_after - rss_before) * 1024.0 / (double)n, n,
               rss_before, rss_after);
        fflush(stdout);
        fprintf(stderr, "idle-conns: %ld connections opened and echoed in %.1f s\n",
                n, t1 - t0);
        if (hold_s > 0)
            sleep((unsigned)hold_s);
    }
    for (long i = 0; i < made; i++)
        close(fds[i]);
    free(fds);
    return failed ? 1 : 0;
}
