/*
 * peer-echo-epoll: the hand-written C peer of the "echo" benchmark
 * (bench/DEFINITIONS.md): what a careful programmer writes without a
 * runtime, to set beside weft's fiber-per-connection echo_server.
 *
 *   peer-echo-epoll [-h HOST] [-p PORT] [-w THREADS]
 *
 * One thread per CPU this process may run on (its affinity mask; -w
 * caps the count), each pinned to its CPU, each with its own epoll and its
 * own listening socket on the same port (SO_REUSEPORT, so the kernel
 * spreads incoming connections over the threads and no thread ever
 * touches another's connections: no locks, no shared state). Port 0 picks
 * a free port for the first listener, and the others join it. Prints
 *
 *   peer-echo-epoll: listening on HOST:PORT threads=N
 *
 * once every thread listens, then echoes every byte of every connection
 * back until killed.
 *
 * Edge-triggered: each socket is added once with EPOLLIN | EPOLLOUT |
 * EPOLLRDHUP | EPOLLET and never modified, so the steady state is one
 * epoll_wait, one read and one write per message, with no epoll_ctl.
 * Since an edge is reported only once, every ready socket is drained: the
 * listener is accepted from until EAGAIN, a connection is read until
 * EAGAIN. Bytes that the socket would not take (the peer is not reading)
 * wait in a per-connection buffer, and reading from that connection stops
 * until EPOLLOUT has flushed them, so a slow reader cannot make the
 * server buffer without limit. Readable data left unread then is not
 * announced again by the kernel, so the flush resumes reading itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE   16384
#define MAX_EVENTS 256
#define BACKLOG    4096

struct conn {
    int     fd;
    size_t  pend_off, pend_len; /* unsent bytes in pend[] */
    char   *pend;               /* BUF_SIZE bytes, allocated on first need */
};

struct loop {
    pthread_t tid;
    int       cpu;      /* -1: not pinned */
    int       lfd, epfd;
    char      buf[BUF_SIZE];
};

static struct sockaddr_in listen_addr;

/* The tag of the listener in epoll_event.data: connections carry their
 * struct conn pointer, which is never NULL. */
#define LISTENER NULL

static void die(const char *what)
{
    fprintf(stderr, "peer-echo-epoll: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int make_listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        die("setsockopt");
    if (bind(fd, (struct sockaddr *)&listen_addr, sizeof listen_addr) != 0)
        die("bind");
    if (listen(fd, BACKLOG) != 0)
        die("listen");
    if (listen_addr.sin_port == 0) {
        /* Port 0: the first listener picked one; the others take it too. */
        socklen_t len = sizeof listen_addr;
        if (getsockname(fd, (struct sockaddr *)&listen_addr, &len) != 0)
            die("getsockname");
    }
    return fd;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll */
    free(c->pend);
    free(c);
}

/* Write pending bytes. 1: all written, 0: the socket is full (EPOLLOUT
 * will come), -1: the connection failed. */
static int conn_flush(struct conn *c)
{
    while (c->pend_len > 0) {
        ssize_t n = send(c->fd, c->pend + c->pend_off, c->pend_len, MSG_NOSIGNAL);
        if (n > 0) {
            c->pend_off += (size_t)n;
            c->pend_len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    c->pend_off = 0;
    return 1;
}

/* Echo everything readable, until EAGAIN, end of stream, or the socket
 * stops taking writes. 0 to keep the connection, -1 to close it. */
static int conn_echo(struct loop *l, struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, l->buf, sizeof l->buf, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = send(c->fd, l->buf + off, (size_t)n - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
            } else if (w < 0 && errno == EINTR) {
                continue;
            } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                break;
            } else {
                return -1;
            }
        }
        if (off < (size_t)n) {
            /* The peer is behind: keep the rest, stop reading. */
            if (!c->pend && !(c->pend = malloc(BUF_SIZE)))
                return -1;
            memcpy(c->pend, l->buf + off, (size_t)n - off);
            c->pend_off = 0;
            c->pend_len = (size_t)n - off;
            return 0;
        }
    }
}

static void accept_all(struct loop *l)
{
    for (;;) {
        int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "peer-echo-epoll: accept: %s\n", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {
            .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
            .data.ptr = c,
        };
        if (!c || (c->fd = fd, epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)) {
            close(fd);
            free(c);
        }
    }
}

static void *loop_main(void *arg)
{
    struct loop *l = arg;
    if (l->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(l->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(l->epfd, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == LISTENER) {
                accept_all(l);
                continue;
            }
            int keep = 1;
            if (c->pend_len > 0) {
                /* Blocked on a full socket: only a flush helps, after
                 * which the reading resumes (its edge may be gone). */
                int r = conn_flush(c);
                keep = r >= 0;
                if (r == 1)
                    keep = conn_echo(l, c) == 0;
            } else if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                keep = conn_echo(l, c) == 0;
            }
            if (!keep)
                conn_close(c);
        }
    }
    return NULL;
}

/* Every connection is an fd: take as many as the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: peer-echo-epoll [-h HOST] [-p PORT] [-w THREADS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 7007, max_threads = 0;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:w:")) != -1) {
        char *end;
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*end || end == optarg || port < 0 || port > 65535)
                usage();
            break;
        case 'w':
            max_threads = strtol(optarg, &end, 10);
            if (*end || end == optarg || max_threads < 1)
                usage();
            break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    listen_addr.sin_family = AF_INET;
    listen_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &listen_addr.sin_addr) != 1) {
        fprintf(stderr, "peer-echo-epoll: -h takes a numeric IPv4 address\n");
        return 2;
    }
    raise_fd_limit();

    /* One thread per CPU we may use, in CPU order. */
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) != 0)
        die("sched_getaffinity");
    int ncpu = CPU_COUNT(&mask);
    int nthreads = max_threads && max_threads < ncpu ? (int)max_threads : ncpu;
    struct loop *loops = calloc((size_t)nthreads, sizeof *loops);
    if (!loops)
        die("calloc");
    for (int cpu = 0, i = 0; i < nthreads; cpu++) {
        if (!CPU_ISSET(cpu, &mask))
            continue;
        struct loop *l = &loops[i++];
        l->cpu = cpu;
        l->lfd = make_listener();
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epfd < 0)
            die("epoll_create1");
        /* Level-triggered would do as well for the listener; edge-
         * triggered keeps one rule for every fd: drain on each event. */
        struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = LISTENER };
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->lfd, &ev) != 0)
            die("epoll_ctl");
    }
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&loops[i].tid, NULL, loop_main, &loops[i]) != 0)
            die("pthread_create");
    printf("peer-echo-epoll: listening on %s:%d threads=%d\n", host,
           ntohs(listen_addr.sin_port), nthreads);
    fflush(stdout);
    for (int i = 0; i < nthreads; i++)
        pthread_join(loops[i].tid, NULL);
    return 0;
}
