/* upstream.c - see upstream.h.
 *
 * A minimal HTTP/1.1 client: it writes one prepared
 * request, parses the status line and headers, and hands the body on with
 * Content-Length, chunked or close-delimited framing decoded. Reading stops
 * while the caller has paused it, which is the proxy's back pressure, and
 * the timeout does not run then, so a paused transfer is never taken for a
 * stalled one.
 *
 * The socket is driven with plain events rather than a bufferevent: one
 * read() per readiness without an ioctl(FIONREAD) first, a request written
 * at once when it fits, and a timeout that is not re-armed on every read
 * (the last activity is noted; the timer checks it when it fires). */
#include "upstream.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "transport.h"

/* A response head, all its lines together (1xx heads included), may have
 * at most MAX_HEAD_BYTES and MAX_HEADERS lines, as HAProxy's tune.bufsize
 * and tune.http.maxhdr: past that the response is malformed. Without the
 * bound a backend sending header lines forever grows the proxy without
 * limit. */
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_HEADERS 256
#define READ_CHUNK 4096 /* a non-streamed reply or a few tokens: most fit */

enum up_state { UP_CONNECTING, UP_SETUP, UP_WAIT_HEAD, UP_HEADERS, UP_BODY, UP_DONE, UP_IDLE };
enum body_mode { BODY_NONE, BODY_CL, BODY_CHUNKED, BODY_EOF };
enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_CRLF, CH_TRAILER };

struct upstream {
    struct upstream_target *t;
    struct tconn c;      /* the socket and its transport */
    struct event rev, wev, tev; /* readable, writable, timeout */
    struct evbuffer *in, *out;
    double timeout_ms;   /* of the current phase; 0 none */
    double last_io_ms;   /* the last read, or the start of the phase */
    int pending_err;     /* an error found in upstream_start(), told later */
    struct upstream *next, *prev; /* the target's idle list */
    const struct upstream_cbs *cbs;
    void *arg;
    struct upstream_timeouts to;
    enum up_state state;
    enum body_mode mode;
    enum chunk_state ch;
    long long remaining;
    int status;
    char reason[64];
    long long content_length; /* from the head; -1 none */
    size_t head_bytes;        /* of this response's head so far */
    int nheaders;
    unsigned chunked : 1;
    unsigned keepalive : 1;
    unsigned informational : 1;
    unsigned paused : 1;
    unsigned in_cb : 1;
    unsigned dead : 1;
    unsigned pooled : 1;
    unsigned head_req : 1;
    unsigned reused : 1; /* taken from the pool for this request */
    unsigned got_bytes : 1; /* some response byte arrived */
    unsigned gen; /* t->gen when it connected: an older one is never pooled */
};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void setup_step(struct upstream *up);
static void on_end(struct upstream *up, int timeout);

const char *upstream_strerror(enum upstream_err err)
{
    switch (err) {
    case UPSTREAM_ECONNECT:
        return "connect failed";
    case UPSTREAM_ETIMEOUT_CONNECT:
        return "connect timed out";
    case UPSTREAM_ERESET:
        return "connection closed before the response";
    case UPSTREAM_ETIMEOUT_HEAD:
        return "no response within timeouts.first_byte_s";
    case UPSTREAM_ETIMEOUT_IDLE:
        return "response stalled longer than timeouts.idle_s";
    case UPSTREAM_EBODY:
        return "connection closed in the middle of the response";
    case UPSTREAM_EPROTO:
        return "malformed response";
    case UPSTREAM_ESETUP:
        return "transport setup failed";
    case UPSTREAM_ESTALE:
        return "kept-alive connection closed by the backend";
    }
    return "error";
}

static void pool_unlink(struct upstream *up)
{
    if (!up->pooled)
        return;
    if (up->prev)
        up->prev->next = up->next;
    else
        up->t->idle = up->next;
    if (up->next)
        up->next->prev = up->prev;
    up->next = up->prev = NULL;
    up->pooled = 0;
    up->t->nidle--;
}

