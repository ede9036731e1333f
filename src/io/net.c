/*
 * TCP helpers: weft_listen_tcp and weft_dial_tcp.
 *
 * Numeric addresses (IPv4 dotted quads, IPv6 literals) are converted
 * directly. Names go through getaddrinfo, which may wait for files, NSS
 * modules and DNS servers for as long as the resolver takes: from a fiber
 * it runs on the blocking pool (blocking.c), so the worker goes on with
 * other fibers meanwhile. Sockets are made O_NONBLOCK | O_CLOEXEC.
 */
#define _GNU_SOURCE
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/blocking.h"
#include "io/fd.h"
#include "io/netpoll.h"
#include "sched/sched.h"

#define MAX_ADDRS 8

struct addr {
    struct sockaddr_storage ss;
    socklen_t               len;
};

/* getaddrinfo's error e as a negative errno; sys_errno is the errno it
 * left (for EAI_SYSTEM). Any thread. */
static int gai_errno(int e, int sys_errno)
{
    switch (e) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
    case EAI_FAIL:   return -ENXIO;
    case EAI_AGAIN:  return -EAGAIN;
    case EAI_MEMORY: return -ENOMEM;
    case EAI_SYSTEM: return sys_errno ? -sys_errno : -EIO;
    default:         return -EINVAL;
    }
}

/* One getaddrinfo call, with its errno captured on the thread that made
 * it (a pool thread for a fiber). */
struct lookup {
    const char            *host;
    const struct addrinfo *hints;
    struct addrinfo       *res;
    int                    rc, sys_errno;
};

/* Any thread: the blocking pool's for a fiber, else the caller's. */
static void *lookup_call(void *arg)
{
    struct lookup *l = arg;
    errno = 0;
    l->rc = getaddrinfo(l->host, NULL, l->hints, &l->res);
    l->sys_errno = errno;
    return NULL;
}

/* Fill out[] with up to MAX_ADDRS addresses for host:port; host NULL or
 * "" is the IPv4 wildcard. Returns the count (> 0) or a negative errno.
 * Any thread (for a name, a fiber parks while the blocking pool looks it
 * up; a plain thread blocks in getaddrinfo). */
static int resolve(const char *host, int port, struct addr *out)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (!host || !*host) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        out->len = sizeof *in4;
        return 1;
    }
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        out->len = sizeof *in4;
        return 1;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        out->len = sizeof *in6;
        return 1;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct lookup l = { .host = host, .hints = &hints };
    weft_blocking(lookup_call, &l);
    if (l.rc != 0)
        return gai_errno(l.rc, l.sys_errno);
    struct addrinfo *res = l.res;
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof out[n].ss)
            continue;
        memset(&out[n], 0, sizeof out[n]);
        memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
        out[n].len = (socklen_t)ai->ai_addrlen;
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&out[n].ss)->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)&out[n].ss)->sin6_port = htons((uint16_t)port);
        n++;
    }
    freeaddrinfo(res);
    return n > 0 ? n : -ENXIO;
}

/* A fresh non-blocking stream socket for family, known to the fd table
 * as fresh. fd or -errno. Any thread. */
static int stream_socket(int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -weft__errno(); /* callers loop across parks: see weft__errno */
    np_fresh(fd);
    return fd;
}

int weft_listen_tcp(const char *host, int port, int backlog)
{
    struct addr addrs[MAX_ADDRS];
    int n = resolve(host, port, addrs);
    if (n < 0)
        return n;
    int err = -EADDRNOTAVAIL;
    for (int i = 0; i < n; i++) {
        int fd = stream_socket(addrs[i].ss.ss_family);
        if (fd < 0) {
            err = fd;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, (struct sockaddr *)&addrs[i].ss, addrs[i].len) == 0 &&
            listen(fd, backlog) == 0)
            return fd;
        err = -weft__errno();
        weft_close(fd);
    }
    return err;
}

int weft_dial_tcp(const char *host, int port, int64_t timeout_ns)
{
    if (port <= 0)
        return -EINVAL;
    int64_t deadline = -1;
    if (timeout_ns >= 0) {
        int64_t now = weft__now();
        deadline = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
    }
    struct addr addrs[MAX_ADDRS];
    int n = resolve(host, port, addrs);
    if (n < 0)
        return n;
    int err = -ECONNREFUSED;
    for (int i = 0; i < n; i++) {
        int fd = stream_socket(addrs[i].ss.ss_family);
        if (fd < 0) {
            err = fd;
            continue;
        }
        err = weft__connect_until(fd, (struct sockaddr *)&addrs[i].ss, addrs[i].len, deadline);
        if (err == 0)
            return fd;
        weft_close(fd);
        if (err == -ETIMEDOUT)
            break;
    }
    return err;
}
