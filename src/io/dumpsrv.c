/*
 * The dump server: how weft-dump(1) reaches a running process, and the
 * opt-in dump signal. The argument for the design is in docs/design.md
 * ("weft-dump"); in short:
 *
 * Transport. While a run lasts, an abstract-namespace unix stream socket
 * named "\0weft-dump.<pid>" listens. The monitor thread (sched/monitor.c)
 * polls it with its own descriptors, so a process whose every worker is
 * stuck in a fiber that never yields still answers. Abstract names live
 * in the network namespace: a client in another one (a container with
 * its own network) cannot see the socket, and two processes with the
 * same pid in different pid namespaces but one network namespace collide
 * (the second run goes without a server).
 *
 * Who may connect. An abstract socket has no file mode, so every
 * connection is checked with SO_PEERCRED: the peer's uid must be 0 or our
 * effective uid. Anyone else gets one line, "ERR permission denied: ...",
 * and the connection is closed before anything is read.
 *
 * Serving. Each accepted client is served on a thread of its own (at
 * most MAX_CLIENTS at once; more are told "ERR busy"), so a client that
 * reads slowly or not at all never holds the monitor: the thread reads
 * one request line (RECV_TIMEOUT_MS), answers "OK <protocol> <version>"
 * and the report, or one ERR line, and exits. weft__dumpsrv_stop shuts
 * the clients' sockets down (a blocked read or write returns at once)
 * and joins every thread before the run's registry goes away.
 *
 * The signal. Only with WEFT_DUMP_SIGNAL set (USR1, USR2, SIGUSR2, or a
 * signal number: those two or a real-time one): the handler writes one
 * byte to a self-pipe, which is async-signal-safe, and the monitor, on
 * seeing the pipe readable, has a thread write the text report to
 * stderr. The previous handler is restored when the run ends. The pipe
 * itself is made once and kept for the life of the process: a handler
 * running on another thread at the moment of a stop could otherwise
 * write its byte into a descriptor that was closed and reused.
 */
#define _GNU_SOURCE
#include "io/dumpsrv.h"
#include "sched/trace.h"

#include <weft.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sched/sched.h"

#define MAX_CLIENTS      4
#define REQ_MAX          128
#define RECV_TIMEOUT_MS  2000
#define SEND_TIMEOUT_MS  10000
#define ACCEPT_BURST     16

enum { SLOT_FREE = 0, SLOT_BUSY, SLOT_DONE };

struct slot {
    pthread_t thread;
    int       state;   /* SLOT_*, with srv.lock                           */
    int       fd;      /* the client's socket; -1 for a signal dump       */
};

static struct {
    pthread_mutex_t  lock;          /* everything below                     */
    int              running;
    int              listen_fd;
    int              sig;           /* the dump signal installed, 0: none   */
    struct sigaction sig_old;
    struct slot      slots[MAX_CLIENTS];
} srv = { .lock = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1 };

/* The self-pipe: made on first use, never closed (see the top). */
static int sig_pipe[2] = { -1, -1 };
/* Its write end, for the handler. Set once, before the first handler is
 * installed, never changed. Relaxed: the handler may run on any thread;
 * a handler that saw -1 would only drop that one signal. */
static _Atomic int sig_wfd = -1;

/* weft__now() at the start of this run's server; 0 when stopped.
 * Relaxed: a timestamp printed on its own. */
static _Atomic int64_t started_ns;

int64_t weft__dumpsrv_started_ns(void)
{
    return atomic_load_explicit(&started_ns, memory_order_relaxed);
}

/* ---- the dump signal --------------------------------------------------- */

static void on_dump_signal(int sig)
{
    (void)sig;
    int saved = errno;
    int fd = atomic_load_explicit(&sig_wfd, memory_order_relaxed);
    if (fd >= 0) {
        char c = 1;
        (void)!write(fd, &c, 1); /* a full pipe already has a dump pending */
    }
    errno = saved;
}

