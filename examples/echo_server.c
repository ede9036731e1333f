/*
 * echo_server: a TCP echo server, one fiber per connection.
 *
 *   echo_server [PORT [HOST [MAX_CONNECTIONS]]]
 *
 * Listens on HOST:PORT (default: every IPv4 address, port 7007; port 0
 * picks a free one), prints the address once, then echoes every byte back
 * on every connection, printing nothing per connection. With
 * MAX_CONNECTIONS it stops accepting after that many and exits when they
 * have all finished; otherwise it runs until killed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <weft.h>

struct server {
    const char *host;
    int         port;
    long        max_conns;   /* 0: unlimited */
    int         status;
};

/* Echo until the peer closes or an error; then close. */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = weft_send(fd, buf + off, (size_t)(n - off), 0);
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    weft_close(fd);
    return NULL;
}

static void server_main(void *arg)
{
    struct server *s = arg;
    int lfd = weft_listen_tcp(s->host, s->port, 1024);
    if (lfd < 0) {
        fprintf(stderr, "echo_server: listen: %s\n", strerror(-lfd));
        s->status = 1;
        return;
    }
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    if (getsockname(lfd, (struct sockaddr *)&a, &al) == 0)
        printf("echo_server: listening on %s:%d\n",
               s->host && *s->host ? s->host : "0.0.0.0", ntohs(a.sin_port));
    fflush(stdout);
    weft_spawn_opts opts = { .name = "conn", .stack_size = 64 * 1024, .detached = 1 };
    for (long served = 0; s->max_conns == 0 || served < s->max_conns; served++) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0) {
            fprintf(stderr, "echo_server: accept: %s\n", strerror(-fd));
            s->status = 1;
            break;
        }
        if (!weft_spawn_ex(&opts, serve_conn, (void *)(intptr_t)fd))
            weft_close(fd); /* out of memory: drop this connection */
    }
    weft_close(lfd);
}

int main(int argc, char **argv)
{
    struct server s = { NULL, 7007, 0, 0 };
    if (argc > 1)
        s.port = atoi(argv[1]);
    if (argc > 2)
        s.host = argv[2];
    if (argc > 3)
        s.max_conns = atol(argv[3]);
    int r = weft_run(NULL, server_main, &s);
    if (r < 0) {
        fprintf(stderr, "echo_server: weft_run: %s\n", strerror(-r));
        return 1;
    }
    return s.status;
}