static void up_free(struct upstream *up)
{
    pool_unlink(up);
    event_del(&up->rev);
    event_del(&up->wev);
    event_del(&up->tev);
    evbuffer_free(up->in);
    evbuffer_free(up->out);
    up->c.tp->close(&up->c);
    close(up->c.fd);
    free(up);
}

/* The timeout of the phase we enter (0: none), counted from now. */
static void set_timeout(struct upstream *up, const struct timeval *tv)
{
    up->timeout_ms = tv ? (double)tv->tv_sec * 1000.0 + (double)tv->tv_usec / 1000.0 : 0;
    up->last_io_ms = net_now_ms();
    if (up->timeout_ms > 0 && !up->paused)
        event_add(&up->tev, tv);
    else
        event_del(&up->tev);
}

/* Free now, or when the callback we are inside of returns. */
static void up_close(struct upstream *up)
{
    up->cbs = NULL;
    if (up->in_cb)
        up->dead = 1;
    else
        up_free(up);
}

static void fail(struct upstream *up, enum upstream_err err)
{
    const struct upstream_cbs *cbs = up->cbs;
    void *arg = up->arg;
    up_close(up);
    if (cbs)
        cbs->on_error(arg, err);
}

static struct upstream *connect_new(struct event_base *base, struct upstream_target *t)
{
    struct upstream *up;
    int one = 1, fd;
    if (!t->addrlen) /* its name is not resolved (yet) */
        return NULL;
    fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    up = calloc(1, sizeof *up);
    if (!up || !(up->in = evbuffer_new()) || !(up->out = evbuffer_new())) {
        if (up && up->in) /* evbuffer_free(NULL) is not a no-op in libevent 2.1 */
            evbuffer_free(up->in);
        free(up);
        close(fd);
        return NULL;
    }
    up->t = t;
    up->gen = t->gen;
    up->c.fd = fd;
    up->c.tp = t->tp ? t->tp : &transport_plain;
    up->c.ctx = t->tp_ctx;
    up->state = UP_CONNECTING;
    event_assign(&up->rev, base, fd, EV_READ | EV_PERSIST, on_readable, up);
    event_assign(&up->wev, base, fd, EV_WRITE | EV_PERSIST, on_writable, up);
    evtimer_assign(&up->tev, base, on_timer, up);
    if (connect(fd, (struct sockaddr *)&t->addr, t->addrlen) < 0 && errno != EINPROGRESS)
        up->pending_err = errno; /* told through the timer, never from here */
    return up;
}

/* Write what B holds through the transport, as far as the socket takes it.
 * Returns 0, or -1 on an error other than EAGAIN. */
static int write_out(struct upstream *up, struct evbuffer *b)
{
    while (evbuffer_get_length(b)) {
        struct evbuffer_iovec v[16];
        int n = evbuffer_peek(b, -1, NULL, v, 16);
        ssize_t w = up->c.tp->writev(&up->c, (struct iovec *)v, n < 16 ? n : 16);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        evbuffer_drain(b, (size_t)w);
    }
    return 0;
}

