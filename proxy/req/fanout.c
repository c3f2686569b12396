/* fanout.c - see fanout.h.
 *
 * A fan-out owns its client request and one upstream request per target
 * backend (a "sub"). Subs end in any order (on_done or on_error); the last
 * one to end finishes the fan-out: the model lists are updated, the reply
 * is completed, everything is freed. Lines and bodies kept per sub are
 * bounded (FANOUT_MAX_BODY).
 *
 * The client leaving aborts every sub, which Ollama takes as a cancel, and
 * the fan-out ends as client-gone (499). A streamed reply starts at once,
 * and evhttp, reading while it writes, tells of a leave through the
 * connection's close callback. Any other reply starts only when the last
 * backend has answered (a pull of stream:false can take an hour, a preload
 * a minute), and until then evhttp does not read the connection: the
 * client's socket is watched (clientwatch.h) from the start to the reply.
 *
 * A blob upload is a fan-out whose subs are uploads (upload.h) fed by one
 * tee (tee.h) from the client's body (bodysrc.h); the client leaving
 * aborts every upload, which Ollama takes as a failed upload and discards.
 * While the body is read, evhttp's close callback tells of it (intake.c
 * hands a hang-up on); the watch tells of it whenever nobody reads: when
 * the reading waits for the slowest backend, and when the body has all
 * come and the backends have still to answer. The body's first bytes make
 * the watch step aside to its poll, so an upload's leave is seen within
 * the poll's 100 ms rather than at once. */
#include "fanout.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bodysrc.h"
#include "catalog.h"
#include "clientwatch.h"
#include "config.h"
#include "discover.h"
#include "jout.h"
#include "jscan.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "net.h"
#include "proxy.h"
#include "reply.h"
#include "reqlog.h"
#include "reqtext.h"
#include "request.h"
#include "tee.h"
#include "upload.h"
#include "upstream.h"

#define FANOUT_MAX_BODY (1024 * 1024)
#define FANOUT_HIGH_WATER (256 * 1024) /* pause every backend's read above this */
#define PS_FRESH_MS 1000.0 /* /api/ps answers this old are reused */

struct fanout;

struct sub {
    struct fanout *f;
    struct backend *be;
    struct upstream *up;
    struct upload *ul;     /* a blob upload's, instead of up */
    int status;
    struct evbuffer *body; /* the whole answer, or a streamed line so far */
    char *error;           /* NULL while it may still succeed */
    unsigned ended : 1, ok : 1, too_big : 1;
};

struct fanout {
    LIST_ENTRY(fanout) link; /* px->fanouts */
    struct request h;        /* the head: who, what, how it went (request.h) */
    struct proxy *px;
    struct evhttp_connection *evcon;
    struct clientwatch cw; /* the client, until the reply starts (not a stream's) */
    enum fanout_kind kind;
    int stream, started, nsubs, pending;
    unsigned paused : 1;      /* every sub's read paused: the client reads slowly */
    unsigned resuming : 1;    /* inside resume(): subs ending wait for it to finish */
    unsigned finish_later : 1;
    struct sub *subs;
    struct evbuffer *out; /* what is written to the client next (drained by each write) */
    char *model, *dest; /* the model (the copy's source) and the copy's destination */
    char path[256];
    /* A blob upload's body: its source (released by the tee, or here when
     * there is no tee) and whether it has been read whole. */
    struct bodysrc *src;
    struct bodysrc_whole whole; /* the source of a body evhttp read whole */
    struct tee *tee;
    enum bodysrc_state body;
};

static const char *const kind_verb[] = {"pull",   "push", "create",     "delete", "copy",
                                        "unload", "ps",   "blob check", "upload", "load"};

static void finish(struct fanout *f);

/* ---- the end ---- */

static void fanout_free(struct fanout *f)
{
    struct proxy *px = f->px;
    clientwatch_stop(&f->cw);
    LIST_REMOVE(f, link);
    for (int i = 0; i < f->nsubs; i++) {
        struct sub *u = &f->subs[i];
        if (u->up)
            upstream_abort(u->up);
        upload_free(u->ul); /* an unfinished upload: Ollama discards it */
        if (u->body)
            evbuffer_free(u->body);
        free(u->error);
    }
    if (f->tee)
        tee_free(f->tee); /* releases the body */
    else if (f->src)
        f->src->ops->release(f->src);
    for (int i = 0; i < f->nsubs; i++)
        if (f->subs[i].be)
            backend_unref(f->subs[i].be);
    if (f->evcon)
        evhttp_connection_set_closecb(f->evcon, NULL, NULL);
    request_cleanup(&f->h);
    if (f->out)
        evbuffer_free(f->out);
    free(f->subs);
    free(f->model);
    free(f->dest);
    free(f);
    proxy_request_end(px);
}

