/* clientwatch.c - see clientwatch.h.
 *
 * From admission to the reply's first byte the client's socket is watched
 * for reading, level-triggered (EV_READ). Every way a client leaves makes
 * it readable: a FIN (a read would return 0) and a reset or a socket error,
 * which epoll reports as EPOLLERR|EPOLLHUP and libevent 2.1 (epoll.c,
 * epoll_dispatch) hands on as EV_READ|EV_WRITE. A peek, which consumes
 * nothing, then says which it was (peek). EV_CLOSED alone misses resets:
 * libevent never turns EPOLLERR into EV_CLOSED, so the event never fires,
 * while epoll reports the socket at every turn of the loop.
 *
 * The watch costs no system call: conns.c's read watch keeps the socket in
 * epoll for reading during the request, and libevent calls epoll_ctl only
 * when the count of an fd's read events goes from 0 to 1 or back. So it
 * starts at admission, not after a delay, and what becomes of a client
 * that leaves does not depend on how fast the backends answer.
 *
 * Bytes waiting unread (the next request of a pipelining client, a TLS
 * close_notify ahead of the FIN, a blob's body that a reader paused on)
 * keep a level-triggered socket readable: the watch then steps aside, as
 * conns.c's does, and the socket's TCP state is polled every POLL_MS
 * instead, which a FIN or a reset behind those bytes changes (Go's
 * net/http stops watching at a pipelined byte and learns of a leave only
 * when a write fails).
 *
 * A FIN is the client leaving, even when it could still read (a
 * half-close, shutdown(SHUT_WR) after the request). A client that closes
 * its socket sends the same FIN; only a write to it, answered by a reset,
 * would tell the two apart, and a reply of stream:false is written when
 * the backends have done all of it. So the request is cancelled, as
 * Ollama itself does (Go's net/http cancels the request's context at the
 * client's EOF) and nginx (proxy_ignore_client_abort off), and as evhttp
 * does once the reply has started (it reads while it writes and ends the
 * connection at EOF). */
#include "clientwatch.h"

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#define POLL_MS 100

enum client_sign { CLIENT_QUIET, CLIENT_BYTES, CLIENT_LEFT };

/* What the client's socket FD holds, read without consuming it. */
static enum client_sign peek(evutil_socket_t fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return CLIENT_BYTES;
    if (n == 0)
        return CLIENT_LEFT; /* its FIN */
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return CLIENT_QUIET;
    return CLIENT_LEFT; /* a reset (ECONNRESET), or the socket failed */
}

/* The client's TCP state says it sent its FIN or was reset, whatever bytes
 * wait ahead of either. 0 when it cannot tell (not TCP). */
static int tcp_left(evutil_socket_t fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || len == 0)
        return 0;
    return ti.tcpi_state != TCP_ESTABLISHED;
}

/* The client left: idle first, for the callee may free W. */
static void tell(struct clientwatch *w)
{
    clientwatch_fn fn = w->on_left;
    void *arg = w->arg;
    clientwatch_stop(w);
    fn(arg);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct clientwatch *w = arg;
    (void)fd;
    (void)what;
    if (tcp_left(w->fd))
        tell(w);
}

/* Bytes wait unread in the client's socket: stop the watch (each turn of
 * the loop would report them) and poll the socket's state instead. */
static void step_aside(struct clientwatch *w)
{
    struct timeval tv = {0, POLL_MS * 1000};
    event_del(&w->watch);
    w->watching = 0;
    event_assign(&w->poll, event_get_base(&w->watch), -1, EV_PERSIST, on_poll, w);
    if (event_add(&w->poll, &tv) == 0)
        w->polling = 1;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct clientwatch *w = arg;
    (void)what;
    switch (peek(fd)) {
    case CLIENT_QUIET: /* another reader took what woke us */
        break;
    case CLIENT_BYTES:
        step_aside(w);
        break;
    case CLIENT_LEFT:
        tell(w);
        break;
    }
}

int clientwatch_start(struct clientwatch *w, struct event_base *base,
                      struct evhttp_connection *evcon, clientwatch_fn on_left, void *arg)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return -1;
    w->fd = fd;
    w->on_left = on_left;
    w->arg = arg;
    event_assign(&w->watch, base, fd, EV_READ | EV_PERSIST, on_readable, w);
    if (event_add(&w->watch, NULL) < 0)
        return -1;
    w->watching = 1;
    return 0;
}

void clientwatch_stop(struct clientwatch *w)
{
    if (w->watching) {
        event_del(&w->watch);
        w->watching = 0;
    }
    if (w->polling) {
        evtimer_del(&w->poll);
        w->polling = 0;
    }
}

int clientwatch_still_there(const struct clientwatch *w)
{
    if (w->polling)
        return !tcp_left(w->fd);
    return !w->watching || peek(w->fd) != CLIENT_LEFT;
}