struct upstream *upstream_start(struct event_base *base, struct upstream_target *t,
                                struct evbuffer *req, int head_req,
                                const struct upstream_timeouts *to,
                                const struct upstream_cbs *cbs, void *arg)
{
    struct upstream *up = t->idle;
    if (up) {
        pool_unlink(up);
        up->state = UP_WAIT_HEAD;
        up->reused = 1;
    } else if (!(up = connect_new(base, t))) {
        return NULL;
    }
    up->got_bytes = 0;
    up->head_bytes = 0;
    up->nheaders = 0;
    up->cbs = cbs;
    up->arg = arg;
    up->to = *to;
    up->keepalive = 1;
    up->paused = 0;
    up->informational = 0;
    up->head_req = !!head_req;
    if (up->state == UP_CONNECTING) {
        evbuffer_add_buffer(up->out, req);
        if (up->pending_err) {
            struct timeval now = {0, 0};
            up->timeout_ms = 0;
            event_add(&up->tev, &now);
            return up;
        }
        set_timeout(up, &to->connect);
        event_add(&up->wev, NULL);
        return up;
    }
    /* A connected socket: write the request now. A request that fits the
     * socket buffer (nearly all) then needs no write event. */
    set_timeout(up, &to->first_byte);
    if (write_out(up, req) < 0)
        evbuffer_drain(req, evbuffer_get_length(req)); /* the read will see the end */
    if (evbuffer_get_length(req)) {
        evbuffer_add_buffer(up->out, req);
        event_add(&up->wev, NULL);
    }
    return up;
}

/* "HTTP/1.x SSS reason" */
static int parse_status(struct upstream *up, const char *line, size_t n)
{
    const char *d = line + 9;
    if (n < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || d[0] < '1' ||
        d[0] > '9' || d[1] < '0' || d[1] > '9' || d[2] < '0' || d[2] > '9' ||
        (n > 12 && d[3] != ' '))
        return -1;
    if (line[7] == '0')
        up->keepalive = 0;
    up->status = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    up->content_length = -1;
    up->chunked = 0;
    up->informational = up->status < 200;
    n = n > 13 ? n - 13 : 0;
    if (n >= sizeof up->reason)
        n = sizeof up->reason - 1;
    memcpy(up->reason, line + 13, n);
    up->reason[n] = '\0';
    return 0;
}

