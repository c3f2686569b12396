/* server.c - the client side: evhttp on a listener of our own, the proxy's
 * own endpoints, and admission of everything else to a session.
 *
 * The listener is ours (net_listen) because evhttp's would listen with a
 * backlog of 128 and without TCP_NODELAY, and Nagle plus delayed ACKs add
 * ~40 ms to every streamed reply. */
#include "server.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "accesslog.h"
#include "admin.h"
#include "backend.h"
#include "catalog.h"
#include "config.h"
#include "fanout.h"
#include "fleet.h"
#include "jout.h"
#include "jscan.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"
#include "session.h"
#include "urlpath.h"

const char *server_method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    }
    return "GET";
}

void server_peer(struct evhttp_request *req, char *out, size_t len)
{
    char *peer = NULL;
    ev_uint16_t port;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon)
        evhttp_connection_get_peer(evcon, &peer, &port);
    net_copy(out, len, peer ? peer : "unknown", NULL);
}

/* The status and size of the last reply the proxy made itself, for the
 * access line of a request it answered (see self_answered). */
static int last_status;
static size_t last_bytes;

void server_flush(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    /* Run the bufferevent's own write callback now, as if the socket had
     * been reported writable: it writes, and if all is written it deletes
     * the write event in the same pass, which the epoll changelist then
     * never sends to the kernel; on EAGAIN it simply stays armed. */
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) &&
        event_pending(&bev->ev_write, EV_WRITE, NULL))
        event_active(&bev->ev_write, EV_WRITE, 1);
}

void server_send_reply(struct evhttp_request *req, int status, const char *reason,
                       struct evbuffer *b)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    last_status = status;
    last_bytes = b ? evbuffer_get_length(b) : 0;
    evhttp_send_reply(req, status, reason, b);
    server_flush(evcon);
}

void server_reply_error(struct evhttp_request *req, int v1, int status, const char *msg,
                        int retry_after)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    char ra[16];
    /* Written by hand, not with jansson: MSG may quote bytes a client sent
     * (a model name), which need not be UTF-8 (jout.h). */
    if (v1) {
        const char *type = status == 400 || status == 413 ? "invalid_request_error"
                           : status == 401                ? "authentication_error"
                           : status == 403                ? "permission_error"
                           : status == 404                ? "not_found_error"
                                                          : "api_error";
        evbuffer_add_printf(b, "{\"error\":{\"message\":");
        jout_cstring(b, msg);
        evbuffer_add_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":null}}", type);
    } else {
        evbuffer_add(b, "{\"error\":", 9);
        jout_cstring(b, msg);
        evbuffer_add(b, "}", 1);
    }
    evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
    if (retry_after > 0) {
        snprintf(ra, sizeof ra, "%d", retry_after);
        evhttp_add_header(h, "Retry-After", ra);
    }
    server_send_reply(req, status, NULL, b);
    evbuffer_free(b);
}

void server_reply_json(struct evhttp_request *req, int status, json_t *o)
{
    struct evbuffer *b;
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!text) { /* a string that is not UTF-8 made json_pack() fail */
        json_decref(o);
        server_reply_error(req, 0, 500, "cannot encode the answer", 0);
        return;
    }
    b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    free(text);
    json_decref(o);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    server_send_reply(req, status, NULL, b);
    evbuffer_free(b);
}

static void reply_root(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(b, "Ollama is running", 17);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    server_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* ---- keys ---- */

/* A == B for a secret, in time that depends on B's length only. */
static int secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)(b[i] ^ (i < alen ? a[i] : 0));
    return diff == 0;
}

/* The auth.keys row whose secret REQ's "Authorization: Bearer KEY" holds,
 * or -1. Every key is compared, whichever matches. */
static int find_key(const struct px_config *cfg, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    size_t n;
    int found = -1;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return -1;
    h += 7;
    h += strspn(h, " \t");
    for (n = strlen(h); n && (h[n - 1] == ' ' || h[n - 1] == '\t'); n--)
        ;
    for (int i = 0; i < cfg->nkeys; i++) {
        int eq = secret_equal(h, n, cfg->keys[i].key, strlen(cfg->keys[i].key));
        found = eq ? i : found;
    }
    return found;
}

