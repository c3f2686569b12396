/* conns.c - see conns.h.
 *
 * The listener is ours (net_listen) because evhttp's would listen with a
 * backlog of 128 and without TCP_NODELAY, and Nagle plus delayed ACKs add
 * ~40 ms to every streamed reply.
 *
 * The HTTPS listener (tls.listen) is a second evhttp server with the same
 * request callback, limits and connection records: evhttp asks for each
 * connection's bufferevent without saying which listener accepted it, so
 * each listener has its own server, and the HTTPS one makes
 * bufferevent_openssl ones. The certificate is read into a new SSL_CTX at
 * every reload (SIGHUP); connections open keep the context they were
 * accepted with (each SSL holds a reference), new ones get the new. */
#include "conns.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "intake.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "transport_tls.h"

/* The HTTPS listener of a proxy (px->https). */
struct conns_tls {
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct ssl_ctx_st *ctx; /* for connections accepted from now on */
    char *listen;  /* tls.listen as bound: a reload cannot move it */
    int local;     /* bound to loopback (conns_local_only) */
};

static void http_settings(struct proxy *px, struct evhttp *http)
{
    evhttp_set_max_body_size(http, (ev_ssize_t)px->cfg->max_body_mb * 1024 * 1024);
    evhttp_set_timeout(http, (int)px->cfg->idle_s);
}

/* The listener's certificate is in use from now on: say until when, and
 * warn in its last two weeks (and after). */
static void tls_note_expiry(const char *file, double not_after)
{
    time_t tt = (time_t)not_after;
    double days = (not_after - (double)time(NULL)) / 86400.0;
    struct tm tm;
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
    if (days < 14)
        log_warn("tls: certificate %s %s %s: renew it (then SIGHUP)", file,
                 days < 0 ? "EXPIRED on" : "expires on", when);
    else
        log_info("tls: certificate %s in use for new connections (expires %s)", file, when);
}

/* The certificate files again (a reload): new connections get them, open
 * ones keep theirs. A failure keeps the old certificate. */
static void tls_reload(struct proxy *px)
{
    struct conns_tls *t = px->https;
    const struct px_config *c = px->cfg;
    struct ssl_ctx_st *ctx;
    double not_after = 0;
    char err[700];
    if (!c->tls_listen) {
        log_warn("reload: tls removed from the config; still serving HTTPS on %s until a "
                 "restart", t->listen);
        return;
    }
    if (strcmp(c->tls_listen, t->listen) != 0)
        log_warn("reload: tls.listen %s -> %s needs a restart; still on %s", t->listen,
                 c->tls_listen, t->listen);
    if (!(ctx = tls_server_ctx_new(c->tls_cert_file, c->tls_key_file, &not_after, err,
                                   sizeof err))) {
        log_error("reload: tls: %s; new HTTPS connections keep the old certificate", err);
        return;
    }
    tls_server_ctx_free(t->ctx); /* connections open hold their own reference */
    t->ctx = ctx;
    tls_note_expiry(c->tls_cert_file, not_after);
}

void conns_settings(struct proxy *px)
{
    if (!px->http)
        return;
    http_settings(px, px->http);
    if (px->https) {
        http_settings(px, px->https->http);
        tls_reload(px);
    } else if (px->cfg->tls_listen) {
        log_warn("reload: tls.listen %s needs a restart", px->cfg->tls_listen);
    }
}

/* Client connections. Each connection's bufferevent is made here (evhttp
 * asks for it) with a reference and a record of ours, for two limits:
 *
 * limits.max_connections, done as HAProxy's maxconn: at the limit the
 * listener stops accepting and new connections wait in the kernel's
 * backlog. evhttp 2.1 has no hook for a connection's end; evhttp's
 * bufferevent_free() clears the callbacks, and the sweep below (every
 * SWEEP_MS) sees that, counts the connection out and drops our reference.
 * The bufferevent owns the fd (BEV_OPT_CLOSE_ON_FREE): evhttp then only
 * shuts down the sending side (the client sees the close at once) and the
 * fd is closed when our reference goes. Had evhttp closed it, the
 * bufferevent's events would still be registered for an fd number the next
 * connection may get. The count, and the fd, can outlive a close by one
 * sweep period.
 *
 * timeouts.request_s, done as HAProxy's "timeout http-request": a request
 * must arrive whole (head and body) within request_s of its first byte,
 * plus a second per MiB of body, or the connection is closed. evhttp's own
 * timeout restarts with every byte, so a client sending a byte a second
 * (slowloris) would hold its connection, and with enough of them every
 * connection slot, for ever. A callback on the input buffer notes the first
 * byte of each request and counts its bytes; on_request() marks the request
 * handed over, its completion (on_request_done) starts the watch again. A
 * connection with nothing sent is idle keep-alive, evhttp's idle_s. */