/* The signal WEFT_DUMP_SIGNAL asks for: 0 for none, -1 if it names none
 * we accept. */
static int parse_signal(const char *v)
{
    if (!v || !*v)
        return 0;
    const char *n = strncasecmp(v, "SIG", 3) == 0 ? v + 3 : v;
    if (strcasecmp(n, "USR1") == 0)
        return SIGUSR1;
    if (strcasecmp(n, "USR2") == 0)
        return SIGUSR2;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    if (x == SIGUSR1 || x == SIGUSR2 || (x >= SIGRTMIN && x <= SIGRTMAX))
        return (int)x;
    return -1;
}

static void warn(const char *what, const char *value)
{
    char line[200];
    int n = snprintf(line, sizeof line, "weft: %s%.40s\n", what, value ? value : "");
    if (n > 0)
        (void)!write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Install the dump signal if asked to. With srv.lock held. */
static void signal_setup(void)
{
    const char *v = getenv("WEFT_DUMP_SIGNAL");
    int sig = parse_signal(v);
    if (sig == 0)
        return;
    if (sig < 0) {
        warn("ignoring WEFT_DUMP_SIGNAL (want USR1, USR2 or a real-time signal number): ", v);
        return;
    }
    struct sigaction old;
    if (sigaction(sig, NULL, &old) != 0)
        return;
    if ((old.sa_flags & SA_SIGINFO) || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) {
        warn("WEFT_DUMP_SIGNAL: the program handles that signal itself; not installed: ", v);
        return;
    }
    if (sig_pipe[0] < 0) {
        if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
            sig_pipe[0] = sig_pipe[1] = -1;
            return;
        }
        atomic_store_explicit(&sig_wfd, sig_pipe[1], memory_order_relaxed);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_dump_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, &srv.sig_old) == 0)
        srv.sig = sig;
}

/* With srv.lock held. */
static void signal_restore(void)
{
    if (srv.sig)
        sigaction(srv.sig, &srv.sig_old, NULL);
    srv.sig = 0;
}

/* ---- serving one client ------------------------------------------------ */

static void send_line(int fd, const char *line)
{
    (void)weft__write_all(fd, line, strlen(line));
}

static void set_timeout(int fd, int opt, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    (void)setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

/* Read the request line into buf (NUL-terminated, without the newline).
 * 0, or -1 on a timeout, an error, or a line too long. */
static int read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        char *nl = memchr(buf + len, '\n', (size_t)n);
        len += (size_t)n;
        if (nl) {
            *nl = 0;
            return 0;
        }
    }
    return -1;
}

/* "trace SECONDS": record the scheduler for that long (or until the
 * client hangs up or the run ends: weft__dumpsrv_stop shuts the socket
 * down), then send the trace-event JSON. A client thread. */
static void serve_trace(int fd, int secs)
{
    char line[160];
    int err = weft__trace_begin(0);
    if (err) {
        snprintf(line, sizeof line, "ERR trace: %s\n",
                 err == -EBUSY ? "another trace is recording"
                 : err == -EPERM ? "no weft runtime running" : strerror(-err));
        send_line(fd, line);
        return;
    }
    snprintf(line, sizeof line, "OK %d %s\n", WEFT__DUMP_PROTOCOL, weft_version());
    if (weft__write_all(fd, line, strlen(line)) == 0) {
        struct pollfd p = { fd, POLLIN, 0 };
        int64_t end = weft__now() + (int64_t)secs * 1000000000;
        for (int64_t left; (left = end - weft__now()) > 0;) {
            int r = poll(&p, 1, (int)(left / 1000000) + 1);
            if (r > 0 || (r < 0 && errno != EINTR))
                break; /* the client left, or the run is ending */
        }
    }
    (void)weft__trace_end(fd);
}