/* "Name: value": framing headers are noted here, all go to the caller. */
static int parse_header(struct upstream *up, char *line)
{
    char *colon = strchr(line, ':'), *v, *end;
    if (!colon || colon == line)
        return -1;
    *colon = '\0';
    v = colon + 1;
    v += strspn(v, " \t");
    for (size_t n = strlen(v); n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'); n--)
        v[n - 1] = '\0';
    if (up->informational)
        return 0;
    if (strcasecmp(line, "Transfer-Encoding") == 0) {
        up->chunked = strcasestr(v, "chunked") != NULL;
    } else if (strcasecmp(line, "Content-Length") == 0) {
        long long cl;
        errno = 0;
        cl = strtoll(v, &end, 10);
        /* Not a number, out of range, or two that differ: the framing is
         * unknowable (RFC 9112 6.3), the response malformed. */
        if (*end || end == v || cl < 0 || errno == ERANGE ||
            (up->content_length >= 0 && cl != up->content_length))
            return -1;
        up->content_length = cl;
    } else if (strcasecmp(line, "Connection") == 0 && strcasestr(v, "close")) {
        up->keepalive = 0;
    }
    up->cbs->on_header(up->arg, up->status, line, v);
    return 0;
}

/* The head is complete: choose the body framing and tell the caller. */
static int finish_head(struct upstream *up)
{
    long long len = -1;
    struct timeval *idle = &up->to.idle;

    if (up->head_req || up->status == 204 || up->status == 304) {
        up->mode = BODY_NONE;
    } else if (up->chunked) {
        up->mode = BODY_CHUNKED;
        up->ch = CH_SIZE;
    } else if (up->content_length >= 0) {
        len = up->content_length;
        up->mode = len ? BODY_CL : BODY_NONE;
        up->remaining = len;
    } else {
        up->mode = BODY_EOF;
        up->keepalive = 0;
    }
    up->state = UP_BODY;
    set_timeout(up, idle);
    up->cbs->on_head(up->arg, up->status, up->reason, len);
    if (!up->dead && up->mode == BODY_NONE) {
        up->state = UP_DONE;
        up->cbs->on_done(up->arg);
    }
    return 0;
}

/* Parse head lines; returns 1 to go on, 0 for more input, -1 on error. */
static int read_head(struct upstream *up, struct evbuffer *in)
{
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    int rc = 1;
    if (!line)
        return up->head_bytes + evbuffer_get_length(in) > MAX_HEAD_BYTES ? -1 : 0;
    up->head_bytes += n + 2;
    if (up->head_bytes > MAX_HEAD_BYTES || ++up->nheaders > MAX_HEADERS) {
        free(line);
        return -1;
    }
    if (up->state == UP_WAIT_HEAD) {
        if (parse_status(up, line, n) < 0)
            rc = -1;
        else
            up->state = UP_HEADERS;
    } else if (n == 0) {
        if (up->informational)
            up->state = UP_WAIT_HEAD; /* 100 Continue and friends: skip */
        else if (finish_head(up) < 0)
            rc = -1;
    } else if (parse_header(up, line) < 0) {
        rc = -1;
    }
    free(line);
    return rc;
}

static void deliver(struct upstream *up, struct evbuffer *in, size_t n)
{
    up->cbs->on_body(up->arg, in, n);
}

static void body_done(struct upstream *up)
{
    up->state = UP_DONE;
    up->cbs->on_done(up->arg);
}

/* "1f" or "1f ;ext=v" (RFC 9112 7.1): at most 15 hex digits (< 2^60), so
 * a size that would overflow is malformed rather than LLONG_MAX bytes, and
 * anything but an extension after it is malformed too. 0 or -1. */
static int parse_chunk_size(const char *line, long long *size)
{
    const char *p = line;
    long long v = 0;
    for (; isxdigit((unsigned char)*p); p++) {
        if (p - line == 15)
            return -1;
        v = v * 16 + (*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
    }
    if (p == line)
        return -1;
    p += strspn(p, " \t");
    if (*p && *p != ';')
        return -1;
    *size = v;
    return 0;
}

/* Decode chunked framing; returns 1 to go on, 0 for more input, -1 on error. */
static int read_chunked(struct upstream *up, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in), n;
    char *line;
    switch (up->ch) {
    case CH_SIZE:
    case CH_TRAILER:
        if (!(line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)))
            return have > 4096 ? -1 : 0;
        if (up->ch == CH_TRAILER) { /* counted with the head: bounded too */
            free(line);
            up->head_bytes += n + 2;
            if (up->head_bytes > MAX_HEAD_BYTES || ++up->nheaders > MAX_HEADERS)
                return -1;
            if (n == 0)
                body_done(up);
            return 1;
        }
        if (parse_chunk_size(line, &up->remaining) < 0) {
            free(line);
            return -1;
        }
        free(line);
        up->ch = up->remaining ? CH_DATA : CH_TRAILER;
        return 1;
    case CH_DATA:
        if (!have)
            return 0;
        n = have < (size_t)up->remaining ? have : (size_t)up->remaining;
        up->remaining -= (long long)n;
        if (!up->remaining)
            up->ch = CH_DATA_CRLF;
        deliver(up, in, n);
        return 1;
    case CH_DATA_CRLF:
        if (have < 2)
            return 0;
        {
            char crlf[2];
            evbuffer_remove(in, crlf, 2);
            if (crlf[0] != '\r' || crlf[1] != '\n')
                return -1;
        }
        up->ch = CH_SIZE;
        return 1;
    }
    return -1;
}

static int read_body(struct upstream *up, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in), n;
    if (up->paused)
        return 0;
    switch (up->mode) {
    case BODY_CL:
        if (!have)
            return 0;
        n = have < (size_t)up->remaining ? have : (size_t)up->remaining;
        up->remaining -= (long long)n;
        deliver(up, in, n);
        if (!up->dead && !up->remaining)
            body_done(up);
        return 1;
    case BODY_CHUNKED:
        return read_chunked(up, in);
    case BODY_EOF:
        if (!have)
            return 0;
        deliver(up, in, have);
        return 1;
    case BODY_NONE:
        return 0;
    }
    return -1;
}