#define SWEEP_MS 100

/* A lingering close, as Go's server and nginx's lingering_close do it:
 * when a reply went out before its request's body had all come (a blob
 * every backend had already: 200 at once), evhttp writes the reply, shuts
 * down the sending side (the client reads the reply and then the end) and
 * frees the connection. Closing the socket then, with the client's bytes
 * still unread, would send a reset, and a client still sending meets it
 * mid-send instead of reading its answer. So the sweep that would close it
 * first reads and drops what the client still sends, until the client
 * ends, LINGER_MS have passed or LINGER_BYTES have come, then closes. */
#define LINGER_MS 500
#define LINGER_BYTES (64 * 1024 * 1024)
#define LINGER_READ (64 * 1024)

struct conn {
    struct proxy *px;
    struct bufferevent *bev; /* a reference of ours */
    double head_start;       /* the first byte of the request being read; 0 none */
    size_t head_bytes;       /* its bytes so far */
    int fd;                  /* -1 until evhttp has set it */
    unsigned in_request : 1; /* handed to on_request, its reply not yet done */
    unsigned linger : 1;     /* its last reply left the body unread: linger at the close */
    unsigned lingered : 1;   /* the lingering is over: close */
    unsigned local : 1;      /* accepted by a loopback listener (conns_local_only) */
    struct event *linger_ev; /* reading what the client still sends */
    double linger_start;
    size_t linger_bytes;
    struct intake *intake;   /* bodies read as they arrive (intake.h); NULL until used */
    struct event watch;      /* the read watch (above), on once the fd is known */
    unsigned watching : 1;   /* WATCH is added; off once fd >= 0: stepped aside */
    unsigned fresh : 1;      /* the bufferevent read bytes since WATCH last fired */
};

/* Both listeners stop accepting (ON 0) or go on (ON 1): limits.max_connections. */
static void accepting(struct proxy *px, int on)
{
    struct evhttp_bound_socket *b[2] = {px->bound, px->https ? px->https->bound : NULL};
    for (int i = 0; i < 2; i++) {
        struct evconnlistener *l = b[i] ? evhttp_bound_socket_get_listener(b[i]) : NULL;
        if (l && on)
            evconnlistener_enable(l);
        else if (l)
            evconnlistener_disable(l);
    }
    px->accept_paused = !on;
}

/* The read watch: evhttp turns a connection's reading off when a request
 * has come and on again when its reply is done, and each turn removes the
 * socket from epoll or adds it back: two epoll_ctl calls a request, of the
 * seven a keep-alive request cost. So each connection has an event of its
 * own on the socket's readiness to read, which keeps the socket in epoll
 * (libevent calls epoll_ctl only when the count of an fd's read events
 * goes from 0 to 1 or back) while evhttp turns its own on and off. It reads
 * nothing: when it fires while the bufferevent is not reading (bytes or an
 * end during a request), what made the socket readable stays unread and
 * would wake the loop again and again, so it steps aside (the socket then
 * leaves epoll, as before) until the reply is done. The bytes the
 * bufferevent has just read (FRESH) made the socket readable too, and the
 * watch may fire after that read turned reading off: that once it stays. */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (event_pending(&c->bev->ev_read, EV_READ, NULL))
        return;
    if (c->fresh) {
        c->fresh = 0;
        return;
    }
    event_del(&c->watch);
    c->watching = 0;
}

static void watch_start(struct conn *c)
{
    if (event_add(&c->watch, NULL) == 0)
        c->watching = 1;
}

