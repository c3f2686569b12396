/* fanout.c - see fanout.h.
 *
 * A fan-out owns its client request and one upstream request per target
 * backend (a "sub"). Subs end in any order (on_done or on_error); the last
 * one to end finishes the fan-out: the model lists are updated, the reply
 * is completed, everything is freed. A streamed reply starts at once; the
 * client leaving it (the connection's close callback) aborts every sub,
 * which Ollama takes as a cancel. Lines and bodies kept per sub are
 * bounded (FANOUT_MAX_BODY). */
#include "fanout.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accesslog.h"
#include "backend.h"
#include "catalog.h"
#include "config.h"
#include "discover.h"
#include "jout.h"
#include "jscan.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "net.h"
#include "proxy.h"
#include "server.h"
#include "upstream.h"

#define FANOUT_MAX_BODY (1024 * 1024)
#define PS_FRESH_MS 1000.0 /* /api/ps answers this old are reused */

struct fanout;

struct sub {
    struct fanout *f;
    struct backend *be;
    struct upstream *up;
    int status;
    struct evbuffer *body; /* the whole answer, or a streamed line so far */
    char *error;           /* NULL while it may still succeed */
    unsigned ended : 1, ok : 1, too_big : 1;
};

struct fanout {
    LIST_ENTRY(fanout) link;
    struct proxy *px;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    enum fanout_kind kind;
    int v1, stream, started, nsubs, pending;
    struct sub *subs;
    char *model, *dest; /* the model (the copy's source) and the copy's destination */
    char path[64];
    const char *method;
    double t0;
};

static LIST_HEAD(, fanout) fanouts = LIST_HEAD_INITIALIZER(fanouts);

static const char *const kind_verb[] = {"pull", "push", "create", "delete", "copy", "unload",
                                        "ps"};

int fanout_kind_of(struct evhttp_request *req, const char *path, int unload)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd == EVHTTP_REQ_POST) {
        if (!strcmp(path, "/api/pull"))
            return FAN_PULL;
        if (!strcmp(path, "/api/push"))
            return FAN_PUSH;
        if (!strcmp(path, "/api/create"))
            return FAN_CREATE;
        if (!strcmp(path, "/api/copy"))
            return FAN_COPY;
        if (unload && (!strcmp(path, "/api/generate") || !strcmp(path, "/api/chat")))
            return FAN_UNLOAD;
    }
    if (cmd == EVHTTP_REQ_DELETE && !strcmp(path, "/api/delete"))
        return FAN_DELETE;
    if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/api/ps"))
        return FAN_PS;
    return -1;
}

/* ---- the end ---- */

static void fanout_free(struct fanout *f)
{
    LIST_REMOVE(f, link);
    for (int i = 0; i < f->nsubs; i++) {
        struct sub *u = &f->subs[i];
        if (u->up)
            upstream_abort(u->up);
        if (u->body)
            evbuffer_free(u->body);
        free(u->error);
    }
    if (f->evcon)
        evhttp_connection_set_closecb(f->evcon, NULL, NULL);
    free(f->subs);
    free(f->model);
    free(f->dest);
    free(f);
}

static void log_line(struct fanout *f, int status, const char *outcome)
{
    struct accesslog_entry a = {0};
    char addr[48];
    server_peer(f->req, addr, sizeof addr);
    a.method = f->method;
    a.path = f->path;
    a.addr = addr;
    a.model = f->model;
    a.backend = "*";
    a.status = status;
    a.ttfb_ms = -1;
    a.upstream_ms = net_now_ms() - f->t0;
    a.tokens = -1;
    a.tries = f->nsubs;
    a.outcome = outcome;
    accesslog_write(&a);
    char key[NAME_KEY_MAX];
    metrics_request(f->px, NULL, f->model,
                    f->model && name_key(f->model, key, sizeof key) == 0 ? key : NULL, status, -1);
}

/* "pull failed on gpu1 (reason); gpu2 (reason)", or NULL if none failed. */
static char *failures(struct fanout *f)
{
    struct evbuffer *b = evbuffer_new();
    char *text = NULL;
    size_t n;
    for (int i = 0; i < f->nsubs; i++) {
        struct sub *u = &f->subs[i];
        if (u->ok)
            continue;
        evbuffer_add_printf(b, "%s%s (%s)", evbuffer_get_length(b) ? "; " : "", u->be->name,
                            u->error ? u->error : "no answer");
    }
    if ((n = evbuffer_get_length(b))) {
        text = malloc(n + 32);
        snprintf(text, n + 32, "%s failed on %.*s", kind_verb[f->kind], (int)n,
                 (char *)evbuffer_pullup(b, -1));
    }
    evbuffer_free(b);
    return text;
}