/* Endpoints that change the fleet or show it whole: admin keys only. */
static int is_admin_path(const char *path)
{
    static const char *const paths[] = {"/api/pull", "/api/push", "/api/delete", "/api/copy",
                                        "/api/create"};
    if (strncmp(path, "/proxy/", 7) == 0 || strncmp(path, "/api/blobs/", 11) == 0)
        return 1;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (strcmp(path, paths[i]) == 0)
            return 1;
    return 0;
}

/* With auth.keys: 401 without a known key, 403 for a non-admin key on an
 * admin endpoint. Returns the key's row (-1 without keys), or -2 after
 * answering the client. */
static int check_key(struct proxy *px, struct evhttp_request *req, const char *path, int v1)
{
    int k;
    if (!px->cfg->nkeys)
        return -1;
    if (strcmp(path, "/metrics") == 0 && !px->cfg->metrics_key_required &&
        (evhttp_request_get_command(req) == EVHTTP_REQ_GET ||
         evhttp_request_get_command(req) == EVHTTP_REQ_HEAD))
        return -1; /* open for scrapes; any other method is no scrape */
    if (strcmp(path, "/proxy/ui") == 0) /* the page's shell holds no data: ui.h */
        return -1;
    if ((k = find_key(px->cfg, req)) < 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer");
        server_reply_error(req, v1, 401,
                           evhttp_find_header(evhttp_request_get_input_headers(req),
                                              "Authorization")
                               ? "unauthorized: unknown key"
                               : "unauthorized: an \"Authorization: Bearer KEY\" header is "
                                 "required",
                           0);
        return -2;
    }
    if (is_admin_path(path) && !px->cfg->keys[k].admin) {
        server_reply_error(req, v1, 403, "forbidden: this endpoint needs an admin key", 0);
        return -2;
    }
    return k;
}

/* Who REQ is charged to: its key; else the trusted header, if configured
 * and sent; else the connecting address. */
static struct sched_client *client_of(struct proxy *px, struct evhttp_request *req, int key,
                                      const char *addr)
{
    char name[80];
    if (key >= 0)
        return sched_key_client(&px->sched, key);
    if (px->cfg->client_header) {
        const char *v = evhttp_find_header(evhttp_request_get_input_headers(req),
                                           px->cfg->client_header);
        if (v && *v) {
            size_t n = strlen(v) < sizeof name - 1 ? strlen(v) : sizeof name - 1;
            memcpy(name, v, n);
            name[n] = '\0';
            return sched_addr_client(&px->sched, name);
        }
    }
    return sched_addr_client(&px->sched, addr);
}

