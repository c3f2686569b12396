/* upload.c - see upload.h.
 *
 * One socket, three events (readable, writable, a timer), two buffers: OUT
 * holds what waits to be written (the head, then body bytes shared with
 * the caller's), IN what the answer has brought so far (bounded by
 * UPLOAD_ANSWER_MAX). The answer is parsed whole from IN once it is there:
 * a head, then a body by Content-Length, chunked, or up to the close. */
#include "upload.h"

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

#define READ_CHUNK 4096

enum up_state { U_CONNECTING, U_SETUP, U_SENDING, U_WAITING };

struct upload {
    struct tconn c;
    struct upstream_target *t;
    struct event rev, wev, tev;
    struct evbuffer *out, *in, *body;
    const struct upload_cbs *cbs;
    void *arg;
    struct upstream_timeouts to;
    enum up_state st;
    double last_ms;       /* the last progress of the current phase */
    int status;
    long long cl;         /* the answer's Content-Length; -1 none */
    unsigned chunked : 1;  /* the body is sent chunked */
    unsigned finished : 1; /* upload_finish() called */
    unsigned wclosed : 1;  /* writing failed: only the answer is awaited */
    unsigned head_done : 1, answer_chunked : 1, answer_eof : 1;
    unsigned above_room : 1; /* the queue was above UPLOAD_ROOM */
    unsigned connect_err : 1; /* connect() failed at once: told from the timer */
};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);

void upload_free(struct upload *u)
{
    if (!u)
        return;
    event_del(&u->rev);
    event_del(&u->wev);
    event_del(&u->tev);
    evbuffer_free(u->out);
    evbuffer_free(u->in);
    evbuffer_free(u->body);
    u->c.tp->close(&u->c);
    close(u->c.fd);
    free(u);
}

static void fail(struct upload *u, enum upstream_err err)
{
    const struct upload_cbs *cbs = u->cbs;
    void *arg = u->arg;
    upload_free(u);
    cbs->on_error(arg, err);
}

/* ---- time ---- */

static double ms_of(const struct timeval *tv)
{
    return (double)tv->tv_sec * 1000.0 + (double)tv->tv_usec / 1000.0;
}

/* The current phase's timeout in ms (0: none) and the error it ends in. */
static double phase(const struct upload *u, enum upstream_err *err)
{
    if (u->st == U_CONNECTING || u->st == U_SETUP) {
        *err = UPSTREAM_ETIMEOUT_CONNECT;
        return ms_of(&u->to.connect);
    }
    *err = UPSTREAM_ETIMEOUT_IDLE;
    if (u->head_done || (u->st == U_SENDING && !u->wclosed && evbuffer_get_length(u->out)))
        return ms_of(&u->to.idle); /* the answer's body, or bytes the backend does not take */
    *err = UPSTREAM_ETIMEOUT_HEAD;
    if (u->st == U_WAITING || u->wclosed)
        return ms_of(&u->to.first_byte);
    return 0; /* waiting for our own input: no clock */
}

/* Progress, or a new phase (NEW_PHASE): its clock starts now. The timer
 * is not moved on every write: it checks the last progress when it fires. */