/* Consume what the input holds, as far as the state allows. Returns 1
 * when UP was freed meanwhile. */
static int process(struct upstream *up)
{
    struct evbuffer *in = up->in;
    int rc = 1, proto_err = 0;
    up->in_cb = 1;
    while (rc > 0 && !up->dead) {
        switch (up->state) {
        case UP_WAIT_HEAD:
        case UP_HEADERS:
            rc = read_head(up, in);
            break;
        case UP_BODY:
            rc = read_body(up, in);
            break;
        case UP_IDLE:
            /* Bytes nobody asked for: the connection is not reusable. */
            rc = evbuffer_get_length(in) ? -1 : 0;
            if (rc < 0)
                up->dead = 1, rc = 0;
            break;
        default:
            rc = 0;
        }
        if (rc < 0)
            proto_err = 1;
    }
    up->in_cb = 0;
    if (proto_err && !up->dead) {
        fail(up, up->state == UP_BODY ? UPSTREAM_EBODY : UPSTREAM_EPROTO);
        return 1;
    }
    if (up->dead) {
        up_free(up);
        return 1;
    }
    return 0;
}

/* The socket closed, failed or timed out (TIMEOUT) in the current state. */
static void on_end(struct upstream *up, int timeout)
{
    switch (up->state) {
    case UP_CONNECTING:
        fail(up, timeout ? UPSTREAM_ETIMEOUT_CONNECT : UPSTREAM_ECONNECT);
        break;
    case UP_SETUP: /* the handshake is part of connecting: retried elsewhere */
        if (!up->t->setup_err[0] || timeout)
            snprintf(up->t->setup_err, sizeof up->t->setup_err, "%s setup %s", up->c.tp->name,
                     timeout ? "timed out" : "closed by the backend");
        fail(up, UPSTREAM_ESETUP);
        break;
    case UP_WAIT_HEAD:
    case UP_HEADERS:
        if (timeout)
            fail(up, UPSTREAM_ETIMEOUT_HEAD);
        else
            fail(up, up->reused && !up->got_bytes ? UPSTREAM_ESTALE : UPSTREAM_ERESET);
        break;
    case UP_BODY:
        if (up->mode == BODY_EOF && !timeout) {
            up->keepalive = 0;
            up->in_cb = 1;
            body_done(up);
            up->in_cb = 0;
            if (up->dead)
                up_free(up);
            return;
        }
        fail(up, timeout ? UPSTREAM_ETIMEOUT_IDLE : UPSTREAM_EBODY);
        break;
    case UP_DONE: /* done, waiting for its owner's release or abort: that frees it */
        up->keepalive = 0;
        event_del(&up->rev); /* the end stays readable: no more wake-ups */
        event_del(&up->tev);
        break;
    default: /* idle in the pool */
        up_close(up);
    }
}

/* The transport holds bytes the socket will not announce (transport.h). */
static int has_pending(struct upstream *up)
{
    return up->c.tp->pending && up->c.tp->pending(&up->c);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    struct evbuffer_iovec v;
    ssize_t n;
    (void)what;
    (void)fd;
    if (up->state == UP_SETUP) {
        setup_step(up);
        return;
    }
    /* Once per readiness; again while the transport holds more than it
     * handed out (a TLS record read ahead), which no socket event will
     * announce. */
    do {
        if (evbuffer_reserve_space(up->in, READ_CHUNK, &v, 1) < 1)
            return;
        n = up->c.tp->read(&up->c, v.iov_base, v.iov_len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            if (!process(up)) /* anything still buffered, then the end */
                on_end(up, 0);
            return;
        }
        v.iov_len = (size_t)n;
        evbuffer_commit_space(up->in, &v, 1);
        up->got_bytes = 1;
        /* Only body bytes restart the clock: first_byte_s is a deadline for
         * the whole head, which a backend trickling header lines cannot
         * stretch. */
        if (up->state == UP_BODY)
            up->last_io_ms = net_now_ms();
        if (process(up))
            return;
    } while (!up->paused && has_pending(up));
}