/* What a success changed, into the model lists now (discovery confirms). */
static void note_models(struct fanout *f)
{
    for (int i = 0; i < f->nsubs; i++) {
        struct sub *u = &f->subs[i];
        if (!u->ok)
            continue;
        if ((f->kind == FAN_PULL || f->kind == FAN_CREATE) && f->model)
            backend_model_add(u->be, f->model);
        else if (f->kind == FAN_COPY && f->dest)
            backend_model_add(u->be, f->dest);
        else if (f->kind == FAN_DELETE && f->model)
            backend_model_remove(u->be, f->model, 0);
        else if (f->kind == FAN_UNLOAD && f->model)
            backend_model_remove(u->be, f->model, 1);
        discover_refresh(f->px, u->be);
    }
}

static void reply_text(struct evhttp_request *req, int status, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    server_send_reply(req, status, NULL, body);
}

/* Every sub has ended: the one reply. */
static void finish(struct fanout *f)
{
    char *failed = failures(f);
    int status = 200, all_404 = 1;
    struct evbuffer *b;
    note_models(f);
    if (f->started) { /* the stream's last line */
        b = evbuffer_new();
        if (failed) {
            evbuffer_add(b, "{\"error\":", 9);
            jout_cstring(b, failed);
            evbuffer_add(b, "}\n", 2);
        } else {
            evbuffer_add_printf(b, "{\"status\":\"success\"}\n");
        }
        evhttp_send_reply_chunk(f->req, b);
        evhttp_send_reply_end(f->req);
        server_flush(f->evcon);
        evbuffer_free(b);
        log_line(f, 200, failed ? "fanout-failed" : "fanout");
    } else if (f->kind == FAN_PS) {
        log_line(f, 200, "fanout");
        if (!catalog_reply(f->px, f->req, "/api/ps")) /* every backend went meanwhile */
            server_reply_json(f->req, 200, json_pack("{s:[]}", "models"));
    } else if (!failed) {
        struct sub *first = &f->subs[0];
        b = evbuffer_new();
        if (f->kind == FAN_PULL || f->kind == FAN_PUSH || f->kind == FAN_CREATE)
            evbuffer_add_printf(b, "{\"status\":\"success\"}");
        else if (first->body)
            evbuffer_add_buffer(b, first->body);
        reply_text(f->req, first->status ? first->status : 200, b);
        evbuffer_free(b);
        log_line(f, first->status ? first->status : 200, "fanout");
    } else {
        for (int i = 0; i < f->nsubs; i++)
            all_404 &= f->subs[i].status == 404;
        status = all_404 ? 404 : 500;
        server_reply_error(f->req, f->v1, status, failed, 0);
        log_line(f, status, "fanout-failed");
    }
    free(failed);
    fanout_free(f);
}

static void sub_ended(struct sub *u)
{
    u->ended = 1;
    u->up = NULL;
    if (--u->f->pending == 0)
        finish(u->f);
}

/* ---- a sub's answer ---- */

static void set_error(struct sub *u, const char *text)
{
    if (!u->error)
        u->error = strdup(text);
    u->ok = 0;
}

/* The error text of an answer {"error":"..."}, or "status N". */
static void error_from_body(struct sub *u)
{
    char buf[64];
    size_t n = u->body ? evbuffer_get_length(u->body) : 0;
    json_t *root = n ? json_loadb((const char *)evbuffer_pullup(u->body, -1), n, 0, NULL) : NULL;
    const char *e = json_string_value(json_object_get(root, "error"));
    snprintf(buf, sizeof buf, "status %d", u->status);
    set_error(u, e ? e : buf);
    json_decref(root);
}

/* One NDJSON line of a streamed answer: a progress line is forwarded with
 * a "backend" field; the backend's own success or error is kept for the
 * end. */