static void serve(int fd)
{
    set_timeout(fd, SO_RCVTIMEO, RECV_TIMEOUT_MS);
    set_timeout(fd, SO_SNDTIMEO, SEND_TIMEOUT_MS);
    char req[REQ_MAX], line[160];
    if (read_request(fd, req, sizeof req) != 0) {
        send_line(fd, "ERR bad request: expected \"weft-dump <protocol> text|json\"\n");
        return;
    }
    int proto = -1;
    char kind[16] = "";
    if (sscanf(req, "weft-dump %d %15s", &proto, kind) < 1) {
        send_line(fd, "ERR bad request: expected \"weft-dump <protocol> text|json\"\n");
        return;
    }
    if (proto != WEFT__DUMP_PROTOCOL) {
        snprintf(line, sizeof line, "ERR incompatible protocol %d: this process speaks %d\n",
                 proto, WEFT__DUMP_PROTOCOL);
        send_line(fd, line);
        return;
    }
    long trace_secs = 0;
    if (strcmp(kind, "trace") == 0) {
        if (sscanf(req, "weft-dump %*d trace %ld", &trace_secs) != 1 || trace_secs < 1 ||
            trace_secs > 3600) {
            send_line(fd, "ERR bad request: expected \"trace SECONDS\" (1..3600)\n");
            return;
        }
        serve_trace(fd, (int)trace_secs);
        return;
    }
    int json = strcmp(kind, "json") == 0;
    if (!json && strcmp(kind, "text") != 0) {
        send_line(fd, "ERR bad request: the report kind is text, json or trace\n");
        return;
    }
    /* Relaxed: a courtesy check (the report re-checks under its lock);
     * a run that ends in between gives an OK and an empty report. */
    if (atomic_load_explicit(&weft__rt.state, memory_order_relaxed) != RT_RUNNING) {
        send_line(fd, "ERR no weft runtime running\n");
        return;
    }
    snprintf(line, sizeof line, "OK %d %s\n", WEFT__DUMP_PROTOCOL, weft_version());
    if (weft__write_all(fd, line, strlen(line)) != 0)
        return;
    (void)weft__report(fd, json);
}

static void *client_main(void *arg)
{
    struct slot *sl = arg;
    /* fd is ours to use until we mark the slot done (stop only shuts it
     * down, under the lock, while the slot is busy). */
    pthread_mutex_lock(&srv.lock);
    int fd = sl->fd;
    pthread_mutex_unlock(&srv.lock);
    if (fd >= 0)
        serve(fd);
    else
        (void)weft__report(STDERR_FILENO, 0);
    pthread_mutex_lock(&srv.lock);
    if (fd >= 0)
        close(fd);
    sl->fd = -1;
    sl->state = SLOT_DONE;
    pthread_mutex_unlock(&srv.lock);
    return NULL;
}

/* A slot for a new client, joining a finished thread if that is what
 * frees one. NULL if all are busy. With srv.lock held. */
static struct slot *slot_get(void)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (srv.slots[i].state == SLOT_FREE)
            return &srv.slots[i];
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct slot *sl = &srv.slots[i];
        if (sl->state == SLOT_DONE) {
            /* It has released the lock for the last time: the join
             * waits for no more than its return. */
            pthread_join(sl->thread, NULL);
            sl->state = SLOT_FREE;
            return sl;
        }
    }
    return NULL;
}

/* Serve fd (a client socket, or -1: a signal dump to stderr) on a thread
 * of its own. 0, or -1 if none could be had (fd is then still open). With
 * srv.lock held. */
static int start_client(int fd)
{
    struct slot *sl = slot_get();
    if (!sl)
        return -1;
    sl->fd = fd;
    sl->state = SLOT_BUSY;
    if (pthread_create(&sl->thread, NULL, client_main, sl) != 0) {
        sl->fd = -1;
        sl->state = SLOT_FREE;
        return -1;
    }
    return 0;
}

/* The peer of fd may dump us: root, or our own effective user. */
static int peer_allowed(int fd, struct ucred *cr)
{
    socklen_t len = sizeof *cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &len) != 0 || len != sizeof *cr)
        return 0;
    return cr->uid == 0 || cr->uid == geteuid();
}

