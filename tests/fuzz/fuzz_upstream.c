/* fuzz_upstream.c - the HTTP/1.1 response parser of proxy/upstream.c,
 * driven through upstream.h against a backend that is a loopback listener
 * of ours.
 *
 * Input: 4 control bytes (a little-endian seed), then the bytes the
 * "backend" sends. The seed chooses a HEAD request or not, 1 to 3 requests
 * in a row (so that keep-alive reuse and a stale pooled connection are
 * reached), the largest write, how the backend ends (FIN, or RST), short
 * timeouts for one input in eight, and it seeds the generator that decides
 * every write size and, in the callbacks, pauses, resumes and aborts.
 *
 * Each request runs the loop until its one terminal event: on_done (then
 * released or aborted from inside it, as session.c and discover.c do),
 * on_error, or our abort. Properties:
 * - callbacks in order: headers, head, body, done | error; nothing after
 *   the terminal one, nothing after an abort; an error is a body error
 *   (EBODY, ETIMEOUT_IDLE) exactly when the head had come;
 * - no body for a HEAD request, a 204 or a 304; no body byte while paused;
 *   never more body than the backend sent, nor than Content-Length, and all
 *   of it when done; on_body hands over at least the LEN bytes it says;
 * - it ends: once all bytes are sent and the connection closed, the request
 *   must end within 5 s (else abort: a hang);
 * - nothing leaks (the pool is drained after each input; ASan's leak check).
 * - the release after on_done may wait for a later pass of the loop
 *   (README.md, findings). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fz.h"
#include "net.h"
#include "upstream.h"

#define HANG_MS 5000.0

enum run_state { R_RUNNING, R_DONE, R_ERROR, R_ABORTED };

/* One input's run: the request in flight and what its callbacks saw. */
struct run {
    struct fz_rng rng;
    struct upstream *up; /* NULL once it ended or was handed back */
    enum run_state state;
    int head_req;
    int head_seen;
    int status;
    long long cl; /* from on_head; -1 none */
    int paused;
    int resume_in; /* passes of the loop until we resume */
    int defer_release;
    size_t body;       /* of this request */
    size_t total_body; /* of every request of the input */
    size_t sent;       /* bytes the backend wrote, all connections */
};

