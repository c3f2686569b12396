/* transport.h - how upstream.c moves bytes over a connected socket: an ops
 * table under the HTTP framing (STYLE.md: Redis's ConnectionType, HAProxy's
 * xprt_ops), so that TLS sits beside plain sockets and the HTTP code never
 * knows which.
 *
 * Every op works on a struct tconn: the socket, the transport, and the
 * transport's own state for this connection. upstream.c owns the socket
 * (it opens, connects and closes it); a transport only reads and writes
 * through it and frees its own state in close.
 *
 * Adding a transport is one ops table (and its config keys): upstream.c is
 * unchanged. */
#ifndef PX_TRANSPORT_H
#define PX_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TRANSPORT_WANT_READ 1  /* setup: call again once the socket is readable */
#define TRANSPORT_WANT_WRITE 2 /* setup: call again once the socket is writable */

struct transport;

struct tconn {
    int fd;
    const struct transport *tp;
    void *state; /* the transport's, per connection (NULL for plain) */
    void *ctx;   /* the transport's, per target (a TLS context...) */
};

struct transport {
    const char *name; /* "plain", "tls" */
    /* The TCP connection is up: the transport's own setup (a TLS
     * handshake). 0 when done, TRANSPORT_WANT_READ or _WRITE to be called
     * again when the socket is ready, -1 when it failed, with why in ERR. */
    int (*setup)(struct tconn *c, char *err, size_t errlen);
    /* Up to N bytes into BUF: > 0 read, 0 the peer's end, -1 with errno
     * (EAGAIN: nothing now). */
    ssize_t (*read)(struct tconn *c, void *buf, size_t n);
    /* Write from IOV[0..N): bytes written (maybe fewer), or -1 with errno
     * (EAGAIN: no room now). */
    ssize_t (*writev)(struct tconn *c, struct iovec *iov, int n);
    /* Free the transport's state; the fd stays open (upstream.c closes it). */
    void (*close)(struct tconn *c);
    /* 1 when the transport holds bytes it read from the socket but has not
     * handed out (the rest of a TLS record): read again without waiting
     * for the socket, which will not say. NULL: never (plain). */
    int (*pending)(struct tconn *c);
};

/* Plain TCP: reads and writes straight on the socket. */
extern const struct transport transport_plain;

#endif