/* Paths whose body must name a model (ollama-api.md section 9). */
static int needs_model(const char *path)
{
    static const char *const paths[] = {
        "/api/generate", "/api/chat",          "/api/embed",     "/api/embeddings",
        "/api/show",     "/v1/chat/completions", "/v1/completions", "/v1/embeddings"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (strcmp(path, paths[i]) == 0)
            return 1;
    return 0;
}

/* Paths whose request type has the legacy "name" beside "model" (Ollama
 * takes cmp.Or(model, name)). */
static int takes_name(const char *path)
{
    return strcmp(path, "/api/show") == 0;
}

/* The request is an unload, as Ollama decides it (server/routes.go): an
 * empty prompt (generate) or no messages (chat) with keep_alive zero.
 * A body with a value of the wrong type is none: Ollama refuses it (400),
 * and the proxy lets it take a slot and hear that from the backend. */
static int is_unload(const char *path, const struct jscan_result *js)
{
    if (js->keep_alive != JSCAN_KA_ZERO || js->wrong_type)
        return 0;
    if (strcmp(path, "/api/generate") == 0)
        return js->prompt != 1;
    if (strcmp(path, "/api/chat") == 0)
        return js->messages != 1;
    return 0;
}

/* Read the model from the body of a model path, as the backend will (see
 * jscan.h), into MODEL and IN. Returns 0, or -1 after answering the
 * client. */
static int parse_body(struct evhttp_request *req, const char *path, int v1, char *model,
                      size_t modellen, struct session_info *in)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(b), mlen;
    const char *body, *m;
    struct jscan_result js;
    char why[160], msg[200];
    int mesc;
    if (len == 0) {
        server_reply_error(req, v1, 400, "missing request body", 0);
        return -1;
    }
    body = (const char *)evbuffer_pullup(b, -1);
    if (jscan_body(body, len, &js, why, sizeof why) < 0 || !js.is_object) {
        snprintf(msg, sizeof msg, "invalid JSON in request body: %s",
                 js.is_object ? why : "not an object");
        server_reply_error(req, v1, 400, msg, 0);
        return -1;
    }
    if (js.wrong_type & (1u << JSCAN_MODEL | 1u << JSCAN_NAME)) {
        server_reply_error(req, v1, 400, "invalid JSON in request body: the model must be a "
                                         "string", 0);
        return -1;
    }
    m = js.model, mlen = js.model_len, mesc = js.model_escaped;
    if (!mlen && takes_name(path))
        m = js.name, mlen = js.name_len, mesc = js.name_escaped;
    if (!m || mlen == 0) {
        server_reply_error(req, v1, 400, "model is required", 0);
        return -1;
    }
    if (mlen >= modellen) {
        server_reply_error(req, v1, 400, "invalid model name", 0);
        return -1;
    }
    if (mesc) { /* rare: undo the escapes */
        size_t got = jscan_unescape(m, mlen, model, modellen);
        if (!got || got >= modellen || strlen(model) != got) { /* "", or a "\u0000" */
            server_reply_error(req, v1, 400, "invalid model name", 0);
            return -1;
        }
    } else {
        memcpy(model, m, mlen);
        model[mlen] = '\0';
    }
    in->model = model;
    in->unload = is_unload(path, &js);
    return 0;
}

/* The request target in origin form. An absolute-form URI (RFC 9112
 * 3.2.2: "GET http://host/proxy/status") is taken as its path and query,
 * so that it reaches the proxy's own endpoints and checks like any other;
 * *ABS is then set (an empty path is "/": urlpath_normalize adds it). */
static const char *origin_form(const char *uri, int *abs)
{
    const char *p;
    *abs = 0;
    if (strncasecmp(uri, "http://", 7) != 0 && strncasecmp(uri, "https://", 8) != 0)
        return uri;
    *abs = 1;
    p = strchr(uri, ':') + 3;
    return p + strcspn(p, "/?");
}

static void conn_request_arrived(struct proxy *px, struct evhttp_request *req);

/* The access line and the count of a request the proxy answered itself. */
static void self_answered(struct proxy *px, struct evhttp_request *req, const char *path,
                          const char *addr, int key)
{
    struct accesslog_entry a = {0};
    a.method = server_method_name(evhttp_request_get_command(req));
    a.path = path;
    a.client = key >= 0 ? px->cfg->keys[key].name : px->cfg->nkeys ? NULL : addr;
    a.addr = addr;
    a.status = last_status;
    a.ttfb_ms = -1;
    a.bytes = last_bytes;
    a.tokens = -1;
    a.outcome = "self";
    accesslog_write(&a);
    metrics_request(px, NULL, NULL, NULL, last_status, -1);
}