/* The one record of F (reqlog.h); STATUS is what the client got. */
static void log_line(struct fanout *f, int status, const char *outcome)
{
    f->h.status = status;
    f->h.backend_label = "*";
    f->h.tries = f->nsubs;
    reqlog_end(f->px, &f->h, outcome);
}

/* "pull failed on gpu1 (reason); gpu2 (reason)", or NULL if none failed. */
static char *failures(struct fanout *f)
{
    struct evbuffer *b = evbuffer_new();
    char *text = NULL;
    size_t n;
    if (!b)
        return strdup("out of memory");
    for (int i = 0; i < f->nsubs; i++) {
        struct sub *u = &f->subs[i];
        if (u->ok)
            continue;
        evbuffer_add_printf(b, "%s%s (%s)", evbuffer_get_length(b) ? "; " : "", u->be->name,
                            u->error ? u->error : "no answer");
    }
    if ((n = evbuffer_get_length(b)) && (text = malloc(n + 32)))
        snprintf(text, n + 32, "%s failed on %.*s", kind_verb[f->kind], (int)n,
                 (char *)evbuffer_pullup(b, -1));
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

static void reply_text(struct request *r, int status, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
                      "application/json; charset=utf-8");
    reply_send(r, status, body);
}

/* A blob upload's body is of no more use: the connection stops reading it
 * (what is left unread closes it after the reply). */
static void release_body(struct fanout *f)
{
    if (f->tee)
        tee_free(f->tee);
    else if (f->src)
        f->src->ops->release(f->src);
    f->tee = NULL;
    f->src = NULL;
}

/* The status of a blob fan-out's answer. All well: 201 when a backend
 * stored the blob, 200 when every one had it. Else the 4xx every failed
 * backend gave (a digest that does not match the body: the client's
 * error), or for a check 404 when a backend lacks it and none failed
 * otherwise; 502 for any other failure. */
static int blob_status(const struct fanout *f, int failed)
{
    int created = 0, same = -1, any_404 = 0, other = 0;
    for (int i = 0; i < f->nsubs; i++) {
        const struct sub *u = &f->subs[i];
        if (u->ok) {
            created |= u->status == 201;
            continue;
        }
        any_404 |= u->status == 404;
        other |= u->status != 404;
        same = same == -1 || same == u->status ? u->status : 0;
    }
    if (!failed)
        return created ? 201 : 200;
    if (f->kind == FAN_BLOB_HEAD)
        return any_404 && !other ? 404 : 502;
    return same >= 400 && same < 500 ? same : 502;
}

/* The one reply of a blob check or upload: empty on success (Ollama's),
 * else an error naming each backend that failed and what it said. */
static void finish_blob(struct fanout *f, const char *failed)
{
    int status = blob_status(f, failed != NULL);
    enum bodysrc_state body = f->body;
    release_body(f);
    if (body == BODYSRC_BAD) {
        reply_error(&f->h, 400, "invalid request body: malformed chunked encoding", 0);
        log_line(f, 400, "fanout-failed");
    } else if (failed) {
        reply_error(&f->h, status, failed, 0);
        log_line(f, status, "fanout-failed");
    } else {
        reply_send(&f->h, status, NULL); /* empty, as Ollama's */
        log_line(f, status, "fanout");
    }
}

/* A preload's reply: the first answer of a backend that loaded the model
 * (FAILED, of the others, is logged); 0 when none did, or when all
 * agree on one error status (that status, not 500, goes to the client). */
