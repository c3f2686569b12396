/* backend.h - the backends and the choice among them.
 *
 * All of this lives in the one event-loop thread: in_flight is exact
 * because nothing else touches it. A slot is taken with backend_acquire()
 * when a request is dispatched and given back with backend_release() when
 * its response has ended (a stream counts until its last byte) or failed. */
#ifndef PX_BACKEND_H
#define PX_BACKEND_H

#include <sys/socket.h>

struct event;

struct upstream;
struct config_backend;

struct backend {
    char *name;
    char *url;
    char *host;
    int port;
    char hostport[300]; /* the Host header the backend is sent */
    struct sockaddr_storage addr;
    socklen_t addrlen; /* 0 until the host resolved */
    int max_concurrent;
    int in_flight;
    unsigned long long served; /* responses that ended well */
    unsigned long long failed; /* connect errors, resets, 503s, timeouts */
    int healthy;
    int consecutive_failures;
    double retry_at_ms; /* unhealthy: next time one request may try it */
    struct event *wake; /* fires at retry_at_ms to hand it waiting requests */
    struct upstream *idle; /* keep-alive pool (upstream.c owns the list) */
    int nidle;
    int removed; /* dropped by a reload: serves what it has, takes nothing */
};

/* Make a backend from its config row; resolves the host (blocking, at
 * startup and reload only). Returns NULL on allocation failure. */
struct backend *backend_new(const struct config_backend *cb);
/* Free a backend with no request in flight; NULL is a no-op. */
void backend_free(struct backend *be);

/* Resolve be->host again (a container that was not up yet). 0 or -1. */
int backend_resolve(struct backend *be);

/* 1 when BE may be given a request now: a free slot, and healthy (or its
 * retry time has come). */
int backend_available(const struct backend *be, double now_ms);

/* The least loaded available backend among BES[0..N-1] (lowest
 * in_flight / max_concurrent), skipping AVOID (NULL = none) unless it is the
 * only one; ties go round-robin from *RR. NULL when none is available. */
struct backend *backend_pick(struct backend **bes, int n, unsigned *rr,
                             const struct backend *avoid, double now_ms);

void backend_acquire(struct backend *be);
void backend_release(struct backend *be);

/* Record the outcome of a try: failures mark the backend down after
 * FAIL_AFTER in a row (it is retried after RETRY_S); a success marks it up. */
void backend_note_failure(struct backend *be, int fail_after, double retry_s, double now_ms);
void backend_note_success(struct backend *be);

#endif