static void reply_metrics(struct proxy *px, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    metrics_render(px, b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    server_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* Answer REQ ourselves if it is for the proxy; 1 if answered. */
static int answer_self(struct proxy *px, struct evhttp_request *req, const char *path,
                       struct session_info *in, int *key)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    if (strcmp(path, "/") == 0 && get) {
        reply_root(req);
        return 1;
    }
    if ((*key = check_key(px, req, path, in->v1)) == -2)
        return 1;
    if (strcmp(path, "/metrics") == 0) { /* the proxy's own: never a backend's */
        if (get)
            reply_metrics(px, req);
        else
            server_reply_error(req, 0, 405, "use GET", 0);
        return 1;
    }
    if (strncmp(path, "/proxy/", 7) == 0)
        return admin_reply(px, req, path);
    if (get && strcmp(path, "/api/ps") != 0 && catalog_reply(px, req, path))
        return 1;
    if (px->draining) {
        server_reply_error(req, in->v1, 503, "the proxy is shutting down", 1);
        return 1;
    }
    return 0;
}

/* An error before the path is known: the dialect from the raw target. */
static void refuse_target(struct proxy *px, struct evhttp_request *req, const char *uri,
                          int rc, const char *why, const char *addr)
{
    char msg[128];
    snprintf(msg, sizeof msg, "bad request target: %s", why);
    server_reply_error(req, strncmp(uri, "/v1/", 4) == 0, rc == URLPATH_ELONG ? 414 : 400, msg,
                       0);
    self_answered(px, req, uri, addr, -1); /* the log shows what was sent (escaped) */
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct proxy *px = arg;
    int abs, rc;
    const char *uri = origin_form(evhttp_request_get_uri(req), &abs), *why = NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct session_info in = {0};
    char path[URLPATH_MAX + 1], target[8192], model[512], addr[48];
    int key = -1, kind;

    px->requests++;
    conn_request_arrived(px, req);
    server_peer(req, addr, sizeof addr);
    last_status = 0;
    /* Routing, keys and fan-outs are decided on the path as Ollama will
     * route it (decoded), and what is forwarded decodes to that path. */
    if ((rc = urlpath_normalize(uri, path, sizeof path, target, sizeof target, &why)) < 0) {
        refuse_target(px, req, uri, rc, why, addr);
        return;
    }
    in.target = target;
    in.v1 = strncmp(path, "/v1/", 4) == 0;
    if (answer_self(px, req, path, &in, &key) ||
        (cmd == EVHTTP_REQ_POST && needs_model(path) &&
         parse_body(req, path, in.v1, model, sizeof model, &in) < 0)) {
        self_answered(px, req, path, addr, key);
        return;
    }
    if ((kind = fanout_kind_of(req, path, in.unload)) == FAN_PS && !catalog_known(px) &&
        catalog_reply(px, req, path)) { /* nobody in service to ask */
        self_answered(px, req, path, addr, key);
        return;
    }
    if (kind >= 0) {
        fanout_start(px, req, (enum fanout_kind)kind, path, in.v1);
        return;
    }
    /* Reads that never run on a GPU take no slot and wait behind no
     * inference (sched.h, SCHED_META_CAP). */
    in.meta = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD ||
              (cmd == EVHTTP_REQ_POST && strcmp(path, "/api/show") == 0);
    in.client = client_of(px, req, key, addr);
    in.addr = addr;
    session_start(px, req, &in);
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

struct conn {
    struct proxy *px;
    struct bufferevent *bev; /* a reference of ours */
    double head_start;       /* the first byte of the request being read; 0 none */
    size_t head_bytes;       /* its bytes so far */
    int fd;                  /* -1 until evhttp has set it */
    unsigned in_request : 1; /* handed to on_request, its reply not yet done */
};

static struct evconnlistener *listener(struct proxy *px)
{
    return px->bound ? evhttp_bound_socket_get_listener(px->bound) : NULL;
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
    c->in_request = 0;
    c->head_start = left ? net_now_ms() : 0; /* a pipelined request waits already */
    c->head_bytes = left;
}

/* REQ has arrived whole: its connection's request deadline stops. */
static void conn_request_arrived(struct proxy *px, struct evhttp_request *req)
{
    struct conn *c = conn_of(px, req);
    if (!c)
        return;
    c->in_request = 1;
    c->head_start = 0;
    c->head_bytes = 0;
    evhttp_request_set_on_complete_cb(req, on_request_done, c);
}

static void conn_release(struct proxy *px, struct conn *c)
{
    if (c->fd >= 0 && c->fd < px->nconn_fd && px->conn_fd[c->fd] == c)
        px->conn_fd[c->fd] = NULL;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_decref(c->bev);
    free(c);
}

static int conn_late(const struct proxy *px, const struct conn *c, double now)
{
    double allowed = px->cfg->request_s * 1000.0 + (double)c->head_bytes / 1048.576;
    return !c->in_request && c->head_start && now - c->head_start > allowed;
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
        if (errcb)
            px->conns[kept++] = c;
        else /* evhttp freed it: ours is the last reference */
            conn_release(px, c);
    }
    px->nconns = kept;
    if (late)
        log_warn("closed %d connections whose request did not arrive within "
                 "timeouts.request_s (%gs)", late, px->cfg->request_s);
    if (px->accept_paused && px->nconns < px->cfg->max_connections && listener(px)) {
        evconnlistener_enable(listener(px));
        px->accept_paused = 0;
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sweep_conns(arg);
}

/* evhttp asks for the bufferevent of a connection it just accepted. Its
 * callbacks and fd are set only after we return, so the sweep must not see
 * it before that: sweep first, then add it. */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    struct proxy *px = arg;
    struct bufferevent *bev;
    struct conn *c;
    if (px->nconns + 1 >= px->cfg->max_connections)
        sweep_conns(px);
    bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        return NULL;
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
    bufferevent_incref(bev);
    evbuffer_add_cb(bufferevent_get_input(bev), on_conn_input, c);
    px->conns[px->nconns++] = c;
    if (px->nconns >= px->cfg->max_connections && !px->accept_paused && listener(px)) {
        evconnlistener_disable(listener(px));
        px->accept_paused = 1;
        log_warn("limits.max_connections (%d) reached: new connections wait",
                 px->cfg->max_connections);
    }
    return bev;
}

int server_start(struct proxy *px)
{
    struct timeval sweep = {0, SWEEP_MS * 1000};
    char err[256];
    int fd;
    px->http = evhttp_new(px->base);
    if (!px->http)
        return -1;
    evhttp_set_allowed_methods(px->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(px->http, 64 * 1024);
    /* Read (and drop) an oversized body before answering 413, so that the
     * answer is not lost to a reset of a socket closed with unread data. */
    evhttp_set_flags(px->http, EVHTTP_SERVER_LINGERING_CLOSE);
    fleet_settings(px); /* the body limit and the keep-alive timeout */
    evhttp_set_default_content_type(px->http, "application/json; charset=utf-8");
    evhttp_set_gencb(px->http, on_request, px);
    evhttp_set_bevcb(px->http, on_new_connection, px);
    px->ev_sweep = event_new(px->base, -1, EV_PERSIST, on_sweep, px);
    event_add(px->ev_sweep, &sweep);
    fd = net_listen(px->cfg->listen_host, px->cfg->listen_port, 4096, err, sizeof err);
    if (fd < 0) {
        log_error("%s", err);
        return -1;
    }
    px->bound = evhttp_accept_socket_with_handle(px->http, fd);
    if (!px->bound) {
        log_error("cannot serve on %s", px->cfg->listen);
        return -1;
    }
    log_info("listening on %s%s%s:%d", strchr(px->cfg->listen_host, ':') ? "[" : "",
             px->cfg->listen_host, strchr(px->cfg->listen_host, ':') ? "]" : "",
             net_bound_port(fd));
    return 0;
}

void server_stop_accepting(struct proxy *px)
{
    if (px->bound) {
        evhttp_del_accept_socket(px->http, px->bound);
        px->bound = NULL;
    }
}

void server_free(struct proxy *px)
{
    if (px->http)
        evhttp_free(px->http);
    px->http = NULL;
    px->bound = NULL;
    for (int i = 0; i < px->nconns; i++) {
        bufferevent_decref(px->conns[i]->bev);
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