/* Map C's fd to it, once evhttp has given the bufferevent its fd. */
static void conn_map_fd(struct proxy *px, struct conn *c)
{
    int fd = (int)bufferevent_getfd(c->bev);
    if (c->fd >= 0 || fd < 0)
        return;
    if (fd >= px->nconn_fd) {
        int n = fd + 1 > 2 * px->nconn_fd ? fd + 1 : 2 * px->nconn_fd;
        struct conn **m = realloc(px->conn_fd, (size_t)n * sizeof *m);
        if (!m)
            return;
        memset(m + px->nconn_fd, 0, (size_t)(n - px->nconn_fd) * sizeof *m);
        px->conn_fd = m;
        px->nconn_fd = n;
    }
    px->conn_fd[fd] = c;
    c->fd = fd;
    event_assign(&c->watch, px->base, fd, EV_READ | EV_PERSIST, on_watch, c);
    watch_start(c);
}

static struct conn *conn_of(struct proxy *px, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    int fd = evcon ? (int)bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)) : -1;
    return fd >= 0 && fd < px->nconn_fd ? px->conn_fd[fd] : NULL;
}

static void on_conn_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    (void)buf;
    if (c->fd < 0)
        conn_map_fd(c->px, c); /* bytes came: evhttp has set the fd */
    c->fresh |= info->n_added != 0;
    if (info->n_added)
        intake_input(&c->intake, c->bev, (size_t)c->px->cfg->max_body_mb << 20,
                     c->px->cfg->idle_s, c->px->gate.refused ? &c->px->gate : NULL);
    if (!info->n_added || c->in_request)
        return;
    if (!c->head_start)
        c->head_start = net_now_ms();
    c->head_bytes += info->n_added;
}

static void on_request_done(struct evhttp_request *req, void *arg)
{
    struct conn *c = arg;
    size_t left = evbuffer_get_length(bufferevent_get_input(c->bev));
    (void)req;
    c->linger = intake_request_done(c->intake) == 1;
    c->in_request = 0;
    tls_server_kick(c->bev); /* evhttp reads on once we return */
    if (c->fd >= 0 && !c->watching) /* stepped aside during the request */
        watch_start(c);
    c->head_start = left ? net_now_ms() : 0; /* a pipelined request waits already */
    c->head_bytes = left;
}

/* REQ has arrived whole: its connection's request deadline stops. */
void conns_request_arrived(struct proxy *px, struct evhttp_request *req)
{
    struct conn *c = conn_of(px, req);
    if (!c)
        return;
    c->in_request = 1;
    c->head_start = 0;
    c->head_bytes = 0;
    evhttp_request_set_on_complete_cb(req, on_request_done, c);
}

struct bodysrc *conns_body(struct proxy *px, struct evhttp_request *req)
{
    struct conn *c = conn_of(px, req);
    return c ? intake_body(c->intake, req) : NULL;
}

enum intake_verdict conns_verdict(struct proxy *px, struct evhttp_request *req, int *status,
                                  const char **why)
{
    struct conn *c = conn_of(px, req);
    return c ? intake_verdict(c->intake, status, why) : INTAKE_SERVE;
}

int conns_local_only(struct proxy *px, struct evhttp_request *req)
{
    struct conn *c = conn_of(px, req);
    if (c)
        return c->local;
    return px->listen_local || (px->https && px->https->local); /* untracked: the safe side */
}

static void conn_release(struct proxy *px, struct conn *c)
{
    if (c->watching)
        event_del(&c->watch); /* before the fd closes */
    if (c->linger_ev)
        event_free(c->linger_ev);
    if (c->fd >= 0 && c->fd < px->nconn_fd && px->conn_fd[c->fd] == c)
        px->conn_fd[c->fd] = NULL;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_decref(c->bev);
    intake_free(c->intake);
    free(c);
}

static int conn_late(const struct proxy *px, const struct conn *c, double now)
{
    double allowed = px->cfg->request_s * 1000.0 + (double)c->head_bytes / 1048.576;
    return !c->in_request && c->head_start && now - c->head_start > allowed;
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    static char drop[LINGER_READ];
    struct conn *c = arg;
    ssize_t n = 1;
    int reads = 0; /* at most 1 MiB a wake-up: the loop serves the others between */
    while (!(what & EV_TIMEOUT) && c->linger_bytes < LINGER_BYTES && reads++ < 16 &&
           (n = read(fd, drop, sizeof drop)) > 0)
        c->linger_bytes += (size_t)n;
    if ((n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) && !(what & EV_TIMEOUT) &&
        c->linger_bytes < LINGER_BYTES && net_now_ms() - c->linger_start < LINGER_MS)
        return; /* more may come */
    event_del(c->linger_ev); /* the end, an error, the time or the bound: the sweep closes */
    c->lingered = 1;
}

