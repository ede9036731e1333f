/*
 * http_hello: an HTTP/1.1 server that answers every request with
 * "Hello, World!", one fiber per connection.
 *
 *   http_hello [-h HOST] [-p PORT] [-w WORKERS] [-n MAX_CONNECTIONS]
 *
 * Listens on HOST:PORT (default: every IPv4 address, port 8080; port 0
 * picks a free one) and prints one line saying where. -w sets the number
 * of worker threads (default: one per core). With -n it stops accepting
 * after that many connections and exits once they have all finished;
 * otherwise it runs until killed.
 *
 * Connections are kept alive (HTTP/1.1's default) until the client sends
 * "Connection: close" or closes; HTTP/1.0 clients get keep-alive only if
 * they ask for it. A request may arrive in pieces or several at once
 * (pipelining): the fiber reads into a buffer, answers every complete
 * request in it (a head ending in an empty line, then Content-Length
 * bytes of body, which are skipped), in order, with one write per batch,
 * and keeps the incomplete rest for the next read. Requests it cannot
 * handle (a head over 8 KiB, a chunked body, a malformed request line)
 * get "400 Bad Request" and the connection is closed.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft.h>

#define IN_SIZE  8192  /* the largest request head accepted */
#define OUT_SIZE 4096  /* responses are written when this much is queued */

static const char ok_keep_alive[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";
static const char ok_close[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "Connection: close\r\n"
    "\r\n"
    "Hello, World!";
static const char bad_request[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Length: 0\r\n"
    "Connection: close\r\n"
    "\r\n";

struct request {
    size_t head_len;   /* bytes up to and including the empty line */
    size_t body_len;   /* Content-Length */
    int    close;      /* the connection ends after the response */
};

/* Whether the comma-separated header value [v, end) lists `token`. */
static int has_token(const char *v, const char *end, const char *token)
{
    size_t tlen = strlen(token);
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *t = v;
        while (v < end && *v != ',' && *v != ' ' && *v != '\t')
            v++;
        if ((size_t)(v - t) == tlen && strncasecmp(t, token, tlen) == 0)
            return 1;
    }
    return 0;
}

/*
 * Parse the request head at the start of buf[0..len). Returns 1 with *req
 * filled when a whole head is there, 0 when more bytes are needed, -1 for
 * a request this server does not handle.
 */
static int parse_request(const char *buf, size_t len, struct request *req)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len >= IN_SIZE ? -1 : 0;
    req->head_len = (size_t)(end - buf) + 4;
    req->body_len = 0;

    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const char *eol = memmem(buf, (size_t)(end - buf) + 2, "\r\n", 2);
    const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2 || sp1 == buf || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return -1;
    int http10 = sp2[8] == '0';
    int keep_alive = 0;
    req->close = http10;

    /* Headers, one "Name: value" per line. */
    for (const char *line = eol + 2; line < end + 2;) {
        const char *next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(next - line));
        if (colon) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
                if (has_token(v, next, "close"))
                    req->close = 1;
                if (has_token(v, next, "keep-alive"))
                    keep_alive = 1;
            } else if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
                char *num_end;
                unsigned long long n = strtoull(v, &num_end, 10);
                while (num_end < next && (*num_end == ' ' || *num_end == '\t'))
                    num_end++;
                if (num_end != next || n > (1ull << 40))
                    return -1;
                req->body_len = (size_t)n;
            } else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
                return -1; /* chunked bodies are not handled */
            }
        }
        line = next + 2;
    }
    if (http10 && keep_alive)
        req->close = 0;
    return 1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = weft_send(fd, p, n, 0);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Closing a socket with unread input makes the kernel send a reset, which
 * can destroy the last response before the client reads it. So when the
 * server is the one to end the connection: stop sending, then read and
 * discard until the client closes too (or a second passes). */
