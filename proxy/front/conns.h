/* conns.h - the client side's connections: the listener, the evhttp server
 * on it, limits.max_connections and the request deadline (slowloris).
 * What a request is and where it goes is the router's (router.h). */
#ifndef PX_CONNS_H
#define PX_CONNS_H

#include "intake.h"

struct proxy;
struct evhttp_request;
struct bodysrc;

/* Listen on cfg->listen and hand every request to ON_REQUEST(req, px).
 * Returns 0, or -1 after logging why. */
int conns_start(struct proxy *px, void (*on_request)(struct evhttp_request *, void *));

/* Apply cfg's body limit and keep-alive timeout (startup and reload). */
void conns_settings(struct proxy *px);

/* REQ has arrived whole: its connection's request deadline stops until the
 * reply is done. */
void conns_request_arrived(struct proxy *px, struct evhttp_request *req);

/* The body of REQ (just handed over) if it is still arriving on the
 * connection (a blob upload's: intake.h), else NULL: it is in REQ's input
 * buffer. The caller reads it and must release it (bodysrc.h). */
struct bodysrc *conns_body(struct proxy *px, struct evhttp_request *req);

/* What the connection's intake says of REQ, just handed over (intake.h:
 * a body over limits.max_body_mb dropped, a head refused by px->gate or at
 * fault): the caller answers it so. */
enum intake_verdict conns_verdict(struct proxy *px, struct evhttp_request *req, int *status,
                                  const char **why);

/* REQ came through a listener bound to loopback: as Ollama there, only
 * requests whose Host names this machine are answered (net_host_local:
 * the DNS-rebinding guard; router.c). */
int conns_local_only(struct proxy *px, struct evhttp_request *req);

/* Stop accepting new connections (drain); connections open stay served. */
void conns_stop_accepting(struct proxy *px);

/* Free the evhttp server and every client connection; NULL-safe. */
void conns_free(struct proxy *px);

#endif