static int load_reply(struct fanout *f, const char *failed)
{
    struct sub *u = NULL;
    int same = 1;
    for (int i = 0; i < f->nsubs && !u; i++)
        if (f->subs[i].ok)
            u = &f->subs[i];
    if (!u) {
        for (int i = 1; i < f->nsubs; i++)
            same &= f->subs[i].status == f->subs[0].status;
        if (!same || f->subs[0].status < 400)
            return 0;
        reply_error(&f->h, f->subs[0].status, failed, f->subs[0].status == 503);
        log_line(f, f->h.status, "fanout-failed");
        return 1;
    }
    if (failed)
        log_warn("%s; loaded on the others", failed);
    if (u->body)
        evbuffer_add_buffer(f->out, u->body);
    reply_text(&f->h, u->status ? u->status : 200, f->out);
    log_line(f, f->h.status, failed ? "fanout-partial" : "fanout");
    return 1;
}

/* Every sub has ended: the one reply. */
static void finish(struct fanout *f)
{
    char *failed = failures(f);
    int status = 200, all_404 = 1;
    struct evbuffer *b;
    clientwatch_stop(&f->cw); /* the reply starts */
    note_models(f);
    if (f->kind == FAN_BLOB_HEAD || f->kind == FAN_BLOB_PUT) {
        finish_blob(f, failed);
        free(failed);
        fanout_free(f);
        return;
    }
    if (f->started) { /* the stream's last line */
        b = f->out;
        if (failed) {
            evbuffer_add(b, "{\"error\":", 9);
            jout_cstring(b, failed);
            evbuffer_add(b, "}\n", 2);
        } else {
            evbuffer_add_printf(b, "{\"status\":\"success\"}\n");
        }
        f->h.bytes += evbuffer_get_length(b);
        evhttp_send_reply_chunk(f->h.req, b);
        evhttp_connection_set_closecb(f->evcon, NULL, NULL);
        evhttp_send_reply_end(f->h.req);
        /* Back to the keep-alive read timeout that the stream's start lifted. */
        evhttp_connection_set_timeout(f->evcon, (int)f->px->cfg->idle_s);
        reply_flush(f->evcon);
        log_line(f, 200, failed ? "fanout-failed" : "fanout");
    } else if (f->kind == FAN_PS) {
        catalog_reply(f->px, &f->h, "/api/ps");
        log_line(f, f->h.status, "fanout");
    } else if (f->kind == FAN_LOAD && load_reply(f, failed)) {
        ;
    } else if (!failed) {
        struct sub *first = &f->subs[0];
        b = f->out;
        if (f->kind == FAN_PULL || f->kind == FAN_PUSH || f->kind == FAN_CREATE)
            evbuffer_add_printf(b, "{\"status\":\"success\"}");
        else if (first->body)
            evbuffer_add_buffer(b, first->body);
        reply_text(&f->h, first->status ? first->status : 200, b);
        log_line(f, f->h.status, "fanout");
    } else {
        for (int i = 0; i < f->nsubs; i++)
            all_404 &= f->subs[i].status == 404;
        status = all_404 ? 404 : 500;
        reply_error(&f->h, status, failed, 0);
        log_line(f, status, "fanout-failed");
    }
    free(failed);
    fanout_free(f);
}

static void sub_ended(struct sub *u)
{
    struct fanout *f = u->f;
    u->ended = 1;
    u->up = NULL;
    if (--f->pending > 0)
        return;
    if (f->resuming) /* resume() is walking the subs: it finishes F after */
        f->finish_later = 1;
    else
        finish(f);
}

/* ---- back pressure on a streamed fan-out, as on a proxied stream ---- */

static void pause_all(struct fanout *f, int paused)
{
    for (int i = 0; i < f->nsubs; i++)
        if (f->subs[i].up)
            upstream_pause(f->subs[i].up, paused);
}

/* The client's buffer drained: every backend's read goes on. Resuming may
 * deliver lines at once, and end subs, even the last one: F is finished
 * only after the walk. */
static void on_drained(struct evhttp_connection *evcon, void *arg)
{
    struct fanout *f = arg;
    (void)evcon;
    if (!f->paused)
        return;
    f->paused = 0;
    f->resuming = 1;
    pause_all(f, 0);
    f->resuming = 0;
    if (f->finish_later)
        finish(f);
}

/* What F->out holds, to the client; above FANOUT_HIGH_WATER in its
 * buffer every backend's read pauses until it drains (a client that stops
 * reading a pull's progress must not grow the proxy). */
