/*
 * echo_server: a TCP echo server, one fiber per connection.
 *
 *   echo_server [-h HOST] [-p PORT] [-w WORKERS] [-m shared|reuseport]
 *               [-n MAX_CONNECTIONS]
 *
 * Listens on HOST:PORT (default: every IPv4 address, port 7007; port 0
 * picks a free one), prints one line saying where, then echoes every
 * byte back on every connection, printing nothing per connection. -w sets
 * the number of worker threads (default: one per core). With -n it stops
 * accepting after that many connections and exits once they have all
 * finished; otherwise it runs until killed.
 *
 * How connections come in (-m):
 *   shared     one listening socket and one accept fiber for all workers
 *              (the default: see docs/benchmarks.md, "echo", for how the
 *              two modes measured).
 *   reuseport  one listening socket per worker, all bound to the same port
 *              with SO_REUSEPORT, each with its own accept fiber: the
 *              kernel spreads new connections over the sockets, and no
 *              two accept fibers ever wait on the same one.
 * Either way each connection gets its own fiber, and the runtime's work
 * stealing spreads those fibers over the workers. In reuseport mode HOST
 * must be a numeric IPv4 address (or left out).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft.h>

#define MAX_LISTENERS 256
#define BACKLOG       4096

enum mode { MODE_SHARED, MODE_REUSEPORT };

struct server {
    const char *host;
    int         port;
    unsigned    workers;     /* 0: the runtime's default */
    enum mode   mode;
    long        max_conns;   /* 0: unlimited */
    int         lfds[MAX_LISTENERS];
    unsigned    nlisteners;
    _Atomic long accepted;
    _Atomic int  stopping;   /* max_conns reached: listeners are closing */
    _Atomic int  status;     /* the exit status */
};

struct listener {
    struct server *s;
    int            fd;
};

#define SMALL_BUF 2048
#define BIG_BUF   16384

/*
 * Echo until the peer closes or an error; then close.
 *
 * Reads go into a 2 KiB buffer on the fiber's stack until one fills it;
 * from then on into a 16 KiB buffer from the heap. Small messages (most
 * connections) thus cost one page of stack and nothing else: an idle
 * connection holds about 4.5 KiB in all (docs/benchmarks.md,
 * "idle-conns"), where a 16 KiB stack buffer would touch a second page
 * with the first byte read. Streams that fill the small buffer get the
 * big one and fewer system calls.
 */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char small[SMALL_BUF];
    char *buf = small, *big = NULL;
    size_t cap = sizeof small;
    for (;;) {
        ssize_t n = weft_recv(fd, buf, cap, 0);
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = weft_send(fd, buf + off, (size_t)(n - off), 0);
            if (w <= 0)
                goto out;
            off += w;
        }
        if ((size_t)n == cap && !big && (big = malloc(BIG_BUF)) != NULL) {
            buf = big;
            cap = BIG_BUF;
        }
    }
out:
    free(big);
    weft_close(fd);
    return NULL;
}

/* Close every listener: the accept fibers waiting on them wake up with
 * -EBADF and, seeing `stopping`, return. */
static void stop_listening(struct server *s)
{
    atomic_store(&s->stopping, 1);
    for (unsigned i = 0; i < s->nlisteners; i++)
        weft_close(s->lfds[i]);
}

static void *accept_loop(void *arg)
{
    struct listener *l = arg;
    struct server *s = l->s;
    weft_spawn_opts opts = { .name = "conn", .stack_size = 64 * 1024, .detached = 1 };
    for (;;) {
        int fd = weft_accept(l->fd, NULL, NULL);
        if (fd == -EMFILE || fd == -ENFILE) {
            /* Out of descriptors: wait for some connections to end. */
            weft_sleep(10 * 1000 * 1000);
            continue;
        }
        if (fd < 0) {
            if (!atomic_load(&s->stopping)) {
                fprintf(stderr, "echo_server: accept: %s\n", strerror(-fd));
                atomic_store(&s->status, 1);
            }
            break;
        }
        long n = atomic_fetch_add(&s->accepted, 1) + 1;
        if (s->max_conns && n > s->max_conns) {
            /* Came in on another listener while the last one was taken. */
            weft_close(fd);
            break;
        }
        if (!weft_spawn_ex(&opts, serve_conn, (void *)(intptr_t)fd))
            weft_close(fd); /* out of memory: drop this connection */
        if (n == s->max_conns) {
            stop_listening(s);
            break;
        }
    }
    return NULL;
}