static void progress(struct upload *u, int new_phase)
{
    enum upstream_err err;
    double ms = phase(u, &err);
    u->last_ms = net_now_ms();
    if (ms > 0 && (new_phase || !event_pending(&u->tev, EV_TIMEOUT, NULL))) {
        struct timeval tv = net_timeval(ms / 1000.0);
        event_add(&u->tev, &tv);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upload *u = arg;
    enum upstream_err err;
    double limit = phase(u, &err), left = limit - (net_now_ms() - u->last_ms);
    (void)fd, (void)what;
    if (u->connect_err) {
        fail(u, UPSTREAM_ECONNECT);
        return;
    }
    if (limit <= 0)
        return; /* no clock in this phase: progress() arms it again */
    if (left > 1) {
        struct timeval tv = net_timeval(left / 1000.0);
        event_add(&u->tev, &tv);
        return;
    }
    fail(u, err);
}

/* ---- the answer ---- */

/* "HTTP/1.x SSS ...": the status, or -1. */
static int status_of(const char *line, size_t n)
{
    if (n < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || line[9] < '1' ||
        line[9] > '9' || line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9')
        return -1;
    return (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
}

/* The head in IN: 1 read, 0 not whole yet, -1 malformed. 1xx heads are
 * skipped. */
static int read_head(struct upload *u)
{
    for (;;) {
        struct evbuffer_ptr end = evbuffer_search(u->in, "\r\n\r\n", 4, NULL);
        char *line;
        size_t n;
        int st;
        if (end.pos < 0)
            return 0;
        if (!(line = evbuffer_readln(u->in, &n, EVBUFFER_EOL_CRLF)))
            return -1;
        st = status_of(line, n);
        free(line);
        if (st < 0)
            return -1;
        u->status = st;
        u->cl = -1;
        u->answer_chunked = 0;
        while ((line = evbuffer_readln(u->in, &n, EVBUFFER_EOL_CRLF)) && n) {
            char *v = strchr(line, ':'), *e;
            if (v) {
                *v++ = '\0';
                v += strspn(v, " \t");
                if (!strcasecmp(line, "Content-Length")) {
                    long long cl = strtoll(v, &e, 10);
                    if (e == v || cl < 0 || (u->cl >= 0 && cl != u->cl)) {
                        free(line);
                        return -1;
                    }
                    u->cl = cl;
                } else if (!strcasecmp(line, "Transfer-Encoding")) {
                    u->answer_chunked = strcasestr(v, "chunked") != NULL;
                }
            }
            free(line);
        }
        free(line);
        if (st >= 200)
            break;
    }
    u->head_done = 1;
    if (u->status == 204 || u->status == 304)
        u->cl = 0, u->answer_chunked = 0;
    u->answer_eof = !u->answer_chunked && u->cl < 0;
    return 1;
}

/* A chunked body from IN into BODY: 1 whole, 0 not yet, -1 malformed. What
 * is decoded is moved, so it is never decoded twice. */
static int read_chunked(struct upload *u)
{
    for (;;) {
        struct evbuffer_ptr eol = evbuffer_search_eol(u->in, NULL, NULL, EVBUFFER_EOL_CRLF);
        char line[32], *e;
        size_t n;
        long long size;
        if (eol.pos < 0)
            return 0;
        n = (size_t)eol.pos;
        if (n >= sizeof line)
            return -1;
        evbuffer_copyout(u->in, line, n);
        line[n] = '\0';
        size = strtoll(line, &e, 16);
        if (e == line || size < 0 || size > UPLOAD_ANSWER_MAX)
            return -1;
        /* the size line, the data and its CRLF must all be here */
        if (evbuffer_get_length(u->in) < n + 2 + (size_t)size + 2)
            return 0;
        if (size == 0) { /* the last chunk; trailers are not expected */
            evbuffer_drain(u->in, evbuffer_get_length(u->in));
            return 1;
        }
        evbuffer_drain(u->in, n + 2);
        evbuffer_remove_buffer(u->in, u->body, (size_t)size);
        evbuffer_drain(u->in, 2);
    }
}

/* The answer so far: 1 whole, 0 not yet, -1 malformed. AT_EOF: the
 * backend closed. */
static int parse(struct upload *u, int at_eof)
{
    int rc;
    if (!u->head_done) {
        if ((rc = read_head(u)) <= 0)
            return rc;
        progress(u, 1); /* the answer's body now: idle_s */
    }
    if (u->answer_chunked)
        return read_chunked(u);
    if (u->cl >= 0) {
        if ((long long)evbuffer_get_length(u->in) < u->cl)
            return u->cl > UPLOAD_ANSWER_MAX ? -1 : 0;
        evbuffer_remove_buffer(u->in, u->body, (size_t)u->cl);
        return 1;
    }
    if (at_eof) {
        evbuffer_add_buffer(u->body, u->in);
        return 1;
    }
    return 0;
}

static void answered(struct upload *u)
{
    event_del(&u->rev);
    event_del(&u->wev);
    event_del(&u->tev);
    evbuffer_drain(u->out, evbuffer_get_length(u->out));
    u->cbs->on_answer(u->arg, u->status, u->body); /* may free U: the last word */
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct upload *u = arg;
    struct evbuffer_iovec v;
    ssize_t n;
    int rc;
    (void)fd, (void)what;
    if (u->st == U_SETUP) {
        on_writable(fd, EV_WRITE, u); /* the setup wants to read */
        return;
    }
    if (evbuffer_reserve_space(u->in, READ_CHUNK, &v, 1) < 1)
        return;
    n = u->c.tp->read(&u->c, v.iov_base, v.iov_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        v.iov_len = (size_t)n;
        evbuffer_commit_space(u->in, &v, 1);
        if (evbuffer_get_length(u->in) + evbuffer_get_length(u->body) > UPLOAD_ANSWER_MAX) {
            fail(u, UPSTREAM_EPROTO);
            return;
        }
        if (u->head_done)
            progress(u, 0);
    }
    rc = parse(u, n <= 0);
    if (rc > 0)
        answered(u);
    else if (rc < 0)
        fail(u, UPSTREAM_EPROTO);
    else if (n <= 0)
        fail(u, u->head_done ? UPSTREAM_EBODY : UPSTREAM_ERESET);
    else if (!u->head_done && evbuffer_get_length(u->in) > UPLOAD_ANSWER_MAX)
        fail(u, UPSTREAM_EPROTO);
}

/* ---- sending ---- */

/* Write what OUT holds, as far as the socket takes it. A failed write
 * ends writing, not the upload: the answer may be on its way (an early
 * 200, then the backend closed). Returns 1 when the caller may be told of
 * room. */
static int write_out(struct upload *u)
{
    size_t before = evbuffer_get_length(u->out);
    while (evbuffer_get_length(u->out)) {
        struct evbuffer_iovec v[16];
        int n = evbuffer_peek(u->out, -1, NULL, v, 16);
        ssize_t w = u->c.tp->writev(&u->c, (struct iovec *)v, n < 16 ? n : 16);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (w < 0) {
            u->wclosed = 1;
            evbuffer_drain(u->out, evbuffer_get_length(u->out));
            progress(u, 1); /* only the answer now: first_byte_s */
            break;
        }
        evbuffer_drain(u->out, (size_t)w);
    }
    if (evbuffer_get_length(u->out) < before && !u->wclosed)
        progress(u, 0);
    if (!evbuffer_get_length(u->out)) {
        event_del(&u->wev);
        if (u->finished && u->st == U_SENDING) {
            u->st = U_WAITING;
            progress(u, 1);
        }
    } else {
        event_add(&u->wev, NULL);
    }
    if (evbuffer_get_length(u->out) > UPLOAD_ROOM) {
        u->above_room = 1;
        return 0;
    }
    if (u->above_room || !evbuffer_get_length(u->out)) {
        u->above_room = 0;
        return before > 0 && !u->wclosed;
    }
    return 0;
}

/* Connected (or the setup wants the socket): the transport's setup, then
 * the request. */
static void setup_step(struct upload *u)
{
    char err[160];
    int rc = u->c.tp->setup(&u->c, err, sizeof err);
    if (rc < 0) {
        snprintf(u->t->setup_err, sizeof u->t->setup_err, "%s", err);
        fail(u, UPSTREAM_ESETUP);
        return;
    }
    if (rc == TRANSPORT_WANT_READ) {
        event_del(&u->wev);
        event_add(&u->rev, NULL);
        return;
    }
    if (rc == TRANSPORT_WANT_WRITE) {
        event_add(&u->wev, NULL);
        return;
    }
    u->st = u->finished && !evbuffer_get_length(u->out) ? U_WAITING : U_SENDING;
    event_add(&u->rev, NULL); /* the answer may come at any time */
    progress(u, 1);
    if (write_out(u) && u->cbs->on_room)
        u->cbs->on_room(u->arg);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct upload *u = arg;
    (void)what;
    if (u->st == U_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            fail(u, UPSTREAM_ECONNECT);
            return;
        }
        u->st = U_SETUP;
    }
    if (u->st == U_SETUP) {
        setup_step(u);
        return;
    }
    if (write_out(u) && u->cbs->on_room)
        u->cbs->on_room(u->arg); /* may free U: the last word */
}

struct upload *upload_start(struct event_base *base, struct upstream_target *t,
                            struct evbuffer *head, int chunked,
                            const struct upstream_timeouts *to, const struct upload_cbs *cbs,
                            void *arg)
{
    struct upload *u;
    int one = 1, fd;
    if (!t->addrlen)
        return NULL;
    fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!(u = calloc(1, sizeof *u)) || !(u->out = evbuffer_new()) || !(u->in = evbuffer_new()) ||
        !(u->body = evbuffer_new())) {
        if (u) {
            evbuffer_free(u->out);
            evbuffer_free(u->in);
            free(u);
        }
        close(fd);
        return NULL;
    }
    u->t = t;
    u->c.fd = fd;
    u->c.tp = t->tp ? t->tp : &transport_plain;
    u->c.ctx = t->tp_ctx;
    u->cbs = cbs;
    u->arg = arg;
    u->to = *to;
    u->chunked = !!chunked;
    u->st = U_CONNECTING;
    evbuffer_add_buffer(u->out, head);
    event_assign(&u->rev, base, fd, EV_READ | EV_PERSIST, on_readable, u);
    event_assign(&u->wev, base, fd, EV_WRITE | EV_PERSIST, on_writable, u);
    evtimer_assign(&u->tev, base, on_timer, u);
    if (connect(fd, (struct sockaddr *)&t->addr, t->addrlen) < 0 && errno != EINPROGRESS) {
        struct timeval now = {0, 0};
        u->connect_err = 1; /* told from the loop, never from here */
        event_add(&u->tev, &now);
        return u;
    }
    event_add(&u->wev, NULL);
    progress(u, 1);
    return u;
}

void upload_send(struct upload *u, struct evbuffer *data)
{
    size_t n = evbuffer_get_length(data), was = evbuffer_get_length(u->out);
    if (!n || u->wclosed || u->finished)
        return;
    if (u->chunked)
        evbuffer_add_printf(u->out, "%zx\r\n", n);
    if (evbuffer_add_buffer_reference(u->out, data) < 0) /* shared: no copy */
        evbuffer_add(u->out, evbuffer_pullup(data, -1), n);
    if (u->chunked)
        evbuffer_add(u->out, "\r\n", 2);
    if (u->st == U_SENDING) { /* at once where the socket takes it: no callback from here */
        if (!was) /* it waited for its input: the idle clock starts now */
            progress(u, 0);
        (void)write_out(u);
    }
}

size_t upload_queued(const struct upload *u)
{
    return evbuffer_get_length(u->out);
}

void upload_finish(struct upload *u)
{
    if (u->finished)
        return;
    u->finished = 1;
    if (u->chunked && !u->wclosed)
        evbuffer_add(u->out, "0\r\n\r\n", 5);
    if (u->st == U_SENDING)
        (void)write_out(u);
}