static struct event_base *base;
static int lfd = -1;
static struct upstream_target target; /* upstream.c knows a target, not a backend */
static char hostport[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct event_config *ec = event_config_new();
    struct sockaddr_in *sin = (struct sockaddr_in *)&target.addr;
    char err[256];
    (void)argc, (void)argv;
    signal(SIGPIPE, SIG_IGN);
    /* As main.c makes it. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_require_features(ec, EV_FEATURE_EARLY_CLOSE);
    base = event_base_new_with_config(ec);
    event_config_free(ec);
    lfd = net_listen("127.0.0.1", 0, 64, err, sizeof err);
    if (!base || lfd < 0) {
        fprintf(stderr, "fuzz_upstream: setup: %s\n", lfd < 0 ? err : "event_base");
        abort();
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)net_bound_port(lfd));
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    target.addrlen = sizeof *sin;
    snprintf(hostport, sizeof hostport, "127.0.0.1:%d", net_bound_port(lfd));
    return 0;
}

/* ---- the callbacks ---- */

static void check_running(const struct run *r)
{
    FZ_CHECK(r->state == R_RUNNING);
    FZ_CHECK(r->up != NULL);
}

/* Sometimes pause, resume (inside the callback) or abort. Returns 1 when
 * the request was aborted. */
static int act(struct run *r)
{
    uint32_t x = fz_rng_next(&r->rng) % 64;
    if (x == 0) {
        upstream_abort(r->up);
        r->up = NULL;
        r->state = R_ABORTED;
        return 1;
    }
    if (x < 12 && !r->paused) {
        upstream_pause(r->up, 1);
        r->paused = 1;
        r->resume_in = (int)(fz_rng_next(&r->rng) % 4);
    } else if (x < 16 && r->paused) {
        upstream_pause(r->up, 0);
        r->paused = 0;
    }
    return 0;
}

static void on_header(void *arg, int status, const char *key, const char *value)
{
    struct run *r = arg;
    check_running(r);
    FZ_CHECK(!r->head_seen);
    FZ_CHECK(status >= 200 && status <= 999); /* 1xx heads are skipped */
    FZ_CHECK(key && value && key[0]);
    act(r);
}

static int on_head(void *arg, int status, const char *reason, long long content_length)
{
    struct run *r = arg;
    check_running(r);
    FZ_CHECK(!r->head_seen);
    FZ_CHECK(status >= 200 && status <= 999);
    FZ_CHECK(reason && strlen(reason) < 64);
    FZ_CHECK(content_length >= -1);
    if (r->head_req || status == 204 || status == 304)
        FZ_CHECK_INT(content_length, -1);
    r->head_seen = 1;
    r->status = status;
    r->cl = content_length;
    return act(r) ? -1 : 0;
}

static void on_body(void *arg, struct evbuffer *src, size_t len)
{
    struct run *r = arg;
    check_running(r);
    FZ_CHECK(r->head_seen);
    FZ_CHECK(!r->head_req && r->status != 204 && r->status != 304);
    FZ_CHECK(!r->paused);
    FZ_CHECK(len > 0 && evbuffer_get_length(src) >= len);
    evbuffer_drain(src, len);
    r->body += len;
    r->total_body += len;
    FZ_CHECK(r->total_body <= r->sent);
    if (r->cl >= 0)
        FZ_CHECK(r->body <= (size_t)r->cl);
    act(r);
}

static void on_done(void *arg)
{
    struct run *r = arg;
    check_running(r);
    FZ_CHECK(r->head_seen);
    if (r->cl >= 0)
        FZ_CHECK_INT(r->body, r->cl);
    r->state = R_DONE;
    if (fz_rng_one_in(&r->rng, 4)) { /* the API allows a release after on_done returns */
        r->defer_release = 1;
        return;
    }
    if (fz_rng_one_in(&r->rng, 8))
        upstream_abort(r->up);
    else
        upstream_release(r->up);
    r->up = NULL;
}

static void on_error(void *arg, enum upstream_err err)
{
    struct run *r = arg;
    int body_err = err == UPSTREAM_EBODY || err == UPSTREAM_ETIMEOUT_IDLE;
    check_running(r);
    FZ_CHECK(err >= UPSTREAM_ECONNECT && err <= UPSTREAM_ESTALE);
    FZ_CHECK_INT(body_err, r->head_seen);
    r->state = R_ERROR;
    r->up = NULL;
}

static const struct upstream_cbs cbs = {on_header, on_head, on_body, on_done, on_error};

/* ---- the backend's side ---- */

struct server {
    const uint8_t *data;
    size_t len, pos;
    size_t max_write;
    int fd;     /* the connection we write to, -1 none */
    int closed; /* fd's sending side is shut (or fd is gone) */
    int reset;  /* end with RST instead of FIN */
};

static void drain_fd(int fd)
{
    char junk[4096];
    while (read(fd, junk, sizeof junk) > 0)
        ;
}

static void server_end(struct server *sv)
{
    if (sv->fd < 0)
        return;
    drain_fd(sv->fd);
    if (sv->reset) {
        struct linger lg = {1, 0};
        setsockopt(sv->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(sv->fd);
        sv->fd = -1;
    } else {
        shutdown(sv->fd, SHUT_WR);
    }
    sv->closed = 1;
}

/* A connection the upstream opened: from now on we write to it. */
static void server_accept(struct server *sv)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (sv->fd >= 0) {
        drain_fd(sv->fd);
        close(sv->fd);
    }
    sv->fd = fd;
    sv->closed = 0;
}

static void server_write(struct server *sv, struct run *r)
{
    size_t n;
    ssize_t w;
    if (sv->fd < 0 || sv->closed)
        return;
    drain_fd(sv->fd);
    if (sv->pos == sv->len) {
        server_end(sv);
        return;
    }
    if (fz_rng_one_in(&r->rng, 4))
        return; /* a gap: let the upstream read what it has */
    n = 1 + fz_rng_next(&r->rng) % sv->max_write;
    if (n > sv->len - sv->pos)
        n = sv->len - sv->pos;
    w = write(sv->fd, sv->data + sv->pos, n);
    if (w > 0) {
        sv->pos += (size_t)w;
        r->sent += (size_t)w;
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        close(sv->fd); /* the upstream closed its end */
        sv->fd = -1;
    }
}

/* ---- one input ---- */

static void run_request(struct run *r, struct server *sv, int i, const struct upstream_timeouts *to)
{
    struct evbuffer *req = evbuffer_new();
    double start = net_now_ms();
    evbuffer_add_printf(req, "%s /r%d HTTP/1.1\r\nHost: %s\r\n\r\n",
                        r->head_req ? "HEAD" : "GET", i, hostport);
    r->state = R_RUNNING;
    r->head_seen = 0;
    r->status = 0;
    r->cl = -1;
    r->paused = 0;
    r->body = 0;
    r->defer_release = 0;
    r->up = upstream_start(base, &target, req, r->head_req, to, &cbs, r);
    FZ_CHECK(r->up != NULL);
    evbuffer_free(req);
    while (r->state == R_RUNNING) {
        server_accept(sv);
        server_write(sv, r);
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (r->state == R_RUNNING && r->paused && r->resume_in-- <= 0) {
            r->paused = 0;
            upstream_pause(r->up, 0); /* may end the request at once */
        }
        if (r->state == R_RUNNING && net_now_ms() - start > HANG_MS) {
            fprintf(stderr, "upstream: request %d not ended after %.0f ms (sent %zu/%zu, "
                    "closed %d, head %d, paused %d)\n", i, HANG_MS, sv->pos, sv->len,
                    sv->closed, r->head_seen, r->paused);
            abort();
        }
    }
    if (r->defer_release) {
        /* A pass of the loop between on_done and the release. */
        server_accept(sv);
        server_write(sv, r);
        event_base_loop(base, EVLOOP_NONBLOCK);
        upstream_release(r->up);
        r->up = NULL;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t seed = 0;
    struct run r;
    struct server sv;
    struct upstream_timeouts to;
    static const size_t max_writes[] = {1, 3, 16, 200, 4096};
    double short_s;
    int nreq;

    for (size_t i = 0; i < 4 && i < size; i++)
        seed |= (uint32_t)data[i] << (8 * i);
    memset(&r, 0, sizeof r);
    memset(&sv, 0, sizeof sv);
    fz_rng_seed(&r.rng, seed);
    r.head_req = (seed & 1) != 0;
    nreq = 1 + (int)((seed >> 1) % 3);
    sv.max_write = max_writes[(seed >> 3) % 5];
    sv.reset = (seed >> 6) % 8 == 0;
    sv.data = data + (size < 4 ? size : 4);
    sv.len = size < 4 ? 0 : size - 4;
    sv.fd = -1;
    short_s = (seed >> 9) % 8 == 0 ? 0.001 * (1 + (seed >> 12) % 5) : 30;
    to.connect = net_timeval(30);
    to.first_byte = net_timeval(short_s);
    to.idle = net_timeval(short_s);

    for (int i = 0; i < nreq; i++)
        run_request(&r, &sv, i, &to);

    upstream_pool_drain(&target);
    FZ_CHECK(target.idle == NULL && target.nidle == 0);
    if (sv.fd >= 0) {
        drain_fd(sv.fd);
        close(sv.fd);
    }
    for (int fd; (fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
        close(fd);
    return 0;
}