/* A listening socket of its own for one worker: SO_REUSEPORT lets all of
 * them bind the same port. fd or -errno. */
static int listen_reuseport(const char *host, int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (host && *host && inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, BACKLOG) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    return getsockname(fd, (struct sockaddr *)&a, &al) == 0 ? ntohs(a.sin_port) : -1;
}

/* Open the listening sockets: one, or one per worker on the same port
 * (the first picks it when asked for port 0). 0 or -errno. */
static int open_listeners(struct server *s)
{
    unsigned want = s->mode == MODE_SHARED ? 1 : weft_workers();
    if (want > MAX_LISTENERS)
        want = MAX_LISTENERS;
    int port = s->port;
    for (s->nlisteners = 0; s->nlisteners < want; s->nlisteners++) {
        int fd = s->mode == MODE_SHARED ? weft_listen_tcp(s->host, port, BACKLOG)
                                        : listen_reuseport(s->host, port);
        if (fd < 0) {
            for (unsigned i = 0; i < s->nlisteners; i++)
                weft_close(s->lfds[i]);
            return fd;
        }
        s->lfds[s->nlisteners] = fd;
        port = local_port(fd);
    }
    s->port = port;
    return 0;
}

static void server_main(void *arg)
{
    struct server *s = arg;
    int r = open_listeners(s);
    if (r < 0) {
        fprintf(stderr, "echo_server: listen: %s\n", strerror(-r));
        atomic_store(&s->status, 1);
        return;
    }
    printf("echo_server: listening on %s:%d (%u worker%s, %s)\n",
           s->host && *s->host ? s->host : "0.0.0.0", s->port, weft_workers(),
           weft_workers() == 1 ? "" : "s",
           s->mode == MODE_SHARED ? "one shared listener" : "a SO_REUSEPORT listener per worker");
    fflush(stdout);

    struct listener ls[MAX_LISTENERS];
    weft_fiber *acceptors[MAX_LISTENERS];
    for (unsigned i = 0; i < s->nlisteners; i++) {
        ls[i] = (struct listener){ s, s->lfds[i] };
        acceptors[i] = weft_spawn(accept_loop, &ls[i]);
        if (!acceptors[i]) {
            fprintf(stderr, "echo_server: spawn: %s\n", strerror(errno));
            exit(1);
        }
    }
    /* ls lives in this frame: wait for the accept fibers before leaving. */
    for (unsigned i = 0; i < s->nlisteners; i++)
        weft_join(acceptors[i], NULL);
}

/* A server holds one descriptor per connection: let it have as many as
 * the hard limit allows. */
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
    fprintf(stderr, "usage: echo_server [-h HOST] [-p PORT] [-w WORKERS] "
                    "[-m shared|reuseport] [-n MAX_CONNECTIONS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct server s = { .port = 7007, .mode = MODE_SHARED };
    int opt;
    while ((opt = getopt(argc, argv, "h:p:w:m:n:")) != -1) {
        switch (opt) {
        case 'h': s.host = optarg; break;
        case 'p': s.port = atoi(optarg); break;
        case 'w': s.workers = (unsigned)atoi(optarg); break;
        case 'n': s.max_conns = atol(optarg); break;
        case 'm':
            if (strcmp(optarg, "shared") == 0)
                s.mode = MODE_SHARED;
            else if (strcmp(optarg, "reuseport") == 0)
                s.mode = MODE_REUSEPORT;
            else
                usage();
            break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    raise_fd_limit();

    weft_config cfg;
    weft_config_init(&cfg);
    if (s.workers)
        cfg.workers = s.workers;
    int r = weft_run(&cfg, server_main, &s);
    if (r < 0) {
        fprintf(stderr, "echo_server: weft_run: %s\n", strerror(-r));
        return 1;
    }
    return atomic_load(&s.status);
}
