/* upstream.h - HTTP/1.1 client connections to backends, with a keep-alive
 * pool per target. Bytes move through the target's transport (transport.h).
 *
 * States of a connection:
 *   CONNECTING -> SETUP (the transport's: a TLS handshake) ->
 *     SENDING/WAIT_HEAD (request written, no response yet)
 *     -> BODY (head delivered) -> IDLE (response complete, back in the pool)
 *   any state -> freed on error, abort, or a response that cannot be reused.
 * An IDLE connection watches its socket; if the backend closes it, it is
 * freed and never handed out. Only one request is in flight on a connection.
 *
 * Ownership: while a request runs, the connection belongs to the caller (the
 * session) who must end it with exactly one upstream_release() (after
 * on_done) or upstream_abort(). Callbacks may call upstream_abort() on the
 * connection that called them; it is then freed when the callback returns. */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H

#include <event2/event.h>
#include <stddef.h>
#include <sys/socket.h>

struct evbuffer;
struct transport;
struct upstream;

/* Where requests go: an address, the transport on it, and the keep-alive
 * pool of connections to it. Owned by the caller (a backend embeds one);
 * upstream.c knows a target, never a backend. */
struct upstream_target {
    struct sockaddr_storage addr;
    socklen_t addrlen;          /* 0: no address yet, upstream_start fails */
    const struct transport *tp; /* NULL: plain TCP (transport.h) */
    void *tp_ctx;               /* the transport's per-target state (a TLS context) */
    struct upstream *idle;      /* the pool, upstream.c's */
    int nidle;
    unsigned closing : 1;       /* retired: no connection is pooled any more */
    unsigned gen;               /* upstream_pool_drain() counts: older connections close */
    char setup_err[160];        /* why the last transport setup failed */
};

enum upstream_err {
    UPSTREAM_ECONNECT = 1, /* connect refused or failed */
    UPSTREAM_ETIMEOUT_CONNECT,
    UPSTREAM_ERESET,            /* closed or reset before the response head */
    UPSTREAM_ETIMEOUT_HEAD,     /* no response head within first_byte_s */
    UPSTREAM_ETIMEOUT_IDLE,     /* no body bytes within idle_s */
    UPSTREAM_EBODY,             /* closed or reset in the middle of the body */
    UPSTREAM_EPROTO,            /* unparsable response */
    UPSTREAM_ESETUP,            /* the transport's setup failed (a TLS handshake):
                                   why in the target's setup_err */
    UPSTREAM_ESTALE,            /* a pooled connection the backend had closed: no
                                   byte of the response came; not the backend's fault */
};

struct upstream_cbs {
    /* One header of the response head (not of a 1xx), in order, before
     * on_head; STATUS is the response's. KEY and VALUE are valid during the
     * call only. */
    void (*on_header)(void *arg, int status, const char *key, const char *value);
    /* The response head is complete (CONTENT_LENGTH -1: none). Return 0 to
     * go on, -1 if the caller aborted the connection. */
    int (*on_head)(void *arg, int status, const char *reason, long long content_length);
    /* Body bytes: the callee must remove all LEN bytes from SRC. */
    void (*on_body)(void *arg, struct evbuffer *src, size_t len);
    /* The response is complete; the caller must now release or abort. */
    void (*on_done)(void *arg);
    /* The request failed; the connection is already freed. */
    void (*on_error)(void *arg, enum upstream_err err);
};

struct upstream_timeouts {
    struct timeval connect, first_byte, idle;
};

struct upstream;

/* Start REQ (a complete request head plus body, which is drained) on an idle
 * pooled connection to T or a new one. HEAD_REQ: the request is a HEAD, so
 * the response has no body whatever its headers say. Returns the
 * connection, or NULL when a socket could not even be created, or T has no
 * address yet (then nothing was called). */
struct upstream *upstream_start(struct event_base *base, struct upstream_target *t,
                                struct evbuffer *req, int head_req,
                                const struct upstream_timeouts *to,
                                const struct upstream_cbs *cbs, void *arg);

/* Stop (1) or resume (0) reading the response: back pressure. Resuming may
 * deliver buffered body bytes, and on_done, before it returns. */
void upstream_pause(struct upstream *up, int paused);

/* After on_done: return the connection to its backend's pool. */
void upstream_release(struct upstream *up);

/* Close the connection at once (the backend sees the hang-up and stops
 * generating). No callback is called. */
void upstream_abort(struct upstream *up);

/* Close all idle connections of T (removal, shutdown, new TLS settings);
 * those in use close when released instead of going back to the pool. */
void upstream_pool_drain(struct upstream_target *t);

/* A short name for ERR, for logs and error replies. */
const char *upstream_strerror(enum upstream_err err);

#endif