/* Evhttp has freed C's connection, its last reply sent before the body
 * had all come: read what still comes (on_linger). 0, or -1 to close now. */
static int linger_start(struct proxy *px, struct conn *c)
{
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    int fd = (int)bufferevent_getfd(c->bev);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (fd < 0 || !(c->linger_ev = event_new(px->base, fd, EV_READ | EV_PERSIST, on_linger, c)))
        return -1;
    c->linger_start = net_now_ms();
    event_add(c->linger_ev, &tv);
    return 0;
}

static void sweep_conns(struct proxy *px)
{
    double now = net_now_ms();
    int kept = 0, late = 0;
    for (int i = 0; i < px->nconns; i++) {
        struct conn *c = px->conns[i];
        bufferevent_event_cb errcb = NULL;
        void *evcon = NULL;
        bufferevent_getcb(c->bev, NULL, NULL, &errcb, &evcon);
        if (errcb && conn_late(px, c, now)) {
            evhttp_connection_free(evcon); /* clears the callbacks: released below */
            errcb = NULL;
            late++;
        }
        if (errcb || (c->linger && !c->lingered && (c->linger_ev || linger_start(px, c) == 0)))
            px->conns[kept++] = c; /* in use, or lingering before the close */
        else /* evhttp freed it: ours is the last reference */
            conn_release(px, c);
    }
    px->nconns = kept;
    if (late)
        log_warn("closed %d connections whose request did not arrive within "
                 "timeouts.request_s (%gs)", late, px->cfg->request_s);
    if (px->accept_paused && px->nconns < px->cfg->max_connections)
        accepting(px, 1);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sweep_conns(arg);
}

/* Count BEV, a new connection's, in (see struct conn). */
static struct bufferevent *track(struct proxy *px, struct bufferevent *bev, int local)
{
    struct conn *c;
    if (px->nconns == px->conns_cap) {
        int cap = px->conns_cap ? 2 * px->conns_cap : 1024;
        struct conn **n = realloc(px->conns, (size_t)cap * sizeof *n);
        if (!n)
            return bev; /* untracked: only the count and the deadline suffer */
        px->conns = n;
        px->conns_cap = cap;
    }
    if (!(c = calloc(1, sizeof *c)))
        return bev;
    c->px = px;
    c->bev = bev;
    c->fd = -1;
    c->local = local != 0;
    bufferevent_incref(bev);
    evbuffer_add_cb(bufferevent_get_input(bev), on_conn_input, c);
    px->conns[px->nconns++] = c;
    if (px->nconns >= px->cfg->max_connections && !px->accept_paused) {
        accepting(px, 0);
        log_warn("limits.max_connections (%d) reached: new connections wait",
                 px->cfg->max_connections);
    }
    return bev;
}

/* evhttp asks for the bufferevent of a connection it just accepted. Its
 * callbacks and fd are set only after we return, so the sweep must not see
 * it before that: sweep first, then add it. */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    struct proxy *px = arg;
    struct bufferevent *bev;
    if (px->nconns + 1 >= px->cfg->max_connections)
        sweep_conns(px);
    bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    return bev ? track(px, bev, px->listen_local) : NULL;
}

/* The same for the HTTPS listener: the handshake runs in the bufferevent
 * before evhttp reads a byte. */
static struct bufferevent *on_new_tls_connection(struct event_base *base, void *arg)
{
    struct proxy *px = arg;
    struct bufferevent *bev;
    if (px->nconns + 1 >= px->cfg->max_connections)
        sweep_conns(px);
    bev = tls_server_bufferevent(base, px->https->ctx);
    return bev ? track(px, bev, px->https->local) : NULL;
}

/* An evhttp server as both listeners have it: the same methods, limits,
 * request callback, and connections made by BEVCB. */
