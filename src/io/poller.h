/*
 * The poller: where a worker waits when it has nothing to run. Internal.
 *
 * One poller per worker. A worker's only blocking point is poller_wait,
 * which returns when an I/O event arrives (the netpoller registers fds
 * here), when poller_wake is called, or when the timeout (the worker's
 * next timer) expires. One backend per file behind this interface:
 * poller_epoll.c now, io_uring beside it later.
 *
 * Parking without losing a wake-up takes three steps by the owner:
 *
 *   poller_prepare(p);          announce "about to sleep"
 *   ...re-check for work...     everything a waker publishes before
 *                               calling poller_wake is visible here
 *   poller_wait(p, t)           or poller_cancel(p) if work was found
 *
 * and one by the waker: publish the work, then poller_wake(p). The wake
 * costs a system call only if the owner is between poller_prepare and the
 * end of poller_wait; a running worker is never signalled, it will find
 * the work when it next re-checks.
 */
#ifndef WEFT_IO_POLLER_H
#define WEFT_IO_POLLER_H

#include <stdint.h>

struct poller;

/* Make a poller in *out. 0 or a negative errno (EMFILE, ENOMEM, ...).
 * Any thread. */
int  poller_init(struct poller **out);
/* Close its descriptors and free it. No thread may use it any more. */
void poller_close(struct poller *p);

/* Announce that the owner is about to wait. seq_cst: the owner's
 * re-check for work after this call and a waker's publication before
 * poller_wake are ordered against each other. Owner only. */
void poller_prepare(struct poller *p);
/* The re-check found work: do not wait after all. Owner only. */
void poller_cancel(struct poller *p);
/* Wait for an event, a wake-up or the timeout (ns; negative: none, 0:
 * just poll). Must follow poller_prepare. Returns 1 if it was woken by
 * poller_wake, 0 otherwise (timeout or I/O event), or a negative errno
 * (never EINTR: a signal counts as a spurious return, 0). Owner only, on
 * its thread's own stack (it takes a few KiB of events there). */
int  poller_wait(struct poller *p, int64_t timeout_ns);
/* Make the owner's current or next poller_wait return, if the owner is
 * waiting or about to (after poller_prepare); otherwise do nothing.
 * Async-signal-safe. Any thread. */
void poller_wake(struct poller *p);

/* epoll calls made through p so far (waits and polls). Any thread (a
 * relaxed snapshot). */
uint64_t poller_calls(const struct poller *p);

/* Readiness bits handed to netpoll_deliver. POLLER_ERR (error, hang-up)
 * comes with both POLLER_IN and POLLER_OUT set, so both sides retry. */
#define POLLER_IN   1u
#define POLLER_OUT  2u
/* With POLLER_IN: the peer shut down its side, or the fd has an error or
 * hung up; a lasting state, not an edge of new data. */
#define POLLER_HUP  4u

/* Watch fd, edge-triggered, for input, output and peer hang-up, delivering
 * its events with `data` (not NULL). 0, -EPERM (a file epoll cannot watch:
 * regular files, directories), -EEXIST or another negative errno. The
 * registration ends when the last descriptor of the open file is closed.
 * Owner only (the count of registered fds is the owner's). */
int  poller_register(struct poller *p, int fd, void *data);
/* One fd registered here was closed (for the polling heuristic in
 * poller_poll). Any thread. */
void poller_forget(struct poller *p);
/* Deliver the I/O events pending now, without waiting; returns at once
 * when no fd is registered here. Returns the number of events delivered.
 * Owner only, outside poller_prepare .. poller_wait. */
int  poller_poll(struct poller *p);

/* Implemented by the netpoller: fd events for `data`. Owner worker of the
 * poller that delivers them, from poller_wait or poller_poll. */
void netpoll_deliver(void *data, unsigned events);
/* The events of one poll have all been delivered (the scheduler may then
 * share out what they readied). The thread that delivered them. */
void netpoll_deliver_end(void);

#endif