/* The transport's setup (transport.h), driven by readiness until done:
 * then the request goes out as on a plain connection. */
static void setup_step(struct upstream *up)
{
    int rc = up->c.tp->setup(&up->c, up->t->setup_err, sizeof up->t->setup_err);
    if (rc < 0) {
        fail(up, UPSTREAM_ESETUP);
        return;
    }
    if (rc == TRANSPORT_WANT_READ) {
        event_del(&up->wev);
        event_add(&up->rev, NULL);
        return;
    }
    if (rc == TRANSPORT_WANT_WRITE) {
        event_add(&up->wev, NULL);
        return;
    }
    up->state = UP_WAIT_HEAD;
    set_timeout(up, &up->to.first_byte);
    event_add(&up->rev, NULL);
    if (write_out(up, up->out) < 0) { /* the request, waiting in up->out */
        on_end(up, 0);
        return;
    }
    if (evbuffer_get_length(up->out))
        event_add(&up->wev, NULL);
    else
        event_del(&up->wev);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    (void)what;
    if (up->state == UP_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            on_end(up, 0);
            return;
        }
        up->state = UP_SETUP; /* the connect's deadline covers the setup too */
    }
    if (up->state == UP_SETUP) {
        setup_step(up);
        return;
    }
    if (write_out(up, up->out) < 0) {
        on_end(up, 0);
        return;
    }
    if (evbuffer_get_length(up->out) == 0)
        event_del(&up->wev);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    double left;
    (void)fd;
    (void)what;
    if (up->pending_err) {
        on_end(up, 0);
        return;
    }
    left = up->timeout_ms - (net_now_ms() - up->last_io_ms);
    if (left > 1) { /* there was activity: wait for the rest */
        struct timeval tv = net_timeval(left / 1000.0);
        event_add(&up->tev, &tv);
        return;
    }
    on_end(up, 1);
}

void upstream_pause(struct upstream *up, int paused)
{
    if (up->paused == (unsigned)!!paused)
        return;
    up->paused = !!paused;
    if (paused) {
        event_del(&up->rev);
        event_del(&up->tev);
        return;
    }
    event_add(&up->rev, NULL);
    if (has_pending(up)) /* held while paused: the socket may have nothing more */
        event_active(&up->rev, EV_READ, 1);
    if (up->timeout_ms > 0) { /* a new idle period starts now */
        struct timeval tv = net_timeval(up->timeout_ms / 1000.0);
        up->last_io_ms = net_now_ms();
        event_add(&up->tev, &tv);
    }
    if (!up->in_cb)
        (void)process(up);
}

void upstream_release(struct upstream *up)
{
    struct upstream_target *t = up->t;
    if (!up->keepalive || up->state != UP_DONE || evbuffer_get_length(up->in) ||
        evbuffer_get_length(up->out) || t->closing || up->gen != t->gen) {
        up_close(up);
        return;
    }
    up->cbs = NULL;
    up->arg = NULL;
    up->state = UP_IDLE;
    if (up->paused) {
        up->paused = 0;
        event_add(&up->rev, NULL);
    }
    /* Idle: no timeout, but reading stays on so a close is noticed. */
    set_timeout(up, NULL);
    up->next = t->idle;
    up->prev = NULL;
    if (t->idle)
        t->idle->prev = up;
    t->idle = up;
    t->nidle++;
    up->pooled = 1;
}

void upstream_abort(struct upstream *up)
{
    if (up)
        up_close(up);
}

void upstream_pool_drain(struct upstream_target *t)
{
    t->gen++; /* those in use now close when released, not pooled */
    while (t->idle)
        up_free(t->idle);
}
