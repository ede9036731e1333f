/*
 * The dump server: how weft-dump(1) reaches a running process, and the
 * opt-in dump signal (WEFT_DUMP_SIGNAL). Internal. Its descriptors are
 * watched by the monitor thread (sched/monitor.c), which calls
 * weft__dumpsrv_ready when one is readable. The design (transport and who
 * may connect) is argued in docs/design.md ("weft-dump").
 */
#ifndef WEFT_IO_DUMPSRV_H
#define WEFT_IO_DUMPSRV_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* The wire protocol (docs/design.md, "weft-dump"); weft-dump(1) includes
 * this header for the same two facts. The socket is in the abstract
 * namespace: its name is a NUL byte, then WEFT__DUMP_SOCKET_PREFIX and
 * the pid in decimal. The client sends one line,
 *   "weft-dump <protocol> text|json\n",
 * and the server answers "OK <protocol> <weft_version()>\n" and the
 * report, or one line "ERR <reason>\n". Bump the protocol whenever the
 * request or the report's layout changes incompatibly. */
#define WEFT__DUMP_PROTOCOL      1
#define WEFT__DUMP_SOCKET_PREFIX "weft-dump."

/* The report (sched/report.c): text (json 0) or JSON, written to fd.
 * 0, -EPERM if no runtime runs, or a negative errno from writing. The
 * registry is walked under weft__rt.report_lock; the writing happens
 * after it is released. Any thread (a fiber's stack must be large enough
 * for the symbol lookups: prefer a plain thread). */
int  weft__report(int fd, int json);
/* Write all n bytes of p to fd: 0, or -errno. A socket gets
 * send(MSG_NOSIGNAL), so a weft-dump client that goes away cannot kill
 * the process with SIGPIPE; anything else gets write(). EINTR is
 * retried. Any thread. */
int  weft__write_all(int fd, const char *p, size_t n);
/* weft__now() when this run's server started, for the report's uptime;
 * 0 if it has not. Any thread. */
int64_t weft__dumpsrv_started_ns(void);

/* Open what the server listens on for this run. 0, or a negative errno
 * (the run goes on without it; weft-dump then says the process cannot be
 * reached). The caller of weft_run, before the monitor starts. */
int  weft__dumpsrv_start(void);
/* Fill out[0..max) with the descriptors to watch for POLLIN; returns how
 * many. The monitor thread. */
int  weft__dumpsrv_fds(struct pollfd *out, int max);
/* fd (one of weft__dumpsrv_fds) is readable: serve it without blocking
 * the monitor for long. The monitor thread. */
void weft__dumpsrv_ready(int fd);
/* Close everything weft__dumpsrv_start opened and wait for requests in
 * progress. The caller of weft_run, after the monitor stopped and while
 * the workers' array and the registry still exist. */
void weft__dumpsrv_stop(void);

#endif