static void on_line(struct sub *u, const char *line, size_t n)
{
    struct fanout *f = u->f;
    json_t *o = json_loadb(line, n, 0, NULL);
    const char *status = json_string_value(json_object_get(o, "status"));
    const char *error = json_string_value(json_object_get(o, "error"));
    char *text;
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    if (error) {
        set_error(u, error);
    } else if (status && !strcmp(status, "success")) {
        u->ok = !u->error;
    } else if (!f->evcon) {
        ; /* the client has gone */
    } else {
        struct evbuffer *b = evbuffer_new();
        json_object_set_new(o, "backend", json_string(u->be->name));
        if ((text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
            evbuffer_add_printf(b, "%s\n", text);
            free(text);
            evhttp_send_reply_chunk(f->req, b);
            server_flush(f->evcon);
        }
        evbuffer_free(b);
    }
    json_decref(o);
}

static void on_header(void *arg, int status, const char *key, const char *value)
{
    (void)arg, (void)status, (void)key, (void)value;
}

static int on_head(void *arg, int status, const char *reason, long long content_length)
{
    struct sub *u = arg;
    (void)reason, (void)content_length;
    u->status = status;
    return 0;
}

static void on_body(void *arg, struct evbuffer *src, size_t len)
{
    struct sub *u = arg;
    char *line;
    size_t n;
    if (u->too_big || evbuffer_get_length(u->body) + len > FANOUT_MAX_BODY) {
        u->too_big = 1;
        evbuffer_drain(src, len);
        return;
    }
    evbuffer_remove_buffer(src, u->body, len);
    if (!u->f->started || u->status != 200)
        return;
    while ((line = evbuffer_readln(u->body, &n, EVBUFFER_EOL_LF))) {
        on_line(u, line, n);
        free(line);
    }
}

static void on_done(void *arg)
{
    struct sub *u = arg;
    struct fanout *f = u->f;
    upstream_release(u->up);
    if (u->too_big)
        set_error(u, "answer too large");
    else if (u->status < 200 || u->status >= 300)
        error_from_body(u);
    else if (f->started && !u->ok && !u->error)
        set_error(u, "the stream ended without success");
    else if (!f->started)
        u->ok = 1;
    if (f->started && u->status == 200 && evbuffer_get_length(u->body)) { /* no last \n */
        size_t n = evbuffer_get_length(u->body);
        on_line(u, (const char *)evbuffer_pullup(u->body, -1), n);
    }
    if (f->kind == FAN_PS && u->ok)
        u->ok = discover_set_ps(u->be, u->body) == 0;
    sub_ended(u);
}

static void on_error(void *arg, enum upstream_err err)
{
    struct sub *u = arg;
    set_error(u, upstream_strerror(err));
    sub_ended(u);
}

static const struct upstream_cbs sub_cbs = {on_header, on_head, on_body, on_done, on_error};

/* ---- the start ---- */

/* The backends F goes to, into OUT (room for every backend); how many. */
static int targets(struct fanout *f, struct backend **out)
{
    struct proxy *px = f->px;
    char key[NAME_KEY_MAX];
    int n = 0, have_key = f->model && name_key(f->model, key, sizeof key) == 0;
    for (int pass = 0; pass < 2 && !n; pass++) {
        for (int i = 0; i < px->nbackends; i++) {
            struct backend *be = px->backends[i];
            if (be->removed || !be->healthy || be->admin == ADMIN_DISABLED)
                continue;
            if (f->kind == FAN_DELETE || f->kind == FAN_COPY) {
                if (!have_key || !backend_serves(be, key))
                    continue;
            } else if (f->kind == FAN_UNLOAD) {
                /* where it is loaded; if nowhere, where it is installed */
                if (!have_key || (pass == 0 ? !model_list_has(be->loaded, key)
                                            : !backend_serves(be, key)))
                    continue;
            }
            out[n++] = be;
        }
        if (f->kind != FAN_UNLOAD)
            break;
    }
    return n;
}

/* A JSON string's contents S[0..N) (escaped when ESC), decoded. */
static char *decoded(const char *s, size_t n, int esc)
{
    size_t len = esc ? jscan_unescape(s, n, NULL, 0) : n;
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    if (esc)
        jscan_unescape(s, n, out, len + 1);
    else
        memcpy(out, s, n);
    out[len] = '\0';
    return out;
}

/* The body's names as Ollama reads them (jscan.h): the model
 * (cmp.Or(model, name)), and stream; a copy's "source" and "destination".
 * Returns 0, or -1 if it is not a JSON object. */
static int read_body(struct fanout *f)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(f->req);
    size_t n = evbuffer_get_length(b);
    const char *body;
    struct jscan_result js;
    char why[128];
    json_t *root, *m;
    if (f->kind == FAN_PS)
        return 0;
    body = (const char *)evbuffer_pullup(b, -1);
    if (jscan_body(body, n, &js, why, sizeof why) < 0 || !js.is_object)
        return -1;
    if (js.model && js.model_len)
        f->model = decoded(js.model, js.model_len, js.model_escaped);
    else if (js.name && js.name_len)
        f->model = decoded(js.name, js.name_len, js.name_escaped);
    f->stream = (f->kind == FAN_PULL || f->kind == FAN_PUSH || f->kind == FAN_CREATE) &&
                js.stream != 0;
    if (f->kind != FAN_COPY)
        return 0;
    free(f->model); /* a copy names its model "source" */
    f->model = NULL;
    root = json_loadb(body, n, 0, NULL);
    if ((m = json_object_get(root, "source")) && json_is_string(m))
        f->model = strdup(json_string_value(m));
    if ((m = json_object_get(root, "destination")) && json_is_string(m))
        f->dest = strdup(json_string_value(m));
    json_decref(root);
    return 0;
}