/* With srv.lock held. */
static void accept_clients(void)
{
    for (int i = 0; i < ACCEPT_BURST && srv.listen_fd >= 0; i++) {
        int fd = accept4(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN: none left; anything else: try next time */
        struct ucred cr;
        if (!peer_allowed(fd, &cr)) {
            char line[128];
            snprintf(line, sizeof line,
                     "ERR permission denied: uid %u may not dump process %d (owner uid %u)\n",
                     (unsigned)cr.uid, (int)getpid(), (unsigned)geteuid());
            /* Non-blocking: one short line into an empty socket buffer. */
            (void)send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
            continue;
        }
        if (start_client(fd) != 0) {
            (void)send(fd, "ERR busy: too many weft-dump clients, try again\n", 48,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
        }
    }
}

/* ---- the interface ------------------------------------------------------ */

int weft__dumpsrv_start(void)
{
    pthread_mutex_lock(&srv.lock);
    if (srv.running) {
        pthread_mutex_unlock(&srv.lock);
        return -EALREADY;
    }
    int err;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = -errno;
        goto out;
    }
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, WEFT__DUMP_SOCKET_PREFIX "%d",
                     (int)getpid());
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (bind(fd, (struct sockaddr *)&a, alen) != 0 || listen(fd, 16) != 0) {
        err = -errno;
        close(fd);
        goto out;
    }
    srv.listen_fd = fd;
    srv.running = 1;
    atomic_store_explicit(&started_ns, weft__now(), memory_order_relaxed);
    signal_setup();
    err = 0;
out:
    pthread_mutex_unlock(&srv.lock);
    return err;
}

int weft__dumpsrv_fds(struct pollfd *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&srv.lock);
    if (srv.running) {
        if (n < max && srv.listen_fd >= 0)
            out[n++] = (struct pollfd){ .fd = srv.listen_fd, .events = POLLIN };
        if (n < max && srv.sig)
            out[n++] = (struct pollfd){ .fd = sig_pipe[0], .events = POLLIN };
    }
    pthread_mutex_unlock(&srv.lock);
    return n;
}

void weft__dumpsrv_ready(int fd)
{
    pthread_mutex_lock(&srv.lock);
    if (!srv.running) {
        pthread_mutex_unlock(&srv.lock);
        return;
    }
    if (fd == srv.listen_fd) {
        accept_clients();
    } else if (srv.sig && fd == sig_pipe[0]) {
        char buf[64];
        while (read(fd, buf, sizeof buf) > 0)
            ;
        if (start_client(-1) != 0) {
            /* No thread to spare: write it from here (the monitor). */
            pthread_mutex_unlock(&srv.lock);
            (void)weft__report(STDERR_FILENO, 0);
            return;
        }
    }
    pthread_mutex_unlock(&srv.lock);
}

void weft__dumpsrv_stop(void)
{
    pthread_mutex_lock(&srv.lock);
    if (!srv.running) {
        pthread_mutex_unlock(&srv.lock);
        return;
    }
    srv.running = 0;
    close(srv.listen_fd);
    srv.listen_fd = -1;
    signal_restore();
    atomic_store_explicit(&started_ns, 0, memory_order_relaxed);
    int busy[MAX_CLIENTS] = { 0 };
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct slot *sl = &srv.slots[i];
        if (sl->state == SLOT_FREE)
            continue;
        /* A client blocked in recv or send returns at once. A signal
         * dump to stderr is waited for. */
        if (sl->state == SLOT_BUSY && sl->fd >= 0)
            shutdown(sl->fd, SHUT_RDWR);
        busy[i] = 1;
    }
    pthread_mutex_unlock(&srv.lock);
    /* Nobody starts a client meanwhile (running is 0), so the slots we
     * join stay ours. */
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (busy[i])
            pthread_join(srv.slots[i].thread, NULL);
    pthread_mutex_lock(&srv.lock);
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (busy[i])
            srv.slots[i].state = SLOT_FREE;
    pthread_mutex_unlock(&srv.lock);
}