static void lingering_close(int fd)
{
    char sink[512];
    shutdown(fd, SHUT_WR);
    weft_fd_timeouts(fd, 1000 * 1000 * 1000, 0);
    while (weft_recv(fd, sink, sizeof sink, 0) > 0)
        ;
    weft_close(fd);
}

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char in[IN_SIZE], out[OUT_SIZE];
    size_t have = 0, out_len = 0;
    size_t skip = 0;  /* body bytes still to discard */
    int closing = 0;
    while (!closing) {
        ssize_t n = weft_recv(fd, in + have, sizeof in - have, 0);
        if (n <= 0) {
            weft_close(fd);  /* the client closed (or failed) */
            return NULL;
        }
        have += (size_t)n;
        size_t pos = 0;
        while (!closing) {
            size_t k = skip < have - pos ? skip : have - pos;
            pos += k;
            skip -= k;
            if (skip > 0)
                break;
            struct request req;
            int r = parse_request(in + pos, have - pos, &req);
            if (r == 0)
                break;
            const char *resp = r < 0 ? bad_request : req.close ? ok_close : ok_keep_alive;
            size_t len = r < 0 ? sizeof bad_request - 1
                       : req.close ? sizeof ok_close - 1 : sizeof ok_keep_alive - 1;
            if (out_len + len > sizeof out) {
                if (write_all(fd, out, out_len) != 0)
                    goto fail;
                out_len = 0;
            }
            memcpy(out + out_len, resp, len);
            out_len += len;
            if (r < 0 || req.close) {
                closing = 1;
                break;
            }
            pos += req.head_len;
            skip = req.body_len;
        }
        if (out_len > 0 && write_all(fd, out, out_len) != 0)
            goto fail;
        out_len = 0;
        memmove(in, in + pos, have - pos);
        have -= pos;
    }
    lingering_close(fd);
    return NULL;
fail:
    weft_close(fd);
    return NULL;
}

struct server {
    const char *host;
    int         port;
    unsigned    workers;    /* 0: the runtime's default */
    long        max_conns;  /* 0: unlimited */
    int         status;
};

static void server_main(void *arg)
{
    struct server *s = arg;
    int lfd = weft_listen_tcp(s->host, s->port, 4096);
    if (lfd < 0) {
        fprintf(stderr, "http_hello: listen: %s\n", strerror(-lfd));
        s->status = 1;
        return;
    }
    struct sockaddr_storage a;
    socklen_t al = sizeof a;
    int port = s->port;
    if (getsockname(lfd, (struct sockaddr *)&a, &al) == 0 && a.ss_family == AF_INET)
        port = ntohs(((struct sockaddr_in *)&a)->sin_port);
    printf("http_hello: listening on %s:%d (%u worker%s)\n",
           s->host && *s->host ? s->host : "0.0.0.0", port, weft_workers(),
           weft_workers() == 1 ? "" : "s");
    fflush(stdout);

    weft_spawn_opts opts = { .name = "http", .stack_size = 64 * 1024, .detached = 1 };
    for (long served = 0; s->max_conns == 0 || served < s->max_conns; served++) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd == -EMFILE || fd == -ENFILE) {
            /* Out of descriptors: wait for some connections to end. */
            weft_sleep(10 * 1000 * 1000);
            served--;
            continue;
        }
        if (fd < 0) {
            fprintf(stderr, "http_hello: accept: %s\n", strerror(-fd));
            s->status = 1;
            break;
        }
        if (!weft_spawn_ex(&opts, serve_conn, (void *)(intptr_t)fd))
            weft_close(fd); /* out of memory: drop this connection */
    }
    weft_close(lfd);
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

int main(int argc, char **argv)
{
    struct server s = { .port = 8080 };
    int opt;
    while ((opt = getopt(argc, argv, "h:p:w:n:")) != -1) {
        switch (opt) {
        case 'h': s.host = optarg; break;
        case 'p': s.port = atoi(optarg); break;
        case 'w': s.workers = (unsigned)atoi(optarg); break;
        case 'n': s.max_conns = atol(optarg); break;
        default:
            fprintf(stderr, "usage: http_hello [-h HOST] [-p PORT] [-w WORKERS] "
                            "[-n MAX_CONNECTIONS]\n");
            return 2;
        }
    }
    raise_fd_limit();

    weft_config cfg;
    weft_config_init(&cfg);
    if (s.workers)
        cfg.workers = s.workers;
    int r = weft_run(&cfg, server_main, &s);
    if (r < 0) {
        fprintf(stderr, "http_hello: weft_run: %s\n", strerror(-r));
        return 1;
    }
    return s.status;
}