static struct evhttp *http_new(struct proxy *px,
                               void (*on_request)(struct evhttp_request *, void *),
                               struct bufferevent *(*bevcb)(struct event_base *, void *))
{
    struct evhttp *http = evhttp_new(px->base);
    if (!http)
        return NULL;
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(http, 64 * 1024);
    /* Read (and drop) an oversized body before answering 413, so that the
     * answer is not lost to a reset of a socket closed with unread data. */
    evhttp_set_flags(http, EVHTTP_SERVER_LINGERING_CLOSE);
    http_settings(px, http); /* the body limit and the keep-alive timeout */
    evhttp_set_default_content_type(http, "application/json; charset=utf-8");
    evhttp_set_gencb(http, on_request, px);
    evhttp_set_bevcb(http, bevcb, px);
    return http;
}

/* Listen on HOST:PORT for HTTP; "listening on" names the port (WHAT: ""
 * or " (https)"), *LOCAL says whether the address is loopback. Returns the
 * bound socket, or NULL after logging why. */
static struct evhttp_bound_socket *bind_http(struct evhttp *http, const char *host, int port,
                                             const char *what, int *local)
{
    struct evhttp_bound_socket *b;
    char err[256];
    int fd = net_listen(host, port, 4096, err, sizeof err);
    if (fd < 0) {
        log_error("%s", err);
        return NULL;
    }
    *local = net_fd_loopback(fd);
    if (!(b = evhttp_accept_socket_with_handle(http, fd))) {
        log_error("cannot serve on %s:%d", host, port);
        return NULL;
    }
    log_info("listening on %s%s%s:%d%s", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", net_bound_port(fd), what);
    return b;
}

/* tls.listen: the HTTPS listener beside the plain one. */
static int start_tls(struct proxy *px, void (*on_request)(struct evhttp_request *, void *))
{
    const struct px_config *c = px->cfg;
    struct conns_tls *t = calloc(1, sizeof *t);
    double not_after = 0;
    char err[700];
    if (!t)
        return -1;
    px->https = t;
    if (!(t->listen = strdup(c->tls_listen)) ||
        !(t->http = http_new(px, on_request, on_new_tls_connection)))
        return -1;
    if (!(t->ctx = tls_server_ctx_new(c->tls_cert_file, c->tls_key_file, &not_after, err,
                                      sizeof err))) {
        log_error("tls: %s", err);
        return -1;
    }
    t->bound = bind_http(t->http, c->tls_listen_host, c->tls_listen_port, " (https)", &t->local);
    if (t->bound)
        tls_note_expiry(c->tls_cert_file, not_after);
    return t->bound ? 0 : -1;
}

int conns_start(struct proxy *px, void (*on_request)(struct evhttp_request *, void *))
{
    struct timeval sweep = {0, SWEEP_MS * 1000};
    px->http = http_new(px, on_request, on_new_connection);
    if (!px->http)
        return -1;
    px->ev_sweep = event_new(px->base, -1, EV_PERSIST, on_sweep, px);
    event_add(px->ev_sweep, &sweep);
    px->bound = bind_http(px->http, px->cfg->listen_host, px->cfg->listen_port, "",
                          &px->listen_local);
    if (!px->bound)
        return -1;
    return px->cfg->tls_listen ? start_tls(px, on_request) : 0;
}

void conns_stop_accepting(struct proxy *px)
{
    if (px->bound) {
        evhttp_del_accept_socket(px->http, px->bound);
        px->bound = NULL;
    }
    if (px->https && px->https->bound) {
        evhttp_del_accept_socket(px->https->http, px->https->bound);
        px->https->bound = NULL;
    }
}

static void tls_free(struct proxy *px)
{
    struct conns_tls *t = px->https;
    if (!t)
        return;
    if (t->http)
        evhttp_free(t->http);
    tls_server_ctx_free(t->ctx);
    free(t->listen);
    free(t);
    px->https = NULL;
}

void conns_free(struct proxy *px)
{
    if (px->http)
        evhttp_free(px->http);
    px->http = NULL;
    px->bound = NULL;
    tls_free(px);
    for (int i = 0; i < px->nconns; i++) {
        if (px->conns[i]->linger_ev)
            event_free(px->conns[i]->linger_ev);
        bufferevent_decref(px->conns[i]->bev);
        intake_free(px->conns[i]->intake);
        free(px->conns[i]);
    }
    free(px->conns);
    free(px->conn_fd);
    px->conn_fd = NULL;
    px->nconn_fd = 0;
    px->conns = NULL;
    px->nconns = 0;
    if (px->ev_sweep)
        event_free(px->ev_sweep);
    px->ev_sweep = NULL;
}