static void send_out(struct fanout *f)
{
    struct evbuffer *o;
    f->h.bytes += evbuffer_get_length(f->out);
    evhttp_send_reply_chunk_with_cb(f->h.req, f->out, on_drained, f);
    reply_flush(f->evcon);
    o = bufferevent_get_output(evhttp_connection_get_bufferevent(f->evcon));
    if (evbuffer_get_length(o) > FANOUT_HIGH_WATER && !f->paused) {
        f->paused = 1;
        pause_all(f, 1);
    }
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
        json_object_set_new(o, "backend", json_string(u->be->name));
        if ((text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
            evbuffer_add_printf(f->out, "%s\n", text);
            free(text);
            send_out(f);
        }
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

/* A whole answer (not streamed to the client) as Ollama writes it: one
 * JSON object, or NDJSON lines if the backend streamed anyway. A pull,
 * push or create succeeded only if its last word is {"status":"success"};
 * anything with an "error" failed; a 2xx with garbage is no success. */
static void judge_body(struct fanout *f, struct sub *u)
{
    size_t len = evbuffer_get_length(u->body);
    const char *p = len ? (const char *)evbuffer_pullup(u->body, -1) : "", *end = p + len;
    int any = 0, success = 0;
    while (p < end) { /* the body is kept whole: finish() may send it on */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        json_t *o = n ? json_loadb(p, n, 0, NULL) : NULL;
        const char *e = json_string_value(json_object_get(o, "error"));
        const char *st = json_string_value(json_object_get(o, "status"));
        if (n && !json_is_object(o))
            set_error(u, "not an answer of Ollama's");
        else if (e)
            set_error(u, e);
        if (n) {
            success = st && !strcmp(st, "success");
            any = 1;
        }
        json_decref(o);
        p += n + (nl != NULL);
    }
    if (u->error)
        return;
    if ((f->kind == FAN_PULL || f->kind == FAN_PUSH || f->kind == FAN_CREATE) && !success)
        set_error(u, any ? "the answer did not say success" : "an empty answer");
    else
        u->ok = 1;
}

static void on_done(void *arg)
{
    struct sub *u = arg;
    struct fanout *f = u->f;
    upstream_release(u->up);
    if (f->started && u->status == 200 && evbuffer_get_length(u->body)) { /* no last \n */
        size_t n = evbuffer_get_length(u->body);
        on_line(u, (const char *)evbuffer_pullup(u->body, -1), n);
    }
    if (u->too_big)
        set_error(u, "answer too large");
    else if (u->status < 200 || u->status >= 300)
        error_from_body(u);
    else if (f->started && !u->ok && !u->error)
        set_error(u, "the stream ended without success");
    else if (f->kind == FAN_PS)
        u->ok = discover_set_ps(u->be, u->body) == 0;
    else if (!f->started)
        judge_body(f, u);
    sub_ended(u);
}

static void on_error(void *arg, enum upstream_err err)
{
    struct sub *u = arg;
    set_error(u, upstream_strerror(err));
    sub_ended(u);
}

static const struct upstream_cbs sub_cbs = {on_header, on_head, on_body, on_done, on_error};

/* ---- a blob upload's subs ---- */

static void blob_sub_ended(struct sub *u)
{
    struct fanout *f = u->f;
    u->ended = 1;
    u->ul = NULL;
    if (f->tee)
        tee_set(f->tee, (int)(u - f->subs), NULL);
    if (--f->pending == 0) {
        finish(f);
        return;
    }
    if (f->tee) /* it may have been the slowest: the others go on */
        tee_pump(f->tee); /* may finish F: the last word */
}

static void ul_on_answer(void *arg, int status, struct evbuffer *body)
{
    struct sub *u = arg;
    u->status = status;
    evbuffer_add_buffer(u->body, body);
    upload_free(u->ul);
    if (status == 200 || status == 201)
        u->ok = !u->error;
    else
        error_from_body(u);
    blob_sub_ended(u);
}

static void ul_on_error(void *arg, enum upstream_err err)
{
    struct sub *u = arg;
    char msg[256];
    if (err == UPSTREAM_ESETUP)
        snprintf(msg, sizeof msg, "%s: %s", upstream_strerror(err), u->be->target.setup_err);
    else
        snprintf(msg, sizeof msg, "%s", upstream_strerror(err));
    set_error(u, msg);
    u->ul = NULL; /* freed by the upload */
    blob_sub_ended(u);
}

static void ul_on_room(void *arg)
{
    struct sub *u = arg;
    if (u->f->tee)
        tee_pump(u->f->tee);
}

static const struct upload_cbs ul_cbs = {ul_on_answer, ul_on_error, ul_on_room};

/* The client's body has been read (HOW: BODYSRC_END), or its framing is
 * malformed: every upload still running had part of a body and is
 * aborted (Ollama discards it), and the client gets 400. */
static void on_tee_end(void *arg, enum bodysrc_state how)
{
    struct fanout *f = arg;
    f->body = how;
    if (how != BODYSRC_BAD)
        return; /* the answers follow */
    for (int i = 0; i < f->nsubs; i++) {
        struct sub *u = &f->subs[i];
        if (u->ended)
            continue;
        upload_free(u->ul);
        u->ul = NULL;
        u->ended = 1;
        set_error(u, "the request body was malformed");
        f->pending--;
    }
    finish(f);
}

/* An upload of the body to U's backend: the client's head (reqtext.h's
 * policy) with the body's framing, Content-Length as the client's or
 * chunked. */
static void start_upload(struct fanout *f, struct sub *u)
{
    struct evbuffer *req = f->px->scratch, *head = evbuffer_new();
    struct reqtext t = {0};
    size_t n;
    t.method = "POST";
    t.target = f->path;
    t.host = u->be->hostport;
    t.headers = evhttp_request_get_input_headers(f->h.req);
    t.peer = f->h.addr;
    t.keys = f->px->cfg->nkeys > 0;
    if (head && (u->body = evbuffer_new())) {
        reqtext_build(req, &t);
        n = evbuffer_get_length(req);
        evbuffer_remove_buffer(req, head, n - 2); /* the head but its blank line */
        evbuffer_drain(req, 2);
        if (f->src->length >= 0)
            evbuffer_add_printf(head, "Content-Length: %lld\r\n\r\n", f->src->length);
        else
            evbuffer_add_printf(head, "Transfer-Encoding: chunked\r\n\r\n");
        u->ul = upload_start(f->px->base, &u->be->target, head, f->src->length < 0,
                             &f->px->uto, &ul_cbs, u);
    }
    if (head)
        evbuffer_free(head);
    if (!u->ul) {
        set_error(u, "cannot open a socket");
        u->ended = 1;
        f->pending--;
        return;
    }
    tee_set(f->tee, (int)(u - f->subs), u->ul);
}

/* ---- the start ---- */

/* BE is in service for new work and its /api/tags lists KEY (a preload
 * goes only where the model is: another backend would answer 404). */
static int lists(const struct backend *be, const char *key)
{
    return !be->removed && be->healthy && be->admin == ADMIN_READY && be->models_known &&
           !be->models_pending && model_list_has(be->models, key);
}

int fanout_loadable(const struct proxy *px, const char *mkey)
{
    int n = 0;
    for (int i = 0; mkey && i < px->nbackends; i++)
        n += lists(px->backends[i], mkey);
    return n >= 2;
}

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
            } else if (f->kind == FAN_LOAD) {
                if (!have_key || !lists(be, key))
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
    struct evbuffer *b = evhttp_request_get_input_buffer(f->h.req);
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
    if (f->kind == FAN_COPY) {
        free(f->model); /* a copy names its model "source" */
        f->model = NULL;
        root = json_loadb(body, n, 0, NULL);
        if ((m = json_object_get(root, "source")) && json_is_string(m))
            f->model = strdup(json_string_value(m));
        if ((m = json_object_get(root, "destination")) && json_is_string(m))
            f->dest = strdup(json_string_value(m));
        json_decref(root);
    }
    return request_set_model(&f->h, f->model) < 0 ? -1 : 0;
}

static void send_sub(struct fanout *f, struct sub *u)
{
    struct evbuffer *req = f->px->scratch;
    struct reqtext t = {0};
    t.method = f->h.method;
    t.target = f->path;
    t.host = u->be->hostport;
    t.headers = evhttp_request_get_input_headers(f->h.req);
    t.peer = f->h.addr;
    t.keys = f->px->cfg->nkeys > 0;
    t.body = evhttp_request_get_input_buffer(f->h.req);
    t.length = evhttp_request_get_command(f->h.req) == EVHTTP_REQ_POST;
    reqtext_build(req, &t);
    if (!(u->body = evbuffer_new())) {
        evbuffer_drain(req, evbuffer_get_length(req));
        set_error(u, "out of memory");
        u->ended = 1;
        f->pending--;
        return;
    }
    u->up = upstream_start(f->px->base, &u->be->target, req, f->kind == FAN_BLOB_HEAD,
                           &f->px->uto, &sub_cbs, u);
    evbuffer_drain(req, evbuffer_get_length(req));
    if (!u->up) {
        set_error(u, "cannot open a socket");
        u->ended = 1;
        f->pending--;
    }
}

/* The client left a streamed reply, or an upload while its body was read
 * (evhttp saw it): every sub is aborted (a cancel for Ollama); the
 * detached request is ours to free. */
static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    struct fanout *f = arg;
    (void)evcon;
    f->evcon = NULL;
    log_line(f, 499, "client-gone");
    evhttp_send_reply_end(f->h.req);
    fanout_free(f);
}

