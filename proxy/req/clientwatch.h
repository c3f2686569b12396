/* clientwatch.h - noticing a client that leaves before its reply starts.
 *
 * While a request's handler runs and until its reply starts, evhttp 2.1
 * does not read the client's connection, so it never sees the client go
 * (libevent issue #666): its close callback runs only once a reply has
 * started. A request that waits on backends (a session in the queue or at
 * a silent backend, a fan-out's pull, copy, preload or upload) watches the
 * client's socket with this instead, from admission to the reply's first
 * byte, and is told once if the client left: a FIN (a half-close too), a
 * reset or a failed socket. clientwatch.c says how, and what it costs.
 *
 * States: idle (zeroed, or stopped) -> watching (EV_READ on the socket)
 * -> polling (bytes wait unread in it: its TCP state every 100 ms) ->
 * idle. It goes back to idle when it tells of a leave, before the call. */
#ifndef PX_CLIENTWATCH_H
#define PX_CLIENTWATCH_H

#include <event2/event.h>
#include <event2/event_struct.h>

struct evhttp_connection;

/* The client left. Called from the event loop, never from inside
 * clientwatch_*(); the watch is idle by then, so the callee may free the
 * struct clientwatch (and its owner) and the connection. */
typedef void (*clientwatch_fn)(void *arg);

/* Embedded in its owner (a session, a fan-out); zeroed it is idle. */
struct clientwatch {
    struct event watch; /* the client's socket, for reading */
    struct event poll;  /* instead of WATCH once bytes wait unread in it */
    evutil_socket_t fd;
    clientwatch_fn on_left;
    void *arg;
    unsigned watching : 1;
    unsigned polling : 1;
};

/* Watch the client of EVCON (its request's handler has run, its reply not
 * started) on BASE; ON_LEFT(ARG) is called at most once, if it leaves.
 * W must be idle. Returns 0, or -1 when the socket is not known yet or
 * the event cannot be added (W stays idle: a leave goes unnoticed until
 * the reply, as evhttp alone would have it). */
int clientwatch_start(struct clientwatch *w, struct event_base *base,
                      struct evhttp_connection *evcon, clientwatch_fn on_left, void *arg);

/* The reply starts or its owner ends: watch no more. Idempotent; a
 * zeroed W is idle. Call it before the reply's first byte, and before the
 * connection is freed (the fd may then be another connection's). */
void clientwatch_stop(struct clientwatch *w);

/* 1 unless W's client is known to have left now, whatever the loop has
 * not yet told: for a request about to reach a backend after waiting, in
 * the turn of the loop in which its client's leaving may wait unhandled.
 * An idle W says 1. */
int clientwatch_still_there(const struct clientwatch *w);

#endif