static void send_sub(struct fanout *f, struct sub *u)
{
    struct evbuffer *body = evhttp_request_get_input_buffer(f->req);
    struct evbuffer *req = f->px->scratch;
    size_t len = evbuffer_get_length(body);
    evbuffer_add_printf(req, "%s %s HTTP/1.1\r\nHost: %s\r\n", f->method, f->path,
                        u->be->hostport);
    if (len)
        evbuffer_add_printf(req, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                            len);
    evbuffer_add(req, "\r\n", 2);
    if (len)
        evbuffer_add(req, evbuffer_pullup(body, -1), len);
    u->body = evbuffer_new();
    u->up = upstream_start(f->px->base, u->be, req, 0, &f->px->uto, &sub_cbs, u);
    evbuffer_drain(req, evbuffer_get_length(req));
    if (!u->up) {
        set_error(u, "cannot open a socket");
        u->ended = 1;
        f->pending--;
    }
}

/* The client left a streamed reply: every sub is aborted (a cancel for
 * Ollama); the detached request is ours to free. */
static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    struct fanout *f = arg;
    (void)evcon;
    f->evcon = NULL;
    log_line(f, 499, "client-gone");
    evhttp_send_reply_end(f->req);
    fanout_free(f);
}

static int ps_fresh(struct proxy *px)
{
    double now = net_now_ms();
    for (int i = 0; i < px->nbackends; i++) {
        struct backend *be = px->backends[i];
        if (!be->removed && be->healthy && now - be->ps_at_ms > PS_FRESH_MS)
            return 0;
    }
    return 1;
}

void fanout_start(struct proxy *px, struct evhttp_request *req, enum fanout_kind kind,
                  const char *path, int v1)
{
    struct fanout *f;
    struct backend **bes;
    char msg[NAME_KEY_MAX + 64];
    int n;
    if (kind == FAN_PS && ps_fresh(px) && catalog_reply(px, req, "/api/ps"))
        return;
    if (!(f = calloc(1, sizeof *f))) {
        server_reply_error(req, v1, 500, "out of memory", 0);
        return;
    }
    LIST_INSERT_HEAD(&fanouts, f, link);
    f->px = px;
    f->req = req;
    f->evcon = evhttp_request_get_connection(req);
    f->kind = kind;
    f->v1 = v1;
    f->t0 = net_now_ms();
    f->method = server_method_name(evhttp_request_get_command(req));
    snprintf(f->path, sizeof f->path, "%s", path);
    if (read_body(f) < 0) {
        server_reply_error(req, v1, 400, "invalid JSON in request body", 0);
        log_line(f, 400, "fanout-failed");
        fanout_free(f);
        return;
    }
    if (!(bes = calloc((size_t)px->nbackends + 1, sizeof *bes))) {
        server_reply_error(req, v1, 500, "out of memory", 0);
        fanout_free(f);
        return;
    }
    n = targets(f, bes);
    if (!n) {
        free(bes);
        if (kind == FAN_DELETE || kind == FAN_COPY || kind == FAN_UNLOAD) {
            snprintf(msg, sizeof msg, "model '%s' not found", f->model ? f->model : "");
            server_reply_error(req, v1, 404, msg, 0);
            log_line(f, 404, "no-model");
        } else {
            server_reply_error(req, v1, 503, "no healthy backend", 1);
            log_line(f, 503, "no-backend");
        }
        fanout_free(f);
        return;
    }
    f->subs = calloc((size_t)n, sizeof *f->subs);
    f->nsubs = f->pending = n;
    if (f->stream) { /* progress as it comes: the reply starts now */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/x-ndjson");
        evhttp_send_reply_start(req, 200, "OK");
        evhttp_connection_set_closecb(f->evcon, on_client_close, f);
        f->started = 1;
    }
    for (int i = 0; i < n; i++) {
        f->subs[i].f = f;
        f->subs[i].be = bes[i];
    }
    free(bes);
    for (int i = 0; i < n; i++)
        send_sub(f, &f->subs[i]);
    if (f->pending == 0) /* none could even start */
        finish(f);
}

void fanout_abort_all(struct proxy *px)
{
    (void)px;
    while (!LIST_EMPTY(&fanouts)) {
        struct fanout *f = LIST_FIRST(&fanouts);
        struct evhttp_connection *evcon = f->evcon;
        f->evcon = NULL;
        if (evcon)
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        fanout_free(f);
        if (evcon)
            evhttp_connection_free(evcon);
    }
}