/* The client left before its reply started (clientwatch.h): every sub is
 * aborted, the body released, and the connection freed (the request with
 * it), which evhttp would not do before the reply. */
static void on_client_left(void *arg)
{
    struct fanout *f = arg;
    struct evhttp_connection *evcon = f->evcon;
    f->evcon = NULL;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    log_line(f, 499, "client-gone");
    fanout_free(f);
    evhttp_connection_free(evcon);
}

/* Until the reply starts, a client that leaves ends F. */
static void watch_client(struct fanout *f)
{
    clientwatch_start(&f->cw, f->px->base, f->evcon, on_client_left, f);
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

/* F could not start: STATUS and MSG to the client, OUTCOME in the log. */
static void refuse(struct fanout *f, int status, const char *msg, int retry_after,
                   const char *outcome)
{
    release_body(f); /* an upload's: read no more of it */
    reply_error(&f->h, status, msg, retry_after);
    log_line(f, status, outcome);
    fanout_free(f);
}

/* Progress as it comes: the reply starts now. evhttp's connection timeout
 * is a read timeout that stays armed while a reply streams (BASELINE.md,
 * pitfall 6): a pull whose backends are silent for a while (within their
 * own first_byte_s and idle_s) would be cut by the client's idle_s. Only a
 * write timeout is kept (a client that stops reading) until the end. */
static void start_stream(struct fanout *f)
{
    struct timeval wtv = {(time_t)f->px->cfg->idle_s, 0};
    evhttp_add_header(evhttp_request_get_output_headers(f->h.req), "Content-Type",
                      "application/x-ndjson");
    bufferevent_set_timeouts(evhttp_connection_get_bufferevent(f->evcon), NULL, &wtv);
    evhttp_send_reply_start(f->h.req, 200, "OK");
    evhttp_connection_set_closecb(f->evcon, on_client_close, f);
    f->started = 1;
}

/* A fan-out for HEAD (moved in), or NULL after answering 500. */
static struct fanout *fanout_new(struct proxy *px, struct request *head,
                                 enum fanout_kind kind, const char *path)
{
    struct fanout *f = calloc(1, sizeof *f);
    if (!f || !(f->out = evbuffer_new())) {
        free(f);
        reply_error(head, 500, "out of memory", 0);
        reqlog_end(px, head, "no-memory");
        request_cleanup(head);
        return NULL;
    }
    LIST_INSERT_HEAD(&px->fanouts, f, link);
    proxy_request_begin(px);
    f->h = *head; /* what it owns moves with it */
    f->h.be = NULL;
    f->h.t_dispatch = f->h.t_start; /* sent at once: no queue */
    f->px = px;
    f->evcon = evhttp_request_get_connection(f->h.req);
    f->kind = kind;
    f->body = BODYSRC_MORE;
    snprintf(f->path, sizeof f->path, "%s", path);
    return f;
}

/* F's subs, one per target backend; 0, or -1 after answering the client
 * (no target, or out of memory). */
static int plan(struct fanout *f)
{
    struct backend **bes = calloc((size_t)f->px->nbackends + 1, sizeof *bes);
    char msg[NAME_KEY_MAX + 64];
    int n = bes ? targets(f, bes) : 0;
    if (!bes || (n && !(f->subs = calloc((size_t)n, sizeof *f->subs)))) {
        free(bes);
        refuse(f, 500, "out of memory", 0, "no-memory");
        return -1;
    }
    if (!n) {
        free(bes);
        if (f->kind == FAN_DELETE || f->kind == FAN_COPY || f->kind == FAN_UNLOAD) {
            snprintf(msg, sizeof msg, "model '%s' not found", f->model ? f->model : "");
            refuse(f, 404, msg, 0, "no-model");
        } else {
            refuse(f, 503, "no healthy backend", 1, "no-backend");
        }
        return -1;
    }
    f->nsubs = f->pending = n;
    for (int i = 0; i < n; i++) {
        f->subs[i].f = f;
        f->subs[i].be = bes[i];
        backend_ref(bes[i]);
    }
    free(bes);
    return 0;
}

void fanout_start(struct proxy *px, struct request *head, enum fanout_kind kind,
                  const char *path)
{
    struct fanout *f;
    if (kind == FAN_PS && ps_fresh(px)) { /* answers a second old at most */
        catalog_reply(px, head, "/api/ps");
        reqlog_end(px, head, "self");
        request_cleanup(head);
        return;
    }
    if (strlen(path) >= sizeof f->path) { /* a blob's digest is 71 bytes */
        reply_error(head, 400, "invalid digest format", 0);
        reqlog_end(px, head, "self");
        request_cleanup(head);
        return;
    }
    if (!(f = fanout_new(px, head, kind, path)))
        return;
    if (kind != FAN_BLOB_HEAD && read_body(f) < 0) {
        refuse(f, 400, "invalid JSON in request body", 0, "fanout-failed");
        return;
    }
    if (plan(f) < 0)
        return;
    if (f->stream)
        start_stream(f);
    else
        watch_client(f);
    for (int i = 0; i < f->nsubs; i++)
        send_sub(f, &f->subs[i]);
    if (f->pending == 0) /* none could even start */
        finish(f);
}

void fanout_upload(struct proxy *px, struct request *head, const char *path,
                   struct bodysrc *src)
{
    struct fanout *f;
    if (strlen(path) >= sizeof f->path) {
        if (src)
            src->ops->release(src);
        reply_error(head, 400, "invalid digest format", 0);
        reqlog_end(px, head, "self");
        request_cleanup(head);
        return;
    }
    if (!(f = fanout_new(px, head, FAN_BLOB_PUT, path))) {
        if (src)
            src->ops->release(src);
        return;
    }
    f->src = src ? src : bodysrc_whole(&f->whole, evhttp_request_get_input_buffer(f->h.req));
    if (plan(f) < 0) /* released by fanout_free */
        return;
    if (!(f->tee = tee_new(f->src, f->nsubs, on_tee_end, f))) {
        refuse(f, 500, "out of memory", 0, "no-memory");
        return;
    }
    /* A client that leaves while its body is read is evhttp's to see; at
     * any other time until the reply, the watch's. */
    evhttp_connection_set_closecb(f->evcon, on_client_close, f);
    watch_client(f);
    for (int i = 0; i < f->nsubs; i++)
        start_upload(f, &f->subs[i]);
    if (f->pending == 0) { /* none could even start */
        finish(f);
        return;
    }
    tee_pump(f->tee); /* the body's first bytes, or all of it: may finish F */
}

void fanout_end_all(struct proxy *px)
{
    static const char line[] = "{\"error\":\"the proxy is shutting down\"}\n";
    while (!LIST_EMPTY(&px->fanouts)) {
        struct fanout *f = LIST_FIRST(&px->fanouts);
        for (int i = 0; i < f->nsubs; i++) /* a cancel for Ollama */
            if (f->subs[i].up) {
                upstream_abort(f->subs[i].up);
                f->subs[i].up = NULL;
            }
        if (f->started) {
            evbuffer_add(f->out, line, sizeof line - 1);
            f->h.bytes += sizeof line - 1;
            evhttp_send_reply_chunk(f->h.req, f->out);
            evhttp_connection_set_closecb(f->evcon, NULL, NULL);
            evhttp_send_reply_end(f->h.req);
            reply_flush(f->evcon);
            log_line(f, 200, "shutdown");
            fanout_free(f);
        } else {
            refuse(f, 503, "the proxy is shutting down", 1, "shutdown");
        }
    }
}

void fanout_abort_all(struct proxy *px)
{
    while (!LIST_EMPTY(&px->fanouts)) {
        struct fanout *f = LIST_FIRST(&px->fanouts);
        struct evhttp_connection *evcon = f->evcon;
        f->evcon = NULL;
        if (evcon)
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        fanout_free(f);
        if (evcon)
            evhttp_connection_free(evcon);
    }
}
